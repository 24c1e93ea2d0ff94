pub mod csi;
pub mod lifecycle;
pub mod plugin;
pub mod plugin_inspect;
pub mod plugin_new;
pub mod serve;
pub mod trace;
