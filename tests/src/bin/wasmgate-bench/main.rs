//! `wasmgate-bench`: where a wasmgate CNI call spends its time, each figure printed beside a
//! baseline measured in the same run.
//!
//! ```sh
//! cargo build --bins && cargo run -p wasmgate-tests --bin wasmgate-bench            # ~15 s
//! cargo build --bins && cargo run -p wasmgate-tests --bin wasmgate-bench -- --quick # CI smoke run
//! ```
//!
//! It needs root, `ip`, and Debian's `containernetworking-plugins` in `/usr/lib/cni`.
//! Performance is measured here, not in timed tests. These machines are noisy and shared, so an
//! absolute figure only gives context; what to read is its ratio to the baseline next to it.
//!
//! - **a) engine overhead**, in this process: `versions` through `LoadedPlugin::network` (the
//!   real per-call path: semaphore, idle instance, epoch yield, timeout, all on the caller's task),
//!   and the same with `fresh_instances` (new store and instantiation per call), against the same
//!   call on a warm instance. Then an ADD and DEL through the plugin alone (no netlink), which is mostly durable
//!   `wasi:keyvalue` commits, so it runs beside the same with the store on tmpfs, a bare
//!   `fdatasync`, and the daemon's whole `CniService` with the recording fake for effects.
//! - **b) a CNI ADD + DEL round trip** as a runtime makes it: `wasmgate-cni` -> daemon -> Wasm ->
//!   netlink, against Debian's `ptp` + `host-local` building the same point-to-point attachment,
//!   and against the daemon's netlink effects alone, which is the kernel work both share.
//!   Everything runs in the node netns of a harness [`Daemon`]: the bench re-execs itself with
//!   `--inner`, and the child enters that netns before doing anything else, so both sides' plugins
//!   are exec'd by the same small process in the same way. The child enters only the network
//!   namespace. `ip netns exec` would also give it a private mount namespace, and pod netns
//!   mounted there would not be visible to the daemon. The daemon's own "cni ok ... elapsed" log
//!   lines split our side into daemon and shim time.
//! - **c) CSI** (`--csi` alone): a call through the Wasm driver against a native no-op driver.
//! - **d) CRI** (`--cri` alone): the proxy with two runtime hooks against the builtin runtime's
//!   own socket, per call (a hooked CreateContainer, an unhooked ListPodSandbox) and under
//!   concurrent clients; see `cri.rs`.
//! - **f) the gRPC `:authority` adapter** (`--grpc` alone): a unary call through `grpc::Conn`,
//!   passed on and re-encoded, against the plain stream under h2; see `grpc.rs`.
//! - **e) plugins per language** (`--langs` alone): each example plugin's component size, first
//!   compile, cached load and per-call latency, against the Rust plugin of its world; see `langs.rs`.

mod cri;
mod csi;
mod grants;
mod grpc;
mod langs;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use wasmgate_engine::bindings::cni_types as wit;
use wasmgate_engine::{EngineConfig, LoadedPlugin, PluginSpec, Registry, WasmEngine};
use wasmgate_tests::{CniOutput, Daemon, Netns, PluginEntry, bin, exec_plugin, plugin, unique};

/// How much work one run does.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// Timed `versions` calls, fresh and warm each.
    engine_iters: usize,
    /// Timed in-process ADD + DEL pairs of each kind: plugin on disk, on tmpfs, `CniService`.
    kv_iters: usize,
    /// Timed CNI round trips per side.
    rounds: usize,
    /// Untimed, verified round trips per side before the timed ones.
    warmup: usize,
    /// Timed sequential CRI calls of each kind per side (proxy, direct).
    cri_calls: usize,
    /// How long the concurrent CRI clients run per side.
    cri_run: Duration,
}

// Veth deletion alone varies 15-55 ms here (RCU grace periods), so the round trips get twice
// the ~30 rounds that would otherwise do; a normal run still takes well under a minute.
const NORMAL: Sizes = Sizes {
    engine_iters: 2000,
    kv_iters: 200,
    rounds: 60,
    warmup: 3,
    cri_calls: 2000,
    cri_run: Duration::from_secs(2),
};
const QUICK: Sizes = Sizes {
    engine_iters: 200,
    kv_iters: 20,
    rounds: 8,
    warmup: 3,
    cri_calls: 300,
    cri_run: Duration::from_millis(500),
};

/// What the round-trip target compares: wasmgate's median ADD + DEL over Debian's.
const TARGET_RATIO: f64 = 0.5;

/// Debian's plugins, as packaged.
const DEBIAN_CNI_PATH: &str = "/usr/lib/cni";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sizes = if quick { QUICK } else { NORMAL };
    if args.first().map(String::as_str) == Some("--inner") {
        return Inner::from_args(&args[1..])?.run(sizes);
    }
    if args.first().map(String::as_str) == Some("--native-csi") {
        let sock = args.get(1).context("--native-csi needs a socket path")?;
        return csi::serve_native(sock.into());
    }
    let csi_only = args.iter().any(|a| a == "--csi");
    let cri_only = args.iter().any(|a| a == "--cri");
    let langs_only = args.iter().any(|a| a == "--langs");
    let grpc_only = args.iter().any(|a| a == "--grpc");
    if let Some(bad) = args
        .iter()
        .find(|a| !["--quick", "--csi", "--cri", "--langs", "--grpc"].contains(&a.as_str()))
    {
        bail!(
            "unknown argument {bad:?}; usage: wasmgate-bench [--quick] [--csi] [--cri] [--langs] [--grpc]"
        );
    }
    if csi_only || cri_only || langs_only || grpc_only {
        if csi_only {
            csi::bench(sizes).context("csi bench")?;
        }
        if cri_only {
            cri::bench(sizes).context("cri bench")?;
        }
        if langs_only {
            langs::bench(quick).context("langs bench")?;
        }
        if grpc_only {
            grpc::bench(sizes).context("grpc bench")?;
        }
        return Ok(());
    }
    outer(quick, sizes)
}

fn outer(quick: bool, sizes: Sizes) -> Result<()> {
    let started = Instant::now();
    let wasm = plugin("bridge-ipam");
    println!(
        "== wasmgate-bench ({}) ==",
        if quick { "--quick" } else { "normal run" }
    );
    println!(
        "host: {} cpus, kernel {}, load average {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        read_trimmed("/proc/sys/kernel/osrelease"),
        read_trimmed("/proc/loadavg")
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    println!(
        "component: {} ({} KiB)",
        wasm.strip_prefix(wasmgate_tests::repo())
            .unwrap_or(&wasm)
            .display(),
        std::fs::metadata(&wasm)
            .map(|m| m.len() / 1024)
            .unwrap_or(0)
    );
    println!(
        "sizes: {} engine iterations, {} plugin ADD+DEL pairs, {} CNI rounds per side after {} warmups",
        sizes.engine_iters, sizes.kv_iters, sizes.rounds, sizes.warmup
    );

    engine_overhead(&wasm, sizes).context("engine overhead bench")?;

    // The daemon loads (and compiles) the plugin before it answers; not part of any timing.
    let daemon = Daemon::start(vec![PluginEntry::new("bridge", wasm.clone())]);
    // The same daemon with the veth destroyed on DEL's reply path, to show what deferring that
    // kernel work is worth.
    let sync = Daemon::start_with(
        vec![PluginEntry::new("bridge", wasm)],
        "deferred_teardown = false",
    );
    let mut child = Command::new(std::env::current_exe().context("find the bench executable")?);
    child
        .arg("--inner")
        .args(["--node", &daemon.node.name])
        .arg("--socket")
        .arg(daemon.cni_socket())
        .arg("--queue")
        .arg(daemon.queue_dir())
        .arg("--log")
        .arg(daemon.dir.join("daemon.log"))
        .arg("--sync-socket")
        .arg(sync.cni_socket())
        .arg("--sync-queue")
        .arg(sync.queue_dir());
    if quick {
        child.arg("--quick");
    }
    let status = child
        .status()
        .context("run the round-trip bench in the node netns")?;
    if !status.success() {
        let log = daemon.log();
        let tail: Vec<_> = log.lines().rev().take(20).collect();
        let tail: Vec<_> = tail.into_iter().rev().collect();
        bail!(
            "the round-trip bench failed ({status}); last lines of the daemon log:\n{}",
            tail.join("\n")
        );
    }
    csi::bench(sizes).context("csi bench")?;
    cri::bench(sizes).context("cri bench")?;
    langs::bench(quick).context("langs bench")?;
    grpc::bench(sizes).context("grpc bench")?;
    println!();
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

// ---- a) engine overhead ----

fn engine_overhead(wasm: &Path, sizes: Sizes) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    rt.block_on(async {
        let disk = TempDir::new(&std::env::temp_dir())?;
        let engine = WasmEngine::new(&EngineConfig::default()).context("create the engine")?;
        let pooled = engine.pooled();
        let registry = Arc::new(Registry::new(engine.clone(), disk.path.join("state")));
        let compile = Instant::now();
        registry
            .load(PluginSpec::new("bridge", wasm))
            .await
            .with_context(|| format!("load {}", wasm.display()))?;
        let compile = compile.elapsed();
        let plugin = registry.get("bridge")?;

        println!();
        println!("-- a) engine overhead: bridge-ipam through wasmgate_engine::Registry --");
        println!(
            "pooling allocator: {}; compile {:.2} s (not timed below); state dir {}",
            if pooled { "yes" } else { "no (on-demand)" },
            compile.as_secs_f64(),
            disk.path.display()
        );

        let mut fresh_spec = PluginSpec::new("bridge-fresh", wasm);
        fresh_spec.fresh_instances = true;
        registry.load(fresh_spec).await?;
        let fresh_plugin = registry.get("bridge-fresh")?;
        let [reused, fresh, warm] =
            versions_per_call(&plugin, &fresh_plugin, sizes.engine_iters).await?;
        let (r, f, w) = (Stats::of(&reused), Stats::of(&fresh), Stats::of(&warm));
        println!("{:<44}{:>12}{:>12}", "", "median µs", "p99 µs");
        println!("{:<44}{:>12.1}{:>12.1}", "(1) per-call path + versions", r.median_us(), r.p99_us());
        println!("{:<44}{:>12.1}{:>12.1}", "(1b) same, fresh_instances = true", f.median_us(), f.p99_us());
        println!("{:<44}{:>12.2}{:>12.2}", "(2) warm instance, versions", w.median_us(), w.p99_us());
        println!(
            "{:<44}{:>11.1}x{:>11.1}x",
            "    ratio per-call/warm",
            ratio(r.median, w.median),
            ratio(r.p99, w.p99)
        );
        println!(
            "{:<44}{:>11.1}x{:>11.1}x",
            "    ratio fresh/warm",
            ratio(f.median, w.median),
            ratio(f.p99, w.p99)
        );
        println!(
            "    (per-call: the caller's task, permit, idle instance, epoch yield, timeout; fresh adds \
             a new store and instantiation)"
        );
        // The grant checks every ADD and every hooked call pays, against the guest call above.
        let (net, hook) = grants::measure(sizes.engine_iters * 10)?;
        println!(
            "{:<44}{:>12.2}{:>11.2}x   {}",
            "grant checks of an ADD (plan + result)",
            net,
            net / w.median_us(),
            verdict(net <= grants::BUDGET_US)
        );
        println!(
            "{:<44}{:>12.2}{:>11.2}x   {}",
            "grant check of a hook's adjustment",
            hook,
            hook / w.median_us(),
            verdict(hook <= grants::BUDGET_US)
        );
        println!(
            "    (grant checks: median µs per call, its ratio to (2), and the budget of {} µs a call)",
            grants::BUDGET_US
        );

        // The same ADD + DEL with the plugin's store on tmpfs, where fdatasync costs nothing:
        // the difference is what durability costs on this disk. The compiled artifact is copied
        // over so the second registry does not compile again.
        let shm = TempDir::new(Path::new("/dev/shm")).ok();
        let shm_plugin = match &shm {
            Some(shm) => {
                copy_dir(&disk.path.join("state/cache"), &shm.path.join("state/cache"))?;
                let registry = Registry::new(engine.clone(), shm.path.join("state"));
                registry.load(PluginSpec::new("bridge", wasm)).await?;
                Some((registry.get("bridge")?, registry))
            }
            None => None,
        };
        let svc = Service::new(registry.clone(), &disk.path)?;
        let mut probe = FsyncProbe::new(&disk.path)?;
        let conf = bench_conf();
        // Interleaved, one of each per iteration: the disk is shared and its latency drifts.
        let (mut on_disk, mut on_shm, mut service, mut fsync) = (vec![], vec![], vec![], vec![]);
        for i in 0..sizes.kv_iters + 5 {
            let d = add_del(&plugin, &conf, format!("bench-d{i}")).await?;
            let s = match &shm_plugin {
                Some((p, _)) => Some(add_del(p, &conf, format!("bench-s{i}")).await?),
                None => None,
            };
            let v = svc.add_del(&format!("bench-v{i}")).await?;
            let f = probe.probe()?;
            if i >= 5 {
                on_disk.push(d);
                on_shm.extend(s);
                service.push(v);
                fsync.push(f);
            }
        }
        drop(shm_plugin);

        let total = |t: &[Trip]| Stats::of(&t.iter().map(Trip::total).collect::<Vec<_>>());
        let parts = |t: &[Trip]| {
            for (name, part) in [("    of which ADD", Trip::add as fn(&Trip) -> Duration), ("    of which DEL", Trip::del)] {
                let s = Stats::of(&t.iter().map(part).collect::<Vec<_>>());
                println!("{:<44}{:>12.0}{:>12.0}", name, s.median_us(), s.mean_us());
            }
        };
        let d = total(&on_disk);
        println!("{:<44}{:>12}{:>12}", "", "median µs", "mean µs");
        println!("{:<44}{:>12.0}{:>12.0}", "(3) ADD + DEL, plugin only", d.median_us(), d.mean_us());
        parts(&on_disk);
        // Two `versions` calls: the dispatch cost an ADD + DEL pays in any case.
        let two_calls = r.median * 2;
        println!(
            "{:<44}{:>12.0}{:>12}   (3) is {:.1}x this",
            "    baseline: 2 x versions (1)",
            two_calls.as_secs_f64() * 1e6,
            "",
            ratio(d.median, two_calls)
        );
        if !on_shm.is_empty() {
            let s = total(&on_shm);
            println!(
                "{:<44}{:>12.0}{:>12.0}   (3) is {:.1}x this",
                "    baseline: same, plugin store on tmpfs",
                s.median_us(),
                s.mean_us(),
                ratio(d.median, s.median)
            );
        }
        let fs = Stats::of(&fsync);
        println!(
            "{:<44}{:>12.0}{:>12.0}   (3) is {:.1}x this",
            "    baseline: 4 KiB pwrite + fdatasync",
            fs.median_us(),
            fs.mean_us(),
            ratio(d.median, fs.median)
        );
        println!(
            "    (an ADD + DEL makes 7 durable wasi:keyvalue commits, one fdatasync each: \
             ADD cursor, claim, owner, alloc; DEL owner, alloc, claim)"
        );
        let v = total(&service);
        println!(
            "{:<44}{:>12.0}{:>12.0}   {:.2}x (3)",
            "(4) ADD + DEL through the daemon's CniService",
            v.median_us(),
            v.mean_us(),
            ratio(v.median, d.median)
        );
        parts(&service);
        println!(
            "    (in process, the recording fake in place of netlink: the daemon's whole path but \
             the socket and the kernel; adds request checks, 2 host-record commits, plan validation)"
        );
        Ok(())
    })
}

/// `versions` on the per-call path (an idle instance reused), in a fresh instance each call (a
/// plugin with `fresh_instances`), and on a warm instance with no dispatch, in turn in blocks so
/// drift hits all three alike.
async fn versions_per_call(
    plugin: &Arc<LoadedPlugin>,
    fresh_plugin: &Arc<LoadedPlugin>,
    iters: usize,
) -> Result<[Vec<Duration>; 3]> {
    let (mut store, instance) = plugin.warm_instance().await?;
    let warm_net = instance.wasmgate_plugin_network();
    let reused_call = || plugin.network(async |net, store| net.call_versions(store).await);
    let fresh_call = || fresh_plugin.network(async |net, store| net.call_versions(store).await);
    let expected = reused_call().await?;
    ensure!(
        expected.iter().any(|v| v == "1.0.0"),
        "plugin versions {expected:?} lack 1.0.0"
    );
    ensure!(
        wt(warm_net.call_versions(&mut store).await)? == expected
            && fresh_call().await? == expected,
        "warm, fresh and reused versions differ"
    );
    for _ in 0..200 {
        reused_call().await?;
        fresh_call().await?;
        wt(warm_net.call_versions(&mut store).await)?;
    }
    let block = 100.min(iters.max(1));
    let [mut reused, mut fresh, mut warm] = [0; 3].map(|_| Vec::with_capacity(iters));
    while fresh.len() < iters {
        let n = block.min(iters - fresh.len());
        for _ in 0..n {
            let t = Instant::now();
            let v = reused_call().await?;
            reused.push(t.elapsed());
            ensure!(v == expected, "versions changed: {v:?}");
        }
        for _ in 0..n {
            let t = Instant::now();
            let v = fresh_call().await?;
            fresh.push(t.elapsed());
            ensure!(v == expected, "fresh versions changed: {v:?}");
        }
        for _ in 0..n {
            let t = Instant::now();
            let v = wt(warm_net.call_versions(&mut store).await)?;
            warm.push(t.elapsed());
            ensure!(v == expected, "warm versions changed: {v:?}");
        }
    }
    Ok([reused, fresh, warm])
}

/// The daemon's own `CniService` with the recording fake for effects: everything the daemon does
/// for a call except the socket and the kernel work.
struct Service {
    svc: wasmgate_daemon::cni::CniService,
    config: String,
}

impl Service {
    fn new(registry: Arc<Registry>, dir: &Path) -> Result<Self> {
        use std::collections::BTreeMap;
        use wasmgate_daemon::cni::{CniService, PluginPolicy};
        use wasmgate_daemon::state::Records;
        use wasmgate_effects::NetPolicy;
        use wasmgate_effects::fake::RecordingFake;

        let records = Arc::new(Records::open(&dir.join("state/host.redb"))?);
        let policy = PluginPolicy {
            net: NetPolicy {
                allowed_bridges: vec![],
                host_prefix: Some("wg".into()),
                pod_cidrs: vec!["10.248.0.0/16".parse().unwrap()],
            },
        };
        let svc = CniService::new(
            registry,
            Arc::new(RecordingFake::new()),
            records,
            BTreeMap::from([("bridge".to_string(), policy)]),
            "bridge".into(),
        );
        let config = json!({
            "cniVersion": "1.0.0",
            "name": "bench-svc",
            "type": "wasmgate-cni",
            "podcidr": "10.248.0.0/24",
            "mode": "ptp",
        })
        .to_string();
        Ok(Self { svc, config })
    }

    async fn add_del(&self, cid: &str) -> Result<Trip> {
        use wasmgate_cni::command::Command as CniCommand;
        Ok(Trip {
            cid: cid.to_string(),
            add: self.call(CniCommand::Add, cid).await?,
            del: self.call(CniCommand::Del, cid).await?,
        })
    }

    /// One request as the CNI socket hands it over; the timing is of `handle` alone.
    async fn call(&self, command: wasmgate_cni::command::Command, cid: &str) -> Result<Duration> {
        use wasmgate_cni::command::Command as CniCommand;
        use wasmgate_cni::env::Invocation;
        use wasmgate_cni::wire::{Request, Response};
        let req = Request {
            invocation: Invocation {
                command,
                container_id: cid.to_string(),
                netns: "/var/run/netns/wasmgate-bench-unused".into(),
                ifname: "eth0".into(),
                args: vec![],
                path: vec![DEBIAN_CNI_PATH.into()],
            },
            config: self.config.clone(),
        };
        let t = Instant::now();
        let resp = self.svc.handle(req).await;
        let elapsed = t.elapsed();
        match resp {
            Response::Ok { stdout }
                if command == CniCommand::Del || stdout.contains("10.248.0.") =>
            {
                Ok(elapsed)
            }
            Response::Ok { stdout } => bail!("service ADD of {cid} returned no address: {stdout}"),
            Response::Err { error } => {
                bail!(
                    "service {command} of {cid} failed: code {}: {}",
                    error.code,
                    error.msg
                )
            }
        }
    }
}

/// A ptp-mode net-conf like the one part b) sends, on a pool of its own.
fn bench_conf() -> wit::NetConf {
    wit::NetConf {
        cni_version: "1.0.0".into(),
        name: "bench-engine".into(),
        type_: "wasmgate-cni".into(),
        prev_result: None,
        runtime_config: None,
        args: None,
        raw: json!({
            "cniVersion": "1.0.0",
            "name": "bench-engine",
            "type": "wasmgate-cni",
            "podcidr": "10.252.0.0/24",
            "mode": "ptp",
        })
        .to_string(),
    }
}

/// One ADD then one DEL on the per-call path; the netns is never touched.
async fn add_del(plugin: &Arc<LoadedPlugin>, conf: &wit::NetConf, cid: String) -> Result<Trip> {
    let inv = wit::Invocation {
        container_id: cid,
        netns: "/var/run/netns/wasmgate-bench-unused".into(),
        ifname: "eth0".into(),
        args: vec![],
    };
    let (add_conf, add_inv) = (conf.clone(), inv.clone());
    let (del_conf, del_inv) = (conf.clone(), inv.clone());
    let t = Instant::now();
    let added = plugin
        .network(async |net, store| net.call_add(store, &add_conf, &add_inv).await)
        .await?;
    let add = t.elapsed();
    let t = Instant::now();
    let deleted = plugin
        .network(async |net, store| net.call_del(store, &del_conf, &del_inv).await)
        .await?;
    let del = t.elapsed();
    let added = added.map_err(|e| {
        anyhow!(
            "plugin ADD of {} failed: code {}: {} ({})",
            inv.container_id,
            e.code,
            e.msg,
            e.details
        )
    })?;
    deleted.map_err(|e| {
        anyhow!(
            "plugin DEL of {} failed: code {}: {} ({})",
            inv.container_id,
            e.code,
            e.msg,
            e.details
        )
    })?;
    let ip = added
        .result
        .ips
        .first()
        .map(|ip| ip.address.as_str())
        .unwrap_or("");
    ensure!(
        ip.starts_with("10.252.0."),
        "plugin ADD of {} returned no address from the pool: {ip:?}",
        inv.container_id
    );
    ensure!(
        added.attachment.is_some(),
        "plugin ADD of {} returned no attachment",
        inv.container_id
    );
    Ok(Trip {
        cid: inv.container_id,
        add,
        del,
    })
}

/// What one durable commit costs at least on this filesystem: a page rewritten and fdatasync'd.
struct FsyncProbe {
    file: std::fs::File,
    n: u64,
}

impl FsyncProbe {
    fn new(dir: &Path) -> Result<Self> {
        let path = dir.join("fdatasync-probe");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?;
        Ok(Self { file, n: 0 })
    }

    fn probe(&mut self) -> Result<Duration> {
        use std::os::unix::fs::FileExt;
        let page = [0x5au8; 4096];
        let t = Instant::now();
        self.file.write_all_at(&page, (self.n % 8) * 4096)?;
        self.file.sync_data()?;
        self.n += 1;
        Ok(t.elapsed())
    }
}

// ---- b) CNI round trip, inside the node netns ----

/// The child half: enters the daemon's node netns, then times both sides.
struct Inner {
    node: String,
    socket: PathBuf,
    queue: PathBuf,
    log: PathBuf,
    sync_socket: PathBuf,
    sync_queue: PathBuf,
}

/// Which CNI plugin a round trip goes through.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Wasmgate,
    /// wasmgate with `deferred_teardown = false`: DEL waits for the kernel to destroy the veth.
    WasmgateSync,
    Debian,
    /// The daemon's netlink effects alone, called in this process: the kernel work both plugins
    /// share, with no exec, socket, Wasm or state around it.
    Effects,
}

impl Side {
    const ALL: [Side; 4] = [
        Side::Wasmgate,
        Side::WasmgateSync,
        Side::Debian,
        Side::Effects,
    ];

    fn tag(self) -> &'static str {
        match self {
            Side::Wasmgate => "wg",
            Side::WasmgateSync => "wgs",
            Side::Debian => "deb",
            Side::Effects => "fx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One timed round trip.
struct Trip {
    cid: String,
    add: Duration,
    del: Duration,
}

impl Trip {
    fn total(&self) -> Duration {
        self.add + self.del
    }

    fn add(&self) -> Duration {
        self.add
    }

    fn del(&self) -> Duration {
        self.del
    }
}

impl Inner {
    fn from_args(args: &[String]) -> Result<Self> {
        let value = |flag: &str| -> Result<String> {
            let at = args
                .iter()
                .position(|a| a == flag)
                .ok_or_else(|| anyhow!("--inner needs {flag}"))?;
            args.get(at + 1)
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        Ok(Self {
            node: value("--node")?,
            socket: value("--socket")?.into(),
            queue: value("--queue")?.into(),
            log: value("--log")?.into(),
            sync_socket: value("--sync-socket")?.into(),
            sync_queue: value("--sync-queue")?.into(),
        })
    }

    fn run(&self, sizes: Sizes) -> Result<()> {
        // Still single-threaded here, so every thread and child from now on is in the node netns.
        let ns_path = format!("/var/run/netns/{}", self.node);
        let ns =
            std::fs::File::open(&ns_path).with_context(|| format!("open node netns {ns_path}"))?;
        // Safety: a plain syscall on a file descriptor we own.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("enter node netns {ns_path}"));
        }
        drop(ns);

        let host_local = TempDir::new(&std::env::temp_dir())?;
        let debian_conf = json!({
            "cniVersion": "1.0.0",
            "name": "bench-ptp",
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": "10.250.0.0/24",
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": host_local.path,
            },
        })
        .to_string();
        let wasmgate_conf = json!({
            "cniVersion": "1.0.0",
            "name": "bench-wg",
            "type": "wasmgate-cni",
            "podcidr": "10.251.0.0/24",
            "mode": "ptp",
            "socket": self.socket,
            "queueDir": self.queue,
        })
        .to_string();
        let mut sync_conf: Value = serde_json::from_str(&wasmgate_conf)?;
        sync_conf["name"] = json!("bench-wg-sync");
        sync_conf["podcidr"] = json!("10.252.0.0/24");
        sync_conf["socket"] = json!(self.sync_socket);
        sync_conf["queueDir"] = json!(self.sync_queue);
        let sync_conf = sync_conf.to_string();
        let shim = bin("wasmgate-cni");
        let ptp = Path::new(DEBIAN_CNI_PATH).join("ptp");
        ensure!(
            ptp.exists(),
            "{} is missing: install containernetworking-plugins",
            ptp.display()
        );

        println!();
        println!("-- b) CNI ADD+DEL round trip, point-to-point veth + IPv4 /24 + default route --");
        println!(
            "node netns {}; every plugin exec'd by this process with CNI_* env and the config on stdin",
            self.node
        );
        println!(
            "debian:   {} (+ host-local via CNI_PATH={DEBIAN_CNI_PATH}), ipMasq false",
            ptp.display()
        );
        println!(
            "wasmgate: {} -> daemon -> bridge-ipam (mode ptp) -> netlink",
            shim.display()
        );
        println!(
            "baseline: the same ptp plan through wasmgate_effects::Netlink in this process (kernel work only)"
        );

        let pid = std::process::id();
        let mut verified = 0;
        let mut trip = |side: Side, cid: &str, verify: bool| -> Result<Trip> {
            verified += usize::from(verify);
            match side {
                Side::Wasmgate => round_trip(side, &shim, &wasmgate_conf, "10.251.0.", cid, verify),
                Side::WasmgateSync => round_trip(side, &shim, &sync_conf, "10.252.0.", cid, verify),
                Side::Debian => round_trip(side, &ptp, &debian_conf, "10.250.0.", cid, verify),
                Side::Effects => effects_trip(cid, verify),
            }
        };
        for i in 0..sizes.warmup {
            for side in Side::ALL {
                trip(side, &format!("warm-{}-{pid}-{i}", side.tag()), true)?;
            }
        }
        let mut trips: [Vec<Trip>; 4] = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for i in 0..sizes.rounds {
            // Rotate the order each round, so no side always runs right after another.
            let mut order = Side::ALL;
            order.rotate_left(i % Side::ALL.len());
            for side in order {
                let cid = format!("bench-{}-{pid}-{i}", side.tag());
                trips[side.index()].push(trip(side, &cid, i % 10 == 0)?);
            }
        }
        let [ours, ours_sync, theirs, kernel] = trips;
        let total = |t: &[Trip]| Stats::of(&t.iter().map(Trip::total).collect::<Vec<_>>());
        let (w, ws, d, k) = (
            total(&ours),
            total(&ours_sync),
            total(&theirs),
            total(&kernel),
        );
        println!(
            "{} rounds per side after {} warmups, order rotated each round; {verified} round trips verified \
             (result IP present on the pod's interface after ADD, interface gone after DEL)",
            sizes.rounds, sizes.warmup
        );
        println!(
            "{:<44}{:>11}{:>11}{:>11}{:>11}",
            "ADD+DEL wall clock", "median ms", "mean ms", "min ms", "max ms"
        );
        for (name, s) in [
            ("debian ptp + host-local (4 execs)", &d),
            ("wasmgate-cni -> daemon (2 execs)", &w),
            ("wasmgate, teardown on DEL's reply path", &ws),
            ("baseline: netlink effects alone, no exec", &k),
        ] {
            println!(
                "{:<44}{:>11.2}{:>11.2}{:>11.2}{:>11.2}",
                name,
                s.median_ms(),
                s.mean_ms(),
                s.min.as_secs_f64() * 1e3,
                s.max.as_secs_f64() * 1e3
            );
        }
        let (rm, ra) = (ratio(w.median, d.median), ratio(w.mean, d.mean));
        println!("{:<44}{:>11.3}{:>11.3}", "ratio wasmgate/debian", rm, ra);
        println!(
            "{:<44}{:>11.3}{:>11.3}",
            "ratio wasmgate (teardown on reply)/debian",
            ratio(ws.median, d.median),
            ratio(ws.mean, d.mean)
        );
        println!(
            "{:<44}{:>11.3}{:>11.3}",
            "floor: effects alone/debian",
            ratio(k.median, d.median),
            ratio(k.mean, d.mean)
        );
        println!(
            "target median ratio wasmgate/debian <= {TARGET_RATIO}: {} ({rm:.3})",
            if rm <= TARGET_RATIO { "MET" } else { "NOT MET" }
        );

        self.breakdown(&ours, &theirs, &kernel, &shim, &ptp, sizes)?;
        Ok(())
    }

    /// Where the wasmgate side's time goes: the daemon's own "cni ok ... elapsed" per call, the
    /// remainder (shim exec, socket, reply), and what a bare exec of each plugin costs.
    fn breakdown(
        &self,
        ours: &[Trip],
        theirs: &[Trip],
        kernel: &[Trip],
        shim: &Path,
        ptp: &Path,
        sizes: Sizes,
    ) -> Result<()> {
        let log = std::fs::read_to_string(&self.log)
            .with_context(|| format!("read {}", self.log.display()))?;
        let calls = daemon_calls(&log);
        let find = |cid: &str, cmd: &str| {
            calls
                .iter()
                .find(|c| c.container == cid && c.command == cmd)
                .map(|c| c.elapsed)
        };
        let mut daemon_add = Vec::new();
        let mut daemon_del = Vec::new();
        let mut rest_add = Vec::new();
        let mut rest_del = Vec::new();
        for t in ours {
            let (Some(a), Some(d)) = (find(&t.cid, "ADD"), find(&t.cid, "DEL")) else {
                bail!(
                    "daemon log {} has no \"cni ok\" lines for {}",
                    self.log.display(),
                    t.cid
                );
            };
            daemon_add.push(a);
            daemon_del.push(d);
            rest_add.push(t.add.saturating_sub(a));
            rest_del.push(t.del.saturating_sub(d));
        }
        // Exec cost alone: VERSION is answered by the shim itself and by ptp itself; /bin/true is
        // the least any exec costs.
        let truth = Path::new("/bin/true");
        let mut version = [Vec::new(), Vec::new(), Vec::new()];
        let env = |cmd: &str| {
            vec![
                ("CNI_COMMAND", cmd.to_string()),
                ("CNI_PATH", DEBIAN_CNI_PATH.to_string()),
            ]
        };
        let stdin = r#"{"cniVersion":"1.0.0","name":"bench-version","type":"x"}"#;
        for i in 0..sizes.rounds.max(10) + 2 {
            for (k, path) in [shim, ptp, truth].into_iter().enumerate() {
                let t = Instant::now();
                // /bin/true exits without reading: give it nothing to write.
                let out = exec_plugin(
                    path,
                    &env("VERSION"),
                    if path == truth { "" } else { stdin },
                );
                let el = t.elapsed();
                ensure!(
                    out.exit == 0,
                    "{} VERSION failed: {} {}",
                    path.display(),
                    out.stdout,
                    out.stderr
                );
                if i >= 2 {
                    version[k].push(el);
                }
            }
        }
        let med = |v: &[Duration]| Stats::of(v).median_ms();
        let phases = |t: &[Trip]| {
            (
                med(&t.iter().map(Trip::add).collect::<Vec<_>>()),
                med(&t.iter().map(Trip::del).collect::<Vec<_>>()),
            )
        };
        let (ours_add, ours_del) = phases(ours);
        let (theirs_add, theirs_del) = phases(theirs);
        let (kernel_add, kernel_del) = phases(kernel);
        let row = |name: &str, add: f64, del: f64| println!("{name:<52}{add:>10.2}{del:>10.2}");
        println!();
        println!(
            "breakdown (medians, ms; daemon figures are its own \"cni ok ... elapsed\" log lines)"
        );
        println!("{:<52}{:>10}{:>10}", "", "ADD", "DEL");
        row(
            "debian ptp + host-local, wall clock",
            theirs_add,
            theirs_del,
        );
        row("wasmgate, wall clock", ours_add, ours_del);
        row(
            "  in the daemon (validate, Wasm, netlink, records)",
            med(&daemon_add),
            med(&daemon_del),
        );
        row(
            "  outside it (shim exec, socket, reply)",
            med(&rest_add),
            med(&rest_del),
        );
        row(
            "netlink effects alone (apply / remove)",
            kernel_add,
            kernel_del,
        );
        println!(
            "{:<52}{:>10.3}{:>10.3}",
            "ratio wasmgate/debian",
            ours_add / theirs_add,
            ours_del / theirs_del
        );
        // What each side adds to the kernel work on ADD, the part a plugin design can change.
        // (DEL has no such line: wasmgate destroys the veth behind the reply, so its DEL wall
        // clock holds no kernel teardown to subtract.)
        let (above_ours, above_theirs) = (ours_add - kernel_add, theirs_add - kernel_add);
        println!(
            "{:<52}{:>10.2}",
            "ADD above the kernel work (wall - effects): debian", above_theirs
        );
        println!(
            "{:<52}{:>10.2}",
            "ADD above the kernel work (wall - effects): wasmgate", above_ours
        );
        println!(
            "{:<52}{:>10.3}",
            "ratio wasmgate/debian",
            above_ours / above_theirs
        );
        let (vs, vp, vt) = (
            Stats::of(&version[0]),
            Stats::of(&version[1]),
            Stats::of(&version[2]),
        );
        println!(
            "exec alone (VERSION, answered in-process): wasmgate-cni {:.2} ms, debian ptp {:.2} ms \
             (ratio {:.2}); /bin/true {:.2} ms",
            vs.median_ms(),
            vp.median_ms(),
            ratio(vs.median, vp.median),
            vt.median_ms()
        );
        Ok(())
    }
}

/// ADD then DEL in a fresh pod netns; returns the two exec wall clocks. With `verify`, checks
/// (untimed) that the pod has the result's address after ADD and no interface after DEL.
fn round_trip(
    side: Side,
    plugin: &Path,
    conf: &str,
    prefix: &str,
    cid: &str,
    verify: bool,
) -> Result<Trip> {
    let pod = Netns::new("wgbp");
    let env = |cmd: &str| {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_NETNS", pod.path()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", DEBIAN_CNI_PATH.to_string()),
        ]
    };
    let add_env = env("ADD");
    let t = Instant::now();
    let added = exec_plugin(plugin, &add_env, conf);
    let add = t.elapsed();
    ok(side, "ADD", cid, &added)?;
    let ip = added
        .json()
        .pointer("/ips/0/address")
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{side:?} ADD of {cid} returned no ip: {}", added.stdout))?;
    ensure!(
        ip.starts_with(prefix),
        "{side:?} ADD of {cid} returned {ip}, not from {prefix}0/24"
    );
    if verify {
        let addrs = pod.addrs("eth0");
        ensure!(
            addrs.contains(&ip),
            "{side:?} ADD of {cid}: pod eth0 has {addrs:?}, not {ip}"
        );
    }
    let del_env = env("DEL");
    let t = Instant::now();
    let deleted = exec_plugin(plugin, &del_env, conf);
    let del = t.elapsed();
    ok(side, "DEL", cid, &deleted)?;
    if verify {
        // wasmgate answers DEL once the pod is cut off; the veth goes right behind the reply.
        ensure!(
            pod.gone("eth0"),
            "{side:?} DEL of {cid} left eth0 in the pod"
        );
    }
    drop(pod);
    Ok(Trip {
        cid: cid.to_string(),
        add,
        del,
    })
}

/// The kernel work of one ptp ADD and DEL with nothing around it: the plan bridge-ipam returns in
/// ptp mode, applied and removed by the daemon's own effects, in this process.
fn effects_trip(cid: &str, verify: bool) -> Result<Trip> {
    use wasmgate_cni::plan::{Attachment, Route, Target, Veth};
    use wasmgate_effects::{Netlink, NetworkEffects};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // One address per round from 10.249.0.0/24, .1 being the gateway.
    let ip = format!("10.249.0.{}", 2 + n % 250);
    let pod = Netns::new("wgbp");
    let target = Target {
        netns: pod.path(),
        ifname: "eth0".into(),
    };
    let plan = Attachment {
        veth: Veth {
            host_name: format!("wgbx{:05}{:05}", std::process::id() % 100_000, n),
            mtu: Some(1500),
            host_addresses: vec!["10.249.0.1/32".into()],
        },
        bridge: None,
        container_addresses: vec![format!("{ip}/24")],
        container_routes: vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: Some("10.249.0.1".into()),
            ..Default::default()
        }],
        host_routes: vec![Route {
            dst: format!("{ip}/32"),
            ..Default::default()
        }],
    };
    let fx = Netlink::new();
    let t = Instant::now();
    let built = fx
        .apply(&target, &plan)
        .with_context(|| format!("effects apply for {cid}"))?;
    let add = t.elapsed();
    if verify {
        let addrs = pod.addrs("eth0");
        ensure!(
            addrs.contains(&format!("{ip}/24")),
            "effects apply for {cid}: pod eth0 has {addrs:?}"
        );
    }
    let t = Instant::now();
    fx.remove(&target, &plan, Some(&built))
        .with_context(|| format!("effects remove for {cid}"))?;
    let del = t.elapsed();
    if verify {
        ensure!(
            !pod.has_link("eth0"),
            "effects remove for {cid} left eth0 in the pod"
        );
    }
    drop(pod);
    Ok(Trip {
        cid: cid.to_string(),
        add,
        del,
    })
}

fn ok(side: Side, cmd: &str, cid: &str, out: &CniOutput) -> Result<()> {
    ensure!(
        out.exit == 0,
        "{side:?} {cmd} of {cid} failed (exit {}): {} {}",
        out.exit,
        out.stdout,
        out.stderr.trim()
    );
    Ok(())
}

/// One "cni ok" line of the daemon log.
struct DaemonCall {
    command: String,
    container: String,
    elapsed: Duration,
}

fn daemon_calls(log: &str) -> Vec<DaemonCall> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains("cni ok"))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).and_then(|w| w.strip_prefix('=')))
                    .map(str::to_string)
            };
            Some(DaemonCall {
                command: field("command")?,
                container: field("container")?,
                elapsed: parse_debug_duration(&field("elapsed")?)?,
            })
        })
        .collect()
}

/// Drops terminal colour sequences (`ESC [ ... m`), which tracing writes even to a file.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `Duration`'s `Debug` form: `1.5s`, `12.3ms`, `850.1µs`, `42ns`.
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" | "us" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

// ---- helpers ----

/// Median, p99, mean and extremes of a sample.
struct Stats {
    median: Duration,
    p99: Duration,
    mean: Duration,
    min: Duration,
    max: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Self {
        assert!(!samples.is_empty(), "no samples");
        let mut v = samples.to_vec();
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Self {
            median: at(0.5),
            p99: at(0.99),
            mean: v.iter().sum::<Duration>() / v.len() as u32,
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    fn median_us(&self) -> f64 {
        self.median.as_secs_f64() * 1e6
    }

    fn p99_us(&self) -> f64 {
        self.p99.as_secs_f64() * 1e6
    }

    fn mean_us(&self) -> f64 {
        self.mean.as_secs_f64() * 1e6
    }

    fn median_ms(&self) -> f64 {
        self.median.as_secs_f64() * 1e3
    }

    fn mean_ms(&self) -> f64 {
        self.mean.as_secs_f64() * 1e3
    }
}

/// What a target line prints.
fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "MISSED" }
}

/// The 1, 5 and 15 minute load averages, printed beside figures taken on a shared machine.
fn loadavg() -> String {
    read_trimmed("/proc/loadavg")
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A wasmtime error as an anyhow one (wasmtime's own error type does not convert by `?`).
fn wt<T>(r: wasmgate_engine::wasmtime::Result<T>) -> Result<T> {
    r.map_err(|e| anyhow!("warm instance call failed: {e:#}"))
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))
            .with_context(|| format!("copy {}", entry.path().display()))?;
    }
    Ok(())
}

/// A directory removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(parent: &Path) -> Result<Self> {
        let path = parent.join(unique("wasmgate-bench-"));
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
