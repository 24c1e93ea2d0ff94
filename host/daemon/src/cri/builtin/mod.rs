//! `builtin`: an embedded, in-memory CRI runtime (`runtime.v1` `RuntimeService` and
//! `ImageService`), the daemon's default backend.
//!
//! It runs no processes and pulls nothing. It keeps the books a real runtime keeps (pod
//! sandboxes, containers, images) and moves them through the states the CRI defines, with the
//! error codes kubelet and `crictl` expect, so the CRI plumbing in front of it can be exercised
//! end to end without containerd:
//!
//! * pods: `RunPodSandbox` → `SANDBOX_READY`; `StopPodSandbox` → `SANDBOX_NOTREADY` (its
//!   containers forcibly stopped, exit code 137); `RemovePodSandbox` stops and removes it and its
//!   containers. Stop and remove are idempotent (an unknown id is OK).
//! * containers: `CreateContainer` → `CONTAINER_CREATED` (the image must have been pulled),
//!   `StartContainer` → `CONTAINER_RUNNING`, `StopContainer` → `CONTAINER_EXITED` (exit code 0:
//!   there is no process that could refuse to stop), `RemoveContainer` (idempotent).
//! * images: `PullImage` records a normalised reference (`busybox` →
//!   `docker.io/library/busybox:latest`) under a fake but stable id, `sha256:` + the SHA-256 of
//!   that reference, with a size of 1 MiB.
//! * `ExecSync` understands a tiny command set (`env`, `echo`, `hostname`, `true`, `false`);
//!   anything else exits 127.
//! * `Exec`, `Attach` and `PortForward` validate their target and hand back a URL
//!   (`http://127.0.0.1:0/builtin/...`) that no streaming server answers: a client following it
//!   fails to connect.
//! * `GetContainerEvents` streams every lifecycle event from the moment of subscription. As in
//!   containerd, sandboxes produce events too: their `container_id` is the sandbox id.
//! * Checkpoint and restore are `UNIMPLEMENTED`; stats are zeroed but well formed.
//! * With `[cri.network]` ([`network`]), a pod not on the host network gets what containerd
//!   gives it: a pinned network namespace and the node's CNI config run into it at
//!   RunPodSandbox, its IPs in PodSandboxStatus, a DEL and the namespace removed at
//!   StopPodSandbox. Without it pods have no network, and PodSandboxStatus no IP.
//!
//! Ids are 64 hex characters; every id argument may be a unique prefix (as `crictl` passes
//! truncated ids). No prefix match is `NOT_FOUND` (or OK where the RPC is idempotent), an
//! ambiguous prefix is `INVALID_ARGUMENT`.
//!
//! All state sits behind one [`std::sync::Mutex`] that is never held across an `.await`.

mod image;
pub mod network;
mod runtime;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tonic::Status;
use wasmgate_proto::cri::v1 as pb;

/// `VersionResponse.runtime_name`.
pub const RUNTIME_NAME: &str = "wasmgate-builtin";
/// Where the builtin runtime pretends to keep its images (reported by `ImageFsInfo` and stats).
pub const ROOT_DIR: &str = "/var/lib/wasmgate/builtin";
/// The size every pulled image reports.
pub const IMAGE_SIZE: u64 = 1 << 20;
/// Exit code of a container killed because its pod was stopped or it was removed while running.
pub const EXIT_KILLED: i32 = 137;
/// Events buffered per subscriber; one that falls further behind skips the oldest.
const EVENT_CAPACITY: usize = 1024;
/// Items per message on the `Stream*` list RPCs.
const STREAM_BATCH: usize = 100;

/// The embedded in-memory CRI runtime. Implements
/// [`RuntimeService`](pb::runtime_service_server::RuntimeService) and
/// [`ImageService`](pb::image_service_server::ImageService).
pub struct Builtin {
    state: Mutex<State>,
    events: broadcast::Sender<pb::ContainerEventResponse>,
    /// Accepted `runtime_handler` values; `""` (the default handler) always is.
    handlers: Vec<String>,
    /// The pod network, when `[cri.network]` is on.
    network: Option<Arc<network::PodNetwork>>,
}

impl Default for Builtin {
    fn default() -> Self {
        Self::new()
    }
}

impl Builtin {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            state: Mutex::new(State {
                seed: seed(),
                ..State::default()
            }),
            events,
            handlers: vec![String::new()],
            network: None,
        }
    }

    /// Networks the pods that are not on the host network with `net`.
    pub fn with_network(mut self, net: network::PodNetwork) -> Self {
        self.network = Some(Arc::new(net));
        self
    }

    /// The builtin runtime `cfg` describes: networking its pods when `[cri.network]` is on,
    /// after tearing down the pod networks a previous run left (it forgot their pods).
    pub async fn from_config(
        cfg: &crate::Config,
        records: Arc<crate::state::Records>,
    ) -> Result<Self, network::NetError> {
        let builtin = Self::new();
        let Some(section) = cfg.cri.as_ref().and_then(|c| c.network.as_ref()) else {
            return Ok(builtin);
        };
        let net = network::PodNetwork::from_config(cfg, section, records)?;
        let (done, failed) = net.recover().await;
        if done + failed > 0 {
            tracing::info!(
                done,
                failed,
                "tore down the pod networks a previous run left"
            );
        }
        Ok(builtin.with_network(net))
    }

    /// Also accept these runtime handler names (RuntimeClass handlers) besides the default `""`;
    /// an unknown non-empty handler is rejected with `INVALID_ARGUMENT`.
    pub fn with_runtime_handlers(mut self, names: impl IntoIterator<Item = String>) -> Self {
        for n in names {
            if !self.handlers.contains(&n) {
                self.handlers.push(n);
            }
        }
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the state, then publishes the events it queued, still under the lock so that
    /// subscribers see them in the order the state changed.
    fn with<R>(&self, f: impl FnOnce(&mut State) -> Result<R, Status>) -> Result<R, Status> {
        let mut st = self.lock();
        // Counted under the lock: a subscriber that arrives later sees only later events, as
        // it would if these had been sent.
        st.publish = self.events.receiver_count() > 0;
        let out = f(&mut st);
        for ev in st.pending.drain(..) {
            // No subscriber is not an error.
            let _ = self.events.send(ev);
        }
        out
    }

    fn check_handler(&self, handler: &str) -> Result<(), Status> {
        if self.handlers.iter().any(|h| h == handler) {
            Ok(())
        } else {
            Err(Status::invalid_argument(format!(
                "unknown runtime handler {handler:?} (the builtin runtime knows {:?})",
                self.handlers
            )))
        }
    }
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Pod>,
    containers: HashMap<String, Container>,
    /// By image id.
    images: HashMap<String, Image>,
    /// Creation order, for stable listings; also salts generated ids.
    seq: u64,
    /// Last timestamp handed out, so that timestamps never go backwards.
    last_ns: i64,
    seed: [u8; 32],
    pod_cidr: String,
    /// Names of pods whose RunPodSandbox is setting up their network, reserved meanwhile.
    starting: HashSet<String>,
    /// Events queued by the current operation; [`Builtin::with`] publishes them.
    pending: Vec<pb::ContainerEventResponse>,
    /// Whether anyone follows `GetContainerEvents` now. An event carries the statuses of all
    /// its pod's containers, which no one needs built when no one listens.
    publish: bool,
}

struct Pod {
    id: String,
    seq: u64,
    /// `metadata` is always set.
    config: pb::PodSandboxConfig,
    runtime_handler: String,
    state: pb::PodSandboxState,
    created_at: i64,
    /// Its network until StopPodSandbox tears it down; never for a host-network pod.
    network: Option<network::Attached>,
}

struct Container {
    id: String,
    seq: u64,
    pod_id: String,
    /// `metadata` and `image` are always set.
    config: pb::ContainerConfig,
    state: pb::ContainerState,
    created_at: i64,
    started_at: i64,
    finished_at: i64,
    exit_code: i32,
    reason: String,
    message: String,
    image_id: String,
    image_ref: String,
    resources: Option<pb::ContainerResources>,
    log_path: String,
}

struct Image {
    id: String,
    seq: u64,
    /// The normalised reference it was pulled by.
    reference: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    annotations: HashMap<String, String>,
    pulled_at: i64,
}

/// 32 random bytes from `/dev/urandom`, or a hash of the time and pid if it cannot be read.
fn seed() -> [u8; 32] {
    use std::io::Read;
    let mut buf = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        let mut h = Sha256::new();
        h.update(system_ns().to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        buf.copy_from_slice(&h.finalize());
    }
    buf
}

fn system_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(1)
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl State {
    /// Now in nanoseconds since the epoch; strictly increasing across calls.
    fn now(&mut self) -> i64 {
        let t = system_ns().max(self.last_ns + 1);
        self.last_ns = t;
        t
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh 64-hex-character id.
    fn new_id(&mut self, salt: &str) -> String {
        let seq = self.next_seq();
        let now = self.now();
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(seq.to_le_bytes());
        h.update(now.to_le_bytes());
        h.update(salt.as_bytes());
        hex::encode(h.finalize())
    }

    fn pod_id(&self, id: &str, field: &str) -> Result<Option<String>, Status> {
        resolve(&self.pods, id, field, "pod sandbox")
    }

    fn container_id(&self, id: &str, field: &str) -> Result<Option<String>, Status> {
        resolve(&self.containers, id, field, "container")
    }

    fn require_pod(&self, id: &str, field: &str) -> Result<String, Status> {
        self.pod_id(id, field)?
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))
    }

    fn require_container(&self, id: &str, field: &str) -> Result<String, Status> {
        self.container_id(id, field)?
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))
    }

    /// The pod's containers in creation order.
    fn pod_containers(&self, pod_id: &str) -> Vec<&Container> {
        let mut v: Vec<_> = self
            .containers
            .values()
            .filter(|c| c.pod_id == pod_id)
            .collect();
        v.sort_by_key(|c| c.seq);
        v
    }

    fn pod_status(&self, pod: &Pod) -> pb::PodSandboxStatus {
        let ns = pod
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        pb::PodSandboxStatus {
            id: pod.id.clone(),
            metadata: pod.config.metadata.clone(),
            state: pod.state as i32,
            created_at: pod.created_at,
            // As containerd: no address once the namespace is gone, nor for the host network.
            network: Some(pod.network.as_ref().map_or_else(Default::default, |n| {
                pb::PodSandboxNetworkStatus {
                    ip: n.ips[0].clone(),
                    additional_ips: n.ips[1..]
                        .iter()
                        .map(|ip| pb::PodIp { ip: ip.clone() })
                        .collect(),
                }
            })),
            linux: Some(pb::LinuxPodSandboxStatus {
                namespaces: Some(pb::Namespace { options: ns }),
            }),
            labels: pod.config.labels.clone(),
            annotations: pod.config.annotations.clone(),
            runtime_handler: pod.runtime_handler.clone(),
        }
    }

    fn container_status(&self, c: &Container) -> pb::ContainerStatus {
        let sec = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref());
        let stop_signal = match c.config.stop_signal {
            s if s == pb::Signal::RuntimeDefault as i32 => pb::Signal::Sigterm as i32,
            s => s,
        };
        pb::ContainerStatus {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            state: c.state as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts: c.config.mounts.clone(),
            log_path: c.log_path.clone(),
            resources: c.resources.clone(),
            image_id: c.image_id.clone(),
            user: Some(pb::ContainerUser {
                linux: Some(pb::LinuxContainerUser {
                    uid: sec
                        .and_then(|s| s.run_as_user.as_ref())
                        .map_or(0, |u| u.value),
                    gid: sec
                        .and_then(|s| s.run_as_group.as_ref())
                        .map_or(0, |g| g.value),
                    supplemental_groups: sec
                        .map(|s| s.supplemental_groups.clone())
                        .unwrap_or_default(),
                }),
            }),
            stop_signal,
        }
    }

    fn container_item(&self, c: &Container) -> pb::Container {
        pb::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            metadata: c.config.metadata.clone(),
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            state: c.state as i32,
            created_at: c.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            image_id: c.image_id.clone(),
        }
    }

    /// Queues a lifecycle event for `id` (a container, or the sandbox itself) in pod `pod_id`,
    /// carrying the pod's status and the statuses of its containers as they are now.
    fn event(&mut self, id: &str, pod_id: &str, kind: pb::ContainerEventType) {
        if !self.publish {
            return;
        }
        let created_at = self.now();
        let (pod_status, statuses) = match self.pods.get(pod_id) {
            Some(pod) => (
                Some(self.pod_status(pod)),
                self.pod_containers(pod_id)
                    .into_iter()
                    .map(|c| self.container_status(c))
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        self.pending.push(pb::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at,
            pod_sandbox_status: pod_status,
            containers_statuses: statuses,
        });
    }

    /// Moves a CREATED or RUNNING container to EXITED; returns whether it changed.
    fn exit_container(&mut self, id: &str, exit_code: i32, message: &str) -> bool {
        let now = self.now();
        let Some(c) = self.containers.get_mut(id) else {
            return false;
        };
        if c.state == pb::ContainerState::ContainerExited {
            return false;
        }
        c.state = pb::ContainerState::ContainerExited;
        c.finished_at = now;
        c.exit_code = exit_code;
        c.reason = if exit_code == 0 { "Completed" } else { "Error" }.to_string();
        c.message = message.to_string();
        let pod_id = c.pod_id.clone();
        self.event(id, &pod_id, pb::ContainerEventType::ContainerStoppedEvent);
        true
    }

    /// Removes a container, forcibly stopping it first.
    fn delete_container(&mut self, id: &str) {
        self.exit_container(id, EXIT_KILLED, "killed: container removed while running");
        if let Some(c) = self.containers.remove(id) {
            self.event(id, &c.pod_id, pb::ContainerEventType::ContainerDeletedEvent);
        }
    }

    /// Stops a pod: every container not yet exited is killed (137), the pod becomes NOTREADY.
    fn stop_pod(&mut self, pod_id: &str) {
        let ids: Vec<String> = self
            .pod_containers(pod_id)
            .into_iter()
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            self.exit_container(&id, EXIT_KILLED, "killed: pod sandbox stopped");
        }
        if let Some(pod) = self.pods.get_mut(pod_id)
            && pod.state == pb::PodSandboxState::SandboxReady
        {
            pod.state = pb::PodSandboxState::SandboxNotready;
            self.event(
                pod_id,
                pod_id,
                pb::ContainerEventType::ContainerStoppedEvent,
            );
        }
    }
}

/// Resolves `id`, an exact id or a unique prefix of one, among the keys of `map`.
/// `Ok(None)`: nothing matches. An empty or ambiguous `id` is `INVALID_ARGUMENT`.
fn resolve<T>(
    map: &HashMap<String, T>,
    id: &str,
    field: &str,
    what: &str,
) -> Result<Option<String>, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    if map.contains_key(id) {
        return Ok(Some(id.to_string()));
    }
    let mut found = map.keys().filter(|k| k.starts_with(id));
    match (found.next(), found.next()) {
        (None, _) => Ok(None),
        (Some(k), None) => Ok(Some(k.clone())),
        (Some(_), Some(_)) => Err(Status::invalid_argument(format!(
            "{what} id prefix {id:?} is ambiguous"
        ))),
    }
}

/// Whether `labels` carries every `key=value` of `selector`.
fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Splits `items` into stream messages of at most [`STREAM_BATCH`] items; none when empty.
fn batches<T, M>(items: Vec<T>, wrap: impl Fn(Vec<T>) -> M) -> Vec<Result<M, Status>> {
    let mut out = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(Ok(wrap(it.by_ref().take(STREAM_BATCH).collect())));
    }
    out
}

// ---- JSON for the verbose `info` maps -----------------------------------------------------

fn sorted(m: &HashMap<String, String>) -> BTreeMap<&String, &String> {
    m.iter().collect()
}

fn kv_json(kvs: &[pb::KeyValue]) -> Value {
    kvs.iter()
        .map(|kv| json!({"key": kv.key, "value": String::from_utf8_lossy(&kv.value)}))
        .collect()
}

fn resources_json(r: &pb::LinuxContainerResources) -> Value {
    json!({
        "cpu_period": r.cpu_period,
        "cpu_quota": r.cpu_quota,
        "cpu_shares": r.cpu_shares,
        "memory_limit_in_bytes": r.memory_limit_in_bytes,
        "oom_score_adj": r.oom_score_adj,
        "cpuset_cpus": r.cpuset_cpus,
        "cpuset_mems": r.cpuset_mems,
        "hugepage_limits": r.hugepage_limits.iter()
            .map(|h| json!({"page_size": h.page_size, "limit": h.limit}))
            .collect::<Vec<_>>(),
        "unified": sorted(&r.unified),
        "memory_swap_limit_in_bytes": r.memory_swap_limit_in_bytes,
    })
}

fn namespace_json(n: &pb::NamespaceOption) -> Value {
    json!({
        "network": n.network,
        "pid": n.pid,
        "ipc": n.ipc,
        "target_id": n.target_id,
    })
}

/// A container config as JSON, with the snake_case field names `crictl inspect` shows for
/// containerd's `info.config`. Env values are rendered as (lossy) UTF-8 text.
fn container_config_json(c: &pb::ContainerConfig) -> Value {
    let md = c.metadata.clone().unwrap_or_default();
    let image = c.image.clone().unwrap_or_default();
    let linux = c.linux.as_ref().map(|l| {
        let sec = l.security_context.as_ref().map(|s| {
            let caps = s.capabilities.clone().unwrap_or_default();
            json!({
                "privileged": s.privileged,
                "run_as_user": s.run_as_user.as_ref().map(|u| u.value),
                "run_as_group": s.run_as_group.as_ref().map(|g| g.value),
                "run_as_username": s.run_as_username,
                "readonly_rootfs": s.readonly_rootfs,
                "supplemental_groups": s.supplemental_groups,
                "no_new_privs": s.no_new_privs,
                "capabilities": {
                    "add_capabilities": caps.add_capabilities,
                    "drop_capabilities": caps.drop_capabilities,
                    "add_ambient_capabilities": caps.add_ambient_capabilities,
                },
                "namespace_options": s.namespace_options.as_ref().map(namespace_json),
                "masked_paths": s.masked_paths,
                "readonly_paths": s.readonly_paths,
            })
        });
        json!({
            "resources": l.resources.as_ref().map(resources_json),
            "security_context": sec,
        })
    });
    json!({
        "metadata": {"name": md.name, "attempt": md.attempt},
        "image": {
            "image": image.image,
            "annotations": sorted(&image.annotations),
            "user_specified_image": image.user_specified_image,
            "runtime_handler": image.runtime_handler,
        },
        "command": c.command,
        "args": c.args,
        "working_dir": c.working_dir,
        "envs": kv_json(&c.envs),
        "mounts": c.mounts.iter().map(|m| json!({
            "container_path": m.container_path,
            "host_path": m.host_path,
            "readonly": m.readonly,
            "selinux_relabel": m.selinux_relabel,
            "propagation": m.propagation,
            "recursive_read_only": m.recursive_read_only,
            "mount_options": m.mount_options,
        })).collect::<Vec<_>>(),
        "devices": c.devices.iter().map(|d| json!({
            "container_path": d.container_path,
            "host_path": d.host_path,
            "permissions": d.permissions,
        })).collect::<Vec<_>>(),
        "CDI_devices": c.cdi_devices.iter().map(|d| json!({"name": d.name})).collect::<Vec<_>>(),
        "labels": sorted(&c.labels),
        "annotations": sorted(&c.annotations),
        "log_path": c.log_path,
        "stdin": c.stdin,
        "stdin_once": c.stdin_once,
        "tty": c.tty,
        "linux": linux,
        "stop_signal": c.stop_signal,
    })
}

/// A pod sandbox config as JSON (snake_case field names, as containerd shows it).
fn pod_config_json(c: &pb::PodSandboxConfig) -> Value {
    let md = c.metadata.clone().unwrap_or_default();
    let linux = c.linux.as_ref().map(|l| {
        let sec = l.security_context.as_ref().map(|s| {
            json!({
                "namespace_options": s.namespace_options.as_ref().map(namespace_json),
                "privileged": s.privileged,
                "run_as_user": s.run_as_user.as_ref().map(|u| u.value),
                "run_as_group": s.run_as_group.as_ref().map(|g| g.value),
                "readonly_rootfs": s.readonly_rootfs,
                "supplemental_groups": s.supplemental_groups,
            })
        });
        json!({
            "cgroup_parent": l.cgroup_parent,
            "security_context": sec,
            "sysctls": sorted(&l.sysctls),
            "overhead": l.overhead.as_ref().map(resources_json),
            "resources": l.resources.as_ref().map(resources_json),
        })
    });
    json!({
        "metadata": {
            "name": md.name,
            "uid": md.uid,
            "namespace": md.namespace,
            "attempt": md.attempt,
        },
        "hostname": c.hostname,
        "log_directory": c.log_directory,
        "dns_config": c.dns_config.as_ref().map(|d| json!({
            "servers": d.servers,
            "searches": d.searches,
            "options": d.options,
        })),
        "port_mappings": c.port_mappings.iter().map(|p| json!({
            "protocol": p.protocol,
            "container_port": p.container_port,
            "host_port": p.host_port,
            "host_ip": p.host_ip,
        })).collect::<Vec<_>>(),
        "labels": sorted(&c.labels),
        "annotations": sorted(&c.annotations),
        "linux": linux,
    })
}
