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

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;
use wasmgate_proto::cri::v1::{
    image_service_server::ImageServiceServer, runtime_service_server::RuntimeServiceServer,
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
    },
}

impl Backend {
    pub fn remote(socket: &Path) -> Self {
        Self::Remote(wasmgate_proto::unix_channel_lazy(socket))
    }

    pub fn builtin(b: Arc<Builtin>) -> Self {
        Self::Builtin {
            runtime: runtime_server(b.clone()),
            images: images_server(b),
        }
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
            Self::Builtin { runtime, images } => {
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
    listener: UnixListener,
    b: Arc<Builtin>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(runtime_server(b.clone()))
        .add_service(images_server(b))
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await
}
