//! Pub/sub: subscriptions, publishing, and each subscriber's bounded queue
//! of events waiting for room in its output.
//!
//! An event is encoded at most once per protocol into [`SharedBytes`] that
//! every subscriber's output references: fan-out costs a pointer per
//! subscriber, not a copy. The event's data and its encodings count once
//! against `max-buffer-memory` (the `shared_bytes` gauge) while any queue
//! or output holds them, and a publish whose event does not fit gets -32000.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use serde_json::value::RawValue;

use super::pattern::Pattern;
use super::{Bus, Caller, SlowSubscriber};
use crate::error::{ErrorCode, RpcError};
use crate::proto::{Protocol, jsonrpc, mcp1};
use crate::stats::Stats;
use crate::workers::ConnRef;
use crate::write_queue::{Outgoing, SharedBytes};

/// The method of the notification that carries an event.
const EVENT_METHOD: &str = "bus.event";

/// How an event's params begin in its encoding (where a dropped count goes).
const PARAMS: &[u8] = br#"{"topic":"#;

/// One published event, shared by every subscriber's queue and encoded at
/// most once per protocol.
#[derive(Debug)]
pub(super) struct Event {
    topic: String,
    data: Box<RawValue>,
    jsonrpc: OnceLock<Arc<SharedBytes>>,
    mcp1: OnceLock<Arc<SharedBytes>>,
    /// Where its size is counted while it lives.
    stats: Arc<Stats>,
}

impl Event {
    pub(super) fn new(topic: &str, data: Box<RawValue>, stats: &Arc<Stats>) -> Self {
        let event = Self {
            topic: topic.into(),
            data,
            jsonrpc: OnceLock::new(),
            mcp1: OnceLock::new(),
            stats: Arc::clone(stats),
        };
        stats.shared_bytes.fetch_add(event.size() as u64, Relaxed);
        event
    }

    /// Bytes the event counts for against a queue's byte cap.
    fn size(&self) -> usize {
        self.topic.len() + self.data.get().len() + 64
    }

    /// The event's frame in `protocol`: the shared encoding, or, when it
    /// reports `dropped` events before it, a few bytes of its own that say
    /// so followed by the shared encoding's params (so even then the data
    /// is not copied): `{"dropped":K,` takes the place of the params' `{`.
    fn frame(&self, protocol: Protocol, dropped: u64) -> Outgoing {
        let cache = match protocol {
            Protocol::JsonRpc => &self.jsonrpc,
            Protocol::Mcp1 => &self.mcp1,
        };
        let shared = cache.get_or_init(|| {
            let mut frame = Vec::with_capacity(self.size() + 32);
            self.encode_fresh(protocol, 0, &mut frame);
            SharedBytes::new(frame, &self.stats)
        });
        let whole = Outgoing {
            head: Vec::new(),
            shared: Some((Arc::clone(shared), 0)),
        };
        if dropped == 0 {
            return whole;
        }
        let bytes = shared.bytes();
        let Some(at) = bytes.windows(PARAMS.len()).position(|w| w == PARAMS) else {
            // Not the expected shape: a frame of its own, encoded afresh.
            let mut head = Vec::with_capacity(self.size() + 32);
            self.encode_fresh(protocol, dropped, &mut head);
            return Outgoing { head, shared: None };
        };
        let mut head = Vec::with_capacity(at + 32);
        head.extend_from_slice(&bytes[..at]);
        let _ = write!(head, r#"{{"dropped":{dropped},"#);
        if protocol == Protocol::Mcp1 && at >= mcp1::HEADER_LEN {
            // The payload grew by what the head added to the params' `{`.
            let length = bytes.len() - mcp1::HEADER_LEN + head.len() - at - 1;
            let length = u32::try_from(length).unwrap_or(u32::MAX);
            head[12..16].copy_from_slice(&length.to_le_bytes());
        }
        Outgoing {
            head,
            shared: Some((Arc::clone(shared), at + 1)),
        }
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

impl Drop for Event {
    fn drop(&mut self) {
        self.stats
            .shared_bytes
            .fetch_sub(self.size() as u64, Relaxed);
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

    /// The oldest event's frame in `protocol`, taken off the queue.
    pub(super) fn pop(&mut self, protocol: Protocol) -> Option<Outgoing> {
        let event = self.queue.pop_front()?;
        self.bytes -= event.size();
        let frame = event.frame(protocol, self.dropped);
        self.dropped = 0;
        Some(frame)
    }

    /// True when one more event would pass a cap.
    pub(super) fn is_full(&self, max_events: usize, max_bytes: usize) -> bool {
        !self.queue.is_empty() && (self.queue.len() >= max_events || self.bytes >= max_bytes)
    }

    /// Counts an event that was never queued (a monitor's line, dropped
    /// before it was made); the next event received says so.
    pub(super) fn lose(&mut self) {
        self.dropped += 1;
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
    /// Subscribes the caller to `topics` (names or patterns), all or
    /// nothing: past `bus-max-subscriptions` none is taken (-32025).
    pub(super) fn subscribe(
        &mut self,
        caller: &Caller<'_>,
        topics: &[Pattern],
    ) -> Result<(), RpcError> {
        let max = self.config.max_subscriptions;
        let member = self.member(caller);
        let fresh = topics
            .iter()
            .filter(|t| !member.topics.contains(*t))
            .count();
        if member.topics.len() + fresh > max {
            let held = member.topics.len();
            Stats::bump(&self.stats.bus.limit_refused);
            self.prune(caller.id);
            return Err(RpcError::with(
                ErrorCode::LimitReached,
                format_args!(
                    "a connection may subscribe to at most {max} topics (bus-max-subscriptions); it has {held}, and this call adds {fresh}"
                ),
            )
            .data(serde_json::json!({"limit": "bus-max-subscriptions", "max": max, "held": held})));
        }
        for topic in topics {
            let member = self.member(caller);
            if !member.topics.insert(topic.clone()) {
                continue;
            }
            self.topics.entry(topic, Default::default).insert(caller.id);
        }
        Ok(())
    }

    /// Unsubscribes the caller from those of `topics` it has; returns them.
    pub(super) fn unsubscribe(&mut self, id: ConnRef, topics: &[Pattern]) -> Vec<Pattern> {
        let mut removed = Vec::new();
        if let Some(member) = self.members.get_mut(&id) {
            for topic in topics {
                if member.topics.remove(topic) {
                    removed.push(topic.clone());
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
        subscribers.remove(&id);
        if subscribers.is_empty() {
            self.topics.remove(topic);
        }
    }

    /// Queues an event for every subscriber of `topic`; returns how many.
    /// An event that does not fit in the buffer memory with its encodings
    /// is refused (-32000) and reaches no one.
    pub(super) fn publish(&mut self, topic: &str, data: Box<RawValue>) -> Result<usize, RpcError> {
        let mut subscribers: Vec<ConnRef> =
            self.topics.matching(topic).flatten().copied().collect();
        subscribers.sort_unstable_by_key(|s| (s.token, s.generation));
        subscribers.dedup();
        if !subscribers.is_empty() {
            self.check_budget(topic, &data)?;
        }
        Stats::bump(&self.stats.bus.events_published);
        if self.monitoring() {
            self.tap(topic, || crate::monitor::event_line(topic, &data));
        }
        let event = Arc::new(Event::new(topic, data, &self.stats));
        let mut reached = 0;
        for id in subscribers {
            if self.enqueue(id, &event) {
                reached += 1;
            }
        }
        Ok(reached)
    }

    /// Refuses an event whose data and its encodings (at most one per
    /// protocol, shared by every subscriber) would take the buffer memory
    /// past `max-buffer-memory`.
    fn check_budget(&self, topic: &str, data: &RawValue) -> Result<(), RpcError> {
        let limit = self.stats.memory_limit();
        // The data, then an encoding per protocol of about its size each.
        let needed = 3 * (topic.len() + data.get().len() + 64);
        let used = self.stats.buffer_memory();
        if limit == 0 || used.saturating_add(needed) <= limit {
            return Ok(());
        }
        Stats::bump(&self.stats.bus.publish_refused);
        tracing::debug!(
            topic,
            used,
            needed,
            limit,
            "bus: publish refused: buffer memory full"
        );
        Err(RpcError::with(
            ErrorCode::ServerBusy,
            format_args!(
                "the event ({} bytes) does not fit in the buffer memory now ({used} of {limit} bytes in use, max-buffer-memory); retry later",
                data.get().len()
            ),
        ))
    }

    /// Puts an event in one subscriber's queue, applying the slow-subscriber
    /// policy when the queue is full. False if the subscriber gets nothing.
    pub(super) fn enqueue(&mut self, id: ConnRef, event: &Arc<Event>) -> bool {
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
        if full && policy == SlowSubscriber::Disconnect && !member.monitor {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame's bytes, head then shared part.
    fn bytes(frame: &Outgoing) -> Vec<u8> {
        let mut out = frame.head.clone();
        if let Some((shared, from)) = &frame.shared {
            out.extend_from_slice(&shared.bytes()[*from..]);
        }
        out
    }

    fn params(protocol: Protocol, frame: &[u8]) -> serde_json::Value {
        match protocol {
            Protocol::JsonRpc => {
                assert_eq!(frame.last(), Some(&b'\n'));
                let line: serde_json::Value =
                    serde_json::from_slice(&frame[..frame.len() - 1]).expect("json");
                assert_eq!(line["method"], EVENT_METHOD);
                line["params"].clone()
            }
            Protocol::Mcp1 => {
                let length = u32::from_le_bytes(frame[12..16].try_into().expect("4 bytes"));
                assert_eq!(length as usize, frame.len() - mcp1::HEADER_LEN);
                let method_len = usize::from(u16::from_le_bytes([frame[16], frame[17]]));
                assert_eq!(&frame[18..18 + method_len], EVENT_METHOD.as_bytes());
                serde_json::from_slice(&frame[18 + method_len..]).expect("json body")
            }
        }
    }

    #[test]
    fn a_dropped_count_shares_the_encoding_and_the_bytes_are_counted_once() {
        let stats = Arc::new(Stats::new(1));
        let data = RawValue::from_string(r#"{"big":[1,2,3]}"#.into()).expect("raw");
        let event = Event::new("build.done", data, &stats);
        for protocol in [Protocol::JsonRpc, Protocol::Mcp1] {
            let plain = event.frame(protocol, 0);
            assert!(plain.head.is_empty(), "shared as it is");
            assert_eq!(
                params(protocol, &bytes(&plain)),
                serde_json::json!({"topic": "build.done", "data": {"big": [1, 2, 3]}})
            );
            let counted = event.frame(protocol, 7);
            let (shared, _) = counted.shared.as_ref().expect("the data is shared");
            assert!(Arc::ptr_eq(
                shared,
                &plain.shared.as_ref().expect("shared").0
            ));
            assert!(counted.head.len() < 64, "only a small head is its own");
            assert_eq!(
                params(protocol, &bytes(&counted)),
                serde_json::json!({"dropped": 7, "topic": "build.done", "data": {"big": [1, 2, 3]}})
            );
        }
        assert!(stats.shared_bytes.load(Relaxed) > 0);
        drop(event);
        assert_eq!(
            stats.shared_bytes.load(Relaxed),
            0,
            "freed with the last holder"
        );
    }
}
