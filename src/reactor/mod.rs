//! The event loop, split at the seam between what a turn decides and how
//! bytes move.
//!
//! [`Core`] owns the listeners, every connection (a slab; the key is the
//! token), the worker pool's completions, the timers and the drain. It makes
//! no readiness or completion assumption: a driver asks it where to read
//! ([`Core::read_target`]) and what to write ([`Core::write_target`]), does
//! the I/O its own way, and reports each result ([`Core::on_read`],
//! [`Core::on_write`]). [`epoll`] is the readiness driver (mio: epoll on
//! Linux, kqueue on macOS). Connections the core closes are handed to the
//! driver ([`Core::take_closed`]), which gives their buffers back once no
//! I/O of its own still points into them.

mod bus;
mod drain;
pub mod epoll;
mod gate;
mod io;
mod layer;
mod output;
mod regrant;
mod shrink;
mod timers;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub mod uring;
mod waker;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::buffer::RingPool;
use crate::bus::Bus;
use crate::conn::{Connection, Finish, Timeout, Timeouts};
use crate::dispatch::{Held, Limits, Shared};
use crate::error::RpcError;
use crate::net::tuning::SocketOptions;
use crate::net::{Listener, Stream};
use crate::proto::jsonrpc;
use crate::router::Context;
use crate::stats::Stats;
use crate::workers::{Completion, Completions, SubmitError, WorkerPool};
use crate::write_queue::ChunkPool;

pub use timers::TimerKind;
pub use waker::Waker;

/// Why the io_uring backend cannot run here (kernel, seccomp, sysctl, or a
/// build without it), or None when it can: for tools and test suites that
/// pick a backend before starting a server, since `--backend io-uring`
/// refuses to start where this gives a reason.
pub fn io_uring_unavailable() -> Option<String> {
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    let why = uring::probe().err().map(|e| {
        let text = e.to_string();
        text.strip_prefix("io_uring is unavailable: ")
            .map_or(text.clone(), str::to_string)
    });
    #[cfg(not(all(target_os = "linux", feature = "io-uring")))]
    let why = Some("this build has no io-uring backend (Linux, feature \"io-uring\")".to_string());
    why
}

/// Reads per connection per turn, so that one busy client cannot starve the rest.
pub const READS_PER_TURN: usize = 16;
/// How long a connection closed for a protocol error may take to send its EOF.
const LINGER: Duration = Duration::from_secs(2);

/// Loop settings taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Frame and batch limits.
    pub limits: Limits,
    /// Most connections served at once (allowed, or authenticated).
    pub max_connections: usize,
    /// Most connections waiting to authenticate, beside `max_connections`.
    pub max_unauthenticated: usize,
    /// Close connections that have not been sniffed after this long.
    pub sniff_timeout: Duration,
    /// Close connections that have not authenticated after this long (zero: off).
    pub auth_timeout: Duration,
    /// Bound on the graceful drain at shutdown.
    pub drain_timeout: Duration,
    /// Lame-duck time before the drain: serving, reporting draining (zero: none).
    pub shutdown_grace: Duration,
    /// Frame, idle and write timeouts.
    pub timeouts: Timeouts,
    /// Socket options for accepted connections.
    pub sockets: SocketOptions,
}

/// One connection: its socket and its state machine.
pub struct Client {
    /// The socket.
    pub stream: Stream,
    /// The state machine.
    pub conn: Connection,
    /// Write side shut down; closing when the peer's EOF comes or LINGER ends.
    lingering: bool,
    /// The peer closed both directions (a Unix peer that closed its socket,
    /// a TCP reset), as opposed to only ending its input: nothing will reach
    /// it any more, so it is closed as soon as its input is read or held.
    hung_up: bool,
    /// The peer ended its input (FIN, or a Unix half-close) while the daemon
    /// held it, as a driver that cannot read the EOF reports it: the
    /// timeout sweep then checks whether it is gone altogether.
    read_closed: bool,
    /// Counted among the connections waiting to authenticate.
    waiting_auth: bool,
    /// Waiting for buffer memory (counted once per wait, however often it
    /// is tried again).
    memory_wait: bool,
    /// A PROXY header or TLS under the sniffer (TCP listeners that have
    /// them); None for plain connections.
    layer: Option<Box<crate::net::tls::Layer>>,
}

/// Borrows what connections need from the loop, field by field, so that the
/// slab of clients stays borrowable beside it.
macro_rules! shared {
    ($core:expr) => {
        $crate::dispatch::Shared {
            context: &$core.context,
            workers: &$core.workers,
            rings: &mut $core.rings,
            chunks: &mut $core.chunks,
            limits: $core.config.limits,
            held: &mut $core.held,
            bus: &mut $core.bus,
            now: $core.now,
            timed: &mut $core.timed,
            frames: &mut $core.frames,
        }
    };
}
use shared;

/// What the loop owns and decides, whatever moves the bytes.
pub struct Core {
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
    timers: BinaryHeap<timers::Timer>,
    /// Reused list of the timers due in one `fire_timers`.
    due: Vec<timers::Timer>,
    /// Connections with output to flush at the end of this turn.
    dirty: Vec<usize>,
    /// Connections that used their read budget and may have more to read.
    unread: Vec<usize>,
    /// Connections accepted this turn, for the driver to start watching.
    admitted: Vec<usize>,
    /// Connections closed this turn, for the driver to retire.
    closed: Vec<Client>,
    shutdown: Arc<AtomicBool>,
    drain_deadline: Option<Instant>,
    /// When the shutdown grace ends, once it has begun (see drain.rs).
    grace_until: Option<Instant>,
    /// The time of this turn, read once after each wait.
    now: Instant,
    /// A descriptor held back so that a connection can still be accepted and
    /// told "out of descriptors" when the process has none left.
    spare: Option<File>,
    /// When fd exhaustion was last logged, and how often it happened since.
    fd_warning: (Option<Instant>, u64),
    /// When a refused peer was last logged, and how many since.
    denial_warning: (Option<Instant>, u64),
    /// When a connection refused at max-unauthenticated was last logged, and how many since.
    crowd_warning: (Option<Instant>, u64),
    /// Connections open that have not authenticated yet.
    unauthenticated: usize,
    /// Reused list of connections whose timeouts expired.
    expired: Vec<(usize, Timeout)>,
    /// Whether each transport's accepted-socket options were recorded.
    socket_recorded: [bool; 2],
    /// Loop-mode calls to run, and jobs parked while the worker queue is full.
    held: Held,
    /// Connections waiting for buffer memory before they can be read.
    starved: Vec<usize>,
    /// Buffer memory when a connection last had to wait: they are tried
    /// again only once memory drops below it, never in a spin.
    starved_at: usize,
    /// The service bus: routed names, pending calls, subscriptions.
    bus: Bus,
    /// Bytes written this turn, and connections left for the next one
    /// past [`output::WRITE_BYTES_PER_TURN`].
    written: usize,
    deferred: Vec<usize>,
    /// The policy generation the open connections were judged under.
    policy_generation: u64,
    /// When the loop last gave back what a burst left (see shrink.rs).
    shrinker: shrink::Shrinker,
    /// Inline calls of the current parse pass waiting to be timed.
    timed: Vec<crate::observe::TimedCall>,
    /// Frames counted in the current parse pass (see `Shared::frames`).
    frames: [u64; 2],
    /// TLS ciphertext buffers between reads (see net/tls.rs).
    tls_spare: crate::net::tls::SpareBuffers,
    /// What comes from the NATS thread (`--nats`); None: not federated.
    federation: Option<crate::federation::Link>,
}

/// How the drain at shutdown stands after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Not shutting down, or still draining.
    Running,
    /// Every connection is done: stop and let the workers finish.
    Done,
    /// The drain timeout ran out: stop now, abandoning queued jobs.
    TimedOut,
}

impl Core {
    /// Assembles the core; listeners must already be bound.
    pub fn new(
        listeners: Vec<Listener>,
        context: Arc<Context>,
        workers: (WorkerPool, Completions),
        config: LoopConfig,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        let bus = Bus::new(
            context.bus_config().clone(),
            context.stats_handle(),
            std::sync::Arc::clone(context.directory()),
        )
        .with_observe(Arc::clone(context.observe()));
        let mut core = Self {
            bus,
            listeners,
            clients: Slab::new(),
            next_generation: 0,
            context,
            workers: workers.0,
            completions: workers.1,
            rings: RingPool::new(crate::buffer::RING_WARM_BYTES),
            chunks: ChunkPool::new(256),
            scratch: Vec::new(),
            config,
            timers: BinaryHeap::new(),
            due: Vec::with_capacity(64),
            dirty: Vec::new(),
            unread: Vec::new(),
            admitted: Vec::new(),
            closed: Vec::new(),
            shutdown,
            drain_deadline: None,
            grace_until: None,
            now: Instant::now(),
            spare: File::open("/dev/null").ok(),
            fd_warning: (None, 0),
            denial_warning: (None, 0),
            crowd_warning: (None, 0),
            unauthenticated: 0,
            expired: Vec::new(),
            socket_recorded: [false; 2],
            held: Held::default(),
            starved: Vec::new(),
            starved_at: 0,
            written: 0,
            deferred: Vec::new(),
            policy_generation: 0,
            shrinker: shrink::Shrinker::default(),
            timed: Vec::with_capacity(64),
            frames: [0; 2],
            tls_spare: Default::default(),
            federation: None,
        };
        core.policy_generation = core.context.policy().generation();
        core.schedule_sweep(Instant::now());
        core
    }

    fn stats(&self) -> &Stats {
        self.context.stats()
    }

    /// The listeners, for the driver to watch.
    pub fn listeners_mut(&mut self) -> &mut [Listener] {
        &mut self.listeners
    }

    /// The connection under `key`, if open.
    pub fn client_mut(&mut self, key: usize) -> Option<&mut Client> {
        self.clients.get_mut(key)
    }

    /// Starts a turn: reads the clock once for everything the turn does.
    pub fn begin_turn(&mut self) {
        self.now = Instant::now();
        self.bus.tick(self.now);
        self.written = 0;
        self.between_turns();
    }

    /// Connections that still had input when their read budget ran out
    /// (read them again this turn, after the fresh events).
    pub fn take_unread(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.unread)
    }

    /// Connections accepted since the last call.
    pub fn take_admitted(&mut self) -> std::vec::Drain<'_, usize> {
        self.admitted.drain(..)
    }

    /// Connections closed since the last call: the driver stops watching
    /// them and gives their buffers back with [`Core::release`].
    pub fn take_closed(&mut self) -> Vec<Client> {
        std::mem::take(&mut self.closed)
    }

    /// Gives a closed connection's buffers back to the pools. The driver
    /// calls it once no I/O it started points into them any more.
    pub fn release(&mut self, mut client: Client) {
        let mut shared = shared!(self);
        client.conn.discard_output(&mut shared);
        client.conn.release_idle_buffers(&mut shared);
        self.stats()
            .ring_bytes
            .store(self.rings.in_use() as u64, Relaxed);
    }

    /// Marks a connection as having output to write this turn.
    pub fn mark_dirty(&mut self, key: usize) {
        self.dirty.push(key);
    }

    /// Connections with output to write, each once.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        self.append_deferred(&mut dirty);
        self.close_overflowed(&dirty);
        dirty
    }

    /// Gives back the (emptied) list from [`Core::take_dirty`], keeping its allocation.
    pub fn return_dirty(&mut self, mut list: Vec<usize>) {
        list.clear();
        if self.dirty.is_empty() {
            self.dirty = list;
        }
    }

    /// The work of a turn after its reads: loop-mode calls, the pool's
    /// completions, and parked jobs that now fit in the queue.
    pub fn after_reads(&mut self) {
        self.run_loop_jobs();
        self.take_completions();
        self.queue_parked();
        if let Some(link) = &mut self.federation {
            crate::federation::drain(link, &mut self.bus, &self.context);
        }
        self.deliver_bus();
    }

    /// Joins the cluster: the bus gets the uplink, the loop the link.
    pub(crate) fn attach_federation(
        &mut self,
        federation: Option<(crate::federation::Uplink, crate::federation::Link)>,
    ) {
        if let Some((uplink, link)) = federation {
            self.bus.attach_uplink(uplink);
            self.federation = Some(link);
        }
    }

    /// The work at the end of a turn: starved connections are fed when
    /// memory allows, and the drain begins or is checked.
    pub fn end_turn(&mut self) -> Drain {
        self.feed_starved();
        self.shutdown_step()
    }

    /// How long the driver may wait for I/O before the next timer or deadline.
    pub fn wait_timeout(&self) -> Option<Duration> {
        if !self.unread.is_empty()
            || !self.dirty.is_empty()
            || !self.deferred.is_empty()
            || self.bus.has_work()
            || self.federation.as_ref().is_some_and(|f| f.has_work())
        {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let timer = self.timers.peek().map(|Reverse((at, ..))| *at);
        let service = self.context.notifier().deadline();
        [
            timer,
            self.drain_deadline,
            self.grace_deadline(),
            self.bus.deadline_hint(),
            service,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    /// Closes or half-closes a connection that has nothing left to do.
    pub fn settle(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let finish = client.conn.finish();
        if finish != Finish::Open && client.layer.is_some() && self.layer_holds_close(key) {
            return; // TLS records (close_notify) go out first.
        }
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        match finish {
            Finish::Open => {}
            Finish::Close => self.close(key),
            Finish::Linger if !client.lingering => {
                client.lingering = true;
                let _ = client.stream.shutdown(std::net::Shutdown::Write);
                let generation = client.conn.id().generation;
                self.add_timer(Instant::now() + LINGER, key, generation, TimerKind::Linger);
            }
            Finish::Linger => {}
        }
    }

    /// Removes a connection and hands it to the driver to retire.
    pub fn close(&mut self, key: usize) {
        if !self.clients.contains(key) {
            return;
        }
        let client = self.clients.remove(key);
        if !self.starved.is_empty() {
            // The slot may be reused at once: the newcomer has not waited.
            self.starved.retain(|&k| k != key);
        }
        self.stats()
            .transport(client.conn.transport())
            .current
            .fetch_sub(1, Relaxed);
        if client.waiting_auth {
            self.unauthenticated -= 1;
            self.stats().gate.unauthenticated.fetch_sub(1, Relaxed);
        }
        self.bus.disconnected(client.conn.id());
        tracing::debug!(conn = key, "closed");
        self.closed.push(client);
    }

    /// Reads the connections that waited for buffer memory, once some was
    /// freed: next turn, in the order they started waiting. Each asks again
    /// (`Connection::read_space`), since the line it waits behind is its own:
    /// one finishing a frame may go on above the limit, from the reserve, and
    /// must not wait for memory to fall under it while peers that never read
    /// hold it there.
    fn feed_starved(&mut self) {
        self.stats()
            .ring_bytes
            .store(self.rings.in_use() as u64, Relaxed);
        if self.starved.is_empty() {
            return;
        }
        if shared!(self).buffer_memory() < self.starved_at {
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
        let clients: Vec<_> = self
            .clients
            .iter()
            .map(|(_, c)| {
                let mut info = c.conn.info(now);
                info.tls = c.layer.as_ref().is_some_and(|l| l.tls.is_some());
                info
            })
            .collect();
        for job in std::mem::take(&mut self.held.on_loop) {
            // Only admins see other connections (docs/security.md).
            let admin = self
                .clients
                .get(job.conn.token)
                .is_some_and(|c| c.conn.is_admin());
            let own: Vec<_>;
            let clients = if admin {
                &clients[..]
            } else {
                own = clients
                    .iter()
                    .filter(|c| c.id == job.conn.token)
                    .cloned()
                    .collect();
                &own[..]
            };
            let done = job.run(&self.context, Some(clients));
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
        for done in self.completions.drain() {
            let lists = Lists {
                dirty: &mut self.dirty,
                unread: &mut self.unread,
                scratch: &mut self.scratch,
            };
            deliver(&mut self.clients, &mut shared, lists, done);
        }
    }

    /// Hands one completion to its connection.
    fn deliver(&mut self, done: Completion) {
        let mut shared = shared!(self);
        let lists = Lists {
            dirty: &mut self.dirty,
            unread: &mut self.unread,
            scratch: &mut self.scratch,
        };
        deliver(&mut self.clients, &mut shared, lists, done);
    }

    /// True once the drain has begun (listeners are gone).
    pub fn draining(&self) -> bool {
        self.drain_deadline.is_some()
    }
}

/// Writes one error line to a socket about to be dropped (best effort).
fn turn_away(stream: &mut Stream, error: &RpcError) {
    let mut line = Vec::with_capacity(160);
    jsonrpc::write_error(&mut line, None, error);
    line.push(b'\n');
    let _ = stream.write(&line);
}

/// Hands a completion to its connection, or drops it when the connection
/// closed while the job ran.
/// (A connection that was held at `max-in-flight` is read again.)
fn deliver(
    clients: &mut Slab<Client>,
    shared: &mut Shared<'_>,
    lists: Lists<'_>,
    done: Completion,
) {
    let key = done.conn.token;
    match clients.get_mut(key) {
        Some(client) if client.conn.id() == done.conn => {
            if client.conn.complete(done, shared, lists.scratch) == Some(true) {
                lists.unread.push(key);
            }
            lists.dirty.push(key);
        }
        _ => shared.chunks.give(done.frame),
    }
}

/// The core's work lists a delivery may add to.
struct Lists<'a> {
    dirty: &'a mut Vec<usize>,
    unread: &'a mut Vec<usize>,
    scratch: &'a mut Vec<u8>,
}

impl Drop for Core {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.remove_socket_file();
        }
    }
}
