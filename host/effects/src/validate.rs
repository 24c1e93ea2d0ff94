//! The host's check of a plugin's attachment plan, run before anything touches the kernel.
//!
//! A plugin is untrusted: its plan is data the daemon reads back from a sandbox. [`validate`]
//! decides whether the host will carry it out. It checks the shape (interface names, CIDRs, IPs,
//! MTUs) and the policy: which bridges the plugin may join, which prefix its host interfaces must
//! carry, and that every address it puts anywhere lies inside its grant of pod CIDRs
//! ([`NetPolicy::pod_cidrs`]). What it adds to the host's own routing (a bridge's or host veth's
//! connected route, a host route) can then only point at granted pod addresses, never at the
//! node's gateway, its DNS or half the internet. Inside the container's netns the plugin may
//! route as it likes; that namespace is the call's (the daemon refuses the host's own netns).
//!
//! [`check_result`] holds the CNI result the plugin reports to the runtime to the same plan: the
//! IPs kubelet records as the pod's must be the ones the host put on the pod's interface.

use std::net::IpAddr;

use ipnet::IpNet;
use wasmgate_cni::plan::{Attachment, Route, Target};
use wasmgate_cni::result::CniResult;

use crate::EffectError;

/// What a plugin is allowed to do on the host, from the daemon's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    /// Bridges the plugin may create or join. Empty: the plugin may not use a bridge.
    pub allowed_bridges: Vec<String>,
    /// When set, every host interface the plugin names must start with this prefix.
    pub host_prefix: Option<String>,
    /// The pod CIDRs the plugin may hand out. Container, bridge and host-veth addresses and host
    /// route destinations must lie inside one of them; a bridge address must also carry that
    /// CIDR's prefix length or a longer one. Empty: every plan is refused.
    pub pod_cidrs: Vec<IpNet>,
}

/// The main routing table (`RT_TABLE_MAIN`), the only one a host route may go into.
const MAIN_TABLE: u32 = 254;
/// `RT_SCOPE_LINK`: what the host gives a gateway-less route anyway.
const SCOPE_LINK: u8 = 253;

impl NetPolicy {
    /// The granted CIDR holding `ip`, if any. A handful of CIDRs: a scan beats any index.
    fn grant_of(&self, ip: IpAddr) -> Option<&IpNet> {
        self.pod_cidrs.iter().find(|net| net.contains(&ip))
    }

    fn check_granted(&self, field: &str, text: &str, ip: IpAddr) -> Result<&IpNet, EffectError> {
        self.grant_of(ip).ok_or_else(|| {
            denied(format!(
                "{field} {text:?} is outside the plugin's pod_cidrs grant {}",
                Grant(&self.pod_cidrs)
            ))
        })
    }
}

/// Lists a grant as `[a, b]` in messages, without collecting it first.
struct Grant<'a>(&'a [IpNet]);

impl std::fmt::Display for Grant<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[")?;
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{net}")?;
        }
        f.write_str("]")
    }
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

    if policy.pod_cidrs.is_empty() {
        return Err(denied(
            "the plugin has no pod_cidrs grant, so it may not plumb anything".to_string(),
        ));
    }

    let parsed = ParsedPlan::parse(plan)?;

    for (net, text) in parsed
        .container_addresses
        .iter()
        .zip(&plan.container_addresses)
    {
        policy.check_granted("container address", text, net.addr())?;
    }
    // A bridge address installs a connected route for its whole prefix on the host: it must not
    // be wider than the grant it lies in, or a plugin could capture the node's traffic.
    if let Some(bridge) = &plan.bridge {
        for (net, text) in parsed.bridge_addresses.iter().zip(&bridge.addresses) {
            let grant = policy.check_granted("bridge address", text, net.addr())?;
            if net.prefix_len() < grant.prefix_len() {
                return Err(denied(format!(
                    "bridge address {text:?} is wider than its pod_cidrs grant {grant}: the prefix must be /{} or longer",
                    grant.prefix_len()
                )));
            }
        }
    }
    // An address on the host veth installs a connected route too, and becomes one of the node's
    // own addresses: a single granted address only.
    for (net, text) in parsed.host_addresses.iter().zip(&plan.veth.host_addresses) {
        if net.prefix_len() != net.max_prefix_len() {
            return Err(denied(format!(
                "host address {text:?} must be a single address (/32 or /128)"
            )));
        }
        policy.check_granted("host address", text, net.addr())?;
    }
    for (route, raw) in parsed.host_routes.iter().zip(&plan.host_routes) {
        check_host_route(route, raw, &parsed.container_addresses)?;
    }
    Ok(())
}

/// A host route goes only to one of the pod's own (so granted) addresses, down the veth, in the
/// main table, with no gateway, no metric of its choosing and link scope at most.
fn check_host_route(route: &RouteSpec, raw: &Route, own: &[IpNet]) -> Result<(), EffectError> {
    let dst = &raw.dst;
    let single = route.dst.prefix_len() == route.dst.max_prefix_len();
    if !single || !own.iter().any(|a| a.addr() == route.dst.addr()) {
        return Err(denied(format!(
            "host route dst {dst:?} is not one of the pod's own addresses"
        )));
    }
    if let Some(gw) = &raw.gw {
        return Err(denied(format!(
            "host route to {dst:?} has gateway {gw:?}: host routes lead down the pod's veth, with no gateway"
        )));
    }
    if let Some(table) = route.table
        && table != MAIN_TABLE
    {
        return Err(denied(format!(
            "host route to {dst:?} names table {table}: host routes go into the main table (254) only"
        )));
    }
    if let Some(priority) = route.priority {
        return Err(denied(format!(
            "host route to {dst:?} sets metric {priority}: the host chooses host routes' metric"
        )));
    }
    if let Some(scope) = route.scope
        && scope != SCOPE_LINK
    {
        return Err(denied(format!(
            "host route to {dst:?} has scope {scope}: host routes are link-scoped (253)"
        )));
    }
    Ok(())
}

/// Checks the CNI result a plugin reports for an ADD against what the host builds for it: every
/// entry of `ips` is one of `plan`'s container addresses (same address and prefix) on the
/// container interface (`target.ifname`, with a sandbox), or an entry `prev` (the call's
/// `prevResult`) already carried, which a chained plugin passes on. Without a plan, only the
/// latter. Run before anything is built, so a refusal leaves nothing behind.
pub fn check_result(
    target: &Target,
    plan: Option<&Attachment>,
    result: &CniResult,
    prev: Option<&CniResult>,
) -> Result<(), EffectError> {
    for ip in &result.ips {
        let address = ip.address.as_str();
        let net: IpNet = address
            .parse()
            .map_err(|_| denied(format!("result ip {address:?} is not a valid cidr")))?;
        let passed_on = prev.is_some_and(|p| {
            p.ips
                .iter()
                .any(|q| q.address.parse::<IpNet>().is_ok_and(|q| q == net))
        });
        if passed_on {
            continue;
        }
        let planned = plan.is_some_and(|p| {
            p.container_addresses
                .iter()
                .any(|a| a.parse::<IpNet>().is_ok_and(|a| a == net))
        });
        if !planned {
            return Err(denied(format!(
                "result ip {address:?} is not one of the container addresses the host builds"
            )));
        }
        let on_container = ip
            .interface
            .and_then(|i| result.interfaces.get(i as usize))
            .is_some_and(|i| i.name == target.ifname && i.sandbox.is_some());
        if !on_container {
            return Err(denied(format!(
                "result ip {address:?} does not reference the container interface {:?}",
                target.ifname
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
            pod_cidrs: vec![
                "10.240.0.0/16".parse().unwrap(),
                "fd00::/64".parse().unwrap(),
            ],
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
        let grant_only = NetPolicy {
            pod_cidrs: policy().pod_cidrs,
            ..NetPolicy::default()
        };
        validate(&target(), &bare, &grant_only).unwrap();
    }

    #[test]
    fn no_grant_plumbs_nothing() {
        let ungranted = NetPolicy {
            pod_cidrs: vec![],
            ..policy()
        };
        let mut bare = ptp();
        bare.veth.host_addresses.clear();
        bare.container_addresses.clear();
        bare.container_routes.clear();
        bare.host_routes.clear();
        for plan in [bridged(), ptp(), bare] {
            assert_eq!(
                denial_for(&target(), &plan, &ungranted),
                "plan denied: the plugin has no pod_cidrs grant, so it may not plumb anything"
            );
        }
    }

    #[test]
    fn container_addresses_must_be_granted() {
        let mut plan = bridged();
        plan.container_addresses = vec!["10.96.0.10/24".into()];
        assert_eq!(
            denial(&plan),
            "plan denied: container address \"10.96.0.10/24\" is outside the plugin's pod_cidrs grant [10.240.0.0/16, fd00::/64]"
        );
        // The metadata address, and an IPv6 address outside the granted /64.
        for bad in ["169.254.169.254/32", "fd00:1::5/64"] {
            let mut plan = ptp();
            plan.container_addresses = vec![bad.into()];
            plan.host_routes.clear();
            assert!(denial(&plan).contains(&format!("container address {bad:?} is outside")));
        }
        // The container address's own prefix is the pod's business.
        let mut plan = ptp();
        plan.container_addresses = vec!["10.240.0.5/8".into()];
        validate(&target(), &plan, &policy()).unwrap();
    }

    #[test]
    fn bridge_addresses_are_granted_and_no_wider_than_the_grant() {
        for wide in ["128.0.0.1/1", "0.0.0.0/0", "10.240.0.1/8"] {
            let mut plan = bridged();
            plan.bridge.as_mut().unwrap().addresses = vec![wide.into()];
            let msg = denial(&plan);
            assert!(msg.contains(&format!("bridge address {wide:?}")), "{msg}");
        }
        let mut plan = bridged();
        plan.bridge.as_mut().unwrap().addresses = vec!["10.240.0.1/15".into()];
        assert_eq!(
            denial(&plan),
            "plan denied: bridge address \"10.240.0.1/15\" is wider than its pod_cidrs grant 10.240.0.0/16: the prefix must be /16 or longer"
        );
        // Exactly the grant's length, and longer, pass.
        for ok in ["10.240.0.1/16", "10.240.3.1/24", "10.240.3.1/32"] {
            let mut plan = bridged();
            plan.bridge.as_mut().unwrap().addresses = vec![ok.into()];
            validate(&target(), &plan, &policy()).unwrap();
        }
    }

    #[test]
    fn host_addresses_must_be_granted() {
        // The node's default gateway on the host veth would become a local address of the node.
        let mut plan = ptp();
        plan.veth.host_addresses = vec!["192.168.122.1/32".into()];
        assert!(
            denial(&plan).contains(
                "host address \"192.168.122.1/32\" is outside the plugin's pod_cidrs grant"
            ),
        );
    }

    #[test]
    fn host_routes_keep_to_the_main_table_without_gateway_or_metric() {
        let with = |f: fn(&mut Route)| {
            let mut plan = ptp();
            f(&mut plan.host_routes[0]);
            plan
        };
        assert!(
            denial(&with(|r| r.table = Some(100)))
                .contains("names table 100: host routes go into the main table (254) only")
        );
        assert!(
            denial(&with(|r| r.gw = Some("10.240.0.9".into())))
                .contains("has gateway \"10.240.0.9\"")
        );
        assert!(denial(&with(|r| r.priority = Some(1))).contains("sets metric 1"));
        assert!(denial(&with(|r| r.scope = Some(254))).contains("has scope 254"));
        // The main table and link scope, spelled out, are what the host does anyway.
        validate(
            &target(),
            &with(|r| {
                r.table = Some(254);
                r.scope = Some(253);
            }),
            &policy(),
        )
        .unwrap();
    }

    fn result_for(addresses: &[(&str, Option<u32>)]) -> CniResult {
        use wasmgate_cni::result::{Interface, IpConfig};
        CniResult {
            interfaces: vec![
                Interface {
                    name: "wgp1".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    sandbox: Some("/var/run/netns/pod".into()),
                    ..Interface::default()
                },
            ],
            ips: addresses
                .iter()
                .map(|(a, i)| IpConfig {
                    address: a.to_string(),
                    gateway: None,
                    interface: *i,
                })
                .collect(),
            ..CniResult::default()
        }
    }

    #[test]
    fn the_reported_result_must_agree_with_the_plan() {
        let (t, plan) = (target(), ptp());
        check_result(
            &t,
            Some(&plan),
            &result_for(&[("10.240.0.5/24", Some(1))]),
            None,
        )
        .unwrap();
        check_result(&t, Some(&plan), &result_for(&[]), None).unwrap();

        let refused =
            |plan: Option<&Attachment>, r: CniResult, prev: Option<&CniResult>| match check_result(
                &t, plan, &r, prev,
            ) {
                Err(e @ EffectError::Denied(_)) => e.to_string(),
                other => panic!("expected a denial, got {other:?}"),
            };
        // Another address, the right address with another prefix, and no plan at all.
        assert_eq!(
            refused(Some(&plan), result_for(&[("10.96.0.10/24", Some(1))]), None),
            "plan denied: result ip \"10.96.0.10/24\" is not one of the container addresses the host builds"
        );
        assert!(
            refused(Some(&plan), result_for(&[("10.240.0.5/32", Some(1))]), None)
                .contains("\"10.240.0.5/32\"")
        );
        assert!(
            refused(None, result_for(&[("10.240.0.5/24", Some(1))]), None).contains("not one of")
        );
        // The right address on the host veth, or on no interface.
        for iface in [Some(0), None, Some(7)] {
            assert!(
                refused(Some(&plan), result_for(&[("10.240.0.5/24", iface)]), None)
                    .contains("does not reference the container interface \"eth0\""),
                "{iface:?}"
            );
        }
        assert!(
            refused(Some(&plan), result_for(&[("nope", Some(1))]), None)
                .contains("not a valid cidr")
        );

        // A chained plugin passes on what prevResult carried, whatever interface it was on.
        let prev = result_for(&[("192.168.5.5/24", Some(0))]);
        let chained = result_for(&[("192.168.5.5/24", Some(0)), ("10.240.0.5/24", Some(1))]);
        check_result(&t, Some(&plan), &chained, Some(&prev)).unwrap();
        check_result(&t, None, &prev, Some(&prev)).unwrap();
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
            pod_cidrs: policy().pod_cidrs,
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
