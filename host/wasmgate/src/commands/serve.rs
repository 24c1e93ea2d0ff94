use std::path::PathBuf;

use anyhow::Context;
use wasmgate_daemon::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The daemon's TOML config; without it, the embedded defaults serve the example plugin.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(path) => Config::load(path).with_context(|| format!("load {}", path.display()))?,
        None => Config::default(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    rt.block_on(async {
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                }
                _ => std::future::pending::<()>().await,
            }
            tracing::info!("shutting down");
        };
        wasmgate_daemon::run(cfg, shutdown)
            .await
            .context("wasmgate serve")
    })
}
