//! The state every RPC shares: the metadata store, the settings and the data root, plus the
//! helpers that more than one service needs (records, paging, capacity, conditions).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::error::{aborted, internal, invalid, not_found, out_of_range};
use crate::exports::wasmgate::plugin::controller::VolumeEntry;
use crate::fsx;
use crate::kv::{Kv, SEQ, SNAME, SNAP, Store, VNAME, VOL, escape};
use crate::records::{SnapshotRecord, VolumeRecord};
use crate::wasmgate::plugin::csi_types::{CapacityRange, CsiError, VolumeCondition};

/// The directory the host grants, as the guest sees it.
pub const DATA_ROOT: &str = "/data";
/// IDs and names are capped at 128 bytes by CSI's conventions; names get a generous margin.
pub const MAX_ID_BYTES: usize = 128;
pub const MAX_NAME_BYTES: usize = 1024;

pub struct Driver<'a, K: Kv> {
    pub store: Store<'a, K>,
    pub cfg: Config,
    pub root: PathBuf,
}

pub fn vol_key(id: &str) -> String {
    format!("{VOL}{}", escape(id))
}

pub fn vname_key(name: &str) -> String {
    format!("{VNAME}{}", escape(name))
}

pub fn snap_key(id: &str) -> String {
    format!("{SNAP}{}", escape(id))
}

pub fn sname_key(name: &str) -> String {
    format!("{SNAME}{}", escape(name))
}

/// Whether `id` can name a directory as is: what this plugin generates, and what kubelet
/// generates for inline ephemeral volumes (`csi-<sha256>`).
pub fn path_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Paths as the CO sends them, minus trailing slashes, so `/a/b/` and `/a/b` match.
pub fn norm_path(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() && !path.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// The capacity a CreateVolume gets: `required` when set, else the default capped at `limit`.
pub fn choose_capacity(range: Option<&CapacityRange>, cfg: &Config) -> Result<i64, CsiError> {
    let (required, limit) = range.map_or((0, 0), |r| (r.required_bytes, r.limit_bytes));
    if required < 0 || limit < 0 {
        return Err(invalid(format!(
            "capacity range must not be negative (required-bytes {required}, limit-bytes {limit})"
        )));
    }
    if limit > 0 && required > limit {
        return Err(invalid(format!(
            "capacity range: required-bytes {required} exceeds limit-bytes {limit}"
        )));
    }
    let capacity = if required > 0 {
        required
    } else if limit > 0 {
        cfg.default_volume_bytes.min(limit)
    } else {
        cfg.default_volume_bytes
    };
    if capacity > cfg.max_volume_bytes {
        return Err(out_of_range(format!(
            "requested capacity {capacity} exceeds the maximum volume size {}",
            cfg.max_volume_bytes
        )));
    }
    Ok(capacity)
}

/// Whether an existing capacity satisfies a request's range.
pub fn satisfies(capacity: i64, range: Option<&CapacityRange>) -> bool {
    match range {
        None => true,
        Some(r) => {
            (r.required_bytes <= 0 || capacity >= r.required_bytes)
                && (r.limit_bytes <= 0 || capacity <= r.limit_bytes)
        }
    }
}

/// A page token: the last ID of the page and a checksum, so that a token we never issued is
/// refused (`aborted`) rather than silently read as a position. Continuing *after an ID* rather
/// than at an index means deleting volumes of earlier pages skips nothing, and volumes created
/// since show up if their IDs sort later (new IDs always do).
pub fn make_token(last_id: &str) -> String {
    format!("{last_id}~{:08x}", fnv32(last_id))
}

pub fn parse_token(token: &str) -> Result<Option<String>, CsiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        aborted(format!(
            "invalid starting token {token:?}: not issued by this plugin"
        ))
    };
    let (id, sum) = token.rsplit_once('~').ok_or_else(bad)?;
    if id.is_empty() || sum != format!("{:08x}", fnv32(id)) {
        return Err(bad());
    }
    Ok(Some(id.to_string()))
}

fn fnv32(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in b"hostpath-csi/token/".iter().chain(s.as_bytes()) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// One page of `items` (sorted by ID): at most `max_entries` (0: all) after the token's ID.
pub fn page<T>(
    items: BTreeMap<String, T>,
    max_entries: i32,
    token: &str,
) -> Result<(Vec<T>, String), CsiError> {
    if max_entries < 0 {
        return Err(invalid(format!(
            "max-entries must not be negative, got {max_entries}"
        )));
    }
    let after = parse_token(token)?;
    let mut rest: Vec<(String, T)> = items
        .into_iter()
        .filter(|(id, _)| after.as_ref().is_none_or(|a| id > a))
        .collect();
    let max = if max_entries == 0 {
        usize::MAX
    } else {
        max_entries as usize
    };
    let next = if rest.len() > max {
        rest.truncate(max);
        make_token(&rest[max - 1].0)
    } else {
        String::new()
    };
    Ok((rest.into_iter().map(|(_, v)| v).collect(), next))
}

impl<'a, K: Kv> Driver<'a, K> {
    pub fn new(kv: &'a K, cfg: Config, root: impl Into<PathBuf>) -> Self {
        Driver {
            store: Store::new(kv),
            cfg,
            root: root.into(),
        }
    }

    /// The simulated backend latency, at the start of every mutating call.
    pub fn slow(&self) {
        if !self.cfg.latency.is_zero() {
            std::thread::sleep(self.cfg.latency);
        }
    }

    pub fn volume_dir(&self, id: &str) -> PathBuf {
        self.root.join("volumes").join(id)
    }

    pub fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    /// A fresh ID, `<prefix>-<12 digits>`, from the shared counter.
    pub fn new_id(&self, prefix: &str) -> Result<String, CsiError> {
        Ok(format!("{prefix}-{:012}", self.store.increment(SEQ)?))
    }

    /// The volume's record, finished or not.
    /// Only path-safe IDs are ever stored, so any other ID is simply unknown.
    pub fn volume_record(&self, id: &str) -> Result<Option<VolumeRecord>, CsiError> {
        if !path_safe_id(id) {
            return Ok(None);
        }
        self.store.get_json(&vol_key(id))
    }

    /// A finished volume.
    pub fn volume(&self, id: &str) -> Result<Option<VolumeRecord>, CsiError> {
        Ok(self.volume_record(id)?.filter(|v| v.ready))
    }

    pub fn must_volume(&self, id: &str) -> Result<VolumeRecord, CsiError> {
        self.volume(id)?
            .ok_or_else(|| not_found(format!("volume {id} not found")))
    }

    pub fn save_volume(&self, v: &VolumeRecord) -> Result<(), CsiError> {
        self.store.set_json(&vol_key(&v.id), v)
    }

    /// Every volume record, finished or not, by ID.
    pub fn volume_records(&self) -> Result<BTreeMap<String, VolumeRecord>, CsiError> {
        Ok(self
            .store
            .values_with_prefix::<VolumeRecord>(VOL)?
            .into_iter()
            .map(|(_, v)| (v.id.clone(), v))
            .collect())
    }

    /// Bytes promised to volumes, unfinished ones included.
    pub fn allocated(&self) -> Result<i64, CsiError> {
        Ok(self
            .volume_records()?
            .values()
            .map(|v| v.capacity.max(0))
            .fold(0i64, i64::saturating_add))
    }

    pub fn available(&self) -> Result<i64, CsiError> {
        Ok((self.cfg.capacity_bytes - self.allocated()?).max(0))
    }

    pub fn snapshot_record(&self, id: &str) -> Result<Option<SnapshotRecord>, CsiError> {
        if !path_safe_id(id) {
            return Ok(None);
        }
        self.store.get_json(&snap_key(id))
    }

    pub fn snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>, CsiError> {
        Ok(self.snapshot_record(id)?.filter(|s| s.ready))
    }

    pub fn save_snapshot(&self, s: &SnapshotRecord) -> Result<(), CsiError> {
        self.store.set_json(&snap_key(&s.id), s)
    }

    /// Healthy while the data directory exists.
    pub fn condition(&self, v: &VolumeRecord) -> VolumeCondition {
        let dir = self.volume_dir(&v.id);
        if fsx::is_dir(&dir) {
            VolumeCondition {
                abnormal: false,
                message: String::new(),
            }
        } else {
            VolumeCondition {
                abnormal: true,
                message: format!(
                    "volume {} data directory {} is missing",
                    v.id,
                    dir.display()
                ),
            }
        }
    }

    pub fn entry(&self, v: &VolumeRecord) -> VolumeEntry {
        VolumeEntry {
            volume: v.to_csi(),
            published_node_ids: v.published_nodes.keys().cloned().collect(),
            condition: Some(self.condition(v)),
        }
    }

    /// Checks that the directory of a volume about to be handed out exists.
    pub fn require_data(&self, v: &VolumeRecord) -> Result<PathBuf, CsiError> {
        let dir = self.volume_dir(&v.id);
        if fsx::is_dir(&dir) {
            Ok(dir)
        } else {
            Err(internal(format!(
                "volume {} data directory {} is missing",
                v.id,
                dir.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_forgeries() {
        let t = make_token("vol-000000000002");
        assert_eq!(
            parse_token(&t).unwrap().as_deref(),
            Some("vol-000000000002")
        );
        assert_eq!(parse_token("").unwrap(), None);
        for bad in ["invalid-token", "vol-000000000002~00000000", "~", "12"] {
            let e = parse_token(bad).unwrap_err();
            assert_eq!(
                e.code,
                crate::wasmgate::plugin::csi_types::ErrorCode::Aborted
            );
        }
    }

    #[test]
    fn ids_that_can_name_a_directory() {
        assert!(path_safe_id("vol-000000000001"));
        assert!(path_safe_id(
            "csi-8ee9b0c7f5d3e4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829"
        ));
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(129),
        ] {
            assert!(!path_safe_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_compare_without_trailing_slashes() {
        assert_eq!(norm_path("/a/b/"), "/a/b");
        assert_eq!(norm_path("/"), "/");
        assert_eq!(norm_path(""), "");
    }
}
