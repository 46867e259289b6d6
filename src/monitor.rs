//! The lines `rpc.monitor` sends: one per call as the daemon reads it, one
//! per answer as it queues it (with the time taken), one per published
//! event. Each is a JSON object, the `data` of a `bus.event` notification
//! on the topic `rpc.monitor` (see `crate::bus::monitor` for the queueing,
//! and docs/operations.md for the fields).
//!
//! Lines are built only while a monitor is attached; params and event data
//! past [`MAX_INLINE`] bytes are replaced by their size, so a monitor does
//! not double the memory a large frame costs.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::proto::Protocol;
use crate::router::Params;

/// The largest params or event data a line carries as they are.
pub const MAX_INLINE: usize = 1024;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn finish(object: Map<String, Value>) -> Box<RawValue> {
    let text = Value::Object(object).to_string();
    RawValue::from_string(text).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Puts `raw` JSON under `key` when small, else its size under `key_bytes`.
fn put_json(object: &mut Map<String, Value>, key: &str, raw: &RawValue) {
    let text = raw.get();
    match serde_json::from_str::<Value>(text) {
        Ok(value) if text.len() <= MAX_INLINE => {
            object.insert(key.into(), value);
        }
        _ => {
            object.insert(format!("{key}_bytes"), Value::from(text.len()));
        }
    }
}

/// A request or notification as it arrives. `id` is the caller's id as
/// JSON text (None: a notification).
pub fn call_line(
    conn: usize,
    identity: &str,
    protocol: Protocol,
    method: &str,
    id: Option<&str>,
    params: Params<'_>,
) -> Box<RawValue> {
    let mut line = Map::new();
    line.insert("type".into(), "call".into());
    line.insert("time".into(), now().into());
    line.insert("conn".into(), conn.into());
    line.insert("identity".into(), identity.into());
    line.insert("protocol".into(), protocol.name().into());
    line.insert("method".into(), method.into());
    match id.and_then(|text| serde_json::from_str::<Value>(text).ok()) {
        Some(id) => line.insert("id".into(), id),
        None => line.insert("notification".into(), true.into()),
    };
    match params {
        Params::None => {}
        Params::Json(raw) => put_json(&mut line, "params", raw),
        Params::Raw(bytes) => {
            line.insert("params_raw_bytes".into(), bytes.len().into());
        }
    }
    finish(line)
}

/// An answer queued for its caller, `duration_us` after the call arrived.
/// `method` is the method, or for a routed call the name or pattern its
/// provider registered.
pub fn reply_line(
    conn: usize,
    protocol: Protocol,
    method: &str,
    duration_us: u64,
    error: bool,
) -> Box<RawValue> {
    let mut line = Map::new();
    line.insert("type".into(), "reply".into());
    line.insert("time".into(), now().into());
    line.insert("conn".into(), conn.into());
    line.insert("protocol".into(), protocol.name().into());
    line.insert("method".into(), method.into());
    line.insert("duration_us".into(), duration_us.into());
    line.insert("error".into(), error.into());
    finish(line)
}

/// An event published on `topic`.
pub fn event_line(topic: &str, data: &RawValue) -> Box<RawValue> {
    let mut line = Map::new();
    line.insert("type".into(), "event".into());
    line.insert("time".into(), now().into());
    line.insert("topic".into(), topic.into());
    put_json(&mut line, "data", data);
    finish(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_objects_and_large_params_become_sizes() {
        let params = RawValue::from_string("[1,2]".into()).expect("raw");
        let line = call_line(
            3,
            "uid:0",
            Protocol::Mcp1,
            "a.b",
            Some("7"),
            Params::Json(&params),
        );
        let v: Value = serde_json::from_str(line.get()).expect("json");
        assert_eq!(v["params"], serde_json::json!([1, 2]));
        assert_eq!(
            (v["id"].as_u64(), v["protocol"].as_str()),
            (Some(7), Some("mcp1"))
        );
        let big = RawValue::from_string(format!("[\"{}\"]", "x".repeat(2000))).expect("raw");
        let line = call_line(3, "uid:0", Protocol::JsonRpc, "a", None, Params::Json(&big));
        let v: Value = serde_json::from_str(line.get()).expect("json");
        assert_eq!(v["params_bytes"], 2004);
        assert_eq!(v["notification"], true);
        let v: Value = serde_json::from_str(reply_line(1, Protocol::JsonRpc, "m", 12, true).get())
            .expect("json");
        assert_eq!(
            (v["duration_us"].as_u64(), v["error"].as_bool()),
            (Some(12), Some(true))
        );
    }
}
