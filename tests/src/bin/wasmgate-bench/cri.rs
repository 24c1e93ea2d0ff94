//! d) CRI: what the proxy adds to a call, against the same call on the builtin runtime's own
//! socket, and how many hooked calls it passes per second.
//!
//! One daemon serves `[cri]` in front of its builtin runtime with two runtime hooks in its chain,
//! `hook-policy` then `hook-inject`, which both subscribe to CreateContainer. The proxy calls the
//! builtin runtime in process; the runtime also listens on a private socket of its own
//! (`<state>/cri-builtin.sock`), served by the same process the same way, and the baseline calls
//! that socket directly. So "added" is everything the proxy does: decoding the request into the
//! hooks' view, the hook chain (each hook on the handler's own task), handing the adjusted request
//! to the runtime, and the bookkeeping. Both sides are called by the same client, alternately in
//! blocks, so drift on a noisy machine hits both.
//!
//! - a hooked call: CreateContainer, each followed by an untimed RemoveContainer on the same
//!   socket so the runtime's state stays flat;
//! - an unhooked call: ListPodSandbox with a few pods present, which the proxy passes on as it
//!   came, without decoding it;
//! - concurrent clients doing CreateContainer + RemoveContainer pairs for a fixed time (no hook
//!   subscribes to RemoveContainer, so the proxy forwards it as it came), with both processes'
//!   CPU per pair and the ceiling those costs set on these cores;
//! - where a hooked call's time goes, from the daemon's trace records of a sample of calls.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tonic::transport::Channel;
use wasmgate_daemon::admin::TraceFilter;
use wasmgate_daemon::trace::{CallRecord, TraceLine};
use wasmgate_proto::cri::v1 as pb;
use wasmgate_proto::cri::v1::image_service_client::ImageServiceClient;
use wasmgate_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use wasmgate_tests::{Daemon, plugin};

use wasmgate_engine::bindings::cri_types as wit;
use wasmgate_engine::{EngineConfig, LoadedPlugin, PluginSpec, Registry, WasmEngine, World};

use crate::{Sizes, TempDir, copy_dir, loadavg, verdict};

type Rt = RuntimeServiceClient<Channel>;

/// Targets for the proxy: added latency of a hooked call, and hooked calls per second.
const TARGET_ADDED_P50_US: f64 = 100.0;
const TARGET_ADDED_P99_US: f64 = 300.0;
const TARGET_HOOKED_PER_S: f64 = 10_000.0;

/// Pods present while ListPodSandbox is timed.
const PODS: usize = 5;
/// Sequential calls per side before switching to the other side.
const BLOCK: usize = 50;
/// Concurrent clients, and the connections (HTTP/2 channels) they share, per side.
const TASKS: usize = 16;
const CONNECTIONS: usize = 4;
/// The concurrent run alternates sides in slices this long.
const SLICE: Duration = Duration::from_millis(250);
/// The pod namespace: `default` is not on hook-policy's allow-list, so the hook does its work.
const NAMESPACE: &str = "default";
/// What hook-inject is configured to inject; checked once, on a proxied container.
const NODE_VALUE: &str = "bench-node";

pub fn bench(sizes: Sizes) -> Result<()> {
    let started = Instant::now();
    println!();
    println!(
        "-- d) CRI: the proxy with 2 hooks (hook-policy, hook-inject) vs the builtin runtime's own socket --"
    );
    println!("load average at start: {}", loadavg());
    let daemon = Daemon::start_proxy(
        "builtin",
        &[
            ("policy", plugin("hook-policy"), ""),
            (
                "inject",
                plugin("hook-inject"),
                &format!("config = {{ value = \"{NODE_VALUE}\" }}"),
            ),
        ],
    );
    let direct_sock = daemon.dir.join("state/cri-builtin.sock");
    let proxy_sock = daemon.cri_socket();

    // Sequential latency on one thread, as csi.rs measures it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pod = rt.block_on(async {
        let proxy = connect(&proxy_sock).await?;
        let direct = connect(&direct_sock).await?;
        let pod = setup(&proxy).await?;
        latency(&daemon, proxy.clone(), direct, &pod, sizes.cri_calls).await?;
        where_time_goes(&daemon, proxy, &pod, (sizes.cri_calls / 10).clamp(50, 200)).await?;
        Ok::<_, anyhow::Error>(pod)
    })?;
    drop(rt);
    hook_calls(&daemon, sizes.cri_calls / 2).context("hook calls in process")?;

    // Concurrent clients: a multi-threaded client, so that the client is not what limits.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(throughput(
        &daemon,
        &proxy_sock,
        &direct_sock,
        &pod,
        sizes.cri_run,
    ))?;
    println!(
        "load average at end: {}; section d) took {:.1} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn connect(sock: &Path) -> Result<Channel> {
    wasmgate_proto::unix_channel(sock)
        .await
        .with_context(|| format!("connect to {}", sock.display()))
}

fn pod_config(name: &str) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: NAMESPACE.into(),
            attempt: 0,
        }),
        log_directory: "/tmp".into(),
        ..Default::default()
    }
}

/// A CreateContainer as kubelet sends it: with the pod's config, so the proxy need not look the
/// pod up.
fn create_request(pod: &str, name: &str) -> pb::CreateContainerRequest {
    pb::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(pb::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            linux: Some(pb::LinuxContainerConfig {
                security_context: Some(pb::LinuxContainerSecurityContext {
                    privileged: false,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        sandbox_config: Some(pod_config("bench-0")),
    }
}

/// [`PODS`] pods and the image, through the proxy; returns the pod containers go into. Checks
/// once that the hooks are in the path: a proxied container carries hook-inject's annotation.
async fn setup(proxy: &Channel) -> Result<String> {
    let mut rt = Rt::new(proxy.clone());
    let mut pods = Vec::new();
    for i in 0..PODS {
        let id = rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(pod_config(&format!("bench-{i}"))),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        pods.push(id);
    }
    ImageServiceClient::new(proxy.clone())
        .pull_image(pb::PullImageRequest {
            image: Some(pb::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let pod = pods[0].clone();
    let cid = rt
        .create_container(create_request(&pod, "check"))
        .await?
        .into_inner()
        .container_id;
    let status = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: cid.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .context("no container status")?;
    ensure!(
        status
            .annotations
            .get("wasmgate.io/node")
            .map(String::as_str)
            == Some(NODE_VALUE),
        "hook-inject's annotation is missing from a proxied container: {:?}",
        status.annotations
    );
    rt.remove_container(pb::RemoveContainerRequest { container_id: cid })
        .await?;
    Ok(pod)
}

/// One CreateContainer, timed, then its RemoveContainer on the same socket, untimed.
async fn create_remove(rt: &mut Rt, pod: &str, name: &str) -> Result<Duration> {
    let t = Instant::now();
    let id = rt
        .create_container(create_request(pod, name))
        .await?
        .into_inner()
        .container_id;
    let el = t.elapsed();
    rt.remove_container(pb::RemoveContainerRequest { container_id: id })
        .await?;
    Ok(el)
}

async fn list_pods(rt: &mut Rt) -> Result<Duration> {
    let t = Instant::now();
    let n = rt
        .list_pod_sandbox(pb::ListPodSandboxRequest { filter: None })
        .await?
        .into_inner()
        .items
        .len();
    let el = t.elapsed();
    ensure!(n == PODS, "ListPodSandbox listed {n} pods, not {PODS}");
    Ok(el)
}

/// p50 and p99 of a sample.
#[derive(Clone, Copy)]
struct Pct {
    p50: f64,
    p99: f64,
}

impl Pct {
    fn of(v: &mut [Duration]) -> Self {
        v.sort();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
        Self {
            p50: at(0.5),
            p99: at(0.99),
        }
    }
}

async fn latency(
    d: &Daemon,
    proxy: Channel,
    direct: Channel,
    pod: &str,
    calls: usize,
) -> Result<()> {
    let (mut p, mut q) = (Rt::new(proxy), Rt::new(direct));
    // Warm both: connections, the hooks' idle instances, the kernel's socket buffers.
    for _ in 0..BLOCK {
        create_remove(&mut p, pod, "warm").await?;
        create_remove(&mut q, pod, "warm").await?;
        list_pods(&mut p).await?;
        list_pods(&mut q).await?;
    }
    let stats_before = wasmgate_daemon::admin::stats(&d.admin_socket())?;
    let (mut hp, mut hd, mut lp, mut ld) = (vec![], vec![], vec![], vec![]);
    while hp.len() < calls {
        let n = BLOCK.min(calls - hp.len());
        for _ in 0..n {
            hp.push(create_remove(&mut p, pod, "c").await?);
        }
        for _ in 0..n {
            hd.push(create_remove(&mut q, pod, "c").await?);
        }
        for _ in 0..n {
            lp.push(list_pods(&mut p).await?);
        }
        for _ in 0..n {
            ld.push(list_pods(&mut q).await?);
        }
    }
    let stats_after = wasmgate_daemon::admin::stats(&d.admin_socket())?;
    println!(
        "{calls} sequential calls of each kind per side, one connection per side, alternating in blocks of {BLOCK}:"
    );
    println!("{:<52}{:>10}{:>10}", "", "p50 µs", "p99 µs");
    let row = |name: &str, x: Pct| println!("{name:<52}{:>10.1}{:>10.1}", x.p50, x.p99);
    let (hp, hd) = (Pct::of(&mut hp), Pct::of(&mut hd));
    row("CreateContainer, builtin socket directly", hd);
    row("CreateContainer, through the proxy + 2 hooks", hp);
    let (a50, a99) = (hp.p50 - hd.p50, hp.p99 - hd.p99);
    println!(
        "{:<52}{:>10.1}{:>10.1}   target <= {TARGET_ADDED_P50_US:.0} / {TARGET_ADDED_P99_US:.0} µs: p50 {}, p99 {}",
        "    added",
        a50,
        a99,
        verdict(a50 <= TARGET_ADDED_P50_US),
        verdict(a99 <= TARGET_ADDED_P99_US)
    );
    println!(
        "{:<52}{:>9.2}x{:>9.2}x",
        "    ratio proxy/direct",
        hp.p50 / hd.p50,
        hp.p99 / hd.p99
    );
    let (lp, ld) = (Pct::of(&mut lp), Pct::of(&mut ld));
    row(
        &format!("ListPodSandbox ({PODS} pods), builtin socket directly"),
        ld,
    );
    row("ListPodSandbox, through the proxy (unhooked: raw)", lp);
    println!(
        "{:<52}{:>10.1}{:>10.1}",
        "    added",
        lp.p50 - ld.p50,
        lp.p99 - ld.p99
    );
    println!(
        "{:<52}{:>9.2}x{:>9.2}x",
        "    ratio proxy/direct",
        lp.p50 / ld.p50,
        lp.p99 / ld.p99
    );
    // The daemon's own clock for the proxied calls above: from the decoded request to the
    // answer for hooked calls, from the HTTP request to the response headers for raw ones.
    let mean = |m: &str| {
        let (b, a) = (
            stats_before.get(m).copied().unwrap_or_default(),
            stats_after.get(m).copied().unwrap_or_default(),
        );
        let n = (a.ok + a.errors).saturating_sub(b.ok + b.errors);
        (n, (a.total_us - b.total_us) as f64 / n.max(1) as f64)
    };
    for m in ["CreateContainer", "RemoveContainer", "ListPodSandbox"] {
        let (n, us) = mean(&format!("cri.{m}"));
        println!(
            "  daemon's own time per proxied {m:<16} (trace stats, {n:>5} calls): mean {us:>7.1} µs"
        );
    }
    Ok(())
}

/// Follows the daemon's trace for `n` proxied CreateContainers and splits their time.
async fn where_time_goes(d: &Daemon, proxy: Channel, pod: &str, n: usize) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<Option<CallRecord>>();
    let admin = d.admin_socket();
    let filter = TraceFilter {
        interface: Some("cri".into()),
        method: Some("CreateContainer".into()),
        ..Default::default()
    };
    // Ends after n records, or when the daemon goes away.
    std::thread::spawn(move || {
        let mut got = 0;
        let _ = wasmgate_daemon::admin::follow_trace(&admin, filter, |line| match line {
            TraceLine::Subscribed => tx.send(None).is_ok(),
            TraceLine::Call(c) => {
                got += 1;
                tx.send(Some(*c)).is_ok() && got < n
            }
            TraceLine::Dropped { .. } => true,
        });
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(None) => {}
        other => bail!("trace follower did not subscribe: {other:?}"),
    }
    let mut p = Rt::new(proxy);
    let mut client = Vec::with_capacity(n);
    for _ in 0..n {
        client.push(create_remove(&mut p, pod, "t").await?);
    }
    let mut recs = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(2);
    while recs.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(r)) => recs.push(r),
            Ok(None) => {}
            Err(_) => break,
        }
    }
    ensure!(!recs.is_empty(), "no trace records for CreateContainer");
    // Means add up, so they split the call; p50s show how much of each mean is a few slow calls.
    let k = recs.len() as f64;
    let mean = |f: &dyn Fn(&CallRecord) -> u64| recs.iter().map(f).sum::<u64>() as f64 / k;
    let p50 = |f: &dyn Fn(&CallRecord) -> u64| {
        let mut v: Vec<u64> = recs.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2] as f64
    };
    let row = |what: &str, f: &dyn Fn(&CallRecord) -> u64| {
        println!("  {what:<62}{:>9.1}{:>9.1}", mean(f), p50(f));
    };
    let elapsed = mean(&|r| r.elapsed_us);
    let mut client_us: Vec<f64> = client.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    let client_mean = client_us.iter().sum::<f64>() / client_us.len() as f64;
    client_us.sort_by(f64::total_cmp);
    println!(
        "where a proxied CreateContainer's time goes ({} traced calls, followed by the trace stream):",
        recs.len()
    );
    println!("  {:<62}{:>9}{:>9}", "", "mean µs", "p50 µs");
    println!(
        "  {:<62}{:>9.1}{:>9.1}",
        "client-side round trip through the proxy",
        client_mean,
        client_us[client_us.len() / 2]
    );
    row(
        "  in the daemon's handler (decoded request to answer)",
        &|r| r.elapsed_us,
    );
    let mut names: Vec<(String, String)> = Vec::new();
    for r in &recs {
        for h in &r.hooks {
            let key = (h.hook.clone(), h.phase.clone());
            if !names.contains(&key) {
                names.push(key);
            }
        }
    }
    for (hook, phase) in &names {
        let decision = recs
            .iter()
            .flat_map(|r| &r.hooks)
            .find(|h| &h.hook == hook && &h.phase == phase)
            .map(|h| h.decision.clone())
            .unwrap_or_default();
        row(&format!("    hook {hook} {phase} ({decision})"), &|r| {
            r.hooks
                .iter()
                .filter(|h| &h.hook == hook && &h.phase == phase)
                .map(|h| h.elapsed_us)
                .sum()
        });
    }
    row("    runtime (upstream_us: the builtin, in process)", &|r| {
        r.upstream_us.unwrap_or(0)
    });
    row(
        "    the handler's own work (elapsed - hooks - upstream)",
        &|r| {
            let hooks: u64 = r.hooks.iter().map(|h| h.elapsed_us).sum();
            r.elapsed_us
                .saturating_sub(hooks)
                .saturating_sub(r.upstream_us.unwrap_or(0))
        },
    );
    println!(
        "  {:<62}{:>9.1}",
        "  outside the handler (gRPC decode/encode, HTTP/2, socket, client)",
        client_mean - elapsed
    );
    Ok(())
}

/// `TASKS` clients on `CONNECTIONS` connections per side, each doing CreateContainer +
/// RemoveContainer pairs, the sides alternating in slices of [`SLICE`] until each has run `run`.
async fn throughput(
    daemon: &Daemon,
    proxy_sock: &Path,
    direct_sock: &Path,
    pod: &str,
    run: Duration,
) -> Result<()> {
    let pid = daemon.pid().context("the daemon is not running")?;
    let mut proxy = Vec::new();
    let mut direct = Vec::new();
    for _ in 0..CONNECTIONS {
        proxy.push(connect(proxy_sock).await?);
        direct.push(connect(direct_sock).await?);
    }
    // Warm-up: every connection and enough idle hook instances for the concurrency.
    burst(&proxy, pod, "wp", Duration::from_millis(100)).await?;
    burst(&direct, pod, "wd", Duration::from_millis(100)).await?;
    let slices = ((run.as_secs_f64() / SLICE.as_secs_f64()).round() as usize).max(1);
    let (mut pn, mut dn) = ((0, Duration::ZERO), (0, Duration::ZERO));
    // The daemon's own CPU time on each side: the clients share its two cores here.
    let (mut p_cpu, mut d_cpu) = (Duration::ZERO, Duration::ZERO);
    // And the load generator's, this process's.
    let (mut p_gen, mut d_gen) = (Duration::ZERO, Duration::ZERO);
    let me = std::process::id();
    for i in 0..slices {
        let (before, gen_before) = (cpu_time(pid)?, cpu_time(me)?);
        let p = burst(&proxy, pod, &format!("p{i}-"), SLICE).await?;
        let (between, gen_between) = (cpu_time(pid)?, cpu_time(me)?);
        let d = burst(&direct, pod, &format!("d{i}-"), SLICE).await?;
        let (after, gen_after) = (cpu_time(pid)?, cpu_time(me)?);
        pn = (pn.0 + p.0, pn.1 + p.1);
        dn = (dn.0 + d.0, dn.1 + d.1);
        p_cpu += between - before;
        d_cpu += after - between;
        p_gen += gen_between - gen_before;
        d_gen += gen_after - gen_between;
    }
    let rate = |(n, t): (u64, Duration)| n as f64 / t.as_secs_f64();
    let (pr, dr) = (rate(pn), rate(dn));
    println!(
        "{TASKS} concurrent clients on {CONNECTIONS} connections per side, each doing CreateContainer + RemoveContainer,"
    );
    println!(
        "  {:.1} s per side in alternating slices of {} ms; counted: CreateContainers (hooked) only, pairs x2 = all calls:",
        dn.1.as_secs_f64(),
        SLICE.as_millis()
    );
    println!(
        "  builtin socket directly   {dr:>8.0} CreateContainer/s ({:>8.0} calls/s)",
        dr * 2.0
    );
    println!(
        "  through the proxy         {pr:>8.0} CreateContainer/s ({:>8.0} calls/s)",
        pr * 2.0
    );
    println!(
        "  ratio proxy/direct: {:.2}; target >= {TARGET_HOOKED_PER_S:.0} hooked calls/s through the proxy: {}",
        pr / dr,
        verdict(pr >= TARGET_HOOKED_PER_S)
    );
    // Per pair: what one CreateContainer (hooked) and its RemoveContainer cost the daemon.
    let per_pair = |cpu: Duration, n: u64| cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
    let (pp, dp) = (per_pair(p_cpu, pn.0), per_pair(d_cpu, dn.0));
    println!(
        "  the daemon's CPU per CreateContainer + RemoveContainer: directly {dp:.0} µs, through the proxy {pp:.0} µs ({:.2}x)",
        pp / dp
    );
    let (pg, dg) = (per_pair(p_gen, pn.0), per_pair(d_gen, dn.0));
    // How busy the machine was: the daemon and the load generator share its cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = |daemon: Duration, generator: Duration, wall: Duration| {
        100.0 * (daemon + generator).as_secs_f64() / (cores * wall.as_secs_f64())
    };
    println!(
        "  the load generator's (this process's) CPU per pair: directly {dg:.0} µs, through the proxy {pg:.0} µs; \
         the {cores:.0} cores were {:.0}% and {:.0}% busy with the two",
        busy(d_cpu, d_gen, dn.1),
        busy(p_cpu, p_gen, pn.1)
    );
    println!(
        "  at these costs the {cores:.0} cores hold at most {:.0} CreateContainer/s through the proxy ({:.0} directly)",
        cores * 1e6 / (pp + pg),
        cores * 1e6 / (dp + dg)
    );
    println!(
        "  so one daemon core, with the clients elsewhere, would serve about {:.0} CreateContainer/s directly and {:.0} through the proxy",
        1e6 / dp,
        1e6 / pp
    );
    Ok(())
}

/// A process's user + system CPU time so far, from `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name, field 2, may hold spaces; the fields after its ')' are fixed.
    let rest = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick =
        |i: usize| -> Result<u64> { Ok(fields.get(i).context("short /proc stat")?.parse()?) };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks = tick(11)? + tick(12)?;
    Ok(Duration::from_millis(ticks * 10))
}

/// Runs the clients for `run`; returns the CreateContainers done and the time they took (each
/// client finishes the pair it is in when time is up).
async fn burst(chans: &[Channel], pod: &str, tag: &str, run: Duration) -> Result<(u64, Duration)> {
    let creates = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + run;
    let mut tasks = Vec::new();
    for k in 0..TASKS {
        let mut rt = Rt::new(chans[k % chans.len()].clone());
        let (pod, name, creates) = (pod.to_string(), format!("{tag}{k}"), creates.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let id = rt
                    .create_container(create_request(&pod, &name))
                    .await?
                    .into_inner()
                    .container_id;
                creates.fetch_add(1, Ordering::Relaxed);
                rt.remove_container(pb::RemoveContainerRequest { container_id: id })
                    .await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await.context("client task")??;
    }
    Ok((creates.load(Ordering::Relaxed), started.elapsed()))
}

/// Hook calls in this process: one at a time through the engine's per-call path
/// (`LoadedPlugin::runtime`), split into the dispatch around the guest and the guest call itself;
/// then a whole phase as the daemon's hook chain runs it, both hooks in turn.
fn hook_calls(d: &Daemon, calls: usize) -> Result<()> {
    // The daemon runs its calls on a multi-threaded runtime; so does this.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = TempDir::new(&std::env::temp_dir())?;
        // The daemon's compiled artifacts, so nothing compiles here if the engines agree.
        let _ = copy_dir(&d.dir.join("state/cache"), &dir.path.join("state/cache"));
        let engine = WasmEngine::new(&EngineConfig::default()).context("create the engine")?;
        let registry = Registry::new(engine, dir.path.join("state"));
        let mut hooks = Vec::new();
        let mut compiled = false;
        for (name, crate_name, config) in [
            ("policy", "hook-policy", None),
            ("inject", "hook-inject", Some(("value", NODE_VALUE))),
        ] {
            let mut spec = PluginSpec::new(name, plugin(crate_name));
            spec.world = World::Runtime;
            if let Some((k, v)) = config {
                spec.config.insert(k.into(), v.into());
            }
            let info = registry
                .load(spec)
                .await
                .with_context(|| format!("load {crate_name}"))?;
            compiled |= !info.cached;
            hooks.push((name, registry.get(name)?));
        }
        println!(
            "one hook call in this process (LoadedPlugin::runtime, as the hook chain calls it; {calls} each, p50 µs{}):",
            if compiled { "; compiled here" } else { "" }
        );
        println!(
            "  {:<10}{:>10}{:>10}{:>10}{:>14}{:>14}",
            "hook", "empty", "pre", "post", "guest pre", "guest post"
        );
        for (name, p) in &hooks {
            let (empty, pre, post, guest_pre, guest_post) = time_hook(p, calls).await?;
            println!(
                "  {name:<10}{empty:>10.1}{pre:>10.1}{post:>10.1}{guest_pre:>14.1}{guest_post:>14.1}"
            );
        }
        println!(
            "  (empty: the dispatch alone, a closure that calls nothing: permit, timeout, idle instance, \
             deadline; guest: the call alone, 100 back to back on one instance)"
        );
        let plugins: Vec<_> = hooks.into_iter().map(|(_, p)| p).collect();
        let phase = time_phase(&plugins, calls).await?;
        println!(
            "a pre phase as the chain runs it (both hooks in turn; {calls} phases, p50 µs): {phase:.1}"
        );
        Ok(())
    })
}

/// The CreateContainer request a hook sees for the bench's calls (and section e)'s): in
/// `default`, which hook-policy does not exempt, so the policy does its checks; unprivileged, so
/// it allows.
pub(crate) fn hook_request() -> wit::Request {
    let pod = wit::Pod {
        id: "0".repeat(64),
        name: "bench-0".into(),
        namespace: NAMESPACE.into(),
        uid: "uid-bench-0".into(),
        labels: vec![],
        annotations: vec![],
        runtime_handler: String::new(),
    };
    let container = wit::Container {
        id: String::new(),
        name: "c".into(),
        image: "busybox".into(),
        command: vec!["sleep".into(), "3600".into()],
        args: vec![],
        env: vec![],
        mounts: vec![],
        devices: vec![],
        resources: None,
        security: wit::Security {
            privileged: false,
            run_as_user: None,
            add_capabilities: vec![],
            drop_capabilities: vec![],
            readonly_rootfs: false,
        },
        labels: vec![],
        annotations: vec![],
        working_dir: String::new(),
    };
    wit::Request::CreateContainer((pod, container))
}

async fn time_phase(hooks: &[Arc<LoadedPlugin>], calls: usize) -> Result<f64> {
    let req = hook_request();
    let mut a = vec![];
    for i in 0..calls + BLOCK {
        let t = Instant::now();
        for p in hooks {
            p.runtime(async |h, s| h.call_pre(s, &req).await).await?;
        }
        if i >= BLOCK {
            a.push(t.elapsed());
        }
    }
    Ok(Pct::of(&mut a).p50)
}

async fn time_hook(p: &Arc<LoadedPlugin>, calls: usize) -> Result<(f64, f64, f64, f64, f64)> {
    let req = hook_request();
    let outcome = wit::Outcome::Ok("1".repeat(64));
    let empty = || p.runtime(async |_, _| Ok(()));
    let pre = || p.runtime(async |h, s| h.call_pre(s, &req).await.map(|_| ()));
    let post = || p.runtime(async |h, s| h.call_post(s, &req, &outcome).await);
    for _ in 0..BLOCK {
        empty().await?;
        pre().await?;
        post().await?;
    }
    let (mut e, mut a, mut b) = (vec![], vec![], vec![]);
    while e.len() < calls {
        let n = BLOCK.min(calls - e.len());
        for _ in 0..n {
            let t = Instant::now();
            empty().await?;
            e.push(t.elapsed());
        }
        for _ in 0..n {
            let t = Instant::now();
            pre().await?;
            a.push(t.elapsed());
        }
        for _ in 0..n {
            let t = Instant::now();
            post().await?;
            b.push(t.elapsed());
        }
    }
    // The guest alone: 100 calls back to back inside one dispatch, per call.
    let guest = p
        .runtime(async |hook, s| {
            let (mut pre, mut post) = (vec![], vec![]);
            for _ in 0..100 {
                let t = Instant::now();
                hook.call_pre(&mut *s, &req).await?;
                pre.push(t.elapsed());
                let t = Instant::now();
                hook.call_post(&mut *s, &req, &outcome).await?;
                post.push(t.elapsed());
            }
            Ok((pre, post))
        })
        .await?;
    let (mut gp, mut gq) = guest;
    Ok((
        Pct::of(&mut e).p50,
        Pct::of(&mut a).p50,
        Pct::of(&mut b).p50,
        Pct::of(&mut gp).p50,
        Pct::of(&mut gq).p50,
    ))
}
