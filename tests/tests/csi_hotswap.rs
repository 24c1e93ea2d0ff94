//! Swapping the CSI driver under load: while several clients loop CreateVolume, NodeGetInfo,
//! ValidateVolumeCapabilities and DeleteVolume, the driver file is replaced (atomically, by
//! rename) and reloaded through the admin socket. No call may fail, and `plugin list` must show
//! each new version.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{
    Daemon, TEST_NODE, plugin, sha256, unique, wait_for_iterations, with_custom_section,
};

/// A directory of our own for the driver file the daemon loads, so the swaps never touch the
/// artifact under `plugins/`. Removed on drop.
struct DriverDir(PathBuf);

impl DriverDir {
    fn new(initial: &[u8]) -> Self {
        let dir = std::env::temp_dir().join(unique("wasmgate-csi-swap-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = DriverDir(dir);
        d.install(initial);
        d
    }

    fn path(&self) -> PathBuf {
        self.0.join("hostpath.wasm")
    }

    /// Replaces the driver the way a deploy tool does: write a temp file, rename it over.
    fn install(&self, bytes: &[u8]) {
        let tmp = self.0.join(".hostpath.wasm.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

impl Drop for DriverDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generation(p: &Value) -> u64 {
    p["generation"].as_u64().expect("generation")
}

/// Waits (without blocking the runtime's other workers) until the driver in use has `sha` at a
/// generation after `after`.
async fn wait_for_version(d: &Daemon, sha: &str, after: u64, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = tokio::task::block_in_place(|| d.listed("hostpath"));
        if p["sha256"] == sha && generation(&p) > after {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One client's loop: create, info, validate, delete, each with its own volume names.
async fn client(
    socket: PathBuf,
    w: usize,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> Vec<String> {
    let mut c = Csi::connect(&socket).await;
    let mut failures = Vec::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let name = format!("pvc-w{w}-{i}");
        let vol = match c
            .controller
            .create_volume(csi::create_request(&name, 1 << 20))
            .await
        {
            Ok(r) => r.into_inner().volume.unwrap().volume_id,
            Err(e) => {
                failures.push(format!("client {w} CreateVolume {name}: {e:?}"));
                continue;
            }
        };
        match c.node.node_get_info(pb::NodeGetInfoRequest {}).await {
            Ok(r) if r.get_ref().node_id == TEST_NODE => {}
            other => failures.push(format!("client {w} NodeGetInfo: {other:?}")),
        }
        match c
            .controller
            .validate_volume_capabilities(pb::ValidateVolumeCapabilitiesRequest {
                volume_id: vol.clone(),
                volume_capabilities: vec![csi::rwo()],
                ..Default::default()
            })
            .await
        {
            Ok(r) if r.get_ref().confirmed.is_some() => {}
            other => failures.push(format!("client {w} Validate {vol}: {other:?}")),
        }
        if let Err(e) = c
            .controller
            .delete_volume(pb::DeleteVolumeRequest {
                volume_id: vol.clone(),
                ..Default::default()
            })
            .await
        {
            failures.push(format!("client {w} DeleteVolume {vol}: {e:?}"));
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_swap_under_load_loses_no_call() {
    let original = std::fs::read(plugin("hostpath-csi")).unwrap();
    let files = DriverDir::new(&original);
    let d = Daemon::start_csi_from(files.path(), "");
    let v1 = d.listed("hostpath");
    assert_eq!(v1["sha256"], sha256(&original));

    const CLIENTS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let done: Vec<Arc<AtomicU64>> = (0..CLIENTS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|w| tokio::spawn(client(d.csi_socket(), w, stop.clone(), done[w].clone())))
        .collect();
    let started = Instant::now();
    wait_for_iterations(&done, 1, "every client's first iteration").await;

    // (a) A new version through the file watch.
    let v2_bytes = with_custom_section(&original, "wasmgate-test-version", b"2");
    let v2_sha = sha256(&v2_bytes);
    assert_ne!(v2_sha, v1["sha256"]);
    files.install(&v2_bytes);
    let v2 = wait_for_version(&d, &v2_sha, generation(&v1), "the watch to load version 2").await;
    wait_for_iterations(&done, 2, "calls on version 2").await;

    // (b) The same file again, through the admin socket.
    let reloaded = tokio::task::block_in_place(|| d.plugin_cmd(&["reload", "hostpath"]))
        .expect("admin reload");
    assert_eq!(reloaded[0]["sha256"], v2_sha.as_str(), "{reloaded}");
    let v2b = tokio::task::block_in_place(|| d.listed("hostpath"));
    assert!(generation(&v2b) > generation(&v2), "{v2b} after {v2}");
    wait_for_iterations(&done, 2, "calls on the reloaded version").await;

    // (c) A broken file: refused by the watch and by the admin socket; version 2 keeps serving.
    let refusals = |d: &Daemon| {
        d.log()
            .lines()
            .filter(|l| l.contains("reload refused") && l.contains("hostpath"))
            .count()
    };
    let refused_before = refusals(&d);
    files.install(b"\0asm this is not a component at all");
    let deadline = Instant::now() + Duration::from_secs(20);
    while refusals(&d) == refused_before {
        assert!(
            Instant::now() < deadline,
            "the watch never refused the broken file"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let err = tokio::task::block_in_place(|| d.plugin_cmd(&["reload", "hostpath"]))
        .expect_err("admin reload of a broken file");
    assert!(err.contains("reload refused"), "unclear refusal: {err}");
    let still = tokio::task::block_in_place(|| d.listed("hostpath"));
    assert_eq!(
        still["sha256"],
        v2_sha.as_str(),
        "a broken file replaced the driver"
    );
    assert_eq!(generation(&still), generation(&v2b));
    wait_for_iterations(&done, 2, "calls while the file is broken").await;

    // (d) Back to the original bytes.
    files.install(&original);
    let v3 = wait_for_version(
        &d,
        v1["sha256"].as_str().unwrap(),
        generation(&v2b),
        "the watch to load the original again",
    )
    .await;
    wait_for_iterations(&done, 2, "calls on version 3").await;

    // Keep the load on for about 3 s in all.
    let left = Duration::from_secs(3).saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    let iterations: u64 = done.iter().map(|n| n.load(Ordering::Relaxed)).sum();
    assert!(
        failures.is_empty(),
        "{} failed calls in {iterations} iterations:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(iterations >= 40, "only {iterations} iterations");
    eprintln!(
        "{iterations} iterations, generations {} -> {}",
        generation(&v1),
        generation(&v3)
    );
    assert!(
        generation(&v3) > generation(&v2b) && generation(&v2b) > generation(&v2),
        "generations {v2} {v2b} {v3}"
    );
    let now = d.listed("hostpath");
    assert_eq!(now["sha256"], v1["sha256"]);

    // Nothing leaked: every volume was deleted, by whichever version served the call.
    let mut c = Csi::connect(&d.csi_socket()).await;
    let vols = c
        .controller
        .list_volumes(pb::ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(vols.is_empty(), "{} volumes left: {vols:?}", vols.len());
    let left_dirs = std::fs::read_dir(d.csi_data().join("volumes"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(left_dirs, 0, "volume directories left behind");
    assert!(!d.log().contains("panicked"), "{}", d.log());
}
