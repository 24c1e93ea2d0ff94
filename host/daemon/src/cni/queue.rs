//! Replays the DELs the shim queued on disk: once at start, before the CNI socket opens, then on
//! a poll timer while the daemon runs.
//!
//! A DEL is set aside (`.failed`) only when it can never succeed on this daemon
//! ([`CniService::never_applies`]), and even then it is looked at again on the next start, when
//! the config may have changed. Every other failure keeps it queued and retried, each entry with
//! its own exponential [`Backoff`] whose state ([`Attempts`]) is kept beside it, so a restart
//! resumes it. What waits, and why, is published as [`DelQueueStats`] for the admin socket.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use wasmgate_cni::queue::{Attempts, DelQueue, Entry};
use wasmgate_cni::wire::{Request, Response};

use super::CniService;
use crate::trace::now_ms;

/// How long a queued DEL waits after failing: `first` after one failure, doubling after each
/// further one, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` failed attempts in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// Whether an entry with these failed attempts (none: never tried) is due at `now_ms`. A
    /// clock that went back past the last attempt makes it due rather than wait out the jump.
    pub fn due(&self, attempts: Option<&Attempts>, now_ms: u64) -> bool {
        attempts.is_none_or(|a| {
            let wait = u64::try_from(self.delay(a.count).as_millis()).unwrap_or(u64::MAX);
            now_ms < a.last_ms || now_ms >= a.last_ms.saturating_add(wait)
        })
    }
}

/// The DEL queue as the admin socket shows it (`wasmgate trace --stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DelQueueStats {
    pub dir: PathBuf,
    /// DELs waiting to be applied.
    pub queued: usize,
    /// When the oldest of them was queued, in milliseconds since the Unix epoch.
    pub oldest_queued_ms: Option<u64>,
    /// Files set aside: DELs this daemon can never apply (`.failed`) and files that are not
    /// queued DELs at all (`.bad`).
    pub set_aside: usize,
    /// The waiting DELs that have failed at least once, oldest first.
    pub stuck: Vec<StuckDel>,
}

/// A queued DEL that has failed and waits for its next attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StuckDel {
    pub container_id: String,
    pub ifname: String,
    /// The network config's `name`, when it has one.
    pub network: Option<String>,
    pub queued_ms: u64,
    pub attempts: u32,
    pub last_error: String,
    pub next_attempt_ms: u64,
}

pub struct Replayer {
    queue: DelQueue,
    backoff: Backoff,
    stats: Mutex<DelQueueStats>,
}

impl Replayer {
    pub fn new(queue: DelQueue, backoff: Backoff) -> Self {
        let stats = Mutex::new(DelQueueStats {
            dir: queue.dir().to_path_buf(),
            ..Default::default()
        });
        Self {
            queue,
            backoff,
            stats,
        }
    }

    /// The queue as of the last pass.
    pub fn stats(&self) -> DelQueueStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// At start: puts back what was set aside and this daemon can now apply, then tries every
    /// entry whatever its backoff says, since the config and the plugins may have changed while
    /// the daemon was down. Returns how many were applied.
    pub async fn start(&self, svc: &CniService) -> usize {
        self.restore(svc);
        self.pass(svc, true).await
    }

    /// One poll: tries the entries that are due. Returns how many were applied.
    pub async fn poll(&self, svc: &CniService) -> usize {
        self.pass(svc, false).await
    }

    /// Set-aside DELs include those an older version set aside for any error but 11; only the
    /// ones that still cannot succeed stay.
    fn restore(&self, svc: &CniService) {
        let failed = match self.queue.failed() {
            Ok(failed) => failed,
            Err(e) => {
                tracing::error!("read set-aside DELs in {}: {e}", self.queue.dir().display());
                return;
            }
        };
        for (path, req) in failed {
            if req.is_none_or(|req| svc.never_applies(&req).is_some()) {
                continue;
            }
            match self.queue.restore(&path) {
                Ok(entry) => tracing::info!(entry = %entry.display(), "set-aside DEL queued again"),
                Err(e) => tracing::error!("queue set-aside DEL {} again: {e}", path.display()),
            }
        }
    }

    async fn pass(&self, svc: &CniService, all: bool) -> usize {
        let entries = match self.queue.entries() {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!("read del queue {}: {e}", self.queue.dir().display());
                return 0;
            }
        };
        let mut applied = 0;
        for Entry { path, request, .. } in entries {
            let attempts = self.queue.attempts(&path);
            if !all && !self.backoff.due(attempts.as_ref(), now_ms()) {
                continue;
            }
            let cid = request.invocation.container_id.clone();
            if let Some(why) = svc.never_applies(&request) {
                tracing::error!(container = %cid, "queued DEL {} set aside, it can never be applied here: {why}", path.display());
                if let Err(e) = self.queue.set_aside(&path) {
                    tracing::error!("set aside {}: {e}", path.display());
                }
                continue;
            }
            match svc.handle(request).await {
                Response::Ok { .. } => {
                    applied += 1;
                    tracing::info!(container = %cid, "replayed queued DEL");
                    if let Err(e) = self.queue.remove(&path) {
                        tracing::error!("remove {}: {e}", path.display());
                    }
                }
                Response::Err { error } => {
                    let tried = Attempts {
                        count: attempts.map_or(0, |a| a.count).saturating_add(1),
                        last_ms: now_ms(),
                        last_error: format!("code {}: {}", error.code, error.msg),
                    };
                    let retry_in = self.backoff.delay(tried.count);
                    tracing::warn!(container = %cid, attempts = tried.count, ?retry_in, "queued DEL failed, will retry: {}", tried.last_error);
                    if let Err(e) = self.queue.record_attempts(&path, &tried) {
                        tracing::error!("record attempts at {}: {e}", path.display());
                    }
                }
            }
        }
        self.publish();
        applied
    }

    fn publish(&self) {
        let mut stats = DelQueueStats {
            dir: self.queue.dir().to_path_buf(),
            ..Default::default()
        };
        match self.queue.entries() {
            Ok(entries) => {
                stats.queued = entries.len();
                stats.oldest_queued_ms = entries.first().map(epoch_ms);
                stats.stuck = entries.iter().filter_map(|e| self.stuck(e)).collect();
            }
            Err(e) => tracing::error!("read del queue {}: {e}", self.queue.dir().display()),
        }
        match self.queue.set_aside_count() {
            Ok(n) => stats.set_aside = n,
            Err(e) => tracing::error!("count set-aside DELs: {e}"),
        }
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
    }

    fn stuck(&self, e: &Entry) -> Option<StuckDel> {
        let a = self.queue.attempts(&e.path)?;
        let wait = u64::try_from(self.backoff.delay(a.count).as_millis()).unwrap_or(u64::MAX);
        Some(StuckDel {
            container_id: e.request.invocation.container_id.clone(),
            ifname: e.request.invocation.ifname.clone(),
            network: network_name(&e.request),
            queued_ms: epoch_ms(e),
            attempts: a.count,
            next_attempt_ms: a.last_ms.saturating_add(wait),
            last_error: a.last_error,
        })
    }
}

fn epoch_ms(e: &Entry) -> u64 {
    e.queued_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn network_name(req: &Request) -> Option<String> {
    let conf: serde_json::Value = serde_json::from_str(&req.config).ok()?;
    conf.get("name")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(300),
        }
    }

    #[test]
    fn the_wait_doubles_from_the_poll_up_to_the_cap() {
        let b = backoff();
        let waits: Vec<u64> = (0..=12).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(
            waits,
            [
                0, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000,
                300_000, 300_000
            ]
        );
        // No overflow however long an entry has been failing.
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
        assert_eq!(b.delay(33), Duration::from_secs(300));
    }

    #[test]
    fn a_failing_entry_is_not_retried_every_poll() {
        let b = backoff();
        assert!(b.due(None, 0), "a new entry is tried at the next poll");
        let failed = |count| Attempts {
            count,
            last_ms: 1_000_000,
            last_error: "code 50: plugin late is not loaded".into(),
        };
        // Polls every 500 ms after the fifth failure: only the one 8 s later tries again.
        let polls: Vec<u64> = (1..=20).map(|i| 1_000_000 + i * 500).collect();
        let tried: Vec<u64> = polls
            .iter()
            .copied()
            .filter(|&now| b.due(Some(&failed(5)), now))
            .collect();
        assert_eq!(tried.first(), Some(&1_008_000));
        assert_eq!(polls.len() - tried.len(), 15, "skipped polls");
        // Capped: even after many failures the next attempt comes within five minutes.
        assert!(!b.due(Some(&failed(40)), 1_000_000 + 299_999));
        assert!(b.due(Some(&failed(40)), 1_000_000 + 300_000));
        // A clock set back past the last attempt does not hold it back until the clock catches up.
        assert!(b.due(Some(&failed(9)), 1_000_000 - 1));
    }
}
