//! [`MemoryStore`]: records in 64 independently locked shards.
//!
//! Sharding keeps a writer (issue, revoke) from stalling every reader: it
//! blocks only the 1/64 of lookups that fall in its shard. Each shard sits on
//! its own cache lines so that readers of different shards never contend.
//!
//! Each shard is a [`ChunkTable`]: a cuckoo table of 64-byte slots, each
//! holding a key's id, the first half of its hash, the fields `verify`
//! reads for a plain key, its usage, and its record; so `verify` of a plain
//! key reads one pair of buckets (in parallel) and no record. Ids are 64
//! random bits from the OS CSPRNG, so the shard is simply bits 32..38 of
//! the id; inside a shard the id is mixed with a per-table random seed.
//!
//! **Usage is kept in the slot.** `verify` counts a use there, under the
//! shard's read lock. Each record's own count and last use are a mirror,
//! raised to the slot's whenever the store lends the record outside
//! `verify` (`lookup`, `list`, `snapshot`) and by [`Verified::key`]
//! (crate::Verified::key): so every reader sees live usage. A write of a
//! new version keeps the larger of the slot's usage and the version's, so a
//! write never lowers a key's usage in this store.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::LentAs;
use super::chunks::ChunkTable;
use super::{Change, KeyStore, Lent, RingSettings, StoreError, StoredKey, check_batch};
use crate::token::KeyId;

const SHARDS: usize = 64;

/// A fast in-memory [`KeyStore`]: the default for tests and single-process
/// services. Nothing survives the process.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    settings: RwLock<Option<RingSettings>>,
    /// Serialises batches, so each is checked whole, then applied with no
    /// other batch's change between its own. A reader may still see a
    /// batch half applied: each record swaps under its own shard's lock.
    batches: Mutex<()>,
}

#[repr(align(128))]
struct Shard(RwLock<ChunkTable>);

impl Default for Shard {
    fn default() -> Self {
        Shard(RwLock::new(ChunkTable::new()))
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            settings: RwLock::new(None),
            batches: Mutex::new(()),
        }
    }

    #[inline]
    fn shard(&self, id: KeyId) -> &Shard {
        // Bits 32..38 of the random id; inside the shard the table mixes
        // the whole id with its own seed.
        &self.shards[(id.as_u64() >> 32) as usize % SHARDS]
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    // A panic while holding a shard lock cannot leave a table half-updated
    // (each write is one insert or remove, and a rebuild draws its seeds
    // before it takes any key out), so a poisoned lock is safe to use.
    #[inline]
    fn read(&self) -> RwLockReadGuard<'_, ChunkTable> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, ChunkTable> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    /// Prints the number of keys, never their records.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("keys", &self.len())
            .finish()
    }
}

impl KeyStore for MemoryStore {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        let table = self.shard(id).read();
        let at = table.get(id.as_u64())?;
        let slot = at.slot();
        slot.refresh();
        Some(Arc::clone(slot.record()))
    }

    /// Lends the key's table slot, under its shard's read lock. An unknown
    /// id costs what a stored one does: the lookup reads both candidate
    /// buckets either way, and `verify` compares the digest with the slot's
    /// hash, on a line the lookup loaded, or with a constant.
    #[inline]
    fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<Lent<'_>>)) {
        let table = self.shard(id).read();
        f(table.get(id.as_u64()).map(|at| Lent(LentAs::Slot(at))));
    }

    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(
                shard
                    .read()
                    .iter()
                    .filter(|slot| owner.is_none_or(|o| slot.record().key.owner() == o))
                    .map(|slot| {
                        slot.refresh();
                        Arc::clone(slot.record())
                    }),
            );
        }
        Ok(out)
    }

    /// Lists under the lock that serialises batches, so that no batch is
    /// half applied (see [`KeyStore::snapshot`]); writes wait meanwhile.
    fn snapshot(&self) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        let _batch = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        self.list(None)
    }

    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        Ok(self
            .settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let _batch = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        check_batch(&changes, |id| self.lookup(id), || self.load_settings())?;
        for change in changes {
            self.apply_checked(change);
        }
        Ok(())
    }
}

impl MemoryStore {
    /// Sets the settings exactly as given, none included (an import
    /// replacing the store).
    pub(crate) fn set_settings(&self, settings: Option<RingSettings>) {
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = settings;
    }

    /// Puts a record already in its `Arc` (a store being loaded: the
    /// allocation happens on the thread that decoded it).
    pub(crate) fn put_shared(&self, entry: Arc<StoredKey>) {
        let id = entry.id();
        entry.key.kept.set();
        self.shard(id).write().insert(entry);
    }

    /// Makes room for `additional` more keys spread over the shards, so that
    /// loading them rebuilds no table (a `FileStore` opening its file).
    pub(crate) fn reserve(&self, additional: usize) {
        // Random ids spread evenly over the shards, give or take about the
        // square root of a shard's share (125 at a million keys): a margin
        // of two of those, so that few shards grow, and not more, so that
        // the tables stay as full as growth keeps them.
        let share = additional / SHARDS;
        let each = share + share / 32 + 16;
        for shard in self.shards.iter() {
            shard.write().reserve(each);
        }
    }

    /// Rebuilds each shard's table that a [`reserve`](Self::reserve) left
    /// under 80% full to 85% full.
    pub(crate) fn fit(&self) {
        for shard in self.shards.iter() {
            shard.write().fit();
        }
    }

    /// Applies one change that [`check_batch`] accepted.
    pub(crate) fn apply_checked(&self, change: Change) {
        match change {
            Change::Insert(entry)
            | Change::Replace(entry)
            | Change::ReplaceIf { next: entry, .. } => {
                let id = entry.id();
                let entry = Arc::new(entry);
                entry.key.kept.set();
                self.shard(id).write().insert(entry);
            }
            Change::Remove(id) => {
                self.shard(id).write().remove(id.as_u64());
            }
            Change::Settings(settings) | Change::SettingsIf { next: settings, .. } => {
                let mut current = self
                    .settings
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                *current = Some(settings.written_over(current.as_ref()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::sample_key;

    /// `len` and `is_empty` count the keys of every shard, and `Debug`
    /// prints that count (and nothing of the records).
    #[test]
    fn len_is_empty_and_debug_count_the_keys_of_every_shard() {
        let store = MemoryStore::new();
        assert_eq!((store.len(), store.is_empty()), (0, true));
        assert_eq!(format!("{store:?}"), "MemoryStore { keys: 0 }");
        // Ids in three shards, two of them in one.
        for id in [1, 2 << 32, 3 << 32, (3 << 32) | 1] {
            store.insert(sample_key(id, "alice", "k")).unwrap();
        }
        assert_eq!((store.len(), store.is_empty()), (4, false));
        assert_eq!(format!("{store:?}"), "MemoryStore { keys: 4 }");
        store.remove(KeyId::from_u64(2 << 32)).unwrap();
        assert_eq!((store.len(), store.is_empty()), (3, false));
    }

    /// A key's shard is bits 32..38 of its id: ids that differ only there
    /// land one in each shard, so a writer blocks 1/64 of the readers,
    /// not all of them; the bits above and below do not move a key.
    #[test]
    fn a_key_s_shard_is_bits_32_to_38_of_its_id() {
        let store = MemoryStore::new();
        for shard in 0..SHARDS as u64 {
            let id = (0xA5A5 << 48) | (shard << 32) | 0xDEAD_BEEF;
            store.insert(sample_key(id, "alice", "k")).unwrap();
        }
        for (i, shard) in store.shards.iter().enumerate() {
            let ids: Vec<u64> = shard.read().iter().map(|slot| slot.id()).collect();
            assert_eq!(ids.len(), 1, "shard {i} holds {ids:x?}");
            assert_eq!((ids[0] >> 32) & 63, i as u64, "shard {i}");
        }
    }
}
