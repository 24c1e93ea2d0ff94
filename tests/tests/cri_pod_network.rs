//! The builtin runtime networks its pods as containerd's CRI plugin does (`[cri.network]`),
//! against the real kernel and real plugins: namespaces pinned by the daemon, the real
//! `wasmgate-cni` shim and Debian's reference plugins (`/usr/lib/cni`) exec'd by it.
//!
//! Each daemon runs in its own node netns (bridges and host veths stay there) and in the test's
//! mount namespace, so the namespaces it pins in [`Daemon::netns_dir`] are visible here. A conf
//! dir a test names is its own temp dir; the daemon reads it on every RunPodSandbox, so a test
//! writes configs that point at the daemon's CNI socket once the daemon is up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tonic::Code;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, Rt};
use wasmgate_tests::podnet::{Pinned, netns_of};
use wasmgate_tests::{Daemon, bin, eventually, unique};

/// A directory of the test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn conf(&self, file: &str, body: &Value) {
        std::fs::write(self.0.join(file), body.to_string()).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node networking its pods with the configs in `conf_dir`.
fn node_with_conf_dir(conf_dir: &Path, extra: &str) -> Daemon {
    Daemon::start_node_with(
        false,
        &[],
        Some(&format!("conf_dir = \"{}\"\n{extra}", conf_dir.display())),
    )
}

/// Our shim's entry in a conflist, on `d`'s CNI socket.
fn wasmgate_cni(d: &Daemon, podcidr: &str) -> Value {
    json!({
        "type": "wasmgate-cni",
        "plugin": "bridge",
        "podcidr": podcidr,
        "socket": d.cni_socket(),
        "queueDir": d.queue_dir(),
    })
}

fn conflist(name: &str, plugins: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins})
}

/// Pod `name` (uid `uid-<name>`, namespace `default`), attempt `attempt`.
fn pod(name: &str, attempt: u32) -> pb::PodSandboxConfig {
    let mut c = cri::pod_config(name, "default");
    c.metadata.as_mut().unwrap().attempt = attempt;
    c
}

async fn run(rt: &mut Rt, config: pb::PodSandboxConfig) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

/// The pod's IPs (`ip`, then `additional_ips`; empty when none) and its namespace.
async fn network(rt: &mut Rt, pod: &str) -> (Vec<String>, Option<PathBuf>, Value) {
    let r = rt
        .pod_sandbox_status(pb::PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let net = r.status.unwrap().network.unwrap_or_default();
    let ips = std::iter::once(net.ip)
        .chain(net.additional_ips.into_iter().map(|i| i.ip))
        .filter(|ip| !ip.is_empty())
        .collect();
    let info: Value = serde_json::from_str(&r.info["info"]).unwrap();
    (ips, netns_of(&r.info), info)
}

async fn stop(rt: &mut Rt, pod: &str) {
    rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap();
}

async fn network_ready(rt: &mut Rt) -> pb::RuntimeCondition {
    let s = rt
        .status(pb::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    s.conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_pod_sandbox_networks_the_pod_and_stop_pod_sandbox_undoes_it() {
    let d = Daemon::start_node_with(false, &[], Some(""));
    let (mut rt, _) = cri::clients(d.cri_socket()).await;

    // The daemon wrote its default network into the conf dir it owns.
    let written: Value = serde_json::from_slice(
        &std::fs::read(d.dir.join("state/net.d/10-wasmgate.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["name"], "wasmgate");
    assert_eq!(written["plugins"][0]["socket"], json!(d.cni_socket()));
    assert!(network_ready(&mut rt).await.status);

    let id = run(&mut rt, pod("web", 0)).await.unwrap();
    let (ips, netns, info) = network(&mut rt, &id).await;
    let netns = netns.expect("the runtime spec names the pod's netns");
    assert_eq!(netns, d.netns_dir().join(format!("wasmgate-{}", &id[..16])));
    assert_eq!(info["netNamespaceClosed"], false);
    assert_eq!(info["network"], "wasmgate");
    assert_eq!(ips.len(), 1, "{ips:?}");
    let ip = &ips[0];
    assert!(ip.starts_with("10.241.0."), "{ip}");
    assert_eq!(info["cniResult"]["ips"][0]["address"], format!("{ip}/24"));

    // Inside: eth0 holds the address and is up, lo is up, the default route is the bridge's.
    let ns = Pinned(&netns);
    assert_eq!(ns.addrs("eth0"), [format!("{ip}/24")]);
    assert!(ns.is_up("eth0") && ns.is_up("lo"));
    assert!(
        ns.run("ip", &["route"])
            .contains("default via 10.241.0.1 dev eth0"),
        "{}",
        ns.run("ip", &["route"])
    );
    // Outside, in the node: the host end of the veth, on the bridge that answers the pod.
    assert_eq!(d.node.links("veth").len(), 1);
    assert!(d.node.ping(ip));

    // StopPodSandbox runs DEL and removes the namespace; again, it does nothing.
    stop(&mut rt, &id).await;
    assert!(!netns.exists());
    assert!(d.pinned_netns().is_empty());
    eventually("the host veth is destroyed", || {
        d.node.links("veth").is_empty()
    });
    let (ips, netns_after, info) = network(&mut rt, &id).await;
    assert!(ips.is_empty() && netns_after.is_none(), "{info}");
    stop(&mut rt, &id).await;
    cri::stop_and_remove_pod(&mut rt, &id).await;

    // RemovePodSandbox without a stop tears the network down too.
    let id = run(&mut rt, pod("web", 1)).await.unwrap();
    assert_eq!(d.pinned_netns().len(), 1);
    rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(d.pinned_netns().is_empty());
    assert!(cri::pods(&mut rt).await.is_empty());

    // A pod on the host network gets no namespace and no address, as with containerd.
    let mut host = pod("host", 0);
    host.linux = Some(pb::LinuxPodSandboxConfig {
        security_context: Some(pb::LinuxSandboxSecurityContext {
            namespace_options: Some(pb::NamespaceOption {
                network: pb::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run(&mut rt, host).await.unwrap();
    let (ips, netns, _) = network(&mut rt, &id).await;
    assert!(ips.is_empty() && netns.is_none());
    assert!(d.pinned_netns().is_empty());
    cri::stop_and_remove_pod(&mut rt, &id).await;
}

/// A /30 pod network has one address for pods, so the second pod gets it only once the first
/// gave it back: proof that StopPodSandbox's DEL reached the plugin, and of a clean failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freed_address_goes_to_the_next_pod_and_a_failing_plugin_leaves_nothing() {
    let conf = TempDir::new("wg-netd-");
    let mut d = node_with_conf_dir(&conf.0, "");
    let (mut rt, _) = cri::clients(d.cri_socket()).await;

    // No config yet: not ready, in containerd's words, and a pod fails without a namespace.
    let ready = network_ready(&mut rt).await;
    assert!(!ready.status);
    assert_eq!(ready.reason, "NetworkPluginNotReady");
    assert!(
        ready
            .message
            .starts_with("Network plugin returns error: no network config found in "),
        "{}",
        ready.message
    );
    let err = run(&mut rt, pod("a", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("no network config found"), "{err:?}");

    // A plugin that is not there: the call names it and the dirs looked in.
    conf.conf(
        "10-tiny.conflist",
        &conflist("tiny", json!([{"type": "no-such-plugin"}])),
    );
    let err = run(&mut rt, pod("a", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    assert!(
        err.message()
            .contains("failed to find plugin \"no-such-plugin\" in path [")
            && err.message().contains("/usr/lib/cni"),
        "{}",
        err.message()
    );
    assert!(d.pinned_netns().is_empty());

    // Our shim with a /30, then Debian's tuning, which works on prevResult's interface.
    let tuning =
        json!({"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.rp_filter": "2"}});
    conf.conf(
        "10-tiny.conflist",
        &conflist("tiny", json!([wasmgate_cni(&d, "10.250.0.0/30"), tuning])),
    );
    assert!(network_ready(&mut rt).await.status);
    let a = run(&mut rt, pod("a", 0)).await.unwrap();
    let (ips, netns, _) = network(&mut rt, &a).await;
    assert_eq!(ips, ["10.250.0.2"]);
    let netns = netns.unwrap();
    let ns = Pinned(&netns);
    assert_eq!(ns.mtu("eth0"), 1400);
    assert_eq!(ns.sysctl("net.ipv4.conf.eth0.rp_filter"), "2");

    // The pool is full: the second pod fails naming the plugin and its CNI error, and leaves
    // no namespace, no pod and no name reserved behind.
    let err = run(&mut rt, pod("b", 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unknown);
    let msg = err.message();
    assert!(
        msg.starts_with("failed to set up network for sandbox \"")
            && msg.contains(
                ": plugin type=\"wasmgate-cni\" name=\"tiny\" failed (add): CNI error 110: "
            ),
        "{msg}"
    );
    assert_eq!(
        d.pinned_netns(),
        [netns.file_name().unwrap().to_string_lossy()]
    );
    assert_eq!(cri::pods(&mut rt).await.len(), 1);

    // A's DEL frees the address: B gets it.
    stop(&mut rt, &a).await;
    let b = run(&mut rt, pod("b", 0)).await.unwrap();
    assert_eq!(network(&mut rt, &b).await.0, ["10.250.0.2"]);

    // The daemon dies with B networked. It forgets its pods, so on the next start it tears
    // B's network down itself: the namespace goes, and the address is free for C.
    let b_netns = network(&mut rt, &b).await.1.unwrap();
    d.kill9();
    assert!(b_netns.exists(), "a pinned namespace outlives the daemon");
    d.spawn();
    assert!(!b_netns.exists(), "{}", d.log());
    assert!(d.pinned_netns().is_empty());
    let (mut rt, _) = cri::clients(d.cri_socket()).await;
    let c = run(&mut rt, pod("c", 0)).await.unwrap();
    assert_eq!(network(&mut rt, &c).await.0, ["10.250.0.2"]);
    cri::stop_and_remove_pod(&mut rt, &c).await;
    assert!(d.pinned_netns().is_empty());
}

/// Debian's bridge with host-local IPAM, as one `.conf`: the first config by file name wins
/// over a `.conflist` after it, and host-local's own state shows the address taken and freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debian_reference_plugins_from_a_single_conf_file() {
    let conf = TempDir::new("wg-netd-");
    let ipam = conf.0.join("ipam");
    conf.conf(
        "10-debian.conf",
        &json!({
            "cniVersion": "1.0.0",
            "name": "debian-net",
            "type": "bridge",
            "bridge": "wgdeb0",
            "isGateway": true,
            "ipam": {
                "type": "host-local",
                "subnet": "10.242.0.0/24",
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam,
            },
        }),
    );
    conf.conf(
        "20-ignored.conflist",
        &conflist("ignored", json!([{"type": "no-such-plugin"}])),
    );
    let conf_dir = conf.0.clone();
    let d = node_with_conf_dir(&conf_dir, "");
    let (mut rt, _) = cri::clients(d.cri_socket()).await;

    let id = run(&mut rt, pod("deb", 0)).await.unwrap();
    let (ips, netns, info) = network(&mut rt, &id).await;
    assert_eq!(info["network"], "debian-net");
    let ip = ips[0].clone();
    assert!(ip.starts_with("10.242.0."), "{ip}");
    assert_eq!(Pinned(&netns.unwrap()).addrs("eth0"), [format!("{ip}/24")]);
    assert!(d.node.links("bridge").contains(&"wgdeb0".to_string()));
    // host-local records the address under the network's name, with the sandbox's ID.
    let lease = ipam.join("debian-net").join(&ip);
    let owner = std::fs::read_to_string(&lease).unwrap();
    assert!(owner.starts_with(&id), "{owner}");

    stop(&mut rt, &id).await;
    assert!(!lease.exists(), "host-local still holds {ip}");
    assert!(d.pinned_netns().is_empty());
    cri::stop_and_remove_pod(&mut rt, &id).await;
}

/// One record per plugin call, as the spy wrapper logged it: the plugin, its `CNI_*`
/// variables and its stdin.
struct Logged {
    plugin: String,
    env: HashMap<String, String>,
    stdin: Value,
}

/// A wrapper named `type_` in `dir` that logs each call to `log` and execs `real`.
fn spy(dir: &Path, type_: &str, real: &Path, log: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(type_);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ninput=$(cat)\n{{ echo \"== {type_}\"; env | grep '^CNI_' | sort; printf '%s\\n' \"$input\"; }} >> {log}\n\
             printf '%s' \"$input\" | exec {real}\n",
            log = log.display(),
            real = real.display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn read_log(log: &Path) -> Vec<Logged> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.split("== ")
        .filter(|r| !r.is_empty())
        .map(|r| {
            let lines: Vec<&str> = r.lines().collect();
            let env = lines[1..lines.len() - 1]
                .iter()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Logged {
                plugin: lines[0].to_string(),
                env,
                stdin: serde_json::from_str(lines[lines.len() - 1]).unwrap(),
            }
        })
        .collect()
}

/// What each plugin is exec'd with, seen by wrappers around the real ones: containerd's
/// variables, the list's name and version, `prevResult` chaining on ADD, the cached result on
/// DEL in reverse order, and `runtimeConfig` only for the capabilities a plugin declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plugin_gets_what_containerd_would_give_it() {
    let conf = TempDir::new("wg-netd-");
    let spies = conf.0.join("bin");
    std::fs::create_dir_all(&spies).unwrap();
    let log = conf.0.join("calls.log");
    spy(&spies, "wasmgate-cni", &bin("wasmgate-cni"), &log);
    spy(&spies, "tuning", Path::new("/usr/lib/cni/tuning"), &log);
    let net_d = conf.0.join("net.d");
    std::fs::create_dir_all(&net_d).unwrap();
    let bin_dirs = format!("bin_dirs = [\"{}\", \"/usr/lib/cni\"]", spies.display());
    let d = node_with_conf_dir(&net_d, &bin_dirs);
    let ours = wasmgate_cni(&d, "10.243.0.0/24");
    std::fs::write(
        net_d.join("10-spied.conflist"),
        conflist(
            "spied",
            json!([
                ours,
                {"type": "tuning", "capabilities": {"portMappings": true, "io.kubernetes.cri.pod-annotations": true}},
            ]),
        )
        .to_string(),
    )
    .unwrap();
    let (mut rt, _) = cri::clients(d.cri_socket()).await;
    let mut config = pod("spied", 0);
    config.port_mappings = vec![pb::PortMapping {
        protocol: pb::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 8080,
        host_ip: String::new(),
    }];
    config.annotations = [("team".to_string(), "blue".to_string())].into();
    let id = run(&mut rt, config).await.unwrap();
    let (_, netns, info) = network(&mut rt, &id).await;
    let netns = netns.unwrap();
    stop(&mut rt, &id).await;

    let calls = read_log(&log);
    let order: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {}", c.env["CNI_COMMAND"], c.plugin))
        .collect();
    assert_eq!(
        order,
        [
            "ADD wasmgate-cni",
            "ADD tuning",
            "DEL tuning",
            "DEL wasmgate-cni"
        ]
    );
    for c in &calls {
        assert_eq!(c.env["CNI_CONTAINERID"], id);
        assert_eq!(c.env["CNI_NETNS"], netns.to_str().unwrap());
        assert_eq!(c.env["CNI_IFNAME"], "eth0");
        assert_eq!(
            c.env["CNI_ARGS"],
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=spied;K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID=uid-spied"
            )
        );
        assert_eq!(
            c.env["CNI_PATH"],
            format!("{}:/usr/lib/cni", spies.display())
        );
        assert_eq!(c.stdin["name"], "spied");
        assert_eq!(c.stdin["cniVersion"], "1.0.0");
    }
    // Our shim declares no capability: no runtimeConfig, and on ADD no prevResult.
    assert!(calls[0].stdin.get("runtimeConfig").is_none());
    assert!(calls[0].stdin.get("prevResult").is_none());
    let runtime_config = &calls[1].stdin["runtimeConfig"];
    assert_eq!(
        runtime_config,
        &json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
            "io.kubernetes.cri.pod-annotations": {"team": "blue"},
        })
    );
    // tuning chains on the shim's result; DEL gets the list's final result, the cached one.
    assert_eq!(
        calls[1].stdin["prevResult"]["ips"][0]["address"],
        info["cniResult"]["ips"][0]["address"]
    );
    assert_eq!(calls[2].stdin["prevResult"], info["cniResult"]);
    assert_eq!(calls[3].stdin["prevResult"], info["cniResult"]);
    assert_eq!(calls[2].stdin["runtimeConfig"], *runtime_config);
    cri::stop_and_remove_pod(&mut rt, &id).await;
}

/// Without `[cri.network]` the builtin runtime keeps its old ways: no namespace, no address,
/// no plugin run, and the network always ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_switch_pods_get_no_network() {
    let d = Daemon::start_node(false, &[]);
    let (mut rt, _) = cri::clients(d.cri_socket()).await;
    assert!(network_ready(&mut rt).await.status);
    let id = run(&mut rt, pod("plain", 0)).await.unwrap();
    let (ips, netns, info) = network(&mut rt, &id).await;
    assert!(ips.is_empty() && netns.is_none(), "{info}");
    assert!(info.get("cniResult").is_none());
    assert!(d.node.links("veth").is_empty());
    assert!(!d.dir.join("state/net.d").exists());
    assert!(d.pinned_netns().is_empty());
    cri::stop_and_remove_pod(&mut rt, &id).await;
}
