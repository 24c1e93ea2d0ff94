//! The node's CNI config, read as containerd reads it: libcni's `ConfFiles` (the files of the
//! conf dir ending in `.conf`, `.conflist` or `.json`), sorted by name, and the first one loaded
//! (containerd's `max_conf_num = 1`). A broken first file is an error, not skipped. A
//! single-plugin `.conf` or `.json` becomes a list of one, as libcni's `ConfListFromConf` makes it.
//!
//! The directory is read on every RunPodSandbox, so a changed config applies to the next pod;
//! a pod's DEL runs the config its ADD ran, kept in its record, as libcni's cache keeps it.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wasmgate_cni::ConfList;
use wasmgate_cni::conf::parse_conflist;

use super::error::NetError;
use crate::config::{CniSection, DEFAULT_CONFLIST};

/// The extensions libcni's `ConfFiles` is asked for by containerd.
pub const EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];
/// The default network's name and pod CIDR.
pub const DEFAULT_NETWORK: &str = "wasmgate";
pub const DEFAULT_PODCIDR: &str = "10.241.0.0/24";

/// A network config list as a pod's ADD runs it.
#[derive(Debug, Clone)]
pub struct NetConfig {
    pub file: PathBuf,
    /// The list as JSON, a `.conf` already wrapped in one; kept for the pod's DEL.
    pub raw: Value,
    pub list: ConfList,
}

/// The first config of `dir`.
pub fn load(dir: &Path) -> Result<NetConfig, NetError> {
    let file = files(dir)?
        .into_iter()
        .next()
        .ok_or_else(|| NetError::NoConfig {
            dir: dir.to_path_buf(),
        })?;
    let bytes = std::fs::read(&file).map_err(|source| NetError::ConfigIo {
        op: "read network config",
        path: file.clone(),
        source,
    })?;
    let invalid = |msg: String| NetError::InvalidConfig {
        file: file.clone(),
        msg,
    };
    let mut raw: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if file.extension() != Some(OsStr::new("conflist")) {
        raw = list_of_one(raw).map_err(invalid)?;
    }
    parsed(file.clone(), raw)
}

/// A list kept in a pod's record, parsed again for its DEL.
pub fn parsed(file: PathBuf, raw: Value) -> Result<NetConfig, NetError> {
    let list = parse_conflist(raw.to_string().as_bytes()).map_err(|e| NetError::InvalidConfig {
        file: file.clone(),
        msg: e.msg,
    })?;
    Ok(NetConfig { file, raw, list })
}

/// libcni's `ConfListFromConf`: the list takes the config's name and version, and the config
/// itself is its one plugin.
fn list_of_one(conf: Value) -> Result<Value, String> {
    match conf.get("type") {
        Some(Value::String(t)) if !t.is_empty() => {}
        // Also what a conflist saved as .conf looks like.
        _ => return Err("network type not found".into()),
    }
    Ok(json!({
        "cniVersion": conf.get("cniVersion").cloned().unwrap_or(Value::Null),
        "name": conf.get("name").cloned().unwrap_or(Value::Null),
        "plugins": [conf],
    }))
}

/// The config files of `dir`, sorted by name; none when the directory does not exist.
fn files(dir: &Path) -> Result<Vec<PathBuf>, NetError> {
    let listing = |source| NetError::ConfigIo {
        op: "list conf dir",
        path: dir.to_path_buf(),
        source,
    };
    files_in(dir).map_err(listing)
}

fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let ext = path.extension().and_then(OsStr::to_str);
        if ext.is_some_and(|e| EXTENSIONS.contains(&e)) && !entry.file_type()?.is_dir() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// wasmgate's default network: the `[cni]` default plugin through the `wasmgate-cni` shim, on
/// the daemon's own CNI socket.
pub fn default_conflist(cni: &CniSection) -> Value {
    json!({
        "cniVersion": wasmgate_cni::version::LATEST,
        "name": DEFAULT_NETWORK,
        "plugins": [{
            "type": "wasmgate-cni",
            "plugin": cni.default_plugin,
            "podcidr": DEFAULT_PODCIDR,
            "socket": cni.socket,
            "queueDir": cni.queue_dir,
        }],
    })
}

/// Writes the default network into `dir` when it holds no config; returns the file written.
pub fn write_default(dir: &Path, cni: &CniSection) -> Result<Option<PathBuf>, NetError> {
    if !files(dir)?.is_empty() {
        return Ok(None);
    }
    let file = dir.join(DEFAULT_CONFLIST);
    let body = serde_json::to_vec_pretty(&default_conflist(cni)).unwrap_or_default();
    wasmgate_engine::engine::write_atomic(&file, &body).map_err(|source| NetError::ConfigIo {
        op: "write default network config",
        path: file.clone(),
        source,
    })?;
    Ok(Some(file))
}
