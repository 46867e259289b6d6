//! What the generator sends and the exact bytes it expects back, per target
//! and protocol. Responses are counted by length (every answer to the same
//! request has the same bytes), so the hot loop parses nothing; the first
//! answer on each connection is compared byte for byte to catch errors.

use std::fmt;

use junction_proto::mcp1;

/// The server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// junctiond.
    Junction,
    /// redis-server.
    Redis,
    /// The raw echo server (no parsing: the machine's ceiling).
    Echo,
}

/// The wire protocol spoken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Newline-delimited JSON-RPC 2.0.
    Jsonrpc,
    /// Junction's binary framing.
    Mcp1,
    /// Redis's RESP.
    Resp,
    /// JSON-RPC over HTTP/1.1 POST, one request per POST, keep-alive.
    Http,
    /// JSON-RPC in WebSocket text messages.
    Ws,
}

/// The request made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// rpc.ping / PING.
    Ping,
    /// rpc.echo / ECHO with a payload of `size` bytes.
    Echo,
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Workload {
    /// One request.
    pub request: Vec<u8>,
    /// The answer to it, byte for byte.
    pub response: Vec<u8>,
    /// Sent once on each new connection before the requests (the
    /// WebSocket upgrade), and the length of its fixed answer.
    pub handshake: Option<(Vec<u8>, usize)>,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Jsonrpc => "jsonrpc",
            Proto::Mcp1 => "mcp1",
            Proto::Resp => "resp",
            Proto::Http => "http",
            Proto::Ws => "ws",
        })
    }
}

/// The methods the bench provider serves (`junction-bench provide`): the
/// routed twins of rpc.ping and rpc.echo, answering the same bytes.
pub const ROUTED_PING: &str = "bench.ping";
/// See [`ROUTED_PING`].
pub const ROUTED_ECHO: &str = "bench.echo";

impl Workload {
    /// The workload for a target, protocol, method and payload size.
    pub fn new(
        target: Target,
        proto: Proto,
        method: Method,
        size: usize,
    ) -> Result<Workload, String> {
        Self::build(target, proto, method, size, ["rpc.ping", "rpc.echo"])
    }

    /// The same calls routed through the daemon to the bench provider
    /// (bench.ping, bench.echo): two hops, the same answers.
    pub fn routed(proto: Proto, method: Method, size: usize) -> Result<Workload, String> {
        Self::build(
            Target::Junction,
            proto,
            method,
            size,
            [ROUTED_PING, ROUTED_ECHO],
        )
    }

    fn build(
        target: Target,
        proto: Proto,
        method: Method,
        size: usize,
        [ping, echo]: [&str; 2],
    ) -> Result<Workload, String> {
        if matches!(proto, Proto::Http | Proto::Ws) {
            if target != Target::Junction {
                return Err("HTTP and WebSocket are junctiond's: use --target junction".into());
            }
            let line = Self::build(target, Proto::Jsonrpc, method, size, [ping, echo])?;
            return Ok(carried(proto, &line));
        }
        let payload = vec![b'x'; size];
        let text = "x".repeat(size);
        let (request, response) = match (proto, method) {
            (Proto::Jsonrpc, Method::Ping) => (
                format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{ping}\",\"id\":1}}\n").into_bytes(),
                b"{\"jsonrpc\":\"2.0\",\"result\":\"pong\",\"id\":1}\n".to_vec(),
            ),
            (Proto::Jsonrpc, Method::Echo) => (
                format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{echo}\",\"params\":[\"{text}\"],\"id\":1}}\n").into_bytes(),
                format!("{{\"jsonrpc\":\"2.0\",\"result\":[\"{text}\"],\"id\":1}}\n").into_bytes(),
            ),
            (Proto::Mcp1, Method::Ping) => {
                let mut request = Vec::new();
                mcp1::write_call(&mut request, Some(1), ping, b"", false);
                let mut response = Vec::new();
                mcp1::write_header(&mut response, mcp1::Kind::Response, 0, 1, 6);
                response.extend_from_slice(b"\"pong\"");
                (request, response)
            }
            (Proto::Mcp1, Method::Echo) => {
                let mut request = Vec::new();
                mcp1::write_call(&mut request, Some(1), echo, &payload, true);
                let mut response = Vec::new();
                let length = u32::try_from(size).map_err(|_| "payload too large".to_string())?;
                mcp1::write_header(&mut response, mcp1::Kind::Response, mcp1::FLAG_RAW, 1, length);
                response.extend_from_slice(&payload);
                (request, response)
            }
            (Proto::Resp, Method::Ping) => (b"*1\r\n$4\r\nPING\r\n".to_vec(), b"+PONG\r\n".to_vec()),
            (Proto::Resp, Method::Echo) => (
                format!("*2\r\n$4\r\nECHO\r\n${size}\r\n{text}\r\n").into_bytes(),
                format!("${size}\r\n{text}\r\n").into_bytes(),
            ),
            (Proto::Http | Proto::Ws, _) => unreachable!("carried by carried() above"),
        };
        let response = match target {
            // The echo server answers with the request itself.
            Target::Echo => request.clone(),
            Target::Junction if proto == Proto::Resp => {
                return Err("junctiond does not speak RESP: use --proto jsonrpc or mcp1".into());
            }
            Target::Redis if proto != Proto::Resp => {
                return Err("Redis speaks RESP: use --proto resp".into());
            }
            _ => response,
        };
        Ok(Workload {
            request,
            response,
            handshake: None,
        })
    }

    /// `pipeline` requests back to back: what one round writes.
    pub fn block(&self, pipeline: usize) -> Vec<u8> {
        self.request.repeat(pipeline)
    }
}

/// A JSON-RPC line workload carried by HTTP POST or WebSocket messages:
/// the exact bytes junctiond answers (built with its own writers).
fn carried(proto: Proto, line: &Workload) -> Workload {
    use junction::http::response::{JSON, Response};
    use junction::http::ws;
    let request = line.request.trim_ascii_end();
    let answer = line.response.trim_ascii_end();
    if proto == Proto::Http {
        let mut post = format!(
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            request.len()
        )
        .into_bytes();
        post.extend_from_slice(request);
        let mut response = Vec::new();
        Response {
            content_type: Some(JSON),
            body: answer,
            ..Response::text(200, "")
        }
        .write(&mut response);
        return Workload {
            request: post,
            response,
            handshake: None,
        };
    }
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    let upgrade = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let accept = ws::accept_key(KEY);
    let mut switched = Vec::new();
    let headers = junction::http::response::websocket_upgrade(&accept);
    Response::switching_protocols(&headers).write(&mut switched);
    // A client frame: masked (the mask is arbitrary; a fixed one keeps the block constant).
    let mask = [0x5a, 0x17, 0xc3, 0x88];
    let mut frame = vec![0x81];
    match request.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    ws::unmask_into(&mut frame, request, mask);
    let mut response = Vec::new();
    ws::write_head(&mut response, ws::TEXT, answer.len());
    response.extend_from_slice(answer);
    Workload {
        request: frame,
        response,
        handshake: Some((upgrade.into_bytes(), switched.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_targets_expect_their_own_bytes_back() {
        let w = Workload::new(Target::Echo, Proto::Mcp1, Method::Ping, 0).expect("workload");
        assert_eq!(w.request, w.response);
        assert!(Workload::new(Target::Junction, Proto::Resp, Method::Ping, 0).is_err());
        let echo = Workload::new(Target::Junction, Proto::Mcp1, Method::Echo, 5).expect("workload");
        assert_eq!(echo.response.len(), 16 + 5);
        let http = Workload::new(Target::Junction, Proto::Http, Method::Ping, 0).expect("http");
        assert!(http.request.starts_with(b"POST / HTTP/1.1\r\n") && http.handshake.is_none());
        assert!(
            http.response
                .ends_with(b"\r\n\r\n{\"jsonrpc\":\"2.0\",\"result\":\"pong\",\"id\":1}")
        );
        let ws = Workload::new(Target::Junction, Proto::Ws, Method::Echo, 300).expect("ws");
        assert!(ws.handshake.is_some());
        assert_eq!(
            (ws.request[1], ws.response[0], ws.response[1]),
            (0x80 | 126, 0x81, 126)
        );
        assert!(Workload::new(Target::Redis, Proto::Ws, Method::Ping, 0).is_err());
        let routed = Workload::routed(Proto::Mcp1, Method::Echo, 5).expect("workload");
        assert_eq!(routed.response, echo.response);
        assert_ne!(routed.request, echo.request);
        assert_eq!(
            Workload::new(Target::Redis, Proto::Resp, Method::Echo, 3)
                .expect("w")
                .response,
            b"$3\r\nxxx\r\n"
        );
    }
}
