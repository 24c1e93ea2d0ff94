//! `wasmgate csi`: a small CSI client, in the manner of `csc`, for driving a volume by hand
//! through a driver's unix socket: the same RPCs kubelet and the external-provisioner sidecars
//! make, one per command.
//!
//! Output is readable text, or with `--json` the response as JSON (proto field names; enums by
//! their proto names; maps sorted). `create` and `snapshot` print the new `Volume` or `Snapshot`
//! itself, so that `jq -r .volume_id` finds the ID; the lists span every page. A gRPC error prints `error: <CODE>: <message>` on stderr and
//! exits 2; not reaching the socket exits 1.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};
use tonic::transport::Channel;
use wasmgate_daemon::config::CsiSection;
use wasmgate_proto::csi::v1 as pb;
use wasmgate_proto::csi::v1::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};

/// The volume-context key that marks a CSI inline ephemeral volume.
const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";

#[derive(clap::Args)]
#[command(after_help = "\
Sizes are a byte count or carry a suffix: Ki, Mi, Gi, Ti, Pi (binary) or k, M, G, T, P (decimal).
Exit status: 0 on success, 2 when the driver returns a gRPC error (printed as
`error: <CODE>: <message>`), 1 when the socket cannot be reached.")]
pub struct Args {
    /// The CSI driver's unix socket (`[csi] socket` in the daemon config).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value_os_t = CsiSection::default().socket_path(),
        display_order = 100
    )]
    socket: PathBuf,
    /// Print the response as JSON instead of text.
    #[arg(long, global = true, display_order = 101)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Summarise the driver: GetPluginInfo, GetPluginCapabilities, Probe,
    /// ControllerGetCapabilities, NodeGetCapabilities and NodeGetInfo.
    Info,
    /// Create a volume (CreateVolume); prints its ID and capacity.
    Create(CreateArgs),
    /// Delete a volume (DeleteVolume).
    Delete { volume_id: String },
    /// List every volume (ListVolumes, following next_token).
    List,
    /// The capacity the driver can still provision (GetCapacity).
    Capacity,
    /// Grow a volume to SIZE (ControllerExpandVolume).
    Expand {
        volume_id: String,
        #[arg(value_parser = parse_size)]
        size: i64,
    },
    /// Snapshot a volume (CreateSnapshot).
    Snapshot { name: String, volume_id: String },
    /// List snapshots (ListSnapshots, following next_token).
    Snapshots {
        /// Only the snapshots of this source volume.
        #[arg(long, value_name = "ID")]
        volume: Option<String>,
    },
    /// Delete a snapshot (DeleteSnapshot).
    DeleteSnapshot { snapshot_id: String },
    /// Stage a volume at STAGING_PATH, as kubelet does once per node (NodeStageVolume). The
    /// daemon accepts only paths under `<kubelet_dir>/plugins/kubernetes.io/csi/`.
    Stage {
        volume_id: String,
        staging_path: PathBuf,
        #[command(flatten)]
        cap: CapArgs,
    },
    /// Undo `stage` (NodeUnstageVolume).
    Unstage {
        volume_id: String,
        staging_path: PathBuf,
    },
    /// Publish a volume at TARGET_PATH, as kubelet does once per pod (NodePublishVolume). The
    /// daemon accepts only paths under `<kubelet_dir>/pods/`.
    Publish {
        volume_id: String,
        target_path: PathBuf,
        /// The path the volume was staged at.
        #[arg(long, value_name = "PATH")]
        staging: Option<PathBuf>,
        /// Publish read-only.
        #[arg(long)]
        readonly: bool,
        /// An inline ephemeral volume: sets `csi.storage.k8s.io/ephemeral=true` in the volume
        /// context, and the driver creates the volume under VOLUME_ID.
        #[arg(long)]
        ephemeral: bool,
        /// A volume-context entry (repeatable), e.g. `--context size=64Mi` for an ephemeral volume.
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
        context: Vec<(String, String)>,
        #[command(flatten)]
        cap: CapArgs,
    },
    /// Undo `publish` (NodeUnpublishVolume).
    Unpublish {
        volume_id: String,
        target_path: PathBuf,
    },
    /// Usage and condition of a volume staged or published at PATH (NodeGetVolumeStats).
    Stats { volume_id: String, path: PathBuf },
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The volume's name; creating the same name again returns the same volume.
    name: String,
    /// The capacity asked for (`required_bytes`); without it the driver's default.
    #[arg(long, value_parser = parse_size)]
    size: Option<i64>,
    /// Fill the volume from this snapshot.
    #[arg(long, value_name = "ID", conflicts_with = "from_volume")]
    from_snapshot: Option<String>,
    /// Clone this volume.
    #[arg(long, value_name = "ID")]
    from_volume: Option<String>,
    /// A driver parameter, as a StorageClass gives them (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    param: Vec<(String, String)>,
    #[command(flatten)]
    cap: CapArgs,
}

/// The volume capability a command asks for.
#[derive(clap::Args)]
struct CapArgs {
    /// A raw block volume instead of a mounted filesystem.
    #[arg(long)]
    block: bool,
    /// The access mode.
    #[arg(long, value_enum, default_value_t = Mode::SingleNodeWriter)]
    mode: Mode,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    SingleNodeWriter,
    SingleNodeReaderOnly,
    MultiNodeReaderOnly,
    MultiNodeSingleWriter,
    MultiNodeMultiWriter,
    SingleNodeSingleWriter,
    SingleNodeMultiWriter,
}

impl CapArgs {
    fn capability(&self) -> pb::VolumeCapability {
        use pb::volume_capability::{
            AccessMode, AccessType, BlockVolume, MountVolume, access_mode,
        };
        let mode = match self.mode {
            Mode::SingleNodeWriter => access_mode::Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly => access_mode::Mode::SingleNodeReaderOnly,
            Mode::MultiNodeReaderOnly => access_mode::Mode::MultiNodeReaderOnly,
            Mode::MultiNodeSingleWriter => access_mode::Mode::MultiNodeSingleWriter,
            Mode::MultiNodeMultiWriter => access_mode::Mode::MultiNodeMultiWriter,
            Mode::SingleNodeSingleWriter => access_mode::Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter => access_mode::Mode::SingleNodeMultiWriter,
        };
        pb::VolumeCapability {
            access_type: Some(if self.block {
                AccessType::Block(BlockVolume {})
            } else {
                AccessType::Mount(MountVolume::default())
            }),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    let json = args.json;
    match rt.block_on(call(args)) {
        Ok(out) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&out.json)?);
            } else {
                print!("{}", out.text);
            }
            Ok(())
        }
        Err(e) => {
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                eprintln!("error: {}: {}", code_name(status.code()), status.message());
                std::process::exit(2);
            }
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// What a command prints: `json` with `--json`, else `text` (complete lines).
struct Output {
    json: Value,
    text: String,
}

impl Output {
    /// An RPC with an empty response: `{}`, and a line saying what was done.
    fn done(text: String) -> Self {
        Self {
            json: json!({}),
            text: text + "\n",
        }
    }
}

struct Clients {
    identity: IdentityClient<Channel>,
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
}

async fn connect(socket: &Path) -> anyhow::Result<Clients> {
    let ch = wasmgate_proto::unix_channel(socket).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to {}: {}; is wasmgate serve running with a [csi] section?",
            socket.display(),
            causes(&e)
        )
    })?;
    Ok(Clients {
        identity: IdentityClient::new(ch.clone()),
        controller: ControllerClient::new(ch.clone()),
        node: NodeClient::new(ch),
    })
}

/// An error and its sources as one line, leaving out tonic's uninformative "transport error".
pub(super) fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let s = err.to_string();
        if s != "transport error" && !parts.contains(&s) {
            parts.push(s);
        }
        next = err.source();
    }
    if parts.is_empty() {
        "transport error".to_string()
    } else {
        parts.join(": ")
    }
}

async fn call(args: Args) -> anyhow::Result<Output> {
    let mut c = connect(&args.socket).await?;
    Ok(match args.command {
        Command::Info => info(&mut c).await?,
        Command::Create(a) => create(&mut c, a).await?,
        Command::Delete { volume_id } => {
            c.controller
                .delete_volume(pb::DeleteVolumeRequest {
                    volume_id: volume_id.clone(),
                    ..Default::default()
                })
                .await?;
            Output::done(format!("deleted volume {volume_id}"))
        }
        Command::List => list(&mut c).await?,
        Command::Capacity => {
            let r = c
                .controller
                .get_capacity(pb::GetCapacityRequest::default())
                .await?
                .into_inner();
            Output {
                json: json!({
                    "available_capacity": r.available_capacity,
                    "maximum_volume_size": r.maximum_volume_size,
                    "minimum_volume_size": r.minimum_volume_size,
                }),
                text: fields(&[
                    ("available", size(r.available_capacity)),
                    (
                        "maximum volume",
                        r.maximum_volume_size.map_or("-".into(), size),
                    ),
                    (
                        "minimum volume",
                        r.minimum_volume_size.map_or("-".into(), size),
                    ),
                ]),
            }
        }
        Command::Expand {
            volume_id,
            size: bytes,
        } => {
            let r = c
                .controller
                .controller_expand_volume(pb::ControllerExpandVolumeRequest {
                    volume_id: volume_id.clone(),
                    capacity_range: Some(pb::CapacityRange {
                        required_bytes: bytes,
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Output {
                json: json!({
                    "capacity_bytes": r.capacity_bytes,
                    "node_expansion_required": r.node_expansion_required,
                }),
                text: fields(&[
                    ("volume_id", volume_id),
                    ("capacity", size(r.capacity_bytes)),
                    ("node expansion", yes_no(r.node_expansion_required).into()),
                ]),
            }
        }
        Command::Snapshot { name, volume_id } => {
            let s = c
                .controller
                .create_snapshot(pb::CreateSnapshotRequest {
                    source_volume_id: volume_id,
                    name,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .snapshot
                .context("CreateSnapshot returned no snapshot")?;
            Output {
                json: snapshot_json(&s),
                text: fields(&[
                    ("snapshot_id", s.snapshot_id.clone()),
                    ("source volume", s.source_volume_id.clone()),
                    ("size", size(s.size_bytes)),
                    ("ready", yes_no(s.ready_to_use).into()),
                    ("created", created(&s)),
                ]),
            }
        }
        Command::Snapshots { volume } => snapshots(&mut c, volume.unwrap_or_default()).await?,
        Command::DeleteSnapshot { snapshot_id } => {
            c.controller
                .delete_snapshot(pb::DeleteSnapshotRequest {
                    snapshot_id: snapshot_id.clone(),
                    ..Default::default()
                })
                .await?;
            Output::done(format!("deleted snapshot {snapshot_id}"))
        }
        Command::Stage {
            volume_id,
            staging_path,
            cap,
        } => {
            let path = absolute(&staging_path)?;
            c.node
                .node_stage_volume(pb::NodeStageVolumeRequest {
                    volume_id: volume_id.clone(),
                    staging_target_path: path.clone(),
                    volume_capability: Some(cap.capability()),
                    ..Default::default()
                })
                .await?;
            Output::done(format!("staged {volume_id} at {path}"))
        }
        Command::Unstage {
            volume_id,
            staging_path,
        } => {
            let path = absolute(&staging_path)?;
            c.node
                .node_unstage_volume(pb::NodeUnstageVolumeRequest {
                    volume_id: volume_id.clone(),
                    staging_target_path: path.clone(),
                })
                .await?;
            Output::done(format!("unstaged {volume_id} from {path}"))
        }
        Command::Publish {
            volume_id,
            target_path,
            staging,
            readonly,
            ephemeral,
            context,
            cap,
        } => {
            let path = absolute(&target_path)?;
            let mut volume_context: HashMap<String, String> = context.into_iter().collect();
            if ephemeral {
                volume_context.insert(EPHEMERAL_KEY.to_string(), "true".to_string());
            }
            c.node
                .node_publish_volume(pb::NodePublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    staging_target_path: match &staging {
                        Some(s) => absolute(s)?,
                        None => String::new(),
                    },
                    target_path: path.clone(),
                    volume_capability: Some(cap.capability()),
                    readonly,
                    volume_context,
                    ..Default::default()
                })
                .await?;
            Output::done(format!(
                "published {volume_id} at {path}{}",
                if readonly { " (read-only)" } else { "" }
            ))
        }
        Command::Unpublish {
            volume_id,
            target_path,
        } => {
            let path = absolute(&target_path)?;
            c.node
                .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    target_path: path.clone(),
                })
                .await?;
            Output::done(format!("unpublished {volume_id} from {path}"))
        }
        Command::Stats { volume_id, path } => {
            let r = c
                .node
                .node_get_volume_stats(pb::NodeGetVolumeStatsRequest {
                    volume_id,
                    volume_path: absolute(&path)?,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let usage: Vec<Value> = r
                .usage
                .iter()
                .map(|u| {
                    json!({
                        "available": u.available,
                        "total": u.total,
                        "used": u.used,
                        "unit": name_of(u.unit, pb::volume_usage::Unit::as_str_name),
                    })
                })
                .collect();
            let mut text = table(
                &["UNIT", "TOTAL", "USED", "AVAILABLE"],
                r.usage
                    .iter()
                    .map(|u| {
                        vec![
                            name_of(u.unit, pb::volume_usage::Unit::as_str_name),
                            u.total.to_string(),
                            u.used.to_string(),
                            u.available.to_string(),
                        ]
                    })
                    .collect(),
            );
            text.push_str(&format!("condition: {}\n", condition(&r.volume_condition)));
            Output {
                json: json!({
                    "usage": usage,
                    "volume_condition": condition_json(&r.volume_condition),
                }),
                text,
            }
        }
    })
}

async fn info(c: &mut Clients) -> anyhow::Result<Output> {
    use pb::plugin_capability::{Type, service, volume_expansion};
    let plugin = c
        .identity
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await?
        .into_inner();
    let plugin_caps = c
        .identity
        .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
        .await?
        .into_inner()
        .capabilities;
    let ready = c
        .identity
        .probe(pb::ProbeRequest {})
        .await?
        .into_inner()
        .ready;
    let mut has_controller = false;
    let mut plugin_json = Vec::new();
    let mut plugin_text = Vec::new();
    for cap in &plugin_caps {
        match &cap.r#type {
            Some(Type::Service(s)) => {
                has_controller |= s.r#type == service::Type::ControllerService as i32;
                let name = name_of(s.r#type, service::Type::as_str_name);
                plugin_json.push(json!({ "service": name }));
                plugin_text.push(name);
            }
            Some(Type::VolumeExpansion(v)) => {
                let name = name_of(v.r#type, volume_expansion::Type::as_str_name);
                plugin_json.push(json!({ "volume_expansion": name }));
                plugin_text.push(format!("VOLUME_EXPANSION={name}"));
            }
            None => {}
        }
    }
    // A node-only driver need not serve the controller service at all.
    let controller_caps = if has_controller {
        let caps = c
            .controller
            .controller_get_capabilities(pb::ControllerGetCapabilitiesRequest {})
            .await?
            .into_inner()
            .capabilities;
        Some(
            caps.iter()
                .filter_map(|cap| {
                    let pb::controller_service_capability::Type::Rpc(r) = cap.r#type.as_ref()?;
                    Some(name_of(
                        r.r#type,
                        pb::controller_service_capability::rpc::Type::as_str_name,
                    ))
                })
                .collect::<Vec<_>>(),
        )
    } else {
        None
    };
    let node_caps: Vec<String> = c
        .node
        .node_get_capabilities(pb::NodeGetCapabilitiesRequest {})
        .await?
        .into_inner()
        .capabilities
        .iter()
        .filter_map(|cap| {
            let pb::node_service_capability::Type::Rpc(r) = cap.r#type.as_ref()?;
            Some(name_of(
                r.r#type,
                pb::node_service_capability::rpc::Type::as_str_name,
            ))
        })
        .collect();
    let node = c
        .node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await?
        .into_inner();
    let json = json!({
        "name": plugin.name,
        "vendor_version": plugin.vendor_version,
        "manifest": sorted(&plugin.manifest),
        "plugin_capabilities": plugin_json,
        "ready": ready,
        "controller_capabilities": controller_caps,
        "node_capabilities": node_caps,
        "node_id": node.node_id,
        "max_volumes_per_node": node.max_volumes_per_node,
        "accessible_topology": node.accessible_topology.as_ref().map(topology_json),
    });
    let text = fields(&[
        ("driver", plugin.name.clone()),
        ("vendor version", plugin.vendor_version.clone()),
        ("manifest", pairs(&plugin.manifest)),
        (
            "ready",
            ready.map_or("not reported".into(), |r| r.to_string()),
        ),
        ("plugin", list_or_dash(&plugin_text)),
        (
            "controller",
            controller_caps.map_or("- (no controller service)".into(), |c| list_or_dash(&c)),
        ),
        ("node", list_or_dash(&node_caps)),
        ("node id", node.node_id.clone()),
        (
            "max volumes",
            match node.max_volumes_per_node {
                0 => "unlimited".into(),
                n => n.to_string(),
            },
        ),
        (
            "topology",
            node.accessible_topology
                .as_ref()
                .map_or("-".into(), |t| pairs(&t.segments)),
        ),
    ]);
    Ok(Output { json, text })
}

async fn create(c: &mut Clients, a: CreateArgs) -> anyhow::Result<Output> {
    use pb::volume_content_source::{SnapshotSource, Type, VolumeSource};
    let source = match (a.from_snapshot, a.from_volume) {
        (Some(snapshot_id), _) => Some(Type::Snapshot(SnapshotSource { snapshot_id })),
        (None, Some(volume_id)) => Some(Type::Volume(VolumeSource { volume_id })),
        (None, None) => None,
    };
    let v = c
        .controller
        .create_volume(pb::CreateVolumeRequest {
            name: a.name,
            capacity_range: a.size.map(|required_bytes| pb::CapacityRange {
                required_bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![a.cap.capability()],
            parameters: a.param.into_iter().collect(),
            volume_content_source: source.map(|t| pb::VolumeContentSource { r#type: Some(t) }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .volume
        .context("CreateVolume returned no volume")?;
    Ok(Output {
        json: volume_json(&v),
        text: fields(&[
            ("volume_id", v.volume_id.clone()),
            ("capacity", size(v.capacity_bytes)),
            ("source", source_text(&v.content_source)),
            ("context", pairs(&v.volume_context)),
        ]),
    })
}

async fn list(c: &mut Clients) -> anyhow::Result<Output> {
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .controller
            .list_volumes(pb::ListVolumesRequest {
                max_entries: 0,
                starting_token: token.clone(),
            })
            .await?
            .into_inner();
        entries.extend(r.entries);
        if r.next_token.is_empty() {
            break;
        }
        anyhow::ensure!(
            r.next_token != token,
            "ListVolumes returned its starting token {token:?} as next_token"
        );
        token = r.next_token;
    }
    let json = json!({
        "entries": entries.iter().map(|e| json!({
            "volume": e.volume.as_ref().map(volume_json),
            "status": e.status.as_ref().map(|s| json!({
                "published_node_ids": s.published_node_ids,
                "volume_condition": condition_json(&s.volume_condition),
            })),
        })).collect::<Vec<_>>(),
        "next_token": "",
    });
    let rows = entries
        .iter()
        .map(|e| {
            let v = e.volume.clone().unwrap_or_default();
            let (nodes, cond) = match &e.status {
                Some(s) => (
                    list_or_dash(&s.published_node_ids),
                    condition(&s.volume_condition),
                ),
                None => ("-".into(), "-".into()),
            };
            vec![
                v.volume_id,
                size(v.capacity_bytes),
                source_text(&v.content_source),
                nodes,
                cond,
            ]
        })
        .collect::<Vec<_>>();
    let text = if rows.is_empty() {
        "no volumes\n".to_string()
    } else {
        table(
            &[
                "VOLUME ID",
                "CAPACITY",
                "SOURCE",
                "PUBLISHED ON",
                "CONDITION",
            ],
            rows,
        )
    };
    Ok(Output { json, text })
}

async fn snapshots(c: &mut Clients, source_volume_id: String) -> anyhow::Result<Output> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .controller
            .list_snapshots(pb::ListSnapshotsRequest {
                source_volume_id: source_volume_id.clone(),
                starting_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(r.entries.into_iter().filter_map(|e| e.snapshot));
        if r.next_token.is_empty() {
            break;
        }
        anyhow::ensure!(
            r.next_token != token,
            "ListSnapshots returned its starting token {token:?} as next_token"
        );
        token = r.next_token;
    }
    let json = json!({
        "entries": all.iter().map(|s| json!({ "snapshot": snapshot_json(s) })).collect::<Vec<_>>(),
        "next_token": "",
    });
    let text = if all.is_empty() {
        "no snapshots\n".to_string()
    } else {
        table(
            &["SNAPSHOT ID", "SOURCE VOLUME", "SIZE", "READY", "CREATED"],
            all.iter()
                .map(|s| {
                    vec![
                        s.snapshot_id.clone(),
                        s.source_volume_id.clone(),
                        size(s.size_bytes),
                        yes_no(s.ready_to_use).into(),
                        created(s),
                    ]
                })
                .collect(),
        )
    };
    Ok(Output { json, text })
}

// ---- arguments ----

/// A byte count, plain or with a binary (`Ki` … `Pi`) or decimal (`k` … `P`) suffix.
fn parse_size(s: &str) -> Result<i64, String> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let bad = || format!("expected a byte count such as 1073741824, 64Mi or 1G, got {s:?}");
    let n: i64 = number.parse().map_err(|_| bad())?;
    let unit: i64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("{s} is more than {} bytes", i64::MAX))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// CSI wants absolute paths; make a relative one absolute against the working directory.
fn absolute(p: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(p).with_context(|| format!("resolve {}", p.display()))?;
    abs.to_str()
        .map(String::from)
        .with_context(|| format!("{} is not UTF-8", abs.display()))
}

// ---- output ----

/// The gRPC status code as the gRPC spec names it, e.g. `INVALID_ARGUMENT`.
pub(super) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An enum field by its proto name, or `UNKNOWN(<n>)` for a value this schema lacks.
fn name_of<T: TryFrom<i32>>(value: i32, name: fn(&T) -> &'static str) -> String {
    T::try_from(value)
        .map(|t| name(&t).to_string())
        .unwrap_or_else(|_| format!("UNKNOWN({value})"))
}

/// `67108864 (64Mi)`, or just the count when no binary suffix divides it.
fn size(bytes: i64) -> String {
    const UNITS: [(&str, i64); 5] = [
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    match UNITS.iter().find(|(_, u)| bytes > 0 && bytes % u == 0) {
        Some((suffix, u)) => format!("{bytes} ({}{suffix})", bytes / u),
        None => bytes.to_string(),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn sorted(m: &HashMap<String, String>) -> BTreeMap<&String, &String> {
    m.iter().collect()
}

/// `k1=v1, k2=v2` in key order, or `-`.
fn pairs(m: &HashMap<String, String>) -> String {
    let v: Vec<String> = sorted(m)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    list_or_dash(&v)
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

/// `label: value` lines with the values aligned.
fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// Columns padded to their widest cell; the last is not padded.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn source_text(s: &Option<pb::VolumeContentSource>) -> String {
    use pb::volume_content_source::Type;
    match s.as_ref().and_then(|s| s.r#type.as_ref()) {
        Some(Type::Snapshot(x)) => format!("snapshot {}", x.snapshot_id),
        Some(Type::Volume(x)) => format!("volume {}", x.volume_id),
        None => "-".to_string(),
    }
}

fn source_json(s: &Option<pb::VolumeContentSource>) -> Value {
    use pb::volume_content_source::Type;
    match s.as_ref().and_then(|s| s.r#type.as_ref()) {
        Some(Type::Snapshot(x)) => json!({ "snapshot": { "snapshot_id": x.snapshot_id } }),
        Some(Type::Volume(x)) => json!({ "volume": { "volume_id": x.volume_id } }),
        None => Value::Null,
    }
}

fn topology_json(t: &pb::Topology) -> Value {
    json!({ "segments": sorted(&t.segments) })
}

fn volume_json(v: &pb::Volume) -> Value {
    json!({
        "volume_id": v.volume_id,
        "capacity_bytes": v.capacity_bytes,
        "volume_context": sorted(&v.volume_context),
        "content_source": source_json(&v.content_source),
        "accessible_topology": v.accessible_topology.iter().map(topology_json).collect::<Vec<_>>(),
    })
}

fn condition(c: &Option<pb::VolumeCondition>) -> String {
    match c {
        None => "-".to_string(),
        Some(c) if c.abnormal => format!("abnormal: {}", c.message),
        Some(c) if c.message.is_empty() => "ok".to_string(),
        Some(c) => format!("ok: {}", c.message),
    }
}

fn condition_json(c: &Option<pb::VolumeCondition>) -> Value {
    match c {
        None => Value::Null,
        Some(c) => json!({ "abnormal": c.abnormal, "message": c.message }),
    }
}

fn created(s: &pb::Snapshot) -> String {
    match &s.creation_time {
        Some(t) if t.seconds >= 0 => super::plugin::utc(t.seconds as u64),
        _ => "-".to_string(),
    }
}

fn snapshot_json(s: &pb::Snapshot) -> Value {
    json!({
        "snapshot_id": s.snapshot_id,
        "source_volume_id": s.source_volume_id,
        "size_bytes": s.size_bytes,
        "creation_time": s.creation_time.as_ref().filter(|t| t.seconds >= 0).map(|t| super::plugin::utc(t.seconds as u64)),
        "ready_to_use": s.ready_to_use,
        "group_snapshot_id": s.group_snapshot_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64Mi"), Ok(64 << 20));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("2k"), Ok(2000));
        assert_eq!(parse_size("3G"), Ok(3_000_000_000));
        assert!(parse_size("").is_err());
        assert!(parse_size("Mi").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5Gi").is_err());
        assert!(parse_size("64MB").is_err());
        assert!(parse_size("9000000Pi").is_err());
    }

    #[test]
    fn sizes_print_with_the_largest_exact_suffix() {
        assert_eq!(size(64 << 20), "67108864 (64Mi)");
        assert_eq!(size(1536 << 20), "1610612736 (1536Mi)");
        assert_eq!(size(1500), "1500");
        assert_eq!(size(0), "0");
    }

    #[test]
    fn key_values_split_on_the_first_equals() {
        assert_eq!(
            parse_key_value("a=b=c"),
            Ok(("a".to_string(), "b=c".to_string()))
        );
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("x").is_err());
    }
}
