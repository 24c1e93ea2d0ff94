//! Between the spec's JSON types (`wasmgate-cni`) and the WIT records the plugin sees.

use wasmgate_cni::conf::NetConf;
use wasmgate_cni::env::Invocation;
use wasmgate_cni::error::CniError;
use wasmgate_cni::plan;
use wasmgate_cni::result::{CniResult, Dns, Interface, IpConfig};
use wasmgate_engine::bindings::cni_types as wit;

/// The version plugins always see `prevResult` in, whatever the runtime sent.
const PLUGIN_RESULT_VERSION: &str = "1.1.0";

fn json_text(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

pub fn net_conf(conf: &NetConf) -> Result<wit::NetConf, CniError> {
    let prev_result = match &conf.prev_result {
        Some(v) => Some(
            CniResult::from_json(v)?
                .to_json(PLUGIN_RESULT_VERSION)
                .to_string(),
        ),
        None => None,
    };
    Ok(wit::NetConf {
        cni_version: conf.cni_version.clone(),
        name: conf.name.clone(),
        type_: conf.type_.clone(),
        prev_result,
        runtime_config: json_text(&conf.runtime_config),
        args: json_text(&conf.args),
        raw: conf.raw.to_string(),
    })
}

pub fn invocation(inv: &Invocation) -> wit::Invocation {
    wit::Invocation {
        container_id: inv.container_id.clone(),
        netns: inv.netns.clone(),
        ifname: inv.ifname.clone(),
        args: inv.args.clone(),
    }
}

pub fn cni_error(e: wit::CniError) -> CniError {
    CniError::new(e.code, e.msg, e.details)
}

pub fn route(r: wit::Route) -> plan::Route {
    plan::Route {
        dst: r.dst,
        gw: r.gw,
        mtu: r.mtu,
        advmss: None,
        priority: r.priority,
        table: r.table,
        scope: r.scope,
    }
}

pub fn attachment(a: wit::Attachment) -> plan::Attachment {
    plan::Attachment {
        veth: plan::Veth {
            host_name: a.veth.host_name,
            mtu: a.veth.mtu,
            host_addresses: a.veth.host_addresses,
        },
        bridge: a.bridge.map(|b| plan::Bridge {
            name: b.name,
            addresses: b.addresses,
            mtu: b.mtu,
        }),
        container_addresses: a.container_addresses,
        container_routes: a.container_routes.into_iter().map(route).collect(),
        host_routes: a.host_routes.into_iter().map(route).collect(),
    }
}

pub fn result(r: wit::CniResult, cni_version: &str) -> CniResult {
    CniResult {
        cni_version: cni_version.to_string(),
        interfaces: r
            .interfaces
            .into_iter()
            .map(|i| Interface {
                name: i.name,
                mac: i.mac,
                mtu: i.mtu,
                sandbox: i.sandbox,
                ..Default::default()
            })
            .collect(),
        ips: r
            .ips
            .into_iter()
            .map(|ip| IpConfig {
                address: ip.address,
                gateway: ip.gateway,
                interface: ip.iface,
            })
            .collect(),
        routes: r.routes.into_iter().map(route).collect(),
        dns: r.dns.map(|d| Dns {
            nameservers: d.nameservers,
            domain: d.domain,
            search: d.search,
            options: d.options,
        }),
    }
}

pub fn attachment_ref(r: &wasmgate_cni::conf::AttachmentRef) -> wit::AttachmentRef {
    wit::AttachmentRef {
        container_id: r.container_id.clone(),
        ifname: r.ifname.clone(),
    }
}
