//! `wasmgate csi`, the hand-driven CSI client, against a real daemon serving the example
//! hostpath driver: the worked example an operator would type, with real bind mounts, then its
//! error reporting (gRPC status → exit 2, no socket → exit 1).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use wasmgate_tests::csi::{is_mount_point, pod_paths};
use wasmgate_tests::{Daemon, TEST_DRIVER, TEST_NODE, bin};

fn run(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin("wasmgate"))
        .arg("csi")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run wasmgate csi")
}

/// Runs `wasmgate csi ARGS`, asserting success, and returns its stdout.
fn ok(d: &Daemon, args: &[&str]) -> String {
    let out = run(&d.csi_socket(), args);
    assert!(
        out.status.success(),
        "wasmgate csi {args:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `wasmgate csi ARGS --json` (last, as the README writes it), parsed.
fn ok_json(d: &Daemon, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ok(d, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn worked_example_create_stage_publish_snapshot_restore_teardown() {
    let d = Daemon::start_csi("");

    // info: identity, capabilities, probe and node info in one go.
    let info = ok(&d, &["info"]);
    for want in [
        TEST_DRIVER,
        TEST_NODE,
        "CONTROLLER_SERVICE",
        "VOLUME_EXPANSION=ONLINE",
        "CREATE_DELETE_VOLUME",
        "CREATE_DELETE_SNAPSHOT",
        "STAGE_UNSTAGE_VOLUME",
        "GET_VOLUME_STATS",
    ] {
        assert!(info.contains(want), "info lacks {want}:\n{info}");
    }
    let info = ok_json(&d, &["info"]);
    assert_eq!(info["name"], TEST_DRIVER, "{info}");
    assert_eq!(info["ready"], true, "{info}");
    assert_eq!(info["node_id"], TEST_NODE, "{info}");
    assert!(
        info["controller_capabilities"]
            .as_array()
            .unwrap()
            .contains(&"LIST_VOLUMES".into()),
        "{info}"
    );

    // create, then the same name again (idempotent) in text form.
    let created = ok_json(&d, &["create", "pvc-cli", "--size", "64Mi"]);
    let vol = created["volume_id"].as_str().unwrap().to_string();
    assert_eq!(created["capacity_bytes"], 64 << 20, "{created}");
    assert!(created["content_source"].is_null(), "{created}");
    let again = ok(&d, &["create", "pvc-cli", "--size", "64Mi"]);
    assert!(
        again.contains(&vol) && again.contains("67108864 (64Mi)"),
        "{again}"
    );

    // stage and publish, as kubelet would, then write through the pod's mount.
    let (staging, target) = pod_paths(&d.kubelet_dir());
    let out = ok(&d, &["stage", &vol, s(&staging)]);
    assert!(out.contains("staged"), "{out}");
    assert!(
        is_mount_point(&staging),
        "staging path is not a mount point"
    );
    ok(&d, &["publish", &vol, s(&target), "--staging", s(&staging)]);
    assert!(is_mount_point(&target), "target is not a mount point");
    std::fs::write(target.join("hello.txt"), "from the pod").unwrap();
    let in_volume = d.csi_data().join("volumes").join(&vol).join("hello.txt");
    assert_eq!(std::fs::read_to_string(&in_volume).unwrap(), "from the pod");

    // stats: usage from statvfs plus the driver's condition.
    let stats = ok_json(&d, &["stats", &vol, s(&target)]);
    let bytes = stats["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["unit"] == "BYTES")
        .unwrap_or_else(|| panic!("no BYTES usage: {stats}"));
    assert!(bytes["total"].as_i64().unwrap() > 0, "{stats}");
    assert_eq!(stats["volume_condition"]["abnormal"], false, "{stats}");
    let text = ok(&d, &["stats", &vol, s(&target)]);
    assert!(
        text.contains("BYTES") && text.contains("condition: ok"),
        "{text}"
    );

    // capacity and expand.
    let cap = ok_json(&d, &["capacity"]);
    assert!(cap["available_capacity"].as_i64().unwrap() > 0, "{cap}");
    let grown = ok_json(&d, &["expand", &vol, "128Mi"]);
    assert_eq!(grown["capacity_bytes"], 128 << 20, "{grown}");

    // snapshot, then restore it into a second volume.
    let snap = ok_json(&d, &["snapshot", "snap-cli", &vol]);
    let snap_id = snap["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(snap["source_volume_id"], vol.as_str(), "{snap}");
    assert_eq!(snap["ready_to_use"], true, "{snap}");
    let listed = ok_json(&d, &["snapshots", "--volume", &vol]);
    assert_eq!(
        listed["entries"][0]["snapshot"]["snapshot_id"],
        snap_id.as_str(),
        "{listed}"
    );
    let restored = ok_json(
        &d,
        &[
            "create",
            "pvc-restored",
            "--size",
            "128Mi",
            "--from-snapshot",
            &snap_id,
        ],
    );
    let vol2 = restored["volume_id"].as_str().unwrap().to_string();
    assert_ne!(vol2, vol);
    assert_eq!(
        restored["content_source"]["snapshot"]["snapshot_id"],
        snap_id.as_str(),
        "{restored}"
    );
    assert_eq!(
        std::fs::read_to_string(d.csi_data().join("volumes").join(&vol2).join("hello.txt"))
            .unwrap(),
        "from the pod"
    );

    // list: both volumes, JSON and text.
    let list = ok_json(&d, &["list"]);
    let mut ids: Vec<&str> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["volume"]["volume_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut want = vec![vol.as_str(), vol2.as_str()];
    want.sort();
    assert_eq!(ids, want, "{list}");
    let text = ok(&d, &["list"]);
    assert!(
        text.starts_with("VOLUME ID")
            && text.contains(&vol)
            && text.contains(&format!("snapshot {snap_id}")),
        "{text}"
    );

    // teardown, in kubelet's order.
    let out = ok(&d, &["unpublish", &vol, s(&target)]);
    assert!(out.contains("unpublished"), "{out}");
    assert!(!target.exists(), "unpublish must remove the target");
    ok(&d, &["unstage", &vol, s(&staging)]);
    assert!(!is_mount_point(&staging), "staging path is still mounted");
    assert_eq!(ok_json(&d, &["delete", &vol]), serde_json::json!({}));
    let out = ok(&d, &["delete", &vol2]);
    assert_eq!(out.trim(), format!("deleted volume {vol2}"));
    assert!(!in_volume.exists());
    assert_eq!(ok(&d, &["list"]).trim(), "no volumes");
    ok(&d, &["delete-snapshot", &snap_id]);
    let left = ok_json(&d, &["snapshots"]);
    assert_eq!(left["entries"], serde_json::json!([]), "{left}");
}

#[test]
fn ephemeral_publish_and_grpc_errors() {
    let d = Daemon::start_csi("");

    // An inline ephemeral volume: no create, the publish makes it, the unpublish removes it.
    let (_, target) = pod_paths(&d.kubelet_dir());
    let id = "csi-cli-ephemeral";
    ok(
        &d,
        &[
            "publish",
            id,
            s(&target),
            "--ephemeral",
            "--context",
            "size=64Mi",
        ],
    );
    assert!(
        is_mount_point(&target),
        "ephemeral target is not a mount point"
    );
    let list = ok_json(&d, &["list"]);
    assert_eq!(list["entries"][0]["volume"]["volume_id"], id, "{list}");
    assert_eq!(
        list["entries"][0]["volume"]["capacity_bytes"],
        64 << 20,
        "{list}"
    );
    ok(&d, &["unpublish", id, s(&target)]);
    assert!(!target.exists());
    assert!(!d.csi_data().join("volumes").join(id).exists());

    // A gRPC status: exit 2, `error: <CODE>: <message>` on stderr, nothing on stdout.
    let out = run(&d.csi_socket(), &["delete", ""]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: INVALID_ARGUMENT: "),
        "stderr: {stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = run(&d.csi_socket(), &["stats", "vol-nope", s(&d.dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: NOT_FOUND: "), "stderr: {stderr}");
}

#[test]
fn unreachable_socket_exits_1_and_names_it() {
    let dir = std::env::temp_dir().join(wasmgate_tests::unique("wasmgate-csi-cli-"));
    let socket = dir.join("no-such.sock");
    let out = run(&socket, &["info"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to {}", socket.display()))
            && stderr.contains("is wasmgate serve running with a [csi] section?"),
        "stderr: {stderr}"
    );
}
