//! Ring storage that gives its pages back to the kernel.
//!
//! Blocks are carved out of anonymous mappings ("slabs") of [`SLAB_BYTES`]
//! (or one block, for larger sizes), never out of the heap: the allocator
//! keeps freed memory resident, the kernel does not. A given-back block
//! stays warm (resident, reused without a fault) while its class holds fewer
//! than its warm share; past that its pages are returned with
//! `MADV_DONTNEED` and the block is kept cold: its address is reused later,
//! and the kernel supplies zeroed pages on first touch. So after a burst the
//! ring memory is resident again only up to the warm pool, whatever the peak
//! was. Slabs stay mapped (address space only, not RSS) while the pool lives.
//!
//! `MADV_FREE` would be cheaper to re-fault, but the kernel reclaims such
//! pages only under memory pressure and counts them in RSS until then: the
//! process would look as large as its peak for ever.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The size of one mapping that 16 KiB-class blocks (and any class smaller
/// than this) are carved from.
pub const SLAB_BYTES: usize = 1 << 20;

/// Bytes of free blocks each size class keeps resident (warm).
pub const RING_WARM_BYTES: usize = 1 << 20;

const PAGE: usize = 4096;

/// One ring's storage: a power-of-two run of pages owned by exactly one
/// ring, from a [`RingPool`] slab. Empty (no storage) by default.
#[derive(Debug)]
pub struct Block {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a block is the only handle to its pages (the pool hands each out
// once and takes it back by value), so moving it to another thread moves
// the sole access with it, like a Box<[u8]>.
unsafe impl Send for Block {}
// SAFETY: shared access only reads through &[u8]; writing needs &mut.
unsafe impl Sync for Block {}

impl Default for Block {
    fn default() -> Self {
        Self {
            ptr: NonNull::dangling(),
            len: 0,
        }
    }
}

impl Block {
    /// True when this holds no storage.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is dangling-but-aligned with len 0, or points at
        // `len` mapped bytes this block owns alone (see `Send`).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Block {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.len > 0 {
            // Not given back (a bug, or a leak on purpose at exit): return
            // its pages at least; the address range stays reserved in its
            // slab, which the pool never unmaps while blocks are out.
            discard(self.ptr, self.len);
        }
    }
}

/// Returns the pages of `[ptr, ptr + len)` to the kernel.
fn discard(ptr: NonNull<u8>, len: usize) {
    // SAFETY: the range is page-aligned (slabs and blocks are multiples of
    // the page size) and lies in a private anonymous mapping the pool made
    // and has not unmapped; nothing holds a reference into it (the block was
    // given back or is being dropped). DONTNEED only zeroes those pages.
    let rc = unsafe { libc::madvise(ptr.as_ptr().cast(), len, libc::MADV_DONTNEED) };
    debug_assert_eq!(rc, 0, "madvise(MADV_DONTNEED) failed");
}

/// A new private anonymous mapping of `len` bytes.
fn map(len: usize) -> NonNull<u8> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's
    // choosing; it aliases nothing.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    match NonNull::new(ptr.cast::<u8>()) {
        Some(p) if ptr != libc::MAP_FAILED => p,
        _ => std::alloc::handle_alloc_error(
            std::alloc::Layout::from_size_align(len, PAGE).expect("page layout"),
        ),
    }
}

/// Free blocks of one size.
#[derive(Debug, Default)]
struct Class {
    /// Resident free blocks, reused first.
    warm: Vec<NonNull<u8>>,
    /// Free blocks whose pages went back to the kernel.
    cold: Vec<NonNull<u8>>,
    /// The unused tail of the newest slab: (next block, blocks left).
    tail: Option<(NonNull<u8>, usize)>,
    /// Blocks of this size in all the pool's slabs.
    blocks: usize,
}

/// Free ring blocks by power-of-two size class, so that connections going
/// busy and idle again touch neither the allocator nor (within the warm
/// pool) the kernel, and memory past the warm pool goes back to the kernel.
#[derive(Debug)]
pub struct RingPool {
    classes: Vec<Class>,
    warm_bytes: usize,
    /// Every mapping made: (start, length).
    slabs: Vec<(NonNull<u8>, usize)>,
    /// Bytes of the blocks handed out and not yet given back.
    in_use: usize,
    /// Blocks taken since the last [`RingPool::cool`]: none means the loop
    /// had nothing to read into for a while.
    takes: u64,
}

// SAFETY: the pool owns its mappings and the free blocks in them; nothing
// else refers to the free blocks, so it can move between threads.
unsafe impl Send for RingPool {}

impl RingPool {
    /// A pool that keeps up to `warm_bytes` of free blocks of each size
    /// resident (at least one block), and returns the rest to the kernel.
    pub fn new(warm_bytes: usize) -> Self {
        Self {
            classes: Vec::new(),
            warm_bytes,
            slabs: Vec::new(),
            in_use: 0,
            takes: 0,
        }
    }

    fn class_of(size: usize) -> usize {
        size.trailing_zeros() as usize
    }

    fn class(&mut self, size: usize) -> &mut Class {
        let class = Self::class_of(size);
        if self.classes.len() <= class {
            self.classes.resize_with(class + 1, Class::default);
        }
        &mut self.classes[class]
    }

    /// A block of at least `min` bytes, rounded up to a power of two (and
    /// at least a page). Its contents are unspecified.
    pub fn take(&mut self, min: usize) -> Block {
        let size = min.max(PAGE).next_power_of_two();
        self.in_use += size;
        self.takes += 1;
        let class = self.class(size);
        let ptr = if let Some(p) = class.warm.pop().or_else(|| class.cold.pop()) {
            p
        } else if let Some((next, left)) = class.tail {
            class.tail = (left > 1).then(|| {
                // SAFETY: `left > 1` blocks remain in this slab past `next`.
                (unsafe { next.add(size) }, left - 1)
            });
            next
        } else {
            let slab_len = SLAB_BYTES.max(size);
            let slab = map(slab_len);
            let blocks = slab_len / size;
            let class = self.class(size);
            // Room for every block of this size among the cold ones, so that
            // giving blocks back (and `cool`, from the sweep) never allocates.
            class.blocks += blocks;
            let room = class.blocks - class.cold.len();
            class.cold.reserve(room);
            class.tail = (blocks > 1).then(|| {
                // SAFETY: the slab holds `blocks > 1` blocks of `size`.
                (unsafe { slab.add(size) }, blocks - 1)
            });
            self.slabs.push((slab, slab_len));
            slab
        };
        Block { ptr, len: size }
    }

    /// Takes a block back: kept warm up to the class's warm share, else its
    /// pages go back to the kernel.
    pub fn give(&mut self, block: Block) {
        if block.is_empty() {
            return;
        }
        let block = std::mem::ManuallyDrop::new(block);
        let (ptr, size) = (block.ptr, block.len);
        self.in_use = self.in_use.saturating_sub(size);
        let warm_max = (self.warm_bytes / size).max(1);
        let class = self.class(size);
        if class.warm.len() < warm_max {
            class.warm.push(ptr);
        } else {
            discard(ptr, size);
            class.cold.push(ptr);
        }
    }

    /// Called once per quiet period (the loop's sweep): when no block was
    /// taken since the last call, the warm blocks past `keep_bytes` per size
    /// class return their pages to the kernel too. A busy loop keeps its
    /// whole warm pool; a burst that has passed (its connections idle, or
    /// gone) leaves only `keep_bytes` resident. Returns the bytes released,
    /// or `None` when a block was taken since the last call (the loop is
    /// busy, and nothing was touched).
    pub fn cool(&mut self, keep_bytes: usize) -> Option<usize> {
        let busy = self.takes != 0;
        self.takes = 0;
        if busy {
            return None;
        }
        let mut released = 0;
        for (class, free) in self.classes.iter_mut().enumerate() {
            let size = 1usize << class;
            let keep = keep_bytes / size;
            while free.warm.len() > keep {
                let Some(ptr) = free.warm.pop() else { break };
                discard(ptr, size);
                free.cold.push(ptr);
                released += size;
            }
        }
        Some(released)
    }

    /// Bytes of the blocks connections hold now.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Bytes held resident by free (warm) blocks.
    pub fn pooled_bytes(&self) -> usize {
        self.classes
            .iter()
            .enumerate()
            .map(|(class, c)| c.warm.len() << class)
            .sum()
    }

    /// Bytes of address space mapped for rings (resident or not).
    #[cfg(test)]
    pub fn mapped_bytes(&self) -> usize {
        self.slabs.iter().map(|&(_, len)| len).sum()
    }

    /// Bytes of the pool's mappings resident now, as the kernel reports
    /// them (mincore): what the warm pool and the rings in use really cost.
    pub fn resident_bytes(&self) -> usize {
        // A page vector on the stack: the sweep that reads this gauge runs
        // while requests are served, and must not allocate.
        const STEP: usize = 256;
        let mut pages = [0u8; STEP];
        let mut resident = 0;
        for &(start, len) in &self.slabs {
            let mut offset = 0;
            while offset < len {
                let span = (len - offset).min(STEP * PAGE);
                // SAFETY: `start + offset .. + span` lies inside one of our
                // live mappings (offset and span are page multiples), and
                // `pages` has a byte for each of its at most STEP pages.
                let rc = unsafe {
                    libc::mincore(start.as_ptr().add(offset).cast(), span, pages.as_mut_ptr())
                };
                if rc == 0 {
                    resident += pages[..span / PAGE].iter().filter(|&&p| p & 1 != 0).count() * PAGE;
                }
                offset += span;
            }
        }
        resident
    }
}

impl Drop for RingPool {
    fn drop(&mut self) {
        if self.in_use > 0 {
            // Blocks are still out (a ring the kernel may write, leaked at
            // exit): their memory must stay mapped.
            return;
        }
        for &(start, len) in &self.slabs {
            // SAFETY: every block of this mapping is back in the pool (none
            // in use), and the free lists are raw addresses that are dropped
            // with the pool without being touched.
            unsafe { libc::munmap(start.as_ptr().cast(), len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_past_the_warm_pool_leave_memory() {
        let mut pool = RingPool::new(4 * 16 * 1024);
        let mut blocks: Vec<Block> = (0..200).map(|_| pool.take(16 * 1024)).collect();
        for b in &mut blocks {
            b.fill(0xAB);
        }
        assert_eq!(pool.in_use(), 200 * 16 * 1024);
        assert!(
            pool.resident_bytes() >= 200 * 16 * 1024,
            "touched pages resident"
        );
        for b in blocks {
            pool.give(b);
        }
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.pooled_bytes(), 4 * 16 * 1024, "warm pool kept");
        assert_eq!(
            pool.resident_bytes(),
            4 * 16 * 1024,
            "only the warm blocks stay resident"
        );
        // Cold blocks come back zeroed and usable.
        let again: Vec<Block> = (0..10).map(|_| pool.take(16 * 1024)).collect();
        assert!(again.iter().skip(4).all(|b| b.iter().all(|&x| x == 0)));
        let mapped = pool.mapped_bytes();
        for b in again {
            pool.give(b);
        }
        assert_eq!(pool.mapped_bytes(), mapped, "addresses are reused");
    }

    #[test]
    fn a_quiet_period_cools_the_warm_pool_down() {
        let block = 16 * 1024;
        let mut pool = RingPool::new(16 * block);
        let mut blocks: Vec<Block> = (0..16).map(|_| pool.take(block)).collect();
        for b in &mut blocks {
            b.fill(0xCD);
        }
        for b in blocks {
            pool.give(b);
        }
        assert_eq!(pool.resident_bytes(), 16 * block, "all warm");
        // Blocks were taken since the last look: a busy loop keeps them.
        assert_eq!(pool.cool(2 * block), None);
        assert_eq!(pool.resident_bytes(), 16 * block);
        // A whole period without a take: all but two go back.
        assert_eq!(pool.cool(2 * block), Some(14 * block));
        assert_eq!(pool.pooled_bytes(), 2 * block);
        assert_eq!(pool.resident_bytes(), 2 * block);
        // Cooled blocks come back zeroed, and the pool warms up again.
        let again: Vec<Block> = (0..16).map(|_| pool.take(block)).collect();
        assert!(again.iter().skip(2).all(|b| b.iter().all(|&x| x == 0)));
        for b in again {
            pool.give(b);
        }
        assert_eq!(pool.pooled_bytes(), 16 * block);
    }

    #[test]
    fn large_blocks_get_their_own_mapping_and_a_warm_share_of_one() {
        let mut pool = RingPool::new(1024 * 1024);
        let a = pool.take(3 * 1024 * 1024);
        let b = pool.take(3 * 1024 * 1024);
        assert_eq!(a.len(), 4 * 1024 * 1024);
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.pooled_bytes(), 4 * 1024 * 1024);
        assert_eq!(pool.resident_bytes(), 0, "never touched, never resident");
    }

    #[test]
    fn small_requests_round_up_to_a_page() {
        let mut pool = RingPool::new(0);
        let b = pool.take(100);
        assert_eq!(b.len(), PAGE);
        pool.give(b);
        assert_eq!(pool.pooled_bytes(), PAGE, "a class keeps one block warm");
        pool.give(Block::default());
        assert_eq!(pool.take(3000).len(), PAGE);
    }
}
