//! How the client puts calls and answers on the wire and reads what the
//! daemon sends back, per protocol: responses to our calls, and the
//! requests, notifications and (MCP1) CANCEL frames the daemon originates
//! when this connection provides methods or subscribes to topics.

use std::io::{self, BufRead, Read, Write};

use serde_json::{Value, json};

use super::{Body, ClientError, Response};
use junction_proto::Params;
use junction_proto::Protocol;
use junction_proto::RpcError;
use junction_proto::mcp1::{self, FLAG_RAW, HEADER_LEN, Header, Kind};

/// The MCP1 CANCEL kind: sent by the daemon only (proto/bus.md section 3),
/// so the shared frame checker, which serves the daemon, refuses it.
const KIND_CANCEL: u8 = 0x05;

/// One message read from the daemon, before the bus meaning of
/// notifications (events, cancels) is looked at.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A response to a call.
    Response(Response),
    /// A JSON-RPC batch answer.
    Batch(Vec<Response>),
    /// An MCP1 PONG.
    Pong { id: u32, payload: Vec<u8> },
    /// A request forwarded by the daemon (we provide its method).
    Request {
        id: Value,
        method: String,
        params: Option<Body>,
    },
    /// A notification from the daemon (`bus.event`, `bus.cancel`, or a
    /// forwarded notification of a method we provide).
    Notification {
        method: String,
        params: Option<Body>,
    },
    /// An MCP1 CANCEL frame: the call `id` will never be answered to anyone.
    Cancel { id: u32, reason: String },
}

/// Writes a call (`id` Some) or notification.
pub(crate) fn write_call(
    protocol: Protocol,
    out: &mut impl Write,
    id: Option<u64>,
    method: &str,
    params: Option<&Body>,
    scratch: &mut Vec<u8>,
) -> Result<(), ClientError> {
    match protocol {
        Protocol::JsonRpc => {
            let message = jsonrpc_message(id, method, params)?;
            serde_json::to_writer(&mut *out, &message).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
        }
        Protocol::Mcp1 => {
            if method.is_empty() || method.len() > mcp1::MAX_METHOD {
                return Err(ClientError::Usage(format!(
                    "MCP1 method names are 1 to {} bytes",
                    mcp1::MAX_METHOD
                )));
            }
            scratch.clear();
            let id = id.map(|id| id as u32);
            match params {
                None => mcp1::write_call(scratch, id, method, b"", false),
                Some(Body::Raw(bytes)) => mcp1::write_call(scratch, id, method, bytes, true),
                Some(Body::Json(value)) => {
                    let text = serde_json::to_vec(value).map_err(io::Error::from)?;
                    mcp1::write_call(scratch, id, method, &text, false)
                }
            }
            out.write_all(scratch)?;
        }
    }
    Ok(())
}

/// The JSON-RPC object of a call or notification.
pub(crate) fn jsonrpc_message(
    id: Option<u64>,
    method: &str,
    params: Option<&Body>,
) -> Result<Value, ClientError> {
    let mut message = json!({"jsonrpc": "2.0", "method": method});
    match params {
        None => {}
        Some(Body::Json(value)) => message["params"] = value.clone(),
        Some(Body::Raw(_)) => {
            return Err(ClientError::Usage(
                "raw bodies need MCP1 (--proto mcp1); JSON-RPC carries JSON only".into(),
            ));
        }
    }
    if let Some(id) = id {
        message["id"] = json!(id);
    }
    Ok(message)
}

/// Writes an MCP1 PING.
pub(crate) fn write_ping(out: &mut impl Write, id: u32, payload: &[u8]) -> Result<(), ClientError> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    let length = u32::try_from(payload.len())
        .map_err(|_| ClientError::Usage("ping payload too large".into()))?;
    mcp1::write_header(&mut frame, Kind::Ping, 0, id, length);
    frame.extend_from_slice(payload);
    out.write_all(&frame)?;
    Ok(())
}

/// Reads the next message.
pub(crate) fn read(protocol: Protocol, reader: &mut impl BufRead) -> Result<Inbound, ClientError> {
    match protocol {
        Protocol::JsonRpc => read_jsonrpc(reader),
        Protocol::Mcp1 => read_mcp1(reader),
    }
}

fn read_line(reader: &mut impl BufRead) -> Result<String, ClientError> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(ClientError::Closed(None));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn read_jsonrpc(reader: &mut impl BufRead) -> Result<Inbound, ClientError> {
    let line = read_line(reader)?;
    // A daemon refusing the connection says why in plain text.
    let value: Value =
        serde_json::from_str(&line).map_err(|_| ClientError::Closed(Some(line.clone())))?;
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(parse_jsonrpc_response)
            .collect::<Result<Vec<_>, _>>()
            .map(Inbound::Batch),
        Value::Object(ref object) if object.contains_key("method") => parse_jsonrpc_call(value),
        value => parse_jsonrpc_response(value).map(Inbound::Response),
    }
}

/// A request or notification the daemon sends this connection.
fn parse_jsonrpc_call(value: Value) -> Result<Inbound, ClientError> {
    let Value::Object(mut object) = value else {
        return Err(ClientError::Protocol(format!(
            "not a request object: {value}"
        )));
    };
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        other => {
            return Err(ClientError::Protocol(format!(
                "a request whose method is not a string: {}",
                other.unwrap_or(Value::Null)
            )));
        }
    };
    let params = object.remove("params").map(Body::Json);
    Ok(match object.remove("id") {
        Some(id) => Inbound::Request { id, method, params },
        None => Inbound::Notification { method, params },
    })
}

fn parse_jsonrpc_response(value: Value) -> Result<Response, ClientError> {
    let Value::Object(mut object) = value else {
        return Err(ClientError::Protocol(format!(
            "not a response object: {value}"
        )));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    if let Some(result) = object.remove("result") {
        return Ok(Response {
            id,
            result: Ok(Body::Json(result)),
        });
    }
    let Some(error) = object.remove("error") else {
        return Err(ClientError::Protocol(
            "response has neither result nor error".into(),
        ));
    };
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)");
    let mut rpc = RpcError::new(code as i32, message.to_string());
    rpc.data = error.get("data").cloned();
    Ok(Response {
        id,
        result: Err(rpc),
    })
}

/// The fields of an MCP1 header, read without judging the kind: the client
/// accepts kinds (CANCEL) that the daemon refuses from clients.
struct RawHeader {
    kind: u8,
    flags: u16,
    id: u32,
    length: u32,
}

fn parse_header(bytes: &[u8; HEADER_LEN]) -> Result<RawHeader, ClientError> {
    if bytes[4] != mcp1::VERSION {
        return Err(ClientError::Protocol(format!(
            "MCP1 version {} from the daemon (this client speaks {})",
            bytes[4],
            mcp1::VERSION
        )));
    }
    Ok(RawHeader {
        kind: bytes[5],
        flags: u16::from_le_bytes([bytes[6], bytes[7]]),
        id: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        length: u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
    })
}

fn read_mcp1(reader: &mut impl BufRead) -> Result<Inbound, ClientError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact_or_closed(reader, &mut header[..4])?;
    if &header[..4] != junction_proto::MCP1_MAGIC {
        // Before a protocol is known the daemon refuses in JSON or plain text.
        let rest = read_line(reader).unwrap_or_default();
        let text = format!("{}{rest}", String::from_utf8_lossy(&header[..4]));
        return Err(ClientError::Closed(Some(text)));
    }
    read_exact_or_closed(reader, &mut header[4..])?;
    let header = parse_header(&header)?;
    let mut payload = vec![0u8; header.length as usize];
    read_exact_or_closed(reader, &mut payload)?;
    decode_mcp1(&header, payload)
}

/// Turns one whole MCP1 frame into a message.
fn decode_mcp1(header: &RawHeader, payload: Vec<u8>) -> Result<Inbound, ClientError> {
    if header.kind == KIND_CANCEL {
        return Ok(Inbound::Cancel {
            id: header.id,
            reason: cancel_reason(&payload),
        });
    }
    let Some(kind) = Kind::from_byte(header.kind) else {
        return Err(ClientError::Protocol(format!(
            "unknown MCP1 frame kind {:#04x} from the daemon",
            header.kind
        )));
    };
    let raw = header.flags & FLAG_RAW != 0;
    let id = Value::from(header.id);
    match kind {
        Kind::Response if raw => Ok(Inbound::Response(Response {
            id,
            result: Ok(Body::Raw(payload)),
        })),
        Kind::Response => {
            let value = serde_json::from_slice(&payload)
                .map_err(|e| ClientError::Protocol(format!("response body is not JSON: {e}")))?;
            Ok(Inbound::Response(Response {
                id,
                result: Ok(Body::Json(value)),
            }))
        }
        Kind::Error => {
            let error = mcp1::parse_error_payload(&payload)
                .ok_or_else(|| ClientError::Protocol("malformed ERROR payload".into()))?;
            Ok(Inbound::Response(Response {
                id,
                result: Err(error.to_rpc()),
            }))
        }
        Kind::Pong => Ok(Inbound::Pong {
            id: header.id,
            payload,
        }),
        Kind::Request | Kind::Notification => decode_mcp1_call(kind, header, &payload),
        kind => Err(ClientError::Protocol(format!(
            "unexpected {} frame from the daemon",
            kind.name()
        ))),
    }
}

/// A REQUEST or NOTIFICATION the daemon forwards to us.
fn decode_mcp1_call(kind: Kind, raw: &RawHeader, payload: &[u8]) -> Result<Inbound, ClientError> {
    let header = Header {
        kind,
        flags: raw.flags,
        id: raw.id,
        length: raw.length,
    };
    let call = mcp1::parse_request(&header, payload)
        .map_err(|e| ClientError::Protocol(format!("bad {} frame: {}", kind.name(), e.message)))?;
    let params = match call.params {
        Params::None => None,
        Params::Raw(bytes) => Some(Body::Raw(bytes.to_vec())),
        Params::Json(text) => Some(Body::Json(
            serde_json::from_str(text.get())
                .map_err(|e| ClientError::Protocol(format!("request body is not JSON: {e}")))?,
        )),
    };
    let method = call.method.to_string();
    Ok(match kind {
        Kind::Request => Inbound::Request {
            id: Value::from(raw.id),
            method,
            params,
        },
        _ => Inbound::Notification { method, params },
    })
}

/// The `reason` of a CANCEL payload (`{"reason": R}`); a payload of
/// another shape still cancels, with an empty reason.
fn cancel_reason(payload: &[u8]) -> String {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

/// Writes the answer to a request the daemon forwarded to us: a response or
/// an error with the daemon's `id`.
pub(crate) fn write_answer(
    protocol: Protocol,
    out: &mut impl Write,
    id: &Value,
    result: &Result<Body, RpcError>,
    scratch: &mut Vec<u8>,
) -> Result<(), ClientError> {
    match protocol {
        Protocol::JsonRpc => {
            let message = match result {
                Ok(Body::Json(value)) => json!({"jsonrpc": "2.0", "result": value, "id": id}),
                Ok(Body::Raw(_)) => {
                    return Err(ClientError::Usage(
                        "a raw result needs MCP1; JSON-RPC carries JSON only".into(),
                    ));
                }
                Err(error) => json!({"jsonrpc": "2.0", "error": error_object(error), "id": id}),
            };
            serde_json::to_writer(&mut *out, &message).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
        }
        Protocol::Mcp1 => {
            let id = id
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ClientError::Usage(format!("MCP1 request ids are u32 numbers, not {id}"))
                })?;
            scratch.clear();
            match result {
                Ok(body) => encode_mcp1_response(scratch, id, body)?,
                Err(error) => mcp1::write_error(scratch, id, error),
            }
            out.write_all(scratch)?;
        }
    }
    Ok(())
}

fn encode_mcp1_response(out: &mut Vec<u8>, id: u32, body: &Body) -> Result<(), ClientError> {
    let json;
    let (bytes, flags) = match body {
        Body::Json(value) => {
            json = serde_json::to_vec(value).map_err(io::Error::from)?;
            (json.as_slice(), 0)
        }
        Body::Raw(bytes) => (bytes.as_slice(), FLAG_RAW),
    };
    let length = u32::try_from(bytes.len())
        .map_err(|_| ClientError::Usage("result too large for an MCP1 frame".into()))?;
    mcp1::write_header(out, Kind::Response, flags, id, length);
    out.extend_from_slice(bytes);
    Ok(())
}

fn error_object(error: &RpcError) -> Value {
    let mut object = json!({"code": error.code, "message": error.message});
    if let Some(data) = &error.data {
        object["data"] = data.clone();
    }
    object
}

fn read_exact_or_closed(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), ClientError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ClientError::Closed(None),
        _ => ClientError::Io(e),
    })
}
