//! CNI spec 1.1 for wasmgate: the types and checks shared by the `wasmgate-cni` shim and the
//! daemon, plus the shim's on-disk DEL queue.
//!
//! A runtime execs the shim (`src/bin/wasmgate-cni.rs`) as an ordinary CNI plugin. The shim parses
//! the environment ([`env`]) and stdin ([`conf`]), then forwards the call over a unix socket
//! ([`wire`]) to the daemon, which runs the Wasm plugin and answers with a [`result`] or a
//! [`CniError`]. Apart from [`queue`], nothing here does IO, and nothing pulls in an async runtime
//! or wasmtime, so the shim stays small and starts fast.

pub mod command;
pub mod conf;
pub mod env;
pub mod error;
pub mod plan;
pub mod queue;
pub mod result;
pub mod version;
pub mod wire;

pub use command::Command;
pub use conf::{AttachmentRef, ConfList, NetConf};
pub use env::Invocation;
pub use error::CniError;
pub use queue::DelQueue;
pub use result::{CniResult, Dns, Interface, IpConfig};
pub use wire::{Request, Response};
