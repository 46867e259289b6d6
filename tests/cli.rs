//! The `junction` CLI's own commands and rules (issue 18): `socket-path`,
//! `completions`, `man`, and which transport it takes when given both
//! --unix and --tcp.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use junction::access::Access;

fn junction() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_junction"));
    command
        .env_remove("JUNCTION_UNIX")
        .env_remove("JUNCTION_PROTO")
        .env_remove("JUNCTION_AUTH_TOKEN_FILE")
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("run junction")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

#[test]
fn socket_path_follows_the_flag_the_environment_and_the_fallbacks() {
    let path = |command: &mut Command| stdout(&run(command)).trim_end().to_string();
    let xdg = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        path(
            junction()
                .arg("socket-path")
                .env("XDG_RUNTIME_DIR", xdg.path())
        ),
        xdg.path().join("junction.sock").display().to_string()
    );
    // XDG_RUNTIME_DIR unset or empty: /tmp, or JUNCTION_TMPDIR, per uid.
    let uid = nix::unistd::geteuid();
    assert_eq!(
        path(
            junction()
                .arg("socket-path")
                .env_remove("XDG_RUNTIME_DIR")
                .env_remove("JUNCTION_TMPDIR")
        ),
        format!("/tmp/junction-{uid}/junction.sock")
    );
    assert_eq!(
        path(
            junction()
                .arg("socket-path")
                .env("XDG_RUNTIME_DIR", "")
                .env("JUNCTION_TMPDIR", "/var/tmp")
        ),
        format!("/var/tmp/junction-{uid}/junction.sock")
    );
    // --unix and JUNCTION_UNIX win; the flag over the variable.
    assert_eq!(
        path(junction().args(["--unix", "/x/j.sock", "socket-path"])),
        "/x/j.sock"
    );
    assert_eq!(
        path(
            junction()
                .arg("socket-path")
                .env("JUNCTION_UNIX", "/y/j.sock")
        ),
        "/y/j.sock"
    );
    assert_eq!(
        path(
            junction()
                .args(["--unix", "/x/j.sock", "socket-path"])
                .env("JUNCTION_UNIX", "/y/j.sock")
        ),
        "/x/j.sock"
    );
}

/// What the README's socat/nc examples do: connect to
/// `$(junction socket-path)`, here a real daemon's socket.
#[test]
fn socket_path_names_a_socket_a_daemon_listens_on() {
    let server = common::start();
    let socket = server.running.unix_path().expect("unix").to_path_buf();
    let dir = socket.parent().expect("dir");
    let printed = stdout(&run(junction()
        .arg("socket-path")
        .env("XDG_RUNTIME_DIR", dir)));
    assert_eq!(Path::new(printed.trim_end()), socket);
    let mut raw = common::Raw::connect(&junction::client::Endpoint::Unix(socket));
    raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[1,2],\"id\":7}\n");
    assert_eq!(
        raw.line().expect("an answer").trim_end(),
        r#"{"jsonrpc":"2.0","result":[1,2],"id":7}"#
    );
}

#[test]
fn completions_are_generated_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&run(junction().args(["completions", shell])));
        for word in ["provide", "subscribe", "socket-path", "no-reconnect"] {
            assert!(script.contains(word), "{shell} lacks {word}");
        }
    }
    // bash parses its script.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("junction.bash");
    std::fs::write(
        &file,
        stdout(&run(junction().args(["completions", "bash"]))),
    )
    .expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash -n");
    assert!(check.status.success(), "{check:?}");
    // An unknown shell is a usage error.
    assert_eq!(
        run(junction().args(["completions", "tcsh"])).status.code(),
        Some(2)
    );
}

#[test]
fn man_prints_a_manual_page() {
    let roff = stdout(&run(junction().arg("man")));
    assert!(
        roff.lines().any(|l| l.starts_with(".TH junction 1")),
        "{roff}"
    );
    for word in ["socket\\-path", "completions", "provide"] {
        assert!(roff.contains(word), "the page lacks {word}");
    }
    common::assert_man_renders(&roff, "junction");
}

/// Issue 18, point 5: with both --unix and --tcp, the connection is TCP,
/// and --unix says where the daemon's generated token is (the README's
/// rule); the same with JUNCTION_UNIX for --unix.
#[test]
fn tcp_wins_over_unix_which_then_locates_the_token() {
    let server = common::start_with(|c| c.access = Access::default());
    let socket = server.running.unix_path().expect("unix").to_path_buf();
    let tcp = server.running.tcp_addr().expect("tcp").to_string();
    assert!(server.running.token_file().is_some(), "a generated token");
    let ping = |command: &mut Command| stdout(&run(command.arg("ping")));
    let out = ping(junction().arg("--unix").arg(&socket).args(["--tcp", &tcp]));
    assert!(out.starts_with(&format!("pong from tcp:{tcp}")), "{out}");
    let out = ping(
        junction()
            .args(["--tcp", &tcp])
            .env("JUNCTION_UNIX", &socket),
    );
    assert!(out.starts_with(&format!("pong from tcp:{tcp}")), "{out}");
    // Without --unix the CLI looks beside the default socket, finds no
    // token for this daemon, and the daemon asks for one.
    let xdg = tempfile::tempdir().expect("tempdir");
    let out = run(junction()
        .args(["--tcp", &tcp, "ping"])
        .env("XDG_RUNTIME_DIR", xdg.path()));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-32007"),
        "{out:?}"
    );
}
