//! Bad input, limits and vanishing clients: each case gets a clear error or
//! a clean close, and a healthy client on the same daemon sees nothing.

mod common;

use std::time::{Duration, Instant};

use common::{PATIENCE, Raw, TestServer, assert_healthy, start, start_with};
use junction::client::{Client, Endpoint};
use serde_json::{Value, json};

/// Polls rpc.stats until `done` holds (a hang guard, not a timing assertion).
fn wait_for_stats(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = server.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "stats never showed {what}: {stats}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn transport_key(endpoint: &Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Unix(_) => "unix",
        Endpoint::Tcp(_) => "tcp",
    }
}

#[test]
fn an_unknown_protocol_gets_one_line_then_a_close() {
    let server = start();
    for endpoint in server.endpoints() {
        for garbage in [
            &b"BREW / HTCPCP/1.0\r\nHost: x\r\n\r\n"[..], // HTTP methods are a protocol now
            b"PING\r\n",
            b"\x16\x03\x01\x02\x00",
            b"MCP2....",
        ] {
            let mut raw = Raw::connect(&endpoint);
            raw.send(garbage);
            let line = raw.line().expect("an explanation before the close");
            assert!(
                line.contains("JSON-RPC 2.0") && line.contains("MCP1"),
                "{line}"
            );
            assert!(raw.is_closed(), "{endpoint}: closed after the explanation");
        }
    }
    let stats = server.stats();
    assert_eq!(stats["connections"]["sniff_rejected"], 8);
    assert_healthy(&server);
}

#[test]
fn leading_whitespace_is_allowed_before_json_but_not_forever() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(b"\r\n \t\n{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n\n\n");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":2}\n");
        assert_eq!(raw.json()["id"], 1);
        assert_eq!(raw.json()["id"], 2, "blank lines are skipped");
        let mut spaces = Raw::connect(&endpoint);
        spaces.send(&[b' '; 200]);
        assert!(
            spaces
                .line()
                .is_some_and(|l| l.contains("unrecognised protocol"))
        );
    }
}

#[test]
fn a_client_that_sends_too_little_is_closed_after_the_sniff_timeout() {
    let server = start_with(|c| c.sniff_timeout = Duration::from_millis(200));
    for endpoint in server.endpoints() {
        let mut silent = Raw::connect(&endpoint);
        let mut partial = Raw::connect(&endpoint);
        partial.send(b"MC");
        assert!(silent.is_closed(), "{endpoint}: silent client closed");
        assert!(partial.is_closed(), "{endpoint}: 2-byte client closed");
    }
    wait_for_stats(&server, "two sniff timeouts per transport", |s| {
        s["connections"]["sniff_timeouts"] == 4
    });
    // A connection that was sniffed is not subject to it.
    for endpoint in server.endpoints() {
        let mut client = server.client(&endpoint);
        client.call("rpc.ping", None).expect("ping");
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(client.call("rpc.ping", None).expect("still open"), "pong");
    }
}

#[test]
fn an_oversized_line_gets_an_error_and_a_close() {
    let server = start_with(|c| c.max_frame = 1024);
    for endpoint in server.endpoints() {
        // Exactly at the limit is fine.
        let mut raw = Raw::connect(&endpoint);
        let prefix = r#"{"jsonrpc":"2.0","method":"rpc.echo","id":1,"params":[""#;
        let suffix = r#""]}"#;
        let fill = "x".repeat(1024 - prefix.len() - suffix.len());
        raw.send(format!("{prefix}{fill}{suffix}\n").as_bytes());
        assert_eq!(
            raw.json()["result"][0].as_str().map(str::len),
            Some(fill.len())
        );
        // One byte more, and no newline ever: the error comes anyway.
        let mut big = Raw::connect(&endpoint);
        let _ = big.send_lossy(format!("{prefix}{fill}x{suffix}").as_bytes());
        let _ = big.send_lossy(&vec![b'y'; 100_000]);
        let answer = big.json();
        assert_eq!(answer["error"]["code"], -32001, "{endpoint}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("1024 bytes"))
        );
        assert_eq!(answer["id"], Value::Null);
        assert!(big.is_closed());
    }
    assert_healthy(&server);
}

#[test]
fn frames_split_into_single_bytes_and_wrapping_the_ring_are_whole() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        for byte in
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"slow\"],\"id\":1}\n"
        {
            raw.send(&[*byte]);
        }
        assert_eq!(raw.json()["result"], json!(["slow"]));
        // Lines of many sizes, pipelined (1.5 MB in all, under max-output, since
        // this client reads only after sending), so that frames wrap the ring's end.
        let mut client = server.client(&endpoint);
        let sizes: Vec<usize> = (0..300).map(|i| (i * 7919) % 10_000).collect();
        let ids: Vec<u64> = sizes
            .iter()
            .map(|n| {
                client
                    .send("rpc.echo", Some(json!(["z".repeat(*n)])))
                    .expect("send")
            })
            .collect();
        client.flush().expect("flush");
        for (id, n) in ids.iter().zip(&sizes) {
            let response = client.wait(*id).expect("response");
            let value = response.result.expect("ok").into_json().expect("json");
            let text = value[0].as_str().map(str::len);
            assert_eq!(text, Some(*n), "{endpoint}: id {id}");
        }
    }
}

#[test]
fn hostile_json_gets_parse_errors_and_the_connection_lives() {
    let server = start();
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let cases: Vec<(Vec<u8>, i64)> = vec![
        (deep.into_bytes(), 0),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1,\"x\":\"\xff\xfe\"}".to_vec(),
            -32700,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc\xc0\xaf\",\"id\":1}".to_vec(),
            -32700,
        ),
        (b"{\x00\x01\x02}".to_vec(), -32700),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1,\"id\":2}".to_vec(),
            -32600,
        ),
        (
            b"{\"jsonrpc\":2.0,\"method\":\"rpc.ping\",\"id\":1}".to_vec(),
            -32600,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":null,\"id\":1}".to_vec(),
            -32600,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":null,\"id\":1}".to_vec(),
            -32600,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":true}".to_vec(),
            -32600,
        ),
        (
            b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\"".to_vec(),
            -32700,
        ),
        (b"\"just a string\"".to_vec(), -32600),
        (b"[[],[[]],{}]".to_vec(), 0),
        (b"[\"2.0\",\"rpc.ping\",null,1]".to_vec(), 0),
    ];
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        for (input, code) in &cases {
            raw.send(input);
            raw.send(b"\n");
            let answer = raw.json();
            let what = String::from_utf8_lossy(&input[..input.len().min(60)]).into_owned();
            if *code == 0 {
                let entries = answer.as_array().expect("batch answer");
                assert!(
                    entries.iter().all(|e| e["error"]["code"] == -32600),
                    "{what}: {answer}"
                );
            } else {
                assert_eq!(
                    answer["error"]["code"], *code,
                    "{endpoint} {what}: {answer}"
                );
            }
        }
        // Numbers are valid JSON by grammar whatever their range: ids come back verbatim.
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1e999999}\n");
        assert_eq!(
            raw.line().as_deref(),
            Some(r#"{"jsonrpc":"2.0","result":"pong","id":1e999999}"#)
        );
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":\"alive\"}\n");
        assert_eq!(raw.json()["id"], "alive");
        // Deep params are carried as raw text: echoed intact, refused by a typed handler.
        let deep = "[".repeat(50_000) + &"]".repeat(50_000);
        raw.send(
            format!("{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":{deep},\"id\":1}}\n")
                .as_bytes(),
        );
        let line = raw.line().expect("echo line");
        assert!(line.contains(&deep), "deep params echoed unchanged");
        raw.send(
            format!("{{\"jsonrpc\":\"2.0\",\"method\":\"test.add\",\"params\":{deep},\"id\":2}}\n")
                .as_bytes(),
        );
        assert_eq!(raw.json()["error"]["code"], -32602);
    }
    assert_healthy(&server);
}

#[test]
fn an_invalid_notification_is_still_answered_with_id_null() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":7}\n");
        let answer = raw.json();
        assert_eq!(answer["error"]["code"], -32600);
        assert_eq!(answer["id"], Value::Null);
    }
}

#[test]
fn responses_sent_to_the_daemon_are_counted_and_dropped() {
    let server = start();
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(b"{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":5}\n{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1,\"message\":\"m\"},\"id\":6}\n");
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":7}\n");
        assert_eq!(raw.json()["id"], 7, "nothing answered the responses");
    }
    // They answer no call the bus forwarded to this connection.
    assert_eq!(server.stats()["bus"]["late_answers"], 4);
}

#[test]
fn vanishing_clients_leave_nothing_behind() {
    let server = start();
    for endpoint in server.endpoints() {
        let key = transport_key(&endpoint);
        {
            let mut mid_frame = Raw::connect(&endpoint);
            mid_frame.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ec");
            let mut mid_job = Raw::connect(&endpoint);
            mid_job.send(
                b"{\"jsonrpc\":\"2.0\",\"method\":\"test.sleep\",\"params\":[100],\"id\":1}\n",
            );
            let mut mid_batch = Raw::connect(&endpoint);
            mid_batch.send(b"[{\"jsonrpc\":\"2.0\",\"method\":\"test.sleep\",\"params\":[100],\"id\":1},{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":2}]\n");
            let mut mid_response = Raw::connect(&endpoint);
            // Answers far larger than socket buffers, never read.
            for _ in 0..40 {
                mid_response.send(format!("{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"{}\"],\"id\":1}}\n", "q".repeat(60_000)).as_bytes());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let pointer = format!("/connections/{key}/current");
        // Only the stats client itself may remain (on unix).
        let expected = if key == "unix" { 1 } else { 0 };
        wait_for_stats(&server, "all connections gone", |s| {
            s.pointer(&pointer) == Some(&json!(expected))
        });
    }
    assert_healthy(&server);
}

#[test]
fn one_connection_over_the_limit_is_told_and_closed() {
    // One observer stays connected the whole time, so no connection of the
    // test itself is ever on its way out (a closing one still holds its slot
    // until the daemon sees it go) when the limit is probed.
    let server = start_with(|c| c.max_connections = 4);
    let mut observer = server.client(&server.endpoints()[0]);
    for endpoint in server.endpoints() {
        wait_until_only(&mut observer, &server);
        let mut held: Vec<_> = (0..3).map(|_| server.client(&endpoint)).collect();
        for client in &mut held {
            client.call("rpc.ping", None).expect("within the limit");
        }
        let mut extra = Raw::connect(&endpoint);
        let answer = extra.json();
        assert_eq!(answer["error"]["code"], -32002, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("at most 4"))
        );
        assert!(extra.is_closed());
        // The held ones are unaffected.
        for client in &mut held {
            assert_eq!(client.call("rpc.ping", None).expect("still served"), "pong");
        }
        drop(held);
    }
    wait_until_only(&mut observer, &server);
}

/// Waits until the observer's is the only connection the daemon holds.
fn wait_until_only(observer: &mut Client, server: &TestServer) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = observer.call("rpc.stats", None).expect("stats");
        let current = |t: &str| stats["connections"][t]["current"].as_u64();
        if current("unix").zip(current("tcp")) == Some((1, 0)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: connections never freed",
            server.dir.path().display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_oversized_last_line_at_eof_is_answered_not_dropped() {
    let server = start_with(|c| c.max_frame = 1024);
    for endpoint in server.endpoints() {
        let mut raw = Raw::connect(&endpoint);
        raw.send(
            format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"{}\"],\"id\":1}}",
                "e".repeat(1010)
            )
            .as_bytes(),
        );
        raw.shutdown_write();
        let answer = raw.json();
        assert_eq!(answer["error"]["code"], -32001, "{endpoint}: {answer}");
        assert!(raw.is_closed());
    }
}
