//! kubelet's view of wasmgate's CRI socket in front of the builtin runtime: every call passes,
//! hooks deny and adjust, streams and unknown methods are forwarded, and each call is traced.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::Code;
use wasmgate_daemon::admin::TraceFilter;
use wasmgate_daemon::trace::CallRecord;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, Rt, run_pod, secured_container};
use wasmgate_tests::{Daemon, plugin, unique};

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

/// Calls forwarded as they came carry their pod, container or image in the trace, so following
/// one container (`wasmgate trace --id`) shows every call about it, hooked or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_calls_carry_their_key_ids_in_the_trace() {
    let d = Daemon::start_proxy("builtin", &[]);
    let (mut rt, mut im) = cri::clients(d.cri_socket()).await;
    let all = cri::follow(&d, cri::cri_calls(None));
    let pod = run_pod(&mut rt, "ids", "default").await;
    cri::pull(&mut im, cri::BUSYBOX).await;
    let cid = create(&mut rt, &pod, "default", "c", false).await.unwrap();

    let mut only_cid = cri::cri_calls(None);
    only_cid.id = Some(cid.clone());
    let followed = cri::follow(&d, only_cid);
    cri::start(&mut rt, &cid).await;
    rt.container_status(pb::ContainerStatusRequest {
        container_id: cid.clone(),
        verbose: false,
    })
    .await
    .unwrap();
    rt.pod_sandbox_status(pb::PodSandboxStatusRequest {
        pod_sandbox_id: pod.clone(),
        verbose: false,
    })
    .await
    .unwrap();
    cri::stop_and_remove_container(&mut rt, &cid).await;

    let methods: Vec<String> = (0..4)
        .map(|_| {
            let r = cri::next_record(&followed);
            assert_eq!(r.ids.get("container"), Some(&cid), "{r:?}");
            assert!(r.hooks.is_empty() && r.upstream_us.is_some(), "{r:?}");
            r.method
        })
        .collect();
    assert_eq!(
        methods,
        [
            "StartContainer",
            "ContainerStatus",
            "StopContainer",
            "RemoveContainer"
        ]
    );
    assert!(
        followed.recv_timeout(Duration::from_millis(300)).is_err(),
        "a call not about {cid} matched"
    );
    let pulled = cri::record_of(&all, "PullImage");
    assert_eq!(
        pulled.ids.get("image").map(String::as_str),
        Some(cri::BUSYBOX),
        "{pulled:?}"
    );
    for method in ["CreateContainer", "PodSandboxStatus"] {
        let r = cri::record_of(&all, method);
        assert_eq!(r.ids.get("pod"), Some(&pod), "{r:?}");
    }
}

/// The calls that create a pod or a container carry the ID the runtime returned, beside the names
/// from the request, so that `wasmgate trace --id <id>` finds a pod's or a container's life from
/// its first call, whether a hook saw the call (decoded) or it was forwarded as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_pods_and_containers_carry_their_new_ids_in_the_trace() {
    // hook-misbehave allows everything: subscribed to both calls, it puts them on the hooked path.
    let allow = r#"config = { mode = "allow", events = "run-pod create-container" }"#;
    for hooked in [false, true] {
        let hooks = if hooked {
            vec![("allow", plugin("hook-misbehave"), allow)]
        } else {
            Vec::new()
        };
        let d = Daemon::start_proxy("builtin", &hooks);
        let (mut rt, mut im) = cri::clients(d.cri_socket()).await;
        cri::pull(&mut im, cri::BUSYBOX).await;
        let all = cri::follow(&d, cri::cri_calls(None));
        let by_id = |id: &str| TraceFilter {
            id: Some(id.to_string()),
            ..cri::cri_calls(None)
        };
        // The pod's name is all an operator knows before the pod runs.
        let name = unique("born-");
        let named = cri::follow(&d, by_id(&name));
        let pod = run_pod(&mut rt, &name, "team-a").await;
        let cid = create(&mut rt, &pod, "team-a", "first", false)
            .await
            .unwrap();

        let ids = |r: &CallRecord| -> Vec<(String, String)> { r.ids.clone().into_iter().collect() };
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let ran = cri::record_of(&all, "RunPodSandbox");
        assert_eq!(ran.hooks.is_empty(), !hooked, "{ran:?}");
        assert_eq!(
            ids(&ran),
            [
                pair("namespace", "team-a"),
                pair("pod", &pod),
                pair("pod_name", &name)
            ],
            "hooked: {hooked}"
        );
        let created = cri::record_of(&all, "CreateContainer");
        assert_eq!(created.hooks.is_empty(), !hooked, "{created:?}");
        assert_eq!(
            ids(&created),
            [
                pair("container", &cid),
                pair("container_name", "first"),
                pair("pod", &pod)
            ],
            "hooked: {hooked}"
        );
        // `--id` is the daemon's filter: the new IDs find the calls that made them.
        assert!(by_id(&pod).matches(&ran) && by_id(&pod).matches(&created));
        assert!(by_id(&cid).matches(&created) && !by_id(&cid).matches(&ran));
        // And through the daemon, the pod's name finds its RunPodSandbox, which names the pod.
        let first = cri::next_record(&named);
        assert_eq!(first.method, "RunPodSandbox", "{first:?}");
        assert_eq!(first.ids.get("pod"), Some(&pod), "{first:?}");
    }
}

/// A gRPC codec that passes message bytes through, so the test sees what is on the wire.
#[derive(Default, Clone)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// A runtime that records each call's path and message bytes and answers every call with an
/// empty message, RunPodSandbox with [`run_pod_answer`]: a stand-in upstream that shows exactly
/// what the proxy sent it.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Call>>>);

/// A call as the runtime got it: its path and its message's bytes.
type Call = (String, Vec<u8>);

impl tonic::server::NamedService for Recorder {
    const NAME: &'static str = "runtime.v1.RuntimeService";
}

impl tower::Service<http::Request<tonic::body::Body>> for Recorder {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let calls = self.0.clone();
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let answer = if path.ends_with("/RunPodSandbox") {
                run_pod_answer()
            } else {
                Vec::new()
            };
            let svc = tower::service_fn(move |r: tonic::Request<Vec<u8>>| {
                calls.lock().unwrap().push((path.clone(), r.into_inner()));
                let answer = answer.clone();
                async { Ok(tonic::Response::new(answer)) }
            });
            Ok(tonic::server::Grpc::new(Raw).unary(svc, req).await)
        })
    }
}

/// The sandbox "p1", then field 99 (varint 1), which runtime.v1 does not have.
fn run_pod_answer() -> Vec<u8> {
    let mut answer = prost::Message::encode_to_vec(&pb::RunPodSandboxResponse {
        pod_sandbox_id: "p1".into(),
    });
    answer.extend([0x98, 0x06, 0x01]);
    answer
}

/// With hooks configured, a call no hook subscribes to still reaches the runtime byte for byte,
/// fields this build's schema lacks included (a newer kubelet's), and so does its answer on the
/// way back; a subscribed call goes through the hook, here to a runtime behind a socket.
#[tokio::test]
async fn unsubscribed_calls_reach_the_runtime_byte_for_byte() {
    let dir = std::env::temp_dir().join(wasmgate_tests::unique("wasmgate-recorder-"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("runtime.sock");
    let recorder = Recorder::default();
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(recorder.clone())
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    // hook-inject subscribes to CreateContainer alone.
    let d = Daemon::start_proxy(
        &format!("unix://{}", sock.display()),
        &[(
            "inject",
            plugin("hook-inject"),
            "config = { value = \"n1\" }",
        )],
    );
    let ch = wasmgate_proto::unix_channel(d.cri_socket()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    let mut call = async |method: &str, msg: Vec<u8>| {
        grpc.ready().await.unwrap();
        let path = format!("/runtime.v1.RuntimeService/{method}");
        grpc.unary::<Vec<u8>, Vec<u8>, _>(
            tonic::Request::new(msg),
            http::uri::PathAndQuery::try_from(path).unwrap(),
            Raw,
        )
        .await
        .unwrap_or_else(|e| panic!("{method}: {e:?}"))
    };

    // StartContainer for "c1", then field 99 (varint 1), which runtime.v1 does not have.
    let mut start = prost::Message::encode_to_vec(&pb::StartContainerRequest {
        container_id: "c1".into(),
    });
    start.extend([0x98, 0x06, 0x01]);
    call("StartContainer", start.clone()).await;
    let create = pb::CreateContainerRequest {
        pod_sandbox_id: "p1".into(),
        config: Some(pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            image: Some(pb::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: None,
    };
    call("CreateContainer", prost::Message::encode_to_vec(&create)).await;
    // The answer to a forwarded RunPodSandbox comes back as the runtime gave it, too, though the
    // proxy reads the new sandbox's ID off it for the trace.
    let ran = cri::follow(&d, cri::cri_calls(Some("RunPodSandbox")));
    let run = pb::RunPodSandboxRequest {
        config: Some(cri::pod_config("web", "team-a")),
        ..Default::default()
    };
    let answer = call("RunPodSandbox", prost::Message::encode_to_vec(&run)).await;
    assert_eq!(answer.into_inner(), run_pod_answer());
    let rec = cri::next_record(&ran);
    assert!(rec.ok && rec.hooks.is_empty(), "{rec:?}");
    let ids: Vec<(&str, &str)> = rec
        .ids
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        ids,
        [("namespace", "team-a"), ("pod", "p1"), ("pod_name", "web")]
    );

    let calls = recorder.0.lock().unwrap().clone();
    let paths: Vec<&str> = calls.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths.first().copied(),
        Some("/runtime.v1.RuntimeService/StartContainer"),
        "{paths:?}"
    );
    assert_eq!(
        calls[0].1, start,
        "StartContainer was not forwarded as it came"
    );
    // Not necessarily the next call: the proxy first asks the runtime for the pod's status,
    // since the request came without its sandbox config.
    let (_, sent) = calls
        .iter()
        .find(|(p, _)| p == "/runtime.v1.RuntimeService/CreateContainer")
        .unwrap_or_else(|| panic!("no CreateContainer reached the runtime: {paths:?}"));
    let sent: pb::CreateContainerRequest = prost::Message::decode(sent.as_slice()).unwrap();
    let env = &sent.config.unwrap().envs;
    assert!(
        env.iter()
            .any(|e| e.key == "WASMGATE_NODE" && e.value == b"n1"),
        "the hook's env is missing from what the runtime got: {env:?}"
    );
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a [`Recorder`] on a socket in a fresh directory: the runtime, the socket's directory and
/// the server task.
fn recorder() -> (Recorder, std::path::PathBuf, tokio::task::JoinHandle<()>) {
    let dir = std::env::temp_dir().join(wasmgate_tests::unique("wasmgate-recorder-"));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = tokio::net::UnixListener::bind(dir.join("runtime.sock")).unwrap();
    let recorder = Recorder::default();
    let server = tonic::transport::Server::builder()
        .add_service(recorder.clone())
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener));
    let task = tokio::spawn(async move {
        let _ = server.await;
    });
    (recorder, dir, task)
}

/// Field `number` as a varint of 1, and `inner` as field `number` of its parent.
fn field(number: u32, inner: Option<&[u8]>) -> Vec<u8> {
    let mut b = Vec::new();
    match inner {
        None => {
            prost::encoding::encode_key(number, prost::encoding::WireType::Varint, &mut b);
            b.push(1);
        }
        Some(inner) => {
            prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut b);
            prost::encoding::encode_varint(inner.len() as u64, &mut b);
            b.extend_from_slice(inner);
        }
    }
    b
}

/// A hook's adjustment does not cost a newer kubelet's fields this build's schema lacks: field 99
/// of the container's LinuxContainerSecurityContext (a security setting we do not know) reaches
/// the runtime, beside the hook's env. One inside a repeated field (a mount) cannot be put back
/// beside an adjustment, and the call is refused, naming it.
#[tokio::test]
async fn hooked_calls_keep_the_fields_this_build_does_not_know() {
    let (recorder, dir, server) = recorder();
    let d = Daemon::start_proxy(
        &format!("unix://{}", dir.join("runtime.sock").display()),
        &[(
            "inject",
            plugin("hook-inject"),
            "config = { value = \"n1\" }",
        )],
    );
    let ch = wasmgate_proto::unix_channel(d.cri_socket()).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    let create = pb::CreateContainerRequest {
        pod_sandbox_id: "p1".into(),
        config: Some(pb::ContainerConfig {
            image: cri::image("busybox"),
            ..secured_container("c", false, &["CHOWN"])
        }),
        sandbox_config: Some(cri::pod_config("p", "default")),
    };
    let known = prost::Message::encode_to_vec(&create);
    // config (2) > linux (15) > security_context (2) > field 99, merged onto the known ones.
    let unknown = field(2, Some(&field(15, Some(&field(2, Some(&field(99, None)))))));
    let sent = [known.clone(), unknown.clone()].concat();
    grpc.ready().await.unwrap();
    grpc.unary::<Vec<u8>, Vec<u8>, _>(
        tonic::Request::new(sent),
        http::uri::PathAndQuery::from_static("/runtime.v1.RuntimeService/CreateContainer"),
        Raw,
    )
    .await
    .unwrap();
    let calls = recorder.0.lock().unwrap().clone();
    let (_, got) = calls
        .iter()
        .find(|(p, _)| p == "/runtime.v1.RuntimeService/CreateContainer")
        .expect("CreateContainer reached the runtime");
    let got_msg: pb::CreateContainerRequest = prost::Message::decode(got.as_slice()).unwrap();
    let cfg = got_msg.config.clone().unwrap();
    assert!(
        cfg.envs.iter().any(|e| e.key == "WASMGATE_NODE"),
        "the hook's env is missing: {cfg:?}"
    );
    // What the runtime got is the adjusted request, then the unknown field in its place.
    let mut want = prost::Message::encode_to_vec(&got_msg);
    want.extend_from_slice(&unknown);
    assert_eq!(
        got, &want,
        "field 99 of the security context did not reach the runtime"
    );

    // An unknown field inside a mount: refused, by path and number.
    let mut mount = prost::Message::encode_to_vec(&pb::Mount {
        container_path: "/data".into(),
        host_path: "/srv".into(),
        ..Default::default()
    });
    mount.extend(field(77, None));
    let sent = [known, field(2, Some(&field(7, Some(&mount))))].concat();
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<Vec<u8>, Vec<u8>, _>(
            tonic::Request::new(sent),
            http::uri::PathAndQuery::from_static("/runtime.v1.RuntimeService/CreateContainer"),
            Raw,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("CreateContainerRequest.config.mounts[0] has field 77"),
        "{err:?}"
    );
    let creates = recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.ends_with("/CreateContainer"))
        .count();
    assert_eq!(creates, 1, "the refused call reached the runtime");
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
