//! The example plugins' READMEs, checked: every `wasmtime run ... --invoke` command in a README's
//! `sh` blocks runs under the stock wasmtime CLI and must print what the `# ` lines after it say.
//! One test per README, so a failure names the plugin.
//!
//! How a block is read (the convention the READMEs follow):
//! - A *step* is a run of command lines with no blank line or `# ` line inside, such as one
//!   command with its `\` continuations, or a block's opening variable definitions.
//! - The `# ` lines right below a step are its output, one line each. A trailing comment in
//!   parentheses after two or more spaces (`# allow          (no \`to\`)`) is commentary, and
//!   `...` in an expected line stands for any text (`# ok({... ips: [...] ...})`).
//! - `# ` lines after a blank line are commentary, introducing the next command.
//! - A step with no `# ` lines below it (the variable definitions, a build) is run but its output
//!   is not compared; every step that calls `--invoke` must document its output.
//!
//! A block runs as one bash script (`-euo pipefail`), so the variables and functions it defines
//! (`POD`, `CTR`, `ctr`, `D`) carry over from step to step. `wasmtime` is
//! [`wasmgate_tests::wasmtime_cli`], first on PATH; `WASM` (and the C README's `W`, its path to
//! the CLI) are overridden to point at the component the harness built.
//!
//! JS and Python plugins are left out: their CLI runs are compared in `policy_hooks.rs` and
//! `network_plugins.rs`, and each costs ~20 s of compilation. So are the test fixtures
//! (`misbehave`, `hook-misbehave`, `csi-misbehave`), whose READMEs document no CLI runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmgate_tests::{lang, plugin, repo, unique, wasmtime_cli};

/// Printed between steps, so one script's stdout can be split back into each step's.
const SEPARATOR: &str = "\u{1e}readme-step\u{1e}";

/// One step of a block: its command lines, and the output documented below it.
struct Step {
    script: String,
    expected: Vec<String>,
}

/// The `sh` blocks of `readme` that call `--invoke`.
fn invoke_blocks(readme: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = readme;
    while let Some((_, after)) = rest.split_once("```sh\n") {
        let (block, after) = after.split_once("```").expect("an unterminated sh block");
        if block.contains("--invoke") {
            blocks.push(block);
        }
        rest = after;
    }
    blocks
}

/// A documented output line, without its trailing parenthesised commentary.
fn output_line(line: &str) -> String {
    let line = line.trim_end();
    if line.ends_with(')')
        && let Some(open) = line.find("  (")
    {
        return line[..open].trim_end().to_string();
    }
    line.to_string()
}

/// The steps of `block`, as the module doc describes.
fn steps(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    // What the previous line was: a command line, an output line, or neither (a blank line or
    // commentary).
    #[derive(PartialEq)]
    enum Prev {
        Command,
        Output,
        Other,
    }
    let mut prev = Prev::Other;
    for line in block.lines() {
        if line.trim().is_empty() {
            prev = Prev::Other;
        } else if let Some(comment) = line.strip_prefix('#') {
            if prev != Prev::Other {
                let step = steps.last_mut().unwrap();
                step.expected
                    .push(output_line(comment.strip_prefix(' ').unwrap_or(comment)));
                prev = Prev::Output;
            }
        } else {
            if prev == Prev::Command {
                let step = steps.last_mut().unwrap();
                step.script.push('\n');
                step.script.push_str(line);
            } else {
                steps.push(Step {
                    script: line.to_string(),
                    expected: Vec::new(),
                });
            }
            prev = Prev::Command;
        }
    }
    steps
}

/// Whether `actual` is `expected`, where `...` in `expected` stands for any text.
fn matches(expected: &str, actual: &str) -> bool {
    if !expected.contains("...") {
        return expected == actual;
    }
    let pieces: Vec<&str> = expected.split("...").map(str::trim).collect();
    let (first, last) = (pieces[0], pieces[pieces.len() - 1]);
    if !actual.starts_with(first) || !actual.ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// `line` with the value of `NAME=` replaced, when it assigns one of `overrides`.
fn overridden(line: &str, overrides: &[(&str, String)]) -> String {
    for (name, value) in overrides {
        if line.starts_with(&format!("{name}=")) {
            return format!("{name}='{value}'");
        }
    }
    line.to_string()
}

/// Runs the README's `--invoke` blocks from `cwd`, with `WASM` set to `wasm` and `wasmtime` on
/// PATH, after `rewrite` (for paths a test must not share), and checks every documented output.
fn readme_answers_as_documented(
    readme: &str,
    cwd: &Path,
    wasm: PathBuf,
    rewrite: impl Fn(&str) -> String,
) {
    let path = repo().join(readme);
    let text = std::fs::read_to_string(&path).unwrap();
    let blocks = invoke_blocks(&text);
    assert!(
        !blocks.is_empty(),
        "{readme} has no sh block that calls --invoke"
    );

    let bin = std::env::temp_dir().join(unique("wasmgate-readme-"));
    std::fs::create_dir_all(&bin).unwrap();
    let wasmtime = bin.join("wasmtime");
    std::os::unix::fs::symlink(wasmtime_cli(), &wasmtime).unwrap();
    let overrides = [
        ("WASM", wasm.display().to_string()),
        ("W", wasmtime.display().to_string()),
    ];

    let mut checked = 0;
    for block in blocks {
        let block = rewrite(block);
        let steps = steps(&block);
        let mut script = String::new();
        for step in &steps {
            assert!(
                !step.script.contains("--invoke") || !step.expected.is_empty(),
                "{readme}: no documented output for\n{}",
                step.script
            );
            let lines: Vec<String> = step
                .script
                .lines()
                .map(|l| overridden(l, &overrides))
                .collect();
            script.push_str(&lines.join("\n"));
            script.push_str(&format!("\necho '{SEPARATOR}'\n"));
        }
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(cwd)
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{readme}: the commands failed after printing\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Vec<&str> = stdout.split(&format!("{SEPARATOR}\n")).collect();
        assert_eq!(printed.len(), steps.len() + 1, "{readme}: {stdout}");
        for (step, printed) in steps.iter().zip(printed) {
            if step.expected.is_empty() {
                continue;
            }
            let lines: Vec<&str> = printed.lines().collect();
            let ok = lines.len() == step.expected.len()
                && lines.iter().zip(&step.expected).all(|(a, e)| matches(e, a));
            assert!(
                ok,
                "{readme}: for\n{}\nthe README says\n{}\nbut the CLI printed\n{}",
                step.script,
                step.expected.join("\n"),
                lines.join("\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "{readme}: only {checked} commands checked");
    std::fs::remove_dir_all(&bin).unwrap();
}

/// A Rust example plugin's README, run from its directory.
fn rust_readme(name: &str) {
    let dir = format!("plugins/rust/{name}");
    readme_answers_as_documented(
        &format!("{dir}/README.md"),
        &repo().join(&dir),
        plugin(name),
        str::to_string,
    );
}

#[test]
fn bridge_ipam() {
    rust_readme("bridge-ipam");
}

#[test]
fn hostpath_csi() {
    // The README's data directory, /tmp/hp, made private to this run.
    let data = std::env::temp_dir().join(unique("wasmgate-readme-hp-"));
    let dir = "plugins/rust/hostpath-csi";
    readme_answers_as_documented(
        &format!("{dir}/README.md"),
        &repo().join(dir),
        plugin("hostpath-csi"),
        |block| block.replace("/tmp/hp", &data.display().to_string()),
    );
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn hook_policy() {
    rust_readme("hook-policy");
}

#[test]
fn hook_inject() {
    rust_readme("hook-inject");
}

#[test]
fn hook_mirror() {
    rust_readme("hook-mirror");
}

#[test]
fn hook_workdir() {
    rust_readme("hook-workdir");
}

#[test]
fn c_hook_inject() {
    // The block builds and changes into the plugin's directory itself, from the repository root.
    readme_answers_as_documented(
        "plugins/c/hook-inject/README.md",
        &repo(),
        lang::c::plugin("hook-inject"),
        str::to_string,
    );
}

/// The READMEs the tests above check, and the fixtures left out on purpose.
const CHECKED: [&str; 7] = [
    "rust/bridge-ipam",
    "rust/hostpath-csi",
    "rust/hook-policy",
    "rust/hook-inject",
    "rust/hook-mirror",
    "rust/hook-workdir",
    "c/hook-inject",
];
const FIXTURES: [&str; 3] = [
    "rust/misbehave",
    "rust/hook-misbehave",
    "rust/csi-misbehave",
];

/// A new Rust or C example plugin needs a test here: its README's commands are checked too.
#[test]
fn every_rust_and_c_example_is_checked() {
    let mut found = Vec::new();
    for lang in ["rust", "c"] {
        for entry in std::fs::read_dir(repo().join("plugins").join(lang)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                found.push(format!("{lang}/{}", entry.file_name().to_str().unwrap()));
            }
        }
    }
    let unchecked: Vec<&String> = found
        .iter()
        .filter(|p| !CHECKED.contains(&p.as_str()) && !FIXTURES.contains(&p.as_str()))
        .collect();
    assert!(
        unchecked.is_empty(),
        "plugins/{unchecked:?}: add a test of the README's commands to this file"
    );
}

#[test]
fn how_blocks_are_read() {
    let block = "\
X=1
f() { echo; }

# commentary
wasmtime a \\
  --invoke 'b()' $WASM
# ok     (commentary too)
# second
ls
# vol-1
";
    let steps = steps(block);
    let seen: Vec<(&str, Vec<&str>)> = steps
        .iter()
        .map(|s| {
            (
                s.script.as_str(),
                s.expected.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("X=1\nf() { echo; }", vec![]),
            (
                "wasmtime a \\\n  --invoke 'b()' $WASM",
                vec!["ok", "second"]
            ),
            ("ls", vec!["vol-1"]),
        ]
    );
    assert!(matches("ok({... b: 1, ...})", "ok({a: 0, b: 1, c: 2})"));
    assert!(!matches("ok({... b: 2, ...})", "ok({a: 0, b: 1, c: 2})"));
    assert!(matches("allow", "allow"));
}
