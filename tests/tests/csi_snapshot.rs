//! Snapshot and restore, and clone, through real mounts: files written through a published target
//! are what a volume made from the snapshot (or cloned from the volume) shows at its own target.

use std::collections::BTreeMap;
use std::path::Path;

use tonic::Code;
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{Daemon, unique};

/// Every regular file under `root`, by relative path, with its content; directories end in `/`.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(root, &e.path(), out);
            } else {
                out.insert(rel, std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn source_snapshot(id: &str) -> pb::VolumeContentSource {
    pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Snapshot(
            pb::volume_content_source::SnapshotSource {
                snapshot_id: id.to_string(),
            },
        )),
    }
}

fn source_volume(id: &str) -> pb::VolumeContentSource {
    pb::VolumeContentSource {
        r#type: Some(pb::volume_content_source::Type::Volume(
            pb::volume_content_source::VolumeSource {
                volume_id: id.to_string(),
            },
        )),
    }
}

async fn create_from(
    c: &mut Csi,
    name: &str,
    source: Option<pb::VolumeContentSource>,
) -> Result<pb::Volume, tonic::Status> {
    let mut req = csi::create_request(name, 64 << 20);
    req.volume_content_source = source;
    c.controller
        .create_volume(req)
        .await
        .map(|r| r.into_inner().volume.unwrap())
}

async fn snapshot(c: &mut Csi, name: &str, source: &str) -> pb::Snapshot {
    c.controller
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: source.to_string(),
            name: name.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
}

/// Publishes `vol` (without staging) at a fresh target under the daemon dir.
async fn publish(c: &mut Csi, d: &Daemon, vol: &str) -> std::path::PathBuf {
    let (_, target) = csi::pod_paths(&d.kubelet_dir());
    c.node
        .node_publish_volume(csi::publish_request(vol, None, &target, false))
        .await
        .unwrap();
    assert!(csi::is_mount_point(&target));
    target
}

async fn unpublish(c: &mut Csi, vol: &str, target: &Path) {
    c.node
        .node_unpublish_volume(csi::unpublish_request(vol, target))
        .await
        .unwrap();
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restore_and_clone_round_trip() {
    let d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let src = create_from(&mut c, "pvc-src", None).await.unwrap();
    let t1 = publish(&mut c, &d, &src.volume_id).await;

    // Snapshot-time content: nested directories, an empty one, a few files.
    std::fs::create_dir_all(t1.join("a/b/c")).unwrap();
    std::fs::create_dir_all(t1.join("empty")).unwrap();
    std::fs::write(t1.join("top.txt"), "top v1").unwrap();
    std::fs::write(t1.join("a/one.txt"), "one v1").unwrap();
    std::fs::write(t1.join("a/b/c/deep.txt"), "deep v1").unwrap();
    std::fs::write(t1.join("a/b/gone.txt"), "to be deleted").unwrap();
    let at_snapshot = tree(&t1);

    let snap = snapshot(&mut c, &unique("snap-"), &src.volume_id).await;
    assert!(snap.ready_to_use);
    assert_eq!(snap.source_volume_id, src.volume_id);

    // Change, add and delete after the snapshot, through the mount.
    std::fs::write(t1.join("top.txt"), "top v2").unwrap();
    std::fs::write(t1.join("a/b/c/deep.txt"), "deep v2").unwrap();
    std::fs::remove_file(t1.join("a/b/gone.txt")).unwrap();
    std::fs::remove_dir(t1.join("empty")).unwrap();
    std::fs::write(t1.join("a/new.txt"), "added later").unwrap();
    let after_changes = tree(&t1);
    assert_ne!(after_changes, at_snapshot);

    // Restore: a new volume from the snapshot shows the snapshot-time tree at its own target.
    let restored = create_from(
        &mut c,
        "pvc-restored",
        Some(source_snapshot(&snap.snapshot_id)),
    )
    .await
    .unwrap();
    assert_ne!(restored.volume_id, src.volume_id);
    assert_eq!(
        restored.content_source,
        Some(source_snapshot(&snap.snapshot_id)),
        "the source is echoed back"
    );
    let t2 = publish(&mut c, &d, &restored.volume_id).await;
    assert_eq!(tree(&t2), at_snapshot);
    // The two are independent: writing one does not touch the other.
    std::fs::write(t2.join("top.txt"), "restored and changed").unwrap();
    assert_eq!(
        std::fs::read_to_string(t1.join("top.txt")).unwrap(),
        "top v2"
    );

    // Clone: a new volume from the source volume shows its current tree.
    let clone = create_from(&mut c, "pvc-clone", Some(source_volume(&src.volume_id)))
        .await
        .unwrap();
    assert_eq!(clone.content_source, Some(source_volume(&src.volume_id)));
    let t3 = publish(&mut c, &d, &clone.volume_id).await;
    assert_eq!(tree(&t3), after_changes);

    // The snapshot itself is unchanged by all this: a second restore gives the same tree.
    let again = create_from(
        &mut c,
        "pvc-restored-2",
        Some(source_snapshot(&snap.snapshot_id)),
    )
    .await
    .unwrap();
    let t4 = publish(&mut c, &d, &again.volume_id).await;
    assert_eq!(tree(&t4), at_snapshot);

    // Missing sources.
    let err = create_from(
        &mut c,
        "pvc-no-snap",
        Some(source_snapshot("snap-000000009999")),
    )
    .await
    .expect_err("a missing snapshot");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = create_from(
        &mut c,
        "pvc-no-vol",
        Some(source_volume("vol-000000009999")),
    )
    .await
    .expect_err("a missing source volume");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let names: Vec<String> = c
        .controller
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect();
    assert_eq!(names.len(), 4, "a failed create left a volume: {names:?}");

    // The source can go while its snapshot stays restorable.
    for (vol, target) in [
        (&src.volume_id, &t1),
        (&restored.volume_id, &t2),
        (&clone.volume_id, &t3),
        (&again.volume_id, &t4),
    ] {
        unpublish(&mut c, vol, target).await;
    }
    c.controller
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: src.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let late = create_from(&mut c, "pvc-late", Some(source_snapshot(&snap.snapshot_id)))
        .await
        .unwrap();
    let t5 = publish(&mut c, &d, &late.volume_id).await;
    assert_eq!(tree(&t5), at_snapshot);
    unpublish(&mut c, &late.volume_id, &t5).await;

    c.controller
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = create_from(
        &mut c,
        "pvc-after-delete",
        Some(source_snapshot(&snap.snapshot_id)),
    )
    .await
    .expect_err("a deleted snapshot");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(csi::mount_points_under(&d.dir).is_empty());
}

/// GET_SNAPSHOT is alpha (spec 1.12): a CO built against spec 1.10 or 1.11 refuses a whole
/// capability list that holds it (`Unknown capability: 15`). By default the driver advertises
/// only values such a client knows, and no alpha capability added since (GET_SNAPSHOT,
/// MODIFY_VOLUME, SNAPSHOT_METADATA_SERVICE), and GetSnapshot is refused; the operator's
/// `alpha-capabilities = "get-snapshot"` turns it on, and nothing else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_snapshot_is_advertised_and_served_only_when_opted_into() {
    use pb::controller_service_capability::rpc::Type as Ctl;
    use pb::node_service_capability::rpc::Type as Node;
    use pb::plugin_capability::service::Type as Service;

    let d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let default = csi::advertised(&mut c).await;
    assert!(
        default
            .controller
            .iter()
            .all(|&t| t > 0 && t < Ctl::ModifyVolume as i32),
        "{default:?}"
    );
    assert!(!default.controller.contains(&(Ctl::GetSnapshot as i32)));
    assert!(!default.controller.contains(&(Ctl::ModifyVolume as i32)));
    assert!(!default.has_service(Service::SnapshotMetadataService));
    assert!(default.has_service(Service::ControllerService));
    let node = [
        Node::StageUnstageVolume,
        Node::GetVolumeStats,
        Node::ExpandVolume,
        Node::VolumeCondition,
    ]
    .map(|t| t as i32);
    assert_eq!(default.node, node);

    // Snapshots themselves are GA and work; only GetSnapshot is refused, by the host's gate.
    let vol = create_from(&mut c, "pvc-alpha", None).await.unwrap();
    let snap = snapshot(&mut c, "snap-alpha", &vol.volume_id).await;
    let refused = csi::expect_code(
        c.controller
            .get_snapshot(pb::GetSnapshotRequest {
                snapshot_id: snap.snapshot_id.clone(),
                ..Default::default()
            })
            .await,
        Code::Unimplemented,
    );
    assert!(refused.message().contains("GetSnapshot"), "{refused:?}");

    let d = Daemon::start_csi(r#"config = { alpha-capabilities = "get-snapshot" }"#);
    let mut c = Csi::connect(&d.csi_socket()).await;
    let opted = csi::advertised(&mut c).await;
    let mut want = default.controller.clone();
    want.push(Ctl::GetSnapshot as i32);
    assert_eq!(opted.controller, want);
    assert_eq!(opted.node, default.node);
    assert_eq!(opted.plugin, default.plugin);
    let vol = create_from(&mut c, "pvc-alpha", None).await.unwrap();
    let snap = snapshot(&mut c, "snap-alpha", &vol.volume_id).await;
    let got = c
        .controller
        .get_snapshot(pb::GetSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.snapshot, Some(snap));
}
