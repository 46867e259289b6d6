//! Running under systemd (issue 17): socket activation through the real
//! `systemd-socket-activate` with both sockets, and the `sd_notify`
//! messages received on the test's own `NOTIFY_SOCKET`. Both backends
//! (JUNCTION_BACKEND is passed on to the daemon).

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::PATIENCE;
use junction::Protocol;
use junction::client::{Client, Endpoint};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

const DAEMON: &str = env!("CARGO_BIN_EXE_junctiond");
const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";
const PROTOCOLS: [Protocol; 2] = [Protocol::JsonRpc, Protocol::Mcp1];

/// The backend under test, as the daemon's --backend.
/// The backend under test, as the daemon is started on it (epoll where
/// an io-uring run finds io_uring unavailable).
fn backend() -> &'static str {
    common::backend_name()
}

/// A daemon process, its stderr lines, killed on drop.
struct Proc {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(mut command: Command) -> Proc {
        let (child, log) = common::spawn_logged(&mut command);
        Proc { child, log }
    }

    fn wait_for_log(&self, needle: &str) -> String {
        common::wait_for_line(&self.log, needle)
    }

    fn terminate(&mut self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM");
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        common::wait_exit(&mut self.child)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free a moment ago (systemd-socket-activate binds it).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn activation_available() -> bool {
    if Path::new(ACTIVATE).exists() {
        return true;
    }
    eprintln!("skipped: {ACTIVATE} is not installed (it ships with systemd)");
    false
}

/// `junctiond` under systemd-socket-activate with a Unix and a TCP socket
/// named as a .socket unit's FileDescriptorName= would name them.
fn activated(dir: &Path, names: &str, extra_env: &[(&str, &str)]) -> (Proc, PathBuf, String) {
    let sock = dir.join("junction.sock");
    let tcp = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(ACTIVATE);
    command
        .arg("-l")
        .arg(&sock)
        .args(["-l", &tcp])
        .arg(format!("--fdname={names}"))
        .arg(format!("--setenv=JUNCTION_BACKEND={}", backend()))
        .arg(format!("--setenv=XDG_RUNTIME_DIR={}", dir.display()))
        .arg("--setenv=JUNCTION_LOG=info");
    for (name, value) in extra_env {
        command.arg(format!("--setenv={name}={value}"));
    }
    command
        .arg(DAEMON)
        .arg("--unix")
        .arg(&sock)
        .args(["--tcp", &tcp, "--log-format", "human"]);
    let proc = Proc::spawn(command);
    // systemd-socket-activate binds, then starts the daemon at the first connection.
    let deadline = Instant::now() + PATIENCE;
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate did not bind"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, sock, tcp)
}

/// Calls rpc.ping and rpc.echo over every protocol on `endpoint`, with
/// `token` (read from the file) for TCP.
fn exercise(endpoint: &Endpoint, token: Option<&Path>) {
    for protocol in PROTOCOLS {
        let mut client = Client::connect_with(endpoint, protocol).expect("connect");
        client.set_timeout(Some(PATIENCE)).expect("timeout");
        if let Some(file) = token {
            client.authenticate_with_file(file).expect("rpc.auth");
        }
        assert_eq!(client.call("rpc.ping", None).expect("ping"), json!("pong"));
        let echoed = client
            .call("rpc.echo", Some(json!({"through": endpoint.to_string()})))
            .expect("echo");
        assert_eq!(echoed, json!({"through": endpoint.to_string()}));
    }
}

#[test]
fn serves_both_sockets_under_systemd_socket_activate() {
    if !activation_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut proc, sock, tcp) = activated(dir.path(), "unix:tcp", &[]);
    exercise(&Endpoint::Unix(sock.clone()), None);
    proc.wait_for_log("socket-activated");
    proc.wait_for_log(&format!("# event loop: {}", backend()));
    // The generated token is written beside the inherited Unix socket.
    let token = PathBuf::from(format!("{}.token", sock.display()));
    assert!(token.exists(), "no token file at {}", token.display());
    exercise(&Endpoint::Tcp(tcp.clone()), Some(&token));
    // Without the token, TCP is refused as usual.
    let mut anonymous = Client::connect(&Endpoint::Tcp(tcp)).expect("connect");
    anonymous.set_timeout(Some(PATIENCE)).expect("timeout");
    assert!(anonymous.call("rpc.ping", None).is_err());
    proc.terminate();
    assert!(proc.wait().success());
    // The daemon did not create the socket: it never removes it, nor makes a lock.
    assert!(sock.exists(), "the inherited socket was removed at stop");
    assert!(!PathBuf::from(format!("{}.lock", sock.display())).exists());
}

#[test]
fn unnamed_sockets_are_matched_by_family() {
    if !activation_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Names that are neither "unix" nor "tcp" (systemd's default is the unit's name).
    let (mut proc, sock, tcp) = activated(dir.path(), "junctiond.socket:junctiond.socket", &[]);
    exercise(&Endpoint::Unix(sock.clone()), None);
    let token = PathBuf::from(format!("{}.token", sock.display()));
    exercise(&Endpoint::Tcp(tcp), Some(&token));
    proc.terminate();
    assert!(proc.wait().success());
}

#[test]
fn a_socket_under_the_wrong_name_is_refused_with_the_reason() {
    if !activation_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The Unix socket named "tcp": the daemon must refuse, not guess.
    let (mut proc, sock, _tcp) = activated(dir.path(), "tcp:unix", &[]);
    // The first connection starts the daemon, which refuses and exits.
    let _ = std::os::unix::net::UnixStream::connect(&sock);
    let line = proc.wait_for_log("socket activation");
    assert!(line.contains("not a socket of that family"), "{line}");
    assert!(!proc.wait().success());
}

/// A NOTIFY_SOCKET the test owns.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket.set_read_timeout(Some(PATIENCE)).expect("timeout");
        NotifySocket { socket, path }
    }

    /// The next datagram's lines.
    fn next(&self) -> Vec<String> {
        let mut buf = vec![0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Reads datagrams until one holds `line`; returns everything read.
    fn until(&self, line: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let lines = self.next();
            let found = lines.iter().any(|l| l == line);
            seen.extend(lines);
            if found {
                return seen;
            }
        }
    }
}

#[test]
fn ready_comes_once_the_listeners_serve_then_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(dir.path());
    let sock = dir.path().join("junction.sock");
    let mut command = common::junctiond();
    command
        .arg("--unix")
        .arg(&sock)
        .args(["--tcp", "127.0.0.1:0", "--log-format", "human"])
        .env("JUNCTION_BACKEND", backend())
        .env("XDG_RUNTIME_DIR", dir.path())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID");
    let mut proc = Proc::spawn(command);
    let first = notify.until("READY=1");
    assert!(
        first.iter().any(|l| l.starts_with("STATUS=Serving")),
        "{first:?}"
    );
    // The daemon bound the socket itself: it exists and answers right after READY.
    exercise(&Endpoint::Unix(sock.clone()), None);
    // The loop pings while it turns (every WATCHDOG_USEC / 2).
    let mut pings = 0;
    while pings < 3 {
        pings += notify.next().iter().filter(|l| *l == "WATCHDOG=1").count();
    }
    proc.terminate();
    let last = notify.until("STOPPING=1");
    assert!(!last.iter().any(|l| l == "READY=1"), "{last:?}");
    assert!(proc.wait().success());
    assert!(
        !sock.exists(),
        "a socket the daemon made is removed at stop"
    );
}

#[test]
fn notifications_under_socket_activation() {
    if !activation_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = NotifySocket::bind(dir.path());
    let path = notify.path.display().to_string();
    let (mut proc, sock, _tcp) = activated(dir.path(), "unix:tcp", &[("NOTIFY_SOCKET", &path)]);
    // The first connection starts the daemon; it is answered once it runs.
    let mut client = Client::connect(&Endpoint::Unix(sock)).expect("connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    notify.until("READY=1");
    assert_eq!(client.call("rpc.ping", None).expect("ping"), json!("pong"));
    proc.terminate();
    notify.until("STOPPING=1");
    drop(client);
    assert!(proc.wait().success());
}

/// Runs `systemd-analyze verify` on the units of `dir` (with ExecStart
/// pointing at the built daemon); None, with the reason printed, when it
/// cannot run here.
fn verify(units: &Path, user: bool) -> Option<()> {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!("skipped: systemd-analyze is not installed");
        return None;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let mut names = Vec::new();
    for unit in ["junctiond.socket", "junctiond.service"] {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit");
        std::fs::write(
            work.path().join(unit),
            text.replace("/usr/bin/junctiond", DAEMON),
        )
        .expect("copy");
        names.push(work.path().join(unit));
    }
    let runtime = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(analyze);
    command.arg("verify").arg("--man=no");
    if user {
        command.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
    }
    let output = command.args(&names).output().expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("Failed to initialize manager") {
        eprintln!("skipped: systemd-analyze verify cannot run here: {stderr}");
        return None;
    }
    // verify exits 0 on unknown keys too: every line it prints is a finding.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "{stderr}"
    );
    Some(())
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let _ = verify(&contrib, false);
    let _ = verify(&contrib.join("user"), true);
}
