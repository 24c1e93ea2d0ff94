//! The host's check of a plugin's attachment plan, run before anything touches the kernel.
//!
//! A plugin is untrusted: its plan is data the daemon reads back from a sandbox. [`validate`]
//! decides whether the host will carry it out. It checks the shape (interface names, CIDRs, IPs,
//! MTUs) and the policy: which bridges the plugin may join, which prefix its host interfaces must
//! carry, and that whatever it adds to the host's own routing only points at the pod's addresses.
//! Inside the container's netns the plugin may route as it likes; that namespace is the call's.

use std::net::IpAddr;

use ipnet::IpNet;
use wasmgate_cni::plan::{Attachment, Route, Target};

use crate::EffectError;

/// What a plugin is allowed to do on the host, from the daemon's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// Bridges the plugin may create or join. Empty: the plugin may not use a bridge.
    pub allowed_bridges: Vec<String>,
    /// When set, every host interface the plugin names must start with this prefix.
    pub host_prefix: Option<String>,
}

/// Checks a plugin's plan for `target` against `policy`.
///
/// Returns [`EffectError::Denied`] naming the first offending field.
pub fn validate(target: &Target, plan: &Attachment, policy: &NetPolicy) -> Result<(), EffectError> {
    let host_name = &plan.veth.host_name;
    check_ifname("host veth name", host_name)?;
    check_ifname("ifname", &target.ifname)?;
    if let Some(prefix) = &policy.host_prefix
        && !host_name.starts_with(prefix.as_str())
    {
        return Err(denied(format!(
            "host veth name {host_name:?} does not start with the required prefix {prefix:?}"
        )));
    }
    if let Some(bridge) = &plan.bridge {
        check_ifname("bridge name", &bridge.name)?;
        if bridge.name == *host_name {
            return Err(denied(format!(
                "host veth name {host_name:?} is the same as the bridge name"
            )));
        }
        if !policy.allowed_bridges.contains(&bridge.name) {
            return Err(denied(format!(
                "bridge {:?} is not allowed for this plugin",
                bridge.name
            )));
        }
        check_mtu("bridge mtu", bridge.mtu)?;
    }
    check_mtu("veth mtu", plan.veth.mtu)?;

    let parsed = ParsedPlan::parse(plan)?;

    // An address on the host veth also installs a connected route on the host, so it must be a
    // single address; otherwise a plugin could pull a whole subnet of the node's traffic.
    for (net, text) in parsed.host_addresses.iter().zip(&plan.veth.host_addresses) {
        if net.prefix_len() != net.max_prefix_len() {
            return Err(denied(format!(
                "host address {text:?} must be a single address (/32 or /128)"
            )));
        }
    }
    // Host routes may only lead to the pod's own addresses.
    for (route, raw) in parsed.host_routes.iter().zip(&plan.host_routes) {
        let own = parsed.container_addresses.iter().any(|a| {
            route.dst.prefix_len() == route.dst.max_prefix_len() && route.dst.addr() == a.addr()
        });
        if !own {
            return Err(denied(format!(
                "host route dst {:?} is not one of the pod's own addresses",
                raw.dst
            )));
        }
    }
    Ok(())
}

fn denied(msg: String) -> EffectError {
    EffectError::Denied(msg)
}

/// The kernel's `dev_valid_name`: 1..=15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
fn check_ifname(field: &str, name: &str) -> Result<(), EffectError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| matches!(b, b'/' | b':' | b' ' | b'\t'..=b'\r' | 0));
    if bad {
        return Err(denied(format!(
            "{field} {name:?} is not a valid interface name"
        )));
    }
    Ok(())
}

fn check_mtu(field: &str, mtu: Option<u32>) -> Result<(), EffectError> {
    match mtu {
        Some(m) if !(68..=65535).contains(&m) => {
            Err(denied(format!("{field} {m} is outside 68..=65535")))
        }
        _ => Ok(()),
    }
}

/// A plan route with its strings parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteSpec {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl RouteSpec {
    fn parse(field: &str, route: &Route) -> Result<Self, EffectError> {
        let dst = parse_cidr(&format!("{field} dst"), &route.dst)?;
        if dst.trunc() != dst {
            return Err(denied(format!(
                "{field} dst {:?} has host bits set",
                route.dst
            )));
        }
        let gw = match &route.gw {
            Some(text) => {
                let gw: IpAddr = text.parse().map_err(|_| {
                    denied(format!("{field} gw {text:?} is not a valid ip address"))
                })?;
                if gw.is_ipv4() != dst.addr().is_ipv4() {
                    return Err(denied(format!(
                        "{field} gw {text:?} is not in the address family of dst {:?}",
                        route.dst
                    )));
                }
                Some(gw)
            }
            None => None,
        };
        check_mtu(&format!("{field} mtu"), route.mtu)?;
        let scope = match route.scope {
            Some(s) => Some(
                u8::try_from(s)
                    .map_err(|_| denied(format!("{field} scope {s} is outside 0..=255")))?,
            ),
            None => None,
        };
        Ok(RouteSpec {
            dst,
            gw,
            mtu: route.mtu,
            advmss: route.advmss,
            priority: route.priority,
            table: route.table,
            scope,
        })
    }
}

/// A plan with every address and route parsed; what [`crate::Netlink`] works from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedPlan {
    pub container_addresses: Vec<IpNet>,
    pub container_routes: Vec<RouteSpec>,
    pub host_addresses: Vec<IpNet>,
    pub host_routes: Vec<RouteSpec>,
    pub bridge_addresses: Vec<IpNet>,
}

impl ParsedPlan {
    pub(crate) fn parse(plan: &Attachment) -> Result<Self, EffectError> {
        let cidrs = |field: &str, list: &[String]| -> Result<Vec<IpNet>, EffectError> {
            list.iter().map(|s| parse_cidr(field, s)).collect()
        };
        let routes = |field: &str, list: &[Route]| -> Result<Vec<RouteSpec>, EffectError> {
            list.iter().map(|r| RouteSpec::parse(field, r)).collect()
        };
        Ok(ParsedPlan {
            container_addresses: cidrs("container address", &plan.container_addresses)?,
            container_routes: routes("container route", &plan.container_routes)?,
            host_addresses: cidrs("host address", &plan.veth.host_addresses)?,
            host_routes: routes("host route", &plan.host_routes)?,
            bridge_addresses: match &plan.bridge {
                Some(b) => cidrs("bridge address", &b.addresses)?,
                None => Vec::new(),
            },
        })
    }
}

fn parse_cidr(field: &str, text: &str) -> Result<IpNet, EffectError> {
    text.parse()
        .map_err(|_| denied(format!("{field} {text:?} is not a valid cidr")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_cni::plan::{Bridge, Veth};

    fn target() -> Target {
        Target {
            netns: "/var/run/netns/pod".into(),
            ifname: "eth0".into(),
        }
    }

    fn policy() -> NetPolicy {
        NetPolicy {
            allowed_bridges: vec!["cni0".into()],
            host_prefix: Some("wg".into()),
        }
    }

    fn route(dst: &str, gw: Option<&str>) -> Route {
        Route {
            dst: dst.into(),
            gw: gw.map(Into::into),
            ..Route::default()
        }
    }

    /// A bridged plan and a point-to-point plan, both valid.
    fn bridged() -> Attachment {
        Attachment {
            veth: Veth {
                host_name: "wg0a1b2c".into(),
                mtu: Some(1500),
                host_addresses: vec![],
            },
            bridge: Some(Bridge {
                name: "cni0".into(),
                addresses: vec!["10.240.0.1/24".into()],
                mtu: Some(1500),
            }),
            container_addresses: vec!["10.240.0.5/24".into(), "fd00::5/64".into()],
            container_routes: vec![route("0.0.0.0/0", Some("10.240.0.1"))],
            host_routes: vec![],
        }
    }

    fn ptp() -> Attachment {
        Attachment {
            veth: Veth {
                host_name: "wgp1".into(),
                mtu: None,
                host_addresses: vec!["10.240.0.1/32".into()],
            },
            bridge: None,
            container_addresses: vec!["10.240.0.5/24".into()],
            container_routes: vec![
                route("10.240.0.1/32", None),
                route("0.0.0.0/0", Some("10.240.0.1")),
            ],
            host_routes: vec![route("10.240.0.5/32", None)],
        }
    }

    fn denial(plan: &Attachment) -> String {
        denial_for(&target(), plan, &policy())
    }

    fn denial_for(target: &Target, plan: &Attachment, policy: &NetPolicy) -> String {
        match validate(target, plan, policy) {
            Err(e @ EffectError::Denied(_)) => e.to_string(),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn valid_plans_pass() {
        validate(&target(), &bridged(), &policy()).unwrap();
        validate(&target(), &ptp(), &policy()).unwrap();
        // No prefix policy, no addresses at all.
        let mut bare = ptp();
        bare.veth.host_addresses.clear();
        bare.container_addresses.clear();
        bare.container_routes.clear();
        bare.host_routes.clear();
        validate(&target(), &bare, &NetPolicy::default()).unwrap();
    }

    #[test]
    fn bad_interface_names() {
        for bad in [
            "",
            "wg456789abcdef01",
            ".",
            "..",
            "wg/x",
            "wg:x",
            "wg x",
            "wg\tx",
            "wg\0",
        ] {
            let mut plan = bridged();
            plan.veth.host_name = bad.into();
            let policy = NetPolicy {
                host_prefix: None,
                ..policy()
            };
            let msg = denial_for(&target(), &plan, &policy);
            assert!(
                msg.contains("host veth name") && msg.contains("not a valid interface name"),
                "{msg}"
            );
        }
        // 15 bytes is the longest valid name.
        let mut plan = bridged();
        plan.veth.host_name = "wg3456789abcdef".into();
        validate(&target(), &plan, &policy()).unwrap();

        let mut plan = bridged();
        plan.bridge.as_mut().unwrap().name = "br/0".into();
        assert!(denial(&plan).contains("bridge name \"br/0\" is not a valid interface name"));

        let t = Target {
            ifname: "eth0:1".into(),
            ..target()
        };
        assert!(denial_for(&t, &bridged(), &policy()).contains("ifname \"eth0:1\""));
    }

    #[test]
    fn host_name_must_differ_from_bridge() {
        let mut plan = bridged();
        plan.veth.host_name = "wgbr".into();
        plan.bridge.as_mut().unwrap().name = "wgbr".into();
        let policy = NetPolicy {
            allowed_bridges: vec!["wgbr".into()],
            ..policy()
        };
        assert!(denial_for(&target(), &plan, &policy).contains("same as the bridge name"));
    }

    #[test]
    fn host_prefix_is_enforced() {
        let mut plan = bridged();
        plan.veth.host_name = "veth1234".into();
        assert_eq!(
            denial(&plan),
            "plan denied: host veth name \"veth1234\" does not start with the required prefix \"wg\""
        );
    }

    #[test]
    fn bridge_must_be_allowed() {
        let mut plan = bridged();
        plan.bridge.as_mut().unwrap().name = "evil0".into();
        assert_eq!(
            denial(&plan),
            "plan denied: bridge \"evil0\" is not allowed for this plugin"
        );
        // An empty allow-list allows no bridge at all.
        let none = NetPolicy {
            allowed_bridges: vec![],
            host_prefix: None,
        };
        assert!(
            denial_for(&target(), &bridged(), &none).contains("bridge \"cni0\" is not allowed")
        );
    }

    #[test]
    fn addresses_must_be_cidrs() {
        let mut plan = bridged();
        plan.container_addresses.push("10.240.0.7".into());
        assert!(denial(&plan).contains("container address \"10.240.0.7\" is not a valid cidr"));

        let mut plan = ptp();
        plan.veth.host_addresses = vec!["nope".into()];
        assert!(denial(&plan).contains("host address \"nope\" is not a valid cidr"));

        let mut plan = bridged();
        plan.bridge.as_mut().unwrap().addresses = vec!["10.0.0.1/33".into()];
        assert!(denial(&plan).contains("bridge address \"10.0.0.1/33\" is not a valid cidr"));
    }

    #[test]
    fn routes_must_parse() {
        let mut plan = bridged();
        plan.container_routes = vec![route("default", None)];
        assert!(denial(&plan).contains("container route dst \"default\" is not a valid cidr"));

        let mut plan = bridged();
        plan.container_routes = vec![route("0.0.0.0/0", Some("10.240.0.1/24"))];
        assert!(
            denial(&plan)
                .contains("container route gw \"10.240.0.1/24\" is not a valid ip address")
        );

        let mut plan = bridged();
        plan.container_routes = vec![route("0.0.0.0/0", Some("fd00::1"))];
        assert!(denial(&plan).contains("not in the address family of dst"));

        let mut plan = bridged();
        plan.container_routes = vec![route("10.1.2.3/8", None)];
        assert!(denial(&plan).contains("container route dst \"10.1.2.3/8\" has host bits set"));

        let mut plan = bridged();
        plan.container_routes = vec![Route {
            scope: Some(300),
            ..route("10.0.0.0/8", None)
        }];
        assert!(denial(&plan).contains("container route scope 300"));
    }

    #[test]
    fn mtus_must_be_in_range() {
        let mut plan = bridged();
        plan.veth.mtu = Some(67);
        assert_eq!(
            denial(&plan),
            "plan denied: veth mtu 67 is outside 68..=65535"
        );

        let mut plan = bridged();
        plan.bridge.as_mut().unwrap().mtu = Some(65536);
        assert!(denial(&plan).contains("bridge mtu 65536"));

        let mut plan = bridged();
        plan.container_routes[0].mtu = Some(10);
        assert!(denial(&plan).contains("container route mtu 10"));

        let mut plan = bridged();
        plan.veth.mtu = Some(68);
        plan.bridge.as_mut().unwrap().mtu = Some(65535);
        validate(&target(), &plan, &policy()).unwrap();
    }

    #[test]
    fn host_routes_only_towards_own_addresses() {
        let mut plan = ptp();
        plan.host_routes = vec![route("10.240.0.0/24", None)];
        assert_eq!(
            denial(&plan),
            "plan denied: host route dst \"10.240.0.0/24\" is not one of the pod's own addresses"
        );

        let mut plan = ptp();
        plan.host_routes = vec![route("10.240.0.6/32", None)];
        assert!(denial(&plan).contains("host route dst \"10.240.0.6/32\""));

        let mut plan = ptp();
        plan.host_routes = vec![route("0.0.0.0/0", Some("10.240.0.5"))];
        assert!(denial(&plan).contains("host route dst \"0.0.0.0/0\""));

        // IPv6 works the same way.
        let mut plan = ptp();
        plan.container_addresses.push("fd00::5/64".into());
        plan.host_routes.push(route("fd00::5/128", None));
        validate(&target(), &plan, &policy()).unwrap();
    }

    #[test]
    fn host_addresses_must_be_single_addresses() {
        let mut plan = ptp();
        plan.veth.host_addresses = vec!["192.168.1.77/24".into()];
        assert!(
            denial(&plan).contains("host address \"192.168.1.77/24\" must be a single address")
        );
    }
}
