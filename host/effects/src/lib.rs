//! Host effects for wasmgate: the part of a CNI or CSI call that touches the kernel.
//!
//! # Network (CNI)
//!
//! A network plugin never gets netlink. It returns an attachment *plan*
//! ([`wasmgate_cni::plan::Attachment`]) as plain data, and the daemon carries it out:
//!
//! ```text
//! plugin ADD -> plan -> validate(target, plan, policy), check_result -> NetworkEffects::apply
//!                                                          -> Applied (recorded) -> CNI result
//! plugin DEL -> recorded plan and Applied                  -> NetworkEffects::remove
//! plugin CHECK -> recorded plan                            -> NetworkEffects::verify
//! ```
//!
//! [`validate()`] is the host's policy check of a plan (names, CIDRs, MTUs, allowed bridges,
//! every address inside the plugin's pod CIDR grant, host routes only towards the pod's own
//! addresses), and [`check_result`] holds the result reported to the runtime to that plan.
//! DEL removes only the veth that [`Applied`] recorded. [`NetworkEffects`] hides the kernel, as youki
//! hides syscalls behind `trait Syscall`: [`Netlink`] is the real implementation, and
//! [`RecordingFake`] records calls for the daemon's unit tests.
//!
//! The API is synchronous on purpose: the daemon calls it from `spawn_blocking`, and the real
//! implementation must run parts of each call on a thread that has entered the container's netns.
//!
//! ```
//! use wasmgate_cni::plan::{Attachment, Target, Veth};
//! use wasmgate_effects::{NetPolicy, NetworkEffects, RecordingFake, validate};
//!
//! let target = Target { netns: "/var/run/netns/pod1".into(), ifname: "eth0".into() };
//! let policy = NetPolicy { pod_cidrs: vec!["10.22.0.0/16".parse().unwrap()], ..NetPolicy::default() };
//! let plan = Attachment {
//!     veth: Veth { host_name: "wg1a2b".into(), mtu: Some(1500), host_addresses: vec![] },
//!     bridge: None,
//!     container_addresses: vec!["10.22.0.5/24".into()],
//!     container_routes: vec![],
//!     host_routes: vec![],
//! };
//! validate(&target, &plan, &policy).unwrap();
//! // No grant, no plumbing.
//! assert!(validate(&target, &plan, &NetPolicy::default()).is_err());
//!
//! let effects = RecordingFake::default();
//! let built = effects.apply(&target, &plan).unwrap();
//! effects.verify(&target, &plan).unwrap();
//! effects.remove(&target, &plan, Some(&built)).unwrap();
//! assert!(effects.verify(&target, &plan).is_err());
//! ```
//!
//! # Mounts (CSI)
//!
//! A storage plugin never mounts either. Stage and publish return a list of [`MountRequest`]s in
//! the plugin's own view of the filesystem, and the daemon carries them out:
//!
//! ```text
//! plugin stage/publish -> plan -> validate_mounts(plan, ctx) -> Vec<Mount> -> MountEffects::mount
//! plugin unstage/unpublish                                   -> MountEffects::unmount(target),
//!                                                               then remove_target (unpublish)
//! NodeGetVolumeStats                                         -> MountEffects::usage(path)
//! ```
//!
//! [`validate_mounts`] allows exactly one target, the request's `target_path` (publish) or
//! `staging_target_path` (stage), and three sources: a path under the plugin's data directory,
//! resolved on the host with symlinks followed and refused if it lands outside; the staging path
//! (publish only); or a fresh tmpfs of at most 64 GiB. Options come from a short allow-list
//! ([`ALLOWED_OPTIONS`]) that can only restrict a mount. Its refusals are
//! [`EffectError::Denied`]. [`LinuxMounts`] is the real [`MountEffects`] and [`RecordingMounts`]
//! the recording fake; as with the network side the API is synchronous, for `spawn_blocking`.
//!
//! ```
//! use std::path::Path;
//! use wasmgate_effects::{
//!     MountCall, MountContext, MountEffects, MountRequest, RecordingMounts, RequestSource,
//!     validate_mounts,
//! };
//!
//! let ctx = MountContext {
//!     target_path: Some("/var/lib/kubelet/pods/p1/volumes/v1/mount".into()),
//!     staging_path: None,
//!     grant_guest: "/data".into(),
//!     grant_host: std::env::temp_dir(),
//! };
//! let plan = [MountRequest {
//!     source: RequestSource::Tmpfs(64 << 20),
//!     target: "/var/lib/kubelet/pods/p1/volumes/v1/mount".into(),
//!     read_only: false,
//!     options: vec!["nosuid".into(), "nodev".into()],
//! }];
//! let mounts = validate_mounts(&plan, &ctx).unwrap();
//!
//! let effects = RecordingMounts::new();
//! effects.mount(&mounts[0]).unwrap();
//! assert!(effects.is_mounted(&mounts[0].target).unwrap());
//! effects.unmount(&mounts[0].target, true).unwrap();
//! assert!(!effects.is_mounted(Path::new("/var/lib/kubelet/pods/p1/volumes/v1/mount")).unwrap());
//! assert!(matches!(effects.calls()[0], MountCall::Mount(_)));
//! ```
//!
//! # Pod sandboxes (CRI)
//!
//! The builtin CRI runtime networks a pod as containerd does: it pins a new network namespace
//! ([`NetnsEffects`]: [`LinuxNetns`], fake [`RecordingNetns`]) and execs the node's CNI plugins
//! into it ([`PluginExec`]: [`ProcessExec`], fake [`RecordingExec`]). The exec side is async; see
//! [`exec`].

mod error;
pub mod exec;
pub mod fake;
pub mod mount;
pub mod netlink;
pub mod netns;
pub mod validate;

use serde::{Deserialize, Serialize};
use wasmgate_cni::plan::{Attachment, Target};

pub use error::EffectError;
pub use exec::{ExecOutput, ExecRequest, PluginExec, ProcessExec, RecordingExec};
pub use fake::{Call, RecordingFake};
pub use mount::{
    ALLOWED_OPTIONS, LinuxMounts, MAX_MOUNTS, MAX_TMPFS_BYTES, Mount, MountCall, MountContext,
    MountEffects, MountRequest, RecordingMounts, RequestSource, Source, Usage, validate_mounts,
};
pub use netlink::{Netlink, open_pod_netns};
pub use netns::{LinuxNetns, NetnsCall, NetnsEffects, RecordingNetns};
pub use validate::{NetPolicy, check_result, validate};

/// The host's network effects: build, remove and check one veth attachment.
pub trait NetworkEffects: Send + Sync + 'static {
    /// Builds the attachment. On any failure, undoes what it built and returns the error.
    fn apply(&self, target: &Target, plan: &Attachment) -> Result<Applied, EffectError>;
    /// Removes the attachment by deleting the host end of the veth, which takes the container
    /// end with it. With `built` (what `apply` reported), only the veth of that ifindex and MAC
    /// whose peer is the recorded container interface is deleted; without it (a record from
    /// before `built` was kept, or a crash inside `apply`), the veth of the plan's host name.
    /// The container netns is never entered: once the host end is gone there is nothing of ours
    /// left in it, and whatever now carries the ifname there is not ours to delete. Idempotent.
    /// A shared bridge is never removed.
    fn remove(
        &self,
        target: &Target,
        plan: &Attachment,
        built: Option<&Applied>,
    ) -> Result<(), EffectError>;
    /// Cuts the pod off at once without destroying anything: the host veth goes down, so the
    /// container end loses carrier and the bridge stops forwarding to it. Destroying a netdev
    /// waits for an RCU barrier (tens of milliseconds), so DEL detaches on the reply path and
    /// leaves `remove` to run behind it. Matches the veth as `remove` does; idempotent.
    fn detach(
        &self,
        target: &Target,
        plan: &Attachment,
        built: Option<&Applied>,
    ) -> Result<(), EffectError>;
    /// CHECK: the container interface exists in the netns, is up, has every container address
    /// and route; the host veth exists (and is enslaved to the bridge when there is one).
    fn verify(&self, target: &Target, plan: &Attachment) -> Result<(), EffectError>;
}

/// What [`NetworkEffects::apply`] built, as the kernel knows it: the CNI result's MACs, and
/// what [`NetworkEffects::remove`] matches so that it deletes nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// MAC of the host end of the veth, `aa:bb:cc:dd:ee:ff`.
    pub host_mac: String,
    /// MAC of the container interface.
    pub container_mac: String,
    /// Ifindex of the host end of the veth in the host netns; 0 when unknown.
    #[serde(default)]
    pub host_ifindex: u32,
    /// Ifindex of the container interface in the container netns (the host end's peer); 0 when
    /// unknown.
    #[serde(default)]
    pub container_ifindex: u32,
}
