//! Pub/sub over real sockets: subscriptions by name and pattern, fan-out,
//! and slow subscribers under their queue caps and past them
//! (proto/bus.md sections 4 and 5).

mod common;

use std::time::Duration;

use common::bus_peer::{BusPeer, Msg, kinds};
use common::start_with;
use junction::Protocol;
use junction::bus::SlowSubscriber;
use serde_json::{Value, json};

fn event(msg: Msg) -> Value {
    match msg {
        Msg::Notification { method, params } if method == "bus.event" => {
            params.expect("event params")
        }
        other => panic!("expected a bus.event, got {other:?}"),
    }
}

#[test]
fn events_reach_subscribers_of_the_topic_and_its_patterns_once() {
    let server = common::start();
    let kinds = kinds(&server);
    let mut subscribers: Vec<BusPeer> = kinds
        .iter()
        .map(|(endpoint, protocol)| BusPeer::connect(endpoint, *protocol))
        .collect();
    for (i, s) in subscribers.iter_mut().enumerate() {
        let topics = match i % 2 {
            0 => json!(["build.done"]),
            _ => json!(["build.*", "build.done"]), // both ways: still one event
        };
        assert_eq!(
            s.call("bus.subscribe", json!({ "topics": topics })),
            Ok(json!({ "topics": topics }))
        );
    }
    let mut bystander = BusPeer::connect(&kinds[0].0, Protocol::JsonRpc);
    bystander
        .call("bus.subscribe", json!({"topics": ["deploy.*"]}))
        .expect("subscribe");
    for (endpoint, protocol) in &kinds {
        let mut publisher = BusPeer::connect(endpoint, *protocol);
        let reached = publisher.call(
            "bus.publish",
            json!({"topic": "build.done", "data": {"ok": true, "n": [1, 2]}}),
        );
        assert_eq!(reached, Ok(json!({"subscribers": 4})));
        for s in &mut subscribers {
            assert_eq!(
                event(s.read()),
                json!({"topic": "build.done", "data": {"ok": true, "n": [1, 2]}})
            );
        }
        // Left-out data is null; a topic under the pattern only.
        publisher
            .call("bus.publish", json!({"topic": "build.started"}))
            .expect("publish");
        for s in subscribers.iter_mut().skip(1).step_by(2) {
            assert_eq!(
                event(s.read()),
                json!({"topic": "build.started", "data": null})
            );
        }
    }
    // Unsubscribing stops events; the bystander got none of these.
    for s in &mut subscribers {
        s.call(
            "bus.unsubscribe",
            json!({"topics": ["build.*", "build.done"]}),
        )
        .expect("unsubscribe");
    }
    let mut publisher = BusPeer::connect(&kinds[0].0, Protocol::Mcp1);
    assert_eq!(
        publisher.call("bus.publish", json!({"topic": "build.done", "data": 1})),
        Ok(json!({"subscribers": 0}))
    );
    assert_eq!(
        publisher.call("bus.publish", json!({"topic": "deploy.x", "data": 2})),
        Ok(json!({"subscribers": 1}))
    );
    assert_eq!(
        event(bystander.read()),
        json!({"topic": "deploy.x", "data": 2})
    );
    // Bad publishes.
    for bad in [
        json!({"topic": "build.*", "data": 1}),
        json!({"data": 1}),
        json!({"topic": "a b"}),
    ] {
        let error = publisher
            .call("bus.publish", bad.clone())
            .expect_err("refused");
        assert_eq!(error.0, -32602, "{bad}: {}", error.1);
    }
    let list = publisher.call("bus.list", json!({})).expect("list");
    assert_eq!(
        list["topics"],
        json!([{"topic": "deploy.*", "subscribers": 1}])
    );
}

#[test]
fn one_event_fans_out_to_a_thousand_subscribers() {
    let server = start_with(|_| {});
    let endpoints = server.endpoints();
    let mut subscribers: Vec<BusPeer> = (0..1000)
        .map(|i| {
            let protocol = if i % 2 == 0 {
                Protocol::JsonRpc
            } else {
                Protocol::Mcp1
            };
            let mut s = BusPeer::connect(&endpoints[i % 2], protocol);
            let topic = if i % 3 == 0 { "fan.*" } else { "fan.out" };
            s.call("bus.subscribe", json!({ "topics": [topic] }))
                .expect("subscribe");
            s
        })
        .collect();
    let mut publisher = BusPeer::connect(&endpoints[0], Protocol::Mcp1);
    assert_eq!(
        publisher.call("bus.publish", json!({"topic": "fan.out", "data": "hello"})),
        Ok(json!({"subscribers": 1000}))
    );
    for s in &mut subscribers {
        assert_eq!(
            event(s.read()),
            json!({"topic": "fan.out", "data": "hello"})
        );
    }
    let stats = server.stats();
    assert_eq!(stats["bus"]["events_delivered"], json!(1000));
    assert_eq!(stats["bus"]["events_dropped"], json!(0));
}

/// Publishes `count` events of about 4 KiB on `topic`; every publish is
/// answered (the publisher never waits for subscribers). Thousands of them
/// are more than loopback TCP's socket buffers hold.
fn publish_many(publisher: &mut BusPeer, topic: &str, count: u64) {
    publish_range(publisher, topic, 0..count);
}

/// Publishes the events numbered `range`, each about 4 KiB.
fn publish_range(publisher: &mut BusPeer, topic: &str, range: std::ops::Range<u64>) {
    let pad = "x".repeat(4000);
    for n in range {
        let reached = publisher
            .call(
                "bus.publish",
                json!({"topic": topic, "data": {"n": n, "pad": pad}}),
            )
            .expect("publish");
        assert!(reached["subscribers"].as_u64().is_some());
    }
}

#[test]
fn a_slow_subscriber_under_its_cap_loses_nothing_and_past_it_loses_the_oldest() {
    let server = start_with(|config| {
        config.bus.queue_events = 64;
        config.bus.queue_bytes = 1 << 20;
    });
    for (endpoint, protocol) in kinds(&server) {
        let topic = format!("slow.{}", protocol.name());
        let mut slow = BusPeer::connect(&endpoint, protocol);
        let mut fast = BusPeer::connect(&endpoint, protocol);
        for s in [&mut slow, &mut fast] {
            s.call("bus.subscribe", json!({ "topics": [&topic] }))
                .expect("subscribe");
        }
        let mut publisher = BusPeer::connect(&endpoint, Protocol::JsonRpc);

        // Under the cap: a burst the socket, the output and the queue hold.
        publish_many(&mut publisher, &topic, 40);
        for n in 0..40 {
            assert_eq!(event(fast.read())["data"]["n"], json!(n));
            let e = event(slow.read());
            assert_eq!(e["data"]["n"], json!(n), "nothing dropped under the cap");
            assert!(e.get("dropped").is_none());
        }

        // Past it: the slow one does not read while 6,000 events go by.
        let total = 6000;
        let mut got = 0u64;
        // The fast one reads on its own thread, and the publisher never gets
        // more than a step ahead of it: on a loaded machine a reader that
        // merely runs would still fall behind, and lose events as it should.
        let (read_tx, read_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for n in 0..total {
                assert_eq!(
                    event(fast.read())["data"]["n"],
                    json!(n),
                    "the fast one gets all"
                );
                let _ = read_tx.send(n);
            }
        });
        let step = 16; // well under the cap of 64 events and 1 MiB
        for start in (0..total).step_by(step) {
            let end = (start + step as u64).min(total);
            publish_range(&mut publisher, &topic, start..end);
            while read_rx
                .recv_timeout(common::PATIENCE)
                .expect("the fast subscriber keeps reading")
                + 1
                < end
            {}
        }
        reader
            .join()
            .expect("the fast subscriber got every event in order");
        let mut dropped = 0;
        let mut last = None;
        while got + dropped < total {
            let e = event(slow.read());
            let n = e["data"]["n"].as_u64().expect("n");
            dropped += e.get("dropped").and_then(Value::as_u64).unwrap_or(0);
            assert!(last.is_none_or(|l| n > l), "in order");
            last = Some(n);
            got += 1;
        }
        assert_eq!(last, Some(total - 1), "the newest event arrives");
        assert!(dropped > 0, "{got} received, none dropped");
        assert_eq!(got + dropped, total, "every event is received or counted");
    }
    let stats = server.stats();
    assert!(stats["bus"]["events_dropped"].as_u64() > Some(0));
    common::assert_healthy(&server);
}

#[test]
fn a_slow_subscriber_past_its_cap_can_be_disconnected() {
    let server = start_with(|config| {
        config.bus.queue_events = 16;
        config.bus.slow_subscriber = SlowSubscriber::Disconnect;
    });
    for (endpoint, protocol) in kinds(&server) {
        let mut slow = BusPeer::connect(&endpoint, protocol);
        slow.call("bus.subscribe", json!({"topics": ["firehose"]}))
            .expect("subscribe");
        let mut publisher = BusPeer::connect(&endpoint, protocol);
        publish_many(&mut publisher, "firehose", 3000);
        // Whatever it had is still delivered, then the error, then the close.
        let error = loop {
            match slow.read() {
                Msg::Notification { .. } => continue,
                Msg::Response { result, .. } => break result.expect_err("an error"),
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(error.0, -32024, "{}", error.1);
        assert!(slow.is_closed());
        // The publisher is unaffected, and the topic has no subscriber left.
        assert_eq!(
            publisher.call("bus.publish", json!({"topic": "firehose", "data": 0})),
            Ok(json!({"subscribers": 0}))
        );
    }
    assert_eq!(server.stats()["bus"]["slow_disconnects"], json!(4));
    let _ = Duration::ZERO;
}
