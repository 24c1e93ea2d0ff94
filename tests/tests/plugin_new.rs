//! `wasmgate plugin new`, end to end. For each language and world, the real binary writes a
//! project, the project's own `./build` builds it and runs its unit tests (`./build --test`),
//! the stock wasmtime CLI runs its README's commands and must print exactly what the README says,
//! and a real daemon loads the component and serves it to the shim, a CSI client or a CRI
//! client.
//!
//! All three Rust worlds go end to end; Rust scaffolds share one target directory
//! (`target/plugin-new`), so wit-bindgen is compiled once. A Python build takes ~15 s and the
//! daemon compiles its component in another ~15 s, so one Python world (runtime) goes end to
//! end and the other two run their unit tests against their generated bindings.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

use serde_json::json;
use tonic::Code;
use wasmgate_proto::cri::v1 as cri;
use wasmgate_proto::cri::v1::image_service_client::ImageServiceClient;
use wasmgate_proto::cri::v1::runtime_service_client::RuntimeServiceClient;
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{
    CniOutput, Daemon, Netns, PluginEntry, TEST_DRIVER, TEST_NODE, bin, exec_plugin, repo, unique,
    wasmtime_cli, with_prev,
};

/// `wasmgate plugin new --lang LANG --world WORLD NAME --dir …`, into a fresh
/// `target/plugin-new/projects/LANG-WORLD/NAME`.
fn scaffold(lang: &str, world: &str, name: &str) -> PathBuf {
    let parent = repo()
        .join("target/plugin-new/projects")
        .join(format!("{lang}-{world}"));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let dir = parent.join(name);
    let out = Command::new(bin("wasmgate"))
        .args([
            "plugin", "new", "--lang", lang, "--world", world, name, "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "plugin new failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("created {name} ({lang} {world}, ")),
        "{stdout}"
    );
    dir
}

/// Runs the repository's `plugins/LANG/setup` once per test binary: the toolchain a scaffold's
/// build finds in `target/tools` (`$WASMGATE_TOOLS`).
fn setup(lang: &str) {
    static PYTHON: Once = Once::new();
    static JS: Once = Once::new();
    static C: Once = Once::new();
    let once = match lang {
        "python" => &PYTHON,
        "js" => &JS,
        "c" => &C,
        _ => return,
    };
    once.call_once(|| {
        let script = repo().join("plugins").join(lang).join("setup");
        let status = Command::new(&script)
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(status.success(), "{} failed", script.display());
    });
}

/// The project's `./build ARGS`: Rust scaffolds in the shared target directory, the others with
/// the toolchains that `plugins/LANG/setup` installs into `target/tools`.
fn build(dir: &Path, args: &[&str]) -> String {
    if dir.join("package.json").exists() {
        setup("js");
    } else if dir.join("src/hook.c").exists() {
        setup("c");
    } else if dir.join("world").exists() {
        setup("python");
    }
    let out = Command::new(dir.join("build"))
        .args(args)
        .env("CARGO_TARGET_DIR", repo().join("target/plugin-new"))
        .env("WASMGATE_TOOLS", repo().join("target/tools"))
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}/build {args:?} failed: {all}",
        dir.display()
    );
    all
}

/// Builds the project, after its unit tests, and returns its component.
fn test_and_build(dir: &Path) -> PathBuf {
    // A Rust project's lock is written in Cargo's order: building changes nothing in it.
    let lock = std::fs::read_to_string(dir.join("Cargo.lock")).ok();
    let tests = build(dir, &["--test"]);
    // cargo test's summary, unittest's, node --test's (TAP) or the C test program's.
    assert!(
        [
            "test result: ok. 3 passed",
            "Ran 3 tests",
            "# pass 3\n# fail 0",
            ": 3 passed, 0 failed",
        ]
        .iter()
        .any(|s| tests.contains(s)),
        "{tests}"
    );
    build(dir, &[]);
    assert_eq!(
        std::fs::read_to_string(dir.join("Cargo.lock")).ok(),
        lock,
        "the build rewrote Cargo.lock"
    );
    let name = dir.file_name().unwrap().to_str().unwrap();
    let wasm = dir.join("target").join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "no {}", wasm.display());
    wasm
}

/// Runs the README's "Try it" block as a script, with the stock wasmtime CLI on PATH, and
/// compares what it prints with the `# ` lines in it: each command's documented output.
fn readme_commands_answer_as_documented(dir: &Path) {
    // The README calls it `wasmtime`: the directory of the repository's CLI goes first on PATH.
    let cli = wasmtime_cli();
    let wasmtime = cli.parent().unwrap();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let block = readme
        .split_once("## Try it under the stock wasmtime CLI")
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the README has a Try it block");
    let expected: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("# ")).collect();
    assert!(expected.len() >= 3, "{block}");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(dir)
        .env(
            "PATH",
            format!("{}:{}", wasmtime.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the README's commands failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        expected,
        "{}",
        dir.display()
    );
}

#[test]
fn rust_network_plugin_builds_and_attaches_a_pod() {
    let name = "scaffold-net";
    let dir = scaffold("rust", "network", name);
    let wasm = test_and_build(&dir);
    readme_commands_answer_as_documented(&dir);

    let d = Daemon::start(vec![PluginEntry::new(name, wasm)]);
    let conf = d.net_conf("1.1.0", json!({}));
    let pod = Netns::new("wgp");
    let cid = unique("c");
    let call = |command: &str, conf: &str, cni_args: &str| -> CniOutput {
        let env = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", cid.clone()),
            ("CNI_NETNS", pod.path()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin".to_string()),
            ("CNI_ARGS", cni_args.to_string()),
        ];
        exec_plugin(&bin("wasmgate-cni"), &env, conf)
    };

    // A bad IP is the plugin's error 4, naming it; nothing is built.
    let bad = call("ADD", &conf, "IP=10.250.0.5");
    assert_eq!(bad.code(), 4, "{bad:?}");
    assert!(bad.msg().contains("CNI_ARGS IP \"10.250.0.5\""), "{bad:?}");
    assert!(!pod.has_link("eth0"));

    // ADD: the veth, with the address from CNI_ARGS in the pod.
    let add = call("ADD", &conf, "IP=10.250.0.5/24");
    let result = add.ok().json();
    assert_eq!(add.ip(), "10.250.0.5");
    assert_eq!(pod.addrs("eth0"), ["10.250.0.5/24"]);
    let host = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(host.starts_with("wg") && d.node.has_link(&host), "{result}");

    // CHECK finds what ADD built; DEL removes it.
    call("CHECK", &with_prev(&conf, &result), "IP=10.250.0.5/24").ok();
    call("DEL", &conf, "IP=10.250.0.5/24").ok();
    assert!(pod.gone("eth0"), "eth0 is still in the pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_storage_plugin_builds_and_answers_csi_identity() {
    let name = "scaffold-csi";
    let dir = scaffold("rust", "storage", name);
    let wasm = test_and_build(&dir);
    readme_commands_answer_as_documented(&dir);

    let d = Daemon::start_csi_from(wasm, "");
    let mut c = Csi::connect(&d.csi_socket()).await;
    let info = c
        .identity
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    // The daemon hands the driver its `[csi] driver` as wasi:config driver-name.
    assert_eq!(
        (info.name.as_str(), info.vendor_version.as_str()),
        (TEST_DRIVER, "0.1.0")
    );
    let probe = c
        .identity
        .probe(pb::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));
    let caps = c
        .identity
        .get_plugin_capabilities(pb::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(caps.capabilities.is_empty(), "{caps:?}");
    let node = c
        .node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node.node_id, TEST_NODE);

    // The host refuses the unadvertised controller; the plugin itself refuses publish, naming it.
    let create = c
        .controller
        .create_volume(csi::create_request("pvc-1", 0))
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::Unimplemented, "{create:?}");
    let (_, target) = csi::pod_paths(&d.kubelet_dir());
    let publish = c
        .node
        .node_publish_volume(csi::publish_request("v1", None, &target, false))
        .await
        .unwrap_err();
    assert_eq!(publish.code(), Code::Unimplemented, "{publish:?}");
    assert_eq!(
        publish.message(),
        "scaffold-csi: NodePublishVolume is not implemented"
    );
}

/// A runtime hook scaffold, built and run in the CRI proxy: a new container gets the annotation
/// its `wasi:config` names.
async fn runtime_hook_annotates_new_containers(lang: &str, name: &str) {
    let dir = scaffold(lang, "runtime", name);
    let wasm = test_and_build(&dir);
    readme_commands_answer_as_documented(&dir);

    let d = Daemon::start_proxy(
        "builtin",
        &[(
            name,
            wasm,
            "config = { annotation = \"example.com/owner=team-a\" }",
        )],
    );
    let ch = wasmgate_proto::unix_channel(d.cri_socket()).await.unwrap();
    let (mut rt, mut im) = (
        RuntimeServiceClient::new(ch.clone()),
        ImageServiceClient::new(ch),
    );
    let pod_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-web".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: "/tmp".into(),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let image = Some(cri::ImageSpec {
        image: "busybox".into(),
        ..Default::default()
    });
    im.pull_image(cri::PullImageRequest {
        image: image.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let cid = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image,
                command: vec!["sleep".into(), "3600".into()],
                ..Default::default()
            }),
            sandbox_config: Some(pod_config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: cid,
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(
        status
            .annotations
            .get("example.com/owner")
            .map(String::as_str),
        Some("team-a"),
        "{:?}",
        status.annotations
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_runtime_hook_builds_and_annotates_containers() {
    runtime_hook_annotates_new_containers("rust", "scaffold-hook").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_runtime_hook_builds_and_annotates_containers() {
    runtime_hook_annotates_new_containers("python", "scaffold-py-hook").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_runtime_hook_builds_and_annotates_containers() {
    runtime_hook_annotates_new_containers("js", "scaffold-js-hook").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_runtime_hook_builds_and_annotates_containers() {
    runtime_hook_annotates_new_containers("c", "scaffold-c-hook").await;
}

#[test]
fn python_network_and_storage_plugins_pass_their_unit_tests() {
    for world in ["network", "storage"] {
        let dir = scaffold("python", world, &format!("scaffold-py-{world}"));
        let out = build(&dir, &["--test"]);
        assert!(out.contains("Ran 3 tests") && out.contains("OK"), "{out}");
    }
}

#[test]
fn refuses_bad_names_languages_worlds_and_used_directories() {
    let cwd = std::env::temp_dir().join(unique("wasmgate-new-"));
    std::fs::create_dir_all(cwd.join("used")).unwrap();
    std::fs::write(cwd.join("used/keep"), "").unwrap();
    let new = |args: &[&str]| -> String {
        let out = Command::new(bin("wasmgate"))
            .args(["plugin", "new"])
            .args(args)
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cases: [(&[&str], &str); 8] = [
        (
            &["--lang", "go", "--world", "network", "x"],
            "unknown language \"go\": there are templates for rust, python, js, c",
        ),
        (
            &["--lang", "js", "--world", "network", "x"],
            "there is no js template for the network world yet: js has runtime",
        ),
        (
            &["--lang", "c", "--world", "storage", "x"],
            "there is no c template for the storage world yet: c has runtime",
        ),
        (
            &["--lang", "rust", "--world", "cni", "x"],
            "unknown world \"cni\": choose network (CNI), storage (CSI) or runtime (CRI hook)",
        ),
        (
            &["--lang", "rust", "--world", "network", "My_Plugin"],
            "plugin name \"My_Plugin\" is not valid",
        ),
        (
            &["--lang", "python", "--world", "storage", "class"],
            "plugin name \"class\" is reserved: a Python keyword",
        ),
        (
            &["--lang", "rust", "--world", "runtime", "used"],
            "used is not empty: choose another --dir, or remove it first",
        ),
        (
            &[
                "--lang",
                "rust",
                "--world",
                "runtime",
                "x",
                "--dir",
                "used/keep",
            ],
            "used/keep exists and is not a directory",
        ),
    ];
    for (args, want) in cases {
        let stderr = new(args);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // Nothing was written.
    let left: Vec<_> = std::fs::read_dir(&cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["used"]);
    assert_eq!(std::fs::read_dir(cwd.join("used")).unwrap().count(), 1);
    std::fs::remove_dir_all(&cwd).unwrap();
}
