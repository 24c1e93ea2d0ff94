//! Test fixture for the host's sandbox limits: a network plugin whose ADD misbehaves as the
//! `wasi:config` key `mode` says. `trap` panics, `loop` spins forever, `oom` allocates without
//! bound, `count` reports how many ADDs its instance has served (`count-trap` panics on the
//! third, `count-slow` first sleeps 100 ms, so that calls overlap), anything else succeeds with an empty result and no attachment. DEL, CHECK, STATUS and GC
//! always succeed, so the daemon's other paths can be exercised around a bad ADD.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "wasmgate:plugin/network-plugin@0.1.0",
    generate_all,
});

use exports::wasmgate::plugin::network::Guest;
use wasmgate::plugin::cni_types::{
    AddOutcome, Attachment, AttachmentRef, CniError, CniResult, Dns, Invocation, NetConf,
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

    fn add(conf: NetConf, _call: Invocation) -> Result<AddOutcome, CniError> {
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

export!(Plugin);
