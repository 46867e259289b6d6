//! The malformed-input suite: one table of hostile or borderline inputs for
//! both protocols, each sent on a fresh connection over Unix and over TCP,
//! with the exact outcome proto/jsonrpc.md and proto/mcp1.md give for it:
//! which reply (code, id, message), and whether the connection stays open.
//!
//! After every case:
//! - where the spec keeps the connection open, a probe request on the same
//!   connection must get its exact answer next (which also proves that nothing
//!   else was sent before it);
//! - where the spec closes it, the daemon must end the connection with nothing
//!   more after the expected reply;
//! - a healthy JSON-RPC client and a healthy MCP1 client on the same daemon
//!   must still get correct answers on both transports.
//!
//! The daemon runs with `max-frame` 16384 and `max-batch` 16, so that the
//! limit cases stay cheap; every other setting is the default.

mod common;

use std::io::{BufRead, ErrorKind};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use common::{
    Raw, TestServer, assert_healthy, assert_healthy_mcp1, mcp1_call, mcp1_frame, mcp1_request,
    start_with,
};
use junction::client::Endpoint;
use serde_json::value::RawValue;

/// The limits the suite's daemon runs with.
const MAX_FRAME: usize = 16 * 1024;
const MAX_BATCH: usize = 16;

/// How long any single read may wait: a hang fails the case instead of stalling it.
const CASE_PATIENCE: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is watched for, where the daemon must wait for more.
const QUIET: Duration = Duration::from_millis(50);

/// Nesting depth for the deep cases: far past serde_json's recursion limit of 128.
const DEEP: usize = 5000;

// MCP1 frame kinds.
const REQUEST: u8 = 0x01;
const RESPONSE: u8 = 0x02;
const NOTIFICATION: u8 = 0x03;
const ERROR: u8 = 0x04;
const PING: u8 = 0x06;
const PONG: u8 = 0x07;
const RAW: u16 = 0x0001;

/// A valid call and its answer, used to get a connection sniffed as JSON-RPC.
const JSON_PING: &str = r#"{"jsonrpc":"2.0","method":"rpc.ping","id":1}"#;
const JSON_PONG: &str = r#"{"jsonrpc":"2.0","result":"pong","id":1}"#;

// The messages proto/jsonrpc.md gives word for word.
const MISSING_JSONRPC: &str = r#"Invalid Request: missing "jsonrpc": "2.0""#;
const NOT_2_0: &str = r#"Invalid Request: "jsonrpc" must be exactly "2.0""#;
const MISSING_METHOD: &str = r#"Invalid Request: missing "method""#;
const METHOD_NOT_STRING: &str = r#"Invalid Request: "method" must be a string"#;
const BAD_PARAMS: &str = r#"Invalid Request: "params" must be an array or an object"#;
const BAD_ID: &str = r#"Invalid Request: "id" must be a string, a number or null"#;
const TOO_LARGE: &str = "Frame too large: a line exceeds the limit of 16384 bytes; closing";

/// The one line of text sent to a client of neither protocol (jsonrpc.md section 8).
const UNKNOWN_PROTOCOL: &str = "junctiond: unrecognised protocol. This socket speaks JSON-RPC 2.0 \
(one JSON object per line, e.g. {\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}) and MCP1 \
(binary frames starting with the magic \"MCP1\"); see proto/ in the Junction sources.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    JsonRpc,
    Mcp1,
}

/// What the client does, in order.
enum Step {
    /// One write.
    Send(Vec<u8>),
    /// One write per byte.
    Bytewise(Vec<u8>),
    /// This reply must arrive now, before the next step.
    Expect(Reply),
    /// Nothing may arrive for a moment: the daemon has to wait for more bytes.
    Quiet,
    /// The client shuts down its write side (end of input).
    Shutdown,
}

/// A message's expected text.
enum Text {
    /// Word for word.
    Is(String),
    /// The start of it (for serde_json's own parser messages).
    StartsWith(&'static str),
    /// A part of it (MCP1 messages, which the spec does not fix).
    Contains(&'static str),
}

impl Text {
    fn check(&self, message: &str) -> bool {
        match self {
            Text::Is(text) => message == text,
            Text::StartsWith(text) => message.starts_with(text),
            Text::Contains(text) => message.contains(text),
        }
    }
}

/// One reply the daemon must send, in order.
enum Reply {
    /// A line, byte for byte (without its LF).
    Line(String),
    /// A JSON-RPC error line: code, id (its raw JSON text) and message.
    JsonError {
        code: i32,
        id: String,
        message: Text,
    },
    /// A JSON-RPC batch reply: its elements byte for byte, in any order.
    Batch(Vec<String>),
    /// An MCP1 frame, byte for byte.
    Frame {
        kind: u8,
        flags: u16,
        id: u32,
        payload: Vec<u8>,
    },
    /// An MCP1 ERROR frame: id, code and message.
    Mcp1Error { id: u32, code: i32, message: Text },
}

/// What becomes of the connection once the replies are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// It stays open: a probe on it gets its exact answer next.
    Open,
    /// The daemon ends it, with nothing more after the replies.
    Closed,
}

struct Case {
    name: &'static str,
    proto: Proto,
    steps: Vec<Step>,
    replies: Vec<Reply>,
    then: Then,
}

impl Case {
    fn new(proto: Proto, name: &'static str, steps: Vec<Step>) -> Case {
        Case {
            name,
            proto,
            steps,
            replies: Vec::new(),
            then: Then::Open,
        }
    }

    /// A JSON-RPC case: these bytes in one write, on a fresh connection.
    fn json(name: &'static str, bytes: impl AsRef<[u8]>) -> Case {
        Case::new(
            Proto::JsonRpc,
            name,
            vec![Step::Send(bytes.as_ref().to_vec())],
        )
    }

    /// A JSON-RPC case on a connection a valid call has already made JSON-RPC
    /// (for lines whose first byte would not be sniffed as JSON-RPC).
    fn json_after_ping(name: &'static str, bytes: impl AsRef<[u8]>) -> Case {
        let mut all = format!("{JSON_PING}\n").into_bytes();
        all.extend_from_slice(bytes.as_ref());
        Case::json(name, all).reply(line(JSON_PONG))
    }

    /// An MCP1 case: these bytes in one write, on a fresh connection.
    fn mcp1(name: &'static str, bytes: impl AsRef<[u8]>) -> Case {
        Case::new(Proto::Mcp1, name, vec![Step::Send(bytes.as_ref().to_vec())])
    }

    /// An MCP1 case whose bytes follow a valid call (so they are a later frame).
    fn mcp1_after_ping(name: &'static str, bytes: impl AsRef<[u8]>) -> Case {
        let mut all = mcp1_request(1, "rpc.ping", b"", false);
        all.extend_from_slice(bytes.as_ref());
        Case::mcp1(name, all).reply(response(1, 0, b"\"pong\""))
    }

    fn reply(mut self, reply: Reply) -> Case {
        self.replies.push(reply);
        self
    }

    fn closes(mut self) -> Case {
        self.then = Then::Closed;
        self
    }
}

fn line(text: impl Into<String>) -> Reply {
    Reply::Line(text.into())
}

/// A JSON-RPC error with the message word for word.
fn json_error(code: i32, id: &str, message: impl Into<String>) -> Reply {
    Reply::JsonError {
        code,
        id: id.to_string(),
        message: Text::Is(message.into()),
    }
}

/// A JSON-RPC -32700 whose detail is serde_json's text, which starts like this.
fn parse_error(starts_with: &'static str) -> Reply {
    Reply::JsonError {
        code: -32700,
        id: "null".to_string(),
        message: Text::StartsWith(starts_with),
    }
}

fn not_an_object(kind: &str) -> Reply {
    json_error(
        -32600,
        "null",
        format!("Invalid Request: expected a request object, got {kind}"),
    )
}

/// The batch element for an entry refused with -32600.
fn batch_invalid(message: &str) -> String {
    let message = serde_json::to_string(message).expect("a string serializes");
    format!(r#"{{"jsonrpc":"2.0","error":{{"code":-32600,"message":{message}}},"id":null}}"#)
}

fn response(id: u32, flags: u16, payload: &[u8]) -> Reply {
    Reply::Frame {
        kind: RESPONSE,
        flags,
        id,
        payload: payload.to_vec(),
    }
}

fn mcp1_error(id: u32, code: i32, contains: &'static str) -> Reply {
    Reply::Mcp1Error {
        id,
        code,
        message: Text::Contains(contains),
    }
}

/// A bare MCP1 header: version, kind, flags, id and a length of our choosing.
fn header(version: u8, kind: u8, flags: u16, id: u32, length: u32) -> Vec<u8> {
    let mut out = mcp1_frame(version, kind, flags, id, b"");
    out[12..16].copy_from_slice(&length.to_le_bytes());
    out
}

/// A JSON-RPC call of `method` with `params` (raw JSON) and id 1.
fn call(method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params},"id":1}}"#)
}

fn deep_arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

fn deep_objects(depth: usize) -> String {
    r#"{"a":"#.repeat(depth) + "1" + &"}".repeat(depth)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn jsonrpc_cases() -> Vec<Case> {
    let at_limit = {
        let prefix = r#"{"jsonrpc":"2.0","method":"rpc.echo","params":[""#;
        let suffix = r#""],"id":1}"#;
        let fill = "x".repeat(MAX_FRAME - prefix.len() - suffix.len());
        (format!("{prefix}{fill}{suffix}"), fill)
    };
    let over_limit = {
        let (line, _) = &at_limit;
        line.replacen("\"x", "\"xx", 1)
    };
    let long_id = format!("\"{}\"", "i".repeat(8000));
    let long_number = "9".repeat(5000);
    let batch_of_pings = |n: usize| {
        let calls: Vec<String> = (1..=n)
            .map(|i| format!(r#"{{"jsonrpc":"2.0","method":"rpc.ping","id":{i}}}"#))
            .collect();
        format!("[{}]\n", calls.join(","))
    };
    vec![
        // Invalid UTF-8: -32700 at the first bad byte, id null, whatever member holds it.
        Case::json(
            "invalid UTF-8 in the method name",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc\xc0\xaf\",\"id\":1}\n",
        )
        .reply(json_error(-32700, "null", "Parse error: invalid UTF-8 at byte 30")),
        Case::json(
            "invalid UTF-8 in params",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"\xff\"],\"id\":1}\n",
        )
        .reply(json_error(-32700, "null", "Parse error: invalid UTF-8 at byte 48")),
        Case::json(
            "invalid UTF-8 in a string id",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":\"\xfe\"}\n",
        )
        .reply(json_error(-32700, "null", "Parse error: invalid UTF-8 at byte 43")),
        Case::json(
            "a UTF-8-encoded surrogate in an ignored member",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1,\"x\":\"\xed\xa0\x80\"}\n",
        )
        .reply(json_error(-32700, "null", "Parse error: invalid UTF-8 at byte 49")),
        Case::json(
            "a UTF-8 sequence cut short after a valid request",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\xe2\x82\n",
        )
        .reply(json_error(-32700, "null", "Parse error: invalid UTF-8 at byte 44")),
        Case::json(
            "invalid UTF-8 in a batch entry",
            b"[{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1},\"\xff\"]\n",
        )
        .reply(json_error(-32700, "null", "Parse error: invalid UTF-8 at byte 47")),
        // Syntax: -32700 with serde_json's text, id null.
        Case::json("an object cut short", "{\"jsonrpc\":\"2.0\",\"method\":\n").reply(
            json_error(
                -32700,
                "null",
                "Parse error: EOF while parsing a value at line 1 column 26",
            ),
        ),
        Case::json("trailing characters", format!("{JSON_PING} x\n")).reply(json_error(
            -32700,
            "null",
            "Parse error: trailing characters at line 1 column 46",
        )),
        Case::json("two requests on one line", format!("{JSON_PING}{JSON_PING}\n")).reply(
            json_error(
                -32700,
                "null",
                "Parse error: trailing characters at line 1 column 45",
            ),
        ),
        Case::json(
            "two requests split by a lone CR",
            format!("{JSON_PING}\r{JSON_PING}\n"),
        )
        .reply(json_error(
            -32700,
            "null",
            "Parse error: trailing characters at line 1 column 46",
        )),
        Case::json(
            "a NUL byte between members",
            b"{\"jsonrpc\":\"2.0\",\x00\"method\":\"rpc.ping\",\"id\":1}\n",
        )
        .reply(parse_error("Parse error: ")),
        Case::json(
            "a raw NUL byte inside a string",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\x00\",\"id\":1}\n",
        )
        .reply(parse_error("Parse error: control character")),
        Case::json_after_ping("a line of one NUL byte", b"\x00\n").reply(json_error(
            -32700,
            "null",
            "Parse error: expected value at line 1 column 1",
        )),
        Case::json("a form feed before the object", format!("\x0c{JSON_PING}\n")).reply(
            json_error(
                -32700,
                "null",
                "Parse error: expected value at line 1 column 1",
            ),
        ),
        Case::json_after_ping(
            "a UTF-8 byte-order mark before the object",
            format!("\u{feff}{JSON_PING}\n"),
        )
        .reply(json_error(
            -32700,
            "null",
            "Parse error: expected value at line 1 column 1",
        )),
        Case::json(
            "a byte-order mark as the first bytes is an unknown protocol",
            format!("\u{feff}{JSON_PING}\n"),
        )
        .reply(line(UNKNOWN_PROTOCOL))
        .closes(),
        Case::json_after_ping(
            "malformed lines pipelined in one write are answered in order",
            "17\n{\n[]\n{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":\"after\"}\n",
        )
        .reply(not_an_object("a number"))
        .reply(parse_error("Parse error: EOF while parsing an object"))
        .reply(json_error(-32600, "null", "Invalid Request: empty batch"))
        .reply(line(r#"{"jsonrpc":"2.0","result":"pong","id":"after"}"#)),
        Case::json_after_ping("a line that is not JSON", "hello\n").reply(json_error(
            -32700,
            "null",
            "Parse error: expected value at line 1 column 1",
        )),
        Case::json("arrays opened and never closed", "[".repeat(DEEP) + "\n")
            .reply(parse_error("Parse error: ")),
        // Values that are not objects: -32600, id null.
        Case::json_after_ping("a number", "17\n").reply(not_an_object("a number")),
        Case::json_after_ping("a string", "\"rpc.ping\"\n").reply(not_an_object("a string")),
        Case::json_after_ping("a boolean", "true\n").reply(not_an_object("a boolean")),
        Case::json_after_ping("null", "null\n").reply(not_an_object("null")),
        Case::json("an empty object", "{}\n").reply(json_error(-32600, "null", MISSING_JSONRPC)),
        // Duplicate members: -32600, id null, column of the second key.
        Case::json(
            "a duplicate id",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":6,\"id\":7}\n",
        )
        .reply(json_error(
            -32600,
            "null",
            "Invalid Request: duplicate field `id` at line 1 column 48",
        )),
        Case::json(
            "a duplicate method",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"method\":\"rpc.echo\",\"id\":1}\n",
        )
        .reply(json_error(
            -32600,
            "null",
            "Invalid Request: duplicate field `method` at line 1 column 45",
        )),
        // "jsonrpc" of every wrong kind: -32600 with the request's id.
        Case::json("jsonrpc missing", "{\"method\":\"rpc.ping\",\"id\":1}\n")
            .reply(json_error(-32600, "1", MISSING_JSONRPC)),
        Case::json(
            "jsonrpc \"1.0\"",
            "{\"jsonrpc\":\"1.0\",\"method\":\"rpc.ping\",\"id\":2}\n",
        )
        .reply(json_error(-32600, "2", NOT_2_0)),
        Case::json(
            "jsonrpc as a number",
            "{\"jsonrpc\":2.0,\"method\":\"rpc.ping\",\"id\":3}\n",
        )
        .reply(json_error(-32600, "3", NOT_2_0)),
        Case::json(
            "jsonrpc null",
            "{\"jsonrpc\":null,\"method\":\"rpc.ping\",\"id\":\"j\"}\n",
        )
        .reply(json_error(-32600, "\"j\"", NOT_2_0)),
        Case::json(
            "jsonrpc \"2.0\" written with an escape is accepted",
            "{\"jsonrpc\":\"2\\u002e0\",\"method\":\"rpc.ping\",\"id\":1}\n",
        )
        .reply(line(JSON_PONG)),
        // "method" of every wrong kind.
        Case::json("method missing", "{\"jsonrpc\":\"2.0\",\"id\":3}\n")
            .reply(json_error(-32600, "3", MISSING_METHOD)),
        Case::json(
            "method as a number",
            "{\"jsonrpc\":\"2.0\",\"method\":5,\"id\":4}\n",
        )
        .reply(json_error(-32600, "4", METHOD_NOT_STRING)),
        Case::json(
            "method null",
            "{\"jsonrpc\":\"2.0\",\"method\":null,\"id\":4}\n",
        )
        .reply(json_error(-32600, "4", METHOD_NOT_STRING)),
        Case::json(
            "method as an array",
            "{\"jsonrpc\":\"2.0\",\"method\":[\"rpc.ping\"],\"id\":4}\n",
        )
        .reply(json_error(-32600, "4", METHOD_NOT_STRING)),
        Case::json(
            "method as an empty string",
            "{\"jsonrpc\":\"2.0\",\"method\":\"\",\"id\":4}\n",
        )
        .reply(json_error(
            -32601,
            "4",
            "Method not found: no method named \"\"",
        )),
        Case::json(
            "method with an escaped NUL",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\\u0000\",\"id\":4}\n",
        )
        .reply(json_error(
            -32601,
            "4",
            "Method not found: no method named \"rpc.ping\\0\"",
        )),
        Case::json(
            "method with a quote and non-ASCII letters",
            concat!(r#"{"jsonrpc":"2.0","method":"n\u00f6\"pe","id":4}"#, "\n"),
        )
        .reply(json_error(
            -32601,
            "4",
            "Method not found: no method named \"nö\\\"pe\"",
        )),
        Case::json(
            "method in the wrong case",
            "{\"jsonrpc\":\"2.0\",\"method\":\"RPC.PING\",\"id\":4}\n",
        )
        .reply(json_error(
            -32601,
            "4",
            "Method not found: no method named \"RPC.PING\"",
        )),
        Case::json(
            "method written with an escape is accepted",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc\\u002eping\",\"id\":1}\n",
        )
        .reply(line(JSON_PONG)),
        // "params" of every wrong kind.
        Case::json(
            "params as a string",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":\"x\",\"id\":5}\n",
        )
        .reply(json_error(-32600, "5", BAD_PARAMS)),
        Case::json(
            "params as a number",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":7,\"id\":5}\n",
        )
        .reply(json_error(-32600, "5", BAD_PARAMS)),
        Case::json(
            "params null",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":null,\"id\":5}\n",
        )
        .reply(json_error(-32600, "5", BAD_PARAMS)),
        Case::json(
            "params as a boolean",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":false,\"id\":5}\n",
        )
        .reply(json_error(-32600, "5", BAD_PARAMS)),
        // "id" of every wrong kind: -32600 with id null; odd numbers are echoed.
        Case::json(
            "id as an object",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":{\"a\":1}}\n",
        )
        .reply(json_error(-32600, "null", BAD_ID)),
        Case::json(
            "id as an array",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":[1]}\n",
        )
        .reply(json_error(-32600, "null", BAD_ID)),
        Case::json(
            "id as a boolean",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":true}\n",
        )
        .reply(json_error(-32600, "null", BAD_ID)),
        Case::json(
            "id nested deep",
            format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":{}}}\n",
                deep_arrays(DEEP)
            ),
        )
        .reply(json_error(-32600, "null", BAD_ID)),
        Case::json(
            "id as a float is echoed byte for byte",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":-0.50}\n",
        )
        .reply(line(r#"{"jsonrpc":"2.0","result":"pong","id":-0.50}"#)),
        Case::json(
            "id 1e999999 is echoed byte for byte",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1e999999}\n",
        )
        .reply(line(r#"{"jsonrpc":"2.0","result":"pong","id":1e999999}"#)),
        Case::json(
            "a 5000-digit id is echoed byte for byte",
            format!("{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":{long_number}}}\n"),
        )
        .reply(line(format!(
            r#"{{"jsonrpc":"2.0","result":"pong","id":{long_number}}}"#
        ))),
        Case::json(
            "an 8000-character string id is echoed byte for byte",
            format!("{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":{long_id}}}\n"),
        )
        .reply(line(format!(
            r#"{{"jsonrpc":"2.0","result":"pong","id":{long_id}}}"#
        ))),
        // Notifications and responses sent to the daemon.
        Case::json(
            "an invalid notification is answered with id null",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":7}\n",
        )
        .reply(json_error(-32600, "null", BAD_PARAMS)),
        Case::json(
            "a notification of a missing method gets nothing",
            "{\"jsonrpc\":\"2.0\",\"method\":\"no.such.method\"}\n",
        ),
        Case::json(
            "a response object with a result gets nothing",
            "{\"jsonrpc\":\"2.0\",\"result\":\"x\",\"id\":5}\n",
        ),
        Case::json(
            "a response object with an error gets nothing",
            "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"m\"},\"id\":6}\n",
        ),
        Case::json(
            "a response object without jsonrpc is an invalid request",
            "{\"result\":1,\"id\":5}\n",
        )
        .reply(json_error(-32600, "5", MISSING_JSONRPC)),
        // Deep nesting where the spec allows it.
        Case::json(
            "a deep object in an ignored member",
            format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1,\"x\":{}}}\n",
                deep_objects(DEEP / 2)
            ),
        )
        .reply(line(JSON_PONG)),
        Case::json(
            "deep params are echoed unchanged",
            call("rpc.echo", &deep_arrays(DEEP)) + "\n",
        )
        .reply(line(format!(
            r#"{{"jsonrpc":"2.0","result":{},"id":1}}"#,
            deep_arrays(DEEP)
        ))),
        // Batches.
        Case::json("an empty batch", "[]\n").reply(json_error(
            -32600,
            "null",
            "Invalid Request: empty batch",
        )),
        Case::json("an empty batch with whitespace inside", "[ \t ]\n").reply(json_error(
            -32600,
            "null",
            "Invalid Request: empty batch",
        )),
        Case::json("a batch of junk", "[1,\"x\",null,true,{}]\n").reply(Reply::Batch(vec![
            batch_invalid("Invalid Request: expected a request object, got a number"),
            batch_invalid("Invalid Request: expected a request object, got a string"),
            batch_invalid("Invalid Request: expected a request object, got null"),
            batch_invalid("Invalid Request: expected a request object, got a boolean"),
            batch_invalid(MISSING_JSONRPC),
        ])),
        Case::json("a nested batch", format!("[[{JSON_PING}]]\n")).reply(Reply::Batch(vec![
            batch_invalid("Invalid Request: expected a request object, got an array"),
        ])),
        Case::json("a batch of deeply nested arrays", deep_arrays(DEEP) + "\n").reply(
            Reply::Batch(vec![batch_invalid(
                "Invalid Request: expected a request object, got an array",
            )]),
        ),
        Case::json("a batch over the limit runs none of its calls", batch_of_pings(17)).reply(
            json_error(
                -32600,
                "null",
                "Invalid Request: batch of 17 entries exceeds the limit of 16",
            ),
        ),
        Case::json("a batch at the limit is answered whole", batch_of_pings(16)).reply(
            Reply::Batch(
                (1..=MAX_BATCH)
                    .map(|i| format!(r#"{{"jsonrpc":"2.0","result":"pong","id":{i}}}"#))
                    .collect(),
            ),
        ),
        Case::json("a batch cut short", "[{\"jsonrpc\":\"2.0\",\n").reply(json_error(
            -32700,
            "null",
            "Parse error: EOF while parsing an object at line 1 column 18",
        )),
        Case::json(
            "a batch with trailing characters",
            format!("[{JSON_PING}] x\n"),
        )
        .reply(parse_error("Parse error: trailing characters")),
        Case::json(
            "a batch of notifications only gets nothing",
            "[{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\"},{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}]\n",
        ),
        Case::json(
            "a batch entry with a duplicate id (column within the entry)",
            "[{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":6,\"id\":7}]\n",
        )
        .reply(Reply::Batch(vec![batch_invalid(
            "Invalid Request: duplicate field `id` at line 1 column 48",
        )])),
        Case::json(
            "a batch of calls, notifications and junk",
            "[{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1},{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\"},{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":2},42,{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":{\"k\":\"v\"},\"id\":\"x\"}]\n",
        )
        .reply(Reply::Batch(vec![
            JSON_PONG.to_string(),
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found: no method named \"nope\""},"id":2}"#.to_string(),
            batch_invalid("Invalid Request: expected a request object, got a number"),
            r#"{"jsonrpc":"2.0","result":{"k":"v"},"id":"x"}"#.to_string(),
        ])),
        // Framing: blank lines, line ends, splits, end of input.
        Case::json("blank and whitespace-only lines", "\n \t\r\n   \n\r\n"),
        Case::json(
            "a line of only a form feed is blank (whitespace as in the sniff rule)",
            "\x0c\n",
        ),
        Case::json(
            "a request ended by CR LF",
            "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":\"abc\"}\r\n",
        )
        .reply(line(r#"{"jsonrpc":"2.0","result":"pong","id":"abc"}"#)),
        Case::json(
            "a request ended by CR CR LF",
            format!("{JSON_PING}\r\r\n"),
        )
        .reply(line(JSON_PONG)),
        Case::new(
            Proto::JsonRpc,
            "a request split into 1-byte writes",
            vec![Step::Bytewise(
                b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"slow\"],\"id\":1}\n"
                    .to_vec(),
            )],
        )
        .reply(line(r#"{"jsonrpc":"2.0","result":["slow"],"id":1}"#)),
        Case::new(
            Proto::JsonRpc,
            "a batch split into 1-byte writes",
            vec![Step::Bytewise(format!("[{JSON_PING},1]\n").into_bytes())],
        )
        .reply(Reply::Batch(vec![
            JSON_PONG.to_string(),
            batch_invalid("Invalid Request: expected a request object, got a number"),
        ])),
        Case::json(
            "60 spaces before the first request",
            format!("{}{JSON_PING}\n", " ".repeat(60)),
        )
        .reply(line(JSON_PONG)),
        Case::new(
            Proto::JsonRpc,
            "61 LF bytes before the first request",
            vec![
                Step::Send(vec![b'\n'; 61]),
                Step::Send(format!("{JSON_PING}\n").into_bytes()),
            ],
        )
        .reply(line(UNKNOWN_PROTOCOL))
        .closes(),
        Case::new(
            Proto::JsonRpc,
            "a last line without LF at end of input",
            vec![
                Step::Send(
                    format!("{JSON_PING}\n{}", call("rpc.echo", "[\"last\"]")).into_bytes(),
                ),
                Step::Shutdown,
            ],
        )
        .reply(line(JSON_PONG))
        .reply(line(r#"{"jsonrpc":"2.0","result":["last"],"id":1}"#))
        .closes(),
        Case::new(
            Proto::JsonRpc,
            "an object cut short at end of input",
            vec![
                Step::Send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\"".to_vec()),
                Step::Shutdown,
            ],
        )
        .reply(json_error(
            -32700,
            "null",
            "Parse error: EOF while parsing an object at line 1 column 36",
        ))
        .closes(),
        Case::new(
            Proto::JsonRpc,
            "whitespace only, then end of input",
            vec![Step::Send(b" \n\t\r\n".to_vec()), Step::Shutdown],
        )
        .closes(),
        // The size limit.
        Case::json("a line of exactly max-frame bytes", format!("{}\n", at_limit.0)).reply(line(
            format!(r#"{{"jsonrpc":"2.0","result":["{}"],"id":1}}"#, at_limit.1),
        )),
        Case::new(
            Proto::JsonRpc,
            "a max-frame line whose CR LF is split across writes",
            vec![
                Step::Send(format!("{}\r", at_limit.0).into_bytes()),
                Step::Quiet,
                Step::Send(b"\n".to_vec()),
            ],
        )
        .reply(line(format!(
            r#"{{"jsonrpc":"2.0","result":["{}"],"id":1}}"#,
            at_limit.1
        ))),
        Case::json(
            "a line one byte over max-frame",
            format!("{over_limit}\n{JSON_PING}\n"),
        )
        .reply(json_error(-32001, "null", TOO_LARGE))
        .closes(),
        Case::json(
            "an oversized line with no LF yet",
            format!("{over_limit}x"),
        )
        .reply(json_error(-32001, "null", TOO_LARGE))
        .closes(),
        Case::json_after_ping(
            "an oversized line after a good one",
            format!("{}\n", "y".repeat(3 * MAX_FRAME)),
        )
        .reply(json_error(-32001, "null", TOO_LARGE))
        .closes(),
    ]
}

fn mcp1_cases() -> Vec<Case> {
    let ping = mcp1_request(1, "rpc.ping", b"", false);
    let max_body = vec![b'z'; MAX_FRAME - 2 - "rpc.echo".len()];
    let over = (MAX_FRAME + 1) as u32;
    let long_method = "m".repeat(255);
    vec![
        // Header errors that close: -32010 (id 0), -32011 and -32001 (the header's id).
        Case::mcp1_after_ping(
            "bad magic on a later frame",
            cat(&[b"MCP2", &header(1, REQUEST, 0, 7, 0)[4..]]),
        )
        .reply(mcp1_error(0, -32010, "closing"))
        .closes(),
        Case::mcp1_after_ping("lower-case magic", cat(&[b"mcp1", &ping[4..]]))
            .reply(mcp1_error(0, -32010, "closing"))
            .closes(),
        Case::mcp1_after_ping(
            "a JSON-RPC line where a frame should be",
            format!("{JSON_PING}\n"),
        )
        .reply(mcp1_error(0, -32010, "closing"))
        .closes(),
        Case::new(
            Proto::Mcp1,
            "bad magic is refused after 4 bytes, without waiting for a header",
            vec![
                Step::Send(ping.clone()),
                Step::Expect(response(1, 0, b"\"pong\"")),
                Step::Send(b"ZZZZ".to_vec()),
            ],
        )
        .reply(mcp1_error(0, -32010, "closing"))
        .closes(),
        Case::mcp1(
            "bad magic on the first frame is an unknown protocol",
            cat(&[b"MCP2", &ping[4..]]),
        )
        .reply(line(UNKNOWN_PROTOCOL))
        .closes(),
        Case::mcp1(
            "a space before the magic is an unknown protocol",
            cat(&[b" ", &ping]),
        )
        .reply(line(UNKNOWN_PROTOCOL))
        .closes(),
        Case::mcp1(
            "version 0",
            mcp1_frame(0, REQUEST, 0, 8, &mcp1_call("rpc.ping", b"")),
        )
        .reply(mcp1_error(8, -32011, "closing"))
        .closes(),
        Case::mcp1(
            "version 2",
            mcp1_frame(2, REQUEST, 0, 7, &mcp1_call("rpc.ping", b"")),
        )
        .reply(mcp1_error(7, -32011, "closing"))
        .closes(),
        Case::mcp1("version 255", mcp1_frame(0xff, PING, 0, 9, b"x"))
            .reply(mcp1_error(9, -32011, "closing"))
            .closes(),
        Case::mcp1(
            "length one over max-frame, no payload sent",
            header(1, REQUEST, 0, 11, over),
        )
        .reply(mcp1_error(11, -32001, "closing"))
        .closes(),
        Case::mcp1("length u32::MAX", header(1, REQUEST, 0, 12, u32::MAX))
            .reply(mcp1_error(12, -32001, "closing"))
            .closes(),
        Case::mcp1(
            "length u32::MAX - 15 (header plus payload wraps a u32)",
            header(1, REQUEST, 0, 13, u32::MAX - 15),
        )
        .reply(mcp1_error(13, -32001, "closing"))
        .closes(),
        Case::mcp1("length 2^31", header(1, PING, 0, 14, 0x8000_0000))
            .reply(mcp1_error(14, -32001, "closing"))
            .closes(),
        Case::mcp1(
            "bad version and bad length: the version wins",
            header(2, REQUEST, 0, 15, u32::MAX),
        )
        .reply(mcp1_error(15, -32011, "closing"))
        .closes(),
        Case::mcp1(
            "unknown kind and bad length: the length wins",
            header(1, 0x09, 0, 16, u32::MAX),
        )
        .reply(mcp1_error(16, -32001, "closing"))
        .closes(),
        Case::mcp1(
            "bad version and unknown kind: the version wins",
            mcp1_frame(3, 0x09, 0, 17, b""),
        )
        .reply(mcp1_error(17, -32011, "closing"))
        .closes(),
        // Header errors that skip the frame and keep the connection.
        Case::mcp1("kind 0x00", mcp1_frame(1, 0x00, 0, 20, b"abc"))
            .reply(mcp1_error(20, -32013, "0x00")),
        Case::mcp1(
            "kind 0x05 (CANCEL, reserved)",
            mcp1_frame(1, 0x05, 0, 21, b""),
        )
        .reply(mcp1_error(21, -32013, "0x05")),
        Case::mcp1("kind 0x08", mcp1_frame(1, 0x08, 0, 22, b"x"))
            .reply(mcp1_error(22, -32013, "0x08")),
        Case::mcp1(
            "kind 0xff whose payload is a whole request frame",
            mcp1_frame(1, 0xff, 0, 23, &mcp1_request(99, "rpc.ping", b"", false)),
        )
        .reply(mcp1_error(23, -32013, "0xff")),
        Case::mcp1(
            "unknown kind then a request in the same write",
            cat(&[
                &mcp1_frame(1, 0x09, 0, 24, b"skip me"),
                &mcp1_request(25, "rpc.echo", b"[25]", false),
            ]),
        )
        .reply(mcp1_error(24, -32013, "0x09"))
        .reply(response(25, 0, b"[25]")),
        Case::mcp1(
            "unknown kind and reserved flags: the kind wins",
            mcp1_frame(1, 0x09, 0x0100, 26, b""),
        )
        .reply(mcp1_error(26, -32013, "0x09")),
        Case::mcp1(
            "REQUEST with flag bit 1",
            mcp1_frame(1, REQUEST, 0x0002, 27, &mcp1_call("rpc.ping", b"")),
        )
        .reply(mcp1_error(27, -32012, "0x0002")),
        Case::mcp1(
            "REQUEST with flag bit 15",
            mcp1_frame(1, REQUEST, 0x8000, 28, &mcp1_call("rpc.ping", b"")),
        )
        .reply(mcp1_error(28, -32012, "0x8000")),
        Case::mcp1(
            "REQUEST with every flag bit, payload a whole request frame",
            mcp1_frame(
                1,
                REQUEST,
                0xffff,
                29,
                &mcp1_request(99, "rpc.ping", b"", false),
            ),
        )
        .reply(mcp1_error(29, -32012, "0xffff")),
        Case::mcp1("PING with RAW", mcp1_frame(1, PING, RAW, 30, b"x"))
            .reply(mcp1_error(30, -32012, "0x0001")),
        Case::mcp1(
            "ERROR from the client with RAW",
            mcp1_frame(1, ERROR, RAW, 31, b"x"),
        )
        .reply(mcp1_error(31, -32012, "0x0001")),
        Case::mcp1(
            "PONG from the client with RAW",
            mcp1_frame(1, PONG, RAW, 32, b""),
        )
        .reply(mcp1_error(32, -32012, "0x0001")),
        Case::new(
            Proto::Mcp1,
            "an unknown kind is answered only once its payload is in",
            {
                let frame = mcp1_frame(1, 0x09, 0, 33, b"12345678");
                vec![
                    Step::Send(frame[..19].to_vec()),
                    Step::Quiet,
                    Step::Send(frame[19..].to_vec()),
                ]
            },
        )
        .reply(mcp1_error(33, -32013, "0x09")),
        // REQUEST payloads that are not method + body: -32600, connection kept.
        Case::mcp1(
            "an empty REQUEST payload",
            mcp1_frame(1, REQUEST, 0, 40, b""),
        )
        .reply(mcp1_error(40, -32600, "Invalid Request")),
        Case::mcp1(
            "a 1-byte REQUEST payload",
            mcp1_frame(1, REQUEST, 0, 41, b"\x08"),
        )
        .reply(mcp1_error(41, -32600, "Invalid Request")),
        Case::mcp1(
            "method_len 0",
            mcp1_frame(1, REQUEST, 0, 42, b"\x00\x00rpc.ping"),
        )
        .reply(mcp1_error(42, -32600, "method_len 0")),
        Case::mcp1(
            "method_len 256",
            mcp1_frame(1, REQUEST, 0, 43, &mcp1_call(&"m".repeat(256), b"")),
        )
        .reply(mcp1_error(43, -32600, "method_len 256")),
        Case::mcp1(
            "method_len 65535 with 3 bytes after it",
            mcp1_frame(1, REQUEST, 0, 44, b"\xff\xffabc"),
        )
        .reply(mcp1_error(44, -32600, "method_len 65535")),
        Case::mcp1(
            "method_len beyond the payload",
            mcp1_frame(1, REQUEST, 0, 45, b"\x09\x00rpc"),
        )
        .reply(mcp1_error(45, -32600, "past the payload")),
        Case::mcp1(
            "a method name that is not UTF-8",
            mcp1_frame(1, REQUEST, 0, 46, b"\x05\x00rpc\xc0\xaf"),
        )
        .reply(mcp1_error(46, -32600, "UTF-8")),
        Case::mcp1(
            "a method name with a NUL byte",
            mcp1_request(47, "rpc.ping\0", b"", false),
        )
        .reply(Reply::Mcp1Error {
            id: 47,
            code: -32601,
            message: Text::Is("Method not found: no method named \"rpc.ping\\0\"".into()),
        }),
        Case::mcp1(
            "a 255-byte method name is framed and looked up",
            mcp1_request(48, &long_method, b"", false),
        )
        .reply(Reply::Mcp1Error {
            id: 48,
            code: -32601,
            message: Text::Is(format!(
                "Method not found: no method named \"{long_method}\""
            )),
        }),
        Case::mcp1(
            "a REQUEST with id 0",
            mcp1_request(0, "rpc.ping", b"", false),
        )
        .reply(mcp1_error(0, -32600, "id 0")),
        // Bodies: -32700 unless one JSON value, with no nesting limit.
        Case::mcp1(
            "a body that is not UTF-8",
            mcp1_request(50, "rpc.echo", b"\"\xff\"", false),
        )
        .reply(mcp1_error(50, -32700, "UTF-8")),
        Case::mcp1(
            "a body of whitespace only",
            mcp1_request(51, "rpc.echo", b" \n\t ", false),
        )
        .reply(mcp1_error(51, -32700, "Parse error")),
        Case::mcp1(
            "a body of two values",
            mcp1_request(52, "rpc.echo", b"1 2", false),
        )
        .reply(mcp1_error(52, -32700, "trailing")),
        Case::mcp1(
            "a body cut short",
            mcp1_request(53, "rpc.echo", b"[1,", false),
        )
        .reply(mcp1_error(53, -32700, "EOF")),
        Case::mcp1(
            "a body with a bad escape",
            mcp1_request(54, "rpc.echo", b"\"\\x\"", false),
        )
        .reply(mcp1_error(54, -32700, "escape")),
        Case::mcp1(
            "a body with a raw NUL in a string",
            mcp1_request(55, "rpc.echo", b"\"a\x00b\"", false),
        )
        .reply(mcp1_error(55, -32700, "control character")),
        Case::mcp1(
            "a body of one NUL byte",
            mcp1_request(56, "rpc.echo", b"\x00", false),
        )
        .reply(mcp1_error(56, -32700, "Parse error")),
        Case::mcp1(
            "a body of arrays never closed",
            mcp1_request(57, "rpc.echo", "[".repeat(DEEP).as_bytes(), false),
        )
        .reply(mcp1_error(57, -32700, "Parse error")),
        Case::mcp1(
            "a body of deep arrays is echoed",
            mcp1_request(58, "rpc.echo", deep_arrays(DEEP).as_bytes(), false),
        )
        .reply(response(58, 0, deep_arrays(DEEP).as_bytes())),
        Case::mcp1(
            "a body of deep objects is echoed",
            mcp1_request(59, "rpc.echo", deep_objects(DEEP / 2).as_bytes(), false),
        )
        .reply(response(59, 0, deep_objects(DEEP / 2).as_bytes())),
        Case::mcp1(
            "a lone surrogate escape is accepted",
            mcp1_request(60, "rpc.echo", b"\"\\ud800\"", false),
        )
        .reply(response(60, 0, b"\"\\ud800\"")),
        Case::mcp1(
            "a RAW body of non-UTF-8 bytes is echoed raw",
            mcp1_request(61, "rpc.echo", b"\xff\x00\xfe", true),
        )
        .reply(response(61, RAW, b"\xff\x00\xfe")),
        Case::mcp1(
            "a RAW body to a method that wants JSON",
            mcp1_request(62, "test.add", b"[1,2]", true),
        )
        .reply(mcp1_error(62, -32602, "Invalid params")),
        Case::mcp1(
            "a request with id u32::MAX",
            mcp1_request(u32::MAX, "rpc.echo", b"7", false),
        )
        .reply(response(u32::MAX, 0, b"7")),
        Case::mcp1(
            "a payload of exactly max-frame bytes",
            mcp1_request(63, "rpc.echo", &max_body, true),
        )
        .reply(response(63, RAW, &max_body)),
        // Notifications, and kinds only the daemon sends.
        Case::mcp1(
            "a notification with method_len 0 carries its own id",
            mcp1_frame(1, NOTIFICATION, 0, 55, b"\x00\x00"),
        )
        .reply(mcp1_error(55, -32600, "method_len 0")),
        Case::mcp1(
            "a notification with a body that is not JSON",
            mcp1_frame(1, NOTIFICATION, 0, 0, &mcp1_call("rpc.echo", b"{")),
        )
        .reply(mcp1_error(0, -32700, "Parse error")),
        Case::mcp1(
            "a notification of a missing method gets nothing",
            mcp1_frame(1, NOTIFICATION, 0, 0, &mcp1_call("nope", b"")),
        ),
        Case::mcp1(
            "a RESPONSE from the client gets nothing",
            mcp1_frame(1, RESPONSE, 0, 5, b"\"x\""),
        ),
        Case::mcp1(
            "a RAW RESPONSE from the client gets nothing",
            mcp1_frame(1, RESPONSE, RAW, 5, b"\xff"),
        ),
        Case::mcp1(
            "an ERROR from the client gets nothing",
            mcp1_frame(1, ERROR, 0, 6, b"\x01\x02"),
        ),
        Case::mcp1(
            "a PONG from the client gets nothing",
            mcp1_frame(1, PONG, 0, 7, b"hb"),
        ),
        Case::mcp1(
            "a PING with binary payload",
            mcp1_frame(1, PING, 0, 70, b"\x00\xff\n"),
        )
        .reply(Reply::Frame {
            kind: PONG,
            flags: 0,
            id: 70,
            payload: b"\x00\xff\n".to_vec(),
        }),
        Case::mcp1(
            "a PING with id 0 and no payload",
            mcp1_frame(1, PING, 0, 0, b""),
        )
        .reply(Reply::Frame {
            kind: PONG,
            flags: 0,
            id: 0,
            payload: Vec::new(),
        }),
        // Splits and truncation.
        Case::new(
            Proto::Mcp1,
            "a request split into 1-byte writes",
            vec![Step::Bytewise(mcp1_request(
                80,
                "rpc.echo",
                b"{\"slow\":true}",
                false,
            ))],
        )
        .reply(response(80, 0, b"{\"slow\":true}")),
        Case::new(
            Proto::Mcp1,
            "a PING split into 1-byte writes",
            vec![Step::Bytewise(mcp1_frame(1, PING, 0, 81, b"bytes"))],
        )
        .reply(Reply::Frame {
            kind: PONG,
            flags: 0,
            id: 81,
            payload: b"bytes".to_vec(),
        }),
        Case::new(
            Proto::Mcp1,
            "a header alone, then end of input",
            vec![Step::Send(ping[..16].to_vec()), Step::Shutdown],
        )
        .reply(mcp1_error(1, -32014, "after 16 bytes of 26 bytes"))
        .closes(),
        Case::new(
            Proto::Mcp1,
            "a payload cut short at end of input",
            vec![
                Step::Send(mcp1_request(82, "rpc.echo", b"[1,2,3]", false)[..30].to_vec()),
                Step::Shutdown,
            ],
        )
        .reply(mcp1_error(82, -32014, "Truncated frame"))
        .closes(),
        Case::new(
            Proto::Mcp1,
            "half a header, then end of input",
            vec![Step::Send(ping[..6].to_vec()), Step::Shutdown],
        )
        .reply(mcp1_error(0, -32014, "Truncated frame"))
        .closes(),
        Case::new(
            Proto::Mcp1,
            "only the magic, then end of input",
            vec![Step::Send(b"MCP1".to_vec()), Step::Shutdown],
        )
        .reply(mcp1_error(0, -32014, "Truncated frame"))
        .closes(),
        Case::new(
            Proto::Mcp1,
            "an unknown kind cut short at end of input",
            vec![
                Step::Send(mcp1_frame(1, 0x09, 0, 83, b"123456")[..19].to_vec()),
                Step::Shutdown,
            ],
        )
        .reply(mcp1_error(83, -32014, "Truncated frame"))
        .closes(),
        Case::new(
            Proto::Mcp1,
            "3 bytes of magic, then end of input",
            vec![Step::Send(b"MCP".to_vec()), Step::Shutdown],
        )
        .closes(),
        Case::new(
            Proto::Mcp1,
            "1 byte of magic, then end of input",
            vec![Step::Send(b"M".to_vec()), Step::Shutdown],
        )
        .closes(),
        Case::new(
            Proto::Mcp1,
            "a whole frame, then end of input",
            vec![
                Step::Send(mcp1_request(84, "rpc.ping", b"", false)),
                Step::Shutdown,
            ],
        )
        .reply(response(84, 0, b"\"pong\""))
        .closes(),
    ]
}

/// The probe sent on a connection the spec keeps open, and its answer.
fn probe(proto: Proto) -> (Vec<u8>, Reply) {
    match proto {
        Proto::JsonRpc => (
            br#"{"jsonrpc":"2.0","method":"rpc.echo","params":["probe"],"id":"probe"}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect(),
            line(r#"{"jsonrpc":"2.0","result":["probe"],"id":"probe"}"#),
        ),
        Proto::Mcp1 => (
            mcp1_request(4242, "rpc.echo", b"\"probe\"", false),
            response(4242, 0, b"\"probe\""),
        ),
    }
}

fn connect(endpoint: &Endpoint) -> Raw {
    let raw = Raw::connect(endpoint);
    raw.set_timeout(CASE_PATIENCE);
    if let Raw::Tcp(stream) = &raw {
        // So that 1-byte writes leave as 1-byte segments.
        stream.get_ref().set_nodelay(true).expect("nodelay");
    }
    raw
}

/// Asserts that nothing arrives (and the connection is not closed) for a moment.
fn assert_quiet(raw: &mut Raw) {
    raw.set_timeout(QUIET);
    // A read interrupted by a signal (EINTR, seen on io_uring runs) is
    // tried again, as Raw::is_closed does: it says nothing about the daemon.
    let outcome = loop {
        let read = match raw {
            Raw::Unix(s) => s.fill_buf().map(|b| b.to_vec()),
            Raw::Tcp(s) => s.fill_buf().map(|b| b.to_vec()),
        };
        if !matches!(&read, Err(e) if e.kind() == ErrorKind::Interrupted) {
            break read;
        }
    };
    raw.set_timeout(CASE_PATIENCE);
    match outcome {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the daemon should still be waiting for more bytes, got {other:?}"),
    }
}

fn check_reply(raw: &mut Raw, expected: &Reply) {
    match expected {
        Reply::Line(text) => {
            assert_eq!(raw.line().as_deref(), Some(text.as_str()), "reply line");
        }
        Reply::JsonError { code, id, message } => {
            let got = raw.line().expect("an error line, not EOF");
            let value: serde_json::Value =
                serde_json::from_str(&got).unwrap_or_else(|e| panic!("not JSON ({e}): {got}"));
            let text = value["error"]["message"].as_str().unwrap_or_default();
            if let Text::Is(message) = message {
                // Word for word, then the whole line byte for byte.
                assert_eq!(text, message, "message of {got}");
                let message = serde_json::to_string(message).expect("a string serializes");
                let exact = format!(
                    r#"{{"jsonrpc":"2.0","error":{{"code":{code},"message":{message}}},"id":{id}}}"#
                );
                assert_eq!(got, exact, "error line");
            }
            assert!(
                got.starts_with(&format!(
                    r#"{{"jsonrpc":"2.0","error":{{"code":{code},"message":"#
                )) && got.ends_with(&format!(r#""}},"id":{id}}}"#)),
                "expected code {code} and id {id}: {got}"
            );
            assert!(message.check(text), "message {text:?}");
        }
        Reply::Batch(elements) => {
            let got = raw.line().expect("a batch reply, not EOF");
            let entries: Vec<Box<RawValue>> = serde_json::from_str(&got)
                .unwrap_or_else(|e| panic!("not a JSON array ({e}): {got}"));
            let mut got: Vec<&str> = entries.iter().map(|e| e.get()).collect();
            let mut want: Vec<&str> = elements.iter().map(String::as_str).collect();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "batch elements (in any order)");
        }
        Reply::Frame {
            kind,
            flags,
            id,
            payload,
        } => {
            let frame = raw.frame();
            assert_eq!(
                (frame.kind, frame.flags, frame.id),
                (*kind, *flags, *id),
                "frame header; payload {:?}",
                String::from_utf8_lossy(&frame.payload[..frame.payload.len().min(200)])
            );
            assert!(frame.payload == *payload, "frame payload differs");
        }
        Reply::Mcp1Error { id, code, message } => {
            let frame = raw.frame();
            assert_eq!(
                (frame.kind, frame.flags, frame.id),
                (ERROR, 0, *id),
                "ERROR frame header; payload {:?}",
                String::from_utf8_lossy(&frame.payload)
            );
            let (got, text) = frame.error();
            assert_eq!(got, *code, "error code; message {text:?}");
            assert!(message.check(&text), "message {text:?}");
        }
    }
}

/// Sends one case on a fresh connection and checks everything that follows.
fn run_case(server: &TestServer, endpoint: &Endpoint, case: &Case) {
    let mut raw = connect(endpoint);
    let mut ended = false;
    for step in &case.steps {
        match step {
            // The daemon may close mid-write on a case that makes it close.
            Step::Send(bytes) => drop(raw.send_lossy(bytes)),
            Step::Bytewise(bytes) => {
                for byte in bytes {
                    raw.send(std::slice::from_ref(byte));
                }
            }
            Step::Expect(reply) => check_reply(&mut raw, reply),
            Step::Quiet => assert_quiet(&mut raw),
            Step::Shutdown => {
                raw.shutdown_write();
                ended = true;
            }
        }
    }
    for reply in &case.replies {
        check_reply(&mut raw, reply);
    }
    match case.then {
        Then::Open => {
            assert!(!ended, "a case that ends its input cannot stay open");
            let (bytes, answer) = probe(case.proto);
            raw.send(&bytes);
            check_reply(&mut raw, &answer);
        }
        Then::Closed => {
            let rest = raw.read_to_end_or_reset();
            assert!(
                matches!(rest, Ok(0)),
                "expected the daemon to close with nothing more, got {rest:?}"
            );
        }
    }
    drop(raw);
    assert_healthy(server);
    assert_healthy_mcp1(server);
}

fn run_all(proto: Proto, cases: &[Case]) {
    // Names are unique, so that a failure names one case.
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "duplicate case names");
    assert!(cases.iter().all(|c| c.proto == proto));

    let server = start_with(|c| {
        c.max_frame = MAX_FRAME;
        c.max_batch = MAX_BATCH;
    });
    let mut failures = Vec::new();
    for endpoint in server.endpoints() {
        for case in cases {
            let outcome = catch_unwind(AssertUnwindSafe(|| run_case(&server, &endpoint, case)));
            if let Err(panic) = outcome {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{endpoint}: {}: {why}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs failed:\n{}",
        failures.len(),
        2 * cases.len(),
        failures.join("\n")
    );
}

#[test]
fn malformed_jsonrpc_input_gets_the_specified_answer_on_both_transports() {
    let cases = jsonrpc_cases();
    assert!(cases.len() >= 35, "{} cases", cases.len());
    run_all(Proto::JsonRpc, &cases);
}

#[test]
fn malformed_mcp1_input_gets_the_specified_answer_on_both_transports() {
    let cases = mcp1_cases();
    assert!(cases.len() >= 35, "{} cases", cases.len());
    run_all(Proto::Mcp1, &cases);
}
