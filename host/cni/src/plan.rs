//! The attachment plan a network plugin returns, as plain data.
//!
//! The daemon converts the plugin's WIT record into these types, validates them against the call
//! and hands them to `wasmgate-effects`, which carries them out with netlink. They are also what the
//! daemon records on disk so a DEL can undo exactly what an ADD did.

use serde::{Deserialize, Serialize};

/// A CNI route, as in the result's `routes` and in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// CIDR destination.
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

/// A host bridge that the host end of the veth joins; created when missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    pub name: String,
    /// CIDR addresses, usually the pods' gateway.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// One veth pair. The container end is always named `CNI_IFNAME` and lives in `CNI_NETNS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Veth {
    pub host_name: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// CIDR addresses on the host end (point-to-point setups).
    #[serde(default)]
    pub host_addresses: Vec<String>,
}

/// Everything one ADD builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub veth: Veth,
    #[serde(default)]
    pub bridge: Option<Bridge>,
    /// CIDR addresses of the container interface.
    #[serde(default)]
    pub container_addresses: Vec<String>,
    #[serde(default)]
    pub container_routes: Vec<Route>,
    #[serde(default)]
    pub host_routes: Vec<Route>,
}

/// Where an attachment is: the call's netns and ifname. Effects may touch nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Path of the network namespace, e.g. `/var/run/netns/pod1`.
    pub netns: String,
    /// Name of the container-side interface (`CNI_IFNAME`).
    pub ifname: String,
}
