use std::path::PathBuf;

/// Errors from loading plugins and managing the engine. Failures of a single call are
/// [`crate::CallError`].
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine configuration: {0}")]
    Config(String),
    #[error("read plugin {name} from {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("compile plugin {name}: {message}")]
    Compile { name: String, message: String },
    #[error("plugin {name} does not fit the {world} world: {misfits}")]
    Link {
        name: String,
        world: &'static str,
        misfits: crate::inspect::Misfits,
    },
    #[error("refusing {path} as a cache of native code: {why}")]
    UntrustedDir { path: PathBuf, why: String },
    #[error("no plugin named {0}")]
    UnknownPlugin(String),
    #[error("plugin {name} is not loaded: {reason}")]
    NotLoaded { name: String, reason: String },
    #[error("keyvalue store for plugin {name}: {message}")]
    Store { name: String, message: String },
    #[error(transparent)]
    Call(#[from] crate::CallError),
}
