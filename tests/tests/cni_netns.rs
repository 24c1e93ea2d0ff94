//! The `wasmgate-cni` shim against a real daemon and real network namespaces: what ADD builds,
//! what DEL, CHECK, STATUS and GC do to it, concurrency, and cniVersion negotiation.
//!
//! Every test runs its own daemon in its own node netns (see `wasmgate_tests::Daemon`), so host
//! veths and the `wgbr0` bridge are looked for there, never in the machine's own namespace.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

use serde_json::{Value, json};
use wasmgate_tests::{
    CniOutput, Daemon, Netns, PluginEntry, Pod, add_pods, cni, host_veth, plugin, unique, with_key,
    with_prev,
};

fn daemon() -> Daemon {
    Daemon::start(vec![PluginEntry::new("bridge", plugin("bridge-ipam"))])
}

fn status(conf: &str) -> CniOutput {
    cni("STATUS", "", "", "", conf)
}

/// The interface of an ADD result with this name and, for container sides, this sandbox.
fn result_iface<'a>(result: &'a Value, name: &str, sandbox: Option<&str>) -> &'a Value {
    result["interfaces"]
        .as_array()
        .expect("result has interfaces")
        .iter()
        .find(|i| i["name"] == name && i["sandbox"].as_str() == sandbox)
        .unwrap_or_else(|| panic!("no interface {name} (sandbox {sandbox:?}) in {result}"))
}

/// The MAC of `ifname` in `ns`, as the kernel reports it.
fn kernel_mac(ns: &Netns, ifname: &str) -> String {
    let links: Value =
        serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname])).unwrap();
    links[0]["address"]
        .as_str()
        .expect("link has an address")
        .to_string()
}

/// Every veth in `ns`, by name.
fn veths(ns: &Netns) -> BTreeSet<String> {
    ns.links("veth").into_iter().collect()
}

/// The pool of 10.241.0.0/29: .1 is the gateway, .2 to .6 are handed out.
const SMALL_POOL: &str = "10.241.0.0/29";

fn small_pool() -> BTreeSet<String> {
    (2..=6).map(|i| format!("10.241.0.{i}")).collect()
}

/// Fills the pool: one pod per address, returning the pods and their ADD results.
fn fill(conf: &str, n: usize) -> Vec<(Pod, Value)> {
    add_pods(conf, n)
}

#[test]
fn add_configures_the_pod_netns() {
    let d = daemon();
    let pod = Pod::new();
    let out = pod.add(&d.net_conf("1.1.0", json!({})));
    let result = out.ok().json();

    assert_eq!(result["cniVersion"], "1.1.0");
    let addr = result["ips"][0]["address"].as_str().unwrap();
    assert!(
        addr.starts_with("10.240.0.") && addr.ends_with("/24"),
        "{addr}"
    );
    assert_eq!(result["ips"][0]["gateway"], "10.240.0.1");
    assert_eq!(pod.ns.addrs("eth0"), vec![addr.to_string()]);

    let routes: Value = serde_json::from_str(&pod.ns.ip(&["-j", "route"])).unwrap();
    let default = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == "default")
        .unwrap_or_else(|| panic!("no default route in the pod: {routes}"));
    assert_eq!(default["gateway"], "10.240.0.1");
    assert_eq!(default["dev"], "eth0");

    // The MACs in the result are the kernel's, on both ends.
    let eth0 = result_iface(&result, "eth0", Some(&pod.ns.path()));
    assert_eq!(eth0["mac"].as_str().unwrap(), kernel_mac(&pod.ns, "eth0"));
    let host = host_veth(&result);
    assert!(host.starts_with("wg") && host.len() == 14, "{host}");
    let host_iface = result_iface(&result, &host, None);
    assert_eq!(
        host_iface["mac"].as_str().unwrap(),
        kernel_mac(&d.node, &host)
    );
    assert_eq!(result["ips"][0]["interface"].as_u64().unwrap() as usize, {
        let ifaces = result["interfaces"].as_array().unwrap();
        ifaces.iter().position(|i| i == eth0).unwrap()
    });

    // The bridge holds the gateway in the node netns, and the pod reaches it.
    assert_eq!(d.node.addrs("wgbr0"), vec!["10.240.0.1/24".to_string()]);
    assert!(pod.ns.ping("10.240.0.1"), "pod cannot reach its gateway");
}

#[test]
fn two_pods_reach_each_other() {
    let d = daemon();
    let conf = d.net_conf("1.1.0", json!({}));
    let (a, b) = (Pod::new(), Pod::new());
    let ip_a = a.add(&conf).ok().ip();
    let ip_b = b.add(&conf).ok().ip();
    assert_ne!(ip_a, ip_b);
    assert!(a.ns.ping(&ip_b), "{ip_a} cannot reach {ip_b}");
    assert!(b.ns.ping(&ip_a), "{ip_b} cannot reach {ip_a}");
}

#[test]
fn del_removes_the_interface_and_frees_the_address() {
    let d = daemon();
    let conf = d.net_conf("1.1.0", json!({ "podcidr": SMALL_POOL }));
    assert_eq!(status(&conf).ok().stdout, "");

    let pods = fill(&conf, 5);
    let given: BTreeSet<String> = pods
        .iter()
        .map(|(_, r)| {
            r["ips"][0]["address"]
                .as_str()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(given, small_pool(), "the pool is handed out once each");

    // Exhausted: ADD fails with the plugin's code and builds nothing; STATUS says so too.
    let extra = Pod::new();
    let out = extra.add(&conf);
    assert_eq!(out.code(), 110, "{}", out.stdout);
    assert!(out.msg().contains("no addresses"), "{}", out.msg());
    assert!(extra.ns.gone("eth0"));
    let out = status(&conf);
    assert_eq!(out.code(), 50, "{}", out.stdout);

    // DEL one: its interfaces go, on both sides, and its address comes back.
    let (victim, result) = &pods[2];
    let freed = result["ips"][0]["address"].as_str().unwrap().to_string();
    let host = host_veth(result);
    assert!(d.node.has_link(&host));
    let out = victim.del(&with_prev(&conf, result));
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    assert!(victim.ns.gone("eth0"));
    assert!(d.node.gone(&host));
    assert_eq!(status(&conf).ok().stdout, "");

    let out = extra.add(&conf);
    assert_eq!(out.ok().json()["ips"][0]["address"], freed.as_str());
    assert_eq!(extra.ns.addrs("eth0"), vec![freed.clone()]);

    // DEL is idempotent, and a DEL for something never added succeeds.
    let out = victim.del(&conf);
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    let never = Pod::new();
    let out = never.del(&conf);
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    // Neither touched anyone else.
    for (pod, r) in pods.iter().filter(|(p, _)| p.cid != victim.cid) {
        assert_eq!(
            pod.ns.addrs("eth0"),
            vec![r["ips"][0]["address"].as_str().unwrap()]
        );
    }
    assert_eq!(status(&conf).code(), 50);
}

#[test]
fn check_follows_the_kernel() {
    let d = daemon();
    let conf = d.net_conf("1.1.0", json!({}));
    let pod = Pod::new();
    let result = pod.add(&conf).ok().json();
    let checked = with_prev(&conf, &result);

    let out = pod.check(&checked);
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""), "{}", out.stderr);

    pod.ns.ip(&["link", "del", "eth0"]);
    let out = pod.check(&checked);
    assert_ne!(out.code(), 0);
    assert!(out.msg().contains("eth0"), "{}", out.msg());
}

#[test]
fn gc_collects_only_stale_attachments() {
    let d = daemon();
    let conf = d.net_conf("1.1.0", json!({ "podcidr": SMALL_POOL }));
    let pods = fill(&conf, 5);
    assert_eq!(status(&conf).code(), 50);

    let (stale, stale_result) = &pods[1];
    let stale_ip = stale_result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let stale_host = host_veth(stale_result);
    let valid: Vec<Value> = pods
        .iter()
        .filter(|(p, _)| p.cid != stale.cid)
        .map(|(p, _)| json!({ "containerID": p.cid, "ifname": "eth0" }))
        .collect();
    let gc_conf = with_key(&conf, "cni.dev/valid-attachments", json!(valid));
    let out = cni("GC", "", "", "", &gc_conf);
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""), "{}", out.stderr);

    // The stale one's veth pair is gone from both sides and its address is free again.
    assert!(d.node.gone(&stale_host));
    assert!(stale.ns.gone("eth0"));
    assert_eq!(status(&conf).ok().stdout, "");
    let newcomer = Pod::new();
    assert_eq!(
        newcomer.add(&conf).ok().json()["ips"][0]["address"],
        stale_ip.as_str()
    );

    // The valid ones are untouched and still work.
    let (keep, keep_result) = &pods[0];
    assert!(d.node.has_link(&host_veth(keep_result)));
    let out = keep.check(&with_prev(&conf, keep_result));
    assert_eq!(out.exit, 0, "{} {}", out.stdout, out.stderr);
    let other = pods[4].1["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(
        keep.ns.ping(other),
        "a valid pod lost connectivity after GC"
    );
}

#[test]
fn second_add_for_the_same_attachment_is_refused() {
    let d = daemon();
    let conf = d.net_conf("1.1.0", json!({}));
    let pod = Pod::new();
    let first = pod.add(&conf).ok().json();
    let out = pod.add(&conf);
    assert_eq!(out.code(), 102, "{}", out.stdout);
    // The refusal left the first attachment as it was.
    assert_eq!(
        pod.ns.addrs("eth0"),
        vec![first["ips"][0]["address"].as_str().unwrap()]
    );
    let out = pod.check(&with_prev(&conf, &first));
    assert_eq!(out.exit, 0, "{} {}", out.stdout, out.stderr);
}

#[test]
fn a_hundred_concurrent_adds_and_dels() {
    const N: usize = 100;
    // All N calls share two cores and one store; this is about correctness, so a loaded machine
    // must not turn it into a test of the per-call deadline (the burst takes ~0.3 s when idle).
    let d = Daemon::start(vec![
        PluginEntry::new("bridge", plugin("bridge-ipam")).extra("timeout_ms = 10000"),
    ]);
    let conf = Arc::new(d.net_conf("1.1.0", json!({ "podcidr": "10.242.0.0/24" })));
    let pods: Arc<Vec<Pod>> = Arc::new((0..N).map(|_| Pod::new()).collect());

    let run_all = |command: &'static str| -> Vec<CniOutput> {
        let start = Arc::new(Barrier::new(N));
        let threads: Vec<_> = (0..N)
            .map(|i| {
                let (pods, conf, start) = (pods.clone(), conf.clone(), start.clone());
                thread::spawn(move || {
                    let pod = &pods[i];
                    start.wait();
                    cni(command, &pod.cid, &pod.ns.path(), "eth0", &conf)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    };

    let added = run_all("ADD");
    let mut seen = BTreeSet::new();
    for (pod, out) in pods.iter().zip(&added) {
        let result = out.ok().json();
        let addr = result["ips"][0]["address"].as_str().unwrap();
        assert!(seen.insert(addr.to_string()), "{addr} handed out twice");
        assert_eq!(
            pod.ns.addrs("eth0"),
            vec![addr.to_string()],
            "pod {}",
            pod.cid
        );
    }
    assert_eq!(seen.len(), N);
    assert_eq!(veths(&d.node).len(), N);

    for out in run_all("DEL") {
        assert_eq!((out.exit, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    }
    for pod in pods.iter() {
        assert!(pod.ns.gone("eth0"), "pod {} still has eth0", pod.cid);
    }
    assert!(
        veths(&d.node).is_empty(),
        "host veths left: {:?}",
        veths(&d.node)
    );
}

#[test]
fn results_follow_the_requested_cni_version() {
    let d = daemon();

    let old = Pod::new();
    let r = old.add(&d.net_conf("0.4.0", json!({}))).ok().json();
    assert_eq!(r["cniVersion"], "0.4.0");
    let ips = r["ips"].as_array().unwrap();
    assert!(!ips.is_empty());
    assert!(ips.iter().all(|ip| ip["version"] == "4"), "{r}");
    assert_eq!(
        old.ns.addrs("eth0"),
        vec![ips[0]["address"].as_str().unwrap()]
    );
    // 0.4.0 interfaces have no mtu.
    assert!(
        r["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i.get("mtu").is_none()),
        "{r}"
    );

    let new = Pod::new();
    let r = new.add(&d.net_conf("1.0.0", json!({}))).ok().json();
    assert_eq!(r["cniVersion"], "1.0.0");
    let ips = r["ips"].as_array().unwrap();
    assert!(!ips.is_empty());
    assert!(ips.iter().all(|ip| ip.get("version").is_none()), "{r}");
    assert_eq!(
        new.ns.addrs("eth0"),
        vec![ips[0]["address"].as_str().unwrap()]
    );
}

#[test]
fn version_needs_no_daemon() {
    // The socket names nothing: VERSION must not try it.
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "x",
        "type": "wasmgate-cni",
        "socket": format!("/nonexistent/{}/cni.sock", unique("v")),
    })
    .to_string();
    let out = cni("VERSION", "", "", "", &conf);
    let v = out.ok().json();
    assert_eq!(v["cniVersion"], "1.0.0");
    let supported: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for want in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(
            supported.contains(&want),
            "{want} missing from {supported:?}"
        );
    }

    // With no config at all it answers in the newest version.
    let out = cni("VERSION", "", "", "", "");
    assert_eq!(out.ok().json()["cniVersion"], "1.1.0");
}

#[test]
fn the_ips_capability_and_cni_args_pick_the_address() {
    let d = daemon();
    let conf = d.net_conf("1.1.0", json!({}));
    // runtimeConfig.ips, as a runtime fills it for a plugin that declares the capability.
    let pod = Netns::new("wgp");
    let asked = with_key(&conf, "runtimeConfig", json!({"ips": ["10.240.0.77/24"]}));
    let out = cni("ADD", &unique("c"), &pod.path(), "eth0", &asked);
    assert_eq!(out.ok().ip(), "10.240.0.77");
    assert!(pod.addrs("eth0").contains(&"10.240.0.77/24".to_string()));
    // The same address again is refused without touching the second pod.
    let other = Netns::new("wgp");
    let again = cni("ADD", &unique("c"), &other.path(), "eth0", &asked);
    assert_eq!(again.code(), 111, "{again:?}");
    assert!(again.msg().contains("10.240.0.77"), "{again:?}");
    assert!(other.gone("eth0"));
    // CNI_ARGS IP=, through the shim's environment.
    let third = Netns::new("wgp");
    let out = wasmgate_tests::exec_plugin(
        &wasmgate_tests::bin("wasmgate-cni"),
        &[
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", unique("c")),
            ("CNI_NETNS", third.path()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/usr/lib/cni".into()),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.240.0.88".into()),
        ],
        &conf,
    );
    assert_eq!(out.ok().ip(), "10.240.0.88");
}
