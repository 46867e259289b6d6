//! The test vectors of proto/vectors/mcp1.json, through the daemon's codec.

use junction::proto::mcp1::{self, HEADER_LEN, Kind, Next};
use junction::router::Params;
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
