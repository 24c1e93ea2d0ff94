//! Running plugin binaries as a container runtime runs CNI plugins (libcni's `RawExec`): the
//! runtime's environment plus the call's variables, the config on stdin, the result or error on
//! stdout, and a deadline.
//!
//! [`ProcessExec`] is the real implementation, [`RecordingExec`] a fake for the daemon's unit
//! tests that records each request and answers from a script. Unlike the kernel effects this one
//! is async: waiting on a child with a deadline is what tokio's process support does, and a call
//! that is cancelled kills its child rather than leaving it to run unwatched.

mod fake;
mod process;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::EffectError;

pub use fake::RecordingExec;
pub use process::ProcessExec;

/// One run of a plugin binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub binary: PathBuf,
    /// Set on top of the daemon's own environment (as libcni does), replacing a variable of the
    /// same name.
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    /// Past this the child is killed and the run is [`EffectError::TimedOut`].
    pub timeout: Duration,
}

/// How a run ended: the plugin's exit status and what it printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs plugin binaries.
pub trait PluginExec: Send + Sync + 'static {
    /// Runs `req` to its end or its deadline. A plugin that fails is still `Ok`: its exit code
    /// and output say why. `Err` is for a binary that could not be started, or ran past
    /// `req.timeout` (it is killed).
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<ExecOutput, EffectError>>;
}
