//! What the host itself has done, kept crash-safely so a DEL (even one replayed from the queue
//! after a crash) undoes exactly what the ADD built, whatever the plugin says.
//!
//! The record is written *before* the effect is applied: after a crash between the two, DEL still
//! finds it and removal is idempotent, so nothing leaks on the host.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, TableError};

use crate::blocking::off_worker;
use serde::{Deserialize, Serialize};
use wasmgate_cni::plan::{Attachment, Target};
use wasmgate_effects::Applied;

const ATTACHMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("cni.attachments");
/// Attachments whose DEL has been answered but whose interfaces the kernel is still destroying,
/// by host veth name. Finished on the next start if the daemon dies first.
const TEARDOWN: TableDefinition<&str, &[u8]> = TableDefinition::new("cni.teardown");

/// Mounts the host made for CSI, by target (publish) or staging path (stage). Written before the
/// mount, so an unpublish after a crash still finds what to undo.
const CSI_MOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("csi.mounts");

#[derive(Debug, thiserror::Error)]
#[error("host state: {0}")]
pub struct StateError(String);

fn err(e: impl std::fmt::Display) -> StateError {
    StateError(e.to_string())
}

/// One applied attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub network: String,
    pub container_id: String,
    pub plugin: String,
    pub target: Target,
    pub attachment: Attachment,
    /// What the kernel built (ifindexes and MACs of both veth ends), so that DEL removes that and
    /// nothing else. Absent until the ADD has built it, and in records of older versions.
    #[serde(default)]
    pub built: Option<Applied>,
}

impl Record {
    pub fn key(network: &str, container_id: &str, ifname: &str) -> String {
        format!("{network}/{container_id}/{ifname}")
    }
}

pub struct Records {
    db: Database,
}

impl Records {
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        Ok(Self {
            db: Database::create(path).map_err(err)?,
        })
    }

    /// Runs `f` on `table` in a read transaction; a table never written to reads as `empty`.
    fn read<R>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        empty: R,
        f: impl FnOnce(&redb::ReadOnlyTable<&str, &[u8]>) -> Result<R, StateError>,
    ) -> Result<R, StateError> {
        let txn = self.db.begin_read().map_err(err)?;
        match txn.open_table(table) {
            Ok(t) => f(&t),
            Err(TableError::TableDoesNotExist(_)) => Ok(empty),
            Err(e) => Err(err(e)),
        }
    }

    pub fn get(&self, key: &str) -> Result<Option<Record>, StateError> {
        self.read(ATTACHMENTS, None, |t| match t.get(key).map_err(err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
            None => Ok(None),
        })
    }

    /// Inserts `rec` unless its key is taken; returns false when it was.
    pub fn insert_new(&self, rec: &Record) -> Result<bool, StateError> {
        let key = Record::key(&rec.network, &rec.container_id, &rec.target.ifname);
        let bytes = serde_json::to_vec(rec).map_err(err)?;
        let txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        let inserted = {
            let mut t = txn.open_table(ATTACHMENTS).map_err(err)?;
            if t.get(key.as_str()).map_err(err)?.is_some() {
                false
            } else {
                t.insert(key.as_str(), bytes.as_slice()).map_err(err)?;
                true
            }
        };
        off_worker(|| txn.commit()).map_err(err)?;
        Ok(inserted)
    }

    /// Stores what the ADD of `rec` built. Not forced to disk: a record that loses it in a crash
    /// is removed by name, as one written before the build always was.
    pub fn set_built(&self, rec: &Record) -> Result<(), StateError> {
        let key = Record::key(&rec.network, &rec.container_id, &rec.target.ifname);
        let bytes = serde_json::to_vec(rec).map_err(err)?;
        let mut txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        txn.set_durability(redb::Durability::Eventual);
        {
            let mut t = txn.open_table(ATTACHMENTS).map_err(err)?;
            // A DEL that raced the ADD has removed the record: do not bring it back.
            if t.get(key.as_str()).map_err(err)?.is_some() {
                t.insert(key.as_str(), bytes.as_slice()).map_err(err)?;
            }
        }
        off_worker(|| txn.commit()).map_err(err)
    }

    pub fn remove(&self, key: &str) -> Result<(), StateError> {
        let txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        txn.open_table(ATTACHMENTS)
            .map_err(err)?
            .remove(key)
            .map_err(err)?;
        off_worker(|| txn.commit()).map_err(err)
    }

    /// Moves `rec` from the live attachments to the teardown list, in one transaction, so a
    /// crash leaves it in exactly one of the two.
    pub fn begin_teardown(&self, key: &str, rec: &Record) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(rec).map_err(err)?;
        let txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        txn.open_table(ATTACHMENTS)
            .map_err(err)?
            .remove(key)
            .map_err(err)?;
        txn.open_table(TEARDOWN)
            .map_err(err)?
            .insert(rec.attachment.veth.host_name.as_str(), bytes.as_slice())
            .map_err(err)?;
        off_worker(|| txn.commit()).map_err(err)
    }

    pub fn end_teardown(&self, host_name: &str) -> Result<(), StateError> {
        let txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        txn.open_table(TEARDOWN)
            .map_err(err)?
            .remove(host_name)
            .map_err(err)?;
        off_worker(|| txn.commit()).map_err(err)
    }

    /// Teardowns a previous run did not finish.
    pub fn teardowns(&self) -> Result<Vec<Record>, StateError> {
        self.all(TEARDOWN)
    }

    /// Every value of `table`, decoded.
    fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StateError> {
        self.read(table, Vec::new(), |t| {
            let mut out = Vec::new();
            for entry in t.iter().map_err(err)? {
                let (_, v) = entry.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(err)?);
            }
            Ok(out)
        })
    }

    /// Every record of one network.
    pub fn network(&self, network: &str) -> Result<Vec<Record>, StateError> {
        let prefix = format!("{network}/");
        self.read(ATTACHMENTS, Vec::new(), |t| {
            let mut out = Vec::new();
            for entry in t.range(prefix.as_str()..).map_err(err)? {
                let (k, v) = entry.map_err(err)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                out.push(serde_json::from_slice(v.value()).map_err(err)?);
            }
            Ok(out)
        })
    }
}

/// Whether a CSI mount record is a NodeStageVolume or a NodePublishVolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Stage,
    Publish,
}

/// What one NodeStageVolume or NodePublishVolume mounted at its path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountRecord {
    pub kind: MountKind,
    pub volume_id: String,
    pub plugin: String,
    pub path: std::path::PathBuf,
    pub readonly: bool,
    pub mounts: Vec<wasmgate_effects::Mount>,
    /// Unpublished: unmounted and the plugin told, but the target directory could not be
    /// removed (something was left in it). A retry only removes the directory.
    #[serde(default)]
    pub unpublished: bool,
}

impl Records {
    pub fn put_mount(&self, rec: &MountRecord) -> Result<(), StateError> {
        let key = rec.path.to_string_lossy();
        let bytes = serde_json::to_vec(rec).map_err(err)?;
        let txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        txn.open_table(CSI_MOUNTS)
            .map_err(err)?
            .insert(key.as_ref(), bytes.as_slice())
            .map_err(err)?;
        off_worker(|| txn.commit()).map_err(err)
    }

    pub fn mount(&self, path: &Path) -> Result<Option<MountRecord>, StateError> {
        let key = path.to_string_lossy();
        self.read(CSI_MOUNTS, None, |t| {
            match t.get(key.as_ref()).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
                None => Ok(None),
            }
        })
    }

    pub fn remove_mount(&self, path: &Path) -> Result<(), StateError> {
        let key = path.to_string_lossy();
        let txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        txn.open_table(CSI_MOUNTS)
            .map_err(err)?
            .remove(key.as_ref())
            .map_err(err)?;
        off_worker(|| txn.commit()).map_err(err)
    }

    pub fn mounts(&self) -> Result<Vec<MountRecord>, StateError> {
        self.all(CSI_MOUNTS)
    }
}

/// The builtin CRI runtime's pod networks, by sandbox ID. Written before the namespace is
/// pinned, so a StopPodSandbox, or the next start after a crash, finds what to undo.
const CRI_POD_NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("cri.pod_networks");

/// What RunPodSandbox set up for one pod's network: the namespace, and what libcni caches for
/// the DEL that undoes it (the config list the ADD ran, and its result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodNetworkRecord {
    pub sandbox_id: String,
    pub netns: std::path::PathBuf,
    pub ifname: String,
    /// `CNI_ARGS`, as ADD got it.
    pub cni_args: String,
    /// What the pod's `runtimeConfig` is made from, for the plugins that declare the capability.
    pub capability_args: serde_json::Map<String, serde_json::Value>,
    /// Where the config list was read from.
    pub conf_file: std::path::PathBuf,
    /// The config list as a list (a single `.conf` already wrapped in one).
    pub conflist: serde_json::Value,
    /// The list's ADD result, once it succeeded: DEL's `prevResult`.
    pub result: Option<serde_json::Value>,
}

impl Records {
    pub fn put_pod_network(&self, rec: &PodNetworkRecord) -> Result<(), StateError> {
        let bytes = serde_json::to_vec(rec).map_err(err)?;
        let txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        txn.open_table(CRI_POD_NETWORKS)
            .map_err(err)?
            .insert(rec.sandbox_id.as_str(), bytes.as_slice())
            .map_err(err)?;
        off_worker(|| txn.commit()).map_err(err)
    }

    pub fn pod_network(&self, sandbox_id: &str) -> Result<Option<PodNetworkRecord>, StateError> {
        self.read(CRI_POD_NETWORKS, None, |t| {
            match t.get(sandbox_id).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
                None => Ok(None),
            }
        })
    }

    pub fn remove_pod_network(&self, sandbox_id: &str) -> Result<(), StateError> {
        let txn = off_worker(|| self.db.begin_write()).map_err(err)?;
        txn.open_table(CRI_POD_NETWORKS)
            .map_err(err)?
            .remove(sandbox_id)
            .map_err(err)?;
        off_worker(|| txn.commit()).map_err(err)
    }

    pub fn pod_networks(&self) -> Result<Vec<PodNetworkRecord>, StateError> {
        self.all(CRI_POD_NETWORKS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_cni::plan::Veth;

    fn rec(net: &str, cid: &str) -> Record {
        Record {
            network: net.into(),
            container_id: cid.into(),
            plugin: "p".into(),
            target: Target {
                netns: "/var/run/netns/x".into(),
                ifname: "eth0".into(),
            },
            attachment: Attachment {
                veth: Veth {
                    host_name: format!("wg{cid}"),
                    mtu: None,
                    host_addresses: vec![],
                },
                bridge: None,
                container_addresses: vec!["10.0.0.2/24".into()],
                container_routes: vec![],
                host_routes: vec![],
            },
            built: None,
        }
    }

    #[test]
    fn what_was_built_is_kept_and_old_records_still_read() {
        let dir = std::env::temp_dir().join(format!("wg-state-built-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Records::open(&dir.join("host.redb")).unwrap();
        let mut r = rec("n", "c1");
        assert!(st.insert_new(&r).unwrap());
        r.built = Some(Applied {
            host_mac: "02:00:00:00:00:01".into(),
            container_mac: "06:00:00:00:00:01".into(),
            host_ifindex: 7,
            container_ifindex: 2,
        });
        st.set_built(&r).unwrap();
        assert_eq!(st.get("n/c1/eth0").unwrap(), Some(r.clone()));
        // Once DEL has removed the record, a late set_built does not bring it back.
        st.remove("n/c1/eth0").unwrap();
        st.set_built(&r).unwrap();
        assert_eq!(st.get("n/c1/eth0").unwrap(), None);
        std::fs::remove_dir_all(dir).unwrap();

        // A record written before `built` (and the ifindexes) existed.
        let old = serde_json::json!({
            "network": "n", "container_id": "c1", "plugin": "p",
            "target": {"netns": "/var/run/netns/x", "ifname": "eth0"},
            "attachment": {"veth": {"host_name": "wgc1"}},
        });
        let r: Record = serde_json::from_value(old).unwrap();
        assert_eq!(r.built, None);
        let applied: Applied =
            serde_json::from_str(r#"{"host_mac": "02:00:00:00:00:01", "container_mac": "x"}"#)
                .unwrap();
        assert_eq!((applied.host_ifindex, applied.container_ifindex), (0, 0));
    }

    #[test]
    fn records_persist_and_are_unique() {
        let dir = std::env::temp_dir().join(format!("wg-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("host.redb");
        let st = Records::open(&path).unwrap();
        assert!(st.insert_new(&rec("a", "c1")).unwrap());
        assert!(!st.insert_new(&rec("a", "c1")).unwrap());
        assert!(st.insert_new(&rec("a", "c2")).unwrap());
        assert!(st.insert_new(&rec("ab", "c3")).unwrap());
        drop(st);
        let st = Records::open(&path).unwrap();
        let a = st.network("a").unwrap();
        assert_eq!(a.len(), 2, "prefix scan must not leak into network ab");
        assert_eq!(st.get("a/c1/eth0").unwrap(), Some(rec("a", "c1")));
        st.remove("a/c1/eth0").unwrap();
        st.remove("a/c1/eth0").unwrap();
        assert_eq!(st.get("a/c1/eth0").unwrap(), None);

        st.begin_teardown("a/c2/eth0", &rec("a", "c2")).unwrap();
        assert_eq!(st.get("a/c2/eth0").unwrap(), None);
        drop(st);
        let st = Records::open(&path).unwrap();
        assert_eq!(st.teardowns().unwrap(), vec![rec("a", "c2")]);
        st.end_teardown("wgc2").unwrap();
        assert!(st.teardowns().unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
