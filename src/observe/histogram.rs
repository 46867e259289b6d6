//! Fixed log-scale latency histograms: one bucket per power of two of
//! microseconds, counted with relaxed atomics by one writer (the loop).
//!
//! A fixed layout means a histogram is a flat array made once, so recording
//! allocates nothing, and every histogram renders with the same bounds
//! (what a Prometheus histogram wants).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Buckets with a finite upper bound: 1 µs, 2 µs, 4 µs, ... 2^23 µs (~8.4 s).
pub const BUCKETS: usize = 24;

/// The upper bound of each finite bucket, in microseconds (inclusive, as
/// Prometheus's `le`).
pub const BUCKETS_US: [u64; BUCKETS] = {
    let mut bounds = [0u64; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        bounds[i] = 1 << i;
        i += 1;
    }
    bounds
};

/// The bucket of a duration of `us` microseconds; [`BUCKETS`] is +Inf.
pub fn bucket_of(us: u64) -> usize {
    if us <= 1 {
        return 0;
    }
    // The smallest i with 2^i >= us.
    let i = 64 - (us - 1).leading_zeros() as usize;
    i.min(BUCKETS)
}

/// A duration in whole microseconds, rounded up (a call never takes 0).
pub fn micros(elapsed: Duration) -> u64 {
    let nanos = elapsed.as_nanos();
    u64::try_from(nanos.div_ceil(1000)).unwrap_or(u64::MAX)
}

/// One latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket, not cumulative; the last is +Inf.
    counts: [AtomicU64; BUCKETS + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Adds one with a load and a store: there is one writer (the event loop),
/// so no read-modify-write is needed, and readers see a value at most one
/// call behind.
fn bump_by(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Histogram {
    /// Records `n` observations of `us` microseconds each (the loop only).
    pub fn record_n(&self, us: u64, n: u64) {
        bump_by(&self.counts[bucket_of(us)], n);
        bump_by(&self.sum_us, us.saturating_mul(n));
        bump_by(&self.count, n);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// A copy for `rpc.stats`.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets_us: &BUCKETS_US,
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_us: self.sum_us.load(Relaxed),
            count: self.count.load(Relaxed),
        }
    }
}

/// A histogram as `rpc.stats` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramSnapshot {
    /// The finite buckets' upper bounds in microseconds.
    pub buckets_us: &'static [u64],
    /// Observations per bucket (not cumulative), one more than
    /// `buckets_us`: the last is +Inf.
    pub counts: Vec<u64>,
    /// Sum of every observation, in microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

/// What one method did: calls, errors and their latency.
#[derive(Debug)]
pub struct MethodStats {
    name: Box<str>,
    errors: AtomicU64,
    latency: Histogram,
}

impl MethodStats {
    /// Fresh counters for `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            errors: AtomicU64::new(0),
            latency: Histogram::default(),
        }
    }

    /// The method (or bus name or pattern) counted.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records one answered call that took `elapsed`; returns it in µs.
    pub fn record(&self, elapsed: Duration, is_error: bool) -> u64 {
        self.record_n(elapsed, 1, u64::from(is_error))
    }

    /// Records `calls` answered calls that each took `elapsed`, `errors`
    /// of them errors; returns the duration in µs.
    pub fn record_n(&self, elapsed: Duration, calls: u64, errors: u64) -> u64 {
        let us = micros(elapsed);
        self.latency.record_n(us, calls);
        if errors > 0 {
            bump_by(&self.errors, errors);
        }
        us
    }

    /// Calls answered so far.
    pub fn calls(&self) -> u64 {
        self.latency.count()
    }

    /// A copy for `rpc.stats`.
    pub fn snapshot(&self) -> MethodSnapshot {
        MethodSnapshot {
            calls: self.latency.count(),
            errors: self.errors.load(Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}

/// One method under `rpc.stats`'s `methods`.
#[derive(Debug, Clone, Serialize)]
pub struct MethodSnapshot {
    /// Calls answered (requests and notifications the daemon ran).
    pub calls: u64,
    /// Of which answered with an error.
    pub errors: u64,
    /// Their latency, from the frame read to the answer queued.
    pub latency: HistogramSnapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_with_inclusive_bounds() {
        assert_eq!(BUCKETS_US[0], 1);
        assert_eq!(BUCKETS_US[10], 1024);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(4), 2);
        assert_eq!(bucket_of(5), 3);
        assert_eq!(bucket_of(1 << 23), BUCKETS - 1);
        assert_eq!(bucket_of((1 << 23) + 1), BUCKETS);
        assert_eq!(bucket_of(u64::MAX), BUCKETS);
        for us in [1u64, 7, 100, 1000, 65_537, 9_000_000] {
            let b = bucket_of(us);
            if b < BUCKETS {
                assert!(us <= BUCKETS_US[b]);
            }
            if b > 0 {
                assert!(us > BUCKETS_US[b - 1]);
            }
        }
    }

    #[test]
    fn a_snapshot_counts_per_bucket_and_sums() {
        let stats = MethodStats::new("m");
        stats.record(Duration::from_nanos(500), false);
        stats.record(Duration::from_micros(3), true);
        stats.record(Duration::from_secs(20), false);
        let s = stats.snapshot();
        assert_eq!((s.calls, s.errors), (3, 1));
        assert_eq!(s.latency.counts.len(), s.latency.buckets_us.len() + 1);
        assert_eq!(s.latency.counts[0], 1);
        assert_eq!(s.latency.counts[2], 1);
        assert_eq!(s.latency.counts[BUCKETS], 1);
        assert_eq!(s.latency.sum_us, 1 + 3 + 20_000_000);
    }
}
