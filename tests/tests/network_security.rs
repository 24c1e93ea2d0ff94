//! Issue 14, network side: what a network plugin, or any client of the CNI socket, must not be
//! able to do to the node, against a real daemon in its own node netns, through the real shim.
//!
//! The attacks come from the `misbehave` fixture in `plan` mode (it returns whatever plan and
//! result the network config spells out) and from the example `bridge-ipam` plugin fed a hostile
//! config. Each test asserts the refusal (code and message) and that the node is untouched.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};
use wasmgate_cni::command::Command;
use wasmgate_cni::env::Invocation;
use wasmgate_cni::wire::Request;
use wasmgate_tests::{
    CniOutput, Daemon, Netns, PluginEntry, Pod, bin, cni, exec_plugin, host_veth, plugin, unique,
    with_prev,
};

fn bridge() -> PluginEntry {
    PluginEntry::new("bridge", plugin("bridge-ipam"))
}

fn planner() -> PluginEntry {
    PluginEntry::new("planner", plugin("misbehave")).extra("config = { mode = \"plan\" }")
}

/// A config for the `planner` plugin returning `plan` (and `more` keys, e.g. `result_ips`).
fn plan_conf(d: &Daemon, plan: Value, more: Value) -> String {
    let mut extra = json!({ "plugin": "planner", "plan": plan });
    for (k, v) in more.as_object().unwrap() {
        extra[k] = v.clone();
    }
    d.net_conf("1.1.0", extra)
}

fn refused(out: &CniOutput, code: u64, wants: &[&str]) {
    assert_eq!(out.code(), code, "{} / {}", out.stdout, out.stderr);
    let msg = out.msg();
    for want in wants {
        assert!(msg.contains(want), "{want:?} not in {msg:?}");
    }
}

/// Item 1: a bridge address may not capture the node's traffic beyond the grant.
#[test]
fn a_bridge_address_wider_than_the_grant_is_refused() {
    let d = Daemon::start(vec![bridge(), planner()]);
    for wide in ["128.0.0.1/1", "0.0.0.0/0", "10.77.0.1/7"] {
        let pod = Pod::new();
        let veth = unique("wgs");
        let plan = json!({
            "veth": { "host_name": veth },
            "bridge": { "name": "wgbr0", "addresses": [wide] },
            "container_addresses": ["10.77.0.5/24"],
        });
        let out = pod.add(&plan_conf(&d, plan, json!({})));
        refused(&out, 103, &[&format!("bridge address {wide:?}")]);
        assert!(!d.node.has_link(&veth), "{wide}: the host veth was built");
        assert!(!pod.ns.has_link("eth0"), "{wide}: the pod was plumbed");
        let routes = d.node.ip(&["route", "show"]);
        assert!(
            !routes.contains("128.0.0.0/1") && !routes.contains("10.0.0.0/7"),
            "{routes}"
        );
        assert!(
            d.node.addrs("wgbr0").is_empty(),
            "{wide}: {:?}",
            d.node.addrs("wgbr0")
        );
    }

    // The example plugin refuses such a podcidr itself, before the host sees a plan.
    for wide in ["128.0.0.0/1", "0.0.0.0/0"] {
        let pod = Pod::new();
        let out = pod.add(&d.net_conf("1.1.0", json!({ "podcidr": wide })));
        refused(&out, 7, &["podcidr", "too wide"]);
        assert!(!pod.ns.has_link("eth0"));
    }
    // One it accepts but the host has not granted: refused by the host.
    let pod = Pod::new();
    let out = pod.add(&d.net_conf("1.1.0", json!({ "podcidr": "172.16.0.0/24" })));
    refused(
        &out,
        103,
        &["outside the plugin's pod_cidrs grant [10.0.0.0/8]"],
    );
    assert!(!pod.ns.has_link("eth0"));
}

/// Item 2: the node's default gateway as the pod's address (ptp, `IP=`), or on the host veth.
#[test]
fn a_pod_address_that_is_the_nodes_gateway_is_refused() {
    let d = Daemon::start(vec![bridge()]);
    d.node
        .ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
    d.node.ip(&["addr", "add", "192.168.77.2/24", "dev", "up0"]);
    d.node.ip(&["link", "set", "up0", "up"]);
    d.node
        .ip(&["route", "add", "default", "via", "192.168.77.1"]);
    let gateway_route = || d.node.ip(&["route", "get", "192.168.77.1"]);
    assert!(gateway_route().contains("dev up0"), "{}", gateway_route());

    let ptp = |gateway: &str| {
        d.net_conf(
            "1.1.0",
            json!({ "podcidr": "192.168.77.0/24", "gateway": gateway, "mode": "ptp" }),
        )
    };
    // The pod claims the gateway: the host would route it into the pod's veth.
    let pod = Pod::new();
    let env = [
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", pod.cid.clone()),
        ("CNI_NETNS", pod.ns.path()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", "/opt/cni/bin".to_string()),
        ("CNI_ARGS", "IP=192.168.77.1".to_string()),
    ];
    let out = exec_plugin(&bin("wasmgate-cni"), &env, &ptp("192.168.77.254"));
    refused(
        &out,
        103,
        &["\"192.168.77.", "outside the plugin's pod_cidrs grant"],
    );
    assert!(!pod.ns.has_link("eth0"));
    assert!(gateway_route().contains("dev up0"), "{}", gateway_route());

    // The gateway on the host veth: it would become a local address of the node.
    let pod = Pod::new();
    let out = pod.add(&ptp("192.168.77.1"));
    refused(&out, 103, &["outside the plugin's pod_cidrs grant"]);
    assert!(!pod.ns.has_link("eth0"));
    let local = d.node.ip(&["route", "show", "table", "local"]);
    assert!(!local.contains("local 192.168.77.1 "), "{local}");
    assert!(gateway_route().contains("dev up0"), "{}", gateway_route());
}

/// Item 2: host routes go to the pod's own address only, in the main table, without gateway,
/// metric or a scope of the plugin's choosing.
#[test]
fn host_routes_with_a_foreign_table_gateway_or_metric_are_refused() {
    let d = Daemon::start(vec![bridge(), planner()]);
    let plan = |veth: &str, route: Value| {
        json!({
            "veth": { "host_name": veth, "host_addresses": ["10.78.0.1/32"] },
            "container_addresses": ["10.78.0.5/24"],
            "host_routes": [route],
        })
    };
    let cases = [
        (
            json!({ "dst": "10.78.0.5/32", "table": 100 }),
            "names table 100",
        ),
        (
            json!({ "dst": "10.78.0.5/32", "gw": "10.78.0.9" }),
            "has gateway \"10.78.0.9\"",
        ),
        (
            json!({ "dst": "10.78.0.5/32", "priority": 1 }),
            "sets metric 1",
        ),
        (json!({ "dst": "10.78.0.5/32", "scope": 0 }), "has scope 0"),
        (
            json!({ "dst": "10.96.0.10/32" }),
            "is not one of the pod's own addresses",
        ),
    ];
    for (route, want) in cases {
        let (pod, veth) = (Pod::new(), unique("wgs"));
        let out = pod.add(&plan_conf(&d, plan(&veth, route.clone()), json!({})));
        refused(&out, 103, &[want]);
        assert!(!d.node.has_link(&veth), "{route}: the host veth was built");
        let all = d.node.ip(&["route", "show", "table", "all"]);
        assert!(!all.contains("table 100"), "{all}");
    }
    // The metadata address as the pod's: outside the grant, wherever it is claimed.
    let (pod, veth) = (Pod::new(), unique("wgs"));
    let metadata = json!({
        "veth": { "host_name": veth },
        "container_addresses": ["169.254.169.254/32"],
        "host_routes": [{ "dst": "169.254.169.254/32" }],
    });
    let out = pod.add(&plan_conf(&d, metadata, json!({})));
    refused(
        &out,
        103,
        &["container address \"169.254.169.254/32\" is outside"],
    );
    assert!(!d.node.has_link(&veth));

    // The same route in the main table, with nothing else, is built and removed.
    let (pod, veth) = (Pod::new(), unique("wgs"));
    let conf = plan_conf(&d, plan(&veth, json!({ "dst": "10.78.0.5/32" })), json!({}));
    let result = pod.add(&conf).ok().json();
    assert_eq!(result["ips"][0]["address"], "10.78.0.5/24", "{result}");
    let route = d.node.ip(&["route", "show", "10.78.0.5"]);
    assert!(route.contains(&format!("dev {veth}")), "{route}");
    pod.del(&conf).ok();
    assert!(d.node.gone(&veth));
}

/// Item 2: the IPs kubelet records as the pod's must be the ones the host built.
#[test]
fn a_result_that_disagrees_with_the_plan_is_refused() {
    let d = Daemon::start(vec![bridge(), planner()]);
    let plan = |veth: &str| {
        json!({
            "veth": { "host_name": veth },
            "bridge": { "name": "wgbr0", "addresses": ["10.79.0.1/24"] },
            "container_addresses": ["10.79.0.5/24"],
        })
    };
    for lie in [
        json!(["10.96.0.10/24"]),
        json!(["10.79.0.5/24", "10.79.0.6/24"]),
    ] {
        let (pod, veth) = (Pod::new(), unique("wgs"));
        let out = pod.add(&plan_conf(&d, plan(&veth), json!({ "result_ips": lie })));
        refused(
            &out,
            103,
            &["result ip", "is not one of the container addresses"],
        );
        assert!(!d.node.has_link(&veth), "{lie}: the host veth was built");
        assert!(!pod.ns.has_link("eth0"));
    }
    let (pod, veth) = (Pod::new(), unique("wgs"));
    let out = pod.add(&plan_conf(
        &d,
        plan(&veth),
        json!({ "result_ips": ["10.96.0.10/24"] }),
    ));
    refused(&out, 103, &["\"10.96.0.10/24\""]);
    // The honest result passes.
    let conf = plan_conf(&d, plan(&veth), json!({}));
    let result = pod.add(&conf).ok().json();
    assert_eq!(
        result["ips"],
        json!([{ "address": "10.79.0.5/24", "interface": 1 }])
    );
    pod.del(&conf).ok();
}

/// Item 3: once the pod's host veth is gone, DEL deletes nothing in the netns it names, even an
/// interface with the recorded ifname; with teardown behind the reply and without.
#[test]
fn del_after_the_host_veth_is_gone_leaves_a_bridge_with_the_ifname() {
    for cni_extra in ["", "deferred_teardown = false"] {
        let d = Daemon::start_with(vec![bridge()], cni_extra);
        let conf = d.net_conf("1.1.0", json!({}));
        let pod = Pod::new();
        let result = pod.add(&conf).ok().json();
        let veth = host_veth(&result);
        d.node.ip(&["link", "del", &veth]);
        assert!(pod.ns.gone("eth0"));
        pod.ns.ip(&["link", "add", "eth0", "type", "bridge"]);

        pod.del(&with_prev(&conf, &result)).ok();
        // A deferred teardown runs behind the reply: give it time to do harm.
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            pod.ns.links("bridge").contains(&"eth0".to_string()),
            "{cni_extra:?}: the bridge called eth0 was deleted"
        );
        // The record is gone: a second DEL is a no-op too.
        pod.del(&conf).ok();
        assert!(pod.ns.has_link("eth0"));

        // A normal DEL still removes both ends.
        let pod = Pod::new();
        let result = pod.add(&conf).ok().json();
        pod.del(&conf).ok();
        assert!(pod.ns.gone("eth0") && d.node.gone(&host_veth(&result)));
    }
}

/// One request straight to the daemon's socket, past the shim's own checks.
fn raw(d: &Daemon, command: Command, netns: &str, config: String) -> Value {
    let req = Request {
        invocation: Invocation {
            command,
            container_id: unique("c"),
            netns: netns.into(),
            ifname: "eth0".into(),
            args: vec![],
            path: vec!["/opt/cni/bin".into()],
        },
        config,
    };
    let mut s = UnixStream::connect(d.cni_socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = serde_json::to_vec(&req).unwrap();
    line.push(b'\n');
    s.write_all(&line).unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap()
}

/// A bind mount of `source` on a new file, unmounted on drop. It is made in `/var/run/netns`,
/// whose mounts propagate into the daemon's mount namespace (`ip netns exec` gives it its own).
struct Bind(std::path::PathBuf);

impl Bind {
    fn new(source: &str) -> Self {
        let target = std::path::Path::new("/var/run/netns").join(unique("wgbind"));
        std::fs::write(&target, "").unwrap();
        wasmgate_tests::sh("mount", &["--bind", source, target.to_str().unwrap()]);
        Bind(target)
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Item 4: `CNI_NETNS` naming the host's own namespace, or a relative path, is code 4 for ADD,
/// CHECK and DEL, from the shim and straight on the socket; one that is gone is fine for DEL.
#[test]
fn cni_netns_must_be_a_pod_namespace() {
    let d = Daemon::start(vec![planner()]);
    // Plumbed into the node, this would at least leave a veth there; it carries no address, so
    // even the code before the fix did the machine no lasting harm.
    let plan = json!({ "veth": { "host_name": unique("wgs") }, "container_addresses": [] });
    let conf = plan_conf(&d, plan, json!({}));
    let prev = json!({ "cniVersion": "1.1.0", "interfaces": [], "ips": [] });
    let daemon_bind = Bind::new(&format!("/proc/{}/ns/net", d.pid().unwrap()));
    // The node's netns file is a bind of the daemon's own namespace too.
    let mut hosts = vec![
        (
            "/proc/self/ns/net".to_string(),
            "is the daemon's own network namespace",
        ),
        (d.node.path(), "is the daemon's own network namespace"),
        (
            daemon_bind.0.display().to_string(),
            "is the daemon's own network namespace",
        ),
    ];
    // Where pid 1's namespace can be looked at (not in every sandbox the tests run in: there
    // opening it fails, and the call is refused with the reason), a bind of it as well.
    let pid1_bind;
    if std::fs::metadata("/proc/1/ns/net").is_ok() {
        pid1_bind = Bind::new("/proc/1/ns/net");
        hosts.push(("/proc/1/ns/net".into(), "is the network namespace of pid 1"));
        hosts.push((
            pid1_bind.0.display().to_string(),
            "is the network namespace of pid 1",
        ));
    } else {
        hosts.push(("/proc/1/ns/net".into(), "Permission denied"));
    }
    let ifname = unique("wgq");
    for (netns, why) in &hosts {
        for command in ["ADD", "CHECK", "DEL"] {
            let conf = if command == "CHECK" {
                with_prev(&conf, &prev)
            } else {
                conf.clone()
            };
            let out = cni(command, &unique("c"), netns, &ifname, &conf);
            refused(&out, 4, &[&format!("netns {netns:?}"), why]);
        }
        assert!(!d.node.has_link(&ifname), "{netns}: plumbed into the node");
    }
    for command in [Command::Add, Command::Check, Command::Del] {
        let conf = if command == Command::Check {
            with_prev(&conf, &prev)
        } else {
            conf.clone()
        };
        let reply = raw(&d, command, "/proc/self/ns/net", conf.clone());
        assert_eq!(reply["error"]["code"], 4, "{command}: {reply}");
        let msg = reply["error"]["msg"].as_str().unwrap();
        assert!(msg.contains("the daemon's own network namespace"), "{msg}");
    }

    // Relative paths: the shim refuses them, and so does the daemon for a client that is not
    // the shim (resolved against the daemon's working directory, `proc/1/ns/net` from `/` would
    // be pid 1's namespace).
    for command in ["ADD", "CHECK", "DEL"] {
        let conf = if command == "CHECK" {
            with_prev(&conf, &prev)
        } else {
            conf.clone()
        };
        let out = cni(command, &unique("c"), "proc/1/ns/net", "eth0", &conf);
        refused(
            &out,
            4,
            &["CNI_NETNS \"proc/1/ns/net\"", "must be an absolute path"],
        );
    }
    for command in [Command::Add, Command::Check, Command::Del] {
        let conf = if command == Command::Check {
            with_prev(&conf, &prev)
        } else {
            conf.clone()
        };
        let reply = raw(&d, command, "proc/1/ns/net", conf);
        assert_eq!(reply["error"]["code"], 4, "{command}: {reply}");
        let msg = reply["error"]["msg"].as_str().unwrap();
        assert!(msg.contains("must be an absolute path"), "{msg}");
    }

    // A DEL for a pod whose namespace is already gone succeeds, as the spec demands.
    let gone = Netns::new("wgp");
    let path = gone.path();
    drop(gone);
    cni("DEL", &unique("c"), &path, "eth0", &conf).ok();
}
