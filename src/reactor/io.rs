//! The I/O seam: where a driver reads and writes, and what the core does
//! with each result. Readiness drivers call these in a loop right away;
//! completion drivers call the `*_target` functions to start an operation
//! and the `on_*` functions when it completes.

use std::fs::File;
use std::io::{self, ErrorKind, IoSlice, IoSliceMut};

use super::timers::{ACCEPT_RETRY, TimerKind, WARNING_EVERY};
use super::{Core, shared, turn_away};
use crate::error::{ErrorCode, RpcError};
use crate::net::Stream;
use crate::stats::Stats;
use crate::write_queue::MAX_IOVECS;

/// Where to read next on a connection.
pub enum ReadTarget<'a> {
    /// Read into these regions of the connection's ring (`room` bytes in all).
    Read {
        /// The socket.
        stream: &'a mut Stream,
        /// The free regions of the ring.
        iov: [IoSliceMut<'a>; 2],
        /// How many of `iov` are used.
        used: usize,
        /// Their total size.
        room: usize,
    },
    /// Not now: the connection is gone, holds its input, or waits for memory.
    NotNow,
}

/// What the driver does after a read or write result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Go on: the socket may take or hold more.
    Again,
    /// Stop for this turn.
    Stop,
}

impl Core {
    /// Accepts every waiting connection on listener `index`.
    pub fn accept_all(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept(&self.config.sockets) {
                Ok(stream) => {
                    self.admit(stream);
                }
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
                Err(e) if is_out_of_descriptors(&e) => {
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
    pub fn shed_one(&mut self, index: usize) -> bool {
        let Some(spare) = self.spare.take() else {
            Stats::bump(&self.stats().fd_exhausted);
            self.warn_fd_exhaustion();
            let retry = std::time::Instant::now() + ACCEPT_RETRY;
            self.add_timer(retry, index, 0, TimerKind::AcceptRetry);
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
                turn_away(&mut stream, &error);
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
        let now = self.now;
        let connections = self.clients.len();
        let (last, count) = &mut self.fd_warning;
        *count += 1;
        if last.is_none_or(|at| now.duration_since(at) >= WARNING_EVERY) {
            tracing::warn!(
                refused = *count,
                connections,
                "out of file descriptors: new connections are refused (raise the fd limit, e.g. LimitNOFILE=)"
            );
            *last = Some(now);
            *count = 0;
        }
    }

    /// The regions to read into next. Records a connection that must wait
    /// for buffer memory, to read it once memory is freed.
    pub fn read_target(&mut self, key: usize) -> ReadTarget<'_> {
        if self.clients.get(key).is_some_and(|c| c.layer.is_some()) {
            return self.layered_read_target(key);
        }
        let mut shared = shared!(self);
        let Some(client) = self.clients.get_mut(key) else {
            return ReadTarget::NotNow;
        };
        if !client.conn.wants_input() {
            return ReadTarget::NotNow;
        }
        let Some(ring) = client.conn.read_space(&mut shared) else {
            if !std::mem::replace(&mut client.memory_wait, true) {
                Stats::bump(&shared.stats().memory_waits);
            }
            self.starved_at = shared.buffer_memory();
            self.starved.push(key);
            return ReadTarget::NotNow;
        };
        client.memory_wait = false;
        let mut iov = [IoSliceMut::new(&mut []), IoSliceMut::new(&mut [])];
        let used = ring.space_iovecs(&mut iov);
        let room = iov[..used].iter().map(|s| s.len()).sum::<usize>();
        if room == 0 {
            // The codec refuses frames before the ring fills; never read 0 bytes as EOF.
            return ReadTarget::NotNow;
        }
        ReadTarget::Read {
            stream: &mut client.stream,
            iov,
            used,
            room,
        }
    }

    /// Takes the result of a read of up to `room` bytes into the regions
    /// [`Core::read_target`] gave. A short read ends the round unless
    /// `to_the_end` (the peer's FIN may share the readiness edge with data).
    pub fn on_read(
        &mut self,
        key: usize,
        result: io::Result<usize>,
        room: usize,
        to_the_end: bool,
    ) -> Progress {
        let (now, quickack) = (self.now, self.config.sockets.tcp_quickack);
        let mut shared = shared!(self);
        let Some(client) = self.clients.get_mut(key) else {
            return Progress::Stop;
        };
        match result {
            Ok(0) if client.lingering => {
                self.close(key);
                Progress::Stop
            }
            Ok(0) => {
                // A last request without its newline is still taken.
                client.conn.end_of_input(&mut shared, &mut self.scratch);
                if client.hung_up {
                    // Gone, not half-closed: nothing will reach it, so its
                    // routed calls are cancelled and its slot freed now.
                    self.close_hung_up(key);
                }
                Progress::Stop
            }
            Ok(n) if client.layer.is_some() => self.on_layered_read(key, n, room, to_the_end),
            Ok(n) => {
                if quickack {
                    client.stream.rearm_quickack();
                }
                client.conn.received(n, now, &mut shared, &mut self.scratch);
                if n < room && !to_the_end {
                    Progress::Stop
                } else {
                    Progress::Again
                }
            }
            Err(e) => self.failed(key, &e, "read"),
        }
    }

    /// Ends a round of reads: idle buffers go back to the pool, output is
    /// flushed this turn, and a connection that used its whole budget is
    /// read again after the others.
    pub fn end_read(&mut self, key: usize, budget_used: bool) {
        let mut shared = shared!(self);
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.conn.release_idle_buffers(&mut shared);
        if client.hung_up && (!client.conn.wants_input() || self.starved.contains(&key)) {
            // Its input became held while it was read: nothing reads it
            // to the end now, and no answer would reach it.
            self.close_hung_up(key);
            return;
        }
        if budget_used {
            self.unread.push(key);
        }
        self.dirty.push(key);
        self.check_authenticated(key);
    }

    /// The socket and the pending output to write from, filling `iov`;
    /// None when there is nothing to write. Returns the slices used and
    /// their total size.
    pub fn write_target<'a>(
        &'a mut self,
        key: usize,
        iov: &mut [IoSlice<'a>; MAX_IOVECS],
    ) -> Option<(&'a mut Stream, usize, usize)> {
        let client = self.clients.get(key)?;
        if client.layer.is_some() {
            return self.layered_write_target(key, iov);
        }
        let pending = client.conn.output().len();
        if pending == 0 || !self.may_write(key, pending) {
            return None;
        }
        let client = self.clients.get_mut(key)?;
        let used = client.conn.output().iovecs(iov);
        let total = iov[..used].iter().map(|s| s.len()).sum::<usize>();
        self.written += total.min(super::output::WRITE_ESTIMATE);
        Some((&mut client.stream, used, total))
    }

    /// Takes the result of a write of `total` bytes from [`Core::write_target`]:
    /// [`Progress::Again`] only when output is left and the socket took all
    /// it was given.
    pub fn on_write(&mut self, key: usize, result: io::Result<usize>, total: usize) -> Progress {
        let now = self.now;
        let mut shared = shared!(self);
        let Some(client) = self.clients.get_mut(key) else {
            return Progress::Stop;
        };
        match result {
            Ok(n) if client.layer.is_some() => self.on_layered_write(key, n, total),
            Ok(n) => {
                client.conn.wrote(n, now, &mut shared);
                // A short write means the socket is full: writable comes
                // later. All written and nothing queued since: no second
                // round (it would only find the queue empty).
                if n < total || client.conn.output().is_empty() {
                    Progress::Stop
                } else {
                    Progress::Again
                }
            }
            Err(e) => self.failed(key, &e, "write"),
        }
    }

    /// Ends a round of writes: starts the write clock if output is left,
    /// resumes a connection whose output drained below half the cap, and
    /// closes or half-closes one that has nothing left to do.
    pub fn end_write(&mut self, key: usize) {
        let now = self.now;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.conn.flushed(now);
        self.check_authenticated(key);
        self.output_drained(key);
        let mut shared = shared!(self);
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if let Some(read_again) = client.conn.resume(&mut shared, &mut self.scratch) {
            // Output drained: what the ring held is now answered (flush it),
            // and the socket is read again next turn, since its readiness
            // edge went by while the connection was paused.
            self.dirty.push(key);
            if read_again {
                self.unread.push(key);
            }
        }
        self.settle(key);
    }
}

impl Core {
    /// What a failed read or write means: try later, try again, or the
    /// connection is gone (it is closed).
    fn failed(&mut self, key: usize, e: &io::Error, what: &str) -> Progress {
        match e.kind() {
            ErrorKind::WouldBlock => Progress::Stop,
            ErrorKind::Interrupted => Progress::Again,
            _ => {
                tracing::debug!(conn = key, error = %e, "{what} failed");
                self.close(key);
                Progress::Stop
            }
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
