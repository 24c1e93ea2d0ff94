//! A fake [`PluginExec`] for the daemon's unit tests: it records every request and answers from
//! a script the test gives it, so a test can make any plugin of a chain succeed, fail or hang.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;

use super::{ExecOutput, ExecRequest, PluginExec};
use crate::EffectError;

type Script = dyn Fn(&ExecRequest) -> Result<ExecOutput, EffectError> + Send + Sync;

/// Records requests and answers each with the script. See the module docs.
pub struct RecordingExec {
    script: Arc<Script>,
    calls: Mutex<Vec<ExecRequest>>,
}

impl RecordingExec {
    /// A fake that answers every request with `script(request)`.
    pub fn new(
        script: impl Fn(&ExecRequest) -> Result<ExecOutput, EffectError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            script: Arc::new(script),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every request so far, oldest first.
    pub fn calls(&self) -> Vec<ExecRequest> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ExecRequest>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PluginExec for RecordingExec {
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<ExecOutput, EffectError>> {
        self.lock().push(req.clone());
        let out = (self.script)(req);
        Box::pin(async move { out })
    }
}
