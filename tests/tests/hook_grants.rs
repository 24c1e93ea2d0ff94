//! A runtime hook's adjustments are held to its grant (`[plugins.NAME.grant]`): the hostile
//! adjustments of `hook-misbehave` fail a fail-closed hook's call with PERMISSION_DENIED naming
//! the hook and the field, and are dropped and traced for a fail-open hook; granted ones land.

use tonic::Code;
use wasmgate_proto::cri::v1 as pb;
use wasmgate_tests::cri::{self, Rt};
use wasmgate_tests::{Daemon, plugin};

/// The service account's token mount, as kubelet adds it.
const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A container whose annotations pick `hook-misbehave`'s mode and keys (`from-request`), with
/// what the hostile modes would take away: a 64 MiB memory limit and the token mount.
fn container(name: &str, params: &[(&str, &str)]) -> pb::ContainerConfig {
    pb::ContainerConfig {
        annotations: params
            .iter()
            .map(|(k, v)| (format!("misbehave.wasmgate.io/{k}"), v.to_string()))
            .collect(),
        mounts: vec![pb::Mount {
            container_path: SA_MOUNT.into(),
            host_path: "/var/lib/kubelet/pods/u/volumes/token".into(),
            readonly: true,
            ..Default::default()
        }],
        linux: Some(pb::LinuxContainerConfig {
            resources: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..cri::container_config(name)
    }
}

/// Each hostile mode, the keys it reads, and the refusal of a hook named `gate` granted
/// read-only mounts under `<dir>/hook-data` and images from `mirror.local:5000`.
const HOSTILE: &[(&str, &[(&str, &str)], &str)] = &[
    (
        "bind",
        &[],
        "hook gate may not mount host path \"/\" (granted: ",
    ),
    (
        "bind",
        &[("host-path", "{d}/hook-data/x")],
        "may not mount host path \"{d}/hook-data/x\" read-write",
    ),
    ("dev-mem", &[], "hook gate may not add devices"),
    ("ld-preload", &[], "hook gate may not set env LD_PRELOAD"),
    ("args", &[], "hook gate may not replace args"),
    ("drop-memory", &[], "hook gate may not change resources"),
    ("drop-sa-mount", &[], "hook gate may not remove mounts"),
    (
        "rewrite-image",
        &[],
        "hook gate may not rewrite the image to \"evil.example/busybox:latest\" (granted registries: mirror.local:5000)",
    ),
];

fn hook_toml(failure: &str, grant: &str) -> String {
    format!(
        "failure = \"{failure}\"\n{grant}\nconfig = {{ mode = \"from-request\", events = \"create-container\" }}"
    )
}

/// The builtin runtime's verbose status of `id`: the config it recorded, as JSON.
async fn recorded(rt: &mut Rt, id: &str) -> serde_json::Value {
    let resp = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&resp.info["info"]).unwrap();
    info["config"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_hook_beyond_its_grant_fails_the_call_naming_hook_and_field() {
    let toml = hook_toml(
        "closed",
        "grant = { mounts = [\"{d}/hook-data\"], image_registries = [\"mirror.local:5000\"] }",
    );
    let d = Daemon::start_proxy("builtin", &[("gate", plugin("hook-misbehave"), &toml)]);
    let dir = d.dir.display().to_string();
    std::fs::create_dir_all(d.dir.join("hook-data/x")).unwrap();
    let (mut rt, mut im) = cri::clients(d.cri_socket()).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "closed").await;
    let trace = cri::follow(&d, cri::cri_calls(Some("CreateContainer")));

    for (i, (mode, params, refusal)) in HOSTILE.iter().enumerate() {
        let params: Vec<(&str, String)> = params
            .iter()
            .map(|(k, v)| (*k, v.replace("{d}", &dir)))
            .collect();
        let mut p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        p.push(("mode", mode));
        let refusal = refusal.replace("{d}", &dir);
        let err = cri::create(
            &mut rt,
            &pod,
            cri::pod_config("closed", "default"),
            container(&format!("c{i}"), &p),
        )
        .await
        .expect_err(&format!("{mode}: the call went through"));
        assert_eq!(err.code(), Code::PermissionDenied, "{mode}: {err:?}");
        assert!(err.message().contains(&refusal), "{mode}: {err:?}");
        let rec = cri::record_of(&trace, "CreateContainer");
        let decided = cri::decision(&rec, "gate", "pre").unwrap();
        assert!(
            decided.starts_with("refused: ") && decided.contains(&refusal),
            "{mode}: {rec:?}"
        );
        assert!(
            rec.upstream_us.is_none(),
            "{mode} reached the runtime: {rec:?}"
        );
    }
    assert!(cri::containers(&mut rt).await.is_empty());

    // Granted: a read-only bind under the granted prefix, and a mirror the grant names.
    let host = format!("{dir}/hook-data/./x");
    let id = cri::create(
        &mut rt,
        &pod,
        cri::pod_config("closed", "default"),
        container(
            "granted-bind",
            &[("mode", "bind"), ("host-path", &host), ("readonly", "true")],
        ),
    )
    .await
    .unwrap();
    let cfg = recorded(&mut rt, &id).await;
    let bind = cfg["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["container_path"] == "/host")
        .unwrap_or_else(|| panic!("no /host mount: {cfg}"));
    assert_eq!(bind["host_path"], host.as_str());
    assert_eq!(bind["readonly"], true);

    let mirrored = "mirror.local:5000/library/busybox:latest";
    cri::pull(&mut im, mirrored).await;
    let id = cri::create(
        &mut rt,
        &pod,
        cri::pod_config("closed", "default"),
        container(
            "granted-image",
            &[("mode", "rewrite-image"), ("image", mirrored)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(recorded(&mut rt, &id).await["image"]["image"], mirrored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_open_hook_beyond_its_grant_has_its_adjustment_dropped_and_traced() {
    let toml = hook_toml("open", "");
    let d = Daemon::start_proxy("builtin", &[("loose", plugin("hook-misbehave"), &toml)]);
    let (mut rt, mut im) = cri::clients(d.cri_socket()).await;
    let pod = cri::pod_with_busybox(&mut rt, &mut im, "open").await;
    let trace = cri::follow(&d, cri::cri_calls(Some("CreateContainer")));

    for (i, (mode, _, refusal)) in HOSTILE.iter().enumerate() {
        let name = format!("c{i}");
        let id = cri::create(
            &mut rt,
            &pod,
            cri::pod_config("open", "default"),
            container(&name, &[("mode", mode)]),
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        let rec = cri::record_of(&trace, "CreateContainer");
        let decided = cri::decision(&rec, "loose", "pre").unwrap();
        // The field named, without the grant's details this hook has none of.
        let field = refusal
            .replace("hook gate", "hook loose")
            .split(" (granted")
            .next()
            .unwrap()
            .to_string();
        let field = if *mode == "bind" {
            "hook loose may not add mounts".to_string()
        } else {
            field
        };
        assert!(
            decided.starts_with("refused, dropped (fail-open): ") && decided.contains(&field),
            "{mode}: {decided}"
        );

        // The runtime got the container as kubelet asked for it.
        let cfg = recorded(&mut rt, &id).await;
        let mounts: Vec<&str> = cfg["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["container_path"].as_str().unwrap())
            .collect();
        assert_eq!(mounts, [SA_MOUNT], "{mode}: {cfg}");
        assert_eq!(cfg["devices"].as_array().unwrap().len(), 0, "{mode}: {cfg}");
        assert!(
            !cfg["envs"].to_string().contains("LD_PRELOAD"),
            "{mode}: {cfg}"
        );
        assert_eq!(cfg["args"].as_array().unwrap().len(), 0, "{mode}: {cfg}");
        assert_eq!(
            cfg["linux"]["resources"]["memory_limit_in_bytes"],
            64 << 20,
            "{mode}: {cfg}"
        );
        assert_eq!(cfg["image"]["image"], cri::BUSYBOX, "{mode}: {cfg}");
    }
}
