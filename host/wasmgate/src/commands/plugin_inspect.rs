//! `wasmgate plugin inspect FILE`: what a component imports and exports, and which wasmgate
//! worlds it fits, without a daemon. The check is the one the daemon loads plugins with
//! ([`wasmgate_engine::inspect`]), so a misfit reads here as the daemon would refuse it.

use std::path::PathBuf;

use anyhow::Context;
use wasmgate_engine::inspect::{Item, Report, inspect};
use wasmgate_engine::{EngineConfig, WasmEngine};

#[derive(clap::Args)]
pub struct Args {
    /// The component (`.wasm`) to inspect.
    file: PathBuf,
}

pub fn run(args: &Args, json: bool) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("read {}", args.file.display()))?;
    // No pool: one compile, no instances, and no address space reserved for slots.
    let engine = WasmEngine::new(&EngineConfig {
        max_instances: 1,
        pooling: false,
        ..Default::default()
    })
    .context("start the wasm engine")?;
    let report = inspect(&engine, &bytes).with_context(|| args.file.display().to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&args.file.display().to_string(), &report));
    }
    if report.fitting().next().is_none() {
        anyhow::bail!("{} fits no wasmgate world", args.file.display());
    }
    Ok(())
}

fn render(file: &str, r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{file}");
    let _ = writeln!(out, "  sha256   {}", r.sha256);
    let _ = writeln!(out, "  size     {} bytes", r.size);
    // wit-component drops the world name when it builds a component: only the interface names
    // and their package versions remain.
    if r.packages.is_empty() {
        let _ = writeln!(out, "  package  none: it names no wasmgate interface");
    } else {
        let _ = writeln!(
            out,
            "  package  {} (named by its interfaces; a component does not record its world)",
            r.packages.join(", ")
        );
    }

    let width = r
        .imports
        .iter()
        .chain(&r.exports)
        .map(|i| i.name.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "\nimports");
    if r.imports.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for i in &r.imports {
        let status = if i.problem.is_some() { "NO" } else { "ok" };
        let _ = writeln!(out, "  {status}  {:<width$}  {}", i.name, summary(i));
        if let Some(p) = &i.problem {
            let _ = writeln!(out, "        {p}");
        }
    }
    let _ = writeln!(out, "\nexports");
    if r.exports.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for e in &r.exports {
        let functions = if e.functions.is_empty() {
            summary(e)
        } else {
            e.functions.join(", ")
        };
        let _ = writeln!(out, "  {:<width$}  {functions}", e.name);
    }

    let _ = writeln!(out, "\nworlds");
    for w in &r.worlds {
        let world = format!("{:?}", w.world).to_lowercase();
        let verdict = if w.fits { "fits" } else { "does not fit" };
        let _ = writeln!(out, "  {world:<8} {:<38} {verdict}", w.name);
        for p in &w.problems {
            let _ = writeln!(out, "      {p}");
        }
    }
    let fits: Vec<String> = r
        .fitting()
        .map(|w| format!("world = \"{}\"", format!("{:?}", w.world).to_lowercase()))
        .collect();
    if !fits.is_empty() {
        let _ = writeln!(out, "\nfits: declare it with {}", fits.join(" or "));
    }
    out
}

/// `instance: 2 resources, 5 functions`.
fn summary(i: &Item) -> String {
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut parts = Vec::new();
    if !i.resources.is_empty() {
        parts.push(count(i.resources.len(), "resource"));
    }
    if !i.functions.is_empty() {
        parts.push(count(i.functions.len(), "function"));
    }
    if parts.is_empty() {
        i.kind.to_string()
    } else {
        format!("{}: {}", i.kind, parts.join(", "))
    }
}
