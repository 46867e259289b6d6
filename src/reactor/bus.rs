//! The loop's side of the service bus: delivering what the bus produced
//! to the connections it is for, feeding subscribers their queued events,
//! and expiring routed calls.

use std::time::Instant;

use super::{Core, shared};
use crate::bus::{Delivery, EVENT_ROOM};
use crate::conn::RoutedAnswer;

impl Core {
    /// Delivers forwarded calls, answers, cancels and events. Frames for a
    /// connection that has closed meanwhile are dropped.
    pub(super) fn deliver_bus(&mut self) {
        if !self.bus.has_work() {
            return;
        }
        let (mut outbox, arena) = self.bus.take_outbox();
        for delivery in outbox.drain(..) {
            let (to, frame) = match &delivery {
                Delivery::Frame { to, frame }
                | Delivery::Evict { to, frame }
                | Delivery::Answer { to, frame, .. } => (*to, &arena[frame.clone()]),
            };
            let Some(client) = self.clients.get_mut(to.token) else {
                if to == crate::federation::CLUSTER {
                    // The answer to a call served for another daemon.
                    self.bus.reply_remote(frame);
                }
                continue;
            };
            if client.conn.id() != to {
                continue; // It closed meanwhile.
            }
            let mut shared = shared!(self);
            match delivery {
                Delivery::Frame { .. } => client.conn.push_bytes(frame, &mut shared),
                Delivery::Evict { .. } => client.conn.evict(frame, &mut shared),
                Delivery::Answer {
                    protocol,
                    batch,
                    is_error,
                    ref timing,
                    ..
                } => {
                    let answer = RoutedAnswer {
                        protocol,
                        batch,
                        is_error,
                        frame,
                        timing: timing.as_ref(),
                    };
                    let freed = client
                        .conn
                        .complete_routed(answer, &mut shared, &mut self.scratch);
                    if freed == Some(true) {
                        self.unread.push(to.token);
                    }
                }
            }
            self.dirty.push(to.token);
        }
        self.bus.return_outbox(outbox, arena);
        self.feed_subscribers();
    }

    /// Moves queued events into the output of subscribers that have room,
    /// until it holds [`EVENT_ROOM`] bytes. An event is a reference to
    /// bytes its subscribers share: moving one copies nothing (but the first
    /// event after drops, which says how many in a frame of its own).
    fn feed_subscribers(&mut self) {
        let mut ready = self.bus.take_ready();
        for id in ready.drain(..) {
            let Some(client) = self.clients.get_mut(id.token) else {
                continue;
            };
            if client.conn.id() != id {
                continue;
            }
            let mut shared = shared!(self);
            let mut fed = false;
            while client.conn.output().len() < EVENT_ROOM {
                let Some(frame) = shared.bus.pop_event(id) else {
                    break;
                };
                client.conn.push_event(frame, &mut shared);
                fed = true;
            }
            if fed {
                self.dirty.push(id.token);
            }
        }
        self.bus.return_ready(ready);
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
