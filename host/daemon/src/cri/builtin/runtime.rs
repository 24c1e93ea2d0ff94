//! `runtime.v1.RuntimeService` for [`Builtin`].

use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};
use wasmgate_proto::cri::v1 as pb;

use super::network::{self, Attached, PodNetwork};
use super::{
    Builtin, Container, Pod, ROOT_DIR, RUNTIME_NAME, State, batches, container_config_json,
    labels_match, pod_config_json,
};

type Batches<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;
type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ContainerEventResponse, Status>> + Send>>;

/// The runtime API version `Version` reports (the kubelet's API version field).
const KUBE_API_VERSION: &str = "0.1.0";

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

fn required(id: &str, field: &str) -> Result<(), Status> {
    if id.is_empty() {
        Err(invalid(format!("{field} is required")))
    } else {
        Ok(())
    }
}

/// The name a pod's metadata reserves, as containerd spells it.
fn pod_name(md: &pb::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", md.name, md.namespace, md.uid, md.attempt)
}

fn u64v(value: u64) -> Option<pb::UInt64Value> {
    Some(pb::UInt64Value { value })
}

fn fs_usage(ts: i64, used: u64, inodes: u64) -> pb::FilesystemUsage {
    pb::FilesystemUsage {
        timestamp: ts,
        fs_id: Some(pb::FilesystemIdentifier {
            mountpoint: ROOT_DIR.to_string(),
        }),
        used_bytes: u64v(used),
        inodes_used: u64v(inodes),
    }
}

fn state_name(s: pb::ContainerState) -> &'static str {
    s.as_str_name()
}

/// Joins a pod's log directory and a container's log path as containerd does: only when both
/// are set.
fn log_path(dir: &str, path: &str) -> String {
    if dir.is_empty() || path.is_empty() {
        return String::new();
    }
    format!(
        "{}/{}",
        dir.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Runs one of the builtin runtime's pretend commands; returns (stdout, stderr, exit code).
fn run_builtin(cmd: &[String], envs: &[pb::KeyValue], hostname: &str) -> (Vec<u8>, Vec<u8>, i32) {
    let prog = cmd[0].rsplit('/').next().unwrap_or_default();
    let args = &cmd[1..];
    match prog {
        "env" => {
            let mut out = Vec::new();
            for kv in envs {
                out.extend_from_slice(kv.key.as_bytes());
                out.push(b'=');
                out.extend_from_slice(&kv.value);
                out.push(b'\n');
            }
            (out, Vec::new(), 0)
        }
        "echo" => {
            let (newline, args) = match args.first().map(String::as_str) {
                Some("-n") => (false, &args[1..]),
                _ => (true, args),
            };
            let mut out = args.join(" ").into_bytes();
            if newline {
                out.push(b'\n');
            }
            (out, Vec::new(), 0)
        }
        "hostname" => (format!("{hostname}\n").into_bytes(), Vec::new(), 0),
        "true" => (Vec::new(), Vec::new(), 0),
        "false" => (Vec::new(), Vec::new(), 1),
        _ => (
            Vec::new(),
            format!("builtin runtime: command not found: {}\n", cmd[0]).into_bytes(),
            127,
        ),
    }
}

impl State {
    /// A pod's metadata names it once: among the pods, and those whose network is being set up.
    fn check_name_free(&self, md: &pb::PodSandboxMetadata) -> Result<(), Status> {
        let name = pod_name(md);
        if let Some(other) = self
            .pods
            .values()
            .find(|p| p.config.metadata.as_ref() == Some(md))
        {
            return Err(Status::already_exists(format!(
                "pod sandbox name {name:?} is reserved for {}",
                other.id
            )));
        }
        if self.starting.contains(&name) {
            return Err(Status::already_exists(format!(
                "pod sandbox name {name:?} is reserved for a pod sandbox being created"
            )));
        }
        Ok(())
    }

    /// Adds a new, ready pod.
    fn admit(
        &mut self,
        id: &str,
        config: pb::PodSandboxConfig,
        runtime_handler: String,
        network: Option<Attached>,
    ) {
        let seq = self.next_seq();
        let created_at = self.now();
        self.pods.insert(
            id.to_string(),
            Pod {
                id: id.to_string(),
                seq,
                config,
                runtime_handler,
                state: pb::PodSandboxState::SandboxReady,
                created_at,
                network,
            },
        );
        self.event(id, id, pb::ContainerEventType::ContainerCreatedEvent);
        self.event(id, id, pb::ContainerEventType::ContainerStartedEvent);
    }

    fn pod_item(&self, p: &Pod) -> pb::PodSandbox {
        pb::PodSandbox {
            id: p.id.clone(),
            metadata: p.config.metadata.clone(),
            state: p.state as i32,
            created_at: p.created_at,
            labels: p.config.labels.clone(),
            annotations: p.config.annotations.clone(),
            runtime_handler: p.runtime_handler.clone(),
        }
    }

    fn container_stats(&self, c: &Container, ts: i64) -> pb::ContainerStats {
        let limit = c
            .resources
            .as_ref()
            .and_then(|r| r.linux.as_ref())
            .map(|l| l.memory_limit_in_bytes)
            .filter(|&l| l > 0);
        pb::ContainerStats {
            attributes: Some(pb::ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            cpu: Some(pb::CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: u64v(0),
                usage_nano_cores: u64v(0),
                psi: None,
            }),
            memory: Some(pb::MemoryUsage {
                timestamp: ts,
                working_set_bytes: u64v(0),
                available_bytes: limit.and_then(|l| u64v(l.unsigned_abs())),
                usage_bytes: u64v(0),
                rss_bytes: u64v(0),
                page_faults: u64v(0),
                major_page_faults: u64v(0),
                psi: None,
            }),
            writable_layer: Some(fs_usage(ts, 0, 0)),
            swap: Some(pb::SwapUsage {
                timestamp: ts,
                swap_available_bytes: u64v(0),
                swap_usage_bytes: u64v(0),
            }),
            io: Some(pb::IoUsage {
                timestamp: ts,
                psi: None,
            }),
        }
    }

    fn pod_stats(&self, p: &Pod, ts: i64) -> pb::PodSandboxStats {
        let running: Vec<_> = self
            .pod_containers(&p.id)
            .into_iter()
            .filter(|c| c.state == pb::ContainerState::ContainerRunning)
            .collect();
        pb::PodSandboxStats {
            attributes: Some(pb::PodSandboxAttributes {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
            }),
            linux: Some(pb::LinuxPodSandboxStats {
                cpu: Some(pb::CpuUsage {
                    timestamp: ts,
                    usage_core_nano_seconds: u64v(0),
                    usage_nano_cores: u64v(0),
                    psi: None,
                }),
                memory: Some(pb::MemoryUsage {
                    timestamp: ts,
                    working_set_bytes: u64v(0),
                    usage_bytes: u64v(0),
                    rss_bytes: u64v(0),
                    page_faults: u64v(0),
                    major_page_faults: u64v(0),
                    ..Default::default()
                }),
                network: Some(pb::NetworkUsage {
                    timestamp: ts,
                    default_interface: Some(pb::NetworkInterfaceUsage {
                        name: "eth0".to_string(),
                        rx_bytes: u64v(0),
                        rx_errors: u64v(0),
                        tx_bytes: u64v(0),
                        tx_errors: u64v(0),
                    }),
                    interfaces: Vec::new(),
                }),
                process: Some(pb::ProcessUsage {
                    timestamp: ts,
                    process_count: u64v(running.len() as u64),
                }),
                containers: running
                    .iter()
                    .map(|c| self.container_stats(c, ts))
                    .collect(),
                io: Some(pb::IoUsage {
                    timestamp: ts,
                    psi: None,
                }),
            }),
            windows: None,
        }
    }

    fn list_pods(&self, f: Option<pb::PodSandboxFilter>) -> Vec<pb::PodSandbox> {
        let f = f.unwrap_or_default();
        let mut v: Vec<&Pod> = self
            .pods
            .values()
            .filter(|p| p.id.starts_with(&f.id))
            .filter(|p| f.state.as_ref().is_none_or(|s| s.state == p.state as i32))
            .filter(|p| labels_match(&p.config.labels, &f.label_selector))
            .collect();
        v.sort_by_key(|p| p.seq);
        v.into_iter().map(|p| self.pod_item(p)).collect()
    }

    fn list_containers(&self, f: Option<pb::ContainerFilter>) -> Vec<pb::Container> {
        let f = f.unwrap_or_default();
        let mut v: Vec<&Container> = self
            .containers
            .values()
            .filter(|c| c.id.starts_with(&f.id))
            .filter(|c| c.pod_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| f.state.as_ref().is_none_or(|s| s.state == c.state as i32))
            .filter(|c| labels_match(&c.config.labels, &f.label_selector))
            .collect();
        v.sort_by_key(|c| c.seq);
        v.into_iter().map(|c| self.container_item(c)).collect()
    }

    /// Stats of the running containers matching `f`.
    fn list_container_stats(
        &mut self,
        f: Option<pb::ContainerStatsFilter>,
    ) -> Vec<pb::ContainerStats> {
        let f = f.unwrap_or_default();
        let ts = self.now();
        let mut v: Vec<&Container> = self
            .containers
            .values()
            .filter(|c| c.state == pb::ContainerState::ContainerRunning)
            .filter(|c| c.id.starts_with(&f.id))
            .filter(|c| c.pod_id.starts_with(&f.pod_sandbox_id))
            .filter(|c| labels_match(&c.config.labels, &f.label_selector))
            .collect();
        v.sort_by_key(|c| c.seq);
        v.into_iter().map(|c| self.container_stats(c, ts)).collect()
    }

    /// Stats of the ready pods matching `f`.
    fn list_pod_stats(&mut self, f: Option<pb::PodSandboxStatsFilter>) -> Vec<pb::PodSandboxStats> {
        let f = f.unwrap_or_default();
        let ts = self.now();
        let mut v: Vec<&Pod> = self
            .pods
            .values()
            .filter(|p| p.state == pb::PodSandboxState::SandboxReady)
            .filter(|p| p.id.starts_with(&f.id))
            .filter(|p| labels_match(&p.config.labels, &f.label_selector))
            .collect();
        v.sort_by_key(|p| p.seq);
        v.into_iter().map(|p| self.pod_stats(p, ts)).collect()
    }

    /// The container `id` resolves to, which must be RUNNING.
    fn running_container(&self, id: &str) -> Result<&Container, Status> {
        let id = self.require_container(id, "container_id")?;
        let c = &self.containers[&id];
        if c.state != pb::ContainerState::ContainerRunning {
            return Err(Status::failed_precondition(format!(
                "container {} is not running (state {})",
                c.id,
                state_name(c.state)
            )));
        }
        Ok(c)
    }

    /// A token for a streaming URL.
    fn token(&mut self) -> String {
        let mut t = self.new_id("stream-token");
        t.truncate(32);
        t
    }
}

fn streaming_url(kind: &str, token: &str) -> String {
    // There is no streaming server: a client following this URL fails to connect.
    format!("http://127.0.0.1:0/builtin/{kind}/{token}")
}

/// A pod name reserved (in [`State::starting`]) while RunPodSandbox sets up the pod's network;
/// released when dropped, so also when the call is cancelled.
struct Reserved<'a> {
    builtin: &'a Builtin,
    name: String,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.builtin.lock().starting.remove(&self.name);
    }
}

/// Sets up pod `id`'s network on a task of its own, so that it runs to its end (success, or the
/// cleanup of a failure) even if the call is cancelled half-way, and is torn down again when
/// nobody is left to take it.
async fn set_up(
    net: Arc<PodNetwork>,
    id: &str,
    config: &pb::PodSandboxConfig,
) -> Result<Attached, Status> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (task_id, config) = (id.to_string(), config.clone());
    tokio::spawn(async move {
        let done = net.setup(&task_id, &config).await;
        if let Err(Ok(_)) = tx.send(done)
            && let Err(e) = net.teardown(&task_id).await
        {
            tracing::warn!(sandbox = %task_id, "tearing down the network of a cancelled RunPodSandbox: {e}");
        }
    });
    match rx.await {
        Ok(done) => done.map_err(|e| e.status("set up", id)),
        Err(_) => Err(Status::internal(format!(
            "the network setup of sandbox {id:?} stopped without an answer"
        ))),
    }
}

/// The verbose info of a networked pod, in containerd's terms: the namespace in the runtime
/// spec (where `crictl inspectp` users look for it) and the CNI result.
fn network_info(mut info: serde_json::Value, n: &Attached) -> serde_json::Value {
    info["netNamespaceClosed"] = json!(false);
    info["runtimeSpec"] = json!({
        "linux": {"namespaces": [{"type": "network", "path": n.netns}]},
    });
    info["cniResult"] = n.result.clone();
    info["network"] = json!(n.network);
    info
}

impl Builtin {
    /// Stops the pod `id` (a prefix) and tears its network down, if it has one; kept on
    /// failure, so that a retry tears it down again.
    async fn tear_down_network(&self, id: &str) -> Result<(), Status> {
        let Some(net) = &self.network else {
            return Ok(());
        };
        let networked = self.with(|st| {
            let Some(id) = st.pod_id(id, "pod_sandbox_id")? else {
                return Ok(None);
            };
            // Containers first, as containerd stops them before the network goes.
            st.stop_pod(&id);
            Ok(st.pods[&id].network.is_some().then_some(id))
        })?;
        let Some(id) = networked else {
            return Ok(());
        };
        net.teardown(&id)
            .await
            .map_err(|e| e.status("destroy", &id))?;
        self.with(|st| {
            if let Some(p) = st.pods.get_mut(&id) {
                p.network = None;
            }
            Ok(())
        })
    }
}

fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if !(stdin || stdout || stderr) {
        return Err(invalid("one of stdin, stdout and stderr must be true"));
    }
    if tty && stderr {
        return Err(invalid("tty and stderr cannot both be true"));
    }
    Ok(())
}

fn unimplemented_checkpoint() -> Status {
    Status::unimplemented("the builtin runtime cannot checkpoint")
}

#[tonic::async_trait]
impl pb::runtime_service_server::RuntimeService for Builtin {
    async fn version(
        &self,
        _req: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: KUBE_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: "v1".to_string(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<pb::RunPodSandboxRequest>,
    ) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
        let req = req.into_inner();
        let config = req.config.ok_or_else(|| invalid("config is required"))?;
        let md = config
            .metadata
            .clone()
            .ok_or_else(|| invalid("config.metadata is required"))?;
        if md.name.is_empty() || md.namespace.is_empty() || md.uid.is_empty() {
            return Err(invalid(
                "config.metadata.name, .namespace and .uid are required",
            ));
        }
        self.check_handler(&req.runtime_handler)?;
        let handler = req.runtime_handler;
        let Some(net) = self
            .network
            .clone()
            .filter(|_| !network::host_network(&config))
        else {
            let id = self.with(|st| {
                st.check_name_free(&md)?;
                let id = st.new_id(&pod_name(&md));
                st.admit(&id, config, handler, None);
                Ok(id)
            })?;
            return Ok(Response::new(pb::RunPodSandboxResponse {
                pod_sandbox_id: id,
            }));
        };
        // The name is held while the network is set up, outside the lock.
        let (id, _reserved) = self.with(|st| {
            st.check_name_free(&md)?;
            let id = st.new_id(&pod_name(&md));
            st.starting.insert(pod_name(&md));
            Ok((
                id,
                Reserved {
                    builtin: self,
                    name: pod_name(&md),
                },
            ))
        })?;
        let attached = set_up(net, &id, &config).await?;
        self.with(|st| {
            st.admit(&id, config, handler, Some(attached));
            Ok(())
        })?;
        Ok(Response::new(pb::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<pb::StopPodSandboxRequest>,
    ) -> Result<Response<pb::StopPodSandboxResponse>, Status> {
        let req = req.into_inner();
        self.tear_down_network(&req.pod_sandbox_id).await?;
        self.with(|st| {
            if let Some(id) = st.pod_id(&req.pod_sandbox_id, "pod_sandbox_id")? {
                st.stop_pod(&id);
            }
            Ok(())
        })?;
        Ok(Response::new(pb::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<pb::RemovePodSandboxRequest>,
    ) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
        let req = req.into_inner();
        // As containerd: a pod is stopped before it is removed, its network torn down with it.
        self.tear_down_network(&req.pod_sandbox_id).await?;
        self.with(|st| {
            if let Some(id) = st.pod_id(&req.pod_sandbox_id, "pod_sandbox_id")? {
                st.stop_pod(&id);
                let ids: Vec<String> = st
                    .pod_containers(&id)
                    .iter()
                    .map(|c| c.id.clone())
                    .collect();
                for cid in ids {
                    st.delete_container(&cid);
                }
                st.event(&id, &id, pb::ContainerEventType::ContainerDeletedEvent);
                st.pods.remove(&id);
            }
            Ok(())
        })?;
        Ok(Response::new(pb::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<pb::PodSandboxStatusRequest>,
    ) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
        let req = req.into_inner();
        let resp = self.with(|st| {
            let id = st.require_pod(&req.pod_sandbox_id, "pod_sandbox_id")?;
            let timestamp = st.now();
            let pod = &st.pods[&id];
            let mut info = std::collections::HashMap::new();
            if req.verbose {
                let v = json!({
                    "id": pod.id,
                    "pid": 0,
                    "state": pod.state.as_str_name(),
                    "runtimeHandler": pod.runtime_handler,
                    "runtimeType": RUNTIME_NAME,
                    "createdAt": pod.created_at,
                    "config": pod_config_json(&pod.config),
                });
                let v = match &pod.network {
                    Some(n) => network_info(v, n),
                    None => v,
                };
                info.insert("info".to_string(), v.to_string());
            }
            Ok(pb::PodSandboxStatusResponse {
                status: Some(st.pod_status(pod)),
                info,
                containers_statuses: st
                    .pod_containers(&id)
                    .into_iter()
                    .map(|c| st.container_status(c))
                    .collect(),
                timestamp,
            })
        })?;
        Ok(Response::new(resp))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<pb::ListPodSandboxRequest>,
    ) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
        let items = self.lock().list_pods(req.into_inner().filter);
        Ok(Response::new(pb::ListPodSandboxResponse { items }))
    }

    type StreamPodSandboxesStream = Batches<pb::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        req: Request<pb::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let items = self.lock().list_pods(req.into_inner().filter);
        Ok(Response::new(tokio_stream::iter(batches(
            items,
            |pod_sandboxes| pb::StreamPodSandboxesResponse { pod_sandboxes },
        ))))
    }

    async fn create_container(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        required(&req.pod_sandbox_id, "pod_sandbox_id")?;
        let config = req.config.ok_or_else(|| invalid("config is required"))?;
        let md = config
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| invalid("config.metadata.name is required"))?;
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| invalid("config.image.image is required"))?;
        let id = self.with(|st| {
            let pod_id = st.require_pod(&req.pod_sandbox_id, "pod_sandbox_id")?;
            let pod = &st.pods[&pod_id];
            if pod.state != pb::PodSandboxState::SandboxReady {
                return Err(Status::failed_precondition(format!(
                    "pod sandbox {pod_id} is not ready"
                )));
            }
            let log = log_path(&pod.config.log_directory, &config.log_path);
            if let Some(other) = st
                .containers
                .values()
                .find(|c| c.pod_id == pod_id && c.config.metadata.as_ref() == Some(&md))
            {
                return Err(Status::already_exists(format!(
                    "container name {:?} (attempt {}) is reserved in pod sandbox {pod_id} for {}",
                    md.name, md.attempt, other.id
                )));
            }
            let img = st.find_image(&image).ok_or_else(|| {
                Status::not_found(format!("image {image:?} not found: pull it first"))
            })?;
            let img = &st.images[&img];
            let image_id = img.id.clone();
            let image_ref = img
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| img.id.clone());
            let resources = config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| pb::ContainerResources {
                    linux: Some(r),
                    windows: None,
                });
            let id = st.new_id(&format!("{pod_id}/{}/{}", md.name, md.attempt));
            let seq = st.next_seq();
            let created_at = st.now();
            st.containers.insert(
                id.clone(),
                Container {
                    id: id.clone(),
                    seq,
                    pod_id: pod_id.clone(),
                    config,
                    state: pb::ContainerState::ContainerCreated,
                    created_at,
                    started_at: 0,
                    finished_at: 0,
                    exit_code: 0,
                    reason: String::new(),
                    message: String::new(),
                    image_id,
                    image_ref,
                    resources,
                    log_path: log,
                },
            );
            st.event(&id, &pod_id, pb::ContainerEventType::ContainerCreatedEvent);
            Ok(id)
        })?;
        Ok(Response::new(pb::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<pb::StartContainerRequest>,
    ) -> Result<Response<pb::StartContainerResponse>, Status> {
        let req = req.into_inner();
        self.with(|st| {
            let id = st.require_container(&req.container_id, "container_id")?;
            let c = &st.containers[&id];
            match c.state {
                pb::ContainerState::ContainerCreated => {}
                pb::ContainerState::ContainerRunning => {
                    return Err(Status::failed_precondition(format!(
                        "container {id} is already running"
                    )));
                }
                s => {
                    return Err(Status::failed_precondition(format!(
                        "container {id} is in state {}: only a created container can be started",
                        state_name(s)
                    )));
                }
            }
            let pod_id = c.pod_id.clone();
            if st.pods.get(&pod_id).map(|p| p.state) != Some(pb::PodSandboxState::SandboxReady) {
                return Err(Status::failed_precondition(format!(
                    "pod sandbox {pod_id} of container {id} is not ready"
                )));
            }
            let now = st.now();
            if let Some(c) = st.containers.get_mut(&id) {
                c.state = pb::ContainerState::ContainerRunning;
                c.started_at = now;
            }
            st.event(&id, &pod_id, pb::ContainerEventType::ContainerStartedEvent);
            Ok(())
        })?;
        Ok(Response::new(pb::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<pb::StopContainerRequest>,
    ) -> Result<Response<pb::StopContainerResponse>, Status> {
        let req = req.into_inner();
        // There is no process to signal, so the timeout never has to be waited out.
        self.with(|st| {
            let id = st.require_container(&req.container_id, "container_id")?;
            st.exit_container(&id, 0, "");
            Ok(())
        })?;
        Ok(Response::new(pb::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        let req = req.into_inner();
        self.with(|st| {
            if let Some(id) = st.container_id(&req.container_id, "container_id")? {
                st.delete_container(&id);
            }
            Ok(())
        })?;
        Ok(Response::new(pb::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let containers = self.lock().list_containers(req.into_inner().filter);
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    type StreamContainersStream = Batches<pb::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        req: Request<pb::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let items = self.lock().list_containers(req.into_inner().filter);
        Ok(Response::new(tokio_stream::iter(batches(
            items,
            |containers| pb::StreamContainersResponse { containers },
        ))))
    }

    async fn container_status(
        &self,
        req: Request<pb::ContainerStatusRequest>,
    ) -> Result<Response<pb::ContainerStatusResponse>, Status> {
        let req = req.into_inner();
        let resp = self.with(|st| {
            let id = st.require_container(&req.container_id, "container_id")?;
            let c = &st.containers[&id];
            let mut info = std::collections::HashMap::new();
            if req.verbose {
                let v = json!({
                    "sandboxID": c.pod_id,
                    "pid": 0,
                    "removing": false,
                    "runtimeType": RUNTIME_NAME,
                    "imageID": c.image_id,
                    "config": container_config_json(&c.config),
                });
                info.insert("info".to_string(), v.to_string());
            }
            Ok(pb::ContainerStatusResponse {
                status: Some(st.container_status(c)),
                info,
            })
        })?;
        Ok(Response::new(resp))
    }

    async fn update_container_resources(
        &self,
        req: Request<pb::UpdateContainerResourcesRequest>,
    ) -> Result<Response<pb::UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        self.with(|st| {
            let id = st.require_container(&req.container_id, "container_id")?;
            if let Some(c) = st.containers.get_mut(&id) {
                let old = c.resources.take().unwrap_or_default();
                c.resources = Some(pb::ContainerResources {
                    linux: req.linux.or(old.linux),
                    windows: req.windows.or(old.windows),
                });
            }
            Ok(())
        })?;
        Ok(Response::new(pb::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<pb::ReopenContainerLogRequest>,
    ) -> Result<Response<pb::ReopenContainerLogResponse>, Status> {
        let req = req.into_inner();
        self.with(|st| st.running_container(&req.container_id).map(|_| ()))?;
        Ok(Response::new(pb::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<pb::ExecSyncRequest>,
    ) -> Result<Response<pb::ExecSyncResponse>, Status> {
        let req = req.into_inner();
        required(&req.container_id, "container_id")?;
        if req.cmd.is_empty() {
            return Err(invalid("cmd is required"));
        }
        let (envs, hostname, pod_name) = self.with(|st| {
            let c = st.running_container(&req.container_id)?;
            let pod = st.pods.get(&c.pod_id).map(|p| &p.config);
            Ok((
                c.config.envs.clone(),
                pod.map(|p| p.hostname.clone()).unwrap_or_default(),
                pod.and_then(|p| p.metadata.as_ref())
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
            ))
        })?;
        // An empty hostname means the node's (host network), as in a real runtime.
        let hostname = Some(hostname)
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or(pod_name);
        let (stdout, stderr, exit_code) = run_builtin(&req.cmd, &envs, &hostname);
        Ok(Response::new(pb::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }))
    }

    async fn exec(
        &self,
        req: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let req = req.into_inner();
        required(&req.container_id, "container_id")?;
        if req.cmd.is_empty() {
            return Err(invalid("cmd is required"));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        let token = self.with(|st| {
            st.running_container(&req.container_id)?;
            Ok(st.token())
        })?;
        Ok(Response::new(pb::ExecResponse {
            url: streaming_url("exec", &token),
        }))
    }

    async fn attach(
        &self,
        req: Request<pb::AttachRequest>,
    ) -> Result<Response<pb::AttachResponse>, Status> {
        let req = req.into_inner();
        required(&req.container_id, "container_id")?;
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        let token = self.with(|st| {
            st.running_container(&req.container_id)?;
            Ok(st.token())
        })?;
        Ok(Response::new(pb::AttachResponse {
            url: streaming_url("attach", &token),
        }))
    }

    async fn port_forward(
        &self,
        req: Request<pb::PortForwardRequest>,
    ) -> Result<Response<pb::PortForwardResponse>, Status> {
        let req = req.into_inner();
        let token = self.with(|st| {
            let id = st.require_pod(&req.pod_sandbox_id, "pod_sandbox_id")?;
            if st.pods[&id].state != pb::PodSandboxState::SandboxReady {
                return Err(Status::failed_precondition(format!(
                    "pod sandbox {id} is not ready"
                )));
            }
            Ok(st.token())
        })?;
        Ok(Response::new(pb::PortForwardResponse {
            url: streaming_url("portforward", &token),
        }))
    }

    async fn container_stats(
        &self,
        req: Request<pb::ContainerStatsRequest>,
    ) -> Result<Response<pb::ContainerStatsResponse>, Status> {
        let req = req.into_inner();
        let stats = self.with(|st| {
            let id = st.require_container(&req.container_id, "container_id")?;
            let ts = st.now();
            Ok(st.container_stats(&st.containers[&id], ts))
        })?;
        Ok(Response::new(pb::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<pb::ListContainerStatsRequest>,
    ) -> Result<Response<pb::ListContainerStatsResponse>, Status> {
        let stats = self.lock().list_container_stats(req.into_inner().filter);
        Ok(Response::new(pb::ListContainerStatsResponse { stats }))
    }

    type StreamContainerStatsStream = Batches<pb::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        req: Request<pb::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let stats = self.lock().list_container_stats(req.into_inner().filter);
        Ok(Response::new(tokio_stream::iter(batches(
            stats,
            |container_stats| pb::StreamContainerStatsResponse { container_stats },
        ))))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<pb::PodSandboxStatsRequest>,
    ) -> Result<Response<pb::PodSandboxStatsResponse>, Status> {
        let req = req.into_inner();
        let stats = self.with(|st| {
            let id = st.require_pod(&req.pod_sandbox_id, "pod_sandbox_id")?;
            let ts = st.now();
            Ok(st.pod_stats(&st.pods[&id], ts))
        })?;
        Ok(Response::new(pb::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<pb::ListPodSandboxStatsRequest>,
    ) -> Result<Response<pb::ListPodSandboxStatsResponse>, Status> {
        let stats = self.lock().list_pod_stats(req.into_inner().filter);
        Ok(Response::new(pb::ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxStatsStream = Batches<pb::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<pb::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let stats = self.lock().list_pod_stats(req.into_inner().filter);
        Ok(Response::new(tokio_stream::iter(batches(
            stats,
            |pod_sandbox_stats| pb::StreamPodSandboxStatsResponse { pod_sandbox_stats },
        ))))
    }

    async fn update_runtime_config(
        &self,
        req: Request<pb::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<pb::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr);
        if let Some(cidr) = cidr {
            self.lock().pod_cidr = cidr;
        }
        Ok(Response::new(pb::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let verbose = req.into_inner().verbose;
        let condition = |t: &str| pb::RuntimeCondition {
            r#type: t.to_string(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        // containerd's words when its CNI config is missing or broken.
        let network_ready = match &self.network {
            Some(net) => match net.ready() {
                Ok(()) => condition("NetworkReady"),
                Err(e) => pb::RuntimeCondition {
                    r#type: "NetworkReady".to_string(),
                    status: false,
                    reason: "NetworkPluginNotReady".to_string(),
                    message: format!("Network plugin returns error: {e}"),
                },
            },
            None => condition("NetworkReady"),
        };
        let mut info = std::collections::HashMap::new();
        if verbose {
            let st = self.lock();
            let mut config = json!({
                "runtime": RUNTIME_NAME,
                "version": env!("CARGO_PKG_VERSION"),
                "rootDir": ROOT_DIR,
                "cgroupDriver": "cgroupfs",
                "runtimeHandlers": self.handlers,
                "streamingServer": false,
                "podCIDR": st.pod_cidr,
                "pods": st.pods.len(),
                "containers": st.containers.len(),
                "images": st.images.len(),
            });
            if let Some(net) = &self.network {
                let s = net.settings();
                config["podNetwork"] = json!({
                    "confDir": s.conf_dir,
                    "binDirs": s.bin_dirs,
                    "netnsDir": s.netns_dir,
                    "pluginTimeoutMs": s.timeout.as_millis() as u64,
                });
            }
            info.insert("config".to_string(), config.to_string());
        }
        Ok(Response::new(pb::StatusResponse {
            status: Some(pb::RuntimeStatus {
                conditions: vec![condition("RuntimeReady"), network_ready],
            }),
            info,
            runtime_handlers: self
                .handlers
                .iter()
                .map(|name| pb::RuntimeHandler {
                    name: name.clone(),
                    features: Some(pb::RuntimeHandlerFeatures::default()),
                })
                .collect(),
            features: Some(pb::RuntimeFeatures::default()),
        }))
    }

    async fn checkpoint_container(
        &self,
        _req: Request<pb::CheckpointContainerRequest>,
    ) -> Result<Response<pb::CheckpointContainerResponse>, Status> {
        Err(unimplemented_checkpoint())
    }

    async fn checkpoint_pod(
        &self,
        _req: Request<pb::CheckpointPodRequest>,
    ) -> Result<Response<pb::CheckpointPodResponse>, Status> {
        Err(unimplemented_checkpoint())
    }

    async fn restore_pod(
        &self,
        _req: Request<pb::RestorePodRequest>,
    ) -> Result<Response<pb::RestorePodResponse>, Status> {
        Err(Status::unimplemented(
            "the builtin runtime cannot checkpoint, so it cannot restore a checkpoint either",
        ))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _req: Request<pb::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let rx = self.events.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => return Some((Ok(ev), rx)),
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::warn!(
                            skipped,
                            "container event subscriber lagging; events skipped"
                        );
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<pb::ListMetricDescriptorsRequest>,
    ) -> Result<Response<pb::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(pb::ListMetricDescriptorsResponse::default()))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<pb::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<pb::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(pb::ListPodSandboxMetricsResponse::default()))
    }

    type StreamPodSandboxMetricsStream = Batches<pb::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<pb::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        Ok(Response::new(tokio_stream::iter(Vec::new())))
    }

    async fn runtime_config(
        &self,
        _req: Request<pb::RuntimeConfigRequest>,
    ) -> Result<Response<pb::RuntimeConfigResponse>, Status> {
        Ok(Response::new(pb::RuntimeConfigResponse {
            linux: Some(pb::LinuxRuntimeConfiguration {
                cgroup_driver: pb::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<pb::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<pb::UpdatePodSandboxResourcesResponse>, Status> {
        let req = req.into_inner();
        self.with(|st| {
            let id = st.require_pod(&req.pod_sandbox_id, "pod_sandbox_id")?;
            if let Some(pod) = st.pods.get_mut(&id) {
                let linux = pod.config.linux.get_or_insert_with(Default::default);
                if req.overhead.is_some() {
                    linux.overhead = req.overhead;
                }
                if req.resources.is_some() {
                    linux.resources = req.resources;
                }
            }
            Ok(())
        })?;
        Ok(Response::new(pb::UpdatePodSandboxResourcesResponse {}))
    }
}
