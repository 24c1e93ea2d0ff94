//! Rust bindings for the gRPC schemas vendored in `proto/` at the repository root.
//!
//! * [`csi::v1`]: the Container Storage Interface, package `csi.v1`, generated from
//!   `proto/csi/v1/csi.proto`. Services: `Identity`, `Controller`, `GroupController`,
//!   `SnapshotMetadata` and `Node` (see [`CSI_SPEC_VERSION`] for exactly which upstream
//!   revision).
//! * [`pluginregistration`]: kubelet's plugin-registration API (package `pluginregistration`,
//!   `k8s.io/kubelet/pkg/apis/pluginregistration/v1`), service `Registration`, generated from
//!   `proto/pluginregistration/v1/api.proto`.
//! * [`cri::v1`]: the Container Runtime Interface, package `runtime.v1` (`k8s.io/cri-api`),
//!   generated from `proto/cri/v1/api.proto`. Services `RuntimeService` (37 RPCs, of which
//!   `GetContainerEvents` and the `CRIListStreaming` RPCs `StreamPodSandboxes`,
//!   `StreamContainers`, `StreamContainerStats`, `StreamPodSandboxStats` and
//!   `StreamPodSandboxMetrics` are server-streaming) and `ImageService` (6 RPCs, `StreamImages`
//!   server-streaming). See [`CRI_API_VERSION`] for which upstream revision.
//!
//! All are wire-identical to upstream: same packages, names, field numbers, enums and
//! services. `proto/SOURCES.md` records the upstream repository, path and commit of each file.
//!
//! Every service has a `*_client` module (e.g. [`csi::v1::node_client::NodeClient`]) and a
//! `*_server` module (e.g. [`csi::v1::node_server::NodeServer`] wrapping an implementation of
//! [`csi::v1::node_server::Node`]; [`cri::v1::runtime_service_server::RuntimeServiceServer`]
//! wrapping [`cri::v1::runtime_service_server::RuntimeService`]).
//!
//! [`unix_channel`] connects a client to a unix socket, as kubelet, the CSI sidecars and
//! `crictl` do.

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

/// The Container Runtime Interface (Go module `k8s.io/cri-api`).
pub mod cri {
    /// CRI v1, protobuf package `runtime.v1` (Go package `k8s.io/cri-api/pkg/apis/runtime/v1`).
    ///
    /// Servers: [`runtime_service_server::RuntimeService`] and
    /// [`image_service_server::ImageService`]; clients:
    /// [`runtime_service_client::RuntimeServiceClient`] and
    /// [`image_service_client::ImageServiceClient`].
    #[allow(clippy::all, clippy::pedantic, rustdoc::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
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

/// The CRI API revision `proto/cri/v1/api.proto` implements on the wire: the `k8s.io/cri-api`
/// module version whose `pkg/apis/runtime/v1/api.proto` it was taken from.
///
/// That version is a Go pseudo-version of `github.com/chrishenzie/cri-api`, a copy of
/// Kubernetes' published `k8s.io/cri-api` that kubernetes-sigs/cri-tools pins (with a `replace`)
/// and vendors at commit `6118029797780a8cb428b8d69606b29b27505b6e`. As far as we can tell it
/// is upstream Kubernetes `master` after v1.37.0-alpha.1 plus one unmerged CRI change,
/// kubernetes/kubernetes#139824 (`cgroup_mount_mode`, KEP-5474), and that change was removed
/// again here. So the file has the merged `CheckpointPod`/`RestorePod` RPCs (#140366), the
/// `SIGNAL_` enum value names (#139251), `KeyValue.value` as `bytes` (#139168) and
/// `Mount.mount_options` (#140013). Its `RuntimeService` definition matches, comment for comment,
/// upstream's generated `api_grpc.pb.go` at kubernetes/kubernetes
/// `121460defea7874f50c64bb8de51018a86c6eef3`. No official copy of `api.proto` itself at that
/// revision was reachable. See `proto/SOURCES.md`.
pub const CRI_API_VERSION: &str = "v0.0.0-20260925160638-599ea22085a0";

/// Encoded `google.protobuf.FileDescriptorSet` of every schema in this crate plus their
/// imports (`google/protobuf/descriptor.proto`, `timestamp.proto`, `wrappers.proto`),
/// without source comments. Custom options (`csi_secret`, `alpha_*`) are preserved.
///
/// Intended for gRPC server reflection and for checking the schema at run time.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/wasmgate_proto_descriptor.bin"));

/// Every RPC name the vendored schemas declare (`Version`, `NodePublishVolume`, ...), read once
/// from [`FILE_DESCRIPTOR_SET`]: a bounded vocabulary for labels that a client's `:path` would
/// otherwise choose.
pub fn rpc_names() -> &'static std::collections::BTreeSet<String> {
    use prost::Message;
    static NAMES: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        // Built into this crate by build.rs; a failure to decode is a build defect, and the set
        // is then empty, so every method counts as unknown rather than the process stopping.
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap_or_default();
        fds.file
            .iter()
            .flat_map(|f| &f.service)
            .flat_map(|s| &s.method)
            .filter_map(|m| m.name.clone())
            .collect()
    })
}

/// A tonic channel to the gRPC server on the unix socket at `path`, as kubelet and the CSI
/// sidecars connect: `IdentityClient::new(unix_channel(path).await?)` (or
/// `RuntimeServiceClient::new(..)` for a CRI runtime socket).
///
/// The connection is made before this returns, so a missing socket or a server that is not
/// listening is an error here rather than on the first call. Should the connection drop later,
/// tonic reconnects to the same path. The `http://[::1]:50051` URI is a placeholder tonic
/// requires; only `path` is dialled.
pub async fn unix_channel(
    path: impl AsRef<std::path::Path>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    unix_endpoint()
        .connect_with_connector(unix_connector(path.as_ref()))
        .await
}

/// [`unix_channel`] that connects on first use and reconnects after the peer went away: for a
/// proxy whose upstream may start after it, or restart under it.
pub fn unix_channel_lazy(path: impl AsRef<std::path::Path>) -> tonic::transport::Channel {
    unix_endpoint().connect_with_connector_lazy(unix_connector(path.as_ref()))
}

fn unix_endpoint() -> tonic::transport::Endpoint {
    // The URI is a placeholder tonic requires; the connector decides where bytes go.
    tonic::transport::Endpoint::from_static("http://[::1]:50051")
}

fn unix_connector(
    path: &std::path::Path,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let path = path.to_path_buf();
    tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    })
}
