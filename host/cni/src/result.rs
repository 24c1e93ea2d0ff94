//! The CNI result: what ADD prints, what `prevResult` carries into CHECK and DEL.
//!
//! Internally there is one shape, 1.1's. [`CniResult::from_json`] reads any supported version's
//! shape (a `prevResult` may be older than the call), and [`CniResult::to_json`] writes the shape
//! of the version the runtime asked for: 0.3.x and 0.4.0 carry a per-IP `"version"` and lack the
//! 1.1 interface and route fields.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{CniError, code};
use crate::plan::Route;
use crate::version::{LATEST, at_least, check_supported};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container interfaces; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR, e.g. `10.1.0.5/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl IpConfig {
    /// `"4"` or `"6"`, as the pre-1.0 `version` key spells it.
    fn family(&self) -> &'static str {
        match self.address.parse::<IpNet>() {
            Ok(IpNet::V4(_)) => "4",
            Ok(IpNet::V6(_)) => "6",
            // Only reachable for results built by hand; a colon is what sets v6 text apart.
            Err(_) if self.address.contains(':') => "6",
            Err(_) => "4",
        }
    }
}

impl CniResult {
    /// Reads a result in any supported version's shape. An absent `cniVersion` is read as the
    /// current shape; a present but unsupported one is refused (code 1) because its shape (e.g.
    /// 0.2.0's `ip4`) would otherwise be silently read as empty.
    pub fn from_json(v: &Value) -> Result<CniResult, CniError> {
        if !v.is_object() {
            return Err(bad("result must be a JSON object".into()));
        }
        match v.get("cniVersion") {
            None | Some(Value::Null) => {}
            Some(Value::String(ver)) => check_supported(ver)?,
            Some(_) => return Err(bad("result key \"cniVersion\" must be a string".into())),
        }
        // Unknown keys, including the pre-1.0 per-IP "version", are ignored by the derive.
        let r = CniResult::deserialize(v).map_err(|e| bad(format!("invalid CNI result: {e}")))?;
        r.check()?;
        Ok(r)
    }

    /// The result in `cni_version`'s shape (empty means [`LATEST`]).
    pub fn to_json(&self, cni_version: &str) -> Value {
        let ver = if cni_version.is_empty() {
            LATEST
        } else {
            cni_version
        };
        let legacy = !at_least(ver, "1.0.0");
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(ver));
        if !self.interfaces.is_empty() {
            let ifaces = self.interfaces.iter().map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                put(&mut o, "mac", &i.mac);
                put(&mut o, "sandbox", &i.sandbox);
                if !legacy {
                    put(&mut o, "mtu", &i.mtu);
                    put(&mut o, "socketPath", &i.socket_path);
                    put(&mut o, "pciID", &i.pci_id);
                }
                Value::Object(o)
            });
            out.insert("interfaces".into(), Value::Array(ifaces.collect()));
        }
        if !self.ips.is_empty() {
            let ips = self.ips.iter().map(|ip| {
                let mut o = Map::new();
                if legacy {
                    o.insert("version".into(), json!(ip.family()));
                }
                o.insert("address".into(), json!(ip.address));
                put(&mut o, "gateway", &ip.gateway);
                put(&mut o, "interface", &ip.interface);
                Value::Object(o)
            });
            out.insert("ips".into(), Value::Array(ips.collect()));
        }
        if !self.routes.is_empty() {
            let routes = self.routes.iter().map(|r| {
                if legacy {
                    // Before 1.1 a route was only dst and gw.
                    let mut o = Map::new();
                    o.insert("dst".into(), json!(r.dst));
                    put(&mut o, "gw", &r.gw);
                    Value::Object(o)
                } else {
                    serde_json::to_value(r).unwrap_or(Value::Null)
                }
            });
            out.insert("routes".into(), Value::Array(routes.collect()));
        }
        if let Some(dns) = self.dns.as_ref().filter(|d| !d.is_empty()) {
            out.insert(
                "dns".into(),
                serde_json::to_value(dns).unwrap_or(Value::Null),
            );
        }
        Value::Object(out)
    }

    /// What the JSON types alone cannot say: addresses parse, indexes point somewhere.
    fn check(&self) -> Result<(), CniError> {
        for (i, ip) in self.ips.iter().enumerate() {
            if ip.address.parse::<IpNet>().is_err() {
                return Err(bad(format!(
                    "ips[{i}].address {:?} is not a CIDR address",
                    ip.address
                )));
            }
            if let Some(gw) = &ip.gateway
                && gw.parse::<IpAddr>().is_err()
            {
                return Err(bad(format!("ips[{i}].gateway {gw:?} is not an IP address")));
            }
            if let Some(idx) = ip.interface
                && idx as usize >= self.interfaces.len()
            {
                return Err(bad(format!(
                    "ips[{i}].interface {idx} is out of range: there are {} interfaces",
                    self.interfaces.len()
                )));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if r.dst.parse::<IpNet>().is_err() {
                return Err(bad(format!("routes[{i}].dst {:?} is not a CIDR", r.dst)));
            }
            if let Some(gw) = &r.gw
                && gw.parse::<IpAddr>().is_err()
            {
                return Err(bad(format!("routes[{i}].gw {gw:?} is not an IP address")));
            }
        }
        Ok(())
    }
}

fn put<T: Serialize>(o: &mut Map<String, Value>, key: &str, v: &Option<T>) {
    if let Some(v) = v
        && let Ok(v) = serde_json::to_value(v)
    {
        o.insert(key.into(), v);
    }
}

fn bad(msg: String) -> CniError {
    CniError::new(code::DECODE, msg, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![
                Interface {
                    name: "veth1".into(),
                    mac: Some("aa:bb:cc:dd:ee:ff".into()),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/pod1".into()),
                    socket_path: Some("/run/vhost.sock".into()),
                    pci_id: Some("0000:00:1f.6".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/24".into(),
                    gateway: Some("10.1.0.1".into()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".into(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.1.0.1".into()),
                mtu: Some(1400),
                ..Default::default()
            }],
            dns: Some(Dns {
                nameservers: vec!["10.1.0.1".into()],
                domain: Some("cluster.local".into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn to_json_1_1_uses_spec_key_names() {
        let v = sample().to_json("1.1.0");
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "veth1", "mac": "aa:bb:cc:dd:ee:ff"},
                    {"name": "eth0", "mac": "02:00:00:00:00:01", "mtu": 1450, "sandbox": "/var/run/netns/pod1",
                     "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"}
                ],
                "ips": [
                    {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
                    {"address": "fd00::5/64", "interface": 1}
                ],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400}],
                "dns": {"nameservers": ["10.1.0.1"], "domain": "cluster.local"}
            })
        );
    }

    #[test]
    fn to_json_legacy_adds_ip_version_and_drops_new_fields() {
        for ver in ["0.3.0", "0.3.1", "0.4.0"] {
            let v = sample().to_json(ver);
            assert_eq!(v["cniVersion"], ver);
            assert_eq!(v["ips"][0]["version"], "4");
            assert_eq!(v["ips"][1]["version"], "6");
            assert_eq!(
                v["interfaces"][1],
                json!({"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/pod1"})
            );
            assert_eq!(
                v["routes"][0],
                json!({"dst": "0.0.0.0/0", "gw": "10.1.0.1"})
            );
        }
        let v = sample().to_json("1.0.0");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][1]["mtu"], 1450);
    }

    #[test]
    fn to_json_omits_empties_and_defaults_version() {
        let r = CniResult {
            dns: Some(Dns::default()),
            ..Default::default()
        };
        assert_eq!(r.to_json(""), json!({"cniVersion": LATEST}));
    }

    #[test]
    fn round_trips_through_every_version() {
        for ver in crate::version::SUPPORTED_VERSIONS {
            let back = CniResult::from_json(&sample().to_json(ver)).unwrap();
            assert_eq!(back.cni_version, *ver);
            assert_eq!(back.ips, sample().ips);
            assert_eq!(back.dns, sample().dns);
            if at_least(ver, "1.0.0") {
                assert_eq!(back.interfaces, sample().interfaces);
                assert_eq!(back.routes, sample().routes);
            }
        }
    }

    #[test]
    fn from_json_reads_a_0_4_0_result() {
        let r = CniResult::from_json(&json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "address": "10.0.0.2/16", "gateway": "10.0.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        }))
        .unwrap();
        assert_eq!(
            r.ips,
            [IpConfig {
                address: "10.0.0.2/16".into(),
                gateway: Some("10.0.0.1".into()),
                interface: Some(0)
            }]
        );
        assert_eq!(
            r.routes,
            [Route {
                dst: "0.0.0.0/0".into(),
                ..Default::default()
            }]
        );
        assert_eq!(r.dns, Some(Dns::default()));
    }

    #[test]
    fn from_json_accepts_missing_version_and_ipam_shape() {
        let r = CniResult::from_json(&json!({"ips": [{"address": "10.0.0.2/16"}]})).unwrap();
        assert_eq!(r.cni_version, "");
        assert!(r.interfaces.is_empty());
    }

    #[test]
    fn from_json_errors() {
        let cases = [
            (json!([]), 6, "result must be a JSON object"),
            (
                json!({"cniVersion": 1}),
                6,
                "result key \"cniVersion\" must be a string",
            ),
            (
                json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/16"}}),
                1,
                "unsupported CNI version \"0.2.0\"",
            ),
            (json!({"ips": {}}), 6, "invalid CNI result: "),
            (
                json!({"ips": [{"gateway": "10.0.0.1"}]}),
                6,
                "invalid CNI result: missing field `address`",
            ),
            (
                json!({"interfaces": [{"name": "eth0", "mtu": -1}]}),
                6,
                "invalid CNI result: ",
            ),
            (
                json!({"ips": [{"address": "10.0.0.2"}]}),
                6,
                "ips[0].address \"10.0.0.2\" is not a CIDR address",
            ),
            (
                json!({"ips": [{"address": "10.0.0.2/16", "gateway": "x"}]}),
                6,
                "ips[0].gateway \"x\" is not an IP address",
            ),
            (
                json!({"ips": [{"address": "10.0.0.2/16", "interface": 0}]}),
                6,
                "ips[0].interface 0 is out of range: there are 0 interfaces",
            ),
            (
                json!({"routes": [{"dst": "default"}]}),
                6,
                "routes[0].dst \"default\" is not a CIDR",
            ),
            (
                json!({"routes": [{"dst": "::/0", "gw": "fe80::1%eth0"}]}),
                6,
                "routes[0].gw \"fe80::1%eth0\" is not an IP address",
            ),
        ];
        for (v, c, msg) in cases {
            let e = CniResult::from_json(&v).unwrap_err();
            assert_eq!(e.code, c, "{v}");
            assert!(
                e.msg.starts_with(msg),
                "{} does not start with {msg}",
                e.msg
            );
        }
    }

    #[test]
    fn serde_is_the_1_1_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v, sample().to_json("1.1.0"));
    }
}
