//! csi.v1 messages to the storage world's records and back. Requests are checked on the way in:
//! whatever reaches a plugin is well-formed.

use std::collections::HashMap;

use wasmgate_engine::bindings::csi_types as wit;
use wasmgate_proto::csi::v1 as pb;

use super::error::ServiceError;

/// WIT enum cases in csi.v1 order, without UNKNOWN = 0: a case's wire value is its index + 1.
const ACCESS_MODES: [wit::AccessMode; 7] = [
    wit::AccessMode::SingleNodeWriter,
    wit::AccessMode::SingleNodeReaderOnly,
    wit::AccessMode::MultiNodeReaderOnly,
    wit::AccessMode::MultiNodeSingleWriter,
    wit::AccessMode::MultiNodeMultiWriter,
    wit::AccessMode::SingleNodeSingleWriter,
    wit::AccessMode::SingleNodeMultiWriter,
];

const CONTROLLER_CAPS: [wit::ControllerCapability; 15] = [
    wit::ControllerCapability::CreateDeleteVolume,
    wit::ControllerCapability::PublishUnpublishVolume,
    wit::ControllerCapability::ListVolumes,
    wit::ControllerCapability::GetCapacity,
    wit::ControllerCapability::CreateDeleteSnapshot,
    wit::ControllerCapability::ListSnapshots,
    wit::ControllerCapability::CloneVolume,
    wit::ControllerCapability::PublishReadonly,
    wit::ControllerCapability::ExpandVolume,
    wit::ControllerCapability::ListVolumesPublishedNodes,
    wit::ControllerCapability::VolumeCondition,
    wit::ControllerCapability::GetVolume,
    wit::ControllerCapability::SingleNodeMultiWriter,
    wit::ControllerCapability::ModifyVolume,
    wit::ControllerCapability::GetSnapshot,
];

const NODE_CAPS: [wit::NodeCapability; 6] = [
    wit::NodeCapability::StageUnstageVolume,
    wit::NodeCapability::GetVolumeStats,
    wit::NodeCapability::ExpandVolume,
    wit::NodeCapability::VolumeCondition,
    wit::NodeCapability::SingleNodeMultiWriter,
    wit::NodeCapability::VolumeMountGroup,
];

fn wire<T: PartialEq>(table: &[T], v: &T) -> i32 {
    table
        .iter()
        .position(|c| c == v)
        .map_or(0, |i| i as i32 + 1)
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(msg.into())
}

/// Maps in key order, so a plugin sees the same list for the same map.
pub fn map(m: HashMap<String, String>) -> wit::StringMap {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort();
    v
}

pub fn unmap(m: wit::StringMap) -> HashMap<String, String> {
    m.into_iter().collect()
}

pub fn capability(c: pb::VolumeCapability) -> Result<wit::VolumeCapability, ServiceError> {
    use pb::volume_capability::AccessType;
    let access_type = match c.access_type {
        Some(AccessType::Block(_)) => wit::AccessType::Block,
        Some(AccessType::Mount(m)) => wit::AccessType::Mount(wit::MountVolume {
            fs_type: m.fs_type,
            mount_flags: m.mount_flags,
            volume_mount_group: m.volume_mount_group,
        }),
        None => {
            return Err(invalid(
                "volume capability needs an access type (mount or block)",
            ));
        }
    };
    let mode = c.access_mode.map(|m| m.mode).unwrap_or(0);
    let access_mode = usize::try_from(mode)
        .ok()
        .and_then(|m| m.checked_sub(1))
        .and_then(|i| ACCESS_MODES.get(i).copied())
        .ok_or_else(|| {
            invalid(format!(
                "volume capability needs a known access mode, got {mode}"
            ))
        })?;
    Ok(wit::VolumeCapability {
        access_type,
        access_mode,
    })
}

pub fn capabilities(
    caps: Vec<pb::VolumeCapability>,
) -> Result<Vec<wit::VolumeCapability>, ServiceError> {
    if caps.is_empty() {
        return Err(invalid("volume_capabilities is required"));
    }
    caps.into_iter().map(capability).collect()
}

pub fn required_capability(
    c: Option<pb::VolumeCapability>,
) -> Result<wit::VolumeCapability, ServiceError> {
    capability(c.ok_or_else(|| invalid("volume_capability is required"))?)
}

pub fn capability_out(c: wit::VolumeCapability) -> pb::VolumeCapability {
    use pb::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    pb::VolumeCapability {
        access_type: Some(match c.access_type {
            wit::AccessType::Block => AccessType::Block(BlockVolume {}),
            wit::AccessType::Mount(m) => AccessType::Mount(MountVolume {
                fs_type: m.fs_type,
                mount_flags: m.mount_flags,
                volume_mount_group: m.volume_mount_group,
            }),
        }),
        access_mode: Some(AccessMode {
            mode: wire(&ACCESS_MODES, &c.access_mode),
        }),
    }
}

pub fn capacity(r: pb::CapacityRange) -> Result<wit::CapacityRange, ServiceError> {
    if r.required_bytes < 0 || r.limit_bytes < 0 {
        return Err(invalid("capacity_range must not be negative"));
    }
    if r.limit_bytes != 0 && r.required_bytes > r.limit_bytes {
        return Err(invalid(format!(
            "capacity_range required_bytes {} exceeds limit_bytes {}",
            r.required_bytes, r.limit_bytes
        )));
    }
    Ok(wit::CapacityRange {
        required_bytes: r.required_bytes,
        limit_bytes: r.limit_bytes,
    })
}

pub fn topology(t: pb::Topology) -> wit::Topology {
    wit::Topology {
        segments: map(t.segments),
    }
}

pub fn topology_out(t: wit::Topology) -> pb::Topology {
    pb::Topology {
        segments: unmap(t.segments),
    }
}

pub fn requirement(t: pb::TopologyRequirement) -> wit::TopologyRequirement {
    wit::TopologyRequirement {
        requisite: t.requisite.into_iter().map(topology).collect(),
        preferred: t.preferred.into_iter().map(topology).collect(),
    }
}

pub fn source(s: pb::VolumeContentSource) -> Result<wit::ContentSource, ServiceError> {
    use pb::volume_content_source::Type;
    match s.r#type {
        Some(Type::Snapshot(s)) if !s.snapshot_id.is_empty() => {
            Ok(wit::ContentSource::Snapshot(s.snapshot_id))
        }
        Some(Type::Volume(v)) if !v.volume_id.is_empty() => {
            Ok(wit::ContentSource::Volume(v.volume_id))
        }
        _ => Err(invalid(
            "volume_content_source needs a snapshot_id or a volume_id",
        )),
    }
}

pub fn source_out(s: wit::ContentSource) -> pb::VolumeContentSource {
    use pb::volume_content_source::{SnapshotSource, Type, VolumeSource};
    pb::VolumeContentSource {
        r#type: Some(match s {
            wit::ContentSource::Snapshot(snapshot_id) => {
                Type::Snapshot(SnapshotSource { snapshot_id })
            }
            wit::ContentSource::Volume(volume_id) => Type::Volume(VolumeSource { volume_id }),
        }),
    }
}

pub fn volume_out(v: wit::Volume) -> pb::Volume {
    pb::Volume {
        capacity_bytes: v.capacity_bytes,
        volume_id: v.volume_id,
        volume_context: unmap(v.volume_context),
        content_source: v.content_source.map(source_out),
        accessible_topology: v
            .accessible_topology
            .into_iter()
            .map(topology_out)
            .collect(),
    }
}

pub fn condition_out(c: wit::VolumeCondition) -> pb::VolumeCondition {
    pb::VolumeCondition {
        abnormal: c.abnormal,
        message: c.message,
    }
}

pub fn snapshot_out(s: wit::Snapshot) -> pb::Snapshot {
    pb::Snapshot {
        size_bytes: s.size_bytes,
        snapshot_id: s.snapshot_id,
        source_volume_id: s.source_volume_id,
        creation_time: Some(prost_types::Timestamp {
            seconds: s.creation_time,
            nanos: 0,
        }),
        ready_to_use: s.ready_to_use,
        ..Default::default()
    }
}

pub fn plugin_cap(c: wit::PluginCapability) -> pb::PluginCapability {
    use pb::plugin_capability::{Service, Type, VolumeExpansion, service, volume_expansion};
    let t = match c {
        wit::PluginCapability::ControllerService => Type::Service(Service {
            r#type: service::Type::ControllerService as i32,
        }),
        wit::PluginCapability::VolumeAccessibilityConstraints => Type::Service(Service {
            r#type: service::Type::VolumeAccessibilityConstraints as i32,
        }),
        wit::PluginCapability::GroupControllerService => Type::Service(Service {
            r#type: service::Type::GroupControllerService as i32,
        }),
        wit::PluginCapability::SnapshotMetadataService => Type::Service(Service {
            r#type: service::Type::SnapshotMetadataService as i32,
        }),
        wit::PluginCapability::OnlineExpansion => Type::VolumeExpansion(VolumeExpansion {
            r#type: volume_expansion::Type::Online as i32,
        }),
        wit::PluginCapability::OfflineExpansion => Type::VolumeExpansion(VolumeExpansion {
            r#type: volume_expansion::Type::Offline as i32,
        }),
    };
    pb::PluginCapability { r#type: Some(t) }
}

pub fn controller_cap(c: wit::ControllerCapability) -> pb::ControllerServiceCapability {
    use pb::controller_service_capability::{Rpc, Type};
    pb::ControllerServiceCapability {
        r#type: Some(Type::Rpc(Rpc {
            r#type: wire(&CONTROLLER_CAPS, &c),
        })),
    }
}

pub fn node_cap(c: wit::NodeCapability) -> pb::NodeServiceCapability {
    use pb::node_service_capability::{Rpc, Type};
    pb::NodeServiceCapability {
        r#type: Some(Type::Rpc(Rpc {
            r#type: wire(&NODE_CAPS, &c),
        })),
    }
}

/// The plugin's mount plan, in the effects crate's terms.
pub fn mounts(plan: Vec<wit::Mount>) -> Vec<wasmgate_effects::MountRequest> {
    use wasmgate_effects::RequestSource;
    plan.into_iter()
        .map(|m| wasmgate_effects::MountRequest {
            source: match m.source {
                wit::MountSource::Bind(p) => RequestSource::Bind(p),
                wit::MountSource::Staged => RequestSource::Staged,
                wit::MountSource::Tmpfs(size) => RequestSource::Tmpfs(size),
            },
            target: m.target.into(),
            read_only: m.read_only,
            options: m.options,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_tables_follow_the_wire_numbers() {
        use pb::controller_service_capability::rpc::Type as C;
        use pb::node_service_capability::rpc::Type as N;
        use pb::volume_capability::access_mode::Mode;
        assert_eq!(
            wire(&ACCESS_MODES, &wit::AccessMode::SingleNodeWriter),
            Mode::SingleNodeWriter as i32
        );
        assert_eq!(
            wire(&ACCESS_MODES, &wit::AccessMode::SingleNodeMultiWriter),
            Mode::SingleNodeMultiWriter as i32
        );
        assert_eq!(
            wire(&CONTROLLER_CAPS, &wit::ControllerCapability::GetVolume),
            C::GetVolume as i32
        );
        assert_eq!(
            wire(&CONTROLLER_CAPS, &wit::ControllerCapability::GetSnapshot),
            C::GetSnapshot as i32
        );
        assert_eq!(
            wire(&NODE_CAPS, &wit::NodeCapability::VolumeMountGroup),
            N::VolumeMountGroup as i32
        );
        assert_eq!(
            wire(&NODE_CAPS, &wit::NodeCapability::StageUnstageVolume),
            N::StageUnstageVolume as i32
        );
    }

    #[test]
    fn capabilities_are_checked_on_the_way_in() {
        let no_type = pb::VolumeCapability {
            access_type: None,
            access_mode: Some(pb::volume_capability::AccessMode { mode: 1 }),
        };
        assert!(matches!(capability(no_type), Err(ServiceError::Invalid(_))));
        let unknown = capability_out(wit::VolumeCapability {
            access_type: wit::AccessType::Block,
            access_mode: wit::AccessMode::SingleNodeWriter,
        });
        let mut bad = unknown.clone();
        bad.access_mode = Some(pb::volume_capability::AccessMode { mode: 0 });
        assert!(matches!(capability(bad), Err(ServiceError::Invalid(_))));
        let back = capability(unknown).unwrap();
        assert_eq!(back.access_mode, wit::AccessMode::SingleNodeWriter);
        assert!(capabilities(vec![]).is_err());
        assert!(
            capacity(pb::CapacityRange {
                required_bytes: -1,
                limit_bytes: 0
            })
            .is_err()
        );
        assert!(
            capacity(pb::CapacityRange {
                required_bytes: 10,
                limit_bytes: 5
            })
            .is_err()
        );
    }
}
