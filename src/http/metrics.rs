//! `GET /metrics`: `rpc.stats` in the Prometheus text exposition format
//! (version 0.0.4). Rendered from the JSON `rpc.stats` answers, so that a
//! counter added there (a bus counter, a gate counter) shows up here too.

use std::fmt::Write;

use serde_json::Value;

/// Appends the `# HELP` and `# TYPE` lines of a family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Appends one sample.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"");
            escape(out, val);
            out.push('"');
        }
        out.push('}');
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { " +Inf\n" } else { " -Inf\n" });
    } else {
        let _ = writeln!(out, " {value}");
    }
}

/// A label value as the format quotes it.
fn escape(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `key` made a metric name part: anything but `[a-zA-Z0-9_]` becomes `_`.
fn metric_part(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn num(value: Option<&Value>) -> Option<f64> {
    // A flag (`draining`) is a 0/1 gauge.
    value.and_then(|v| v.as_f64().or_else(|| v.as_bool().map(f64::from)))
}

/// One family with one sample per label value: `(label value, JSON path)`.
fn labelled(
    out: &mut String,
    stats: &Value,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    rows: &[(&str, &str)],
) {
    let rows: Vec<(&str, f64)> = rows
        .iter()
        .filter_map(|(value, path)| Some((*value, num(stats.pointer(path))?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    family(out, name, kind, help);
    for (value, n) in rows {
        sample(out, name, &[(label, value)], n);
    }
}

/// One family per number in the object at `path`: `{prefix}_{key}_total`
/// counters, except the keys in `gauges`.
fn each_counter(out: &mut String, stats: &Value, path: &str, prefix: &str, gauges: &[&str]) {
    let Some(object) = stats.pointer(path).and_then(Value::as_object) else {
        return;
    };
    for (key, value) in object {
        let Some(n) = value.as_f64() else { continue };
        let part = metric_part(key);
        if gauges.contains(&key.as_str()) {
            let name = format!("{prefix}_{part}");
            family(out, &name, "gauge", &format!("rpc.stats {path}/{key}"));
            sample(out, &name, &[], n);
        } else {
            let name = format!("{prefix}_{part}_total");
            family(out, &name, "counter", &format!("rpc.stats {path}/{key}"));
            sample(out, &name, &[], n);
        }
    }
}

/// Renders an `rpc.stats` answer (its `result`).
pub fn render(stats: &Value, out: &mut String) {
    let backend = stats.get("backend").and_then(Value::as_str).unwrap_or("");
    family(
        out,
        "junction_info",
        "gauge",
        "The daemon's version and event-loop backend (always 1).",
    );
    sample(
        out,
        "junction_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("backend", backend)],
        1.0,
    );
    for (name, path, help) in [
        (
            "junction_uptime_seconds",
            "/uptime_secs",
            "Seconds since the daemon started.",
        ),
        ("junction_workers", "/workers", "Worker pool threads."),
        (
            "junction_draining",
            "/draining",
            "1 once a shutdown has begun (shutdown grace or drain): /healthz answers 503.",
        ),
        (
            "junction_output_buffered_bytes",
            "/output_buffered",
            "Output bytes waiting to be written, all connections together.",
        ),
    ] {
        if let Some(n) = num(stats.pointer(path)) {
            family(out, name, "gauge", help);
            sample(out, name, &[], n);
        }
    }
    for (name, path, help) in [
        (
            "junction_bytes_received_total",
            "/bytes_in",
            "Bytes read from clients.",
        ),
        (
            "junction_bytes_sent_total",
            "/bytes_out",
            "Bytes written to clients.",
        ),
        (
            "junction_queue_full_waits_total",
            "/queue_full_waits",
            "Pooled requests that waited for room in the worker queue.",
        ),
        (
            "junction_backpressure_pauses_total",
            "/backpressure_pauses",
            "Times a connection stopped being read because its output was full.",
        ),
        (
            "junction_accept_errors_total",
            "/connections/accept_errors",
            "Failed accept calls.",
        ),
    ] {
        if let Some(n) = num(stats.pointer(path)) {
            family(out, name, "counter", help);
            sample(out, name, &[], n);
        }
    }
    let transports = [
        ("unix", "/connections/unix/current"),
        ("tcp", "/connections/tcp/current"),
    ];
    labelled(
        out,
        stats,
        (
            "junction_connections",
            "gauge",
            "Connections open now, per transport.",
        ),
        "transport",
        &transports,
    );
    labelled(
        out,
        stats,
        (
            "junction_connections_accepted_total",
            "counter",
            "Connections accepted since start, per transport.",
        ),
        "transport",
        &[
            ("unix", "/connections/unix/total"),
            ("tcp", "/connections/tcp/total"),
        ],
    );
    labelled(
        out,
        stats,
        (
            "junction_connections_closed_total",
            "counter",
            "Connections refused or closed by a limit or a timeout, per reason.",
        ),
        "reason",
        &[
            ("max_connections", "/connections/refused_max_connections"),
            ("sniff_rejected", "/connections/sniff_rejected"),
            ("sniff_timeout", "/connections/sniff_timeouts"),
            ("fd_exhausted", "/connections/fd_exhausted"),
            ("frame_timeout", "/connections/frame_timeouts"),
            ("idle_timeout", "/connections/idle_timeouts"),
            ("write_timeout", "/connections/write_timeouts"),
            ("output_limit", "/connections/output_limit_closes"),
        ],
    );
    labelled(
        out,
        stats,
        (
            "junction_protocol_connections_total",
            "counter",
            "Connections that chose each protocol (websocket: HTTP connections upgraded).",
        ),
        "protocol",
        &[
            ("jsonrpc", "/protocols/jsonrpc/connections"),
            ("mcp1", "/protocols/mcp1/connections"),
            ("http", "/http/connections"),
            ("websocket", "/http/upgrades"),
        ],
    );
    labelled(
        out,
        stats,
        (
            "junction_frames_total",
            "counter",
            "Frames decoded per protocol (JSON-RPC carried by HTTP and WebSocket counts as jsonrpc too).",
        ),
        "protocol",
        &[
            ("jsonrpc", "/protocols/jsonrpc/frames"),
            ("mcp1", "/protocols/mcp1/frames"),
            ("http", "/http/requests"),
            ("websocket", "/http/ws_messages_in"),
        ],
    );
    labelled(
        out,
        stats,
        (
            "junction_errors_total",
            "counter",
            "Error responses and protocol errors per protocol (http: 4xx and 5xx responses).",
        ),
        "protocol",
        &[
            ("jsonrpc", "/protocols/jsonrpc/errors"),
            ("mcp1", "/protocols/mcp1/errors"),
            ("http", "/http/errors"),
        ],
    );
    labelled(
        out,
        stats,
        (
            "junction_memory_bytes",
            "gauge",
            "Buffer memory held by connections, per kind.",
        ),
        "kind",
        &[
            ("ring", "/memory/ring_bytes"),
            ("output", "/memory/output_bytes"),
            ("shared", "/memory/shared_bytes"),
            ("total", "/memory/total_bytes"),
            ("ring_pool", "/memory/ring_pool_bytes"),
            ("ring_resident", "/memory/ring_resident_bytes"),
        ],
    );
    for (name, kind, path, help) in [
        (
            "junction_memory_limit_bytes",
            "gauge",
            "/memory/limit_bytes",
            "The buffer-memory limit (max-buffer-memory).",
        ),
        (
            "junction_memory_waits_total",
            "counter",
            "/memory/waits",
            "Times a connection waited for buffer memory.",
        ),
    ] {
        if let Some(n) = num(stats.pointer(path)) {
            family(out, name, kind, help);
            sample(out, name, &[], n);
        }
    }
    each_counter(out, stats, "/access", "junction_access", &[]);
    each_counter(out, stats, "/gate", "junction_gate", &["unauthenticated"]);
    each_counter(out, stats, "/bus", "junction_bus", &[]);
    each_counter(out, stats, "/http", "junction_http", &[]);
    if let Some(methods) = stats.get("methods").and_then(Value::as_object) {
        render_methods(out, methods);
    }
}

/// Per-method calls, errors and latency histograms, from `rpc.stats`'s
/// `methods`: `{"NAME": {"calls", "errors", "latency": {"buckets_us",
/// "counts" (per bucket, the last one +Inf), "sum_us", "count"}}}`.
fn render_methods(out: &mut String, methods: &serde_json::Map<String, Value>) {
    for (name, field, help) in [
        ("junction_method_calls_total", "calls", "Calls per method."),
        (
            "junction_method_errors_total",
            "errors",
            "Error answers per method.",
        ),
    ] {
        family(out, name, "counter", help);
        for (method, entry) in methods {
            if let Some(n) = num(entry.get(field)) {
                sample(out, name, &[("method", method)], n);
            }
        }
    }
    let name = "junction_method_duration_seconds";
    family(out, name, "histogram", "Time to answer, per method.");
    let bucket = format!("{name}_bucket");
    for (method, entry) in methods {
        let Some(latency) = entry.get("latency") else {
            continue;
        };
        let bounds: Vec<f64> = latency
            .get("buckets_us")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let counts: Vec<f64> = latency
            .get("counts")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let mut cumulative = 0.0;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += counts.get(i).copied().unwrap_or(0.0);
            let le = format!("{}", bound / 1e6);
            sample(out, &bucket, &[("method", method), ("le", &le)], cumulative);
        }
        cumulative += counts.get(bounds.len()).copied().unwrap_or(0.0);
        let count = num(latency.get("count")).unwrap_or(cumulative);
        sample(out, &bucket, &[("method", method), ("le", "+Inf")], count);
        let sum = num(latency.get("sum_us")).unwrap_or(0.0) / 1e6;
        sample(out, &format!("{name}_sum"), &[("method", method)], sum);
        sample(out, &format!("{name}_count"), &[("method", method)], count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_method_histograms_are_cumulative_in_seconds() {
        let stats = serde_json::json!({
            "backend": "epoll",
            "methods": {
                "rpc.ping": {"calls": 12, "errors": 1, "latency": {
                    "buckets_us": [1, 2, 4], "counts": [3, 0, 7, 2], "sum_us": 1234, "count": 12}},
                "odd\"name": {"calls": 0, "errors": 0, "latency": {
                    "buckets_us": [1000], "counts": [0, 0], "sum_us": 0, "count": 0}}
            }
        });
        let mut out = String::new();
        render(&stats, &mut out);
        for line in [
            "junction_info{version=\"0.1.0\",backend=\"epoll\"} 1",
            "# TYPE junction_method_duration_seconds histogram",
            "junction_method_duration_seconds_bucket{method=\"rpc.ping\",le=\"0.000001\"} 3",
            "junction_method_duration_seconds_bucket{method=\"rpc.ping\",le=\"0.000002\"} 3",
            "junction_method_duration_seconds_bucket{method=\"rpc.ping\",le=\"0.000004\"} 10",
            "junction_method_duration_seconds_bucket{method=\"rpc.ping\",le=\"+Inf\"} 12",
            "junction_method_duration_seconds_sum{method=\"rpc.ping\"} 0.001234",
            "junction_method_duration_seconds_count{method=\"rpc.ping\"} 12",
            "junction_method_calls_total{method=\"rpc.ping\"} 12",
            "junction_method_errors_total{method=\"rpc.ping\"} 1",
            "junction_method_duration_seconds_bucket{method=\"odd\\\"name\",le=\"0.001\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }

    #[test]
    fn a_snapshot_without_methods_renders_its_counters() {
        let stats = serde_json::json!({
            "uptime_secs": 1.5, "bytes_in": 10,
            "connections": {"unix": {"current": 1, "total": 3}, "tcp": {"current": 0, "total": 0}},
            "bus": {"routed_calls": 4}, "gate": {"unauthenticated": 2, "hang_ups": 1}
        });
        let mut out = String::new();
        render(&stats, &mut out);
        for line in [
            "junction_uptime_seconds 1.5",
            "junction_bytes_received_total 10",
            "junction_connections{transport=\"unix\"} 1",
            "junction_connections_accepted_total{transport=\"unix\"} 3",
            "junction_bus_routed_calls_total 4",
            "# TYPE junction_gate_unauthenticated gauge",
            "junction_gate_hang_ups_total 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
        assert!(!out.contains("junction_method"));
    }
}
