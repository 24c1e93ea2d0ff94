//! wasmgate's sockets as real non-Rust clients see them: a Go client built from Debian's grpc-go
//! (the stack of kubelet and crictl) and a Python one on PyPI's grpcio, both in
//! `tests/clients`, run against the CRI socket (in front of the builtin runtime, and in front of a
//! real containerd), the CSI socket and kubelet's registration socket.
//!
//! Each dials as its ecosystem does, with no authority override: grpc-go with the bare socket
//! path as its target and a context dialer (kubelet 1.26–1.29, crictl), which sends the path as
//! the HTTP/2 `:authority`; grpc-go with a `unix://` target (`:authority` "localhost"); grpcio
//! with `unix:/path` and `unix:///path` (the percent-encoded path as `:authority`, `tmp%2Fx.sock`
//! for `/tmp/x.sock`). Each client prints one line per call and fails on any unexpected answer;
//! the test checks the lines, the exit status, and that the calls reached the daemon: its trace
//! has a record of every call, CreateContainer went through the inject hook, and the
//! registration was logged.
//!
//! Needs what `scripts/setup` installs: Debian's Go toolchain, grpc-go, protoc and Go plugins,
//! grpcio and grpcio-tools in the tool venv, plus containerd and the rest for the containerd
//! case. `tests/clients/build` (run here, once per test process) builds the clients.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmgate_daemon::admin::TraceFilter;
use wasmgate_daemon::trace::CallRecord;
use wasmgate_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use wasmgate_tests::containerd::{BUSYBOX_IMAGE, CriNode, pb};
use wasmgate_tests::{Daemon, PluginEntry, TEST_DRIVER, TEST_NODE, cri, plugin, repo};

/// What the inject hook's pre-hook decides for every CreateContainer.
const INJECTED: &str = "adjust: annotations wasmgate.io/node; env WASMGATE_NODE";

/// One client and the way it dials.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    /// grpc-go, target = the bare socket path, a context dialer: kubelet and crictl.
    GoPath,
    /// grpc-go, target = `unix:///path`.
    GoUnixUri,
    /// grpcio, target = `unix:/path`.
    PythonUnix,
    /// grpcio, target = `unix:///path`.
    PythonUnixUri,
}

const CLIENTS: [Client; 4] = [
    Client::GoPath,
    Client::GoUnixUri,
    Client::PythonUnix,
    Client::PythonUnixUri,
];

impl Client {
    /// A short name, usable in pod and volume names.
    fn tag(self) -> &'static str {
        match self {
            Client::GoPath => "go-path",
            Client::GoUnixUri => "go-unix-uri",
            Client::PythonUnix => "py-unix",
            Client::PythonUnixUri => "py-unix-uri",
        }
    }

    /// The client's `--dial` form.
    fn dial(self) -> &'static str {
        match self {
            Client::GoPath => "path",
            Client::GoUnixUri => "unix-uri",
            Client::PythonUnix => "unix-path",
            Client::PythonUnixUri => "unix-uri",
        }
    }

    /// The client's command line for `service` on `socket`, before its service flags (both
    /// clients take `--flag value`).
    fn command(self, service: &str, socket: &Path) -> Command {
        let clients = built();
        let mut cmd = match self {
            Client::GoPath | Client::GoUnixUri => Command::new(clients.join("go-client")),
            Client::PythonUnix | Client::PythonUnixUri => {
                let mut c = Command::new(repo().join("target/tools/venv/bin/python"));
                c.arg(repo().join("tests/clients/python/client.py"))
                    .arg("--stubs")
                    .arg(clients.join("python-stubs"));
                c
            }
        };
        cmd.arg(service)
            .args(["--dial", self.dial()])
            .arg("--socket")
            .arg(socket);
        cmd
    }
}

/// `tests/clients/build`, once per test process: the clients' directory.
fn built() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new(repo().join("tests/clients/build"))
                .output()
                .expect("run tests/clients/build");
            assert!(
                out.status.success(),
                "tests/clients/build failed (run scripts/setup first): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            repo().join("target/tools/clients")
        })
        .clone()
}

/// One client run: what it printed and how it exited.
struct Run {
    label: String,
    exit: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// The methods of the calls the client made and that went as it expected.
    fn ok_methods(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix("ok "))
            .filter_map(|l| l.split(' ').nth(1))
            .map(String::from)
            .collect()
    }

    /// Why the run is not exactly `expected` with exit status 0, if it is not.
    fn mismatch(&self, expected: &[String]) -> Option<String> {
        let lines = self.lines();
        if self.exit == Some(0) && lines == expected {
            return None;
        }
        Some(format!(
            "{}: exit {:?}\n  printed:\n    {}\n  expected:\n    {}\n  stderr:\n    {}",
            self.label,
            self.exit,
            lines.join("\n    "),
            expected.join("\n    "),
            self.stderr.trim().replace('\n', "\n    ")
        ))
    }
}

fn run(client: Client, service: &str, socket: &Path, args: &[String]) -> Run {
    let label = format!("{} {service} on {}", client.tag(), socket.display());
    let started = Instant::now();
    let out = client
        .command(service, socket)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let r = Run {
        label,
        exit: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "{} ({:?}, exit {:?}):\n  {}",
        r.label,
        started.elapsed(),
        r.exit,
        r.stdout.trim().replace('\n', "\n  ")
    );
    r
}

fn lines(service: &str, calls: &[&str]) -> Vec<String> {
    calls.iter().map(|c| format!("ok {service} {c}")).collect()
}

/// How the runtime answers the two server streams the CRI client calls: `OK` or a code, as the
/// clients spell it.
struct Streams {
    containers: String,
    events: String,
}

impl Streams {
    /// Both served, as the builtin runtime does.
    fn served() -> Self {
        Streams {
            containers: "OK".into(),
            events: "OK".into(),
        }
    }

    /// The clients' flags that expect this.
    fn args(&self) -> [String; 4] {
        [
            "--stream-containers".into(),
            self.containers.clone(),
            "--container-events".into(),
            self.events.clone(),
        ]
    }
}

/// How containerd itself answers StreamContainers and GetContainerEvents: the proxy passes
/// streams through as they come, so a client must see the same through it. (containerd 1.6
/// serves neither; 1.7 serves the events.)
async fn containerd_streams(socket: &Path) -> Streams {
    let code = |s: tonic::Status| format!("{:?}", s.code());
    let ch = wasmgate_proto::unix_channel(socket).await.unwrap();
    let mut rt = RuntimeServiceClient::new(ch);
    let containers = match rt
        .stream_containers(pb::StreamContainersRequest::default())
        .await
    {
        Ok(resp) => {
            let mut s = resp.into_inner();
            loop {
                match s.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break "OK".to_string(),
                    Err(e) => break code(e),
                }
            }
        }
        Err(e) => code(e),
    };
    // A served event stream answers with headers at once, then waits for events.
    let events = tokio::time::timeout(
        Duration::from_secs(10),
        rt.get_container_events(pb::GetEventsRequest::default()),
    )
    .await
    .expect("containerd answers GetContainerEvents");
    let events = events.map_or_else(code, |_| "OK".to_string());
    Streams { containers, events }
}

/// The CRI lines: a pod and a container through their whole life, as kubelet drives them.
/// `pulled` is PullImage (always) or ImageStatus (kubelet's IfNotPresent, the image is there).
fn cri_lines(pulled: &str, streams: &Streams) -> Vec<String> {
    let stream = |m: &str, how: &str| {
        if how == "OK" {
            m.to_string()
        } else {
            format!("{m} {how}")
        }
    };
    let mut calls = vec!["Version".to_string(), "Status".into(), pulled.into()];
    calls.extend(
        [
            "RunPodSandbox",
            "CreateContainer",
            "StartContainer",
            "ContainerStatus",
            "ExecSync",
            "ListContainers",
        ]
        .map(String::from),
    );
    calls.push(stream("StreamContainers", &streams.containers));
    calls.push(stream("GetContainerEvents", &streams.events));
    calls.extend(
        [
            "ContainerStatus NotFound",
            "StopContainer",
            "RemoveContainer",
            "StopPodSandbox",
            "RemovePodSandbox",
        ]
        .map(String::from),
    );
    let calls: Vec<&str> = calls.iter().map(String::as_str).collect();
    lines("cri", &calls)
}

fn csi_lines() -> Vec<String> {
    lines(
        "csi",
        &[
            "GetPluginInfo",
            "NodeGetInfo",
            "CreateVolume",
            "NodeStageVolume",
            "NodePublishVolume",
            "NodePublishVolume InvalidArgument",
            "NodeUnpublishVolume",
            "NodeUnstageVolume",
            "DeleteVolume",
        ],
    )
}

fn registration_lines() -> Vec<String> {
    lines(
        "registration",
        &[
            "GetInfo",
            "NotifyRegistrationStatus",
            "GetPluginInfo Unimplemented",
        ],
    )
}

fn counts<'a>(methods: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut m = BTreeMap::new();
    for x in methods {
        *m.entry(x).or_default() += 1;
    }
    m
}

/// Why the daemon's trace records of `interface` do not show every call of `run`, if they do
/// not: a record per call the client made (the records of streams come when they end, which
/// the client's exit ensures); for CRI, CreateContainer adjusted by the inject hook and the
/// unknown container's ContainerStatus refused with NotFound.
fn trace_mismatch(run: &Run, interface: &str, records: &[CallRecord]) -> Option<String> {
    let ours: Vec<&CallRecord> = records
        .iter()
        .filter(|r| r.interface == interface)
        .collect();
    let called = run.ok_methods();
    let want = counts(called.iter().map(String::as_str));
    let got = counts(ours.iter().map(|r| r.method.as_str()));
    let shown = || {
        ours.iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect::<Vec<_>>()
            .join("\n    ")
    };
    if want != got {
        return Some(format!(
            "{}: the {interface} trace has {got:?}, the client made {want:?}:\n    {}",
            run.label,
            shown()
        ));
    }
    if interface != "cri" {
        return None;
    }
    let injected = ours
        .iter()
        .filter(|r| r.method == "CreateContainer")
        .all(|r| r.ok && cri::decision(r, "inject", "pre") == Some(INJECTED));
    if !injected {
        return Some(format!(
            "{}: CreateContainer did not go through the inject hook:\n    {}",
            run.label,
            shown()
        ));
    }
    let refused: Vec<Option<u32>> = ours
        .iter()
        .filter(|r| r.method == "ContainerStatus" && !r.ok)
        .map(|r| r.code)
        .collect();
    (refused != [Some(tonic::Code::NotFound as u32)]).then(|| {
        format!(
            "{}: the unknown container's ContainerStatus is not traced as NotFound:\n    {}",
            run.label,
            shown()
        )
    })
}

/// The records of the calls `run` made, from `rx`: waits until they are all there (a record
/// follows its call's answer by a moment), or a few seconds.
fn records_of(rx: &mpsc::Receiver<CallRecord>, run: &Run, interface: &str) -> Vec<CallRecord> {
    let want = run.ok_methods().len();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut records = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(r) => records.push(r),
            Err(mpsc::RecvTimeoutError::Timeout)
                if records.iter().filter(|r| r.interface == interface).count() >= want =>
            {
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    records
}

/// Panics with every combination that went wrong, after all of them ran.
fn assert_all(failures: &Mutex<Vec<String>>, context: impl FnOnce() -> String) {
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of the runs failed:\n\n{}\n{}",
        failures.len(),
        failures.join("\n\n"),
        context()
    );
}

/// The daemon with the builtin runtime behind its CRI socket (inject hook), the example CSI
/// driver on its CSI socket, and its registration socket: every client and dial form on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_on_every_socket_of_a_builtin_node() {
    built();
    let d = Daemon::start_node(
        true,
        &[(
            "inject",
            plugin("hook-inject"),
            "config = { node-name = \"foreign-node\" }",
        )],
    );
    let rx = cri::follow(&d, TraceFilter::default());
    let failures = Mutex::new(Vec::new());
    let fail = |why: String| failures.lock().unwrap().push(why);

    for client in CLIENTS {
        let tag = client.tag();

        let cri_args: Vec<String> = [
            "--pod",
            &format!("fc-{tag}"),
            "--runtime",
            "wasmgate-builtin",
            "--env",
            "WASMGATE_NODE=foreign-node",
            "--annotation",
            "wasmgate.io/node=foreign-node",
        ]
        .map(String::from)
        .to_vec();
        let r = run(client, "cri", &d.cri_socket(), &cri_args);
        let records = records_of(&rx, &r, "cri");
        if let Some(why) = r
            .mismatch(&cri_lines("PullImage", &Streams::served()))
            .or_else(|| trace_mismatch(&r, "cri", &records))
        {
            fail(why);
        }

        let csi_args: Vec<String> = [
            "--driver",
            TEST_DRIVER,
            "--node",
            TEST_NODE,
            "--kubelet-dir",
            &d.kubelet_dir().to_string_lossy(),
            "--name",
            &format!("pvc-{tag}"),
        ]
        .map(String::from)
        .to_vec();
        let r = run(client, "csi", &d.csi_socket(), &csi_args);
        let records = records_of(&rx, &r, "csi");
        if let Some(why) = r
            .mismatch(&csi_lines())
            .or_else(|| trace_mismatch(&r, "csi", &records))
        {
            fail(why);
        }

        let registered = |d: &Daemon| d.log().matches("kubelet registered the driver").count();
        let before = registered(&d);
        let reg_args: Vec<String> = [
            "--driver",
            TEST_DRIVER,
            "--endpoint",
            &d.csi_socket().to_string_lossy(),
        ]
        .map(String::from)
        .to_vec();
        let r = run(client, "registration", &d.registration_socket(), &reg_args);
        if let Some(why) = r.mismatch(&registration_lines()) {
            fail(why);
        } else {
            // The log is written a moment after the answer.
            let deadline = Instant::now() + Duration::from_secs(5);
            while registered(&d) == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if registered(&d) != before + 1 {
                fail(format!(
                    "{}: the daemon did not log the registration",
                    r.label
                ));
            }
        }
    }
    assert_all(&failures, || format!("--- daemon log:\n{}", d.log()));
    let mut d = d;
    assert!(d.alive(), "{}", d.log());
}

/// The CRI proxy in front of a real containerd (`wasmgate_tests::containerd`, inject hook):
/// every client and dial form runs a pod and a container through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_through_the_proxy_to_containerd() {
    built();
    let node = CriNode::start(
        "10.240.9.0/24",
        vec![
            PluginEntry::new("inject", plugin("hook-inject"))
                .extra("config = { node-name = \"foreign-ctrd\" }"),
        ],
    )
    .await;
    let streams = containerd_streams(&node.containerd.socket()).await;
    let failures = Mutex::new(Vec::new());
    let fail = |why: String| failures.lock().unwrap().push(why);

    for client in CLIENTS {
        let tag = client.tag();
        let pod = format!("fc-{tag}");
        let args: Vec<String> = [
            "--pod",
            &pod,
            "--runtime",
            "containerd",
            // Imported, not pullable: kubelet's IfNotPresent asks ImageStatus first.
            "--image",
            BUSYBOX_IMAGE,
            "--pull",
            "if-not-present",
            "--cgroup-parent",
            &format!("{}/pod-{tag}", node.containerd.cgroup_root),
            "--log-dir",
            &node
                .containerd
                .pod_logs()
                .join(format!("default_{pod}"))
                .to_string_lossy(),
            "--env",
            "WASMGATE_NODE=foreign-ctrd",
            "--annotation",
            "wasmgate.io/node=foreign-ctrd",
        ]
        .map(String::from)
        .into_iter()
        .chain(streams.args())
        .collect();
        let before = node.trace().len();
        let r = run(client, "cri", &node.daemon.cri_socket(), &args);
        let want = r.ok_methods().len();
        let deadline = Instant::now() + Duration::from_secs(5);
        let records = loop {
            let records: Vec<CallRecord> = node.trace()[before..].to_vec();
            let cri = records.iter().filter(|c| c.interface == "cri").count();
            if cri >= want || Instant::now() > deadline {
                break records;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(why) = r
            .mismatch(&cri_lines("ImageStatus", &streams))
            .or_else(|| trace_mismatch(&r, "cri", &records))
        {
            fail(why);
        }
    }
    assert_all(&failures, || node.context());
}
