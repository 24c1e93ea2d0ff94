//! The JSON records kept in `wasi:keyvalue`, and their CSI shapes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::wasmgate::plugin::csi_types::{ContentSource, Snapshot, Volume};

/// What a volume was created from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

impl Source {
    pub fn from_csi(source: &Option<ContentSource>) -> Option<Self> {
        match source {
            None => None,
            Some(ContentSource::Snapshot(id)) => Some(Source::Snapshot(id.clone())),
            Some(ContentSource::Volume(id)) => Some(Source::Volume(id.clone())),
        }
    }

    pub fn to_csi(&self) -> ContentSource {
        match self {
            Source::Snapshot(id) => ContentSource::Snapshot(id.clone()),
            Source::Volume(id) => ContentSource::Volume(id.clone()),
        }
    }
}

/// `vol/<id>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct VolumeRecord {
    pub id: String,
    /// The CreateVolume name; empty for an inline ephemeral volume.
    pub name: String,
    pub capacity: i64,
    pub source: Option<Source>,
    /// Returned as the volume context.
    pub context: BTreeMap<String, String>,
    pub parameters: BTreeMap<String, String>,
    pub mutable_parameters: BTreeMap<String, String>,
    /// ControllerPublish: node ID → readonly.
    pub published_nodes: BTreeMap<String, bool>,
    /// NodePublish: target path → readonly.
    pub targets: BTreeMap<String, bool>,
    /// NodeStage: staging target paths.
    pub staged: BTreeSet<String>,
    /// Created by NodePublish from an inline (CSI ephemeral) volume; gone after its last unpublish.
    pub ephemeral: bool,
    /// False until the data directory is complete. A volume that is not ready was never returned
    /// to anyone: only a retry of its CreateVolume (or NodePublish) finishes it.
    pub ready: bool,
}

impl VolumeRecord {
    pub fn to_csi(&self) -> Volume {
        Volume {
            capacity_bytes: self.capacity,
            volume_id: self.id.clone(),
            volume_context: self
                .context
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            content_source: self.source.as_ref().map(Source::to_csi),
            accessible_topology: Vec::new(),
        }
    }

    /// Whether anything on the node still uses the volume.
    pub fn in_use_on_node(&self) -> bool {
        !self.targets.is_empty() || !self.staged.is_empty()
    }
}

/// `snap/<id>`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct SnapshotRecord {
    pub id: String,
    pub name: String,
    pub source_volume_id: String,
    pub size: i64,
    /// Seconds since the Unix epoch.
    pub creation_time: i64,
    /// False until the copy is complete; see [`VolumeRecord::ready`].
    pub ready: bool,
}

impl SnapshotRecord {
    pub fn to_csi(&self) -> Snapshot {
        Snapshot {
            size_bytes: self.size,
            snapshot_id: self.id.clone(),
            source_volume_id: self.source_volume_id.clone(),
            creation_time: self.creation_time,
            ready_to_use: true,
        }
    }
}
