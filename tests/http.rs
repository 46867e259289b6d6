//! HTTP/1.1 on the daemon's sockets (proto/http.md): the endpoints
//! (/healthz, /metrics, /stats, /clients), JSON-RPC over POST, keep-alive
//! and pipelining, the bearer token, the Host and Origin allow-lists, bad
//! input; over raw sockets, curl, and Python's http.client with the
//! prometheus_client parser. Both transports, both backends.

mod common;

use common::bus_peer::{BusPeer, Msg};
use junction::Protocol;

use std::collections::HashMap;
use std::process::Command;

use common::{PATIENCE, Raw, TestServer, start, start_with};
use junction::access::{AuthToken, NamedToken};
use junction::client::Endpoint;
use serde_json::{Value, json};

/// A parsed response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Reads one response (its body by Content-Length; none for HEAD, 1xx, 204).
fn read_reply(raw: &mut Raw, head_only: bool) -> Reply {
    let status_line = raw.line().expect("a status line, not EOF");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let mut headers = HashMap::new();
    loop {
        let line = raw.line().expect("a header line");
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("name: value");
        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .map_or(0, |v| v.parse().expect("length"));
    let body = if head_only || status < 200 || status == 204 {
        Vec::new()
    } else {
        raw.exact(len)
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

fn post(body: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn exchange(endpoint: &Endpoint, request: &str) -> Reply {
    let mut raw = Raw::connect(endpoint);
    raw.send(request.as_bytes());
    read_reply(&mut raw, request.starts_with("HEAD"))
}

#[test]
fn endpoints_answer_on_both_transports_with_keep_alive_and_pipelining() {
    let server = start();
    for endpoint in server.endpoints() {
        let health = exchange(&endpoint, &get("/healthz"));
        assert_eq!(
            (health.status, health.text().as_str()),
            (200, "ok\n"),
            "{endpoint}"
        );
        let mut raw = Raw::connect(&endpoint);
        // Three requests in one write: three responses, in order, on one connection.
        let batch = format!(
            "{}{}{}",
            get("/stats"),
            post(r#"{"jsonrpc":"2.0","method":"test.sleep","params":[30],"id":7}"#),
            get("/clients")
        );
        raw.send(batch.as_bytes());
        let stats = read_reply(&mut raw, false);
        assert_eq!(stats.status, 200);
        assert_eq!(stats.header("content-type"), Some("application/json"));
        assert_eq!(stats.json()["backend"], common::backend_name());
        let slow = read_reply(&mut raw, false);
        assert_eq!(slow.json(), json!({"jsonrpc":"2.0","result":30,"id":7}));
        let clients = read_reply(&mut raw, false);
        let list = clients.json();
        let me = list
            .as_array()
            .expect("a list")
            .iter()
            .find(|c| c["carrier"] == "http")
            .unwrap_or_else(|| panic!("the HTTP connection itself: {list}"));
        assert_eq!(me["protocol"], "jsonrpc");
        // HEAD: the headers of GET, no body; the connection stays open.
        raw.send(b"HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let head = read_reply(&mut raw, true);
        assert_eq!(
            (head.status, head.header("content-length")),
            (200, Some("3"))
        );
        raw.send(get("/healthz").as_bytes());
        assert_eq!(read_reply(&mut raw, false).status, 200);
        // Connection: close is honoured.
        raw.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let last = read_reply(&mut raw, false);
        assert_eq!(last.header("connection"), Some("close"));
        assert!(raw.is_closed());
    }
    let stats = server.stats();
    assert!(stats["http"]["requests"].as_u64().unwrap() >= 14, "{stats}");
    common::assert_healthy(&server);
    common::assert_healthy_mcp1(&server);
}

#[test]
fn json_rpc_over_post() {
    let server = start_with(|c| c.max_frame = 4096);
    for endpoint in server.endpoints() {
        let one = exchange(
            &endpoint,
            &post(r#"{"jsonrpc":"2.0","method":"rpc.ping","id":1}"#),
        );
        assert_eq!(one.status, 200);
        assert_eq!(one.header("content-type"), Some("application/json"));
        assert_eq!(one.json(), json!({"jsonrpc":"2.0","result":"pong","id":1}));
        // A batch, its entries across the pool and the loop.
        let batch = exchange(
            &endpoint,
            &post(
                r#"[{"jsonrpc":"2.0","method":"test.add","params":[1,2],"id":1},
                    {"jsonrpc":"2.0","method":"test.sleep","params":[5],"id":2},
                    {"jsonrpc":"2.0","method":"rpc.ping"},
                    {"jsonrpc":"2.0","method":"nope","id":3}]"#,
            ),
        );
        let mut entries = batch.json().as_array().expect("array").clone();
        entries.sort_by_key(|e| e["id"].as_u64());
        assert_eq!(entries.len(), 3, "the notification gets no entry");
        assert_eq!(entries[0]["result"], 3);
        assert_eq!(entries[1]["result"], 5);
        assert_eq!(entries[2]["error"]["code"], -32601);
        // Notifications only: 204 and no body.
        let quiet = exchange(&endpoint, &post(r#"{"jsonrpc":"2.0","method":"rpc.ping"}"#));
        assert_eq!((quiet.status, quiet.body.len()), (204, 0));
        // JSON-RPC errors travel in a 200.
        let bad = exchange(&endpoint, &post("{not json"));
        assert_eq!(bad.status, 200);
        assert_eq!(bad.json()["error"]["code"], -32700);
        let empty = exchange(&endpoint, &post(""));
        assert_eq!(empty.json()["error"]["code"], -32700);
        // A push channel is needed for these.
        let subscribe = exchange(
            &endpoint,
            &post(r#"{"jsonrpc":"2.0","method":"bus.subscribe","params":{"topics":["a"]},"id":9}"#),
        );
        assert_eq!(
            subscribe.json()["error"]["code"],
            -32600,
            "{}",
            subscribe.text()
        );
        assert!(subscribe.text().contains("WebSocket"));
        // A chunked body, in three chunks.
        let body = r#"{"jsonrpc":"2.0","method":"rpc.echo","params":["chunked"],"id":4}"#;
        let (a, b) = body.split_at(10);
        let chunked = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        assert_eq!(
            exchange(&endpoint, &chunked).json()["result"],
            json!(["chunked"])
        );
        // Statuses for what is not JSON-RPC over POST.
        let statuses = [
            ("GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n".to_string(), 404),
            ("PUT / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".into(), 405),
            ("POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".into(), 405),
            ("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}".into(), 415),
            ("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}".into(), 415),
            ("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\r\n".into(), 411),
            (format!("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", 4097), 413),
            ("GET / HTTP/1.1\r\n\r\n".into(), 400),
            ("GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n".into(), 400),
            ("GET / HTTP/3.0\r\nHost: localhost\r\n\r\n".into(), 505),
            (format!("GET / HTTP/1.1\r\nHost: localhost\r\nX: {}\r\n\r\n", "x".repeat(9000)), 431),
        ];
        for (request, status) in statuses {
            let reply = exchange(&endpoint, &request);
            assert_eq!(reply.status, status, "{request:.80}: {}", reply.text());
        }
        // A chunked body past max-frame: 413 before it is all read.
        let mut raw = Raw::connect(&endpoint);
        raw.send(
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n2000\r\n",
        );
        assert_eq!(read_reply(&mut raw, false).status, 413);
        assert!(raw.is_closed());
    }
    let stats = server.stats();
    assert!(stats["http"]["errors"].as_u64().unwrap() >= 24, "{stats}");
    common::assert_healthy(&server);
}

const OWNER: &str = "owner-secret-owner-secret";
const AGENT: &str = "agent-secret-agent-secret";

/// A server with the default TCP access: token required, no anonymous.
fn with_tokens() -> TestServer {
    start_with(|c| {
        c.access = junction::access::Access {
            tokens: vec![
                NamedToken::owner(AuthToken::new(OWNER)),
                NamedToken {
                    name: "agent".into(),
                    token: AuthToken::new(AGENT),
                },
            ],
            ..junction::access::Access::default()
        };
        c.access.policy = junction::policy::Policy::new(vec![
            junction::policy::Rule::from_flag("token:agent:call:rpc.*", false).expect("rule"),
        ]);
    })
}

fn authed(path: &str, token: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n")
}

#[test]
fn bearer_tokens_authenticate_as_rpc_auth_does() {
    let server = with_tokens();
    let tcp = server.endpoints().remove(1);
    assert_eq!(exchange(&tcp, &get("/healthz")).status, 200, "open to all");
    let mut raw = Raw::connect(&tcp);
    raw.send(get("/metrics").as_bytes());
    let refused = read_reply(&mut raw, false);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    // The same connection may retry with the token.
    raw.send(authed("/stats", AGENT).as_bytes());
    assert_eq!(read_reply(&mut raw, false).status, 200);
    // A non-admin may not list clients; the owner may.
    raw.send(authed("/clients", AGENT).as_bytes());
    assert_eq!(read_reply(&mut raw, false).status, 403);
    let clients = exchange(&tcp, &authed("/clients", OWNER));
    assert_eq!(clients.status, 200);
    let identities: Vec<String> = clients
        .json()
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["identity"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        identities.iter().any(|i| i == "token:agent"),
        "{identities:?}"
    );
    // A token the policy does not let call rpc.stats: 403 for /metrics.
    let wrong = exchange(&tcp, &authed("/metrics", "not-the-token"));
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("connection"), Some("close"));
    // POST needs the token too.
    let body = r#"{"jsonrpc":"2.0","method":"rpc.ping","id":1}"#;
    let anonymous = exchange(&tcp, &post(body));
    assert_eq!(anonymous.status, 401);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {AGENT}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(exchange(&tcp, &request).json()["result"], "pong");
    // The Unix socket: the peer's credentials are its identity (root: admin).
    let unix = server.endpoints().remove(0);
    assert_eq!(exchange(&unix, &get("/clients")).status, 200);
    let stats = server.stats();
    assert!(
        stats["access"]["auth_failures"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert!(
        stats["access"]["auth_successes"].as_u64().unwrap() >= 3,
        "{stats}"
    );
}

#[test]
fn hosts_and_origins_outside_the_lists_get_403() {
    let server = start_with(|c| {
        c.access.http = junction::http::HttpAccess::resolve(
            Some(vec!["http://app.test:8000".into()]),
            None,
            None,
        );
    });
    for endpoint in server.endpoints() {
        let rebinding = "GET /stats HTTP/1.1\r\nHost: evil.example:7710\r\n\r\n";
        assert_eq!(exchange(&endpoint, rebinding).status, 403);
        let cross = "POST / HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil.example\r\n\
                     Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        let refused = exchange(&endpoint, cross);
        assert_eq!(refused.status, 403);
        assert_eq!(refused.header("access-control-allow-origin"), None);
        let allowed = exchange(
            &endpoint,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:1\r\nOrigin: http://app.test:8000\r\n\r\n",
        );
        assert_eq!(allowed.status, 200);
        assert_eq!(
            allowed.header("access-control-allow-origin"),
            Some("http://app.test:8000")
        );
    }
    assert_eq!(server.stats()["http"]["refused_origin"], 4);
}

#[test]
fn curl_scrapes_and_posts_over_tcp_and_the_unix_socket() {
    let Some(curl) = common::external_command("curl") else {
        return;
    };
    let server = start();
    let tcp = server.running.tcp_addr().expect("tcp").to_string();
    let unix = server.running.unix_path().expect("unix").to_path_buf();
    let run = |args: &[&str]| {
        let out = Command::new(&curl)
            .args(["-sS", "--max-time", "20"])
            .args(args)
            .output()
            .expect("curl runs");
        assert!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let metrics = run(&[&format!("http://{tcp}/metrics")]);
    assert!(
        metrics.contains("# TYPE junction_frames_total counter"),
        "{metrics}"
    );
    let unix_arg = unix.to_str().expect("path");
    let health = run(&["--unix-socket", unix_arg, "http://localhost/healthz"]);
    assert_eq!(health, "ok\n");
    // A body over 1 KiB: curl sends Expect: 100-continue and waits for it.
    let big = "x".repeat(2000);
    let body = json!({"jsonrpc":"2.0","method":"rpc.echo","params":[big],"id":1}).to_string();
    for url_args in [
        vec![format!("http://{tcp}/")],
        vec![
            "--unix-socket".into(),
            unix_arg.into(),
            "http://localhost/".into(),
        ],
    ] {
        let mut args: Vec<&str> = url_args.iter().map(String::as_str).collect();
        args.extend([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ]);
        let answer: Value = serde_json::from_str(&run(&args)).expect("JSON");
        assert_eq!(answer["result"][0].as_str().map(str::len), Some(2000));
    }
    // Keep-alive: curl reuses one connection for two URLs.
    let twice = run(&[
        "-w",
        "%{num_connects}\n",
        &format!("http://{tcp}/healthz"),
        &format!("http://{tcp}/healthz"),
    ]);
    assert_eq!(twice, "ok\n1\nok\n0\n");
}

const SCRAPE: &str = r#"
import http.client, json, socket, sys
from prometheus_client.parser import text_string_to_metric_families

host, port = sys.argv[1], int(sys.argv[2])

def scrape():
    conn = http.client.HTTPConnection(host, port, timeout=20)
    conn.request("GET", "/metrics")
    reply = conn.getresponse()
    assert reply.status == 200, reply.status
    kind = reply.getheader("Content-Type")
    assert kind.startswith("text/plain; version=0.0.4"), kind
    families = {}
    for family in text_string_to_metric_families(reply.read().decode()):
        families[family.name] = {
            "type": family.type,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
    conn.close()
    return families

before = scrape()
line = socket.create_connection((host, port), timeout=20)
for i in range(5):
    line.sendall(b'{"jsonrpc":"2.0","method":"rpc.ping","id":1}\n')
    assert b"pong" in line.recv(4096)
line.close()
post = http.client.HTTPConnection(host, port, timeout=20)
for i in range(3):
    post.request("POST", "/", body='{"jsonrpc":"2.0","method":"rpc.ping","id":1}',
                 headers={"Content-Type": "application/json"})
    assert json.loads(post.getresponse().read())["result"] == "pong"
post.close()
print(json.dumps({"before": before, "after": scrape()}))
"#;

fn sample(families: &Value, family: &str, labels: Value) -> f64 {
    families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"))
        .iter()
        .find(|s| {
            labels
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| s[1][k] == *v)
        })
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {family}{labels}"))
}

#[test]
fn metrics_pass_the_prometheus_client_parser_and_move_with_traffic() {
    let Some(python) = common::ci_python(&["prometheus_client"]) else {
        return;
    };
    let server = start();
    let addr = server.running.tcp_addr().expect("tcp");
    let out = Command::new(python)
        .args([
            "-c",
            SCRAPE,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let (before, after) = (&report["before"], &report["after"]);
    // The parser drops the _total suffix from counter family names.
    assert_eq!(after["junction_frames"]["type"], "counter");
    assert_eq!(after["junction_connections"]["type"], "gauge");
    assert_eq!(after["junction_memory_bytes"]["type"], "gauge");
    let backend = json!({"backend": common::backend_name()});
    assert_eq!(sample(after, "junction_info", backend), 1.0);
    let jsonrpc = json!({"protocol": "jsonrpc"});
    let http = json!({"protocol": "http"});
    let moved = |family: &str, labels: &Value| {
        sample(after, family, labels.clone()) - sample(before, family, labels.clone())
    };
    // 5 line calls and 3 POSTed calls are JSON-RPC frames; 3 POSTs plus one
    // scrape are HTTP requests.
    assert!(moved("junction_frames", &jsonrpc) >= 8.0, "{report}");
    assert!(moved("junction_frames", &http) >= 4.0, "{report}");
    assert!(moved("junction_bytes_received", &json!({})) > 0.0);
    assert!(
        moved(
            "junction_connections_accepted",
            &json!({"transport": "tcp"})
        ) >= 3.0,
        "{report}"
    );
    for family in [
        "junction_bus_routed_calls",
        "junction_access_auth_failures",
        "junction_uptime_seconds",
    ] {
        assert!(after.get(family).is_some(), "{family} missing");
    }
    let _ = PATIENCE;
}

#[test]
fn an_answer_owed_when_the_drain_begins_goes_out_with_connection_close() {
    let server = start();
    let unix = server.endpoints().remove(0);
    let mut provider = BusPeer::connect(&unix, Protocol::JsonRpc);
    provider
        .call("bus.register", json!({"names": ["hold.me"]}))
        .expect("registered");
    let tcp = server.endpoints().remove(1);
    let mut raw = Raw::connect(&tcp);
    // A routed call over POST, and a request pipelined behind it.
    raw.send(
        format!(
            "{}{}",
            post(r#"{"jsonrpc":"2.0","method":"hold.me","id":1}"#),
            get("/healthz")
        )
        .as_bytes(),
    );
    // The provider has the call: the POST is being answered.
    assert!(matches!(provider.read(), Msg::Request { .. }));
    server.running.shutdown_handle().shutdown();
    // The drain fails the calls its providers still owe; the answer says so,
    // and the connection closes after it.
    let reply = read_reply(&mut raw, false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    assert!(reply.json()["error"]["code"].is_i64(), "{}", reply.text());
    assert!(
        raw.is_closed(),
        "the pipelined request was dropped with the rest of the input"
    );
}
