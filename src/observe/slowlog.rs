//! The slow log (`rpc.slowlog`): the last calls slower than a threshold,
//! like Redis's SLOWLOG. Only a slow call takes the lock and allocates; a
//! fast one costs two relaxed loads.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::proto::Protocol;

/// The default threshold: calls that took 10 ms or more.
pub const DEFAULT_THRESHOLD: Duration = Duration::from_millis(10);
/// The default number of entries kept.
pub const DEFAULT_MAX_LEN: usize = 128;

/// One slow call.
#[derive(Debug, Clone, Serialize)]
pub struct SlowEntry {
    /// Increasing number of the entry (never reused, even after a reset).
    pub id: u64,
    /// When the call was answered, in seconds since the Unix epoch.
    pub time: f64,
    /// The method (for a routed call: the bus name or pattern that owns it).
    pub method: String,
    /// The caller's identity (`uid:1000`, `token:ci`, ...).
    pub identity: String,
    /// The caller's connection number (as `rpc.clients` shows it).
    pub conn: usize,
    /// The caller's protocol.
    pub protocol: Protocol,
    /// How long the call took, from its frame read to its answer queued.
    pub duration_us: u64,
}

/// The slow log and its settings (changed at run time by a reload).
#[derive(Debug)]
pub struct SlowLog {
    threshold_us: AtomicU64,
    max_len: AtomicUsize,
    next_id: AtomicU64,
    entries: Mutex<VecDeque<SlowEntry>>,
}

impl Default for SlowLog {
    fn default() -> Self {
        Self::new(DEFAULT_THRESHOLD, DEFAULT_MAX_LEN)
    }
}

impl SlowLog {
    /// A log of at most `max_len` calls that took `threshold` or more
    /// (`max_len` 0: off).
    pub fn new(threshold: Duration, max_len: usize) -> Self {
        let log = Self {
            threshold_us: AtomicU64::new(0),
            max_len: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            entries: Mutex::new(VecDeque::new()),
        };
        log.configure(threshold, max_len);
        log
    }

    /// Changes the threshold and the length (older entries past it go).
    pub fn configure(&self, threshold: Duration, max_len: usize) {
        let us = u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX);
        self.threshold_us.store(us, Relaxed);
        self.max_len.store(max_len, Relaxed);
        let mut entries = self.lock();
        while entries.len() > max_len {
            entries.pop_back();
        }
        if max_len == 0 {
            *entries = VecDeque::new();
        }
    }

    /// The threshold and the length in force.
    pub fn settings(&self) -> (Duration, usize) {
        (
            Duration::from_micros(self.threshold_us.load(Relaxed)),
            self.max_len.load(Relaxed),
        )
    }

    /// True when a call of `us` microseconds belongs in the log.
    #[inline]
    pub fn is_slow(&self, us: u64) -> bool {
        us >= self.threshold_us.load(Relaxed) && self.max_len.load(Relaxed) > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SlowEntry>> {
        match self.entries.lock() {
            Ok(entries) => entries,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds a slow call (newest first), dropping the oldest past the length.
    pub fn push(
        &self,
        method: &str,
        identity: String,
        conn: usize,
        protocol: Protocol,
        duration_us: u64,
    ) {
        let max_len = self.max_len.load(Relaxed);
        if max_len == 0 {
            return;
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Relaxed),
            time,
            method: method.into(),
            identity,
            conn,
            protocol,
            duration_us,
        };
        let mut entries = self.lock();
        entries.push_front(entry);
        entries.truncate(max_len);
    }

    /// The newest `count` entries (all when None), newest first.
    pub fn entries(&self, count: Option<usize>) -> Vec<SlowEntry> {
        let entries = self.lock();
        let n = count.unwrap_or(entries.len()).min(entries.len());
        entries.iter().take(n).cloned().collect()
    }

    /// Empties the log; returns how many entries it held.
    pub fn reset(&self) -> usize {
        let mut entries = self.lock();
        let n = entries.len();
        *entries = VecDeque::new();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_up_to_its_length() {
        let log = SlowLog::new(Duration::from_millis(1), 2);
        assert!(!log.is_slow(999));
        assert!(log.is_slow(1000));
        for (i, m) in ["a", "b", "c"].iter().enumerate() {
            log.push(m, "uid:0".into(), i, Protocol::JsonRpc, 1000);
        }
        let all = log.entries(None);
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].method.as_str(), all[0].id), ("c", 2));
        assert_eq!(log.entries(Some(1)).len(), 1);
        assert_eq!(log.reset(), 2);
        assert!(log.entries(None).is_empty());
        log.configure(Duration::ZERO, 0);
        assert!(!log.is_slow(5_000_000), "length 0 turns it off");
    }
}
