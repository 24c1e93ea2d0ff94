//! `{{name}}`: a wasmgate network plugin (CNI), a Wasm component of `{{world_id}}`.
//!
//! The host (or the stock `wasmtime run -S keyvalue -S config`) calls one export of
//! `wasmgate:plugin/network` per CNI command. Any instance may serve any call, and the host may
//! give each call a new one, so anything that must last goes in `wasi:keyvalue`. The plugin never touches netlink: ADD answers with a plan (an
//! [`Attachment`]) that the host checks against the call and its grant, then builds.
//!
//! What it does, as `wasmgate plugin new` wrote it:
//! - ADD: a veth pair, `wg` + 12 hex digits on the host and `CNI_IFNAME` in the pod, no bridge;
//!   the pod's address is `IP` from `CNI_ARGS` (e.g. `IP=10.240.0.5/24`), none without it.
//!   Real IPAM keeps its allocations in `wasi:keyvalue` (see wasmgate's
//!   `plugins/rust/bridge-ipam`);
//! - DEL: nothing to free (the host removes the veth it built); it must succeed when there is
//!   nothing to do;
//! - CHECK: the same plan, for the host to find in the kernel;
//! - STATUS: ready; GC: nothing to release.

wit_bindgen::generate!({
    path: "wit",
    world: "{{world_id}}",
    generate_all,
    // The unit tests compare answers whole.
    additional_derives: [PartialEq],
});

use exports::wasmgate::plugin::network::Guest;
use wasmgate::plugin::cni_types::{
    AddOutcome, Attachment, AttachmentRef, CniError, CniInterface, CniResult, Invocation, IpConfig,
    NetConf, Veth,
};

/// The cniVersions this plugin speaks; the host refuses a call in any other with code 1.
const VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// CNI error code 4: a necessary environment variable (here `CNI_ARGS`) is invalid.
const INVALID_ENV: u32 = 4;

/// The exported component.
struct Plugin;

impl Guest for Plugin {
    fn versions() -> Vec<String> {
        VERSIONS.iter().map(|v| v.to_string()).collect()
    }

    fn add(_conf: NetConf, call: Invocation) -> Result<AddOutcome, CniError> {
        let attachment = attachment(&call)?;
        Ok(AddOutcome {
            result: result(&call, &attachment),
            attachment: Some(attachment),
        })
    }

    fn del(_conf: NetConf, _call: Invocation) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_conf: NetConf, call: Invocation) -> Result<Option<Attachment>, CniError> {
        attachment(&call).map(Some)
    }

    fn status(_conf: NetConf) -> Result<(), CniError> {
        Ok(())
    }

    fn gc(_conf: NetConf, _valid: Vec<AttachmentRef>) -> Result<Vec<AttachmentRef>, CniError> {
        Ok(vec![])
    }
}

export!(Plugin);

/// The plan for this call. It depends on the call alone, so CHECK rebuilds what ADD asked for.
fn attachment(call: &Invocation) -> Result<Attachment, CniError> {
    Ok(Attachment {
        veth: Veth {
            host_name: host_veth_name(&call.container_id, &call.ifname),
            mtu: None,
            host_addresses: vec![],
        },
        bridge: None,
        container_addresses: pod_address(call)?.into_iter().collect(),
        container_routes: vec![],
        host_routes: vec![],
    })
}

/// The CNI result the runtime gets; the host fills in the MACs once it has built the veth.
fn result(call: &Invocation, plan: &Attachment) -> CniResult {
    CniResult {
        interfaces: vec![
            CniInterface {
                name: plan.veth.host_name.clone(),
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
        ips: plan
            .container_addresses
            .iter()
            .map(|address| IpConfig {
                address: address.clone(),
                gateway: None,
                // The pod's interface, the second of `interfaces`.
                iface: Some(1),
            })
            .collect(),
        routes: vec![],
        dns: None,
    }
}

/// `IP` from `CNI_ARGS`: an address with its prefix length.
fn pod_address(call: &Invocation) -> Result<Option<String>, CniError> {
    let Some((_, ip)) = call.args.iter().find(|(k, _)| k == "IP") else {
        return Ok(None);
    };
    let valid = ip.split_once('/').is_some_and(|(addr, len)| {
        let max = match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => return false,
        };
        len.bytes().all(|b| b.is_ascii_digit()) && len.parse::<u8>().is_ok_and(|len| len <= max)
    });
    if !valid {
        return Err(CniError {
            code: INVALID_ENV,
            msg: format!(
                "CNI_ARGS IP {ip:?} is not an address with a prefix length, e.g. 10.240.0.5/24"
            ),
            details: String::new(),
        });
    }
    Ok(Some(ip.clone()))
}

/// The host end's name: DEL and CHECK may run in instances with no memory of the ADD, so it is
/// derived from the call: `wg` (the daemon's default `host_prefix`) + 12 hex digits of FNV-1a-64
/// over `<container-id>/<ifname>`, 14 bytes, within Linux's 15.
fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let hash = format!("{container_id}/{ifname}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("wg{:012x}", hash >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[(&str, &str)]) -> Invocation {
        Invocation {
            container_id: "c1".into(),
            netns: "/var/run/netns/x".into(),
            ifname: "eth0".into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_host_veth_name_is_derived_from_the_call() {
        let name = host_veth_name("c1", "eth0");
        assert_eq!(name, "wg9e27a0abdbb0");
        assert_ne!(name, host_veth_name("c2", "eth0"));
    }

    #[test]
    fn the_pod_address_comes_from_cni_args() {
        assert_eq!(pod_address(&call(&[])), Ok(None));
        assert_eq!(
            pod_address(&call(&[("IP", "10.240.0.5/24")])),
            Ok(Some("10.240.0.5/24".into()))
        );
        for bad in ["10.240.0.5", "10.240.0.5/33", "fd00::1/129", "x/24"] {
            let err = pod_address(&call(&[("IP", bad)])).unwrap_err();
            assert_eq!(err.code, INVALID_ENV, "{bad}");
        }
    }

    #[test]
    fn check_expects_what_add_built() {
        let c = call(&[("IP", "10.240.0.5/24")]);
        let plan = attachment(&c).unwrap();
        assert_eq!(plan.container_addresses, ["10.240.0.5/24"]);
        assert_eq!(result(&c, &plan).ips[0].address, "10.240.0.5/24");
        assert_eq!(attachment(&c), Ok(plan));
    }
}
