//! PROXY protocol v2 from trusted proxies: the real client's address in
//! `rpc.clients`, refused from others, before TLS and sniffing; and behind
//! a real HAProxy (`send-proxy-v2`), plain and TLS. Runs on the backend
//! JUNCTION_BACKEND names.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::{PATIENCE, Raw, TestServer};
use junction::Protocol;
use junction::client::{Client, Endpoint};
use junction::net::proxy::TrustedProxies;

fn header(source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    let destination: SocketAddr = if source.is_ipv4() {
        "127.0.0.1:7710".parse().unwrap()
    } else {
        "[::1]:7710".parse().unwrap()
    };
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (source, destination),
    )
    .build()
    .unwrap()
}

const TOKEN: &str = "0123456789abcdef-proxy-test";
const AUTH: &[u8] =
    b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.auth\",\"params\":{\"token\":\"0123456789abcdef-proxy-test\"},\"id\":0}\n";

/// Clients a proxy forwards authenticate (tcp-anonymous is refused with
/// trusted proxies): the owner token, which sees every client.
fn with_token(c: &mut junction::Config) {
    use junction::access::{AuthToken, NamedToken};
    c.access.tcp_anonymous = false;
    c.access.tokens = vec![NamedToken::owner(AuthToken::new(TOKEN))];
}

fn proxied_server(trusted: &str) -> TestServer {
    common::start_with(|c| {
        with_token(c);
        c.remote.proxies = TrustedProxies::parse(trusted).unwrap();
    })
}

fn authenticated(endpoint: &Endpoint, protocol: Protocol) -> Client {
    let mut client = Client::connect_with(endpoint, protocol).expect("connect");
    client.set_timeout(Some(PATIENCE)).unwrap();
    client.authenticate(TOKEN).expect("auth");
    client
}

fn tcp(server: &TestServer) -> Endpoint {
    Endpoint::Tcp(server.running.tcp_addr().unwrap().to_string())
}

/// The addresses `rpc.clients` shows, asked over the Unix socket.
fn addresses(server: &TestServer) -> Vec<String> {
    let unix = server.endpoints()[0].clone();
    let clients = server.client(&unix).call("rpc.clients", None).unwrap();
    clients
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["address"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_trusted_proxy_gives_the_real_address_in_either_protocol() {
    let server = proxied_server("127.0.0.1");
    let mut json = Raw::connect(&tcp(&server));
    let mut bytes = header("203.0.113.7:4242");
    bytes.extend_from_slice(AUTH);
    bytes.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n");
    json.send(&bytes);
    assert_eq!(json.json()["result"], true);
    assert_eq!(json.json()["result"], "pong");
    let mut mcp1 = Raw::connect(&tcp(&server));
    // Split anywhere: the header is put together across reads.
    let mut bytes = header("[2001:db8::5]:9");
    let auth = format!("{{\"token\":\"{TOKEN}\"}}");
    bytes.extend_from_slice(&common::mcp1_request(1, "rpc.auth", auth.as_bytes(), false));
    bytes.extend_from_slice(&common::mcp1_request(2, "rpc.ping", b"", false));
    let (a, b) = bytes.split_at(7);
    mcp1.send(a);
    std::thread::sleep(Duration::from_millis(20));
    mcp1.send(b);
    assert_eq!(mcp1.frame().json(), true);
    assert_eq!(mcp1.frame().json(), "pong");
    let seen = addresses(&server);
    assert!(seen.contains(&"203.0.113.7:4242".to_string()), "{seen:?}");
    assert!(seen.contains(&"[2001:db8::5]:9".to_string()), "{seen:?}");
    // Without a header, a trusted address is served as itself.
    let mut direct = authenticated(&tcp(&server), Protocol::JsonRpc);
    assert_eq!(direct.call("rpc.ping", None).unwrap(), "pong");
    let stats = server.stats();
    // At least ours (the probe that saw HAProxy listen may count too).
    assert!(
        stats["remote"]["proxy_headers"].as_u64() >= Some(2),
        "{stats}"
    );
}

#[test]
fn a_header_from_an_untrusted_address_or_a_bad_header_is_refused() {
    let server = proxied_server("10.0.0.0/8");
    let mut raw = Raw::connect(&tcp(&server));
    let mut bytes = header("203.0.113.7:4242");
    bytes.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n");
    raw.send(&bytes);
    let reply = String::from_utf8_lossy(&raw.rest()).to_string();
    assert!(reply.contains("unrecognised protocol"), "{reply}");
    assert!(!addresses(&server).contains(&"203.0.113.7:4242".to_string()));
    drop(server);

    let server = proxied_server("127.0.0.1");
    let mut bad = Raw::connect(&tcp(&server));
    let mut bytes = junction::net::proxy::SIGNATURE.to_vec();
    bytes.extend_from_slice(&[0x21, 0x51, 0, 0]); // address family 5
    bad.send(&bytes);
    let reply = String::from_utf8_lossy(&bad.rest()).to_string();
    assert!(reply.contains("PROXY header"), "{reply}");
    assert_eq!(server.stats()["remote"]["proxy_refused"], 1);
    let mut good = authenticated(&tcp(&server), Protocol::Mcp1);
    assert_eq!(good.call("rpc.ping", None).unwrap(), "pong");
}

/// Connects with Python's ssl module to `port` (after sending `header`),
/// asks rpc.clients; returns the socket's local address and the answer.
fn python_tls_clients(pki: &Pki, port: u16, header: &[u8]) -> Option<(String, String)> {
    let python = common::external_command("python3")?;
    let script = r#"
import json, socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
raw = socket.create_connection(("127.0.0.1", int(sys.argv[2])))
raw.sendall(bytes.fromhex(sys.argv[3]))
host, port = raw.getsockname()[:2]
with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
    f = tls.makefile("rwb")
    f.write(sys.argv[4].encode() + b'{"jsonrpc":"2.0","method":"rpc.clients","id":1}\n')
    f.flush()
    auth = f.readline()
    assert json.loads(auth).get("result") is True, auth
    print(f"{host}:{port}")
    answer = json.loads(f.readline())
    assert "result" in answer, answer
    print(json.dumps(answer["result"]))
"#;
    let hex: String = header.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(python)
        .args(["-c", script])
        .arg(&pki.ca)
        .arg(port.to_string())
        .arg(hex)
        .arg(String::from_utf8_lossy(AUTH).as_ref())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (local, clients) = stdout.split_once('\n').expect("two lines");
    Some((local.to_string(), clients.to_string()))
}

#[test]
fn the_header_comes_before_tls() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    let remote = junction::net::tls::RemoteConfig {
        proxies: TrustedProxies::parse("127.0.0.1").unwrap(),
        ..pki.remote()
    };
    let server = common::start_with(|c| {
        with_token(c);
        c.remote = remote;
    });
    let port = server.running.tcp_addr().unwrap().port();
    let Some((_, clients)) = python_tls_clients(&pki, port, &header("198.51.100.9:5000")) else {
        return;
    };
    assert!(clients.contains("\"198.51.100.9:5000\""), "{clients}");
    assert_eq!(server.stats()["remote"]["tls_handshakes"], 1);
}

/// A HAProxy in front of `backend`, sending PROXY v2 headers; killed on drop.
struct Haproxy {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy(backend: SocketAddr) -> Option<Haproxy> {
    let binary = common::external_command("haproxy")?;
    let dir = tempfile::tempdir().unwrap();
    // A free port for the frontend (taken back just before HAProxy binds it).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    maxconn 64\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
             frontend junction\n    bind 127.0.0.1:{port}\n    default_backend daemon\n\
             backend daemon\n    server junctiond {backend} send-proxy-v2\n"
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("haproxy");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "HAProxy did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Haproxy {
        child,
        addr,
        _dir: dir,
    })
}

#[test]
fn behind_haproxy_rpc_clients_shows_the_original_address() {
    let server = proxied_server("127.0.0.1");
    let Some(proxy) = haproxy(server.running.tcp_addr().unwrap()) else {
        return;
    };
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut client = authenticated(&Endpoint::Tcp(proxy.addr.clone()), protocol);
        assert_eq!(client.call("rpc.ping", None).unwrap(), "pong");
        assert_eq!(
            client
                .call("test.add", Some(serde_json::json!([2, 2])))
                .unwrap(),
            4
        );
    }
    // Exactly: a raw client whose local address is known.
    let mut raw = TcpStream::connect(&proxy.addr).unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    let local = raw.local_addr().unwrap().to_string();
    raw.write_all(AUTH).unwrap();
    raw.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.clients\",\"id\":1}\n")
        .unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    let mut lines = 0;
    while lines < 2 && raw.read(&mut byte).unwrap() == 1 {
        reply.push(byte[0]);
        lines += usize::from(byte[0] == b'\n');
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.contains(&format!("\"{local}\"")), "{local}: {reply}");
    assert!(server.stats()["remote"]["proxy_headers"].as_u64() >= Some(3));
}

#[test]
fn behind_haproxy_tls_passes_through_and_the_address_is_kept() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path());
    let remote = junction::net::tls::RemoteConfig {
        proxies: TrustedProxies::parse("127.0.0.1").unwrap(),
        ..pki.remote()
    };
    let server = common::start_with(|c| {
        with_token(c);
        c.remote = remote;
    });
    let Some(proxy) = haproxy(server.running.tcp_addr().unwrap()) else {
        return;
    };
    // Our client through HAProxy, then Python's, whose local address is known.
    let mut client =
        Client::connect_tls(&proxy.addr, &pki.options(), Protocol::Mcp1).expect("tls via haproxy");
    client.set_timeout(Some(PATIENCE)).unwrap();
    client.authenticate(TOKEN).expect("auth");
    assert_eq!(client.call("rpc.ping", None).unwrap(), "pong");
    let port: u16 = proxy.addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let Some((local, clients)) = python_tls_clients(&pki, port, b"") else {
        return;
    };
    assert!(
        clients.contains(&format!("\"{local}\"")),
        "{local}: {clients}"
    );
    let stats = server.stats();
    // At least ours (the probe that saw HAProxy listen may count too).
    assert!(
        stats["remote"]["proxy_headers"].as_u64() >= Some(2),
        "{stats}"
    );
    assert_eq!(stats["remote"]["tls_handshakes"], 2, "{stats}");
}
