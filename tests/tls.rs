//! TLS on the TCP listener: our client, Python's ssl module, openssl
//! s_client and the junction CLI; JSON-RPC and MCP1 over TLS; mutual TLS
//! identities under the policy; TLS-only ports; protected mode; bad
//! handshakes. Runs on the backend JUNCTION_BACKEND names.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::pki::Pki;
use common::{PATIENCE, Raw, TestServer};
use junction::Protocol;
use junction::access::{AuthToken, NamedToken};
use junction::client::{Client, ClientError, Endpoint};
use junction::policy::{Policy, Rule};
use junction::{Config, Router, Server, ServerError};
use serde_json::{Value, json};

const TOKEN: &str = "0123456789abcdef-tls-test-token";

/// A server with TLS set by `remote` (and whatever `adjust` changes), and its PKI.
fn tls_server(
    remote: impl FnOnce(&Pki) -> junction::net::tls::RemoteConfig,
    adjust: impl FnOnce(&mut Config),
) -> (TestServer, Pki, tempfile::TempDir) {
    let certs = tempfile::tempdir().expect("tempdir");
    let pki = Pki::new(certs.path());
    let settings = remote(&pki);
    let server = common::start_with(|c| {
        c.remote = settings;
        adjust(c);
    });
    (server, pki, certs)
}

fn tcp(server: &TestServer) -> String {
    server.running.tcp_addr().expect("tcp").to_string()
}

fn connect(server: &TestServer, pki: &Pki, protocol: Protocol) -> Client {
    let mut client =
        Client::connect_tls(&tcp(server), &pki.options(), protocol).expect("TLS connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    client
}

fn stats(server: &TestServer) -> Value {
    server.stats()
}

#[test]
fn json_rpc_and_mcp1_work_over_tls() {
    let (server, pki, _certs) = tls_server(Pki::remote, |_| {});
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut client = connect(&server, &pki, protocol);
        assert_eq!(client.call("rpc.ping", None).expect("ping"), "pong");
        assert_eq!(
            client.call("test.add", Some(json!([40, 2]))).expect("add"),
            42
        );
        // Larger than one TLS record both ways.
        let big = json!({ "text": "x".repeat(200_000) });
        assert_eq!(
            client.call("rpc.echo", Some(big.clone())).expect("echo"),
            big
        );
        // Pipelined.
        let ids: Vec<u64> = (0..100)
            .map(|i| client.send("test.add", Some(json!([i, 1]))).expect("send"))
            .collect();
        client.flush().expect("flush");
        for (i, id) in ids.into_iter().enumerate() {
            let answer = client.wait(id).expect("answer").result.expect("ok");
            assert_eq!(answer.into_json().expect("json"), json!(i + 1));
        }
    }
    let remote = &stats(&server)["remote"];
    assert!(remote["tls_handshakes"].as_u64() >= Some(2), "{remote}");
    assert_eq!(remote["tls_failures"], 0, "{remote}");
    // The Unix socket is untouched by TLS.
    let unix = server.endpoints()[0].clone();
    assert_eq!(server.client(&unix).call("rpc.ping", None).unwrap(), "pong");
}

#[test]
fn a_tls_only_port_refuses_plaintext_and_both_serves_both() {
    let (server, pki, _certs) = tls_server(Pki::remote, |_| {});
    let mut raw = Raw::connect(&Endpoint::Tcp(tcp(&server)));
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n");
    let refusal = raw.json();
    assert_eq!(refusal["error"]["code"], -32007, "{refusal}");
    assert!(
        refusal["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TLS only"),
        "{refusal}"
    );
    assert!(raw.is_closed());
    let mut mcp1 = Raw::connect(&Endpoint::Tcp(tcp(&server)));
    mcp1.send(&common::mcp1_request(1, "rpc.ping", b"", false));
    assert!(
        String::from_utf8_lossy(&mcp1.rest()).contains("TLS only"),
        "an MCP1 client is told too"
    );
    assert_eq!(stats(&server)["remote"]["tls_plaintext_refused"], 2);
    drop(server);

    let (server, pki2, _certs2) = tls_server(
        |p| junction::net::tls::RemoteConfig {
            plaintext: true,
            ..p.remote()
        },
        |_| {},
    );
    let _ = pki;
    let plain = Endpoint::Tcp(tcp(&server));
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut client = Client::connect_with(&plain, protocol).expect("plain");
        assert_eq!(client.call("rpc.ping", None).expect("plain ping"), "pong");
        let mut secure = connect(&server, &pki2, protocol);
        assert_eq!(secure.call("rpc.ping", None).expect("tls ping"), "pong");
    }
}

#[test]
fn python_ssl_and_openssl_s_client_are_served() {
    let (server, pki, _certs) = tls_server(Pki::remote, |_| {});
    let port = server.running.tcp_addr().unwrap().port();
    if let Some(python) = common::external_command("python3") {
        let script = r#"
import json, socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
with socket.create_connection(("127.0.0.1", int(sys.argv[2]))) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        f = tls.makefile("rwb")
        f.write(b'{"jsonrpc":"2.0","method":"test.add","params":[2,3],"id":7}\n')
        f.flush()
        print(json.loads(f.readline())["result"], tls.version())
"#;
        let out = Command::new(python)
            .args(["-c", script])
            .arg(&pki.ca)
            .arg(port.to_string())
            .output()
            .expect("python3");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with("5 TLSv1."), "{stdout}");
    }
    if let Some(openssl) = common::external_command("openssl") {
        let mut child = Command::new(openssl)
            .args(["s_client", "-quiet", "-no_ign_eof", "-verify_return_error"])
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .args(["-servername", "localhost", "-CAfile"])
            .arg(&pki.ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl");
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n")
            .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("s_client output");
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            serde_json::from_str::<Value>(&line).expect("json"),
            json!({"jsonrpc": "2.0", "result": "pong", "id": 1})
        );
    }
}

#[test]
fn the_cli_speaks_tls_with_and_without_a_client_certificate() {
    let (server, pki, _certs) = tls_server(
        |p| p.mutual(false),
        |c| {
            c.access.tcp_anonymous = false;
            c.access.tokens = vec![NamedToken::owner(AuthToken::new(TOKEN))];
            c.access.policy = Policy::new(vec![
                Rule::from_flag("cert:agent-7:call:test.*", false).unwrap(),
            ]);
        },
    );
    let agent = pki.client("agent", "agent-7", None);
    let token = pki.dir.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let junction = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_junction"))
            .args(["--tcp", &tcp(&server), "--tls", "--ca"])
            .arg(&pki.ca)
            .args(args)
            .env_remove("JUNCTION_AUTH_TOKEN_FILE")
            .env_remove("JUNCTION_UNIX")
            .output()
            .expect("junction")
    };
    for proto in ["jsonrpc", "mcp1"] {
        let out = junction(&[
            "--proto",
            proto,
            "--cert",
            agent.cert.to_str().unwrap(),
            "--key",
            agent.key.to_str().unwrap(),
            "call",
            "test.add",
            "[1,2]",
        ]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
        let out = junction(&[
            "--proto",
            proto,
            "--token-file",
            token.to_str().unwrap(),
            "call",
            "rpc.ping",
        ]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"pong\"");
    }
    // The wrong name for the daemon's certificate is refused by the client.
    let out = junction(&["--server-name", "elsewhere.example", "call", "rpc.ping"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not valid for name"),
        "{out:?}"
    );
}

#[test]
fn a_client_certificate_is_the_identity_the_policy_judges() {
    let (server, pki, _certs) = tls_server(
        |p| p.mutual(true),
        |c| {
            c.access.tcp_anonymous = false;
            c.access.policy = Policy::new(vec![
                Rule::from_flag("cert:agent-7:call:test.*", false).unwrap(),
                Rule::from_flag("cert:builder.example:call:rpc.*", false).unwrap(),
                Rule::from_flag("cert:builder.example:call:test.add", true).unwrap(),
            ]);
        },
    );
    let addr = tcp(&server);
    // CN only: the identity is the common name.
    let agent = pki.client("agent", "agent-7", None);
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut client =
            Client::connect_tls(&addr, &pki.options_with(&agent), protocol).expect("mtls");
        client.set_timeout(Some(PATIENCE)).unwrap();
        assert_eq!(client.call("test.add", Some(json!([1, 1]))).unwrap(), 2);
        let me = client.call("rpc.clients", None).expect("clients");
        assert_eq!(me[0]["identity"], "cert:agent-7", "{me}");
        assert_eq!(me[0]["tls"], true, "{me}");
        assert_eq!(me[0]["authenticated"], true, "{me}");
    }
    // A SAN DNS name wins over the CN; a deny rule refuses it.
    let builder = pki.client("builder", "ignored-cn", Some("builder.example"));
    let mut client =
        Client::connect_tls(&addr, &pki.options_with(&builder), Protocol::JsonRpc).unwrap();
    client.set_timeout(Some(PATIENCE)).unwrap();
    let me = client.call("rpc.clients", None).expect("clients");
    assert_eq!(me[0]["identity"], "cert:builder.example", "{me}");
    match client.call("test.add", Some(json!([1, 1]))) {
        Err(ClientError::Rpc(e)) => assert_eq!(e.code, -32008, "{e:?}"),
        other => panic!("denied call answered: {other:?}"),
    }
    // A certificate from another CA, or none at all, fails the handshake.
    let stranger = pki.stranger("stranger", "agent-7");
    assert!(
        Client::connect_tls(&addr, &pki.options_with(&stranger), Protocol::JsonRpc)
            .and_then(|mut c| c.call("rpc.ping", None))
            .is_err()
    );
    assert!(
        Client::connect_tls(&addr, &pki.options(), Protocol::JsonRpc)
            .and_then(|mut c| c.call("rpc.ping", None))
            .is_err()
    );
    let remote = &stats(&server)["remote"];
    assert!(remote["tls_failures"].as_u64() >= Some(2), "{remote}");
    assert!(remote["tls_client_certs"].as_u64() >= Some(3), "{remote}");
}

#[test]
fn optional_client_certificates_leave_the_token_for_the_others() {
    let (server, pki, _certs) = tls_server(
        |p| p.mutual(false),
        |c| {
            c.access.tcp_anonymous = false;
            c.access.tokens = vec![NamedToken::owner(AuthToken::new(TOKEN))];
        },
    );
    let mut client = connect(&server, &pki, Protocol::JsonRpc);
    match client.call("rpc.ping", None) {
        Err(ClientError::Rpc(e)) => assert_eq!(e.code, -32007),
        other => panic!("served without a token or a certificate: {other:?}"),
    }
    let mut client = connect(&server, &pki, Protocol::Mcp1);
    client.authenticate(TOKEN).expect("token");
    assert_eq!(client.call("rpc.ping", None).unwrap(), "pong");
}

fn public(pki: &Pki, adjust: impl FnOnce(&mut Config)) -> Result<(), ServerError> {
    let mut config = Config {
        unix: None,
        tcp: "0.0.0.0:0".parse().ok(),
        workers: 1,
        backend: common::backend(),
        ..Config::default()
    };
    config.remote = pki.remote();
    config.access.tokens = vec![NamedToken::owner(AuthToken::new(TOKEN))];
    adjust(&mut config);
    Server::bind(&config, Router::new()).map(drop)
}

#[test]
fn protected_mode_wants_tls_and_a_token_or_mutual_tls_off_loopback() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    public(&pki, |_| {}).expect("TLS only plus a token");
    public(&pki, |c| {
        c.access.tokens.clear();
        c.remote = pki.mutual(true);
    })
    .expect("mutual TLS alone");
    let refused = [
        public(&pki, |c| c.remote = Default::default()),
        public(&pki, |c| c.remote.plaintext = true),
        public(&pki, |c| c.access.tokens.clear()),
        public(&pki, |c| {
            c.access.tokens.clear();
            c.remote = pki.mutual(false);
        }),
    ];
    for (i, result) in refused.into_iter().enumerate() {
        match result {
            Err(e @ ServerError::Unprotected(_)) => {
                assert!(e.to_string().contains("TLS"), "{e}");
            }
            other => panic!("case {i}: {other:?}"),
        }
    }
    public(&pki, |c| {
        c.remote = Default::default();
        c.protected_mode = false;
    })
    .expect("protected mode off");
    // The daemon says why and stops.
    let out = common::junctiond()
        .args(["--unix", "off", "--tcp", "0.0.0.0:0", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .args(["--tls-mode", "both"])
        .env_remove("JUNCTION_AUTH_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("junctiond");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("protected mode"), "{stderr}");
    assert!(stderr.contains("tls-mode = only"), "{stderr}");
}

#[test]
fn bad_tls_settings_stop_the_start() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    let run = |args: &[&str]| {
        common::junctiond()
            .args(["--unix", "off", "--tcp", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("junctiond")
    };
    let cert = pki.cert.to_str().unwrap();
    let ca = pki.ca.to_str().unwrap();
    for (args, says) in [
        (vec!["--tls-cert", cert], "needs --tls-key"),
        (vec!["--tls-cert", cert, "--tls-key", ca], "private key"),
        (vec!["--tls-cert", ca, "--tls-key", ca], "private key"),
        (vec!["--tls-mode", "both"], "needs --tls-cert"),
        (vec!["--proxy-protocol-from", "10.0.0.0/40"], "prefix"),
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn garbage_and_stalled_handshakes_are_closed_and_others_are_served() {
    let (server, pki, _certs) = tls_server(Pki::remote, |c| {
        c.auth_timeout = Duration::from_millis(300);
        c.sniff_timeout = Duration::from_secs(60);
    });
    let addr = tcp(&server);
    // A ClientHello cut short inside its record: an alert, then a close.
    let mut garbage = TcpStream::connect(&addr).unwrap();
    garbage.set_read_timeout(Some(PATIENCE)).unwrap();
    garbage
        .write_all(b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff")
        .unwrap();
    let mut reply = Vec::new();
    let _ = garbage.read_to_end(&mut reply);
    assert_eq!(reply.first(), Some(&0x15), "a TLS alert record: {reply:?}");
    // Not even a handshake: closed.
    let mut noise = TcpStream::connect(&addr).unwrap();
    noise.set_read_timeout(Some(PATIENCE)).unwrap();
    noise.write_all(b"\x16\x03\x01\xff\xffnoise").unwrap();
    let _ = noise.read_to_end(&mut reply);
    // A handshake that starts and stalls.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    stalled.write_all(b"\x16\x03\x01").unwrap();
    // Meanwhile others are served.
    let mut client = connect(&server, &pki, Protocol::JsonRpc);
    assert_eq!(client.call("rpc.ping", None).unwrap(), "pong");
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a word: {rest:?}");
    assert_eq!(client.call("rpc.ping", None).unwrap(), "pong");
    let remote = &stats(&server)["remote"];
    assert_eq!(remote["tls_failures"], 2, "{remote}");
    assert_eq!(remote["tls_handshake_timeouts"], 1, "{remote}");
}

#[test]
fn handshakes_count_among_the_connections_waiting_to_authenticate() {
    let (server, pki, _certs) = tls_server(Pki::remote, |c| {
        c.access.tcp_anonymous = false;
        c.access.tokens = vec![NamedToken::owner(AuthToken::new(TOKEN))];
        c.max_unauthenticated = 1;
    });
    let addr = tcp(&server);
    // One handshake left hanging holds the only pre-authentication slot.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(b"\x16\x03\x01").unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while stats(&server)["gate"]["unauthenticated"] != 1 {
        assert!(std::time::Instant::now() < deadline, "never counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut refused = Raw::connect(&Endpoint::Tcp(addr.clone()));
    let line = refused.json();
    assert_eq!(line["error"]["code"], -32002, "{line}");
    assert_eq!(stats(&server)["gate"]["refused_unauthenticated"], 1);
    // Once it is gone, a TLS client authenticates and is served.
    drop(stalled);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let attempt = Client::connect_tls(&addr, &pki.options(), Protocol::JsonRpc)
            .and_then(|mut c| c.authenticate(TOKEN).map(|()| c));
        if let Ok(mut client) = attempt {
            assert_eq!(client.call("rpc.ping", None).unwrap(), "pong");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_tls_peer_provides_methods_and_receives_events() {
    use junction::client::{Body, Incoming};
    let (server, pki, _certs) = tls_server(
        |p| p.mutual(true),
        |c| {
            c.access.tcp_anonymous = false;
            c.access.policy = Policy::new(vec![
                Rule::from_flag("cert:agent-7:provide:tls.*", false).unwrap(),
                Rule::from_flag("cert:agent-7:subscribe:news.*", false).unwrap(),
            ]);
        },
    );
    let agent = pki.client("agent", "agent-7", None);
    let unix = server.endpoints()[0].clone();
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut provider =
            Client::connect_tls(&tcp(&server), &pki.options_with(&agent), protocol).unwrap();
        provider.set_timeout(Some(PATIENCE)).unwrap();
        // The previous round's provider has closed, but the daemon may not
        // have read its close yet: its name is released then (-32020 until).
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            match provider.register(&["tls.*"]) {
                Ok(_) => break,
                Err(ClientError::Rpc(e))
                    if e.code == -32020 && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("register: {e:?}"),
            }
        }
        provider.subscribe(&["news.*"]).expect("subscribe");
        let answers = std::thread::spawn(move || {
            let mut events = 0;
            while events < 20 {
                match provider.next_message().expect("message") {
                    Incoming::Request(call) => {
                        let params = call.params.unwrap_or(Body::Json(Value::Null));
                        provider.respond(call.id, Ok(params)).expect("respond");
                    }
                    Incoming::Event(event) => {
                        assert_eq!(event.data["n"], events, "in order");
                        assert_eq!(event.data["pad"].as_str().map(str::len), Some(20_000));
                        events += 1;
                    }
                    _ => {}
                }
            }
        });
        let mut caller = server.client(&unix);
        let big = json!({ "text": "y".repeat(100_000) });
        for _ in 0..5 {
            assert_eq!(caller.call("tls.echo", Some(big.clone())).unwrap(), big);
        }
        for n in 0..20 {
            caller
                .publish("news.today", json!({ "n": n, "pad": "z".repeat(20_000) }))
                .expect("publish");
        }
        answers.join().expect("provider thread");
    }
}
