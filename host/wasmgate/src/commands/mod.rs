pub mod csi;
pub mod lifecycle;
pub mod plugin;
pub mod plugin_inspect;
pub mod serve;
pub mod trace;
