//! The loop's timers: sniff, auth and linger deadlines per connection, the
//! periodic sweep of frame, idle and write timeouts (and of peers that may
//! have hung up while no driver watches them), and the accept retry after
//! running out of descriptors.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::{Core, shared};
use crate::conn::Timeout;
use crate::stats::Stats;

/// How often a repeated warning (fd exhaustion, refused peers) is logged at most.
pub const WARNING_EVERY: Duration = Duration::from_secs(5);
/// The longest between two checks for peers that hung up while their
/// connection was neither read nor watched.
pub const HANGUP_CHECK: Duration = Duration::from_secs(1);
/// How soon accepting is retried when no spare descriptor is left.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// The connection must have shown its protocol by now.
    Sniff,
    /// The connection must have authenticated by now.
    Auth,
    /// A refused connection's lingering close ends now.
    Linger,
    /// Check every connection's frame, idle and write timeouts.
    Sweep,
    /// Try a listener again after running out of descriptors.
    AcceptRetry,
    /// The TLS handshake must be done by now (auth-timeout).
    Handshake,
}

/// When, which connection (key and generation, or the listener index for
/// AcceptRetry), and what for; the heap pops the earliest first.
pub type Timer = Reverse<(Instant, usize, u32, TimerKind)>;

impl Core {
    pub(super) fn add_timer(&mut self, at: Instant, key: usize, generation: u32, kind: TimerKind) {
        self.timers.push(Reverse((at, key, generation, kind)));
    }

    /// Schedules the next timeout sweep one interval after `from`, if any
    /// timeout is on. `from` must be the time the sweep ran, never the start
    /// of a turn that may be older than the interval: the new timer would
    /// be due at once and `fire_timers` would sweep forever.
    pub(super) fn schedule_sweep(&mut self, from: Instant) {
        if let Some(every) = self.sweep_interval() {
            self.add_timer(from + every, usize::MAX, 0, TimerKind::Sweep);
        }
    }

    /// A quarter of the shortest timeout, within 50 ms and 1 s; 1 s when
    /// every timeout is off, for the hang-up check.
    fn sweep_interval(&self) -> Option<Duration> {
        let t = self.config.timeouts;
        let every = [t.frame, t.idle, t.write]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .map_or(HANGUP_CHECK, |d| {
                (d / 4).clamp(Duration::from_millis(50), HANGUP_CHECK)
            });
        Some(every)
    }

    /// Fires every timer that is due. Timers a firing one adds wait for the
    /// next turn, even if already due, so that this can never spin.
    pub fn fire_timers(&mut self) {
        let now = Instant::now();
        let mut due = std::mem::take(&mut self.due);
        while let Some(Reverse((at, ..))) = self.timers.peek() {
            if *at > now {
                break;
            }
            due.extend(self.timers.pop());
        }
        self.expire_calls(now);
        for Reverse((_, key, generation, kind)) in due.drain(..) {
            match kind {
                TimerKind::Sweep => {
                    self.sweep_timeouts(now);
                    self.shrink_when_quiet(now);
                    continue;
                }
                TimerKind::AcceptRetry => {
                    self.accept_all(key);
                    continue;
                }
                TimerKind::Sniff | TimerKind::Linger | TimerKind::Auth | TimerKind::Handshake => {}
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
                TimerKind::Auth if client.waiting_auth && !client.lingering => {
                    self.auth_timed_out(key);
                }
                TimerKind::Linger => self.close(key),
                TimerKind::Handshake => self.handshake_timed_out(key),
                TimerKind::Sniff | TimerKind::Auth | TimerKind::Sweep | TimerKind::AcceptRetry => {}
            }
        }
        self.due = due;
    }

    /// Ends a connection that did not authenticate within `auth-timeout`,
    /// whatever it sent meanwhile: -32007 in its protocol, then a close.
    fn auth_timed_out(&mut self, key: usize) {
        Stats::bump(&self.stats().gate.auth_timeouts);
        let limit = self.config.auth_timeout;
        tracing::debug!(
            conn = key,
            "closed: not authenticated within the auth timeout"
        );
        let error = crate::error::RpcError::with(
            crate::error::ErrorCode::Unauthorized,
            format_args!("not authenticated within {limit:?} (auth-timeout); closing"),
        );
        let mut shared = shared!(self);
        if let Some(client) = self.clients.get_mut(key) {
            if client.conn.is_sniffing() {
                self.close(key);
                return;
            }
            client.conn.end_with(&error, &mut shared);
        }
        self.mark_dirty(key);
    }

    /// Closes connections whose peer is gone although no driver told: one
    /// whose input ended (or was reported closed while held) may be waiting
    /// on answers that its peer, if it closed altogether, can never read. A
    /// Unix peer that closed, or a TCP peer whose kernel answered a write
    /// with a reset, shows as POLLHUP or POLLERR.
    fn sweep_hang_ups(&mut self) {
        let gone: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                !c.lingering
                    && !c.hung_up
                    && (c.read_closed || !c.conn.wants_input() && !c.conn.is_held())
            })
            .filter(|(_, c)| c.stream.peer_gone())
            .map(|(key, _)| key)
            .collect();
        for key in gone {
            self.hung_up(key);
        }
    }

    /// Acts on the connections whose frame, idle or write timeout expired:
    /// a slow frame is answered with the protocol's error, the others close.
    fn sweep_timeouts(&mut self, now: Instant) {
        let limits = self.config.timeouts;
        let mut expired = std::mem::take(&mut self.expired);
        expired.extend(
            self.clients
                .iter()
                .filter(|(_, c)| !c.lingering)
                .filter_map(|(key, c)| {
                    c.conn
                        .timed_out(now, &limits)
                        .map(|t| (key, t, c.conn.id()))
                })
                // Providers and subscribers wait for the bus, not for their peer.
                .filter(|(_, t, id)| *t != Timeout::Idle || !self.bus.is_member(*id))
                .map(|(key, t, _)| (key, t)),
        );
        for (key, timeout) in expired.drain(..) {
            let stats = self.context.stats();
            let counter = match timeout {
                Timeout::Frame => &stats.frame_timeouts,
                Timeout::Idle => &stats.idle_timeouts,
                Timeout::Write => &stats.write_timeouts,
            };
            Stats::bump(counter);
            tracing::debug!(conn = key, ?timeout, "timeout");
            if timeout == Timeout::Frame {
                let mut shared = shared!(self);
                if let Some(client) = self.clients.get_mut(key) {
                    client.conn.frame_timed_out(limits.frame, &mut shared);
                }
                self.mark_dirty(key);
            } else {
                self.close(key);
            }
        }
        self.expired = expired;
        self.sweep_hang_ups();
        self.schedule_sweep(now);
    }
}
