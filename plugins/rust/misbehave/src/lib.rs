//! Test fixture for the host's sandbox limits: a network plugin whose ADD misbehaves as the
//! `wasi:config` key `mode` says. `trap` panics, `loop` spins forever, `oom` allocates without
//! bound, `count` reports how many ADDs its instance has served (`count-trap` panics on the
//! third, `count-slow` first sleeps 100 ms, so that calls overlap), `plan` returns whatever
//! attachment and result the network config's `plan` and `result` keys spell out (the attacks on
//! the host's plan check), anything else succeeds with an empty result and no attachment. DEL,
//! CHECK, STATUS and GC always succeed, so the daemon's other paths can be exercised around a
//! bad ADD.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "wasmgate:plugin/network-plugin@0.1.0",
    generate_all,
});

use exports::wasmgate::plugin::network::Guest;
use serde_json::Value;
use wasmgate::plugin::cni_types::{
    AddOutcome, Attachment, AttachmentRef, Bridge, CniError, CniInterface, CniResult, Dns,
    Invocation, IpConfig, NetConf, Route, Veth,
};

struct Plugin;

/// ADDs this instance has served: what tells a reused instance from a new one.
static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A successful ADD that builds nothing; what the fixture wants to report rides in `dns`.
fn answer(domain: Option<String>, options: Vec<String>) -> AddOutcome {
    let dns = (domain.is_some() || !options.is_empty()).then(|| Dns {
        nameservers: vec![],
        domain,
        search: vec![],
        options,
    });
    AddOutcome {
        result: CniResult {
            interfaces: vec![],
            ips: vec![],
            routes: vec![],
            dns,
        },
        attachment: None,
    }
}

fn mode() -> String {
    wasi::config::store::get("mode")
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl Guest for Plugin {
    fn versions() -> Vec<String> {
        ["0.4.0", "1.0.0", "1.1.0"].map(String::from).to_vec()
    }

    fn add(conf: NetConf, call: Invocation) -> Result<AddOutcome, CniError> {
        let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match mode().as_str() {
            "count" => Ok(answer(Some(calls.to_string()), vec![])),
            "count-trap" if calls == 3 => panic!("misbehave asked to trap on call 3"),
            "count-trap" => Ok(answer(Some(calls.to_string()), vec![])),
            "count-slow" => {
                std::thread::sleep(std::time::Duration::from_millis(100));
                Ok(answer(Some(calls.to_string()), vec![]))
            }
            "trap" => panic!("misbehave asked to trap"),
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
            // Hands the config it was given back in `dns.domain`, so tests can see exactly what
            // reached the plugin (unknown keys included).
            "echo" => Ok(answer(Some(conf.raw), vec![])),
            // Reports what ambient authority the sandbox left it: the host grants none, so every
            // probe must come back empty or refused.
            "probe" => {
                let env = std::env::vars().count();
                let args = std::env::args().count();
                let fs = std::fs::read_dir("/").is_ok() || std::fs::read("/etc/hostname").is_ok();
                let net = std::net::TcpStream::connect("127.0.0.1:1").map_err(|e| e.kind());
                let net = match net {
                    Ok(_) => "connected".to_string(),
                    Err(k) => format!("{k:?}"),
                };
                Ok(answer(
                    None,
                    vec![
                        format!("env={env}"),
                        format!("args={args}"),
                        format!("fs={fs}"),
                        format!("net={net}"),
                    ],
                ))
            }
            "plan" => planned(&conf.raw, &call),
            _ => Ok(answer(None, vec![])),
        }
    }

    fn del(_conf: NetConf, _call: Invocation) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_conf: NetConf, _call: Invocation) -> Result<Option<Attachment>, CniError> {
        Ok(None)
    }

    fn status(_conf: NetConf) -> Result<(), CniError> {
        Ok(())
    }

    fn gc(_conf: NetConf, _valid: Vec<AttachmentRef>) -> Result<Vec<AttachmentRef>, CniError> {
        Ok(vec![])
    }
}

/// Mode `plan`: the attachment is the config's `plan` object, in the plan's JSON shape
/// (`veth.host_name`, `veth.host_addresses`, `bridge.name`, `bridge.addresses`,
/// `container_addresses`, `container_routes`, `host_routes`; routes as `{dst, gw, table, scope,
/// priority}`). The result reports the host veth, then the container interface, and `ips` is the
/// config's `result_ips` (a list of CIDRs) or else the plan's container addresses, all on the
/// container interface.
fn planned(raw: &str, call: &Invocation) -> Result<AddOutcome, CniError> {
    let bad = |msg: String| CniError {
        code: 7,
        msg,
        details: String::new(),
    };
    let conf: Value = serde_json::from_str(raw).map_err(|e| bad(format!("config: {e}")))?;
    let plan = conf
        .get("plan")
        .ok_or_else(|| bad("mode plan needs a plan object".into()))?;
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).map(|n| n as u32);
    let routes = |v: Option<&Value>| -> Vec<Route> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| Route {
                        dst: r.get("dst").and_then(Value::as_str).unwrap_or("").into(),
                        gw: r.get("gw").and_then(Value::as_str).map(String::from),
                        mtu: number(r, "mtu"),
                        priority: number(r, "priority"),
                        table: number(r, "table"),
                        scope: number(r, "scope"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let veth = plan.get("veth").cloned().unwrap_or(Value::Null);
    let host_name = veth
        .get("host_name")
        .and_then(Value::as_str)
        .unwrap_or("wgmisbehave")
        .to_string();
    let attachment = Attachment {
        veth: Veth {
            host_name: host_name.clone(),
            mtu: None,
            host_addresses: strings(veth.get("host_addresses")),
        },
        bridge: plan
            .get("bridge")
            .filter(|b| b.is_object())
            .map(|b| Bridge {
                name: b.get("name").and_then(Value::as_str).unwrap_or("").into(),
                addresses: strings(b.get("addresses")),
                mtu: None,
            }),
        container_addresses: strings(plan.get("container_addresses")),
        container_routes: routes(plan.get("container_routes")),
        host_routes: routes(plan.get("host_routes")),
    };
    let ips = match conf.get("result_ips") {
        Some(v) => strings(Some(v)),
        None => attachment.container_addresses.clone(),
    };
    Ok(AddOutcome {
        result: CniResult {
            interfaces: vec![
                CniInterface {
                    name: host_name,
                    mac: None,
                    mtu: None,
                    sandbox: None,
                },
                CniInterface {
                    name: call.ifname.clone(),
                    mac: None,
                    mtu: None,
                    sandbox: Some(call.netns.clone()),
                },
            ],
            ips: ips
                .into_iter()
                .map(|address| IpConfig {
                    address,
                    gateway: None,
                    iface: Some(1),
                })
                .collect(),
            routes: vec![],
            dns: None,
        },
        attachment: Some(attachment),
    })
}

export!(Plugin);
