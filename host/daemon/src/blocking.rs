//! Blocking work that async handlers cannot avoid doing in place.

/// Runs `f`, which may block (a redb commit waits for fsync and for the one writer; a syscall
/// on a caller's path may hang on a dead NFS server), without pinning the tokio worker it is
/// called on: on the multi-threaded runtime the worker's other tasks move to another thread
/// first. On a current-thread runtime (unit tests) or outside one, `f` just runs.
pub fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A worker stuck in `f` no longer holds up the tasks queued behind it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocked_worker_hands_its_tasks_on() {
        let (started_tx, started) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // One worker, held by `blocked`: without the hand-off, `other` could run only after
        // the block ends, and the block ends early only once `other` has run.
        let blocked = tokio::spawn(async move {
            started_tx.send(()).unwrap();
            off_worker(|| rx.recv_timeout(Duration::from_secs(20)).is_ok())
        });
        // The test body is not on the worker, so it may wait here.
        started.recv().unwrap();
        let other = tokio::spawn(async { 42 });
        assert_eq!(other.await.unwrap(), 42);
        tx.send(()).unwrap();
        assert!(blocked.await.unwrap());
    }

    #[tokio::test]
    async fn a_current_thread_runtime_runs_it_in_place() {
        assert_eq!(off_worker(|| 7), 7);
    }
}
