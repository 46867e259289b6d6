//! The library client on the service bus against a real daemon: a Rust
//! provider answering forwarded calls, cancels, events, and messages the
//! daemon sends while a call waits.

mod common;

use common::PATIENCE;
use junction::Protocol;
use junction::RpcError;
use junction::client::{Body, Client, ClientError, Endpoint, Event, Incoming};
use serde_json::{Value, json};

const PROTOCOLS: [Protocol; 2] = [Protocol::JsonRpc, Protocol::Mcp1];

fn client(endpoint: &Endpoint, protocol: Protocol) -> Client {
    let mut client = Client::connect_with(endpoint, protocol).expect("connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    client
}

/// A provider of `lib.*` on its own thread: echoes params, fails `lib.fail`.
fn spawn_provider(endpoint: &Endpoint, protocol: Protocol) -> std::thread::JoinHandle<()> {
    let mut provider = client(endpoint, protocol);
    assert_eq!(
        provider.register(&["lib.*"]).expect("register"),
        vec!["lib.*"]
    );
    provider.set_timeout(None).expect("no timeout");
    std::thread::spawn(move || {
        while let Ok(message) = provider.next_message() {
            if let Incoming::Request(call) = message {
                let answer = match call.method.as_str() {
                    "lib.fail" => Err(RpcError::new(4242, "failed here").data(json!({"x": 1}))),
                    _ => Ok(call.params.unwrap_or(Body::Json(Value::Null))),
                };
                if provider.respond(call.id, answer).is_err() {
                    return;
                }
            }
        }
    })
}

#[test]
fn a_library_provider_serves_every_transport_and_protocol() {
    for provider_protocol in PROTOCOLS {
        // A server per provider: the name is released with the server.
        let server = common::start();
        let unix = server.endpoints().remove(0);
        let _thread = spawn_provider(&unix, provider_protocol);
        for endpoint in server.endpoints() {
            for protocol in PROTOCOLS {
                let what =
                    format!("{provider_protocol:?} provider, {protocol:?} caller on {endpoint}");
                let mut caller = client(&endpoint, protocol);
                let params = json!({"k": [1, 2, {"deep": null}]});
                assert_eq!(
                    caller.call("lib.echo", Some(params.clone())).expect(&what),
                    params
                );
                match caller.call("lib.fail", Some(json!([]))) {
                    Err(ClientError::Rpc(e)) => {
                        assert_eq!(
                            (e.code, e.message.as_ref()),
                            (4242, "failed here"),
                            "{what}"
                        );
                        assert_eq!(e.data, Some(json!({"x": 1})), "{what}");
                    }
                    other => panic!("{what}: {other:?}"),
                }
                if protocol == Protocol::Mcp1 && provider_protocol == Protocol::Mcp1 {
                    let raw = caller
                        .call_body("lib.raw", Some(Body::Raw(vec![0, 1, 0xff])))
                        .expect(&what);
                    assert_eq!(raw, Body::Raw(vec![0, 1, 0xff]), "{what}");
                }
            }
        }
        let list = client(&unix, Protocol::JsonRpc)
            .bus_list()
            .expect("bus.list");
        assert!(list.names.iter().any(|n| n.name == "lib.*"), "{list:?}");
    }
}

#[test]
fn events_reach_subscribers_even_while_they_call() {
    let server = common::start();
    for endpoint in server.endpoints() {
        for protocol in PROTOCOLS {
            let mut subscriber = client(&endpoint, protocol);
            assert_eq!(
                subscriber.subscribe(&["ev.*"]).expect("subscribe"),
                vec!["ev.*"]
            );
            let mut publisher = client(&endpoint, protocol);
            assert_eq!(
                publisher
                    .publish("ev.one", json!({"n": 1}))
                    .expect("publish"),
                1
            );
            // The event may arrive before this call's answer: not lost.
            assert_eq!(subscriber.publish("ev.two", json!(2)).expect("publish"), 1);
            let mut events = Vec::new();
            while events.len() < 2 {
                match subscriber.next_message().expect("message") {
                    Incoming::Event(event) => events.push(event),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(
                events,
                vec![
                    Event {
                        topic: "ev.one".into(),
                        data: json!({"n": 1}),
                        dropped: None
                    },
                    Event {
                        topic: "ev.two".into(),
                        data: json!(2),
                        dropped: None
                    },
                ]
            );
            assert_eq!(
                subscriber.unsubscribe(&["ev.*"]).expect("unsubscribe"),
                vec!["ev.*"]
            );
            assert_eq!(
                publisher.publish("ev.three", Value::Null).expect("publish"),
                0
            );
        }
    }
}

#[test]
fn a_provider_hears_the_cancel_when_the_caller_leaves() {
    let server = common::start();
    let unix = server.endpoints().remove(0);
    for protocol in PROTOCOLS {
        let mut provider = client(&unix, protocol);
        provider.register(&["slow.op"]).expect("register");
        let mut caller = client(&unix, Protocol::JsonRpc);
        caller.send("slow.op", Some(json!([1]))).expect("send");
        caller.flush().expect("flush");
        let Incoming::Request(call) = provider.next_message().expect("request") else {
            panic!("expected the forwarded call");
        };
        drop(caller);
        match provider.next_message().expect("cancel") {
            Incoming::Cancel { id, reason } => {
                assert_eq!((id, reason.as_str()), (call.id, "caller gone"));
            }
            other => panic!("expected the cancel, got {other:?}"),
        }
        // A late answer is dropped, and the provider is still fine.
        provider
            .respond(call.id, Ok(Body::Json(json!("late"))))
            .expect("late answer");
        assert_eq!(provider.call("rpc.ping", None).expect("ping"), "pong");
        provider.unregister(&["slow.op"]).expect("unregister");
    }
}
