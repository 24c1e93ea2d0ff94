//! End to end with a real containerd: a kubelet-like client drives wasmgate's CRI socket; the
//! proxy runs its Wasm runtime hooks and forwards to a private containerd (Debian's 1.6, started
//! per test by `wasmgate_tests::containerd`), whose CRI plugin networks pods with `wasmgate-cni`,
//! that is with the same daemon's Wasm network plugin.
//!
//! Needs what `scripts/setup` installs: containerd, runc, busybox-static and the reference CNI
//! plugins (for `loopback`). The images are built from `/bin/busybox`; no registry is used.

use std::time::{Duration, Instant};

use tonic::Code;
use wasmgate_tests::containerd::{
    BUSYBOX_IMAGE, CriNode, PAUSE_IMAGE, container_config, image_spec, no_host_veths, pb,
    pod_config,
};
use wasmgate_tests::{PluginEntry, cri, plugin};

/// Polls an async condition for up to `secs`.
async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The pod's IP as containerd reports it (from the CNI result).
async fn pod_ip(rt: &mut cri::Rt, id: &str) -> String {
    cri::pod_status(rt, id).await.network.unwrap_or_default().ip
}

async fn container_state(rt: &mut cri::Rt, id: &str) -> pb::ContainerState {
    cri::container_status(rt, id).await.state()
}

/// The whole lifecycle of a pod and a container, as kubelet drives it, through the `inject`
/// and `policy` hooks; the pod's address comes from the Wasm network plugin, from a pool of
/// exactly one address (a /30), so that reusing it proves StopPodSandbox's CNI DEL freed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_lifecycle_through_the_proxy_with_real_containerd() {
    let started = Instant::now();
    let node = CriNode::start(
        "10.240.7.0/30",
        vec![
            PluginEntry::new("inject", plugin("hook-inject"))
                .extra("config = { node-name = \"e2e-node-1\" }"),
            PluginEntry::new("policy", plugin("hook-policy"))
                .extra("config = { allowed-namespaces = \"kube-system\" }"),
        ],
    )
    .await;
    let ctx = || node.context();
    eprintln!("node up in {:?}", started.elapsed());
    let mut rt = node.runtime().await;
    let mut img = node.images().await;

    // The runtime behind the proxy, as kubelet sees it.
    let v = rt
        .version(pb::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "containerd", "{v:?}");
    assert_eq!(v.runtime_api_version, "v1", "{v:?}");

    // The images were imported, not pulled: ImageStatus through the proxy finds them.
    for name in [BUSYBOX_IMAGE, PAUSE_IMAGE] {
        let s = img
            .image_status(pb::ImageStatusRequest {
                image: Some(image_spec(name)),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        let image = s
            .image
            .unwrap_or_else(|| panic!("no image {name}{}", ctx()));
        assert!(image.repo_tags.iter().any(|t| t == name), "{image:?}");
    }
    let listed = img
        .list_images(pb::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        listed
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == BUSYBOX_IMAGE)),
        "{listed:?}"
    );

    // (1) RunPodSandbox: the address comes from the Wasm plugin.
    let pod_cfg = pod_config(&node.containerd, "web", "default");
    let t = Instant::now();
    let pod = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e:?}{}", ctx()))
        .into_inner()
        .pod_sandbox_id;
    eprintln!("RunPodSandbox took {:?}", t.elapsed());
    let ip = pod_ip(&mut rt, &pod).await;
    assert_eq!(ip, "10.240.7.2", "the only address of the pool{}", ctx());
    let add = node.nth_call("cni", "ADD", 1);
    assert!(add.ok && add.container_id == pod, "{add:?}");
    assert!(
        node.daemon.node.ping(&ip),
        "the node cannot reach the pod over the plugin's bridge{}",
        ctx()
    );

    // (2) CreateContainer: the inject hook adds the variable and the annotation.
    let t = Instant::now();
    let ctr = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("app", &["sleep", "1000000"])),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e:?}{}", ctx()))
        .into_inner()
        .container_id;
    eprintln!("CreateContainer took {:?}", t.elapsed());
    let record = node.nth_call("cri", "CreateContainer", 1);
    assert!(record.ok, "{record:?}");
    let decisions: Vec<(&str, &str, &str)> = record
        .hooks
        .iter()
        .map(|h| (h.hook.as_str(), h.phase.as_str(), h.decision.as_str()))
        .collect();
    assert!(
        decisions.contains(&(
            "inject",
            "pre",
            "adjust: annotations wasmgate.io/node; env WASMGATE_NODE"
        )),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&("policy", "pre", "allow")),
        "{decisions:?}"
    );
    let status = cri::container_status(&mut rt, &ctr).await;
    assert_eq!(status.state(), pb::ContainerState::ContainerCreated);
    assert_eq!(
        status
            .annotations
            .get("wasmgate.io/node")
            .map(String::as_str),
        Some("e2e-node-1"),
        "{status:?}"
    );

    // (3) StartContainer.
    rt.start_container(pb::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e:?}{}", ctx()));

    // (4) ExecSync: the variable is in the container, the address on its eth0.
    let exec = |cmd: &[&str]| pb::ExecSyncRequest {
        container_id: ctr.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    };
    let env = rt.exec_sync(exec(&["env"])).await.unwrap().into_inner();
    let stdout = String::from_utf8_lossy(&env.stdout);
    assert_eq!(env.exit_code, 0, "{env:?}");
    assert!(
        stdout.lines().any(|l| l == "WASMGATE_NODE=e2e-node-1"),
        "env in the container: {stdout}"
    );
    let addr = rt
        .exec_sync(exec(&["ip", "-4", "addr", "show", "eth0"]))
        .await
        .unwrap()
        .into_inner();
    let stdout = String::from_utf8_lossy(&addr.stdout);
    assert_eq!(addr.exit_code, 0, "{addr:?}");
    assert!(
        stdout.contains("inet 10.240.7.2/30"),
        "ip addr in the container: {stdout}"
    );
    let failed = rt.exec_sync(exec(&["false"])).await.unwrap().into_inner();
    assert_eq!(failed.exit_code, 1, "{failed:?}");

    // (5) ContainerStatus and ListContainers.
    assert_eq!(
        container_state(&mut rt, &ctr).await,
        pb::ContainerState::ContainerRunning
    );
    let listed = rt
        .list_containers(pb::ListContainersRequest {
            filter: Some(pb::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, ctr);
    assert_eq!(listed[0].state(), pb::ContainerState::ContainerRunning);

    // The policy hook: a privileged container outside kube-system never reaches containerd.
    let mut privileged = container_config("root", &["sleep", "1000000"]);
    privileged
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .privileged = true;
    let denied = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(privileged),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .expect_err("a privileged container must be denied");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("denied by hook policy")
            && denied.message().contains("privileged"),
        "{denied:?}"
    );
    let record = node.nth_call("cri", "CreateContainer", 2);
    assert!(
        !record.ok && record.upstream_us.is_none(),
        "containerd was called: {record:?}"
    );
    let count = cri::containers(&mut rt).await.len();
    assert_eq!(count, 1, "the denied container exists");

    // A second pod while the first holds the pool's only address: CNI ADD fails, and so does
    // RunPodSandbox, with the plugin's words.
    let second_cfg = pod_config(&node.containerd, "web2", "default");
    let err = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(second_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("the pool has one address");
    assert!(
        err.message().contains("no addresses available"),
        "{err:?}{}",
        ctx()
    );

    // (6) StopContainer, RemoveContainer.
    rt.stop_container(pb::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 0,
    })
    .await
    .unwrap_or_else(|e| panic!("StopContainer: {e:?}{}", ctx()));
    assert_eq!(
        container_state(&mut rt, &ctr).await,
        pb::ContainerState::ContainerExited
    );
    rt.remove_container(pb::RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemoveContainer: {e:?}{}", ctx()));
    let gone = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: false,
        })
        .await
        .expect_err("the container was removed");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");

    // (7) StopPodSandbox: its CNI DEL tears the attachment down and frees the address.
    rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox: {e:?}{}", ctx()));
    let status = cri::pod_status(&mut rt, &pod).await;
    assert_eq!(status.state(), pb::PodSandboxState::SandboxNotready);
    let del = node.wait_call("of the pod's CNI DEL", |c| {
        c.interface == "cni" && c.method == "DEL" && c.container_id == pod
    });
    assert!(del.ok, "{del:?}");
    let node_ns = &node.daemon.node;
    assert!(
        eventually(5, || async { no_host_veths(node_ns) }).await,
        "host veths left: {:?}",
        node_ns.links("veth")
    );
    // The address is free again: a new pod gets it.
    let second = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(second_cfg),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox after the DEL: {e:?}{}", ctx()))
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(pod_ip(&mut rt, &second).await, "10.240.7.2");
    cri::stop_and_remove_pod(&mut rt, &second).await;

    // (8) RemovePodSandbox.
    rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox: {e:?}{}", ctx()));
    let gone = rt
        .pod_sandbox_status(pb::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .expect_err("the pod was removed");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    let pods = cri::pods(&mut rt).await;
    assert!(pods.is_empty(), "{pods:?}");
    assert!(no_host_veths(&node.daemon.node));
    eprintln!("whole test took {:?}", started.elapsed());
}

/// Two stuck hooks (`hook-misbehave` in `loop` mode, 300 ms deadlines): the fail-open one, on
/// create-container, is skipped and the container is created; the fail-closed one, on
/// start-container, fails the call with DEADLINE_EXCEEDED naming it, and containerd never starts
/// the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_hooks_fail_open_or_closed_in_front_of_containerd() {
    let misbehave = plugin("hook-misbehave");
    let node = CriNode::start(
        "10.240.8.0/24",
        vec![
            PluginEntry::new("stuck-open", misbehave.clone()).extra(
                "timeout_ms = 300\nfailure = \"fail-open\"\nconfig = { mode = \"loop\", events = \"create-container\" }",
            ),
            PluginEntry::new("stuck-closed", misbehave).extra(
                "timeout_ms = 300\nfailure = \"fail-closed\"\nconfig = { mode = \"loop\", events = \"start-container\" }",
            ),
        ],
    )
    .await;
    let ctx = || node.context();
    let mut rt = node.runtime().await;

    let pod_cfg = pod_config(&node.containerd, "stuck", "default");
    let pod = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox (no hook subscribed): {e:?}{}", ctx()))
        .into_inner()
        .pod_sandbox_id;

    // Fail-open: the hook runs out its deadline, is skipped, and the call goes on.
    let t = Instant::now();
    let ctr = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("app", &["sleep", "1000000"])),
            sandbox_config: Some(pod_cfg),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer past a fail-open hook: {e:?}{}", ctx()))
        .into_inner()
        .container_id;
    // The deadline is counted in epoch ticks: allow a tick's slack.
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    let record = node.nth_call("cri", "CreateContainer", 1);
    assert!(record.ok && record.upstream_us.is_some(), "{record:?}");
    assert!(
        record
            .hooks
            .iter()
            .any(|h| h.hook == "stuck-open" && h.decision.starts_with("skipped (fail-open)")),
        "{record:?}"
    );
    assert_eq!(
        container_state(&mut rt, &ctr).await,
        pb::ContainerState::ContainerCreated
    );

    // Fail-closed: the call fails once the deadline passes, naming the hook.
    let t = Instant::now();
    let err = rt
        .start_container(pb::StartContainerRequest {
            container_id: ctr.clone(),
        })
        .await
        .expect_err("a stuck fail-closed hook fails the call");
    let took = t.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("stuck-closed"), "{err:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let record = node.nth_call("cri", "StartContainer", 1);
    assert!(!record.ok && record.upstream_us.is_none(), "{record:?}");
    assert_eq!(
        container_state(&mut rt, &ctr).await,
        pb::ContainerState::ContainerCreated,
        "containerd started the container anyway"
    );

    // Unsubscribed calls still pass, and the daemon is unharmed.
    rt.remove_container(pb::RemoveContainerRequest { container_id: ctr })
        .await
        .unwrap();
    cri::stop_and_remove_pod(&mut rt, &pod).await;
    let mut node = node;
    assert!(node.daemon.alive(), "{}", node.context());
}
