//! The soak's long-lived clients: what they share, how failures are counted,
//! and the steady (pipelined or one-at-a-time) and batch loops. The churning
//! and malformed clients are in `abuse.rs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use junction::client::Endpoint;
use serde_json::value::RawValue;

use super::wire::{self, Call, Link, Op, Rng};
use crate::workload::Proto;

/// A transport a client prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The Unix socket.
    Unix,
    /// TCP on loopback.
    Tcp,
}

/// What one client thread does, over and over, until the soak ends.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// Blocks of `depth` mixed calls on one connection (`depth` 1: one at a
    /// time), reconnecting now and then; `large` sends payloads of 16 KiB
    /// and more, which wrap the daemon's ring buffer.
    Steady {
        /// The protocol.
        proto: Proto,
        /// The transport.
        transport: Transport,
        /// Calls in flight.
        depth: usize,
        /// Large payloads.
        large: bool,
    },
    /// JSON-RPC batches mixing calls, notifications and invalid entries.
    Batch(Transport),
    /// Connect, a few calls, disconnect: cleanly, half-closed, with calls in
    /// flight, in the middle of a frame, or without a word.
    Churn,
    /// Input the daemon must refuse, each case checked to its error and close.
    Malformed,
}

/// Why an iteration failed.
pub enum Failure {
    /// The daemon answered something other than the expected bytes.
    Mismatch(String),
    /// A connect, read or write failed, timed out, or the daemon closed early.
    Io(String),
}

impl Failure {
    /// An I/O failure while doing `what`; a read timeout is called a hang.
    pub fn io(what: &str) -> impl FnOnce(std::io::Error) -> Failure + '_ {
        move |e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Failure::Io(format!(
                "{what}: no progress within the timeout (a hang?): {e}"
            )),
            _ => Failure::Io(format!("{what}: {e}")),
        }
    }
}

/// Counters every client adds to; read by the sampler and at the end.
#[derive(Default)]
pub struct Tally {
    /// Answers received and found right.
    pub answers: AtomicU64,
    /// Errors the soak provoked on purpose and got as expected.
    pub provoked: AtomicU64,
    /// Connections opened by the clients.
    pub connections: AtomicU64,
    /// Short-lived connections (churn and malformed) completed.
    pub churned: AtomicU64,
    /// Connections ended abruptly: calls in flight, mid-frame, or a reset.
    pub abrupt: AtomicU64,
    /// Wrong answers.
    pub mismatches: AtomicU64,
    /// Unexpected failures: I/O errors, timeouts, early closes.
    pub errors: AtomicU64,
    /// The first failures, described.
    pub log: Mutex<Vec<String>>,
}

/// How many failures are kept for the report.
const LOGGED: usize = 20;

impl Tally {
    /// Counts `failure` of client `slot`.
    pub fn fail(&self, slot: usize, failure: Failure) {
        let text = match failure {
            Failure::Mismatch(text) => {
                self.mismatches.fetch_add(1, Relaxed);
                format!("client {slot}: wrong answer: {text}")
            }
            Failure::Io(text) => {
                self.errors.fetch_add(1, Relaxed);
                format!("client {slot}: {text}")
            }
        };
        if let Ok(mut log) = self.log.lock()
            && log.len() < LOGGED
        {
            log.push(text);
        }
    }
}

/// Everything the clients share.
pub struct Ctx {
    /// The Unix endpoint, when the daemon has one.
    pub unix: Option<Endpoint>,
    /// The TCP endpoint, when the daemon has one.
    pub tcp: Option<Endpoint>,
    /// The daemon has the pooled echo.
    pub pooled: bool,
    /// Longest wait for any answer.
    pub timeout: Duration,
    /// The daemon's max-frame, for payload sizes and the oversized cases.
    pub max_frame: usize,
    /// Time between two connections of one churning client.
    pub churn_every: Duration,
    /// Set when the soak is over.
    pub stop: AtomicBool,
    /// The counters.
    pub tally: Tally,
}

impl Ctx {
    /// True once the soak is over.
    pub fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// The endpoint for `transport`, or the other one when it is off.
    pub fn endpoint(&self, transport: Transport) -> &Endpoint {
        let (first, second) = match transport {
            Transport::Unix => (&self.unix, &self.tcp),
            Transport::Tcp => (&self.tcp, &self.unix),
        };
        // The soak starts only with at least one endpoint.
        first.as_ref().or(second.as_ref()).unwrap_or_else(|| {
            unreachable!("the soak needs an endpoint");
        })
    }

    /// Opens a connection and counts it.
    pub fn connect(&self, transport: Transport) -> Result<Link, Failure> {
        let endpoint = self.endpoint(transport);
        let link = Link::connect(endpoint, self.timeout)
            .map_err(|e| Failure::Io(format!("connect to {endpoint}: {e}")))?;
        self.tally.connections.fetch_add(1, Relaxed);
        Ok(link)
    }

    /// An echo of `min` to `min + spread` bytes: pooled now and then when
    /// the daemon has the pooled echo, else inline.
    pub fn echo(&self, rng: &mut Rng, min: usize, spread: usize) -> Op {
        // Room for the envelope: a payload never makes a frame over max-frame.
        let size = (min + rng.below(spread.max(1))).min(self.max_frame.saturating_sub(256));
        if self.pooled && rng.chance(30) {
            Op::PooledEcho(size)
        } else {
            Op::Echo(size)
        }
    }
}

/// Builds call `op` in `proto`.
pub fn build(proto: Proto, op: Op, id: u64, rng: &mut Rng) -> Call {
    match proto {
        Proto::Mcp1 => wire::mcp1(op, id, rng),
        _ => wire::jsonrpc(op, id, rng),
    }
}

/// The start of `bytes`, printable, for failure reports.
pub fn show(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(160)];
    let more = if bytes.len() > cut.len() {
        format!("... ({} bytes)", bytes.len())
    } else {
        String::new()
    };
    format!("{:?}{more}", String::from_utf8_lossy(cut))
}

/// Sends `calls` in one write and checks every answer, matched by id.
pub fn exchange(
    link: &mut Link,
    proto: Proto,
    calls: &[Call],
    ctx: &Ctx,
    buf: &mut Vec<u8>,
) -> Result<(), Failure> {
    let block: Vec<u8> = calls
        .iter()
        .flat_map(|c| c.request.iter().copied())
        .collect();
    link.send(&block).map_err(Failure::io("write"))?;
    collect(link, proto, calls, ctx, buf)
}

/// Reads and checks the answers owed for `calls` (sent already), any order.
pub fn collect(
    link: &mut Link,
    proto: Proto,
    calls: &[Call],
    ctx: &Ctx,
    buf: &mut Vec<u8>,
) -> Result<(), Failure> {
    let mut owed: HashMap<u64, &Call> = calls
        .iter()
        .filter(|c| !c.answer.is_empty())
        .map(|c| (c.id, c))
        .collect();
    while !owed.is_empty() {
        let id = match proto {
            Proto::Mcp1 => {
                link.frame(buf).map_err(Failure::io("read a frame"))?;
                wire::mcp1_id(buf)
            }
            _ => {
                link.line(buf).map_err(Failure::io("read a line"))?;
                wire::jsonrpc_id(buf)
            }
        };
        let Some(call) = id.and_then(|id| owed.remove(&id)) else {
            return Err(Failure::Mismatch(format!(
                "an answer to no call in flight: {}",
                show(buf)
            )));
        };
        if call.answer != *buf {
            return Err(Failure::Mismatch(format!(
                "expected {}, got {}",
                show(&call.answer),
                show(buf)
            )));
        }
        let counter = if call.provoked {
            &ctx.tally.provoked
        } else {
            &ctx.tally.answers
        };
        counter.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// One op of the everyday mix; `large` picks ring-wrapping echoes instead.
fn pick(ctx: &Ctx, rng: &mut Rng, large: bool) -> Op {
    if large {
        let top = (ctx.max_frame / 4).max(32 * 1024);
        return ctx.echo(rng, 16 * 1024, top - 16 * 1024);
    }
    match rng.below(100) {
        0..35 => Op::Ping,
        35..70 => ctx.echo(rng, 0, 200),
        70..82 => ctx.echo(rng, 1024, 15 * 1024),
        82..90 => Op::Heartbeat(rng.below(64)),
        90..97 => Op::Notify,
        _ => Op::Missing,
    }
}

/// The steady client: blocks of `depth` calls, a new connection every few
/// hundred to few thousand blocks.
pub fn steady(ctx: &Ctx, slot: usize, rng: &mut Rng, role: (Proto, Transport, usize, bool)) {
    let (proto, transport, depth, large) = role;
    let mut buf = Vec::new();
    while !ctx.stopped() {
        let outcome = ctx.connect(transport).and_then(|mut link| {
            let rounds = 200 + rng.below(2000);
            let mut id = 0u64;
            for _ in 0..rounds {
                if ctx.stopped() {
                    break;
                }
                let calls: Vec<Call> = (0..depth.max(1))
                    .map(|_| {
                        id += 1;
                        let op = pick(ctx, rng, large);
                        build(proto, op, id, rng)
                    })
                    .collect();
                exchange(&mut link, proto, &calls, ctx, &mut buf)?;
            }
            Ok(())
        });
        if let Err(failure) = outcome {
            ctx.tally.fail(slot, failure);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The invalid batch entry and what it gets.
const NOT_AN_OBJECT: &str = "42";
const NOT_AN_OBJECT_ANSWER: &str = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request: expected a request object, got a number\"},\"id\":null}";

/// One batch on `link`: 1 to 24 entries; the answer array is checked entry
/// by entry, byte for byte, matched by id.
fn batch(link: &mut Link, ctx: &Ctx, rng: &mut Rng, id: &mut u64) -> Result<(), Failure> {
    let mut entries = Vec::new();
    let mut owed: HashMap<u64, Call> = HashMap::new();
    let mut invalid = 0usize;
    for _ in 0..1 + rng.below(24) {
        let op = match rng.below(100) {
            0..30 => Op::Ping,
            30..65 => ctx.echo(rng, 0, 300),
            65..80 => Op::Notify,
            80..92 => Op::Missing,
            _ => {
                invalid += 1;
                entries.push(NOT_AN_OBJECT.as_bytes().to_vec());
                continue;
            }
        };
        *id += 1;
        let mut call = wire::jsonrpc(op, *id, rng);
        call.request.pop(); // the LF: entries are joined into one line
        call.answer.pop();
        entries.push(std::mem::take(&mut call.request));
        if !call.answer.is_empty() {
            owed.insert(call.id, call);
        }
    }
    let mut line = b"[".to_vec();
    line.extend_from_slice(&entries.join(&b","[..]));
    line.extend_from_slice(b"]\n");
    // A call after the batch proves that a batch owing nothing got no answer.
    *id += 1;
    let after = wire::jsonrpc(Op::Ping, *id, rng);
    line.extend_from_slice(&after.request);
    link.send(&line).map_err(Failure::io("write a batch"))?;
    // A batch waiting for pooled entries does not hold back the line after
    // it: the two answers may come in either order.
    let mut buf = Vec::new();
    let mut batch_owed = !owed.is_empty() || invalid > 0;
    let mut after_owed = true;
    while batch_owed || after_owed {
        link.line(&mut buf)
            .map_err(Failure::io("read a batch answer"))?;
        if buf.first() == Some(&b'[') && batch_owed {
            check_batch(&buf, std::mem::take(&mut owed), invalid, ctx)?;
            batch_owed = false;
        } else if buf == after.answer && after_owed {
            ctx.tally.answers.fetch_add(1, Relaxed);
            after_owed = false;
        } else {
            return Err(Failure::Mismatch(format!("after a batch: {}", show(&buf))));
        }
    }
    Ok(())
}

/// Checks a batch's answer array: one entry per call, any order, each byte
/// for byte, and one -32600 per invalid entry.
fn check_batch(
    line: &[u8],
    mut owed: HashMap<u64, Call>,
    invalid: usize,
    ctx: &Ctx,
) -> Result<(), Failure> {
    let answers: Vec<&RawValue> = serde_json::from_slice(line)
        .map_err(|e| Failure::Mismatch(format!("not a JSON array ({e}): {}", show(line))))?;
    if answers.len() != owed.len() + invalid {
        return Err(Failure::Mismatch(format!(
            "{} answers for {} calls and {invalid} invalid entries: {}",
            answers.len(),
            owed.len(),
            show(line)
        )));
    }
    for answer in answers {
        let text = answer.get().as_bytes();
        if text == NOT_AN_OBJECT_ANSWER.as_bytes() {
            ctx.tally.provoked.fetch_add(1, Relaxed);
            continue;
        }
        match wire::jsonrpc_id(text).and_then(|id| owed.remove(&id)) {
            Some(call) if call.answer == text => {
                let counter = if call.provoked {
                    &ctx.tally.provoked
                } else {
                    &ctx.tally.answers
                };
                counter.fetch_add(1, Relaxed);
            }
            _ => return Err(Failure::Mismatch(format!("batch entry {}", show(text)))),
        }
    }
    Ok(())
}

/// The batch client: one connection, a batch at a time, renewed now and then.
pub fn batches(ctx: &Ctx, slot: usize, rng: &mut Rng, transport: Transport) {
    while !ctx.stopped() {
        let outcome = ctx.connect(transport).and_then(|mut link| {
            let mut id = 0;
            for _ in 0..100 + rng.below(1000) {
                if ctx.stopped() {
                    break;
                }
                batch(&mut link, ctx, rng, &mut id)?;
            }
            Ok(())
        });
        if let Err(failure) = outcome {
            ctx.tally.fail(slot, failure);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
