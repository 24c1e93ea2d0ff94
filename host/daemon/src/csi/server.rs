//! Serves the CSI services on a unix socket until shutdown, plus a GroupController that answers
//! UNIMPLEMENTED with a message. One socket may serve everything, or the node and controller
//! halves may each have their own.

use std::future::Future;
use std::sync::Arc;

use wasmgate_proto::csi::v1::{
    controller_server::ControllerServer, group_controller_server::GroupControllerServer,
    identity_server::IdentityServer, node_server::NodeServer,
};

use super::CsiService;
use super::controller::Controller;
use super::group_controller::GroupController;
use super::identity::Identity;
use super::node::Node;
use crate::grpc::Incoming;

/// The largest request accepted; CSI messages are small, and a bigger one is a broken client.
const MAX_MESSAGE: usize = 4 << 20;

/// Which services a socket serves; Identity is on every one, as each CSI client probes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Services {
    /// Identity, Controller, GroupController and Node: the one socket of a plain setup.
    All,
    /// Identity and Node: kubelet's socket when the controller has its own. The node RPCs mount
    /// on the host, so the containers of the controller sidecars never get them.
    Node,
    /// Identity, Controller and GroupController: for the controller sidecars.
    Controller,
}

pub async fn serve(
    incoming: Incoming,
    svc: Arc<CsiService>,
    services: Services,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let controller = services != Services::Node;
    let node = services != Services::Controller;
    tonic::transport::Server::builder()
        .layer(incoming.layer())
        .add_service(
            IdentityServer::new(Identity(svc.clone())).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_optional_service(controller.then(|| {
            ControllerServer::new(Controller(svc.clone())).max_decoding_message_size(MAX_MESSAGE)
        }))
        .add_optional_service(controller.then(|| {
            GroupControllerServer::new(GroupController(svc.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
        }))
        .add_optional_service(
            node.then(|| NodeServer::new(Node(svc)).max_decoding_message_size(MAX_MESSAGE)),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
