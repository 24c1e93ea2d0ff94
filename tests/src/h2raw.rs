//! A bare HTTP/2 client that sends the header fields it is given, as they are: the `:authority`
//! values grpc-go, grpcio and grpc-java send on a unix socket, or fields no HTTP library would let
//! through. Every gRPC library checks what it sends; this one is for what real clients send
//! anyway.

use std::path::Path;
use std::time::Duration;

use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How one call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A response: its headers and trailers merged, and the DATA received.
    Answered {
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The server reset the stream with this HTTP/2 error code.
    Reset(u32),
    /// The server ended the connection with this error code and debug text.
    GoAway(u32, String),
    /// The server hung up without a word.
    Closed,
}

impl Outcome {
    /// A response header's value (`:status`, `grpc-status`, `grpc-message`, ...).
    pub fn header(&self, name: &str) -> Option<&str> {
        match self {
            Outcome::Answered { headers, .. } => headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    /// The gRPC status code of a complete gRPC answer.
    pub fn grpc_status(&self) -> Option<i32> {
        self.header("grpc-status").and_then(|s| s.parse().ok())
    }
}

pub struct RawH2 {
    stream: UnixStream,
    enc: Encoder<'static>,
    dec: Decoder<'static>,
    next_id: u32,
    buf: Vec<u8>,
}

impl RawH2 {
    pub async fn connect(socket: &Path) -> Self {
        let mut stream = UnixStream::connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        stream.write_all(PREFACE).await.unwrap();
        stream.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
        Self {
            stream,
            enc: Encoder::new(),
            dec: Decoder::new(),
            next_id: 1,
            buf: Vec::new(),
        }
    }

    /// A unary gRPC call to `path` with `authority` and `extra` fields, sending `message` (a
    /// serialized protobuf) as its one gRPC message; waits up to 10 s for how it ends.
    pub async fn call(
        &mut self,
        path: &str,
        authority: &[u8],
        extra: &[(&str, &str)],
        message: &[u8],
    ) -> Outcome {
        let id = self.next_id;
        self.next_id += 2;
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        fields.extend(extra.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        let block = self.enc.encode(fields);
        // A block over the default frame size goes out as HEADERS and CONTINUATIONs.
        let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
        for (i, c) in chunks.iter().enumerate() {
            let kind = if i == 0 { 0x1 } else { 0x9 };
            let flags = if i + 1 == chunks.len() { 0x4 } else { 0 };
            self.stream
                .write_all(&frame(kind, flags, id, c))
                .await
                .unwrap();
        }
        let mut grpc = vec![0u8];
        grpc.extend((message.len() as u32).to_be_bytes());
        grpc.extend_from_slice(message);
        // A server that already refused the stream may have hung up: what it said is read below.
        let _ = self.stream.write_all(&frame(0x0, 0x1, id, &grpc)).await;
        tokio::time::timeout(Duration::from_secs(10), self.outcome(id))
            .await
            .unwrap_or_else(|_| panic!("no end to stream {id} on {path} within 10 s"))
    }

    async fn outcome(&mut self, id: u32) -> Outcome {
        let mut headers = Vec::new();
        let mut body = Vec::new();
        let mut block = Vec::new();
        loop {
            let Some((kind, flags, stream, payload)) = self.frame().await else {
                return Outcome::Closed;
            };
            match kind {
                // Give the connection's flow-control window back, or a long-lived connection
                // stalls once the server has sent 64 KiB.
                0x0 if !payload.is_empty() => {
                    let inc = (payload.len() as u32).to_be_bytes();
                    let _ = self.stream.write_all(&frame(0x8, 0, 0, &inc)).await;
                    if stream != id {
                        continue;
                    }
                    body.extend_from_slice(&payload);
                    if flags & 0x1 != 0 {
                        return Outcome::Answered { headers, body };
                    }
                }
                0x0 if stream == id && flags & 0x1 != 0 => {
                    return Outcome::Answered { headers, body };
                }
                0x1 | 0x9 => {
                    let mut p = &payload[..];
                    if kind == 0x1 && flags & 0x8 != 0 {
                        let pad = p[0] as usize;
                        p = &p[1..p.len() - pad];
                    }
                    if kind == 0x1 && flags & 0x20 != 0 {
                        p = &p[5..];
                    }
                    block.extend_from_slice(p);
                    if flags & 0x4 != 0 {
                        let fields = self.dec.decode(&std::mem::take(&mut block)).unwrap();
                        if stream == id {
                            headers.extend(fields.into_iter().map(|(n, v)| {
                                (
                                    String::from_utf8_lossy(&n).into_owned(),
                                    String::from_utf8_lossy(&v).into_owned(),
                                )
                            }));
                        }
                    }
                    if stream == id && flags & 0x1 != 0 {
                        return Outcome::Answered { headers, body };
                    }
                }
                0x3 if stream == id => {
                    return Outcome::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                0x4 if flags & 0x1 == 0 => {
                    let _ = self.stream.write_all(&frame(0x4, 0x1, 0, &[])).await;
                }
                0x6 if flags & 0x1 == 0 => {
                    let _ = self.stream.write_all(&frame(0x6, 0x1, 0, &payload)).await;
                }
                0x7 => {
                    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                    let debug = String::from_utf8_lossy(&payload[8..]).into_owned();
                    return Outcome::GoAway(code, debug);
                }
                _ => {}
            }
        }
    }

    async fn frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16 | (self.buf[1] as usize) << 8 | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let f: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let stream = u32::from_be_bytes(f[5..9].try_into().unwrap()) & 0x7fff_ffff;
                    return Some((f[3], f[4], stream, f[9..].to_vec()));
                }
            }
            let mut chunk = [0u8; 16_384];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend(stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
