//! Reloads a plugin when its file changes. Editors and build tools write in several steps, so
//! events are settled for a moment before the reload; a half-written file just fails to compile
//! and the old version keeps serving until the next event.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use wasmgate_engine::Registry;

const SETTLE: Duration = Duration::from_millis(200);

/// Watches `paths` (plugin name by file path). The returned watcher must be kept alive.
pub fn spawn(
    registry: Arc<Registry>,
    paths: HashMap<PathBuf, String>,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && (ev.kind.is_create() || ev.kind.is_modify())
        {
            for p in ev.paths {
                let _ = tx.send(p);
            }
        }
    })?;
    // Watch directories, not files: an atomic replace (rename over the file) drops a file watch.
    let mut dirs: Vec<PathBuf> = paths
        .keys()
        .filter_map(|p| p.parent().map(PathBuf::from))
        .collect();
    dirs.sort();
    dirs.dedup();
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    let by_path: HashMap<PathBuf, String> = paths
        .into_iter()
        .map(|(p, n)| (std::fs::canonicalize(&p).unwrap_or(p), n))
        .collect();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = vec![first];
            tokio::time::sleep(SETTLE).await;
            while let Ok(p) = rx.try_recv() {
                changed.push(p);
            }
            let mut names: Vec<&String> = changed
                .iter()
                .filter_map(|p| by_path.get(&std::fs::canonicalize(p).unwrap_or(p.clone())))
                .collect();
            names.sort();
            names.dedup();
            for name in names {
                match registry.reload(name).await {
                    Ok(info) => {
                        tracing::info!(plugin = %name, sha256 = %info.sha256, "reloaded after file change")
                    }
                    Err(e) => {
                        tracing::error!(plugin = %name, "reload refused, old version keeps serving: {e}")
                    }
                }
            }
        }
    });
    Ok(watcher)
}
