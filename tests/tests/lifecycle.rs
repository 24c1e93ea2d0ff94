//! `wasmgate lifecycle` against a whole node configured like the embedded defaults (CNI with
//! `bridge-ipam`, CSI with `hostpath-csi`, CRI in front of the builtin runtime with the inject
//! hook, the runtime networking its pods with the default network it writes), in a temp dir:
//! every step passes, the runtime gives the pod an address in the default podcidr and the hook's
//! env var reaches the container, and afterwards nothing is left: no pod, no container, no
//! volume, no netns, no host veth, no mount.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use wasmgate_proto::csi::v1 as csi;
use wasmgate_proto::csi::v1::controller_client::ControllerClient;
use wasmgate_tests::{Daemon, TEST_NODE, bin, cri, eventually, plugin};

/// A node like the embedded defaults: CSI when `csi`, the hooks given, pods networked.
fn node(csi: bool, hooks: &[(&str, PathBuf, &str)]) -> Daemon {
    Daemon::start_node_with(csi, hooks, Some(""))
}

/// One `wasmgate lifecycle --json` run.
struct Run {
    exit: i32,
    steps: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn names(&self) -> Vec<&str> {
        self.steps
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect()
    }

    fn step(&self, name: &str) -> &Value {
        self.steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {}", self.stdout))
    }

    fn context(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// `wasmgate lifecycle` against `d`, staging and publishing under `tmp`, the daemon's
/// `[csi] kubelet_dir`.
fn lifecycle(d: &Daemon, csi_socket: &Path, tmp: &Path) -> Run {
    std::fs::create_dir_all(tmp).unwrap();
    let out = Command::new(bin("wasmgate"))
        .arg("lifecycle")
        .arg("--cri")
        .arg(d.cri_socket())
        .arg("--csi")
        .arg(csi_socket)
        .arg("--json")
        .arg("--kubelet-dir")
        .arg(tmp)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let steps = stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l:?}"))
        })
        .collect();
    Run {
        exit: out.status.code().unwrap_or(-1),
        steps,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Mount points at or under `dir`, in the test's (the machine's) mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// Asserts that the run left nothing behind on `d` and the machine.
async fn assert_nothing_left(d: &Daemon, run: &Run, tmp: &Path) {
    let ctx = run.context();
    let (mut rt, _) = cri::clients(d.cri_socket()).await;
    let pods = cri::pods(&mut rt).await;
    assert!(pods.is_empty(), "pods left: {pods:?}\n{ctx}");
    let containers = cri::containers(&mut rt).await;
    assert!(
        containers.is_empty(),
        "containers left: {containers:?}\n{ctx}"
    );

    if d.csi_socket().exists() {
        let ch = wasmgate_proto::unix_channel(d.csi_socket()).await.unwrap();
        let volumes = ControllerClient::new(ch)
            .list_volumes(csi::ListVolumesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert!(volumes.is_empty(), "volumes left: {volumes:?}\n{ctx}");
    }

    // The runtime pinned the pod's namespace where it was told to, and removed it.
    let ns = run.step("pod network")["facts"]["netns"].as_str().unwrap();
    assert!(Path::new(ns).starts_with(d.netns_dir()), "{ns}");
    assert!(!Path::new(ns).exists(), "netns {ns} left\n{ctx}");
    assert!(
        d.pinned_netns().is_empty(),
        "netns left: {:?}\n{ctx}",
        d.pinned_netns()
    );

    let mounts = mounts_under(&d.dir);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}\n{ctx}");
    let files: Vec<PathBuf> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.is_empty(), "volume dirs left: {files:?}\n{ctx}");

    // DEL answers once the pod is cut off; the kernel destroys the host veth right behind it.
    eventually("the pod's host veth is destroyed", || {
        d.node.links("veth").is_empty()
    });
}

fn inject_hook() -> [(&'static str, PathBuf, &'static str); 1] {
    [(
        "inject",
        plugin("hook-inject"),
        "config = { node-name = \"wasmgate-test-node\" }",
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_lives_and_is_torn_down_through_cri_cni_and_csi() {
    let d = node(true, &inject_hook());
    let tmp = d.kubelet_dir();
    let run = lifecycle(&d, &d.csi_socket(), &tmp);
    let ctx = run.context();
    assert_eq!(run.exit, 0, "{ctx}\n{}", d.log());
    assert_eq!(
        run.names(),
        [
            "RunPodSandbox",
            "pod network",
            "CreateVolume",
            "NodeStageVolume",
            "NodePublishVolume",
            "write through volume",
            "PullImage",
            "CreateContainer",
            "StartContainer",
            "PodSandboxStatus",
            "ContainerStatus",
            "ExecSync env",
            "ListContainers",
            "StopContainer",
            "RemoveContainer",
            "NodeUnpublishVolume",
            "NodeUnstageVolume",
            "DeleteVolume",
            "StopPodSandbox",
            "pod network removed",
            "RemovePodSandbox",
            "remove volume dirs",
        ],
        "{ctx}"
    );
    for s in &run.steps {
        assert_eq!(s["ok"], true, "{s}\n{ctx}");
        assert_eq!(s["skipped"], false, "{s}\n{ctx}");
        assert!(s["elapsed_ms"].as_f64().unwrap() >= 0.0, "{s}");
    }
    let phases: Vec<&str> = run
        .steps
        .iter()
        .map(|s| s["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases[0], "setup");
    assert_eq!(phases[9], "check");
    assert_eq!(phases[13], "teardown");

    // The runtime ran the default network it wrote, on the daemon's own CNI socket: the address
    // is in its podcidr, 10.241.0.0/24, on the pod's eth0, and the runtime reports it throughout.
    let conflist: Value = serde_json::from_slice(
        &std::fs::read(d.dir.join("state/net.d/10-wasmgate.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        conflist["plugins"][0]["socket"],
        d.cni_socket().to_str().unwrap()
    );
    let net = &run.step("pod network")["facts"];
    assert_eq!(net["network"], "wasmgate", "{ctx}");
    assert_eq!(net["lo"], "up");
    let ip = net["ip"].as_str().unwrap();
    let octets: Vec<u8> = ip.split('.').map(|o| o.parse().unwrap()).collect();
    assert_eq!(&octets[..3], [10, 241, 0], "{ip}");
    assert!(octets[3] > 1 && octets[3] < 255, "{ip}");
    assert_eq!(net["eth0"], format!("{ip}/24"));
    assert_eq!(run.step("PodSandboxStatus")["facts"]["ip"], ip);
    assert_eq!(run.step("pod network removed")["facts"]["removed"], true);

    // The volume was mounted where the container's mount points, and written through.
    let target = run.step("NodePublishVolume")["facts"]["target"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(target.starts_with(tmp.to_str().unwrap()), "{target}");
    assert_eq!(run.step("write through volume")["facts"]["mounted"], true);
    let mounts = run.step("ContainerStatus")["facts"]["mounts"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(mounts, format!("{target} -> /data"), "{ctx}");

    // The container's env: ours, and what the inject hook added.
    let env: Vec<&str> = run.step("ExecSync env")["facts"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(env.contains(&"DEMO=1"), "{env:?}");
    assert!(
        env.contains(&format!("WASMGATE_NODE={TEST_NODE}").as_str()),
        "{env:?}"
    );

    assert_nothing_left(&d, &run, &tmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_csi_socket_the_volume_is_skipped_and_the_rest_passes() {
    let d = node(false, &inject_hook());
    assert!(!d.csi_socket().exists());
    let tmp = d.kubelet_dir();
    let run = lifecycle(&d, &d.csi_socket(), &tmp);
    let ctx = run.context();
    assert_eq!(run.exit, 0, "{ctx}\n{}", d.log());
    assert_eq!(
        run.names(),
        [
            "RunPodSandbox",
            "pod network",
            "CSI volume",
            "PullImage",
            "CreateContainer",
            "StartContainer",
            "PodSandboxStatus",
            "ContainerStatus",
            "ExecSync env",
            "ListContainers",
            "StopContainer",
            "RemoveContainer",
            "StopPodSandbox",
            "pod network removed",
            "RemovePodSandbox",
        ],
        "{ctx}"
    );
    let skipped = run.step("CSI volume");
    assert_eq!(skipped["skipped"], true, "{skipped}");
    assert_eq!(skipped["ok"], true, "{skipped}");
    assert_eq!(
        skipped["message"],
        format!("skipped: no CSI socket at {}", d.csi_socket().display()),
    );
    for s in run.steps.iter().filter(|s| s["step"] != "CSI volume") {
        assert_eq!(s["ok"], true, "{s}\n{ctx}");
        assert_eq!(s["skipped"], false, "{s}\n{ctx}");
    }
    assert!(
        run.step("CreateContainer")["facts"].get("mount").is_none(),
        "{ctx}"
    );
    let env = run.step("ExecSync env")["facts"]["env"].to_string();
    assert!(env.contains(&format!("WASMGATE_NODE={TEST_NODE}")), "{env}");

    assert_nothing_left(&d, &run, &tmp).await;
}

/// The text output: one line per step with its mark and time, and the env lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_marks_each_step_and_fails_with_a_clear_message() {
    let d = node(false, &inject_hook());
    let tmp = d.kubelet_dir();
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(bin("wasmgate"))
        .arg("lifecycle")
        .arg("--cri")
        .arg(d.cri_socket())
        .arg("--csi")
        .arg(d.csi_socket())
        .arg("--kubelet-dir")
        .arg(&tmp)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("✓ RunPodSandbox"), "{text}");
    assert!(text.contains("- CSI volume"), "{text}");
    assert!(text.contains("skipped: no CSI socket at"), "{text}");
    assert!(text.contains("ip=10.241.0."), "{text}");
    assert!(
        text.contains(&format!("WASMGATE_NODE={TEST_NODE}")),
        "{text}"
    );
    assert!(text.contains("steps passed"), "{text}");
    assert!(!text.contains('✗'), "{text}");

    // No daemon on the CRI socket: the first step fails, naming it, and the exit status is 1.
    let missing = d.dir.join("no-such-cri.sock");
    let out = Command::new(bin("wasmgate"))
        .arg("lifecycle")
        .arg("--cri")
        .arg(&missing)
        .arg("--kubelet-dir")
        .arg(&tmp)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("✗ RunPodSandbox"), "{text}");
    assert!(
        text.contains(&format!("cannot connect to {}", missing.display())),
        "{text}"
    );
    assert!(text.contains("failed at RunPodSandbox"), "{text}");
}

/// A hook that denies CreateContainer: the run stops there, tears down the pod, its network and
/// its volume all the same, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_container_fails_the_run_and_everything_is_still_torn_down() {
    let d = node(
        true,
        &[(
            "inject",
            plugin("hook-inject"),
            "config = { env-name = \"A=B\" }",
        )],
    );
    let tmp = d.kubelet_dir();
    let run = lifecycle(&d, &d.csi_socket(), &tmp);
    let ctx = run.context();
    assert_eq!(run.exit, 1, "{ctx}");
    assert_eq!(
        run.names(),
        [
            "RunPodSandbox",
            "pod network",
            "CreateVolume",
            "NodeStageVolume",
            "NodePublishVolume",
            "write through volume",
            "PullImage",
            "CreateContainer",
            "NodeUnpublishVolume",
            "NodeUnstageVolume",
            "DeleteVolume",
            "StopPodSandbox",
            "pod network removed",
            "RemovePodSandbox",
            "remove volume dirs",
        ],
        "{ctx}"
    );
    let failed: Vec<&Value> = run.steps.iter().filter(|s| s["ok"] == false).collect();
    assert_eq!(failed.len(), 1, "{ctx}");
    let err = failed[0]["error"].as_str().unwrap();
    assert_eq!(failed[0]["step"], "CreateContainer", "{ctx}");
    assert!(err.starts_with("PERMISSION_DENIED: "), "{err}");
    assert!(err.contains("env-name"), "{err}");

    assert_nothing_left(&d, &run, &tmp).await;
}

/// A runtime that does not network its pods (the builtin one without `[cri.network]`): the
/// run fails at the pod network check, saying so, and the pod is still torn down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_does_not_network_its_pods_fails_the_run_clearly() {
    let d = Daemon::start_node(false, &inject_hook());
    let tmp = d.kubelet_dir();
    let run = lifecycle(&d, &d.csi_socket(), &tmp);
    let ctx = run.context();
    assert_eq!(run.exit, 1, "{ctx}");
    assert_eq!(
        run.names(),
        [
            "RunPodSandbox",
            "pod network",
            "StopPodSandbox",
            "RemovePodSandbox"
        ],
        "{ctx}"
    );
    let err = run.step("pod network")["error"].as_str().unwrap();
    assert!(
        err.starts_with("the runtime did not network the pod: PodSandboxStatus reports no IP"),
        "{err}"
    );
    assert!(err.contains("[cri.network]"), "{err}");
    let (mut rt, _) = cri::clients(d.cri_socket()).await;
    assert!(cri::pods(&mut rt).await.is_empty(), "{ctx}");
}
