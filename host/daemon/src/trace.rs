//! Every call is recorded once: which interface and method, which plugin version, for whom, how
//! it ended and how long it took. Records go to `tracing`, to per-method counters, and to anyone
//! following the admin socket's trace stream (`wasmgate trace`). A slow follower loses records,
//! and is told how many; it never slows a call down.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Records buffered per follower before it starts losing them.
const FOLLOWER_BUFFER: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Milliseconds since the Unix epoch, when the call arrived.
    pub at_ms: u64,
    /// `cni` today; `csi` and `cri` later.
    pub interface: String,
    pub method: String,
    pub plugin: Option<String>,
    pub plugin_sha256: Option<String>,
    pub network: Option<String>,
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
    /// The call's key IDs for interfaces other than CNI, e.g. `volume_id` and `target_path`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ids: BTreeMap<String, String>,
    /// CRI: what each runtime hook decided, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookDecision>,
    /// CRI: how long the runtime behind the proxy took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_us: Option<u64>,
    pub ok: bool,
    pub code: Option<u32>,
    pub msg: Option<String>,
    pub elapsed_us: u64,
}

impl CallRecord {
    /// A record of a call on `interface` that arrived at `at_ms`, with no plugin, IDs or outcome
    /// yet: the fields every record needs.
    pub fn new(interface: &str, method: &str, at_ms: u64) -> Self {
        Self {
            at_ms,
            interface: interface.to_string(),
            method: method.to_string(),
            plugin: None,
            plugin_sha256: None,
            network: None,
            container_id: String::new(),
            ifname: String::new(),
            ids: BTreeMap::new(),
            hooks: Vec::new(),
            upstream_us: None,
            ok: true,
            code: None,
            msg: None,
            elapsed_us: 0,
        }
    }
}

/// One runtime hook's part in a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookDecision {
    pub hook: String,
    /// `pre` or `post`.
    pub phase: String,
    /// allow, deny: <reason>, adjust, skipped (fail-open): <why>, failed: <why>, ok.
    pub decision: String,
    pub elapsed_us: u64,
}

/// One line of the trace stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TraceLine {
    /// First line: the follower is subscribed, every later call will appear.
    Subscribed,
    Call(Box<CallRecord>),
    /// The follower was too slow and this many records were lost.
    Dropped {
        count: u64,
    },
}

/// Counters for one `interface.method`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MethodStats {
    pub ok: u64,
    pub errors: u64,
    pub total_us: u64,
}

tokio::task_local! {
    /// Set by [`Trace::record`] inside [`recorded`]: whether the call under way left its record.
    static RECORDED: std::cell::Cell<bool>;
}

/// Runs `call` and says whether a record was made while it ran, so a refusal that no handler
/// saw (an unknown method, an undecodable message) can be recorded by the layer around them.
pub async fn recorded<F: std::future::Future>(call: F) -> (F::Output, bool) {
    RECORDED
        .scope(std::cell::Cell::new(false), async move {
            let out = call.await;
            (out, RECORDED.with(|r| r.get()))
        })
        .await
}

pub struct Trace {
    tx: broadcast::Sender<CallRecord>,
    stats: Mutex<BTreeMap<String, MethodStats>>,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(FOLLOWER_BUFFER).0,
            stats: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Trace {
    pub fn record(&self, rec: CallRecord) {
        let _ = RECORDED.try_with(|r| r.set(true));
        {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            let s = stats
                .entry(format!("{}.{}", rec.interface, counted_method(&rec)))
                .or_default();
            if rec.ok {
                s.ok += 1;
            } else {
                s.errors += 1;
            }
            s.total_us += rec.elapsed_us;
        }
        // No followers is the normal case, not an error.
        let _ = self.tx.send(rec);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CallRecord> {
        self.tx.subscribe()
    }

    pub fn stats(&self) -> BTreeMap<String, MethodStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The method a call counts under. A gRPC client chooses its `:path`, so a method no schema
/// declares counts as `unknown`: the counters stay bounded however many paths a client invents.
/// CNI methods are the parsed `CNI_COMMAND`, bounded already.
fn counted_method(rec: &CallRecord) -> &str {
    let known = rec.interface == "cni"
        || rec.method == CONNECTION
        || wasmgate_proto::rpc_names().contains(&rec.method);
    if known { &rec.method } else { "unknown" }
}

/// The method of a record about a whole connection rather than one call.
pub const CONNECTION: &str = "connection";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(method: &str, ok: bool) -> CallRecord {
        CallRecord {
            at_ms: 1,
            interface: "cni".into(),
            method: method.into(),
            plugin: None,
            plugin_sha256: None,
            network: None,
            container_id: "c".into(),
            ifname: "eth0".into(),
            ids: BTreeMap::new(),
            hooks: Vec::new(),
            upstream_us: None,
            ok,
            code: (!ok).then_some(7),
            msg: None,
            elapsed_us: 10,
        }
    }

    #[tokio::test]
    async fn followers_see_calls_and_counters_add_up() {
        let t = Trace::default();
        t.record(rec("ADD", true)); // before anyone follows: counted, not streamed
        let mut rx = t.subscribe();
        t.record(rec("ADD", false));
        t.record(rec("DEL", true));
        assert_eq!(rx.recv().await.unwrap(), rec("ADD", false));
        assert_eq!(rx.recv().await.unwrap(), rec("DEL", true));
        let stats = t.stats();
        assert_eq!(
            stats["cni.ADD"],
            MethodStats {
                ok: 1,
                errors: 1,
                total_us: 20
            }
        );
        assert_eq!(stats["cni.DEL"].ok, 1);
    }

    #[test]
    fn invented_methods_share_one_counter() {
        let t = Trace::default();
        for i in 0..1000 {
            let mut r = rec(&format!("Evil{i}"), false);
            r.interface = "cri".into();
            t.record(r);
        }
        let mut r = rec("Version", true);
        r.interface = "cri".into();
        t.record(r);
        let stats = t.stats();
        assert_eq!(
            stats.keys().collect::<Vec<_>>(),
            ["cri.Version", "cri.unknown"]
        );
        assert_eq!(stats["cri.unknown"].errors, 1000);
    }

    #[test]
    fn lines_are_tagged() {
        let line = serde_json::to_string(&TraceLine::Dropped { count: 3 }).unwrap();
        assert_eq!(line, r#"{"kind":"dropped","count":3}"#);
        let back: TraceLine = serde_json::from_str(r#"{"kind":"subscribed"}"#).unwrap();
        assert_eq!(back, TraceLine::Subscribed);
    }
}
