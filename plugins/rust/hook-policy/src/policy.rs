//! The policy: which containers are refused, and why.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `allowed-namespaces` | `kube-system` | namespaces (separated by commas or spaces) exempt from the policy; `""` exempts none |
//! | `deny-capabilities` | none | capabilities (separated by commas or spaces) a container may not add outside those namespaces; `ALL` means any |
//!
//! A container that is neither privileged nor adds a capability is allowed without reading any
//! configuration. When the configuration cannot be read the hook fails closed: it denies.

use crate::settings::{self, Settings};
use crate::wasmgate::plugin::cri_types::{Container, Decision, Event, Pod, Request};

pub const ALLOWED_NAMESPACES: &str = "allowed-namespaces";
pub const DENY_CAPABILITIES: &str = "deny-capabilities";
pub const DEFAULT_ALLOWED_NAMESPACES: &str = "kube-system";

pub fn subscriptions() -> Vec<Event> {
    vec![Event::CreateContainer]
}

pub fn pre(req: &Request, settings: &impl Settings) -> Decision {
    match req {
        Request::CreateContainer((pod, container)) => check_container(pod, container, settings),
        _ => Decision::Allow,
    }
}

fn check_container(pod: &Pod, container: &Container, settings: &impl Settings) -> Decision {
    let security = &container.security;
    if !security.privileged && security.add_capabilities.is_empty() {
        return Decision::Allow;
    }

    let allowed = match settings::list(settings, ALLOWED_NAMESPACES) {
        Ok(list) => list.unwrap_or_else(|| vec![DEFAULT_ALLOWED_NAMESPACES.to_string()]),
        Err(e) => return fail_closed(&e),
    };
    if allowed.contains(&pod.namespace) {
        return Decision::Allow;
    }
    let allowed_text = if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed.join(", ")
    };

    if security.privileged {
        return Decision::Deny(format!(
            "privileged containers are not allowed in namespace {:?} (allowed: {allowed_text})",
            pod.namespace
        ));
    }

    let denied: Vec<String> = match settings::list(settings, DENY_CAPABILITIES) {
        Ok(list) => list
            .unwrap_or_default()
            .iter()
            .map(|c| capability(c))
            .collect(),
        Err(e) => return fail_closed(&e),
    };
    if denied.is_empty() {
        return Decision::Allow;
    }
    for cap in security.add_capabilities.iter().map(|c| capability(c)) {
        // `ALL` on either side covers every capability.
        if cap == "ALL" || denied.iter().any(|d| *d == cap || d == "ALL") {
            return Decision::Deny(format!(
                "capability {cap} is not allowed in namespace {:?} (allowed: {allowed_text})",
                pod.namespace
            ));
        }
    }
    Decision::Allow
}

/// The canonical spelling of a capability: upper case, without the `CAP_` prefix, so that
/// `sys_admin`, `SYS_ADMIN` and `CAP_SYS_ADMIN` are one capability.
pub fn capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    match upper.strip_prefix("CAP_") {
        Some(rest) => rest.to_string(),
        None => upper,
    }
}

fn fail_closed(why: &str) -> Decision {
    Decision::Deny(format!("hook-policy: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::tests::FakeSettings;
    use crate::wasmgate::plugin::cri_types::{ImageRequest, Security};

    fn pod(namespace: &str) -> Pod {
        Pod {
            id: String::new(),
            name: "p".into(),
            namespace: namespace.into(),
            uid: "u".into(),
            labels: vec![],
            annotations: vec![],
            runtime_handler: String::new(),
        }
    }

    fn container(privileged: bool, add: &[&str]) -> Container {
        Container {
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
                privileged,
                run_as_user: None,
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: vec![],
                readonly_rootfs: false,
            },
            labels: vec![],
            annotations: vec![],
            working_dir: String::new(),
        }
    }

    fn create(ns: &str, privileged: bool, add: &[&str]) -> Request {
        Request::CreateContainer((pod(ns), container(privileged, add)))
    }

    fn deny(msg: &str) -> Decision {
        Decision::Deny(msg.to_string())
    }

    #[test]
    fn subscribes_to_create_container_only() {
        assert_eq!(subscriptions(), vec![Event::CreateContainer]);
    }

    #[test]
    fn unprivileged_container_is_allowed_without_reading_config() {
        // Every key fails to read, yet nothing is read.
        let s = FakeSettings::failing(ALLOWED_NAMESPACES, "unreachable");
        assert_eq!(pre(&create("default", false, &[]), &s), Decision::Allow);
    }

    #[test]
    fn privileged_denied_outside_default_allow_list() {
        assert_eq!(
            pre(&create("default", true, &[]), &FakeSettings::default()),
            deny(
                "privileged containers are not allowed in namespace \"default\" (allowed: kube-system)"
            )
        );
    }

    #[test]
    fn privileged_allowed_in_kube_system_by_default() {
        assert_eq!(
            pre(&create("kube-system", true, &[]), &FakeSettings::default()),
            Decision::Allow
        );
    }

    #[test]
    fn allow_list_from_config_replaces_default() {
        let s = FakeSettings::with(&[(ALLOWED_NAMESPACES, " monitoring , ci ")]);
        assert_eq!(pre(&create("ci", true, &[]), &s), Decision::Allow);
        assert_eq!(
            pre(&create("kube-system", true, &[]), &s),
            deny(
                "privileged containers are not allowed in namespace \"kube-system\" (allowed: monitoring, ci)"
            )
        );
    }

    #[test]
    fn empty_allow_list_exempts_nobody() {
        let s = FakeSettings::with(&[(ALLOWED_NAMESPACES, "")]);
        assert_eq!(
            pre(&create("kube-system", true, &[]), &s),
            deny(
                "privileged containers are not allowed in namespace \"kube-system\" (allowed: none)"
            )
        );
    }

    #[test]
    fn capabilities_allowed_when_deny_list_unset() {
        assert_eq!(
            pre(
                &create("default", false, &["SYS_ADMIN"]),
                &FakeSettings::default()
            ),
            Decision::Allow
        );
    }

    #[test]
    fn denied_capability_refused_in_any_spelling() {
        let s = FakeSettings::with(&[(DENY_CAPABILITIES, "SYS_ADMIN, net_admin")]);
        for add in ["SYS_ADMIN", "sys_admin", "CAP_SYS_ADMIN"] {
            assert_eq!(
                pre(&create("default", false, &["CHOWN", add]), &s),
                deny(
                    "capability SYS_ADMIN is not allowed in namespace \"default\" (allowed: kube-system)"
                ),
                "{add}"
            );
        }
        assert_eq!(
            pre(&create("default", false, &["CAP_NET_ADMIN"]), &s),
            deny(
                "capability NET_ADMIN is not allowed in namespace \"default\" (allowed: kube-system)"
            )
        );
        assert_eq!(
            pre(
                &create("default", false, &["CHOWN", "NET_BIND_SERVICE"]),
                &s
            ),
            Decision::Allow
        );
    }

    #[test]
    fn denied_capability_allowed_in_allow_listed_namespace() {
        let s = FakeSettings::with(&[(DENY_CAPABILITIES, "SYS_ADMIN")]);
        assert_eq!(
            pre(&create("kube-system", false, &["SYS_ADMIN"]), &s),
            Decision::Allow
        );
    }

    #[test]
    fn all_covers_every_capability() {
        let any = FakeSettings::with(&[(DENY_CAPABILITIES, "ALL")]);
        assert_eq!(
            pre(&create("default", false, &["CHOWN"]), &any),
            deny("capability CHOWN is not allowed in namespace \"default\" (allowed: kube-system)")
        );
        let sys_admin = FakeSettings::with(&[(DENY_CAPABILITIES, "SYS_ADMIN")]);
        assert_eq!(
            pre(&create("default", false, &["all"]), &sys_admin),
            deny("capability ALL is not allowed in namespace \"default\" (allowed: kube-system)")
        );
    }

    #[test]
    fn privileged_reason_wins_over_capabilities() {
        let s = FakeSettings::with(&[(DENY_CAPABILITIES, "SYS_ADMIN")]);
        assert_eq!(
            pre(&create("default", true, &["SYS_ADMIN"]), &s),
            deny(
                "privileged containers are not allowed in namespace \"default\" (allowed: kube-system)"
            )
        );
    }

    #[test]
    fn unreadable_config_fails_closed() {
        let s = FakeSettings::failing(ALLOWED_NAMESPACES, "store down");
        assert_eq!(
            pre(&create("kube-system", true, &[]), &s),
            deny("hook-policy: cannot read wasi:config key allowed-namespaces: store down")
        );
        let s = FakeSettings::failing(DENY_CAPABILITIES, "store down");
        assert_eq!(
            pre(&create("default", false, &["CHOWN"]), &s),
            deny("hook-policy: cannot read wasi:config key deny-capabilities: store down")
        );
    }

    #[test]
    fn other_requests_are_allowed() {
        let s = FakeSettings::default();
        assert_eq!(pre(&Request::RunPod(pod("default")), &s), Decision::Allow);
        assert_eq!(
            pre(
                &Request::StartContainer((pod("default"), container(true, &[]))),
                &s
            ),
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

    #[test]
    fn capability_spelling() {
        assert_eq!(capability(" cap_sys_admin "), "SYS_ADMIN");
        assert_eq!(capability("NET_RAW"), "NET_RAW");
    }
}
