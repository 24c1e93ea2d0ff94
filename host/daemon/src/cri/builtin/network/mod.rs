//! The builtin runtime's pod network (`[cri.network]`): what containerd's CRI plugin does for a
//! pod that is not on the host network.
//!
//! * RunPodSandbox: the node's network config is read ([`confdir`]), a record of the pod's
//!   network is written (so that nothing is lost to a crash from here on), a network namespace
//!   is pinned at `<netns_dir>/wasmgate-<sandbox id prefix>` with `lo` up, and the config list is
//!   ADDed into it ([`chain`]), with `CNI_IFNAME=eth0` and the pod's `CNI_ARGS` and capability
//!   arguments ([`args`]). The pod's IPs are those the result puts on `eth0`, IPv4 first. When
//!   the ADD fails (or gives the pod no address), the list is DELeted (failures logged), the
//!   namespace removed and the record dropped, and RunPodSandbox fails naming the plugin and its
//!   CNI error.
//! * StopPodSandbox (and RemovePodSandbox, which stops first): the list is DELeted in reverse
//!   order with the cached ADD result as `prevResult`, then the namespace is removed and the
//!   record dropped. A DEL failure fails the call and keeps everything, so kubelet's retry DELs
//!   again; once the namespace is gone (removed behind our back) the DEL runs with an empty
//!   `CNI_NETNS` and passes over the failures containerd passes over
//!   ([`NetError::passable_on_del`]). A second stop finds no record and does nothing.
//! * Start: the builtin runtime forgets its pods when the daemon stops, so every record left is
//!   a pod no one can stop any more; [`PodNetwork::recover`] tears each one down.

mod args;
mod chain;
mod confdir;
mod error;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use wasmgate_cni::CniResult;
use wasmgate_effects::{EffectError, LinuxNetns, NetnsEffects, PluginExec, ProcessExec};
use wasmgate_proto::cri::v1 as pb;

use crate::config::{Config, PodNetworkSection};
use crate::state::{PodNetworkRecord, Records};

pub use args::host_network;
pub use error::{NetError, PluginFailure};
pub use confdir::DEFAULT_PODCIDR;

use chain::Chain;

/// The pod's interface, as containerd names it.
pub const IFNAME: &str = "eth0";
/// Pinned namespaces are named this followed by the sandbox ID's first 16 characters.
pub const NETNS_PREFIX: &str = "wasmgate-";

/// Where the pod network looks for its config and plugins, and pins namespaces.
#[derive(Debug, Clone)]
pub struct Settings {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub netns_dir: PathBuf,
    pub timeout: Duration,
}

/// A pod's network as RunPodSandbox left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attached {
    /// The network's name in its config.
    pub network: String,
    pub netns: PathBuf,
    /// The pod's addresses, without prefix length, IPv4 first: the first is `status.network.ip`.
    pub ips: Vec<String>,
    /// The list's ADD result.
    pub result: Value,
}

pub struct PodNetwork {
    settings: Settings,
    netns: Arc<dyn NetnsEffects>,
    exec: Arc<dyn PluginExec>,
    records: Arc<Records>,
    /// One teardown per sandbox at a time: StopPodSandbox and RemovePodSandbox may race.
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PodNetwork {
    pub fn new(
        settings: Settings,
        netns: Arc<dyn NetnsEffects>,
        exec: Arc<dyn PluginExec>,
        records: Arc<Records>,
    ) -> Self {
        Self {
            settings,
            netns,
            exec,
            records,
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// The pod network `[cri.network]` describes, on the real kernel and processes. Writes the
    /// default network into a conf dir wasmgate owns that holds none.
    pub fn from_config(
        cfg: &Config,
        section: &PodNetworkSection,
        records: Arc<Records>,
    ) -> Result<Self, NetError> {
        let conf_dir = section.conf_dir(&cfg.state_dir);
        // Config::validate refuses an owned conf dir without [cni].
        if let (true, Some(cni)) = (section.owns_conf_dir(), &cfg.cni)
            && let Some(file) = confdir::write_default(&conf_dir, cni)?
        {
            tracing::info!(file = %file.display(), "wrote the default pod network config");
        }
        let settings = Settings {
            conf_dir,
            bin_dirs: section.bin_dirs(),
            netns_dir: section.netns_dir.clone(),
            timeout: section.plugin_timeout(),
        };
        Ok(Self::new(
            settings,
            Arc::new(LinuxNetns::new()),
            Arc::new(ProcessExec::new()),
            records,
        ))
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether pods can be networked now: the conf dir holds a config that loads. The runtime's
    /// NetworkReady condition.
    pub fn ready(&self) -> Result<(), NetError> {
        confdir::load(&self.settings.conf_dir).map(|_| ())
    }

    /// Where the pod `sandbox_id`'s namespace is pinned.
    pub fn netns_path(&self, sandbox_id: &str) -> PathBuf {
        let short = sandbox_id.get(..16).unwrap_or(sandbox_id);
        self.settings
            .netns_dir
            .join(format!("{NETNS_PREFIX}{short}"))
    }

    /// RunPodSandbox's part: the pod's namespace and its network. On failure nothing is left.
    pub async fn setup(
        &self,
        sandbox_id: &str,
        config: &pb::PodSandboxConfig,
    ) -> Result<Attached, NetError> {
        let conf = confdir::load(&self.settings.conf_dir)?;
        let md = config.metadata.clone().unwrap_or_default();
        let mut rec = PodNetworkRecord {
            sandbox_id: sandbox_id.to_string(),
            netns: self.netns_path(sandbox_id),
            ifname: IFNAME.to_string(),
            cni_args: args::cni_args(sandbox_id, &md),
            capability_args: args::capability_args(config),
            conf_file: conf.file.clone(),
            conflist: conf.raw.clone(),
            result: None,
        };
        self.records.put_pod_network(&rec)?;
        let netns = self.netns.clone();
        let path = rec.netns.clone();
        if let Err(e) = blocking(move || netns.create(&path)).await {
            self.drop_record(sandbox_id);
            return Err(e);
        }
        let added = async {
            let result = self.chain(&rec, &conf.list, true).add().await?;
            let attached = attached(&conf.list.name, &rec, result)?;
            rec.result = Some(attached.result.clone());
            self.records.put_pod_network(&rec)?;
            Ok(attached)
        }
        .await;
        if added.is_err() {
            self.undo(&rec, &conf.list).await;
        }
        added
    }

    /// StopPodSandbox's part. Idempotent: a pod with no record has nothing to tear down.
    pub async fn teardown(&self, sandbox_id: &str) -> Result<(), NetError> {
        let lock = self.busy_lock(sandbox_id);
        let _held = lock.lock().await;
        let done = self.teardown_locked(sandbox_id).await;
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else is waiting for this sandbox.
        if Arc::strong_count(&lock) <= 2 {
            busy.remove(sandbox_id);
        }
        done
    }

    async fn teardown_locked(&self, sandbox_id: &str) -> Result<(), NetError> {
        let Some(rec) = self.records.pod_network(sandbox_id)? else {
            return Ok(());
        };
        let conf = confdir::parsed(rec.conf_file.clone(), rec.conflist.clone())?;
        let gone = !self.netns.is_pinned(&rec.netns);
        self.chain(&rec, &conf.list, !gone)
            .del(rec.result.as_ref(), |e| e.passable_on_del(gone))
            .await?;
        let netns = self.netns.clone();
        let path = rec.netns.clone();
        blocking(move || netns.remove(&path)).await?;
        self.records.remove_pod_network(sandbox_id)?;
        Ok(())
    }

    /// Tears down every pod network a previous run of the daemon left; returns how many were
    /// torn down and how many failed (they are tried again on the next start).
    pub async fn recover(&self) -> (usize, usize) {
        let left = match self.records.pod_networks() {
            Ok(left) => left,
            Err(e) => {
                tracing::error!("cannot read the pod networks a previous run left: {e}");
                return (0, 0);
            }
        };
        let (mut done, mut failed) = (0, 0);
        for rec in left {
            match self.teardown(&rec.sandbox_id).await {
                Ok(()) => done += 1,
                Err(e) => {
                    failed += 1;
                    tracing::error!(sandbox = %rec.sandbox_id, "cannot tear down a pod network a previous run left: {e}");
                }
            }
        }
        (done, failed)
    }

    fn chain<'a>(
        &'a self,
        rec: &'a PodNetworkRecord,
        list: &'a wasmgate_cni::ConfList,
        in_netns: bool,
    ) -> Chain<'a> {
        Chain {
            exec: self.exec.as_ref(),
            list,
            bin_dirs: &self.settings.bin_dirs,
            timeout: self.settings.timeout,
            container_id: &rec.sandbox_id,
            netns: if in_netns {
                rec.netns.to_str().unwrap_or_default()
            } else {
                ""
            },
            ifname: &rec.ifname,
            cni_args: &rec.cni_args,
            capability_args: &rec.capability_args,
        }
    }

    /// After a failed ADD: DEL what the plugins may have built (libcni has no cached result for
    /// a failed ADD, so no `prevResult`), then remove the namespace and the record whatever the
    /// DEL said, so that a failed RunPodSandbox leaves nothing behind.
    async fn undo(&self, rec: &PodNetworkRecord, list: &wasmgate_cni::ConfList) {
        let logged = |e: &NetError| {
            tracing::warn!(sandbox = %rec.sandbox_id, "cleaning up a failed network setup: {e}");
            true
        };
        let _ = self.chain(rec, list, true).del(None, logged).await;
        let netns = self.netns.clone();
        let path = rec.netns.clone();
        if let Err(e) = blocking(move || netns.remove(&path)).await {
            tracing::warn!(sandbox = %rec.sandbox_id, "cleaning up a failed network setup: {e}");
        }
        self.drop_record(&rec.sandbox_id);
    }

    fn drop_record(&self, sandbox_id: &str) {
        if let Err(e) = self.records.remove_pod_network(sandbox_id) {
            tracing::warn!(
                sandbox = sandbox_id,
                "cannot drop the pod network record: {e}"
            );
        }
    }

    fn busy_lock(&self, sandbox_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        busy.entry(sandbox_id.to_string()).or_default().clone()
    }
}

/// The pod's side of a successful ADD.
fn attached(network: &str, rec: &PodNetworkRecord, result: Value) -> Result<Attached, NetError> {
    let ips = CniResult::from_json(&result)
        .map(|r| pod_ips(&r, &rec.ifname))
        .unwrap_or_default();
    if ips.is_empty() {
        return Err(NetError::NoAddress {
            network: network.to_string(),
            ifname: rec.ifname.clone(),
        });
    }
    Ok(Attached {
        network: network.to_string(),
        netns: rec.netns.clone(),
        ips,
        result,
    })
}

/// The addresses a result puts on the pod's interface (an `interfaces` entry of that name with a
/// sandbox), or, when it attributes none, those it attributes to no interface; IPv4 first, as
/// containerd's default `ip_pref` orders them.
fn pod_ips(result: &CniResult, ifname: &str) -> Vec<String> {
    let on_pod = |i: Option<u32>| {
        i.and_then(|i| result.interfaces.get(i as usize))
            .is_some_and(|i| {
                i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty())
            })
    };
    let mut chosen: Vec<_> = result
        .ips
        .iter()
        .filter(|ip| on_pod(ip.interface))
        .collect();
    if chosen.is_empty() {
        chosen = result
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none())
            .collect();
    }
    let mut addrs: Vec<std::net::IpAddr> = chosen
        .iter()
        .filter_map(|ip| ip.address.split('/').next()?.parse().ok())
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.iter().map(ToString::to_string).collect()
}

/// A namespace effect off the async workers: it mounts, and makes a thread of its own.
async fn blocking(
    f: impl FnOnce() -> Result<(), EffectError> + Send + 'static,
) -> Result<(), NetError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| {
            Err(EffectError::Io {
                op: "run a netns task",
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })
        })
        .map_err(NetError::Netns)
}
