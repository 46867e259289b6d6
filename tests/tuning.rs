//! Socket options read back from the daemon's own sockets, the frame, idle
//! and write timeouts, and running out of file descriptors.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{PATIENCE, Raw, TestServer, assert_healthy, mcp1_request, start_with};
use junction::config::{Config, Settings};
use junction::net::tuning::Preset;
use serde_json::Value;

fn wait_for(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = server.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {stats}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects over TCP once so that the daemon records the accepted socket's options.
fn tcp_socket_report(server: &TestServer) -> Value {
    let endpoints = server.endpoints();
    let mut tcp = server.client(&endpoints[1]);
    tcp.call("rpc.ping", None).expect("ping");
    let stats = tcp.call("rpc.stats", None).expect("stats");
    stats["sockets"].clone()
}

#[test]
fn default_options_are_applied_to_accepted_tcp_sockets() {
    let server = start_with(|_| {});
    let sockets = tcp_socket_report(&server);
    let tcp = &sockets["tcp"];
    assert_eq!(tcp["nodelay"], true, "{sockets}");
    assert_eq!(tcp["keepalive"], true);
    assert_eq!(tcp["keepalive_idle_secs"], 60);
    assert_eq!(tcp["keepalive_interval_secs"], 10);
    assert_eq!(tcp["keepalive_count"], 3);
    assert_eq!(sockets["tcp_listener"]["reuseaddr"], true);
    assert_eq!(sockets["backlog"]["requested"], 4096);
    let effective = sockets["backlog"]["effective"]
        .as_u64()
        .expect("effective backlog");
    let cap = sockets["backlog"]["somaxconn"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        effective,
        4096.min(cap),
        "the effective backlog is min(requested, somaxconn)"
    );
}

#[test]
fn every_option_set_on_its_own_is_read_back_as_set() {
    let server = start_with(|c| {
        let settings = Settings {
            tuning: Some(Preset::Default),
            tcp_nodelay: Some(false),
            tcp_keepalive_idle: "30s".parse().ok(),
            tcp_keepalive_interval: "5s".parse().ok(),
            tcp_keepalive_count: Some(7),
            tcp_rcvbuf: "256KiB".parse().ok(),
            tcp_sndbuf: "192KiB".parse().ok(),
            tcp_user_timeout: "5s".parse().ok(),
            tcp_quickack: Some(true),
            tcp_defer_accept: "1s".parse().ok(),
            tcp_reuseaddr: Some(false),
            unix_rcvbuf: "300KiB".parse().ok(),
            unix_sndbuf: "400KiB".parse().ok(),
            ..Settings::default()
        };
        let resolved = Config::resolve(settings).expect("valid settings");
        c.sockets = resolved.sockets;
    });
    let sockets = tcp_socket_report(&server);
    let tcp = &sockets["tcp"];
    assert_eq!(tcp["nodelay"], false, "{sockets}");
    assert_eq!(tcp["keepalive_idle_secs"], 30);
    assert_eq!(tcp["keepalive_interval_secs"], 5);
    assert_eq!(tcp["keepalive_count"], 7);
    // The kernel doubles buffer sizes for its bookkeeping; at least what was asked.
    assert!(tcp["rcvbuf"].as_u64() >= Some(256 << 10), "{tcp}");
    assert!(tcp["sndbuf"].as_u64() >= Some(192 << 10), "{tcp}");
    if cfg!(target_os = "linux") {
        assert_eq!(tcp["linux"]["user_timeout_ms"], 5000);
        assert_eq!(tcp["linux"]["quickack"], true);
        let defer = sockets["tcp_listener"]["defer_accept_secs"]
            .as_i64()
            .expect("defer");
        assert!(defer >= 1, "TCP_DEFER_ACCEPT on the listener: {sockets}");
    }
    assert_eq!(sockets["tcp_listener"]["reuseaddr"], false);
    // Requests still work with every option changed (deferred accept waits for data).
    assert_healthy(&server);
    let unix = &server.stats()["sockets"]["unix"];
    assert!(unix["rcvbuf"].as_u64() >= Some(300 << 10), "{unix}");
    assert!(unix["sndbuf"].as_u64() >= Some(400 << 10), "{unix}");
}

#[test]
fn the_presets_differ_as_documented() {
    let low = Config::resolve(Settings {
        tuning: Some(Preset::LowLatency),
        ..Settings::default()
    })
    .expect("valid");
    let high = Config::resolve(Settings {
        tuning: Some(Preset::HighThroughput),
        ..Settings::default()
    })
    .expect("valid");
    assert!(low.sockets.tcp_quickack && !high.sockets.tcp_quickack);
    assert_eq!(high.sockets.unix_rcvbuf, 1 << 20);
    let server = start_with(|c| c.sockets = high.sockets);
    let sockets = tcp_socket_report(&server);
    assert!(
        sockets["tcp"]["rcvbuf"].as_u64() >= Some(1 << 20),
        "{sockets}"
    );
}

#[test]
fn a_frame_trickling_in_is_cut_off_by_the_frame_timeout() {
    let server = start_with(|c| c.frame_timeout = Duration::from_millis(300));
    for endpoint in server.endpoints() {
        let mut slow_json = Raw::connect(&endpoint);
        let mut slow_mcp1 = Raw::connect(&endpoint);
        let json_line = b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n";
        let frame = mcp1_request(9, "rpc.ping", b"", false);
        // One byte every 50 ms: each read is fresh, the frame never completes in time.
        let started = Instant::now();
        for i in 0..20 {
            let _ = slow_json.send_lossy(&json_line[i..i + 1]);
            let _ = slow_mcp1.send_lossy(&frame[i..i + 1]);
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(started.elapsed() < PATIENCE);
        let answer = slow_json.json();
        assert_eq!(answer["error"]["code"], -32004, "{endpoint}: {answer}");
        assert!(slow_json.is_closed());
        let error = slow_mcp1.frame();
        assert_eq!((error.kind, error.error().0), (4, -32004), "{endpoint}");
        assert!(slow_mcp1.is_closed());
    }
    let stats = server.stats();
    assert_eq!(stats["connections"]["frame_timeouts"], 4, "{stats}");
    // Whole frames, however slow the conversation, are not cut off.
    let mut client = server.client(&server.endpoints()[0]);
    for _ in 0..4 {
        assert_eq!(client.call("rpc.ping", None).expect("ping"), "pong");
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn idle_connections_are_closed_but_busy_ones_are_not() {
    let server = start_with(|c| c.idle_timeout = Duration::from_millis(300));
    for endpoint in server.endpoints() {
        let mut idle = Raw::connect(&endpoint);
        idle.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n");
        assert_eq!(idle.json()["result"], "pong");
        let mut busy = Raw::connect(&endpoint);
        busy.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"test.sleep\",\"params\":[900],\"id\":2}\n");
        assert!(idle.is_closed(), "{endpoint}: idle connection closed");
        // The busy one had a request in flight the whole time: it gets its answer.
        assert_eq!(busy.json()["result"], 900, "{endpoint}");
    }
    wait_for(&server, "idle timeouts", |s| {
        s["connections"]["idle_timeouts"].as_u64() >= Some(2)
    });
}

#[test]
fn a_peer_that_stops_reading_is_dropped_by_the_write_timeout() {
    let server = start_with(|c| c.write_timeout = Duration::from_millis(300));
    for endpoint in server.endpoints() {
        let mut hog = Raw::connect(&endpoint);
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"{}\"],\"id\":1}}\n",
            "w".repeat(60_000)
        );
        // Far more answers than socket buffers hold, and never a read.
        for _ in 0..200 {
            if hog.send_lossy(line.as_bytes()).is_err() {
                break;
            }
        }
        let key = match endpoint {
            junction::client::Endpoint::Unix(_) => 1,
            junction::client::Endpoint::Tcp(_) => 2,
        };
        wait_for(&server, "the write timeout", |s| {
            s["connections"]["write_timeouts"].as_u64() >= Some(key)
        });
        assert_healthy(&server);
    }
}

#[test]
fn running_out_of_descriptors_refuses_clearly_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("j.sock");
    let daemon = env!("CARGO_BIN_EXE_junctiond");
    // A subprocess with a small fd limit (ulimit sets soft and hard).
    let mut child = Command::new("bash")
        .env("JUNCTION_BACKEND", common::backend_name())
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {daemon} --tcp off --unix {}",
            socket.display()
        ))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + PATIENCE;
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "daemon never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let endpoint = junction::client::Endpoint::Unix(socket.clone());
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..80 {
        let mut raw = Raw::connect(&endpoint);
        // A shed client may be closed before its request is even written.
        let _ = raw.send_lossy(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n");
        let answer = raw.json();
        if answer["result"] == "pong" {
            served.push(raw);
        } else {
            assert_eq!(answer["error"]["code"], -32005, "{answer}");
            assert!(
                raw.is_closed(),
                "refused clients are closed, not left hanging"
            );
            refused += 1;
        }
    }
    assert!(
        !served.is_empty() && refused > 0,
        "served {} refused {refused}",
        served.len()
    );
    // Descriptors come back: new clients are served again.
    drop(served);
    let deadline = Instant::now() + PATIENCE;
    let stats = loop {
        let mut raw = Raw::connect(&endpoint);
        let _ = raw.send_lossy(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.stats\",\"id\":1}\n");
        let answer = raw.json();
        if answer.get("result").is_some() {
            break answer["result"].clone();
        }
        assert!(Instant::now() < deadline, "never recovered");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        stats["connections"]["fd_exhausted"].as_u64() >= Some(refused),
        "{stats}"
    );
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    let mut log = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut log));
    assert!(log.contains("out of file descriptors"), "logged: {log}");
    assert!(
        log.matches("out of file descriptors").count() <= 3,
        "rate-limited: {log}"
    );
}
