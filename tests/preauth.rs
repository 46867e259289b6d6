//! Pre-auth limits (issue 13, scenarios 4 and 9): connections that have not
//! authenticated have their own cap (`max-unauthenticated`) beside
//! `max-connections`, a deadline (`auth-timeout`) that nothing they send
//! extends, a 4 KiB frame limit and no share of the buffer-memory reserve;
//! Unix peers the allow-list refuses are turned away at accept and take no
//! slot at all.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{Raw, TestServer, mcp1_frame, mcp1_request, start_with};
use junction::Config;
use junction::Protocol;
use junction::client::{Client, Endpoint};
use junction::config::Settings;
use serde_json::{Value, json};

const TOKEN: &str = "pre-auth-limits-test-token-0123456789";
const TOO_MANY: i64 = -32002;
const FRAME_TOO_LARGE: i64 = -32001;
const UNAUTHORIZED: i64 = -32007;
const DENIED: i64 = -32006;
/// Served connections (Unix, authenticated TCP) in the lock-out test.
const MAX_CONNECTIONS: usize = 4;
/// Connections that may wait to authenticate in these tests.
const MAX_UNAUTHENTICATED: usize = 6;

/// Requires a token the way an operator sets one: a token file, read by
/// the configuration (so the test does not depend on the TCP default).
fn with_token(config: &mut Config, dir: &std::path::Path) {
    let path = dir.join("token");
    std::fs::write(&path, TOKEN).expect("token file");
    let resolved = Config::resolve(Settings {
        auth_token_file: Some(path),
        ..Settings::default()
    })
    .expect("a config with a token");
    config.access = resolved.access;
    config.auth_token_file = resolved.auth_token_file;
}

fn token_server(adjust: impl FnOnce(&mut Config)) -> (TestServer, tempfile::TempDir) {
    let secrets = tempfile::tempdir().expect("tempdir");
    let server = start_with(|config| {
        with_token(config, secrets.path());
        config.max_unauthenticated = MAX_UNAUTHENTICATED;
        adjust(config);
    });
    (server, secrets)
}

fn authenticated(endpoint: &Endpoint, protocol: Protocol) -> Client {
    let mut client = Client::connect_with(endpoint, protocol).expect("connect");
    client.set_timeout(Some(common::PATIENCE)).expect("timeout");
    client.authenticate(TOKEN).expect("authenticate");
    client
}

fn ping(endpoint: &Endpoint, protocol: Protocol) -> Value {
    let mut client = Client::connect_with(endpoint, protocol).expect("connect");
    client.set_timeout(Some(common::PATIENCE)).expect("timeout");
    client.call("rpc.ping", None).expect("served")
}

/// What ended a connection that never authenticated: the error code the
/// daemon sent last (a JSON-RPC line, or an MCP1 ERROR frame), then EOF.
fn ending(raw: &mut Raw, protocol: Protocol) -> i64 {
    let code = match protocol {
        Protocol::JsonRpc => {
            let line = raw.json();
            line["error"]["code"].as_i64().expect("an error line")
        }
        Protocol::Mcp1 => loop {
            // An accept-time refusal is a JSON-RPC line even for MCP1.
            let first = raw.exact(1);
            if first == b"{" {
                let rest = raw.line().expect("the rest of the line");
                let line: Value = serde_json::from_str(&format!("{{{rest}")).expect("a JSON line");
                break line["error"]["code"].as_i64().expect("code");
            }
            let mut header = first;
            header.extend(raw.exact(15));
            let length = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
            let payload = raw.exact(length as usize);
            let frame = common::Frame {
                kind: header[5],
                flags: 0,
                id: u32::from_le_bytes([header[8], header[9], header[10], header[11]]),
                payload,
            };
            assert_eq!(
                frame.kind, 4,
                "only errors reach a peer that has not authenticated"
            );
            // Each unknown kind is answered and skipped; the deadline is not moved.
            let (code, message) = frame.error();
            if i64::from(code) == UNAUTHORIZED {
                assert_eq!(frame.id, 0, "{message}");
                break i64::from(code);
            }
        },
    };
    assert!(raw.is_closed(), "closed after the error");
    code
}

/// An MCP1 frame of a kind no version defines.
fn unknown_kind() -> Vec<u8> {
    mcp1_frame(1, 0x3f, 0, 7, b"junk")
}

#[test]
fn unauthenticated_peers_cannot_lock_out_unix_or_authenticated_clients() {
    let (server, _secrets) = token_server(|config| {
        config.max_connections = MAX_CONNECTIONS;
        config.auth_timeout = Duration::from_secs(3);
    });
    let [unix, tcp] = <[Endpoint; 2]>::try_from(server.endpoints()).expect("two");
    // Authenticated before the flood: it keeps its slot.
    let mut early = authenticated(&tcp, Protocol::Mcp1);
    // The flood: more than may wait, half MCP1 sending unknown kinds over
    // and over, half JSON-RPC with blank lines and a partial line that grows.
    let mut flood = Vec::new();
    for i in 0..MAX_UNAUTHENTICATED + 4 {
        let protocol = if i % 2 == 0 {
            Protocol::Mcp1
        } else {
            Protocol::JsonRpc
        };
        let raw = Raw::connect(&tcp);
        let mut writer = raw.writer();
        let first = match protocol {
            Protocol::Mcp1 => unknown_kind(),
            Protocol::JsonRpc => b"\n\n{\"jsonrpc\":\"2.0\",\"method\":".to_vec(),
        };
        let _ = writer.write_all(&first);
        let keep_busy = thread::spawn(move || {
            for _ in 0..200 {
                thread::sleep(Duration::from_millis(50));
                let junk = match protocol {
                    Protocol::Mcp1 => unknown_kind(),
                    Protocol::JsonRpc => b" ".to_vec(),
                };
                if writer.write_all(&junk).is_err() {
                    return;
                }
            }
        });
        raw.set_timeout(common::PATIENCE);
        flood.push((raw, protocol, keep_busy));
    }
    // Meanwhile Unix clients are served in both protocols, and so is the
    // TCP client that authenticated first.
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        assert_eq!(ping(&unix, protocol), "pong");
        assert_eq!(early.call("rpc.ping", None).expect("still served"), "pong");
    }
    // Every flood connection ends: refused at accept past the cap, or closed
    // with -32007 at the auth timeout, whatever it kept sending.
    let mut codes = Vec::new();
    for (mut raw, protocol, keep_busy) in flood {
        codes.push(ending(&mut raw, protocol));
        drop(raw);
        keep_busy.join().expect("writer");
    }
    assert!(
        codes.iter().all(|c| *c == TOO_MANY || *c == UNAUTHORIZED),
        "{codes:?}"
    );
    assert!(codes.contains(&TOO_MANY), "past the cap: {codes:?}");
    assert!(codes.contains(&UNAUTHORIZED), "the auth timeout: {codes:?}");
    // Once they are gone a new TCP client authenticates as usual.
    let mut late = authenticated(&tcp, Protocol::JsonRpc);
    assert_eq!(late.call("rpc.ping", None).expect("served"), "pong");
    let stats = server.stats();
    let gate = &stats["gate"];
    assert!(
        gate["refused_unauthenticated"].as_u64() >= Some(1),
        "{stats}"
    );
    assert!(gate["auth_timeouts"].as_u64() >= Some(1), "{stats}");
    assert_eq!(gate["unauthenticated"], json!(0), "{stats}");
}

#[test]
fn a_frame_before_authentication_is_held_to_4_kib() {
    let (server, _secrets) = token_server(|_| {});
    let tcp = server.endpoints()[1].clone();
    let big = vec![b'x'; 100 * 1024];
    let mut peers = Vec::new();
    for i in 0..MAX_UNAUTHENTICATED {
        let mut raw = Raw::connect(&tcp);
        if i % 2 == 0 {
            // A first line that never ends.
            let _ = raw.send_lossy(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.auth\",\"params\":[\"");
            let _ = raw.send_lossy(&big);
            peers.push((raw, Protocol::JsonRpc));
        } else {
            // An MCP1 header announcing a 100 KiB rpc.auth.
            let frame = mcp1_request(1, "rpc.auth", &big, true);
            let _ = raw.send_lossy(&frame);
            peers.push((raw, Protocol::Mcp1));
        }
    }
    for (mut raw, protocol) in peers {
        match protocol {
            Protocol::JsonRpc => {
                let line = raw.json();
                assert_eq!(line["error"]["code"], FRAME_TOO_LARGE, "{line}");
                let message = line["error"]["message"].as_str().expect("message");
                assert!(message.contains("4096"), "{message}");
            }
            Protocol::Mcp1 => {
                let frame = raw.frame();
                assert_eq!(frame.kind, 4);
                assert_eq!(i64::from(frame.error().0), FRAME_TOO_LARGE, "{frame:?}");
            }
        }
        assert!(raw.is_closed());
    }
    // Nothing of theirs is held once they are gone.
    let mut stats = server.stats();
    for _ in 0..500 {
        if stats["connections"]["tcp"]["current"] == json!(0) {
            break;
        }
        thread::sleep(Duration::from_millis(10));
        stats = server.stats();
    }
    assert!(
        stats["memory"]["ring_bytes"].as_u64() <= Some(16 * 1024 * 2),
        "{stats}"
    );
    // The same sizes are fine once authenticated.
    let mut client = authenticated(&tcp, Protocol::JsonRpc);
    let text = "y".repeat(100 * 1024);
    assert_eq!(
        client.call("rpc.echo", Some(json!([text]))).expect("echo"),
        json!([text])
    );
}

#[test]
fn past_the_cap_a_new_unauthenticated_peer_is_refused_at_accept() {
    let (server, _secrets) = token_server(|config| {
        config.auth_timeout = Duration::from_secs(60);
    });
    let tcp = server.endpoints()[1].clone();
    let waiting: Vec<Raw> = (0..MAX_UNAUTHENTICATED)
        .map(|_| {
            let mut raw = Raw::connect(&tcp);
            raw.send(&unknown_kind());
            // Answered (an unknown kind), so the daemon has taken it in.
            let frame = raw.frame();
            assert_eq!(frame.kind, 4);
            raw
        })
        .collect();
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut raw = Raw::connect(&tcp);
        let line = raw.json();
        assert_eq!(line["error"]["code"], TOO_MANY, "{protocol:?}: {line}");
        let message = line["error"]["message"].as_str().expect("message");
        assert!(message.contains("max-unauthenticated"), "{message}");
        assert!(raw.is_closed());
    }
    // Unix peers are not counted among them.
    assert_eq!(ping(&server.endpoints()[0], Protocol::Mcp1), "pong");
    drop(waiting);
}

#[test]
fn the_auth_timeout_closes_a_connection_in_its_protocol() {
    let (server, _secrets) = token_server(|config| {
        config.auth_timeout = Duration::from_millis(300);
    });
    let tcp = server.endpoints()[1].clone();
    // JSON-RPC: a partial line; MCP1: PINGs.
    let mut json_peer = Raw::connect(&tcp);
    json_peer.send(b"{\"jsonrpc\":");
    let line = json_peer.json();
    assert_eq!(line["error"]["code"], UNAUTHORIZED, "{line}");
    assert_eq!(line["id"], Value::Null);
    let message = line["error"]["message"].as_str().expect("message");
    assert!(message.contains("auth-timeout"), "{message}");
    assert!(json_peer.is_closed());
    let mut mcp1_peer = Raw::connect(&tcp);
    mcp1_peer.send(&unknown_kind());
    assert_eq!(ending(&mut mcp1_peer, Protocol::Mcp1), UNAUTHORIZED);
    // An authenticated client is not held to it.
    let mut client = authenticated(&tcp, Protocol::Mcp1);
    thread::sleep(Duration::from_millis(600));
    assert_eq!(client.call("rpc.ping", None).expect("served"), "pong");
}

/// Runs `script` as uid and gid 65534 with python3; None (printed) when
/// that is not possible here.
fn as_nobody(script: &str) -> Option<std::process::Child> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a peer as uid 65534");
        return None;
    }
    let child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    match child {
        Ok(child) => Some(child),
        Err(e) => {
            eprintln!("skipped: cannot run python3 as uid 65534: {e}");
            None
        }
    }
}

/// A peer running as uid 65534 opens 40 sockets, reads what each is told,
/// prints the codes, and holds the sockets until its stdin closes.
const DENIED_PEERS: &str = r#"
import json, socket, sys
socks, codes = [], []
for _ in range(40):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(sys.argv[1])
    socks.append(s)
for s in socks:
    try:
        line = s.makefile().readline()
        codes.append(json.loads(line)["error"]["code"] if line else None)
    except Exception as e:
        codes.append(str(e))
print(json.dumps(codes), flush=True)
sys.stdin.read()
"#;

#[test]
fn denied_unix_peers_are_refused_at_accept_and_take_no_slot() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a peer as uid 65534");
        return;
    }
    let server = start_with(|config| {
        config.unix_mode = 0o666;
        config.max_connections = 4;
    });
    let unix = server.endpoints()[0].clone();
    let Endpoint::Unix(path) = &unix else {
        unreachable!()
    };
    // Let uid 65534 reach the socket: the file mode is then not what refuses it.
    let dir = path.parent().expect("dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let script = DENIED_PEERS.replace("sys.argv[1]", &format!("{:?}", path.display().to_string()));
    let Some(mut child) = as_nobody(&script) else {
        return;
    };
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the peer's report");
    let codes: Vec<Value> = serde_json::from_str(&line).expect("codes");
    assert_eq!(codes.len(), 40);
    assert!(
        codes.iter().all(|c| c == &json!(DENIED)),
        "each is told at once, without sending anything: {codes:?}"
    );
    // The 40 sockets are still open on the peer's side; allowed clients
    // are served in both protocols, with max-connections 4.
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        assert_eq!(ping(&unix, protocol), "pong");
        assert_eq!(ping(&unix, protocol), "pong");
    }
    let stats = server.stats();
    assert_eq!(stats["access"]["denied"], json!(40), "{stats}");
    assert_eq!(stats["connections"]["refused_max_connections"], json!(0));
    drop(child.stdin.take());
    let _ = child.wait();
}
