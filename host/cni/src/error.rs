//! The CNI error object: the one shape every failure takes on its way back to the runtime.
//!
//! The shim prints it on stdout and exits non-zero; the daemon sends it inside
//! [`crate::wire::Response::Err`]. Codes 0-99 are the spec's well-known codes, 100 and up are ours.

use serde::{Deserialize, Serialize};

/// Error codes. Values below 100 are from the CNI spec's "Well-known Error Codes".
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration; the message names the key.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variable; the message names the variable.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure, e.g. reading stdin.
    pub const IO: u32 = 5;
    /// Failed to decode content, e.g. the network config is not JSON.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition, e.g. the daemon is restarting.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available and ADD would fail.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// wasmgate: the attachment (network, container, ifname) already exists.
    pub const ALREADY_EXISTS: u32 = 102;
    /// wasmgate: the Wasm plugin trapped.
    pub const PLUGIN_TRAP: u32 = 999;
}

/// A CNI error as the spec defines it. `details` is optional and omitted from JSON when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// The spec's error output: the error plus the `cniVersion` it is expressed in.
#[derive(Serialize)]
struct ErrorOutput<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object a plugin prints on stdout, in the given spec version.
    pub fn to_json(&self, cni_version: &str) -> String {
        let out = ErrorOutput {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        // Serialising a struct of strings and integers cannot fail; the fallback only exists so
        // that this never panics and still yields valid JSON with the code.
        serde_json::to_string(&out).unwrap_or_else(|_| format!("{{\"code\":{}}}", self.code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn to_json_has_the_spec_shape() {
        let e = CniError::new(code::INVALID_ENV, "CNI_IFNAME is missing", "set it");
        let v: Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "1.1.0", "code": 4, "msg": "CNI_IFNAME is missing", "details": "set it"})
        );
    }

    #[test]
    fn to_json_omits_empty_details() {
        let e = CniError::new(code::TRY_AGAIN, "later", "");
        let v: Value = serde_json::from_str(&e.to_json("0.4.0")).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "0.4.0", "code": 11, "msg": "later"})
        );
    }

    #[test]
    fn to_json_escapes_hostile_text() {
        let e = CniError::new(code::DECODE, "bad \"quote\"\n", "\u{0}");
        let v: Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["msg"], "bad \"quote\"\n");
        assert_eq!(v["details"], "\u{0}");
    }

    #[test]
    fn display_is_the_message() {
        let e = CniError::new(code::IO, "reading stdin failed", "eof");
        assert_eq!(e.to_string(), "reading stdin failed");
    }

    #[test]
    fn serde_round_trip_defaults_details() {
        let e: CniError = serde_json::from_str(r#"{"code":7,"msg":"x"}"#).unwrap();
        assert_eq!(e, CniError::new(7, "x", ""));
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(s, r#"{"code":7,"msg":"x"}"#);
    }

    #[test]
    fn codes_match_the_spec() {
        assert_eq!(
            [
                code::INCOMPATIBLE_VERSION,
                code::UNSUPPORTED_FIELD,
                code::UNKNOWN_CONTAINER,
                code::INVALID_ENV,
                code::IO,
                code::DECODE,
                code::INVALID_CONFIG,
                code::TRY_AGAIN,
                code::NOT_AVAILABLE,
                code::LIMITED_CONNECTIVITY,
            ],
            [1, 2, 3, 4, 5, 6, 7, 11, 50, 51]
        );
        assert_eq!(code::ALREADY_EXISTS, 102);
        assert_eq!(code::PLUGIN_TRAP, 999);
    }
}
