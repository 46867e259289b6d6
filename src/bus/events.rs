//! Pub/sub: subscriptions, publishing, and each subscriber's bounded queue
//! of events waiting for room in its output.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};

use serde_json::value::RawValue;

use super::pattern::Pattern;
use super::{Bus, Caller, SlowSubscriber};
use crate::error::{ErrorCode, RpcError};
use crate::proto::{Protocol, jsonrpc, mcp1};
use crate::stats::Stats;
use crate::workers::ConnRef;

/// The method of the notification that carries an event.
const EVENT_METHOD: &str = "bus.event";

/// One published event, shared by every subscriber's queue and encoded at
/// most once per protocol.
#[derive(Debug)]
pub(super) struct Event {
    topic: String,
    data: Box<RawValue>,
    jsonrpc: OnceLock<Vec<u8>>,
    mcp1: OnceLock<Vec<u8>>,
}

impl Event {
    /// Bytes the event counts for against a queue's byte cap.
    fn size(&self) -> usize {
        self.topic.len() + self.data.get().len() + 64
    }

    /// Appends the event's frame in `protocol`; `dropped` events before it
    /// are reported in it.
    fn encode(&self, protocol: Protocol, dropped: u64, out: &mut Vec<u8>) {
        if dropped > 0 {
            return self.encode_fresh(protocol, dropped, out);
        }
        let cache = match protocol {
            Protocol::JsonRpc => &self.jsonrpc,
            Protocol::Mcp1 => &self.mcp1,
        };
        let frame = cache.get_or_init(|| {
            let mut frame = Vec::new();
            self.encode_fresh(protocol, 0, &mut frame);
            frame
        });
        out.extend_from_slice(frame);
    }

    fn encode_fresh(&self, protocol: Protocol, dropped: u64, out: &mut Vec<u8>) {
        let mut params = Vec::with_capacity(self.size());
        params.extend_from_slice(br#"{"topic":"#);
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut params, &self.topic);
        params.extend_from_slice(br#","data":"#);
        params.extend_from_slice(self.data.get().as_bytes());
        if dropped > 0 {
            let _ = write!(params, r#","dropped":{dropped}"#);
        }
        params.push(b'}');
        match protocol {
            Protocol::JsonRpc => {
                let text = String::from_utf8_lossy(&params);
                jsonrpc::write_request(out, None, EVENT_METHOD, Some(&text));
                out.push(b'\n');
            }
            Protocol::Mcp1 => mcp1::write_call(out, None, EVENT_METHOD, &params, false),
        }
    }
}

/// A subscriber's events not yet in its output.
#[derive(Debug, Default)]
pub(super) struct EventQueue {
    queue: VecDeque<Arc<Event>>,
    bytes: usize,
    /// Dropped since the last event it received.
    dropped: u64,
}

impl EventQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Appends events to `out` until it holds `room` bytes; returns how many.
    pub(super) fn pop_into(&mut self, protocol: Protocol, room: usize, out: &mut Vec<u8>) -> usize {
        let mut count = 0;
        while out.len() < room {
            let Some(event) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= event.size();
            event.encode(protocol, self.dropped, out);
            self.dropped = 0;
            count += 1;
        }
        count
    }

    /// Makes room for one more event of `size` bytes under the caps by
    /// dropping the oldest; returns how many were dropped.
    fn make_room(&mut self, size: usize, max_events: usize, max_bytes: usize) -> u64 {
        let mut dropped = 0;
        while !self.queue.is_empty()
            && (self.queue.len() >= max_events || self.bytes + size > max_bytes)
        {
            if let Some(old) = self.queue.pop_front() {
                self.bytes -= old.size();
                dropped += 1;
            }
        }
        self.dropped += dropped;
        dropped
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

impl Bus {
    /// Subscribes the caller to `topics` (names or patterns).
    pub(super) fn subscribe(&mut self, caller: &Caller<'_>, topics: &[Pattern]) {
        for topic in topics {
            let member = self.member(caller);
            if member.topics.contains(topic) {
                continue;
            }
            member.topics.push(topic.clone());
            self.topics.entry(topic, Vec::new).push(caller.id);
        }
    }

    /// Unsubscribes the caller from those of `topics` it has; returns them.
    pub(super) fn unsubscribe(&mut self, id: ConnRef, topics: &[Pattern]) -> Vec<Pattern> {
        let mut removed = Vec::new();
        if let Some(member) = self.members.get_mut(&id) {
            for topic in topics {
                if let Some(at) = member.topics.iter().position(|t| t == topic) {
                    removed.push(member.topics.swap_remove(at));
                }
            }
        }
        for topic in &removed {
            self.unsubscribe_one(id, topic);
        }
        self.prune(id);
        removed
    }

    /// Takes `id` off one topic's subscriber list.
    pub(super) fn unsubscribe_one(&mut self, id: ConnRef, topic: &Pattern) {
        let Some(subscribers) = self.topics.get_mut(topic) else {
            return;
        };
        subscribers.retain(|s| *s != id);
        if subscribers.is_empty() {
            self.topics.remove(topic);
        }
    }

    /// Queues an event for every subscriber of `topic`; returns how many.
    pub(super) fn publish(&mut self, topic: &str, data: Box<RawValue>) -> usize {
        let mut subscribers: Vec<ConnRef> =
            self.topics.matching(topic).flatten().copied().collect();
        subscribers.sort_unstable_by_key(|s| (s.token, s.generation));
        subscribers.dedup();
        Stats::bump(&self.stats.bus.events_published);
        let event = Arc::new(Event {
            topic: topic.into(),
            data,
            jsonrpc: OnceLock::new(),
            mcp1: OnceLock::new(),
        });
        let mut reached = 0;
        for id in subscribers {
            if self.enqueue(id, &event) {
                reached += 1;
            }
        }
        reached
    }

    /// Puts an event in one subscriber's queue, applying the slow-subscriber
    /// policy when the queue is full. False if the subscriber gets nothing.
    fn enqueue(&mut self, id: ConnRef, event: &Arc<Event>) -> bool {
        let (max_events, max_bytes) = (self.config.queue_events, self.config.queue_bytes);
        let policy = self.config.slow_subscriber;
        let Some(member) = self.members.get_mut(&id) else {
            return false;
        };
        if member.evicted || !member.may_receive(&event.topic) {
            return false;
        }
        let size = event.size();
        // An event bigger than the byte cap still goes to an empty queue.
        let full = !member.events.is_empty()
            && (member.events.queue.len() >= max_events || member.events.bytes + size > max_bytes);
        if full && policy == SlowSubscriber::Disconnect {
            member.evicted = true;
            let was_queued = !member.events.is_empty();
            member.events.clear();
            let protocol = member.protocol;
            if was_queued {
                self.backlogged -= 1;
            }
            self.evict(id, protocol, max_events);
            return false;
        }
        let dropped = if full {
            member.events.make_room(size, max_events, max_bytes)
        } else {
            0
        };
        let was_empty = member.events.is_empty();
        member.events.queue.push_back(Arc::clone(event));
        member.events.bytes += size;
        Stats::add(&self.stats.bus.events_dropped, dropped);
        if was_empty {
            self.backlogged += 1;
            self.ready.push(id);
        }
        true
    }

    /// Tells a subscriber it is too slow and has the loop close it.
    fn evict(&mut self, id: ConnRef, protocol: Protocol, max_events: usize) {
        Stats::bump(&self.stats.bus.slow_disconnects);
        tracing::info!(conn = id.token, "bus: slow subscriber disconnected");
        let error = RpcError::with(
            ErrorCode::SlowSubscriber,
            format_args!("more than {max_events} events queued; closing"),
        );
        self.push_frame(id, true, |frame| match protocol {
            Protocol::JsonRpc => {
                jsonrpc::write_error(frame, None, &error);
                frame.push(b'\n');
            }
            Protocol::Mcp1 => mcp1::write_error(frame, 0, &error),
        });
    }
}
