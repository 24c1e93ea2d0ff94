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
