//! Many clients pipelining at once: every response matches its request.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Raw, start};
use junction::Protocol;
use junction::client::{Body, Client};
use serde_json::{Value, json};

const CLIENTS: usize = 64;
const REQUESTS: u64 = 1000;

#[test]
fn sixty_four_clients_pipelining_a_thousand_requests_each_get_their_own_answers() {
    let server = start();
    let endpoints = server.endpoints();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                // Half the clients on each transport.
                let endpoint = endpoints[c % 2].clone();
                let server = &server;
                scope.spawn(move || {
                    let mut client = server.client(&endpoint);
                    let mut expected = Vec::with_capacity(REQUESTS as usize);
                    for i in 0..REQUESTS {
                        let payload =
                            json!({"client": c, "seq": i, "pad": "p".repeat((i % 50) as usize)});
                        // Mix inline and pooled methods so answers come back out of order.
                        let method = match i % 4 {
                            0 => "test.echo_pooled",
                            _ => "rpc.echo",
                        };
                        let id = client.send(method, Some(payload.clone())).expect("send");
                        expected.push((id, payload));
                    }
                    client.flush().expect("flush");
                    let mut seen = HashSet::new();
                    for _ in 0..REQUESTS {
                        let response = client.recv().expect("response");
                        let id = response.id.as_u64().expect("numeric id");
                        assert!(seen.insert(id), "client {c}: id {id} answered twice");
                        let (_, payload) = &expected[(id - 1) as usize];
                        assert_eq!(
                            response.result.as_ref().ok(),
                            Some(&Body::Json(payload.clone())),
                            "client {c} id {id}"
                        );
                    }
                    assert_eq!(seen.len(), REQUESTS as usize);
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("client thread");
        }
    });
    let stats = server.stats();
    let frames = stats["protocols"]["jsonrpc"]["frames"]
        .as_u64()
        .expect("frames");
    assert!(frames >= CLIENTS as u64 * REQUESTS, "{stats}");
    assert_eq!(stats["protocols"]["jsonrpc"]["errors"], 0);
}

#[test]
fn json_rpc_and_mcp1_clients_share_one_daemon_on_both_transports() {
    let server = start();
    let endpoints = server.endpoints();
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                // Every (transport, protocol) pair gets a quarter of the clients.
                let endpoint = endpoints[c % 2].clone();
                let protocol = if (c / 2) % 2 == 0 {
                    Protocol::JsonRpc
                } else {
                    Protocol::Mcp1
                };
                scope.spawn(move || {
                    let mut client = Client::connect_with(&endpoint, protocol).expect("connect");
                    client.set_timeout(Some(common::PATIENCE)).expect("timeout");
                    let mut sent = Vec::new();
                    for i in 0..500u64 {
                        let body = match (protocol, i % 3) {
                            (Protocol::Mcp1, 0) => Body::Raw(format!("raw {c} {i}").into_bytes()),
                            _ => Body::Json(json!([c, i])),
                        };
                        let method = if i % 5 == 0 {
                            "test.echo_pooled"
                        } else {
                            "rpc.echo"
                        };
                        sent.push((
                            client.send_body(method, Some(body.clone())).expect("send"),
                            body,
                        ));
                    }
                    client.flush().expect("flush");
                    for _ in 0..sent.len() {
                        let response = client.recv().expect("response");
                        let id = response.id.as_u64().expect("id");
                        let (_, body) = sent.iter().find(|(i, _)| *i == id).expect("known id");
                        assert_eq!(
                            response.result.as_ref().ok(),
                            Some(body),
                            "client {c} {protocol:?} id {id}"
                        );
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client thread");
        }
    });
    let stats = server.stats();
    for protocol in ["jsonrpc", "mcp1"] {
        assert!(
            stats["protocols"][protocol]["connections"].as_u64() >= Some(32),
            "{stats}"
        );
        assert_eq!(stats["protocols"][protocol]["errors"], 0, "{stats}");
    }
}

#[test]
fn shutdown_answers_every_request_already_read_then_removes_the_socket() {
    let server = start();
    let endpoints = server.endpoints();
    let socket = server.running.unix_path().expect("unix").to_path_buf();
    let mut raws: Vec<Raw> = endpoints.iter().map(Raw::connect).collect();
    for raw in &mut raws {
        for id in 0..20 {
            let line = format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"test.sleep\",\"params\":[20],\"id\":{id}}}\n"
            );
            raw.send(line.as_bytes());
        }
        // Let the daemon read them before the shutdown starts.
        raw.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":\"marker\"}\n");
        assert_eq!(raw.json()["id"], "marker");
    }
    let common::TestServer { running, dir: _dir } = server;
    let stopper = std::thread::spawn(move || running.stop());
    for raw in &mut raws {
        let rest = String::from_utf8(raw.rest()).expect("utf8");
        let ids: HashSet<i64> = rest
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).expect("json")["id"]
                    .as_i64()
                    .expect("id")
            })
            .collect();
        assert_eq!(
            ids.len(),
            20,
            "every read request answered before the close: {rest}"
        );
    }
    stopper.join().expect("join").expect("clean stop");
    assert!(!socket.exists(), "socket file removed");
    // Nothing listens any more.
    std::thread::sleep(Duration::from_millis(10));
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_err());
}
