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
    let light = ctx.clone_light();
    run_task(&light, move || run_blocking(ctx, f)).await
}

/// What [`run_task`] needs to bound and report a call.
pub(crate) struct Light {
    plugin: String,
    limits: Limits,
    permits: Arc<tokio::sync::Semaphore>,
}

impl CallContext {
    fn clone_light(&self) -> Light {
        Light {
            plugin: self.plugin.clone(),
            limits: self.limits,
            permits: self.permits.clone(),
        }
    }
}

/// Runs `body` on a blocking thread with a permit, bounded by the plugin's timeout.
async fn run_task<R, B>(ctx: &Light, body: B) -> Result<R, CallError>
where
    B: FnOnce() -> Result<R, CallError> + Send + 'static,
    R: Send + 'static,
{
    // Waiting for a slot beats failing: the pool has a fixed number of them.
    let _permit = ctx
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| CallError::Shutdown)?;
    let handle = tokio::task::spawn_blocking(body);
    // The epoch deadline fires first in all but blocking host calls; the grace keeps the two
    // from racing so a runaway guest is reported by the epoch, with its trap.
    let bound = ctx.limits.timeout + Duration::from_millis(250);
    match tokio::time::timeout(bound, handle).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => Err(CallError::Trap {
            plugin: ctx.plugin.clone(),
            message: format!("host task failed: {join}"),
            detail: String::new(),
        }),
        Err(_) => Err(CallError::Timeout {
            plugin: ctx.plugin.clone(),
            timeout: ctx.limits.timeout,
        }),
    }
}

fn run_blocking<R, F>(ctx: CallContext, f: F) -> Result<R, CallError>
where
    F: FnOnce(&mut Store<HostState>) -> Result<R, Failure>,
{
    let (mut store, stderr) = new_store(&ctx)?;
    arm(&ctx, &mut store);
    let out = f(&mut store);
    settle(&ctx, &store, &stderr, out)
}

/// A store for one instance, with what the plugin is granted and nothing else.
fn new_store(ctx: &CallContext) -> Result<(Store<HostState>, StderrTail), CallError> {
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
    let store = HostState::store(
        &ctx.engine.engine,
        wasi.build(),
        ctx.config.clone(),
        ctx.kv.clone(),
        ctx.limits.memory_bytes,
    );
    Ok((store, stderr))
}

/// Gives the next call on `store` its own deadline.
fn arm(ctx: &CallContext, store: &mut Store<HostState>) {
    let ticks = ctx
        .limits
        .timeout
        .as_micros()
        .div_ceil(EPOCH_TICK.as_micros())
        .max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();
}

fn settle<R>(
    ctx: &CallContext,
    store: &Store<HostState>,
    stderr: &StderrTail,
    out: Result<R, Failure>,
) -> Result<R, CallError> {
    match out {
        Ok(r) => Ok(r),
        Err(Failure::Instantiate(e)) => {
            Err(
                classify(ctx, store, e).unwrap_or_else(|e| CallError::Instantiate {
                    plugin: ctx.plugin.clone(),
                    message: format!("{e:#}"),
                }),
            )
        }
        Err(Failure::Call(e)) => {
            Err(classify(ctx, store, e)
                .unwrap_or_else(|e| trap(&ctx.plugin, &e, &stderr.contents())))
        }
    }
}

/// How many calls one reused instance serves before it is replaced, so that whatever a guest
/// accumulates in its memory (fragmentation, caches, leaks) stays bounded.
const MAX_USES: u32 = 10_000;

/// An instance kept between calls, with its store.
pub(crate) struct Warm<I> {
    store: Store<HostState>,
    stderr: StderrTail,
    instance: I,
    uses: u32,
    _slot: IdleSlot,
}

/// Idle instances still hold a pooling-allocator slot; the engine caps how many may wait.
pub(crate) struct IdleSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for IdleSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Instances of one plugin version waiting for their next call.
pub(crate) struct Idle<I> {
    warm: std::sync::Mutex<Vec<Warm<I>>>,
}

impl<I> Default for Idle<I> {
    fn default() -> Self {
        Self {
            warm: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<I> Idle<I> {
    fn take(&self) -> Option<Warm<I>> {
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put(&self, w: Warm<I>) {
        self.warm.lock().unwrap_or_else(|p| p.into_inner()).push(w);
    }
}

/// Like [`run`], but on an instance left by an earlier successful call when there is one, and
/// the instance goes back for the next call if this one succeeds too. A call that fails for any
/// reason, or runs past its deadline, discards its instance: a trap may leave the guest's memory
/// inconsistent.
pub(crate) async fn run_reusing<I, R, N, F>(
    ctx: CallContext,
    idle: Arc<Idle<I>>,
    instantiate: N,
    f: F,
) -> Result<R, CallError>
where
    I: Send + 'static,
    N: FnOnce(&mut Store<HostState>) -> wasmtime::Result<I> + Send + 'static,
    F: FnOnce(&I, &mut Store<HostState>) -> wasmtime::Result<R> + Send + 'static,
    R: Send + 'static,
{
    let batch = Batch::default();
    let gave_up = batch.abandoned.clone();
    let out = run_task(&ctx.clone_light(), move || {
        reusing_blocking(&ctx, &idle, instantiate, f, &batch)
    })
    .await;
    if matches!(out, Err(CallError::Timeout { .. })) {
        gave_up.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    out
}

/// One call on a reused instance, on the current (blocking) thread.
pub(crate) fn reusing_blocking<I, R, N, F>(
    ctx: &CallContext,
    idle: &Idle<I>,
    instantiate: N,
    f: F,
    batch: &Batch,
) -> Result<R, CallError>
where
    N: FnOnce(&mut Store<HostState>) -> wasmtime::Result<I>,
    F: FnOnce(&I, &mut Store<HostState>) -> wasmtime::Result<R>,
{
    let mut warm = match idle.take() {
        Some(w) => w,
        None => {
            let (mut store, stderr) = new_store(ctx)?;
            arm(ctx, &mut store);
            let instance = match instantiate(&mut store) {
                Ok(i) => i,
                Err(e) => {
                    return settle(ctx, &store, &stderr, Err(Failure::Instantiate(e)));
                }
            };
            let slots = ctx.engine.idle.clone();
            slots.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Warm {
                store,
                stderr,
                instance,
                uses: 0,
                _slot: IdleSlot(slots),
            }
        }
    };
    warm.stderr.clear();
    arm(ctx, &mut warm.store);
    warm.uses += 1;
    let out = f(&warm.instance, &mut warm.store).map_err(Failure::Call);
    let out = settle(ctx, &warm.store, &warm.stderr, out);
    let keep = out.is_ok()
        && warm.uses < MAX_USES
        && !batch.abandoned.load(std::sync::atomic::Ordering::Relaxed)
        && ctx.engine.idle.load(std::sync::atomic::Ordering::Relaxed) <= crate::engine::IDLE_SLOTS;
    if keep {
        idle.put(warm);
    }
    out
}

/// Calls made one after another on one blocking thread (see [`crate::Registry::batch`]). A batch
/// its caller stopped waiting for keeps no instance it used afterwards: the guest may be stuck.
#[derive(Default)]
pub struct Batch {
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

/// Runs `body` on one blocking thread holding one instance permit, bounded by `bound`.
pub(crate) async fn run_batch<R, B>(
    permits: Arc<tokio::sync::Semaphore>,
    bound: Duration,
    body: B,
) -> Result<R, CallError>
where
    B: FnOnce(&Batch) -> R + Send + 'static,
    R: Send + 'static,
{
    let batch = Batch::default();
    let gave_up = batch.abandoned.clone();
    let light = Light {
        plugin: "batch".to_string(),
        limits: Limits {
            timeout: bound,
            memory_bytes: 0,
        },
        permits,
    };
    let out = run_task(&light, move || Ok(body(&batch))).await;
    if out.is_err() {
        gave_up.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    out
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
