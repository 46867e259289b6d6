//! The Unix socket's path (issue 13, scenarios 2 and 11): a planted link or
//! a directory others control stops the daemon and the client; a lock beside
//! the socket lets exactly one daemon run on a path; a stale socket is still
//! replaced. Real `junctiond` and `junction` processes; the fallback
//! directory is made under a sticky temp dir given as `JUNCTION_TMPDIR`, so
//! the machine's own `/tmp/junction-<uid>` is never touched.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use junction::Protocol;
use junction::client::{Client, ClientError, Endpoint};
use junction::net::BindError;
use junction::{Router, Server, ServerError};

const CLI: &str = env!("CARGO_BIN_EXE_junction");
const NOBODY: u32 = 65534;

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn is_root() -> bool {
    if euid() == 0 {
        return true;
    }
    eprintln!("skipped: needs root to give files to uid {NOBODY}");
    false
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A temp dir that behaves like `/tmp`: world-writable and sticky.
fn shared_base() -> tempfile::TempDir {
    let base = tempfile::tempdir().expect("tempdir");
    chmod(base.path(), 0o1777);
    base
}

/// Where the fallback directory goes for us under `base`.
fn fallback_dir(base: &Path) -> PathBuf {
    base.join(format!("junction-{}", euid()))
}

/// `junctiond` (Unix only) with XDG_RUNTIME_DIR unset and the fallback
/// under `base`, or on `--unix path`.
fn daemon(base: &Path, unix: Option<&Path>) -> Command {
    let mut cmd = common::junctiond();
    cmd.args(["--tcp", "off", "--log-format", "human"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("JUNCTION_UNIX")
        .env("JUNCTION_TMPDIR", base)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(path) = unix {
        cmd.arg("--unix").arg(path);
    }
    cmd
}

/// The CLI with the same environment as [`daemon`].
fn cli(base: &Path, unix: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(CLI);
    cmd.env_remove("XDG_RUNTIME_DIR")
        .env_remove("JUNCTION_UNIX")
        .env("JUNCTION_TMPDIR", base)
        .stdin(Stdio::null());
    if let Some(path) = unix {
        cmd.arg("--unix").arg(path);
    }
    cmd.args(args).output().expect("run junction")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How a daemon's start went: it listens (the process, still running), or it
/// exited (its code and what it wrote). Decided by its own output, not by time.
enum Start {
    Listening(Child),
    Exited(Option<i32>, String),
}

impl Start {
    fn of(mut cmd: Command) -> Start {
        Self::wait(cmd.spawn().expect("spawn junctiond"))
    }

    fn wait(mut child: Child) -> Start {
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut seen = String::new();
        for line in lines.by_ref().map_while(Result::ok) {
            if line.contains("listening on unix") {
                // Keep draining so the daemon never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Start::Listening(child);
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let status = child.wait().expect("wait");
        Start::Exited(status.code(), seen)
    }

    /// The refusal's text; panics (stopping the daemon) if it started.
    fn refusal(self) -> String {
        match self {
            Start::Exited(Some(1), message) => message,
            Start::Exited(code, message) => panic!("exit {code:?}: {message}"),
            Start::Listening(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("junctiond started where it must refuse")
            }
        }
    }

    fn running(self) -> Child {
        match self {
            Start::Listening(child) => child,
            Start::Exited(code, message) => panic!("junctiond did not start ({code:?}): {message}"),
        }
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn ping(path: &Path, protocol: Protocol) -> Result<serde_json::Value, ClientError> {
    let mut client = Client::connect_with(&Endpoint::Unix(path.to_path_buf()), protocol)?;
    client.set_timeout(Some(common::PATIENCE))?;
    client.call("rpc.ping", None)
}

fn assert_unsafe(result: Result<serde_json::Value, ClientError>, at: &Path, problem: &str) {
    match result {
        Err(ClientError::Unsafe {
            path, problem: p, ..
        }) => {
            assert_eq!(path, at);
            assert!(p.to_string().contains(problem), "{p}");
        }
        other => panic!("expected a refusal at {}: {other:?}", at.display()),
    }
}

#[test]
fn a_planted_link_as_the_fallback_directory_stops_daemon_and_client() {
    let base = shared_base();
    // Another user's directory, reached through a link they planted.
    let theirs = base.path().join("theirs");
    fs::create_dir(&theirs).expect("mkdir");
    chmod(&theirs, 0o777);
    let dir = fallback_dir(base.path());
    symlink(&theirs, &dir).expect("symlink");
    if euid() == 0 {
        lchown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");
        lchown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown link");
    }
    let message = Start::of(daemon(base.path(), None)).refusal();
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(message.contains("symbolic link"), "{message}");
    assert_eq!(
        fs::read_dir(&theirs).expect("ls").count(),
        0,
        "nothing made inside the planted directory"
    );

    // The attacker's socket behind the link: the CLI refuses (exit 3).
    let planted = UnixListener::bind(theirs.join("junction.sock")).expect("bind");
    let out = cli(base.path(), None, &["call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("refusing to connect"), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    planted.set_nonblocking(true).expect("nonblocking");
    assert!(planted.accept().is_err(), "the client never connected");
}

#[test]
fn the_fallback_directory_is_made_private_and_used() {
    let base = shared_base();
    let dir = fallback_dir(base.path());
    let child = Start::of(daemon(base.path(), None)).running();
    let meta = fs::symlink_metadata(&dir).expect("made");
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o700);
    assert_eq!(meta.uid(), euid());
    let lock = fs::symlink_metadata(dir.join("junction.sock.lock")).expect("lock file");
    assert_eq!(lock.mode() & 0o777, 0o600);
    let out = cli(base.path(), None, &["call", "rpc.ping"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "\"pong\"",
        "{}",
        text(&out.stderr)
    );
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        assert_eq!(
            ping(&dir.join("junction.sock"), protocol).expect("ping"),
            "pong"
        );
    }
    stop(child);
}

#[test]
fn a_fallback_directory_that_is_not_ours_and_private_stops_daemon_and_client() {
    let base = shared_base();
    let dir = fallback_dir(base.path());
    fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o777);
    let message = Start::of(daemon(base.path(), None)).refusal();
    assert!(message.contains(&dir.display().to_string()), "{message}");
    assert!(message.contains("mode 0777"), "{message}");
    assert!(message.contains("0700"), "{message}");
    let socket = dir.join("junction.sock");
    let _planted = UnixListener::bind(&socket).expect("bind");
    let out = cli(base.path(), None, &["call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("mode 0777"),
        "{}",
        text(&out.stderr)
    );

    if !is_root() {
        return;
    }
    chmod(&dir, 0o700);
    lchown(&dir, Some(NOBODY), Some(NOBODY)).expect("chown");
    let message = Start::of(daemon(base.path(), None)).refusal();
    assert!(message.contains("owned by uid 65534"), "{message}");
    let out = cli(base.path(), None, &["call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("owned by uid 65534"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_named_directory_must_not_be_writable_by_others_unless_sticky() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("open");
    fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o777);
    let socket = dir.join("junction.sock");
    let message = Start::of(daemon(base.path(), Some(&socket))).refusal();
    assert!(message.contains("mode 0777"), "{message}");
    assert!(message.contains("sticky"), "{message}");
    assert!(!socket.exists());

    // Sticky, like /tmp: others cannot replace our files there.
    chmod(&dir, 0o1777);
    let child = Start::of(daemon(base.path(), Some(&socket))).running();
    let out = cli(base.path(), Some(&socket), &["call", "rpc.ping"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "\"pong\"",
        "{}",
        text(&out.stderr)
    );
    stop(child);

    // A link the user named, owned by us, is followed.
    let link = base.path().join("link");
    symlink(&dir, &link).expect("symlink");
    let child = Start::of(daemon(base.path(), Some(&link.join("junction.sock")))).running();
    stop(child);

    if !is_root() {
        return;
    }
    let theirs = base.path().join("theirs");
    fs::create_dir(&theirs).expect("mkdir");
    lchown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");
    let message = Start::of(daemon(base.path(), Some(&theirs.join("j.sock")))).refusal();
    assert!(message.contains("owned by uid 65534"), "{message}");
    lchown(&link, Some(NOBODY), Some(NOBODY)).expect("chown link");
    let message = Start::of(daemon(base.path(), Some(&link.join("junction.sock")))).refusal();
    assert!(
        message.contains("symbolic link owned by uid 65534"),
        "{message}"
    );
}

#[test]
fn a_link_as_the_socket_path_is_neither_followed_nor_removed() {
    let base = tempfile::tempdir().expect("tempdir");
    let target = base.path().join("target.sock");
    drop(UnixListener::bind(&target).expect("stale target"));
    let socket = base.path().join("junction.sock");
    symlink(&target, &socket).expect("symlink");
    let message = Start::of(daemon(base.path(), Some(&socket))).refusal();
    assert!(message.contains(&socket.display().to_string()), "{message}");
    assert!(message.contains("symbolic link"), "{message}");
    assert!(fs::symlink_metadata(&socket).expect("kept").is_symlink());
    assert!(target.exists(), "the link's target untouched");

    // A live daemon behind a link: the client does not follow it either.
    fs::remove_file(&target).expect("rm");
    let child = Start::of(daemon(base.path(), Some(&target))).running();
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        assert_unsafe(ping(&socket, protocol), &socket, "symbolic link");
        assert_eq!(ping(&target, protocol).expect("direct"), "pong");
    }
    let out = cli(base.path(), Some(&socket), &["call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(3));
    stop(child);
}

#[test]
fn the_client_refuses_a_socket_owned_by_another_user() {
    if !is_root() {
        return;
    }
    // In a sticky shared directory anyone may create the socket first.
    let base = shared_base();
    let socket = base.path().join("junction.sock");
    let planted = UnixListener::bind(&socket).expect("bind");
    lchown(&socket, Some(NOBODY), Some(NOBODY)).expect("chown");
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        assert_unsafe(ping(&socket, protocol), &socket, "owned by uid 65534");
    }
    let out = cli(base.path(), Some(&socket), &["call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("owned by uid 65534"),
        "{}",
        text(&out.stderr)
    );
    planted.set_nonblocking(true).expect("nonblocking");
    assert!(planted.accept().is_err(), "nobody connected");
    // The daemon does not remove another user's socket either.
    drop(planted);
    let message = Start::of(daemon(base.path(), Some(&socket))).refusal();
    assert!(message.contains("owned by uid 65534"), "{message}");
    assert!(socket.exists(), "their file stays");

    // The default path: a socket swapped into our fallback directory.
    let dir = fallback_dir(base.path());
    let child = Start::of(daemon(base.path(), None)).running();
    let ours = dir.join("junction.sock");
    lchown(&ours, Some(NOBODY), Some(NOBODY)).expect("chown");
    let out = cli(base.path(), None, &["call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("owned by uid 65534"));
    lchown(&ours, Some(0), Some(0)).expect("chown back");
    let out = cli(base.path(), None, &["call", "rpc.ping"]);
    assert_eq!(
        text(&out.stdout).trim(),
        "\"pong\"",
        "{}",
        text(&out.stderr)
    );
    stop(child);
}

#[test]
fn two_daemons_started_at_once_one_runs_and_the_other_names_its_pid() {
    for round in 0..24 {
        let base = tempfile::tempdir().expect("tempdir");
        let socket = base.path().join("junction.sock");
        // A stale socket, so that each sees something to probe.
        drop(UnixListener::bind(&socket).expect("stale"));
        let a = daemon(base.path(), Some(&socket)).spawn().expect("spawn a");
        let b = daemon(base.path(), Some(&socket)).spawn().expect("spawn b");
        let pids = [a.id(), b.id()];
        let (a, b) = (
            std::thread::spawn(move || Start::wait(a)),
            std::thread::spawn(move || Start::wait(b)),
        );
        let starts = [a.join().expect("a"), b.join().expect("b")];
        let mut running = Vec::new();
        let mut refusals = Vec::new();
        for (start, pid) in starts.into_iter().zip(pids) {
            match start {
                Start::Listening(child) => running.push((child, pid)),
                Start::Exited(code, message) => refusals.push((code, message)),
            }
        }
        assert_eq!(running.len(), 1, "round {round}: {refusals:?}");
        let (child, winner) = running.pop().expect("one");
        let (code, message) = &refusals[0];
        assert_eq!(*code, Some(1), "round {round}: {message}");
        assert!(
            message.contains(&format!("pid {winner}")),
            "round {round}, winner {winner}: {message}"
        );
        assert!(message.contains("junction.sock.lock"), "{message}");
        assert_eq!(ping(&socket, Protocol::Mcp1).expect("ping"), "pong");
        stop(child);
    }
}

#[test]
fn a_second_server_in_one_process_is_refused_by_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::test_config(&dir);
    config.tcp = None;
    let first = Server::bind(&config, Router::new()).expect("first");
    match Server::bind(&config, Router::new()) {
        Err(ServerError::Bind(BindError::Locked { pid, lock, .. })) => {
            assert_eq!(pid, Some(std::process::id()));
            assert_eq!(lock, dir.path().join("junction.sock.lock"));
        }
        Err(e) => panic!("second bind: {e}"),
        Ok(_) => panic!("second bind succeeded"),
    }
    drop(first);
    let again = Server::bind(&config, Router::new()).expect("free once the first is gone");
    let running = again.spawn().expect("spawn");
    let unix = Endpoint::Unix(dir.path().join("junction.sock"));
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut client = Client::connect_with(&unix, protocol).expect("connect");
        assert_eq!(client.call("rpc.ping", None).expect("ping"), "pong");
    }
    running.stop().expect("stop");
}

#[test]
fn a_stale_socket_and_an_old_lock_file_do_not_stop_a_new_daemon() {
    let base = tempfile::tempdir().expect("tempdir");
    let socket = base.path().join("junction.sock");
    drop(UnixListener::bind(&socket).expect("stale"));
    let mut first = Start::of(daemon(base.path(), Some(&socket))).running();
    assert_eq!(ping(&socket, Protocol::JsonRpc).expect("ping"), "pong");
    // Killed outright: its socket stays, and so does its lock file (with its pid).
    first.kill().expect("kill");
    first.wait().expect("wait");
    assert!(socket.exists());
    let lock = base.path().join("junction.sock.lock");
    assert_eq!(
        fs::read_to_string(&lock).expect("lock").trim(),
        first.id().to_string()
    );
    let second = Start::of(daemon(base.path(), Some(&socket))).running();
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        assert_eq!(ping(&socket, protocol).expect("ping"), "pong");
    }
    assert_eq!(
        fs::read_to_string(&lock).expect("lock").trim(),
        second.id().to_string()
    );
    stop(second);
}
