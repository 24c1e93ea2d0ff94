//! Why a pod's network could not be set up or torn down, and the gRPC status that becomes.

use std::fmt;
use std::io;
use std::path::PathBuf;

use tonic::Status;
use wasmgate_effects::EffectError;

use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The conf dir holds no network config: what containerd calls "cni plugin not initialized".
    #[error("no network config found in {}", dir.display())]
    NoConfig { dir: PathBuf },
    #[error("{op} {}: {source}", path.display())]
    ConfigIo {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid network config {}: {msg}", file.display())]
    InvalidConfig { file: PathBuf, msg: String },
    /// libcni's `FindInPath` found no plugin of this type in the bin dirs.
    #[error("failed to find plugin {type_:?} in path {dirs:?}")]
    PluginNotFound { type_: String, dirs: Vec<PathBuf> },
    /// A plugin ran and failed, in libcni's words (`plugin type="…" name="…" failed (add)`).
    #[error("plugin type={type_:?} name={network:?} failed ({command}): {failure}")]
    Plugin {
        type_: String,
        network: String,
        command: &'static str,
        /// Boxed: it is most of the error's size, and every result carrying it pays for it.
        failure: Box<PluginFailure>,
    },
    /// A plugin could not be started, or ran past its deadline and was killed.
    #[error("plugin type={type_:?} name={network:?} failed ({command}): {source}")]
    Exec {
        type_: String,
        network: String,
        command: &'static str,
        source: EffectError,
    },
    #[error("network {network:?} gave the pod no IP address on {ifname}")]
    NoAddress { network: String, ifname: String },
    #[error("network namespace: {0}")]
    Netns(EffectError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// What a failed plugin said: its CNI error when it printed one, else what libcni would make of
/// its exit status and stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub code: Option<u64>,
    pub msg: String,
    pub details: String,
}

impl fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(code) = self.code {
            write!(f, "CNI error {code}: ")?;
        }
        f.write_str(&self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl NetError {
    /// Whether a DEL that failed this way may be passed over, as containerd passes it over: a
    /// plugin that says what it should delete is "not found", or, once the namespace is gone,
    /// that a file is missing (CNI 0.7 lets a runtime DEL with no netns for a best-effort
    /// cleanup, and not every plugin takes that well).
    pub fn passable_on_del(&self, netns_gone: bool) -> bool {
        let NetError::Plugin { failure, .. } = self else {
            return false;
        };
        let said = format!("{} {}", failure.msg, failure.details).to_lowercase();
        said.contains("not found") || (netns_gone && said.contains("no such file or directory"))
    }

    /// The status RunPodSandbox (`doing` = "set up") or StopPodSandbox ("destroy") fails with.
    /// A plugin's failure is UNKNOWN, as containerd's plain errors reach kubelet; a node whose
    /// network is not configured is FAILED_PRECONDITION.
    pub fn status(&self, doing: &str, sandbox_id: &str) -> Status {
        let msg = format!("failed to {doing} network for sandbox {sandbox_id:?}: {self}");
        match self {
            NetError::NoConfig { .. }
            | NetError::ConfigIo { .. }
            | NetError::InvalidConfig { .. } => Status::failed_precondition(msg),
            NetError::State(_) => Status::internal(msg),
            _ => Status::unknown(msg),
        }
    }
}
