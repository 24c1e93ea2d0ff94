//! CRI clients and kubelet-like calls for the tests that drive a daemon's CRI socket, and a
//! follower of the daemon's call trace.
//!
//! kubelet sits at the start of every call these tests make: a request goes to the daemon's CRI
//! socket, through its runtime hooks, to the runtime behind it (the builtin one, or containerd),
//! and the daemon traces the call with each hook's decision on its admin socket. The helpers
//! below build the requests (`*_config`, [`create_request`]), make the calls a test does not
//! check by itself (pull, run a pod, start, tear down), and read the trace ([`follow`]).
//!
//! The requests are the smallest that the builtin runtime accepts: a pod with metadata only, a
//! busybox container sleeping ([`secured_container`] adds a security context for policy hooks).
//! A test that needs more (env, labels, log paths) adds it to these with struct update syntax,
//! so what it adds stays in the test. The containerd tests build their requests with
//! [`crate::containerd`]'s fuller configs, which that runtime needs, and use the calls here.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tonic::Status;
use tonic::transport::Channel;
use wasmgate_daemon::admin::{TraceFilter, follow_trace};
use wasmgate_daemon::trace::{CallRecord, TraceLine};
use wasmgate_proto::cri::v1 as pb;
use wasmgate_proto::cri::v1::image_service_client::ImageServiceClient;
use wasmgate_proto::cri::v1::runtime_service_client::RuntimeServiceClient;

use crate::Daemon;

/// A RuntimeService client.
pub type Rt = RuntimeServiceClient<Channel>;
/// An ImageService client.
pub type Im = ImageServiceClient<Channel>;

/// The image every container here runs; the builtin runtime "pulls" any name.
pub const BUSYBOX: &str = "busybox";

// ---- connecting ------------------------------------------------------------------------------

/// Both CRI clients on one connection to `socket`, with tonic's default message limits.
pub async fn clients(socket: impl AsRef<Path>) -> (Rt, Im) {
    let ch = wasmgate_proto::unix_channel(socket).await.unwrap();
    (
        RuntimeServiceClient::new(ch.clone()),
        ImageServiceClient::new(ch),
    )
}

/// The builtin runtime's own socket, behind the proxy of `d`: calls made on it bypass the hooks.
pub fn builtin_socket(d: &Daemon) -> PathBuf {
    d.dir.join("state/cri-builtin.sock")
}

// ---- requests --------------------------------------------------------------------------------

/// An image spec of `name`, as the requests hold it.
pub fn image(name: &str) -> Option<pb::ImageSpec> {
    Some(pb::ImageSpec {
        image: name.into(),
        ..Default::default()
    })
}

/// Pod `name` in `namespace`, uid `uid-<name>`: metadata and nothing else.
pub fn pod_config(name: &str, namespace: &str) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: namespace.into(),
            attempt: 0,
        }),
        ..Default::default()
    }
}

/// Container `name` of [`BUSYBOX`] running `sleep 3600`, with no env and no Linux config.
pub fn container_config(name: &str) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: image(BUSYBOX),
        command: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    }
}

/// `env` as a container config's `envs`.
pub fn envs(env: &[(&str, &str)]) -> Vec<pb::KeyValue> {
    env.iter()
        .map(|(k, v)| pb::KeyValue {
            key: k.to_string(),
            value: v.as_bytes().to_vec(),
        })
        .collect()
}

/// [`container_config`] with a security context: `privileged` or not, adding the capabilities
/// `add` (spelled as given: hooks see kubelet's spelling). What a policy hook judges.
pub fn secured_container(name: &str, privileged: bool, add: &[&str]) -> pb::ContainerConfig {
    pb::ContainerConfig {
        linux: Some(pb::LinuxContainerConfig {
            security_context: Some(pb::LinuxContainerSecurityContext {
                privileged,
                capabilities: Some(pb::Capability {
                    add_capabilities: add.iter().map(|c| c.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..container_config(name)
    }
}

/// CreateContainer of `config` in `pod` as kubelet sends it: with a pod config, `sandbox`, where
/// the hooks find the pod's name and namespace.
pub fn create_request(
    pod: &str,
    sandbox: pb::PodSandboxConfig,
    config: pb::ContainerConfig,
) -> pb::CreateContainerRequest {
    pb::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(sandbox),
    }
}

/// UpdateContainerResources of `container`, setting only its CPU shares.
pub fn cpu_shares(container: &str, shares: i64) -> pb::UpdateContainerResourcesRequest {
    pb::UpdateContainerResourcesRequest {
        container_id: container.into(),
        linux: Some(pb::LinuxContainerResources {
            cpu_shares: shares,
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---- calls -----------------------------------------------------------------------------------

/// PullImage of `image`, which must succeed; the image's reference.
pub async fn pull(im: &mut Im, image_name: &str) -> String {
    im.pull_image(pb::PullImageRequest {
        image: image(image_name),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .image_ref
}

/// RunPodSandbox of [`pod_config`]`(name, namespace)`: the pod's id, or the refusal.
pub async fn try_run_pod(rt: &mut Rt, name: &str, namespace: &str) -> Result<String, Status> {
    rt.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(pod_config(name, namespace)),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

/// [`try_run_pod`], which must succeed.
pub async fn run_pod(rt: &mut Rt, name: &str, namespace: &str) -> String {
    try_run_pod(rt, name, namespace).await.unwrap()
}

/// Pulls [`BUSYBOX`], then runs pod `name` in `default`: a pod to create containers in.
pub async fn pod_with_busybox(rt: &mut Rt, im: &mut Im, name: &str) -> String {
    pull(im, BUSYBOX).await;
    run_pod(rt, name, "default").await
}

/// [`create_request`] sent: the new container's id, or the refusal.
pub async fn create(
    rt: &mut Rt,
    pod: &str,
    sandbox: pb::PodSandboxConfig,
    config: pb::ContainerConfig,
) -> Result<String, Status> {
    rt.create_container(create_request(pod, sandbox, config))
        .await
        .map(|r| r.into_inner().container_id)
}

/// StartContainer, which must succeed.
pub async fn start(rt: &mut Rt, container: &str) {
    rt.start_container(pb::StartContainerRequest {
        container_id: container.into(),
    })
    .await
    .unwrap();
}

/// ExecSync of `cmd` in `container` (5 s timeout), which must be answered; its result.
pub async fn exec(rt: &mut Rt, container: &str, cmd: &[&str]) -> pb::ExecSyncResponse {
    rt.exec_sync(pb::ExecSyncRequest {
        container_id: container.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 5,
    })
    .await
    .unwrap()
    .into_inner()
}

/// ContainerStatus (not verbose), which must succeed: the status.
pub async fn container_status(rt: &mut Rt, container: &str) -> pb::ContainerStatus {
    rt.container_status(pb::ContainerStatusRequest {
        container_id: container.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// PodSandboxStatus (not verbose), which must succeed: the status.
pub async fn pod_status(rt: &mut Rt, pod: &str) -> pb::PodSandboxStatus {
    rt.pod_sandbox_status(pb::PodSandboxStatusRequest {
        pod_sandbox_id: pod.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// ListContainers without a filter, which must succeed.
pub async fn containers(rt: &mut Rt) -> Vec<pb::Container> {
    rt.list_containers(pb::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// ListPodSandbox without a filter, which must succeed.
pub async fn pods(rt: &mut Rt) -> Vec<pb::PodSandbox> {
    rt.list_pod_sandbox(pb::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
}

/// StopContainer (no grace), then RemoveContainer, as kubelet ends a container; both must
/// succeed.
pub async fn stop_and_remove_container(rt: &mut Rt, container: &str) {
    rt.stop_container(pb::StopContainerRequest {
        container_id: container.into(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(pb::RemoveContainerRequest {
        container_id: container.into(),
    })
    .await
    .unwrap();
}

/// StopPodSandbox, then RemovePodSandbox, as kubelet ends a pod; both must succeed.
pub async fn stop_and_remove_pod(rt: &mut Rt, pod: &str) {
    rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap();
}

// ---- the daemon's trace ----------------------------------------------------------------------

/// A trace filter for CRI calls: all of them, or those of `method` only.
pub fn cri_calls(method: Option<&str>) -> TraceFilter {
    TraceFilter {
        interface: Some("cri".into()),
        method: method.map(String::from),
        ..Default::default()
    }
}

/// Follows `d`'s trace, as `filter` selects it, on a thread of its own; returns once subscribed,
/// so that every call made afterwards is in the receiver. A follower that falls behind and loses
/// records panics: a test reading the trace must see all of it.
pub fn follow(d: &Daemon, filter: TraceFilter) -> mpsc::Receiver<CallRecord> {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let socket = d.admin_socket();
    std::thread::spawn(move || {
        let _ = follow_trace(&socket, filter, |line| match line {
            TraceLine::Subscribed => {
                let _ = ready_tx.send(());
                true
            }
            TraceLine::Call(c) => tx.send(*c).is_ok(),
            TraceLine::Dropped { count } => panic!("trace follower lost {count} records"),
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("trace subscription within 5 s");
    rx
}

/// The next trace record, within 5 s.
pub fn next_record(rx: &mpsc::Receiver<CallRecord>) -> CallRecord {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("a trace record within 5 s")
}

/// The next trace record of `method`, skipping others; each within 5 s.
pub fn record_of(rx: &mpsc::Receiver<CallRecord>, method: &str) -> CallRecord {
    loop {
        let rec = rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no {method} trace record within 5 s"));
        if rec.method == method {
            return rec;
        }
    }
}

/// What `hook` decided in `phase` (`pre` or `post`) of a traced call, if it took part.
pub fn decision<'a>(rec: &'a CallRecord, hook: &str, phase: &str) -> Option<&'a str> {
    rec.hooks
        .iter()
        .find(|h| h.hook == hook && h.phase == phase)
        .map(|h| h.decision.as_str())
}
