//! A connection's outgoing bytes: a queue of chunks written with `writev`.
//!
//! Responses produced on the loop are encoded straight into the tail chunk;
//! a frame built by a worker arrives as its own `Vec` and is queued without a
//! copy. Written chunks go back to a [`ChunkPool`], so that a connection with
//! nothing to send holds no buffer at all. A frame sent to many connections
//! (an event for its subscribers) is queued as a reference to one
//! [`SharedBytes`]: each output holds a pointer, not a copy, and the bytes
//! count once against the buffer memory (see [`SharedBytes`]).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::stats::Stats;

/// Size of a pooled chunk; small responses are packed into one until it is full.
pub const CHUNK_SIZE: usize = 16 * 1024;

/// Most chunks handed to one `writev` call.
pub const MAX_IOVECS: usize = 64;

/// Bytes several outputs send (an encoded event), counted once in the
/// server's `shared_bytes` gauge for as long as any output or queue holds
/// them: the honest figure for memory that fan-out does not multiply.
#[derive(Debug)]
pub struct SharedBytes {
    bytes: Box<[u8]>,
    stats: Arc<Stats>,
}

impl SharedBytes {
    /// Shares `bytes`, adding them to the gauge until the last holder drops them.
    pub fn new(bytes: Vec<u8>, stats: &Arc<Stats>) -> Arc<Self> {
        let bytes = bytes.into_boxed_slice();
        stats.shared_bytes.fetch_add(bytes.len() as u64, Relaxed);
        Arc::new(Self {
            bytes,
            stats: Arc::clone(stats),
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for SharedBytes {
    fn drop(&mut self) {
        self.stats
            .shared_bytes
            .fetch_sub(self.bytes.len() as u64, Relaxed);
    }
}

/// A frame on its way into an output: a few bytes of its own (`head`,
/// copied) followed by shared bytes from offset `from` (referenced).
#[derive(Debug)]
pub struct Outgoing {
    /// Bytes for this output alone (small: copied in).
    pub head: Vec<u8>,
    /// Bytes shared with other outputs, and where this frame's part starts.
    pub shared: Option<(Arc<SharedBytes>, usize)>,
}

impl Outgoing {
    /// The frame's length.
    pub(crate) fn len(&self) -> usize {
        self.head.len()
            + self
                .shared
                .as_ref()
                .map_or(0, |(s, from)| s.bytes().len().saturating_sub(*from))
    }
}

/// One queued chunk.
#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    /// Shared bytes from an offset.
    Shared(Arc<SharedBytes>, usize),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(s, from) => &s.bytes()[*from..],
        }
    }

    fn is_shared(&self) -> bool {
        matches!(self, Chunk::Shared(..))
    }

    fn give_back(self, pool: &mut ChunkPool) {
        if let Chunk::Owned(v) = self {
            pool.give(v);
        }
    }
}

/// Pending output of one connection.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    written: usize,
    pending: usize,
    /// Pending bytes that are in shared chunks (not this output's memory).
    shared: usize,
    /// Front chunks a write in flight reads from: not to be extended.
    sealed: usize,
}

impl WriteQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.pending
    }

    /// Bytes waiting to be written that this output alone holds (its share
    /// of the buffer memory; shared chunks are counted once elsewhere).
    pub fn owned_len(&self) -> usize {
        self.pending - self.shared
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Appends bytes through `write`, which gets the tail chunk to extend.
    /// Returns what `write` returns.
    pub fn append<R>(&mut self, pool: &mut ChunkPool, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let reuse_tail = self.chunks.len() > self.sealed
            && matches!(self.chunks.back(),
                Some(Chunk::Owned(c)) if c.len() < CHUNK_SIZE && c.capacity() >= CHUNK_SIZE);
        if !reuse_tail {
            if self.chunks.capacity() == 0 {
                // Most connections never queue more than one chunk: one
                // slot (not the default four) is what an idle one keeps.
                self.chunks.reserve_exact(1);
            }
            self.chunks.push_back(Chunk::Owned(pool.take()));
        }
        let Some(Chunk::Owned(tail)) = self.chunks.back_mut() else {
            unreachable!("an owned tail chunk was pushed above");
        };
        let before = tail.len();
        let result = write(tail);
        self.pending = self.pending + tail.len() - before.min(tail.len());
        if self.pending == 0 {
            // Nothing was written after all (a notification): hold no chunk.
            self.release(pool);
        }
        result
    }

    /// Queues a whole frame built elsewhere, without copying it.
    pub fn push_frame(&mut self, frame: Vec<u8>, pool: &mut ChunkPool) {
        if frame.is_empty() {
            return;
        }
        if frame.len() <= CHUNK_SIZE / 4 {
            // Small frames are packed so that one writev covers many of them.
            self.append(pool, |tail| tail.extend_from_slice(&frame));
            pool.give(frame);
            return;
        }
        self.pending += frame.len();
        self.chunks.push_back(Chunk::Owned(frame));
    }

    /// Queues a reference to shared bytes from offset `from`: nothing is copied.
    pub fn push_shared(&mut self, frame: Arc<SharedBytes>, from: usize) {
        let len = frame.bytes().len().saturating_sub(from);
        if len == 0 {
            return;
        }
        self.pending += len;
        self.shared += len;
        self.chunks.push_back(Chunk::Shared(frame, from));
    }

    /// Queues a frame: its head copied, its shared part referenced.
    pub fn push(&mut self, frame: Outgoing, pool: &mut ChunkPool) {
        if !frame.head.is_empty() {
            self.push_frame(frame.head, pool);
        }
        if let Some((shared, from)) = frame.shared {
            self.push_shared(shared, from);
        }
    }

    /// Fills `iov` with the pending bytes; returns how many slices were used.
    pub fn iovecs<'a>(&'a self, iov: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut used = 0;
        for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
            let chunk = chunk.bytes();
            let start = if i == 0 { self.written } else { 0 };
            if start < chunk.len() {
                iov[used] = IoSlice::new(&chunk[start..]);
                used += 1;
            }
        }
        used
    }

    /// Freezes the chunks queued now until the next [`WriteQueue::advance`]:
    /// a write the kernel performs later (io_uring) reads them in place, so
    /// new output must go to fresh chunks rather than grow (and maybe move)
    /// the tail.
    pub fn seal(&mut self) {
        self.sealed = self.chunks.len();
    }

    /// Marks `n` bytes as written and returns drained chunks to `pool`.
    pub fn advance(&mut self, mut n: usize, pool: &mut ChunkPool) {
        self.sealed = 0;
        n = n.min(self.pending);
        self.pending -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes().len() - self.written;
            if front.is_shared() {
                self.shared -= n.min(left);
            }
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            if let Some(chunk) = self.chunks.pop_front() {
                chunk.give_back(pool);
            }
        }
        if self.pending == 0 {
            self.release(pool);
        }
    }

    /// Drops everything queued (the peer is gone) and returns the chunks.
    pub fn release(&mut self, pool: &mut ChunkPool) {
        for chunk in self.chunks.drain(..) {
            chunk.give_back(pool);
        }
        self.written = 0;
        self.pending = 0;
        self.shared = 0;
        self.sealed = 0;
    }
}
/// Chunks allocated together when the pool runs out.
const CHUNK_BATCH: usize = 128;

/// Free output chunks of [`CHUNK_SIZE`] capacity.
///
/// Sized by the burst it served, it shrinks back: [`ChunkPool::trim`] (from
/// the loop's sweep) frees the chunks no one took since the last trim, and
/// the pool counts the chunks it let go so that the loop knows when the
/// allocator holds enough freed memory to be worth giving back.
#[derive(Debug)]
pub struct ChunkPool {
    free: Vec<Vec<u8>>,
    max_free: usize,
    /// The fewest free chunks since the last trim: those were never needed.
    low: usize,
    /// Chunks handed out and not given back.
    out: usize,
    /// The most chunks out at once since the last trim.
    peak_out: usize,
}

impl ChunkPool {
    /// A pool that keeps up to `max_free` chunks.
    pub fn new(max_free: usize) -> Self {
        Self {
            free: Vec::new(),
            max_free,
            low: 0,
            out: 0,
            peak_out: 0,
        }
    }

    /// An empty chunk with room for at least [`CHUNK_SIZE`] bytes.
    ///
    /// When none is free, `CHUNK_BATCH` (128) are allocated together, one after
    /// the other: in a burst the small allocations of each connection then
    /// do not land between chunks, so the chunks freed after the burst
    /// leave whole runs of free pages that the allocator can give back,
    /// not one 16 KiB hole per connection each pinned by a neighbour.
    pub fn take(&mut self) -> Vec<u8> {
        self.out += 1;
        self.peak_out = self.peak_out.max(self.out);
        if self.free.is_empty() {
            self.free
                .extend((0..CHUNK_BATCH).map(|_| Vec::with_capacity(CHUNK_SIZE)));
        }
        let chunk = self.free.pop();
        self.low = self.low.min(self.free.len());
        chunk.unwrap_or_else(|| Vec::with_capacity(CHUNK_SIZE))
    }

    /// Returns a chunk; oversized or surplus chunks are freed.
    pub fn give(&mut self, mut chunk: Vec<u8>) {
        if chunk.capacity() >= CHUNK_SIZE {
            self.out = self.out.saturating_sub(1);
        }
        if chunk.capacity() >= CHUNK_SIZE
            && chunk.capacity() <= CHUNK_SIZE * 4
            && self.free.len() < self.max_free
        {
            chunk.clear();
            self.free.push(chunk);
        }
    }

    /// Frees the free chunks past `keep` that were not needed since the
    /// last trim. Returns how many it freed, and how many chunks were out
    /// at most meanwhile beyond those out now (the burst that has passed).
    pub fn trim(&mut self, keep: usize) -> (usize, usize) {
        let spare = self.low.min(self.free.len()).saturating_sub(keep);
        // Only the chunks go: the list keeps its capacity (a pointer per
        // chunk, at most `max_free` + a batch), so refilling it in steady
        // state allocates nothing.
        self.free.truncate(self.free.len() - spare);
        self.low = self.free.len();
        let passed = self.peak_out.saturating_sub(self.out);
        self.peak_out = self.out;
        (spare, passed)
    }

    /// Chunks held free.
    #[cfg(test)]
    pub fn free_chunks(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &WriteQueue) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let n = q.iovecs(&mut iov);
        iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn appended_and_pushed_frames_come_out_in_order() {
        let mut pool = ChunkPool::new(8);
        let mut q = WriteQueue::new();
        q.append(&mut pool, |b| b.extend_from_slice(b"one\n"));
        q.push_frame(vec![b'x'; CHUNK_SIZE], &mut pool);
        q.append(&mut pool, |b| b.extend_from_slice(b"three\n"));
        let out = drain(&q);
        assert_eq!(out.len(), q.len());
        assert!(out.starts_with(b"one\nxxx"));
        assert!(out.ends_with(b"x\nthree\n") || out.ends_with(b"xthree\n"));
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut pool = ChunkPool::new(8);
        let mut q = WriteQueue::new();
        q.append(&mut pool, |b| b.extend_from_slice(b"hello "));
        q.push_frame(vec![b'w'; CHUNK_SIZE], &mut pool);
        q.advance(3, &mut pool);
        assert!(drain(&q).starts_with(b"lo w"));
        q.advance(3, &mut pool);
        assert_eq!(drain(&q).len(), CHUNK_SIZE);
        // Bytes appended behind a partially written chunk keep their order.
        q.append(&mut pool, |b| b.extend_from_slice(b"!"));
        assert!(drain(&q).ends_with(b"w!"));
        q.advance(CHUNK_SIZE + 1, &mut pool);
        assert!(q.is_empty());
        assert!(drain(&q).is_empty());
        assert!(pool.free_chunks() >= 1, "chunks returned to the pool");
    }

    #[test]
    fn sealed_chunks_do_not_move_while_a_write_reads_them() {
        let mut pool = ChunkPool::new(8);
        let mut q = WriteQueue::new();
        q.append(&mut pool, |b| b.extend_from_slice(b"first"));
        let before = {
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            q.iovecs(&mut iov);
            iov[0].as_ptr()
        };
        q.seal();
        // A large answer while sealed must not grow (and so move) the sealed tail.
        q.append(&mut pool, |b| b.extend_from_slice(&[b'z'; 3 * CHUNK_SIZE]));
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let used = q.iovecs(&mut iov);
        assert_eq!(used, 2, "the new output is in a chunk of its own");
        assert_eq!(iov[0].as_ptr(), before);
        assert_eq!(&*iov[0], b"first");
        q.advance(5, &mut pool);
        q.append(&mut pool, |b| b.extend_from_slice(b"!"));
        assert!(
            drain(&q).ends_with(b"z!"),
            "unsealed: the tail is packed again"
        );
    }

    #[test]
    fn shared_bytes_are_referenced_not_owned_and_counted_once() {
        let stats = Arc::new(Stats::new(1));
        let mut pool = ChunkPool::new(8);
        let shared = SharedBytes::new(b"0123456789".to_vec(), &stats);
        let (mut a, mut b) = (WriteQueue::new(), WriteQueue::new());
        a.append(&mut pool, |buf| buf.extend_from_slice(b"head:"));
        a.push_shared(Arc::clone(&shared), 0);
        b.push(
            Outgoing {
                head: b"<".to_vec(),
                shared: Some((Arc::clone(&shared), 4)),
            },
            &mut pool,
        );
        drop(shared);
        assert_eq!(stats.shared_bytes.load(Relaxed), 10, "once, for both");
        assert_eq!((a.len(), a.owned_len()), (15, 5));
        assert_eq!((b.len(), b.owned_len()), (7, 1));
        assert_eq!(drain(&a), b"head:0123456789");
        assert_eq!(drain(&b), b"<456789");
        a.advance(7, &mut pool);
        assert_eq!((a.len(), a.owned_len()), (8, 0));
        assert_eq!(drain(&a), b"23456789");
        a.advance(8, &mut pool);
        assert!(a.is_empty());
        assert_eq!(stats.shared_bytes.load(Relaxed), 10, "b still holds them");
        b.release(&mut pool);
        assert_eq!(
            stats.shared_bytes.load(Relaxed),
            0,
            "freed with the last holder"
        );
    }

    #[test]
    fn the_pool_shrinks_back_after_a_burst() {
        let mut pool = ChunkPool::new(256);
        let burst: Vec<Vec<u8>> = (0..200).map(|_| pool.take()).collect();
        for chunk in burst {
            pool.give(chunk);
        }
        let allocated = 200usize.div_ceil(CHUNK_BATCH) * CHUNK_BATCH;
        assert_eq!(
            pool.free_chunks(),
            allocated,
            "200 given back, the rest of the last run never taken"
        );
        let (freed, passed) = pool.trim(16);
        assert_eq!(
            (freed, passed),
            (0, 200),
            "every chunk was needed since the last trim"
        );
        // A quiet second: the chunks nobody took go.
        let (freed, passed) = pool.trim(16);
        assert_eq!((freed, passed), (allocated - 16, 0));
        assert_eq!(pool.free_chunks(), 16);
        // In steady use the pool keeps what is taken.
        let c = pool.take();
        pool.give(c);
        assert_eq!(pool.trim(16), (0, 1));
        assert_eq!(pool.free_chunks(), 16);
    }
}
