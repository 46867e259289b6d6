//! Compact connection clocks: a connection keeps its activity, frame and
//! write clocks as 4-byte millisecond stamps instead of 16-byte `Instant`s,
//! so that an idle connection's slot stays small (issue 15: bytes per idle
//! connection). The loop still reads the time as an `Instant` once per turn;
//! it is turned into a stamp only when a connection stores it.
//!
//! Stamps count milliseconds since the process's [`epoch`] and wrap every
//! 49.7 days: an elapsed time is the wrapping difference of two stamps, which
//! is right for any span shorter than that. Timeouts are far shorter, so they
//! fire as before; only the idle time shown by `rpc.clients` for a connection
//! silent for over 49.7 days (with the idle timeout off) wraps around. The
//! connection's age, shown the same way, uses a [`Since`] in whole
//! milliseconds of a `u64`, which never wraps.

use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The instant stamps count from: fixed at first use, before any
/// connection stores a stamp.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The process's clock origin for stamps.
fn epoch() -> Instant {
    *EPOCH
}

/// Milliseconds from the epoch to `now` (0 for a time before it).
fn millis(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

/// How far before a stamp a time may be and still read as "no time passed"
/// rather than as a span of almost 49.7 days.
const BACKWARD_MS: u32 = 60_000;

/// A point in time to the millisecond, modulo 2^32 ms, never zero so that
/// `Option<Stamp>` is four bytes too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp(NonZeroU32);

impl Stamp {
    /// The stamp of `now`.
    pub(crate) fn at(now: Instant) -> Self {
        // Truncation is the point: stamps wrap; 0 is taken as 1 (1 ms off).
        let low = millis(now) as u32;
        Self(NonZeroU32::new(low).unwrap_or(NonZeroU32::MIN))
    }

    /// Time from this stamp to `now` (zero if `now` is up to
    /// [`BACKWARD_MS`] earlier, as a turn's time read before the stamp was).
    pub(crate) fn elapsed(self, now: Instant) -> Duration {
        let diff = Stamp::at(now).0.get().wrapping_sub(self.0.get());
        if diff > u32::MAX - BACKWARD_MS {
            // `now` is a little before the stamp (a turn's time read before
            // the stamp was taken): no time has passed.
            return Duration::ZERO;
        }
        Duration::from_millis(u64::from(diff))
    }
}

/// A point in time to the millisecond that never wraps, for the age of a
/// connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Since(u64);

impl Since {
    /// The point `now`.
    pub(crate) fn at(now: Instant) -> Self {
        Self(millis(now))
    }

    /// Time from this point to `now` (zero if `now` is earlier).
    pub(crate) fn elapsed(self, now: Instant) -> Duration {
        Duration::from_millis(millis(now).saturating_sub(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_measure_elapsed_time_to_the_millisecond() {
        let start = epoch() + Duration::from_secs(1);
        let stamp = Stamp::at(start);
        assert_eq!(stamp.elapsed(start), Duration::ZERO);
        let later = start + Duration::from_millis(1500);
        assert_eq!(stamp.elapsed(later), Duration::from_millis(1500));
        let much_later = start + Duration::from_secs(30 * 24 * 3600);
        assert_eq!(
            stamp.elapsed(much_later),
            Duration::from_secs(30 * 24 * 3600)
        );
        // A time read just before the stamp was taken counts as no time.
        let stamp = Stamp::at(start + Duration::from_millis(10));
        assert_eq!(stamp.elapsed(start), Duration::ZERO);
    }

    #[test]
    fn since_never_wraps() {
        let start = epoch() + Duration::from_secs(1);
        let since = Since::at(start);
        let later = start + Duration::from_secs(60 * 24 * 3600);
        assert_eq!(since.elapsed(later), Duration::from_secs(60 * 24 * 3600));
        assert_eq!(since.elapsed(start), Duration::ZERO);
    }

    #[test]
    fn option_of_a_stamp_is_four_bytes() {
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 4);
    }
}
