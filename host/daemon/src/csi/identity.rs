//! csi.v1.Identity.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wasmgate_proto::csi::v1 as pb;

use super::{CsiService, convert};

pub struct Identity(pub Arc<CsiService>);

#[tonic::async_trait]
impl pb::identity_server::Identity for Identity {
    async fn get_plugin_info(
        &self,
        _req: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        let mut call = self.0.call("GetPluginInfo", &[]);
        let out = async {
            let info = call
                .plugin(async |p, store| {
                    p.wasmgate_plugin_identity()
                        .call_get_plugin_info(store)
                        .await
                })
                .await??;
            Ok(pb::GetPluginInfoResponse {
                name: info.name,
                vendor_version: info.vendor_version,
                manifest: info.manifest.into_iter().collect(),
            })
        }
        .await;
        call.finish(out)
    }

    async fn get_plugin_capabilities(
        &self,
        _req: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        let mut call = self.0.call("GetPluginCapabilities", &[]);
        let out = async {
            let caps = call.caps().await?;
            Ok(pb::GetPluginCapabilitiesResponse {
                capabilities: caps
                    .plugin
                    .iter()
                    .map(|c| convert::plugin_cap(*c))
                    .collect(),
            })
        }
        .await;
        call.finish(out)
    }

    async fn probe(
        &self,
        _req: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let mut call = self.0.call("Probe", &[]);
        let out = async {
            let ready = call
                .plugin(async |p, store| p.wasmgate_plugin_identity().call_probe(store).await)
                .await??;
            Ok(pb::ProbeResponse { ready: Some(ready) })
        }
        .await;
        call.finish(out)
    }
}
