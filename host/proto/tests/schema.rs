//! Checks that the compiled schemas are the upstream ones on the wire: packages, services and
//! their RPCs, and the field numbers / enum values that CSI drivers, container runtimes and
//! kubelet rely on.

use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};
use wasmgate_proto::{FILE_DESCRIPTOR_SET, cri, csi, pluginregistration};

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

fn file<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a FileDescriptorProto {
    set.file
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} is in the descriptor set"))
}

fn service<'a>(file: &'a FileDescriptorProto, name: &str) -> &'a ServiceDescriptorProto {
    file.service
        .iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("service {name} exists"))
}

/// Resolves a dotted path of nested messages, e.g. `ListVolumesResponse.Entry`.
fn message<'a>(file: &'a FileDescriptorProto, path: &str) -> &'a DescriptorProto {
    let mut parts = path.split('.');
    let first = parts.next().unwrap();
    let mut msg = file
        .message_type
        .iter()
        .find(|m| m.name() == first)
        .unwrap_or_else(|| panic!("message {first} exists"));
    for part in parts {
        msg = msg
            .nested_type
            .iter()
            .find(|m| m.name() == part)
            .unwrap_or_else(|| panic!("message {path} exists"));
    }
    msg
}

fn field_number(file: &FileDescriptorProto, msg: &str, field: &str) -> i32 {
    message(file, msg)
        .field
        .iter()
        .find(|f| f.name() == field)
        .unwrap_or_else(|| panic!("field {msg}.{field} exists"))
        .number()
}

fn nested_enum<'a>(
    file: &'a FileDescriptorProto,
    msg: &str,
    name: &str,
) -> &'a EnumDescriptorProto {
    message(file, msg)
        .enum_type
        .iter()
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("enum {msg}.{name} exists"))
}

fn enum_values(e: &EnumDescriptorProto) -> Vec<(&str, i32)> {
    e.value.iter().map(|v| (v.name(), v.number())).collect()
}

/// (method, input type, output type, server streaming) for every RPC of a service, in order.
fn methods(svc: &ServiceDescriptorProto) -> Vec<(&str, &str, &str, bool)> {
    svc.method
        .iter()
        .map(|m| {
            (
                m.name(),
                m.input_type(),
                m.output_type(),
                m.server_streaming(),
            )
        })
        .collect()
}

fn unary<'a>(pkg: &str, names: &[&'a str]) -> Vec<(&'a str, String, String, bool)> {
    names
        .iter()
        .map(|n| {
            (
                *n,
                format!(".{pkg}.{n}Request"),
                format!(".{pkg}.{n}Response"),
                false,
            )
        })
        .collect()
}

fn assert_methods(svc: &ServiceDescriptorProto, want: &[(&str, String, String, bool)]) {
    let got = methods(svc);
    let want: Vec<(&str, &str, &str, bool)> = want
        .iter()
        .map(|(n, i, o, s)| (*n, i.as_str(), o.as_str(), *s))
        .collect();
    assert_eq!(got, want, "RPCs of service {}", svc.name());
}

#[test]
fn descriptor_set_is_self_contained() {
    let set = descriptor_set();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    for wanted in [
        "google/protobuf/descriptor.proto",
        "google/protobuf/timestamp.proto",
        "google/protobuf/wrappers.proto",
        "csi/v1/csi.proto",
        "pluginregistration/v1/api.proto",
        "cri/v1/api.proto",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    // Comments are stripped from the exported set to keep it small.
    assert!(set.file.iter().all(|f| f.source_code_info.is_none()));
}

#[test]
fn csi_package_and_imports() {
    let set = descriptor_set();
    let f = file(&set, "csi/v1/csi.proto");
    assert_eq!(f.package(), "csi.v1");
    assert_eq!(f.syntax(), "proto3");
    assert_eq!(
        f.dependency,
        [
            "google/protobuf/descriptor.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/wrappers.proto"
        ]
    );
    assert_eq!(
        f.options.as_ref().and_then(|o| o.go_package.as_deref()),
        Some("github.com/container-storage-interface/spec/lib/go/csi")
    );
    let services: Vec<&str> = f.service.iter().map(|s| s.name()).collect();
    assert_eq!(
        services,
        [
            "Identity",
            "Controller",
            "GroupController",
            "SnapshotMetadata",
            "Node"
        ]
    );
}

#[test]
fn csi_services_have_upstream_rpcs() {
    let set = descriptor_set();
    let f = file(&set, "csi/v1/csi.proto");
    let p = "csi.v1";

    assert_methods(
        service(f, "Identity"),
        &unary(p, &["GetPluginInfo", "GetPluginCapabilities", "Probe"]),
    );
    assert_methods(
        service(f, "Controller"),
        &unary(
            p,
            &[
                "CreateVolume",
                "DeleteVolume",
                "ControllerPublishVolume",
                "ControllerUnpublishVolume",
                "ValidateVolumeCapabilities",
                "ListVolumes",
                "GetCapacity",
                "ControllerGetCapabilities",
                "CreateSnapshot",
                "DeleteSnapshot",
                "ListSnapshots",
                "GetSnapshot",
                "ControllerExpandVolume",
                "ControllerGetVolume",
                "ControllerModifyVolume",
            ],
        ),
    );
    assert_methods(
        service(f, "GroupController"),
        &unary(
            p,
            &[
                "GroupControllerGetCapabilities",
                "CreateVolumeGroupSnapshot",
                "DeleteVolumeGroupSnapshot",
                "GetVolumeGroupSnapshot",
            ],
        ),
    );
    // SnapshotMetadata's RPCs are server-streaming.
    let streaming: Vec<_> = unary(p, &["GetMetadataAllocated", "GetMetadataDelta"])
        .into_iter()
        .map(|(n, i, o, _)| (n, i, o, true))
        .collect();
    assert_methods(service(f, "SnapshotMetadata"), &streaming);
    assert_methods(
        service(f, "Node"),
        &unary(
            p,
            &[
                "NodeStageVolume",
                "NodeUnstageVolume",
                "NodePublishVolume",
                "NodeUnpublishVolume",
                "NodeGetVolumeStats",
                "NodeExpandVolume",
                "NodeGetCapabilities",
                "NodeGetInfo",
            ],
        ),
    );
    assert!(
        f.service
            .iter()
            .flat_map(|s| &s.method)
            .all(|m| !m.client_streaming()),
        "CSI has no client-streaming RPCs"
    );
}

#[test]
fn csi_field_numbers() {
    let set = descriptor_set();
    let f = file(&set, "csi/v1/csi.proto");
    let cases: &[(&str, &str, i32)] = &[
        ("CreateVolumeRequest", "name", 1),
        ("CreateVolumeRequest", "capacity_range", 2),
        ("CreateVolumeRequest", "volume_capabilities", 3),
        ("CreateVolumeRequest", "parameters", 4),
        ("CreateVolumeRequest", "secrets", 5),
        ("CreateVolumeRequest", "volume_content_source", 6),
        ("CreateVolumeRequest", "accessibility_requirements", 7),
        ("CreateVolumeRequest", "mutable_parameters", 8),
        ("CreateVolumeResponse", "volume", 1),
        ("Volume", "capacity_bytes", 1),
        ("Volume", "volume_id", 2),
        ("Volume", "volume_context", 3),
        ("Volume", "content_source", 4),
        ("Volume", "accessible_topology", 5),
        ("VolumeCapability", "block", 1),
        ("VolumeCapability", "mount", 2),
        ("VolumeCapability", "access_mode", 3),
        ("VolumeCapability.MountVolume", "fs_type", 1),
        ("VolumeCapability.MountVolume", "mount_flags", 2),
        ("VolumeCapability.MountVolume", "volume_mount_group", 3),
        ("ControllerPublishVolumeRequest", "volume_id", 1),
        ("ControllerPublishVolumeRequest", "node_id", 2),
        ("ControllerPublishVolumeRequest", "volume_capability", 3),
        ("ControllerPublishVolumeRequest", "readonly", 4),
        ("ControllerPublishVolumeRequest", "volume_context", 6),
        ("ControllerPublishVolumeResponse", "publish_context", 1),
        ("ControllerModifyVolumeRequest", "volume_id", 1),
        ("ControllerModifyVolumeRequest", "secrets", 2),
        ("ControllerModifyVolumeRequest", "mutable_parameters", 3),
        ("NodeStageVolumeRequest", "volume_id", 1),
        ("NodeStageVolumeRequest", "publish_context", 2),
        ("NodeStageVolumeRequest", "staging_target_path", 3),
        ("NodeStageVolumeRequest", "volume_capability", 4),
        ("NodeStageVolumeRequest", "secrets", 5),
        ("NodeStageVolumeRequest", "volume_context", 6),
        ("NodeUnstageVolumeRequest", "staging_target_path", 2),
        ("NodePublishVolumeRequest", "volume_id", 1),
        ("NodePublishVolumeRequest", "publish_context", 2),
        ("NodePublishVolumeRequest", "staging_target_path", 3),
        ("NodePublishVolumeRequest", "target_path", 4),
        ("NodePublishVolumeRequest", "volume_capability", 5),
        ("NodePublishVolumeRequest", "readonly", 6),
        ("NodePublishVolumeRequest", "secrets", 7),
        ("NodePublishVolumeRequest", "volume_context", 8),
        ("NodeUnpublishVolumeRequest", "target_path", 2),
        ("NodeGetInfoResponse", "node_id", 1),
        ("NodeGetInfoResponse", "max_volumes_per_node", 2),
        ("NodeGetInfoResponse", "accessible_topology", 3),
        ("NodeExpandVolumeRequest", "secrets", 6),
        ("ProbeResponse", "ready", 1),
        ("Snapshot", "creation_time", 4),
        ("Snapshot", "group_snapshot_id", 6),
        ("GetCapacityResponse", "minimum_volume_size", 3),
    ];
    for (msg, field, want) in cases {
        assert_eq!(field_number(f, msg, field), *want, "{msg}.{field}");
    }
    // Well-known types keep their google.protobuf names.
    let ready = message(f, "ProbeResponse")
        .field
        .iter()
        .find(|x| x.name() == "ready")
        .unwrap();
    assert_eq!(ready.type_name(), ".google.protobuf.BoolValue");
}

#[test]
fn csi_enums() {
    let set = descriptor_set();
    let f = file(&set, "csi/v1/csi.proto");
    assert_eq!(
        enum_values(nested_enum(f, "VolumeCapability.AccessMode", "Mode")),
        [
            ("UNKNOWN", 0),
            ("SINGLE_NODE_WRITER", 1),
            ("SINGLE_NODE_READER_ONLY", 2),
            ("MULTI_NODE_READER_ONLY", 3),
            ("MULTI_NODE_SINGLE_WRITER", 4),
            ("MULTI_NODE_MULTI_WRITER", 5),
            ("SINGLE_NODE_SINGLE_WRITER", 6),
            ("SINGLE_NODE_MULTI_WRITER", 7),
        ]
    );
    assert_eq!(
        enum_values(nested_enum(f, "ControllerServiceCapability.RPC", "Type")),
        [
            ("UNKNOWN", 0),
            ("CREATE_DELETE_VOLUME", 1),
            ("PUBLISH_UNPUBLISH_VOLUME", 2),
            ("LIST_VOLUMES", 3),
            ("GET_CAPACITY", 4),
            ("CREATE_DELETE_SNAPSHOT", 5),
            ("LIST_SNAPSHOTS", 6),
            ("CLONE_VOLUME", 7),
            ("PUBLISH_READONLY", 8),
            ("EXPAND_VOLUME", 9),
            ("LIST_VOLUMES_PUBLISHED_NODES", 10),
            ("VOLUME_CONDITION", 11),
            ("GET_VOLUME", 12),
            ("SINGLE_NODE_MULTI_WRITER", 13),
            ("MODIFY_VOLUME", 14),
            ("GET_SNAPSHOT", 15),
        ]
    );
    assert_eq!(
        enum_values(nested_enum(f, "NodeServiceCapability.RPC", "Type")),
        [
            ("UNKNOWN", 0),
            ("STAGE_UNSTAGE_VOLUME", 1),
            ("GET_VOLUME_STATS", 2),
            ("EXPAND_VOLUME", 3),
            ("VOLUME_CONDITION", 4),
            ("SINGLE_NODE_MULTI_WRITER", 5),
            ("VOLUME_MOUNT_GROUP", 6),
        ]
    );
    assert_eq!(
        enum_values(nested_enum(f, "PluginCapability.Service", "Type")),
        [
            ("UNKNOWN", 0),
            ("CONTROLLER_SERVICE", 1),
            ("VOLUME_ACCESSIBILITY_CONSTRAINTS", 2),
            ("GROUP_CONTROLLER_SERVICE", 3),
            ("SNAPSHOT_METADATA_SERVICE", 4),
        ]
    );
}

#[test]
fn csi_custom_options_are_declared_and_preserved() {
    let set = descriptor_set();
    let f = file(&set, "csi/v1/csi.proto");
    let ext: Vec<(&str, i32, &str)> = f
        .extension
        .iter()
        .map(|e| (e.name(), e.number(), e.extendee()))
        .collect();
    assert_eq!(
        ext,
        [
            ("alpha_enum", 1060, ".google.protobuf.EnumOptions"),
            (
                "alpha_enum_value",
                1060,
                ".google.protobuf.EnumValueOptions"
            ),
            ("csi_secret", 1059, ".google.protobuf.FieldOptions"),
            ("alpha_field", 1060, ".google.protobuf.FieldOptions"),
            ("alpha_message", 1060, ".google.protobuf.MessageOptions"),
            ("alpha_method", 1060, ".google.protobuf.MethodOptions"),
            ("alpha_service", 1060, ".google.protobuf.ServiceOptions"),
        ]
    );
    // `[(csi_secret) = true]` is field 1059, varint 1: bytes 98 42 01 inside FieldOptions.
    // prost_types drops extension values on decode, so look for them in the raw bytes.
    assert!(
        FILE_DESCRIPTOR_SET
            .windows(3)
            .any(|w| w == [0x98, 0x42, 0x01]),
        "csi_secret option values are kept in FILE_DESCRIPTOR_SET"
    );
}

#[test]
fn pluginregistration_schema() {
    let set = descriptor_set();
    let f = file(&set, "pluginregistration/v1/api.proto");
    assert_eq!(f.package(), "pluginregistration");
    assert_eq!(f.syntax(), "proto3");
    assert!(
        f.dependency.is_empty(),
        "no gogo.proto import: {:?}",
        f.dependency
    );
    let services: Vec<&str> = f.service.iter().map(|s| s.name()).collect();
    assert_eq!(services, ["Registration"]);
    let reg = service(f, "Registration");
    let p = "pluginregistration";
    assert_methods(
        reg,
        &[
            (
                "GetInfo",
                format!(".{p}.InfoRequest"),
                format!(".{p}.PluginInfo"),
                false,
            ),
            (
                "NotifyRegistrationStatus",
                format!(".{p}.RegistrationStatus"),
                format!(".{p}.RegistrationStatusResponse"),
                false,
            ),
        ],
    );
    let cases: &[(&str, &str, i32)] = &[
        ("PluginInfo", "type", 1),
        ("PluginInfo", "name", 2),
        ("PluginInfo", "endpoint", 3),
        ("PluginInfo", "supported_versions", 4),
        ("RegistrationStatus", "plugin_registered", 1),
        ("RegistrationStatus", "error", 2),
    ];
    for (msg, field, want) in cases {
        assert_eq!(field_number(f, msg, field), *want, "{msg}.{field}");
    }
    assert!(message(f, "InfoRequest").field.is_empty());
    assert!(message(f, "RegistrationStatusResponse").field.is_empty());
}

/// The generated Rust types put the same bytes on the wire as upstream's Go bindings would.
#[test]
fn generated_types_encode_upstream_wire_format() {
    let req = csi::v1::NodePublishVolumeRequest {
        volume_id: "v".into(),
        staging_target_path: "/s".into(),
        target_path: "/t".into(),
        readonly: true,
        ..Default::default()
    };
    assert_eq!(
        req.encode_to_vec(),
        [
            0x0a, 1, b'v', // 1: volume_id
            0x1a, 2, b'/', b's', // 3: staging_target_path
            0x22, 2, b'/', b't', // 4: target_path
            0x30, 1, // 6: readonly
        ]
    );

    let cap = csi::v1::VolumeCapability {
        access_mode: Some(csi::v1::volume_capability::AccessMode {
            mode: csi::v1::volume_capability::access_mode::Mode::SingleNodeMultiWriter as i32,
        }),
        access_type: Some(csi::v1::volume_capability::AccessType::Mount(
            csi::v1::volume_capability::MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            },
        )),
    };
    let bytes = cap.encode_to_vec();
    assert_eq!(
        bytes,
        [0x12, 6, 0x0a, 4, b'e', b'x', b't', b'4', 0x1a, 2, 0x08, 7] // mount=2{fs_type=1}, access_mode=3{mode=1:7}
    );
    assert_eq!(csi::v1::VolumeCapability::decode(&bytes[..]).unwrap(), cap);

    let info = pluginregistration::PluginInfo {
        r#type: "CSIPlugin".into(),
        name: "n".into(),
        endpoint: "/e".into(),
        supported_versions: vec!["1.0.0".into()],
    };
    let mut want = vec![0x0a, 9];
    want.extend_from_slice(b"CSIPlugin");
    want.extend_from_slice(&[0x12, 1, b'n', 0x1a, 2, b'/', b'e', 0x22, 5]);
    want.extend_from_slice(b"1.0.0");
    assert_eq!(info.encode_to_vec(), want);
}

/// The client/server modules exist under the documented paths and the servers can wrap an
/// implementation of the generated traits.
#[test]
fn client_and_server_paths() {
    use csi::v1::identity_server::{Identity, IdentityServer};
    use pluginregistration::registration_server::{Registration, RegistrationServer};
    use tonic::{Request, Response, Status};

    struct Plugin;

    #[tonic::async_trait]
    impl Identity for Plugin {
        async fn get_plugin_info(
            &self,
            _: Request<csi::v1::GetPluginInfoRequest>,
        ) -> Result<Response<csi::v1::GetPluginInfoResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn get_plugin_capabilities(
            &self,
            _: Request<csi::v1::GetPluginCapabilitiesRequest>,
        ) -> Result<Response<csi::v1::GetPluginCapabilitiesResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn probe(
            &self,
            _: Request<csi::v1::ProbeRequest>,
        ) -> Result<Response<csi::v1::ProbeResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    #[tonic::async_trait]
    impl Registration for Plugin {
        async fn get_info(
            &self,
            _: Request<pluginregistration::InfoRequest>,
        ) -> Result<Response<pluginregistration::PluginInfo>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn notify_registration_status(
            &self,
            _: Request<pluginregistration::RegistrationStatus>,
        ) -> Result<Response<pluginregistration::RegistrationStatusResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    use tonic::server::NamedService;
    assert_eq!(
        <IdentityServer<Plugin> as NamedService>::NAME,
        "csi.v1.Identity"
    );
    assert_eq!(
        <csi::v1::node_server::NodeServer<()> as NamedService>::NAME,
        "csi.v1.Node"
    );
    assert_eq!(
        <csi::v1::controller_server::ControllerServer<()> as NamedService>::NAME,
        "csi.v1.Controller"
    );
    assert_eq!(
        <RegistrationServer<Plugin> as NamedService>::NAME,
        "pluginregistration.Registration"
    );
    let _identity = IdentityServer::new(Plugin);
    let _registration = RegistrationServer::new(Plugin);
    // Client types exist (constructing one needs a channel; naming the type is enough here).
    let _: Option<csi::v1::node_client::NodeClient<tonic::transport::Channel>> = None;
    let _: Option<
        pluginregistration::registration_client::RegistrationClient<tonic::transport::Channel>,
    > = None;
    assert!(!wasmgate_proto::CSI_SPEC_VERSION.is_empty());
}

// ---------------------------------------------------------------------------------------------
// CRI (package runtime.v1, proto/cri/v1/api.proto)
// ---------------------------------------------------------------------------------------------

const CRI: &str = "cri/v1/api.proto";

fn top_enum<'a>(file: &'a FileDescriptorProto, name: &str) -> &'a EnumDescriptorProto {
    file.enum_type
        .iter()
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("enum {name} exists"))
}

/// `(rpc, server_streaming)` → the expected method tuple, with upstream's
/// `<Rpc>Request` / `<Rpc>Response` naming.
fn rpcs<'a>(pkg: &str, list: &[(&'a str, bool)]) -> Vec<(&'a str, String, String, bool)> {
    list.iter()
        .map(|(n, streaming)| {
            (
                *n,
                format!(".{pkg}.{n}Request"),
                format!(".{pkg}.{n}Response"),
                *streaming,
            )
        })
        .collect()
}

const STREAM: bool = true;
const UNARY: bool = false;

#[test]
fn cri_package_and_services() {
    let set = descriptor_set();
    let f = file(&set, CRI);
    assert_eq!(f.package(), "runtime.v1");
    assert_eq!(f.syntax(), "proto3");
    assert!(
        f.dependency.is_empty(),
        "no imports (no gogo.proto): {:?}",
        f.dependency
    );
    assert_eq!(
        f.options.as_ref().and_then(|o| o.go_package.as_deref()),
        Some("k8s.io/cri-api/pkg/apis/runtime/v1")
    );
    let services: Vec<&str> = f.service.iter().map(|s| s.name()).collect();
    assert_eq!(services, ["RuntimeService", "ImageService"]);
}

#[test]
fn cri_runtime_service_has_upstream_rpcs() {
    let set = descriptor_set();
    let f = file(&set, CRI);
    let p = "runtime.v1";
    let mut want = rpcs(
        p,
        &[
            ("Version", UNARY),
            ("RunPodSandbox", UNARY),
            ("StopPodSandbox", UNARY),
            ("RemovePodSandbox", UNARY),
            ("PodSandboxStatus", UNARY),
            ("ListPodSandbox", UNARY),
            ("StreamPodSandboxes", STREAM),
            ("CreateContainer", UNARY),
            ("StartContainer", UNARY),
            ("StopContainer", UNARY),
            ("RemoveContainer", UNARY),
            ("ListContainers", UNARY),
            ("StreamContainers", STREAM),
            ("ContainerStatus", UNARY),
            ("UpdateContainerResources", UNARY),
            ("ReopenContainerLog", UNARY),
            ("ExecSync", UNARY),
            ("Exec", UNARY),
            ("Attach", UNARY),
            ("PortForward", UNARY),
            ("ContainerStats", UNARY),
            ("ListContainerStats", UNARY),
            ("StreamContainerStats", STREAM),
            ("PodSandboxStats", UNARY),
            ("ListPodSandboxStats", UNARY),
            ("StreamPodSandboxStats", STREAM),
            ("UpdateRuntimeConfig", UNARY),
            ("Status", UNARY),
            ("CheckpointContainer", UNARY),
            ("CheckpointPod", UNARY),
            ("RestorePod", UNARY),
            ("GetContainerEvents", STREAM), // types fixed up below
            ("ListMetricDescriptors", UNARY),
            ("ListPodSandboxMetrics", UNARY),
            ("StreamPodSandboxMetrics", STREAM),
            ("RuntimeConfig", UNARY),
            ("UpdatePodSandboxResources", UNARY),
        ],
    );
    // The one RPC that does not follow the <Rpc>Request/<Rpc>Response naming.
    let events = want
        .iter_mut()
        .find(|m| m.0 == "GetContainerEvents")
        .unwrap();
    events.1 = format!(".{p}.GetEventsRequest");
    events.2 = format!(".{p}.ContainerEventResponse");
    assert_eq!(want.len(), 37);
    let svc = service(f, "RuntimeService");
    assert_methods(svc, &want);

    let streaming: Vec<&str> = svc
        .method
        .iter()
        .filter(|m| m.server_streaming())
        .map(|m| m.name())
        .collect();
    assert_eq!(
        streaming,
        [
            "StreamPodSandboxes",
            "StreamContainers",
            "StreamContainerStats",
            "StreamPodSandboxStats",
            "GetContainerEvents",
            "StreamPodSandboxMetrics",
        ]
    );
}

#[test]
fn cri_image_service_has_upstream_rpcs() {
    let set = descriptor_set();
    let f = file(&set, CRI);
    assert_methods(
        service(f, "ImageService"),
        &rpcs(
            "runtime.v1",
            &[
                ("ListImages", UNARY),
                ("StreamImages", STREAM),
                ("ImageStatus", UNARY),
                ("PullImage", UNARY),
                ("RemoveImage", UNARY),
                ("ImageFsInfo", UNARY),
            ],
        ),
    );
    assert!(
        f.service
            .iter()
            .flat_map(|s| &s.method)
            .all(|m| !m.client_streaming()),
        "CRI has no client-streaming RPCs"
    );
}

#[test]
fn cri_field_numbers() {
    let set = descriptor_set();
    let f = file(&set, CRI);
    let cases: &[(&str, &str, i32)] = &[
        ("VersionResponse", "runtime_api_version", 4),
        ("RunPodSandboxRequest", "config", 1),
        ("RunPodSandboxRequest", "runtime_handler", 2),
        ("RunPodSandboxResponse", "pod_sandbox_id", 1),
        ("PodSandboxMetadata", "name", 1),
        ("PodSandboxMetadata", "uid", 2),
        ("PodSandboxMetadata", "namespace", 3),
        ("PodSandboxMetadata", "attempt", 4),
        ("PodSandboxConfig", "metadata", 1),
        ("PodSandboxConfig", "hostname", 2),
        ("PodSandboxConfig", "log_directory", 3),
        ("PodSandboxConfig", "dns_config", 4),
        ("PodSandboxConfig", "port_mappings", 5),
        ("PodSandboxConfig", "labels", 6),
        ("PodSandboxConfig", "annotations", 7),
        ("PodSandboxConfig", "linux", 8),
        ("PodSandboxConfig", "windows", 9),
        ("LinuxPodSandboxConfig", "cgroup_parent", 1),
        ("LinuxPodSandboxConfig", "security_context", 2),
        ("LinuxPodSandboxConfig", "resources", 5),
        ("LinuxSandboxSecurityContext", "run_as_group", 8),
        (
            "LinuxSandboxSecurityContext",
            "supplemental_groups_policy",
            11,
        ),
        ("CreateContainerRequest", "pod_sandbox_id", 1),
        ("CreateContainerRequest", "config", 2),
        ("CreateContainerRequest", "sandbox_config", 3),
        ("CreateContainerResponse", "container_id", 1),
        ("ContainerConfig", "metadata", 1),
        ("ContainerConfig", "image", 2),
        ("ContainerConfig", "command", 3),
        ("ContainerConfig", "args", 4),
        ("ContainerConfig", "working_dir", 5),
        ("ContainerConfig", "envs", 6),
        ("ContainerConfig", "mounts", 7),
        ("ContainerConfig", "devices", 8),
        ("ContainerConfig", "labels", 9),
        ("ContainerConfig", "annotations", 10),
        ("ContainerConfig", "log_path", 11),
        ("ContainerConfig", "stdin", 12),
        ("ContainerConfig", "stdin_once", 13),
        ("ContainerConfig", "tty", 14),
        ("ContainerConfig", "linux", 15),
        ("ContainerConfig", "windows", 16),
        ("ContainerConfig", "CDI_devices", 17),
        ("ContainerConfig", "stop_signal", 18),
        ("KeyValue", "key", 1),
        ("KeyValue", "value", 2),
        ("Mount", "container_path", 1),
        ("Mount", "host_path", 2),
        ("Mount", "readonly", 3),
        ("Mount", "propagation", 5),
        ("Mount", "uidMappings", 6),
        ("Mount", "gidMappings", 7),
        ("Mount", "recursive_read_only", 8),
        ("Mount", "image", 9),
        ("Mount", "image_sub_path", 10),
        ("Mount", "mount_options", 11),
        ("LinuxContainerConfig", "resources", 1),
        ("LinuxContainerConfig", "security_context", 2),
        ("LinuxContainerSecurityContext", "privileged", 2),
        ("LinuxContainerSecurityContext", "run_as_user", 5),
        ("LinuxContainerSecurityContext", "run_as_group", 12),
        ("LinuxContainerSecurityContext", "seccomp", 15),
        (
            "LinuxContainerSecurityContext",
            "supplemental_groups_policy",
            17,
        ),
        ("LinuxContainerResources", "memory_limit_in_bytes", 4),
        ("LinuxContainerResources", "unified", 9),
        ("LinuxContainerResources", "memory_swap_limit_in_bytes", 10),
        ("ImageSpec", "image", 1),
        ("ImageSpec", "annotations", 2),
        ("ImageSpec", "user_specified_image", 18),
        ("ImageSpec", "runtime_handler", 19),
        ("ImageSpec", "image_ref", 20),
        ("ContainerStatus", "state", 3),
        ("ContainerStatus", "exit_code", 7),
        ("ContainerStatus", "image_id", 17),
        ("ContainerStatus", "user", 18),
        ("ContainerStatus", "stop_signal", 19),
        ("PodSandboxStatusResponse", "containers_statuses", 3),
        ("PodSandboxStatusResponse", "timestamp", 4),
        ("ExecSyncResponse", "stdout", 1),
        ("ExecSyncResponse", "stderr", 2),
        ("ExecSyncResponse", "exit_code", 3),
        ("ExecRequest", "stderr", 6),
        ("AttachRequest", "stderr", 5),
        ("PullImageRequest", "sandbox_config", 3),
        ("PullImageResponse", "image_ref", 1),
        ("AuthConfig", "registry_token", 6),
        ("RuntimeFeatures", "supplemental_groups_policy", 1),
        ("RuntimeFeatures", "user_namespaces_host_network", 2),
        ("RuntimeFeatures", "mount_options", 3),
        ("StatusResponse", "features", 4),
        ("ContainerStats", "io", 6),
        ("ContainerEventResponse", "container_id", 1),
        ("ContainerEventResponse", "container_event_type", 2),
        ("ContainerEventResponse", "created_at", 3),
        ("ContainerEventResponse", "pod_sandbox_status", 4),
        ("ContainerEventResponse", "containers_statuses", 5),
        // CRIListStreaming (KEP-5825): every Stream* request carries the List* filter as field 1,
        // every response a repeated field 1.
        ("StreamPodSandboxesRequest", "filter", 1),
        ("StreamPodSandboxesResponse", "pod_sandboxes", 1),
        ("StreamContainersRequest", "filter", 1),
        ("StreamContainersResponse", "containers", 1),
        ("StreamContainerStatsRequest", "filter", 1),
        ("StreamContainerStatsResponse", "container_stats", 1),
        ("StreamPodSandboxStatsRequest", "filter", 1),
        ("StreamPodSandboxStatsResponse", "pod_sandbox_stats", 1),
        ("StreamPodSandboxMetricsResponse", "pod_sandbox_metrics", 1),
        ("StreamImagesRequest", "filter", 1),
        ("StreamImagesResponse", "images", 1),
        // Pod-level checkpoint/restore (KEP-5823).
        ("CheckpointPodRequest", "pod_sandbox_id", 1),
        ("CheckpointPodRequest", "output_path", 2),
        ("CheckpointPodRequest", "container_ids", 3),
        ("CheckpointPodRequest", "options", 4),
        ("RestorePodRequest", "checkpoint_path", 1),
        ("RestorePodRequest", "config", 2),
        ("RestorePodRequest", "runtime_handler", 3),
        ("RestorePodRequest", "options", 4),
        ("RestorePodRequest", "container_configs", 5),
        ("RestoredContainer", "name", 1),
        ("RestoredContainer", "container_id", 2),
        ("RestorePodResponse", "pod_sandbox_id", 1),
        ("RestorePodResponse", "restored_containers", 2),
    ];
    for (msg, field, want) in cases {
        assert_eq!(field_number(f, msg, field), *want, "{msg}.{field}");
    }

    let field = |msg: &str, name: &str| {
        message(f, msg)
            .field
            .iter()
            .find(|x| x.name() == name)
            .unwrap()
            .clone()
    };
    use prost_types::field_descriptor_proto::{Label, Type};
    // KeyValue.value is `bytes` since kubernetes/kubernetes#139168 (same wire type as string).
    assert_eq!(field("KeyValue", "value").r#type(), Type::Bytes);
    assert_eq!(field("ContainerConfig", "envs").label(), Label::Repeated);
    assert_eq!(
        field("ContainerConfig", "envs").type_name(),
        ".runtime.v1.KeyValue"
    );
    assert_eq!(
        field("ContainerConfig", "mounts").type_name(),
        ".runtime.v1.Mount"
    );
    assert_eq!(
        field("ContainerConfig", "linux").type_name(),
        ".runtime.v1.LinuxContainerConfig"
    );
    assert_eq!(
        field("ContainerConfig", "stop_signal").type_name(),
        ".runtime.v1.Signal"
    );
    assert_eq!(field("PsiStats", "Full").number(), 1);
    assert_eq!(field("PsiData", "Avg300").r#type(), Type::Double);

    // Fields that are NOT in upstream: the unmerged audit_request_id (kubernetes/kubernetes
    // #138752) and cgroup_mount_mode (#139824).
    let numbers =
        |msg: &str| -> Vec<i32> { message(f, msg).field.iter().map(|x| x.number()).collect() };
    assert_eq!(numbers("ExecRequest"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(numbers("AttachRequest"), [1, 2, 3, 4, 5]);
    assert_eq!(numbers("RuntimeFeatures"), [1, 2, 3]);
    assert!(
        !message(f, "LinuxContainerSecurityContext")
            .field
            .iter()
            .any(|x| x.number() == 18)
    );
    assert!(message(f, "GetEventsRequest").field.is_empty());
    assert!(
        message(f, "StreamPodSandboxMetricsRequest")
            .field
            .is_empty()
    );
    assert!(message(f, "CheckpointPodResponse").field.is_empty());

    // Field options survive: deprecated fields, and debug_redact on the registry secrets.
    for (msg, name) in [
        ("LinuxSandboxSecurityContext", "seccomp_profile_path"),
        ("LinuxContainerSecurityContext", "apparmor_profile"),
        ("LinuxContainerSecurityContext", "seccomp_profile_path"),
    ] {
        let opts = field(msg, name).options.unwrap_or_default();
        assert_eq!(opts.deprecated, Some(true), "{msg}.{name} is deprecated");
    }
    // `[debug_redact = true]` is FieldOptions field 16 (varint 1), inside FieldDescriptorProto
    // field 8 (options): 42 03 80 01 01. prost_types' FieldOptions predates debug_redact, so
    // look in the raw bytes: AuthConfig's password, auth, identity_token and registry_token.
    let redacted = FILE_DESCRIPTOR_SET
        .windows(5)
        .filter(|w| *w == [0x42, 0x03, 0x80, 0x01, 0x01])
        .count();
    assert_eq!(
        redacted, 4,
        "debug_redact options kept in FILE_DESCRIPTOR_SET"
    );
}

#[test]
fn cri_enums() {
    let set = descriptor_set();
    let f = file(&set, CRI);
    assert_eq!(
        enum_values(top_enum(f, "Protocol")),
        [("TCP", 0), ("UDP", 1), ("SCTP", 2)]
    );
    assert_eq!(
        enum_values(top_enum(f, "MountPropagation")),
        [
            ("PROPAGATION_PRIVATE", 0),
            ("PROPAGATION_HOST_TO_CONTAINER", 1),
            ("PROPAGATION_BIDIRECTIONAL", 2),
        ]
    );
    assert_eq!(
        enum_values(top_enum(f, "NamespaceMode")),
        [("POD", 0), ("CONTAINER", 1), ("NODE", 2), ("TARGET", 3)]
    );
    assert_eq!(
        enum_values(top_enum(f, "SupplementalGroupsPolicy")),
        [("Merge", 0), ("Strict", 1)]
    );
    assert_eq!(
        enum_values(top_enum(f, "PodSandboxState")),
        [("SANDBOX_READY", 0), ("SANDBOX_NOTREADY", 1)]
    );
    assert_eq!(
        enum_values(top_enum(f, "ContainerState")),
        [
            ("CONTAINER_CREATED", 0),
            ("CONTAINER_RUNNING", 1),
            ("CONTAINER_EXITED", 2),
            ("CONTAINER_UNKNOWN", 3),
        ]
    );
    assert_eq!(
        enum_values(top_enum(f, "ContainerEventType")),
        [
            ("CONTAINER_CREATED_EVENT", 0),
            ("CONTAINER_STARTED_EVENT", 1),
            ("CONTAINER_STOPPED_EVENT", 2),
            ("CONTAINER_DELETED_EVENT", 3),
        ]
    );
    assert_eq!(
        enum_values(top_enum(f, "MetricType")),
        [("COUNTER", 0), ("GAUGE", 1)]
    );
    assert_eq!(
        enum_values(top_enum(f, "CgroupDriver")),
        [("SYSTEMD", 0), ("CGROUPFS", 1)]
    );
    assert_eq!(
        enum_values(nested_enum(f, "SecurityProfile", "ProfileType")),
        [("RuntimeDefault", 0), ("Unconfined", 1), ("Localhost", 2)]
    );
    // Signal: 66 values, SIGNAL_-prefixed since kubernetes/kubernetes#139251 (wire unchanged).
    let signal = enum_values(top_enum(f, "Signal"));
    assert_eq!(signal.len(), 66);
    assert!(
        signal
            .iter()
            .enumerate()
            .all(|(i, (n, v))| *v == i as i32 && n.starts_with("SIGNAL_"))
    );
    for (name, value) in [
        ("SIGNAL_RUNTIME_DEFAULT", 0),
        ("SIGNAL_SIGABRT", 1),
        ("SIGNAL_SIGHUP", 8),
        ("SIGNAL_SIGKILL", 13),
        ("SIGNAL_SIGTERM", 23),
        ("SIGNAL_SIGUSR1", 29),
        ("SIGNAL_SIGRTMIN", 35),
        ("SIGNAL_SIGRTMINPLUS15", 50),
        ("SIGNAL_SIGRTMAXMINUS14", 51),
        ("SIGNAL_SIGRTMAX", 65),
    ] {
        assert!(signal.contains(&(name, value)), "{name} = {value}");
    }
    let enums: Vec<&str> = f.enum_type.iter().map(|e| e.name()).collect();
    assert!(
        !enums.contains(&"CgroupMountMode"),
        "unmerged #139824 left out"
    );
}

/// The generated CRI types put upstream's bytes on the wire.
#[test]
fn cri_types_encode_upstream_wire_format() {
    use cri::v1 as c;

    let run = c::RunPodSandboxRequest {
        config: Some(c::PodSandboxConfig {
            metadata: Some(c::PodSandboxMetadata {
                name: "n".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 2,
            }),
            ..Default::default()
        }),
        runtime_handler: "wasm".into(),
    };
    assert_eq!(
        run.encode_to_vec(),
        [
            0x0a, 14, // 1: config
            0x0a, 12, // config.1: metadata
            0x0a, 1, b'n', // name=1
            0x12, 1, b'u', // uid=2
            0x1a, 2, b'n', b's', // namespace=3
            0x20, 2, // attempt=4
            0x12, 4, b'w', b'a', b's', b'm', // 2: runtime_handler
        ]
    );

    let create = c::CreateContainerRequest {
        pod_sandbox_id: "p".into(),
        config: Some(c::ContainerConfig {
            metadata: Some(c::ContainerMetadata {
                name: "c".into(),
                attempt: 1,
            }),
            // Not valid UTF-8: allowed since KeyValue.value became `bytes`.
            envs: vec![c::KeyValue {
                key: "K".into(),
                value: vec![0xff],
            }],
            stop_signal: c::Signal::Sigterm as i32,
            ..Default::default()
        }),
        sandbox_config: None,
    };
    let bytes = create.encode_to_vec();
    assert_eq!(
        bytes,
        [
            0x0a, 1, b'p', // 1: pod_sandbox_id
            0x12, 18, // 2: config
            0x0a, 5, 0x0a, 1, b'c', 0x10, 1, // config.1: metadata {name, attempt}
            0x32, 6, 0x0a, 1, b'K', 0x12, 1, 0xff, // config.6: envs {key, value}
            0x90, 0x01, 23, // config.18: stop_signal = SIGNAL_SIGTERM
        ]
    );
    assert_eq!(
        c::CreateContainerRequest::decode(&bytes[..]).unwrap(),
        create
    );

    let listed = c::StreamContainersResponse {
        containers: vec![c::Container {
            id: "x".into(),
            state: c::ContainerState::ContainerRunning as i32,
            ..Default::default()
        }],
    };
    assert_eq!(
        listed.encode_to_vec(),
        [0x0a, 5, 0x0a, 1, b'x', 0x30, 1] // 1: containers {id=1, state=6}
    );

    let restored = c::RestorePodResponse {
        pod_sandbox_id: "s".into(),
        restored_containers: vec![c::RestoredContainer {
            name: "a".into(),
            container_id: "i".into(),
        }],
    };
    assert_eq!(
        restored.encode_to_vec(),
        [0x0a, 1, b's', 0x12, 6, 0x0a, 1, b'a', 0x12, 1, b'i']
    );
}

/// The CRI client and server modules exist under the documented paths, with a streaming
/// associated type for every server-streaming RPC.
#[test]
fn cri_client_and_server_paths() {
    use cri::v1::image_service_client::ImageServiceClient;
    use cri::v1::image_service_server::{ImageService, ImageServiceServer};
    use cri::v1::runtime_service_client::RuntimeServiceClient;
    use cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
    use tonic::server::NamedService;

    assert_eq!(
        <RuntimeServiceServer<()> as NamedService>::NAME,
        "runtime.v1.RuntimeService"
    );
    assert_eq!(
        <ImageServiceServer<()> as NamedService>::NAME,
        "runtime.v1.ImageService"
    );
    let _: Option<RuntimeServiceClient<tonic::transport::Channel>> = None;
    let _: Option<ImageServiceClient<tonic::transport::Channel>> = None;

    // Compile-time check: the server traits name one stream type per server-streaming RPC.
    #[allow(dead_code, clippy::type_complexity)]
    fn stream_types<R: RuntimeService, I: ImageService>() -> (
        Option<R::StreamPodSandboxesStream>,
        Option<R::StreamContainersStream>,
        Option<R::StreamContainerStatsStream>,
        Option<R::StreamPodSandboxStatsStream>,
        Option<R::GetContainerEventsStream>,
        Option<R::StreamPodSandboxMetricsStream>,
        Option<I::StreamImagesStream>,
    ) {
        (None, None, None, None, None, None, None)
    }

    assert!(!wasmgate_proto::CRI_API_VERSION.is_empty());
}

#[test]
fn rpc_names_cover_every_service_and_nothing_else() {
    let names = wasmgate_proto::rpc_names();
    for known in [
        "Version",
        "RunPodSandbox",
        "PullImage",
        "NodePublishVolume",
        "CreateVolume",
        "GetPluginInfo",
        "GetInfo",
        "NotifyRegistrationStatus",
    ] {
        assert!(names.contains(known), "{known} missing");
    }
    assert!(!names.contains("Bogus") && !names.contains(""));
    // runtime.v1's 37 + 6, and the CSI and registration services besides.
    assert!(names.len() > 43, "{}", names.len());
}
