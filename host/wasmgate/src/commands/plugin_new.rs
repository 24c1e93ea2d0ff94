//! `wasmgate plugin new --lang L --world W NAME`: writes a buildable plugin project, from
//! templates and WIT embedded in this binary, so an installed `wasmgate` needs no checkout.
//!
//! A project is three layers of templates (`host/wasmgate/templates/`, see its README) plus
//! `wit/`: the `wasmgate:plugin` version the world's templates are written against (the newest
//! this host serves; a unit test holds them to it), with its WASI deps, from the copy of the
//! repository's `wit/` that `build.rs` embeds:
//! - `<lang>/common/`: what every world of a language shares (manifest, `build`, and the
//!   language's section of the README);
//! - `<lang>/<world>/`: the plugin's code and its unit tests;
//! - `common/<world>/README.md`: what the plugin does and how to try it, for every language.
//!
//! `{{key}}` in a template is replaced by the [`vars`] of that name. A language is one more
//! [`Lang`] in [`LANGS`] and its template files, listed in it (a unit test fails for a template
//! file that no `Lang` lists).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(clap::Args)]
pub struct Args {
    /// The plugin's language: rust or python (every world), js or c (runtime).
    #[arg(long)]
    lang: String,
    /// The world it implements: network (CNI), storage (CSI) or runtime (CRI hook).
    #[arg(long)]
    world: String,
    /// The plugin's name: lowercase letters, digits and dashes. It names the crate or package,
    /// the component (`target/NAME.wasm`) and the daemon's `[plugins.NAME]` entry.
    name: String,
    /// The project directory, which must not exist or be empty [default: ./NAME].
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn run(args: &Args, json: bool) -> anyhow::Result<()> {
    let lang = Lang::find(&args.lang)?;
    let world = World::find(&args.world)?;
    check_name(&args.name)?;
    let files = project(lang, world, &args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    write_project(&dir, &files)?;

    let wasm = dir.join(wasm_path(&args.name));
    if json {
        let out = serde_json::json!({
            "name": args.name,
            "lang": lang.name,
            "world": world.name(),
            "wit_world": world_id(world),
            "dir": dir,
            "wasm": wasm,
            "files": files.iter().map(|f| &f.path).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "created {} ({} {}, {}) in {}",
        args.name,
        lang.name,
        world.name(),
        world_id(world),
        dir.display()
    );
    for f in &files {
        println!("  {}", f.path);
    }
    println!(
        "next: cd {} && ./build   # -> {}; README.md says how to run it under wasmtime and in the daemon",
        dir.display(),
        wasm_path(&args.name)
    );
    Ok(())
}

/// One template file: where it comes from under `templates/`, where it goes in the project.
struct Template {
    /// Read by the test that holds the lists to the `templates/` directory.
    #[cfg_attr(not(test), allow(dead_code))]
    src: &'static str,
    out: &'static str,
    text: &'static str,
}

/// `t!("rust/common/", "Cargo.toml")`, or `t!(dir, file => out)` to write it under another name.
macro_rules! t {
    ($dir:literal, $file:literal) => {
        t!($dir, $file => $file)
    };
    ($dir:literal, $file:literal => $out:literal) => {
        Template {
            src: concat!($dir, $file),
            out: $out,
            text: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $dir, $file)),
        }
    };
}

/// One language's template set.
struct Lang {
    /// As `--lang` takes it.
    name: &'static str,
    /// As the README names it.
    title: &'static str,
    /// The language's section of the README (build, test, layout), inserted into the world's.
    readme: Template,
    /// Files of every world.
    common: &'static [Template],
    /// The plugin's own files, per world; a world missing here has no template yet.
    worlds: &'static [(World, &'static [Template])],
}

const LANGS: &[Lang] = &[
    Lang {
        name: "rust",
        title: "Rust",
        readme: t!("rust/common/", "README.md"),
        common: &[
            t!("rust/common/", "Cargo.toml"),
            t!("rust/common/", "Cargo.lock"),
            t!("rust/common/", "build"),
            t!("rust/common/", "gitignore" => ".gitignore"),
        ],
        worlds: &[
            (World::Network, &[t!("rust/network/", "src/lib.rs")]),
            (World::Storage, &[t!("rust/storage/", "src/lib.rs")]),
            (World::Runtime, &[t!("rust/runtime/", "src/lib.rs")]),
        ],
    },
    Lang {
        name: "python",
        title: "Python",
        readme: t!("python/common/", "README.md"),
        common: &[
            t!("python/common/", "build"),
            t!("python/common/", "world"),
            t!("python/common/", "gitignore" => ".gitignore"),
        ],
        worlds: &[
            (
                World::Network,
                &[
                    t!("python/network/", "src/app.py"),
                    t!("python/network/", "tests/test_app.py"),
                ],
            ),
            (
                World::Storage,
                &[
                    t!("python/storage/", "src/app.py"),
                    t!("python/storage/", "tests/test_app.py"),
                ],
            ),
            (
                World::Runtime,
                &[
                    t!("python/runtime/", "src/app.py"),
                    t!("python/runtime/", "tests/test_app.py"),
                ],
            ),
        ],
    },
    Lang {
        name: "js",
        title: "JavaScript",
        readme: t!("js/common/", "README.md"),
        common: &[
            t!("js/common/", "build"),
            t!("js/common/", "world"),
            t!("js/common/", "package.json"),
            t!("js/common/", "gitignore" => ".gitignore"),
        ],
        worlds: &[(
            World::Runtime,
            &[
                t!("js/runtime/", "src/index.js"),
                t!("js/runtime/", "src/hook.js"),
                t!("js/runtime/", "test/hook.test.js"),
            ],
        )],
    },
    Lang {
        name: "c",
        title: "C",
        readme: t!("c/common/", "README.md"),
        common: &[
            t!("c/common/", "build"),
            t!("c/common/", "world"),
            t!("c/common/", "gitignore" => ".gitignore"),
        ],
        worlds: &[(
            World::Runtime,
            &[
                t!("c/runtime/", "src/hook.c"),
                t!("c/runtime/", "src/decide.c"),
                t!("c/runtime/", "src/decide.h"),
                t!("c/runtime/", "test/decide_test.c"),
            ],
        )],
    },
];

impl Lang {
    fn find(name: &str) -> anyhow::Result<&'static Lang> {
        match LANGS.iter().find(|l| l.name == name) {
            Some(l) => Ok(l),
            None => bail!(
                "unknown language {name:?}: there are templates for {}",
                LANGS.iter().map(|l| l.name).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    /// The worlds it has templates for, as `--world` takes them.
    fn world_names(&self) -> String {
        let names: Vec<&str> = self.worlds.iter().map(|(w, _)| w.name()).collect();
        names.join(", ")
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum World {
    Network,
    Storage,
    Runtime,
}

impl World {
    const ALL: [World; 3] = [World::Network, World::Storage, World::Runtime];

    fn find(name: &str) -> anyhow::Result<World> {
        match Self::ALL.into_iter().find(|w| w.name() == name) {
            Some(w) => Ok(w),
            None => bail!(
                "unknown world {name:?}: choose network (CNI), storage (CSI) or runtime (CRI hook)"
            ),
        }
    }

    /// As `--world` and the daemon's `world = "…"` take it.
    fn name(self) -> &'static str {
        match self {
            World::Network => "network",
            World::Storage => "storage",
            World::Runtime => "runtime",
        }
    }

    /// The world's name in the WIT package.
    fn wit_name(self) -> &'static str {
        match self {
            World::Network => "network-plugin",
            World::Storage => "storage-plugin",
            World::Runtime => "runtime-hook",
        }
    }

    /// The `wasmgate:plugin` version this world's templates are written against.
    fn wit_version(self) -> &'static str {
        match self {
            World::Network | World::Storage => "0.1.0",
            World::Runtime => "0.3.0",
        }
    }

    /// The WIT package of [`World::wit_version`], as embedded.
    fn wit(self) -> anyhow::Result<WitVersion> {
        let package = format!("wasmgate:plugin@{}", self.wit_version());
        match wit_versions().into_iter().find(|v| v.package == package) {
            Some(v) if v.has_world(self.wit_name()) => Ok(v),
            _ => bail!(
                "this wasmgate has no {package} with the {} world to write (its templates and \
                 wit/ disagree)",
                self.wit_name()
            ),
        }
    }

    fn readme(self) -> Template {
        match self {
            World::Network => t!("common/network/", "README.md"),
            World::Storage => t!("common/storage/", "README.md"),
            World::Runtime => t!("common/runtime/", "README.md"),
        }
    }
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/wit_files.rs"));
}

/// One WIT package version as embedded: its `package`, and its files (the top-level `*.wit`
/// files, then `deps/`), which a project gets under `wit/`.
struct WitVersion {
    package: &'static str,
    files: Vec<(&'static str, &'static str)>,
}

impl WitVersion {
    fn has_world(&self, name: &str) -> bool {
        let decl = format!("world {name} ");
        self.top_level()
            .any(|(_, text)| text.lines().any(|l| l.trim_start().starts_with(&decl)))
    }

    /// The package's own files, not its deps.
    fn top_level(&self) -> impl Iterator<Item = &(&'static str, &'static str)> {
        self.files.iter().filter(|(path, _)| !path.contains('/'))
    }
}

/// Every WIT version directory under the repository's `wit/` that declares a package.
fn wit_versions() -> Vec<WitVersion> {
    let mut dirs: Vec<&str> = embedded::WIT_FILES.iter().map(|(dir, _, _)| *dir).collect();
    dirs.dedup();
    dirs.into_iter()
        .filter_map(|dir| {
            let files: Vec<_> = embedded::WIT_FILES
                .iter()
                .filter(|(d, _, _)| *d == dir)
                .map(|(_, path, text)| (*path, *text))
                .collect();
            let package = files
                .iter()
                .filter(|(path, _)| !path.contains('/'))
                .find_map(|(_, text)| {
                    text.lines()
                        .find_map(|l| l.trim().strip_prefix("package "))
                        .and_then(|p| p.trim().strip_suffix(';'))
                })?;
            Some(WitVersion { package, files })
        })
        .collect()
}

/// E.g. `wasmgate:plugin/network-plugin@0.1.0`.
fn world_id(world: World) -> String {
    format!(
        "wasmgate:plugin/{}@{}",
        world.wit_name(),
        world.wit_version()
    )
}

/// The script that pins componentize-py; the Python template's build demands the same version.
const PYTHON_SETUP: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../plugins/python/setup"
));

fn componentize_py_version() -> &'static str {
    PYTHON_SETUP
        .lines()
        .find_map(|l| l.strip_prefix("COMPONENTIZE_PY_VERSION="))
        .map(str::trim)
        .expect("plugins/python/setup pins COMPONENTIZE_PY_VERSION")
}

/// The manifest that pins componentize-js; the JS template's build demands the same version.
const JS_PACKAGE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../plugins/js/package.json"
));

fn componentize_js_version() -> &'static str {
    JS_PACKAGE
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("\"@bytecodealliance/componentize-js\":")
        })
        .map(|v| v.trim().trim_end_matches(',').trim_matches('"'))
        .expect("plugins/js/package.json pins @bytecodealliance/componentize-js")
}

/// The script that pins the C toolchain: the C template's build demands the same wit-bindgen
/// (its `src/hook.c` frees what that version's bindings allocate) and finds that adapter.
const C_SETUP: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../plugins/c/setup"
));

fn c_setup_pin(key: &str) -> &'static str {
    C_SETUP
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("plugins/c/setup pins {key}"))
}

/// Where every language's build script leaves the component.
fn wasm_path(name: &str) -> String {
    format!("target/{name}.wasm")
}

/// The values of `{{key}}` in templates.
fn vars(lang: &Lang, world: World, name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("name", name.to_string()),
        // The Rust crate's (and a Python module's) spelling of the name.
        ("crate", name.replace('-', "_")),
        ("lang", lang.title.to_string()),
        ("world", world.name().to_string()),
        ("world_id", world_id(world)),
        (
            "wit_package",
            format!("wasmgate:plugin@{}", world.wit_version()),
        ),
        ("wasm", wasm_path(name)),
        ("wasmgate_version", env!("CARGO_PKG_VERSION").to_string()),
        ("componentize_py", componentize_py_version().to_string()),
        ("componentize_js", componentize_js_version().to_string()),
        (
            "wit_bindgen",
            c_setup_pin("WIT_BINDGEN_VERSION").to_string(),
        ),
        ("wasi_adapter", c_setup_pin("ADAPTER_VERSION").to_string()),
    ]
}

/// Replaces each `{{key}}` that names one of `vars`; anything else is left as it is.
fn render(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after
            .find("}}")
            .and_then(|end| Some((vars.iter().find(|(k, _)| *k == &after[..end])?, end)));
        match value {
            Some(((_, v), end)) => {
                out.push_str(v);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One file of a rendered project.
struct File {
    /// Relative to the project directory, `/`-separated.
    path: String,
    text: String,
}

impl File {
    /// Every language's build script is `build`, and it is the one executable file.
    fn executable(&self) -> bool {
        self.path == "build"
    }
}

/// Every file of the project, sorted by path.
fn project(lang: &Lang, world: World, name: &str) -> anyhow::Result<Vec<File>> {
    let Some((_, own)) = lang.worlds.iter().find(|(w, _)| *w == world) else {
        bail!(
            "there is no {} template for the {} world yet: {} has {}",
            lang.name,
            world.name(),
            lang.name,
            lang.world_names()
        );
    };
    let wit = world.wit()?;
    let mut vars = vars(lang, world, name);
    let mut files: Vec<File> = lang
        .common
        .iter()
        .chain(own.iter())
        .map(|t| {
            let text = render(t.text, &vars);
            File {
                path: t.out.to_string(),
                text: if t.out == "Cargo.lock" {
                    sort_cargo_lock(&text)
                } else {
                    text
                },
            }
        })
        .collect();
    let section = render(lang.readme.text, &vars);
    vars.push(("lang_section", section.trim_end().to_string()));
    files.push(File {
        path: "README.md".to_string(),
        text: render(world.readme().text, &vars),
    });
    files.extend(wit.files.iter().map(|(path, text)| File {
        path: format!("wit/{path}"),
        text: text.to_string(),
    }));
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// A Cargo.lock with its `[[package]]` entries in Cargo's order, by name: the template's root
/// package is named only now, and a lock out of order would be rewritten by the first build.
fn sort_cargo_lock(text: &str) -> String {
    const SEP: &str = "\n[[package]]\n";
    let mut parts: Vec<&str> = text.split(SEP).collect();
    let head = parts.remove(0);
    let name = |entry: &&str| entry.lines().next().unwrap_or_default().to_string();
    parts.sort_by_key(name);
    std::iter::once(head)
        .chain(parts)
        .collect::<Vec<_>>()
        .join(SEP)
}

/// A name that works as a Cargo package (and its crate's `_` spelling), a Python module once
/// dashes become underscores, an npm package, a file name and a TOML key.
fn check_name(name: &str) -> anyhow::Result<()> {
    const MAX: usize = 64;
    let shape = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !shape {
        bail!(
            "plugin name {name:?} is not valid: use lowercase letters, digits and single dashes, \
             starting with a letter and not ending with a dash (e.g. my-plugin)"
        );
    }
    if name.len() > MAX {
        bail!(
            "plugin name {name:?} is too long: {} characters, at most {MAX}",
            name.len()
        );
    }
    if let Some(why) = reserved(name) {
        bail!("plugin name {name:?} is reserved: {why}");
    }
    Ok(())
}

/// Why a well-formed name still cannot be used, if it cannot.
fn reserved(name: &str) -> Option<&'static str> {
    // Rust's keywords, reserved ones included: a crate cannot be called so.
    const RUST: &[&str] = &[
        "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
        "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
        "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub",
        "ref", "return", "self", "static", "struct", "super", "trait", "true", "try", "type",
        "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
    ];
    // Python's lowercase keywords not already above.
    const PYTHON: &[&str] = &[
        "and", "assert", "class", "def", "del", "elif", "except", "finally", "from", "global",
        "import", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "with",
    ];
    // Names Cargo refuses or that shadow a standard crate, and the module componentize-py wraps.
    const TOOLS: &[&str] = &[
        "alloc",
        "build",
        "core",
        "deps",
        "examples",
        "incremental",
        "proc-macro",
        "std",
        "test",
        "app",
        "wit-world",
    ];
    if RUST.contains(&name) {
        Some("a Rust keyword")
    } else if PYTHON.contains(&name) {
        Some("a Python keyword")
    } else if TOOLS.contains(&name) {
        Some("Cargo, Rust or componentize-py uses that name")
    } else {
        None
    }
}

/// Writes `files` into `dir`, which must not exist or be empty. On failure, a directory this
/// call created is removed again.
fn write_project(dir: &Path, files: &[File]) -> anyhow::Result<()> {
    let created = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} is not empty: choose another --dir, or remove it first",
                    dir.display()
                );
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} exists and is not a directory", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let written = files.iter().try_for_each(|f| write_file(dir, f));
    if written.is_err() && created {
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}

fn write_file(dir: &Path, file: &File) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(&file.path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if file.executable() { 0o755 } else { 0o644 })
        .open(&path)
        .and_then(|mut f| f.write_all(file.text.as_bytes()))
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `dir`, relative to it, `/`-separated.
    fn walk(dir: &Path) -> Vec<String> {
        fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    go(root, &path, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let mut out = Vec::new();
        go(dir, dir, &mut out);
        out.sort();
        out
    }

    fn manifest_dir() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn every_template_file_is_embedded() {
        let mut listed: Vec<String> = LANGS
            .iter()
            .flat_map(|l| {
                let own = l.worlds.iter().flat_map(|(_, files)| files.iter());
                std::iter::once(&l.readme)
                    .chain(l.common.iter())
                    .chain(own)
                    .map(|t| t.src.to_string())
            })
            .chain(World::ALL.iter().map(|w| w.readme().src.to_string()))
            .collect();
        // The templates' own README is for wasmgate's developers, not a template.
        listed.push("README.md".into());
        listed.sort();
        assert_eq!(walk(&manifest_dir().join("templates")), listed);
    }

    #[test]
    fn each_world_is_written_against_the_newest_version_the_host_serves() {
        use wasmgate_engine::bindings as served;
        for world in World::ALL {
            let newest = match world {
                World::Network => served::NETWORK_WORLD,
                World::Storage => served::STORAGE_WORLD,
                World::Runtime => served::RUNTIME_WORLDS.last().unwrap(),
            };
            assert_eq!(
                world_id(world),
                newest,
                "update templates/*/{} (and World::wit_version) to the newest version",
                world.name()
            );
            // And its WIT is embedded, with the deps it needs.
            let wit = world.wit().unwrap();
            let paths: Vec<&str> = wit.files.iter().map(|(p, _)| *p).collect();
            for want in [
                format!("{}.wit", world.name()),
                "deps/keyvalue/store.wit".into(),
                "deps/config/store.wit".into(),
            ] {
                assert!(
                    paths.contains(&want.as_str()),
                    "{world:?}: {want} not in {paths:?}"
                );
            }
        }
    }

    #[test]
    fn no_embedded_version_of_a_world_is_newer_than_its_templates() {
        let semver = |v: &str| -> Vec<u64> { v.split('.').map(|n| n.parse().unwrap()).collect() };
        for world in World::ALL {
            for v in wit_versions()
                .iter()
                .filter(|v| v.has_world(world.wit_name()))
            {
                let (_, version) = v.package.split_once('@').unwrap();
                assert!(
                    semver(version) <= semver(world.wit_version()),
                    "wit/ has {} in {}: update templates/*/{} to it",
                    world.wit_name(),
                    v.package,
                    world.name()
                );
            }
        }
    }

    #[test]
    fn every_project_is_fully_rendered() {
        for lang in LANGS {
            for &(world, _) in lang.worlds {
                let files = project(lang, world, "my-plugin").unwrap();
                let mut paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                paths.dedup();
                assert_eq!(
                    paths.len(),
                    files.len(),
                    "{} {world:?}: a path twice",
                    lang.name
                );
                let wit = format!("wit/{}.wit", world.name());
                for name in ["README.md", "build", ".gitignore", wit.as_str()] {
                    assert!(paths.contains(&name), "{} {world:?}: no {name}", lang.name);
                }
                for f in &files {
                    // A placeholder left over is a `{{` followed by a lowercase word and `}}`.
                    let left = f.text.match_indices("{{").find(|(i, _)| {
                        let after = &f.text[i + 2..];
                        after.find("}}").is_some_and(|end| {
                            end > 0
                                && after[..end]
                                    .chars()
                                    .all(|c| c.is_ascii_lowercase() || c == '_')
                        })
                    });
                    assert!(
                        left.is_none(),
                        "{} {world:?} {}: unrendered placeholder at byte {}",
                        lang.name,
                        f.path,
                        left.unwrap().0
                    );
                }
                let readme = &files.iter().find(|f| f.path == "README.md").unwrap().text;
                assert!(readme.starts_with("# my-plugin\n"), "{readme}");
                assert!(readme.contains(&world_id(world)), "{readme}");
            }
        }
    }

    #[test]
    fn the_cargo_lock_is_in_cargos_order() {
        let files = project(&LANGS[0], World::Network, "zz-last").unwrap();
        let lock = &files.iter().find(|f| f.path == "Cargo.lock").unwrap().text;
        let names: Vec<&str> = lock
            .lines()
            .filter_map(|l| l.strip_prefix("name = "))
            .collect();
        assert_eq!(names.last(), Some(&"\"zz-last\""), "{lock}");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(lock.starts_with("# This file is automatically @generated by Cargo."));
        assert!(lock.ends_with("]\n") || lock.ends_with("\"\n"), "{lock}");
    }

    #[test]
    fn render_replaces_known_keys_only() {
        let vars = [("name", "x".to_string())];
        assert_eq!(
            render("{{name}} {{other}} {{ {{name}}", &vars),
            "x {{other}} {{ x"
        );
        assert_eq!(render("format!(\"{{}}\")", &vars), "format!(\"{{}}\")");
    }

    #[test]
    fn toolchains_are_pinned() {
        for v in [
            componentize_py_version(),
            componentize_js_version(),
            c_setup_pin("WIT_BINDGEN_VERSION"),
            c_setup_pin("ADAPTER_VERSION"),
        ] {
            assert!(
                v.split('.').count() == 3 && v.split('.').all(|n| n.parse::<u32>().is_ok()),
                "{v:?}"
            );
        }
    }

    #[test]
    fn a_world_a_language_lacks_is_refused_naming_those_it_has() {
        let js = Lang::find("js").unwrap();
        let e = project(js, World::Network, "x").err().unwrap().to_string();
        assert_eq!(
            e,
            "there is no js template for the network world yet: js has runtime"
        );
        // Every language has the runtime world, the one every language's end-to-end test runs.
        for lang in LANGS {
            assert!(
                lang.worlds.iter().any(|(w, _)| *w == World::Runtime),
                "{}",
                lang.name
            );
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "my-plugin", "net2", "a-1-b"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "My",
            "my_plugin",
            "-a",
            "a-",
            "a--b",
            "1a",
            "a.b",
            "a b",
            "ü",
            "fn",
            "class",
            "std",
            "test",
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("plugin name"), "{bad:?}: {e}");
        }
        check_name(&"a".repeat(64)).unwrap();
        assert!(
            check_name(&"a".repeat(65))
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }

    #[test]
    fn unknown_languages_and_worlds_are_named() {
        let e = Lang::find("go").err().unwrap().to_string();
        assert_eq!(
            e,
            "unknown language \"go\": there are templates for rust, python, js, c"
        );
        let e = World::find("cni").err().unwrap().to_string();
        assert!(
            e.starts_with("unknown world \"cni\": choose network"),
            "{e}"
        );
    }

    #[test]
    fn the_target_must_not_exist_or_be_empty() {
        let base = std::env::temp_dir().join(format!("wasmgate-plugin-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let files = project(&LANGS[0], World::Runtime, "x").unwrap();

        // Missing: created, with its parents; the build script is executable.
        let fresh = base.join("a/x");
        write_project(&fresh, &files).unwrap();
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&fresh.join("build")), 0o755);
        assert_eq!(mode(&fresh.join("src/lib.rs")), 0o644);

        // Not empty: refused, and nothing of it touched.
        let e = write_project(&fresh, &files).unwrap_err().to_string();
        assert!(
            e.ends_with("is not empty: choose another --dir, or remove it first"),
            "{e}"
        );

        // Empty: used.
        let empty = base.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        write_project(&empty, &files).unwrap();

        // A file: refused.
        let file = base.join("file");
        std::fs::write(&file, "").unwrap();
        let e = write_project(&file, &files).unwrap_err().to_string();
        assert!(e.ends_with("exists and is not a directory"), "{e}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
