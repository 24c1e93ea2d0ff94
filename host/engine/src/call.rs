//! One plugin call, on the caller's own task: an instance (one left idle by an earlier call, or a
//! new one from the pre-instantiated component), a memory cap, and the plugin's timeout. The
//! guest runs on a fiber that yields back to the executor at every epoch tick, so the timeout
//! cancels it whatever it is doing, computing or waiting in a host call; the instance is dropped
//! with the cancelled call. Whatever the guest does, the caller gets a value or a [`CallError`];
//! the daemon keeps serving.
//!
//! Nothing here hops to another thread, with one exception: a storage plugin's filesystem work
//! (opening its data dir, and each file operation) runs on tokio's blocking pool, so that a
//! syscall stuck on a hung NFS mount holds a pool thread, not the worker that serves CNI, CSI and
//! CRI; the call's timeout still fires and the stuck thread is left behind with the dropped
//! instance. Otherwise, on a small node a thread wake-up costs more than most plugins' work.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap};

use crate::engine::WasmEngine;
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

/// What a call needs besides its closure; one per loaded plugin version.
pub(crate) struct CallContext {
    pub(crate) plugin: String,
    pub(crate) engine: WasmEngine,
    /// Handles one instance may hold at once (see [`crate::World::max_handles`]).
    pub(crate) max_handles: usize,
    pub(crate) kv: Arc<KvStore>,
    pub(crate) config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
    pub(crate) limits: Limits,
    pub(crate) inherit_stderr: bool,
    pub(crate) data_dir: Option<std::path::PathBuf>,
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    /// Give every call a new instance instead of reusing an idle one.
    pub(crate) fresh_instances: bool,
}

/// Where a call's body failed: instantiation errors are reported apart from the guest's own.
enum Failure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// Calls `f` on an instance of the plugin, within its limits. The instance is one an earlier
/// successful call left idle when there is one (unless the plugin asks for fresh instances), and
/// goes back for the next call if this one succeeds too. A call that fails for any reason, or is
/// cancelled, discards its instance: a trap may leave the guest's memory inconsistent.
pub(crate) async fn run<I, R, N, F>(
    ctx: &CallContext,
    idle: &Idle<I>,
    instantiate: N,
    f: F,
) -> Result<R, CallError>
where
    N: AsyncFnOnce(&mut Store<HostState>) -> wasmtime::Result<I>,
    F: AsyncFnOnce(&I, &mut Store<HostState>) -> wasmtime::Result<R>,
{
    // Waiting for a slot beats failing: the pool has a fixed number of them.
    let _permit = ctx
        .permits
        .acquire()
        .await
        .map_err(|_| CallError::Shutdown)?;
    // Boxed, so that a caller's future (a gRPC handler's, a hook chain's) does not carry and
    // move wasmtime's call state with its own at every poll and hand-over.
    let call = Box::pin(call(ctx, idle, instantiate, f));
    match tokio::time::timeout(ctx.limits.timeout, call).await {
        Ok(out) => out,
        Err(_) => Err(CallError::Timeout {
            plugin: ctx.plugin.clone(),
            timeout: ctx.limits.timeout,
        }),
    }
}

async fn call<I, R, N, F>(
    ctx: &CallContext,
    idle: &Idle<I>,
    instantiate: N,
    f: F,
) -> Result<R, CallError>
where
    N: AsyncFnOnce(&mut Store<HostState>) -> wasmtime::Result<I>,
    F: AsyncFnOnce(&I, &mut Store<HostState>) -> wasmtime::Result<R>,
{
    let reused = if ctx.fresh_instances {
        None
    } else {
        idle.take()
    };
    let mut warm = match reused {
        Some(w) => w,
        None => {
            let (mut store, stderr) = new_store(ctx).await?;
            arm(&mut store);
            let instance = match instantiate(&mut store).await {
                Ok(i) => i,
                Err(e) => return settle(ctx, &store, &stderr, Err(Failure::Instantiate(e))),
            };
            Warm {
                store,
                stderr,
                instance,
                uses: 0,
            }
        }
    };
    warm.stderr.clear();
    arm(&mut warm.store);
    warm.uses += 1;
    let out = f(&warm.instance, &mut warm.store)
        .await
        .map_err(Failure::Call);
    let out = settle(ctx, &warm.store, &warm.stderr, out);
    if out.is_ok() && !ctx.fresh_instances && warm.uses < MAX_USES && !hoards(ctx, &mut warm.store)
    {
        idle.put(&ctx.engine, warm);
    }
    out
}

/// Whether an instance keeps more handles between calls than a plugin needs (its preopen, its
/// stdio streams, a cached bucket): one that leaks a few per call, or hoarded up to its budget,
/// is dropped with them instead of serving the next call.
fn hoards(ctx: &CallContext, store: &mut Store<HostState>) -> bool {
    let held = store.data_mut().handles();
    let hoards = held > ctx.max_handles / IDLE_HANDLE_SHARE;
    if hoards {
        tracing::info!(
            plugin = %ctx.plugin,
            held,
            budget = ctx.max_handles,
            "instance dropped: it keeps {held} handles between calls"
        );
    }
    hoards
}

/// An idle instance may keep at most this fraction of its handle budget.
const IDLE_HANDLE_SHARE: usize = 4;

/// A store for one instance, with what the plugin is granted and nothing else.
async fn new_store(ctx: &CallContext) -> Result<(Store<HostState>, StderrTail), CallError> {
    // WASI keeps its default: every file operation on tokio's blocking pool, never inline on the
    // caller's worker (`allow_blocking_current_thread`), where one stuck syscall would pin it.
    let mut wasi = wasmtime_wasi::WasiCtx::builder();
    // Without a grant the guest's stderr goes to a small buffer that only an error report reads:
    // a panicking Rust guest says why there, and that belongs in the CNI error.
    let stderr = StderrTail::new(STDERR_CAPTURE);
    if ctx.inherit_stderr {
        wasi.inherit_stderr();
    } else {
        wasi.stderr(stderr.clone());
    }
    let wasi = match &ctx.data_dir {
        None => wasi.build(),
        // Opening the granted dir is a syscall on it too: on the pool, under the call's timeout.
        Some(dir) => {
            let dir = dir.clone();
            let opened = tokio::task::spawn_blocking(move || {
                wasi.preopened_dir(
                    &dir,
                    crate::registry::DATA_DIR_GUEST,
                    wasmtime_wasi::FsPerms::ReadWrite,
                )
                .map_err(|e| format!("cannot open granted directory {}: {e:#}", dir.display()))?;
                Ok(wasi.build())
            })
            .await
            .unwrap_or_else(|e| Err(format!("open granted directory: {e}")));
            opened.map_err(|message| CallError::Instantiate {
                plugin: ctx.plugin.clone(),
                message,
            })?
        }
    };
    let store = HostState::store(
        &ctx.engine.engine,
        ctx.plugin.as_str().into(),
        wasi,
        ctx.config.clone(),
        ctx.kv.clone(),
        crate::host::StoreLimits {
            memory_bytes: ctx.limits.memory_bytes,
            max_handles: ctx.max_handles,
        },
    );
    Ok((store, stderr))
}

/// Makes the guest yield to the executor at the next epoch tick and every tick after: a long
/// call shares its worker thread, and its caller's timeout can fire.
fn arm(store: &mut Store<HostState>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
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
                classify(ctx, store).unwrap_or_else(|| CallError::Instantiate {
                    plugin: ctx.plugin.clone(),
                    message: format!("{e:#}"),
                }),
            )
        }
        Err(Failure::Call(e)) => {
            Err(classify(ctx, store).unwrap_or_else(|| trap(&ctx.plugin, &e, &stderr.contents())))
        }
    }
}

/// How many calls one reused instance serves before it is replaced, so that whatever a guest
/// accumulates in its memory (fragmentation, caches, leaks) stays bounded.
const MAX_USES: u32 = 10_000;

/// Instances of one plugin version kept waiting at most: a burst of concurrent calls (30 CNI
/// ADDs at once) would otherwise leave as many idle, each holding its linear memory, tens of
/// MiB for an interpreter such as CPython's. Calls beyond these instantiate.
const IDLE_PER_PLUGIN: usize = 4;

/// An instance kept between calls, with its store.
pub(crate) struct Warm<I> {
    store: Store<HostState>,
    stderr: StderrTail,
    instance: I,
    uses: u32,
}

/// Idle instances still hold a pooling-allocator slot; the engine caps how many may wait.
struct IdleSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for IdleSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Instances of one plugin version waiting for their next call.
pub(crate) struct Idle<I> {
    warm: std::sync::Mutex<Vec<(Warm<I>, IdleSlot)>>,
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
        let (w, _slot) = self.warm.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        Some(w)
    }

    /// Keeps `w` for a later call, unless this plugin already has [`IDLE_PER_PLUGIN`] waiting or
    /// the engine's idle slots are all taken.
    fn put(&self, engine: &WasmEngine, w: Warm<I>) {
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        if warm.len() >= IDLE_PER_PLUGIN {
            return;
        }
        let slots = engine.idle.clone();
        if slots.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= crate::engine::IDLE_SLOTS {
            slots.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        warm.push((w, IdleSlot(slots)));
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

/// Recognises an out-of-memory, which has its own wire code, whatever trap the guest's
/// allocator made of it.
fn classify(ctx: &CallContext, store: &Store<HostState>) -> Option<CallError> {
    store.data().memory.hit.then(|| CallError::OutOfMemory {
        plugin: ctx.plugin.clone(),
        limit: ctx.limits.memory_bytes,
    })
}
