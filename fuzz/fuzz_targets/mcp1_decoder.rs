//! Fuzz target `mcp1_decoder`: MCP1 header checks and frame decoding
//! (`next_frame` over the ring buffer, `check`, `peek_header`,
//! `parse_request`) and the frame writers, on arbitrary bytes delivered in
//! arbitrary reads.
//!
//! Why: MCP1 lengths and ids come straight from the peer; a decoder that
//! trusts a length it should not reads past the data or waits forever, and
//! one that checks in the wrong order answers with the wrong code.
//!
//! Input: 4 setup bytes (payload limit choice, unused, where the ring wraps,
//! read-size seed), then the stream.
//!
//! What it checks:
//! - no panic, no read past the data: every frame's payload, read out of the
//!   ring (wrapped or not, grown or not), is exactly the `length` bytes that
//!   follow its header in the stream;
//! - the frames and refusals, however the stream is split into reads, are
//!   those of a model of mcp1.md (magic as soon as its bytes are in, then
//!   version, length, kind, flags; kind and flags only once the whole frame
//!   is in; fatal errors stop, the others skip exactly one frame), with the
//!   code, the id and the close/skip the spec gives;
//! - request and notification payloads split as section 3 says (method_len
//!   1 to 255 and within the payload, UTF-8 method, JSON or raw body), with
//!   the spec's codes;
//! - the writers round-trip: a request re-encoded with `write_call` is the
//!   same bytes, a response, error or pong reads back as a well-formed frame
//!   carrying what was written;
//! - what is left at the end is a correct prefix of a frame, and
//!   `peek_header` reads its id and length once its header is in.

#![no_main]

use junction::RpcError;
use junction::proto::mcp1::{self, HEADER_LEN, Kind, Next};
use junction::router::Params;
use junction_fuzz::feed::Feed;
use junction_fuzz::out::{self, Reply};
use junction_fuzz::spec::{self, Mcp1Next, Mcp1Request};
use junction_fuzz::{Reads, Setup};
use libfuzzer_sys::fuzz_target;

const LIMITS: [usize; 8] = [0, 1, 2, 10, 16, 255, 4096, 1 << 20];

/// One thing the decoder reports, in the model's terms.
#[derive(Debug, PartialEq, Eq)]
enum Event<'a> {
    Frame {
        kind: u8,
        flags: u16,
        id: u32,
        payload: &'a [u8],
    },
    Error {
        code: i32,
        id: u32,
        close: bool,
        skip: usize,
    },
}

fuzz_target!(|data: &[u8]| {
    let (setup, stream) = Setup::split(data);
    let limit = LIMITS[usize::from(setup.a) % LIMITS.len()];
    let (expected, left_at) = model(stream, limit);

    let mut feed = Feed::new(limit, usize::from(setup.wrap));
    let mut reads = Reads::new(setup.seed);
    let mut scratch = Vec::new();
    let mut seen: Vec<Event<'_>> = Vec::new();
    let mut at = 0;
    // Where the front of the ring is in the stream.
    let mut front = 0;
    let mut closed = false;
    while at < stream.len() && !closed {
        let want = reads.next(stream.len() - at);
        let took = feed.read(&stream[at..at + want]);
        assert!(took > 0, "the ring is full at its largest size");
        at += took;
        while !closed {
            match mcp1::next_frame(feed.ring(), limit) {
                Next::NeedMore => break,
                Next::Frame(header) => {
                    let length = header.length as usize;
                    assert!(
                        header.frame_len() <= feed.ring().len(),
                        "frame past the data"
                    );
                    let payload = feed.ring().frame(HEADER_LEN, length, &mut scratch);
                    let in_stream = &stream[front + HEADER_LEN..front + header.frame_len()];
                    assert_eq!(
                        payload, in_stream,
                        "payload is not the bytes after the header"
                    );
                    check_frame(&header, payload);
                    seen.push(Event::Frame {
                        kind: header.kind as u8,
                        flags: header.flags,
                        id: header.id,
                        payload: in_stream,
                    });
                    feed.ring_mut().consume(header.frame_len());
                    front += header.frame_len();
                }
                Next::Error(error) => {
                    let rpc = error.to_rpc();
                    check_error_frame(error.id(), &rpc);
                    let skip = error.skip_len();
                    assert!(skip <= feed.ring().len(), "skip past the data");
                    assert_eq!(error.closes(), skip == 0, "{error:?}");
                    seen.push(Event::Error {
                        code: rpc.code,
                        id: error.id(),
                        close: error.closes(),
                        skip,
                    });
                    if error.closes() {
                        closed = true;
                    } else {
                        feed.ring_mut().consume(skip);
                        front += skip;
                    }
                }
            }
        }
    }
    assert_eq!(seen, expected, "decoding differs from the spec");
    if !closed {
        assert_eq!(front, left_at);
        let left = &stream[front..];
        assert_eq!(feed.ring().len(), left.len());
        let mut first = [0u8; HEADER_LEN];
        let n = left.len().min(HEADER_LEN);
        assert!(feed.ring().peek(&mut first[..n]));
        assert_eq!(&first[..n], &left[..n]);
        let peeked = mcp1::peek_header(&first[..n]);
        if n == HEADER_LEN {
            let id = u32::from_le_bytes([left[8], left[9], left[10], left[11]]);
            let length = u32::from_le_bytes([left[12], left[13], left[14], left[15]]);
            assert_eq!(peeked, Some((id, length)));
        } else {
            assert_eq!(peeked, None);
        }
    }
});

/// The events the spec gives for the whole stream, and where the bytes
/// still waiting start (when the stream was not refused).
fn model(stream: &[u8], limit: usize) -> (Vec<Event<'_>>, usize) {
    let mut events = Vec::new();
    let mut at = 0;
    loop {
        match spec::mcp1_next(&stream[at..], limit) {
            Mcp1Next::NeedMore => return (events, at),
            Mcp1Next::Frame {
                kind,
                flags,
                id,
                length,
            } => {
                let end = at + HEADER_LEN + length as usize;
                events.push(Event::Frame {
                    kind,
                    flags,
                    id,
                    payload: &stream[at + HEADER_LEN..end],
                });
                at = end;
            }
            Mcp1Next::Error {
                code,
                id,
                close,
                skip,
            } => {
                events.push(Event::Error {
                    code,
                    id,
                    close,
                    skip,
                });
                if close {
                    return (events, at);
                }
                at += skip;
            }
        }
    }
}

/// Checks what a valid frame's payload means, and that the writers round-trip it.
fn check_frame(header: &mcp1::Header, payload: &[u8]) {
    let (kind, flags, id) = (header.kind as u8, header.flags, header.id);
    match header.kind {
        Kind::Request | Kind::Notification => {
            let parsed = mcp1::parse_request(header, payload);
            match (spec::mcp1_request(kind, flags, id, payload), parsed) {
                (Mcp1Request::Refused(code), Err(error)) => {
                    assert_eq!(error.code, code, "{error:?}");
                    check_error_frame(id, &error);
                }
                (Mcp1Request::Call { method, body, raw }, Ok(request)) => {
                    assert_eq!(request.method, method);
                    match request.params {
                        Params::Raw(bytes) => assert!(raw && bytes == body),
                        Params::None => assert!(!raw && body.is_empty()),
                        Params::Json(value) => {
                            assert!(!raw);
                            let trimmed = trim_json_space(body);
                            assert_eq!(value.get().as_bytes(), trimmed, "JSON body");
                        }
                    }
                    round_trip(header, method, body, raw, request.params);
                }
                (model, parsed) => {
                    panic!("payload {payload:?}: spec {model:?}, decoder {parsed:?}")
                }
            }
        }
        Kind::Ping => {
            let mut out = Vec::new();
            mcp1::write_pong(&mut out, id, payload);
            let pong = Reply::Pong {
                id: id.to_string(),
                payload: payload.to_vec(),
            };
            assert_eq!(out::mcp1_stream(&out), [pong]);
        }
        Kind::Cancel => panic!("check() let a CANCEL from a client through"),
        Kind::Response | Kind::Error | Kind::Pong => {
            if header.kind == Kind::Error {
                // A client reads these; it must not panic on any payload.
                let _ = mcp1::parse_error_payload(payload);
            }
        }
    }
}

/// Re-encodes a request and answers it, and reads both back.
fn round_trip(header: &mcp1::Header, method: &str, body: &[u8], raw: bool, params: Params<'_>) {
    let mut call = Vec::new();
    let id = (header.kind == Kind::Request).then_some(header.id);
    mcp1::write_call(&mut call, id, method, body, raw);
    let mut expected = b"MCP1\x01".to_vec();
    expected.push(header.kind as u8);
    expected.extend_from_slice(&header.flags.to_le_bytes());
    expected.extend_from_slice(&id.unwrap_or(0).to_le_bytes());
    expected.extend_from_slice(&header.length.to_le_bytes());
    expected.extend_from_slice(&(method.len() as u16).to_le_bytes());
    expected.extend_from_slice(method.as_bytes());
    expected.extend_from_slice(body);
    assert_eq!(call, expected, "write_call");

    let mut out = Vec::new();
    let sent = mcp1::write_response(&mut out, header.id, |reply| {
        match params {
            Params::None => {}
            Params::Json(value) => reply.json_text(value),
            Params::Raw(bytes) => reply.bytes(bytes),
        }
        Ok(())
    });
    assert!(sent.is_none());
    let result = match params {
        Params::None => b"null".to_vec(),
        Params::Json(value) => value.get().as_bytes().to_vec(),
        Params::Raw(bytes) => bytes.to_vec(),
    };
    let want = Reply::Result {
        id: header.id.to_string(),
        result,
        raw,
    };
    assert_eq!(out::mcp1_stream(&out), [want]);
}

/// An ERROR frame for `error` reads back with its id, code and message.
fn check_error_frame(id: u32, error: &RpcError) {
    let mut out = Vec::new();
    mcp1::write_error(&mut out, id, error);
    let want = Reply::Error {
        id: id.to_string(),
        code: error.code,
    };
    assert_eq!(out::mcp1_stream(&out), [want]);
    let parsed = mcp1::parse_error_payload(&out[HEADER_LEN..]).expect("error payload");
    assert_eq!(parsed.message, error.message);
}

/// The body without the JSON whitespace around its value.
fn trim_json_space(body: &[u8]) -> &[u8] {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = body.iter().position(|b| !space(b)).unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|b| !space(b))
        .map_or(start, |i| i + 1);
    &body[start..end]
}
