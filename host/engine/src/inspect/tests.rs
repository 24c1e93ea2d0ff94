//! The fit check on real components (the example plugins under `plugins/rust`, built here as the
//! test harness builds them) and on hand-made misfits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::*;
use crate::EngineConfig;

fn engine() -> &'static WasmEngine {
    static ENGINE: OnceLock<WasmEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        WasmEngine::new(&EngineConfig {
            max_instances: 4,
            pooling: false,
            ..Default::default()
        })
        .unwrap()
    })
}

/// Builds `plugins/rust/<name>` for wasm32-wasip2 (once per test process) and returns its bytes.
fn plugin(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/rust")
        .join(name);
    if !built.iter().any(|b| b == name) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&dir)
            .status()
            .expect("run cargo for the plugin");
        assert!(status.success(), "building plugin {name} failed");
        built.push(name.to_string());
    }
    let wasm = dir
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()))
}

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn name(s: &str, out: &mut Vec<u8>) {
    leb(s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

fn section(id: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(contents.len(), out);
    out.extend_from_slice(contents);
}

/// `(component)`: magic, version 0x0d, layer 1.
const EMPTY: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// `(component (import "<import>" (instance (export "<f>" (func …)) …)))`, in the binary format
/// (component-model Binary.md): every function takes nothing and returns nothing, or
/// `list<string>` when `strings` is set.
fn importing(import: &str, funcs: &[&str], strings: bool) -> Vec<u8> {
    let mut decls = Vec::new();
    let mut count = 0;
    if strings {
        decls.extend([0x01, 0x70, 0x73]); // type 0: list<string>
        count += 1;
    }
    let func_type = count;
    decls.extend([0x01, 0x40, 0x00]); // a functype with no params…
    decls.extend(if strings { [0x00, 0x00] } else { [0x01, 0x00] }); // …returning type 0, or nothing
    count += 1;
    for f in funcs {
        decls.extend([0x04, 0x00]); // exportdecl, plain name
        name(f, &mut decls);
        decls.push(0x01); // a func of type…
        leb(func_type, &mut decls);
        count += 1;
    }
    let mut types = vec![0x01, 0x42]; // one type: an instance type
    leb(count, &mut types);
    types.extend(decls);
    let mut imports = vec![0x01, 0x00]; // one import, plain name
    name(import, &mut imports);
    imports.extend([0x05, 0x00]); // an instance of type 0
    let mut out = EMPTY.to_vec();
    section(7, &types, &mut out);
    section(10, &imports, &mut out);
    out
}

/// `(component (import "<import>" (instance (export "fields" (type (sub resource)))
/// (export "[constructor]fields" (func (result (own 0)))))))`: an import with a resource of its
/// own, which the probe must stand a host type in for.
fn importing_resource(import: &str) -> Vec<u8> {
    let mut decls = vec![0x04, 0x00]; // exportdecl, plain name…
    name("fields", &mut decls);
    decls.extend([0x03, 0x01]); // …a type, bounded (sub resource): type 0
    decls.extend([0x01, 0x69, 0x00]); // type 1: own<0>
    decls.extend([0x01, 0x40, 0x00, 0x00, 0x01]); // type 2: func() -> type 1
    decls.extend([0x04, 0x00]);
    name("[constructor]fields", &mut decls);
    decls.extend([0x01, 0x02]); // a func of type 2
    let mut types = vec![0x01, 0x42, 0x04]; // one instance type of four declarations
    types.extend(decls);
    let mut imports = vec![0x01, 0x00];
    name(import, &mut imports);
    imports.extend([0x05, 0x00]);
    let mut out = EMPTY.to_vec();
    section(7, &types, &mut out);
    section(10, &imports, &mut out);
    out
}

fn fit(report: &Report, world: World) -> &WorldFit {
    report.worlds.iter().find(|w| w.world == world).unwrap()
}

fn fitting(report: &Report) -> Vec<World> {
    report.fitting().map(|w| w.world).collect()
}

#[test]
fn example_plugins_fit_their_own_world_only() {
    for (plugin_name, world, version) in [
        ("bridge-ipam", World::Network, "0.1.0"),
        ("hostpath-csi", World::Storage, "0.1.0"),
        ("hook-inject", World::Runtime, "0.3.0"),
    ] {
        let report = inspect(engine(), &plugin(plugin_name)).unwrap();
        assert_eq!(fitting(&report), vec![world], "{plugin_name}: {report:#?}");
        assert_eq!(
            report.packages,
            vec![format!("wasmgate:plugin@{version}")],
            "{plugin_name}"
        );
        assert!(
            report.imports.iter().all(|i| i.problem.is_none()),
            "{plugin_name}: {:#?}",
            report.imports
        );
        // Standard WASI, and the types-only interfaces of our own package (records need no
        // host definition).
        for i in &report.imports {
            assert!(
                i.name.starts_with("wasi:")
                    || (i.name.starts_with("wasmgate:plugin/") && i.functions.is_empty()),
                "{plugin_name}: {i:?}"
            );
        }
    }
    let csi = inspect(engine(), &plugin("hostpath-csi")).unwrap();
    assert!(
        csi.imports
            .iter()
            .any(|i| i.name == "wasi:keyvalue/store@0.2.0-draft"),
        "{:#?}",
        csi.imports
    );
}

#[test]
fn a_network_plugin_is_told_what_the_other_worlds_need() {
    let report = inspect(engine(), &plugin("bridge-ipam")).unwrap();
    let exports: Vec<&str> = report.exports.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(exports, ["wasmgate:plugin/network@0.1.0"]);
    let network = &report.exports[0];
    for f in ["versions", "add", "del", "check", "status", "gc"] {
        assert!(network.functions.iter().any(|n| n == f), "{network:?}");
    }
    assert_eq!(
        fit(&report, World::Runtime).problems,
        ["does not export wasmgate:plugin/hook@0.1.0 (runtime-hook needs it)"]
    );
    assert_eq!(
        fit(&report, World::Storage).problems,
        [
            "does not export wasmgate:plugin/identity@0.1.0 (storage-plugin needs it)",
            "does not export wasmgate:plugin/controller@0.1.0 (storage-plugin needs it)",
            "does not export wasmgate:plugin/snapshots@0.1.0 (storage-plugin needs it)",
            "does not export wasmgate:plugin/node@0.1.0 (storage-plugin needs it)",
        ]
    );
}

#[test]
fn a_non_standard_import_is_named() {
    let bytes = importing("wasi:http/outgoing-handler@0.2.0", &["handle"], false);
    let report = inspect(engine(), &bytes).unwrap();
    assert!(fitting(&report).is_empty());
    let want =
        "imports wasi:http/outgoing-handler@0.2.0, which is not standard WASI this host provides";
    assert_eq!(report.imports[0].problem.as_deref(), Some(want));
    assert_eq!(report.imports[0].functions, ["handle"]);
    let network = fit(&report, World::Network);
    assert_eq!(network.problems[0], want);
    assert_eq!(
        network.problems[1],
        "does not export wasmgate:plugin/network@0.1.0 (network-plugin needs it)"
    );
}

#[test]
fn a_different_shape_of_a_provided_interface_is_told_apart() {
    // The host has wasi:keyvalue/store, but its `open` takes a name and returns a bucket.
    let bytes = importing("wasi:keyvalue/store@0.2.0-draft", &["open"], false);
    let report = inspect(engine(), &bytes).unwrap();
    let problem = report.imports[0].problem.as_deref().unwrap();
    assert!(
        problem.starts_with(
            "imports wasi:keyvalue/store@0.2.0-draft, which this host provides differently: `open` has another type: "
        ),
        "{problem}"
    );
    // A function this host's version of the interface lacks.
    let bytes = importing(
        "wasi:cli/environment@0.2.0",
        &["get-arguments", "get-everything"],
        true,
    );
    let report = inspect(engine(), &bytes).unwrap();
    assert_eq!(
        report.imports[0].problem.as_deref(),
        Some(
            "imports wasi:cli/environment@0.2.0, which this host provides differently: it has no `get-everything`"
        )
    );
}

#[test]
fn a_semver_compatible_wasi_import_is_provided() {
    // wasmtime links wasi:cli@0.2.x for any 0.2 the component names.
    let bytes = importing("wasi:cli/environment@0.2.0", &["get-arguments"], true);
    let report = inspect(engine(), &bytes).unwrap();
    assert_eq!(report.imports[0].problem, None, "{report:#?}");
    // It exports nothing, so it fits no world, for exports alone.
    assert!(fitting(&report).is_empty());
    assert_eq!(fit(&report, World::Runtime).problems.len(), 1);
}

#[test]
fn every_missing_import_is_named_not_just_the_first() {
    // Two foreign imports: the probe linker stands in for the first and finds the second.
    let mut bytes = importing("acme:thing/a@1.0.0", &["f"], false);
    // Splice a second import section: sections may repeat in a component.
    let second = importing("acme:thing/b@1.0.0", &["g"], false);
    bytes.extend_from_slice(&second[EMPTY.len()..]);
    // Its instance type is the component's second type now: the import's last byte is its index.
    *bytes.last_mut().unwrap() = 0x01;
    let report = inspect(engine(), &bytes).unwrap();
    let problems: Vec<_> = report
        .imports
        .iter()
        .map(|i| i.problem.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        problems,
        [
            "imports acme:thing/a@1.0.0, which is not standard WASI this host provides",
            "imports acme:thing/b@1.0.0, which is not standard WASI this host provides",
        ]
    );
}

#[test]
fn a_foreign_resource_is_named_and_the_probe_looks_past_it() {
    let mut bytes = importing_resource("wasi:http/types@0.2.0");
    let provided = importing("wasi:cli/environment@0.2.0", &["get-arguments"], true);
    bytes.extend_from_slice(&provided[EMPTY.len()..]);
    // The second import's instance type follows the first one's: it is type 1.
    *bytes.last_mut().unwrap() = 0x01;
    let report = inspect(engine(), &bytes).unwrap();
    assert_eq!(report.imports[0].resources, ["fields"]);
    assert_eq!(
        report.imports[0].problem.as_deref(),
        Some("imports wasi:http/types@0.2.0, which is not standard WASI this host provides")
    );
    assert_eq!(report.imports[1].problem, None, "{report:#?}");
    // Only the foreign import and the missing export: nothing the probe made up.
    assert_eq!(fit(&report, World::Runtime).problems.len(), 2);
}

#[test]
fn an_export_missing_a_function_names_it() {
    // `(component (core module (func (export "f"))) (core instance (instantiate 0))
    //   (alias core export 0 "f" (core func)) (type (func)) (canon lift (core func 0) (type 0))
    //   (instance (export "subscriptions" (func 0)))
    //   (export "wasmgate:plugin/hook@0.1.0" (instance 0)))`: the hook interface with
    // `subscriptions` but no `pre` or `post`.
    let module = [
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // core module preamble
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type 0: [] -> []
        0x03, 0x02, 0x01, 0x00, // one func of type 0
        0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export it as "f"
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // its body: no locals, end
    ];
    let mut bytes = EMPTY.to_vec();
    section(1, &module, &mut bytes);
    section(2, &[0x01, 0x00, 0x00, 0x00], &mut bytes); // instantiate module 0, no args
    section(6, &[0x01, 0x00, 0x00, 0x01, 0x00, 0x01, b'f'], &mut bytes); // alias core func "f"
    section(7, &[0x01, 0x40, 0x00, 0x01, 0x00], &mut bytes); // type 0: func()
    section(8, &[0x01, 0x00, 0x00, 0x00, 0x00, 0x00], &mut bytes); // lift core func 0 as type 0
    let mut instance = vec![0x01, 0x01, 0x01, 0x00]; // an instance of one export, plain name
    name("subscriptions", &mut instance);
    instance.extend([0x01, 0x00]); // func 0
    section(5, &instance, &mut bytes);
    let mut exports = vec![0x01, 0x00];
    name("wasmgate:plugin/hook@0.1.0", &mut exports);
    exports.extend([0x05, 0x00, 0x00]); // instance 0, no type ascription
    section(11, &exports, &mut bytes);

    let report = inspect(engine(), &bytes).unwrap();
    assert_eq!(report.exports[0].functions, ["subscriptions"]);
    assert_eq!(
        fit(&report, World::Runtime).problems,
        ["exports wasmgate:plugin/hook@0.1.0 without its function pre (runtime-hook needs it)"]
    );
}

#[test]
fn a_component_exporting_nothing_misses_every_export() {
    let report = inspect(engine(), &EMPTY).unwrap();
    assert!(report.imports.is_empty() && report.exports.is_empty());
    assert!(report.packages.is_empty());
    for w in &report.worlds {
        assert!(!w.fits);
        assert!(
            w.problems
                .iter()
                .all(|p| p.starts_with("does not export wasmgate:plugin/")),
            "{w:?}"
        );
        // Runtime hooks are served in 0.1.0, 0.2.0 and 0.3.0; the other worlds only in 0.1.0.
        let versions: &[&str] = match w.world {
            World::Runtime => &["0.1.0", "0.2.0", "0.3.0"],
            _ => &["0.1.0"],
        };
        assert!(versions.contains(&w.version), "{w:?}");
    }
    assert_eq!(report.worlds.len(), 5);
}

#[test]
fn not_a_component_is_an_error() {
    let err = inspect(engine(), b"definitely not wasm").unwrap_err();
    assert!(err.to_string().starts_with("not a component"), "{err}");
}

#[test]
fn link_refuses_with_the_report_messages() {
    let bytes = plugin("hook-inject");
    let component = Component::new(&engine().engine, &bytes).unwrap();
    let report = inspect(engine(), &bytes).unwrap();
    let err = link(engine(), &component, World::Network).err().unwrap();
    assert_eq!(
        err.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        fit(&report, World::Network).problems
    );
    assert!(link(engine(), &component, World::Runtime).is_ok());

    let foreign = importing("wasi:http/outgoing-handler@0.2.0", &["handle"], false);
    let component = Component::new(&engine().engine, &foreign).unwrap();
    let err = link(engine(), &component, World::Runtime).err().unwrap();
    assert_eq!(
        err.to_string(),
        "imports wasi:http/outgoing-handler@0.2.0, which is not standard WASI this host provides; \
         does not export wasmgate:plugin/hook@0.1.0 (runtime-hook needs it)"
    );
}

#[test]
fn names_split_as_wit_writes_them() {
    assert_eq!(
        package_of("wasmgate:plugin/hook@0.1.0").as_deref(),
        Some("wasmgate:plugin@0.1.0")
    );
    assert_eq!(package_of("handle"), None);
    assert_eq!(short_name(World::Storage.name()), "storage-plugin");
    assert_eq!(version_of(World::Runtime.name()), "0.1.0");
}

#[test]
fn a_runtime_hook_fits_the_version_it_exports() {
    let workdir = plugin("hook-workdir");
    let report = inspect(engine(), &workdir).unwrap();
    let fits: Vec<&str> = report.fitting().map(|w| w.name).collect();
    assert_eq!(fits, ["wasmgate:plugin/runtime-hook@0.2.0"], "{report:#?}");
    assert_eq!(report.packages, ["wasmgate:plugin@0.2.0"]);
    let old = report
        .worlds
        .iter()
        .find(|w| w.version == "0.1.0" && w.world == World::Runtime)
        .unwrap();
    assert_eq!(
        old.problems,
        ["does not export wasmgate:plugin/hook@0.1.0 (runtime-hook needs it)"]
    );

    // Linking picks the version from the export, whichever it is.
    for (name, bytes) in [
        ("0.2.0", workdir),
        ("0.1.0", plugin("hook-mirror")),
        ("0.3.0", plugin("hook-inject")),
    ] {
        let component = Component::new(&engine().engine, &bytes).unwrap();
        let Ok(Pre::Runtime(pre)) = link(engine(), &component, World::Runtime) else {
            panic!("{name} does not link as a runtime hook");
        };
        assert_eq!(pre.world(), format!("wasmgate:plugin/runtime-hook@{name}"));
    }
}
