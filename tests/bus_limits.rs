//! Per-peer bus limits and output bounded whatever its source (issue 13,
//! scenarios 5, 6, 7 and 10; proto/bus.md section 9): caps on names and
//! subscriptions, events shared by their subscribers within the buffer
//! memory, batch responses capped at max-output, routed answers and
//! forwarded calls held to the receiver's limits, and max-output-hard.

mod common;

use std::time::{Duration, Instant};

use common::bus_peer::{BusPeer, Msg, kinds};
use common::{PATIENCE, Raw, TestServer, mcp1_request, start_with};
use junction::Config;
use junction::Protocol;
use junction::bus::policy::{Policy, Rule};
use serde_json::{Value, json};

/// -32025: a per-connection limit.
const LIMIT_REACHED: i32 = -32025;
/// -32000: the daemon cannot take it now.
const SERVER_BUSY: i32 = -32000;

/// Lets TCP peers register too, so every kind of peer can provide.
fn open_policy(config: &mut Config) {
    config.bus.policy = Policy::new(vec![Rule::parse("*=any,tcp").expect("rule")]);
}

/// Polls `rpc.stats` until `done` holds (a hang guard, not a timing assertion).
fn stats_until(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let stats = server.stats();
        if done(&stats) {
            return stats;
        }
        assert!(start.elapsed() < PATIENCE, "{what}: {stats:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}.n{i:05}")).collect()
}

/// Scenario 7: many names in calls of 1,024 stay correct up to the cap;
/// past it the call is refused whole with -32025; everything goes when the
/// peer leaves.
#[test]
fn names_and_subscriptions_are_capped_per_connection_and_released_on_leave() {
    let server = start_with(|config| {
        open_policy(config);
        config.bus.max_names = 2100;
        config.bus.max_subscriptions = 2100;
    });
    let mut lister = BusPeer::connect(&server.endpoints()[0], Protocol::JsonRpc);
    for (k, (endpoint, protocol)) in kinds(&server).into_iter().enumerate() {
        let prefix = format!("k{k}");
        let mut peer = BusPeer::connect(&endpoint, protocol);
        for call in 0..2 {
            let batch = names(&prefix, call * 1024..(call + 1) * 1024);
            let done = peer.call("bus.register", json!({ "names": batch }));
            assert_eq!(
                done,
                Ok(json!({ "names": batch })),
                "{endpoint} {protocol:?}"
            );
        }
        // Names it has already do not count again.
        let again = names(&prefix, 0..10);
        assert!(peer.call("bus.register", json!({ "names": again })).is_ok());
        // The third call of 1,024 would pass 2,100: refused, nothing taken.
        let third = names(&prefix, 2048..3072);
        let (code, message, data) = peer
            .call("bus.register", json!({ "names": third }))
            .expect_err("past bus-max-names");
        assert_eq!(code, LIMIT_REACHED, "{message}");
        assert!(message.contains("bus-max-names"), "{message}");
        let data = data.expect("data");
        assert_eq!(data["limit"], "bus-max-names");
        assert_eq!(data["max"], 2100);
        assert_eq!(data["held"], 2048);
        // Up to the cap still goes.
        let last = names(&prefix, 2048..2100);
        assert!(peer.call("bus.register", json!({ "names": last })).is_ok());

        let topics: Vec<String> = (0..2048).map(|i| format!("{prefix}.t{i}.*")).collect();
        for chunk in topics.chunks(1024) {
            assert!(
                peer.call("bus.subscribe", json!({ "topics": chunk }))
                    .is_ok()
            );
        }
        let more: Vec<String> = (0..100).map(|i| format!("{prefix}.u{i}")).collect();
        let (code, message, data) = peer
            .call("bus.subscribe", json!({ "topics": more }))
            .expect_err("past bus-max-subscriptions");
        assert_eq!(code, LIMIT_REACHED, "{message}");
        assert_eq!(data.expect("data")["limit"], "bus-max-subscriptions");

        let list = lister.call("bus.list", json!({})).expect("list");
        let listed = list["names"].as_array().expect("names");
        assert_eq!(listed.len(), 2100);
        assert_eq!(list["topics"].as_array().expect("topics").len(), 2048);
        let methods = server
            .client(&server.endpoints()[0])
            .call("rpc.methods", None)
            .expect("methods");
        let routed = methods
            .as_array()
            .expect("list")
            .iter()
            .filter(|m| m["mode"] == "routed")
            .count();
        assert_eq!(routed, 2100);
        drop(peer);
        // Gone: its names, topics and directory entries with it.
        let start = Instant::now();
        loop {
            let list = lister.call("bus.list", json!({})).expect("list");
            if list == json!({"names": [], "topics": []}) {
                break;
            }
            assert!(start.elapsed() < PATIENCE, "still listed: {list}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let methods = server
            .client(&server.endpoints()[0])
            .call("rpc.methods", None)
            .expect("methods");
        assert!(
            methods
                .as_array()
                .expect("list")
                .iter()
                .all(|m| m["mode"] != "routed"),
            "{methods}"
        );
    }
    assert_eq!(server.stats()["bus"]["limit_refused"], json!(8));
}

/// Scenario 6: a batch of many bus.list with many names registered answers
/// at most about max-output; the entries past it get -32025, unrun.
#[test]
fn a_batch_response_stops_at_max_output() {
    let max_output = 256 << 10;
    let server = start_with(|config| config.max_output = max_output);
    let endpoints = server.endpoints();
    let mut provider = BusPeer::connect(&endpoints[0], Protocol::Mcp1);
    for chunk in names("many", 0..1000).chunks(1000) {
        provider
            .call("bus.register", json!({ "names": chunk }))
            .expect("register");
    }
    let entries = 200;
    let batch: Vec<Value> = (0..entries)
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "bus.list"}))
        .collect();
    let line = format!("{}\n", Value::Array(batch));
    for endpoint in &endpoints {
        let mut raw = Raw::connect(endpoint);
        raw.send(line.as_bytes());
        let answer = raw.line().expect("the batch's response");
        let one_list = serde_json::to_string(&provider.call("bus.list", json!({})).expect("list"))
            .expect("json")
            .len();
        assert!(
            answer.len() < max_output + one_list + entries * 200,
            "{} bytes for a batch (max-output {max_output}, one list {one_list})",
            answer.len()
        );
        let answers: Vec<Value> = serde_json::from_str(&answer).expect("a JSON array");
        assert_eq!(answers.len(), entries, "every entry is answered");
        let run = answers.iter().filter(|a| a.get("result").is_some()).count();
        assert!(run >= 1, "the first entries run");
        assert_eq!(
            answers[0]["result"]["names"].as_array().map(Vec::len),
            Some(1000)
        );
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a["id"], json!(i), "in order, each with its id");
            if a.get("result").is_none() {
                assert_eq!(a["error"]["code"], LIMIT_REACHED, "{a}");
                let message = a["error"]["message"].as_str().expect("message");
                assert!(message.contains("max-output"), "{message}");
                assert!(i >= run, "refused entries come after the ones run");
            }
        }
        assert!(entries - run > 150, "only {run} of {entries} were run");
    }
    common::assert_healthy(&server);
}

/// A string of `n` bytes.
fn pad(n: usize) -> String {
    "x".repeat(n)
}

/// Scenario 5: many subscribers that do not read and big events: each
/// event is shared (not copied per subscriber), memory stays within
/// max-buffer-memory, a publish that does not fit gets -32000, other
/// clients are served, and a subscriber that reads at last gets every
/// event or a count of those dropped.
#[test]
fn fan_out_of_big_events_stays_within_the_buffer_memory() {
    let limit = 2 << 20;
    let server = start_with(|config| config.max_buffer_memory = limit);
    let kinds = kinds(&server);
    let subscribers: Vec<BusPeer> = (0..200)
        .map(|i| {
            let (endpoint, protocol) = &kinds[i % kinds.len()];
            let mut s = BusPeer::connect(endpoint, *protocol);
            s.call("bus.subscribe", json!({"topics": ["big.*"]}))
                .expect("subscribe");
            s
        })
        .collect();
    let mut publisher = BusPeer::connect(&kinds[0].0, Protocol::JsonRpc);
    let data = pad(256 << 10);
    let mut accepted = 0u64;
    let mut refused = 0;
    for n in 0..24 {
        match publisher.call(
            "bus.publish",
            json!({"topic": "big.event", "data": {"n": n, "pad": data}}),
        ) {
            Ok(reached) => {
                assert_eq!(reached, json!({"subscribers": 200}));
                accepted += 1;
            }
            Err((code, message, _)) => {
                assert_eq!(code, SERVER_BUSY, "{message}");
                assert!(message.contains("max-buffer-memory"), "{message}");
                refused += 1;
            }
        }
        let stats = server.stats();
        let memory = &stats["memory"];
        let owned = memory["output_bytes"].as_u64().expect("output");
        let shared = memory["shared_bytes"].as_u64().expect("shared");
        assert!(
            owned + shared <= limit as u64,
            "output {owned} + shared {shared} past the limit {limit} after publish {n}"
        );
        assert!(
            owned < 1 << 20,
            "events are not copied per subscriber: {owned}"
        );
    }
    assert!(accepted >= 1, "the first event fits");
    assert!(
        refused >= 1,
        "200 subscribers that do not read fill the budget"
    );
    assert_eq!(
        server.stats()["bus"]["publish_refused"],
        json!(refused),
        "each refusal counted"
    );
    common::assert_healthy(&server);
    common::assert_healthy_mcp1(&server);

    // A subscriber that reads at last: every accepted event, or its count.
    for mut s in subscribers.into_iter().take(4) {
        let (mut got, mut dropped, mut last) = (0u64, 0u64, None);
        while got + dropped < accepted {
            match s.read() {
                Msg::Notification { method, params } if method == "bus.event" => {
                    let e = params.expect("params");
                    let n = e["data"]["n"].as_u64().expect("n");
                    assert_eq!(e["data"]["pad"].as_str().map(str::len), Some(256 << 10));
                    assert!(last.is_none_or(|l| n > l), "in order");
                    last = Some(n);
                    dropped += e.get("dropped").and_then(Value::as_u64).unwrap_or(0);
                    got += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got + dropped, accepted, "every event received or counted");
    }
    // Once nothing holds them, the shared bytes are freed.
    drop(publisher);
}

/// Scenario 10: a caller that never reads while its provider answers many
/// large results is closed at max-output-hard (counted), and its memory is
/// freed; the provider is unaffected.
#[test]
fn a_caller_that_never_reads_is_closed_at_the_hard_limit() {
    let hard = 1 << 20;
    let server = start_with(|config| {
        config.max_output = 64 << 10;
        config.max_output_hard = hard;
    });
    let calls = 64u32;
    let answer = pad(128 << 10);
    for (i, (endpoint, protocol)) in kinds(&server).into_iter().enumerate() {
        let provider_protocol = match protocol {
            Protocol::JsonRpc => Protocol::Mcp1,
            Protocol::Mcp1 => Protocol::JsonRpc,
        };
        let method = format!("big{i}.answer");
        let mut provider = BusPeer::connect(&server.endpoints()[0], provider_protocol);
        provider
            .call("bus.register", json!({ "names": [&method] }))
            .expect("register");
        let value = answer.clone();
        let serving = std::thread::spawn(move || {
            let mut answered = 0;
            while answered < calls {
                match provider.read() {
                    Msg::Request { id, .. } => {
                        provider.respond(id, Ok(json!(value)));
                        answered += 1;
                    }
                    Msg::Cancel { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            provider
        });
        let mut caller = Raw::connect(&endpoint);
        let mut requests = Vec::new();
        for id in 1..=calls {
            match protocol {
                Protocol::JsonRpc => {
                    let line = json!({"jsonrpc": "2.0", "id": id, "method": method});
                    requests.extend_from_slice(format!("{line}\n").as_bytes());
                }
                Protocol::Mcp1 => requests.extend(mcp1_request(id, &method, b"", false)),
            }
        }
        caller.send(&requests);
        let _provider = serving.join().expect("the provider answered every call");
        let before = i as u64;
        stats_until(&server, "the caller is closed at max-output-hard", |s| {
            s["connections"]["output_limit_closes"].as_u64() > Some(before)
        });
        let read = caller
            .read_to_end_or_reset()
            .expect("the daemon closes the caller");
        let all = (calls as usize) * answer.len();
        assert!(read < all, "{read} of {all} bytes: not everything was kept");
        stats_until(&server, "its output is freed", |s| {
            s["memory"]["output_bytes"].as_u64() < Some(hard as u64)
        });
    }
    common::assert_healthy(&server);
}

/// The other half of scenario 10: a provider that does not read the calls
/// forwarded to it stops getting more once its output is full; callers get
/// -32000 at once instead of piling calls up in its output.
#[test]
fn a_provider_that_does_not_read_gets_no_more_calls() {
    let server = start_with(|config| {
        config.max_output = 64 << 10;
        config.bus.call_timeout = Duration::from_millis(500);
    });
    for (i, (endpoint, protocol)) in kinds(&server).into_iter().enumerate() {
        let method = format!("deaf{i}.call");
        let mut provider = BusPeer::connect(&server.endpoints()[0], protocol);
        provider
            .call("bus.register", json!({ "names": [&method] }))
            .expect("register");
        // The provider now reads nothing. A caller sends 300 calls of 16 KiB.
        let mut caller = BusPeer::connect(&endpoint, Protocol::JsonRpc);
        let body = pad(16 << 10);
        let calls = 300u32;
        for id in 1..=calls {
            caller.send_request(id, &method, Some(json!({ "pad": body })));
        }
        let (mut busy, mut timed_out) = (0, 0);
        for _ in 0..calls {
            match caller.read() {
                Msg::Response {
                    result: Err((code, message, _)),
                    ..
                } => match code {
                    SERVER_BUSY => {
                        assert!(message.contains("not reading"), "{message}");
                        busy += 1;
                    }
                    -32023 => timed_out += 1,
                    other => panic!("unexpected error {other}: {message}"),
                },
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(busy > 0, "{timed_out} timed out, none refused");
        assert!(
            timed_out > 0,
            "calls went to the provider until its output was full"
        );
        let stats = server.stats();
        assert!(
            stats["memory"]["output_bytes"].as_u64() < Some(4 << 20),
            "{stats:#}"
        );
        drop(provider);
    }
    assert!(server.stats()["bus"]["provider_busy"].as_u64() > Some(0));
    common::assert_healthy(&server);
}
