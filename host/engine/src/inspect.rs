//! What a component imports and exports, and which wasmgate worlds it fits.
//!
//! This sits before the hot path: `wasmgate plugin inspect FILE` prints [`inspect`]'s report, and
//! the registry's load path links every plugin through [`link`], so the daemon refuses a misfit
//! with the very messages the report shows, instead of wasmtime's first link error.
//!
//! A component does not record the world it was built for (wit-component drops the
//! `component-type` section when it builds one), so a world is judged by what the component
//! imports and exports:
//! - every import must be something this host's linker provides: standard WASI,
//!   `wasi:keyvalue@0.2.0-draft` and `wasi:config@0.2.0-rc.1` (semver-compatible versions
//!   included, as wasmtime matches them);
//! - every interface the world exports must be exported under its name, with every function of
//!   it. Export *types* are checked when an instance is made, as before.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use wasmgate_engine::{EngineConfig, WasmEngine, inspect};
//! let engine = WasmEngine::new(&EngineConfig { pooling: false, ..Default::default() })?;
//! let report = inspect::inspect(&engine, &std::fs::read("plugin.wasm")?)?;
//! for w in &report.worlds {
//!     println!("{}: {}", w.name, if w.fits { "fits".to_string() } else { w.problems.join("; ") });
//! }
//! # Ok(()) }
//! ```

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, LinkerInstance, ResourceType};

use crate::bindings::{
    NETWORK_WORLD, NetworkPluginPre, RUNTIME_WORLD, RUNTIME_WORLD_V0_2, RUNTIME_WORLD_V0_3,
    RUNTIME_WORLDS, STORAGE_WORLD, StoragePluginPre, cni_network, csi_controller, csi_identity,
    csi_node, csi_snapshots, v0_1, v0_2, v0_3,
};
use crate::engine::{WasmEngine, sha256_hex};
use crate::hook::HookPre;
use crate::host::HostState;
use crate::registry::{Pre, World};

/// Why a component cannot be inspected at all.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("not a component this host can compile: {0}")]
    Compile(String),
}

/// One reason a component does not fit a world. The daemon's refusal and the inspect report
/// print these same messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Misfit {
    #[error("imports {name}, which is not standard WASI this host provides")]
    NotProvided { name: String },
    #[error("imports {kind} {name}, which this host does not provide")]
    NotProvidedItem { kind: &'static str, name: String },
    #[error("imports {name}, which this host provides differently: {reason}")]
    Differs { name: String, reason: String },
    #[error("does not export {name} ({world} needs it)")]
    MissingExport { name: String, world: &'static str },
    #[error("exports {name} without its function {function} ({world} needs it)")]
    MissingFunction {
        name: String,
        function: String,
        world: &'static str,
    },
    #[error("{0}")]
    Other(String),
}

/// Every reason a component does not fit one world, in import then export order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Misfits(pub Vec<Misfit>);

/// What `wasmgate plugin inspect` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sha256: String,
    pub size: usize,
    /// The `wasmgate:*` packages, with versions, that its imports and exports name, e.g.
    /// `wasmgate:plugin@0.1.0`.
    pub packages: Vec<String>,
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
    /// Every wasmgate world and version this host serves, fitting or not.
    pub worlds: Vec<WorldFit>,
}

impl Report {
    /// The worlds the component fits.
    pub fn fitting(&self) -> impl Iterator<Item = &WorldFit> {
        self.worlds.iter().filter(|w| w.fits)
    }
}

/// One import or export of a component.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Item {
    /// The instance name with its version, e.g. `wasi:keyvalue/store@0.2.0-draft`.
    pub name: String,
    /// `instance`, `function`, `resource`, `type`, `module` or `component`.
    pub kind: &'static str,
    /// The functions of an instance, as the component names them (`[method]bucket.get`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Imports only: why this host cannot provide it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Whether the component fits one world.
#[derive(Debug, Clone, Serialize)]
pub struct WorldFit {
    pub world: World,
    /// e.g. `wasmgate:plugin/network-plugin@0.1.0`.
    pub name: &'static str,
    /// The `wasmgate:plugin` package version.
    pub version: &'static str,
    pub fits: bool,
    /// Each a [`Misfit`] message; empty when it fits.
    pub problems: Vec<String>,
}

/// The worlds and versions this host serves. A new WIT version goes beside the old one here.
const WORLDS: [(World, &str); 5] = [
    (World::Network, NETWORK_WORLD),
    (World::Storage, STORAGE_WORLD),
    (World::Runtime, RUNTIME_WORLD),
    (World::Runtime, RUNTIME_WORLD_V0_2),
    (World::Runtime, RUNTIME_WORLD_V0_3),
];

/// Compiles `bytes` (uncached) and reports what the component imports and exports and which
/// worlds it fits.
pub fn inspect(engine: &WasmEngine, bytes: &[u8]) -> Result<Report, InspectError> {
    let component = Component::new(&engine.engine, bytes)
        .map_err(|e| InspectError::Compile(format!("{e:#}")))?;
    let ty = component.component_type();
    let linked = link_imports(engine, &component);
    let problem = |name: &str| {
        linked
            .problems
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.to_string())
    };
    let imports: Vec<Item> = ty
        .imports(&engine.engine)
        .map(|(name, e)| Item {
            problem: problem(name),
            ..item(&engine.engine, name, &e.ty)
        })
        .collect();
    let exports: Vec<Item> = ty
        .exports(&engine.engine)
        .map(|(name, e)| item(&engine.engine, name, &e.ty))
        .collect();
    let mut packages: Vec<String> = imports
        .iter()
        .chain(&exports)
        .filter_map(|i| package_of(&i.name))
        .filter(|p| p.starts_with("wasmgate:"))
        .collect();
    packages.sort();
    packages.dedup();
    let worlds = WORLDS
        .iter()
        .map(|&(world, name)| {
            let problems = misfits(&component, name, &linked);
            WorldFit {
                world,
                name,
                version: version_of(name),
                fits: problems.is_empty(),
                problems: problems.iter().map(ToString::to_string).collect(),
            }
        })
        .collect();
    Ok(Report {
        sha256: sha256_hex(bytes),
        size: bytes.len(),
        packages,
        imports,
        exports,
        worlds,
    })
}

/// Links `component` for `world`, or says everything that keeps it from fitting. The registry
/// loads every plugin through this. A runtime hook is linked in the version it exports (see
/// [`version_for`]).
pub(crate) fn link(
    engine: &WasmEngine,
    component: &Component,
    world: World,
) -> Result<Pre, Misfits> {
    let linked = link_imports(engine, component);
    let name = version_for(component, world);
    let problems = misfits(component, name, &linked);
    let pre = match linked.pre {
        Some(pre) if problems.is_empty() => pre,
        _ => return Err(Misfits(problems)),
    };
    let other = |e: wasmtime::Error| Misfits(vec![Misfit::Other(format!("{e:#}"))]);
    Ok(match world {
        World::Network => Pre::Network(NetworkPluginPre::new(pre).map_err(other)?),
        World::Storage => Pre::Storage(Box::new(StoragePluginPre::new(pre).map_err(other)?)),
        World::Runtime => Pre::Runtime(HookPre::new(pre, name).map_err(other)?),
    })
}

/// The world, with its version, `component` is judged against for `world`: for a runtime hook
/// the newest version whose hook interface it exports, since a plugin keeps the version it was
/// built against; the first version when it exports none, so the misfit names what most hooks
/// export.
pub(crate) fn version_for(component: &Component, world: World) -> &'static str {
    match world {
        World::Runtime => RUNTIME_WORLDS
            .iter()
            .rev()
            .copied()
            .find(|name| {
                needs(name)
                    .first()
                    .is_some_and(|n| component.get_export_index(None, n.export).is_some())
            })
            .unwrap_or(RUNTIME_WORLD),
        other => other.name(),
    }
}

/// The one check behind both [`link`] and [`inspect`]: the import problems, then the exports
/// `world` needs that are missing.
fn misfits(component: &Component, world: &'static str, linked: &Linked) -> Vec<Misfit> {
    let mut out: Vec<Misfit> = linked.problems.iter().map(|(_, m)| m.clone()).collect();
    let world_name = short_name(world);
    for need in needs(world) {
        if component.get_export_index(None, need.export).is_none() {
            out.push(Misfit::MissingExport {
                name: need.export.to_string(),
                world: world_name,
            });
            continue;
        }
        // Without a linked pre (an import we could not even stand in for) the functions go
        // unchecked; that import is already reported.
        let Some(pre) = &linked.pre else { continue };
        if let Err(e) = (need.functions)(pre) {
            // The generated lookup says "instance export `X` does not have export `f`".
            let message = e.to_string();
            out.push(match last_quoted(&message) {
                Some(f) if message.contains("does not have export") => Misfit::MissingFunction {
                    name: need.export.to_string(),
                    function: f.to_string(),
                    world: world_name,
                },
                _ => Misfit::Other(format!("exports {}, but {e:#}", need.export)),
            });
        }
    }
    out
}

/// An interface a world exports, and the generated lookup of its functions.
struct Need {
    export: &'static str,
    functions: fn(&InstancePre<HostState>) -> wasmtime::Result<()>,
}

/// What each served world, by its versioned name, needs exported.
fn needs(world: &str) -> Vec<Need> {
    match world {
        NETWORK_WORLD => vec![Need {
            export: "wasmgate:plugin/network@0.1.0",
            functions: |p| cni_network::GuestIndices::new(p).map(drop),
        }],
        STORAGE_WORLD => vec![
            Need {
                export: "wasmgate:plugin/identity@0.1.0",
                functions: |p| csi_identity::GuestIndices::new(p).map(drop),
            },
            Need {
                export: "wasmgate:plugin/controller@0.1.0",
                functions: |p| csi_controller::GuestIndices::new(p).map(drop),
            },
            Need {
                export: "wasmgate:plugin/snapshots@0.1.0",
                functions: |p| csi_snapshots::GuestIndices::new(p).map(drop),
            },
            Need {
                export: "wasmgate:plugin/node@0.1.0",
                functions: |p| csi_node::GuestIndices::new(p).map(drop),
            },
        ],
        RUNTIME_WORLD => vec![Need {
            export: "wasmgate:plugin/hook@0.1.0",
            functions: |p| v0_1::cri_hook::GuestIndices::new(p).map(drop),
        }],
        RUNTIME_WORLD_V0_2 => vec![Need {
            export: "wasmgate:plugin/hook@0.2.0",
            functions: |p| v0_2::cri_hook::GuestIndices::new(p).map(drop),
        }],
        RUNTIME_WORLD_V0_3 => vec![Need {
            export: "wasmgate:plugin/hook@0.3.0",
            functions: |p| v0_3::cri_hook::GuestIndices::new(p).map(drop),
        }],
        _ => Vec::new(),
    }
}

/// The imports linked against this host: a pre when every import could be linked or stood in
/// for, and a problem for each import the host does not provide as the component wants it.
struct Linked {
    pre: Option<InstancePre<HostState>>,
    problems: Vec<(String, Misfit)>,
}

/// Most links succeed at once. When one fails, wasmtime names only the first import it could not
/// satisfy, so a probe linker stands a trapping stub in for that import and tries again, until
/// the component links: every import the host lacks is named, not just the first.
fn link_imports(engine: &WasmEngine, component: &Component) -> Linked {
    let mut err = match engine.linker.instantiate_pre(component) {
        Ok(pre) => {
            return Linked {
                pre: Some(pre),
                problems: Vec::new(),
            };
        }
        Err(e) => e,
    };
    let ty = component.component_type();
    let imports: Vec<(String, ComponentItem)> = ty
        .imports(&engine.engine)
        .map(|(n, e)| (n.to_string(), e.ty))
        .collect();
    let mut probe = (*engine.linker).clone();
    probe.allow_shadowing(true);
    let mut problems: Vec<(String, Misfit)> = Vec::new();
    let give_up = |mut problems: Vec<(String, Misfit)>, e: &wasmtime::Error| {
        problems.push((String::new(), Misfit::Other(format!("{e:#}"))));
        Linked {
            pre: None,
            problems,
        }
    };
    loop {
        let Some(index) = failing_import(&err, &imports) else {
            return give_up(problems, &err);
        };
        let (name, item) = &imports[index];
        if problems.iter().any(|(n, _)| n == name) {
            // Stood in for and still failing: nothing more to learn from another round.
            return give_up(problems, &err);
        }
        // Resources of earlier imports are bound already; this import may alias them.
        let mut bound = Vec::new();
        for (_, earlier) in &imports[..index] {
            resources_of(&engine.engine, earlier, &mut bound);
        }
        problems.push((
            name.clone(),
            classify(&engine.engine, &err, name, item, &bound),
        ));
        if let Err(e) = stub(&engine.engine, &mut probe.root(), name, item, &bound) {
            return give_up(problems, &e);
        }
        match probe.instantiate_pre(component) {
            Ok(pre) => {
                return Linked {
                    pre: Some(pre),
                    problems,
                };
            }
            Err(e) => err = e,
        }
    }
}

/// Which import a link error is about: wasmtime's outermost message quotes its name.
fn failing_import(err: &wasmtime::Error, imports: &[(String, ComponentItem)]) -> Option<usize> {
    let outer = err.to_string();
    let quoted = outer.split('`').nth(1)?;
    imports.iter().position(|(n, _)| n == quoted)
}

/// Turns wasmtime's chain ("component imports instance `N` …", "instance export `e` has the
/// wrong type", …, the cause) into a misfit: an import whose first own item is missing is one
/// the host does not have at all; anything else is one it has in another shape.
fn classify(
    engine: &Engine,
    err: &wasmtime::Error,
    name: &str,
    item: &ComponentItem,
    bound: &[ResourceType],
) -> Misfit {
    let chain: Vec<String> = err.chain().map(|c| c.to_string()).collect();
    let path: Vec<&str> = chain
        .iter()
        .skip(1)
        .filter_map(|m| {
            m.strip_prefix("instance export `")
                .and_then(|rest| rest.strip_suffix("` has the wrong type"))
        })
        .collect();
    let cause = chain.last().map(String::as_str).unwrap_or_default();
    let missing = cause.ends_with("implementation is missing");
    match item {
        ComponentItem::ComponentInstance(instance) => {
            let first_own = instance.exports(engine).find_map(|(n, e)| match e.ty {
                ComponentItem::Type(_) => None,
                ComponentItem::Resource(r) if bound.contains(&r) => None,
                _ => Some(n),
            });
            if missing && path.len() == 1 && first_own == Some(path[0]) {
                return Misfit::NotProvided {
                    name: name.to_string(),
                };
            }
            let at = path.join(".");
            let reason = if missing {
                format!("it has no `{at}`")
            } else if at.is_empty() {
                cause.to_string()
            } else {
                format!("`{at}` has another type: {cause}")
            };
            Misfit::Differs {
                name: name.to_string(),
                reason,
            }
        }
        other if missing => Misfit::NotProvidedItem {
            kind: kind(other),
            name: name.to_string(),
        },
        _ => Misfit::Differs {
            name: name.to_string(),
            reason: cause.to_string(),
        },
    }
}

/// A stand-in whose type is no host type: a stubbed import's own resources become this.
struct Absent;

/// Defines `item` under `name` as traps, so the probe can look past it.
fn stub(
    engine: &Engine,
    linker: &mut LinkerInstance<'_, HostState>,
    name: &str,
    item: &ComponentItem,
    bound: &[ResourceType],
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let name_owned = name.to_string();
            linker.func_new(name, move |_, _, _, _| {
                wasmtime::bail!("{name_owned} is not provided by this host")
            })
        }
        ComponentItem::ComponentInstance(instance) => {
            let mut inner = linker.instance(name)?;
            let mut bound = bound.to_vec();
            for (n, e) in instance.exports(engine) {
                stub(engine, &mut inner, n, &e.ty, &bound)?;
                resources_of(engine, &e.ty, &mut bound);
            }
            Ok(())
        }
        // An alias of a resource already bound needs no definition, and a new one would clash.
        ComponentItem::Resource(r) if bound.contains(r) => Ok(()),
        ComponentItem::Resource(_) => {
            linker.resource(name, ResourceType::host::<Absent>(), |_, _| Ok(()))
        }
        ComponentItem::Type(_) => Ok(()),
        other => wasmtime::bail!("cannot stand in for the {} `{name}`", kind(other)),
    }
}

fn resources_of(engine: &Engine, item: &ComponentItem, out: &mut Vec<ResourceType>) {
    match item {
        ComponentItem::Resource(r) => out.push(*r),
        ComponentItem::ComponentInstance(i) => {
            for (_, e) in i.exports(engine) {
                resources_of(engine, &e.ty, out);
            }
        }
        _ => {}
    }
}

fn item(engine: &Engine, name: &str, ty: &ComponentItem) -> Item {
    let (mut functions, mut resources) = (Vec::new(), Vec::new());
    if let ComponentItem::ComponentInstance(i) = ty {
        for (n, e) in i.exports(engine) {
            match e.ty {
                ComponentItem::ComponentFunc(_) => functions.push(n.to_string()),
                ComponentItem::Resource(_) => resources.push(n.to_string()),
                _ => {}
            }
        }
    }
    Item {
        name: name.to_string(),
        kind: kind(ty),
        functions,
        resources,
        problem: None,
    }
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "function",
        ComponentItem::CoreFunc(_) => "core function",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// `ns:pkg/iface@ver` → `ns:pkg@ver`.
fn package_of(name: &str) -> Option<String> {
    let (path, version) = name.split_once('@')?;
    let (package, _) = path.split_once('/')?;
    package
        .contains(':')
        .then(|| format!("{package}@{version}"))
}

/// `wasmgate:plugin/network-plugin@0.1.0` → `network-plugin`.
fn short_name(world: &'static str) -> &'static str {
    let after = world.rsplit_once('/').map_or(world, |(_, w)| w);
    after.split_once('@').map_or(after, |(w, _)| w)
}

/// `wasmgate:plugin/network-plugin@0.1.0` → `0.1.0`.
fn version_of(world: &'static str) -> &'static str {
    world.split_once('@').map_or("", |(_, v)| v)
}

fn last_quoted(s: &str) -> Option<&str> {
    let end = s.rfind('`')?;
    let start = s[..end].rfind('`')?;
    Some(&s[start + 1..end])
}

#[cfg(test)]
mod tests;
