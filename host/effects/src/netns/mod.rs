//! Pinned network namespaces for pod sandboxes: what `ip netns add` and containerd's CRI plugin
//! make before they run a pod's CNI plugins.
//!
//! A namespace lives only as long as something holds it. A pod's must outlive every process (a
//! sandbox has none before its first container starts), so it is *pinned*: a thread unshares a
//! new network namespace and its namespace file is bind-mounted onto an empty file. That file's
//! path is what the plugins get as `CNI_NETNS`, and unmounting it lets the namespace go.
//! [`LinuxNetns`] is the real implementation, [`RecordingNetns`] the recording fake for the
//! daemon's unit tests. Synchronous, like the rest of the crate: the daemon calls it from
//! `spawn_blocking`.

mod fake;
mod linux;

use std::path::Path;

use crate::EffectError;

pub use fake::{NetnsCall, RecordingNetns};
pub use linux::LinuxNetns;

/// The host's network namespace effects.
pub trait NetnsEffects: Send + Sync + 'static {
    /// Creates a network namespace pinned at `path`, with `lo` up (what the `loopback` plugin
    /// does for containerd), creating the parent directory (mode 0755) when missing.
    ///
    /// An existing `path` is an error: a namespace someone else pinned is never taken over. On
    /// failure nothing is left behind.
    fn create(&self, path: &Path) -> Result<(), EffectError>;
    /// Unpins `path` and deletes the file; the namespace goes once no process is left in it.
    /// Idempotent: a missing path, or one no longer pinned, is success.
    fn remove(&self, path: &Path) -> Result<(), EffectError>;
    /// Whether `path` pins a network namespace now (false once removed, or unmounted behind the
    /// daemon's back).
    fn is_pinned(&self, path: &Path) -> bool;
}
