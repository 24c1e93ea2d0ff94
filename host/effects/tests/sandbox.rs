//! Integration tests of [`LinuxNetns`] and [`ProcessExec`] against the real kernel: pinned
//! network namespaces and plugin processes, as the builtin CRI runtime uses them.
//!
//! Needs root (CAP_SYS_ADMIN for the bind mounts) and iproute2 and util-linux's `nsenter` to
//! look inside a namespace. Each test pins its namespaces in its own temp directory and removes
//! it, so nothing shows up in `ip netns list`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmgate_effects::{
    EffectError, ExecRequest, LinuxNetns, NetnsEffects, PluginExec, ProcessExec,
};

/// A temp directory unique to this process and tag, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("wgfx-sandbox-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ip -j link show` inside the namespace pinned at `path`.
fn links_in(path: &Path) -> serde_json::Value {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "-j", "link", "show"])
        .output()
        .expect("run nsenter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn own_netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn a_pinned_namespace_outlives_its_thread_has_lo_up_and_goes_on_remove() {
    let dir = TempDir::new("pin");
    let path = dir.0.join("sub").join("pod1");
    let fx = LinuxNetns::new();
    let before = own_netns();
    fx.create(&path).unwrap();
    assert_eq!(
        own_netns(),
        before,
        "the caller's namespace must not change"
    );
    assert!(fx.is_pinned(&path));

    // A fresh namespace: only lo, and it is up.
    let links = links_in(&path);
    let names: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lo"], "{links}");
    let flags = links[0]["flags"].to_string();
    assert!(flags.contains("\"UP\""), "{flags}");

    // Never taken over: a second create of the same path fails and leaves the first alone.
    let err = fx.create(&path).unwrap_err().to_string();
    assert!(
        err.contains("create netns file") && err.contains("pod1"),
        "{err}"
    );
    assert!(fx.is_pinned(&path));

    fx.remove(&path).unwrap();
    assert!(!path.exists());
    assert!(!fx.is_pinned(&path));
    fx.remove(&path).unwrap();

    // A file that is there but pins nothing (unmounted behind our back) is not a namespace.
    std::fs::write(&path, b"").unwrap();
    assert!(!fx.is_pinned(&path));
    fx.remove(&path).unwrap();
    assert!(!path.exists());
}

#[test]
fn namespaces_are_distinct() {
    let dir = TempDir::new("two");
    let fx = LinuxNetns::new();
    let (a, b) = (dir.0.join("a"), dir.0.join("b"));
    fx.create(&a).unwrap();
    fx.create(&b).unwrap();
    let ino = |p: &Path| {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", p.display()))
            .args(["readlink", "/proc/self/ns/net"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_ne!(ino(&a), ino(&b));
    assert_ne!(ino(&a), own_netns());
    fx.remove(&a).unwrap();
    fx.remove(&b).unwrap();
}

/// A request running `body` as a shell script (written to a file, so that stdin stays the
/// plugin's config); the file is removed on drop.
struct Script(ExecRequest);

impl Script {
    fn new(tag: &str, body: &str, env: &[(&str, &str)], stdin: &[u8], timeout: Duration) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let file =
            std::env::temp_dir().join(format!("wgfx-sandbox-{}-{tag}.sh", std::process::id()));
        std::fs::write(&file, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        Script(ExecRequest {
            binary: file,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            stdin: stdin.to_vec(),
            timeout,
        })
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0.binary);
    }
}

#[tokio::test]
async fn a_plugin_gets_its_env_and_stdin_and_its_output_and_code_come_back() {
    let req = Script::new(
        "io",
        "echo \"cmd=$CNI_COMMAND path=$PATH_SET\"; cat; echo oops >&2; exit 3",
        &[("CNI_COMMAND", "ADD"), ("PATH_SET", "yes")],
        br#"{"cniVersion":"1.1.0"}"#,
        Duration::from_secs(10),
    );
    let out = ProcessExec::new().exec(&req.0).await.unwrap();
    assert_eq!(out.code, Some(3));
    assert!(!out.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cmd=ADD path=yes\n{\"cniVersion\":\"1.1.0\"}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
}

#[tokio::test]
async fn big_output_and_an_unread_stdin_do_not_deadlock() {
    // 1 MiB out before reading anything, and 1 MiB in that is never read.
    let req = Script::new(
        "big",
        "head -c 1048576 /dev/zero; exit 0",
        &[],
        &vec![b'x'; 1 << 20],
        Duration::from_secs(20),
    );
    let out = ProcessExec::new().exec(&req.0).await.unwrap();
    assert!(out.success());
    assert_eq!(out.stdout.len(), 1 << 20);
}

#[tokio::test]
async fn a_plugin_past_its_deadline_is_killed() {
    let dir = TempDir::new("hang");
    let marker = dir.0.join("still-running");
    let req = Script::new(
        "hang",
        &format!("sleep 0.6; touch {}", marker.display()),
        &[],
        b"",
        Duration::from_millis(200),
    );
    let started = Instant::now();
    let err = ProcessExec::new().exec(&req.0).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(550),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, EffectError::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains("timed out after 200ms"), "{err}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!marker.exists(), "the timed-out plugin kept running");
}

#[tokio::test]
async fn a_missing_binary_is_an_error_naming_it() {
    let req = ExecRequest {
        binary: "/nonexistent/wasmgate-no-such-plugin".into(),
        env: vec![],
        stdin: vec![],
        timeout: Duration::from_secs(1),
    };
    let err = ProcessExec::new().exec(&req).await.unwrap_err().to_string();
    assert!(
        err.contains("exec") && err.contains("wasmgate-no-such-plugin"),
        "{err}"
    );
}
