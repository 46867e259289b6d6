//! Memory that comes back: after a burst, everything sized by the peak
//! number of connections shrinks again once they are gone.
//!
//! Ring storage returns its pages by itself (see `buffer::RingPool`). What
//! is left is heap memory: the connection slab, the timer heap, the turn's
//! lists, free output chunks, and what glibc keeps resident after frees.
//! The loop's sweep calls [`Core::shrink_when_quiet`]; at most once per
//! [`SHRINK_EVERY`] it trims what a burst left behind and, when that freed
//! a lot, asks glibc to give free heap pages back (`malloc_trim`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::Core;

/// How often the loop looks for memory to give back.
pub const SHRINK_EVERY: Duration = Duration::from_secs(1);

/// Free output chunks kept past a second in which they were not needed
/// (64 KiB): the chunks a steady load takes and returns are never spare.
const CHUNKS_KEPT: usize = 4;

/// Free ring blocks kept resident, per size class, once a whole
/// [`SHRINK_EVERY`] went by without a read needing one (one 16 KiB ring).
const RINGS_KEPT_QUIET: usize = 16 << 10;

/// Below this many slots (or entries) nothing is worth shrinking.
const SMALL: usize = 256;

/// When the loop last shrank, and the connections open then.
#[derive(Debug)]
pub(super) struct Shrinker {
    at: Instant,
    peak_clients: usize,
    /// A burst was seen (connections or output past their steady level)
    /// and the driver's arenas have not been renewed since.
    burst_seen: bool,
    /// A burst has passed and a whole period went by without a read: the
    /// driver may give back its own per-turn arenas (see
    /// [`Core::take_quiet_after_burst`]).
    quiet_after_burst: bool,
}

impl Default for Shrinker {
    fn default() -> Self {
        Self {
            at: Instant::now(),
            peak_clients: 0,
            burst_seen: false,
            quiet_after_burst: false,
        }
    }
}

/// Shrinks a list that is mostly empty after having been large.
pub(super) fn shrink_vec<T>(list: &mut Vec<T>) {
    if list.capacity() > SMALL && list.len() < list.capacity() / 4 {
        list.shrink_to(list.len().max(SMALL / 4));
    }
}

impl Core {
    /// Called from the sweep: gives back what the last burst left once it
    /// has passed.
    pub(super) fn shrink_when_quiet(&mut self, now: Instant) {
        let open = self.clients.len();
        self.shrinker.peak_clients = self.shrinker.peak_clients.max(open);
        if now.duration_since(self.shrinker.at) < SHRINK_EVERY {
            return;
        }
        self.shrinker.at = now;
        // A second without a read needing a ring: the warm pool shrinks to
        // its quiet size (no allocation: see RingPool::cool).
        let quiet = self.rings.cool(RINGS_KEPT_QUIET).is_some();
        let stats = self.context.stats();
        stats
            .ring_pool_bytes
            .store(self.rings.pooled_bytes() as u64, Relaxed);
        stats
            .ring_resident_bytes
            .store(self.rings.resident_bytes() as u64, Relaxed);
        let (chunks_freed, chunks_passed) = self.chunks.trim(CHUNKS_KEPT);
        let clients_passed = self.shrinker.peak_clients.saturating_sub(open);
        self.shrinker.peak_clients = open;
        let slots = self.clients.capacity();
        if slots > SMALL && open < slots / 4 {
            // Keys stay valid: only vacant slots at the end go.
            self.clients.shrink_to_fit();
        }
        if self.timers.capacity() > SMALL && self.timers.len() < self.timers.capacity() / 4 {
            self.timers.shrink_to(self.timers.len().max(SMALL / 4));
        }
        shrink_vec(&mut self.dirty);
        shrink_vec(&mut self.unread);
        shrink_vec(&mut self.closed);
        shrink_vec(&mut self.expired);
        shrink_vec(&mut self.starved);
        shrink_vec(&mut self.deferred);
        shrink_vec(&mut self.due);
        if self.scratch.capacity() > 1 << 20 && self.scratch.is_empty() {
            self.scratch = Vec::new();
        }
        // About a megabyte freed to the allocator (by a burst, or by the
        // trim of the chunk pool just now): worth giving back.
        if chunks_passed >= 64 || chunks_freed >= CHUNKS_KEPT || clients_passed >= SMALL {
            self.shrinker.burst_seen = true;
            give_back_freed_heap();
        }
        // The driver's arenas are renewed (a fresh allocation) only once
        // the loop is quiet: under a steady load whose pools are still
        // settling, that would be an allocation on the request path.
        if quiet && std::mem::take(&mut self.shrinker.burst_seen) {
            self.shrinker.quiet_after_burst = true;
        }
    }

    /// True once after the sweep saw a burst pass: the driver then gives
    /// back the arenas it sizes for a busy turn (io_uring's iovec and
    /// completion lists), whose pages the burst made resident.
    pub(super) fn take_quiet_after_burst(&mut self) -> bool {
        std::mem::take(&mut self.shrinker.quiet_after_burst)
    }
}

/// Returns free heap pages to the kernel: glibc keeps freed memory resident
/// (in the middle of the heap, and in every thread's arena) until asked.
fn give_back_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only releases free heap
    // pages; glibc makes it safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
