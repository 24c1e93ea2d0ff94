//! What ADD returns: the attachment the host builds, and the CNI result it reports.
//!
//! Both are pure functions of the config and the allocation, so CHECK rebuilds exactly what ADD
//! returned without any state beyond the address.

use std::net::Ipv4Addr;

use crate::config::{Config, Mode};
use crate::names::host_veth_name;
use crate::prev::PrevResult;
use crate::wasmgate::plugin::cni_types::{
    Attachment, Bridge, CniInterface, CniResult, IpConfig, Route, Veth,
};

fn route(dst: String, gw: Option<Ipv4Addr>) -> Route {
    Route {
        dst,
        gw: gw.map(|g| g.to_string()),
        mtu: None,
        priority: None,
        table: None,
        scope: None,
    }
}

fn default_route(config: &Config) -> Route {
    route("0.0.0.0/0".into(), Some(config.pool.gateway()))
}

/// The plan for one container interface.
pub fn attachment(config: &Config, ip: Ipv4Addr, cid: &str, ifname: &str) -> Attachment {
    let gw = config.pool.gateway();
    let prefix = config.pool.prefix();
    let host_name = host_veth_name(cid, ifname);
    let (bridge, host_addresses, host_routes) = match config.mode {
        Mode::Bridge => (
            Some(Bridge {
                name: config.bridge.clone(),
                addresses: vec![format!("{gw}/{prefix}")],
                mtu: Some(config.mtu),
            }),
            vec![],
            vec![],
        ),
        // The host end answers for the gateway, and the host routes the pod's /32 down the veth.
        Mode::Ptp => (
            None,
            vec![format!("{gw}/32")],
            vec![route(format!("{ip}/32"), None)],
        ),
    };
    Attachment {
        veth: Veth {
            host_name,
            mtu: Some(config.mtu),
            host_addresses,
        },
        bridge,
        container_addresses: vec![format!("{ip}/{prefix}")],
        container_routes: vec![default_route(config)],
        host_routes,
    }
}

/// The CNI result: the previous plugin's entries, then ours.
pub fn result(
    config: &Config,
    ip: Ipv4Addr,
    cid: &str,
    ifname: &str,
    netns: &str,
    prev: Option<&PrevResult>,
) -> CniResult {
    let mut interfaces = prev.map(PrevResult::interfaces).unwrap_or_default();
    let mut ips = prev.map(PrevResult::ips).unwrap_or_default();
    let mut routes = prev.map(PrevResult::routes).unwrap_or_default();
    // Our container interface comes right after our host veth.
    let container_index = interfaces.len() as u32 + 1;
    interfaces.push(CniInterface {
        name: host_veth_name(cid, ifname),
        mac: None,
        mtu: Some(config.mtu),
        sandbox: None,
    });
    interfaces.push(CniInterface {
        name: ifname.to_string(),
        mac: None,
        mtu: Some(config.mtu),
        sandbox: Some(netns.to_string()),
    });
    ips.push(IpConfig {
        address: format!("{ip}/{}", config.pool.prefix()),
        gateway: Some(config.pool.gateway().to_string()),
        iface: Some(container_index),
    });
    routes.push(default_route(config));
    CniResult {
        interfaces,
        ips,
        routes,
        dns: config
            .dns
            .clone()
            .or_else(|| prev.and_then(PrevResult::dns)),
    }
}
