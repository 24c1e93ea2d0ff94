//! A network config list run as libcni runs one for a runtime (`AddNetworkList`,
//! `DelNetworkList`): each plugin's binary found in the bin dirs and exec'd with the call's
//! `CNI_*` variables, its own config on stdin. That config is the list's slice for it (already
//! carrying the list's `name` and `cniVersion`) with `prevResult` and, for the capabilities the
//! plugin declares, `runtimeConfig` injected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};
use wasmgate_cni::{CniResult, Command, ConfList};
use wasmgate_effects::{ExecOutput, ExecRequest, PluginExec};

use super::error::{NetError, PluginFailure};

/// One attachment's run of a list: what every plugin of it is called with.
pub struct Chain<'a> {
    pub exec: &'a dyn PluginExec,
    pub list: &'a ConfList,
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
    pub container_id: &'a str,
    /// Empty for a DEL whose namespace is gone.
    pub netns: &'a str,
    pub ifname: &'a str,
    pub cni_args: &'a str,
    pub capability_args: &'a Map<String, Value>,
}

impl Chain<'_> {
    /// ADD through the list in order, each plugin given the previous one's result as
    /// `prevResult`; the last result is the list's. Stops at the first failure.
    pub async fn add(&self) -> Result<Value, NetError> {
        // parse_conflist refuses a list without plugins, so the first always replaces this.
        let mut result = Value::Null;
        for i in 0..self.list.plugins.len() {
            let prev = (i > 0).then_some(&result);
            let out = self.run(i, Command::Add, prev).await?;
            result = serde_json::from_slice::<Value>(&out)
                .map_err(|e| e.to_string())
                .and_then(|v| CniResult::from_json(&v).map(|_| v).map_err(|e| e.msg))
                .map_err(|why| {
                    self.failed(i, Command::Add, None, format!("invalid result: {why}"))
                })?;
        }
        Ok(result)
    }

    /// DEL through the list in reverse order, each plugin given `cached` (the list's ADD result,
    /// when there was one) as `prevResult`. A failure `passable` accepts is logged and the next
    /// plugin runs; any other stops the DEL.
    pub async fn del(
        &self,
        cached: Option<&Value>,
        passable: impl Fn(&NetError) -> bool,
    ) -> Result<(), NetError> {
        for i in (0..self.list.plugins.len()).rev() {
            match self.run(i, Command::Del, cached).await {
                Ok(_) => {}
                Err(e) if passable(&e) => {
                    tracing::warn!(container = self.container_id, "passed over: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Runs plugin `i` for `command`; its stdout when it succeeded.
    async fn run(
        &self,
        i: usize,
        command: Command,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, NetError> {
        let slice = &self.list.plugins[i];
        let type_ = plugin_type(slice);
        let binary = find_plugin(type_, self.bin_dirs)?;
        let config = plugin_config(slice, prev, self.capability_args);
        let req = ExecRequest {
            binary,
            env: self.env(command),
            stdin: config.to_string().into_bytes(),
            timeout: self.timeout,
        };
        let out = self
            .exec
            .exec(&req)
            .await
            .map_err(|source| NetError::Exec {
                type_: type_.to_string(),
                network: self.list.name.clone(),
                command: verb(command),
                source,
            })?;
        if out.success() {
            return Ok(out.stdout);
        }
        Err(self.failed(i, command, Some(&out), String::new()))
    }

    /// The `CNI_*` variables of a call, as libcni sets them (on top of the daemon's own
    /// environment, which the plugin inherits).
    fn env(&self, command: Command) -> Vec<(String, String)> {
        let path = std::env::join_paths(self.bin_dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        [
            ("CNI_COMMAND", command.as_str()),
            ("CNI_CONTAINERID", self.container_id),
            ("CNI_NETNS", self.netns),
            ("CNI_ARGS", self.cni_args),
            ("CNI_IFNAME", self.ifname),
            ("CNI_PATH", &path),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Plugin `i`'s failure, from its output (libcni's `pluginErr`) or `why`.
    fn failed(
        &self,
        i: usize,
        command: Command,
        out: Option<&ExecOutput>,
        why: String,
    ) -> NetError {
        NetError::Plugin {
            type_: plugin_type(&self.list.plugins[i]).to_string(),
            network: self.list.name.clone(),
            command: verb(command),
            failure: Box::new(out.map_or(
                PluginFailure {
                    code: None,
                    msg: why,
                    details: String::new(),
                },
                failure,
            )),
        }
    }
}

/// libcni's word for a command in its errors.
fn verb(command: Command) -> &'static str {
    match command {
        Command::Add => "add",
        Command::Del => "delete",
        Command::Check => "check",
        other => other.as_str(),
    }
}

fn plugin_type(slice: &Value) -> &str {
    // parse_conflist has checked that every plugin has a non-empty string type.
    slice["type"].as_str().unwrap_or_default()
}

/// The config one plugin gets on stdin: its slice, with `prevResult` when there is one, and a
/// `runtimeConfig` of the capability arguments it declares (libcni's `buildOneConfig` and
/// `injectRuntimeConfig`; a declared capability the runtime has no argument for is left out,
/// and a plugin that declares none keeps its slice's own `runtimeConfig`).
pub fn plugin_config(slice: &Value, prev: Option<&Value>, caps: &Map<String, Value>) -> Value {
    let mut conf = slice.clone();
    let Some(obj) = conf.as_object_mut() else {
        return conf;
    };
    let declared: Map<String, Value> = obj
        .get("capabilities")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, on)| on.as_bool() == Some(true))
        .filter_map(|(cap, _)| caps.get(cap).map(|arg| (cap.clone(), arg.clone())))
        .collect();
    if !declared.is_empty() {
        obj.insert("runtimeConfig".into(), Value::Object(declared));
    }
    if let Some(prev) = prev {
        obj.insert("prevResult".into(), prev.clone());
    }
    conf
}

/// libcni's `FindInPath`: the first regular file named `type_` in `dirs`.
pub fn find_plugin(type_: &str, dirs: &[PathBuf]) -> Result<PathBuf, NetError> {
    let not_found = || NetError::PluginNotFound {
        type_: type_.to_string(),
        dirs: dirs.to_vec(),
    };
    // A type is a file name, never a path into or out of the bin dirs.
    if type_.is_empty() || type_.contains('/') || type_ == "." || type_ == ".." {
        return Err(not_found());
    }
    dirs.iter()
        .map(|d| d.join(type_))
        .find(|p| Path::new(p).metadata().is_ok_and(|m| m.is_file()))
        .ok_or_else(not_found)
}

/// What a plugin that exited non-zero said: its CNI error object, else libcni's reading of its
/// exit and stderr.
fn failure(out: &ExecOutput) -> PluginFailure {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let exit = match out.code {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    };
    let plain = |msg: String| PluginFailure {
        code: None,
        msg,
        details: String::new(),
    };
    if stdout.trim().is_empty() {
        return plain(match stderr.trim() {
            "" => format!("netplugin failed with no error message: {exit}"),
            e => format!("netplugin failed: {e:?}"),
        });
    }
    match serde_json::from_str::<Value>(stdout.trim()) {
        Ok(v) if v.get("code").is_some_and(Value::is_u64) => PluginFailure {
            code: v["code"].as_u64(),
            msg: v["msg"].as_str().unwrap_or_default().to_string(),
            details: v["details"].as_str().unwrap_or_default().to_string(),
        },
        _ => plain(format!(
            "netplugin failed ({exit}) but its diagnostic message is not a CNI error: {:?}",
            stdout.trim()
        )),
    }
}
