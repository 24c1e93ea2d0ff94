//! What a pod's sandbox config becomes for its CNI plugins, as containerd's CRI plugin builds it:
//! `CNI_ARGS`, and the capability arguments a plugin's `runtimeConfig` is made of.

use serde_json::{Map, Value, json};
use wasmgate_proto::cri::v1 as pb;

/// containerd's key for the pod's annotations among the capability arguments.
pub const POD_ANNOTATIONS: &str = "io.kubernetes.cri.pod-annotations";

/// Whether the pod shares the node's network namespace: then there is nothing to set up.
pub fn host_network(config: &pb::PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network == pb::NamespaceMode::Node as i32)
}

/// `CNI_ARGS`: the pod's identity, with `IgnoreUnknown=1` so that plugins that know none of the
/// keys do not fail on them.
pub fn cni_args(sandbox_id: &str, md: &pb::PodSandboxMetadata) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID={}",
        md.namespace, md.name, md.uid
    )
}

/// The capability arguments containerd hands libcni; a plugin gets the ones it declares in its
/// `capabilities` as its `runtimeConfig`. Bandwidth (from the pod's
/// `kubernetes.io/*-bandwidth` annotations) is not among them.
pub fn capability_args(config: &pb::PodSandboxConfig) -> Map<String, Value> {
    let mut caps = Map::new();
    // Only mappings with a host port: a container port alone needs nothing of the network.
    let ports: Vec<Value> = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let protocol = pb::Protocol::try_from(p.protocol)
                .unwrap_or(pb::Protocol::Tcp)
                .as_str_name()
                .to_lowercase();
            json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": protocol,
                "hostIP": p.host_ip,
            })
        })
        .collect();
    caps.insert("portMappings".into(), Value::Array(ports));
    if let Some(dns) = &config.dns_config {
        caps.insert(
            "dns".into(),
            json!({"servers": dns.servers, "searches": dns.searches, "options": dns.options}),
        );
    }
    if let Some(parent) = config
        .linux
        .as_ref()
        .map(|l| &l.cgroup_parent)
        .filter(|p| !p.is_empty())
    {
        caps.insert("cgroupPath".into(), json!(parent));
    }
    let annotations: Map<String, Value> = config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    caps.insert(POD_ANNOTATIONS.into(), Value::Object(annotations));
    caps
}
