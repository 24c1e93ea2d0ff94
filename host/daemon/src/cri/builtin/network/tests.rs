//! The pod network against the recording fakes: which plugins run in what order with what, and
//! what is left after each outcome. The real kernel and plugins are in
//! `tests/tests/cri_pod_network.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tonic::{Code, Request};
use wasmgate_effects::{
    EffectError, ExecOutput, ExecRequest, NetnsCall, NetnsEffects, RecordingExec, RecordingNetns,
};
use wasmgate_proto::cri::v1 as pb;
use wasmgate_proto::cri::v1::runtime_service_server::RuntimeService;

use super::chain::plugin_config;
use super::{NetError, PodNetwork, Settings, confdir};
use crate::config::CniSection;
use crate::cri::builtin::Builtin;
use crate::state::Records;

/// A node: a conf dir, a bin dir with empty files for the plugin types, a state store.
struct Node {
    dir: PathBuf,
    records: Arc<Records>,
}

impl Node {
    fn new(tag: &str, types: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("wg-podnet-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        for t in types {
            std::fs::write(dir.join("bin").join(t), b"").unwrap();
        }
        let records = Arc::new(Records::open(&dir.join("host.redb")).unwrap());
        Node { dir, records }
    }

    fn conf(&self, file: &str, body: &Value) {
        std::fs::write(self.dir.join("net.d").join(file), body.to_string()).unwrap();
    }

    fn settings(&self) -> Settings {
        Settings {
            conf_dir: self.dir.join("net.d"),
            bin_dirs: vec![self.dir.join("empty"), self.dir.join("bin")],
            netns_dir: "/run/netns".into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn network(&self, netns: &Arc<RecordingNetns>, exec: &Arc<RecordingExec>) -> PodNetwork {
        PodNetwork::new(
            self.settings(),
            netns.clone(),
            exec.clone(),
            self.records.clone(),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn list(plugins: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": plugins})
}

/// What the fake plugins print: `a` makes the pod's interface and addresses (IPv6 listed
/// first), any other type passes `prevResult` on; DEL prints nothing.
fn plugins_that_work(req: &ExecRequest) -> Result<ExecOutput, EffectError> {
    let env: HashMap<&str, &str> = req
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let conf: Value = serde_json::from_slice(&req.stdin).unwrap();
    let stdout = match (env["CNI_COMMAND"], binary(req)) {
        ("ADD", "a") => json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "wgab12"},
                {"name": "eth0", "sandbox": env["CNI_NETNS"]},
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 1},
                {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 1},
            ],
        })
        .to_string(),
        ("ADD", _) => conf["prevResult"].to_string(),
        _ => String::new(),
    };
    Ok(ExecOutput {
        code: Some(0),
        stdout: stdout.into_bytes(),
        stderr: Vec::new(),
    })
}

fn binary(req: &ExecRequest) -> &str {
    req.binary.file_name().unwrap().to_str().unwrap()
}

fn env<'a>(req: &'a ExecRequest, key: &str) -> &'a str {
    req.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} not set in {:?}", req.env))
}

/// Each call as `COMMAND type`.
fn calls(exec: &RecordingExec) -> Vec<String> {
    exec.calls()
        .iter()
        .map(|r| format!("{} {}", env(r, "CNI_COMMAND"), binary(r)))
        .collect()
}

fn stdin(req: &ExecRequest) -> Value {
    serde_json::from_slice(&req.stdin).unwrap()
}

fn pod_config() -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: "web".into(),
            uid: "u-1".into(),
            namespace: "shop".into(),
            attempt: 0,
        }),
        port_mappings: vec![
            pb::PortMapping {
                protocol: pb::Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            },
            // No host port: nothing for the network to map.
            pb::PortMapping {
                protocol: pb::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 0,
                host_ip: String::new(),
            },
        ],
        annotations: [("team".to_string(), "blue".to_string())].into(),
        ..Default::default()
    }
}

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn add_runs_the_list_in_order_chaining_results_with_containerds_variables() {
    let node = Node::new("add", &["a", "b"]);
    node.conf(
        "10-net.conflist",
        &list(json!([
            {"type": "a", "capabilities": {"portMappings": true, "bandwidth": true}},
            {"type": "b", "runtimeConfig": {"own": 1}},
        ])),
    );
    let (netns, exec) = (
        Arc::new(RecordingNetns::new()),
        Arc::new(RecordingExec::new(plugins_that_work)),
    );
    let net = node.network(&netns, &exec);
    let a = net.setup(ID, &pod_config()).await.unwrap();

    let path = Path::new("/run/netns/wasmgate-0123456789abcdef");
    assert_eq!(a.netns, path);
    assert_eq!(netns.calls(), [NetnsCall::Create(path.into())]);
    assert_eq!(a.network, "podnet");
    assert_eq!(a.ips, ["10.0.0.5", "fd00::5"], "IPv4 first");
    assert_eq!(calls(&exec), ["ADD a", "ADD b"]);

    let reqs = exec.calls();
    for r in &reqs {
        assert_eq!(env(r, "CNI_CONTAINERID"), ID);
        assert_eq!(env(r, "CNI_NETNS"), path.to_str().unwrap());
        assert_eq!(env(r, "CNI_IFNAME"), "eth0");
        assert_eq!(
            env(r, "CNI_ARGS"),
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={ID};K8S_POD_UID=u-1"
            )
        );
        let bin = node.dir.join("bin");
        assert_eq!(
            env(r, "CNI_PATH"),
            format!("{}:{}", node.dir.join("empty").display(), bin.display())
        );
        assert_eq!(r.binary, bin.join(binary(r)));
        assert_eq!(r.timeout, Duration::from_secs(5));
    }
    // Each plugin gets the list's name and version; `a` the capability it declares that the
    // runtime has (portMappings with a host port), `b` its own runtimeConfig and a's result.
    let first = stdin(&reqs[0]);
    assert_eq!(first["name"], "podnet");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(
        first["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}]})
    );
    assert!(first.get("prevResult").is_none());
    let second = stdin(&reqs[1]);
    assert_eq!(second["runtimeConfig"], json!({"own": 1}));
    assert_eq!(second["prevResult"], a.result);

    let rec = node.records.pod_network(ID).unwrap().unwrap();
    assert_eq!(rec.result.as_ref(), Some(&a.result));
    assert_eq!(rec.conf_file, node.dir.join("net.d/10-net.conflist"));
}

#[tokio::test]
async fn del_runs_in_reverse_with_the_cached_result_then_the_netns_goes_and_twice_is_nothing() {
    let node = Node::new("del", &["a", "b"]);
    node.conf(
        "10-net.conflist",
        &list(json!([{"type": "a"}, {"type": "b"}])),
    );
    let (netns, exec) = (
        Arc::new(RecordingNetns::new()),
        Arc::new(RecordingExec::new(plugins_that_work)),
    );
    let net = node.network(&netns, &exec);
    let a = net.setup(ID, &pod_config()).await.unwrap();
    // A changed config applies to the next pod; this one's DEL runs what its ADD ran.
    node.conf("10-net.conflist", &list(json!([{"type": "c"}])));
    net.teardown(ID).await.unwrap();
    assert_eq!(calls(&exec), ["ADD a", "ADD b", "DEL b", "DEL a"]);
    for r in &exec.calls()[2..] {
        assert_eq!(stdin(r)["prevResult"], a.result);
        assert_eq!(env(r, "CNI_NETNS"), a.netns.to_str().unwrap());
    }
    assert!(netns.pinned().is_empty());
    assert!(node.records.pod_network(ID).unwrap().is_none());

    net.teardown(ID).await.unwrap();
    assert_eq!(exec.calls().len(), 4, "a second teardown runs nothing");
}

#[tokio::test]
async fn a_failing_plugin_fails_the_setup_naming_it_and_nothing_is_left() {
    let node = Node::new("fail", &["a", "b"]);
    node.conf(
        "10-net.conflist",
        &list(json!([{"type": "a"}, {"type": "b"}])),
    );
    let netns = Arc::new(RecordingNetns::new());
    let exec = Arc::new(RecordingExec::new(|req| {
        if binary(req) == "b" && env(req, "CNI_COMMAND") == "ADD" {
            return Ok(ExecOutput {
                code: Some(1),
                stdout: br#"{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"key x"}"#
                    .to_vec(),
                stderr: Vec::new(),
            });
        }
        plugins_that_work(req)
    }));
    let net = node.network(&netns, &exec);
    let err = net.setup(ID, &pod_config()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin type=\"b\" name=\"podnet\" failed (add): CNI error 7: bad config (key x)"
    );
    let status = err.status("set up", ID);
    assert_eq!(status.code(), Code::Unknown);
    assert!(
        status.message().starts_with(&format!(
            "failed to set up network for sandbox \"{ID}\": plugin type=\"b\""
        )),
        "{}",
        status.message()
    );

    // libcni has no cached result for a failed ADD: the cleanup DEL has no prevResult.
    assert_eq!(calls(&exec), ["ADD a", "ADD b", "DEL b", "DEL a"]);
    assert!(
        exec.calls()[2..]
            .iter()
            .all(|r| stdin(r).get("prevResult").is_none())
    );
    assert!(netns.pinned().is_empty());
    assert_eq!(netns.calls().len(), 2);
    assert!(node.records.pod_networks().unwrap().is_empty());
}

#[tokio::test]
async fn plugin_output_that_is_no_cni_error_is_reported_as_libcni_reports_it() {
    let node = Node::new("raw", &["a"]);
    node.conf("10-net.conflist", &list(json!([{"type": "a"}])));
    let cases: [(ExecOutput, &str); 4] = [
        (
            ExecOutput {
                code: Some(2),
                stdout: vec![],
                stderr: b"panic: boom\n".to_vec(),
            },
            "netplugin failed: \"panic: boom\"",
        ),
        (
            ExecOutput {
                code: Some(2),
                stdout: vec![],
                stderr: vec![],
            },
            "netplugin failed with no error message: exit status 2",
        ),
        (
            ExecOutput {
                code: None,
                stdout: b"garbage".to_vec(),
                stderr: vec![],
            },
            "netplugin failed (killed by a signal) but its diagnostic message is not a CNI error: \"garbage\"",
        ),
        (
            ExecOutput {
                code: Some(0),
                stdout: b"{\"cniVersion\":\"0.2.0\"}".to_vec(),
                stderr: vec![],
            },
            "failed (add): invalid result: unsupported CNI version \"0.2.0\"",
        ),
    ];
    for (out, want) in cases {
        let netns = Arc::new(RecordingNetns::new());
        let exec = Arc::new(RecordingExec::new(move |req| {
            if env(req, "CNI_COMMAND") == "ADD" {
                Ok(out.clone())
            } else {
                plugins_that_work(req)
            }
        }));
        let err = node
            .network(&netns, &exec)
            .setup(ID, &pod_config())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(want), "{err}\nwants {want}");
        assert!(netns.pinned().is_empty());
    }
}

#[tokio::test]
async fn a_plugin_past_its_deadline_or_missing_fails_the_setup() {
    let node = Node::new("exec", &["a"]);
    node.conf("10-net.conflist", &list(json!([{"type": "a"}])));
    let netns = Arc::new(RecordingNetns::new());
    let exec = Arc::new(RecordingExec::new(|req| {
        Err(EffectError::TimedOut {
            what: req.binary.clone(),
            after: req.timeout,
        })
    }));
    let err = node
        .network(&netns, &exec)
        .setup(ID, &pod_config())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("plugin type=\"a\" name=\"podnet\" failed (add): "),
        "{err}"
    );
    assert!(err.to_string().ends_with("timed out after 5s"), "{err}");
    assert!(netns.pinned().is_empty());

    node.conf("10-net.conflist", &list(json!([{"type": "nope"}])));
    let exec = Arc::new(RecordingExec::new(plugins_that_work));
    let err = node
        .network(&netns, &exec)
        .setup(ID, &pod_config())
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::PluginNotFound { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("failed to find plugin \"nope\" in path ["),
        "{err}"
    );
    assert!(exec.calls().is_empty());
    assert!(netns.pinned().is_empty());
    assert!(node.records.pod_networks().unwrap().is_empty());

    netns.fail_next_create("no space left");
    node.conf("10-net.conflist", &list(json!([{"type": "a"}])));
    let err = node
        .network(&netns, &exec)
        .setup(ID, &pod_config())
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("network namespace: "), "{err}");
    assert!(
        exec.calls().is_empty(),
        "no plugin runs without a namespace"
    );
    assert!(node.records.pod_networks().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_del_keeps_everything_for_the_retry_unless_containerd_would_pass_it_over() {
    let node = Node::new("retry", &["a"]);
    node.conf("10-net.conflist", &list(json!([{"type": "a"}])));
    let say = |msg: &'static str| {
        move |req: &ExecRequest| {
            if env(req, "CNI_COMMAND") == "DEL" {
                return Ok(ExecOutput {
                    code: Some(1),
                    stdout: format!("{{\"code\":11,\"msg\":\"{msg}\"}}").into_bytes(),
                    stderr: vec![],
                });
            }
            plugins_that_work(req)
        }
    };
    let netns = Arc::new(RecordingNetns::new());
    let failing = Arc::new(RecordingExec::new(say("try again later")));
    let a = node
        .network(&netns, &failing)
        .setup(ID, &pod_config())
        .await
        .unwrap();
    let err = node
        .network(&netns, &failing)
        .teardown(ID)
        .await
        .unwrap_err();
    assert_eq!(err.status("destroy", ID).code(), Code::Unknown);
    assert!(
        err.to_string()
            .contains("failed (delete): CNI error 11: try again later"),
        "{err}"
    );
    assert!(netns.is_pinned(&a.netns));
    assert!(node.records.pod_network(ID).unwrap().is_some());

    // "not found" is passed over even with the namespace there.
    let gone = Arc::new(RecordingExec::new(say("container not found")));
    node.network(&netns, &gone).teardown(ID).await.unwrap();
    assert!(!netns.is_pinned(&a.netns));
    assert!(node.records.pod_network(ID).unwrap().is_none());

    // A namespace removed behind our back: DEL with an empty CNI_NETNS, and a missing file is
    // passed over too; anything else still is not.
    let netns = Arc::new(RecordingNetns::new());
    let net = node.network(&netns, &gone);
    let a = net.setup(ID, &pod_config()).await.unwrap();
    netns.vanish(&a.netns);
    let missing = Arc::new(RecordingExec::new(say(
        "open /run/netns/x: no such file or directory",
    )));
    node.network(&netns, &missing).teardown(ID).await.unwrap();
    assert_eq!(env(&missing.calls()[0], "CNI_NETNS"), "");
    assert!(node.records.pod_network(ID).unwrap().is_none());
    let a = net.setup(ID, &pod_config()).await.unwrap();
    let err = node
        .network(&netns, &missing)
        .teardown(ID)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no such file"),
        "with the namespace there: {err}"
    );
    assert!(netns.is_pinned(&a.netns));
}

#[tokio::test]
async fn recover_tears_down_what_a_previous_run_left() {
    let node = Node::new("recover", &["a"]);
    node.conf("10-net.conflist", &list(json!([{"type": "a"}])));
    let netns = Arc::new(RecordingNetns::new());
    let exec = Arc::new(RecordingExec::new(plugins_that_work));
    let first = node.network(&netns, &exec);
    first.setup(ID, &pod_config()).await.unwrap();
    first
        .setup(&ID.replace('0', "f"), &pod_config())
        .await
        .unwrap();
    drop(first);
    let again = node.network(&netns, &exec);
    assert_eq!(again.recover().await, (2, 0));
    assert!(netns.pinned().is_empty());
    assert_eq!(calls(&exec), ["ADD a", "ADD a", "DEL a", "DEL a"]);
    assert_eq!(again.recover().await, (0, 0));
}

#[test]
fn the_first_config_file_by_name_is_the_network_and_a_conf_is_a_list_of_one() {
    let node = Node::new("confdir", &[]);
    let dir = node.dir.join("net.d");
    let err = confdir::load(&dir).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no network config found in {}", dir.display())
    );
    assert_eq!(err.status("set up", ID).code(), Code::FailedPrecondition);
    assert!(matches!(
        confdir::load(&node.dir.join("absent")),
        Err(NetError::NoConfig { .. })
    ));

    node.conf("README.txt", &json!("not a config"));
    std::fs::create_dir(dir.join("00-dir.conf")).unwrap();
    node.conf("30-b.conflist", &list(json!([{"type": "b"}])));
    node.conf(
        "20-a.json",
        &json!({"cniVersion": "0.4.0", "name": "single", "type": "a", "k": 1}),
    );
    let c = confdir::load(&dir).unwrap();
    assert_eq!(c.file, dir.join("20-a.json"));
    assert_eq!(c.list.name, "single");
    assert_eq!(c.list.cni_version, "0.4.0");
    assert_eq!(
        c.list.plugins,
        [json!({"cniVersion": "0.4.0", "name": "single", "type": "a", "k": 1})]
    );

    // A broken first file is an error, as in containerd, not a reason to take the next.
    node.conf(
        "10-broken.conf",
        &json!({"cniVersion": "1.0.0", "name": "x"}),
    );
    let err = confdir::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("10-broken.conf") && err.contains("network type not found"),
        "{err}"
    );
    std::fs::write(dir.join("10-broken.conf"), b"{").unwrap();
    assert!(
        confdir::load(&dir)
            .unwrap_err()
            .to_string()
            .starts_with("invalid network config")
    );
}

#[test]
fn the_default_network_is_written_only_into_an_empty_conf_dir() {
    let node = Node::new("default", &[]);
    let dir = node.dir.join("net.d/sub");
    let cni = CniSection {
        socket: "/tmp/x/cni.sock".into(),
        ..CniSection::default()
    };
    let file = confdir::write_default(&dir, &cni).unwrap().unwrap();
    assert_eq!(file, dir.join("10-wasmgate.conflist"));
    let c = confdir::load(&dir).unwrap();
    assert_eq!(c.list.name, "wasmgate");
    assert_eq!(c.list.plugins[0]["type"], "wasmgate-cni");
    assert_eq!(c.list.plugins[0]["plugin"], "bridge");
    assert_eq!(c.list.plugins[0]["podcidr"], "10.241.0.0/24");
    assert_eq!(c.list.plugins[0]["socket"], "/tmp/x/cni.sock");
    assert_eq!(confdir::write_default(&dir, &cni).unwrap(), None);
}

#[test]
fn runtime_config_holds_only_declared_capabilities_the_runtime_has() {
    let caps = serde_json::Map::from_iter([
        ("portMappings".to_string(), json!([])),
        ("dns".to_string(), json!({"servers": ["1.1.1.1"]})),
    ]);
    let conf = plugin_config(
        &json!({"type": "x", "capabilities": {"dns": true, "portMappings": false, "ips": true}}),
        None,
        &caps,
    );
    assert_eq!(
        conf["runtimeConfig"],
        json!({"dns": {"servers": ["1.1.1.1"]}})
    );
    let conf = plugin_config(&json!({"type": "x"}), Some(&json!({"ips": []})), &caps);
    assert!(conf.get("runtimeConfig").is_none());
    assert_eq!(conf["prevResult"], json!({"ips": []}));
}

// ---- through the builtin runtime ----

fn builtin(node: &Node, netns: &Arc<RecordingNetns>, exec: &Arc<RecordingExec>) -> Builtin {
    Builtin::new().with_network(node.network(netns, exec))
}

async fn run(rt: &Builtin, config: pb::PodSandboxConfig) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(Request::new(pb::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    }))
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(rt: &Builtin, id: &str) -> (pb::PodSandboxStatus, Value) {
    let r = rt
        .pod_sandbox_status(Request::new(pb::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        }))
        .await
        .unwrap()
        .into_inner();
    (
        r.status.unwrap(),
        serde_json::from_str(&r.info["info"]).unwrap(),
    )
}

#[tokio::test]
async fn the_builtin_runtime_networks_its_pods_and_reports_their_ips() {
    let node = Node::new("builtin", &["a"]);
    node.conf("10-net.conflist", &list(json!([{"type": "a"}])));
    let netns = Arc::new(RecordingNetns::new());
    let exec = Arc::new(RecordingExec::new(plugins_that_work));
    let rt = builtin(&node, &netns, &exec);
    let id = run(&rt, pod_config()).await.unwrap();
    let (st, info) = status(&rt, &id).await;
    let net = st.network.unwrap();
    assert_eq!(net.ip, "10.0.0.5");
    assert_eq!(
        net.additional_ips,
        [pb::PodIp {
            ip: "fd00::5".into()
        }]
    );
    let path = format!("/run/netns/wasmgate-{}", &id[..16]);
    assert_eq!(
        info["runtimeSpec"]["linux"]["namespaces"],
        json!([{"type": "network", "path": path}])
    );
    assert_eq!(info["netNamespaceClosed"], false);
    assert_eq!(info["network"], "podnet");
    assert_eq!(netns.pinned(), [PathBuf::from(&path)]);

    // Same name again: refused before any network is made.
    let err = run(&rt, pod_config()).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(exec.calls().len(), 1);

    let stop = |id: String| {
        let rt = &rt;
        async move {
            rt.stop_pod_sandbox(Request::new(pb::StopPodSandboxRequest {
                pod_sandbox_id: id,
            }))
            .await
        }
    };
    stop(id.clone()).await.unwrap();
    stop(id.clone()).await.unwrap();
    assert_eq!(calls(&exec), ["ADD a", "DEL a"]);
    assert!(netns.pinned().is_empty());
    let (st, info) = status(&rt, &id).await;
    assert_eq!(
        st.network.unwrap().ip,
        "",
        "no address once the namespace is gone"
    );
    assert!(info.get("runtimeSpec").is_none());

    // Remove without a stop tears the network down too; a host-network pod gets none.
    let second = run(
        &rt,
        pb::PodSandboxConfig {
            metadata: Some(pb::PodSandboxMetadata {
                attempt: 1,
                ..pod_config().metadata.unwrap()
            }),
            ..pod_config()
        },
    )
    .await
    .unwrap();
    rt.remove_pod_sandbox(Request::new(pb::RemovePodSandboxRequest {
        pod_sandbox_id: second[..12].into(),
    }))
    .await
    .unwrap();
    assert_eq!(calls(&exec), ["ADD a", "DEL a", "ADD a", "DEL a"]);
    let host = pb::PodSandboxConfig {
        linux: Some(pb::LinuxPodSandboxConfig {
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    network: pb::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        metadata: Some(pb::PodSandboxMetadata {
            attempt: 2,
            ..pod_config().metadata.unwrap()
        }),
        ..pod_config()
    };
    let hostnet = run(&rt, host).await.unwrap();
    assert_eq!(status(&rt, &hostnet).await.0.network.unwrap().ip, "");
    assert_eq!(exec.calls().len(), 4);
    assert!(netns.pinned().is_empty());
}

#[tokio::test]
async fn a_failed_setup_leaves_no_pod_and_frees_the_name_and_an_empty_conf_dir_is_not_ready() {
    let node = Node::new("notready", &["a"]);
    let netns = Arc::new(RecordingNetns::new());
    let exec = Arc::new(RecordingExec::new(plugins_that_work));
    let rt = builtin(&node, &netns, &exec);
    let s = rt
        .status(Request::new(pb::StatusRequest { verbose: false }))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let ready = &s.conditions[1];
    assert_eq!(
        (ready.r#type.as_str(), ready.status),
        ("NetworkReady", false)
    );
    assert_eq!(ready.reason, "NetworkPluginNotReady");
    assert!(
        ready
            .message
            .starts_with("Network plugin returns error: no network config found in "),
        "{}",
        ready.message
    );

    let err = run(&rt, pod_config()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("no network config found"),
        "{}",
        err.message()
    );
    assert!(netns.calls().is_empty());

    node.conf("10-net.conflist", &list(json!([{"type": "a"}])));
    let id = run(&rt, pod_config()).await.unwrap();
    let list = rt
        .list_pod_sandbox(Request::new(pb::ListPodSandboxRequest { filter: None }))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        list.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
}
