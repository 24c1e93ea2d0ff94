//! CNI error codes, in one place.
//!
//! Codes 1-99 are the spec's well-known ones; 100 and up are this plugin's own.

use crate::wasmgate::plugin::cni_types::CniError;

/// The network configuration names a cniVersion this plugin does not speak.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// The state store (wasi:keyvalue or wasi:config) failed.
pub const IO_FAILURE: u32 = 5;
/// JSON content (raw config, prevResult) could not be decoded.
pub const DECODE_FAILURE: u32 = 6;
/// The network configuration (or the call's state) is invalid.
pub const INVALID_CONFIG: u32 = 7;
/// STATUS: the plugin cannot serve ADDs.
pub const NOT_AVAILABLE: u32 = 50;
/// ADD for an attachment that is already allocated (the spec forbids ADD twice without DEL).
pub const ALREADY_EXISTS: u32 = 102;
/// ADD found no free address in the pool.
pub const POOL_EXHAUSTED: u32 = 110;
/// ADD asked for a specific address that another attachment holds.
pub const ADDRESS_IN_USE: u32 = 111;

pub fn err(code: u32, msg: impl Into<String>) -> CniError {
    CniError {
        code,
        msg: msg.into(),
        details: String::new(),
    }
}

pub fn invalid(msg: impl Into<String>) -> CniError {
    err(INVALID_CONFIG, msg)
}
