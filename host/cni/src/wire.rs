//! The shim-to-daemon protocol on the CNI unix socket.
//!
//! One connection carries one call: the shim writes a [`Request`] line, the daemon answers with
//! one [`Response`] line, and both close. Each line is compact JSON ended by `\n` (JSON strings
//! escape newlines, so a value never spans lines). A missing `\n` means the peer went away
//! mid-write and is reported as [`io::ErrorKind::UnexpectedEof`].

use std::io::{self, BufRead, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::env::Invocation;
use crate::error::CniError;

/// Longest line either side accepts, without its `\n`. Bounds memory against a hostile peer.
pub const MAX_LINE: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub invocation: Invocation,
    /// The network config exactly as the runtime wrote it on stdin.
    pub config: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum Response {
    /// The shim prints `stdout` verbatim and exits 0; empty for DEL, CHECK, STATUS and GC.
    #[serde(rename = "ok")]
    Ok { stdout: String },
    /// The shim prints the error object and exits 1.
    #[serde(rename = "error")]
    Err { error: CniError },
}

/// Writes `value` as one line and flushes. Refuses values the peer would reject as too long.
pub fn write_line<W: Write, T: Serialize>(mut w: W, value: &T) -> io::Result<()> {
    // Serialise fully first so a failure never leaves half a line on the socket.
    let mut buf =
        serde_json::to_vec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if buf.len() > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "message of {} bytes exceeds the {MAX_LINE}-byte line limit",
                buf.len()
            ),
        ));
    }
    buf.push(b'\n');
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one line and decodes it. Never buffers more than [`MAX_LINE`] + 1 bytes.
pub fn read_line<R: BufRead, T: DeserializeOwned>(mut r: R) -> io::Result<T> {
    let mut buf = Vec::new();
    r.by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if buf.last() != Some(&b'\n') {
        return Err(if buf.len() > MAX_LINE {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line exceeds the {MAX_LINE}-byte limit"),
            )
        } else {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a full line arrived",
            )
        });
    }
    buf.pop();
    serde_json::from_slice(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::error::code;
    use std::io::Cursor;

    fn request() -> Request {
        Request {
            invocation: Invocation {
                command: Command::Add,
                container_id: "c1".into(),
                netns: "/var/run/netns/p".into(),
                ifname: "eth0".into(),
                args: vec![("K".into(), "V".into())],
                path: vec!["/opt/cni/bin".into()],
            },
            config: "{\n  \"cniVersion\": \"1.1.0\"\n}\n".into(),
        }
    }

    #[test]
    fn request_round_trips_on_one_line() {
        let mut buf = Vec::new();
        write_line(&mut buf, &request()).unwrap();
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(buf.last(), Some(&b'\n'));
        let back: Request = read_line(Cursor::new(buf)).unwrap();
        assert_eq!(back, request());
    }

    #[test]
    fn responses_are_tagged_by_status() {
        let ok = Response::Ok {
            stdout: "{}".into(),
        };
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"status": "ok", "stdout": "{}"})
        );
        let err = Response::Err {
            error: CniError::new(code::TRY_AGAIN, "busy", ""),
        };
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            serde_json::json!({"status": "error", "error": {"code": 11, "msg": "busy"}})
        );
        let mut buf = Vec::new();
        write_line(&mut buf, &ok).unwrap();
        write_line(&mut buf, &err).unwrap();
        let mut r = Cursor::new(buf);
        assert_eq!(read_line::<_, Response>(&mut r).unwrap(), ok);
        assert_eq!(read_line::<_, Response>(&mut r).unwrap(), err);
        let e = read_line::<_, Response>(&mut r).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn truncated_line_is_unexpected_eof() {
        let e = read_line::<_, Response>(Cursor::new(br#"{"status":"ok","stdout":""}"#.to_vec()))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn garbage_is_invalid_data() {
        for line in [&b"nope\n"[..], b"{\"status\":\"maybe\"}\n", b"\n"] {
            let e = read_line::<_, Response>(Cursor::new(line.to_vec())).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{line:?}");
        }
    }

    #[test]
    fn overlong_lines_are_refused_without_buffering_them_all() {
        // An endless stream of bytes: reading must stop at the limit rather than run out of memory.
        let e = read_line::<_, Response>(io::BufReader::new(io::repeat(b'a'))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("exceeds"), "{e}");

        let big = Response::Ok {
            stdout: "x".repeat(MAX_LINE),
        };
        let mut sink = Vec::new();
        let e = write_line(&mut sink, &big).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(sink.is_empty());
    }

    #[test]
    fn line_at_the_limit_is_accepted() {
        // `{"status":"ok","stdout":"…"}` is 27 bytes of framing around the payload.
        let payload = "y".repeat(MAX_LINE - 27);
        let ok = Response::Ok { stdout: payload };
        let mut buf = Vec::new();
        write_line(&mut buf, &ok).unwrap();
        assert_eq!(buf.len(), MAX_LINE + 1);
        assert_eq!(read_line::<_, Response>(Cursor::new(buf)).unwrap(), ok);
    }
}
