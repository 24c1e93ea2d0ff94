//! The network configuration a plugin reads on stdin, and conflist slicing.
//!
//! The shim parses the config before it contacts the daemon so that bad input gets its spec error
//! (6 for undecodable, 7 for invalid, 1 for a version we do not speak) even with the daemon down;
//! it also needs `socket`, `queueDir` and `connectTimeoutMs` to know where the daemon is. The
//! daemon parses the same bytes again rather than trusting the shim. Unknown keys are plugin
//! specific and pass through untouched in [`NetConf::raw`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::command::Command;
use crate::env::identifier_problem;
use crate::error::{CniError, code};
use crate::version::{self, at_least, check_supported};

pub const DEFAULT_SOCKET: &str = "/run/wasmgate/cni.sock";
pub const DEFAULT_QUEUE_DIR: &str = "/var/lib/wasmgate/cni-del-queue";
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5000;
/// How long the shim waits for the daemon's reply once connected: far above any plugin deadline,
/// so only a hung daemon reaches it, and below the runtime's own two-minute deadline, so the
/// shim (which can still queue a DEL) is the one that gives up.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 60_000;

/// Longer than any runtime waits for a plugin; it also keeps `Instant + timeout` from overflowing.
pub const MAX_CONNECT_TIMEOUT_MS: u64 = 3_600_000;

/// The GC key from spec 1.1.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The name an earlier draft used; libcni still sends both (containernetworking/cni#1101).
pub const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// One still-valid attachment in a GC call's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttachmentRef {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A single plugin's network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// Empty only for VERSION, where it may be absent.
    pub cni_version: String,
    pub name: String,
    pub type_: String,
    pub prev_result: Option<Value>,
    pub runtime_config: Option<Value>,
    pub args: Option<Value>,
    /// wasmgate: which Wasm plugin serves this network; the daemon decides when absent.
    pub plugin: Option<String>,
    /// wasmgate: the daemon's socket.
    pub socket: Option<String>,
    /// wasmgate: where the shim queues DELs while the daemon is down.
    pub queue_dir: Option<String>,
    /// wasmgate: how long the shim keeps trying to reach the daemon (a DEL is queued at once
    /// when the socket is absent or nobody listens on it).
    pub connect_timeout_ms: Option<u64>,
    pub call_timeout_ms: Option<u64>,
    /// GC only. `None` means the runtime sent no list, which is not the same as an empty list
    /// (every attachment is stale): callers must not collect anything on `None`.
    pub valid_attachments: Option<Vec<AttachmentRef>>,
    /// The whole config object as given, unknown keys included.
    pub raw: Value,
}

/// Parses and checks a single network config for `command`.
pub fn parse(stdin: &[u8], command: Command) -> Result<NetConf, CniError> {
    // VERSION may come with no config at all, e.g. from a human poking at the binary.
    if command == Command::Version && stdin.iter().all(u8::is_ascii_whitespace) {
        return Ok(empty(Value::Object(Map::new())));
    }
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("failed to decode network config: {e}"),
            "",
        )
    })?;
    let Some(obj) = raw.as_object() else {
        return Err(CniError::new(
            code::DECODE,
            "network config must be a JSON object",
            "",
        ));
    };

    let cni_version = opt_string(obj, "cniVersion")?;
    if command == Command::Version {
        let mut conf = empty(raw.clone());
        conf.cni_version = cni_version.unwrap_or_default();
        return Ok(conf);
    }
    let cni_version = required(cni_version, "cniVersion")?;
    check_supported(&cni_version)?;
    check_command_version(command, &cni_version)?;

    let name = required(opt_string(obj, "name")?, "name")?;
    if let Some(why) = identifier_problem(&name) {
        return Err(invalid_config(format!(
            "network name {name:?} is invalid: {why}"
        )));
    }
    let type_ = required(opt_string(obj, "type")?, "type")?;

    let prev_result = opt_object(obj, "prevResult")?;
    if command == Command::Check && prev_result.is_none() {
        return Err(invalid_config(
            "network config key \"prevResult\" is required for CHECK",
        ));
    }

    let plugin = opt_string(obj, "plugin")?;
    if plugin.as_deref() == Some("") {
        return Err(invalid_config(
            "network config key \"plugin\" must not be empty",
        ));
    }

    Ok(NetConf {
        cni_version,
        name,
        type_,
        prev_result,
        runtime_config: opt_object(obj, "runtimeConfig")?,
        args: opt_object(obj, "args")?,
        plugin,
        socket: opt_abs_path(obj, "socket")?,
        queue_dir: opt_abs_path(obj, "queueDir")?,
        connect_timeout_ms: opt_timeout(obj, "connectTimeoutMs")?,
        call_timeout_ms: opt_timeout(obj, "callTimeoutMs")?,
        valid_attachments: valid_attachments(obj)?,
        raw: raw.clone(),
    })
}

impl NetConf {
    pub fn socket_path(&self) -> PathBuf {
        PathBuf::from(self.socket.as_deref().unwrap_or(DEFAULT_SOCKET))
    }

    pub fn queue_dir(&self) -> PathBuf {
        PathBuf::from(self.queue_dir.as_deref().unwrap_or(DEFAULT_QUEUE_DIR))
    }

    /// Never zero: a zero read timeout means "wait forever" to the socket layer.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(
            self.call_timeout_ms
                .unwrap_or(DEFAULT_CALL_TIMEOUT_MS)
                .max(1),
        )
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(
            self.connect_timeout_ms
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        )
    }
}

fn empty(raw: Value) -> NetConf {
    NetConf {
        cni_version: String::new(),
        name: String::new(),
        type_: String::new(),
        prev_result: None,
        runtime_config: None,
        args: None,
        plugin: None,
        socket: None,
        queue_dir: None,
        connect_timeout_ms: None,
        call_timeout_ms: None,
        valid_attachments: None,
        raw,
    }
}

fn check_command_version(command: Command, v: &str) -> Result<(), CniError> {
    let min = command.min_version();
    if at_least(v, min) {
        return Ok(());
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!("{command} requires cniVersion {min} or later, got {v:?}"),
        "",
    ))
}

/// A network config list, already sliced into the per-plugin configs the runtime would send.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    /// The version chosen for the whole list.
    pub cni_version: String,
    pub name: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Each plugin object with `cniVersion` and `name` injected, in list order.
    pub plugins: Vec<Value>,
}

/// Parses a conflist (spec §"Network configuration lists").
///
/// With 1.1's `cniVersions`, the highest version we also support wins, as the spec asks of a
/// runtime; otherwise `cniVersion` must be supported.
pub fn parse_conflist(list_json: &[u8]) -> Result<ConfList, CniError> {
    let raw: Value = serde_json::from_slice(list_json).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("failed to decode network config list: {e}"),
            "",
        )
    })?;
    let Some(obj) = raw.as_object() else {
        return Err(CniError::new(
            code::DECODE,
            "network config list must be a JSON object",
            "",
        ));
    };

    let cni_version = choose_list_version(obj)?;
    let name = required(opt_string(obj, "name")?, "name")?;
    if let Some(why) = identifier_problem(&name) {
        return Err(invalid_config(format!(
            "network name {name:?} is invalid: {why}"
        )));
    }
    let disable_check = opt_bool(obj, "disableCheck")?;
    let disable_gc = opt_bool(obj, "disableGC")?;

    let plugins = match obj.get("plugins") {
        None | Some(Value::Null) => return Err(missing_key("plugins")),
        Some(Value::Array(p)) if p.is_empty() => {
            return Err(invalid_config(
                "network config list key \"plugins\" must not be empty",
            ));
        }
        Some(Value::Array(p)) => p,
        Some(_) => {
            return Err(invalid_config(
                "network config list key \"plugins\" must be an array",
            ));
        }
    };
    let mut out = Vec::with_capacity(plugins.len());
    for (i, plugin) in plugins.iter().enumerate() {
        let Some(p) = plugin.as_object() else {
            return Err(invalid_config(format!(
                "conflist plugin {i} must be a JSON object"
            )));
        };
        match p.get("type") {
            Some(Value::String(t)) if !t.is_empty() => {}
            _ => {
                return Err(invalid_config(format!(
                    "conflist plugin {i} needs a non-empty string key \"type\""
                )));
            }
        }
        let mut p = p.clone();
        p.insert("cniVersion".into(), Value::String(cni_version.clone()));
        p.insert("name".into(), Value::String(name.clone()));
        out.push(Value::Object(p));
    }
    Ok(ConfList {
        cni_version,
        name,
        disable_check,
        disable_gc,
        plugins: out,
    })
}

/// The per-plugin configs of a conflist, with `cniVersion` and `name` injected (spec §3).
pub fn conflist_slices(list_json: &[u8]) -> Result<Vec<Value>, CniError> {
    parse_conflist(list_json).map(|l| l.plugins)
}

fn choose_list_version(obj: &Map<String, Value>) -> Result<String, CniError> {
    let declared = opt_string(obj, "cniVersion")?;
    let listed: Vec<String> = match obj.get("cniVersions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(vs)) => vs
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                invalid_config("network config key \"cniVersions\" must be a list of strings")
            })?,
        Some(_) => {
            return Err(invalid_config(
                "network config key \"cniVersions\" must be a list of strings",
            ));
        }
    };
    let best = listed
        .iter()
        .filter(|v| version::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .fold(None::<&String>, |best, v| match best {
            Some(b) if at_least(b, v) => Some(b),
            _ => Some(v),
        });
    if let Some(v) = best {
        return Ok(v.clone());
    }
    match declared {
        Some(v) if !v.is_empty() => check_supported(&v).map(|()| v),
        _ if !listed.is_empty() => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "none of cniVersions {listed:?} is supported: supported versions are {}",
                version::SUPPORTED_VERSIONS.join(", ")
            ),
            "",
        )),
        Some(_) => Err(empty_key("cniVersion")),
        None => Err(missing_key("cniVersion")),
    }
}

/// `null` counts as absent throughout: serialisers in other languages emit it for unset fields.
fn opt_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid_config(format!(
            "network config key {key:?} must be a string"
        ))),
    }
}

fn opt_object(obj: &Map<String, Value>, key: &str) -> Result<Option<Value>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
        Some(_) => Err(invalid_config(format!(
            "network config key {key:?} must be a JSON object"
        ))),
    }
}

/// libcni accepts `"true"`/`"false"` strings for the list flags, so we do too.
fn opt_bool(obj: &Map<String, Value>, key: &str) -> Result<bool, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(invalid_config(format!(
            "network config list key {key:?} must be a boolean"
        ))),
    }
}

/// A relative path would resolve against whatever directory the runtime happened to run us in.
fn opt_abs_path(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    let Some(p) = opt_string(obj, key)? else {
        return Ok(None);
    };
    if !Path::new(&p).is_absolute() || p.contains('\0') {
        return Err(invalid_config(format!(
            "network config key {key:?} must be an absolute path, got {p:?}"
        )));
    }
    Ok(Some(p))
}

fn opt_timeout(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(ms) if ms <= MAX_CONNECT_TIMEOUT_MS => Ok(Some(ms)),
            _ => Err(invalid_config(format!(
                "network config key {key:?} must be an integer from 0 to {MAX_CONNECT_TIMEOUT_MS}"
            ))),
        },
    }
}

fn valid_attachments(obj: &Map<String, Value>) -> Result<Option<Vec<AttachmentRef>>, CniError> {
    let (key, v) = match (
        obj.get(VALID_ATTACHMENTS_KEY),
        obj.get(LEGACY_ATTACHMENTS_KEY),
    ) {
        (Some(v), _) if !v.is_null() => (VALID_ATTACHMENTS_KEY, v),
        (_, Some(v)) if !v.is_null() => (LEGACY_ATTACHMENTS_KEY, v),
        _ => return Ok(None),
    };
    Vec::<AttachmentRef>::deserialize(v)
        .map(Some)
        .map_err(|e| invalid_config(format!("network config key {key:?} is invalid: {e}")))
}

fn required(v: Option<String>, key: &str) -> Result<String, CniError> {
    match v {
        None => Err(missing_key(key)),
        Some(s) if s.is_empty() => Err(empty_key(key)),
        Some(s) => Ok(s),
    }
}

fn missing_key(key: &str) -> CniError {
    invalid_config(format!("network config is missing required key {key:?}"))
}

fn empty_key(key: &str) -> CniError {
    invalid_config(format!("network config key {key:?} must not be empty"))
}

fn invalid_config(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value, command: Command) -> Result<NetConf, CniError> {
        parse(v.to_string().as_bytes(), command)
    }

    fn base() -> Value {
        json!({"cniVersion": "1.1.0", "name": "podnet", "type": "wasmgate-cni"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = base();
        v[key] = value;
        v
    }

    fn without(key: &str) -> Value {
        let mut v = base();
        v.as_object_mut().unwrap().remove(key);
        v
    }

    fn err(v: Value, command: Command) -> CniError {
        parse_json(v, command).unwrap_err()
    }

    #[test]
    fn parses_a_full_config() {
        let v = json!({
            "cniVersion": "1.0.0",
            "name": "pod.net_1-a",
            "type": "wasmgate-cni",
            "plugin": "bridge",
            "socket": "/tmp/x.sock",
            "queueDir": "/tmp/q",
            "connectTimeoutMs": 250,
            "prevResult": {"cniVersion": "1.0.0", "ips": []},
            "runtimeConfig": {"portMappings": []},
            "args": {"cni": {"labels": []}},
            "bridge": "cni0",
            "ipam": {"type": "host-local"}
        });
        let c = parse_json(v.clone(), Command::Add).unwrap();
        assert_eq!(c.cni_version, "1.0.0");
        assert_eq!(c.name, "pod.net_1-a");
        assert_eq!(c.type_, "wasmgate-cni");
        assert_eq!(c.plugin.as_deref(), Some("bridge"));
        assert_eq!(c.socket_path(), PathBuf::from("/tmp/x.sock"));
        assert_eq!(c.queue_dir(), PathBuf::from("/tmp/q"));
        assert_eq!(c.connect_timeout(), Duration::from_millis(250));
        assert_eq!(
            c.prev_result,
            Some(json!({"cniVersion": "1.0.0", "ips": []}))
        );
        assert_eq!(c.runtime_config, Some(json!({"portMappings": []})));
        assert_eq!(c.args, Some(json!({"cni": {"labels": []}})));
        assert_eq!(c.valid_attachments, None);
        assert_eq!(c.raw, v, "unknown keys pass through");
    }

    #[test]
    fn defaults() {
        let c = parse_json(base(), Command::Add).unwrap();
        assert_eq!(c.socket_path(), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.queue_dir(), PathBuf::from(DEFAULT_QUEUE_DIR));
        assert_eq!(
            c.connect_timeout(),
            Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS)
        );
        assert_eq!(
            (c.plugin, c.prev_result, c.runtime_config, c.args),
            (None, None, None, None)
        );
        let c = parse_json(with("socket", Value::Null), Command::Add).unwrap();
        assert_eq!(c.socket, None);
    }

    #[test]
    fn decode_failures_are_code_6() {
        for input in [
            &b"{not json"[..],
            b"",
            b"[1,2]",
            b"\"x\"",
            b"\xff\xfe",
            b"{} trailing",
        ] {
            let e = parse(input, Command::Add).unwrap_err();
            assert_eq!(e.code, code::DECODE, "{input:?}");
        }
        let e = parse(b"{nope", Command::Add).unwrap_err();
        assert!(
            e.msg
                .starts_with("failed to decode network config: key must be a string"),
            "{}",
            e.msg
        );
        let e = parse(b"[]", Command::Del).unwrap_err();
        assert_eq!(e.msg, "network config must be a JSON object");
    }

    #[test]
    fn missing_and_empty_required_keys_are_code_7() {
        for key in ["cniVersion", "name", "type"] {
            let e = err(without(key), Command::Add);
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert_eq!(
                e.msg,
                format!("network config is missing required key {key:?}")
            );
            let e = err(with(key, json!("")), Command::Del);
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert_eq!(
                e.msg,
                format!("network config key {key:?} must not be empty")
            );
            let e = err(with(key, json!(5)), Command::Add);
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert_eq!(
                e.msg,
                format!("network config key {key:?} must be a string")
            );
        }
    }

    #[test]
    fn bad_network_names_are_code_7() {
        for name in ["-net", "a b", "a/b", ".net", "né"] {
            let e = err(with("name", json!(name)), Command::Add);
            assert_eq!(e.code, code::INVALID_CONFIG, "{name}");
            assert!(
                e.msg
                    .starts_with(&format!("network name {name:?} is invalid: ")),
                "{}",
                e.msg
            );
        }
    }

    #[test]
    fn unsupported_version_is_code_1() {
        let e = err(with("cniVersion", json!("9.9.9")), Command::Add);
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("\"9.9.9\""), "{}", e.msg);
    }

    #[test]
    fn commands_need_new_enough_versions() {
        let prev = json!({"cniVersion": "0.3.1"});
        let mut v = with("cniVersion", json!("0.3.1"));
        v["prevResult"] = prev;
        let e = err(v.clone(), Command::Check);
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert_eq!(
            e.msg,
            "CHECK requires cniVersion 0.4.0 or later, got \"0.3.1\""
        );
        v["cniVersion"] = json!("0.4.0");
        assert!(parse_json(v, Command::Check).is_ok());
        for cmd in [Command::Status, Command::Gc] {
            let e = err(with("cniVersion", json!("1.0.0")), cmd);
            assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
            assert_eq!(
                e.msg,
                format!("{cmd} requires cniVersion 1.1.0 or later, got \"1.0.0\"")
            );
            assert!(parse_json(base(), cmd).is_ok());
        }
    }

    #[test]
    fn check_needs_prev_result() {
        let e = err(base(), Command::Check);
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert_eq!(
            e.msg,
            "network config key \"prevResult\" is required for CHECK"
        );
    }

    #[test]
    fn version_needs_only_cni_version() {
        for input in [&b""[..], b"  \n", b"{}"] {
            let c = parse(input, Command::Version).unwrap();
            assert_eq!(c.cni_version, "");
        }
        let c = parse(br#"{"cniVersion":"0.4.0"}"#, Command::Version).unwrap();
        assert_eq!(c.cni_version, "0.4.0");
        let c = parse(br#"{"cniVersion":"7.0.0"}"#, Command::Version).unwrap();
        assert_eq!(c.cni_version, "7.0.0", "VERSION answers whatever is asked");
        assert_eq!(
            parse(b"{", Command::Version).unwrap_err().code,
            code::DECODE
        );
        assert_eq!(
            parse(br#"{"cniVersion":1}"#, Command::Version)
                .unwrap_err()
                .code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn dictionaries_must_be_objects() {
        for key in ["prevResult", "runtimeConfig", "args"] {
            let e = err(with(key, json!([])), Command::Add);
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert_eq!(
                e.msg,
                format!("network config key {key:?} must be a JSON object")
            );
        }
    }

    #[test]
    fn wasmgate_keys_are_checked() {
        let e = err(with("plugin", json!("")), Command::Add);
        assert_eq!(
            (e.code, e.msg.as_str()),
            (7, "network config key \"plugin\" must not be empty")
        );
        let e = err(with("plugin", json!(1)), Command::Add);
        assert_eq!(e.msg, "network config key \"plugin\" must be a string");
        for key in ["socket", "queueDir"] {
            let e = err(with(key, json!("rel/path")), Command::Add);
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert_eq!(
                e.msg,
                format!("network config key {key:?} must be an absolute path, got \"rel/path\"")
            );
        }
        for bad in [
            json!(-1),
            json!(1.5),
            json!("100"),
            json!(MAX_CONNECT_TIMEOUT_MS + 1),
        ] {
            let e = err(with("connectTimeoutMs", bad), Command::Add);
            assert_eq!(e.code, code::INVALID_CONFIG);
            assert!(e.msg.contains("\"connectTimeoutMs\""), "{}", e.msg);
        }
        let c = parse_json(with("connectTimeoutMs", json!(0)), Command::Add).unwrap();
        assert_eq!(c.connect_timeout(), Duration::ZERO);
    }

    #[test]
    fn gc_valid_attachments() {
        let list = json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]);
        let c = parse_json(with(VALID_ATTACHMENTS_KEY, list.clone()), Command::Gc).unwrap();
        let want = vec![
            AttachmentRef {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            AttachmentRef {
                container_id: "c2".into(),
                ifname: "net1".into(),
            },
        ];
        assert_eq!(c.valid_attachments.as_ref(), Some(&want));
        let c = parse_json(with(LEGACY_ATTACHMENTS_KEY, list), Command::Gc).unwrap();
        assert_eq!(c.valid_attachments, Some(want));
        let c = parse_json(with(VALID_ATTACHMENTS_KEY, json!([])), Command::Gc).unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
        let e = err(
            with(VALID_ATTACHMENTS_KEY, json!([{"ifname": "eth0"}])),
            Command::Gc,
        );
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(
            e.msg
                .starts_with("network config key \"cni.dev/valid-attachments\" is invalid: "),
            "{}",
            e.msg
        );
        assert_eq!(
            serde_json::to_value(AttachmentRef {
                container_id: "a".into(),
                ifname: "b".into()
            })
            .unwrap(),
            json!({"containerID": "a", "ifname": "b"})
        );
    }

    #[test]
    fn conflist_slices_inject_name_and_version() {
        let list = json!({
            "cniVersion": "1.0.0",
            "name": "podnet",
            "disableCheck": true,
            "plugins": [
                {"type": "wasmgate-cni", "plugin": "bridge", "name": "ignored"},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        let slices = conflist_slices(list.to_string().as_bytes()).unwrap();
        assert_eq!(
            slices,
            vec![
                json!({"type": "wasmgate-cni", "plugin": "bridge", "name": "podnet", "cniVersion": "1.0.0"}),
                json!({"type": "portmap", "capabilities": {"portMappings": true}, "name": "podnet", "cniVersion": "1.0.0"}),
            ]
        );
        let l = parse_conflist(list.to_string().as_bytes()).unwrap();
        assert!(l.disable_check && !l.disable_gc);
        assert!(parse_json(slices[0].clone(), Command::Add).is_ok());
    }

    #[test]
    fn conflist_picks_highest_common_version() {
        let list = json!({
            "cniVersion": "0.4.0",
            "cniVersions": ["0.3.1", "1.1.0", "2.0.0", "1.0.0"],
            "name": "n", "disableGC": "true",
            "plugins": [{"type": "x"}]
        });
        let l = parse_conflist(list.to_string().as_bytes()).unwrap();
        assert_eq!(l.cni_version, "1.1.0");
        assert!(l.disable_gc);
        let list = json!({"cniVersion": "0.4.0", "cniVersions": ["2.0.0"], "name": "n", "plugins": [{"type": "x"}]});
        assert_eq!(
            parse_conflist(list.to_string().as_bytes())
                .unwrap()
                .cni_version,
            "0.4.0"
        );
        let list = json!({"cniVersions": ["2.0.0"], "name": "n", "plugins": [{"type": "x"}]});
        let e = parse_conflist(list.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("2.0.0"), "{}", e.msg);
    }

    #[test]
    fn conflist_errors() {
        let cases: Vec<(&[u8], u32, &str)> = vec![
            (
                b"nope",
                code::DECODE,
                "failed to decode network config list",
            ),
            (
                b"[]",
                code::DECODE,
                "network config list must be a JSON object",
            ),
            (
                br#"{"name":"n","plugins":[{"type":"x"}]}"#,
                7,
                "network config is missing required key \"cniVersion\"",
            ),
            (
                br#"{"cniVersion":"","name":"n","plugins":[{"type":"x"}]}"#,
                7,
                "network config key \"cniVersion\" must not be empty",
            ),
            (
                br#"{"cniVersion":"9.9.9","name":"n","plugins":[{"type":"x"}]}"#,
                1,
                "unsupported CNI version \"9.9.9\"",
            ),
            (
                br#"{"cniVersion":"1.0.0","cniVersions":"1.0.0","name":"n","plugins":[]}"#,
                7,
                "\"cniVersions\" must be a list of strings",
            ),
            (
                br#"{"cniVersion":"1.0.0","cniVersions":[1],"name":"n","plugins":[]}"#,
                7,
                "\"cniVersions\" must be a list of strings",
            ),
            (
                br#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
                7,
                "network config is missing required key \"name\"",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"x"}]}"#,
                7,
                "network name \"a b\" is invalid",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n"}"#,
                7,
                "network config is missing required key \"plugins\"",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                7,
                "\"plugins\" must not be empty",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":{}}"#,
                7,
                "\"plugins\" must be an array",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[1]}"#,
                7,
                "conflist plugin 0 must be a JSON object",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"x"},{}]}"#,
                7,
                "conflist plugin 1 needs a non-empty string key \"type\"",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":""}]}"#,
                7,
                "conflist plugin 0 needs",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","disableCheck":1,"plugins":[{"type":"x"}]}"#,
                7,
                "\"disableCheck\" must be a boolean",
            ),
        ];
        for (input, c, msg) in cases {
            let e = parse_conflist(input).unwrap_err();
            assert_eq!(e.code, c, "{}", String::from_utf8_lossy(input));
            assert!(e.msg.contains(msg), "{} does not contain {msg}", e.msg);
        }
    }
}
