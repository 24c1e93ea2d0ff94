use std::path::PathBuf;

use anyhow::Context;
use wasmgate_daemon::admin::{TraceFilter, follow_trace, stats};
use wasmgate_daemon::trace::TraceLine;

#[derive(clap::Args)]
pub struct Args {
    /// The daemon's admin socket.
    #[arg(long, default_value = "/run/wasmgate/admin.sock")]
    admin: PathBuf,
    /// Print each line as JSON (the first is `{"kind":"subscribed"}`).
    #[arg(long)]
    json: bool,
    /// Print the call counters once instead of following the trace.
    #[arg(long)]
    stats: bool,
    /// Only calls of this interface: cni, csi or cri.
    #[arg(long)]
    interface: Option<String>,
    /// Only calls of this method, e.g. CreateContainer, ADD, NodePublishVolume.
    #[arg(long)]
    method: Option<String>,
    /// Only calls whose key IDs (container, pod, volume, network, ...) contain this.
    #[arg(long)]
    id: Option<String>,
    /// Only failed calls.
    #[arg(long)]
    errors: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.stats {
        let calls = stats(&args.admin).context("wasmgate trace --stats")?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&calls)?);
            return Ok(());
        }
        println!(
            "{:<16} {:>8} {:>8} {:>12}",
            "CALL", "OK", "ERRORS", "MEAN µs"
        );
        for (name, s) in calls {
            let n = (s.ok + s.errors).max(1);
            println!(
                "{name:<16} {:>8} {:>8} {:>12}",
                s.ok,
                s.errors,
                s.total_us / n
            );
        }
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let filter = TraceFilter {
        interface: args.interface.clone(),
        method: args.method.clone(),
        id: args.id.clone(),
        errors: args.errors,
    };
    follow_trace(&args.admin, filter, |line| {
        use std::io::Write;
        let text = if args.json {
            serde_json::to_string(&line).unwrap_or_default()
        } else {
            match line {
                TraceLine::Subscribed => return true,
                TraceLine::Dropped { count } => {
                    format!("... {count} calls not shown (reader too slow)")
                }
                TraceLine::Call(c) => format!(
                    "{} {}.{} {}{} {} {}µs{}",
                    c.at_ms,
                    c.interface,
                    c.method,
                    subject(&c),
                    plugin(&c),
                    if c.ok {
                        "ok".to_string()
                    } else {
                        format!("error {}", c.code.unwrap_or(0))
                    },
                    c.elapsed_us,
                    hooks_and_upstream(&c)
                        + &c.msg.clone().map(|m| format!(": {m}")).unwrap_or_default(),
                ),
            }
        };
        // Stop quietly when whoever reads our stdout goes away.
        writeln!(out, "{text}").and_then(|_| out.flush()).is_ok()
    })
    .context("wasmgate trace")
}

/// Which plugin version served the call, when one did (CRI calls are served by the runtime).
fn plugin(c: &wasmgate_daemon::trace::CallRecord) -> String {
    match (&c.plugin, &c.plugin_sha256) {
        (Some(p), Some(sha)) => format!(" plugin={p}@{}", &sha[..12.min(sha.len())]),
        (Some(p), None) => format!(" plugin={p}"),
        _ => String::new(),
    }
}

/// Who a call was about: the pod's attachment for CNI, the key IDs otherwise.
fn subject(c: &wasmgate_daemon::trace::CallRecord) -> String {
    if c.ids.is_empty() && c.container_id.is_empty() {
        "-".to_string()
    } else if c.ids.is_empty() {
        format!(
            "{} {}/{}",
            c.network.as_deref().unwrap_or("-"),
            c.container_id,
            c.ifname
        )
    } else {
        c.ids
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// CRI calls: each hook's decision and time, and the runtime's time.
fn hooks_and_upstream(c: &wasmgate_daemon::trace::CallRecord) -> String {
    let mut out = String::new();
    for h in &c.hooks {
        out.push_str(&format!(
            " [{} {} {} {}µs]",
            h.hook, h.phase, h.decision, h.elapsed_us
        ));
    }
    if let Some(us) = c.upstream_us {
        out.push_str(&format!(" upstream={us}µs"));
    }
    out
}
