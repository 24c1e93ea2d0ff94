//! Swapping a plugin's file under a running daemon: the file watch and the admin socket both swap
//! versions in while calls keep flowing, a broken file is refused with the old version still
//! serving, the new version answers the calls after the swap, and a call that started before the
//! swap finishes on the version it started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmgate_tests::{
    Daemon, Netns, PluginEntry, cni, plugin, sha256, unique, with_custom_section,
};

/// A directory of our own for the plugin file the daemon loads, so the swaps never touch the
/// artifacts under `plugins/`. Removed on drop.
struct PluginDir(PathBuf);

impl PluginDir {
    fn new(initial: &Path) -> Self {
        let dir = std::env::temp_dir().join(unique("wasmgate-swap-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = PluginDir(dir);
        d.install(&std::fs::read(initial).unwrap());
        d
    }

    fn path(&self) -> PathBuf {
        self.0.join("plugin.wasm")
    }

    /// Replaces the plugin file the way a deploy tool does: write a temp file, rename over.
    fn install(&self, bytes: &[u8]) {
        let tmp = self.0.join(".plugin.wasm.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

impl Drop for PluginDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generation(p: &Value) -> u64 {
    p["generation"].as_u64().expect("generation")
}

/// Polls `f` until it returns `Some`, panicking with `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(25));
    }
}

/// Waits until the daemon's watch has loaded a file with `sha`, newer than `after`.
fn wait_for_version(d: &Daemon, sha: &str, after: u64, what: &str) -> Value {
    wait_for(what, Duration::from_secs(20), || {
        let p = d.listed("bridge");
        (p["sha256"] == sha && generation(&p) > after).then_some(p)
    })
}

/// How many times the file watch (not the admin socket) has refused a new `bridge` file.
fn watch_refusals(d: &Daemon) -> usize {
    d.log()
        .lines()
        .filter(|l| {
            l.contains("daemon::watch")
                && l.contains("reload refused")
                && l.contains("plugin bridge")
        })
        .count()
}

/// Worker threads, each looping ADD then DEL in a netns of its own with a fresh container id per
/// iteration, until stopped. Dropping it (a failed assertion) stops and joins them too, so their
/// netns are deleted and nothing keeps calling a daemon that is going away.
struct Load {
    stop: Arc<AtomicBool>,
    /// Completed iterations, per worker.
    done: Arc<Vec<AtomicU64>>,
    workers: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(n: usize, conf: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let workers = (0..n)
            .map(|w| {
                let (stop, done, conf) = (stop.clone(), done.clone(), conf.to_string());
                thread::spawn(move || {
                    let pod = Netns::new("wgw");
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let cid = unique(&format!("w{w}c"));
                        let add = cni("ADD", &cid, &pod.path(), "eth0", &conf);
                        let ip = serde_json::from_str::<Value>(&add.stdout)
                            .ok()
                            .and_then(|v| v["ips"][0]["address"].as_str().map(String::from));
                        if add.exit != 0 || ip.is_none() {
                            failures.push(format!("worker {w} ADD {cid}: {add:?}"));
                        }
                        let del = cni("DEL", &cid, &pod.path(), "eth0", &conf);
                        if del.exit != 0 {
                            failures.push(format!("worker {w} DEL {cid}: {del:?}"));
                        }
                        if !pod.gone("eth0") {
                            failures
                                .push(format!("worker {w}: eth0 left in the pod after DEL {cid}"));
                        }
                        done[w].fetch_add(1, Ordering::Relaxed);
                    }
                    failures
                })
            })
            .collect();
        Load {
            stop,
            done,
            workers,
        }
    }

    /// Stops the workers and returns every failed call.
    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.workers
            .drain(..)
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|_| vec!["a worker panicked".to_string()])
            })
            .collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[test]
fn hot_swap_under_load_loses_no_call() {
    let original = std::fs::read(plugin("bridge-ipam")).unwrap();
    let files = PluginDir::new(&plugin("bridge-ipam"));
    let d = Daemon::start(vec![PluginEntry::new("bridge", files.path())]);
    let conf = d.net_conf("1.1.0", json!({}));
    let v1 = d.listed("bridge");
    assert_eq!(v1["sha256"], sha256(&original));

    let load = Load::start(4, &conf);
    let done = load.done.clone();
    let total = |done: &[AtomicU64]| done.iter().map(|n| n.load(Ordering::Relaxed)).sum::<u64>();
    // Every worker is under way before the first swap.
    wait_for("the workers' first calls", Duration::from_secs(20), || {
        done.iter()
            .all(|n| n.load(Ordering::Relaxed) > 0)
            .then_some(())
    });

    // (a) A new version through the file watch alone.
    let v2_bytes = with_custom_section(&original, "wasmgate-test-version", b"2");
    let v2_sha = sha256(&v2_bytes);
    assert_ne!(v2_sha, v1["sha256"]);
    files.install(&v2_bytes);
    let v2 = wait_for_version(&d, &v2_sha, generation(&v1), "the watch to load version 2");

    // (b) The same file again, on request.
    let before = total(&done);
    let reloaded = d
        .plugin_cmd(&["reload", "bridge"])
        .expect("admin reload of a good file");
    assert_eq!(reloaded[0]["sha256"], v2_sha.as_str());
    let v2b = d.listed("bridge");
    assert_eq!(v2b["sha256"], v2_sha.as_str());
    assert!(generation(&v2b) > generation(&v2), "{v2b} after {v2}");
    wait_for(
        "calls on the reloaded version",
        Duration::from_secs(20),
        || (total(&done) >= before + 4).then_some(()),
    );

    // (c) A broken file: refused by the watch and by the admin socket; version 2 keeps serving.
    let refused_before = watch_refusals(&d);
    files.install(b"\0asm this is not a component at all");
    wait_for(
        "the watch to refuse the broken file",
        Duration::from_secs(20),
        || (watch_refusals(&d) > refused_before).then_some(()),
    );
    let err = d
        .plugin_cmd(&["reload", "bridge"])
        .expect_err("admin reload of a broken file");
    assert!(
        err.contains("reload refused") && err.contains("bridge"),
        "unclear refusal: {err}"
    );
    let still = d.listed("bridge");
    assert_eq!(
        still["sha256"],
        v2_sha.as_str(),
        "a broken file replaced the serving version"
    );
    assert_eq!(generation(&still), generation(&v2b));
    let before = total(&done);
    wait_for(
        "calls while the file is broken",
        Duration::from_secs(20),
        || (total(&done) >= before + 4).then_some(()),
    );

    // (d) A good version again.
    files.install(&original);
    let v3 = wait_for_version(
        &d,
        v1["sha256"].as_str().unwrap(),
        generation(&still),
        "the restore",
    );
    let after_restore: Vec<u64> = done.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    wait_for(
        "every worker to finish calls on the restored version",
        Duration::from_secs(20),
        || {
            done.iter()
                .zip(&after_restore)
                .all(|(n, a)| n.load(Ordering::Relaxed) >= a + 2)
                .then_some(())
        },
    );

    let failures = load.stop();
    let iterations = total(&done);
    assert!(
        failures.is_empty(),
        "{} failed calls in {iterations} iterations:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        iterations >= 20,
        "only {iterations} ADD/DEL iterations completed"
    );
    for (w, n) in done.iter().enumerate() {
        let n = n.load(Ordering::Relaxed);
        assert!(n >= 5, "worker {w} completed only {n} iterations");
    }
    assert_eq!(d.listed("bridge")["sha256"], v3["sha256"]);
    let veths = d.node.ip(&["-o", "link", "show", "type", "veth"]);
    assert!(
        veths.trim().is_empty(),
        "host veths left after the run: {veths}"
    );
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn swapped_in_version_answers_the_next_call() {
    let bridge_ipam = std::fs::read(plugin("bridge-ipam")).unwrap();
    let misbehave = std::fs::read(plugin("misbehave")).unwrap();
    let files = PluginDir::new(&plugin("bridge-ipam"));
    // bridge-ipam ignores `mode`; misbehave reads it and echoes the config it got.
    let d = Daemon::start(vec![
        PluginEntry::new("bridge", files.path()).extra("config = { mode = \"echo\" }"),
    ]);
    let pod = Netns::new("wgp");
    let conf = d.net_conf("1.1.0", json!({"marker": "swapped"}));
    let add_del = || {
        let cid = unique("c");
        let add = cni("ADD", &cid, &pod.path(), "eth0", &conf);
        add.ok();
        let built = pod.addrs("eth0");
        cni("DEL", &cid, &pod.path(), "eth0", &conf).ok();
        assert!(pod.gone("eth0"));
        (add.json(), built)
    };

    let (out, built) = add_del();
    let ip = out["ips"][0]["address"]
        .as_str()
        .expect("bridge-ipam returns an ip");
    assert_eq!(built, [ip]);
    let first = generation(&d.listed("bridge"));

    files.install(&misbehave);
    let now = wait_for_version(&d, &sha256(&misbehave), first, "the swap to misbehave");
    let (out, built) = add_del();
    assert_eq!(
        out["ips"].as_array().map_or(0, |a| a.len()),
        0,
        "misbehave gives no ip: {out}"
    );
    assert!(built.is_empty(), "misbehave plans nothing: {built:?}");
    let echoed: Value =
        serde_json::from_str(out["dns"]["domain"].as_str().expect("echoed config")).unwrap();
    assert_eq!(echoed["marker"], "swapped", "{echoed}");

    files.install(&bridge_ipam);
    wait_for_version(&d, &sha256(&bridge_ipam), generation(&now), "the swap back");
    let (out, built) = add_del();
    let ip = out["ips"][0]["address"]
        .as_str()
        .expect("bridge-ipam answers again");
    assert!(ip.starts_with("10.240.0."), "{out}");
    assert_eq!(built, [ip]);
}

/// CPU time (user + system, in clock ticks) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn in_flight_call_finishes_on_the_old_version() {
    let misbehave = plugin("misbehave");
    let bridge_ipam = std::fs::read(plugin("bridge-ipam")).unwrap();
    let files = PluginDir::new(&misbehave);
    // The old version spins until its deadline; the new one answers at once.
    let d = Daemon::start(vec![
        PluginEntry::new("bridge", files.path())
            .extra("config = { mode = \"loop\" }")
            .extra("timeout_ms = 6000"),
    ]);
    let pid = d.pid().unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "wasmgate"
    );
    let pod = Netns::new("wgp");
    let conf = d.net_conf("1.1.0", json!({}));
    let first = generation(&d.listed("bridge"));

    let idle = cpu_ticks(pid);
    let started = Instant::now();
    let in_flight = {
        let (netns, conf) = (pod.path(), conf.clone());
        thread::spawn(move || cni("ADD", "inflight", &netns, "eth0", &conf))
    };
    // The idle daemon burns next to no CPU; a quarter second of it means the guest is spinning,
    // so the call holds its version already.
    wait_for(
        "the old version to start spinning",
        Duration::from_millis(3500),
        || (cpu_ticks(pid) >= idle + 25).then_some(()),
    );

    files.install(&bridge_ipam);
    wait_for_version(&d, &sha256(&bridge_ipam), first, "the swap during the call");
    assert!(
        !in_flight.is_finished(),
        "the in-flight call ended before the swap, after {:?}; nothing was shown",
        started.elapsed()
    );
    let cid = unique("c");
    let fresh = cni("ADD", &cid, &pod.path(), "eth0", &conf);
    let ip = fresh.ok().ip();
    assert!(
        ip.starts_with("10.240.0."),
        "the new version answers: {fresh:?}"
    );

    let old = in_flight.join().unwrap();
    assert_eq!(
        old.code(),
        11,
        "the in-flight call runs out its deadline on the old version: {old:?}"
    );
    assert!(old.msg().contains("deadline"), "{old:?}");
    assert!(pod.has_link("eth0"), "the fresh ADD built its attachment");
    cni("DEL", &cid, &pod.path(), "eth0", &conf).ok();
    assert!(pod.gone("eth0"));
}
