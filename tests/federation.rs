//! Federation over NATS with real processes on loopback: a 3-node
//! nats-server cluster (routes between them) and 3 junctiond, each
//! connected to its own node first (docs/federation.md). Every wait is
//! bounded by PATIENCE; every child is killed when its guard drops.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::PATIENCE;
use common::bus_peer::{BusPeer, Msg};
use junction::Protocol;
use junction::client::Endpoint;
use serde_json::{Value, json};

/// A child process killed when dropped.
struct Proc {
    child: Child,
    log: Receiver<String>,
}

impl Proc {
    fn spawn(command: &mut Command) -> Proc {
        let (child, log) = common::spawn_logged(command);
        Proc { child, log }
    }

    fn wait_for(&self, needle: &str) -> String {
        common::wait_for_line(&self.log, needle)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free now (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A NATS cluster of `n` nodes on loopback.
struct Nats {
    nodes: Vec<Proc>,
    ports: Vec<u16>,
}

impl Nats {
    fn start(n: usize) -> Option<Nats> {
        let server = common::external_command("nats-server")?;
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_urls: Vec<String> = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut command = Command::new(&server);
            command.args([
                "-a",
                "127.0.0.1",
                "-p",
                &ports[i].to_string(),
                "-n",
                &format!("node{i}"),
            ]);
            if n > 1 {
                command.args([
                    "--cluster_name",
                    "jtest",
                    "--cluster",
                    &route_urls[i],
                    "--routes",
                    &route_urls.join(","),
                ]);
            }
            let node = Proc::spawn(&mut command);
            node.wait_for("Server is ready");
            nodes.push(node);
        }
        Some(Nats { nodes, ports })
    }

    /// The URLs with node `first` first (each daemon prefers its own node).
    fn urls(&self, first: usize) -> String {
        let mut order: Vec<usize> = (0..self.ports.len()).collect();
        order.rotate_left(first);
        order
            .iter()
            .map(|i| format!("nats://127.0.0.1:{}", self.ports[*i]))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One junctiond joined to the cluster.
struct Daemon {
    proc: Proc,
    dir: tempfile::TempDir,
    tcp: String,
}

impl Daemon {
    fn start(urls: &str, flags: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = common::junctiond();
        command
            .arg("--unix")
            .arg(dir.path().join("junction.sock"))
            .args(["--tcp", "127.0.0.1:0", "--tcp-anonymous", "true"])
            .args(["--log-format", "human", "--log", "info"])
            .args(["--nats", urls, "--nats-cluster", "jtest"])
            .args([
                "--allow",
                "anonymous:call:*;anonymous:publish:*;anonymous:subscribe:*",
            ])
            .args(flags)
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("JUNCTION_UNIX")
            .env_remove("JUNCTION_TCP")
            .env_remove("JUNCTION_ALLOW")
            .env_remove("JUNCTION_NATS")
            .env_remove("JUNCTION_LOG");
        let proc = Proc::spawn(&mut command);
        let line = proc.wait_for("listening on tcp ");
        let tcp = common::tcp_address(&line);
        proc.wait_for("nats: connected");
        Daemon { proc, dir, tcp }
    }

    fn unix(&self) -> Endpoint {
        Endpoint::Unix(self.dir.path().join("junction.sock"))
    }

    fn tcp(&self) -> Endpoint {
        Endpoint::Tcp(self.tcp.parse().expect("tcp address"))
    }

    fn peer(&self, protocol: Protocol) -> BusPeer {
        BusPeer::connect(&self.unix(), protocol)
    }
}

/// What the cluster's identity may do on every daemon of most tests.
const TRUST_CLUSTER: &str = "token:cluster:call:*;token:cluster:publish:*";

/// Three NATS nodes and three daemons, daemon i on node i first.
fn three(flags: &[&str]) -> Option<(Nats, Vec<Daemon>)> {
    let nats = Nats::start(3)?;
    let daemons = (0..3)
        .map(|i| {
            let mut all = vec!["--allow", TRUST_CLUSTER];
            all.extend_from_slice(flags);
            Daemon::start(&nats.urls(i), &all)
        })
        .collect();
    Some((nats, daemons))
}

/// Calls `method` from `caller` until the cluster knows a provider of it
/// (interest spreads over the routes), then returns that first answer.
fn call_when_known(
    caller: &mut BusPeer,
    method: &str,
    params: Value,
) -> Result<Value, (i32, String, Option<Value>)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match caller.call(method, params.clone()) {
            Err(e) if e.0 == junction::federation::NO_HOST && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// A provider answering every request on a thread until its connection
/// closes: `{"by": tag, "method": M, "params": P}`, or error 4711 (with
/// data) for a method ending in `.fail`. Returns how many it answered.
fn serve(mut provider: BusPeer, tag: &'static str) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut count = 0;
        loop {
            let message =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| provider.read()));
            match message {
                Ok(Msg::Request { id, method, .. }) if method.ends_with(".fail") => {
                    provider.respond(id, Err((4711, "no such file", Some(json!({"path": "/x"})))));
                    count += 1;
                }
                Ok(Msg::Request { id, method, params }) => {
                    provider.respond(
                        id,
                        Ok(json!({"by": tag, "method": method, "params": params})),
                    );
                    count += 1;
                }
                Ok(_) => {}
                Err(_) => return count,
            }
        }
    })
}

#[test]
fn a_provider_on_one_daemon_answers_json_rpc_over_tcp_and_mcp1_over_unix_on_another() {
    let Some((_nats, daemons)) = three(&[]) else {
        return;
    };
    let mut provider = daemons[0].peer(Protocol::JsonRpc);
    provider
        .call("bus.register", json!({"names": ["tools.*"]}))
        .expect("register");
    let served = serve(provider, "a");

    // JSON-RPC over TCP on C.
    let mut tcp_caller = BusPeer::connect(&daemons[2].tcp(), Protocol::JsonRpc);
    let answer = call_when_known(&mut tcp_caller, "tools.add", json!({"a": 2, "b": 3}));
    assert_eq!(
        answer,
        Ok(json!({"by": "a", "method": "tools.add", "params": {"a": 2, "b": 3}}))
    );

    // MCP1 over Unix on C: results and errors cross unchanged.
    let mut mcp1_caller = daemons[2].peer(Protocol::Mcp1);
    mcp1_caller.send_request(7, "tools.fail", Some(json!([1])));
    let error = mcp1_caller.read_response(7).expect_err("an error");
    assert_eq!(
        error,
        (4711, "no such file".into(), Some(json!({"path": "/x"})))
    );
    mcp1_caller.send_request(8, "tools.echo", None);
    assert_eq!(
        mcp1_caller.read_response(8),
        Ok(json!({"by": "a", "method": "tools.echo", "params": null}))
    );

    // A name no daemon provides: -32040.
    let error = mcp1_caller
        .call("nobody.here", json!({}))
        .expect_err("no host");
    assert_eq!(error.0, junction::federation::NO_HOST, "{error:?}");
    assert!(error.1.contains("nobody.here"), "{error:?}");

    // Counters, in rpc.stats' "federation" object.
    let stats = mcp1_caller.call("rpc.stats", json!({})).expect("stats");
    let federation = &stats["federation"];
    assert_eq!(federation["connected"], 1, "{federation}");
    assert!(federation["calls_out"].as_u64() >= Some(3), "{federation}");
    assert!(federation["no_host"].as_u64() >= Some(1), "{federation}");
    let mut probe = daemons[0].peer(Protocol::JsonRpc);
    let stats_a = probe.call("rpc.stats", json!({})).expect("stats");
    assert!(
        stats_a["federation"]["calls_in"].as_u64() >= Some(3),
        "{stats_a}"
    );
    drop(daemons);
    let _ = served.join();
}

#[test]
fn two_providers_on_two_daemons_share_the_load() {
    let Some((_nats, daemons)) = three(&[]) else {
        return;
    };
    let mut a = daemons[0].peer(Protocol::JsonRpc);
    a.call("bus.register", json!({"names": ["work.run"]}))
        .expect("a");
    let mut b = daemons[1].peer(Protocol::Mcp1);
    b.call("bus.register", json!({"names": ["work.run"]}))
        .expect("b");
    let served_a = serve(a, "a");
    let served_b = serve(b, "b");
    let mut caller = daemons[2].peer(Protocol::JsonRpc);
    call_when_known(&mut caller, "work.run", json!({"n": 0})).expect("first call");
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for n in 1..=60 {
        let answer = caller.call("work.run", json!({"n": n})).expect("call");
        assert_eq!(answer["params"], json!({"n": n}));
        *by.entry(answer["by"].as_str().expect("by").to_string())
            .or_default() += 1;
    }
    assert!(by.get("a").is_some_and(|n| *n > 0), "{by:?}");
    assert!(by.get("b").is_some_and(|n| *n > 0), "{by:?}");
    drop(daemons);
    let _ = (served_a.join(), served_b.join());
}

#[test]
fn calls_continue_when_a_nats_node_dies() {
    let Some((mut nats, daemons)) = three(&["--bus-call-timeout", "5s"]) else {
        return;
    };
    let mut a = daemons[0].peer(Protocol::JsonRpc);
    a.call("bus.register", json!({"names": ["svc.op"]}))
        .expect("a");
    let mut b = daemons[1].peer(Protocol::JsonRpc);
    b.call("bus.register", json!({"names": ["svc.op"]}))
        .expect("b");
    let served = [serve(a, "a"), serve(b, "b")];
    let mut caller = daemons[2].peer(Protocol::Mcp1);
    call_when_known(&mut caller, "svc.op", json!({})).expect("first call");
    for n in 0..20 {
        caller
            .call("svc.op", json!({"n": n}))
            .expect("before the kill");
    }
    // Node 0, daemon A's, dies mid-traffic.
    nats.nodes[0].kill();
    let mut ok_after = 0;
    let mut failed = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while ok_after < 100 && Instant::now() < deadline {
        match caller.call("svc.op", json!({})) {
            Ok(_) => ok_after += 1,
            Err(e) => failed.push(e),
        }
    }
    assert_eq!(
        ok_after, 100,
        "calls go on through the other nodes; failures: {failed:?}"
    );
    // A call that failed while A moved to another node failed with a
    // specified error, never a hang.
    let specified = [
        -32022,
        -32023,
        junction::federation::NO_HOST,
        junction::federation::UNREACHABLE,
    ];
    assert!(
        failed.iter().all(|e| specified.contains(&e.0)),
        "{failed:?}"
    );
    // Daemon A reconnects to another node and serves again.
    daemons[0].proc.wait_for("nats: connected");
    drop(daemons);
    for s in served {
        let _ = s.join();
    }
}

#[test]
fn killing_the_serving_daemon_fails_its_pending_call_promptly() {
    let Some((_nats, mut daemons)) = three(&["--bus-call-timeout", "120s"]) else {
        return;
    };
    // A provider that never answers, then one that does (registered after
    // it on the same daemon, so once the second is known, so is the first).
    let mut stuck = daemons[0].peer(Protocol::Mcp1);
    stuck
        .call("bus.register", json!({"names": ["stuck.op"]}))
        .expect("register");
    let mut ready = daemons[0].peer(Protocol::JsonRpc);
    ready
        .call("bus.register", json!({"names": ["ready.op"]}))
        .expect("register");
    let served = serve(ready, "a");
    let mut caller = daemons[1].peer(Protocol::Mcp1);
    call_when_known(&mut caller, "ready.op", json!({})).expect("first call");
    caller.send_request(5, "stuck.op", None);
    assert!(
        matches!(stuck.read(), Msg::Request { .. }),
        "the call reached A's provider"
    );
    let killed_at = Instant::now();
    daemons[0].proc.kill();
    let error = caller.read_response(5).expect_err("the call fails");
    assert_eq!(error.0, -32022, "{error:?}");
    assert!(error.1.contains("left the cluster"), "{error:?}");
    // Long before the 120 s call timeout (the read itself is bounded by PATIENCE).
    assert!(killed_at.elapsed() < PATIENCE);
    let stats = caller.call("rpc.stats", json!({})).expect("stats");
    assert_eq!(stats["federation"]["provider_gone"], 1, "{stats}");
    daemons.remove(0);
    let _ = served.join();
}

#[test]
fn events_reach_every_daemon_once_without_loops() {
    let Some((_nats, daemons)) = three(&["--allow", "token:cluster:subscribe:*"]) else {
        return;
    };
    let mut subscribers: Vec<BusPeer> = daemons
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let protocol = if i % 2 == 0 {
                Protocol::JsonRpc
            } else {
                Protocol::Mcp1
            };
            let mut s = d.peer(protocol);
            s.call("bus.subscribe", json!({"topics": ["news.*"]}))
                .expect("subscribe");
            s
        })
        .collect();
    let mut publishers: Vec<BusPeer> = daemons.iter().map(|d| d.peer(Protocol::JsonRpc)).collect();
    // Events are fire and forget: wait until every daemon's event
    // subscription is known on every node. Each daemon subscribed at start,
    // before the provider below registered on the same connection to NATS,
    // so once a call from daemon i reaches daemon j's provider, i's node
    // also knows j's event subscription (a route keeps the order).
    let mut ready = Vec::new();
    for (j, daemon) in daemons.iter().enumerate() {
        let mut provider = daemon.peer(Protocol::JsonRpc);
        provider
            .call("bus.register", json!({"names": [format!("ready.d{j}")]}))
            .expect("register");
        ready.push(serve(provider, "ready"));
    }
    for (i, daemon) in daemons.iter().enumerate() {
        let mut caller = daemon.peer(Protocol::Mcp1);
        for j in (0..3).filter(|j| *j != i) {
            call_when_known(&mut caller, &format!("ready.d{j}"), json!({})).expect("ready");
        }
    }
    let names = ["a", "b", "c"];
    for (i, publisher) in publishers.iter_mut().enumerate() {
        publisher
            .call(
                "bus.publish",
                json!({"topic": format!("news.{}", names[i]), "data": i}),
            )
            .expect("publish");
    }
    for (s, subscriber) in subscribers.iter_mut().enumerate() {
        let mut seen: Vec<String> = Vec::new();
        while seen.len() < 3 {
            match subscriber.read() {
                Msg::Notification {
                    method,
                    params: Some(p),
                } if method == "bus.event" => {
                    seen.push(p["topic"].as_str().expect("topic").to_string());
                }
                other => panic!("subscriber {s}: unexpected {other:?}"),
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            ["news.a", "news.b", "news.c"],
            "subscriber {s}: once each"
        );
    }
    // Each daemon publishes an end marker; a subscriber sees each once, and
    // no copy of an earlier event comes back around.
    for (i, publisher) in publishers.iter_mut().enumerate() {
        publisher
            .call("bus.publish", json!({"topic": "news.end", "data": i}))
            .expect("publish");
    }
    for (s, subscriber) in subscribers.iter_mut().enumerate() {
        let mut ends = Vec::new();
        while ends.len() < 3 {
            match subscriber.read() {
                Msg::Notification {
                    params: Some(p), ..
                } if p["topic"] == "news.end" => {
                    ends.push(p["data"].as_u64().expect("data"));
                }
                other => panic!("subscriber {s}: a duplicate or a loop: {other:?}"),
            }
        }
        ends.sort_unstable();
        assert_eq!(ends, [0, 1, 2], "subscriber {s}");
    }
    let stats = publishers[0].call("rpc.stats", json!({})).expect("stats");
    assert!(
        stats["federation"]["events_in"].as_u64() >= Some(4),
        "{stats}"
    );
    assert!(
        stats["federation"]["events_out"].as_u64() >= Some(2),
        "{stats}"
    );
}

#[test]
fn the_policy_refuses_what_the_cluster_identity_may_not_do() {
    let Some(nats) = Nats::start(3) else {
        return;
    };
    // A lets the cluster call open.* only and publish public.* only.
    let a = Daemon::start(
        &nats.urls(0),
        &[
            "--allow",
            "token:cluster:call:open.*;token:cluster:publish:public.*",
        ],
    );
    let c = Daemon::start(&nats.urls(2), &["--allow", TRUST_CLUSTER]);
    let mut provider = a.peer(Protocol::JsonRpc);
    provider
        .call("bus.register", json!({"names": ["open.*", "secret.*"]}))
        .expect("register");
    let served = serve(provider, "a");
    let mut caller = c.peer(Protocol::JsonRpc);
    assert_eq!(
        call_when_known(&mut caller, "open.door", json!({})).expect("allowed")["by"],
        "a"
    );
    let error = call_when_known(&mut caller, "secret.plan", json!({})).expect_err("refused");
    assert_eq!(error.0, -32008, "{error:?}");
    assert!(error.1.contains("token:cluster"), "{error:?}");
    // Events: a subscriber on A gets public.* from the cluster, never private.*.
    let mut subscriber = a.peer(Protocol::Mcp1);
    subscriber
        .call(
            "bus.subscribe",
            json!({"topics": ["public.x", "private.x"]}),
        )
        .expect("subscribe");
    let mut publisher = c.peer(Protocol::JsonRpc);
    publisher
        .call("bus.publish", json!({"topic": "private.x", "data": "no"}))
        .expect("publish");
    publisher
        .call("bus.publish", json!({"topic": "public.x", "data": "yes"}))
        .expect("publish");
    match subscriber.read() {
        Msg::Notification {
            params: Some(p), ..
        } => {
            assert_eq!(p, json!({"topic": "public.x", "data": "yes"}));
        }
        other => panic!("unexpected {other:?}"),
    }
    let stats = subscriber.call("rpc.stats", json!({})).expect("stats");
    assert!(
        stats["federation"]["calls_refused"].as_u64() >= Some(1),
        "{stats}"
    );
    assert!(
        stats["federation"]["events_refused"].as_u64() >= Some(1),
        "{stats}"
    );
    drop(a);
    let _ = served.join();
}

#[test]
fn remote_calls_fail_fast_while_nats_is_unreachable_and_local_calls_go_on() {
    if common::external_command("nats-server").is_none() {
        return;
    }
    // Nothing listens there: the daemon starts, keeps retrying, and says so.
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = common::junctiond();
    command
        .arg("--unix")
        .arg(dir.path().join("junction.sock"))
        .args(["--tcp", "off", "--log-format", "human"])
        .args(["--nats", &format!("nats://127.0.0.1:{port}")])
        .env_remove("JUNCTION_UNIX")
        .env_remove("JUNCTION_NATS");
    let daemon = Proc::spawn(&mut command);
    daemon.wait_for("listening on unix ");
    let unix = Endpoint::Unix(dir.path().join("junction.sock"));
    let mut provider = BusPeer::connect(&unix, Protocol::Mcp1);
    provider
        .call("bus.register", json!({"names": ["local.op"]}))
        .expect("register");
    let mut caller = BusPeer::connect(&unix, Protocol::JsonRpc);
    let started = Instant::now();
    let error = caller
        .call("remote.op", json!({}))
        .expect_err("unreachable");
    assert_eq!(error.0, junction::federation::UNREACHABLE, "{error:?}");
    assert!(error.1.contains("not connected to NATS"), "{error:?}");
    assert!(started.elapsed() < PATIENCE);
    caller.send_request(2, "local.op", None);
    let Msg::Request { id, .. } = provider.read() else {
        panic!("no request");
    };
    provider.respond(id, Ok(json!("local")));
    assert_eq!(caller.read_response(2), Ok(json!("local")));
    let stats = caller.call("rpc.stats", json!({})).expect("stats");
    assert_eq!(stats["federation"]["connected"], 0, "{stats}");
    assert!(
        stats["federation"]["unreachable"].as_u64() >= Some(1),
        "{stats}"
    );
}
