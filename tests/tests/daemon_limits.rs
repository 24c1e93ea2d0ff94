//! The daemon's own edges, tried as a hostile local client or a careless operator would (issue
//! 14, items 12-14): descriptors run out, a client that connects and says nothing, invented
//! gRPC methods, a cache dir others can write, a config that names paths it must not.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use wasmgate_tests::h2raw::RawH2;
use wasmgate_tests::{Daemon, bin, unique};

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn accept_waits_out_a_descriptor_shortage_instead_of_spinning() {
    let d = Daemon::start_node(true, &[]);
    let pid = d.pid().unwrap();
    // Leave the daemon a handful of descriptors, then fill them with idle admin clients; the
    // rest wait in the backlog, and every accept fails with EMFILE until one goes away.
    let limit = open_fds(pid) + 4;
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let clients: Vec<_> = (0..32)
        .map(|_| std::os::unix::net::UnixStream::connect(d.admin_socket()).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(3));
    let used = (cpu_ticks(pid) - c0) as f64 / 100.0;
    let wall = t0.elapsed().as_secs_f64();
    // A loop that retries at once burns whatever CPU it gets for the whole wait; one that backs
    // off to a retry a second uses next to none.
    assert!(
        used < 0.3,
        "the daemon used {used:.2} s of CPU in {wall:.1} s while out of descriptors"
    );
    assert!(d.log().contains("accept failed"), "{}", d.log());
    // When descriptors come back, so does service: the idle clients are dropped by the read
    // timeout at the latest, and the admin socket answers again.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if wasmgate_daemon::admin::stats(&d.admin_socket()).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "admin never answered again: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_admin_client_that_sends_nothing_is_dropped() {
    let d = Daemon::start_node(false, &[]);
    let mut idle = std::os::unix::net::UnixStream::connect(d.admin_socket()).unwrap();
    let wait = wasmgate_daemon::admin::READ_TIMEOUT + Duration::from_secs(10);
    idle.set_read_timeout(Some(wait)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    // Old daemons kept the connection, and its task, for ever: the read timed out here.
    let n = idle.read(&mut buf).expect("the daemon should hang up");
    assert_eq!(n, 0);
    assert!(started.elapsed() >= wasmgate_daemon::admin::READ_TIMEOUT - Duration::from_secs(1));
    assert!(
        d.log().contains("admin client sent no request"),
        "{}",
        d.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invented_methods_count_under_one_label() {
    let d = Daemon::start_node(true, &[]);
    let mut c = RawH2::connect(&d.cri_socket()).await;
    for i in 0..200 {
        let path = format!("/runtime.v1.RuntimeService/Invented{i}");
        c.call(&path, b"localhost", &[], &[]).await;
    }
    let stats = wasmgate_daemon::admin::stats(&d.admin_socket()).unwrap();
    let invented: Vec<_> = stats.keys().filter(|k| k.contains("Invented")).collect();
    assert!(
        invented.is_empty(),
        "one counter per invented path: {invented:?}"
    );
    let unknown = &stats["cri.unknown"];
    assert_eq!(unknown.ok + unknown.errors, 200, "{stats:?}");
}

/// Runs `wasmgate serve` on `toml` (with `{d}` for a fresh temp dir) and returns its exit and
/// output: it must refuse to start.
fn refused_config(toml: &str) -> String {
    let dir = std::env::temp_dir().join(unique("wasmgate-refused-"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("wasmgate.toml");
    std::fs::write(&config, toml.replace("{d}", &dir.display().to_string())).unwrap();
    let out = Command::new(bin("wasmgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the daemon started on {toml}");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
    text
}

fn csi_node(extra: &str, plugin_extra: &str) -> String {
    format!(
        "state_dir = \"{{d}}/state\"\n{extra}[admin]\nsocket = \"{{d}}/admin.sock\"\n\
         [csi]\nplugin = \"hostpath\"\nsocket = \"{{d}}/csi.sock\"\nregistration = false\n\
         [plugins.hostpath]\nworld = \"storage\"\npath = \"{}\"\n{plugin_extra}\n",
        wasmgate_tests::plugin("hostpath-csi").display()
    )
}

#[test]
fn a_cache_dir_others_could_write_is_refused_before_anything_loads() {
    let dir = std::env::temp_dir().join(unique("wasmgate-opencache-"));
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    // What another user would plant: it must never be mapped as code.
    std::fs::write(cache.join("planted.cwasm"), b"\x7fELF").unwrap();
    let out = refused_config(&csi_node(
        &format!("[engine]\ncache_dir = \"{}\"\n", cache.display()),
        "",
    ));
    assert!(
        out.contains("as a cache of native code") && out.contains("writable by group or others"),
        "{out}"
    );
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&cache, Some(1000), None).unwrap();
    let out = refused_config(&csi_node(
        &format!("[engine]\ncache_dir = \"{}\"\n", cache.display()),
        "",
    ));
    assert!(out.contains("is owned by uid 1000"), "{out}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_config_that_would_hand_a_plugin_the_hosts_files_is_refused() {
    // The plugin's sandbox could rewrite the host's records.
    let out = refused_config(&csi_node("", "data_dir = \"{d}/state\""));
    assert!(out.contains("overlaps state_dir"), "{out}");
    // Names become path components.
    let out =
        refused_config(&csi_node("", "").replace("[csi]\n", "[csi]\ndriver = \"../../etc\"\n"));
    assert!(out.contains("domain-name notation"), "{out}");
    let out = refused_config(
        &csi_node("", "")
            .replace("plugin = \"hostpath\"", "plugin = \"..\"")
            .replace("[plugins.hostpath]", "[plugins.\"..\"]"),
    );
    assert!(out.contains("must be 1 to 63 of [a-z0-9-]"), "{out}");
    // No permit would ever be handed out.
    let out = refused_config(&csi_node("[engine]\nmax_instances = 0\n", ""));
    assert!(out.contains("engine.max_instances = 0 is outside"), "{out}");
}
