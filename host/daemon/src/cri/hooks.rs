//! The runtime hook chain: each configured hook that subscribes to an event, in order, with its
//! own timeout and failure policy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmgate_engine::bindings::cri_types::{Adjustment, Decision, Event, Outcome, Request};
use wasmgate_engine::{Batch, CallError, LoadedPlugin, Registry};

use super::view::Merged;
use crate::config::FailurePolicy;
use crate::trace::HookDecision;

#[derive(Debug, Clone)]
pub struct HookSpec {
    pub name: String,
    pub failure: FailurePolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("denied by hook {hook}: {reason}")]
    Denied { hook: String, reason: String },
    #[error("{0}")]
    Conflict(String),
    #[error("hook {hook} failed and is fail-closed: {error}")]
    Failed {
        hook: String,
        error: String,
        timeout: bool,
    },
}

/// Hook name to (loaded version, its subscriptions).
type Subscriptions = HashMap<String, (u64, Arc<Vec<Event>>)>;

pub struct Hooks {
    registry: Arc<Registry>,
    chain: Vec<HookSpec>,
    /// Each hook's subscriptions, asked once per loaded version.
    subs: Mutex<Subscriptions>,
}

impl Hooks {
    pub fn new(registry: Arc<Registry>, chain: Vec<HookSpec>) -> Self {
        Self {
            registry,
            chain,
            subs: Mutex::new(HashMap::new()),
        }
    }

    /// The hooks that want `event`, in order. A hook whose subscriptions cannot be read is
    /// included when fail-closed (so the call fails on it, visibly) and skipped when fail-open.
    pub async fn subscribed(&self, event: Event, seen: &mut Vec<HookDecision>) -> Vec<HookSpec> {
        let mut out = Vec::new();
        for h in &self.chain {
            match self.subscriptions(&h.name).await {
                Ok(events) if events.contains(&event) => out.push(h.clone()),
                Ok(_) => {}
                Err(e) if h.failure == FailurePolicy::Open => seen.push(HookDecision {
                    hook: h.name.clone(),
                    phase: "pre".into(),
                    decision: format!("skipped (fail-open): {e}"),
                    elapsed_us: 0,
                }),
                Err(_) => out.push(h.clone()),
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
    }

    async fn subscriptions(&self, hook: &str) -> Result<Arc<Vec<Event>>, String> {
        let plugin = self.registry.get(hook).map_err(|e| e.to_string())?;
        let generation = plugin.info().generation;
        if let Some((g, subs)) = self
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hook)
            && *g == generation
        {
            return Ok(subs.clone());
        }
        let subs = plugin
            .runtime(|h, s| h.call_subscriptions(s))
            .await
            .map_err(|e| e.to_string())?;
        let subs = Arc::new(subs);
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hook.to_string(), (generation, subs.clone()));
        Ok(subs)
    }

    /// Runs every subscribed hook's `pre` in order; returns the merged adjustments. The whole
    /// phase runs on one blocking thread: a hop per hook cost more than most hooks' work.
    pub async fn pre(
        &self,
        hooks: &[HookSpec],
        req: &Request,
        seen: &mut Vec<HookDecision>,
    ) -> Result<Merged, HookError> {
        if hooks.is_empty() {
            return Ok(Merged::default());
        }
        let chain = self.resolve(hooks);
        let bound = backstop(&chain);
        let progress = Arc::new(Mutex::new(Progress::default()));
        let shared = progress.clone();
        let req = req.clone();
        let out = self
            .registry
            .batch(bound, move |batch| pre_phase(batch, chain, &req, &shared))
            .await;
        let mut p = lock(&progress);
        seen.append(&mut p.seen);
        match out {
            Ok(r) => r.map(|()| std::mem::take(&mut p.merged)),
            // Only a guest stuck in a blocking host call gets here: every call has its own epoch
            // deadline. The hook that was running answers for it under its policy.
            Err(e) => match p.running.take() {
                Some(h) => {
                    let e = stuck(&h, bound, e);
                    if h.failure == FailurePolicy::Open {
                        tracing::warn!(hook = %h.name, "hook failed, skipped (fail-open): {e}");
                        seen.push(decision(
                            &h,
                            "pre",
                            format!("skipped (fail-open): {e}"),
                            bound,
                        ));
                        return Ok(std::mem::take(&mut p.merged));
                    }
                    seen.push(decision(&h, "pre", format!("failed: {e}"), bound));
                    Err(HookError::Failed {
                        hook: h.name,
                        error: e,
                        timeout: true,
                    })
                }
                None => Err(HookError::Failed {
                    hook: "chain".into(),
                    error: e.to_string(),
                    timeout: true,
                }),
            },
        }
    }

    /// Tells every subscribed hook how the call ended, on one blocking thread. A failing
    /// post-hook is logged: the call has already happened.
    pub async fn post(
        &self,
        hooks: &[HookSpec],
        req: &Request,
        outcome: &Outcome,
        seen: &mut Vec<HookDecision>,
    ) {
        if hooks.is_empty() {
            return;
        }
        let chain = self.resolve(hooks);
        let bound = backstop(&chain);
        let progress = Arc::new(Mutex::new(Progress::default()));
        let shared = progress.clone();
        let (req, outcome) = (req.clone(), outcome.clone());
        let out = self
            .registry
            .batch(bound, move |batch| {
                post_phase(batch, chain, &req, &outcome, &shared)
            })
            .await;
        let mut p = lock(&progress);
        seen.append(&mut p.seen);
        if let (Err(e), Some(h)) = (out, p.running.take()) {
            let e = stuck(&h, bound, e);
            tracing::warn!(hook = %h.name, "post-hook failed: {e}");
            seen.push(decision(&h, "post", format!("failed: {e}"), bound));
        }
    }

    /// Each hook with its current version, or why it has none.
    fn resolve(&self, hooks: &[HookSpec]) -> Vec<(HookSpec, Result<Arc<LoadedPlugin>, String>)> {
        hooks
            .iter()
            .map(|h| {
                let plugin = self.registry.get(&h.name).map_err(|e| e.to_string());
                (h.clone(), plugin)
            })
            .collect()
    }
}

/// What a phase has done so far, kept outside its thread so that a phase given up on still
/// reports the hooks that answered.
#[derive(Default)]
struct Progress {
    seen: Vec<HookDecision>,
    merged: Merged,
    running: Option<HookSpec>,
}

fn lock(p: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

type Chain = Vec<(HookSpec, Result<Arc<LoadedPlugin>, String>)>;

/// The phase's backstop: every hook's own timeout, end to end.
fn backstop(chain: &Chain) -> Duration {
    chain
        .iter()
        .map(|(_, p)| {
            p.as_ref()
                .map_or(Duration::ZERO, |p| p.spec().limits.timeout)
        })
        .sum::<Duration>()
        .max(Duration::from_millis(1))
}

/// Why a phase was given up on, in the words of the hook that was running.
fn stuck(h: &HookSpec, bound: Duration, e: CallError) -> String {
    match e {
        CallError::Timeout { .. } => format!(
            "plugin {} exceeded its deadline: the chain gave up after {bound:?}, blocked in a host call",
            h.name
        ),
        other => other.to_string(),
    }
}

fn decision(h: &HookSpec, phase: &str, decision: String, elapsed: Duration) -> HookDecision {
    HookDecision {
        hook: h.name.clone(),
        phase: phase.into(),
        decision,
        elapsed_us: elapsed.as_micros() as u64,
    }
}

fn pre_phase(
    batch: &Batch,
    chain: Chain,
    req: &Request,
    progress: &Mutex<Progress>,
) -> Result<(), HookError> {
    for (h, plugin) in chain {
        lock(progress).running = Some(h.clone());
        let started = Instant::now();
        let out = match plugin {
            Ok(p) => p
                .runtime_in(batch, |hook, s| hook.call_pre(s, req))
                .map_err(HookCallError::Call),
            Err(e) => Err(HookCallError::Engine(e)),
        };
        let mut p = lock(progress);
        p.running = None;
        let mut record = |what: String| p.seen.push(decision(&h, "pre", what, started.elapsed()));
        match out {
            Ok(Decision::Allow) => record("allow".into()),
            Ok(Decision::Deny(reason)) => {
                record(format!("deny: {reason}"));
                return Err(HookError::Denied {
                    hook: h.name,
                    reason,
                });
            }
            Ok(Decision::Adjust(a)) => {
                record(describe(&a));
                p.merged.add(&h.name, a).map_err(HookError::Conflict)?;
            }
            Err(e) if h.failure == FailurePolicy::Open => {
                tracing::warn!(hook = %h.name, "hook failed, skipped (fail-open): {e}");
                record(format!("skipped (fail-open): {e}"));
            }
            Err(e) => {
                record(format!("failed: {e}"));
                return Err(HookError::Failed {
                    hook: h.name,
                    timeout: matches!(e, HookCallError::Call(CallError::Timeout { .. })),
                    error: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn post_phase(
    batch: &Batch,
    chain: Chain,
    req: &Request,
    outcome: &Outcome,
    progress: &Mutex<Progress>,
) {
    for (h, plugin) in chain {
        lock(progress).running = Some(h.clone());
        let started = Instant::now();
        let out = match plugin {
            Ok(p) => p
                .runtime_in(batch, |hook, s| hook.call_post(s, req, outcome))
                .map_err(HookCallError::Call),
            Err(e) => Err(HookCallError::Engine(e)),
        };
        let what = match out {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                tracing::warn!(hook = %h.name, "post-hook failed: {e}");
                format!("failed: {e}")
            }
        };
        let mut p = lock(progress);
        p.running = None;
        p.seen.push(decision(&h, "post", what, started.elapsed()));
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
