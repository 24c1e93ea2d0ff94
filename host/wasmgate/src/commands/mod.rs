pub mod plugin;
pub mod serve;
