//! The runtime hook chain: each configured hook that subscribes to an event, in order, with its
//! own timeout and failure policy.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use wasmgate_engine::bindings::cri_types::{Adjustment, Decision, Event, Outcome, Request};
use wasmgate_engine::{CallError, LoadedPlugin, Registry};

use super::grant::HookGrant;
use super::view::Merged;
use crate::config::FailurePolicy;
use crate::trace::HookDecision;

#[derive(Debug, Clone)]
pub struct HookSpec {
    pub name: String,
    pub failure: FailurePolicy,
    /// What the hook's adjustments may change.
    pub grant: Arc<HookGrant>,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("denied by hook {hook}: {reason}")]
    Denied { hook: String, reason: String },
    /// An adjustment beyond the hook's grant, from a fail-closed hook; the message names the
    /// hook and the field.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Conflict(String),
    #[error("hook {hook} failed and is fail-closed: {error}")]
    Failed {
        hook: String,
        error: String,
        timeout: bool,
    },
}

/// A hook that wants the call's event, looked up once per call: its pre and post run on the
/// same loaded version even when a new one is swapped in between.
#[derive(Clone)]
pub struct Subscribed {
    spec: HookSpec,
    plugin: Result<Arc<LoadedPlugin>, String>,
}

/// The hooks one call goes through: those that judge its request, and those that want its
/// outcome, each in configured order; and, for its trace record, the fail-open hooks skipped
/// because their subscriptions could not be read.
#[derive(Default)]
pub struct Chain {
    pub pre: Vec<Subscribed>,
    pub post: Vec<Subscribed>,
    pub skipped: Vec<HookDecision>,
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty()
    }
}

/// What a hook asked to see: requests (`subscriptions`) and outcomes (`post-subscriptions`).
struct Events {
    pre: Vec<Event>,
    post: Vec<Event>,
}

/// A hook's subscriptions and the loaded version they were asked of.
type Subscriptions = RwLock<Option<(u64, Arc<Events>)>>;

pub struct Hooks {
    registry: Arc<Registry>,
    chain: Vec<HookSpec>,
    /// Each hook's subscriptions, by its place in `chain`, asked once per loaded version. Read
    /// on every call, by every worker: a lock per hook, and no hashing of its name.
    subs: Vec<Subscriptions>,
}

impl Hooks {
    pub fn new(registry: Arc<Registry>, chain: Vec<HookSpec>) -> Self {
        Self {
            registry,
            subs: chain.iter().map(|_| RwLock::new(None)).collect(),
            chain,
        }
    }

    /// The hooks that want `event`, in order, before and after the runtime. A hook whose
    /// subscriptions cannot be read is included in both when fail-closed (so the call fails on
    /// it, visibly) and skipped when fail-open.
    pub async fn subscribed(&self, event: Event) -> Chain {
        let mut chain = Chain::default();
        for (h, cached) in self.chain.iter().zip(&self.subs) {
            let plugin = self.registry.get(&h.name).map_err(|e| e.to_string());
            let subs = match &plugin {
                Ok(p) => subscriptions(cached, p).await,
                Err(e) => Err(e.clone()),
            };
            let (pre, post) = match subs {
                Ok(events) => (events.pre.contains(&event), events.post.contains(&event)),
                Err(e) if h.failure == FailurePolicy::Open => {
                    chain.skipped.push(HookDecision {
                        hook: h.name.clone(),
                        phase: "pre".into(),
                        decision: format!("skipped (fail-open): {e}"),
                        elapsed_us: 0,
                    });
                    (false, false)
                }
                Err(_) => (true, true),
            };
            let hook = Subscribed {
                spec: h.clone(),
                plugin,
            };
            if pre {
                chain.pre.push(hook.clone());
            }
            if post {
                chain.post.push(hook);
            }
        }
        chain
    }

    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    /// Runs every subscribed hook's `pre` in order, each within its own timeout; returns the
    /// merged adjustments. Each adjustment is held to its own hook's grant before it is merged:
    /// beyond it, a fail-closed hook fails the call and a fail-open hook's adjustment is dropped.
    pub async fn pre(
        &self,
        hooks: &[Subscribed],
        req: &Request,
        seen: &mut Vec<HookDecision>,
    ) -> Result<Merged, HookError> {
        let mut merged = Merged::default();
        for Subscribed { spec: h, plugin } in hooks {
            let started = Instant::now();
            let out = match plugin {
                Ok(p) => p
                    .runtime(async |hook, s| hook.call_pre(s, req).await)
                    .await
                    .map_err(HookCallError::Call),
                Err(e) => Err(HookCallError::Engine(e.clone())),
            };
            let mut record = |what: String| seen.push(decision(h, "pre", what, started.elapsed()));
            match out {
                Ok(Decision::Allow) => record("allow".into()),
                Ok(Decision::Deny(reason)) => {
                    record(format!("deny: {reason}"));
                    return Err(HookError::Denied {
                        hook: h.name.clone(),
                        reason,
                    });
                }
                Ok(Decision::Adjust(a)) => match h.grant.check(&h.name, &a, req) {
                    Ok(()) => {
                        record(describe(&a));
                        merged.add(&h.name, a).map_err(HookError::Conflict)?;
                    }
                    Err(why) if h.failure == FailurePolicy::Open => {
                        tracing::warn!(hook = %h.name, "adjustment dropped (fail-open): {why}");
                        record(format!(
                            "refused, dropped (fail-open): {why}; {}",
                            describe(&a)
                        ));
                    }
                    Err(why) => {
                        tracing::warn!(hook = %h.name, "adjustment refused: {why}");
                        record(format!("refused: {why}; {}", describe(&a)));
                        return Err(HookError::Refused(why));
                    }
                },
                Err(e) if h.failure == FailurePolicy::Open => {
                    tracing::warn!(hook = %h.name, "hook failed, skipped (fail-open): {e}");
                    record(format!("skipped (fail-open): {e}"));
                }
                Err(e) => {
                    record(format!("failed: {e}"));
                    return Err(HookError::Failed {
                        hook: h.name.clone(),
                        timeout: matches!(e, HookCallError::Call(CallError::Timeout { .. })),
                        error: e.to_string(),
                    });
                }
            }
        }
        Ok(merged)
    }

    /// Tells every subscribed hook how the call ended. A failing post-hook is logged: the call
    /// has already happened.
    pub async fn post(
        &self,
        hooks: &[Subscribed],
        req: &Request,
        outcome: &Outcome,
        seen: &mut Vec<HookDecision>,
    ) {
        for Subscribed { spec: h, plugin } in hooks {
            let started = Instant::now();
            let out = match plugin {
                Ok(p) => p
                    .runtime(async |hook, s| hook.call_post(s, req, outcome).await)
                    .await
                    .map_err(HookCallError::Call),
                Err(e) => Err(HookCallError::Engine(e.clone())),
            };
            let what = match out {
                Ok(()) => "ok".to_string(),
                Err(e) => {
                    tracing::warn!(hook = %h.name, "post-hook failed: {e}");
                    format!("failed: {e}")
                }
            };
            seen.push(decision(h, "post", what, started.elapsed()));
        }
    }
}

/// `plugin`'s subscriptions: from `cached` if they were asked of this loaded version, else from
/// the hook, then kept.
async fn subscriptions(
    cached: &Subscriptions,
    plugin: &LoadedPlugin,
) -> Result<Arc<Events>, String> {
    let generation = plugin.info().generation;
    if let Some((g, subs)) = &*cached.read().unwrap_or_else(|p| p.into_inner())
        && *g == generation
    {
        return Ok(subs.clone());
    }
    let subs = plugin
        .runtime(async |h, s| {
            Ok(Events {
                pre: h.call_subscriptions(s).await?,
                post: h.call_post_subscriptions(s).await?,
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    let subs = Arc::new(subs);
    *cached.write().unwrap_or_else(|p| p.into_inner()) = Some((generation, subs.clone()));
    Ok(subs)
}

fn decision(h: &HookSpec, phase: &str, decision: String, elapsed: Duration) -> HookDecision {
    HookDecision {
        hook: h.name.clone(),
        phase: phase.into(),
        decision,
        elapsed_us: elapsed.as_micros() as u64,
    }
}

#[derive(Debug, thiserror::Error)]
enum HookCallError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("{0}")]
    Engine(String),
}

/// A short account of an adjustment for the trace: which fields it touches.
fn describe(a: &Adjustment) -> String {
    let mut parts = Vec::new();
    let mut keys = |what: &str, set: Vec<&String>, removed: &[String]| {
        if !set.is_empty() || !removed.is_empty() {
            let mut names: Vec<String> = set.into_iter().cloned().collect();
            names.extend(removed.iter().map(|r| format!("-{r}")));
            parts.push(format!("{what} {}", names.join(",")));
        }
    };
    keys(
        "annotations",
        a.annotations.iter().map(|(k, _)| k).collect(),
        &a.remove_annotations,
    );
    keys(
        "labels",
        a.labels.iter().map(|(k, _)| k).collect(),
        &a.remove_labels,
    );
    keys("env", a.env.iter().map(|(k, _)| k).collect(), &a.remove_env);
    keys(
        "mounts",
        a.mounts.iter().map(|m| &m.container_path).collect(),
        &a.remove_mounts,
    );
    keys(
        "devices",
        a.devices.iter().map(|d| &d.container_path).collect(),
        &a.remove_devices,
    );
    if a.resources.is_some() {
        parts.push("resources".into());
    }
    if a.args.is_some() {
        parts.push("args".into());
    }
    if let Some(i) = &a.image {
        parts.push(format!("image {i}"));
    }
    format!("adjust: {}", parts.join("; "))
}
