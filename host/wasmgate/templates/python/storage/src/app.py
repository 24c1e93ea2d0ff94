"""`{{name}}`: a wasmgate storage plugin (a CSI driver), a Wasm component of `{{world_id}}`.

The host serves csi.v1 on a unix socket and calls these methods; it checks the required fields
first, and answers UNIMPLEMENTED itself for an RPC whose capability the driver does not
advertise. The plugin never mounts: node stage and publish return a plan of mounts that the host
checks and performs. Its data goes in the one directory it is granted (`/data`), its metadata in
`wasi:keyvalue`. A failure is raised as `Err(CsiError(...))`, which componentize-py turns into
the `err` case of the export's result; any other exception traps.

What it does, as `wasmgate plugin new` wrote it:
- Identity: GetPluginInfo answers the driver name (`wasi:config` key `driver-name`, which the
  daemon sets to its `[csi] driver`; `{{name}}` without it); no capabilities, so no controller
  service; Probe: ready;
- Node: no capabilities; NodeGetInfo answers the node (`wasi:config` key `node-id`, which the
  daemon sets); publish and unpublish are UNIMPLEMENTED until you write them;
- Controller and snapshots: UNIMPLEMENTED (the host refuses them first, as none is advertised).

See wasmgate's `plugins/rust/hostpath-csi` for a complete driver.
"""

from __future__ import annotations

from typing import List, NoReturn, Optional, Tuple

import wit_world.exports
from componentize_py_types import Err
from wit_world.exports import controller, identity, node, snapshots
from wit_world.imports import wasi_config_store
from wit_world.imports.csi_types import (
    ControllerCapability,
    CsiError,
    ErrorCode,
    Mount,
    NodeCapability,
    PluginCapability,
    Snapshot,
    Volume,
    VolumeCondition,
)

NAME = "{{name}}"
#: The vendor version GetPluginInfo reports.
VERSION = "0.1.0"

StringMap = List[Tuple[str, str]]


class Identity(wit_world.exports.Identity):
    def get_plugin_info(self) -> identity.PluginInfo:
        return plugin_info(config("driver-name"))

    def get_plugin_capabilities(self) -> List[PluginCapability]:
        # Add CONTROLLER_SERVICE once the controller RPCs below do something.
        return []

    def probe(self) -> bool:
        return True


class Node(wit_world.exports.Node):
    def get_capabilities(self) -> List[NodeCapability]:
        return []

    def get_info(self) -> node.NodeInfo:
        return node_info(config("node-id"))

    def stage_volume(self, req: node.StageRequest) -> List[Mount]:
        unimplemented("NodeStageVolume")

    def unstage_volume(self, volume_id: str, staging_target_path: str) -> None:
        unimplemented("NodeUnstageVolume")

    def publish_volume(self, req: node.PublishRequest) -> List[Mount]:
        unimplemented("NodePublishVolume")

    def unpublish_volume(self, volume_id: str, target_path: str) -> None:
        unimplemented("NodeUnpublishVolume")

    def get_volume_stats(self, req: node.StatsRequest) -> Optional[VolumeCondition]:
        unimplemented("NodeGetVolumeStats")

    def expand_volume(self, req: node.ExpandRequest) -> int:
        unimplemented("NodeExpandVolume")


class Controller(wit_world.exports.Controller):
    def get_capabilities(self) -> List[ControllerCapability]:
        return []

    def create_volume(self, req: controller.CreateVolumeRequest) -> Volume:
        unimplemented("CreateVolume")

    def delete_volume(self, volume_id: str, secrets: StringMap) -> None:
        unimplemented("DeleteVolume")

    def controller_publish(self, req: controller.PublishRequest) -> StringMap:
        unimplemented("ControllerPublishVolume")

    def controller_unpublish(self, volume_id: str, node_id: str, secrets: StringMap) -> None:
        unimplemented("ControllerUnpublishVolume")

    def validate_volume_capabilities(self, req: controller.ValidateRequest) -> controller.Validation:
        unimplemented("ValidateVolumeCapabilities")

    def list_volumes(self, req: controller.ListVolumesRequest) -> controller.VolumePage:
        unimplemented("ListVolumes")

    def get_capacity(self, req: controller.GetCapacityRequest) -> controller.Capacity:
        unimplemented("GetCapacity")

    def get_volume(self, volume_id: str) -> controller.VolumeEntry:
        unimplemented("ControllerGetVolume")

    def expand_volume(self, req: controller.ExpandRequest) -> controller.Expansion:
        unimplemented("ControllerExpandVolume")

    def modify_volume(
        self, volume_id: str, mutable_parameters: StringMap, secrets: StringMap
    ) -> None:
        unimplemented("ControllerModifyVolume")


class Snapshots(wit_world.exports.Snapshots):
    def create_snapshot(self, req: snapshots.CreateSnapshotRequest) -> Snapshot:
        unimplemented("CreateSnapshot")

    def delete_snapshot(self, snapshot_id: str, secrets: StringMap) -> None:
        unimplemented("DeleteSnapshot")

    def list_snapshots(self, req: snapshots.ListSnapshotsRequest) -> snapshots.SnapshotPage:
        unimplemented("ListSnapshots")

    def get_snapshot(self, snapshot_id: str, secrets: StringMap) -> Snapshot:
        unimplemented("GetSnapshot")


def plugin_info(driver_name: Optional[str]) -> identity.PluginInfo:
    return identity.PluginInfo(
        name=NAME if driver_name is None else driver_name, vendor_version=VERSION, manifest=[]
    )


def node_info(node_id: Optional[str]) -> node.NodeInfo:
    if not node_id:
        raise Err(
            CsiError(
                code=ErrorCode.FAILED_PRECONDITION,
                message=f"{NAME}: wasi:config key node-id is not set",
            )
        )
    # max_volumes_per_node 0: no limit.
    return node.NodeInfo(node_id=node_id, max_volumes_per_node=0, accessible_topology=None)


def unimplemented(rpc: str) -> NoReturn:
    raise Err(CsiError(code=ErrorCode.UNIMPLEMENTED, message=f"{NAME}: {rpc} is not implemented"))


def config(key: str) -> Optional[str]:
    """A `wasi:config` value; a missing key is None."""
    try:
        return wasi_config_store.get(key)
    except Err as e:
        raise Err(
            CsiError(
                code=ErrorCode.INTERNAL,
                message=f"{NAME}: read wasi:config key {key}: {e.value.value}",
            )
        )
