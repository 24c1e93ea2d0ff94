//! The decision on a new container's working directory.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `allowed-prefixes` | not set: any | directories a working dir must be in (itself or below), separated by commas and/or spaces |
//! | `annotation-key` | `wasmgate.io/working-dir` | the container annotation that records the working dir; `""` sets none |
//!
//! An empty working dir means unset (the image's default applies) and is always allowed, and
//! not annotated. When the configuration cannot be read the call is denied, naming the key.

use crate::wasmgate::plugin::cri_types::{Adjustment, Decision, Event, Request};

pub const ALLOWED_PREFIXES: &str = "allowed-prefixes";
pub const ANNOTATION_KEY: &str = "annotation-key";
pub const DEFAULT_ANNOTATION_KEY: &str = "wasmgate.io/working-dir";

/// Where configuration comes from: `wasi:config/store` in the component, a map in the tests.
pub trait Settings {
    /// The value of `key`; `Ok(None)` when the key is not set.
    fn get(&self, key: &str) -> Result<Option<String>, String>;
}

pub fn subscriptions() -> Vec<Event> {
    vec![Event::CreateContainer]
}

pub fn pre(req: &Request, settings: &impl Settings) -> Decision {
    let Request::CreateContainer((_, container)) = req else {
        return Decision::Allow;
    };
    match decide(&container.working_dir, settings) {
        Ok(d) => d,
        Err(e) => Decision::Deny(format!("hook-workdir: {e}")),
    }
}

fn decide(dir: &str, settings: &impl Settings) -> Result<Decision, String> {
    let read = |key: &str| {
        settings
            .get(key)
            .map_err(|e| format!("cannot read wasi:config key {key}: {e}"))
    };
    if dir.is_empty() {
        return Ok(Decision::Allow);
    }
    if let Some(allowed) = read(ALLOWED_PREFIXES)? {
        let allowed: Vec<&str> = allowed
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .collect();
        if !allowed.iter().any(|p| within(dir, p)) {
            return Ok(Decision::Deny(format!(
                "working dir {dir:?} is outside the allowed prefixes ({})",
                allowed.join(", ")
            )));
        }
    }
    let key = read(ANNOTATION_KEY)?.unwrap_or_else(|| DEFAULT_ANNOTATION_KEY.into());
    if key.is_empty() {
        return Ok(Decision::Allow);
    }
    Ok(Decision::Adjust(Adjustment {
        annotations: vec![(key, dir.to_string())],
        ..empty_adjustment()
    }))
}

/// Whether `dir` is `prefix` or below it, by path component: `/app` holds `/app/x`, not
/// `/apple`.
fn within(dir: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return dir.starts_with('/');
    }
    dir == prefix
        || dir
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
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
    use std::collections::BTreeMap;

    use super::*;
    use crate::wasmgate::plugin::cri_types::{Container, Pod, Security};

    struct Fake(BTreeMap<&'static str, Result<&'static str, &'static str>>);

    impl Settings for Fake {
        fn get(&self, key: &str) -> Result<Option<String>, String> {
            match self.0.get(key) {
                None => Ok(None),
                Some(Ok(v)) => Ok(Some(v.to_string())),
                Some(Err(e)) => Err(e.to_string()),
            }
        }
    }

    fn with(pairs: &[(&'static str, &'static str)]) -> Fake {
        Fake(pairs.iter().map(|(k, v)| (*k, Ok(*v))).collect())
    }

    fn create(dir: &str) -> Request {
        let pod = Pod {
            id: String::new(),
            name: "p".into(),
            namespace: "default".into(),
            uid: "u".into(),
            labels: vec![],
            annotations: vec![],
            runtime_handler: String::new(),
        };
        let container = Container {
            id: String::new(),
            name: "c".into(),
            image: "busybox".into(),
            command: vec![],
            args: vec![],
            env: vec![],
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
            working_dir: dir.into(),
        };
        Request::CreateContainer((pod, container))
    }

    fn annotated(dir: &str) -> Decision {
        Decision::Adjust(Adjustment {
            annotations: vec![(DEFAULT_ANNOTATION_KEY.into(), dir.into())],
            ..empty_adjustment()
        })
    }

    #[test]
    fn annotates_the_working_dir_by_default() {
        assert_eq!(pre(&create("/srv/app"), &with(&[])), annotated("/srv/app"));
    }

    #[test]
    fn an_unset_working_dir_is_allowed_unchanged() {
        let s = with(&[(ALLOWED_PREFIXES, "/app")]);
        assert_eq!(pre(&create(""), &s), Decision::Allow);
    }

    #[test]
    fn prefixes_match_by_path_component() {
        let s = with(&[(ALLOWED_PREFIXES, "/app, /srv/")]);
        assert_eq!(pre(&create("/app"), &s), annotated("/app"));
        assert_eq!(pre(&create("/srv/x"), &s), annotated("/srv/x"));
        let Decision::Deny(reason) = pre(&create("/apple"), &s) else {
            panic!("/apple is not under /app");
        };
        assert!(
            reason.contains("\"/apple\"") && reason.contains("/app, /srv/"),
            "{reason}"
        );
    }

    #[test]
    fn an_empty_annotation_key_only_checks() {
        let s = with(&[(ANNOTATION_KEY, "")]);
        assert_eq!(pre(&create("/x"), &s), Decision::Allow);
    }

    #[test]
    fn unreadable_config_denies_naming_the_key() {
        let s = Fake([(ALLOWED_PREFIXES, Err("boom"))].into_iter().collect());
        let Decision::Deny(reason) = pre(&create("/x"), &s) else {
            panic!("expected a deny");
        };
        assert!(
            reason.contains(ALLOWED_PREFIXES) && reason.contains("boom"),
            "{reason}"
        );
    }

    #[test]
    fn other_calls_are_allowed() {
        assert_eq!(subscriptions(), vec![Event::CreateContainer]);
    }
}
