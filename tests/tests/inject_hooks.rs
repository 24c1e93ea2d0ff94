//! The CRI `inject` runtime hook in every language it is written in: `plugins/rust/hook-inject`
//! and its C port `plugins/c/hook-inject`. Each test is written once, as a function of the
//! component, and `implementations!` instantiates it for each (`rust::…`, `c::…`), so a port
//! cannot drift from the original unnoticed, and a new port is one line.
//!
//! Per implementation:
//! - through a real daemon (CRI in front of the builtin runtime): CreateContainer gets the env
//!   var and the annotation, as the runtime then reports them (ContainerStatus, its verbose
//!   config, ExecSync `env`); an edited config is honoured after a restart (names, value, a half
//!   switched off, both off, a bad name denied); the hook is called for the events the Rust
//!   hook subscribes to and no others;
//! - on the engine alone: one reused instance answers many large requests within a small memory
//!   cap, so the guest frees what it is handed;
//! - under the stock `wasmtime` CLI: the calls of the README give the README's answers.
//!
//! Then, across implementations: the C port answers exactly as the Rust hook under the CLI for
//! odd inputs too, and the C port's own unit tests pass (natively, with ASan and UBSan).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tonic::Code;
use wasmgate_daemon::trace::CallRecord;
use wasmgate_engine::bindings::cri_types as wit;
use wasmgate_engine::{EngineConfig, PluginSpec, Registry, WasmEngine, World};
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, Im, Rt, clients, record_of};
use wasmgate_tests::{Daemon, unique, wasmtime_cli};

/// Instantiates every behaviour test below for each implementation of the hook.
macro_rules! implementations {
    ($($lang:ident => $wasm:expr),* $(,)?) => {$(
        mod $lang {
            use super::*;

            fn wasm() -> PathBuf {
                $wasm
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_container_gets_the_env_and_the_annotation() {
                super::create_container_gets_the_env_and_the_annotation(wasm()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn configuration_changes_are_honoured() {
                super::configuration_changes_are_honoured(wasm()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn called_for_the_rust_hooks_subscriptions_only() {
                super::called_for_the_rust_hooks_subscriptions_only(wasm()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_instance_serves_many_calls_without_leaking() {
                super::one_instance_serves_many_calls_without_leaking(wasm()).await
            }

            #[test]
            fn stock_cli_answers_as_the_readme_says() {
                super::stock_cli_answers_as_the_readme_says(wasm())
            }
        }
    )*};
}

implementations! {
    rust => wasmgate_tests::plugin("hook-inject"),
    c => wasmgate_tests::lang::c::plugin("hook-inject"),
}

// ---- CRI through a daemon ------------------------------------------------------------------

/// A daemon with the hook as `inject`, its `[plugins.inject]` config being `config`.
fn daemon(wasm: PathBuf, config: &str) -> Daemon {
    Daemon::start_proxy("builtin", &[("inject", wasm, &config_line(config))])
}

fn config_line(config: &str) -> String {
    format!("config = {{ {config} }}")
}

/// Stops the daemon, changes the hook's config to `to`, and starts it again, as an operator
/// would (the daemon reads plugin config at start).
fn reconfigure(d: &mut Daemon, from: &str, to: &str) {
    d.stop();
    let toml = std::fs::read_to_string(&d.config).unwrap();
    let (from, to) = (config_line(from), config_line(to));
    assert!(toml.contains(&from), "{from} not in {toml}");
    std::fs::write(&d.config, toml.replacen(&from, &to, 1)).unwrap();
    d.spawn();
}

/// The pod config the hook is handed with every CreateContainer.
fn pod_config() -> pb::PodSandboxConfig {
    cri::pod_config("p", "default")
}

/// Container `name`, with `env` of its own.
fn container_config(name: &str, env: &[(&str, &str)]) -> pb::ContainerConfig {
    pb::ContainerConfig {
        envs: cri::envs(env),
        ..cri::container_config(name)
    }
}

/// A new pod (with busybox pulled) to create containers in.
async fn new_pod(rt: &mut Rt, im: &mut Im) -> String {
    cri::pod_with_busybox(rt, im, &unique("pod")).await
}

/// A container as the runtime reports it after it was created through the hook.
#[derive(Debug)]
struct Created {
    /// ContainerStatus annotations.
    annotations: BTreeMap<String, String>,
    /// ContainerStatus (verbose): the env of the config the runtime was given.
    config_env: Vec<(String, String)>,
    /// ExecSync `env` in the started container.
    exec_env: Vec<(String, String)>,
}

impl Created {
    /// The value of env var `name`, checking that the config and the process agree and that it
    /// appears at most once.
    fn env(&self, name: &str) -> Option<String> {
        let pick = |env: &[(String, String)]| -> Vec<String> {
            env.iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        let (config, exec) = (pick(&self.config_env), pick(&self.exec_env));
        assert_eq!(config, exec, "config and process env disagree: {self:?}");
        assert!(
            config.len() <= 1,
            "{name} set {} times: {self:?}",
            config.len()
        );
        config.into_iter().next()
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }
}

/// Creates container `name` (with `env`) in `pod` through the proxy, starts it, and reads back
/// what the runtime made of it.
async fn create(
    rt: &mut Rt,
    pod: &str,
    name: &str,
    env: &[(&str, &str)],
) -> Result<Created, tonic::Status> {
    let cid = cri::create(rt, pod, pod_config(), container_config(name, env)).await?;
    cri::start(rt, &cid).await;
    let status = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: Value = serde_json::from_str(&status.info["info"]).unwrap();
    let config_env = info["config"]["envs"]
        .as_array()
        .unwrap_or_else(|| panic!("no config.envs in {info}"))
        .iter()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap().to_string(),
                kv["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let exec = cri::exec(rt, &cid, &["env"]).await;
    assert_eq!(exec.exit_code, 0);
    let exec_env = String::from_utf8_lossy(&exec.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Created {
        annotations: status.status.unwrap().annotations.into_iter().collect(),
        config_env,
        exec_env,
    })
}

/// What the `inject` hook decided in `phase` of a traced call.
fn decision<'a>(rec: &'a CallRecord, phase: &str) -> Option<&'a str> {
    cri::decision(rec, "inject", phase)
}

async fn create_container_gets_the_env_and_the_annotation(wasm: PathBuf) {
    let d = daemon(wasm, r#"node-name = "worker-1""#);
    let trace = cri::follow(&d, cri::cri_calls(None));
    let (mut rt, mut im) = clients(d.cri_socket()).await;
    let pod = new_pod(&mut rt, &mut im).await;

    let c = create(&mut rt, &pod, "app", &[("DEMO", "1")])
        .await
        .unwrap();
    assert_eq!(c.env("WASMGATE_NODE").as_deref(), Some("worker-1"));
    assert_eq!(c.annotation("wasmgate.io/node"), Some("worker-1"));
    // The container's own env is kept.
    assert_eq!(c.env("DEMO").as_deref(), Some("1"));
    let rec = record_of(&trace, "CreateContainer");
    assert!(rec.ok, "{rec:?}");
    assert_eq!(
        decision(&rec, "pre"),
        Some("adjust: annotations wasmgate.io/node; env WASMGATE_NODE"),
        "{rec:?}"
    );
    // No post phase: the hook's post-subscriptions are empty (its post does nothing), so the
    // daemon does not call it.
    assert_eq!(decision(&rec, "post"), None, "{rec:?}");

    // Set or replace: a container that brings its own WASMGATE_NODE gets the node's.
    let c = create(&mut rt, &pod, "stale", &[("WASMGATE_NODE", "elsewhere")])
        .await
        .unwrap();
    assert_eq!(c.env("WASMGATE_NODE").as_deref(), Some("worker-1"));
}

async fn configuration_changes_are_honoured(wasm: PathBuf) {
    let first = r#"node-name = "worker-1""#;
    let mut d = daemon(wasm, first);
    let (mut rt, mut im) = clients(d.cri_socket()).await;
    let pod = new_pod(&mut rt, &mut im).await;
    let c = create(&mut rt, &pod, "c", &[]).await.unwrap();
    assert_eq!(c.env("WASMGATE_NODE").as_deref(), Some("worker-1"));
    assert_eq!(c.annotation("wasmgate.io/node"), Some("worker-1"));

    // Other names and an explicit value, which wins over node-name and is trimmed.
    let names = r#"node-name = "worker-1", value = " zone-a ", env-name = "ZONE", annotation-key = "example.com/zone""#;
    reconfigure(&mut d, first, names);
    let (mut rt, mut im) = clients(d.cri_socket()).await;
    let pod = new_pod(&mut rt, &mut im).await;
    let c = create(&mut rt, &pod, "c", &[]).await.unwrap();
    assert_eq!(c.env("ZONE").as_deref(), Some("zone-a"));
    assert_eq!(c.annotation("example.com/zone"), Some("zone-a"));
    assert_eq!(c.env("WASMGATE_NODE"), None);
    assert_eq!(c.annotation("wasmgate.io/node"), None);

    // An empty annotation-key switches that half off.
    let env_only = r#"node-name = "worker-2", annotation-key = """#;
    reconfigure(&mut d, names, env_only);
    let (mut rt, mut im) = clients(d.cri_socket()).await;
    let pod = new_pod(&mut rt, &mut im).await;
    let c = create(&mut rt, &pod, "c", &[]).await.unwrap();
    assert_eq!(c.env("WASMGATE_NODE").as_deref(), Some("worker-2"));
    assert_eq!(c.annotation("wasmgate.io/node"), None);

    // Both halves off: the hook allows the call unchanged.
    let neither = r#"node-name = "worker-2", env-name = "", annotation-key = """#;
    reconfigure(&mut d, env_only, neither);
    let trace = cri::follow(&d, cri::cri_calls(None));
    let (mut rt, mut im) = clients(d.cri_socket()).await;
    let pod = new_pod(&mut rt, &mut im).await;
    let c = create(&mut rt, &pod, "c", &[("DEMO", "1")]).await.unwrap();
    assert_eq!(c.config_env, [("DEMO".to_string(), "1".to_string())]);
    assert!(c.annotations.is_empty(), "{c:?}");
    let rec = record_of(&trace, "CreateContainer");
    assert_eq!(decision(&rec, "pre"), Some("allow"), "{rec:?}");

    // A name the runtime could not set is denied, in the hook's words, and nothing is created.
    let bad = r#"node-name = "worker-2", env-name = "A=B""#;
    reconfigure(&mut d, neither, bad);
    let (mut rt, mut im) = clients(d.cri_socket()).await;
    let pod = new_pod(&mut rt, &mut im).await;
    let err = create(&mut rt, &pod, "c", &[]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        err.message(),
        r#"denied by hook inject: hook-inject: env-name "A=B" is not a valid environment variable name"#
    );
    let listed = cri::containers(&mut rt).await;
    assert!(listed.is_empty(), "{listed:?}");
}

/// The CRI method each hook event stands for.
fn method_of(event: &str) -> &'static str {
    match event {
        "run-pod" => "RunPodSandbox",
        "stop-pod" => "StopPodSandbox",
        "remove-pod" => "RemovePodSandbox",
        "create-container" => "CreateContainer",
        "start-container" => "StartContainer",
        "update-container" => "UpdateContainerResources",
        "stop-container" => "StopContainer",
        "remove-container" => "RemoveContainer",
        "pull-image" => "PullImage",
        other => panic!("unknown event {other}"),
    }
}

/// The events a hook component lists in `call`, `subscriptions()` or `post-subscriptions()`, as
/// the stock CLI prints them.
fn events(wasm: &PathBuf, call: &str) -> BTreeSet<String> {
    let out = cli(wasm, &[], call);
    out.trim_start_matches('[')
        .trim_end_matches(']')
        .split(", ")
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect()
}

async fn called_for_the_rust_hooks_subscriptions_only(wasm: PathBuf) {
    // What the original subscribes to, asked of it, not assumed; its README says create-container
    // before the runtime and nothing after.
    let rust = wasmgate_tests::plugin("hook-inject");
    let methods = |call: &str| -> BTreeSet<&'static str> {
        let expected = events(&rust, call);
        assert_eq!(events(&wasm, call), expected, "{call}");
        expected.iter().map(|e| method_of(e)).collect()
    };
    let pre = methods("subscriptions()");
    assert!(pre.contains("CreateContainer"), "{pre:?}");
    let post = methods("post-subscriptions()");

    let d = daemon(wasm, r#"value = "v""#);
    let trace = cri::follow(&d, cri::cri_calls(None));
    let (mut rt, mut im) = clients(d.cri_socket()).await;

    // Every hookable call of a pod's life, in kubelet's order.
    let pod = new_pod(&mut rt, &mut im).await;
    let cid = cri::create(&mut rt, &pod, pod_config(), container_config("c", &[]))
        .await
        .unwrap();
    cri::start(&mut rt, &cid).await;
    rt.update_container_resources(cri::cpu_shares(&cid, 512))
        .await
        .unwrap();
    cri::stop_and_remove_container(&mut rt, &cid).await;
    cri::stop_and_remove_pod(&mut rt, &pod).await;

    // Which calls the hook took part in, and in which phases, by the trace.
    let mut seen = BTreeMap::new();
    loop {
        let rec = cri::next_record(&trace);
        assert!(rec.ok, "{rec:?}");
        let phases: Vec<String> = rec
            .hooks
            .iter()
            .filter(|h| h.hook == "inject")
            .map(|h| h.phase.clone())
            .collect();
        seen.insert(rec.method.clone(), phases);
        if rec.method == "RemovePodSandbox" {
            break;
        }
    }
    for method in [
        "PullImage",
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "UpdateContainerResources",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ] {
        let phases = seen
            .get(method)
            .unwrap_or_else(|| panic!("no {method} in the trace: {seen:?}"));
        let expected: Vec<&str> = [("pre", &pre), ("post", &post)]
            .into_iter()
            .filter(|(_, wanted)| wanted.contains(method))
            .map(|(phase, _)| phase)
            .collect();
        assert_eq!(phases, &expected, "{method}: {seen:?}");
    }
}

// ---- the engine alone ------------------------------------------------------------------------

/// `n` strings of about 40 bytes, `tag-<i>-xxx…`.
fn strings(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{tag}-{i}-{}", "x".repeat(32)))
        .collect()
}

/// `n` pairs of a short key and a 200-byte value.
fn pairs(tag: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("{tag}_{i}"), "v".repeat(200)))
        .collect()
}

fn big_pod() -> wit::Pod {
    wit::Pod {
        id: "sandbox".into(),
        name: "p".into(),
        namespace: "default".into(),
        uid: "u".into(),
        labels: pairs("pod_label", 20),
        annotations: pairs("pod_annotation", 20),
        runtime_handler: "runc".into(),
    }
}

/// A request of about 150 KiB in many separately allocated strings, every list and string field
/// of the WIT request holding at least 4 KiB, so that leaking any one of them on every call
/// overruns the memory cap of the test below.
fn big_container() -> wit::Container {
    wit::Container {
        id: String::new(),
        name: "c".into(),
        image: "busybox".into(),
        command: strings("cmd", 100),
        args: strings("arg", 100),
        env: pairs("ENV", 200),
        mounts: (0..60)
            .map(|i| wit::Mount {
                container_path: format!("/data/{i}/{}", "m".repeat(24)),
                host_path: format!("/srv/{i}/{}", "h".repeat(24)),
                readonly: i % 2 == 0,
            })
            .collect(),
        devices: (0..40)
            .map(|i| wit::Device {
                container_path: format!("/dev/c{i}{}", "d".repeat(24)),
                host_path: format!("/dev/h{i}{}", "d".repeat(24)),
                permissions: "rwm".into(),
            })
            .collect(),
        resources: Some(wit::Resources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_bytes: 1 << 30,
            cpuset_cpus: "0,".repeat(2048),
            cpuset_mems: "0,".repeat(2048),
        }),
        security: wit::Security {
            privileged: false,
            run_as_user: Some(1000),
            add_capabilities: strings("CAP_ADD", 100),
            drop_capabilities: strings("CAP_DROP", 100),
            readonly_rootfs: true,
        },
        labels: pairs("label", 200),
        annotations: pairs("annotation", 200),
        working_dir: "/w".repeat(2048),
    }
}

fn big_image_request() -> wit::ImageRequest {
    wit::ImageRequest {
        image: format!("registry.example/{}", "i".repeat(4096)),
        annotations: pairs("image_annotation", 40),
        pod: Some(big_pod()),
    }
}

/// The guest frees every request and outcome it is handed and every decision it returns: one
/// instance, reused for call after call, answers 2000 pre and 2000 post calls with ~150 KiB
/// requests of every kind within 3 MiB of memory: a guest that kept the strings of one field of
/// one kind of request, 4 KiB a call, would need 4 MiB more.
async fn one_instance_serves_many_calls_without_leaking(wasm: PathBuf) {
    let dir = std::env::temp_dir().join(unique("wasmgate-inject-engine-"));
    let engine = WasmEngine::new(&EngineConfig {
        max_instances: 4,
        ..Default::default()
    })
    .unwrap();
    let registry = Registry::new(engine, dir.clone());
    let mut spec = PluginSpec::new("inject", wasm);
    spec.world = World::Runtime;
    spec.limits.memory_bytes = 3 << 20;
    spec.config.insert("node-name".into(), "worker-1".into());
    registry.load(spec).await.unwrap();
    let hook = registry.get("inject").unwrap();

    let kinds = [
        wit::Request::CreateContainer((big_pod(), big_container())),
        wit::Request::StartContainer((big_pod(), big_container())),
        wit::Request::RunPod(big_pod()),
        wit::Request::PullImage(big_image_request()),
    ];
    for i in 0..2000 {
        let req = kinds[i % kinds.len()].clone();
        let decision = hook
            .runtime(async |h, s| h.call_pre(s, &req).await)
            .await
            .unwrap_or_else(|e| panic!("pre call {i}: {e}"));
        match (&req, decision) {
            (wit::Request::CreateContainer(_), wit::Decision::Adjust(a)) => {
                let pair = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
                assert_eq!(a.env, pair("WASMGATE_NODE", "worker-1"));
                assert_eq!(a.annotations, pair("wasmgate.io/node", "worker-1"));
                assert!(
                    a.labels.is_empty()
                        && a.remove_env.is_empty()
                        && a.mounts.is_empty()
                        && a.resources.is_none()
                        && a.args.is_none()
                        && a.image.is_none(),
                    "call {i}: more than env and annotation: {a:?}"
                );
            }
            (wit::Request::CreateContainer(_), other) => panic!("call {i}: {other:?}"),
            (_, wit::Decision::Allow) => {}
            (_, other) => panic!("call {i}: {other:?}"),
        }
        let outcome = if i % 2 == 0 {
            wit::Outcome::Ok(format!("container-{i}-{}", "c".repeat(8192)))
        } else {
            wit::Outcome::Failed((6, "x".repeat(8192)))
        };
        hook.runtime(async |h, s| h.call_post(s, &req, &outcome).await)
            .await
            .unwrap_or_else(|e| panic!("post call {i}: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the stock wasmtime CLI ------------------------------------------------------------------

/// `wasmtime run -S keyvalue -S config [-S config-var=K=V]... --invoke CALL <wasm>`: the WAVE
/// value it prints.
fn cli(wasm: &PathBuf, config: &[(&str, &str)], call: &str) -> String {
    let mut cmd = Command::new(wasmtime_cli());
    cmd.args(["run", "-S", "keyvalue", "-S", "config"]);
    for (k, v) in config {
        cmd.arg("-S").arg(format!("config-var={k}={v}"));
    }
    let out = cmd.args(["--invoke", call]).arg(wasm).output().unwrap();
    assert!(
        out.status.success(),
        "wasmtime --invoke {call} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const POD: &str = r#"{id: "", name: "p", namespace: "default", uid: "u", labels: [], annotations: [], runtime-handler: ""}"#;
const CTR: &str = r#"{id: "", name: "c", image: "busybox", command: [], args: [], env: [], mounts: [], devices: [], resources: none, security: {privileged: false, run-as-user: none, add-capabilities: [], drop-capabilities: [], readonly-rootfs: false}, labels: [], annotations: [], working-dir: ""}"#;

fn create_call() -> String {
    format!("pre(create-container(({POD}, {CTR})))")
}

/// `s` as a WAVE string literal.
fn wave(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The printed `adjust(...)` setting `env` and `annotation` (each when given), nothing else.
/// WAVE leaves out the trailing `none` options (resources, args, image).
fn adjust(env: Option<(&str, &str)>, annotation: Option<(&str, &str)>) -> String {
    let map = |kv: Option<(&str, &str)>| match kv {
        Some((k, v)) => format!("[({}, {})]", wave(k), wave(v)),
        None => "[]".into(),
    };
    format!(
        "adjust({{annotations: {}, remove-annotations: [], labels: [], remove-labels: [], env: {}, remove-env: [], mounts: [], remove-mounts: [], devices: [], remove-devices: []}})",
        map(annotation),
        map(env)
    )
}

fn stock_cli_answers_as_the_readme_says(wasm: PathBuf) {
    let create = create_call();
    assert_eq!(cli(&wasm, &[], "subscriptions()"), "[create-container]");
    assert_eq!(cli(&wasm, &[], "post-subscriptions()"), "[]");
    assert_eq!(
        cli(&wasm, &[], &create),
        adjust(
            Some(("WASMGATE_NODE", "unknown")),
            Some(("wasmgate.io/node", "unknown"))
        )
    );
    let node = ("node-name", "worker-1");
    assert_eq!(
        cli(&wasm, &[node], &create),
        adjust(
            Some(("WASMGATE_NODE", "worker-1")),
            Some(("wasmgate.io/node", "worker-1"))
        )
    );
    assert_eq!(
        cli(
            &wasm,
            &[
                node,
                ("value", " zone-a "),
                ("env-name", "ZONE"),
                ("annotation-key", "example.com/zone")
            ],
            &create
        ),
        adjust(
            Some(("ZONE", "zone-a")),
            Some(("example.com/zone", "zone-a"))
        )
    );
    assert_eq!(
        cli(&wasm, &[node, ("annotation-key", "")], &create),
        adjust(Some(("WASMGATE_NODE", "worker-1")), None)
    );
    assert_eq!(
        cli(&wasm, &[node, ("env-name", "")], &create),
        adjust(None, Some(("wasmgate.io/node", "worker-1")))
    );
    assert_eq!(
        cli(&wasm, &[("env-name", ""), ("annotation-key", "")], &create),
        "allow"
    );
    assert_eq!(
        cli(&wasm, &[("env-name", "A=B")], &create),
        format!(
            "deny({})",
            wave(r#"hook-inject: env-name "A=B" is not a valid environment variable name"#)
        )
    );
    assert_eq!(
        cli(&wasm, &[node], &format!("pre(run-pod({POD}))")),
        "allow"
    );
    assert_eq!(
        cli(
            &wasm,
            &[node],
            &format!(r#"pre(pull-image({{image: "busybox", annotations: [], pod: some({POD})}}))"#)
        ),
        "allow"
    );
    // post returns nothing (the CLI prints the empty result as `()`) and must not trap.
    let post = cli(
        &wasm,
        &[node],
        &format!(r#"post(create-container(({POD}, {CTR})), failed((6, "already exists")))"#),
    );
    assert!(post.is_empty() || post == "()", "{post}");
}

// ---- across implementations ------------------------------------------------------------------

/// Odd configurations and requests, where a port would most likely drift: Unicode white space
/// around values, escapes in the deny message, an empty value, requests it does not act on.
#[test]
fn c_answers_exactly_as_rust_under_the_cli() {
    let rust = wasmgate_tests::plugin("hook-inject");
    let c = wasmgate_tests::lang::c::plugin("hook-inject");
    let create = create_call();
    let start = format!("pre(start-container(({POD}, {CTR})))");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("value", "\u{3000}\u{a0} zone \u{2028}\t")], &create),
        (vec![("value", "   "), ("node-name", "n")], &create),
        (vec![("node-name", " \u{85}n\u{2003}")], &create),
        (vec![("value", "caf\u{e9} \u{1f600}")], &create),
        (
            vec![("env-name", " K "), ("annotation-key", " a/b ")],
            &create,
        ),
        (
            vec![("env-name", "A=B\t\"q\"\\\u{1}\u{7f}\u{9b}\u{e9}")],
            &create,
        ),
        (vec![("env-name", "=")], &create),
        (
            vec![("env-name", "\u{a0}"), ("annotation-key", "\u{3000}")],
            &create,
        ),
        (vec![("env-name", "A=B"), ("annotation-key", "")], &create),
        (vec![("node-name", "n")], &start),
    ];
    for (config, call) in &cases {
        let (r, c) = (cli(&rust, config, call), cli(&c, config, call));
        assert_eq!(c, r, "config {config:?}, {call}");
    }
}

/// The C port's unit tests (plugins/c/hook-inject/test), natively with ASan and UBSan: the Rust
/// hook's `cargo test` cases, an unreadable key included, which no host here can provoke.
#[test]
fn c_unit_tests_pass() {
    let out = wasmgate_tests::lang::c::unit_tests("hook-inject");
    let summary = out
        .lines()
        .find(|l| l.starts_with("inject_test: "))
        .unwrap_or_else(|| panic!("no test summary in {out}"));
    assert!(summary.ends_with(" 0 failed"), "{summary}");
}
