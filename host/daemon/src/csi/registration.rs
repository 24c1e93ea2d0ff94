//! kubelet's plugin-registration API (`pluginregistration.v1`), served on a socket in kubelet's
//! plugins_registry directory: kubelet's plugin watcher finds it, asks `GetInfo`, and connects
//! to the CSI socket it names. This is the node-driver-registrar sidecar's whole job.

use std::future::Future;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::{Request, Response, Status};
use wasmgate_proto::pluginregistration as pb;

use crate::grpc::Incoming;
use crate::trace::{CallRecord, Trace, now_ms};

/// The CSI versions kubelet may speak to us, as node-driver-registrar reports them.
const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

pub struct Registration {
    driver: String,
    endpoint: PathBuf,
    /// kubelet's last word on the registration: registered, or why not.
    status: Mutex<Option<Result<(), String>>>,
    trace: Arc<Trace>,
}

impl Registration {
    pub fn new(driver: String, endpoint: PathBuf, trace: Arc<Trace>) -> Self {
        Self {
            driver,
            endpoint,
            status: Mutex::new(None),
            trace,
        }
    }

    /// Each of kubelet's calls is traced like any other: when the driver is missing from
    /// kubelet's list, these records say whether kubelet ever asked, and what it answered.
    fn record(&self, method: &str, started: (u64, Instant), outcome: Result<(), String>) {
        let mut ids = BTreeMap::new();
        ids.insert("driver".to_string(), self.driver.clone());
        self.trace.record(CallRecord {
            ids,
            ok: outcome.is_ok(),
            msg: outcome.err(),
            elapsed_us: started.1.elapsed().as_micros() as u64,
            ..CallRecord::new("registration", method, started.0)
        });
    }

    pub fn status(&self) -> Option<Result<(), String>> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[tonic::async_trait]
impl pb::registration_server::Registration for Registration {
    async fn get_info(
        &self,
        _req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        self.record("GetInfo", (now_ms(), Instant::now()), Ok(()));
        Ok(Response::new(pb::PluginInfo {
            r#type: "CSIPlugin".to_string(),
            name: self.driver.clone(),
            endpoint: self.endpoint.to_string_lossy().into_owned(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }))
    }

    async fn notify_registration_status(
        &self,
        req: Request<pb::RegistrationStatus>,
    ) -> Result<Response<pb::RegistrationStatusResponse>, Status> {
        let started = (now_ms(), Instant::now());
        let req = req.into_inner();
        let status = if req.plugin_registered {
            tracing::info!(driver = %self.driver, "kubelet registered the driver");
            Ok(())
        } else {
            tracing::error!(driver = %self.driver, error = %req.error, "kubelet refused the driver");
            Err(req.error)
        };
        // A refusal is kubelet's, not the call's; it is marked failed so `trace --errors` shows it.
        let outcome = status
            .clone()
            .map_err(|e| format!("kubelet refused the driver: {e}"));
        self.record("NotifyRegistrationStatus", started, outcome);
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        Ok(Response::new(pb::RegistrationStatusResponse {}))
    }
}

pub async fn serve(
    incoming: Incoming,
    reg: Arc<Registration>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .layer(incoming.layer())
        .add_service(pb::registration_server::RegistrationServer::from_arc(reg))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
