//! Telling the service manager how the daemon stands (`sd_notify`): `READY=1`
//! once the loop turns, `STATUS=` lines, `STOPPING=1` when the shutdown
//! begins (at the start of the `shutdown-grace` when there is one, else when
//! the drain begins), and `WATCHDOG=1` pings when `WATCHDOG_USEC` is set.
//!
//! Every message is sent from the event loop itself (the core calls
//! [`Notifier::turn`] at the start of each turn, and folds
//! [`Notifier::deadline`] into its wait): `READY=1` therefore proves that
//! the listeners are watched, and a ping proves that the loop still turns;
//! a stuck loop stops pinging and the service manager restarts it. The
//! protocol itself is the `sd-notify` crate's.

use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::net::Transport;
use crate::stats::Stats;

/// How often `STATUS=` is refreshed at most, when nothing else is sent.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The loop's link to the service manager; inert when `NOTIFY_SOCKET` is unset.
#[derive(Debug, Default)]
pub struct Notifier {
    /// `NOTIFY_SOCKET` was set when the server was bound.
    enabled: bool,
    /// Half the watchdog period (systemd's advice), when the watchdog is on.
    ping_every: Option<Duration>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ready: bool,
    stopping: bool,
    /// When the shutdown grace ends, while it runs (the status counts down).
    grace_until: Option<Instant>,
    next_ping: Option<Instant>,
    next_status: Option<Instant>,
    last_status: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (with `WATCHDOG_PID`, when
    /// set, naming this process).
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let ping_every = sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2);
        if enabled {
            tracing::debug!(watchdog = ?ping_every, "notifying the service manager");
        }
        Self {
            enabled,
            ping_every: ping_every.filter(|_| enabled),
            state: Mutex::default(),
        }
    }

    /// True when there is a service manager to tell.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Called by the loop at the start of each turn: sends `READY=1` the
    /// first time, `STOPPING=1` once `draining`, pings when due, and the
    /// status now and then. One branch when disabled.
    pub fn turn(&self, now: Instant, draining: bool, stats: &Stats) {
        if !self.enabled {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let mut messages: Vec<NotifyState<'_>> = Vec::new();
        if !state.ready {
            state.ready = true;
            messages.push(NotifyState::Ready);
            tracing::info!("told the service manager READY=1");
        }
        if draining && !state.stopping {
            state.stopping = true;
            messages.push(NotifyState::Stopping);
        }
        if let Some(every) = self.ping_every {
            if state.next_ping.is_none_or(|at| now >= at) {
                messages.push(NotifyState::Watchdog);
                state.next_ping = Some(now + every);
            }
        }
        let status_due = state.next_status.is_none_or(|at| now >= at);
        if messages.is_empty() && !status_due {
            return;
        }
        let status = status_line(stats, draining, state.grace_left(now));
        if !messages.is_empty() || status != state.last_status {
            messages.push(NotifyState::Status(&status));
            state.next_status = Some(now + STATUS_EVERY);
        }
        if messages.is_empty() {
            state.next_status = Some(now + STATUS_EVERY);
            return;
        }
        if let Err(e) = sd_notify::notify(&messages) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
        state.last_status.clone_from(&status);
    }

    /// Sends `STOPPING=1` (once) as the drain begins, or the drain's
    /// status when `STOPPING=1` went out at the start of a grace.
    pub fn stopping(&self, stats: &Stats) {
        if !self.enabled {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let status = status_line(stats, true, None);
        let result = if !state.stopping {
            state.stopping = true;
            sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status(&status)])
        } else if state.grace_until.take().is_some() {
            sd_notify::notify(&[NotifyState::Status(&status)])
        } else {
            return;
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
        state.last_status = status;
    }

    /// Sends `STOPPING=1` as the shutdown grace begins, with a status that
    /// says the daemon still serves for `grace` and then drains.
    pub fn stopping_after(&self, stats: &Stats, grace: Duration) {
        if !self.enabled {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        state.stopping = true;
        state.grace_until = Some(now + grace);
        let status = status_line(stats, true, Some(grace));
        let messages = [NotifyState::Stopping, NotifyState::Status(&status)];
        if let Err(e) = sd_notify::notify(&messages) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
        state.last_status = status;
        state.next_status = Some(now + STATUS_EVERY);
    }

    /// Sends a one-off status line (e.g. the outcome of a reload).
    pub fn status(&self, text: &str) {
        if self.enabled {
            if let Err(e) = sd_notify::notify(&[NotifyState::Status(text)]) {
                tracing::warn!(error = %e, "cannot notify the service manager");
            }
        }
    }

    /// When the loop must turn next for the service manager: at once until
    /// `READY=1` is sent, then at the next ping (or the next status refresh).
    pub fn deadline(&self) -> Option<Instant> {
        if !self.enabled {
            return None;
        }
        let state = self.state.lock().ok()?;
        if !state.ready {
            return Some(Instant::now());
        }
        state.next_ping
    }
}

impl State {
    /// The shutdown grace left at `now`, while it runs.
    fn grace_left(&self, now: Instant) -> Option<Duration> {
        self.grace_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

/// The `STATUS=` text: what `systemctl status` shows. `grace`: the
/// shutdown grace left, while it runs.
fn status_line(stats: &Stats, draining: bool, grace: Option<Duration>) -> String {
    let (mut open, mut served) = (0, 0);
    for transport in [Transport::Unix, Transport::Tcp] {
        open += stats.transport(transport).current.load(Relaxed);
        served += stats.transport(transport).total.load(Relaxed);
    }
    if let Some(left) = grace {
        // Rounded up: "0s left" would read as already draining.
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        format!(
            "Stopping: still serving for {secs}s (shutdown grace; /healthz answers 503), \
             {open} connections open, {served} served"
        )
    } else if draining {
        format!("Draining: {open} connections open, {served} served")
    } else {
        format!("Serving: {open} connections open, {served} served")
    }
}
