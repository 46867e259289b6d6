//! The connection state machine, independent of how bytes arrive.
//!
//! A backend (readiness or completion based) fills the ring returned by
//! [`Connection::read_space`], reports it with [`Connection::received`] or
//! [`Connection::end_of_input`], writes what [`Connection::output`] holds and
//! reports it with [`Connection::wrote`]. Everything else (sniffing, framing,
//! dispatch, batches, limits) happens here, with no system call.
//!
//! ```text
//! Sniffing --{ or [--> JsonRpc --+--EOF-----------------------------> (flush) Close
//!     |                          |
//!     +--"MCP1"------> Mcp1 -----+--fatal frame error / too large--> Refused
//!     |                                                                 |
//!     +--anything else--> (one line of text) --> Refused --> (flush, linger) Close
//! ```

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::access::{Gate, Peer};
use crate::buffer::{RING_MIN, RingBuffer};
use crate::dispatch::{AuthOutcome, Batches, Dispatcher, Shared};
use crate::error::{ErrorCode, RpcError};
use crate::net::Transport;
use crate::proto::jsonrpc::{self, Line};
use crate::proto::mcp1::{self, HEADER_LEN, Next};
use crate::proto::{self, Protocol, SNIFF_WINDOW, Sniff};
use crate::stats::ClientInfo;
use crate::workers::{Completion, ConnRef};
use crate::write_queue::{Outgoing, WriteQueue};

/// A dispatcher over the connection's answering fields, borrowed one by one
/// so that the ring (holding the frame being answered) stays borrowable.
macro_rules! dispatcher {
    ($conn:ident, $shared:ident) => {
        Dispatcher {
            conn: $conn.id,
            peer: &$conn.peer,
            rights: &mut $conn.rights,
            push: $conn.http.as_ref().is_none_or(|h| h.is_websocket()),
            // An HTTP connection's answers are framed before they go out.
            out: match $conn.http.as_deref_mut() {
                Some(http) => &mut http.staging,
                None => &mut $conn.out,
            },
            batches: &mut $conn.batches,
            batched: &mut $conn.batched,
            in_flight: &mut $conn.in_flight,
            parked: &mut $conn.parked,
            shared: $shared,
        }
    };
}

// HTTP/1.1 and WebSocket (a child of this module: it works on the
// connection's buffers); its codecs are in src/http/.
#[path = "http/session.rs"]
mod http_session;
mod stamp;

use stamp::{Since, Stamp};

/// The largest frame (a JSON-RPC line, an MCP1 frame) a connection may
/// send before it has authenticated: `rpc.auth` with its token fits with
/// room to spare, and a peer that has not shown the token cannot make the
/// daemon hold more than one small ring for it.
pub const PREAUTH_MAX_FRAME: usize = 4096;

/// Which protocol the connection speaks, and the codec's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for enough bytes to tell the protocol.
    Sniffing,
    /// Newline-delimited JSON-RPC; `scanned` bytes of the pending line hold no newline.
    JsonRpc {
        /// Bytes already searched for the end of the line (a `u32` keeps
        /// the phase, kept by every connection, at 8 bytes; a line past
        /// 4 GiB is searched again from its start).
        scanned: u32,
    },
    /// MCP1 binary frames.
    Mcp1,
    /// HTTP/1.1 requests, or a WebSocket once upgraded (see `http_session`).
    Http,
}

/// Whether the connection still takes input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Reading and parsing.
    Open,
    /// The peer finished sending (EOF); answers still go out.
    Ended,
    /// A protocol error ended the conversation: anything more is read and discarded
    /// until the error has been flushed, so the peer sees it rather than a reset.
    Refused,
}

/// What the backend should do with a connection that has nothing left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Keep serving it.
    Open,
    /// Close it now.
    Close,
    /// Shut down the write side and close once the peer does (or a timer fires).
    Linger,
}

/// The timeouts a connection is held to (zero: off).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    /// Longest a frame may take to arrive.
    pub frame: Duration,
    /// Longest a connection may sit with nothing to do.
    pub idle: Duration,
    /// Longest pending output may wait for the peer to take any of it.
    pub write: Duration,
}

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// A frame took too long to arrive (slowloris).
    Frame,
    /// Nothing happened for too long.
    Idle,
    /// The peer stopped reading.
    Write,
}

/// The answer to a routed call, encoded by the bus in the caller's protocol.
#[derive(Debug, Clone, Copy)]
pub struct RoutedAnswer<'f> {
    /// The caller's protocol.
    pub protocol: Protocol,
    /// The JSON-RPC batch it belongs to.
    pub batch: Option<usize>,
    /// True for an error answer.
    pub is_error: bool,
    /// The encoded answer (empty: the call only ends).
    pub frame: &'f [u8],
    /// When the call started and whose counters it goes to.
    pub timing: Option<&'f crate::observe::Timing>,
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    id: ConnRef,
    peer: Peer,
    gate: Gate,
    /// Who the policy takes it for, and what it may do.
    rights: crate::policy::Rights,
    phase: Phase,
    input: Input,
    ring: RingBuffer,
    out: WriteQueue,
    batches: Batches,
    /// Bytes of batch responses still being collected: output too.
    batched: usize,
    in_flight: usize,
    /// Jobs waiting on the loop for room in the worker queue: not read meanwhile.
    parked: u32,
    /// When it was accepted (the clocks are compact: see `stamp`).
    accepted: Since,
    /// Last read or write progress.
    last_activity: Stamp,
    /// When the partial frame at the front of the ring began to arrive.
    frame_started: Option<Stamp>,
    /// Since when output has waited without the peer taking any of it.
    stalled_since: Option<Stamp>,
    /// Output reached max-output: neither read nor parse until it drains to half.
    paused: bool,
    /// Requests in flight reached max-in-flight: neither read nor parse
    /// until one is answered.
    saturated: bool,
    /// The output size last added to the server's `output_buffered` gauge.
    gauged: usize,
    /// Output bytes the daemon originated (forwarded calls, events) rather
    /// than answers to this peer's requests; counted off first as output is
    /// written. They never pause its input: a provider must stay readable
    /// for its answers to drain the calls queued to it.
    originated: u32,
    /// Pending output is at max-output (until it drains to half): the bus
    /// forwards no calls to it meanwhile.
    congested: bool,
    /// Pending output passed max-output-hard: closed at the end of the turn.
    overflowed: bool,
    /// The HTTP side (Phase::Http only).
    http: Option<Box<http_session::HttpState>>,
}

impl Connection {
    /// A fresh connection from `peer`, sniffing, accepted at `now`; `gate`
    /// says whether it is served, refused, or must authenticate first.
    pub fn new(id: ConnRef, peer: Peer, gate: Gate, now: Instant) -> Self {
        Self {
            peer,
            gate,
            rights: crate::policy::Rights::default(),
            parked: 0,
            accepted: Since::at(now),
            last_activity: Stamp::at(now),
            frame_started: None,
            stalled_since: None,
            paused: false,
            saturated: false,
            gauged: 0,
            originated: 0,
            congested: false,
            overflowed: false,
            http: None,
            batched: 0,
            id,
            phase: Phase::Sniffing,
            input: Input::Open,
            ring: RingBuffer::new(),
            out: WriteQueue::new(),
            batches: Batches::default(),
            in_flight: 0,
        }
    }

    /// The same connection with these rights (made at accept).
    pub fn with_rights(mut self, rights: crate::policy::Rights) -> Self {
        self.rights = rights;
        self
    }

    /// Its identity and grants.
    pub fn rights(&self) -> &crate::policy::Rights {
        &self.rights
    }

    /// New rights after a reload (the identity stays; see `reload`).
    pub(crate) fn set_rights(&mut self, rights: crate::policy::Rights) {
        self.rights = rights;
    }

    /// A TLS peer showed a verified client certificate: it is served as
    /// that identity, without `rpc.auth` (see `reactor/layer.rs`).
    pub(crate) fn authenticate_as(&mut self, rights: crate::policy::Rights) {
        self.rights = rights;
        self.gate = Gate::Open;
    }

    /// A trusted proxy's PROXY header named the real client: policy,
    /// throttles and `rpc.clients` see it from here on.
    pub(crate) fn set_peer(&mut self, peer: Peer) {
        self.peer = peer;
    }

    /// Bytes made from its output went out at `now` (a TLS record): the
    /// idle and write clocks start again.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_activity = Stamp::at(now);
        self.stalled_since = None;
    }

    /// Whether it must still authenticate, and how it stands.
    pub(crate) fn gate(&self) -> Gate {
        self.gate
    }

    /// Ends the conversation before any protocol was sniffed, after
    /// `message` (a port that wants TLS, a bad PROXY header).
    pub(crate) fn refuse_with(&mut self, message: &[u8], shared: &mut Shared<'_>) {
        self.refuse(shared, message);
        self.account_output(shared);
    }

    /// True when it may see other peers' details.
    pub fn is_admin(&self) -> bool {
        self.rights.admin()
    }

    /// The connection's identity (slab key and generation).
    pub fn id(&self) -> ConnRef {
        self.id
    }

    /// The transport it came in on.
    pub fn transport(&self) -> Transport {
        self.peer.transport()
    }

    /// Who is at the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// What `rpc.clients` shows of it at `now`.
    pub fn info(&self, now: Instant) -> ClientInfo {
        let cred = match &self.peer {
            Peer::Unix(cred) => *cred,
            Peer::Tcp(_) => None,
        };
        ClientInfo {
            id: self.id.token,
            transport: self.transport(),
            protocol: self.protocol(),
            pid: cred.and_then(|c| c.pid),
            uid: cred.map(|c| c.uid),
            gid: cred.map(|c| c.gid),
            address: match &self.peer {
                Peer::Tcp(addr) => addr.map(|a| a.to_string()),
                Peer::Unix(_) => None,
            },
            identity: self.rights.identity().label(),
            authenticated: self.gate == Gate::Open,
            age_secs: self.accepted.elapsed(now).as_secs_f64(),
            idle_secs: self.last_activity.elapsed(now).as_secs_f64(),
            in_flight: self.in_flight,
            output_bytes: self.out.len(),
            paused: !self.wants_input() && self.input == Input::Open,
            tls: false, // The loop knows (reactor/layer.rs).
            carrier: self.http.as_ref().map(|h| {
                if h.is_websocket() {
                    "websocket"
                } else {
                    "http"
                }
            }),
        }
    }

    /// The protocol, once sniffed.
    pub fn protocol(&self) -> Option<Protocol> {
        match self.phase {
            Phase::Sniffing => None,
            Phase::JsonRpc { .. } => Some(Protocol::JsonRpc),
            Phase::Mcp1 => Some(Protocol::Mcp1),
            // JSON-RPC carried by HTTP or WebSocket (see ClientInfo::carrier).
            Phase::Http => Some(Protocol::JsonRpc),
        }
    }

    /// True until the protocol is known.
    pub fn is_sniffing(&self) -> bool {
        self.phase == Phase::Sniffing
    }

    /// True while the backend should read from the socket.
    pub fn wants_input(&self) -> bool {
        self.input != Input::Ended && !self.held()
    }

    /// True while input waits on the daemon (output backpressure, or a job
    /// parked for a full worker queue) rather than on the peer.
    fn held(&self) -> bool {
        self.paused || self.parked > 0 || self.saturated
    }

    /// True while backpressure holds the connection's input.
    #[cfg(feature = "internals")]
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Pauses input once output reaches the cap, keeps the gauge current
    /// (owned output and batches being collected; shared event bytes are
    /// counted once elsewhere), tells the bus when the output is full, and
    /// condemns a connection past the hard limit.
    fn account_output(&mut self, shared: &mut Shared<'_>) {
        if self.http.is_some() {
            self.http_flush(shared);
        }
        let len = self.out.owned_len() + self.batched;
        let total = self.out.len() + self.batched;
        let limits = shared.limits;
        let congested = if self.congested {
            total > limits.max_output / 2
        } else {
            total >= limits.max_output
        };
        if congested != self.congested {
            self.congested = congested;
            shared.bus.set_congested(self.id, congested);
        }
        if total > limits.max_output_hard && !self.overflowed {
            self.overflow(total, shared);
        }
        let stats = shared.stats();
        if len >= self.gauged {
            stats
                .output_buffered
                .fetch_add((len - self.gauged) as u64, Relaxed);
        } else {
            stats
                .output_buffered
                .fetch_sub((self.gauged - len) as u64, Relaxed);
        }
        self.gauged = len;
        if !self.paused
            && self.own_output() >= shared.limits.max_output
            && self.input == Input::Open
        {
            self.paused = true;
            stats.backpressure_pauses.fetch_add(1, Relaxed);
        }
    }

    /// Past max-output-hard: nothing more is read, and the loop closes the
    /// connection this turn, dropping its output (Redis's
    /// client-output-buffer-limit hard limit).
    fn overflow(&mut self, total: usize, shared: &mut Shared<'_>) {
        self.overflowed = true;
        shared.stats().output_limit_closes.fetch_add(1, Relaxed);
        tracing::warn!(
            conn = self.id.token,
            peer = %self.peer,
            pending = total,
            limit = shared.limits.max_output_hard,
            "closing a connection whose pending output passed max-output-hard (its peer does not read)"
        );
        self.ring.consume(self.ring.len());
        self.input = Input::Refused;
    }

    /// True once pending output passed max-output-hard: close it.
    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// After output drained to half the cap: parses what the ring still
    /// holds. None while still waiting; else Some(read_again): whether the
    /// socket should be read (edge-triggered readiness will not say so
    /// itself) or the new output paused the connection again.
    pub fn resume(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) -> Option<bool> {
        if !self.paused || self.own_output() > shared.limits.max_output / 2 {
            return None;
        }
        self.paused = false;
        self.continue_input(shared, scratch)
    }

    /// One of its parked jobs went to the pool. Like [`Connection::resume`]:
    /// Some(read_again) once nothing holds its input any more.
    pub fn unpark(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) -> Option<bool> {
        self.parked = self.parked.saturating_sub(1);
        self.continue_input(shared, scratch)
    }

    /// Parses what the ring still holds once nothing holds the input.
    fn continue_input(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) -> Option<bool> {
        if self.held() {
            return None;
        }
        match self.phase {
            Phase::Sniffing => {}
            Phase::JsonRpc { .. } => self.parse_jsonrpc(shared, scratch),
            Phase::Mcp1 => self.parse_mcp1(shared, scratch),
            Phase::Http => self.parse_http(shared, scratch),
        }
        self.dispatcher(shared).flush_timed();
        self.account_output(shared);
        Some(self.wants_input())
    }

    /// Requests handed to the pool and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True once requests are served: an allowed Unix peer, an open TCP
    /// listener, or a peer that passed `rpc.auth`.
    pub fn is_authenticated(&self) -> bool {
        self.gate == Gate::Open
    }

    /// True while the peer may still send but the daemon holds its input
    /// (max-output, max-in-flight, a parked job): nothing reads the socket,
    /// so a driver must watch for a hang-up some other way.
    pub fn is_held(&self) -> bool {
        self.input == Input::Open && self.held()
    }

    /// The largest frame this connection may send now.
    fn frame_limit(&self, shared: &Shared<'_>) -> usize {
        if self.is_authenticated() {
            shared.limits.max_frame
        } else {
            shared.limits.max_frame.min(PREAUTH_MAX_FRAME)
        }
    }

    /// Ends the conversation with `error` in the connection's protocol (a
    /// JSON-RPC line with id null, an MCP1 ERROR frame with id 0; nothing
    /// before the protocol is known). Nothing more is read; the connection
    /// closes once the error is out.
    pub fn end_with(&mut self, error: &RpcError, shared: &mut Shared<'_>) {
        if self.input == Input::Refused {
            return;
        }
        match self.phase {
            Phase::Sniffing => {}
            Phase::JsonRpc { .. } => {
                self.out.append(shared.chunks, |buf| {
                    jsonrpc::write_error(buf, None, error);
                    buf.push(b'\n');
                });
                let stats = shared.stats().protocol(Protocol::JsonRpc);
                stats.errors.fetch_add(1, Relaxed);
            }
            Phase::Mcp1 => self.dispatcher(shared).mcp1_error(0, error),
            Phase::Http => self.http_end(error, shared),
        }
        self.frame_started = None;
        self.refuse(shared, b"");
        self.account_output(shared);
    }

    /// The free space to read into, grown when full (up to what the largest
    /// frame needs). None while buffer memory is past its limit: the
    /// connection must wait until other connections free some.
    pub fn read_space(&mut self, shared: &mut Shared<'_>) -> Option<&mut RingBuffer> {
        // The largest frame plus its framing: a line's \r\n or an MCP1 header.
        let max_ring = (self.frame_limit(shared) + HEADER_LEN + 2)
            .next_power_of_two()
            .max(RING_MIN);
        let wanted = if !self.ring.has_storage() {
            RING_MIN
        } else if self.ring.free() == 0 && self.ring.capacity() < max_ring {
            self.ring.capacity() * 2
        } else {
            0
        };
        // Past the limit, a connection with output waiting waits: it holds
        // memory its peer has not taken. One that only has part of a frame
        // in may finish it from half of a reserve: until the frame is in it
        // can be neither answered nor refused, and peers that never read
        // (subscribers, callers) must not stall it until its frame timeout.
        // One holding nothing may use the whole reserve, so neither of the
        // others can stall it. The answers to one read can take a peer past
        // the limit by about a ring's worth, and half of the reserve must
        // still hold the largest ring, so the reserve is never less than
        // four. A peer that has not authenticated gets no share of it.
        let limit = shared.limits.max_buffer_memory;
        let reserve = (limit / 16).max(4 * max_ring);
        let ceiling = if !self.out.is_empty() || !self.is_authenticated() {
            limit
        } else if !self.ring.is_empty() {
            limit + reserve / 2
        } else {
            limit + reserve
        };
        // A ring that grows gives its old block back at once: only the
        // difference is new memory.
        let added = wanted.saturating_sub(self.ring.capacity());
        if shared.buffer_memory() + added >= ceiling {
            return None;
        }
        if wanted > 0 {
            self.ring.reserve(wanted, shared.rings);
        }
        Some(&mut self.ring)
    }

    /// Handles `n` bytes just read into the ring at `now`.
    pub fn received(
        &mut self,
        n: usize,
        now: Instant,
        shared: &mut Shared<'_>,
        scratch: &mut Vec<u8>,
    ) {
        self.ring.fill(n);
        self.last_activity = Stamp::at(now);
        shared.stats().bytes_in.fetch_add(n as u64, Relaxed);
        if self.input != Input::Open {
            // Refused, or shutting down while a read was in flight: discard.
            self.ring.consume(self.ring.len());
            return;
        }
        let before = self.ring.len();
        if self.phase == Phase::Sniffing {
            self.sniff(shared);
        }
        match self.phase {
            Phase::Sniffing => {}
            Phase::JsonRpc { .. } => self.parse_jsonrpc(shared, scratch),
            Phase::Mcp1 => self.parse_mcp1(shared, scratch),
            Phase::Http => self.parse_http(shared, scratch),
        }
        self.dispatcher(shared).flush_timed();
        // The frame clock starts when a frame's first bytes are left waiting.
        self.frame_started = match self.frame_started {
            // An HTTP body still owed keeps the clock its head started.
            _ if self.ring.is_empty() && !self.http_mid_request() => None,
            Some(start) if self.ring.len() == before => Some(start),
            _ => Some(Stamp::at(now)),
        };
        self.account_output(shared);
    }

    /// Which timeout, if any, has expired at `now`.
    pub fn timed_out(&self, now: Instant, limits: &Timeouts) -> Option<Timeout> {
        let expired =
            |since: Stamp, limit: Duration| !limit.is_zero() && since.elapsed(now) >= limit;
        if self
            .stalled_since
            .is_some_and(|since| expired(since, limits.write))
        {
            return Some(Timeout::Write);
        }
        // A held connection's partial frame waits on us, not on the peer.
        if self.input == Input::Open
            && !self.held()
            && self
                .frame_started
                .is_some_and(|since| expired(since, limits.frame))
        {
            return Some(Timeout::Frame);
        }
        let idle = self.input == Input::Open
            && self.in_flight == 0
            && self.out.is_empty()
            && self.ring.is_empty()
            && self.batches.is_empty();
        (idle && expired(self.last_activity, limits.idle)).then_some(Timeout::Idle)
    }

    /// Answers a frame that took too long with the protocol's error, then
    /// ends the conversation.
    pub fn frame_timed_out(&mut self, limit: Duration, shared: &mut Shared<'_>) {
        let error = RpcError::with(
            ErrorCode::FrameTimeout,
            format_args!("a frame took longer than {limit:?} to arrive; closing"),
        );
        match self.phase {
            Phase::Sniffing => {}
            Phase::JsonRpc { .. } => {
                self.out.append(shared.chunks, |buf| {
                    jsonrpc::write_error(buf, None, &error);
                    buf.push(b'\n');
                });
                shared
                    .stats()
                    .protocol(Protocol::JsonRpc)
                    .errors
                    .fetch_add(1, Relaxed);
            }
            Phase::Mcp1 => {
                let id = mcp1::front_id(&self.ring); // The header's, once it is whole.
                self.dispatcher(shared).mcp1_error(id, &error);
            }
            Phase::Http => self.http_end(&error, shared),
        }
        self.frame_started = None;
        self.refuse(shared, b"");
        self.account_output(shared);
    }

    /// The peer will send nothing more; a last line without a newline is
    /// still a request.
    pub fn end_of_input(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) {
        let len = self.ring.len();
        if self.input == Input::Open && len > 0 {
            match self.phase {
                Phase::Sniffing => {}
                Phase::JsonRpc { .. } if len <= self.frame_limit(shared) => {
                    self.take_line(len, len, shared, scratch);
                    self.dispatcher(shared).flush_timed();
                }
                Phase::JsonRpc { .. } => self.line_too_long(shared),
                Phase::Mcp1 => self.mcp1_truncated(shared),
                Phase::Http => {} // Part of a request: nothing to answer.
            }
        }
        self.ring.consume(self.ring.len());
        self.ring.release_if_empty(shared.rings);
        if self.input == Input::Open {
            self.input = Input::Ended;
        }
    }

    /// Takes back a response the pool produced. Like [`Connection::resume`],
    /// Some(read_again) when this answer freed input held at `max-in-flight`.
    pub fn complete(
        &mut self,
        done: Completion,
        shared: &mut Shared<'_>,
        scratch: &mut Vec<u8>,
    ) -> Option<bool> {
        self.dispatcher(shared).complete(done);
        self.account_output(shared);
        self.after_answer(shared, scratch)
    }

    /// Parses and reads again once an answer takes in-flight work below the cap.
    fn after_answer(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) -> Option<bool> {
        if self.saturated && self.in_flight < shared.limits.max_in_flight {
            self.saturated = false;
            return self.continue_input(shared, scratch);
        }
        None
    }

    /// Takes back the answer to a routed call (see [`Dispatcher::complete_bytes`]).
    pub fn complete_routed(
        &mut self,
        answer: RoutedAnswer<'_>,
        shared: &mut Shared<'_>,
        scratch: &mut Vec<u8>,
    ) -> Option<bool> {
        self.dispatcher(shared).complete_bytes(
            answer.protocol,
            answer.batch,
            answer.is_error,
            answer.frame,
            answer.timing,
        );
        self.account_output(shared);
        self.after_answer(shared, scratch)
    }

    /// Appends frames the daemon originates for this peer (forwarded
    /// requests, cancels). They never pause its input, but they count
    /// towards its memory and its hard limit, and a full output stops the
    /// bus forwarding more (see [`crate::bus::Bus::set_congested`]).
    pub fn push_bytes(&mut self, bytes: &[u8], shared: &mut Shared<'_>) {
        let out = match self.http.as_deref_mut() {
            None => &mut self.out,
            Some(http) => match http.push_sink() {
                Some(staging) => staging,
                None => return, // Plain HTTP cannot carry it (never registered).
            },
        };
        out.append(shared.chunks, |buf| buf.extend_from_slice(bytes));
        self.originate(bytes.len());
        self.account_output(shared);
    }

    /// Queues an event for this subscriber: shared bytes are referenced,
    /// not copied.
    pub fn push_event(&mut self, frame: Outgoing, shared: &mut Shared<'_>) {
        self.originate(frame.len());
        match self.http.as_deref_mut() {
            None => self.out.push(frame, shared.chunks),
            Some(http) => {
                if let Some(staging) = http.push_sink() {
                    staging.push(frame, shared.chunks);
                }
            }
        }
        self.account_output(shared);
    }

    /// Ends the conversation after `frame` (an error saying why): nothing
    /// more is read, and the connection closes once its output is out.
    pub fn evict(&mut self, frame: &[u8], shared: &mut Shared<'_>) {
        self.push_bytes(frame, shared);
        self.refuse(shared, b"");
    }

    fn originate(&mut self, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.originated = self.originated.saturating_add(len);
    }

    /// Pending output that answers this peer's own requests (batch
    /// responses still being collected included).
    fn own_output(&self) -> usize {
        (self.out.len() + self.batched).saturating_sub(self.originated as usize)
    }

    /// The bytes waiting to be written.
    pub fn output(&self) -> &WriteQueue {
        &self.out
    }

    /// A write from [`Connection::output`] is in flight: keep its bytes where they are.
    pub fn seal_output(&mut self) {
        self.out.seal();
    }

    /// `n` bytes of the output were written at `now`.
    pub fn wrote(&mut self, n: usize, now: Instant, shared: &mut Shared<'_>) {
        self.out.advance(n, shared.chunks);
        let written = u32::try_from(n).unwrap_or(u32::MAX);
        self.originated = self.originated.saturating_sub(written);
        shared.stats().bytes_out.fetch_add(n as u64, Relaxed);
        if n > 0 {
            self.last_activity = Stamp::at(now);
            self.stalled_since = None;
        }
        self.account_output(shared);
    }

    /// Call after each flush: starts the write clock when output is left waiting.
    pub fn flushed(&mut self, now: Instant) {
        if self.out.is_empty() {
            self.stalled_since = None;
        } else if self.stalled_since.is_none() {
            self.stalled_since = Some(Stamp::at(now));
        }
    }

    /// Gives back buffers that hold nothing (call after each round of I/O).
    pub fn release_idle_buffers(&mut self, shared: &mut Shared<'_>) {
        self.ring.release_if_empty(shared.rings);
    }

    /// Drops unsent output and unparsed input: the peer is gone.
    pub fn discard_output(&mut self, shared: &mut Shared<'_>) {
        self.ring.release(shared.rings);
        self.out.release(shared.chunks);
        if let Some(http) = self.http.as_deref_mut() {
            http.staging.release(shared.chunks);
        }
        self.originated = 0;
        self.batches.clear();
        self.batched = 0;
        self.account_output(shared);
    }

    /// Whether the connection is done, and how to end it.
    pub fn finish(&self) -> Finish {
        if self.overflowed {
            return Finish::Close;
        }
        let idle = self.in_flight == 0 && self.out.is_empty() && self.batches.is_empty();
        match self.input {
            Input::Open => Finish::Open,
            _ if !idle => Finish::Open,
            Input::Ended => Finish::Close,
            Input::Refused => Finish::Linger,
        }
    }

    /// Stops taking requests (shutdown): answers already owed still go out.
    /// The ring keeps its storage: a completion driver may have a read in
    /// flight into it, so only the end of a read or the close gives it back.
    pub fn stop_input(&mut self) {
        self.ring.consume(self.ring.len());
        self.input = Input::Ended;
    }

    fn dispatcher<'c, 's, 'a>(&'c mut self, shared: &'s mut Shared<'a>) -> Dispatcher<'c, 's, 'a> {
        dispatcher!(self, shared)
    }

    fn sniff(&mut self, shared: &mut Shared<'_>) {
        let mut first = [0u8; SNIFF_WINDOW];
        let seen = self.ring.len().min(SNIFF_WINDOW);
        self.ring.peek(&mut first[..seen]);
        match proto::sniff(&first[..seen]) {
            Sniff::NeedMore => {}
            Sniff::Detected(protocol) => {
                self.phase = match protocol {
                    Protocol::JsonRpc => Phase::JsonRpc { scanned: 0 },
                    Protocol::Mcp1 => Phase::Mcp1,
                };
                let stats = shared.stats().protocol(protocol);
                stats.connections.fetch_add(1, Relaxed);
                if self.gate == Gate::Denied {
                    self.dispatcher(shared).deny(protocol);
                    self.refuse(shared, b"");
                }
            }
            Sniff::Http => {
                // Refusals at accept never get here: a Denied peer is turned away then.
                self.phase = Phase::Http;
                self.start_http(shared);
            }
            Sniff::Unknown => {
                shared.stats().sniff_rejected.fetch_add(1, Relaxed);
                self.refuse(shared, proto::UNKNOWN_PROTOCOL_REPLY);
            }
        }
    }

    fn parse_jsonrpc(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) {
        while let Phase::JsonRpc { scanned } = self.phase {
            if self.input != Input::Open || self.must_wait(shared) {
                return;
            }
            match jsonrpc::next_line(&self.ring, scanned as usize, self.frame_limit(shared)) {
                Line::Complete { len, consumed } => {
                    self.phase = Phase::JsonRpc { scanned: 0 };
                    self.take_line(len, consumed, shared, scratch);
                }
                Line::Partial { scanned } => {
                    let scanned = u32::try_from(scanned).unwrap_or(0);
                    self.phase = Phase::JsonRpc { scanned };
                    return;
                }
                Line::TooLong => {
                    self.line_too_long(shared);
                    self.refuse(shared, b"");
                    return;
                }
            }
        }
    }

    fn parse_mcp1(&mut self, shared: &mut Shared<'_>, scratch: &mut Vec<u8>) {
        while self.input == Input::Open {
            if self.must_wait(shared) {
                return;
            }
            match mcp1::next_frame(&self.ring, self.frame_limit(shared)) {
                Next::NeedMore => return,
                Next::Frame(header) => {
                    let payload = self.ring.frame(HEADER_LEN, header.length as usize, scratch);
                    let outcome = if self.gate == Gate::Open {
                        dispatcher!(self, shared).mcp1_frame(&header, payload);
                        AuthOutcome::Passed
                    } else {
                        dispatcher!(self, shared).authenticate_mcp1(&header, payload)
                    };
                    self.ring.consume(header.frame_len());
                    self.after_auth(outcome, shared);
                }
                Next::Error(error) => {
                    self.dispatcher(shared).mcp1_frame_error(&error);
                    if error.closes() {
                        self.refuse(shared, b"");
                        return;
                    }
                    self.ring.consume(error.skip_len());
                }
            }
        }
    }

    /// Backpressure (output at its cap) or a parked job: the rest of the
    /// ring waits.
    fn must_wait(&mut self, shared: &mut Shared<'_>) -> bool {
        if self.own_output() >= shared.limits.max_output {
            self.account_output(shared);
        }
        self.saturated = self.in_flight >= shared.limits.max_in_flight;
        self.held()
    }

    /// Answers the line at the front of the ring (`len` bytes, `consumed`
    /// with its terminator), or judges it as the authentication.
    fn take_line(
        &mut self,
        len: usize,
        consumed: usize,
        shared: &mut Shared<'_>,
        scratch: &mut Vec<u8>,
    ) {
        let line = self.ring.frame(0, len, scratch);
        let outcome = if self.gate == Gate::Open {
            dispatcher!(self, shared).jsonrpc_line(line);
            AuthOutcome::Passed
        } else {
            dispatcher!(self, shared).authenticate_jsonrpc(line)
        };
        self.ring.consume(consumed);
        self.after_auth(outcome, shared);
    }

    fn after_auth(&mut self, outcome: AuthOutcome, shared: &mut Shared<'_>) {
        match outcome {
            AuthOutcome::Passed => self.gate = Gate::Open,
            AuthOutcome::Waiting => {}
            AuthOutcome::Refused => {
                crate::access::warn_auth_failure(self.id.token, &self.peer);
                self.refuse(shared, b"");
            }
        }
    }

    /// Answers a line over the size limit (the connection closes after it).
    fn line_too_long(&mut self, shared: &mut Shared<'_>) {
        let error = RpcError::with(
            ErrorCode::FrameTooLarge,
            format_args!(
                "a line exceeds the limit of {} bytes; closing",
                self.frame_limit(shared)
            ),
        );
        let stats = shared.stats().protocol(Protocol::JsonRpc);
        stats.errors.fetch_add(1, Relaxed);
        self.out.append(shared.chunks, |buf| {
            jsonrpc::write_error(buf, None, &error);
            buf.push(b'\n');
        });
    }

    /// The peer ended its side with part of a frame in: say so, then close.
    fn mcp1_truncated(&mut self, shared: &mut Shared<'_>) {
        let mut first = [0u8; HEADER_LEN];
        let seen = self.ring.len().min(HEADER_LEN);
        self.ring.peek(&mut first[..seen]);
        let (id, expected) = match mcp1::peek_header(&first[..seen]) {
            Some((id, length)) => (
                id,
                format!("{} bytes", HEADER_LEN as u64 + u64::from(length)),
            ),
            None => (0, format!("a {HEADER_LEN}-byte header")),
        };
        let error = RpcError::new(
            mcp1::codes::TRUNCATED,
            format!(
                "Truncated frame: the connection ended after {} bytes of {expected}",
                self.ring.len()
            ),
        );
        self.dispatcher(shared).mcp1_error(id, &error);
    }

    /// Ends the conversation after `message`: input from here on is discarded.
    fn refuse(&mut self, shared: &mut Shared<'_>, message: &[u8]) {
        if !message.is_empty() {
            self.out
                .append(shared.chunks, |buf| buf.extend_from_slice(message));
        }
        self.ring.consume(self.ring.len());
        self.input = Input::Refused;
    }
}
