//! kubelet's view of wasmgate's CRI socket in front of the builtin runtime: every call passes,
//! hooks deny and adjust, streams and unknown methods are forwarded, and each call is traced.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_proto::cri::v1::image_service_client::ImageServiceClient;
use wasmgate_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use wasmgate_tests::{Daemon, plugin};

type Rt = RuntimeServiceClient<tonic::transport::Channel>;
type Im = ImageServiceClient<tonic::transport::Channel>;

async fn clients(d: &Daemon) -> (Rt, Im) {
    let ch = wasmgate_proto::unix_channel(d.cri_socket()).await.unwrap();
    (
        RuntimeServiceClient::new(ch.clone()),
        ImageServiceClient::new(ch),
    )
}

fn pod_config(name: &str, namespace: &str) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: namespace.into(),
            attempt: 0,
        }),
        log_directory: "/tmp".into(),
        ..Default::default()
    }
}

fn container_config(name: &str, privileged: bool) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        linux: Some(pb::LinuxContainerConfig {
            security_context: Some(pb::LinuxContainerSecurityContext {
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_pod(rt: &mut Rt, name: &str, namespace: &str) -> String {
    rt.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(pod_config(name, namespace)),
        runtime_handler: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

async fn pull(im: &mut Im, image: &str) -> String {
    im.pull_image(pb::PullImageRequest {
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .image_ref
}

async fn create(
    rt: &mut Rt,
    pod: &str,
    namespace: &str,
    c: pb::ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(c),
        sandbox_config: Some(pod_config("p", namespace)),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_lifecycle_through_the_proxy_with_inject_and_policy_hooks() {
    let d = Daemon::start_proxy(
        "builtin",
        &[
            ("policy", plugin("hook-policy"), ""),
            (
                "inject",
                plugin("hook-inject"),
                "config = { value = \"node-7\" }",
            ),
        ],
    );
    let (mut rt, mut im) = clients(&d).await;

    let v = rt
        .version(pb::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "wasmgate-builtin");

    let pod = run_pod(&mut rt, "web", "default").await;
    pull(&mut im, "busybox").await;
    let cid = create(&mut rt, &pod, "default", container_config("app", false))
        .await
        .unwrap();
    rt.start_container(pb::StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap();

    // The inject hook's env var and annotation reached the runtime.
    let exec = rt
        .exec_sync(pb::ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec!["env".into()],
            timeout: 5,
        })
        .await
        .unwrap()
        .into_inner();
    let env = String::from_utf8_lossy(&exec.stdout);
    assert!(env.contains("WASMGATE_NODE=node-7"), "env: {env}");
    let status = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, pb::ContainerState::ContainerRunning as i32);
    assert_eq!(
        status
            .annotations
            .get("wasmgate.io/node")
            .map(String::as_str),
        Some("node-7")
    );

    // The policy hook refuses a privileged container outside kube-system, naming itself.
    let denied = create(&mut rt, &pod, "default", container_config("root", true))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("policy") && denied.message().contains("privileged"),
        "{denied:?}"
    );
    let sys = run_pod(&mut rt, "sys", "kube-system").await;
    create(&mut rt, &sys, "kube-system", container_config("root", true))
        .await
        .unwrap();

    // Unhooked calls and streams pass through.
    let listed = rt
        .list_containers(pb::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);
    let mut stream = rt
        .stream_containers(pb::StreamContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut streamed = 0;
    while let Some(item) = stream.next().await {
        streamed += item.unwrap().containers.len();
    }
    assert_eq!(streamed, 2);

    rt.stop_container(pb::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(pb::RemoveContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    let gone = rt
        .pod_sandbox_status(pb::PodSandboxStatusRequest {
            pod_sandbox_id: pod,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Every call was traced once, hooked ones with each hook's decision.
    let stats = wasmgate_daemon::admin::stats(&d.admin_socket()).unwrap();
    assert_eq!(stats["cri.CreateContainer"].ok, 2);
    assert_eq!(stats["cri.CreateContainer"].errors, 1);
    assert_eq!(stats["cri.ListContainers"].ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_and_unknown_methods_are_forwarded() {
    let d = Daemon::start_proxy("builtin", &[]);
    let (mut rt, mut im) = clients(&d).await;
    let mut events = rt
        .get_container_events(pb::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let pod = run_pod(&mut rt, "ev", "default").await;
    pull(&mut im, "busybox").await;
    let cid = create(&mut rt, &pod, "default", container_config("c", false))
        .await
        .unwrap();
    // The runtime reports the sandbox's own events too, as containerd does; find the container's.
    let created = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let e = events.next().await.expect("stream open").unwrap();
            if e.container_id == cid {
                return e;
            }
        }
    })
    .await
    .expect("the container's event within 5 s");
    assert_eq!(
        created.container_event_type,
        pb::ContainerEventType::ContainerCreatedEvent as i32
    );

    // A method this build does not know goes to the runtime by its path, and the runtime's
    // answer (here: it does not know it either) comes back unchanged.
    let ch = wasmgate_proto::unix_channel(d.cri_socket()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/runtime.v1.RuntimeService/FutureMethod");
    let err = grpc
        .unary::<pb::VersionRequest, pb::VersionResponse, _>(
            tonic::Request::new(pb::VersionRequest::default()),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
}
