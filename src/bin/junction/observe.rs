//! `junction slowlog`: the daemon's slow log (`rpc.slowlog`), or emptying
//! it (`rpc.slowlog.reset`). Both are admin-only.

use std::time::{Duration, UNIX_EPOCH};

use junction::client::Client;
use serde_json::{Value, json};

use crate::Failure;

/// Prints the slow log (newest first), as a table or JSON; or resets it.
pub fn slowlog(
    client: &mut Client,
    count: Option<usize>,
    reset: bool,
    as_json: bool,
) -> Result<(), Failure> {
    if reset {
        let held = client
            .call("rpc.slowlog.reset", None)
            .map_err(crate::failure)?;
        println!("slow log emptied ({} entries)", held.as_u64().unwrap_or(0));
        return Ok(());
    }
    let params = count.map(|n| json!({ "count": n }));
    let log = client.call("rpc.slowlog", params).map_err(crate::failure)?;
    if as_json {
        println!("{}", crate::pretty(&log));
        return Ok(());
    }
    let threshold = log["threshold_us"].as_u64().unwrap_or(0);
    let entries = log["entries"].as_array().cloned().unwrap_or_default();
    println!(
        "{} calls of {} us or more (keeping at most {})",
        entries.len(),
        threshold,
        log["max_len"]
    );
    if entries.is_empty() {
        return Ok(());
    }
    println!(
        "{:>6} {:<20} {:>12} {:<7} {:>5} {:<16} method",
        "id", "time (UTC)", "duration", "proto", "conn", "identity"
    );
    for entry in &entries {
        let text = |k: &str| entry[k].as_str().unwrap_or("?").to_string();
        let time = entry["time"]
            .as_f64()
            .map(|t| {
                let at = UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0));
                humantime::format_rfc3339_seconds(at).to_string()
            })
            .unwrap_or_default();
        println!(
            "{:>6} {:<20} {:>12} {:<7} {:>5} {:<16} {}",
            entry["id"].as_u64().unwrap_or(0),
            time.trim_end_matches('Z').replace('T', " "),
            format!(
                "{:.3}ms",
                entry["duration_us"].as_u64().unwrap_or(0) as f64 / 1000.0
            ),
            text("protocol"),
            entry["conn"].as_u64().unwrap_or(0),
            text("identity"),
            text("method"),
        );
    }
    Ok(())
}

/// The `methods` section of `rpc.stats` as a table: calls, errors, mean
/// and the bucket bounds the median and the 99th percentile fall under.
pub fn print_methods(stats: &Value) {
    let Some(methods) = stats["methods"].as_object() else {
        return;
    };
    println!(
        "{:<28} {:>10} {:>8} {:>10} {:>10} {:>10}",
        "method", "calls", "errors", "mean", "p50 <=", "p99 <="
    );
    for (name, entry) in methods {
        let calls = entry["calls"].as_u64().unwrap_or(0);
        if calls == 0 {
            continue;
        }
        let latency = &entry["latency"];
        let mean = latency["sum_us"].as_u64().unwrap_or(0) / calls.max(1);
        let bound = |q: f64| quantile_bound(latency, q);
        println!(
            "{:<28} {:>10} {:>8} {:>8}us {:>10} {:>10}",
            name,
            calls,
            entry["errors"].as_u64().unwrap_or(0),
            mean,
            bound(0.5),
            bound(0.99)
        );
    }
}

/// The upper bound of the bucket holding quantile `q`, as text.
fn quantile_bound(latency: &Value, q: f64) -> String {
    let buckets: Vec<u64> = latency["buckets_us"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let counts: Vec<u64> = latency["counts"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let total: u64 = counts.iter().sum();
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return buckets.get(i).map_or("+Inf".into(), |b| format!("{b}us"));
        }
    }
    "-".into()
}
