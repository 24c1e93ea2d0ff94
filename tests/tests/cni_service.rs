//! The CNI service in-process, with the recording fake in place of netlink: what the host asks
//! of the kernel for each call, and that a failure part-way leaves nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use wasmgate_cni::command::Command;
use wasmgate_cni::env::Invocation;
use wasmgate_cni::wire::{Request, Response};
use wasmgate_daemon::cni::{CniService, PluginPolicy};
use wasmgate_daemon::state::Records;
use wasmgate_effects::NetPolicy;
use wasmgate_effects::fake::{Call, RecordingFake};
use wasmgate_engine::{EngineConfig, PluginSpec, Registry, WasmEngine};
use wasmgate_tests::{plugin, unique};

struct Fixture {
    svc: CniService,
    fake: Arc<RecordingFake>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture() -> Fixture {
    fixture_with(false).await
}

async fn fixture_with(deferred_teardown: bool) -> Fixture {
    let dir = std::env::temp_dir().join(unique("wg-svc-"));
    let engine = WasmEngine::new(&EngineConfig {
        max_instances: 8,
        ..Default::default()
    })
    .unwrap();
    let registry = Arc::new(Registry::new(engine, dir.clone()));
    registry
        .load(PluginSpec::new("bridge", plugin("bridge-ipam")))
        .await
        .unwrap();
    let fake = Arc::new(RecordingFake::new());
    let records = Arc::new(Records::open(&dir.join("host.redb")).unwrap());
    let mut policies = BTreeMap::new();
    policies.insert(
        "bridge".to_string(),
        PluginPolicy {
            net: NetPolicy {
                allowed_bridges: vec!["wgbr0".into()],
                host_prefix: Some("wg".into()),
                pod_cidrs: vec!["10.9.0.0/16".parse().unwrap()],
            },
        },
    );
    let svc = CniService::new(registry, fake.clone(), records, policies, "bridge".into())
        .with_deferred_teardown(deferred_teardown);
    Fixture { svc, fake, dir }
}

fn request(command: Command, cid: &str, extra: serde_json::Value) -> Request {
    let mut conf = json!({
        "cniVersion": "1.1.0", "name": "net", "type": "wasmgate-cni", "podcidr": "10.9.0.0/29",
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    Request {
        invocation: Invocation {
            command,
            container_id: cid.into(),
            netns: format!("/var/run/netns/fake-{cid}"),
            ifname: "eth0".into(),
            args: vec![],
            path: vec!["/opt/cni/bin".into()],
        },
        config: conf.to_string(),
    }
}

fn ok(resp: Response) -> String {
    match resp {
        Response::Ok { stdout } => stdout,
        Response::Err { error } => panic!("unexpected error {}: {}", error.code, error.msg),
    }
}

fn err(resp: Response) -> wasmgate_cni::error::CniError {
    match resp {
        Response::Err { error } => error,
        Response::Ok { stdout } => panic!("unexpected success: {stdout}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn add_applies_the_validated_plan_and_del_removes_it() {
    let f = fixture().await;
    let out = ok(f.svc.handle(request(Command::Add, "c1", json!({}))).await);
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.9.0.2/29");
    let calls = f.fake.calls();
    let [Call::Apply(target, plan)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert_eq!(target.netns, "/var/run/netns/fake-c1");
    assert_eq!(plan.container_addresses, vec!["10.9.0.2/29".to_string()]);
    assert_eq!(plan.bridge.as_ref().unwrap().name, "wgbr0");
    // The MACs the host learnt when applying are in the result.
    assert!(
        result["interfaces"][1]["mac"].as_str().is_some(),
        "{result}"
    );

    ok(f.svc.handle(request(Command::Del, "c1", json!({}))).await);
    assert!(matches!(f.fake.calls().last(), Some(Call::Remove(_, p, Some(_))) if p == plan));
    assert!(f.fake.present().is_empty());
    // DEL again: idempotent, and the host has nothing left to remove.
    ok(f.svc.handle(request(Command::Del, "c1", json!({}))).await);
    assert_eq!(f.fake.calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_apply_gives_the_address_back() {
    let f = fixture().await;
    // A /30 holds exactly one pod address, so a leak would exhaust it.
    let tiny = || json!({"podcidr": "10.9.0.0/30"});
    f.fake.fail_next_apply("no room at the inn");
    let e = err(f.svc.handle(request(Command::Add, "c1", tiny())).await);
    assert!(e.msg.contains("no room at the inn"), "{}", e.msg);
    let out = ok(f.svc.handle(request(Command::Add, "c2", tiny())).await);
    assert!(out.contains("10.9.0.2/30"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_outside_the_grant_is_never_applied() {
    let f = fixture().await;
    let e = err(f
        .svc
        .handle(request(
            Command::Add,
            "c1",
            json!({"bridge": "evil0", "podcidr": "10.9.0.0/30"}),
        ))
        .await);
    assert_eq!(e.code, 103, "{}", e.msg);
    assert!(e.msg.contains("evil0"), "{}", e.msg);
    assert!(f.fake.calls().is_empty(), "{:?}", f.fake.calls());
    let out = ok(f
        .svc
        .handle(request(
            Command::Add,
            "c2",
            json!({"podcidr": "10.9.0.0/30"}),
        ))
        .await);
    assert!(
        out.contains("10.9.0.2/30"),
        "denied ADD leaked its address: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_verifies_what_the_host_built() {
    let f = fixture().await;
    let out = ok(f.svc.handle(request(Command::Add, "c1", json!({}))).await);
    let prev: serde_json::Value = serde_json::from_str(&out).unwrap();
    ok(f.svc
        .handle(request(Command::Check, "c1", json!({"prevResult": prev})))
        .await);
    assert!(matches!(f.fake.calls().last(), Some(Call::Verify(..))));
    // Without an ADD there is nothing to check.
    let e = err(f
        .svc
        .handle(request(Command::Check, "c9", json!({"prevResult": prev})))
        .await);
    assert_ne!(e.code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_everything_not_listed() {
    let f = fixture().await;
    ok(f.svc.handle(request(Command::Add, "c1", json!({}))).await);
    ok(f.svc.handle(request(Command::Add, "c2", json!({}))).await);
    let mut gc = request(
        Command::Gc,
        "",
        json!({
            "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}],
        }),
    );
    gc.invocation.ifname = String::new();
    gc.invocation.netns = String::new();
    ok(f.svc.handle(gc).await);
    let present = f.fake.present();
    assert_eq!(present.len(), 1);
    assert_eq!(
        present[0].1.container_addresses,
        vec!["10.9.0.2/29".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deferred_teardown_cuts_off_first_and_destroys_behind_the_reply() {
    let f = fixture_with(true).await;
    ok(f.svc.handle(request(Command::Add, "c1", json!({}))).await);
    ok(f.svc.handle(request(Command::Del, "c1", json!({}))).await);
    let calls = f.fake.calls();
    assert!(matches!(calls[1], Call::Detach(..)), "{calls:?}");
    // The destroy runs behind the reply; it lands shortly after.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !f.fake.present().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "teardown never ran: {:?}",
            f.fake.calls()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(matches!(f.fake.calls().last(), Some(Call::Remove(..))));
    // The same pod again: no collision with what was torn down.
    ok(f.svc.handle(request(Command::Add, "c1", json!({}))).await);
}
