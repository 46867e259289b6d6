//! Provider groups over real sockets (proto/bus.md section 1, "Provider
//! groups"): several connections provide one name together, calls go to
//! the member with the fewest pending, a member that leaves fails only its
//! own calls, exclusive names and groups never mix, `bus.list` shows the
//! members, and the policy's `provide` is checked for each member.

mod common;

use common::bus_peer::{BusPeer, Msg, kinds};
use common::{TestServer, start_with};
use junction::Protocol;
use junction::bus::policy::{Policy, Rule};
use junction::client::Endpoint;
use serde_json::{Value, json};

/// A server whose policy lets TCP peers register too.
fn open_bus() -> TestServer {
    start_with(|config| {
        config.bus.policy = Policy::new(vec![Rule::parse("*=any,tcp").expect("rule")]);
    })
}

fn label(endpoint: &Endpoint, protocol: Protocol) -> String {
    let transport = match endpoint {
        Endpoint::Unix(_) => "unix",
        Endpoint::Tcp(_) => "tcp",
    };
    format!("{transport}/{}", protocol.name())
}

fn join(peer: &mut BusPeer, name: &str) {
    let answer = peer.call("bus.register", json!({"names": [name], "group": true}));
    assert_eq!(answer, Ok(json!({"names": [name]})));
}

/// The forwarded request a provider gets next: (daemon's id, params).
fn request(peer: &mut BusPeer, what: &str) -> (u32, Option<Value>) {
    match peer.read() {
        Msg::Request { id, params, .. } => (id, params),
        other => panic!("{what}: expected a forwarded request, got {other:?}"),
    }
}

#[test]
fn a_group_shares_pipelined_calls_by_pending_count_on_every_transport_and_protocol() {
    let server = open_bus();
    let kinds = kinds(&server);
    for i in 0..kinds.len() {
        let (a_end, a_proto) = &kinds[i];
        let (b_end, b_proto) = &kinds[(i + 1) % kinds.len()];
        let (c_end, c_proto) = &kinds[(i + 2) % kinds.len()];
        let what = format!(
            "members {} and {}, caller {}",
            label(a_end, *a_proto),
            label(b_end, *b_proto),
            label(c_end, *c_proto)
        );
        let name = format!("work{i}.run");
        let mut a = BusPeer::connect(a_end, *a_proto);
        let mut b = BusPeer::connect(b_end, *b_proto);
        join(&mut a, &name);
        join(&mut b, &name);
        let mut caller = BusPeer::connect(c_end, *c_proto);
        for n in 1..=4u32 {
            caller.send_request(n, &name, Some(json!({"n": n})));
        }
        // Fewest pending first, ties in turn: a, b, a, b.
        let (a1, p1) = request(&mut a, &what);
        let (b1, p2) = request(&mut b, &what);
        let (a2, p3) = request(&mut a, &what);
        let (b2, p4) = request(&mut b, &what);
        assert_eq!(p1, Some(json!({"n": 1})), "{what}");
        assert_eq!(p2, Some(json!({"n": 2})), "{what}");
        assert_eq!(p3, Some(json!({"n": 3})), "{what}");
        assert_eq!(p4, Some(json!({"n": 4})), "{what}");
        a.respond(a1, Ok(json!("a")));
        a.respond(a2, Ok(json!("a")));
        b.respond(b1, Ok(json!("b")));
        b.respond(b2, Ok(json!("b")));
        let mut answers: Vec<(Value, Value)> = (0..4)
            .map(|_| match caller.read() {
                Msg::Response { id, result } => (id, result.expect("a result")),
                other => panic!("{what}: expected an answer, got {other:?}"),
            })
            .collect();
        answers.sort_by_key(|(id, _)| id.as_u64());
        let who: Vec<Value> = answers.into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            who,
            [json!("a"), json!("b"), json!("a"), json!("b")],
            "{what}"
        );
    }
}

#[test]
fn quick_calls_take_turns_and_a_notification_goes_to_one_member() {
    let server = open_bus();
    let unix = &server.endpoints()[0];
    let mut a = BusPeer::connect(unix, Protocol::JsonRpc);
    let mut b = BusPeer::connect(unix, Protocol::Mcp1);
    join(&mut a, "turns.*");
    join(&mut b, "turns.*");
    let mut caller = BusPeer::connect(unix, Protocol::JsonRpc);
    for round in 0..3u32 {
        for (peer, who) in [(&mut a, "a"), (&mut b, "b")] {
            let n = round * 2 + if who == "a" { 1 } else { 2 };
            caller.send_request(n, "turns.go", None);
            let (id, _) = request(peer, who);
            peer.respond(id, Ok(json!(who)));
            assert_eq!(caller.read_response(n), Ok(json!(who)));
        }
    }
    // A notification is forwarded to one member (the next in turn: a).
    caller.send_notification("turns.note", Some(json!({"x": 1})));
    assert_eq!(
        a.read(),
        Msg::Notification {
            method: "turns.note".into(),
            params: Some(json!({"x": 1}))
        }
    );
    // b got nothing: its next message is the call that follows.
    caller.send_request(99, "turns.after", None);
    let (id, _) = request(&mut b, "b after the notification");
    b.respond(id, Ok(json!("b")));
    assert_eq!(caller.read_response(99), Ok(json!("b")));
}

#[test]
fn a_member_that_leaves_fails_only_its_calls_and_the_others_keep_serving() {
    let server = open_bus();
    for (end, protocol) in kinds(&server) {
        let what = label(&end, protocol);
        let mut a = BusPeer::connect(&end, protocol);
        let mut b = BusPeer::connect(&end, protocol);
        join(&mut a, "stay.up");
        join(&mut b, "stay.up");
        let mut caller = BusPeer::connect(&end, protocol);
        caller.send_request(1, "stay.up", None);
        caller.send_request(2, "stay.up", None);
        let _ = request(&mut a, &what);
        let (b1, _) = request(&mut b, &what);
        drop(a);
        let error = caller.read_response(1).expect_err("a's call fails");
        assert_eq!(error.0, -32022, "{what}: {error:?}");
        assert!(error.1.contains("stay.up"), "{what}: {error:?}");
        b.respond(b1, Ok(json!("b")));
        assert_eq!(caller.read_response(2), Ok(json!("b")), "{what}");
        // Only b is left, and it takes every call.
        for n in 3..5 {
            caller.send_request(n, "stay.up", None);
            let (id, _) = request(&mut b, &what);
            b.respond(id, Ok(json!(n)));
            assert_eq!(caller.read_response(n), Ok(json!(n)), "{what}");
        }
        let list = caller.call("bus.list", json!({})).expect("list");
        let entry = &list["names"][0];
        assert_eq!(entry["name"], "stay.up", "{what}");
        assert_eq!(entry["group"].as_array().map(Vec::len), Some(1), "{what}");
        // The last member unregisters: the name is gone.
        assert_eq!(
            b.call("bus.unregister", json!({"names": ["stay.up"]})),
            Ok(json!({"names": ["stay.up"]}))
        );
        let error = caller.call("stay.up", json!({})).expect_err("no provider");
        assert_eq!(error.0, -32601, "{what}");
    }
}

#[test]
fn exclusive_names_and_groups_do_not_mix() {
    let server = open_bus();
    let unix = &server.endpoints()[0];
    let mut alone = BusPeer::connect(unix, Protocol::JsonRpc);
    let mut other = BusPeer::connect(unix, Protocol::Mcp1);
    alone
        .call("bus.register", json!({"names": ["solo.op"]}))
        .expect("exclusive");
    // Joining a group on a name held alone.
    let error = other
        .call("bus.register", json!({"names": ["solo.op"], "group": true}))
        .expect_err("taken");
    assert_eq!(error.0, -32020, "{error:?}");
    assert!(
        error.1.contains("alone") && error.1.contains("group cannot share it"),
        "{error:?}"
    );
    // A group's name registered alone.
    join(&mut other, "team.op");
    let mut third = BusPeer::connect(unix, Protocol::JsonRpc);
    join(&mut third, "team.op");
    let error = alone
        .call("bus.register", json!({"names": ["team.op"]}))
        .expect_err("taken");
    assert_eq!(error.0, -32020, "{error:?}");
    assert!(
        error.1.contains("a group of 2 connections") && error.1.contains("\"group\": true"),
        "{error:?}"
    );
    assert_eq!(error.2.as_ref().map(|d| &d["owner"]), Some(&json!("group")));
    assert_eq!(error.2.as_ref().map(|d| &d["members"]), Some(&json!(2)));
    // A member cannot take the group's name alone while others are in it.
    let error = other
        .call("bus.register", json!({"names": ["team.op"]}))
        .expect_err("taken");
    assert_eq!(error.0, -32020, "{error:?}");
    // All or nothing: a register naming a free name and a group's name takes neither.
    let error = alone
        .call("bus.register", json!({"names": ["free.op", "team.op"]}))
        .expect_err("taken");
    assert_eq!(error.0, -32020);
    let list = alone.call("bus.list", json!({})).expect("list");
    assert!(
        !list["names"]
            .as_array()
            .expect("names")
            .iter()
            .any(|n| n["name"] == "free.op"),
        "{list}"
    );
    // The exclusive name still routes to its owner, as before.
    let mut caller = BusPeer::connect(unix, Protocol::JsonRpc);
    caller.send_request(5, "solo.op", None);
    let (id, _) = request(&mut alone, "alone");
    alone.respond(id, Ok(json!("alone")));
    assert_eq!(caller.read_response(5), Ok(json!("alone")));
    // The last member of a group may take the name alone, and back.
    drop(third);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        // Until the daemon has seen the third member's close.
        match other.call("bus.register", json!({"names": ["team.op"]})) {
            Ok(names) => break assert_eq!(names, json!({"names": ["team.op"]})),
            Err(e) if e.0 == -32020 && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("the last member may take the name alone: {e:?}"),
        }
    }
    let mut probe = BusPeer::connect(unix, Protocol::JsonRpc);
    let list = probe.call("bus.list", json!({})).expect("list");
    let team = list["names"]
        .as_array()
        .expect("names")
        .iter()
        .find(|n| n["name"] == "team.op")
        .cloned()
        .expect("team.op listed");
    assert!(team.get("group").is_none(), "now exclusive: {team}");
    assert_eq!(team["provider"]["protocol"], "mcp1");
}

#[test]
fn bus_list_and_rpc_methods_show_the_group_and_its_members() {
    let server = open_bus();
    let unix = &server.endpoints()[0];
    let tcp = &server.endpoints()[1];
    let mut a = BusPeer::connect(unix, Protocol::JsonRpc);
    let mut b = BusPeer::connect(tcp, Protocol::Mcp1);
    join(&mut a, "shown.op");
    join(&mut b, "shown.op");
    let mut caller = BusPeer::connect(unix, Protocol::JsonRpc);
    caller.send_request(1, "shown.op", None);
    let (id, _) = request(&mut a, "a");
    let list = caller.call("bus.list", json!({})).expect("list");
    let entry = &list["names"][0];
    assert_eq!(entry["name"], "shown.op");
    assert_eq!(entry["provider"], "group");
    assert_eq!(entry["pending"], 1);
    let members = entry["group"].as_array().expect("members");
    assert_eq!(members.len(), 2, "{entry}");
    assert_eq!(members[0]["provider"]["transport"], "unix");
    assert_eq!(members[0]["provider"]["pid"], json!(std::process::id()));
    assert_eq!(members[0]["pending"], 1);
    assert_eq!(members[1]["provider"]["transport"], "tcp");
    assert_eq!(members[1]["provider"]["protocol"], "mcp1");
    assert!(members[1]["provider"]["address"].is_string(), "{entry}");
    assert_eq!(members[1]["pending"], 0);
    let methods = caller.call("rpc.methods", json!({})).expect("methods");
    let text = methods.to_string();
    assert!(text.contains("a group of 2 connections"), "{text}");
    a.respond(id, Ok(json!(1)));
    assert_eq!(caller.read_response(1), Ok(json!(1)));
}

#[test]
fn bus_list_hides_members_details_from_non_admins() {
    use junction::policy::Rule as AccessRule;
    let server = start_with(|config| {
        config.bus.policy = Policy::new(vec![Rule::parse("*=any,tcp").expect("rule")]);
        // Anonymous TCP peers may do everything but admin.
        config.access.policy = junction::policy::Policy::new(
            [
                "anonymous:call:*",
                "anonymous:provide:*",
                "anonymous:publish:*",
                "anonymous:subscribe:*",
            ]
            .iter()
            .map(|flag| AccessRule::from_flag(flag, false).expect("rule"))
            .collect(),
        );
    });
    let unix = &server.endpoints()[0];
    let tcp = &server.endpoints()[1];
    let mut a = BusPeer::connect(unix, Protocol::JsonRpc);
    join(&mut a, "quiet.op");
    let mut b = BusPeer::connect(tcp, Protocol::JsonRpc);
    join(&mut b, "quiet.op");
    let list = b.call("bus.list", json!({})).expect("list");
    let members = list["names"][0]["group"]
        .as_array()
        .expect("members")
        .clone();
    assert_eq!(members.len(), 2, "{list}");
    assert!(members[0]["provider"].get("pid").is_none(), "{list}");
    assert!(members[0]["provider"].get("uid").is_none(), "{list}");
    // Its own entry in full.
    assert!(members[1]["provider"]["address"].is_string(), "{list}");
}

#[test]
fn provide_is_checked_for_each_member() {
    // Unix peers may provide work.*; TCP peers may not.
    let server = start_with(|config| {
        config.bus.policy = Policy::new(vec![Rule::parse("work.*=any").expect("rule")]);
    });
    let unix = &server.endpoints()[0];
    let tcp = &server.endpoints()[1];
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut a = BusPeer::connect(unix, protocol);
        join(&mut a, "work.job");
        let mut b = BusPeer::connect(tcp, protocol);
        let error = b
            .call(
                "bus.register",
                json!({"names": ["work.job"], "group": true}),
            )
            .expect_err("refused");
        assert_eq!(error.0, -32021, "{error:?}");
        // The group still has its one member, which takes every call.
        let mut caller = BusPeer::connect(tcp, protocol);
        for n in 1..3 {
            caller.send_request(n, "work.job", None);
            let (id, _) = request(&mut a, "a");
            a.respond(id, Ok(json!(n)));
            assert_eq!(caller.read_response(n), Ok(json!(n)));
        }
    }
}

#[test]
fn group_must_be_a_boolean() {
    let server = open_bus();
    let mut peer = BusPeer::connect(&server.endpoints()[0], Protocol::JsonRpc);
    let error = peer
        .call("bus.register", json!({"names": ["x.y"], "group": "yes"}))
        .expect_err("invalid");
    assert_eq!(error.0, -32602, "{error:?}");
}
