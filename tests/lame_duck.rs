//! The shutdown grace (lame duck, issue 17): after a shutdown request the
//! daemon keeps its listeners and serves, new connections too, while
//! `/healthz` answers 503, HTTP answers say `Connection: close`, `rpc.stats`
//! shows `"draining": true` and the service manager has `STOPPING=1`; then
//! the drain runs as before. A second signal ends the grace early; without
//! a grace nothing changes. Both transports, both protocols, both backends
//! (JUNCTION_BACKEND is passed on to the spawned daemon).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::{PATIENCE, Raw, start_with};
use junction::Protocol;
use junction::client::{Client, Endpoint};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const PROTOCOLS: [Protocol; 2] = [Protocol::JsonRpc, Protocol::Mcp1];

/// One HTTP answer read to the close: status, headers (lower-case names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /healthz` on a fresh connection; the answer is read to the end of
/// the stream, so it must carry `Connection: close` (the request asks for
/// keep-alive, the HTTP/1.1 default), or the read runs into PATIENCE.
fn healthz(endpoint: &Endpoint) -> Reply {
    http_get(endpoint, "/healthz")
}

/// `GET path` on a fresh connection (see [`healthz`]).
fn http_get(endpoint: &Endpoint, path: &str) -> Reply {
    let mut raw = Raw::connect(endpoint);
    raw.send(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    let status_line = raw.line().expect("a status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let line = raw.line().expect("a header line");
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("content-length");
    let body = raw.exact(length);
    let reply = Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    if reply.header("connection") == Some("close") {
        assert!(raw.is_closed(), "Connection: close, but it stayed open");
    }
    reply
}

/// rpc.ping and rpc.echo over a fresh connection in each protocol.
fn calls_answer(endpoint: &Endpoint) {
    for protocol in PROTOCOLS {
        let mut client = Client::connect_with(endpoint, protocol).expect("connect");
        client.set_timeout(Some(PATIENCE)).expect("timeout");
        assert_eq!(client.call("rpc.ping", None).expect("ping"), json!("pong"));
        let params = json!({"during": "grace", "on": endpoint.to_string()});
        let echoed = client.call("rpc.echo", Some(params.clone())).expect("echo");
        assert_eq!(echoed, params, "{endpoint} {protocol:?}");
    }
}

fn stats(endpoint: &Endpoint) -> Value {
    let mut client = Client::connect(endpoint).expect("connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    client.call("rpc.stats", None).expect("stats")
}

/// Polls `rpc.stats` until it says draining (the request is taken by the
/// loop at the end of a turn); a hang guard, not a timing assertion.
fn wait_draining(endpoint: &Endpoint) {
    let deadline = Instant::now() + PATIENCE;
    while stats(endpoint)["draining"] != json!(true) {
        assert!(Instant::now() < deadline, "never started the shutdown");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn in_the_grace_everything_serves_while_healthz_says_503() {
    let server = start_with(|c| c.shutdown_grace = Duration::from_secs(3600));
    let endpoints = server.endpoints();
    assert_eq!(stats(&endpoints[0])["draining"], json!(false));
    let metrics = http_get(&endpoints[0], "/metrics");
    assert!(
        metrics.body.lines().any(|l| l == "junction_draining 0"),
        "{}",
        metrics.body
    );
    for endpoint in &endpoints {
        let before = healthz(endpoint);
        assert_eq!((before.status, before.body.as_str()), (200, "ok\n"));
    }
    // A client connected before the request, in each protocol and transport.
    let mut old: Vec<Client> = Vec::new();
    for endpoint in &endpoints {
        for protocol in PROTOCOLS {
            let mut client = Client::connect_with(endpoint, protocol).expect("connect");
            client.set_timeout(Some(PATIENCE)).expect("timeout");
            assert_eq!(client.call("rpc.ping", None).expect("ping"), json!("pong"));
            old.push(client);
        }
    }
    let handle = server.running.shutdown_handle();
    handle.shutdown();
    wait_draining(&endpoints[0]);
    for endpoint in &endpoints {
        // Fresh connections are still accepted and served.
        let health = healthz(endpoint);
        assert_eq!(
            (health.status, health.body.as_str()),
            (503, "draining\n"),
            "{endpoint}"
        );
        assert_eq!(health.header("connection"), Some("close"), "{endpoint}");
        calls_answer(endpoint);
    }
    for client in &mut old {
        assert_eq!(client.call("rpc.ping", None).expect("ping"), json!("pong"));
    }
    let metrics = http_get(&endpoints[0], "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.lines().any(|l| l == "junction_draining 1"),
        "{}",
        metrics.body
    );
    assert!(
        server.running.unix_path().expect("unix").exists(),
        "the socket file stays during the grace"
    );
    // A second request ends the grace: the drain closes the listeners and
    // the idle connections (the loop returns only once none is left).
    handle.shutdown();
    let unix = server.running.unix_path().expect("unix").to_path_buf();
    server.running.stop().expect("the loop ends cleanly");
    for client in &mut old {
        assert!(
            client.call("rpc.ping", None).is_err(),
            "an idle connection is closed by the drain"
        );
    }
    assert!(!unix.exists(), "the drain removed the socket file");
}

#[test]
fn without_a_grace_the_drain_starts_at_once() {
    let server = start_with(|_| {});
    let endpoints = server.endpoints();
    let mut idle = Client::connect(&endpoints[0]).expect("connect");
    idle.set_timeout(Some(PATIENCE)).expect("timeout");
    assert_eq!(idle.call("rpc.ping", None).expect("ping"), json!("pong"));
    let unix = server.running.unix_path().expect("unix").to_path_buf();
    // One request, no second: the loop drains and returns by itself.
    server.running.stop().expect("the loop ends cleanly");
    assert!(idle.call("rpc.ping", None).is_err(), "closed by the drain");
    assert!(!unix.exists());
    let Endpoint::Tcp(addr) = &endpoints[1] else {
        panic!("TCP second")
    };
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the TCP listener is closed"
    );
}

/// A spawned junctiond, its stderr lines, killed on drop.
struct Daemon {
    child: Child,
    log: mpsc::Receiver<String>,
    unix: PathBuf,
    tcp: Endpoint,
}

impl Daemon {
    fn start(dir: &Path, grace: &str, notify: Option<&Path>) -> Daemon {
        let unix = dir.join("junction.sock");
        let mut command = common::junctiond();
        command
            .arg("--unix")
            .arg(&unix)
            .args(["--tcp", "127.0.0.1:0", "--tcp-anonymous", "true"])
            .args(["--shutdown-grace", grace, "--log-format", "human"])
            .env("XDG_RUNTIME_DIR", dir)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC");
        if let Some(path) = notify {
            command.env("NOTIFY_SOCKET", path);
        }
        let (child, log) = common::spawn_logged(&mut command);
        let line = common::wait_for_line(&log, "listening on tcp ");
        let addr = common::tcp_address(&line);
        Daemon {
            child,
            log,
            unix,
            tcp: Endpoint::Tcp(addr),
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, signal).expect("kill");
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        common::wait_exit(&mut self.child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads datagrams on the test's NOTIFY_SOCKET until one holds a line
/// starting with `prefix`; returns every line read.
fn notified_until(socket: &UnixDatagram, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).expect("a notification in time");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let found = text.lines().any(|l| l.starts_with(prefix));
        seen.extend(text.lines().map(str::to_string));
        if found {
            return seen;
        }
    }
}

#[test]
fn sigterm_starts_the_grace_and_a_second_one_drains_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind");
    notify.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut daemon = Daemon::start(dir.path(), "1h", Some(&notify_path));
    notified_until(&notify, "READY=1");
    let unix = Endpoint::Unix(daemon.unix.clone());
    assert_eq!(healthz(&daemon.tcp).status, 200);
    daemon.signal(Signal::SIGTERM);
    common::wait_for_line(&daemon.log, "serving for the shutdown grace");
    let stopping = notified_until(&notify, "STOPPING=1");
    assert!(
        stopping
            .iter()
            .any(|l| l.starts_with("STATUS=Stopping: still serving for")),
        "{stopping:?}"
    );
    // Everything answers, on fresh connections of both transports.
    let health = healthz(&daemon.tcp);
    assert_eq!(
        (health.status, health.header("connection")),
        (503, Some("close"))
    );
    assert_eq!(healthz(&unix).status, 503);
    calls_answer(&unix);
    calls_answer(&daemon.tcp);
    assert_eq!(stats(&daemon.tcp)["draining"], json!(true));
    // The second signal ends the grace: the drain, then exit status 0.
    daemon.signal(Signal::SIGTERM);
    common::wait_for_line(&daemon.log, "ending the shutdown grace early");
    common::wait_for_line(&daemon.log, "draining in-flight requests");
    let status = daemon.wait();
    assert!(status.success(), "{status:?}");
    assert!(!daemon.unix.exists(), "the socket file is removed");
}

#[test]
fn after_the_grace_the_drain_runs_and_the_daemon_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(dir.path(), "300ms", None);
    let unix = Endpoint::Unix(daemon.unix.clone());
    calls_answer(&unix);
    daemon.signal(Signal::SIGTERM);
    common::wait_for_line(&daemon.log, "serving for the shutdown grace");
    // No second signal: the grace ends on its own, then the drain.
    common::wait_for_line(&daemon.log, "draining in-flight requests");
    let status = daemon.wait();
    assert!(status.success(), "{status:?}");
    assert!(!daemon.unix.exists(), "the socket file is removed");
}

#[test]
fn the_grace_is_in_the_printed_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_junctiond"))
        .args(["--shutdown-grace", "15s", "--print-config"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .expect("junctiond --print-config");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.lines().any(|l| l == "shutdown-grace = \"15s\""),
        "{text}"
    );
}
