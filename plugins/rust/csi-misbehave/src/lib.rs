//! Test fixture for the host's CSI sandbox limits and mount-plan checks: a storage plugin that
//! misbehaves as the `wasi:config` key `mode` says.
//!
//! - `trap`, `loop`, `oom`: every call other than the capability and identity ones (and node
//!   get-info) panics, spins forever, or allocates without bound.
//! - `escape`, `dotdot`, `wrong-target`: node stage and publish return a hostile plan (a bind of
//!   `/etc`, a bind of `/data/../../etc`, or a plan aimed at `/tmp/elsewhere`); everything else
//!   behaves as `ok`.
//! - `hoard`: create-volume opens [`HOARD_FILES`] files in `/data` and keeps them open in the
//!   instance, stopping at the first error, which it reports in the volume context.
//! - `fifo`: create-volume opens `/data/fifo` for reading (a FIFO the test made, with no writer)
//!   and fails with whatever the open said.
//! - `ok` (and anything else): minimal well-behaved answers; stage and publish plan a tmpfs at
//!   the requested path.
//!
//! Plugin info, the three capability lists, probe and node get-info always answer normally, so
//! the host's capability gate passes and a follow-up call can show the daemon still serves.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "wasmgate:plugin/storage-plugin@0.1.0",
    generate_all,
});

use exports::wasmgate::plugin::{controller as ctl, identity as id, node as nd, snapshots as snap};
use wasmgate::plugin::csi_types::{
    ControllerCapability, CsiError, ErrorCode, Mount, MountSource, NodeCapability,
    PluginCapability, Snapshot, StringMap, Volume,
};

struct Plugin;

export!(Plugin);

fn mode() -> String {
    wasi::config::store::get("mode")
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Misbehaves in `call` for `trap`, `loop` and `oom` (never returning); otherwise returns the mode.
fn act(call: &str) -> String {
    let mode = mode();
    match mode.as_str() {
        "trap" => panic!("csi-misbehave asked to trap in {call}"),
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "oom" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => mode,
    }
}

/// How many files `hoard` tries to keep open: more than a daemon's usual fd limit.
const HOARD_FILES: usize = 25_000;

thread_local! {
    /// What `hoard` keeps open: it lives as long as the instance does.
    static HOARD: std::cell::RefCell<Vec<std::fs::File>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Opens up to [`HOARD_FILES`] files and keeps them; returns the volume context that reports how
/// many this instance held before, how many it opened now, and the error that stopped it.
fn hoard() -> StringMap {
    let held_before = HOARD.with(|h| h.borrow().len());
    let mut opened = 0;
    let mut error = String::new();
    for i in 0..HOARD_FILES {
        let path = format!("/data/hoard-{}", held_before + i);
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => {
                HOARD.with(|h| h.borrow_mut().push(f));
                opened += 1;
            }
            Err(e) => {
                error = format!("open {path}: {e}");
                break;
            }
        }
    }
    vec![
        ("held-before".into(), held_before.to_string()),
        ("opened".into(), opened.to_string()),
        ("error".into(), error),
    ]
}

/// Opens the FIFO the test made in `/data`; with no writer, a blocking open never returns. The
/// error says what the open did: the host must refuse it.
fn open_fifo() -> CsiError {
    let message = match std::fs::File::open("/data/fifo") {
        Ok(_) => "open /data/fifo succeeded".to_string(),
        Err(e) => format!("open /data/fifo: {e}"),
    };
    CsiError {
        code: ErrorCode::Internal,
        message,
    }
}

fn unimplemented(call: &str) -> CsiError {
    CsiError {
        code: ErrorCode::Unimplemented,
        message: format!("csi-misbehave does not implement {call}"),
    }
}

/// The plan for a stage or publish at `path`, as the mode wants it.
fn plan(mode: &str, path: &str) -> Vec<Mount> {
    let (source, target) = match mode {
        "escape" => (MountSource::Bind("/etc".into()), path.to_string()),
        "dotdot" => (
            MountSource::Bind("/data/../../etc".into()),
            path.to_string(),
        ),
        "wrong-target" => (MountSource::Tmpfs(1 << 20), "/tmp/elsewhere".to_string()),
        _ => (MountSource::Tmpfs(1 << 20), path.to_string()),
    };
    vec![Mount {
        source,
        target,
        read_only: false,
        options: vec![],
    }]
}

impl id::Guest for Plugin {
    fn get_plugin_info() -> Result<id::PluginInfo, CsiError> {
        Ok(id::PluginInfo {
            name: "csi-misbehave.wasmgate.io".into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: vec![("mode".into(), mode())],
        })
    }

    fn get_plugin_capabilities() -> Vec<PluginCapability> {
        vec![PluginCapability::ControllerService]
    }

    fn probe() -> Result<bool, CsiError> {
        Ok(true)
    }
}

impl ctl::Guest for Plugin {
    fn get_capabilities() -> Vec<ControllerCapability> {
        vec![ControllerCapability::CreateDeleteVolume]
    }

    fn create_volume(req: ctl::CreateVolumeRequest) -> Result<Volume, CsiError> {
        let volume_context = match act("create-volume").as_str() {
            "hoard" => hoard(),
            "fifo" => return Err(open_fifo()),
            _ => vec![],
        };
        Ok(Volume {
            capacity_bytes: req.capacity_range.map_or(0, |r| r.required_bytes),
            volume_id: req.name,
            volume_context,
            content_source: req.content_source,
            accessible_topology: vec![],
        })
    }

    fn delete_volume(_volume_id: String, _secrets: StringMap) -> Result<(), CsiError> {
        act("delete-volume");
        Ok(())
    }

    fn controller_publish(_req: ctl::PublishRequest) -> Result<StringMap, CsiError> {
        act("controller-publish");
        Err(unimplemented("controller-publish"))
    }

    fn controller_unpublish(
        _volume_id: String,
        _node_id: String,
        _secrets: StringMap,
    ) -> Result<(), CsiError> {
        act("controller-unpublish");
        Err(unimplemented("controller-unpublish"))
    }

    fn validate_volume_capabilities(
        req: ctl::ValidateRequest,
    ) -> Result<ctl::Validation, CsiError> {
        act("validate-volume-capabilities");
        Ok(ctl::Validation {
            confirmed: Some(req.volume_capabilities),
            message: String::new(),
        })
    }

    fn list_volumes(_req: ctl::ListVolumesRequest) -> Result<ctl::VolumePage, CsiError> {
        act("list-volumes");
        Ok(ctl::VolumePage {
            entries: vec![],
            next_token: String::new(),
        })
    }

    fn get_capacity(_req: ctl::GetCapacityRequest) -> Result<ctl::Capacity, CsiError> {
        act("get-capacity");
        Ok(ctl::Capacity {
            available_capacity: 0,
            maximum_volume_size: None,
            minimum_volume_size: None,
        })
    }

    fn get_volume(_volume_id: String) -> Result<ctl::VolumeEntry, CsiError> {
        act("get-volume");
        Err(unimplemented("get-volume"))
    }

    fn expand_volume(_req: ctl::ExpandRequest) -> Result<ctl::Expansion, CsiError> {
        act("expand-volume");
        Err(unimplemented("expand-volume"))
    }

    fn modify_volume(
        _volume_id: String,
        _mutable_parameters: StringMap,
        _secrets: StringMap,
    ) -> Result<(), CsiError> {
        act("modify-volume");
        Err(unimplemented("modify-volume"))
    }
}

impl snap::Guest for Plugin {
    fn create_snapshot(_req: snap::CreateSnapshotRequest) -> Result<Snapshot, CsiError> {
        act("create-snapshot");
        Err(unimplemented("create-snapshot"))
    }

    fn delete_snapshot(_snapshot_id: String, _secrets: StringMap) -> Result<(), CsiError> {
        act("delete-snapshot");
        Err(unimplemented("delete-snapshot"))
    }

    fn list_snapshots(_req: snap::ListSnapshotsRequest) -> Result<snap::SnapshotPage, CsiError> {
        act("list-snapshots");
        Err(unimplemented("list-snapshots"))
    }

    fn get_snapshot(_snapshot_id: String, _secrets: StringMap) -> Result<Snapshot, CsiError> {
        act("get-snapshot");
        Err(unimplemented("get-snapshot"))
    }
}

impl nd::Guest for Plugin {
    fn get_capabilities() -> Vec<NodeCapability> {
        vec![NodeCapability::StageUnstageVolume]
    }

    fn get_info() -> Result<nd::NodeInfo, CsiError> {
        Ok(nd::NodeInfo {
            node_id: wasi::config::store::get("node-id")
                .ok()
                .flatten()
                .unwrap_or_else(|| "csi-misbehave-node".into()),
            max_volumes_per_node: 0,
            accessible_topology: None,
        })
    }

    fn stage_volume(req: nd::StageRequest) -> Result<Vec<Mount>, CsiError> {
        let mode = act("stage-volume");
        Ok(plan(&mode, &req.staging_target_path))
    }

    fn unstage_volume(_volume_id: String, _staging_target_path: String) -> Result<(), CsiError> {
        act("unstage-volume");
        Ok(())
    }

    fn publish_volume(req: nd::PublishRequest) -> Result<Vec<Mount>, CsiError> {
        let mode = act("publish-volume");
        Ok(plan(&mode, &req.target_path))
    }

    fn unpublish_volume(_volume_id: String, _target_path: String) -> Result<(), CsiError> {
        act("unpublish-volume");
        Ok(())
    }

    fn get_volume_stats(
        _req: nd::StatsRequest,
    ) -> Result<Option<wasmgate::plugin::csi_types::VolumeCondition>, CsiError> {
        act("get-volume-stats");
        Ok(None)
    }

    fn expand_volume(_req: nd::ExpandRequest) -> Result<i64, CsiError> {
        act("expand-volume");
        Err(unimplemented("node expand-volume"))
    }
}
