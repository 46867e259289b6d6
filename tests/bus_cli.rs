//! The `junction` CLI on the service bus, as a user runs it: `provide` with
//! shell commands, `subscribe --count`, `publish`, against a real daemon,
//! callers on both transports and both protocols.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{PATIENCE, TestServer};
use junction::Protocol;
use junction::client::{Client, ClientError, Endpoint};
use serde_json::{Value, json};

const PROTOCOLS: [(Protocol, &str); 2] = [(Protocol::JsonRpc, "jsonrpc"), (Protocol::Mcp1, "mcp1")];

/// One shell command serving several methods, chosen by $JUNCTION_METHOD.
const SCRIPT: &str = r#"case "$JUNCTION_METHOD" in
  demo.cat) cat ;;
  demo.fail) cat >/dev/null; echo "oops: broken on purpose" >&2; exit 3 ;;
  demo.text) cat >/dev/null; echo "this is not json" ;;
  demo.silent) cat >/dev/null ;;
  demo.env) cat >/dev/null; printf '{"method":"%s"}' "$JUNCTION_METHOD" ;;
  *) exit 9 ;;
esac"#;

fn junction() -> Command {
    Command::new(env!("CARGO_BIN_EXE_junction"))
}

/// `junction --unix/--tcp ... --proto P` for an endpoint.
fn junction_at(endpoint: &Endpoint, proto: &str) -> Command {
    let mut command = junction();
    command
        .env_remove("JUNCTION_UNIX")
        .env_remove("JUNCTION_PROTO");
    match endpoint {
        Endpoint::Unix(path) => command.arg("--unix").arg(path),
        Endpoint::Tcp(addr) => command.arg("--tcp").arg(addr),
    };
    command.args(["--proto", proto, "--timeout", "20s"]);
    command
}

/// A long-running `junction` (provide or subscribe) whose stderr lines
/// arrive on a channel.
struct Background {
    child: Child,
    stderr: Receiver<String>,
}

impl Background {
    fn spawn(mut command: Command) -> Background {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn junction");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Background { child, stderr: rx }
    }

    /// Waits for a stderr line containing `needle`; panics with what came
    /// instead.
    fn expect_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no stderr line with {needle:?}; got {seen:?}");
    }

    /// Waits for the exit; panics if it takes longer than PATIENCE.
    fn wait(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let mut out = String::new();
                if let Some(mut stdout) = self.child.stdout.take() {
                    let _ = stdout.read_to_string(&mut out);
                }
                return (status.code(), out);
            }
            assert!(Instant::now() < deadline, "junction did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stderr lines not yet taken, up to the end of the pipe (call it
    /// after the exit: the reader thread may still hold the last lines).
    fn rest_of_stderr(&self) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break, // Disconnected: the pipe ended.
            }
        }
        lines
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix(server: &TestServer) -> Endpoint {
    server.endpoints().remove(0)
}

/// `junction provide METHODS -- sh -c SCRIPT`, registered.
fn provide(
    server: &TestServer,
    proto: &str,
    methods: &[&str],
    script: &str,
    extra: &[&str],
) -> Background {
    let mut command = junction_at(&unix(server), proto);
    command
        .arg("provide")
        .args(extra)
        .args(methods)
        .args(["--", "sh", "-c", script]);
    let provider = Background::spawn(command);
    provider.expect_stderr("providing");
    provider
}

fn client(endpoint: &Endpoint, protocol: Protocol) -> Client {
    let mut client = Client::connect_with(endpoint, protocol).expect("connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    client
}

fn rpc_error(result: Result<Value, ClientError>) -> junction::RpcError {
    match result {
        Err(ClientError::Rpc(e)) => e,
        other => panic!("expected an error answer, got {other:?}"),
    }
}

fn run(mut command: Command) -> Output {
    command.stdin(Stdio::null()).output().expect("run junction")
}

#[test]
fn provide_serves_callers_on_every_transport_and_protocol() {
    let server = common::start();
    for (_, provider_proto) in PROTOCOLS {
        let _provider = provide(&server, provider_proto, &["demo.*"], SCRIPT, &[]);
        for endpoint in server.endpoints() {
            for (protocol, name) in PROTOCOLS {
                let what = format!("provider {provider_proto}, caller {name} over {endpoint}");
                let mut caller = client(&endpoint, protocol);
                let params = json!({"list": [1, 2, "three"], "nested": {"ok": true}});
                let got = caller.call("demo.cat", Some(params.clone()));
                assert_eq!(got.expect(&what), params, "{what}");
                // No params: the command reads `null`.
                assert_eq!(
                    caller.call("demo.cat", None).expect(&what),
                    Value::Null,
                    "{what}"
                );
                assert_eq!(
                    caller.call("demo.silent", None).expect(&what),
                    Value::Null,
                    "{what}"
                );
                assert_eq!(
                    caller.call("demo.env", None).expect(&what),
                    json!({"method": "demo.env"}),
                    "{what}"
                );
                // The same through the CLI.
                let mut call = junction_at(&endpoint, name);
                call.args(["call", "demo.cat", "[1,{\"a\":\"b\"}]"]);
                let out = run(call);
                assert!(out.status.success(), "{what}: {out:?}");
                let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
                assert_eq!(printed, json!([1, {"a": "b"}]), "{what}");
            }
        }
    }
}

#[test]
fn failing_commands_answer_errors_that_say_why() {
    let server = common::start();
    let _provider = provide(&server, "jsonrpc", &["demo.fail", "demo.text"], SCRIPT, &[]);
    for endpoint in server.endpoints() {
        for (protocol, name) in PROTOCOLS {
            let mut caller = client(&endpoint, protocol);
            let e = rpc_error(caller.call("demo.fail", Some(json!([1]))));
            assert_eq!(e.code, -32603, "{e:?}");
            assert!(e.message.contains("exited with status 3"), "{e:?}");
            assert!(e.message.contains("oops: broken on purpose"), "{e:?}");
            assert_eq!(
                e.data.as_ref().and_then(|d| d.get("status")),
                Some(&json!(3))
            );
            let e = rpc_error(caller.call("demo.text", Some(json!([1]))));
            assert_eq!(e.code, -32603, "{e:?}");
            assert!(e.message.contains("not JSON"), "{e:?}");
            assert!(e.message.contains("this is not json"), "{e:?}");
            // The CLI prints the error and exits 1.
            let mut call = junction_at(&endpoint, name);
            call.args(["call", "demo.fail"]);
            let out = run(call);
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("error -32603") && stderr.contains("exited with status 3"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn a_taken_name_is_refused_with_its_owner() {
    let server = common::start();
    let _first = provide(&server, "jsonrpc", &["demo.cat"], SCRIPT, &[]);
    let mut second = junction_at(&unix(&server), "mcp1");
    second.args(["provide", "demo.cat", "--", "cat"]);
    let out = run(second);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("-32020"), "{stderr}");
    assert!(stderr.contains("demo.cat"), "{stderr}");
    assert!(stderr.contains("Name taken"), "{stderr}");
}

#[test]
fn providing_over_tcp_is_not_permitted_by_default() {
    let server = common::start();
    let tcp = server.endpoints().remove(1);
    let mut command = junction_at(&tcp, "jsonrpc");
    command.args(["provide", "demo.cat", "--", "cat"]);
    let out = run(command);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("-32021"), "{stderr}");
}

#[test]
fn calls_run_concurrently_up_to_jobs() {
    let server = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("flag");
    // demo.wait only finishes once demo.flag has run: with one job at a
    // time it would give up after 10 s and fail.
    let script = format!(
        r#"cat >/dev/null; case "$JUNCTION_METHOD" in
  demo.wait) i=0; while [ ! -e '{flag}' ]; do i=$((i+1)); [ $i -gt 200 ] && exit 7; sleep 0.05; done; echo '"waited"' ;;
  demo.flag) touch '{flag}'; echo '"flagged"' ;;
esac"#,
        flag = flag.display()
    );
    let _provider = provide(
        &server,
        "mcp1",
        &["demo.wait", "demo.flag"],
        &script,
        &["--jobs", "2"],
    );
    let mut caller = client(&unix(&server), Protocol::Mcp1);
    let wait = caller.send("demo.wait", None).expect("send");
    let flag_call = caller.send("demo.flag", None).expect("send");
    caller.flush().expect("flush");
    let flagged = caller
        .wait(flag_call)
        .expect("flag answer")
        .result
        .expect("flag ok");
    let waited = caller
        .wait(wait)
        .expect("wait answer")
        .result
        .expect("wait ok");
    assert_eq!(flagged.into_json().expect("json"), json!("flagged"));
    assert_eq!(waited.into_json().expect("json"), json!("waited"));
}

fn process_gone(pid: i32) -> bool {
    // The provider reaps its children: a killed one leaves no /proc entry
    // (a zombie would still show "Z" in its stat).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.split_whitespace().nth(2) == Some("Z"),
    }
}

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_caller_leaving_kills_the_command() {
    let server = common::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > '{}'; exec sleep 60", pidfile.display());
    for (protocol, name) in PROTOCOLS {
        let _ = std::fs::remove_file(&pidfile);
        let _provider = provide(&server, name, &["demo.slow"], &script, &[]);
        let mut caller = client(&unix(&server), protocol);
        caller.send("demo.slow", None).expect("send");
        caller.flush().expect("flush");
        let pid = read_pid(&pidfile);
        assert!(!process_gone(pid), "the command runs");
        drop(caller);
        let deadline = Instant::now() + PATIENCE;
        while !process_gone(pid) {
            assert!(
                Instant::now() < deadline,
                "{name}: the command outlived the cancel"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn provide_exits_cleanly_on_sigterm_and_loudly_when_the_daemon_goes() {
    let server = common::start();
    let mut provider = provide(&server, "jsonrpc", &["demo.cat"], SCRIPT, &[]);
    let pid = nix::unistd::Pid::from_raw(provider.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill");
    assert_eq!(provider.wait().0, Some(0));
    // Its name is free again.
    let mut again = provide(&server, "mcp1", &["demo.cat"], SCRIPT, &["--no-reconnect"]);
    server.running.shutdown_handle().shutdown();
    let (code, _) = again.wait();
    assert_eq!(code, Some(3));
    let stderr = again.rest_of_stderr().join("\n");
    assert!(stderr.contains("closed the connection"), "{stderr}");
}

#[test]
fn subscribe_with_no_reconnect_exits_when_the_daemon_goes() {
    let server = common::start();
    let mut command = junction_at(&unix(&server), "mcp1");
    command.args(["subscribe", "--no-reconnect", "t"]);
    let mut subscriber = Background::spawn(command);
    subscriber.expect_stderr("subscribed to t");
    server.running.shutdown_handle().shutdown();
    assert_eq!(subscriber.wait().0, Some(3));
    let stderr = subscriber.rest_of_stderr().join("\n");
    assert!(stderr.contains("closed the connection"), "{stderr}");
    assert!(!stderr.contains("reconnecting"), "{stderr}");
}

#[test]
fn subscribe_prints_events_as_json_lines() {
    let server = common::start();
    for endpoint in server.endpoints() {
        for (_, name) in PROTOCOLS {
            let mut command = junction_at(&endpoint, name);
            command.args(["subscribe", "--count", "3", "news.*", "other"]);
            let mut subscriber = Background::spawn(command);
            subscriber.expect_stderr("subscribed");
            let publish = |args: &[&str], stdin: Option<&str>| -> String {
                let mut command = junction_at(&endpoint, name);
                command.arg("publish").args(args);
                command.stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                let mut child = command.spawn().expect("publish");
                if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
                    input.write_all(text.as_bytes()).expect("stdin");
                }
                let out = child.wait_with_output().expect("publish output");
                assert!(out.status.success(), "{out:?}");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            assert_eq!(publish(&["news.a", r#"{"n":1}"#], None), "1");
            assert_eq!(publish(&["nobody.listens", "2"], None), "0");
            assert_eq!(publish(&["other"], None), "1");
            assert_eq!(publish(&["news.b.c", "-"], Some("[\"from stdin\"]")), "1");
            let (code, stdout) = subscriber.wait();
            assert_eq!(code, Some(0), "{endpoint} {name}");
            let lines: Vec<Value> = stdout
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            assert_eq!(
                lines,
                vec![
                    json!({"topic": "news.a", "data": {"n": 1}}),
                    json!({"topic": "other", "data": null}),
                    json!({"topic": "news.b.c", "data": ["from stdin"]}),
                ],
                "{endpoint} {name}"
            );
        }
    }
}

#[test]
fn publish_refuses_data_that_is_not_json() {
    let server = common::start();
    let mut command = junction_at(&unix(&server), "jsonrpc");
    command.args(["publish", "t", "not json"]);
    let out = run(command);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATA must be JSON"));
}

#[test]
fn no_daemon_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        &["subscribe", "t"][..],
        &["provide", "x.y", "--", "cat"],
        &["publish", "t"],
    ] {
        let mut command = junction_at(&Endpoint::Unix(dir.path().join("none.sock")), "jsonrpc");
        command.args(args);
        let out = run(command);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("is junctiond running?"));
    }
}

/// `provide` against a scripted daemon (a plain Unix listener speaking the
/// bytes of proto/bus.md): answers, cancels, and the daemon going away.
#[test]
fn provide_against_a_scripted_daemon() {
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let mut command = junction_at(&Endpoint::Unix(path), "jsonrpc");
    command.args([
        "provide",
        "--no-reconnect",
        "demo.*",
        "--",
        "sh",
        "-c",
        r#"case "$JUNCTION_METHOD" in demo.sleep) exec sleep 30 ;; *) cat ;; esac"#,
    ]);
    let mut provider = Background::spawn(command);
    let (daemon, _) = listener.accept().expect("accept");
    daemon.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut lines = BufReader::new(daemon.try_clone().expect("clone")).lines();
    let mut next = move || -> Value {
        serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("JSON")
    };
    let send = |text: &str| {
        (&daemon).write_all(text.as_bytes()).expect("send");
        (&daemon).write_all(b"\n").expect("send");
    };
    let register = next();
    assert_eq!(register["method"], "bus.register");
    assert_eq!(register["params"], json!({"names": ["demo.*"]}));
    send(&format!(
        r#"{{"jsonrpc":"2.0","result":{{"names":["demo.*"]}},"id":{}}}"#,
        register["id"]
    ));
    provider.expect_stderr("providing demo.*");
    send(r#"{"jsonrpc":"2.0","id":5,"method":"demo.cat","params":[1,2]}"#);
    assert_eq!(next(), json!({"jsonrpc": "2.0", "result": [1, 2], "id": 5}));
    // A call that would sleep 30 s, cancelled: no answer for it, and the
    // next call is answered at once.
    send(r#"{"jsonrpc":"2.0","id":6,"method":"demo.sleep"}"#);
    std::thread::sleep(Duration::from_millis(200));
    send(r#"{"jsonrpc":"2.0","method":"bus.cancel","params":{"id":6,"reason":"timeout"}}"#);
    send(r#"{"jsonrpc":"2.0","id":7,"method":"demo.cat","params":{"after":"cancel"}}"#);
    assert_eq!(
        next(),
        json!({"jsonrpc": "2.0", "result": {"after": "cancel"}, "id": 7})
    );
    drop(next);
    drop(daemon);
    let (code, _) = provider.wait();
    assert_eq!(code, Some(3));
    let stderr = provider.rest_of_stderr().join("\n");
    assert!(stderr.contains("closed the connection"), "{stderr}");
}

/// `provide --text`: plain output comes back as a JSON string (one trailing
/// newline dropped) and a string param goes in as plain text, on both
/// protocols; `date` works as the issue's shell author expected.
#[test]
fn provide_text_mode_wraps_plain_output() {
    let server = common::start();
    let _date = provide(&server, "jsonrpc", &["demo.date"], "date", &["--text"]);
    let script = r#"case "$JUNCTION_METHOD" in
  demo.upper) tr a-z A-Z ;;
  demo.two) cat >/dev/null; printf 'a\n\n' ;;
  demo.crlf) cat >/dev/null; printf 'b\r\n' ;;
  demo.none) cat >/dev/null ;;
  demo.stdin) wc -c ;;
  demo.binary) cat >/dev/null; printf '\377\n' ;;
esac"#;
    let _text = provide(&server, "mcp1", &["demo.*"], script, &["--text"]);
    for endpoint in server.endpoints() {
        for (protocol, name) in PROTOCOLS {
            let mut client = client(&endpoint, protocol);
            let date = client.call("demo.date", None).expect("date");
            let date = date.as_str().expect("a string");
            assert!(!date.is_empty() && !date.ends_with('\n'), "{date:?}");
            let call = |client: &mut Client, method: &str, params: Option<Value>| {
                client.call(method, params).expect(method)
            };
            let hi = Some(json!(["hi there\n"]));
            assert_eq!(call(&mut client, "demo.upper", hi), json!("HI THERE"));
            // Other params than a string go in as JSON.
            let object = Some(json!({"a": "b"}));
            assert_eq!(
                call(&mut client, "demo.upper", object),
                json!(r#"{"A":"B"}"#)
            );
            assert_eq!(call(&mut client, "demo.two", None), json!("a\n"));
            assert_eq!(call(&mut client, "demo.crlf", None), json!("b"));
            assert_eq!(call(&mut client, "demo.none", None), json!(""));
            let error = rpc_error(client.call("demo.binary", None));
            assert!(error.message.contains("not UTF-8"), "{}", error.message);
            // No params: empty stdin (not `null`).
            assert_eq!(
                call(&mut client, "demo.stdin", None)
                    .as_str()
                    .map(str::trim),
                Some("0")
            );
            if protocol == Protocol::Mcp1 {
                // A bare string param (MCP1 allows one) is plain text too.
                let bare = Some(json!("mcp1 text"));
                assert_eq!(
                    call(&mut client, "demo.upper", bare),
                    json!("MCP1 TEXT"),
                    "{name}"
                );
            }
        }
    }
    // Without --text, plain output is an error whose message points at it.
    let _json = provide(&server, "jsonrpc", &["plain.date"], "date", &[]);
    let mut client = client(&unix(&server), Protocol::JsonRpc);
    let error = rpc_error(client.call("plain.date", None));
    assert!(error.message.contains("--text"), "{}", error.message);
}

/// A junctiond on a fixed socket path (no TCP), killed on drop.
struct Daemon(Child);

impl Daemon {
    fn start(path: &Path) -> Daemon {
        let child = common::junctiond()
            .arg("--unix")
            .arg(path)
            .args(["--tcp", "off"])
            .env_remove("JUNCTION_CONFIG")
            .env_remove("JUNCTION_UNIX")
            .env_remove("JUNCTION_TCP")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn junctiond");
        let daemon = Daemon(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let endpoint = Endpoint::Unix(path.to_path_buf());
            if let Ok(mut client) = Client::connect(&endpoint)
                && client.call("rpc.ping", None).is_ok()
            {
                return daemon;
            }
            assert!(Instant::now() < deadline, "junctiond did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 18, point 7: `provide` and `subscribe` connect again when the
/// daemon restarts on the same socket path, register and subscribe again,
/// and say so; the provider is called and the subscriber hears events again.
#[test]
fn provide_and_subscribe_survive_a_daemon_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("restart.sock");
    let endpoint = Endpoint::Unix(path.clone());
    let daemon = Daemon::start(&path);
    let mut command = junction_at(&endpoint, "mcp1");
    command.args(["provide", "--text", "demo.hello", "--", "echo", "hello"]);
    let provider = Background::spawn(command);
    provider.expect_stderr("providing demo.hello");
    let mut command = junction_at(&endpoint, "jsonrpc");
    command.args(["subscribe", "news"]);
    let mut subscriber = Background::spawn(command);
    subscriber.expect_stderr("subscribed to news");
    let stdout = subscriber.child.stdout.take().expect("stdout");
    let (tx, events) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let round = |n: u64| {
        let mut client = client(&endpoint, Protocol::JsonRpc);
        assert_eq!(
            client.call("demo.hello", None).expect("call"),
            json!("hello")
        );
        assert_eq!(client.publish("news", json!(n)).expect("publish"), 1);
        let line = events.recv_timeout(PATIENCE).expect("an event");
        let event: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(event, json!({"topic": "news", "data": n}));
    };
    round(1);
    drop(daemon);
    provider.expect_stderr("daemon gone");
    subscriber.expect_stderr("daemon gone");
    let _daemon = Daemon::start(&path);
    let line = provider.expect_stderr("reconnected to unix:");
    assert!(line.contains("registered demo.hello"), "{line}");
    let line = subscriber.expect_stderr("reconnected to unix:");
    assert!(line.contains("subscribed to news"), "{line}");
    round(2);
}
