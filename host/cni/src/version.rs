//! CNI spec versions: which ones wasmgate speaks, the VERSION reply, and version comparison.
//!
//! Used by the shim to answer VERSION without the daemon, and by [`crate::conf`] to reject a
//! config whose `cniVersion` we cannot honour before any work is done.

use crate::error::{CniError, code};

/// Spec versions whose config and result shapes we read and write. 0.1.0 and 0.2.0 are left out:
/// their results (`ip4`/`ip6`) predate plugin chaining and no maintained runtime sends them.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version we support; used when the caller names none.
pub const LATEST: &str = "1.1.0";

/// Fails with code 1 unless `v` is exactly one of [`SUPPORTED_VERSIONS`].
pub fn check_supported(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        return Ok(());
    }
    Err(CniError::new(
        code::INCOMPATIBLE_VERSION,
        format!(
            "unsupported CNI version {v:?}: supported versions are {}",
            SUPPORTED_VERSIONS.join(", ")
        ),
        "",
    ))
}

/// The JSON a plugin prints for VERSION. `requested` is the stdin config's `cniVersion`.
pub fn version_result(requested: &str) -> String {
    let v = if requested.is_empty() {
        LATEST
    } else {
        requested
    };
    serde_json::json!({ "cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

/// Whether `v >= min`, comparing `major.minor.patch` numerically. Missing minor or patch count as
/// 0; anything that is not such a triple (including pre-release suffixes) compares as false, so
/// a garbled version never unlocks a feature.
pub fn at_least(v: &str, min: &str) -> bool {
    match (triple(v), triple(min)) {
        (Some(a), Some(b)) => a >= b,
        _ => false,
    }
}

fn triple(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = [0u64; 3];
    for (n, part) in v.split('.').enumerate() {
        let slot = parts.get_mut(n)?;
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    Some((parts[0], parts[1], parts[2]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn supported_versions_pass() {
        for v in SUPPORTED_VERSIONS {
            assert_eq!(check_supported(v), Ok(()));
        }
        assert!(SUPPORTED_VERSIONS.contains(&LATEST));
    }

    #[test]
    fn unsupported_version_is_code_1_and_lists_supported() {
        for v in ["9.9.9", "0.2.0", "", "1.1", "1.1.0 "] {
            let e = check_supported(v).unwrap_err();
            assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
            assert!(e.msg.contains(&format!("{v:?}")), "{}", e.msg);
            assert!(
                e.msg.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
                "{}",
                e.msg
            );
        }
    }

    #[test]
    fn version_result_echoes_request() {
        let v: Value = serde_json::from_str(&version_result("0.4.0")).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
    }

    #[test]
    fn version_result_defaults_to_latest() {
        let v: Value = serde_json::from_str(&version_result("")).unwrap();
        assert_eq!(v["cniVersion"], LATEST);
    }

    #[test]
    fn at_least_compares_numerically() {
        assert!(at_least("1.1.0", "1.1.0"));
        assert!(at_least("1.10.0", "1.9.0"));
        assert!(at_least("0.4.0", "0.3.1"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("1.0.0", "1.1.0"));
        assert!(at_least("1.1", "1.1.0"));
        assert!(at_least("2", "1.1.0"));
    }

    #[test]
    fn at_least_rejects_garbage() {
        for bad in [
            "",
            "x",
            "1..0",
            "1.0.0.0",
            "1.0.0-rc1",
            "-1.0.0",
            "1.0.+1",
            "99999999999999999999",
        ] {
            assert!(!at_least(bad, "0.0.0"), "{bad}");
            assert!(!at_least("1.0.0", bad), "{bad}");
        }
    }
}
