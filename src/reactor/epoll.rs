//! The readiness driver: mio's `Poll` (epoll on Linux, kqueue on macOS).
//!
//! Each turn: wait for events, accept on ready listeners, read ready
//! connections until the socket is empty or the budget is spent, take the
//! pool's completions, write what is pending, fire timers. Sockets are
//! registered edge-triggered for reading when accepted; the kernel reports a
//! hang-up (EPOLLHUP, EPOLLERR, and the EPOLLRDHUP mio adds) whatever the
//! interest, so even on a connection whose input the core holds and does not
//! read. Writability is watched only while a socket is full (a short or
//! refused write), as long as it stays full: otherwise every peer's read of
//! an answer would queue a writable edge (a wake-up in the kernel, an event
//! here) that nothing needs, since output is written in the turn it is made.

use std::io::{self, ErrorKind, IoSlice, IoSliceMut};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use mio::{Events, Interest, Poll, Token};

use super::io::{Progress, ReadTarget};
use super::{Core, Drain, LoopConfig, READS_PER_TURN};
use crate::net::{Listener, Stream};
use crate::router::Context;
use crate::workers::{Completions, WorkerPool};
use crate::write_queue::MAX_IOVECS;

/// The token of the waker the pool and the shutdown handle use.
pub const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 8;
/// Events taken per poll.
const EVENTS: usize = 1024;

/// The loop on mio.
pub struct EpollLoop {
    poll: Poll,
    core: Core,
    /// By connection key: WRITABLE is (or is to be, at registration) part
    /// of its interest. A stale `true` for a reused key only costs events.
    writable: Vec<bool>,
}

impl EpollLoop {
    /// Assembles the loop; listeners must already be bound, and the waker
    /// registered on `poll` under [`WAKER`].
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
        let core = Core::new(listeners, context, workers, config, shutdown);
        Ok(Self {
            poll,
            core,
            writable: Vec::new(),
        })
    }

    /// Joins the cluster (`--nats`, src/federation/) before running.
    pub(crate) fn with_federation(
        mut self,
        federation: Option<(crate::federation::Uplink, crate::federation::Link)>,
    ) -> Self {
        self.core.attach_federation(federation);
        self
    }

    /// Runs until shutdown is requested and the drain completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            if let Err(e) = self.poll.poll(&mut events, self.core.wait_timeout()) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.core.begin_turn();
            // Connections carried over from the last turn read after this turn's events.
            let carried = self.core.take_unread();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(t) if t >= LISTENER_BASE => self.core.accept_all(t - LISTENER_BASE),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            // Data and the peer's FIN can share one edge: then read to the end.
                            let to_the_end = event.is_read_closed() || event.is_error();
                            // Closed or reset: gone, even if its input is held and not read.
                            if event.is_write_closed() || event.is_error() {
                                self.core.hung_up(key);
                            }
                            self.read(key, to_the_end);
                        }
                        if event.is_writable() {
                            self.core.mark_dirty(key);
                        }
                    }
                }
            }
            for key in carried {
                self.read(key, true);
            }
            self.core.after_reads();
            self.flush_dirty();
            self.core.fire_timers();
            self.flush_dirty();
            let drain = self.core.end_turn();
            self.watch_admitted();
            self.retire_closed();
            match drain {
                Drain::Running => {}
                Drain::Done | Drain::TimedOut => return Ok(()),
            }
        }
    }

    /// Reads what the socket holds into the connection and lets it parse.
    /// Without `to_the_end`, a short read ends the round: the socket is empty,
    /// and epoll and kqueue report data arriving later with a new edge.
    fn read(&mut self, key: usize, to_the_end: bool) {
        let mut budget_used = true;
        for _ in 0..READS_PER_TURN {
            let (result, room) = match self.core.read_target(key) {
                ReadTarget::Read {
                    stream,
                    mut iov,
                    used,
                    room,
                } => (read_some(stream, &mut iov[..used]), room),
                ReadTarget::NotNow => {
                    budget_used = false;
                    break;
                }
            };
            if self.core.on_read(key, result, room, to_the_end) == Progress::Stop {
                budget_used = false;
                break;
            }
        }
        self.core.end_read(key, budget_used);
    }

    /// Writes as much pending output as each dirty connection's socket takes.
    fn flush_dirty(&mut self) {
        let dirty = self.core.take_dirty();
        for &key in &dirty {
            let mut full = false;
            loop {
                let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                let Some((stream, used, total)) = self.core.write_target(key, &mut iov) else {
                    break;
                };
                let result = write_some(stream, &iov[..used]);
                full = match &result {
                    Ok(n) => *n < total,
                    Err(e) => e.kind() == ErrorKind::WouldBlock,
                };
                if self.core.on_write(key, result, total) == Progress::Stop {
                    break;
                }
            }
            self.watch_writable(key, full);
            self.core.end_write(key);
        }
        self.core.return_dirty(dirty);
    }

    /// Watches writability while the socket of `key` is `full` (the last
    /// write was short or refused) and stops once a flush did not fill it:
    /// one `epoll_ctl` at each change, none per turn. A connection not
    /// registered yet (accepted this turn) gets the interest from
    /// [`Self::watch_admitted`].
    fn watch_writable(&mut self, key: usize, full: bool) {
        if self.writable.get(key).copied().unwrap_or(false) == full {
            return;
        }
        let Some(client) = self.core.client_mut(key) else {
            return;
        };
        if self.writable.len() <= key {
            self.writable.resize(key + 1, false);
        }
        self.writable[key] = full;
        let interest = if full {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let result = self
            .poll
            .registry()
            .reregister(&mut client.stream, Token(key), interest);
        match result {
            // Not registered yet: watch_admitted uses the flag.
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                // Left unwatched it could stall with output pending.
                tracing::warn!(conn = key, error = %e, "cannot change what a connection is watched for");
                self.core.close(key);
            }
        }
    }

    /// Registers connections accepted this turn: for reading, and for
    /// writing too if a flush already found the socket full.
    fn watch_admitted(&mut self) {
        let mut admitted: Vec<usize> = self.core.take_admitted().collect();
        // A slot closed and reused within the turn must not be registered twice.
        admitted.sort_unstable();
        admitted.dedup();
        for key in admitted {
            let Some(client) = self.core.client_mut(key) else {
                continue;
            };
            let interest = if self.writable.get(key).copied().unwrap_or(false) {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut client.stream, Token(key), interest)
            {
                tracing::warn!(error = %e, "cannot register a new connection");
                self.core.close(key);
            }
        }
    }

    /// Stops watching closed connections and gives their buffers back:
    /// nothing of this driver's points into them once the call returns.
    fn retire_closed(&mut self) {
        for mut client in self.core.take_closed() {
            let _ = self.poll.registry().deregister(&mut client.stream);
            self.core.release(client);
        }
    }
}

/// `read(2)` into one region (the ring's free space is one piece but when
/// it wraps), `readv(2)` into two: the kernel then imports and checks no
/// iovec array on the common path, as a server reading into a flat buffer.
fn read_some(stream: &mut Stream, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    match iov {
        [one] => stream.recv(one),
        _ => stream.read_vectored(iov),
    }
}

/// `write(2)` from one chunk (most turns queue fewer than a chunk of
/// answers), `writev(2)` from several: the same saving as [`read_some`].
fn write_some(stream: &mut Stream, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    match iov {
        [one] => stream.send(one),
        _ => stream.write_vectored(iov),
    }
}
