//! How the client puts calls on the wire and reads answers back, per protocol.

use std::io::{self, BufRead, Read, Write};

use serde_json::{Value, json};

use super::{Body, ClientError, Response};
use crate::error::RpcError;
use crate::proto::Protocol;
use crate::proto::mcp1::{self, HEADER_LEN, Kind, Next};

/// One message read from the daemon.
pub(crate) enum Incoming {
    /// A response to a call.
    Response(Response),
    /// A JSON-RPC batch answer.
    Batch(Vec<Response>),
    /// An MCP1 PONG.
    Pong { id: u32, payload: Vec<u8> },
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
pub(crate) fn read(protocol: Protocol, reader: &mut impl BufRead) -> Result<Incoming, ClientError> {
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

fn read_jsonrpc(reader: &mut impl BufRead) -> Result<Incoming, ClientError> {
    let line = read_line(reader)?;
    // A daemon refusing the connection says why in plain text.
    let value: Value =
        serde_json::from_str(&line).map_err(|_| ClientError::Closed(Some(line.clone())))?;
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(parse_jsonrpc_response)
            .collect::<Result<Vec<_>, _>>()
            .map(Incoming::Batch),
        value => parse_jsonrpc_response(value).map(Incoming::Response),
    }
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

fn read_mcp1(reader: &mut impl BufRead) -> Result<Incoming, ClientError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact_or_closed(reader, &mut header[..4])?;
    if &header[..4] != crate::proto::MCP1_MAGIC {
        // Before a protocol is known the daemon refuses in JSON or plain text.
        let rest = read_line(reader).unwrap_or_default();
        let text = format!("{}{rest}", String::from_utf8_lossy(&header[..4]));
        return Err(ClientError::Closed(Some(text)));
    }
    read_exact_or_closed(reader, &mut header[4..])?;
    let header = match mcp1::check(&header, usize::MAX, usize::MAX) {
        Next::Frame(header) => header,
        other => {
            return Err(ClientError::Protocol(format!(
                "bad frame header from the daemon: {other:?}"
            )));
        }
    };
    let mut payload = vec![0u8; header.length as usize];
    read_exact_or_closed(reader, &mut payload)?;
    let id = Value::from(header.id);
    match header.kind {
        Kind::Response if header.is_raw() => Ok(Incoming::Response(Response {
            id,
            result: Ok(Body::Raw(payload)),
        })),
        Kind::Response => {
            let value = serde_json::from_slice(&payload)
                .map_err(|e| ClientError::Protocol(format!("response body is not JSON: {e}")))?;
            Ok(Incoming::Response(Response {
                id,
                result: Ok(Body::Json(value)),
            }))
        }
        Kind::Error => {
            let error = mcp1::parse_error_payload(&payload)
                .ok_or_else(|| ClientError::Protocol("malformed ERROR payload".into()))?;
            let mut rpc = RpcError::new(error.code, error.message.to_string());
            rpc.data = error.data.and_then(|d| serde_json::from_slice(d).ok());
            Ok(Incoming::Response(Response {
                id,
                result: Err(rpc),
            }))
        }
        Kind::Pong => Ok(Incoming::Pong {
            id: header.id,
            payload,
        }),
        kind => Err(ClientError::Protocol(format!(
            "unexpected {} frame from the daemon",
            kind.name()
        ))),
    }
}

fn read_exact_or_closed(reader: &mut impl Read, buf: &mut [u8]) -> Result<(), ClientError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ClientError::Closed(None),
        _ => ClientError::Io(e),
    })
}
