//! Plugins under plugins/c.
