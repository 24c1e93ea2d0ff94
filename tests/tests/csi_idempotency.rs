//! Beyond csi-sanity, against the real daemon and the example driver (`plugins/rust/hostpath-csi`):
//!
//! - **idempotency of every RPC**: each RPC the driver serves is called twice with identical
//!   requests; the second answer must equal the first (or be OK for the void ones), and the host
//!   state (mount points, directories) must be what one call leaves;
//! - **every error code named**: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
//!   OUT_OF_RANGE, RESOURCE_EXHAUSTED, ABORTED and UNIMPLEMENTED, each with the exact code and a
//!   message that is non-empty and led by a lower-case letter;
//! - **names of exactly 128 characters**, ASCII and multi-byte, end to end.
//!
//! Each test starts its own daemon (about 0.3 s), with its paths under the daemon's temp dir.

use std::path::PathBuf;
use std::time::Duration;

use tonic::{Code, Response, Status};
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{Daemon, TEST_NODE};

use pb::volume_capability::access_mode::Mode;

const GIB: i64 = 1 << 30;
const ATTACH: &str = r#"config = { attach-required = "true" }"#;
/// The opt-in to the alpha GetSnapshot (controller capability GET_SNAPSHOT).
const GET_SNAPSHOT: &str = r#"config = { alpha-capabilities = "get-snapshot" }"#;

fn ok<T>(r: Result<Response<T>, Status>, what: &str) -> T {
    match r {
        Ok(r) => r.into_inner(),
        Err(s) => panic!("{what}: {:?}: {}", s.code(), s.message()),
    }
}

/// Calls `$call` (an expression yielding the RPC's future) twice and asserts that both answers
/// are OK and equal; returns the answer.
macro_rules! twice {
    ($what:expr, $call:expr) => {{
        let first = ok($call.await, $what);
        let second = ok($call.await, concat!($what, " (second call)"));
        assert_eq!(first, second, "{}: the second answer differs", $what);
        first
    }};
}

/// Asserts the code and the message style of a failed call.
fn expect(r: Result<Response<impl std::fmt::Debug>, Status>, code: Code) -> Status {
    let s = csi::expect_code(r, code);
    csi::assert_message_style(&s);
    s
}

struct Node {
    d: Daemon,
    c: Csi,
    staging: PathBuf,
    target: PathBuf,
}

impl Node {
    async fn start(extra: &str) -> Self {
        let d = Daemon::start_csi(extra);
        let c = Csi::connect(&d.csi_socket()).await;
        let (staging, target) = csi::pod_paths(&d.kubelet_dir());
        Self {
            d,
            c,
            staging,
            target,
        }
    }

    fn volume_dir(&self, id: &str) -> PathBuf {
        self.d.csi_data().join("volumes").join(id)
    }

    fn entries(&self, kind: &str) -> usize {
        std::fs::read_dir(self.d.csi_data().join(kind))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    async fn create(&mut self, name: &str, bytes: i64) -> pb::Volume {
        ok(
            self.c
                .controller
                .create_volume(csi::create_request(name, bytes))
                .await,
            "CreateVolume",
        )
        .volume
        .unwrap()
    }

    async fn stage(&mut self, id: &str) {
        ok(
            self.c
                .node
                .node_stage_volume(csi::stage_request(id, &self.staging))
                .await,
            "NodeStageVolume",
        );
    }

    async fn publish(&mut self, id: &str) {
        ok(
            self.c
                .node
                .node_publish_volume(csi::publish_request(
                    id,
                    Some(&self.staging),
                    &self.target,
                    false,
                ))
                .await,
            "NodePublishVolume",
        );
    }

    async fn unpublish(&mut self, id: &str) {
        ok(
            self.c
                .node
                .node_unpublish_volume(csi::unpublish_request(id, &self.target))
                .await,
            "NodeUnpublishVolume",
        );
    }

    async fn unstage(&mut self, id: &str) {
        ok(
            self.c
                .node
                .node_unstage_volume(csi::unstage_request(id, &self.staging))
                .await,
            "NodeUnstageVolume",
        );
    }

    async fn delete(&mut self, id: &str) {
        ok(
            self.c
                .controller
                .delete_volume(pb::DeleteVolumeRequest {
                    volume_id: id.into(),
                    ..Default::default()
                })
                .await,
            "DeleteVolume",
        );
    }

    async fn list(&mut self) -> Vec<pb::Volume> {
        ok(
            self.c
                .controller
                .list_volumes(pb::ListVolumesRequest::default())
                .await,
            "ListVolumes",
        )
        .entries
        .into_iter()
        .map(|e| e.volume.unwrap())
        .collect()
    }

    async fn snapshot(&mut self, name: &str, source: &str) -> pb::Snapshot {
        ok(
            self.c
                .controller
                .create_snapshot(snapshot_request(name, source))
                .await,
            "CreateSnapshot",
        )
        .snapshot
        .unwrap()
    }

    /// Nothing may stay mounted once a test is done.
    fn assert_no_mounts(&self) {
        let left = csi::mount_points_under(&self.d.dir);
        assert!(left.is_empty(), "mounts left behind: {left:?}");
    }
}

fn snapshot_request(name: &str, source: &str) -> pb::CreateSnapshotRequest {
    pb::CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    }
}

fn expand_request(id: &str, bytes: i64) -> pb::ControllerExpandVolumeRequest {
    pb::ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: Some(pb::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Idempotency: Identity

#[tokio::test]
async fn idempotent_identity_get_plugin_info_get_plugin_capabilities_probe() {
    let mut n = Node::start("").await;
    let info = twice!(
        "GetPluginInfo",
        n.c.identity.get_plugin_info(pb::GetPluginInfoRequest {})
    );
    assert_eq!(info.name, wasmgate_tests::TEST_DRIVER);
    let caps = twice!(
        "GetPluginCapabilities",
        n.c.identity
            .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
    );
    assert_eq!(caps.capabilities.len(), 2, "{caps:?}");
    let probe = twice!("Probe", n.c.identity.probe(pb::ProbeRequest {}));
    assert_eq!(probe.ready, Some(true));
}

// ---------------------------------------------------------------------------------------------
// Idempotency: Controller

#[tokio::test]
async fn idempotent_controller_create_volume() {
    let mut n = Node::start("").await;
    let req = csi::create_request("pvc-twice", 64 << 20);
    let resp = twice!("CreateVolume", n.c.controller.create_volume(req.clone()));
    let vol = resp.volume.unwrap();
    assert_eq!(vol.capacity_bytes, 64 << 20);
    assert!(n.volume_dir(&vol.volume_id).is_dir());
    assert_eq!(n.entries("volumes"), 1, "one directory for one volume");
    assert_eq!(n.list().await, vec![vol]);
}

#[tokio::test]
async fn idempotent_controller_delete_volume() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-delete-twice", 0).await;
    let req = pb::DeleteVolumeRequest {
        volume_id: vol.volume_id.clone(),
        ..Default::default()
    };
    twice!("DeleteVolume", n.c.controller.delete_volume(req.clone()));
    assert!(!n.volume_dir(&vol.volume_id).exists());
    assert_eq!(n.entries("volumes"), 0);
    assert!(n.list().await.is_empty());
    // The name is free again: a new create makes a new volume.
    let again = n.create("pvc-delete-twice", 0).await;
    assert_ne!(again.volume_id, vol.volume_id);
}

#[tokio::test]
async fn idempotent_controller_validate_volume_capabilities() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-validate", 0).await;
    let req = pb::ValidateVolumeCapabilitiesRequest {
        volume_id: vol.volume_id,
        volume_capabilities: vec![csi::rwo(), csi::mount_cap(Mode::SingleNodeReaderOnly)],
        ..Default::default()
    };
    let r = twice!(
        "ValidateVolumeCapabilities",
        n.c.controller.validate_volume_capabilities(req.clone())
    );
    assert_eq!(
        r.confirmed.unwrap().volume_capabilities,
        req.volume_capabilities
    );
}

#[tokio::test]
async fn idempotent_controller_list_volumes() {
    let mut n = Node::start("").await;
    for i in 0..3 {
        n.create(&format!("pvc-list-{i}"), 0).await;
    }
    let all = twice!(
        "ListVolumes",
        n.c.controller
            .list_volumes(pb::ListVolumesRequest::default())
    );
    assert_eq!(all.entries.len(), 3);
    assert!(all.next_token.is_empty());
    let page = pb::ListVolumesRequest {
        max_entries: 2,
        ..Default::default()
    };
    let first = twice!(
        "ListVolumes (page)",
        n.c.controller.list_volumes(page.clone())
    );
    assert_eq!(first.entries.len(), 2);
    let rest = pb::ListVolumesRequest {
        starting_token: first.next_token.clone(),
        ..Default::default()
    };
    let second = twice!(
        "ListVolumes (next page)",
        n.c.controller.list_volumes(rest.clone())
    );
    assert_eq!(second.entries.len(), 1);
}

#[tokio::test]
async fn idempotent_controller_get_capacity() {
    let mut n = Node::start(r#"config = { capacity-bytes = "10Gi" }"#).await;
    n.create("pvc-capacity", 2 * GIB).await;
    let c = twice!(
        "GetCapacity",
        n.c.controller.get_capacity(pb::GetCapacityRequest {
            volume_capabilities: vec![csi::rwo()],
            ..Default::default()
        })
    );
    assert_eq!(c.available_capacity, 8 * GIB);
    assert_eq!(c.maximum_volume_size, Some(8 * GIB));
}

#[tokio::test]
async fn idempotent_controller_get_capabilities() {
    let mut n = Node::start("").await;
    let caps = twice!(
        "ControllerGetCapabilities",
        n.c.controller
            .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
    );
    assert_eq!(caps.capabilities.len(), 9, "{caps:?}");
}

#[tokio::test]
async fn idempotent_controller_create_snapshot() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-snap-source", 0).await;
    let req = snapshot_request("snap-twice", &vol.volume_id);
    let r = twice!(
        "CreateSnapshot",
        n.c.controller.create_snapshot(req.clone())
    );
    let snap = r.snapshot.unwrap();
    assert_eq!(snap.source_volume_id, vol.volume_id);
    assert!(snap.ready_to_use);
    assert_eq!(n.entries("snapshots"), 1, "one copy for one snapshot");
    assert!(
        n.d.csi_data()
            .join("snapshots")
            .join(&snap.snapshot_id)
            .is_dir()
    );
}

#[tokio::test]
async fn idempotent_controller_delete_snapshot() {
    let mut n = Node::start(GET_SNAPSHOT).await;
    let vol = n.create("pvc-snap-delete", 0).await;
    let snap = n.snapshot("snap-delete-twice", &vol.volume_id).await;
    let req = pb::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    };
    twice!(
        "DeleteSnapshot",
        n.c.controller.delete_snapshot(req.clone())
    );
    assert_eq!(n.entries("snapshots"), 0);
    let r =
        n.c.controller
            .get_snapshot(pb::GetSnapshotRequest {
                snapshot_id: snap.snapshot_id,
                ..Default::default()
            })
            .await;
    expect(r, Code::NotFound);
}

#[tokio::test]
async fn idempotent_controller_list_snapshots_and_get_snapshot() {
    let mut n = Node::start(GET_SNAPSHOT).await;
    let vol = n.create("pvc-snap-list", 0).await;
    let a = n.snapshot("snap-a", &vol.volume_id).await;
    n.snapshot("snap-b", &vol.volume_id).await;
    let all = twice!(
        "ListSnapshots",
        n.c.controller
            .list_snapshots(pb::ListSnapshotsRequest::default())
    );
    assert_eq!(all.entries.len(), 2);
    let by_source = twice!(
        "ListSnapshots (by source)",
        n.c.controller.list_snapshots(pb::ListSnapshotsRequest {
            source_volume_id: vol.volume_id.clone(),
            ..Default::default()
        })
    );
    assert_eq!(by_source, all);
    let got = twice!(
        "GetSnapshot",
        n.c.controller.get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: a.snapshot_id.clone(),
            ..Default::default()
        })
    );
    assert_eq!(got.snapshot, Some(a));
}

#[tokio::test]
async fn idempotent_controller_expand_volume() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-expand", GIB).await;
    let r = twice!(
        "ControllerExpandVolume",
        n.c.controller
            .controller_expand_volume(expand_request(&vol.volume_id, 2 * GIB))
    );
    assert_eq!(r.capacity_bytes, 2 * GIB);
    assert!(!r.node_expansion_required);
    let listed = n.list().await;
    assert_eq!(listed[0].capacity_bytes, 2 * GIB);
}

#[tokio::test]
async fn idempotent_controller_get_volume() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-get", 0).await;
    let r = twice!(
        "ControllerGetVolume",
        n.c.controller
            .controller_get_volume(pb::ControllerGetVolumeRequest {
                volume_id: vol.volume_id.clone(),
            })
    );
    assert_eq!(r.volume, Some(vol));
    let condition = r.status.unwrap().volume_condition.unwrap();
    assert!(!condition.abnormal, "{condition:?}");
}

#[tokio::test]
async fn idempotent_controller_publish_and_unpublish_volume() {
    let mut n = Node::start(ATTACH).await;
    let vol = n.create("pvc-attach", 0).await;
    let publish = pb::ControllerPublishVolumeRequest {
        volume_id: vol.volume_id.clone(),
        node_id: TEST_NODE.into(),
        volume_capability: Some(csi::rwo()),
        ..Default::default()
    };
    twice!(
        "ControllerPublishVolume",
        n.c.controller.controller_publish_volume(publish.clone())
    );
    let get = pb::ControllerGetVolumeRequest {
        volume_id: vol.volume_id.clone(),
    };
    let status = ok(
        n.c.controller.controller_get_volume(get.clone()).await,
        "get",
    )
    .status
    .unwrap();
    assert_eq!(status.published_node_ids, vec![TEST_NODE.to_string()]);
    let unpublish = pb::ControllerUnpublishVolumeRequest {
        volume_id: vol.volume_id.clone(),
        node_id: TEST_NODE.into(),
        ..Default::default()
    };
    twice!(
        "ControllerUnpublishVolume",
        n.c.controller
            .controller_unpublish_volume(unpublish.clone())
    );
    let status = ok(n.c.controller.controller_get_volume(get).await, "get")
        .status
        .unwrap();
    assert!(status.published_node_ids.is_empty(), "{status:?}");
}

// ---------------------------------------------------------------------------------------------
// Idempotency: Node

#[tokio::test]
async fn idempotent_node_stage_volume() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-stage", 0).await;
    std::fs::write(n.volume_dir(&vol.volume_id).join("f"), "x").unwrap();
    let req = csi::stage_request(&vol.volume_id, &n.staging);
    twice!("NodeStageVolume", n.c.node.node_stage_volume(req.clone()));
    assert_eq!(
        csi::mount_count(&n.staging),
        1,
        "one mount, not two stacked"
    );
    assert_eq!(std::fs::read_to_string(n.staging.join("f")).unwrap(), "x");
    n.unstage(&vol.volume_id).await;
    n.assert_no_mounts();
}

#[tokio::test]
async fn idempotent_node_unstage_volume() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-unstage", 0).await;
    n.stage(&vol.volume_id).await;
    let req = csi::unstage_request(&vol.volume_id, &n.staging);
    twice!(
        "NodeUnstageVolume",
        n.c.node.node_unstage_volume(req.clone())
    );
    assert!(!csi::is_mount_point(&n.staging));
    assert!(n.staging.is_dir(), "kubelet's staging directory stays");
    // Unstaged for the driver too: the volume can be deleted now.
    n.delete(&vol.volume_id).await;
    n.assert_no_mounts();
}

#[tokio::test]
async fn idempotent_node_publish_volume() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-publish", 0).await;
    n.stage(&vol.volume_id).await;
    let req = csi::publish_request(&vol.volume_id, Some(&n.staging), &n.target, false);
    twice!(
        "NodePublishVolume",
        n.c.node.node_publish_volume(req.clone())
    );
    assert_eq!(csi::mount_count(&n.target), 1, "one mount, not two stacked");
    std::fs::write(n.target.join("g"), "y").unwrap();
    assert_eq!(
        std::fs::read_to_string(n.volume_dir(&vol.volume_id).join("g")).unwrap(),
        "y"
    );
    n.unpublish(&vol.volume_id).await;
    n.unstage(&vol.volume_id).await;
    n.assert_no_mounts();
}

#[tokio::test]
async fn idempotent_node_unpublish_volume() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-unpublish", 0).await;
    n.stage(&vol.volume_id).await;
    n.publish(&vol.volume_id).await;
    let req = csi::unpublish_request(&vol.volume_id, &n.target);
    twice!(
        "NodeUnpublishVolume",
        n.c.node.node_unpublish_volume(req.clone())
    );
    assert!(
        !n.target.exists(),
        "the target goes with the last unpublish"
    );
    assert!(csi::is_mount_point(&n.staging), "the staging mount stays");
    n.unstage(&vol.volume_id).await;
    n.assert_no_mounts();
}

#[tokio::test]
async fn idempotent_node_get_volume_stats() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-stats", 0).await;
    n.stage(&vol.volume_id).await;
    n.publish(&vol.volume_id).await;
    let req = pb::NodeGetVolumeStatsRequest {
        volume_id: vol.volume_id.clone(),
        volume_path: n.target.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let a = ok(n.c.node.node_get_volume_stats(req.clone()).await, "stats");
    let b = ok(n.c.node.node_get_volume_stats(req).await, "stats (second)");
    // Used and available space move with whatever else writes to this filesystem (other tests
    // run in parallel); the condition, the units and the totals may not.
    assert_eq!(a.volume_condition, b.volume_condition);
    assert!(!a.volume_condition.as_ref().unwrap().abnormal);
    let shape = |r: &pb::NodeGetVolumeStatsResponse| {
        r.usage
            .iter()
            .map(|u| (u.unit, u.total))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&a), shape(&b));
    assert_eq!(a.usage.len(), 2);
    n.unpublish(&vol.volume_id).await;
    n.unstage(&vol.volume_id).await;
    n.assert_no_mounts();
}

#[tokio::test]
async fn idempotent_node_expand_volume() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-node-expand", GIB).await;
    n.stage(&vol.volume_id).await;
    n.publish(&vol.volume_id).await;
    let req = pb::NodeExpandVolumeRequest {
        volume_id: vol.volume_id.clone(),
        volume_path: n.target.to_string_lossy().into_owned(),
        capacity_range: Some(pb::CapacityRange {
            required_bytes: 3 * GIB,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let r = twice!("NodeExpandVolume", n.c.node.node_expand_volume(req.clone()));
    assert_eq!(r.capacity_bytes, 3 * GIB);
    assert_eq!(n.list().await[0].capacity_bytes, 3 * GIB);
    n.unpublish(&vol.volume_id).await;
    n.unstage(&vol.volume_id).await;
    n.assert_no_mounts();
}

#[tokio::test]
async fn idempotent_node_get_capabilities_and_get_info() {
    let mut n = Node::start("").await;
    let caps = twice!(
        "NodeGetCapabilities",
        n.c.node
            .node_get_capabilities(pb::NodeGetCapabilitiesRequest {})
    );
    assert_eq!(caps.capabilities.len(), 4, "{caps:?}");
    let info = twice!(
        "NodeGetInfo",
        n.c.node.node_get_info(pb::NodeGetInfoRequest {})
    );
    assert_eq!(info.node_id, TEST_NODE);
}

// ---------------------------------------------------------------------------------------------
// Every error code named

#[tokio::test]
async fn error_invalid_argument() {
    let mut n = Node::start("").await;
    // From the host's checks, before any plugin runs ...
    let r =
        n.c.controller
            .create_volume(pb::CreateVolumeRequest::default())
            .await;
    let s = expect(r, Code::InvalidArgument);
    assert!(s.message().contains("name"), "{s:?}");
    let r =
        n.c.node
            .node_publish_volume(pb::NodePublishVolumeRequest {
                volume_id: "v".into(),
                target_path: "relative/target".into(),
                volume_capability: Some(csi::rwo()),
                ..Default::default()
            })
            .await;
    expect(r, Code::InvalidArgument);
    // ... and from the driver: block access.
    let vol = n.create("pvc-invalid", 0).await;
    let mut req = csi::stage_request(&vol.volume_id, &n.staging);
    req.volume_capability = Some(pb::VolumeCapability {
        access_type: Some(pb::volume_capability::AccessType::Block(
            pb::volume_capability::BlockVolume {},
        )),
        access_mode: Some(pb::volume_capability::AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    });
    let s = expect(n.c.node.node_stage_volume(req).await, Code::InvalidArgument);
    assert!(s.message().contains("block"), "{s:?}");
    assert!(!csi::is_mount_point(&n.staging));
}

#[tokio::test]
async fn error_not_found() {
    let mut n = Node::start("").await;
    let r =
        n.c.controller
            .validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
                volume_id: "vol-000000000999".into(),
                volume_capabilities: vec![csi::rwo()],
                ..Default::default()
            })
            .await;
    let s = expect(r, Code::NotFound);
    assert!(s.message().contains("vol-000000000999"), "{s:?}");
    let r =
        n.c.node
            .node_stage_volume(csi::stage_request("vol-000000000999", &n.staging))
            .await;
    expect(r, Code::NotFound);
    // A staging path that holds another volume: unstaging the wrong volume there is NOT_FOUND,
    // and the other volume's mount stays.
    let a = n.create("pvc-a", 0).await;
    let b = n.create("pvc-b", 0).await;
    n.stage(&a.volume_id).await;
    let r =
        n.c.node
            .node_unstage_volume(csi::unstage_request(&b.volume_id, &n.staging))
            .await;
    let s = expect(r, Code::NotFound);
    assert!(s.message().contains(&a.volume_id), "{s:?}");
    assert!(
        csi::is_mount_point(&n.staging),
        "volume a's staging mount must stay"
    );
    n.unstage(&a.volume_id).await;
    n.assert_no_mounts();
}

#[tokio::test]
async fn error_already_exists() {
    let mut n = Node::start("").await;
    n.create("pvc-exists", GIB).await;
    let r =
        n.c.controller
            .create_volume(csi::create_request("pvc-exists", 2 * GIB))
            .await;
    let s = expect(r, Code::AlreadyExists);
    assert!(s.message().contains("pvc-exists"), "{s:?}");
    let v1 = n.create("pvc-snap-1", 0).await;
    let v2 = n.create("pvc-snap-2", 0).await;
    n.snapshot("snap-exists", &v1.volume_id).await;
    let r =
        n.c.controller
            .create_snapshot(snapshot_request("snap-exists", &v2.volume_id))
            .await;
    expect(r, Code::AlreadyExists);
}

#[tokio::test]
async fn error_failed_precondition() {
    let mut n = Node::start("").await;
    let vol = n.create("pvc-in-use", 0).await;
    // Publishing from a staging path the volume is not staged at (the host's check).
    let r =
        n.c.node
            .node_publish_volume(csi::publish_request(
                &vol.volume_id,
                Some(&n.staging),
                &n.target,
                false,
            ))
            .await;
    let s = expect(r, Code::FailedPrecondition);
    assert!(s.message().contains("not staged"), "{s:?}");
    assert!(!n.target.exists());
    // Deleting a volume that is still staged (the driver's check).
    n.stage(&vol.volume_id).await;
    let r =
        n.c.controller
            .delete_volume(pb::DeleteVolumeRequest {
                volume_id: vol.volume_id.clone(),
                ..Default::default()
            })
            .await;
    let s = expect(r, Code::FailedPrecondition);
    assert!(s.message().contains("staged at"), "{s:?}");
    assert!(n.volume_dir(&vol.volume_id).is_dir(), "nothing deleted");
    n.unstage(&vol.volume_id).await;
    n.delete(&vol.volume_id).await;
    n.assert_no_mounts();
}

#[tokio::test]
async fn error_out_of_range() {
    let mut n = Node::start(r#"config = { max-volume-bytes = "1Gi" }"#).await;
    let r =
        n.c.controller
            .create_volume(csi::create_request("pvc-too-big", 2 * GIB))
            .await;
    expect(r, Code::OutOfRange);
    let vol = n.create("pvc-fits", GIB).await;
    let r =
        n.c.controller
            .controller_expand_volume(expand_request(&vol.volume_id, 2 * GIB))
            .await;
    expect(r, Code::OutOfRange);
}

#[tokio::test]
async fn error_resource_exhausted() {
    let mut n = Node::start(r#"config = { capacity-bytes = "2Gi" }"#).await;
    n.create("pvc-first", 2 * GIB).await;
    let r =
        n.c.controller
            .create_volume(csi::create_request("pvc-second", GIB))
            .await;
    let s = expect(r, Code::ResourceExhausted);
    assert!(s.message().contains("capacity"), "{s:?}");
    assert_eq!(n.entries("volumes"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_aborted_for_overlapping_calls_on_one_volume() {
    let mut n = Node::start(r#"config = { latency-ms = "500" }"#).await;
    let vol = n.create("pvc-busy", GIB).await;
    // Two expansions of the same volume at once: the first holds the volume for 500 ms.
    let (mut c1, mut c2) = (n.c.controller.clone(), n.c.controller.clone());
    let (a, b) = tokio::join!(
        c1.controller_expand_volume(expand_request(&vol.volume_id, 2 * GIB)),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.controller_expand_volume(expand_request(&vol.volume_id, 2 * GIB))
                .await
        }
    );
    let (done, refused) = match (a, b) {
        (Ok(done), Err(refused)) | (Err(refused), Ok(done)) => (done, refused),
        (a, b) => panic!("exactly one call must get ABORTED: {a:?} / {b:?}"),
    };
    assert_eq!(done.into_inner().capacity_bytes, 2 * GIB);
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    csi::assert_message_style(&refused);
    assert!(refused.message().contains(&vol.volume_id), "{refused:?}");
    // Two creates of the same name at once: the name is the lock.
    let (mut c1, mut c2) = (n.c.controller.clone(), n.c.controller.clone());
    let (a, b) = tokio::join!(
        c1.create_volume(csi::create_request("pvc-race", GIB)),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c2.create_volume(csi::create_request("pvc-race", GIB)).await
        }
    );
    let refused = match (a, b) {
        (Ok(_), Err(refused)) | (Err(refused), Ok(_)) => refused,
        (a, b) => panic!("exactly one create must get ABORTED: {a:?} / {b:?}"),
    };
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    csi::assert_message_style(&refused);
    // The retry the CO makes then succeeds, with the volume the first call made.
    assert_eq!(n.list().await.len(), 2);
    n.create("pvc-race", GIB).await;
    assert_eq!(n.list().await.len(), 2);
}

#[tokio::test]
async fn error_unimplemented() {
    let mut n = Node::start("").await;
    // ControllerPublishVolume without attach-required.
    let vol = n.create("pvc-no-attach", 0).await;
    let r =
        n.c.controller
            .controller_publish_volume(pb::ControllerPublishVolumeRequest {
                volume_id: vol.volume_id.clone(),
                node_id: TEST_NODE.into(),
                volume_capability: Some(csi::rwo()),
                ..Default::default()
            })
            .await;
    let s = expect(r, Code::Unimplemented);
    assert!(s.message().contains("ControllerPublishVolume"), "{s:?}");
    let r =
        n.c.controller
            .controller_unpublish_volume(pb::ControllerUnpublishVolumeRequest {
                volume_id: vol.volume_id.clone(),
                node_id: TEST_NODE.into(),
                ..Default::default()
            })
            .await;
    expect(r, Code::Unimplemented);
    // ControllerModifyVolume: MODIFY_VOLUME is not advertised.
    let r =
        n.c.controller
            .controller_modify_volume(pb::ControllerModifyVolumeRequest {
                volume_id: vol.volume_id.clone(),
                mutable_parameters: [("iops".to_string(), "100".to_string())].into(),
                ..Default::default()
            })
            .await;
    let s = expect(r, Code::Unimplemented);
    assert!(s.message().contains("ControllerModifyVolume"), "{s:?}");
    // GroupController: a service the host does not offer.
    use pb::group_controller_client::GroupControllerClient;
    let mut g = GroupControllerClient::new(csi::channel(&n.d.csi_socket()).await);
    expect(
        g.group_controller_get_capabilities(pb::GroupControllerGetCapabilitiesRequest {})
            .await,
        Code::Unimplemented,
    );
    expect(
        g.create_volume_group_snapshot(pb::CreateVolumeGroupSnapshotRequest {
            name: "group".into(),
            source_volume_ids: vec![vol.volume_id.clone()],
            ..Default::default()
        })
        .await,
        Code::Unimplemented,
    );
    expect(
        g.get_volume_group_snapshot(pb::GetVolumeGroupSnapshotRequest {
            group_snapshot_id: "g".into(),
            ..Default::default()
        })
        .await,
        Code::Unimplemented,
    );
    expect(
        g.delete_volume_group_snapshot(pb::DeleteVolumeGroupSnapshotRequest {
            group_snapshot_id: "g".into(),
            ..Default::default()
        })
        .await,
        Code::Unimplemented,
    );
    // The volume is untouched by all that.
    assert_eq!(n.list().await, vec![vol]);
}

// ---------------------------------------------------------------------------------------------
// Names of exactly 128 characters

#[tokio::test]
async fn volume_and_snapshot_names_of_128_characters_work_end_to_end() {
    let mut n = Node::start("").await;
    let names = [
        "a".repeat(128),
        "ü".repeat(128),                               // 2 bytes each
        "名".repeat(128),                              // 3 bytes each
        "𝄞".repeat(128),                               // 4 bytes each
        "a/b%2F ü名𝄞.-_~".repeat(8) + &"x".repeat(16), // separators, escapes, widths
    ];
    for name in &names {
        assert_eq!(name.chars().count(), 128, "{name}");
        let req = csi::create_request(name, 0);
        let vol = twice!("CreateVolume", n.c.controller.create_volume(req.clone()))
            .volume
            .unwrap();
        let listed = n.list().await;
        assert!(
            listed.iter().any(|v| v.volume_id == vol.volume_id),
            "{name}: {} not listed",
            vol.volume_id
        );
        ok(
            n.c.controller
                .controller_get_volume(pb::ControllerGetVolumeRequest {
                    volume_id: vol.volume_id.clone(),
                })
                .await,
            "ControllerGetVolume",
        );
        let snap = twice!(
            "CreateSnapshot",
            n.c.controller
                .create_snapshot(snapshot_request(name, &vol.volume_id))
        )
        .snapshot
        .unwrap();
        ok(
            n.c.controller
                .delete_snapshot(pb::DeleteSnapshotRequest {
                    snapshot_id: snap.snapshot_id,
                    ..Default::default()
                })
                .await,
            "DeleteSnapshot",
        );
        n.delete(&vol.volume_id).await;
        assert!(
            !n.list().await.iter().any(|v| v.volume_id == vol.volume_id),
            "{name}: still listed after delete"
        );
    }
    // Every name was distinct: after all the deletes nothing is left.
    assert_eq!(n.entries("volumes"), 0);
    assert_eq!(n.entries("snapshots"), 0);
}
