//! In-process tests: the trait methods called directly.

use std::collections::HashMap;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::{Code, Request};
use wasmgate_proto::cri::v1 as pb;
use wasmgate_proto::cri::v1::image_service_server::ImageService;
use wasmgate_proto::cri::v1::runtime_service_server::RuntimeService;

use super::Builtin;
use super::image::Reference;

fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod_config(name: &str, uid: &str) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: format!("/var/log/pods/default_{name}_{uid}"),
        labels: labels(&[("app", name)]),
        annotations: labels(&[("note", "kept")]),
        ..Default::default()
    }
}

fn ctr_config(name: &str, image: &str) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        envs: vec![
            pb::KeyValue {
                key: "GREETING".into(),
                value: b"hello".to_vec(),
            },
            pb::KeyValue {
                key: "INJECTED".into(),
                value: b"by-a-hook".to_vec(),
            },
        ],
        mounts: vec![pb::Mount {
            container_path: "/data".into(),
            host_path: "/tmp/data".into(),
            readonly: true,
            ..Default::default()
        }],
        labels: labels(&[("ctr", name)]),
        annotations: labels(&[("a", "b")]),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

async fn run_pod(rt: &Builtin, name: &str) -> String {
    rt.run_pod_sandbox(Request::new(pb::RunPodSandboxRequest {
        config: Some(pod_config(name, &format!("uid-{name}"))),
        runtime_handler: String::new(),
    }))
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

async fn pull(rt: &Builtin, image: &str) -> String {
    rt.pull_image(Request::new(pb::PullImageRequest {
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
    .image_ref
}

async fn create(rt: &Builtin, pod: &str, name: &str, image: &str) -> Result<String, tonic::Status> {
    rt.create_container(Request::new(pb::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(ctr_config(name, image)),
        sandbox_config: None,
    }))
    .await
    .map(|r| r.into_inner().container_id)
}

async fn start(rt: &Builtin, id: &str) -> Result<(), tonic::Status> {
    rt.start_container(Request::new(pb::StartContainerRequest {
        container_id: id.into(),
    }))
    .await
    .map(|_| ())
}

async fn stop(rt: &Builtin, id: &str) -> Result<(), tonic::Status> {
    rt.stop_container(Request::new(pb::StopContainerRequest {
        container_id: id.into(),
        timeout: 10,
    }))
    .await
    .map(|_| ())
}

async fn remove(rt: &Builtin, id: &str) -> Result<(), tonic::Status> {
    rt.remove_container(Request::new(pb::RemoveContainerRequest {
        container_id: id.into(),
    }))
    .await
    .map(|_| ())
}

async fn status(rt: &Builtin, id: &str) -> Result<pb::ContainerStatusResponse, tonic::Status> {
    rt.container_status(Request::new(pb::ContainerStatusRequest {
        container_id: id.into(),
        verbose: true,
    }))
    .await
    .map(|r| r.into_inner())
}

async fn pod_status(rt: &Builtin, id: &str) -> Result<pb::PodSandboxStatusResponse, tonic::Status> {
    rt.pod_sandbox_status(Request::new(pb::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: true,
    }))
    .await
    .map(|r| r.into_inner())
}

async fn list_containers(rt: &Builtin, filter: pb::ContainerFilter) -> Vec<pb::Container> {
    rt.list_containers(Request::new(pb::ListContainersRequest {
        filter: Some(filter),
    }))
    .await
    .unwrap()
    .into_inner()
    .containers
}

async fn list_pods(rt: &Builtin, filter: pb::PodSandboxFilter) -> Vec<pb::PodSandbox> {
    rt.list_pod_sandbox(Request::new(pb::ListPodSandboxRequest {
        filter: Some(filter),
    }))
    .await
    .unwrap()
    .into_inner()
    .items
}

/// A running container in a ready pod: (pod id, container id).
async fn running(rt: &Builtin) -> (String, String) {
    let pod = run_pod(rt, "web").await;
    pull(rt, "busybox").await;
    let c = create(rt, &pod, "app", "busybox").await.unwrap();
    start(rt, &c).await.unwrap();
    (pod, c)
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    r.expect_err("expected an error").code()
}

#[tokio::test]
async fn builtin_version_status_and_runtime_config() {
    let rt = Builtin::new();
    let v = rt
        .version(Request::new(pb::VersionRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "wasmgate-builtin");
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.version, "0.1.0");

    let s = rt
        .status(Request::new(pb::StatusRequest { verbose: true }))
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    for t in ["RuntimeReady", "NetworkReady"] {
        assert!(conds.iter().any(|c| c.r#type == t && c.status), "{t}");
    }
    let cfg: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(cfg["runtime"], "wasmgate-builtin");

    let rc = rt
        .runtime_config(Request::new(pb::RuntimeConfigRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        pb::CgroupDriver::Cgroupfs as i32
    );
    rt.update_runtime_config(Request::new(pb::UpdateRuntimeConfigRequest {
        runtime_config: Some(pb::RuntimeConfig {
            network_config: Some(pb::NetworkConfig {
                pod_cidr: "10.244.0.0/24".into(),
            }),
        }),
    }))
    .await
    .unwrap();
}

#[tokio::test]
async fn builtin_pod_and_container_lifecycle() {
    let rt = Builtin::new();
    let pod = run_pod(&rt, "web").await;
    assert_eq!(pod.len(), 64);
    assert!(pod.bytes().all(|b| b.is_ascii_hexdigit()));

    let ps = pod_status(&rt, &pod).await.unwrap();
    let s = ps.status.unwrap();
    assert_eq!(s.state, pb::PodSandboxState::SandboxReady as i32);
    assert!(s.created_at > 0);
    assert_eq!(s.labels["app"], "web");
    assert_eq!(s.annotations["note"], "kept");
    assert!(ps.info.contains_key("info"));

    let image_ref = pull(&rt, "busybox").await;
    let c = create(&rt, &pod, "app", "busybox").await.unwrap();
    assert_eq!(c.len(), 64);
    let st = status(&rt, &c).await.unwrap().status.unwrap();
    assert_eq!(st.state, pb::ContainerState::ContainerCreated as i32);
    assert!(st.created_at > 0);
    assert_eq!(st.started_at, 0);
    assert_eq!(st.image_id, image_ref);
    assert_eq!(st.image.unwrap().image, "busybox");
    assert_eq!(st.log_path, "/var/log/pods/default_web_uid-web/app/0.log");
    assert_eq!(st.mounts.len(), 1);
    assert_eq!(st.labels["ctr"], "app");

    start(&rt, &c).await.unwrap();
    let st = status(&rt, &c).await.unwrap().status.unwrap();
    assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32);
    assert!(st.started_at > st.created_at);

    stop(&rt, &c).await.unwrap();
    let st = status(&rt, &c).await.unwrap().status.unwrap();
    assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
    assert!(st.finished_at > st.started_at);
    assert_eq!(st.exit_code, 0);
    assert_eq!(st.reason, "Completed");

    remove(&rt, &c).await.unwrap();
    assert_eq!(code(status(&rt, &c).await), Code::NotFound);

    rt.stop_pod_sandbox(Request::new(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .await
    .unwrap();
    let s = pod_status(&rt, &pod).await.unwrap().status.unwrap();
    assert_eq!(s.state, pb::PodSandboxState::SandboxNotready as i32);
    rt.remove_pod_sandbox(Request::new(pb::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .await
    .unwrap();
    assert_eq!(code(pod_status(&rt, &pod).await), Code::NotFound);
}

#[tokio::test]
async fn builtin_stop_pod_kills_containers_and_remove_pod_removes_them() {
    let rt = Builtin::new();
    let (pod, c) = running(&rt).await;
    let created = create(&rt, &pod, "side", "busybox").await.unwrap();

    rt.stop_pod_sandbox(Request::new(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .await
    .unwrap();
    for id in [&c, &created] {
        let st = status(&rt, id).await.unwrap().status.unwrap();
        assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
        assert_eq!(st.exit_code, 137);
        assert!(st.finished_at > 0);
    }
    // A stopped pod takes no new containers.
    assert_eq!(
        code(create(&rt, &pod, "late", "busybox").await),
        Code::FailedPrecondition
    );
    // Stop again: idempotent.
    rt.stop_pod_sandbox(Request::new(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .await
    .unwrap();

    // RemovePodSandbox on a READY pod stops it first and removes its containers.
    let pod2 = run_pod(&rt, "api").await;
    let c2 = create(&rt, &pod2, "app", "busybox").await.unwrap();
    start(&rt, &c2).await.unwrap();
    rt.remove_pod_sandbox(Request::new(pb::RemovePodSandboxRequest {
        pod_sandbox_id: pod2.clone(),
    }))
    .await
    .unwrap();
    assert_eq!(code(status(&rt, &c2).await), Code::NotFound);
    assert_eq!(code(pod_status(&rt, &pod2).await), Code::NotFound);
    let all = list_containers(&rt, pb::ContainerFilter::default()).await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|c| c.pod_sandbox_id == pod));
}

#[tokio::test]
async fn builtin_idempotent_stop_and_remove() {
    let rt = Builtin::new();
    let (pod, c) = running(&rt).await;
    stop(&rt, &c).await.unwrap();
    let first = status(&rt, &c).await.unwrap().status.unwrap().finished_at;
    stop(&rt, &c).await.unwrap();
    assert_eq!(
        status(&rt, &c).await.unwrap().status.unwrap().finished_at,
        first
    );
    remove(&rt, &c).await.unwrap();
    remove(&rt, &c).await.unwrap();
    remove(&rt, &"f".repeat(64)).await.unwrap();

    // Unknown pods: stop and remove are OK, status is NOT_FOUND.
    let unknown = "0".repeat(64);
    rt.stop_pod_sandbox(Request::new(pb::StopPodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    }))
    .await
    .unwrap();
    rt.remove_pod_sandbox(Request::new(pb::RemovePodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    }))
    .await
    .unwrap();
    assert_eq!(code(pod_status(&rt, &unknown).await), Code::NotFound);
    for _ in 0..2 {
        rt.remove_pod_sandbox(Request::new(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }))
        .await
        .unwrap();
    }
    // Stopping an unknown container is NOT_FOUND.
    assert_eq!(code(stop(&rt, &unknown).await), Code::NotFound);
}

#[tokio::test]
async fn builtin_error_codes() {
    let rt = Builtin::new();
    // RunPodSandbox without config / metadata / uid.
    let r = rt
        .run_pod_sandbox(Request::new(pb::RunPodSandboxRequest::default()))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let mut cfg = pod_config("web", "u1");
    cfg.metadata.as_mut().unwrap().uid.clear();
    let r = rt
        .run_pod_sandbox(Request::new(pb::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        }))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let r = rt
        .run_pod_sandbox(Request::new(pb::RunPodSandboxRequest {
            config: Some(pod_config("web", "u1")),
            runtime_handler: "kata".into(),
        }))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);

    // The same metadata twice.
    let pod = run_pod(&rt, "web").await;
    let r = rt
        .run_pod_sandbox(Request::new(pb::RunPodSandboxRequest {
            config: Some(pod_config("web", "uid-web")),
            runtime_handler: String::new(),
        }))
        .await;
    assert_eq!(code(r), Code::AlreadyExists);

    // CreateContainer: missing pieces, unknown pod, unpulled image, duplicate name.
    assert_eq!(
        code(create(&rt, "", "app", "busybox").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(create(&rt, &pod, "", "busybox").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(create(&rt, &pod, "app", "").await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(create(&rt, &"e".repeat(64), "app", "busybox").await),
        Code::NotFound
    );
    let r = create(&rt, &pod, "app", "busybox").await;
    let e = r.expect_err("image not pulled");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("not found"), "{}", e.message());
    pull(&rt, "busybox").await;
    let c = create(&rt, &pod, "app", "docker.io/library/busybox:latest")
        .await
        .unwrap();
    assert_eq!(
        code(create(&rt, &pod, "app", "busybox").await),
        Code::AlreadyExists
    );

    // Start twice, start an exited one.
    start(&rt, &c).await.unwrap();
    assert_eq!(code(start(&rt, &c).await), Code::FailedPrecondition);
    stop(&rt, &c).await.unwrap();
    assert_eq!(code(start(&rt, &c).await), Code::FailedPrecondition);
    assert_eq!(code(start(&rt, &"9".repeat(64)).await), Code::NotFound);

    // Exec & co on a container that is not running.
    let r = rt
        .exec_sync(Request::new(pb::ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec!["env".into()],
            timeout: 0,
        }))
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    let r = rt
        .exec(Request::new(pb::ExecRequest {
            container_id: "9".repeat(64),
            cmd: vec!["sh".into()],
            stdout: true,
            ..Default::default()
        }))
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = rt
        .attach(Request::new(pb::AttachRequest {
            container_id: c.clone(),
            stdout: true,
            ..Default::default()
        }))
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    let r = rt
        .reopen_container_log(Request::new(pb::ReopenContainerLogRequest {
            container_id: c.clone(),
        }))
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    let r = rt
        .port_forward(Request::new(pb::PortForwardRequest {
            pod_sandbox_id: "9".repeat(64),
            port: vec![80],
        }))
        .await;
    assert_eq!(code(r), Code::NotFound);

    // Checkpointing is not supported.
    let r = rt
        .checkpoint_container(Request::new(pb::CheckpointContainerRequest {
            container_id: c.clone(),
            ..Default::default()
        }))
        .await;
    let e = r.expect_err("checkpoint");
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("cannot checkpoint"));
    let r = rt
        .checkpoint_pod(Request::new(pb::CheckpointPodRequest::default()))
        .await;
    assert_eq!(code(r), Code::Unimplemented);
    let r = rt
        .restore_pod(Request::new(pb::RestorePodRequest::default()))
        .await;
    assert_eq!(code(r), Code::Unimplemented);

    // Pod resources: known pod OK, unknown NOT_FOUND.
    rt.update_pod_sandbox_resources(Request::new(pb::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.clone(),
        resources: Some(pb::LinuxContainerResources {
            cpu_shares: 512,
            ..Default::default()
        }),
        overhead: None,
    }))
    .await
    .unwrap();
    let r = rt
        .update_pod_sandbox_resources(Request::new(pb::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "9".repeat(64),
            ..Default::default()
        }))
        .await;
    assert_eq!(code(r), Code::NotFound);
}

#[tokio::test]
async fn builtin_prefix_ids() {
    let rt = Builtin::new();
    let (pod, c) = running(&rt).await;
    // A unique prefix stands for the whole id.
    let s = pod_status(&rt, &pod[..8]).await.unwrap().status.unwrap();
    assert_eq!(s.id, pod);
    let st = status(&rt, &c[..6]).await.unwrap().status.unwrap();
    assert_eq!(st.id, c);
    stop(&rt, &c[..12]).await.unwrap();
    assert_eq!(
        status(&rt, &c).await.unwrap().status.unwrap().state,
        pb::ContainerState::ContainerExited as i32
    );
    // Filters take prefixes too.
    let l = list_containers(
        &rt,
        pb::ContainerFilter {
            id: c[..5].to_string(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(l.len(), 1);
    let l = list_containers(
        &rt,
        pb::ContainerFilter {
            pod_sandbox_id: pod[..5].to_string(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(l.len(), 1);

    // An ambiguous prefix is INVALID_ARGUMENT: with 40 pods, some two share a first hex digit.
    let mut ids = vec![pod.clone()];
    for i in 0..40 {
        ids.push(run_pod(&rt, &format!("p{i}")).await);
    }
    let shared = ids
        .iter()
        .find(|a| ids.iter().filter(|b| b[..1] == a[..1]).count() > 1)
        .unwrap();
    assert_eq!(
        code(pod_status(&rt, &shared[..1]).await),
        Code::InvalidArgument
    );
    // Empty ids are INVALID_ARGUMENT.
    assert_eq!(code(status(&rt, "").await), Code::InvalidArgument);
    assert_eq!(code(pod_status(&rt, "").await), Code::InvalidArgument);
}

#[tokio::test]
async fn builtin_list_filters() {
    let rt = Builtin::new();
    pull(&rt, "busybox").await;
    let web = run_pod(&rt, "web").await;
    let api = run_pod(&rt, "api").await;
    let w1 = create(&rt, &web, "one", "busybox").await.unwrap();
    let w2 = create(&rt, &web, "two", "busybox").await.unwrap();
    let a1 = create(&rt, &api, "one", "busybox").await.unwrap();
    start(&rt, &w1).await.unwrap();
    start(&rt, &a1).await.unwrap();
    rt.stop_pod_sandbox(Request::new(pb::StopPodSandboxRequest {
        pod_sandbox_id: api.clone(),
    }))
    .await
    .unwrap();

    let ids = |v: Vec<pb::Container>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(list_containers(&rt, pb::ContainerFilter::default()).await),
        vec![w1.clone(), w2.clone(), a1.clone()]
    );
    let running = list_containers(
        &rt,
        pb::ContainerFilter {
            state: Some(pb::ContainerStateValue {
                state: pb::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(running), vec![w1.clone()]);
    let in_web = list_containers(
        &rt,
        pb::ContainerFilter {
            pod_sandbox_id: web.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(in_web), vec![w1.clone(), w2.clone()]);
    let labelled = list_containers(
        &rt,
        pb::ContainerFilter {
            label_selector: labels(&[("ctr", "one")]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(labelled), vec![w1.clone(), a1.clone()]);
    let both = list_containers(
        &rt,
        pb::ContainerFilter {
            label_selector: labels(&[("ctr", "one")]),
            pod_sandbox_id: api.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(both), vec![a1.clone()]);

    let ready = list_pods(
        &rt,
        pb::PodSandboxFilter {
            state: Some(pb::PodSandboxStateValue {
                state: pb::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].id, web);
    let by_label = list_pods(
        &rt,
        pb::PodSandboxFilter {
            label_selector: labels(&[("app", "api")]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id, api);
    let none = list_pods(
        &rt,
        pb::PodSandboxFilter {
            label_selector: labels(&[("app", "api"), ("tier", "x")]),
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty());
    assert_eq!(
        list_pods(&rt, pb::PodSandboxFilter::default()).await.len(),
        2
    );

    // Stats: running containers only; ready pods only.
    let stats = rt
        .list_container_stats(Request::new(pb::ListContainerStatsRequest { filter: None }))
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(stats.len(), 1);
    let s = &stats[0];
    assert_eq!(s.attributes.as_ref().unwrap().id, w1);
    assert!(s.cpu.as_ref().unwrap().timestamp > 0);
    let pod_stats = rt
        .list_pod_sandbox_stats(Request::new(pb::ListPodSandboxStatsRequest {
            filter: None,
        }))
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(pod_stats.len(), 1);
    assert_eq!(pod_stats[0].linux.as_ref().unwrap().containers.len(), 1);
    let r = rt
        .container_stats(Request::new(pb::ContainerStatsRequest {
            container_id: "1".repeat(64),
        }))
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = rt
        .pod_sandbox_stats(Request::new(pb::PodSandboxStatsRequest {
            pod_sandbox_id: "1".repeat(64),
        }))
        .await;
    assert_eq!(code(r), Code::NotFound);
    let one = rt
        .pod_sandbox_stats(Request::new(pb::PodSandboxStatsRequest {
            pod_sandbox_id: web.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(one.attributes.unwrap().labels["app"], "web");
}

#[tokio::test]
async fn builtin_stream_lists_match_unary_lists() {
    let rt = Builtin::new();
    pull(&rt, "busybox").await;
    let mut want = Vec::new();
    for p in 0..3 {
        let pod = run_pod(&rt, &format!("pod{p}")).await;
        // 250 containers in all: more than two stream batches.
        for i in 0..(if p == 0 { 210 } else { 20 }) {
            let c = create(&rt, &pod, &format!("c{i}"), "busybox")
                .await
                .unwrap();
            if i % 2 == 0 {
                start(&rt, &c).await.unwrap();
            }
            want.push(c);
        }
    }
    let listed = list_containers(&rt, pb::ContainerFilter::default()).await;
    assert_eq!(listed.len(), 250);

    let mut stream = rt
        .stream_containers(Request::new(pb::StreamContainersRequest { filter: None }))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    let mut messages = 0;
    while let Some(msg) = stream.next().await {
        let msg = msg.unwrap();
        assert!(!msg.containers.is_empty() && msg.containers.len() <= 100);
        messages += 1;
        streamed.extend(msg.containers);
    }
    assert_eq!(messages, 3);
    assert_eq!(streamed, listed);

    // With a filter, and for pods and images and stats too.
    let filter = pb::ContainerFilter {
        state: Some(pb::ContainerStateValue {
            state: pb::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    let listed = list_containers(&rt, filter.clone()).await;
    let streamed: Vec<_> = rt
        .stream_containers(Request::new(pb::StreamContainersRequest {
            filter: Some(filter),
        }))
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().containers)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(streamed, listed);
    assert_eq!(streamed.len(), 125);

    let pods: Vec<_> = rt
        .stream_pod_sandboxes(Request::new(pb::StreamPodSandboxesRequest { filter: None }))
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().pod_sandboxes)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(pods, list_pods(&rt, pb::PodSandboxFilter::default()).await);

    let stats: Vec<_> = rt
        .stream_container_stats(Request::new(pb::StreamContainerStatsRequest {
            filter: None,
        }))
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().container_stats)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(stats.len(), 125);
    let pod_stats: Vec<_> = rt
        .stream_pod_sandbox_stats(Request::new(pb::StreamPodSandboxStatsRequest {
            filter: None,
        }))
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().pod_sandbox_stats)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(pod_stats.len(), 3);

    let images: Vec<_> = rt
        .stream_images(Request::new(pb::StreamImagesRequest { filter: None }))
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().images)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(images.len(), 1);

    // Nothing to stream: no messages at all.
    let metrics = rt
        .stream_pod_sandbox_metrics(Request::new(pb::StreamPodSandboxMetricsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    assert!(metrics.is_empty());
    let none = rt
        .stream_containers(Request::new(pb::StreamContainersRequest {
            filter: Some(pb::ContainerFilter {
                id: "nomatch".into(),
                ..Default::default()
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn builtin_container_status_verbose_and_resources() {
    let rt = Builtin::new();
    let (_pod, c) = running(&rt).await;
    let resp = status(&rt, &c).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).unwrap();
    let envs = info["config"]["envs"].as_array().unwrap();
    assert!(
        envs.iter()
            .any(|e| e["key"] == "INJECTED" && e["value"] == "by-a-hook"),
        "{info}"
    );
    assert_eq!(info["config"]["metadata"]["name"], "app");

    rt.update_container_resources(Request::new(pb::UpdateContainerResourcesRequest {
        container_id: c.clone(),
        linux: Some(pb::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 50_000,
            ..Default::default()
        }),
        ..Default::default()
    }))
    .await
    .unwrap();
    let st = status(&rt, &c).await.unwrap().status.unwrap();
    let linux = st.resources.unwrap().linux.unwrap();
    assert_eq!(linux.memory_limit_in_bytes, 64 << 20);
    assert_eq!(linux.cpu_quota, 50_000);
    let r = rt
        .update_container_resources(Request::new(pb::UpdateContainerResourcesRequest {
            container_id: "3".repeat(64),
            ..Default::default()
        }))
        .await;
    assert_eq!(code(r), Code::NotFound);
    rt.reopen_container_log(Request::new(pb::ReopenContainerLogRequest {
        container_id: c.clone(),
    }))
    .await
    .unwrap();
}

#[tokio::test]
async fn builtin_exec_sync_and_streaming_urls() {
    let rt = Builtin::new();
    let (pod, c) = running(&rt).await;
    let exec = |cmd: &[&str]| {
        rt.exec_sync(Request::new(pb::ExecSyncRequest {
            container_id: c.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 5,
        }))
    };
    let out = exec(&["env"]).await.unwrap().into_inner();
    assert_eq!(out.exit_code, 0);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, "GREETING=hello\nINJECTED=by-a-hook\n");

    let out = exec(&["/bin/echo", "hi", "there"])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.stdout, b"hi there\n");
    let out = exec(&["hostname"]).await.unwrap().into_inner();
    assert_eq!(out.stdout, b"web-host\n");
    let out = exec(&["ls", "/"]).await.unwrap().into_inner();
    assert_eq!(out.exit_code, 127);
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "builtin runtime: command not found: ls\n"
    );
    assert_eq!(code(exec(&[]).await), Code::InvalidArgument);

    let url = rt
        .exec(Request::new(pb::ExecRequest {
            container_id: c.clone(),
            cmd: vec!["sh".into()],
            stdin: true,
            stdout: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:0/builtin/exec/"), "{url}");
    let url = rt
        .attach(Request::new(pb::AttachRequest {
            container_id: c.clone(),
            stdout: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(
        url.starts_with("http://127.0.0.1:0/builtin/attach/"),
        "{url}"
    );
    let url = rt
        .port_forward(Request::new(pb::PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        }))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(
        url.starts_with("http://127.0.0.1:0/builtin/portforward/"),
        "{url}"
    );
    // No stream requested at all.
    let r = rt
        .exec(Request::new(pb::ExecRequest {
            container_id: c.clone(),
            cmd: vec!["sh".into()],
            ..Default::default()
        }))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
}

#[tokio::test]
async fn builtin_container_events_in_order() {
    let rt = Builtin::new();
    pull(&rt, "busybox").await;
    let pod = run_pod(&rt, "web").await;
    // Subscribe after the pod exists: earlier events are not replayed.
    let mut events = rt
        .get_container_events(Request::new(pb::GetEventsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let c = create(&rt, &pod, "app", "busybox").await.unwrap();
    start(&rt, &c).await.unwrap();
    stop(&rt, &c).await.unwrap();
    remove(&rt, &c).await.unwrap();

    let mut got = Vec::new();
    while got.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .unwrap();
        got.push(ev);
    }
    assert!(got.iter().all(|e| e.container_id == c));
    let kinds: Vec<_> = got.iter().map(|e| e.container_event_type).collect();
    assert_eq!(
        kinds,
        [
            pb::ContainerEventType::ContainerCreatedEvent as i32,
            pb::ContainerEventType::ContainerStartedEvent as i32,
            pb::ContainerEventType::ContainerStoppedEvent as i32,
            pb::ContainerEventType::ContainerDeletedEvent as i32,
        ]
    );
    assert!(got.windows(2).all(|w| w[0].created_at < w[1].created_at));
    for ev in &got {
        assert_eq!(ev.pod_sandbox_status.as_ref().unwrap().id, pod);
    }
    let started = &got[1].containers_statuses;
    assert_eq!(started.len(), 1);
    assert_eq!(
        started[0].state,
        pb::ContainerState::ContainerRunning as i32
    );
    assert!(got[3].containers_statuses.is_empty());

    // Sandboxes report their own lifecycle too, under the sandbox id.
    rt.remove_pod_sandbox(Request::new(pb::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .await
    .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(ev.container_id, pod);
        kinds.push(ev.container_event_type);
    }
    assert_eq!(
        kinds,
        [
            pb::ContainerEventType::ContainerStoppedEvent as i32,
            pb::ContainerEventType::ContainerDeletedEvent as i32,
        ]
    );
}

#[tokio::test]
async fn builtin_lagging_event_subscriber_skips() {
    let rt = Builtin::new();
    pull(&rt, "busybox").await;
    let pods: Vec<String> = futures::future::join_all((0..50).map(|i| {
        let rt = &rt;
        async move { run_pod(rt, &format!("p{i}")).await }
    }))
    .await;
    let mut events = rt
        .get_container_events(Request::new(pb::GetEventsRequest {}))
        .await
        .unwrap()
        .into_inner();
    // Far more events than the channel holds: the runtime never blocks on the subscriber.
    for i in 0..1100 {
        create(&rt, &pods[i % 50], &format!("c{i}"), "busybox")
            .await
            .unwrap();
    }
    let last = create(&rt, &pods[0], "last", "busybox").await.unwrap();
    let mut seen = 0;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen += 1;
        if ev.container_id == last {
            break;
        }
    }
    assert!(seen < 1101, "{seen}");
}

#[tokio::test]
async fn builtin_images() {
    let rt = Builtin::new();
    let spec = |s: &str| {
        Some(pb::ImageSpec {
            image: s.into(),
            ..Default::default()
        })
    };
    // Unknown image: OK with no image.
    let st = rt
        .image_status(Request::new(pb::ImageStatusRequest {
            image: spec("busybox"),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_none());

    let id = pull(&rt, "busybox").await;
    let expected = format!(
        "sha256:{}",
        super::sha256_hex(b"docker.io/library/busybox:latest")
    );
    assert_eq!(id, expected);
    // Pulling again (any spelling of the same reference) is the same image.
    assert_eq!(pull(&rt, "docker.io/library/busybox").await, id);
    assert_eq!(pull(&rt, "library/busybox:latest").await, id);
    let other = pull(&rt, "ghcr.io/acme/tool:1.2").await;
    assert_ne!(other, id);

    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        id.as_str(),
        id.trim_start_matches("sha256:"),
        &id["sha256:".len()..20],
    ] {
        let img = rt
            .image_status(Request::new(pb::ImageStatusRequest {
                image: spec(name),
                verbose: true,
            }))
            .await
            .unwrap()
            .into_inner();
        let img = img.image.unwrap_or_else(|| panic!("{name} not found"));
        assert_eq!(img.id, id);
        assert_eq!(img.repo_tags, vec!["docker.io/library/busybox:latest"]);
        assert_eq!(img.repo_digests.len(), 1);
        assert!(img.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"));
        assert_eq!(img.size, 1 << 20);
    }

    let all = rt
        .list_images(Request::new(pb::ListImagesRequest { filter: None }))
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(all.len(), 2);
    let filtered = rt
        .list_images(Request::new(pb::ListImagesRequest {
            filter: Some(pb::ImageFilter {
                image: spec("ghcr.io/acme/tool:1.2"),
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].id, other);

    let fs = rt
        .image_fs_info(Request::new(pb::ImageFsInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    let u = &fs.image_filesystems[0];
    assert_eq!(u.used_bytes.as_ref().unwrap().value, 2 << 20);
    assert_eq!(u.inodes_used.as_ref().unwrap().value, 2);
    assert_eq!(
        u.fs_id.as_ref().unwrap().mountpoint,
        "/var/lib/wasmgate/builtin"
    );
    assert!(u.timestamp > 0);

    // Invalid references.
    for bad in ["", "Busybox", "busybox:", "busybox@sha256:abc"] {
        let r = rt
            .pull_image(Request::new(pb::PullImageRequest {
                image: spec(bad),
                ..Default::default()
            }))
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "{bad:?}");
    }

    // Remove: by tag, then again (idempotent), then something never pulled.
    for name in ["busybox", "busybox", "nginx"] {
        rt.remove_image(Request::new(pb::RemoveImageRequest { image: spec(name) }))
            .await
            .unwrap();
    }
    let all = rt
        .list_images(Request::new(pb::ListImagesRequest { filter: None }))
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(all.len(), 1);
}

#[test]
fn builtin_reference_normalisation() {
    let n = |s: &str| Reference::parse(s).unwrap().to_string();
    assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
    assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
    assert_eq!(n("user/app"), "docker.io/user/app:latest");
    assert_eq!(
        n("index.docker.io/library/busybox"),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(n("localhost/app"), "localhost/app:latest");
    assert_eq!(n("localhost:5000/a/b:v1"), "localhost:5000/a/b:v1");
    assert_eq!(
        n("registry.k8s.io/pause:3.10"),
        "registry.k8s.io/pause:3.10"
    );
    let d = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        n(&format!("busybox@{d}")),
        format!("docker.io/library/busybox@{d}")
    );
    assert_eq!(
        n(&format!("busybox:1.36@{d}")),
        format!("docker.io/library/busybox:1.36@{d}")
    );
    assert!(Reference::parse("UPPER").is_err());
    assert!(Reference::parse(&"a".repeat(64)).is_err());
    assert!(Reference::parse("a//b").is_err());
}
