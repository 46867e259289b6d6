//! Fuzz target `conn`: the whole per-connection state machine
//! (`junction::conn::Connection`: sniffing, either codec, dispatch, batches,
//! the worker pool hand-off, backpressure, end of input) driven the way the
//! reactor drives it, with arbitrary input split into arbitrary reads, and
//! writes, completions and end of input interleaved in arbitrary order.
//!
//! Why: the codecs are fuzzed on their own by the other targets; this one
//! looks for what only appears when they run inside a connection: a reply
//! lost or doubled across a read boundary, a batch never closed, a stall
//! under backpressure, output that is not valid for the protocol.
//!
//! Input: 4 setup bytes, then the stream the peer sends.
//! - byte 0: bits 0-2 `max-frame`, bits 3-4 `max-batch`, bits 5-6
//!   `max-output`, bit 7 the peer ends its side after the stream;
//! - byte 1: seed of the schedule (which of read, write, complete a pooled
//!   job, end of input comes next); bit 7 also allows timeouts and shutdown;
//! - byte 2: bits 0-2: the stream is sent 1 to 8 times over (so that the
//!   16 KiB ring wraps and grows);
//! - byte 3: seed of the read and write sizes.
//!
//! The router has cheap, deterministic handlers: `ping`, `echo`, `fail`
//! (an application error with data), `raw` (raw bytes), `big` (a result of
//! N bytes, for backpressure) inline, and `slow` (echo) on the pool, held
//! until the schedule lets it finish.
//!
//! What it checks:
//! - no panic, and the connection never stalls: while it wants input there
//!   is room to read into, and every schedule ends;
//! - the protocol picked is the one jsonrpc.md section 2 gives;
//! - everything written is well-formed for the protocol: the unknown-protocol
//!   line exactly; JSON-RPC lines of compact, valid response objects (or
//!   non-empty arrays of them) with ids echoed byte for byte; MCP1 frames of
//!   the kinds the daemon sends, with consistent lengths and payloads;
//! - (without timeouts or shutdown) the replies are exactly those the specs
//!   give for the stream, one per call, none for notifications, the error
//!   codes and ids right; in order when no pooled call is involved, as a
//!   multiset otherwise (pooled replies may come later, and batch elements
//!   in any order);
//! - after the peer's end of input and the last reply, the connection says
//!   it is finished (close, or linger after a refusal); and the server's
//!   buffered-output gauge comes back to where it was.

#![no_main]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use junction::RpcError;
use junction::access::{self, Peer};
use junction::buffer::RingPool;
use junction::conn::{Connection, Finish, Timeout, Timeouts};
use junction::dispatch::{Held, Limits, Shared};
use junction::proto::jsonrpc::{self, Entry, Message};
use junction_proto::{self as proto, Protocol, SNIFF_WINDOW, Sniff};
use junction::reactor::Waker;
use junction::router::{Context, Mode, Params, Router};
use junction::stats::Stats;
use junction::workers::{Completions, ConnRef, WorkerPool};
use junction::write_queue::{ChunkPool, MAX_IOVECS};
use junction_fuzz::feed::copy_to_space;
use junction_fuzz::out::{self, Reply};
use junction_fuzz::spec::{self, LineEvent, Mcp1Next, Mcp1Request};
use junction_fuzz::{Reads, Rng, Setup};
use libfuzzer_sys::fuzz_target;

const MAX_FRAMES: [usize; 8] = [1, 2, 16, 64, 300, 4096, 65536, 1 << 20];
const MAX_BATCHES: [usize; 4] = [1, 2, 16, 1024];
const MAX_OUTPUTS: [usize; 4] = [1, 100, 4096, 1 << 20];
/// The most bytes `big` returns.
const BIG_CAP: u32 = 8_192;
/// Steps after which a schedule counts as stuck.
const MAX_STEPS: usize = 2_000_000;

/// A counting gate the pooled handler waits at, so that the schedule
/// decides when pooled jobs finish (and the run replays exactly).
#[derive(Default)]
struct Gate {
    permits: Mutex<usize>,
    opened: Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut permits = self.permits.lock().expect("gate lock");
        while *permits == 0 {
            permits = self.opened.wait(permits).expect("gate lock");
        }
        *permits -= 1;
    }

    fn open(&self, n: usize) {
        *self.permits.lock().expect("gate lock") += n;
        self.opened.notify_all();
    }
}

/// What lives across runs: the router, one worker, its completion queue.
struct World {
    context: Arc<Context>,
    workers: WorkerPool,
    completions: Completions,
    gate: Arc<Gate>,
    generation: u32,
    /// The poll the worker's waker wakes: waited on for completions.
    poll: mio::Poll,
}

fn world() -> &'static Mutex<World> {
    static WORLD: OnceLock<Mutex<World>> = OnceLock::new();
    WORLD.get_or_init(|| {
        let gate = Arc::new(Gate::default());
        let context = Arc::new(Context::new(router(&gate), Arc::new(Stats::new(1))));
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(Waker::Mio(
            mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"),
        ));
        // A queue no run can fill: whether it is full would depend on timing.
        let (workers, completions) =
            WorkerPool::start(1, 1 << 20, Arc::clone(&context), waker).expect("pool");
        Mutex::new(World {
            context,
            workers,
            completions,
            gate,
            generation: 0,
            poll,
        })
    })
}

fn echo(params: Params<'_>, reply: &mut junction::Reply<'_>) {
    match params {
        Params::None => {}
        Params::Json(raw) => reply.json_text(raw),
        Params::Raw(bytes) => reply.bytes(bytes),
    }
}

fn router(gate: &Arc<Gate>) -> Router {
    let mut router = Router::new();
    let gate = Arc::clone(gate);
    router
        .method("ping", "", Mode::Inline, |_, reply| reply.json("pong"))
        .and_then(|r| {
            r.method("echo", "", Mode::Inline, |call, reply| {
                echo(call.params, reply);
                Ok(())
            })
        })
        .and_then(|r| {
            r.method("fail", "", Mode::Inline, |_, _| {
                Err(RpcError::new(4711, "failed \"on purpose\"")
                    .data(serde_json::json!({"why": ["fuzz", 1]})))
            })
        })
        .and_then(|r| {
            r.method("raw", "", Mode::Inline, |_, reply| {
                reply.bytes(b"\x00\x01");
                Ok(())
            })
        })
        .and_then(|r| {
            r.typed("big", "", Mode::Inline, |(n,): (u32,)| {
                Ok("x".repeat(n.min(BIG_CAP) as usize))
            })
        })
        .and_then(|r| {
            r.method("slow", "", Mode::Pooled, move |call, reply| {
                gate.pass();
                echo(call.params, reply);
                Ok(())
            })
        })
        .expect("the test router registers");
    router
}

/// What a call of `method` answers (None: no such method).
fn result_of(
    method: &str,
    params: Params<'_>,
    protocol: Protocol,
) -> Option<Result<(Vec<u8>, bool), i32>> {
    let echoed = || match params {
        Params::None => Ok((b"null".to_vec(), false)),
        // Over JSON-RPC, CR and LF between tokens are written as spaces
        // (jsonrpc.md section 3); MCP1 keeps them.
        Params::Json(raw) if protocol == Protocol::JsonRpc => {
            Ok((raw.get().replace(['\r', '\n'], " ").into_bytes(), false))
        }
        Params::Json(raw) => Ok((raw.get().as_bytes().to_vec(), false)),
        Params::Raw(bytes) => Ok((bytes.to_vec(), true)),
    };
    Some(match method {
        "ping" => Ok((b"\"pong\"".to_vec(), false)),
        "echo" | "slow" => echoed(),
        "fail" => Err(4711),
        "raw" if protocol == Protocol::JsonRpc => Err(-32003),
        "raw" => Ok((b"\x00\x01".to_vec(), true)),
        "big" => {
            let text = match params {
                Params::None => "null",
                Params::Json(raw) => raw.get(),
                Params::Raw(_) => return Some(Err(-32602)),
            };
            match serde_json::from_str::<(u32,)>(text) {
                Ok((n,)) => {
                    let s = "x".repeat(n.min(BIG_CAP) as usize);
                    Ok((serde_json::to_vec(&s).expect("string"), false))
                }
                Err(_) => Err(-32602),
            }
        }
        _ => return None,
    })
}

/// The replies the specs give for `stream`, and whether any involves a
/// pooled call (so their order is not fixed).
struct Expected {
    replies: Vec<Reply>,
    deferred: bool,
}

fn jsonrpc_expected(stream: &[u8], limits: Limits, eof: bool) -> Expected {
    let mut replies = Vec::new();
    let mut deferred = false;
    let (events, _) = spec::lines(stream, limits.max_frame, eof);
    let id_text =
        |id: Option<&serde_json::value::RawValue>| id.map_or("null", |i| i.get()).to_string();
    let entry_reply = |entry: Entry<'_>, deferred: &mut bool| -> Option<Reply> {
        match entry {
            Entry::Response { .. } => None,
            Entry::Invalid { id, error } => Some(Reply::Error {
                id: id_text(id),
                code: error.code,
            }),
            Entry::Request { id, method, params } => {
                *deferred |= method == "slow";
                let id = id_text(Some(id?));
                let params = params.map_or(Params::None, Params::Json);
                Some(match result_of(&method, params, Protocol::JsonRpc) {
                    None => Reply::Error { id, code: -32601 },
                    Some(Ok((result, raw))) => Reply::Result { id, result, raw },
                    Some(Err(code)) => Reply::Error { id, code },
                })
            }
        }
    };
    for event in events {
        match event {
            LineEvent::Line(line) => match jsonrpc::parse_line(line, limits.max_batch) {
                Message::Blank => {}
                Message::Invalid(error) => replies.push(Reply::Error {
                    id: "null".into(),
                    code: error.code,
                }),
                Message::Single(entry) => replies.extend(entry_reply(entry, &mut deferred)),
                Message::Batch(raws) => {
                    let items: Vec<Reply> = raws
                        .into_iter()
                        .filter_map(|raw| entry_reply(jsonrpc::parse_entry(raw), &mut deferred))
                        .collect();
                    if !items.is_empty() {
                        replies.push(Reply::Batch(items).canonical());
                    }
                }
            },
            // An unterminated last line over the limit is answered the same
            // way (jsonrpc.md section 3; fuzz/regressions/conn-eof-overlong-line).
            LineEvent::TooLong | LineEvent::TooLongAtEof => replies.push(Reply::Error {
                id: "null".into(),
                code: -32001,
            }),
        }
    }
    Expected { replies, deferred }
}

fn mcp1_expected(stream: &[u8], limit: usize, eof: bool) -> Expected {
    let mut replies = Vec::new();
    let mut deferred = false;
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        match spec::mcp1_next(rest, limit) {
            Mcp1Next::NeedMore => {
                if eof && !rest.is_empty() {
                    let id = if rest.len() >= 16 {
                        u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]])
                    } else {
                        0
                    };
                    replies.push(Reply::Error {
                        id: id.to_string(),
                        code: -32014,
                    });
                }
                break;
            }
            Mcp1Next::Error {
                code,
                id,
                close,
                skip,
            } => {
                replies.push(Reply::Error {
                    id: id.to_string(),
                    code,
                });
                if close {
                    break;
                }
                at += skip;
            }
            Mcp1Next::Frame {
                kind,
                flags,
                id,
                length,
            } => {
                let payload = &rest[16..16 + length as usize];
                at += 16 + length as usize;
                let key = id.to_string();
                match kind {
                    1 | 3 => match spec::mcp1_request(kind, flags, id, payload) {
                        Mcp1Request::Refused(code) => replies.push(Reply::Error { id: key, code }),
                        Mcp1Request::Call { method, body, raw } => {
                            deferred |= method == "slow";
                            let json;
                            let params = if raw {
                                Params::Raw(body)
                            } else if body.is_empty() {
                                Params::None
                            } else {
                                json = serde_json::from_slice::<&serde_json::value::RawValue>(body)
                                    .expect("the model checked the body");
                                Params::Json(json)
                            };
                            let answer = result_of(method, params, Protocol::Mcp1);
                            if kind == 1 {
                                replies.push(match answer {
                                    None => Reply::Error {
                                        id: key,
                                        code: -32601,
                                    },
                                    Some(Ok((result, raw))) => Reply::Result {
                                        id: key,
                                        result,
                                        raw,
                                    },
                                    Some(Err(code)) => Reply::Error { id: key, code },
                                });
                            }
                        }
                    },
                    6 => replies.push(Reply::Pong {
                        id: key,
                        payload: payload.to_vec(),
                    }),
                    _ => {}
                }
            }
        }
    }
    Expected { replies, deferred }
}

/// Blocks until the worker wakes the poll (or a short while passes), as the
/// reactor waits for completions.
fn wait_for_wake(poll: &mut mio::Poll, events: &mut mio::Events) {
    if let Err(e) = poll.poll(events, Some(Duration::from_millis(50))) {
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "poll: {e}");
    }
}

/// `JUNCTION_FUZZ_DEBUG=1`: print each step of the schedule and the output.
fn debug() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("JUNCTION_FUZZ_DEBUG").is_some())
}

/// How a run went.
struct Run {
    written: Vec<u8>,
    /// Bytes of the stream the connection was given.
    received: usize,
    protocol: Option<Protocol>,
    /// A timeout or shutdown changed the conversation: no spec comparison.
    disturbed: bool,
    /// Closed by a timeout with output still unsent: the last reply may be cut.
    cut: bool,
}

/// The written bytes up to the end of the last whole line or frame.
fn whole_part(written: &[u8], protocol: Option<Protocol>) -> &[u8] {
    match protocol {
        None => written,
        Some(Protocol::JsonRpc) => {
            let end = written
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            &written[..end]
        }
        Some(Protocol::Mcp1) => {
            let mut end = 0;
            while let Some(header) = written.get(end..end + 16) {
                let length = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
                let next = end + 16 + length as usize;
                if next > written.len() {
                    break;
                }
                end = next;
            }
            &written[..end]
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (setup, body) = Setup::split(data);
    let limits = Limits {
        max_frame: MAX_FRAMES[usize::from(setup.a & 7)],
        max_batch: MAX_BATCHES[usize::from((setup.a >> 3) & 3)],
        max_output: MAX_OUTPUTS[usize::from((setup.a >> 5) & 3)],
        // Out of reach: the memory limit is a loop-wide policy, not the codec's,
        // and the in-flight cap would need the loop to read again.
        max_buffer_memory: 1 << 40,
        max_output_hard: usize::MAX,
        max_in_flight: usize::MAX,
    };
    let eof = setup.a & 0x80 != 0;
    let chaos = setup.b & 0x80 != 0;
    let stream = body.repeat(1 + usize::from(setup.wrap & 7));

    let mut world = world()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let run = drive(&mut world, &stream, limits, eof, &setup, chaos);
    check(&stream, limits, eof, &run);
});

/// Checks what a run wrote against the protocol and, when nothing disturbed
/// it, against the spec.
fn check(stream: &[u8], limits: Limits, eof: bool, run: &Run) {
    if debug() {
        eprintln!("written: {:?}", String::from_utf8_lossy(&run.written));
    }
    let window = &stream[..run.received.min(SNIFF_WINDOW)];
    let sniffed = spec::sniff(window);
    let written = if run.cut {
        whole_part(&run.written, run.protocol)
    } else {
        &run.written[..]
    };
    if sniffed == Sniff::Http {
        // HTTP (src/http/) is beyond this target's model of lines and
        // frames; tests/http*.rs and tests/websocket*.rs drive it.
        return;
    }
    let mut got = match (sniffed, run.protocol) {
        (Sniff::NeedMore, None) => {
            assert!(
                run.written.is_empty(),
                "output before the protocol is known"
            );
            return;
        }
        (Sniff::Unknown, None) if run.cut => {
            assert!(proto::UNKNOWN_PROTOCOL_REPLY.starts_with(&run.written));
            return;
        }
        (Sniff::Unknown, None) => {
            assert_eq!(run.written, proto::UNKNOWN_PROTOCOL_REPLY);
            return;
        }
        (Sniff::Detected(Protocol::JsonRpc), Some(Protocol::JsonRpc)) => {
            out::jsonrpc_stream(written)
        }
        (Sniff::Detected(Protocol::Mcp1), Some(Protocol::Mcp1)) => out::mcp1_stream(written),
        (spec, conn) => panic!("the spec sniffs {spec:?}, the connection {conn:?}"),
    };
    if run.disturbed {
        return;
    }
    let want = match run.protocol {
        Some(Protocol::Mcp1) => mcp1_expected(stream, limits.max_frame, eof),
        _ => jsonrpc_expected(stream, limits, eof),
    };
    let mut want_replies = want.replies;
    if got.iter().any(holds_batch_limit) {
        // A batch whose response passed max-output answers its later calls
        // with -32025 instead of running them (jsonrpc.md section 6), which
        // depends on the byte size of each answer; the model counts no
        // bytes. Such runs still check every other reply exactly, and that
        // every batch answers the same ids.
        got = got.into_iter().map(ids_only).collect();
        want_replies = want_replies.into_iter().map(ids_only).collect();
    }
    if want.deferred {
        got.sort();
        want_replies.sort();
    }
    assert_eq!(got, want_replies, "replies differ from the spec");
}

/// A batch reply with a -32025 "Limit reached" element.
fn holds_batch_limit(reply: &Reply) -> bool {
    matches!(reply, Reply::Batch(items)
        if items.iter().any(|i| matches!(i, Reply::Error { code: -32025, .. })))
}

/// A batch reply reduced to its elements' ids (as errors of code 0); any
/// other reply as it is.
fn ids_only(reply: Reply) -> Reply {
    match reply {
        Reply::Batch(items) => Reply::Batch(
            items
                .into_iter()
                .map(|item| match item {
                    Reply::Result { id, .. } | Reply::Error { id, .. } | Reply::Pong { id, .. } => {
                        Reply::Error { id, code: 0 }
                    }
                    other => other,
                })
                .collect(),
        )
        .canonical(),
        other => other,
    }
}

/// Drives a connection through `stream` on a schedule drawn from the setup,
/// the way the reactor does: reads only while it wants input, a resume after
/// each write, completions taken back in the order the worker finishes.
fn drive(
    world: &mut World,
    stream: &[u8],
    limits: Limits,
    eof: bool,
    setup: &Setup,
    chaos: bool,
) -> Run {
    world.generation = world.generation.wrapping_add(1);
    let id = ConnRef {
        token: 0,
        generation: world.generation,
    };
    let mut clock = Instant::now();
    // Every peer may call everything: the policy is not what is fuzzed here
    // (tests/policy*.rs check it), the state machine is.
    let rights = junction::policy::Rights::new(
        Arc::new(junction::policy::Identity::unauthenticated()),
        Arc::new(junction::policy::Grants::everything()),
    );
    let mut conn =
        Connection::new(id, Peer::Unix(None), access::Gate::Open, clock).with_rights(rights);
    let mut rings = RingPool::new(4);
    let mut chunks = ChunkPool::new(8);
    let mut scratch = Vec::new();
    // No loop-mode methods, and a queue no run fills: nothing is ever held.
    let mut held = Held::default();
    // No provider registers in a run: every routed name is "not found".
    let mut bus = junction::bus::Bus::new(
        world.context.bus_config().clone(),
        world.context.stats_handle(),
        std::sync::Arc::clone(world.context.directory()),
    );
    let stats = world.context.stats();
    let gauge_before = stats.output_buffered.load(Relaxed);
    let mut timed = Vec::with_capacity(64);
    let mut frames = [0u64; 2];
    let mut shared = Shared {
        context: &world.context,
        workers: &world.workers,
        rings: &mut rings,
        chunks: &mut chunks,
        limits,
        held: &mut held,
        bus: &mut bus,
        now: Instant::now(),
        timed: &mut timed,
        frames: &mut frames,
    };
    let mut reads = Reads::new(setup.seed);
    let mut writes = Reads::new(setup.seed.rotate_left(3) ^ setup.b);
    let mut events = mio::Events::with_capacity(4);
    let mut schedule = Rng::new(u64::from(setup.b) << 8 | u64::from(setup.seed));
    // Style 0 reads everything it can, writes everything, and finishes
    // pooled jobs only at the end; the others interleave at random.
    let calm = setup.b & 3 == 0;
    let mut written = Vec::new();
    let mut at = 0;
    let mut eof_done = false;
    let mut disturbed = false;
    let mut closed = false;
    let mut cut = false;

    for step in 0.. {
        assert!(step < MAX_STEPS, "the schedule does not end");
        clock += Duration::from_millis(1);
        let can_read = conn.wants_input() && at < stream.len();
        let can_end = eof && !eof_done && at == stream.len() && conn.wants_input();
        // Paused with nothing to write and jobs in flight, only a completion
        // moves it (the reactor waits for one); a write would change nothing.
        let can_write =
            !conn.output().is_empty() || (conn.is_paused() && conn.in_flight() == 0);
        let can_complete = conn.in_flight() > 0;
        if closed || (!can_read && !can_end && !can_write && !can_complete) {
            break;
        }
        let action = if calm {
            if can_read {
                0
            } else if can_write {
                2
            } else if can_end {
                1
            } else {
                3
            }
        } else {
            loop {
                let pick = schedule.below(if chaos { 12 } else { 10 });
                let ok = match pick {
                    0..=3 => can_read,
                    4 => can_end,
                    5..=7 => can_write,
                    8 | 9 => can_complete,
                    _ => true,
                };
                if ok {
                    break match pick {
                        0..=3 => 0,
                        4 => 1,
                        5..=7 => 2,
                        8 | 9 => 3,
                        10 => 4,
                        _ => 5,
                    };
                }
            }
        };
        if debug() {
            let mut iov = [std::io::IoSlice::new(&[]); MAX_IOVECS];
            let used = conn.output().iovecs(&mut iov);
            let pending: Vec<u8> = iov[..used].iter().flat_map(|s| s.iter().copied()).collect();
            eprintln!(
                "step {step}: action {action} at {at} out {:?} flight {} proto {:?}",
                String::from_utf8_lossy(&pending),
                conn.in_flight(),
                conn.protocol()
            );
        }
        match action {
            0 => {
                let want = reads.next(stream.len() - at);
                let ring = conn
                    .read_space(&mut shared)
                    .expect("the memory limit is out of reach");
                let took = copy_to_space(ring, &stream[at..at + want]);
                assert!(
                    took > 0,
                    "the connection wants input but has no room for it"
                );
                at += took;
                conn.received(took, clock, &mut shared, &mut scratch);
                conn.release_idle_buffers(&mut shared);
            }
            1 => {
                conn.end_of_input(&mut shared, &mut scratch);
                eof_done = true;
            }
            2 => {
                let pending = conn.output().len();
                let n = if calm || pending == 0 {
                    pending
                } else {
                    writes.next(pending)
                };
                let mut iov = [std::io::IoSlice::new(&[]); MAX_IOVECS];
                let used = conn.output().iovecs(&mut iov);
                let mut left = n;
                for slice in &iov[..used] {
                    let take = left.min(slice.len());
                    written.extend_from_slice(&slice[..take]);
                    left -= take;
                }
                let n = n - left;
                conn.wrote(n, clock, &mut shared);
                conn.flushed(clock);
                let _ = conn.resume(&mut shared, &mut scratch);
            }
            3 => {
                let n = if calm {
                    conn.in_flight()
                } else {
                    1 + schedule.below(conn.in_flight())
                };
                world.gate.open(n);
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut taken = 0;
                loop {
                    for done in world.completions.drain() {
                        assert_eq!(done.conn, id, "a completion for another connection");
                        let _ = conn.complete(done, &mut shared, &mut scratch);
                        taken += 1;
                    }
                    if taken >= n {
                        break;
                    }
                    assert!(Instant::now() < deadline, "a pooled job never finished");
                    wait_for_wake(&mut world.poll, &mut events);
                }
            }
            4 => {
                // The sweep of the reactor, with every timeout long past.
                let timeouts = Timeouts {
                    frame: Duration::from_millis(1),
                    idle: Duration::from_millis(1),
                    write: Duration::from_millis(1),
                };
                match conn.timed_out(clock + Duration::from_secs(1), &timeouts) {
                    Some(Timeout::Frame) => {
                        conn.frame_timed_out(timeouts.frame, &mut shared);
                        disturbed = true;
                    }
                    Some(Timeout::Idle | Timeout::Write) => {
                        cut = !conn.output().is_empty();
                        closed = true;
                        disturbed = true;
                    }
                    None => {}
                }
            }
            _ => {
                conn.stop_input();
                disturbed = true;
            }
        }
        if !closed && conn.output().is_empty() && conn.in_flight() == 0 {
            match conn.finish() {
                Finish::Open => {}
                Finish::Close | Finish::Linger => closed = true,
            }
        }
    }

    if !closed && (eof_done || disturbed) {
        panic!("input ended and everything answered, yet the connection stays open");
    }
    if closed && !disturbed && conn.finish() == Finish::Close {
        assert!(eof_done, "closed without the peer's end of input");
    }
    // Jobs still held when a run closes early: let them finish and drop them.
    let held = conn.in_flight();
    if held > 0 {
        world.gate.open(held);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut taken = 0;
        loop {
            taken += world.completions.drain().count();
            if taken >= held {
                break;
            }
            assert!(Instant::now() < deadline, "a pooled job never finished");
            wait_for_wake(&mut world.poll, &mut events);
        }
    }
    let protocol = conn.protocol();
    conn.discard_output(&mut shared);
    conn.release_idle_buffers(&mut shared);
    assert_eq!(
        stats.output_buffered.load(Relaxed),
        gauge_before,
        "the output gauge does not come back"
    );
    Run {
        written,
        received: at,
        protocol,
        disturbed,
        cut,
    }
}
