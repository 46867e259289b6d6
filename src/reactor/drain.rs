//! Shutting down: the lame-duck grace, then the drain.
//!
//! A shutdown request (the first SIGINT/SIGTERM, `ShutdownHandle::shutdown`)
//! goes through two steps:
//!
//! 1. **Grace** (`shutdown-grace`, off by default): the loop keeps its
//!    listeners and serves as before, new connections included, but says it
//!    is going away: `Stats::draining` is set (so `GET /healthz` answers 503,
//!    HTTP answers carry `Connection: close` and `rpc.stats` shows
//!    `"draining": true`), and the service manager gets `STOPPING=1` and a
//!    `STATUS=` saying how long is left. A load balancer polling `/healthz`
//!    takes the daemon out of rotation while its clients still get answers,
//!    as NATS's lame-duck mode and a Kubernetes readiness probe do.
//! 2. **Drain** (unchanged by the grace): the listeners close, every
//!    connection stops being read and is closed once its answers are out,
//!    bounded by `drain-timeout`. A WebSocket gets a Close frame with
//!    status 1001 (going away) after those answers, before its connection
//!    closes (RFC 6455 section 7.4.1), unless a close was already under way.
//!
//! A second request during the grace ends it at once: the core takes each
//! request off the shared flag as it sees it, so a request arriving while
//! the grace runs is seen as a new one. Everything here is state and time;
//! the drivers only look at [`Core::draining`] (listeners gone) and at the
//! wait deadline, which includes the end of the grace.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::{Core, Drain, shared};

impl Core {
    /// The shutdown part of [`Core::end_turn`]: starts the grace or the
    /// drain when asked, and tells how the drain stands.
    pub(super) fn shutdown_step(&mut self) -> Drain {
        if self.drain_deadline.is_none() {
            self.grace_step();
        }
        let Some(deadline) = self.drain_deadline else {
            return Drain::Running;
        };
        if self.clients.is_empty() {
            self.workers.shutdown();
            return Drain::Done;
        }
        if Instant::now() < deadline {
            return Drain::Running;
        }
        tracing::warn!(
            connections = self.clients.len(),
            "drain timeout reached; closing connections with work still pending"
        );
        // Jobs still queued are dropped; running ones end on their own.
        self.workers.abandon();
        self.held.parked.clear();
        Drain::TimedOut
    }

    /// Before the drain: enters the grace on a first request (or drains at
    /// once without one), and leaves it for the drain when it ends or when
    /// a second request comes.
    fn grace_step(&mut self) {
        match self.grace_until {
            None => {
                if !self.shutdown.load(Relaxed) {
                    return;
                }
                let grace = self.config.shutdown_grace;
                if grace.is_zero() {
                    self.begin_drain();
                    return;
                }
                // Taken off the flag: a request seen from now on is a second one.
                self.shutdown.store(false, Relaxed);
                let until = Instant::now() + grace;
                self.grace_until = Some(until);
                self.stats().draining.store(true, Relaxed);
                self.context
                    .notifier()
                    .stopping_after(self.context.stats(), grace);
                tracing::info!(
                    grace = ?grace,
                    connections = self.clients.len(),
                    "shutting down: serving for the shutdown grace while /healthz answers 503 \
                     (a second signal drains at once)"
                );
            }
            Some(until) => {
                let again = self.shutdown.swap(false, Relaxed);
                if again {
                    tracing::info!("second shutdown request: ending the shutdown grace early");
                } else if Instant::now() < until {
                    return;
                }
                self.begin_drain();
            }
        }
    }

    /// When the grace ends, while it runs: the loop must turn then.
    pub(super) fn grace_deadline(&self) -> Option<Instant> {
        self.grace_until.filter(|_| self.drain_deadline.is_none())
    }

    /// True once the shutdown has begun (grace or drain), for the service
    /// manager's status. Not the request itself: the end of the turn that
    /// sees it sends `STOPPING=1` with the status of the step it starts.
    pub(super) fn stopping(&self) -> bool {
        self.grace_until.is_some() || self.drain_deadline.is_some()
    }

    /// Stops accepting and reading; connections close once their answers are out.
    pub(super) fn begin_drain(&mut self) {
        self.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
        self.stats().draining.store(true, Relaxed);
        self.context.notifier().stopping(self.context.stats());
        for listener in &self.listeners {
            listener.remove_socket_file();
        }
        // Dropping them closes them; the driver's watch ends with the descriptor.
        self.listeners.clear();
        // Providers are read no more: calls still waiting on them fail now.
        self.bus.shut_down();
        self.deliver_bus();
        let in_flight: usize = self.clients.iter().map(|(_, c)| c.conn.in_flight()).sum();
        tracing::info!(
            connections = self.clients.len(),
            in_flight,
            "shutting down: draining in-flight requests"
        );
        let mut shared = shared!(self);
        for (key, client) in self.clients.iter_mut() {
            client.conn.stop_input();
            // A WebSocket says why it ends (1001) after the answers it is owed.
            client.conn.go_away(&mut shared);
            self.dirty.push(key);
        }
    }
}
