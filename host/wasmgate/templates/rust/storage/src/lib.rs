//! `{{name}}`: a wasmgate storage plugin (a CSI driver), a Wasm component of `{{world_id}}`.
//!
//! The host serves csi.v1 on a unix socket and calls these exports; it checks the required
//! fields first, and answers UNIMPLEMENTED itself for an RPC whose capability the driver does not
//! advertise. The plugin never mounts: node stage and publish return a plan of mounts that the
//! host checks and performs. Its data goes in the one directory it is granted (`/data`), its
//! metadata in `wasi:keyvalue`.
//!
//! What it does, as `wasmgate plugin new` wrote it:
//! - Identity: GetPluginInfo answers the driver name (`wasi:config` key `driver-name`, which
//!   the daemon sets to its `[csi] driver`; `{{name}}` without it); no capabilities, so no
//!   controller service; Probe: ready;
//! - Node: no capabilities; NodeGetInfo answers the node (`wasi:config` key `node-id`, which the
//!   daemon sets); publish and unpublish are UNIMPLEMENTED until you write them;
//! - Controller and snapshots: UNIMPLEMENTED (the host refuses them first, as none is
//!   advertised).
//!
//! See wasmgate's `plugins/rust/hostpath-csi` for a complete driver.

wit_bindgen::generate!({
    path: "wit",
    world: "{{world_id}}",
    generate_all,
    // The unit tests compare answers whole.
    additional_derives: [PartialEq],
});

use exports::wasmgate::plugin::{controller as ctl, identity as id, node as nd, snapshots as snap};
use wasmgate::plugin::csi_types::{
    ControllerCapability, CsiError, ErrorCode, Mount, NodeCapability, PluginCapability, Snapshot,
    StringMap, Volume, VolumeCondition,
};

const NAME: &str = "{{name}}";

/// The exported component.
struct Plugin;

export!(Plugin);

impl id::Guest for Plugin {
    fn get_plugin_info() -> Result<id::PluginInfo, CsiError> {
        Ok(plugin_info(config("driver-name")?))
    }

    fn get_plugin_capabilities() -> Vec<PluginCapability> {
        // Add `ControllerService` once the controller RPCs below do something.
        vec![]
    }

    fn probe() -> Result<bool, CsiError> {
        Ok(true)
    }
}

impl nd::Guest for Plugin {
    fn get_capabilities() -> Vec<NodeCapability> {
        vec![]
    }

    fn get_info() -> Result<nd::NodeInfo, CsiError> {
        node_info(config("node-id")?)
    }

    fn stage_volume(_req: nd::StageRequest) -> Result<Vec<Mount>, CsiError> {
        Err(unimplemented("NodeStageVolume"))
    }

    fn unstage_volume(_volume_id: String, _staging_target_path: String) -> Result<(), CsiError> {
        Err(unimplemented("NodeUnstageVolume"))
    }

    fn publish_volume(_req: nd::PublishRequest) -> Result<Vec<Mount>, CsiError> {
        Err(unimplemented("NodePublishVolume"))
    }

    fn unpublish_volume(_volume_id: String, _target_path: String) -> Result<(), CsiError> {
        Err(unimplemented("NodeUnpublishVolume"))
    }

    fn get_volume_stats(_req: nd::StatsRequest) -> Result<Option<VolumeCondition>, CsiError> {
        Err(unimplemented("NodeGetVolumeStats"))
    }

    fn expand_volume(_req: nd::ExpandRequest) -> Result<i64, CsiError> {
        Err(unimplemented("NodeExpandVolume"))
    }
}

impl ctl::Guest for Plugin {
    fn get_capabilities() -> Vec<ControllerCapability> {
        vec![]
    }

    fn create_volume(_req: ctl::CreateVolumeRequest) -> Result<Volume, CsiError> {
        Err(unimplemented("CreateVolume"))
    }

    fn delete_volume(_volume_id: String, _secrets: StringMap) -> Result<(), CsiError> {
        Err(unimplemented("DeleteVolume"))
    }

    fn controller_publish(_req: ctl::PublishRequest) -> Result<StringMap, CsiError> {
        Err(unimplemented("ControllerPublishVolume"))
    }

    fn controller_unpublish(
        _volume_id: String,
        _node_id: String,
        _secrets: StringMap,
    ) -> Result<(), CsiError> {
        Err(unimplemented("ControllerUnpublishVolume"))
    }

    fn validate_volume_capabilities(
        _req: ctl::ValidateRequest,
    ) -> Result<ctl::Validation, CsiError> {
        Err(unimplemented("ValidateVolumeCapabilities"))
    }

    fn list_volumes(_req: ctl::ListVolumesRequest) -> Result<ctl::VolumePage, CsiError> {
        Err(unimplemented("ListVolumes"))
    }

    fn get_capacity(_req: ctl::GetCapacityRequest) -> Result<ctl::Capacity, CsiError> {
        Err(unimplemented("GetCapacity"))
    }

    fn get_volume(_volume_id: String) -> Result<ctl::VolumeEntry, CsiError> {
        Err(unimplemented("ControllerGetVolume"))
    }

    fn expand_volume(_req: ctl::ExpandRequest) -> Result<ctl::Expansion, CsiError> {
        Err(unimplemented("ControllerExpandVolume"))
    }

    fn modify_volume(
        _volume_id: String,
        _mutable_parameters: StringMap,
        _secrets: StringMap,
    ) -> Result<(), CsiError> {
        Err(unimplemented("ControllerModifyVolume"))
    }
}

impl snap::Guest for Plugin {
    fn create_snapshot(_req: snap::CreateSnapshotRequest) -> Result<Snapshot, CsiError> {
        Err(unimplemented("CreateSnapshot"))
    }

    fn delete_snapshot(_snapshot_id: String, _secrets: StringMap) -> Result<(), CsiError> {
        Err(unimplemented("DeleteSnapshot"))
    }

    fn list_snapshots(_req: snap::ListSnapshotsRequest) -> Result<snap::SnapshotPage, CsiError> {
        Err(unimplemented("ListSnapshots"))
    }

    fn get_snapshot(_snapshot_id: String, _secrets: StringMap) -> Result<Snapshot, CsiError> {
        Err(unimplemented("GetSnapshot"))
    }
}

fn plugin_info(driver_name: Option<String>) -> id::PluginInfo {
    id::PluginInfo {
        name: driver_name.unwrap_or_else(|| NAME.to_string()),
        vendor_version: env!("CARGO_PKG_VERSION").to_string(),
        manifest: vec![],
    }
}

fn node_info(node_id: Option<String>) -> Result<nd::NodeInfo, CsiError> {
    let Some(node_id) = node_id.filter(|n| !n.is_empty()) else {
        return Err(CsiError {
            code: ErrorCode::FailedPrecondition,
            message: format!("{NAME}: wasi:config key node-id is not set"),
        });
    };
    Ok(nd::NodeInfo {
        node_id,
        // No limit.
        max_volumes_per_node: 0,
        accessible_topology: None,
    })
}

fn unimplemented(rpc: &str) -> CsiError {
    CsiError {
        code: ErrorCode::Unimplemented,
        message: format!("{NAME}: {rpc} is not implemented"),
    }
}

/// A `wasi:config` value; a missing key is `None`.
fn config(key: &str) -> Result<Option<String>, CsiError> {
    use wasi::config::store::Error;
    wasi::config::store::get(key).map_err(|e| CsiError {
        code: ErrorCode::Internal,
        message: match e {
            Error::Upstream(msg) | Error::Io(msg) => {
                format!("{NAME}: read wasi:config key {key}: {msg}")
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_name_is_the_daemons_or_the_plugins() {
        assert_eq!(
            plugin_info(Some("x.csi.example.com".into())).name,
            "x.csi.example.com"
        );
        assert_eq!(plugin_info(None).name, NAME);
    }

    #[test]
    fn node_info_needs_the_node_id() {
        assert_eq!(node_info(Some("node-1".into())).unwrap().node_id, "node-1");
        let err = node_info(None).unwrap_err();
        assert_eq!(err.code, ErrorCode::FailedPrecondition);
    }

    #[test]
    fn unimplemented_rpcs_say_which() {
        let err = unimplemented("CreateVolume");
        assert_eq!(err.code, ErrorCode::Unimplemented);
        assert_eq!(
            err.message,
            format!("{NAME}: CreateVolume is not implemented")
        );
    }
}
