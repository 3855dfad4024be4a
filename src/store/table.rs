//! [`IdTable`]: the map from key id to record behind each
//! [`MemoryStore`](super::MemoryStore) shard.
//!
//! A bucketized cuckoo table. Every id has two candidate buckets, each one
//! 64-byte cache line of four slots holding the id inline next to its
//! record's `Arc`. A lookup computes both buckets from the id alone and reads
//! both lines at once (the loads do not depend on each other), so at a
//! million keys it costs one memory access before the record, where a
//! `HashSet` of records costs two (its control bytes, then the slot) plus a
//! pointer chase to compare ids. It also answers an unknown id after those
//! same two lines, at any load.
//!
//! Inserts place a key in a free slot of either bucket or move a resident key
//! to its other bucket (a bounded random walk); the table grows by 5/4 when
//! it is 90% full or a walk fails, so a table filled by inserts is 72-90%
//! full (16 bytes per slot: 18-22 bytes per key), or less after a walk
//! failed early. Removals that leave it under a quarter full (22.5%)
//! rebuild it 60% full, so mass deletion gives the memory back. A table
//! never fills more than 90% of its slots. Bucket indices come from the id
//! mixed with a per-table random seed, so ids chosen by an importer cannot
//! be aimed at one bucket, and a rebuild draws a new seed.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use super::StoredKey;

/// Slots per bucket: four 16-byte slots fill one cache line.
const WAYS: usize = 4;

/// Moves a walk may make before the table grows instead.
const MAX_KICKS: usize = 128;

/// A removal that leaves the table less full than this fraction (9/40,
/// a quarter of the 90% at which it grows) rebuilds it...
const SHRINK_BELOW: (usize, usize) = (9, 40);

/// ...with room for this fraction of its slots filled (3/5): far enough from
/// both ends that a run of inserts or removals cannot rebuild it each time.
const REBUILD_FULL: (usize, usize) = (3, 5);

/// Odd 64-bit constants for the multiply mixes (the golden ratio's and
/// wyhash's).
const MIX: [u64; 4] = [
    0x9E37_79B9_7F4A_7C15,
    0xD6E8_FEB8_6659_FD93,
    0xA076_1D64_78BD_642F,
    0xE703_7ED1_A0B4_28DB,
];

/// One cache line: the ids first, then their records.
#[repr(C, align(64))]
#[derive(Default)]
struct Bucket {
    ids: [u64; WAYS],
    keys: [Option<Arc<StoredKey>>; WAYS],
}

impl Bucket {
    /// The slots holding `id`, as a bit mask, with no branch between the
    /// comparisons (so a lookup reads both of its buckets in parallel).
    #[inline]
    fn matches(&self, id: u64) -> u32 {
        let mut mask = 0;
        for k in 0..WAYS {
            mask |= u32::from((self.ids[k] == id) & self.keys[k].is_some()) << k;
        }
        mask
    }

    fn free_slot(&self) -> Option<usize> {
        self.keys.iter().position(Option::is_none)
    }
}

/// A key waiting for a slot.
type Entry = (u64, Arc<StoredKey>);

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

/// A map from id to record, with the id stored inline (see the module docs).
pub(super) struct IdTable {
    buckets: Box<[Bucket]>,
    len: usize,
    seed: u64,
    /// Xorshift state choosing which resident a walk moves.
    walk: u64,
}

impl IdTable {
    /// An empty table of one bucket.
    pub(super) fn new() -> IdTable {
        IdTable::with_buckets(1, Seeds::draw())
    }

    fn with_buckets(count: usize, seeds: Seeds) -> IdTable {
        IdTable {
            buckets: (0..count.max(1)).map(|_| Bucket::default()).collect(),
            len: 0,
            seed: seeds.mix,
            walk: seeds.walk | 1,
        }
    }

    /// How many keys the table holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The two buckets of `id`: high halves of 128-bit products of the mixed
    /// id with the bucket count, i.e. uniform over any count.
    #[inline]
    fn buckets_of(&self, id: u64) -> (usize, usize) {
        let h1 = fold_mul(id ^ self.seed, MIX[0]);
        let h2 = fold_mul(h1 ^ MIX[1], MIX[2]);
        let count = self.buckets.len() as u64;
        let spread = |h: u64| ((u128::from(h) * u128::from(count)) >> 64) as usize;
        (spread(h1), spread(h2))
    }

    /// The record of `id`.
    #[inline]
    pub(super) fn get(&self, id: u64) -> Option<&Arc<StoredKey>> {
        let (i, j) = self.buckets_of(id);
        let (first, second) = (&self.buckets[i], &self.buckets[j]);
        let (in_first, in_second) = (first.matches(id), second.matches(id));
        if in_first != 0 {
            first.keys[in_first.trailing_zeros() as usize].as_ref()
        } else if in_second != 0 {
            second.keys[in_second.trailing_zeros() as usize].as_ref()
        } else {
            None
        }
    }

    /// A record of another key from `id`'s two buckets, if they hold any:
    /// what a lookup of an unknown id reads in place of a record (see
    /// `MemoryStore::inspect`). Its buckets are the ones `get` just read.
    #[inline]
    pub(super) fn neighbour(&self, id: u64) -> Option<&Arc<StoredKey>> {
        let (i, j) = self.buckets_of(id);
        self.buckets[i]
            .keys
            .iter()
            .chain(&self.buckets[j].keys)
            .flatten()
            .next()
    }

    fn slot_mut(&mut self, id: u64) -> Option<&mut Option<Arc<StoredKey>>> {
        let (i, j) = self.buckets_of(id);
        for b in [i, j] {
            let found = self.buckets[b].matches(id);
            if found != 0 {
                return Some(&mut self.buckets[b].keys[found.trailing_zeros() as usize]);
            }
        }
        None
    }

    /// Inserts `key` under its own id, returning the record it replaced.
    pub(super) fn insert(&mut self, key: Arc<StoredKey>) -> Option<Arc<StoredKey>> {
        let id = key.id().as_u64();
        if let Some(slot) = self.slot_mut(id) {
            return slot.replace(key);
        }
        if (self.len + 1) * 10 > self.buckets.len() * WAYS * 9 {
            self.grow();
        }
        let mut homeless = (id, key);
        while let Err(entry) = self.place(homeless) {
            // Every other key is still placed; only `entry` is waiting.
            homeless = entry;
            self.grow();
        }
        self.len += 1;
        None
    }

    /// Removes and returns the record of `id`.
    pub(super) fn remove(&mut self, id: u64) -> Option<Arc<StoredKey>> {
        let removed = self.slot_mut(id)?.take();
        self.len -= 1;
        if self.buckets.len() > 1 && self.len * SHRINK_BELOW.1 < self.slots() * SHRINK_BELOW.0 {
            self.shrink();
        }
        removed
    }

    fn slots(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Every record, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<StoredKey>> {
        self.buckets.iter().flat_map(|b| b.keys.iter().flatten())
    }

    /// Puts an id that is not in the table into a free slot, moving
    /// residents to their other bucket as needed. On failure every key is
    /// still in the table except the returned one (not always the one
    /// passed in).
    fn place(&mut self, (mut id, mut key): Entry) -> Result<(), Entry> {
        let (i, j) = self.buckets_of(id);
        for b in [i, j] {
            if let Some(k) = self.buckets[b].free_slot() {
                self.set(b, k, id, key);
                return Ok(());
            }
        }
        let mut bucket = if self.step() & 1 == 1 { j } else { i };
        for _ in 0..MAX_KICKS {
            // Swap the newcomer with a random resident of a full bucket,
            // then try the resident's other bucket.
            let k = (self.step() % WAYS as u64) as usize;
            let slot = &mut self.buckets[bucket];
            std::mem::swap(&mut slot.ids[k], &mut id);
            key = match slot.keys[k].replace(key) {
                Some(resident) => resident,
                None => return Ok(()), // unreachable: the bucket was full
            };
            let (a, b) = self.buckets_of(id);
            bucket = if a == bucket { b } else { a };
            if let Some(k) = self.buckets[bucket].free_slot() {
                self.set(bucket, k, id, key);
                return Ok(());
            }
        }
        Err((id, key))
    }

    fn set(&mut self, bucket: usize, slot: usize, id: u64, key: Arc<StoredKey>) {
        let b = &mut self.buckets[bucket];
        b.ids[slot] = id;
        b.keys[slot] = Some(key);
    }

    fn step(&mut self) -> u64 {
        self.walk ^= self.walk << 13;
        self.walk ^= self.walk >> 7;
        self.walk ^= self.walk << 17;
        self.walk
    }

    /// Rebuilds into 5/4 as many buckets (at least one more).
    fn grow(&mut self) {
        let count = self.buckets.len();
        self.rebuild((count + count / 4).max(count + 1));
    }

    /// Rebuilds into as many buckets as hold the keys 60% full.
    fn shrink(&mut self) {
        let slots = (self.len * REBUILD_FULL.1).div_ceil(REBUILD_FULL.0);
        self.rebuild(slots.div_ceil(WAYS).max(1));
    }

    /// Rebuilds into `count` buckets with a new seed; grows by 5/4 and
    /// tries again if a key finds no place, so no key is lost. The seeds
    /// are drawn before any key leaves the table, and nothing after that
    /// can panic (an allocation failure aborts), so a panic cannot leave
    /// the shard without its keys.
    fn rebuild(&mut self, mut count: usize) {
        let mut seeds = Seeds::draw();
        let mut pending: Vec<Entry> = self.drain();
        loop {
            let mut table = IdTable::with_buckets(count, seeds);
            seeds = seeds.next();
            let mut left = Vec::new();
            for entry in pending.drain(..) {
                match table.place(entry) {
                    Ok(()) => table.len += 1,
                    Err(entry) => left.push(entry),
                }
            }
            if left.is_empty() {
                *self = table;
                return;
            }
            pending = table.drain();
            pending.append(&mut left);
            count = (count + count / 4).max(count + 1);
        }
    }

    fn drain(&mut self) -> Vec<Entry> {
        let mut out = Vec::with_capacity(self.len);
        for bucket in self.buckets.iter_mut() {
            for k in 0..WAYS {
                if let Some(key) = bucket.keys[k].take() {
                    out.push((bucket.ids[k], key));
                }
            }
        }
        self.len = 0;
        out
    }
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

    use time::OffsetDateTime;

    use super::*;
    use crate::hash::KeyHash;
    use crate::key::Key;
    use crate::token::KeyId;

    fn record(id: u64, owner: &str) -> Arc<StoredKey> {
        let key = Key::blank(KeyId::from_u64(id), owner, OffsetDateTime::UNIX_EPOCH);
        Arc::new(StoredKey::new(key, KeyHash::placeholder()))
    }

    /// Asserts the table holds exactly the model's keys, each under its id.
    fn assert_same(table: &IdTable, model: &HashMap<u64, String>) {
        assert_eq!(table.len(), model.len());
        assert_eq!(table.iter().count(), model.len());
        for (&id, owner) in model {
            let found = table.get(id).expect("every key of the model is found");
            assert_eq!(found.id().as_u64(), id);
            assert_eq!(found.key().owner(), owner.as_str());
        }
        for entry in table.iter() {
            assert!(
                model.contains_key(&entry.id().as_u64()),
                "no key the model lacks"
            );
        }
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        let mut table = IdTable::new();
        assert_eq!(table.len(), 0);
        assert!(table.get(0).is_none());
        assert!(table.get(u64::MAX).is_none());
        assert!(table.remove(7).is_none());
        assert_eq!(table.iter().count(), 0);
    }

    #[test]
    fn id_zero_is_an_ordinary_id() {
        // Empty slots hold id 0 too: they must not answer for it.
        let mut table = IdTable::new();
        assert!(table.get(0).is_none());
        table.insert(record(0, "zero"));
        assert_eq!(table.get(0).unwrap().key().owner(), "zero");
        assert_eq!(table.remove(0).unwrap().key().owner(), "zero");
        assert!(table.get(0).is_none());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn an_unknown_id_has_a_neighbour_from_its_own_buckets() {
        // What `MemoryStore::inspect` reads for an unknown id: a record of
        // the two buckets the lookup read, never one from elsewhere.
        let mut table = IdTable::new();
        assert!(table.neighbour(5).is_none(), "an empty table has none");
        for id in 0..10_000u64 {
            table.insert(record(id, "o"));
        }
        let mut found = 0;
        for unknown in 10_000..12_000u64 {
            assert!(table.get(unknown).is_none());
            let (i, j) = table.buckets_of(unknown);
            if let Some(other) = table.neighbour(unknown) {
                let other = other.id().as_u64();
                let held = |b: usize| table.buckets[b].matches(other) != 0;
                assert!(held(i) || held(j), "{other} is not in {unknown}'s buckets");
                found += 1;
            }
        }
        // At 70-90% full, a pair of 8-slot buckets is nearly never empty.
        assert!(found >= 1_990, "only {found} of 2,000 unknown ids had one");
    }

    #[test]
    fn insert_replaces_a_record_with_the_same_id() {
        let mut table = IdTable::new();
        assert!(table.insert(record(42, "old")).is_none());
        let old = table
            .insert(record(42, "new"))
            .expect("the old record is returned");
        assert_eq!(old.key().owner(), "old");
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(42).unwrap().key().owner(), "new");
    }

    #[test]
    fn growth_keeps_every_key_and_the_load_between_bounds() {
        let mut table = IdTable::new();
        let mut model = HashMap::new();
        // Sequential ids: the worst structure a mixer could meet.
        for id in 0..20_000u64 {
            table.insert(record(id, "o"));
            model.insert(id, "o".to_string());
            let slots = table.buckets.len() * WAYS;
            assert!(table.len() * 10 <= slots * 9, "at most 90% full");
        }
        assert_same(&table, &model);
        let load = table.len() as f64 / (table.buckets.len() * WAYS) as f64;
        assert!(load > 0.70, "grown by 5/4 only when full: load {load}");
    }

    #[test]
    fn mass_removal_gives_the_memory_back_and_keeps_every_key() {
        let mut table = IdTable::new();
        let mut model = HashMap::new();
        for id in 0..20_000u64 {
            table.insert(record(id, "o"));
            model.insert(id, "o".to_string());
        }
        let peak = table.buckets.len();
        let mut rebuilt = 0;
        // Remove all but 50 keys, checking the load after every removal.
        for id in 50..20_000u64 {
            let before = table.buckets.len();
            assert_eq!(table.remove(id).unwrap().id().as_u64(), id);
            model.remove(&id);
            if table.buckets.len() != before {
                rebuilt += 1;
                let load = table.len() as f64 / table.slots() as f64;
                assert!((0.5..=0.6).contains(&load), "rebuilt {load} full");
            }
            assert!(
                table.buckets.len() == 1 || table.len() * 40 >= table.slots() * 9,
                "{} keys in {} slots",
                table.len(),
                table.slots()
            );
        }
        assert_same(&table, &model);
        assert!(
            table.buckets.len() * 100 < peak,
            "{} of {peak} buckets kept",
            table.buckets.len()
        );
        // Each rebuild shrinks by more than half, so few happen.
        assert!((5..=12).contains(&rebuilt), "{rebuilt} rebuilds");
        // Down to nothing, then back up.
        for id in 0..50u64 {
            table.remove(id).unwrap();
            model.remove(&id);
        }
        assert_eq!(table.buckets.len(), 1);
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
        let mut table = IdTable::with_buckets(2, Seeds::draw());
        let mut placed = Vec::new();
        let mut next = 1u64;
        let homeless = loop {
            let entry = (next, record(next, "o"));
            next += 1;
            match table.place(entry) {
                Ok(()) => {
                    table.len += 1;
                    placed.push(next - 1);
                }
                Err(entry) => break entry,
            }
        };
        // The one key left out is returned, and every other key inserted so
        // far is still in the table.
        assert!(table.len() <= WAYS * 2);
        let mut all: Vec<u64> = table.iter().map(|e| e.id().as_u64()).collect();
        all.push(homeless.0);
        all.sort_unstable();
        let mut expected = placed.clone();
        expected.push(next - 1);
        expected.sort_unstable();
        assert_eq!(all, expected);
        // insert() then grows and places it.
        table.insert(homeless.1);
        assert_eq!(table.len(), expected.len());
        for id in expected {
            assert!(table.get(id).is_some(), "key {id} kept");
        }
    }

    #[test]
    fn random_operations_match_a_hash_map() {
        let mut table = IdTable::new();
        let mut model: HashMap<u64, String> = HashMap::new();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..60_000u32 {
            let r = next();
            // Ids from a small range, so that replacements and removals of
            // present keys are frequent.
            let id = next() % 8_192;
            let owner = format!("o{round}");
            match r % 8 {
                0..=3 => {
                    let old = table.insert(record(id, &owner));
                    let expected = model.insert(id, owner);
                    assert_eq!(old.map(|e| e.key().owner().to_string()), expected);
                }
                4..=5 => {
                    let removed = table.remove(id);
                    let expected = model.remove(&id);
                    assert_eq!(removed.map(|e| e.key().owner().to_string()), expected);
                }
                _ => {
                    let found = table.get(id).map(|e| e.key().owner().to_string());
                    assert_eq!(found.as_ref(), model.get(&id));
                }
            }
        }
        assert_same(&table, &model);
    }

    /// Where each key sits: (bucket, slot, id).
    fn positions(table: &IdTable) -> Vec<(usize, usize, u64)> {
        let mut out = Vec::new();
        for (b, bucket) in table.buckets.iter().enumerate() {
            for k in 0..WAYS {
                if bucket.keys[k].is_some() {
                    out.push((b, k, bucket.ids[k]));
                }
            }
        }
        out
    }

    #[test]
    fn an_insert_with_room_in_its_buckets_moves_no_resident() {
        // 150 keys in 256 slots: never grown, and most inserts find a free
        // slot in one of their buckets; those take it and move nobody.
        let mut table = IdTable::with_buckets(64, Seeds::draw());
        let mut with_room = 0;
        for id in 0..150u64 {
            let (i, j) = table.buckets_of(id);
            let room =
                table.buckets[i].free_slot().is_some() || table.buckets[j].free_slot().is_some();
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
        assert_eq!(table.buckets.len(), 64);
        assert!(with_room >= 100, "only {with_room} inserts had room");
    }

    #[test]
    fn the_walk_state_is_never_zero() {
        // A xorshift state of zero stays zero: every walk would then start
        // in the same bucket and move the same slot.
        for walk in [0, 1, 2, u64::MAX - 1] {
            let mut table = IdTable::with_buckets(1, Seeds { mix: 0, walk });
            assert_ne!(table.step(), 0, "walk seed {walk}");
        }
    }

    #[test]
    fn the_table_grows_past_90_percent_full_and_shrinks_under_22_5() {
        // 1,000 buckets, 4,000 slots: 3,600 keys are exactly 90% full,
        // and stay (a walk at 90% of this size does not fail).
        let mut table = IdTable::with_buckets(1_000, Seeds::draw());
        for id in 0..3_600u64 {
            table.insert(record(id, "o"));
        }
        assert_eq!(table.buckets.len(), 1_000, "exactly 90% full does not grow");
        table.insert(record(3_600, "o"));
        assert_eq!(table.buckets.len(), 1_250, "one more grows by 5/4");
        // 10 buckets, 40 slots: 9 keys are exactly 22.5% full, and stay.
        let mut table = IdTable::with_buckets(10, Seeds::draw());
        for id in 0..10u64 {
            table.insert(record(id, "o"));
        }
        table.remove(0).unwrap();
        assert_eq!(
            table.buckets.len(),
            10,
            "exactly 22.5% full does not shrink"
        );
        table.remove(1).unwrap();
        // 8 keys 60% full: ceil(8 * 5 / 3) = 14 slots, 4 buckets.
        assert_eq!(table.buckets.len(), 4, "under 22.5% shrinks");
        assert_eq!(table.len(), 8);
    }

    #[test]
    fn a_rebuild_into_too_few_buckets_grows_until_every_key_fits() {
        // The retry of a rebuild whose placement failed: 40 keys cannot fit
        // one bucket, so it must grow (by at least one bucket each time).
        let mut table = IdTable::new();
        let mut model = HashMap::new();
        for id in 0..40u64 {
            table.insert(record(id, "o"));
            model.insert(id, "o".to_string());
        }
        table.rebuild(1);
        assert_same(&table, &model);
    }

    #[test]
    fn a_bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
        assert_eq!(std::mem::align_of::<Bucket>(), 64);
    }
}
