//! The CSI controller service: volumes, capacity, and (with `attach-required`) attachment.

use std::collections::BTreeMap;

use crate::config::Alpha;
use crate::driver::{Driver, MAX_NAME_BYTES, choose_capacity, page, satisfies, vname_key, vol_key};
use crate::error::{
    already_exists, exhausted, invalid, not_found, out_of_range, precondition, require,
    unimplemented,
};
use crate::exports::wasmgate::plugin::controller::{
    Capacity, CreateVolumeRequest, ExpandRequest, Expansion, GetCapacityRequest,
    ListVolumesRequest, PublishRequest, ValidateRequest, Validation, VolumeEntry, VolumePage,
};
use crate::fsx;
use crate::kv::Kv;
use crate::records::{Source, VolumeRecord};
use crate::wasmgate::plugin::csi_types::{
    AccessType, ControllerCapability, CsiError, StringMap, Volume, VolumeCapability,
};

pub const BLOCK_UNSUPPORTED: &str = "block volumes are not supported";

/// VOLUME_CONDITION and GET_VOLUME are alpha too, but in the spec since 1.3: every client knows
/// them, so only the newer alpha values wait for [`Alpha`].
pub fn capabilities(attach_required: bool, alpha: Alpha) -> Vec<ControllerCapability> {
    use ControllerCapability::*;
    let mut caps = vec![
        CreateDeleteVolume,
        ListVolumes,
        GetCapacity,
        CreateDeleteSnapshot,
        ListSnapshots,
        CloneVolume,
        ExpandVolume,
        GetVolume,
        VolumeCondition,
    ];
    if attach_required {
        caps.extend([PublishUnpublishVolume, ListVolumesPublishedNodes]);
    }
    if alpha.get_snapshot {
        caps.push(GetSnapshot);
    }
    caps
}

pub fn is_block(cap: &VolumeCapability) -> bool {
    matches!(cap.access_type, AccessType::Block)
}

/// Mount access in any mode is fine; raw block is not something a directory can be. `what`
/// names the volume in the message.
pub fn check_capability(cap: &VolumeCapability, what: &str) -> Result<(), CsiError> {
    if is_block(cap) {
        Err(invalid(format!("{what}: {BLOCK_UNSUPPORTED}")))
    } else {
        Ok(())
    }
}

fn to_map(pairs: &StringMap) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

impl<K: Kv> Driver<'_, K> {
    pub fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume, CsiError> {
        let name = req.name.as_str();
        require(name, "volume name")?;
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!(
                "volume name is {} bytes long, more than {MAX_NAME_BYTES}",
                name.len()
            )));
        }
        if req.volume_capabilities.is_empty() {
            return Err(invalid(format!(
                "volume capabilities are required (volume {name:?})"
            )));
        }
        for cap in &req.volume_capabilities {
            check_capability(cap, &format!("volume {name:?}"))?;
        }
        let range = req.capacity_range.as_ref();
        let capacity = choose_capacity(range, &self.cfg).map_err(|e| CsiError {
            code: e.code,
            message: format!("volume {name:?}: {}", e.message),
        })?;
        let source = Source::from_csi(&req.content_source);
        match &source {
            Some(Source::Snapshot(id)) if id.is_empty() => {
                return Err(invalid("content source snapshot id is required"));
            }
            Some(Source::Volume(id)) if id.is_empty() => {
                return Err(invalid("content source volume id is required"));
            }
            _ => {}
        }
        self.slow();

        // Idempotency by name. An unfinished volume under this name (a crash part-way through an
        // earlier attempt) is finished with this request, under the ID already chosen.
        let name_key = vname_key(name);
        let mut resume = None;
        if let Some(id) = self.store.get_text(&name_key)? {
            match self.volume_record(&id)? {
                Some(v) if v.ready => {
                    if !satisfies(v.capacity, range) {
                        return Err(already_exists(format!(
                            "volume {name:?} already exists as {id} with capacity {}, outside the requested range",
                            v.capacity
                        )));
                    }
                    if v.source != source {
                        return Err(already_exists(format!(
                            "volume {name:?} already exists as {id} with a different content source"
                        )));
                    }
                    return Ok(v.to_csi());
                }
                _ => resume = Some(id),
            }
        }

        let copy_from = match &source {
            None => None,
            Some(Source::Snapshot(sid)) => {
                let snap = self
                    .snapshot(sid)?
                    .ok_or_else(|| not_found(format!("source snapshot {sid} not found")))?;
                if snap.size > capacity {
                    return Err(out_of_range(format!(
                        "source snapshot {sid} holds {} bytes, more than the requested capacity {capacity}",
                        snap.size
                    )));
                }
                Some(self.snapshot_dir(sid))
            }
            Some(Source::Volume(vid)) => {
                let src = self
                    .volume(vid)?
                    .ok_or_else(|| not_found(format!("source volume {vid} not found")))?;
                if src.capacity > capacity {
                    return Err(out_of_range(format!(
                        "source volume {vid} has capacity {}, more than the requested capacity {capacity}",
                        src.capacity
                    )));
                }
                Some(self.volume_dir(vid))
            }
        };

        let allocated: i64 = self
            .volume_records()?
            .values()
            .filter(|v| Some(&v.id) != resume.as_ref())
            .map(|v| v.capacity.max(0))
            .fold(0, i64::saturating_add);
        let available = (self.cfg.capacity_bytes - allocated).max(0);
        if capacity > available {
            return Err(exhausted(format!(
                "not enough capacity for volume {name:?}: {capacity} bytes requested, {available} available"
            )));
        }

        // Name first, then the record, then the data: a retry after a crash at any point finds the
        // ID by name and finishes the job.
        let id = match resume {
            Some(id) => id,
            None => {
                let id = self.new_id("vol")?;
                self.store.set_text(&name_key, &id)?;
                id
            }
        };
        let mut rec = VolumeRecord {
            id,
            name: name.to_string(),
            capacity,
            source,
            parameters: to_map(&req.parameters),
            mutable_parameters: to_map(&req.mutable_parameters),
            ready: false,
            ..VolumeRecord::default()
        };
        self.save_volume(&rec)?;
        let dir = self.volume_dir(&rec.id);
        match copy_from {
            Some(from) => {
                let done = fsx::replace_with_copy(&from, &dir)?;
                if done.skipped > 0 {
                    eprintln!(
                        "hostpath-csi: volume {}: skipped {} symlinks or special files while copying {}",
                        rec.id,
                        done.skipped,
                        from.display()
                    );
                }
            }
            None => {
                fsx::remove_tree(&dir)?;
                fsx::ensure_dir(&dir)?;
            }
        }
        rec.ready = true;
        self.save_volume(&rec)?;
        Ok(rec.to_csi())
    }

    pub fn delete_volume(&self, id: &str) -> Result<(), CsiError> {
        require(id, "volume id")?;
        self.slow();
        let Some(v) = self.volume_record(id)? else {
            return Ok(());
        };
        if v.in_use_on_node() {
            let mut uses: Vec<String> = v
                .targets
                .keys()
                .map(|t| format!("published at {t}"))
                .collect();
            uses.extend(v.staged.iter().map(|s| format!("staged at {s}")));
            return Err(precondition(format!(
                "volume {id} is still in use: {}",
                uses.join(", ")
            )));
        }
        // Data, record, name: a crash part-way leaves a record (DeleteVolume is retried) or a name
        // pointing nowhere (a later CreateVolume of that name reuses the ID).
        fsx::remove_tree(&self.volume_dir(id))?;
        self.store.delete(&vol_key(id))?;
        if !v.name.is_empty() {
            let key = vname_key(&v.name);
            if self.store.get_text(&key)?.as_deref() == Some(id) {
                self.store.delete(&key)?;
            }
        }
        Ok(())
    }

    pub fn validate_volume_capabilities(
        &self,
        req: &ValidateRequest,
    ) -> Result<Validation, CsiError> {
        require(&req.volume_id, "volume id")?;
        if req.volume_capabilities.is_empty() {
            return Err(invalid(format!(
                "volume capabilities are required (volume {})",
                req.volume_id
            )));
        }
        self.must_volume(&req.volume_id)?;
        if req.volume_capabilities.iter().any(is_block) {
            return Ok(Validation {
                confirmed: None,
                message: BLOCK_UNSUPPORTED.to_string(),
            });
        }
        Ok(Validation {
            confirmed: Some(req.volume_capabilities.clone()),
            message: String::new(),
        })
    }

    pub fn list_volumes(&self, req: &ListVolumesRequest) -> Result<VolumePage, CsiError> {
        let entries: BTreeMap<String, VolumeEntry> = self
            .volume_records()?
            .into_values()
            .filter(|v| v.ready)
            .map(|v| (v.id.clone(), self.entry(&v)))
            .collect();
        let (entries, next_token) = page(entries, req.max_entries, &req.starting_token)?;
        Ok(VolumePage {
            entries,
            next_token,
        })
    }

    pub fn get_capacity(&self, req: &GetCapacityRequest) -> Result<Capacity, CsiError> {
        let available = if req.volume_capabilities.iter().any(is_block) {
            0
        } else {
            self.available()?
        };
        Ok(Capacity {
            available_capacity: available,
            // Kubernetes' storage capacity tracking prefers this over the available capacity, so
            // it never promises more than is left.
            maximum_volume_size: Some(self.cfg.max_volume_bytes.min(available)),
            minimum_volume_size: None,
        })
    }

    pub fn get_volume(&self, id: &str) -> Result<VolumeEntry, CsiError> {
        require(id, "volume id")?;
        Ok(self.entry(&self.must_volume(id)?))
    }

    pub fn controller_expand(&self, req: &ExpandRequest) -> Result<Expansion, CsiError> {
        require(&req.volume_id, "volume id")?;
        if let Some(cap) = &req.volume_capability {
            check_capability(cap, &format!("volume {}", req.volume_id))?;
        }
        self.slow();
        let mut v = self.must_volume(&req.volume_id)?;
        let capacity = self.grow(
            &mut v,
            req.capacity_range.required_bytes,
            req.capacity_range.limit_bytes,
        )?;
        Ok(Expansion {
            capacity_bytes: capacity,
            node_expansion_required: false,
        })
    }

    /// Grows `v` to `required` bytes; never shrinks. Returns the capacity afterwards.
    pub fn grow(&self, v: &mut VolumeRecord, required: i64, limit: i64) -> Result<i64, CsiError> {
        let id = v.id.clone();
        if required < 0 || limit < 0 {
            return Err(invalid(format!(
                "capacity range for volume {id} must not be negative (required-bytes {required}, limit-bytes {limit})"
            )));
        }
        if limit > 0 && required > limit {
            return Err(invalid(format!(
                "capacity range for volume {id}: required-bytes {required} exceeds limit-bytes {limit}"
            )));
        }
        if required > self.cfg.max_volume_bytes {
            return Err(out_of_range(format!(
                "cannot expand volume {id} to {required} bytes: the maximum volume size is {}",
                self.cfg.max_volume_bytes
            )));
        }
        if required <= v.capacity {
            return Ok(v.capacity);
        }
        let extra = required - v.capacity;
        let available = self.available()?;
        if extra > available {
            return Err(exhausted(format!(
                "cannot expand volume {id} by {extra} bytes: {available} available"
            )));
        }
        v.capacity = required;
        self.save_volume(v)?;
        Ok(required)
    }

    pub fn controller_publish(&self, req: &PublishRequest) -> Result<StringMap, CsiError> {
        if !self.cfg.attach_required {
            return Err(unimplemented(
                "controller publish is not supported: attach-required is false",
            ));
        }
        require(&req.volume_id, "volume id")?;
        require(&req.node_id, "node id")?;
        check_capability(&req.volume_capability, &format!("volume {}", req.volume_id))?;
        self.slow();
        let id = &req.volume_id;
        let node = &req.node_id;
        let mut v = self.must_volume(id)?;
        if *node != self.cfg.node_id {
            return Err(not_found(format!("node {node} not found")));
        }
        match v.published_nodes.get(node) {
            Some(ro) if *ro == req.readonly => return Ok(Vec::new()),
            Some(ro) => {
                return Err(already_exists(format!(
                    "volume {id} is already published to node {node} with readonly={ro}"
                )));
            }
            None => {}
        }
        let max = self.cfg.max_volumes_per_node;
        if max > 0 {
            let attached = self
                .volume_records()?
                .values()
                .filter(|o| o.published_nodes.contains_key(node))
                .count() as i64;
            if attached >= max {
                return Err(exhausted(format!(
                    "cannot publish volume {id}: node {node} already has the maximum of {max} volumes"
                )));
            }
        }
        v.published_nodes.insert(node.clone(), req.readonly);
        self.save_volume(&v)?;
        Ok(Vec::new())
    }

    pub fn controller_unpublish(&self, id: &str, node: &str) -> Result<(), CsiError> {
        if !self.cfg.attach_required {
            return Err(unimplemented(
                "controller unpublish is not supported: attach-required is false",
            ));
        }
        require(id, "volume id")?;
        self.slow();
        let Some(mut v) = self.volume(id)? else {
            return Ok(());
        };
        let changed = if node.is_empty() {
            let any = !v.published_nodes.is_empty();
            v.published_nodes.clear();
            any
        } else {
            v.published_nodes.remove(node).is_some()
        };
        if changed {
            self.save_volume(&v)?;
        }
        Ok(())
    }

    pub fn modify_volume(&self, id: &str) -> Result<(), CsiError> {
        Err(unimplemented(format!(
            "modify volume is not supported (volume {id})"
        )))
    }
}
