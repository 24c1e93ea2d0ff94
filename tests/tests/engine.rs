//! The engine on its own: a misbehaving guest costs one call a clean error and nothing else, the
//! compiled artifact is cached across restarts, and a broken new version never replaces a
//! working one.

use std::time::{Duration, Instant};

use wasmgate_engine::bindings::cni_types as wit;
use wasmgate_engine::{CallError, EngineConfig, EngineError, PluginSpec, Registry, WasmEngine};
use wasmgate_tests::{plugin, unique};

fn conf() -> wit::NetConf {
    wit::NetConf {
        cni_version: "1.1.0".into(),
        name: "n".into(),
        type_: "t".into(),
        prev_result: None,
        runtime_config: None,
        args: None,
        raw: "{}".into(),
    }
}

fn call() -> wit::Invocation {
    wit::Invocation {
        container_id: "c".into(),
        netns: "/x".into(),
        ifname: "eth0".into(),
        args: vec![],
    }
}

fn registry(dir: &std::path::Path) -> Registry {
    let engine = WasmEngine::new(&EngineConfig {
        max_instances: 16,
        ..Default::default()
    })
    .unwrap();
    Registry::new(engine, dir.to_path_buf())
}

fn misbehave(mode: &str, timeout_ms: u64, memory_mb: usize) -> PluginSpec {
    let mut spec = PluginSpec::new(format!("mis-{mode}"), plugin("misbehave"));
    spec.config.insert("mode".into(), mode.into());
    spec.limits.timeout = Duration::from_millis(timeout_ms);
    spec.limits.memory_bytes = memory_mb << 20;
    spec
}

async fn add(reg: &Registry, name: &str) -> Result<(), CallError> {
    reg.get(name)
        .unwrap()
        .network(async |net, store| net.call_add(store, &conf(), &call()).await.map(|_| ()))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_guests_fail_one_call_cleanly() {
    let dir = std::env::temp_dir().join(unique("wg-engine-"));
    let reg = registry(&dir);
    for spec in [
        misbehave("trap", 2000, 64),
        misbehave("loop", 300, 64),
        misbehave("oom", 2000, 16),
        misbehave("ok", 2000, 64),
    ] {
        reg.load(spec).await.unwrap();
    }

    match add(&reg, "mis-trap").await {
        Err(CallError::Trap {
            plugin,
            message,
            detail,
        }) => {
            assert_eq!(plugin, "mis-trap");
            // The guest's own panic message leads; the trap and the backtrace follow.
            assert!(message.starts_with("misbehave asked to trap"), "{message}");
            assert!(message.contains("unreachable"), "{message}");
            assert!(detail.contains("stderr:"), "{detail}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }

    let started = Instant::now();
    match add(&reg, "mis-loop").await {
        Err(CallError::Timeout { plugin, timeout }) => {
            assert_eq!(plugin, "mis-loop");
            assert_eq!(timeout, Duration::from_millis(300));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "deadline took {:?}",
        started.elapsed()
    );

    match add(&reg, "mis-oom").await {
        Err(CallError::OutOfMemory { plugin, limit }) => {
            assert_eq!(plugin, "mis-oom");
            assert_eq!(limit, 16 << 20);
        }
        other => panic!("expected out-of-memory, got {other:?}"),
    }

    // None of that affected anyone else, and the same plugins still answer their other exports.
    add(&reg, "mis-ok").await.unwrap();
    let status = reg
        .get("mis-trap")
        .unwrap()
        .network(async |net, store| net.call_status(store, &conf()).await)
        .await;
    assert!(matches!(status, Ok(Ok(()))), "{status:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The ADD count the `count` modes report: how many calls the serving instance has seen.
async fn count(reg: &Registry, name: &str) -> Result<String, CallError> {
    let out = reg
        .get(name)
        .unwrap()
        .network(async |net, store| net.call_add(store, &conf(), &call()).await)
        .await?;
    Ok(out
        .expect("count modes succeed")
        .result
        .dns
        .and_then(|d| d.domain)
        .expect("count in dns.domain"))
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_reused_until_a_call_fails_or_the_plugin_asks_for_fresh_ones() {
    let dir = std::env::temp_dir().join(unique("wg-engine-"));
    let reg = registry(&dir);
    reg.load(misbehave("count", 2000, 64)).await.unwrap();
    let mut fresh = misbehave("count", 2000, 64);
    fresh.name = "mis-count-fresh".into();
    fresh.fresh_instances = true;
    reg.load(fresh).await.unwrap();
    reg.load(misbehave("count-trap", 2000, 64)).await.unwrap();

    let mut seen = vec![];
    for _ in 0..5 {
        seen.push(count(&reg, "mis-count").await.unwrap());
    }
    assert_eq!(
        seen,
        ["1", "2", "3", "4", "5"],
        "one instance serves one call after another"
    );

    let mut seen = vec![];
    for _ in 0..3 {
        seen.push(count(&reg, "mis-count-fresh").await.unwrap());
    }
    assert_eq!(
        seen,
        ["1", "1", "1"],
        "fresh_instances: a new instance every call"
    );

    // A trap discards the instance: the next call starts from clean memory.
    assert_eq!(count(&reg, "mis-count-trap").await.unwrap(), "1");
    assert_eq!(count(&reg, "mis-count-trap").await.unwrap(), "2");
    match count(&reg, "mis-count-trap").await {
        Err(CallError::Trap { message, .. }) => {
            assert!(message.contains("trap on call 3"), "{message}")
        }
        other => panic!("expected the third call to trap, got {other:?}"),
    }
    assert_eq!(count(&reg, "mis-count-trap").await.unwrap(), "1");

    // Concurrent calls each hold their own instance; afterwards all of them wait to be reused.
    let c = || count(&reg, "mis-count");
    let seen = tokio::join!(c(), c(), c(), c());
    let seen = [seen.0, seen.1, seen.2, seen.3].map(|r| r.unwrap());
    assert!(
        seen.contains(&"6".to_string()),
        "one call reuses the idle instance: {seen:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// After a burst of overlapping calls, only a few of its instances wait to be reused: each holds
/// its memory. 8 calls overlap (each sleeps in a host call), then 8 more: 4 of those find an
/// instance left by the first burst, the rest start new ones.
#[tokio::test(flavor = "current_thread")]
async fn a_burst_leaves_at_most_four_idle_instances() {
    let dir = std::env::temp_dir().join(unique("wg-engine-"));
    let reg = registry(&dir);
    reg.load(misbehave("count-slow", 2000, 64)).await.unwrap();
    let burst = || async {
        let c = || count(&reg, "mis-count-slow");
        let r = tokio::join!(c(), c(), c(), c(), c(), c(), c(), c());
        [r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7].map(|r| r.unwrap())
    };
    let started = Instant::now();
    let first = burst().await;
    let took = started.elapsed();
    assert!(first.iter().all(|c| c == "1"), "8 new instances: {first:?}");
    // One thread, yet the sleeps overlap: a guest waiting in a host call suspends its fiber.
    assert!(
        took < Duration::from_millis(600),
        "8 sleeps of 100 ms took {took:?}"
    );
    let second = burst().await;
    let reused = second.iter().filter(|c| *c == "2").count();
    assert_eq!(reused, 4, "second burst: {second:?}");
    assert_eq!(second.iter().filter(|c| *c == "1").count(), 4, "{second:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Guests run on the caller's task, so a spinning one must not hold its thread: on a runtime with
/// a single thread, other plugins' calls go on while it spins, and its timeout still fires.
#[tokio::test(flavor = "current_thread")]
async fn a_spinning_guest_yields_its_thread_to_other_calls() {
    let dir = std::env::temp_dir().join(unique("wg-engine-"));
    let reg = registry(&dir);
    reg.load(misbehave("loop", 1500, 64)).await.unwrap();
    reg.load(misbehave("ok", 2000, 64)).await.unwrap();
    let started = Instant::now();
    let spinning = add(&reg, "mis-loop");
    let others = async {
        for _ in 0..20 {
            add(&reg, "mis-ok").await.unwrap();
        }
        started.elapsed()
    };
    let (spun, others_took) = tokio::join!(spinning, others);
    assert!(
        matches!(spun, Err(CallError::Timeout { .. })),
        "the spinning call: {spun:?}"
    );
    let spun_for = started.elapsed();
    assert!(
        others_took < Duration::from_millis(1000),
        "20 calls beside a spinning guest took {others_took:?}"
    );
    assert!(
        spun_for >= Duration::from_millis(1500) && spun_for < Duration::from_secs(4),
        "the spinning guest's timeout fired after {spun_for:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_reuse_the_compiled_artifact() {
    let dir = std::env::temp_dir().join(unique("wg-cache-"));
    let first = registry(&dir)
        .load(PluginSpec::new("b", plugin("bridge-ipam")))
        .await
        .unwrap();
    assert!(!first.cached);
    let started = Instant::now();
    let second = registry(&dir)
        .load(PluginSpec::new("b", plugin("bridge-ipam")))
        .await
        .unwrap();
    assert!(second.cached, "a restart recompiled the plugin");
    assert_eq!(first.sha256, second.sha256);
    eprintln!("cached load took {:?}", started.elapsed());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_reload_keeps_the_old_version() {
    let dir = std::env::temp_dir().join(unique("wg-swap-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.wasm");
    std::fs::copy(plugin("bridge-ipam"), &path).unwrap();
    let reg = registry(&dir);
    let good = reg.load(PluginSpec::new("p", &path)).await.unwrap();

    // Not Wasm at all.
    std::fs::write(&path, b"definitely not a component").unwrap();
    let err = reg.reload("p").await.unwrap_err();
    assert!(matches!(err, EngineError::Compile { .. }), "{err}");
    // A valid component of the wrong world: the type check refuses it before any swap.
    std::fs::write(&path, wat_component()).unwrap();
    let err = reg.reload("p").await.unwrap_err();
    assert!(matches!(err, EngineError::Link { .. }), "{err}");
    assert!(err.to_string().contains("network-plugin"), "{err}");

    let now = reg.get("p").unwrap();
    assert_eq!(now.info().sha256, good.sha256);
    let versions = now
        .network(async |net, store| net.call_versions(store).await)
        .await
        .unwrap();
    assert!(versions.contains(&"1.1.0".to_string()));

    // A good version swaps in, and calls hold the version they started with.
    let held = reg.get("p").unwrap();
    std::fs::copy(plugin("misbehave"), &path).unwrap();
    let swapped = reg.reload("p").await.unwrap();
    assert_ne!(swapped.sha256, good.sha256);
    assert!(swapped.generation > good.generation);
    assert_eq!(held.info().sha256, good.sha256);
    let old = held
        .network(async |net, store| net.call_versions(store).await)
        .await
        .unwrap();
    let new = reg
        .get("p")
        .unwrap()
        .network(async |net, store| net.call_versions(store).await)
        .await
        .unwrap();
    assert_ne!(
        old, new,
        "bridge-ipam and misbehave declare different versions"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The smallest valid component: it exports nothing, so it fits no wasmgate world.
fn wat_component() -> Vec<u8> {
    // (component) in the binary format: magic, version 0x0d, layer 1.
    vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_get_no_ambient_authority() {
    // The daemon itself has env vars, a filesystem and loopback; none of it may show through.
    let dir = std::env::temp_dir().join(unique("wg-probe-"));
    let reg = registry(&dir);
    reg.load(misbehave("probe", 2000, 64)).await.unwrap();
    let out = reg
        .get("mis-probe")
        .unwrap()
        .network(async |net, store| net.call_add(store, &conf(), &call()).await)
        .await
        .unwrap()
        .unwrap();
    let options = out.result.dns.unwrap().options;
    assert!(options.contains(&"env=0".to_string()), "{options:?}");
    assert!(options.contains(&"fs=false".to_string()), "{options:?}");
    let net = options.iter().find(|o| o.starts_with("net=")).unwrap();
    assert_eq!(net, "net=PermissionDenied", "{options:?}");
    eprintln!("probe saw: {options:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
