//! Every gRPC socket wasmgate serves takes the `:authority` values real unix-socket clients send
//! (grpc-go's bare path, grpcio's percent-encoded path, an empty one, a long one), and what the
//! HTTP/2 layer still refuses is refused with a reason, logged and traced.
//!
//! The calls go out from a bare HTTP/2 client (`wasmgate_tests::h2raw`), since no gRPC library
//! sends these values on purpose. tests/tests/foreign_clients.rs runs the real Go and Python
//! clients.

use std::path::PathBuf;
use std::time::Duration;

use prost::Message;
use wasmgate_daemon::admin::TraceFilter;
use wasmgate_proto::cri::v1 as cri;
use wasmgate_proto::csi::v1 as csi;
use wasmgate_proto::pluginregistration as reg;
use wasmgate_tests::cri::{builtin_socket, follow};
use wasmgate_tests::h2raw::{Outcome, RawH2};
use wasmgate_tests::{Daemon, TEST_DRIVER};

/// One socket, a unary call on it, and a check of its answer's message.
struct Target {
    name: &'static str,
    socket: PathBuf,
    path: &'static str,
    check: fn(&[u8]),
}

fn targets(d: &Daemon) -> Vec<Target> {
    let version = "/runtime.v1.RuntimeService/Version";
    let cri_version: fn(&[u8]) = |b| {
        let v = cri::VersionResponse::decode(b).unwrap();
        assert_eq!(v.runtime_api_version, "v1");
    };
    vec![
        Target {
            name: "cri",
            socket: d.cri_socket(),
            path: version,
            check: cri_version,
        },
        Target {
            name: "cri-builtin",
            socket: builtin_socket(d),
            path: version,
            check: cri_version,
        },
        Target {
            name: "csi",
            socket: d.csi_socket(),
            path: "/csi.v1.Identity/GetPluginInfo",
            check: |b| {
                let info = csi::GetPluginInfoResponse::decode(b).unwrap();
                assert_eq!(info.name, TEST_DRIVER);
            },
        },
        Target {
            name: "registration",
            socket: d.registration_socket(),
            path: "/pluginregistration.Registration/GetInfo",
            check: |b| {
                let info = reg::PluginInfo::decode(b).unwrap();
                assert_eq!(info.name, TEST_DRIVER);
                assert_eq!(info.r#type, "CSIPlugin");
            },
        },
    ]
}

/// The gRPC message of a unary answer, past its 5-byte prefix.
fn message(out: &Outcome) -> &[u8] {
    match out {
        Outcome::Answered { body, .. } if body.len() >= 5 => &body[5..],
        other => panic!("no message in {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_socket_serves_the_authorities_real_clients_send() {
    let d = Daemon::start_node(true, &[]);
    for t in targets(&d) {
        let path = t.socket.display().to_string();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("the socket path (grpc-go, grpc-java)", path.clone().into_bytes()),
            ("the percent-encoded path", path.replace('/', "%2F").into_bytes()),
            // grpcio 1.85 drops the leading slash.
            ("grpcio's form", path[1..].replace('/', "%2F").into_bytes()),
            ("an empty value", Vec::new()),
            ("an 8 KiB path", format!("/{}", "p".repeat(8191)).into_bytes()),
            ("an 8 KiB host name", "h".repeat(8192).into_bytes()),
            ("localhost (tonic, kubelet's CSI client)", b"localhost".to_vec()),
            ("the path again, now an index into the client's table", path.into_bytes()),
        ];
        // One connection for all of them: a rewrite must leave later blocks, which refer to the
        // client's dynamic table, decoding right.
        let mut c = RawH2::connect(&t.socket).await;
        for (what, authority) in &cases {
            let out = c.call(t.path, authority, &[], &[]).await;
            assert_eq!(out.grpc_status(), Some(0), "{} with {what}: {out:?}", t.name);
            (t.check)(message(&out));
        }
    }
    assert!(!d.log().contains("refused a call"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_calls_get_a_reason_a_warning_and_a_trace_record() {
    let d = Daemon::start_node(true, &[]);
    let errors = follow(
        &d,
        TraceFilter {
            errors: true,
            ..Default::default()
        },
    );
    let t = &targets(&d)[2];
    let mut c = RawH2::connect(&t.socket).await;

    // A connection-specific field is malformed in HTTP/2 (RFC 9113 8.2.2): h2 resets the stream.
    let out = c
        .call(t.path, b"/run/x.sock", &[("connection", "keep-alive")], &[])
        .await;
    assert_eq!(out, Outcome::Reset(0x1), "PROTOCOL_ERROR: {}", d.log());
    let rec = errors.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((rec.interface.as_str(), rec.method.as_str()), ("csi", "GetPluginInfo"));
    assert_eq!(rec.code, Some(tonic::Code::Internal as u32));
    let msg = rec.msg.as_deref().unwrap();
    assert!(msg.contains("PROTOCOL_ERROR: connection-specific field \"connection\""), "{msg}");
    assert_eq!(rec.ids["socket"], t.socket.display().to_string());

    // The same connection goes on serving.
    let out = c.call(t.path, b"/run/x.sock", &[], &[]).await;
    assert_eq!(out.grpc_status(), Some(0), "{out:?}");

    // Header fields past the server's 16 KiB limit: refused as too large, with 431.
    let big = "h".repeat(20 * 1024);
    let out = c.call(t.path, big.as_bytes(), &[], &[]).await;
    assert_eq!(out.header(":status"), Some("431"), "{out:?}");
    let rec = errors.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.method, "GetPluginInfo");
    let msg = rec.msg.as_deref().unwrap();
    assert!(msg.contains("past the server's limit of 16384 bytes (431)"), "{msg}");
    let out = c.call(t.path, b"/run/x.sock", &[], &[]).await;
    assert_eq!(out.grpc_status(), Some(0), "{out:?}");

    // Refused by tonic before any handler: an unknown method, a message that does not decode.
    let out = c.call("/csi.v1.Identity/NoSuchMethod", b"/run/x.sock", &[], &[]).await;
    assert_eq!(out.grpc_status(), Some(12), "{out:?}");
    let rec = errors.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.method, "NoSuchMethod");
    assert_eq!(rec.code, Some(tonic::Code::Unimplemented as u32));
    let out = c.call(t.path, b"/run/x.sock", &[], &[0xff, 0xff]).await;
    assert_eq!(out.grpc_status(), Some(13), "{out:?}");
    let rec = errors.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.method, "GetPluginInfo");
    assert!(rec.msg.as_deref().unwrap().contains("decode"), "{rec:?}");
    // A handler's own error is recorded once, by the handler.
    let out = c
        .call("/csi.v1.Node/NodePublishVolume", b"/run/x.sock", &[], &[])
        .await;
    assert_eq!(out.grpc_status(), Some(3), "{out:?}");
    let rec = errors.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.method, "NodePublishVolume");
    assert!(rec.ids.get("socket").is_none(), "recorded by the layer too: {rec:?}");

    // Not HTTP/2 at all.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&t.socket).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    drop(s);
    let rec = errors.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(rec.method, "connection", "{rec:?}");
    assert!(rec.msg.as_deref().unwrap().contains("preface"), "{rec:?}");

    let log = d.log();
    assert!(log.contains("refused a call"), "{log}");
    assert!(log.contains(&t.socket.display().to_string()), "{log}");
}
