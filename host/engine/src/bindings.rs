//! The one home of generated host bindings for `wit/`.
//!
//! Every world of the `wasmgate:plugin` package is generated here and nowhere else, so a WIT change
//! surfaces as a compile error in exactly one place. `wasi:config` comes from
//! `wasmtime-wasi-config`; `wasi:keyvalue` is implemented by [`crate::keyvalue`] because the stock
//! one is in-memory only.
//!
//! Exports are generated async: every call runs as a future on the caller's task, on a fiber
//! that yields at each epoch tick, so a caller's timeout can cancel any guest, looping or blocked
//! in a host call, and no call hops to another thread. Imports stay synchronous, since the ones
//! implemented here (`wasi:keyvalue`, `wasi:config`) never wait on anything but a local file.
//!
//! A released WIT version is never edited: a new one goes beside it (`wit/v0.2.0/`), gets its own
//! module here so its type names do not clash, and the host keeps serving the old one. Runtime
//! hooks exist in three versions, [`v0_1`], [`v0_2`] and [`v0_3`]; [`cri_types`] is always the
//! newest, the one the daemon works on, and [`crate::hook`] converts for hooks built against an
//! older one. 0.3.0 changed only the hook interface, so its types are 0.2.0's, generated once.

mod network {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasmgate:plugin/network-plugin",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
        },
        trappable_error_type: {
            "wasi:keyvalue/store.error" => crate::keyvalue::KvError,
        },
    });
}

mod storage {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasmgate:plugin/storage-plugin",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:keyvalue": crate::bindings::network::wasi::keyvalue,
        },
    });
}

mod runtime {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasmgate:plugin/runtime-hook@0.1.0",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:keyvalue": crate::bindings::network::wasi::keyvalue,
        },
    });
}

/// `wit/v0.2.0/` is its own package directory (with `deps/` linking to `wit/deps/`): wit-parser
/// reads a directory as one package, so 0.2.0 cannot sit among 0.1.0's files.
mod runtime_v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.2.0",
        world: "wasmgate:plugin/runtime-hook@0.2.0",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:keyvalue": crate::bindings::network::wasi::keyvalue,
        },
    });
}

/// `wit/v0.3.0/`: 0.2.0's types (`with`), so a 0.2.0 and a 0.3.0 hook take the same request
/// and no conversion sits between them.
mod runtime_v0_3 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.3.0",
        world: "wasmgate:plugin/runtime-hook@0.3.0",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:keyvalue": crate::bindings::network::wasi::keyvalue,
            "wasmgate:plugin/cri-types@0.3.0": crate::bindings::runtime_v0_2::wasmgate::plugin::cri_types,
        },
    });
}

/// The world a network plugin must fit, as shown in `wasmgate plugin list` and in link errors.
pub const NETWORK_WORLD: &str = "wasmgate:plugin/network-plugin@0.1.0";

/// The world a storage (CSI) plugin must fit.
pub const STORAGE_WORLD: &str = "wasmgate:plugin/storage-plugin@0.1.0";

/// The world a CRI runtime hook must fit, in its first version.
pub const RUNTIME_WORLD: &str = "wasmgate:plugin/runtime-hook@0.1.0";

/// The runtime-hook world's second version: 0.1.0's with `container.working-dir`.
pub const RUNTIME_WORLD_V0_2: &str = "wasmgate:plugin/runtime-hook@0.2.0";

/// The runtime-hook world's newest version: 0.2.0's with `post-subscriptions`.
pub const RUNTIME_WORLD_V0_3: &str = "wasmgate:plugin/runtime-hook@0.3.0";

/// Every runtime-hook version this host serves, oldest first.
pub const RUNTIME_WORLDS: [&str; 3] = [RUNTIME_WORLD, RUNTIME_WORLD_V0_2, RUNTIME_WORLD_V0_3];

pub use network::exports::wasmgate::plugin::network as cni_network;
pub use network::exports::wasmgate::plugin::network::Guest as NetworkGuest;
pub use network::wasi::keyvalue;
pub use network::wasmgate::plugin::cni_types;
pub use network::{NetworkPlugin, NetworkPluginPre};

pub use storage::exports::wasmgate::plugin::{
    controller as csi_controller, identity as csi_identity, node as csi_node,
    snapshots as csi_snapshots,
};
pub use storage::wasmgate::plugin::csi_types;
pub use storage::{StoragePlugin, StoragePluginPre};

/// `wasmgate:plugin/runtime-hook@0.1.0`.
pub mod v0_1 {
    pub use super::runtime::exports::wasmgate::plugin::hook as cri_hook;
    pub use super::runtime::wasmgate::plugin::cri_types;
    pub use super::runtime::{RuntimeHook, RuntimeHookPre};
}

/// `wasmgate:plugin/runtime-hook@0.2.0`.
pub mod v0_2 {
    pub use super::runtime_v0_2::exports::wasmgate::plugin::hook as cri_hook;
    pub use super::runtime_v0_2::wasmgate::plugin::cri_types;
    pub use super::runtime_v0_2::{RuntimeHook, RuntimeHookPre};
}

/// `wasmgate:plugin/runtime-hook@0.3.0`; its `cri_types` are [`v0_2::cri_types`].
pub mod v0_3 {
    pub use super::runtime_v0_3::exports::wasmgate::plugin::hook as cri_hook;
    pub use super::runtime_v0_3::{RuntimeHook, RuntimeHookPre};
}

/// The CRI vocabulary in the newest runtime-hook version (0.2.0's, which 0.3.0 kept): what the
/// daemon builds and reads.
pub use v0_2::cri_types;
