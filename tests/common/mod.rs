//! Shared test scaffolding: a real server on a temp Unix socket and a TCP
//! port 0 on loopback, test methods, and raw-socket helpers.
#![allow(dead_code)]

pub mod bus_peer;
pub mod pki;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use junction::client::{Client, Endpoint};
use junction::config::Backend;
use junction::{Config, Mode, Router, RpcError, RunningServer, Server};
use serde_json::Value;

/// How long a test waits for any single answer before failing (not a timing
/// assertion: a hang guard).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A server for one test, with its temp dir.
pub struct TestServer {
    pub running: RunningServer,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Both endpoints: Unix first, then TCP.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let unix = self.running.unix_path().expect("unix on").to_path_buf();
        let tcp = self.running.tcp_addr().expect("tcp on").to_string();
        vec![Endpoint::Unix(unix), Endpoint::Tcp(tcp)]
    }

    pub fn client(&self, endpoint: &Endpoint) -> Client {
        let mut client = Client::connect(endpoint).expect("connect");
        client.set_timeout(Some(PATIENCE)).expect("timeout");
        client
    }

    pub fn stats(&self) -> Value {
        let endpoint = &self.endpoints()[0];
        self.client(endpoint)
            .call("rpc.stats", None)
            .expect("stats")
    }
}

/// The methods tests use beside the built-ins.
pub fn test_router() -> Router {
    let mut router = Router::new();
    router
        .typed(
            "test.add",
            "adds two integers",
            Mode::Inline,
            |(a, b): (i64, i64)| Ok(a + b),
        )
        .expect("test.add");
    router
        .typed(
            "test.sleep",
            "sleeps MS milliseconds on a worker ([MS]), returns MS",
            Mode::Pooled,
            |(ms,): (u64,)| {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(ms)
            },
        )
        .expect("test.sleep");
    router
        .method(
            "test.echo_pooled",
            "rpc.echo on a worker",
            Mode::Pooled,
            |call, reply| {
                match call.params {
                    junction::Params::Json(raw) => reply.json_text(raw),
                    junction::Params::Raw(b) => reply.bytes(b),
                    junction::Params::None => {}
                }
                Ok(())
            },
        )
        .expect("test.echo_pooled");
    router
        .method("test.panic", "panics on the loop", Mode::Inline, |_, _| {
            panic!("inline boom")
        })
        .expect("test.panic");
    router
        .method(
            "test.panic_pooled",
            "panics on a worker",
            Mode::Pooled,
            |_, _| panic!("pooled boom"),
        )
        .expect("test.panic_pooled");
    router
        .method("test.fail", "answers error 4711", Mode::Inline, |_, _| {
            Err(RpcError::new(4711, "failed on purpose").data(serde_json::json!({"why": "test"})))
        })
        .expect("test.fail");
    router
        .method("test.raw", "answers raw bytes", Mode::Inline, |_, reply| {
            reply.bytes(b"\x00\x01raw");
            Ok(())
        })
        .expect("test.raw");
    router
}

/// A config on a temp dir and TCP port 0, on the backend under test.
pub fn test_config(dir: &tempfile::TempDir) -> Config {
    let backend = backend();
    Config {
        unix: Some(dir.path().join("junction.sock")),
        tcp: "127.0.0.1:0".parse().ok(),
        workers: 2,
        backend,
        access: open_tcp_access(),
        ..Config::default()
    }
}

/// The backend under test: JUNCTION_BACKEND (epoll, io-uring or auto), as
/// the daemon reads it; the suite runs once per backend. Where io_uring is
/// unavailable (macOS, a seccomp filter, `kernel.io_uring_disabled`), an
/// io-uring run says so once on stderr and uses epoll, so that the README's
/// test command passes there too.
pub fn backend() -> Backend {
    static CHOSEN: std::sync::OnceLock<Backend> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| match std::env::var("JUNCTION_BACKEND").as_deref() {
        Ok("io-uring") => match junction::io_uring_unavailable() {
            None => Backend::IoUring,
            Some(why) => {
                // Past the test harness's capture: said once per test binary.
                let _ = writeln!(
                    io::stderr(),
                    "io_uring unavailable here ({why}): this run uses epoll"
                );
                Backend::Epoll
            }
        },
        Ok("auto") => Backend::Auto,
        _ => Backend::Epoll,
    })
}

/// The backend under test by name, for a spawned junctiond's
/// JUNCTION_BACKEND or --backend (see [`backend`]).
pub fn backend_name() -> &'static str {
    backend().name()
}

/// A `junctiond` command on the backend under test (JUNCTION_BACKEND set
/// as [`backend`] chose, so that an io-uring run still starts where
/// io_uring is unavailable).
pub fn junctiond() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_junctiond"));
    command.env("JUNCTION_BACKEND", backend_name());
    command
}

/// The TCP access most tests run with: anonymous TCP on loopback, and the
/// identity `anonymous` granted what any TCP peer had before the policy
/// existed (call, publish and subscribe everything, see every client;
/// providing stays with the Unix peers and `bus-allow`). tests/policy.rs
/// and tests/access.rs cover the real defaults.
pub fn open_tcp_access() -> junction::access::Access {
    use junction::policy::{Policy, Rule};
    let rules = [
        "anonymous:call:*",
        "anonymous:publish:*",
        "anonymous:subscribe:*",
        "anonymous:admin",
    ]
    .iter()
    .map(|flag| Rule::from_flag(flag, false).expect("test rule"))
    .collect();
    junction::access::Access {
        tcp_anonymous: true,
        policy: Policy::new(rules),
        ..junction::access::Access::default()
    }
}

pub fn start() -> TestServer {
    start_with(|_| {})
}

pub fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&dir);
    adjust(&mut config);
    let server = Server::bind(&config, test_router()).expect("bind");
    TestServer {
        running: server.spawn().expect("spawn"),
        dir,
    }
}

/// A raw socket for sending arbitrary bytes.
pub enum Raw {
    Unix(BufReader<UnixStream>),
    Tcp(BufReader<TcpStream>),
}

impl Raw {
    pub fn connect(endpoint: &Endpoint) -> Raw {
        let raw = match endpoint {
            Endpoint::Unix(path) => Raw::Unix(BufReader::new(
                UnixStream::connect(path).expect("unix connect"),
            )),
            Endpoint::Tcp(addr) => Raw::Tcp(BufReader::new(
                TcpStream::connect(addr).expect("tcp connect"),
            )),
        };
        raw.set_timeout(PATIENCE);
        raw
    }

    pub fn set_timeout(&self, timeout: Duration) {
        match self {
            Raw::Unix(s) => s
                .get_ref()
                .set_read_timeout(Some(timeout))
                .expect("timeout"),
            Raw::Tcp(s) => s
                .get_ref()
                .set_read_timeout(Some(timeout))
                .expect("timeout"),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let result = match self {
            Raw::Unix(s) => s.get_mut().write_all(bytes),
            Raw::Tcp(s) => s.get_mut().write_all(bytes),
        };
        result.expect("send");
    }

    /// Sends and tolerates the peer having closed (for oversized input).
    pub fn send_lossy(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Raw::Unix(s) => s.get_mut().write_all(bytes),
            Raw::Tcp(s) => s.get_mut().write_all(bytes),
        }
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Raw::Unix(s) => s.get_ref().shutdown(Shutdown::Write),
            Raw::Tcp(s) => s.get_ref().shutdown(Shutdown::Write),
        };
    }

    /// One line without its newline; None at EOF.
    pub fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = match self {
            Raw::Unix(s) => s.read_line(&mut line),
            Raw::Tcp(s) => s.read_line(&mut line),
        }
        .expect("read line (a timeout here means the daemon hung)");
        (n > 0).then(|| line.trim_end_matches('\n').to_string())
    }

    /// One line parsed as JSON.
    pub fn json(&mut self) -> Value {
        let line = self.line().expect("a response line, not EOF");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Everything until EOF (the daemon closed); errors such as a reset count as EOF.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = match self {
            Raw::Unix(s) => s.read_to_end(&mut out),
            Raw::Tcp(s) => s.read_to_end(&mut out),
        };
        out
    }

    /// True when the daemon has closed the connection (EOF or reset), or
    /// nothing came within the read timeout. A read interrupted by a signal
    /// (EINTR: std's `read` does not retry it) is tried again: taken for a
    /// close, it let a test go on while the connection was still open.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        loop {
            let read = match self {
                Raw::Unix(s) => s.read(&mut byte),
                Raw::Tcp(s) => s.read(&mut byte),
            };
            match read {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => return matches!(read, Ok(0) | Err(_)),
            }
        }
    }
}

/// A healthy client still gets the right answers.
pub fn assert_healthy(server: &TestServer) {
    for endpoint in server.endpoints() {
        let mut client = server.client(&endpoint);
        assert_eq!(
            client.call("rpc.ping", None).expect("ping"),
            "pong",
            "{endpoint}"
        );
        let echoed = client
            .call("rpc.echo", Some(serde_json::json!({"k": [1, 2]})))
            .expect("echo");
        assert_eq!(echoed, serde_json::json!({"k": [1, 2]}));
    }
}

/// One MCP1 frame as read off a raw socket.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u16,
    pub id: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// For an ERROR frame: (code, message).
    pub fn error(&self) -> (i32, String) {
        let e = junction_proto::mcp1::parse_error_payload(&self.payload).expect("error payload");
        (e.code, e.message.to_string())
    }

    /// The payload as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).expect("json payload")
    }
}

/// Encodes an MCP1 frame with every header field chosen by the caller.
pub fn mcp1_frame(version: u8, kind: u8, flags: u16, id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = b"MCP1".to_vec();
    out.push(version);
    out.push(kind);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A REQUEST payload: method_len, method, body.
pub fn mcp1_call(method: &str, body: &[u8]) -> Vec<u8> {
    let mut out = (method.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(body);
    out
}

/// A well-formed REQUEST frame.
pub fn mcp1_request(id: u32, method: &str, body: &[u8], raw: bool) -> Vec<u8> {
    mcp1_frame(1, 1, u16::from(raw), id, &mcp1_call(method, body))
}

impl Raw {
    pub fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        match self {
            Raw::Unix(s) => s.read_exact(&mut out),
            Raw::Tcp(s) => s.read_exact(&mut out),
        }
        .expect("read (a timeout here means the daemon hung)");
        out
    }

    /// Reads one MCP1 frame.
    pub fn frame(&mut self) -> Frame {
        let header = self.exact(16);
        assert_eq!(&header[..5], b"MCP1\x01", "frame header: {header:?}");
        let length = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        Frame {
            kind: header[5],
            flags: u16::from_le_bytes([header[6], header[7]]),
            id: u32::from_le_bytes([header[8], header[9], header[10], header[11]]),
            payload: self.exact(length as usize),
        }
    }
}

/// A healthy MCP1 client still gets the right answers on both transports.
pub fn assert_healthy_mcp1(server: &TestServer) {
    for endpoint in server.endpoints() {
        let mut client =
            Client::connect_with(&endpoint, junction::Protocol::Mcp1).expect("connect");
        client.set_timeout(Some(PATIENCE)).expect("timeout");
        assert_eq!(
            client.call("rpc.ping", None).expect("ping"),
            "pong",
            "{endpoint}"
        );
        assert_eq!(
            client
                .call("rpc.echo", Some(Value::from("ok")))
                .expect("echo"),
            "ok"
        );
    }
}

impl Raw {
    /// A second handle on the same socket, for writing from another thread.
    pub fn writer(&self) -> Box<dyn Write + Send> {
        match self {
            Raw::Unix(s) => Box::new(s.get_ref().try_clone().expect("clone")),
            Raw::Tcp(s) => Box::new(s.get_ref().try_clone().expect("clone")),
        }
    }
}

impl Raw {
    /// Reads until the daemon ends the connection; Err only on a timeout
    /// or another failure that is not the end (a reset counts as an end).
    pub fn read_to_end_or_reset(&mut self) -> std::io::Result<usize> {
        let mut out = Vec::new();
        let result = match self {
            Raw::Unix(s) => s.read_to_end(&mut out),
            Raw::Tcp(s) => s.read_to_end(&mut out),
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(out.len()),
            other => other,
        }
    }
}

/// Spawns a process (a daemon, usually) with its stderr read line by line
/// on a thread: each line is echoed to the test's output and sent on the
/// channel, for [`wait_for_line`]. Standard input and output are closed.
pub fn spawn_logged(
    command: &mut std::process::Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("daemon: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a spawned daemon to exit; panics after [`PATIENCE`] (a hang
/// guard, not a timing assertion).
pub fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The next line from [`spawn_logged`]'s channel that contains `needle`,
/// skipping the others; panics after [`PATIENCE`] or when the stream ends.
pub fn wait_for_line(log: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match log.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no log line containing {needle:?}");
}

/// The address in a `listening on tcp ADDR` log line (as `wait_for_line`
/// returns it), for a spawned daemon whose port the kernel picked.
pub fn tcp_address(line: &str) -> String {
    line.rsplit("listening on tcp ")
        .next()
        .expect("address")
        .trim()
        .to_string()
}

/// Whether a missing third-party component fails the test (under CI=true,
/// where `.ci/provision.sh` installed everything) or skips it.
fn missing_component(what: &str, how: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{what} is missing under CI; .ci/provision.sh installs it ({how})"
    );
    let _ = writeln!(
        io::stderr(),
        "skipped: {what} is missing (`bash .ci/provision.sh` installs it: {how})"
    );
}

/// A command from a Debian package that a test runs for real (nats-server,
/// haproxy, chromium, promtool...), found on PATH. `None` means skip: the
/// reason is printed; under CI=true a missing command fails instead.
pub fn external_command(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    missing_component(name, "a .ci/needs/*.sh file lists its package");
    None
}

/// The venv's Python, with the PyPI packages of .ci/needs/*.sh
/// (target/ci/venv). `modules` are checked importable; `None` means skip
/// (fails under CI=true).
pub fn ci_python(modules: &[&str]) -> Option<std::path::PathBuf> {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci/venv/bin/python");
    if !python.is_file() {
        missing_component("target/ci/venv", "ci_pip creates it");
        return None;
    }
    for module in modules {
        let ok = std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            missing_component(&format!("python module {module}"), "ci_pip");
            return None;
        }
    }
    Some(python)
}

/// target/ci/node/node_modules with the npm packages of .ci/needs/*.sh
/// (for NODE_PATH); `packages` are checked present. `None` means skip
/// (fails under CI=true).
pub fn ci_node_modules(packages: &[&str]) -> Option<std::path::PathBuf> {
    let modules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci/node/node_modules");
    for package in packages {
        if !modules.join(package).join("package.json").is_file() {
            missing_component(&format!("npm package {package}"), "ci_npm");
            return None;
        }
    }
    Some(modules)
}

/// `roff`, a manual page of `name`, renders with `man -l` where man is
/// installed (and says so when it is not).
pub fn assert_man_renders(roff: &str, name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{name}.1"));
    std::fs::write(&file, roff).expect("write");
    match std::process::Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(name), "{text}");
        }
        Err(e) => eprintln!("skipped man -l: cannot run man ({e})"),
    }
}
