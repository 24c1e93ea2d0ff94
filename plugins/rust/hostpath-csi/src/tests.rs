//! Behaviour tests of every RPC, natively: a map as `wasi:keyvalue`, a temp dir as `/data`.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::tests::MapSettings;
use crate::config::{Alpha, Config, GIB};
use crate::controller::{self, BLOCK_UNSUPPORTED};
use crate::driver::Driver;
use crate::exports::wasmgate::plugin::controller::{
    CreateVolumeRequest, ExpandRequest as CtlExpand, GetCapacityRequest, ListVolumesRequest,
    PublishRequest as CtlPublish, ValidateRequest,
};
use crate::exports::wasmgate::plugin::node::{
    ExpandRequest as NodeExpand, PublishRequest, StageRequest, StatsRequest,
};
use crate::exports::wasmgate::plugin::snapshots::{CreateSnapshotRequest, ListSnapshotsRequest};
use crate::fsx::tests::TempDir;
use crate::identity;
use crate::kv::tests::FakeKv;
use crate::node::{self, EPHEMERAL_KEY};
use crate::wasmgate::plugin::csi_types::{
    AccessMode, AccessType, CapacityRange, ContentSource, ControllerCapability, CsiError,
    ErrorCode, Mount, MountSource, MountVolume, PluginCapability, Volume, VolumeCapability,
};

/// The opt-in to the alpha GetSnapshot.
const GET_SNAPSHOT: &[(&str, &str)] = &[("alpha-capabilities", "get-snapshot")];

struct Env {
    kv: FakeKv,
    settings: MapSettings,
    dir: TempDir,
}

impl Env {
    fn new() -> Self {
        Self::with(&[])
    }

    fn with(pairs: &[(&str, &str)]) -> Self {
        Env {
            kv: FakeKv::default(),
            settings: MapSettings::of(pairs),
            dir: TempDir::new(),
        }
    }

    fn d(&self) -> Driver<'_, FakeKv> {
        Driver::new(
            &self.kv,
            Config::load(&self.settings).unwrap(),
            self.dir.0.clone(),
        )
    }

    fn vol_dir(&self, id: &str) -> PathBuf {
        self.dir.0.join("volumes").join(id)
    }

    fn snap_dir(&self, id: &str) -> PathBuf {
        self.dir.0.join("snapshots").join(id)
    }

    fn create(&self, name: &str) -> Volume {
        self.d().create_volume(&create_req(name, 0, 0)).unwrap()
    }

    fn bind_of(&self, id: &str) -> MountSource {
        MountSource::Bind(self.vol_dir(id).display().to_string())
    }
}

fn mount_cap(mode: AccessMode) -> VolumeCapability {
    VolumeCapability {
        access_type: AccessType::Mount(MountVolume {
            fs_type: String::new(),
            mount_flags: Vec::new(),
            volume_mount_group: String::new(),
        }),
        access_mode: mode,
    }
}

fn rw() -> VolumeCapability {
    mount_cap(AccessMode::SingleNodeWriter)
}

fn block() -> VolumeCapability {
    VolumeCapability {
        access_type: AccessType::Block,
        access_mode: AccessMode::SingleNodeWriter,
    }
}

fn create_req(name: &str, required: i64, limit: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: (required != 0 || limit != 0).then_some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }),
        volume_capabilities: vec![rw()],
        parameters: Vec::new(),
        secrets: Vec::new(),
        content_source: None,
        accessibility_requirements: None,
        mutable_parameters: Vec::new(),
    }
}

fn from(name: &str, source: ContentSource) -> CreateVolumeRequest {
    CreateVolumeRequest {
        content_source: Some(source),
        ..create_req(name, 0, 0)
    }
}

fn snap_req(name: &str, source: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        source_volume_id: source.to_string(),
        name: name.to_string(),
        secrets: Vec::new(),
        parameters: Vec::new(),
    }
}

fn list(max: i32, token: &str) -> ListVolumesRequest {
    ListVolumesRequest {
        max_entries: max,
        starting_token: token.to_string(),
    }
}

fn list_snaps(max: i32, token: &str, source: &str, id: &str) -> ListSnapshotsRequest {
    ListSnapshotsRequest {
        max_entries: max,
        starting_token: token.to_string(),
        source_volume_id: source.to_string(),
        snapshot_id: id.to_string(),
        secrets: Vec::new(),
    }
}

fn stage(id: &str, path: &str) -> StageRequest {
    StageRequest {
        volume_id: id.to_string(),
        publish_context: Vec::new(),
        staging_target_path: path.to_string(),
        volume_capability: rw(),
        secrets: Vec::new(),
        volume_context: Vec::new(),
    }
}

fn publish(id: &str, target: &str, staging: &str, readonly: bool) -> PublishRequest {
    PublishRequest {
        volume_id: id.to_string(),
        publish_context: Vec::new(),
        staging_target_path: staging.to_string(),
        target_path: target.to_string(),
        volume_capability: rw(),
        readonly,
        secrets: Vec::new(),
        volume_context: Vec::new(),
    }
}

fn ephemeral(id: &str, target: &str) -> PublishRequest {
    PublishRequest {
        volume_context: vec![
            (EPHEMERAL_KEY.to_string(), "true".to_string()),
            ("csi.storage.k8s.io/pod.name".to_string(), "p".to_string()),
        ],
        ..publish(id, target, "", false)
    }
}

fn stats(id: &str, path: &str) -> StatsRequest {
    StatsRequest {
        volume_id: id.to_string(),
        volume_path: path.to_string(),
        staging_target_path: String::new(),
    }
}

fn ctl_publish(id: &str, node: &str, readonly: bool) -> CtlPublish {
    CtlPublish {
        volume_id: id.to_string(),
        node_id: node.to_string(),
        volume_capability: rw(),
        readonly,
        secrets: Vec::new(),
        volume_context: Vec::new(),
    }
}

fn ctl_expand(id: &str, required: i64) -> CtlExpand {
    CtlExpand {
        volume_id: id.to_string(),
        capacity_range: CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        },
        secrets: Vec::new(),
        volume_capability: None,
    }
}

#[track_caller]
fn code<T: std::fmt::Debug>(r: Result<T, CsiError>) -> ErrorCode {
    r.unwrap_err().code
}

#[track_caller]
fn fails<T: std::fmt::Debug>(r: Result<T, CsiError>, want: ErrorCode, mentions: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.code, want, "{}", e.message);
    assert!(
        e.message.contains(mentions),
        "{:?} lacks {mentions:?}",
        e.message
    );
    assert_eq!(
        e.message
            .chars()
            .next()
            .map(|c| c.is_lowercase() || !c.is_alphabetic()),
        Some(true),
        "{:?} starts upper-case",
        e.message
    );
}

// ---- identity ----

#[test]
fn identity_reports_name_version_and_capabilities() {
    let env = Env::new();
    let info = identity::plugin_info(&env.settings).unwrap();
    assert_eq!(info.name, "hostpath.csi.wasmgate.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    assert!(info.manifest.is_empty());
    let env = Env::with(&[("driver-name", "hp.example.com"), ("vendor-version", "9.9")]);
    let info = identity::plugin_info(&env.settings).unwrap();
    assert_eq!(
        (info.name.as_str(), info.vendor_version.as_str()),
        ("hp.example.com", "9.9")
    );
    assert_eq!(
        identity::capabilities(),
        vec![
            PluginCapability::ControllerService,
            PluginCapability::OnlineExpansion
        ]
    );
}

#[test]
fn probe_checks_settings_and_data_dir() {
    let env = Env::new();
    assert!(identity::probe(&env.settings, &env.kv, &env.dir.0).unwrap());
    fails(
        identity::probe(&env.settings, &env.kv, &env.dir.0.join("missing")),
        ErrorCode::Unavailable,
        "missing",
    );
    let bad = Env::with(&[("capacity-bytes", "huge")]);
    fails(
        identity::probe(&bad.settings, &bad.kv, &bad.dir.0),
        ErrorCode::Internal,
        "capacity-bytes",
    );
}

// ---- controller: capabilities ----

#[test]
fn controller_capabilities_follow_attach_required() {
    use ControllerCapability::*;
    let caps = controller::capabilities(false, Alpha::default());
    for c in [
        CreateDeleteVolume,
        ListVolumes,
        GetCapacity,
        CreateDeleteSnapshot,
        ListSnapshots,
        CloneVolume,
        ExpandVolume,
        GetVolume,
        VolumeCondition,
    ] {
        assert!(caps.contains(&c), "{c:?}");
    }
    assert!(!caps.contains(&PublishUnpublishVolume));
    assert!(!caps.contains(&ModifyVolume));
    let caps = controller::capabilities(true, Alpha::default());
    assert!(caps.contains(&PublishUnpublishVolume));
    assert!(caps.contains(&ListVolumesPublishedNodes));
}

#[test]
fn alpha_capabilities_are_advertised_only_when_opted_into() {
    use ControllerCapability::*;
    for attach in [false, true] {
        let caps = controller::capabilities(attach, Alpha::default());
        assert!(
            !caps.contains(&GetSnapshot) && !caps.contains(&ModifyVolume),
            "{caps:?}"
        );
        let env = Env::with(GET_SNAPSHOT);
        let caps = controller::capabilities(attach, env.d().cfg.alpha);
        assert!(caps.contains(&GetSnapshot), "{caps:?}");
        assert!(!caps.contains(&ModifyVolume), "{caps:?}");
    }
    assert!(!identity::capabilities().contains(&PluginCapability::SnapshotMetadataService));

    // Not advertised, not served: under the stock wasmtime CLI no host gates the call.
    let env = Env::new();
    let d = env.d();
    let vol = env.create("v").volume_id;
    let s = d.create_snapshot(&snap_req("s", &vol)).unwrap();
    fails(
        d.get_snapshot(&s.snapshot_id),
        ErrorCode::Unimplemented,
        "alpha-capabilities",
    );
    let env = Env {
        settings: MapSettings::of(GET_SNAPSHOT),
        ..env
    };
    assert_eq!(env.d().get_snapshot(&s.snapshot_id).unwrap(), s);
}

// ---- create-volume ----

#[test]
fn create_makes_a_directory_and_records() {
    let env = Env::new();
    let v = env.create("pvc-1");
    assert_eq!(v.volume_id, "vol-000000000001");
    assert_eq!(v.capacity_bytes, GIB);
    assert_eq!(v.content_source, None);
    assert!(v.accessible_topology.is_empty());
    assert!(env.vol_dir(&v.volume_id).is_dir());
    assert_eq!(env.kv.text("vname/pvc-1").unwrap(), "vol-000000000001");
    assert!(
        env.kv
            .text("vol/vol-000000000001")
            .unwrap()
            .contains("\"ready\":true")
    );
    assert_eq!(env.create("pvc-2").volume_id, "vol-000000000002");
}

#[test]
fn create_is_idempotent_by_name() {
    let env = Env::new();
    let d = env.d();
    let a = d.create_volume(&create_req("same", 5 * GIB, 0)).unwrap();
    fs::write(env.vol_dir(&a.volume_id).join("f"), b"keep").unwrap();
    let b = d.create_volume(&create_req("same", 5 * GIB, 0)).unwrap();
    assert_eq!(a, b);
    // A compatible range (the existing capacity fits) is the same volume too.
    assert_eq!(
        d.create_volume(&create_req("same", GIB, 10 * GIB)).unwrap(),
        a
    );
    assert_eq!(d.create_volume(&create_req("same", 0, 0)).unwrap(), a);
    // The data was not touched.
    assert_eq!(
        fs::read(env.vol_dir(&a.volume_id).join("f")).unwrap(),
        b"keep"
    );
    assert_eq!(d.list_volumes(&list(0, "")).unwrap().entries.len(), 1);
}

#[test]
fn create_with_an_incompatible_request_is_already_exists() {
    let env = Env::new();
    let d = env.d();
    d.create_volume(&create_req("n", GIB, GIB)).unwrap();
    fails(
        d.create_volume(&create_req("n", 2 * GIB, 2 * GIB)),
        ErrorCode::AlreadyExists,
        "\"n\"",
    );
    fails(
        d.create_volume(&create_req("n", 0, GIB / 2)),
        ErrorCode::AlreadyExists,
        "vol-000000000001",
    );
    let src = env.create("src");
    fails(
        d.create_volume(&from("n", ContentSource::Volume(src.volume_id))),
        ErrorCode::AlreadyExists,
        "content source",
    );
}

#[test]
fn capacity_rules() {
    let env = Env::with(&[
        ("capacity-bytes", "10Gi"),
        ("max-volume-bytes", "4Gi"),
        ("default-volume-bytes", "2Gi"),
    ]);
    let d = env.d();
    assert_eq!(
        d.create_volume(&create_req("req", 3 * GIB, 0))
            .unwrap()
            .capacity_bytes,
        3 * GIB
    );
    assert_eq!(
        d.create_volume(&create_req("lim", 0, GIB))
            .unwrap()
            .capacity_bytes,
        GIB
    );
    assert_eq!(
        d.create_volume(&create_req("lim2", 0, 3 * GIB))
            .unwrap()
            .capacity_bytes,
        2 * GIB
    );
    assert_eq!(
        d.create_volume(&create_req("def", 0, 0))
            .unwrap()
            .capacity_bytes,
        2 * GIB
    );
    fails(
        d.create_volume(&create_req("neg", -1, 0)),
        ErrorCode::InvalidArgument,
        "negative",
    );
    fails(
        d.create_volume(&create_req("neg2", 0, -5)),
        ErrorCode::InvalidArgument,
        "negative",
    );
    fails(
        d.create_volume(&create_req("inv", 2 * GIB, GIB)),
        ErrorCode::InvalidArgument,
        "exceeds limit-bytes",
    );
    fails(
        d.create_volume(&create_req("big", 5 * GIB, 0)),
        ErrorCode::OutOfRange,
        "maximum volume size",
    );
    // 8 GiB allocated of 10: 3 GiB does not fit, 2 GiB does.
    fails(
        d.create_volume(&create_req("full", 3 * GIB, 0)),
        ErrorCode::ResourceExhausted,
        "2147483648 available",
    );
    d.create_volume(&create_req("fits", 2 * GIB, 0)).unwrap();
    // Nothing was recorded for the refused requests.
    assert_eq!(d.list_volumes(&list(0, "")).unwrap().entries.len(), 5);
    assert!(env.kv.text("vname/full").is_none());
}

#[test]
fn create_validates_its_arguments() {
    let env = Env::new();
    let d = env.d();
    fails(
        d.create_volume(&create_req("", 0, 0)),
        ErrorCode::InvalidArgument,
        "volume name is required",
    );
    let mut r = create_req("nocaps", 0, 0);
    r.volume_capabilities.clear();
    fails(
        d.create_volume(&r),
        ErrorCode::InvalidArgument,
        "capabilities are required",
    );
    let mut r = create_req("blk", 0, 0);
    r.volume_capabilities.push(block());
    fails(
        d.create_volume(&r),
        ErrorCode::InvalidArgument,
        BLOCK_UNSUPPORTED,
    );
    fails(
        d.create_volume(&from("src", ContentSource::Snapshot(String::new()))),
        ErrorCode::InvalidArgument,
        "snapshot id is required",
    );
    // Every access mode of mount type is fine.
    let mut r = create_req("modes", 0, 0);
    r.volume_capabilities = [
        AccessMode::SingleNodeWriter,
        AccessMode::SingleNodeReaderOnly,
        AccessMode::MultiNodeReaderOnly,
        AccessMode::MultiNodeSingleWriter,
        AccessMode::MultiNodeMultiWriter,
        AccessMode::SingleNodeSingleWriter,
        AccessMode::SingleNodeMultiWriter,
    ]
    .into_iter()
    .map(mount_cap)
    .collect();
    d.create_volume(&r).unwrap();
}

#[test]
fn names_of_any_shape_never_collide() {
    let env = Env::new();
    let max_len: String = "ü".repeat(128);
    let names = [
        "a/b",
        "a%2Fb",
        "a_2Fb",
        "vol/x",
        "",
        max_len.as_str(),
        "日本語 name",
    ];
    let mut ids = Vec::new();
    for n in names.iter().filter(|n| !n.is_empty()) {
        ids.push(env.create(n).volume_id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), names.len() - 1);
    // And each finds itself again.
    assert_eq!(env.create("a/b").volume_id, "vol-000000000001");
    assert_eq!(env.create(&max_len).volume_id, "vol-000000000005");
    assert!(env.kv.keys().iter().all(|k| !k.contains(' ')));
}

#[test]
fn a_retry_finishes_a_half_created_volume_under_the_same_id() {
    let env = Env::new();
    // Crash after the name was recorded, before the record.
    env.kv
        .map
        .lock()
        .unwrap()
        .insert("vname/x".into(), b"vol-000000000007".to_vec());
    let v = env.create("x");
    assert_eq!(v.volume_id, "vol-000000000007");
    assert!(env.vol_dir("vol-000000000007").is_dir());
    // Crash after an unfinished record and a partial copy: the retry starts the data over.
    let d = env.d();
    let src = env.create("src");
    fs::write(env.vol_dir(&src.volume_id).join("data"), b"v1").unwrap();
    let clone = d
        .create_volume(&from("clone", ContentSource::Volume(src.volume_id.clone())))
        .unwrap();
    let key = format!("vol/{}", clone.volume_id);
    let raw = env
        .kv
        .text(&key)
        .unwrap()
        .replace("\"ready\":true", "\"ready\":false");
    env.kv.map.lock().unwrap().insert(key, raw.into_bytes());
    fs::write(env.vol_dir(&clone.volume_id).join("junk"), b"partial").unwrap();
    // Unfinished volumes are invisible...
    assert_eq!(code(d.get_volume(&clone.volume_id)), ErrorCode::NotFound);
    assert!(
        d.list_volumes(&list(0, ""))
            .unwrap()
            .entries
            .iter()
            .all(|e| e.volume.volume_id != clone.volume_id)
    );
    // ...until the retry completes them.
    let again = d
        .create_volume(&from("clone", ContentSource::Volume(src.volume_id)))
        .unwrap();
    assert_eq!(again, clone);
    assert!(!env.vol_dir(&clone.volume_id).join("junk").exists());
    assert_eq!(
        fs::read(env.vol_dir(&clone.volume_id).join("data")).unwrap(),
        b"v1"
    );
}

// ---- delete-volume ----

#[test]
fn delete_removes_data_and_records_and_is_idempotent() {
    let env = Env::new();
    let d = env.d();
    let v = env.create("gone");
    fs::write(env.vol_dir(&v.volume_id).join("f"), b"x").unwrap();
    d.delete_volume(&v.volume_id).unwrap();
    assert!(!env.vol_dir(&v.volume_id).exists());
    assert_eq!(env.kv.keys(), vec!["seq".to_string()]);
    d.delete_volume(&v.volume_id).unwrap();
    d.delete_volume("no-such-volume").unwrap();
    d.delete_volume("../../etc").unwrap();
    fails(
        d.delete_volume(""),
        ErrorCode::InvalidArgument,
        "volume id is required",
    );
    // The name is free again, for a new volume.
    assert_eq!(env.create("gone").volume_id, "vol-000000000002");
}

#[test]
fn delete_refuses_a_volume_in_use_on_the_node() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("busy").volume_id;
    d.stage_volume(&stage(&id, "/stage/a")).unwrap();
    fails(
        d.delete_volume(&id),
        ErrorCode::FailedPrecondition,
        "staged at /stage/a",
    );
    d.publish_volume(&publish(&id, "/pods/p/vol", "/stage/a", false))
        .unwrap();
    fails(
        d.delete_volume(&id),
        ErrorCode::FailedPrecondition,
        "published at /pods/p/vol",
    );
    d.unpublish_volume(&id, "/pods/p/vol").unwrap();
    d.unstage_volume(&id, "/stage/a").unwrap();
    d.delete_volume(&id).unwrap();
}

// ---- validate / get / list / capacity ----

#[test]
fn validate_volume_capabilities() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("v").volume_id;
    let req = |id: &str, caps: Vec<VolumeCapability>| ValidateRequest {
        volume_id: id.to_string(),
        volume_context: Vec::new(),
        volume_capabilities: caps,
        parameters: Vec::new(),
        mutable_parameters: Vec::new(),
        secrets: Vec::new(),
    };
    let ok = d
        .validate_volume_capabilities(&req(
            &id,
            vec![rw(), mount_cap(AccessMode::MultiNodeMultiWriter)],
        ))
        .unwrap();
    assert_eq!(
        ok.confirmed,
        Some(vec![rw(), mount_cap(AccessMode::MultiNodeMultiWriter)])
    );
    let no = d
        .validate_volume_capabilities(&req(&id, vec![rw(), block()]))
        .unwrap();
    assert_eq!(no.confirmed, None);
    assert_eq!(no.message, BLOCK_UNSUPPORTED);
    fails(
        d.validate_volume_capabilities(&req("vol-999", vec![rw()])),
        ErrorCode::NotFound,
        "vol-999",
    );
    fails(
        d.validate_volume_capabilities(&req(&id, vec![])),
        ErrorCode::InvalidArgument,
        "required",
    );
    fails(
        d.validate_volume_capabilities(&req("", vec![rw()])),
        ErrorCode::InvalidArgument,
        "volume id",
    );
}

#[test]
fn get_volume_reports_condition() {
    let env = Env::new();
    let d = env.d();
    let v = env.create("v");
    let e = d.get_volume(&v.volume_id).unwrap();
    assert_eq!(e.volume, v);
    assert!(e.published_node_ids.is_empty());
    let c = e.condition.unwrap();
    assert!(!c.abnormal);
    assert_eq!(c.message, "");
    fs::remove_dir_all(env.vol_dir(&v.volume_id)).unwrap();
    let c = d.get_volume(&v.volume_id).unwrap().condition.unwrap();
    assert!(c.abnormal);
    assert!(c.message.contains("is missing"), "{}", c.message);
    fails(
        d.get_volume("vol-404"),
        ErrorCode::NotFound,
        "volume vol-404 not found",
    );
}

#[test]
fn list_volumes_pages_in_id_order() {
    let env = Env::new();
    let d = env.d();
    let ids: Vec<String> = (0..5)
        .map(|i| env.create(&format!("v{i}")).volume_id)
        .collect();
    let all = d.list_volumes(&list(0, "")).unwrap();
    assert_eq!(all.next_token, "");
    let got: Vec<_> = all
        .entries
        .iter()
        .map(|e| e.volume.volume_id.clone())
        .collect();
    assert_eq!(got, ids);
    assert!(
        all.entries
            .iter()
            .all(|e| e.condition.as_ref().is_some_and(|c| !c.abnormal))
    );

    let p1 = d.list_volumes(&list(2, "")).unwrap();
    assert_eq!(p1.entries.len(), 2);
    assert_ne!(p1.next_token, "");
    let p2 = d.list_volumes(&list(2, &p1.next_token)).unwrap();
    let p3 = d.list_volumes(&list(2, &p2.next_token)).unwrap();
    assert_eq!(p3.entries.len(), 1);
    assert_eq!(p3.next_token, "");
    let paged: Vec<_> = [p1.entries.clone(), p2.entries, p3.entries]
        .concat()
        .into_iter()
        .map(|e| e.volume.volume_id)
        .collect();
    assert_eq!(paged, ids);

    // Deleting the whole first page and adding a volume keeps the token valid: nothing skipped,
    // nothing twice, and the newcomer shows up.
    for e in &p1.entries {
        d.delete_volume(&e.volume.volume_id).unwrap();
    }
    let new = env.create("new").volume_id;
    let rest: Vec<_> = d
        .list_volumes(&list(0, &p1.next_token))
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.volume.volume_id)
        .collect();
    assert_eq!(rest, [&ids[2..], &[new]].concat());
}

#[test]
fn list_volumes_rejects_bad_tokens_and_negative_max() {
    let env = Env::new();
    let d = env.d();
    env.create("a");
    fails(
        d.list_volumes(&list(0, "invalid-token")),
        ErrorCode::Aborted,
        "invalid-token",
    );
    fails(
        d.list_volumes(&list(0, "vol-000000000001~deadbeef")),
        ErrorCode::Aborted,
        "starting token",
    );
    fails(
        d.list_volumes(&list(-1, "")),
        ErrorCode::InvalidArgument,
        "max-entries",
    );
}

#[test]
fn listing_walks_many_keyvalue_pages() {
    let env = Env {
        kv: FakeKv {
            page: 2,
            ..FakeKv::default()
        },
        ..Env::new()
    };
    for i in 0..9 {
        env.create(&format!("v{i}"));
        env.d()
            .create_snapshot(&snap_req(
                &format!("s{i}"),
                &format!("vol-{:012}", 2 * i + 1),
            ))
            .unwrap();
    }
    assert_eq!(env.d().list_volumes(&list(0, "")).unwrap().entries.len(), 9);
    assert_eq!(
        env.d()
            .list_snapshots(&list_snaps(0, "", "", ""))
            .unwrap()
            .entries
            .len(),
        9
    );
    assert_eq!(env.d().allocated().unwrap(), 9 * GIB);
}

#[test]
fn get_capacity_tracks_allocations() {
    let env = Env::with(&[("capacity-bytes", "10Gi"), ("max-volume-bytes", "8Gi")]);
    let d = env.d();
    let req = |caps: Vec<VolumeCapability>| GetCapacityRequest {
        volume_capabilities: caps,
        parameters: Vec::new(),
        accessible_topology: None,
    };
    let c = d.get_capacity(&req(vec![])).unwrap();
    assert_eq!(c.available_capacity, 10 * GIB);
    assert_eq!(c.maximum_volume_size, Some(8 * GIB));
    assert_eq!(c.minimum_volume_size, None);
    d.create_volume(&create_req("a", 4 * GIB, 0)).unwrap();
    let c = d.get_capacity(&req(vec![rw()])).unwrap();
    assert_eq!(c.available_capacity, 6 * GIB);
    assert_eq!(
        c.maximum_volume_size,
        Some(6 * GIB),
        "never more than is left"
    );
    assert_eq!(
        d.get_capacity(&req(vec![block()]))
            .unwrap()
            .available_capacity,
        0
    );
    d.delete_volume("vol-000000000001").unwrap();
    assert_eq!(
        d.get_capacity(&req(vec![])).unwrap().available_capacity,
        10 * GIB
    );
}

// ---- expand ----

#[test]
fn controller_expand_grows_and_never_shrinks() {
    let env = Env::with(&[("capacity-bytes", "20Gi"), ("max-volume-bytes", "16Gi")]);
    let d = env.d();
    let id = env.create("e").volume_id;
    let x = d.controller_expand(&ctl_expand(&id, 11 * GIB)).unwrap();
    assert_eq!(x.capacity_bytes, 11 * GIB);
    assert!(!x.node_expansion_required);
    assert_eq!(d.get_volume(&id).unwrap().volume.capacity_bytes, 11 * GIB);
    assert_eq!(
        d.controller_expand(&ctl_expand(&id, 2 * GIB))
            .unwrap()
            .capacity_bytes,
        11 * GIB
    );
    fails(
        d.controller_expand(&ctl_expand(&id, 17 * GIB)),
        ErrorCode::OutOfRange,
        &id,
    );
    fails(
        d.controller_expand(&ctl_expand("vol-404", GIB)),
        ErrorCode::NotFound,
        "vol-404",
    );
    fails(
        d.controller_expand(&ctl_expand(&id, -1)),
        ErrorCode::InvalidArgument,
        "negative",
    );
    d.create_volume(&create_req("other", 8 * GIB, 0)).unwrap();
    // 19 GiB of 20 allocated: growing by 2 does not fit.
    fails(
        d.controller_expand(&ctl_expand(&id, 13 * GIB)),
        ErrorCode::ResourceExhausted,
        "available",
    );
    let mut blk = ctl_expand(&id, 12 * GIB);
    blk.volume_capability = Some(block());
    fails(
        d.controller_expand(&blk),
        ErrorCode::InvalidArgument,
        BLOCK_UNSUPPORTED,
    );
}

#[test]
fn node_expand_returns_the_recorded_capacity() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("e").volume_id;
    let req = |id: &str, required: i64, path: &str| NodeExpand {
        volume_id: id.to_string(),
        volume_path: path.to_string(),
        capacity_range: CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        },
        staging_target_path: String::new(),
        volume_capability: None,
        secrets: Vec::new(),
    };
    assert_eq!(d.node_expand(&req(&id, 0, "/t")).unwrap(), GIB);
    assert_eq!(d.node_expand(&req(&id, 3 * GIB, "/t")).unwrap(), 3 * GIB);
    assert_eq!(d.node_expand(&req(&id, GIB, "/t")).unwrap(), 3 * GIB);
    assert_eq!(d.get_volume(&id).unwrap().volume.capacity_bytes, 3 * GIB);
    fails(
        d.node_expand(&req("vol-404", GIB, "some/path")),
        ErrorCode::NotFound,
        "vol-404",
    );
    fails(
        d.node_expand(&req(&id, GIB, "")),
        ErrorCode::InvalidArgument,
        "volume path",
    );
}

// ---- controller publish ----

#[test]
fn controller_publish_is_unimplemented_without_attach_required() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("v").volume_id;
    assert_eq!(
        code(d.controller_publish(&ctl_publish(&id, "wasmgate-node", false))),
        ErrorCode::Unimplemented
    );
    assert_eq!(
        code(d.controller_unpublish(&id, "wasmgate-node")),
        ErrorCode::Unimplemented
    );
    assert_eq!(code(d.modify_volume(&id)), ErrorCode::Unimplemented);
}

#[test]
fn controller_publish_with_attach_required() {
    let env = Env::with(&[("attach-required", "true"), ("node-id", "n1")]);
    let d = env.d();
    let id = env.create("v").volume_id;
    assert_eq!(
        d.controller_publish(&ctl_publish(&id, "n1", false))
            .unwrap(),
        vec![]
    );
    d.controller_publish(&ctl_publish(&id, "n1", false))
        .unwrap();
    fails(
        d.controller_publish(&ctl_publish(&id, "n1", true)),
        ErrorCode::AlreadyExists,
        "readonly=false",
    );
    fails(
        d.controller_publish(&ctl_publish(&id, "n2", false)),
        ErrorCode::NotFound,
        "node n2 not found",
    );
    fails(
        d.controller_publish(&ctl_publish("vol-404", "n1", false)),
        ErrorCode::NotFound,
        "vol-404",
    );
    fails(
        d.controller_publish(&ctl_publish(&id, "", false)),
        ErrorCode::InvalidArgument,
        "node id",
    );
    assert_eq!(
        d.get_volume(&id).unwrap().published_node_ids,
        vec!["n1".to_string()]
    );
    assert_eq!(
        d.list_volumes(&list(0, "")).unwrap().entries[0].published_node_ids,
        vec!["n1".to_string()]
    );
    d.controller_unpublish(&id, "n1").unwrap();
    d.controller_unpublish(&id, "n1").unwrap();
    d.controller_unpublish(&id, "n9").unwrap();
    d.controller_unpublish("vol-404", "n1").unwrap();
    assert!(d.get_volume(&id).unwrap().published_node_ids.is_empty());
    // An empty node ID unpublishes from every node.
    d.controller_publish(&ctl_publish(&id, "n1", true)).unwrap();
    d.controller_unpublish(&id, "").unwrap();
    assert!(d.get_volume(&id).unwrap().published_node_ids.is_empty());
}

#[test]
fn controller_publish_honours_max_volumes_per_node() {
    let env = Env::with(&[("attach-required", "true"), ("max-volumes-per-node", "2")]);
    let d = env.d();
    let ids: Vec<_> = (0..3)
        .map(|i| env.create(&format!("v{i}")).volume_id)
        .collect();
    d.controller_publish(&ctl_publish(&ids[0], "wasmgate-node", false))
        .unwrap();
    d.controller_publish(&ctl_publish(&ids[1], "wasmgate-node", false))
        .unwrap();
    // Re-publishing one that is attached is not a new attachment.
    d.controller_publish(&ctl_publish(&ids[1], "wasmgate-node", false))
        .unwrap();
    fails(
        d.controller_publish(&ctl_publish(&ids[2], "wasmgate-node", false)),
        ErrorCode::ResourceExhausted,
        "maximum of 2",
    );
    assert_eq!(crate::node::node_info(&d.cfg).max_volumes_per_node, 2);
}

// ---- snapshots ----

#[test]
fn snapshot_copies_the_tree_and_restores_it() {
    let env = Env::with(GET_SNAPSHOT);
    let d = env.d();
    let src = env.create("src").volume_id;
    fs::create_dir_all(env.vol_dir(&src).join("sub/dir")).unwrap();
    fs::write(env.vol_dir(&src).join("sub/dir/file"), b"v1").unwrap();
    fs::write(env.vol_dir(&src).join("top"), b"top").unwrap();
    let before = crate::driver::now_secs();
    let s = d.create_snapshot(&snap_req("snap", &src)).unwrap();
    assert_eq!(s.snapshot_id, "snap-000000000002");
    assert_eq!(s.source_volume_id, src);
    assert_eq!(s.size_bytes, GIB);
    assert!(s.ready_to_use);
    assert!(s.creation_time >= before && s.creation_time > 0);
    assert_eq!(
        fs::read(env.snap_dir(&s.snapshot_id).join("sub/dir/file")).unwrap(),
        b"v1"
    );

    // Later writes to the volume do not reach the snapshot.
    fs::write(env.vol_dir(&src).join("sub/dir/file"), b"v2").unwrap();
    let restored = d
        .create_volume(&from(
            "restored",
            ContentSource::Snapshot(s.snapshot_id.clone()),
        ))
        .unwrap();
    assert_eq!(
        restored.content_source,
        Some(ContentSource::Snapshot(s.snapshot_id.clone()))
    );
    let dir = env.vol_dir(&restored.volume_id);
    assert_eq!(fs::read(dir.join("sub/dir/file")).unwrap(), b"v1");
    assert_eq!(fs::read(dir.join("top")).unwrap(), b"top");

    // The source volume can go; the snapshot stays usable.
    d.delete_volume(&src).unwrap();
    assert_eq!(d.get_snapshot(&s.snapshot_id).unwrap(), s);
    let again = d
        .create_volume(&from(
            "again",
            ContentSource::Snapshot(s.snapshot_id.clone()),
        ))
        .unwrap();
    assert_eq!(
        fs::read(env.vol_dir(&again.volume_id).join("sub/dir/file")).unwrap(),
        b"v1"
    );
    // Idempotent restore, by name and source.
    assert_eq!(
        d.create_volume(&from(
            "again",
            ContentSource::Snapshot(s.snapshot_id.clone())
        ))
        .unwrap(),
        again
    );
}

#[test]
fn restore_errors() {
    let env = Env::new();
    let d = env.d();
    fails(
        d.create_volume(&from(
            "r",
            ContentSource::Snapshot("non-existing-snapshot-id".into()),
        )),
        ErrorCode::NotFound,
        "non-existing-snapshot-id",
    );
    let big = d
        .create_volume(&create_req("big", 4 * GIB, 0))
        .unwrap()
        .volume_id;
    let s = d.create_snapshot(&snap_req("s", &big)).unwrap();
    let mut small = from("small", ContentSource::Snapshot(s.snapshot_id.clone()));
    small.capacity_range = Some(CapacityRange {
        required_bytes: GIB,
        limit_bytes: 0,
    });
    fails(
        d.create_volume(&small),
        ErrorCode::OutOfRange,
        &s.snapshot_id,
    );
    assert!(env.kv.text("vname/small").is_none());
}

#[test]
fn clone_copies_the_source_volume() {
    let env = Env::new();
    let d = env.d();
    let src = env.create("src").volume_id;
    fs::create_dir_all(env.vol_dir(&src).join("a")).unwrap();
    fs::write(env.vol_dir(&src).join("a/f"), b"hello").unwrap();
    let c = d
        .create_volume(&from("clone", ContentSource::Volume(src.clone())))
        .unwrap();
    assert_eq!(c.content_source, Some(ContentSource::Volume(src.clone())));
    assert_eq!(
        fs::read(env.vol_dir(&c.volume_id).join("a/f")).unwrap(),
        b"hello"
    );
    fs::write(env.vol_dir(&c.volume_id).join("a/f"), b"changed").unwrap();
    assert_eq!(fs::read(env.vol_dir(&src).join("a/f")).unwrap(), b"hello");
    fails(
        d.create_volume(&from("c2", ContentSource::Volume("vol-404".into()))),
        ErrorCode::NotFound,
        "source volume vol-404 not found",
    );
    let big = d
        .create_volume(&create_req("big", 3 * GIB, 0))
        .unwrap()
        .volume_id;
    fails(
        d.create_volume(&from("c3", ContentSource::Volume(big))),
        ErrorCode::OutOfRange,
        "capacity",
    );
}

#[test]
fn create_snapshot_is_idempotent_by_name() {
    let env = Env::new();
    let d = env.d();
    let a = env.create("a").volume_id;
    let b = env.create("b").volume_id;
    let s = d.create_snapshot(&snap_req("s", &a)).unwrap();
    assert_eq!(d.create_snapshot(&snap_req("s", &a)).unwrap(), s);
    fails(
        d.create_snapshot(&snap_req("s", &b)),
        ErrorCode::AlreadyExists,
        "\"s\"",
    );
    fails(
        d.create_snapshot(&snap_req("t", "vol-404")),
        ErrorCode::NotFound,
        "source volume vol-404 not found",
    );
    fails(
        d.create_snapshot(&snap_req("", &a)),
        ErrorCode::InvalidArgument,
        "snapshot name",
    );
    fails(
        d.create_snapshot(&snap_req("u", "")),
        ErrorCode::InvalidArgument,
        "source volume id",
    );
    let long = "x".repeat(128);
    let l = d.create_snapshot(&snap_req(&long, &a)).unwrap();
    assert_eq!(d.create_snapshot(&snap_req(&long, &a)).unwrap(), l);
}

#[test]
fn delete_snapshot() {
    let env = Env::with(GET_SNAPSHOT);
    let d = env.d();
    let a = env.create("a").volume_id;
    let s = d.create_snapshot(&snap_req("s", &a)).unwrap().snapshot_id;
    d.delete_snapshot(&s).unwrap();
    assert!(!env.snap_dir(&s).exists());
    assert!(
        env.kv
            .keys()
            .iter()
            .all(|k| !k.starts_with("snap") && !k.starts_with("sname"))
    );
    d.delete_snapshot(&s).unwrap();
    d.delete_snapshot("reallyfakesnapshotid").unwrap();
    fails(
        d.delete_snapshot(""),
        ErrorCode::InvalidArgument,
        "snapshot id",
    );
    fails(d.get_snapshot(&s), ErrorCode::NotFound, &s);
    // The name is free again.
    assert_ne!(
        d.create_snapshot(&snap_req("s", &a)).unwrap().snapshot_id,
        s
    );
}

#[test]
fn list_snapshots_filters_and_pages() {
    let env = Env::new();
    let d = env.d();
    let a = env.create("a").volume_id;
    let b = env.create("b").volume_id;
    let sa: Vec<String> = (0..3)
        .map(|i| {
            d.create_snapshot(&snap_req(&format!("a{i}"), &a))
                .unwrap()
                .snapshot_id
        })
        .collect();
    let sb = d.create_snapshot(&snap_req("b0", &b)).unwrap().snapshot_id;

    let all = d.list_snapshots(&list_snaps(0, "", "", "")).unwrap();
    assert_eq!(all.entries.len(), 4);
    assert_eq!(all.next_token, "");
    let by_id = d.list_snapshots(&list_snaps(0, "", "", &sb)).unwrap();
    assert_eq!(by_id.entries.len(), 1);
    assert_eq!(by_id.entries[0].snapshot_id, sb);
    assert!(
        d.list_snapshots(&list_snaps(0, "", "", "none-exist-id"))
            .unwrap()
            .entries
            .is_empty()
    );
    assert!(
        d.list_snapshots(&list_snaps(0, "", &a, &sb))
            .unwrap()
            .entries
            .is_empty()
    );
    let by_src: Vec<_> = d
        .list_snapshots(&list_snaps(0, "", &a, ""))
        .unwrap()
        .entries
        .into_iter()
        .map(|s| s.snapshot_id)
        .collect();
    assert_eq!(by_src, sa);
    assert!(
        d.list_snapshots(&list_snaps(0, "", "vol-404", ""))
            .unwrap()
            .entries
            .is_empty()
    );

    let p1 = d.list_snapshots(&list_snaps(2, "", "", "")).unwrap();
    assert_eq!(p1.entries.len(), 2);
    let p2 = d
        .list_snapshots(&list_snaps(0, &p1.next_token, "", ""))
        .unwrap();
    assert_eq!(p2.entries.len(), 2);
    assert_eq!(p2.next_token, "");
    fails(
        d.list_snapshots(&list_snaps(0, "invalid-token", "", "")),
        ErrorCode::Aborted,
        "invalid-token",
    );
    fails(
        d.list_snapshots(&list_snaps(-3, "", "", "")),
        ErrorCode::InvalidArgument,
        "max-entries",
    );
}

// ---- node ----

#[test]
fn node_info_and_capabilities() {
    let env = Env::with(&[("node-id", "worker-7"), ("max-volumes-per-node", "16")]);
    let info = node::node_info(&env.d().cfg);
    assert_eq!(info.node_id, "worker-7");
    assert_eq!(info.max_volumes_per_node, 16);
    assert_eq!(info.accessible_topology, None);
    assert_eq!(
        node::node_info(&Env::new().d().cfg).node_id,
        "wasmgate-node"
    );
    assert_eq!(node::capabilities().len(), 4);
}

#[test]
fn stage_returns_a_bind_plan_and_is_idempotent() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("v").volume_id;
    let plan = d
        .stage_volume(&stage(&id, "/var/lib/kubelet/staging/x"))
        .unwrap();
    let want = vec![Mount {
        source: env.bind_of(&id),
        target: "/var/lib/kubelet/staging/x".into(),
        read_only: false,
        options: vec![],
    }];
    assert_eq!(plan, want);
    assert_eq!(
        d.stage_volume(&stage(&id, "/var/lib/kubelet/staging/x"))
            .unwrap(),
        want
    );
    assert!(
        env.kv
            .text(&format!("vol/{id}"))
            .unwrap()
            .contains("/var/lib/kubelet/staging/x")
    );
    fails(
        d.stage_volume(&stage("vol-404", "/s")),
        ErrorCode::NotFound,
        "vol-404",
    );
    let mut blk = stage(&id, "/s");
    blk.volume_capability = block();
    fails(
        d.stage_volume(&blk),
        ErrorCode::InvalidArgument,
        BLOCK_UNSUPPORTED,
    );
    fails(
        d.stage_volume(&stage(&id, "")),
        ErrorCode::InvalidArgument,
        "staging target path",
    );
}

#[test]
fn unstage_is_idempotent() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("v").volume_id;
    d.unstage_volume(&id, "/s").unwrap();
    d.unstage_volume("vol-404", "/s").unwrap();
    d.stage_volume(&stage(&id, "/s")).unwrap();
    d.unstage_volume(&id, "/s/").unwrap();
    assert!(
        !env.kv
            .text(&format!("vol/{id}"))
            .unwrap()
            .contains("\"/s\"")
    );
    d.unstage_volume(&id, "/s").unwrap();
    fails(
        d.unstage_volume("", "/s"),
        ErrorCode::InvalidArgument,
        "volume id",
    );
}

#[test]
fn publish_plans() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("v").volume_id;
    // Without staging: a bind from the volume directory.
    let plan = d
        .publish_volume(&publish(&id, "/pods/a/mount", "", false))
        .unwrap();
    assert_eq!(
        plan,
        vec![Mount {
            source: env.bind_of(&id),
            target: "/pods/a/mount".into(),
            read_only: false,
            options: vec![]
        }]
    );
    // With staging: from what stage mounted.
    d.stage_volume(&stage(&id, "/stage")).unwrap();
    let plan = d
        .publish_volume(&publish(&id, "/pods/b/mount", "/stage", true))
        .unwrap();
    assert_eq!(
        plan,
        vec![Mount {
            source: MountSource::Staged,
            target: "/pods/b/mount".into(),
            read_only: true,
            options: vec![]
        }]
    );
    fails(
        d.publish_volume(&publish(&id, "/pods/c/mount", "/elsewhere", false)),
        ErrorCode::FailedPrecondition,
        "not staged at /elsewhere",
    );
    // A reader-only access mode always mounts read-only.
    let mut ro = publish(&id, "/pods/d/mount", "", false);
    ro.volume_capability = mount_cap(AccessMode::MultiNodeReaderOnly);
    assert!(d.publish_volume(&ro).unwrap()[0].read_only);
    fails(
        d.publish_volume(&publish("vol-404", "/t", "", false)),
        ErrorCode::NotFound,
        "vol-404",
    );
    let mut blk = publish(&id, "/t", "", false);
    blk.volume_capability = block();
    fails(
        d.publish_volume(&blk),
        ErrorCode::InvalidArgument,
        BLOCK_UNSUPPORTED,
    );
    fails(
        d.publish_volume(&publish(&id, "", "", false)),
        ErrorCode::InvalidArgument,
        "target path",
    );
}

#[test]
fn publish_same_target_is_idempotent_and_readonly_conflicts() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("v").volume_id;
    let first = d.publish_volume(&publish(&id, "/t", "", false)).unwrap();
    assert_eq!(
        d.publish_volume(&publish(&id, "/t", "", false)).unwrap(),
        first
    );
    fails(
        d.publish_volume(&publish(&id, "/t", "", true)),
        ErrorCode::AlreadyExists,
        "readonly=false",
    );
    // A second target is fine.
    d.publish_volume(&publish(&id, "/t2", "", true)).unwrap();
}

#[test]
fn unpublish() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("v").volume_id;
    d.publish_volume(&publish(&id, "/t", "", false)).unwrap();
    d.unpublish_volume(&id, "/t").unwrap();
    d.unpublish_volume(&id, "/t").unwrap();
    d.unpublish_volume(&id, "/never").unwrap();
    fails(
        d.unpublish_volume("vol-404", "/t"),
        ErrorCode::NotFound,
        "volume vol-404 not found",
    );
    fails(
        d.unpublish_volume(&id, ""),
        ErrorCode::InvalidArgument,
        "target path",
    );
    // Nothing in use any more.
    d.delete_volume(&id).unwrap();
}

#[test]
fn ephemeral_volumes_live_from_publish_to_unpublish() {
    let env = Env::with(&[("default-volume-bytes", "2Gi")]);
    let d = env.d();
    let id = "csi-0123456789abcdef";
    let plan = d.publish_volume(&ephemeral(id, "/pods/e/mount")).unwrap();
    assert_eq!(
        plan,
        vec![Mount {
            source: env.bind_of(id),
            target: "/pods/e/mount".into(),
            read_only: false,
            options: vec![]
        }]
    );
    assert!(env.vol_dir(id).is_dir());
    assert_eq!(d.get_volume(id).unwrap().volume.capacity_bytes, 2 * GIB);
    assert!(env.kv.keys().iter().all(|k| !k.starts_with("vname/")));
    // Retried publish: same plan, still one volume.
    assert_eq!(
        d.publish_volume(&ephemeral(id, "/pods/e/mount")).unwrap(),
        plan
    );
    assert!(
        d.volume_stats(&stats(id, "/pods/e/mount"))
            .unwrap()
            .is_some()
    );
    fs::write(env.vol_dir(id).join("scratch"), b"x").unwrap();
    d.unpublish_volume(id, "/pods/e/mount").unwrap();
    assert!(!env.vol_dir(id).exists());
    assert!(
        env.kv.keys().iter().all(|k| !k.starts_with("vol/")),
        "{:?}",
        env.kv.keys()
    );
    assert_eq!(d.available().unwrap(), 100 * GIB);

    // Size from the volume context; unusable IDs are refused.
    let mut sized = ephemeral("csi-sized", "/pods/f/mount");
    sized.volume_context.push(("size".into(), "512Mi".into()));
    d.publish_volume(&sized).unwrap();
    assert_eq!(
        d.get_volume("csi-sized").unwrap().volume.capacity_bytes,
        512 << 20
    );
    fails(
        d.publish_volume(&ephemeral("../escape", "/t")),
        ErrorCode::InvalidArgument,
        "cannot name a directory",
    );
    fails(
        d.publish_volume(&ephemeral(".hidden", "/t")),
        ErrorCode::InvalidArgument,
        "cannot name a directory",
    );
}

#[test]
fn ephemeral_volumes_count_against_capacity() {
    let env = Env::with(&[("capacity-bytes", "1Gi")]);
    let d = env.d();
    d.publish_volume(&ephemeral("csi-a", "/a")).unwrap();
    fails(
        d.publish_volume(&ephemeral("csi-b", "/b")),
        ErrorCode::ResourceExhausted,
        "csi-b",
    );
    fails(
        d.create_volume(&create_req("c", 0, 0)),
        ErrorCode::ResourceExhausted,
        "\"c\"",
    );
}

#[test]
fn volume_stats_needs_a_published_or_staged_path() {
    let env = Env::new();
    let d = env.d();
    let id = env.create("v").volume_id;
    fails(
        d.volume_stats(&stats(&id, "some/path")),
        ErrorCode::NotFound,
        "not published at some/path",
    );
    fails(
        d.volume_stats(&stats("vol-404", "some/path")),
        ErrorCode::NotFound,
        "vol-404",
    );
    fails(
        d.volume_stats(&stats(&id, "")),
        ErrorCode::InvalidArgument,
        "volume path",
    );
    d.stage_volume(&stage(&id, "/stage")).unwrap();
    d.publish_volume(&publish(&id, "/target", "/stage", false))
        .unwrap();
    let c = d.volume_stats(&stats(&id, "/target")).unwrap().unwrap();
    assert!(!c.abnormal);
    assert!(d.volume_stats(&stats(&id, "/stage/")).unwrap().is_some());
    fs::remove_dir_all(env.vol_dir(&id)).unwrap();
    let c = d.volume_stats(&stats(&id, "/target")).unwrap().unwrap();
    assert!(c.abnormal);
    assert!(c.message.contains(&id));
}

#[test]
fn node_lifecycle_with_attach_required() {
    // csi-sanity's "Node Service should work", end to end.
    let env = Env::with(&[("attach-required", "true"), ("node-id", "n1")]);
    let d = env.d();
    let id = d
        .create_volume(&create_req("full", 10 * GIB, 0))
        .unwrap()
        .volume_id;
    d.controller_publish(&ctl_publish(&id, "n1", false))
        .unwrap();
    for _ in 0..2 {
        d.stage_volume(&stage(&id, "/staging")).unwrap();
    }
    for _ in 0..2 {
        d.publish_volume(&publish(&id, "/target/target", "/staging", false))
            .unwrap();
    }
    d.volume_stats(&stats(&id, "/target/target")).unwrap();
    for _ in 0..2 {
        d.unpublish_volume(&id, "/target/target").unwrap();
        d.unstage_volume(&id, "/staging").unwrap();
        d.controller_unpublish(&id, "n1").unwrap();
    }
    d.delete_volume(&id).unwrap();
    d.delete_volume(&id).unwrap();
    assert_eq!(env.kv.keys(), vec!["seq".to_string()]);
}

// ---- latency and concurrency ----

#[test]
fn latency_ms_slows_mutating_calls_only() {
    let env = Env::with(&[("latency-ms", "60")]);
    let d = env.d();
    let t = Instant::now();
    let id = env.create("slow").volume_id;
    assert!(t.elapsed() >= Duration::from_millis(60));
    let t = Instant::now();
    d.get_volume(&id).unwrap();
    d.list_volumes(&list(0, "")).unwrap();
    assert!(t.elapsed() < Duration::from_millis(60));
}

#[test]
fn concurrent_creates_on_different_names_overlap_and_get_distinct_ids() {
    let env = Env::with(&[("latency-ms", "100")]);
    let t = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let env = &env;
                s.spawn(move || env.create(&format!("pvc-{i}")).volume_id)
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "calls did not overlap: {:?}",
        t.elapsed()
    );
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 8);
    assert_eq!(env.d().list_volumes(&list(0, "")).unwrap().entries.len(), 8);
}

#[test]
fn a_retry_finishes_a_half_made_snapshot_and_ephemeral_volume() {
    let env = Env::new();
    let d = env.d();
    let src = env.create("src").volume_id;
    fs::write(env.vol_dir(&src).join("f"), b"data").unwrap();
    // Crash after the snapshot's name was recorded, before its record and copy.
    env.kv
        .map
        .lock()
        .unwrap()
        .insert("sname/s".into(), b"snap-000000000009".to_vec());
    assert!(
        d.list_snapshots(&list_snaps(0, "", "", ""))
            .unwrap()
            .entries
            .is_empty()
    );
    let s = d.create_snapshot(&snap_req("s", &src)).unwrap();
    assert_eq!(s.snapshot_id, "snap-000000000009");
    assert_eq!(
        fs::read(env.snap_dir(&s.snapshot_id).join("f")).unwrap(),
        b"data"
    );

    // Crash after an ephemeral volume's unfinished record: the retried publish completes it and
    // does not count its capacity twice.
    let rec = r#"{"id":"csi-e","capacity":1073741824,"ephemeral":true,"ready":false}"#;
    env.kv
        .map
        .lock()
        .unwrap()
        .insert("vol/csi-e".into(), rec.as_bytes().to_vec());
    fails(d.get_volume("csi-e"), ErrorCode::NotFound, "csi-e");
    fails(
        d.unpublish_volume("csi-e", "/t"),
        ErrorCode::NotFound,
        "csi-e",
    );
    d.publish_volume(&ephemeral("csi-e", "/t")).unwrap();
    assert!(env.vol_dir("csi-e").is_dir());
    assert_eq!(d.allocated().unwrap(), 2 * GIB);
}
