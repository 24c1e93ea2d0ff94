//! Host network effects for wasmgate: the part of a CNI call that touches the kernel.
//!
//! A network plugin never gets netlink. It returns an attachment *plan*
//! ([`wasmgate_cni::plan::Attachment`]) as plain data, and the daemon carries it out:
//!
//! ```text
//! plugin ADD -> plan -> validate(target, plan, policy) -> NetworkEffects::apply -> CNI result
//! plugin DEL -> recorded plan                          -> NetworkEffects::remove
//! plugin CHECK -> recorded plan                        -> NetworkEffects::verify
//! ```
//!
//! [`validate()`] is the host's policy check of a plan (names, CIDRs, MTUs, allowed bridges, host
//! routes only towards the pod's own addresses). [`NetworkEffects`] hides the kernel, as youki
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
//! let plan = Attachment {
//!     veth: Veth { host_name: "wg1a2b".into(), mtu: Some(1500), host_addresses: vec![] },
//!     bridge: None,
//!     container_addresses: vec!["10.22.0.5/24".into()],
//!     container_routes: vec![],
//!     host_routes: vec![],
//! };
//! validate(&target, &plan, &NetPolicy::default()).unwrap();
//!
//! let effects = RecordingFake::default();
//! effects.apply(&target, &plan).unwrap();
//! effects.verify(&target, &plan).unwrap();
//! effects.remove(&target, &plan).unwrap();
//! assert!(effects.verify(&target, &plan).is_err());
//! ```

mod error;
pub mod fake;
pub mod netlink;
pub mod validate;

use serde::{Deserialize, Serialize};
use wasmgate_cni::plan::{Attachment, Target};

pub use error::EffectError;
pub use fake::{Call, RecordingFake};
pub use netlink::Netlink;
pub use validate::{NetPolicy, validate};

/// The host's network effects: build, remove and check one veth attachment.
pub trait NetworkEffects: Send + Sync + 'static {
    /// Builds the attachment. On any failure, undoes what it built and returns the error.
    fn apply(&self, target: &Target, plan: &Attachment) -> Result<Applied, EffectError>;
    /// Removes the attachment. Idempotent: a missing netns, host veth or container interface is
    /// success. A shared bridge is never removed.
    fn remove(&self, target: &Target, plan: &Attachment) -> Result<(), EffectError>;
    /// Cuts the pod off at once without destroying anything: the host veth goes down, so the
    /// container end loses carrier and the bridge stops forwarding to it. Destroying a netdev
    /// waits for an RCU barrier (tens of milliseconds), so DEL detaches on the reply path and
    /// leaves `remove` to run behind it. Idempotent, like `remove`.
    fn detach(&self, target: &Target, plan: &Attachment) -> Result<(), EffectError>;
    /// CHECK: the container interface exists in the netns, is up, has every container address
    /// and route; the host veth exists (and is enslaved to the bridge when there is one).
    fn verify(&self, target: &Target, plan: &Attachment) -> Result<(), EffectError>;
}

/// What [`NetworkEffects::apply`] learned from the kernel, for the CNI result's `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// MAC of the host end of the veth, `aa:bb:cc:dd:ee:ff`.
    pub host_mac: String,
    /// MAC of the container interface.
    pub container_mac: String,
}
