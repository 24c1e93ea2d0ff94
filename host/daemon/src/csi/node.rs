//! csi.v1.Node. Stage and publish carry out the plugin's mount plan; unstage and unpublish undo
//! what the host recorded, whatever the plugin says, so a crash in between never strands a mount.
//! Every path must lie in kubelet's directories ([`super::paths`]), and the host mounts on,
//! unmounts and removes only what it has a record of: a mount point without one is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use wasmgate_effects::{MountContext, validate_mounts};
use wasmgate_engine::DATA_DIR_GUEST;
use wasmgate_engine::bindings::csi_node as wn;
use wasmgate_engine::bindings::csi_types::NodeCapability as Cap;
use wasmgate_proto::csi::v1 as pb;

use super::paths::Area;
use super::{CsiService, ServiceError, convert, required, required_path, volume_key};
use crate::state::{MountKind, MountRecord};

pub struct Node(pub Arc<CsiService>);

type Reply<T> = Result<Response<T>, Status>;

impl CsiService {
    /// Checks the plan, records it, then mounts it; on failure unmounts what it mounted and
    /// forgets the record.
    async fn carry_out(
        &self,
        kind: MountKind,
        volume_id: &str,
        path: &Path,
        readonly: bool,
        plan: Vec<wasmgate_engine::bindings::csi_types::Mount>,
        staging: Option<PathBuf>,
    ) -> Result<(), ServiceError> {
        let ctx = MountContext {
            target_path: (kind == MountKind::Publish).then(|| path.to_path_buf()),
            staging_path: match kind {
                MountKind::Stage => Some(path.to_path_buf()),
                MountKind::Publish => staging,
            },
            grant_guest: DATA_DIR_GUEST.to_string(),
            grant_host: self.grant.clone(),
        };
        let mut mounts = validate_mounts(&convert::mounts(plan), &ctx).inspect_err(
            |e| tracing::error!(plugin = %self.plugin, volume_id, "refused mount plan: {e}"),
        )?;
        // A read-only publish is read-only whatever the plan says.
        if readonly {
            for m in &mut mounts {
                m.read_only = true;
            }
        }
        let rec = MountRecord {
            kind,
            volume_id: volume_id.to_string(),
            plugin: self.plugin.clone(),
            path: path.to_path_buf(),
            readonly,
            mounts: mounts.clone(),
            unpublished: false,
        };
        self.records.put_mount(&rec)?;
        let effects = self.mounts.clone();
        let target = path.to_path_buf();
        let remove_dir = kind == MountKind::Publish;
        let out = tokio::task::spawn_blocking(move || -> Result<(), ServiceError> {
            for m in &mounts {
                // The caller found no foreign mount before the plugin ran; one that came since
                // is refused too, and is not ours to roll back.
                if effects.is_mounted(&m.target)? {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "{} became a mount point the host has no record of; not mounting on it",
                        m.target.display()
                    )));
                }
                if let Err(e) = effects.mount(m) {
                    let _ = effects.unmount(&target, remove_dir);
                    return Err(e.into());
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| ServiceError::Task(e.to_string()))?;
        if out.is_err() {
            self.records.remove_mount(path)?;
        }
        out
    }

    /// Unmounts what the host mounted at `path`, which has a record: a mount there without one
    /// is someone else's and never reaches this. The record stays until the caller is done.
    async fn unmount(&self, path: &Path) -> Result<(), ServiceError> {
        let effects = self.mounts.clone();
        let target = path.to_path_buf();
        tokio::task::spawn_blocking(move || effects.unmount(&target, false))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))??;
        Ok(())
    }

    /// Removes a publish target the host unmounted, then its record. When the directory cannot
    /// go, the record stays, marked unpublished, and the answer says the volume is unpublished
    /// but the directory is left: the plugin has been told, so DeleteVolume is not held up, and
    /// a retry once the directory is empty finishes the job.
    async fn remove_target(&self, rec: &MountRecord) -> Result<(), ServiceError> {
        let effects = self.mounts.clone();
        let target = rec.path.clone();
        let removed = tokio::task::spawn_blocking(move || effects.remove_target(&target))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))?;
        if let Err(e) = removed {
            tracing::error!(plugin = %self.plugin, volume_id = %rec.volume_id, path = ?rec.path, "unpublished, but the target directory stays: {e}");
            if !rec.unpublished {
                self.records.put_mount(&MountRecord {
                    unpublished: true,
                    ..rec.clone()
                })?;
            }
            return Err(ServiceError::FailedPrecondition(format!(
                "volume {} is unpublished and unmounted, but its target path could not be removed: {e}; remove what is left in it and retry",
                rec.volume_id
            )));
        }
        self.records.remove_mount(&rec.path)?;
        Ok(())
    }

    /// The recorded mount at `path`, if any; conflicts are the caller's to judge.
    fn recorded(&self, path: &Path) -> Result<Option<MountRecord>, ServiceError> {
        Ok(self.records.mount(path)?)
    }

    /// FAILED_PRECONDITION when `path` is a mount point the host has no record of. It is
    /// someone else's: mounting on it would hand it to the plugin (a publish from a foreign
    /// staging mount exposes its files), and unmounting it would take it from its owner. Not
    /// ALREADY_EXISTS, which the spec keeps for this volume published there incompatibly.
    async fn refuse_foreign(&self, path: &Path, field: &str) -> Result<(), ServiceError> {
        let effects = self.mounts.clone();
        let target = path.to_path_buf();
        let mounted = tokio::task::spawn_blocking(move || effects.is_mounted(&target))
            .await
            .map_err(|e| ServiceError::Task(e.to_string()))??;
        if mounted {
            return Err(ServiceError::FailedPrecondition(format!(
                "{field} {} is a mount point the host has no record of; it is not this driver's to mount on or unmount",
                path.display()
            )));
        }
        Ok(())
    }
}

fn already_exists(what: String) -> ServiceError {
    ServiceError::Plugin(wasmgate_engine::bindings::csi_types::CsiError {
        code: wasmgate_engine::bindings::csi_types::ErrorCode::AlreadyExists,
        message: what,
    })
}

/// Whether a recorded mount still stands: a record without its mount (a crash before the mount,
/// or someone unmounted it) must be redone, not reported as done.
async fn still_mounted(svc: &CsiService, rec: &MountRecord) -> bool {
    let effects = svc.mounts.clone();
    let path = rec.path.clone();
    tokio::task::spawn_blocking(move || effects.is_mounted(&path).unwrap_or(false))
        .await
        .unwrap_or(false)
}

/// `volume_path` of NodeGetVolumeStats and NodeExpandVolume: only looked at, never mounted on.
/// A relative path (or one climbing with `..`) cannot be where a volume is published, which the
/// spec (and csi-sanity, with `some/path`) calls NOT_FOUND rather than INVALID_ARGUMENT.
fn volume_path(value: &str) -> Result<PathBuf, ServiceError> {
    required(value, "volume_path")?;
    required_path(value, "volume_path").map_err(|_| {
        ServiceError::NotFound(format!(
            "no volume is published at {value:?}: not an absolute path"
        ))
    })
}

fn existing_path(p: &Path, field: &str) -> Result<(), ServiceError> {
    if !crate::blocking::off_worker(|| p.exists()) {
        return Err(ServiceError::NotFound(format!(
            "{field} {} does not exist",
            p.display()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::node_server::Node for Node {
    async fn node_stage_volume(
        &self,
        req: Request<pb::NodeStageVolumeRequest>,
    ) -> Reply<pb::NodeStageVolumeResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "NodeStageVolume",
            &[
                ("volume_id", &req.volume_id),
                ("staging_target_path", &req.staging_target_path),
            ],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            let path = self.0.paths.check(
                &req.staging_target_path,
                "staging_target_path",
                Area::Staging,
            )?;
            let cap = convert::required_capability(req.volume_capability)?;
            call.require_node(Cap::StageUnstageVolume).await?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            match self.0.recorded(&path)? {
                Some(rec) if rec.volume_id != req.volume_id => {
                    return Err(already_exists(format!(
                        "{} already stages volume {}",
                        path.display(),
                        rec.volume_id
                    )));
                }
                Some(rec) => {
                    if still_mounted(&self.0, &rec).await {
                        return Ok(pb::NodeStageVolumeResponse {});
                    }
                }
                None => self.0.refuse_foreign(&path, "staging_target_path").await?,
            }
            let wreq = wn::StageRequest {
                volume_id: req.volume_id.clone(),
                publish_context: convert::map(req.publish_context),
                // The one spelling the host records, so the plugin's records match ours.
                staging_target_path: path.to_string_lossy().into_owned(),
                volume_capability: cap,
                secrets: convert::map(req.secrets),
                volume_context: convert::map(req.volume_context),
            };
            let plan = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_node().call_stage_volume(s, &wreq).await
                })
                .await??;
            self.0
                .carry_out(MountKind::Stage, &req.volume_id, &path, false, plan, None)
                .await?;
            Ok(pb::NodeStageVolumeResponse {})
        }
        .await;
        call.finish(out)
    }

    async fn node_unstage_volume(
        &self,
        req: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Reply<pb::NodeUnstageVolumeResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "NodeUnstageVolume",
            &[
                ("volume_id", &req.volume_id),
                ("staging_target_path", &req.staging_target_path),
            ],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            let path = self.0.paths.check(
                &req.staging_target_path,
                "staging_target_path",
                Area::Staging,
            )?;
            call.require_node(Cap::StageUnstageVolume).await?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            let rec = self.0.recorded(&path)?;
            match &rec {
                // Another volume's staging mount is not this call's to take down.
                Some(rec) if rec.volume_id != req.volume_id => {
                    return Err(ServiceError::NotFound(format!(
                        "staging path {} holds volume {}, not {}",
                        path.display(),
                        rec.volume_id,
                        req.volume_id
                    )));
                }
                // kubelet owns the staging directory; only what was mounted on it goes.
                Some(_) => self.0.unmount(&path).await?,
                // Nothing of ours there: the spec's idempotent success, unless it is a mount.
                None => self.0.refuse_foreign(&path, "staging_target_path").await?,
            }
            let staging = path.to_string_lossy().into_owned();
            call.plugin(async move |p, s| {
                p.wasmgate_plugin_node()
                    .call_unstage_volume(s, &req.volume_id, &staging)
                    .await
            })
            .await??;
            if rec.is_some() {
                self.0.records.remove_mount(&path)?;
            }
            Ok(pb::NodeUnstageVolumeResponse {})
        }
        .await;
        call.finish(out)
    }

    async fn node_publish_volume(
        &self,
        req: Request<pb::NodePublishVolumeRequest>,
    ) -> Reply<pb::NodePublishVolumeResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "NodePublishVolume",
            &[
                ("volume_id", &req.volume_id),
                ("target_path", &req.target_path),
            ],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            let path = self
                .0
                .paths
                .check(&req.target_path, "target_path", Area::Target)?;
            let cap = convert::required_capability(req.volume_capability)?;
            let stages = call.caps().await?.node.contains(&Cap::StageUnstageVolume);
            let staging = if stages && !req.staging_target_path.is_empty() {
                Some(self.0.paths.check(
                    &req.staging_target_path,
                    "staging_target_path",
                    Area::Staging,
                )?)
            } else {
                None
            };
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            if let Some(staging) = &staging {
                match self.0.recorded(staging)? {
                    Some(rec) if rec.kind == MountKind::Stage && rec.volume_id == req.volume_id => {
                    }
                    _ => {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "volume {} is not staged at {}",
                            req.volume_id,
                            staging.display()
                        )));
                    }
                }
            }
            match self.0.recorded(&path)?.filter(|r| !r.unpublished) {
                Some(rec) if rec.volume_id != req.volume_id || rec.readonly != req.readonly => {
                    return Err(already_exists(format!(
                        "{} already publishes volume {} (readonly {})",
                        path.display(),
                        rec.volume_id,
                        rec.readonly
                    )));
                }
                Some(rec) if !rec.mounts.is_empty() => {
                    if still_mounted(&self.0, &rec).await {
                        return Ok(pb::NodePublishVolumeResponse {});
                    }
                }
                // No record, one of a publish cut before it mounted, or only a directory an
                // unpublish left: a mount there is foreign.
                _ => self.0.refuse_foreign(&path, "target_path").await?,
            }
            // Recorded before the plugin runs, so that an unpublish after a crash in between
            // still removes the target; the mounts are filled in once the plan is checked.
            self.0.records.put_mount(&MountRecord {
                kind: MountKind::Publish,
                volume_id: req.volume_id.clone(),
                plugin: self.0.plugin.clone(),
                path: path.clone(),
                readonly: req.readonly,
                mounts: Vec::new(),
                unpublished: false,
            })?;
            let wreq = wn::PublishRequest {
                volume_id: req.volume_id.clone(),
                publish_context: convert::map(req.publish_context),
                staging_target_path: staging
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                target_path: path.to_string_lossy().into_owned(),
                volume_capability: cap,
                readonly: req.readonly,
                secrets: convert::map(req.secrets),
                volume_context: convert::map(req.volume_context),
            };
            let planned = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_node().call_publish_volume(s, &wreq).await
                })
                .await
                .and_then(|r| r.map_err(ServiceError::from));
            let plan = match planned {
                Ok(plan) => plan,
                Err(e) => {
                    self.0.records.remove_mount(&path)?;
                    return Err(e);
                }
            };
            self.0
                .carry_out(
                    MountKind::Publish,
                    &req.volume_id,
                    &path,
                    req.readonly,
                    plan,
                    staging,
                )
                .await?;
            Ok(pb::NodePublishVolumeResponse {})
        }
        .await;
        call.finish(out)
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Reply<pb::NodeUnpublishVolumeResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "NodeUnpublishVolume",
            &[
                ("volume_id", &req.volume_id),
                ("target_path", &req.target_path),
            ],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            let path = self
                .0
                .paths
                .check(&req.target_path, "target_path", Area::Target)?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            let rec = self.0.recorded(&path)?;
            match &rec {
                Some(rec) if rec.volume_id != req.volume_id => {
                    return Err(ServiceError::NotFound(format!(
                        "target path {} holds volume {}, not {}",
                        path.display(),
                        rec.volume_id,
                        req.volume_id
                    )));
                }
                // The plugin was told by an earlier call; only the directory is left to go.
                Some(rec) if rec.unpublished => {
                    self.0.refuse_foreign(&path, "target_path").await?;
                    self.0.remove_target(rec).await?;
                    return Ok(pb::NodeUnpublishVolumeResponse {});
                }
                // Unmount first: an ephemeral volume's data goes with the plugin's unpublish,
                // and must not vanish from under a mount that is still live.
                Some(rec) if !rec.mounts.is_empty() => self.0.unmount(&path).await?,
                // Nothing mounted by us there: the spec's idempotent success, unless it is a
                // mount. A record without mounts is a publish cut before it mounted.
                _ => self.0.refuse_foreign(&path, "target_path").await?,
            }
            let target = path.to_string_lossy().into_owned();
            call.plugin(async move |p, s| {
                p.wasmgate_plugin_node()
                    .call_unpublish_volume(s, &req.volume_id, &target)
                    .await
            })
            .await??;
            // Only what the host made goes: a directory it has no record of is kubelet's.
            if let Some(rec) = &rec {
                self.0.remove_target(rec).await?;
            }
            Ok(pb::NodeUnpublishVolumeResponse {})
        }
        .await;
        call.finish(out)
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Reply<pb::NodeGetVolumeStatsResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "NodeGetVolumeStats",
            &[
                ("volume_id", &req.volume_id),
                ("volume_path", &req.volume_path),
            ],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            let path = volume_path(&req.volume_path)?;
            call.require_node(Cap::GetVolumeStats).await?;
            existing_path(&path, "volume_path")?;
            let wreq = wn::StatsRequest {
                volume_id: req.volume_id,
                volume_path: req.volume_path,
                staging_target_path: req.staging_target_path,
            };
            let condition = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_node()
                        .call_get_volume_stats(s, &wreq)
                        .await
                })
                .await??;
            let effects = self.0.mounts.clone();
            let usage = tokio::task::spawn_blocking(move || effects.usage(&path))
                .await
                .map_err(|e| ServiceError::Task(e.to_string()))??;
            use pb::volume_usage::Unit;
            let u = |available: u64, total: u64, used: u64, unit: Unit| pb::VolumeUsage {
                available: available as i64,
                total: total as i64,
                used: used as i64,
                unit: unit as i32,
            };
            Ok(pb::NodeGetVolumeStatsResponse {
                usage: vec![
                    u(
                        usage.available_bytes,
                        usage.total_bytes,
                        usage.used_bytes,
                        Unit::Bytes,
                    ),
                    u(
                        usage.free_inodes,
                        usage.total_inodes,
                        usage.used_inodes,
                        Unit::Inodes,
                    ),
                ],
                volume_condition: condition.map(convert::condition_out),
            })
        }
        .await;
        call.finish(out)
    }

    async fn node_expand_volume(
        &self,
        req: Request<pb::NodeExpandVolumeRequest>,
    ) -> Reply<pb::NodeExpandVolumeResponse> {
        let req = req.into_inner();
        let mut call = self.0.call(
            "NodeExpandVolume",
            &[
                ("volume_id", &req.volume_id),
                ("volume_path", &req.volume_path),
            ],
        );
        let out = async {
            required(&req.volume_id, "volume_id")?;
            let path = volume_path(&req.volume_path)?;
            let range = req.capacity_range.map(convert::capacity).transpose()?;
            let cap = req.volume_capability.map(convert::capability).transpose()?;
            call.require_node(Cap::ExpandVolume).await?;
            existing_path(&path, "volume_path")?;
            let _guard = call.lock(&[volume_key(&req.volume_id)])?;
            let wreq = wn::ExpandRequest {
                volume_id: req.volume_id,
                volume_path: req.volume_path,
                capacity_range: range.unwrap_or(
                    wasmgate_engine::bindings::csi_types::CapacityRange {
                        required_bytes: 0,
                        limit_bytes: 0,
                    },
                ),
                staging_target_path: req.staging_target_path,
                volume_capability: cap,
                secrets: convert::map(req.secrets),
            };
            let capacity_bytes = call
                .plugin(async move |p, s| {
                    p.wasmgate_plugin_node().call_expand_volume(s, &wreq).await
                })
                .await??;
            Ok(pb::NodeExpandVolumeResponse { capacity_bytes })
        }
        .await;
        call.finish(out)
    }

    async fn node_get_capabilities(
        &self,
        _req: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Reply<pb::NodeGetCapabilitiesResponse> {
        let mut call = self.0.call("NodeGetCapabilities", &[]);
        let out = async {
            let caps = call.caps().await?;
            Ok(pb::NodeGetCapabilitiesResponse {
                capabilities: caps.node.iter().map(|c| convert::node_cap(*c)).collect(),
            })
        }
        .await;
        call.finish(out)
    }

    async fn node_get_info(
        &self,
        _req: Request<pb::NodeGetInfoRequest>,
    ) -> Reply<pb::NodeGetInfoResponse> {
        let mut call = self.0.call("NodeGetInfo", &[]);
        let out = async {
            let info = call
                .plugin(async |p, s| p.wasmgate_plugin_node().call_get_info(s).await)
                .await??;
            Ok(pb::NodeGetInfoResponse {
                node_id: info.node_id,
                max_volumes_per_node: info.max_volumes_per_node,
                accessible_topology: info.accessible_topology.map(convert::topology_out),
            })
        }
        .await;
        call.finish(out)
    }
}
