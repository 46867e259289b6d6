//! From decoded request to response bytes: routes each request to an inline
//! handler (run here, answered straight into the write queue) or to the
//! worker pool, assembles batch responses, and takes completions back.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use serde_json::value::RawValue;
use slab::Slab;

use crate::access::AUTH_METHOD;
use crate::access::Peer;
use crate::buffer::RingPool;
use crate::bus::{self, Bus, Caller, Outcome};
use crate::error::{ErrorCode, RpcError};
use crate::proto::Protocol;
use crate::proto::jsonrpc::{self, Entry, Message};
use crate::proto::mcp1::{self, FrameError, Header, Kind};
use crate::router::{Call, Context, Mode, Params, Reply};
use crate::stats::Stats;
use crate::workers::{Completion, ConnRef, Job, OwnedParams, ReplyTo, SubmitError, WorkerPool};
use crate::write_queue::{ChunkPool, WriteQueue};

mod monitor;
mod policy;

/// Inline calls timed together at most: a longer pass is timed in parts.
const MAX_TIMED: usize = 64;

/// What a connection that must authenticate does after its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The token matched: serve requests from now on.
    Passed,
    /// Nothing to judge yet (a blank line).
    Waiting,
    /// No token, a wrong one, or another request first: the error is sent; close.
    Refused,
}

/// Limits every connection applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame (a JSON-RPC line, without its newline) in bytes.
    pub max_frame: usize,
    /// Most entries in one JSON-RPC batch.
    pub max_batch: usize,
    /// Pending output at which a connection stops being read (backpressure).
    pub max_output: usize,
    /// Pending output past which a connection is closed.
    pub max_output_hard: usize,
    /// Requests of one connection waiting on workers or on bus providers at
    /// which it stops being read until one is answered.
    pub max_in_flight: usize,
    /// Ring storage plus pending output, all connections together, past
    /// which no connection gets more ring storage to read into.
    pub max_buffer_memory: usize,
}

/// What connections borrow from the loop while they run.
pub struct Shared<'a> {
    /// Methods and counters.
    pub context: &'a Arc<Context>,
    /// The pool pooled methods run on.
    pub workers: &'a WorkerPool,
    /// Ring storage.
    pub rings: &'a mut RingPool,
    /// Output chunks.
    pub chunks: &'a mut ChunkPool,
    /// Limits.
    pub limits: Limits,
    /// Jobs the loop holds instead of the pool.
    pub held: &'a mut Held,
    /// The service bus: routed names, pending calls, subscriptions.
    pub bus: &'a mut Bus,
    /// When this loop turn began: a call read in it counts its latency
    /// from there (one clock read per call, at its answer, not two).
    pub now: Instant,
    /// Inline calls answered in the current parse pass, timed together by
    /// [`Dispatcher::flush_timed`], which whoever runs a dispatcher calls
    /// after each pass (conn.rs does).
    pub timed: &'a mut Vec<crate::observe::TimedCall>,
    /// Frames read in the current parse pass, per protocol (indexed by
    /// `Protocol as usize`), added to the shared counters once per pass by
    /// [`Dispatcher::flush_timed`]: one atomic add per frame cost the loop
    /// about 2% of its CPU at P=16.
    pub frames: &'a mut [u64; 2],
}

/// Jobs the loop holds rather than the pool: loop-mode calls to run once the
/// current read is parsed, and pooled jobs that found the worker queue full.
/// A connection with a parked job is not read until the job is queued, so a
/// full queue pushes back on reading, not on memory.
#[derive(Debug, Default)]
pub struct Held {
    /// [`Mode::Loop`] calls, run by the loop after this turn's reads.
    pub on_loop: Vec<Job>,
    /// Pooled jobs waiting for room in the queue, oldest first.
    pub parked: VecDeque<Job>,
}

impl Shared<'_> {
    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        self.context.stats()
    }

    /// Ring storage held plus output pending (shared event bytes once), all
    /// connections together.
    pub fn buffer_memory(&self) -> usize {
        let stats = self.stats();
        self.rings.in_use()
            + stats.output_buffered.load(Relaxed) as usize
            + stats.shared_bytes.load(Relaxed) as usize
    }
}

/// A batch whose responses are still being collected. Its body counts as
/// the connection's output (memory, max-output, max-output-hard); once it
/// holds max-output bytes, its requests not yet run are answered with
/// -32025 instead (a notification still runs: it adds nothing).
#[derive(Debug, Default)]
pub struct PendingBatch {
    body: Vec<u8>,
    waiting: usize,
}

/// A connection's batches still being collected: nothing at all (one
/// pointer in the connection) until its first batch, since most connections
/// never send one and every idle connection pays for what it holds inline.
#[derive(Debug, Default)]
pub struct Batches(Option<Box<Slab<PendingBatch>>>);

impl Batches {
    fn insert(&mut self, batch: PendingBatch) -> usize {
        self.0.get_or_insert_default().insert(batch)
    }

    fn get(&self, key: usize) -> Option<&PendingBatch> {
        self.0.as_ref()?.get(key)
    }

    fn get_mut(&mut self, key: usize) -> Option<&mut PendingBatch> {
        self.0.as_mut()?.get_mut(key)
    }

    fn contains(&self, key: usize) -> bool {
        self.get(key).is_some()
    }

    fn remove(&mut self, key: usize) -> PendingBatch {
        let slab = self.0.as_mut().expect("a batch that is pending");
        let batch = slab.remove(key);
        if slab.is_empty() {
            self.0 = None;
        }
        batch
    }

    /// No batch is being collected.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|slab| slab.is_empty())
    }

    /// Drops every batch being collected (the connection closes).
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

impl PendingBatch {
    fn push_entry(&mut self, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        self.body
            .push(if self.body.is_empty() { b'[' } else { b',' });
        write(&mut self.body)
    }
}

/// The parts of a connection that answering touches.
pub struct Dispatcher<'c, 's, 'a> {
    /// Which connection this is (for jobs).
    pub conn: ConnRef,
    /// Who is at its other end (for the bus).
    pub peer: &'c Peer,
    /// Its identity and what the policy lets it do.
    pub rights: &'c mut crate::policy::Rights,
    /// False over plain HTTP POST: the daemon cannot write to it unasked,
    /// so bus calls that need that (crate::http::NEEDS_PUSH) are refused.
    pub push: bool,
    /// Its output.
    pub out: &'c mut WriteQueue,
    /// Its batches still waiting on workers.
    pub batches: &'c mut Batches,
    /// Bytes their bodies hold.
    pub batched: &'c mut usize,
    /// Its jobs at the pool (or held by the loop).
    pub in_flight: &'c mut usize,
    /// Its jobs parked while the worker queue is full.
    pub parked: &'c mut u32,
    /// The loop's shared state.
    pub shared: &'s mut Shared<'a>,
}

/// How a request is to be answered: the protocol, the id, and for JSON-RPC
/// the batch it belongs to.
#[derive(Debug, Clone, Copy)]
enum Answer<'r> {
    JsonRpc {
        id: Option<&'r RawValue>,
        batch: Option<usize>,
    },
    Mcp1 {
        id: Option<u32>,
    },
}

impl Answer<'_> {
    fn protocol(&self) -> Protocol {
        match self {
            Answer::JsonRpc { .. } => Protocol::JsonRpc,
            Answer::Mcp1 { .. } => Protocol::Mcp1,
        }
    }

    fn is_notification(&self) -> bool {
        match self {
            Answer::JsonRpc { id, .. } => id.is_none(),
            Answer::Mcp1 { id } => id.is_none(),
        }
    }

    /// The same, owned, for a job that outlives the frame.
    fn to_owned(self) -> ReplyTo {
        match self {
            Answer::JsonRpc { id, batch } => ReplyTo::JsonRpc {
                id: id.map(ToOwned::to_owned),
                batch,
            },
            Answer::Mcp1 { id } => ReplyTo::Mcp1 { id },
        }
    }

    fn batch(&self) -> Option<usize> {
        match self {
            Answer::JsonRpc { batch, .. } => *batch,
            Answer::Mcp1 { .. } => None,
        }
    }
}

impl Dispatcher<'_, '_, '_> {
    /// Handles one JSON-RPC line.
    pub fn jsonrpc_line(&mut self, line: &[u8]) {
        if let Some(request) = jsonrpc::compact_request(line) {
            // The common request, as `parse_line` would give it, without
            // building the message.
            self.count_frame(Protocol::JsonRpc);
            let params = request.params.map_or(Params::None, Params::Json);
            let answer = Answer::JsonRpc {
                id: request.id,
                batch: None,
            };
            return self.call(answer, request.method, params);
        }
        let message = jsonrpc::parse_line(line, self.shared.limits.max_batch);
        if !matches!(message, Message::Blank) {
            self.count_frame(Protocol::JsonRpc);
        }
        match message {
            Message::Blank => {}
            Message::Invalid(error) => self.send_error(
                Answer::JsonRpc {
                    id: None,
                    batch: None,
                },
                &error,
            ),
            Message::Single(entry) => self.jsonrpc_entry(entry, None),
            Message::Batch(entries) => {
                let key = self.batches.insert(PendingBatch::default());
                for raw in entries {
                    self.jsonrpc_entry(jsonrpc::parse_entry(raw), Some(key));
                }
                self.finish_batch_if_done(key);
            }
        }
    }

    fn jsonrpc_entry(&mut self, entry: Entry<'_>, batch: Option<usize>) {
        match entry {
            Entry::Request { id: Some(id), .. } if self.batch_is_full(batch) => {
                let error = RpcError::with(
                    ErrorCode::LimitReached,
                    format_args!(
                        "the batch's response passed max-output ({} bytes); this request was not run",
                        self.shared.limits.max_output
                    ),
                );
                self.send_error(
                    Answer::JsonRpc {
                        id: Some(id),
                        batch,
                    },
                    &error,
                );
            }
            Entry::Request { id, method, params } => self.call(
                Answer::JsonRpc { id, batch },
                &method,
                params.map_or(Params::None, Params::Json),
            ),
            // Invalid requests are answered even without an id (with id null).
            Entry::Invalid { id, error } => self.send_error(Answer::JsonRpc { id, batch }, &error),
            // A provider answering a call the bus forwarded to it.
            Entry::Response { id, outcome } => {
                let id = id.and_then(|raw| raw.get().parse::<u32>().ok());
                self.shared
                    .bus
                    .answer(self.conn, id, Outcome::from_jsonrpc(outcome));
            }
        }
    }

    /// Handles a JSON-RPC line on a connection that must authenticate first.
    pub fn authenticate_jsonrpc(&mut self, line: &[u8]) -> AuthOutcome {
        let message = jsonrpc::parse_line(line, self.shared.limits.max_batch);
        let (id, offer) = match message {
            Message::Blank => return AuthOutcome::Waiting,
            Message::Single(Entry::Request { id, method, params }) if method == AUTH_METHOD => {
                (id, Some(params.map_or(Params::None, Params::Json)))
            }
            Message::Single(Entry::Request { id, .. } | Entry::Invalid { id, .. }) => (id, None),
            _ => (None, None),
        };
        self.count_frame(Protocol::JsonRpc);
        self.authenticate(Answer::JsonRpc { id, batch: None }, offer)
    }

    /// Handles an MCP1 frame on a connection that must authenticate first.
    pub fn authenticate_mcp1(&mut self, header: &Header, payload: &[u8]) -> AuthOutcome {
        self.count_frame(Protocol::Mcp1);
        let id = (header.kind == Kind::Request).then_some(header.id);
        let offer = match header.kind {
            Kind::Request | Kind::Notification => mcp1::parse_request(header, payload)
                .ok()
                .filter(|request| request.method == AUTH_METHOD)
                .map(|request| request.params),
            _ => None,
        };
        self.authenticate(Answer::Mcp1 { id }, offer)
    }

    /// Checks the token of an `rpc.auth` call (`offer` None: the first
    /// request was something else) and answers either way; a match makes
    /// the connection the token's identity.
    fn authenticate(&mut self, answer: Answer<'_>, offer: Option<Params<'_>>) -> AuthOutcome {
        let verdict = match offer {
            None => Err(std::borrow::Cow::Borrowed(
                "authentication required: the first request must be rpc.auth with the token",
            )),
            Some(params) => self.check_token(params),
        };
        match verdict {
            Ok(()) => {
                Stats::bump(&self.shared.stats().auth_successes);
                self.send_result(answer, |reply| reply.json(&true));
                AuthOutcome::Passed
            }
            Err(why) => {
                Stats::bump(&self.shared.stats().auth_failures);
                // A refusal is always answered; over MCP1 with id 0 when the frame had none.
                let answer = match answer {
                    Answer::Mcp1 { id: None } => Answer::Mcp1 { id: Some(0) },
                    other => other,
                };
                self.send_error(answer, &RpcError::with(ErrorCode::Unauthorized, why));
                AuthOutcome::Refused
            }
        }
    }

    /// Tells a peer refused by the allow-list why, in its protocol.
    pub fn deny(&mut self, protocol: Protocol) {
        let error = RpcError::with(
            ErrorCode::AccessDenied,
            "this user may not use the daemon's socket (see allow-uids / allow-gids)",
        );
        let answer = match protocol {
            Protocol::JsonRpc => Answer::JsonRpc {
                id: None,
                batch: None,
            },
            Protocol::Mcp1 => Answer::Mcp1 { id: Some(0) },
        };
        self.send_error(answer, &error);
    }

    /// Handles one whole MCP1 frame.
    pub fn mcp1_frame(&mut self, header: &Header, payload: &[u8]) {
        self.count_frame(Protocol::Mcp1);
        let id = (header.kind == Kind::Request).then_some(header.id);
        match header.kind {
            Kind::Request | Kind::Notification => match mcp1::parse_request(header, payload) {
                Ok(request) => self.call(Answer::Mcp1 { id }, request.method, request.params),
                Err(error) => self.send_error(
                    Answer::Mcp1 {
                        id: Some(header.id),
                    },
                    &error,
                ),
            },
            Kind::Ping => {
                self.out.append(self.shared.chunks, |buf| {
                    mcp1::write_pong(buf, header.id, payload)
                });
            }
            Kind::Response | Kind::Error => {
                let outcome = Outcome::from_mcp1(header, payload);
                self.shared.bus.answer(self.conn, Some(header.id), outcome);
            }
            Kind::Pong | Kind::Cancel => {
                tracing::debug!(
                    id = header.id,
                    kind = header.kind.name(),
                    "unsolicited frame dropped"
                );
                self.count_error(Protocol::Mcp1);
            }
        }
    }

    /// Answers an MCP1 frame refused at its header.
    pub fn mcp1_frame_error(&mut self, error: &FrameError) {
        self.count_frame(Protocol::Mcp1);
        self.send_error(
            Answer::Mcp1 {
                id: Some(error.id()),
            },
            &error.to_rpc(),
        );
    }

    /// Answers with a connection-level MCP1 error (id 0 unless known).
    pub fn mcp1_error(&mut self, id: u32, error: &RpcError) {
        self.send_error(Answer::Mcp1 { id: Some(id) }, error);
    }

    /// Routes one request, the same way for every protocol.
    fn call(&mut self, answer: Answer<'_>, method: &str, params: Params<'_>) {
        if !self.rights.may_call(method) {
            return self.forbid(answer, crate::policy::Action::Call, method);
        }
        if method == AUTH_METHOD {
            return self.reauthenticate(answer, params);
        }
        if self.shared.bus.monitoring() {
            self.tap_call(answer, method, params);
        }
        // Borrowed for the loop's lifetime, not from self: no refcount traffic.
        let context: &Arc<Context> = self.shared.context;
        let started = self.shared.now;
        let Some(handler) = context.router().get(method) else {
            return self.call_bus(answer, method, params, started);
        };
        if handler.mode() == Mode::Inline {
            let call = Call {
                method,
                params,
                context,
                clients: None,
            };
            let failed = self.send_result(answer, |reply| handler.invoke(&call, reply));
            return match handler.slot() {
                Some(slot) => self.time_later(slot, answer.protocol(), failed),
                None => self.finished(handler.stats(), started, answer.protocol(), failed),
            };
        }
        let job = Job {
            conn: self.conn,
            method: Arc::clone(handler),
            params: OwnedParams::from(params),
            reply: answer.to_owned(),
            started,
        };
        if handler.mode() == Mode::Loop {
            if method == crate::methods::MONITOR_METHOD {
                return self.start_monitor(answer, params);
            }
            self.shared.held.on_loop.push(job);
            return self.expect_completion(answer);
        }
        self.submit(job, answer);
    }

    /// Runs a `bus.*` method, or forwards a call to the client that provides it.
    fn call_bus(&mut self, answer: Answer<'_>, method: &str, params: Params<'_>, started: Instant) {
        let shared = &mut *self.shared;
        let caller = Caller {
            id: self.conn,
            peer: self.peer,
            protocol: answer.protocol(),
            rights: &*self.rights,
        };
        if !self.push && crate::http::NEEDS_PUSH.contains(&method) {
            let error = RpcError::with(
                ErrorCode::InvalidRequest,
                format_args!(
                    "{method} needs a connection the daemon can write to: use a WebSocket (or a line connection), not HTTP POST"
                ),
            );
            return self.send_error(answer, &error);
        }
        if method.starts_with(bus::PREFIX) {
            let result = bus::methods::call(shared.bus, &caller, method, params, shared.context);
            let failed = self.send_result(answer, |reply| reply.json(&result?));
            let context: &Arc<Context> = self.shared.context;
            if let Some(slot) = context.observe().bus_slot(method) {
                self.time_later(slot, answer.protocol(), failed);
            } else if let Some(stats) = context.observe().bus_method(method) {
                self.finished(stats, started, answer.protocol(), failed);
            }
            return;
        }
        let Some(provider) = shared.bus.provider_of(method) else {
            if shared.bus.federated() {
                // No local provider: the cluster's (src/federation/).
                let reply = (!answer.is_notification()).then(|| answer.to_owned());
                return match shared.bus.forward_remote(&caller, reply, method, params) {
                    Ok(()) if answer.is_notification() => {}
                    Ok(()) => self.expect_completion(answer),
                    Err(_) if answer.is_notification() => {}
                    Err(error) => self.send_error(answer, &error),
                };
            }
            if !answer.is_notification() {
                self.send_error(answer, &RpcError::method_not_found(method));
            }
            return;
        };
        let reply = (!answer.is_notification()).then(|| answer.to_owned());
        match shared
            .bus
            .forward(&caller, reply, provider, method, params, started)
        {
            Ok(()) if answer.is_notification() => {}
            Ok(()) => self.expect_completion(answer),
            Err(error) if answer.is_notification() => {
                tracing::debug!(method, %error, "routed notification dropped");
            }
            Err(error) => self.send_error(answer, &error),
        }
    }

    /// Queues a pooled job; a full queue parks it on the loop (oldest first)
    /// and the connection stops being read until it is queued.
    fn submit(&mut self, job: Job, answer: Answer<'_>) {
        let job = if self.shared.held.parked.is_empty() {
            match self.shared.workers.submit(job) {
                Ok(()) => return self.expect_completion(answer),
                Err(SubmitError::Full(job)) => job,
                Err(SubmitError::Closed(_)) => {
                    if !answer.is_notification() {
                        let error =
                            RpcError::with(ErrorCode::ServerBusy, "the daemon is shutting down");
                        self.send_error(answer, &error);
                    }
                    return;
                }
            }
        } else {
            job // Others already wait: keep their order.
        };
        Stats::bump(&self.shared.stats().queue_full_waits);
        self.shared.held.parked.push_back(job);
        *self.parked += 1;
        self.expect_completion(answer);
    }

    /// Counts a job whose answer comes back as a completion.
    fn expect_completion(&mut self, answer: Answer<'_>) {
        *self.in_flight += 1;
        if let Some(b) = answer.batch().and_then(|key| self.batches.get_mut(key)) {
            b.waiting += 1;
        }
    }

    /// Runs `run` into the answer's response; a notification's result is dropped.
    fn send_result(
        &mut self,
        answer: Answer<'_>,
        run: impl FnOnce(&mut Reply<'_>) -> Result<(), RpcError>,
    ) -> bool {
        let failed = match answer {
            Answer::JsonRpc {
                id: Some(id),
                batch,
            } => self.write(batch, |buf| {
                jsonrpc::write_response(buf, Some(id), run).is_some()
            }),
            Answer::Mcp1 { id: Some(id) } => self.out.append(self.shared.chunks, |buf| {
                mcp1::write_response(buf, id, run).is_some()
            }),
            Answer::JsonRpc { id: None, .. } | Answer::Mcp1 { id: None } => {
                // Run for the effect; whatever it wrote is taken back.
                self.out.append(self.shared.chunks, |buf| {
                    let start = buf.len();
                    let _ = run(&mut Reply::new(buf));
                    buf.truncate(start);
                });
                false
            }
        };
        if failed {
            self.count_error(answer.protocol());
        }
        failed
    }

    /// Notes an inline call answered in this pass, for [`Self::flush_timed`].
    fn time_later(&mut self, slot: u32, protocol: Protocol, failed: bool) {
        if let Some(run) = self.shared.timed.last_mut() {
            // A run is all answers or all errors, so that a monitor's
            // lines still say which.
            let same = run.slot == slot && run.protocol == protocol;
            if same && (run.errors > 0) == failed && run.calls < u32::MAX {
                run.calls += 1;
                run.errors += u32::from(failed);
                return;
            }
        }
        self.shared.timed.push(crate::observe::TimedCall {
            slot,
            protocol,
            calls: 1,
            errors: u32::from(failed),
        });
        if self.shared.timed.len() >= MAX_TIMED {
            self.flush_timed();
        }
    }

    /// Records the inline calls of this parse pass with one clock read:
    /// each took from the turn's start to now (its answer is queued).
    pub fn flush_timed(&mut self) {
        for (protocol, count) in [Protocol::JsonRpc, Protocol::Mcp1]
            .into_iter()
            .zip(std::mem::take(self.shared.frames))
        {
            if count > 0 {
                Stats::add(&self.shared.stats().protocol(protocol).frames, count);
            }
        }
        if self.shared.timed.is_empty() {
            return;
        }
        let started = self.shared.now;
        let context: &Arc<Context> = self.shared.context;
        let mut timed = std::mem::take(self.shared.timed);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(started);
        let observe = context.observe();
        let quiet = !self.shared.bus.monitoring();
        for run in timed.drain(..) {
            let Some(stats) = observe.slot(run.slot) else {
                continue;
            };
            let us = stats.record_n(elapsed, u64::from(run.calls), u64::from(run.errors));
            if quiet && !observe.slowlog.is_slow(us) {
                continue;
            }
            // Rare: the slow log or a monitor wants each call.
            for _ in 0..run.calls {
                self.noted(stats, us, run.protocol, run.errors > 0);
            }
        }
        *self.shared.timed = timed;
    }

    /// A call answered: its latency and error go to its counters, a slow
    /// one to the slow log, and a line to the monitors.
    fn finished(
        &mut self,
        stats: &crate::observe::MethodStats,
        started: Instant,
        protocol: Protocol,
        failed: bool,
    ) {
        let us = stats.record(started.elapsed(), failed);
        self.noted(stats, us, protocol, failed);
    }

    /// The slow log and the monitors' side of a recorded call.
    fn noted(
        &mut self,
        stats: &crate::observe::MethodStats,
        us: u64,
        protocol: Protocol,
        failed: bool,
    ) {
        let context: &Arc<Context> = self.shared.context;
        let slowlog = &context.observe().slowlog;
        if slowlog.is_slow(us) {
            let identity = self.rights.identity().label();
            slowlog.push(stats.name(), identity, self.conn.token, protocol, us);
        }
        if self.shared.bus.monitoring() {
            let (conn, name) = (self.conn.token, stats.name());
            self.shared.bus.tap(name, || {
                crate::monitor::reply_line(conn, protocol, name, us, failed)
            });
        }
    }

    /// Sends an error frame (with id null or 0 when the answer has no id).
    fn send_error(&mut self, answer: Answer<'_>, error: &RpcError) {
        match answer {
            Answer::JsonRpc { id, batch } => {
                self.write(batch, |buf| {
                    jsonrpc::write_error(buf, id, error);
                    true
                });
            }
            Answer::Mcp1 { id } => {
                let id = id.unwrap_or(0);
                self.out
                    .append(self.shared.chunks, |buf| mcp1::write_error(buf, id, error));
            }
        }
        self.count_error(answer.protocol());
    }

    /// Writes a JSON-RPC response: a line of its own, or an entry of a batch.
    fn write(&mut self, batch: Option<usize>, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        match batch.filter(|key| self.batches.contains(*key)) {
            Some(key) => self.push_batch_entry(key, write),
            None => self.out.append(self.shared.chunks, |buf| {
                let failed = write(buf);
                buf.push(b'\n');
                failed
            }),
        }
    }

    /// Appends an entry to a batch's body, keeping the count of batched bytes.
    fn push_batch_entry(&mut self, key: usize, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let Some(pending) = self.batches.get_mut(key) else {
            return false;
        };
        let before = pending.body.len();
        let failed = pending.push_entry(write);
        *self.batched += pending.body.len() - before;
        failed
    }

    /// True when the batch's response already holds max-output bytes.
    fn batch_is_full(&self, batch: Option<usize>) -> bool {
        batch
            .and_then(|key| self.batches.get(key))
            .is_some_and(|b| b.body.len() >= self.shared.limits.max_output)
    }

    /// Counts a frame (published by [`Self::flush_timed`] after the pass).
    fn count_frame(&mut self, protocol: Protocol) {
        self.shared.frames[protocol as usize] += 1;
    }

    fn count_error(&self, protocol: Protocol) {
        self.shared
            .stats()
            .protocol(protocol)
            .errors
            .fetch_add(1, Relaxed);
    }

    fn finish_batch_if_done(&mut self, key: usize) {
        if self.batches.get(key).is_some_and(|b| b.waiting == 0) {
            let mut done = self.batches.remove(key);
            *self.batched = self.batched.saturating_sub(done.body.len());
            if !done.body.is_empty() {
                // A batch of notifications only gets no response at all.
                done.body.extend_from_slice(b"]\n");
                self.out.push_frame(done.body, self.shared.chunks);
            }
        }
    }

    /// Takes back a job the pool finished.
    pub fn complete(&mut self, mut done: Completion) {
        if let Some(timing) = done.timing.take() {
            self.finished(&timing.stats, timing.started, done.protocol, done.is_error);
        }
        match done.batch {
            // Queued as it is: a large frame is not copied.
            None => {
                self.took_answer(done.protocol, done.is_error);
                self.out.push_frame(done.frame, self.shared.chunks);
            }
            Some(_) => {
                self.complete_bytes(done.protocol, done.batch, done.is_error, &done.frame, None);
                self.shared.chunks.give(done.frame);
            }
        }
    }

    /// Takes back an answer encoded elsewhere (a routed call's, from the
    /// bus); an empty frame only ends the call.
    pub fn complete_bytes(
        &mut self,
        protocol: Protocol,
        batch: Option<usize>,
        is_error: bool,
        frame: &[u8],
        timing: Option<&crate::observe::Timing>,
    ) {
        if let Some(timing) = timing {
            self.finished(&timing.stats, timing.started, protocol, is_error);
        }
        self.took_answer(protocol, is_error);
        match batch {
            None if frame.is_empty() => {}
            None => {
                self.out
                    .append(self.shared.chunks, |buf| buf.extend_from_slice(frame));
            }
            Some(key) => {
                if !frame.is_empty() {
                    self.push_batch_entry(key, |buf| {
                        buf.extend_from_slice(frame);
                        false
                    });
                }
                if let Some(pending) = self.batches.get_mut(key) {
                    pending.waiting = pending.waiting.saturating_sub(1);
                }
                self.finish_batch_if_done(key);
            }
        }
    }

    fn took_answer(&mut self, protocol: Protocol, is_error: bool) {
        *self.in_flight = self.in_flight.saturating_sub(1);
        if is_error {
            self.count_error(protocol);
        }
    }
}
