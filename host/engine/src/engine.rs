//! The wasmtime engine shared by all plugins, its epoch ticker, and the compiled-artifact cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::EngineError;
use crate::host::HostState;

/// Pool slots kept beyond `max_instances` for instances waiting between calls; at most this many
/// wait at once, across all plugins.
pub(crate) const IDLE_SLOTS: usize = 32;

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Instances that may run at once; also the pooling allocator's slot count.
    pub max_instances: u32,
    /// The largest memory any plugin may be granted; per-plugin caps sit below it.
    pub max_memory_bytes: usize,
    /// Use the pooling allocator (falls back to on-demand if its reservation fails).
    pub pooling: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 128,
            max_memory_bytes: 256 << 20,
            pooling: true,
        }
    }
}

/// A cheap-to-clone handle on the engine, its linker and its ticker.
#[derive(Clone)]
pub struct WasmEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
    pub(crate) max_instances: u32,
    pub(crate) pooled: bool,
    /// Instances waiting between calls, engine-wide.
    pub(crate) idle: Arc<std::sync::atomic::AtomicUsize>,
    _ticker: Arc<Ticker>,
}

struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Every call yields to its caller's executor at each tick (see `call::arm`), which is what
    // lets a timeout cancel a guest that never returns.
    config.epoch_interruption(true);
    config
}

fn pooling_config(cfg: &EngineConfig) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    let slots = cfg.max_instances + IDLE_SLOTS as u32;
    // A Rust wasip2 component holds a handful of core instances, memories and tables; size each
    // pool for that times the instance count, so slots and not sub-pools are what runs out.
    pool.total_component_instances(slots)
        .total_core_instances(slots * 32)
        .total_memories(slots * 2)
        .total_tables(slots * 8)
        .total_stacks(slots)
        .max_core_instances_per_component(32)
        .max_memories_per_component(2)
        .max_tables_per_component(16)
        .max_memory_size(cfg.max_memory_bytes);
    pool
}

impl WasmEngine {
    pub fn new(cfg: &EngineConfig) -> Result<Self, EngineError> {
        let (engine, pooled) = Self::build(cfg)?;
        let mut linker = Linker::<HostState>::new(&engine);
        add_imports(&mut linker).map_err(|e| EngineError::Config(format!("{e:#}")))?;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("wasmgate-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(e) => e.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| EngineError::Config(format!("spawn epoch ticker: {e}")))?;

        Ok(Self {
            engine,
            linker: Arc::new(linker),
            max_instances: cfg.max_instances,
            pooled,
            idle: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    fn build(cfg: &EngineConfig) -> Result<(Engine, bool), EngineError> {
        if cfg.pooling {
            let mut config = base_config();
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(cfg)));
            match Engine::new(&config) {
                Ok(engine) => return Ok((engine, true)),
                // The pool reserves its virtual memory up front; a tight ulimit or overcommit
                // policy refuses that, and on-demand allocation still works there.
                Err(e) => tracing::warn!("pooling allocator unavailable, using on-demand: {e:#}"),
            }
        }
        // Without the pool, keep each memory's address-space reservation small too: the default
        // 4 GiB per memory is what a tight limit refused, and a few concurrent calls would hit
        // it again. Memories then grow by moving, with explicit bounds checks.
        let mut config = base_config();
        config
            .memory_reservation(0)
            .memory_guard_size(0)
            .memory_reservation_for_growth(1 << 20);
        let engine = Engine::new(&config).map_err(|e| EngineError::Config(format!("{e:#}")))?;
        Ok((engine, false))
    }

    /// Whether the pooling allocator is in use.
    pub fn pooled(&self) -> bool {
        self.pooled
    }

    /// Compiles `bytes`, or loads the artifact a previous run cached under `cache_dir`.
    /// Returns the component and whether it came from the cache.
    pub fn compile_cached(
        &self,
        name: &str,
        bytes: &[u8],
        sha256: &str,
        cache_dir: &Path,
    ) -> Result<(Component, bool), EngineError> {
        // Checked on every load, not once: it is a few lstat calls, and what it guards is
        // native code run as root.
        crate::check_private_dir(cache_dir)?;
        let path = self.cache_path(cache_dir, sha256);
        if path.exists() {
            // Safety: only this process writes the cache dir (checked above: it and its parents
            // are the daemon's and nobody else can write them), always as a complete artifact
            // renamed into place, keyed by the engine's compatibility hash.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => tracing::warn!("discarding cached artifact {}: {e:#}", path.display()),
            }
        }
        let compile = |e: wasmtime::Error| EngineError::Compile {
            name: name.to_string(),
            message: format!("{e:#}"),
        };
        let artifact = self.engine.precompile_component(bytes).map_err(compile)?;
        if let Err(e) = write_atomic(&path, &artifact) {
            tracing::warn!("cannot cache {}: {e}", path.display());
        }
        // Safety: `artifact` was produced by this engine a moment ago.
        let component =
            unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(compile)?;
        Ok((component, false))
    }

    fn cache_path(&self, cache_dir: &Path, sha256: &str) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        cache_dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
    }
}

/// Standard WASI only: whatever a plugin imports must also exist in the stock wasmtime CLI.
fn add_imports(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use crate::bindings::keyvalue::{atomics, batch, store};
    use wasmtime::component::HasSelf;
    // Async WASI: a guest waiting on a clock or a stream suspends its fiber instead of blocking
    // the thread, so its caller's timeout still fires.
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    crate::filesystem::add_to_linker(linker)?;
    wasmtime_wasi_config::add_to_linker(linker, |h| {
        wasmtime_wasi_config::WasiConfig::from(&*h.config)
    })?;
    store::add_to_linker::<HostState, HasSelf<HostState>>(linker, |h| h)?;
    atomics::add_to_linker::<HostState, HasSelf<HostState>>(linker, |h| h)?;
    batch::add_to_linker::<HostState, HasSelf<HostState>>(linker, |h| h)?;
    Ok(())
}

/// sha256 of a plugin's bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes `bytes` so that `path` is either absent or complete, even across a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
