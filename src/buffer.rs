//! The per-connection ring buffer and the pool its storage comes from.
//!
//! A connection owns storage only while it has unparsed bytes: an idle
//! connection holds an empty `RingBuffer` (no heap memory), takes a block from
//! the [`RingPool`] when data arrives, and gives it back once every byte has
//! been parsed. Frames are read straight out of the ring, including frames that
//! wrap around its end (see [`RingBuffer::frame`]).

use std::io::IoSliceMut;

mod pool;
pub use pool::{Block, RING_WARM_BYTES, RingPool};

/// Capacity a connection's ring starts with when data first arrives.
pub const RING_MIN: usize = 16 * 1024;

/// The largest ring: max-frame is at most 1 GiB, so a ring for the largest
/// frame and its framing is at most 2 GiB, and offsets fit in a `u32`.
pub const RING_MAX: usize = 1 << 31;

/// A power-of-two ring of bytes: `len` bytes of data starting at `head`.
/// Offsets are `u32` (rings are at most [`RING_MAX`]): every connection
/// holds a ring, and this keeps it at 24 bytes.
#[derive(Debug, Default)]
pub struct RingBuffer {
    storage: Block,
    head: u32,
    len: u32,
}

impl RingBuffer {
    /// An empty ring without storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes of data waiting to be parsed.
    pub fn len(&self) -> usize {
        self.used()
    }

    /// Bytes of data, as a `usize`.
    fn used(&self) -> usize {
        self.len as usize
    }

    /// Offset of the oldest byte of data in the storage.
    fn start(&self) -> usize {
        self.head as usize
    }

    /// True when no data is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total capacity in bytes (0 while the ring holds no storage).
    pub fn capacity(&self) -> usize {
        self.storage.len()
    }

    /// Bytes that can still be read into the ring without growing it.
    pub fn free(&self) -> usize {
        self.capacity() - self.used()
    }

    fn mask(&self) -> usize {
        self.capacity().wrapping_sub(1)
    }

    /// The data as up to two slices, oldest first.
    pub fn data(&self) -> (&[u8], &[u8]) {
        if self.len == 0 {
            return (&[], &[]);
        }
        let end = self.start() + self.used();
        if end <= self.capacity() {
            (&self.storage[self.start()..end], &[])
        } else {
            let wrapped = end - self.capacity();
            (&self.storage[self.start()..], &self.storage[..wrapped])
        }
    }

    /// The free space as up to two slices, in the order data is appended.
    pub fn space(&mut self) -> (&mut [u8], &mut [u8]) {
        let cap = self.capacity();
        if cap == 0 {
            return (&mut [], &mut []);
        }
        let head = self.start();
        let tail = (head + self.used()) & self.mask();
        if self.used() == cap {
            (&mut [], &mut [])
        } else if tail >= head {
            // Free space runs from tail to the end, then from 0 to head.
            let (front, back) = self.storage.split_at_mut(tail);
            (back, &mut front[..head])
        } else {
            (&mut self.storage[tail..head], &mut [])
        }
    }

    /// The free space as `IoSliceMut`s for `readv`; returns how many are used.
    pub fn space_iovecs<'a>(&'a mut self, iov: &mut [IoSliceMut<'a>; 2]) -> usize {
        let (a, b) = self.space();
        let used = usize::from(!a.is_empty()) + usize::from(!b.is_empty());
        iov[0] = IoSliceMut::new(a);
        iov[1] = IoSliceMut::new(b);
        used
    }

    /// Marks `n` bytes of the free space (filled by a read) as data.
    pub fn fill(&mut self, n: usize) {
        debug_assert!(n <= self.free(), "fill past the free space");
        self.len += n.min(self.free()) as u32;
    }

    /// Drops the oldest `n` bytes of data.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.used(), "consume past the data");
        let n = n.min(self.used());
        self.len -= n as u32;
        self.head = if self.len == 0 {
            0
        } else {
            ((self.start() + n) & self.mask()) as u32
        };
    }

    /// The byte at `offset` from the start of the data.
    pub fn byte(&self, offset: usize) -> Option<u8> {
        (offset < self.used()).then(|| self.storage[(self.start() + offset) & self.mask()])
    }

    /// Offset of the first `needle` at or after `from`, searching both halves.
    ///
    /// A pipelined request line is short: when the 64 bytes from `from` are
    /// contiguous in the ring, they are searched inline in one block; only a
    /// longer line, the end of the data or a wrap takes [`Self::find_slow`].
    #[inline]
    pub fn find(&self, needle: u8, from: usize) -> Option<usize> {
        if let Some(block) = self.contiguous(from, 64) {
            if let Some(i) = find_in_64(needle, block) {
                return Some(from + i);
            }
        }
        self.find_slow(needle, from)
    }

    /// [`Self::find`] over both halves of the data, whatever their lengths.
    #[inline(never)]
    fn find_slow(&self, needle: u8, from: usize) -> Option<usize> {
        let (a, b) = self.data();
        if from < a.len() {
            if let Some(i) = find_byte(needle, &a[from..]) {
                return Some(from + i);
            }
        }
        let start_b = from.saturating_sub(a.len());
        if start_b < b.len() {
            find_byte(needle, &b[start_b..]).map(|i| a.len() + start_b + i)
        } else {
            None
        }
    }

    /// The data's bytes `[offset, offset + len)` when they are data and
    /// do not wrap around the end of the storage.
    #[inline(always)]
    fn contiguous(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.used() {
            return None;
        }
        self.storage.get(self.start() + offset..self.start() + end)
    }

    /// The bytes `[offset, offset + len)` of the data as one slice: borrowed
    /// from the ring when contiguous, copied into `scratch` when they wrap.
    #[inline]
    pub fn frame<'a>(&'a self, offset: usize, len: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        debug_assert!(offset + len <= self.used(), "frame past the data");
        match self.contiguous(offset, len) {
            Some(bytes) => bytes,
            None => self.frame_slow(offset, len, scratch),
        }
    }

    /// [`Self::frame`] for bytes that wrap (or run past the data: cut short).
    #[inline(never)]
    fn frame_slow<'a>(&'a self, offset: usize, len: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let (a, b) = self.data();
        let end = (offset + len).min(self.used());
        if end <= a.len() {
            &a[offset.min(end)..end]
        } else if offset >= a.len() {
            &b[(offset - a.len()).min(end - a.len())..end - a.len()]
        } else {
            scratch.clear();
            scratch.extend_from_slice(&a[offset..]);
            scratch.extend_from_slice(&b[..end - a.len()]);
            scratch
        }
    }

    /// Copies the first `out.len()` bytes of data into `out`; false if fewer are there.
    ///
    /// Callers peek at a header (16 bytes for MCP1): when that many bytes
    /// are contiguous, they are copied with fixed-size moves, not a `memcpy`
    /// call per half sized at run time.
    #[inline]
    pub fn peek(&self, out: &mut [u8]) -> bool {
        if out.len() <= 16 {
            if let Some(bytes) = self.contiguous(0, out.len()) {
                copy_small(out, bytes);
                return true;
            }
        }
        self.peek_slow(out)
    }

    /// [`Self::peek`] across the wrap, or of more than 16 bytes.
    #[inline(never)]
    fn peek_slow(&self, out: &mut [u8]) -> bool {
        if out.len() > self.used() {
            return false;
        }
        let (a, b) = self.data();
        let want = out.len();
        let from_a = want.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..].copy_from_slice(&b[..want - from_a]);
        true
    }

    /// True when the ring holds storage it could give back to the pool.
    pub fn has_storage(&self) -> bool {
        !self.storage.is_empty()
    }

    /// Ensures storage of at least `min` bytes (a power of two), moving the
    /// data to the start of the new block. Old storage goes back to `pool`.
    pub fn reserve(&mut self, min: usize, pool: &mut RingPool) {
        if self.capacity() >= min {
            return;
        }
        debug_assert!(min <= RING_MAX, "a ring past RING_MAX");
        let mut block = pool.take(min.max(RING_MIN));
        let (a, b) = self.data();
        block[..a.len()].copy_from_slice(a);
        block[a.len()..a.len() + b.len()].copy_from_slice(b);
        let old = std::mem::replace(&mut self.storage, block);
        self.head = 0;
        pool.give(old);
    }

    /// Gives the storage back to `pool` if no data is waiting.
    pub fn release_if_empty(&mut self, pool: &mut RingPool) {
        if self.len == 0 {
            self.release(pool);
        }
    }

    /// Drops any waiting data and gives the storage back to `pool` (the
    /// connection is gone; a partial frame must not keep its block).
    pub fn release(&mut self, pool: &mut RingPool) {
        self.len = 0;
        self.head = 0;
        if self.has_storage() {
            pool.give(std::mem::take(&mut self.storage));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(ring: &mut RingBuffer, bytes: &[u8]) {
        let (a, b) = ring.space();
        let first = bytes.len().min(a.len());
        a[..first].copy_from_slice(&bytes[..first]);
        b[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        ring.fill(bytes.len());
    }

    /// Moves the (empty) ring's head to `offset`, so that data pushed next
    /// wraps; an emptied ring resets its head to 0, so one byte stays until
    /// the caller's data is in.
    fn start_at(ring: &mut RingBuffer, offset: usize, data: &[u8]) {
        push(ring, &vec![0; offset]);
        ring.consume(offset - 1);
        push(ring, data);
        ring.consume(1);
    }

    fn contents(ring: &RingBuffer) -> Vec<u8> {
        let (a, b) = ring.data();
        [a, b].concat()
    }

    #[test]
    fn an_idle_ring_holds_no_storage() {
        let mut pool = RingPool::new(4 * RING_MIN);
        let mut ring = RingBuffer::new();
        assert_eq!(ring.capacity(), 0);
        ring.reserve(1, &mut pool);
        assert_eq!(ring.capacity(), RING_MIN);
        push(&mut ring, b"abc");
        ring.release_if_empty(&mut pool);
        assert!(ring.has_storage(), "data still waiting, storage kept");
        ring.consume(3);
        ring.release_if_empty(&mut pool);
        assert_eq!(ring.capacity(), 0);
        assert_eq!(pool.pooled_bytes(), RING_MIN);
    }

    #[test]
    fn frames_that_wrap_are_copied_and_others_borrowed() {
        let mut pool = RingPool::new(4 * RING_MIN);
        let mut ring = RingBuffer::new();
        ring.reserve(RING_MIN, &mut pool);
        start_at(&mut ring, RING_MIN - 4, b"hello\nworld\n");
        let mut scratch = Vec::new();
        let nl = ring.find(b'\n', 0).expect("newline");
        assert_eq!(nl, 5);
        assert_eq!(ring.frame(0, nl, &mut scratch), b"hello");
        assert_eq!(scratch, b"hello", "wrapped frame copied to scratch");
        ring.consume(nl + 1);
        scratch.clear();
        assert_eq!(ring.find(b'\n', 0), Some(5));
        assert_eq!(ring.frame(0, 5, &mut scratch), b"world");
        assert!(scratch.is_empty(), "contiguous frame borrowed");
    }

    #[test]
    fn find_and_frame_agree_with_the_contents_wherever_the_data_sits() {
        let mut pool = RingPool::new(4 * RING_MIN);
        let mut scratch = Vec::new();
        // Lines of several lengths, around the 64-byte inline block, placed
        // so that they sit before, across and after the end of the storage.
        for line in [0, 1, 15, 16, 47, 63, 64, 65, 130] {
            let mut data = vec![b'x'; line];
            data.push(b'\n');
            data.extend_from_slice(&[b'y'; 70]);
            data.push(b'\n');
            for back in [1, 2, 17, 40, 64, 65, 100, 300] {
                let mut ring = RingBuffer::new();
                ring.reserve(RING_MIN, &mut pool);
                start_at(&mut ring, RING_MIN - back, &data);
                let all = contents(&ring);
                for from in [0, 1, line, line + 1, line + 2, all.len() - 1, all.len()] {
                    let expected = all
                        .iter()
                        .skip(from)
                        .position(|&c| c == b'\n')
                        .map(|i| from + i);
                    assert_eq!(ring.find(b'\n', from), expected, "line {line} back {back} from {from}");
                }
                for (offset, len) in [(0, line), (line + 1, 70), (0, all.len()), (3.min(line), 61)] {
                    scratch.clear();
                    let bytes = ring.frame(offset, len, &mut scratch);
                    assert_eq!(bytes, &all[offset..offset + len], "line {line} back {back}");
                }
                ring.release(&mut pool);
            }
        }
    }

    #[test]
    fn peek_copies_every_length_wherever_the_data_sits() {
        let mut pool = RingPool::new(4 * RING_MIN);
        let data: Vec<u8> = (1..=40u8).collect();
        for back in [1, 3, 8, 15, 16, 17, 39, 40, 100] {
            let mut ring = RingBuffer::new();
            ring.reserve(RING_MIN, &mut pool);
            start_at(&mut ring, RING_MIN - back, &data);
            for want in 0..=data.len() {
                let mut out = vec![0u8; want];
                assert!(ring.peek(&mut out), "back {back} want {want}");
                assert_eq!(out, &data[..want], "back {back} want {want}");
            }
            assert!(!ring.peek(&mut [0u8; 41]), "more than the data");
            ring.release(&mut pool);
        }
        assert!(!RingBuffer::new().peek(&mut [0u8; 1]));
        assert!(RingBuffer::new().peek(&mut []));
    }

    #[test]
    fn growing_keeps_wrapped_data_in_order() {
        let mut pool = RingPool::new(4 * RING_MIN);
        let mut ring = RingBuffer::new();
        ring.reserve(RING_MIN, &mut pool);
        let data: Vec<u8> = (0..100u8).collect();
        start_at(&mut ring, RING_MIN - 10, &data);
        assert_ne!(ring.data().1.len(), 0, "data wraps");
        ring.reserve(RING_MIN * 2, &mut pool);
        assert_eq!(ring.capacity(), RING_MIN * 2);
        assert_eq!(contents(&ring), data);
        assert_eq!(ring.data().1.len(), 0, "data contiguous after growth");
    }

    #[test]
    fn space_and_data_always_partition_the_ring() {
        // Deterministic pseudo-random fill/consume walk against a Vec model.
        let mut pool = RingPool::new(4 * RING_MIN);
        let mut ring = RingBuffer::new();
        ring.reserve(RING_MIN, &mut pool);
        let mut model: std::collections::VecDeque<u8> = Default::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..20_000u32 {
            let (a, b) = ring.space();
            assert_eq!(a.len() + b.len(), RING_MIN - model.len());
            let n = (next() as usize) % (a.len() + b.len() + 1);
            let bytes: Vec<u8> = (0..n).map(|i| (step as usize + i) as u8).collect();
            push(&mut ring, &bytes);
            model.extend(&bytes);
            let take = (next() as usize) % (model.len() + 1);
            if let Some(nl) = ring.find(bytes.first().copied().unwrap_or(0), 0) {
                let expected = model
                    .iter()
                    .position(|&c| c == bytes.first().copied().unwrap_or(0));
                assert_eq!(Some(nl), expected);
            }
            ring.consume(take);
            model.drain(..take);
            assert_eq!(contents(&ring), model.iter().copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn peek_and_byte_see_across_the_wrap() {
        let mut pool = RingPool::new(4 * RING_MIN);
        let mut ring = RingBuffer::new();
        ring.reserve(RING_MIN, &mut pool);
        start_at(&mut ring, RING_MIN - 2, b"MCP1");
        let mut magic = [0u8; 4];
        assert!(ring.peek(&mut magic));
        assert_eq!(&magic, b"MCP1");
        assert_eq!(ring.byte(3), Some(b'1'));
        assert_eq!(ring.byte(4), None);
        assert!(!ring.peek(&mut [0u8; 5]));
    }

    #[test]
    fn a_closed_connection_gives_back_a_partial_frame() {
        let mut pool = RingPool::new(RING_MIN);
        let mut ring = RingBuffer::new();
        ring.reserve(1, &mut pool);
        push(&mut ring, b"{\"jsonrpc");
        ring.release_if_empty(&mut pool);
        assert_eq!(pool.in_use(), RING_MIN);
        ring.release(&mut pool);
        assert_eq!((ring.capacity(), ring.len(), pool.in_use()), (0, 0, 0));
    }
}

/// Copies `src` into `dst` (the same length, at most 16 bytes) with
/// fixed-size moves: two overlapping 8-byte ones for 8..=16 bytes, two
/// overlapping 4-byte ones for 4..8, the first, middle and last byte below.
#[inline(always)]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len()).min(16);
    let (dst, src) = (&mut dst[..n], &src[..n]);
    if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else if n > 0 {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}

/// The first `needle` in a 64-byte block: four 16-byte compares whose
/// masks make one 64-bit word, without a branch per 16 bytes.
#[inline(always)]
fn find_in_64(needle: u8, block: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let block: &[u8; 64] = block.try_into().ok()?;
        let mut found = 0u64;
        for (at, chunk) in block.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is part of the x86_64 baseline; the unaligned
            // load reads the 16 bytes of `chunk` and nothing else.
            #[allow(unused_unsafe)] // the intrinsics are safe fns from Rust 1.87 on
            let mask = unsafe {
                let x = _mm_loadu_si128(chunk.as_ptr().cast());
                _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(needle as i8))) as u16
            };
            found |= u64::from(mask) << (16 * at);
        }
        (found != 0).then(|| found.trailing_zeros() as usize)
    }
    #[cfg(not(target_arch = "x86_64"))]
    block.iter().position(|&c| c == needle)
}

/// `memchr`, with the first 64 bytes searched inline: a pipelined request
/// line is usually shorter, and there memchr's dispatch and setup cost more
/// than the search (about 80 instructions a line, measured with callgrind).
#[inline]
fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let mut at = 0;
        while at < 64 {
            let Some(chunk) = hay.get(at..at + 16) else {
                break;
            };
            // SAFETY: SSE2 is part of the x86_64 baseline; the unaligned
            // load reads the 16 bytes of `chunk` and nothing else.
            #[allow(unused_unsafe)] // the intrinsics are safe fns from Rust 1.87 on
            let mask = unsafe {
                let x = _mm_loadu_si128(chunk.as_ptr().cast());
                _mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8(needle as i8))) as u32
            };
            if mask != 0 {
                return Some(at + mask.trailing_zeros() as usize);
            }
            at += 16;
        }
        memchr::memchr(needle, &hay[at..]).map(|i| at + i)
    }
    #[cfg(not(target_arch = "x86_64"))]
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod find_tests {
    use super::{find_byte, find_in_64};

    #[test]
    fn find_in_64_agrees_with_a_plain_search() {
        assert_eq!(find_in_64(b'\n', &[b'x'; 63]), None, "not a whole block");
        for at in 0..=64 {
            let mut block = [b'x'; 64];
            if at < 64 {
                block[at] = b'\n';
                block[63] = b'\n';
            }
            assert_eq!(find_in_64(b'\n', &block), (at < 64).then_some(at), "at {at}");
        }
    }

    #[test]
    fn find_byte_agrees_with_a_plain_search() {
        for len in 0..200 {
            for at in (0..len).chain([len]) {
                let mut hay = vec![b'x'; len];
                if at < len {
                    hay[at] = b'\n';
                }
                let expected = hay.iter().position(|&c| c == b'\n');
                assert_eq!(find_byte(b'\n', &hay), expected, "len {len} at {at}");
                // A second needle later on never wins over the first.
                if at + 1 < len {
                    hay[len - 1] = b'\n';
                    assert_eq!(find_byte(b'\n', &hay), Some(at), "len {len} at {at}");
                }
            }
        }
    }
}
