//! The access policy (docs/security.md) at its real defaults: identities,
//! TCP that grants nothing the Unix socket refuses, rules checked on every
//! message and when routing, and token hygiene. Issue 13, scenarios 1, 3, 12.
//!
//! The second local user is uid 65534 (nobody), running the `junction` CLI;
//! those tests need root and say so when they are skipped.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use common::{PATIENCE, TestServer, start_with};
use junction::Protocol;
use junction::access::{Access, AuthToken, NamedToken};
use junction::client::{Body, Client, ClientError, Endpoint, Incoming};
use junction::policy::{Policy, Rule};
use junction::{Config, Router, Server, ServerError};
use serde_json::{Value, json};

const NOBODY: u32 = 65534;
const FORBIDDEN: i32 = -32008;
const UNAUTHORIZED: i32 = -32007;
const NOT_FOUND: i32 = -32601;
const AGENT_SECRET: &str = "agent-secret-agent-secret";
const PROTOCOLS: [Protocol; 2] = [Protocol::JsonRpc, Protocol::Mcp1];

fn rules(flags: &[(&str, bool)]) -> Policy {
    Policy::new(
        flags
            .iter()
            .map(|(f, deny)| Rule::from_flag(f, *deny).expect("rule"))
            .collect(),
    )
}

/// A server at the real access defaults (no anonymous TCP, the generated
/// token), adjusted.
fn start_real(adjust: impl FnOnce(&mut Config)) -> TestServer {
    start_with(|config| {
        config.access = Access::default();
        adjust(config);
    })
}

fn connect(endpoint: &Endpoint, protocol: Protocol) -> Client {
    let mut client = Client::connect_with(endpoint, protocol).expect("connect");
    client.set_timeout(Some(PATIENCE)).expect("timeout");
    client
}

fn code(result: Result<Value, ClientError>) -> i32 {
    match result {
        Err(ClientError::Rpc(e)) => e.code,
        other => panic!("expected an error answer, got {other:?}"),
    }
}

/// A TCP client authenticated with `secret`.
fn tcp_as(server: &TestServer, protocol: Protocol, secret: &str) -> Client {
    let tcp = server.endpoints().remove(1);
    let mut client = connect(&tcp, protocol);
    client.authenticate(secret).expect("authenticate");
    client
}

/// A server whose token file names the agent `agent`, plus the owner's.
fn with_agent(policy: Policy) -> TestServer {
    start_real(|c| {
        c.access.tokens = vec![
            NamedToken::owner(AuthToken::new("owner-secret-owner-secret")),
            NamedToken {
                name: "agent".into(),
                token: AuthToken::new(AGENT_SECRET),
            },
        ];
        c.access.policy = policy;
    })
}

#[test]
fn an_embedders_method_is_subject_to_call_and_deny_wins() {
    let server = with_agent(rules(&[
        ("token:agent:call:test.*", false),
        ("token:agent:call:test.fail", true),
    ]));
    for protocol in PROTOCOLS {
        let mut agent = tcp_as(&server, protocol, AGENT_SECRET);
        assert_eq!(
            agent
                .call("test.add", Some(json!([2, 3])))
                .expect("granted"),
            5
        );
        assert_eq!(code(agent.call("test.fail", None)), FORBIDDEN, "deny wins");
        assert_eq!(agent.call("rpc.ping", None).expect("rpc.*"), "pong");
        assert_eq!(code(agent.call("bus.list", None)), FORBIDDEN);
        // The owner's token may do everything.
        let mut owner = tcp_as(&server, protocol, "owner-secret-owner-secret");
        assert_eq!(code(owner.call("test.fail", None)), 4711, "the method ran");
    }
    let plain = with_agent(Policy::default());
    let mut agent = tcp_as(&plain, Protocol::JsonRpc, AGENT_SECRET);
    let error = match agent.call("test.add", Some(json!([1, 1]))) {
        Err(ClientError::Rpc(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(error.code, FORBIDDEN);
    assert!(error.message.contains("token:agent"), "{}", error.message);
    let stats = plain.stats();
    assert_eq!(stats["access"]["forbidden"], 1, "{stats}");
}

#[test]
fn an_anonymous_connection_takes_a_tokens_identity_with_rpc_auth() {
    let server = start_real(|c| {
        c.access.tcp_anonymous = true;
        c.access.tokens = vec![NamedToken {
            name: "agent".into(),
            token: AuthToken::new(AGENT_SECRET),
        }];
        c.access.policy = rules(&[("token:agent:call:test.*", false)]);
    });
    let tcp = server.endpoints().remove(1);
    for protocol in PROTOCOLS {
        let mut client = connect(&tcp, protocol);
        assert_eq!(client.call("rpc.ping", None).expect("anonymous"), "pong");
        assert_eq!(
            code(client.call("test.add", Some(json!([1, 2])))),
            FORBIDDEN
        );
        assert_eq!(
            code(client.call("rpc.auth", Some(json!({"token": "guess"})))),
            UNAUTHORIZED,
            "a wrong token keeps the connection"
        );
        client.authenticate(AGENT_SECRET).expect("authenticate");
        assert_eq!(
            client
                .call("test.add", Some(json!([1, 2])))
                .expect("granted"),
            3
        );
        let me = client.call("rpc.clients", None).expect("rpc.clients");
        assert_eq!(me[0]["identity"], "token:agent", "{me}");
    }
    // No token at all: the identity stays anonymous, and rpc.auth says so.
    let open = start_real(|c| c.access.tcp_anonymous = true);
    assert!(open.running.token_file().is_none(), "no token is generated");
    let mut client = connect(&open.endpoints()[1], Protocol::Mcp1);
    assert_eq!(
        code(client.call("rpc.auth", Some(json!([AGENT_SECRET])))),
        UNAUTHORIZED
    );
    assert_eq!(client.call("rpc.ping", None).expect("still open"), "pong");
}

#[test]
fn rpc_clients_shows_identities_and_others_only_to_admins() {
    let server = with_agent(rules(&[]));
    let unix = server.endpoints().remove(0);
    let mut local = connect(&unix, Protocol::JsonRpc);
    assert_eq!(local.call("rpc.ping", None).expect("ping"), "pong");
    let mut agent = tcp_as(&server, Protocol::Mcp1, AGENT_SECRET);
    let seen = agent.call("rpc.clients", None).expect("rpc.clients");
    let seen = seen.as_array().expect("list");
    assert_eq!(seen.len(), 1, "a non-admin sees itself only: {seen:?}");
    assert_eq!(seen[0]["identity"], "token:agent");
    let all = local.call("rpc.clients", None).expect("rpc.clients");
    let all = all.as_array().expect("list");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter().any(|c| c["identity"] == "token:agent"),
        "{all:?}"
    );
    assert!(
        all.iter()
            .any(|c| c["identity"] == "user:root" || c["identity"] == "uid:0"),
        "{all:?}"
    );
    let admin = with_agent(rules(&[("token:agent:admin", false)]));
    let unix = admin.endpoints().remove(0);
    let mut local = connect(&unix, Protocol::JsonRpc);
    assert_eq!(local.call("rpc.ping", None).expect("ping"), "pong");
    let mut agent = tcp_as(&admin, Protocol::JsonRpc, AGENT_SECRET);
    let seen = agent.call("rpc.clients", None).expect("rpc.clients");
    assert!(seen.as_array().expect("list").len() >= 2, "{seen}");
}

#[test]
fn bus_list_shows_other_providers_details_only_to_admins() {
    for (admin, server) in [
        (
            false,
            with_agent(rules(&[("token:agent:call:bus.list", false)])),
        ),
        (
            true,
            with_agent(rules(&[
                ("token:agent:call:bus.list", false),
                ("token:agent:admin", false),
            ])),
        ),
    ] {
        let mut owner = connect(&server.endpoints()[0], Protocol::Mcp1);
        owner.register(&["vault.get"]).expect("register");
        let mut agent = tcp_as(&server, Protocol::JsonRpc, AGENT_SECRET);
        let list = agent.call("bus.list", None).expect("bus.list");
        let provider = &list["names"][0]["provider"];
        assert_eq!(list["names"][0]["name"], "vault.get", "{list}");
        assert_eq!(provider["transport"], "unix", "{list}");
        assert_eq!(provider.get("pid").is_some(), admin, "{list}");
        assert_eq!(provider.get("uid").is_some(), admin, "{list}");
    }
}

/// Scenario 3 with token identities: a provider allowed `editor.*` but
/// denied `editor.secret` registers `editor.*` and never gets its calls.
#[test]
fn a_pattern_provider_gets_no_call_it_may_not_provide() {
    for protocol in PROTOCOLS {
        let server = with_agent(rules(&[
            ("token:agent:provide:editor.*", false),
            ("token:agent:provide:editor.secret", true),
        ]));
        let mut provider = tcp_as(&server, protocol, AGENT_SECRET);
        assert_eq!(
            code(provider.call("bus.register", Some(json!({"names": ["editor.secret"]})))),
            -32021,
            "the exact name is refused at registration"
        );
        provider
            .register(&["editor.*"])
            .expect("the pattern is allowed");
        let responder = provider.responder();
        let serving = thread::spawn(move || {
            while let Ok(message) = provider.next_message() {
                if let Incoming::Request(call) = message {
                    let answer = json!({"method": call.method, "params": call.params.map(|b| match b { Body::Json(v) => v, Body::Raw(_) => Value::Null })});
                    let _ = responder.respond(call.id, Ok(Body::Json(answer)));
                }
            }
        });
        for endpoint in server.endpoints() {
            for caller_protocol in PROTOCOLS {
                let mut caller = if matches!(endpoint, Endpoint::Tcp(_)) {
                    tcp_as(&server, caller_protocol, "owner-secret-owner-secret")
                } else {
                    connect(&endpoint, caller_protocol)
                };
                let answer = caller
                    .call("editor.open", Some(json!({"file": "a"})))
                    .expect("routed");
                assert_eq!(answer["method"], "editor.open");
                assert_eq!(
                    code(caller.call("editor.secret", Some(json!({"password": "x"})))),
                    NOT_FOUND,
                    "{endpoint} {caller_protocol:?}"
                );
            }
        }
        let stats = server.stats();
        assert_eq!(stats["access"]["forbidden"], 5, "{stats}");
        drop(server);
        let _ = serving.join();
    }
}

#[test]
fn publish_and_subscribe_follow_the_policy_and_patterns_are_filtered() {
    for protocol in PROTOCOLS {
        // A server per protocol: subscriber counts are not disturbed by the
        // previous round's connections closing.
        let server = with_agent(rules(&[
            ("token:agent:subscribe:build.*", false),
            ("token:agent:subscribe:build.secret", true),
            ("token:agent:publish:build.done", false),
        ]));
        let unix = server.endpoints().remove(0);
        let mut agent = tcp_as(&server, protocol, AGENT_SECRET);
        assert_eq!(
            code(agent.call("bus.subscribe", Some(json!({"topics": ["deploy.*"]})))),
            FORBIDDEN
        );
        assert_eq!(
            code(agent.call("bus.subscribe", Some(json!({"topics": ["build.secret"]})))),
            FORBIDDEN
        );
        agent.subscribe(&["build.*"]).expect("allowed pattern");
        assert_eq!(
            code(agent.call("bus.publish", Some(json!({"topic": "build.start"})))),
            FORBIDDEN
        );
        let mut owner = connect(&unix, Protocol::JsonRpc);
        owner.subscribe(&["build.done"]).expect("owner subscribes");
        assert_eq!(
            agent.publish("build.done", json!(1)).expect("granted"),
            2,
            "the owner and itself"
        );
        match owner.next_message().expect("event") {
            Incoming::Event(event) => assert_eq!(event.topic, "build.done"),
            other => panic!("{other:?}"),
        }
        // The owner publishes a denied topic, then an allowed one: the
        // pattern subscriber gets only the second.
        owner
            .publish("build.secret", json!("hidden"))
            .expect("publish");
        owner.publish("build.log", json!("shown")).expect("publish");
        let mut seen = Vec::new();
        while seen.last().map(String::as_str) != Some("build.log") {
            match agent.next_message().expect("event") {
                Incoming::Event(event) => seen.push(event.topic.clone()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            ["build.done", "build.log"],
            "build.secret is not delivered"
        );
        assert!(!seen.contains(&"build.secret".to_string()), "{seen:?}");
    }
}

#[test]
fn failed_authentications_are_throttled_and_counted() {
    let server = with_agent(Policy::default());
    let tcp = server.endpoints().remove(1);
    for _ in 0..5 {
        let mut guess = connect(&tcp, Protocol::JsonRpc);
        assert_eq!(
            code(guess.call("rpc.auth", Some(json!({"token": "guess"})))),
            UNAUTHORIZED
        );
    }
    for protocol in PROTOCOLS {
        let mut right = connect(&tcp, protocol);
        let error = match right.call("rpc.auth", Some(json!({"token": AGENT_SECRET}))) {
            Err(ClientError::Rpc(e)) => e,
            other => panic!("the address is throttled, yet: {other:?}"),
        };
        assert_eq!(error.code, UNAUTHORIZED);
        assert!(
            error.message.contains("too many failed attempts"),
            "{}",
            error.message
        );
    }
    let stats = server.stats();
    assert_eq!(stats["access"]["auth_failures"], 7, "{stats}");
    assert_eq!(stats["access"]["auth_throttled"], 2, "{stats}");
    // The Unix socket is not throttled.
    assert_eq!(
        connect(&server.endpoints()[0], Protocol::Mcp1)
            .call("rpc.ping", None)
            .expect("unix"),
        "pong"
    );
}

fn public_config(token: &str) -> Config {
    Config {
        unix: None,
        tcp: "0.0.0.0:0".parse().ok(),
        workers: 1,
        access: Access {
            tokens: vec![NamedToken {
                name: "remote".into(),
                token: AuthToken::new(token),
            }],
            ..Access::default()
        },
        ..Config::default()
    }
}

#[test]
fn a_short_token_or_anonymous_tcp_off_loopback_stops_the_start() {
    match Server::bind(&public_config("x"), Router::new()) {
        Err(e @ ServerError::ShortToken { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("\"remote\"") && message.contains("16"),
                "{message}"
            );
            assert!(
                !message.contains("\"x\""),
                "the secret is never shown: {message}"
            );
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a 1-byte token on 0.0.0.0 was accepted"),
    }
    // Long enough; without TLS only an unprotected daemon binds it (tests/tls.rs).
    let mut long = public_config("0123456789abcdef");
    long.protected_mode = false;
    assert!(Server::bind(&long, Router::new()).is_ok());
    let mut anonymous = public_config("0123456789abcdef");
    anonymous.access.tcp_anonymous = true;
    assert!(matches!(
        Server::bind(&anonymous, Router::new()),
        Err(ServerError::AnonymousNotLoopback(_))
    ));
    // The daemon says so too.
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "abc\n").expect("token");
    let out = common::junctiond()
        .args(["--unix", "off", "--tcp", "0.0.0.0:0", "--auth-token-file"])
        .arg(&token)
        .stdin(Stdio::null())
        .output()
        .expect("junctiond");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");
}

#[test]
fn bad_rules_stop_the_start_and_name_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        common::junctiond()
            .args(["--unix", "off", "--tcp", "127.0.0.1:0", "--print-config"])
            .args(args)
            .env_remove("JUNCTION_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("junctiond")
    };
    let out = run(&["--allow", "uid:1000:shout:x.*"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("uid:1000:shout:x.*"), "{stderr}");
    let file = dir.path().join("junction.toml");
    std::fs::write(
        &file,
        "[[policy]]\nwho = \"user:no-such-user-here-x\"\nallow = { call = [\"a.*\"] }\n",
    )
    .expect("toml");
    let out = run(&["--config", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[[policy]] #1") && stderr.contains("no-such-user-here-x"),
        "{stderr}"
    );
    // A good file prints back as tables.
    std::fs::write(
        &file,
        "[[policy]]\nwho = \"token:ci\"\nallow = { publish = [\"build.*\"] }\n",
    )
    .expect("toml");
    let out = run(&[
        "--config",
        file.to_str().expect("utf-8"),
        "--deny",
        "*:call:danger.*",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("[[policy]]") && printed.contains("token:ci"),
        "{printed}"
    );
    assert!(printed.contains("danger.*"), "{printed}");
}

/// The `junction` CLI with a clean environment.
fn cli(env_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_junction"));
    cmd.env_remove("JUNCTION_UNIX")
        .env_remove("JUNCTION_AUTH_TOKEN_FILE")
        .env_remove("JUNCTION_PROTO")
        .env("XDG_RUNTIME_DIR", env_dir)
        .args(["--timeout", "20s"])
        .stdin(Stdio::null());
    cmd
}

#[test]
fn junction_tcp_reads_the_generated_token_by_itself() {
    let server = start_real(|_| {});
    let token = server.running.token_file().expect("a generated token");
    assert_eq!(token, server.dir.path().join("junction.sock.token"));
    let mode = std::fs::metadata(token)
        .expect("token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let tcp = server.running.tcp_addr().expect("tcp").to_string();
    for proto in ["jsonrpc", "mcp1"] {
        let out = cli(server.dir.path())
            .args(["--proto", proto, "--tcp", &tcp, "call", "rpc.ping"])
            .output()
            .expect("junction");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"pong\"");
    }
    // Found beside --unix too, whatever the environment says.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let unix = server.running.unix_path().expect("unix").to_path_buf();
    let out = cli(elsewhere.path())
        .args(["--tcp", &tcp, "--unix"])
        .arg(&unix)
        .args(["call", "rpc.ping"])
        .output()
        .expect("junction");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without it the daemon wants the token.
    let out = cli(elsewhere.path())
        .args(["--tcp", &tcp, "call", "rpc.ping"])
        .output()
        .expect("junction");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-32007"));
    // Gone when the server stops.
    let path = token.to_path_buf();
    drop(server);
    assert!(!path.exists());
}

/// True when this process may act as uid 65534; prints why not otherwise.
fn second_user_available() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: running a client as uid {NOBODY} needs root");
    false
}

/// The junction CLI as uid 65534.
fn as_nobody(dir: &Path, args: &[&str]) -> Output {
    cli(dir)
        .uid(NOBODY)
        .gid(NOBODY)
        .args(args)
        .output()
        .expect("junction as nobody")
}

/// A daemon a second local user may reach: socket mode 0666 in a
/// directory others may enter, uid 65534 on the allow-list.
fn shared_socket(adjust: impl FnOnce(&mut Config)) -> TestServer {
    let server = start_real(|c| {
        c.unix_mode = 0o666;
        c.access.allow.uids.push(NOBODY);
        adjust(c);
    });
    std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    server
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Scenario 1: a second local user reaches neither the owner's provider,
/// nor its subscribers, nor arbitrary topics, nor other peers' details, on
/// either transport or protocol, until the policy grants it.
#[test]
fn a_second_local_user_can_do_nothing_unless_granted() {
    if !second_user_available() {
        return;
    }
    let server = shared_socket(|c| c.access.tcp_anonymous = true);
    let dir = server.dir.path();
    let unix = server
        .running
        .unix_path()
        .expect("unix")
        .to_str()
        .expect("utf-8")
        .to_string();
    let tcp = server.running.tcp_addr().expect("tcp").to_string();
    let mut owner = connect(&server.endpoints()[0], Protocol::JsonRpc);
    owner.register(&["vault.get"]).expect("register");
    owner.subscribe(&["build.*"]).expect("subscribe");
    for proto in ["jsonrpc", "mcp1"] {
        for endpoint in [["--unix", unix.as_str()], ["--tcp", tcp.as_str()]] {
            let run = |args: &[&str]| {
                let mut all = vec!["--proto", proto, endpoint[0], endpoint[1]];
                all.extend_from_slice(args);
                as_nobody(dir, &all)
            };
            let what = format!("{proto} {}", endpoint[0]);
            let ping = run(&["call", "rpc.ping"]);
            assert!(ping.status.success(), "{what}: {}", stderr(&ping));
            for args in [
                &["call", "vault.get", r#"{"password":"x"}"#][..],
                &["publish", "build.done", "1"],
                &["subscribe", "secret.*", "--count", "1"],
                &["list"],
            ] {
                let out = run(args);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "{what} {args:?}: {}",
                    stderr(&out)
                );
                assert!(
                    stderr(&out).contains("-32008"),
                    "{what} {args:?}: {}",
                    stderr(&out)
                );
            }
            let clients = run(&["call", "rpc.clients"]);
            let clients: Value = serde_json::from_slice(&clients.stdout).expect("json");
            let list = clients.as_array().expect("list");
            assert_eq!(list.len(), 1, "{what}: only itself: {clients}");
            assert_ne!(list[0]["uid"], 0, "{what}: {clients}");
        }
    }
    let stats = owner.call("rpc.stats", None).expect("stats");
    assert_eq!(stats["bus"]["events_published"], 0, "{stats}");

    // At the default (no anonymous TCP) the generated token is not theirs to read.
    let closed = shared_socket(|_| {});
    let tcp = closed.running.tcp_addr().expect("tcp").to_string();
    assert!(closed.running.token_file().is_some_and(Path::exists));
    for proto in ["jsonrpc", "mcp1"] {
        let out = as_nobody(
            closed.dir.path(),
            &["--proto", proto, "--tcp", &tcp, "call", "rpc.ping"],
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains("-32007"), "{}", stderr(&out));
    }

    // Granted, the same user can.
    let granted = shared_socket(|c| {
        c.access.tcp_anonymous = true;
        c.access.policy = rules(&[
            ("uid:65534:call:vault.*", false),
            ("uid:65534:publish:build.*", false),
            ("anonymous:call:vault.*", false),
        ]);
    });
    let dir = granted.dir.path();
    let unix = granted
        .running
        .unix_path()
        .expect("unix")
        .to_str()
        .expect("utf-8")
        .to_string();
    let tcp = granted.running.tcp_addr().expect("tcp").to_string();
    let mut owner = connect(&granted.endpoints()[0], Protocol::Mcp1);
    owner.register(&["vault.get"]).expect("register");
    let responder = owner.responder();
    let serving = thread::spawn(move || {
        let mut events = 0;
        while let Ok(message) = owner.next_message() {
            match message {
                Incoming::Request(call) => {
                    let _ = responder.respond(call.id, Ok(Body::Json(json!("opened"))));
                }
                Incoming::Event(_) => events += 1,
                _ => {}
            }
        }
        events
    });
    for endpoint in [["--unix", unix.as_str()], ["--tcp", tcp.as_str()]] {
        let out = as_nobody(dir, &[endpoint[0], endpoint[1], "call", "vault.get"]);
        assert!(out.status.success(), "{endpoint:?}: {}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"opened\"");
    }
    let out = as_nobody(dir, &["--unix", &unix, "publish", "build.done", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = as_nobody(dir, &["--tcp", &tcp, "publish", "build.done", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "anonymous was not granted publish"
    );
    drop(granted);
    let _ = serving.join();
}

/// Scenario 3 as the issue found it: `--bus-allow editor.secret=0
/// --bus-allow 'editor.*=65534'`; uid 65534 registers `editor.*` and must
/// not receive `editor.secret` calls.
#[test]
fn a_pattern_does_not_bypass_an_exact_bus_allow_rule() {
    if !second_user_available() {
        return;
    }
    let server = shared_socket(|c| {
        c.bus.policy = junction::bus::policy::Policy::new(vec![
            junction::bus::policy::Rule::parse("editor.secret=0").expect("rule"),
            junction::bus::policy::Rule::parse(&format!("editor.*={NOBODY}")).expect("rule"),
        ]);
    });
    let unix = server
        .running
        .unix_path()
        .expect("unix")
        .to_str()
        .expect("utf-8")
        .to_string();
    let mut provider = cli(server.dir.path())
        .uid(NOBODY)
        .gid(NOBODY)
        .args([
            "--unix", &unix, "provide", "editor.*", "--", "sh", "-c", "cat",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("provider");
    let mut owner = connect(&server.endpoints()[0], Protocol::JsonRpc);
    let mut registered = false;
    for _ in 0..400 {
        let list = owner.call("bus.list", None).expect("bus.list");
        if list["names"]
            .as_array()
            .is_some_and(|n| n.iter().any(|e| e["name"] == "editor.*"))
        {
            registered = true;
            break;
        }
        thread::sleep(Duration::from_millis(25));
    }
    assert!(registered, "uid {NOBODY} could not register editor.*");
    for protocol in PROTOCOLS {
        let mut caller = connect(&server.endpoints()[0], protocol);
        assert_eq!(
            caller
                .call("editor.open", Some(json!({"file": "a"})))
                .expect("routed"),
            json!({"file": "a"})
        );
        assert_eq!(
            code(caller.call("editor.secret", Some(json!({"password": "hunter2"})))),
            NOT_FOUND
        );
    }
    let _ = provider.kill();
    let _ = provider.wait();
}
