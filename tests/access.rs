//! Who may connect: peer credentials, the uid/gid allow-list on the Unix
//! socket, the TCP auth token (both protocols) and protected mode.

mod common;

use std::process::{Command, Stdio};

use common::{PATIENCE, Raw, mcp1_request, start_with};
use junction::Protocol;
use junction::access::{AllowList, AuthToken, NamedToken};
use junction::client::{Client, ClientError, Endpoint};
use junction::{Config, Router, Server, ServerError};
use serde_json::{Value, json};

const TOKEN: &str = "correct-horse-battery-staple";
const DENIED: i64 = -32006;
const UNAUTHORIZED: i64 = -32007;

fn uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn gid() -> u32 {
    nix::unistd::getegid().as_raw()
}

fn connect(endpoint: &Endpoint, protocol: Protocol) -> Client {
    let mut client = Client::connect_with(endpoint, protocol).expect("connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    client
}

fn rpc_code(result: Result<Value, ClientError>) -> i64 {
    match result {
        Err(ClientError::Rpc(e)) => i64::from(e.code),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

fn jsonrpc_line(method: &str, params: Value, id: u64) -> Vec<u8> {
    let mut line =
        json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}).to_string();
    line.push('\n');
    line.into_bytes()
}

#[test]
fn rpc_clients_shows_each_connections_transport_and_peer() {
    let server = common::start();
    let [unix, tcp] = <[Endpoint; 2]>::try_from(server.endpoints()).expect("two");
    // Every connection is open before anyone asks, so each answer lists the same four.
    let mut other_unix = connect(&unix, Protocol::Mcp1);
    let mut other_tcp = connect(&tcp, Protocol::JsonRpc);
    assert_eq!(other_unix.call("rpc.ping", None).expect("ping"), "pong");
    assert_eq!(other_tcp.call("rpc.ping", None).expect("ping"), "pong");
    let mut askers = [
        connect(&unix, Protocol::JsonRpc),
        connect(&tcp, Protocol::JsonRpc),
    ];
    for asker in &mut askers {
        assert_eq!(asker.call("rpc.ping", None).expect("ping"), "pong");
    }
    for asker in &mut askers {
        let clients = asker.call("rpc.clients", None).expect("rpc.clients");
        let list = clients.as_array().expect("a list");
        assert_eq!(list.len(), 4, "{clients}");
        let unix_peers: Vec<&Value> = list.iter().filter(|c| c["transport"] == "unix").collect();
        let tcp_peers: Vec<&Value> = list.iter().filter(|c| c["transport"] == "tcp").collect();
        for peer in &unix_peers {
            assert_eq!(peer["pid"], std::process::id(), "{peer}");
            assert_eq!(peer["uid"], uid(), "{peer}");
            assert_eq!(peer["gid"], gid(), "{peer}");
            assert!(peer.get("address").is_none(), "{peer}");
        }
        for peer in &tcp_peers {
            let address = peer["address"].as_str().expect("an address");
            assert!(address.starts_with("127.0.0.1:"), "{peer}");
            assert!(peer.get("uid").is_none(), "{peer}");
        }
        assert!(
            unix_peers.iter().any(|c| c["protocol"] == "mcp1"),
            "{clients}"
        );
        assert!(
            tcp_peers.iter().all(|c| c["authenticated"] == true),
            "{clients}"
        );
    }
}

#[test]
fn a_unix_peer_off_the_allow_list_gets_access_denied_at_accept() {
    let server = start_with(|c| {
        c.access.allow = AllowList {
            any: false,
            uids: vec![uid().wrapping_add(4242)],
            gids: vec![],
        };
    });
    let [unix, tcp] = <[Endpoint; 2]>::try_from(server.endpoints()).expect("two");
    // JSON-RPC: one error line with id null, then the close.
    // The refusal is written at accept and the socket closed, so the send
    // may meet the close (EPIPE): what counts is the line read back.
    let mut raw = Raw::connect(&unix);
    let _ = raw.send_lossy(&jsonrpc_line("rpc.ping", json!([]), 1));
    let answer = raw.json();
    assert_eq!(answer["error"]["code"], DENIED, "{answer}");
    assert_eq!(answer["id"], Value::Null);
    assert!(raw.is_closed());
    // MCP1: the same line, written at accept before the protocol is known, then the close.
    let mut raw = Raw::connect(&unix);
    let _ = raw.send_lossy(&mcp1_request(5, "rpc.ping", b"", false));
    let answer = raw.json();
    assert_eq!(answer["error"]["code"], DENIED, "{answer}");
    assert!(raw.is_closed());
    // TCP is not subject to the Unix allow-list; it reports the refusals.
    let stats = connect(&tcp, Protocol::JsonRpc)
        .call("rpc.stats", None)
        .expect("stats");
    assert_eq!(stats["access"]["denied"], 2, "{stats}");
}

#[test]
fn the_allow_list_admits_by_primary_group_too() {
    let server = start_with(|c| {
        c.access.allow = AllowList {
            any: false,
            uids: vec![uid().wrapping_add(4242)],
            gids: vec![gid()],
        };
    });
    let unix = server.endpoints().remove(0);
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        assert_eq!(
            connect(&unix, protocol)
                .call("rpc.ping", None)
                .expect("ping"),
            "pong"
        );
    }
}

fn with_token() -> common::TestServer {
    start_with(|c| {
        c.access.tokens = vec![NamedToken::owner(AuthToken::new(TOKEN))];
        c.access.tcp_anonymous = false;
    })
}

#[test]
fn tcp_clients_must_authenticate_first_in_either_protocol() {
    let server = with_token();
    let [unix, tcp] = <[Endpoint; 2]>::try_from(server.endpoints()).expect("two");
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        // Anything else first: an authentication error, then the close.
        let mut client = connect(&tcp, protocol);
        assert_eq!(rpc_code(client.call("rpc.ping", None)), UNAUTHORIZED);
        assert!(
            client.call("rpc.ping", None).is_err(),
            "closed after the error"
        );
        // A wrong token: the same.
        let mut client = connect(&tcp, protocol);
        assert_eq!(
            rpc_code(client.call("rpc.auth", Some(json!({"token": "guess"})))),
            UNAUTHORIZED
        );
        assert!(
            client.call("rpc.ping", None).is_err(),
            "closed after the error"
        );
        // The right token, by name or by position: served from then on.
        let mut client = connect(&tcp, protocol);
        client.authenticate(TOKEN).expect("authenticate");
        assert_eq!(client.call("rpc.ping", None).expect("ping"), "pong");
        let mut client = connect(&tcp, protocol);
        let ok = client.call("rpc.auth", Some(json!([TOKEN]))).expect("auth");
        assert_eq!(ok, true);
        assert_eq!(
            client.call("test.add", Some(json!([2, 3]))).expect("add"),
            5
        );
        // Unix peers are let in by their credentials; rpc.auth still checks.
        let mut local = connect(&unix, protocol);
        assert_eq!(local.call("rpc.ping", None).expect("ping"), "pong");
        assert_eq!(
            rpc_code(local.call("rpc.auth", Some(json!({"token": "guess"})))),
            UNAUTHORIZED
        );
        assert_eq!(
            local
                .call("rpc.auth", Some(json!({"token": TOKEN})))
                .expect("auth"),
            true
        );
    }
    let mut local = connect(&unix, Protocol::JsonRpc);
    let stats = local.call("rpc.stats", None).expect("stats");
    assert_eq!(stats["access"]["auth_failures"], 4, "{stats}");
    assert_eq!(stats["access"]["auth_successes"], 4, "{stats}");
}

#[test]
fn the_mcp1_token_may_be_a_raw_body_and_a_batch_first_is_refused() {
    let server = with_token();
    let tcp = server.endpoints().remove(1);
    let mut raw = Raw::connect(&tcp);
    raw.send(&mcp1_request(9, "rpc.auth", TOKEN.as_bytes(), true));
    let frame = raw.frame();
    assert_eq!((frame.kind, frame.id), (2, 9), "{:?}", frame.payload);
    raw.send(&mcp1_request(10, "rpc.echo", b"\"hi\"", false));
    assert_eq!(raw.frame().json(), "hi");
    // A JSON-RPC batch is not rpc.auth: refused with id null.
    let mut raw = Raw::connect(&tcp);
    raw.send(br#"[{"jsonrpc":"2.0","method":"rpc.auth","params":{"token":"x"},"id":1}]"#);
    raw.send(b"\n");
    let answer = raw.json();
    assert_eq!(answer["error"]["code"], UNAUTHORIZED, "{answer}");
    assert_eq!(answer["id"], Value::Null);
    assert!(raw.is_closed());
    // A blank line before rpc.auth is not a request: it changes nothing.
    let mut raw = Raw::connect(&tcp);
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.auth\",\"params\":[\"");
    raw.send(TOKEN.as_bytes());
    raw.send(b"\"],\"id\":\"a\"}\n");
    let answer = raw.json();
    assert_eq!(answer, json!({"jsonrpc": "2.0", "result": true, "id": "a"}));
}

#[test]
fn without_a_token_rpc_auth_says_authentication_is_off() {
    let server = common::start();
    for endpoint in server.endpoints() {
        let mut client = connect(&endpoint, Protocol::JsonRpc);
        assert_eq!(
            rpc_code(client.call("rpc.auth", Some(json!([TOKEN])))),
            UNAUTHORIZED
        );
        assert_eq!(client.call("rpc.ping", None).expect("still open"), "pong");
    }
}

fn config_on(tcp: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        unix: None,
        tcp: tcp.parse().ok(),
        workers: 1,
        ..Config::default()
    };
    (dir, config)
}

#[test]
fn protected_mode_refuses_a_public_address_without_a_token() {
    let (_dir, mut config) = config_on("0.0.0.0:0");
    match Server::bind(&config, Router::new()) {
        Err(e @ ServerError::Unprotected(_)) => {
            let message = e.to_string();
            assert!(message.contains("protected mode"), "{message}");
            assert!(message.contains("auth-token-file"), "{message}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("bound a public address without a token"),
    }
    config.access.tokens = vec![NamedToken::owner(AuthToken::new(TOKEN))];
    assert!(
        matches!(
            Server::bind(&config, Router::new()),
            Err(ServerError::Unprotected(_))
        ),
        "a token without TLS is not enough (tests/tls.rs binds one with TLS)"
    );
    config.access.tokens.clear();
    config.protected_mode = false;
    assert!(
        Server::bind(&config, Router::new()).is_ok(),
        "explicitly unprotected"
    );
    let (_dir, config) = config_on("127.0.0.1:0");
    assert!(
        Server::bind(&config, Router::new()).is_ok(),
        "loopback needs no token"
    );
}

#[test]
fn junctiond_refuses_a_public_address_without_a_token_and_says_why() {
    let out = common::junctiond()
        .args(["--unix", "off", "--tcp", "0.0.0.0:0"])
        .env_remove("JUNCTION_AUTH_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run junctiond");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(stderr.contains("protected mode"), "{stderr}");
}

/// Runs junctiond with a token file at debug level, authenticates once
/// wrongly and once rightly over TCP through the CLI, and checks the token
/// appears nowhere in the log, the printed configuration or the CLI output.
#[test]
fn the_token_is_never_logged_or_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "not-the-token-at-all").expect("wrong file");
    let daemon_args = |tcp: &str, extra: &[&str]| {
        let mut cmd = common::junctiond();
        cmd.args(["--unix", "off", "--tcp", tcp, "--log", "debug"])
            .arg("--auth-token-file")
            .arg(&token_file)
            .args(extra)
            .stdin(Stdio::null());
        cmd
    };
    let printed = daemon_args("127.0.0.1:0", &["--print-config"])
        .output()
        .expect("print-config");
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("auth-token-file"), "{printed}");
    assert!(!printed.contains(TOKEN), "{printed}");

    // Find a free port, then run the daemon on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let daemon = daemon_args(&addr, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let cli = |token: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_junction"))
            .args(["--tcp", &addr, "--timeout", "10s", "--token-file"])
            .arg(token)
            .args(["call", "rpc.ping"])
            .stdin(Stdio::null())
            .output()
            .expect("junction")
    };
    let mut ok = cli(&token_file);
    for _ in 0..100 {
        if ok.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        ok = cli(&token_file);
    }
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "\"pong\"");
    let refused = cli(&wrong_file);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("-32007"), "{stderr}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let out = daemon.wait_with_output().expect("daemon exit");
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("authentication failed"), "{log}");
    assert!(
        !log.contains(TOKEN),
        "the token leaked into the log:\n{log}"
    );
    assert!(
        !log.contains("not-the-token-at-all"),
        "an offered token leaked:\n{log}"
    );
}
