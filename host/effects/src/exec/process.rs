//! [`ProcessExec`]: the real [`PluginExec`], a child process per run.

use std::io;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{ExecOutput, ExecRequest, PluginExec};
use crate::EffectError;

/// Runs each request as a child process of the daemon. Stateless.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessExec;

impl ProcessExec {
    pub fn new() -> Self {
        ProcessExec
    }
}

impl PluginExec for ProcessExec {
    fn exec<'a>(&'a self, req: &'a ExecRequest) -> BoxFuture<'a, Result<ExecOutput, EffectError>> {
        Box::pin(async move {
            let mut child = Command::new(&req.binary)
                .envs(req.env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                // A timed-out or cancelled run must not leave the plugin running.
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| EffectError::io("exec", &req.binary, e))?;
            let mut stdin = child.stdin.take();
            // Written while the output is read: a plugin may answer before it has read all of
            // its config, and a full pipe either way must not deadlock the two.
            let write = async move {
                if let Some(s) = stdin.as_mut() {
                    match s.write_all(&req.stdin).await {
                        // The plugin exited or closed stdin without reading it all: its exit
                        // status says how that went.
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                        other => other?,
                    }
                }
                drop(stdin);
                Ok::<(), io::Error>(())
            };
            let run = async { tokio::join!(write, child.wait_with_output()) };
            let (written, out) = tokio::time::timeout(req.timeout, run).await.map_err(|_| {
                EffectError::TimedOut {
                    what: req.binary.clone(),
                    after: req.timeout,
                }
            })?;
            written.map_err(|e| EffectError::io("write stdin of", &req.binary, e))?;
            let out = out.map_err(|e| EffectError::io("wait for", &req.binary, e))?;
            Ok(ExecOutput {
                code: out.status.code(),
                stdout: out.stdout,
                stderr: out.stderr,
            })
        })
    }
}
