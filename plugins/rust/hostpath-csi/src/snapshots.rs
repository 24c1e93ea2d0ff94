//! The CSI snapshot RPCs. A snapshot is a full copy of its source volume's tree, so volumes and
//! snapshots can be deleted in any order.

use std::collections::BTreeMap;

use crate::driver::{Driver, MAX_NAME_BYTES, now_secs, page, sname_key, snap_key};
use crate::error::{already_exists, invalid, not_found, require, unimplemented};
use crate::exports::wasmgate::plugin::snapshots::{
    CreateSnapshotRequest, ListSnapshotsRequest, SnapshotPage,
};
use crate::fsx;
use crate::kv::{Kv, SNAP};
use crate::records::SnapshotRecord;
use crate::wasmgate::plugin::csi_types::{CsiError, Snapshot};

impl<K: Kv> Driver<'_, K> {
    pub fn create_snapshot(&self, req: &CreateSnapshotRequest) -> Result<Snapshot, CsiError> {
        let name = req.name.as_str();
        let source = req.source_volume_id.as_str();
        require(name, "snapshot name")?;
        require(source, "source volume id")?;
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!(
                "snapshot name is {} bytes long, more than {MAX_NAME_BYTES}",
                name.len()
            )));
        }
        self.slow();

        let name_key = sname_key(name);
        let mut resume = None;
        if let Some(id) = self.store.get_text(&name_key)? {
            match self.snapshot_record(&id)? {
                Some(s) if s.ready => {
                    if s.source_volume_id != source {
                        return Err(already_exists(format!(
                            "snapshot {name:?} already exists as {id} of volume {}, not of volume {source}",
                            s.source_volume_id
                        )));
                    }
                    return Ok(s.to_csi());
                }
                _ => resume = Some(id),
            }
        }
        let volume = self
            .volume(source)?
            .ok_or_else(|| not_found(format!("source volume {source} not found")))?;

        let id = match resume {
            Some(id) => id,
            None => {
                let id = self.new_id("snap")?;
                self.store.set_text(&name_key, &id)?;
                id
            }
        };
        let mut rec = SnapshotRecord {
            id,
            name: name.to_string(),
            source_volume_id: source.to_string(),
            size: volume.capacity,
            creation_time: now_secs(),
            ready: false,
        };
        self.save_snapshot(&rec)?;
        let from = self.require_data(&volume)?;
        let done = fsx::replace_with_copy(&from, &self.snapshot_dir(&rec.id))?;
        if done.skipped > 0 {
            eprintln!(
                "hostpath-csi: snapshot {}: skipped {} symlinks or special files of volume {source}",
                rec.id, done.skipped
            );
        }
        rec.ready = true;
        self.save_snapshot(&rec)?;
        Ok(rec.to_csi())
    }

    pub fn delete_snapshot(&self, id: &str) -> Result<(), CsiError> {
        require(id, "snapshot id")?;
        self.slow();
        let Some(s) = self.snapshot_record(id)? else {
            return Ok(());
        };
        fsx::remove_tree(&self.snapshot_dir(id))?;
        self.store.delete(&snap_key(id))?;
        let key = sname_key(&s.name);
        if self.store.get_text(&key)?.as_deref() == Some(id) {
            self.store.delete(&key)?;
        }
        Ok(())
    }

    pub fn list_snapshots(&self, req: &ListSnapshotsRequest) -> Result<SnapshotPage, CsiError> {
        let source = req.source_volume_id.as_str();
        let wanted =
            |s: &SnapshotRecord| s.ready && (source.is_empty() || s.source_volume_id == source);
        let records: Vec<SnapshotRecord> = if req.snapshot_id.is_empty() {
            self.store
                .values_with_prefix::<SnapshotRecord>(SNAP)?
                .into_iter()
                .map(|(_, s)| s)
                .collect()
        } else {
            // An unknown ID is an empty list, not an error.
            self.snapshot_record(&req.snapshot_id)?
                .into_iter()
                .collect()
        };
        let items: BTreeMap<String, Snapshot> = records
            .iter()
            .filter(|s| wanted(s))
            .map(|s| (s.id.clone(), s.to_csi()))
            .collect();
        let (entries, next_token) = page(items, req.max_entries, &req.starting_token)?;
        Ok(SnapshotPage {
            entries,
            next_token,
        })
    }

    pub fn get_snapshot(&self, id: &str) -> Result<Snapshot, CsiError> {
        // The host refuses it too while GET_SNAPSHOT is not advertised; the stock wasmtime CLI
        // does not.
        if !self.cfg.alpha.get_snapshot {
            return Err(unimplemented(
                "get snapshot is not enabled: alpha-capabilities does not list get-snapshot",
            ));
        }
        require(id, "snapshot id")?;
        self.snapshot(id)?
            .map(|s| s.to_csi())
            .ok_or_else(|| not_found(format!("snapshot {id} not found")))
    }
}
