//! csi.v1.GroupController: not offered (no driver world has group snapshots), but served so that
//! a caller gets UNIMPLEMENTED with a message, and a trace record, rather than tonic's bare
//! fallback for an unknown service (UNIMPLEMENTED with an empty message).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wasmgate_proto::csi::v1 as pb;

use super::{CsiService, ServiceError};

pub struct GroupController(pub Arc<CsiService>);

type Reply<T> = Result<Response<T>, Status>;

impl GroupController {
    fn refuse<T>(&self, method: &'static str) -> Reply<T> {
        let call = self.0.call(method, &[]);
        call.finish(Err(ServiceError::Unimplemented(format!(
            "group snapshots are not supported ({method}): there is no group controller service"
        ))))
    }
}

#[tonic::async_trait]
impl pb::group_controller_server::GroupController for GroupController {
    async fn group_controller_get_capabilities(
        &self,
        _req: Request<pb::GroupControllerGetCapabilitiesRequest>,
    ) -> Reply<pb::GroupControllerGetCapabilitiesResponse> {
        self.refuse("GroupControllerGetCapabilities")
    }

    async fn create_volume_group_snapshot(
        &self,
        _req: Request<pb::CreateVolumeGroupSnapshotRequest>,
    ) -> Reply<pb::CreateVolumeGroupSnapshotResponse> {
        self.refuse("CreateVolumeGroupSnapshot")
    }

    async fn delete_volume_group_snapshot(
        &self,
        _req: Request<pb::DeleteVolumeGroupSnapshotRequest>,
    ) -> Reply<pb::DeleteVolumeGroupSnapshotResponse> {
        self.refuse("DeleteVolumeGroupSnapshot")
    }

    async fn get_volume_group_snapshot(
        &self,
        _req: Request<pb::GetVolumeGroupSnapshotRequest>,
    ) -> Reply<pb::GetVolumeGroupSnapshotResponse> {
        self.refuse("GetVolumeGroupSnapshot")
    }
}
