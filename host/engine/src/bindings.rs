//! The one home of generated host bindings for `wit/`.
//!
//! Every world of the `wasmgate:plugin` package is generated here and nowhere else, so a WIT change
//! surfaces as a compile error in exactly one place. `wasi:config` comes from
//! `wasmtime-wasi-config`; `wasi:keyvalue` is implemented by [`crate::keyvalue`] because the stock
//! one is in-memory only.

mod network {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasmgate:plugin/network-plugin",
        imports: { default: trappable },
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
        with: {
            "wasi:keyvalue": crate::bindings::network::wasi::keyvalue,
        },
    });
}

mod runtime {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasmgate:plugin/runtime-hook",
        imports: { default: trappable },
        with: {
            "wasi:keyvalue": crate::bindings::network::wasi::keyvalue,
        },
    });
}

/// The world a network plugin must fit, as shown in `wasmgate plugin list` and in link errors.
pub const NETWORK_WORLD: &str = "wasmgate:plugin/network-plugin@0.1.0";

/// The world a storage (CSI) plugin must fit.
pub const STORAGE_WORLD: &str = "wasmgate:plugin/storage-plugin@0.1.0";

/// The world a CRI runtime hook must fit.
pub const RUNTIME_WORLD: &str = "wasmgate:plugin/runtime-hook@0.1.0";

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

pub use runtime::exports::wasmgate::plugin::hook as cri_hook;
pub use runtime::wasmgate::plugin::cri_types;
pub use runtime::{RuntimeHook, RuntimeHookPre};
