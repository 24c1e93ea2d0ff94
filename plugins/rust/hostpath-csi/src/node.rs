//! The CSI node service. Nothing here mounts: stage and publish return a plan that the host checks
//! and carries out, and the host unmounts after unstage and unpublish return.

use std::collections::BTreeMap;

use crate::config::{Config, parse_bytes};
use crate::controller::check_capability;
use crate::driver::{Driver, norm_path, path_safe_id, vol_key};
use crate::error::{
    already_exists, exhausted, invalid, not_found, out_of_range, precondition, require,
};
use crate::exports::wasmgate::plugin::node::{
    ExpandRequest, NodeInfo, PublishRequest, StageRequest, StatsRequest,
};
use crate::fsx;
use crate::kv::Kv;
use crate::records::VolumeRecord;
use crate::wasmgate::plugin::csi_types::{
    AccessMode, CsiError, Mount, MountSource, NodeCapability, VolumeCondition,
};

/// Set by kubelet in the volume context of a CSI inline ephemeral volume.
pub const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
/// An inline volume's optional size attribute, as csi-driver-host-path has it.
pub const SIZE_KEY: &str = "size";

pub fn capabilities() -> Vec<NodeCapability> {
    vec![
        NodeCapability::StageUnstageVolume,
        NodeCapability::GetVolumeStats,
        NodeCapability::ExpandVolume,
        NodeCapability::VolumeCondition,
    ]
}

fn context_value<'c>(context: &'c [(String, String)], key: &str) -> Option<&'c str> {
    context
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// No topology: a hostpath volume lives on the one node that holds the directory, and the CO is
/// told nothing about it, as csi-driver-host-path does without `--enable-topology`.
pub fn node_info(cfg: &Config) -> NodeInfo {
    NodeInfo {
        node_id: cfg.node_id.clone(),
        max_volumes_per_node: cfg.max_volumes_per_node,
        accessible_topology: None,
    }
}

impl<K: Kv> Driver<'_, K> {
    fn bind(&self, v: &VolumeRecord) -> Result<MountSource, CsiError> {
        Ok(MountSource::Bind(
            self.require_data(v)?.display().to_string(),
        ))
    }

    pub fn stage_volume(&self, req: &StageRequest) -> Result<Vec<Mount>, CsiError> {
        let id = req.volume_id.as_str();
        require(id, "volume id")?;
        require(&req.staging_target_path, "staging target path")?;
        check_capability(&req.volume_capability, &format!("volume {id}"))?;
        self.slow();
        let mut v = self.must_volume(id)?;
        let source = self.bind(&v)?;
        if v.staged
            .insert(norm_path(&req.staging_target_path).to_string())
        {
            self.save_volume(&v)?;
        }
        Ok(vec![Mount {
            source,
            target: req.staging_target_path.clone(),
            read_only: false,
            options: Vec::new(),
        }])
    }

    pub fn unstage_volume(&self, id: &str, staging_target_path: &str) -> Result<(), CsiError> {
        require(id, "volume id")?;
        require(staging_target_path, "staging target path")?;
        self.slow();
        let Some(mut v) = self.volume(id)? else {
            return Ok(());
        };
        if v.staged.remove(norm_path(staging_target_path)) {
            self.save_volume(&v)?;
        }
        Ok(())
    }

    pub fn publish_volume(&self, req: &PublishRequest) -> Result<Vec<Mount>, CsiError> {
        let id = req.volume_id.as_str();
        require(id, "volume id")?;
        require(&req.target_path, "target path")?;
        check_capability(&req.volume_capability, &format!("volume {id}"))?;
        self.slow();
        let ephemeral = context_value(&req.volume_context, EPHEMERAL_KEY) == Some("true");
        let mut v = match self.volume_record(id)? {
            Some(v) if v.ready => v,
            unfinished if ephemeral => self.create_ephemeral(req, unfinished)?,
            _ => return Err(not_found(format!("volume {id} not found"))),
        };

        let target = norm_path(&req.target_path).to_string();
        let read_only = req.readonly
            || matches!(
                req.volume_capability.access_mode,
                AccessMode::SingleNodeReaderOnly | AccessMode::MultiNodeReaderOnly
            );
        let source = if !req.staging_target_path.is_empty() && !v.ephemeral {
            let staging = norm_path(&req.staging_target_path);
            if !v.staged.contains(staging) {
                return Err(precondition(format!(
                    "volume {id} is not staged at {}",
                    req.staging_target_path
                )));
            }
            MountSource::Staged
        } else {
            self.bind(&v)?
        };
        match v.targets.get(&target) {
            Some(ro) if *ro == read_only => {}
            Some(ro) => {
                return Err(already_exists(format!(
                    "volume {id} is already published at {target} with readonly={ro}"
                )));
            }
            None => {
                v.targets.insert(target, read_only);
                self.save_volume(&v)?;
            }
        }
        Ok(vec![Mount {
            source,
            target: req.target_path.clone(),
            read_only,
            options: Vec::new(),
        }])
    }

    /// An inline ephemeral volume: made on the spot under kubelet's volume ID, gone after its last
    /// unpublish. `unfinished` is the record of an earlier attempt that did not complete.
    fn create_ephemeral(
        &self,
        req: &PublishRequest,
        unfinished: Option<VolumeRecord>,
    ) -> Result<VolumeRecord, CsiError> {
        let id = req.volume_id.as_str();
        if !path_safe_id(id) {
            return Err(invalid(format!(
                "ephemeral volume id {id:?} cannot name a directory: use at most 128 of [A-Za-z0-9._-], not starting with a dot"
            )));
        }
        let capacity = match context_value(&req.volume_context, SIZE_KEY) {
            None => self.cfg.default_volume_bytes,
            Some(s) => parse_bytes(s)
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(format!("ephemeral volume {id}: invalid size {s:?}")))?,
        };
        if capacity > self.cfg.max_volume_bytes {
            return Err(out_of_range(format!(
                "ephemeral volume {id}: size {capacity} exceeds the maximum volume size {}",
                self.cfg.max_volume_bytes
            )));
        }
        let held = unfinished.as_ref().map_or(0, |v| v.capacity.max(0));
        let available = self.available()? + held;
        if capacity > available {
            return Err(exhausted(format!(
                "not enough capacity for ephemeral volume {id}: {capacity} bytes requested, {available} available"
            )));
        }
        let context: BTreeMap<String, String> = req.volume_context.iter().cloned().collect();
        let mut rec = VolumeRecord {
            id: id.to_string(),
            capacity,
            parameters: context,
            ephemeral: true,
            ready: false,
            ..VolumeRecord::default()
        };
        self.save_volume(&rec)?;
        let dir = self.volume_dir(id);
        fsx::remove_tree(&dir)?;
        fsx::ensure_dir(&dir)?;
        rec.ready = true;
        self.save_volume(&rec)?;
        Ok(rec)
    }

    pub fn unpublish_volume(&self, id: &str, target_path: &str) -> Result<(), CsiError> {
        require(id, "volume id")?;
        require(target_path, "target path")?;
        self.slow();
        let mut v = self.must_volume(id)?;
        if v.targets.remove(norm_path(target_path)).is_none() {
            return Ok(());
        }
        if v.ephemeral && v.targets.is_empty() {
            fsx::remove_tree(&self.volume_dir(id))?;
            self.store.delete(&vol_key(id))?;
            return Ok(());
        }
        self.save_volume(&v)
    }

    pub fn volume_stats(&self, req: &StatsRequest) -> Result<Option<VolumeCondition>, CsiError> {
        let id = req.volume_id.as_str();
        require(id, "volume id")?;
        require(&req.volume_path, "volume path")?;
        let v = self.must_volume(id)?;
        let path = norm_path(&req.volume_path);
        if !v.targets.contains_key(path) && !v.staged.contains(path) {
            return Err(not_found(format!(
                "volume {id} is not published at {}",
                req.volume_path
            )));
        }
        Ok(Some(self.condition(&v)))
    }

    pub fn node_expand(&self, req: &ExpandRequest) -> Result<i64, CsiError> {
        let id = req.volume_id.as_str();
        require(id, "volume id")?;
        require(&req.volume_path, "volume path")?;
        if let Some(cap) = &req.volume_capability {
            check_capability(cap, &format!("volume {id}"))?;
        }
        self.slow();
        let mut v = self.must_volume(id)?;
        self.grow(
            &mut v,
            req.capacity_range.required_bytes,
            req.capacity_range.limit_bytes,
        )
    }
}
