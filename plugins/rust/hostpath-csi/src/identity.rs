//! The CSI identity service.

use std::path::Path;

use crate::config::{self, Config, Settings};
use crate::error::{internal, unavailable};
use crate::exports::wasmgate::plugin::identity::PluginInfo;
use crate::fsx;
use crate::kv::{Kv, SEQ, Store};
use crate::wasmgate::plugin::csi_types::{CsiError, PluginCapability};

fn read(settings: &impl Settings, key: &str, default: &str) -> Result<String, CsiError> {
    match settings.get(key) {
        Ok(Some(v)) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        Ok(_) => Ok(default.to_string()),
        Err(e) => Err(internal(format!("read wasi:config key {key}: {e}"))),
    }
}

/// Reads only the two keys it reports, so that it answers even when other settings are broken
/// (`probe` reports those).
pub fn plugin_info(settings: &impl Settings) -> Result<PluginInfo, CsiError> {
    Ok(PluginInfo {
        name: read(settings, "driver-name", config::DEFAULT_DRIVER_NAME)?,
        vendor_version: read(settings, "vendor-version", env!("CARGO_PKG_VERSION"))?,
        manifest: Vec::new(),
    })
}

pub fn capabilities() -> Vec<PluginCapability> {
    vec![
        PluginCapability::ControllerService,
        PluginCapability::OnlineExpansion,
    ]
}

/// Ready when the settings parse, the metadata store answers and the data directory is there.
pub fn probe(settings: &impl Settings, kv: &impl Kv, root: &Path) -> Result<bool, CsiError> {
    Config::load(settings)?;
    Store::new(kv).get_text(SEQ)?;
    if !fsx::is_dir(root) {
        return Err(unavailable(format!(
            "data directory {} is not accessible",
            root.display()
        )));
    }
    Ok(true)
}
