//! Replays the DELs the shim queued on disk while the daemon was down.

use wasmgate_cni::command::Command;
use wasmgate_cni::error::code;
use wasmgate_cni::queue::DelQueue;
use wasmgate_cni::wire::Response;

use super::CniService;

/// Runs every queued DEL once; returns how many were applied. A DEL that failed for a reason
/// worth retrying stays queued; one that can never succeed is set aside as `.failed`, not lost.
pub async fn replay(svc: &CniService, queue: &DelQueue) -> usize {
    let entries = match queue.list() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("read del queue: {e}");
            return 0;
        }
    };
    let mut applied = 0;
    for (path, req) in entries {
        if req.invocation.command != Command::Del {
            set_aside(&path, "not a DEL");
            continue;
        }
        let cid = req.invocation.container_id.clone();
        match svc.handle(req).await {
            Response::Ok { .. } => {
                applied += 1;
                tracing::info!(container = %cid, "replayed queued DEL");
                if let Err(e) = queue.remove(&path) {
                    tracing::error!("remove {}: {e}", path.display());
                }
            }
            Response::Err { error } if error.code == code::TRY_AGAIN => {
                tracing::warn!(container = %cid, "queued DEL will be retried: {}", error.msg);
            }
            Response::Err { error } => set_aside(&path, &error.msg),
        }
    }
    applied
}

fn set_aside(path: &std::path::Path, why: &str) {
    tracing::error!("queued DEL {} cannot be applied: {why}", path.display());
    let failed = path.with_extension("failed");
    if let Err(e) = std::fs::rename(path, &failed) {
        tracing::error!("set aside {}: {e}", path.display());
    }
}
