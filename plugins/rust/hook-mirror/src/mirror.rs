//! The decision: which image reference to rewrite, and into what.
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `from` | `docker.io` | the registry host, optionally with a path prefix, whose images are mirrored |
//! | `to` | none: the hook allows everything unchanged | the mirror, `host[:port][/prefix]` |
//!
//! A `from` or `to` that is not `host[:port][/path]` (a host has `.` or `:`, or is `localhost`)
//! denies the call, as does configuration that cannot be read: a pull from the wrong place is
//! worse than a refused one.

use crate::reference::{DOCKER_HUB, Location, rewrite};
use crate::settings::{self, Settings};
use crate::wasmgate::plugin::cri_types::{Adjustment, Decision, Event, Request};

pub const FROM: &str = "from";
pub const TO: &str = "to";

pub fn subscriptions() -> Vec<Event> {
    vec![Event::PullImage, Event::CreateContainer]
}

pub fn pre(req: &Request, settings: &impl Settings) -> Decision {
    let image = match req {
        Request::PullImage(r) => &r.image,
        Request::CreateContainer((_, container)) => &container.image,
        _ => return Decision::Allow,
    };
    match locations(settings) {
        Err(e) => Decision::Deny(format!("hook-mirror: {e}")),
        Ok(None) => Decision::Allow,
        Ok(Some((from, to))) => match rewrite(image, &from, &to) {
            Some(new) => Decision::Adjust(Adjustment {
                image: Some(new),
                ..empty_adjustment()
            }),
            None => Decision::Allow,
        },
    }
}

/// `(from, to)`, or `None` when `to` is unset or empty.
fn locations(settings: &impl Settings) -> Result<Option<(Location, Location)>, String> {
    let to = match settings::string(settings, TO)? {
        Some(to) if !to.is_empty() => to,
        _ => return Ok(None),
    };
    let from = settings::string(settings, FROM)?.unwrap_or_else(|| DOCKER_HUB.into());
    let from = Location::parse(&from).map_err(|e| format!("{FROM}: {e}"))?;
    let to = Location::parse(&to).map_err(|e| format!("{TO}: {e}"))?;
    Ok(Some((from, to)))
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

    fn container(image: &str) -> Container {
        Container {
            id: String::new(),
            name: "c".into(),
            image: image.into(),
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
        }
    }

    fn pull(image: &str) -> Request {
        Request::PullImage(ImageRequest {
            image: image.into(),
            annotations: vec![],
            pod: Some(pod()),
        })
    }

    fn create(image: &str) -> Request {
        Request::CreateContainer((pod(), container(image)))
    }

    fn image(new: &str) -> Decision {
        Decision::Adjust(Adjustment {
            image: Some(new.into()),
            ..empty_adjustment()
        })
    }

    #[test]
    fn subscribes_to_pull_image_and_create_container() {
        assert_eq!(
            subscriptions(),
            vec![Event::PullImage, Event::CreateContainer]
        );
    }

    #[test]
    fn without_to_everything_is_allowed() {
        for s in [
            FakeSettings::default(),
            FakeSettings::with(&[(TO, " "), (FROM, "not a host")]),
        ] {
            assert_eq!(pre(&pull("busybox"), &s), Decision::Allow);
            assert_eq!(pre(&create("busybox"), &s), Decision::Allow);
        }
    }

    #[test]
    fn docker_hub_is_the_default_from() {
        let s = FakeSettings::with(&[(TO, "mirror.local:5000")]);
        assert_eq!(
            pre(&pull("busybox:1.36"), &s),
            image("mirror.local:5000/library/busybox:1.36")
        );
        assert_eq!(
            pre(&create("docker.io/library/busybox"), &s),
            image("mirror.local:5000/library/busybox")
        );
        assert_eq!(pre(&pull("registry.k8s.io/pause:3.9"), &s), Decision::Allow);
    }

    #[test]
    fn from_selects_the_registry() {
        let s = FakeSettings::with(&[(FROM, "registry.k8s.io"), (TO, "mirror.local/k8s")]);
        assert_eq!(
            pre(&pull("registry.k8s.io/pause:3.9"), &s),
            image("mirror.local/k8s/pause:3.9")
        );
        assert_eq!(pre(&pull("busybox"), &s), Decision::Allow);
    }

    #[test]
    fn image_ids_in_create_container_are_left_alone() {
        let s = FakeSettings::with(&[(TO, "mirror.local")]);
        let id = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(pre(&create(id), &s), Decision::Allow);
    }

    #[test]
    fn bad_locations_are_denied() {
        let s = FakeSettings::with(&[(TO, "https://mirror.local")]);
        assert_eq!(
            pre(&pull("busybox"), &s),
            Decision::Deny(
                "hook-mirror: to: \"https://mirror.local\" is not a registry host (with `.` or `:`, or `localhost`), optionally followed by /path".into()
            )
        );
        let s = FakeSettings::with(&[(TO, "mirror.local"), (FROM, "hub")]);
        assert!(
            matches!(pre(&pull("busybox"), &s), Decision::Deny(m) if m.starts_with("hook-mirror: from: \"hub\""))
        );
    }

    #[test]
    fn unreadable_config_is_denied() {
        let s = FakeSettings::failing(TO, "store down");
        assert_eq!(
            pre(&pull("busybox"), &s),
            Decision::Deny("hook-mirror: cannot read wasi:config key to: store down".into())
        );
    }

    #[test]
    fn other_requests_are_allowed_without_reading_config() {
        let s = FakeSettings::failing(TO, "unreachable");
        assert_eq!(pre(&Request::RunPod(pod()), &s), Decision::Allow);
        assert_eq!(
            pre(&Request::StartContainer((pod(), container("busybox"))), &s),
            Decision::Allow
        );
    }
}
