//! A model of a store table not built in keyward: records' hot fields and
//! usage held in the table's slots, the slots in chunks behind an `Arc`, so
//! that a `Verified` could hold its chunk's `Arc` and its slot's place
//! instead of an `Arc` of its own record. A verify would then reach no
//! record at all: its one access to memory the table's buckets, as the
//! floor's one access is its map's slot.
//!
//! Layout, as such a table would have it:
//! - a slot is one 64-byte line: the id, 24 bytes of the stored hash
//!   (compared in constant time), a word of the fields verify checks (the
//!   deadline, the key's epoch, its shape), the use count, the last use and
//!   the pointer to the record's cold part (owner, scopes, metadata), which
//!   verify does not read;
//! - a bucket is two slots, 128 bytes (a pair of lines the CPU's adjacent
//!   line prefetcher fetches together), and every id has two candidate
//!   buckets (a cuckoo table, about 80% full), read at once;
//! - 64 buckets make a chunk, one `Arc<[Bucket]>` allocation; the chunks'
//!   pointers (a few thousand at a million keys) stay in cache.
//!
//! Nothing here is keyward's code: the ids, the hashes and the checks are
//! the floor's (see `find_in`), so the model reads against the floor of
//! the same run.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets per chunk.
const CHUNK: usize = 64;

/// Slots per bucket.
const WAYS: usize = 2;

/// The share of the table's slots the keys fill, as a fraction.
const FULL: (usize, usize) = (4, 5);

/// The checked word of a plain key that never expires: deadline (the
/// high 48 bits, seconds) past any clock, epoch 0, shape 0.
const PLAIN: u64 = u64::MAX << 16;

/// One slot: a line.
#[repr(C, align(64))]
#[derive(Default)]
pub struct Slot {
    id: u64,
    hash: [u8; 24],
    checked: u64,
    uses: AtomicU64,
    last_used: AtomicU64,
    /// Stands in for the pointer to the record's cold part; never read.
    cold: u64,
}

/// Two slots: a pair of lines.
#[repr(C, align(128))]
#[derive(Default)]
pub struct Bucket {
    slots: [Slot; WAYS],
}

/// The table: chunks of buckets, each behind its own `Arc`.
pub struct ChunkedTable {
    chunks: Vec<Arc<[Bucket]>>,
    buckets: usize,
}

/// What a verify that found its key returns: its chunk and its place, as
/// a `Verified` would hold them.
pub struct Found {
    _chunk: Arc<[Bucket]>,
    _slot: u32,
}

impl ChunkedTable {
    /// A table holding `entries` (id, stored hash), or `None` if an insert's
    /// walk fails (then the model is not built).
    pub fn build(entries: impl ExactSizeIterator<Item = (u64, [u8; 32])>) -> Option<ChunkedTable> {
        let slots = entries.len() * FULL.1 / FULL.0 + 1;
        let buckets = slots.div_ceil(WAYS).div_ceil(CHUNK) * CHUNK;
        let mut flat: Vec<Bucket> = (0..buckets).map(|_| Bucket::default()).collect();
        let mut walk = 0x2545_F491_4F6C_DD1D_u64;
        for (id, digest) in entries {
            let mut hash = [0; 24];
            hash.copy_from_slice(&digest[..24]);
            let mut slot = Slot {
                id,
                hash,
                checked: PLAIN,
                uses: AtomicU64::new(0),
                last_used: AtomicU64::new(0),
                cold: id,
            };
            let mut at = bucket_of(id, 0, buckets);
            let mut placed = false;
            for _ in 0..500 {
                let other = bucket_of(slot.id, 1, buckets);
                let first = bucket_of(slot.id, 0, buckets);
                let free = |b: &Bucket| b.slots.iter().position(|s| s.id == 0);
                if let Some(k) = free(&flat[first]) {
                    flat[first].slots[k] = slot;
                    placed = true;
                    break;
                }
                if let Some(k) = free(&flat[other]) {
                    flat[other].slots[k] = slot;
                    placed = true;
                    break;
                }
                // Evict a random way of one of the two, and place the
                // evicted slot next.
                walk ^= walk << 13;
                walk ^= walk >> 7;
                walk ^= walk << 17;
                at = if at == first { other } else { first };
                let k = (walk % WAYS as u64) as usize;
                slot = std::mem::replace(&mut flat[at].slots[k], slot);
            }
            if !placed {
                return None;
            }
        }
        let mut chunks = Vec::with_capacity(buckets / CHUNK);
        let mut rest = flat.into_iter();
        for _ in 0..buckets / CHUNK {
            let chunk: Vec<Bucket> = rest.by_ref().take(CHUNK).collect();
            chunks.push(Arc::from(chunk));
        }
        Some(ChunkedTable { chunks, buckets })
    }

    /// A verify's work on the table for `id`, whose presented secret hashed
    /// to `computed`, at `now` (nanoseconds): both buckets read, the slot
    /// holding `id` found without a branch between them, its hash compared
    /// in constant time and its checked word tested, the use counted and
    /// the last use moved when its second has passed, and the chunk's
    /// `Arc` cloned into the answer.
    #[inline]
    pub fn verify(&self, id: u64, computed: &[u8; 32], now: u64) -> Option<Found> {
        let a = bucket_of(id, 0, self.buckets);
        let b = bucket_of(id, 1, self.buckets);
        let (ca, cb) = (&self.chunks[a / CHUNK], &self.chunks[b / CHUNK]);
        let (ba, bb) = (&ca[a % CHUNK], &cb[b % CHUNK]);
        let mut mask = 0u32;
        for k in 0..WAYS {
            mask |= u32::from(ba.slots[k].id == id) << k;
            mask |= u32::from(bb.slots[k].id == id) << (k + WAYS);
        }
        if mask == 0 {
            return None;
        }
        let at = mask.trailing_zeros() as usize;
        let (chunk, bucket, place) = if at < WAYS {
            (ca, ba, a % CHUNK)
        } else {
            (cb, bb, b % CHUNK)
        };
        let slot = &bucket.slots[at % WAYS];
        let same = computed[..24]
            .iter()
            .zip(&slot.hash)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        let seconds = now / 1_000_000_000;
        if black_box(same) != 0 || (slot.checked >> 16) <= seconds || slot.checked & 0xFFFF != 0 {
            return None;
        }
        slot.uses.fetch_add(1, Ordering::AcqRel);
        let second = seconds * 1_000_000_000;
        if slot.last_used.load(Ordering::Relaxed) < second {
            slot.last_used.fetch_max(second, Ordering::Relaxed);
        }
        Some(Found {
            _chunk: Arc::clone(chunk),
            _slot: (place * WAYS + at % WAYS) as u32,
        })
    }

    /// The number of keys held (a check that the build placed them all).
    pub fn len(&self) -> usize {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .flat_map(|b| &b.slots)
            .filter(|s| s.id != 0)
            .count()
    }
}

/// The `which`th candidate bucket of `id` among `buckets`: the id mixed
/// by a multiply, scaled by another (no division).
#[inline]
fn bucket_of(id: u64, which: usize, buckets: usize) -> usize {
    const MIX: [u64; 2] = [0x9E37_79B9_7F4A_7C15, 0xD6E8_FEB8_6659_FD93];
    let mixed = (id ^ (id >> 29)).wrapping_mul(MIX[which]);
    ((u128::from(mixed) * buckets as u128) >> 64) as usize
}
