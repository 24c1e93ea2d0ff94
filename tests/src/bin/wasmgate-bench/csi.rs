//! c) CSI: a call through the Wasm driver against a native no-op driver on the same kind of
//! socket, and whole volume lifecycles per second.
//!
//! The native driver is this executable re-exec'd with `--native-csi <socket>`: a tonic Node
//! service in its own process, as the daemon is, whose NodeGetInfo answers from memory. Both are
//! called by the same client, alternately in blocks, so drift on a noisy machine hits both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use tonic::{Request, Response, Status};
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{Daemon, TEST_NODE, unique};

use crate::{Sizes, ratio};

/// What the per-call target compares: the Wasm driver's median over the native one's.
const TARGET_RATIO: f64 = 1.5;

pub fn bench(sizes: Sizes) -> Result<()> {
    println!();
    println!("-- c) CSI: NodeGetInfo through the Wasm driver vs a native no-op driver --");
    let daemon = Daemon::start_csi("");
    let native_sock = daemon.dir.join("native-csi.sock");
    let mut native = NativeDriver::spawn(&native_sock)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(async {
        let wasm = Csi::connect(&daemon.csi_socket()).await;
        let native = Csi::connect(&native_sock).await;
        let calls = sizes.engine_iters.max(100);
        get_info_vs_native(wasm.clone(), native, calls).await?;
        // The daemon times each call from decoded request to encoded answer: the rest of the
        // wasm side's latency is gRPC and the socket, which the baseline pays too.
        let stats = wasmgate_daemon::admin::stats(&daemon.admin_socket())?;
        if let Some(s) = stats.get("csi.NodeGetInfo") {
            println!(
                "  of which in the daemon's handler (trace record, {} calls): mean {:.1} µs",
                s.ok + s.errors,
                s.total_us as f64 / (s.ok + s.errors).max(1) as f64
            );
        }
        lifecycles(&daemon, wasm, sizes.kv_iters.max(10)).await
    });
    native.stop();
    out
}

async fn get_info_vs_native(mut wasm: Csi, mut native: Csi, calls: usize) -> Result<()> {
    // Warm both: connections, the daemon's instance pool, the kernel's socket buffers.
    for _ in 0..50 {
        wasm.node.node_get_info(pb::NodeGetInfoRequest {}).await?;
        native.node.node_get_info(pb::NodeGetInfoRequest {}).await?;
    }
    let (mut w, mut n) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    const BLOCK: usize = 50;
    while w.len() < calls {
        for _ in 0..BLOCK {
            let t = Instant::now();
            let info = wasm.node.node_get_info(pb::NodeGetInfoRequest {}).await?;
            w.push(t.elapsed());
            ensure!(
                info.get_ref().node_id == TEST_NODE,
                "wasm driver answered {info:?}"
            );
        }
        for _ in 0..BLOCK {
            let t = Instant::now();
            native.node.node_get_info(pb::NodeGetInfoRequest {}).await?;
            n.push(t.elapsed());
        }
    }
    let (wm, nm) = (median(&mut w), median(&mut n));
    let (w99, n99) = (pct(&w, 0.99), pct(&n, 0.99));
    println!("{calls} sequential NodeGetInfo calls on each socket, one connection each:");
    println!(
        "  native no-op driver   median {:>7.1} µs   p99 {:>7.1} µs",
        us(nm),
        us(n99)
    );
    println!(
        "  wasmgate + Wasm       median {:>7.1} µs   p99 {:>7.1} µs",
        us(wm),
        us(w99)
    );
    let r = ratio(wm, nm);
    println!(
        "  ratio wasm/native: {r:.2} (target <= {TARGET_RATIO}: {})",
        if r <= TARGET_RATIO { "met" } else { "MISSED" }
    );
    Ok(())
}

/// Create -> Stage -> Publish -> Unpublish -> Unstage -> Delete, with real bind mounts.
async fn lifecycles(d: &Daemon, mut c: Csi, n: usize) -> Result<()> {
    let started = Instant::now();
    for _ in 0..n {
        // Where kubelet would put them: the daemon refuses paths outside its kubelet_dir.
        let (staging, target) = csi::pod_paths(&d.kubelet_dir());
        let vol = c
            .controller
            .create_volume(csi::create_request(&unique("bench-"), 1 << 20))
            .await?
            .into_inner()
            .volume
            .context("no volume")?;
        let id = vol.volume_id;
        c.node
            .node_stage_volume(csi::stage_request(&id, &staging))
            .await?;
        c.node
            .node_publish_volume(csi::publish_request(&id, Some(&staging), &target, false))
            .await?;
        ensure!(
            csi::is_mount_point(&target),
            "{} is not mounted",
            target.display()
        );
        c.node
            .node_unpublish_volume(pb::NodeUnpublishVolumeRequest {
                volume_id: id.clone(),
                target_path: target.to_string_lossy().into_owned(),
            })
            .await?;
        c.node
            .node_unstage_volume(pb::NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.to_string_lossy().into_owned(),
            })
            .await?;
        c.controller
            .delete_volume(pb::DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await?;
        ensure!(!target.exists(), "unpublish left {}", target.display());
    }
    let el = started.elapsed();
    println!(
        "{n} full volume lifecycles (create, stage, publish, unpublish, unstage, delete; real bind mounts):"
    );
    println!(
        "  {:.1} lifecycles/s, {:.2} ms each ({:.2} ms per call)",
        n as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e3 / n as f64,
        el.as_secs_f64() * 1e3 / (n * 6) as f64
    );
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The baseline's process.
struct NativeDriver(Child);

impl NativeDriver {
    fn spawn(sock: &Path) -> Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .arg("--native-csi")
            .arg(sock)
            .spawn()
            .context("start the native driver")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            ensure!(Instant::now() < deadline, "native driver did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self(child))
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--native-csi <socket>`: serve the no-op Node service until killed.
pub fn serve_native(sock: PathBuf) -> Result<()> {
    // The daemon serves gRPC on a multi-threaded runtime; so does the baseline.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let _ = std::fs::remove_file(&sock);
        let listener = tokio::net::UnixListener::bind(&sock)?;
        tonic::transport::Server::builder()
            .add_service(pb::node_server::NodeServer::new(NoopNode))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await?;
        Ok(())
    })
}

struct NoopNode;

type Reply<T> = Result<Response<T>, Status>;

fn unimplemented<T>() -> Reply<T> {
    Err(Status::unimplemented(
        "the native baseline only answers NodeGetInfo",
    ))
}

#[tonic::async_trait]
impl pb::node_server::Node for NoopNode {
    async fn node_get_info(
        &self,
        _: Request<pb::NodeGetInfoRequest>,
    ) -> Reply<pb::NodeGetInfoResponse> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: TEST_NODE.to_string(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }
    async fn node_stage_volume(
        &self,
        _: Request<pb::NodeStageVolumeRequest>,
    ) -> Reply<pb::NodeStageVolumeResponse> {
        unimplemented()
    }
    async fn node_unstage_volume(
        &self,
        _: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Reply<pb::NodeUnstageVolumeResponse> {
        unimplemented()
    }
    async fn node_publish_volume(
        &self,
        _: Request<pb::NodePublishVolumeRequest>,
    ) -> Reply<pb::NodePublishVolumeResponse> {
        unimplemented()
    }
    async fn node_unpublish_volume(
        &self,
        _: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Reply<pb::NodeUnpublishVolumeResponse> {
        unimplemented()
    }
    async fn node_get_volume_stats(
        &self,
        _: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Reply<pb::NodeGetVolumeStatsResponse> {
        unimplemented()
    }
    async fn node_expand_volume(
        &self,
        _: Request<pb::NodeExpandVolumeRequest>,
    ) -> Reply<pb::NodeExpandVolumeResponse> {
        unimplemented()
    }
    async fn node_get_capabilities(
        &self,
        _: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Reply<pb::NodeGetCapabilitiesResponse> {
        unimplemented()
    }
}
