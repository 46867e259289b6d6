//! The event loop on mio (epoll on Linux, kqueue on macOS).
//!
//! One `Poll` owns the listeners, every connection (a slab; the key is the
//! token) and the waker the worker pool uses. Each turn: poll, read what is
//! readable into the connections, take completions, flush output, fire timers.
//! No protocol code lives here: the loop moves bytes in and out of
//! [`Connection`]s and acts on what they say.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, ErrorKind, IoSlice, IoSliceMut};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::access::Gate;
use crate::buffer::RingPool;
use crate::conn::{Connection, Finish, Timeout, Timeouts};
use crate::dispatch::{Held, Limits, Shared};
use crate::error::{ErrorCode, RpcError};
use crate::net::tuning::SocketOptions;
use crate::net::{Listener, Stream, Transport};
use crate::proto::jsonrpc;
use crate::router::Context;
use crate::stats::Stats;
use crate::workers::{Completion, Completions, ConnRef, SubmitError, WorkerPool};
use crate::write_queue::{ChunkPool, MAX_IOVECS};

/// The token of the waker the pool and the shutdown handle use.
pub const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 8;

/// Reads per connection per turn, so that one busy client cannot starve the rest.
const READS_PER_TURN: usize = 16;
/// How long a connection closed for a protocol error may take to send its EOF.
const LINGER: Duration = Duration::from_secs(2);
/// Events taken per poll.
const EVENTS: usize = 1024;

/// Loop settings taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Frame and batch limits.
    pub limits: Limits,
    /// Most open connections.
    pub max_connections: usize,
    /// Close connections that have not been sniffed after this long.
    pub sniff_timeout: Duration,
    /// Bound on the graceful drain at shutdown.
    pub drain_timeout: Duration,
    /// Frame, idle and write timeouts.
    pub timeouts: Timeouts,
    /// Socket options for accepted connections.
    pub sockets: SocketOptions,
}

struct Client {
    stream: Stream,
    conn: Connection,
    /// Write side shut down; closing when the peer's EOF comes or LINGER ends.
    lingering: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Sniff,
    Linger,
    /// Check every connection's frame, idle and write timeouts.
    Sweep,
    /// Try the listeners again after running out of descriptors.
    AcceptRetry,
}

/// How often fd exhaustion is logged at most.
const FD_WARNING_EVERY: Duration = Duration::from_secs(5);
/// How soon accepting is retried when no spare descriptor is left.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

type Timer = Reverse<(Instant, usize, u32, TimerKind)>;

/// Borrows what connections need from the loop, field by field, so that the
/// slab of clients stays borrowable beside it.
macro_rules! shared {
    ($reactor:ident) => {
        Shared {
            context: &$reactor.context,
            workers: &$reactor.workers,
            rings: &mut $reactor.rings,
            chunks: &mut $reactor.chunks,
            limits: $reactor.config.limits,
            held: &mut $reactor.held,
        }
    };
}

/// The loop and everything it owns.
pub struct Reactor {
    poll: Poll,
    listeners: Vec<Listener>,
    clients: Slab<Client>,
    next_generation: u32,
    context: Arc<Context>,
    workers: WorkerPool,
    completions: Completions,
    rings: RingPool,
    chunks: ChunkPool,
    scratch: Vec<u8>,
    config: LoopConfig,
    timers: BinaryHeap<Timer>,
    /// Connections with output to flush at the end of this turn.
    dirty: Vec<usize>,
    /// Connections that used their read budget and may have more to read.
    unread: Vec<usize>,
    /// Reused list of connections a batch of completions touched.
    touched: Vec<usize>,
    shutdown: Arc<AtomicBool>,
    drain_deadline: Option<Instant>,
    /// The time of this turn, read once after each poll.
    now: Instant,
    /// A descriptor held back so that a connection can still be accepted and
    /// told "out of descriptors" when the process has none left.
    spare: Option<File>,
    /// When fd exhaustion was last logged, and how often it happened since.
    fd_warning: (Option<Instant>, u64),
    /// Reused list of connections whose timeouts expired.
    expired: Vec<(usize, Timeout)>,
    /// Whether each transport's accepted-socket options were recorded.
    socket_recorded: [bool; 2],
    /// Loop-mode calls to run, and jobs parked while the worker queue is full.
    held: Held,
    /// Connections waiting for buffer memory before they can be read.
    starved: Vec<usize>,
    /// When a refused peer was last logged, and how many since.
    denial_warning: (Option<Instant>, u64),
}

impl Reactor {
    /// Assembles a loop; listeners must already be bound.
    pub fn new(
        poll: Poll,
        mut listeners: Vec<Listener>,
        context: Arc<Context>,
        workers: (WorkerPool, Completions),
        config: LoopConfig,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        Ok(Self {
            poll,
            listeners,
            clients: Slab::new(),
            next_generation: 0,
            context,
            workers: workers.0,
            completions: workers.1,
            rings: RingPool::new(256),
            chunks: ChunkPool::new(256),
            scratch: Vec::new(),
            config,
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            unread: Vec::new(),
            touched: Vec::new(),
            shutdown,
            drain_deadline: None,
            now: Instant::now(),
            spare: File::open("/dev/null").ok(),
            fd_warning: (None, 0),
            expired: Vec::new(),
            socket_recorded: [false; 2],
            held: Held::default(),
            starved: Vec::new(),
            denial_warning: (None, 0),
        }
        .with_sweep())
    }

    /// Schedules the first timeout sweep, if any timeout is on.
    fn with_sweep(mut self) -> Self {
        if let Some(every) = self.sweep_interval() {
            self.timers
                .push(Reverse((self.now + every, usize::MAX, 0, TimerKind::Sweep)));
        }
        self
    }

    /// A quarter of the shortest timeout, within 50 ms and 1 s.
    fn sweep_interval(&self) -> Option<Duration> {
        let t = self.config.timeouts;
        [t.frame, t.idle, t.write]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .map(|d| (d / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)))
    }

    fn stats(&self) -> &Stats {
        self.context.stats()
    }

    /// Runs until shutdown is requested and the drain completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            // Connections carried over from the last turn read after this turn's events.
            let carried = std::mem::take(&mut self.unread);
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(t) if t >= LISTENER_BASE => self.accept_all(t - LISTENER_BASE),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            // Data and the peer's FIN can share one edge: then read to the end.
                            let to_the_end = event.is_read_closed() || event.is_error();
                            self.read(key, to_the_end);
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            for key in carried {
                self.read(key, true);
            }
            self.run_loop_jobs();
            self.take_completions();
            self.queue_parked();
            self.flush_dirty();
            self.fire_timers();
            self.feed_starved();
            if self.shutdown.load(Relaxed) && self.drain_deadline.is_none() {
                self.begin_drain();
            }
            if let Some(deadline) = self.drain_deadline {
                if self.clients.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        connections = self.clients.len(),
                        "drain timeout reached; closing connections with work still pending"
                    );
                    // Jobs still queued are dropped; running ones end on their own.
                    self.workers.abandon();
                    self.held.parked.clear();
                    return Ok(());
                }
            }
        }
        self.workers.shutdown();
        Ok(())
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.unread.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let timer = self.timers.peek().map(|Reverse((at, ..))| *at);
        [timer, self.drain_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn accept_all(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept(&self.config.sockets) {
                Ok(stream) => self.admit(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.shed_one(index) {
                        return;
                    }
                }
                Err(e) => {
                    Stats::bump(&self.stats().accept_errors);
                    tracing::warn!(error = %e, listener = %listener.local_addr(), "accept failed");
                    return;
                }
            }
        }
    }

    /// Out of descriptors: gives up the spare, accepts one pending client,
    /// tells it why it cannot be served and closes it, then takes the spare
    /// back. Returns true when a client was shed and more may wait. Linux
    /// reports EMFILE before it looks at the queue, so an empty queue shows
    /// up here as WouldBlock: then there is nothing to do. Without a spare,
    /// accepting is retried on a timer rather than in a spin.
    fn shed_one(&mut self, index: usize) -> bool {
        let Some(spare) = self.spare.take() else {
            Stats::bump(&self.stats().fd_exhausted);
            self.warn_fd_exhaustion();
            self.timers.push(Reverse((
                self.now + ACCEPT_RETRY,
                index,
                0,
                TimerKind::AcceptRetry,
            )));
            return false;
        };
        drop(spare);
        let accepted = self
            .listeners
            .get(index)
            .map(|l| l.accept(&self.config.sockets));
        let shed = match accepted {
            Some(Ok(mut stream)) => {
                let error = RpcError::with(
                    ErrorCode::OutOfDescriptors,
                    "the daemon has no file descriptors left; retry shortly",
                );
                let mut line = Vec::with_capacity(128);
                jsonrpc::write_error(&mut line, None, &error);
                line.push(b'\n');
                let _ = stream.write(&line);
                Stats::bump(&self.stats().fd_exhausted);
                self.warn_fd_exhaustion();
                true
            }
            _ => false,
        };
        self.spare = File::open("/dev/null").ok();
        shed && self.spare.is_some()
    }

    fn warn_fd_exhaustion(&mut self) {
        let (last, count) = &mut self.fd_warning;
        *count += 1;
        if last.is_none_or(|at| self.now.duration_since(at) >= FD_WARNING_EVERY) {
            tracing::warn!(
                refused = *count,
                connections = self.clients.len(),
                "out of file descriptors: new connections are refused (raise the fd limit, e.g. LimitNOFILE=)"
            );
            *last = Some(self.now);
            *count = 0;
        }
    }

    /// Logs a peer refused by the allow-list, at most once per
    /// FD_WARNING_EVERY with a count of the rest.
    fn warn_denied(&mut self, peer: &crate::access::Peer) {
        let (last, count) = &mut self.denial_warning;
        *count += 1;
        if last.is_none_or(|at| self.now.duration_since(at) >= FD_WARNING_EVERY) {
            tracing::warn!(peer = %peer, refused = *count, "connection refused: peer not on the allow-list (allow-uids / allow-gids)");
            *last = Some(self.now);
            *count = 0;
        }
    }

    fn admit(&mut self, mut stream: Stream) {
        let transport = stream.transport();
        if self.clients.len() >= self.config.max_connections {
            Stats::bump(&self.stats().refused_max_connections);
            let error = RpcError::with(
                ErrorCode::TooManyConnections,
                format_args!(
                    "the daemon serves at most {} connections",
                    self.config.max_connections
                ),
            );
            let mut line = Vec::with_capacity(160);
            jsonrpc::write_error(&mut line, None, &error);
            line.push(b'\n');
            // Best effort on a fresh socket; the close follows either way.
            let _ = stream.write(&line);
            tracing::warn!(
                limit = self.config.max_connections,
                "connection refused: limit reached"
            );
            return;
        }
        let peer = stream.identity();
        let gate = self.context.access().gate(&peer);
        if gate == Gate::Denied {
            // Answered with an error once its protocol is known, then closed.
            Stats::bump(&self.stats().access_denied);
            self.warn_denied(&peer);
        }
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        self.next_generation = self.next_generation.wrapping_add(1);
        let id = ConnRef {
            token: key,
            generation: self.next_generation,
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot register a new connection");
            return;
        }
        tracing::debug!(conn = key, peer = %peer, "accepted");
        if !self.socket_recorded[transport as usize] {
            // The first connection of each transport shows what the kernel took.
            self.socket_recorded[transport as usize] = true;
            let stats = self.context.stats();
            stats.record_socket(transport.name(), stream.read_back());
        }
        entry.insert(Client {
            stream,
            conn: Connection::new(id, peer, gate, self.now),
            lingering: false,
        });
        let stats = self.stats().transport(transport);
        Stats::bump(&stats.current);
        Stats::bump(&stats.total);
        let deadline = Instant::now() + self.config.sniff_timeout;
        self.timers
            .push(Reverse((deadline, key, id.generation, TimerKind::Sniff)));
    }

    /// Reads what the socket holds into the connection and lets it parse.
    /// Without `to_the_end`, a short read ends the round: the socket is empty,
    /// and epoll and kqueue report data arriving later with a new edge.
    fn read(&mut self, key: usize, to_the_end: bool) {
        let (now, quickack) = (self.now, self.config.sockets.tcp_quickack);
        let mut shared = shared!(self);
        let scratch = &mut self.scratch;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let mut budget_used = true;
        let mut failed = false;
        let mut starved = false;
        for _ in 0..READS_PER_TURN {
            if !client.conn.wants_input() {
                budget_used = false;
                break;
            }
            let result = {
                let Some(ring) = client.conn.read_space(&mut shared) else {
                    // Buffer memory is at its limit: read once some is freed.
                    starved = true;
                    budget_used = false;
                    break;
                };
                let mut iov = [IoSliceMut::new(&mut []), IoSliceMut::new(&mut [])];
                let used = ring.space_iovecs(&mut iov);
                let room = iov[..used].iter().map(|s| s.len()).sum::<usize>();
                if room == 0 {
                    // The codec refuses frames before the ring fills; never read 0 bytes as EOF.
                    budget_used = false;
                    break;
                }
                client
                    .stream
                    .read_vectored(&mut iov[..used])
                    .map(|n| (n, room))
            };
            match result {
                Ok((0, _)) => {
                    if client.lingering {
                        failed = true;
                    } else {
                        client.conn.end_of_input(&mut shared, scratch);
                    }
                    budget_used = false;
                    break;
                }
                Ok((n, room)) => {
                    if quickack {
                        client.stream.rearm_quickack();
                    }
                    client.conn.received(n, now, &mut shared, scratch);
                    if n < room && !to_the_end {
                        budget_used = false;
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    budget_used = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(conn = key, error = %e, "read failed");
                    failed = true;
                    budget_used = false;
                    break;
                }
            }
        }
        client.conn.release_idle_buffers(&mut shared);
        if failed {
            client.conn.discard_output(&mut shared);
            self.close(key);
            return;
        }
        if budget_used {
            self.unread.push(key);
        }
        if starved {
            Stats::bump(&self.stats().memory_waits);
            self.starved.push(key);
        }
        self.mark_dirty(key);
    }

    /// Reads the connections that waited for buffer memory, once there is
    /// some: next turn, in the order they started waiting.
    fn feed_starved(&mut self) {
        self.stats()
            .ring_bytes
            .store(self.rings.in_use() as u64, Relaxed);
        if self.starved.is_empty() {
            return;
        }
        let shared = shared!(self);
        if shared.buffer_memory() < self.config.limits.max_buffer_memory {
            self.unread.append(&mut self.starved);
        }
    }

    /// Runs the loop-mode calls read this turn, with a view of every
    /// connection, and answers them like pool completions.
    fn run_loop_jobs(&mut self) {
        if self.held.on_loop.is_empty() {
            return;
        }
        let now = self.now;
        let clients: Vec<_> = self.clients.iter().map(|(_, c)| c.conn.info(now)).collect();
        let jobs = std::mem::take(&mut self.held.on_loop);
        for job in jobs {
            let done = job.run(&self.context, Some(&clients));
            self.deliver(done);
        }
    }

    /// Moves parked jobs to the pool while it has room; a connection whose
    /// last parked job leaves is parsed and read again.
    fn queue_parked(&mut self) {
        while let Some(job) = self.held.parked.pop_front() {
            let key = job.conn.token;
            let alive = self
                .clients
                .get(key)
                .is_some_and(|c| c.conn.id() == job.conn);
            if !alive {
                continue; // Its connection closed while it waited.
            }
            match self.workers.submit(job) {
                Ok(()) => {}
                // The pool closes only after the loop has stopped.
                Err(SubmitError::Full(job) | SubmitError::Closed(job)) => {
                    self.held.parked.push_front(job);
                    return;
                }
            }
            let mut shared = shared!(self);
            let Some(client) = self.clients.get_mut(key) else {
                continue;
            };
            if let Some(read_again) = client.conn.unpark(&mut shared, &mut self.scratch) {
                if read_again {
                    self.unread.push(key);
                }
                self.dirty.push(key);
            }
        }
    }

    fn take_completions(&mut self) {
        let mut shared = shared!(self);
        let mut touched = std::mem::take(&mut self.touched);
        for done in self.completions.drain() {
            deliver(&mut self.clients, &mut shared, &mut touched, done);
        }
        self.dirty.append(&mut touched);
        self.touched = touched;
    }

    /// Hands one completion to its connection.
    fn deliver(&mut self, done: Completion) {
        let mut shared = shared!(self);
        deliver(&mut self.clients, &mut shared, &mut self.dirty, done);
    }

    fn mark_dirty(&mut self, key: usize) {
        self.dirty.push(key);
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty.drain(..) {
            self.flush(key);
            self.settle(key);
        }
        self.dirty = dirty;
    }

    /// Writes as much pending output as the socket takes.
    fn flush(&mut self, key: usize) {
        let now = self.now;
        let mut shared = shared!(self);
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let mut failed = false;
        while !client.conn.output().is_empty() {
            let result = {
                let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                let used = client.conn.output().iovecs(&mut iov);
                let total = iov[..used].iter().map(|s| s.len()).sum::<usize>();
                client
                    .stream
                    .write_vectored(&iov[..used])
                    .map(|n| (n, total))
            };
            match result {
                Ok((n, total)) => {
                    client.conn.wrote(n, now, &mut shared);
                    if n < total {
                        break; // The socket is full: WRITABLE comes later.
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(conn = key, error = %e, "write failed");
                    failed = true;
                    break;
                }
            }
        }
        client.conn.flushed(now);
        if failed {
            client.conn.discard_output(&mut shared);
            self.close(key);
            return;
        }
        if let Some(read_again) = client.conn.resume(&mut shared, &mut self.scratch) {
            // Output drained: what the ring held is now answered (flush it),
            // and the socket is read again next turn, since its readiness
            // edge went by while the connection was paused.
            self.dirty.push(key);
            if read_again {
                self.unread.push(key);
            }
        }
    }

    /// Closes or half-closes a connection that has nothing left to do.
    fn settle(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        match client.conn.finish() {
            Finish::Open => {}
            Finish::Close => self.close(key),
            Finish::Linger if !client.lingering => {
                client.lingering = true;
                let _ = client.stream.shutdown(Shutdown::Write);
                let generation = client.conn.id().generation;
                self.timers.push(Reverse((
                    Instant::now() + LINGER,
                    key,
                    generation,
                    TimerKind::Linger,
                )));
            }
            Finish::Linger => {}
        }
    }

    fn close(&mut self, key: usize) {
        if !self.clients.contains(key) {
            return;
        }
        let mut client = self.clients.remove(key);
        let _ = self.poll.registry().deregister(&mut client.stream);
        let mut shared = shared!(self);
        client.conn.discard_output(&mut shared);
        client.conn.release_idle_buffers(&mut shared);
        let transport: Transport = client.conn.transport();
        self.stats()
            .transport(transport)
            .current
            .fetch_sub(1, Relaxed);
        tracing::debug!(conn = key, "closed");
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, key, generation, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match kind {
                TimerKind::Sweep => {
                    self.sweep_timeouts(now);
                    continue;
                }
                TimerKind::AcceptRetry => {
                    self.accept_all(key);
                    continue;
                }
                TimerKind::Sniff | TimerKind::Linger => {}
            }
            let Some(client) = self.clients.get(key) else {
                continue;
            };
            if client.conn.id().generation != generation {
                continue;
            }
            match kind {
                TimerKind::Sniff if client.conn.is_sniffing() => {
                    Stats::bump(&self.stats().sniff_timeouts);
                    tracing::debug!(
                        conn = key,
                        "closed: nothing recognisable within the sniff timeout"
                    );
                    self.close(key);
                }
                TimerKind::Linger => self.close(key),
                TimerKind::Sniff | TimerKind::Sweep | TimerKind::AcceptRetry => {}
            }
        }
    }

    /// Closes the connections whose frame, idle or write timeout expired.
    fn sweep_timeouts(&mut self, now: Instant) {
        let limits = self.config.timeouts;
        let mut expired = std::mem::take(&mut self.expired);
        expired.extend(
            self.clients
                .iter()
                .filter(|(_, c)| !c.lingering)
                .filter_map(|(key, c)| c.conn.timed_out(now, &limits).map(|t| (key, t))),
        );
        for (key, timeout) in expired.drain(..) {
            let stats = self.context.stats();
            match timeout {
                Timeout::Frame => {
                    Stats::bump(&stats.frame_timeouts);
                    tracing::debug!(conn = key, "frame timeout");
                    let mut shared = shared!(self);
                    if let Some(client) = self.clients.get_mut(key) {
                        client.conn.frame_timed_out(limits.frame, &mut shared);
                    }
                    self.mark_dirty(key);
                }
                Timeout::Idle => {
                    Stats::bump(&stats.idle_timeouts);
                    tracing::debug!(conn = key, "idle timeout");
                    self.close(key);
                }
                Timeout::Write => {
                    Stats::bump(&stats.write_timeouts);
                    tracing::debug!(conn = key, "write timeout: the peer stopped reading");
                    self.close(key);
                }
            }
        }
        self.expired = expired;
        if let Some(every) = self.sweep_interval() {
            self.timers
                .push(Reverse((now + every, usize::MAX, 0, TimerKind::Sweep)));
        }
        self.flush_dirty();
    }

    /// Stops accepting and reading; connections close once their answers are out.
    fn begin_drain(&mut self) {
        self.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener);
            listener.remove_socket_file();
        }
        self.listeners.clear();
        let in_flight: usize = self.clients.iter().map(|(_, c)| c.conn.in_flight()).sum();
        tracing::info!(
            connections = self.clients.len(),
            in_flight,
            "shutting down: draining in-flight requests"
        );
        let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        let mut shared = shared!(self);
        for &key in &keys {
            if let Some(client) = self.clients.get_mut(key) {
                client.conn.stop_input(&mut shared);
            }
        }
        for key in keys {
            self.mark_dirty(key);
        }
        self.flush_dirty();
    }
}

/// Hands a completion to its connection, or drops it when the connection
/// closed while the job ran.
fn deliver(
    clients: &mut Slab<Client>,
    shared: &mut Shared<'_>,
    touched: &mut Vec<usize>,
    done: Completion,
) {
    let key = done.conn.token;
    match clients.get_mut(key) {
        Some(client) if client.conn.id() == done.conn => {
            client.conn.complete(done, shared);
            touched.push(key);
        }
        _ => shared.chunks.give(done.frame),
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.remove_socket_file();
        }
    }
}
