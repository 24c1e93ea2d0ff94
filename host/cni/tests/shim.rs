//! Runs the built `wasmgate-cni` shim as a runtime would: crafted environment and stdin, checking
//! stdout, the exit code, the DEL queue, and what a fake daemon on a real unix socket receives.

use std::fs;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wasmgate_cni::wire::{self, Request, Response};
use wasmgate_cni::{CniError, Command as Cmd, DelQueue};

/// A unique directory under /tmp (short, to stay within the 108-byte socket path limit).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000;
        let dir = PathBuf::from(format!("/tmp/wgcni-{tag}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn socket(&self) -> PathBuf {
        self.0.join("cni.sock")
    }

    fn queue(&self) -> PathBuf {
        self.0.join("queue")
    }

    fn config(&self, timeout_ms: u64) -> String {
        json!({
            "cniVersion": "1.1.0",
            "name": "podnet",
            "type": "wasmgate-cni",
            "plugin": "bridge",
            "socket": self.socket(),
            "queueDir": self.queue(),
            "connectTimeoutMs": timeout_ms,
            "bridge": "cni0"
        })
        .to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout {:?} is not JSON: {e}", self.stdout))
    }
}

fn shim(env: &[(&str, &str)], stdin: &str) -> Out {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wasmgate-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut input) = child.stdin.take() {
        // The shim may legitimately exit before reading everything.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        elapsed: start.elapsed(),
    }
}

fn attach_env(command: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "ctr-1"),
        ("CNI_NETNS", "/var/run/netns/pod1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAME=web-0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn assert_error(out: &Out, code: u32, version: &str) -> Value {
    assert_eq!(
        out.code,
        Some(1),
        "stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
    let v = out.json();
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["cniVersion"], version, "{v}");
    v
}

/// A daemon that serves one connection: reads the request, then answers with `reply` (or just
/// hangs up when `None`), and hands the request back to the test.
fn fake_daemon(socket: &Path, reply: Option<Response>) -> JoinHandle<Request> {
    let listener = UnixListener::bind(socket).unwrap();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let req: Request = wire::read_line(BufReader::new(&stream)).unwrap();
        if let Some(reply) = reply {
            wire::write_line(&stream, &reply).unwrap();
        }
        req
    })
}

fn queued(dir: &Path) -> Vec<Request> {
    DelQueue::new(dir)
        .list()
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

#[test]
fn version_is_answered_locally() {
    let out = shim(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.json(),
        json!({"cniVersion": "0.4.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let out = shim(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(out.code, Some(0));
    assert_eq!(out.json()["cniVersion"], "1.1.0");
}

#[test]
fn missing_ifname_is_code_4() {
    let env: Vec<_> = attach_env("ADD")
        .into_iter()
        .filter(|(k, _)| *k != "CNI_IFNAME")
        .collect();
    let s = Scratch::new("noif");
    let out = shim(&env, &s.config(200).replace("1.1.0", "1.0.0"));
    let v = assert_error(&out, 4, "1.0.0");
    assert!(v["msg"].as_str().unwrap().contains("CNI_IFNAME"), "{v}");
}

#[test]
fn missing_command_is_code_4() {
    let out = shim(&[], "{}");
    let v = assert_error(&out, 4, "1.1.0");
    assert!(v["msg"].as_str().unwrap().contains("CNI_COMMAND"), "{v}");
}

#[test]
fn malformed_json_is_code_6() {
    let out = shim(&attach_env("ADD"), "{\"cniVersion\": ");
    assert_error(&out, 6, "1.1.0");
}

#[test]
fn unsupported_version_is_code_1() {
    let out = shim(
        &attach_env("ADD"),
        r#"{"cniVersion":"9.9.9","name":"n","type":"wasmgate-cni"}"#,
    );
    let v = assert_error(&out, 1, "1.1.0");
    assert!(v["msg"].as_str().unwrap().contains("9.9.9"), "{v}");
}

#[test]
fn add_without_daemon_is_try_again() {
    let s = Scratch::new("add");
    let out = shim(&attach_env("ADD"), &s.config(200));
    let v = assert_error(&out, 11, "1.1.0");
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .contains(&s.socket().display().to_string()),
        "{v}"
    );
    assert!(
        out.elapsed >= Duration::from_millis(200),
        "{:?}",
        out.elapsed
    );
    assert!(out.elapsed < Duration::from_secs(2), "{:?}", out.elapsed);
}

#[test]
fn gc_without_daemon_is_try_again() {
    let s = Scratch::new("gc");
    let out = shim(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &s.config(100),
    );
    assert_error(&out, 11, "1.1.0");
}

#[test]
fn del_without_daemon_is_queued() {
    let s = Scratch::new("del");
    let config = s.config(100);
    let out = shim(&attach_env("DEL"), &config);
    assert_eq!(
        out.code,
        Some(0),
        "stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("queued DEL"), "{}", out.stderr);
    let q = queued(&s.queue());
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].invocation.command, Cmd::Del);
    assert_eq!(q[0].invocation.container_id, "ctr-1");
    assert_eq!(q[0].invocation.ifname, "eth0");
    assert_eq!(q[0].config, config);
}

#[test]
fn del_unqueueable_fails_so_the_runtime_retries() {
    let s = Scratch::new("delro");
    fs::write(s.queue(), b"not a directory").unwrap();
    let out = shim(&attach_env("DEL"), &s.config(50));
    let v = assert_error(&out, 11, "1.1.0");
    assert!(
        v["msg"].as_str().unwrap().contains("queueing the DEL"),
        "{v}"
    );
}

#[test]
fn status_without_daemon_is_not_available() {
    let s = Scratch::new("status");
    let out = shim(&[("CNI_COMMAND", "STATUS")], &s.config(100));
    let v = assert_error(&out, 50, "1.1.0");
    assert_eq!(
        v["msg"],
        format!("wasmgate daemon not available at {}", s.socket().display())
    );
}

#[test]
fn add_is_forwarded_and_stdout_printed() {
    let s = Scratch::new("ok");
    let result = r#"{"cniVersion":"1.1.0","ips":[{"address":"10.1.0.5/24"}]}"#;
    let daemon = fake_daemon(
        &s.socket(),
        Some(Response::Ok {
            stdout: result.into(),
        }),
    );
    let config = s.config(2000);
    let out = shim(&attach_env("ADD"), &config);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, result);

    let req = daemon.join().unwrap();
    assert_eq!(req.config, config);
    assert_eq!(req.invocation.command, Cmd::Add);
    assert_eq!(req.invocation.container_id, "ctr-1");
    assert_eq!(req.invocation.netns, "/var/run/netns/pod1");
    assert_eq!(req.invocation.ifname, "eth0");
    assert_eq!(req.invocation.arg("K8S_POD_NAME"), Some("web-0"));
    assert_eq!(req.invocation.path, ["/opt/cni/bin"]);
    assert_eq!(req.invocation.validate(), Ok(()));
}

#[test]
fn daemon_error_is_printed_in_the_config_version() {
    let s = Scratch::new("err");
    let error = CniError::new(102, "attachment already exists", "podnet/ctr-1/eth0");
    let daemon = fake_daemon(&s.socket(), Some(Response::Err { error }));
    let out = shim(
        &attach_env("ADD"),
        &s.config(2000).replace("1.1.0", "0.4.0"),
    );
    let v = assert_error(&out, 102, "0.4.0");
    assert_eq!(v["msg"], "attachment already exists");
    assert_eq!(v["details"], "podnet/ctr-1/eth0");
    daemon.join().unwrap();
}

#[test]
fn del_delivered_prints_nothing_and_queues_nothing() {
    let s = Scratch::new("delok");
    let daemon = fake_daemon(
        &s.socket(),
        Some(Response::Ok {
            stdout: String::new(),
        }),
    );
    let out = shim(&attach_env("DEL"), &s.config(2000));
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""));
    assert_eq!(daemon.join().unwrap().invocation.command, Cmd::Del);
    assert!(queued(&s.queue()).is_empty());
}

#[test]
fn dropped_connection_is_try_again_or_queued() {
    let s = Scratch::new("drop");
    let daemon = fake_daemon(&s.socket(), None);
    let out = shim(&attach_env("ADD"), &s.config(2000));
    let v = assert_error(&out, 11, "1.1.0");
    assert!(v["msg"].as_str().unwrap().contains("dropped"), "{v}");
    daemon.join().unwrap();

    fs::remove_file(s.socket()).unwrap();
    let daemon = fake_daemon(&s.socket(), None);
    let out = shim(&attach_env("DEL"), &s.config(2000));
    assert_eq!(out.code, Some(0), "{}", out.stdout);
    daemon.join().unwrap();
    assert_eq!(queued(&s.queue()).len(), 1);
}

#[test]
fn hung_daemon_is_bounded_by_call_timeout() {
    // A daemon that accepts and reads but never answers: the shim gives up after callTimeoutMs,
    // with 11 for ADD and a queued DEL.
    let s = Scratch::new("hung");
    let listener = UnixListener::bind(s.socket()).unwrap();
    let holder = thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..2 {
            let (stream, _) = listener.accept().unwrap();
            let _: Request = wire::read_line(BufReader::new(&stream)).unwrap();
            held.push(stream); // keep it open, say nothing
        }
        held
    });
    let with_call_timeout = |ms: u64| {
        let mut v: Value = serde_json::from_str(&s.config(2000)).unwrap();
        v["callTimeoutMs"] = json!(ms);
        v.to_string()
    };
    let out = shim(&attach_env("ADD"), &with_call_timeout(300));
    let v = assert_error(&out, 11, "1.1.0");
    assert!(
        v["details"]
            .as_str()
            .unwrap()
            .contains("no reply within 300 ms"),
        "{v}"
    );
    assert!(out.elapsed < Duration::from_secs(3), "{:?}", out.elapsed);

    let out = shim(&attach_env("DEL"), &with_call_timeout(300));
    assert_eq!(out.code, Some(0), "{} {}", out.stdout, out.stderr);
    assert_eq!(queued(&s.queue()).len(), 1);
    drop(holder.join().unwrap());
}

#[test]
fn late_daemon_is_waited_for() {
    let s = Scratch::new("late");
    let socket = s.socket();
    let daemon = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        fake_daemon(
            &socket,
            Some(Response::Ok {
                stdout: String::new(),
            }),
        )
        .join()
        .unwrap()
    });
    let out = shim(&attach_env("CHECK"), &{
        let mut c: Value = serde_json::from_str(&s.config(5000)).unwrap();
        c["prevResult"] = json!({"cniVersion": "1.1.0"});
        c.to_string()
    });
    assert_eq!(out.code, Some(0), "{} {}", out.stdout, out.stderr);
    assert_eq!(daemon.join().unwrap().invocation.command, Cmd::Check);
}
