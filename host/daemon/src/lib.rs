//! The wasmgate daemon: everything `wasmgate serve` runs, as a library the binary wires up.
//!
//! A CNI call arrives on the CNI socket from the `wasmgate-cni` shim ([`cni::server`]), is validated
//! and routed to its plugin ([`cni::CniService`]), runs in the engine, and the plan it returns is
//! checked and carried out by `wasmgate-effects`; [`state`] records what the host built.

pub mod admin;
pub mod cni;
pub mod config;
mod socket;
pub mod state;
pub mod trace;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmgate_cni::queue::DelQueue;
use wasmgate_effects::{Netlink, NetworkEffects};
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

/// Runs the daemon until `shutdown` resolves.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    run_with(cfg, Arc::new(Netlink::new()), shutdown).await
}

/// [`run`] with the host effects given, so tests can substitute the recording fake.
pub async fn run_with(
    cfg: Config,
    effects: Arc<dyn NetworkEffects>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    cfg.validate()?;
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.state_dir)
            .map_err(|source| DaemonError::Io {
                what: "create state dir",
                path: cfg.state_dir.clone(),
                source,
            })?;
    }
    let engine = WasmEngine::new(&cfg.engine_config())?;
    let registry = Arc::new(Registry::new(engine, cfg.state_dir.clone()));
    let mut policies = BTreeMap::new();
    let mut watched = HashMap::new();
    for (name, p) in &cfg.plugins {
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
    let svc = Arc::new(
        CniService::new(
            registry.clone(),
            effects,
            records,
            policies,
            cfg.cni.default_plugin.clone(),
        )
        .with_deferred_teardown(cfg.cni.deferred_teardown)
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
    let queue = DelQueue::new(cfg.cni.queue_dir.clone());
    let replayed = cni::queue::replay(&svc, &queue).await;
    if replayed > 0 {
        tracing::info!(replayed, "applied queued DELs");
    }

    let io = |what, path: &PathBuf| {
        let path = path.clone();
        move |source| DaemonError::Io { what, path, source }
    };
    let cni_listener =
        socket::bind(&cfg.cni.socket, 0o660).map_err(io("bind cni socket", &cfg.cni.socket))?;
    let admin_listener = socket::bind(&cfg.admin.socket, 0o600)
        .map_err(io("bind admin socket", &cfg.admin.socket))?;
    let _watcher = if watched.is_empty() {
        None
    } else {
        Some(watch::spawn(registry.clone(), watched)?)
    };

    let poll = Duration::from_millis(cfg.cni.queue_poll_ms.max(50));
    let poller_svc = svc.clone();
    let poller = tokio::spawn(async move {
        loop {
            tokio::time::sleep(poll).await;
            cni::queue::replay(&poller_svc, &queue).await;
        }
    });
    let cni_task = tokio::spawn(cni::server::serve(cni_listener, svc));
    let admin_task = tokio::spawn(admin::serve(admin_listener, registry, trace));
    tracing::info!(cni = %cfg.cni.socket.display(), admin = %cfg.admin.socket.display(), "serving");

    shutdown.await;
    cni_task.abort();
    admin_task.abort();
    poller.abort();
    let _ = std::fs::remove_file(&cfg.cni.socket);
    let _ = std::fs::remove_file(&cfg.admin.socket);
    Ok(())
}
