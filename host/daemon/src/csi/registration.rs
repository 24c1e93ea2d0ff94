//! kubelet's plugin-registration API (`pluginregistration.v1`), served on a socket in kubelet's
//! plugins_registry directory: kubelet's plugin watcher finds it, asks `GetInfo`, and connects
//! to the CSI socket it names. This is the node-driver-registrar sidecar's whole job.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use wasmgate_proto::pluginregistration as pb;

/// The CSI versions kubelet may speak to us, as node-driver-registrar reports them.
const SUPPORTED_VERSIONS: &[&str] = &["1.0.0"];

pub struct Registration {
    driver: String,
    endpoint: PathBuf,
    /// kubelet's last word on the registration: registered, or why not.
    status: Mutex<Option<Result<(), String>>>,
}

impl Registration {
    pub fn new(driver: String, endpoint: PathBuf) -> Self {
        Self {
            driver,
            endpoint,
            status: Mutex::new(None),
        }
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
        let req = req.into_inner();
        let status = if req.plugin_registered {
            tracing::info!(driver = %self.driver, "kubelet registered the driver");
            Ok(())
        } else {
            tracing::error!(driver = %self.driver, error = %req.error, "kubelet refused the driver");
            Err(req.error)
        };
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        Ok(Response::new(pb::RegistrationStatusResponse {}))
    }
}

pub async fn serve(
    listener: UnixListener,
    reg: std::sync::Arc<Registration>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(pb::registration_server::RegistrationServer::from_arc(reg))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}
