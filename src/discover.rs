//! Typed introspection: `rpc.discover` answers an OpenRPC 1.3 document of
//! every method the daemon serves (its own, the bus's, the embedder's and
//! the names clients provide), with JSON Schemas for params and results.
//!
//! A method's params are described by one JSON Schema of the whole params
//! value. An object schema with `properties` becomes one content
//! descriptor per property (`paramStructure: by-name`), an array schema
//! with `prefixItems` one per position (`by-position`); any other schema
//! is kept whole under the extension `x-params-schema`, with no
//! descriptors. A method without a result schema has none in the document.

use serde_json::{Map, Value, json};

use crate::router::{Context, Mode};

/// The OpenRPC version of the document.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// The most bytes of JSON a provider's schema for one name may take.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;

/// A method's schemas as embedders and providers give them: `params` (a
/// JSON Schema of the params value), `result` (of the result), both optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodSchema {
    /// The params value.
    pub params: Option<Value>,
    /// The result.
    pub result: Option<Value>,
}

impl MethodSchema {
    /// Reads a provider's `{"params": ..., "result": ..., "description": ...}`
    /// (each optional): schemas must be objects or booleans.
    pub fn from_provided(value: &Value) -> Result<(MethodSchema, Option<String>), String> {
        let Some(object) = value.as_object() else {
            return Err(
                "a schema entry must be an object {\"params\": ..., \"result\": ...}".into(),
            );
        };
        if let Some(bad) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "params" | "result" | "description"))
        {
            return Err(format!(
                "unknown schema member {bad:?}: use params, result and description"
            ));
        }
        if value.to_string().len() > MAX_SCHEMA_BYTES {
            return Err(format!(
                "a name's schema may take at most {MAX_SCHEMA_BYTES} bytes of JSON"
            ));
        }
        let schema = |key: &str| match object.get(key) {
            None => Ok(None),
            Some(s @ (Value::Object(_) | Value::Bool(_))) => Ok(Some(s.clone())),
            Some(_) => Err(format!(
                "{key} must be a JSON Schema (an object or a boolean)"
            )),
        };
        let description = match object.get("description") {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => return Err("description must be a string".into()),
        };
        Ok((
            MethodSchema {
                params: schema("params")?,
                result: schema("result")?,
            },
            description,
        ))
    }
}

/// One method as the document shows it.
struct Entry<'a> {
    name: &'a str,
    description: &'a str,
    mode: &'a str,
    schema: Option<&'a MethodSchema>,
    extra: Option<(&'a str, Value)>,
}

/// The params schema as OpenRPC content descriptors, and their structure.
fn descriptors(params: &Value) -> Option<(Vec<Value>, &'static str)> {
    if let Some(properties) = params.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = params
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let list = properties
            .iter()
            .map(|(name, schema)| {
                let mut d = json!({"name": name, "schema": schema});
                if required.contains(&name.as_str()) {
                    d["required"] = Value::Bool(true);
                }
                if let Some(text) = schema.get("description").and_then(Value::as_str) {
                    d["description"] = Value::from(text);
                }
                d
            })
            .collect();
        return Some((list, "by-name"));
    }
    if let Some(items) = params.get("prefixItems").and_then(Value::as_array) {
        let min = params.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let list = items
            .iter()
            .enumerate()
            .map(|(i, schema)| {
                let name = schema
                    .get("title")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("arg{i}"), str::to_string);
                json!({"name": name, "schema": schema, "required": (i as u64) < min})
            })
            .collect();
        return Some((list, "by-position"));
    }
    None
}

fn method_object(entry: &Entry<'_>) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), entry.name.into());
    if !entry.description.is_empty() {
        m.insert("description".into(), entry.description.into());
    }
    let mut params = Vec::new();
    if let Some(schema) = entry.schema.and_then(|s| s.params.as_ref()) {
        match descriptors(schema) {
            Some((list, structure)) => {
                params = list;
                m.insert("paramStructure".into(), structure.into());
            }
            None => {
                m.insert("x-params-schema".into(), schema.clone());
            }
        }
    }
    m.insert("params".into(), Value::Array(params));
    if let Some(result) = entry.schema.and_then(|s| s.result.as_ref()) {
        m.insert("result".into(), json!({"name": "result", "schema": result}));
    }
    m.insert("x-junction-mode".into(), entry.mode.into());
    if let Some((key, value)) = &entry.extra {
        m.insert((*key).into(), value.clone());
    }
    Value::Object(m)
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Inline => "inline",
        Mode::Pooled => "pooled",
        Mode::Loop => "loop",
    }
}

/// The OpenRPC document of everything `context` serves now.
pub fn document(context: &Context) -> Value {
    let mut methods = Vec::new();
    for method in context.router().methods() {
        methods.push(method_object(&Entry {
            name: method.name(),
            description: method.description(),
            mode: mode_name(method.mode()),
            schema: Some(method.schema()),
            extra: None,
        }));
    }
    for (name, description) in crate::bus::METHODS {
        let schema = bus_schema(name);
        methods.push(method_object(&Entry {
            name,
            description,
            mode: "inline",
            schema: Some(&schema),
            extra: None,
        }));
    }
    let directory = match context.directory().read() {
        Ok(names) => names.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let provided = context.observe().provided_schemas();
    for (name, provider) in &directory {
        let (schema, description) = provided
            .get(name)
            .map(|(s, d)| (Some(s), d.as_deref()))
            .unwrap_or((None, None));
        methods.push(method_object(&Entry {
            name,
            description: description.unwrap_or(""),
            mode: "routed",
            schema,
            extra: Some(("x-provided-by", Value::from(provider.as_str()))),
        }));
    }
    methods.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "Junction",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The methods this junctiond serves: its own (rpc.*), the service bus's (bus.*), the embedder's, and the names clients provide (x-junction-mode: routed). Every method is callable over JSON-RPC 2.0 and MCP1.",
        },
        "methods": methods,
    })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}

fn schema(params: Option<Value>, result: Option<Value>) -> MethodSchema {
    MethodSchema { params, result }
}

/// The schemas of the `bus.*` methods (proto/bus.md).
fn bus_schema(name: &str) -> MethodSchema {
    let names = object(json!({"names": strings()}), &["names"]);
    let topics = object(json!({"topics": strings()}), &["topics"]);
    match name {
        "bus.register" => schema(
            Some(object(
                json!({
                    "names": strings(),
                    "schemas": {
                        "type": "object",
                        "description": "optional: per name, {params, result, description} for rpc.discover",
                        "additionalProperties": {"type": "object"}
                    }
                }),
                &["names"],
            )),
            Some(names),
        ),
        "bus.unregister" => schema(Some(names.clone()), Some(names)),
        "bus.subscribe" | "bus.unsubscribe" => schema(Some(topics.clone()), Some(topics)),
        "bus.publish" => schema(
            Some(object(
                json!({"topic": {"type": "string"}, "data": {}}),
                &["topic"],
            )),
            Some(object(
                json!({"subscribers": {"type": "integer", "minimum": 0}}),
                &["subscribers"],
            )),
        ),
        "bus.list" => schema(
            None,
            Some(object(
                json!({
                    "names": {"type": "array", "items": {"type": "object", "properties": {
                        "name": {"type": "string"}, "provider": {}, "pending": {"type": "integer"}}}},
                    "topics": {"type": "array", "items": {"type": "object", "properties": {
                        "topic": {"type": "string"}, "subscribers": {"type": "integer"}}}}
                }),
                &["names", "topics"],
            )),
        ),
        _ => MethodSchema::default(),
    }
}

/// The schema of one method's counters in `rpc.stats`'s `methods`.
fn method_stats_schema() -> Value {
    let counts = json!({"type": "array", "items": {"type": "integer", "minimum": 0}});
    object(
        json!({
            "calls": {"type": "integer", "minimum": 0},
            "errors": {"type": "integer", "minimum": 0},
            "latency": object(json!({
                "buckets_us": counts.clone(),
                "counts": counts,
                "sum_us": {"type": "integer", "minimum": 0},
                "count": {"type": "integer", "minimum": 0}
            }), &["buckets_us", "counts", "sum_us", "count"])
        }),
        &["calls", "errors", "latency"],
    )
}

/// The schemas of the daemon's own `rpc.*` methods.
pub fn builtin_schema(name: &str) -> MethodSchema {
    let int = json!({"type": "integer", "minimum": 0});
    match name {
        "rpc.ping" => schema(None, Some(json!({"type": "string", "const": "pong"}))),
        "rpc.echo" => schema(
            Some(json!({"description": "any params; returned unchanged"})),
            Some(json!({})),
        ),
        "rpc.stats" => schema(
            None,
            Some(json!({
                "type": "object",
                "required": ["uptime_secs", "backend", "workers", "connections", "protocols", "methods"],
                "properties": {
                    "uptime_secs": {"type": "number"},
                    "backend": {"type": "string"},
                    "workers": int,
                    "draining": {"type": "boolean"},
                    "connections": {"type": "object"},
                    "protocols": {"type": "object"},
                    "bytes_in": int,
                    "bytes_out": int,
                    "memory": {"type": "object"},
                    "access": {"type": "object"},
                    "bus": {"type": "object"},
                    "gate": {"type": "object"},
                    "methods": {"type": "object", "additionalProperties": method_stats_schema()}
                }
            })),
        ),
        "rpc.methods" => schema(
            None,
            Some(json!({"type": "array", "items": object(json!({
                "name": {"type": "string"},
                "description": {"type": "string"},
                "mode": {"enum": ["inline", "pooled", "loop", "routed"]}
            }), &["name", "description", "mode"])})),
        ),
        "rpc.clients" => schema(
            None,
            Some(
                json!({"type": "array", "items": {"type": "object", "required": ["id", "transport", "identity"], "properties": {
                    "id": int, "transport": {"enum": ["unix", "tcp"]},
                    "protocol": {"enum": ["jsonrpc", "mcp1", null]},
                    "identity": {"type": "string"}, "authenticated": {"type": "boolean"},
                    "pid": {"type": "integer"}, "uid": int, "gid": int, "address": {"type": "string"},
                    "age_secs": {"type": "number"}, "idle_secs": {"type": "number"},
                    "in_flight": int, "output_bytes": int, "paused": {"type": "boolean"}
                }}}),
            ),
        ),
        "rpc.reload" => schema(
            None,
            Some(object(
                json!({"reloaded": strings(), "restart_needed": strings(), "generation": int}),
                &["reloaded", "restart_needed", "generation"],
            )),
        ),
        "rpc.auth" => schema(
            Some(object(json!({"token": {"type": "string"}}), &["token"])),
            Some(json!({"type": "boolean", "const": true})),
        ),
        "rpc.slowlog" => schema(
            Some(object(
                json!({"count": {"type": "integer", "minimum": 0, "description": "only the newest N entries"}}),
                &[],
            )),
            Some(object(
                json!({
                    "threshold_us": int,
                    "max_len": int,
                    "entries": {"type": "array", "items": object(json!({
                        "id": int, "time": {"type": "number"}, "method": {"type": "string"},
                        "identity": {"type": "string"}, "conn": int,
                        "protocol": {"enum": ["jsonrpc", "mcp1"]}, "duration_us": int
                    }), &["id", "time", "method", "identity", "conn", "protocol", "duration_us"])}
                }),
                &["threshold_us", "max_len", "entries"],
            )),
        ),
        "rpc.slowlog.reset" => schema(None, Some(int)),
        "rpc.monitor" => schema(
            Some(object(
                json!({"patterns": {"type": "array", "items": {"type": "string"}, "description": "names or prefix.* patterns; all when absent"}}),
                &[],
            )),
            Some(object(
                json!({"monitoring": strings(), "topic": {"type": "string", "const": "rpc.monitor"}}),
                &["monitoring", "topic"],
            )),
        ),
        "rpc.discover" => schema(
            None,
            Some(json!({
                "type": "object",
                "description": "an OpenRPC 1.3 document",
                "required": ["openrpc", "info", "methods"],
                "properties": {"openrpc": {"type": "string"}, "info": {"type": "object"}, "methods": {"type": "array"}}
            })),
        ),
        _ => MethodSchema::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_params_become_named_descriptors_and_arrays_positional_ones() {
        let (list, structure) = descriptors(&json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
            "required": ["a"]
        }))
        .expect("by name");
        assert_eq!(structure, "by-name");
        assert_eq!(
            list[0],
            json!({"name": "a", "schema": {"type": "integer"}, "required": true})
        );
        assert_eq!(list[1], json!({"name": "b", "schema": {"type": "string"}}));
        let (list, structure) = descriptors(&json!({
            "type": "array", "prefixItems": [{"type": "integer", "title": "x"}, {}], "minItems": 1
        }))
        .expect("by position");
        assert_eq!(structure, "by-position");
        assert_eq!(list[0]["name"], "x");
        assert_eq!(
            list[1],
            json!({"name": "arg1", "schema": {}, "required": false})
        );
        assert!(descriptors(&json!(true)).is_none());
    }

    #[test]
    fn provided_schemas_are_checked() {
        let ok =
            MethodSchema::from_provided(&json!({"params": {"type": "object"}, "description": "d"}));
        assert_eq!(ok.map(|(s, d)| (s.result, d)), Ok((None, Some("d".into()))));
        assert!(MethodSchema::from_provided(&json!({"params": 3})).is_err());
        assert!(MethodSchema::from_provided(&json!({"nope": {}})).is_err());
        assert!(MethodSchema::from_provided(&json!([])).is_err());
    }
}
