//! JSON-RPC 2.0 as the daemon speaks it, over both transports.

mod common;

use common::{Raw, start};
use junction::client::{BatchEntry, Body};
use serde_json::{Value, json};

#[test]
fn calls_answer_with_the_same_id_over_both_transports() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[1,2],\"id\":7}\n");
        assert_eq!(
            raw.line().as_deref(),
            Some(r#"{"jsonrpc":"2.0","result":[1,2],"id":7}"#)
        );
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":\"abc\"}\r\n");
        assert_eq!(
            raw.line().as_deref(),
            Some(r#"{"jsonrpc":"2.0","result":"pong","id":"abc"}"#)
        );
        // Ids are echoed byte for byte: null, negative, fractional, huge.
        for id in [
            "null",
            "-5",
            "1.5e3",
            "123456789012345678901234567890",
            "\"\\u00e9\"",
        ] {
            let line = format!("{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":{id}}}\n");
            raw.send(line.as_bytes());
            let expected = format!("{{\"jsonrpc\":\"2.0\",\"result\":\"pong\",\"id\":{id}}}");
            assert_eq!(raw.line(), Some(expected), "{endpoint} id {id}");
        }
    }
}

#[test]
fn notifications_get_no_response() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\"}\n");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"no.such.method\"}\n");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"test.sleep\",\"params\":[1]}\n");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"test.fail\"}\n");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n");
        // The first line back answers the call, not any of the notifications.
        assert_eq!(raw.json()["id"], 1, "{endpoint}");
    }
}

#[test]
fn error_codes_follow_the_spec() {
    let server = start();
    let cases: &[(&[u8], i64, &str)] = &[
        (b"{\"jsonrpc\":\"2.0\",\"method\":", -32700, "Parse error"),
        (b"not json at all", -32700, "Parse error"),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1} trailing",
            -32700,
            "trailing",
        ),
        (b"{\"method\":\"rpc.ping\",\"id\":1}", -32600, "jsonrpc"),
        (
            b"{\"jsonrpc\":\"1.0\",\"method\":\"rpc.ping\",\"id\":1}",
            -32600,
            "2.0",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":42,\"id\":1}",
            -32600,
            "method",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"id\":1}",
            -32600,
            "missing \"method\"",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":\"x\",\"id\":1}",
            -32600,
            "params",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":[1]}",
            -32600,
            "id",
        ),
        (b"17", -32600, "request object"),
        (b"[]", -32600, "empty batch"),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":1}",
            -32601,
            "nope",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"params\":[\"a\",2],\"id\":1}",
            -32602,
            "Invalid params",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"id\":1}",
            -32602,
            "Invalid params",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.panic\",\"id\":1}",
            -32603,
            "panicked",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.panic_pooled\",\"id\":1}",
            -32603,
            "panicked",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.raw\",\"id\":1}",
            -32003,
            "MCP1",
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"test.fail\",\"id\":1}",
            4711,
            "on purpose",
        ),
    ];
    for endpoint in server.endpoints() {
        // One connection for all cases: every error leaves it usable.
        let mut raw = Raw::connect(&endpoint);
        for (request, code, needle) in cases {
            raw.send(request);
            raw.send(b"\n");
            let response = raw.json();
            let what = String::from_utf8_lossy(request);
            assert_eq!(response["jsonrpc"], "2.0", "{what}");
            assert_eq!(response["error"]["code"], *code, "{what}: {response}");
            let message = response["error"]["message"].as_str().expect("message");
            assert!(
                message.contains(needle),
                "{what}: {message:?} lacks {needle:?}"
            );
            assert!(response.get("result").is_none(), "{what}");
        }
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":2}\n");
        assert_eq!(
            raw.json()["result"],
            "pong",
            "{endpoint}: usable after every error"
        );
    }
}

#[test]
fn errors_carry_the_request_id_when_it_is_valid() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":\"x1\"}\n");
        assert_eq!(raw.json()["id"], "x1");
        raw.send(b"{\"jsonrpc\":\"3\",\"method\":\"rpc.ping\",\"id\":9}\n");
        assert_eq!(
            raw.json()["id"],
            9,
            "invalid request with a valid id keeps it"
        );
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":{}}\n");
        assert_eq!(raw.json()["id"], Value::Null, "an invalid id becomes null");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"test.fail\",\"id\":3}\n");
        let failed = raw.json();
        assert_eq!(
            failed["error"]["data"],
            json!({"why": "test"}),
            "error data travels"
        );
        raw.send(b"{bad\n");
        assert_eq!(
            raw.json()["id"],
            Value::Null,
            "parse errors answer with id null"
        );
    }
}

#[test]
fn batches_answer_every_call_in_one_array() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(
            br#"[{"jsonrpc":"2.0","method":"rpc.ping","id":1},
                 {"jsonrpc":"2.0","method":"rpc.ping"},
                 {"jsonrpc":"2.0","method":"test.sleep","params":[30],"id":2},
                 {"jsonrpc":"2.0","method":"nope","id":3},
                 42,
                 {"jsonrpc":"2.0","method":"test.echo_pooled","params":{"a":1},"id":4}]"#
                .iter()
                .filter(|b| **b != b'\n')
                .copied()
                .collect::<Vec<u8>>()
                .as_slice(),
        );
        raw.send(b"\n");
        let Value::Array(items) = raw.json() else {
            panic!("batch answer is not an array")
        };
        assert_eq!(
            items.len(),
            5,
            "{endpoint}: 4 calls and one invalid entry, no notification"
        );
        let by_id = |id: Value| {
            items
                .iter()
                .find(|i| i["id"] == id)
                .cloned()
                .expect("present")
        };
        assert_eq!(by_id(json!(1))["result"], "pong");
        assert_eq!(by_id(json!(2))["result"], 30);
        assert_eq!(by_id(json!(3))["error"]["code"], -32601);
        assert_eq!(by_id(json!(4))["result"], json!({"a": 1}));
        assert_eq!(
            by_id(Value::Null)["error"]["code"],
            -32600,
            "the junk entry"
        );

        // A batch of notifications only gets nothing back.
        raw.send(b"[{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\"},{\"jsonrpc\":\"2.0\",\"method\":\"test.sleep\",\"params\":[1]}]\n");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":\"after\"}\n");
        assert_eq!(raw.json()["id"], "after");
        // A batch of junk answers an array of Invalid Requests.
        raw.send(b"[1,\"x\",null]\n");
        let junk = raw.json();
        let codes: Vec<&Value> = junk
            .as_array()
            .expect("array")
            .iter()
            .map(|e| &e["error"]["code"])
            .collect();
        assert_eq!(codes, vec![&json!(-32600); 3]);
        // A batch that is not even JSON is one parse error.
        raw.send(b"[{\"jsonrpc\":\"2.0\",\n");
        assert_eq!(raw.json()["error"]["code"], -32700);
    }
}

#[test]
fn oversized_batches_are_refused_whole() {
    let server = common::start_with(|c| c.max_batch = 3);
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        let entry = r#"{"jsonrpc":"2.0","method":"rpc.ping","id":1}"#;
        raw.send(format!("[{entry},{entry},{entry},{entry}]\n").as_bytes());
        let answer = raw.json();
        assert_eq!(answer["error"]["code"], -32600);
        assert!(
            answer["error"]["message"]
                .as_str()
                .expect("msg")
                .contains("limit of 3")
        );
        raw.send(format!("[{entry},{entry},{entry}]\n").as_bytes());
        assert_eq!(raw.json().as_array().map(Vec::len), Some(3));
    }
}

#[test]
fn inline_answers_overtake_slow_pooled_ones() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut client = server.client(&endpoint);
        let slow = client.send("test.sleep", Some(json!([300]))).expect("send");
        let fast = client.send("rpc.ping", None).expect("send");
        client.flush().expect("flush");
        // Out of order: the inline ping answers while the sleep is still running.
        let first = client.recv().expect("first");
        assert_eq!(first.id, json!(fast), "{endpoint}");
        let second = client.recv().expect("second");
        assert_eq!(second.id, json!(slow));
        assert_eq!(second.result, Ok(Body::Json(json!(300))));
    }
}

#[test]
fn the_client_library_does_calls_notifications_and_batches() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut client = server.client(&endpoint);
        assert_eq!(
            client.call("test.add", Some(json!([2, 40]))).expect("add"),
            42
        );
        client.notify("rpc.ping", None).expect("notify");
        let results = client
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
            .expect("batch");
        assert_eq!(results.len(), 2);
        assert_eq!(results[0], Ok(json!(2)));
        assert_eq!(results[1].as_ref().map_err(|e| e.code), Err(-32601));
        let err = client.call("nope", None).unwrap_err();
        assert!(err.to_string().contains("Method not found"), "{err}");
    }
}

#[test]
fn builtins_describe_the_daemon() {
    let server = start();
    let endpoints = server.endpoints();
    let mut unix = server.client(&endpoints[0]);
    let mut tcp = server.client(&endpoints[1]);
    tcp.call("rpc.ping", None).expect("tcp ping");
    let methods = unix.call("rpc.methods", None).expect("methods");
    let names: Vec<&str> = methods
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    for name in [
        "rpc.echo",
        "rpc.methods",
        "rpc.ping",
        "rpc.stats",
        "test.add",
        "test.sleep",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(
        methods
            .as_array()
            .expect("array")
            .iter()
            .all(|m| m["description"].as_str().is_some_and(|d| !d.is_empty()))
    );
    assert_eq!(
        unix.call("rpc.echo", None).expect("echo"),
        Value::Null,
        "no params echo null"
    );
    let stats = unix.call("rpc.stats", None).expect("stats");
    assert_eq!(stats["connections"]["unix"]["current"], 1);
    assert_eq!(stats["connections"]["tcp"]["current"], 1);
    assert!(stats["connections"]["tcp"]["total"].as_u64() >= Some(1));
    assert!(stats["protocols"]["jsonrpc"]["frames"].as_u64() >= Some(3));
    assert!(stats["bytes_in"].as_u64() > Some(0));
    assert!(stats["bytes_out"].as_u64() > Some(0));
    assert_eq!(stats["workers"], 2);
    assert!(stats["uptime_secs"].as_f64().is_some());
}

#[test]
fn a_last_line_without_newline_is_answered_at_eof() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"test.sleep\",\"params\":[50],\"id\":1}\n");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"end\"],\"id\":2}");
        raw.shutdown_write();
        let rest = String::from_utf8(raw.rest()).expect("utf8");
        let lines: Vec<Value> = rest
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(
            lines.len(),
            2,
            "{endpoint}: both answered before the close: {rest}"
        );
        assert!(lines.iter().any(|l| l["result"] == json!(["end"])));
        assert!(
            lines.iter().any(|l| l["result"] == json!(50)),
            "pooled answer waited for"
        );
    }
}
