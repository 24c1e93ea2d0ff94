//! What the proxy forwards to: a CRI runtime's socket, or the builtin runtime, which the daemon
//! serves on a private socket of its own so that both are reached the same way.

use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use wasmgate_proto::cri::v1::{
    image_service_server::ImageServiceServer, runtime_service_server::RuntimeServiceServer,
};

use super::builtin::Builtin;

/// The runtime behind the proxy. Lazy: the runtime may start after us, or restart under us;
/// each call (re)connects.
pub type Backend = tonic::transport::Channel;

pub fn backend(socket: &Path) -> Backend {
    wasmgate_proto::unix_channel_lazy(socket)
}

/// Serves the builtin runtime on `listener` until the task is dropped.
pub async fn serve_builtin(
    listener: UnixListener,
    b: Arc<Builtin>,
) -> Result<(), tonic::transport::Error> {
    // containerd's and kubelet's limit, not tonic's default of 4 MiB.
    const MAX_MESSAGE: usize = 16 << 20;
    tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::from_arc(b.clone()).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(ImageServiceServer::from_arc(b).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await
}
