//! MCP1 over both transports: every feature JSON-RPC has, plus raw bodies,
//! pings and the frame errors of proto/mcp1.md.

mod common;

use std::collections::HashSet;

use common::{
    PATIENCE, Raw, TestServer, assert_healthy, assert_healthy_mcp1, mcp1_call, mcp1_frame,
    mcp1_request, start, start_with,
};
use junction::Protocol;
use junction::client::{BatchEntry, Body, Client, Endpoint};
use serde_json::{Value, json};

const RESPONSE: u8 = 2;
const ERROR: u8 = 4;
const PONG: u8 = 7;

fn client(endpoint: &Endpoint) -> Client {
    let mut client = Client::connect_with(endpoint, Protocol::Mcp1).expect("connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    client
}

#[test]
fn calls_answer_json_and_raw_bodies_with_their_ids() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(&mcp1_request(1, "rpc.ping", b"", false));
        let pong = raw.frame();
        assert_eq!((pong.kind, pong.id, pong.flags), (RESPONSE, 1, 0));
        assert_eq!(pong.payload, b"\"pong\"");
        raw.send(&mcp1_request(2, "rpc.echo", b"[1,2]", false));
        assert_eq!(raw.frame().payload, b"[1,2]");
        raw.send(&mcp1_request(3, "rpc.echo", b"\x00\xffraw\n", true));
        let echoed = raw.frame();
        assert_eq!((echoed.flags, echoed.id), (1, 3), "raw answers carry RAW");
        assert_eq!(echoed.payload, b"\x00\xffraw\n");
        raw.send(&mcp1_request(u32::MAX, "rpc.echo", b"", false));
        let empty = raw.frame();
        assert_eq!(
            (empty.id, empty.payload.as_slice()),
            (u32::MAX, &b"null"[..])
        );
        raw.send(&mcp1_request(5, "rpc.echo", b" \"hi\" \n", false));
        assert_eq!(
            raw.frame().payload,
            b"\"hi\"",
            "any JSON value, whitespace trimmed"
        );
    }
}

#[test]
fn errors_keep_the_connection_and_carry_the_request_id() {
    let server = start();
    let cases: Vec<(Vec<u8>, u32, i32, &str)> = vec![
        (mcp1_request(10, "nope", b"", false), 10, -32601, "nope"),
        (
            mcp1_request(11, "test.add", b"[\"a\",1]", false),
            11,
            -32602,
            "Invalid params",
        ),
        (
            mcp1_request(12, "test.add", b"\x01\x02", true),
            12,
            -32602,
            "raw bytes",
        ),
        (
            mcp1_request(13, "test.panic", b"", false),
            13,
            -32603,
            "panicked",
        ),
        (
            mcp1_request(14, "test.panic_pooled", b"", false),
            14,
            -32603,
            "panicked",
        ),
        (
            mcp1_request(15, "test.fail", b"", false),
            15,
            4711,
            "on purpose",
        ),
        (
            mcp1_request(16, "rpc.echo", b"[1,", false),
            16,
            -32700,
            "Parse error",
        ),
        (
            mcp1_request(17, "rpc.echo", b"\"\xff\"", false),
            17,
            -32700,
            "UTF-8",
        ),
        (mcp1_request(0, "rpc.ping", b"", false), 0, -32600, "id 0"),
        (mcp1_frame(1, 1, 0, 18, &[0, 0]), 18, -32600, "method_len 0"),
        (
            mcp1_frame(1, 1, 0, 19, &[9, 0, b'x']),
            19,
            -32600,
            "past the payload",
        ),
        (mcp1_frame(1, 1, 0, 20, &[1]), 20, -32600, "too short"),
        (
            mcp1_frame(1, 1, 0, 21, &mcp1_call(&"m".repeat(256), b"")),
            21,
            -32600,
            "method_len 256",
        ),
        (
            mcp1_frame(1, 1, 0, 22, &[2, 0, b'a', 0xff]),
            22,
            -32600,
            "UTF-8",
        ),
        (mcp1_frame(1, 9, 0, 23, b"skip me"), 23, -32013, "0x09"),
        (mcp1_frame(1, 5, 0, 24, b""), 24, -32013, "0x05"),
        (
            mcp1_frame(1, 1, 2, 25, &mcp1_call("rpc.ping", b"")),
            25,
            -32012,
            "0x0002",
        ),
        (mcp1_frame(1, 6, 1, 26, b"x"), 26, -32012, "0x0001"),
        (
            mcp1_frame(1, 3, 0, 0, &mcp1_call("rpc.echo", b"{")),
            0,
            -32700,
            "Parse error",
        ),
    ];
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        for (bytes, id, code, needle) in &cases {
            raw.send(bytes);
            let frame = raw.frame();
            assert_eq!(
                (frame.kind, frame.id),
                (ERROR, *id),
                "{endpoint} case {needle}"
            );
            let (got, message) = frame.error();
            assert_eq!(got, *code, "{endpoint} {needle}: {message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        raw.send(&mcp1_request(99, "rpc.ping", b"", false));
        assert_eq!(
            raw.frame().id,
            99,
            "{endpoint}: still usable after every error"
        );
    }
    let failed = client(&server.endpoints()[0])
        .call("test.fail", None)
        .unwrap_err();
    let junction::ClientError::Rpc(error) = failed else {
        panic!("rpc error expected")
    };
    assert_eq!(
        error.data,
        Some(json!({"why": "test"})),
        "error data travels"
    );
    assert_healthy(&server);
}

#[test]
fn fatal_frame_errors_answer_then_close() {
    let server = start_with(|c| c.max_frame = 4096);
    let good = mcp1_request(1, "rpc.ping", b"", false);
    let cases: Vec<(Vec<u8>, u32, i32)> = vec![
        (
            b"MCP2\x01\x01\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            0,
            -32010,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n".to_vec(),
            0,
            -32010,
        ),
        (
            mcp1_frame(2, 1, 0, 7, &mcp1_call("rpc.ping", b"")),
            7,
            -32011,
        ),
        (mcp1_frame(0, 1, 0, 8, b""), 8, -32011),
        (
            [
                &b"MCP1\x01\x01\x00\x00\x09\x00\x00\x00"[..],
                &4097u32.to_le_bytes(),
            ]
            .concat(),
            9,
            -32001,
        ),
        (
            [
                &b"MCP1\x01\x01\x00\x00\x0a\x00\x00\x00"[..],
                &u32::MAX.to_le_bytes(),
            ]
            .concat(),
            10,
            -32001,
        ),
    ];
    for endpoint in server.endpoints() {
        for (bad, id, code) in &cases {
            let mut raw = Raw::connect(&endpoint);
            // A good frame first, so the bad one is a later frame.
            raw.send(&good);
            assert_eq!(raw.frame().kind, RESPONSE);
            let _ = raw.send_lossy(bad);
            let frame = raw.frame();
            assert_eq!(
                (frame.kind, frame.id, frame.error().0),
                (ERROR, *id, *code),
                "{endpoint} {}",
                frame.error().1
            );
            assert!(frame.error().1.contains("closing"));
            assert!(raw.is_closed(), "{endpoint}: closed after {code}");
        }
    }
    assert_healthy_mcp1(&server);
    assert_healthy(&server);
}

#[test]
fn a_frame_cut_short_by_the_peer_is_reported_then_closed() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        let whole = mcp1_request(42, "rpc.echo", b"[1,2,3]", false);
        raw.send(&whole[..whole.len() - 3]);
        raw.shutdown_write();
        let frame = raw.frame();
        assert_eq!((frame.kind, frame.id), (ERROR, 42));
        let (code, message) = frame.error();
        assert_eq!(code, -32014);
        assert!(
            message.contains(&format!(
                "after {} bytes of {} bytes",
                whole.len() - 3,
                whole.len()
            )),
            "{message}"
        );
        assert!(raw.is_closed());

        let mut header_only = Raw::connect(&endpoint);
        header_only.send(b"MCP1\x01\x01");
        header_only.shutdown_write();
        let frame = header_only.frame();
        assert_eq!((frame.id, frame.error().0), (0, -32014));
    }
    assert_healthy_mcp1(&server);
}

#[test]
fn notifications_pings_and_unsolicited_frames() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(&mcp1_frame(1, 3, 0, 0, &mcp1_call("rpc.ping", b"")));
        raw.send(&mcp1_frame(1, 3, 0, 0, &mcp1_call("nope", b"")));
        raw.send(&mcp1_frame(1, 3, 0, 0, &mcp1_call("test.sleep", b"[1]")));
        raw.send(&mcp1_frame(1, 2, 0, 5, b"1"));
        raw.send(&mcp1_frame(1, 7, 0, 5, b""));
        raw.send(&mcp1_frame(1, 6, 0, 77, b"heartbeat"));
        let pong = raw.frame();
        assert_eq!(
            (pong.kind, pong.id, pong.payload.as_slice()),
            (PONG, 77, &b"heartbeat"[..]),
            "{endpoint}"
        );
        let mut c = client(&endpoint);
        assert_eq!(c.ping(b"").expect("ping"), b"");
        assert_eq!(c.ping(&[7u8; 3000]).expect("ping"), vec![7u8; 3000]);
    }
    let stats = server.stats();
    // A PONG to the daemon is an error; a RESPONSE answers no call the bus forwarded.
    assert!(
        stats["protocols"]["mcp1"]["errors"].as_u64() >= Some(2),
        "{stats}"
    );
    assert_eq!(stats["bus"]["late_answers"], 2, "{stats}");
    assert!(
        stats["protocols"]["mcp1"]["frames"].as_u64() >= Some(12),
        "{stats}"
    );
    assert!(
        stats["protocols"]["mcp1"]["connections"].as_u64() >= Some(4),
        "{stats}"
    );
}

#[test]
fn pipelined_calls_complete_out_of_order_and_all_match() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut c = client(&endpoint);
        let slow = c.send("test.sleep", Some(json!([200]))).expect("send");
        let fast = c.send("rpc.ping", None).expect("send");
        c.flush().expect("flush");
        assert_eq!(
            c.recv().expect("first").id,
            json!(fast),
            "{endpoint}: inline overtakes pooled"
        );
        assert_eq!(c.recv().expect("second").id, json!(slow));
        // Raw bodies of many sizes, pipelined (1.5 MB in all, under max-output,
        // since this client reads only after sending): payloads wrap the ring's end.
        let sizes: Vec<usize> = (0..300).map(|i| (i * 7919) % 10_000).collect();
        let ids: Vec<(u64, Vec<u8>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let body: Vec<u8> = (0..*n).map(|j| (i + j) as u8).collect();
                let method = if i % 3 == 0 {
                    "test.echo_pooled"
                } else {
                    "rpc.echo"
                };
                (
                    c.send_body(method, Some(Body::Raw(body.clone())))
                        .expect("send"),
                    body,
                )
            })
            .collect();
        c.flush().expect("flush");
        let mut seen = HashSet::new();
        for _ in 0..ids.len() {
            let response = c.recv().expect("response");
            let id = response.id.as_u64().expect("id");
            assert!(seen.insert(id));
            let (_, body) = ids.iter().find(|(i, _)| *i == id).expect("known id");
            assert_eq!(
                response.result,
                Ok(Body::Raw(body.clone())),
                "{endpoint} id {id}"
            );
        }
    }
}

#[test]
fn frames_split_into_single_bytes_are_whole() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        for byte in mcp1_request(3, "rpc.echo", b"{\"slow\":true}", false) {
            raw.send(&[byte]);
        }
        let frame = raw.frame();
        assert_eq!((frame.id, frame.json()), (3, json!({"slow": true})));
    }
}

#[test]
fn the_client_library_speaks_every_feature_over_mcp1() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut c = client(&endpoint);
        assert_eq!(c.call("test.add", Some(json!([40, 2]))).expect("add"), 42);
        assert_eq!(c.call("rpc.echo", Some(json!("hi"))).expect("echo"), "hi");
        assert_eq!(
            c.call_body("rpc.echo", Some(Body::Raw(b"\x00raw".to_vec())))
                .expect("raw"),
            Body::Raw(b"\x00raw".to_vec())
        );
        c.notify("rpc.ping", None).expect("notify");
        let results = c
            .batch(&[
                BatchEntry {
                    method: "test.add".into(),
                    params: Some(json!([1, 1])),
                    notification: false,
                },
                BatchEntry {
                    method: "rpc.ping".into(),
                    params: None,
                    notification: true,
                },
                BatchEntry {
                    method: "nope".into(),
                    params: None,
                    notification: false,
                },
            ])
            .expect("pipelined batch");
        assert_eq!(results[0], Ok(json!(2)));
        assert_eq!(results[1].as_ref().map_err(|e| e.code), Err(-32601));
        let methods = c.call("rpc.methods", None).expect("methods");
        assert!(methods.as_array().is_some_and(|m| m.len() >= 4));
        let stats = c.call("rpc.stats", None).expect("stats");
        assert!(stats["protocols"]["mcp1"]["frames"].as_u64() >= Some(5));
    }
    // JSON-RPC cannot carry raw bodies: the client says so, and the daemon
    // refuses a raw result to a JSON-RPC caller (see tests/jsonrpc.rs).
    let mut json_client = server.client(&server.endpoints()[0]);
    assert!(
        json_client
            .call_body("rpc.echo", Some(Body::Raw(vec![1])))
            .is_err()
    );
}

#[test]
fn an_oversized_frame_closes_only_its_own_connection() {
    let server: TestServer = start_with(|c| c.max_frame = 1024);
    for endpoint in server.endpoints() {
        let mut bystander = client(&endpoint);
        let mut big = Raw::connect(&endpoint);
        let _ = big.send_lossy(&mcp1_request(1, "rpc.echo", &vec![b'x'; 2000], true));
        let frame = big.frame();
        assert_eq!(frame.error().0, -32001);
        assert!(big.is_closed());
        let fits = vec![b'y'; 1024 - 2 - "rpc.echo".len()];
        assert_eq!(
            bystander
                .call_body("rpc.echo", Some(Body::Raw(fits.clone())))
                .expect("at the limit"),
            Body::Raw(fits)
        );
    }
    let value: Value = server.stats();
    assert!(value["protocols"]["mcp1"]["errors"].as_u64() >= Some(2));
}

#[test]
fn a_payload_exactly_at_any_limit_fits() {
    // Limits just under a power of two once left no room for the header.
    for limit in [65_530usize, 65_535, 4_081] {
        let server = start_with(|c| c.max_frame = limit);
        for endpoint in server.endpoints() {
            let mut raw = Raw::connect(&endpoint);
            let body = vec![b'z'; limit - 2 - "rpc.echo".len()];
            raw.send(&mcp1_request(1, "rpc.echo", &body, true));
            let frame = raw.frame();
            assert_eq!(
                (frame.kind, frame.payload.len()),
                (RESPONSE, body.len()),
                "limit {limit} {endpoint}"
            );
        }
    }
}
