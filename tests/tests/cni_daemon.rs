//! The daemon as an operator meets it: private sockets, and a machine that refuses the pooling
//! allocator its address space.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Barrier};

use serde_json::json;
use wasmgate_tests::{Daemon, Netns, PluginEntry, cni, plugin, unique};

#[test]
fn sockets_and_state_are_private() {
    let d = Daemon::start(vec![PluginEntry::new("bridge", plugin("bridge-ipam"))]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.cni_socket()), 0o660, "cni socket");
    assert_eq!(mode(&d.admin_socket()), 0o600, "admin socket");
    assert_eq!(mode(&d.dir.join("state")), 0o700, "state dir");
    assert_eq!(std::fs::metadata(d.cni_socket()).unwrap().uid(), 0);
}

#[test]
fn pooling_refused_falls_back_and_still_serves() {
    // 6 GiB of address space: plenty for the daemon, far too little for the pool's slots.
    let d = Daemon::start_wrapped(
        vec![PluginEntry::new("bridge", plugin("bridge-ipam"))],
        "",
        &["prlimit", "--as=6442450944", "--"],
    );
    assert!(
        d.log().contains("pooling allocator unavailable"),
        "{}",
        d.log()
    );
    let conf = d.net_conf("1.1.0", json!({}));
    // Concurrent calls too: each on-demand memory must stay small under the limit.
    const N: usize = 16;
    let pods: Vec<Netns> = (0..N).map(|_| Netns::new("wgp")).collect();
    let barrier = Arc::new(Barrier::new(N));
    let outs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|pod| {
                let (barrier, conf) = (barrier.clone(), conf.clone());
                s.spawn(move || {
                    barrier.wait();
                    cni("ADD", &unique("c"), &pod.path(), "eth0", &conf)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (pod, out) in pods.iter().zip(&outs) {
        out.ok();
        assert!(pod.addrs("eth0").contains(&format!("{}/24", out.ip())));
    }
}

#[test]
fn every_call_is_traced_once() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let d = Daemon::start(vec![PluginEntry::new("bridge", plugin("bridge-ipam"))]);
    let mut follower = Command::new(wasmgate_tests::bin("wasmgate"))
        .args(["trace", "--json", "--admin"])
        .arg(d.admin_socket())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Read on a thread, so a missing line fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a trace line within 10 s");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next(), json!({"kind": "subscribed"}));

    let pod = Netns::new("wgp");
    let conf = d.net_conf("1.1.0", json!({}));
    cni("ADD", "traced", &pod.path(), "eth0", &conf).ok();
    let again = cni("ADD", "traced", &pod.path(), "eth0", &conf);
    assert_eq!(again.code(), 102);

    let sha = d.plugin_cmd(&["list"]).unwrap()[0]["sha256"].clone();
    let first = next();
    assert_eq!(first["kind"], "call");
    assert_eq!(
        (&first["interface"], &first["method"], &first["ok"]),
        (&json!("cni"), &json!("ADD"), &json!(true))
    );
    assert_eq!(first["plugin"], "bridge");
    assert_eq!(first["plugin_sha256"], sha);
    assert_eq!(first["network"], "my-cni-demo");
    assert_eq!(first["container_id"], "traced");
    assert!(first["elapsed_us"].as_u64().unwrap() > 0);
    let second = next();
    assert_eq!(
        (&second["ok"], &second["code"]),
        (&json!(false), &json!(102))
    );
    assert!(
        second["msg"].as_str().unwrap().contains("already exists"),
        "{second}"
    );
    let _ = follower.kill();
    let _ = follower.wait();

    let stats = Command::new(wasmgate_tests::bin("wasmgate"))
        .args(["trace", "--stats", "--json", "--admin"])
        .arg(d.admin_socket())
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["cni.ADD"]["ok"], 1, "{stats}");
    assert_eq!(stats["cni.ADD"]["errors"], 1, "{stats}");
}

#[test]
fn a_plugin_deployed_after_the_daemon_loads_when_it_lands() {
    // The daemon starts before its plugin file exists (deploy order is not ours to choose). Calls
    // for it fail with 50 naming the plugin and why; once the file lands, it serves.
    let dir = std::env::temp_dir().join(unique("wg-late-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("late.wasm");
    let d = Daemon::start(vec![
        PluginEntry::new("bridge", plugin("bridge-ipam")),
        PluginEntry::new("late", path.clone()),
    ]);
    assert!(
        d.log().contains("not loaded, serving without it"),
        "{}",
        d.log()
    );
    let pod = Netns::new("wgp");
    let conf = d.net_conf("1.1.0", json!({"plugin": "late"}));
    let out = cni("ADD", "c-late", &pod.path(), "eth0", &conf);
    assert_eq!(out.code(), 50, "{out:?}");
    assert!(
        out.msg().contains("late") && out.msg().contains("not loaded"),
        "{out:?}"
    );
    // The other plugin serves meanwhile.
    let other = Netns::new("wgp");
    cni(
        "ADD",
        "c-other",
        &other.path(),
        "eth0",
        &d.net_conf("1.1.0", json!({})),
    )
    .ok();

    let tmp = dir.join(".late.wasm.tmp");
    std::fs::copy(plugin("bridge-ipam"), &tmp).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wasmgate_tests::eventually("the late plugin loads after its file lands", || {
        d.plugin_cmd(&["list"])
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "late")
    });
    let out = cni("ADD", "c-late", &pod.path(), "eth0", &conf);
    assert!(out.ok().ip().starts_with("10.240.0."), "{out:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
