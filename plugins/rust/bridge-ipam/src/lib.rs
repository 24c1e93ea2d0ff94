//! `bridge-ipam`: the first example wasmgate network plugin, a Wasm component.
//!
//! The wasmgate host (or the stock `wasmtime run -S keyvalue -S config`) calls one export of
//! `wasmgate:plugin/network` per CNI command, in any instance. This plugin hands out an
//! IPv4 address from `podcidr`, keeps the allocation in `wasi:keyvalue`, and answers with a plan
//! (an [`Attachment`]: veth, optional bridge, addresses, routes) that the host validates and carries
//! out. It never touches netlink itself.
//!
//! Layout, in the order a call flows through it:
//! - this file: the generated bindings and a thin `Guest` impl that wires the real WASI imports
//!   into [`ops`] behind the [`ipam::Kv`] and [`config::Settings`] traits;
//! - [`ops`]: the five CNI commands, pure logic over those traits (unit-tested natively);
//! - [`config`]: the net-conf keys; [`prev`]: `prevResult` JSON; [`pool`]: IPv4 maths;
//!   [`ipam`]: race-free allocation using only `wasi:keyvalue/atomics.increment`;
//!   [`plan`]: the attachment and the CNI result; [`names`]: the host veth name;
//!   [`error`]: the CNI error codes.

mod config;
mod error;
mod ipam;
mod names;
mod ops;
mod plan;
mod pool;
mod prev;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "wasmgate:plugin/network-plugin@0.1.0",
    generate_all,
    // Tests compare plans and results whole.
    additional_derives: [PartialEq],
});

use exports::wasmgate::plugin::network::Guest;
use wasi::keyvalue::store::{self as kv, Bucket};
use wasmgate::plugin::cni_types::{
    AddOutcome, Attachment, AttachmentRef, CniError, Invocation, NetConf,
};

/// The exported component.
struct Plugin;

impl Guest for Plugin {
    fn versions() -> Vec<String> {
        ops::versions()
    }

    fn add(conf: NetConf, call: Invocation) -> Result<AddOutcome, CniError> {
        ops::add(&conf, &call, &WasiKv::open()?, &WasiSettings)
    }

    fn del(conf: NetConf, call: Invocation) -> Result<(), CniError> {
        ops::del(&conf, &call, &WasiKv::open()?)
    }

    fn check(conf: NetConf, call: Invocation) -> Result<Option<Attachment>, CniError> {
        ops::check(&conf, &call, &WasiKv::open()?, &WasiSettings)
    }

    fn status(conf: NetConf) -> Result<(), CniError> {
        ops::status(&conf, &WasiKv::open()?, &WasiSettings)
    }

    fn gc(conf: NetConf, valid: Vec<AttachmentRef>) -> Result<Vec<AttachmentRef>, CniError> {
        ops::gc(&conf, &valid, &WasiKv::open()?)
    }
}

export!(Plugin);

/// `wasi:keyvalue` bucket `""`: the only identifier the stock wasmtime CLI accepts.
struct WasiKv(Bucket);

impl WasiKv {
    fn open() -> Result<Self, CniError> {
        kv::open("").map(WasiKv).map_err(|e| {
            error::err(
                error::IO_FAILURE,
                format!("open keyvalue bucket \"\": {}", kv_error(&e)),
            )
        })
    }
}

fn kv_error(e: &kv::Error) -> String {
    match e {
        kv::Error::NoSuchStore => "no such store".to_string(),
        kv::Error::AccessDenied => "access denied".to_string(),
        kv::Error::Other(msg) => msg.clone(),
    }
}

impl ipam::Kv for WasiKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(key).map_err(|e| kv_error(&e))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        self.0.set(key, value).map_err(|e| kv_error(&e))
    }

    fn delete(&self, key: &str) -> Result<(), String> {
        self.0.delete(key).map_err(|e| kv_error(&e))
    }

    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), String> {
        self.0
            .list_keys(cursor)
            .map(|page| (page.keys, page.cursor))
            .map_err(|e| kv_error(&e))
    }

    fn increment(&self, key: &str, delta: u64) -> Result<u64, String> {
        wasi::keyvalue::atomics::increment(&self.0, key, delta).map_err(|e| kv_error(&e))
    }
}

/// `wasi:config/store`: operator defaults for keys the net-conf leaves out.
struct WasiSettings;

impl config::Settings for WasiSettings {
    fn get(&self, key: &str) -> Result<Option<String>, CniError> {
        use wasi::config::store::Error;
        wasi::config::store::get(key).map_err(|e| {
            let why = match e {
                Error::Upstream(msg) | Error::Io(msg) => msg,
            };
            error::err(
                error::IO_FAILURE,
                format!("read wasi:config key {key}: {why}"),
            )
        })
    }
}
