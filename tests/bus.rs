//! The service bus over real sockets: providers and callers on every pair
//! of transports and protocols, the ways a routed call ends, names and
//! the registration policy (proto/bus.md). Pub/sub is in tests/pubsub.rs.

mod common;

use std::thread;
use std::time::Duration;

use common::{PATIENCE, Raw, TestServer, start_with};
use junction::Protocol;
use junction::bus::policy::{Policy, Rule};
use junction::client::Endpoint;
use serde_json::{Value, json};

use common::bus_peer::{BusPeer, Msg, kinds};

/// A server whose policy lets TCP peers register too.
fn open_bus(adjust: impl FnOnce(&mut junction::Config)) -> TestServer {
    start_with(|config| {
        config.bus.policy = Policy::new(vec![Rule::parse("*=any,tcp").expect("rule")]);
        adjust(config);
    })
}

fn label(endpoint: &Endpoint, protocol: Protocol) -> String {
    let transport = match endpoint {
        Endpoint::Unix(_) => "unix",
        Endpoint::Tcp(_) => "tcp",
    };
    format!("{transport}/{}", protocol.name())
}

#[test]
fn routed_calls_work_between_every_pair_of_transports_and_protocols() {
    let server = open_bus(|_| {});
    let kinds = kinds(&server);
    for (i, (p_end, p_proto)) in kinds.iter().enumerate() {
        let mut provider = BusPeer::connect(p_end, *p_proto);
        let names = provider.call("bus.register", json!({"names": [format!("svc{i}.*")]}));
        assert_eq!(names, Ok(json!({"names": [format!("svc{i}.*")]})));
        for (c_end, c_proto) in &kinds {
            let what = format!(
                "provider {} caller {}",
                label(p_end, *p_proto),
                label(c_end, *c_proto)
            );
            let mut caller = BusPeer::connect(c_end, *c_proto);
            caller.send_request(77, &format!("svc{i}.add"), Some(json!({"a": 2, "b": 3})));
            let Msg::Request { id, method, params } = provider.read() else {
                panic!("{what}: the provider got no request");
            };
            assert_eq!(method, format!("svc{i}.add"), "{what}");
            assert_eq!(params, Some(json!({"a": 2, "b": 3})), "{what}");
            assert_ne!(id, 0, "{what}: the daemon's id is never 0");
            provider.respond(id, Ok(json!({"sum": 5})));
            assert_eq!(caller.read_response(77), Ok(json!({"sum": 5})), "{what}");

            // An error keeps its code, message and data.
            caller.send_request(78, &format!("svc{i}.fail"), Some(json!([1])));
            let Msg::Request { id, .. } = provider.read() else {
                panic!("{what}: no request");
            };
            provider.respond(id, Err((4711, "no such file", Some(json!({"path": "/x"})))));
            let error = caller.read_response(78).expect_err("an error");
            assert_eq!(error.0, 4711, "{what}");
            assert_eq!(error.1, "no such file", "{what}");
            assert_eq!(error.2, Some(json!({"path": "/x"})), "{what}");

            // A notification arrives as one, and nothing comes back.
            caller.send_notification(&format!("svc{i}.note"), Some(json!({"n": 1})));
            assert_eq!(
                provider.read(),
                Msg::Notification {
                    method: format!("svc{i}.note"),
                    params: Some(json!({"n": 1}))
                },
                "{what}"
            );
        }
    }
}

#[test]
fn a_routed_call_in_a_batch_is_answered_inside_the_batch() {
    let server = open_bus(|_| {});
    let endpoint = &server.endpoints()[0];
    let mut provider = BusPeer::connect(endpoint, Protocol::Mcp1);
    provider
        .call("bus.register", json!({"names": ["math.double"]}))
        .expect("register");
    let mut raw = Raw::connect(endpoint);
    raw.send(
        br#"[{"jsonrpc":"2.0","id":1,"method":"math.double","params":[21]},{"jsonrpc":"2.0","id":2,"method":"rpc.ping"}]
"#,
    );
    let Msg::Request { id, params, .. } = provider.read() else {
        panic!("no request");
    };
    assert_eq!(params, Some(json!([21])));
    provider.respond(id, Ok(json!(42)));
    let mut batch = raw.json();
    let entries = batch.as_array_mut().expect("a batch response");
    entries.sort_by_key(|e| e["id"].as_i64());
    assert_eq!(
        *entries,
        vec![
            json!({"jsonrpc": "2.0", "id": 1, "result": 42}),
            json!({"jsonrpc": "2.0", "id": 2, "result": "pong"})
        ]
    );
}

#[test]
fn raw_mcp1_bodies_pass_between_mcp1_peers_and_are_refused_to_json_rpc_ones() {
    let server = open_bus(|_| {});
    for endpoint in server.endpoints() {
        let mut mcp1_provider = BusPeer::connect(&endpoint, Protocol::Mcp1);
        mcp1_provider
            .call("bus.register", json!({"names": ["blob.*"]}))
            .expect("register");
        let mut json_provider = BusPeer::connect(&endpoint, Protocol::JsonRpc);
        json_provider
            .call("bus.register", json!({"names": ["text.*"]}))
            .expect("register");
        let mut caller = BusPeer::connect(&endpoint, Protocol::Mcp1);

        // Raw params and a raw result, MCP1 to MCP1.
        caller.send_raw_request(5, "blob.put", b"\x00\x01binary");
        let (id, bytes) = mcp1_provider.read_raw_request("blob.put");
        assert_eq!(bytes, b"\x00\x01binary");
        mcp1_provider.respond_raw(id, b"\xffok");
        assert_eq!(caller.read_raw_response(5), b"\xffok");

        // Raw params cannot reach a JSON-RPC provider; scalar params neither.
        caller.send_raw_request(6, "text.put", b"abc");
        assert_eq!(caller.read_response(6).expect_err("refused").0, -32003);
        caller.send_mcp1_body(7, "text.put", b"5");
        assert_eq!(caller.read_response(7).expect_err("refused").0, -32602);

        // A raw result cannot reach a JSON-RPC caller.
        let mut json_caller = BusPeer::connect(&endpoint, Protocol::JsonRpc);
        json_caller.send_request(8, "blob.get", None);
        let Msg::Request { id, .. } = mcp1_provider.read() else {
            panic!("no request");
        };
        mcp1_provider.respond_raw(id, b"\x00");
        assert_eq!(json_caller.read_response(8).expect_err("refused").0, -32003);
    }
}

#[test]
fn a_provider_that_disconnects_fails_its_pending_calls_at_once() {
    let server = open_bus(|_| {});
    for (p_end, p_proto) in kinds(&server) {
        let mut provider = BusPeer::connect(&p_end, p_proto);
        provider
            .call("bus.register", json!({"names": ["job.run"]}))
            .expect("register");
        let mut callers: Vec<BusPeer> = kinds(&server)
            .iter()
            .map(|(e, p)| BusPeer::connect(e, *p))
            .collect();
        for caller in &mut callers {
            caller.send_request(9, "job.run", None);
            assert!(matches!(provider.read(), Msg::Request { .. }));
        }
        drop(provider);
        for caller in &mut callers {
            let (code, message, _) = caller.read_response(9).expect_err("provider gone");
            assert_eq!(code, -32022, "{message}");
            assert!(message.contains("job.run"), "{message}");
        }
        // The name is free again.
        let mut caller = BusPeer::connect(&p_end, p_proto);
        assert_eq!(
            caller.call("job.run", json!({})).expect_err("gone").0,
            -32601
        );
        let mut next = BusPeer::connect(&p_end, p_proto);
        next.call("bus.register", json!({"names": ["job.run"]}))
            .expect("free to register again");
    }
    assert_eq!(server.stats()["bus"]["provider_gone"], json!(16));
}

#[test]
fn a_caller_that_disconnects_is_cancelled_at_the_provider() {
    let server = open_bus(|_| {});
    let unix = &server.endpoints()[0];
    for p_proto in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut provider = BusPeer::connect(unix, p_proto);
        provider
            .call("bus.register", json!({"names": ["slow.op"]}))
            .expect("register");
        for c_proto in [Protocol::JsonRpc, Protocol::Mcp1] {
            let mut caller = BusPeer::connect(unix, c_proto);
            caller.send_request(1, "slow.op", None);
            let Msg::Request { id, .. } = provider.read() else {
                panic!("no request");
            };
            drop(caller);
            assert_eq!(
                provider.read(),
                Msg::Cancel {
                    id,
                    reason: "caller gone".into()
                }
            );
            // An answer after the cancel goes nowhere and harms nothing.
            provider.respond(id, Ok(json!("late")));
        }
        // A caller that only half-closes still gets its answer.
        let mut caller = BusPeer::connect(unix, Protocol::JsonRpc);
        caller.send_request(2, "slow.op", None);
        let Msg::Request { id, .. } = provider.read() else {
            panic!("no request");
        };
        caller.shutdown_write();
        provider.respond(id, Ok(json!("still here")));
        assert_eq!(caller.read_response(2), Ok(json!("still here")));
    }
    assert_eq!(server.stats()["bus"]["late_answers"], json!(4));
    common::assert_healthy(&server);
}

#[test]
fn a_routed_call_times_out_and_the_provider_is_told() {
    let server = open_bus(|config| config.bus.call_timeout = Duration::from_millis(300));
    for (endpoint, protocol) in kinds(&server) {
        let mut provider = BusPeer::connect(&endpoint, protocol);
        provider
            .call("bus.register", json!({"names": ["never.answers"]}))
            .expect("register");
        let mut caller = BusPeer::connect(&endpoint, protocol);
        caller.send_request(3, "never.answers", None);
        let Msg::Request { id, .. } = provider.read() else {
            panic!("no request");
        };
        let (code, message, _) = caller.read_response(3).expect_err("timeout");
        assert_eq!(code, -32023, "{message}");
        assert!(message.contains("never.answers"), "{message}");
        assert_eq!(
            provider.read(),
            Msg::Cancel {
                id,
                reason: "timeout".into()
            }
        );
        // The answer that comes too late is dropped; the caller gets nothing more.
        provider.respond(id, Ok(json!(1)));
        assert_eq!(caller.call("rpc.ping", json!([])), Ok(json!("pong")));
    }
    assert_eq!(server.stats()["bus"]["call_timeouts"], json!(4));
}

#[test]
fn names_have_one_owner_and_the_longest_pattern_routes() {
    let server = open_bus(|_| {});
    for (endpoint, protocol) in kinds(&server) {
        let mut a = BusPeer::connect(&endpoint, protocol);
        let mut b = BusPeer::connect(&endpoint, protocol);
        a.call(
            "bus.register",
            json!({"names": ["editor.*", "editor.tab.*"]}),
        )
        .expect("register");
        // Taken: the error names the owner; nothing of the request is registered.
        let taken = b
            .call("bus.register", json!({"names": ["editor.new", "editor.*"]}))
            .expect_err("taken");
        assert_eq!(taken.0, -32020, "{}", taken.1);
        assert!(taken.1.contains("editor.*"), "{}", taken.1);
        let owner = &taken.2.as_ref().expect("data")["owner"];
        assert!(owner["id"].is_u64(), "{owner}");
        let list = b.call("bus.list", json!({})).expect("list");
        let names: Vec<&str> = list["names"]
            .as_array()
            .expect("names")
            .iter()
            .filter_map(|n| n["name"].as_str())
            .collect();
        assert_eq!(names, ["editor.*", "editor.tab.*"], "all or nothing");
        // A more specific name beside the pattern is another owner's.
        b.call("bus.register", json!({"names": ["editor.open"]}))
            .expect("a name under someone else's pattern");
        let mut caller = BusPeer::connect(&endpoint, protocol);
        for (method, to_b) in [
            ("editor.open", true),
            ("editor.save", false),
            ("editor.tab.close", false),
        ] {
            caller.send_request(1, method, None);
            let provider = if to_b { &mut b } else { &mut a };
            let Msg::Request {
                id, method: got, ..
            } = provider.read()
            else {
                panic!("{method}: no request");
            };
            assert_eq!(got, method);
            provider.respond(id, Ok(json!(to_b)));
            assert_eq!(caller.read_response(1), Ok(json!(to_b)), "{method}");
        }
        // Reserved, malformed, the daemon's own names.
        for (bad, code) in [
            (json!({"names": ["rpc.mine"]}), -32602),
            (json!({"names": ["bus.*"]}), -32602),
            (json!({"names": ["*"]}), -32602),
            (json!({"names": ["a b"]}), -32602),
            (json!({"names": []}), -32602),
            (json!({"nombres": ["x"]}), -32602),
            (json!({"names": ["test.add"]}), -32020),
            (json!({"names": ["rpc.ping"]}), -32020),
            (json!({"names": ["bus.list"]}), -32020),
        ] {
            let error = b.call("bus.register", bad.clone()).expect_err("refused");
            assert_eq!(error.0, code, "{bad}: {}", error.1);
        }
        // Unregistering releases only your own names (another's is left
        // alone, and not listed), then they are free.
        let released = b
            .call("bus.unregister", json!({"names": ["editor.*"]}))
            .expect("idempotent");
        assert_eq!(released, json!({"names": []}));
        a.call("bus.unregister", json!({"names": ["editor.*"]}))
            .expect("unregister");
        b.call("bus.register", json!({"names": ["editor.*"]}))
            .expect("free now");
        // rpc.methods lists routed names.
        let methods = caller.call("rpc.methods", json!([])).expect("methods");
        let routed: Vec<&str> = methods
            .as_array()
            .expect("list")
            .iter()
            .filter(|m| m["mode"] == "routed")
            .filter_map(|m| m["name"].as_str())
            .collect();
        assert_eq!(routed, ["editor.*", "editor.open", "editor.tab.*"]);
        let bus_methods = methods
            .as_array()
            .expect("list")
            .iter()
            .filter(|m| m["name"].as_str().is_some_and(|n| n.starts_with("bus.")))
            .count();
        assert_eq!(bus_methods, 6);
    }
}

#[test]
fn by_default_only_unix_peers_may_register() {
    let server = common::start();
    let [unix, tcp] = [&server.endpoints()[0], &server.endpoints()[1]];
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut remote = BusPeer::connect(tcp, protocol);
        let error = remote
            .call("bus.register", json!({"names": ["remote.x"]}))
            .expect_err("tcp refused");
        assert_eq!(error.0, -32021, "{}", error.1);
        // TCP peers still call and subscribe.
        let mut local = BusPeer::connect(unix, protocol);
        local
            .call(
                "bus.register",
                json!({"names": [format!("local{}.x", protocol.name())]}),
            )
            .expect("unix may");
        remote.send_request(4, &format!("local{}.x", protocol.name()), None);
        let Msg::Request { id, .. } = local.read() else {
            panic!("no request");
        };
        local.respond(id, Ok(json!("hi")));
        assert_eq!(remote.read_response(4), Ok(json!("hi")));
    }
    assert_eq!(server.stats()["bus"]["refused"], json!(2));
}

#[test]
fn bus_allow_rules_decide_per_prefix() {
    let me = nix::unistd::geteuid().as_raw();
    let other = me.wrapping_add(4242);
    let server = start_with(|config| {
        config.bus.policy = Policy::new(vec![
            Rule::parse(&format!("editor.*={other}")).expect("rule"),
            Rule::parse(&format!("*={me}")).expect("rule"),
        ]);
    });
    let unix = &server.endpoints()[0];
    let mut peer = BusPeer::connect(unix, Protocol::JsonRpc);
    let error = peer
        .call("bus.register", json!({"names": ["editor.open"]}))
        .expect_err("the editor rule names another user");
    assert_eq!(error.0, -32021, "{}", error.1);
    assert!(error.1.contains("bus-allow"), "{}", error.1);
    let error = peer
        .call("bus.register", json!({"names": ["build.run", "editor.*"]}))
        .expect_err("all or nothing");
    assert_eq!(error.0, -32021);
    peer.call("bus.register", json!({"names": ["build.run"]}))
        .expect("the catch-all rule names this user");
    let stats = server.stats();
    assert_eq!(stats["bus"]["refused"], json!(2));
    assert_eq!(stats["bus"]["registrations"], json!(1));
}

#[test]
fn providers_are_not_closed_for_being_idle() {
    let server = start_with(|config| config.idle_timeout = Duration::from_millis(200));
    let unix = &server.endpoints()[0];
    let mut provider = BusPeer::connect(unix, Protocol::Mcp1);
    provider
        .call("bus.register", json!({"names": ["quiet.x"]}))
        .expect("register");
    let mut idle = Raw::connect(unix);
    idle.send(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rpc.ping\"}\n");
    let _ = idle.line();
    thread::sleep(Duration::from_millis(900));
    assert!(idle.is_closed(), "an idle plain client is closed");
    let mut caller = BusPeer::connect(unix, Protocol::JsonRpc);
    caller.send_request(1, "quiet.x", None);
    let Msg::Request { id, .. } = provider.read() else {
        panic!("the idle provider is still there");
    };
    provider.respond(id, Ok(json!(true)));
    assert_eq!(caller.read_response(1), Ok(json!(true)));
}

#[test]
fn bus_list_shows_providers_and_pending_calls() {
    let server = start_with(|_| {});
    let unix = &server.endpoints()[0];
    let mut provider = BusPeer::connect(unix, Protocol::JsonRpc);
    provider
        .call("bus.register", json!({"names": ["list.me"]}))
        .expect("register");
    let mut caller = BusPeer::connect(unix, Protocol::Mcp1);
    caller.send_request(1, "list.me", None);
    let Msg::Request { id, .. } = provider.read() else {
        panic!("no request");
    };
    let list = caller.call("bus.list", json!({})).expect("list");
    let entry = &list["names"][0];
    assert_eq!(entry["name"], "list.me");
    assert_eq!(entry["pending"], 1);
    assert_eq!(entry["provider"]["transport"], "unix");
    assert_eq!(entry["provider"]["protocol"], "jsonrpc");
    assert_eq!(entry["provider"]["pid"], json!(std::process::id()));
    provider.respond(id, Ok(json!(null)));
    assert_eq!(caller.read_response(1), Ok(Value::Null));
    let _ = PATIENCE;
}

#[test]
fn shutting_down_fails_pending_routed_calls() {
    let server = start_with(|config| config.drain_timeout = Duration::from_secs(10));
    let unix = server.endpoints()[0].clone();
    let mut provider = BusPeer::connect(&unix, Protocol::JsonRpc);
    provider
        .call("bus.register", json!({"names": ["stuck.op"]}))
        .expect("register");
    let mut callers: Vec<BusPeer> = [Protocol::JsonRpc, Protocol::Mcp1]
        .into_iter()
        .map(|protocol| {
            let mut caller = BusPeer::connect(&unix, protocol);
            caller.send_request(1, "stuck.op", None);
            assert!(matches!(provider.read(), Msg::Request { .. }));
            caller
        })
        .collect();
    let TestServer { running, dir } = server;
    let stopper = thread::spawn(move || running.stop());
    for caller in &mut callers {
        let (code, message, _) = caller.read_response(1).expect_err("shutting down");
        assert_eq!(code, -32000, "{message}");
    }
    drop(callers);
    drop(provider);
    stopper
        .join()
        .expect("stop thread")
        .expect("the drain ends once the callers have their answers");
    drop(dir);
}

#[test]
fn a_caller_at_max_in_flight_is_not_read_until_an_answer_comes() {
    let server = open_bus(|config| config.max_in_flight = 4);
    let unix = server.endpoints()[0].clone();
    for (endpoint, protocol) in kinds(&server) {
        let mut provider = BusPeer::connect(&unix, Protocol::Mcp1);
        provider
            .call("bus.register", json!({"names": ["held.op"]}))
            .expect("register");
        let mut caller = BusPeer::connect(&endpoint, protocol);
        for id in 1..=10 {
            caller.send_request(id, "held.op", Some(json!([id])));
        }
        let mut forwarded: Vec<u32> = (0..4)
            .map(|_| match provider.read() {
                Msg::Request { id, .. } => id,
                other => panic!("expected a request, got {other:?}"),
            })
            .collect();
        // The caller is held with 4 calls out; the other 6 wait in its socket.
        let mut watcher = BusPeer::connect(&unix, Protocol::JsonRpc);
        let held = (0..200).find_map(|_| {
            let clients = watcher.call("rpc.clients", json!([])).expect("clients");
            let caller = clients
                .as_array()
                .expect("list")
                .iter()
                .find(|c| c["in_flight"] == 4)
                .cloned();
            if caller.as_ref().is_some_and(|c| c["paused"] == true) {
                return caller;
            }
            thread::sleep(Duration::from_millis(10));
            None
        });
        assert!(
            held.is_some(),
            "{}: the caller is held at 4",
            label(&endpoint, protocol)
        );
        let list = watcher.call("bus.list", json!({})).expect("list");
        assert_eq!(
            list["names"][0]["pending"], 4,
            "only 4 calls were forwarded"
        );
        // Each answer lets one more call through, until all 10 are answered.
        let mut answered = 0;
        while answered < 10 {
            let id = forwarded.remove(0);
            provider.respond(id, Ok(json!(id)));
            answered += 1;
            if answered <= 6 {
                match provider.read() {
                    Msg::Request { id, .. } => forwarded.push(id),
                    other => panic!("expected a request, got {other:?}"),
                }
            }
        }
        let mut got: Vec<u32> = (0..10)
            .map(|_| match caller.read() {
                Msg::Response { id, result } => {
                    assert!(result.is_ok(), "{result:?}");
                    id.as_u64().expect("id") as u32
                }
                other => panic!("expected an answer, got {other:?}"),
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, (1..=10).collect::<Vec<_>>());
    }
}
