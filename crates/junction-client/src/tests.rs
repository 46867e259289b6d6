//! The client against a scripted daemon: one end of a socket pair plays
//! the daemon with the exact bytes of proto/bus.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Body, Client, ClientError, Event, ForwardedCall, Incoming};
use junction_proto::Protocol;
use junction_proto::RpcError;
use junction_proto::mcp1::{self, Kind};

fn pair(protocol: Protocol) -> (Client, UnixStream) {
    let (ours, daemon) = UnixStream::pair().expect("socket pair");
    daemon
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut client = Client::from_unix_stream(ours, protocol).expect("client");
    client
        .set_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    (client, daemon)
}

fn frame(kind: u8, flags: u16, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = b"MCP1\x01".to_vec();
    out.push(kind);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn call_payload(method: &str, body: &[u8]) -> Vec<u8> {
    let mut out = (method.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(body);
    out
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex"))
        .collect()
}

/// Reads one MCP1 frame the client wrote: (kind, flags, id, payload).
fn read_frame(daemon: &mut UnixStream) -> (u8, u16, u32, Vec<u8>) {
    let mut header = [0u8; 16];
    daemon.read_exact(&mut header).expect("header");
    let length = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    let mut payload = vec![0u8; length as usize];
    daemon.read_exact(&mut payload).expect("payload");
    let id = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    (
        header[5],
        u16::from_le_bytes([header[6], header[7]]),
        id,
        payload,
    )
}

#[test]
fn mcp1_cancel_frame_of_the_spec_is_a_cancel() {
    let (mut client, mut daemon) = pair(Protocol::Mcp1);
    // proto/bus.md section 3: cancel of call 9 after a timeout.
    daemon
        .write_all(&hex(
            "4d435031 01 05 0000 09000000 14000000 7b22726561736f6e223a2274696d656f7574227d",
        ))
        .expect("write");
    assert_eq!(
        client.next_message().expect("message"),
        Incoming::Cancel {
            id: 9,
            reason: "timeout".into()
        }
    );
}

#[test]
fn mcp1_forwarded_requests_keep_their_body_kind() {
    let (mut client, mut daemon) = pair(Protocol::Mcp1);
    let mut bytes = frame(1, 0, 7, &call_payload("editor.open", b"{\"path\":\"/x\"}"));
    bytes.extend(frame(1, 1, 8, &call_payload("editor.raw", b"\x00\xff")));
    bytes.extend(frame(1, 0, 9, &call_payload("editor.none", b"")));
    bytes.extend(frame(3, 0, 0, &call_payload("editor.note", b"5")));
    daemon.write_all(&bytes).expect("write");
    let expect = [
        Incoming::Request(ForwardedCall {
            id: 7,
            method: "editor.open".into(),
            params: Some(Body::Json(json!({"path": "/x"}))),
        }),
        Incoming::Request(ForwardedCall {
            id: 8,
            method: "editor.raw".into(),
            params: Some(Body::Raw(vec![0, 0xff])),
        }),
        Incoming::Request(ForwardedCall {
            id: 9,
            method: "editor.none".into(),
            params: None,
        }),
        Incoming::Notification {
            method: "editor.note".into(),
            params: Some(Body::Json(json!(5))),
        },
    ];
    for expected in expect {
        assert_eq!(client.next_message().expect("message"), expected);
    }
}

#[test]
fn mcp1_answers_are_response_and_error_frames() {
    let (mut client, mut daemon) = pair(Protocol::Mcp1);
    client
        .respond(7, Ok(Body::Json(json!([1, 2]))))
        .expect("respond");
    client
        .respond(8, Ok(Body::Raw(b"raw".to_vec())))
        .expect("respond");
    let error = RpcError::new(4711, "nope").data(json!({"why": 1}));
    client.respond(9, Err(error.clone())).expect("respond");
    assert_eq!(read_frame(&mut daemon), (2, 0, 7, b"[1,2]".to_vec()));
    assert_eq!(read_frame(&mut daemon), (2, 1, 8, b"raw".to_vec()));
    let (kind, _, id, payload) = read_frame(&mut daemon);
    assert_eq!((kind, id), (Kind::Error as u8, 9));
    let parsed = mcp1::parse_error_payload(&payload).expect("error payload");
    assert_eq!((parsed.code, parsed.message), (4711, "nope"));
    assert_eq!(parsed.data, Some(&b"{\"why\":1}"[..]));
}

#[test]
fn mcp1_events_are_events() {
    let (mut client, mut daemon) = pair(Protocol::Mcp1);
    let body = br#"{"topic":"build.done","data":{"ok":true},"dropped":3}"#;
    daemon
        .write_all(&frame(3, 0, 0, &call_payload("bus.event", body)))
        .expect("write");
    assert_eq!(
        client.next_message().expect("message"),
        Incoming::Event(Event {
            topic: "build.done".into(),
            data: json!({"ok": true}),
            dropped: Some(3),
        })
    );
}

#[test]
fn jsonrpc_requests_cancels_and_events() {
    let (mut client, mut daemon) = pair(Protocol::JsonRpc);
    daemon
        .write_all(
            concat!(
                r#"{"jsonrpc":"2.0","id":3,"method":"editor.open","params":{"p":1}}"#,
                "\n",
                r#"{"jsonrpc":"2.0","id":4,"method":"editor.bare"}"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"bus.cancel","params":{"id":3,"reason":"caller gone"}}"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"bus.event","params":{"topic":"t","data":null}}"#,
                "\n",
                r#"{"jsonrpc":"2.0","method":"editor.note"}"#,
                "\n",
            )
            .as_bytes(),
        )
        .expect("write");
    let expect = [
        Incoming::Request(ForwardedCall {
            id: 3,
            method: "editor.open".into(),
            params: Some(Body::Json(json!({"p": 1}))),
        }),
        Incoming::Request(ForwardedCall {
            id: 4,
            method: "editor.bare".into(),
            params: None,
        }),
        Incoming::Cancel {
            id: 3,
            reason: "caller gone".into(),
        },
        Incoming::Event(Event {
            topic: "t".into(),
            data: Value::Null,
            dropped: None,
        }),
        Incoming::Notification {
            method: "editor.note".into(),
            params: None,
        },
    ];
    for expected in expect {
        assert_eq!(client.next_message().expect("message"), expected);
    }
}

#[test]
fn jsonrpc_answers_carry_the_daemon_id() {
    let (mut client, daemon) = pair(Protocol::JsonRpc);
    client
        .respond(5, Ok(Body::Json(json!("ok"))))
        .expect("respond");
    client
        .respond(6, Err(RpcError::new(-32603, "broke")))
        .expect("respond");
    let err = client
        .respond(7, Ok(Body::Raw(vec![1])))
        .expect_err("raw over JSON-RPC");
    assert!(matches!(err, ClientError::Usage(_)), "{err}");
    let mut lines = BufReader::new(daemon).lines();
    let mut next = || -> Value {
        serde_json::from_str(&lines.next().expect("line").expect("read")).expect("json")
    };
    assert_eq!(next(), json!({"jsonrpc": "2.0", "result": "ok", "id": 5}));
    assert_eq!(
        next(),
        json!({"jsonrpc": "2.0", "error": {"code": -32603, "message": "broke"}, "id": 6})
    );
}

#[test]
fn a_call_keeps_what_the_daemon_sends_before_its_answer() {
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let (mut client, mut daemon) = pair(protocol);
        let script = std::thread::spawn(move || {
            // The client's call (id 1) comes first; answer it only after
            // a forwarded request, a cancel and an event.
            let mut answer = Vec::new();
            match protocol {
                Protocol::JsonRpc => {
                    let mut line = String::new();
                    BufReader::new(&daemon).read_line(&mut line).expect("call");
                    answer.extend_from_slice(
                        concat!(
                            r#"{"jsonrpc":"2.0","id":77,"method":"x.y","params":[1]}"#,
                            "\n",
                            r#"{"jsonrpc":"2.0","method":"bus.cancel","params":{"id":76,"reason":"timeout"}}"#,
                            "\n",
                            r#"{"jsonrpc":"2.0","method":"bus.event","params":{"topic":"t","data":2}}"#,
                            "\n",
                            r#"{"jsonrpc":"2.0","result":{"subscribers":4},"id":1}"#,
                            "\n"
                        )
                        .as_bytes(),
                    );
                }
                Protocol::Mcp1 => {
                    let (kind, _, id, _) = read_frame(&mut daemon);
                    assert_eq!((kind, id), (1, 1));
                    answer.extend(frame(1, 0, 77, &call_payload("x.y", b"[1]")));
                    answer.extend(frame(5, 0, 76, br#"{"reason":"timeout"}"#));
                    answer.extend(frame(
                        3,
                        0,
                        0,
                        &call_payload("bus.event", br#"{"topic":"t","data":2}"#),
                    ));
                    answer.extend(frame(2, 0, 1, br#"{"subscribers":4}"#));
                }
            }
            daemon.write_all(&answer).expect("write");
            daemon
        });
        assert_eq!(client.publish("t", json!(2)).expect("publish"), 4);
        let _daemon = script.join().expect("script");
        assert_eq!(
            client.next_message().expect("request"),
            Incoming::Request(ForwardedCall {
                id: 77,
                method: "x.y".into(),
                params: Some(Body::Json(json!([1]))),
            })
        );
        assert_eq!(
            client.next_message().expect("cancel"),
            Incoming::Cancel {
                id: 76,
                reason: "timeout".into()
            }
        );
        let Incoming::Event(event) = client.next_message().expect("event") else {
            panic!("expected the event");
        };
        assert_eq!(event.to_json(), json!({"topic": "t", "data": 2}));
        assert_eq!(event.to_line(), r#"{"topic":"t","data":2}"#);
        let dropped = Event {
            dropped: Some(3),
            ..event
        };
        assert_eq!(dropped.to_line(), r#"{"topic":"t","data":2,"dropped":3}"#);
        assert!(!client.has_pending_messages());
    }
}

#[test]
fn a_closed_daemon_is_closed() {
    let (mut client, daemon) = pair(Protocol::Mcp1);
    drop(daemon);
    assert!(matches!(
        client.next_message(),
        Err(ClientError::Closed(None))
    ));
}
