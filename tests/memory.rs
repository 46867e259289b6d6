//! Memory that comes back (issue 15): ring storage past the warm pool goes
//! back to the kernel, and connections that leave with a request or a
//! partial frame in flight leave no buffer behind, on both backends,
//! transports and protocols.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{Raw, TestServer, mcp1_request, start};
use junction::client::Endpoint;
use serde_json::Value;

/// The warm pool a ring size class keeps resident (buffer::RING_WARM_BYTES).
const WARM: u64 = 1 << 20;

/// The ring the rpc.stats query itself may hold while it is answered (on
/// io_uring its READV's ring is counted in the gauge of the turn before).
const OWN_RING: u64 = 16 * 1024;

/// Polls rpc.stats until `done` holds (a hang guard, not a timing claim).
fn wait_for(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = server.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "never {what}: {stats}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn memory(stats: &Value, field: &str) -> u64 {
    stats["memory"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("memory.{field} missing: {stats}"))
}

fn open_connections(stats: &Value) -> u64 {
    let unix = stats["connections"]["unix"]["current"]
        .as_u64()
        .unwrap_or(0);
    let tcp = stats["connections"]["tcp"]["current"].as_u64().unwrap_or(0);
    unix + tcp
}

/// The first `len - 1` bytes of a frame of about `len` bytes: never whole.
fn partial(mcp1: bool, len: usize) -> Vec<u8> {
    let body = "x".repeat(len);
    if mcp1 {
        let frame = mcp1_request(1, "rpc.echo", body.as_bytes(), true);
        frame[..frame.len() - 1].to_vec()
    } else {
        format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.echo\",\"params\":[\"{body}")
            .into_bytes()
    }
}

#[test]
fn ring_pages_past_the_warm_pool_go_back_to_the_kernel() {
    let server = start();
    for endpoint in server.endpoints() {
        for mcp1 in [false, true] {
            // 160 partial frames of 12 KiB: 160 rings of 16 KiB, 2.5 MiB
            // resident, more than twice the warm pool.
            let mut peers: Vec<Raw> = (0..160)
                .map(|_| {
                    let mut raw = Raw::connect(&endpoint);
                    raw.send(&partial(mcp1, 12 * 1024));
                    raw
                })
                .collect();
            let held = wait_for(&server, "resident", |s| {
                memory(s, "ring_bytes") >= 160 * 16 * 1024
                    && memory(s, "ring_resident_bytes") >= 2 * WARM
            });
            assert!(memory(&held, "ring_pool_bytes") <= WARM, "{held}");
            peers.clear();
            let after = wait_for(&server, "given back", |s| {
                open_connections(s) <= 1
                    && memory(s, "ring_bytes") <= OWN_RING
                    && memory(s, "ring_resident_bytes") <= WARM + OWN_RING
            });
            assert!(memory(&after, "ring_pool_bytes") <= WARM, "{after}");
        }
    }
    common::assert_healthy(&server);
}

/// Many connections that each send a request and a partial frame and close
/// at once, without reading: on io_uring their reads (and writes) are in
/// flight or just done when they go, in the same turn.
#[test]
fn connections_that_send_and_close_at_once_leave_no_buffer_behind() {
    let server = start();
    let ping = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.ping\"}\n";
    for endpoint in server.endpoints() {
        for round in 0..3 {
            let mcp1 = round == 1;
            let mut bytes = if mcp1 {
                mcp1_request(7, "rpc.ping", b"", true)
            } else {
                ping.to_vec()
            };
            bytes.extend_from_slice(&partial(mcp1, 100 + round * 3000));
            let mut sockets: Vec<Box<dyn Write>> = Vec::new();
            for _ in 0..300 {
                let socket: Box<dyn Write> = match &endpoint {
                    Endpoint::Unix(path) => Box::new(UnixStream::connect(path).expect("unix")),
                    Endpoint::Tcp(addr) => Box::new(TcpStream::connect(addr).expect("tcp")),
                };
                sockets.push(socket);
            }
            for socket in &mut sockets {
                let _ = socket.write_all(&bytes);
            }
            drop(sockets);
            let stats = wait_for(&server, "all closed", |s| open_connections(s) <= 1);
            let stats = if memory(&stats, "ring_bytes") <= OWN_RING {
                stats
            } else {
                // Retiring connections give their rings back as their
                // cancelled operations complete.
                wait_for(&server, "rings back", |s| {
                    memory(s, "ring_bytes") <= OWN_RING
                })
            };
            assert!(memory(&stats, "ring_bytes") <= OWN_RING, "{stats}");
        }
    }
    common::assert_healthy(&server);
}
