//! JSON-RPC over WebSocket (RFC 6455) on the daemon's sockets, with real
//! clients: Python's `websockets` and Node's `ws`. Calls, batches, a method
//! provided over a WebSocket and reached by a `junction call`, events
//! received by a WebSocket subscriber, `rpc.auth` as the first message,
//! and pages whose Origin or Host is not allowed (403, no upgrade). Plus
//! raw-frame checks of fragmentation, ping/pong, the close handshake,
//! max-frame and bad UTF-8. Both transports, both backends.

mod common;

use std::process::Command;

use common::{Raw, TestServer, start_with};
use junction::access::{AuthToken, NamedToken};
use junction::policy::{Policy, Rule};
use serde_json::{Value, json};

/// The test access plus `anonymous` providing `ws.*` over TCP.
fn server() -> TestServer {
    start_with(|c| {
        let mut rules = c.access.policy.rules().to_vec();
        rules.push(Rule::from_flag("anonymous:provide:ws.*", false).expect("rule"));
        c.access.policy = Policy::new(rules);
        c.access.http = junction::http::HttpAccess::resolve(
            Some(vec!["http://allowed.test".into()]),
            None,
            None,
        );
    })
}

const PYTHON_CLIENT: &str = r#"
import json, socket, subprocess, sys
from websockets.sync.client import connect, unix_connect
from websockets.exceptions import InvalidStatus

kind, where, junction, unix = sys.argv[1:5]

def open_ws(**extra):
    if kind == "tcp":
        return connect(f"ws://{where}/", open_timeout=20, **extra)
    return unix_connect(where, "ws://localhost/", open_timeout=20, **extra)

def cli(*args):
    return subprocess.Popen([junction, "--unix", unix, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

report = {}
with open_ws() as ws:
    ws.send('{"jsonrpc":"2.0","method":"rpc.ping","id":1}')
    report["ping"] = json.loads(ws.recv(timeout=20))
    ws.send('[{"jsonrpc":"2.0","method":"test.add","params":[2,3],"id":1},'
            '{"jsonrpc":"2.0","method":"test.sleep","params":[5],"id":2}]')
    report["batch"] = json.loads(ws.recv(timeout=20))
    # Provide a method, reached by a junction call.
    ws.send('{"jsonrpc":"2.0","method":"bus.register","params":{"names":["ws.greet"]},"id":3}')
    report["register"] = json.loads(ws.recv(timeout=20))
    caller = cli("call", "ws.greet", '{"who":"cli"}')
    forwarded = json.loads(ws.recv(timeout=20))
    report["forwarded"] = forwarded
    ws.send(json.dumps({"jsonrpc": "2.0", "id": forwarded["id"],
                        "result": "hello " + forwarded["params"]["who"]}))
    out, err = caller.communicate(timeout=20)
    report["cli"] = {"code": caller.returncode, "out": out, "err": err}
    # Subscribe and receive events published by the CLI.
    ws.send('{"jsonrpc":"2.0","method":"bus.subscribe","params":{"topics":["ws.news.*"]},"id":4}')
    report["subscribe"] = json.loads(ws.recv(timeout=20))
    for n in range(3):
        cli("publish", "ws.news.item", json.dumps({"n": n})).communicate(timeout=20)
    report["events"] = [json.loads(ws.recv(timeout=20)) for _ in range(3)]
    # A text message fragmented by the client library.
    ws.send(['{"jsonrpc":"2.0",', '"method":"rpc.echo",', '"params":["frag"],"id":5}'])
    report["fragmented"] = json.loads(ws.recv(timeout=20))
    ws.ping(b"are you there").wait(timeout=20)
    report["pong"] = True
for origin, label in (("http://evil.test", "evil_origin"), ("http://allowed.test", "allowed_origin")):
    try:
        with open_ws(origin=origin) as ws:
            ws.send('{"jsonrpc":"2.0","method":"rpc.ping","id":1}')
            report[label] = json.loads(ws.recv(timeout=20))["result"]
    except InvalidStatus as e:
        report[label] = e.response.status_code
if kind == "tcp":
    host, port = where.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=20)
    try:
        with connect(f"ws://rebound.example:{port}/", sock=sock, open_timeout=20) as ws:
            report["rebound_host"] = "upgraded"
    except InvalidStatus as e:
        report["rebound_host"] = e.response.status_code
print(json.dumps(report))
"#;

fn check_python_report(report: &Value, tcp: bool) {
    assert_eq!(
        report["ping"],
        json!({"jsonrpc":"2.0","result":"pong","id":1}),
        "{report}"
    );
    let mut batch = report["batch"].as_array().expect("batch").clone();
    batch.sort_by_key(|e| e["id"].as_u64());
    assert_eq!(
        (batch[0]["result"].clone(), batch[1]["result"].clone()),
        (json!(5), json!(5))
    );
    assert!(report["register"]["result"].is_object(), "{report}");
    assert_eq!(report["forwarded"]["method"], "ws.greet");
    assert_eq!(report["cli"]["code"], 0, "{report}");
    assert_eq!(
        report["cli"]["out"].as_str().unwrap().trim(),
        "\"hello cli\""
    );
    assert!(report["subscribe"]["result"].is_object(), "{report}");
    for (n, event) in report["events"]
        .as_array()
        .expect("events")
        .iter()
        .enumerate()
    {
        assert_eq!(event["method"], "bus.event");
        assert_eq!(
            event["params"],
            json!({"topic": "ws.news.item", "data": {"n": n}})
        );
    }
    assert_eq!(report["fragmented"]["result"], json!(["frag"]));
    assert_eq!(report["pong"], true);
    assert_eq!(report["evil_origin"], 403, "{report}");
    assert_eq!(report["allowed_origin"], "pong");
    if tcp {
        assert_eq!(report["rebound_host"], 403, "{report}");
    }
}

#[test]
fn python_websockets_calls_provides_and_subscribes_over_tcp_and_unix() {
    let Some(python) = common::ci_python(&["websockets"]) else {
        return;
    };
    let server = server();
    let unix = server
        .running
        .unix_path()
        .expect("unix")
        .to_str()
        .expect("path")
        .to_string();
    let tcp = server.running.tcp_addr().expect("tcp").to_string();
    for (kind, where_) in [("tcp", tcp.as_str()), ("unix", unix.as_str())] {
        let out = Command::new(&python)
            .args([
                "-c",
                PYTHON_CLIENT,
                kind,
                where_,
                env!("CARGO_BIN_EXE_junction"),
                &unix,
            ])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        check_python_report(&report, kind == "tcp");
    }
    let stats = server.stats();
    assert!(stats["http"]["upgrades"].as_u64().unwrap() >= 4, "{stats}");
    assert!(
        stats["http"]["ws_messages_in"].as_u64().unwrap() >= 14,
        "{stats}"
    );
    assert!(
        stats["bus"]["routed_calls"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    common::assert_healthy(&server);
}

const NODE_CLIENT: &str = r#"
const WebSocket = require("ws");
const { execFileSync, execFile } = require("child_process");
const [url, junction, unix] = process.argv.slice(1); // node -e: no script path
const report = {};

function open(options) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    ws.once("open", () => resolve(ws));
    ws.once("unexpected-response", (req, res) => reject(res.statusCode));
    ws.once("error", reject);
  });
}
function next(ws) {
  return new Promise((resolve) => ws.once("message", (data) => resolve(JSON.parse(data.toString()))));
}
async function main() {
  const ws = await open({});
  ws.send(JSON.stringify({ jsonrpc: "2.0", method: "rpc.ping", id: 1 }));
  report.ping = await next(ws);
  ws.send(JSON.stringify([{ jsonrpc: "2.0", method: "test.add", params: [20, 22], id: 1 },
                          { jsonrpc: "2.0", method: "rpc.ping" }]));
  report.batch = await next(ws);
  ws.send(JSON.stringify({ jsonrpc: "2.0", method: "bus.register", params: { names: ["ws.node"] }, id: 2 }));
  report.register = await next(ws);
  const cli = new Promise((resolve) =>
    execFile(junction, ["--unix", unix, "call", "ws.node", "[1,2]"], (err, out) => resolve({ err: err && String(err), out })));
  const forwarded = await next(ws);
  report.forwarded = forwarded;
  ws.send(JSON.stringify({ jsonrpc: "2.0", id: forwarded.id, result: forwarded.params[0] + forwarded.params[1] }));
  report.cli = await cli;
  ws.send(JSON.stringify({ jsonrpc: "2.0", method: "bus.subscribe", params: { topics: ["ws.node.done"] }, id: 3 }));
  report.subscribe = await next(ws);
  const event = next(ws);
  execFileSync(junction, ["--unix", unix, "publish", "ws.node.done", '{"ok":true}']);
  report.event = await event;
  ws.close(1000);
  await new Promise((resolve) => ws.once("close", (code) => { report.close = code; resolve(); }));
  try { await open({ origin: "http://evil.test" }); report.evil = "upgraded"; } catch (status) { report.evil = status; }
  try { await open({ headers: { Host: "rebound.example:7710" } }); report.rebound = "upgraded"; } catch (status) { report.rebound = status; }
  console.log(JSON.stringify(report));
}
main().catch((e) => { console.error(String(e)); process.exit(1); });
"#;

#[test]
fn node_ws_calls_provides_and_subscribes_over_tcp_and_unix() {
    let Some(modules) = common::ci_node_modules(&["ws"]) else {
        return;
    };
    let Some(node) = common::external_command("node") else {
        return;
    };
    let server = server();
    let unix = server
        .running
        .unix_path()
        .expect("unix")
        .to_str()
        .expect("path")
        .to_string();
    let tcp = server.running.tcp_addr().expect("tcp").to_string();
    for url in [format!("ws://{tcp}/"), format!("ws+unix://{unix}:/")] {
        let out = Command::new(&node)
            .env("NODE_PATH", &modules)
            .args([
                "-e",
                NODE_CLIENT,
                &url,
                env!("CARGO_BIN_EXE_junction"),
                &unix,
            ])
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        assert_eq!(report["ping"]["result"], "pong", "{report}");
        assert_eq!(
            report["batch"],
            json!([{"jsonrpc":"2.0","result":42,"id":1}])
        );
        assert_eq!(report["forwarded"]["method"], "ws.node");
        assert_eq!(
            report["cli"]["out"].as_str().unwrap().trim(),
            "3",
            "{report}"
        );
        assert_eq!(
            report["event"]["params"],
            json!({"topic":"ws.node.done","data":{"ok":true}})
        );
        assert_eq!(report["close"], 1000, "the close handshake echoes the code");
        assert_eq!(report["evil"], 403);
        assert_eq!(report["rebound"], 403, "a Host not served: DNS rebinding");
    }
}

/// A masked client frame.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Reads one server frame: (opcode, payload).
fn read_frame(raw: &mut Raw) -> (u8, Vec<u8>) {
    let head = raw.exact(2);
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7F {
        126 => u16::from_be_bytes(raw.exact(2).try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(raw.exact(8).try_into().unwrap()) as usize,
        n => n as usize,
    };
    (head[0] & 0x0F, raw.exact(len))
}

fn upgraded(server: &TestServer, endpoint: &junction::client::Endpoint, extra: &str) -> Raw {
    let _ = server;
    let mut raw = Raw::connect(endpoint);
    raw.send(
        format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(
        raw.line().as_deref(),
        Some("HTTP/1.1 101 Switching Protocols\r")
    );
    let mut accept = None;
    while let Some(line) = raw.line() {
        if line == "\r" {
            break;
        }
        if let Some(value) = line.strip_prefix("Sec-WebSocket-Accept: ") {
            accept = Some(value.trim().to_string());
        }
    }
    assert_eq!(accept.as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    raw
}

#[test]
fn raw_frames_fragments_pings_limits_and_the_close_handshake() {
    let server = start_with(|c| c.max_frame = 1024);
    for endpoint in server.endpoints() {
        let mut raw = upgraded(&server, &endpoint, "");
        // A message in three fragments with a ping between them.
        let call = br#"{"jsonrpc":"2.0","method":"rpc.echo","params":["x"],"id":1}"#;
        let mut bytes = frame(0x1, false, &call[..10]);
        bytes.extend(frame(0x0, false, &call[10..20]));
        bytes.extend(frame(0x9, true, b"hi"));
        bytes.extend(frame(0x0, true, &call[20..]));
        raw.send(&bytes);
        assert_eq!(
            read_frame(&mut raw),
            (0xA, b"hi".to_vec()),
            "the pong first"
        );
        let (opcode, text) = read_frame(&mut raw);
        assert_eq!(opcode, 0x1);
        let answer: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(answer["result"], json!(["x"]));
        // The close handshake: the code echoed, then the connection closes.
        raw.send(&frame(0x8, true, &1000u16.to_be_bytes()));
        assert_eq!(read_frame(&mut raw), (0x8, 1000u16.to_be_bytes().to_vec()));
        assert!(raw.is_closed());
        // Each violation gets its close code.
        for (bytes, code) in [
            (frame(0x1, true, &[b'"', 0xFF, b'"']), 1007),
            (frame(0x2, true, b"{}"), 1003),
            (frame(0x1, true, &vec![b' '; 2000]), 1009),
            (frame(0x0, true, b"{}"), 1002),
            (vec![0x81, 0x02, b'{', b'}'], 1002), // unmasked
        ] {
            let mut raw = upgraded(&server, &endpoint, "");
            raw.send(&bytes);
            let (opcode, payload) = read_frame(&mut raw);
            assert_eq!(opcode, 0x8);
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
            assert!(raw.is_closed());
        }
        // A bus.register over plain POST is refused, over WebSocket taken.
        let mut raw = upgraded(&server, &endpoint, "");
        raw.send(&frame(
            0x1,
            true,
            br#"{"jsonrpc":"2.0","method":"bus.subscribe","params":{"topics":["t"]},"id":2}"#,
        ));
        let (_, text) = read_frame(&mut raw);
        let answer: Value = serde_json::from_slice(&text).unwrap();
        assert!(answer["result"].is_object(), "{answer}");
    }
    common::assert_healthy(&server);
}

#[test]
fn rpc_auth_as_the_first_message_or_a_bearer_header() {
    const TOKEN: &str = "ws-secret-ws-secret-ws-secret";
    let server = start_with(|c| {
        c.access = junction::access::Access {
            tokens: vec![NamedToken::owner(AuthToken::new(TOKEN))],
            ..junction::access::Access::default()
        };
    });
    let tcp = server.endpoints().remove(1);
    // rpc.auth first, then calls.
    let mut raw = upgraded(&server, &tcp, "");
    let auth =
        format!(r#"{{"jsonrpc":"2.0","method":"rpc.auth","params":{{"token":"{TOKEN}"}},"id":1}}"#);
    raw.send(&frame(0x1, true, auth.as_bytes()));
    assert_eq!(
        serde_json::from_slice::<Value>(&read_frame(&mut raw).1).unwrap()["result"],
        true
    );
    raw.send(&frame(
        0x1,
        true,
        br#"{"jsonrpc":"2.0","method":"rpc.ping","id":2}"#,
    ));
    assert_eq!(
        serde_json::from_slice::<Value>(&read_frame(&mut raw).1).unwrap()["result"],
        "pong"
    );
    // The bearer header instead.
    let mut raw = upgraded(&server, &tcp, &format!("Authorization: Bearer {TOKEN}\r\n"));
    raw.send(&frame(
        0x1,
        true,
        br#"{"jsonrpc":"2.0","method":"rpc.ping","id":2}"#,
    ));
    assert_eq!(
        serde_json::from_slice::<Value>(&read_frame(&mut raw).1).unwrap()["result"],
        "pong"
    );
    // Anything else first: -32007, then a policy close.
    let mut raw = upgraded(&server, &tcp, "");
    raw.send(&frame(
        0x1,
        true,
        br#"{"jsonrpc":"2.0","method":"rpc.ping","id":3}"#,
    ));
    let refused: Value = serde_json::from_slice(&read_frame(&mut raw).1).unwrap();
    assert_eq!(refused["error"]["code"], -32007);
    let (opcode, payload) = read_frame(&mut raw);
    assert_eq!(
        (opcode, u16::from_be_bytes([payload[0], payload[1]])),
        (0x8, 1008)
    );
    assert!(raw.is_closed());
}

#[test]
fn a_subscriber_that_does_not_read_gets_whole_messages_when_it_does() {
    let server = start_with(|c| c.max_output = 64 * 1024);
    for endpoint in server.endpoints() {
        let mut raw = upgraded(&server, &endpoint, "");
        raw.send(&frame(
            0x1,
            true,
            br#"{"jsonrpc":"2.0","method":"bus.subscribe","params":{"topics":["flood.*"]},"id":1}"#,
        ));
        assert_eq!(read_frame(&mut raw).0, 0x1);
        // Published while the subscriber reads nothing: its output fills,
        // then its queue (drop-oldest), on the daemon's side.
        let mut publisher = server.client(&server.endpoints()[0]);
        let data = "y".repeat(2000);
        for n in 0..2000 {
            publisher
                .call(
                    "bus.publish",
                    Some(json!({"topic": "flood.item", "data": {"n": n, "pad": data}})),
                )
                .expect("published");
        }
        publisher
            .call(
                "bus.publish",
                Some(json!({"topic": "flood.end", "data": null})),
            )
            .expect("published");
        // Every message that arrives is a whole event, in order, and the last one comes.
        let mut last = -1i64;
        loop {
            let (opcode, text) = read_frame(&mut raw);
            assert_eq!(opcode, 0x1);
            let event: Value = serde_json::from_slice(&text).expect("a whole JSON message");
            assert_eq!(event["method"], "bus.event");
            if event["params"]["topic"] == "flood.end" {
                break;
            }
            let n = event["params"]["data"]["n"].as_i64().expect("n");
            assert!(n > last, "in order: {n} after {last}");
            last = n;
        }
        assert!(last >= 0);
    }
    let stats = server.stats();
    assert!(
        stats["http"]["ws_messages_out"].as_u64().unwrap() > 2,
        "{stats}"
    );
    common::assert_healthy(&server);
}
