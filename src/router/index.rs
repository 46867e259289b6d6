//! The method table's lookup index, built once the router is complete.
//!
//! Every request looks its method up, so the lookup is on the hot path.
//! A hash map hashes the name's bytes, probes, follows the key's heap
//! pointer and calls `memcmp`; this index does none of that for the names
//! calls use (up to 16 bytes): the name's bytes are read into two words
//! with a few loads (overlapping ones, as the length allows), which with
//! the length identify a name of up to 16 bytes exactly, and the slot holds
//! those words inline. A word multiply picks the slot; the table is at most
//! half full and its multiplier is chosen at build time for the fewest
//! collisions (most often none), so a hit costs one slot compare. Longer
//! names also compare their bytes past the 16th.

use std::sync::Arc;

use super::Method;

/// Open addressing over [`Slot`]s, linear probing, at most half full.
pub(crate) struct Index {
    slots: Box<[Slot]>,
    /// `slots.len() - 1` (the length is a power of two).
    mask: usize,
    /// The odd multiplier of [`Index::home`].
    seed: u64,
    /// 64 minus log2 of the slot count: the product's top bits pick the slot.
    shift: u32,
}

/// One name and its method; empty when `len` is [`EMPTY`].
struct Slot {
    head: u64,
    tail: u64,
    len: usize,
    method: Option<Arc<Method>>,
}

/// No name is this long: marks an empty slot, so that a lookup compares
/// words before it asks whether the slot is empty.
const EMPTY: usize = usize::MAX;

/// Multipliers tried per table size.
const SEEDS: u64 = 64;

/// The name's first 16 bytes as two words, exact with the length for names
/// of up to 16 bytes: 8..=16 bytes are two overlapping 8-byte loads, 4..8
/// two overlapping 4-byte loads in one word, 1..4 the first, middle and
/// last bytes. Past 16 bytes: bytes 0..8 and 8..16.
#[inline(always)]
fn key(name: &[u8]) -> (u64, u64) {
    let n = name.len();
    if n >= 8 {
        let tail = if n > 16 { &name[8..16] } else { &name[n - 8..] };
        (word8(&name[..8]), word8(tail))
    } else if n >= 4 {
        let low = u64::from(word4(&name[..4]));
        let high = u64::from(word4(&name[n - 4..]));
        (low | high << 32, 0)
    } else if n > 0 {
        let bytes = u64::from(name[0]) | u64::from(name[n / 2]) << 8 | u64::from(name[n - 1]) << 16;
        (bytes, 0)
    } else {
        (0, 0)
    }
}

#[inline(always)]
fn word8(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    u64::from_le_bytes(word)
}

#[inline(always)]
fn word4(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    u32::from_le_bytes(word)
}

impl Index {
    /// Indexes `methods` (names unique, as the router keeps them).
    pub(crate) fn new<'a>(methods: impl Iterator<Item = &'a Arc<Method>>) -> Self {
        let methods: Vec<&Arc<Method>> = methods.collect();
        let keys: Vec<(u64, u64, usize)> = methods
            .iter()
            .map(|m| {
                let (head, tail) = key(m.name.as_bytes());
                (head, tail, m.name.len())
            })
            .collect();
        // At most half full, at least 8 slots.
        let bits = (methods.len() * 2)
            .next_power_of_two()
            .trailing_zeros()
            .max(3);
        let mut best: Option<(usize, u32, u64)> = None;
        'sizes: for bits in [bits, bits + 1] {
            for seed in seeds() {
                let probes = probes(&keys, bits, seed);
                if best.is_none_or(|(fewest, ..)| probes < fewest) {
                    best = Some((probes, bits, seed));
                }
                if probes == 0 {
                    break 'sizes;
                }
            }
        }
        let (_, bits, seed) = best.unwrap_or((0, 3, 1));
        let mut index = Index {
            slots: (0..1usize << bits)
                .map(|_| Slot {
                    head: 0,
                    tail: 0,
                    len: EMPTY,
                    method: None,
                })
                .collect(),
            mask: (1 << bits) - 1,
            seed,
            shift: 64 - bits,
        };
        for (method, (head, tail, len)) in methods.into_iter().zip(keys) {
            let mut at = index.home(head, tail, len);
            while index.slots[at].len != EMPTY {
                at = (at + 1) & index.mask;
            }
            index.slots[at] = Slot {
                head,
                tail,
                len,
                method: Some(Arc::clone(method)),
            };
        }
        index
    }

    /// The slot a key's probe starts at.
    #[inline(always)]
    fn home(&self, head: u64, tail: u64, len: usize) -> usize {
        home(head, tail, len, self.seed, self.shift)
    }

    /// The method registered under `name`. The common case, a name of up
    /// to 16 bytes in its home slot, is one compare of the slot; anything
    /// else takes [`Index::probe`].
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Method>> {
        let bytes = name.as_bytes();
        let len = bytes.len();
        let (head, tail) = key(bytes);
        let at = self.home(head, tail, len);
        if let Some(slot) = self.slots.get(at) {
            if slot.head == head && slot.tail == tail && slot.len == len && len <= 16 {
                return slot.method.as_ref();
            }
        }
        self.probe(bytes, head, tail, at)
    }

    /// The rest of [`Index::get`]: a name past its home slot, a name longer
    /// than 16 bytes, or none.
    #[inline(never)]
    fn probe(&self, name: &[u8], head: u64, tail: u64, mut at: usize) -> Option<&Arc<Method>> {
        let len = name.len();
        loop {
            let slot = self.slots.get(at)?;
            if slot.head == head && slot.tail == tail && slot.len == len {
                let method = slot.method.as_ref()?;
                if len <= 16 || method.name.as_bytes().get(16..) == name.get(16..) {
                    return Some(method);
                }
            } else if slot.len == EMPTY {
                return None;
            }
            at = (at + 1) & self.mask;
        }
    }
}

#[inline(always)]
fn home(head: u64, tail: u64, len: usize, seed: u64, shift: u32) -> usize {
    let mixed = head ^ tail.rotate_left(29) ^ (len as u64).rotate_left(53);
    // The top bits of the product depend on every bit of `mixed`.
    (mixed.wrapping_mul(seed) >> shift) as usize
}

/// Odd multipliers with well mixed bits (splitmix64's output, forced odd).
fn seeds() -> impl Iterator<Item = u64> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..SEEDS).map(move |_| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) | 1
    })
}

/// The extra probes linear probing takes to place `keys` in a table of
/// `1 << bits` slots with this multiplier (0: every name in its home slot).
fn probes(keys: &[(u64, u64, usize)], bits: u32, seed: u64) -> usize {
    let mask = (1usize << bits) - 1;
    let mut taken = vec![false; mask + 1];
    let mut extra = 0;
    for &(head, tail, len) in keys {
        let mut at = home(head, tail, len, seed, 64 - bits);
        while taken[at] {
            at = (at + 1) & mask;
            extra += 1;
        }
        taken[at] = true;
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{Mode, Router};

    fn router(names: &[&str]) -> Router {
        let mut router = Router::new();
        for name in names {
            router
                .method(name, "", Mode::Inline, |_, _| Ok(()))
                .expect("register");
        }
        router
    }

    fn found(index: &Index, name: &str) -> bool {
        index.get(name).is_some_and(|m| m.name() == name)
    }

    const NAMES: &[&str] = &[
        "a",
        "ab",
        "abc",
        "abcd",
        "abcde",
        "abcdefg",
        "abcdefgh",
        "abcdefghi",
        "math.add",
        "sixteen_bytes_xx",
        "seventeen_bytes_x",
        "twenty-four-bytes-name-x",
        "a.much.longer.method.name.than.sixteen",
        "é",
        "名前",
    ];

    #[test]
    fn every_registered_name_is_found() {
        let mut router = router(NAMES);
        crate::methods::register_builtins(&mut router).expect("builtins");
        let index = Index::new(router.methods.values());
        for name in router.methods.keys() {
            assert!(found(&index, name), "{name:?} not found");
        }
    }

    #[test]
    fn near_misses_are_not_found() {
        let index = Index::new(router(NAMES).methods.values());
        for miss in [
            "",
            "b",
            "ac",
            "aba",
            "abce",
            "abcdf",
            "abcdefh",
            "abcdefgi",
            "abcdefghj",
            "abcdefgh\0",
            "math.ad",
            "math.addx",
            "math.adD",
            "Math.add",
            "sixteen_bytes_xy",
            "sixteen_bytes_x",
            "sixteen_bytes_xxx",
            "seventeen_bytes_y",
            "seventeen_bytes_xx",
            "seventeen_bytes_",
            "twenty-four-bytes-name-y",
            "twenty-four-bytes-name-",
            "twenty-four-bytes-name-xx",
            "a.much.longer.method.name.than.sixteeN",
            "a.much.longer.method.name.than.sixteen.",
            "è",
            "名",
            "名前前",
            "\u{0}",
        ] {
            assert!(index.get(miss).is_none(), "{miss:?} found");
        }
    }

    #[test]
    fn empty_and_crowded_tables_work() {
        let index = Index::new(router(&[]).methods.values());
        assert!(index.get("").is_none() && index.get("x").is_none());
        // Many names sharing their first and last bytes.
        let names: Vec<String> = (0..500).map(|i| format!("svc.{i:05}.call")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let index = Index::new(router(&names).methods.values());
        for name in &names {
            assert!(found(&index, name), "{name:?} not found");
        }
        assert!(index.get("svc.00500.call").is_none());
        assert!(index.get("svc.0000.call").is_none());
    }
}
