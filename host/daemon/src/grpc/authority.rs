//! A connection adapter under the HTTP/2 server that lets every client's `:authority` through.
//!
//! h2 checks `:authority` as a URI authority and resets the stream with PROTOCOL_ERROR when it is
//! not one. On a unix socket real clients send what they like there: grpc-go dialing a bare path
//! sends the path (crictl; kubelet's CRI client up to 1.29, its plugin-registration client),
//! grpcio 1.57+ the percent-encoded path, grpc-java the path. Go servers take all of them, and h2
//! will not relax the check (hyperium/h2#487), so [`Conn`] does it below h2, on the bytes.
//!
//! Header blocks are HPACK-compressed against a dynamic table both ends keep in step, so one
//! field cannot be edited in place. [`Conn`] decodes every block the client sends, keeping the
//! client's table. While every `:authority` is one h2 takes, the client's bytes pass unchanged
//! and h2's table stays the client's. From the first block that needs a rewrite on, every block
//! is re-encoded with literals that never touch h2's dynamic table, with a bad `:authority`
//! replaced by `localhost` and every other field as it came. Everything else (frame order,
//! sizes, padding, flow control, settings) is left to h2: a frame sequence h2 would refuse is
//! handed to it as it came, so it refuses it just as it would have.
//!
//! The server's side of the connection passes untouched; [`Conn`] only reads its frame headers to
//! learn the limits the server advertised and to see each stream the server resets or the
//! connection it gives up on, which [`super::Refusals`] then logs and traces.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::Decoder;
use loona_hpack::encoder::encode_integer_into;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Refusals;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEAD: usize = 9;

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// What a unix-socket client that sent a bad `:authority` is served as.
const LOCALHOST: &[u8] = b"localhost";

/// The most recent streams whose path is kept for a refusal's record. A stream's path stays after
/// the server's END_STREAM, since h2 refuses a too-large request with a 431 response and then a
/// reset; stream IDs only grow, so the oldest go first.
const MAX_PATHS: usize = 256;

/// The most of one compressed header block held while it arrives. h2 tells a client that goes on
/// sending CONTINUATIONs to go away long before this.
const MAX_BLOCK: usize = 1 << 20;

/// The server's settings that bound what the client may send, RFC 9113 defaults until the server
/// advertises its own.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame: usize,
    table: usize,
    header_list: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 16_384,
            table: 4_096,
            // h2's own ceiling when the server sets none.
            header_list: 16 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Preface,
    Frames,
    /// The client broke the protocol in a way h2 reports itself: bytes pass as they come.
    Raw,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Head {
    fn parse(b: &[u8]) -> Self {
        Self {
            len: (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize,
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    fn put(self, out: &mut BytesMut) {
        out.put_uint(self.len as u64, 3);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream);
    }
}

/// A header block on its way in: its frames as they came, and the fragment they carry.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    raw: BytesMut,
    fragment: Vec<u8>,
}

/// The client's side: bytes read from the socket, and bytes ready for h2.
struct Rx {
    phase: Phase,
    input: BytesMut,
    output: BytesMut,
    /// Payload bytes of the current frame still to pass as they come.
    skip: usize,
    block: Option<Block>,
    hpack: Decoder<'static>,
    /// Set at the first block that needed a rewrite; from then on every block is re-encoded.
    rewrite: bool,
    /// One decoded block, reused: field bounds into `arena`.
    fields: Vec<(usize, usize, usize)>,
    arena: Vec<u8>,
}

/// The server's side: where its frames start, to read their headers as they pass.
#[derive(Default)]
struct Tx {
    head: [u8; HEAD],
    have: usize,
    current: Option<Head>,
    remaining: usize,
    /// The payload of a frame whose content matters (settings, resets, goaway), up to 1 KiB.
    payload: Vec<u8>,
}

/// One accepted connection with its `:authority` fixed; see the module doc.
pub struct Conn<IO> {
    io: IO,
    rx: Rx,
    tx: Tx,
    limits: Limits,
    /// Each recent stream's `:path`, and what h2 will object to in its headers if this adapter
    /// saw it, for the record of a stream the server refuses.
    paths: BTreeMap<u32, (Box<str>, Option<String>)>,
    refusals: Arc<Refusals>,
    /// Why h2 is about to give up on the connection, when this adapter knows better than h2 says.
    pending: Option<String>,
}

impl<IO> Conn<IO> {
    pub fn new(io: IO, refusals: Arc<Refusals>) -> Self {
        let limits = Limits::default();
        let mut hpack = Decoder::new();
        hpack.set_max_allowed_table_size(limits.table);
        Self {
            io,
            rx: Rx {
                phase: Phase::Preface,
                input: BytesMut::new(),
                output: BytesMut::new(),
                skip: 0,
                block: None,
                hpack,
                rewrite: false,
                fields: Vec::new(),
                arena: Vec::new(),
            },
            tx: Tx::default(),
            limits,
            paths: BTreeMap::new(),
            refusals,
            pending: None,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Moves what can be moved from the client's bytes to h2's.
    fn advance(&mut self) {
        loop {
            match self.rx.phase {
                Phase::Raw => {
                    let all = self.rx.input.split();
                    self.rx.output.unsplit(all);
                    return;
                }
                Phase::Preface => {
                    let n = self.rx.input.len().min(PREFACE.len());
                    if self.rx.input[..n] != PREFACE[..n] {
                        self.give_up("the connection does not start with the http/2 preface");
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    let preface = self.rx.input.split_to(n);
                    self.rx.output.unsplit(preface);
                    self.rx.phase = Phase::Frames;
                }
                Phase::Frames => {
                    if self.rx.skip > 0 {
                        let n = self.rx.skip.min(self.rx.input.len());
                        if n == 0 {
                            return;
                        }
                        let part = self.rx.input.split_to(n);
                        self.rx.output.unsplit(part);
                        self.rx.skip -= n;
                        continue;
                    }
                    if self.rx.input.len() < HEAD {
                        return;
                    }
                    let head = Head::parse(&self.rx.input[..HEAD]);
                    let in_block = self.rx.block.as_ref().map(|b| b.stream);
                    let header_frame = head.kind == HEADERS || head.kind == CONTINUATION;
                    let broken = match in_block {
                        Some(s) => head.kind != CONTINUATION || head.stream != s,
                        None => head.kind == CONTINUATION,
                    } || (header_frame && (head.len > self.limits.max_frame || head.stream == 0));
                    if broken {
                        self.give_up(format!(
                            "frame type {} of {} bytes on stream {} breaks the header block rules",
                            head.kind, head.len, head.stream
                        ));
                        continue;
                    }
                    if !header_frame {
                        let h = self.rx.input.split_to(HEAD);
                        self.rx.output.unsplit(h);
                        self.rx.skip = head.len;
                        if head.kind == RST_STREAM {
                            self.paths.remove(&head.stream);
                        }
                        continue;
                    }
                    if self.rx.input.len() < HEAD + head.len {
                        return;
                    }
                    let frame = self.rx.input.split_to(HEAD + head.len);
                    self.add_to_block(head, frame);
                }
            }
        }
    }

    /// Hands every byte held back to h2 as it came, and passes the rest of the connection
    /// through: h2 refuses what the client sent, and [`Self::pending`] says why.
    fn give_up(&mut self, why: impl Into<String>) {
        if let Some(b) = self.rx.block.take() {
            self.rx.output.unsplit(b.raw);
        }
        self.rx.phase = Phase::Raw;
        self.pending.get_or_insert_with(|| why.into());
    }

    fn add_to_block(&mut self, head: Head, frame: BytesMut) {
        let payload = &frame[HEAD..];
        match self.rx.block.as_mut() {
            None => {
                let mut p = payload;
                let mut pad = 0;
                if head.flags & PADDED != 0 {
                    let Some((&n, rest)) = p.split_first() else {
                        return self.refuse_block(frame, "padded headers frame without a pad length");
                    };
                    pad = n as usize;
                    p = rest;
                }
                let mut priority = None;
                if head.flags & PRIORITY != 0 {
                    if p.len() < 5 {
                        return self.refuse_block(frame, "headers frame too short for its priority");
                    }
                    priority = Some([p[0], p[1], p[2], p[3], p[4]]);
                    p = &p[5..];
                }
                if pad > p.len() {
                    return self.refuse_block(frame, "headers frame padding longer than the frame");
                }
                let fragment = p[..p.len() - pad].to_vec();
                self.rx.block = Some(Block {
                    stream: head.stream,
                    flags: head.flags,
                    priority,
                    raw: frame,
                    fragment,
                });
            }
            Some(b) => {
                b.fragment.extend_from_slice(payload);
                b.raw.unsplit(frame);
            }
        }
        let size = self.rx.block.as_ref().map_or(0, |b| b.raw.len());
        if size > MAX_BLOCK {
            let stream = head.stream;
            if self.rx.rewrite {
                self.poison(stream, format!("header block over {MAX_BLOCK} bytes"));
            } else {
                self.give_up(format!("header block over {MAX_BLOCK} bytes"));
            }
            return;
        }
        if head.flags & END_HEADERS != 0 {
            self.finish_block();
        }
    }

    /// A frame h2 refuses on its own (PROTOCOL_ERROR) before decoding anything: hand it over.
    fn refuse_block(&mut self, frame: BytesMut, why: &str) {
        self.rx.output.unsplit(frame);
        self.give_up(why);
    }

    /// Ends the connection through h2 with COMPRESSION_ERROR: a block h2's decoder cannot take
    /// (index 0 is never valid), for what the client sent that this adapter could not re-encode.
    fn poison(&mut self, stream: u32, why: String) {
        self.rx.block = None;
        Head {
            len: 1,
            kind: HEADERS,
            flags: END_HEADERS,
            stream,
        }
        .put(&mut self.rx.output);
        self.rx.output.put_u8(0x80);
        self.rx.phase = Phase::Raw;
        self.rx.input.clear();
        self.pending.get_or_insert(why);
    }

    fn finish_block(&mut self) {
        let Some(block) = self.rx.block.take() else {
            return;
        };
        let rx = &mut self.rx;
        rx.fields.clear();
        rx.arena.clear();
        let limit = self.limits.header_list;
        let mut size = 0usize;
        let mut over = false;
        let (fields, arena) = (&mut rx.fields, &mut rx.arena);
        let decoded = rx.hpack.decode_with_cb(&block.fragment, |name, value| {
            size = size.saturating_add(name.len() + value.len() + 32);
            // Past the server's limit only the pseudo-headers are kept: enough to have h2 refuse
            // the stream as too large, without holding what a compressed block can expand to.
            if size > limit {
                over = true;
                if !name.starts_with(b":") {
                    return;
                }
            }
            let start = arena.len();
            arena.extend_from_slice(&name);
            arena.extend_from_slice(&value);
            fields.push((start, name.len(), value.len()));
        });
        if let Err(e) = decoded {
            let why = format!("undecodable header block: {e}");
            if self.rx.rewrite {
                self.poison(block.stream, why);
            } else {
                // h2's table is the client's: h2 fails the same block the same way.
                self.rx.output.unsplit(block.raw);
                self.give_up(why);
            }
            return;
        }
        let mut bad_authority = false;
        let mut path = None;
        let mut objection = over.then(|| {
            format!("request header fields past the server's limit of {limit} bytes (431)")
        });
        let mut regular = false;
        for &(start, n, v) in &self.rx.fields {
            let name = &self.rx.arena[start..start + n];
            let value = &self.rx.arena[start + n..start + n + v];
            match name {
                b":authority" => bad_authority = http::uri::Authority::try_from(value).is_err(),
                b":path" => path = Some(String::from_utf8_lossy(value).into_owned()),
                _ => {}
            }
            if objection.is_none() {
                objection = malformed(name, value, regular);
            }
            regular |= !name.starts_with(b":");
        }
        if let Some(path) = path {
            self.paths.insert(block.stream, (path.into_boxed_str(), objection));
            if self.paths.len() > MAX_PATHS {
                self.paths.pop_first();
            }
        }
        if bad_authority && !self.rx.rewrite {
            self.rx.rewrite = true;
            tracing::debug!(
                socket = %self.refusals.socket,
                "client sent a :authority h2 refuses; serving it as localhost"
            );
        }
        if !self.rx.rewrite {
            self.rx.output.unsplit(block.raw);
            return;
        }
        let mut encoded = Vec::with_capacity(block.fragment.len() + 16);
        if over {
            encode_too_large(&mut encoded, &self.rx.fields, &self.rx.arena, limit);
        } else {
            for &(start, n, v) in &self.rx.fields {
                let name = &self.rx.arena[start..start + n];
                let value = &self.rx.arena[start + n..start + n + v];
                let value = if name == b":authority" && bad_authority {
                    LOCALHOST
                } else {
                    value
                };
                encode_field(&mut encoded, name, value);
            }
        }
        self.emit(block.stream, block.flags, block.priority, &encoded);
    }

    /// Writes a header block as HEADERS and CONTINUATION frames within the server's frame size.
    fn emit(&mut self, stream: u32, flags: u8, priority: Option<[u8; 5]>, block: &[u8]) {
        let max = self.limits.max_frame;
        let prio_len = if priority.is_some() { 5 } else { 0 };
        let first = block.len().min(max - prio_len);
        let (head, mut rest) = block.split_at(first);
        let mut f = (flags & END_STREAM) | if priority.is_some() { PRIORITY } else { 0 };
        if rest.is_empty() {
            f |= END_HEADERS;
        }
        let out = &mut self.rx.output;
        Head {
            len: prio_len + head.len(),
            kind: HEADERS,
            flags: f,
            stream,
        }
        .put(out);
        if let Some(p) = priority {
            out.put_slice(&p);
        }
        out.put_slice(head);
        while !rest.is_empty() {
            let n = rest.len().min(max);
            let (chunk, more) = rest.split_at(n);
            Head {
                len: n,
                kind: CONTINUATION,
                flags: if more.is_empty() { END_HEADERS } else { 0 },
                stream,
            }
            .put(out);
            out.put_slice(chunk);
            rest = more;
        }
    }

    /// Reads the frames h2 wrote: settings bound what the client may send, resets and goaways
    /// are refusals to report.
    fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Some(head) = self.tx.current else {
                let n = (HEAD - self.tx.have).min(bytes.len());
                self.tx.head[self.tx.have..self.tx.have + n].copy_from_slice(&bytes[..n]);
                self.tx.have += n;
                bytes = &bytes[n..];
                if self.tx.have == HEAD {
                    let head = Head::parse(&self.tx.head);
                    self.tx.have = 0;
                    self.tx.current = Some(head);
                    self.tx.remaining = head.len;
                    self.tx.payload.clear();
                    if head.len == 0 {
                        self.frame_written(head);
                    }
                }
                continue;
            };
            let n = self.tx.remaining.min(bytes.len());
            if matches!(head.kind, SETTINGS | RST_STREAM | GOAWAY) {
                let room = 1024usize.saturating_sub(self.tx.payload.len());
                self.tx.payload.extend_from_slice(&bytes[..n.min(room)]);
            }
            self.tx.remaining -= n;
            bytes = &bytes[n..];
            if self.tx.remaining == 0 {
                self.frame_written(head);
            }
        }
    }

    fn frame_written(&mut self, head: Head) {
        self.tx.current = None;
        let p = std::mem::take(&mut self.tx.payload);
        match head.kind {
            SETTINGS if head.flags & ACK == 0 => {
                for s in p.chunks_exact(6) {
                    let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as usize;
                    match u16::from_be_bytes([s[0], s[1]]) {
                        0x1 => {
                            self.limits.table = value;
                            self.rx.hpack.set_max_allowed_table_size(value);
                        }
                        0x5 => self.limits.max_frame = value.clamp(16_384, (1 << 24) - 1),
                        0x6 => self.limits.header_list = value,
                        _ => {}
                    }
                }
            }
            RST_STREAM if p.len() >= 4 => {
                let code = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                let (path, objection) = self.paths.remove(&head.stream).unzip();
                // NO_ERROR ends a stream whose answer is complete; CANCEL follows the client's
                // own reset or disconnect.
                if code != 0x0 && code != 0x8 {
                    let mut why = format!("the server reset the stream with {}", reason(code));
                    if let Some(o) = objection.flatten() {
                        why = format!("{why}: {o}");
                    }
                    self.refusals.refused(path.as_deref(), code, &why);
                }
            }
            GOAWAY if p.len() >= 8 => {
                let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                if code != 0 {
                    let debug = String::from_utf8_lossy(&p[8..]);
                    let why = match (self.pending.take(), debug.is_empty()) {
                        (Some(ours), _) => ours,
                        (None, false) => debug.into_owned(),
                        (None, true) => "the client broke the protocol".to_string(),
                    };
                    self.refusals.refused(
                        None,
                        code,
                        &format!("the server closed the connection with {}: {why}", reason(code)),
                    );
                }
            }
            _ => {}
        }
        self.tx.payload = p;
    }
}

impl<IO> Drop for Conn<IO> {
    fn drop(&mut self) {
        // h2 refused the connection without a GOAWAY (a bad preface): say so once here.
        if let Some(why) = self.pending.take() {
            self.refusals.refused(None, 0x1, &why);
        }
    }
}

/// What h2 refuses a request's field for (RFC 9113 8.2), said plainly: h2 itself only
/// resets the stream.
fn malformed(name: &[u8], value: &[u8], after_regular: bool) -> Option<String> {
    let shown = String::from_utf8_lossy(name);
    if name.starts_with(b":") {
        return match name {
            _ if after_regular => Some(format!("pseudo-header {shown:?} after a regular field")),
            b":method" | b":scheme" | b":authority" | b":path" | b":protocol" => None,
            _ => Some(format!("unknown pseudo-header {shown:?}")),
        };
    }
    if name.iter().any(u8::is_ascii_uppercase) {
        return Some(format!("upper-case field name {shown:?}"));
    }
    if matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    ) {
        return Some(format!("connection-specific field {shown:?}"));
    }
    if name == b"te" && value != b"trailers" {
        return Some("te other than \"trailers\"".to_string());
    }
    None
}

/// An HTTP/2 error code's name, RFC 9113 section 7.
pub fn reason(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        other => return format!("error code {other:#x}"),
    };
    name.to_string()
}

/// A block h2 refuses as too large, with 431 and REFUSED_STREAM, as it would have refused the
/// client's: the request's `:method`, `:scheme` and `:path`, then empty `accept-encoding` fields,
/// 3 bytes each on the wire and 47 in the header list, until the list is past `limit`. It fits
/// one frame for any limit up to about 250 KiB (hyper's is 16 KiB); h2 ends the connection with
/// COMPRESSION_ERROR for a larger one, as it does for a client's block of many frames.
fn encode_too_large(out: &mut Vec<u8>, fields: &[(usize, usize, usize)], arena: &[u8], limit: usize) {
    let mut size = 0;
    for &(start, n, v) in fields {
        let name = &arena[start..start + n];
        if matches!(name, b":method" | b":scheme" | b":path") {
            encode_field(out, name, &arena[start + n..start + n + v]);
            size += n + v + 32;
        }
    }
    while size <= limit {
        encode_field(out, b"accept-encoding", b"");
        size += b"accept-encoding".len() + 32;
    }
}

/// A literal field that is never added to h2's dynamic table (RFC 7541 6.2.2), its name indexed
/// when the static table has it.
fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let index = match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b"accept-encoding" => 16,
        b"content-type" => 31,
        b"user-agent" => 58,
        _ => 0,
    };
    // Writing into a Vec cannot fail.
    let _ = encode_integer_into(index, 4, 0x00, out);
    if index == 0 {
        encode_string(out, name);
    }
    encode_string(out, value);
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    let _ = encode_integer_into(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}

impl<IO: AsyncRead + Unpin> AsyncRead for Conn<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rx.output.is_empty() {
                let n = this.rx.output.len().min(buf.remaining());
                buf.put_slice(&this.rx.output[..n]);
                this.rx.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            // A frame's payload that passes as it comes goes straight into h2's buffer.
            let direct = this.rx.input.is_empty()
                && (this.rx.phase == Phase::Raw
                    || (this.rx.phase == Phase::Frames && this.rx.skip > 0));
            if direct {
                let limit = if this.rx.phase == Phase::Raw {
                    buf.remaining()
                } else {
                    this.rx.skip.min(buf.remaining())
                };
                let mut sub = buf.take(limit);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut sub))?;
                let n = sub.filled().len();
                // `sub` wrote these bytes into `buf`'s own memory.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                if this.rx.phase == Phase::Frames {
                    this.rx.skip -= n;
                }
                return Poll::Ready(Ok(()));
            }
            this.rx.input.reserve(16 * 1024);
            let before = this.rx.input.len();
            {
                let spare = this.rx.input.spare_capacity_mut();
                let mut rb = ReadBuf::uninit(spare);
                ready!(Pin::new(&mut this.io).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                // The read initialised `n` bytes of the spare capacity.
                unsafe { this.rx.input.set_len(before + n) };
            }
            if this.rx.input.len() == before {
                // End of input: whatever is held is handed over as it came, for h2 to judge.
                if let Some(b) = this.rx.block.take() {
                    this.rx.output.unsplit(b.raw);
                }
                let rest = this.rx.input.split();
                this.rx.output.unsplit(rest);
                if this.rx.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.rx.phase = Phase::Raw;
                continue;
            }
            this.advance();
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Conn<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.observe(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.observe(&b[..k]);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use loona_hpack::Encoder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::trace::Trace;

    const DATA: u8 = 0x0;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        Head {
            len: payload.len(),
            kind,
            flags,
            stream,
        }
        .put(&mut out);
        out.put_slice(payload);
        out.to_vec()
    }

    fn frames(mut b: &[u8]) -> Vec<(Head, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= HEAD {
            let h = Head::parse(b);
            out.push((h, b[HEAD..HEAD + h.len].to_vec()));
            b = &b[HEAD + h.len..];
        }
        assert!(b.is_empty(), "a partial frame at the end");
        out
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn request(authority: &[u8], path: &str) -> Fields {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":path".to_vec(), path.as_bytes().to_vec()),
            (b":authority".to_vec(), authority.to_vec()),
            (b"content-type".to_vec(), b"application/grpc".to_vec()),
            (b"te".to_vec(), b"trailers".to_vec()),
            (b"user-agent".to_vec(), b"grpc-go/1.33.3".to_vec()),
        ]
    }

    fn encode(enc: &mut Encoder<'_>, fields: &Fields) -> Vec<u8> {
        enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
    }

    fn refusals() -> (Arc<Refusals>, Arc<Trace>) {
        let trace = Arc::new(Trace::default());
        let r = Refusals::new("cri", std::path::Path::new("/run/test.sock"), trace.clone());
        (Arc::new(r), trace)
    }

    /// What h2 reads through [`Conn`] when the client sends `input` and hangs up.
    async fn through(input: &[u8]) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut conn = Conn::new(server, refusals().0);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        conn.read_to_end(&mut out).await.unwrap();
        out
    }

    /// The header blocks in what h2 reads, decoded as h2 would, with the DATA payloads between.
    fn decode_all(out: &[u8]) -> (Vec<Fields>, Vec<Vec<u8>>) {
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let mut dec = Decoder::new();
        let (mut blocks, mut data) = (Vec::new(), Vec::new());
        let mut pending = Vec::new();
        for (h, p) in frames(&out[PREFACE.len()..]) {
            assert!(h.len <= 16_384, "a frame over the default max frame size");
            match h.kind {
                HEADERS | CONTINUATION => {
                    let mut p = &p[..];
                    if h.kind == HEADERS && h.flags & PRIORITY != 0 {
                        p = &p[5..];
                    }
                    pending.extend_from_slice(p);
                    if h.flags & END_HEADERS != 0 {
                        blocks.push(dec.decode(&std::mem::take(&mut pending)).unwrap());
                    }
                }
                DATA => data.push(p),
                _ => {}
            }
        }
        (blocks, data)
    }

    #[tokio::test]
    async fn a_valid_authority_passes_byte_for_byte() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[]));
        for i in 1..=3u32 {
            let block = encode(&mut enc, &request(b"localhost", "/runtime.v1.RuntimeService/Version"));
            input.extend(frame(HEADERS, END_HEADERS, 2 * i - 1, &block));
            input.extend(frame(DATA, END_STREAM, 2 * i - 1, &[0, 0, 0, 0, 0]));
        }
        assert_eq!(through(&input).await, input);
    }

    #[tokio::test]
    async fn bad_authorities_become_localhost_and_later_blocks_still_decode() {
        // The client's encoder indexes the path-like authority, then refers to it by index.
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(SETTINGS, 0, 0, &[]));
        let fine = request(b"localhost", "/runtime.v1.RuntimeService/Version");
        let bad = request(b"/run/wasmgate/cri.sock", "/runtime.v1.RuntimeService/Status");
        let encoded = [&fine, &bad, &bad, &fine];
        for (i, f) in encoded.iter().enumerate() {
            let stream = 2 * i as u32 + 1;
            input.extend(frame(HEADERS, END_HEADERS, stream, &encode(&mut enc, f)));
            input.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, i as u8]));
        }
        let out = through(&input).await;
        let (blocks, data) = decode_all(&out);
        let mut want_bad = bad.clone();
        want_bad[3].1 = b"localhost".to_vec();
        assert_eq!(blocks, vec![fine.clone(), want_bad.clone(), want_bad, fine]);
        assert_eq!(data, (0..4u8).map(|i| vec![0, 0, 0, 0, i]).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn every_authority_a_client_sends_is_served_as_h2_can_take_it() {
        let long_path = format!("/{}", "a".repeat(8191));
        let cases: [&[u8]; 5] = [
            b"/run/wasmgate/cri.sock",
            b"%2Frun%2Fwasmgate%2Fcri.sock",
            b"",
            long_path.as_bytes(),
            b"unix:///run/x.sock",
        ];
        for authority in cases {
            let mut enc = Encoder::new();
            let mut input = PREFACE.to_vec();
            let fields = request(authority, "/csi.v1.Identity/GetPluginInfo");
            input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &encode(&mut enc, &fields)));
            let (blocks, _) = decode_all(&through(&input).await);
            let got = &blocks[0];
            let value = &got.iter().find(|(n, _)| n == b":authority").unwrap().1;
            assert!(
                http::uri::Authority::try_from(&value[..]).is_ok(),
                "{:?} became {:?}",
                String::from_utf8_lossy(authority),
                String::from_utf8_lossy(value)
            );
            assert_eq!(got.len(), fields.len());
        }
    }

    #[tokio::test]
    async fn a_rewritten_block_is_split_to_the_frame_size_and_keeps_its_flags() {
        let mut enc = Encoder::new();
        let mut fields = request(b"/run/x.sock", "/runtime.v1.RuntimeService/Version");
        for i in 0..3 {
            fields.push((format!("x-big-{i}").into_bytes(), vec![b'v'; 8000]));
        }
        let block = encode(&mut enc, &fields);
        // Sent padded, with a priority, over a HEADERS and a CONTINUATION frame.
        let (a, b) = block.split_at(10_000);
        let mut first = vec![3u8];
        first.extend([0, 0, 0, 0, 15]);
        first.extend_from_slice(a);
        first.extend([0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &first));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        let out = through(&input).await;
        let heads: Vec<Head> = frames(&out[PREFACE.len()..]).into_iter().map(|f| f.0).collect();
        assert!(heads.len() >= 2);
        assert_eq!(heads[0].kind, HEADERS);
        assert_eq!(heads[0].flags & (END_STREAM | PRIORITY), END_STREAM | PRIORITY);
        assert!(heads[1..].iter().all(|h| h.kind == CONTINUATION));
        assert!(heads.last().unwrap().flags & END_HEADERS != 0);
        let (blocks, _) = decode_all(&out);
        assert_eq!(blocks[0].len(), fields.len());
        assert_eq!(blocks[0][7..], fields[7..]);
    }

    #[tokio::test]
    async fn a_block_that_grows_past_the_header_list_limit_is_refused_by_h2_as_too_large() {
        let mut enc = Encoder::new();
        // A tiny block that expands: one big field, indexed, then referred to many times.
        let mut first = request(b"/run/x.sock", "/a/B");
        first.push((b"x-bomb".to_vec(), vec![b'b'; 3000]));
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &encode(&mut enc, &first)));
        let mut second = request(b"/run/x.sock", "/a/C");
        for _ in 0..6000 {
            second.push((b"x-bomb".to_vec(), vec![b'b'; 3000]));
        }
        let block = encode(&mut enc, &second);
        assert!(block.len() < 16_384, "the bomb is small on the wire");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &block));
        let (blocks, _) = decode_all(&through(&input).await);
        let size = |f: &Fields| f.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>();
        // The server's limit (16 MiB until it advertises one) is passed, without holding the 18 MB
        // of repeated fields: h2 gets the request's pseudo-headers and small empty fields.
        assert!(size(&blocks[1]) > 16 << 20);
        assert_eq!(blocks[1][2], (b":path".to_vec(), b"/a/C".to_vec()));
        assert!(blocks[1][3..].iter().all(|(n, v)| n == b"accept-encoding" && v.is_empty()));
    }

    #[tokio::test]
    async fn an_undecodable_block_after_a_rewrite_ends_the_connection_through_h2() {
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        let bad = request(b"/run/x.sock", "/a/B");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &encode(&mut enc, &bad)));
        // Index 200 is in neither table.
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x80 | 0x7f, 200 - 127]));
        let out = through(&input).await;
        let f = frames(&out[PREFACE.len()..]);
        assert_eq!(f.last().unwrap().1, vec![0x80], "a block no decoder takes");
        assert_eq!(f.last().unwrap().0.stream, 3);
    }

    #[tokio::test]
    async fn garbage_never_panics_and_is_handed_to_h2() {
        // Deterministic pseudo-random frames: every kind, bad lengths, bad padding, bad HPACK.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut input = PREFACE.to_vec();
            if next() % 2 == 0 {
                let mut enc = Encoder::new();
                let bad = request(b"/run/x.sock", "/a/B");
                input.extend(frame(HEADERS, END_HEADERS, 1, &encode(&mut enc, &bad)));
            }
            for _ in 0..(next() % 6) {
                let kind = (next() % 10) as u8;
                let flags = (next() % 64) as u8;
                let len = (next() % 64) as usize;
                let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                input.extend(frame(kind, flags, (next() % 4) as u32, &payload));
            }
            let cut = input.len() - (next() % 4) as usize;
            let _ = through(&input[..cut]).await;
        }
        // A client that is not HTTP/2 at all passes as it came, for h2 to refuse.
        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(through(http1).await, http1);
    }

    #[tokio::test]
    async fn a_stream_the_server_resets_is_traced_with_its_method() {
        let (refusals, trace) = refusals();
        let mut rx = trace.subscribe();
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::new(server, refusals);
        let mut enc = Encoder::new();
        let mut input = PREFACE.to_vec();
        let fields = request(b"localhost", "/csi.v1.Node/NodeGetInfo");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &encode(&mut enc, &fields)));
        client.write_all(&input).await.unwrap();
        let mut buf = vec![0u8; input.len()];
        conn.read_exact(&mut buf).await.unwrap();
        // h2's answer: its settings (a bigger frame size), then a reset of the stream.
        let mut settings = Vec::new();
        settings.extend([0, 5, 0, 0, 0x80, 0]);
        conn.write_all(&frame(SETTINGS, 0, 0, &settings)).await.unwrap();
        conn.write_all(&frame(RST_STREAM, 0, 1, &[0, 0, 0, 1])).await.unwrap();
        assert_eq!(conn.limits.max_frame, 0x8000);
        let rec = rx.recv().await.unwrap();
        assert_eq!(rec.interface, "cri");
        assert_eq!(rec.method, "NodeGetInfo");
        assert!(!rec.ok);
        assert_eq!(rec.code, Some(tonic::Code::Internal as u32));
        assert!(rec.msg.unwrap().contains("PROTOCOL_ERROR"));
        assert_eq!(rec.ids["path"], "/csi.v1.Node/NodeGetInfo");
        assert_eq!(rec.ids["socket"], "/run/test.sock");
        // A reset after a complete answer (NO_ERROR) and a cancel are not refusals.
        conn.write_all(&frame(RST_STREAM, 0, 3, &[0, 0, 0, 0])).await.unwrap();
        conn.write_all(&frame(RST_STREAM, 0, 5, &[0, 0, 0, 8])).await.unwrap();
        conn.write_all(&frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0xb, b'c', b'a', b'l', b'm']))
            .await
            .unwrap();
        let rec = rx.recv().await.unwrap();
        assert_eq!(rec.method, "connection");
        assert_eq!(rec.code, Some(tonic::Code::ResourceExhausted as u32));
        assert!(rec.msg.as_deref().unwrap().contains("ENHANCE_YOUR_CALM: calm"), "{rec:?}");
    }
}
