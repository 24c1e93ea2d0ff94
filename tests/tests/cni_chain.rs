//! `wasmgate-cni` in a plugin chain next to Debian's containernetworking-plugins, driven by a
//! small conflist runner that does what CNI spec §3 asks of a runtime:
//!
//! - ADD runs the plugins in list order, each with `prevResult` set to the previous plugin's
//!   result; the last result is the list's, and the runner caches it as libcni does.
//! - CHECK runs them in list order, each with the cached result as `prevResult`.
//! - DEL runs them in reverse order, each with the cached result as `prevResult`, then drops the
//!   cache; a DEL with nothing cached sends no `prevResult`.
//!
//! Runtimes exec every plugin in their own netns, which for these tests is the daemon's node
//! netns: that is where our host veths are, so Debian's host-side plugins must run there too.
//! `runtimeConfig` is not injected from capabilities: the plugins used here take their settings
//! from their own object in the list.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use wasmgate_cni::conf::{conflist_slices, parse_conflist};
use wasmgate_tests::{CniOutput, Daemon, Netns, PluginEntry, bin, plugin, unique};

const CNI_PATH: &str = "/usr/lib/cni";

/// Ours from this build, anything else from the distribution's plugin directory.
fn plugin_binary(type_: &str) -> PathBuf {
    if type_ == "wasmgate-cni" {
        bin("wasmgate-cni")
    } else {
        PathBuf::from(CNI_PATH).join(type_)
    }
}

/// One attachment of a conflist, with the runtime's cache of its final ADD result.
struct Chain<'a> {
    plugins: Vec<Value>,
    runtime_ns: &'a Netns,
    container_id: String,
    netns: String,
    ifname: String,
    cached: Option<Value>,
}

impl<'a> Chain<'a> {
    fn new(conflist: &Value, runtime_ns: &'a Netns, pod: &Netns, ifname: &str) -> Self {
        let plugins = conflist_slices(conflist.to_string().as_bytes()).expect("valid conflist");
        Chain {
            plugins,
            runtime_ns,
            container_id: unique("c"),
            netns: pod.path(),
            ifname: ifname.to_string(),
            cached: None,
        }
    }

    /// Runs one plugin of the list as the runtime would: its slice on stdin, with `prev`.
    fn exec(&self, index: usize, command: &str, prev: Option<&Value>) -> Result<CniOutput, String> {
        let mut conf = self.plugins[index].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let type_ = conf["type"].as_str().unwrap().to_string();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.runtime_ns.name])
            .arg(plugin_binary(&type_))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", CNI_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let out = CniOutput {
            exit: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if out.exit == 0 {
            Ok(out)
        } else {
            Err(format!(
                "{command} failed in plugin {index} ({type_}): {} {}",
                out.stdout, out.stderr
            ))
        }
    }

    /// ADD through the list; returns every plugin's result, the last being the list's.
    fn add(&mut self) -> Result<Vec<Value>, String> {
        let mut results: Vec<Value> = Vec::new();
        for i in 0..self.plugins.len() {
            let out = self.exec(i, "ADD", results.last())?;
            results.push(out.json());
        }
        self.cached = results.last().cloned();
        Ok(results)
    }

    fn check(&self) -> Result<(), String> {
        let cached = self
            .cached
            .as_ref()
            .expect("CHECK needs a cached ADD result");
        for i in 0..self.plugins.len() {
            self.exec(i, "CHECK", Some(cached))?;
        }
        Ok(())
    }

    fn del(&mut self) -> Result<(), String> {
        for i in (0..self.plugins.len()).rev() {
            self.exec(i, "DEL", self.cached.as_ref())?;
        }
        self.cached = None;
        Ok(())
    }
}

fn daemon() -> Daemon {
    Daemon::start(vec![PluginEntry::new("bridge", plugin("bridge-ipam"))])
}

/// Our plugin's entry in a conflist: the daemon's net conf minus what the list itself sets.
fn ours(d: &Daemon, extra: Value) -> Value {
    let mut p: Value = serde_json::from_str(&d.net_conf("1.0.0", extra)).unwrap();
    let obj = p.as_object_mut().unwrap();
    obj.remove("cniVersion");
    obj.remove("name");
    p
}

fn link_mtu(ns: &Netns, ifname: &str) -> u64 {
    let links: Value =
        serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname])).unwrap();
    links[0]["mtu"].as_u64().expect("link has an mtu")
}

fn sysctl(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    wasmgate_tests::sh("ip", &["netns", "exec", &ns.name, "cat", &path])
        .trim()
        .to_string()
}

fn tc(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["-n", ns.name.as_str()];
    all.extend_from_slice(args);
    wasmgate_tests::sh("tc", &all)
}

/// Whether tc and ifb devices work in `ns`, as the bandwidth plugin needs.
fn tc_works(ns: &Netns) -> bool {
    let probe = unique("ifb");
    let made = Command::new("ip")
        .args(["-n", &ns.name, "link", "add", &probe, "type", "ifb"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let _ = Command::new("ip")
            .args(["-n", &ns.name, "link", "del", &probe])
            .status();
    }
    made && Command::new("tc")
        .args(["-n", &ns.name, "qdisc", "show"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The ifb devices in `ns`, by name.
fn ifbs(ns: &Netns) -> Vec<String> {
    ns.links("ifb")
}

#[test]
fn chained_with_tuning_and_bandwidth() {
    let d = daemon();
    let pod = Netns::new("wgp");
    let tuning_dir = d.dir.join("tuning");
    let mut plugins = vec![
        ours(&d, json!({})),
        json!({
            "type": "tuning",
            "mtu": 1400,
            "sysctl": { "net.ipv4.conf.eth0.rp_filter": "2" },
            "dataDir": tuning_dir,
        }),
    ];
    // Shaping acts on the host veth and an ifb device in the runtime's netns. (portmap would do
    // too, but this Debian version fails its own CHECK on IPv4-only pods: plugins#819.)
    let shaping = tc_works(&d.node);
    if shaping {
        plugins.push(json!({
            "type": "bandwidth",
            "ingressRate": 8_000_000, "ingressBurst": 800_000,
            "egressRate": 8_000_000, "egressBurst": 800_000,
        }));
    } else {
        eprintln!("tc/ifb do not work in a netns here: chaining without bandwidth");
    }
    let list = json!({ "cniVersion": "1.0.0", "name": "my-cni-demo", "plugins": plugins });
    assert_eq!(
        parse_conflist(list.to_string().as_bytes())
            .unwrap()
            .cni_version,
        "1.0.0"
    );
    let mut chain = Chain::new(&list, &d.node, &pod, "eth0");

    let results = chain.add().unwrap_or_else(|e| panic!("{e}"));
    let ip = results[0]["ips"][0]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let last = results.last().unwrap();
    assert_eq!(last["cniVersion"], "1.0.0");
    assert_eq!(
        last["ips"][0]["address"],
        ip.as_str(),
        "our address lost down the chain: {last}"
    );
    // Debian's plugins speak libcni 1.0 types, which have no interface `mtu`: compare the rest.
    let ident = |r: &Value| -> Vec<Value> {
        r["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| json!([i["name"], i["mac"], i["sandbox"]]))
            .collect()
    };
    // Later plugins may add interfaces (bandwidth adds its ifb), but ours stay first, unchanged.
    assert_eq!(ident(last)[..2], ident(&results[0])[..], "{last}");
    assert_eq!(pod.addrs("eth0"), vec![ip.clone()]);

    // tuning acted on the interface we built.
    assert_eq!(link_mtu(&pod, "eth0"), 1400);
    assert_eq!(sysctl(&pod, "net.ipv4.conf.eth0.rp_filter"), "2");
    let host = results[0]["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    if shaping {
        let qdisc = tc(&d.node, &["qdisc", "show", "dev", &host]);
        assert!(
            qdisc.contains("tbf"),
            "no ingress shaping on {host}: {qdisc}"
        );
        let ifb = last["interfaces"][2]["name"]
            .as_str()
            .expect("bandwidth reports its ifb");
        assert_eq!(ifbs(&d.node), vec![ifb.to_string()]);
    }

    // Every link checks, ours included: it verifies addresses, routes and the bridge, not the
    // MTU that tuning changed.
    chain.check().unwrap_or_else(|e| panic!("{e}"));

    chain.del().unwrap_or_else(|e| panic!("{e}"));
    assert!(pod.gone("eth0"));
    let veths = d.node.ip(&["-j", "link", "show", "type", "veth"]);
    assert_eq!(
        serde_json::from_str::<Value>(&veths).unwrap(),
        json!([]),
        "{veths}"
    );
    assert!(
        ifbs(&d.node).is_empty(),
        "ifb devices left: {:?}",
        ifbs(&d.node)
    );
    let saved: Vec<_> = std::fs::read_dir(&tuning_dir)
        .map(|e| e.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(saved.is_empty(), "tuning left state behind: {saved:?}");

    // A second DEL, with nothing cached any more, still succeeds all the way down.
    chain.del().unwrap_or_else(|e| panic!("second {e}"));
}

#[test]
fn a_host_local_result_chains_into_ours() {
    let d = daemon();
    let pod = Netns::new("wgp");
    let store = d.dir.join("host-local");
    let list = json!({
        "cniVersion": "0.4.0",
        "name": "my-cni-demo",
        "plugins": [
            // An IPAM executable speaks the same protocol: it allocates and creates nothing,
            // which makes it a first link whose result is real Debian output.
            {
                "type": "host-local",
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.250.0.0/24",
                    "routes": [{ "dst": "192.168.0.0/16" }],
                    "dataDir": store,
                },
            },
            ours(&d, json!({})),
        ],
    });
    let mut chain = Chain::new(&list, &d.node, &pod, "eth0");

    let results = chain.add().unwrap_or_else(|e| panic!("{e}"));
    let (prev, last) = (&results[0], &results[1]);
    assert_eq!(prev["cniVersion"], "0.4.0");
    assert_eq!(
        prev["ips"][0]["version"], "4",
        "host-local's result is 0.4.0-shaped: {prev}"
    );
    let prev_ip = prev["ips"][0]["address"].as_str().unwrap();
    let leased = store
        .join("my-cni-demo")
        .join(prev_ip.split('/').next().unwrap());
    assert!(
        leased.exists(),
        "host-local recorded no lease at {}",
        leased.display()
    );

    // Ours comes back in the list's version, with host-local's entries first and ours appended.
    assert_eq!(last["cniVersion"], "0.4.0");
    let ips = last["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{last}");
    assert_eq!(ips[0], prev["ips"][0], "{last}");
    let ours_ip = ips[1]["address"].as_str().unwrap();
    assert!(ours_ip.starts_with("10.240.0."), "{last}");
    assert_eq!(ips[1]["version"], "4");
    let ifaces = last["interfaces"].as_array().unwrap();
    let idx = ips[1]["interface"]
        .as_u64()
        .expect("our ip names its interface") as usize;
    assert_eq!(ifaces[idx]["name"], "eth0");
    assert_eq!(ifaces[idx]["sandbox"], pod.path().as_str());
    let routes = last["routes"].as_array().unwrap();
    assert_eq!(routes[0]["dst"], "192.168.0.0/16", "{last}");
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "0.0.0.0/0" && r["gw"] == "10.240.0.1"),
        "{last}"
    );

    // Only our attachment is built: host-local's address is data for the runtime, not ours to add.
    assert_eq!(pod.addrs("eth0"), vec![ours_ip.to_string()]);

    chain.check().unwrap_or_else(|e| panic!("{e}"));

    chain.del().unwrap_or_else(|e| panic!("{e}"));
    assert!(pod.gone("eth0"));
    assert!(!leased.exists(), "host-local kept its lease after DEL");
    chain.del().unwrap_or_else(|e| panic!("second {e}"));
}
