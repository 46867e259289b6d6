//! Fuzz target `crossproto`: JSON that crosses from MCP1 into JSON-RPC,
//! through the daemon's own bus (a real `Bus`, no sockets).
//!
//! Why: an MCP1 body may hold raw CR and LF between JSON tokens (mcp1.md
//! section 3), and the bus passes results, params and event data on as
//! text. Copied as it is into a JSON-RPC stream, one peer's LF ends the line
//! early and the rest is read as a line of the daemon's: a forged reply, a
//! forged request, a forged event (issue 14). Every byte here is chosen by
//! the MCP1 peer.
//!
//! Input: the whole input is an MCP1 body (not RAW), used three ways:
//! - the RESPONSE body of an MCP1 provider answering a JSON-RPC caller
//!   (`Outcome::from_mcp1`, `Bus::answer`);
//! - the params of an MCP1 caller (`mcp1::parse_request`) forwarded to a
//!   JSON-RPC provider, as a call and as a notification (`Bus::forward`);
//! - the `data` of an MCP1 publisher's `bus.publish` (`bus::methods::call`),
//!   delivered to a JSON-RPC subscriber (`Bus::pop_events`).
//!
//! What it checks:
//! - no panic;
//! - every frame the bus writes for a JSON-RPC peer is exactly one line:
//!   one LF, at its end, and no CR;
//! - when the body is one JSON value (as `mcp1::parse_json_body` reads it),
//!   each frame is exactly the spec's bytes (bus.md sections 2 and 4) with
//!   the value as sent, save that every CR and LF in it is a space
//!   (jsonrpc.md section 3), and parses back to the same JSON value;
//! - when it is not, the caller gets -32603 (the provider's result is not
//!   JSON) and the MCP1 caller -32700, as one line or one frame.

#![no_main]

use std::sync::Arc;

use junction::access::Peer;
use junction::bus::{Bus, Caller, Delivery, Outcome, methods};
use junction::policy::{Grants, Identity, Rights};
use junction::Protocol;
use junction_proto::mcp1::{self, HEADER_LEN, Header, Kind};
use junction::router::{Context, Params, Router};
use junction::stats::Stats;
use junction::workers::{ConnRef, ReplyTo};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

const JSON_PROVIDER: ConnRef = ConnRef {
    token: 1,
    generation: 1,
};
const MCP1_PROVIDER: ConnRef = ConnRef {
    token: 2,
    generation: 1,
};
const JSON_CALLER: ConnRef = ConnRef {
    token: 3,
    generation: 1,
};
const MCP1_CALLER: ConnRef = ConnRef {
    token: 4,
    generation: 1,
};
const JSON_SUBSCRIBER: ConnRef = ConnRef {
    token: 5,
    generation: 1,
};

const PEER: Peer = Peer::Unix(None);

thread_local! {
    /// Every peer of the target may do everything: the policy is not what
    /// is fuzzed here. Made once, so no input leaks memory.
    static RIGHTS: &'static Rights = Box::leak(Box::new(Rights::new(
        Arc::new(Identity::unauthenticated()),
        Arc::new(Grants::everything()),
    )));
}

fn caller(id: ConnRef, protocol: Protocol) -> Caller<'static> {
    Caller {
        id,
        peer: &PEER,
        protocol,
        rights: RIGHTS.with(|r| *r),
    }
}

fn json(text: &str) -> &RawValue {
    serde_json::from_str(text).expect("the target's own JSON")
}

/// A bus with a provider of `j.m` over JSON-RPC, one of `m.m` over MCP1,
/// and a JSON-RPC subscriber of `t`.
fn bus(context: &Context) -> Bus {
    let mut bus = Bus::new(
        context.bus_config().clone(),
        context.stats_handle(),
        Arc::clone(context.directory()),
    );
    for (who, protocol, method, params) in [
        (
            JSON_PROVIDER,
            Protocol::JsonRpc,
            "bus.register",
            r#"{"names":["j.m"]}"#,
        ),
        (
            MCP1_PROVIDER,
            Protocol::Mcp1,
            "bus.register",
            r#"{"names":["m.m"]}"#,
        ),
        (
            JSON_SUBSCRIBER,
            Protocol::JsonRpc,
            "bus.subscribe",
            r#"{"topics":["t"]}"#,
        ),
    ] {
        let params = Params::Json(json(params));
        methods::call(&mut bus, &caller(who, protocol), method, params, context)
            .expect("the set-up succeeds");
    }
    bus
}

/// JSON text as a JSON-RPC frame must carry it: CR and LF as spaces.
fn one_line(text: &[u8]) -> Vec<u8> {
    text.iter()
        .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
        .collect()
}

/// A frame for a JSON-RPC peer is one line: one LF, last, and no CR.
fn assert_one_line(frame: &[u8], what: &str) {
    assert_eq!(frame.last(), Some(&b'\n'), "{what}: no final LF: {frame:?}");
    let body = &frame[..frame.len() - 1];
    assert!(
        !body.contains(&b'\n') && !body.contains(&b'\r'),
        "{what}: a line break inside the frame: {:?}",
        String::from_utf8_lossy(frame)
    );
}

/// Parses a JSON-RPC frame and, when the original parses too, checks that
/// the member at `pointer` is the same value.
/// (A value serde_json cannot build, such as `1e999` or a lone surrogate
/// escape, is still JSON the daemon passes on; the exact bytes cover it.)
fn assert_same_value(frame: &[u8], pointer: &str, original: &[u8], what: &str) {
    let Ok(value) = serde_json::from_slice::<Value>(original) else {
        return;
    };
    let parsed: Value = serde_json::from_slice(frame).unwrap_or_else(|e| {
        panic!(
            "{what}: the frame is not JSON ({e}): {:?}",
            String::from_utf8_lossy(frame)
        )
    });
    assert_eq!(parsed.pointer(pointer), Some(&value), "{what}");
}

/// The frames in the outbox, by recipient.
fn take_frames(bus: &mut Bus) -> Vec<(ConnRef, Vec<u8>)> {
    let (list, arena) = bus.take_outbox();
    let frames = list
        .iter()
        .map(|d| match d {
            Delivery::Frame { to, frame }
            | Delivery::Evict { to, frame }
            | Delivery::Answer { to, frame, .. } => (*to, arena[frame.clone()].to_vec()),
        })
        .collect();
    bus.return_outbox(list, arena);
    frames
}

/// The value as the daemon reads it, without the whitespace around it.
fn trimmed(body: &[u8]) -> Option<&[u8]> {
    mcp1::parse_json_body(body)
        .ok()
        .map(|raw| raw.get().as_bytes())
}

fuzz_target!(|body: &[u8]| {
    let context = Context::new(Router::new(), Arc::new(Stats::new(1)));
    let mut bus = bus(&context);
    let value = trimmed(body);

    // 1. An MCP1 provider answers a JSON-RPC caller with `body`.
    let reply = ReplyTo::JsonRpc {
        id: Some(json(r#""c""#).to_owned()),
        batch: None,
    };
    let jcaller = caller(JSON_CALLER, Protocol::JsonRpc);
    bus.forward(&jcaller, Some(reply), MCP1_PROVIDER, "m.m", Params::None, std::time::Instant::now())
        .expect("forwarded");
    let [(to, request)] = take_frames(&mut bus).try_into().expect("one request");
    assert_eq!(to, MCP1_PROVIDER);
    let id = u32::from_le_bytes(request[8..12].try_into().expect("4 bytes"));
    let header = Header {
        kind: Kind::Response,
        flags: 0,
        id,
        length: body.len() as u32,
    };
    bus.answer(MCP1_PROVIDER, Some(id), Outcome::from_mcp1(&header, body));
    let [(to, answer)] = take_frames(&mut bus).try_into().expect("one answer");
    assert_eq!(to, JSON_CALLER);
    assert_one_line(&answer, "answer");
    match value {
        Some(value) => {
            let mut want = br#"{"jsonrpc":"2.0","result":"#.to_vec();
            want.extend_from_slice(&one_line(value));
            want.extend_from_slice(b",\"id\":\"c\"}\n");
            assert_eq!(answer, want, "answer");
            assert_same_value(&answer, "/result", value, "answer");
        }
        None => {
            let parsed: Value = serde_json::from_slice(&answer).expect("an error line");
            assert_eq!(parsed["error"]["code"], -32603, "{parsed}");
        }
    }

    // 2. An MCP1 caller's params go to a JSON-RPC provider.
    let mut frame = Vec::new();
    mcp1::write_call(&mut frame, Some(7), "j.m", body, false);
    let header = match mcp1::check(&frame[..HEADER_LEN], frame.len(), usize::MAX) {
        mcp1::Next::Frame(header) => header,
        other => panic!("write_call wrote no frame: {other:?}"),
    };
    let mcaller = caller(MCP1_CALLER, Protocol::Mcp1);
    match mcp1::parse_request(&header, &frame[HEADER_LEN..]) {
        Err(error) => {
            assert!(value.is_none(), "{error:?}");
            assert_eq!(error.code, -32700);
        }
        Ok(request) => {
            for call in [true, false] {
                let reply = call.then_some(ReplyTo::Mcp1 { id: Some(7) });
                let sent = bus.forward(&mcaller, reply, JSON_PROVIDER, "j.m", request.params, std::time::Instant::now());
                let structured = matches!(value.and_then(|v| v.first()), Some(b'[' | b'{'));
                if !structured && !body.is_empty() {
                    assert_eq!(sent.map_err(|e| e.code), Err(-32602));
                    continue;
                }
                sent.expect("forwarded");
                let [(to, line)] = take_frames(&mut bus).try_into().expect("one request");
                assert_eq!(to, JSON_PROVIDER);
                assert_one_line(&line, "forwarded params");
                let mut want = br#"{"jsonrpc":"2.0","#.to_vec();
                if call {
                    // The id the daemon assigned: the digits after `"id":`.
                    let digits = line[want.len() + 5..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    let id = &line[want.len()..want.len() + 5 + digits];
                    want.extend_from_slice(id);
                    want.push(b',');
                }
                want.extend_from_slice(br#""method":"j.m""#);
                if let Some(value) = value {
                    want.extend_from_slice(b",\"params\":");
                    want.extend_from_slice(&one_line(value));
                }
                want.extend_from_slice(b"}\n");
                assert_eq!(line, want, "forwarded params");
                if let Some(value) = value {
                    assert_same_value(&line, "/params", value, "forwarded params");
                }
            }
        }
    }

    // 3. An MCP1 publisher's event data reaches a JSON-RPC subscriber.
    let mut params = br#"{"topic":"t","data":"#.to_vec();
    params.extend_from_slice(body);
    params.push(b'}');
    let published = mcp1::parse_json_body(&params)
        .map_err(|e| e.code)
        .and_then(|raw| {
            methods::call(
                &mut bus,
                &mcaller,
                "bus.publish",
                Params::Json(raw),
                &context,
            )
            .map_err(|e| e.code)
        });
    let mut events = Vec::new();
    while let Some(frame) = bus.pop_event(JSON_SUBSCRIBER) {
        events.extend_from_slice(&frame.head);
        if let Some((shared, from)) = &frame.shared {
            events.extend_from_slice(&shared.bytes()[*from..]);
        }
    }
    if value.is_some() {
        assert_eq!(published, Ok(serde_json::json!({"subscribers": 1})));
    }
    if published.is_ok() {
        assert_one_line(&events, "event");
        // A body that is no value alone may still complete the object
        // (`1,"x":2` is refused, `1 ` is not): check what was published.
        let prefix = br#"{"jsonrpc":"2.0","method":"bus.event","params":{"topic":"t","data":"#;
        assert!(events.starts_with(prefix), "{events:?}");
    } else {
        assert!(events.is_empty());
    }
    if let Some(value) = value {
        let mut want =
            br#"{"jsonrpc":"2.0","method":"bus.event","params":{"topic":"t","data":"#.to_vec();
        want.extend_from_slice(&one_line(value));
        want.extend_from_slice(b"}}\n");
        assert_eq!(events, want, "event");
        assert_same_value(&events, "/params/data", value, "event");
    }
});
