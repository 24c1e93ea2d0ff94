//! The wasmgate daemon: everything `wasmgate serve` runs, as a library the binary wires up.
//!
//! A CNI call arrives on the CNI socket from the `wasmgate-cni` shim ([`cni::server`]), is validated
//! and routed to its plugin ([`cni::CniService`]), runs in the engine, and the plan it returns is
//! checked and carried out by `wasmgate-effects`; [`state`] records what the host built.

pub mod admin;
mod blocking;
pub mod cni;
pub mod config;
pub mod cri;
pub mod csi;
pub mod grpc;
mod socket;
pub mod state;
pub mod trace;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmgate_cni::queue::DelQueue;
use wasmgate_effects::{LinuxMounts, MountEffects, Netlink, NetworkEffects};
use wasmgate_engine::{Registry, WasmEngine};

use crate::cni::{CniService, PluginPolicy};
pub use crate::config::Config;
use crate::state::Records;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Engine(#[from] wasmgate_engine::EngineError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("startup: {0}")]
    Startup(String),
    #[error("watch plugin files: {0}")]
    Watch(#[from] notify::Error),
}

/// The host effects the daemon carries plugins' plans out with.
pub struct Effects {
    pub network: Arc<dyn NetworkEffects>,
    pub mounts: Arc<dyn MountEffects>,
}

impl Effects {
    /// The kernel: netlink and mount(2).
    pub fn real() -> Self {
        Self {
            network: Arc::new(Netlink::new()),
            mounts: Arc::new(LinuxMounts),
        }
    }
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    run_with(cfg, Effects::real(), shutdown).await
}

/// [`run`] with the host effects given, so tests can substitute the recording fakes.
pub async fn run_with(
    cfg: Config,
    effects: Effects,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    cfg.validate()?;
    raise_fd_limit(&cfg);
    create_private_dir(&cfg.state_dir).map_err(|source| DaemonError::Io {
        what: "create state dir",
        path: cfg.state_dir.clone(),
        source,
    })?;
    // Refused before anything loads: its files are run as native code.
    wasmgate_engine::check_private_dir(&cfg.cache_dir())?;
    let engine = WasmEngine::new(&cfg.engine_config())?;
    let registry =
        Arc::new(Registry::new(engine, cfg.state_dir.clone()).with_cache_dir(cfg.cache_dir()));
    let mut policies = BTreeMap::new();
    let mut watched = HashMap::new();
    for (name, p) in &cfg.plugins {
        if p.world == wasmgate_engine::World::Storage {
            let dir = cfg.data_dir(name, p);
            create_private_dir(&dir).map_err(|source| DaemonError::Io {
                what: "create plugin data dir",
                path: dir.clone(),
                source,
            })?;
        }
        // One plugin that cannot load (its file not deployed yet, a bad build) must not keep the
        // others from serving; its calls fail with code 50 until a reload or a file event loads it.
        match registry.load(cfg.plugin_spec(name, p)).await {
            Ok(info) => {
                tracing::info!(plugin = %name, sha256 = %info.sha256, cached = info.cached, "loaded")
            }
            Err(e) => tracing::error!(plugin = %name, "not loaded, serving without it: {e}"),
        }
        policies.insert(
            name.clone(),
            PluginPolicy {
                net: Config::net_policy(p),
            },
        );
        if p.watch {
            watched.insert(p.path.clone(), name.clone());
        }
    }
    let records = Arc::new(Records::open(&cfg.state_dir.join("host.redb"))?);
    let trace = Arc::new(trace::Trace::default());
    let io = |what, path: &PathBuf| {
        let path = path.clone();
        move |source| DaemonError::Io { what, path, source }
    };
    // The CNI socket, its service and the DEL queue's poller, when the node serves CNI.
    let mut cni_tasks = Vec::new();
    let mut del_queue = None;
    if let Some(cni) = &cfg.cni {
        let svc = Arc::new(
            CniService::new(
                registry.clone(),
                effects.network,
                records.clone(),
                policies,
                cni.default_plugin.clone(),
            )
            .with_deferred_teardown(cni.deferred_teardown)
            .with_trace(trace.clone()),
        );
        let finished = svc
            .finish_teardowns()
            .await
            .map_err(|e| DaemonError::Startup(e.to_string()))?;
        if finished > 0 {
            tracing::info!(finished, "finished teardowns a previous run left");
        }
        // DELs queued while we were down go first: an ADD for the same pod must not overtake them.
        let poll = Duration::from_millis(cni.queue_poll_ms);
        let backoff = cni::queue::Backoff {
            first: poll,
            max: Duration::from_millis(cni.queue_retry_max_ms).max(poll),
        };
        let replayer = Arc::new(cni::queue::Replayer::new(
            DelQueue::new(cni.queue_dir.clone()),
            backoff,
        ));
        let replayed = replayer.start(&svc).await;
        if replayed > 0 {
            tracing::info!(replayed, "applied queued DELs");
        }
        del_queue = Some(replayer.clone());
        let listener =
            socket::bind(&cni.socket, 0o660).map_err(io("bind cni socket", &cni.socket))?;
        let poller_svc = svc.clone();
        cni_tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                replayer.poll(&poller_svc).await;
            }
        }));
        cni_tasks.push(tokio::spawn(cni::server::serve(listener, svc)));
        tracing::info!(cni = %cni.socket.display(), "serving cni");
    }
    let admin_listener = socket::bind(&cfg.admin.socket, 0o600)
        .map_err(io("bind admin socket", &cfg.admin.socket))?;
    let _watcher = if watched.is_empty() {
        None
    } else {
        Some(watch::spawn(registry.clone(), watched)?)
    };

    // Every gRPC server task: CRI (and the builtin runtime), CSI, registration.
    let mut grpc_tasks = Vec::new();
    if let Some(cri) = &cfg.cri {
        // The builtin runtime is called in process; its private socket is there for tools and
        // for measuring the proxy against it.
        let backend = match cri.upstream.strip_prefix("unix://") {
            Some(p) => cri::upstream::Backend::remote(Path::new(p)),
            None => {
                let path = cfg.state_dir.join("cri-builtin.sock");
                let listener =
                    socket::bind(&path, 0o600).map_err(io("bind builtin runtime socket", &path))?;
                let b = cri::builtin::Builtin::from_config(&cfg, records.clone()).await;
                let b = Arc::new(b.map_err(|e| DaemonError::Startup(e.to_string()))?);
                let served = b.clone();
                let incoming = grpc::Incoming::new(listener, "cri-builtin", &path, trace.clone());
                grpc_tasks.push(tokio::spawn(async move {
                    if let Err(e) = cri::upstream::serve_builtin(incoming, served).await {
                        tracing::error!("builtin runtime stopped: {e}");
                    }
                }));
                cri::upstream::Backend::builtin(b)
            }
        };
        let hooks = cri
            .hooks
            .iter()
            .map(|h| cri::HookSpec {
                name: h.clone(),
                failure: cfg.plugins[h].failure,
                grant: Arc::new(cfg.plugins[h].grant.clone().unwrap_or_default()),
            })
            .collect();
        let svc = Arc::new(cri::CriService::new(
            backend,
            cri.upstream.clone(),
            registry.clone(),
            hooks,
            trace.clone(),
        ));
        // kubelet runs as root; nobody else may drive the runtime.
        let listener =
            socket::bind(&cri.socket, 0o600).map_err(io("bind cri socket", &cri.socket))?;
        let incoming = grpc::Incoming::new(listener, "cri", &cri.socket, trace.clone());
        grpc_tasks.push(tokio::spawn(async move {
            if let Err(e) = cri::serve(incoming, svc, std::future::pending()).await {
                tracing::error!("cri server stopped: {e}");
            }
        }));
        tracing::info!(cri = %cri.socket.display(), upstream = %cri.upstream, "serving cri");
    }
    if let Some(csi) = &cfg.csi {
        let p = &cfg.plugins[&csi.plugin];
        let svc = Arc::new(csi::CsiService::new(
            registry.clone(),
            csi.plugin.clone(),
            cfg.data_dir(&csi.plugin, p),
            &csi.kubelet_dir,
            effects.mounts,
            records.clone(),
            trace.clone(),
        ));
        let path = csi.socket_path();
        let mut sockets = vec![(path.clone(), csi::server::Services::All)];
        if let Some(ctl) = &csi.controller_socket {
            sockets = vec![
                (path.clone(), csi::server::Services::Node),
                (ctl.clone(), csi::server::Services::Controller),
            ];
        }
        for (sock, services) in sockets {
            // kubelet and the sidecars run as root; nobody else has business on this socket.
            let listener = socket::bind(&sock, 0o600).map_err(io("bind csi socket", &sock))?;
            let incoming = grpc::Incoming::new(listener, "csi", &sock, trace.clone());
            let svc = svc.clone();
            grpc_tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    csi::server::serve(incoming, svc, services, std::future::pending()).await
                {
                    tracing::error!("csi server stopped: {e}");
                }
            }));
            tracing::info!(csi = %sock.display(), ?services, driver = %csi.driver, "serving csi");
        }
        if csi.registration {
            let reg_path = csi.registration_socket();
            let listener = socket::bind(&reg_path, 0o600)
                .map_err(io("bind registration socket", &reg_path))?;
            let incoming = grpc::Incoming::new(listener, "registration", &reg_path, trace.clone());
            let reg = Arc::new(csi::registration::Registration::new(
                csi.driver.clone(),
                path,
                trace.clone(),
            ));
            grpc_tasks.push(tokio::spawn(async move {
                if let Err(e) =
                    csi::registration::serve(incoming, reg, std::future::pending()).await
                {
                    tracing::error!("registration server stopped: {e}");
                }
            }));
        }
    }
    let admin_task = tokio::spawn(admin::serve(admin_listener, registry, trace, del_queue));
    tracing::info!(admin = %cfg.admin.socket.display(), "serving");

    shutdown.await;
    admin_task.abort();
    for t in cni_tasks {
        t.abort();
    }
    for t in grpc_tasks {
        t.abort();
    }
    if let Some(cni) = &cfg.cni {
        let _ = std::fs::remove_file(&cni.socket);
    }
    let _ = std::fs::remove_file(&cfg.admin.socket);
    if let Some(cri) = &cfg.cri {
        let _ = std::fs::remove_file(&cri.socket);
    }
    if let Some(csi) = &cfg.csi {
        let _ = std::fs::remove_file(csi.socket_path());
        if let Some(ctl) = &csi.controller_socket {
            let _ = std::fs::remove_file(ctl);
        }
        let _ = std::fs::remove_file(csi.registration_socket());
    }
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one: the daemon holds sockets, netns and mount
/// descriptors for the whole node, and storage plugins' files besides. Every instance's handles
/// are bounded ([`wasmgate_engine::World::max_handles`]) and a guest open within
/// [`wasmgate_engine::FD_RESERVE`] of the limit is refused, so what is left there stays the
/// daemon's own; this only warns when the budgets could, all together, reach into that reserve.
fn raise_fd_limit(cfg: &Config) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit and setrlimit read or write only the struct they are given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(
            "cannot read RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let soft = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            tracing::warn!(
                soft,
                hard = lim.rlim_max,
                "cannot raise RLIMIT_NOFILE: {}",
                std::io::Error::last_os_error()
            );
            lim.rlim_cur = soft;
        }
    }
    tracing::info!(
        soft = lim.rlim_cur,
        hard = lim.rlim_max,
        was = soft,
        reserve = wasmgate_engine::FD_RESERVE,
        "open file limit"
    );
    let budgets = u64::from(cfg.engine.max_instances)
        .saturating_mul(wasmgate_engine::World::Storage.max_handles() as u64);
    if budgets.saturating_add(wasmgate_engine::FD_RESERVE) > lim.rlim_cur {
        tracing::warn!(
            limit = lim.rlim_cur,
            "{} instances at their full handle budget could reach the last {} descriptors; guest opens there are refused",
            cfg.engine.max_instances,
            wasmgate_engine::FD_RESERVE
        );
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
