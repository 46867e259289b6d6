//! Shared pieces of Junction's fuzz targets: how a target reads its
//! settings from the input, how it splits the input into reads, the ring
//! buffer fed the way a connection feeds it, models of the two protocols
//! written from `proto/*.md` (not from the code under test), and checks of
//! what the daemon writes back.

pub mod feed;
pub mod out;
pub mod spec;

/// Settings a target takes from the first bytes of its input, so that the
/// fuzzer varies them like any other byte.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// First target-specific selector (a limit, usually).
    pub a: u8,
    /// Second target-specific selector.
    pub b: u8,
    /// Bytes of the stream that fit before the ring wraps (0: the ring
    /// starts at its beginning).
    pub wrap: u8,
    /// Seed of the read sizes (and of the schedule, for `conn`).
    pub seed: u8,
}

/// Bytes of setup at the front of every input.
pub const SETUP_LEN: usize = 4;

impl Setup {
    /// Splits an input into its setup and the stream of bytes the peer sends;
    /// inputs shorter than the setup are padded with zeros.
    pub fn split(data: &[u8]) -> (Setup, &[u8]) {
        let mut head = [0u8; SETUP_LEN];
        let n = data.len().min(SETUP_LEN);
        head[..n].copy_from_slice(&data[..n]);
        let setup = Setup {
            a: head[0],
            b: head[1],
            wrap: head[2],
            seed: head[3],
        };
        (setup, &data[n..])
    }
}

/// xorshift64*: small and deterministic, so a crashing input replays exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Sizes of successive reads: one of a few styles (a byte at a time, all at
/// once, small, medium or mixed), picked by the seed.
#[derive(Debug, Clone)]
pub struct Reads {
    rng: Rng,
    style: u8,
}

impl Reads {
    /// The read sizes for `seed`.
    pub fn new(seed: u8) -> Self {
        Reads {
            rng: Rng::new(u64::from(seed) + 1),
            style: seed % 5,
        }
    }

    /// The size of the next read, between 1 and `left` (`left` > 0).
    pub fn next(&mut self, left: usize) -> usize {
        let size = match self.style {
            0 => 1,
            1 => left,
            2 => 1 + self.rng.below(8),
            3 => 1 + self.rng.below(300),
            _ => match self.rng.below(4) {
                0 => 1,
                1 => left,
                _ => 1 + self.rng.below(64),
            },
        };
        size.clamp(1, left.max(1))
    }
}
