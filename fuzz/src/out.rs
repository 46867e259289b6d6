//! Checks of what the daemon writes back, by protocol, and a canonical form
//! of each reply so that a target can compare what came out with what the
//! spec says should.

use junction::proto::mcp1;
use serde_json::value::RawValue;

use crate::spec::{Members, is_json, string_of};

/// One reply, reduced to what a target compares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reply {
    /// A result for `id` (JSON-RPC: the raw id text; MCP1: the number), with
    /// the result bytes and (MCP1) the RAW flag.
    Result {
        /// The id.
        id: String,
        /// The result bytes (JSON text, or raw bytes over MCP1).
        result: Vec<u8>,
        /// RAW flag (always false for JSON-RPC).
        raw: bool,
    },
    /// An error for `id` with `code`.
    Error {
        /// The id.
        id: String,
        /// The code.
        code: i32,
    },
    /// An MCP1 PONG.
    Pong {
        /// The id.
        id: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A JSON-RPC batch reply; elements sorted (their order is not fixed).
    Batch(Vec<Reply>),
}

impl Reply {
    /// The same reply with batch elements in a fixed order.
    pub fn canonical(mut self) -> Self {
        if let Reply::Batch(items) = &mut self {
            items.sort();
        }
        self
    }
}

/// Checks one JSON-RPC response object (jsonrpc.md section 3: compact, in
/// member order `jsonrpc`, `result` or `error`, `id`) and reduces it.
pub fn jsonrpc_object(text: &str) -> Reply {
    assert!(
        text.starts_with(r#"{"jsonrpc":"2.0","result":"#)
            || text.starts_with(r#"{"jsonrpc":"2.0","error":{"code":"#),
        "response does not start as the spec says: {text:?}"
    );
    let members = Members::parse(text).unwrap_or_else(|| panic!("not an object: {text:?}"));
    let names: Vec<&str> = members.0.iter().map(|(n, _)| n.as_str()).collect();
    let id = members.get("id").expect("id member").get().to_string();
    assert!(
        matches!(
            id.as_bytes().first(),
            Some(b'"' | b'-' | b'0'..=b'9' | b'n')
        ),
        "id of a bad type: {text:?}"
    );
    assert!(
        text.ends_with(&format!(",\"id\":{id}}}")),
        "id is not the last member: {text:?}"
    );
    match names.as_slice() {
        ["jsonrpc", "result", "id"] => {
            let result = members.get("result").expect("result");
            Reply::Result {
                id,
                result: result.get().as_bytes().to_vec(),
                raw: false,
            }
        }
        ["jsonrpc", "error", "id"] => {
            let error = members.get("error").expect("error");
            let fields = Members::parse(error.get()).expect("error is an object");
            let names: Vec<&str> = fields.0.iter().map(|(n, _)| n.as_str()).collect();
            assert!(
                names == ["code", "message"] || names == ["code", "message", "data"],
                "error members: {names:?} in {text:?}"
            );
            let code: i32 = serde_json::from_str(fields.get("code").expect("code").get())
                .unwrap_or_else(|e| panic!("code not an i32 ({e}): {text:?}"));
            let message = string_of(fields.get("message").expect("message"))
                .unwrap_or_else(|| panic!("message not a string: {text:?}"));
            assert!(!message.contains('\n'), "message of more than one line");
            Reply::Error { id, code }
        }
        other => panic!("response members {other:?}: {text:?}"),
    }
}

/// Checks one line the daemon wrote on a JSON-RPC connection (without its
/// LF): UTF-8, valid JSON, one response object or a non-empty array of them.
pub fn jsonrpc_line(line: &[u8]) -> Reply {
    assert!(
        !line.contains(&b'\n') && !line.ends_with(b"\r"),
        "line framing: {line:?}"
    );
    let text =
        std::str::from_utf8(line).unwrap_or_else(|e| panic!("reply not UTF-8 ({e}): {line:?}"));
    assert!(is_json(line), "reply is not JSON: {text:?}");
    if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).expect("array of values");
        assert!(!items.is_empty(), "empty batch reply");
        let items = items
            .iter()
            .map(|item| jsonrpc_object(item.get()))
            .collect();
        Reply::Batch(items).canonical()
    } else {
        jsonrpc_object(text)
    }
}

/// Splits a JSON-RPC output stream into its replies; every reply ends in one
/// LF, never CR LF.
pub fn jsonrpc_stream(out: &[u8]) -> Vec<Reply> {
    if out.is_empty() {
        return Vec::new();
    }
    assert!(out.ends_with(b"\n"), "output ends inside a line: {out:?}");
    out[..out.len() - 1]
        .split(|&b| b == b'\n')
        .map(jsonrpc_line)
        .collect()
}

/// Checks an MCP1 output stream (mcp1.md sections 1 to 5, frames the daemon
/// sends: RESPONSE, ERROR and PONG) and reduces each frame.
pub fn mcp1_stream(mut out: &[u8]) -> Vec<Reply> {
    let mut replies = Vec::new();
    while !out.is_empty() {
        assert!(
            out.len() >= mcp1::HEADER_LEN,
            "output ends inside a header: {out:?}"
        );
        assert_eq!(&out[..4], b"MCP1", "output frame without magic");
        assert_eq!(out[4], 1, "output frame version");
        let kind = out[5];
        let flags = u16::from_le_bytes([out[6], out[7]]);
        let id = u32::from_le_bytes([out[8], out[9], out[10], out[11]]);
        let length = u32::from_le_bytes([out[12], out[13], out[14], out[15]]) as usize;
        assert!(
            out.len() >= 16 + length,
            "output frame shorter than its length"
        );
        let payload = &out[16..16 + length];
        let reply = match kind {
            2 => {
                assert!(flags & !1 == 0, "RESPONSE with reserved flags {flags:#x}");
                let raw = flags & 1 != 0;
                if !raw {
                    assert!(is_json(payload), "RESPONSE body not JSON: {payload:?}");
                }
                Reply::Result {
                    id: id.to_string(),
                    result: payload.to_vec(),
                    raw,
                }
            }
            4 => {
                assert_eq!(flags, 0, "ERROR with flags");
                assert!(payload.len() >= 6, "ERROR payload too short");
                let code = i32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let len = usize::from(u16::from_le_bytes([payload[4], payload[5]]));
                assert!(
                    payload.len() >= 6 + len,
                    "ERROR message runs past the payload"
                );
                let message = std::str::from_utf8(&payload[6..6 + len]).expect("message UTF-8");
                let data = &payload[6 + len..];
                assert!(data.is_empty() || is_json(data), "ERROR data not JSON");
                let parsed = mcp1::parse_error_payload(payload).expect("client parses ERROR");
                assert_eq!((parsed.code, parsed.message), (code, message));
                Reply::Error {
                    id: id.to_string(),
                    code,
                }
            }
            7 => {
                assert_eq!(flags, 0, "PONG with flags");
                Reply::Pong {
                    id: id.to_string(),
                    payload: payload.to_vec(),
                }
            }
            other => panic!("the daemon sent a frame of kind {other}"),
        };
        replies.push(reply);
        out = &out[16 + length..];
    }
    replies
}
