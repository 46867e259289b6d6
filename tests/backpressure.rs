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
