//! The CRI proxy when things go wrong: hooks that spin, trap or exhaust their memory (fail-closed
//! and fail-open), two hooks claiming one field, the runtime behind the proxy going away and
//! coming back, malformed and oversized requests, a hook replaced under load, and the trace
//! stream's filters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};
use wasmgate_daemon::admin::TraceFilter;
use wasmgate_daemon::trace::CallRecord;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, Im, Rt, builtin_socket, follow, next_record, record_of};
use wasmgate_tests::{Daemon, plugin, sha256, unique, wait_for_iterations, with_custom_section};

/// Clients on `socket` that send and take messages far larger than any CRI limit, so that the
/// server's limits are what is tested.
async fn clients(socket: &Path) -> (Rt, Im) {
    let (rt, im) = cri::clients(socket).await;
    (
        rt.max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
        im,
    )
}

/// CreateContainer of container `name` in `pod`.
fn create_request(pod: &str, name: &str) -> pb::CreateContainerRequest {
    cri::create_request(
        pod,
        cri::pod_config("p", "default"),
        cri::container_config(name),
    )
}

/// [`create_request`] sent: the new container's id, or the refusal.
async fn create(rt: &mut Rt, pod: &str, name: &str) -> Result<String, Status> {
    rt.create_container(create_request(pod, name))
        .await
        .map(|r| r.into_inner().container_id)
}

/// RunPodSandbox of pod `name`: its id, or the refusal.
async fn run_pod(rt: &mut Rt, name: &str) -> Result<String, Status> {
    cri::try_run_pod(rt, name, "default").await
}

/// The daemon answers and is still the same process.
async fn still_serving(d: &mut Daemon, rt: &mut Rt) {
    assert!(d.alive(), "the daemon died: {}", d.log());
    let v = rt.version(pb::VersionRequest::default()).await.unwrap();
    assert_eq!(v.into_inner().runtime_name, "wasmgate-builtin");
}

fn misbehave(mode: &str, events: &str, extra: &str) -> String {
    format!("{extra}\nconfig = {{ mode = \"{mode}\", events = \"{events}\" }}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_fail_closed_hooks_fail_the_call_naming_the_hook() {
    let hook = plugin("hook-misbehave");
    let spin = misbehave(
        "loop",
        "create-container",
        "timeout_ms = 200\nfailure = \"fail-closed\"",
    );
    let crash = misbehave("trap", "start-container", "failure = \"fail-closed\"");
    let hog = misbehave(
        "oom",
        "update-container",
        "memory_mb = 16\nfailure = \"fail-closed\"",
    );
    let mut d = Daemon::start_proxy(
        "builtin",
        &[
            ("spin", hook.clone(), &spin),
            ("crash", hook.clone(), &crash),
            ("hog", hook, &hog),
        ],
    );
    let (mut rt, mut im) = clients(&d.cri_socket()).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "closed").await;

    // A spinning hook is cut off at its deadline; the call fails soon after, naming it.
    for attempt in 0..2 {
        let started = Instant::now();
        let err = create(&mut rt, &pod, "c").await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        assert!(
            err.message().contains("hook spin") && err.message().contains("deadline"),
            "{err:?}"
        );
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(1200),
            "attempt {attempt}: the call took {took:?}"
        );
    }

    // The other hooks need a container: made behind the proxy's back, on the runtime itself.
    let (mut direct, _) = clients(&builtin_socket(&d)).await;
    let cid = create(&mut direct, &pod, "c").await.unwrap();

    // A trapping hook: INTERNAL, with the guest's panic message.
    let err = rt
        .start_container(pb::StartContainerRequest {
            container_id: cid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message().contains("hook crash")
            && err.message().contains("hook-misbehave asked to trap"),
        "{err:?}"
    );
    // ... and the runtime never saw the call.
    let state = cri::container_status(&mut direct, &cid).await.state;
    assert_eq!(state, pb::ContainerState::ContainerCreated as i32);

    // A hook that allocates without bound meets its 16 MiB and fails alone.
    let err = rt
        .update_container_resources(cri::cpu_shares(&cid, 2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("hook hog"), "{err:?}");
    println!("oom hook: {}", err.message());

    // The daemon goes on: unhooked and hooked calls that no failing hook subscribes to pass.
    still_serving(&mut d, &mut rt).await;
    run_pod(&mut rt, "after").await.unwrap();
    rt.stop_container(pb::StopContainerRequest {
        container_id: cid.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let listed = cri::containers(&mut rt).await;
    assert_eq!(listed.len(), 1);
    let stats = wasmgate_daemon::admin::stats(&d.admin_socket()).unwrap();
    assert_eq!(stats["cri.CreateContainer"].errors, 2);
    assert_eq!(stats["cri.StartContainer"].errors, 1);
    assert_eq!(stats["cri.UpdateContainerResources"].errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_fail_open_hooks_are_skipped_and_traced() {
    let hook = plugin("hook-misbehave");
    let spin = misbehave("loop", "", "timeout_ms = 200\nfailure = \"fail-open\"");
    let crash = misbehave("trap", "", "failure = \"fail-open\"");
    let hog = misbehave("oom", "", "memory_mb = 16\nfailure = \"fail-open\"");
    let mut d = Daemon::start_proxy(
        "builtin",
        &[
            ("spin", hook.clone(), &spin),
            ("crash", hook.clone(), &crash),
            ("hog", hook, &hog),
            (
                "inject",
                plugin("hook-inject"),
                "config = { value = \"open-node\" }",
            ),
        ],
    );
    let (mut rt, mut im) = clients(&d.cri_socket()).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "open").await;
    let trace = follow(&d, cri::cri_calls(Some("CreateContainer")));

    let started = Instant::now();
    let cid = create(&mut rt, &pod, "c").await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "the call took {took:?}");

    // Each failing hook was skipped, saying why; the hook after them still did its work.
    let rec = next_record(&trace);
    assert!(rec.ok, "{rec:?}");
    let pre = |hook: &str| {
        cri::decision(&rec, hook, "pre")
            .unwrap_or_else(|| panic!("no pre decision of {hook}: {rec:?}"))
    };
    for (hook, why) in [
        ("spin", "deadline"),
        ("crash", "hook-misbehave asked to trap"),
        ("hog", "memory"),
    ] {
        let decision = pre(hook);
        assert!(
            decision.starts_with("skipped (fail-open)") && decision.contains(why),
            "{hook}: {decision}"
        );
    }
    assert!(pre("inject").starts_with("adjust:"), "{rec:?}");
    assert!(rec.upstream_us.is_some(), "{rec:?}");
    cri::start(&mut rt, &cid).await;
    let env = cri::exec(&mut rt, &cid, &["env"]).await;
    let env = String::from_utf8_lossy(&env.stdout);
    assert!(env.contains("WASMGATE_NODE=open-node"), "{env}");

    // Every hooked call goes on the same way.
    cri::stop_and_remove_container(&mut rt, &cid).await;
    rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    still_serving(&mut d, &mut rt).await;
}

/// A hook asleep in a WASI host call (30 s) is cut off by its own 200 ms timeout: the sleep
/// suspends the guest's fiber, so the timeout can cancel it there. The sleeping hook answers for
/// the call under its own policy, and the hooks before it keep their decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_asleep_in_a_host_call_is_cut_off_by_its_own_timeout() {
    let hook = plugin("hook-misbehave");
    let closed = misbehave(
        "sleep",
        "create-container",
        "timeout_ms = 200\nfailure = \"fail-closed\"",
    );
    let open = misbehave(
        "sleep",
        "start-container",
        "timeout_ms = 200\nfailure = \"fail-open\"",
    );
    let mut d = Daemon::start_proxy(
        "builtin",
        &[
            (
                "inject",
                plugin("hook-inject"),
                "config = { value = \"nap-node\" }",
            ),
            ("nap-closed", hook.clone(), &closed),
            ("nap-open", hook, &open),
        ],
    );
    let (mut rt, mut im) = clients(&d.cri_socket()).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "nap").await;
    let trace = follow(&d, TraceFilter::default());

    let started = Instant::now();
    let err = create(&mut rt, &pod, "c").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("hook nap-closed") && err.message().contains("deadline"),
        "{err:?}"
    );
    assert!(took < Duration::from_millis(1500), "the call took {took:?}");
    let rec = record_of(&trace, "CreateContainer");
    let decisions: Vec<_> = rec
        .hooks
        .iter()
        .map(|h| (h.hook.as_str(), h.decision.as_str()))
        .collect();
    assert!(
        decisions[0].0 == "inject" && decisions[0].1.starts_with("adjust:"),
        "{decisions:?}"
    );
    assert!(
        decisions[1].0 == "nap-closed" && decisions[1].1.starts_with("failed:"),
        "{decisions:?}"
    );

    // Fail-open: the call goes on without the sleeper once its timeout fires.
    let (mut direct, _) = clients(&builtin_socket(&d)).await;
    let cid = create(&mut direct, &pod, "c").await.unwrap();
    let started = Instant::now();
    cri::start(&mut rt, &cid).await;
    assert!(started.elapsed() < Duration::from_millis(1500));
    let rec = record_of(&trace, "StartContainer");
    let nap = rec.hooks.iter().find(|h| h.hook == "nap-open").unwrap();
    assert!(nap.decision.starts_with("skipped (fail-open)"), "{rec:?}");
    still_serving(&mut d, &mut rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hooks_changing_one_field_conflict_naming_both() {
    let inject = plugin("hook-inject");
    let mut d = Daemon::start_proxy(
        "builtin",
        &[
            (
                "inject-a",
                inject.clone(),
                "config = { value = \"a\", env-name = \"SAME\", annotation-key = \"\" }",
            ),
            (
                "inject-b",
                inject,
                "config = { value = \"b\", env-name = \"SAME\", annotation-key = \"\" }",
            ),
        ],
    );
    let (mut rt, mut im) = clients(&d.cri_socket()).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "conflict").await;
    let err = create(&mut rt, &pod, "c").await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("inject-a")
            && err.message().contains("inject-b")
            && err.message().contains("SAME"),
        "{err:?}"
    );
    // Nothing reached the runtime.
    let listed = cri::containers(&mut rt).await;
    assert!(listed.is_empty(), "{listed:?}");
    still_serving(&mut d, &mut rt).await;
}

/// Retries `f` until it succeeds, for at most `secs` seconds; returns its answer and how long
/// recovery took.
async fn until_ok<T, F, Fut>(secs: u64, mut f: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return (v, started.elapsed()),
            Err(e) if started.elapsed() < Duration::from_secs(secs) => {
                assert_eq!(e.code(), Code::Unavailable, "while recovering: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no recovery within {secs} s: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_and_back_is_unavailable_then_recovers() {
    let mut a = Daemon::start_proxy("builtin", &[]);
    let upstream = format!("unix://{}", a.cri_socket().display());
    let gate = misbehave("allow", "run-pod", "");
    let mut b = Daemon::start_proxy(&upstream, &[("gate", plugin("hook-misbehave"), &gate)]);
    let (mut rt, mut im) = clients(&b.cri_socket()).await;

    // Through B to A's builtin runtime: raw and hooked calls alike.
    still_serving(&mut b, &mut rt).await;
    cri::pod_with_busybox(&mut rt, &mut im, "before").await;
    let lister = rt.clone();
    let list = || {
        let mut rt = lister.clone();
        async move {
            rt.list_pod_sandbox(pb::ListPodSandboxRequest::default())
                .await
                .map(|r| r.into_inner().items)
        }
    };
    assert_eq!(list().await.unwrap().len(), 1);

    a.stop();
    let raw = list().await.unwrap_err();
    let hooked = run_pod(&mut rt.clone(), "during").await.unwrap_err();
    for (what, err) in [("ListPodSandbox", &raw), ("RunPodSandbox", &hooked)] {
        assert_eq!(err.code(), Code::Unavailable, "{what}: {err:?}");
        assert!(
            err.message()
                .contains(&format!("runtime {upstream} is unavailable")),
            "{what}: {err:?}"
        );
        println!("{what} with the upstream down: {}", err.message());
    }
    still_serving_proxy(&mut b);

    // A comes back (empty: its runtime keeps no state); B reconnects by itself.
    a.spawn();
    let (pods, took) = until_ok(5, list).await;
    assert!(pods.is_empty(), "{pods:?}");
    println!("B recovered {took:?} after A came back");
    let (pod, _) = until_ok(5, || {
        let mut rt = rt.clone();
        async move { run_pod(&mut rt, "after").await }
    })
    .await;
    assert_eq!(pod.len(), 64);
    let v = rt
        .version(pb::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "wasmgate-builtin");
    let stats = wasmgate_daemon::admin::stats(&b.admin_socket()).unwrap();
    assert!(stats["cri.ListPodSandbox"].errors >= 1);
    assert!(stats["cri.RunPodSandbox"].errors >= 1);
}

/// B itself never went away while its upstream did.
fn still_serving_proxy(b: &mut Daemon) {
    assert!(b.alive(), "the proxy died: {}", b.log());
}

/// Sends `bytes` on a fresh connection to `socket` and reads until the server closes it (or 5 s
/// pass, which fails). Returns what the server sent.
async fn garbage(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    // The server may close before taking all of it.
    let _ = s.write_all(bytes).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept a garbage connection open");
    got
}

/// A clean refusal of a message over the limit.
fn too_large(err: &Status) {
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted)
            && err.message().contains("too large"),
        "{err:?}"
    );
    println!("oversized: {:?} {}", err.code(), err.message());
}

/// A unary call of `path` with `req` encoded as is, whatever the method expects.
async fn call_as<Req, Resp>(socket: &Path, path: &'static str, req: Req) -> Result<Resp, Status>
where
    Req: tonic_prost::prost::Message + Send + Sync + 'static,
    Resp: tonic_prost::prost::Message + Default + Send + Sync + 'static,
{
    let ch = wasmgate_proto::unix_channel(socket).await.unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(req),
        http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<Req, Resp>::default(),
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_fail_cleanly() {
    let mut d = Daemon::start_proxy(
        "builtin",
        &[(
            "inject",
            plugin("hook-inject"),
            "config = { value = \"n\" }",
        )],
    );
    let socket = d.cri_socket();
    let (mut rt, mut im) = clients(&socket).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "bad").await;

    // Not HTTP/2 at all; an HTTP/2 preface and then nonsense frames.
    garbage(
        &socket,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff\xfe garbage",
    )
    .await;
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0xff; 64]);
    garbage(&socket, &h2).await;
    still_serving(&mut d, &mut rt).await;

    // A gRPC frame that is not a CreateContainerRequest (field 2, `config`, arrives as a
    // varint): the hooked path cannot decode it and says so.
    let wrong = pb::StopContainerRequest {
        container_id: "x".into(),
        timeout: 7,
    };
    let err = call_as::<_, pb::CreateContainerResponse>(
        &socket,
        "/runtime.v1.RuntimeService/CreateContainer",
        wrong.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("decode"), "{err:?}");
    // The same on a forwarded method: the runtime's own refusal comes back.
    let via_proxy = call_as::<_, pb::ContainerStatusResponse>(
        &socket,
        "/runtime.v1.RuntimeService/ContainerStatus",
        create_request(&pod, "c"),
    )
    .await
    .unwrap_err();
    let direct = call_as::<_, pb::ContainerStatusResponse>(
        &builtin_socket(&d),
        "/runtime.v1.RuntimeService/ContainerStatus",
        create_request(&pod, "c"),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (via_proxy.code(), via_proxy.message()),
        (direct.code(), direct.message())
    );
    assert_eq!(via_proxy.code(), Code::Internal, "{via_proxy:?}");

    // More than kubelet's 16 MiB: refused as too large (tonic says OUT_OF_RANGE where grpc-go
    // says RESOURCE_EXHAUSTED), hooked or forwarded.
    let mut big = create_request(&pod, "big");
    big.config
        .as_mut()
        .unwrap()
        .annotations
        .insert("blob".into(), "x".repeat(17 << 20));
    let err = rt.create_container(big).await.unwrap_err();
    too_large(&err);
    let err = rt
        .exec_sync(pb::ExecSyncRequest {
            container_id: "0".into(),
            cmd: vec!["echo".into(), "y".repeat(17 << 20)],
            timeout: 1,
        })
        .await
        .unwrap_err();
    too_large(&err);

    // Under 16 MiB but over tonic's default 4 MiB is kubelet's to send: it passes both ways.
    let mut large = create_request(&pod, "large");
    large
        .config
        .as_mut()
        .unwrap()
        .annotations
        .insert("blob".into(), "x".repeat(6 << 20));
    let large = rt
        .create_container(large)
        .await
        .unwrap()
        .into_inner()
        .container_id;
    cri::start(&mut rt, &large).await;
    let echoed = rt
        .exec_sync(pb::ExecSyncRequest {
            container_id: large,
            cmd: vec!["echo".into(), "-n".into(), "y".repeat(6 << 20)],
            timeout: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(echoed.stdout.len(), 6 << 20);

    // None of it hurt: the same connection and new ones work, hooks included.
    still_serving(&mut d, &mut rt).await;
    let cid = create(&mut rt, &pod, "c").await.unwrap();
    assert_eq!(cid.len(), 64);
    let (mut fresh, _) = clients(&socket).await;
    still_serving(&mut d, &mut fresh).await;
}

/// One client's loop: create a container (the hook must have adjusted it), then remove it.
async fn churn(
    socket: PathBuf,
    pod: String,
    w: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Vec<String> {
    let (mut rt, _) = clients(&socket).await;
    let mut failures = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let name = format!("w{w}-{i}");
        let cid = match rt.create_container(create_request(&pod, &name)).await {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                failures.push(format!("client {w} CreateContainer {name}: {e:?}"));
                continue;
            }
        };
        match rt
            .list_containers(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter {
                    id: cid.clone(),
                    ..Default::default()
                }),
            })
            .await
        {
            Ok(r)
                if r.get_ref().containers.len() == 1
                    && r.get_ref().containers[0]
                        .annotations
                        .get("wasmgate.io/node")
                        == Some(&"swap".to_string()) => {}
            other => failures.push(format!("client {w} {name} not adjusted: {other:?}")),
        }
        if let Err(e) = rt
            .remove_container(pb::RemoveContainerRequest {
                container_id: cid.clone(),
            })
            .await
        {
            failures.push(format!("client {w} RemoveContainer {name}: {e:?}"));
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_swap_under_load_loses_no_call() {
    let original = std::fs::read(plugin("hook-inject")).unwrap();
    let dir = std::env::temp_dir().join(unique("wasmgate-hook-swap-"));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("inject.wasm");
    std::fs::write(&wasm, &original).unwrap();
    let mut d = Daemon::start_proxy(
        "builtin",
        &[("inject", wasm.clone(), "config = { value = \"swap\" }")],
    );
    let v1 = d.listed("inject");
    assert_eq!(v1["sha256"], sha256(&original));
    let (mut rt, mut im) = clients(&d.cri_socket()).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "swap").await;

    let stop = Arc::new(AtomicBool::new(false));
    let done: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(churn(
                d.cri_socket(),
                pod.clone(),
                w,
                stop.clone(),
                done[w].clone(),
            ))
        })
        .collect();
    wait_for_iterations(&done, 3, "calls on the first version").await;

    // Swap: a byte-different copy renamed over the file, then an explicit reload.
    let v2 = with_custom_section(&original, "wasmgate-test-version", b"2");
    let v2_sha = sha256(&v2);
    assert_ne!(v2_sha, v1["sha256"].as_str().unwrap());
    let tmp = dir.join(".inject.wasm.tmp");
    std::fs::write(&tmp, &v2).unwrap();
    std::fs::rename(&tmp, &wasm).unwrap();
    let reloaded =
        tokio::task::block_in_place(|| d.plugin_cmd(&["reload", "inject"])).expect("admin reload");
    assert_eq!(reloaded[0]["sha256"], v2_sha.as_str(), "{reloaded}");
    wait_for_iterations(&done, 3, "calls on the new version").await;

    // Keep the load on for about 3 s in all.
    if let Some(rest) = Duration::from_secs(3).checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let total: u64 = done.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    assert!(
        failures.is_empty(),
        "{} failed calls: {failures:#?}",
        failures.len()
    );
    println!("{total} create/check/remove rounds, none failed, across the swap");

    let now = tokio::task::block_in_place(|| d.listed("inject"));
    assert_eq!(now["sha256"], v2_sha.as_str(), "{now}");
    assert!(
        now["generation"].as_u64() > v1["generation"].as_u64(),
        "{now}"
    );
    still_serving(&mut d, &mut rt).await;
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_filter_shows_only_the_method_asked_for() {
    let d = Daemon::start_proxy(
        "builtin",
        &[(
            "inject",
            plugin("hook-inject"),
            "config = { value = \"t\" }",
        )],
    );
    let (mut rt, mut im) = clients(&d.cri_socket()).await;
    let trace = follow(&d, cri::cri_calls(Some("CreateContainer")));

    // Calls of many kinds; three CreateContainer among them, one of which the runtime refuses.
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "traced").await;
    rt.version(pb::VersionRequest::default()).await.unwrap();
    let mut ids = Vec::new();
    for name in ["c1", "c2"] {
        let cid = create(&mut rt, &pod, name).await.unwrap();
        cri::start(&mut rt, &cid).await;
        ids.push(cid);
    }
    rt.list_containers(pb::ListContainersRequest::default())
        .await
        .unwrap();
    let dup = create(&mut rt, &pod, "c1").await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();

    let records: Vec<CallRecord> = (0..3).map(|_| next_record(&trace)).collect();
    // Nothing else arrives: the other calls were filtered out by the daemon.
    assert!(
        trace.recv_timeout(Duration::from_millis(300)).is_err(),
        "an extra record"
    );
    for (rec, ok) in records.iter().zip([true, true, false]) {
        assert_eq!(rec.interface, "cri");
        assert_eq!(rec.method, "CreateContainer", "{rec:?}");
        assert_eq!(rec.ok, ok, "{rec:?}");
        let pre = rec
            .hooks
            .iter()
            .find(|h| h.hook == "inject" && h.phase == "pre")
            .unwrap_or_else(|| panic!("no inject decision: {rec:?}"));
        assert!(
            pre.decision.starts_with("adjust: ")
                && pre.decision.contains("env WASMGATE_NODE")
                && pre.decision.contains("annotations wasmgate.io/node"),
            "{pre:?}"
        );
        // hook-inject (0.3.0) wants no outcome, so it is not called after the runtime.
        assert!(
            !rec.hooks
                .iter()
                .any(|h| h.hook == "inject" && h.phase == "post"),
            "{rec:?}"
        );
        let up = rec.upstream_us.expect("upstream_us");
        assert!(up <= rec.elapsed_us, "{rec:?}");
        assert_eq!(rec.ids.get("pod"), Some(&pod), "{rec:?}");
    }
    assert_eq!(records[2].code, Some(Code::AlreadyExists as u32));
    let names: Vec<_> = records
        .iter()
        .map(|r| r.ids["container_name"].as_str())
        .collect();
    assert_eq!(names, ["c1", "c2", "c1"]);
    // The containers the runtime made, by the IDs it returned; the refused one has none.
    let made: Vec<_> = records.iter().map(|r| r.ids.get("container")).collect();
    assert_eq!(made, [Some(&ids[0]), Some(&ids[1]), None]);
}
