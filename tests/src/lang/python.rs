//! Plugins under plugins/python: Python compiled into components by componentize-py.
//!
//! `plugins/python/setup` installs the pinned componentize-py into `target/tools/venv` and
//! `plugins/python/build` builds every plugin into `plugins/python/<name>/target/<name>.wasm`.
//! A build takes ~15 s (the component carries CPython), so [`plugin`] runs the scripts only when
//! the component is missing or older than one of its inputs, and at most once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use crate::repo;

/// Builds `plugins/python/<name>` if its component is missing or stale (once per test process)
/// and returns the component.
pub fn plugin(name: &str) -> PathBuf {
    static CHECKED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| Mutex::new(Vec::new()));
    // Held across the build, so parallel tests wait for one build instead of racing it; a
    // panicking build records nothing, and the next caller tries again.
    let mut checked = checked.lock().unwrap_or_else(|p| p.into_inner());
    let dir = repo().join("plugins/python").join(name);
    let wasm = dir.join("target").join(format!("{name}.wasm"));
    if !checked.iter().any(|c| c == name) {
        if stale(&wasm, &inputs(&dir)) {
            for script in ["plugins/python/setup", "plugins/python/build"] {
                let status = Command::new(repo().join(script))
                    .status()
                    .unwrap_or_else(|e| panic!("run {script}: {e}"));
                assert!(status.success(), "{script} failed");
            }
        }
        checked.push(name.to_string());
    }
    assert!(
        wasm.exists(),
        "plugins/python/build did not produce {}: is there a plugins/python/{name}?",
        wasm.display()
    );
    wasm
}

/// What a plugin's component is built from: its code and world, the WIT, and the scripts (the
/// setup script pins the componentize-py version).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    vec![
        dir.join("src"),
        dir.join("world"),
        repo().join("wit"),
        repo().join("plugins/python/build"),
        repo().join("plugins/python/setup"),
    ]
}

/// Whether `output` is missing or older than any file under `inputs`.
fn stale(output: &Path, inputs: &[PathBuf]) -> bool {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else {
        return true;
    };
    inputs.iter().any(|p| newest(p) > built)
}

/// The latest modification time of the files at or under `path`. Directories' own times are
/// left out: running the native unit tests adds `__pycache__` directories, which is no edit.
fn newest(path: &Path) -> SystemTime {
    let Ok(meta) = std::fs::metadata(path) else {
        return SystemTime::UNIX_EPOCH;
    };
    if !meta.is_dir() {
        return meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name() != "__pycache__")
        .map(|e| newest(&e.path()))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
