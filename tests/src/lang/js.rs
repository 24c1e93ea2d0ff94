//! Plugins under plugins/js: JavaScript compiled into components by componentize-js.
//!
//! `plugins/js/setup` installs the pinned toolchain into `target/tools/js` and `plugins/js/build`
//! builds every plugin into `plugins/js/<name>/target/<name>.wasm`, rebuilding only what changed
//! (it keeps a hash of each plugin's inputs beside the component). Both are quick no-ops when
//! everything is current, so [`plugin`] simply runs them once per test process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::repo;

/// Builds the JavaScript plugins if needed (once per test process) and returns the component of
/// `plugins/js/<name>`.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<bool>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(false));
    // Held across the build, so parallel tests wait for one build instead of racing it; a
    // panicking build leaves `false`, and the next caller tries again.
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    if !*built {
        for script in ["plugins/js/setup", "plugins/js/build"] {
            let status = Command::new(repo().join(script))
                .status()
                .unwrap_or_else(|e| panic!("run {script}: {e}"));
            assert!(status.success(), "{script} failed");
        }
        *built = true;
    }
    let wasm = repo()
        .join("plugins/js")
        .join(name)
        .join("target")
        .join(format!("{name}.wasm"));
    assert!(
        wasm.exists(),
        "plugins/js/build did not produce {}: is there a plugins/js/{name}?",
        wasm.display()
    );
    wasm
}
