//! A short run of every junction-bench mode against a real junctiond
//! (in-process, temp socket, TCP port 0), over both transports and protocols.
//! Figures are not judged here (the machine is shared); behaviour is.

use std::process::Command;

use junction::{Config, Router, RunningServer, Server};
use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_junction-bench");

fn server() -> (RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        unix: Some(dir.path().join("j.sock")),
        tcp: "127.0.0.1:0".parse().ok(),
        workers: 1,
        // junction-bench does not authenticate: anonymous TCP, every call allowed.
        access: junction::access::Access {
            tcp_anonymous: true,
            policy: junction::policy::Policy::new(vec![
                junction::policy::Rule::from_flag("anonymous:call:*", false).expect("rule"),
            ]),
            ..Default::default()
        },
        ..Config::default()
    };
    let running = Server::bind(&config, Router::new())
        .expect("bind")
        .spawn()
        .expect("spawn");
    (running, dir)
}

fn bench(args: &[&str]) -> Value {
    let out = Command::new(BENCH)
        .args(args)
        .arg("--json")
        .output()
        .expect("run junction-bench");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn endpoints(running: &RunningServer) -> Vec<(String, String)> {
    vec![
        (
            "--unix".into(),
            running.unix_path().expect("unix").display().to_string(),
        ),
        ("--tcp".into(), running.tcp_addr().expect("tcp").to_string()),
    ]
}

#[test]
fn throughput_and_latency_run_over_every_transport_and_protocol() {
    let (running, _dir) = server();
    for (flag, addr) in endpoints(&running) {
        for proto in ["jsonrpc", "mcp1"] {
            for (method, size, pipeline) in [("ping", "0", "1"), ("echo", "100", "8")] {
                let report = bench(&[
                    "throughput",
                    "--proto",
                    proto,
                    &flag,
                    &addr,
                    "-c",
                    "4",
                    "-P",
                    pipeline,
                    "-d",
                    "300ms",
                    "--warmup",
                    "100ms",
                    "--method",
                    method,
                    "-s",
                    size,
                ]);
                let what = format!("{flag} {proto} {method}");
                assert!(report["requests"].as_u64() > Some(0), "{what}: {report}");
                assert_eq!(report["errors"], 0, "{what}");
                assert!(report["latency_us"]["p99"].as_f64() > Some(0.0), "{what}");
                assert!(report["client_cpu_secs"].as_f64().is_some(), "{what}");
            }
            let latency = bench(&[
                "latency", "--proto", proto, &flag, &addr, "-d", "500ms", "--warmup", "50ms",
            ]);
            assert_eq!(
                (
                    latency["connections"].as_u64(),
                    latency["pipeline"].as_u64()
                ),
                (Some(1), Some(1))
            );
            assert!(latency["requests"].as_u64() > Some(0));
        }
    }
}

#[test]
fn a_wrong_answer_is_an_error_not_a_figure() {
    let (running, _dir) = server();
    let unix = running.unix_path().expect("unix").display().to_string();
    // Pretending the daemon is an echo server: the probe sees the real answer and refuses.
    let out = Command::new(BENCH)
        .args([
            "throughput",
            "--target",
            "echo",
            "--proto",
            "mcp1",
            "--unix",
            &unix,
            "-d",
            "100ms",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected answer"));
}

#[test]
fn burst_and_idle_report_what_happened() {
    let (running, _dir) = server();
    for (flag, addr) in endpoints(&running) {
        let burst = bench(&[
            "burst",
            "--proto",
            "mcp1",
            &flag,
            &addr,
            "-c",
            "300",
            "--timeout",
            "20s",
        ]);
        assert_eq!(burst["ok"], 300, "{flag}: {burst}");
        assert_eq!(burst["failed"], 0, "{flag}: {burst}");
        let paced = bench(&[
            "burst", "--proto", "jsonrpc", &flag, &addr, "-c", "50", "--rate", "500",
        ]);
        assert_eq!(paced["ok"], 50, "{flag}: {paced}");
        let pid = std::process::id().to_string();
        let idle = bench(&[
            "idle",
            "--proto",
            "jsonrpc",
            &flag,
            &addr,
            "-k",
            "200",
            "--server-pid",
            &pid,
            "--settle",
            "100ms",
            "--close-wait",
            "100ms",
            "--partial",
            "50",
        ]);
        assert_eq!(idle["connections"], 200);
        assert_eq!(idle["concurrent"], true, "all at once by default");
        assert!(idle["rss_after_kib"].as_u64() >= Some(1));
        assert!(idle["rss_after_close_kib"].as_u64() >= Some(1), "{idle}");
        assert_eq!(idle["partial"], 50);
        assert!(idle["rss_after_partial_kib"].as_u64() >= Some(1), "{idle}");
    }
}

#[test]
fn the_server_allocates_nothing_per_request_in_steady_state() {
    let report = bench(&["alloc", "-n", "20000"]);
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 4);
    for case in results {
        assert_eq!(
            case["allocations"], 0,
            "heap allocations on the request path: {case}"
        );
        assert!(case["requests"].as_u64() >= Some(20_000));
    }
}

#[test]
fn a_short_soak_is_flat_and_gives_back_every_descriptor() {
    // The embedded server: the library's daemon plus a pooled echo, in its own
    // process, so that its descriptors are its own. RSS is not judged here
    // (the bound is one that cannot flake); behaviour is.
    let report = bench(&[
        "soak",
        "--embedded",
        "-d",
        "6s",
        "--interval",
        "500ms",
        "--max-rss-growth",
        "256MiB",
        "--timeout",
        "30s",
        "--settle",
        "10s",
    ]);
    assert_eq!(report["verdict"], "flat", "{:?}", report["reasons"]);
    assert_eq!(report["mismatches"], 0, "{:?}", report["failures"]);
    assert_eq!(report["errors"], 0, "{:?}", report["failures"]);
    assert_eq!(report["pooled"], true);
    let fds = &report["fds"];
    assert!(fds["end"].as_u64() <= fds["baseline"].as_u64(), "{fds}");
    assert!(fds["max"].as_u64() > fds["baseline"].as_u64(), "{fds}");
    for counter in ["answers", "provoked_errors", "churned", "abrupt"] {
        assert!(report[counter].as_u64() > Some(0), "{counter}: {report}");
    }
    assert_eq!(report["open_connections"][0], report["open_connections"][1]);
    assert_eq!(
        report["exit"]["code"], 0,
        "the daemon's drain after SIGTERM"
    );
    assert!(!report["samples"].as_array().expect("samples").is_empty());
}

#[test]
fn a_soak_that_gets_no_answer_fails() {
    // Told that max-frame is 64KiB, the soak expects -32001 for a 64KiB + 1
    // payload the daemon (1MiB) accepts and waits for: no answer in time.
    let out = Command::new(BENCH)
        .args([
            "soak",
            "--embedded",
            "-d",
            "2s",
            "--interval",
            "500ms",
            "--max-frame",
            "64KiB",
            "--timeout",
            "1s",
            "--json",
        ])
        .output()
        .expect("run junction-bench");
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["verdict"], "failed");
    assert!(report["errors"].as_u64() > Some(0), "{report}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("soak failed"));
}
