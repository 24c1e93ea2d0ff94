//! kubelet's view of wasmgate's CRI socket in front of the builtin runtime: every call passes,
//! hooks deny and adjust, streams and unknown methods are forwarded, and each call is traced.

use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, Rt, run_pod, secured_container};
use wasmgate_tests::{Daemon, plugin};

/// CreateContainer of container `name`, `privileged` or not, in `pod`, with a sandbox config
/// in `namespace`: what the policy hook judges.
async fn create(
    rt: &mut Rt,
    pod: &str,
    namespace: &str,
    name: &str,
    privileged: bool,
) -> Result<String, tonic::Status> {
    let sandbox = cri::pod_config("p", namespace);
    cri::create(rt, pod, sandbox, secured_container(name, privileged, &[])).await
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
    let (mut rt, mut im) = cri::clients(d.cri_socket()).await;

    let v = rt
        .version(pb::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "wasmgate-builtin");

    let pod = run_pod(&mut rt, "web", "default").await;
    cri::pull(&mut im, cri::BUSYBOX).await;
    let cid = create(&mut rt, &pod, "default", "app", false)
        .await
        .unwrap();
    cri::start(&mut rt, &cid).await;

    // The inject hook's env var and annotation reached the runtime.
    let exec = cri::exec(&mut rt, &cid, &["env"]).await;
    let env = String::from_utf8_lossy(&exec.stdout);
    assert!(env.contains("WASMGATE_NODE=node-7"), "env: {env}");
    let status = cri::container_status(&mut rt, &cid).await;
    assert_eq!(status.state, pb::ContainerState::ContainerRunning as i32);
    assert_eq!(
        status
            .annotations
            .get("wasmgate.io/node")
            .map(String::as_str),
        Some("node-7")
    );

    // The policy hook refuses a privileged container outside kube-system, naming itself.
    let denied = create(&mut rt, &pod, "default", "root", true)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("policy") && denied.message().contains("privileged"),
        "{denied:?}"
    );
    let sys = run_pod(&mut rt, "sys", "kube-system").await;
    create(&mut rt, &sys, "kube-system", "root", true)
        .await
        .unwrap();

    // Unhooked calls and streams pass through.
    let listed = cri::containers(&mut rt).await;
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

    cri::stop_and_remove_container(&mut rt, &cid).await;
    cri::stop_and_remove_pod(&mut rt, &pod).await;
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
    let (mut rt, mut im) = cri::clients(d.cri_socket()).await;
    let mut events = rt
        .get_container_events(pb::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let pod = run_pod(&mut rt, "ev", "default").await;
    cri::pull(&mut im, cri::BUSYBOX).await;
    let cid = create(&mut rt, &pod, "default", "c", false).await.unwrap();
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
