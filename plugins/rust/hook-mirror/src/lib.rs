//! `hook-mirror`: an example wasmgate CRI runtime hook, a Wasm component.
//!
//! It subscribes to `pull-image` and `create-container` and, in its pre-hook, rewrites image
//! references that live on one registry (`from`, by default Docker Hub) to another (`to`, a mirror),
//! keeping the repository path, tag and digest: with `to = mirror.local:5000`, `busybox:1.36`
//! becomes `mirror.local:5000/library/busybox:1.36`.
//!
//! Layout:
//! - this file: the generated bindings and a thin `Guest` impl that wires `wasi:config` into
//!   [`mirror`] behind the [`settings::Settings`] trait;
//! - [`mirror`]: the decision, and [`reference`]: image reference parsing after Docker's
//!   normalisation, pure logic (unit-tested natively);
//! - [`settings`]: reading the configuration keys.
//!
//! Configuration is read on every call: the host may reuse an instance, and an operator may have
//! changed the keys in between.

mod mirror;
mod reference;
mod settings;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "wasmgate:plugin/runtime-hook@0.1.0",
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
        mirror::subscriptions()
    }

    fn pre(req: Request) -> Decision {
        mirror::pre(&req, &WasiSettings)
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
