//! `hook-workdir`: an example wasmgate CRI runtime hook built against
//! `wasmgate:plugin/runtime-hook@0.2.0`, the first version whose container view carries
//! `working-dir`.
//!
//! It subscribes to `create-container`. Its pre-hook denies a container whose working directory
//! lies outside `allowed-prefixes` (when that key is set), and otherwise annotates the container
//! with its working directory. A 0.1.0 hook cannot see the field at all; the host serves both.
//!
//! Layout: this file holds the bindings and a thin `Guest` impl; [`workdir`] is the decision,
//! pure logic, unit-tested natively.

mod workdir;

wit_bindgen::generate!({
    path: "../../../wit/v0.2.0",
    world: "wasmgate:plugin/runtime-hook@0.2.0",
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
        workdir::subscriptions()
    }

    fn pre(req: Request) -> Decision {
        workdir::pre(&req, &WasiSettings)
    }

    fn post(_req: Request, _outcome: Outcome) {}
}

export!(Hook);

/// `wasi:config/store`, read on every call: the host may reuse an instance. A missing key is
/// `Ok(None)`.
struct WasiSettings;

impl workdir::Settings for WasiSettings {
    fn get(&self, key: &str) -> Result<Option<String>, String> {
        use wasi::config::store::Error;
        wasi::config::store::get(key).map_err(|e| match e {
            Error::Upstream(msg) | Error::Io(msg) => msg,
        })
    }
}
