//! Zero-copy send (`zero-copy-min`): on io_uring, large TCP replies go out
//! with SEND_ZC, and must still arrive byte-exact and in order; a client that
//! goes away with such a send in flight must not crash or leak anything.
//! On epoll the same tests run and no zero-copy send may be counted.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use junction::client::Endpoint;
use junction::{Mode, Server};
use serde_json::Value;

use common::{PATIENCE, TestServer};

/// The threshold the tests use: low, so that modest replies cross it.
const MIN: usize = 16 << 10;

/// Reply sizes around and above the threshold.
const SIZES: [usize; 7] = [MIN - 1, MIN, MIN + 1, 64 << 10, 100_000, 256 << 10, 1 << 20];

fn on_io_uring() -> bool {
    std::env::var("JUNCTION_BACKEND").as_deref() == Ok("io-uring")
}

/// A server whose `test.blob` answers `[n, seed]` with a string of n bytes.
fn start(write_timeout: Duration) -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::test_config(&dir);
    config.zero_copy_min = MIN;
    config.write_timeout = write_timeout;
    config.max_output = 64 << 20;
    let mut router = common::test_router();
    router
        .typed(
            "test.blob",
            "a string of N bytes from SEED ([N, SEED])",
            Mode::Inline,
            |(n, seed): (usize, u64)| Ok(blob(n, seed)),
        )
        .expect("test.blob");
    let server = Server::bind(&config, router).expect("bind");
    TestServer {
        running: server.spawn().expect("spawn"),
        dir,
    }
}

/// N printable bytes that differ with the seed and along the string, so a
/// reply out of order or shifted by a byte cannot pass for another.
fn blob(n: usize, seed: u64) -> String {
    (0..n)
        .map(|i| (b'a' + ((i as u64 * 7 + seed * 13 + (i as u64 >> 10)) % 26) as u8) as char)
        .collect()
}

fn request(id: u64, n: usize) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"method\":\"test.blob\",\"params\":[{n},{id}],\"id\":{id}}}\n")
}

fn expected(id: u64, n: usize) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"result\":\"{}\",\"id\":{id}}}",
        blob(n, id)
    )
}

fn tcp(server: &TestServer) -> TcpStream {
    let addr = server.running.tcp_addr().expect("tcp on");
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

/// Sends every request at once (from a second thread, so that neither side
/// blocks the other) and checks each reply, in order, byte for byte.
fn pipelined(server: &TestServer, first_id: u64, sizes: &[usize]) {
    let stream = tcp(server);
    let mut writer = stream.try_clone().expect("clone");
    let batch: String = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| request(first_id + i as u64, n))
        .collect();
    let sender = std::thread::spawn(move || writer.write_all(batch.as_bytes()));
    let mut reader = BufReader::new(stream);
    for (i, &n) in sizes.iter().enumerate() {
        let id = first_id + i as u64;
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply");
        assert!(
            line.trim_end() == expected(id, n),
            "reply {id} ({n} bytes) differs: got {} bytes starting {:?}",
            line.len(),
            &line[..line.len().min(60)]
        );
    }
    sender.join().expect("sender").expect("send");
}

fn stats(server: &TestServer) -> Value {
    server.stats()
}

/// Waits until no TCP connection is open; returns the last count seen.
fn tcp_settles(server: &TestServer) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let current = stats(server)["connections"]["tcp"]["current"]
            .as_u64()
            .expect("count");
        if current == 0 || Instant::now() > deadline {
            return current;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_zero_copy_counted(server: &TestServer) {
    let writes = &stats(server)["writes"];
    let sends = writes["zero_copy"].as_u64().expect("writes.zero_copy");
    if on_io_uring() {
        assert!(sends > 0, "no zero-copy send on io_uring: {writes}");
        let bytes = writes["zero_copy_bytes"].as_u64().expect("bytes");
        assert!(bytes >= sends * MIN as u64, "{writes}");
    } else {
        assert_eq!(sends, 0, "epoll never sends zero-copy: {writes}");
    }
}

#[test]
fn large_replies_arrive_exact_and_in_order_on_several_connections() {
    let server = start(Duration::from_secs(30));
    let sizes: Vec<usize> = SIZES.iter().chain(SIZES.iter().rev()).copied().collect();
    std::thread::scope(|scope| {
        for conn in 0..4u64 {
            let server = &server;
            let sizes = &sizes;
            scope.spawn(move || {
                for round in 0..3u64 {
                    pipelined(server, 1000 * (conn * 10 + round), sizes);
                }
            });
        }
    });
    // Small answers mixed with large ones keep their order too.
    let mixed = [10, MIN * 2, 5, 300_000, 1, MIN];
    pipelined(&server, 90_000, &mixed);
    assert_zero_copy_counted(&server);
    common::assert_healthy(&server);
}

#[test]
fn unix_connections_never_send_zero_copy() {
    let server = start(Duration::from_secs(30));
    let unix = server.running.unix_path().expect("unix on").to_path_buf();
    let mut client = server.client(&Endpoint::Unix(unix));
    let reply = client
        .call("test.blob", Some(serde_json::json!([256 << 10, 3])))
        .expect("blob");
    assert_eq!(reply.as_str().map(str::len), Some(256 << 10));
    let writes = &stats(&server)["writes"];
    assert_eq!(writes["zero_copy"], 0, "{writes}");
}

#[test]
fn a_client_leaving_mid_reply_is_cleaned_up() {
    let server = start(Duration::from_secs(30));
    for _ in 0..3 {
        let mut stream = tcp(&server);
        let burst: String = (0..16).map(|id| request(id, 1 << 20)).collect();
        stream.write_all(burst.as_bytes()).expect("send");
        // Take a little of the first reply, then vanish with the rest unread
        // (the close resets the connection).
        let mut some = vec![0; 100_000];
        stream.read_exact(&mut some).expect("part of a reply");
        drop(stream);
    }
    assert_eq!(tcp_settles(&server), 0, "connections left open");
    pipelined(&server, 7, &[MIN, 1 << 20]);
    assert_zero_copy_counted(&server);
    common::assert_healthy(&server);
}

#[test]
fn a_stuck_reader_is_closed_by_the_write_timeout() {
    let server = start(Duration::from_millis(500));
    let mut stuck = tcp(&server);
    let burst: String = (0..16).map(|id| request(id, 1 << 20)).collect();
    // Never read: the daemon's sends stall with data unacknowledged, and the
    // write timeout closes it while this client is still open.
    let sender = {
        let mut writer = stuck.try_clone().expect("clone");
        std::thread::spawn(move || {
            let _ = writer.write_all(burst.as_bytes());
        })
    };
    assert_eq!(tcp_settles(&server), 0, "the stuck connection stayed open");
    pipelined(&server, 11, &[MIN, 1 << 20, MIN + 1]);
    let closed = stats(&server)["connections"]["write_timeouts"].as_u64();
    assert_eq!(closed, Some(1));
    // The daemon closed its end: reading on reaches the end (or a reset).
    let mut rest = Vec::new();
    let _ = stuck.read_to_end(&mut rest);
    drop(stuck);
    let _ = sender.join();
    common::assert_healthy(&server);
}

#[test]
fn the_setting_round_trips_through_flag_env_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("j.toml");
    std::fs::write(&file, "zero-copy-min = \"128KiB\"\n").expect("write");
    let print = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_junctiond"));
        cmd.arg("--print-config").args(args);
        cmd.env_remove("JUNCTION_ZERO_COPY_MIN");
        if let Some(value) = env {
            cmd.env("JUNCTION_ZERO_COPY_MIN", value);
        }
        let out = cmd.output().expect("print-config");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("zero-copy-min"))
            .map(str::to_owned)
            .expect("zero-copy-min printed")
    };
    let config = file.to_str().expect("utf8");
    assert_eq!(print(&[], None), "zero-copy-min = \"64KiB\"");
    assert_eq!(
        print(&["--config", config], None),
        "zero-copy-min = \"128KiB\""
    );
    assert_eq!(
        print(&["--config", config], Some("1MiB")),
        "zero-copy-min = \"1MiB\""
    );
    assert_eq!(
        print(&["--config", config, "--zero-copy-min", "0"], Some("1MiB")),
        "zero-copy-min = \"0\""
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_junctiond"))
        .args(["--print-config", "--zero-copy-min", "2GiB"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("zero-copy-min"));
}
