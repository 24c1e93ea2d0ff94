//! A misbehaving storage driver (`plugins/rust/csi-misbehave`) and misbehaving clients against the
//! real CSI socket: a trap, a spin and a memory blow-up each fail one call with the right code and
//! leave the daemon serving; hostile mount plans are refused with nothing mounted; garbage and
//! oversized requests are turned away cleanly; missing IDs are refused before the plugin runs.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{CniOutput, Daemon, Pod, TEST_NODE, plugin};

/// Drops a successful reply, so replies of different types compare as one.
fn ok<T>(_: T) {}

fn misbehaving(mode: &str, extra: &str) -> Daemon {
    Daemon::start_csi_from(
        plugin("csi-misbehave"),
        &format!("config = {{ mode = \"{mode}\" }}\n{extra}"),
    )
}

/// NodeGetInfo answers: the daemon (and a fresh instance of the driver) still serve.
async fn still_serves(c: &mut Csi) {
    let info = c
        .node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await
        .expect("NodeGetInfo after the fault")
        .into_inner();
    assert_eq!(info.node_id, TEST_NODE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_fails_the_call_with_the_panic_message() {
    let d = misbehaving("trap", "");
    let mut c = Csi::connect(&d.csi_socket()).await;
    still_serves(&mut c).await;

    let err = c
        .controller
        .create_volume(csi::create_request("pvc-trap", 1 << 20))
        .await
        .expect_err("a trapping driver cannot create a volume");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message()
            .contains("csi-misbehave asked to trap in create-volume"),
        "the panic message is lost: {err:?}"
    );
    still_serves(&mut c).await;

    // A node call too, and the daemon is still alive afterwards.
    let (staging, _) = csi::pod_paths(&d.kubelet_dir());
    let err = c
        .node
        .node_stage_volume(csi::stage_request("v1", &staging))
        .await
        .expect_err("stage on a trapping driver");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("trap in stage-volume"), "{err:?}");
    assert!(!csi::is_mount_point(&staging));
    still_serves(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ids_are_refused_before_the_plugin_runs() {
    // Every call below would trap in the driver: INVALID_ARGUMENT proves it never ran.
    let d = misbehaving("trap", "");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());

    let mut failures: Vec<(&str, tonic::Status)> = Vec::new();
    let mut expect_invalid = |what: &'static str, r: Result<(), tonic::Status>| match r {
        Err(s) if s.code() == Code::InvalidArgument => {}
        Err(s) => failures.push((what, s)),
        Ok(()) => failures.push((what, tonic::Status::ok("succeeded"))),
    };

    expect_invalid(
        "CreateVolume without name",
        c.controller
            .create_volume(csi::create_request("", 1 << 20))
            .await
            .map(ok),
    );
    expect_invalid(
        "CreateVolume without capabilities",
        c.controller
            .create_volume(pb::CreateVolumeRequest {
                name: "pvc-nocaps".into(),
                ..Default::default()
            })
            .await
            .map(ok),
    );
    expect_invalid(
        "DeleteVolume without volume_id",
        c.controller
            .delete_volume(pb::DeleteVolumeRequest::default())
            .await
            .map(ok),
    );
    expect_invalid(
        "ValidateVolumeCapabilities without volume_id",
        c.controller
            .validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
                volume_capabilities: vec![csi::rwo()],
                ..Default::default()
            })
            .await
            .map(ok),
    );
    expect_invalid(
        "NodeStageVolume without volume_id",
        c.node
            .node_stage_volume(csi::stage_request("", &staging))
            .await
            .map(ok),
    );
    expect_invalid(
        "NodeStageVolume without staging_target_path",
        c.node
            .node_stage_volume(csi::stage_request("v1", Path::new("")))
            .await
            .map(ok),
    );
    expect_invalid(
        "NodeStageVolume without capability",
        c.node
            .node_stage_volume(pb::NodeStageVolumeRequest {
                volume_id: "v1".into(),
                staging_target_path: staging.to_string_lossy().into_owned(),
                ..Default::default()
            })
            .await
            .map(ok),
    );
    expect_invalid(
        "NodePublishVolume without volume_id",
        c.node
            .node_publish_volume(csi::publish_request("", None, &target, false))
            .await
            .map(ok),
    );
    expect_invalid(
        "NodePublishVolume without target_path",
        c.node
            .node_publish_volume(csi::publish_request("v1", None, Path::new(""), false))
            .await
            .map(ok),
    );
    expect_invalid(
        "NodePublishVolume with a relative target_path",
        c.node
            .node_publish_volume(csi::publish_request(
                "v1",
                None,
                Path::new("pods/x/mount"),
                false,
            ))
            .await
            .map(ok),
    );
    expect_invalid(
        "NodePublishVolume with '..' in target_path",
        c.node
            .node_publish_volume(csi::publish_request(
                "v1",
                None,
                &d.dir.join("a/../../etc"),
                false,
            ))
            .await
            .map(ok),
    );
    expect_invalid(
        "NodeUnpublishVolume without volume_id",
        c.node
            .node_unpublish_volume(csi::unpublish_request("", &target))
            .await
            .map(ok),
    );
    expect_invalid(
        "NodeUnpublishVolume without target_path",
        c.node
            .node_unpublish_volume(csi::unpublish_request("v1", Path::new("")))
            .await
            .map(ok),
    );
    expect_invalid(
        "NodeUnstageVolume without staging_target_path",
        c.node
            .node_unstage_volume(csi::unstage_request("v1", Path::new("")))
            .await
            .map(ok),
    );
    assert!(
        failures.is_empty(),
        "not refused as INVALID_ARGUMENT before the plugin: {failures:#?}"
    );
    assert!(
        !d.log().contains("trapped"),
        "the driver ran for a request the host should have refused: {}",
        d.log()
    );
    assert!(!staging.join("x").exists() && !target.exists());
    still_serves(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_driver_times_out_and_the_daemon_keeps_serving() {
    let d = misbehaving("loop", "timeout_ms = 300");
    let mut c = Csi::connect(&d.csi_socket()).await;
    still_serves(&mut c).await;

    // Two spinning calls at once, and a good call while they spin.
    let started = Instant::now();
    let spin = |name: &'static str| {
        let mut c = c.clone();
        tokio::spawn(async move {
            let r = c
                .controller
                .create_volume(csi::create_request(name, 1 << 20))
                .await;
            (r, started.elapsed())
        })
    };
    let (a, b) = (spin("pvc-loop-a"), spin("pvc-loop-b"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    still_serves(&mut c).await;
    for h in [a, b] {
        let (r, took) = h.await.unwrap();
        let err = r.expect_err("a spinning driver cannot create a volume");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("deadline"), "{err:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(300 + 1500),
            "the deadline of 300 ms was not kept: {took:?}"
        );
    }
    still_serves(&mut c).await;
    // And again: the spinning instances are gone, not holding slots.
    let err = c
        .controller
        .delete_volume(pb::DeleteVolumeRequest {
            volume_id: "v1".into(),
            ..Default::default()
        })
        .await
        .expect_err("delete on a spinning driver");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    still_serves(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_blowup_is_internal_naming_the_limit() {
    let d = misbehaving("oom", "memory_mb = 16");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let err = c
        .controller
        .create_volume(csi::create_request("pvc-oom", 1 << 20))
        .await
        .expect_err("an allocating driver cannot create a volume");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message().contains("memory limit")
            && err.message().contains(&(16u64 << 20).to_string()),
        "the memory limit is not named: {err:?}"
    );
    still_serves(&mut c).await;
}

/// Runs stage and publish against a driver whose plans are hostile; each must be refused with
/// nothing mounted anywhere, and the refusal logged.
async fn hostile_plan_is_refused(mode: &str) {
    let d = misbehaving(mode, "");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let etc_before = csi::mount_points_under(Path::new("/etc"));
    let elsewhere_before = csi::is_mount_point(Path::new("/tmp/elsewhere"));
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());

    let err = c
        .node
        .node_stage_volume(csi::stage_request("vol-hostile", &staging))
        .await
        .expect_err("a hostile stage plan must be refused");
    assert_eq!(err.code(), Code::Internal, "{mode}: {err:?}");
    assert!(err.message().contains("refused"), "{mode}: {err:?}");
    assert!(
        !csi::is_mount_point(&staging),
        "{mode}: staging got mounted"
    );
    assert!(staging.is_dir(), "{mode}: the staging dir is kubelet's");

    let err = c
        .node
        .node_publish_volume(csi::publish_request("vol-hostile", None, &target, false))
        .await
        .expect_err("a hostile publish plan must be refused");
    assert_eq!(err.code(), Code::Internal, "{mode}: {err:?}");
    assert!(err.message().contains("refused"), "{mode}: {err:?}");
    assert!(!csi::is_mount_point(&target), "{mode}: target got mounted");
    assert!(
        !target.exists(),
        "{mode}: a refused publish created the target"
    );

    assert_eq!(
        csi::mount_points_under(Path::new("/etc")),
        etc_before,
        "{mode}: a mount appeared under /etc"
    );
    assert_eq!(
        csi::is_mount_point(Path::new("/tmp/elsewhere")),
        elsewhere_before,
        "{mode}: /tmp/elsewhere changed"
    );
    assert!(
        csi::mount_points_under(&d.dir).is_empty(),
        "{mode}: mounts under the daemon dir: {:?}",
        csi::mount_points_under(&d.dir)
    );
    let log = d.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("refused mount plan") && l.contains("vol-hostile"))
        .count();
    assert_eq!(refusals, 2, "{mode}: the refusals are not logged: {log}");

    // The refusals left no record behind: a retry is refused again, not taken as done.
    let err = c
        .node
        .node_publish_volume(csi::publish_request("vol-hostile", None, &target, false))
        .await
        .expect_err("a retried hostile publish");
    assert!(err.message().contains("refused"), "{mode}: {err:?}");
    assert!(!csi::is_mount_point(&target));
    // Unpublishing what was never published is fine, and the daemon still serves.
    c.node
        .node_unpublish_volume(csi::unpublish_request("vol-hostile", &target))
        .await
        .unwrap();
    still_serves(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_outside_the_grant_is_refused() {
    hostile_plan_is_refused("escape").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotdot_bind_is_refused() {
    hostile_plan_is_refused("dotdot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_for_another_target_is_refused() {
    hostile_plan_is_refused("wrong-target").await;
}

/// The control for the refusals: the same driver with a good plan mounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_behaved_plan_is_mounted() {
    let d = misbehaving("ok", "");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let (staging, target) = csi::pod_paths(&d.kubelet_dir());
    c.node
        .node_stage_volume(csi::stage_request("vol-ok", &staging))
        .await
        .unwrap();
    assert!(csi::is_mount_point(&staging));
    c.node
        .node_publish_volume(csi::publish_request("vol-ok", None, &target, false))
        .await
        .unwrap();
    assert!(csi::is_mount_point(&target));
    c.node
        .node_unpublish_volume(csi::unpublish_request("vol-ok", &target))
        .await
        .unwrap();
    assert!(!target.exists());
    c.node
        .node_unstage_volume(csi::unstage_request("vol-ok", &staging))
        .await
        .unwrap();
    assert!(!csi::is_mount_point(&staging));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_requests_are_turned_away() {
    let d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;

    // Not HTTP/2 at all: the server closes the connection (maybe after a GOAWAY), promptly.
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 4096][..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
    ] {
        let mut s = tokio::net::UnixStream::connect(d.csi_socket())
            .await
            .unwrap();
        let _ = s.write_all(garbage).await;
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server kept a garbage connection open");
    }
    still_serves(&mut c).await;

    // Well-formed gRPC, but not a CreateVolumeRequest: field 1 is a varint, not a string.
    let mut grpc = tonic::client::Grpc::new(csi::channel(&d.csi_socket()).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::CapacityRange, pb::CreateVolumeResponse>::default();
    let err = grpc
        .unary(
            tonic::Request::new(pb::CapacityRange {
                required_bytes: 5,
                limit_bytes: 7,
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/csi.v1.Controller/CreateVolume"),
            codec,
        )
        .await
        .expect_err("an undecodable request must be refused");
    assert!(
        matches!(err.code(), Code::Internal | Code::InvalidArgument)
            && err.message().contains("decode"),
        "{err:?}"
    );
    assert!(
        !d.log().contains("\"CreateVolume\""),
        "the service saw the garbage"
    );
    still_serves(&mut c).await;

    // A well-formed gRPC call whose message is over the 4 MiB limit.
    let mut big = csi::create_request("pvc-big", 1 << 20);
    big.parameters
        .insert("junk".into(), "x".repeat((4 << 20) + 1024));
    let err = c
        .controller
        .create_volume(big)
        .await
        .expect_err("an oversized request must be refused");
    // gRPC says RESOURCE_EXHAUSTED; tonic's decoder says OUT_OF_RANGE. Either is a clean no.
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange)
            && err.message().contains("too large"),
        "{err:?}"
    );
    still_serves(&mut c).await;

    // The same connection, and a fresh one, keep working; nothing was created.
    let mut fresh = Csi::connect(&d.csi_socket()).await;
    still_serves(&mut fresh).await;
    let list = fresh
        .controller
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.entries.is_empty(), "{list:?}");
}

/// `/x/mount/`, `/x//mount` and `/x/./mount` name one target: a publish at one spelling and an
/// unpublish at another must leave no stale record that blocks the next publish there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_share_one_record() {
    let d = Daemon::start_csi("");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let mut vols = Vec::new();
    for name in ["pvc-spell-1", "pvc-spell-2"] {
        vols.push(
            c.controller
                .create_volume(csi::create_request(name, 1 << 20))
                .await
                .unwrap()
                .into_inner()
                .volume
                .unwrap()
                .volume_id,
        );
    }
    let (_, target) = csi::pod_paths(&d.kubelet_dir());
    let t = target.to_string_lossy().into_owned();
    let slash = std::path::PathBuf::from(format!("{t}/"));
    let dot = std::path::PathBuf::from(format!("{}/./mount", target.parent().unwrap().display()));

    c.node
        .node_publish_volume(csi::publish_request(&vols[0], None, &slash, false))
        .await
        .unwrap();
    assert!(csi::is_mount_point(&target));
    c.node
        .node_unpublish_volume(csi::unpublish_request(&vols[0], &target))
        .await
        .unwrap();
    assert!(!csi::is_mount_point(&target) && !target.exists());

    // Another volume at the first spelling: nothing is there any more, so it mounts.
    c.node
        .node_publish_volume(csi::publish_request(&vols[1], None, &slash, false))
        .await
        .expect("a stale record blocks the target");
    assert!(csi::is_mount_point(&target));
    std::fs::write(target.join("which"), "second").unwrap();
    assert!(
        d.csi_data()
            .join("volumes")
            .join(&vols[1])
            .join("which")
            .exists()
    );
    // The first volume at a third spelling is a conflict, not a silent success on the mount of
    // the second.
    let err = c
        .node
        .node_publish_volume(csi::publish_request(&vols[0], None, &dot, false))
        .await
        .expect_err("another volume is published there");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    c.node
        .node_unpublish_volume(csi::unpublish_request(&vols[1], &dot))
        .await
        .unwrap();
    assert!(!csi::is_mount_point(&target) && !target.exists());
    for v in vols {
        c.controller
            .delete_volume(pb::DeleteVolumeRequest {
                volume_id: v,
                ..Default::default()
            })
            .await
            .expect("nothing keeps the volume published");
    }
}

/// The host advertises what the driver lists and nothing of its own: csi-misbehave lists one
/// capability of each kind, and a client sees exactly those, no default and no alpha one added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_are_the_drivers_own() {
    use pb::plugin_capability::{Service, Type, service};
    let d = misbehaving("ok", "");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let caps = csi::advertised(&mut c).await;
    assert_eq!(
        caps.plugin,
        [pb::PluginCapability {
            r#type: Some(Type::Service(Service {
                r#type: service::Type::ControllerService as i32,
            })),
        }]
    );
    assert_eq!(
        caps.controller,
        [pb::controller_service_capability::rpc::Type::CreateDeleteVolume as i32]
    );
    assert_eq!(
        caps.node,
        [pb::node_service_capability::rpc::Type::StageUnstageVolume as i32]
    );
}

/// How many descriptors the daemon has open, from `/proc`.
fn open_fds(d: &Daemon) -> usize {
    let pid = d.pid().expect("the daemon runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the daemon's fd dir")
        .count()
}

/// A CNI ADD on the daemon's own bridge plugin, from a blocking thread (the shim is a process).
fn cni_add(d: &Daemon, podcidr: &str) -> tokio::task::JoinHandle<(Pod, CniOutput)> {
    let conf = d.net_conf("1.1.0", serde_json::json!({ "podcidr": podcidr }));
    tokio::task::spawn_blocking(move || {
        let pod = Pod::new();
        let out = pod.add(&conf);
        (pod, out)
    })
}

/// A driver that opens 25,000 files in one call and keeps them stops at its instance's handle
/// budget (the guest sees the error, the daemon never nears its fd limit), the instance is not
/// reused, and CNI still works on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoarded_files_stop_at_the_budget_and_the_instance_is_dropped() {
    let d = misbehaving("hoard", "timeout_ms = 30000");
    let mut c = Csi::connect(&d.csi_socket()).await;
    still_serves(&mut c).await;
    let before = open_fds(&d);

    let hoard = |name: &'static str| {
        let mut c = c.clone();
        async move {
            let vol = c
                .controller
                .create_volume(csi::create_request(name, 1 << 20))
                .await
                .expect("the driver reports what it could open")
                .into_inner()
                .volume
                .expect("a volume");
            let ctx = vol.volume_context;
            let count = |k: &str| ctx[k].parse::<usize>().expect("a count");
            (count("held-before"), count("opened"), ctx["error"].clone())
        }
    };
    let (held_before, opened, error) = hoard("pvc-hoard-1").await;
    assert_eq!(held_before, 0);
    assert!(
        (1..=1024).contains(&opened),
        "opened {opened} files, beyond the storage budget of 1024 handles ({error})"
    );
    assert!(
        error.starts_with("open /data/hoard-") && !error.contains("Too many open files"),
        "the guest did not see the budget refuse its open: {error:?}"
    );
    assert!(
        d.log()
            .contains("the instance holds its budget of 1024 handles"),
        "the refusal is not logged:\n{}",
        d.log()
    );
    // The hoarding instance is gone with what it held.
    let after = open_fds(&d);
    assert!(
        after < before + 64,
        "the daemon holds {after} fds after the call, {before} before"
    );

    let (_pod, out) = cni_add(&d, "10.244.61.0/24").await.unwrap();
    out.ok();

    // A fresh instance: nothing held from the call before.
    let (held_before, opened, _) = hoard("pvc-hoard-2").await;
    assert_eq!(held_before, 0, "the hoarding instance was reused");
    assert!((1..=1024).contains(&opened), "{opened}");
    still_serves(&mut c).await;
}

/// A driver that opens a FIFO (no writer) in its data dir gets a prompt refusal instead of an open
/// that never returns; while several such calls run (more than the daemon has worker threads),
/// CNI ADD and other CSI calls on the node still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_in_the_data_dir_is_refused_and_the_node_keeps_serving() {
    let d = misbehaving("fifo", "timeout_ms = 3000");
    let fifo = d.dir.join("state/plugins/hostpath/data/fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", fifo.display());
    let mut c = Csi::connect(&d.csi_socket()).await;
    still_serves(&mut c).await;

    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let opens: Vec<_> = (0..workers + 2)
        .map(|i| {
            let mut c = c.clone();
            tokio::spawn(async move {
                c.controller
                    .create_volume(csi::create_request(&format!("pvc-fifo-{i}"), 1 << 20))
                    .await
            })
        })
        .collect();

    // Generous: a refused open answers at once, a stuck daemon never does.
    let deadline = Duration::from_secs(20);
    let add = cni_add(&d, "10.244.62.0/24");
    let (_pod, out) = tokio::time::timeout(deadline, add)
        .await
        .expect("CNI ADD answers while the driver opens a FIFO")
        .unwrap();
    out.ok();
    tokio::time::timeout(deadline, still_serves(&mut c))
        .await
        .expect("NodeGetInfo answers while the driver opens a FIFO");
    for h in opens {
        let err = tokio::time::timeout(deadline, h)
            .await
            .expect("the FIFO open ends within the deadline")
            .unwrap()
            .expect_err("a FIFO is not a volume");
        assert_eq!(err.code(), Code::Internal, "{err:?}");
        assert!(
            err.message().contains("open /data/fifo: ") && !err.message().contains("succeeded"),
            "{err:?}"
        );
    }
    assert!(
        d.log().contains("not a regular file"),
        "the refusal is not logged:\n{}",
        d.log()
    );
    still_serves(&mut c).await;
}
