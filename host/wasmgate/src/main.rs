//! `wasmgate`: argument parsing and wiring only; the work is in the `host/` libraries.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wasmgate",
    version,
    about = "Sandboxed Wasm plugins for a node's CNI, CSI and CRI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(commands::serve::Args),
    /// List and reload the plugins of a running daemon, inspect a plugin file, or start a new plugin.
    Plugin(commands::plugin::Args),
    /// Follow every call a running daemon handles, or print its call counters.
    Trace(commands::trace::Args),
    /// Drive a CSI driver by hand through its socket: create, stage, publish, snapshot, ...
    Csi(commands::csi::Args),
    /// Play a pod's life against a running wasmgate (CRI, CNI, CSI) and tear it down again.
    Lifecycle(commands::lifecycle::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Plugin(args) => commands::plugin::run(args),
        Command::Trace(args) => commands::trace::run(args),
        Command::Csi(args) => commands::csi::run(args),
        Command::Lifecycle(args) => commands::lifecycle::run(args),
    }
}
