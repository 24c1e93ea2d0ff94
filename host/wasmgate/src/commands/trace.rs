use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use wasmgate_daemon::admin::{TraceFilter, follow_trace, stats_and_queue};
use wasmgate_daemon::cni::queue::DelQueueStats;
use wasmgate_daemon::trace::{MethodStats, TraceLine, now_ms};

#[derive(clap::Args)]
pub struct Args {
    /// The daemon's admin socket.
    #[arg(long, default_value = "/run/wasmgate/admin.sock")]
    admin: PathBuf,
    /// Print each line as JSON (the first is `{"kind":"subscribed"}`).
    #[arg(long)]
    json: bool,
    /// Print the call counters and the CNI DEL queue once instead of following the trace.
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
        let (calls, queue) = stats_and_queue(&args.admin).context("wasmgate trace --stats")?;
        if args.json {
            // The counters keyed by `interface.method` as ever; the queue beside them under a
            // key that no method name can take.
            let mut out = serde_json::to_value(&calls)?;
            if let (Some(q), Some(map)) = (&queue, out.as_object_mut()) {
                map.insert("del_queue".into(), serde_json::to_value(q)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        print!("{}", stats_table(&calls));
        if let Some(q) = &queue {
            print!("\n{}", queue_lines(q, now_ms()));
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

/// The counters, one call a line, the first column as wide as the longest name: CSI and CRI
/// method names run to 30 characters and more.
fn stats_table(calls: &BTreeMap<String, MethodStats>) -> String {
    let width = calls
        .keys()
        .map(|name| name.chars().count())
        .fold("CALL".len(), usize::max);
    let mut out = format!(
        "{:<width$} {:>8} {:>8} {:>12}\n",
        "CALL", "OK", "ERRORS", "MEAN µs"
    );
    for (name, s) in calls {
        let n = (s.ok + s.errors).max(1);
        out.push_str(&format!(
            "{name:<width$} {:>8} {:>8} {:>12}\n",
            s.ok,
            s.errors,
            s.total_us / n
        ));
    }
    out
}

/// Stuck DELs listed one a line before the rest are only counted.
const STUCK_SHOWN: usize = 20;

/// The DEL queue: a summary line, then a line per DEL that has failed, with its last error.
fn queue_lines(q: &DelQueueStats, now_ms: u64) -> String {
    let mut out = format!("cni DEL queue: {} waiting", q.queued);
    if let Some(oldest) = q.oldest_queued_ms {
        out.push_str(&format!(
            ", oldest queued {} ago",
            age(now_ms.saturating_sub(oldest))
        ));
    }
    out.push_str(&format!(", {} set aside", q.set_aside));
    if q.set_aside > 0 {
        out.push_str(" (*.failed, *.bad)");
    }
    out.push_str(&format!(" in {}\n", q.dir.display()));
    for s in q.stuck.iter().take(STUCK_SHOWN) {
        let next = match s.next_attempt_ms.checked_sub(now_ms) {
            // Rounded up: "next in 0s" would read as "now".
            Some(wait) if wait > 0 => format!("next in {}", age(wait.div_ceil(1000) * 1000)),
            _ => "due".to_string(),
        };
        out.push_str(&format!(
            "  {}/{} {}: queued {} ago, {} attempts, {next}: {}\n",
            s.container_id,
            s.ifname,
            s.network.as_deref().unwrap_or("-"),
            age(now_ms.saturating_sub(s.queued_ms)),
            s.attempts,
            s.last_error,
        ));
    }
    if q.stuck.len() > STUCK_SHOWN {
        out.push_str(&format!(
            "  ... and {} more failing\n",
            q.stuck.len() - STUCK_SHOWN
        ));
    }
    out
}

/// `42s`, `3m07s`, `2h05m`: whole seconds are enough for something that waits.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use wasmgate_daemon::trace::MethodStats;

    #[test]
    fn stats_columns_line_up_under_long_names() {
        let calls: BTreeMap<String, MethodStats> = [
            ("cni.ADD", 3, 0, 3_000),
            ("cri.ListPodSandboxMetrics", 1, 1, 500),
            ("csi.ControllerGetCapabilities", 12, 0, 1_200),
        ]
        .into_iter()
        .map(|(name, ok, errors, total_us)| {
            let s = MethodStats {
                ok,
                errors,
                total_us,
            };
            (name.to_string(), s)
        })
        .collect();
        let table = super::stats_table(&calls);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        // Every column ends where the header's does, so every line is as long as the header.
        let width = lines[0].chars().count();
        for line in &lines {
            assert_eq!(line.chars().count(), width, "{table}");
        }
        let name_col = "csi.ControllerGetCapabilities".len();
        for line in &lines[1..] {
            let (name, numbers) = line.split_at(name_col);
            assert!(calls.contains_key(name.trim_end()), "{line:?}");
            assert!(numbers.starts_with(' '), "{line:?}");
        }
        let fields =
            |line: &str| -> Vec<String> { line.split_whitespace().map(str::to_string).collect() };
        assert_eq!(fields(lines[0]), ["CALL", "OK", "ERRORS", "MEAN", "µs"]);
        assert_eq!(fields(lines[1]), ["cni.ADD", "3", "0", "1000"]);
        assert_eq!(
            fields(lines[2]),
            ["cri.ListPodSandboxMetrics", "1", "1", "250"]
        );
        assert_eq!(
            fields(lines[3]),
            ["csi.ControllerGetCapabilities", "12", "0", "100"]
        );
    }

    #[test]
    fn the_queue_is_a_summary_then_a_line_per_failing_del() {
        use wasmgate_daemon::cni::queue::{DelQueueStats, StuckDel};
        let now = 10_000_000;
        let stuck = |cid: &str, queued_ms, next_attempt_ms| StuckDel {
            container_id: cid.into(),
            ifname: "eth0".into(),
            network: Some("my-cni-demo".into()),
            queued_ms,
            attempts: 4,
            last_error: "code 50: plugin late is not loaded".into(),
            next_attempt_ms,
        };
        let q = DelQueueStats {
            dir: "/var/lib/wasmgate/cni-del-queue".into(),
            queued: 3,
            oldest_queued_ms: Some(now - 185_000),
            set_aside: 1,
            stuck: vec![
                stuck("c1", now - 185_000, now + 4_200),
                stuck("c2", now - 7_200_000, now - 1),
            ],
        };
        assert_eq!(
            super::queue_lines(&q, now),
            "cni DEL queue: 3 waiting, oldest queued 3m05s ago, 1 set aside (*.failed, *.bad) \
             in /var/lib/wasmgate/cni-del-queue\n  \
             c1/eth0 my-cni-demo: queued 3m05s ago, 4 attempts, next in 5s: code 50: plugin late is not loaded\n  \
             c2/eth0 my-cni-demo: queued 2h00m ago, 4 attempts, due: code 50: plugin late is not loaded\n"
        );
        let empty = DelQueueStats {
            dir: "/q".into(),
            ..Default::default()
        };
        assert_eq!(
            super::queue_lines(&empty, now),
            "cni DEL queue: 0 waiting, 0 set aside in /q\n"
        );
    }

    #[test]
    fn stats_table_without_calls_is_its_header() {
        assert_eq!(
            super::stats_table(&BTreeMap::new()),
            "CALL       OK   ERRORS      MEAN µs\n"
        );
    }
}
