//! `rpc.monitor` and `junction monitor` over real sockets, on the backend
//! under test: a monitor sees calls, answers and events from both
//! protocols on both transports, filtered by its patterns; only admins may
//! monitor; a monitor that never reads loses lines with a count while the
//! daemon keeps serving everyone else.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::bus_peer::{BusPeer, Msg, kinds};
use common::{Raw, start_with};
use junction::Protocol;
use serde_json::{Value, json};

/// The next monitor line (the `data` of a `bus.event` on rpc.monitor) and
/// the dropped count its notification carried.
fn next_line(monitor: &mut BusPeer) -> (Value, Option<u64>) {
    match monitor.read() {
        Msg::Notification { method, params } if method == "bus.event" => {
            let params = params.expect("event params");
            assert_eq!(params["topic"], "rpc.monitor", "{params}");
            (params["data"].clone(), params["dropped"].as_u64())
        }
        other => panic!("a monitor gets only its lines, got {other:?}"),
    }
}

/// Reads lines until one matches `want`; the lines before it are returned too.
fn until(monitor: &mut BusPeer, want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    for _ in 0..200 {
        let (line, _) = next_line(monitor);
        let found = want(&line);
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!("no matching monitor line in {seen:?}");
}

#[test]
fn a_monitor_sees_calls_answers_and_events_from_both_protocols() {
    let server = start_with(|_| {});
    for monitor_protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut monitor = BusPeer::connect(&server.endpoints()[0], monitor_protocol);
        let answer = monitor.call("rpc.monitor", json!({})).expect("monitor");
        assert_eq!(answer, json!({"monitoring": [], "topic": "rpc.monitor"}));
        for (endpoint, protocol) in kinds(&server) {
            let mut caller = BusPeer::connect(&endpoint, protocol);
            assert_eq!(
                caller.call("rpc.echo", json!({"n": 7})),
                Ok(json!({"n": 7}))
            );
            let lines = until(&mut monitor, |l| {
                l["type"] == "reply" && l["method"] == "rpc.echo"
            });
            let call = lines
                .iter()
                .find(|l| l["type"] == "call" && l["method"] == "rpc.echo")
                .expect("the call line comes before its reply");
            assert_eq!(call["protocol"], protocol.name(), "{call}");
            assert_eq!(call["params"], json!({"n": 7}), "{call}");
            assert_eq!(call["id"], json!(9_000_001), "{call}");
            let identity = call["identity"].as_str().expect("identity");
            match endpoint {
                junction::client::Endpoint::Tcp(_) => assert_eq!(identity, "anonymous"),
                junction::client::Endpoint::Unix(_) => assert_ne!(identity, "anonymous"),
            }
            let reply = lines.last().expect("reply");
            assert_eq!(reply["protocol"], protocol.name());
            assert_eq!(reply["conn"], call["conn"]);
            assert_eq!(reply["error"], false);
            assert!(reply["duration_us"].as_u64() >= Some(1), "{reply}");

            assert_eq!(
                caller.call("test.fail", json!([])).map_err(|e| e.0),
                Err(4711)
            );
            let lines = until(&mut monitor, |l| {
                l["type"] == "reply" && l["method"] == "test.fail"
            });
            assert_eq!(lines.last().expect("reply")["error"], true);

            let published = caller.call("bus.publish", json!({"topic": "t.seen", "data": [1]}));
            assert!(published.is_ok(), "{published:?}");
            let lines = until(&mut monitor, |l| l["type"] == "event");
            assert_eq!(lines.last().expect("event")["topic"], "t.seen");
            assert_eq!(lines.last().expect("event")["data"], json!([1]));
        }
    }
}

#[test]
fn patterns_choose_what_a_monitor_sees() {
    let server = start_with(|_| {});
    let mut monitor = BusPeer::connect(&server.endpoints()[1], Protocol::Mcp1);
    let answer = monitor.call("rpc.monitor", json!({"patterns": ["test.*", "rpc.ping"]}));
    assert_eq!(
        answer,
        Ok(json!({"monitoring": ["test.*", "rpc.ping"], "topic": "rpc.monitor"}))
    );
    let mut caller = BusPeer::connect(&server.endpoints()[0], Protocol::JsonRpc);
    assert!(caller.call("rpc.echo", json!([1])).is_ok());
    assert!(caller.call("test.add", json!([1, 2])).is_ok());
    assert!(caller.call("rpc.ping", json!([])).is_ok());
    let methods: Vec<String> = (0..4)
        .map(|_| {
            next_line(&mut monitor).0["method"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    assert_eq!(methods, ["test.add", "test.add", "rpc.ping", "rpc.ping"]);

    let bad = monitor.call("rpc.monitor", json!({"patterns": ["a*b"]}));
    assert_eq!(bad.map_err(|e| e.0), Err(-32602));
}

#[test]
fn only_admins_may_monitor() {
    let server = start_with(|config| {
        config.access.policy = junction::policy::Policy::new(vec![
            junction::policy::Rule::from_flag("anonymous:call:*", false).expect("rule"),
        ]);
    });
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut peer = BusPeer::connect(&server.endpoints()[1], protocol);
        let error = peer.call("rpc.monitor", json!({})).expect_err("refused");
        assert_eq!(error.0, -32008, "{error:?}");
        // Still served, and not a monitor: its next answer is its own.
        assert_eq!(peer.call("rpc.ping", json!([])), Ok(json!("pong")));
    }
}

/// One JSON-RPC batch of `n` pings on one line.
fn ping_batch(n: usize) -> Vec<u8> {
    let entries: Vec<Value> = (0..n)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "rpc.ping"}))
        .collect();
    let mut line = serde_json::to_vec(&entries).expect("json");
    line.push(b'\n');
    line
}

#[test]
fn a_monitor_that_never_reads_loses_lines_with_a_count_and_slows_no_one() {
    let server = start_with(|config| {
        config.bus.queue_events = 32;
        // Even a subscriber policy of disconnect only drops a monitor's lines.
        config.bus.slow_subscriber = junction::bus::SlowSubscriber::Disconnect;
    });
    for monitor_protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut monitor = BusPeer::connect(&server.endpoints()[0], monitor_protocol);
        assert!(monitor.call("rpc.monitor", json!({})).is_ok());
        // 20,000 lines (a call and a reply per ping) against a queue of 32
        // and a 64 KiB output: most are lost, nobody waits for the monitor.
        let mut caller = Raw::connect(&server.endpoints()[1]);
        for _ in 0..20 {
            caller.send(&ping_batch(500));
            let answers = caller.json();
            assert_eq!(answers.as_array().map(Vec::len), Some(500));
        }
        let mut other = BusPeer::connect(&server.endpoints()[0], Protocol::Mcp1);
        assert_eq!(other.call("rpc.ping", json!([])), Ok(json!("pong")));
        let stats = server.stats();
        assert!(
            stats["bus"]["events_dropped"].as_u64() > Some(0),
            "{}",
            stats["bus"]
        );
        let mut admin = server.client(&server.endpoints()[0]);
        let clients = admin.call("rpc.clients", None).expect("clients");
        for client in clients.as_array().expect("list") {
            assert!(
                client["output_bytes"].as_u64() < Some(4 << 20),
                "output stays bounded: {client}"
            );
        }

        // Now it reads: the lines it kept, some saying how many were lost
        // before them, up to a last call; every burst line is one or the other.
        caller
            .send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.echo\",\"params\":[\"end\"]}\n");
        assert_eq!(caller.json()["result"], json!(["end"]));
        let (mut lost, mut read) = (0, 0);
        loop {
            let (line, dropped) = next_line(&mut monitor);
            lost += dropped.unwrap_or(0);
            read += 1;
            if line["method"] == "rpc.echo" && line["params"] == json!(["end"]) {
                break;
            }
            assert!(read < 30_000, "no end line in {read} lines");
        }
        assert!(lost > 0, "a monitor that never read lost lines");
        assert!(read < 20_000, "it did not keep them all: read {read}");
        assert!(
            read + lost >= 20_000,
            "read {read} + lost {lost}: none vanished uncounted"
        );
    }
}

#[test]
fn junction_monitor_prints_lines_human_or_json() {
    let server = start_with(|_| {});
    let unix = server.running.unix_path().expect("unix").to_path_buf();
    for json_output in [false, true] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_junction"));
        command
            .env_remove("JUNCTION_PROTO")
            .arg("--unix")
            .arg(&unix)
            .args(["monitor", "--count", "2", "rpc.echo"]);
        if json_output {
            command.arg("--json");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn junction monitor");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut first = String::new();
        stderr.read_line(&mut first).expect("stderr line");
        assert!(first.contains("monitoring rpc.echo"), "{first}");
        let mut caller = BusPeer::connect(&server.endpoints()[1], Protocol::Mcp1);
        assert!(caller.call("rpc.ping", json!([])).is_ok());
        assert!(caller.call("rpc.echo", json!(["hi"])).is_ok());
        let out = child.wait_with_output().expect("exits after --count lines");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        if json_output {
            let call: Value = serde_json::from_str(lines[0]).expect("json");
            assert_eq!(
                (call["type"].as_str(), call["protocol"].as_str()),
                (Some("call"), Some("mcp1"))
            );
            assert_eq!(call["params"], json!(["hi"]));
            let reply: Value = serde_json::from_str(lines[1]).expect("json");
            assert_eq!(reply["type"], "reply");
        } else {
            assert!(
                lines[0].contains("anonymous mcp1 -> rpc.echo id="),
                "{}",
                lines[0]
            );
            assert!(lines[0].contains(r#"params=["hi"]"#), "{}", lines[0]);
            assert!(
                lines[1].contains("mcp1 <- rpc.echo") && lines[1].ends_with(" ok"),
                "{}",
                lines[1]
            );
        }
    }
}
