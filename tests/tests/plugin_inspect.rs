//! `wasmgate plugin inspect FILE` on the example plugins and on misfits, and the daemon refusing
//! a misfit with the same message, at start and on reload, while its other plugins serve.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmgate_tests::{Daemon, Netns, PluginEntry, bin, cni, plugin, unique};

fn inspect(file: &Path, json: bool) -> Output {
    let mut cmd = Command::new(bin("wasmgate"));
    cmd.args(["plugin", "inspect"]).arg(file);
    if json {
        cmd.arg("--json");
    }
    cmd.env("RUST_BACKTRACE", "0").output().unwrap()
}

fn report(file: &Path) -> (bool, Value) {
    let out = inspect(file, true);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect --json printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

fn fitting(report: &Value) -> Vec<String> {
    report["worlds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["fits"] == true)
        .map(|w| w["world"].as_str().unwrap().to_string())
        .collect()
}

/// The misfit messages for `world`, joined as the daemon joins them.
fn problems(report: &Value, world: &str) -> String {
    let w = report["worlds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["world"] == world)
        .unwrap();
    let list: Vec<&str> = w["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    list.join("; ")
}

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(contents.len(), out);
    out.extend_from_slice(contents);
}

/// `(component (import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func)))))`
/// in the binary format: a component that needs an interface this host does not provide.
fn http_component() -> Vec<u8> {
    let mut types = vec![0x01, 0x42, 0x02]; // one instance type of two declarations:
    types.extend([0x01, 0x40, 0x00, 0x01, 0x00]); // type 0: func()
    types.extend([0x04, 0x00, 0x06]); // export, plain name of 6 bytes…
    types.extend(b"handle");
    types.extend([0x01, 0x00]); // …a func of type 0
    let name = "wasi:http/outgoing-handler@0.2.0";
    let mut imports = vec![0x01, 0x00];
    leb(name.len(), &mut imports);
    imports.extend(name.as_bytes());
    imports.extend([0x05, 0x00]); // an instance of type 0
    let mut out = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    section(7, &types, &mut out);
    section(10, &imports, &mut out);
    out
}

/// A temp dir of our own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("wg-inspect-"));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn each_example_plugin_fits_its_own_world() {
    for (name, world, version) in [
        ("bridge-ipam", "network", "0.1.0"),
        ("hostpath-csi", "storage", "0.1.0"),
        ("hook-inject", "runtime", "0.3.0"),
        ("hook-policy", "runtime", "0.3.0"),
    ] {
        let (ok, report) = report(&plugin(name));
        assert!(ok, "{name}: {report}");
        assert_eq!(fitting(&report), [world], "{name}: {report}");
        assert_eq!(
            report["packages"],
            json!([format!("wasmgate:plugin@{version}")]),
            "{name}"
        );
        assert!(
            report["imports"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i.get("problem").is_none()),
            "{name}: {report}"
        );
    }
}

#[test]
fn the_report_reads_as_text() {
    let out = inspect(&plugin("bridge-ipam"), false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for want in [
        "package  wasmgate:plugin@0.1.0",
        "ok  wasi:keyvalue/store@0.2.0-draft",
        "wasmgate:plugin/network@0.1.0",
        "versions, add, del, check, status, gc",
        "does not export wasmgate:plugin/hook@0.1.0 (runtime-hook needs it)",
        "does not export wasmgate:plugin/identity@0.1.0 (storage-plugin needs it)",
        "fits: declare it with world = \"network\"",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let network = text
        .lines()
        .find(|l| l.contains("wasmgate:plugin/network-plugin@0.1.0"))
        .unwrap();
    assert!(network.trim_end().ends_with(" fits"), "{network}");
}

#[test]
fn a_misfit_is_named_and_exits_non_zero() {
    let dir = TempDir::new();
    let http = dir.file("http.wasm", &http_component());
    let out = inspect(&http, false);
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{text}");
    assert!(err.contains("fits no wasmgate world"), "{err}");
    assert!(
        text.contains("NO  wasi:http/outgoing-handler@0.2.0"),
        "{text}"
    );
    assert!(
        text.contains(
            "imports wasi:http/outgoing-handler@0.2.0, which is not standard WASI this host provides"
        ),
        "{text}"
    );
    // JSON too, with the same exit code.
    let (ok, http_report) = report(&http);
    assert!(!ok);
    assert!(fitting(&http_report).is_empty(), "{http_report}");
    assert_eq!(
        problems(&http_report, "runtime"),
        "imports wasi:http/outgoing-handler@0.2.0, which is not standard WASI this host provides; \
         does not export wasmgate:plugin/hook@0.1.0 (runtime-hook needs it)"
    );

    // A hook is no network plugin, and says so.
    let (_, hook) = report(&plugin("hook-inject"));
    assert_eq!(
        problems(&hook, "network"),
        "does not export wasmgate:plugin/network@0.1.0 (network-plugin needs it)"
    );

    // Not a component at all: an error, not a report.
    let junk = dir.file("junk.wasm", b"\0asm not really");
    let out = inspect(&junk, true);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a component this host can compile"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn eventually_logged(d: &Daemon, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log().contains(what) {
        assert!(
            Instant::now() < deadline,
            "daemon never logged {what:?}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_daemon_refuses_a_misfit_with_the_inspect_message_and_serves_the_rest() {
    let dir = TempDir::new();
    let bridge = dir.file(
        "bridge.wasm",
        &std::fs::read(plugin("bridge-ipam")).unwrap(),
    );
    let http = dir.file("http.wasm", &http_component());
    // A runtime hook declared as a network plugin (the default world).
    let hook = plugin("hook-inject");
    let want_hook = problems(&report(&hook).1, "network");
    let want_http = problems(&report(&http).1, "network");

    let d = Daemon::start(vec![
        PluginEntry::new("bridge", bridge.clone()),
        PluginEntry::new("hook", hook.clone()),
        PluginEntry::new("http", http),
    ]);
    // At start: refused with the very report messages, the daemon up regardless.
    for (name, want) in [("hook", &want_hook), ("http", &want_http)] {
        let line = format!(
            "plugin {name} does not fit the wasmgate:plugin/network-plugin@0.1.0 world: {want}"
        );
        assert!(d.log().contains(&line), "no {line:?} in:\n{}", d.log());
    }
    assert!(d.log().contains("not loaded, serving without it"));
    let listed: Vec<Value> = d.plugin_cmd(&["list"]).unwrap().as_array().unwrap().clone();
    let names: Vec<&str> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bridge"]);

    // A call for the misfit fails with code 50 and the reason; the other plugin serves.
    let pod = Netns::new("wgp");
    let out = cni(
        "ADD",
        "c-hook",
        &pod.path(),
        "eth0",
        &d.net_conf("1.1.0", json!({"plugin": "hook"})),
    );
    assert_eq!(out.code(), 50, "{out:?}");
    assert!(out.msg().contains(&want_hook), "{out:?}");
    eprintln!("the misfit's call: {}", out.msg());
    let conf = d.net_conf("1.1.0", json!({}));
    cni("ADD", "c-bridge", &pod.path(), "eth0", &conf).ok();

    // Hot reload: a misfit replacing the bridge file is refused, by the file watch and by the
    // admin socket, with the same message; the old version keeps serving.
    let before = d.listed("bridge");
    dir.file("bridge.wasm", &http_component());
    eventually_logged(
        &d,
        &format!(
            "reload refused, old version keeps serving: plugin bridge does not fit the \
             wasmgate:plugin/network-plugin@0.1.0 world: {want_http}"
        ),
    );
    let err = d
        .plugin_cmd(&["reload", "bridge"])
        .expect_err("reloading a misfit");
    assert!(
        err.contains("reload refused") && err.contains(&want_http),
        "{err}"
    );
    assert_eq!(d.listed("bridge")["sha256"], before["sha256"]);
    let other = Netns::new("wgp");
    cni("ADD", "c-bridge2", &other.path(), "eth0", &conf).ok();
    cni("DEL", "c-bridge2", &other.path(), "eth0", &conf).ok();
    cni("DEL", "c-bridge", &pod.path(), "eth0", &conf).ok();
}
