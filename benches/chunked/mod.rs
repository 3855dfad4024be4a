//! A model of a store table not built in keyward: records' hot fields and
//! usage held in the table's slots, the slots in chunks behind an `Arc`, so
//! that a `Verified` could hold its chunk's `Arc` and its slot's place
//! instead of an `Arc` of its own record. A verify would then reach no
//! record at all: its one access to memory the table's buckets, as the
//! floor's one access is its map's slot.
//!
//! Layout, as such a table would have it:
//! - a slot is one 64-byte line holding what verify reads and writes of a
//!   key on the ring's default policy: the id, 24 bytes of the stored hash
//!   (compared in constant time), the use count, the last use (its low bit
//!   the "usage unwritten" flag), the creation time, and a word of the
//!   key's epoch (32 bits), status and shape. A key with a policy of its
//!   own, a use limit, a grace or bindings would take a slower path through
//!   its record (not modelled). The pointers to the records' cold parts
//!   (owner, scopes, metadata), which verify does not read, lie apart;
//! - a bucket is two slots, 128 bytes (a pair of lines the CPU's adjacent
//!   line prefetcher fetches together), and every id has two candidate
//!   buckets (a cuckoo table, 80% full), read at once;
//! - 64 buckets make a chunk behind one `Arc`, whose count lies in the
//!   chunk's allocation or, in the other variant, in a small allocation of
//!   its own; 64 shards each behind a read-write lock, as `MemoryStore`'s.
//!
//! What verify does besides is modelled on `judge`: the ring's epoch read,
//! the default policy read under its sequence lock, the deadline and idle
//! end computed from it and the key's times, the status and shape tested.
//!
//! Nothing here is keyward's code: the ids, the hashes and the checks are
//! the floor's (see `find_in`), so the model reads against the floor of
//! the same run.

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Buckets per chunk.
const CHUNK: usize = 64;

/// Slots per bucket.
const WAYS: usize = 2;

/// Shards, each with its own lock and table.
const SHARDS: usize = 64;

/// The share of the table's slots the keys fill, as a fraction.
const FULL: (usize, usize) = (4, 5);

/// A deadline that never comes.
const NEVER: i64 = i64::MAX;

/// A time before any key's.
const NOT_YET: i64 = i64::MIN;

/// One slot: a line.
#[repr(C, align(64))]
#[derive(Default)]
pub struct Slot {
    id: u64,
    hash: [u8; 24],
    uses: AtomicU64,
    /// The start of the second of the last use; bit 0 set while the use is
    /// not yet written to the store.
    last_used: AtomicI64,
    created_at: i64,
    /// The key's epoch (low 32 bits), status (bits 32–39: 0 active) and
    /// shape (bits 40–47: 0 a key on the default policy, nothing rare).
    meta: u64,
}

/// Two slots: a pair of lines.
#[repr(C, align(128))]
#[derive(Default)]
pub struct Bucket {
    slots: [Slot; WAYS],
}

/// The ring's default policy as `verify` reads it: under a sequence lock,
/// as keyward's `HotDefault`.
struct Default {
    seq: AtomicU64,
    kind: AtomicU64,
    value: AtomicI64,
    since: AtomicI64,
    expired_created_by: AtomicI64,
    expired_idle_by: AtomicI64,
}

/// The ring's state verify reads beside the table.
struct Ring {
    epoch: AtomicU64,
    default: Default,
}

/// A shard's table: chunks of buckets, each behind its own `Arc`.
enum Chunks {
    /// The count in the chunk's own allocation, before its buckets.
    Inline(Vec<Arc<[Bucket]>>),
    /// The count in a small allocation of its own, allocated one after the
    /// other, which points to the buckets: one more load, from cache,
    /// before the buckets'.
    Apart(Vec<Arc<Box<[Bucket]>>>),
}

/// The table.
pub struct ChunkedTable {
    shards: Vec<RwLock<Chunks>>,
    /// Buckets per shard.
    buckets: usize,
    ring: Ring,
}

/// What a verify that found its key returns: its chunk and its place, as
/// a `Verified` would hold them (held, never read here).
#[allow(dead_code)]
pub enum Found {
    /// A chunk of [`Chunks::Inline`].
    Inline(Arc<[Bucket]>, u32),
    /// A chunk of [`Chunks::Apart`].
    Apart(Arc<Box<[Bucket]>>, u32),
}

impl ChunkedTable {
    /// A table holding `entries` (id, stored hash), created at `created_at`
    /// (nanoseconds), with the counts apart from the chunks if `apart`; or
    /// `None` if an insert's walk fails (then the model is not built).
    pub fn build(
        entries: impl ExactSizeIterator<Item = (u64, [u8; 32])>,
        created_at: i64,
        apart: bool,
    ) -> Option<ChunkedTable> {
        let slots = (entries.len() * FULL.1 / FULL.0).div_ceil(SHARDS) + 1;
        let buckets = slots.div_ceil(WAYS).div_ceil(CHUNK) * CHUNK;
        let mut flat: Vec<Vec<Bucket>> = (0..SHARDS)
            .map(|_| (0..buckets).map(|_| Bucket::default()).collect())
            .collect();
        let mut walk = 0x2545_F491_4F6C_DD1D_u64;
        for (id, digest) in entries {
            let mut hash = [0; 24];
            hash.copy_from_slice(&digest[..24]);
            let mut slot = Slot {
                id,
                hash,
                uses: AtomicU64::new(0),
                last_used: AtomicI64::new(NOT_YET),
                created_at,
                meta: 0,
            };
            let table = &mut flat[shard_of(id)];
            let mut at = bucket_of(id, 0, buckets);
            let mut placed = false;
            for _ in 0..500 {
                let first = bucket_of(slot.id, 0, buckets);
                let other = bucket_of(slot.id, 1, buckets);
                // A real id can be 0: a real table marks free slots apart.
                let free = |b: &Bucket| b.slots.iter().position(|s| s.id == 0);
                if let Some(k) = free(&table[first]) {
                    table[first].slots[k] = slot;
                    placed = true;
                    break;
                }
                if let Some(k) = free(&table[other]) {
                    table[other].slots[k] = slot;
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
                slot = std::mem::replace(&mut table[at].slots[k], slot);
            }
            if !placed {
                return None;
            }
        }
        let shards = flat
            .into_iter()
            .map(|table| {
                let mut rest = table.into_iter();
                let count = buckets / CHUNK;
                let chunks = if apart {
                    // The buckets first, then the counts, so the counts lie
                    // together.
                    let boxes: Vec<Box<[Bucket]>> = (0..count)
                        .map(|_| rest.by_ref().take(CHUNK).collect())
                        .collect();
                    Chunks::Apart(boxes.into_iter().map(Arc::new).collect())
                } else {
                    Chunks::Inline(
                        (0..count)
                            .map(|_| rest.by_ref().take(CHUNK).collect())
                            .collect(),
                    )
                };
                RwLock::new(chunks)
            })
            .collect();
        let ring = Ring {
            epoch: AtomicU64::new(0),
            default: Default {
                seq: AtomicU64::new(0),
                kind: AtomicU64::new(0),
                value: AtomicI64::new(0),
                since: AtomicI64::new(created_at),
                expired_created_by: AtomicI64::new(NOT_YET),
                expired_idle_by: AtomicI64::new(NOT_YET),
            },
        };
        Some(ChunkedTable {
            shards,
            buckets,
            ring,
        })
    }

    /// A verify's work on the table for `id`, whose presented secret hashed
    /// to `computed`, at `now` (nanoseconds): under the shard's read lock,
    /// both candidate buckets read and the key's slot judged (see
    /// [`judge`]), then the chunk's `Arc` cloned into the answer.
    #[inline]
    pub fn verify(&self, id: u64, computed: &[u8; 32], now: i64) -> Option<Found> {
        let a = bucket_of(id, 0, self.buckets);
        let b = bucket_of(id, 1, self.buckets);
        let shard = self.shards[shard_of(id)].read().ok()?;
        match &*shard {
            Chunks::Inline(chunks) => {
                let (ca, cb) = (&chunks[a / CHUNK], &chunks[b / CHUNK]);
                let (which, way) = judge(
                    &self.ring,
                    [&ca[a % CHUNK], &cb[b % CHUNK]],
                    id,
                    computed,
                    now,
                )?;
                let (chunk, place) = if which == 0 { (ca, a) } else { (cb, b) };
                Some(Found::Inline(Arc::clone(chunk), slot_index(place, way)))
            }
            Chunks::Apart(chunks) => {
                let (ca, cb) = (&chunks[a / CHUNK], &chunks[b / CHUNK]);
                let (which, way) = judge(
                    &self.ring,
                    [&ca[a % CHUNK], &cb[b % CHUNK]],
                    id,
                    computed,
                    now,
                )?;
                let (chunk, place) = if which == 0 { (ca, a) } else { (cb, b) };
                Some(Found::Apart(Arc::clone(chunk), slot_index(place, way)))
            }
        }
    }

    /// The number of keys held (a check that the build placed them all).
    pub fn len(&self) -> usize {
        let held = |buckets: &[Bucket]| {
            buckets
                .iter()
                .flat_map(|b| &b.slots)
                .filter(|s| s.id != 0)
                .count()
        };
        let shard = |s: &RwLock<Chunks>| match &*s.read().unwrap() {
            Chunks::Inline(chunks) => chunks.iter().map(|c| held(c)).sum::<usize>(),
            Chunks::Apart(chunks) => chunks.iter().map(|c| held(c)).sum(),
        };
        self.shards.iter().map(shard).sum()
    }
}

/// `judge`'s work on the two candidate buckets of `id`: the slot holding
/// it found without a branch between them, its hash compared in constant
/// time; then the epoch against the ring's, the status and shape, the
/// default policy read under its sequence lock, the deadline and idle end
/// computed from it and the key's times as `ends` does; then the use
/// counted, the last use moved when its second has passed and the flag
/// set, as `consume` does. Which bucket (0 or 1) and which way in it.
#[inline]
fn judge(
    ring: &Ring,
    buckets: [&Bucket; 2],
    id: u64,
    computed: &[u8; 32],
    now: i64,
) -> Option<(usize, usize)> {
    let mut mask = 0u32;
    for (j, bucket) in buckets.iter().enumerate() {
        for k in 0..WAYS {
            mask |= u32::from(bucket.slots[k].id == id) << (j * WAYS + k);
        }
    }
    if mask == 0 {
        return None;
    }
    let at = mask.trailing_zeros() as usize;
    let (which, way) = (at / WAYS, at % WAYS);
    let slot = &buckets[which].slots[way];
    let same = computed[..24]
        .iter()
        .zip(&slot.hash)
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if black_box(same) != 0 {
        return None;
    }
    if u64::from(slot.meta as u32) < ring.epoch.load(Ordering::Acquire) {
        return None;
    }
    if (slot.meta >> 32) & 0xFFFF != 0 {
        // Not active, or a rare shape: the slow path (not modelled).
        return None;
    }
    let d = ring.default.load();
    let last_active = slot
        .created_at
        .max(slot.last_used.load(Ordering::Relaxed) & !1);
    if slot.created_at <= d.expired_created_by || last_active <= d.expired_idle_by {
        return None;
    }
    let deadline = match d.kind {
        1 => d.value,
        2 => slot.created_at.max(d.since).saturating_add(d.value),
        _ => NEVER,
    };
    let idle_end = match d.kind {
        3 => last_active.max(d.since).saturating_add(d.value),
        _ => NEVER,
    };
    if now >= deadline.min(idle_end) {
        return None;
    }
    slot.uses.fetch_add(1, Ordering::AcqRel);
    let second = now - now.rem_euclid(1_000_000_000);
    let last = slot.last_used.load(Ordering::Relaxed);
    if last & !1 < second || last & 1 == 0 {
        slot.last_used.fetch_max(second | 1, Ordering::Relaxed);
    }
    Some((which, way))
}

/// The default policy as one reading.
struct Policy {
    kind: u64,
    value: i64,
    since: i64,
    expired_created_by: i64,
    expired_idle_by: i64,
}

impl Default {
    /// Reads the policy, again if a writer was at work.
    #[inline]
    fn load(&self) -> Policy {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            let policy = Policy {
                kind: self.kind.load(Ordering::Relaxed),
                value: self.value.load(Ordering::Relaxed),
                since: self.since.load(Ordering::Relaxed),
                expired_created_by: self.expired_created_by.load(Ordering::Relaxed),
                expired_idle_by: self.expired_idle_by.load(Ordering::Relaxed),
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if before & 1 == 0 && self.seq.load(Ordering::Relaxed) == before {
                return policy;
            }
            std::hint::spin_loop();
        }
    }
}

/// The slot's place within its chunk.
#[inline]
fn slot_index(bucket: usize, way: usize) -> u32 {
    ((bucket % CHUNK) * WAYS + way) as u32
}

/// The shard of `id`.
#[inline]
fn shard_of(id: u64) -> usize {
    (id.wrapping_mul(0xA076_1D64_78BD_642F) >> 58) as usize % SHARDS
}

/// The `which`th candidate bucket of `id` among `buckets`: the id mixed
/// by a multiply, scaled by another (no division).
#[inline]
fn bucket_of(id: u64, which: usize, buckets: usize) -> usize {
    const MIX: [u64; 2] = [0x9E37_79B9_7F4A_7C15, 0xD6E8_FEB8_6659_FD93];
    let mixed = (id ^ (id >> 29)).wrapping_mul(MIX[which]);
    ((u128::from(mixed) * buckets as u128) >> 64) as usize
}
