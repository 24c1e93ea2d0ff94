//! What the proxy forwards to: a CRI runtime's socket, or the builtin runtime in this process.
//!
//! The builtin runtime is also served on a private socket of its own (`<state>/cri-builtin.sock`),
//! for tools and for measuring the proxy against it, but the proxy calls it in process: the same
//! generated gRPC server, handed the same HTTP request, without a second HTTP/2 connection.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;
use wasmgate_proto::cri::v1::{
    self as pb, image_service_client::ImageServiceClient, image_service_server::ImageServiceServer,
    runtime_service_client::RuntimeServiceClient, runtime_service_server::RuntimeServiceServer,
};

use super::builtin::Builtin;

/// containerd's and kubelet's limit, not tonic's default of 4 MiB.
const MAX_MESSAGE: usize = 16 << 20;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The runtime behind the proxy: a tower service from HTTP requests to HTTP responses, so raw
/// forwarding and the generated clients both run over it.
#[derive(Clone)]
pub enum Backend {
    /// A runtime's socket. Lazy: the runtime may start after us, or restart under us; each call
    /// (re)connects.
    Remote(tonic::transport::Channel),
    /// The builtin runtime's generated servers, called directly.
    Builtin {
        runtime: RuntimeServiceServer<Builtin>,
        images: ImageServiceServer<Builtin>,
        builtin: Arc<Builtin>,
    },
}

impl Backend {
    pub fn remote(socket: &Path) -> Self {
        Self::Remote(wasmgate_proto::unix_channel_lazy(socket))
    }

    pub fn builtin(b: Arc<Builtin>) -> Self {
        Self::Builtin {
            runtime: runtime_server(b.clone()),
            images: images_server(b.clone()),
            builtin: b,
        }
    }

    /// The runtime service for the typed (hooked) path.
    pub fn runtime(&self) -> Runtime {
        match self {
            Self::Builtin { builtin, .. } => Runtime::Builtin(builtin.clone()),
            remote => Runtime::Client(remote.clone()),
        }
    }

    /// The image service for the typed (hooked) path.
    pub fn images(&self) -> Images {
        match self {
            Self::Builtin { builtin, .. } => Images::Builtin(builtin.clone()),
            remote => Images::Client(remote.clone()),
        }
    }
}

/// The runtime service as the hook chain calls it, with decoded messages: over gRPC to a remote
/// runtime, or straight into the builtin's service methods. The proxy has already decoded the
/// request, so for the builtin there is nothing to gain from encoding it again, and in a hooked
/// CreateContainer those extra passes cost more than a hook.
pub enum Runtime {
    /// A runtime's socket, called with the generated client or, for requests sent as bytes,
    /// tonic's plain one.
    Client(Backend),
    Builtin(Arc<Builtin>),
}

/// The image service, likewise.
pub enum Images {
    Client(Backend),
    Builtin(Arc<Builtin>),
}

/// How a typed request goes on the wire to a runtime behind a socket. The builtin runtime gets
/// the decoded request: it knows this build's schema and no other.
pub enum Wire {
    /// Encoded from the decoded request.
    Typed,
    /// These bytes, the request as the client sent it: no hook changed it.
    AsCame(Bytes),
    /// Encoded from the (adjusted) request, then these bytes: the fields of the request as it
    /// came that this build's schema does not know ([`super::unknown`]).
    With(Bytes),
}

/// Each typed call: the same method on the generated client or on the builtin's service trait.
macro_rules! typed_calls {
    ($ty:ident, $client:ident, $name:literal, $service:path { $($method:ident($m:literal): $req:ty => $resp:ty,)* }) => {
        impl $ty {
            $(
                /// The request comes boxed: a CreateContainerRequest is 2.4 KB, and every future
                /// that held it by value on its way here would carry and move it.
                pub async fn $method(&mut self, r: Box<$req>, wire: Wire) -> Result<tonic::Response<$resp>, tonic::Status> {
                    const PATH: &str = concat!("/", $name, "/", $m);
                    match (self, wire) {
                        // Boxed: tonic's client future is some 18 KiB, which every hooked
                        // handler's future would otherwise carry and move.
                        (Self::Client(b), Wire::Typed) => {
                            let mut c = $client::new(b.clone())
                                .max_decoding_message_size(MAX_MESSAGE)
                                .max_encoding_message_size(MAX_MESSAGE);
                            Box::pin(c.$method(*r)).await
                        }
                        (Self::Client(b), Wire::AsCame(bytes)) => Box::pin(as_bytes(b.clone(), PATH, bytes)).await,
                        (Self::Client(b), Wire::With(unknown)) => {
                            let mut bytes = prost::Message::encode_to_vec(&*r);
                            bytes.extend_from_slice(&unknown);
                            Box::pin(as_bytes(b.clone(), PATH, bytes.into())).await
                        }
                        (Self::Builtin(b), _) => <Builtin as $service>::$method(b, tonic::Request::new(*r)).await,
                    }
                }
            )*
        }
    };
}

typed_calls!(Runtime, RuntimeServiceClient, "runtime.v1.RuntimeService", pb::runtime_service_server::RuntimeService {
    run_pod_sandbox("RunPodSandbox"): pb::RunPodSandboxRequest => pb::RunPodSandboxResponse,
    stop_pod_sandbox("StopPodSandbox"): pb::StopPodSandboxRequest => pb::StopPodSandboxResponse,
    remove_pod_sandbox("RemovePodSandbox"): pb::RemovePodSandboxRequest => pb::RemovePodSandboxResponse,
    pod_sandbox_status("PodSandboxStatus"): pb::PodSandboxStatusRequest => pb::PodSandboxStatusResponse,
    create_container("CreateContainer"): pb::CreateContainerRequest => pb::CreateContainerResponse,
    start_container("StartContainer"): pb::StartContainerRequest => pb::StartContainerResponse,
    stop_container("StopContainer"): pb::StopContainerRequest => pb::StopContainerResponse,
    remove_container("RemoveContainer"): pb::RemoveContainerRequest => pb::RemoveContainerResponse,
    list_containers("ListContainers"): pb::ListContainersRequest => pb::ListContainersResponse,
    update_container_resources("UpdateContainerResources"): pb::UpdateContainerResourcesRequest => pb::UpdateContainerResourcesResponse,
});

typed_calls!(Images, ImageServiceClient, "runtime.v1.ImageService", pb::image_service_server::ImageService {
    pull_image("PullImage"): pb::PullImageRequest => pb::PullImageResponse,
});

/// A unary call whose request message is `bytes`, already encoded; the answer decoded.
async fn as_bytes<Resp>(
    backend: Backend,
    path: &'static str,
    bytes: Bytes,
) -> Result<tonic::Response<Resp>, tonic::Status>
where
    Resp: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(backend)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("service was not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(
        tonic::Request::new(bytes),
        path,
        BytesCodec::<Resp>::default(),
    )
    .await
}

/// Requests as bytes, answers as prost messages.
struct BytesCodec<Resp>(std::marker::PhantomData<Resp>);

impl<Resp> Default for BytesCodec<Resp> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<Resp: prost::Message + Default + Send + 'static> tonic::codec::Codec for BytesCodec<Resp> {
    type Encode = Bytes;
    type Decode = Resp;
    type Encoder = BytesEncoder;
    type Decoder = tonic_prost::ProstDecoder<Resp>;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct BytesEncoder;

impl tonic::codec::Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Service<http::Request<Body>> for Backend {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Self::Remote(c) => c.poll_ready(cx).map_err(Into::into),
            Self::Builtin { .. } => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match self {
            Self::Remote(c) => {
                let fut = c.call(req);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Self::Builtin {
                runtime, images, ..
            } => {
                // The image service's paths start with its own name; everything else, unknown
                // services included, gets the runtime service's answer (UNIMPLEMENTED for
                // strangers), as over a socket.
                let image_path = req
                    .uri()
                    .path()
                    .strip_prefix('/')
                    .and_then(|p| p.strip_prefix(ImageServiceServer::<Builtin>::NAME))
                    .is_some_and(|rest| rest.starts_with('/'));
                let fut = if image_path {
                    images.call(req)
                } else {
                    runtime.call(req)
                };
                Box::pin(async move { fut.await.map_err(|never| match never {}) })
            }
        }
    }
}

fn runtime_server(b: Arc<Builtin>) -> RuntimeServiceServer<Builtin> {
    RuntimeServiceServer::from_arc(b)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn images_server(b: Arc<Builtin>) -> ImageServiceServer<Builtin> {
    ImageServiceServer::from_arc(b)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Serves the builtin runtime on `listener` until the task is dropped.
pub async fn serve_builtin(
    incoming: crate::grpc::Incoming,
    b: Arc<Builtin>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(runtime_server(b.clone()))
        .add_service(images_server(b))
        .serve_with_incoming(incoming)
        .await
}
