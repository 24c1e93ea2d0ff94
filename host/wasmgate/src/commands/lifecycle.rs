//! `wasmgate lifecycle`: plays one pod's life against a running wasmgate, the way kubelet and a
//! container runtime would drive it, and prints each step with its result and duration.
//!
//! Setup: RunPodSandbox (CRI), and a check that the runtime networked the pod as kubelet expects
//! of it (an IP in PodSandboxStatus, a network namespace holding it on `eth0`, `lo` up); a CSI
//! volume created, staged, published and written through (when a CSI socket exists), PullImage,
//! CreateContainer (env `DEMO=1`, the volume at `/data`) and StartContainer. Checks:
//! PodSandboxStatus, ContainerStatus, ExecSync `env` (which shows what runtime hooks injected)
//! and ListContainers. Teardown undoes exactly what setup created, in reverse order, and runs
//! after a failure too, then checks that StopPodSandbox took the pod's network away; the command
//! then exits 1 if any step failed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::{Map, Value, json};
use tonic::transport::Channel;
use wasmgate_daemon::config::{CriSection, CsiSection};
use wasmgate_proto::cri::v1 as cri;
use wasmgate_proto::cri::v1::image_service_client::ImageServiceClient;
use wasmgate_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use wasmgate_proto::csi::v1 as csi;
use wasmgate_proto::csi::v1::controller_client::ControllerClient;
use wasmgate_proto::csi::v1::node_client::NodeClient;

use super::csi::{causes, code_name};

const POD_NAME: &str = "lifecycle-demo";
const NAMESPACE: &str = "default";
const CONTAINER_NAME: &str = "demo";
/// The pod's interface, as kubelet's runtimes name it.
const POD_IFNAME: &str = "eth0";
const IMAGE: &str = "busybox";
const VOLUME_BYTES: i64 = 16 << 20;
/// Where the container sees the published volume.
const CONTAINER_PATH: &str = "/data";
/// The file written through the published volume.
const DEMO_FILE: &str = "lifecycle-demo.txt";
/// No single step may take longer than this (a runtime times its CNI plugins out sooner).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
#[command(after_help = "\
Steps: RunPodSandbox; pod network (the runtime reports the pod's IP, and the network namespace it
reports holds it on eth0 with lo up); CreateVolume (16Mi), NodeStageVolume, NodePublishVolume and
a file written through it, when the CSI socket exists; PullImage busybox, CreateContainer (sleep
3600, env DEMO=1, the volume at /data), StartContainer; PodSandboxStatus, ContainerStatus,
ExecSync env, ListContainers; then the teardown of everything created, in reverse order, which
also runs after a failure, with a check that StopPodSandbox removed the pod's network.

The runtime does the networking, as containerd does: wasmgate's builtin runtime with [cri.network]
(on in the embedded defaults). Needs root (it looks into the pod's network namespace with
nsenter). Exit status: 0 when every step passed, 1 otherwise.")]
pub struct Args {
    /// The CRI socket (`[cri] socket` in the daemon config).
    #[arg(long, value_name = "PATH", default_value_os_t = CriSection::default().socket)]
    cri: PathBuf,
    /// The CSI driver's socket (`[csi] socket`); when it does not exist the volume steps are
    /// skipped.
    #[arg(long, value_name = "PATH", default_value_os_t = CsiSection::default().socket_path())]
    csi: PathBuf,
    /// kubelet's directory (`[csi] kubelet_dir`): the volume is staged and published under it,
    /// as kubelet would, since the daemon refuses paths anywhere else.
    #[arg(long, value_name = "DIR", default_value_os_t = CsiSection::default().kubelet_dir)]
    kubelet_dir: PathBuf,
    /// Print one JSON object per step instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    let passed = rt.block_on(play(args));
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

// ---- reporting ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Check,
    Teardown,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Check => "check",
            Phase::Teardown => "teardown",
        }
    }
}

/// What a step found out, in the order it is printed.
type Facts = Vec<(&'static str, Value)>;

enum Outcome {
    Ok(Facts),
    Skipped(String),
    Failed(String),
}

struct Report {
    json: bool,
    started: Instant,
    steps: usize,
    phase: Option<Phase>,
    /// The first step that failed.
    failed: Option<String>,
    /// Teardown steps that failed (what may have been left behind).
    leftovers: Vec<String>,
}

impl Report {
    fn new(json: bool) -> Self {
        Self {
            json,
            started: Instant::now(),
            steps: 0,
            phase: None,
            failed: None,
            leftovers: Vec::new(),
        }
    }

    /// Runs one step under [`STEP_TIMEOUT`], prints it, and returns its value if it succeeded.
    async fn step<T>(
        &mut self,
        phase: Phase,
        name: &str,
        f: impl Future<Output = anyhow::Result<(T, Facts)>>,
    ) -> Option<T> {
        let start = Instant::now();
        let result = match tokio::time::timeout(STEP_TIMEOUT, f).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("no answer within {}s", STEP_TIMEOUT.as_secs())),
        };
        let elapsed = start.elapsed();
        match result {
            Ok((value, facts)) => {
                self.print(phase, name, elapsed, &Outcome::Ok(facts));
                Some(value)
            }
            Err(e) => {
                self.print(phase, name, elapsed, &Outcome::Failed(format!("{e:#}")));
                if self.failed.is_none() {
                    self.failed = Some(name.to_string());
                }
                if phase == Phase::Teardown {
                    self.leftovers.push(name.to_string());
                }
                None
            }
        }
    }

    fn skip(&mut self, phase: Phase, name: &str, message: String) {
        self.print(phase, name, Duration::ZERO, &Outcome::Skipped(message));
    }

    fn print(&mut self, phase: Phase, name: &str, elapsed: Duration, outcome: &Outcome) {
        self.steps += 1;
        let ms = elapsed.as_secs_f64() * 1000.0;
        if self.json {
            let mut o = Map::new();
            o.insert("phase".into(), phase.name().into());
            o.insert("step".into(), name.into());
            o.insert("ok".into(), (!matches!(outcome, Outcome::Failed(_))).into());
            o.insert(
                "skipped".into(),
                matches!(outcome, Outcome::Skipped(_)).into(),
            );
            o.insert("elapsed_ms".into(), json!((ms * 1000.0).round() / 1000.0));
            match outcome {
                Outcome::Ok(facts) => {
                    let facts: Map<String, Value> = facts
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect();
                    o.insert("facts".into(), Value::Object(facts));
                }
                Outcome::Skipped(m) => {
                    o.insert("message".into(), m.clone().into());
                }
                Outcome::Failed(e) => {
                    o.insert("error".into(), e.clone().into());
                }
            }
            println!("{}", Value::Object(o));
            return;
        }
        if self.phase != Some(phase) {
            println!("── {}", phase.name());
            self.phase = Some(phase);
        }
        let (mark, detail, lines) = match outcome {
            Outcome::Ok(facts) => {
                let mut inline = Vec::new();
                let mut lines = Vec::new();
                for (k, v) in facts {
                    match v {
                        Value::Array(items) => {
                            lines.push(format!("{k}:"));
                            lines.extend(items.iter().map(|i| format!("  {}", text(i))));
                        }
                        v => inline.push(format!("{k}={}", short(k, &text(v)))),
                    }
                }
                ("✓", inline.join("  "), lines)
            }
            Outcome::Skipped(m) => ("-", m.clone(), Vec::new()),
            Outcome::Failed(e) => ("✗", format!("error: {e}"), Vec::new()),
        };
        let took = if matches!(outcome, Outcome::Skipped(_)) {
            String::new()
        } else {
            format!("{ms:.1} ms")
        };
        println!("{mark} {name:<22} {took:>9}  {detail}");
        for l in lines {
            println!("      {l}");
        }
    }

    fn summary(&self) {
        if self.json {
            return;
        }
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        match &self.failed {
            None => println!("✓ {POD_NAME}: {} steps passed in {ms:.0} ms", self.steps),
            Some(step) if self.leftovers.is_empty() => println!(
                "✗ {POD_NAME}: failed at {step}; what it had created was torn down ({ms:.0} ms)"
            ),
            Some(step) => println!(
                "✗ {POD_NAME}: failed at {step}; teardown incomplete ({}): see above",
                self.leftovers.join(", ")
            ),
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Text output shortens 64-character runtime ids, as `crictl` does; JSON keeps them whole.
fn short(key: &str, v: &str) -> String {
    if key.ends_with("_id") && v.len() > 16 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        v[..13].to_string()
    } else {
        v.to_string()
    }
}

/// A tonic call's result with the gRPC error as `CODE: message`.
fn rpc<T>(r: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    r.map(|r| r.into_inner())
        .map_err(|s| anyhow!("{}: {}", code_name(s.code()), s.message()))
}

// ---- the pod ----

/// What setup created, so that teardown undoes exactly that.
#[derive(Default)]
struct Created {
    pod: Option<String>,
    /// The pod's network namespace, as the runtime reported it: gone after StopPodSandbox.
    netns: Option<String>,
    volume: Option<String>,
    /// The directories made for the staging path and the target, deepest first: removed in
    /// teardown.
    dirs: Vec<PathBuf>,
    staged: Option<String>,
    published: Option<String>,
    container: Option<String>,
}

struct Csi {
    controller: ControllerClient<Channel>,
    node: NodeClient<Channel>,
}

struct Ctx {
    args: Args,
    short: String,
    uid: String,
    rt: Option<RuntimeServiceClient<Channel>>,
    im: Option<ImageServiceClient<Channel>>,
    csi: Option<Csi>,
    created: Created,
}

impl Ctx {
    fn pod_config(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: POD_NAME.into(),
                uid: self.uid.clone(),
                namespace: NAMESPACE.into(),
                attempt: 0,
            }),
            hostname: POD_NAME.into(),
            log_directory: format!("/var/log/pods/{NAMESPACE}_{POD_NAME}_{}", self.uid),
            labels: [
                ("io.kubernetes.pod.name".to_string(), POD_NAME.to_string()),
                (
                    "io.kubernetes.pod.namespace".to_string(),
                    NAMESPACE.to_string(),
                ),
                ("io.kubernetes.pod.uid".to_string(), self.uid.clone()),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn rt(&self) -> anyhow::Result<RuntimeServiceClient<Channel>> {
        self.rt.clone().context("not connected to the CRI socket")
    }

    fn csi(&self) -> anyhow::Result<(ControllerClient<Channel>, NodeClient<Channel>)> {
        let c = self
            .csi
            .as_ref()
            .context("not connected to the CSI socket")?;
        Ok((c.controller.clone(), c.node.clone()))
    }

}

async fn play(args: Args) -> bool {
    let mut seed = random();
    let (a, b, c) = (
        splitmix(&mut seed),
        splitmix(&mut seed),
        splitmix(&mut seed),
    );
    let short = format!("{:08x}", c as u32);
    // A random (version 4) UUID, as kubelet gives pods.
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        a as u16 & 0xfff,
        ((b >> 32) as u16 & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    );
    let mut report = Report::new(args.json);
    let mut ctx = Ctx {
        args,
        short,
        uid,
        rt: None,
        im: None,
        csi: None,
        created: Created::default(),
    };
    if !ctx.args.json {
        println!(
            "{POD_NAME}: CRI {}, CSI {}",
            ctx.args.cri.display(),
            ctx.args.csi.display()
        );
    }
    let _ = setup(&mut report, &mut ctx).await;
    teardown(&mut report, &mut ctx).await;
    report.summary();
    report.failed.is_none()
}

/// Setup and checks; stops at the first failure (`None`).
async fn setup(r: &mut Report, c: &mut Ctx) -> Option<()> {
    // 1. The pod sandbox, through CRI.
    let (rt, im, pod) = r
        .step(Phase::Setup, "RunPodSandbox", async {
            let ch = wasmgate_proto::unix_channel(&c.args.cri)
                .await
                .map_err(|e| {
                    let why = causes(&e);
                    let hint = if why.contains("Permission denied") {
                        "the CRI socket is root's (mode 0600): run wasmgate lifecycle as root"
                    } else {
                        "is wasmgate serve running with a [cri] section?"
                    };
                    anyhow!("cannot connect to {}: {why}; {hint}", c.args.cri.display())
                })?;
            let mut rt = RuntimeServiceClient::new(ch.clone());
            let im = ImageServiceClient::new(ch);
            let id = rpc(rt
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(c.pod_config()),
                    runtime_handler: String::new(),
                })
                .await)?
            .pod_sandbox_id;
            let facts = vec![
                ("pod_id", json!(id)),
                ("pod", json!(format!("{NAMESPACE}/{POD_NAME}"))),
                ("uid", json!(c.uid)),
            ];
            Ok(((rt, im, id), facts))
        })
        .await?;
    c.rt = Some(rt);
    c.im = Some(im);
    c.created.pod = Some(pod.clone());

    // 2. Its network, which the runtime set up, as containerd does at RunPodSandbox.
    let mut rt = c.rt().ok()?;
    let (netns, pod_ip) = r
        .step(Phase::Setup, "pod network", async {
            let net = pod_network(&mut rt, &pod).await?;
            let (ip, netns) = match (net.ips.first(), net.netns) {
                (Some(ip), Some(netns)) => (ip.clone(), netns),
                (None, _) => bail!(
                    "the runtime did not network the pod: PodSandboxStatus reports no IP (the \
                     builtin runtime networks pods with a [cri.network] table, as the embedded \
                     defaults do)"
                ),
                (Some(_), None) => bail!(
                    "PodSandboxStatus reports no network namespace (runtimeSpec.linux.namespaces \
                     in its verbose info)"
                ),
            };
            let inside = links_in(&netns).await?;
            let eth0 = inside.addrs(POD_IFNAME);
            if !eth0
                .iter()
                .any(|a| a.split('/').next() == Some(ip.as_str()))
            {
                bail!("{POD_IFNAME} in {netns} does not hold {ip}: it has {eth0:?}");
            }
            if !inside.is_up("lo") {
                bail!("lo in {netns} is not up");
            }
            let mut facts = vec![("ip", json!(ip))];
            if net.ips.len() > 1 {
                facts.push(("additional_ips", json!(net.ips[1..].join(","))));
            }
            facts.push(("netns", json!(netns)));
            facts.push((POD_IFNAME, json!(eth0.join(","))));
            facts.push(("lo", json!("up")));
            if let Some(n) = net.name {
                facts.push(("network", json!(n)));
            }
            Ok(((netns, ip), facts))
        })
        .await?;
    c.created.netns = Some(netns);

    // 3. A volume, if there is a CSI driver.
    if !c.args.csi.exists() {
        r.skip(
            Phase::Setup,
            "CSI volume",
            format!("skipped: no CSI socket at {}", c.args.csi.display()),
        );
    } else {
        csi_setup(r, c).await?;
    }

    // 4. The container.
    let mut im = c.im.clone()?;
    r.step(Phase::Setup, "PullImage", async {
        let image_ref = rpc(im
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: Some(c.pod_config()),
            })
            .await)?
        .image_ref;
        Ok((
            (),
            vec![("image", json!(IMAGE)), ("image_ref", json!(image_ref))],
        ))
    })
    .await?;
    let mut rt = c.rt().ok()?;
    let target = c.created.published.clone();
    let container = r
        .step(Phase::Setup, "CreateContainer", async {
            let mounts: Vec<cri::Mount> = target
                .iter()
                .map(|t| cri::Mount {
                    container_path: CONTAINER_PATH.into(),
                    host_path: t.clone(),
                    ..Default::default()
                })
                .collect();
            let config = cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: CONTAINER_NAME.into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: IMAGE.into(),
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                envs: vec![cri::KeyValue {
                    key: "DEMO".into(),
                    value: "1".into(),
                }],
                mounts,
                log_path: format!("{CONTAINER_NAME}/0.log"),
                ..Default::default()
            };
            let id = rpc(rt
                .create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(config),
                    sandbox_config: Some(c.pod_config()),
                })
                .await)?
            .container_id;
            let mut facts = vec![
                ("container_id", json!(id)),
                ("command", json!("sleep 3600")),
                ("env", json!("DEMO=1")),
            ];
            if let Some(t) = &target {
                facts.push(("mount", json!(format!("{t} -> {CONTAINER_PATH}"))));
            }
            Ok((id, facts))
        })
        .await?;
    c.created.container = Some(container.clone());
    let mut rt = c.rt().ok()?;
    r.step(Phase::Setup, "StartContainer", async {
        rpc(rt
            .start_container(cri::StartContainerRequest {
                container_id: container.clone(),
            })
            .await)?;
        Ok(((), vec![("container_id", json!(container))]))
    })
    .await?;

    // 5. What the runtime says about it.
    let mut rt = c.rt().ok()?;
    r.step(Phase::Check, "PodSandboxStatus", async {
        let s = rpc(rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await)?
        .status
        .context("PodSandboxStatus returned no status")?;
        let state = enum_name(s.state, |s: &cri::PodSandboxState| s.as_str_name());
        if s.state != cri::PodSandboxState::SandboxReady as i32 {
            bail!("pod is {state}, expected SANDBOX_READY");
        }
        let ip = s
            .network
            .as_ref()
            .map(|n| n.ip.as_str())
            .unwrap_or_default();
        if ip != pod_ip {
            bail!("the pod's IP is now {ip:?}, was {pod_ip:?}");
        }
        Ok(((), vec![("state", json!(state)), ("ip", json!(ip))]))
    })
    .await?;
    let mut rt = c.rt().ok()?;
    r.step(Phase::Check, "ContainerStatus", async {
        let s = rpc(rt
            .container_status(cri::ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            })
            .await)?
        .status
        .context("ContainerStatus returned no status")?;
        let state = enum_name(s.state, |s: &cri::ContainerState| s.as_str_name());
        if s.state != cri::ContainerState::ContainerRunning as i32 {
            bail!("container is {state}, expected CONTAINER_RUNNING");
        }
        let mut facts = vec![("state", json!(state))];
        if let Some(i) = &s.image {
            facts.push(("image", json!(i.image)));
        }
        if !s.mounts.is_empty() {
            facts.push((
                "mounts",
                json!(
                    s.mounts
                        .iter()
                        .map(|m| format!("{} -> {}", m.host_path, m.container_path))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ));
        }
        Ok(((), facts))
    })
    .await?;
    let mut rt = c.rt().ok()?;
    r.step(Phase::Check, "ExecSync env", async {
        let out = rpc(rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: container.clone(),
                cmd: vec!["env".into()],
                timeout: 10,
            })
            .await)?;
        if out.exit_code != 0 {
            bail!(
                "env exited {}: {}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if !lines.iter().any(|l| l == "DEMO=1") {
            bail!("DEMO=1 is missing from the container's env: {lines:?}");
        }
        Ok(((), vec![("exit_code", json!(0)), ("env", json!(lines))]))
    })
    .await?;
    let mut rt = c.rt().ok()?;
    r.step(Phase::Check, "ListContainers", async {
        let list = rpc(rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: pod.clone(),
                    ..Default::default()
                }),
            })
            .await)?
        .containers;
        if !list.iter().any(|x| x.id == container) {
            bail!(
                "container {container} is not among the pod's {} containers",
                list.len()
            );
        }
        Ok((
            (),
            vec![
                ("containers_in_pod", json!(list.len())),
                ("found", json!(true)),
            ],
        ))
    })
    .await?;
    Some(())
}

/// CreateVolume, NodeStageVolume (if the driver stages), NodePublishVolume, and a file written
/// through the published path.
async fn csi_setup(r: &mut Report, c: &mut Ctx) -> Option<()> {
    let name = format!("{POD_NAME}-{}", c.short);
    let (clients, stages, volume) = r
        .step(Phase::Setup, "CreateVolume", async {
            let ch = wasmgate_proto::unix_channel(&c.args.csi).await.map_err(|e| {
                anyhow!(
                    "cannot connect to {}: {}; is wasmgate serve running with a [csi] section?",
                    c.args.csi.display(),
                    causes(&e)
                )
            })?;
            let mut controller = ControllerClient::new(ch.clone());
            let mut node = NodeClient::new(ch);
            let caps = rpc(node
                .node_get_capabilities(csi::NodeGetCapabilitiesRequest {})
                .await)?;
            let stages = caps.capabilities.iter().any(|cap| {
                matches!(
                    &cap.r#type,
                    Some(csi::node_service_capability::Type::Rpc(rpc))
                        if rpc.r#type == csi::node_service_capability::rpc::Type::StageUnstageVolume as i32
                )
            });
            let v = rpc(controller
                .create_volume(csi::CreateVolumeRequest {
                    name: name.clone(),
                    capacity_range: Some(csi::CapacityRange {
                        required_bytes: VOLUME_BYTES,
                        limit_bytes: 0,
                    }),
                    volume_capabilities: vec![capability()],
                    ..Default::default()
                })
                .await)?
            .volume
            .context("CreateVolume returned no volume")?;
            let facts = vec![
                ("volume_id", json!(v.volume_id)),
                ("name", json!(name)),
                ("capacity_bytes", json!(v.capacity_bytes)),
            ];
            Ok(((Csi { controller, node }, stages, v), facts))
        })
        .await?;
    c.csi = Some(clients);
    c.created.volume = Some(volume.volume_id.clone());
    let vid = volume.volume_id.clone();
    // Where kubelet would stage and publish, laid out as kubelet does; what is made for them is
    // removed in teardown.
    let kubelet = &c.args.kubelet_dir;
    let staging = kubelet
        .join("plugins/kubernetes.io/csi/wasmgate-lifecycle")
        .join(&c.short)
        .join("globalmount");
    let target = kubelet
        .join("pods")
        .join(&c.uid)
        .join("volumes/kubernetes.io~csi")
        .join(format!("pvc-{}", c.short))
        .join("mount");
    let mut dirs = missing_dirs(&staging);
    dirs.extend(missing_dirs(&target));
    // Without kubelet's directory at all, both share the top ones.
    dirs.sort_by(|a, b| {
        (b.components().count())
            .cmp(&a.components().count())
            .then(a.cmp(b))
    });
    dirs.dedup();
    c.created.dirs = dirs;

    if stages {
        let (_, mut node) = c.csi().ok()?;
        let staging_s = path_str(&staging).ok()?;
        r.step(Phase::Setup, "NodeStageVolume", async {
            std::fs::create_dir_all(&staging)
                .with_context(|| format!("create {}", staging.display()))?;
            rpc(node
                .node_stage_volume(csi::NodeStageVolumeRequest {
                    volume_id: vid.clone(),
                    staging_target_path: staging_s.clone(),
                    volume_capability: Some(capability()),
                    volume_context: volume.volume_context.clone(),
                    ..Default::default()
                })
                .await)?;
            Ok(((), vec![("staging", json!(staging_s))]))
        })
        .await?;
        c.created.staged = Some(staging_s);
    } else {
        r.skip(
            Phase::Setup,
            "NodeStageVolume",
            "skipped: the driver does not advertise STAGE_UNSTAGE_VOLUME".into(),
        );
    }

    let (_, mut node) = c.csi().ok()?;
    let target_s = path_str(&target).ok()?;
    let staged = c.created.staged.clone();
    let published = r
        .step(Phase::Setup, "NodePublishVolume", async {
            let parent = target.parent().context("target has no parent")?;
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
            rpc(node
                .node_publish_volume(csi::NodePublishVolumeRequest {
                    volume_id: vid.clone(),
                    staging_target_path: staged.unwrap_or_default(),
                    target_path: target_s.clone(),
                    volume_capability: Some(capability()),
                    readonly: false,
                    volume_context: volume.volume_context.clone(),
                    ..Default::default()
                })
                .await)?;
            Ok(((), vec![("target", json!(target_s))]))
        })
        .await;
    // Unpublish even when publish failed part-way: NodeUnpublish of a path the host never
    // recorded is a no-op.
    c.created.published = Some(target_s.clone());
    published?;

    r.step(Phase::Setup, "write through volume", async {
        let file = target.join(DEMO_FILE);
        let body = format!("written by wasmgate lifecycle into volume {vid}\n");
        std::fs::write(&file, &body).with_context(|| format!("write {}", file.display()))?;
        let back = std::fs::read_to_string(&file)
            .with_context(|| format!("read back {}", file.display()))?;
        if back != body {
            bail!("read back {:?}, wrote {body:?}", back);
        }
        if !is_mount_point(&target) {
            bail!(
                "{} is not a mount point here: the daemon mounts in another mount namespace",
                target.display()
            );
        }
        Ok((
            (),
            vec![
                ("file", json!(file.display().to_string())),
                ("bytes", json!(body.len())),
                ("mounted", json!(true)),
            ],
        ))
    })
    .await?;
    Some(())
}

/// Undoes what setup created, newest first; a failing step does not stop the others.
async fn teardown(r: &mut Report, c: &mut Ctx) {
    let t = Phase::Teardown;
    if let (Some(id), Ok(mut rt)) = (c.created.container.take(), c.rt()) {
        r.step(t, "StopContainer", async {
            rpc(rt
                .stop_container(cri::StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 5,
                })
                .await)?;
            Ok(((), vec![("container_id", json!(id))]))
        })
        .await;
        r.step(t, "RemoveContainer", async {
            rpc(rt
                .remove_container(cri::RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await)?;
            Ok(((), vec![("container_id", json!(id))]))
        })
        .await;
    }
    if let Ok((mut controller, mut node)) = c.csi() {
        let vid = c.created.volume.clone().unwrap_or_default();
        if let Some(target) = c.created.published.take() {
            r.step(t, "NodeUnpublishVolume", async {
                rpc(node
                    .node_unpublish_volume(csi::NodeUnpublishVolumeRequest {
                        volume_id: vid.clone(),
                        target_path: target.clone(),
                    })
                    .await)?;
                Ok(((), vec![("target", json!(target))]))
            })
            .await;
        }
        if let Some(staging) = c.created.staged.take() {
            r.step(t, "NodeUnstageVolume", async {
                rpc(node
                    .node_unstage_volume(csi::NodeUnstageVolumeRequest {
                        volume_id: vid.clone(),
                        staging_target_path: staging.clone(),
                    })
                    .await)?;
                Ok(((), vec![("staging", json!(staging))]))
            })
            .await;
        }
        if let Some(vid) = c.created.volume.take() {
            r.step(t, "DeleteVolume", async {
                rpc(controller
                    .delete_volume(csi::DeleteVolumeRequest {
                        volume_id: vid.clone(),
                        secrets: Default::default(),
                    })
                    .await)?;
                Ok(((), vec![("volume_id", json!(vid))]))
            })
            .await;
        }
    }
    if let (Some(id), Ok(mut rt)) = (c.created.pod.take(), c.rt()) {
        r.step(t, "StopPodSandbox", async {
            rpc(rt
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await)?;
            Ok(((), vec![("pod_id", json!(id))]))
        })
        .await;
        if let Some(netns) = c.created.netns.take() {
            r.step(t, "pod network removed", async {
                let net = pod_network(&mut rt, &id).await?;
                if let Some(ip) = net.ips.first() {
                    bail!("PodSandboxStatus still reports {ip} after StopPodSandbox");
                }
                if Path::new(&netns).exists() {
                    bail!("the pod's network namespace {netns} is still there");
                }
                Ok(((), vec![("netns", json!(netns)), ("removed", json!(true))]))
            })
            .await;
        }
        r.step(t, "RemovePodSandbox", async {
            rpc(rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await)?;
            Ok(((), vec![("pod_id", json!(id))]))
        })
        .await;
    }
    let dirs = std::mem::take(&mut c.created.dirs);
    if !dirs.is_empty() {
        r.step(t, "remove volume dirs", async {
            // rmdir only, never a recursive delete: a directory that is still a mount point
            // or still holds data is reported, not emptied.
            for d in &dirs {
                match std::fs::remove_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => bail!("{} left in place: {e}", d.display()),
                }
            }
            Ok(((), vec![("dirs", json!(dirs.len()))]))
        })
        .await;
    }
}

/// `dir` and its ancestors that do not exist yet, deepest first.
fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect()
}

// ---- helpers ----

fn capability() -> csi::VolumeCapability {
    use csi::volume_capability::{AccessMode, AccessType, MountVolume, access_mode};
    csi::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: access_mode::Mode::SingleNodeWriter as i32,
        }),
    }
}

fn path_str(p: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(p).with_context(|| format!("resolve {}", p.display()))?;
    abs.to_str()
        .map(String::from)
        .with_context(|| format!("{} is not UTF-8", abs.display()))
}

fn enum_name<T: TryFrom<i32>>(value: i32, name: fn(&T) -> &'static str) -> String {
    T::try_from(value)
        .map(|t| name(&t).to_string())
        .unwrap_or_else(|_| format!("UNKNOWN({value})"))
}

/// Whether `path` is a mount point in this process's mount namespace.
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A pod's network as the runtime reports it.
struct PodNet {
    /// `status.network.ip`, then `additional_ips`.
    ips: Vec<String>,
    /// The network namespace in the verbose info's runtime spec, where containerd reports it.
    netns: Option<String>,
    /// The network's name, when the runtime says (the builtin runtime does).
    name: Option<String>,
}

async fn pod_network(rt: &mut RuntimeServiceClient<Channel>, pod: &str) -> anyhow::Result<PodNet> {
    let resp = rpc(rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: true,
        })
        .await)?;
    let net = resp.status.and_then(|s| s.network).unwrap_or_default();
    let ips = std::iter::once(net.ip)
        .chain(net.additional_ips.into_iter().map(|i| i.ip))
        .filter(|ip| !ip.is_empty())
        .collect();
    let info: Value = resp
        .info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    let netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .filter(|p| !p.is_empty())
        .map(String::from);
    let name = info["network"].as_str().map(String::from);
    Ok(PodNet { ips, netns, name })
}

/// The links of the network namespace pinned at `netns`, as `ip -j addr show` lists them there.
struct Links(Vec<Value>);

impl Links {
    fn find(&self, ifname: &str) -> Option<&Value> {
        self.0.iter().find(|l| l["ifname"] == ifname)
    }

    /// The addresses (CIDR) on `ifname`, but the IPv6 link-local one the kernel adds itself.
    fn addrs(&self, ifname: &str) -> Vec<String> {
        self.find(ifname)
            .and_then(|l| l["addr_info"].as_array())
            .into_iter()
            .flatten()
            .filter(|a| a["scope"] != "link")
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect()
    }

    fn is_up(&self, ifname: &str) -> bool {
        self.find(ifname)
            .and_then(|l| l["flags"].as_array())
            .is_some_and(|f| f.iter().any(|f| f == "UP"))
    }
}

async fn links_in(netns: &str) -> anyhow::Result<Links> {
    let out = tokio::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ip", "-j", "addr", "show"])
        .output()
        .await
        .context("run nsenter (util-linux) and ip (iproute2)")?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        let hint = if why.contains("Operation not permitted") || why.contains("Permission denied") {
            "; looking into it needs root: run wasmgate lifecycle as root"
        } else {
            ""
        };
        bail!("cannot look into {netns}: {}{hint}", why.trim());
    }
    let links: Vec<Value> = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("ip -j addr show in {netns} printed no JSON"))?;
    Ok(Links(links))
}

/// The next number of the SplitMix64 sequence from `state`.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random seed from the standard library's randomly keyed hasher.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_are_shortened_in_text_only() {
        let id = "a".repeat(64);
        assert_eq!(short("pod_id", &id), "a".repeat(13));
        assert_eq!(short("ip", &id), id);
        assert_eq!(short("volume_id", "lifecycle-demo-1"), "lifecycle-demo-1");
    }

    #[test]
    fn random_differs() {
        assert_ne!(random(), random());
    }
}
