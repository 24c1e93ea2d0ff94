//! The example CNI plugin, `bridge-ipam`, in every language it is written in, held to one
//! behaviour.
//!
//! `plugins/rust/bridge-ipam` and its port `plugins/python/bridge-ipam` must answer alike: the
//! checks below are written once and [`for_each_implementation!`] instantiates them for each, as
//! `<lang>::<check>`. Four of them drive a real daemon through the real `wasmgate-cni` shim with
//! real network namespaces (a runtime's view); the last runs the component under the stock
//! `wasmtime` CLI as the plugin READMEs show it (a plugin author's view).
//!
//! Where a check compares with the Rust plugin, the daemon serves the Rust component too, as
//! the plugin `rust`, next to the implementation under test (the default plugin): the two have
//! separate keyvalue stores, and only calls that build nothing go to `rust`.
//!
//! The Python port's logic also has native unit tests (`plugins/python/bridge-ipam/tests`,
//! ported from the Rust plugin's inline ones); [`python_logic_passes_its_unit_tests`] runs them
//! here so that `cargo test` covers them as `cargo test` in the plugin covers the Rust ones.
//!
//! A Python component carries CPython (~18 MB) and takes seconds to compile: the daemons share
//! one compiled-plugin cache, and the first daemon for a component starts alone (see
//! [`daemon`]) so that parallel tests do not all compile it at once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};
use wasmgate_tests::{
    CniOutput, Daemon, PluginEntry, Pod, cni, host_veth, plugin, repo, wasmtime_cli, with_key,
    with_prev,
};

/// Instantiates every check for each implementation: `$lang => <expression giving the .wasm>`.
/// A new port of the plugin is one more line here, and gets every check.
macro_rules! for_each_implementation {
    ($($lang:ident => $component:expr),* $(,)?) => {$(
        mod $lang {
            use super::*;

            #[test]
            fn add_configures_the_pod_and_check_passes() {
                add_configures_the_pod_and_check_passes_with($component);
            }

            #[test]
            fn del_and_gc_free_addresses_and_del_repeats() {
                del_and_gc_free_addresses_and_del_repeats_with($component);
            }

            #[test]
            fn every_version_the_shim_lists_works() {
                every_version_the_shim_lists_works_with($component);
            }

            #[test]
            fn bad_configs_fail_as_the_rust_plugin_fails() {
                bad_configs_fail_as_the_rust_plugin_fails_with($component);
            }

            #[test]
            fn under_the_stock_wasmtime_cli() {
                under_the_stock_wasmtime_cli_with($component);
            }
        }
    )*};
}

for_each_implementation! {
    rust => plugin("bridge-ipam"),
    python => wasmgate_tests::lang::python::plugin("bridge-ipam"),
}

#[test]
fn python_logic_passes_its_unit_tests() {
    // Building generates the bindings the logic imports (plain dataclasses under CPython).
    wasmgate_tests::lang::python::plugin("bridge-ipam");
    let dir = repo().join("plugins/python/bridge-ipam");
    assert!(
        dir.join("target/bindings/wit_world").is_dir(),
        "no generated bindings"
    );
    let out = Command::new(repo().join("target/tools/venv/bin/python"))
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(&dir)
        .env("PYTHONPATH", "src:target/bindings")
        // Keep bytecode caches out of the source tree the component is built from.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(
        report.contains("OK") && !report.contains("Ran 0 tests"),
        "{report}"
    );
}

// ---- through the daemon ----

/// A daemon serving `component` as its default plugin and the Rust plugin as `rust`.
///
/// The first daemon of this process for a component starts while holding a lock, so a component
/// that is not yet in the shared cache is compiled once, not once per parallel test.
fn daemon(component: PathBuf) -> Daemon {
    static STARTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let entries = || {
        vec![
            PluginEntry::new("plugin", component.clone()),
            PluginEntry::new("rust", plugin("bridge-ipam")),
        ]
    };
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if started.contains(&component) {
        drop(started);
        return Daemon::start(entries());
    }
    let t = Instant::now();
    let d = Daemon::start(entries());
    eprintln!(
        "daemon with {} up in {:?}",
        component.display(),
        t.elapsed()
    );
    started.push(component.clone());
    d
}

/// `out` succeeded with no output, as DEL, CHECK and GC answer.
fn assert_empty_ok(out: &CniOutput, what: &str) {
    assert_eq!(
        (out.exit, out.stdout.as_str()),
        (0, ""),
        "{what}: {}",
        out.stderr
    );
}

fn check_ok(pod: &Pod, conf: &str, result: &Value) {
    assert_empty_ok(&pod.check(&with_prev(conf, result)), "CHECK after ADD");
}

fn add_configures_the_pod_and_check_passes_with(component: PathBuf) {
    let d = daemon(component);
    let conf = d.net_conf("1.1.0", json!({}));

    let a = Pod::new();
    let result = a.add(&conf).ok().json();
    let addr = result["ips"][0]["address"].as_str().unwrap().to_string();
    let gw = result["ips"][0]["gateway"].as_str().unwrap().to_string();
    // An address of the podcidr (10.240.0.0/24), neither its network, broadcast nor gateway.
    let host: u8 = addr
        .strip_prefix("10.240.0.")
        .and_then(|h| h.strip_suffix("/24"))
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("{addr} is not an address of 10.240.0.0/24"));
    assert!(
        host != 0 && host != 255 && gw != addr.trim_end_matches("/24"),
        "{result}"
    );
    // The kernel agrees: the pod's eth0 holds the address, and its default route is the gateway,
    // which the bridge holds on the node and the pod reaches.
    assert_eq!(a.ns.addrs("eth0"), vec![addr.clone()]);
    let routes: Value = serde_json::from_str(&a.ns.ip(&["-j", "route"])).unwrap();
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == gw.as_str()),
        "no default route via {gw}: {routes}"
    );
    assert!(d.node.has_link(&host_veth(&result)));
    assert_eq!(d.node.addrs("wgbr0"), vec![format!("{gw}/24")]);
    assert!(a.ns.ping(&gw), "the pod cannot reach its gateway {gw}");

    check_ok(&a, &conf, &result);

    // A second pod gets another address, and the two reach each other over the bridge.
    let b = Pod::new();
    let result_b = b.add(&conf).ok().json();
    let addr_b = result_b["ips"][0]["address"].as_str().unwrap().to_string();
    assert_ne!(addr, addr_b);
    assert_eq!(b.ns.addrs("eth0"), vec![addr_b.clone()]);
    assert!(a.ns.ping(addr_b.split('/').next().unwrap()));
    check_ok(&b, &conf, &result_b);
    // The first pod is untouched by the second.
    check_ok(&a, &conf, &result);
}

fn del_and_gc_free_addresses_and_del_repeats_with(component: PathBuf) {
    let d = daemon(component);
    // A /30 has exactly one address to give, so whether it is free is unambiguous.
    let conf = d.net_conf("1.1.0", json!({"name": "tiny", "podcidr": "10.240.0.0/30"}));
    let status = || cni("STATUS", "", "", "", &conf);
    assert_empty_ok(&status(), "STATUS of an empty pool");

    let a = Pod::new();
    let result = a.add(&conf).ok().json();
    let only = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(a.ns.addrs("eth0"), vec![only.clone()]);
    assert_eq!(status().code(), 50, "STATUS of a full pool");
    let b = Pod::new();
    let out = b.add(&conf);
    assert_eq!(out.code(), 110, "{out:?}");
    assert!(out.msg().contains("10.240.0.0/30"), "{out:?}");
    assert!(b.ns.gone("eth0"), "a refused ADD built something");

    // DEL frees the address: the waiting pod gets exactly it.
    let host = host_veth(&result);
    assert_empty_ok(&a.del(&with_prev(&conf, &result)), "DEL");
    assert!(a.ns.gone("eth0") && d.node.gone(&host));
    assert_empty_ok(&status(), "STATUS after DEL");
    let result_b = b.add(&conf).ok().json();
    assert_eq!(result_b["ips"][0]["address"], only.as_str());
    assert_eq!(b.ns.addrs("eth0"), vec![only.clone()]);

    // DEL again, and DEL of a pod never added, succeed and touch nobody else.
    assert_empty_ok(&a.del(&conf), "a repeated DEL");
    assert_empty_ok(&Pod::new().del(&conf), "DEL of a pod never added");
    assert_eq!(b.ns.addrs("eth0"), vec![only.clone()]);
    check_ok(&b, &conf, &result_b);

    // GC with nothing valid frees b's address too, and a new pod gets it.
    let gc = with_key(&conf, "cni.dev/valid-attachments", json!([]));
    assert_empty_ok(&cni("GC", "", "", "", &gc), "GC");
    assert!(b.ns.gone("eth0"));
    let c = Pod::new();
    assert_eq!(c.add(&conf).ok().json()["ips"][0]["address"], only.as_str());
}

fn every_version_the_shim_lists_works_with(component: PathBuf) {
    let d = daemon(component);
    let version = cni("VERSION", "", "", "", &d.net_conf("1.1.0", json!({})));
    let listed: Vec<String> = version.ok().json()["supportedVersions"]
        .as_array()
        .expect("VERSION lists supportedVersions")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(!listed.is_empty());
    // The host asks the plugin for its versions on every call and refuses (code 1) one it does
    // not list: an ADD and a DEL in each version go through only if the plugin speaks them all.
    let mut seen = BTreeSet::new();
    for v in &listed {
        let conf = d.net_conf(v, json!({}));
        let pod = Pod::new();
        let out = pod.add(&conf);
        let result = out.ok().json();
        assert_eq!(result["cniVersion"], v.as_str(), "{result}");
        let addr = result["ips"][0]["address"].as_str().unwrap();
        assert!(seen.insert(addr.to_string()), "{addr} handed out twice");
        assert_eq!(
            pod.ns.addrs("eth0"),
            vec![addr.to_string()],
            "cniVersion {v}"
        );
        assert_empty_ok(&pod.del(&conf), &format!("DEL in cniVersion {v}"));
    }
}

/// Configs the plugin must refuse (the host passes them on untouched), as `net_conf` extras,
/// with what the error message must name.
fn bad_configs() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"podcidr": null}), "podcidr"),
        (json!({"podcidr": 24}), "podcidr"),
        (json!({"podcidr": "fd00::/64"}), "podcidr"),
        (json!({"podcidr": "10.240.0.0"}), "podcidr"),
        (json!({"podcidr": "10.240.0.0/31"}), "podcidr"),
        (json!({"podcidr": "10.240.0.01/24"}), "podcidr"),
        (json!({"gateway": "10.241.0.1"}), "gateway"),
        (json!({"gateway": "nope"}), "gateway"),
        (json!({"gateway": "10.240.0.255"}), "gateway"),
        (json!({"bridge": "way-too-long-bridge"}), "bridge"),
        (json!({"bridge": "a/b"}), "bridge"),
        (json!({"bridge": "a\u{85}b"}), "bridge"),
        (json!({"mtu": 10}), "mtu"),
        (json!({"mtu": "1500"}), "mtu"),
        (json!({"mtu": 1500.5}), "mtu"),
        (json!({"mode": "macvlan"}), "mode"),
        (json!({"dns": {"nameservers": "x"}}), "dns"),
        (json!({"dns": {"bogus": []}}), "dns"),
        (json!({"dns": {"search": [1], "domain": 2}}), "dns"),
        // Requested addresses: the gateway, not a list, not an address.
        (
            json!({"runtimeConfig": {"ips": ["10.240.0.1"]}}),
            "10.240.0.1",
        ),
        (
            json!({"runtimeConfig": {"ips": "10.240.0.9"}}),
            "runtimeConfig",
        ),
        (
            json!({"args": {"cni": {"ips": ["not-an-ip"]}}}),
            "not-an-ip",
        ),
    ]
}

fn bad_configs_fail_as_the_rust_plugin_fails_with(component: PathBuf) {
    let d = daemon(component);
    let pod = Pod::new();
    for (extra, named) in bad_configs() {
        let conf = d.net_conf("1.1.0", extra.clone());
        let reference = with_key(&conf, "plugin", json!("rust"));
        let ours = pod.add(&conf);
        let rust = pod.add(&reference);
        // The README's contract: an invalid config is code 7, its message naming the culprit.
        assert_eq!(ours.code(), 7, "{extra}: {ours:?}");
        assert!(ours.msg().contains(named), "{extra}: {ours:?}");
        assert_eq!(
            (ours.code(), ours.msg()),
            (rust.code(), rust.msg()),
            "{extra}: differs from the Rust plugin"
        );
        assert!(
            pod.ns.gone("eth0"),
            "{extra}: a refused ADD built something"
        );

        // STATUS reads the config too; DEL needs none of it and succeeds.
        let (ours, rust) = (
            cni("STATUS", "", "", "", &conf),
            cni("STATUS", "", "", "", &reference),
        );
        assert_eq!(
            (ours.exit, &ours.stdout),
            (rust.exit, &rust.stdout),
            "STATUS {extra}"
        );
        assert_empty_ok(&pod.del(&conf), &format!("DEL with {extra}"));
    }
    // Nothing was claimed along the way: a good config gets the pool's first address (.1 is
    // the gateway), as from a fresh store.
    let fresh = Pod::new();
    assert_eq!(
        fresh.add(&d.net_conf("1.1.0", json!({}))).ok().ip(),
        "10.240.0.2"
    );
}

// ---- under the stock wasmtime CLI ----

/// `wasmtime run -S keyvalue -S config EXTRA --invoke CALL <component>`: its printed WAVE value.
fn invoke(component: &PathBuf, extra: &[&str], call: &str) -> String {
    let out = Command::new(wasmtime_cli())
        .args(["run", "-S", "keyvalue", "-S", "config"])
        .args(extra)
        .args(["--invoke", call])
        .arg(component)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wasmtime failed on {call}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const CONF: &str = r#"{cni-version: "1.1.0", name: "demo", type: "wasmgate-cni", prev-result: none, runtime-config: none, args: none, raw: "{\"podcidr\":\"10.240.0.0/24\"}"}"#;
const CALL: &str = r#"{container-id: "c1", netns: "/var/run/netns/x", ifname: "eth0", args: []}"#;

fn under_the_stock_wasmtime_cli_with(component: PathBuf) {
    let reference = plugin("bridge-ipam");
    let kv = |pairs: &[&str]| -> Vec<String> {
        pairs
            .iter()
            .flat_map(|p| ["-S".to_string(), format!("keyvalue-in-memory-data={p}")])
            .collect()
    };
    let tiny = CONF.replace("10.240.0.0/24", "10.0.0.0/30");
    let prev =
        r#"{\"ips\":[{\"address\":\"10.240.0.2/24\",\"gateway\":\"10.240.0.1\",\"interface\":1}]}"#;
    let checked = CONF.replace(
        "prev-result: none",
        &format!("prev-result: some(\"{prev}\")"),
    );
    let preloaded = kv(&[
        "demo/alloc/c1/eth0=10.240.0.2",
        "demo/owner/10.240.0.2=c1/eth0",
        "demo/claim/10.240.0.2=1",
    ]);
    // (options, call, what the output must show): the README's commands and a few more.
    let cases: Vec<(Vec<String>, String, &[&str])> = vec![
        (vec![], "versions()".into(), &[r#""0.3.0""#, r#""1.1.0""#]),
        (
            vec![],
            format!("add({CONF}, {CALL})"),
            &[
                "ok(",
                r#"address: "10.240.0.2/24""#,
                r#"bridge: some({name: "wgbr0""#,
            ],
        ),
        (
            ["-S", "config-var=bridge=cni0", "-S", "config-var=mtu=1450"]
                .map(String::from)
                .into_iter()
                .chain(kv(&["demo/claim/10.240.0.2=1"]))
                .collect(),
            format!("add({CONF}, {CALL})"),
            &[
                r#"address: "10.240.0.3/24""#,
                r#"name: "cni0""#,
                "mtu: some(1450)",
            ],
        ),
        (
            kv(&["demo/alloc/c1/eth0=10.240.0.2"]),
            format!("add({CONF}, {CALL})"),
            &["err(", "code: 102", "c1/eth0"],
        ),
        (vec![], format!("status({CONF})"), &["ok"]),
        (
            kv(&["demo/owner/10.0.0.2=c1/eth0"]),
            format!("status({tiny})"),
            &["err(", "code: 50", "10.0.0.0/30 exhausted"],
        ),
        (preloaded.clone(), format!("del({CONF}, {CALL})"), &["ok"]),
        (vec![], format!("del({CONF}, {CALL})"), &["ok"]),
        (
            preloaded,
            format!("check({checked}, {CALL})"),
            &["ok(some(", r#"container-addresses: ["10.240.0.2/24"]"#],
        ),
        (
            kv(&[
                "demo/alloc/c1/eth0=10.240.0.2",
                "demo/alloc/c2/eth0=10.240.0.3",
            ]),
            format!(r#"gc({CONF}, [{{container-id: "c1", ifname: "eth0"}}])"#),
            &[r#"ok([{container-id: "c2", ifname: "eth0"}])"#],
        ),
    ];
    for (extra, call, shows) in cases {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = invoke(&component, &extra, &call);
        for s in shows {
            assert!(out.contains(s), "{call} {extra:?}: {s} not in {out}");
        }
        assert_eq!(
            out,
            invoke(&reference, &extra, &call),
            "{call} {extra:?}: differs from the Rust plugin"
        );
    }
}
