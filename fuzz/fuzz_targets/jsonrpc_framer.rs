//! Fuzz target `jsonrpc_framer`: JSON-RPC line framing (`next_line` over the
//! ring buffer), envelope parsing (`parse_line`, `parse_entry`) and response
//! writing (`write_response`, `write_error`, `write_request`), on
//! arbitrary bytes delivered in arbitrary reads.
//!
//! Why: this is everything between a JSON-RPC peer's bytes and the bytes
//! it gets back, short of the connection state machine; every byte of it is
//! chosen by the peer.
//!
//! Input: 4 setup bytes (`max-frame` choice, `max-batch` choice plus an
//! end-of-input bit, where the ring wraps, read-size seed), then the stream.
//!
//! What it checks:
//! - no panic, no read past the data (the ring is started near its end so
//!   that lines wrap, and grows as a connection's does);
//! - the lines the framer yields, however the stream is split into reads,
//!   are exactly those of a model of jsonrpc.md section 3 (LF, one CR
//!   dropped, `max-frame`, the early "more than max-frame + 1 bytes without
//!   LF" refusal, the last line at end of input): every complete line
//!   yields exactly one outcome, in order, and nothing after a refusal;
//! - each line's outcome is the one jsonrpc.md sections 5 and 6 give
//!   (blank, -32700 with the UTF-8 offset, batch limits, "got a number",
//!   duplicate members, id/jsonrpc/method/params checks, unsolicited
//!   responses), compared with a model built on serde_json values;
//! - every response written for it is one compact, valid JSON object in the
//!   spec's member order with the id echoed byte for byte, and its result or
//!   error is the one the handler gave.

#![no_main]

use junction::RpcError;
use junction::proto::jsonrpc::{self, Entry, Line, Message};
use junction::router::Reply as HandlerReply;
use junction_fuzz::feed::Feed;
use junction_fuzz::out::{self, Reply};
use junction_fuzz::spec::{self, EntryModel, LineEvent};
use junction_fuzz::{Reads, Setup};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

const MAX_FRAMES: [usize; 8] = [0, 1, 2, 16, 64, 255, 4096, 1 << 20];
const MAX_BATCHES: [usize; 5] = [1, 2, 3, 16, 1024];

fuzz_target!(|data: &[u8]| {
    let (setup, stream) = Setup::split(data);
    let max_frame = MAX_FRAMES[usize::from(setup.a) % MAX_FRAMES.len()];
    let max_batch = MAX_BATCHES[usize::from(setup.b & 0x7f) % MAX_BATCHES.len()];
    let eof = setup.b & 0x80 != 0;
    let (expected, waiting) = spec::lines(stream, max_frame, eof);

    let mut feed = Feed::new(max_frame, usize::from(setup.wrap));
    let mut reads = Reads::new(setup.seed);
    let mut scratch = Vec::new();
    let mut seen: Vec<LineEvent<'_>> = Vec::new();
    let mut scanned = 0;
    let mut at = 0;
    let mut refused = false;
    while at < stream.len() && !refused {
        let want = reads.next(stream.len() - at);
        let took = feed.read(&stream[at..at + want]);
        assert!(took > 0, "the ring is full at its largest size");
        at += took;
        loop {
            match jsonrpc::next_line(feed.ring(), scanned, max_frame) {
                Line::Complete { len, consumed } => {
                    assert!(
                        consumed == len + 1 || consumed == len + 2,
                        "{len} {consumed}"
                    );
                    let line = feed.ring().frame(0, len, &mut scratch);
                    seen.push(own(line, &expected, seen.len()));
                    handle(line, max_batch);
                    feed.ring_mut().consume(consumed);
                    scanned = 0;
                }
                Line::Partial { scanned: now } => {
                    assert_eq!(now, feed.ring().len(), "partial search stopped short");
                    scanned = now;
                    break;
                }
                Line::TooLong => {
                    seen.push(LineEvent::TooLong);
                    refused = true;
                    break;
                }
            }
        }
    }
    let left = feed.ring().len();
    if eof && !refused && left > 0 {
        // What a connection does at end of input with a line still open.
        if left <= max_frame {
            let line = feed.ring().frame(0, left, &mut scratch);
            seen.push(own(line, &expected, seen.len()));
            handle(line, max_batch);
        } else {
            seen.push(LineEvent::TooLongAtEof);
        }
    } else if !refused {
        assert_eq!(left, waiting, "bytes left waiting for their LF");
    }
    assert_eq!(seen, expected, "framing differs from the spec");
});

/// The expected event at `index` when it is this line (so that the
/// comparison at the end can borrow from the stream, not the ring).
fn own<'s>(line: &[u8], expected: &[LineEvent<'s>], index: usize) -> LineEvent<'s> {
    match expected.get(index) {
        Some(LineEvent::Line(want)) if *want == line => LineEvent::Line(want),
        other => panic!("line {index} is {line:?}, the spec says {other:?}"),
    }
}

/// Checks one line's outcome against the spec, and the responses written for it.
fn handle(line: &[u8], max_batch: usize) {
    let message = jsonrpc::parse_line(line, max_batch);
    if spec::is_blank(line) {
        assert!(matches!(message, Message::Blank), "blank line: {message:?}");
        return;
    }
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(e) => {
            let Message::Invalid(error) = &message else {
                panic!("non-UTF-8 line gave {message:?}");
            };
            assert_eq!(error.code, -32700);
            assert_eq!(
                error.message,
                format!("Parse error: invalid UTF-8 at byte {}", e.valid_up_to())
            );
            respond_error(None, error);
            return;
        }
    };
    let first = line.iter().position(|&b| !spec::is_sniff_space(b));
    let is_batch = first.is_some_and(|i| line[i] == b'[');
    if !spec::is_json(line) {
        let Message::Invalid(error) = &message else {
            // A duplicate member can be met before the syntax error behind it.
            if let Message::Single(Entry::Invalid { id: None, error }) = &message {
                assert!(
                    !is_batch && error.message.contains("duplicate field"),
                    "{error:?}"
                );
                respond_error(None, error);
                return;
            }
            panic!("invalid JSON {text:?} gave {message:?}");
        };
        assert_eq!(error.code, -32700, "invalid JSON {text:?}: {error:?}");
        respond_error(None, error);
        return;
    }
    if is_batch {
        let entries: Vec<&RawValue> = serde_json::from_str(text).expect("valid JSON array");
        match &message {
            Message::Invalid(error) if entries.is_empty() => {
                assert_eq!(error.code, -32600);
                assert_eq!(error.message, "Invalid Request: empty batch");
                respond_error(None, error);
            }
            Message::Invalid(error) if entries.len() > max_batch => {
                assert_eq!(error.code, -32600);
                let detail = format!(
                    "batch of {} entries exceeds the limit of {max_batch}",
                    entries.len()
                );
                assert_eq!(error.message, format!("Invalid Request: {detail}"));
                respond_error(None, error);
            }
            Message::Batch(raws) if !entries.is_empty() && entries.len() <= max_batch => {
                assert_eq!(raws.len(), entries.len());
                let mut body = Vec::new();
                let mut items = Vec::new();
                for (raw, want) in raws.iter().zip(&entries) {
                    assert_eq!(raw.get(), want.get(), "batch entry text");
                    let entry = jsonrpc::parse_entry(raw);
                    check_entry(raw.get(), &entry);
                    let start = body.len();
                    body.push(if body.is_empty() { b'[' } else { b',' });
                    match answer(&entry, &mut body) {
                        Some(reply) => items.push(reply),
                        None => body.truncate(start),
                    }
                }
                if !body.is_empty() {
                    body.push(b']');
                    assert_eq!(out::jsonrpc_line(&body), Reply::Batch(items).canonical());
                }
            }
            other => panic!("batch {text:?} gave {other:?}"),
        }
        return;
    }
    let Message::Single(entry) = &message else {
        panic!("a single JSON value gave {message:?}");
    };
    check_entry(text, entry);
    let mut out = Vec::new();
    if let Some(reply) = answer(entry, &mut out) {
        assert_eq!(out::jsonrpc_line(&out), reply);
    }
}

/// Compares the parsed entry with the model of jsonrpc.md section 5.
fn check_entry(text: &str, entry: &Entry<'_>) {
    let Some(model) = spec::entry(text) else {
        return; // A member name the model cannot read; no panic is enough.
    };
    let raw_id = |id: &Option<&RawValue>| id.map(|id| id.get().to_string());
    match (&model, entry) {
        (EntryModel::NotObject(kind), Entry::Invalid { id: None, error }) => {
            let want = format!("Invalid Request: expected a request object, got {kind}");
            assert_eq!(
                (error.code, error.message.as_ref()),
                (-32600, want.as_str())
            );
        }
        (EntryModel::Duplicate(name), Entry::Invalid { id: None, error }) => {
            assert_eq!(error.code, -32600);
            let want = format!("Invalid Request: duplicate field `{name}`");
            assert!(error.message.starts_with(&want), "{error:?}, want {want}");
        }
        (EntryModel::Invalid { id, detail }, Entry::Invalid { id: got, error }) => {
            assert_eq!(&raw_id(got), id, "{text}");
            let want = format!("Invalid Request: {detail}");
            assert_eq!(
                (error.code, error.message.as_ref()),
                (-32600, want.as_str())
            );
        }
        (EntryModel::Response, Entry::Response { .. }) => {}
        (
            EntryModel::Request { id, method, params },
            Entry::Request {
                id: got_id,
                method: got_method,
                params: got_params,
            },
        ) => {
            assert_eq!(&raw_id(got_id), id);
            assert_eq!(got_method.as_ref(), method.as_str());
            assert_eq!(&got_params.map(|p| p.get().to_string()), params);
            let mut note = Vec::new();
            jsonrpc::write_request(&mut note, None, got_method, got_params.map(RawValue::get));
            assert!(spec::is_json(&note), "notification not JSON: {note:?}");
        }
        _ => panic!("{text:?}: the spec says {model:?}, the parser {entry:?}"),
    }
}

/// Writes the response an entry gets (with a few stand-in handlers) and
/// returns what it must reduce to, or None when it gets none.
fn answer(entry: &Entry<'_>, out: &mut Vec<u8>) -> Option<Reply> {
    let id_text = |id: Option<&RawValue>| id.map_or("null", RawValue::get).to_string();
    match entry {
        Entry::Response { .. } | Entry::Request { id: None, .. } => None,
        Entry::Invalid { id, error } => {
            jsonrpc::write_error(out, *id, error);
            Some(Reply::Error {
                id: id_text(*id),
                code: error.code,
            })
        }
        Entry::Request {
            id: Some(id),
            method,
            params,
        } => {
            let (sent, want) = match method.as_ref() {
                "raw" => {
                    let sent = jsonrpc::write_response(out, Some(id), |r| {
                        r.bytes(b"\x00\xff");
                        Ok(())
                    });
                    (sent, Err(-32003))
                }
                "fail" => {
                    let sent =
                        jsonrpc::write_response(out, Some(id), |r: &mut HandlerReply<'_>| {
                            r.json(&[1, 2])?;
                            Err(RpcError::new(4711, "failed \"on\"\tpurpose")
                                .data(serde_json::json!({"why": ["\u{0}", 1.5]})))
                        });
                    (sent, Err(4711))
                }
                "null" => (
                    jsonrpc::write_response(out, Some(id), |_| Ok(())),
                    Ok(b"null".to_vec()),
                ),
                "name" => {
                    let sent = jsonrpc::write_response(out, Some(id), |r| r.json(method.as_ref()));
                    let name = serde_json::to_vec(method.as_ref()).expect("a str serializes");
                    (sent, Ok(name))
                }
                _ => {
                    let sent = jsonrpc::write_response(out, Some(id), |r| {
                        if let Some(params) = params {
                            r.json_text(params);
                        }
                        Ok(())
                    });
                    // A CR between tokens is written as a space (jsonrpc.md section 3).
                    let echoed = params
                        .map_or("null", RawValue::get)
                        .replace('\r', " ")
                        .into_bytes();
                    (sent, Ok(echoed))
                }
            };
            let id = id.get().to_string();
            match want {
                Ok(result) => {
                    assert!(sent.is_none(), "{sent:?}");
                    Some(Reply::Result {
                        id,
                        result,
                        raw: false,
                    })
                }
                Err(code) => {
                    assert_eq!(sent.map(|e| e.code), Some(code));
                    Some(Reply::Error { id, code })
                }
            }
        }
    }
}

/// A line-level error: one response, id null.
fn respond_error(id: Option<&RawValue>, error: &RpcError) {
    let mut out = Vec::new();
    jsonrpc::write_error(&mut out, id, error);
    let reply = out::jsonrpc_line(&out);
    assert_eq!(
        reply,
        Reply::Error {
            id: "null".into(),
            code: error.code
        }
    );
}
