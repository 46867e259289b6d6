//! Typed introspection over real sockets: `rpc.discover` answers an OpenRPC
//! 1.3 document (the daemon's methods, the bus's, an embedder's with the
//! schemas it attached, and names providers registered with schemas) that
//! validates against the OpenRPC meta-schema (tests/data/openrpc/, checked
//! with Python's jsonschema); `junction describe` prints one method.

mod common;

use std::path::Path;

use common::bus_peer::{BusPeer, kinds};
use common::{TestServer, test_config, test_router};
use junction::Protocol;
use junction::Server;
use junction::bus::policy::{Policy, Rule};
use serde_json::{Value, json};

/// The test server, with schemas attached to test.add through the Router API.
fn start() -> TestServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(&dir);
    config.bus.policy = Policy::new(vec![Rule::parse("*=any,tcp").expect("rule")]);
    let mut router = test_router();
    router
        .schema(
            "test.add",
            Some(json!({
                "type": "array",
                "prefixItems": [{"type": "integer", "title": "a"}, {"type": "integer", "title": "b"}],
                "minItems": 2
            })),
            Some(json!({"type": "integer"})),
        )
        .expect("attach");
    assert!(
        router.schema("nope", None, None).is_err(),
        "only registered names"
    );
    let server = Server::bind(&config, router).expect("bind");
    TestServer {
        running: server.spawn().expect("spawn"),
        dir,
    }
}

fn method<'a>(document: &'a Value, name: &str) -> &'a Value {
    document["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the document"))
}

/// Runs validate.py on `document`: Ok, or the errors it printed.
fn validate(python: &Path, document: &Value, dir: &Path) -> Result<(), String> {
    let file = dir.join("document.json");
    std::fs::write(&file, document.to_string()).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/openrpc/validate.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .expect("run python");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn discover_lists_every_method_with_schemas_on_every_transport_and_protocol() {
    let server = start();
    let mut provider = BusPeer::connect(&server.endpoints()[0], Protocol::Mcp1);
    let registered = provider.call(
        "bus.register",
        json!({
            "names": ["calc.*", "plain.x"],
            "schemas": {"calc.*": {
                "description": "a calculator",
                "params": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
                "result": {"type": "number"}
            }}
        }),
    );
    assert_eq!(registered, Ok(json!({"names": ["calc.*", "plain.x"]})));
    for (endpoint, protocol) in kinds(&server) {
        let mut peer = BusPeer::connect(&endpoint, protocol);
        let document = peer.call("rpc.discover", json!({})).expect("discover");
        assert_eq!(document["openrpc"], "1.3.2");
        assert_eq!(document["info"]["title"], "Junction");
        let stats = method(&document, "rpc.stats");
        assert_eq!(stats["params"], json!([]));
        assert!(
            stats["result"]["schema"]["properties"]["methods"].is_object(),
            "{stats}"
        );
        let slowlog = method(&document, "rpc.slowlog");
        assert_eq!(slowlog["paramStructure"], "by-name");
        assert_eq!(slowlog["params"][0]["name"], "count");
        let add = method(&document, "test.add");
        assert_eq!(add["paramStructure"], "by-position");
        assert_eq!(
            add["params"][1],
            json!({"name": "b", "schema": {"type": "integer", "title": "b"}, "required": true})
        );
        assert_eq!(add["result"]["schema"], json!({"type": "integer"}));
        assert_eq!(
            method(&document, "bus.publish")["params"][0]["name"],
            "data"
        );
        let calc = method(&document, "calc.*");
        assert_eq!(calc["description"], "a calculator");
        assert_eq!(calc["x-junction-mode"], "routed");
        assert_eq!(
            calc["params"][0],
            json!({"name": "x", "schema": {"type": "number"}, "required": true})
        );
        assert_eq!(method(&document, "plain.x")["params"], json!([]));
        assert!(method(&document, "plain.x").get("result").is_none());
    }
    // The provider leaves: its names and schemas go.
    drop(provider);
    let gone = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let mut peer = BusPeer::connect(&server.endpoints()[0], Protocol::JsonRpc);
        let document = peer.call("rpc.discover", json!({})).expect("discover");
        !document.to_string().contains("calc.*")
    });
    assert!(gone);
}

#[test]
fn the_document_validates_against_the_openrpc_meta_schema() {
    let Some(python) = common::ci_python(&["jsonschema", "referencing"]) else {
        return;
    };
    let server = start();
    let mut provider = BusPeer::connect(&server.endpoints()[0], Protocol::JsonRpc);
    let schemas = json!({"svc.*": {"params": {"type": "object", "properties": {"q": {"type": "string"}}}, "result": true}});
    assert!(
        provider
            .call(
                "bus.register",
                json!({"names": ["svc.*", "other"], "schemas": schemas})
            )
            .is_ok()
    );
    let mut peer = BusPeer::connect(&server.endpoints()[1], Protocol::Mcp1);
    let document = peer.call("rpc.discover", json!({})).expect("discover");
    validate(&python, &document, server.dir.path()).expect("the document is valid OpenRPC");

    // The check can fail: a document without info, or with a bad schema, does not pass.
    let mut broken = document.clone();
    broken.as_object_mut().expect("object").remove("info");
    assert!(validate(&python, &broken, server.dir.path()).is_err());
    let mut broken = document.clone();
    broken["methods"][0]["params"] = json!([{"name": "x", "schema": {"type": 12}}]);
    assert!(validate(&python, &broken, server.dir.path()).is_err());
}

#[test]
fn a_bad_provided_schema_is_refused_and_registers_nothing() {
    let server = start();
    for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
        let mut provider = BusPeer::connect(&server.endpoints()[0], protocol);
        for schemas in [
            json!({"a.b": {"params": 3}}),
            json!({"a.b": {"bogus": {}}}),
            json!({"not.registered": {}}),
            json!({"a.b": {"params": {"description": "x".repeat(70_000)}}}),
        ] {
            let error = provider
                .call(
                    "bus.register",
                    json!({"names": ["a.b"], "schemas": schemas}),
                )
                .expect_err("refused");
            assert_eq!(error.0, -32602, "{error:?}");
        }
        let list = provider.call("bus.list", json!({})).expect("list");
        assert_eq!(list["names"], json!([]), "nothing registered");
    }
}

#[test]
fn junction_describe_prints_a_methods_schema() {
    let server = start();
    let mut provider = BusPeer::connect(&server.endpoints()[0], Protocol::Mcp1);
    let schemas = json!({"calc.*": {"result": {"type": "number"}}});
    assert!(
        provider
            .call(
                "bus.register",
                json!({"names": ["calc.*"], "schemas": schemas})
            )
            .is_ok()
    );
    let unix = server.running.unix_path().expect("unix").to_path_buf();
    let tcp = server.running.tcp_addr().expect("tcp").to_string();
    let describe = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
            .env_remove("JUNCTION_PROTO")
            .arg("--unix")
            .arg(&unix)
            .args(args)
            .output()
            .expect("run junction");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = describe(&["describe", "rpc.slowlog"]);
    assert_eq!(code, Some(0));
    let entry: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(entry["name"], "rpc.slowlog");
    assert_eq!(entry["params"][0]["schema"]["type"], "integer");
    let (code, out) = describe(&["--tcp", &tcp, "--proto", "mcp1", "describe", "calc.add"]);
    assert_eq!(code, Some(0), "{out}");
    let entry: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(entry["name"], "calc.*", "a pattern covers the name");
    assert_eq!(entry["result"]["schema"], json!({"type": "number"}));
    let (code, _) = describe(&["describe", "no.such"]);
    assert_eq!(code, Some(1));
    let (code, out) = describe(&["describe"]);
    assert_eq!(code, Some(0));
    let document: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(document["openrpc"], "1.3.2");
}
