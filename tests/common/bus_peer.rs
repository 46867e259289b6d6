//! A bus peer over a raw socket in either protocol, independent of the
//! library client: it sends calls and reads whatever the daemon sends,
//! including the requests, cancels and events a provider or subscriber gets.

use junction::Protocol;
use junction::client::Endpoint;
use serde_json::{Value, json};

use super::{Frame, Raw, TestServer, mcp1_frame, mcp1_request};

/// Every (transport, protocol) a peer can use.
pub fn kinds(server: &TestServer) -> Vec<(Endpoint, Protocol)> {
    let mut out = Vec::new();
    for endpoint in server.endpoints() {
        for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
            out.push((endpoint.clone(), protocol));
        }
    }
    out
}

/// An error as a caller sees it: code, message, data.
pub type WireError = (i32, String, Option<Value>);

/// Anything the daemon sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// A call forwarded to this provider.
    Request {
        id: u32,
        method: String,
        params: Option<Value>,
    },
    /// A notification: forwarded, or a `bus.event`.
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A forwarded call will not be answered to anyone.
    Cancel { id: u32, reason: String },
    /// An answer to one of this peer's calls (JSON-RPC id as sent).
    Response {
        id: Value,
        result: Result<Value, WireError>,
    },
    /// An MCP1 answer with the RAW flag.
    RawResponse { id: u32, bytes: Vec<u8> },
    /// An MCP1 forwarded request with a raw body.
    RawRequest {
        id: u32,
        method: String,
        bytes: Vec<u8>,
    },
}

/// One connection to the daemon.
pub struct BusPeer {
    raw: Raw,
    protocol: Protocol,
}

impl BusPeer {
    pub fn connect(endpoint: &Endpoint, protocol: Protocol) -> BusPeer {
        BusPeer {
            raw: Raw::connect(endpoint),
            protocol,
        }
    }

    /// Calls and waits for the answer (nothing else may arrive meanwhile).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, WireError> {
        self.send_request(9_000_001, method, Some(params));
        self.read_response(9_000_001)
    }

    pub fn send_request(&mut self, id: u32, method: &str, params: Option<Value>) {
        match self.protocol {
            Protocol::JsonRpc => {
                let mut request = json!({"jsonrpc": "2.0", "id": id, "method": method});
                if let Some(params) = params {
                    request["params"] = params;
                }
                self.raw.send(format!("{request}\n").as_bytes());
            }
            Protocol::Mcp1 => {
                let body = params.map(|p| p.to_string()).unwrap_or_default();
                self.raw
                    .send(&mcp1_request(id, method, body.as_bytes(), false));
            }
        }
    }

    pub fn send_notification(&mut self, method: &str, params: Option<Value>) {
        match self.protocol {
            Protocol::JsonRpc => {
                let mut note = json!({"jsonrpc": "2.0", "method": method});
                if let Some(params) = params {
                    note["params"] = params;
                }
                self.raw.send(format!("{note}\n").as_bytes());
            }
            Protocol::Mcp1 => {
                let body = params.map(|p| p.to_string()).unwrap_or_default();
                let payload = super::mcp1_call(method, body.as_bytes());
                self.raw.send(&mcp1_frame(1, 3, 0, 0, &payload));
            }
        }
    }

    /// An MCP1 request with a raw body.
    pub fn send_raw_request(&mut self, id: u32, method: &str, bytes: &[u8]) {
        self.raw.send(&mcp1_request(id, method, bytes, true));
    }

    /// An MCP1 request with this exact (non-raw) body.
    pub fn send_mcp1_body(&mut self, id: u32, method: &str, body: &[u8]) {
        self.raw.send(&mcp1_request(id, method, body, false));
    }

    /// Answers a forwarded call.
    pub fn respond(&mut self, id: u32, result: Result<Value, (i32, &str, Option<Value>)>) {
        match (self.protocol, result) {
            (Protocol::JsonRpc, Ok(value)) => {
                let line = json!({"jsonrpc": "2.0", "id": id, "result": value});
                self.raw.send(format!("{line}\n").as_bytes());
            }
            (Protocol::JsonRpc, Err((code, message, data))) => {
                let mut error = json!({"code": code, "message": message});
                if let Some(data) = data {
                    error["data"] = data;
                }
                let line = json!({"jsonrpc": "2.0", "id": id, "error": error});
                self.raw.send(format!("{line}\n").as_bytes());
            }
            (Protocol::Mcp1, Ok(value)) => {
                self.raw
                    .send(&mcp1_frame(1, 2, 0, id, value.to_string().as_bytes()));
            }
            (Protocol::Mcp1, Err((code, message, data))) => {
                let mut payload = code.to_le_bytes().to_vec();
                payload.extend_from_slice(&(message.len() as u16).to_le_bytes());
                payload.extend_from_slice(message.as_bytes());
                if let Some(data) = data {
                    payload.extend_from_slice(data.to_string().as_bytes());
                }
                self.raw.send(&mcp1_frame(1, 4, 0, id, &payload));
            }
        }
    }

    /// Answers a forwarded call with a raw body (MCP1).
    pub fn respond_raw(&mut self, id: u32, bytes: &[u8]) {
        self.raw.send(&mcp1_frame(1, 2, 1, id, bytes));
    }

    pub fn shutdown_write(&self) {
        self.raw.shutdown_write();
    }

    /// True once the daemon has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        self.raw.is_closed()
    }

    /// The answer to call `id` (JSON result or error).
    pub fn read_response(&mut self, id: u32) -> Result<Value, WireError> {
        match self.read() {
            Msg::Response { id: got, result } => {
                assert_eq!(
                    got,
                    json!(id),
                    "the answer carries the caller's own id: {result:?}"
                );
                result
            }
            other => panic!("expected the answer to {id}, got {other:?}"),
        }
    }

    /// A raw answer to call `id` (MCP1).
    pub fn read_raw_response(&mut self, id: u32) -> Vec<u8> {
        match self.read() {
            Msg::RawResponse { id: got, bytes } if got == id => bytes,
            other => panic!("expected a raw answer to {id}, got {other:?}"),
        }
    }

    /// A forwarded request with a raw body (MCP1).
    pub fn read_raw_request(&mut self, method: &str) -> (u32, Vec<u8>) {
        match self.read() {
            Msg::RawRequest {
                id,
                method: got,
                bytes,
            } if got == method => (id, bytes),
            other => panic!("expected a raw request of {method}, got {other:?}"),
        }
    }

    /// The next thing the daemon sends.
    pub fn read(&mut self) -> Msg {
        match self.protocol {
            Protocol::JsonRpc => json_msg(self.raw.json()),
            Protocol::Mcp1 => mcp1_msg(self.raw.frame()),
        }
    }
}

fn json_msg(v: Value) -> Msg {
    if let Some(method) = v["method"].as_str() {
        let params = v.get("params").cloned();
        if method == "bus.cancel" {
            let p = params.expect("cancel params");
            return Msg::Cancel {
                id: p["id"].as_u64().expect("id") as u32,
                reason: p["reason"].as_str().expect("reason").into(),
            };
        }
        return match v.get("id") {
            Some(id) => Msg::Request {
                id: id.as_u64().expect("the daemon's ids are numbers") as u32,
                method: method.into(),
                params,
            },
            None => Msg::Notification {
                method: method.into(),
                params,
            },
        };
    }
    let result = match v.get("error") {
        Some(e) => Err((
            e["code"].as_i64().expect("code") as i32,
            e["message"].as_str().expect("message").into(),
            e.get("data").cloned(),
        )),
        None => Ok(v["result"].clone()),
    };
    Msg::Response {
        id: v["id"].clone(),
        result,
    }
}

fn mcp1_msg(frame: Frame) -> Msg {
    let raw = frame.flags & 1 == 1;
    match frame.kind {
        1 | 3 => {
            let len = usize::from(u16::from_le_bytes([frame.payload[0], frame.payload[1]]));
            let method = String::from_utf8(frame.payload[2..2 + len].to_vec()).expect("utf8");
            let body = &frame.payload[2 + len..];
            if raw {
                return Msg::RawRequest {
                    id: frame.id,
                    method,
                    bytes: body.to_vec(),
                };
            }
            let params =
                (!body.is_empty()).then(|| serde_json::from_slice(body).expect("json body"));
            if frame.kind == 1 {
                Msg::Request {
                    id: frame.id,
                    method,
                    params,
                }
            } else {
                Msg::Notification { method, params }
            }
        }
        2 if raw => Msg::RawResponse {
            id: frame.id,
            bytes: frame.payload,
        },
        2 => Msg::Response {
            id: json!(frame.id),
            result: Ok(frame.json()),
        },
        4 => {
            let e = junction_proto::mcp1::parse_error_payload(&frame.payload).expect("error");
            Msg::Response {
                id: json!(frame.id),
                result: Err((
                    e.code,
                    e.message.into(),
                    e.data.map(|d| serde_json::from_slice(d).expect("data")),
                )),
            }
        }
        5 => Msg::Cancel {
            id: frame.id,
            reason: frame.json()["reason"].as_str().expect("reason").into(),
        },
        kind => panic!("unexpected frame kind {kind}"),
    }
}
