//! [`ChunkTable`]: the map from key id to slot behind each `MemoryStore`
//! shard. See docs/design/chunked-store.md.
//!
//! **Layout.** A [`Slot`] is one 64-byte line holding what `verify` reads of
//! a plain key: the id, the first 16 bytes of the hash, the epoch and a
//! [`PLAIN`] flag, the creation instant, the use count and last use (live
//! atomics), and the record's `Arc`. A [`Bucket`] is two slots, 128 bytes
//! aligned to 128 (a pair of lines the adjacent-line prefetcher fetches
//! together). Buckets lie in [`Chunk`]s of 64 (128 slots) behind one `Arc`
//! each; bucket `b` is `chunks[b >> 6][b & 63]`, and the last chunk of a
//! table may be shorter, so a small table is one short chunk.
//!
//! **Cuckoo hashing**: every id has two candidate buckets,
//! computed from the id mixed with a per-table random seed, and a lookup
//! reads both (four lines) with no branch between the loads. An insert takes
//! a free slot of either bucket or moves residents to their other bucket (a
//! bounded random walk). The table grows by 9/8 when an insert would take it
//! above 90% full, or when a walk fails, so a table filled by inserts stays
//! 80-90% full; a removal that leaves it under 22.5% full rebuilds it 60%
//! full. A rebuild draws a new seed, so ids chosen by an importer cannot be
//! aimed at a few buckets, and a rebuild whose placement fails grows and
//! re-seeds again: no key is ever lost.
//!
//! **Copy on write.** Every change to a slot's plain fields (`record`,
//! `hash`, `meta`, `created_at`), and every move of a slot, is made with
//! `&mut self` (under the shard's write lock) through `Arc::make_mut` on its
//! chunk: a chunk that nobody else holds is changed in place; one that a
//! `Verified` holds a clone of is copied first, and the holder keeps reading
//! the old contents. A rebuild builds all-new chunks; old ones live on while
//! held. Only the usage atomics are written through `&self`
//! ([`Slot::count_use`], under the shard's read lock), on the table's
//! current chunks.
//!
//! **Usage.** The slot's `uses` and `last_used` are the truth; the record's
//! `uses` and `last_used_at` are a mirror, raised by [`Slot::refresh`].
//! Bit 0 of `last_used` ([`UNWRITTEN`]) says uses were counted since the
//! record was last written; copies and rebuilds carry all of it exactly.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::StoredKey;
use crate::key::{NOT_YET, Nanos, StatusCode};

/// `meta` bit: a key whose `verify` the fast path may judge from the slot
/// alone (active, no policy of its own, no use limit, no grace, no bindings,
/// an epoch that fits in 32 bits).
pub(crate) const PLAIN: u64 = 1 << 32;

/// Bit 0 of a slot's `last_used`: uses were counted since the record was
/// last written. A second-aligned instant has it clear (10⁹ = 2⁹ · 1953125).
pub(crate) const UNWRITTEN: i64 = 1;

/// `meta`'s epoch bits.
const EPOCH: u64 = 0xFFFF_FFFF;

/// Slots per bucket: two 64-byte slots, one 128-byte pair of lines.
const WAYS: usize = 2;

/// Buckets per chunk, as a shift.
const CHUNK_SHIFT: u32 = 6;

/// Buckets per chunk (128 slots, 8 KB).
const CHUNK: usize = 1 << CHUNK_SHIFT;

/// The fewest buckets a table has: an empty table is one chunk of this many.
const MIN_BUCKETS: usize = 2;

/// Moves a walk may make before the table grows instead. Two-slot buckets
/// with two choices fill to about 89.7% at most, and walks get long near
/// that: with random ids at 10⁴-10⁵ keys, 512 moves failed from 87% full
/// (the table then grows early and is 77% full after), 4,096 from about
/// 89% (see the load test). A failing walk is rare, and cheap beside the
/// rebuild that follows it.
const MAX_KICKS: usize = 4096;

/// An insert that would make the table fuller than this fraction (9/10)
/// grows it by 9/8 (see [`grown`]), so it is about 80% full afterwards.
const FULL: (usize, usize) = (9, 10);

/// A removal that leaves the table less full than this fraction (9/40, a
/// quarter of the 90% at which it grows) rebuilds it...
const SHRINK_BELOW: (usize, usize) = (9, 40);

/// ...with room for this fraction of its slots filled (3/5): far enough from
/// both ends that a run of inserts or removals cannot rebuild it each time.
const REBUILD_FULL: (usize, usize) = (3, 5);

/// [`ChunkTable::reserve`] sizes the table this full (17/20) for the keys it
/// expects: below the loads where walks get long.
const RESERVE_FULL: (usize, usize) = (17, 20);

/// Odd 64-bit constants for the multiply mixes (the golden ratio's and
/// wyhash's).
const MIX: [u64; 4] = [
    0x9E37_79B9_7F4A_7C15,
    0xD6E8_FEB8_6659_FD93,
    0xA076_1D64_78BD_642F,
    0xE703_7ED1_A0B4_28DB,
];

/// One key's slot: one cache line with what a plain key's `verify` reads and
/// writes, and its record. Free when `record` is `None`.
#[repr(C, align(64))]
pub(crate) struct Slot {
    /// The key id.
    id: u64,
    /// The first two words of the record's hash (`KeyHash::words`).
    hash: [u64; 2],
    /// Bits 0..32: the key's epoch (0 when it does not fit, and then the key
    /// is not plain); bit 32: [`PLAIN`].
    meta: u64,
    /// The record's `created_at`.
    created_at: Nanos,
    /// The live use count.
    uses: AtomicU64,
    /// The live last use: a second-aligned instant, or [`NOT_YET`], with
    /// [`UNWRITTEN`] in bit 0.
    last_used: AtomicI64,
    /// The record; `None`: the slot is free.
    record: Option<Arc<StoredKey>>,
}

impl Slot {
    /// A free slot.
    fn free() -> Slot {
        Slot {
            id: 0,
            hash: [0; 2],
            meta: 0,
            created_at: 0,
            uses: AtomicU64::new(0),
            last_used: AtomicI64::new(NOT_YET),
            record: None,
        }
    }

    /// The slot of `record`: its fields, and its usage with [`UNWRITTEN`]
    /// clear (a last use off the second has bit 0 dropped).
    pub(crate) fn fill(record: Arc<StoredKey>) -> Slot {
        let key = &record.key;
        let words = record.hash.words();
        let fits = key.epoch <= EPOCH;
        let plain = key.status == StatusCode::Active
            && !key.shape.own_policy
            && !key.shape.limited
            && !key.shape.graced
            && !key.bound
            && fits
            // The slot keeps 16 bytes of a digest of today's scheme; a key
            // of another hash version (none exists yet) takes the record
            // path, which compares all of its own.
            && record.hash.version() == crate::hash::VERSION;
        Slot {
            id: key.id.as_u64(),
            hash: [words[0], words[1]],
            meta: if fits { key.epoch } else { 0 } | if plain { PLAIN } else { 0 },
            created_at: key.created_at,
            uses: AtomicU64::new(key.uses.get()),
            last_used: AtomicI64::new(key.last_used_at.get() & !UNWRITTEN),
            record: Some(record),
        }
    }

    /// The key id.
    #[inline]
    #[cfg(test)]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The first 16 bytes of the record's hash, as `KeyHash::words`' first
    /// two words.
    #[inline]
    pub(crate) fn hash_head(&self) -> [u64; 2] {
        self.hash
    }

    /// Whether the fast path may judge this key from the slot alone.
    #[inline]
    pub(crate) fn is_plain(&self) -> bool {
        self.meta & PLAIN != 0
    }

    /// The key's epoch, if it is below 2³² (always so for a plain key).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.meta & EPOCH
    }

    /// The record's creation instant.
    #[inline]
    pub(crate) fn created_at(&self) -> Nanos {
        self.created_at
    }

    /// The live use count.
    #[inline]
    pub(crate) fn uses(&self) -> u64 {
        self.uses.load(Ordering::Acquire)
    }

    /// The live last use (start of its second), or [`NOT_YET`].
    #[inline]
    pub(crate) fn last_used(&self) -> Nanos {
        self.last_used.load(Ordering::Relaxed) & !UNWRITTEN
    }

    /// Whether uses were counted since the record was last written.
    #[inline]
    #[cfg(test)]
    pub(crate) fn is_unwritten(&self) -> bool {
        self.last_used.load(Ordering::Relaxed) & UNWRITTEN != 0
    }

    /// The record, of an occupied slot (every slot the table hands out is).
    #[inline]
    pub(crate) fn record(&self) -> &Arc<StoredKey> {
        self.record
            .as_ref()
            .expect("the table hands out occupied slots only")
    }

    /// Counts one use at `second` (a second-aligned instant, bit 0 clear).
    /// Lock-free: the count moves with `fetch_add`; the last use is written
    /// only when the second moved or [`UNWRITTEN`] is clear, so concurrent
    /// verifiers of a hot key mostly only read that word.
    #[inline]
    pub(crate) fn count_use(&self, second: Nanos) {
        debug_assert_eq!(second & UNWRITTEN, 0, "a second-aligned instant");
        self.uses.fetch_add(1, Ordering::AcqRel);
        let last = self.last_used.load(Ordering::Relaxed);
        if last & !UNWRITTEN < second || last & UNWRITTEN == 0 {
            // Never earlier than the use already kept (a clock read by
            // another thread, or one that stepped back, can be behind it),
            // and always marked: the use itself is unwritten. Every value
            // written here is odd, so whichever `fetch_max` wins, the bit is
            // set.
            let at = second.max(last & !UNWRITTEN);
            self.last_used.fetch_max(at | UNWRITTEN, Ordering::Relaxed);
        }
    }

    /// Copies the slot's usage into its record's mirror: the record's count
    /// and last use rise to the slot's (never lower: `fetch_max`), and its
    /// dirty flag is set when [`UNWRITTEN`] is. No allocation, no lock.
    pub(crate) fn refresh(&self) {
        let Some(record) = &self.record else {
            return;
        };
        let last = self.last_used.load(Ordering::Relaxed);
        record.key.uses.0.fetch_max(self.uses(), Ordering::AcqRel);
        if last & UNWRITTEN != 0 {
            // Raises the record's last use and sets its dirty flag (no uses
            // are added: the count was raised above).
            record.key.carry_usage(0, last & !UNWRITTEN);
        } else {
            // A clear bit means the slot's usage was set from a record the
            // table holds (a fill, or an insert whose usage was not below
            // the slot's), and a record's usage only rises: there is
            // nothing to raise.
            debug_assert!(last <= record.key.last_used_at.get());
        }
    }

    /// A slot of `record` that replaces `self`, keeping the usage counted
    /// in `self`: the count and last use are the larger of the two, and
    /// [`UNWRITTEN`] is set when the slot's usage is greater than the
    /// record's (uses counted after the record was copied, or a record that
    /// carries less), clear when the record carries all of it.
    fn take_over(&mut self, record: Arc<StoredKey>) -> Slot {
        let mut next = Slot::fill(record);
        let uses = *self.uses.get_mut();
        let last = *self.last_used.get_mut() & !UNWRITTEN;
        let (theirs, their_last) = (*next.uses.get_mut(), *next.last_used.get_mut());
        let unwritten = uses > theirs || last > their_last;
        *next.uses.get_mut() = uses.max(theirs);
        *next.last_used.get_mut() = last.max(their_last) | if unwritten { UNWRITTEN } else { 0 };
        std::mem::replace(self, next)
    }
}

/// A copy at this moment: the usage atomics are read once (exact under the
/// shard's write lock, where no use is counted). `Arc::make_mut` needs it.
impl Clone for Slot {
    fn clone(&self) -> Slot {
        Slot {
            id: self.id,
            hash: self.hash,
            meta: self.meta,
            created_at: self.created_at,
            uses: AtomicU64::new(self.uses.load(Ordering::Acquire)),
            last_used: AtomicI64::new(self.last_used.load(Ordering::Acquire)),
            record: self.record.clone(),
        }
    }
}

/// Two slots: 128 bytes on a 128-byte boundary.
#[repr(C, align(128))]
#[derive(Clone)]
pub(crate) struct Bucket {
    slots: [Slot; WAYS],
}

impl Bucket {
    /// A bucket of free slots.
    fn free() -> Bucket {
        Bucket {
            slots: [Slot::free(), Slot::free()],
        }
    }

    /// The slots holding `id`, as a bit mask, with no branch between the
    /// comparisons (so a lookup reads both of its buckets in parallel).
    #[inline]
    fn matches(&self, id: u64) -> u32 {
        let mut mask = 0;
        for (k, slot) in self.slots.iter().enumerate() {
            mask |= u32::from((slot.id == id) & slot.record.is_some()) << k;
        }
        mask
    }

    fn free_way(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.record.is_none())
    }
}

/// 64 buckets (128 slots) behind one `Arc`; the last chunk of a table may be
/// shorter. A `Verified` holds its slot's chunk.
pub(crate) type Chunk = Arc<[Bucket]>;

/// The slot at `index` (bucket in the chunk × 2 + way) of a chunk, for a
/// `Verified` that holds the chunk.
#[inline]
pub(crate) fn slot_at(chunk: &Chunk, index: u32) -> &Slot {
    let index = index as usize;
    &chunk[index / WAYS].slots[index % WAYS]
}

/// A found slot: its chunk and its index in the chunk (see [`slot_at`]).
#[derive(Clone, Copy)]
pub(crate) struct SlotRef<'a> {
    /// The chunk, for a `Verified` to clone.
    pub(crate) chunk: &'a Chunk,
    /// The slot's index in the chunk.
    pub(crate) index: u32,
}

impl<'a> SlotRef<'a> {
    /// The slot (always occupied).
    #[inline]
    pub(crate) fn slot(&self) -> &'a Slot {
        slot_at(self.chunk, self.index)
    }
}

/// A table's random values: the seed mixed into ids, and the walk's start.
#[derive(Clone, Copy)]
struct Seeds {
    mix: u64,
    walk: u64,
}

impl Seeds {
    /// Fresh values from std's `RandomState` (seeded from the OS once per
    /// thread and stepped per instance, so every call differs).
    fn draw() -> Seeds {
        Seeds {
            mix: RandomState::new().hash_one(0x006b_6579_7761_7264_u64),
            walk: RandomState::new().hash_one(0x0077_616c_6b00_u64),
        }
    }

    /// Other values derived from these, for a rebuild that must retry: no
    /// call that could fail while keys are out of the table.
    fn next(self) -> Seeds {
        Seeds {
            mix: fold_mul(self.mix ^ MIX[1], MIX[0]),
            walk: fold_mul(self.walk ^ MIX[2], MIX[3]),
        }
    }
}

/// A map from id to [`Slot`], in chunks shared copy-on-write (see the module
/// docs).
pub(crate) struct ChunkTable {
    /// Bucket `b` is `chunks[b >> 6][b & 63]`.
    chunks: Box<[Chunk]>,
    /// Buckets in all chunks.
    buckets: usize,
    /// Occupied slots.
    len: usize,
    /// The per-table random value mixed into ids.
    seed: u64,
    /// Xorshift state choosing which resident a walk moves; never 0.
    walk: u64,
}

impl ChunkTable {
    /// An empty table: one short chunk of a few buckets.
    pub(crate) fn new() -> ChunkTable {
        ChunkTable::with_buckets(MIN_BUCKETS, Seeds::draw())
    }

    fn with_buckets(count: usize, seeds: Seeds) -> ChunkTable {
        ChunkTable::recycling(count, seeds, &mut Vec::new())
    }

    /// [`with_buckets`](Self::with_buckets), its whole chunks taken from
    /// `spare` (empty chunks nobody holds) while it has any: a rebuild
    /// reuses the table's own chunks and allocates only what it adds. Left
    /// to the allocator, every growth would free all of a table's 8 KB
    /// chunks and take new ones; a heap of small blocks keeps the freed
    /// ones, and a million keys grown from nothing left the process
    /// about 60 bytes a key larger than the memory in use (the bench's
    /// resident-set row, session 46).
    fn recycling(count: usize, seeds: Seeds, spare: &mut Vec<Chunk>) -> ChunkTable {
        let count = count.max(MIN_BUCKETS);
        let chunks = (0..count.div_ceil(CHUNK))
            .map(|c| {
                let size = (count - c * CHUNK).min(CHUNK);
                match spare.pop() {
                    Some(chunk) if size == CHUNK => chunk,
                    other => {
                        spare.extend(other);
                        (0..size).map(|_| Bucket::free()).collect::<Chunk>()
                    }
                }
            })
            .collect();
        ChunkTable {
            chunks,
            buckets: count,
            len: 0,
            seed: seeds.mix,
            walk: seeds.walk | 1,
        }
    }

    /// How many keys the table holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn slots(&self) -> usize {
        self.buckets * WAYS
    }

    /// The two buckets of `id`: high halves of 128-bit products of the mixed
    /// id with the bucket count, i.e. uniform over any count.
    #[inline]
    fn buckets_of(&self, id: u64) -> (usize, usize) {
        let h1 = fold_mul(id ^ self.seed, MIX[0]);
        let h2 = fold_mul(h1 ^ MIX[1], MIX[2]);
        let count = self.buckets as u64;
        let spread = |h: u64| ((u128::from(h) * u128::from(count)) >> 64) as usize;
        (spread(h1), spread(h2))
    }

    #[inline]
    fn chunk_of(&self, bucket: usize) -> &Chunk {
        &self.chunks[bucket >> CHUNK_SHIFT]
    }

    #[inline]
    fn bucket(&self, bucket: usize) -> &Bucket {
        &self.chunk_of(bucket)[bucket & (CHUNK - 1)]
    }

    /// The bucket, to change: its chunk is copied first if anyone else holds
    /// it.
    fn bucket_mut(&mut self, bucket: usize) -> &mut Bucket {
        &mut Arc::make_mut(&mut self.chunks[bucket >> CHUNK_SHIFT])[bucket & (CHUNK - 1)]
    }

    /// The slot of `id`.
    #[inline]
    pub(crate) fn get(&self, id: u64) -> Option<SlotRef<'_>> {
        let (i, j) = self.buckets_of(id);
        let (first, second) = (self.chunk_of(i), self.chunk_of(j));
        // Read both chunks' reference counts now, beside the buckets: a
        // `Verified` takes one (a locked increment, which holds up every
        // later load until its line is in), and at a million keys the
        // count's line is as cold as the buckets. Loaded here, it comes in
        // with them. Plain loads, whatever the id (a live chunk counts at
        // least one), so the work does not depend on the key.
        let counted = Arc::strong_count(first) > 0 && Arc::strong_count(second) > 0;
        let (i, j) = (i & (CHUNK - 1), j & (CHUNK - 1));
        let found = (first[i].matches(id) | second[j].matches(id) << WAYS) * u32::from(counted);
        if found == 0 {
            return None;
        }
        let at = found.trailing_zeros() as usize;
        let (chunk, bucket) = if at < WAYS { (first, i) } else { (second, j) };
        Some(SlotRef {
            chunk,
            index: (bucket * WAYS + at % WAYS) as u32,
        })
    }

    /// Where `id` is: its bucket and way.
    fn find(&self, id: u64) -> Option<(usize, usize)> {
        let (i, j) = self.buckets_of(id);
        [i, j].into_iter().find_map(|b| {
            let found = self.bucket(b).matches(id);
            (found != 0).then(|| (b, found.trailing_zeros() as usize))
        })
    }

    /// Inserts `record` under its id, returning the record it replaced.
    ///
    /// An id already present keeps its slot, whose fields are set from
    /// `record` but for its usage: the count and the last use are the larger
    /// of the slot's and the record's (a write never lowers usage), and
    /// [`UNWRITTEN`] is set if the slot's usage was greater than the
    /// record's, clear otherwise. A new id gets [`Slot::fill`].
    pub(crate) fn insert(&mut self, record: Arc<StoredKey>) -> Option<Arc<StoredKey>> {
        let id = record.key.id.as_u64();
        if let Some((b, k)) = self.find(id) {
            return self.bucket_mut(b).slots[k].take_over(record).record;
        }
        if (self.len + 1) * FULL.1 > self.slots() * FULL.0 {
            self.grow();
        }
        let mut homeless = Slot::fill(record);
        while let Err(slot) = self.place(homeless) {
            // Every other key is still placed; only `slot` is waiting.
            homeless = slot;
            self.grow();
        }
        self.len += 1;
        None
    }

    /// Removes `id`, returning its record.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Arc<StoredKey>> {
        let (b, k) = self.find(id)?;
        let removed = std::mem::replace(&mut self.bucket_mut(b).slots[k], Slot::free()).record;
        self.len -= 1;
        if self.buckets > MIN_BUCKETS && self.len * SHRINK_BELOW.1 < self.slots() * SHRINK_BELOW.0 {
            self.shrink();
        }
        removed
    }

    /// Every occupied slot, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter())
            .flat_map(|bucket| bucket.slots.iter())
            .filter(|slot| slot.record.is_some())
    }

    /// Makes room for `additional` more keys at once (one rebuild, to 85%
    /// full for them), so that inserting them rebuilds no more: a
    /// `FileStore` opening a million keys sizes its tables from the count.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let need = self.len.saturating_add(additional);
        if need.saturating_mul(FULL.1) <= self.slots().saturating_mul(FULL.0) {
            return;
        }
        let slots = need.saturating_mul(RESERVE_FULL.1).div_ceil(RESERVE_FULL.0);
        self.rebuild(slots.div_ceil(WAYS));
    }

    /// Rebuilds the table 85% full if it is under 80% full (a table
    /// reserved for more keys than came): so a load that reserved from an
    /// estimate ends as full as growth would have left it.
    pub(crate) fn fit(&mut self) {
        if self.buckets > MIN_BUCKETS && self.len * 5 < self.slots() * 4 {
            let slots = self
                .len
                .saturating_mul(RESERVE_FULL.1)
                .div_ceil(RESERVE_FULL.0);
            self.rebuild(slots.div_ceil(WAYS).max(MIN_BUCKETS));
        }
    }

    /// Puts a slot whose id is not in the table into a free slot, moving
    /// residents to their other bucket as needed. On failure every key is
    /// still in the table except the returned one (not always the one
    /// passed in). `len` is the caller's to count.
    fn place(&mut self, mut slot: Slot) -> Result<(), Slot> {
        let (i, j) = self.buckets_of(slot.id);
        for b in [i, j] {
            if let Some(k) = self.bucket(b).free_way() {
                self.bucket_mut(b).slots[k] = slot;
                return Ok(());
            }
        }
        let mut bucket = if self.step() & 1 == 1 { j } else { i };
        // The slots this walk filled last, which it does not empty again
        // right away: with two ways, a walk that came back to a bucket
        // would otherwise undo its last move half the time.
        let mut filled = [(usize::MAX, 0); 2];
        for n in 0..MAX_KICKS {
            // Swap the newcomer with a random resident of a full bucket,
            // then try the resident's other bucket.
            let mut k = (self.step() % WAYS as u64) as usize;
            if filled.contains(&(bucket, k)) {
                k = (k + 1) % WAYS;
            }
            filled[n % 2] = (bucket, k);
            slot = std::mem::replace(&mut self.bucket_mut(bucket).slots[k], slot);
            let (a, b) = self.buckets_of(slot.id);
            bucket = if a == bucket { b } else { a };
            if let Some(k) = self.bucket(bucket).free_way() {
                self.bucket_mut(bucket).slots[k] = slot;
                return Ok(());
            }
        }
        Err(slot)
    }

    fn step(&mut self) -> u64 {
        self.walk ^= self.walk << 13;
        self.walk ^= self.walk >> 7;
        self.walk ^= self.walk << 17;
        self.walk
    }

    /// Rebuilds into 9/8 as many buckets (at least one more).
    fn grow(&mut self) {
        self.rebuild(grown(self.buckets));
    }

    /// Rebuilds into as many buckets as hold the keys 60% full.
    fn shrink(&mut self) {
        let slots = (self.len * REBUILD_FULL.1).div_ceil(REBUILD_FULL.0);
        self.rebuild(slots.div_ceil(WAYS));
    }

    /// Rebuilds into `count` buckets (at least [`MIN_BUCKETS`]) of new
    /// chunks with a new seed; grows by 9/8 and re-seeds if a key finds no
    /// place, so no key is lost. Usage moves with the slots, exactly. The
    /// seeds are drawn before any key leaves the table, and nothing after
    /// that can panic (an allocation failure aborts), so a panic cannot
    /// leave the shard without its keys.
    fn rebuild(&mut self, mut count: usize) {
        let mut seeds = Seeds::draw();
        let (mut pending, mut spare) = self.drain();
        loop {
            let mut table = ChunkTable::recycling(count, seeds, &mut spare);
            seeds = seeds.next();
            let mut left = Vec::new();
            for slot in pending.drain(..) {
                match table.place(slot) {
                    Ok(()) => table.len += 1,
                    Err(slot) => left.push(slot),
                }
            }
            if left.is_empty() {
                *self = table;
                return;
            }
            let (placed, freed) = table.drain();
            pending = placed;
            pending.append(&mut left);
            spare.extend(freed);
            count = grown(table.buckets);
        }
    }

    /// Takes every occupied slot out: moved out of chunks nobody else holds,
    /// copied out of held ones (which keep their contents for their
    /// holders). Returns the slots, and the whole chunks nobody else holds,
    /// now empty, for a rebuild to reuse. The table is left without
    /// chunks; the caller replaces it.
    fn drain(&mut self) -> (Vec<Slot>, Vec<Chunk>) {
        let mut out = Vec::with_capacity(self.len);
        let mut spare = Vec::new();
        for mut chunk in std::mem::take(&mut self.chunks).into_vec() {
            if let Some(buckets) = Arc::get_mut(&mut chunk) {
                for slot in buckets.iter_mut().flat_map(|b| b.slots.iter_mut()) {
                    if slot.record.is_some() {
                        out.push(std::mem::replace(slot, Slot::free()));
                    }
                }
                if chunk.len() == CHUNK {
                    spare.push(chunk);
                }
            } else {
                for slot in chunk.iter().flat_map(|b| b.slots.iter()) {
                    if slot.record.is_some() {
                        out.push(slot.clone());
                    }
                }
            }
        }
        self.len = 0;
        (out, spare)
    }
}

/// 9/8 of `count` buckets, at least one more. Not 5/4 (the table before this one): a
/// table grown at 90% full is then 80% full, not 72% (the memory budget of
/// docs/design/chunked-store.md §2).
fn grown(count: usize) -> usize {
    (count + count / 8).max(count + 1)
}

/// The xor of the halves of a 128-bit product (as in wyhash).
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::num::NonZeroU64;

    use proptest::prelude::*;
    use time::OffsetDateTime;

    use super::*;
    use crate::expiry::ExpiryPolicy;
    use crate::hash::KeyHash;
    use crate::key::{Counter, Key, Stamp};
    use crate::store::conformance::sample_key;
    use crate::token::KeyId;

    /// One second, in nanoseconds.
    const S: i64 = 1_000_000_000;

    fn record(id: u64, owner: &str) -> Arc<StoredKey> {
        Arc::new(sample_key(id, owner, "k"))
    }

    /// A record carrying `uses` and last use `last`.
    fn used(id: u64, owner: &str, uses: u64, last: Nanos) -> Arc<StoredKey> {
        let mut stored = sample_key(id, owner, "k");
        stored.key.uses = Counter::new(uses);
        stored.key.last_used_at = Stamp::new(last);
        Arc::new(stored)
    }

    fn owner_of(slot: &Slot) -> &str {
        slot.record().key.owner()
    }

    fn slot(table: &ChunkTable, id: u64) -> &Slot {
        table.get(id).expect("the key is in the table").slot()
    }

    fn load(table: &ChunkTable) -> f64 {
        table.len() as f64 / table.slots() as f64
    }

    /// A table of keys `0..n`, every one owned by "o", and its model.
    fn filled(n: u64) -> (ChunkTable, HashMap<u64, String>) {
        let mut table = ChunkTable::new();
        let mut model = HashMap::new();
        for id in 0..n {
            table.insert(record(id, "o"));
            model.insert(id, "o".to_string());
        }
        (table, model)
    }

    /// Asserts the table holds exactly the model's keys (id to owner), each
    /// under its id, and is at most 90% full.
    fn assert_same(table: &ChunkTable, model: &HashMap<u64, String>) {
        assert_eq!(table.len(), model.len());
        assert_eq!(table.iter().count(), model.len());
        for (&id, owner) in model {
            let found = slot(table, id);
            assert_eq!(found.id(), id);
            assert_eq!(found.record().id().as_u64(), id);
            assert_eq!(owner_of(found), owner.as_str());
        }
        for slot in table.iter() {
            assert!(model.contains_key(&slot.id()), "no key the model lacks");
        }
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn an_empty_table_finds_nothing_and_is_small() {
        let mut table = ChunkTable::new();
        assert_eq!(table.len(), 0);
        assert!(table.get(0).is_none());
        assert!(table.get(u64::MAX).is_none());
        assert!(table.remove(7).is_none());
        assert_eq!(table.iter().count(), 0);
        assert_eq!(table.chunks.len(), 1);
        assert_eq!(table.chunks[0].len(), MIN_BUCKETS);
    }

    #[test]
    fn id_zero_is_an_ordinary_id() {
        // Free slots hold id 0 too: they must not answer for it.
        let mut table = ChunkTable::new();
        assert!(table.get(0).is_none());
        table.insert(record(0, "zero"));
        assert_eq!(owner_of(slot(&table, 0)), "zero");
        assert_eq!(table.iter().count(), 1);
        assert_eq!(table.remove(0).unwrap().key.owner(), "zero");
        assert!(table.get(0).is_none());
        assert!(table.remove(0).is_none());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn insert_replaces_a_record_with_the_same_id() {
        let mut table = ChunkTable::new();
        assert!(table.insert(record(42, "old")).is_none());
        let new = Arc::new(sample_key(42, "new", "another name"));
        let old = table
            .insert(Arc::clone(&new))
            .expect("the old record is returned");
        assert_eq!(old.key.owner(), "old");
        assert_eq!(table.len(), 1);
        let found = slot(&table, 42);
        assert!(Arc::ptr_eq(found.record(), &new));
        let words = new.hash.words();
        assert_eq!(found.hash_head(), [words[0], words[1]], "the new hash");
        assert_ne!(old.hash.words()[0], words[0]);
    }

    #[test]
    fn growth_keeps_every_key_and_the_load_between_bounds() {
        for sequential in [true, false] {
            let mut table = ChunkTable::new();
            let mut ids = Vec::new();
            let mut state = 0x2545_F491_4F6C_DD1D_u64;
            // (keys, load) before each growth a walk failure caused.
            let mut failed = Vec::new();
            let mut growths = 0;
            for n in 0..100_000u64 {
                // Sequential ids: the worst structure a mixer could meet.
                let id = if sequential { n } else { xorshift(&mut state) };
                let (buckets, len) = (table.buckets, table.len());
                table.insert(record(id, "o"));
                ids.push(id);
                if table.buckets != buckets {
                    growths += 1;
                    if (len + 1) * FULL.1 <= buckets * WAYS * FULL.0 {
                        failed.push((len, len as f64 / (buckets * WAYS) as f64));
                    }
                }
                assert!(table.len() * 10 <= table.slots() * 9, "at most 90% full");
                if table.len() >= 10_000 {
                    // Grown by 9/8 at 90% (to 80%), or when a walk failed
                    // short of it (from 88.8% or more in measured runs).
                    assert!(load(&table) >= 0.78, "load {} at {n}", load(&table));
                }
            }
            for &(len, at) in &failed {
                assert!(
                    len < 10_000 || at >= 0.85,
                    "a walk failed {at:.4} full at {len} keys"
                );
            }
            assert!((60..=100).contains(&growths), "{growths} growths");
            assert_eq!(table.len(), ids.len());
            for id in ids {
                assert_eq!(slot(&table, id).id(), id);
            }
        }
    }

    #[test]
    fn mass_removal_gives_the_memory_back_and_keeps_every_key() {
        let (mut table, mut model) = filled(20_000);
        let peak = table.buckets;
        let mut rebuilt = 0;
        // Remove all but 50 keys, checking the load after every removal.
        for id in 50..20_000u64 {
            let before = table.buckets;
            assert_eq!(table.remove(id).unwrap().id().as_u64(), id);
            model.remove(&id);
            if table.buckets != before {
                rebuilt += 1;
                let load = load(&table);
                assert!((0.5..=0.6).contains(&load), "rebuilt {load} full");
            }
            assert!(
                table.buckets == MIN_BUCKETS || table.len() * 40 >= table.slots() * 9,
                "{} keys in {} slots",
                table.len(),
                table.slots()
            );
        }
        assert_same(&table, &model);
        assert!(
            table.buckets * 50 < peak,
            "{} of {peak} buckets kept",
            table.buckets
        );
        // Each rebuild shrinks by more than half, so few happen.
        assert!((4..=12).contains(&rebuilt), "{rebuilt} rebuilds");
        // Down to nothing, then back up.
        for id in 0..50u64 {
            table.remove(id).unwrap();
            model.remove(&id);
        }
        assert_eq!(table.buckets, MIN_BUCKETS);
        assert_eq!(table.chunks.len(), 1);
        assert_same(&table, &model);
        for id in 0..1_000u64 {
            table.insert(record(id, "again"));
            model.insert(id, "again".to_string());
        }
        assert_same(&table, &model);
    }

    #[test]
    fn a_walk_that_fails_loses_no_key() {
        // Fill a two-bucket table through `place` (which never grows) until
        // a walk fails.
        let mut table = ChunkTable::with_buckets(2, Seeds::draw());
        let mut placed = Vec::new();
        let mut next = 1u64;
        let homeless = loop {
            let slot = Slot::fill(record(next, "o"));
            next += 1;
            match table.place(slot) {
                Ok(()) => {
                    table.len += 1;
                    placed.push(next - 1);
                }
                Err(slot) => break slot,
            }
        };
        // The one key left out is returned, and every other key inserted so
        // far is still in the table.
        // A walk fails once the buckets it can reach are full: all of them,
        // or (when both of an id's candidates are the same bucket, as
        // happens with two buckets half the time) that one bucket.
        assert!(
            table.len() >= WAYS,
            "a walk failed with its bucket not full"
        );
        let mut all: Vec<u64> = table.iter().map(Slot::id).collect();
        all.push(homeless.id());
        all.sort_unstable();
        let mut expected = placed.clone();
        expected.push(next - 1);
        expected.sort_unstable();
        assert_eq!(all, expected);
        assert_eq!(homeless.record().id().as_u64(), homeless.id());
        // insert() then grows and places it.
        table.insert(Arc::clone(homeless.record()));
        assert_eq!(table.len(), expected.len());
        for id in expected {
            assert!(table.get(id).is_some(), "key {id} kept");
        }
    }

    /// Where each key sits: (bucket, way, id).
    fn positions(table: &ChunkTable) -> Vec<(usize, usize, u64)> {
        let mut out = Vec::new();
        for b in 0..table.buckets {
            for (k, slot) in table.bucket(b).slots.iter().enumerate() {
                if slot.record.is_some() {
                    out.push((b, k, slot.id));
                }
            }
        }
        out
    }

    #[test]
    fn an_insert_with_room_in_its_buckets_moves_no_resident() {
        // 100 keys in 256 slots: never grown, and most inserts find a free
        // slot in one of their buckets; those take it and move nobody.
        let mut table = ChunkTable::with_buckets(128, Seeds::draw());
        let mut with_room = 0;
        for id in 0..100u64 {
            let (i, j) = table.buckets_of(id);
            let room = table.bucket(i).free_way().is_some() || table.bucket(j).free_way().is_some();
            let before = positions(&table);
            table.insert(record(id, "o"));
            let after = positions(&table);
            if room {
                with_room += 1;
                assert_eq!(after.len(), before.len() + 1);
                for resident in &before {
                    assert!(after.contains(resident), "{resident:?} moved for key {id}");
                }
            }
        }
        assert_eq!(table.buckets, 128);
        assert_eq!(table.chunks.len(), 2);
        assert!(with_room >= 80, "only {with_room} inserts had room");
    }

    #[test]
    fn the_walk_state_is_never_zero() {
        // A xorshift state of zero stays zero: every walk would then start
        // in the same bucket and move the same slot.
        for walk in [0, 1, 2, u64::MAX - 1] {
            let mut table = ChunkTable::with_buckets(1, Seeds { mix: 0, walk });
            assert_ne!(table.step(), 0, "walk seed {walk}");
        }
    }

    /// A new id with a free slot in one of its buckets: its insert needs no
    /// walk, so cannot fail one.
    fn id_with_room(table: &ChunkTable, next: &mut u64) -> u64 {
        loop {
            let id = *next;
            *next += 1;
            let (i, j) = table.buckets_of(id);
            let room = table.bucket(i).free_way().is_some() || table.bucket(j).free_way().is_some();
            if room && table.get(id).is_none() {
                return id;
            }
        }
    }

    #[test]
    fn the_table_grows_past_90_percent_full_and_shrinks_under_22_5() {
        // 1,000 buckets, 2,000 slots: 1,800 keys are exactly 90% full.
        let mut table = ChunkTable::with_buckets(1_000, Seeds::draw());
        let mut next = 0;
        for _ in 0..1_800 {
            let id = id_with_room(&table, &mut next);
            table.insert(record(id, "o"));
        }
        assert_eq!(table.buckets, 1_000, "exactly 90% full does not grow");
        let id = id_with_room(&table, &mut next);
        table.insert(record(id, "o"));
        assert_eq!(table.buckets, 1_125, "one more grows by 9/8");
        assert_eq!(table.chunks.len(), 18);
        assert_eq!(
            table.chunks[17].len(),
            1_125 - 17 * 64,
            "a short last chunk"
        );
        // 10 buckets, 20 slots: 4.5 keys are 22.5% full.
        let mut table = ChunkTable::with_buckets(10, Seeds::draw());
        let mut next = 0;
        let mut ids = Vec::new();
        for _ in 0..6 {
            let id = id_with_room(&table, &mut next);
            table.insert(record(id, "o"));
            ids.push(id);
        }
        table.remove(ids[0]).unwrap();
        assert_eq!(table.buckets, 10, "25% full does not shrink");
        table.remove(ids[1]).unwrap();
        // 4 keys 60% full: ceil(4 * 5 / 3) = 7 slots, 4 buckets.
        assert_eq!(table.buckets, 4, "20% full shrinks");
        assert_eq!(table.len(), 4);
        for &id in &ids[2..] {
            assert!(table.get(id).is_some());
        }
    }

    #[test]
    fn a_rebuild_into_too_few_buckets_grows_until_every_key_fits() {
        // The retry of a rebuild whose placement failed: 40 keys cannot fit
        // two buckets, so it must grow (by at least one bucket each time).
        let (mut table, model) = filled(40);
        table.rebuild(1);
        assert_same(&table, &model);
    }

    #[test]
    fn reserve_sizes_the_table_once() {
        let mut table = ChunkTable::new();
        table.reserve(100_000);
        let buckets = table.buckets;
        assert_eq!(buckets, (100_000usize * 20).div_ceil(17).div_ceil(2));
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..100_000 {
            table.insert(record(xorshift(&mut state), "o"));
        }
        assert_eq!(table.buckets, buckets, "no rebuild after the reserve");
        assert_eq!(table.len(), 100_000);
        // Room enough already: nothing to do.
        table.reserve(100);
        assert_eq!(table.buckets, buckets);
    }

    #[test]
    fn a_slot_and_a_bucket_are_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<Bucket>(), 128);
        assert_eq!(std::mem::align_of::<Bucket>(), 128);
    }

    /// A record of a key with none of what makes a key not plain.
    fn plain(change: impl FnOnce(&mut Key)) -> Arc<StoredKey> {
        let mut key = Key::blank(KeyId::from_u64(7), "o", OffsetDateTime::UNIX_EPOCH);
        change(&mut key);
        Arc::new(StoredKey::new(key, KeyHash::placeholder()))
    }

    #[test]
    fn fill_copies_the_record_and_marks_only_plain_keys() {
        let stored = used(9, "o", 12, 5 * S);
        let slot = Slot::fill(Arc::clone(&stored));
        let words = stored.hash.words();
        assert_eq!(slot.id(), 9);
        assert_eq!(slot.hash_head(), [words[0], words[1]]);
        assert_eq!(slot.created_at(), stored.key.created_at);
        assert_eq!((slot.uses(), slot.last_used()), (12, 5 * S));
        assert!(!slot.is_unwritten());
        assert!(Arc::ptr_eq(slot.record(), &stored));
        assert!(!slot.is_plain(), "sample_key has a policy of its own");
        // A last use off the second: bit 0 is not taken for UNWRITTEN.
        let slot = Slot::fill(used(9, "o", 0, 5 * S + 1));
        assert_eq!((slot.last_used(), slot.is_unwritten()), (5 * S, false));
        let slot = Slot::fill(used(9, "o", 0, NOT_YET));
        assert_eq!(slot.last_used(), NOT_YET);

        let slot = Slot::fill(plain(|k| k.epoch = 3));
        assert!(slot.is_plain());
        assert_eq!(slot.epoch(), 3);
        let slot = Slot::fill(plain(|k| k.epoch = (1 << 32) - 1));
        assert!(slot.is_plain());
        assert_eq!(slot.epoch(), (1 << 32) - 1);
        let not_plain: [(&str, Arc<StoredKey>); 7] = [
            ("disabled", plain(|k| k.status = StatusCode::Disabled)),
            ("revoked", plain(|k| k.status = StatusCode::Revoked)),
            (
                "own policy",
                plain(|k| k.set_expiry(Some(ExpiryPolicy::days(3)), Some(k_deadline()))),
            ),
            ("limited", plain(|k| k.set_use_limit(NonZeroU64::new(3)))),
            ("graced", plain(|k| k.set_grace_until(10 * S))),
            ("epoch 2^32", plain(|k| k.epoch = 1 << 32)),
            ("bound", {
                let mut key = Key::blank(KeyId::from_u64(7), "o", OffsetDateTime::UNIX_EPOCH);
                key.bound = true;
                // Not through `StoredKey::new`, whose `tidy` would clear the
                // flag for a key without bindings.
                Arc::new(StoredKey {
                    hash: KeyHash::placeholder(),
                    key,
                })
            }),
        ];
        for (what, stored) in not_plain {
            assert!(!Slot::fill(stored).is_plain(), "{what}");
        }
        // An epoch that does not fit reads as 0 (fail closed), not cut.
        assert_eq!(Slot::fill(plain(|k| k.epoch = (1 << 32) + 5)).epoch(), 0);
    }

    fn k_deadline() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(3)
    }

    #[test]
    fn count_use_sets_unwritten_and_the_second() {
        let mut table = ChunkTable::new();
        table.insert(used(1, "o", 0, NOT_YET));
        let s = slot(&table, 1);
        assert_eq!(
            (s.uses(), s.last_used(), s.is_unwritten()),
            (0, NOT_YET, false)
        );
        s.count_use(10 * S);
        assert_eq!(
            (s.uses(), s.last_used(), s.is_unwritten()),
            (1, 10 * S, true)
        );
        s.count_use(10 * S);
        assert_eq!((s.uses(), s.last_used()), (2, 10 * S));
        s.count_use(11 * S);
        assert_eq!((s.uses(), s.last_used()), (3, 11 * S));
        // A reading behind the last use (another thread's, or a clock that
        // stepped back) counts, and does not move the last use back.
        s.count_use(9 * S);
        assert_eq!(
            (s.uses(), s.last_used(), s.is_unwritten()),
            (4, 11 * S, true)
        );
        // Written: the bit clears. A use in an earlier second still marks
        // the usage unwritten.
        table.insert(used(1, "o", 4, 11 * S));
        let s = slot(&table, 1);
        assert_eq!(
            (s.uses(), s.last_used(), s.is_unwritten()),
            (4, 11 * S, false)
        );
        s.count_use(9 * S);
        assert_eq!(
            (s.uses(), s.last_used(), s.is_unwritten()),
            (5, 11 * S, true)
        );
    }

    #[test]
    fn a_new_version_keeps_the_usage_counted_in_the_slot() {
        let mut table = ChunkTable::new();
        table.insert(used(1, "v1", 5, 10 * S));
        slot(&table, 1).count_use(11 * S);
        slot(&table, 1).count_use(11 * S);
        let state = |t: &ChunkTable| {
            let s = slot(t, 1);
            (
                owner_of(s).to_string(),
                s.uses(),
                s.last_used(),
                s.is_unwritten(),
            )
        };
        // A version copied before those uses: the slot keeps them, unwritten.
        let old = table.insert(used(1, "v2", 5, 10 * S)).unwrap();
        assert_eq!(old.key.owner(), "v1");
        assert_eq!(state(&table), ("v2".into(), 7, 11 * S, true));
        // A version carrying every use: written.
        table.insert(used(1, "v3", 7, 11 * S));
        assert_eq!(state(&table), ("v3".into(), 7, 11 * S, false));
        // A version carrying more: taken, written.
        table.insert(used(1, "v4", 9, 12 * S));
        assert_eq!(state(&table), ("v4".into(), 9, 12 * S, false));
        // A version with less (a host lowering usage): the slot keeps the
        // larger, which is then not written.
        table.insert(used(1, "v5", 1, NOT_YET));
        assert_eq!(state(&table), ("v5".into(), 9, 12 * S, true));
        table.insert(used(1, "v6", 9, 12 * S));
        assert_eq!(state(&table), ("v6".into(), 9, 12 * S, false));
        // Only the last use greater, then only the count.
        table.insert(used(1, "v7", 9, 11 * S));
        assert_eq!(state(&table), ("v7".into(), 9, 12 * S, true));
        table.insert(used(1, "v8", 9, 12 * S));
        table.insert(used(1, "v9", 8, 12 * S));
        assert_eq!(state(&table), ("v9".into(), 9, 12 * S, true));
    }

    #[test]
    fn refresh_raises_the_mirror_and_never_lowers_it() {
        let mut table = ChunkTable::new();
        let stored = used(1, "o", 5, 10 * S);
        table.insert(Arc::clone(&stored));
        let s = slot(&table, 1);
        // Nothing counted: nothing to mark.
        s.refresh();
        assert_eq!(
            (stored.key.uses(), stored.key.last_used_at.get()),
            (5, 10 * S)
        );
        assert!(!stored.usage_changed());
        // Uses counted on the slot reach the mirror, which is marked.
        s.count_use(12 * S);
        s.count_use(12 * S);
        s.refresh();
        assert_eq!(
            (stored.key.uses(), stored.key.last_used_at.get()),
            (7, 12 * S)
        );
        assert!(stored.usage_changed());
        assert!(s.is_unwritten(), "a refresh writes nothing");
        // A mirror above the slot stays where it is.
        stored.key.carry_usage(100, 20 * S);
        s.refresh();
        assert_eq!(
            (stored.key.uses(), stored.key.last_used_at.get()),
            (107, 20 * S)
        );
        assert_eq!(
            (s.uses(), s.last_used()),
            (7, 12 * S),
            "nor is the slot moved"
        );
    }

    /// What a `Verified` holds, and what it read when it verified.
    struct Held {
        chunk: Chunk,
        index: u32,
        id: u64,
        record: Arc<StoredKey>,
        hash: [u64; 2],
        meta: u64,
        created_at: Nanos,
    }

    impl Held {
        fn of(found: SlotRef<'_>) -> Held {
            let slot = found.slot();
            Held {
                chunk: Arc::clone(found.chunk),
                index: found.index,
                id: slot.id(),
                record: Arc::clone(slot.record()),
                hash: slot.hash_head(),
                meta: slot.meta,
                created_at: slot.created_at(),
            }
        }

        /// Asserts the held slot reads as it did, but for its usage.
        fn assert_unchanged(&self) {
            let slot = slot_at(&self.chunk, self.index);
            assert_eq!(slot.id(), self.id);
            assert!(Arc::ptr_eq(slot.record(), &self.record), "key {}", self.id);
            assert_eq!(slot.hash_head(), self.hash);
            assert_eq!(slot.meta, self.meta);
            assert_eq!(slot.created_at(), self.created_at);
        }
    }

    #[test]
    fn a_held_chunk_keeps_its_version_through_writes_moves_and_rebuilds() {
        let mut table = ChunkTable::new();
        for id in 0..200u64 {
            table.insert(record(id, "v1"));
        }
        let held = Held::of(table.get(7).unwrap());
        // Uses counted while the chunk is current show through it: the same
        // chunk.
        slot(&table, 7).count_use(S);
        assert_eq!(slot_at(&held.chunk, held.index).uses(), 1);
        // A new version: the table copies the chunk; the holder keeps v1.
        table.insert(Arc::new(sample_key(7, "v2", "renamed")));
        held.assert_unchanged();
        assert_eq!(owner_of(slot(&table, 7)), "v2");
        assert!(!Arc::ptr_eq(table.get(7).unwrap().chunk, &held.chunk));
        assert_eq!(slot(&table, 7).uses(), 1, "the copy carries the use");
        // Uses counted on the current chunk do not reach the stale one.
        slot(&table, 7).count_use(2 * S);
        assert_eq!(slot_at(&held.chunk, held.index).uses(), 1);
        assert_eq!(slot(&table, 7).uses(), 2);
        // Removal, kicks and rebuilds: still v1.
        let again = Held::of(table.get(7).unwrap());
        table.remove(7);
        again.assert_unchanged();
        for id in 200..5_000u64 {
            table.insert(record(id, "v1"));
        }
        for id in 0..4_900u64 {
            table.remove(id);
        }
        held.assert_unchanged();
        again.assert_unchanged();
        assert_eq!(owner_of(slot_at(&again.chunk, again.index)), "v2");
    }

    #[test]
    fn a_rebuild_carries_usage_exactly() {
        let mut table = ChunkTable::new();
        for id in 0..500u64 {
            table.insert(used(id, "o", id, NOT_YET));
        }
        for id in (0..500u64).step_by(3) {
            slot(&table, id).count_use((id as i64 % 7) * S);
        }
        // Some chunks held (copied out), the others moved out.
        let held: Vec<Held> = (0..500u64)
            .step_by(50)
            .map(|id| Held::of(table.get(id).unwrap()))
            .collect();
        let raw = |t: &ChunkTable| -> HashMap<u64, (u64, i64)> {
            t.iter()
                .map(|s| {
                    let last = s.last_used.load(Ordering::Relaxed);
                    (s.id(), (s.uses(), last))
                })
                .collect()
        };
        let before = raw(&table);
        assert!(before.values().any(|&(_, last)| last & UNWRITTEN != 0));
        assert!(before.values().any(|&(_, last)| last & UNWRITTEN == 0));
        let seed = table.seed;
        table.rebuild(table.buckets * 3);
        assert_ne!(table.seed, seed, "a rebuild draws a new seed");
        assert_eq!(raw(&table), before);
        for h in &held {
            h.assert_unchanged();
        }
    }

    /// An operation of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        /// A new version of `id`, or a new key, carrying this usage.
        Insert(u64, u64, Nanos),
        /// A new key with the next sequential id.
        InsertNext,
        /// A new key whose first bucket is bucket 0 or 1 of the table now.
        InsertCrowded,
        Remove(u64),
        /// Removes up to this many keys, the lowest ids first.
        RemoveMany(usize),
        Get(u64),
        /// Counts a use of `id` in this second.
        Use(u64, i64),
        /// Holds the chunk of `id`'s slot, as a `Verified` would.
        Hold(u64),
        /// Drops a held chunk.
        Release(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let id = || prop_oneof![3 => 0u64..40, 1 => any::<u64>()];
        let last = prop_oneof![Just(NOT_YET), (0i64..60).prop_map(|s| s * S)];
        let op = prop_oneof![
            4 => (id(), 0u64..30, last).prop_map(|(id, uses, last)| Op::Insert(id, uses, last)),
            3 => Just(Op::InsertNext),
            2 => Just(Op::InsertCrowded),
            2 => id().prop_map(Op::Remove),
            1 => (0usize..100).prop_map(Op::RemoveMany),
            1 => id().prop_map(Op::Get),
            4 => (id(), 0i64..60).prop_map(|(id, s)| Op::Use(id, s)),
            1 => id().prop_map(Op::Hold),
            1 => any::<usize>().prop_map(Op::Release),
        ];
        proptest::collection::vec(op, 1..400)
    }

    /// A model key: its version's owner, its use count and last use.
    #[derive(Debug, Clone, PartialEq)]
    struct Model {
        owner: String,
        uses: u64,
        last: Nanos,
    }

    fn run(ops: Vec<Op>) {
        let mut table = ChunkTable::new();
        let mut model: HashMap<u64, Model> = HashMap::new();
        let mut held: Vec<Held> = Vec::new();
        let mut version = 0u64;
        let mut next_id = 1_000u64;
        let mut crowded = 1u64 << 40;
        for op in ops {
            version += 1;
            let owner = format!("v{version}");
            let insert = match op {
                Op::Insert(id, uses, last) => Some((id, uses, last)),
                Op::InsertNext => {
                    next_id += 1;
                    Some((next_id, 0, NOT_YET))
                }
                Op::InsertCrowded => loop {
                    crowded += 1;
                    if table.buckets_of(crowded).0 < 2 {
                        break Some((crowded, 0, NOT_YET));
                    }
                },
                _ => None,
            };
            match op {
                Op::Insert(..) | Op::InsertNext | Op::InsertCrowded => {
                    let (id, uses, last) = insert.expect("an insert");
                    let old = table.insert(used(id, &owner, uses, last));
                    let next = match model.get(&id) {
                        Some(m) => Model {
                            owner: owner.clone(),
                            uses: m.uses.max(uses),
                            last: m.last.max(last),
                        },
                        None => Model { owner, uses, last },
                    };
                    let expected = model.insert(id, next);
                    assert_eq!(
                        old.map(|r| r.key.owner().to_string()),
                        expected.map(|m| m.owner)
                    );
                }
                Op::Remove(id) => {
                    let removed = table.remove(id).map(|r| r.key.owner().to_string());
                    assert_eq!(removed, model.remove(&id).map(|m| m.owner));
                }
                Op::RemoveMany(n) => {
                    let mut ids: Vec<u64> = model.keys().copied().collect();
                    ids.sort_unstable();
                    for id in ids.into_iter().take(n) {
                        assert!(table.remove(id).is_some());
                        model.remove(&id);
                    }
                }
                Op::Get(id) => {
                    let found = table.get(id).map(|r| owner_of(r.slot()).to_string());
                    assert_eq!(found, model.get(&id).map(|m| m.owner.clone()));
                }
                Op::Use(id, second) => match (table.get(id), model.get_mut(&id)) {
                    (Some(found), Some(m)) => {
                        found.slot().count_use(second * S);
                        m.uses += 1;
                        m.last = m.last.max(second * S);
                    }
                    (None, None) => {}
                    (found, m) => panic!("{id}: table {}, model {m:?}", found.is_some()),
                },
                Op::Hold(id) => {
                    if let Some(found) = table.get(id) {
                        held.push(Held::of(found));
                    }
                }
                Op::Release(n) => {
                    if !held.is_empty() {
                        held.swap_remove(n % held.len());
                    }
                }
            }
            // After every operation: the model's keys, counts and last uses,
            // at most 90% full, and every held chunk as it was.
            assert_eq!(table.len(), model.len());
            let mut ids: Vec<u64> = table.iter().map(Slot::id).collect();
            ids.sort_unstable();
            let mut expected: Vec<u64> = model.keys().copied().collect();
            expected.sort_unstable();
            assert_eq!(ids, expected);
            for (&id, m) in &model {
                let s = slot(&table, id);
                assert_eq!(owner_of(s), m.owner);
                assert_eq!((s.uses(), s.last_used()), (m.uses, m.last), "key {id}");
            }
            assert!(table.len() * FULL.1 <= table.slots() * FULL.0);
            for h in &held {
                h.assert_unchanged();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_operations_match_a_hash_map(ops in ops()) {
            run(ops);
        }
    }

    /// A growth reuses the table's whole chunks that nobody holds and
    /// allocates only the chunks it adds; a chunk a `Verified` holds is
    /// not reused (its holder keeps reading it).
    #[test]
    fn a_rebuild_reuses_the_chunks_nobody_holds() {
        let mut table = ChunkTable::new();
        let mut id = 1u64;
        while table.chunks.len() < 4 || table.chunks.iter().any(|c| c.len() != CHUNK) {
            table.insert(record(id, "o"));
            id += 1;
        }
        let held = Arc::clone(&table.chunks[0]);
        let before: Vec<*const Bucket> = table.chunks.iter().map(|c| c.as_ptr()).collect();
        let buckets = table.buckets;
        while table.buckets == buckets {
            table.insert(record(id, "o"));
            id += 1;
        }
        let after: Vec<*const Bucket> = table.chunks.iter().map(|c| c.as_ptr()).collect();
        assert!(!after.contains(&before[0]), "the held chunk was reused");
        for (n, old) in before.iter().enumerate().skip(1) {
            assert!(after.contains(old), "chunk {n} was not reused");
        }
        assert_eq!(table.len() as u64, id - 1);
        drop(held);
    }
}
