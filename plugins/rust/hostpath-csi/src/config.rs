//! Operator settings from `wasi:config`. Every key is optional.
//!
//! | key | default |
//! | --- | --- |
//! | `node-id` | `wasmgate-node` (the wasmgate host always sets it) |
//! | `driver-name` | `hostpath.csi.wasmgate.io` |
//! | `vendor-version` | the crate version |
//! | `capacity-bytes` | 100 GiB: the pool all volumes are carved from |
//! | `max-volume-bytes` | `capacity-bytes` |
//! | `default-volume-bytes` | 1 GiB: a volume created without a capacity range |
//! | `max-volumes-per-node` | 0 (unlimited) |
//! | `attach-required` | `false` |
//! | `alpha-capabilities` | none: alpha capabilities to advertise, e.g. `get-snapshot` |
//! | `latency-ms` | 0: a sleep at the start of every mutating call |
//!
//! Byte sizes are a decimal count with an optional binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal
//! (`k`, `M`, `G`, `T`) suffix. A value that does not parse fails every call that needs it with
//! `internal`, naming the key: a misconfigured plugin must not guess.

use std::time::Duration;

use crate::error::internal;
use crate::wasmgate::plugin::csi_types::CsiError;

pub const DEFAULT_NODE_ID: &str = "wasmgate-node";
pub const DEFAULT_DRIVER_NAME: &str = "hostpath.csi.wasmgate.io";
pub const GIB: i64 = 1 << 30;
pub const DEFAULT_CAPACITY: i64 = 100 * GIB;
pub const DEFAULT_VOLUME: i64 = GIB;
/// An upper bound on `latency-ms`, so a typo cannot park an instance until the host's timeout.
const MAX_LATENCY_MS: u64 = 60_000;

/// `wasi:config/store` in the component, a map in tests. A missing key is `Ok(None)`.
pub trait Settings {
    fn get(&self, key: &str) -> Result<Option<String>, String>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node_id: String,
    pub driver_name: String,
    pub vendor_version: String,
    pub capacity_bytes: i64,
    pub max_volume_bytes: i64,
    pub default_volume_bytes: i64,
    pub max_volumes_per_node: i64,
    pub attach_required: bool,
    pub alpha: Alpha,
    pub latency: Duration,
}

/// The alpha capabilities (spec 1.12) this driver implements, advertised only when the operator
/// asks for them, as upstream drivers gate alpha features: a CO built against an older spec
/// refuses a whole capability list over one value it does not know (`Unknown capability: 15`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Alpha {
    /// Controller GET_SNAPSHOT.
    pub get_snapshot: bool,
}

/// The alpha capabilities of spec 1.12 this driver does not implement: naming one is refused,
/// since advertising an RPC that only answers `unimplemented` would mislead the CO.
const UNIMPLEMENTED_ALPHA: [&str; 2] = ["modify-volume", "snapshot-metadata-service"];

fn read(settings: &impl Settings, key: &str) -> Result<Option<String>, CsiError> {
    settings
        .get(key)
        .map(|v| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .map_err(|e| internal(format!("read wasi:config key {key}: {e}")))
}

fn bad(key: &str, value: &str, why: &str) -> CsiError {
    internal(format!("wasi:config key {key}: {why}, got {value:?}"))
}

/// Parses `10Gi`, `512Mi`, `1000000`, `5G`.
pub fn parse_bytes(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let mult: i64 = match suffix.trim() {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn bytes(settings: &impl Settings, key: &str, default: i64) -> Result<i64, CsiError> {
    match read(settings, key)? {
        None => Ok(default),
        Some(v) => parse_bytes(&v)
            .ok_or_else(|| bad(key, &v, "expected a byte count such as 10737418240 or 10Gi")),
    }
}

impl Config {
    pub fn load(settings: &impl Settings) -> Result<Self, CsiError> {
        let node_id = read(settings, "node-id")?.unwrap_or_else(|| DEFAULT_NODE_ID.into());
        let driver_name =
            read(settings, "driver-name")?.unwrap_or_else(|| DEFAULT_DRIVER_NAME.into());
        let vendor_version =
            read(settings, "vendor-version")?.unwrap_or_else(|| env!("CARGO_PKG_VERSION").into());
        let capacity_bytes = bytes(settings, "capacity-bytes", DEFAULT_CAPACITY)?;
        let max_volume_bytes = bytes(settings, "max-volume-bytes", capacity_bytes)?;
        let default_volume_bytes = bytes(settings, "default-volume-bytes", DEFAULT_VOLUME)?;
        if default_volume_bytes == 0 {
            return Err(bad("default-volume-bytes", "0", "must be positive"));
        }
        let max_volumes_per_node = match read(settings, "max-volumes-per-node")? {
            None => 0,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad("max-volumes-per-node", &v, "expected a count"))?,
        };
        let attach_required = attach_required(settings)?;
        let alpha = alpha(settings)?;
        let latency = match read(settings, "latency-ms")? {
            None => Duration::ZERO,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms <= MAX_LATENCY_MS)
                .map(Duration::from_millis)
                .ok_or_else(|| bad("latency-ms", &v, "expected milliseconds up to 60000"))?,
        };
        Ok(Config {
            node_id,
            driver_name,
            vendor_version,
            capacity_bytes,
            max_volume_bytes,
            default_volume_bytes,
            max_volumes_per_node,
            attach_required,
            alpha,
            latency,
        })
    }
}

/// `attach-required` alone, for `get-capabilities`, which has no error to return.
pub fn attach_required(settings: &impl Settings) -> Result<bool, CsiError> {
    match read(settings, "attach-required")? {
        None => Ok(false),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(bad("attach-required", &v, "expected true or false")),
        },
    }
}

/// `alpha-capabilities` alone, for `get-capabilities`, which has no error to return: names
/// separated by commas or whitespace.
pub fn alpha(settings: &impl Settings) -> Result<Alpha, CsiError> {
    const KEY: &str = "alpha-capabilities";
    let mut alpha = Alpha::default();
    let Some(v) = read(settings, KEY)? else {
        return Ok(alpha);
    };
    for name in v.split(|c: char| c == ',' || c.is_whitespace()) {
        match name {
            "" => {}
            "get-snapshot" => alpha.get_snapshot = true,
            n if UNIMPLEMENTED_ALPHA.contains(&n) => {
                return Err(bad(
                    KEY,
                    &v,
                    &format!("{n} is not implemented by this driver"),
                ));
            }
            n => {
                return Err(bad(
                    KEY,
                    &v,
                    &format!("unknown alpha capability {n:?}, expected get-snapshot"),
                ));
            }
        }
    }
    Ok(alpha)
}

#[cfg(test)]
pub mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wasmgate::plugin::csi_types::ErrorCode;

    /// `wasi:config` as a map.
    #[derive(Default, Clone)]
    pub struct MapSettings(pub BTreeMap<String, String>);

    impl MapSettings {
        pub fn of(pairs: &[(&str, &str)]) -> Self {
            MapSettings(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }
    }

    impl Settings for MapSettings {
        fn get(&self, key: &str) -> Result<Option<String>, String> {
            Ok(self.0.get(key).cloned())
        }
    }

    #[test]
    fn defaults() {
        let c = Config::load(&MapSettings::default()).unwrap();
        assert_eq!(c.node_id, "wasmgate-node");
        assert_eq!(c.driver_name, "hostpath.csi.wasmgate.io");
        assert_eq!(c.vendor_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(c.capacity_bytes, 100 * GIB);
        assert_eq!(c.max_volume_bytes, 100 * GIB);
        assert_eq!(c.default_volume_bytes, GIB);
        assert_eq!(c.max_volumes_per_node, 0);
        assert!(!c.attach_required);
        assert_eq!(c.alpha, Alpha::default(), "alpha capabilities are opt-in");
        assert_eq!(c.latency, Duration::ZERO);
    }

    #[test]
    fn explicit_values_and_suffixes() {
        let c = Config::load(&MapSettings::of(&[
            ("node-id", "n1"),
            ("capacity-bytes", "10Gi"),
            ("default-volume-bytes", "512Mi"),
            ("max-volumes-per-node", "3"),
            ("attach-required", "True"),
            ("latency-ms", "250"),
        ]))
        .unwrap();
        assert_eq!(c.node_id, "n1");
        assert_eq!(c.capacity_bytes, 10 * GIB);
        assert_eq!(c.max_volume_bytes, 10 * GIB, "defaults to the pool size");
        assert_eq!(c.default_volume_bytes, 512 << 20);
        assert_eq!(c.max_volumes_per_node, 3);
        assert!(c.attach_required);
        assert_eq!(c.latency, Duration::from_millis(250));
        assert_eq!(parse_bytes("5G"), Some(5_000_000_000));
        assert_eq!(parse_bytes("1234"), Some(1234));
        assert_eq!(parse_bytes("1Pi"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("99999999999Ti"), None);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value) in [
            ("capacity-bytes", "lots"),
            ("max-volumes-per-node", "-2"),
            ("attach-required", "maybe"),
            ("alpha-capabilities", "get-snapshots"),
            ("alpha-capabilities", "get-snapshot modify-volume"),
            ("alpha-capabilities", "snapshot-metadata-service"),
            ("latency-ms", "600000"),
            ("default-volume-bytes", "0"),
        ] {
            let e = Config::load(&MapSettings::of(&[(key, value)])).unwrap_err();
            assert_eq!(e.code, ErrorCode::Internal);
            assert!(e.message.contains(key), "{}", e.message);
        }
    }

    #[test]
    fn alpha_capabilities_are_opted_into_by_name() {
        for value in [
            "get-snapshot",
            " get-snapshot ",
            "get-snapshot,",
            "get-snapshot, get-snapshot",
        ] {
            let c = Config::load(&MapSettings::of(&[("alpha-capabilities", value)])).unwrap();
            assert!(c.alpha.get_snapshot, "{value:?}");
        }
        let c = Config::load(&MapSettings::of(&[("alpha-capabilities", "")])).unwrap();
        assert!(!c.alpha.get_snapshot);
        let e = alpha(&MapSettings::of(&[("alpha-capabilities", "modify-volume")])).unwrap_err();
        assert!(
            e.message.contains("modify-volume is not implemented"),
            "{}",
            e.message
        );
        let e = alpha(&MapSettings::of(&[("alpha-capabilities", "GET_SNAPSHOT")])).unwrap_err();
        assert!(
            e.message
                .contains("unknown alpha capability \"GET_SNAPSHOT\""),
            "{}",
            e.message
        );
    }
}
