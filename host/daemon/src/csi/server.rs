//! Serves the three CSI services on one unix socket until shutdown, plus a GroupController that
//! answers UNIMPLEMENTED with a message.

use std::future::Future;
use std::sync::Arc;

use wasmgate_proto::csi::v1::{
    controller_server::ControllerServer, group_controller_server::GroupControllerServer,
    identity_server::IdentityServer, node_server::NodeServer,
};

use super::CsiService;
use crate::grpc::Incoming;
use super::controller::Controller;
use super::group_controller::GroupController;
use super::identity::Identity;
use super::node::Node;

/// The largest request accepted; CSI messages are small, and a bigger one is a broken client.
const MAX_MESSAGE: usize = 4 << 20;

pub async fn serve(
    incoming: Incoming,
    svc: Arc<CsiService>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .layer(incoming.layer())
        .add_service(
            IdentityServer::new(Identity(svc.clone())).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ControllerServer::new(Controller(svc.clone())).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            GroupControllerServer::new(GroupController(svc.clone()))
                .max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(NodeServer::new(Node(svc)).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
