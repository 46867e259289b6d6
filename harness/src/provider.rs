//! `junction-bench provide`: the fastest provider we can write, so that a
//! routed call measures the daemon's two hops rather than the provider.
//! One connection (a name has one owner), one thread: read everything
//! available, answer every complete request into one buffer, write it in
//! one go. bench.ping answers "pong", bench.echo its params (raw stays
//! raw): the same bytes as rpc.ping and rpc.echo, so the load generator
//! counts routed answers exactly like direct ones.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use junction::client::Endpoint;
use junction_proto::mcp1::{self, HEADER_LEN, Kind};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::workload::{Proto, ROUTED_ECHO, ROUTED_PING};

/// The id of our one call, bus.register.
const REGISTER_ID: u32 = 1;
/// Bytes asked of each read.
const READ_CHUNK: usize = 256 * 1024;

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Registers bench.ping and bench.echo at `endpoint` and serves them
/// until the daemon closes the connection (an error) or the process is
/// killed.
pub fn serve(endpoint: &Endpoint, proto: Proto) -> Result<(), String> {
    let mut stream: Box<dyn Stream> = match endpoint {
        Endpoint::Unix(path) => {
            Box::new(UnixStream::connect(path).map_err(|e| format!("connect {endpoint}: {e}"))?)
        }
        Endpoint::Tcp(addr) => {
            let s = TcpStream::connect(addr.as_str())
                .map_err(|e| format!("connect {endpoint}: {e}"))?;
            s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
            Box::new(s)
        }
    };
    let mut provider = Provider {
        proto,
        registered: false,
        served: 0,
    };
    stream
        .write_all(&provider.register_request()?)
        .map_err(|e| format!("write: {e}"))?;
    let mut input: Vec<u8> = Vec::with_capacity(2 * READ_CHUNK);
    let mut output: Vec<u8> = Vec::with_capacity(2 * READ_CHUNK);
    loop {
        let old = input.len();
        input.resize(old + READ_CHUNK, 0);
        let n = stream
            .read(&mut input[old..])
            .map_err(|e| format!("read: {e}"))?;
        input.truncate(old + n);
        if n == 0 {
            return Err(format!(
                "the daemon closed the connection after {} calls",
                provider.served
            ));
        }
        let consumed = match proto {
            Proto::Mcp1 => provider.mcp1(&input, &mut output)?,
            Proto::Jsonrpc => provider.jsonrpc(&input, &mut output)?,
            Proto::Resp | Proto::Http | Proto::Ws => {
                return Err("the provider speaks jsonrpc or mcp1".into());
            }
        };
        input.drain(..consumed);
        if !output.is_empty() {
            stream
                .write_all(&output)
                .map_err(|e| format!("write: {e}"))?;
            output.clear();
        }
    }
}

struct Provider {
    proto: Proto,
    registered: bool,
    served: u64,
}

/// A JSON-RPC line from the daemon: a forwarded call, or the answer to
/// our bus.register.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

impl Provider {
    fn register_request(&self) -> Result<Vec<u8>, String> {
        let body = format!(r#"{{"names":["{ROUTED_PING}","{ROUTED_ECHO}"]}}"#);
        Ok(match self.proto {
            Proto::Mcp1 => {
                let mut out = Vec::new();
                mcp1::write_call(
                    &mut out,
                    Some(REGISTER_ID),
                    "bus.register",
                    body.as_bytes(),
                    false,
                );
                out
            }
            Proto::Jsonrpc => format!(
                r#"{{"jsonrpc":"2.0","method":"bus.register","params":{body},"id":{REGISTER_ID}}}"#
            )
            .into_bytes()
            .into_iter()
            .chain(*b"\n")
            .collect(),
            Proto::Resp | Proto::Http | Proto::Ws => {
                return Err("the provider speaks jsonrpc or mcp1".into());
            }
        })
    }

    fn registered(&mut self) {
        self.registered = true;
        eprintln!(
            "junction-bench: providing {ROUTED_PING}, {ROUTED_ECHO} ({})",
            self.proto
        );
    }

    /// Answers every complete MCP1 frame in `input`; returns the bytes used.
    fn mcp1(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut at = 0;
        while let Some(header) = input[at..].first_chunk::<HEADER_LEN>() {
            if header[..4] != *b"MCP1" {
                return Err("bad magic from the daemon".into());
            }
            let id = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
            let flags = u16::from_le_bytes([header[6], header[7]]);
            let length =
                u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
            let Some(payload) = input.get(at + HEADER_LEN..at + HEADER_LEN + length) else {
                break;
            };
            at += HEADER_LEN + length;
            match Kind::from_byte(header[5]) {
                Some(Kind::Request) => self.mcp1_call(id, flags, payload, out)?,
                Some(Kind::Response) if id == REGISTER_ID && !self.registered => self.registered(),
                Some(Kind::Error) => {
                    let message = mcp1::parse_error_payload(payload)
                        .map(|e| format!("error {}: {}", e.code, e.message))
                        .unwrap_or_else(|| "a malformed ERROR".into());
                    return Err(format!("the daemon answered {message}"));
                }
                // CANCELs (kind 5), notifications: nothing to do.
                _ => {}
            }
        }
        Ok(at)
    }

    fn mcp1_call(
        &mut self,
        id: u32,
        flags: u16,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let method_len = payload
            .first_chunk::<2>()
            .map(|b| usize::from(u16::from_le_bytes(*b)))
            .ok_or("a REQUEST without method_len")?;
        let method = payload
            .get(2..2 + method_len)
            .ok_or("a REQUEST with a short method")?;
        let body = &payload[2 + method_len..];
        self.served += 1;
        let (flags, body): (u16, &[u8]) = match method {
            m if m == ROUTED_PING.as_bytes() => (0, b"\"pong\""),
            _ if body.is_empty() && flags & mcp1::FLAG_RAW == 0 => (0, b"null"),
            _ => (flags & mcp1::FLAG_RAW, body),
        };
        mcp1::write_header(out, Kind::Response, flags, id, body.len() as u32);
        out.extend_from_slice(body);
        Ok(())
    }

    /// Answers every complete JSON-RPC line in `input`; returns the bytes used.
    fn jsonrpc(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut at = 0;
        while let Some(end) = input[at..].iter().position(|&b| b == b'\n') {
            let line = &input[at..at + end];
            at += end + 1;
            let parsed: Line<'_> = serde_json::from_slice(line)
                .map_err(|e| format!("a line that is not JSON-RPC ({e})"))?;
            match (parsed.method, parsed.id) {
                (Some(method), Some(id)) => {
                    self.served += 1;
                    let result = if method == ROUTED_PING {
                        "\"pong\""
                    } else {
                        parsed.params.map_or("null", RawValue::get)
                    };
                    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"result\":");
                    out.extend_from_slice(result.as_bytes());
                    out.extend_from_slice(b",\"id\":");
                    out.extend_from_slice(id.get().as_bytes());
                    out.extend_from_slice(b"}\n");
                }
                (Some(_), None) => {} // bus.cancel and other notifications
                (None, _) if parsed.error.is_some() => {
                    let error = parsed.error.map_or("", RawValue::get);
                    return Err(format!("the daemon answered an error: {error}"));
                }
                (None, _) if !self.registered => self.registered(),
                (None, _) => {}
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Method, Target, Workload};

    fn provider(proto: Proto) -> Provider {
        Provider {
            proto,
            registered: false,
            served: 0,
        }
    }

    /// What the daemon forwards for a workload's request: the same frame
    /// with the daemon's id.
    #[test]
    fn mcp1_answers_match_the_direct_answers() {
        let mut p = provider(Proto::Mcp1);
        let mut input = Vec::new();
        mcp1::write_header(&mut input, Kind::Response, 0, REGISTER_ID, 4);
        input.extend_from_slice(b"true");
        for method in [Method::Ping, Method::Echo] {
            let routed = Workload::routed(Proto::Mcp1, method, 7).expect("workload");
            input.extend_from_slice(&routed.request);
        }
        let half = input.len() - 3;
        let mut out = Vec::new();
        let used = p.mcp1(&input[..half], &mut out).expect("serve");
        let used = used + p.mcp1(&input[used..], &mut out).expect("serve");
        assert_eq!(used, input.len());
        assert!(p.registered);
        let mut expected = Workload::new(Target::Junction, Proto::Mcp1, Method::Ping, 0)
            .expect("w")
            .response;
        expected.extend(
            Workload::new(Target::Junction, Proto::Mcp1, Method::Echo, 7)
                .expect("w")
                .response,
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn jsonrpc_answers_match_the_direct_answers() {
        let mut p = provider(Proto::Jsonrpc);
        let mut input =
            br#"{"jsonrpc":"2.0","result":{"names":["bench.ping","bench.echo"]},"id":1}"#.to_vec();
        input.push(b'\n');
        input.extend_from_slice(
            br#"{"jsonrpc":"2.0","method":"bus.cancel","params":{"id":3,"reason":"timeout"}}"#,
        );
        input.push(b'\n');
        for method in [Method::Ping, Method::Echo] {
            input.extend(
                Workload::routed(Proto::Jsonrpc, method, 5)
                    .expect("w")
                    .request,
            );
        }
        let mut out = Vec::new();
        assert_eq!(p.jsonrpc(&input, &mut out).expect("serve"), input.len());
        let mut expected = Workload::new(Target::Junction, Proto::Jsonrpc, Method::Ping, 0)
            .expect("w")
            .response;
        expected.extend(
            Workload::new(Target::Junction, Proto::Jsonrpc, Method::Echo, 5)
                .expect("w")
                .response,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(p.served, 2);
    }

    #[test]
    fn a_refused_registration_is_an_error() {
        let mut p = provider(Proto::Mcp1);
        let mut input = Vec::new();
        let error = junction::RpcError::new(-32020, "Name taken");
        mcp1::write_error(&mut input, REGISTER_ID, &error);
        let err = p.mcp1(&input, &mut Vec::new()).expect_err("refused");
        assert!(err.contains("-32020"), "{err}");
    }
}
