//! Reloads a plugin when its file changes. Editors and build tools write in several steps, so
//! events are settled for a moment before the reload; a half-written file just fails to compile
//! and the old version keeps serving until the next event.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use wasmgate_engine::Registry;

const SETTLE: Duration = Duration::from_millis(200);

fn canonical(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(name),
        _ => path.to_path_buf(),
    }
}

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
        // A missing directory only means that plugin is not hot-swappable; the rest still are.
        if let Err(e) = watcher.watch(d, RecursiveMode::NonRecursive) {
            tracing::error!("cannot watch {} for plugin changes: {e}", d.display());
        }
    }
    // Keyed by canonical directory plus file name: the file itself may not exist yet.
    let by_path: HashMap<PathBuf, String> =
        paths.into_iter().map(|(p, n)| (canonical(&p), n)).collect();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = vec![first];
            tokio::time::sleep(SETTLE).await;
            while let Ok(p) = rx.try_recv() {
                changed.push(p);
            }
            let mut names: Vec<&String> = changed
                .iter()
                .filter_map(|p| by_path.get(&canonical(p)))
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
