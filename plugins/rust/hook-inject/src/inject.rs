//! The injection: one environment variable and one container annotation with the same value.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `env-name` | `WASMGATE_NODE` | the environment variable to set; `""` sets none |
//! | `annotation-key` | `wasmgate.io/node` | the container annotation to set; `""` sets none |
//! | `value` | key `node-name`, else `unknown` | the value of both |
//! | `node-name` | | the node's name, the value when `value` is not set |
//!
//! Values are trimmed. When the configuration cannot be read the call is denied, naming the key,
//! rather than injecting a wrong value.

use crate::settings::{self, Settings};
use crate::wasmgate::plugin::cri_types::{Adjustment, Decision, Event, Request};

pub const ENV_NAME: &str = "env-name";
pub const ANNOTATION_KEY: &str = "annotation-key";
pub const VALUE: &str = "value";
pub const NODE_NAME: &str = "node-name";

pub const DEFAULT_ENV_NAME: &str = "WASMGATE_NODE";
pub const DEFAULT_ANNOTATION_KEY: &str = "wasmgate.io/node";
pub const DEFAULT_VALUE: &str = "unknown";

pub fn subscriptions() -> Vec<Event> {
    vec![Event::CreateContainer]
}

pub fn pre(req: &Request, settings: &impl Settings) -> Decision {
    match req {
        Request::CreateContainer(_) => match injection(settings) {
            Ok(Some(adjustment)) => Decision::Adjust(adjustment),
            Ok(None) => Decision::Allow,
            Err(e) => Decision::Deny(format!("hook-inject: {e}")),
        },
        _ => Decision::Allow,
    }
}

/// The adjustment for a new container, `None` when both `env-name` and `annotation-key` are
/// empty.
fn injection(settings: &impl Settings) -> Result<Option<Adjustment>, String> {
    let env_name = settings::string(settings, ENV_NAME)?.unwrap_or_else(|| DEFAULT_ENV_NAME.into());
    let annotation_key = settings::string(settings, ANNOTATION_KEY)?
        .unwrap_or_else(|| DEFAULT_ANNOTATION_KEY.into());
    if env_name.is_empty() && annotation_key.is_empty() {
        return Ok(None);
    }
    if env_name.contains(['=', '\0']) {
        return Err(format!(
            "{ENV_NAME} {env_name:?} is not a valid environment variable name"
        ));
    }
    let value = match settings::string(settings, VALUE)? {
        Some(v) => v,
        None => settings::string(settings, NODE_NAME)?.unwrap_or_else(|| DEFAULT_VALUE.into()),
    };

    let mut adjustment = empty_adjustment();
    if !env_name.is_empty() {
        adjustment.env.push((env_name, value.clone()));
    }
    if !annotation_key.is_empty() {
        adjustment.annotations.push((annotation_key, value));
    }
    Ok(Some(adjustment))
}

/// An adjustment that changes nothing.
pub fn empty_adjustment() -> Adjustment {
    Adjustment {
        annotations: vec![],
        remove_annotations: vec![],
        labels: vec![],
        remove_labels: vec![],
        env: vec![],
        remove_env: vec![],
        mounts: vec![],
        remove_mounts: vec![],
        devices: vec![],
        remove_devices: vec![],
        resources: None,
        args: None,
        image: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::FakeSettings;
    use crate::wasmgate::plugin::cri_types::{Container, ImageRequest, Pod, Security};

    fn pod() -> Pod {
        Pod {
            id: "sandbox".into(),
            name: "p".into(),
            namespace: "default".into(),
            uid: "u".into(),
            labels: vec![],
            annotations: vec![],
            runtime_handler: String::new(),
        }
    }

    fn container() -> Container {
        Container {
            id: String::new(),
            name: "c".into(),
            image: "busybox".into(),
            command: vec![],
            args: vec![],
            env: vec![("PATH".into(), "/bin".into())],
            mounts: vec![],
            devices: vec![],
            resources: None,
            security: Security {
                privileged: false,
                run_as_user: None,
                add_capabilities: vec![],
                drop_capabilities: vec![],
                readonly_rootfs: false,
            },
            labels: vec![],
            annotations: vec![],
            working_dir: String::new(),
        }
    }

    fn create() -> Request {
        Request::CreateContainer((pod(), container()))
    }

    fn adjust(env: &[(&str, &str)], annotations: &[(&str, &str)]) -> Decision {
        let pairs = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Decision::Adjust(Adjustment {
            env: pairs(env),
            annotations: pairs(annotations),
            ..empty_adjustment()
        })
    }

    #[test]
    fn subscribes_to_create_container_only() {
        assert_eq!(subscriptions(), vec![Event::CreateContainer]);
    }

    #[test]
    fn defaults_inject_unknown() {
        assert_eq!(
            pre(&create(), &FakeSettings::default()),
            adjust(
                &[("WASMGATE_NODE", "unknown")],
                &[("wasmgate.io/node", "unknown")]
            )
        );
    }

    #[test]
    fn node_name_is_the_default_value() {
        let s = FakeSettings::with(&[(NODE_NAME, "worker-1")]);
        assert_eq!(
            pre(&create(), &s),
            adjust(
                &[("WASMGATE_NODE", "worker-1")],
                &[("wasmgate.io/node", "worker-1")]
            )
        );
    }

    #[test]
    fn value_wins_over_node_name() {
        let s = FakeSettings::with(&[(NODE_NAME, "worker-1"), (VALUE, " zone-a ")]);
        assert_eq!(
            pre(&create(), &s),
            adjust(
                &[("WASMGATE_NODE", "zone-a")],
                &[("wasmgate.io/node", "zone-a")]
            )
        );
    }

    #[test]
    fn names_come_from_config() {
        let s = FakeSettings::with(&[
            (ENV_NAME, "NODE"),
            (ANNOTATION_KEY, "example.com/node"),
            (NODE_NAME, "n"),
        ]);
        assert_eq!(
            pre(&create(), &s),
            adjust(&[("NODE", "n")], &[("example.com/node", "n")])
        );
    }

    #[test]
    fn empty_name_disables_that_half() {
        let no_env = FakeSettings::with(&[(ENV_NAME, ""), (NODE_NAME, "n")]);
        assert_eq!(
            pre(&create(), &no_env),
            adjust(&[], &[("wasmgate.io/node", "n")])
        );
        let no_annotation = FakeSettings::with(&[(ANNOTATION_KEY, ""), (NODE_NAME, "n")]);
        assert_eq!(
            pre(&create(), &no_annotation),
            adjust(&[("WASMGATE_NODE", "n")], &[])
        );
        let neither = FakeSettings::with(&[(ENV_NAME, ""), (ANNOTATION_KEY, "")]);
        assert_eq!(pre(&create(), &neither), Decision::Allow);
    }

    #[test]
    fn bad_env_name_is_denied() {
        let s = FakeSettings::with(&[(ENV_NAME, "A=B")]);
        assert_eq!(
            pre(&create(), &s),
            Decision::Deny(
                "hook-inject: env-name \"A=B\" is not a valid environment variable name".into()
            )
        );
    }

    #[test]
    fn unreadable_config_is_denied() {
        let s = FakeSettings::failing(NODE_NAME, "store down");
        assert_eq!(
            pre(&create(), &s),
            Decision::Deny("hook-inject: cannot read wasi:config key node-name: store down".into())
        );
    }

    #[test]
    fn other_requests_are_allowed() {
        let s = FakeSettings::with(&[(NODE_NAME, "n")]);
        assert_eq!(pre(&Request::RunPod(pod()), &s), Decision::Allow);
        assert_eq!(
            pre(&Request::StartContainer((pod(), container())), &s),
            Decision::Allow
        );
        assert_eq!(
            pre(
                &Request::PullImage(ImageRequest {
                    image: "busybox".into(),
                    annotations: vec![],
                    pod: None,
                }),
                &s
            ),
            Decision::Allow
        );
    }
}
