//! A WebSocket told the daemon is going away: when junctiond drains (a
//! SIGTERM to the real binary, or the shutdown request of an embedded
//! server), each upgraded WebSocket gets a Close frame with status 1001
//! and a reason (RFC 6455 section 7.4.1) after the answers it is owed,
//! then its connection ends. A call in flight is answered first; a close
//! already under way is not doubled; plain JSON-RPC, MCP1 and HTTP
//! connections still just end. Raw frames over both transports, plus
//! Python's `websockets` library reading the close code where it is
//! installed, over plain TCP, Unix and TLS (wss). Both backends
//! (JUNCTION_BACKEND is passed to the spawned daemon).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{PATIENCE, Raw, start_with};
use junction::client::{Client, Endpoint};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const CLOSE: u8 = 0x8;
const TEXT: u8 = 0x1;
const GOING_AWAY: u16 = 1001;
const REASON: &str = "server shutting down";

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5a, 0x21, 0x0f, 0x93];
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&u16::try_from(n).expect("small").to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Reads one server frame: (opcode, payload).
fn read_frame(raw: &mut Raw) -> (u8, Vec<u8>) {
    let head = raw.exact(2);
    assert_eq!(head[0] & 0x80, 0x80, "server frames are whole");
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7F {
        126 => u16::from_be_bytes(raw.exact(2).try_into().expect("2")) as usize,
        127 => u64::from_be_bytes(raw.exact(8).try_into().expect("8")) as usize,
        n => n as usize,
    };
    (head[0] & 0x0F, raw.exact(len))
}

/// A text message parsed as JSON; panics on any other frame.
fn read_json(raw: &mut Raw) -> Value {
    let (opcode, payload) = read_frame(raw);
    let text = String::from_utf8_lossy(&payload).into_owned();
    assert_eq!(
        opcode, TEXT,
        "a text message first, got {opcode:#x} {text:?}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Reads a Close frame: its code and reason; panics on any other frame.
fn read_close(raw: &mut Raw) -> (u16, String) {
    let (opcode, payload) = read_frame(raw);
    assert_eq!(
        opcode,
        CLOSE,
        "a close frame, got {opcode:#x} {:?}",
        String::from_utf8_lossy(&payload)
    );
    assert!(payload.len() >= 2, "the close frame carries a code");
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    let reason = String::from_utf8(payload[2..].to_vec()).expect("a UTF-8 reason");
    (code, reason)
}

/// The close frame says "going away", and nothing follows it but the end.
fn assert_going_away(raw: &mut Raw, what: &str) {
    assert_eq!(
        read_close(raw),
        (GOING_AWAY, REASON.to_string()),
        "{what}: 1001 before the end"
    );
    assert_eq!(raw.rest(), b"", "{what}: nothing after the close frame");
}

/// A WebSocket opened over `endpoint`, its handshake checked.
fn upgraded(endpoint: &Endpoint) -> Raw {
    let mut raw = Raw::connect(endpoint);
    raw.send(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(
        raw.line().as_deref(),
        Some("HTTP/1.1 101 Switching Protocols\r")
    );
    while raw.line().as_deref() != Some("\r") {}
    raw
}

/// Sends one JSON-RPC text message.
fn send_text(raw: &mut Raw, message: &Value) {
    raw.send(&frame(TEXT, message.to_string().as_bytes()));
}

/// A WebSocket that has been answered once (so it is upgraded and served).
fn served_websocket(endpoint: &Endpoint) -> Raw {
    let mut ws = upgraded(endpoint);
    send_text(
        &mut ws,
        &json!({"jsonrpc": "2.0", "method": "rpc.ping", "id": 0}),
    );
    assert_eq!(read_json(&mut ws)["result"], "pong");
    ws
}

/// An idle plain connection of each kind, each answered once: JSON-RPC,
/// MCP1, and HTTP kept alive after a `GET /healthz`.
fn plain_connections(endpoint: &Endpoint) -> Vec<(&'static str, Raw)> {
    let mut jsonrpc = Raw::connect(endpoint);
    jsonrpc.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n");
    assert_eq!(jsonrpc.json()["result"], "pong");
    let mut mcp1 = Raw::connect(endpoint);
    mcp1.send(&common::mcp1_request(1, "rpc.ping", b"", false));
    assert_eq!(mcp1.frame().json(), json!("pong"));
    let mut http = Raw::connect(endpoint);
    http.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(http.line().as_deref(), Some("HTTP/1.1 200 OK\r"));
    let mut length = None;
    loop {
        let line = http.line().expect("a header");
        if line == "\r" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
        assert_ne!(lower.trim(), "connection: close", "kept alive before");
    }
    assert_eq!(http.exact(length.expect("content-length")), b"ok\n");
    vec![("JSON-RPC", jsonrpc), ("MCP1", mcp1), ("HTTP", http)]
}

/// A spawned junctiond on a Unix socket and anonymous TCP, where TCP peers
/// may also call `slow.*` (a provider on the Unix socket serves it); its
/// stderr lines; killed on drop.
struct Daemon {
    child: Child,
    log: mpsc::Receiver<String>,
    unix: Endpoint,
    tcp: Endpoint,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let unix = dir.join("junction.sock");
        let mut command = common::junctiond();
        command
            .arg("--unix")
            .arg(&unix)
            .args(["--tcp", "127.0.0.1:0", "--tcp-anonymous", "true"])
            .args(["--allow", "anonymous:call:slow.*", "--log-format", "human"])
            .env("XDG_RUNTIME_DIR", dir)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC");
        let (child, log) = common::spawn_logged(&mut command);
        let line = common::wait_for_line(&log, "listening on tcp ");
        let addr = common::tcp_address(&line);
        Daemon {
            child,
            log,
            unix: Endpoint::Unix(unix),
            tcp: Endpoint::Tcp(addr),
        }
    }

    fn sigterm(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("kill");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's `websockets` client on each endpoint: answered once, then it
/// says "ready" and waits for the end, and prints how the connection
/// closed as the library saw it.
const PYTHON_CLIENT: &str = r#"
import json, sys
from websockets.sync.client import connect, unix_connect
from websockets.exceptions import ConnectionClosed

unix, tcp = sys.argv[1:3]
sockets = {
    "unix": unix_connect(unix, "ws://localhost/", open_timeout=20),
    "tcp": connect(f"ws://{tcp}/", open_timeout=20),
}
for ws in sockets.values():
    ws.send('{"jsonrpc":"2.0","method":"rpc.ping","id":1}')
    assert json.loads(ws.recv(timeout=20))["result"] == "pong"
print("ready", flush=True)
report = {}
for name, ws in sockets.items():
    try:
        extra = ws.recv(timeout=20)
        report[name] = {"unexpected": extra}
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        report[name] = {
            "code": rcvd.code if rcvd else None,
            "reason": rcvd.reason if rcvd else None,
        }
print(json.dumps(report), flush=True)
"#;

/// The Python client started against the daemon, once it is ready; None
/// when the `websockets` package is not installed (skipped, said why).
fn python_client(daemon: &Daemon) -> Option<(Child, BufReader<std::process::ChildStdout>)> {
    let python = common::ci_python(&["websockets"])?;
    let (Endpoint::Unix(unix), Endpoint::Tcp(tcp)) = (&daemon.unix, &daemon.tcp) else {
        panic!("unix and tcp endpoints");
    };
    let mut command = Command::new(python);
    command.arg("-c").arg(PYTHON_CLIENT).arg(unix).arg(tcp);
    Some(spawn_ready(command))
}

/// Starts a Python client and waits for its `ready` line (it is connected).
fn spawn_ready(mut command: Command) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("python's first line");
    assert_eq!(line.trim(), "ready", "the Python client is connected");
    (child, out)
}

#[test]
fn sigterm_sends_going_away_to_websockets_after_what_they_are_owed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path());
    // A provider of slow.op on the Unix socket (the daemon's user), which
    // takes its calls and never answers them.
    let mut provider = Raw::connect(&daemon.unix);
    provider.send(
        b"{\"jsonrpc\":\"2.0\",\"method\":\"bus.register\",\"params\":{\"names\":[\"slow.op\"]},\"id\":1}\n",
    );
    assert!(provider.json()["result"].is_object(), "registered");
    let mut idle = Vec::new();
    let mut waiting = Vec::new();
    let mut plain = Vec::new();
    for endpoint in [daemon.unix.clone(), daemon.tcp.clone()] {
        idle.push((endpoint.to_string(), served_websocket(&endpoint)));
        // A routed call in flight: the provider holds it when the signal comes.
        let mut ws = served_websocket(&endpoint);
        send_text(
            &mut ws,
            &json!({"jsonrpc": "2.0", "method": "slow.op", "params": {"on": endpoint.to_string()}, "id": 7}),
        );
        let forwarded = provider.json();
        assert_eq!(forwarded["method"], "slow.op", "{forwarded}");
        assert_eq!(forwarded["params"]["on"], endpoint.to_string());
        waiting.push((endpoint.to_string(), ws));
        plain.extend(
            plain_connections(&endpoint)
                .into_iter()
                .map(|(kind, raw)| (format!("{kind} over {endpoint}"), raw)),
        );
    }
    let python = python_client(&daemon);
    daemon.sigterm();
    common::wait_for_line(&daemon.log, "draining in-flight requests");
    for (what, mut ws) in waiting {
        // The drain fails calls still waiting on providers: that answer
        // comes first, then the close.
        let answer = read_json(&mut ws);
        assert_eq!(answer["id"], 7, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], -32000, "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("the daemon is shutting down"),
            "{what}: {answer}"
        );
        assert_going_away(&mut ws, &what);
    }
    for (what, mut ws) in idle {
        assert_going_away(&mut ws, &what);
    }
    for (what, mut raw) in plain {
        assert_eq!(raw.rest(), b"", "{what}: just closed, as before");
    }
    if let Some((mut child, mut out)) = python {
        let mut line = String::new();
        out.read_line(&mut line).expect("python's report");
        let report: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("python's report is not JSON ({e}): {line}"));
        for transport in ["unix", "tcp"] {
            assert_eq!(
                report[transport],
                json!({"code": GOING_AWAY, "reason": REASON}),
                "{transport}: {report}"
            );
        }
        assert!(child.wait().expect("python").success());
    }
    let status = common::wait_exit(&mut daemon.child);
    assert!(status.success(), "{status:?}");
}

/// Polls `rpc.clients` until every WebSocket has shown work in flight
/// (each sent its calls before); a hang guard, not a timing assertion.
fn wait_in_flight(asker: &mut Client, websockets: usize) {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < websockets {
        let clients = asker.call("rpc.clients", None).expect("rpc.clients");
        for client in clients.as_array().expect("a list") {
            if client["carrier"] == "websocket" && client["in_flight"].as_u64() > Some(0) {
                seen.insert(client["id"].as_u64());
            }
        }
        assert!(
            Instant::now() < deadline,
            "calls never in flight: {clients}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn calls_in_flight_are_answered_before_the_going_away_and_a_close_is_not_doubled() {
    const SLEEP_MS: u64 = 1500;
    let server = start_with(|c| c.workers = 8);
    let mut singles = Vec::new();
    let mut batches = Vec::new();
    let mut closing = Vec::new();
    for endpoint in server.endpoints() {
        let what = endpoint.to_string();
        let mut ws = served_websocket(&endpoint);
        send_text(
            &mut ws,
            &json!({"jsonrpc": "2.0", "method": "test.sleep", "params": [SLEEP_MS], "id": 1}),
        );
        singles.push((what.clone(), ws));
        let mut ws = served_websocket(&endpoint);
        send_text(
            &mut ws,
            &json!([
                {"jsonrpc": "2.0", "method": "test.sleep", "params": [SLEEP_MS], "id": 2},
                {"jsonrpc": "2.0", "method": "test.add", "params": [2, 3], "id": 3},
            ]),
        );
        batches.push((what.clone(), ws));
        // A client that closes itself while its call runs.
        let mut ws = served_websocket(&endpoint);
        send_text(
            &mut ws,
            &json!({"jsonrpc": "2.0", "method": "test.sleep", "params": [SLEEP_MS], "id": 4}),
        );
        ws.send(&frame(CLOSE, &4000u16.to_be_bytes()));
        closing.push((what, ws));
    }
    let mut asker = server.client(&server.endpoints()[0]);
    wait_in_flight(&mut asker, 6);
    drop(asker);
    // The drain waits for the calls in flight (stop returns once it ends).
    server.running.stop().expect("the loop ends cleanly");
    for (what, mut ws) in singles {
        let answer = read_json(&mut ws);
        assert_eq!(
            answer,
            json!({"jsonrpc": "2.0", "result": SLEEP_MS, "id": 1}),
            "{what}"
        );
        assert_going_away(&mut ws, &what);
    }
    for (what, mut ws) in batches {
        let mut answer = read_json(&mut ws);
        let list = answer.as_array_mut().expect("a batch answer");
        list.sort_by_key(|a| a["id"].as_u64());
        assert_eq!(
            answer,
            json!([
                {"jsonrpc": "2.0", "result": SLEEP_MS, "id": 2},
                {"jsonrpc": "2.0", "result": 5, "id": 3},
            ]),
            "{what}"
        );
        assert_going_away(&mut ws, &what);
    }
    for (what, mut ws) in closing {
        // Its answer, then one close: its own code echoed, or 1001 when
        // the drain came before its close frame was read.
        let answer = read_json(&mut ws);
        assert_eq!(answer["result"], SLEEP_MS, "{what}: {answer}");
        let (code, _) = read_close(&mut ws);
        assert!([4000, GOING_AWAY].contains(&code), "{what}: {code}");
        assert_eq!(ws.rest(), b"", "{what}: one close frame, then the end");
    }
}

/// Python's `websockets` over TLS (wss): a pooled call in flight, then the
/// end as the library saw it.
const PYTHON_TLS_CLIENT: &str = r#"
import json, ssl, sys
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed

ca, port, ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.create_default_context(cafile=ca)
ws = connect(f"wss://localhost:{port}/", ssl=context, open_timeout=20)
ws.send(json.dumps({"jsonrpc": "2.0", "method": "test.sleep", "params": [ms], "id": 1}))
print("ready", flush=True)
report = {"answer": json.loads(ws.recv(timeout=20))}
try:
    report["unexpected"] = ws.recv(timeout=20)
except ConnectionClosed as closed:
    rcvd = closed.rcvd
    report["code"] = rcvd.code if rcvd else None
    report["reason"] = rcvd.reason if rcvd else None
print(json.dumps(report), flush=True)
"#;

#[test]
fn a_websocket_over_tls_gets_its_answer_then_the_going_away() {
    const SLEEP_MS: u64 = 1500;
    let Some(python) = common::ci_python(&["websockets"]) else {
        return;
    };
    let certs = tempfile::tempdir().expect("tempdir");
    let pki = common::pki::Pki::new(certs.path());
    let remote = pki.remote();
    let server = start_with(|c| {
        c.remote = remote;
        c.workers = 4;
    });
    let port = server.running.tcp_addr().expect("tcp").port();
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(PYTHON_TLS_CLIENT)
        .arg(&pki.ca)
        .arg(port.to_string())
        .arg(SLEEP_MS.to_string());
    let (mut child, mut out) = spawn_ready(command);
    let mut line = String::new();
    let mut asker = server.client(&server.endpoints()[0]);
    wait_in_flight(&mut asker, 1);
    drop(asker);
    server.running.stop().expect("the loop ends cleanly");
    line.clear();
    out.read_line(&mut line).expect("python's report");
    let report: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("python's report is not JSON ({e}): {line}"));
    assert_eq!(
        report,
        json!({
            "answer": {"jsonrpc": "2.0", "result": SLEEP_MS, "id": 1},
            "code": GOING_AWAY,
            "reason": REASON,
        })
    );
    assert!(child.wait().expect("python").success());
}
