//! Hang-ups noticed at once (issue 13, scenario 8; issue 14, section 2): a
//! caller that goes away while the daemon holds its input (max-in-flight)
//! has its routed calls cancelled at the provider and its slot freed, with
//! no call timeout to end them otherwise; a TCP caller that resets is
//! noticed the same way; a TCP caller that sent FIN is a half-close until a
//! write to it is answered with a reset (proto/bus.md section 2).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use common::bus_peer::{BusPeer, Msg};
use common::{TestServer, mcp1_request, start_with};
use junction::Protocol;
use junction::bus::policy::{Policy, Rule};
use junction::client::Endpoint;
use serde_json::{Value, json};

/// Requests a connection may have out before the daemon stops reading it.
const MAX_IN_FLIGHT: usize = 4;
/// Calls each caller sends: more than it may have out.
const CALLS: u32 = 7;

/// A bus that lets TCP peers register, with no call timeout (a call that
/// is not cancelled waits for ever) and a small max-in-flight.
fn held_bus() -> TestServer {
    start_with(|config| {
        config.bus.policy = Policy::new(vec![Rule::parse("*=any,tcp").expect("rule")]);
        config.bus.call_timeout = Duration::ZERO;
        config.max_in_flight = MAX_IN_FLIGHT;
    })
}

/// One call of `slow.op` in `protocol`, as bytes.
fn call_bytes(protocol: Protocol, id: u32) -> Vec<u8> {
    match protocol {
        Protocol::JsonRpc => {
            let mut line = serde_json::to_vec(
                &json!({"jsonrpc": "2.0", "id": id, "method": "slow.op", "params": [id]}),
            )
            .expect("json");
            line.push(b'\n');
            line
        }
        Protocol::Mcp1 => mcp1_request(id, "slow.op", b"[1]", false),
    }
}

/// Reads the forwarded requests the provider gets, until `n`.
fn forwarded(provider: &mut BusPeer, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| match provider.read() {
            Msg::Request { id, .. } => id,
            other => panic!("expected a forwarded call, got {other:?}"),
        })
        .collect()
}

/// Reads one cancel per id, in any order.
fn cancelled(provider: &mut BusPeer, mut ids: Vec<u32>) {
    ids.sort_unstable();
    let mut got: Vec<u32> = (0..ids.len())
        .map(|_| match provider.read() {
            Msg::Cancel { id, reason } => {
                assert_eq!(reason, "caller gone");
                id
            }
            other => panic!("expected a cancel, got {other:?}"),
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, ids, "every call of the caller that left is cancelled");
}

/// The connections `rpc.clients` lists, asked over `endpoint`.
fn clients(endpoint: &Endpoint) -> Vec<Value> {
    let mut asker = BusPeer::connect(endpoint, Protocol::JsonRpc);
    let list = asker.call("rpc.clients", json!([])).expect("rpc.clients");
    list.as_array().expect("a list").clone()
}

/// No connection with calls out is listed any more (the caller had some).
fn assert_not_listed(endpoint: &Endpoint) {
    let list = clients(endpoint);
    assert!(
        list.iter().all(|c| c["in_flight"].as_u64() < Some(2)),
        "the caller that left is still listed: {list:?}"
    );
}

/// Waits (bounded) until the daemon holds a caller with all its calls out.
fn wait_until_held(endpoint: &Endpoint) {
    for _ in 0..500 {
        let held = clients(endpoint)
            .iter()
            .any(|c| c["in_flight"] == MAX_IN_FLIGHT && c["paused"] == true);
        if held {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("the caller was never held at max-in-flight");
}

#[test]
fn a_unix_caller_held_at_max_in_flight_that_closes_is_cancelled_at_once() {
    let server = held_bus();
    let unix = server.endpoints()[0].clone();
    for p_proto in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut provider = BusPeer::connect(&unix, p_proto);
        provider
            .call("bus.register", json!({"names": ["slow.op"]}))
            .expect("register");
        for c_proto in [Protocol::JsonRpc, Protocol::Mcp1] {
            let Endpoint::Unix(path) = &unix else {
                unreachable!()
            };
            let mut caller = UnixStream::connect(path).expect("connect");
            for id in 1..=CALLS {
                caller.write_all(&call_bytes(c_proto, id)).expect("send");
            }
            let ids = forwarded(&mut provider, MAX_IN_FLIGHT);
            wait_until_held(&unix);
            drop(caller);
            // No answer and no call timeout: only noticing the hang-up ends them.
            cancelled(&mut provider, ids);
            // Its slot is free: rpc.clients lists it no more.
            assert_not_listed(&unix);
        }
    }
    let stats = server.stats();
    assert_eq!(stats["gate"]["hang_ups"], json!(4), "{stats}");
    common::assert_healthy(&server);
}

#[test]
fn a_tcp_caller_that_resets_is_cancelled_at_once_even_when_held() {
    let server = held_bus();
    let [unix, tcp] = <[Endpoint; 2]>::try_from(server.endpoints()).expect("two");
    let mut provider = BusPeer::connect(&unix, Protocol::JsonRpc);
    provider
        .call("bus.register", json!({"names": ["slow.op"]}))
        .expect("register");
    let Endpoint::Tcp(addr) = &tcp else {
        unreachable!()
    };
    for c_proto in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut caller = TcpStream::connect(addr).expect("connect");
        for id in 1..=CALLS {
            caller.write_all(&call_bytes(c_proto, id)).expect("send");
        }
        let ids = forwarded(&mut provider, MAX_IN_FLIGHT);
        wait_until_held(&unix);
        // SO_LINGER 0: the close sends a reset, not a FIN.
        socket2::SockRef::from(&caller)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(caller);
        cancelled(&mut provider, ids);
        assert_not_listed(&unix);
    }
    common::assert_healthy(&server);
}

#[test]
fn a_tcp_caller_that_closed_is_noticed_when_an_answer_is_reset() {
    let server = held_bus();
    let [unix, tcp] = <[Endpoint; 2]>::try_from(server.endpoints()).expect("two");
    let Endpoint::Tcp(addr) = &tcp else {
        unreachable!()
    };
    for c_proto in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut provider = BusPeer::connect(&unix, Protocol::JsonRpc);
        provider
            .call("bus.register", json!({"names": ["slow.op"]}))
            .expect("register");
        let mut caller = TcpStream::connect(addr).expect("connect");
        for id in 1..=2 {
            caller.write_all(&call_bytes(c_proto, id)).expect("send");
        }
        let ids = forwarded(&mut provider, 2);
        // A plain close sends FIN, which the daemon cannot tell from a
        // half-close: both calls stay pending.
        drop(caller);
        // The first answer written reaches a closed socket, whose kernel
        // answers with a reset: the other call is cancelled then.
        provider.respond(ids[0], Ok(json!("to no one")));
        cancelled(&mut provider, vec![ids[1]]);
        assert_not_listed(&unix);
        drop(provider);
    }
    common::assert_healthy(&server);
}

#[test]
fn a_tcp_caller_that_only_half_closes_still_gets_its_answers() {
    let server = held_bus();
    let [unix, tcp] = <[Endpoint; 2]>::try_from(server.endpoints()).expect("two");
    let mut provider = BusPeer::connect(&unix, Protocol::Mcp1);
    provider
        .call("bus.register", json!({"names": ["slow.op"]}))
        .expect("register");
    let mut caller = BusPeer::connect(&tcp, Protocol::JsonRpc);
    caller.send_request(1, "slow.op", None);
    caller.send_request(2, "slow.op", None);
    let ids = forwarded(&mut provider, 2);
    caller.shutdown_write();
    provider.respond(ids[0], Ok(json!("one")));
    provider.respond(ids[1], Ok(json!("two")));
    let mut answers = [caller.read(), caller.read()].map(|m| match m {
        Msg::Response { id, result } => (id, result.expect("a result")),
        other => panic!("expected an answer, got {other:?}"),
    });
    answers.sort_by_key(|(id, _)| id.as_u64());
    assert_eq!(
        answers,
        [(json!(1), json!("one")), (json!(2), json!("two"))],
        "a half-closed caller is served to the end"
    );
    assert!(caller.is_closed());
}
