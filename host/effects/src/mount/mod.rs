//! Host mount effects for the CSI path: the part of a stage or publish that touches the kernel.
//!
//! A storage plugin never mounts. It returns a plan of [`MountRequest`]s in its own view of the
//! filesystem; [`validate_mounts`] checks the plan against the request and resolves it to
//! [`Mount`]s in host terms, and a [`MountEffects`] carries those out. [`LinuxMounts`] is the real
//! implementation, [`RecordingMounts`] the recording fake for the daemon's unit tests.

mod fake;
mod linux;
mod validate;

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

use crate::EffectError;

pub use fake::{MountCall, RecordingMounts};
pub use linux::LinuxMounts;
pub use validate::{MAX_MOUNTS, MAX_TMPFS_BYTES, MountContext, validate_mounts};

/// What a plugin's plan may name as the source of a mount, in the plugin's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestSource {
    /// A path under the plugin's granted data directory, as the plugin sees it (`/data/v1`).
    Bind(String),
    /// The request's `staging_target_path`; only in a publish that has one.
    Staged,
    /// A fresh tmpfs of this many bytes; 0 leaves the size to the kernel.
    Tmpfs(u64),
}

/// One mount of a plugin's plan, as the plugin returned it. Untrusted until validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    pub source: RequestSource,
    pub target: PathBuf,
    pub read_only: bool,
    pub options: Vec<String>,
}

/// The source of a validated mount, in host terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A canonical host path, already checked to lie inside what the plugin may expose.
    Bind(PathBuf),
    /// A fresh tmpfs of this many bytes; 0 leaves the size to the kernel.
    Tmpfs(u64),
}

/// A validated mount, ready for [`MountEffects::mount`]. The daemon persists these so that it
/// can unmount after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: Source,
    /// Normalised lexically; equal to the request's target or staging path.
    pub target: PathBuf,
    /// True also when `options` contains `ro`.
    pub read_only: bool,
    /// Only options from the allow-list (see [`validate_mounts`]).
    pub options: Vec<String>,
}

/// Space and inodes of the filesystem a path is on, from `statvfs`, for NodeGetVolumeStats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub total_bytes: u64,
    /// Available to an unprivileged writer, so it excludes the root reserve.
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub total_inodes: u64,
    pub free_inodes: u64,
    pub used_inodes: u64,
}

/// The host's mount effects. Synchronous: the daemon calls it from `spawn_blocking`.
pub trait MountEffects: Send + Sync + 'static {
    /// Mounts `m`, creating the target directory and its parents (mode 0750) when missing.
    ///
    /// A target that is already a mount point is success, whatever is mounted there: kubelet
    /// retries a publish that it did not see finish. Whose mount it is, this cannot tell; the
    /// daemon asks [`MountEffects::is_mounted`] first and refuses one it has no record of. On failure nothing is left behind, neither
    /// a half-done mount nor a directory this call created.
    fn mount(&self, m: &Mount) -> Result<(), EffectError>;
    /// Unmounts everything stacked on `target`, then removes the directory when `remove_dir`.
    ///
    /// Idempotent: a missing target or one that is no longer a mount point is success. Stale
    /// mounts (`EIO`, `ENOTCONN`, `ESTALE`) are detached lazily. The directory is only removed
    /// when empty; a non-empty one is [`EffectError::TargetNotEmpty`] and is left alone, since
    /// its content is data that was never ours to delete.
    fn unmount(&self, target: &Path, remove_dir: bool) -> Result<(), EffectError>;
    /// Removes the (unmounted) target directory; never recursive, and a missing one is success.
    /// Any other failure is [`EffectError::Io`] with the errno, so that the daemon can report it
    /// apart from the unmount, which did happen.
    fn remove_target(&self, target: &Path) -> Result<(), EffectError>;
    /// Whether `target` is a mount point: an exact match of a mount point in the calling
    /// thread's `/proc/thread-self/mountinfo`. Comparing `st_dev` with the parent's would miss a
    /// bind from the same filesystem.
    fn is_mounted(&self, target: &Path) -> Result<bool, EffectError>;
    /// Usage of the filesystem at `path`; a missing path is [`EffectError::NotFound`].
    fn usage(&self, path: &Path) -> Result<Usage, EffectError>;
}

/// Every option a plan may carry. Each only restricts a mount; `ro` and `rw` set its mode.
pub const ALLOWED_OPTIONS: &[&str] = &[
    "nosuid",
    "nodev",
    "noexec",
    "noatime",
    "relatime",
    "nodiratime",
    "strictatime",
    "ro",
    "rw",
];

/// The allow-list of plan options and their mount flags. `None` means not allowed; `rw` is
/// allowed and sets nothing. `suid`, `dev`, `exec` and friends are refused rather than mapped:
/// they could only ever weaken a mount.
pub(crate) fn option_flags(option: &str) -> Option<MsFlags> {
    Some(match option {
        "nosuid" => MsFlags::MS_NOSUID,
        "nodev" => MsFlags::MS_NODEV,
        "noexec" => MsFlags::MS_NOEXEC,
        "noatime" => MsFlags::MS_NOATIME,
        "relatime" => MsFlags::MS_RELATIME,
        "nodiratime" => MsFlags::MS_NODIRATIME,
        "strictatime" => MsFlags::MS_STRICTATIME,
        "ro" => MsFlags::MS_RDONLY,
        "rw" => MsFlags::empty(),
        _ => return None,
    })
}

/// `p` with `.` components, repeated and trailing slashes removed. `..` is kept: resolving it
/// without the filesystem would be wrong across symlinks, so callers refuse it instead.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    p.components().collect()
}
