//! `prevResult`: the result of the plugins before this one in a chain, in the 1.1.0 shape the
//! host converts it to.
//!
//! ADD appends to it and CHECK looks for our address in it. Fields the WIT result has no room for
//! (`advmss` on routes, `socketPath` and `pciID` on interfaces) are dropped.

use serde::Deserialize;

use crate::error::{DECODE_FAILURE, err};
use crate::wasmgate::plugin::cni_types::{CniError, CniInterface, Dns, IpConfig, Route};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PrevResult {
    interfaces: Vec<PrevInterface>,
    ips: Vec<PrevIp>,
    routes: Vec<PrevRoute>,
    dns: Option<PrevDns>,
}

#[derive(Debug, Deserialize)]
struct PrevInterface {
    name: String,
    mac: Option<String>,
    mtu: Option<u32>,
    sandbox: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PrevIp {
    address: String,
    gateway: Option<String>,
    interface: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct PrevRoute {
    dst: String,
    gw: Option<String>,
    mtu: Option<u32>,
    priority: Option<u32>,
    table: Option<u32>,
    scope: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PrevDns {
    nameservers: Vec<String>,
    domain: Option<String>,
    search: Vec<String>,
    options: Vec<String>,
}

pub fn parse(json: &str) -> Result<PrevResult, CniError> {
    serde_json::from_str(json).map_err(|e| err(DECODE_FAILURE, format!("prevResult: {e}")))
}

impl PrevResult {
    /// Whether any of the result's ips has this address, whatever its prefix length.
    pub fn has_address(&self, ip: std::net::Ipv4Addr) -> bool {
        self.ips.iter().any(|c| {
            let addr = c
                .address
                .split_once('/')
                .map_or(c.address.as_str(), |(a, _)| a);
            addr.parse() == Ok(ip)
        })
    }

    pub fn interfaces(&self) -> Vec<CniInterface> {
        self.interfaces
            .iter()
            .map(|i| CniInterface {
                name: i.name.clone(),
                mac: i.mac.clone(),
                mtu: i.mtu,
                sandbox: i.sandbox.clone(),
            })
            .collect()
    }

    pub fn ips(&self) -> Vec<IpConfig> {
        self.ips
            .iter()
            .map(|c| IpConfig {
                address: c.address.clone(),
                gateway: c.gateway.clone(),
                iface: c.interface,
            })
            .collect()
    }

    pub fn routes(&self) -> Vec<Route> {
        self.routes
            .iter()
            .map(|r| Route {
                dst: r.dst.clone(),
                gw: r.gw.clone(),
                mtu: r.mtu,
                priority: r.priority,
                table: r.table,
                scope: r.scope,
            })
            .collect()
    }

    pub fn dns(&self) -> Option<Dns> {
        self.dns.as_ref().map(|d| Dns {
            nameservers: d.nameservers.clone(),
            domain: d.domain.clone(),
            search: d.search.clone(),
            options: d.options.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREV: &str = r#"{
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "lo", "sandbox": "/var/run/netns/x", "socketPath": "/s"}],
        "ips": [{"address": "10.240.0.7/24", "gateway": "10.240.0.1", "interface": 0}],
        "routes": [{"dst": "10.0.0.0/8", "advmss": 1400}],
        "dns": {"nameservers": ["1.1.1.1"]}
    }"#;

    #[test]
    fn parses_a_1_1_0_result_and_ignores_extra_fields() {
        let p = parse(PREV).unwrap();
        assert_eq!(p.interfaces()[0].name, "lo");
        assert_eq!(
            p.interfaces()[0].sandbox.as_deref(),
            Some("/var/run/netns/x")
        );
        assert_eq!(p.ips()[0].iface, Some(0));
        assert_eq!(p.routes()[0].dst, "10.0.0.0/8");
        assert_eq!(p.dns().unwrap().nameservers, vec!["1.1.1.1"]);
        assert!(p.has_address("10.240.0.7".parse().unwrap()));
        assert!(!p.has_address("10.240.0.8".parse().unwrap()));
    }

    #[test]
    fn empty_object_is_an_empty_result() {
        let p = parse("{}").unwrap();
        assert!(p.interfaces().is_empty() && p.ips().is_empty() && p.routes().is_empty());
        assert!(p.dns().is_none());
    }

    #[test]
    fn wrong_shape_is_code_6() {
        let e = parse(r#"{"ips": [{"gateway": "10.0.0.1"}]}"#).unwrap_err();
        assert_eq!(e.code, DECODE_FAILURE);
        assert!(e.msg.starts_with("prevResult"), "{}", e.msg);
    }
}
