//! e) plugins per language: what an example plugin's component costs the host, per language it
//! is written in. For each example in [`EXAMPLES`] whose source is in the tree:
//!
//! - its component's size;
//! - its first compile: `Registry::load` with an empty cache dir (read, hash, Cranelift, write
//!   the artifact, link), once per run even with `--quick`, since that is what is measured;
//! - its cached load: a second `Registry`, in its own state dir but on the first one's cache dir,
//!   loading the same file (the deserialize path a daemon restart takes); the median of a few;
//! - a typical call on the per-call path the daemon uses: `versions()` through
//!   `LoadedPlugin::network` (an idle instance, reused) for the network world, `pre` on a
//!   CreateContainer through `LoadedPlugin::runtime` (an idle instance, reused) for runtime hooks;
//! - the same call on a warm instance with no dispatch around it: `LoadedPlugin::warm_instance`
//!   for the network world, 50 calls back to back inside one `runtime` dispatch for hooks.
//!
//! Calls of every plugin and both kinds run in turn, in blocks, so drift on a shared machine hits
//! all of them alike. The baseline for another language's call is the Rust plugin of the same
//! name and world, measured in the same rounds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use World::{Network, Runtime};
use anyhow::{Context, Result, bail, ensure};
use wasmgate_engine::bindings::NetworkPlugin;
use wasmgate_engine::wasmtime::Store;
use wasmgate_engine::{
    EngineConfig, HostState, LoadedPlugin, PluginSpec, Registry, WasmEngine, World,
};
use wasmgate_tests::{lang, repo};

use crate::{Stats, TempDir, loadavg, ratio, verdict, wt};

/// One example plugin: its source is `plugins/<lang, lower-cased>/<name>`, and `build` returns
/// its component (building it first if the harness finds it missing or stale).
struct Example {
    lang: &'static str,
    name: &'static str,
    world: World,
    build: fn(&str) -> PathBuf,
}

const fn example(
    lang: &'static str,
    name: &'static str,
    world: World,
    build: fn(&str) -> PathBuf,
) -> Example {
    Example {
        lang,
        name,
        world,
        build,
    }
}

impl Example {
    fn source(&self) -> PathBuf {
        repo()
            .join("plugins")
            .join(self.lang.to_lowercase())
            .join(self.name)
    }

    fn is_rust(&self) -> bool {
        self.lang == "Rust"
    }
}

/// Every example measured, one line each. Rust's come first: they are the other languages'
/// baselines. An example whose source directory is missing is reported and skipped.
const EXAMPLES: &[Example] = &[
    example("Rust", "bridge-ipam", Network, wasmgate_tests::plugin),
    example("Rust", "hook-policy", Runtime, wasmgate_tests::plugin),
    example("Rust", "hook-inject", Runtime, wasmgate_tests::plugin),
    example("Python", "bridge-ipam", Network, lang::python::plugin),
    example("JS", "hook-policy", Runtime, lang::js::plugin),
    example("C", "hook-inject", Runtime, lang::c::plugin),
];

/// A restarted daemon should have its plugins back quickly: the cached load of each component.
const TARGET_CACHED_LOAD_MS: f64 = 50.0;
/// A Rust plugin's call on the per-call path, over the same call on a warm instance.
const TARGET_CALL_OVER_WARM: f64 = 2.0;

/// Calls of each kind per plugin before switching to the next.
const BLOCK: usize = 50;

/// How much timing one run does; each component is compiled once either way.
struct Budget {
    /// Cached loads per component; the median is reported.
    cached_loads: usize,
    /// Timed calls of each kind per plugin, at most.
    calls: usize,
    /// Rounds stop once this has passed (after at least one), whatever `calls` says.
    time: Duration,
}

const NORMAL: Budget = Budget {
    cached_loads: 5,
    calls: 1000,
    time: Duration::from_secs(5),
};
const QUICK: Budget = Budget {
    cached_loads: 3,
    calls: 100,
    time: Duration::from_millis(500),
};

pub fn bench(quick: bool) -> Result<()> {
    let started = Instant::now();
    let budget = if quick { QUICK } else { NORMAL };
    println!();
    println!("-- e) plugins per language: size, first compile, cached load, per-call latency --");
    println!("load average at start: {}", loadavg());
    let present: Vec<&Example> = EXAMPLES
        .iter()
        .filter(|e| {
            let there = e.source().is_dir();
            if !there {
                println!("  (skipped: no {} in the tree)", e.source().display());
            }
            there
        })
        .collect();
    // Built before anything is timed, so build scripts' output stays above the table.
    let building = Instant::now();
    let components: Vec<PathBuf> = present.iter().map(|e| (e.build)(e.name)).collect();
    let building = building.elapsed();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    rt.block_on(async {
        let engine = WasmEngine::new(&EngineConfig::default()).context("create the engine")?;
        let mut loaded = Vec::new();
        for (e, path) in present.iter().zip(components) {
            let l = Loaded::new(e, path, &engine, budget.cached_loads)
                .await
                .with_context(|| format!("load the {} {}", e.lang, e.name))?;
            loaded.push(l);
        }
        for l in &mut loaded {
            l.first_answer().await?;
        }
        // One untimed block each: idle instances, the host's and the guests' first-call paths.
        for l in &mut loaded {
            l.block(BLOCK, true).await?;
        }
        let timing = Instant::now();
        let mut calls = 0;
        while calls == 0 || (calls < budget.calls && timing.elapsed() < budget.time) {
            for l in &mut loaded {
                l.block(BLOCK, false).await?;
            }
            calls += BLOCK;
        }
        report(&loaded, engine.pooled(), calls, &budget);
        Ok::<_, anyhow::Error>(())
    })?;
    println!(
        "load average at end: {}; section e) took {:.1} s, {:.1} s of it checking and building \
         the components",
        loadavg(),
        started.elapsed().as_secs_f64(),
        building.as_secs_f64()
    );
    Ok(())
}

/// A measured example, loaded from the cache, and its samples so far.
struct Loaded {
    example: &'static Example,
    bytes: u64,
    compile: Duration,
    cached: Vec<Duration>,
    plugin: Arc<LoadedPlugin>,
    /// The network world's warm instance, kept across calls.
    warm: Option<(Store<HostState>, NetworkPlugin)>,
    /// The first answer's `Debug` form, to check that languages answer alike.
    answer: String,
    call: Vec<Duration>,
    warm_call: Vec<Duration>,
    /// Holds the cache dir and the last registry's state dir until the plugin is done with.
    _dirs: (TempDir, TempDir),
}

impl Loaded {
    async fn new(
        e: &'static Example,
        path: PathBuf,
        engine: &WasmEngine,
        cached_loads: usize,
    ) -> Result<Self> {
        let spec = || {
            let mut spec = PluginSpec::new(e.name, &path);
            spec.world = e.world;
            spec
        };
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        let first = TempDir::new(&std::env::temp_dir())?;
        let cache = first.path.join("state/cache");
        let t = Instant::now();
        let info = Registry::new(engine.clone(), first.path.join("state"))
            .load(spec())
            .await
            .with_context(|| format!("compile {}", path.display()))?;
        let compile = t.elapsed();
        ensure!(
            !info.cached,
            "the first load of {} was cached",
            path.display()
        );
        let mut cached = Vec::new();
        let mut last = None;
        for _ in 0..cached_loads.max(1) {
            let dir = TempDir::new(&std::env::temp_dir())?;
            let registry =
                Registry::new(engine.clone(), dir.path.join("state")).with_cache_dir(cache.clone());
            let t = Instant::now();
            let info = registry
                .load(spec())
                .await
                .with_context(|| format!("load {} from the cache", path.display()))?;
            cached.push(t.elapsed());
            ensure!(
                info.cached,
                "the second load of {} compiled",
                path.display()
            );
            last = Some((registry.get(e.name)?, dir));
        }
        let (plugin, dir) = last.expect("at least one cached load");
        let warm = match e.world {
            World::Network => Some(plugin.warm_instance().await?),
            _ => None,
        };
        Ok(Self {
            example: e,
            bytes,
            compile,
            cached,
            plugin,
            warm,
            answer: String::new(),
            call: Vec::new(),
            warm_call: Vec::new(),
            _dirs: (first, dir),
        })
    }

    /// One call on the per-call path, answered as the warm instance answers it.
    async fn first_answer(&mut self) -> Result<()> {
        self.answer = match self.example.world {
            World::Network => {
                let fresh = self
                    .plugin
                    .network(async |net, s| net.call_versions(s).await)
                    .await?;
                let (store, inst) = self.warm.as_mut().expect("network plugins keep one");
                let warm = wt(inst.wasmgate_plugin_network().call_versions(store).await)?;
                ensure!(
                    fresh == warm,
                    "fresh {fresh:?} and warm {warm:?} versions differ"
                );
                format!("{fresh:?}")
            }
            World::Runtime => {
                let req = crate::cri::hook_request();
                let d = self
                    .plugin
                    .runtime(async |h, s| h.call_pre(s, &req).await)
                    .await?;
                format!("{d:?}")
            }
            World::Storage => bail!("no storage examples here"),
        };
        Ok(())
    }

    /// `n` calls on the per-call path, then `n` on a warm instance; kept unless `warmup`.
    async fn block(&mut self, n: usize, warmup: bool) -> Result<()> {
        let (mut call, mut warm) = (Vec::with_capacity(n), Vec::with_capacity(n));
        match self.example.world {
            World::Network => {
                for _ in 0..n {
                    let t = Instant::now();
                    self.plugin
                        .network(async |net, s| net.call_versions(s).await)
                        .await?;
                    call.push(t.elapsed());
                }
                let (store, inst) = self.warm.as_mut().expect("network plugins keep one");
                let net = inst.wasmgate_plugin_network();
                for _ in 0..n {
                    let t = Instant::now();
                    wt(net.call_versions(&mut *store).await)?;
                    warm.push(t.elapsed());
                }
            }
            World::Runtime => {
                let req = crate::cri::hook_request();
                for _ in 0..n {
                    let t = Instant::now();
                    self.plugin
                        .runtime(async |h, s| h.call_pre(s, &req).await)
                        .await?;
                    call.push(t.elapsed());
                }
                warm = self
                    .plugin
                    .runtime(async |h, s| {
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            let t = Instant::now();
                            h.call_pre(&mut *s, &req).await?;
                            v.push(t.elapsed());
                        }
                        Ok(v)
                    })
                    .await?;
            }
            World::Storage => bail!("no storage examples here"),
        }
        if !warmup {
            self.call.extend(call);
            self.warm_call.extend(warm);
        }
        Ok(())
    }

    /// The Rust example of the same name and world: this one's baseline.
    fn baseline<'a>(&self, all: &'a [Loaded]) -> Option<&'a Loaded> {
        all.iter().find(|b| {
            b.example.is_rust()
                && b.example.name == self.example.name
                && b.example.world == self.example.world
        })
    }

    fn is_rust(&self) -> bool {
        self.example.is_rust()
    }

    fn cached_median(&self) -> Duration {
        Stats::of(&self.cached).median
    }
}

fn report(all: &[Loaded], pooled: bool, calls: usize, budget: &Budget) {
    println!(
        "one engine ({}), a fresh temp state dir per load; cached load: median of {}; \
         {calls} timed calls of each kind per plugin, all plugins in turn in blocks of {BLOCK}:",
        if pooled {
            "pooling allocator"
        } else {
            "on-demand allocator"
        },
        budget.cached_loads
    );
    println!(
        "{:<8}{:<13}{:<9}{:>9}{:>12}{:>11}{:>12}{:>11}{:>11}{:>10}",
        "lang",
        "plugin",
        "world",
        "size MB",
        "compile ms",
        "cached ms",
        "call p50 µs",
        "warm µs",
        "call/warm",
        "vs Rust"
    );
    for l in all {
        let (call, warm) = (Stats::of(&l.call).median, Stats::of(&l.warm_call).median);
        let vs_rust = match l.baseline(all) {
            Some(b) if !l.is_rust() => format!("{:.2}x", ratio(call, Stats::of(&b.call).median)),
            Some(_) => "base".to_string(),
            None => "-".to_string(),
        };
        println!(
            "{:<8}{:<13}{:<9}{:>9.2}{:>12.0}{:>11.1}{:>12.1}{:>11.1}{:>10.1}x{:>10}",
            l.example.lang,
            l.example.name,
            world(l.example.world),
            l.bytes as f64 / 1e6,
            ms(l.compile),
            ms(l.cached_median()),
            us(call),
            us(warm),
            ratio(call, warm),
            vs_rust
        );
    }
    println!("  (call: network `versions` through LoadedPlugin::network, an idle instance reused;");
    println!(
        "   runtime `pre` on a CreateContainer through LoadedPlugin::runtime, an idle instance reused;"
    );
    println!("   warm: the same call on an instance kept across calls, no dispatch around it)");

    println!("against the Rust example of the same name and world (ratios):");
    for l in all.iter().filter(|l| !l.is_rust()) {
        let Some(b) = l.baseline(all) else {
            println!(
                "  {:<8}{:<13}no Rust baseline in this run",
                l.example.lang, l.example.name
            );
            continue;
        };
        println!(
            "  {:<8}{:<13}size {:.1}x, first compile {:.1}x, cached load {:.1}x, call p50 {:.2}x, warm call p50 {:.2}x{}",
            l.example.lang,
            l.example.name,
            l.bytes as f64 / b.bytes as f64,
            ratio(l.compile, b.compile),
            ratio(l.cached_median(), b.cached_median()),
            ratio(Stats::of(&l.call).median, Stats::of(&b.call).median),
            ratio(
                Stats::of(&l.warm_call).median,
                Stats::of(&b.warm_call).median
            ),
            if l.answer == b.answer {
                String::new()
            } else {
                format!("; answers differ: {} against Rust's {}", l.answer, b.answer)
            }
        );
    }

    println!("targets:");
    for l in all {
        let c = ms(l.cached_median());
        println!(
            "  {:<8}{:<13}cached load <= {TARGET_CACHED_LOAD_MS:.0} ms: {} ({c:.1} ms)",
            l.example.lang,
            l.example.name,
            verdict(c <= TARGET_CACHED_LOAD_MS)
        );
    }
    for l in all.iter().filter(|l| l.is_rust()) {
        let r = ratio(Stats::of(&l.call).median, Stats::of(&l.warm_call).median);
        println!(
            "  {:<8}{:<13}call within {TARGET_CALL_OVER_WARM:.0}x of the warm-instance baseline: {} ({r:.1}x)",
            l.example.lang,
            l.example.name,
            verdict(r <= TARGET_CALL_OVER_WARM)
        );
    }
}

fn world(w: World) -> &'static str {
    match w {
        World::Network => "network",
        World::Storage => "storage",
        World::Runtime => "runtime",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
