//! Plugin name to current version. A reload compiles and type-checks the new version off the hot
//! path, then swaps it in atomically; calls already running keep the version they started on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use wasmtime::Store;

use crate::EngineError;
use crate::bindings::{
    NETWORK_WORLD, NetworkGuest, NetworkPlugin, NetworkPluginPre, RUNTIME_WORLD, STORAGE_WORLD,
    StoragePlugin, StoragePluginPre,
};
use crate::call::{self, CallContext, CallError, Idle, Limits};
use crate::engine::{WasmEngine, sha256_hex};
use crate::hook::{Hook, HookPre};
use crate::host::HostState;
use crate::keyvalue::KvStore;

/// How a plugin is declared in the daemon's config.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    pub limits: Limits,
    /// Values served through `wasi:config`.
    pub config: BTreeMap<String, String>,
    /// Let the guest write to the daemon's stderr (debugging only; it is not authority).
    pub inherit_stderr: bool,
    /// Which world the component must fit.
    pub world: World,
    /// A host directory the guest sees, read-write, as [`DATA_DIR_GUEST`]; nothing else of the
    /// filesystem is granted.
    pub data_dir: Option<PathBuf>,
    /// A new instance for every call, as a CNI plugin binary gets a new process, instead of an
    /// instance an earlier successful call left idle. Costs an instantiation per call; for a
    /// plugin that keeps something in memory it must not carry from one call to the next.
    pub fresh_instances: bool,
}

/// Where a granted data directory appears inside the guest.
pub const DATA_DIR_GUEST: &str = "/data";

/// The plugin worlds of the `wasmgate:plugin` package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    #[default]
    Network,
    Storage,
    Runtime,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Network => NETWORK_WORLD,
            World::Storage => STORAGE_WORLD,
            World::Runtime => RUNTIME_WORLD,
        }
    }

    /// Handles (open files and directories, streams, pollables, keyvalue buckets) one instance of
    /// this world may hold at once: network plugins and runtime hooks have no filesystem, a
    /// storage plugin works in its data dir. Opening past it fails in the guest; an instance that
    /// keeps more than a quarter of it after a call is not reused. Each handle also counts
    /// [`crate::HANDLE_HOST_BYTES`] against the plugin's memory limit.
    pub fn max_handles(self) -> usize {
        match self {
            World::Network | World::Runtime => 256,
            World::Storage => 1024,
        }
    }
}

/// The type-checked entry points of one compiled component.
#[derive(Clone)]
pub(crate) enum Pre {
    Network(NetworkPluginPre<HostState>),
    // Boxed: a storage world's export indices make it twice the network one's size.
    Storage(Box<StoragePluginPre<HostState>>),
    /// 0.1.0 or 0.2.0, as the hook exports.
    Runtime(HookPre),
}

impl Pre {
    /// The world, with its version, this component was linked as.
    fn world(&self) -> &'static str {
        match self {
            Pre::Network(_) => NETWORK_WORLD,
            Pre::Storage(_) => STORAGE_WORLD,
            Pre::Runtime(hook) => hook.world(),
        }
    }
}

impl PluginSpec {
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            limits: Limits::default(),
            config: BTreeMap::new(),
            inherit_stderr: false,
            world: World::Network,
            data_dir: None,
            fresh_instances: false,
        }
    }

    pub fn storage(name: impl Into<String>, path: impl Into<PathBuf>, data_dir: PathBuf) -> Self {
        Self {
            world: World::Storage,
            data_dir: Some(data_dir),
            ..Self::new(name, path)
        }
    }
}

/// One compiled, linked version of a plugin.
pub struct LoadedPlugin {
    spec: PluginSpec,
    info: PluginInfo,
    pre: Pre,
    ctx: CallContext,
    /// Instances waiting between calls, of whichever world this plugin fits.
    idle_network: Idle<NetworkPlugin>,
    idle_storage: Idle<StoragePlugin>,
    idle_hooks: Idle<Hook>,
}

/// What `wasmgate plugin list` shows.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct PluginInfo {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    /// The world with its WIT version, e.g. `wasmgate:plugin/runtime-hook@0.2.0`: a runtime
    /// hook's is the version it was built against.
    pub world: String,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
    /// Whether the compiled artifact came from the on-disk cache.
    pub cached: bool,
    pub generation: u64,
}

impl LoadedPlugin {
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn spec(&self) -> &PluginSpec {
        &self.spec
    }

    /// Runs `f` on an instance of this network plugin, within its limits (see [`call::run`]).
    pub async fn network<R>(
        &self,
        f: impl AsyncFnOnce(&NetworkGuest, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let Pre::Network(pre) = &self.pre else {
            return Err(self.wrong_world(World::Network));
        };
        call::run(
            &self.ctx,
            &self.idle_network,
            async |s| pre.instantiate_async(s).await,
            async |i: &NetworkPlugin, s| f(i.wasmgate_plugin_network(), s).await,
        )
        .await
    }

    /// Runs `f` on an instance of this storage plugin, within its limits.
    pub async fn storage<R>(
        &self,
        f: impl AsyncFnOnce(&StoragePlugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let Pre::Storage(pre) = &self.pre else {
            return Err(self.wrong_world(World::Storage));
        };
        call::run(
            &self.ctx,
            &self.idle_storage,
            async |s| pre.instantiate_async(s).await,
            f,
        )
        .await
    }

    /// Runs `f` on an instance of this runtime hook, within its limits. [`Hook`] takes the
    /// newest WIT types whatever version the hook was built against.
    pub async fn runtime<R>(
        &self,
        f: impl AsyncFnOnce(&Hook, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let Pre::Runtime(pre) = &self.pre else {
            return Err(self.wrong_world(World::Runtime));
        };
        call::run(
            &self.ctx,
            &self.idle_hooks,
            async |s| pre.instantiate(s).await,
            f,
        )
        .await
    }

    fn wrong_world(&self, wanted: World) -> CallError {
        CallError::Instantiate {
            plugin: self.spec.name.clone(),
            message: format!(
                "plugin fits {} but is used as {}",
                self.info.world,
                wanted.name()
            ),
        }
    }

    /// Instantiates once and keeps the instance: only for measuring what the per-call path costs
    /// over calling an instance directly.
    pub async fn warm_instance(&self) -> Result<(Store<HostState>, NetworkPlugin), EngineError> {
        let mut store = HostState::store(
            &self.ctx.engine.engine,
            self.spec.name.as_str().into(),
            wasmtime_wasi::WasiCtx::builder().build(),
            self.ctx.config.clone(),
            self.ctx.kv.clone(),
            crate::host::StoreLimits {
                memory_bytes: self.spec.limits.memory_bytes,
                max_handles: self.ctx.max_handles,
            },
        );
        store.set_epoch_deadline(u64::MAX / 2);
        let Pre::Network(pre) = &self.pre else {
            return Err(EngineError::Call(self.wrong_world(World::Network)));
        };
        let inst = pre.instantiate_async(&mut store).await.map_err(|e| {
            EngineError::Call(CallError::Instantiate {
                plugin: self.spec.name.clone(),
                message: format!("{e:#}"),
            })
        })?;
        Ok((store, inst))
    }
}

/// All loaded plugins.
pub struct Registry {
    engine: WasmEngine,
    state_dir: PathBuf,
    cache_dir: PathBuf,
    plugins: RwLock<HashMap<String, Arc<ArcSwap<LoadedPlugin>>>>,
    /// Every plugin ever asked for, loaded or not, with why its last load failed: a plugin
    /// whose file is not there yet is still declared, so a reload or a file event can load it.
    declared: Mutex<HashMap<String, (PluginSpec, Option<String>)>>,
    stores: Mutex<HashMap<String, Arc<KvStore>>>,
    permits: Arc<tokio::sync::Semaphore>,
    generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    pub fn new(engine: WasmEngine, state_dir: PathBuf) -> Self {
        let permits = Arc::new(tokio::sync::Semaphore::new(engine.max_instances as usize));
        Self {
            engine,
            cache_dir: state_dir.join("cache"),
            state_dir,
            plugins: RwLock::new(HashMap::new()),
            declared: Mutex::new(HashMap::new()),
            stores: Mutex::new(HashMap::new()),
            permits,
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Caches compiled plugins in `dir` instead of `<state_dir>/cache`.
    pub fn with_cache_dir(mut self, dir: PathBuf) -> Self {
        self.cache_dir = dir;
        self
    }

    pub fn engine(&self) -> &WasmEngine {
        &self.engine
    }

    /// Loads `spec`, replacing any version of the same name. On error the old version stays.
    pub async fn load(&self, spec: PluginSpec) -> Result<PluginInfo, EngineError> {
        let name = spec.name.clone();
        self.declared().insert(name.clone(), (spec.clone(), None));
        let out = self.build_and_swap(spec).await;
        if let Err(e) = &out
            && let Some(entry) = self.declared().get_mut(&name)
        {
            entry.1 = Some(e.to_string());
        }
        out
    }

    fn declared(&self) -> std::sync::MutexGuard<'_, HashMap<String, (PluginSpec, Option<String>)>> {
        self.declared.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn build_and_swap(&self, spec: PluginSpec) -> Result<PluginInfo, EngineError> {
        let kv = self.store_for(&spec.name)?;
        let engine = self.engine.clone();
        let cache_dir = self.cache_dir.clone();
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let permits = self.permits.clone();
        // Compiling takes a core for a while: keep it off the async workers serving calls.
        let loaded = tokio::task::spawn_blocking(move || {
            build(engine, spec, kv, &cache_dir, generation, permits)
        })
        .await
        .map_err(|e| EngineError::Config(format!("compile task failed: {e}")))??;
        let info = loaded.info.clone();
        let name = info.name.clone();
        let mut plugins = self.plugins.write().unwrap_or_else(|p| p.into_inner());
        match plugins.get(&name) {
            Some(slot) => slot.store(Arc::new(loaded)),
            None => {
                plugins.insert(name, Arc::new(ArcSwap::from_pointee(loaded)));
            }
        }
        Ok(info)
    }

    /// Recompiles a declared plugin from its file, whether or not a version is loaded.
    pub async fn reload(&self, name: &str) -> Result<PluginInfo, EngineError> {
        let spec = self
            .declared()
            .get(name)
            .map(|(spec, _)| spec.clone())
            .ok_or_else(|| EngineError::UnknownPlugin(name.to_string()))?;
        self.load(spec).await
    }

    /// The current version; callers keep it for the whole call.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedPlugin>, EngineError> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = plugins.get(name) {
            return Ok(slot.load_full());
        }
        match self.declared().get(name) {
            Some((_, reason)) => Err(EngineError::NotLoaded {
                name: name.to_string(),
                reason: reason
                    .clone()
                    .unwrap_or_else(|| "still loading".to_string()),
            }),
            None => Err(EngineError::UnknownPlugin(name.to_string())),
        }
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        let plugins = self.plugins.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = plugins.values().map(|s| s.load().info.clone()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn store_for(&self, name: &str) -> Result<Arc<KvStore>, EngineError> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(name) {
            return Ok(s.clone());
        }
        let path = self.state_dir.join("plugins").join(format!("{name}.redb"));
        let store = Arc::new(KvStore::open(&path).map_err(|message| EngineError::Store {
            name: name.to_string(),
            message,
        })?);
        stores.insert(name.to_string(), store.clone());
        Ok(store)
    }
}

fn build(
    engine: WasmEngine,
    spec: PluginSpec,
    kv: Arc<KvStore>,
    cache_dir: &Path,
    generation: u64,
    permits: Arc<tokio::sync::Semaphore>,
) -> Result<LoadedPlugin, EngineError> {
    let bytes = std::fs::read(&spec.path).map_err(|source| EngineError::Read {
        name: spec.name.clone(),
        path: spec.path.clone(),
        source,
    })?;
    let sha256 = sha256_hex(&bytes);
    let (component, cached) = engine.compile_cached(&spec.name, &bytes, &sha256, cache_dir)?;
    // Type-checks every import and looks up the world's exports. A plugin that needs something
    // we don't grant fails here, before it could replace a working version, with the messages
    // `wasmgate plugin inspect` prints.
    let pre = crate::inspect::link(&engine, &component, spec.world).map_err(|misfits| {
        EngineError::Link {
            name: spec.name.clone(),
            world: crate::inspect::version_for(&component, spec.world),
            misfits,
        }
    })?;
    let config = Arc::new(
        spec.config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    );
    let loaded_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let ctx = CallContext {
        plugin: spec.name.clone(),
        engine,
        max_handles: spec.world.max_handles(),
        kv,
        config,
        limits: spec.limits,
        inherit_stderr: spec.inherit_stderr,
        data_dir: spec.data_dir.clone(),
        permits,
        fresh_instances: spec.fresh_instances,
    };
    Ok(LoadedPlugin {
        info: PluginInfo {
            name: spec.name.clone(),
            path: spec.path.clone(),
            sha256,
            // With the version a runtime hook was built against: `plugin list` shows it.
            world: pre.world().to_string(),
            loaded_at,
            cached,
            generation,
        },
        spec,
        pre,
        ctx,
        idle_network: Idle::default(),
        idle_storage: Idle::default(),
        idle_hooks: Idle::default(),
    })
}
