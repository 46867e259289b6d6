//! Models of the wire formats, written from `proto/jsonrpc.md` and
//! `proto/mcp1.md` rather than from the code under test, so that a target
//! can compare the two. They favour plainness over speed.

use std::fmt;

use junction::proto::Protocol;
use junction::proto::Sniff;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

// ---------------------------------------------------------------- sniffing

/// The bytes jsonrpc.md section 2 skips before the first `{` or `[`.
pub fn is_sniff_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0c)
}

/// jsonrpc.md section 2: what the first bytes of a connection say (steps 1
/// to 5, HTTP included).
pub fn sniff(bytes: &[u8]) -> Sniff {
    let spaces = bytes.iter().take_while(|&&b| is_sniff_space(b)).count();
    if spaces > 60 {
        return Sniff::Unknown;
    }
    if spaces == bytes.len() {
        return Sniff::NeedMore;
    }
    if matches!(bytes[spaces], b'{' | b'[') {
        return Sniff::Detected(Protocol::JsonRpc);
    }
    if spaces > 0 {
        return Sniff::Unknown;
    }
    if bytes.len() >= 4 && &bytes[..4] == b"MCP1" {
        return Sniff::Detected(Protocol::Mcp1);
    }
    if b"MCP1".starts_with(bytes) {
        return Sniff::NeedMore;
    }
    // Step 4: an HTTP request method and its space (waiting while the bytes
    // are a prefix of one).
    const METHODS: [&[u8]; 7] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"OPTIONS ",
        b"PUT ",
        b"DELETE ",
        b"PATCH ",
    ];
    if METHODS.iter().any(|m| bytes.starts_with(m)) {
        Sniff::Http
    } else if METHODS.iter().any(|m| m.starts_with(bytes)) {
        Sniff::NeedMore
    } else {
        Sniff::Unknown
    }
}

// ---------------------------------------------------------------- JSON

/// True when `bytes` are one JSON value (UTF-8, any depth, whitespace around
/// it allowed). serde_json skips a raw value without recursion, so this has
/// no nesting limit, like the daemon.
pub fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<&RawValue>(bytes).is_ok()
}

/// The members of a JSON object in the order they appear, names unescaped
/// and values raw. Fails on anything but an object, and on a name that is
/// not a valid Unicode string (a lone surrogate escape).
#[derive(Debug)]
pub struct Members<'a>(pub Vec<(String, &'a RawValue)>);

impl<'a> Members<'a> {
    /// Reads the members of the object in `text`.
    pub fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The first member called `name`.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// The text of a JSON string, unescaped; None for anything else.
pub fn string_of(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

// ---------------------------------------------------------------- JSON-RPC lines

/// One thing the line framing of jsonrpc.md section 3 yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// A message: the line without its LF and without one CR before it.
    Line(&'a [u8]),
    /// A line over `max-frame`: -32001, and nothing after it is read.
    TooLong,
    /// At end of input, a last line without LF that is over `max-frame`:
    /// -32001 as well, then the close.
    TooLongAtEof,
}

/// The lines `stream` holds. With `eof`, the peer has ended its side after
/// the stream, so a last line without LF counts too. Returns the events and
/// how many bytes are left waiting for their LF.
pub fn lines(stream: &[u8], max_frame: usize, eof: bool) -> (Vec<LineEvent<'_>>, usize) {
    let mut events = Vec::new();
    let mut rest = stream;
    loop {
        match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let mut line = &rest[..lf];
                if let Some((b'\r', before)) = line.split_last() {
                    line = before;
                }
                if line.len() > max_frame {
                    events.push(LineEvent::TooLong);
                    return (events, 0);
                }
                events.push(LineEvent::Line(line));
                rest = &rest[lf + 1..];
            }
            // "The daemon notices as soon as more than max-frame + 1 bytes are
            // waiting without an LF."
            None if rest.len() > max_frame.saturating_add(1) => {
                events.push(LineEvent::TooLong);
                return (events, 0);
            }
            None if eof && !rest.is_empty() => {
                if rest.len() <= max_frame {
                    events.push(LineEvent::Line(rest));
                } else {
                    events.push(LineEvent::TooLongAtEof);
                }
                return (events, 0);
            }
            None => return (events, rest.len()),
        }
    }
}

/// True for a blank line (jsonrpc.md section 3): empty or whitespace only.
pub fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|&b| is_sniff_space(b))
}

/// What jsonrpc.md section 5 (steps 5 to 9) makes of one JSON value that is
/// a request candidate (a single line, or an entry of a batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryModel {
    /// Not an object: -32600 "expected a request object, got <kind>", id null.
    NotObject(&'static str),
    /// A known member appears twice: -32600 "duplicate field `<name>`", id null.
    Duplicate(String),
    /// -32600 with this detail, and this raw id (None: null).
    Invalid {
        /// The raw id echoed, when usable.
        id: Option<String>,
        /// The detail after "Invalid Request: ".
        detail: &'static str,
    },
    /// An unsolicited response: no reply.
    Response,
    /// A call (`id` Some, raw) or a notification.
    Request {
        /// The raw id.
        id: Option<String>,
        /// The method name, unescaped.
        method: String,
        /// The raw params.
        params: Option<String>,
    },
}

/// The members the daemon looks at; only these can be duplicates.
const KNOWN: [&str; 6] = ["jsonrpc", "method", "params", "id", "result", "error"];

/// Applies steps 5 to 9 to `text`, which must be one valid JSON value. None
/// when the model cannot tell (a member name with a lone surrogate).
pub fn entry(text: &str) -> Option<EntryModel> {
    let value = text.trim_start_matches([' ', '\t', '\r', '\n']);
    let kind = match value.as_bytes().first() {
        Some(b'{') => None,
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        _ => Some("a number"),
    };
    if let Some(kind) = kind {
        return Some(EntryModel::NotObject(kind));
    }
    let members = Members::parse(text)?;
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in &members.0 {
        if KNOWN.contains(&name.as_str()) {
            if seen.contains(&name.as_str()) {
                return Some(EntryModel::Duplicate(name.clone()));
            }
            seen.push(name);
        }
    }
    let id = members.get("id");
    let usable = |id: &RawValue| {
        matches!(
            id.get().as_bytes().first(),
            Some(b'"' | b'-' | b'0'..=b'9' | b'n')
        )
    };
    if id.is_some_and(|id| !usable(id)) {
        return Some(EntryModel::Invalid {
            id: None,
            detail: "\"id\" must be a string, a number or null",
        });
    }
    let id = id.map(|raw| raw.get().to_string());
    let invalid = |detail| {
        Some(EntryModel::Invalid {
            id: id.clone(),
            detail,
        })
    };
    match members.get("jsonrpc") {
        None => return invalid("missing \"jsonrpc\": \"2.0\""),
        Some(v) if string_of(v).as_deref() != Some("2.0") => {
            return invalid("\"jsonrpc\" must be exactly \"2.0\"");
        }
        Some(_) => {}
    }
    let Some(method) = members.get("method") else {
        if members.get("result").is_some() || members.get("error").is_some() {
            return Some(EntryModel::Response);
        }
        return invalid("missing \"method\"");
    };
    let Some(method) = string_of(method) else {
        return invalid("\"method\" must be a string");
    };
    let params = members.get("params");
    if params.is_some_and(|p| !matches!(p.get().as_bytes().first(), Some(b'[' | b'{'))) {
        return invalid("\"params\" must be an array or an object");
    }
    Some(EntryModel::Request {
        id,
        method,
        params: params.map(|p| p.get().to_string()),
    })
}

// ---------------------------------------------------------------- MCP1

/// What mcp1.md sections 1, 2 and 5 make of the bytes at the front of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mcp1Next {
    /// A correct prefix of a frame.
    NeedMore,
    /// A whole frame with a valid header.
    Frame {
        /// The kind byte.
        kind: u8,
        /// The flags.
        flags: u16,
        /// The id.
        id: u32,
        /// The payload length.
        length: u32,
    },
    /// The frame is refused with `code`, sent with `id`; `close` tells
    /// whether the connection ends, else `skip` bytes are dropped.
    Error {
        /// The error code.
        code: i32,
        /// The id the error frame carries.
        id: u32,
        /// Whether the connection closes after it.
        close: bool,
        /// Bytes to skip when it does not.
        skip: usize,
    },
}

/// The kinds of mcp1.md section 2 (CANCEL, 5, is reserved: unknown today).
pub fn is_known_kind(kind: u8) -> bool {
    matches!(kind, 1 | 2 | 3 | 4 | 6 | 7)
}

/// Checks the frame at the front of `bytes` in the order of mcp1.md section
/// 5: magic (as soon as its bytes are in), version, length, kind, flags;
/// kind and flags only once the whole frame is in.
pub fn mcp1_next(bytes: &[u8], limit: usize) -> Mcp1Next {
    let magic = bytes.len().min(4);
    if bytes[..magic] != b"MCP1"[..magic] {
        return Mcp1Next::Error {
            code: -32010,
            id: 0,
            close: true,
            skip: 0,
        };
    }
    if bytes.len() < 16 {
        return Mcp1Next::NeedMore;
    }
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (version, kind) = (bytes[4], bytes[5]);
    let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
    let (id, length) = (u32_at(8), u32_at(12));
    let fatal = |code| Mcp1Next::Error {
        code,
        id,
        close: true,
        skip: 0,
    };
    if version != 1 {
        return fatal(-32011);
    }
    if u64::from(length) > limit as u64 {
        return fatal(-32001);
    }
    let frame_len = 16 + length as usize;
    if bytes.len() < frame_len {
        return Mcp1Next::NeedMore;
    }
    let skipped = |code| Mcp1Next::Error {
        code,
        id,
        close: false,
        skip: frame_len,
    };
    if !is_known_kind(kind) {
        return skipped(-32013);
    }
    let raw_allowed = matches!(kind, 1..=3);
    if flags & !1 != 0 || (flags & 1 != 0 && !raw_allowed) {
        return skipped(-32012);
    }
    Mcp1Next::Frame {
        kind,
        flags,
        id,
        length,
    }
}

/// What mcp1.md section 3 makes of a REQUEST or NOTIFICATION payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mcp1Request<'a> {
    /// A call of `method` with `body` (raw bytes when `raw`, else JSON text
    /// or empty).
    Call {
        /// The method name.
        method: &'a str,
        /// The bytes after the method name.
        body: &'a [u8],
        /// Whether the RAW flag is set.
        raw: bool,
    },
    /// Refused with this code.
    Refused(i32),
}

/// Splits a REQUEST (kind 1) or NOTIFICATION (kind 3) payload.
pub fn mcp1_request(kind: u8, flags: u16, id: u32, payload: &[u8]) -> Mcp1Request<'_> {
    if kind == 1 && id == 0 {
        return Mcp1Request::Refused(-32600);
    }
    if payload.len() < 2 {
        return Mcp1Request::Refused(-32600);
    }
    let method_len = usize::from(u16::from_le_bytes([payload[0], payload[1]]));
    if method_len == 0 || method_len > 255 || method_len > payload.len() - 2 {
        return Mcp1Request::Refused(-32600);
    }
    let Ok(method) = std::str::from_utf8(&payload[2..2 + method_len]) else {
        return Mcp1Request::Refused(-32600);
    };
    let body = &payload[2 + method_len..];
    let raw = flags & 1 != 0;
    if !raw && !body.is_empty() && !is_json(body) {
        return Mcp1Request::Refused(-32700);
    }
    Mcp1Request::Call { method, body, raw }
}
