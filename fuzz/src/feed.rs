//! A `RingBuffer` fed the way `conn::Connection` feeds it: grown only when
//! full (up to the size the largest frame needs), filled from the free
//! space's two slices, and optionally started near the end of its storage
//! so that the stream wraps after a few bytes.

use junction::buffer::{RING_MIN, RingBuffer, RingPool};
use junction::proto::mcp1::HEADER_LEN;

/// A ring and its pool.
#[derive(Debug)]
pub struct Feed {
    ring: RingBuffer,
    pool: RingPool,
    max_ring: usize,
    /// Where the data should wrap, applied at the first read (an emptied
    /// ring goes back to offset 0).
    wrap: usize,
}

impl Feed {
    /// A ring for frames of up to `max_frame` bytes whose data wraps after
    /// `wrap` bytes (0: no wrap before the ring's capacity).
    pub fn new(max_frame: usize, wrap: usize) -> Self {
        let mut pool = RingPool::new(4);
        let mut ring = RingBuffer::new();
        ring.reserve(RING_MIN, &mut pool);
        let max_ring = (max_frame.saturating_add(HEADER_LEN + 2))
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .max(RING_MIN);
        Feed {
            ring,
            pool,
            max_ring,
            wrap: if wrap < RING_MIN - 1 { wrap } else { 0 },
        }
    }

    /// The ring.
    pub fn ring(&self) -> &RingBuffer {
        &self.ring
    }

    /// The ring, to consume from.
    pub fn ring_mut(&mut self) -> &mut RingBuffer {
        &mut self.ring
    }

    /// One read of up to `bytes.len()` bytes; returns how many went in (0
    /// when the ring is full at its largest size).
    pub fn read(&mut self, bytes: &[u8]) -> usize {
        if self.ring.free() == 0 && self.ring.capacity() < self.max_ring {
            let doubled = self.ring.capacity() * 2;
            self.ring.reserve(doubled, &mut self.pool);
        }
        if self.wrap > 0 && !bytes.is_empty() {
            // Padding moves the start of the data; one padding byte stays in
            // until the data is behind it, else the ring would reset to 0.
            let pad = RING_MIN - self.wrap;
            self.wrap = 0;
            let written = write_space(&mut self.ring, &vec![0u8; pad]);
            assert_eq!(written, pad, "padding a fresh ring");
            self.ring.consume(pad - 1);
            let n = write_space(&mut self.ring, bytes);
            self.ring.consume(1);
            return n;
        }
        write_space(&mut self.ring, bytes)
    }
}

/// Copies as much of `bytes` as fits into the ring's free space and marks it
/// as data.
pub fn write_space(ring: &mut RingBuffer, bytes: &[u8]) -> usize {
    let n = copy_to_space(ring, bytes);
    ring.fill(n);
    n
}

/// Copies as much of `bytes` as fits into the ring's free space, as a read
/// would, without marking it as data (`Connection::received` does that).
pub fn copy_to_space(ring: &mut RingBuffer, bytes: &[u8]) -> usize {
    let (a, b) = ring.space();
    let first = bytes.len().min(a.len());
    a[..first].copy_from_slice(&bytes[..first]);
    let second = (bytes.len() - first).min(b.len());
    b[..second].copy_from_slice(&bytes[first..first + second]);
    first + second
}
