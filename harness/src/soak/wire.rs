//! Blocking connections for the soak clients, the requests they send and the
//! exact bytes they expect back.
//!
//! Every request the soak makes is deterministic, so its answer is known byte
//! for byte before it is sent: a [`Call`] carries both. Answers are matched
//! by id (pooled methods may answer out of order) and compared whole.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use junction::client::Endpoint;
use junction_proto::mcp1::{self, Kind};

/// The pooled echo the embedded server registers; calls to it are made only
/// when the server lists it.
pub const POOLED_ECHO: &str = "soak.echo_pooled";
/// A method no server has: its call gets -32601 and the connection stays.
pub const MISSING: &str = "soak.nope";

/// No answer the soak asks for is near this size: a larger length is garbage.
const MAX_ANSWER: usize = 1 << 30;

/// One socket to the daemon, read through a buffer.
pub struct Link {
    reader: BufReader<Socket>,
}

enum Socket {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Unix(s) => s.read(buf),
            Socket::Tcp(s) => s.read(buf),
        }
    }
}

impl Link {
    /// Connects with `timeout` on every read and write.
    pub fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Link> {
        let socket = match endpoint {
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Socket::Unix(s)
            }
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str())?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Socket::Tcp(s)
            }
        };
        Ok(Link {
            reader: BufReader::with_capacity(64 * 1024, socket),
        })
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.reader.get_mut() {
            Socket::Unix(s) => s.write_all(bytes),
            Socket::Tcp(s) => s.write_all(bytes),
        }
    }

    /// Changes the write timeout (a write that cannot go on fails after it).
    pub fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self.reader.get_ref() {
            Socket::Unix(s) => s.set_write_timeout(Some(timeout)),
            Socket::Tcp(s) => s.set_write_timeout(Some(timeout)),
        }
    }

    /// Ends our sending side: the daemon answers what it has, then closes.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self.reader.get_ref() {
            Socket::Unix(s) => s.shutdown(Shutdown::Write),
            Socket::Tcp(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// Makes the coming close abrupt: a TCP reset (SO_LINGER 0) instead of a
    /// FIN. Unix sockets have no such thing; closing one with unread data
    /// already makes the daemon's next read fail with a reset.
    pub fn reset_on_close(&self) -> io::Result<()> {
        match self.reader.get_ref() {
            Socket::Unix(_) => Ok(()),
            Socket::Tcp(s) => {
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::Linger, &linger)
                    .map_err(io::Error::from)
            }
        }
    }

    /// One line, its LF included. EOF before a whole line is an error.
    pub fn line(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        self.reader.read_until(b'\n', out)?;
        if out.last() != Some(&b'\n') {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("closed after {} bytes of a line", out.len()),
            ));
        }
        Ok(())
    }

    /// One MCP1 frame, header included.
    pub fn frame(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        out.resize(mcp1::HEADER_LEN, 0);
        self.reader.read_exact(out)?;
        if &out[..4] != b"MCP1" {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("not an MCP1 header: {:?}", String::from_utf8_lossy(out)),
            ));
        }
        let length = u32::from_le_bytes([out[12], out[13], out[14], out[15]]) as usize;
        if length > MAX_ANSWER {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("an answer of {length} bytes announced"),
            ));
        }
        out.resize(mcp1::HEADER_LEN + length, 0);
        self.reader.read_exact(&mut out[mcp1::HEADER_LEN..])
    }

    /// Waits for the daemon to close: Ok when it does (a reset counts), an
    /// error if it sends anything more or the wait times out.
    pub fn expect_close(&mut self) -> io::Result<()> {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("a byte ({:#04x}) where the close was due", byte[0]),
            )),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A small, fast, seeded generator (splitmix64): the mix is reproducible
/// from `--seed`.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// `len` bytes that are safe inside a JSON string.
    pub fn text(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 64] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
        (0..len)
            .map(|_| char::from(ALPHABET[self.below(64)]))
            .collect()
    }

    /// `len` arbitrary bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// One request and the exact answer it must get (empty for notifications).
pub struct Call {
    /// The id the answer carries (0 when none is expected).
    pub id: u64,
    /// The request bytes.
    pub request: Vec<u8>,
    /// The answer bytes, line or frame.
    pub answer: Vec<u8>,
    /// The answer is an error the soak provoked on purpose.
    pub provoked: bool,
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// rpc.ping.
    Ping,
    /// rpc.echo of this many bytes.
    Echo(usize),
    /// The pooled echo of this many bytes.
    PooledEcho(usize),
    /// An MCP1 PING frame with this many payload bytes (JSON-RPC: rpc.ping).
    Heartbeat(usize),
    /// rpc.ping as a notification: no answer.
    Notify,
    /// A method that does not exist: -32601, connection kept.
    Missing,
}

/// JSON-RPC call `op` with `id`.
pub fn jsonrpc(op: Op, id: u64, rng: &mut Rng) -> Call {
    let line = |method: &str, params: &str| {
        format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{method}\"{params},\"id\":{id}}}\n")
            .into_bytes()
    };
    let result =
        |result: &str| format!("{{\"jsonrpc\":\"2.0\",\"result\":{result},\"id\":{id}}}\n");
    let (request, answer, provoked) = match op {
        Op::Ping | Op::Heartbeat(_) => (line("rpc.ping", ""), result("\"pong\""), false),
        Op::Echo(n) | Op::PooledEcho(n) => {
            let method = if matches!(op, Op::Echo(_)) {
                "rpc.echo"
            } else {
                POOLED_ECHO
            };
            // Arrays and objects, with whitespace inside: echo keeps it all.
            let params = if rng.chance(50) {
                format!("[\"{}\"]", rng.text(n))
            } else {
                format!(
                    "{{ \"k\" : \"{}\", \"n\": [1, 2.50, null, true] }}",
                    rng.text(n)
                )
            };
            (
                line(method, &format!(",\"params\":{params}")),
                result(&params),
                false,
            )
        }
        Op::Notify => {
            let request = b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\"}\n".to_vec();
            return Call {
                id: 0,
                request,
                answer: Vec::new(),
                provoked: false,
            };
        }
        Op::Missing => (
            line(MISSING, ""),
            format!(
                "{{\"jsonrpc\":\"2.0\",\"error\":{{\"code\":-32601,\"message\":\"Method not found: no method named \\\"{MISSING}\\\"\"}},\"id\":{id}}}\n"
            ),
            true,
        ),
    };
    Call {
        id,
        request,
        answer: answer.into_bytes(),
        provoked,
    }
}

/// The MCP1 RESPONSE frame for `id` with `body`.
fn response(id: u32, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mcp1::HEADER_LEN + body.len());
    // Bodies here stay below max-frame, far below u32::MAX.
    mcp1::write_header(&mut out, Kind::Response, flags, id, body.len() as u32);
    out.extend_from_slice(body);
    out
}

/// An MCP1 ERROR frame for `id` with `code` and `message`, no data.
pub fn mcp1_error(id: u32, code: i32, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    mcp1::write_header(&mut out, Kind::Error, 0, id, (6 + message.len()) as u32);
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(message.len() as u16).to_le_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// MCP1 call `op` with `id` (ids wrap within 1..=u32::MAX).
pub fn mcp1(op: Op, id: u64, rng: &mut Rng) -> Call {
    let wire_id = (id % u64::from(u32::MAX)) as u32 + 1;
    let mut request = Vec::new();
    let (answer, provoked) = match op {
        Op::Ping => {
            mcp1::write_call(&mut request, Some(wire_id), "rpc.ping", b"", false);
            (response(wire_id, 0, b"\"pong\""), false)
        }
        Op::Echo(n) | Op::PooledEcho(n) => {
            let method = if matches!(op, Op::Echo(_)) {
                "rpc.echo"
            } else {
                POOLED_ECHO
            };
            if rng.chance(60) {
                let body = rng.bytes(n);
                mcp1::write_call(&mut request, Some(wire_id), method, &body, true);
                (response(wire_id, mcp1::FLAG_RAW, &body), false)
            } else {
                let body = format!("\"{}\"", rng.text(n));
                mcp1::write_call(&mut request, Some(wire_id), method, body.as_bytes(), false);
                (response(wire_id, 0, body.as_bytes()), false)
            }
        }
        Op::Heartbeat(n) => {
            let body = rng.bytes(n);
            mcp1::write_header(&mut request, Kind::Ping, 0, wire_id, n as u32);
            request.extend_from_slice(&body);
            let mut pong = Vec::new();
            mcp1::write_header(&mut pong, Kind::Pong, 0, wire_id, n as u32);
            pong.extend_from_slice(&body);
            (pong, false)
        }
        Op::Notify => {
            mcp1::write_call(&mut request, None, "rpc.ping", b"", false);
            (Vec::new(), false)
        }
        Op::Missing => {
            mcp1::write_call(&mut request, Some(wire_id), MISSING, b"", false);
            let message = format!("Method not found: no method named \"{MISSING}\"");
            (mcp1_error(wire_id, -32601, &message), true)
        }
    };
    Call {
        id: u64::from(wire_id),
        request,
        answer,
        provoked,
    }
}

/// The id of a JSON-RPC answer line (the number after its last `"id":`).
pub fn jsonrpc_id(line: &[u8]) -> Option<u64> {
    let at = line.windows(5).rposition(|w| w == b"\"id\":")? + 5;
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// The id of an MCP1 frame.
pub fn mcp1_id(frame: &[u8]) -> Option<u64> {
    let id: [u8; 4] = frame.get(8..12)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(id)))
}

/// The error code and id of an MCP1 ERROR frame.
pub fn mcp1_error_of(frame: &[u8]) -> Option<(i32, u32)> {
    if frame.get(5) != Some(&(Kind::Error as u8)) {
        return None;
    }
    let id = mcp1_id(frame)? as u32;
    let error = mcp1::parse_error_payload(frame.get(mcp1::HEADER_LEN..)?)?;
    Some((error.code, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_in_answers() {
        let mut rng = Rng::new(1);
        let call = jsonrpc(Op::Echo(10), 42, &mut rng);
        assert_eq!(jsonrpc_id(&call.answer), Some(42));
        let missing = jsonrpc(Op::Missing, 7, &mut rng);
        assert_eq!(jsonrpc_id(&missing.answer), Some(7));
        let frame = mcp1(Op::Echo(3), 9, &mut rng);
        assert_eq!(mcp1_id(&frame.answer), Some(10));
        let error = mcp1(Op::Missing, 1, &mut rng);
        assert_eq!(mcp1_error_of(&error.answer), Some((-32601, 2)));
    }
}
