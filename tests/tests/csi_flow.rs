//! kubelet's flow against the real CSI socket, with real bind mounts: create, stage, publish,
//! write through the target, unpublish, unstage, delete.

use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{Daemon, TEST_NODE, unique};

fn pod_dirs(d: &Daemon) -> (std::path::PathBuf, std::path::PathBuf) {
    let staging = csi::staging_dir(&d.kubelet_dir());
    let target = d
        .kubelet_dir()
        .join("pods")
        .join(unique("pod-"))
        .join("volumes/kubernetes.io~csi/pv1/mount");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    (staging, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_stage_publish_write_unpublish_unstage_delete() {
    let d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;

    let info = c
        .node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, TEST_NODE);

    let vol = c
        .controller
        .create_volume(csi::create_request("pvc-flow", 64 << 20))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(vol.capacity_bytes, 64 << 20);
    let (staging, target) = pod_dirs(&d);

    c.node
        .node_stage_volume(csi::stage_request(&vol.volume_id, &staging))
        .await
        .unwrap();
    assert!(csi::is_mount_point(&staging));
    c.node
        .node_publish_volume(csi::publish_request(
            &vol.volume_id,
            Some(&staging),
            &target,
            false,
        ))
        .await
        .unwrap();
    assert!(csi::is_mount_point(&target), "target is not a mount point");

    std::fs::write(target.join("hello.txt"), "from the pod").unwrap();
    let in_volume = d
        .csi_data()
        .join("volumes")
        .join(&vol.volume_id)
        .join("hello.txt");
    assert_eq!(std::fs::read_to_string(&in_volume).unwrap(), "from the pod");

    let stats = c
        .node
        .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
            volume_id: vol.volume_id.clone(),
            volume_path: target.to_string_lossy().into_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bytes = &stats.usage[0];
    assert!(
        bytes.total > 0 && bytes.used > 0 && bytes.available > 0,
        "{stats:?}"
    );

    c.node
        .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
            volume_id: vol.volume_id.clone(),
            target_path: target.to_string_lossy().into_owned(),
        })
        .await
        .unwrap();
    assert!(!target.exists(), "unpublish must remove the target");
    assert_eq!(std::fs::read_to_string(&in_volume).unwrap(), "from the pod");

    c.node
        .node_unstage_volume(pb::NodeUnstageVolumeRequest {
            volume_id: vol.volume_id.clone(),
            staging_target_path: staging.to_string_lossy().into_owned(),
        })
        .await
        .unwrap();
    assert!(!csi::is_mount_point(&staging));

    c.controller
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: vol.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!in_volume.exists());
}
