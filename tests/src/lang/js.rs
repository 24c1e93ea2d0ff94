//! Plugins under plugins/js.
