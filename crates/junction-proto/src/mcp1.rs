//! MCP1, Junction's binary framing (see `proto/mcp1.md`): header checks,
//! request payload parsing and frame encoding. No I/O.
//!
//! Every frame is a 16-byte little-endian header and a payload. Payloads are
//! read straight from the ring buffer (borrowed when contiguous), and
//! responses are encoded straight into the connection's output.

use serde_json::value::RawValue;

use crate::call::{Params, Reply};
use crate::error::{ErrorCode, RpcError};

/// Header size in bytes.
pub const HEADER_LEN: usize = 16;
/// The only version this daemon speaks.
pub const VERSION: u8 = 1;
/// Flag bit 0: the body is raw bytes, not JSON.
pub const FLAG_RAW: u16 = 0x0001;
/// Longest method name in bytes.
pub const MAX_METHOD: usize = 255;

/// MCP1 protocol error codes (beside the JSON-RPC ones in [`ErrorCode`]).
pub mod codes {
    /// A frame does not start with the magic.
    pub const BAD_MAGIC: i32 = -32010;
    /// The version byte is not 1.
    pub const UNSUPPORTED_VERSION: i32 = -32011;
    /// A reserved flag bit is set.
    pub const RESERVED_FLAGS: i32 = -32012;
    /// The kind byte is not a known kind.
    pub const UNKNOWN_KIND: i32 = -32013;
    /// The peer ended its side in the middle of a frame.
    pub const TRUNCATED: i32 = -32014;
}

/// The frame kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A call expecting a RESPONSE or ERROR.
    Request = 1,
    /// The result of a call.
    Response = 2,
    /// A call expecting nothing back.
    Notification = 3,
    /// A call's or the connection's error.
    Error = 4,
    /// The daemon tells a provider a forwarded call will not be answered to
    /// anyone (its caller left, or it timed out). Sent by the daemon only.
    Cancel = 5,
    /// A liveness check, answered by PONG.
    Ping = 6,
    /// The answer to a PING.
    Pong = 7,
}

impl Kind {
    /// The kind a byte stands for.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Notification,
            4 => Kind::Error,
            5 => Kind::Cancel,
            6 => Kind::Ping,
            7 => Kind::Pong,
            _ => return None,
        })
    }

    /// The lower-case name used in the spec and the test vectors.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Response => "response",
            Kind::Notification => "notification",
            Kind::Error => "error",
            Kind::Cancel => "cancel",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
        }
    }

    fn allows_raw(self) -> bool {
        matches!(self, Kind::Request | Kind::Notification | Kind::Response)
    }
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The kind.
    pub kind: Kind,
    /// The flags (only `FLAG_RAW` may be set).
    pub flags: u16,
    /// The request id.
    pub id: u32,
    /// Payload length.
    pub length: u32,
}

impl Header {
    /// Bytes of header and payload.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.length as usize
    }

    /// True when the body is raw bytes.
    pub fn is_raw(&self) -> bool {
        self.flags & FLAG_RAW != 0
    }
}

/// A frame refused at its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The first 4 bytes are not `MCP1`.
    BadMagic,
    /// The version is not 1.
    Version {
        /// The header's id.
        id: u32,
        /// The version sent.
        version: u8,
    },
    /// The payload is over the limit.
    TooLarge {
        /// The header's id.
        id: u32,
        /// The length sent.
        length: u32,
        /// The limit.
        limit: usize,
    },
    /// The kind byte is unknown; the frame is skipped.
    UnknownKind {
        /// The header's id.
        id: u32,
        /// The kind sent.
        kind: u8,
        /// Bytes to skip.
        frame_len: usize,
    },
    /// A reserved flag bit is set; the frame is skipped.
    ReservedFlags {
        /// The header's id.
        id: u32,
        /// The flags sent.
        flags: u16,
        /// Bytes to skip.
        frame_len: usize,
    },
}

impl FrameError {
    /// True when the connection closes after the error frame.
    pub fn closes(&self) -> bool {
        matches!(
            self,
            Self::BadMagic | Self::Version { .. } | Self::TooLarge { .. }
        )
    }

    /// The id the error frame carries.
    pub fn id(&self) -> u32 {
        match *self {
            Self::BadMagic => 0,
            Self::Version { id, .. }
            | Self::TooLarge { id, .. }
            | Self::UnknownKind { id, .. }
            | Self::ReservedFlags { id, .. } => id,
        }
    }

    /// Bytes to drop to skip the bad frame (when the connection is kept).
    pub fn skip_len(&self) -> usize {
        match *self {
            Self::UnknownKind { frame_len, .. } | Self::ReservedFlags { frame_len, .. } => {
                frame_len
            }
            _ => 0,
        }
    }

    /// The error as sent.
    pub fn to_rpc(&self) -> RpcError {
        match *self {
            Self::BadMagic => RpcError::new(
                codes::BAD_MAGIC,
                "Bad magic: every MCP1 frame starts with the 4 bytes \"MCP1\"; closing",
            ),
            Self::Version { version, .. } => RpcError::new(
                codes::UNSUPPORTED_VERSION,
                format!(
                    "Unsupported version: {version}; this daemon speaks MCP1 version {VERSION}; closing"
                ),
            ),
            Self::TooLarge { length, limit, .. } => RpcError::with(
                ErrorCode::FrameTooLarge,
                format_args!(
                    "payload of {length} bytes exceeds the limit of {limit} bytes; closing"
                ),
            ),
            Self::UnknownKind { kind, .. } => RpcError::new(
                codes::UNKNOWN_KIND,
                format!("Unknown frame kind: 0x{kind:02x}; frame skipped"),
            ),
            Self::ReservedFlags { flags, .. } => RpcError::new(
                codes::RESERVED_FLAGS,
                format!("Reserved bits set: flags 0x{flags:04x}; frame skipped"),
            ),
        }
    }
}

/// What the bytes at the front of the input hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A frame is not complete yet.
    NeedMore,
    /// A whole, valid frame is in.
    Frame(Header),
    /// The frame at the front is refused.
    Error(FrameError),
}

/// Checks the frame at the front: `first` holds up to 16 of its bytes and
/// `available` is how many bytes are in overall. Checks run in the spec's
/// order: magic, version, length, kind, flags.
pub fn check(first: &[u8], available: usize, limit: usize) -> Next {
    check_kinds(first, available, limit, false)
}

/// Like [`check`], for frames the daemon sends (a client reading them):
/// CANCEL, which only the daemon may send, is a known kind here.
pub fn check_from_daemon(first: &[u8], available: usize, limit: usize) -> Next {
    check_kinds(first, available, limit, true)
}

fn check_kinds(first: &[u8], available: usize, limit: usize, cancel_known: bool) -> Next {
    let Some(bytes) = first.first_chunk::<HEADER_LEN>() else {
        // Part of a header: refuse a wrong magic already, else wait.
        let magic_len = first.len().min(4);
        if first[..magic_len] != crate::MCP1_MAGIC[..magic_len] {
            return Next::Error(FrameError::BadMagic);
        }
        return Next::NeedMore;
    };
    // One word compare (a slice compare would call memcmp for every frame).
    if u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
        != u32::from_ne_bytes(*crate::MCP1_MAGIC)
    {
        return Next::Error(FrameError::BadMagic);
    }
    let id = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let length = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
    if bytes[4] != VERSION {
        return Next::Error(FrameError::Version {
            id,
            version: bytes[4],
        });
    }
    if length as usize > limit {
        return Next::Error(FrameError::TooLarge { id, length, limit });
    }
    let frame_len = HEADER_LEN + length as usize;
    if available < frame_len {
        return Next::NeedMore;
    }
    let kind = Kind::from_byte(bytes[5]).filter(|k| cancel_known || *k != Kind::Cancel);
    let Some(kind) = kind else {
        return Next::Error(FrameError::UnknownKind {
            id,
            kind: bytes[5],
            frame_len,
        });
    };
    let allowed = if kind.allows_raw() { FLAG_RAW } else { 0 };
    if flags & !allowed != 0 {
        return Next::Error(FrameError::ReservedFlags {
            id,
            flags,
            frame_len,
        });
    }
    Next::Frame(Header {
        kind,
        flags,
        id,
        length,
    })
}

/// The id and length of a complete header with the right magic, whatever
/// else is wrong with it.
pub fn peek_header(first: &[u8]) -> Option<(u32, u32)> {
    let bytes = first.first_chunk::<HEADER_LEN>()?;
    if bytes[..4] != crate::MCP1_MAGIC[..] {
        return None;
    }
    let id = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let length = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    Some((id, length))
}

/// A request or notification payload, parsed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method name.
    pub method: &'a str,
    /// The body as params.
    pub params: Params<'a>,
}

/// Splits a REQUEST or NOTIFICATION payload into method and params.
pub fn parse_request<'a>(header: &Header, payload: &'a [u8]) -> Result<Request<'a>, RpcError> {
    if header.kind == Kind::Request && header.id == 0 {
        return Err(RpcError::invalid_request(
            "request id 0 is reserved; use ids 1 to 4294967295",
        ));
    }
    let Some((len_bytes, rest)) = payload.split_first_chunk::<2>() else {
        return Err(RpcError::invalid_request(
            "payload too short for method_len",
        ));
    };
    let method_len = usize::from(u16::from_le_bytes(*len_bytes));
    if method_len == 0 || method_len > MAX_METHOD {
        return Err(RpcError::invalid_request(format_args!(
            "method_len {method_len} is not between 1 and {MAX_METHOD}"
        )));
    }
    if method_len > rest.len() {
        return Err(RpcError::invalid_request(format_args!(
            "method_len {method_len} runs past the payload ({} bytes left)",
            rest.len()
        )));
    }
    let (method, body) = rest.split_at(method_len);
    let method = method_name(method)?;
    let params = if header.is_raw() {
        Params::Raw(body)
    } else if body.is_empty() {
        Params::None
    } else {
        Params::Json(parse_json_body(body)?)
    };
    Ok(Request { method, params })
}

/// The method name as text: checked as ASCII a word at a time (every name
/// in practice), as UTF-8 otherwise. `from_utf8` alone goes byte by byte
/// over names this short, and every request pays for it.
fn method_name(bytes: &[u8]) -> Result<&str, RpcError> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        return Ok(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes)
        .map_err(|_| RpcError::invalid_request("the method name is not UTF-8"))
}

/// Reads a non-RAW body as one JSON value (whitespace around it allowed).
pub fn parse_json_body(body: &[u8]) -> Result<&RawValue, RpcError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        RpcError::parse_error(format_args!("body is not UTF-8 (byte {})", e.valid_up_to()))
    })?;
    serde_json::from_str::<&RawValue>(text).map_err(RpcError::parse_error)
}

/// Appends a header.
pub fn write_header(out: &mut Vec<u8>, kind: Kind, flags: u16, id: u32, length: u32) {
    // Built whole, then appended once: one capacity check and one copy.
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(crate::MCP1_MAGIC);
    header[4] = VERSION;
    header[5] = kind as u8;
    header[6..8].copy_from_slice(&flags.to_le_bytes());
    header[8..12].copy_from_slice(&id.to_le_bytes());
    header[12..].copy_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&header);
}

/// Fills in the flags and length of the header that starts at `start`.
fn patch_header(out: &mut [u8], start: usize, flags: u16) -> Result<(), RpcError> {
    let length = u32::try_from(out.len() - start - HEADER_LEN)
        .map_err(|_| RpcError::internal("result too large for an MCP1 frame"))?;
    out[start + 6..start + 8].copy_from_slice(&flags.to_le_bytes());
    out[start + 12..start + 16].copy_from_slice(&length.to_le_bytes());
    Ok(())
}

/// Appends a RESPONSE for `id` with what `run` writes, or an ERROR if it
/// fails. Returns the error that was sent, if any.
pub fn write_response(
    out: &mut Vec<u8>,
    id: u32,
    run: impl FnOnce(&mut Reply<'_>) -> Result<(), RpcError>,
) -> Option<RpcError> {
    let start = out.len();
    write_header(out, Kind::Response, 0, id, 0);
    let outcome = {
        let mut reply = Reply::new(out);
        let result = run(&mut reply);
        // An empty raw result is a real (empty) body; an empty JSON one is null.
        if result.is_ok() && reply.is_empty() && !reply.is_raw() {
            reply.json_text(RawValue::NULL);
        }
        result.map(|()| if reply.is_raw() { FLAG_RAW } else { 0 })
    };
    match outcome.and_then(|flags| patch_header(out, start, flags)) {
        Ok(()) => None,
        Err(error) => {
            out.truncate(start);
            write_error(out, id, &error);
            Some(error)
        }
    }
}

/// Appends an ERROR frame.
pub fn write_error(out: &mut Vec<u8>, id: u32, error: &RpcError) {
    let start = out.len();
    write_header(out, Kind::Error, 0, id, 0);
    out.extend_from_slice(&error.code.to_le_bytes());
    let message = truncate_utf8(&error.message, usize::from(u16::MAX));
    out.extend_from_slice(&(message.len() as u16).to_le_bytes());
    out.extend_from_slice(message.as_bytes());
    if let Some(data) = &error.data {
        // Serializing a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, data);
    }
    if patch_header(out, start, 0).is_err() {
        out.truncate(start);
    }
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Appends the PONG for a PING.
pub fn write_pong(out: &mut Vec<u8>, id: u32, payload: &[u8]) {
    // The payload is within the limit, so it fits a u32.
    write_header(out, Kind::Pong, 0, id, payload.len() as u32);
    out.extend_from_slice(payload);
}

/// Appends a REQUEST (or, with `id` None, a NOTIFICATION) of `method` with
/// `body` (JSON text, or raw bytes when `raw`).
pub fn write_call(out: &mut Vec<u8>, id: Option<u32>, method: &str, body: &[u8], raw: bool) {
    let start = out.len();
    let kind = if id.is_some() {
        Kind::Request
    } else {
        Kind::Notification
    };
    write_header(out, kind, 0, id.unwrap_or(0), 0);
    out.extend_from_slice(&(method.len() as u16).to_le_bytes());
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(body);
    let flags = if raw { FLAG_RAW } else { 0 };
    if patch_header(out, start, flags).is_err() {
        out.truncate(start);
    }
}

/// Appends a CANCEL of the forwarded call `id`, with a JSON `body`.
pub fn write_cancel(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    let start = out.len();
    write_header(out, Kind::Cancel, 0, id, 0);
    out.extend_from_slice(body);
    if patch_header(out, start, 0).is_err() {
        out.truncate(start);
    }
}

/// The parts of an ERROR payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorPayload<'a> {
    /// The code.
    pub code: i32,
    /// The message.
    pub message: &'a str,
    /// The JSON data, if any.
    pub data: Option<&'a [u8]>,
}

impl ErrorPayload<'_> {
    /// The error as received: code, message, and the data when it is JSON.
    pub fn to_rpc(&self) -> RpcError {
        let mut rpc = RpcError::new(self.code, self.message.to_string());
        rpc.data = self.data.and_then(|d| serde_json::from_slice(d).ok());
        rpc
    }
}

/// Reads an ERROR payload (for clients, and for the daemon reading a provider's).
pub fn parse_error_payload(payload: &[u8]) -> Option<ErrorPayload<'_>> {
    let (code, rest) = payload.split_first_chunk::<4>()?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    if len > rest.len() {
        return None;
    }
    let (message, data) = rest.split_at(len);
    Some(ErrorPayload {
        code: i32::from_le_bytes(*code),
        message: std::str::from_utf8(message).ok()?,
        data: (!data.is_empty()).then_some(data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = b"MCP1".to_vec();
        out.extend_from_slice(&[1, kind, 0, 0]);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn responses_carry_the_id_the_raw_flag_and_the_length() {
        let mut out = Vec::new();
        assert!(
            write_response(&mut out, 3, |r| {
                r.bytes(b"\x00\xff");
                Ok(())
            })
            .is_none()
        );
        assert_eq!(
            out,
            b"MCP1\x01\x02\x01\x00\x03\x00\x00\x00\x02\x00\x00\x00\x00\xff"
        );
        out.clear();
        write_response(&mut out, 1, |_| Ok(()));
        assert_eq!(&out[HEADER_LEN..], b"null");
    }

    #[test]
    fn failures_become_error_frames_that_parse_back() {
        let mut out = Vec::new();
        let sent = write_response(&mut out, 4, |r| {
            r.json(&[1, 2])?;
            Err(RpcError::method_not_found("nope").data(serde_json::json!({"x": 1})))
        });
        assert_eq!(sent.map(|e| e.code), Some(-32601));
        let Next::Frame(header) = check(&out[..HEADER_LEN], out.len(), 1024) else {
            panic!("not a frame")
        };
        assert_eq!((header.kind, header.id), (Kind::Error, 4));
        let error = parse_error_payload(&out[HEADER_LEN..]).expect("payload");
        assert_eq!(error.code, -32601);
        assert_eq!(error.message, "Method not found: no method named \"nope\"");
        assert_eq!(error.data, Some(&b"{\"x\":1}"[..]));
    }

    #[test]
    fn calls_round_trip_through_the_request_parser() {
        let mut out = Vec::new();
        write_call(&mut out, Some(9), "rpc.echo", b"[1]", false);
        let Next::Frame(header) = check(&out[..HEADER_LEN], out.len(), 1024) else {
            panic!("not a frame")
        };
        let request = parse_request(&header, &out[HEADER_LEN..]).expect("request");
        assert_eq!(request.method, "rpc.echo");
        assert!(matches!(request.params, Params::Json(raw) if raw.get() == "[1]"));
    }

    #[test]
    fn header_checks_run_in_spec_order() {
        let mut bad = frame(9, 5, b"");
        bad[4] = 2;
        assert!(matches!(
            check(&bad, bad.len(), 64),
            Next::Error(FrameError::Version { id: 5, .. })
        ));
        assert_eq!(check(b"MX", 2, 64), Next::Error(FrameError::BadMagic));
        assert_eq!(check(b"MCP1\x01", 5, 64), Next::NeedMore);
        let big = frame(1, 1, &[0; 65]);
        assert!(matches!(
            check(&big[..16], 16, 64),
            Next::Error(FrameError::TooLarge { .. })
        ));
    }
}
