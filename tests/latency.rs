//! Per-method counters and latency histograms in `rpc.stats` (inline,
//! pooled, `bus.*` and routed calls, from both protocols on both
//! transports), and the slow log (`rpc.slowlog`): what it catches, who may
//! read and reset it. Over real sockets, on the backend under test.

mod common;

use std::time::Duration;

use common::bus_peer::{BusPeer, Msg, kinds};
use common::{TestServer, start_with};
use junction::Protocol;
use junction::bus::policy::{Policy, Rule};
use serde_json::{Value, json};

fn open_bus(adjust: impl FnOnce(&mut junction::Config)) -> TestServer {
    start_with(|config| {
        config.bus.policy = Policy::new(vec![Rule::parse("*=any,tcp").expect("rule")]);
        adjust(config);
    })
}

fn methods(server: &TestServer) -> Value {
    server.stats()["methods"].clone()
}

fn calls(methods: &Value, name: &str) -> u64 {
    methods[name]["calls"].as_u64().unwrap_or(0)
}

/// The shape the HTTP exporter relies on.
fn assert_shape(name: &str, entry: &Value) {
    let latency = &entry["latency"];
    let buckets = latency["buckets_us"].as_array().expect("buckets_us");
    let counts = latency["counts"].as_array().expect("counts");
    assert_eq!(
        counts.len(),
        buckets.len() + 1,
        "{name}: one +Inf count more"
    );
    assert_eq!(buckets[0], json!(1), "{name}");
    for pair in buckets.windows(2) {
        assert_eq!(pair[1].as_u64(), pair[0].as_u64().map(|b| b * 2), "{name}");
    }
    let total: u64 = counts.iter().map(|c| c.as_u64().expect("count")).sum();
    assert_eq!(
        Some(total),
        latency["count"].as_u64(),
        "{name}: per bucket, not cumulative"
    );
    assert_eq!(entry["calls"], latency["count"], "{name}");
    if total > 0 {
        assert!(latency["sum_us"].as_u64() > Some(0), "{name}: {latency}");
    }
}

#[test]
fn histograms_move_with_traffic_from_every_transport_and_protocol() {
    let server = open_bus(|_| {});
    let mut provider = BusPeer::connect(&server.endpoints()[0], Protocol::Mcp1);
    let registered = provider.call("bus.register", json!({"names": ["lat.*"]}));
    assert_eq!(registered, Ok(json!({"names": ["lat.*"]})));
    let before = methods(&server);
    assert_eq!(
        calls(&before, "lat.*"),
        0,
        "a provided name is listed from the start"
    );
    let kinds = kinds(&server);
    for (endpoint, protocol) in &kinds {
        let mut caller = BusPeer::connect(endpoint, *protocol);
        for _ in 0..3 {
            assert_eq!(caller.call("rpc.ping", json!([])), Ok(json!("pong")));
        }
        assert_eq!(
            caller.call("test.echo_pooled", json!([1, 2])),
            Ok(json!([1, 2]))
        );
        assert_eq!(
            caller.call("test.fail", json!([])).map_err(|e| e.0),
            Err(4711)
        );
        assert!(caller.call("bus.list", json!({})).is_ok());
        caller.send_request(5, "lat.add", Some(json!([2, 3])));
        let Msg::Request { id, .. } = provider.read() else {
            panic!("the provider got no call");
        };
        provider.respond(id, Ok(json!(5)));
        assert_eq!(caller.read_response(5), Ok(json!(5)));
    }
    let after = methods(&server);
    let n = kinds.len() as u64;
    let delta = |name: &str| calls(&after, name) - calls(&before, name);
    assert_eq!(delta("rpc.ping"), 3 * n);
    assert_eq!(delta("test.echo_pooled"), n);
    assert_eq!(delta("test.fail"), n);
    assert_eq!(delta("bus.list"), n);
    assert_eq!(delta("lat.*"), n, "a routed call counts under its name");
    assert_eq!(
        after["test.fail"]["errors"].as_u64(),
        Some(calls(&after, "test.fail")),
        "every test.fail is an error"
    );
    assert_eq!(after["rpc.ping"]["errors"], json!(0));
    for (name, entry) in after.as_object().expect("methods is an object") {
        assert_shape(name, entry);
    }

    // The name's counters go with it.
    drop(provider);
    let gone = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        methods(&server).get("lat.*").is_none()
    });
    assert!(gone, "the counters of a released name are freed");
}

#[test]
fn a_routed_call_that_fails_counts_as_an_error() {
    let server = open_bus(|config| config.bus.call_timeout = Duration::from_millis(100));
    let mut provider = BusPeer::connect(&server.endpoints()[1], Protocol::JsonRpc);
    assert!(
        provider
            .call("bus.register", json!({"names": ["mute.x"]}))
            .is_ok()
    );
    let mut caller = BusPeer::connect(&server.endpoints()[0], Protocol::JsonRpc);
    caller.send_request(1, "mute.x", Some(json!([])));
    assert!(matches!(provider.read(), Msg::Request { .. }));
    let error = caller.read_response(1).expect_err("timed out");
    assert_eq!(error.0, -32023);
    let m = methods(&server);
    assert_eq!(m["mute.x"]["calls"], json!(1));
    assert_eq!(m["mute.x"]["errors"], json!(1));
}

#[test]
fn the_slow_log_catches_slow_calls_of_every_kind() {
    let server = open_bus(|config| config.slowlog_threshold = Duration::from_millis(20));
    let mut admin = BusPeer::connect(&server.endpoints()[0], Protocol::JsonRpc);
    let log = admin.call("rpc.slowlog", json!({})).expect("slowlog");
    assert_eq!(log["threshold_us"], json!(20_000));
    assert_eq!(log["max_len"], json!(128));
    let mut provider = BusPeer::connect(&server.endpoints()[0], Protocol::JsonRpc);
    assert!(
        provider
            .call("bus.register", json!({"names": ["slow.svc"]}))
            .is_ok()
    );
    for (endpoint, protocol) in kinds(&server) {
        let mut caller = BusPeer::connect(&endpoint, protocol);
        assert_eq!(caller.call("test.sleep", json!([40])), Ok(json!(40)));
        caller.send_request(9, "slow.svc", Some(json!({})));
        let Msg::Request { id, .. } = provider.read() else {
            panic!("no call");
        };
        std::thread::sleep(Duration::from_millis(40));
        provider.respond(id, Ok(json!(true)));
        assert_eq!(caller.read_response(9), Ok(json!(true)));
    }
    let entries = admin.call("rpc.slowlog", json!({})).expect("slowlog")["entries"].clone();
    let entries = entries.as_array().expect("entries");
    let of = |method: &str| -> Vec<&Value> {
        entries.iter().filter(|e| e["method"] == method).collect()
    };
    assert_eq!(of("test.sleep").len(), 4, "{entries:?}");
    assert_eq!(of("slow.svc").len(), 4, "{entries:?}");
    for entry in of("test.sleep").into_iter().chain(of("slow.svc")) {
        assert!(entry["duration_us"].as_u64() >= Some(20_000), "{entry}");
        assert!(entry["time"].as_f64() > Some(1.0e9), "{entry}");
        assert!(entry["conn"].is_u64(), "{entry}");
    }
    for protocol in ["jsonrpc", "mcp1"] {
        let n = entries.iter().filter(|e| e["protocol"] == protocol).count();
        assert!(n >= 4, "{protocol}: {entries:?}");
    }
    let tcp = entries
        .iter()
        .filter(|e| e["identity"] == "anonymous")
        .count();
    assert!(tcp >= 4, "TCP callers show as anonymous: {entries:?}");
    assert!(
        entries
            .windows(2)
            .all(|w| w[0]["id"].as_u64() > w[1]["id"].as_u64()),
        "newest first"
    );
    let newest = admin
        .call("rpc.slowlog", json!({"count": 2}))
        .expect("count");
    assert_eq!(newest["entries"].as_array().map(Vec::len), Some(2));

    let held = admin.call("rpc.slowlog.reset", json!({})).expect("reset");
    assert_eq!(held.as_u64(), Some(entries.len() as u64));
    let empty = admin.call("rpc.slowlog", json!({})).expect("slowlog");
    assert_eq!(empty["entries"], json!([]));
}

#[test]
fn only_admins_may_read_or_reset_the_slow_log() {
    let server = start_with(|config| {
        config.slowlog_threshold = Duration::ZERO;
        // Anonymous TCP peers may call anything, but are not admins.
        config.access.policy = junction::policy::Policy::new(vec![
            junction::policy::Rule::from_flag("anonymous:call:*", false).expect("rule"),
        ]);
    });
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut peer = BusPeer::connect(&server.endpoints()[1], protocol);
        assert_eq!(peer.call("rpc.ping", json!([])), Ok(json!("pong")));
        for method in ["rpc.slowlog", "rpc.slowlog.reset"] {
            let error = peer.call(method, json!({})).expect_err("refused");
            assert_eq!(error.0, -32008, "{method}: {error:?}");
        }
    }
    // The owner (a Unix peer of the daemon's uid) may; threshold 0 logs every call.
    let mut owner = BusPeer::connect(&server.endpoints()[0], Protocol::Mcp1);
    let log = owner.call("rpc.slowlog", json!({})).expect("owner");
    let entries = log["entries"].as_array().expect("entries");
    assert!(
        entries
            .iter()
            .any(|e| e["method"] == "rpc.ping" && e["identity"] == "anonymous"),
        "{entries:?}"
    );
}

fn junction_cli(server: &TestServer, tcp: bool, args: &[&str]) -> (String, String, i32) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_junction"));
    command
        .env_remove("JUNCTION_UNIX")
        .env_remove("JUNCTION_PROTO");
    let unix = server.running.unix_path().expect("unix").to_path_buf();
    command.arg("--unix").arg(unix);
    if tcp {
        let addr = server.running.tcp_addr().expect("tcp").to_string();
        command.arg("--tcp").arg(addr);
    }
    let out = command.args(args).output().expect("run junction");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn junction_latency_prints_one_report_per_interval_for_both_protocols() {
    let server = start_with(|_| {});
    for (tcp, proto) in [
        (false, "jsonrpc"),
        (true, "mcp1"),
        (true, "jsonrpc"),
        (false, "mcp1"),
    ] {
        let args = [
            "--proto",
            proto,
            "latency",
            "--interval",
            "100ms",
            "--count",
            "2",
        ];
        let (out, err, code) = junction_cli(&server, tcp, &args);
        assert_eq!(code, 0, "{proto}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{proto}: {out}");
        for line in lines {
            for word in ["min ", "avg ", "p50 ", "p99 ", "max ", "samples)"] {
                assert!(line.contains(word), "{proto}: {line}");
            }
        }
        let args = [
            "--proto",
            proto,
            "latency",
            "--interval",
            "50ms",
            "--count",
            "1",
            "--json",
        ];
        let (out, err, code) = junction_cli(&server, tcp, &args);
        assert_eq!(code, 0, "{err}");
        let report: Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert!(report["samples"].as_u64() >= Some(1), "{report}");
        assert!(
            report["min_us"].as_u64() <= report["p50_us"].as_u64(),
            "{report}"
        );
        assert!(
            report["p50_us"].as_u64() <= report["p99_us"].as_u64(),
            "{report}"
        );
        assert!(
            report["p99_us"].as_u64() <= report["max_us"].as_u64(),
            "{report}"
        );
    }
    // The pings it sent are counted.
    assert!(calls(&methods(&server), "rpc.ping") >= 8);
}

#[test]
fn junction_slowlog_lists_and_resets() {
    let server = start_with(|config| config.slowlog_threshold = Duration::from_millis(5));
    let mut caller = BusPeer::connect(&server.endpoints()[1], Protocol::Mcp1);
    assert_eq!(caller.call("test.sleep", json!([20])), Ok(json!(20)));
    let (out, err, code) = junction_cli(&server, false, &["slowlog"]);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.contains("test.sleep")).expect(&out);
    assert!(row.contains("mcp1") && row.contains("anonymous"), "{row}");
    let (out, _, code) = junction_cli(&server, true, &["slowlog", "--json"]);
    assert_eq!(code, 0);
    let log: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(log["entries"][0]["method"], "test.sleep");
    let (out, _, code) = junction_cli(&server, false, &["slowlog", "--reset"]);
    assert_eq!(code, 0);
    assert!(out.contains("emptied (1 entries)"), "{out}");
    let (out, _, _) = junction_cli(&server, false, &["stats", "--methods"]);
    assert!(out.lines().any(|l| l.starts_with("test.sleep")), "{out}");
}

#[test]
fn a_reload_changes_the_slow_log_settings_while_clients_stay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("j.sock");
    let file = dir.path().join("junction.toml");
    let write = |extra: &str| {
        let text = format!(
            "unix = {:?}\ntcp = \"off\"\n{extra}",
            socket.display().to_string()
        );
        std::fs::write(&file, text).expect("config");
    };
    write("slowlog-threshold = \"1s\"\n");
    let mut command = common::junctiond();
    command
        .arg("--config")
        .arg(&file)
        .args(["--log-format", "human"])
        .env_remove("JUNCTION_UNIX")
        .env_remove("JUNCTION_TCP")
        .env_remove("JUNCTION_SLOWLOG_THRESHOLD")
        .env_remove("JUNCTION_SLOWLOG_MAX_LEN");
    let (mut child, log) = common::spawn_logged(&mut command);
    common::wait_for_line(&log, "listening on");
    let endpoint = junction::client::Endpoint::Unix(socket.clone());
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut peer = BusPeer::connect(&endpoint, protocol);
        write("slowlog-threshold = \"1s\"\n");
        assert!(peer.call("rpc.reload", json!({})).is_ok());
        let log = peer.call("rpc.slowlog", json!({})).expect("slowlog");
        assert_eq!(
            (log["threshold_us"].as_u64(), log["max_len"].as_u64()),
            (Some(1_000_000), Some(128))
        );
        write("slowlog-threshold = \"0s\"\nslowlog-max-len = 3\n");
        let report = peer.call("rpc.reload", json!({})).expect("reload");
        assert_eq!(report["restart_needed"], json!([]), "{report}");
        assert!(
            report["reloaded"]
                .as_array()
                .expect("list")
                .contains(&json!("slowlog-max-len"))
        );
        for _ in 0..5 {
            assert_eq!(peer.call("rpc.ping", json!([])), Ok(json!("pong")));
        }
        let log = peer
            .call("rpc.slowlog", json!({}))
            .expect("same connection");
        assert_eq!(
            (log["threshold_us"].as_u64(), log["max_len"].as_u64()),
            (Some(0), Some(3))
        );
        assert_eq!(log["entries"].as_array().map(Vec::len), Some(3), "{log}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
