pub mod csi;
pub mod lifecycle;
pub mod plugin;
pub mod serve;
pub mod trace;
