//! `wasmgate-cni`: the executable a container runtime runs as a CNI plugin.
//!
//! It answers VERSION itself and forwards every other call to the wasmgate daemon over a unix
//! socket, one request and one response per connection ([`wasmgate_cni::wire`]). The environment
//! and the config are checked before the daemon is contacted, so a malformed call gets its spec
//! error even while the daemon is down. A DEL that cannot be delivered is queued on disk
//! ([`DelQueue`]) and reported as success, so a daemon restart never leaks an attachment.
//!
//! It depends on nothing heavier than serde: the runtime execs it for every pod, so it must start
//! fast and stay small.

use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmgate_cni::conf::{self, NetConf};
use wasmgate_cni::env;
use wasmgate_cni::error::code;
use wasmgate_cni::version::{LATEST, SUPPORTED_VERSIONS, version_result};
use wasmgate_cni::wire::{self, Request, Response};
use wasmgate_cni::{CniError, Command, DelQueue};

/// Far above any real config (even one with a large `prevResult`), and well below the wire's
/// line limit once JSON-escaped into the request.
const MAX_STDIN: usize = 4 << 20;

/// First retry delay; doubled each time up to `MAX_BACKOFF`, so a restarting daemon is picked up
/// quickly without the shim spinning.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    // The error object is written in the config's version when that is one we speak.
    let mut err_version = LATEST.to_string();
    match run(&mut err_version) {
        Ok(out) => {
            emit(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            emit(&format!("{}\n", e.to_json(&err_version)));
            ExitCode::FAILURE
        }
    }
}

fn run(err_version: &mut String) -> Result<String, CniError> {
    check_env_is_utf8()?;
    // Runtimes always pipe the config in; a terminal means a human running us by hand, who
    // should get an answer (VERSION) or an error rather than a hang.
    let stdin = if io::stdin().is_terminal() {
        Vec::new()
    } else {
        read_stdin()?
    };
    if let Some(v) = declared_version(&stdin) {
        *err_version = v;
    }

    let inv = env::from_env(|k| std::env::var(k).ok())?;
    let conf = conf::parse(&stdin, inv.command)?;
    if inv.command == Command::Version {
        return Ok(format!("{}\n", version_result(&conf.cni_version)));
    }
    *err_version = conf.cni_version.clone();

    // `parse` accepted it as JSON, so it is UTF-8; this only guards against that changing.
    let config = String::from_utf8(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            format!("network config is not UTF-8: {e}"),
            "",
        )
    })?;
    call_daemon(
        Request {
            invocation: inv,
            config,
        },
        &conf,
    )
}

/// `from_env` takes `String`s; a non-UTF-8 value would otherwise look unset or get mangled.
fn check_env_is_utf8() -> Result<(), CniError> {
    for name in env::VARIABLES {
        if let Some(v) = std::env::var_os(name)
            && v.to_str().is_none()
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "{name} {:?} is invalid: must be valid UTF-8",
                    v.to_string_lossy()
                ),
                "",
            ));
        }
    }
    Ok(())
}

fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    io::stdin()
        .lock()
        .take(MAX_STDIN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            CniError::new(
                code::IO,
                format!("reading the network config from stdin failed: {e}"),
                "",
            )
        })?;
    if buf.len() > MAX_STDIN {
        return Err(CniError::new(
            code::DECODE,
            format!("network config on stdin exceeds {MAX_STDIN} bytes"),
            "",
        ));
    }
    Ok(buf)
}

/// The config's `cniVersion` if it is one we speak, read leniently so errors found before the
/// config is fully parsed still answer in the runtime's version.
fn declared_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    let ver = v.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS.contains(&ver).then(|| ver.to_string())
}

fn call_daemon(req: Request, conf: &NetConf) -> Result<String, CniError> {
    let socket = conf.socket_path();
    let queue_when_down = req.invocation.command == Command::Del;
    let stream = match connect(&socket, conf.connect_timeout(), queue_when_down) {
        Ok(s) => s,
        Err(e) => return unreachable(&req, conf, &socket, &e),
    };
    match exchange(&stream, &req, conf.call_timeout()) {
        Ok(Response::Ok { stdout }) => Ok(stdout),
        Ok(Response::Err { error }) => Err(error),
        Err(e) => dropped(&req, conf, &socket, &e),
    }
}

/// Retries until `timeout`: the daemon may be starting or restarting, and the socket may not
/// exist yet or refuse connections for a moment. With `down_is_final`, a socket that is absent
/// or that nobody listens on fails at once: a DEL is queued then, and the runtime that waits for
/// it (crictl's 2 s, kubelet's pod teardown) need not wait out the timeout.
fn connect(path: &Path, timeout: Duration, down_is_final: bool) -> io::Result<UnixStream> {
    let start = Instant::now();
    let mut delay = FIRST_BACKOFF;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e)
                if down_is_final
                    && matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
            {
                return Err(e);
            }
            Err(e) => {
                let elapsed = start.elapsed();
                if elapsed >= timeout {
                    return Err(e);
                }
                thread::sleep(delay.min(timeout - elapsed));
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The daemon bounds every plugin call itself; `timeout` only catches a daemon that hangs, and
/// then a DEL is still queued rather than lost.
fn exchange(stream: &UnixStream, req: &Request, timeout: Duration) -> io::Result<Response> {
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    wire::write_line(stream, req)?;
    wire::read_line(BufReader::new(stream)).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no reply within {} ms", timeout.as_millis()),
        ),
        _ => e,
    })
}

fn unreachable(
    req: &Request,
    conf: &NetConf,
    socket: &Path,
    e: &io::Error,
) -> Result<String, CniError> {
    let why = format!("connecting to {} failed: {e}", socket.display());
    match req.invocation.command {
        Command::Del => queue_del(req, conf, socket, &why),
        Command::Status => Err(CniError::new(
            code::NOT_AVAILABLE,
            format!("wasmgate daemon not available at {}", socket.display()),
            why,
        )),
        _ => Err(CniError::new(
            code::TRY_AGAIN,
            format!(
                "wasmgate daemon not reachable at {}; try again",
                socket.display()
            ),
            why,
        )),
    }
}

/// The daemon may or may not have acted on the call; for DEL that is fine because DEL is
/// idempotent, so it is queued and replayed.
fn dropped(
    req: &Request,
    conf: &NetConf,
    socket: &Path,
    e: &io::Error,
) -> Result<String, CniError> {
    let why = format!("exchange with {} failed: {e}", socket.display());
    if req.invocation.command == Command::Del {
        return queue_del(req, conf, socket, &why);
    }
    Err(CniError::new(
        code::TRY_AGAIN,
        format!(
            "connection to wasmgate daemon at {} dropped mid-call; try again",
            socket.display()
        ),
        why,
    ))
}

fn queue_del(req: &Request, conf: &NetConf, socket: &Path, why: &str) -> Result<String, CniError> {
    let queue = DelQueue::new(conf.queue_dir());
    match queue.push(req) {
        Ok(path) => {
            log(&format!(
                "{why}; queued DEL of container {:?} ifname {:?} in {} for the daemon to replay",
                req.invocation.container_id,
                req.invocation.ifname,
                path.display()
            ));
            Ok(String::new())
        }
        // Only now may the DEL fail: with nowhere to keep it, the runtime must retry it.
        Err(qe) => Err(CniError::new(
            code::TRY_AGAIN,
            format!(
                "wasmgate daemon not reachable at {} and queueing the DEL in {} failed: {qe}",
                socket.display(),
                queue.dir().display()
            ),
            why,
        )),
    }
}

/// `print!` panics when stdout is closed; a plugin must not, and has nobody left to tell anyway.
fn emit(s: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

fn log(line: &str) {
    let _ = writeln!(io::stderr(), "wasmgate-cni: {line}");
}
