//! `junction monitor [PATTERN...]`: a live tap of the calls, answers and
//! events through the daemon (`rpc.monitor`, admins only), one line each.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use junction::client::{Client, ClientError, Incoming};
use serde_json::{Value, json};

use crate::Failure;

/// The topic the daemon sends monitor lines on.
const TOPIC: &str = "rpc.monitor";

/// Watches until `count` lines were printed, the daemon goes, or stdout closes.
pub fn run(
    client: &mut Client,
    patterns: &[String],
    count: Option<u64>,
    as_json: bool,
) -> Result<(), Failure> {
    let params = (!patterns.is_empty()).then(|| json!({ "patterns": patterns }));
    let answer = client.call("rpc.monitor", params).map_err(crate::failure)?;
    client.set_timeout(None).map_err(crate::failure)?;
    let watching = answer["monitoring"]
        .as_array()
        .filter(|a| !a.is_empty())
        .map_or("everything".to_string(), |a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        });
    eprintln!("junction: monitoring {watching}");
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        let event = match client.next_message() {
            Ok(Incoming::Event(event)) if event.topic == TOPIC => event,
            Ok(Incoming::Response(response)) => {
                if let Err(e) = response.result {
                    return Err(Failure::Rpc(format!("error {}: {}", e.code, e.message)));
                }
                continue;
            }
            Ok(_) => continue,
            Err(e @ ClientError::Usage(_)) => return Err(crate::failure(e)),
            Err(e) => return Err(Failure::Connection(format!("daemon gone: {e}"))),
        };
        let line = if as_json {
            let mut data = event.data;
            if let (Some(dropped), Some(object)) = (event.dropped, data.as_object_mut()) {
                object.insert("dropped".into(), dropped.into());
            }
            data.to_string()
        } else {
            let lost = event
                .dropped
                .map(|n| format!("-- {n} lines lost: this monitor read too slowly --\n"))
                .unwrap_or_default();
            format!("{lost}{}", human(&event.data))
        };
        if !print(&line)? {
            return Ok(());
        }
        printed += 1;
    }
    Ok(())
}

/// Writes a line; false when the reader went away (`| head`).
fn print(line: &str) -> Result<bool, Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::Connection(format!("cannot write to stdout: {e}"))),
    }
}

/// One monitor line for a person.
fn human(line: &Value) -> String {
    let text = |k: &str| line[k].as_str().unwrap_or("?");
    let time = line["time"]
        .as_f64()
        .map(|t| {
            let at = UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0));
            let stamp = humantime::format_rfc3339_millis(at).to_string();
            stamp.split_once('T').map_or(stamp.clone(), |(_, clock)| {
                clock.trim_end_matches('Z').to_string()
            })
        })
        .unwrap_or_default();
    let sized = |key: &str| {
        if let Some(value) = line.get(key) {
            format!(" {key}={value}")
        } else if let Some(n) = line.get(format!("{key}_bytes").as_str()) {
            format!(" {key}=<{n} bytes>")
        } else if let Some(n) = line.get(format!("{key}_raw_bytes").as_str()) {
            format!(" {key}=<{n} raw bytes>")
        } else {
            String::new()
        }
    };
    match text("type") {
        "call" => {
            let id = match line.get("id") {
                Some(id) => format!(" id={id}"),
                None => " (notification)".into(),
            };
            format!(
                "{time} conn {} {} {} -> {}{id}{}",
                line["conn"],
                text("identity"),
                text("protocol"),
                text("method"),
                sized("params")
            )
        }
        "reply" => format!(
            "{time} conn {} {} <- {} {}us {}",
            line["conn"],
            text("protocol"),
            text("method"),
            line["duration_us"],
            if line["error"] == true { "error" } else { "ok" }
        ),
        "event" => format!("{time} event {}{}", text("topic"), sized("data")),
        _ => line.to_string(),
    }
}
