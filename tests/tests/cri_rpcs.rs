//! Every CRI RPC through the proxy answers as the runtime behind it does.
//!
//! The daemon proxies to its builtin runtime, which also listens on
//! `<state_dir>/cri-builtin.sock`: each of the 43 `runtime.v1` RPCs is called through the proxy
//! (with hooks subscribed to every hookable RPC, so those take the decoding path) and directly, and
//! the answers are compared: equal where the runtime is deterministic, the same shape where it
//! hands out fresh ids, tokens or timestamps. Errors must match too, code and message. Every
//! server stream is drained and compared with its unary `List*` twin.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::{Code, Status};
use tonic_prost::prost::Message;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, image};
use wasmgate_tests::{Daemon, plugin};

/// Every RPC of `runtime.v1` this test calls; checked against the compiled schema, so a new or
/// renamed RPC fails the test until it is covered here.
const RPCS: [&str; 43] = [
    // RuntimeService (37)
    "RuntimeService/Version",
    "RuntimeService/RunPodSandbox",
    "RuntimeService/StopPodSandbox",
    "RuntimeService/RemovePodSandbox",
    "RuntimeService/PodSandboxStatus",
    "RuntimeService/ListPodSandbox",
    "RuntimeService/StreamPodSandboxes",
    "RuntimeService/CreateContainer",
    "RuntimeService/StartContainer",
    "RuntimeService/StopContainer",
    "RuntimeService/RemoveContainer",
    "RuntimeService/ListContainers",
    "RuntimeService/StreamContainers",
    "RuntimeService/ContainerStatus",
    "RuntimeService/UpdateContainerResources",
    "RuntimeService/ReopenContainerLog",
    "RuntimeService/ExecSync",
    "RuntimeService/Exec",
    "RuntimeService/Attach",
    "RuntimeService/PortForward",
    "RuntimeService/ContainerStats",
    "RuntimeService/ListContainerStats",
    "RuntimeService/StreamContainerStats",
    "RuntimeService/PodSandboxStats",
    "RuntimeService/ListPodSandboxStats",
    "RuntimeService/StreamPodSandboxStats",
    "RuntimeService/UpdateRuntimeConfig",
    "RuntimeService/Status",
    "RuntimeService/CheckpointContainer",
    "RuntimeService/CheckpointPod",
    "RuntimeService/RestorePod",
    "RuntimeService/GetContainerEvents",
    "RuntimeService/ListMetricDescriptors",
    "RuntimeService/ListPodSandboxMetrics",
    "RuntimeService/StreamPodSandboxMetrics",
    "RuntimeService/RuntimeConfig",
    "RuntimeService/UpdatePodSandboxResources",
    // ImageService (6)
    "ImageService/ListImages",
    "ImageService/StreamImages",
    "ImageService/ImageStatus",
    "ImageService/PullImage",
    "ImageService/RemoveImage",
    "ImageService/ImageFsInfo",
];

const _: () = assert!(
    RPCS.len() == 43,
    "37 RuntimeService and 6 ImageService RPCs"
);

/// The server-streaming RPCs, each drained below.
const STREAMING: [&str; 7] = [
    "RuntimeService/StreamPodSandboxes",
    "RuntimeService/StreamContainers",
    "RuntimeService/StreamContainerStats",
    "RuntimeService/StreamPodSandboxStats",
    "RuntimeService/GetContainerEvents",
    "RuntimeService/StreamPodSandboxMetrics",
    "ImageService/StreamImages",
];

/// The RPCs of `runtime.v1` in the compiled schema: (`Service/Method`, server-streaming).
fn schema_rpcs() -> Vec<(String, bool)> {
    let set = prost_types::FileDescriptorSet::decode(wasmgate_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "runtime.v1") {
        for svc in &file.service {
            for m in &svc.method {
                out.push((format!("{}/{}", svc.name(), m.name()), m.server_streaming()));
            }
        }
    }
    out
}

/// Asserts the proxied and the direct answer are the same: equal values, or equal errors.
fn same<T: PartialEq + Debug>(rpc: &str, proxied: &Result<T, Status>, direct: &Result<T, Status>) {
    match (proxied, direct) {
        (Ok(p), Ok(d)) => assert_eq!(p, d, "{rpc}: the proxy's answer differs from the runtime's"),
        (Err(p), Err(d)) => assert_eq!(
            (p.code(), p.message()),
            (d.code(), d.message()),
            "{rpc}: the proxy's error differs from the runtime's"
        ),
        _ => panic!("{rpc}: proxied {proxied:?}, direct {direct:?}"),
    }
}

/// A runtime-generated id: 64 lower-case hex characters.
fn is_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A streaming URL without its one-time token.
fn url_prefix(url: &str) -> (&str, &str) {
    let (prefix, token) = url.rsplit_once('/').expect("url has a path");
    assert!(
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "url {url} ends in no token"
    );
    (prefix, token)
}

async fn drain<T>(
    r: Result<tonic::Response<tonic::Streaming<T>>, Status>,
) -> Result<Vec<T>, Status> {
    let mut s = r?.into_inner();
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("a finite stream ends within 5 s")
    {
        out.push(item?);
    }
    Ok(out)
}

/// Calls `$m($req)` on the proxied client and on the direct one: (proxied, direct).
macro_rules! both {
    ($p:expr, $d:expr, $m:ident, $req:expr) => {{
        let req = $req;
        let p = $p.$m(req.clone()).await.map(|r| r.into_inner());
        let d = $d.$m(req).await.map(|r| r.into_inner());
        (p, d)
    }};
}

/// [`both!`], then [`same`]; returns the proxied answer.
macro_rules! same {
    ($checked:expr, $rpc:literal, $p:expr, $d:expr, $m:ident, $req:expr) => {{
        let (p, d) = both!($p, $d, $m, $req);
        same($rpc, &p, &d);
        $checked.insert($rpc);
        p
    }};
}

fn zero_container_stats(s: &mut pb::ContainerStats) {
    if let Some(x) = s.cpu.as_mut() {
        x.timestamp = 0;
    }
    if let Some(x) = s.memory.as_mut() {
        x.timestamp = 0;
    }
    if let Some(x) = s.writable_layer.as_mut() {
        x.timestamp = 0;
    }
    if let Some(x) = s.swap.as_mut() {
        x.timestamp = 0;
    }
    if let Some(x) = s.io.as_mut() {
        x.timestamp = 0;
    }
}

fn zero_pod_stats(s: &mut pb::PodSandboxStats) {
    if let Some(l) = s.linux.as_mut() {
        if let Some(x) = l.cpu.as_mut() {
            x.timestamp = 0;
        }
        if let Some(x) = l.memory.as_mut() {
            x.timestamp = 0;
        }
        if let Some(x) = l.network.as_mut() {
            x.timestamp = 0;
        }
        if let Some(x) = l.process.as_mut() {
            x.timestamp = 0;
        }
        if let Some(x) = l.io.as_mut() {
            x.timestamp = 0;
        }
        l.containers.iter_mut().for_each(zero_container_stats);
    }
}

/// Sampling times differ between two calls; everything else must not.
fn timeless<T>(r: Result<T, Status>, zero: impl FnOnce(&mut T)) -> Result<T, Status> {
    r.map(|mut v| {
        zero(&mut v);
        v
    })
}

/// A pod in `default` with every field the status RPCs report back filled in, so that the
/// proxy's answer is compared on all of them.
fn pod_config(name: &str) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        hostname: name.into(),
        log_directory: "/var/log/pods/x".into(),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "rpc-test".to_string())].into(),
        ..cri::pod_config(name, "default")
    }
}

/// A busybox container with env, a log path and labels, for the same reason.
fn container_config(name: &str) -> pb::ContainerConfig {
    pb::ContainerConfig {
        envs: cri::envs(&[("GREETING", "hello")]),
        log_path: format!("{name}/0.log"),
        labels: [("tier".to_string(), "web".to_string())].into(),
        ..cri::container_config(name)
    }
}

fn create_request(pod: &str, pod_name: &str, name: &str) -> pb::CreateContainerRequest {
    cri::create_request(pod, pod_config(pod_name), container_config(name))
}

/// Reads events until one for `id` of `kind`, within 5 s; returns the first event read and that
/// one.
async fn event_for(
    s: &mut tonic::Streaming<pb::ContainerEventResponse>,
    id: &str,
    kind: pb::ContainerEventType,
) -> (pb::ContainerEventResponse, pb::ContainerEventResponse) {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut first = None;
        loop {
            let e = s.next().await.expect("event stream open").unwrap();
            first.get_or_insert_with(|| e.clone());
            if e.container_id == id && e.container_event_type == kind as i32 {
                return (first.unwrap(), e);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind:?} event for {id} within 5 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_through_the_proxy_answers_as_the_runtime_does() {
    // The schema has exactly the RPCs listed, and the streaming ones are those drained below.
    let schema = schema_rpcs();
    let names: BTreeSet<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(schema.len(), 43, "runtime.v1 changed: {names:?}");
    assert_eq!(names, RPCS.iter().copied().collect(), "runtime.v1 changed");
    let streaming: BTreeSet<&str> = schema
        .iter()
        .filter(|(_, s)| *s)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(streaming, STREAMING.iter().copied().collect());

    // hook-inject adjusts CreateContainer; hook-misbehave, subscribed to every event and
    // allowing all, puts the other eight hookable RPCs on the decoding path too.
    let daemon = Daemon::start_proxy(
        "builtin",
        &[
            (
                "inject",
                plugin("hook-inject"),
                "config = { value = \"rpc-node\" }",
            ),
            (
                "all",
                plugin("hook-misbehave"),
                "config = { mode = \"allow\" }",
            ),
        ],
    );
    let trace = cri::follow(&daemon, cri::cri_calls(None));
    let (mut prt, mut pim) = cri::clients(daemon.cri_socket()).await;
    let (mut drt, mut dim) = cri::clients(cri::builtin_socket(&daemon)).await;
    let mut checked: BTreeSet<&str> = BTreeSet::new();

    // ---- runtime-wide -------------------------------------------------------------------
    let v = same!(
        checked,
        "RuntimeService/Version",
        prt,
        drt,
        version,
        pb::VersionRequest::default()
    );
    assert_eq!(v.unwrap().runtime_name, "wasmgate-builtin");
    same!(
        checked,
        "RuntimeService/RuntimeConfig",
        prt,
        drt,
        runtime_config,
        pb::RuntimeConfigRequest {}
    )
    .unwrap();
    same!(
        checked,
        "RuntimeService/UpdateRuntimeConfig",
        prt,
        drt,
        update_runtime_config,
        pb::UpdateRuntimeConfigRequest {
            runtime_config: Some(pb::RuntimeConfig {
                network_config: Some(pb::NetworkConfig {
                    pod_cidr: "10.88.0.0/16".into()
                }),
            }),
        }
    )
    .unwrap();
    let status = same!(
        checked,
        "RuntimeService/Status",
        prt,
        drt,
        status,
        pb::StatusRequest { verbose: true }
    )
    .unwrap();
    assert!(status.info["config"].contains("10.88.0.0/16"), "{status:?}");
    same!(
        checked,
        "RuntimeService/Status",
        prt,
        drt,
        status,
        pb::StatusRequest { verbose: false }
    )
    .unwrap();

    // ---- images -------------------------------------------------------------------------
    for name in ["busybox", "alpine:3.20", "registry.k8s.io/pause:3.10"] {
        // Image ids and references are derived from the name: equal, not just alike.
        let r = same!(
            checked,
            "ImageService/PullImage",
            pim,
            dim,
            pull_image,
            pb::PullImageRequest {
                image: image(name),
                ..Default::default()
            }
        );
        assert!(r.unwrap().image_ref.starts_with("sha256:"));
    }
    // The hooked path passes the runtime's refusal through unchanged.
    let (p, d) = both!(pim, dim, pull_image, pb::PullImageRequest::default());
    same("ImageService/PullImage", &p, &d);
    assert_eq!(p.unwrap_err().code(), Code::InvalidArgument);
    let (p, d) = both!(
        pim,
        dim,
        pull_image,
        pb::PullImageRequest {
            image: image("UPPER/Case::bad"),
            ..Default::default()
        }
    );
    same("ImageService/PullImage", &p, &d);

    let listed = same!(
        checked,
        "ImageService/ListImages",
        pim,
        dim,
        list_images,
        pb::ListImagesRequest::default()
    )
    .unwrap()
    .images;
    assert_eq!(listed.len(), 3);
    let (p, d) = (
        drain(pim.stream_images(pb::StreamImagesRequest::default()).await).await,
        drain(dim.stream_images(pb::StreamImagesRequest::default()).await).await,
    );
    same("ImageService/StreamImages", &p, &d);
    let streamed: Vec<_> = p.unwrap().into_iter().flat_map(|m| m.images).collect();
    assert_eq!(streamed, listed, "StreamImages differs from ListImages");
    checked.insert("ImageService/StreamImages");
    for (name, verbose) in [("busybox", true), ("alpine:3.20", false), ("nginx", true)] {
        same!(
            checked,
            "ImageService/ImageStatus",
            pim,
            dim,
            image_status,
            pb::ImageStatusRequest {
                image: image(name),
                verbose
            }
        )
        .unwrap();
    }
    let (p, d) = both!(pim, dim, image_fs_info, pb::ImageFsInfoRequest {});
    let zero = |r: &mut pb::ImageFsInfoResponse| {
        r.image_filesystems.iter_mut().for_each(|f| f.timestamp = 0);
        r.container_filesystems
            .iter_mut()
            .for_each(|f| f.timestamp = 0);
    };
    same(
        "ImageService/ImageFsInfo",
        &timeless(p, zero),
        &timeless(d, zero),
    );
    checked.insert("ImageService/ImageFsInfo");
    // Removal is idempotent: the second (direct) removal answers as the first (proxied) did.
    same!(
        checked,
        "ImageService/RemoveImage",
        pim,
        dim,
        remove_image,
        pb::RemoveImageRequest {
            image: image("alpine:3.20")
        }
    )
    .unwrap();
    same!(
        checked,
        "ImageService/RemoveImage",
        pim,
        dim,
        remove_image,
        pb::RemoveImageRequest { image: None }
    )
    .unwrap_err();
    let left = same!(
        checked,
        "ImageService/ListImages",
        pim,
        dim,
        list_images,
        pb::ListImagesRequest::default()
    )
    .unwrap()
    .images;
    assert_eq!(left.len(), 2);

    // ---- events: subscribed before anything happens to pods or containers ---------------
    let mut pev = prt
        .get_container_events(pb::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut dev = drt
        .get_container_events(pb::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    // ---- pods ---------------------------------------------------------------------------
    // Fresh ids differ between the two pods; each must be a runtime id.
    let pa = prt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pod_config("rpc-a")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let pb_ = drt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pod_config("rpc-b")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    assert!(is_id(&pa) && is_id(&pb_) && pa != pb_, "{pa} {pb_}");
    checked.insert("RuntimeService/RunPodSandbox");
    // The events stream saw the proxied pod start, in both subscriptions alike.
    let (p_first, p_ev) =
        event_for(&mut pev, &pa, pb::ContainerEventType::ContainerStartedEvent).await;
    let (d_first, d_ev) =
        event_for(&mut dev, &pa, pb::ContainerEventType::ContainerStartedEvent).await;
    assert_eq!(p_first, d_first, "GetContainerEvents: first event differs");
    assert_eq!(p_ev, d_ev, "GetContainerEvents: pod started event differs");
    checked.insert("RuntimeService/GetContainerEvents");
    // Errors through the hooked path are the runtime's own.
    for (config, handler) in [
        (Some(pod_config("rpc-a")), ""),
        (None, ""),
        (Some(pod_config("rpc-c")), "no-such-handler"),
    ] {
        same!(
            checked,
            "RuntimeService/RunPodSandbox",
            prt,
            drt,
            run_pod_sandbox,
            pb::RunPodSandboxRequest {
                config: config.clone(),
                runtime_handler: handler.into()
            }
        )
        .unwrap_err();
    }

    let pods = same!(
        checked,
        "RuntimeService/ListPodSandbox",
        prt,
        drt,
        list_pod_sandbox,
        pb::ListPodSandboxRequest::default()
    )
    .unwrap()
    .items;
    assert_eq!(pods.len(), 2);
    let filtered = same!(
        checked,
        "RuntimeService/ListPodSandbox",
        prt,
        drt,
        list_pod_sandbox,
        pb::ListPodSandboxRequest {
            filter: Some(pb::PodSandboxFilter {
                label_selector: [("app".to_string(), "rpc-a".to_string())].into(),
                ..Default::default()
            })
        }
    )
    .unwrap()
    .items;
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    let (p, d) = (
        drain(
            prt.stream_pod_sandboxes(pb::StreamPodSandboxesRequest::default())
                .await,
        )
        .await,
        drain(
            drt.stream_pod_sandboxes(pb::StreamPodSandboxesRequest::default())
                .await,
        )
        .await,
    );
    same("RuntimeService/StreamPodSandboxes", &p, &d);
    let streamed: Vec<_> = p
        .unwrap()
        .into_iter()
        .flat_map(|m| m.pod_sandboxes)
        .collect();
    assert_eq!(
        streamed, pods,
        "StreamPodSandboxes differs from ListPodSandbox"
    );
    checked.insert("RuntimeService/StreamPodSandboxes");

    let pod_status = |verbose| pb::PodSandboxStatusRequest {
        pod_sandbox_id: pa.clone(),
        verbose,
    };
    let zero_ts = |r: &mut pb::PodSandboxStatusResponse| r.timestamp = 0;
    for verbose in [true, false] {
        let (p, d) = both!(prt, drt, pod_sandbox_status, pod_status(verbose));
        same(
            "RuntimeService/PodSandboxStatus",
            &timeless(p, zero_ts),
            &timeless(d, zero_ts),
        );
    }
    let (p, d) = both!(
        prt,
        drt,
        pod_sandbox_status,
        pb::PodSandboxStatusRequest {
            pod_sandbox_id: "f00d".into(),
            verbose: false,
        }
    );
    same("RuntimeService/PodSandboxStatus", &p, &d);
    assert_eq!(p.unwrap_err().code(), Code::NotFound);
    checked.insert("RuntimeService/PodSandboxStatus");

    same!(
        checked,
        "RuntimeService/UpdatePodSandboxResources",
        prt,
        drt,
        update_pod_sandbox_resources,
        pb::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pa.clone(),
            overhead: None,
            resources: Some(pb::LinuxContainerResources {
                cpu_shares: 256,
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
        }
    )
    .unwrap();
    let (p, d) = both!(prt, drt, pod_sandbox_status, pod_status(true));
    let p = timeless(p, zero_ts);
    same("RuntimeService/PodSandboxStatus", &p, &timeless(d, zero_ts));
    assert!(
        p.unwrap().info["info"].contains("67108864"),
        "resources not updated"
    );

    // ---- containers ---------------------------------------------------------------------
    let ca = prt
        .create_container(create_request(&pa, "rpc-a", "c1"))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let cb = drt
        .create_container(create_request(&pb_, "rpc-b", "c1"))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    assert!(is_id(&ca) && is_id(&cb) && ca != cb, "{ca} {cb}");
    checked.insert("RuntimeService/CreateContainer");
    // A name taken, a pod that does not exist, no image: the runtime's errors, unchanged.
    let mut no_image = create_request(&pa, "rpc-a", "c2");
    no_image.config.as_mut().unwrap().image = None;
    for req in [
        create_request(&pa, "rpc-a", "c1"),
        create_request("0123", "rpc-a", "c2"),
        no_image,
    ] {
        same!(
            checked,
            "RuntimeService/CreateContainer",
            prt,
            drt,
            create_container,
            req
        )
        .unwrap_err();
    }

    let (p, d) = (
        prt.start_container(pb::StartContainerRequest {
            container_id: ca.clone(),
        })
        .await
        .map(|r| r.into_inner()),
        drt.start_container(pb::StartContainerRequest {
            container_id: cb.clone(),
        })
        .await
        .map(|r| r.into_inner()),
    );
    same("RuntimeService/StartContainer", &p, &d);
    p.unwrap();
    // Started twice: the same refusal (the hooked path looks the container up first).
    same!(
        checked,
        "RuntimeService/StartContainer",
        prt,
        drt,
        start_container,
        pb::StartContainerRequest {
            container_id: ca.clone()
        }
    )
    .unwrap_err();
    same!(
        checked,
        "RuntimeService/StartContainer",
        prt,
        drt,
        start_container,
        pb::StartContainerRequest {
            container_id: "beef".into()
        }
    )
    .unwrap_err();

    let containers = same!(
        checked,
        "RuntimeService/ListContainers",
        prt,
        drt,
        list_containers,
        pb::ListContainersRequest::default()
    )
    .unwrap()
    .containers;
    assert_eq!(containers.len(), 2);
    let filtered = same!(
        checked,
        "RuntimeService/ListContainers",
        prt,
        drt,
        list_containers,
        pb::ListContainersRequest {
            filter: Some(pb::ContainerFilter {
                pod_sandbox_id: pa.clone(),
                ..Default::default()
            })
        }
    )
    .unwrap()
    .containers;
    assert_eq!(filtered.len(), 1, "{filtered:?}");
    let (p, d) = (
        drain(
            prt.stream_containers(pb::StreamContainersRequest::default())
                .await,
        )
        .await,
        drain(
            drt.stream_containers(pb::StreamContainersRequest::default())
                .await,
        )
        .await,
    );
    same("RuntimeService/StreamContainers", &p, &d);
    let streamed: Vec<_> = p.unwrap().into_iter().flat_map(|m| m.containers).collect();
    assert_eq!(
        streamed, containers,
        "StreamContainers differs from ListContainers"
    );
    checked.insert("RuntimeService/StreamContainers");

    // The inject hook reached the proxied container only.
    let status_of = |id: &str| pb::ContainerStatusRequest {
        container_id: id.into(),
        verbose: true,
    };
    let sa = same!(
        checked,
        "RuntimeService/ContainerStatus",
        prt,
        drt,
        container_status,
        status_of(&ca)
    )
    .unwrap();
    let sb = same!(
        checked,
        "RuntimeService/ContainerStatus",
        prt,
        drt,
        container_status,
        status_of(&cb)
    )
    .unwrap();
    let node = |s: &pb::ContainerStatusResponse| {
        s.status
            .as_ref()
            .unwrap()
            .annotations
            .get("wasmgate.io/node")
            .cloned()
    };
    assert_eq!(node(&sa).as_deref(), Some("rpc-node"));
    assert_eq!(node(&sb), None);
    same!(
        checked,
        "RuntimeService/ContainerStatus",
        prt,
        drt,
        container_status,
        status_of("nope")
    )
    .unwrap_err();

    let exec_sync = |id: &str, cmd: &[&str]| pb::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 5,
    };
    let env = same!(
        checked,
        "RuntimeService/ExecSync",
        prt,
        drt,
        exec_sync,
        exec_sync(&ca, &["env"])
    )
    .unwrap();
    let env = String::from_utf8_lossy(&env.stdout).into_owned();
    assert!(
        env.contains("GREETING=hello") && env.contains("WASMGATE_NODE=rpc-node"),
        "{env}"
    );
    for cmd in [
        &["echo", "-n", "a", "b"][..],
        &["hostname"],
        &["false"],
        &["ls", "/"],
    ] {
        same!(
            checked,
            "RuntimeService/ExecSync",
            prt,
            drt,
            exec_sync,
            exec_sync(&ca, cmd)
        )
        .unwrap();
    }
    same!(
        checked,
        "RuntimeService/ExecSync",
        prt,
        drt,
        exec_sync,
        exec_sync(&cb, &[])
    )
    .unwrap_err();

    // Streaming URLs pass through unchanged: the same server and path, each with its own token.
    let exec = pb::ExecRequest {
        container_id: ca.clone(),
        cmd: vec!["sh".into()],
        tty: true,
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let attach = pb::AttachRequest {
        container_id: ca.clone(),
        stdin: false,
        tty: false,
        stdout: true,
        stderr: true,
    };
    let forward = pb::PortForwardRequest {
        pod_sandbox_id: pa.clone(),
        port: vec![8080],
    };
    let (p, d) = both!(prt, drt, exec, exec.clone());
    let (p, d) = (p.unwrap().url, d.unwrap().url);
    let mut urls = vec![("Exec", p, d)];
    let (p, d) = both!(prt, drt, attach, attach.clone());
    urls.push(("Attach", p.unwrap().url, d.unwrap().url));
    let (p, d) = both!(prt, drt, port_forward, forward.clone());
    urls.push(("PortForward", p.unwrap().url, d.unwrap().url));
    for (rpc, p, d) in &urls {
        let ((pp, pt), (dp, dt)) = (url_prefix(p), url_prefix(d));
        assert_eq!(
            pp, dp,
            "{rpc}: the proxied URL {p} does not match the runtime's {d}"
        );
        assert_ne!(pt, dt, "{rpc}: tokens are one-time");
        println!("{rpc} URL: proxied {p}, direct {d}");
    }
    checked.extend([
        "RuntimeService/Exec",
        "RuntimeService/Attach",
        "RuntimeService/PortForward",
    ]);
    let mut bad = exec.clone();
    bad.stderr = true;
    same!(checked, "RuntimeService/Exec", prt, drt, exec, bad).unwrap_err();
    same!(
        checked,
        "RuntimeService/Attach",
        prt,
        drt,
        attach,
        pb::AttachRequest {
            stdout: false,
            stderr: false,
            ..attach.clone()
        }
    )
    .unwrap_err();
    same!(
        checked,
        "RuntimeService/PortForward",
        prt,
        drt,
        port_forward,
        pb::PortForwardRequest {
            pod_sandbox_id: "zz".into(),
            port: vec![]
        }
    )
    .unwrap_err();

    let update = |id: &str, shares| pb::UpdateContainerResourcesRequest {
        container_id: id.into(),
        linux: Some(pb::LinuxContainerResources {
            cpu_shares: shares,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        windows: None,
        annotations: Default::default(),
    };
    let (p, d) = (
        prt.update_container_resources(update(&ca, 512))
            .await
            .map(|r| r.into_inner()),
        drt.update_container_resources(update(&cb, 512))
            .await
            .map(|r| r.into_inner()),
    );
    same("RuntimeService/UpdateContainerResources", &p, &d);
    p.unwrap();
    same!(
        checked,
        "RuntimeService/UpdateContainerResources",
        prt,
        drt,
        update_container_resources,
        update("cafe", 2)
    )
    .unwrap_err();
    let sa = same!(
        checked,
        "RuntimeService/ContainerStatus",
        prt,
        drt,
        container_status,
        status_of(&ca)
    )
    .unwrap();
    let res = sa.status.unwrap().resources.unwrap().linux.unwrap();
    assert_eq!(
        (res.cpu_shares, res.memory_limit_in_bytes),
        (512, 128 << 20)
    );

    same!(
        checked,
        "RuntimeService/ReopenContainerLog",
        prt,
        drt,
        reopen_container_log,
        pb::ReopenContainerLogRequest {
            container_id: ca.clone()
        }
    )
    .unwrap();
    same!(
        checked,
        "RuntimeService/ReopenContainerLog",
        prt,
        drt,
        reopen_container_log,
        pb::ReopenContainerLogRequest {
            container_id: String::new()
        }
    )
    .unwrap_err();

    // ---- stats and metrics ---------------------------------------------------------------
    let zc = |r: &mut pb::ContainerStatsResponse| r.stats.iter_mut().for_each(zero_container_stats);
    let (p, d) = both!(
        prt,
        drt,
        container_stats,
        pb::ContainerStatsRequest {
            container_id: ca.clone()
        }
    );
    let p = timeless(p, zc);
    same("RuntimeService/ContainerStats", &p, &timeless(d, zc));
    assert_eq!(p.unwrap().stats.unwrap().attributes.unwrap().id, ca);
    checked.insert("RuntimeService/ContainerStats");
    let zl =
        |r: &mut pb::ListContainerStatsResponse| r.stats.iter_mut().for_each(zero_container_stats);
    let (p, d) = both!(
        prt,
        drt,
        list_container_stats,
        pb::ListContainerStatsRequest::default()
    );
    let listed = timeless(p, zl);
    same(
        "RuntimeService/ListContainerStats",
        &listed,
        &timeless(d, zl),
    );
    let listed = listed.unwrap().stats;
    assert_eq!(listed.len(), 2, "both containers run");
    checked.insert("RuntimeService/ListContainerStats");
    let zs = |v: &mut Vec<pb::StreamContainerStatsResponse>| {
        v.iter_mut()
            .for_each(|m| m.container_stats.iter_mut().for_each(zero_container_stats))
    };
    let (p, d) = (
        drain(
            prt.stream_container_stats(pb::StreamContainerStatsRequest::default())
                .await,
        )
        .await,
        drain(
            drt.stream_container_stats(pb::StreamContainerStatsRequest::default())
                .await,
        )
        .await,
    );
    let p = timeless(p, zs);
    same("RuntimeService/StreamContainerStats", &p, &timeless(d, zs));
    let streamed: Vec<_> = p
        .unwrap()
        .into_iter()
        .flat_map(|m| m.container_stats)
        .collect();
    assert_eq!(
        streamed, listed,
        "StreamContainerStats differs from ListContainerStats"
    );
    checked.insert("RuntimeService/StreamContainerStats");

    let zp = |r: &mut pb::PodSandboxStatsResponse| r.stats.iter_mut().for_each(zero_pod_stats);
    let (p, d) = both!(
        prt,
        drt,
        pod_sandbox_stats,
        pb::PodSandboxStatsRequest {
            pod_sandbox_id: pa.clone()
        }
    );
    same(
        "RuntimeService/PodSandboxStats",
        &timeless(p, zp),
        &timeless(d, zp),
    );
    let (p, d) = both!(
        prt,
        drt,
        pod_sandbox_stats,
        pb::PodSandboxStatsRequest {
            pod_sandbox_id: "x".into()
        }
    );
    same("RuntimeService/PodSandboxStats", &p, &d);
    p.unwrap_err();
    checked.insert("RuntimeService/PodSandboxStats");
    let zlp = |r: &mut pb::ListPodSandboxStatsResponse| r.stats.iter_mut().for_each(zero_pod_stats);
    let (p, d) = both!(
        prt,
        drt,
        list_pod_sandbox_stats,
        pb::ListPodSandboxStatsRequest::default()
    );
    let listed = timeless(p, zlp);
    same(
        "RuntimeService/ListPodSandboxStats",
        &listed,
        &timeless(d, zlp),
    );
    let listed = listed.unwrap().stats;
    assert_eq!(listed.len(), 2);
    checked.insert("RuntimeService/ListPodSandboxStats");
    let zsp = |v: &mut Vec<pb::StreamPodSandboxStatsResponse>| {
        v.iter_mut()
            .for_each(|m| m.pod_sandbox_stats.iter_mut().for_each(zero_pod_stats))
    };
    let (p, d) = (
        drain(
            prt.stream_pod_sandbox_stats(pb::StreamPodSandboxStatsRequest::default())
                .await,
        )
        .await,
        drain(
            drt.stream_pod_sandbox_stats(pb::StreamPodSandboxStatsRequest::default())
                .await,
        )
        .await,
    );
    let p = timeless(p, zsp);
    same(
        "RuntimeService/StreamPodSandboxStats",
        &p,
        &timeless(d, zsp),
    );
    let streamed: Vec<_> = p
        .unwrap()
        .into_iter()
        .flat_map(|m| m.pod_sandbox_stats)
        .collect();
    assert_eq!(
        streamed, listed,
        "StreamPodSandboxStats differs from ListPodSandboxStats"
    );
    checked.insert("RuntimeService/StreamPodSandboxStats");

    same!(
        checked,
        "RuntimeService/ListMetricDescriptors",
        prt,
        drt,
        list_metric_descriptors,
        pb::ListMetricDescriptorsRequest {}
    )
    .unwrap();
    let metrics = same!(
        checked,
        "RuntimeService/ListPodSandboxMetrics",
        prt,
        drt,
        list_pod_sandbox_metrics,
        pb::ListPodSandboxMetricsRequest {}
    )
    .unwrap()
    .pod_metrics;
    let (p, d) = (
        drain(
            prt.stream_pod_sandbox_metrics(pb::StreamPodSandboxMetricsRequest {})
                .await,
        )
        .await,
        drain(
            drt.stream_pod_sandbox_metrics(pb::StreamPodSandboxMetricsRequest {})
                .await,
        )
        .await,
    );
    same("RuntimeService/StreamPodSandboxMetrics", &p, &d);
    let streamed: Vec<_> = p
        .unwrap()
        .into_iter()
        .flat_map(|m| m.pod_sandbox_metrics)
        .collect();
    assert_eq!(
        streamed, metrics,
        "StreamPodSandboxMetrics differs from ListPodSandboxMetrics"
    );
    checked.insert("RuntimeService/StreamPodSandboxMetrics");

    // ---- checkpoints: the runtime cannot, and says so through the proxy ------------------
    same!(
        checked,
        "RuntimeService/CheckpointContainer",
        prt,
        drt,
        checkpoint_container,
        pb::CheckpointContainerRequest {
            container_id: ca.clone(),
            location: "/tmp/ckpt.tar".into(),
            timeout: 10,
        }
    )
    .unwrap_err();
    same!(
        checked,
        "RuntimeService/CheckpointPod",
        prt,
        drt,
        checkpoint_pod,
        pb::CheckpointPodRequest {
            pod_sandbox_id: pa.clone(),
            output_path: "/tmp/pod.tar".into(),
            ..Default::default()
        }
    )
    .unwrap_err();
    let r = same!(
        checked,
        "RuntimeService/RestorePod",
        prt,
        drt,
        restore_pod,
        pb::RestorePodRequest {
            checkpoint_path: "/tmp/pod.tar".into(),
            ..Default::default()
        }
    );
    assert_eq!(r.unwrap_err().code(), Code::Unimplemented);

    // ---- teardown, watched on the events streams -----------------------------------------
    let (p, d) = (
        prt.stop_container(pb::StopContainerRequest {
            container_id: ca.clone(),
            timeout: 0,
        })
        .await
        .map(|r| r.into_inner()),
        drt.stop_container(pb::StopContainerRequest {
            container_id: cb.clone(),
            timeout: 0,
        })
        .await
        .map(|r| r.into_inner()),
    );
    same("RuntimeService/StopContainer", &p, &d);
    p.unwrap();
    // Idempotent once stopped; an empty id is refused alike.
    same!(
        checked,
        "RuntimeService/StopContainer",
        prt,
        drt,
        stop_container,
        pb::StopContainerRequest {
            container_id: ca.clone(),
            timeout: 0
        }
    )
    .unwrap();
    same!(
        checked,
        "RuntimeService/StopContainer",
        prt,
        drt,
        stop_container,
        pb::StopContainerRequest::default()
    )
    .unwrap_err();
    let (p_first, p_ev) =
        event_for(&mut pev, &ca, pb::ContainerEventType::ContainerStoppedEvent).await;
    let (d_first, d_ev) =
        event_for(&mut dev, &ca, pb::ContainerEventType::ContainerStoppedEvent).await;
    assert_eq!(
        (p_first, p_ev),
        (d_first, d_ev),
        "GetContainerEvents: stop event differs"
    );

    let (p, d) = (
        prt.remove_container(pb::RemoveContainerRequest {
            container_id: ca.clone(),
        })
        .await
        .map(|r| r.into_inner()),
        drt.remove_container(pb::RemoveContainerRequest {
            container_id: cb.clone(),
        })
        .await
        .map(|r| r.into_inner()),
    );
    same("RuntimeService/RemoveContainer", &p, &d);
    p.unwrap();
    same!(
        checked,
        "RuntimeService/RemoveContainer",
        prt,
        drt,
        remove_container,
        pb::RemoveContainerRequest {
            container_id: ca.clone()
        }
    )
    .unwrap();
    let (_, p_ev) = event_for(&mut pev, &ca, pb::ContainerEventType::ContainerDeletedEvent).await;
    let (_, d_ev) = event_for(&mut dev, &ca, pb::ContainerEventType::ContainerDeletedEvent).await;
    assert_eq!(p_ev, d_ev, "GetContainerEvents: delete event differs");

    let (p, d) = (
        prt.stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: pa.clone(),
        })
        .await
        .map(|r| r.into_inner()),
        drt.stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: pb_.clone(),
        })
        .await
        .map(|r| r.into_inner()),
    );
    same("RuntimeService/StopPodSandbox", &p, &d);
    p.unwrap();
    same!(
        checked,
        "RuntimeService/StopPodSandbox",
        prt,
        drt,
        stop_pod_sandbox,
        pb::StopPodSandboxRequest {
            pod_sandbox_id: "ffff".into()
        }
    )
    .unwrap();
    same!(
        checked,
        "RuntimeService/StopPodSandbox",
        prt,
        drt,
        stop_pod_sandbox,
        pb::StopPodSandboxRequest::default()
    )
    .unwrap_err();
    let (p, d) = (
        prt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pa.clone(),
        })
        .await
        .map(|r| r.into_inner()),
        drt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pb_.clone(),
        })
        .await
        .map(|r| r.into_inner()),
    );
    same("RuntimeService/RemovePodSandbox", &p, &d);
    p.unwrap();
    same!(
        checked,
        "RuntimeService/RemovePodSandbox",
        prt,
        drt,
        remove_pod_sandbox,
        pb::RemovePodSandboxRequest {
            pod_sandbox_id: pa.clone()
        }
    )
    .unwrap();
    let (_, p_ev) = event_for(&mut pev, &pa, pb::ContainerEventType::ContainerDeletedEvent).await;
    let (_, d_ev) = event_for(&mut dev, &pa, pb::ContainerEventType::ContainerDeletedEvent).await;
    assert_eq!(p_ev, d_ev, "GetContainerEvents: pod delete event differs");
    let pods = same!(
        checked,
        "RuntimeService/ListPodSandbox",
        prt,
        drt,
        list_pod_sandbox,
        pb::ListPodSandboxRequest::default()
    )
    .unwrap()
    .items;
    assert!(pods.is_empty(), "{pods:?}");

    // Every RPC of the schema was checked.
    let all: BTreeSet<&str> = RPCS.iter().copied().collect();
    assert_eq!(
        checked,
        all,
        "missed: {:?}",
        all.difference(&checked).collect::<Vec<_>>()
    );
    println!(
        "checked {} RPCs through the proxy against the builtin runtime:",
        checked.len()
    );
    for rpc in RPCS {
        let kind = match rpc {
            "RuntimeService/GetContainerEvents" => " (server-streaming, events read)",
            _ if STREAMING.contains(&rpc) => " (server-streaming, drained)",
            _ => "",
        };
        println!("  runtime.v1.{rpc}{kind}");
    }

    // Each hooked call left a trace record with the inject hook's decision where it applies.
    let stats = wasmgate_daemon::admin::stats(&daemon.admin_socket()).unwrap();
    assert!(stats["cri.CreateContainer"].ok >= 1 && stats["cri.CreateContainer"].errors >= 3);
    // Every hookable RPC went through the hook chain, not around it. Records arrive over the
    // admin socket after the answers, so wait for them rather than take what is there.
    let hookable: BTreeSet<String> = [
        "RunPodSandbox",
        "StopPodSandbox",
        "RemovePodSandbox",
        "CreateContainer",
        "StartContainer",
        "StopContainer",
        "RemoveContainer",
        "UpdateContainerResources",
        "PullImage",
    ]
    .map(String::from)
    .into();
    let mut hooked = BTreeSet::new();
    while hooked != hookable {
        let Ok(r) = trace.recv_timeout(Duration::from_secs(5)) else {
            break;
        };
        if r.hooks.iter().any(|h| h.hook == "all" && h.phase == "pre") {
            hooked.insert(r.method);
        }
    }
    assert_eq!(
        hooked, hookable,
        "the RPCs whose trace records show the hook's decision"
    );
}
