//! csi.v1.Controller.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wasmgate_engine::bindings::csi_controller as wc;
use wasmgate_engine::bindings::csi_snapshots as ws;
use wasmgate_engine::bindings::csi_types::{ContentSource, ControllerCapability as Cap};
use wasmgate_proto::csi::v1 as pb;

use super::{CsiService, ServiceError, convert, required, volume_key};

pub struct Controller(pub Arc<CsiService>);

type Reply<T> = Result<Response<T>, Status>;

/// The spec's banned characters in a volume or snapshot name: control characters other than the
/// common whitespace.
fn check_name(name: &str, field: &str) -> Result<(), ServiceError> {
    required(name, field)?;
    let banned =
        |c: char| matches!(c as u32, 0x00..=0x08 | 0x0B | 0x0C | 0x0E..=0x1F | 0x7F..=0x9F);
    if name.chars().any(banned) {
        return Err(ServiceError::Invalid(format!(
            "{field} contains a control character"
        )));
    }
    Ok(())
}

fn max_entries(n: i32) -> Result<i32, ServiceError> {
    if n < 0 {
        return Err(ServiceError::Invalid(format!(
            "max_entries must not be negative, got {n}"
        )));
    }
    Ok(n)
}

fn status(e: wc::VolumeEntry) -> (pb::Volume, pb::list_volumes_response::VolumeStatus) {
    (
        convert::volume_out(e.volume),
        pb::list_volumes_response::VolumeStatus {
            published_node_ids: e.published_node_ids,
            volume_condition: e.condition.map(convert::condition_out),
        },
    )
}

#[tonic::async_trait]
impl pb::controller_server::Controller for Controller {
    async fn create_volume(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Reply<pb::CreateVolumeResponse> {
        let req = req.into_inner();
        let mut call = self.0.call("CreateVolume", &[("name", &req.name)]);
        let out = async {
            check_name(&req.name, "name")?;
            let caps = convert::capabilities(req.volume_capabilities)?;
            let range = req.capacity_range.map(convert::capacity).transpose()?;
            let source = req.volume_content_source.map(convert::source).transpose()?;
            call.require_controller(Cap::CreateDeleteVolume).await?;
            let mut keys = vec![format!("volume name {}", req.name)];
            match &source {
                Some(ContentSource::Snapshot(_)) => {
                    call.require_controller(Cap::CreateDeleteSnapshot).await?
                }
                Some(ContentSource::Volume(v)) => {
                    call.require_controller(Cap::CloneVolume).await?;
                    keys.push(volume_key(v));
                }
                None => {}
            }
            let _guard = call.lock(&keys)?;
            let wreq = wc::CreateVolumeRequest {
                name: req.name,
                capacity_range: range,
                volume_capabilities: caps,
                parameters: convert::map(req.parameters),
                secrets: convert::map(req.secrets),
                content_source: source,
                accessibility_requirements: req
                    .accessibility_requirements
                    .map(convert::requirement),
                mutable_parameters: convert::map(req.mutable_parameters),
            };
            let v = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_controller()
                        .call_create_volume(s, &wreq)
                        .await
                })
                .await??;
            Ok(pb::CreateVolumeResponse {
                volume: Some(convert::volume_out(v)),
            })
        }
        .await;
        call.finish(out)
    }

    async fn delete_volume(
        &self,
        req: Request<pb::DeleteVolumeRequest>,
    ) -> Reply<pb::DeleteVolumeResponse> {
        let req = req.into_inner();
        let mut call = self
            .0
            .call("DeleteVolume", &[("volume_id", &req.volume_id)]);
        let out = async {
            required(&req.volume_id, "volume_id")?;
            call.require_controller(Cap::CreateDeleteVolume).await?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            let secrets = convert::map(req.secrets);
            call.plugin(async move |p, s| {
                p.wasmgate_plugin_controller()
                    .call_delete_volume(s, &req.volume_id, &secrets)
                    .await
            })
            .await??;
            Ok(pb::DeleteVolumeResponse {})
        }
        .await;
        call.finish(out)
    }

    async fn controller_publish_volume(
        &self,
        req: Request<pb::ControllerPublishVolumeRequest>,
    ) -> Reply<pb::ControllerPublishVolumeResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "ControllerPublishVolume",
            &[("volume_id", &req.volume_id), ("node_id", &req.node_id)],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            required(&req.node_id, "node_id")?;
            let cap = convert::required_capability(req.volume_capability)?;
            call.require_controller(Cap::PublishUnpublishVolume).await?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            let wreq = wc::PublishRequest {
                volume_id: req.volume_id,
                node_id: req.node_id,
                volume_capability: cap,
                readonly: req.readonly,
                secrets: convert::map(req.secrets),
                volume_context: convert::map(req.volume_context),
            };
            let ctx = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_controller()
                        .call_controller_publish(s, &wreq)
                        .await
                })
                .await??;
            Ok(pb::ControllerPublishVolumeResponse {
                publish_context: convert::unmap(ctx),
            })
        }
        .await;
        call.finish(out)
    }

    async fn controller_unpublish_volume(
        &self,
        req: Request<pb::ControllerUnpublishVolumeRequest>,
    ) -> Reply<pb::ControllerUnpublishVolumeResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "ControllerUnpublishVolume",
            &[("volume_id", &req.volume_id), ("node_id", &req.node_id)],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            call.require_controller(Cap::PublishUnpublishVolume).await?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            let secrets = convert::map(req.secrets);
            call.plugin(async move |p, s| {
                p.wasmgate_plugin_controller()
                    .call_controller_unpublish(s, &req.volume_id, &req.node_id, &secrets)
                    .await
            })
            .await??;
            Ok(pb::ControllerUnpublishVolumeResponse {})
        }
        .await;
        call.finish(out)
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<pb::ValidateVolumeCapabilitiesRequest>,
    ) -> Reply<pb::ValidateVolumeCapabilitiesResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "ValidateVolumeCapabilities",
            &[("volume_id", &req.volume_id)],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            let caps = convert::capabilities(req.volume_capabilities)?;
            let wreq = wc::ValidateRequest {
                volume_id: req.volume_id,
                volume_context: convert::map(req.volume_context.clone()),
                volume_capabilities: caps,
                parameters: convert::map(req.parameters.clone()),
                mutable_parameters: convert::map(req.mutable_parameters.clone()),
                secrets: convert::map(req.secrets),
            };
            let v = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_controller()
                        .call_validate_volume_capabilities(s, &wreq)
                        .await
                })
                .await??;
            Ok(pb::ValidateVolumeCapabilitiesResponse {
                confirmed: v.confirmed.map(|caps| {
                    pb::validate_volume_capabilities_response::Confirmed {
                        volume_context: req.volume_context,
                        volume_capabilities: caps
                            .into_iter()
                            .map(convert::capability_out)
                            .collect(),
                        parameters: req.parameters,
                        mutable_parameters: req.mutable_parameters,
                    }
                }),
                message: v.message,
            })
        }
        .await;
        call.finish(out)
    }

    async fn list_volumes(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Reply<pb::ListVolumesResponse> {
        let req = req.into_inner();
        let mut call = self
            .0
            .call("ListVolumes", &[("starting_token", &req.starting_token)]);
        let out = async {
            let wreq = wc::ListVolumesRequest {
                max_entries: max_entries(req.max_entries)?,
                starting_token: req.starting_token,
            };
            call.require_controller(Cap::ListVolumes).await?;
            let page = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_controller()
                        .call_list_volumes(s, &wreq)
                        .await
                })
                .await??;
            Ok(pb::ListVolumesResponse {
                entries: page
                    .entries
                    .into_iter()
                    .map(|e| {
                        let (volume, status) = status(e);
                        pb::list_volumes_response::Entry {
                            volume: Some(volume),
                            status: Some(status),
                        }
                    })
                    .collect(),
                next_token: page.next_token,
            })
        }
        .await;
        call.finish(out)
    }

    async fn get_capacity(
        &self,
        req: Request<pb::GetCapacityRequest>,
    ) -> Reply<pb::GetCapacityResponse> {
        let req = req.into_inner();
        let mut call = self.0.call("GetCapacity", &[]);
        let out = async {
            let caps = req
                .volume_capabilities
                .into_iter()
                .map(convert::capability)
                .collect::<Result<Vec<_>, _>>()?;
            call.require_controller(Cap::GetCapacity).await?;
            let wreq = wc::GetCapacityRequest {
                volume_capabilities: caps,
                parameters: convert::map(req.parameters),
                accessible_topology: req.accessible_topology.map(convert::topology),
            };
            let c = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_controller()
                        .call_get_capacity(s, &wreq)
                        .await
                })
                .await??;
            Ok(pb::GetCapacityResponse {
                available_capacity: c.available_capacity,
                maximum_volume_size: c.maximum_volume_size,
                minimum_volume_size: c.minimum_volume_size,
            })
        }
        .await;
        call.finish(out)
    }

    async fn controller_get_capabilities(
        &self,
        _req: Request<pb::ControllerGetCapabilitiesRequest>,
    ) -> Reply<pb::ControllerGetCapabilitiesResponse> {
        let mut call = self.0.call("ControllerGetCapabilities", &[]);
        let out = async {
            let caps = call.caps().await?;
            Ok(pb::ControllerGetCapabilitiesResponse {
                capabilities: caps
                    .controller
                    .iter()
                    .map(|c| convert::controller_cap(*c))
                    .collect(),
            })
        }
        .await;
        call.finish(out)
    }

    async fn create_snapshot(
        &self,
        req: Request<pb::CreateSnapshotRequest>,
    ) -> Reply<pb::CreateSnapshotResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "CreateSnapshot",
            &[("name", &req.name), ("volume_id", &req.source_volume_id)],
        );
        let out = async {
            check_name(&req.name, "name")?;
            required(&req.source_volume_id, "source_volume_id")?;
            call.require_controller(Cap::CreateDeleteSnapshot).await?;
            let _guard = call.lock(&[
                format!("snapshot name {}", req.name),
                volume_key(&req.source_volume_id),
            ])?;
            let wreq = ws::CreateSnapshotRequest {
                source_volume_id: req.source_volume_id,
                name: req.name,
                secrets: convert::map(req.secrets),
                parameters: convert::map(req.parameters),
            };
            let snap = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_snapshots()
                        .call_create_snapshot(s, &wreq)
                        .await
                })
                .await??;
            Ok(pb::CreateSnapshotResponse {
                snapshot: Some(convert::snapshot_out(snap)),
            })
        }
        .await;
        call.finish(out)
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> Reply<pb::DeleteSnapshotResponse> {
        let req = req.into_inner();
        let mut call = self
            .0
            .call("DeleteSnapshot", &[("snapshot_id", &req.snapshot_id)]);
        let out = async {
            required(&req.snapshot_id, "snapshot_id")?;
            call.require_controller(Cap::CreateDeleteSnapshot).await?;
            let _guard = call.lock(&[format!("snapshot {}", req.snapshot_id)])?;
            let secrets = convert::map(req.secrets);
            call.plugin(async move |p, s| {
                p.wasmgate_plugin_snapshots()
                    .call_delete_snapshot(s, &req.snapshot_id, &secrets)
                    .await
            })
            .await??;
            Ok(pb::DeleteSnapshotResponse {})
        }
        .await;
        call.finish(out)
    }

    async fn get_snapshot(
        &self,
        req: Request<pb::GetSnapshotRequest>,
    ) -> Reply<pb::GetSnapshotResponse> {
        let req = req.into_inner();
        let mut call = self
            .0
            .call("GetSnapshot", &[("snapshot_id", &req.snapshot_id)]);
        let out = async {
            required(&req.snapshot_id, "snapshot_id")?;
            call.require_controller(Cap::GetSnapshot).await?;
            let secrets = convert::map(req.secrets);
            let snap = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_snapshots()
                        .call_get_snapshot(s, &req.snapshot_id, &secrets)
                        .await
                })
                .await??;
            Ok(pb::GetSnapshotResponse {
                snapshot: Some(convert::snapshot_out(snap)),
            })
        }
        .await;
        call.finish(out)
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Reply<pb::ListSnapshotsResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "ListSnapshots",
            &[
                ("snapshot_id", &req.snapshot_id),
                ("volume_id", &req.source_volume_id),
            ],
        );
        let out = async {
            let wreq = ws::ListSnapshotsRequest {
                max_entries: max_entries(req.max_entries)?,
                starting_token: req.starting_token,
                source_volume_id: req.source_volume_id,
                snapshot_id: req.snapshot_id,
                secrets: convert::map(req.secrets),
            };
            call.require_controller(Cap::ListSnapshots).await?;
            let page = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_snapshots()
                        .call_list_snapshots(s, &wreq)
                        .await
                })
                .await??;
            Ok(pb::ListSnapshotsResponse {
                entries: page
                    .entries
                    .into_iter()
                    .map(|s| pb::list_snapshots_response::Entry {
                        snapshot: Some(convert::snapshot_out(s)),
                    })
                    .collect(),
                next_token: page.next_token,
            })
        }
        .await;
        call.finish(out)
    }

    async fn controller_expand_volume(
        &self,
        req: Request<pb::ControllerExpandVolumeRequest>,
    ) -> Reply<pb::ControllerExpandVolumeResponse> {
        let req = req.into_inner();
        let mut call = self
            .0
            .call("ControllerExpandVolume", &[("volume_id", &req.volume_id)]);
        let out = async {
            required(&req.volume_id, "volume_id")?;
            let range = convert::capacity(
                req.capacity_range
                    .ok_or_else(|| ServiceError::Invalid("capacity_range is required".into()))?,
            )?;
            let cap = req.volume_capability.map(convert::capability).transpose()?;
            call.require_controller(Cap::ExpandVolume).await?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            let wreq = wc::ExpandRequest {
                volume_id: req.volume_id,
                capacity_range: range,
                secrets: convert::map(req.secrets),
                volume_capability: cap,
            };
            let e = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_controller()
                        .call_expand_volume(s, &wreq)
                        .await
                })
                .await??;
            Ok(pb::ControllerExpandVolumeResponse {
                capacity_bytes: e.capacity_bytes,
                node_expansion_required: e.node_expansion_required,
            })
        }
        .await;
        call.finish(out)
    }

    async fn controller_get_volume(
        &self,
        req: Request<pb::ControllerGetVolumeRequest>,
    ) -> Reply<pb::ControllerGetVolumeResponse> {
        let req = req.into_inner();
        let mut call = self
            .0
            .call("ControllerGetVolume", &[("volume_id", &req.volume_id)]);
        let out = async {
            required(&req.volume_id, "volume_id")?;
            call.require_controller(Cap::GetVolume).await?;
            let e = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_controller()
                        .call_get_volume(s, &req.volume_id)
                        .await
                })
                .await??;
            let (volume, st) = status(e);
            Ok(pb::ControllerGetVolumeResponse {
                volume: Some(volume),
                status: Some(pb::controller_get_volume_response::VolumeStatus {
                    published_node_ids: st.published_node_ids,
                    volume_condition: st.volume_condition,
                }),
            })
        }
        .await;
        call.finish(out)
    }

    async fn controller_modify_volume(
        &self,
        req: Request<pb::ControllerModifyVolumeRequest>,
    ) -> Reply<pb::ControllerModifyVolumeResponse> {
        let req = req.into_inner();
        let mut call = self
            .0
            .call("ControllerModifyVolume", &[("volume_id", &req.volume_id)]);
        let out = async {
            required(&req.volume_id, "volume_id")?;
            if req.mutable_parameters.is_empty() {
                return Err(ServiceError::Invalid(
                    "mutable_parameters is required".into(),
                ));
            }
            call.require_controller(Cap::ModifyVolume).await?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            let (params, secrets) = (
                convert::map(req.mutable_parameters),
                convert::map(req.secrets),
            );
            call.plugin(async move |p, s| {
                p.wasmgate_plugin_controller()
                    .call_modify_volume(s, &req.volume_id, &params, &secrets)
                    .await
            })
            .await??;
            Ok(pb::ControllerModifyVolumeResponse {})
        }
        .await;
        call.finish(out)
    }
}
