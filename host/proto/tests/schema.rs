//! Checks that the compiled schemas are the upstream ones on the wire: packages, services and
//! their RPCs, and the field numbers / enum values that CSI drivers and kubelet rely on.

use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};
use wasmgate_proto::{FILE_DESCRIPTOR_SET, csi, pluginregistration};

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
