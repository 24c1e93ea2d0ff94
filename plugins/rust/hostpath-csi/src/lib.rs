//! `hostpath-csi`: an example wasmgate CSI driver, a Wasm component modelled on
//! kubernetes-csi/csi-driver-host-path, but sandboxed.
//!
//! The host grants it one directory, `/data` in the guest, plus `wasi:keyvalue` and `wasi:config`.
//! Volumes are directories (`/data/volumes/<id>`), snapshots are full copies
//! (`/data/snapshots/<id>`), and metadata is JSON in the keyvalue bucket. It never mounts: node
//! stage and publish return a plan of bind mounts that the host validates and performs.
//!
//! Layout:
//! - this file: the generated bindings and thin `Guest` impls that wire the real WASI imports into
//!   the logic behind the [`kv::Kv`] and [`config::Settings`] traits and a root path;
//! - [`driver`]: the shared state and helpers; [`controller`], [`snapshots`], [`node`],
//!   [`identity`]: the RPCs, pure logic unit-tested natively against a map and a temp directory;
//! - [`config`]: the `wasi:config` keys; [`kv`]: the key layout; [`records`]: the JSON records;
//!   [`fsx`]: directory creation, removal and copying; [`error`]: `csi-error` constructors.

mod config;
mod controller;
mod driver;
mod error;
mod fsx;
mod identity;
mod kv;
mod node;
mod records;
mod snapshots;
#[cfg(test)]
mod tests;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "wasmgate:plugin/storage-plugin@0.1.0",
    generate_all,
    // Tests compare plans and records whole.
    additional_derives: [PartialEq],
});

use std::path::Path;

use exports::wasmgate::plugin::{controller as ctl, identity as id, node as nd, snapshots as snap};
use wasi::keyvalue::store::{self as kvstore, Bucket};
use wasmgate::plugin::csi_types::{
    ControllerCapability, CsiError, Mount, NodeCapability, PluginCapability, Snapshot, StringMap,
    Volume, VolumeCondition,
};

use crate::config::Config;
use crate::driver::{DATA_ROOT, Driver};

/// The exported component.
struct Plugin;

export!(Plugin);

/// Runs `f` against a driver over the real imports.
fn with_driver<T>(
    f: impl FnOnce(&Driver<'_, WasiKv>) -> Result<T, CsiError>,
) -> Result<T, CsiError> {
    let cfg = Config::load(&WasiSettings)?;
    let kv = WasiKv::open()?;
    f(&Driver::new(&kv, cfg, DATA_ROOT))
}

impl id::Guest for Plugin {
    fn get_plugin_info() -> Result<id::PluginInfo, CsiError> {
        identity::plugin_info(&WasiSettings)
    }

    fn get_plugin_capabilities() -> Vec<PluginCapability> {
        identity::capabilities()
    }

    fn probe() -> Result<bool, CsiError> {
        identity::probe(&WasiSettings, &WasiKv::open()?, Path::new(DATA_ROOT))
    }
}

impl ctl::Guest for Plugin {
    fn get_capabilities() -> Vec<ControllerCapability> {
        // No error to return here: a broken `attach-required` or `alpha-capabilities` surfaces in
        // probe and every call.
        controller::capabilities(
            config::attach_required(&WasiSettings).unwrap_or(false),
            config::alpha(&WasiSettings).unwrap_or_default(),
        )
    }

    fn create_volume(req: ctl::CreateVolumeRequest) -> Result<Volume, CsiError> {
        with_driver(|d| d.create_volume(&req))
    }

    fn delete_volume(volume_id: String, _secrets: StringMap) -> Result<(), CsiError> {
        with_driver(|d| d.delete_volume(&volume_id))
    }

    fn controller_publish(req: ctl::PublishRequest) -> Result<StringMap, CsiError> {
        with_driver(|d| d.controller_publish(&req))
    }

    fn controller_unpublish(
        volume_id: String,
        node_id: String,
        _secrets: StringMap,
    ) -> Result<(), CsiError> {
        with_driver(|d| d.controller_unpublish(&volume_id, &node_id))
    }

    fn validate_volume_capabilities(
        req: ctl::ValidateRequest,
    ) -> Result<ctl::Validation, CsiError> {
        with_driver(|d| d.validate_volume_capabilities(&req))
    }

    fn list_volumes(req: ctl::ListVolumesRequest) -> Result<ctl::VolumePage, CsiError> {
        with_driver(|d| d.list_volumes(&req))
    }

    fn get_capacity(req: ctl::GetCapacityRequest) -> Result<ctl::Capacity, CsiError> {
        with_driver(|d| d.get_capacity(&req))
    }

    fn get_volume(volume_id: String) -> Result<ctl::VolumeEntry, CsiError> {
        with_driver(|d| d.get_volume(&volume_id))
    }

    fn expand_volume(req: ctl::ExpandRequest) -> Result<ctl::Expansion, CsiError> {
        with_driver(|d| d.controller_expand(&req))
    }

    fn modify_volume(
        volume_id: String,
        _mutable_parameters: StringMap,
        _secrets: StringMap,
    ) -> Result<(), CsiError> {
        with_driver(|d| d.modify_volume(&volume_id))
    }
}

impl snap::Guest for Plugin {
    fn create_snapshot(req: snap::CreateSnapshotRequest) -> Result<Snapshot, CsiError> {
        with_driver(|d| d.create_snapshot(&req))
    }

    fn delete_snapshot(snapshot_id: String, _secrets: StringMap) -> Result<(), CsiError> {
        with_driver(|d| d.delete_snapshot(&snapshot_id))
    }

    fn list_snapshots(req: snap::ListSnapshotsRequest) -> Result<snap::SnapshotPage, CsiError> {
        with_driver(|d| d.list_snapshots(&req))
    }

    fn get_snapshot(snapshot_id: String, _secrets: StringMap) -> Result<Snapshot, CsiError> {
        with_driver(|d| d.get_snapshot(&snapshot_id))
    }
}

impl nd::Guest for Plugin {
    fn get_capabilities() -> Vec<NodeCapability> {
        node::capabilities()
    }

    fn get_info() -> Result<nd::NodeInfo, CsiError> {
        Ok(node::node_info(&Config::load(&WasiSettings)?))
    }

    fn stage_volume(req: nd::StageRequest) -> Result<Vec<Mount>, CsiError> {
        with_driver(|d| d.stage_volume(&req))
    }

    fn unstage_volume(volume_id: String, staging_target_path: String) -> Result<(), CsiError> {
        with_driver(|d| d.unstage_volume(&volume_id, &staging_target_path))
    }

    fn publish_volume(req: nd::PublishRequest) -> Result<Vec<Mount>, CsiError> {
        with_driver(|d| d.publish_volume(&req))
    }

    fn unpublish_volume(volume_id: String, target_path: String) -> Result<(), CsiError> {
        with_driver(|d| d.unpublish_volume(&volume_id, &target_path))
    }

    fn get_volume_stats(req: nd::StatsRequest) -> Result<Option<VolumeCondition>, CsiError> {
        with_driver(|d| d.volume_stats(&req))
    }

    fn expand_volume(req: nd::ExpandRequest) -> Result<i64, CsiError> {
        with_driver(|d| d.node_expand(&req))
    }
}

/// `wasi:keyvalue` bucket `""`: the wasmgate host's default bucket, and the only identifier the
/// stock wasmtime CLI accepts.
struct WasiKv(Bucket);

impl WasiKv {
    fn open() -> Result<Self, CsiError> {
        kvstore::open("")
            .map(WasiKv)
            .map_err(|e| error::internal(format!("open keyvalue bucket \"\": {}", kv_error(&e))))
    }
}

fn kv_error(e: &kvstore::Error) -> String {
    match e {
        kvstore::Error::NoSuchStore => "no such store".to_string(),
        kvstore::Error::AccessDenied => "access denied".to_string(),
        kvstore::Error::Other(msg) => msg.clone(),
    }
}

impl kv::Kv for WasiKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key).map_err(|e| kv_error(&e))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(key, value).map_err(|e| kv_error(&e))
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        self.0.delete(key).map_err(|e| kv_error(&e))
    }

    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), String> {
        self.0
            .list_keys(cursor)
            .map(|page| (page.keys, page.cursor))
            .map_err(|e| kv_error(&e))
    }

    fn increment(&self, key: &str, delta: u64) -> Result<u64, String> {
        wasi::keyvalue::atomics::increment(&self.0, key, delta).map_err(|e| kv_error(&e))
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, String> {
        let found = wasi::keyvalue::batch::get_many(&self.0, keys).map_err(|e| kv_error(&e))?;
        // The host answers in the order asked, but match by key rather than trust that.
        let mut by_key: std::collections::BTreeMap<String, Vec<u8>> =
            found.into_iter().flatten().collect();
        Ok(keys.iter().map(|k| by_key.remove(k)).collect())
    }
}

/// `wasi:config/store`.
struct WasiSettings;

impl config::Settings for WasiSettings {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        use wasi::config::store::Error;
        wasi::config::store::get(key).map_err(|e| match e {
            Error::Upstream(msg) | Error::Io(msg) => msg,
        })
    }
}
