use std::path::PathBuf;

use anyhow::Context;
use wasmgate_daemon::admin::{AdminRequest, request};

#[derive(clap::Args)]
pub struct Args {
    /// The daemon's admin socket.
    #[arg(long, default_value = "/run/wasmgate/admin.sock", global = true)]
    admin: PathBuf,
    /// Print JSON instead of a table or report.
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
    /// What a component file imports and exports and which worlds it fits (no daemon needed);
    /// exits non-zero when it fits none.
    Inspect(super::plugin_inspect::Args),
    /// Write a new plugin project (code, WIT, build script, README) to build on (no daemon
    /// needed).
    New(super::plugin_new::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let req = match &args.command {
        Command::List => AdminRequest::List,
        Command::Reload { name } => AdminRequest::Reload { name: name.clone() },
        Command::Inspect(inspect) => return super::plugin_inspect::run(inspect, args.json),
        Command::New(new) => return super::plugin_new::run(new, args.json),
    };
    let plugins = request(&args.admin, &req).context("wasmgate plugin")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plugins)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<14} {:<5} {:<22} {:<49} PATH",
        "NAME", "SHA256", "GEN", "LOADED", "WORLD"
    );
    for p in plugins {
        println!(
            "{:<16} {:<14} {:<5} {:<22} {:<49} {}",
            p.name,
            &p.sha256[..12.min(p.sha256.len())],
            p.generation,
            utc(p.loaded_at),
            format!("{}{}", p.world, if p.cached { " (cached)" } else { "" }),
            p.path.display()
        );
    }
    Ok(())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil-from-days).
pub(crate) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_918_566), "2026-11-29T02:16:06Z");
    }
}
