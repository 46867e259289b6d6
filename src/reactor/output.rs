//! How much the loop writes in one turn, and connections closed for
//! output they will never take.
//!
//! A turn writes about [`WRITE_BYTES_PER_TURN`] bytes at most, all
//! connections together: an event for 2,000 subscribers is 2,000 socket
//! buffers' worth of kernel copies, which would hold every other client for
//! as long. Past the budget, the connections not yet written wait for the
//! next turn, after the connections that became writable or got output
//! meanwhile. Small output (up to [`SMALL_WRITE`]) is always written at
//! once, so a ping answered between two slices of a fan-out goes out at
//! once. The first write of a turn always goes, so output always progresses.

use super::Core;

/// Bytes written per turn, all connections together, past which the
/// connections left wait for the next turn.
pub const WRITE_BYTES_PER_TURN: usize = 8 << 20;

/// What one write is counted for against the budget: the bytes offered, up
/// to about what a socket buffer takes (a completion driver posts writes
/// before it knows how much each took).
pub const WRITE_ESTIMATE: usize = 256 << 10;

/// Pending output this small is always written at once: its copy costs
/// little, and it is what keeps a request's latency low while bulk output
/// (a fan-out, a large answer) waits its turn.
pub const SMALL_WRITE: usize = 16 << 10;

impl Core {
    /// True when connection `key`, with `pending` bytes to write, may
    /// write now: always for small output (answers to requests go out at
    /// once whatever bulk output waits), else while this turn's budget
    /// lasts (past it, it is written next turn).
    pub(super) fn may_write(&mut self, key: usize, pending: usize) -> bool {
        if pending <= SMALL_WRITE || self.written < WRITE_BYTES_PER_TURN {
            return true;
        }
        self.deferred.push(key);
        false
    }

    /// Puts the connections left over from the last turn's budget after
    /// the fresh ones in `dirty` (sorted), each once.
    pub(super) fn append_deferred(&mut self, dirty: &mut Vec<usize>) {
        if self.deferred.is_empty() {
            return;
        }
        self.deferred.sort_unstable();
        self.deferred.dedup();
        let fresh = dirty.len();
        for key in self.deferred.drain(..) {
            if dirty[..fresh].binary_search(&key).is_err() {
                dirty.push(key);
            }
        }
    }

    /// Closes the connections among `keys` whose pending output passed
    /// max-output-hard (each logged and counted when it passed it).
    pub(super) fn close_overflowed(&mut self, keys: &[usize]) {
        for &key in keys {
            if self
                .clients
                .get(key)
                .is_some_and(|c| c.conn.is_overflowed())
            {
                self.close(key);
            }
        }
    }
}
