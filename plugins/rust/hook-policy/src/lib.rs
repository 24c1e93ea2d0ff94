//! `hook-policy`: an example wasmgate CRI runtime hook, a Wasm component.
//!
//! It subscribes to `create-container` and, in its pre-hook, denies privileged containers, and
//! containers that add a capability named in `deny-capabilities`, unless the pod's namespace is
//! allow-listed in `allowed-namespaces`. Everything else is allowed unchanged.
//!
//! Layout:
//! - this file: the generated bindings and a thin `Guest` impl that wires `wasi:config` into
//!   [`policy`] behind the [`settings::Settings`] trait;
//! - [`policy`]: the decision, pure logic (unit-tested natively);
//! - [`settings`]: reading and splitting the configuration keys.
//!
//! Configuration is read on every call: the host may reuse an instance, and an operator may have
//! changed the keys in between.

mod policy;
mod settings;

wit_bindgen::generate!({
    path: "../../../wit/v0.3.0",
    world: "wasmgate:plugin/runtime-hook@0.3.0",
    generate_all,
    // Tests compare decisions whole.
    additional_derives: [PartialEq],
});

use exports::wasmgate::plugin::hook::Guest;
use wasmgate::plugin::cri_types::{Decision, Event, Outcome, Request};

/// The exported component.
struct Hook;

impl Guest for Hook {
    fn subscriptions() -> Vec<Event> {
        policy::subscriptions()
    }

    /// None: `post` has nothing to do, and the host skips it for events not listed here.
    fn post_subscriptions() -> Vec<Event> {
        Vec::new()
    }

    fn pre(req: Request) -> Decision {
        policy::pre(&req, &WasiSettings)
    }

    fn post(_req: Request, _outcome: Outcome) {}
}

export!(Hook);

/// `wasi:config/store`. A missing key is `Ok(None)`.
struct WasiSettings;

impl settings::Settings for WasiSettings {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        use wasi::config::store::Error;
        wasi::config::store::get(key).map_err(|e| match e {
            Error::Upstream(msg) | Error::Io(msg) => msg,
        })
    }
}
