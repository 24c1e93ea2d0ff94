//! The plugin's own keys in the net-conf `raw` JSON, with defaults from `wasi:config`.
//!
//! | key | default |
//! | --- | --- |
//! | `podcidr` | required, an IPv4 CIDR from /8 to /30 |
//! | `gateway` | the first host address of `podcidr` |
//! | `bridge` | `wasi:config` key `bridge`, else `wgbr0` |
//! | `mtu` | `wasi:config` key `mtu`, else 1500 |
//! | `mode` | `bridge` (or `ptp`) |
//! | `dns` | none; passed through to the result |
//!
//! Errors are CNI code 6 when `raw` is not a JSON object and code 7 naming the key otherwise.

use std::net::Ipv4Addr;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{self, DECODE_FAILURE, invalid};
use crate::pool::{Pool, parse_cidr};
use crate::wasmgate::plugin::cni_types::{CniError, Dns};

pub const DEFAULT_BRIDGE: &str = "wgbr0";
pub const DEFAULT_MTU: u32 = 1500;
/// The IPv4 minimum MTU (RFC 791) and the largest a netdev takes without jumbo oddities.
const MTU_RANGE: std::ops::RangeInclusive<u64> = 68..=65535;

/// Operator defaults, `wasi:config/store` in the component. A missing key is `Ok(None)`.
pub trait Settings {
    fn get(&self, key: &str) -> Result<Option<String>, CniError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Host veth ends join a shared bridge that holds the gateway address.
    Bridge,
    /// Each host veth end holds the gateway as a /32 and the host routes the pod's /32 to it.
    Ptp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub pool: Pool,
    pub bridge: String,
    pub mtu: u32,
    pub mode: Mode,
    pub dns: Option<Dns>,
}

/// The CNI `dns` object; every field optional.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DnsConf {
    nameservers: Vec<String>,
    domain: Option<String>,
    search: Vec<String>,
    options: Vec<String>,
}

pub fn parse(raw: &str, settings: &impl Settings) -> Result<Config, CniError> {
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        error::err(
            DECODE_FAILURE,
            format!("network configuration is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(error::err(
            DECODE_FAILURE,
            "network configuration is not a JSON object",
        ));
    };

    let podcidr = match obj.get("podcidr") {
        None | Some(Value::Null) => return Err(invalid("podcidr is required")),
        Some(v) => v
            .as_str()
            .ok_or_else(|| invalid("podcidr must be a string"))?,
    };
    let (network, prefix) = parse_cidr(podcidr).map_err(|e| invalid(format!("podcidr: {e}")))?;

    let gateway = match string_key(&obj, "gateway")? {
        None => None,
        Some(gw) => Some(
            gw.parse::<Ipv4Addr>()
                .map_err(|_| invalid(format!("gateway: {gw} is not an IPv4 address")))?,
        ),
    };
    let pool = Pool::new(network, prefix, gateway).map_err(|e| {
        // Pool::new only rejects the gateway or the prefix; say which key is at fault.
        let prefix_ok = (crate::pool::MIN_PREFIX..=crate::pool::MAX_PREFIX).contains(&prefix);
        if gateway.is_some() && prefix_ok {
            invalid(format!("gateway: {e}"))
        } else {
            invalid(format!("podcidr: {e}"))
        }
    })?;

    let bridge = match string_key(&obj, "bridge")? {
        Some(b) => b.to_string(),
        None => settings
            .get("bridge")?
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
    };
    check_ifname(&bridge).map_err(|e| invalid(format!("bridge: {e}")))?;

    let mtu = match obj.get("mtu") {
        None | Some(Value::Null) => match settings.get("mtu")? {
            None => DEFAULT_MTU,
            Some(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(checked_mtu)
                .ok_or_else(|| invalid(format!("wasi:config key mtu: {s:?} {MTU_HINT}")))?,
        },
        Some(v) => v
            .as_u64()
            .and_then(checked_mtu)
            .ok_or_else(|| invalid(format!("mtu: {v} {MTU_HINT}")))?,
    };

    let mode = match string_key(&obj, "mode")? {
        None | Some("bridge") => Mode::Bridge,
        Some("ptp") => Mode::Ptp,
        Some(other) => {
            return Err(invalid(format!(
                "mode: {other:?} is not one of \"bridge\", \"ptp\""
            )));
        }
    };

    let dns = match obj.get("dns") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let d: DnsConf =
                serde_json::from_value(v.clone()).map_err(|e| invalid(format!("dns: {e}")))?;
            Some(Dns {
                nameservers: d.nameservers,
                domain: d.domain,
                search: d.search,
                options: d.options,
            })
        }
    };

    Ok(Config {
        pool,
        bridge,
        mtu,
        mode,
        dns,
    })
}

const MTU_HINT: &str = "is not an integer between 68 and 65535";

fn checked_mtu(mtu: u64) -> Option<u32> {
    MTU_RANGE.contains(&mtu).then_some(mtu as u32)
}

/// An optional string key: absent and null are `None`, any other non-string is an error.
fn string_key<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{key} must be a string"))),
    }
}

/// Linux's `dev_valid_name`: 1-15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1 to 15 bytes long"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!("{name:?} must not contain '/', ':' or whitespace"));
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::error::INVALID_CONFIG;

    /// A `wasi:config` stand-in.
    #[derive(Default)]
    pub struct FakeSettings(pub HashMap<String, String>);

    impl FakeSettings {
        pub fn with(pairs: &[(&str, &str)]) -> Self {
            FakeSettings(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }
    }

    impl Settings for FakeSettings {
        fn get(&self, key: &str) -> Result<Option<String>, CniError> {
            Ok(self.0.get(key).cloned())
        }
    }

    fn parse_ok(raw: &str) -> Config {
        parse(raw, &FakeSettings::default()).unwrap()
    }

    fn parse_err(raw: &str) -> CniError {
        parse(raw, &FakeSettings::default()).unwrap_err()
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c =
            parse_ok(r#"{"cniVersion":"1.1.0","name":"n","type":"t","podcidr":"10.240.0.0/24"}"#);
        assert_eq!(c.pool.cidr(), "10.240.0.0/24");
        assert_eq!(c.pool.gateway(), Ipv4Addr::new(10, 240, 0, 1));
        assert_eq!(c.bridge, "wgbr0");
        assert_eq!(c.mtu, 1500);
        assert_eq!(c.mode, Mode::Bridge);
        assert_eq!(c.dns, None);
    }

    #[test]
    fn explicit_keys_win() {
        let c = parse_ok(
            r#"{"podcidr":"10.9.0.0/16","gateway":"10.9.255.254","bridge":"br-x","mtu":9000,
                "mode":"ptp","dns":{"nameservers":["10.9.0.10"],"search":["svc.local"]}}"#,
        );
        assert_eq!(c.pool.gateway(), Ipv4Addr::new(10, 9, 255, 254));
        assert_eq!(c.bridge, "br-x");
        assert_eq!(c.mtu, 9000);
        assert_eq!(c.mode, Mode::Ptp);
        let dns = c.dns.unwrap();
        assert_eq!(dns.nameservers, vec!["10.9.0.10"]);
        assert_eq!(dns.search, vec!["svc.local"]);
        assert_eq!(dns.domain, None);
    }

    #[test]
    fn wasi_config_supplies_bridge_and_mtu_defaults() {
        let settings = FakeSettings::with(&[("bridge", "cfgbr"), ("mtu", "1450")]);
        let c = parse(r#"{"podcidr":"10.240.0.0/24"}"#, &settings).unwrap();
        assert_eq!(c.bridge, "cfgbr");
        assert_eq!(c.mtu, 1450);
        // The net-conf still wins over wasi:config.
        let c = parse(
            r#"{"podcidr":"10.240.0.0/24","bridge":"b","mtu":1400}"#,
            &settings,
        )
        .unwrap();
        assert_eq!(c.bridge, "b");
        assert_eq!(c.mtu, 1400);
        let e = parse(
            r#"{"podcidr":"10.240.0.0/24"}"#,
            &FakeSettings::with(&[("mtu", "big")]),
        )
        .unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("wasi:config key mtu"), "{}", e.msg);
    }

    #[test]
    fn bad_keys_are_code_7_and_named() {
        for (raw, key) in [
            (r#"{}"#, "podcidr"),
            (r#"{"podcidr":null}"#, "podcidr"),
            (r#"{"podcidr":24}"#, "podcidr"),
            (r#"{"podcidr":"fd00::/64"}"#, "podcidr"),
            (r#"{"podcidr":"10.240.0.0"}"#, "podcidr"),
            (r#"{"podcidr":"10.240.0.0/31"}"#, "podcidr"),
            (r#"{"podcidr":"0.0.0.0/0"}"#, "podcidr"),
            (r#"{"podcidr":"128.0.0.0/1"}"#, "podcidr"),
            (
                r#"{"podcidr":"128.0.0.0/1","gateway":"128.0.0.1"}"#,
                "podcidr",
            ),
            (
                r#"{"podcidr":"10.240.0.0/24","gateway":"10.241.0.1"}"#,
                "gateway",
            ),
            (r#"{"podcidr":"10.240.0.0/24","gateway":"nope"}"#, "gateway"),
            (
                r#"{"podcidr":"10.240.0.0/24","bridge":"way-too-long-bridge"}"#,
                "bridge",
            ),
            (r#"{"podcidr":"10.240.0.0/24","bridge":"a/b"}"#, "bridge"),
            (r#"{"podcidr":"10.240.0.0/24","mtu":10}"#, "mtu"),
            (r#"{"podcidr":"10.240.0.0/24","mtu":"1500"}"#, "mtu"),
            (r#"{"podcidr":"10.240.0.0/24","mtu":1500.5}"#, "mtu"),
            (r#"{"podcidr":"10.240.0.0/24","mode":"macvlan"}"#, "mode"),
            (
                r#"{"podcidr":"10.240.0.0/24","dns":{"nameservers":"x"}}"#,
                "dns",
            ),
            (r#"{"podcidr":"10.240.0.0/24","dns":{"bogus":[]}}"#, "dns"),
        ] {
            let e = parse_err(raw);
            assert_eq!(e.code, INVALID_CONFIG, "{raw}: {}", e.msg);
            assert!(e.msg.starts_with(key), "{raw}: {}", e.msg);
        }
    }

    #[test]
    fn undecodable_config_is_code_6() {
        assert_eq!(parse_err("not json").code, DECODE_FAILURE);
        assert_eq!(parse_err("[1]").code, DECODE_FAILURE);
    }
}
