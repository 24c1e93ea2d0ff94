//! Bad input of every kind, from the runtime (environment, config), from a plugin (traps, runaway
//! loops, memory hogs) and from the plugin's plan, against the real daemon and shim: each call gets
//! a clear CNI error with the spec's code, nothing is left behind, and the daemon keeps serving.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmgate_cni::{Command, Invocation, Request};
use wasmgate_tests::{
    CniOutput, Daemon, Netns, PluginEntry, bin, cni, exec_plugin, plugin, unique,
};

const CNI_PATH: &str = "/usr/lib/cni:/opt/cni/bin";

fn bridge() -> PluginEntry {
    PluginEntry::new("bridge", plugin("bridge-ipam"))
}

fn misbehave(name: &str, mode: &str) -> PluginEntry {
    PluginEntry::new(name, plugin("misbehave")).extra(&format!("config = {{ mode = \"{mode}\" }}"))
}

/// The daemon still runs, answers a STATUS through the shim, and has not logged a panic.
fn assert_serving(d: &mut Daemon, after: &str) {
    assert!(d.alive(), "daemon died after {after}: {}", d.log());
    // A network of its own, so this probe never depends on what the case did to its pool.
    let conf = d.net_conf("1.1.0", json!({"name": "probe-net"}));
    let out = cni("STATUS", "", "", "", &conf);
    assert_eq!(
        out.exit,
        0,
        "STATUS failed after {after}: {out:?}\n{}",
        d.log()
    );
    assert!(
        !d.log().contains("panicked"),
        "daemon panicked after {after}: {}",
        d.log()
    );
}

/// The shim's full ADD environment, with `overrides` replacing (or, when empty, removing) entries.
fn add_env(netns: &Netns, overrides: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CNI_COMMAND", "ADD".to_string()),
        ("CNI_CONTAINERID", unique("c")),
        ("CNI_NETNS", netns.path()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", CNI_PATH.to_string()),
    ];
    for (k, v) in overrides {
        env.retain(|(ek, _)| ek != k);
        if !v.is_empty() {
            env.push((k, v.to_string()));
        }
    }
    env
}

fn shim(env: &[(&str, String)], stdin: &str) -> CniOutput {
    exec_plugin(&bin("wasmgate-cni"), env, stdin)
}

#[test]
fn malformed_json_is_code_6_with_or_without_the_daemon() {
    let mut d = Daemon::start(vec![bridge()]);
    let pod = Netns::new("wgp");
    let good = d.net_conf("1.1.0", json!({}));
    // Cut off mid-object: still names the live daemon's socket, but is not JSON.
    let truncated = &good[..good.len() - 1];
    let nowhere = d.dir.join("nowhere").join("cni.sock");
    let truncated_nowhere = format!(
        "{{\"cniVersion\":\"1.1.0\",\"name\":\"n\",\"type\":\"wasmgate-cni\",\"socket\":{:?},\"connectTimeoutMs\":3000,",
        nowhere.display()
    );
    for (what, stdin) in [
        ("truncated config (daemon up)", truncated),
        (
            "truncated config (socket nowhere)",
            truncated_nowhere.as_str(),
        ),
        ("not JSON at all", "this is not json"),
        ("empty stdin", ""),
    ] {
        let started = Instant::now();
        let out = shim(&add_env(&pod, &[]), stdin);
        assert_eq!(out.code(), 6, "{what}: {out:?}");
        assert!(
            out.msg().contains("decode"),
            "{what}: message should say it cannot decode: {out:?}"
        );
        // connectTimeoutMs is 3 s: an answer well before that means the daemon was never tried.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert_serving(&mut d, what);
    }
    assert!(pod.gone("eth0"));
}

#[test]
fn bad_environment_is_code_4_naming_the_variable() {
    let mut d = Daemon::start(vec![bridge()]);
    let pod = Netns::new("wgp");
    let conf = d.net_conf("1.1.0", json!({}));
    // (what, variable, value): an empty value leaves the variable unset.
    let cases = [
        ("missing CNI_COMMAND", "CNI_COMMAND", ""),
        ("missing CNI_CONTAINERID", "CNI_CONTAINERID", ""),
        ("missing CNI_IFNAME", "CNI_IFNAME", ""),
        ("missing CNI_NETNS on ADD", "CNI_NETNS", ""),
        ("invalid container id", "CNI_CONTAINERID", "bad id!"),
        ("ifname too long", "CNI_IFNAME", "a234567890123456"),
        ("ifname with '/'", "CNI_IFNAME", "eth/0"),
    ];
    for (what, var, value) in cases {
        let out = shim(&add_env(&pod, &[(var, value)]), &conf);
        assert_eq!(out.code(), 4, "{what}: {out:?}");
        assert!(
            out.msg().contains(var),
            "{what}: message should name {var}: {out:?}"
        );
        assert!(
            out.msg().contains(value),
            "{what}: message should quote the value: {out:?}"
        );
        assert_serving(&mut d, what);
    }
    assert!(pod.gone("eth0"), "nothing may be built from a refused call");

    let out = cni(
        "ADD",
        &unique("c"),
        &pod.path(),
        "eth0",
        &d.net_conf("9.9.9", json!({})),
    );
    assert_eq!(out.code(), 1, "unsupported cniVersion: {out:?}");
    assert!(
        out.msg().contains("9.9.9"),
        "message should name the version: {out:?}"
    );
    assert_serving(&mut d, "an unsupported cniVersion");
}

#[test]
fn plugin_failures_are_contained() {
    let mut d = Daemon::start(vec![
        bridge(),
        misbehave("mb-echo", "echo"),
        misbehave("mb-trap", "trap"),
        misbehave("mb-loop", "loop").extra("timeout_ms = 300"),
        misbehave("mb-oom", "oom").extra("memory_mb = 16"),
    ]);
    let pod = Netns::new("wgp");
    let add = |d: &Daemon, plugin: &str, extra: Value| {
        let mut e = json!({"plugin": plugin});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        cni(
            "ADD",
            &unique("c"),
            &pod.path(),
            "eth0",
            &d.net_conf("1.1.0", e),
        )
    };

    // Keys wasmgate does not know are the plugin's business: they reach it untouched.
    let out = add(
        &d,
        "mb-echo",
        json!({"zzUnknownKey": {"nested": "zebra-42"}}),
    );
    out.ok();
    let seen = out.json()["dns"]["domain"]
        .as_str()
        .expect("echo returns the raw config")
        .to_string();
    let seen: Value = serde_json::from_str(&seen).expect("the raw config is JSON");
    assert_eq!(
        seen["zzUnknownKey"],
        json!({"nested": "zebra-42"}),
        "raw config: {seen}"
    );
    assert_eq!(seen["plugin"], "mb-echo");
    assert_serving(&mut d, "the echo plugin");

    let out = add(&d, "mb-trap", json!({}));
    assert_eq!(out.code(), 999, "trap: {out:?}");
    let msg = out.msg();
    assert!(
        msg.contains("mb-trap"),
        "trap message should name the plugin: {msg}"
    );
    assert!(
        msg.contains("trapped") && msg.contains("unreachable"),
        "trap message should say how it trapped: {msg}"
    );
    assert!(
        msg.contains("misbehave asked to trap"),
        "trap message should carry the guest's panic message: {msg}"
    );
    // The backtrace goes to details, keeping msg to one line.
    assert!(!msg.contains('\n'), "{msg}");
    assert!(
        out.json()["details"]
            .as_str()
            .unwrap_or_default()
            .contains("stderr:"),
        "{out:?}"
    );
    assert_serving(&mut d, "a trapping plugin");

    let started = Instant::now();
    let out = add(&d, "mb-loop", json!({}));
    let took = started.elapsed();
    assert_eq!(out.code(), 11, "runaway loop: {out:?}");
    assert!(
        out.msg().contains("mb-loop") && out.msg().contains("deadline"),
        "{out:?}"
    );
    assert!(
        took >= Duration::from_millis(300),
        "the deadline is 300 ms, yet the call took {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the call took {took:?} for a 300 ms deadline"
    );
    assert_serving(&mut d, "a runaway plugin");

    let out = add(&d, "mb-oom", json!({}));
    assert_eq!(out.code(), 999, "memory hog: {out:?}");
    let msg = out.msg();
    assert!(
        msg.contains("mb-oom") && msg.contains("memory limit"),
        "{msg}"
    );
    assert!(
        msg.contains(&(16u64 << 20).to_string()),
        "message should give the limit: {msg}"
    );
    assert_serving(&mut d, "a memory-hungry plugin");

    assert!(pod.gone("eth0"));
}

#[test]
fn refused_and_conflicting_attachments_leave_nothing_behind() {
    let mut d = Daemon::start(vec![bridge()]);
    let pod = Netns::new("wgp");
    // A /30 has exactly one address to give (.2): STATUS tells whether it is held.
    let tiny = json!({"name": "tinynet", "podcidr": "10.240.0.0/30"});
    let conf = d.net_conf("1.1.0", tiny.clone());
    let pool_free = || {
        let out = cni("STATUS", "", "", "", &conf);
        match out.exit {
            0 => true,
            _ => {
                assert_eq!(out.code(), 50, "STATUS: {out:?}");
                false
            }
        }
    };
    let host_veths = |d: &Daemon| {
        d.node
            .ip(&["-o", "link", "show", "type", "veth"])
            .lines()
            .count()
    };
    assert!(pool_free());

    // A plan the host must refuse: a bridge this plugin may not touch.
    let mut evil = tiny.clone();
    evil["bridge"] = json!("evil0");
    let out = cni(
        "ADD",
        &unique("c"),
        &pod.path(),
        "eth0",
        &d.net_conf("1.1.0", evil),
    );
    assert_eq!(out.code(), 103, "{out:?}");
    assert!(
        out.msg().contains("evil0"),
        "message should name the bridge: {out:?}"
    );
    assert!(
        pod.gone("eth0"),
        "a refused plan must build nothing in the pod"
    );
    assert!(
        d.node.gone("evil0"),
        "a refused plan must build nothing on the node"
    );
    assert_eq!(host_veths(&d), 0);
    assert!(
        pool_free(),
        "the address of a refused plan must be released: {}",
        d.log()
    );
    assert_serving(&mut d, "a refused plan");

    // A netns that does not exist: the plugin has allocated by the time the host finds out.
    let missing = format!("/var/run/netns/{}", unique("gone"));
    let out = cni("ADD", &unique("c"), &missing, "eth0", &conf);
    assert_ne!(out.exit, 0, "{out:?}");
    assert_eq!(out.code(), 4, "{out:?}");
    assert!(
        out.msg().contains(&missing),
        "message should name the netns: {out:?}"
    );
    assert_eq!(host_veths(&d), 0);
    assert!(
        pool_free(),
        "the address for a missing netns must be released: {}",
        d.log()
    );
    assert_serving(&mut d, "a missing netns");

    // Both failures gave their address back: the one real ADD gets the pool's only address.
    let cid = unique("c");
    let out = cni("ADD", &cid, &pod.path(), "eth0", &conf);
    assert_eq!(out.ok().ip(), "10.240.0.2");
    assert_eq!(pod.addrs("eth0"), ["10.240.0.2/30"]);
    assert!(!pool_free(), "STATUS must see the pool exhausted now");

    let again = cni("ADD", &cid, &pod.path(), "eth0", &conf);
    assert_eq!(again.code(), 102, "{again:?}");
    assert!(
        again.msg().contains(&cid),
        "message should name the attachment: {again:?}"
    );
    assert_eq!(
        pod.addrs("eth0"),
        ["10.240.0.2/30"],
        "the existing attachment is untouched"
    );
    assert_serving(&mut d, "a second ADD");

    let out = cni("DEL", &unique("never"), &pod.path(), "eth0", &conf);
    out.ok();
    assert!(
        !pool_free(),
        "DEL of an unknown attachment must not free someone else's address"
    );
    assert!(pod.has_link("eth0"));
    assert_serving(&mut d, "DEL of an unknown attachment");

    cni("DEL", &cid, &pod.path(), "eth0", &conf).ok();
    assert!(pod.gone("eth0"));
    assert_eq!(host_veths(&d), 0);
    assert!(pool_free());
}

/// One raw line to the daemon's CNI socket; its one-line reply, parsed.
fn raw_request(d: &Daemon, line: &[u8]) -> Value {
    let mut s = UnixStream::connect(d.cni_socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line).unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| {
        panic!(
            "reply to {:?} is not JSON ({e}): {reply:?}",
            String::from_utf8_lossy(line)
        )
    })
}

#[test]
fn garbage_on_the_daemon_socket_is_code_6() {
    let mut d = Daemon::start(vec![bridge()]);
    for garbage in ["garbage\n", "{\"invocation\": 42}\n", "\n"] {
        let reply = raw_request(&d, garbage.as_bytes());
        assert_eq!(reply["status"], "error", "{garbage:?}: {reply}");
        assert_eq!(reply["error"]["code"], 6, "{garbage:?}: {reply}");
        let msg = reply["error"]["msg"].as_str().unwrap_or("");
        assert!(msg.starts_with("decode request"), "{garbage:?}: {reply}");
        assert_serving(&mut d, &format!("{garbage:?} on the socket"));
    }

    // Well-formed, but with an environment the shim would never have let through: anything that
    // can open the socket can send this, so the daemon checks again.
    let pod = Netns::new("wgp");
    let req = Request {
        invocation: Invocation {
            command: Command::Add,
            container_id: "bad id!".into(),
            netns: pod.path(),
            ifname: "eth0".into(),
            args: vec![],
            path: vec!["/opt/cni/bin".into()],
        },
        config: d.net_conf("1.1.0", json!({})),
    };
    let mut line = serde_json::to_vec(&req).unwrap();
    line.push(b'\n');
    let reply = raw_request(&d, &line);
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], 4, "{reply}");
    let msg = reply["error"]["msg"].as_str().unwrap_or("");
    assert!(msg.contains("CNI_CONTAINERID"), "{reply}");
    assert!(pod.gone("eth0"));
    assert_serving(&mut d, "an unchecked request on the socket");
}
