//! The CSI daemon restarting under kubelet: a graceful restart keeps volumes, snapshots and
//! stage/publish state; a `kill -9` between publish and unpublish still lets kubelet unpublish and
//! unstage cleanly; a `kill -9` in the middle of a slow publish leaves nothing an unpublish cannot
//! clean up, and the publish can be redone.

use std::path::Path;
use std::time::Duration;

use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{Daemon, TEST_NODE};

async fn create(c: &mut Csi, name: &str) -> String {
    c.controller
        .create_volume(csi::create_request(name, 64 << 20))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
        .volume_id
}

async fn stage_and_publish(c: &mut Csi, vol: &str, staging: &Path, target: &Path) {
    c.node
        .node_stage_volume(csi::stage_request(vol, staging))
        .await
        .unwrap();
    c.node
        .node_publish_volume(csi::publish_request(vol, Some(staging), target, false))
        .await
        .unwrap();
    assert!(csi::is_mount_point(staging) && csi::is_mount_point(target));
}

async fn stats(
    c: &mut Csi,
    vol: &str,
    path: &Path,
) -> Result<pb::NodeGetVolumeStatsResponse, tonic::Status> {
    c.node
        .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
            volume_id: vol.to_string(),
            volume_path: path.to_string_lossy().into_owned(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// Unpublish, unstage, delete: each succeeds and leaves no mount and no target behind.
async fn tear_down(c: &mut Csi, vol: &str, staging: &Path, target: &Path) {
    c.node
        .node_unpublish_volume(csi::unpublish_request(vol, target))
        .await
        .unwrap();
    assert!(!csi::is_mount_point(target), "unpublish left the mount");
    assert!(!target.exists(), "unpublish must remove the target");
    c.node
        .node_unstage_volume(csi::unstage_request(vol, staging))
        .await
        .unwrap();
    assert!(!csi::is_mount_point(staging), "unstage left the mount");
    c.controller
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: vol.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_graceful_restart() {
    let mut d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let vol = create(&mut c, "pvc-restart").await;
    let other = create(&mut c, "pvc-restart-idle").await;
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());
    stage_and_publish(&mut c, &vol, &staging, &target).await;
    std::fs::write(target.join("kept.txt"), "before the restart").unwrap();
    let snap = c
        .controller
        .create_snapshot(pb::CreateSnapshotRequest {
            source_volume_id: vol.clone(),
            name: "snap-restart".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();

    d.stop();
    // Mounts belong to the node, not to the daemon: they outlive it.
    assert!(csi::is_mount_point(&staging) && csi::is_mount_point(&target));
    d.spawn();
    let mut c = Csi::connect(&d.csi_socket()).await;

    let listed: Vec<String> = c
        .controller
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect();
    assert_eq!(listed, [vol.clone(), other.clone()]);
    let snaps = c
        .controller
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let s = snaps[0].snapshot.as_ref().unwrap();
    assert_eq!(
        (
            s.snapshot_id.as_str(),
            s.source_volume_id.as_str(),
            s.ready_to_use
        ),
        (snap.snapshot_id.as_str(), vol.as_str(), true)
    );
    // Creating the same names again is idempotent: the same IDs, no duplicates.
    assert_eq!(create(&mut c, "pvc-restart").await, vol);

    let st = stats(&mut c, &vol, &target)
        .await
        .expect("stats after restart");
    assert!(st.usage[0].total > 0 && st.usage[0].used > 0, "{st:?}");
    assert_eq!(
        std::fs::read_to_string(target.join("kept.txt")).unwrap(),
        "before the restart"
    );
    // A retried stage and publish are no-ops on what is already mounted.
    stage_and_publish(&mut c, &vol, &staging, &target).await;

    tear_down(&mut c, &vol, &staging, &target).await;
    for id in [other] {
        c.controller
            .delete_volume(pb::DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    c.controller
        .delete_snapshot(pb::DeleteSnapshotRequest {
            snapshot_id: snap.snapshot_id,
            ..Default::default()
        })
        .await
        .unwrap();
    let left = c
        .controller
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(left.is_empty(), "{left:?}");
    assert!(csi::mount_points_under(&d.dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_publish_and_unpublish() {
    let mut d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let vol = create(&mut c, "pvc-kill").await;
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());
    stage_and_publish(&mut c, &vol, &staging, &target).await;
    std::fs::create_dir_all(target.join("nested/dir")).unwrap();
    std::fs::write(target.join("nested/dir/data.bin"), [7u8; 4096]).unwrap();

    d.kill9();
    assert!(
        csi::is_mount_point(&target),
        "the mount went with the daemon"
    );
    d.spawn();
    let mut c = Csi::connect(&d.csi_socket()).await;
    let info = c
        .node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, TEST_NODE);

    c.node
        .node_unpublish_volume(csi::unpublish_request(&vol, &target))
        .await
        .unwrap();
    assert!(
        !csi::is_mount_point(&target),
        "unpublish after kill -9 left the mount"
    );
    assert!(!target.exists(), "unpublish after kill -9 left the target");
    let in_volume = d
        .csi_data()
        .join("volumes")
        .join(&vol)
        .join("nested/dir/data.bin");
    assert_eq!(
        std::fs::read(&in_volume).expect("the data must survive"),
        [7u8; 4096]
    );
    // A second unpublish (kubelet retries) is still fine.
    c.node
        .node_unpublish_volume(csi::unpublish_request(&vol, &target))
        .await
        .unwrap();

    c.node
        .node_unstage_volume(csi::unstage_request(&vol, &staging))
        .await
        .unwrap();
    assert!(
        !csi::is_mount_point(&staging),
        "unstage after kill -9 left the mount"
    );
    assert!(in_volume.exists());
    c.controller
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: vol.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!in_volume.exists());
    assert!(csi::mount_points_under(&d.dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_slow_publish() {
    // Every mutating call sleeps 600 ms first, so the publish is in flight when it is killed: in
    // the plugin's sleep (250 ms), or, by luck, around the plan's return, the host's record and
    // the mount (600-640 ms). Whatever the crash left, an unpublish cleans it up and a publish
    // can be redone.
    let mut d = Daemon::start_csi("timeout_ms = 5000\nconfig = { latency-ms = \"600\" }");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let vol = create(&mut c, "pvc-slow").await;
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());
    c.node
        .node_stage_volume(csi::stage_request(&vol, &staging))
        .await
        .unwrap();

    for (round, delay_ms) in [250u64, 605, 625].into_iter().enumerate() {
        // Some kubelets create the target themselves; it must go either way.
        std::fs::create_dir_all(&target).unwrap();
        let publish = {
            let mut c = c.clone();
            let req = csi::publish_request(&vol, Some(&staging), &target, false);
            tokio::spawn(async move { c.node.node_publish_volume(req).await })
        };
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        if round == 0 {
            assert!(!publish.is_finished(), "the slow publish finished early");
        }
        d.kill9();
        let cut = publish.await.unwrap();
        if round == 0 {
            assert!(
                cut.is_err(),
                "a publish whose daemon died cannot succeed: {cut:?}"
            );
        }

        d.spawn();
        c = Csi::connect(&d.csi_socket()).await;
        c.node
            .node_unpublish_volume(csi::unpublish_request(&vol, &target))
            .await
            .unwrap_or_else(|e| panic!("round {round}: unpublish after a cut publish: {e:?}"));
        assert!(
            !csi::is_mount_point(&target),
            "round {round}: the mount is left"
        );
        assert!(
            !target.exists(),
            "round {round}: the unpublish left the target"
        );

        // The publish is redone from scratch and works.
        c.node
            .node_publish_volume(csi::publish_request(&vol, Some(&staging), &target, false))
            .await
            .unwrap_or_else(|e| panic!("round {round}: re-publish after the crash: {e:?}"));
        assert!(csi::is_mount_point(&target), "round {round}");
        std::fs::write(target.join("after.txt"), format!("round {round}")).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.csi_data().join("volumes").join(&vol).join("after.txt"))
                .unwrap(),
            format!("round {round}")
        );
        if round < 2 {
            c.node
                .node_unpublish_volume(csi::unpublish_request(&vol, &target))
                .await
                .unwrap();
            assert!(!target.exists());
        }
    }
    tear_down(&mut c, &vol, &staging, &target).await;
    assert!(csi::mount_points_under(&d.dir).is_empty());
}
