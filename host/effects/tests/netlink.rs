//! Integration tests of [`Netlink`] against the real kernel.
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2. Nothing touches the machine's own
//! network namespace: each test creates a "node" netns and makes its calls from a thread that has
//! entered it, so the node netns plays the host. Pods are further namespaces. Every namespace has
//! a name unique to this process and is deleted by a drop guard. `ip` is used to observe, and to
//! break things on purpose where a test needs it.

use std::fs::File;
use std::process::Command;
use std::thread;

use nix::sched::{CloneFlags, setns};
use wasmgate_cni::plan::{Attachment, Bridge, Route, Target, Veth};
use wasmgate_effects::{EffectError, NetPolicy, Netlink, NetworkEffects, validate};

/// A network namespace made with `ip netns add`, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("wgfx-{}-{tag}", std::process::id());
        // A leftover from a crashed run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["netns", "add", &name]);
        Netns { name }
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    fn target(&self) -> Target {
        Target {
            netns: self.path(),
            ifname: "eth0".into(),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `f` on a thread that has entered the netns at `path`.
fn in_netns<T: Send>(path: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            let ns = File::open(path).expect("open node netns");
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("enter node netns");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Output of `ip args...`, which must succeed.
fn run(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeds(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .expect("run ip")
        .status
        .success()
}

/// A /24 in 10.99.0.0/16 (or 10.98.0.0/16) of our own, by pid.
fn subnet_octet() -> u32 {
    std::process::id() % 250 + 1
}

fn route(dst: &str, gw: Option<&str>) -> Route {
    Route {
        dst: dst.into(),
        gw: gw.map(Into::into),
        ..Route::default()
    }
}

/// Pod `host` on bridge wgbr0, dual-stack: 10.99.x.host/24 and fd99:x::host/64, default routes
/// through the bridge's addresses.
fn bridged_plan(host_name: &str, host: u32) -> Attachment {
    let x = subnet_octet();
    Attachment {
        veth: Veth {
            host_name: host_name.into(),
            mtu: Some(1400),
            host_addresses: vec![],
        },
        bridge: Some(Bridge {
            name: "wgbr0".into(),
            addresses: vec![format!("10.99.{x}.1/24"), format!("fd99:{x:x}::1/64")],
            mtu: None,
        }),
        container_addresses: vec![
            format!("10.99.{x}.{host}/24"),
            format!("fd99:{x:x}::{host:x}/64"),
        ],
        container_routes: vec![
            route("0.0.0.0/0", Some(&format!("10.99.{x}.1"))),
            route("::/0", Some(&format!("fd99:{x:x}::1"))),
        ],
        host_routes: vec![],
    }
}

fn policy() -> NetPolicy {
    NetPolicy {
        allowed_bridges: vec!["wgbr0".into()],
        host_prefix: Some("wg".into()),
        pod_cidrs: vec![
            "10.98.0.0/15".parse().unwrap(),
            "fd99::/16".parse().unwrap(),
        ],
    }
}

#[test]
fn bridged_pods_reach_each_other() {
    let node = Netns::new("a-node");
    let (pa, pb) = (Netns::new("a-pa"), Netns::new("a-pb"));
    let x = subnet_octet();
    let (plan_a, plan_b) = (bridged_plan("wga", 2), bridged_plan("wgb", 3));
    validate(&pa.target(), &plan_a, &policy()).unwrap();
    validate(&pb.target(), &plan_b, &policy()).unwrap();

    let (applied_a, applied_b) = in_netns(&node.path(), || {
        let a = Netlink.apply(&pa.target(), &plan_a).unwrap();
        let b = Netlink.apply(&pb.target(), &plan_b).unwrap();
        (a, b)
    });

    let addr = run(&["-n", &pa.name, "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet 10.99.{x}.2/24")), "{addr}");
    let default = run(&["-n", &pa.name, "route", "show", "default"]);
    assert!(
        default.contains(&format!("via 10.99.{x}.1 dev eth0")),
        "{default}"
    );
    let default6 = run(&["-n", &pa.name, "-6", "route", "show", "default"]);
    assert!(
        default6.contains(&format!("via fd99:{x:x}::1 dev eth0")),
        "{default6}"
    );
    let link = run(&["-n", &pa.name, "link", "show", "eth0"]);
    assert!(
        link.contains("mtu 1400") && link.contains("state UP"),
        "{link}"
    );
    assert!(
        link.contains(&applied_a.container_mac),
        "{link} lacks {}",
        applied_a.container_mac
    );
    assert!(run(&["-n", &pa.name, "link", "show", "lo"]).contains("UP"));

    let host = run(&["-n", &node.name, "link", "show", "wga"]);
    assert!(
        host.contains("master wgbr0") && host.contains(&applied_a.host_mac),
        "{host}"
    );
    let bridge = run(&["-n", &node.name, "-o", "addr", "show", "dev", "wgbr0"]);
    assert!(bridge.contains(&format!("inet 10.99.{x}.1/24")), "{bridge}");

    let pb_ip = format!("10.99.{x}.3");
    let ping = Command::new("ip")
        .args(["netns", "exec", &pa.name, "ping", "-c1", "-W2", &pb_ip])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping {pb_ip}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    in_netns(&node.path(), || {
        Netlink.verify(&pa.target(), &plan_a).unwrap();
        Netlink
            .remove(&pa.target(), &plan_a, Some(&applied_a))
            .unwrap();
        Netlink
            .remove(&pb.target(), &plan_b, Some(&applied_b))
            .unwrap();
    });
    // The bridge is shared: it stays.
    assert!(succeeds(&["-n", &node.name, "link", "show", "wgbr0"]));
}

#[test]
fn verify_names_what_is_missing() {
    let node = Netns::new("b-node");
    let pod = Netns::new("b-pod");
    let plan = bridged_plan("wgv", 2);
    let x = subnet_octet();
    in_netns(&node.path(), || {
        Netlink.apply(&pod.target(), &plan).unwrap()
    });

    in_netns(&node.path(), || {
        Netlink.verify(&pod.target(), &plan).unwrap()
    });

    run(&["-n", &pod.name, "route", "del", "default"]);
    let err = in_netns(&node.path(), || {
        Netlink.verify(&pod.target(), &plan).unwrap_err()
    });
    assert!(matches!(err, EffectError::Missing(_)), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("route 0.0.0.0/0 via 10.99.{x}.1")),
        "{err}"
    );

    run(&["-n", &pod.name, "link", "del", "eth0"]);
    let err = in_netns(&node.path(), || {
        Netlink.verify(&pod.target(), &plan).unwrap_err()
    });
    assert!(matches!(err, EffectError::Missing(_)), "{err}");
    assert!(
        err.to_string().contains("interface \"eth0\" not found"),
        "{err}"
    );
}

#[test]
fn remove_is_idempotent() {
    let node = Netns::new("c-node");
    let pod = Netns::new("c-pod");
    let plan = bridged_plan("wgc", 2);
    in_netns(&node.path(), || {
        let built = Netlink.apply(&pod.target(), &plan).unwrap();
        assert!(
            built.host_ifindex != 0 && built.container_ifindex != 0,
            "{built:?}"
        );
        Netlink.remove(&pod.target(), &plan, Some(&built)).unwrap();
        Netlink.remove(&pod.target(), &plan, Some(&built)).unwrap();
    });
    assert!(!succeeds(&["-n", &node.name, "link", "show", "wgc"]));
    assert!(!succeeds(&["-n", &pod.name, "link", "show", "eth0"]));

    // The netns is gone before the DEL; and a record from before `built` was kept.
    let gone = Netns::new("c-gone");
    let target = gone.target();
    in_netns(&node.path(), || Netlink.apply(&target, &plan).unwrap());
    drop(gone);
    in_netns(&node.path(), || {
        Netlink.remove(&target, &plan, None).unwrap();
        Netlink.remove(&target, &plan, None).unwrap();
        let unknown = Target {
            netns: String::new(),
            ifname: "eth0".into(),
        };
        Netlink.remove(&unknown, &plan, None).unwrap();
    });
    assert!(!succeeds(&["-n", &node.name, "link", "show", "wgc"]));
}

#[test]
fn remove_deletes_only_the_veth_recorded_at_add() {
    let node = Netns::new("c2-node");
    let pod = Netns::new("c2-pod");
    let plan = bridged_plan("wgc2", 2);

    // The host end is gone (deleted by hand, which took the pod end with it), and the pod's
    // netns now has a bridge with the recorded ifname: nothing the host built is left, so
    // nothing is deleted.
    let built = in_netns(&node.path(), || {
        Netlink.apply(&pod.target(), &plan).unwrap()
    });
    assert!(succeeds(&["-n", &node.name, "link", "del", "wgc2"]));
    assert!(succeeds(&[
        "-n", &pod.name, "link", "add", "eth0", "type", "bridge"
    ]));
    in_netns(&node.path(), || {
        Netlink.remove(&pod.target(), &plan, Some(&built)).unwrap();
        Netlink.remove(&pod.target(), &plan, None).unwrap();
        Netlink.detach(&pod.target(), &plan, Some(&built)).unwrap();
    });
    assert!(succeeds(&[
        "-n", &pod.name, "link", "show", "eth0", "type", "bridge"
    ]));
    assert!(succeeds(&["-n", &pod.name, "link", "del", "eth0"]));

    // A veth of the same name that is not the one recorded (built again since): left alone.
    let again = in_netns(&node.path(), || {
        Netlink.apply(&pod.target(), &plan).unwrap()
    });
    assert_ne!(again, built);
    in_netns(&node.path(), || {
        Netlink.remove(&pod.target(), &plan, Some(&built)).unwrap();
        Netlink.detach(&pod.target(), &plan, Some(&built)).unwrap();
    });
    let link = run(&["-n", &node.name, "-j", "link", "show", "wgc2"]);
    assert!(
        link.contains("\"UP\""),
        "detach of a stale record must not touch it: {link}"
    );
    assert!(succeeds(&["-n", &pod.name, "link", "show", "eth0"]));

    // Renamed since ADD: found by its recorded ifindex, MAC and peer.
    assert!(succeeds(&[
        "-n", &node.name, "link", "set", "wgc2", "name", "wgc2x"
    ]));
    in_netns(&node.path(), || {
        Netlink.remove(&pod.target(), &plan, Some(&again)).unwrap()
    });
    assert!(!succeeds(&["-n", &node.name, "link", "show", "wgc2x"]));
    assert!(!succeeds(&["-n", &pod.name, "link", "show", "eth0"]));
}

#[test]
fn taken_names_are_refused_and_nothing_is_left() {
    let node = Netns::new("d-node");
    let (pa, pb) = (Netns::new("d-pa"), Netns::new("d-pb"));
    let plan = bridged_plan("wgd0", 2);
    in_netns(&node.path(), || Netlink.apply(&pa.target(), &plan).unwrap());

    // Same host name for another pod: never take over the existing interface.
    let err = in_netns(&node.path(), || {
        Netlink.apply(&pb.target(), &plan).unwrap_err()
    });
    assert!(
        matches!(&err, EffectError::HostInterfaceExists(n) if n == "wgd0"),
        "{err}"
    );
    let pb_links = run(&["-n", &pb.name, "-o", "link", "show"]);
    assert_eq!(pb_links.lines().count(), 1, "only lo expected: {pb_links}");
    assert!(run(&["-n", &node.name, "link", "show", "wgd0"]).contains("master wgbr0"));
    in_netns(&node.path(), || {
        Netlink.verify(&pa.target(), &plan).unwrap()
    });

    // Same ifname in a netns that already has it.
    let other_host = bridged_plan("wgd1", 3);
    let err = in_netns(&node.path(), || {
        Netlink.apply(&pa.target(), &other_host).unwrap_err()
    });
    assert!(
        matches!(&err, EffectError::ContainerInterfaceExists(n) if n == "eth0"),
        "{err}"
    );
    assert!(!succeeds(&["-n", &node.name, "link", "show", "wgd1"]));
    in_netns(&node.path(), || {
        Netlink.verify(&pa.target(), &plan).unwrap()
    });

    // A failure after the veth exists (a route whose gateway is unreachable) undoes it.
    let mut broken = bridged_plan("wgd2", 4);
    broken.container_routes = vec![route("0.0.0.0/0", Some("192.0.2.1"))];
    let err = in_netns(&node.path(), || {
        Netlink.apply(&pb.target(), &broken).unwrap_err()
    });
    assert!(
        matches!(&err, EffectError::Netlink(m) if m.contains("0.0.0.0/0 via 192.0.2.1")),
        "{err}"
    );
    assert!(!succeeds(&["-n", &node.name, "link", "show", "wgd2"]));
    assert!(!succeeds(&["-n", &pb.name, "link", "show", "eth0"]));
}

#[test]
fn point_to_point_plan() {
    let node = Netns::new("e-node");
    let pod = Netns::new("e-pod");
    let x = subnet_octet();
    let (gw, ip) = (format!("10.98.{x}.1"), format!("10.98.{x}.5"));
    // As Debian's ptp plugin does: a /32 on each side, a link route to the gateway first,
    // then the default route through it.
    let plan = Attachment {
        veth: Veth {
            host_name: "wgp0".into(),
            mtu: None,
            host_addresses: vec![format!("{gw}/32")],
        },
        bridge: None,
        container_addresses: vec![format!("{ip}/32")],
        container_routes: vec![
            route(&format!("{gw}/32"), None),
            route("0.0.0.0/0", Some(&gw)),
        ],
        host_routes: vec![route(&format!("{ip}/32"), None)],
    };
    validate(
        &pod.target(),
        &plan,
        &NetPolicy {
            allowed_bridges: vec![],
            host_prefix: Some("wg".into()),
            pod_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        },
    )
    .unwrap();

    let built = in_netns(&node.path(), || {
        let built = Netlink.apply(&pod.target(), &plan).unwrap();
        Netlink.verify(&pod.target(), &plan).unwrap();
        built
    });
    let host_routes = run(&["-n", &node.name, "route", "show", "dev", "wgp0"]);
    assert!(
        host_routes.starts_with(&format!("{ip} ")) && host_routes.contains("scope link"),
        "{host_routes}"
    );

    for (ns, to) in [(&node.name, &ip), (&pod.name, &gw)] {
        let ping = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-c1", "-W2", to])
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "ping {to} from {ns}: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }

    in_netns(&node.path(), || {
        Netlink.remove(&pod.target(), &plan, Some(&built)).unwrap()
    });
    assert!(!succeeds(&["-n", &node.name, "link", "show", "wgp0"]));
    assert!(!succeeds(&["-n", &pod.name, "link", "show", "eth0"]));
}

#[test]
fn works_from_spawn_blocking() {
    // The daemon's way of calling: from tokio's blocking pool, while a runtime is running. The
    // blocking thread enters the node netns itself; the runtime and its threads end with the test.
    let node = Netns::new("f-node");
    let pod = Netns::new("f-pod");
    let (path, target, plan) = (node.path(), pod.target(), bridged_plan("wgf", 2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            setns(File::open(path).unwrap(), CloneFlags::CLONE_NEWNET).unwrap();
            let built = Netlink.apply(&target, &plan).unwrap();
            Netlink.verify(&target, &plan).unwrap();
            Netlink.remove(&target, &plan, Some(&built)).unwrap();
        })
        .await
        .unwrap()
    });
    rt.shutdown_background();
    assert!(!succeeds(&["-n", &node.name, "link", "show", "wgf"]));
}

#[test]
fn detach_cuts_the_pod_off_without_destroying_anything() {
    let node = Netns::new("g-node");
    let a = Netns::new("g-pa");
    let b = Netns::new("g-pb");
    let octet = subnet_octet();
    let (pa, pb) = (bridged_plan("wgda", 2), bridged_plan("wgdb", 3));
    let (built_a, built_b) = in_netns(&node.path(), || {
        (
            Netlink.apply(&a.target(), &pa).unwrap(),
            Netlink.apply(&b.target(), &pb).unwrap(),
        )
    });
    let b_ip = format!("10.99.{octet}.3");
    assert!(succeeds(&[
        "netns", "exec", &a.name, "ping", "-c1", "-W2", &b_ip
    ]));

    in_netns(&node.path(), || {
        Netlink.detach(&b.target(), &pb, Some(&built_b)).unwrap();
        Netlink.detach(&b.target(), &pb, Some(&built_b)).unwrap();
    });
    // Still there, but down and unreachable.
    let link = run(&["-n", &node.name, "-j", "link", "show", "wgdb"]);
    assert!(!link.contains("\"UP\""), "{link}");
    assert!(succeeds(&["-n", &b.name, "link", "show", "eth0"]));
    assert!(!succeeds(&[
        "netns", "exec", &a.name, "ping", "-c1", "-W1", &b_ip
    ]));

    in_netns(&node.path(), || {
        Netlink.remove(&b.target(), &pb, Some(&built_b)).unwrap();
        // Detaching what is gone is fine too.
        Netlink.detach(&b.target(), &pb, Some(&built_b)).unwrap();
        Netlink.remove(&a.target(), &pa, Some(&built_a)).unwrap();
    });
    assert!(!succeeds(&["-n", &b.name, "link", "show", "eth0"]));
}
