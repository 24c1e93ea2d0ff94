//! gRPC clients on a unix socket, as kubelet and the CSI sidecars connect, plus request
//! builders for the common cases.

use std::path::{Path, PathBuf};

use tonic::transport::Channel;
pub use wasmgate_proto::csi::v1 as pb;
use wasmgate_proto::csi::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};

/// A channel to the unix socket at `path` ([`wasmgate_proto::unix_channel`]).
pub async fn channel(path: &Path) -> Channel {
    wasmgate_proto::unix_channel(path)
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

/// What a driver advertises through the socket: its plugin capabilities, and its controller and
/// node RPC capabilities as wire numbers, so that a value this build's schema does not know is
/// seen too.
#[derive(Debug)]
pub struct Advertised {
    pub plugin: Vec<pb::PluginCapability>,
    pub controller: Vec<i32>,
    pub node: Vec<i32>,
}

impl Advertised {
    /// Whether the plugin capabilities name the service `t`.
    pub fn has_service(&self, t: pb::plugin_capability::service::Type) -> bool {
        use pb::plugin_capability::Type;
        self.plugin
            .iter()
            .any(|c| matches!(&c.r#type, Some(Type::Service(s)) if s.r#type == t as i32))
    }
}

/// GetPluginCapabilities, ControllerGetCapabilities and NodeGetCapabilities.
pub async fn advertised(c: &mut Csi) -> Advertised {
    use pb::controller_service_capability::Type as Ctl;
    use pb::node_service_capability::Type as Node;
    let plugin = c
        .identity
        .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
        .await
        .expect("GetPluginCapabilities")
        .into_inner()
        .capabilities;
    let controller = c
        .controller
        .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
        .await
        .expect("ControllerGetCapabilities")
        .into_inner()
        .capabilities
        .into_iter()
        .map(|cap| match cap.r#type {
            Some(Ctl::Rpc(r)) => r.r#type,
            None => panic!("a controller capability without an RPC"),
        })
        .collect();
    let node = c
        .node
        .node_get_capabilities(pb::NodeGetCapabilitiesRequest {})
        .await
        .expect("NodeGetCapabilities")
        .into_inner()
        .capabilities
        .into_iter()
        .map(|cap| match cap.r#type {
            Some(Node::Rpc(r)) => r.r#type,
            None => panic!("a node capability without an RPC"),
        })
        .collect();
    Advertised {
        plugin,
        controller,
        node,
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

/// A volume's staging path (`<kubelet>/plugins/kubernetes.io/csi/<driver>/<hash>/globalmount`,
/// created) and a pod's publish target (`<kubelet>/pods/<uid>/volumes/kubernetes.io~csi/pv/mount`,
/// parent created, target not), under `kubelet` (normally [`crate::Daemon::kubelet_dir`]), as
/// kubelet lays them out.
pub fn pod_paths(kubelet: &Path) -> (PathBuf, PathBuf) {
    let staging = staging_dir(kubelet);
    let target = kubelet
        .join("pods")
        .join(crate::unique("pod-"))
        .join("volumes/kubernetes.io~csi/pv/mount");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    (staging, target)
}

/// Where kubelet stages a volume of the test driver, not created.
pub fn staging_dir(kubelet: &Path) -> PathBuf {
    kubelet
        .join("plugins/kubernetes.io/csi")
        .join(crate::TEST_DRIVER)
        .join(crate::unique("vol-"))
        .join("globalmount")
}

pub fn unpublish_request(volume_id: &str, target: &Path) -> pb::NodeUnpublishVolumeRequest {
    pb::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.to_string_lossy().into_owned(),
    }
}

pub fn unstage_request(volume_id: &str, staging: &Path) -> pb::NodeUnstageVolumeRequest {
    pb::NodeUnstageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging.to_string_lossy().into_owned(),
    }
}

/// Every mount point at or below `dir`, from this process's mountinfo.
pub fn mount_points_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy().replace(' ', "\\040");
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| *mp == dir || mp.starts_with(&prefix))
        .map(String::from)
        .collect()
}

/// How many mounts are stacked on `path` now, from this process's mountinfo: 1 after any number
/// of idempotent stage or publish calls, 0 after unstage or unpublish.
pub fn mount_count(path: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|mp| mp == want))
        .count()
}

/// Asserts that `r` failed with `code` and returns the status.
pub fn expect_code<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
) -> tonic::Status {
    match r {
        Ok(resp) => panic!("expected {code:?}, got OK: {:?}", resp.into_inner()),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected error: {}", s.message());
            s
        }
    }
}

/// Asserts that a status message is worded as the project words errors: non-empty and led by a
/// lower-case letter.
pub fn assert_message_style(s: &tonic::Status) {
    let first = s.message().chars().next();
    assert!(
        first.is_some_and(|c| c.is_lowercase()),
        "{:?}: the message must be non-empty and start with a lower-case letter: {:?}",
        s.code(),
        s.message()
    );
}
