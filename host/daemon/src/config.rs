//! The daemon's one TOML file. Plugins are declared once, by name, and the `[cni]`, `[csi]` and
//! `[cri]` tables refer to them. Each interface is served exactly when its table is present, so
//! a storage-only or CRI-only node leaves the others out; every key inside a table has a
//! default, and no file at all is the embedded default setup, which serves all three.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use wasmgate_effects::NetPolicy;
use wasmgate_engine::{EngineConfig, Limits, PluginSpec, World};

pub use crate::cri::HookGrant;

/// Where the example plugin lands when built from this repository.
pub const DEFAULT_PLUGIN_PATH: &str =
    "plugins/rust/bridge-ipam/target/wasm32-wasip2/release/bridge_ipam.wasm";
/// Where the example CSI driver lands when built from this repository.
pub const DEFAULT_STORAGE_PLUGIN_PATH: &str =
    "plugins/rust/hostpath-csi/target/wasm32-wasip2/release/hostpath_csi.wasm";
/// The embedded `bridge` plugin's grant: the README quickstart's `10.240.0.0/24` and the builtin
/// runtime's default pod network `10.241.0.0/24`, with room for more networks beside them.
pub const DEFAULT_POD_CIDRS: &str = "10.240.0.0/12";
/// The shortest prefix a `pod_cidrs` entry may have: wider is no pod network but the node's
/// whole routing table.
pub const MIN_GRANT_PREFIX: u8 = 8;
/// The example driver's name, as kubelet and the CSIDriver object know it.
pub const DEFAULT_DRIVER: &str = "hostpath.csi.wasmgate.io";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub state_dir: PathBuf,
    pub engine: EngineSection,
    pub admin: AdminSection,
    /// The CNI socket the shim calls. A config file without a `[cni]` table serves no CNI (a
    /// storage-only or CRI-only node); the embedded defaults serve the example network plugin.
    #[serde(default)]
    pub cni: Option<CniSection>,
    /// The CSI driver. A config file without a `[csi]` table serves no CSI; the embedded
    /// defaults serve the example driver.
    #[serde(default)]
    pub csi: Option<CsiSection>,
    /// The CRI proxy. A config file without a `[cri]` table serves no CRI; the embedded
    /// defaults serve the builtin runtime.
    #[serde(default)]
    pub cri: Option<CriSection>,
    /// Declared plugins. A config file declares its own; the embedded ones are only for no file.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriSection {
    /// kubelet's `--container-runtime-endpoint=unix://<socket>`; mode 0600.
    pub socket: PathBuf,
    /// `builtin` (an in-memory runtime) or a CRI endpoint such as
    /// `unix:///run/containerd/containerd.sock` to forward to.
    pub upstream: String,
    /// Runtime hooks (plugins with `world = "runtime"`), run in this order.
    pub hooks: Vec<String>,
    /// `[cri.network]`: the builtin runtime networks its pods. A config file without the table
    /// leaves pods without a network; the embedded defaults have it.
    #[serde(default)]
    pub network: Option<PodNetworkSection>,
}

impl Default for CriSection {
    fn default() -> Self {
        Self {
            socket: "/run/wasmgate/cri.sock".into(),
            upstream: "builtin".to_string(),
            hooks: Vec::new(),
            network: Some(PodNetworkSection::default()),
        }
    }
}

// ---- [cri.network]: the builtin runtime's pod network ---------------------------------------

/// The file wasmgate writes its default network config into, in a conf dir it owns.
pub const DEFAULT_CONFLIST: &str = "10-wasmgate.conflist";

/// `[cri.network]`: the builtin runtime does what containerd's CRI plugin does for a pod that is
/// not on the host network. RunPodSandbox pins a network namespace and runs the node's CNI
/// config into it; StopPodSandbox runs DEL and removes the namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PodNetworkSection {
    /// The node's CNI network configs (`.conflist`, `.conf`, `.json`); the first by file name is
    /// used, as containerd does. Default `<state_dir>/net.d`: wasmgate's own directory, into
    /// which it writes [`DEFAULT_CONFLIST`] (the `[cni]` default plugin through the
    /// `wasmgate-cni` shim) when it holds no config. A directory named here is the operator's,
    /// and nothing is written to it.
    pub conf_dir: Option<PathBuf>,
    /// Where plugin binaries are looked up, in order; the plugins get them as `CNI_PATH`.
    /// Default: the directory of the running `wasmgate` binary (where `wasmgate-cni` is built
    /// and installed next to it), then `/opt/cni/bin`.
    pub bin_dirs: Option<Vec<PathBuf>>,
    /// Where each pod's namespace is pinned, as a file `wasmgate-<sandbox id prefix>`.
    pub netns_dir: PathBuf,
    /// How long one plugin exec may take before it is killed and RunPodSandbox fails.
    pub plugin_timeout_ms: u64,
}

impl Default for PodNetworkSection {
    fn default() -> Self {
        Self {
            conf_dir: None,
            bin_dirs: None,
            netns_dir: "/var/run/netns".into(),
            plugin_timeout_ms: 30_000,
        }
    }
}

impl PodNetworkSection {
    pub fn conf_dir(&self, state_dir: &Path) -> PathBuf {
        self.conf_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("net.d"))
    }

    pub fn bin_dirs(&self) -> Vec<PathBuf> {
        self.bin_dirs.clone().unwrap_or_else(|| {
            let own = std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf));
            own.into_iter()
                .chain([PathBuf::from("/opt/cni/bin")])
                .collect()
        })
    }

    /// Whether the conf dir is wasmgate's own, to write its default network into.
    pub fn owns_conf_dir(&self) -> bool {
        self.conf_dir.is_none()
    }

    pub fn plugin_timeout(&self) -> Duration {
        Duration::from_millis(self.plugin_timeout_ms)
    }

    fn validate(&self, cri: &CriSection, cni: Option<&CniSection>) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("cri.network: {m}")));
        if cri.upstream != "builtin" {
            return invalid(format!(
                "only the builtin runtime takes it; {} networks its own pods from its own CNI config",
                cri.upstream
            ));
        }
        if self.owns_conf_dir() && cni.is_none() {
            return invalid(
                "without conf_dir it runs wasmgate's default network, which needs a [cni] table"
                    .into(),
            );
        }
        let dirs = self.conf_dir.iter().chain(self.bin_dirs.iter().flatten());
        for d in dirs.chain([&self.netns_dir]) {
            if !d.is_absolute() {
                return invalid(format!("{} must be an absolute path", d.display()));
            }
        }
        if self.plugin_timeout_ms == 0 {
            return invalid("plugin_timeout_ms must be positive".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsiSection {
    /// The driver name kubelet registers, `GetPluginInfo`'s name.
    pub driver: String,
    /// The storage plugin (declared under `[plugins]` with `world = "storage"`) that serves it.
    pub plugin: String,
    /// The socket kubelet calls: Identity and Node, and Controller too unless
    /// `controller_socket` is set. Default `/var/lib/kubelet/plugins/<driver>/csi.sock`.
    pub socket: Option<PathBuf>,
    /// When set, Identity and Controller (and GroupController) are served here and no longer on
    /// `socket`, which keeps Identity and Node: the controller sidecars run in containers and
    /// need never reach the RPCs that mount on the host. Default unset: one socket for all.
    pub controller_socket: Option<PathBuf>,
    /// kubelet's root directory. Node RPCs only mount on, unmount and remove paths below it:
    /// staging paths under `<kubelet_dir>/plugins/kubernetes.io/csi/`, publish targets under
    /// `<kubelet_dir>/pods/`. Default `/var/lib/kubelet`.
    pub kubelet_dir: PathBuf,
    /// Serve kubelet's plugin-registration API, so no node-driver-registrar sidecar is needed.
    pub registration: bool,
    pub registration_dir: PathBuf,
    /// This node's ID as the driver reports it; default the host name.
    pub node_id: Option<String>,
}

impl Default for CsiSection {
    fn default() -> Self {
        Self {
            driver: DEFAULT_DRIVER.to_string(),
            plugin: "hostpath".to_string(),
            socket: None,
            controller_socket: None,
            kubelet_dir: "/var/lib/kubelet".into(),
            registration: true,
            registration_dir: "/var/lib/kubelet/plugins_registry".into(),
            node_id: None,
        }
    }
}

impl CsiSection {
    pub fn socket_path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| {
            PathBuf::from("/var/lib/kubelet/plugins")
                .join(&self.driver)
                .join("csi.sock")
        })
    }

    /// Where kubelet's plugin watcher looks for this driver's registration socket.
    pub fn registration_socket(&self) -> PathBuf {
        self.registration_dir
            .join(format!("{}-reg.sock", self.driver))
    }

    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_string())
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub max_instances: u32,
    pub max_memory_mb: usize,
    pub pooling: bool,
    /// Where compiled plugins are cached; default `<state_dir>/cache`. Daemons that load the
    /// same files may share one: entries are keyed by content and engine, written atomically.
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniSection {
    pub socket: PathBuf,
    /// Where the shim queues DELs while the daemon is down; must match the network config's
    /// `queueDir` (both default to the same path).
    pub queue_dir: PathBuf,
    /// The plugin used when a network config names none.
    pub default_plugin: String,
    /// How often the DEL queue is checked while running.
    pub queue_poll_ms: u64,
    /// The longest a queued DEL that keeps failing waits between attempts: the wait starts at
    /// `queue_poll_ms` and doubles after each failure up to this. Default 300000 (5 minutes).
    pub queue_retry_max_ms: u64,
    /// Answer DEL once the pod is cut off (host veth down, IP released, recorded) and let the
    /// kernel destroy the veth behind the reply: destroying a netdev waits for an RCU barrier,
    /// tens of milliseconds that the runtime need not wait for. An ADD that reuses the names
    /// waits for the teardown; a crash mid-teardown is finished on the next start.
    pub deferred_teardown: bool,
}

/// What a call does when its plugin fails: `closed` returns the error (the only safe choice for
/// CNI, where a half-wired pod is worse than a retried one); `open` is for hooks that may be skipped.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    #[serde(alias = "fail-closed")]
    Closed,
    #[serde(alias = "fail-open")]
    Open,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    pub path: PathBuf,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: usize,
    #[serde(default)]
    pub failure: FailurePolicy,
    /// Values served to the plugin through `wasi:config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Host bridges this plugin may attach pods to.
    #[serde(default)]
    pub bridges: Vec<String>,
    /// Every host-side interface the plugin names must start with this.
    #[serde(default = "default_host_prefix")]
    pub host_prefix: Option<String>,
    /// Network plugins: the pod CIDRs this plugin may hand out, e.g. `["10.240.0.0/16"]`.
    /// Container addresses, bridge addresses (at this prefix length or longer), host veth
    /// addresses and host routes must lie inside them. Default empty: the plugin may plumb
    /// nothing (the embedded `bridge` plugin is granted [`DEFAULT_POD_CIDRS`]).
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    /// Reload when the file changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    #[serde(default)]
    pub stderr: bool,
    /// `network` (CNI) or `storage` (CSI).
    #[serde(default)]
    pub world: World,
    /// Storage plugins only: the host directory granted to the plugin as `/data`; default
    /// `<state_dir>/plugins/<name>/data`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// A new instance for every call instead of reusing the one an earlier successful call left
    /// idle: for a plugin that must not carry memory from one call to the next.
    #[serde(default)]
    pub fresh_instances: bool,
    /// Runtime hooks only: `[plugins.NAME.grant]`, what the hook's adjustments may change beyond
    /// annotations, labels and environment variables (minus loader and interpreter variables).
    /// Default: nothing more. See [`HookGrant`].
    #[serde(default)]
    pub grant: Option<HookGrant>,
}

fn default_timeout_ms() -> u64 {
    2000
}
fn default_memory_mb() -> usize {
    64
}
fn default_host_prefix() -> Option<String> {
    Some("wg".to_string())
}
fn default_true() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        let mut plugins = BTreeMap::new();
        plugins.insert(
            "bridge".to_string(),
            PluginSection {
                path: DEFAULT_PLUGIN_PATH.into(),
                timeout_ms: default_timeout_ms(),
                memory_mb: default_memory_mb(),
                failure: FailurePolicy::Closed,
                config: BTreeMap::new(),
                bridges: vec!["wgbr0".to_string()],
                host_prefix: default_host_prefix(),
                pod_cidrs: vec![DEFAULT_POD_CIDRS.to_string()],
                watch: true,
                stderr: false,
                world: World::Network,
                data_dir: None,
                fresh_instances: false,
                grant: None,
            },
        );
        plugins.insert(
            "hostpath".to_string(),
            PluginSection {
                path: DEFAULT_STORAGE_PLUGIN_PATH.into(),
                timeout_ms: 10_000,
                memory_mb: default_memory_mb(),
                failure: FailurePolicy::Closed,
                config: BTreeMap::new(),
                bridges: Vec::new(),
                host_prefix: None,
                pod_cidrs: Vec::new(),
                watch: true,
                stderr: false,
                world: World::Storage,
                data_dir: None,
                fresh_instances: false,
                grant: None,
            },
        );
        Self {
            state_dir: "/var/lib/wasmgate".into(),
            engine: EngineSection::default(),
            admin: AdminSection::default(),
            cni: Some(CniSection::default()),
            csi: Some(CsiSection::default()),
            cri: Some(CriSection::default()),
            plugins,
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        let e = EngineConfig::default();
        Self {
            max_instances: e.max_instances,
            max_memory_mb: e.max_memory_bytes >> 20,
            pooling: e.pooling,
            cache_dir: None,
        }
    }
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            socket: "/run/wasmgate/admin.sock".into(),
        }
    }
}

impl Default for CniSection {
    fn default() -> Self {
        Self {
            socket: wasmgate_cni::conf::DEFAULT_SOCKET.into(),
            queue_dir: wasmgate_cni::conf::DEFAULT_QUEUE_DIR.into(),
            default_plugin: "bridge".to_string(),
            queue_poll_ms: 500,
            queue_retry_max_ms: 300_000,
            deferred_teardown: true,
        }
    }
}

/// Upper bounds of the numeric keys; see [`Config::validate`].
pub const MAX_INSTANCES: u32 = 4096;
pub const MAX_MEMORY_MB: usize = 16 << 10;
pub const MAX_TIMEOUT_MS: u64 = 600_000;
pub const QUEUE_POLL_MS: std::ops::RangeInclusive<u64> = 50..=60_000;
pub const MAX_RETRY_MS: u64 = 86_400_000;

/// Plugin names become file names (`plugins/<name>.redb`, the data dir) and TOML keys.
fn check_plugin_name(name: &str) -> Result<(), ConfigError> {
    let ok = (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "plugin name {name:?} must be 1 to 63 of [a-z0-9-], not starting with a dash"
    )))
}

/// The CSI spec's grammar for a driver name (domain-name notation): at most 63 characters,
/// alphanumerics at both ends, alphanumerics, `-` and `.` between. It becomes a directory under
/// kubelet's plugin dir and the registration socket's file name.
fn check_driver_name(name: &str) -> Result<(), ConfigError> {
    let b = name.as_bytes();
    let ok = (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.');
    if ok {
        return Ok(());
    }
    Err(ConfigError::Invalid(format!(
        "csi.driver {name:?} must be 1 to 63 characters of domain-name notation: \
         alphanumerics at both ends, alphanumerics, '-' and '.' between"
    )))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // Relative plugin paths are relative to the config file, not to wherever the daemon runs.
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = cfg;
        for p in cfg.plugins.values_mut() {
            if p.path.is_relative() {
                p.path = base.join(&p.path);
            }
            if let Some(d) = &p.data_dir
                && d.is_relative()
            {
                p.data_dir = Some(base.join(d));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cni.is_none() && self.csi.is_none() && self.cri.is_none() {
            return Err(ConfigError::Invalid(
                "no interface to serve: add a [cni], [csi] or [cri] table".to_string(),
            ));
        }
        if let Some(cni) = &self.cni {
            match self.plugins.get(&cni.default_plugin) {
                None => {
                    return Err(ConfigError::Invalid(format!(
                        "cni.default_plugin {:?} is not declared under [plugins]",
                        cni.default_plugin
                    )));
                }
                Some(p) if p.world != World::Network => {
                    return Err(ConfigError::Invalid(format!(
                        "cni.default_plugin {:?} is a {:?} plugin, not a network one",
                        cni.default_plugin, p.world
                    )));
                }
                Some(_) => {}
            }
        }
        self.check_bounds()?;
        for (name, p) in &self.plugins {
            check_plugin_name(name)?;
            if !(1..=MAX_TIMEOUT_MS).contains(&p.timeout_ms) || p.memory_mb == 0 {
                return Err(ConfigError::Invalid(format!(
                    "plugin {name}: timeout_ms must be 1..={MAX_TIMEOUT_MS} and memory_mb positive"
                )));
            }
            // A CNI or CSI call that silently skips its plugin would leave a pod without a
            // network or a volume; only a runtime hook may be skipped.
            if p.failure == FailurePolicy::Open && p.world != World::Runtime {
                return Err(ConfigError::Invalid(format!(
                    "plugin {name}: failure = \"open\" is for runtime hooks; network and storage plugins always fail closed"
                )));
            }
            if !p.pod_cidrs.is_empty() && p.world != World::Network {
                return Err(ConfigError::Invalid(format!(
                    "plugin {name}: pod_cidrs is for network plugins"
                )));
            }
            for cidr in &p.pod_cidrs {
                parse_grant(cidr).map_err(|why| {
                    ConfigError::Invalid(format!("plugin {name}: pod_cidrs {cidr:?} {why}"))
                })?;
            }
            if let Some(g) = &p.grant {
                if p.world != World::Runtime {
                    return Err(ConfigError::Invalid(format!(
                        "plugin {name}: a grant is for runtime hooks, not a {} plugin",
                        format!("{:?}", p.world).to_lowercase()
                    )));
                }
                g.validate()
                    .map_err(|e| ConfigError::Invalid(format!("plugin {name}: {e}")))?;
            }
            if p.memory_mb > self.engine.max_memory_mb {
                return Err(ConfigError::Invalid(format!(
                    "plugin {name}: memory_mb {} exceeds engine.max_memory_mb {}",
                    p.memory_mb, self.engine.max_memory_mb
                )));
            }
        }
        if let Some(cri) = &self.cri {
            if cri.upstream != "builtin" && !cri.upstream.starts_with("unix://") {
                return Err(ConfigError::Invalid(format!(
                    "cri.upstream {:?} must be \"builtin\" or a unix:// endpoint",
                    cri.upstream
                )));
            }
            if let Some(net) = &cri.network {
                net.validate(cri, self.cni.as_ref())?;
            }
            for h in &cri.hooks {
                match self.plugins.get(h) {
                    Some(p) if p.world == World::Runtime => {}
                    Some(_) => {
                        return Err(ConfigError::Invalid(format!(
                            "cri.hooks: {h:?} must be declared with world = \"runtime\""
                        )));
                    }
                    None => {
                        return Err(ConfigError::Invalid(format!(
                            "cri.hooks: {h:?} is not declared under [plugins]"
                        )));
                    }
                }
            }
        }
        if let Some(csi) = &self.csi {
            match self.plugins.get(&csi.plugin) {
                None => {
                    return Err(ConfigError::Invalid(format!(
                        "csi.plugin {:?} is not declared under [plugins]",
                        csi.plugin
                    )));
                }
                Some(p) if p.world != World::Storage => {
                    return Err(ConfigError::Invalid(format!(
                        "csi.plugin {:?} must be declared with world = \"storage\"",
                        csi.plugin
                    )));
                }
                Some(_) => {}
            }
            check_driver_name(&csi.driver)?;
            // Every node RPC's path is judged against it, so it must not depend on the cwd.
            if !csi.kubelet_dir.is_absolute()
                || csi
                    .kubelet_dir
                    .components()
                    .any(|c| c == Component::ParentDir)
            {
                return Err(ConfigError::Invalid(format!(
                    "csi.kubelet_dir {} must be an absolute path without '..'",
                    csi.kubelet_dir.display()
                )));
            }
            if csi.controller_socket.as_ref() == Some(&csi.socket_path()) {
                return Err(ConfigError::Invalid(
                    "csi.controller_socket must differ from csi.socket".into(),
                ));
            }
        }
        self.check_data_dirs()?;
        Ok(())
    }

    /// Numbers with no sane meaning outside a range: `max_instances = 0` would make every call
    /// wait for a permit forever, a poll of 0 ms would spin.
    fn check_bounds(&self) -> Result<(), ConfigError> {
        let out_of = |key: &str, v: u64, range: std::ops::RangeInclusive<u64>| {
            Err(ConfigError::Invalid(format!(
                "{key} = {v} is outside {}..={}",
                range.start(),
                range.end()
            )))
        };
        let e = &self.engine;
        if !(1..=MAX_INSTANCES).contains(&e.max_instances) {
            return out_of(
                "engine.max_instances",
                e.max_instances.into(),
                1..=MAX_INSTANCES.into(),
            );
        }
        if !(1..=MAX_MEMORY_MB).contains(&e.max_memory_mb) {
            return out_of(
                "engine.max_memory_mb",
                e.max_memory_mb as u64,
                1..=MAX_MEMORY_MB as u64,
            );
        }
        if let Some(cni) = &self.cni
            && !QUEUE_POLL_MS.contains(&cni.queue_poll_ms)
        {
            return out_of("cni.queue_poll_ms", cni.queue_poll_ms, QUEUE_POLL_MS);
        }
        if let Some(cni) = &self.cni
            && !(cni.queue_poll_ms..=MAX_RETRY_MS).contains(&cni.queue_retry_max_ms)
        {
            return out_of(
                "cni.queue_retry_max_ms",
                cni.queue_retry_max_ms,
                cni.queue_poll_ms..=MAX_RETRY_MS,
            );
        }
        Ok(())
    }

    /// A storage plugin's data dir is the one host directory its sandbox can write. It must not
    /// reach the host's own records (`host.redb`), the compiled-code cache (loaded as native
    /// code by root) or another plugin's data.
    fn check_data_dirs(&self) -> Result<(), ConfigError> {
        let state = self.state_dir.as_path();
        let cache = self.cache_dir();
        let storage: Vec<_> = self
            .plugins
            .iter()
            .filter(|(_, p)| p.world == World::Storage)
            .map(|(name, p)| (name, self.data_dir(name, p)))
            .collect();
        for (name, dir) in &storage {
            let refuse = |why: String| {
                Err(ConfigError::Invalid(format!(
                    "plugin {name}: data_dir {} {why}",
                    dir.display()
                )))
            };
            if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
                return refuse("must be an absolute path without `..`".into());
            }
            let own = state.join("plugins").join(name);
            if state.starts_with(dir) || (dir.starts_with(state) && !dir.starts_with(&own)) {
                return refuse(format!(
                    "overlaps state_dir {} (only {} is the plugin's)",
                    state.display(),
                    own.display()
                ));
            }
            if cache.starts_with(dir) || dir.starts_with(&cache) {
                return refuse(format!("overlaps the cache dir {}", cache.display()));
            }
            for (other, theirs) in &storage {
                if other != name && (theirs.starts_with(dir) || dir.starts_with(theirs)) {
                    return refuse(format!(
                        "overlaps plugin {other}'s data_dir {}",
                        theirs.display()
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_instances: self.engine.max_instances,
            max_memory_bytes: self.engine.max_memory_mb << 20,
            pooling: self.engine.pooling,
        }
    }

    pub fn plugin_spec(&self, name: &str, p: &PluginSection) -> PluginSpec {
        let mut spec = PluginSpec::new(name, &p.path);
        spec.limits = Limits {
            timeout: Duration::from_millis(p.timeout_ms),
            memory_bytes: p.memory_mb << 20,
        };
        spec.config = p.config.clone();
        spec.inherit_stderr = p.stderr;
        spec.fresh_instances = p.fresh_instances;
        spec.world = p.world;
        if p.world == World::Storage {
            spec.data_dir = Some(self.data_dir(name, p));
            // The driver reports the node it runs on; the operator's config wins.
            if let Some(csi) = self.csi.as_ref().filter(|c| c.plugin == name) {
                spec.config
                    .entry("node-id".to_string())
                    .or_insert_with(|| csi.node_id());
                spec.config
                    .entry("driver-name".to_string())
                    .or_insert_with(|| csi.driver.clone());
            }
        }
        spec
    }

    /// Where compiled plugins are cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.engine
            .cache_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("cache"))
    }

    /// The directory a storage plugin is granted.
    pub fn data_dir(&self, name: &str, p: &PluginSection) -> PathBuf {
        p.data_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("plugins").join(name).join("data"))
    }

    /// The plugin's grant, from a validated config (an entry that does not parse is left out,
    /// which can only narrow the grant).
    pub fn net_policy(p: &PluginSection) -> NetPolicy {
        NetPolicy {
            allowed_bridges: p.bridges.clone(),
            host_prefix: p.host_prefix.clone(),
            pod_cidrs: p
                .pod_cidrs
                .iter()
                .filter_map(|c| parse_grant(c).ok())
                .collect(),
        }
    }
}

/// One `pod_cidrs` entry: a CIDR without host bits, at least [`MIN_GRANT_PREFIX`] long, that
/// holds no unspecified, loopback, link-local (the cloud metadata address), multicast or
/// broadcast address: none of those is a pod's. The error completes "pod_cidrs "<cidr>" ...".
fn parse_grant(cidr: &str) -> Result<ipnet::IpNet, String> {
    let net: ipnet::IpNet = cidr
        .parse()
        .map_err(|_| "is not a CIDR (want e.g. \"10.240.0.0/16\")".to_string())?;
    if net.trunc() != net {
        return Err(format!(
            "has host bits set (the network is {})",
            net.trunc()
        ));
    }
    if net.prefix_len() < MIN_GRANT_PREFIX {
        return Err(format!(
            "is wider than /{MIN_GRANT_PREFIX}: a grant is a pod network, not the node's routing table"
        ));
    }
    const RESERVED: [&str; 8] = [
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "224.0.0.0/3",
        "::/127",
        "::ffff:0:0/96",
        "fe80::/10",
        "ff00::/8",
    ];
    for reserved in RESERVED {
        let reserved: ipnet::IpNet = reserved.parse().expect("a valid reserved range");
        if net.contains(&reserved.network()) || reserved.contains(&net.network()) {
            return Err(format!("overlaps {reserved}, which holds no pod addresses"));
        }
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_is_the_default_setup_and_an_empty_one_serves_nothing() {
        let cfg = Config::default();
        assert_eq!(cfg.cni.as_ref().unwrap().default_plugin, "bridge");
        assert!(cfg.csi.is_some() && cfg.cri.is_some());
        assert!(cfg.plugins.contains_key("bridge"));
        cfg.validate().unwrap();
        let cfg: Config = toml::from_str("").unwrap();
        assert!(cfg.cni.is_none() && cfg.csi.is_none() && cfg.cri.is_none());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("no interface to serve"), "{err}");
    }

    #[test]
    fn each_interface_is_served_exactly_when_its_table_is_present() {
        // A storage-only node: no [cni], and no network plugin declared.
        let csi_only: Config = toml::from_str(
            "[csi]\nplugin = \"hp\"\n[plugins.hp]\nworld = \"storage\"\npath = \"h.wasm\"\n",
        )
        .unwrap();
        assert!(csi_only.cni.is_none() && csi_only.cri.is_none());
        csi_only.validate().unwrap();
        // A CRI-only node in front of containerd, with no plugin at all.
        let cri_only: Config =
            toml::from_str("[cri]\nupstream = \"unix:///run/containerd/containerd.sock\"\n")
                .unwrap();
        assert!(cri_only.cni.is_none() && cri_only.csi.is_none());
        cri_only.validate().unwrap();
        // [cni] present: its plugin must be there.
        let cfg: Config = toml::from_str(
            "[cni]\n[csi]\nplugin = \"hp\"\n[plugins.hp]\nworld = \"storage\"\npath = \"h.wasm\"\n",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("cni.default_plugin \"bridge\" is not declared"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_limits_are_rejected() {
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let cfg: Config = toml::from_str(
            "[cni]\ndefault_plugin = \"x\"\n[plugins.x]\npath = \"x.wasm\"\nmemory_mb = 4096\n",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("exceeds engine.max_memory_mb"), "{err}");
        let cfg: Config = toml::from_str(
            "[cni]\ndefault_plugin = \"x\"\n[plugins.x]\npath = \"x.wasm\"\nfailure = \"open\"\n",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("fail closed"), "{err}");
    }

    #[test]
    fn pod_cidrs_are_parsed_and_absurd_grants_refused() {
        let with = |grant: &str| -> Result<Config, ConfigError> {
            let cfg: Config = toml::from_str(&format!(
                "[cni]\ndefault_plugin = \"x\"\n[plugins.x]\npath = \"x.wasm\"\npod_cidrs = {grant}\n"
            ))
            .unwrap();
            cfg.validate().map(|()| cfg)
        };
        let cfg = with(r#"["10.240.0.0/16", "fd00:10::/64"]"#).unwrap();
        let policy = Config::net_policy(&cfg.plugins["x"]);
        assert_eq!(
            policy.pod_cidrs,
            [
                "10.240.0.0/16".parse().unwrap(),
                "fd00:10::/64".parse().unwrap()
            ]
        );
        let refused = [
            (
                r#"["10.240.0.1/16"]"#,
                "has host bits set (the network is 10.240.0.0/16)",
            ),
            (r#"["10.240.0.0"]"#, "is not a CIDR"),
            (r#"["0.0.0.0/0"]"#, "is wider than /8"),
            (r#"["128.0.0.0/1"]"#, "is wider than /8"),
            (r#"["::/0"]"#, "is wider than /8"),
            (r#"["169.254.0.0/16"]"#, "overlaps 169.254.0.0/16"),
            (r#"["169.254.169.0/24"]"#, "overlaps 169.254.0.0/16"),
            (r#"["127.0.0.0/8"]"#, "overlaps 127.0.0.0/8"),
            (r#"["fe80::/64"]"#, "overlaps fe80::/10"),
        ];
        for (grant, want) in refused {
            let err = with(grant).unwrap_err().to_string();
            assert!(
                err.contains("plugin x: pod_cidrs") && err.contains(want),
                "{grant}: {err}"
            );
        }
        // No grant is a valid config: that plugin just plumbs nothing.
        let cfg = with("[]").unwrap();
        assert!(Config::net_policy(&cfg.plugins["x"]).pod_cidrs.is_empty());
        // Only network plugins take one.
        let cfg: Config = toml::from_str(
            "[csi]\nplugin = \"hp\"\n[plugins.hp]\nworld = \"storage\"\npath = \"h.wasm\"\npod_cidrs = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("pod_cidrs is for network plugins"), "{err}");
    }

    #[test]
    fn the_embedded_grant_covers_the_default_networks() {
        let cfg = Config::default();
        let policy = Config::net_policy(&cfg.plugins["bridge"]);
        let default_pods = crate::cri::builtin::network::DEFAULT_PODCIDR;
        for net in ["10.240.0.0/24", default_pods] {
            let net: ipnet::IpNet = net.parse().unwrap();
            assert!(
                policy.pod_cidrs.iter().any(|g| g.contains(&net)),
                "{net} is not granted: {:?}",
                policy.pod_cidrs
            );
        }
    }

    #[test]
    fn grants_are_for_runtime_hooks_and_must_mean_what_they_say() {
        let hook = |grant: &str| {
            toml::from_str::<Config>(&format!(
                "[cri]\nhooks = [\"h\"]\n[plugins.h]\nworld = \"runtime\"\npath = \"h.wasm\"\n{grant}\n"
            ))
        };
        let cfg =
            hook("grant = { mounts = [\"/var/lib/hook-data\"], resources = \"tighten\" }").unwrap();
        cfg.validate().unwrap();
        let grant = cfg.plugins["h"].grant.clone().unwrap();
        assert_eq!(grant.resources, Some(crate::cri::ResourcesGrant::Tighten));
        assert!(
            hook("grant = { mount = [\"/x\"] }").is_err(),
            "unknown grant key"
        );
        assert!(hook("grant = { resources = \"more\" }").is_err());
        for (bad, says) in [
            ("grant = { mounts = [\"rel/x\"] }", "grant.mounts"),
            ("grant = { mounts_rw = [\"/a/../b\"] }", "grant.mounts_rw"),
            ("grant = { devices = [\"/dev/fuse\"] }", "grant.devices"),
            ("grant = { devices = [\"/dev/fuse:rx\"] }", "grant.devices"),
            (
                "grant = { image_registries = [\"https://m\"] }",
                "grant.image_registries",
            ),
        ] {
            let err = hook(bad).unwrap().validate().unwrap_err().to_string();
            assert!(
                err.contains("plugin h") && err.contains(says),
                "{bad}: {err}"
            );
        }
        let cfg: Config = toml::from_str(
            "[cni]\ndefault_plugin = \"x\"\n[plugins.x]\npath = \"x.wasm\"\ngrant = { args = true }\n",
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("grant is for runtime hooks, not a network plugin"),
            "{err}"
        );
    }

    #[test]
    fn relative_plugin_paths_follow_the_config_file() {
        let dir = std::env::temp_dir().join(format!("wg-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("wasmgate.toml");
        std::fs::write(
            &file,
            "[cni]\n[plugins.bridge]\npath = \"p.wasm\"\ntimeout_ms = 50\n",
        )
        .unwrap();
        let cfg = Config::load(&file).unwrap();
        assert_eq!(cfg.plugins["bridge"].path, dir.join("p.wasm"));
        assert_eq!(cfg.plugins["bridge"].timeout_ms, 50);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cri_network_is_on_in_the_embedded_defaults_and_off_without_its_table() {
        let net = Config::default().cri.unwrap().network.unwrap();
        assert_eq!(net.conf_dir(Path::new("/s")), Path::new("/s/net.d"));
        assert!(net.owns_conf_dir());
        assert_eq!(net.bin_dirs().last().unwrap(), Path::new("/opt/cni/bin"));
        assert_eq!(net.netns_dir, Path::new("/var/run/netns"));

        let cri = "[cri]\nupstream = \"builtin\"\n";
        let cfg: Config = toml::from_str(cri).unwrap();
        assert!(cfg.cri.unwrap().network.is_none());

        let cfg: Config = toml::from_str(&format!(
            "{cri}[cri.network]\nconf_dir = \"/etc/cni/net.d\"\nbin_dirs = [\"/usr/lib/cni\"]\n"
        ))
        .unwrap();
        cfg.validate().unwrap();
        let net = cfg.cri.unwrap().network.unwrap();
        assert!(!net.owns_conf_dir());
        assert_eq!(net.bin_dirs(), [Path::new("/usr/lib/cni")]);
        assert_eq!(net.plugin_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn cri_network_is_refused_where_it_cannot_work() {
        let cases = [
            (
                "[cri]\nupstream = \"unix:///run/containerd/containerd.sock\"\n[cri.network]\n",
                "only the builtin runtime takes it",
            ),
            (
                "[cri]\n[cri.network]\n",
                "wasmgate's default network, which needs a [cni] table",
            ),
            (
                "[cri]\n[cri.network]\nconf_dir = \"net.d\"\n",
                "net.d must be an absolute path",
            ),
            (
                "[cri]\n[cri.network]\nconf_dir = \"/n\"\nplugin_timeout_ms = 0\n",
                "plugin_timeout_ms must be positive",
            ),
        ];
        for (toml_text, want) in cases {
            let cfg: Config = toml::from_str(toml_text).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.contains("cri.network: ") && err.contains(want),
                "{toml_text}: {err}"
            );
        }
    }

    fn refusal(toml_text: &str) -> String {
        let cfg: Config = toml::from_str(toml_text).unwrap();
        cfg.validate().unwrap_err().to_string()
    }

    const HP: &str =
        "[csi]\nplugin = \"hp\"\n[plugins.hp]\nworld = \"storage\"\npath = \"h.wasm\"\n";

    #[test]
    fn names_that_would_escape_a_directory_are_refused() {
        for bad in ["..", "a/b", "Bridge", "a_b", "-a", "", &"a".repeat(64)] {
            let err = refusal(&format!(
                "[csi]\nplugin = \"hp\"\n[plugins.hp]\nworld = \"storage\"\npath = \"h.wasm\"\n[plugins.\"{bad}\"]\npath = \"x.wasm\"\n"
            ));
            assert!(
                err.contains("must be 1 to 63 of [a-z0-9-]"),
                "{bad:?}: {err}"
            );
        }
        for bad in ["../../etc", "a..", ".a", "a_b.io", "x.", &"a".repeat(64)] {
            let err = refusal(&HP.replacen("[csi]\n", &format!("[csi]\ndriver = \"{bad}\"\n"), 1));
            assert!(err.contains("domain-name notation"), "{bad:?}: {err}");
        }
        let ok: Config = toml::from_str(&HP.replacen(
            "[csi]\n",
            "[csi]\ndriver = \"Host-Path.csi.example.com\"\n",
            1,
        ))
        .unwrap();
        ok.validate().unwrap();
    }

    #[test]
    fn numbers_outside_their_range_are_refused() {
        let cases = [
            (
                "[engine]\nmax_instances = 0\n",
                "engine.max_instances = 0 is outside 1..=4096",
            ),
            (
                "[engine]\nmax_instances = 100000\n",
                "engine.max_instances = 100000",
            ),
            ("[engine]\nmax_memory_mb = 0\n", "engine.max_memory_mb = 0"),
            (
                "[plugins.hp]\ntimeout_ms = 0\n",
                "timeout_ms must be 1..=600000",
            ),
            (
                "[plugins.hp]\ntimeout_ms = 99999999\n",
                "timeout_ms must be 1..=600000",
            ),
        ];
        for (extra, want) in cases {
            let text = if extra.starts_with("[plugins.hp]") {
                HP.replace(
                    "path = \"h.wasm\"\n",
                    &format!("path = \"h.wasm\"\n{}", &extra[13..]),
                )
            } else {
                format!("{extra}{HP}")
            };
            let err = refusal(&text);
            assert!(err.contains(want), "{extra}: {err}");
        }
        let err = refusal(
            "[cni]\ndefault_plugin = \"n\"\nqueue_poll_ms = 0\n[plugins.n]\npath = \"n.wasm\"\n",
        );
        assert!(
            err.contains("cni.queue_poll_ms = 0 is outside 50..=60000"),
            "{err}"
        );
    }

    #[test]
    fn a_data_dir_may_not_reach_the_hosts_own_files() {
        let with = |data_dir: &str, extra: &str| {
            format!(
                "state_dir = \"/var/lib/wg\"\n{extra}{}data_dir = \"{data_dir}\"\n",
                HP
            )
        };
        let cases = [
            (with("/var/lib/wg", ""), "overlaps state_dir /var/lib/wg"),
            (with("/var/lib", ""), "overlaps state_dir"),
            (with("/var/lib/wg/plugins", ""), "overlaps state_dir"),
            (
                with("/var/lib/wg/plugins/other/data", ""),
                "overlaps state_dir",
            ),
            (with("/var/lib/wg/cache/x", ""), "overlaps state_dir"),
            (
                with("/srv/cache", "[engine]\ncache_dir = \"/srv/cache\"\n"),
                "overlaps the cache dir /srv/cache",
            ),
            (
                with("/srv", "[engine]\ncache_dir = \"/srv/cache\"\n"),
                "overlaps the cache dir",
            ),
            (with("/srv/../var/lib/wg", ""), "without `..`"),
        ];
        for (text, want) in cases {
            let err = refusal(&text);
            assert!(err.contains(want), "{text}: {err}");
        }
        // Two storage plugins sharing a directory would read each other's volumes.
        let two = format!(
            "{}data_dir = \"/srv/a\"\n[plugins.hq]\nworld = \"storage\"\npath = \"q.wasm\"\ndata_dir = \"/srv/a/b\"\n",
            HP
        );
        assert!(refusal(&two).contains("overlaps plugin"));
        // The default, and the plugin's own subtree, are fine.
        let cfg: Config = toml::from_str(&format!("state_dir = \"/var/lib/wg\"\n{HP}")).unwrap();
        cfg.validate().unwrap();
        let cfg: Config = toml::from_str(&with("/var/lib/wg/plugins/hp/volumes", "")).unwrap();
        cfg.validate().unwrap();
        let cfg: Config = toml::from_str(&with("/srv/hostpath", "")).unwrap();
        cfg.validate().unwrap();
    }
}
