//! The admin socket: list plugins, reload one, read the call counters and the DEL queue, follow
//! the call trace. Also the client the CLI uses.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use std::os::unix::net::UnixStream;
use tokio::io::BufReader;
use tokio::net::UnixListener;
use wasmgate_engine::{PluginInfo, Registry};

use crate::cni::queue::{DelQueueStats, Replayer};
use crate::socket::{AcceptBackoff, accept, read_json, write_json};
use crate::trace::{MethodStats, Trace, TraceLine};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum AdminRequest {
    List,
    Reload {
        name: String,
    },
    Stats,
    /// Keeps the connection open and streams the [`TraceLine`]s that pass `filter`.
    Trace {
        #[serde(default)]
        filter: TraceFilter,
    },
}

/// Which calls a trace follower wants; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceFilter {
    /// `cni`, `csi` or `cri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The method name, e.g. `CreateContainer`, `ADD`, `NodePublishVolume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A substring of any key ID: container, pod, volume, network, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Only failed calls.
    #[serde(default)]
    pub errors: bool,
}

impl TraceFilter {
    pub fn matches(&self, c: &crate::trace::CallRecord) -> bool {
        let eq = |want: &Option<String>, have: &str| {
            want.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(have))
        };
        eq(&self.interface, &c.interface)
            && eq(&self.method, &c.method)
            && (!self.errors || !c.ok)
            && self.id.as_deref().is_none_or(|id| {
                c.container_id.contains(id)
                    || c.network.as_deref().is_some_and(|n| n.contains(id))
                    || c.ids.values().any(|v| v.contains(id))
            })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum AdminResponse {
    Ok {
        plugins: Vec<PluginInfo>,
    },
    Stats {
        calls: BTreeMap<String, MethodStats>,
        /// The CNI DEL queue; none on a node that serves no CNI.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        del_queue: Option<DelQueueStats>,
    },
    Error {
        message: String,
    },
}

/// The CLI writes its request at once; a peer that connects and sends nothing must not hold a
/// task and a descriptor for ever.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(
    listener: UnixListener,
    registry: Arc<Registry>,
    trace: Arc<Trace>,
    del_queue: Option<Arc<Replayer>>,
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        let stream = accept(&listener, &mut backoff, "admin").await;
        let (registry, trace, del_queue) = (registry.clone(), trace.clone(), del_queue.clone());
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            let Ok(request) =
                tokio::time::timeout(READ_TIMEOUT, read_json::<AdminRequest>(&mut stream)).await
            else {
                tracing::warn!("admin client sent no request within {READ_TIMEOUT:?}");
                return;
            };
            let resp = match request {
                Ok(Some(Ok(AdminRequest::Trace { filter }))) => {
                    return follow(stream, &trace, filter).await;
                }
                Ok(Some(Ok(AdminRequest::Stats))) => AdminResponse::Stats {
                    calls: trace.stats(),
                    del_queue: del_queue.map(|q| q.stats()),
                },
                Ok(Some(Ok(AdminRequest::List))) => AdminResponse::Ok {
                    plugins: registry.list(),
                },
                Ok(Some(Ok(AdminRequest::Reload { name }))) => match registry.reload(&name).await {
                    Ok(info) => {
                        tracing::info!(plugin = %name, sha256 = %info.sha256, "reloaded on request");
                        AdminResponse::Ok {
                            plugins: vec![info],
                        }
                    }
                    Err(e) => {
                        tracing::error!(plugin = %name, "reload refused, old version keeps serving: {e}");
                        AdminResponse::Error {
                            message: format!("reload refused, old version keeps serving: {e}"),
                        }
                    }
                },
                Ok(Some(Err(e))) => AdminResponse::Error {
                    message: format!("bad request: {e}"),
                },
                Ok(None) | Err(_) => return,
            };
            let _ = write_json(&mut stream, &resp).await;
        });
    }
}

/// Streams trace lines until the follower hangs up.
async fn follow(mut stream: BufReader<tokio::net::UnixStream>, trace: &Trace, filter: TraceFilter) {
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = trace.subscribe();
    if write_json(&mut stream, &TraceLine::Subscribed)
        .await
        .is_err()
    {
        return;
    }
    loop {
        let line = match rx.recv().await {
            Ok(call) if filter.matches(&call) => TraceLine::Call(Box::new(call)),
            Ok(_) => continue,
            Err(RecvError::Lagged(count)) => TraceLine::Dropped { count },
            Err(RecvError::Closed) => return,
        };
        if write_json(&mut stream, &line).await.is_err() {
            return;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to admin socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("admin socket sent an unreadable reply: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("{0}")]
    Refused(String),
}

fn connect(
    socket: &Path,
    req: &AdminRequest,
) -> Result<std::io::BufReader<UnixStream>, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    Ok(std::io::BufReader::new(stream))
}

fn reply(socket: &Path, req: &AdminRequest) -> Result<AdminResponse, ClientError> {
    let mut reply = String::new();
    connect(socket, req)?.read_line(&mut reply)?;
    match serde_json::from_str(&reply)? {
        AdminResponse::Error { message } => Err(ClientError::Refused(message)),
        ok => Ok(ok),
    }
}

/// One plugin request (`list` or `reload`) to a running daemon.
pub fn request(socket: &Path, req: &AdminRequest) -> Result<Vec<PluginInfo>, ClientError> {
    match reply(socket, req)? {
        AdminResponse::Ok { plugins } => Ok(plugins),
        other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
    }
}

/// Call counters per `interface.method`.
pub fn stats(socket: &Path) -> Result<BTreeMap<String, MethodStats>, ClientError> {
    Ok(stats_and_queue(socket)?.0)
}

/// Call counters per `interface.method`, and the CNI DEL queue when the node serves CNI.
pub fn stats_and_queue(
    socket: &Path,
) -> Result<(BTreeMap<String, MethodStats>, Option<DelQueueStats>), ClientError> {
    match reply(socket, &AdminRequest::Stats)? {
        AdminResponse::Stats { calls, del_queue } => Ok((calls, del_queue)),
        other => Err(ClientError::Refused(format!("unexpected reply {other:?}"))),
    }
}

/// Follows the trace: `each` gets every line until it returns false or the daemon goes away.
pub fn follow_trace(
    socket: &Path,
    filter: TraceFilter,
    mut each: impl FnMut(TraceLine) -> bool,
) -> Result<(), ClientError> {
    let mut lines = connect(socket, &AdminRequest::Trace { filter })?.lines();
    while let Some(line) = lines.next().transpose()? {
        if !each(serde_json::from_str(&line)?) {
            break;
        }
    }
    Ok(())
}
