//! A connection's outgoing bytes: a queue of chunks written with `writev`.
//!
//! Responses produced on the loop are encoded straight into the tail chunk;
//! a frame built by a worker arrives as its own `Vec` and is queued without a
//! copy. Written chunks go back to a [`ChunkPool`], so that a connection with
//! nothing to send holds no buffer at all.

use std::collections::VecDeque;
use std::io::IoSlice;

/// Size of a pooled chunk; small responses are packed into one until it is full.
pub const CHUNK_SIZE: usize = 16 * 1024;

/// Most chunks handed to one `writev` call.
pub const MAX_IOVECS: usize = 64;

/// Pending output of one connection.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the front chunk already written.
    written: usize,
    pending: usize,
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

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Appends bytes through `write`, which gets the tail chunk to extend.
    /// Returns what `write` returns.
    pub fn append<R>(&mut self, pool: &mut ChunkPool, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let reuse_tail = self.chunks.len() > self.sealed
            && self
                .chunks
                .back()
                .is_some_and(|c| c.len() < CHUNK_SIZE && c.capacity() >= CHUNK_SIZE);
        if !reuse_tail {
            self.chunks.push_back(pool.take());
        }
        let tail = self.chunks.back_mut().expect("tail chunk pushed above");
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
        self.chunks.push_back(frame);
    }

    /// Fills `iov` with the pending bytes; returns how many slices were used.
    pub fn iovecs<'a>(&'a self, iov: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut used = 0;
        for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
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
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.written = 0;
            if let Some(chunk) = self.chunks.pop_front() {
                pool.give(chunk);
            }
        }
        if self.pending == 0 {
            self.release(pool);
        }
    }

    /// Drops everything queued (the peer is gone) and returns the chunks.
    pub fn release(&mut self, pool: &mut ChunkPool) {
        for chunk in self.chunks.drain(..) {
            pool.give(chunk);
        }
        self.written = 0;
        self.pending = 0;
        self.sealed = 0;
    }
}

/// Free output chunks of [`CHUNK_SIZE`] capacity.
#[derive(Debug)]
pub struct ChunkPool {
    free: Vec<Vec<u8>>,
    max_free: usize,
}

impl ChunkPool {
    /// A pool that keeps up to `max_free` chunks.
    pub fn new(max_free: usize) -> Self {
        Self {
            free: Vec::new(),
            max_free,
        }
    }

    /// An empty chunk with room for at least [`CHUNK_SIZE`] bytes.
    pub fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK_SIZE))
    }

    /// Returns a chunk; oversized or surplus chunks are freed.
    pub fn give(&mut self, mut chunk: Vec<u8>) {
        if chunk.capacity() >= CHUNK_SIZE
            && chunk.capacity() <= CHUNK_SIZE * 4
            && self.free.len() < self.max_free
        {
            chunk.clear();
            self.free.push(chunk);
        }
    }

    /// Chunks held free.
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
}
