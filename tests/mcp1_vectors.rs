//! The test vectors of proto/vectors/mcp1.json, through the daemon's codec,
//! and the conversations of proto/vectors/conversations.json, with a live
//! daemon over Unix and TCP.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Raw, start_with};
use junction::bus::policy::{Policy, Rule};
use junction::client::Endpoint;
use junction::router::Params;
use junction_proto::mcp1::{self, HEADER_LEN, Kind, Next};
use serde_json::{Value, json};

const LIMIT: usize = 1_048_576;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            u8::from_str_radix(std::str::from_utf8(pair).expect("ascii"), 16).expect("hex digit")
        })
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Decodes the first frame of `bytes` the way the daemon does, in the
/// vectors' terms.
fn decode_first(bytes: &[u8]) -> Value {
    let first = &bytes[..bytes.len().min(HEADER_LEN)];
    match mcp1::check(first, bytes.len(), LIMIT) {
        Next::NeedMore => json!({"need_more": true}),
        Next::Error(error) => {
            json!({"error": error.to_rpc().code, "close": error.closes(), "id": error.id()})
        }
        Next::Frame(header) => {
            let payload = &bytes[HEADER_LEN..header.frame_len()];
            let mut frame =
                json!({"kind": header.kind.name(), "id": header.id, "flags": header.flags});
            if matches!(header.kind, Kind::Request | Kind::Notification) {
                match mcp1::parse_request(&header, payload) {
                    Ok(request) => {
                        frame["method"] = json!(request.method);
                        let method_end = 2 + request.method.len();
                        frame["body_hex"] = json!(to_hex(&payload[method_end..]));
                        if let Params::Json(raw) = request.params {
                            assert!(!raw.get().is_empty());
                        }
                    }
                    Err(error) => {
                        return json!({"error": error.code, "close": false, "id": header.id});
                    }
                }
            } else {
                frame["body_hex"] = json!(to_hex(payload));
            }
            json!({"frame": frame})
        }
    }
}

#[test]
fn every_vector_decodes_as_the_spec_says() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/vectors/mcp1.json");
    let text = std::fs::read_to_string(path).expect("vectors file");
    let vectors: Vec<Value> = serde_json::from_str(&text).expect("vectors JSON");
    assert!(vectors.len() >= 40, "the vector set is complete");
    let mut kinds_seen = std::collections::BTreeSet::new();
    for vector in &vectors {
        let name = vector["name"].as_str().expect("name");
        let bytes = hex(vector["hex"].as_str().expect("hex"));
        let got = decode_first(&bytes);
        assert_eq!(got, vector["expect"], "vector {name:?}");
        if let Some(kind) = got.pointer("/frame/kind").and_then(Value::as_str) {
            kinds_seen.insert(kind.to_string());
        }
        if let Some(code) = got.get("error") {
            kinds_seen.insert(format!("error {code}"));
        }
    }
    for needed in [
        "request",
        "notification",
        "ping",
        "error -32010",
        "error -32011",
        "error -32001",
        "error -32012",
        "error -32013",
        "error -32600",
        "error -32700",
    ] {
        assert!(kinds_seen.contains(needed), "no vector covers {needed}");
    }
}

/// Starts the daemon a conversation asks for (`daemon`: `max_frame`,
/// `frame_timeout_ms`, `bus_allow`; by default `bus_allow` is
/// `["*=any,tcp"]`, so that TCP peers may provide names too).
fn daemon_for(settings: &Value) -> common::TestServer {
    start_with(|config| {
        if let Some(max) = settings["max_frame"].as_u64() {
            config.max_frame = max as usize;
        }
        if let Some(ms) = settings["frame_timeout_ms"].as_u64() {
            config.frame_timeout = Duration::from_millis(ms);
        }
        let rules = match settings["bus_allow"].as_array() {
            Some(rules) => rules.iter().map(|r| r.as_str().expect("a rule")).collect(),
            None => vec!["*=any,tcp"],
        };
        let rules = rules.into_iter().map(|r| Rule::parse(r).expect("rule"));
        config.bus.policy = Policy::new(rules.collect());
    })
}

/// Runs one conversation over `endpoint`: each peer connects at its first
/// step; `send`/`send_hex` write bytes, `expect`/`expect_hex` read exactly
/// those bytes, `expect_close` reads the end of the connection.
fn converse(vector: &Value, endpoint: &Endpoint) {
    let name = vector["name"].as_str().expect("name");
    let mut peers: HashMap<&str, Raw> = HashMap::new();
    for (n, step) in vector["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .enumerate()
    {
        let who = step["peer"].as_str().expect("peer");
        assert!(
            vector["peers"].get(who).is_some(),
            "{name}: step {n}: peer {who} is not declared"
        );
        let raw = peers.entry(who).or_insert_with(|| Raw::connect(endpoint));
        let context = format!("{name} ({endpoint}), step {n}, {who}");
        if let Some(text) = step["send"].as_str() {
            raw.send(text.as_bytes());
        } else if let Some(bytes) = step["send_hex"].as_str() {
            raw.send(&hex(bytes));
        } else if let Some(text) = step["expect"].as_str() {
            let got = raw.exact(text.len());
            assert_eq!(String::from_utf8_lossy(&got), text, "{context}");
        } else if let Some(bytes) = step["expect_hex"].as_str() {
            let want = hex(bytes);
            let got = raw.exact(want.len());
            assert_eq!(to_hex(&got), to_hex(&want), "{context}");
        } else if step["expect_close"] == true {
            assert!(
                raw.is_closed(),
                "{context}: more bytes instead of the close"
            );
        } else {
            panic!("{context}: unknown step {step}");
        }
    }
}

#[test]
fn every_conversation_goes_as_the_spec_says() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto/vectors/conversations.json"
    );
    let text = std::fs::read_to_string(path).expect("conversations file");
    let vectors: Vec<Value> = serde_json::from_str(&text).expect("conversations JSON");
    assert!(vectors.len() >= 20, "the conversation set is complete");
    let mut failed = Vec::new();
    for vector in &vectors {
        let transports: Vec<&str> = match vector["transports"].as_array() {
            Some(list) => list.iter().filter_map(Value::as_str).collect(),
            None => vec!["unix", "tcp"],
        };
        // A fresh daemon for each run: the ids it assigns start at 1.
        for transport in transports {
            let server = daemon_for(&vector["daemon"]);
            let endpoint = server
                .endpoints()
                .into_iter()
                .find(|e| {
                    matches!(
                        (e, transport),
                        (Endpoint::Unix(_), "unix") | (Endpoint::Tcp(_), "tcp")
                    )
                })
                .expect("a transport the test server has");
            // Every conversation runs; the failures are listed at the end.
            let run = std::panic::catch_unwind(|| converse(vector, &endpoint));
            if run.is_err() {
                failed.push(format!("{} over {transport}", vector["name"]));
            }
        }
    }
    assert!(failed.is_empty(), "conversations that failed: {failed:#?}");
}
