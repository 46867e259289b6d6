//! The soak's short-lived clients: connection churn (including the ways a
//! client can vanish) and malformed input, each case checked to its error
//! and close.

use std::io::ErrorKind;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use junction_proto::UNKNOWN_PROTOCOL_REPLY;
use junction_proto::mcp1::{self, Kind};
use serde_json::Value;

use super::roles::{Ctx, Failure, Transport, build, collect, exchange, show};
use super::wire::{self, Call, Link, Op, Rng};
use crate::workload::Proto;

/// How a churning connection ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// All answers read, then a close.
    Clean,
    /// The calls, then our side shut down: every answer, then the daemon's close.
    HalfClose,
    /// Calls sent, none read, then a close (a reset on TCP half the time).
    InFlight,
    /// Whole calls and then part of one more, then a close.
    MidFrame,
    /// A close before the protocol is known: nothing or a partial magic sent.
    Silent,
    /// Large echoes sent without reading until the daemon stops reading
    /// (its output reaches max-output), then a close.
    Flood,
}

/// The churning client: a new connection every `ctx.churn_every`, going
/// round both transports and both protocols.
pub fn churn(ctx: &Ctx, slot: usize, rng: &mut Rng) {
    let mut i = 0usize;
    let mut next = Instant::now();
    let mut buf = Vec::new();
    while !ctx.stopped() {
        let transport = if i.is_multiple_of(2) {
            Transport::Unix
        } else {
            Transport::Tcp
        };
        let proto = if (i / 2).is_multiple_of(2) {
            Proto::Jsonrpc
        } else {
            Proto::Mcp1
        };
        i += 1;
        let ending = match rng.below(100) {
            0..40 => Ending::Clean,
            40..55 => Ending::HalfClose,
            55..75 => Ending::InFlight,
            75..91 => Ending::MidFrame,
            91..99 => Ending::Silent,
            _ => Ending::Flood,
        };
        match churn_once(ctx, rng, transport, proto, ending, &mut buf) {
            Ok(()) => {
                ctx.tally.churned.fetch_add(1, Relaxed);
            }
            Err(failure) => ctx.tally.fail(slot, failure),
        }
        next += ctx.churn_every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

fn calls(ctx: &Ctx, rng: &mut Rng, proto: Proto, count: usize, big: bool) -> Vec<Call> {
    (1..=count as u64)
        .map(|id| {
            let op = match rng.below(100) {
                0..30 => Op::Ping,
                30..85 => ctx.echo(rng, 0, 2000),
                85..95 if big => ctx.echo(rng, 64 * 1024, ctx.max_frame / 2),
                _ => Op::Notify,
            };
            build(proto, op, id, rng)
        })
        .collect()
}

fn churn_once(
    ctx: &Ctx,
    rng: &mut Rng,
    transport: Transport,
    proto: Proto,
    ending: Ending,
    buf: &mut Vec<u8>,
) -> Result<(), Failure> {
    let mut link = ctx.connect(transport)?;
    let count = 1 + rng.below(5);
    match ending {
        Ending::Clean => {
            for call in calls(ctx, rng, proto, count, false) {
                exchange(&mut link, proto, std::slice::from_ref(&call), ctx, buf)?;
            }
        }
        Ending::HalfClose => {
            let calls = calls(ctx, rng, proto, count, false);
            let mut block: Vec<u8> = calls.iter().flat_map(|c| c.request.clone()).collect();
            // A last JSON-RPC line without its LF is still answered at the end of input.
            if proto == Proto::Jsonrpc && rng.chance(50) {
                block.pop();
            }
            link.send(&block).map_err(Failure::io("write"))?;
            link.shutdown_write().map_err(Failure::io("shutdown"))?;
            collect(&mut link, proto, &calls, ctx, buf)?;
            link.expect_close()
                .map_err(Failure::io("the close after a half-close"))?;
        }
        Ending::InFlight => {
            let block: Vec<u8> = calls(ctx, rng, proto, count + 3, true)
                .iter()
                .flat_map(|c| c.request.clone())
                .collect();
            // Several large echoes can reach max-output: the daemon then stops
            // reading, and a write that cannot finish is as good an end.
            link.set_write_timeout(Duration::from_secs(1))
                .map_err(Failure::io("write timeout"))?;
            match link.send(&block) {
                Err(e) if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(Failure::io("write")(e));
                }
                _ => {}
            }
            abrupt(ctx, rng, &link)?;
        }
        Ending::MidFrame => {
            let count = rng.below(3);
            let whole = calls(ctx, rng, proto, count, false);
            let mut block: Vec<u8> = whole.iter().flat_map(|c| c.request.clone()).collect();
            let op = ctx.echo(rng, 0, 40_000);
            let last = build(proto, op, 99, rng);
            let cut = 1 + rng.below(last.request.len() - 1);
            block.extend_from_slice(&last.request[..cut]);
            link.send(&block).map_err(Failure::io("write"))?;
            if rng.chance(50) {
                collect(&mut link, proto, &whole, ctx, buf)?;
            }
            abrupt(ctx, rng, &link)?;
        }
        Ending::Flood => {
            // Writes stop going through once the daemon pauses this connection.
            link.set_write_timeout(Duration::from_millis(200))
                .map_err(Failure::io("write timeout"))?;
            let mut sent = 0;
            let mut id = 0;
            while sent < 3 * ctx.max_frame + 8 * 1024 * 1024 {
                id += 1;
                let op = ctx.echo(rng, ctx.max_frame / 4, ctx.max_frame / 4);
                let call = build(proto, op, id, rng);
                if link.send(&call.request).is_err() {
                    break;
                }
                sent += call.request.len();
            }
            abrupt(ctx, rng, &link)?;
        }
        Ending::Silent => {
            let start: &[u8] = match rng.below(3) {
                0 => b"",
                1 => b"MC",
                _ => b"  \n",
            };
            link.send(start).map_err(Failure::io("write"))?;
        }
    }
    Ok(())
}

/// Ends a connection abruptly: a reset on TCP half the time, a plain close
/// with data unread otherwise.
fn abrupt(ctx: &Ctx, rng: &mut Rng, link: &Link) -> Result<(), Failure> {
    if rng.chance(50) {
        link.reset_on_close().map_err(Failure::io("SO_LINGER"))?;
    }
    ctx.tally.abrupt.fetch_add(1, Relaxed);
    Ok(())
}

/// The malformed-input client: one case per connection, in turn, both transports.
pub fn malformed(ctx: &Ctx, slot: usize, rng: &mut Rng) {
    let mut i = 0usize;
    let mut next = Instant::now();
    while !ctx.stopped() {
        let transport = if i.is_multiple_of(2) {
            Transport::Tcp
        } else {
            Transport::Unix
        };
        // The oversized line and the sniff timeout are costly: one round in eight.
        let cases = if (i / CASES) % 8 == 7 {
            CASES
        } else {
            CASES - 2
        };
        let case = i % CASES;
        i += 1;
        if case >= cases {
            continue;
        }
        let outcome = ctx
            .connect(transport)
            .and_then(|mut link| malformed_case(ctx, rng, &mut link, case));
        match outcome {
            Ok(provoked) => {
                ctx.tally.provoked.fetch_add(provoked, Relaxed);
                ctx.tally.churned.fetch_add(1, Relaxed);
            }
            Err(failure) => ctx.tally.fail(slot, failure),
        }
        next += ctx.churn_every * 4;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// Malformed cases; the last two are the oversized JSON-RPC line and the
/// sniff timeout.
const CASES: usize = 9;

fn ping_frame(id: u32) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Rng::new(0);
    let call = wire::mcp1(Op::Ping, u64::from(id) - 1, &mut rng);
    (call.request, call.answer)
}

fn header(version: u8, kind: u8, flags: u16, id: u32, length: u32) -> Vec<u8> {
    let mut out = b"MCP1".to_vec();
    out.extend_from_slice(&[version, kind]);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out
}

/// Reads one MCP1 frame and checks it is the ERROR `code` (with `id`, when given).
fn expect_mcp1_error(link: &mut Link, code: i32, id: Option<u32>) -> Result<(), Failure> {
    let mut frame = Vec::new();
    link.frame(&mut frame)
        .map_err(Failure::io("read an error frame"))?;
    match wire::mcp1_error_of(&frame) {
        Some((c, i)) if c == code && id.is_none_or(|id| id == i) => Ok(()),
        _ => Err(Failure::Mismatch(format!(
            "expected ERROR {code} (id {id:?}), got {}",
            show(&frame)
        ))),
    }
}

/// Reads one frame and checks it is exactly `expected`.
fn expect_frame(link: &mut Link, expected: &[u8]) -> Result<(), Failure> {
    let mut frame = Vec::new();
    link.frame(&mut frame)
        .map_err(Failure::io("read a frame"))?;
    if frame != expected {
        return Err(Failure::Mismatch(format!(
            "expected {}, got {}",
            show(expected),
            show(&frame)
        )));
    }
    Ok(())
}

/// Reads one JSON-RPC line and checks its error code and id.
fn expect_jsonrpc_error(link: &mut Link, code: i64, id: Value) -> Result<(), Failure> {
    let mut line = Vec::new();
    link.line(&mut line)
        .map_err(Failure::io("read an error line"))?;
    let value: Value = serde_json::from_slice(&line)
        .map_err(|e| Failure::Mismatch(format!("not JSON ({e}): {}", show(&line))))?;
    if value["error"]["code"] != code || value["id"] != id {
        return Err(Failure::Mismatch(format!(
            "expected error {code} with id {id}, got {}",
            show(&line)
        )));
    }
    Ok(())
}

fn closed(link: &mut Link) -> Result<(), Failure> {
    link.expect_close()
        .map_err(Failure::io("the close after a fatal error"))
}

/// Runs malformed case `case` on `link`; returns the errors it provoked.
fn malformed_case(ctx: &Ctx, rng: &mut Rng, link: &mut Link, case: usize) -> Result<u64, Failure> {
    let send = |link: &mut Link, bytes: &[u8]| link.send(bytes).map_err(Failure::io("write"));
    let (ping, pong) = ping_frame(1);
    match case {
        // Not a protocol: one line of text, then the close.
        0 | 1 => {
            let junk: Vec<u8> = if case == 0 {
                b"BREW / HTCPCP/1.0\r\nHost: soak\r\n\r\n".to_vec()
            } else {
                let mut lines = vec![b'\n'; 61];
                lines
                    .extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n");
                lines
            };
            send(link, &junk)?;
            let mut line = Vec::new();
            link.line(&mut line)
                .map_err(Failure::io("read the refusal"))?;
            if line != UNKNOWN_PROTOCOL_REPLY {
                return Err(Failure::Mismatch(format!("refusal {}", show(&line))));
            }
            closed(link)?;
            Ok(1)
        }
        // MCP1 with version 2: -32011 with the header's id, then the close.
        2 => {
            let mut frame = header(2, Kind::Request as u8, 0, 7, 10);
            frame.extend_from_slice(b"\x08\x00rpc.ping");
            send(link, &frame)?;
            expect_mcp1_error(link, mcp1::codes::UNSUPPORTED_VERSION, Some(7))?;
            closed(link)?;
            Ok(1)
        }
        // A good frame, then one without the magic: the answer, -32010, the close.
        3 => {
            let mut bytes = ping;
            bytes.extend_from_slice(b"XXXX\x01\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00");
            send(link, &bytes)?;
            expect_frame(link, &pong)?;
            expect_mcp1_error(link, mcp1::codes::BAD_MAGIC, Some(0))?;
            closed(link)?;
            Ok(1)
        }
        // A payload over max-frame: -32001 before the payload is read, then the close.
        4 => {
            let mut bytes = ping;
            let too_long = u32::try_from(ctx.max_frame + 1).unwrap_or(u32::MAX);
            bytes.extend_from_slice(&header(1, Kind::Request as u8, 0, 3, too_long));
            send(link, &bytes)?;
            expect_frame(link, &pong)?;
            expect_mcp1_error(link, -32001, Some(3))?;
            closed(link)?;
            Ok(1)
        }
        // Half a frame and the end of input: -32014, then the close.
        5 => {
            let mut bytes = ping;
            let op = ctx.echo(rng, 3000, 1);
            let cut = wire::mcp1(op, 4, rng).request;
            bytes.extend_from_slice(&cut[..1 + rng.below(cut.len() - 1)]);
            send(link, &bytes)?;
            link.shutdown_write().map_err(Failure::io("shutdown"))?;
            expect_frame(link, &pong)?;
            expect_mcp1_error(link, mcp1::codes::TRUNCATED, None)?;
            closed(link)?;
            Ok(1)
        }
        // Errors that keep the connection, JSON-RPC then MCP1 on a second connection.
        6 => {
            send(
                link,
                b"{\"jsonrpc\":\"2.0\",\"method\":\n\
                  {\"jsonrpc\":\"1.0\",\"method\":\"rpc.ping\",\"id\":2}\n\
                  {\"a\":\"\xff\"}\n\
                  []\n\
                  {\"jsonrpc\":\"2.0\",\"result\":\"x\",\"id\":5}\n\
                  {\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":9}\n",
            )?;
            expect_jsonrpc_error(link, -32700, Value::Null)?;
            expect_jsonrpc_error(link, -32600, Value::from(2))?;
            expect_jsonrpc_error(link, -32700, Value::Null)?;
            expect_jsonrpc_error(link, -32600, Value::Null)?;
            let mut line = Vec::new();
            link.line(&mut line).map_err(Failure::io("read"))?;
            if line != b"{\"jsonrpc\":\"2.0\",\"result\":\"pong\",\"id\":9}\n" {
                return Err(Failure::Mismatch(format!("after errors: {}", show(&line))));
            }
            let mut other = ctx.connect(Transport::Unix)?;
            let mut bytes = header(1, Kind::Request as u8, 0x0002, 11, 10);
            bytes.extend_from_slice(b"\x08\x00rpc.ping");
            bytes.extend_from_slice(&header(1, 0x09, 0, 12, 0));
            bytes.extend_from_slice(&header(1, Kind::Request as u8, 0, 0, 10));
            bytes.extend_from_slice(b"\x08\x00rpc.ping");
            mcp1::write_call(&mut bytes, Some(13), "rpc.echo", b"{", false);
            bytes.extend_from_slice(&ping_frame(14).0);
            send(&mut other, &bytes)?;
            expect_mcp1_error(&mut other, mcp1::codes::RESERVED_FLAGS, Some(11))?;
            expect_mcp1_error(&mut other, mcp1::codes::UNKNOWN_KIND, Some(12))?;
            expect_mcp1_error(&mut other, -32600, Some(0))?;
            expect_mcp1_error(&mut other, -32700, Some(13))?;
            expect_frame(&mut other, &ping_frame(14).1)?;
            ctx.tally.churned.fetch_add(1, Relaxed);
            ctx.tally.answers.fetch_add(2, Relaxed);
            Ok(8)
        }
        // Nothing but a partial magic: closed at the sniff timeout (5 s by default).
        8 => {
            send(link, b"MC")?;
            closed(link)?;
            Ok(0)
        }
        // A JSON-RPC line over max-frame: the answer before it, -32001, the close.
        _ => {
            let mut bytes = b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.ping\",\"id\":1}\n".to_vec();
            bytes.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":\"rpc.echo\",\"params\":[\"");
            bytes.resize(bytes.len() + ctx.max_frame, b'x');
            send(link, &bytes)?;
            let mut line = Vec::new();
            link.line(&mut line).map_err(Failure::io("read"))?;
            if line != b"{\"jsonrpc\":\"2.0\",\"result\":\"pong\",\"id\":1}\n" {
                return Err(Failure::Mismatch(format!(
                    "before the long line: {}",
                    show(&line)
                )));
            }
            expect_jsonrpc_error(link, -32001, Value::Null)?;
            closed(link)?;
            ctx.tally.answers.fetch_add(1, Relaxed);
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ping_frame_answers_its_own_id() {
        let (request, answer) = ping_frame(14);
        assert_eq!(wire::mcp1_id(&request), Some(14));
        assert_eq!(wire::mcp1_id(&answer), Some(14));
        assert_eq!(header(1, 1, 0, 1, 0).len(), mcp1::HEADER_LEN);
    }
}
