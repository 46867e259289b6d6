//! The client packages (clients/python, clients/node), as `pip install` and
//! `npm install` give them (.ci/needs/clients.sh installs both into
//! target/ci), run by their own test suites against a real junctiond with the
//! default TCP authentication (a generated token beside the socket): both
//! protocols, both transports, calls, errors, batches, notifications, raw
//! MCP1 bodies, providing and calling across clients, pattern subscriptions,
//! TCP refused without a token, cancelled calls, and reconnecting after the
//! daemon restarts (the suites restart daemons of their own, started from
//! JUNCTIOND). Each suite must pass, have run tests, and have passed the
//! named ones; an installed package that differs from its source counts as
//! missing (skipped with the reason, a failure under CI=true).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// A junctiond on a temp socket and a loopback port, with the real default
/// access: TCP needs `rpc.auth` with the token it writes to `<socket>.token`.
struct Daemon {
    child: Child,
    unix: PathBuf,
    tcp: String,
    /// Kept: dropping it would end the thread that reads the daemon's log,
    /// and the daemon with it (a broken pipe).
    _log: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let unix = dir.path().join("junction.sock");
        let mut command = common::junctiond();
        command
            .arg("--unix")
            .arg(&unix)
            .args(["--tcp", "127.0.0.1:0", "--log", "info"]);
        for var in DAEMON_ENV {
            command.env_remove(var);
        }
        let (child, log) = common::spawn_logged(&mut command);
        let line = common::wait_for_line(&log, "listening on tcp ");
        let tcp = common::tcp_address(&line);
        assert!(
            Path::new(&format!("{}.token", unix.display())).is_file(),
            "no generated token beside the socket"
        );
        Daemon {
            child,
            unix,
            tcp,
            _log: log,
            _dir: dir,
        }
    }

    /// The environment telling a suite where the daemon is and how to start
    /// daemons of its own (for the reconnect tests).
    fn env(&self, command: &mut Command) {
        command
            .env("JUNCTION_TEST_UNIX", &self.unix)
            .env("JUNCTION_TEST_TCP", &self.tcp)
            .env("JUNCTIOND", env!("CARGO_BIN_EXE_junctiond"))
            .env("JUNCTION_CLI", env!("CARGO_BIN_EXE_junction"))
            .env("JUNCTION_BACKEND", common::backend_name())
            .env("JUNCTION_EXPECT_INSTALLED", "1");
        for var in DAEMON_ENV {
            command.env_remove(var);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Variables of a developer's environment that would move the daemons or
/// the clients elsewhere.
const DAEMON_ENV: [&str; 6] = [
    "JUNCTION_CONFIG",
    "JUNCTION_UNIX",
    "JUNCTION_TCP",
    "JUNCTION_AUTH_TOKEN_FILE",
    "JUNCTION_TCP_ANONYMOUS",
    "JUNCTION_PROTO",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn report(what: &str, output: &Output) -> String {
    format!(
        "{what} ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The number before `word` in a summary line such as "97 passed in 2.95s"
/// or "# pass 40".
fn count(text: &str, pattern: &str) -> usize {
    text.lines()
        .filter_map(|line| {
            let at = line.find(pattern)?;
            let before = line[..at].trim_end();
            let after = &line[at + pattern.len()..];
            // "# pass N" (node) or "N passed" (pytest).
            after
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .or_else(|| before.rsplit(' ').next().and_then(|n| n.parse().ok()))
        })
        .next_back()
        .unwrap_or(0)
}

/// Whether the installed copy of a package is the source as it is now:
/// every file of `source` with one of `extensions` must be in `installed`
/// with the same bytes, so that an edit without a new `bash .ci/provision.sh`
/// is never tested as the old package. Err names the first file that differs.
fn installed_is_current(
    source: &Path,
    installed: &Path,
    extensions: &[&str],
    recurse: bool,
) -> Result<(), String> {
    let mut compared = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        for entry in std::fs::read_dir(source.join(&relative)).expect("read source") {
            let entry = entry.expect("entry");
            let name = relative.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                if recurse {
                    stack.push(name);
                }
                continue;
            }
            let file = name.to_string_lossy().into_owned();
            if !extensions.iter().any(|ext| file.ends_with(ext)) {
                continue;
            }
            let want = std::fs::read(source.join(&name)).expect("source file");
            if std::fs::read(installed.join(&name)).ok() != Some(want) {
                return Err(format!(
                    "{} differs from the installed {}",
                    source.join(&name).display(),
                    installed.join(&name).display()
                ));
            }
            compared += 1;
        }
    }
    assert!(compared > 0, "no files compared in {}", source.display());
    Ok(())
}

/// A stale installed package, like a missing one (tests/common), skips the
/// test with the reason outside CI and fails it under CI=true.
fn current_or_skip(check: Result<(), String>) -> bool {
    let Err(why) = check else {
        return true;
    };
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{why}; .ci/provision.sh installs the package as it is now"
    );
    eprintln!("skipped: {why} (`bash .ci/provision.sh` installs the package as it is now)");
    false
}

/// Tests the suites must have run and passed, by name: each behaviour the
/// packages promise, so that a test skipped or renamed does not go unseen.
const PYTHON_TESTS: &[&str] = &[
    "test_call_returns_the_result[jsonrpc-unix] PASSED",
    "test_call_returns_the_result[mcp1-tcp] PASSED",
    "test_an_error_answer_is_typed_with_code_and_message[mcp1-unix] PASSED",
    "test_a_batch_answers_each_entry_in_order[jsonrpc-tcp] PASSED",
    "test_notifications_get_no_answer_and_run[mcp1-tcp] PASSED",
    "test_raw_bodies_travel_over_mcp1[tcp] PASSED",
    "test_a_provided_method_is_called_from_another_client[jsonrpc-unix-to-mcp1-tcp] PASSED",
    "test_subscribe_to_a_pattern_and_receive_what_is_published[mcp1-unix-from-jsonrpc-tcp] PASSED",
    "test_tcp_without_a_token_is_refused PASSED",
    "test_clients_reconnect_and_restore_after_a_restart PASSED",
    "test_the_asyncio_client_reconnects PASSED",
    "test_a_cancelled_call_cancels_its_handler[jsonrpc-tcp] PASSED",
    "test_asyncio_provide_subscribe_publish[mcp1-tcp] PASSED",
    "test_the_readme_example_runs PASSED",
    "test_the_installed_package_is_under_test PASSED",
    "test_default_socket_path_follows_the_cli PASSED",
];

#[test]
fn the_python_package_passes_its_suite_against_the_daemon() {
    let Some(python) = common::ci_python(&["pytest", "junction"]) else {
        return;
    };
    let installed = Command::new(&python)
        .args([
            "-c",
            "import junction, os; print(os.path.dirname(junction.__file__))",
        ])
        .output()
        .expect("find the installed package");
    let installed = PathBuf::from(String::from_utf8_lossy(&installed.stdout).trim());
    let current = installed_is_current(
        &root().join("clients/python/src/junction"),
        &installed,
        &[".py"],
        true,
    );
    if !current_or_skip(current) {
        return;
    }
    let daemon = Daemon::start();
    let mut command = Command::new(python);
    command
        .args(["-m", "pytest", "-v", "-p", "no:cacheprovider", "-rs"])
        .arg(root().join("clients/python/tests"))
        .current_dir(root())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    daemon.env(&mut command);
    let output = command.output().expect("run pytest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", report("pytest", &output));
    let passed = count(&stdout, " passed");
    assert!(passed > 0, "no test ran: {}", report("pytest", &output));
    assert!(
        !stdout.contains(" skipped") && !stdout.contains(" failed"),
        "{}",
        report("pytest", &output)
    );
    for name in PYTHON_TESTS {
        assert!(stdout.contains(name), "{name} missing: {stdout}");
    }
    eprintln!("python: {passed} tests passed");
}

/// The Node suite's tests that must have passed, by name.
const NODE_TESTS: &[&str] = &[
    "a call returns its result [jsonrpc-unix]",
    "a call returns its result [mcp1-tcp]",
    "an error answer is typed with code and message [mcp1-unix]",
    "a batch answers each entry in order [jsonrpc-tcp]",
    "notifications get no answer and run [mcp1-tcp]",
    "raw bodies travel over MCP1 [tcp]",
    "a provided method is called from another client [jsonrpc-unix to mcp1-tcp]",
    "subscribe to a pattern and receive what is published [mcp1-unix from jsonrpc-tcp]",
    "TCP without a token is refused",
    "clients reconnect and restore their names and topics after a restart",
    "the README example runs",
    "a cancelled call aborts its handler's signal [jsonrpc-tcp]",
    "the installed package is under test",
    "the default socket path follows the CLI",
    "the methods declared on Client and Subscription exist",
];

/// A copy of clients/node/test in a directory under target/ci/node, so that
/// `junction-client` resolves to the installed package there (ESM ignores
/// NODE_PATH); removed when dropped.
fn node_tests_beside(modules: &Path) -> tempfile::TempDir {
    let node = modules.parent().expect("target/ci/node");
    let run = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(node)
        .expect("run dir");
    for entry in std::fs::read_dir(root().join("clients/node/test")).expect("clients/node/test") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, run.path().join(path.file_name().expect("name"))).expect("copy");
    }
    run
}

#[test]
fn the_node_package_passes_its_suite_against_the_daemon() {
    let Some(modules) = common::ci_node_modules(&["junction-client"]) else {
        return;
    };
    // The top files (index.js, index.d.ts, package.json) and lib/, not the tests.
    let installed = modules.join("junction-client");
    let source = root().join("clients/node");
    let files = [".js", ".d.ts", "package.json"];
    let current = installed_is_current(&source, &installed, &files, false).and_then(|()| {
        installed_is_current(&source.join("lib"), &installed.join("lib"), &files, true)
    });
    if !current_or_skip(current) {
        return;
    }
    let run = node_tests_beside(&modules);
    let mut files: Vec<PathBuf> = std::fs::read_dir(run.path())
        .expect("run dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "test files: {files:?}");
    let daemon = Daemon::start();
    let mut command = Command::new("node");
    command.arg("--test").args(&files).current_dir(run.path());
    daemon.env(&mut command);
    let output = command
        .output()
        .expect("run node --test (is node on PATH?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        report("node --test", &output)
    );
    let passed = count(&stdout, "# pass ");
    assert!(
        passed > 0,
        "no test ran: {}",
        report("node --test", &output)
    );
    assert_eq!(count(&stdout, "# fail "), 0, "{stdout}");
    assert_eq!(count(&stdout, "# skipped "), 0, "{stdout}");
    for name in NODE_TESTS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(name)),
            "{name} missing: {stdout}"
        );
    }
    eprintln!("node: {passed} tests passed");
}

#[test]
fn the_node_types_compile_against_a_typed_use_of_the_package() {
    let Some(modules) = common::ci_node_modules(&["junction-client", "typescript", "@types/node"])
    else {
        return;
    };
    let run = node_tests_beside(&modules);
    let tsc = modules.join(".bin/tsc");
    let output = Command::new(&tsc)
        .args([
            "--noEmit",
            "--strict",
            "--module",
            "nodenext",
            "--moduleResolution",
            "nodenext",
            "--target",
            "es2022",
            "--types",
            "node",
        ])
        .arg(run.path().join("types-check.mts"))
        .current_dir(modules.parent().expect("target/ci/node"))
        .output()
        .expect("run tsc");
    assert!(output.status.success(), "{}", report("tsc", &output));
}
