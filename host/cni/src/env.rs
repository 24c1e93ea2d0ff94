//! The `CNI_*` environment of one plugin call, parsed and checked per CNI spec 1.1 "Parameters".
//!
//! The shim builds an [`Invocation`] with [`from_env`] before it talks to the daemon, so a
//! malformed call gets its code-4 error even when the daemon is down. The daemon receives the
//! invocation over the wire and runs [`Invocation::validate`] again, because anything that can
//! open the socket can send it whatever it likes.

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::error::{CniError, code};

pub const CNI_COMMAND: &str = "CNI_COMMAND";
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
pub const CNI_NETNS: &str = "CNI_NETNS";
pub const CNI_IFNAME: &str = "CNI_IFNAME";
pub const CNI_ARGS: &str = "CNI_ARGS";
pub const CNI_PATH: &str = "CNI_PATH";

/// Every variable the spec defines, in the order they are read.
pub const VARIABLES: [&str; 6] = [
    CNI_COMMAND,
    CNI_CONTAINERID,
    CNI_NETNS,
    CNI_IFNAME,
    CNI_ARGS,
    CNI_PATH,
];

/// Linux's IFNAMSIZ is 16 including the terminating NUL.
const IFNAME_MAX: usize = 15;

/// One call's parameters. Fields a command does not use are empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub command: Command,
    #[serde(default)]
    pub container_id: String,
    /// Empty when the runtime gave none (allowed for DEL: the netns may already be gone).
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub ifname: String,
    /// `CNI_ARGS` pairs in the order given.
    #[serde(default)]
    pub args: Vec<(String, String)>,
    /// `CNI_PATH` entries in the order given.
    #[serde(default)]
    pub path: Vec<String>,
}

/// Reads the `CNI_*` variables through `get` and applies the spec's rules. Empty values count as
/// unset, as in libcni's skel.
///
/// Which variables are required follows spec 1.1: ADD and CHECK need the container ID, netns and
/// ifname; DEL needs the container ID and ifname; ADD, DEL, CHECK and GC need `CNI_PATH`; STATUS
/// and VERSION need only `CNI_COMMAND`. `CNI_ARGS` is read for ADD, DEL and CHECK only.
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
    let get = |name: &str| get(name).filter(|v| !v.is_empty());
    let require = |name: &str| get(name).ok_or_else(|| missing(name));

    let raw = require(CNI_COMMAND)?;
    let command: Command = raw.parse().map_err(|_| {
        let all: Vec<_> = Command::ALL.iter().map(|c| c.as_str()).collect();
        invalid(
            CNI_COMMAND,
            &raw,
            &format!("must be one of {}", all.join(", ")),
        )
    })?;

    let mut inv = Invocation {
        command,
        container_id: String::new(),
        netns: String::new(),
        ifname: String::new(),
        args: Vec::new(),
        path: Vec::new(),
    };

    if command.is_attachment() {
        inv.container_id = require(CNI_CONTAINERID)?;
        check(CNI_CONTAINERID, &inv.container_id, container_id_problem)?;
        inv.netns = if needs_netns(command) {
            require(CNI_NETNS)?
        } else {
            get(CNI_NETNS).unwrap_or_default()
        };
        check(CNI_NETNS, &inv.netns, netns_problem)?;
        inv.ifname = require(CNI_IFNAME)?;
        check(CNI_IFNAME, &inv.ifname, ifname_problem)?;
        if let Some(args) = get(CNI_ARGS) {
            inv.args = parse_args(&args)?;
        }
    }

    let path = match command {
        Command::Version => None,
        c if needs_path(c) => Some(require(CNI_PATH)?),
        _ => get(CNI_PATH),
    };
    if let Some(path) = path {
        // Empty entries ("a::b", a trailing ':') mean nothing, so drop them like a shell would.
        inv.path = path
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        check(CNI_PATH, &path, |_| {
            path_problem(&inv.path, needs_path(command))
        })?;
    }
    Ok(inv)
}

impl Invocation {
    /// Re-applies [`from_env`]'s rules to an invocation that arrived from elsewhere. Fields that a
    /// command does not need may be empty, but if set they must still be well-formed.
    pub fn validate(&self) -> Result<(), CniError> {
        let attach = self.command.is_attachment();
        field(
            CNI_CONTAINERID,
            &self.container_id,
            attach,
            container_id_problem,
        )?;
        field(
            CNI_NETNS,
            &self.netns,
            needs_netns(self.command),
            netns_problem,
        )?;
        field(CNI_IFNAME, &self.ifname, attach, ifname_problem)?;
        for (k, v) in &self.args {
            if let Some(why) = arg_problem(k, v) {
                return Err(invalid(CNI_ARGS, &format!("{k}={v}"), &why));
            }
        }
        if let Some(why) = path_problem(&self.path, needs_path(self.command)) {
            return Err(invalid(CNI_PATH, &self.path.join(":"), &why));
        }
        Ok(())
    }

    /// The value of a `CNI_ARGS` key, e.g. `K8S_POD_NAME`; the first one wins if repeated.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn needs_netns(c: Command) -> bool {
    matches!(c, Command::Add | Command::Check)
}

fn needs_path(c: Command) -> bool {
    matches!(
        c,
        Command::Add | Command::Del | Command::Check | Command::Gc
    )
}

/// Parses `K1=V1;K2=V2`. Empty segments (a trailing ';') are skipped; a segment without '=' or
/// with an empty key is an error.
fn parse_args(raw: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for pair in raw.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(invalid(
                CNI_ARGS,
                raw,
                &format!("pair {pair:?} is not KEY=VALUE"),
            ));
        };
        if let Some(why) = arg_problem(k, v) {
            return Err(invalid(CNI_ARGS, raw, &why));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn field(
    name: &str,
    value: &str,
    required: bool,
    problem: fn(&str) -> Option<String>,
) -> Result<(), CniError> {
    if value.is_empty() {
        return if required { Err(missing(name)) } else { Ok(()) };
    }
    check(name, value, problem)
}

fn check(
    name: &str,
    value: &str,
    problem: impl Fn(&str) -> Option<String>,
) -> Result<(), CniError> {
    match problem(value) {
        Some(why) => Err(invalid(name, value, &why)),
        None => Ok(()),
    }
}

/// The spec's container ID rule: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub(crate) fn container_id_problem(id: &str) -> Option<String> {
    identifier_problem(id)
}

/// Shared by container IDs and network names, which the spec constrains identically.
pub(crate) fn identifier_problem(s: &str) -> Option<String> {
    let mut bytes = s.bytes();
    match bytes.next() {
        None => Some("must not be empty".into()),
        Some(b) if !b.is_ascii_alphanumeric() => {
            Some("must start with an ASCII letter or digit".into())
        }
        _ if bytes.any(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))) => {
            Some("must contain only ASCII letters, digits, '_', '.' and '-'".into())
        }
        _ => None,
    }
}

/// Linux's `dev_valid_name` plus the spec's ban on ':' and whitespace.
fn ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("must not be empty".into())
    } else if name.len() > IFNAME_MAX {
        Some(format!("must be at most {IFNAME_MAX} bytes"))
    } else if name == "." || name == ".." {
        Some("must not be \".\" or \"..\"".into())
    } else if name.contains('/') {
        Some("must not contain '/'".into())
    } else if name.contains(':') {
        Some("must not contain ':'".into())
    } else if name.chars().any(char::is_whitespace) {
        Some("must not contain whitespace".into())
    } else if name.contains('\0') {
        Some("must not contain NUL".into())
    } else {
        None
    }
}

/// The spec asks for a path to the namespace; a relative one would be resolved against
/// whichever working directory opens it, which is no way to name a pod. (That it is not the
/// host's own namespace is checked where it is opened: the daemon.) Empty is a DEL's "none".
fn netns_problem(netns: &str) -> Option<String> {
    if netns.contains('\0') {
        Some("must not contain NUL".into())
    } else if !netns.is_empty() && !netns.starts_with('/') {
        Some("must be an absolute path".into())
    } else {
        None
    }
}

fn path_problem(path: &[String], required: bool) -> Option<String> {
    if required && path.is_empty() {
        return Some("must name at least one directory".into());
    }
    path.iter().find_map(|p| {
        if p.is_empty() {
            Some("must not contain empty entries".into())
        } else if p.contains(':') || p.contains('\0') {
            Some(format!("entry {p:?} must not contain ':' or NUL"))
        } else {
            None
        }
    })
}

/// Keeps pairs re-joinable as `K=V;...`, so the daemon can hand them to a plugin unchanged.
fn arg_problem(k: &str, v: &str) -> Option<String> {
    if k.is_empty() {
        Some("keys must not be empty".into())
    } else if k.contains(['=', ';', '\0']) {
        Some(format!("key {k:?} must not contain '=', ';' or NUL"))
    } else if v.contains([';', '\0']) {
        Some(format!("value of {k:?} must not contain ';' or NUL"))
    } else {
        None
    }
}

fn missing(name: &str) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        format!("required environment variable {name} is missing"),
        "",
    )
}

fn invalid(name: &str, value: &str, why: &str) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        format!("{name} {value:?} is invalid: {why}"),
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn add_env<'a>(overrides: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut base = vec![
            (CNI_COMMAND, "ADD"),
            (CNI_CONTAINERID, "abc123"),
            (CNI_NETNS, "/var/run/netns/pod1"),
            (CNI_IFNAME, "eth0"),
            (CNI_PATH, "/opt/cni/bin:/usr/libexec/cni"),
        ];
        for (k, v) in overrides {
            base.retain(|(bk, _)| bk != k);
            if !v.is_empty() {
                base.push((k, v));
            }
        }
        base
    }

    fn err(pairs: &[(&str, &str)]) -> CniError {
        from_env(env(pairs)).unwrap_err()
    }

    #[test]
    fn parses_a_full_add() {
        let inv = from_env(env(&add_env(&[(
            CNI_ARGS,
            "IgnoreUnknown=1;K8S_POD_NAME=web-0;",
        )])))
        .unwrap();
        assert_eq!(
            inv,
            Invocation {
                command: Command::Add,
                container_id: "abc123".into(),
                netns: "/var/run/netns/pod1".into(),
                ifname: "eth0".into(),
                args: vec![
                    ("IgnoreUnknown".into(), "1".into()),
                    ("K8S_POD_NAME".into(), "web-0".into())
                ],
                path: vec!["/opt/cni/bin".into(), "/usr/libexec/cni".into()],
            }
        );
        assert_eq!(inv.arg("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(inv.arg("nope"), None);
        assert_eq!(inv.validate(), Ok(()));
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        let e = err(&[]);
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_COMMAND"), "{}", e.msg);
        let e = err(&[(CNI_COMMAND, "")]);
        assert!(e.msg.contains("CNI_COMMAND is missing"), "{}", e.msg);
        let e = err(&[(CNI_COMMAND, "FROB")]);
        assert_eq!(e.code, code::INVALID_ENV);
        assert_eq!(
            e.msg,
            "CNI_COMMAND \"FROB\" is invalid: must be one of ADD, DEL, CHECK, STATUS, GC, VERSION"
        );
    }

    #[test]
    fn version_needs_nothing_else() {
        let inv = from_env(env(&[(CNI_COMMAND, "VERSION"), (CNI_IFNAME, "a/b")])).unwrap();
        assert_eq!(inv.command, Command::Version);
        assert!(inv.ifname.is_empty() && inv.path.is_empty());
        assert_eq!(inv.validate(), Ok(()));
    }

    #[test]
    fn status_path_is_optional_gc_path_is_required() {
        let inv = from_env(env(&[(CNI_COMMAND, "STATUS")])).unwrap();
        assert_eq!(inv.command, Command::Status);
        let inv = from_env(env(&[(CNI_COMMAND, "STATUS"), (CNI_PATH, "/opt/cni/bin")])).unwrap();
        assert_eq!(inv.path, ["/opt/cni/bin"]);
        let e = err(&[(CNI_COMMAND, "GC")]);
        assert_eq!(
            (e.code, e.msg.as_str()),
            (4, "required environment variable CNI_PATH is missing")
        );
        let inv = from_env(env(&[
            (CNI_COMMAND, "GC"),
            (CNI_PATH, "/opt/cni/bin"),
            (CNI_IFNAME, "a/b"),
        ]))
        .unwrap();
        assert!(inv.ifname.is_empty(), "GC ignores attachment variables");
    }

    #[test]
    fn required_variables_per_command() {
        for (cmd, var) in [
            ("ADD", CNI_CONTAINERID),
            ("ADD", CNI_NETNS),
            ("ADD", CNI_IFNAME),
            ("ADD", CNI_PATH),
            ("CHECK", CNI_NETNS),
            ("CHECK", CNI_PATH),
            ("DEL", CNI_CONTAINERID),
            ("DEL", CNI_IFNAME),
            ("DEL", CNI_PATH),
        ] {
            let e = err(&add_env(&[(CNI_COMMAND, cmd), (var, "")]));
            assert_eq!(e.code, code::INVALID_ENV, "{cmd} {var}");
            assert_eq!(
                e.msg,
                format!("required environment variable {var} is missing")
            );
        }
    }

    #[test]
    fn del_netns_is_optional() {
        let inv = from_env(env(&add_env(&[(CNI_COMMAND, "DEL"), (CNI_NETNS, "")]))).unwrap();
        assert_eq!(inv.netns, "");
        assert_eq!(inv.validate(), Ok(()));
    }

    #[test]
    fn bad_container_ids() {
        for (id, why) in [
            ("-abc", "must start with an ASCII letter or digit"),
            ("_abc", "must start with an ASCII letter or digit"),
            (
                "ab c",
                "must contain only ASCII letters, digits, '_', '.' and '-'",
            ),
            (
                "ab/c",
                "must contain only ASCII letters, digits, '_', '.' and '-'",
            ),
            ("é", "must start with an ASCII letter or digit"),
        ] {
            let e = err(&add_env(&[(CNI_CONTAINERID, id)]));
            assert_eq!(e.code, code::INVALID_ENV);
            assert_eq!(e.msg, format!("CNI_CONTAINERID {id:?} is invalid: {why}"));
        }
        assert!(from_env(env(&add_env(&[(CNI_CONTAINERID, "a_b.c-D9")]))).is_ok());
    }

    #[test]
    fn bad_ifnames() {
        for (name, why) in [
            ("a/b", "must not contain '/'"),
            ("a:b", "must not contain ':'"),
            ("a b", "must not contain whitespace"),
            ("a\tb", "must not contain whitespace"),
            ("a\0b", "must not contain NUL"),
            (".", "must not be \".\" or \"..\""),
            ("..", "must not be \".\" or \"..\""),
            ("abcdefghijklmnop", "must be at most 15 bytes"),
        ] {
            let e = err(&add_env(&[(CNI_IFNAME, name)]));
            assert_eq!(e.code, code::INVALID_ENV);
            assert_eq!(e.msg, format!("CNI_IFNAME {name:?} is invalid: {why}"));
        }
        assert_eq!(
            err(&add_env(&[(CNI_IFNAME, "a/b")])).msg,
            "CNI_IFNAME \"a/b\" is invalid: must not contain '/'"
        );
        assert!(from_env(env(&add_env(&[(CNI_IFNAME, "abcdefghijklmno")]))).is_ok());
    }

    #[test]
    fn bad_netns() {
        let e = err(&add_env(&[(CNI_NETNS, "/a\0b")]));
        assert_eq!(
            e.msg,
            "CNI_NETNS \"/a\\0b\" is invalid: must not contain NUL"
        );
        for command in ["ADD", "CHECK", "DEL"] {
            let e = err(&add_env(&[
                (CNI_COMMAND, command),
                (CNI_NETNS, "proc/1/ns/net"),
            ]));
            assert_eq!(
                (e.code, e.msg.as_str()),
                (
                    code::INVALID_ENV,
                    "CNI_NETNS \"proc/1/ns/net\" is invalid: must be an absolute path"
                ),
                "{command}"
            );
        }
        let relative = Invocation {
            netns: "./pod".into(),
            ..from_env(env(&add_env(&[]))).unwrap()
        };
        assert!(
            relative
                .validate()
                .unwrap_err()
                .msg
                .contains("must be an absolute path")
        );
    }

    #[test]
    fn bad_args() {
        for (args, why) in [
            ("FOO", "pair \"FOO\" is not KEY=VALUE"),
            ("A=1;BAR", "pair \"BAR\" is not KEY=VALUE"),
            ("=1", "keys must not be empty"),
            ("A=\0", "value of \"A\" must not contain ';' or NUL"),
        ] {
            let e = err(&add_env(&[(CNI_ARGS, args)]));
            assert_eq!(e.code, code::INVALID_ENV);
            assert_eq!(e.msg, format!("CNI_ARGS {args:?} is invalid: {why}"));
        }
        let inv = from_env(env(&add_env(&[(CNI_ARGS, "A=x=y;B=")]))).unwrap();
        assert_eq!(
            inv.args,
            [("A".into(), "x=y".into()), ("B".into(), String::new())]
        );
    }

    #[test]
    fn bad_path() {
        let e = err(&add_env(&[(CNI_PATH, ":::")]));
        assert_eq!(e.code, code::INVALID_ENV);
        assert_eq!(
            e.msg,
            "CNI_PATH \":::\" is invalid: must name at least one directory"
        );
        let e = err(&add_env(&[(CNI_PATH, "/a\0")]));
        assert_eq!(
            e.msg,
            "CNI_PATH \"/a\\0\" is invalid: entry \"/a\\0\" must not contain ':' or NUL"
        );
        let inv = from_env(env(&add_env(&[(CNI_PATH, "/a::/b:")]))).unwrap();
        assert_eq!(inv.path, ["/a", "/b"]);
    }

    fn good() -> Invocation {
        from_env(env(&add_env(&[(CNI_ARGS, "A=1")]))).unwrap()
    }

    #[test]
    fn validate_rejects_what_from_env_would() {
        let cases: Vec<(Invocation, &str)> = vec![
            (
                Invocation {
                    container_id: String::new(),
                    ..good()
                },
                "required environment variable CNI_CONTAINERID is missing",
            ),
            (
                Invocation {
                    container_id: ".x".into(),
                    ..good()
                },
                "CNI_CONTAINERID \".x\" is invalid: must start with an ASCII letter or digit",
            ),
            (
                Invocation {
                    netns: String::new(),
                    ..good()
                },
                "required environment variable CNI_NETNS is missing",
            ),
            (
                Invocation {
                    netns: "\0".into(),
                    ..good()
                },
                "CNI_NETNS \"\\0\" is invalid: must not contain NUL",
            ),
            (
                Invocation {
                    ifname: String::new(),
                    ..good()
                },
                "required environment variable CNI_IFNAME is missing",
            ),
            (
                Invocation {
                    ifname: "../x".into(),
                    ..good()
                },
                "CNI_IFNAME \"../x\" is invalid: must not contain '/'",
            ),
            (
                Invocation {
                    path: vec![],
                    ..good()
                },
                "CNI_PATH \"\" is invalid: must name at least one directory",
            ),
            (
                Invocation {
                    path: vec![String::new()],
                    ..good()
                },
                "CNI_PATH \"\" is invalid: must not contain empty entries",
            ),
            (
                Invocation {
                    path: vec!["/a:/b".into()],
                    ..good()
                },
                "CNI_PATH \"/a:/b\" is invalid: entry \"/a:/b\" must not contain ':' or NUL",
            ),
            (
                Invocation {
                    args: vec![(String::new(), "1".into())],
                    ..good()
                },
                "CNI_ARGS \"=1\" is invalid: keys must not be empty",
            ),
            (
                Invocation {
                    args: vec![("a=b".into(), "1".into())],
                    ..good()
                },
                "CNI_ARGS \"a=b=1\" is invalid: key \"a=b\" must not contain '=', ';' or NUL",
            ),
            (
                Invocation {
                    args: vec![("a".into(), "1;b=2".into())],
                    ..good()
                },
                "CNI_ARGS \"a=1;b=2\" is invalid: value of \"a\" must not contain ';' or NUL",
            ),
        ];
        for (inv, msg) in cases {
            let e = inv.validate().unwrap_err();
            assert_eq!((e.code, e.msg.as_str()), (code::INVALID_ENV, msg));
        }
    }

    #[test]
    fn validate_checks_optional_fields_when_set() {
        let status = Invocation {
            command: Command::Status,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            args: vec![],
            path: vec![],
        };
        assert_eq!(status.validate(), Ok(()));
        let e = Invocation {
            ifname: "a b".into(),
            ..status.clone()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.msg,
            "CNI_IFNAME \"a b\" is invalid: must not contain whitespace"
        );
        let e = Invocation {
            command: Command::Gc,
            ..status
        }
        .validate()
        .unwrap_err();
        assert!(e.msg.contains("CNI_PATH"), "{}", e.msg);
    }

    #[test]
    fn serde_round_trip() {
        let inv = good();
        let json = serde_json::to_string(&inv).unwrap();
        assert_eq!(serde_json::from_str::<Invocation>(&json).unwrap(), inv);
        let min: Invocation = serde_json::from_str(r#"{"command":"STATUS"}"#).unwrap();
        assert_eq!(min.command, Command::Status);
    }
}
