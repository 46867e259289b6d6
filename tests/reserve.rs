//! The buffer-memory reserve (docs/operations.md, `max-buffer-memory`):
//! once clients that never read their answers hold the daemon's buffer
//! memory at its limit, a connection holding nothing still reads, and one
//! with only part of a frame in finishes it from half of the reserve. A
//! fresh client's frame, bigger than a first read and sent in two writes,
//! gets its answer while the memory stays at the limit: it must not wait
//! for its frame timeout (set to 60 s here, while the test's own reads give
//! up after PATIENCE). Both protocols, both transports, both backends.

mod common;

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{PATIENCE, Raw, TestServer, mcp1_request, start_with};
use junction::Protocol;
use junction::client::Endpoint;
use serde_json::{Value, json};

/// The buffer memory limit: the smallest allowed.
const LIMIT: usize = 1 << 20;
/// max-frame: the largest ring, for max-frame and its framing, is 128 KiB.
const MAX_FRAME: usize = 64 << 10;
/// The reserve with these settings (see `Connection::read_space`): four of
/// the largest rings, more than LIMIT / 16.
const RESERVE: usize = 512 << 10;
/// A connection's first read (`buffer::RING_MIN`).
const FIRST_READ: usize = 16 << 10;

fn server() -> TestServer {
    start_with(|c| {
        c.max_buffer_memory = LIMIT;
        c.max_frame = MAX_FRAME;
        c.frame_timeout = Duration::from_secs(60);
    })
}

/// The daemon's counters, on a fresh connection (one holding nothing: it
/// may use the reserve, so it is answered even at the limit).
fn memory(server: &TestServer) -> Value {
    server.stats()["memory"].clone()
}

/// A client that sends `rpc.echo` calls of 8 KiB and never reads the
/// answers, until the daemon's buffer memory reaches the limit: what it
/// does not take stays in the daemon's output. Returns the socket, kept
/// open (and unread) for the test's duration.
fn fill_to_the_limit(server: &TestServer) -> UnixStream {
    let Endpoint::Unix(path) = &server.endpoints()[0] else {
        panic!("unix first");
    };
    let mut filler = UnixStream::connect(path).expect("connect");
    filler.set_nonblocking(true).expect("nonblocking");
    let pad = "f".repeat(8 << 10);
    let mut requests = Vec::new();
    for id in 0..512 {
        let line = json!({"jsonrpc": "2.0", "id": id, "method": "rpc.echo", "params": [pad]});
        requests.extend_from_slice(format!("{line}\n").as_bytes());
    }
    let mut sent = 0;
    let deadline = Instant::now() + PATIENCE;
    loop {
        while sent < requests.len() {
            match filler.write(&requests[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("the filler's write: {e}"),
            }
        }
        let memory = memory(server);
        if memory["total_bytes"].as_u64() >= Some(LIMIT as u64) {
            return filler;
        }
        assert!(
            Instant::now() < deadline && sent < requests.len(),
            "the buffer memory never reached its limit: {memory}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One `rpc.echo` call in `protocol` whose frame (a JSON-RPC line without
/// its newline, an MCP1 payload) is `size` bytes, and the text it echoes.
fn big_call(protocol: Protocol, size: usize, id: u32) -> (Vec<u8>, String) {
    let encode = |text: &str| match protocol {
        Protocol::JsonRpc => {
            let line = json!({"jsonrpc": "2.0", "id": id, "method": "rpc.echo", "params": [text]});
            format!("{line}\n").into_bytes()
        }
        Protocol::Mcp1 => {
            let body = json!([text]).to_string();
            mcp1_request(id, "rpc.echo", body.as_bytes(), false)
        }
    };
    let framing = match protocol {
        Protocol::JsonRpc => 1,
        Protocol::Mcp1 => 16,
    };
    let overhead = encode("").len() - framing;
    let text = "r".repeat(size - overhead);
    let bytes = encode(&text);
    assert_eq!(bytes.len(), size + framing, "the frame's size");
    (bytes, text)
}

/// Sends a frame of about `size` bytes in two writes (the first bigger
/// than a first read, so the daemon holds part of a frame and must grow
/// its ring to take the rest) and checks the answer.
fn partial_frame_is_answered(
    server: &TestServer,
    endpoint: &Endpoint,
    protocol: Protocol,
    size: usize,
) {
    let (bytes, text) = big_call(protocol, size, 7);
    assert!(size > FIRST_READ && size <= MAX_FRAME);
    let what = format!("{protocol:?} over {endpoint}, a frame of {size} bytes");
    let rings = memory(server)["ring_bytes"].as_u64().expect("ring_bytes");
    let mut raw = Raw::connect(endpoint);
    let cut = FIRST_READ + (bytes.len() - FIRST_READ) / 2;
    raw.send(&bytes[..cut]);
    // The first part is in (a ring of its own, at least a first read's),
    // and memory is still at the limit: the rest comes as a second write.
    let deadline = Instant::now() + PATIENCE;
    let before = loop {
        let memory = memory(server);
        if memory["ring_bytes"].as_u64() >= Some(rings + FIRST_READ as u64) {
            break memory;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the first part was never read: {memory}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        before["total_bytes"].as_u64() >= Some(LIMIT as u64),
        "{what}: at the limit with part of the frame in: {before}"
    );
    raw.send(&bytes[cut..]);
    match protocol {
        Protocol::JsonRpc => {
            let answer = raw.json();
            assert_eq!(answer["id"], 7, "{what}");
            assert_eq!(answer["result"], json!([text]), "{what}: {before}");
        }
        Protocol::Mcp1 => {
            let frame = raw.frame();
            assert_eq!(frame.id, 7, "{what}");
            assert_eq!(frame.json(), json!([text]), "{what}: {before}");
        }
    }
}

/// A small call on a fresh connection (holding nothing: it may use the
/// whole reserve) is answered at the limit.
fn fresh_call_is_answered(endpoint: &Endpoint, protocol: Protocol) {
    let mut raw = Raw::connect(endpoint);
    match protocol {
        Protocol::JsonRpc => {
            raw.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.ping\"}\n");
            assert_eq!(raw.json()["result"], "pong", "{endpoint}");
        }
        Protocol::Mcp1 => {
            raw.send(&mcp1_request(1, "rpc.ping", b"", false));
            assert_eq!(raw.frame().json(), json!("pong"), "{endpoint}");
        }
    }
}

#[test]
fn a_partial_frame_finishes_from_the_reserve_while_memory_is_at_the_limit() {
    let server = server();
    let _filler = fill_to_the_limit(&server);
    for endpoint in server.endpoints() {
        for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
            fresh_call_is_answered(&endpoint, protocol);
            // Frames that need rings of 32, 64 and 128 KiB (the largest,
            // for max-frame itself with its framing).
            for size in [24 << 10, 48 << 10, MAX_FRAME - 256, MAX_FRAME] {
                partial_frame_is_answered(&server, &endpoint, protocol, size);
                let memory = memory(&server);
                let total = memory["total_bytes"].as_u64().expect("total_bytes");
                assert!(
                    total >= LIMIT as u64,
                    "the filler still holds the memory at the limit: {memory}"
                );
                assert!(
                    total < (LIMIT + RESERVE) as u64,
                    "within the limit and its reserve: {memory}"
                );
            }
        }
    }
    assert!(
        memory(&server)["waits"].as_u64() > Some(0),
        "the filler waited for memory"
    );
}

/// A connection that had to wait for memory with part of a frame in is
/// tried again as soon as some memory is freed, not only once the total is
/// back under the limit: clients that never read can hold it above the
/// limit for ever, and nothing else would wake the waiting connection (its
/// client has sent everything and waits for the answer).
#[test]
fn a_waiting_partial_frame_is_tried_again_when_memory_is_freed_above_the_limit() {
    const RING_MIN: u64 = FIRST_READ as u64;
    let server = server();
    let _filler = fill_to_the_limit(&server);
    let endpoint = server.endpoints()[0].clone();
    let total = |server: &TestServer| memory(server)["total_bytes"].as_u64().expect("total");
    // Holders: each sends part of a line that fits its first ring (held,
    // unanswered), until the total is past the limit and half the reserve.
    let mut holders = Vec::new();
    let mut partial = br#"{"jsonrpc":"2.0","id":1,"method":"rpc.echo","params":[""#.to_vec();
    partial.resize(FIRST_READ - 1024, b'h');
    let deadline = Instant::now() + PATIENCE;
    while total(&server) < (LIMIT + RESERVE / 2 + RESERVE / 8) as u64 {
        assert!(
            Instant::now() < deadline && holders.len() < 64,
            "the holders never took the memory past half the reserve: {}",
            memory(&server)
        );
        let rings = memory(&server)["ring_bytes"].as_u64().expect("ring_bytes");
        let mut holder = Raw::connect(&endpoint);
        holder.send(&partial);
        while memory(&server)["ring_bytes"].as_u64() < Some(rings + RING_MIN) {
            assert!(Instant::now() < deadline, "a holder's part was never read");
            std::thread::sleep(Duration::from_millis(5));
        }
        holders.push(holder);
    }
    // A frame that needs a second ring: its first part fills the first,
    // and growing is refused (part of a frame in, the total past the limit
    // and half the reserve): it waits, with all of it sent.
    let waits = memory(&server)["waits"].as_u64().expect("waits");
    let (bytes, text) = big_call(Protocol::JsonRpc, 30 << 10, 9);
    let mut waiting = Raw::connect(&endpoint);
    waiting.send(&bytes);
    while memory(&server)["waits"].as_u64() <= Some(waits) {
        assert!(
            Instant::now() < deadline,
            "the frame never waited for memory: {}",
            memory(&server)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Free some memory, but stay above the limit.
    while total(&server) >= (LIMIT + RESERVE / 2 - 4 * FIRST_READ) as u64 {
        drop(holders.pop().expect("a holder left"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = memory(&server);
    assert!(
        before["total_bytes"].as_u64() > Some(LIMIT as u64),
        "still above the limit: {before}"
    );
    let answer = waiting.json();
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["result"], json!([text]), "{before}");
}
