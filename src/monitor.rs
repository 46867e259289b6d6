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

use crate::proto::Protocol;
use crate::router::Params;

/// The largest params or event data a line carries as they are.
pub const MAX_INLINE: usize = 1024;

/// Seconds and microseconds since the epoch (integers: formatting a float
/// with six decimals cost more than the rest of the line's head).
fn now() -> (u64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_micros()))
}

/// Serializes as a JSON string the text a `Display` value writes, escaped
/// on the way, without a `String` of its own.
struct Shown<T>(T);

impl<T: std::fmt::Display> serde::Serialize for Shown<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// A line being written: a JSON object built straight into its bytes (no
/// intermediate value or string: a monitor that keeps up costs the daemon
/// little).
struct Line(Vec<u8>);

impl Line {
    fn new(kind: &str) -> Self {
        let mut line = Line(Vec::with_capacity(192));
        let (secs, micros) = now();
        line.0.extend_from_slice(br#"{"type":""#);
        line.0.extend_from_slice(kind.as_bytes());
        line.0.extend_from_slice(br#"","time":"#);
        push_decimal(&mut line.0, secs);
        line.0.push(b'.');
        // Six digits: the microseconds with their leading zeros.
        let fraction = u64::from(micros) + 1_000_000;
        let start = line.0.len();
        push_decimal(&mut line.0, fraction);
        line.0.remove(start);
        line
    }

    /// `,"key":` (keys are the fixed names below: nothing to escape).
    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn string(&mut self, key: &str, value: impl std::fmt::Display) {
        self.key(key);
        // Escaped as it is written; into a Vec this cannot fail.
        let _ = serde_json::to_writer(&mut self.0, &Shown(value));
    }

    fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        push_decimal(&mut self.0, value);
    }

    fn flag(&mut self, key: &str, value: bool) {
        self.key(key);
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.0.extend_from_slice(text);
    }

    /// Valid JSON text under `key` when small, else its size under `key_bytes`.
    fn json(&mut self, key: &str, raw: &str) {
        if raw.len() <= MAX_INLINE {
            self.key(key);
            self.0.extend_from_slice(raw.as_bytes());
        } else {
            self.key(key);
            self.0.truncate(self.0.len() - 2);
            self.0.extend_from_slice(b"_bytes\":");
            push_decimal(&mut self.0, raw.len() as u64);
        }
    }

    fn finish(mut self) -> Box<RawValue> {
        self.0.push(b'}');
        String::from_utf8(self.0)
            .ok()
            .and_then(|text| RawValue::from_string(text).ok())
            .unwrap_or_else(|| RawValue::NULL.to_owned())
    }
}

/// Appends `n` in decimal, without the formatting machinery (a line is
/// made per call and per answer while a monitor listens).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A request or notification as it arrives. `id` is the caller's id as
/// JSON text (None: a notification).
pub fn call_line(
    conn: usize,
    identity: impl std::fmt::Display,
    protocol: Protocol,
    method: &str,
    id: Option<&str>,
    params: Params<'_>,
) -> Box<RawValue> {
    let mut line = Line::new("call");
    line.number("conn", conn as u64);
    line.string("identity", identity);
    line.string("protocol", protocol.name());
    line.string("method", method);
    match id {
        Some(id) => line.json("id", id),
        None => line.flag("notification", true),
    }
    match params {
        Params::None => {}
        Params::Json(raw) => line.json("params", raw.get()),
        Params::Raw(bytes) => line.number("params_raw_bytes", bytes.len() as u64),
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
    line.number("conn", conn as u64);
    line.string("protocol", protocol.name());
    line.string("method", method);
    line.number("duration_us", duration_us);
    line.flag("error", error);
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

    #[test]
    fn strings_are_escaped_and_the_time_has_microseconds() {
        let line = call_line(1, "user:a\"b\\c", Protocol::Mcp1, "m", None, Params::None);
        let text = line.get();
        let v: Value = serde_json::from_str(text).expect("json");
        assert_eq!(v["identity"], "user:a\"b\\c");
        let time = text.split(r#""time":"#).nth(1).expect("time");
        let time = time.split(',').next().expect("number");
        let (secs, micros) = time.split_once('.').expect("a fraction");
        assert!(secs.parse::<u64>().expect("seconds") > 1_600_000_000);
        assert_eq!(micros.len(), 6, "{time}");
    }
}
