//! Reload without a restart (issue 17): SIGHUP and `rpc.reload` re-read the
//! configuration file's policy, tokens and log filter while clients stay
//! connected; a bad file keeps the old configuration; flags still win.
//! The real `junctiond` binary, both protocols, on JUNCTION_BACKEND.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod common;

use junction::Protocol;
use junction::client::{Client, ClientError, Endpoint};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(20);
const PROTOCOLS: [Protocol; 2] = [Protocol::JsonRpc, Protocol::Mcp1];
const FORBIDDEN: i32 = -32008;
const NOT_FOUND: i32 = -32601;
const AGENT: &str = "agent-secret-agent-secret";
const OTHER: &str = "other-secret-other-secret";

/// A daemon run from a configuration file in its own directory.
struct Daemon {
    child: Child,
    log: mpsc::Receiver<String>,
    dir: tempfile::TempDir,
    tcp: String,
}

impl Daemon {
    fn start(config: &str, flags: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("tokens"),
            format!("agent:{AGENT}\nother:{OTHER}\n"),
        )
        .expect("tokens");
        let file = dir.path().join("junction.toml");
        std::fs::write(&file, settings(dir.path(), config)).expect("config");
        let mut command = common::junctiond();
        command
            .arg("--config")
            .arg(&file)
            .args(["--log-format", "human"])
            .args(flags)
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("JUNCTION_UNIX")
            .env_remove("JUNCTION_TCP")
            .env_remove("JUNCTION_ALLOW")
            .env_remove("JUNCTION_LOG");
        let (child, rx) = common::spawn_logged(&mut command);
        let mut daemon = Daemon {
            child,
            log: rx,
            dir,
            tcp: String::new(),
        };
        let line = daemon.wait_for_log("listening on tcp ");
        daemon.tcp = common::tcp_address(&line);
        daemon
    }

    fn wait_for_log(&self, needle: &str) -> String {
        common::wait_for_line(&self.log, needle)
    }

    fn unix(&self) -> Endpoint {
        Endpoint::Unix(self.dir.path().join("junction.sock"))
    }

    /// Rewrites the configuration file.
    fn rewrite(&self, config: &str) {
        std::fs::write(
            self.dir.path().join("junction.toml"),
            settings(self.dir.path(), config),
        )
        .expect("rewrite");
    }

    /// Sends SIGHUP and waits until the loop has judged connections again
    /// under the generation that reload put in force (newer than `seen`,
    /// the latest one the test knows of); returns it.
    fn sighup(&self, seen: u64) -> u64 {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        kill(pid, Signal::SIGHUP).expect("SIGHUP");
        // The loop may judge connections before the reload's own line is
        // written: collect both, in either order.
        let generation_of = |line: &str| -> Option<u64> {
            line.split("generation=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|g| g.parse().ok())
        };
        let mut judged = Vec::new();
        let mut reloaded = None;
        loop {
            let line = self.wait_for_log("generation=");
            if line.contains("open connections now hold the rights") {
                judged.extend(generation_of(&line));
            } else if line.contains("configuration reloaded") {
                reloaded = generation_of(&line).filter(|g| *g > seen).or(reloaded);
            }
            if let Some(generation) = reloaded {
                if judged.contains(&generation) {
                    return generation;
                }
            }
        }
    }

    /// A TCP client authenticated with `secret`.
    fn tcp_as(&self, protocol: Protocol, secret: &str) -> Client {
        let mut client = connect(&Endpoint::Tcp(self.tcp.clone()), protocol);
        client.authenticate(secret).expect("rpc.auth");
        client
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The file: the daemon's sockets and tokens, then `policy`.
fn settings(dir: &Path, policy: &str) -> String {
    let sock: PathBuf = dir.join("junction.sock");
    let tokens = dir.join("tokens");
    format!(
        "unix = {:?}\ntcp = \"127.0.0.1:0\"\nauth-token-file = {:?}\nlog = \"info\"\n{policy}\n",
        sock.display().to_string(),
        tokens.display().to_string(),
    )
}

fn connect(endpoint: &Endpoint, protocol: Protocol) -> Client {
    let mut client = Client::connect_with(endpoint, protocol).expect("connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    client
}

fn code(result: Result<Value, ClientError>) -> i32 {
    match result {
        Err(ClientError::Rpc(e)) => e.code,
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[test]
fn sighup_changes_the_policy_of_a_connected_client() {
    let daemon = Daemon::start("allow = []", &[]);
    let mut agents: Vec<Client> = PROTOCOLS.iter().map(|p| daemon.tcp_as(*p, AGENT)).collect();
    for agent in &mut agents {
        assert_eq!(code(agent.call("demo.echo", None)), FORBIDDEN);
        assert_eq!(
            code(agent.call("rpc.reload", None)),
            FORBIDDEN,
            "admins only"
        );
    }
    daemon.rewrite(r#"allow = ["token:agent:call:demo.*", "token:agent:admin"]"#);
    let mut seen = daemon.sighup(0);
    for agent in &mut agents {
        // Allowed now, on the same connection: the name is simply not provided.
        assert_eq!(code(agent.call("demo.echo", None)), NOT_FOUND);
        let report = agent.call("rpc.reload", None).expect("an admin may reload");
        seen = seen.max(report["generation"].as_u64().expect("generation"));
    }
    // And back: the right is taken away from the open connection.
    daemon.rewrite("allow = []");
    daemon.sighup(seen);
    for agent in &mut agents {
        assert_eq!(code(agent.call("demo.echo", None)), FORBIDDEN);
    }
}

#[test]
fn rpc_reload_applies_policy_tables_and_is_refused_to_others() {
    let daemon = Daemon::start("", &[]);
    let mut admin = connect(&daemon.unix(), Protocol::JsonRpc);
    let mut others: Vec<Client> = PROTOCOLS.iter().map(|p| daemon.tcp_as(*p, OTHER)).collect();
    for other in &mut others {
        assert_eq!(code(other.call("rpc.reload", None)), FORBIDDEN);
        assert_eq!(code(other.call("demo.ping", None)), FORBIDDEN);
    }
    daemon.rewrite("[[policy]]\nwho = \"token:other\"\nallow = { call = [\"demo.*\"] }\n");
    let report = admin.call("rpc.reload", None).expect("reload");
    assert!(
        report["reloaded"].as_array().is_some_and(|r| !r.is_empty()),
        "{report}"
    );
    assert_eq!(report["restart_needed"], serde_json::json!([]), "{report}");
    for other in &mut others {
        assert_eq!(code(other.call("demo.ping", None)), NOT_FOUND);
        assert_eq!(code(other.call("rpc.reload", None)), FORBIDDEN);
    }
    // A limit is only read at start: the reload says so, and applies the rest.
    daemon.rewrite("max-frame = \"64KiB\"\n");
    let report = admin.call("rpc.reload", None).expect("reload");
    assert_eq!(
        report["restart_needed"],
        serde_json::json!(["max-frame"]),
        "{report}"
    );
    for other in &mut others {
        assert_eq!(
            code(other.call("demo.ping", None)),
            FORBIDDEN,
            "the table is gone"
        );
    }
}

#[test]
fn a_bad_file_keeps_the_old_configuration() {
    let daemon = Daemon::start(r#"allow = ["token:agent:call:demo.*"]"#, &[]);
    let mut admin = connect(&daemon.unix(), Protocol::Mcp1);
    let mut agents: Vec<Client> = PROTOCOLS.iter().map(|p| daemon.tcp_as(*p, AGENT)).collect();
    for agent in &mut agents {
        assert_eq!(code(agent.call("demo.echo", None)), NOT_FOUND);
    }
    for bad in [
        "allow = [\"token:agent:call:demo.*\"",   // not TOML
        "allow = [\"token:agent:frobnicate:x\"]", // no such action
        "allow = []\nno-such-setting = 1",        // unknown key
    ] {
        daemon.rewrite(bad);
        let error = match admin.call("rpc.reload", None) {
            Err(ClientError::Rpc(e)) => e,
            other => panic!("a bad file must be refused, got {other:?}"),
        };
        assert!(error.message.contains("not reloaded"), "{}", error.message);
        daemon.wait_for_log("not reloaded");
        for agent in &mut agents {
            assert_eq!(
                code(agent.call("demo.echo", None)),
                NOT_FOUND,
                "old policy kept"
            );
        }
    }
    // SIGHUP with a bad file: logged, old policy kept.
    let pid = Pid::from_raw(i32::try_from(daemon.child.id()).expect("pid"));
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    daemon.wait_for_log("not reloaded");
    for agent in &mut agents {
        assert_eq!(code(agent.call("demo.echo", None)), NOT_FOUND);
    }
}

#[test]
fn a_removed_token_closes_its_connections() {
    let daemon = Daemon::start("", &[]);
    let mut admin = connect(&daemon.unix(), Protocol::JsonRpc);
    let mut agents: Vec<Client> = PROTOCOLS.iter().map(|p| daemon.tcp_as(*p, AGENT)).collect();
    let mut others: Vec<Client> = PROTOCOLS.iter().map(|p| daemon.tcp_as(*p, OTHER)).collect();
    std::fs::write(daemon.dir.path().join("tokens"), format!("other:{OTHER}\n")).expect("tokens");
    admin.call("rpc.reload", None).expect("reload");
    for agent in &mut agents {
        match agent.call("rpc.ping", None) {
            Err(ClientError::Io(_) | ClientError::Closed(_)) => {}
            other => panic!("the removed token's connection must be closed, got {other:?}"),
        }
    }
    for other in &mut others {
        assert_eq!(other.call("rpc.ping", None).expect("kept"), "pong");
    }
    // A new connection with the removed token is refused.
    let mut again = connect(&Endpoint::Tcp(daemon.tcp.clone()), Protocol::JsonRpc);
    assert!(again.authenticate(AGENT).is_err());
}

#[test]
fn flags_still_win_over_the_file_after_a_reload() {
    let daemon = Daemon::start("allow = []", &["--allow", "token:agent:call:demo.flag"]);
    let mut agent = daemon.tcp_as(Protocol::JsonRpc, AGENT);
    assert_eq!(code(agent.call("demo.flag", None)), NOT_FOUND);
    assert_eq!(code(agent.call("demo.file", None)), FORBIDDEN);
    daemon.rewrite(r#"allow = ["token:agent:call:demo.file"]"#);
    daemon.sighup(0);
    assert_eq!(
        code(agent.call("demo.flag", None)),
        NOT_FOUND,
        "the flag stays"
    );
    assert_eq!(
        code(agent.call("demo.file", None)),
        FORBIDDEN,
        "the file's allow is overridden"
    );
}

#[test]
fn the_log_filter_reloads() {
    let daemon = Daemon::start("", &[]);
    daemon.rewrite("log = \"debug\"");
    // The file's `log` comes after the settings' own `log = "info"`: replace it.
    let file = daemon.dir.path().join("junction.toml");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, text.replace("log = \"info\"\n", "")).expect("write");
    let pid = Pid::from_raw(i32::try_from(daemon.child.id()).expect("pid"));
    kill(pid, Signal::SIGHUP).expect("SIGHUP");
    daemon.wait_for_log("configuration reloaded");
    // A connection opened and closed now is logged at debug level.
    drop(connect(&daemon.unix(), Protocol::JsonRpc));
    daemon.wait_for_log("DEBUG");
}

/// A JSON-RPC client as uid 65534 on one Unix connection: each method
/// name written to its stdin is called, each answer printed on a line.
const NOBODY_CLIENT: &str = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile("rwb")
for n, line in enumerate(sys.stdin):
    f.write((json.dumps({"jsonrpc": "2.0", "id": n, "method": line.strip()}) + "\n").encode())
    f.flush()
    print(f.readline().decode().strip(), flush=True)
"#;

#[test]
fn a_second_local_user_gets_its_new_rights_on_the_same_connection() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running a client as uid 65534 needs root");
        return;
    }
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    let shared = "unix-mode = \"0666\"\nallow-uids = \"any\"\n";
    let daemon = Daemon::start(shared, &[]);
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let mut nobody = Command::new("python3")
        .args(["-c", NOBODY_CLIENT])
        .arg(daemon.dir.path().join("junction.sock"))
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 as nobody");
    let mut input = nobody.stdin.take().expect("stdin");
    let mut output = BufReader::new(nobody.stdout.take().expect("stdout"));
    let mut call = |method: &str| -> Value {
        writeln!(input, "{method}").expect("write");
        let mut line = String::new();
        output.read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    assert_eq!(call("rpc.ping")["result"], "pong");
    assert_eq!(call("demo.echo")["error"]["code"], FORBIDDEN);
    daemon.rewrite(&format!("{shared}allow = [\"uid:65534:call:demo.*\"]"));
    daemon.sighup(0);
    assert_eq!(call("demo.echo")["error"]["code"], NOT_FOUND, "allowed now");
    // Off the allow-list: the connection is closed.
    daemon.rewrite("unix-mode = \"0666\"\nallow-uids = \"root\"\n");
    daemon.sighup(0);
    writeln!(input, "rpc.ping").expect("write");
    let mut line = String::new();
    let _ = output.read_line(&mut line);
    assert!(line.is_empty() || !line.contains("pong"), "{line:?}");
    let _ = nobody.kill();
    let _ = nobody.wait();
}
