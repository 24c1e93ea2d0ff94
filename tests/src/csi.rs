//! gRPC clients on a unix socket, as kubelet and the CSI sidecars connect, plus request
//! builders for the common cases.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
pub use wasmgate_proto::csi::v1 as pb;
use wasmgate_proto::csi::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};

/// A channel to the unix socket at `path` (the URI is a placeholder tonic requires).
pub async fn channel(path: &Path) -> Channel {
    let path: PathBuf = path.to_path_buf();
    Endpoint::try_from("http://[::1]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connect to the csi socket")
}

/// The three CSI clients on one connection.
#[derive(Clone)]
pub struct Csi {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl Csi {
    pub async fn connect(path: &Path) -> Self {
        let ch = channel(path).await;
        Self {
            identity: IdentityClient::new(ch.clone()),
            controller: ControllerClient::new(ch.clone()),
            node: NodeClient::new(ch),
        }
    }
}

/// A mount-type capability with `mode`.
pub fn mount_cap(mode: pb::volume_capability::access_mode::Mode) -> pb::VolumeCapability {
    pb::VolumeCapability {
        access_type: Some(pb::volume_capability::AccessType::Mount(
            pb::volume_capability::MountVolume::default(),
        )),
        access_mode: Some(pb::volume_capability::AccessMode { mode: mode as i32 }),
    }
}

/// The capability kubelet uses for an ordinary ReadWriteOnce filesystem volume.
pub fn rwo() -> pb::VolumeCapability {
    mount_cap(pb::volume_capability::access_mode::Mode::SingleNodeWriter)
}

pub fn create_request(name: &str, bytes: i64) -> pb::CreateVolumeRequest {
    pb::CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: (bytes > 0).then_some(pb::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rwo()],
        ..Default::default()
    }
}

pub fn stage_request(volume_id: &str, staging: &Path) -> pb::NodeStageVolumeRequest {
    pb::NodeStageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging.to_string_lossy().into_owned(),
        volume_capability: Some(rwo()),
        ..Default::default()
    }
}

pub fn publish_request(
    volume_id: &str,
    staging: Option<&Path>,
    target: &Path,
    readonly: bool,
) -> pb::NodePublishVolumeRequest {
    pb::NodePublishVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        target_path: target.to_string_lossy().into_owned(),
        volume_capability: Some(rwo()),
        readonly,
        ..Default::default()
    }
}

/// Whether `path` is a mount point now, from this process's mountinfo.
pub fn is_mount_point(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| mp == want))
}
