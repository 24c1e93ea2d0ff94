//! What the host's grant checks cost one call: a network plugin's plan and reported result
//! (`validate` + `check_result`) for the ADD that section (b) makes, and a runtime hook's
//! adjustment (`HookGrant::check`) of the kind `hook-inject` returns, with a granted mount.

use std::time::Instant;

use anyhow::{Context, Result};
use wasmgate_cni::plan::{Attachment, Route, Target, Veth};
use wasmgate_cni::result::{CniResult, Interface, IpConfig};
use wasmgate_daemon::cri::HookGrant;
use wasmgate_effects::{NetPolicy, check_result, validate};
use wasmgate_engine::bindings::cri_types as cri;

/// The budget the issue sets for the checks on one call.
pub const BUDGET_US: f64 = 5.0;

/// Median µs of the network and the hook check, `iters` calls each, interleaved in blocks.
pub fn measure(iters: usize) -> Result<(f64, f64)> {
    let (target, plan, policy, result) = network_call();
    let (grant, adjustment, request) = hook_call()?;
    // Both must pass, or the loop would time the refusal path.
    validate(&target, &plan, &policy).context("the bench plan is refused")?;
    check_result(&target, Some(&plan), &result, None).context("the bench result is refused")?;
    grant
        .check("inject", &adjustment, &request)
        .map_err(anyhow::Error::msg)
        .context("the bench adjustment is refused")?;
    const BLOCK: usize = 100;
    let (mut net, mut hook) = (Vec::new(), Vec::new());
    for _ in 0..iters.div_ceil(BLOCK) {
        let t = Instant::now();
        for _ in 0..BLOCK {
            let ok = validate(&target, &plan, &policy).is_ok()
                && check_result(&target, Some(&plan), &result, None).is_ok();
            std::hint::black_box(ok);
        }
        net.push(t.elapsed().as_secs_f64() * 1e6 / BLOCK as f64);
        let t = Instant::now();
        for _ in 0..BLOCK {
            std::hint::black_box(grant.check("inject", &adjustment, &request).is_ok());
        }
        hook.push(t.elapsed().as_secs_f64() * 1e6 / BLOCK as f64);
    }
    Ok((median(&mut net), median(&mut hook)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The point-to-point ADD of section (b): a /24 address, a default route, the host veth's /32
/// and the host route back to the pod.
fn network_call() -> (Target, Attachment, NetPolicy, CniResult) {
    let route = |dst: &str, gw: Option<&str>| Route {
        dst: dst.into(),
        gw: gw.map(Into::into),
        ..Route::default()
    };
    let target = Target {
        netns: "/var/run/netns/bench".into(),
        ifname: "eth0".into(),
    };
    let plan = Attachment {
        veth: Veth {
            host_name: "wgb1a2b3c".into(),
            mtu: Some(1500),
            host_addresses: vec!["10.240.0.1/32".into()],
        },
        bridge: None,
        container_addresses: vec!["10.240.0.5/24".into()],
        container_routes: vec![
            route("10.240.0.1/32", None),
            route("0.0.0.0/0", Some("10.240.0.1")),
        ],
        host_routes: vec![route("10.240.0.5/32", None)],
    };
    let policy = NetPolicy {
        allowed_bridges: vec!["wgbr0".into()],
        host_prefix: Some("wg".into()),
        pod_cidrs: vec!["10.240.0.0/16".parse().unwrap()],
    };
    let result = CniResult {
        cni_version: "1.1.0".into(),
        interfaces: vec![
            Interface {
                name: "wgb1a2b3c".into(),
                ..Interface::default()
            },
            Interface {
                name: "eth0".into(),
                sandbox: Some(target.netns.clone()),
                ..Interface::default()
            },
        ],
        ips: vec![IpConfig {
            address: "10.240.0.5/24".into(),
            gateway: Some("10.240.0.1".into()),
            interface: Some(1),
        }],
        ..CniResult::default()
    };
    (target, plan, policy, result)
}

/// A CreateContainer and the adjustment an injecting hook returns for it: two annotations, two
/// env vars and a read-only mount under the granted prefix.
fn hook_call() -> Result<(HookGrant, cri::Adjustment, cri::Request)> {
    let grant = HookGrant {
        mounts: vec!["/var/lib/hook-data".into()],
        ..HookGrant::default()
    };
    grant.validate()?;
    let pod = cri::Pod {
        id: "p1".into(),
        name: "web".into(),
        namespace: "default".into(),
        uid: "u1".into(),
        labels: vec![("app".into(), "web".into())],
        annotations: vec![],
        runtime_handler: String::new(),
    };
    let container = cri::Container {
        id: String::new(),
        name: "nginx".into(),
        image: "docker.io/library/nginx:1.27".into(),
        command: vec![],
        args: vec![],
        env: vec![("PORT".into(), "80".into())],
        mounts: vec![cri::Mount {
            container_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            host_path: "/var/lib/kubelet/pods/u1/volumes/token".into(),
            readonly: true,
        }],
        devices: vec![],
        resources: None,
        security: cri::Security {
            privileged: false,
            run_as_user: Some(1000),
            add_capabilities: vec![],
            drop_capabilities: vec!["ALL".into()],
            readonly_rootfs: true,
        },
        labels: vec![],
        annotations: vec![],
        working_dir: String::new(),
    };
    let adjustment = cri::Adjustment {
        annotations: vec![
            ("wasmgate.io/node".into(), "worker-1".into()),
            ("wasmgate.io/zone".into(), "a".into()),
        ],
        remove_annotations: vec![],
        labels: vec![],
        remove_labels: vec![],
        env: vec![
            ("WASMGATE_NODE".into(), "worker-1".into()),
            ("ZONE".into(), "a".into()),
        ],
        remove_env: vec![],
        mounts: vec![cri::Mount {
            container_path: "/hook-data".into(),
            host_path: "/var/lib/hook-data/web".into(),
            readonly: true,
        }],
        remove_mounts: vec![],
        devices: vec![],
        remove_devices: vec![],
        resources: None,
        args: None,
        image: None,
    };
    Ok((
        grant,
        adjustment,
        cri::Request::CreateContainer((pod, container)),
    ))
}
