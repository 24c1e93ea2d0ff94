//! The one error type of the effects crate.
//!
//! The daemon turns these into CNI errors or gRPC statuses; every message is lower-case and names
//! the interface, netns, path or plan field it is about.

use std::io;
use std::path::{Path, PathBuf};

/// Why a plan was refused or could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    /// The plan breaks the host's policy or is malformed (see [`crate::validate()`] and
    /// [`crate::validate_mounts`]). The plugin's fault: retrying the same plan will not help.
    #[error("plan denied: {0}")]
    Denied(String),
    /// The host end of the veth already exists; we never take over an existing interface.
    #[error("host interface {0:?} already exists")]
    HostInterfaceExists(String),
    /// The container netns already has an interface with the call's ifname.
    #[error("interface {0:?} already exists in the container netns")]
    ContainerInterfaceExists(String),
    /// The network namespace could not be opened or entered.
    #[error("netns {path:?}: {source}")]
    Netns {
        path: String,
        #[source]
        source: io::Error,
    },
    /// `CNI_NETNS` names no pod's namespace: a relative path, or the host's own namespace.
    #[error("netns {path:?} {why}")]
    NotPodNetns { path: String, why: String },
    /// A netlink request failed; the message says which request and on what.
    #[error("netlink: {0}")]
    Netlink(String),
    /// CHECK found something of the attachment missing.
    #[error("check failed: {0}")]
    Missing(String),
    /// A path the call needs does not exist: the volume path of a usage query, or the staging
    /// path of a publish that was never staged.
    #[error("path {0:?} does not exist")]
    NotFound(PathBuf),
    /// After unmounting, the target directory still holds files. They are not ours to delete,
    /// so the directory stays.
    #[error("mount target {0:?} is not empty after unmount; left in place")]
    TargetNotEmpty(PathBuf),
    /// A plugin binary ran past its deadline and was killed.
    #[error("{what:?} timed out after {after:?}")]
    TimedOut {
        what: PathBuf,
        after: std::time::Duration,
    },
    /// A filesystem or mount syscall failed; `op` says which, on what path.
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl EffectError {
    pub(crate) fn netns(path: &str, source: impl Into<io::Error>) -> Self {
        EffectError::Netns {
            path: path.to_string(),
            source: source.into(),
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: impl Into<io::Error>) -> Self {
        EffectError::Io {
            op,
            path: path.to_path_buf(),
            source: source.into(),
        }
    }
}
