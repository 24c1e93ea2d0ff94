//! The CRI front door: kubelet's `--container-runtime-endpoint`, in front of a real runtime
//! (`upstream = "unix://…"`) or the embedded [`builtin`] one.
//!
//! Every call is forwarded as it came, as HTTP/2 frames, by its path: streams, methods this
//! build does not know, and Exec/Attach/PortForward URLs pass through untouched. Only calls that
//! a configured runtime hook subscribes to are decoded: the [`hooks`] chain may deny or adjust
//! them ([`view`]), the runtime answers, and post-hooks see the outcome. Each call leaves one
//! trace record with each hook's decision and time and the runtime's time.

pub mod builtin;
mod front;
mod grant;
mod hooks;
mod unknown;
pub mod upstream;
mod view;

pub use front::{CriService, serve};
pub use grant::{ENV_DENY, HookGrant, ResourcesGrant};
pub use hooks::HookSpec;
