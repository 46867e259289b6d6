//! HTTP and WebSocket under bad input, over real sockets: random bytes
//! after a request line or inside a WebSocket never hang or crash the
//! daemon; a request that trickles in hits the frame timeout (408); the
//! pre-authentication limits hold (4 KiB bodies, the auth timeout).

mod common;

use std::time::Duration;

use common::{Raw, start_with};
use junction::access::{AuthToken, NamedToken};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const UPGRADE: &[u8] =
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn random_bytes_after_a_request_line_or_an_upgrade_never_hang_the_daemon() {
    let server = start_with(|c| c.max_frame = 2048);
    let endpoints = server.endpoints();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let bytes = proptest::collection::vec(any::<u8>(), 0..3000);
    runner
        .run(&(bytes, 0usize..4, 0usize..2), |(bytes, lead, transport)| {
            let lead: &[u8] = [
                &b"GET "[..],
                b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"POST / HTTP/1.1\r\n",
                UPGRADE,
            ][lead];
            let mut raw = Raw::connect(&endpoints[transport]);
            raw.send(lead);
            let _ = raw.send_lossy(&bytes);
            raw.shutdown_write();
            // The daemon answers what it can and closes: never a hang.
            prop_assert!(raw.read_to_end_or_reset().is_ok());
            Ok(())
        })
        .expect("every connection ends");
    common::assert_healthy(&server);
    common::assert_healthy_mcp1(&server);
}

#[test]
fn a_trickling_request_gets_408_and_unauthenticated_bodies_are_small() {
    let server = start_with(|c| {
        c.frame_timeout = Duration::from_millis(300);
        c.access = junction::access::Access {
            tokens: vec![NamedToken::owner(AuthToken::new(
                "robust-secret-robust-secret",
            ))],
            ..junction::access::Access::default()
        };
    });
    let tcp = server.endpoints().remove(1);
    // A head that never ends (slowloris).
    let mut raw = Raw::connect(&tcp);
    raw.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1");
    assert_eq!(
        raw.line().as_deref(),
        Some("HTTP/1.1 408 Request Timeout\r")
    );
    let _ = raw.rest();
    // A head whose body never comes: the frame clock runs from the head.
    let mut raw = Raw::connect(&tcp);
    raw.send(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer robust-secret-robust-secret\r\n\
          Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{",
    );
    assert_eq!(
        raw.line().as_deref(),
        Some("HTTP/1.1 408 Request Timeout\r")
    );
    let _ = raw.rest();
    let mut raw = Raw::connect(&tcp);
    raw.send(
        b"POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer robust-secret-robust-secret\r\n\
          Content-Type: application/json\r\nContent-Length: 50\r\n\r\n",
    );
    assert_eq!(
        raw.line().as_deref(),
        Some("HTTP/1.1 408 Request Timeout\r")
    );
    let _ = raw.rest();
    // Before authentication a POST gets 401 before its body is read.
    let mut raw = Raw::connect(&tcp);
    raw.send(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n");
    assert_eq!(raw.line().as_deref(), Some("HTTP/1.1 401 Unauthorized\r"));
    let _ = raw.rest();
    // An unauthenticated WebSocket message past 4 KiB: 1009.
    let mut raw = Raw::connect(&tcp);
    raw.send(UPGRADE);
    while raw.line().is_some_and(|l| l != "\r") {}
    let mut frame = vec![0x81, 0x80 | 126, 0x13, 0x88, 0, 0, 0, 0];
    frame.extend(std::iter::repeat_n(b' ', 5000));
    let _ = raw.send_lossy(&frame);
    let close = raw.exact(4);
    assert_eq!(
        (close[0], u16::from_be_bytes([close[2], close[3]])),
        (0x88, 1009)
    );
    let stats = server.stats();
    assert!(
        stats["connections"]["frame_timeouts"].as_u64().unwrap() >= 3,
        "{stats}"
    );
}
