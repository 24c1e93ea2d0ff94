//! The builtin runtime's pod networks as the tests look at them: the namespaces a daemon of
//! [`Daemon::start_node_with`] pins in [`Daemon::netns_dir`], and what is inside one. They are
//! not in `/var/run/netns`, so `ip -n` cannot name them; `nsenter --net=<path>` enters them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Daemon;

impl Daemon {
    /// Where a daemon of [`Daemon::start_node_with`] pins its pods' network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.dir.join("netns")
    }

    /// The files in [`Daemon::netns_dir`] now, by name.
    pub fn pinned_netns(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.netns_dir()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// The pod's network namespace as a verbose PodSandboxStatus reports it, where containerd
/// reports it: `runtimeSpec.linux.namespaces[type=network].path` of its `info`.
pub fn netns_of(info: &HashMap<String, String>) -> Option<PathBuf> {
    let info: Value = serde_json::from_str(info.get("info")?).ok()?;
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .map(PathBuf::from)
}

/// A network namespace pinned at a path.
pub struct Pinned<'a>(pub &'a Path);

impl Pinned<'_> {
    /// Runs `cmd args` inside the namespace; its stdout, panicking when it fails.
    pub fn run(&self, cmd: &str, args: &[&str]) -> String {
        let net = format!("--net={}", self.0.display());
        let mut all = vec![net.as_str(), cmd];
        all.extend_from_slice(args);
        crate::sh("nsenter", &all)
    }

    /// `ip -j addr show` inside, one object per link.
    pub fn links(&self) -> Vec<Value> {
        serde_json::from_str(&self.run("ip", &["-j", "addr", "show"])).unwrap()
    }

    fn link(&self, ifname: &str) -> Value {
        self.links()
            .into_iter()
            .find(|l| l["ifname"] == ifname)
            .unwrap_or_else(|| panic!("no {ifname} in {}", self.0.display()))
    }

    /// The IPv4 addresses (CIDR) on `ifname`.
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        self.link(ifname)["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect()
    }

    pub fn is_up(&self, ifname: &str) -> bool {
        self.link(ifname)["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "UP"))
    }

    pub fn mtu(&self, ifname: &str) -> u64 {
        self.link(ifname)["mtu"].as_u64().unwrap()
    }

    /// A sysctl as the namespace sees it, e.g. `net.ipv4.conf.eth0.rp_filter`.
    pub fn sysctl(&self, key: &str) -> String {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run("cat", &[&path]).trim().to_string()
    }
}
