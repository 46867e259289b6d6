//! The loop's side of the service bus: delivering what the bus produced
//! to the connections it is for, feeding subscribers their queued events,
//! and expiring routed calls.

use std::time::Instant;

use super::{Core, deliver, shared};
use crate::bus::{Delivery, EVENT_ROOM};

impl Core {
    /// Delivers forwarded calls, answers, cancels and events. Frames for a
    /// connection that has closed meanwhile are dropped.
    pub(super) fn deliver_bus(&mut self) {
        if !self.bus.has_work() {
            return;
        }
        let mut outbox = self.bus.take_outbox();
        for delivery in outbox.drain(..) {
            let mut shared = shared!(self);
            let evicting = matches!(delivery, Delivery::Evict { .. });
            match delivery {
                Delivery::Answer(done) => {
                    deliver(&mut self.clients, &mut shared, &mut self.dirty, done);
                }
                Delivery::Frame { to, frame } | Delivery::Evict { to, frame } => {
                    match self.clients.get_mut(to.token) {
                        Some(client) if client.conn.id() == to => {
                            if evicting {
                                client.conn.evict(frame, &mut shared);
                            } else {
                                client.conn.push_frame(frame, &mut shared);
                            }
                            self.dirty.push(to.token);
                        }
                        _ => shared.chunks.give(frame),
                    }
                }
            }
        }
        self.bus.return_outbox(outbox);
        self.feed_subscribers();
    }

    /// Moves queued events into the output of subscribers that have room.
    fn feed_subscribers(&mut self) {
        for id in self.bus.take_ready() {
            let Some(client) = self.clients.get_mut(id.token) else {
                continue;
            };
            if client.conn.id() != id {
                continue;
            }
            let pending = client.conn.output().len();
            if pending >= EVENT_ROOM {
                continue; // Woken again as its output drains.
            }
            self.events.clear();
            self.bus
                .pop_events(id, EVENT_ROOM - pending, &mut self.events);
            if self.events.is_empty() {
                continue;
            }
            let mut shared = shared!(self);
            client.conn.push_bytes(&self.events, &mut shared);
            self.dirty.push(id.token);
        }
    }

    /// A connection's output drained: a subscriber with queued events gets more.
    pub(super) fn output_drained(&mut self, key: usize) {
        if !self.bus.has_backlog() {
            return;
        }
        if let Some(client) = self.clients.get(key) {
            if client.conn.output().len() < EVENT_ROOM {
                self.bus.wake(client.conn.id());
            }
        }
    }

    /// Fails routed calls whose provider did not answer in time.
    pub(super) fn expire_calls(&mut self, now: Instant) {
        if self.bus.deadline_hint().is_some_and(|at| at <= now) {
            self.bus.expire(now);
            self.deliver_bus();
        }
    }
}
