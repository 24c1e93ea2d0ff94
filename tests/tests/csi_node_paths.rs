//! The node RPCs act only in kubelet's directories and only on what the host mounted, against
//! the real CSI socket with real mounts: a client that names someone else's tmpfs, a host
//! directory such as `/etc/cron.d`, or a path through a symlink is refused and nothing is mounted
//! or unmounted (issue 14, item 8); an unpublish whose target still holds files after the unmount
//! tells the plugin and reports the directory on its own, and a retry finishes (item 9); the
//! controller service can have a socket of its own, without the node RPCs.

use std::path::PathBuf;
use std::process::Command;

use tonic::Code;
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{Daemon, TEST_DRIVER, TEST_NODE, plugin, unique};

/// A tmpfs someone else mounted, holding a secret file; unmounted (if still there) on drop.
struct ForeignMount {
    path: PathBuf,
}

impl ForeignMount {
    fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount tmpfs: {out:?}");
        std::fs::write(path.join("secret"), "s3cret").unwrap();
        Self { path }
    }

    /// Still mounted, with its secret.
    fn assert_intact(&self) {
        assert!(
            csi::is_mount_point(&self.path),
            "the foreign tmpfs at {} was unmounted",
            self.path.display()
        );
        assert_eq!(
            std::fs::read_to_string(self.path.join("secret")).unwrap(),
            "s3cret"
        );
    }
}

impl Drop for ForeignMount {
    fn drop(&mut self) {
        while csi::is_mount_point(&self.path) {
            if !Command::new("umount")
                .arg(&self.path)
                .status()
                .is_ok_and(|s| s.success())
            {
                break;
            }
        }
    }
}

fn misbehaving_ok() -> Daemon {
    Daemon::start_csi_from(plugin("csi-misbehave"), "config = { mode = \"ok\" }")
}

/// A publish target under `<kubelet>/pods/`, its parent created.
fn target(d: &Daemon) -> PathBuf {
    csi::pod_paths(&d.kubelet_dir()).1
}

async fn volume(c: &mut Csi, name: &str) -> String {
    c.controller
        .create_volume(csi::create_request(name, 1 << 20))
        .await
        .expect("CreateVolume")
        .into_inner()
        .volume
        .unwrap()
        .volume_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_and_unstage_leave_a_foreign_mount_alone() {
    let d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let foreign = ForeignMount::new(target(&d));
    let s = csi::expect_code(
        c.node
            .node_unpublish_volume(csi::unpublish_request("no-such-volume", &foreign.path))
            .await,
        Code::FailedPrecondition,
    );
    assert!(s.message().contains("no record"), "{s:?}");
    csi::assert_message_style(&s);
    foreign.assert_intact();

    let staged = ForeignMount::new(csi::staging_dir(&d.kubelet_dir()));
    let s = csi::expect_code(
        c.node
            .node_unstage_volume(csi::unstage_request("no-such-volume", &staged.path))
            .await,
        Code::FailedPrecondition,
    );
    assert!(s.message().contains("no record"), "{s:?}");
    staged.assert_intact();
    assert!(
        d.log()
            .contains("is a mount point the host has no record of"),
        "the refusal is not logged: {}",
        d.log()
    );

    // Nothing at all there is the spec's idempotent success, and nothing is created.
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());
    let vol = volume(&mut c, "pvc-nothing-there").await;
    c.node
        .node_unpublish_volume(csi::unpublish_request(&vol, &target))
        .await
        .expect("unpublish of a target never published");
    c.node
        .node_unstage_volume(csi::unstage_request(&vol, &staging))
        .await
        .expect("unstage of a volume never staged");
    assert!(staging.is_dir() && !target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_and_publish_onto_a_foreign_mount_are_refused() {
    let d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let vol = volume(&mut c, "pvc-foreign").await;
    let staged = ForeignMount::new(csi::staging_dir(&d.kubelet_dir()));
    let s = csi::expect_code(
        c.node
            .node_stage_volume(csi::stage_request(&vol, &staged.path))
            .await,
        Code::FailedPrecondition,
    );
    assert!(s.message().contains("no record"), "{s:?}");
    staged.assert_intact();

    // A publish from it then has no stage of ours to start from: the secret is not exposed.
    let target = target(&d);
    csi::expect_code(
        c.node
            .node_publish_volume(csi::publish_request(
                &vol,
                Some(&staged.path),
                &target,
                false,
            ))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        !target.join("secret").exists(),
        "the foreign mount is exposed"
    );
    assert!(!csi::is_mount_point(&target));

    // Nor may a publish take over a mount at its target.
    let (staging, _) = csi::pod_paths(&d.kubelet_dir());
    c.node
        .node_stage_volume(csi::stage_request(&vol, &staging))
        .await
        .expect("stage");
    let foreign = ForeignMount::new(target.clone());
    csi::expect_code(
        c.node
            .node_publish_volume(csi::publish_request(&vol, Some(&staging), &target, false))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(csi::mount_count(&target), 1, "a mount was stacked on it");
    foreign.assert_intact();
    c.node
        .node_unstage_volume(csi::unstage_request(&vol, &staging))
        .await
        .expect("unstage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_kubelets_directories_are_refused() {
    // The plugin plans a tmpfs wherever it is asked to: only the host's check stands in the way.
    let d = misbehaving_ok();
    let mut c = Csi::connect(&d.csi_socket()).await;
    // Stands for /etc/cron.d: a host directory with something in it.
    let cron = d.dir.join("etc/cron.d");
    std::fs::create_dir_all(&cron).unwrap();
    std::fs::write(cron.join("job"), "* * * * * root true\n").unwrap();
    let kubelet = d.kubelet_dir();
    std::fs::create_dir_all(kubelet.join("pods")).unwrap();
    let staging_area = kubelet.join("plugins/kubernetes.io/csi");
    for (what, path, rule) in [
        ("a host directory", cron.clone(), "must lie under"),
        (
            "kubelet's dir but not pods/",
            kubelet.join("plugins/x/mount"),
            "must lie under",
        ),
        ("pods/ itself", kubelet.join("pods"), "must lie under"),
        (
            "a staging path as a target",
            staging_area.join("drv/h/globalmount"),
            "must lie under",
        ),
    ] {
        let s = csi::expect_code(
            c.node
                .node_publish_volume(csi::publish_request("v1", None, &path, false))
                .await,
            Code::InvalidArgument,
        );
        assert!(
            s.message().contains(rule)
                && s.message().contains(&*path.to_string_lossy())
                && s.message()
                    .contains(&*kubelet.join("pods").to_string_lossy()),
            "{what}: {s:?}"
        );
        csi::assert_message_style(&s);
        assert!(!csi::is_mount_point(&path), "{what}: mounted");
    }
    assert!(cron.join("job").exists());
    // The same for a staging path, against its own area.
    let s = csi::expect_code(
        c.node
            .node_stage_volume(csi::stage_request("v1", &cron))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        s.message().contains(&*staging_area.to_string_lossy()),
        "{s:?}"
    );
    let target = target(&d);
    csi::expect_code(
        c.node
            .node_stage_volume(csi::stage_request("v1", &target))
            .await,
        Code::InvalidArgument,
    );
    // And for an unpublish: nothing outside is taken down.
    let foreign = ForeignMount::new(d.dir.join(unique("mnt-")));
    csi::expect_code(
        c.node
            .node_unpublish_volume(csi::unpublish_request("v1", &foreign.path))
            .await,
        Code::InvalidArgument,
    );
    foreign.assert_intact();
    assert!(!csi::is_mount_point(&cron) && !csi::is_mount_point(&target));

    // Inside, the same plan is carried out.
    c.node
        .node_publish_volume(csi::publish_request("v1", None, &target, false))
        .await
        .expect("publish under pods/");
    assert!(csi::is_mount_point(&target));
    c.node
        .node_unpublish_volume(csi::unpublish_request("v1", &target))
        .await
        .expect("unpublish");
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_between_kubelet_dir_and_the_path_is_refused() {
    let d = misbehaving_ok();
    let mut c = Csi::connect(&d.csi_socket()).await;
    let outside = d.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let pods = d.kubelet_dir().join("pods");
    std::fs::create_dir_all(&pods).unwrap();
    let pod = pods.join(unique("pod-"));
    std::os::unix::fs::symlink(&outside, &pod).unwrap();
    let target = pod.join("volumes/kubernetes.io~csi/pv/mount");
    let s = csi::expect_code(
        c.node
            .node_publish_volume(csi::publish_request("v1", None, &target, false))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        s.message().contains("symlink") && s.message().contains(&*pod.to_string_lossy()),
        "{s:?}"
    );
    assert!(
        csi::mount_points_under(&outside).is_empty(),
        "mounted through the symlink"
    );
    assert!(
        !outside.join("volumes").exists(),
        "created through the symlink"
    );

    // A symlinked area is refused the same way.
    let csi_dir = d.kubelet_dir().join("plugins/kubernetes.io");
    std::fs::create_dir_all(&csi_dir).unwrap();
    std::os::unix::fs::symlink(&outside, csi_dir.join("csi")).unwrap();
    let staging = csi_dir.join("csi").join(TEST_DRIVER).join("h/globalmount");
    csi::expect_code(
        c.node
            .node_stage_volume(csi::stage_request("v1", &staging))
            .await,
        Code::InvalidArgument,
    );
    assert!(csi::mount_points_under(&outside).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_with_files_left_in_the_target_tells_the_plugin_and_finishes_on_retry() {
    let d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let vol = volume(&mut c, "pvc-leftover").await;
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());
    // A file in the target directory itself, under where the volume gets mounted: it shows
    // once the volume is unmounted, and keeps the directory from being removed.
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("leftover"), "x").unwrap();
    c.node
        .node_stage_volume(csi::stage_request(&vol, &staging))
        .await
        .expect("stage");
    c.node
        .node_publish_volume(csi::publish_request(&vol, Some(&staging), &target, false))
        .await
        .expect("publish");
    assert!(csi::is_mount_point(&target));

    for attempt in 0..2 {
        let s = csi::expect_code(
            c.node
                .node_unpublish_volume(csi::unpublish_request(&vol, &target))
                .await,
            Code::FailedPrecondition,
        );
        assert!(
            s.message().contains("is unpublished")
                && s.message().contains(&*target.to_string_lossy())
                && s.message().contains("os error 39"),
            "attempt {attempt}: {s:?}"
        );
        csi::assert_message_style(&s);
        assert!(
            !csi::is_mount_point(&target),
            "attempt {attempt}: still mounted"
        );
        assert!(
            target.join("leftover").exists(),
            "someone's file was deleted"
        );
    }
    assert!(
        d.log().contains("the target directory stays"),
        "not logged: {}",
        d.log()
    );

    // The plugin was told: the volume unstages and deletes.
    c.node
        .node_unstage_volume(csi::unstage_request(&vol, &staging))
        .await
        .expect("unstage after the unpublish");
    c.controller
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: vol.clone(),
            ..Default::default()
        })
        .await
        .expect("DeleteVolume is not held up by the directory");

    // Once the directory can go, a retry removes it and succeeds, even with the volume gone.
    std::fs::remove_file(target.join("leftover")).unwrap();
    c.node
        .node_unpublish_volume(csi::unpublish_request(&vol, &target))
        .await
        .expect("unpublish once the directory is empty");
    assert!(!target.exists());
    // With nothing left on record, once more goes to the plugin, which knows the volume is gone.
    csi::expect_code(
        c.node
            .node_unpublish_volume(csi::unpublish_request(&vol, &target))
            .await,
        Code::NotFound,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_can_have_a_socket_without_the_node_rpcs() {
    let toml = format!(
        "state_dir = \"{{d}}/state\"\n[engine]\ncache_dir = \"{{c}}\"\n[admin]\nsocket = \"{{d}}/admin.sock\"\n\
         [csi]\ndriver = \"{TEST_DRIVER}\"\nplugin = \"hostpath\"\nsocket = \"{{d}}/csi.sock\"\n\
         controller_socket = \"{{d}}/csi-controller.sock\"\nregistration = false\n\
         node_id = \"{TEST_NODE}\"\nkubelet_dir = \"{{d}}/kubelet\"\n\
         [plugins.hostpath]\nworld = \"storage\"\npath = \"{h}\"\n",
        h = plugin("hostpath-csi").display(),
    );
    let d = Daemon::start_toml(&toml, &["csi.sock", "csi-controller.sock"]);
    let mut node = Csi::connect(&d.csi_socket()).await;
    let mut ctl = Csi::connect(&d.dir.join("csi-controller.sock")).await;
    for c in [&mut node, &mut ctl] {
        c.identity
            .probe(pb::ProbeRequest {})
            .await
            .expect("Identity on both sockets");
    }
    let vol = volume(&mut ctl, "pvc-split").await;
    csi::expect_code(
        node.controller
            .create_volume(csi::create_request("pvc-via-node", 1 << 20))
            .await,
        Code::Unimplemented,
    );
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());
    csi::expect_code(
        ctl.node
            .node_stage_volume(csi::stage_request(&vol, &staging))
            .await,
        Code::Unimplemented,
    );
    csi::expect_code(
        ctl.node
            .node_publish_volume(csi::publish_request(&vol, None, &target, false))
            .await,
        Code::Unimplemented,
    );
    assert!(!csi::is_mount_point(&staging) && !target.exists());
    node.node
        .node_stage_volume(csi::stage_request(&vol, &staging))
        .await
        .expect("stage on the node socket");
    node.node
        .node_unstage_volume(csi::unstage_request(&vol, &staging))
        .await
        .expect("unstage");
    ctl.controller
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: vol,
            ..Default::default()
        })
        .await
        .expect("DeleteVolume on the controller socket");
}
