//! The CRI "policy" runtime hook, in every language it is written in, held to one behaviour.
//!
//! `plugins/rust/hook-policy` and its port `plugins/js/hook-policy` must decide alike: the checks
//! below are written once and [`for_each_implementation!`] instantiates them for each, as
//! `through_the_daemon::<lang>` (kubelet's view: CRI calls to a real daemon that runs the hook in
//! front of the builtin runtime) and `under_the_stock_wasmtime_cli::<lang>` (a plugin author's
//! view: `wasmtime run --invoke`, as the READMEs show it).
//!
//! Each implementation gets one daemon: a JavaScript component is ~14 MB of SpiderMonkey that
//! takes 20-30 s to compile (once, into the shared cache), so the daemon checks are grouped into
//! one test rather than spread over many daemons.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use tonic::Code;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, Rt, run_pod, secured_container};
use wasmgate_tests::{Daemon, wasmtime_cli};

/// Instantiates every check for each implementation, `$lang => <expression giving the .wasm>`,
/// as `<check>::<lang>`. A new port of the hook is one more line here, and gets every check.
macro_rules! for_each_implementation {
    ($($lang:ident => $component:expr),* $(,)?) => {
        mod through_the_daemon {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $lang() {
                    super::daemon_checks($component).await;
                }
            )*
        }

        mod under_the_stock_wasmtime_cli {
            $(
                #[test]
                fn $lang() {
                    super::cli_checks($component);
                }
            )*
        }
    };
}

for_each_implementation! {
    rust => wasmgate_tests::plugin("hook-policy"),
    js => wasmgate_tests::lang::js::plugin("hook-policy"),
}

/// Runs `f` while no other check of this file compiles a component. The first compile of the
/// JS component (by the daemon into the shared cache, or by the CLI into its own) keeps both
/// cores busy for half a minute; two at once could push the daemon past its start-up deadline.
fn compiling<T>(f: impl FnOnce() -> T) -> T {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    f()
}

// ---- through the daemon ----

/// The hook's config in the daemon: commas here (the CLI checks use spaces), and `CAP_`-less
/// upper case, while the requests below spell capabilities otherwise.
const HOOK_CONFIG: &str = "config = { allowed-namespaces = \"kube-system, monitoring\", deny-capabilities = \"SYS_ADMIN,NET_ADMIN\" }";
const ALLOWED: &str = "(allowed: kube-system, monitoring)";

/// CreateContainer as kubelet sends it: with the pod's config, where the namespace is.
async fn create(
    rt: &mut Rt,
    pod: &str,
    namespace: &str,
    c: pb::ContainerConfig,
) -> Result<String, tonic::Status> {
    let name = c.metadata.as_ref().unwrap().name.clone();
    let sandbox = cri::pod_config(&format!("pod-of-{name}"), namespace);
    cri::create(rt, pod, sandbox, c).await
}

/// Refused by the hook: PERMISSION_DENIED, naming the hook, with its reason word for word.
fn assert_denied(result: Result<String, tonic::Status>, reason: &str) {
    let status = result.expect_err("the hook should have denied this container");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        format!("denied by hook policy: {reason}"),
        "{status:?}"
    );
}

/// Every privileged and capability case, an ordinary container's whole lifecycle, and, from
/// the daemon's trace, that only CreateContainer ever reached the hook.
async fn daemon_checks(component: PathBuf) {
    let (d, up) = compiling(|| {
        let started = Instant::now();
        let d = Daemon::start_proxy("builtin", &[("policy", component, HOOK_CONFIG)]);
        (d, started.elapsed())
    });
    // How long loading took (compiling, unless `cached`), for whoever reads the output.
    eprintln!(
        "daemon up in {up:?}; {}",
        tokio::task::block_in_place(|| d.listed("policy"))
    );
    let trace = cri::follow(&d, cri::cri_calls(None));
    let (mut rt, mut im) = cri::clients(d.cri_socket()).await;

    cri::pull(&mut im, cri::BUSYBOX).await;
    let web = run_pod(&mut rt, "web", "default").await;
    let agent = run_pod(&mut rt, "agent", "monitoring").await;

    // A privileged container outside the allow-list is refused with the hook's reason...
    assert_denied(
        create(
            &mut rt,
            &web,
            "default",
            secured_container("root", true, &[]),
        )
        .await,
        &format!("privileged containers are not allowed in namespace \"default\" {ALLOWED}"),
    );
    // ...and created in an allow-listed namespace.
    create(
        &mut rt,
        &agent,
        "monitoring",
        secured_container("root", true, &[]),
    )
    .await
    .expect("a privileged container in an allow-listed namespace");

    // A denied capability is refused, however kubelet spells it...
    assert_denied(
        create(
            &mut rt,
            &web,
            "default",
            secured_container("netadm", false, &["CHOWN", "cap_net_admin"]),
        )
        .await,
        &format!("capability NET_ADMIN is not allowed in namespace \"default\" {ALLOWED}"),
    );
    // ...while one that is not on the list passes.
    create(
        &mut rt,
        &web,
        "default",
        secured_container("chown", false, &["CHOWN"]),
    )
    .await
    .expect("a container adding only CHOWN");

    // An ordinary container passes, and goes through its whole lifecycle: every other event
    // the hook could have subscribed to happens once.
    let app = create(
        &mut rt,
        &web,
        "default",
        secured_container("app", false, &[]),
    )
    .await
    .expect("an ordinary container");
    cri::start(&mut rt, &app).await;
    rt.update_container_resources(cri::cpu_shares(&app, 512))
        .await
        .unwrap();
    cri::stop_and_remove_container(&mut rt, &app).await;
    for pod in [&web, &agent] {
        cri::stop_and_remove_pod(&mut rt, pod).await;
    }
    // The last call, so that its record marks the end of the trace to read.
    rt.version(pb::VersionRequest::default()).await.unwrap();

    let mut records = Vec::new();
    loop {
        let rec = cri::next_record(&trace);
        if rec.method == "Version" {
            break;
        }
        records.push(rec);
    }

    // Subscriptions: the hook took part in every CreateContainer and in nothing else.
    let methods: BTreeSet<&str> = records.iter().map(|r| r.method.as_str()).collect();
    for m in [
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
        assert!(methods.contains(m), "no {m} in the trace: {records:#?}");
    }
    let mut decisions = Vec::new();
    for rec in &records {
        let ours: Vec<_> = rec.hooks.iter().filter(|h| h.hook == "policy").collect();
        if rec.method == "CreateContainer" {
            let pre: Vec<_> = ours.iter().filter(|h| h.phase == "pre").collect();
            assert_eq!(pre.len(), 1, "{rec:?}");
            eprintln!(
                "CreateContainer {}: {} in {} us",
                rec.ids["container_name"], pre[0].decision, pre[0].elapsed_us
            );
            decisions.push((rec.ids["container_name"].clone(), pre[0].decision.clone()));
        } else {
            assert!(ours.is_empty(), "the hook ran for {}: {rec:?}", rec.method);
        }
    }
    // The trace agrees with what the caller saw, call by call.
    let expect = [
        (
            "root",
            format!(
                "deny: privileged containers are not allowed in namespace \"default\" {ALLOWED}"
            ),
        ),
        ("root", "allow".to_string()),
        (
            "netadm",
            format!("deny: capability NET_ADMIN is not allowed in namespace \"default\" {ALLOWED}"),
        ),
        ("chown", "allow".to_string()),
        ("app", "allow".to_string()),
    ];
    let expect: Vec<(String, String)> = expect
        .into_iter()
        .map(|(c, d)| (c.to_string(), d))
        .collect();
    assert_eq!(decisions, expect);
}

// ---- under the stock wasmtime CLI ----

/// A pod in `namespace`, in WAVE.
fn pod(namespace: &str) -> String {
    format!(
        r#"{{id: "", name: "p", namespace: "{namespace}", uid: "u", labels: [], annotations: [], runtime-handler: ""}}"#
    )
}

/// A container, in WAVE.
fn container(privileged: bool, add: &[&str]) -> String {
    let add: Vec<String> = add.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"{{id: "", name: "c", image: "busybox", command: [], args: [], env: [], mounts: [], devices: [], resources: none, security: {{privileged: {privileged}, run-as-user: none, add-capabilities: [{}], drop-capabilities: [], readonly-rootfs: false}}, labels: [], annotations: [], working-dir: ""}}"#,
        add.join(", ")
    )
}

fn create_request(namespace: &str, privileged: bool, add: &[&str]) -> String {
    format!(
        "create-container(({}, {}))",
        pod(namespace),
        container(privileged, add)
    )
}

/// `wasmtime run -S keyvalue -S config <extra> --invoke <call> <component>`: what it printed.
/// The world imports wasi:keyvalue; a JS component keeps every import of its world, so
/// `-S keyvalue` is needed for it, and harmless for the Rust one, which drops it.
fn invoke(component: &PathBuf, extra: &[&str], call: &str) -> String {
    let out = Command::new(wasmtime_cli())
        // The CLI caches compiled components by default; asked for explicitly because every
        // run after the first of a ~14 MB JS component depends on it (seconds, not a fraction).
        .args(["run", "-C", "cache=y", "-S", "keyvalue", "-S", "config"])
        .args(extra)
        .args(["--invoke", call])
        .arg(component)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wasmtime {extra:?} --invoke {call} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The README's commands, run one after the other so that the first compiles and caches the
/// component for the rest.
fn cli_checks(component: PathBuf) {
    let deny_privileged = |ns: &str, allowed: &str| {
        format!(
            r#"deny("privileged containers are not allowed in namespace \"{ns}\" (allowed: {allowed})")"#
        )
    };
    let cases: Vec<(Vec<&str>, String, String)> = vec![
        (vec![], "subscriptions()".into(), "[create-container]".into()),
        (vec![], "post-subscriptions()".into(), "[]".into()),
        (
            vec!["-S", "config-var=allowed-namespaces=kube-system"],
            format!("pre({})", create_request("default", true, &[])),
            deny_privileged("default", "kube-system"),
        ),
        // The default allow-list is kube-system.
        (
            vec![],
            format!("pre({})", create_request("kube-system", true, &[])),
            "allow".into(),
        ),
        // Spaces separate, since the CLI splits -S at commas; the config replaces the default.
        (
            vec!["-S", "config-var=allowed-namespaces=monitoring ci"],
            format!("pre({})", create_request("kube-system", true, &[])),
            deny_privileged("kube-system", "monitoring, ci"),
        ),
        (
            vec!["-S", "config-var=allowed-namespaces="],
            format!("pre({})", create_request("kube-system", true, &[])),
            deny_privileged("kube-system", "none"),
        ),
        // No capability is denied by default...
        (
            vec![],
            format!(
                "pre({})",
                create_request("default", false, &["CHOWN", "CAP_SYS_ADMIN"])
            ),
            "allow".into(),
        ),
        // ...and a denied one is named in its canonical spelling.
        (
            vec!["-S", "config-var=deny-capabilities=sys_admin NET_ADMIN"],
            format!(
                "pre({})",
                create_request("default", false, &["CHOWN", "CAP_SYS_ADMIN"])
            ),
            r#"deny("capability SYS_ADMIN is not allowed in namespace \"default\" (allowed: kube-system)")"#
                .into(),
        ),
        (
            vec![],
            format!("pre(run-pod({}))", pod("default")),
            "allow".into(),
        ),
        (
            vec![],
            format!(
                "post({}, %ok(\"c1\"))",
                create_request("default", true, &[])
            ),
            "()".into(),
        ),
    ];
    for (i, (extra, call, expected)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let out = if i == 0 {
            compiling(|| invoke(&component, &extra, &call))
        } else {
            invoke(&component, &extra, &call)
        };
        eprintln!("{extra:?} {call} -> {out} ({:?})", started.elapsed());
        assert_eq!(out, expected, "wasmtime {extra:?} --invoke '{call}'");
    }
}
