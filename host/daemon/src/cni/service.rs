//! One CNI call, after the wire: validate, route to the plugin, run it, check its plan, carry the
//! plan out, record what was done, and answer in the caller's cniVersion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use wasmgate_cni::command::Command;
use wasmgate_cni::conf::NetConf;
use wasmgate_cni::env::Invocation;
use wasmgate_cni::error::{CniError, code};
use wasmgate_cni::plan::{Attachment, Target};
use wasmgate_cni::result::CniResult;
use wasmgate_cni::wire::{Request, Response};
use wasmgate_effects::{
    Applied, EffectError, NetPolicy, NetworkEffects, check_result, open_pod_netns, validate,
};
use wasmgate_engine::bindings::{NetworkGuest, cni_types as wit};
use wasmgate_engine::{HostState, LoadedPlugin, Registry};

use super::convert;
use super::error::ServiceError;
use super::teardown::Teardowns;
use crate::state::{Record, Records};
use crate::trace::{CallRecord, Trace, now_ms};

/// What the host allows one plugin to do.
#[derive(Debug, Clone)]
pub struct PluginPolicy {
    pub net: NetPolicy,
}

pub struct CniService {
    registry: Arc<Registry>,
    effects: Arc<dyn NetworkEffects>,
    records: Arc<Records>,
    policies: BTreeMap<String, PluginPolicy>,
    default_plugin: String,
    deferred_teardown: bool,
    teardowns: Arc<Teardowns>,
    trace: Arc<Trace>,
}

/// What routing learnt about a call, for its trace record.
#[derive(Default)]
struct Seen {
    plugin: Option<String>,
    plugin_sha256: Option<String>,
    network: Option<String>,
}

/// A validated call, ready to route.
struct Call {
    inv: Invocation,
    conf: NetConf,
    plugin: Arc<LoadedPlugin>,
    policy: PluginPolicy,
    wit_conf: wit::NetConf,
}

type Wasm<R> = wasmgate_engine::wasmtime::Result<Result<R, wit::CniError>>;

impl CniService {
    pub fn new(
        registry: Arc<Registry>,
        effects: Arc<dyn NetworkEffects>,
        records: Arc<Records>,
        policies: BTreeMap<String, PluginPolicy>,
        default_plugin: String,
    ) -> Self {
        Self {
            registry,
            effects,
            records,
            policies,
            default_plugin,
            deferred_teardown: false,
            teardowns: Arc::new(Teardowns::default()),
            trace: Arc::new(Trace::default()),
        }
    }

    /// Records every call into `trace` (the daemon shares one with its admin socket).
    pub fn with_trace(mut self, trace: Arc<Trace>) -> Self {
        self.trace = trace;
        self
    }

    /// Answer DEL once the pod is cut off and let the kernel destroy the veth behind the reply
    /// (see `CniSection::deferred_teardown`).
    pub fn with_deferred_teardown(mut self, on: bool) -> Self {
        self.deferred_teardown = on;
        self
    }

    /// Finishes teardowns that a previous run answered but did not complete (it was killed).
    pub async fn finish_teardowns(&self) -> Result<usize, ServiceError> {
        let pending = self.records.teardowns()?;
        let n = pending.len();
        for rec in pending {
            let host = rec.attachment.veth.host_name.clone();
            // One stubborn interface must not keep the daemon from starting; it stays listed.
            match self.remove_recorded(rec).await {
                Ok(()) => self.records.end_teardown(&host)?,
                Err(e) => {
                    tracing::error!(host_veth = %host, "unfinished teardown failed again: {e}")
                }
            }
        }
        Ok(n)
    }

    pub async fn handle(&self, req: Request) -> Response {
        let (at_ms, started) = (now_ms(), Instant::now());
        let command = req.invocation.command;
        let cid = req.invocation.container_id.clone();
        let ifname = req.invocation.ifname.clone();
        let mut seen = Seen::default();
        let out = self.dispatch(req, &mut seen).await;
        let elapsed = started.elapsed();
        let (response, code, msg) = match out {
            Ok(stdout) => {
                tracing::info!(%command, container = %cid, ?elapsed, "cni ok");
                (Response::Ok { stdout }, None, None)
            }
            Err(e) => {
                let error = CniError::from(e);
                tracing::warn!(%command, container = %cid, ?elapsed, code = error.code, msg = %error.msg, "cni error");
                let (code, msg) = (Some(error.code), Some(error.msg.clone()));
                (Response::Err { error }, code, msg)
            }
        };
        self.trace.record(CallRecord {
            at_ms,
            interface: "cni".into(),
            method: command.to_string(),
            plugin: seen.plugin,
            plugin_sha256: seen.plugin_sha256,
            network: seen.network,
            container_id: cid,
            ifname,
            ids: Default::default(),
            hooks: Vec::new(),
            upstream_us: None,
            ok: code.is_none(),
            code,
            msg,
            elapsed_us: elapsed.as_micros() as u64,
        });
        response
    }

    async fn dispatch(&self, req: Request, seen: &mut Seen) -> Result<String, ServiceError> {
        // The shim already checked all this, but the socket is reachable by anything with access
        // to it, so the daemon checks again.
        req.invocation.validate()?;
        let inv = req.invocation;
        check_netns(&inv)?;
        if inv.command == Command::Version {
            let conf: serde_json::Value = serde_json::from_str(&req.config).unwrap_or_default();
            let v = conf
                .get("cniVersion")
                .and_then(|v| v.as_str())
                .unwrap_or("");
            return Ok(wasmgate_cni::version::version_result(v));
        }
        let conf = wasmgate_cni::conf::parse(req.config.as_bytes(), inv.command)?;
        seen.network = Some(conf.name.clone());
        let name = self.plugin_name(&conf);
        seen.plugin = Some(name.clone());
        let policy = self
            .policies
            .get(&name)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownPlugin(name.clone()))?;
        let plugin = self.registry.get(&name).map_err(|e| match e {
            wasmgate_engine::EngineError::UnknownPlugin(_) => ServiceError::UnknownPlugin(name),
            other => ServiceError::Engine(other),
        })?;
        seen.plugin_sha256 = Some(plugin.info().sha256.clone());
        let wit_conf = convert::net_conf(&conf)?;
        let call = Call {
            inv,
            conf,
            plugin,
            policy,
            wit_conf,
        };
        match call.inv.command {
            Command::Add => self.add(call).await,
            Command::Del => self.del(call).await,
            Command::Check => self.check(call).await,
            Command::Status => self.status(call).await,
            Command::Gc => self.gc(call).await,
            Command::Version => unreachable!("answered above"),
        }
    }

    /// The plugin a network config routes to.
    fn plugin_name(&self, conf: &NetConf) -> String {
        conf.plugin
            .clone()
            .unwrap_or_else(|| self.default_plugin.clone())
    }

    /// Why a queued DEL can never succeed on this daemon, if it cannot: it is not a DEL, its
    /// variables or its network config are invalid, or it routes to a plugin this daemon's config
    /// does not declare. Only a restart can change any of that (the config is read once), so the
    /// replay sets such a DEL aside and looks at it again on the next start. Anything else (a
    /// plugin not loaded yet, one that fails or runs out of time) may succeed later.
    pub fn never_applies(&self, req: &Request) -> Option<String> {
        if req.invocation.command != Command::Del {
            return Some(format!("a queued {} is not a DEL", req.invocation.command));
        }
        if let Err(e) = req.invocation.validate() {
            return Some(e.msg);
        }
        let conf = match wasmgate_cni::conf::parse(req.config.as_bytes(), Command::Del) {
            Ok(conf) => conf,
            Err(e) => return Some(e.msg),
        };
        let name = self.plugin_name(&conf);
        (!self.policies.contains_key(&name)).then(|| {
            format!(
                "network {} routes to plugin {name}, which this daemon's config does not declare",
                conf.name
            )
        })
    }

    /// Runs one export, after checking the plugin speaks the call's cniVersion.
    async fn call<R>(
        &self,
        call: &Call,
        f: impl AsyncFnOnce(
            &NetworkGuest,
            &mut wasmgate_engine::wasmtime::Store<HostState>,
            &wit::NetConf,
        ) -> Wasm<R>,
    ) -> Result<R, ServiceError> {
        let version = &call.conf.cni_version;
        let conf = &call.wit_conf;
        let out = call
            .plugin
            .network(async |net, store| {
                let versions = net.call_versions(&mut *store).await?;
                if !versions.contains(version) {
                    return Ok(Err(wit::CniError {
                        code: code::INCOMPATIBLE_VERSION,
                        msg: format!("plugin does not support cniVersion {version}"),
                        details: format!("supported: {}", versions.join(", ")),
                    }));
                }
                f(net, store, conf).await
            })
            .await?;
        out.map_err(|e| ServiceError::Cni(convert::cni_error(e)))
    }

    fn key(call: &Call) -> String {
        Record::key(&call.conf.name, &call.inv.container_id, &call.inv.ifname)
    }

    fn target(call: &Call) -> Target {
        Target {
            netns: call.inv.netns.clone(),
            ifname: call.inv.ifname.clone(),
        }
    }

    async fn effect<R: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn NetworkEffects) -> Result<R, wasmgate_effects::EffectError> + Send + 'static,
    ) -> Result<R, ServiceError> {
        let effects = self.effects.clone();
        tokio::task::spawn_blocking(move || f(effects.as_ref()))
            .await
            .map_err(|e| {
                ServiceError::Effect(wasmgate_effects::EffectError::Netlink(format!(
                    "effect task failed: {e}"
                )))
            })?
            .map_err(ServiceError::from)
    }

    async fn add(&self, call: Call) -> Result<String, ServiceError> {
        let key = Self::key(&call);
        if self.records.get(&key)?.is_some() {
            return Err(already_exists(&call).into());
        }
        let inv = convert::invocation(&call.inv);
        let outcome = self
            .call(&call, async |net, store, conf| {
                net.call_add(store, conf, &inv).await
            })
            .await?;
        let mut result = convert::result(outcome.result, &call.conf.cni_version);
        let plan = outcome.attachment.map(convert::attachment);
        let target = Self::target(&call);
        // What kubelet records as the pod's IPs must be what the host builds; refused before
        // anything is built, so nothing is left behind but the plugin's allocation, undone here.
        if let Err(e) = self.check_reported(&call, &target, plan.as_ref(), &result) {
            self.undo_plugin_add(&call).await;
            return Err(e);
        }
        if let Some(plan) = plan {
            self.teardowns
                .wait_clear(&plan.veth.host_name, &target.netns)
                .await;
            let applied = match self.build(&call, &key, &target, &plan).await {
                Ok(applied) => applied,
                Err(e) => {
                    self.undo_plugin_add(&call).await;
                    return Err(e);
                }
            };
            // The host knows the MACs only now; the plugin could not have.
            for iface in &mut result.interfaces {
                if iface.name == plan.veth.host_name && iface.sandbox.is_none() {
                    iface.mac = Some(applied.host_mac.clone());
                } else if iface.name == call.inv.ifname && iface.sandbox.is_some() {
                    iface.mac = Some(applied.container_mac.clone());
                }
            }
        }
        Ok(result.to_json(&call.conf.cni_version).to_string())
    }

    fn check_reported(
        &self,
        call: &Call,
        target: &Target,
        plan: Option<&Attachment>,
        result: &CniResult,
    ) -> Result<(), ServiceError> {
        if result.ips.is_empty() {
            return Ok(());
        }
        // Already read once for the plugin, so it parses.
        let prev = match &call.conf.prev_result {
            Some(v) => Some(CniResult::from_json(v)?),
            None => None,
        };
        check_result(target, plan, result, prev.as_ref())?;
        Ok(())
    }

    /// Validates, records, then applies; on failure leaves neither record nor interface behind.
    async fn build(
        &self,
        call: &Call,
        key: &str,
        target: &Target,
        plan: &Attachment,
    ) -> Result<Applied, ServiceError> {
        validate(target, plan, &call.policy.net)?;
        let mut rec = Record {
            network: call.conf.name.clone(),
            container_id: call.inv.container_id.clone(),
            plugin: call.plugin.info().name.clone(),
            target: target.clone(),
            attachment: plan.clone(),
            built: None,
        };
        if !self.records.insert_new(&rec)? {
            return Err(already_exists(call).into());
        }
        let (t, p) = (target.clone(), plan.clone());
        match self.effect(move |fx| fx.apply(&t, &p)).await {
            Ok(applied) => {
                rec.built = Some(applied.clone());
                // Without it DEL still removes the veth by name, as for older records.
                if let Err(e) = self.records.set_built(&rec) {
                    tracing::error!("recording what ADD built for {key}: {e}");
                }
                Ok(applied)
            }
            Err(e) => {
                if let Err(re) = self.records.remove(key) {
                    tracing::error!("dropping record {key} after a failed ADD: {re}");
                }
                Err(e)
            }
        }
    }

    /// Gives back what the plugin allocated for an ADD the host could not complete.
    async fn undo_plugin_add(&self, call: &Call) {
        let inv = convert::invocation(&call.inv);
        if let Err(e) = self
            .call(call, async |net, store, conf| {
                net.call_del(store, conf, &inv).await
            })
            .await
        {
            tracing::error!(container = %call.inv.container_id, "plugin DEL after a failed ADD: {e}");
        }
    }

    async fn del(&self, call: Call) -> Result<String, ServiceError> {
        let key = Self::key(&call);
        let rec = self.records.get(&key)?;
        // Only the netns the runtime names now: a recorded path may since name another pod.
        let target = rec.as_ref().map(|rec| Target {
            netns: call.inv.netns.clone(),
            ifname: rec.target.ifname.clone(),
        });
        if let (Some(rec), Some(target)) = (&rec, &target) {
            let (target, plan, built) = (target.clone(), rec.attachment.clone(), rec.built.clone());
            if self.deferred_teardown {
                // The pod is cut off before its address can go to another.
                self.effect(move |fx| fx.detach(&target, &plan, built.as_ref()))
                    .await?;
            } else {
                self.effect(move |fx| fx.remove(&target, &plan, built.as_ref()))
                    .await?;
            }
        }
        let inv = convert::invocation(&call.inv);
        self.call(&call, async |net, store, conf| {
            net.call_del(store, conf, &inv).await
        })
        .await?;
        match (rec, target) {
            (Some(rec), Some(target)) if self.deferred_teardown => {
                self.tear_down(&key, rec, target)?
            }
            _ => self.records.remove(&key)?,
        }
        Ok(String::new())
    }

    /// Records the teardown, then destroys the veth behind the reply.
    fn tear_down(&self, key: &str, rec: Record, target: Target) -> Result<(), ServiceError> {
        self.records.begin_teardown(key, &rec)?;
        let host = rec.attachment.veth.host_name.clone();
        self.teardowns.start(&host, &target.netns);
        let (effects, records, teardowns) = (
            self.effects.clone(),
            self.records.clone(),
            self.teardowns.clone(),
        );
        tokio::spawn(async move {
            let (plan, built) = (rec.attachment, rec.built);
            let done =
                tokio::task::spawn_blocking(move || effects.remove(&target, &plan, built.as_ref()))
                    .await;
            match done {
                Ok(Ok(())) => {
                    if let Err(e) = records.end_teardown(&host) {
                        tracing::error!(host_veth = %host, "teardown done but not recorded: {e}");
                    }
                }
                // Left in the teardown list: the next start finishes it.
                Ok(Err(e)) => tracing::error!(host_veth = %host, "teardown failed: {e}"),
                Err(e) => tracing::error!(host_veth = %host, "teardown task failed: {e}"),
            }
            teardowns.finish(&host);
        });
        Ok(())
    }

    async fn check(&self, call: Call) -> Result<String, ServiceError> {
        if call.conf.prev_result.is_none() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "prevResult is required for CHECK",
                "",
            )
            .into());
        }
        let key = Self::key(&call);
        let rec = self.records.get(&key)?;
        let inv = convert::invocation(&call.inv);
        let planned = self
            .call(&call, async |net, store, conf| {
                net.call_check(store, conf, &inv).await
            })
            .await?;
        let Some(planned) = planned else {
            return Ok(String::new());
        };
        let planned = convert::attachment(planned);
        let Some(rec) = rec else {
            return Err(CniError::new(
                code::UNKNOWN_CONTAINER,
                format!(
                    "no attachment {}/{} in network {}",
                    call.inv.container_id, call.inv.ifname, call.conf.name
                ),
                "",
            )
            .into());
        };
        if planned != rec.attachment {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "the plugin's attachment differs from the one the host built",
                format!("host: {:?}; plugin: {:?}", rec.attachment, planned),
            )
            .into());
        }
        let target = Self::target(&call);
        validate(&target, &planned, &call.policy.net)?;
        self.effect(move |fx| fx.verify(&target, &planned)).await?;
        Ok(String::new())
    }

    async fn status(&self, call: Call) -> Result<String, ServiceError> {
        self.call(&call, async |net, store, conf| {
            net.call_status(store, conf).await
        })
        .await?;
        Ok(String::new())
    }

    async fn gc(&self, call: Call) -> Result<String, ServiceError> {
        // No list at all means the runtime is not asking for a collection; an empty list means
        // every attachment is stale.
        let Some(valid) = call.conf.valid_attachments.clone() else {
            return Ok(String::new());
        };
        let refs: Vec<_> = valid.iter().map(convert::attachment_ref).collect();
        self.call(&call, async |net, store, conf| {
            net.call_gc(store, conf, &refs).await
        })
        .await?;
        for rec in self.records.network(&call.conf.name)? {
            let keep = valid
                .iter()
                .any(|v| v.container_id == rec.container_id && v.ifname == rec.target.ifname);
            if keep {
                continue;
            }
            let key = Record::key(&rec.network, &rec.container_id, &rec.target.ifname);
            self.remove_recorded(rec).await?;
            self.records.remove(&key)?;
        }
        Ok(String::new())
    }

    /// Removes what a record says the host built, without the runtime's netns: it may be long
    /// gone (GC, a teardown left by a crash), and removing the host end takes the pod end too.
    async fn remove_recorded(&self, rec: Record) -> Result<(), ServiceError> {
        let target = Target {
            netns: String::new(),
            ifname: rec.target.ifname,
        };
        self.effect(move |fx| fx.remove(&target, &rec.attachment, rec.built.as_ref()))
            .await
    }
}

/// Refuses a `CNI_NETNS` that is relative or the host's own namespace, or that cannot be opened,
/// for every command that takes one, before the plugin runs. One that does not exist passes
/// here: a DEL may name a namespace that is gone, as the spec demands (DEL never enters it), and
/// ADD and CHECK fail where the effects open it, which also check again what they opened.
fn check_netns(inv: &wasmgate_cni::env::Invocation) -> Result<(), ServiceError> {
    if inv.netns.is_empty() || !matches!(inv.command, Command::Add | Command::Check | Command::Del)
    {
        return Ok(());
    }
    match open_pod_netns(&inv.netns) {
        Ok(_) => Ok(()),
        Err(EffectError::Netns { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => {
            tracing::warn!(command = %inv.command, netns = %inv.netns, "refused CNI_NETNS: {e}");
            Err(e.into())
        }
    }
}

fn already_exists(call: &Call) -> CniError {
    CniError::new(
        code::ALREADY_EXISTS,
        format!(
            "attachment {}/{} already exists in network {}",
            call.inv.container_id, call.inv.ifname, call.conf.name
        ),
        "the runtime must DEL before a second ADD",
    )
}
