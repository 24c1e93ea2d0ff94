//! Plugins under plugins/c: C compiled by Debian's clang against wasi-libc, made into components
//! by `plugins/c/build` with the toolchain `plugins/c/setup` installs into target/tools.
//!
//! [`plugin`] is the C counterpart of [`crate::plugin`]: it returns
//! `plugins/c/<name>/target/<name>.wasm`, running setup and build first (once per test process)
//! when that component is missing or older than anything it is built from.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::repo;

/// Whether this process has run setup and build; held while one runs, so that tests on other
/// threads wait for it rather than start their own (the build script also locks across processes).
static BUILT: Mutex<bool> = Mutex::new(false);

/// The component of `plugins/c/<name>`, built if missing or stale.
pub fn plugin(name: &str) -> PathBuf {
    // One build per process: `plugins/c/build` builds every C plugin at once.
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let root = repo();
    let dir = root.join("plugins/c").join(name);
    assert!(
        dir.join("world").is_file(),
        "{} is not a C plugin (no world file)",
        dir.display()
    );
    let wasm = dir.join("target").join(format!("{name}.wasm"));
    if !*built && stale(&root, &dir, &wasm) {
        run(&root.join("plugins/c/setup"), &[]);
        run(&root.join("plugins/c/build"), &[]);
        *built = true;
    }
    assert!(wasm.is_file(), "plugins/c/build made no {}", wasm.display());
    wasm
}

/// Runs `plugins/c/build --test` for `name`: builds it and runs its C unit tests natively.
pub fn unit_tests(name: &str) -> String {
    // Not counted as the build of [`plugin`]: it builds only `name`.
    let _one_build_at_a_time = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let root = repo();
    run(&root.join("plugins/c/setup"), &[]);
    run(&root.join("plugins/c/build"), &["--test", name])
}

fn run(script: &Path, args: &[&str]) -> String {
    let out = Command::new(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {stdout}{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether `wasm` is missing or older than a file it is built from: the plugin's own files
/// (not its target/), the C setup and build scripts, and the WIT.
fn stale(root: &Path, dir: &Path, wasm: &Path) -> bool {
    let Some(built) = mtime(wasm) else {
        return true;
    };
    let mut inputs = vec![root.join("plugins/c/setup"), root.join("plugins/c/build")];
    collect(dir, &mut inputs);
    collect(&root.join("wit"), &mut inputs);
    inputs.iter().any(|p| mtime(p).is_none_or(|m| m > built))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Every file under `dir`, skipping `target` directories.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if entry.file_name() != "target" {
                collect(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}
