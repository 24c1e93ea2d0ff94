//! The CSI front door: Identity, Controller and Node on one unix socket (or Identity and Node on
//! kubelet's, Identity and Controller on the sidecars', see [`server::Services`]), served by a
//! storage plugin, plus kubelet's plugin-registration socket.
//!
//! A call goes: gRPC decode → [`ServiceError::Invalid`] checks of required fields (and, for node
//! paths, [`paths`]: under kubelet's directories) → the
//! per-volume [`locks`] (ABORTED) → capability gate (UNIMPLEMENTED) → the plugin, in a fresh
//! instance → for stage and publish, the plugin's mount plan is checked by
//! [`wasmgate_effects::validate_mounts`], recorded, then mounted → one trace record. Failures
//! become a `Status` in [`error`] only.

mod controller;
mod convert;
pub mod error;
mod group_controller;
mod identity;
mod locks;
mod node;
pub mod paths;
pub mod registration;
pub mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::{Response, Status};
use wasmgate_effects::MountEffects;
use wasmgate_engine::bindings::StoragePlugin;
use wasmgate_engine::bindings::csi_types::{
    ControllerCapability, NodeCapability, PluginCapability,
};
use wasmgate_engine::{HostState, Registry};

use crate::state::Records;
use crate::trace::{CallRecord, Trace, now_ms};
pub use error::ServiceError;
use locks::Locks;

/// Everything the three CSI services share.
pub struct CsiService {
    registry: Arc<Registry>,
    plugin: String,
    mounts: Arc<dyn MountEffects>,
    records: Arc<Records>,
    locks: Locks,
    trace: Arc<Trace>,
    /// The host directory the plugin sees as `/data`: bind sources must resolve inside it.
    grant: PathBuf,
    /// Where node RPCs may mount and unmount.
    paths: paths::KubeletPaths,
    caps: Mutex<Option<(u64, Arc<Caps>)>>,
}

/// What the plugin version in use advertises. Asked once per loaded version.
#[derive(Debug, Default)]
pub struct Caps {
    pub plugin: Vec<PluginCapability>,
    pub controller: Vec<ControllerCapability>,
    pub node: Vec<NodeCapability>,
}

type Wasm<R> = wasmgate_engine::wasmtime::Result<R>;

impl CsiService {
    pub fn new(
        registry: Arc<Registry>,
        plugin: String,
        grant: PathBuf,
        kubelet_dir: &std::path::Path,
        mounts: Arc<dyn MountEffects>,
        records: Arc<Records>,
        trace: Arc<Trace>,
    ) -> Self {
        Self {
            paths: paths::KubeletPaths::new(kubelet_dir),
            registry,
            plugin,
            mounts,
            records,
            locks: Locks::default(),
            trace,
            grant,
            caps: Mutex::new(None),
        }
    }

    /// Starts the bookkeeping of one call: its trace record and the plugin version it used.
    fn call(&self, method: &'static str, ids: &[(&str, &str)]) -> Call<'_> {
        Call {
            svc: self,
            method,
            ids: ids
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sha256: None,
            at_ms: now_ms(),
            started: Instant::now(),
        }
    }
}

/// One CSI call in flight.
pub(crate) struct Call<'a> {
    svc: &'a CsiService,
    method: &'static str,
    ids: BTreeMap<String, String>,
    sha256: Option<String>,
    at_ms: u64,
    started: Instant,
}

impl Call<'_> {
    /// Runs `f` on an instance of the current version of the driver.
    async fn plugin<R>(
        &mut self,
        f: impl AsyncFnOnce(&StoragePlugin, &mut wasmgate_engine::wasmtime::Store<HostState>) -> Wasm<R>,
    ) -> Result<R, ServiceError> {
        let plugin = self.svc.registry.get(&self.svc.plugin)?;
        self.sha256 = Some(plugin.info().sha256.clone());
        Ok(plugin.storage(f).await?)
    }

    /// The capabilities of the version in use, asked for once per loaded version.
    async fn caps(&mut self) -> Result<Arc<Caps>, ServiceError> {
        let generation = self.svc.registry.get(&self.svc.plugin)?.info().generation;
        if let Some((g, caps)) = &*self.svc.caps.lock().unwrap_or_else(|p| p.into_inner())
            && *g == generation
        {
            return Ok(caps.clone());
        }
        let caps = self
            .plugin(async |p, store| {
                Ok(Caps {
                    plugin: p
                        .wasmgate_plugin_identity()
                        .call_get_plugin_capabilities(&mut *store)
                        .await?,
                    controller: p
                        .wasmgate_plugin_controller()
                        .call_get_capabilities(&mut *store)
                        .await?,
                    node: p
                        .wasmgate_plugin_node()
                        .call_get_capabilities(&mut *store)
                        .await?,
                })
            })
            .await?;
        let caps = Arc::new(caps);
        *self.svc.caps.lock().unwrap_or_else(|p| p.into_inner()) = Some((generation, caps.clone()));
        Ok(caps)
    }

    /// UNIMPLEMENTED unless the driver advertises the controller service and `cap`.
    async fn require_controller(&mut self, cap: ControllerCapability) -> Result<(), ServiceError> {
        let caps = self.caps().await?;
        if !caps.plugin.contains(&PluginCapability::ControllerService) {
            return Err(ServiceError::Unimplemented(format!(
                "the driver has no controller service, which {} needs",
                self.method
            )));
        }
        if !caps.controller.contains(&cap) {
            return Err(ServiceError::Unimplemented(format!(
                "the driver does not advertise {cap:?}, which {} needs",
                self.method
            )));
        }
        Ok(())
    }

    async fn require_node(&mut self, cap: NodeCapability) -> Result<(), ServiceError> {
        if !self.caps().await?.node.contains(&cap) {
            return Err(ServiceError::Unimplemented(format!(
                "the driver does not advertise {cap:?}, which {} needs",
                self.method
            )));
        }
        Ok(())
    }

    fn lock(&self, keys: &[String]) -> Result<locks::Guard, ServiceError> {
        self.svc.locks.acquire(keys)
    }

    /// Records the call once and turns its outcome into the gRPC answer.
    fn finish<T>(self, out: Result<T, ServiceError>) -> Result<Response<T>, Status> {
        let elapsed = self.started.elapsed();
        let (ok, code, msg) = match &out {
            Ok(_) => (true, None, None),
            Err(e) => (false, Some(e.code() as u32), Some(e.to_string())),
        };
        match &out {
            // kubelet polls (NodeGetVolumeStats, Probe); the trace stream has every call anyway.
            Ok(_) => tracing::debug!(method = self.method, ids = ?self.ids, ?elapsed, "csi ok"),
            Err(e) => {
                tracing::warn!(method = self.method, ids = ?self.ids, ?elapsed, code = ?e.code(), "csi error: {e}")
            }
        }
        self.svc.trace.record(CallRecord {
            at_ms: self.at_ms,
            interface: "csi".into(),
            method: self.method.into(),
            plugin: Some(self.svc.plugin.clone()),
            plugin_sha256: self.sha256,
            network: None,
            container_id: String::new(),
            ifname: String::new(),
            ids: self.ids,
            hooks: Vec::new(),
            upstream_us: None,
            ok,
            code,
            msg,
            elapsed_us: elapsed.as_micros() as u64,
        });
        out.map(Response::new).map_err(Status::from)
    }
}

/// INVALID_ARGUMENT unless `value` is set.
fn required(value: &str, field: &str) -> Result<(), ServiceError> {
    if value.is_empty() {
        return Err(ServiceError::Invalid(format!("{field} is required")));
    }
    Ok(())
}

/// Paths kubelet hands over are absolute; anything else is a confused or hostile caller.
fn required_path(value: &str, field: &str) -> Result<PathBuf, ServiceError> {
    required(value, field)?;
    let p = PathBuf::from(value);
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ServiceError::Invalid(format!(
            "{field} must be an absolute path without '..': {value:?}"
        )));
    }
    // `/a/b/`, `/a//b` and `/a/./b` are one path, so they must be one mount record: otherwise a
    // publish at one spelling and an unpublish at another leaves a stale record behind.
    Ok(p.components().collect())
}

fn volume_key(id: &str) -> String {
    format!("volume {id}")
}
