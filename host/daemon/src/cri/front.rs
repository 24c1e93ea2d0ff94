//! The CRI socket: routes each call by its path, either straight through to the runtime or
//! through the hook chain.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};
use wasmgate_engine::Registry;
use wasmgate_engine::bindings::cri_types::{self as wit, Event};
use wasmgate_proto::cri::v1 as pb;

use super::hooks::{Chain, HookError, HookSpec, Hooks};
use super::unknown;
use super::upstream::{Backend, Images, Runtime, Wire};
use super::view::{self, Merged};
use crate::trace::{CallRecord, HookDecision, Trace, now_ms};

const RUNTIME: &str = "runtime.v1.RuntimeService";
const IMAGE: &str = "runtime.v1.ImageService";

/// Method paths as patterns: `runtime!("A" | "B")` matches either method's path. Routing runs
/// on every call, and literals match without formatting a candidate path each time.
macro_rules! runtime {
    ($($m:literal)|+) => {
        $(concat!("/runtime.v1.RuntimeService/", $m))|+
    };
}

macro_rules! image {
    ($($m:literal)|+) => {
        $(concat!("/runtime.v1.ImageService/", $m))|+
    };
}

pub struct CriService {
    backend: Backend,
    /// Where calls go, for messages: `builtin` or the upstream endpoint.
    upstream: String,
    hooks: Hooks,
    trace: Arc<Trace>,
}

/// One call's bookkeeping, for its trace record.
struct Rec {
    method: String,
    ids: BTreeMap<String, String>,
    hooks: Vec<HookDecision>,
    upstream_us: Option<u64>,
    /// The trace key of the ID the runtime's answer carries, for a call that creates a pod or a
    /// container: `--id` must find the call by the ID every later call names.
    returned: Option<&'static str>,
    at_ms: u64,
    started: Instant,
}

impl Rec {
    fn new(method: &str) -> Self {
        Self {
            method: method.to_string(),
            ids: BTreeMap::new(),
            hooks: Vec::new(),
            upstream_us: None,
            returned: None,
            at_ms: now_ms(),
            started: Instant::now(),
        }
    }

    fn id(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            self.ids.insert(key.to_string(), value.to_string());
        }
    }
}

impl CriService {
    pub fn new(
        backend: Backend,
        upstream: String,
        registry: Arc<Registry>,
        hooks: Vec<HookSpec>,
        trace: Arc<Trace>,
    ) -> Self {
        Self {
            backend,
            upstream,
            hooks: Hooks::new(registry, hooks),
            trace,
        }
    }

    fn runtime(&self) -> Runtime {
        self.backend.runtime()
    }

    fn images(&self) -> Images {
        self.backend.images()
    }

    fn record(&self, rec: Rec, status: Option<&Status>) {
        let (ok, code, msg) = match status {
            None => (true, None, None),
            Some(s) if s.code() == Code::Ok => (true, None, None),
            Some(s) => (false, Some(s.code() as u32), Some(s.message().to_string())),
        };
        self.trace.record(CallRecord {
            at_ms: rec.at_ms,
            interface: "cri".into(),
            method: rec.method,
            plugin: None,
            plugin_sha256: None,
            network: None,
            container_id: String::new(),
            ifname: String::new(),
            ids: rec.ids,
            hooks: rec.hooks,
            upstream_us: rec.upstream_us,
            ok,
            code,
            msg,
            elapsed_us: rec.started.elapsed().as_micros() as u64,
        });
    }

    /// Says which runtime a transport failure came from: tonic's own words name neither.
    fn upstream_status(&self, s: Status) -> Status {
        if s.code() == Code::Unavailable
            || s.code() == Code::Unknown && s.message().contains("transport")
        {
            Status::unavailable(format!(
                "runtime {} is unavailable: {}",
                self.upstream,
                s.message()
            ))
        } else {
            s
        }
    }

    /// Forwards the call as it came: bytes in, bytes out, streams and unknown methods included.
    async fn raw(
        self: Arc<Self>,
        req: http::Request<Body>,
        skipped: Vec<HookDecision>,
    ) -> http::Response<Body> {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        let mut rec = Rec::new(method);
        rec.hooks = skipped;
        let key = key_of(req.uri().path());
        rec.returned = key.and_then(Key::returned);
        let req = match key {
            Some(key) => match with_key_id(req, key, &mut rec).await {
                Ok(req) => req,
                Err(status) => {
                    self.record(rec, Some(&status));
                    return status.into_http();
                }
            },
            None => req,
        };
        let out = self.backend.clone().oneshot(req).await;
        rec.upstream_us = Some(rec.started.elapsed().as_micros() as u64);
        match out {
            Ok(resp) => {
                // An error is sent trailers-only, in the headers; a stream's end status is in
                // trailers the proxy does not wait for.
                let status = grpc_status(resp.headers());
                let Some(name) = rec.returned.filter(|_| status.is_none()) else {
                    self.record(rec, status.as_ref());
                    return resp;
                };
                match with_returned_id(resp, name, &mut rec).await {
                    Ok((resp, status)) => {
                        self.record(rec, status.as_ref());
                        resp
                    }
                    Err(s) => {
                        let status = self.upstream_status(s);
                        self.record(rec, Some(&status));
                        status.into_http()
                    }
                }
            }
            Err(e) => {
                let status =
                    Status::unavailable(format!("runtime {} is unavailable: {e}", self.upstream));
                self.record(rec, Some(&status));
                status.into_http()
            }
        }
    }

    /// Decodes the call, runs `f` on it, encodes the answer: the generated servers' unary path.
    async fn typed<Req, Resp, F, Fut>(
        self: Arc<Self>,
        req: http::Request<Body>,
        hooks: Chain,
        f: F,
    ) -> http::Response<Body>
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: FnOnce(Arc<Self>, Chain, Box<Req>, AsSent) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        let type_name = unknown::input_of(req.uri().path()).unwrap_or_default();
        // A unary call is served once, so the handler and its chain are taken, not cloned.
        let mut once = Some((f, hooks));
        let svc = tower::service_fn(move |r: tonic::Request<Kept<Req>>| {
            let (next, me) = (once.take(), self.clone());
            // Boxed: a hooked handler's future is kilobytes (the views, the hook chain, the
            // runtime call), and tonic's layers would move it whole several times a call. The
            // request is boxed for the same reason, once, as it comes out of the decoder.
            async move {
                let (f, hooks) =
                    next.ok_or_else(|| Status::internal("a unary call served twice"))?;
                let Kept(msg, bytes) = r.into_inner();
                let sent = AsSent { bytes, type_name };
                Box::pin(f(me, hooks, msg, sent))
                    .await
                    .map(tonic::Response::new)
            }
        });
        let mut grpc = tonic::server::Grpc::new(KeepCodec::<Resp, Req>::default())
            .apply_max_message_size_config(Some(MAX_MESSAGE), Some(MAX_MESSAGE));
        grpc.unary(svc, req).await
    }

    /// A call some hook subscribes to takes the typed path; every other call, unknown methods
    /// and streams included, is forwarded as it came, which also keeps fields this build's
    /// schema does not know.
    async fn route(self: Arc<Self>, req: http::Request<Body>) -> http::Response<Body> {
        let event = if self.hooks.is_empty() {
            None
        } else {
            hookable(req.uri().path())
        };
        let Some(event) = event else {
            return self.raw(req, Vec::new()).await;
        };
        let hooks = self.hooks.subscribed(event).await;
        if hooks.is_empty() {
            return self.raw(req, hooks.skipped).await;
        }
        match event {
            Event::RunPod => self.typed(req, hooks, Self::run_pod).await,
            Event::StopPod => self.typed(req, hooks, Self::stop_pod).await,
            Event::RemovePod => self.typed(req, hooks, Self::remove_pod).await,
            Event::CreateContainer => self.typed(req, hooks, Self::create_container).await,
            Event::StartContainer => self.typed(req, hooks, Self::start_container).await,
            Event::StopContainer => self.typed(req, hooks, Self::stop_container).await,
            Event::RemoveContainer => self.typed(req, hooks, Self::remove_container).await,
            Event::UpdateContainer => self.typed(req, hooks, Self::update_container).await,
            Event::PullImage => self.typed(req, hooks, Self::pull_image).await,
        }
    }

    /// The hooked path of one call: pre-hooks, the adjusted call, post-hooks, one record.
    #[allow(clippy::too_many_arguments)]
    async fn hooked<Req, Resp, Fut>(
        &self,
        mut rec: Rec,
        mut hooks: Chain,
        view: wit::Request,
        mut req: Box<Req>,
        sent: AsSent,
        apply: impl FnOnce(&Merged, &mut Req) -> Result<(), String>,
        call: impl FnOnce(Box<Req>, Wire) -> Fut,
        id_of: impl Fn(&Resp) -> String,
    ) -> Result<Resp, Status>
    where
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        rec.hooks.append(&mut hooks.skipped);
        let out = async {
            let merged = self
                .hooks
                .pre(&hooks.pre, &view, &mut rec.hooks)
                .await
                .map_err(hook_status)?;
            // The runtime gets what the client sent, with the hooks' adjustments, and nothing
            // less: fields this build's schema does not know are kept, or the call refused.
            let wire = if merged.is_empty() {
                Wire::AsCame(sent.bytes)
            } else {
                apply(&merged, &mut req).map_err(Status::invalid_argument)?;
                let unknown = unknown::unknown_fields(&sent.bytes, sent.type_name)
                    .map_err(|e| Status::failed_precondition(e.to_string()))?;
                Wire::With(unknown.into())
            };
            let started = Instant::now();
            let out = call(req, wire).await.map(tonic::Response::into_inner);
            rec.upstream_us = Some(started.elapsed().as_micros() as u64);
            out.map_err(|s| self.upstream_status(s))
        }
        .await;
        if let (Some(name), Ok(resp)) = (rec.returned, &out) {
            rec.id(name, &id_of(resp));
        }
        if !hooks.post.is_empty() {
            let outcome = match &out {
                Ok(resp) => wit::Outcome::Ok(id_of(resp)),
                Err(s) => wit::Outcome::Failed((s.code() as u32, s.message().to_string())),
            };
            self.hooks
                .post(&hooks.post, &view, &outcome, &mut rec.hooks)
                .await;
        }
        self.record(rec, out.as_ref().err());
        out
    }

    /// The pod a call is about, as the runtime knows it; just its ID if the runtime does not.
    async fn pod_view(&self, id: &str) -> wit::Pod {
        let status = self
            .runtime()
            .pod_sandbox_status(
                Box::new(pb::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_string(),
                    verbose: false,
                }),
                Wire::Typed,
            )
            .await
            .ok()
            .and_then(|r| r.into_inner().status);
        match status {
            Some(s) => view::pod_from_status(&s),
            None => id_only_pod(id),
        }
    }

    /// The container a call is about and its pod, as the runtime lists them.
    async fn container_view(&self, id: &str) -> (wit::Pod, wit::Container) {
        let listed = self
            .runtime()
            .list_containers(
                Box::new(pb::ListContainersRequest {
                    filter: Some(pb::ContainerFilter {
                        id: id.to_string(),
                        ..Default::default()
                    }),
                }),
                Wire::Typed,
            )
            .await
            .ok()
            .and_then(|r| r.into_inner().containers.into_iter().next());
        match listed {
            Some(c) => (
                self.pod_view(&c.pod_sandbox_id).await,
                view::container_from_listing(&c),
            ),
            None => id_only_container(id),
        }
    }

    async fn run_pod(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::RunPodSandboxRequest>,
        sent: AsSent,
    ) -> Result<pb::RunPodSandboxResponse, Status> {
        let mut rec = Rec::new("RunPodSandbox");
        let pod = view::pod_from_config(
            req.config.as_ref().unwrap_or(&Default::default()),
            "",
            &req.runtime_handler,
        );
        rec.id("pod_name", &pod.name);
        rec.id("namespace", &pod.namespace);
        rec.returned = Key::RunPod.returned();
        let mut client = self.runtime();
        let apply = |m: &Merged, r: &mut pb::RunPodSandboxRequest| {
            m.apply_pod(r.config.get_or_insert_with(Default::default));
            Ok(())
        };
        self.hooked(
            rec,
            hooks,
            wit::Request::RunPod(pod),
            req,
            sent,
            apply,
            |r, wire| async move { client.run_pod_sandbox(r, wire).await },
            |r| r.pod_sandbox_id.clone(),
        )
        .await
    }

    /// A call whose request is only a pod's or a container's ID: hooks see it as the runtime
    /// knows it, and may allow or deny.
    #[allow(clippy::too_many_arguments)]
    async fn scoped_call<Req, Resp, Fut>(
        &self,
        method: &str,
        id: String,
        hooks: Chain,
        scope: Scope,
        req: Box<Req>,
        sent: AsSent,
        call: impl FnOnce(Runtime, Box<Req>, Wire) -> Fut,
    ) -> Result<Resp, Status>
    where
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let mut rec = Rec::new(method);
        let view = match scope {
            Scope::Pod(wrap) => {
                rec.id("pod", &id);
                wrap(self.pod_view(&id).await)
            }
            Scope::Container(wrap) => {
                rec.id("container", &id);
                wrap(self.container_view(&id).await)
            }
        };
        let client = self.runtime();
        self.hooked(
            rec,
            hooks,
            view,
            req,
            sent,
            no_adjustment,
            |r, wire| call(client, r, wire),
            move |_| id.clone(),
        )
        .await
    }

    async fn stop_pod(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::StopPodSandboxRequest>,
        sent: AsSent,
    ) -> Result<pb::StopPodSandboxResponse, Status> {
        let id = req.pod_sandbox_id.clone();
        self.scoped_call(
            "StopPodSandbox",
            id,
            hooks,
            Scope::Pod(wit::Request::StopPod),
            req,
            sent,
            |mut c, r, wire| async move { c.stop_pod_sandbox(r, wire).await },
        )
        .await
    }

    async fn remove_pod(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::RemovePodSandboxRequest>,
        sent: AsSent,
    ) -> Result<pb::RemovePodSandboxResponse, Status> {
        let id = req.pod_sandbox_id.clone();
        self.scoped_call(
            "RemovePodSandbox",
            id,
            hooks,
            Scope::Pod(wit::Request::RemovePod),
            req,
            sent,
            |mut c, r, wire| async move { c.remove_pod_sandbox(r, wire).await },
        )
        .await
    }

    async fn start_container(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::StartContainerRequest>,
        sent: AsSent,
    ) -> Result<pb::StartContainerResponse, Status> {
        let id = req.container_id.clone();
        self.scoped_call(
            "StartContainer",
            id,
            hooks,
            Scope::Container(wit::Request::StartContainer),
            req,
            sent,
            |mut c, r, wire| async move { c.start_container(r, wire).await },
        )
        .await
    }

    async fn stop_container(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::StopContainerRequest>,
        sent: AsSent,
    ) -> Result<pb::StopContainerResponse, Status> {
        let id = req.container_id.clone();
        self.scoped_call(
            "StopContainer",
            id,
            hooks,
            Scope::Container(wit::Request::StopContainer),
            req,
            sent,
            |mut c, r, wire| async move { c.stop_container(r, wire).await },
        )
        .await
    }

    async fn remove_container(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::RemoveContainerRequest>,
        sent: AsSent,
    ) -> Result<pb::RemoveContainerResponse, Status> {
        let id = req.container_id.clone();
        self.scoped_call(
            "RemoveContainer",
            id,
            hooks,
            Scope::Container(wit::Request::RemoveContainer),
            req,
            sent,
            |mut c, r, wire| async move { c.remove_container(r, wire).await },
        )
        .await
    }

    async fn create_container(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::CreateContainerRequest>,
        sent: AsSent,
    ) -> Result<pb::CreateContainerResponse, Status> {
        let mut rec = Rec::new("CreateContainer");
        rec.id("pod", &req.pod_sandbox_id);
        let pod = match &req.sandbox_config {
            Some(sc) => view::pod_from_config(sc, &req.pod_sandbox_id, ""),
            None => self.pod_view(&req.pod_sandbox_id).await,
        };
        let container =
            view::container_from_config(req.config.as_ref().unwrap_or(&Default::default()), "");
        rec.id("container_name", &container.name);
        rec.returned = Key::CreateContainer.returned();
        let mut client = self.runtime();
        let apply = |m: &Merged, r: &mut pb::CreateContainerRequest| {
            let c = r.config.get_or_insert_with(Default::default);
            // Only what the hooks broke is theirs to answer for: a request that was invalid
            // before them goes on, for the runtime to refuse in its own words.
            let was_valid = view::validate_container(c).is_ok();
            m.apply_container(c);
            if was_valid {
                view::validate_container(c)
            } else {
                Ok(())
            }
        };
        self.hooked(
            rec,
            hooks,
            wit::Request::CreateContainer((pod, container)),
            req,
            sent,
            apply,
            |r, wire| async move { client.create_container(r, wire).await },
            |r| r.container_id.clone(),
        )
        .await
    }

    async fn update_container(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::UpdateContainerResourcesRequest>,
        sent: AsSent,
    ) -> Result<pb::UpdateContainerResourcesResponse, Status> {
        let mut rec = Rec::new("UpdateContainerResources");
        rec.id("container", &req.container_id);
        let (pod, mut container) = self.container_view(&req.container_id).await;
        container.resources = req.linux.as_ref().map(view::resources);
        let id = req.container_id.clone();
        let mut client = self.runtime();
        let apply = |m: &Merged, r: &mut pb::UpdateContainerResourcesRequest| {
            m.apply_update(r);
            Ok(())
        };
        self.hooked(
            rec,
            hooks,
            wit::Request::UpdateContainer((pod, container)),
            req,
            sent,
            apply,
            |r, wire| async move { client.update_container_resources(r, wire).await },
            move |_| id.clone(),
        )
        .await
    }

    async fn pull_image(
        self: Arc<Self>,
        hooks: Chain,
        req: Box<pb::PullImageRequest>,
        sent: AsSent,
    ) -> Result<pb::PullImageResponse, Status> {
        let mut rec = Rec::new("PullImage");
        let spec = req.image.clone().unwrap_or_default();
        rec.id("image", &spec.image);
        let mut annotations: Vec<_> = spec.annotations.clone().into_iter().collect();
        annotations.sort();
        let view = wit::Request::PullImage(wit::ImageRequest {
            image: spec.image.clone(),
            annotations,
            pod: req
                .sandbox_config
                .as_ref()
                .map(|sc| view::pod_from_config(sc, "", "")),
        });
        let mut client = self.images();
        let apply = |m: &Merged, r: &mut pb::PullImageRequest| {
            m.apply_pull(r);
            Ok(())
        };
        self.hooked(
            rec,
            hooks,
            view,
            req,
            sent,
            apply,
            |r, wire| async move { client.pull_image(r, wire).await },
            |r| r.image_ref.clone(),
        )
        .await
    }
}

/// A container view without asking the runtime: what [`CriService::container_view`] gives for an
/// ID the runtime does not know.
/// Which kind of ID a [`CriService::scoped_call`] names, and how its view becomes a request.
enum Scope {
    Pod(fn(wit::Pod) -> wit::Request),
    Container(fn((wit::Pod, wit::Container)) -> wit::Request),
}

/// What a hook sees of a pod the runtime does not know, or that no hook needs looked up.
fn id_only_pod(id: &str) -> wit::Pod {
    view::pod_from_config(&pb::PodSandboxConfig::default(), id, "")
}

fn id_only_container(id: &str) -> (wit::Pod, wit::Container) {
    (
        id_only_pod(""),
        view::container_from_listing(&pb::Container {
            id: id.to_string(),
            ..Default::default()
        }),
    )
}

/// For calls whose request has nothing a hook could adjust: such a hook may only allow or deny.
fn no_adjustment<R>(_: &Merged, _: &mut R) -> Result<(), String> {
    Ok(())
}

fn hook_status(e: HookError) -> Status {
    let msg = e.to_string();
    match e {
        HookError::Denied { .. } | HookError::Refused(_) => Status::permission_denied(msg),
        HookError::Conflict(_) => Status::failed_precondition(msg),
        HookError::Failed { timeout: true, .. } => Status::deadline_exceeded(msg),
        HookError::Failed { .. } => Status::internal(msg),
    }
}

/// A hooked request's message as the client sent it, and its type in the schema: what keeps the
/// fields this build does not know ([`unknown`]).
struct AsSent {
    bytes: bytes::Bytes,
    type_name: &'static str,
}

/// A decoded request and the bytes it was decoded from.
struct Kept<Req>(Box<Req>, bytes::Bytes);

/// Answers encoded by prost; requests decoded by prost and kept as they came, too.
struct KeepCodec<Resp, Req>(std::marker::PhantomData<(Resp, Req)>);

impl<Resp, Req> Default for KeepCodec<Resp, Req> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<Resp, Req> tonic::codec::Codec for KeepCodec<Resp, Req>
where
    Resp: prost::Message + Send + 'static,
    Req: prost::Message + Default + Send + 'static,
{
    type Encode = Resp;
    type Decode = Kept<Req>;
    type Encoder = tonic_prost::ProstEncoder<Resp>;
    type Decoder = KeepDecoder<Req>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        KeepDecoder(std::marker::PhantomData)
    }
}

struct KeepDecoder<Req>(std::marker::PhantomData<Req>);

impl<Req: prost::Message + Default> tonic::codec::Decoder for KeepDecoder<Req> {
    type Item = Kept<Req>;
    type Error = Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Kept<Req>>, Status> {
        use bytes::Buf;
        let bytes = src.copy_to_bytes(src.remaining());
        // As tonic's prost codec answers a message that does not decode.
        let msg = Req::decode(bytes.clone()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(Kept(Box::new(msg), bytes)))
    }
}

/// The front door, registered under both CRI service names.
#[derive(Clone)]
struct Front<const IMAGE_SERVICE: bool>(Arc<CriService>);

impl NamedService for Front<false> {
    const NAME: &'static str = RUNTIME;
}

impl NamedService for Front<true> {
    const NAME: &'static str = IMAGE;
}

impl<const I: bool> Service<http::Request<Body>> for Front<I> {
    type Response = http::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move { Ok(svc.route(req).await) })
    }
}

/// The largest message decoded on the hooked path, kubelet's own limit for CRI messages; calls
/// forwarded untouched are bounded by the runtime behind us.
const MAX_MESSAGE: usize = 16 << 20;

pub async fn serve(
    incoming: crate::grpc::Incoming,
    svc: Arc<CriService>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(Front::<false>(svc.clone()))
        .add_service(Front::<true>(svc))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The event a hookable method's calls are, by the method's path.
fn hookable(path: &str) -> Option<Event> {
    Some(match path {
        runtime!("RunPodSandbox") => Event::RunPod,
        runtime!("StopPodSandbox") => Event::StopPod,
        runtime!("RemovePodSandbox") => Event::RemovePod,
        runtime!("CreateContainer") => Event::CreateContainer,
        runtime!("StartContainer") => Event::StartContainer,
        runtime!("StopContainer") => Event::StopContainer,
        runtime!("RemoveContainer") => Event::RemoveContainer,
        runtime!("UpdateContainerResources") => Event::UpdateContainer,
        image!("PullImage") => Event::PullImage,
        _ => return None,
    })
}

/// Which IDs a forwarded call names, for its trace record.
#[derive(Clone, Copy)]
enum Key {
    /// Field 1 of the request is the ID kept under this trace key (`pod_sandbox_id`,
    /// `container_id`).
    Field1(&'static str),
    /// Field 1 of the request's field 1 is the ID kept under this trace key (an `ImageSpec`'s
    /// `image`).
    Nested1(&'static str),
    /// The pod's name and namespace, from its config's metadata; the answer names the sandbox.
    RunPod,
    /// The pod, and the container's name from its config's metadata; the answer names the
    /// container.
    CreateContainer,
}

impl Key {
    /// The trace key of the ID in field 1 of the answer: the pod or container the call made,
    /// under the key every later call about it uses.
    fn returned(self) -> Option<&'static str> {
        match self {
            Key::RunPod => Some("pod"),
            Key::CreateContainer => Some("container"),
            Key::Field1(_) | Key::Nested1(_) => None,
        }
    }
}

fn key_of(path: &str) -> Option<Key> {
    Some(match path {
        runtime!("RunPodSandbox") => Key::RunPod,
        runtime!("CreateContainer") => Key::CreateContainer,
        runtime!(
            "StopPodSandbox"
                | "RemovePodSandbox"
                | "PodSandboxStatus"
                | "PodSandboxStats"
                | "PortForward"
                | "UpdatePodSandboxResources"
                | "CheckpointPod"
        ) => Key::Field1("pod"),
        runtime!(
            "StartContainer"
                | "StopContainer"
                | "RemoveContainer"
                | "ContainerStatus"
                | "UpdateContainerResources"
                | "ReopenContainerLog"
                | "ExecSync"
                | "Exec"
                | "Attach"
                | "ContainerStats"
                | "CheckpointContainer"
        ) => Key::Field1("container"),
        image!("PullImage" | "ImageStatus" | "RemoveImage") => Key::Nested1("image"),
        _ => return None,
    })
}

/// Field 1 as a string, every other field skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct Field1 {
    #[prost(string, tag = "1")]
    id: String,
}

/// Field 1 as a message whose field 1 is a string.
#[derive(Clone, PartialEq, prost::Message)]
struct Nested1 {
    #[prost(message, optional, tag = "1")]
    inner: Option<Field1>,
}

/// A pod's or a container's metadata: its name, and a pod's namespace.
#[derive(Clone, PartialEq, prost::Message)]
struct Metadata {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "3")]
    namespace: String,
}

/// A pod's or a container's config, as far as its metadata.
#[derive(Clone, PartialEq, prost::Message)]
struct Config {
    #[prost(message, optional, tag = "1")]
    metadata: Option<Metadata>,
}

/// A RunPodSandboxRequest as far as its pod config.
#[derive(Clone, PartialEq, prost::Message)]
struct RunPod {
    #[prost(message, optional, tag = "1")]
    config: Option<Config>,
}

/// A CreateContainerRequest as far as its pod and container config.
#[derive(Clone, PartialEq, prost::Message)]
struct CreateContainer {
    #[prost(string, tag = "1")]
    pod: String,
    #[prost(message, optional, tag = "2")]
    config: Option<Config>,
}

/// Reads the request whole, notes its IDs in `rec`, and gives back the same request with the
/// same bytes: unary CRI requests are small, and the runtime gets them as they came.
async fn with_key_id(
    req: http::Request<Body>,
    key: Key,
    rec: &mut Rec,
) -> Result<http::Request<Body>, Status> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_MESSAGE + 5)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Status::resource_exhausted(format!(
                    "request too large: the limit is {MAX_MESSAGE} bytes"
                ))
            } else {
                Status::cancelled(format!("reading the request: {e}"))
            }
        })?
        .to_bytes();
    if let Some(msg) = message(&bytes) {
        note_ids(msg, key, rec);
    }
    let body = http_body_util::Full::new(bytes).map_err(|never| match never {});
    Ok(http::Request::from_parts(parts, Body::new(body)))
}

/// Reads a unary answer whole, notes the ID in its field 1 under `name`, and gives back the
/// same answer, with the status its trailers carry: the answers read are one ID each, and the
/// client gets them as they came.
async fn with_returned_id(
    resp: http::Response<Body>,
    name: &str,
    rec: &mut Rec,
) -> Result<(http::Response<Body>, Option<Status>), Status> {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    if let Some(answer) = message(&bytes).and_then(|m| <Field1 as prost::Message>::decode(m).ok()) {
        rec.id(name, &answer.id);
    }
    let status = trailers.as_ref().and_then(grpc_status);
    let body = http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .with_trailers(async move { trailers.map(Ok::<_, Status>) });
    Ok((http::Response::from_parts(parts, Body::new(body)), status))
}

/// The status in a response's headers or trailers, if they carry one.
fn grpc_status(headers: &http::HeaderMap) -> Option<Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let msg = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Some(Status::new(Code::from_i32(code), msg.to_string()))
}

/// The one message of a gRPC body: uncompressed (flag 0), big-endian length, bytes.
fn message(body: &[u8]) -> Option<&[u8]> {
    let (&[flag, a, b, c, d], msg) = body.split_first_chunk::<5>()?;
    if flag != 0 {
        return None;
    }
    msg.get(..u32::from_be_bytes([a, b, c, d]) as usize)
}

/// Notes the IDs a request message names in `rec`.
fn note_ids(msg: &[u8], key: Key, rec: &mut Rec) {
    use prost::Message;
    match key {
        Key::Field1(name) => {
            if let Ok(m) = Field1::decode(msg) {
                rec.id(name, &m.id);
            }
        }
        Key::Nested1(name) => {
            if let Some(inner) = Nested1::decode(msg).ok().and_then(|m| m.inner) {
                rec.id(name, &inner.id);
            }
        }
        Key::RunPod => {
            if let Some(md) = RunPod::decode(msg).ok().and_then(|m| m.config?.metadata) {
                rec.id("pod_name", &md.name);
                rec.id("namespace", &md.namespace);
            }
        }
        Key::CreateContainer => {
            if let Ok(m) = CreateContainer::decode(msg) {
                rec.id("pod", &m.pod);
                if let Some(md) = m.config.and_then(|c| c.metadata) {
                    rec.id("container_name", &md.name);
                }
            }
        }
    }
}
