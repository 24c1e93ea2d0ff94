//! `{{name}}`: a wasmgate CRI runtime hook, a Wasm component of `{{world_id}}`.
//!
//! The host's CRI proxy asks for two lists of events once per loaded version:
//! `subscriptions()`, the calls `pre` judges before the runtime sees them (allow, deny or adjust
//! them), and `post-subscriptions()`, the calls whose outcome `post` sees after the runtime
//! answered. The host may reuse an instance after a call succeeds, so anything that must last
//! goes in `wasi:keyvalue`.
//!
//! What it does, as `wasmgate plugin new` wrote it: it subscribes to `create-container`, and
//! allows every new container, adding one container annotation when the `wasi:config` key
//! `annotation` holds `KEY=VALUE`. A malformed value denies the call, naming the key, rather than
//! letting a container start without what the operator asked for. It wants no outcomes.
//!
//! See wasmgate's `plugins/rust/hook-policy` and `plugins/rust/hook-inject` for more.

wit_bindgen::generate!({
    path: "wit",
    world: "{{world_id}}",
    generate_all,
    // The unit tests compare decisions whole.
    additional_derives: [PartialEq],
});

use exports::wasmgate::plugin::hook::Guest;
use wasmgate::plugin::cri_types::{Adjustment, Decision, Event, Outcome, Request};

const NAME: &str = "{{name}}";

/// The `wasi:config` key: `KEY=VALUE`, an annotation for every new container.
const ANNOTATION: &str = "annotation";

/// The exported component.
struct Hook;

impl Guest for Hook {
    fn subscriptions() -> Vec<Event> {
        vec![Event::CreateContainer]
    }

    /// None: `post` does nothing with an outcome, and a hook that only judges requests costs
    /// nothing after the runtime answers.
    fn post_subscriptions() -> Vec<Event> {
        Vec::new()
    }

    fn pre(req: Request) -> Decision {
        match req {
            // Read on every call: an operator may change the key between calls.
            Request::CreateContainer((_pod, _container)) => decide(config(ANNOTATION)),
            _ => Decision::Allow,
        }
    }

    // The world requires it, though the host calls it for no event while `post_subscriptions`
    // is empty.
    fn post(_req: Request, _outcome: Outcome) {}
}

export!(Hook);

/// The decision for a new container, given the `annotation` setting.
fn decide(setting: Result<Option<String>, String>) -> Decision {
    match setting {
        Ok(None) => Decision::Allow,
        Ok(Some(value)) => match value.split_once('=') {
            Some((key, v)) if !key.trim().is_empty() => Decision::Adjust(Adjustment {
                annotations: vec![(key.trim().to_string(), v.trim().to_string())],
                ..no_change()
            }),
            _ => Decision::Deny(format!(
                "{NAME}: wasi:config key {ANNOTATION} is {value:?}, not KEY=VALUE"
            )),
        },
        Err(e) => Decision::Deny(format!("{NAME}: read wasi:config key {ANNOTATION}: {e}")),
    }
}

/// An adjustment that changes nothing: fields left empty change nothing.
fn no_change() -> Adjustment {
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

/// A `wasi:config` value; a missing key is `None`.
fn config(key: &str) -> Result<Option<String>, String> {
    use wasi::config::store::Error;
    wasi::config::store::get(key).map_err(|e| match e {
        Error::Upstream(msg) | Error::Io(msg) => msg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribes_to_new_containers_and_allows_them_without_the_key() {
        assert_eq!(Hook::subscriptions(), [Event::CreateContainer]);
        assert_eq!(Hook::post_subscriptions(), []);
        assert_eq!(decide(Ok(None)), Decision::Allow);
    }

    #[test]
    fn annotates_with_the_key() {
        let Decision::Adjust(adjustment) = decide(Ok(Some("example.com/team = a=b".into()))) else {
            panic!("not an adjustment");
        };
        assert_eq!(
            adjustment.annotations,
            [("example.com/team".into(), "a=b".into())]
        );
        assert_eq!(
            adjustment,
            Adjustment {
                annotations: adjustment.annotations.clone(),
                ..no_change()
            }
        );
    }

    #[test]
    fn denies_a_malformed_key_naming_it() {
        for bad in ["no-equals", "=value"] {
            let Decision::Deny(reason) = decide(Ok(Some(bad.into()))) else {
                panic!("{bad:?} was not denied");
            };
            assert!(
                reason.starts_with(NAME) && reason.contains("annotation"),
                "{reason}"
            );
        }
        assert!(matches!(decide(Err("gone".into())), Decision::Deny(_)));
    }
}
