//! Monitors (`rpc.monitor`): connections that receive a line for every
//! call, answer and event through the daemon, as `bus.event`
//! notifications on the topic [`MONITOR_TOPIC`].
//!
//! A monitor is a subscriber like any other as far as its queue goes: its
//! lines wait in its bounded event queue (`bus-queue-events`,
//! `bus-queue-bytes`) while its output is full; once the queue is full,
//! new lines are counted instead of made, and the next line it gets
//! carries the count (`"dropped"`). Unlike a subscriber it is never disconnected for being
//! slow (whatever `bus-slow-subscriber` says): it only loses lines. With
//! no monitor the taps cost one branch: [`Bus::monitoring`].

use std::sync::Arc;

use serde_json::value::RawValue;

use super::events::Event;
use super::pattern::Pattern;
use super::{Bus, Caller};
use crate::stats::Stats;
use crate::workers::ConnRef;

/// The topic of the `bus.event` notifications a monitor receives (a name
/// under `rpc.`: no client may publish on it).
pub const MONITOR_TOPIC: &str = "rpc.monitor";

/// One monitoring connection and the names it watches (none: all).
#[derive(Debug)]
pub(super) struct Monitor {
    id: ConnRef,
    patterns: Box<[Pattern]>,
}

impl Monitor {
    fn wants(&self, name: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(name))
    }
}

impl Bus {
    /// True while some connection monitors the traffic.
    #[inline]
    pub fn monitoring(&self) -> bool {
        !self.monitors.is_empty()
    }

    /// Makes the caller a monitor of the methods and topics that match
    /// `patterns` (all when empty); a second call replaces the patterns.
    pub fn monitor(&mut self, caller: &Caller<'_>, patterns: Vec<Pattern>) {
        self.member(caller).monitor = true;
        self.monitors.retain(|m| m.id != caller.id);
        self.monitors.push(Monitor {
            id: caller.id,
            patterns: patterns.into_boxed_slice(),
        });
        tracing::info!(conn = caller.id.token, peer = %caller.peer, "monitor attached");
    }

    /// Queues a line about `name` (a method or a topic) for every monitor
    /// that watches it; `line` is made once, and only when one does.
    pub fn tap(&mut self, name: &str, line: impl FnOnce() -> Box<RawValue>) {
        let mut line = Some(line);
        let mut event: Option<Arc<Event>> = None;
        let (max_events, max_bytes) = (self.config.queue_events, self.config.queue_bytes);
        for i in 0..self.monitors.len() {
            if !self.monitors[i].wants(name) {
                continue;
            }
            let id = self.monitors[i].id;
            // A monitor behind by a full queue loses the newest line before
            // it is made: a lagging monitor costs a count, not a line.
            if let Some(member) = self.members.get_mut(&id) {
                if member.events.is_full(max_events, max_bytes) {
                    member.events.lose();
                    Stats::bump(&self.stats.bus.events_dropped);
                    continue;
                }
            }
            let shared = match (&event, line.take()) {
                (Some(event), _) => Arc::clone(event),
                (None, Some(make)) => {
                    let made = Arc::new(Event::new(MONITOR_TOPIC, make(), &self.stats));
                    event = Some(Arc::clone(&made));
                    made
                }
                (None, None) => return,
            };
            self.enqueue(id, &shared);
        }
    }

    /// A connection that leaves stops monitoring.
    pub(super) fn forget_monitor(&mut self, id: ConnRef) {
        let before = self.monitors.len();
        self.monitors.retain(|m| m.id != id);
        if self.monitors.len() < before {
            tracing::info!(conn = id.token, "monitor detached");
        }
    }
}
