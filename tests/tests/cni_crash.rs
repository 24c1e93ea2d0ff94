//! The daemon dying under the shim: `kill -9` and restart must lose no allocation, hand no
//! address out twice, and apply every DEL the shim queued while it was down.
//!
//! Host-side veths live in the daemon's node netns, so that is where they are looked for.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmgate_tests::{
    CniOutput, Daemon, PluginEntry, Pod, add_pods, address, bin, cni, host_veth, plugin, unique,
    with_prev,
};

fn daemon() -> Daemon {
    Daemon::start(vec![PluginEntry::new("bridge", plugin("bridge-ipam"))])
}

fn assert_ok_empty(out: &CniOutput) {
    assert_eq!((out.exit, out.stdout.as_str()), (0, ""), "{}", out.stderr);
}

/// Live entries of the shim's DEL queue (temporary and set-aside files excluded).
fn queued(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Set-aside files of the queue: `.failed` (a DEL this daemon can never apply) and `.bad` (not a
/// queued DEL at all).
fn set_aside(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".failed") || n.ends_with(".bad"))
                .collect()
        })
        .unwrap_or_default()
}

/// `wasmgate trace --stats`, as JSON with `--json`, as the table otherwise.
fn trace_stats(d: &Daemon, json: bool) -> String {
    let mut cmd = std::process::Command::new(bin("wasmgate"));
    cmd.args(["trace", "--stats", "--admin"])
        .arg(d.admin_socket());
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The DEL queue part of `wasmgate trace --stats --json`.
fn queue_stats(d: &Daemon) -> Value {
    let stats: Value = serde_json::from_str(&trace_stats(d, true)).unwrap();
    stats["del_queue"].clone()
}

/// The file name of the queue entry for a DEL of `cid`/eth0 with network config `conf`.
fn entry_name(cid: &str, conf: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(conf.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{cid}-eth0-{}", &hex[..12])
}

/// A plugin file that is not there yet, in a directory of its own, and a way to land it there as
/// a deploy does (write beside, rename into place).
struct LatePlugin {
    dir: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl LatePlugin {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("wg-lateq-"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("late.wasm");
        LatePlugin { dir, path }
    }

    fn land(&self) {
        let tmp = self.dir.join(".late.wasm.tmp");
        std::fs::copy(plugin("bridge-ipam"), &tmp).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

impl Drop for LatePlugin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `done` every 20 ms until it holds, failing after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn plugin_cached(d: &Daemon) -> bool {
    let list = d.plugin_cmd(&["list"]).expect("plugin list");
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bridge")
        .unwrap_or_else(|| panic!("no bridge plugin in {list}"));
    entry["cached"].as_bool().expect("cached is a bool")
}

#[test]
fn kill9_and_restart_keeps_every_allocation() {
    let mut d = daemon();
    let conf = d.net_conf("1.1.0", json!({}));
    // Test daemons share one compiled-plugin cache, so this first start may already have found
    // the artifact; what matters is that the restart below does not compile.

    let first: Vec<(Pod, Value)> = add_pods(&conf, 10);
    let first_ips: BTreeSet<String> = first.iter().map(|(_, r)| address(r)).collect();
    assert_eq!(first_ips.len(), 10);

    d.kill9();
    d.spawn();
    assert!(plugin_cached(&d), "the restart recompiled the plugin");

    let second: Vec<(Pod, Value)> = add_pods(&conf, 10);
    let second_ips: BTreeSet<String> = second.iter().map(|(_, r)| address(r)).collect();
    assert_eq!(second_ips.len(), 10);
    assert!(
        first_ips.is_disjoint(&second_ips),
        "reused after restart: {:?}",
        first_ips.intersection(&second_ips).collect::<Vec<_>>()
    );

    for (pod, r) in &first {
        let host = host_veth(r);
        assert!(d.node.has_link(&host), "{host} vanished across the restart");
        assert_ok_empty(&pod.call("DEL", &with_prev(&conf, r)));
        assert!(d.node.gone(&host), "{host} survived DEL");
        assert!(pod.ns.gone("eth0"));
    }
    for (pod, r) in &second {
        assert_eq!(pod.ns.addrs("eth0"), vec![address(r)]);
        assert!(d.node.has_link(&host_veth(r)));
    }
}

/// A DEL with the daemon down is queued at once, not after `connectTimeoutMs`: when the socket is
/// left behind with nobody listening (a `kill -9`), and when it is gone. The restarted daemon
/// replays both.
#[test]
fn del_while_down_is_queued_at_once_and_replayed() {
    let mut d = daemon();
    let conf = d.net_conf("1.1.0", json!({ "podcidr": "10.241.0.0/29" }));
    let pods: Vec<(Pod, Value)> = add_pods(&conf, 5);
    assert_eq!(cni("STATUS", "", "", "", &conf).code(), 50);

    d.kill9();
    // The default timeout, which ADD would wait out: crictl gives a DEL 2 s.
    let slow = d.net_conf(
        "1.1.0",
        json!({ "podcidr": "10.241.0.0/29", "connectTimeoutMs": 5000 }),
    );
    let victims = [&pods[3], &pods[4]];
    for (i, (victim, result)) in victims.into_iter().enumerate() {
        if i == 1 {
            std::fs::remove_file(d.cni_socket()).expect("the socket kill -9 left behind");
        }
        let started = Instant::now();
        let out = victim.call("DEL", &with_prev(&slow, result));
        let took = started.elapsed();
        assert_ok_empty(&out);
        assert!(
            took < Duration::from_secs(1),
            "DEL {i} took {took:?} to queue"
        );
        assert_eq!(
            queued(&d.queue_dir()).len(),
            i + 1,
            "DEL {i} was not queued"
        );
        // Nothing has been done yet: only the daemon can.
        assert_eq!(victim.ns.addrs("eth0"), vec![address(result)]);
    }

    d.spawn();
    wait_for(
        "the queued DELs to be replayed",
        Duration::from_secs(10),
        || queued(&d.queue_dir()).is_empty(),
    );
    for (victim, result) in victims {
        assert!(victim.ns.gone("eth0"));
        assert!(d.node.gone(&host_veth(result)));
    }
    let leftovers: Vec<_> = std::fs::read_dir(d.queue_dir())
        .map(|e| e.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "queue dir not empty: {leftovers:?}");

    // The addresses are free again, and they are the ones that come back.
    let out = cni("STATUS", "", "", "", &conf);
    assert_ok_empty(&out);
    let freed: BTreeSet<String> = victims.iter().map(|(_, r)| address(r)).collect();
    let newcomer = Pod::new();
    let got = address(&newcomer.call("ADD", &conf).ok().json());
    assert!(freed.contains(&got), "{got} is not one of {freed:?}");
    for (pod, r) in &pods[..3] {
        assert_eq!(pod.ns.addrs("eth0"), vec![address(r)]);
    }
}

#[test]
fn add_and_status_while_down_fail_fast() {
    let mut d = daemon();
    let conf = d.net_conf("1.1.0", json!({}));
    d.kill9();

    let pod = Pod::new();
    let started = Instant::now();
    let out = pod.call("ADD", &conf);
    let took = started.elapsed();
    assert_eq!(out.code(), 11, "{}", out.stdout);
    // It retried for `connectTimeoutMs` (1 s), as a DEL does not.
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "ADD took {took:?} to give up"
    );
    assert!(pod.ns.gone("eth0"));

    let started = Instant::now();
    let out = cni("STATUS", "", "", "", &conf);
    assert_eq!(out.code(), 50, "{}", out.stdout);
    assert!(started.elapsed() < Duration::from_secs(3));

    // Code 11 means "try again", and trying again once the daemon is back works.
    d.spawn();
    let r = pod.call("ADD", &conf).ok().json();
    assert_eq!(pod.ns.addrs("eth0"), vec![address(&r)]);
}

#[test]
fn kill9_during_a_burst_of_adds() {
    const N: usize = 20;
    let mut d = daemon();
    let conf = Arc::new(d.net_conf("1.1.0", json!({ "podcidr": "10.243.0.0/24" })));
    let pods: Arc<Vec<Pod>> = Arc::new((0..N).map(|_| Pod::new()).collect());

    let start = Arc::new(Barrier::new(N + 1));
    let successes = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (pods, conf, start, successes) =
                (pods.clone(), conf.clone(), start.clone(), successes.clone());
            thread::spawn(move || {
                start.wait();
                let out = pods[i].call("ADD", &conf);
                if out.exit == 0 {
                    successes.fetch_add(1, Ordering::SeqCst);
                }
                out
            })
        })
        .collect();
    start.wait();
    // Kill as soon as the first ADD is through, so the rest are in flight or not yet started.
    wait_for(
        "the first ADD of the burst",
        Duration::from_secs(30),
        || successes.load(Ordering::SeqCst) > 0,
    );
    d.kill9();
    d.spawn();
    let outs: Vec<CniOutput> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut succeeded = Vec::new();
    for (pod, out) in pods.iter().zip(&outs) {
        if out.exit == 0 {
            succeeded.push((pod, out.json()));
        } else {
            // A failed ADD must say "try again", the one answer a crash may give.
            assert_eq!(out.code(), 11, "{} {}", out.stdout, out.stderr);
        }
    }
    assert!(!succeeded.is_empty());

    // Every reported success survived: the kernel has it and CHECK agrees.
    for (pod, r) in &succeeded {
        assert_eq!(pod.ns.addrs("eth0"), vec![address(r)], "pod {}", pod.cid);
        let out = pod.call("CHECK", &with_prev(&conf, r));
        assert_eq!(
            out.exit, 0,
            "CHECK of pod {}: {} {}",
            pod.cid, out.stdout, out.stderr
        );
    }

    // Whatever any namespace holds, even half-built by a killed ADD, is never handed out again.
    let present: BTreeSet<String> = pods.iter().flat_map(|p| p.ns.addrs("eth0")).collect();
    let fresh: Vec<Pod> = (0..10).map(|_| Pod::new()).collect();
    let mut seen = present.clone();
    for pod in &fresh {
        let addr = address(&pod.call("ADD", &conf).ok().json());
        assert!(
            seen.insert(addr.clone()),
            "{addr} handed out twice (present: {present:?})"
        );
    }

    // A runtime DELs every failed ADD; that must clean up whatever the crash left behind.
    for (pod, out) in pods.iter().zip(&outs) {
        let del_conf = if out.exit == 0 {
            with_prev(&conf, &out.json())
        } else {
            conf.to_string()
        };
        assert_ok_empty(&pod.call("DEL", &del_conf));
        assert!(pod.ns.gone("eth0"), "pod {} keeps eth0 after DEL", pod.cid);
    }
    let veths: Value =
        serde_json::from_str(&d.node.ip(&["-j", "link", "show", "type", "veth"])).unwrap();
    assert_eq!(
        veths.as_array().map_or(0, Vec::len),
        fresh.len(),
        "host veths: {veths}"
    );
}

#[test]
fn kill9_while_a_deferred_teardown_runs() {
    // DEL is answered once the pod is cut off; the veth is destroyed behind the reply. A daemon
    // killed in that window must finish the teardown when it comes back, and a re-ADD of the
    // same pod must work afterwards.
    let mut d = daemon();
    let conf = d.net_conf("1.1.0", json!({}));
    let pods: Vec<(Pod, Value)> = add_pods(&conf, 5);
    for (pod, _) in &pods {
        assert_ok_empty(&pod.call("DEL", &conf));
    }
    d.kill9();
    d.spawn();
    for (pod, r) in &pods {
        let host = host_veth(r);
        assert!(d.node.gone(&host), "{host} survived DEL and a restart");
        assert!(pod.ns.gone("eth0"));
    }
    // The records agree: the same pods attach again, to working interfaces.
    for (pod, _) in &pods {
        let r = pod.call("ADD", &conf).ok().json();
        assert!(pod.ns.addrs("eth0").contains(&address(&r)));
    }
    let finished = d.log().contains("finished teardowns a previous run left");
    eprintln!(
        "the kill landed {} a teardown finished",
        if finished { "before" } else { "after" }
    );
}

/// A DEL queued while the daemon is down, for a plugin whose file is not there when the daemon
/// starts again (a redeploy under way; the README's plugin-deployed-after-the-daemon case): it
/// stays queued through the start and the polls, nothing is set aside, and it is applied once
/// the file lands: the host veth is gone and the address comes back.
#[test]
fn a_queued_del_waits_for_a_plugin_that_lands_late() {
    let late = LatePlugin::new();
    late.land();
    let mut d = Daemon::start(vec![PluginEntry::new("late", late.path.clone())]);
    let conf = d.net_conf(
        "1.1.0",
        json!({ "plugin": "late", "podcidr": "10.244.0.0/29" }),
    );
    // A /29 holds five pods: with the pool full, a freed address is the only one to hand out.
    let pods: Vec<(Pod, Value)> = add_pods(&conf, 5);
    let (victim, result) = &pods[4];

    d.stop();
    assert_ok_empty(&victim.call("DEL", &with_prev(&conf, result)));
    assert_eq!(queued(&d.queue_dir()).len(), 1, "the DEL was not queued");
    std::fs::remove_file(&late.path).unwrap();

    // The start's replay has run by the time the socket answers; give the polls a few rounds.
    d.spawn();
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        (queued(&d.queue_dir()).len(), set_aside(&d.queue_dir())),
        (1, vec![]),
        "a DEL whose plugin is not loaded yet must stay queued: {}",
        d.log()
    );
    assert_eq!(victim.ns.addrs("eth0"), vec![address(result)]);
    assert!(d.node.has_link(&host_veth(result)));

    late.land();
    wait_for(
        "the queued DEL to be applied once its plugin landed",
        Duration::from_secs(20),
        || queued(&d.queue_dir()).is_empty(),
    );
    assert!(victim.ns.gone("eth0"));
    assert!(d.node.gone(&host_veth(result)));
    let leftovers: Vec<_> = std::fs::read_dir(d.queue_dir())
        .map(|e| e.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "queue dir not empty: {leftovers:?}");
    let newcomer = Pod::new();
    let got = address(&newcomer.call("ADD", &conf).ok().json());
    assert_eq!(got, address(result), "the DEL did not release the address");
}

/// A DEL that keeps failing shows in `wasmgate trace --stats` (how many wait, how long the
/// oldest has, its error), and is gone from there once it succeeds.
#[test]
fn a_stuck_del_shows_in_trace_stats_until_it_succeeds() {
    let late = LatePlugin::new();
    let d = Daemon::start(vec![PluginEntry::new("late", late.path.clone())]);
    // The shim queues a DEL when nobody answers at its socket (a daemon restarting, say).
    let conf = d.net_conf(
        "1.1.0",
        json!({ "plugin": "late", "socket": d.dir.join("restarting.sock") }),
    );
    let queued_at = Instant::now();
    assert_ok_empty(&cni("DEL", "c-stuck", "", "eth0", &conf));
    assert_eq!(queued(&d.queue_dir()).len(), 1);

    wait_for(
        "the stuck DEL to be tried twice",
        Duration::from_secs(10),
        || queue_stats(&d)["stuck"][0]["attempts"].as_u64() >= Some(2),
    );
    let q = queue_stats(&d);
    assert_eq!(
        (&q["queued"], &q["set_aside"]),
        (&json!(1), &json!(0)),
        "{q}"
    );
    let stuck = &q["stuck"][0];
    assert_eq!(
        (&stuck["container_id"], &stuck["ifname"], &stuck["network"]),
        (&json!("c-stuck"), &json!("eth0"), &json!("my-cni-demo")),
        "{q}"
    );
    let error = stuck["last_error"].as_str().unwrap();
    assert!(
        error.contains("late") && error.contains("not loaded"),
        "{q}"
    );
    assert_eq!(q["oldest_queued_ms"], stuck["queued_ms"], "{q}");

    let text = trace_stats(&d, false);
    let line = text
        .lines()
        .find(|l| l.starts_with("cni DEL queue:"))
        .unwrap_or_else(|| panic!("no queue line in {text}"));
    assert!(line.contains(" 1 waiting"), "{text}");
    let age = line
        .split("oldest queued ")
        .nth(1)
        .and_then(|rest| rest.split("s ago").next())
        .and_then(|secs| secs.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no age of the oldest in {line:?}"));
    assert!(
        age <= queued_at.elapsed().as_secs(),
        "oldest queued {age}s ago, but it is younger: {text}"
    );
    let entry = text
        .lines()
        .find(|l| l.contains("c-stuck/eth0"))
        .unwrap_or_else(|| panic!("no line for the stuck DEL in {text}"));
    assert!(entry.contains("not loaded"), "{text}");

    late.land();
    wait_for("the stuck DEL to succeed", Duration::from_secs(20), || {
        queue_stats(&d)["queued"] == 0
    });
    let q = queue_stats(&d);
    assert_eq!(q["stuck"], json!([]), "{q}");
    assert_eq!(q["oldest_queued_ms"], Value::Null, "{q}");
    let text = trace_stats(&d, false);
    assert!(text.contains("cni DEL queue: 0 waiting"), "{text}");
    assert!(!text.contains("c-stuck"), "{text}");
}

/// What can never succeed on this daemon is set aside and counted, and holds nothing up: a file
/// that is not a queued DEL, and a DEL for a plugin this daemon's config does not declare.
#[test]
fn what_can_never_succeed_is_set_aside_and_counted() {
    let d = daemon();
    let dead = d.dir.join("restarting.sock");
    let nosuch = d.net_conf("1.1.0", json!({ "plugin": "nosuch", "socket": dead }));
    assert_ok_empty(&cni("DEL", "c-nosuch", "", "eth0", &nosuch));
    std::fs::write(d.queue_dir().join("junk.json"), b"not a queued DEL\n").unwrap();
    let fine = d.net_conf("1.1.0", json!({ "socket": dead }));
    assert_ok_empty(&cni("DEL", "c-fine", "", "eth0", &fine));

    wait_for("the queue to settle", Duration::from_secs(10), || {
        let q = queue_stats(&d);
        q["queued"] == 0 && q["set_aside"] == 2
    });
    let mut aside = set_aside(&d.queue_dir());
    aside.sort();
    assert_eq!(
        aside,
        [
            format!("{}.failed", entry_name("c-nosuch", &nosuch)),
            "junk.json.bad".to_string()
        ]
    );
    assert!(
        d.log().contains("nosuch"),
        "the set-aside is not logged: {}",
        d.log()
    );
    let text = trace_stats(&d, false);
    assert!(text.contains("0 waiting, 2 set aside"), "{text}");
}

/// A DEL an older version set aside (`.failed`, for any error but 11) is put back and applied at
/// the next start, since this daemon's config declares its plugin.
#[test]
fn an_older_versions_failed_del_is_applied_at_start() {
    let mut d = daemon();
    let conf = d.net_conf("1.1.0", json!({}));
    let pods = add_pods(&conf, 1);
    let (victim, result) = &pods[0];
    d.stop();
    let del_conf = with_prev(&conf, result);
    assert_ok_empty(&victim.call("DEL", &del_conf));
    let name = entry_name(&victim.cid, &del_conf);
    let q = d.queue_dir();
    std::fs::rename(
        q.join(format!("{name}.json")),
        q.join(format!("{name}.failed")),
    )
    .unwrap();

    d.spawn();
    wait_for(
        "the old set-aside DEL to be applied",
        Duration::from_secs(10),
        || queued(&q).is_empty() && set_aside(&q).is_empty(),
    );
    assert!(victim.ns.gone("eth0"));
    assert!(d.node.gone(&host_veth(result)));
}
