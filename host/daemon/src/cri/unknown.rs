//! The fields of a hooked request that this build's schema does not know, kept through the
//! hooks' adjustments.
//!
//! A hooked call is decoded, adjusted and encoded again, and prost drops the fields its schema
//! lacks: a newer kubelet's security settings would vanish on the way to the runtime. So the
//! request's bytes, as they came, are walked against the schema (`FILE_DESCRIPTOR_SET`), and
//! every unknown field is copied, inside the known singular messages that lead to it, into a
//! message of the same type that holds nothing else. Appended to the re-encoded request it puts
//! them back where they were: protobuf merges a singular message field that appears twice. An
//! unknown field inside a repeated field or a map has no such place (the adjustment may have
//! added, removed or reordered its elements), and the call is refused, naming it.

use std::collections::HashMap;
use std::sync::LazyLock;

use prost::Message;

/// A message type: its fields by number.
#[derive(Default)]
struct Msg {
    fields: HashMap<u32, Field>,
}

struct Field {
    name: String,
    /// The full name (`.runtime.v1.LinuxContainerConfig`) of a message-typed field.
    message: Option<String>,
    /// Repeated, maps included.
    repeated: bool,
}

/// The schema this build was compiled with: message types by full name, and the request type of
/// each method by its path.
struct Schema {
    messages: HashMap<String, Msg>,
    inputs: HashMap<String, String>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let fds = prost_types::FileDescriptorSet::decode(wasmgate_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set compiled into this build decodes");
    let mut schema = Schema {
        messages: HashMap::new(),
        inputs: HashMap::new(),
    };
    for file in &fds.file {
        let package = file.package();
        for m in &file.message_type {
            add_message(&mut schema.messages, &format!(".{package}"), m);
        }
        for s in &file.service {
            for m in &s.method {
                schema.inputs.insert(
                    format!("/{package}.{}/{}", s.name(), m.name()),
                    m.input_type().to_string(),
                );
            }
        }
    }
    schema
});

fn add_message(to: &mut HashMap<String, Msg>, scope: &str, m: &prost_types::DescriptorProto) {
    use prost_types::field_descriptor_proto::{Label, Type};
    let name = format!("{scope}.{}", m.name());
    let fields = m
        .field
        .iter()
        .map(|f| {
            let field = Field {
                name: f.name().to_string(),
                message: (f.r#type() == Type::Message).then(|| f.type_name().to_string()),
                repeated: f.label() == Label::Repeated,
            };
            (f.number() as u32, field)
        })
        .collect();
    for nested in &m.nested_type {
        add_message(to, &name, nested);
    }
    to.insert(name, Msg { fields });
}

/// The request type of the method at `path` (`/runtime.v1.RuntimeService/CreateContainer`), as
/// [`unknown_fields`] takes it.
pub fn input_of(path: &str) -> Option<&'static str> {
    SCHEMA.inputs.get(path).map(String::as_str)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnknownError {
    #[error(
        "{path} has field {number}, which this build's schema does not know, inside a repeated field: a hook's adjustment cannot be applied without dropping it"
    )]
    InRepeated { path: String, number: u32 },
    #[error("{path} has field {number} as a group, which this build cannot keep")]
    Group { path: String, number: u32 },
    #[error("the request is malformed at {0}")]
    Malformed(String),
}

/// The fields of `msg`, a message of type `type_name`, that this build's schema does not know,
/// as a message of the same type holding only them: empty when there are none.
pub fn unknown_fields(msg: &[u8], type_name: &str) -> Result<Vec<u8>, UnknownError> {
    let mut out = Vec::new();
    let path = type_name.rsplit('.').next().unwrap_or(type_name);
    walk(msg, type_name, path, false, &mut out)?;
    Ok(out)
}

fn walk(
    mut buf: &[u8],
    type_name: &str,
    path: &str,
    in_repeated: bool,
    out: &mut Vec<u8>,
) -> Result<(), UnknownError> {
    let malformed = || UnknownError::Malformed(path.to_string());
    let msg = SCHEMA.messages.get(type_name);
    let mut seen: HashMap<u32, usize> = HashMap::new();
    while !buf.is_empty() {
        let whole = buf;
        let key = prost::encoding::decode_varint(&mut buf).map_err(|_| malformed())?;
        let (number, wire) = ((key >> 3) as u32, key & 7);
        let mut payload: &[u8] = &[];
        match wire {
            0 => {
                prost::encoding::decode_varint(&mut buf).map_err(|_| malformed())?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or_else(malformed)?;
            }
            2 => {
                let len = prost::encoding::decode_varint(&mut buf).map_err(|_| malformed())?;
                let len = usize::try_from(len).map_err(|_| malformed())?;
                payload = buf.get(..len).ok_or_else(malformed)?;
                buf = &buf[len..];
            }
            3 | 4 => {
                return Err(UnknownError::Group {
                    path: path.to_string(),
                    number,
                });
            }
            _ => return Err(malformed()),
        }
        let field = msg.and_then(|m| m.fields.get(&number));
        let Some(field) = field else {
            if in_repeated {
                return Err(UnknownError::InRepeated {
                    path: path.to_string(),
                    number,
                });
            }
            out.extend_from_slice(&whole[..whole.len() - buf.len()]);
            continue;
        };
        let Some(inner) = field.message.as_deref().filter(|_| wire == 2) else {
            continue;
        };
        let child = if field.repeated {
            let i = seen.entry(number).or_default();
            *i += 1;
            format!("{path}.{}[{}]", field.name, *i - 1)
        } else {
            format!("{path}.{}", field.name)
        };
        let mut kept = Vec::new();
        walk(
            payload,
            inner,
            &child,
            in_repeated || field.repeated,
            &mut kept,
        )?;
        if !kept.is_empty() {
            prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
            prost::encoding::encode_varint(kept.len() as u64, out);
            out.extend_from_slice(&kept);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgate_proto::cri::v1 as pb;

    const CREATE: &str = ".runtime.v1.CreateContainerRequest";

    /// Field `number` as a varint of 1.
    fn unknown(number: u32) -> Vec<u8> {
        let mut b = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::Varint, &mut b);
        b.push(1);
        b
    }

    fn wrap(number: u32, inner: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut b);
        prost::encoding::encode_varint(inner.len() as u64, &mut b);
        b.extend_from_slice(inner);
        b
    }

    #[test]
    fn methods_name_their_request_type() {
        assert_eq!(
            input_of("/runtime.v1.RuntimeService/CreateContainer"),
            Some(CREATE)
        );
        assert_eq!(
            input_of("/runtime.v1.ImageService/PullImage"),
            Some(".runtime.v1.PullImageRequest")
        );
    }

    #[test]
    fn a_known_request_has_no_unknown_fields() {
        let req = pb::CreateContainerRequest {
            pod_sandbox_id: "p".into(),
            config: Some(pb::ContainerConfig {
                mounts: vec![pb::Mount::default()],
                labels: [("a".to_string(), "b".to_string())].into(),
                linux: Some(pb::LinuxContainerConfig {
                    security_context: Some(pb::LinuxContainerSecurityContext {
                        privileged: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: None,
        };
        assert!(
            unknown_fields(&req.encode_to_vec(), CREATE)
                .unwrap()
                .is_empty()
        );
    }

    /// A field 99 inside config.linux.security_context comes out nested as it was, and merged
    /// back onto an adjusted request it is there, with the adjustment.
    #[test]
    fn nested_unknown_fields_come_back_in_place() {
        let req = pb::CreateContainerRequest {
            pod_sandbox_id: "p".into(),
            config: Some(pb::ContainerConfig {
                linux: Some(pb::LinuxContainerConfig {
                    security_context: Some(pb::LinuxContainerSecurityContext {
                        privileged: false,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: None,
        };
        let mut bytes = req.encode_to_vec();
        // config (2) > linux (15) > security_context (2) > field 99.
        let extra = wrap(2, &wrap(15, &wrap(2, &unknown(99))));
        bytes.extend_from_slice(&extra);
        bytes.extend_from_slice(&unknown(98));
        let kept = unknown_fields(&bytes, CREATE).unwrap();
        let mut want = extra.clone();
        want.extend_from_slice(&unknown(98));
        assert_eq!(kept, want);

        let mut adjusted = pb::CreateContainerRequest::decode(bytes.as_slice()).unwrap();
        adjusted.config.as_mut().unwrap().args = vec!["x".into()];
        let mut sent = adjusted.encode_to_vec();
        sent.extend_from_slice(&kept);
        assert_eq!(unknown_fields(&sent, CREATE).unwrap(), want);
        let back = pb::CreateContainerRequest::decode(sent.as_slice()).unwrap();
        assert_eq!(back, adjusted);
    }

    #[test]
    fn unknown_fields_in_repeated_ones_are_named() {
        let mount = [pb::Mount::default().encode_to_vec(), unknown(77)].concat();
        // config (2) > mounts (7), twice: the second one has field 77.
        let config = [wrap(7, &[]), wrap(7, &mount)].concat();
        let bytes = wrap(2, &config);
        assert_eq!(
            unknown_fields(&bytes, CREATE).unwrap_err(),
            UnknownError::InRepeated {
                path: "CreateContainerRequest.config.mounts[1]".into(),
                number: 77
            }
        );
        assert!(matches!(
            unknown_fields(&[0x12, 0x05, 0x00], CREATE),
            Err(UnknownError::Malformed(_))
        ));
    }
}
