//! The `junctiond` and `junction` binaries as a user runs them.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CLI: &str = env!("CARGO_BIN_EXE_junction");

/// A daemon process with a private runtime dir; killed on drop.
struct Daemon {
    child: Child,
    runtime: tempfile::TempDir,
    tcp: String,
    log: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `junctiond` with XDG_RUNTIME_DIR pointing at a temp dir and TCP on port 0.
    fn start(extra: &[&str]) -> Daemon {
        let runtime = tempfile::tempdir().expect("tempdir");
        Self::start_in(runtime, extra)
    }

    fn start_in(runtime: tempfile::TempDir, extra: &[&str]) -> Daemon {
        let mut child = common::junctiond()
            .args(["--tcp", "127.0.0.1:0", "--log-format", "human"])
            .args(extra)
            .env("XDG_RUNTIME_DIR", runtime.path())
            .env_remove("JUNCTION_UNIX")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn junctiond");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Daemon {
            child,
            runtime,
            tcp: String::new(),
            log: rx,
        };
        let line = daemon.wait_for_log("listening on tcp ");
        daemon.tcp = common::tcp_address(&line);
        daemon
    }

    fn wait_for_log(&self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(Duration::from_secs(20)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("daemon never logged {needle:?}: {e}"),
            }
        }
    }

    fn socket(&self) -> PathBuf {
        self.runtime.path().join("junction.sock")
    }

    /// Runs the CLI with the same runtime dir, so its default path matches.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(CLI)
            .args(args)
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .env_remove("JUNCTION_UNIX")
            .stdin(Stdio::null())
            .output()
            .expect("run junction")
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("kill");
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("junctiond did not exit");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn starts_with_no_configuration_and_answers_on_both_transports() {
    let daemon = Daemon::start(&[]);
    let mode = std::fs::metadata(daemon.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket file mode");
    let out = daemon.cli(&["call", "rpc.ping"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "\"pong\"");
    let out = daemon.cli(&["--tcp", &daemon.tcp, "call", "rpc.echo", "[1,{\"a\":2}]"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pretty json");
    assert_eq!(printed, serde_json::json!([1, {"a": 2}]));
    assert!(text(&out.stdout).contains("\n  "), "pretty-printed");
    let out = daemon.cli(&["stats"]);
    assert!(text(&out.stdout).contains("\"connections\""));
    let out = daemon.cli(&["methods"]);
    assert!(text(&out.stdout).contains("rpc.stats"));
    let out = daemon.cli(&["ping"]);
    assert!(
        text(&out.stdout).starts_with("pong from unix:"),
        "{}",
        text(&out.stdout)
    );
    let out = daemon.cli(&["notify", "rpc.ping"]);
    assert!(out.status.success());
}

#[test]
fn the_cli_speaks_mcp1_with_json_and_raw_bodies() {
    let daemon = Daemon::start(&[]);
    let out = daemon.cli(&["--proto", "mcp1", "call", "rpc.echo", "\"hi\""]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "\"hi\"");
    let out = daemon.cli(&[
        "--proto",
        "mcp1",
        "--tcp",
        &daemon.tcp,
        "call",
        "rpc.echo",
        "--raw",
        "bytes\tas is",
    ]);
    assert_eq!(out.stdout, b"bytes\tas is", "raw result written unchanged");
    let file = daemon.runtime.path().join("body.bin");
    std::fs::write(&file, [0u8, 1, 2, 255]).expect("write");
    let out = daemon.cli(&[
        "--proto",
        "mcp1",
        "call",
        "rpc.echo",
        "--raw-file",
        file.to_str().expect("utf8"),
    ]);
    assert_eq!(out.stdout, [0u8, 1, 2, 255]);
    let out = daemon.cli(&["--proto", "mcp1", "ping"]);
    assert!(
        text(&out.stdout).starts_with("pong from unix:"),
        "{}",
        text(&out.stdout)
    );
    let out = daemon.cli(&["--proto", "mcp1", "call", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error -32601"));
    let out = daemon.cli(&["call", "rpc.echo", "--raw", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--proto mcp1"));
    let out = daemon.cli(&["--proto", "mcp2", "call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_cli_reports_errors_with_exit_codes() {
    let daemon = Daemon::start(&[]);
    let out = daemon.cli(&["call", "no.such"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error -32601"),
        "{}",
        text(&out.stderr)
    );
    let out = daemon.cli(&["call", "rpc.echo", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("PARAMS must be JSON"));
    let out = daemon.cli(&["--unix", "/nonexistent/junction.sock", "call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("is junctiond running?"), "{err}");
    assert_eq!(err.lines().count(), 2, "a hint, not a backtrace: {err}");
    let out = daemon.cli(&["--tcp", "127.0.0.1:1", "call", "rpc.ping"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_second_daemon_on_the_same_path_refuses_to_start() {
    let first = Daemon::start(&[]);
    let out = common::junctiond()
        .args(["--tcp", "off"])
        .env("XDG_RUNTIME_DIR", first.runtime.path())
        .output()
        .expect("second junctiond");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("another junctiond is listening on"), "{err}");
    assert!(err.contains(&first.socket().display().to_string()));
    assert_eq!(
        text(&first.cli(&["call", "rpc.ping"]).stdout).trim(),
        "\"pong\"",
        "first one unharmed"
    );
}

#[test]
fn a_stale_socket_file_is_replaced_but_other_files_are_not() {
    let runtime = tempfile::tempdir().expect("tempdir");
    let path = runtime.path().join("junction.sock");
    drop(UnixListener::bind(&path).expect("bind a socket and leave it stale"));
    assert!(path.exists());
    let daemon = Daemon::start_in(runtime, &[]);
    assert_eq!(
        text(&daemon.cli(&["call", "rpc.ping"]).stdout).trim(),
        "\"pong\""
    );
    drop(daemon);

    let runtime = tempfile::tempdir().expect("tempdir");
    std::fs::write(runtime.path().join("junction.sock"), b"precious").expect("file");
    let out = common::junctiond()
        .args(["--tcp", "off"])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .output()
        .expect("junctiond");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a socket"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read(runtime.path().join("junction.sock")).expect("kept"),
        b"precious"
    );
}

#[test]
fn sigterm_and_sigint_drain_remove_the_socket_and_exit_zero() {
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut daemon = Daemon::start(&[]);
        let socket = daemon.socket();
        assert!(socket.exists());
        daemon.signal(signal);
        let status = daemon.wait_exit();
        assert!(status.success(), "{signal}: {status}");
        assert!(!socket.exists(), "{signal}: socket file removed");
    }
}

#[test]
fn unix_mode_and_listeners_are_configurable() {
    let daemon = Daemon::start(&["--unix-mode", "0660"]);
    let mode = std::fs::metadata(daemon.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    drop(daemon);

    let runtime = tempfile::tempdir().expect("tempdir");
    let custom = runtime.path().join("sub/dir/j.sock");
    let out = common::junctiond()
        .args([
            "--tcp",
            "off",
            "--unix",
            custom.to_str().expect("utf8"),
            "--print-config",
        ])
        .output()
        .expect("print");
    assert!(text(&out.stdout).contains("tcp = \"off\""));
    let mut child = common::junctiond()
        .args(["--tcp", "off", "--unix", custom.to_str().expect("utf8")])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_for_path(&custom);
    let dir_mode = std::fs::metadata(custom.parent().expect("dir"))
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "created directory is private");
    let out = Command::new(CLI)
        .args(["--unix", custom.to_str().expect("utf8"), "call", "rpc.ping"])
        .output()
        .expect("cli");
    assert_eq!(text(&out.stdout).trim(), "\"pong\"");
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for_path(path: &Path) {
    for _ in 0..400 {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{} never accepted", path.display());
}

fn print_config(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = common::junctiond();
    cmd.arg("--print-config").args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("JUNCTION_")) {
        cmd.env_remove(key);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("print-config");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn configuration_precedence_is_flags_then_env_then_file_then_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("junction.toml");
    std::fs::write(&file, "workers = 3\nmax-batch = 5\nmax-frame = \"64KiB\"\n").expect("write");
    let file = file.to_str().expect("utf8");
    let defaults = print_config(&[], &[]);
    assert!(
        defaults.contains("max-frame = \"1MiB\"") && defaults.contains("max-connections = 10000")
    );
    let from_file = print_config(&["--config", file], &[]);
    assert!(from_file.contains("workers = 3") && from_file.contains("max-frame = \"64KiB\""));
    let from_env = print_config(&["--config", file], &[("JUNCTION_WORKERS", "4")]);
    assert!(from_env.contains("workers = 4") && from_env.contains("max-batch = 5"));
    let from_flag = print_config(
        &["--config", file, "--workers", "5"],
        &[("JUNCTION_WORKERS", "4")],
    );
    assert!(from_flag.contains("workers = 5") && from_flag.contains("max-batch = 5"));
    let via_env_file = print_config(&[], &[("JUNCTION_CONFIG", file)]);
    assert!(via_env_file.contains("workers = 3"));
    // The printed configuration is itself a valid configuration file.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &from_flag).expect("write");
    assert_eq!(
        print_config(&["--config", printed.to_str().expect("utf8")], &[]),
        from_flag
    );
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "wokers = 3\n").expect("write");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--config", file.to_str().expect("utf8")], "wokers"),
        (
            vec!["--config", "/nonexistent.toml"],
            "cannot read config file",
        ),
        (vec!["--tcp", "nowhere"], "HOST:PORT"),
        (vec!["--unix", "off", "--tcp", "off"], "nothing to serve"),
        (vec!["--max-frame", "lots"], "not a size"),
        (vec!["--sniff-timeout", "soon"], "not a duration"),
        (vec!["--log", "[[["], "invalid --log filter"),
    ];
    for (args, needle) in cases {
        let out = common::junctiond()
            .args(&args)
            .env("XDG_RUNTIME_DIR", dir.path())
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} should fail");
        let err = text(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let runtime = tempfile::tempdir().expect("tempdir");
    let mut child = common::junctiond()
        .args(["--tcp", "127.0.0.1:0", "--log-format", "json"])
        .env("XDG_RUNTIME_DIR", runtime.path())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen_listening = false;
    for line in lines.by_ref().take(5) {
        let line = line.expect("line");
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if value["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("listening on tcp"))
        {
            seen_listening = true;
            break;
        }
    }
    assert!(seen_listening);
    let _ = child.kill();
    let _ = child.wait();
}
