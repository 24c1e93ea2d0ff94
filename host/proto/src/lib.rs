//! Rust bindings for the gRPC schemas vendored in `proto/` at the repository root.
//!
//! * [`csi::v1`]: the Container Storage Interface, package `csi.v1`, generated from
//!   `proto/csi/v1/csi.proto`. Services: `Identity`, `Controller`, `GroupController`,
//!   `SnapshotMetadata` and `Node` (see [`CSI_SPEC_VERSION`] for exactly which upstream
//!   revision).
//! * [`pluginregistration`]: kubelet's plugin-registration API (package `pluginregistration`,
//!   `k8s.io/kubelet/pkg/apis/pluginregistration/v1`), service `Registration`, generated from
//!   `proto/pluginregistration/v1/api.proto`.
//!
//! Both are wire-identical to upstream: same packages, names, field numbers, enums and
//! services. `proto/SOURCES.md` records the upstream repository, path and commit of each file.
//!
//! Every service has a `*_client` module (e.g. [`csi::v1::node_client::NodeClient`]) and a
//! `*_server` module (e.g. [`csi::v1::node_server::NodeServer`] wrapping an implementation of
//! [`csi::v1::node_server::Node`]).
//!
//! [`unix_channel`] connects a client to a unix socket, as kubelet and the CSI sidecars do.

/// The Container Storage Interface.
pub mod csi {
    /// CSI v1, protobuf package `csi.v1`.
    #[allow(clippy::all, clippy::pedantic, rustdoc::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("csi.v1");
    }
}

/// Kubelet plugin registration, protobuf package `pluginregistration`
/// (Go package `k8s.io/kubelet/pkg/apis/pluginregistration/v1`).
#[allow(clippy::all, clippy::pedantic, rustdoc::all, missing_docs)]
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");
}

/// The CSI spec version these bindings implement on the wire.
///
/// `proto/csi/v1/csi.proto` is regenerated from the upstream `spec.md` of
/// container-storage-interface/spec at [`CSI_SPEC_COMMIT`], the newest spec revision reachable
/// when it was vendored. That revision lies between the v1.11.0 and v1.12.0 tags (upstream's
/// master was already versioned 1.12 then). It has the v1.12 RPCs and messages, including the
/// alpha `GetSnapshot` RPC added after v1.11.0, but still marks `ControllerModifyVolume`,
/// `mutable_parameters` and `MODIFY_VOLUME` with the `alpha_*` options that v1.12.0 removed
/// when it made them GA. Those options are annotations only and do not change the wire format,
/// so the schema should be wire-identical to the v1.12.0 tag. This has not been diffed against
/// the tag itself. See proto/SOURCES.md.
pub const CSI_SPEC_VERSION: &str = "1.12.0";

/// The upstream commit of container-storage-interface/spec whose `spec.md` produced
/// `proto/csi/v1/csi.proto`.
pub const CSI_SPEC_COMMIT: &str = "01bfa0409ed370d753f3cf49c9b94a12da8f3be5";

/// Encoded `google.protobuf.FileDescriptorSet` of every schema in this crate plus their
/// imports (`google/protobuf/descriptor.proto`, `timestamp.proto`, `wrappers.proto`),
/// without source comments. Custom options (`csi_secret`, `alpha_*`) are preserved.
///
/// Intended for gRPC server reflection and for checking the schema at run time.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wasmgate_proto_descriptor.bin"));

/// A tonic channel to the gRPC server on the unix socket at `path`, as kubelet and the CSI
/// sidecars connect: `IdentityClient::new(unix_channel(path).await?)`.
///
/// The connection is made before this returns, so a missing socket or a server that is not
/// listening is an error here rather than on the first call. Should the connection drop later,
/// tonic reconnects to the same path. The `http://[::1]:50051` URI is a placeholder tonic
/// requires; only `path` is dialled.
pub async fn unix_channel(
    path: impl AsRef<std::path::Path>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.as_ref().to_path_buf();
    tonic::transport::Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}
