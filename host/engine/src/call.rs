//! One plugin call: a fresh instance from the pre-instantiated component, an epoch deadline, a
//! memory cap, and a tokio timeout on top, because epochs cannot interrupt a blocking host call.
//! Whatever the guest does, the caller gets a value or a [`CallError`]; the daemon keeps serving.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap};

use crate::engine::{EPOCH_TICK, WasmEngine};
use crate::host::HostState;
use crate::keyvalue::KvStore;
use crate::stderr::StderrTail;

/// How much of a guest's stderr is kept for its error report.
const STDERR_CAPTURE: usize = 4096;

/// Per-plugin bounds on one call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            memory_bytes: 64 << 20,
        }
    }
}

/// How a single call failed. Each maps to a wire error in the front door's one mapping place.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// `message` is the guest's own last words (its panic message) when it left any, else the
    /// trap; `detail` holds the wasm backtrace.
    #[error("plugin {plugin} trapped: {message}")]
    Trap {
        plugin: String,
        message: String,
        detail: String,
    },
    #[error("plugin {plugin} exceeded its deadline of {timeout:?}")]
    Timeout { plugin: String, timeout: Duration },
    #[error("plugin {plugin} exceeded its memory limit of {limit} bytes")]
    OutOfMemory { plugin: String, limit: usize },
    #[error("plugin {plugin} could not be instantiated: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("engine is shutting down")]
    Shutdown,
}

/// What a call needs besides its closure; cloned out of the plugin so the call owns it.
pub(crate) struct CallContext {
    pub(crate) plugin: String,
    pub(crate) engine: WasmEngine,
    pub(crate) kv: Arc<KvStore>,
    pub(crate) config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
    pub(crate) limits: Limits,
    pub(crate) inherit_stderr: bool,
    pub(crate) data_dir: Option<std::path::PathBuf>,
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
}

/// Where a call's body failed: instantiation errors are reported apart from the guest's own.
pub(crate) enum Failure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

pub(crate) async fn run<R, F>(ctx: CallContext, f: F) -> Result<R, CallError>
where
    F: FnOnce(&mut Store<HostState>) -> Result<R, Failure> + Send + 'static,
    R: Send + 'static,
{
    // Waiting for a slot beats failing: the pool has a fixed number of them.
    let _permit = ctx
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| CallError::Shutdown)?;
    let plugin = ctx.plugin.clone();
    let limits = ctx.limits;
    let handle = tokio::task::spawn_blocking(move || run_blocking(ctx, f));
    // The epoch deadline fires first in all but blocking host calls; the grace keeps the two
    // from racing so a runaway guest is reported by the epoch, with its trap.
    let bound = limits.timeout + Duration::from_millis(250);
    match tokio::time::timeout(bound, handle).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(CallError::Trap {
            plugin,
            message: format!("host task failed: {join}"),
            detail: String::new(),
        }),
        Err(_) => Err(CallError::Timeout {
            plugin,
            timeout: limits.timeout,
        }),
    }
}

fn run_blocking<R, F>(ctx: CallContext, f: F) -> Result<R, CallError>
where
    F: FnOnce(&mut Store<HostState>) -> Result<R, Failure>,
{
    let mut wasi = wasmtime_wasi::WasiCtx::builder();
    // This thread is already a blocking one, so guest file IO need not hop to another.
    wasi.allow_blocking_current_thread(true);
    if let Some(dir) = &ctx.data_dir {
        wasi.preopened_dir(
            dir,
            crate::registry::DATA_DIR_GUEST,
            wasmtime_wasi::FsPerms::ReadWrite,
        )
        .map_err(|e| CallError::Instantiate {
            plugin: ctx.plugin.clone(),
            message: format!("cannot open granted directory {}: {e:#}", dir.display()),
        })?;
    }
    // Without a grant the guest's stderr goes to a small buffer that only an error report reads:
    // a panicking Rust guest says why there, and that belongs in the CNI error.
    let stderr = StderrTail::new(STDERR_CAPTURE);
    if ctx.inherit_stderr {
        wasi.inherit_stderr();
    } else {
        wasi.stderr(stderr.clone());
    }
    let mut store = HostState::store(
        &ctx.engine.engine,
        wasi.build(),
        ctx.config.clone(),
        ctx.kv.clone(),
        ctx.limits.memory_bytes,
    );
    let ticks = ctx
        .limits
        .timeout
        .as_micros()
        .div_ceil(EPOCH_TICK.as_micros())
        .max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();

    match f(&mut store) {
        Ok(r) => Ok(r),
        Err(Failure::Instantiate(e)) => {
            Err(
                classify(&ctx, &store, e).unwrap_or_else(|e| CallError::Instantiate {
                    plugin: ctx.plugin.clone(),
                    message: format!("{e:#}"),
                }),
            )
        }
        Err(Failure::Call(e)) => {
            Err(classify(&ctx, &store, e)
                .unwrap_or_else(|e| trap(&ctx.plugin, &e, &stderr.contents())))
        }
    }
}

/// The most telling short line: a Rust panic message from stderr, else the trap itself.
fn trap(plugin: &str, err: &wasmtime::Error, stderr: &[u8]) -> CallError {
    let stderr = String::from_utf8_lossy(stderr);
    let panic = stderr
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .nth(1)
        .map(str::trim)
        .filter(|l| !l.is_empty());
    let trap = err
        .downcast_ref::<Trap>()
        .map(|t| t.to_string())
        .unwrap_or_else(|| err.root_cause().to_string());
    let message = match panic {
        Some(p) => format!("{p} ({trap})"),
        None => trap,
    };
    let mut detail = format!("{err:?}");
    if !stderr.trim().is_empty() {
        detail.push_str("\nstderr:\n");
        detail.push_str(stderr.trim_end());
    }
    CallError::Trap {
        plugin: plugin.to_string(),
        message,
        detail,
    }
}

/// Recognises the two failures with their own wire codes; anything else is handed back.
fn classify(
    ctx: &CallContext,
    store: &Store<HostState>,
    err: wasmtime::Error,
) -> Result<CallError, wasmtime::Error> {
    if store.data().memory.hit {
        return Ok(CallError::OutOfMemory {
            plugin: ctx.plugin.clone(),
            limit: ctx.limits.memory_bytes,
        });
    }
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Ok(CallError::Timeout {
            plugin: ctx.plugin.clone(),
            timeout: ctx.limits.timeout,
        });
    }
    Err(err)
}
