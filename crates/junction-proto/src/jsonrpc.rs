//! JSON-RPC 2.0 over newline-delimited JSON: the framing, the parsing of
//! requests (single and batch) and the encoding of responses. No I/O.
//!
//! Parsing borrows from the line: the method name, the params and the id are
//! slices of the frame, and the id is echoed back byte for byte.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::ptr;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::call::Reply;
use crate::error::{ErrorCode, RpcError};
use crate::jsonscan::{self, Members, Scanned};

/// One decoded line.
#[derive(Debug)]
pub enum Message<'a> {
    /// A blank line: nothing to do.
    Blank,
    /// A single request, notification or response.
    Single(Entry<'a>),
    /// A batch: its raw entries, each still to be parsed with [`parse_entry`].
    Batch(Vec<&'a RawValue>),
    /// The line as a whole is wrong (parse error, empty or oversized batch):
    /// answered with this error and id null.
    Invalid(RpcError),
}

/// One request object, or why it is not one.
#[derive(Debug)]
pub enum Entry<'a> {
    /// A call (`id` present) or a notification (`id` absent).
    Request {
        /// The raw id (a string, number or null), or None for a notification.
        id: Option<&'a RawValue>,
        /// The method name.
        method: Cow<'a, str>,
        /// The raw params (an array or object), if any.
        params: Option<&'a RawValue>,
    },
    /// A response object (has `result` or `error`, no `method`).
    Response {
        /// The id it answers.
        id: Option<&'a RawValue>,
        /// The `result` member, or Err with the `error` member.
        outcome: Result<&'a RawValue, &'a RawValue>,
    },
    /// Not a valid request: answered with `error` and `id` (null if unknown).
    Invalid {
        /// The id, when it could be read and is of a valid type.
        id: Option<&'a RawValue>,
        /// What is wrong.
        error: RpcError,
    },
}

/// A request line as most clients write it (see [`compact_request`]).
#[derive(Debug, Clone, Copy)]
pub struct CompactRequest<'a> {
    /// The method name.
    pub method: &'a str,
    /// The raw params (an array or object), if any.
    pub params: Option<&'a RawValue>,
    /// The raw id (a string, number or null), or None for a notification.
    pub id: Option<&'a RawValue>,
}

/// The request on `line` when it is written in the compact form most
/// clients use (`{"jsonrpc":"2.0","method":"M"` then `,"params":P` and
/// `,"id":I`, each optional, then `}`) with a plain method and params and id
/// of allowed kinds: what [`parse_line`] would return as an
/// [`Entry::Request`], found with less work. None for any other line, which
/// [`parse_line`] decodes. The loop's fast path: no [`Message`] is built.
#[inline]
pub fn compact_request(line: &[u8]) -> Option<CompactRequest<'_>> {
    jsonscan::compact_request(line).map(|(method, params, id)| CompactRequest {
        method,
        params,
        id,
    })
}

/// Decodes one line: one pass of the scanner (`proto/jsonscan.rs`) when the
/// line is well formed, else the reference parser, which words the error.
pub fn parse_line(line: &[u8], max_batch: usize) -> Message<'_> {
    if let Some(CompactRequest { method, params, id }) = compact_request(line) {
        return Message::Single(Entry::Request {
            id,
            method: Cow::Borrowed(method),
            params,
        });
    }
    match jsonscan::scan_line(line) {
        Some(Scanned::Object(members)) => Message::Single(entry_of(members)),
        Some(Scanned::Batch(entries)) => batch(entries, max_batch),
        None => parse_line_serde(line, max_batch),
    }
}

/// The entry of a scanned object, checked by [`Envelope::validate`], which
/// words any error.
#[inline]
fn entry_of(m: Members<'_>) -> Entry<'_> {
    Envelope::from(m).validate()
}

/// The first byte of an id the spec allows: a string, a number or null.
fn valid_id_start(first: u8) -> bool {
    matches!(first, b'"' | b'-' | b'0'..=b'9' | b'n')
}

/// Parses one entry of a batch, the same way.
pub fn parse_entry(raw: &RawValue) -> Entry<'_> {
    match jsonscan::scan_entry(raw.get()) {
        Some(members) => Envelope::from(members).validate(),
        None => parse_entry_serde(raw),
    }
}

fn batch(entries: Vec<&RawValue>, max_batch: usize) -> Message<'_> {
    if entries.is_empty() {
        Message::Invalid(RpcError::invalid_request("empty batch"))
    } else if entries.len() > max_batch {
        Message::Invalid(RpcError::invalid_request(format_args!(
            "batch of {} entries exceeds the limit of {max_batch}",
            entries.len()
        )))
    } else {
        Message::Batch(entries)
    }
}

/// Decodes one line with serde_json alone: the reference [`parse_line`]
/// must agree with (tests and fuzz/fuzz_targets/jsonrpc_diff.rs compare
/// them), and its slow path, which gives every error its spec'd text.
pub fn parse_line_serde(line: &[u8], max_batch: usize) -> Message<'_> {
    let Some(first) = line.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Message::Blank;
    };
    // serde_json skips unknown members without checking their UTF-8.
    let line = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => {
            return Message::Invalid(RpcError::parse_error(format_args!(
                "invalid UTF-8 at byte {}",
                e.valid_up_to()
            )));
        }
    };
    if line.as_bytes()[first] != b'[' {
        return match parse_object(line) {
            Ok(entry) => Message::Single(entry),
            Err(e) if e.is_data() => Message::Single(Entry::Invalid {
                id: None,
                error: RpcError::invalid_request(describe_shape_error(&e)),
            }),
            Err(e) => Message::Invalid(RpcError::parse_error(e)),
        };
    }
    match serde_json::from_str::<Vec<&RawValue>>(line) {
        Ok(entries) => batch(entries, max_batch),
        Err(e) => Message::Invalid(RpcError::parse_error(e)),
    }
}

/// Parses one entry of a batch with serde_json alone (the reference
/// [`parse_entry`] must agree with).
pub fn parse_entry_serde(raw: &RawValue) -> Entry<'_> {
    match parse_object(raw.get()) {
        Ok(entry) => entry,
        Err(e) => Entry::Invalid {
            id: None,
            error: RpcError::invalid_request(describe_shape_error(&e)),
        },
    }
}

/// Parses a request object. Anything but an object is refused before serde
/// sees it: a derived struct would also accept an array, field by position.
fn parse_object(text: &str) -> Result<Entry<'_>, serde_json::Error> {
    let trimmed = text.trim_start_matches([' ', '\t', '\r', '\n']);
    if !trimmed.starts_with('{') {
        // Still parse, so that a syntax error stays a parse error.
        let value = serde_json::from_str::<serde::de::IgnoredAny>(text)?;
        let _ = value;
        return Ok(Entry::Invalid {
            id: None,
            error: RpcError::invalid_request(format_args!(
                "expected a request object, got {}",
                json_kind(trimmed)
            )),
        });
    }
    serde_json::from_str::<Envelope<'_>>(text).map(Envelope::validate)
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn describe_shape_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde's "expected struct Envelope" means nothing to a client.
    match text.find(", expected struct Envelope") {
        Some(at) => format!("{}, expected a request object", &text[..at]),
        None => text,
    }
}

/// The members of a request, each kept raw so that it can be checked with a
/// precise message and so that `"id": null` stays apart from a missing id.
#[derive(Default)]
struct Envelope<'a> {
    jsonrpc: Option<&'a RawValue>,
    method: Option<&'a RawValue>,
    params: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    result: Option<&'a RawValue>,
    error: Option<&'a RawValue>,
    /// The scanner saw `method` as a string without escapes.
    method_plain: bool,
}

impl<'a> From<Members<'a>> for Envelope<'a> {
    fn from(m: Members<'a>) -> Self {
        Envelope {
            jsonrpc: m.jsonrpc,
            method: m.method,
            params: m.params,
            id: m.id,
            result: m.result,
            error: m.error,
            method_plain: m.method_plain,
        }
    }
}

/// A member name. Read raw and then unescaped, so that a name that is no
/// valid Unicode (a lone surrogate escape, which JSON's grammar allows) is
/// one more member to ignore rather than a parse error; the grammar, control
/// characters included, is still checked.
enum Member {
    Jsonrpc,
    Method,
    Params,
    Id,
    Result,
    Error,
    Other,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <&RawValue>::deserialize(d)?;
        Ok(match json_str(name).as_deref() {
            Some("jsonrpc") => Member::Jsonrpc,
            Some("method") => Member::Method,
            Some("params") => Member::Params,
            Some("id") => Member::Id,
            Some("result") => Member::Result,
            Some("error") => Member::Error,
            _ => Member::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct Envelope")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut envelope = Envelope::default();
                while let Some(member) = map.next_key::<Member>()? {
                    let (slot, name) = match member {
                        Member::Jsonrpc => (&mut envelope.jsonrpc, "jsonrpc"),
                        Member::Method => (&mut envelope.method, "method"),
                        Member::Params => (&mut envelope.params, "params"),
                        Member::Id => (&mut envelope.id, "id"),
                        Member::Result => (&mut envelope.result, "result"),
                        Member::Error => (&mut envelope.error, "error"),
                        Member::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(de::Error::duplicate_field(name));
                    }
                    // Present even when its value is `null`.
                    *slot = Some(map.next_value()?);
                }
                Ok(envelope)
            }
        }
        d.deserialize_map(Members)
    }
}

/// A JSON string's text: borrowed from the frame unless it has escapes.
/// (serde turns a `Cow<str>` into an owned String every time.)
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    // Valid JSON: a string without a backslash is its own text.
    if let Some(text) = raw
        .get()
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
    {
        if !text.bytes().any(|c| c == b'\\') {
            return Some(Cow::Borrowed(text));
        }
    }
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(text) => Some(Cow::Borrowed(text)),
        Err(_) => serde_json::from_str::<String>(raw.get())
            .ok()
            .map(Cow::Owned),
    }
}

fn first_byte(raw: &RawValue) -> u8 {
    raw.get().as_bytes().first().copied().unwrap_or(b' ')
}

impl<'a> Envelope<'a> {
    fn validate(self) -> Entry<'a> {
        let id = match self.id {
            Some(id) if !valid_id_start(first_byte(id)) => {
                return Entry::Invalid {
                    id: None,
                    error: RpcError::invalid_request("\"id\" must be a string, a number or null"),
                };
            }
            id => id,
        };
        let invalid = |detail: &str| Entry::Invalid {
            id,
            error: RpcError::invalid_request(detail),
        };
        match self.jsonrpc {
            // Nearly always spelled this way: one compare.
            Some(version) if version.get() == "\"2.0\"" => {}
            Some(version) if json_str(version).is_some_and(|v| v == "2.0") => {}
            None => return invalid("missing \"jsonrpc\": \"2.0\""),
            _ => return invalid("\"jsonrpc\" must be exactly \"2.0\""),
        }
        let Some(method) = self.method else {
            match (self.result, self.error) {
                (_, Some(error)) => {
                    return Entry::Response {
                        id,
                        outcome: Err(error),
                    };
                }
                (Some(result), None) => {
                    return Entry::Response {
                        id,
                        outcome: Ok(result),
                    };
                }
                (None, None) => {}
            }
            return invalid("missing \"method\"");
        };
        let method = match method.get() {
            // The scanner has seen it: a string without escapes.
            text if self.method_plain => Cow::Borrowed(&text[1..text.len() - 1]),
            _ => match json_str(method) {
                Some(method) => method,
                None => return invalid("\"method\" must be a string"),
            },
        };
        if let Some(params) = self.params {
            if !matches!(first_byte(params), b'[' | b'{') {
                return invalid("\"params\" must be an array or an object");
            }
        }
        Entry::Request {
            id,
            method,
            params: self.params,
        }
    }
}

const RESULT_PREFIX: &[u8] = br#"{"jsonrpc":"2.0","result":"#;
const ERROR_PREFIX: &[u8] = br#"{"jsonrpc":"2.0","error":{"code":"#;

/// Appends JSON text that did not come from this connection's own line (a
/// provider's result, a caller's params, event data) so that it cannot end
/// the line: every CR and LF in it is written as a space.
///
/// In valid JSON, CR and LF can only be whitespace between tokens (inside a
/// string they must be escaped; every JSON value the daemon passes on was
/// checked by serde_json, which refuses them there), so the value is
/// unchanged. Without this, an MCP1 peer, whose bodies may hold raw LF, could
/// write whole forged lines into a JSON-RPC peer's stream. The search is
/// memchr's: text without CR or LF costs one vectorised scan and the copy.
pub fn write_raw_json(out: &mut Vec<u8>, raw: &[u8]) {
    let start = out.len();
    out.extend_from_slice(raw);
    blank_line_breaks(&mut out[start..]);
}

/// Replaces every CR and LF in `json` with a space, in place.
fn blank_line_breaks(json: &mut [u8]) {
    let mut at = 0;
    while let Some(found) = memchr::memchr2(b'\n', b'\r', &json[at..]) {
        json[at + found] = b' ';
        at += found + 1;
    }
}

/// Appends `,"id":ID}`. Ids are short (a counter, a short string): up to
/// 16 bytes the tail is written straight into the buffer's spare capacity
/// after one capacity check, with fixed-size moves (overlapping 8-byte ones
/// for 8..=16 bytes, 4-byte ones for 4..8, single bytes below), not a
/// `memcpy` call sized at run time.
#[inline]
fn write_id(out: &mut Vec<u8>, id: Option<&RawValue>) {
    const KEY: &[u8; 6] = br#","id":"#;
    let id = id.map_or("null", |id| id.get()).as_bytes();
    let n = id.len();
    if n > 16 {
        return write_long_id(out, id);
    }
    out.reserve(KEY.len() + 16 + 1);
    let len = out.len();
    // SAFETY: `reserve` left at least 23 bytes of capacity past `len`, and
    // the tail is 7 + n <= 23 bytes. Every byte of [len, len + 7 + n) is
    // written before `set_len` exposes it: the key, then the id (the two
    // moves of each size class overlap and together cover all n bytes; for
    // n < 4 the first, middle and last byte are all of them), then `}`.
    // Every read is within `id` (n bytes) or `KEY`.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        ptr::copy_nonoverlapping(KEY.as_ptr(), dst, KEY.len());
        let at = dst.add(KEY.len());
        let src = id.as_ptr();
        if n >= 8 {
            ptr::copy_nonoverlapping(src, at, 8);
            ptr::copy_nonoverlapping(src.add(n - 8), at.add(n - 8), 8);
        } else if n >= 4 {
            ptr::copy_nonoverlapping(src, at, 4);
            ptr::copy_nonoverlapping(src.add(n - 4), at.add(n - 4), 4);
        } else if n > 0 {
            *at = *src;
            *at.add(n / 2) = *src.add(n / 2);
            *at.add(n - 1) = *src.add(n - 1);
        }
        *at.add(n) = b'}';
        out.set_len(len + KEY.len() + n + 1);
    }
}

/// [`write_id`] for an id longer than 16 bytes.
#[inline(never)]
fn write_long_id(out: &mut Vec<u8>, id: &[u8]) {
    out.reserve(id.len() + 7);
    out.extend_from_slice(br#","id":"#);
    out.extend_from_slice(id);
    out.push(b'}');
}

/// Appends a response object (no newline) for `id`, with the result `run`
/// writes; if `run` fails, an error response takes its place. Returns the
/// error that was sent, if any.
///
/// The result is kept on one line whatever wrote it (see [`write_raw_json`]):
/// a routed call's result comes from another peer, and a handler may pass on
/// JSON text it did not build.
#[inline]
pub fn write_response(
    out: &mut Vec<u8>,
    id: Option<&RawValue>,
    run: impl FnOnce(&mut Reply<'_>) -> Result<(), RpcError>,
) -> Option<RpcError> {
    let start = out.len();
    out.extend_from_slice(RESULT_PREFIX);
    let mut reply = Reply::new(out);
    if let Err(error) = run(&mut reply) {
        return Some(answer_error_instead(out, start, id, error));
    }
    let (raw, empty, one_line) = (reply.is_raw(), reply.is_empty(), reply.is_one_line());
    if raw {
        let error = RpcError::with(
            ErrorCode::UnsupportedEncoding,
            "the method returned raw bytes, which JSON-RPC cannot carry; call it over MCP1",
        );
        return Some(answer_error_instead(out, start, id, error));
    }
    if empty {
        out.extend_from_slice(b"null");
    } else if !one_line {
        blank_line_breaks(&mut out[start + RESULT_PREFIX.len()..]);
    }
    write_id(out, id);
    None
}

/// Replaces the response begun at `start` with an error response.
#[cold]
#[inline(never)]
fn answer_error_instead(
    out: &mut Vec<u8>,
    start: usize,
    id: Option<&RawValue>,
    error: RpcError,
) -> RpcError {
    out.truncate(start);
    write_error(out, id, &error);
    error
}

/// Appends an error response object (no newline).
pub fn write_error(out: &mut Vec<u8>, id: Option<&RawValue>, error: &RpcError) {
    out.extend_from_slice(ERROR_PREFIX);
    out.extend_from_slice(itoa(error.code, &mut [0u8; 12]));
    out.extend_from_slice(br#","message":"#);
    // Serializing a str or a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, error.message.as_ref());
    if let Some(data) = &error.data {
        out.extend_from_slice(br#","data":"#);
        let _ = serde_json::to_writer(&mut *out, data);
    }
    out.push(b'}');
    write_id(out, id);
}

/// Appends a request object (no newline) with a numeric id, or a
/// notification when `id` is None: what the daemon forwards to providers
/// and sends to subscribers. `params` come from another peer (a caller, a
/// publisher) and are written with [`write_raw_json`].
pub fn write_request(out: &mut Vec<u8>, id: Option<u32>, method: &str, params: Option<&str>) {
    out.extend_from_slice(br#"{"jsonrpc":"2.0","#);
    if let Some(id) = id {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "\"id\":{id},");
    }
    out.extend_from_slice(br#""method":"#);
    let _ = serde_json::to_writer(&mut *out, method);
    if let Some(params) = params {
        out.extend_from_slice(br#","params":"#);
        write_raw_json(out, params.as_bytes());
    }
    out.push(b'}');
}

fn itoa(value: i32, buf: &mut [u8; 12]) -> &[u8] {
    let mut n = i64::from(value).unsigned_abs();
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compact path takes exactly the lines it should, and reads them as
    /// the reference parser does; every other line is left to `parse_line`'s
    /// general path.
    #[test]
    fn compact_requests_read_as_the_reference_parser_reads_them() {
        let taken: [&[u8]; 10] = [
            br#"{"jsonrpc":"2.0","method":"rpc.ping","id":1}"#,
            br#"{"jsonrpc":"2.0","method":"rpc.ping","id":0}"#,
            br#"{"jsonrpc":"2.0","method":"m","params":[1,{"a":"}"}],"id":"x"}"#,
            br#"{"jsonrpc":"2.0","method":"m","params":{}}"#,
            br#"{"jsonrpc":"2.0","method":"m"}"#,
            br#"{"jsonrpc":"2.0","method":"","id":null}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":-7}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":"a\"b"}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":12345678901234567890}"#,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"\xc3\xa9\xe2\x82\xac\",\"id\":-1.5e3}",
        ];
        let declined: [&[u8]; 16] = [
            br#"{"jsonrpc":"2.0","method":"m\u0041","params":{}}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":true}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":1.5}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":1e3}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":01}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":1}  "#,
            br#"{"jsonrpc":"2.0","method":"m","id":1,"id":2}"#,
            br#"{"jsonrpc":"2.0","method":"m","params":"x","id":1}"#,
            br#"{"jsonrpc":"2.0","method":"m","params":3}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":[1]}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":1"#,
            br#"{"jsonrpc":"2.0","method":"m","params":[1,],"id":1}"#,
            br#"{"jsonrpc":"2.0","method":"m","id":1,"params":[]}"#,
            br#"{"jsonrpc":"2.0","method":"m" ,"id":1}"#,
            b"{\"jsonrpc\":\"2.0\",\"method\":\"m\x01\",\"id\":1}",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\",\"id\":1}",
        ];
        for line in taken {
            let shown = String::from_utf8_lossy(line);
            let fast = compact_request(line).unwrap_or_else(|| panic!("declined {shown}"));
            let Message::Single(Entry::Request { id, method, params }) =
                parse_line_serde(line, 100)
            else {
                panic!("the reference parser has no request in {shown}");
            };
            assert_eq!(fast.method, method, "{shown}");
            assert_eq!(fast.id.map(RawValue::get), id.map(RawValue::get), "{shown}");
            assert_eq!(
                fast.params.map(RawValue::get),
                params.map(RawValue::get),
                "{shown}"
            );
        }
        for line in declined {
            let shown = String::from_utf8_lossy(line);
            assert!(compact_request(line).is_none(), "took {shown}");
            assert_eq!(
                format!("{:?}", parse_line(line, 100)),
                format!("{:?}", parse_line_serde(line, 100)),
                "{shown}"
            );
        }
    }

    fn request(line: &str) -> (Option<String>, String, Option<String>) {
        match parse_line(line.as_bytes(), 100) {
            Message::Single(Entry::Request { id, method, params }) => (
                id.map(|i| i.get().to_string()),
                method.into_owned(),
                params.map(|p| p.get().to_string()),
            ),
            other => panic!("not a request: {other:?}"),
        }
    }

    fn invalid(line: &str) -> String {
        match parse_line(line.as_bytes(), 100) {
            Message::Single(Entry::Invalid { error, .. }) => {
                assert_eq!(error.code, -32600);
                error.message.into_owned()
            }
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn requests_keep_their_raw_id_and_params() {
        let (id, method, params) =
            request(r#"{"jsonrpc":"2.0","method":"rpc.echo","params":[1, 2],"id":7}"#);
        assert_eq!(id.as_deref(), Some("7"));
        assert_eq!(method, "rpc.echo");
        assert_eq!(params.as_deref(), Some("[1, 2]"));
        let (id, _, params) = request(r#"{"id":null,"jsonrpc":"2.0","method":"m"}"#);
        assert_eq!(
            id.as_deref(),
            Some("null"),
            "null id is a call, not a notification"
        );
        assert_eq!(params, None);
        let (id, _, _) = request(r#"{"jsonrpc":"2.0","method":"m"}"#);
        assert_eq!(id, None);
        let (id, method, _) = request(r#"{"jsonrpc":"2.0","method":"a\u002eb","id":"x"}"#);
        assert_eq!((id.as_deref(), method.as_str()), (Some("\"x\""), "a.b"));
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        assert!(invalid(r#"{"method":"m","id":1}"#).contains("jsonrpc"));
        assert!(invalid(r#"{"jsonrpc":"1.0","method":"m","id":1}"#).contains("2.0"));
        assert!(invalid(r#"{"jsonrpc":"2.0","id":1}"#).contains("missing \"method\""));
        assert!(invalid(r#"{"jsonrpc":"2.0","method":5,"id":1}"#).contains("string"));
        assert!(invalid(r#"{"jsonrpc":"2.0","method":"m","params":3,"id":1}"#).contains("params"));
        assert!(invalid(r#"{"jsonrpc":"2.0","method":"m","id":{}}"#).contains("id"));
        assert!(invalid(r#"{"jsonrpc":"2.0","method":"m","id":true}"#).contains("id"));
        assert!(invalid("42").contains("expected a request object, got a number"));
        let positional: &RawValue =
            serde_json::from_str(r#"["2.0","rpc.ping",null,1]"#).expect("json");
        assert!(matches!(
            parse_entry(positional),
            Entry::Invalid { error, .. } if error.message.contains("got an array")
        ));
        assert!(invalid(r#"{"jsonrpc":"2.0","method":"m","id":1,"id":2}"#).contains("duplicate"));
        assert!(
            invalid(r#"{"jsonrpc":"2.0","method":"m","i\u0064":1,"id":2}"#).contains("duplicate")
        );
        assert_eq!(
            invalid(r#"{"jsonrpc":"2.0","method":"rpc.ping","id":6,"id":7}"#),
            "Invalid Request: duplicate field `id` at line 1 column 48",
            "the text proto/jsonrpc.md shows"
        );
    }

    #[test]
    fn a_member_name_with_a_lone_surrogate_is_ignored_like_any_other() {
        // Found by fuzz/fuzz_targets/jsonrpc_framer.rs: valid JSON, yet it was
        // answered -32700 "unexpected end of hex escape".
        let (id, method, _) = request(r#"{"jsonrpc":"2.0","method":"m","id":1,"\ud800":0}"#);
        assert_eq!((id.as_deref(), method.as_str()), (Some("1"), "m"));
        let (id, _, _) = request(r#"{"\udc00x":{"a":[1]},"jsonrpc":"2.0","method":"m"}"#);
        assert_eq!(id, None);
        // The fuzzer caught a first fix that read names as bytes: serde_json
        // then skips the control character check. Still not JSON:
        let raw_nul = b"{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"\0\":1,\"id\":1}";
        assert!(matches!(parse_line(raw_nul, 10), Message::Invalid(e) if e.code == -32700));
    }

    #[test]
    fn parse_errors_and_batches() {
        assert!(matches!(parse_line(b"{\"jsonrpc\"", 10), Message::Invalid(e) if e.code == -32700));
        assert!(matches!(parse_line(b"{} x", 10), Message::Invalid(e) if e.code == -32700));
        assert!(matches!(parse_line(b"[]", 10), Message::Invalid(e) if e.code == -32600));
        assert!(matches!(parse_line(b"[1,2,3]", 2), Message::Invalid(e) if e.code == -32600));
        assert!(matches!(parse_line(b"  \t", 2), Message::Blank));
        let Message::Batch(entries) =
            parse_line(b"[1, {\"jsonrpc\":\"2.0\",\"method\":\"m\"}]", 10)
        else {
            panic!("batch expected")
        };
        assert!(matches!(parse_entry(entries[0]), Entry::Invalid { .. }));
        assert!(matches!(
            parse_entry(entries[1]),
            Entry::Request { id: None, .. }
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(parse_line(deep.as_bytes(), 10), Message::Invalid(e) if e.code == -32700));
        assert!(
            matches!(parse_line(b"{\"a\":\"\xff\"}", 10), Message::Invalid(e) if e.code == -32700)
        );
    }

    #[test]
    fn responses_are_recognised() {
        assert!(matches!(
            parse_line(br#"{"jsonrpc":"2.0","result":1,"id":3}"#, 10),
            Message::Single(Entry::Response { .. })
        ));
    }

    #[test]
    fn responses_echo_the_id_and_replace_failures_with_errors() {
        let id: &RawValue = serde_json::from_str("\"abc\"").expect("id");
        let mut out = Vec::new();
        assert!(write_response(&mut out, Some(id), |r| r.json(&[1, 2])).is_none());
        assert_eq!(out, br#"{"jsonrpc":"2.0","result":[1,2],"id":"abc"}"#);
        out.clear();
        let sent = write_response(&mut out, None, |_| Err(RpcError::internal("bad \"x\"")));
        assert_eq!(sent.map(|e| e.code), Some(-32603));
        let parsed: serde_json::Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(parsed["error"]["code"], -32603);
        assert_eq!(parsed["error"]["message"], "Internal error: bad \"x\"");
        assert_eq!(parsed["id"], serde_json::Value::Null);
        out.clear();
        write_response(&mut out, None, |_| Ok(()));
        assert_eq!(out, br#"{"jsonrpc":"2.0","result":null,"id":null}"#);
    }

    #[test]
    fn ids_of_every_length_are_echoed_byte_for_byte() {
        let mut out = b"x".to_vec();
        write_id(&mut out, None);
        assert_eq!(out, br#"x,"id":null}"#);
        for len in 0..=40 {
            // Distinct bytes, so that a misplaced or dropped one shows.
            let text: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            for id in [format!("\"{text}\""), format!("1{}", "0".repeat(len))] {
                let raw: &RawValue = serde_json::from_str(&id).expect("id");
                for prefix in [0, 1, 7, 100] {
                    let mut out = vec![b'p'; prefix];
                    write_id(&mut out, Some(raw));
                    let expected = format!("{},\"id\":{id}}}", "p".repeat(prefix));
                    assert_eq!(String::from_utf8_lossy(&out), expected);
                }
                let mut out = Vec::new();
                assert!(
                    write_response(&mut out, Some(raw), |r| {
                        r.json_static("\"pong\"");
                        Ok(())
                    })
                    .is_none()
                );
                let expected = format!("{{\"jsonrpc\":\"2.0\",\"result\":\"pong\",\"id\":{id}}}");
                assert_eq!(String::from_utf8_lossy(&out), expected);
            }
        }
    }

    #[test]
    fn raw_results_and_failures_leave_no_partial_result() {
        let id: &RawValue = serde_json::from_str("7").expect("id");
        let mut out = b"before\n".to_vec();
        let sent = write_response(&mut out, Some(id), |r| {
            r.bytes(b"\x00\x01");
            Ok(())
        });
        assert_eq!(sent.map(|e| e.code), Some(-32003));
        let line = std::str::from_utf8(&out[7..]).expect("utf-8");
        assert!(
            line.starts_with(r#"{"jsonrpc":"2.0","error":{"code":-32003,"#),
            "{line}"
        );
        assert!(line.ends_with(r#","id":7}"#), "{line}");
        out.truncate(7);
        let sent = write_response(&mut out, Some(id), |r| {
            r.json_static("\"half\"");
            Err(RpcError::invalid_params("no"))
        });
        assert_eq!(sent.map(|e| e.code), Some(-32602));
        assert!(!out.windows(4).any(|w| w == b"half"));
        assert!(out.starts_with(b"before\n{\"jsonrpc\":\"2.0\",\"error\""));
    }

    #[test]
    fn json_from_other_peers_stays_on_one_line() {
        let mut out = b"x".to_vec();
        write_raw_json(&mut out, b"[\n{\"a\" :\r\n1}\t]");
        assert_eq!(out, b"x[ {\"a\" :  1}\t]");
        out.clear();
        write_raw_json(&mut out, b"{\"no\":\"breaks\\n\"}");
        assert_eq!(out, br#"{"no":"breaks\n"}"#, "escapes are not line breaks");

        // The injection of issue 14: a result that holds a whole reply line.
        let forged: &RawValue = serde_json::from_str(
            "[\n{\"jsonrpc\":\"2.0\",\"result\":\"FORGED\",\"id\":\"victim\"}\n]",
        )
        .expect("valid JSON");
        out.clear();
        write_response(&mut out, Some(RawValue::NULL), |r| {
            r.json_text(forged);
            Ok(())
        });
        assert_eq!(
            out,
            br#"{"jsonrpc":"2.0","result":[ {"jsonrpc":"2.0","result":"FORGED","id":"victim"} ],"id":null}"#
        );
        out.clear();
        write_request(&mut out, Some(3), "m", Some("{\"a\":\r\n[1,\n2]}"));
        assert_eq!(
            out,
            br#"{"jsonrpc":"2.0","id":3,"method":"m","params":{"a":  [1, 2]}}"#
        );
        // Inside a string a raw LF is not JSON: such text never gets this far.
        assert!(serde_json::from_str::<&RawValue>("\"a\nb\"").is_err());
    }

    #[test]
    fn itoa_writes_any_code() {
        for v in [0, 7, -32700, i32::MIN, i32::MAX] {
            assert_eq!(itoa(v, &mut [0; 12]), v.to_string().as_bytes());
        }
    }
}
