//! The one error type of the effects crate.
//!
//! The daemon turns these into CNI errors; every message is lower-case and names the interface,
//! netns or plan field it is about.

use std::io;

/// Why a plan was refused or could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    /// The plan breaks the host's policy or is malformed (see [`crate::validate`]).
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
    /// A netlink request failed; the message says which request and on what.
    #[error("netlink: {0}")]
    Netlink(String),
    /// CHECK found something of the attachment missing.
    #[error("check failed: {0}")]
    Missing(String),
}

impl EffectError {
    pub(crate) fn netns(path: &str, source: impl Into<io::Error>) -> Self {
        EffectError::Netns {
            path: path.to_string(),
            source: source.into(),
        }
    }
}
