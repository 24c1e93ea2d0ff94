//! The CNI commands, as pure logic over [`Kv`] and [`Settings`].
//!
//! `lib.rs` calls these with the real `wasi:keyvalue` bucket and `wasi:config` store; the tests
//! call them with in-memory fakes.

// BTreeSet, not HashSet: HashSet's random seed would make std import wasi:random.
use std::collections::BTreeSet;

use crate::config::{self, Settings};
use crate::error::{self, ALREADY_EXISTS, INCOMPATIBLE_VERSION, NOT_AVAILABLE, invalid};
use crate::ipam::{Ipam, Kv};
use crate::plan;
use crate::prev;
use crate::wasmgate::plugin::cni_types::{
    AddOutcome, Attachment, AttachmentRef, CniError, Invocation, NetConf,
};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub fn versions() -> Vec<String> {
    VERSIONS.iter().map(|v| v.to_string()).collect()
}

/// The checks every command makes: a cniVersion we speak, and a name usable as a key prefix.
fn preflight(conf: &NetConf) -> Result<(), CniError> {
    if !VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError {
            code: INCOMPATIBLE_VERSION,
            msg: format!("cniVersion {:?} is not supported", conf.cni_version),
            details: format!("supported versions: {}", VERSIONS.join(", ")),
        });
    }
    // State keys are "<name>/...": a '/' in the name could alias another network's keys.
    if conf.name.is_empty() || conf.name.contains('/') {
        return Err(invalid(format!(
            "name {:?} must be non-empty and contain no '/'",
            conf.name
        )));
    }
    Ok(())
}

pub fn add(
    conf: &NetConf,
    call: &Invocation,
    kv: &impl Kv,
    settings: &impl Settings,
) -> Result<AddOutcome, CniError> {
    preflight(conf)?;
    let config = config::parse(&conf.raw, settings)?;
    // Decode everything before allocating, so a bad prevResult does not leak an address.
    let prev = conf.prev_result.as_deref().map(prev::parse).transpose()?;
    let ipam = Ipam::new(kv, &conf.name);
    let (cid, ifname) = (call.container_id.as_str(), call.ifname.as_str());
    if ipam.exists(cid, ifname)? {
        return Err(error::err(
            ALREADY_EXISTS,
            format!("attachment {cid}/{ifname} already exists"),
        ));
    }
    let ip = match requested_ip(conf, call)? {
        Some(ip) => ipam.allocate_exact(&config.pool, ip, cid, ifname)?,
        None => ipam.allocate(&config.pool, cid, ifname)?,
    };
    Ok(AddOutcome {
        result: plan::result(&config, ip, cid, ifname, &call.netns, prev.as_ref()),
        attachment: Some(plan::attachment(&config, ip, cid, ifname)),
    })
}

/// A specific address the runtime asks for, in host-local's order of precedence: the `ips`
/// capability (`runtimeConfig.ips`), then `args.cni.ips`, then `IP=` in CNI_ARGS. Only the first
/// IPv4 entry counts: this plugin gives one address per attachment.
fn requested_ip(conf: &NetConf, call: &Invocation) -> Result<Option<std::net::Ipv4Addr>, CniError> {
    let from_json =
        |text: &Option<String>, pointer: &str, what: &str| -> Result<Option<String>, CniError> {
            let Some(text) = text else { return Ok(None) };
            let v: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| error::err(error::DECODE_FAILURE, format!("{what}: {e}")))?;
            match v.pointer(pointer) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Array(ips)) => ips
                    .iter()
                    .find_map(|ip| ip.as_str().filter(|s| !s.contains(':')))
                    .map(|s| Ok(Some(s.to_string())))
                    .unwrap_or(Ok(None)),
                Some(other) => Err(error::invalid(format!(
                    "{what}: ips must be a list, got {other}"
                ))),
            }
        };
    let raw = match from_json(&conf.runtime_config, "/ips", "runtimeConfig")? {
        Some(ip) => Some(ip),
        None => match from_json(&conf.args, "/cni/ips", "args")? {
            Some(ip) => Some(ip),
            None => call
                .args
                .iter()
                .find(|(k, _)| k == "IP")
                .map(|(_, v)| v.clone()),
        },
    };
    let Some(raw) = raw else { return Ok(None) };
    // Accept a bare address or a CIDR; the prefix always comes from podcidr.
    let addr = raw.split('/').next().unwrap_or_default();
    addr.parse()
        .map(Some)
        .map_err(|_| error::invalid(format!("requested address {raw:?} is not an IPv4 address")))
}

/// Releases the address. Needs neither a valid `raw` config nor the netns: the state is keyed by
/// network name, and DEL must succeed whenever it can.
pub fn del(conf: &NetConf, call: &Invocation, kv: &impl Kv) -> Result<(), CniError> {
    preflight(conf)?;
    Ipam::new(kv, &conf.name).release(&call.container_id, &call.ifname)?;
    Ok(())
}

pub fn check(
    conf: &NetConf,
    call: &Invocation,
    kv: &impl Kv,
    settings: &impl Settings,
) -> Result<Option<Attachment>, CniError> {
    preflight(conf)?;
    let config = config::parse(&conf.raw, settings)?;
    let Some(prev_json) = conf.prev_result.as_deref() else {
        return Err(invalid("prevResult is required for CHECK"));
    };
    let prev = prev::parse(prev_json)?;
    let (cid, ifname) = (call.container_id.as_str(), call.ifname.as_str());
    let Some(ip) = Ipam::new(kv, &conf.name).lookup(cid, ifname)? else {
        return Err(invalid(format!(
            "no address is allocated to {cid}/{ifname} in network {}",
            conf.name
        )));
    };
    if !config.pool.is_assignable(ip) {
        return Err(invalid(format!(
            "address {ip} of {cid}/{ifname} is not assignable in podcidr {}",
            config.pool.cidr()
        )));
    }
    if !prev.has_address(ip) {
        return Err(invalid(format!(
            "prevResult has no ip {ip} for {cid}/{ifname}"
        )));
    }
    Ok(Some(plan::attachment(&config, ip, cid, ifname)))
}

pub fn status(conf: &NetConf, kv: &impl Kv, settings: &impl Settings) -> Result<(), CniError> {
    preflight(conf)?;
    let config = config::parse(&conf.raw, settings)?;
    let used = Ipam::new(kv, &conf.name).in_use()?;
    if used >= config.pool.size() {
        return Err(CniError {
            code: NOT_AVAILABLE,
            msg: format!("address pool {} exhausted", config.pool.cidr()),
            details: format!("{used} of {} addresses in use", config.pool.size()),
        });
    }
    Ok(())
}

/// Releases every allocation of this network that is not in `valid`, like DEL for each.
pub fn gc(
    conf: &NetConf,
    valid: &[AttachmentRef],
    kv: &impl Kv,
) -> Result<Vec<AttachmentRef>, CniError> {
    preflight(conf)?;
    let keep: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|r| (r.container_id.as_str(), r.ifname.as_str()))
        .collect();
    let ipam = Ipam::new(kv, &conf.name);
    let mut released = Vec::new();
    for (cid, ifname) in ipam.attachments()? {
        if keep.contains(&(cid.as_str(), ifname.as_str())) {
            continue;
        }
        ipam.release(&cid, &ifname)?;
        released.push(AttachmentRef {
            container_id: cid,
            ifname,
        });
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::FakeSettings;
    use crate::error::{DECODE_FAILURE, INVALID_CONFIG, POOL_EXHAUSTED};
    use crate::ipam::tests::FakeKv;
    use crate::names::host_veth_name;

    fn conf(raw: &str) -> NetConf {
        NetConf {
            cni_version: "1.1.0".into(),
            name: "demo".into(),
            type_: "wasmgate-cni".into(),
            prev_result: None,
            runtime_config: None,
            args: None,
            raw: raw.into(),
        }
    }

    fn with_prev(mut c: NetConf, prev: &str) -> NetConf {
        c.prev_result = Some(prev.into());
        c
    }

    fn call(cid: &str, ifname: &str) -> Invocation {
        Invocation {
            container_id: cid.into(),
            netns: format!("/var/run/netns/{cid}"),
            ifname: ifname.into(),
            args: vec![],
        }
    }

    fn aref(cid: &str, ifname: &str) -> AttachmentRef {
        AttachmentRef {
            container_id: cid.into(),
            ifname: ifname.into(),
        }
    }

    const RAW: &str =
        r#"{"cniVersion":"1.1.0","name":"demo","type":"wasmgate-cni","podcidr":"10.240.0.0/24"}"#;

    #[test]
    fn add_in_bridge_mode_builds_the_plan_and_result() {
        let kv = FakeKv::default();
        let out = add(
            &conf(RAW),
            &call("c1", "eth0"),
            &kv,
            &FakeSettings::default(),
        )
        .unwrap();
        let veth = host_veth_name("c1", "eth0");

        let att = out.attachment.unwrap();
        assert_eq!(att.veth.host_name, veth);
        assert_eq!(att.veth.mtu, Some(1500));
        assert!(att.veth.host_addresses.is_empty());
        let bridge = att.bridge.unwrap();
        assert_eq!(bridge.name, "wgbr0");
        assert_eq!(bridge.addresses, vec!["10.240.0.1/24"]);
        assert_eq!(att.container_addresses, vec!["10.240.0.2/24"]);
        assert_eq!(att.container_routes.len(), 1);
        assert_eq!(att.container_routes[0].dst, "0.0.0.0/0");
        assert_eq!(att.container_routes[0].gw.as_deref(), Some("10.240.0.1"));
        assert!(att.host_routes.is_empty());

        let r = out.result;
        assert_eq!(r.interfaces.len(), 2);
        assert_eq!(r.interfaces[0].name, veth);
        assert_eq!(r.interfaces[0].sandbox, None);
        assert_eq!(r.interfaces[1].name, "eth0");
        assert_eq!(
            r.interfaces[1].sandbox.as_deref(),
            Some("/var/run/netns/c1")
        );
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.ips[0].address, "10.240.0.2/24");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.240.0.1"));
        assert_eq!(r.ips[0].iface, Some(1));
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
        assert_eq!(r.dns, None);
    }

    #[test]
    fn add_in_ptp_mode_routes_a_host_32() {
        let kv = FakeKv::default();
        let raw = r#"{"podcidr":"10.240.0.0/24","mode":"ptp","mtu":1400}"#;
        let out = add(
            &conf(raw),
            &call("c1", "eth0"),
            &kv,
            &FakeSettings::default(),
        )
        .unwrap();
        let att = out.attachment.unwrap();
        assert!(att.bridge.is_none());
        assert_eq!(att.veth.host_addresses, vec!["10.240.0.1/32"]);
        assert_eq!(att.veth.mtu, Some(1400));
        assert_eq!(att.host_routes.len(), 1);
        assert_eq!(att.host_routes[0].dst, "10.240.0.2/32");
        assert_eq!(att.host_routes[0].gw, None);
        assert_eq!(att.container_addresses, vec!["10.240.0.2/24"]);
        assert_eq!(att.container_routes[0].gw.as_deref(), Some("10.240.0.1"));
    }

    #[test]
    fn add_twice_without_del_is_code_102() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        add(&conf(RAW), &call("c1", "eth0"), &kv, &s).unwrap();
        let e = add(&conf(RAW), &call("c1", "eth0"), &kv, &s).unwrap_err();
        assert_eq!(e.code, ALREADY_EXISTS);
        assert_eq!(e.msg, "attachment c1/eth0 already exists");
        // A second interface of the same container is a separate attachment.
        add(&conf(RAW), &call("c1", "eth1"), &kv, &s).unwrap();
    }

    #[test]
    fn add_chains_after_prev_result() {
        let kv = FakeKv::default();
        let prev = r#"{"interfaces":[{"name":"a"},{"name":"b","sandbox":"/ns"}],
                       "ips":[{"address":"192.168.1.5/24","interface":1}],
                       "routes":[{"dst":"192.168.0.0/16"}],
                       "dns":{"nameservers":["9.9.9.9"]}}"#;
        let out = add(
            &with_prev(conf(RAW), prev),
            &call("c1", "eth1"),
            &kv,
            &FakeSettings::default(),
        )
        .unwrap();
        let r = out.result;
        let names: Vec<_> = r.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["a", "b", host_veth_name("c1", "eth1").as_str(), "eth1"]
        );
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[0].iface, Some(1));
        assert_eq!(r.ips[1].address, "10.240.0.2/24");
        assert_eq!(r.ips[1].iface, Some(3));
        let dsts: Vec<_> = r.routes.iter().map(|r| r.dst.as_str()).collect();
        assert_eq!(dsts, ["192.168.0.0/16", "0.0.0.0/0"]);
        // No dns in our config: the previous plugin's is kept.
        assert_eq!(r.dns.unwrap().nameservers, vec!["9.9.9.9"]);

        // Our own dns wins.
        let raw = r#"{"podcidr":"10.240.0.0/24","dns":{"nameservers":["10.240.0.10"]}}"#;
        let out = add(
            &with_prev(conf(raw), prev),
            &call("c2", "eth1"),
            &kv,
            &FakeSettings::default(),
        )
        .unwrap();
        assert_eq!(out.result.dns.unwrap().nameservers, vec!["10.240.0.10"]);
    }

    #[test]
    fn bad_prev_result_fails_before_allocating() {
        let kv = FakeKv::default();
        let e = add(
            &with_prev(conf(RAW), r#"{"ips":"nope"}"#),
            &call("c1", "eth0"),
            &kv,
            &FakeSettings::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, DECODE_FAILURE);
        assert!(kv.keys().is_empty());
    }

    #[test]
    fn add_reports_exhaustion() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        let raw = r#"{"podcidr":"10.0.0.0/30"}"#;
        add(&conf(raw), &call("c1", "eth0"), &kv, &s).unwrap();
        let e = add(&conf(raw), &call("c2", "eth0"), &kv, &s).unwrap_err();
        assert_eq!(e.code, POOL_EXHAUSTED);
        assert_eq!(e.msg, "no addresses available in 10.0.0.0/30");
    }

    #[test]
    fn del_releases_and_is_idempotent_without_netns_or_config() {
        let kv = FakeKv::default();
        add(
            &conf(RAW),
            &call("c1", "eth0"),
            &kv,
            &FakeSettings::default(),
        )
        .unwrap();
        let mut gone = call("c1", "eth0");
        gone.netns.clear();
        // DEL does not need podcidr: a config edited since ADD still frees the address.
        del(&conf("{}"), &gone, &kv).unwrap();
        del(&conf("{}"), &gone, &kv).unwrap();
        del(&conf(RAW), &call("never", "eth0"), &kv).unwrap();
        assert_eq!(kv.keys(), vec!["demo/cursor"]);
    }

    #[test]
    fn check_returns_the_same_attachment_as_add() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        let out = add(&conf(RAW), &call("c1", "eth0"), &kv, &s).unwrap();
        let prev = r#"{"ips":[{"address":"10.240.0.2/24","gateway":"10.240.0.1","interface":1}]}"#;
        let got = check(&with_prev(conf(RAW), prev), &call("c1", "eth0"), &kv, &s).unwrap();
        assert_eq!(got, out.attachment);
    }

    #[test]
    fn check_errors_are_code_7() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        add(&conf(RAW), &call("c1", "eth0"), &kv, &s).unwrap();
        let prev = r#"{"ips":[{"address":"10.240.0.2/24"}]}"#;

        let e = check(&conf(RAW), &call("c1", "eth0"), &kv, &s).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (INVALID_CONFIG, "prevResult is required for CHECK")
        );

        let e = check(&with_prev(conf(RAW), prev), &call("c2", "eth0"), &kv, &s).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("c2/eth0"), "{}", e.msg);

        let other = r#"{"ips":[{"address":"10.240.0.9/24"}]}"#;
        let e = check(&with_prev(conf(RAW), other), &call("c1", "eth0"), &kv, &s).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("10.240.0.2"), "{}", e.msg);

        // The pool moved since ADD.
        let moved = r#"{"podcidr":"10.99.0.0/24"}"#;
        let e = check(&with_prev(conf(moved), prev), &call("c1", "eth0"), &kv, &s).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("podcidr"), "{}", e.msg);
    }

    #[test]
    fn status_reports_a_full_pool_as_code_50() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        let raw = r#"{"podcidr":"10.0.0.0/29"}"#; // 5 assignable
        status(&conf(raw), &kv, &s).unwrap();
        for i in 0..5 {
            add(&conf(raw), &call(&format!("c{i}"), "eth0"), &kv, &s).unwrap();
        }
        let e = status(&conf(raw), &kv, &s).unwrap_err();
        assert_eq!(e.code, NOT_AVAILABLE);
        assert_eq!(e.msg, "address pool 10.0.0.0/29 exhausted");
        del(&conf(raw), &call("c3", "eth0"), &kv).unwrap();
        status(&conf(raw), &kv, &s).unwrap();

        assert_eq!(
            status(&conf(r#"{"podcidr":"fd00::/64"}"#), &kv, &s)
                .unwrap_err()
                .code,
            INVALID_CONFIG
        );
    }

    #[test]
    fn gc_releases_only_what_is_not_valid() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        for (cid, ifname) in [
            ("c1", "eth0"),
            ("c2", "eth0"),
            ("c2", "eth1"),
            ("c3", "eth0"),
        ] {
            add(&conf(RAW), &call(cid, ifname), &kv, &s).unwrap();
        }
        let mut other = conf(RAW);
        other.name = "other".into();
        add(&other, &call("c9", "eth0"), &kv, &s).unwrap();

        let mut released = gc(&conf(RAW), &[aref("c1", "eth0"), aref("c2", "eth1")], &kv).unwrap();
        released.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        assert_eq!(released, vec![aref("c2", "eth0"), aref("c3", "eth0")]);
        let ipam = Ipam::new(&kv, "demo");
        assert!(ipam.lookup("c1", "eth0").unwrap().is_some());
        assert!(ipam.lookup("c2", "eth0").unwrap().is_none());
        assert_eq!(ipam.in_use().unwrap(), 2);
        // Other networks are untouched, and a second GC has nothing left to do.
        assert!(
            Ipam::new(&kv, "other")
                .lookup("c9", "eth0")
                .unwrap()
                .is_some()
        );
        assert!(
            gc(&conf(RAW), &[aref("c1", "eth0"), aref("c2", "eth1")], &kv)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn every_command_checks_version_and_name() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        let mut old = conf(RAW);
        old.cni_version = "0.2.0".into();
        assert_eq!(
            add(&old, &call("c1", "eth0"), &kv, &s).unwrap_err().code,
            INCOMPATIBLE_VERSION
        );
        assert_eq!(
            del(&old, &call("c1", "eth0"), &kv).unwrap_err().code,
            INCOMPATIBLE_VERSION
        );
        let mut slash = conf(RAW);
        slash.name = "a/b".into();
        assert_eq!(status(&slash, &kv, &s).unwrap_err().code, INVALID_CONFIG);
        assert_eq!(gc(&slash, &[], &kv).unwrap_err().code, INVALID_CONFIG);
        assert_eq!(versions(), ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    }

    fn first_ip(out: &AddOutcome) -> String {
        out.result.ips[0].address.clone()
    }

    #[test]
    fn requested_addresses_follow_host_locals_precedence() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        // CNI_ARGS IP= alone.
        let mut c = call("c1", "eth0");
        c.args = vec![("IP".into(), "10.240.0.50".into())];
        assert_eq!(
            first_ip(&add(&conf(RAW), &c, &kv, &s).unwrap()),
            "10.240.0.50/24"
        );
        // args.cni.ips beats CNI_ARGS; IPv6 entries are skipped.
        let mut n = conf(RAW);
        n.args = Some(r#"{"cni":{"ips":["fd00::9","10.240.0.60/24"]}}"#.into());
        let mut c = call("c2", "eth0");
        c.args = vec![("IP".into(), "10.240.0.51".into())];
        assert_eq!(first_ip(&add(&n, &c, &kv, &s).unwrap()), "10.240.0.60/24");
        // The runtimeConfig ips capability beats both.
        n.runtime_config = Some(r#"{"ips":["10.240.0.70/24"]}"#.into());
        assert_eq!(
            first_ip(&add(&n, &call("c3", "eth0"), &kv, &s).unwrap()),
            "10.240.0.70/24"
        );
    }

    #[test]
    fn requested_addresses_are_checked() {
        let kv = FakeKv::default();
        let s = FakeSettings::default();
        let ask = |cid: &str, ip: &str| {
            let mut n = conf(RAW);
            n.runtime_config = Some(format!(r#"{{"ips":["{ip}"]}}"#));
            add(&n, &call(cid, "eth0"), &kv, &s)
        };
        ask("c1", "10.240.0.9").unwrap();
        assert_eq!(
            ask("c2", "10.240.0.9").unwrap_err().code,
            crate::error::ADDRESS_IN_USE
        );
        assert_eq!(
            ask("c3", "10.240.0.1").unwrap_err().code,
            INVALID_CONFIG,
            "the gateway"
        );
        assert_eq!(
            ask("c4", "10.99.0.9").unwrap_err().code,
            INVALID_CONFIG,
            "outside podcidr"
        );
        assert_eq!(ask("c5", "not-an-ip").unwrap_err().code, INVALID_CONFIG);
        // A refused request leaves nothing allocated, and DEL frees a requested address.
        del(&conf(RAW), &call("c1", "eth0"), &kv).unwrap();
        ask("c2", "10.240.0.9").unwrap();
    }
}
