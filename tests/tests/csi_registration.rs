//! kubelet's view of plugin registration: the socket its plugin watcher finds, what GetInfo says,
//! NotifyRegistrationStatus either way, the sockets' permissions, and a stale socket file left at
//! the CSI path by a dead daemon.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use wasmgate_proto::pluginregistration::{self as reg, registration_client::RegistrationClient};
use wasmgate_daemon::admin::TraceFilter;
use wasmgate_tests::cri::{follow, next_record};
use wasmgate_tests::csi::{self, Csi, pb};
use wasmgate_tests::{Daemon, TEST_DRIVER, TEST_NODE};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_registers_the_driver() {
    let d = Daemon::start_csi("");
    let traced = follow(
        &d,
        TraceFilter {
            interface: Some("registration".into()),
            ..Default::default()
        },
    );
    let mut r = RegistrationClient::new(csi::channel(&d.registration_socket()).await);

    let info = r.get_info(reg::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, TEST_DRIVER);
    assert_eq!(Path::new(&info.endpoint), d.csi_socket());
    assert!(!info.supported_versions.is_empty(), "{info:?}");
    for v in &info.supported_versions {
        assert!(
            v.split('.').count() == 3 && v.split('.').all(|n| n.parse::<u32>().is_ok()),
            "not a version: {v:?}"
        );
    }

    // The endpoint it names is the one serving CSI, under the same driver name.
    let mut c = Csi::connect(Path::new(&info.endpoint)).await;
    let plugin = c
        .identity
        .get_plugin_info(pb::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plugin.name, TEST_DRIVER);

    // kubelet refusing the driver, then accepting it: both are acknowledged.
    r.notify_registration_status(reg::RegistrationStatus {
        plugin_registered: false,
        error: "boom".into(),
    })
    .await
    .expect("a refusal is acknowledged");
    r.notify_registration_status(reg::RegistrationStatus {
        plugin_registered: true,
        error: String::new(),
    })
    .await
    .expect("a registration is acknowledged");
    assert!(
        d.log().contains("boom"),
        "the refusal is not logged: {}",
        d.log()
    );
    // And the daemon still answers GetInfo the same way afterwards.
    let again = r.get_info(reg::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(again, info);

    // Each of kubelet's calls is in the trace; its refusal is an error there.
    let seen: Vec<_> = (0..4).map(|_| next_record(&traced)).collect();
    let methods: Vec<_> = seen.iter().map(|r| (r.method.as_str(), r.ok)).collect();
    assert_eq!(
        methods,
        [
            ("GetInfo", true),
            ("NotifyRegistrationStatus", false),
            ("NotifyRegistrationStatus", true),
            ("GetInfo", true)
        ]
    );
    assert!(seen[1].msg.as_deref().unwrap().contains("boom"), "{:?}", seen[1]);
    assert!(seen.iter().all(|r| r.ids["driver"] == TEST_DRIVER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_are_private_and_a_stale_one_is_replaced() {
    let mut d = Daemon::start_csi("");
    assert_eq!(mode(&d.csi_socket()), 0o600, "csi socket");
    assert_eq!(mode(&d.registration_socket()), 0o600, "registration socket");

    // A daemon that died without cleaning up leaves its socket files behind; here the CSI one is
    // made into a dead socket of a listener that is long gone.
    d.kill9();
    std::fs::remove_file(d.csi_socket()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(d.csi_socket()).unwrap());
    std::fs::set_permissions(d.csi_socket(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let stale = std::fs::metadata(d.csi_socket()).unwrap();
    assert!(stale.file_type().is_socket());
    assert!(
        std::os::unix::net::UnixStream::connect(d.csi_socket()).is_err(),
        "the stale socket must be dead"
    );
    assert!(
        d.registration_socket().exists(),
        "kill -9 left the registration socket"
    );

    d.spawn();
    // `spawn` waited for the CSI socket to accept, which the dead one never does; the inode
    // number may well be reused, so the mode shows the file is the daemon's.
    assert!(
        std::fs::metadata(d.csi_socket())
            .unwrap()
            .file_type()
            .is_socket()
    );
    assert_eq!(mode(&d.csi_socket()), 0o600, "the replaced csi socket");
    assert_eq!(
        mode(&d.registration_socket()),
        0o600,
        "the replaced registration socket"
    );
    let mut c = Csi::connect(&d.csi_socket()).await;
    let info = c
        .node
        .node_get_info(pb::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, TEST_NODE);
    let mut r = RegistrationClient::new(csi::channel(&d.registration_socket()).await);
    let info = r.get_info(reg::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(Path::new(&info.endpoint), d.csi_socket());

    // A graceful stop removes both sockets, so kubelet's watcher sees the driver go.
    d.stop();
    assert!(
        !d.csi_socket().exists(),
        "the csi socket outlived the daemon"
    );
    assert!(
        !d.registration_socket().exists(),
        "the registration socket outlived the daemon"
    );
    d.spawn();
    assert!(d.registration_socket().exists());
}
