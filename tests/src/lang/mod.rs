//! Example plugins in languages other than Rust, each built from source by its language's own
//! `plugins/<lang>/build` script (which `scripts/build-plugins` runs), and found here by name.

pub mod c;
pub mod js;
pub mod python;
