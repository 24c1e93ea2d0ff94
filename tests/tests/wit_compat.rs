//! Runtime hooks built against every WIT version in one daemon: the 0.1.0 `hook-mirror`, the
//! 0.2.0 `hook-workdir` and the 0.3.0 `hook-policy` and `hook-inject` share one chain, each sees
//! its calls in its own version, only the hooks that want an outcome are called after the
//! runtime, and a hook file swapped from one version to another and back under load loses no
//! call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tonic::Code;
use wasmgate_daemon::trace::CallRecord;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, Rt};
use wasmgate_tests::{Daemon, plugin, sha256, wait_for_iterations};

const V0_1: &str = "wasmgate:plugin/runtime-hook@0.1.0";
const V0_2: &str = "wasmgate:plugin/runtime-hook@0.2.0";
const V0_3: &str = "wasmgate:plugin/runtime-hook@0.3.0";
/// Where the 0.1.0 hook-mirror moves Docker Hub images.
const MIRROR: &str = "mirror.local:5000";

/// A busybox container in working directory `working_dir`, privileged or not: what the 0.2.0
/// hook-workdir and the 0.3.0 policy judge.
fn container_config(name: &str, working_dir: &str, privileged: bool) -> pb::ContainerConfig {
    pb::ContainerConfig {
        working_dir: working_dir.into(),
        ..cri::secured_container(name, privileged, &[])
    }
}

async fn create(rt: &mut Rt, pod: &str, c: pb::ContainerConfig) -> Result<String, tonic::Status> {
    cri::create(rt, pod, cri::pod_config("p", "default"), c).await
}

async fn annotations(rt: &mut Rt, cid: &str) -> std::collections::HashMap<String, String> {
    cri::container_status(rt, cid).await.annotations
}

/// What each hook decided in the next CreateContainer record, as `hook: decision`, before the
/// runtime and after it.
fn decisions(rx: &mpsc::Receiver<CallRecord>) -> (Vec<String>, Vec<String>) {
    let rec = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a trace record within 5 s");
    let phase = |p: &str| {
        rec.hooks
            .iter()
            .filter(|h| h.phase == p)
            .map(|h| format!("{}: {}", h.hook, h.decision))
            .collect()
    };
    (phase("pre"), phase("post"))
}

fn pre_decisions(rx: &mpsc::Receiver<CallRecord>) -> Vec<String> {
    decisions(rx).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_of_every_wit_version_share_one_chain() {
    let d = Daemon::start_proxy(
        "builtin",
        &[
            (
                "mirror",
                plugin("hook-mirror"),
                &format!(
                    "config = {{ to = \"{MIRROR}\" }}\ngrant = {{ image_registries = [\"{MIRROR}\"] }}"
                ),
            ),
            ("policy", plugin("hook-policy"), ""),
            (
                "inject",
                plugin("hook-inject"),
                "config = { value = \"node-7\" }",
            ),
            (
                "workdir",
                plugin("hook-workdir"),
                "config = { allowed-prefixes = \"/srv /app\" }",
            ),
        ],
    );
    // Each loads, in the version it was built against.
    assert_eq!(d.listed("mirror")["world"], V0_1);
    assert_eq!(d.listed("policy")["world"], V0_3);
    assert_eq!(d.listed("inject")["world"], V0_3);
    assert_eq!(d.listed("workdir")["world"], V0_2);

    let (mut rt, mut im) = cri::clients(&d.cri_socket()).await;
    // The pull goes through the 0.1.0 mirror too, so the mirrored busybox is what the runtime
    // has, and what each container below must be made of.
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "compat").await;
    let trace = cri::follow(&d, cri::cri_calls(Some("CreateContainer")));

    // The 0.2.0 hook sees the working dir; the 0.1.0 and 0.3.0 hooks' adjustments land too.
    let cid = create(&mut rt, &pod, container_config("app", "/srv/app", false))
        .await
        .unwrap();
    let image = cri::container_status(&mut rt, &cid)
        .await
        .image
        .unwrap_or_default();
    assert_eq!(
        image.image,
        format!("{MIRROR}/library/busybox"),
        "{image:?}"
    );
    let ann = annotations(&mut rt, &cid).await;
    assert_eq!(
        ann.get("wasmgate.io/working-dir").map(String::as_str),
        Some("/srv/app"),
        "{ann:?}"
    );
    assert_eq!(
        ann.get("wasmgate.io/node").map(String::as_str),
        Some("node-7"),
        "{ann:?}"
    );
    let (seen, after) = decisions(&trace);
    assert_eq!(seen.len(), 4, "every hook saw the call: {seen:?}");
    assert_eq!(
        seen[0],
        format!("mirror: adjust: image {MIRROR}/library/busybox")
    );
    assert_eq!(seen[1], "policy: allow");
    assert!(
        seen[2].starts_with("inject: adjust: annotations wasmgate.io/node; env WASMGATE_NODE"),
        "{seen:?}"
    );
    assert_eq!(
        seen[3],
        "workdir: adjust: annotations wasmgate.io/working-dir"
    );
    // Hooks before 0.3.0 get the outcome of every event they subscribe to; policy and inject,
    // 0.3.0, want none, so the call makes two guest calls fewer.
    assert_eq!(after, ["mirror: ok", "workdir: ok"], "{after:?}");

    // The 0.2.0 hook decides on the new field.
    let denied = create(&mut rt, &pod, container_config("tmp", "/tmp", false))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("workdir") && denied.message().contains("\"/tmp\""),
        "{denied:?}"
    );
    let seen = pre_decisions(&trace);
    assert!(seen[3].starts_with("workdir: deny"), "{seen:?}");

    // The 0.3.0 policy hook decides on what it sees.
    let denied = create(&mut rt, &pod, container_config("root", "/app", true))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("policy"), "{denied:?}");
    let seen = pre_decisions(&trace);
    assert_eq!(seen.len(), 2, "the chain stops at the deny: {seen:?}");

    // No working dir: the 0.2.0 hook allows unchanged, the others still adjust.
    let cid = create(&mut rt, &pod, container_config("plain", "", false))
        .await
        .unwrap();
    let ann = annotations(&mut rt, &cid).await;
    assert!(!ann.contains_key("wasmgate.io/working-dir"), "{ann:?}");
    assert_eq!(
        ann.get("wasmgate.io/node").map(String::as_str),
        Some("node-7"),
        "{ann:?}"
    );
    let seen = pre_decisions(&trace);
    assert_eq!(seen[3], "workdir: allow", "{seen:?}");
}

/// Which version adjusted the containers one client created.
#[derive(Default)]
struct Seen {
    by_v0_3: AtomicU64,
    by_v0_2: AtomicU64,
}

/// One client's loop: create a container with a working dir, check that the hook (of whichever
/// version) adjusted it, remove it.
async fn churn(
    socket: PathBuf,
    pod: String,
    w: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    seen: Arc<Seen>,
) -> Vec<String> {
    let (mut rt, _) = cri::clients(&socket).await;
    let mut failures = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let name = format!("w{w}-{i}");
        let cid = match create(&mut rt, &pod, container_config(&name, "/srv/x", false)).await {
            Ok(cid) => cid,
            Err(e) => {
                failures.push(format!("client {w} CreateContainer {name}: {e:?}"));
                continue;
            }
        };
        let listed = rt
            .list_containers(pb::ListContainersRequest {
                filter: Some(pb::ContainerFilter {
                    id: cid.clone(),
                    ..Default::default()
                }),
            })
            .await;
        match listed.as_ref().map(|r| r.get_ref().containers.as_slice()) {
            Ok([c]) if c.annotations.get("wasmgate.io/node") == Some(&"swap".to_string()) => {
                seen.by_v0_3.fetch_add(1, Ordering::Relaxed);
            }
            Ok([c])
                if c.annotations.get("wasmgate.io/working-dir") == Some(&"/srv/x".to_string()) =>
            {
                seen.by_v0_2.fetch_add(1, Ordering::Relaxed);
            }
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

/// Renames `bytes` over `wasm` and reloads `name`; returns its new `plugin list` entry.
fn swap_in(d: &Daemon, wasm: &Path, name: &str, bytes: &[u8]) -> serde_json::Value {
    let tmp = wasm.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, wasm).unwrap();
    let reloaded =
        tokio::task::block_in_place(|| d.plugin_cmd(&["reload", name])).expect("admin reload");
    assert_eq!(reloaded[0]["sha256"], sha256(bytes).as_str(), "{reloaded}");
    tokio::task::block_in_place(|| d.listed(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_swapped_to_another_wit_version_and_back_loses_no_call() {
    let old = std::fs::read(plugin("hook-inject")).unwrap();
    let new = std::fs::read(plugin("hook-workdir")).unwrap();
    let dir = std::env::temp_dir().join(wasmgate_tests::unique("wasmgate-wit-swap-"));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = dir.join("hook.wasm");
    std::fs::write(&wasm, &old).unwrap();
    // Both builds read their own keys from one config: inject's `value`, workdir's prefixes.
    let d = Daemon::start_proxy(
        "builtin",
        &[(
            "hook",
            wasm.clone(),
            "config = { value = \"swap\", allowed-prefixes = \"/srv\" }",
        )],
    );
    let first = d.listed("hook");
    assert_eq!(first["world"], V0_3, "{first}");
    let (mut rt, mut im) = cri::clients(&d.cri_socket()).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "swap").await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let done: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(churn(
                d.cri_socket(),
                pod.clone(),
                w,
                stop.clone(),
                done[w].clone(),
                seen.clone(),
            ))
        })
        .collect();
    wait_for_iterations(&done, 3, "calls on 0.3.0").await;

    let up = swap_in(&d, &wasm, "hook", &new);
    assert_eq!(up["world"], V0_2, "{up}");
    wait_for_iterations(&done, 3, "calls on 0.2.0").await;

    let back = swap_in(&d, &wasm, "hook", &old);
    assert_eq!(back["world"], V0_3, "{back}");
    assert!(
        back["generation"].as_u64() > up["generation"].as_u64(),
        "{back}"
    );
    wait_for_iterations(&done, 3, "calls on 0.3.0 again").await;

    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed calls: {failures:#?}",
        failures.len()
    );
    let (v1, v2) = (
        seen.by_v0_3.load(Ordering::Relaxed),
        seen.by_v0_2.load(Ordering::Relaxed),
    );
    assert!(
        v1 >= 8 && v2 >= 4,
        "containers adjusted by 0.3.0: {v1}, by 0.2.0: {v2}"
    );
    println!("{v1} calls on 0.3.0, {v2} on 0.2.0, none failed, across two swaps");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}
