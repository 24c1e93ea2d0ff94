//! The Wasm engine behind every wasmgate call.
//!
//! In the flow of a call this is the third stop: a front door (CNI, CSI, CRI) has decoded and
//! validated the request, the router picked a plugin, and this crate runs that plugin in a
//! bounded sandbox and hands back the data it returned. It never performs a host effect itself.
//!
//! - [`bindings`]: the only `bindgen!` in the project.
//! - [`engine`]: the wasmtime engine (pooling allocator, epoch ticker) and the compiled-artifact cache.
//! - [`hook`]: a runtime hook of any served WIT version, called with the newest types.
//! - [`registry`]: plugin name to current version, hot-swapped atomically.
//! - [`inspect`]: which worlds a component fits, and why not; the registry links through it.
//! - [`call`]: one call on the caller's task, in an idle or new instance, with epoch yields, a memory
//!   cap and a timeout.
//! - [`filesystem`]: `open-at` for a storage plugin's data dir: non-blocking, regular files and
//!   directories only, within the instance's handle budget and the process's fd reserve.
//! - [`keyvalue`]: the crash-safe `wasi:keyvalue` store each plugin keeps its state in.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wasmgate_engine::EngineError> {
//! use wasmgate_engine::{PluginSpec, Registry, WasmEngine, EngineConfig};
//! let engine = WasmEngine::new(&EngineConfig::default())?;
//! let registry = Registry::new(engine, "/var/lib/wasmgate".into());
//! registry.load(PluginSpec::new("bridge", "plugins/bridge_ipam.wasm")).await?;
//! let plugin = registry.get("bridge")?;
//! let versions = plugin.network(async |net, store| net.call_versions(store).await).await?;
//! # Ok(()) }
//! ```

pub mod bindings;
pub mod call;
pub mod engine;
mod error;
pub mod filesystem;
pub mod hook;
mod host;
pub mod inspect;
pub mod keyvalue;
pub mod registry;
mod stderr;
mod trust;

pub use call::{CallError, Limits};
pub use engine::{EngineConfig, WasmEngine};
pub use error::EngineError;
pub use filesystem::FD_RESERVE;
pub use hook::Hook;
pub use host::{HANDLE_HOST_BYTES, HostState};
pub use registry::{DATA_DIR_GUEST, LoadedPlugin, PluginInfo, PluginSpec, Registry, World};
pub use trust::check_private_dir;
pub use wasmtime;
