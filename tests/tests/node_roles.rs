//! Each interface is optional: a storage-only node serves CSI and its registration and nothing
//! else, a CRI-only node serves CRI and nothing else, each from a config with only its table.

use std::path::Path;

use wasmgate_proto::cri::v1 as cri;
use wasmgate_proto::pluginregistration::{self as reg, registration_client::RegistrationClient};
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{Daemon, TEST_DRIVER, plugin};

fn absent(d: &Daemon, names: &[&str]) {
    for n in names {
        assert!(!d.dir.join(n).exists(), "{n} is served: {}", d.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_only_node_serves_csi_and_nothing_else() {
    let d = Daemon::start_toml(
        &format!(
            "state_dir = \"{{d}}/state\"\n[engine]\ncache_dir = \"{{c}}\"\n[admin]\nsocket = \"{{d}}/admin.sock\"\n\
             [csi]\ndriver = \"{TEST_DRIVER}\"\nplugin = \"hostpath\"\nsocket = \"{{d}}/csi.sock\"\n\
             registration_dir = \"{{d}}/plugins_registry\"\n\
             [plugins.hostpath]\nworld = \"storage\"\npath = \"{}\"\n",
            plugin("hostpath-csi").display()
        ),
        &["csi.sock"],
    );
    let mut c = Csi::connect(&d.csi_socket()).await;
    let info = c
        .identity
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, TEST_DRIVER);
    let mut r = RegistrationClient::new(csi::channel(&d.registration_socket()).await);
    let got = r.get_info(reg::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(Path::new(&got.endpoint), d.csi_socket());
    absent(&d, &["cni.sock", "cri.sock", "state/cri-builtin.sock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cri_only_node_serves_cri_and_nothing_else() {
    let d = Daemon::start_toml(
        "state_dir = \"{d}/state\"\n[engine]\ncache_dir = \"{c}\"\n[admin]\nsocket = \"{d}/admin.sock\"\n\
         [cri]\nsocket = \"{d}/cri.sock\"\nupstream = \"builtin\"\n",
        &["cri.sock"],
    );
    let (mut rt, _) = wasmgate_tests::cri::clients(d.cri_socket()).await;
    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_api_version, "v1");
    let pod = wasmgate_tests::cri::run_pod(&mut rt, "solo", "default").await;
    assert!(!pod.is_empty());
    absent(&d, &["cni.sock", "csi.sock", "plugins_registry"]);
}
