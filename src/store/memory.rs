//! [`MemoryStore`]: records in 64 independently locked shards.
//!
//! Sharding keeps a writer (issue, revoke) from stalling every reader: it
//! blocks only the 1/64 of lookups that fall in its shard. Each shard sits on
//! its own cache lines so that readers of different shards never contend.
//!
//! Ids are 64 random bits from the OS CSPRNG, so the map does not need a
//! keyed (DoS-resistant) hash: an attacker cannot choose the ids a ring
//! stores. A multiply spreads the id over the hash word; the shard is chosen
//! from other id bits than those the map indexes buckets by.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Change, KeyStore, RingSettings, StoreError, StoredKey, check_batch, merge_settings};
use crate::token::KeyId;

const SHARDS: usize = 64;

/// A fast in-memory [`KeyStore`]: the default for tests and single-process
/// services. Nothing survives the process.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    settings: RwLock<Option<RingSettings>>,
    /// Serialises batches, so each is checked and applied as one.
    batches: Mutex<()>,
}

#[repr(align(128))]
#[derive(Default)]
struct Shard(RwLock<Map>);

/// A set of records keyed by the id inside them: an 8-byte slot per key
/// instead of 16 for a map from id to record. A probe compares tags first,
/// so the record is read only on a likely match, and `verify` reads it
/// anyway.
type Map = HashSet<ById, BuildHasherDefault<IdHasher>>;

/// A record, hashed and compared by its id.
struct ById(Arc<StoredKey>);

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.id.as_u64().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.key.id == other.0.key.id
    }
}

impl Eq for ById {}

impl Borrow<u64> for ById {
    fn borrow(&self) -> &u64 {
        self.0.key.id.raw()
    }
}

/// Hashes a random 64-bit id by one multiply (see the module docs).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 ids are hashed; fold anything else in anyway.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
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

    fn shard(&self, id: KeyId) -> &Shard {
        // Bits 32..38: independent of the low bits the map indexes by.
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
    // A panic while holding a shard lock cannot leave a map half-updated (each
    // write is one insert or remove), so a poisoned lock is safe to use.
    fn read(&self) -> RwLockReadGuard<'_, Map> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map> {
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
        self.shard(id)
            .read()
            .get(&id.as_u64())
            .map(|e| Arc::clone(&e.0))
    }

    fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<&Arc<StoredKey>>)) {
        f(self.shard(id).read().get(&id.as_u64()).map(|e| &e.0));
    }

    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(
                shard
                    .read()
                    .iter()
                    .filter(|e| owner.is_none_or(|o| e.0.key.owner() == o))
                    .map(|e| Arc::clone(&e.0)),
            );
        }
        Ok(out)
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
        check_batch(&changes, |id| self.lookup(id).is_some())?;
        for change in changes {
            self.apply_checked(change);
        }
        Ok(())
    }
}

impl MemoryStore {
    /// Sets the settings exactly as given (an import replacing the store).
    pub(crate) fn set_settings(&self, settings: RingSettings) {
        *self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(settings);
    }

    /// Puts a record already in its `Arc` (a store being loaded: the
    /// allocation happens on the thread that decoded it).
    pub(crate) fn put_shared(&self, entry: Arc<StoredKey>) {
        let id = entry.id();
        self.shard(id).write().replace(ById(entry));
    }

    /// Applies one change that [`check_batch`] accepted.
    pub(crate) fn apply_checked(&self, change: Change) {
        match change {
            Change::Insert(entry) | Change::Replace(entry) => {
                let id = entry.id();
                self.shard(id).write().replace(ById(Arc::new(entry)));
            }
            Change::Remove(id) => {
                self.shard(id).write().remove(&id.as_u64());
            }
            Change::Settings(settings) => {
                let mut current = self
                    .settings
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                *current = Some(merge_settings(current.as_ref(), settings));
            }
        }
    }
}
