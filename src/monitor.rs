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

use std::fmt::Write as _;

use serde_json::value::RawValue;

use crate::proto::Protocol;
use crate::router::Params;

/// The largest params or event data a line carries as they are.
pub const MAX_INLINE: usize = 1024;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A line being written: a JSON object built straight into its text (no
/// intermediate value: a monitor that keeps up costs the daemon little).
struct Line(String);

impl Line {
    fn new(kind: &str) -> Self {
        let mut text = String::with_capacity(192);
        let _ = write!(text, r#"{{"type":"{kind}","time":{:.6}"#, now());
        Line(text)
    }

    fn string(&mut self, key: &str, value: &str) {
        let _ = write!(self.0, r#","{key}":"#);
        // A string's JSON text; serializing a &str cannot fail.
        if let Ok(quoted) = serde_json::to_string(value) {
            self.0.push_str(&quoted);
        }
    }

    fn number(&mut self, key: &str, value: impl std::fmt::Display) {
        let _ = write!(self.0, r#","{key}":{value}"#);
    }

    /// Valid JSON text under `key` when small, else its size under `key_bytes`.
    fn json(&mut self, key: &str, raw: &str) {
        if raw.len() <= MAX_INLINE {
            let _ = write!(self.0, r#","{key}":{raw}"#);
        } else {
            self.number(&format!("{key}_bytes"), raw.len());
        }
    }

    fn finish(mut self) -> Box<RawValue> {
        self.0.push('}');
        RawValue::from_string(self.0).unwrap_or_else(|_| RawValue::NULL.to_owned())
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
    let mut line = Line::new("call");
    line.number("conn", conn);
    line.string("identity", identity);
    line.string("protocol", protocol.name());
    line.string("method", method);
    match id {
        Some(id) => line.json("id", id),
        None => line.number("notification", true),
    }
    match params {
        Params::None => {}
        Params::Json(raw) => line.json("params", raw.get()),
        Params::Raw(bytes) => line.number("params_raw_bytes", bytes.len()),
    }
    line.finish()
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
    let mut line = Line::new("reply");
    line.number("conn", conn);
    line.string("protocol", protocol.name());
    line.string("method", method);
    line.number("duration_us", duration_us);
    line.number("error", error);
    line.finish()
}

/// An event published on `topic`.
pub fn event_line(topic: &str, data: &RawValue) -> Box<RawValue> {
    let mut line = Line::new("event");
    line.string("topic", topic);
    line.json("data", data.get());
    line.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
