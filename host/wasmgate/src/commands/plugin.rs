use std::path::PathBuf;

use anyhow::Context;
use wasmgate_daemon::admin::{AdminRequest, request};

#[derive(clap::Args)]
pub struct Args {
    /// The daemon's admin socket.
    #[arg(long, default_value = "/run/wasmgate/admin.sock", global = true)]
    admin: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Each loaded plugin with its hash, world and load time.
    List,
    /// Recompile a plugin from its file and swap it in; the old version serves until then.
    Reload { name: String },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let req = match &args.command {
        Command::List => AdminRequest::List,
        Command::Reload { name } => AdminRequest::Reload { name: name.clone() },
    };
    let plugins = request(&args.admin, &req).context("wasmgate plugin")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(());
    }
    println!("{:<16} {:<14} {:<8} {:<12} {:<40} PATH", "NAME", "SHA256", "GEN", "LOADED", "WORLD");
    for p in plugins {
        println!(
            "{:<16} {:<14} {:<8} {:<12} {:<40} {}",
            p.name,
            &p.sha256[..12.min(p.sha256.len())],
            p.generation,
            p.loaded_at,
            format!("{}{}", p.world, if p.cached { " (cached)" } else { "" }),
            p.path.display()
        );
    }
    Ok(())
}
