//! What every gRPC socket wasmgate serves has in common, below the services: each accepted
//! connection goes through [`authority::Conn`], so any `:authority` a unix-socket client sends is
//! served, and every call or connection the HTTP/2 layer refuses is logged and traced by
//! [`Refusals`] instead of vanishing in h2's debug log.

pub mod authority;

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::server::Connected;

pub use authority::Conn;

use crate::socket::AcceptBackoff;
use crate::trace::{CallRecord, Trace, now_ms};

/// Warnings per socket per [`WARN_WINDOW`]; the rest are counted and named in the next one. A
/// client looping on a refused call must not flood the log; the trace still has every record.
const WARNINGS_PER_WINDOW: u32 = 10;
const WARN_WINDOW: Duration = Duration::from_secs(60);

/// The connections a gRPC socket accepts, each behind [`Conn`], for tonic's
/// `serve_with_incoming_shutdown`.
pub struct Incoming {
    listener: UnixListener,
    refusals: Arc<Refusals>,
    /// tonic retries a failed accept at once; the wait happens here instead.
    backoff: AcceptBackoff,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Incoming {
    /// `interface` names the socket in trace records: `cri`, `csi`, `registration`,
    /// `cri-builtin`.
    pub fn new(
        listener: UnixListener,
        interface: &'static str,
        socket: &Path,
        trace: Arc<Trace>,
    ) -> Self {
        Self {
            listener,
            refusals: Arc::new(Refusals::new(interface, socket, trace)),
            backoff: AcceptBackoff::default(),
            waiting: None,
        }
    }
}

impl Incoming {
    /// The layer that records what tonic refuses before any handler runs, on this socket.
    pub fn layer(&self) -> Unrecorded {
        Unrecorded {
            refusals: self.refusals.clone(),
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn<UnixStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(wait) = &mut this.waiting {
                std::task::ready!(wait.as_mut().poll(cx));
                this.waiting = None;
            }
            match std::task::ready!(this.listener.poll_accept(cx)) {
                Ok((s, _)) => {
                    this.backoff.succeeded();
                    return Poll::Ready(Some(Ok(Conn::new(s, this.refusals.clone()))));
                }
                Err(e) => {
                    let wait = this.backoff.failed(this.refusals.interface, &e);
                    this.waiting = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
        }
    }
}

/// Where one socket's refused calls go: a rate-limited warning and a trace record each.
pub struct Refusals {
    interface: &'static str,
    pub(crate) socket: String,
    trace: Arc<Trace>,
    window: Mutex<Window>,
}

struct Window {
    start: Instant,
    warned: u32,
    suppressed: u64,
}

impl Refusals {
    pub fn new(interface: &'static str, socket: &Path, trace: Arc<Trace>) -> Self {
        Self {
            interface,
            socket: socket.display().to_string(),
            trace,
            window: Mutex::new(Window {
                start: Instant::now(),
                warned: 0,
                suppressed: 0,
            }),
        }
    }

    /// Records a stream or connection the HTTP/2 layer refused with `h2_code`: `path` is the
    /// call's `:path` when the stream had one.
    pub fn refused(&self, path: Option<&str>, h2_code: u32, why: &str) {
        self.report(path, grpc_code(h2_code), why);
    }

    fn report(&self, path: Option<&str>, code: tonic::Code, why: &str) {
        let method = path
            .and_then(|p| p.rsplit('/').next())
            .filter(|m| !m.is_empty())
            .unwrap_or(crate::trace::CONNECTION);
        let suppressed = {
            let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
            if w.start.elapsed() >= WARN_WINDOW {
                w.start = Instant::now();
                w.warned = 0;
            }
            if w.warned < WARNINGS_PER_WINDOW {
                w.warned += 1;
                Some(std::mem::take(&mut w.suppressed))
            } else {
                w.suppressed += 1;
                None
            }
        };
        if let Some(suppressed) = suppressed {
            tracing::warn!(
                socket = %self.socket,
                path = path.unwrap_or("-"),
                suppressed,
                "refused a call: {why}"
            );
        }
        let mut ids = std::collections::BTreeMap::new();
        ids.insert("socket".to_string(), self.socket.clone());
        if let Some(p) = path {
            ids.insert("path".to_string(), p.to_string());
        }
        self.trace.record(CallRecord {
            ids,
            ok: false,
            code: Some(code as u32),
            msg: Some(why.to_string()),
            ..CallRecord::new(self.interface, method, now_ms())
        });
    }
}

/// The gRPC code a client reports for a stream reset with `h2_code`, as grpc-go maps them.
fn grpc_code(h2_code: u32) -> tonic::Code {
    use tonic::Code;
    match h2_code {
        0x3 | 0xb => Code::ResourceExhausted,
        0x7 => Code::Unavailable,
        0x8 => Code::Cancelled,
        0xc => Code::PermissionDenied,
        _ => Code::Internal,
    }
}

impl<IO: Connected> Connected for Conn<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}

/// A tower layer for a gRPC server: an answer with an error status from a call that left no
/// trace record (tonic refused it before any handler ran: an unknown service or method, a message
/// that does not decode or is too large) is recorded and warned about like an HTTP/2 refusal.
#[derive(Clone)]
pub struct Unrecorded {
    refusals: Arc<Refusals>,
}

impl<S> tower::Layer<S> for Unrecorded {
    type Service = UnrecordedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UnrecordedService {
            inner,
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Clone)]
pub struct UnrecordedService<S> {
    inner: S,
    refusals: Arc<Refusals>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for UnrecordedService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // A Uri clone shares its bytes: no allocation on the path every call takes.
        let uri = req.uri().clone();
        let call = self.inner.call(req);
        let refusals = self.refusals.clone();
        Box::pin(async move {
            let (out, recorded) = crate::trace::recorded(call).await;
            if let (Ok(resp), false) = (&out, recorded)
                && let Ok(status) = tonic::Status::from_header_map(resp.headers()).ok_or(())
                && status.code() != tonic::Code::Ok
            {
                let why = match status.message() {
                    "" => format!("refused with {:?} before reaching a handler", status.code()),
                    m => format!(
                        "refused with {:?} before reaching a handler: {m}",
                        status.code()
                    ),
                };
                refusals.report(Some(uri.path()), status.code(), &why);
            }
            out
        })
    }
}
