pub mod csi;
pub mod plugin;
pub mod serve;
pub mod trace;
