//! A real containerd (Debian's 1.6, `scripts/setup` installs it) behind the wasmgate CRI proxy,
//! for end-to-end tests: a private containerd per test, its images built here from the static
//! busybox (no registry), its pods networked by `wasmgate-cni` and the daemon's Wasm plugin.
//!
//! Namespaces: the daemon and containerd both run in the test's node netns (where the pod
//! bridge and host veths live) but in the machine's mount namespace, so that the netns bind
//! mounts containerd makes for its pods are visible to the daemon, which `setns`es into them.
//! `ip netns exec` would give them a private mount namespace, and `/` here is not shared.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use wasmgate_daemon::admin::{TraceFilter, follow_trace};
use wasmgate_daemon::trace::{CallRecord, TraceLine};
pub use wasmgate_proto::cri::v1 as pb;
use wasmgate_proto::cri::v1::image_service_client::ImageServiceClient;
use wasmgate_proto::cri::v1::runtime_service_client::RuntimeServiceClient;

use crate::{Daemon, Netns, PluginEntry, bin, plugin, unique};

/// The app image: busybox and its applets, `PATH=/bin`, `sh` by default.
pub const BUSYBOX_IMAGE: &str = "wasmgate.test/busybox:1";
/// The sandbox ("pause") image: the same layer, sleeping.
pub const PAUSE_IMAGE: &str = "wasmgate.test/pause:1";

/// The applets linked into the images' `/bin`.
const APPLETS: &[&str] = &[
    "sh", "env", "ip", "sleep", "cat", "echo", "ls", "ps", "true", "false", "id", "hostname",
    "mkdir", "rm", "test", "wc", "grep", "ping", "kill",
];

// ---------------------------------------------------------------------------------------------
// Images: OCI layout, written as a tar archive for `ctr images import`.

/// A minimal ustar writer: directories, regular files and symlinks, owned by root, mtime 0, so
/// that the same input always gives the same digests.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn header(&mut self, name: &str, mode: u32, size: usize, kind: u8, link: &str) {
        assert!(
            name.len() < 100 && link.len() < 100,
            "tar name too long: {name}"
        );
        let mut h = [0u8; 512];
        let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, name.as_bytes());
        put(100, format!("{mode:07o}\0").as_bytes());
        put(108, b"0000000\0"); // uid
        put(116, b"0000000\0"); // gid
        put(124, format!("{size:011o}\0").as_bytes());
        put(136, b"00000000000\0"); // mtime
        put(148, b"        "); // the checksum counts itself as spaces
        put(156, &[kind]);
        put(157, link.as_bytes());
        put(257, b"ustar\x0000");
        put(265, b"root");
        put(297, b"root");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
    }

    fn dir(&mut self, name: &str, mode: u32) {
        self.header(
            &format!("{}/", name.trim_end_matches('/')),
            mode,
            0,
            b'5',
            "",
        );
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.header(name, mode, data.len(), b'0', "");
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o777, 0, b'2', target);
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OCI architecture name of this machine.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The rootfs layer: `/bin/busybox` (Debian's busybox-static) and its applets.
fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: run scripts/setup (it installs busybox-static)");
    let mut t = Tar::default();
    for d in ["bin", "dev", "etc", "proc", "root", "sys", "var"] {
        t.dir(d, 0o755);
    }
    t.dir("tmp", 0o1777);
    t.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    t.file("etc/group", 0o644, b"root:x:0:\n");
    t.file("bin/busybox", 0o755, &busybox);
    for a in APPLETS {
        t.symlink(&format!("bin/{a}"), "busybox");
    }
    t.finish()
}

/// Both test images in one OCI image-layout archive, each manifest named by its annotations.
fn image_archive() -> Vec<u8> {
    let layer = busybox_layer();
    let layer_digest = sha256(&layer);
    let mut blobs: Vec<(String, Vec<u8>)> = vec![(layer_digest.clone(), layer.clone())];
    let mut manifests = Vec::new();
    for (name, entrypoint, cmd) in [
        (BUSYBOX_IMAGE, json!(null), json!(["/bin/sh"])),
        // PID 1 of the sandbox: StopPodSandbox SIGKILLs it.
        (PAUSE_IMAGE, json!(["/bin/sleep", "1000000"]), json!(null)),
    ] {
        let config = json!({
            "architecture": oci_arch(),
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Entrypoint": entrypoint, "Cmd": cmd, "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        })
        .to_string()
        .into_bytes();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{}", sha256(&config)),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{layer_digest}"),
                "size": layer.len(),
            }],
        })
        .to_string()
        .into_bytes();
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256(&manifest)),
            "size": manifest.len(),
            "platform": {"architecture": oci_arch(), "os": "linux"},
            // containerd 1.6's importer takes the full name from its own annotation; the OCI
            // one is what other tools read.
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name,
            },
        }));
        blobs.push((sha256(&config), config));
        blobs.push((sha256(&manifest), manifest));
    }
    let index = json!({"schemaVersion": 2, "manifests": manifests}).to_string();
    let mut t = Tar::default();
    t.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#);
    t.file("index.json", 0o644, index.as_bytes());
    t.dir("blobs", 0o755);
    t.dir("blobs/sha256", 0o755);
    for (digest, data) in &blobs {
        t.file(&format!("blobs/sha256/{digest}"), 0o644, data);
    }
    t.finish()
}

/// The image archive, built once per test process and named by its digest, so that test runs
/// and parallel test processes share one file (written whole, then renamed into place).
pub fn image_archive_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let archive = image_archive();
        let digest = sha256(&archive);
        let path = std::env::temp_dir().join(format!("wasmgate-test-images-{}.tar", &digest[..16]));
        if std::fs::read(&path).is_ok_and(|have| have == archive) {
            return path;
        }
        let tmp = path.with_extension(format!("tar.{}", std::process::id()));
        std::fs::write(&tmp, &archive).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// containerd.

/// Whether this kernel and filesystem take an overlay mount under `dir`: containerd's default
/// snapshotter needs it; `native` (plain copies) works anywhere.
fn overlay_works(dir: &Path) -> bool {
    let probe = dir.join("overlay-probe");
    let sub = |s: &str| probe.join(s);
    for s in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir_all(sub(s)).unwrap();
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        sub("lower").display(),
        sub("upper").display(),
        sub("work").display()
    );
    let ok = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(sub("merged"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = Command::new("umount").arg(sub("merged")).status();
    }
    let _ = std::fs::remove_dir_all(&probe);
    ok
}

/// A private containerd: its own root, state, sockets, CNI config and runc root under `dir`.
pub struct Containerd {
    pub dir: PathBuf,
    pub snapshotter: &'static str,
    /// The cgroup (cgroupfs path) the test's pods go under, like kubelet's `/kubepods`; removed
    /// on drop.
    pub cgroup_root: String,
    child: Option<Child>,
}

impl Containerd {
    /// A fresh directory for a containerd, so that its socket path is known before it starts.
    pub fn new_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(unique("wasmgate-ctrd-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn socket_in(dir: &Path) -> PathBuf {
        dir.join("containerd.sock")
    }

    pub fn socket(&self) -> PathBuf {
        Self::socket_in(&self.dir)
    }

    /// Where the CRI plugin keeps its state, pod netns mounts included.
    pub fn cri_state(&self) -> PathBuf {
        self.dir.join("state/io.containerd.grpc.v1.cri")
    }

    /// Where pods' logs go: a kubelet-like `log_directory` root.
    pub fn pod_logs(&self) -> PathBuf {
        self.dir.join("pods")
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Starts containerd in `dir` inside the netns `node` (keeping the machine's mount
    /// namespace), its CRI plugin calling `wasmgate-cni` with `cni_plugin` (one entry of a
    /// conflist), then imports the test images and waits until CRI reports them and the
    /// network ready.
    pub async fn start(dir: PathBuf, node: &Netns, cni_plugin: serde_json::Value) -> Self {
        let snapshotter = if overlay_works(&dir) {
            "overlayfs"
        } else {
            "native"
        };
        let cni_bin = dir.join("cni-bin");
        let cni_conf = dir.join("cni-conf");
        std::fs::create_dir_all(&cni_bin).unwrap();
        std::fs::create_dir_all(&cni_conf).unwrap();
        std::os::unix::fs::symlink(bin("wasmgate-cni"), cni_bin.join("wasmgate-cni")).unwrap();
        // containerd 1.6 always sets up the pod's loopback with the `loopback` plugin.
        let loopback = ["/usr/lib/cni/loopback", "/opt/cni/bin/loopback"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("no CNI loopback plugin: run scripts/setup (containernetworking-plugins)");
        std::os::unix::fs::symlink(loopback, cni_bin.join("loopback")).unwrap();
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": "wasmgate-e2e",
            "plugins": [cni_plugin],
        });
        std::fs::write(
            cni_conf.join("10-wasmgate.conflist"),
            serde_json::to_string_pretty(&conflist).unwrap(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("pods")).unwrap();
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.restart",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # runc here cannot set a negative oom_score_adj for the sandbox.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
    max_conf_num = 1
"#
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // The streaming server (Exec, Attach) listens on 127.0.0.1 in the node netns.
        node.ip(&["link", "set", "lo", "up"]);
        let child = Command::new("nsenter")
            .arg(format!("--net={}", node.path()))
            .arg("containerd")
            .arg("--config")
            .arg(&config_path)
            .arg("--log-level")
            .arg("info")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd (run scripts/setup to install it)");
        let cgroup_root = format!("/{}", dir.file_name().unwrap().to_string_lossy());
        let mut c = Self {
            dir,
            snapshotter,
            cgroup_root,
            child: Some(child),
        };
        c.wait_ready().await;
        c.import_images().await;
        c
    }

    /// Panics with containerd's log tail.
    fn fail(&mut self, what: &str) -> ! {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .map(|s| format!(" (containerd exited: {s})"))
            .unwrap_or_default();
        panic!(
            "{what}{exited}\n--- containerd log ({}), last lines:\n{}",
            self.dir.join("containerd.log").display(),
            self.log_tail(40)
        );
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Until CRI answers `Version` and `Status` says the runtime and the network are ready.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::from("no answer yet");
        loop {
            if self.exited() {
                self.fail("containerd did not start");
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "containerd's CRI was not ready within 60 s: {last}"
                ));
            }
            match wasmgate_proto::unix_channel(self.socket()).await {
                Ok(ch) => {
                    let mut rt = RuntimeServiceClient::new(ch);
                    match rt.version(pb::VersionRequest::default()).await {
                        Ok(_) => match rt.status(pb::StatusRequest { verbose: false }).await {
                            Ok(s) => {
                                let conds = s.into_inner().status.unwrap_or_default().conditions;
                                let not_ready: Vec<String> = conds
                                    .iter()
                                    .filter(|c| !c.status)
                                    .map(|c| format!("{}: {} {}", c.r#type, c.reason, c.message))
                                    .collect();
                                if not_ready.is_empty() && !conds.is_empty() {
                                    return;
                                }
                                last = format!("not ready: {not_ready:?}");
                            }
                            Err(e) => last = format!("Status: {e}"),
                        },
                        Err(e) => last = format!("Version: {e}"),
                    }
                }
                Err(e) => last = format!("connect: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `ctr -a <socket> -n k8s.io <args>`.
    pub fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .map_err(|e| format!("ctr: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "ctr {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Imports both images and waits until the CRI plugin has seen them (it learns of imports
    /// from containerd's events, a moment later).
    async fn import_images(&mut self) {
        let archive = image_archive_path();
        let archive = archive.to_str().unwrap();
        if let Err(e) = self.ctr(&[
            "images",
            "import",
            "--all-platforms",
            "--snapshotter",
            self.snapshotter,
            archive,
        ]) {
            self.fail(&e);
        }
        let ch = wasmgate_proto::unix_channel(self.socket()).await.unwrap();
        let mut images = ImageServiceClient::new(ch);
        let deadline = Instant::now() + Duration::from_secs(20);
        for name in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
            loop {
                let status = images
                    .image_status(pb::ImageStatusRequest {
                        image: Some(image_spec(name)),
                        verbose: false,
                    })
                    .await;
                if matches!(&status, Ok(s) if s.get_ref().image.is_some()) {
                    break;
                }
                if Instant::now() > deadline {
                    self.fail(&format!(
                        "CRI never saw the imported image {name}: {status:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Best effort, straight to containerd: stops and removes every pod it still has, so that
    /// their CNI DELs run while the wasmgate daemon is still up.
    fn remove_all_pods(&self) {
        let socket = self.socket();
        let work = async move {
            let ch = wasmgate_proto::unix_channel(&socket).await.ok()?;
            let mut rt = RuntimeServiceClient::new(ch);
            let pods = rt
                .list_pod_sandbox(pb::ListPodSandboxRequest::default())
                .await
                .ok()?
                .into_inner()
                .items;
            for p in pods {
                let id = p.id;
                let _ = rt
                    .stop_pod_sandbox(pb::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await;
                let _ = rt
                    .remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await;
            }
            Some(())
        };
        // Drop may run inside the test's runtime, which cannot be blocked on: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(20), work).await })
        })
        .join();
    }

    /// Kills what containerd leaves behind when it goes: containers (through runc, whose root
    /// is ours) and the shims started for our socket.
    fn kill_leftovers(&self) {
        let runc_root = self.dir.join("runc/k8s.io");
        if runc_root.exists()
            && let Ok(out) = Command::new("runc")
                .arg("--root")
                .arg(&runc_root)
                .args(["list", "-q"])
                .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force", id])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // Shims are started by our containerd with `-address <our socket>`; only those.
        let ours = self.socket().to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_shim = args
                .first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"));
            if is_shim && args.iter().any(|a| a == &ours) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Removes our pods' cgroups, in every hierarchy, deepest first (runc removes the
    /// containers' own, not their parents). Only empty cgroups can go; busy ones stay.
    fn remove_cgroups(&self) {
        fn rmdir_tree(dir: &Path) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        let rel = self.cgroup_root.trim_start_matches('/');
        let base = Path::new("/sys/fs/cgroup");
        let mut roots = vec![base.join(rel)];
        for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
            roots.push(e.path().join(rel));
        }
        for r in roots {
            if r.is_dir() {
                rmdir_tree(&r);
            }
        }
    }

    /// Lazily unmounts everything under our directory (overlay rootfs, netns, shm), deepest
    /// first.
    fn unmount_all(&self) {
        let prefix = self.dir.to_string_lossy().into_owned();
        for _ in 0..3 {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mut points: Vec<String> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(|p| p.replace("\\040", " "))
                .filter(|p| p.starts_with(&prefix))
                .collect();
            if points.is_empty() {
                return;
            }
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let c = std::ffi::CString::new(p).unwrap();
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if !self.exited() {
            self.remove_all_pods();
        }
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_leftovers();
        self.unmount_all();
        self.remove_cgroups();
        if std::thread::panicking() {
            eprintln!(
                "containerd dir kept: {}\n--- containerd log, last lines:\n{}",
                self.dir.display(),
                self.log_tail(30)
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon with a CRI front door.

impl Daemon {
    /// A daemon serving CRI on [`Daemon::cri_socket`], forwarding to the runtime at `upstream`
    /// through `hooks` (each declared with `world = "runtime"`, in this order), and CNI with
    /// `network` as the default plugin. It runs in its node netns but in the machine's mount
    /// namespace (see the module docs).
    pub fn start_cri(network: PluginEntry, hooks: Vec<PluginEntry>, upstream: &Path) -> Self {
        let node = Netns::new("wgn");
        let dir = std::env::temp_dir().join(unique("wasmgate-test-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = hooks.iter().map(|h| format!("{:?}", h.name)).collect();
        let mut toml = format!(
            "state_dir = \"{d}/state\"\n[engine]\ncache_dir = \"{c}\"\n[admin]\nsocket = \"{d}/admin.sock\"\n\
             [cni]\nsocket = \"{d}/cni.sock\"\nqueue_dir = \"{d}/queue\"\ndefault_plugin = \"{n}\"\nqueue_poll_ms = 100\n\
             [cri]\nsocket = \"{d}/cri.sock\"\nupstream = \"unix://{u}\"\nhooks = [{h}]\n\
             [plugins.{n}]\npath = \"{p}\"\nbridges = [\"wgbr0\"]\n{g}{x}\n",
            d = dir.display(),
            c = crate::shared_cache().display(),
            n = network.name,
            p = network.path.display(),
            g = network.grant(),
            x = network.extra,
            u = upstream.display(),
            h = names.join(", "),
        );
        for h in &hooks {
            toml.push_str(&format!(
                "[plugins.{}]\nworld = \"runtime\"\npath = \"{}\"\n{}\n",
                h.name,
                h.path.display(),
                h.extra
            ));
        }
        let config = dir.join("wasmgate.toml");
        std::fs::write(&config, toml).unwrap();
        // `ip netns exec` puts the daemon in the node netns and a private mount namespace;
        // nsenter takes it back to ours.
        let wrapper = vec![
            "nsenter".to_string(),
            format!("--mount=/proc/{}/ns/mnt", std::process::id()),
            "--".to_string(),
        ];
        let wait_sockets = vec![dir.join("cri.sock")];
        let mut d = Self {
            node,
            dir,
            config,
            wrapper,
            host_namespaces: false,
            wait_sockets,
            child: None,
        };
        d.spawn();
        d
    }
}

/// A node: the wasmgate daemon (CNI with `bridge-ipam`, CRI in front of containerd, with runtime
/// hooks) and a private containerd, in one node netns.
pub struct CriNode {
    // Dropped first: its pods are torn down (CNI DEL) while the daemon still serves.
    pub containerd: Containerd,
    pub daemon: Daemon,
    pub podcidr: String,
    trace: Arc<Mutex<Vec<CallRecord>>>,
}

impl CriNode {
    /// Starts the daemon (network plugin `bridge`, the example `bridge-ipam`, on `podcidr`;
    /// `hooks` in order) and containerd behind it.
    pub async fn start(podcidr: &str, hooks: Vec<PluginEntry>) -> Self {
        let ctrd_dir = Containerd::new_dir();
        let daemon = Daemon::start_cri(
            PluginEntry::new("bridge", plugin("bridge-ipam")),
            hooks,
            &Containerd::socket_in(&ctrd_dir),
        );
        let trace = follow(&daemon);
        let cni = json!({
            "type": "wasmgate-cni",
            "plugin": "bridge",
            "podcidr": podcidr,
            "socket": daemon.cni_socket(),
            "queueDir": daemon.queue_dir(),
            "connectTimeoutMs": 2000,
        });
        let containerd = Containerd::start(ctrd_dir, &daemon.node, cni).await;
        Self {
            containerd,
            daemon,
            podcidr: podcidr.to_string(),
            trace,
        }
    }

    async fn channel(&self) -> Channel {
        wasmgate_proto::unix_channel(self.daemon.cri_socket())
            .await
            .expect("connect to wasmgate's CRI socket")
    }

    /// A RuntimeService client on wasmgate's CRI socket, as kubelet connects.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// An ImageService client on wasmgate's CRI socket.
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// The daemon's trace records so far (CNI and CRI), oldest first.
    pub fn trace(&self) -> Vec<CallRecord> {
        self.trace.lock().unwrap().clone()
    }

    /// The trace records of `interface`/`method` (e.g. `cri`, `CreateContainer`).
    pub fn calls(&self, interface: &str, method: &str) -> Vec<CallRecord> {
        self.trace()
            .into_iter()
            .filter(|c| c.interface == interface && c.method == method)
            .collect()
    }

    /// The `n`th (from 1) trace record of `interface`/`method`, waiting for it: the trace
    /// reaches the follower a moment after the call has answered.
    pub fn nth_call(&self, interface: &str, method: &str, n: usize) -> CallRecord {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(c) = self.calls(interface, method).into_iter().nth(n - 1) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no trace record #{n} of {interface} {method}{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The first trace record that `pred` accepts, waiting a few seconds for it.
    pub fn wait_call(&self, what: &str, mut pred: impl FnMut(&CallRecord) -> bool) -> CallRecord {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(c) = self.trace().into_iter().find(&mut pred) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "no trace record {what}{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Context for a failed assertion: the daemon's and containerd's logs, and the trace.
    pub fn context(&self) -> String {
        let trace: Vec<String> = self
            .trace()
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        format!(
            "\n--- wasmgate trace:\n{}\n--- wasmgate log:\n{}\n--- containerd log, last lines:\n{}",
            trace.join("\n"),
            self.daemon.log(),
            self.containerd.log_tail(30)
        )
    }
}

/// Follows the daemon's trace on a thread until the daemon goes away; returns once subscribed.
fn follow(daemon: &Daemon) -> Arc<Mutex<Vec<CallRecord>>> {
    let records = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let (socket, out) = (daemon.admin_socket(), records.clone());
    std::thread::spawn(move || {
        let _ = follow_trace(&socket, TraceFilter::default(), |line| {
            match line {
                TraceLine::Subscribed => {
                    let _ = tx.send(());
                }
                TraceLine::Call(c) => out.lock().unwrap().push(*c),
                TraceLine::Dropped { count } => panic!("trace dropped {count} records"),
            }
            true
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("subscribe to the daemon's trace");
    records
}

// ---------------------------------------------------------------------------------------------
// kubelet-like requests.

pub fn image_spec(name: &str) -> pb::ImageSpec {
    pb::ImageSpec {
        image: name.to_string(),
        ..Default::default()
    }
}

/// A pod as kubelet describes it: metadata, a log directory, hostname, a cgroup parent under
/// the containerd's [`Containerd::cgroup_root`], default Linux security context (no host
/// namespaces, not privileged).
pub fn pod_config(c: &Containerd, name: &str, namespace: &str) -> pb::PodSandboxConfig {
    let uid = unique("uid-");
    let log_directory = c.pod_logs().join(format!("{namespace}_{name}_{uid}"));
    let cgroup_parent = format!("{}/pod{uid}", c.cgroup_root);
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.to_string(),
            uid,
            namespace: namespace.to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_directory.to_string_lossy().into_owned(),
        labels: [("app".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent,
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container of the busybox image running `command`.
pub fn container_config(name: &str, command: &[&str]) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(image_spec(BUSYBOX_IMAGE)),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        linux: Some(pb::LinuxContainerConfig {
            security_context: Some(pb::LinuxContainerSecurityContext {
                namespace_options: Some(pb::NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether the CNI plugin's host-side veths are all gone from the node netns.
pub fn no_host_veths(node: &Netns) -> bool {
    node.links("veth").is_empty()
}
