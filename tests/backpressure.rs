//! A client that sends and does not read: the daemon stops reading it once
//! its pending output reaches max-output, memory stays bounded, others are
//! served, and when the client reads again every answer arrives.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{PATIENCE, Raw, assert_healthy, start_with};
use serde_json::Value;

const REQUESTS: usize = 100_000;
const CAP: usize = 256 * 1024;

#[test]
fn a_client_that_does_not_read_is_paused_not_buffered_and_loses_nothing() {
    let server = start_with(|c| {
        c.max_output = CAP;
        // Long enough that the test's pause is not taken for a dead peer.
        c.write_timeout = Duration::from_secs(60);
    });
    for (round, endpoint) in server.endpoints().into_iter().enumerate() {
        let mut hog = Raw::connect(&endpoint);
        let mut writer = hog.writer();
        let sender = std::thread::spawn(move || {
            let mut batch = Vec::with_capacity(1 << 20);
            for id in 0..REQUESTS {
                let line = format!(
                    "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"{}\"],\"id\":{id}}}\n",
                    "p".repeat(64)
                );
                batch.extend_from_slice(line.as_bytes());
                if batch.len() > 64 * 1024 {
                    writer.write_all(&batch).expect("send");
                    batch.clear();
                }
            }
            writer.write_all(&batch).expect("send");
        });
        // The daemon pauses the hog; its buffered output stays near the cap.
        let deadline = Instant::now() + PATIENCE;
        let pauses_before = round as u64;
        let mut peak = 0;
        loop {
            let stats = server.stats();
            let buffered = stats["output_buffered"].as_u64().expect("gauge");
            peak = peak.max(buffered);
            if stats["backpressure_pauses"].as_u64() > Some(pauses_before) {
                break;
            }
            assert!(Instant::now() < deadline, "never paused: {stats}");
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..20 {
            let buffered = server.stats()["output_buffered"].as_u64().expect("gauge");
            peak = peak.max(buffered);
            std::thread::sleep(Duration::from_millis(10));
        }
        // One answer may land past the cap before the pause takes effect.
        assert!(
            peak < (CAP + 4096) as u64,
            "{endpoint}: output grew to {peak} bytes"
        );
        // Others are not held up by the hog.
        assert_healthy(&server);
        // Now read everything: every request answered, in order, none lost.
        for id in 0..REQUESTS {
            let line = hog
                .line()
                .unwrap_or_else(|| panic!("{endpoint}: EOF after {id} answers"));
            let answer: Value = serde_json::from_str(&line).expect("json");
            assert_eq!(answer["id"], id, "{endpoint}");
        }
        sender.join().expect("sender");
    }
    let stats = server.stats();
    assert_eq!(stats["protocols"]["jsonrpc"]["errors"], 0, "{stats}");
}

/// A pooled request that finds the worker queue full waits on the loop, and
/// its connection stops being read until the job is queued: every call is
/// answered (no "server busy"), batches included, and other clients are served.
#[test]
fn a_full_worker_queue_pushes_back_on_reading_instead_of_refusing() {
    use junction::Protocol;
    use junction::client::{BatchEntry, Client, ClientError};
    let server = start_with(|c| {
        c.workers = 1;
        c.queue = 2;
    });
    const CALLS: u64 = 24;
    for endpoint in server.endpoints() {
        for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
            let mut hog = Client::connect_with(&endpoint, protocol).expect("connect");
            hog.set_timeout(Some(PATIENCE)).expect("timeout");
            let ids: Vec<u64> = (0..CALLS)
                .map(|_| {
                    hog.send("test.sleep", Some(serde_json::json!([3])))
                        .expect("send")
                })
                .collect();
            hog.flush().expect("flush");
            assert_healthy(&server);
            for id in ids {
                let answer = hog.wait(id).expect("answer");
                let result = answer.result.map_err(ClientError::Rpc).expect("no error");
                assert_eq!(
                    result.into_json().expect("json"),
                    3,
                    "{endpoint} {protocol:?}"
                );
            }
        }
        // A batch wider than the queue is answered whole.
        let mut client = Client::connect(&endpoint).expect("connect");
        client.set_timeout(Some(PATIENCE)).expect("timeout");
        let calls: Vec<BatchEntry> = (0..10)
            .map(|_| BatchEntry {
                method: "test.sleep".into(),
                params: Some(serde_json::json!([1])),
                notification: false,
            })
            .collect();
        let answers = client.batch(&calls).expect("batch");
        assert_eq!(answers.len(), 10);
        assert!(
            answers.iter().all(|a| a.as_ref().is_ok_and(|v| *v == 1)),
            "{answers:?}"
        );
    }
    let stats = server.stats();
    assert!(stats["queue_full_waits"].as_u64() > Some(0), "{stats}");
    assert_eq!(stats["protocols"]["jsonrpc"]["errors"], 0, "{stats}");
    assert_eq!(stats["protocols"]["mcp1"]["errors"], 0, "{stats}");
}

/// Past max-buffer-memory, connections holding buffers are not read until
/// memory drains; a connection holding none is still served from a small
/// reserve; nothing read is lost.
#[test]
fn total_buffer_memory_is_capped_and_light_clients_are_still_served() {
    const LIMIT: usize = 1 << 20;
    // More than the kernel's socket buffers on both ends can absorb (TCP
    // autotuning takes several MiB), so answers pile up in the daemon.
    const REQUESTS: usize = 200;
    let server = start_with(|c| {
        c.max_buffer_memory = LIMIT;
        c.max_output = 64 << 20;
        c.write_timeout = Duration::from_secs(60);
        c.sockets.tcp_sndbuf = 64 * 1024;
        c.sockets.unix_sndbuf = 64 * 1024;
    });
    let payload = "m".repeat(64 * 1024);
    for (round, endpoint) in server.endpoints().into_iter().enumerate() {
        let mut hog = Raw::connect(&endpoint);
        let mut writer = hog.writer();
        let line = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"{payload}\"],\"id\":0}}\n"
        );
        let sender = std::thread::spawn(move || {
            for _ in 0..REQUESTS {
                writer.write_all(line.as_bytes()).expect("send");
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut peak = 0;
        loop {
            let stats = server.stats();
            peak = peak.max(stats["memory"]["total_bytes"].as_u64().expect("gauge"));
            if stats["memory"]["waits"].as_u64() > Some(round as u64) {
                break;
            }
            assert!(Instant::now() < deadline, "never held back: {stats}");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_healthy(&server);
        for _ in 0..20 {
            let stats = server.stats();
            peak = peak.max(stats["memory"]["total_bytes"].as_u64().expect("gauge"));
            std::thread::sleep(Duration::from_millis(5));
        }
        // Past the limit by at most what one read had already brought in.
        assert!(
            peak < (LIMIT + 512 * 1024) as u64,
            "{endpoint}: buffers grew to {peak} bytes"
        );
        for n in 0..REQUESTS {
            let line = hog
                .line()
                .unwrap_or_else(|| panic!("{endpoint}: EOF after {n} answers"));
            let answer: Value = serde_json::from_str(&line).expect("json");
            assert_eq!(
                answer["result"][0].as_str().map(str::len),
                Some(payload.len())
            );
        }
        sender.join().expect("sender");
    }
    let stats = server.stats();
    assert_eq!(stats["memory"]["limit_bytes"], LIMIT, "{stats}");
    assert_eq!(stats["protocols"]["jsonrpc"]["errors"], 0, "{stats}");
}

#[test]
fn max_in_flight_holds_a_pipelining_client_and_loses_nothing() {
    use junction::Protocol;
    use junction::client::{Client, ClientError};
    let server = start_with(|c| {
        c.workers = 2;
        c.max_in_flight = 3;
    });
    const CALLS: u64 = 30;
    for endpoint in server.endpoints() {
        for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
            let mut hog = Client::connect_with(&endpoint, protocol).expect("connect");
            hog.set_timeout(Some(PATIENCE)).expect("timeout");
            let ids: Vec<u64> = (0..CALLS)
                .map(|n| {
                    let method = if n % 3 == 0 { "rpc.echo" } else { "test.sleep" };
                    hog.send(method, Some(serde_json::json!([n])))
                        .expect("send")
                })
                .collect();
            hog.flush().expect("flush");
            assert_healthy(&server);
            for (n, id) in ids.into_iter().enumerate() {
                let answer = hog.wait(id).expect("answer");
                let result = answer.result.map_err(ClientError::Rpc).expect("no error");
                let expected = if n % 3 == 0 {
                    serde_json::json!([n])
                } else {
                    serde_json::json!(n)
                };
                assert_eq!(
                    result.into_json().expect("json"),
                    expected,
                    "{endpoint} {protocol:?}"
                );
            }
        }
    }
}
