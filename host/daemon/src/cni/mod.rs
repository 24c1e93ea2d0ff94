//! The CNI front door: the socket the `wasmgate-cni` shim talks to, the service behind it, the
//! DEL queue replay, and the single mapping of failures to CNI error codes.

mod convert;
pub mod error;
pub mod queue;
pub mod server;
mod service;
mod teardown;

pub use service::{CniService, PluginPolicy};
