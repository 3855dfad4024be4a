//! Persistence behind one trait, [`KeyStore`], with [`MemoryStore`] as the
//! in-process backend.
//!
//! # The contract every implementation must keep
//!
//! - **`lookup` is the hot path.** It is called once per `verify()` and must
//!   answer from memory: no I/O, no blocking on a network, no allocation
//!   beyond cloning an `Arc`. A backend on a shared database keeps an
//!   in-memory index of its records and refreshes it from the database's
//!   change notifications; it must not assume it is the only writer.
//! - **Writes are durable before they return `Ok`.** Once `apply` (or one of
//!   the single-change writers built on it) has returned `Ok`, the change survives a
//!   crash of the process (and, for a durable backend, of the machine), and
//!   every later `lookup` in this process sees it. A revocation in particular
//!   must never be lost or reordered behind an older write of the same key.
//! - **`ReplaceIf` is a compare-and-swap.** A key ring writes every record
//!   it read and changed as [`Change::ReplaceIf`], naming the version it
//!   read; the store must compare that version with the one it holds under
//!   the same lock as the write, and refuse the batch with
//!   [`StoreError::Conflict`] when they differ. This is what keeps a copy
//!   made before another ring's revocation from being written over it.
//! - **A batch is all or nothing.** After a crash, a batch is either wholly
//!   there or wholly absent. On `Err`, the in-memory view holds no change of
//!   the batch; a durable store may still find the whole batch on disk when
//!   it is reopened (the write may have landed before the error), never a
//!   part of it.
//! - **Ids are unique.** An `Insert` of an id that exists fails with
//!   [`StoreError::Duplicate`] and leaves the existing record as it was.
//! - **No plaintext.** The store sees only [`StoredKey`]s (record and hash);
//!   it must not log them, and a `Debug` of the store should not print them.
//! - **Settings are the ring's.** `Change::Settings` / `load_settings` keep
//!   one [`RingSettings`] value per store, durable like a key write. The
//!   revoke-all epoch never moves backwards: a settings write carrying a
//!   lower epoch than the stored one keeps the stored epoch (and its
//!   instant), so a ring with stale settings cannot undo a `revoke_all`.

pub mod conformance;
mod file;
mod memory;
mod table;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::error::StoreError;
use crate::expiry::ExpiryPolicy;
use crate::hash::KeyHash;
use crate::key::Key;
use crate::token::KeyId;
pub use file::{FileStore, FileStoreOptions, ImportMode, ImportReport, Recovery, export};
pub use memory::MemoryStore;

/// What a store keeps per key: the record and the hash of its secret.
///
/// Serialize it (e.g. with `serde_json`) to persist it in a host database;
/// only the record and the hash are written.
///
/// The record's usage (last use, use count) is updated in place by `verify`
/// without I/O, and written back to the store by the ring with a bounded
/// delay ([`KeyRing::flush`](crate::KeyRing::flush)); except for a key with
/// a use limit, whose every use is written at once, as a new version.
///
/// Layout: the hash and the fields `verify` reads and counts come first,
/// so a verification of most keys reads the first 96 bytes of the record's
/// allocation (the `Arc`'s two counts, the hash, then the record's first
/// fields) and no other allocation. At malloc's 16-byte alignment those
/// bytes span two cache lines when the allocation starts 0, 16 or 32 bytes
/// into a line, three when it starts 48 bytes in. A key with a use limit,
/// a rotation grace, a policy of its own, bindings, or a request for
/// scopes makes verify read further.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct StoredKey {
    pub(crate) hash: KeyHash,
    pub(crate) key: Key,
}

impl StoredKey {
    pub(crate) fn new(mut key: Key, hash: KeyHash) -> StoredKey {
        // Whatever the caller changed, the flags verify goes by match.
        key.tidy();
        StoredKey { hash, key }
    }

    /// The key record, with its live usage.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.key.id
    }

    /// The hash of the key's secret.
    pub fn hash(&self) -> &KeyHash {
        &self.hash
    }

    /// A new version of this record (usage as it stands, clean). Call it
    /// under the ring's write lock.
    pub(crate) fn revised(&self, change: impl FnOnce(&mut Key)) -> StoredKey {
        self.revised_counting(change).0
    }

    /// [`revised`](Self::revised), with the use count and last use the new
    /// version was copied with (before `change`).
    pub(crate) fn revised_counting(
        &self,
        change: impl FnOnce(&mut Key),
    ) -> (StoredKey, u64, crate::key::Nanos) {
        let mut key = self.key.clone();
        let (uses, last_used) = (key.uses.get(), key.last_used_at.get());
        change(&mut key);
        // `new` tidies it.
        (StoredKey::new(key, self.hash.clone()), uses, last_used)
    }

    /// The record as it stands.
    pub(crate) fn current_key(&self) -> Key {
        self.key.clone()
    }

    /// Whether `verify` changed the usage since the record was written.
    pub(crate) fn usage_changed(&self) -> bool {
        self.key.dirty.get()
    }
}

/// Settings of a key ring that live with its keys, so every process on the
/// same store agrees on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSettings {
    pub(crate) default_expiry: ExpiryPolicy,
    /// When the default policy was last set: default-governed keys count
    /// their lifetime from here or from their creation, whichever is later.
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) default_since: OffsetDateTime,
    /// The revoke-all epoch: keys issued in an earlier epoch are revoked.
    #[serde(default)]
    pub(crate) epoch: u64,
    /// When every key was last revoked at once.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(crate) revoked_all_at: Option<OffsetDateTime>,
}

impl RingSettings {
    /// The policy of keys issued without their own.
    pub fn default_expiry(&self) -> ExpiryPolicy {
        self.default_expiry
    }

    /// When the default policy was last set.
    pub fn default_since(&self) -> OffsetDateTime {
        self.default_since
    }

    /// The revoke-all epoch: raised by each `revoke_all`; keys issued in an
    /// earlier epoch no longer verify.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When every key was last revoked at once, if ever.
    pub fn revoked_all_at(&self) -> Option<OffsetDateTime> {
        self.revoked_all_at
    }
}

/// One change to a store; [`KeyStore::apply`] takes a batch of them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Change {
    /// Add a record; the id must be new.
    Insert(StoredKey),
    /// Replace the record with the same id; it must exist.
    Replace(StoredKey),
    /// Replace the record with `next`'s id, but only if the store still
    /// holds `expected` for it: the same allocation ([`Arc::ptr_eq`]), so
    /// not merely an equal record. Otherwise the batch fails with
    /// [`StoreError::Conflict`] (or [`StoreError::NotFound`] if the id is
    /// gone) and nothing is applied. A key ring writes every change it
    /// derives from a record it read this way, so that a write by another
    /// ring on the same store in between (a revocation, a new secret) is
    /// never overwritten by a copy of what came before it: the ring reads
    /// the record again and redoes its change. A change earlier in the same
    /// batch to the same id is a conflict too.
    ///
    /// The allocation stands for the version only among rings that share
    /// one store value in one process. A store whose records other
    /// processes write too (a database behind several hosts) cannot know
    /// them by allocation: it must keep its own version of each record (a
    /// revision column, say), remember the revision of each record it
    /// lends, and write `next` with a conditional update on that revision
    /// (`UPDATE ... WHERE id = ? AND revision = ?`), reporting a conflict
    /// when no row matched.
    ReplaceIf {
        /// The record the change was derived from, as the store lent it.
        expected: Arc<StoredKey>,
        /// The new record.
        next: StoredKey,
    },
    /// Delete the record with this id; it must exist.
    Remove(KeyId),
    /// Replace the ring settings.
    Settings(RingSettings),
}

/// Storage for a key ring's records. See the [module docs](self) for the
/// guarantees an implementation must give.
///
/// Four methods are required: `lookup` (the hot path, from memory), `list`,
/// `load_settings` and `apply` (every write, as an all-or-nothing batch);
/// the single-change writers are defaulted on `apply`.
///
/// The trait is object safe: `&dyn KeyStore` and `Box<dyn KeyStore>` work.
pub trait KeyStore: fmt::Debug + Send + Sync {
    /// The record with this id, from memory, without I/O: `verify` reaches
    /// it through [`inspect`](Self::inspect) unless the store overrides that.
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>>;

    /// Calls `f` once with the record with this id (or `None`), lent for
    /// the call: the verify hot path. The default calls
    /// [`lookup`](Self::lookup). A store that can lend the record in place
    /// should override it (`MemoryStore` lends it under its shard's read
    /// lock): `verify` then reads the record with plain loads, which the CPU
    /// overlaps, and takes a reference count (a locked instruction) only for
    /// a key that verified. `f` does not call back into the store.
    ///
    /// `verify` counts the use of a key without a use limit inside `f`. If
    /// `apply` cannot replace the record while `f` runs on it (as with
    /// `MemoryStore`'s lock), every such use is counted across
    /// administrative writes: the ring carries the uses an old version
    /// counted over to the new one once `apply` returns. With the default,
    /// a use that races a write of the same key may go uncounted. A store
    /// that wraps another should forward `inspect` to it (as the impls for
    /// `Arc<S>` and `Box<S>` do), or it loses both the speed and the count.
    fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<&Arc<StoredKey>>)) {
        f(self.lookup(id).as_ref());
    }

    /// Every record, or every record of one owner. Order is unspecified.
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError>;

    /// The ring settings last saved, if any.
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError>;

    /// Applies a batch of changes atomically: all of them, durably, or none
    /// (a rotation, for instance, inserts the new key and marks the old one
    /// in one batch, so a crash cannot leave half a rotation). Checks first:
    /// [`StoreError::Duplicate`] for an `Insert` of an existing id,
    /// [`StoreError::NotFound`] for a `Replace` or `Remove` of a missing
    /// one, [`StoreError::Conflict`] for a [`Change::ReplaceIf`] whose
    /// expected record is no longer the one held, and then nothing is
    /// applied. Later changes in a batch see the earlier ones.
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError>;

    /// Makes buffered writes durable, and does the store's housekeeping: a
    /// [`FileStore`] compacts its file here. A key ring calls it from its
    /// background flusher, [`KeyRing::flush`](crate::KeyRing::flush) and
    /// its drop. A store that writes through (as it must for `apply`) and
    /// has no housekeeping need not override it; a store that wraps another
    /// must forward it, or the inner store never compacts.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Adds a new record; [`StoreError::Duplicate`] if the id exists.
    fn insert(&self, entry: StoredKey) -> Result<(), StoreError> {
        self.apply(vec![Change::Insert(entry)])
    }

    /// Replaces the record with the same id; [`StoreError::NotFound`] if
    /// there is none.
    fn replace(&self, entry: StoredKey) -> Result<(), StoreError> {
        self.apply(vec![Change::Replace(entry)])
    }

    /// Deletes a record for good; [`StoreError::NotFound`] if there is none.
    fn remove(&self, id: KeyId) -> Result<(), StoreError> {
        self.apply(vec![Change::Remove(id)])
    }

    /// Saves the ring settings.
    fn save_settings(&self, settings: &RingSettings) -> Result<(), StoreError> {
        self.apply(vec![Change::Settings(settings.clone())])
    }
}

/// The settings a store keeps when `new` is written over `current`: `new`,
/// except that the revoke-all epoch (and its instant) never move backwards,
/// so a ring holding stale settings cannot undo another's `revoke_all`.
pub(crate) fn merge_settings(
    current: Option<&RingSettings>,
    mut new: RingSettings,
) -> RingSettings {
    if let Some(current) = current
        && current.epoch > new.epoch
    {
        new.epoch = current.epoch;
        new.revoked_all_at = current.revoked_all_at;
    }
    new
}

/// Checks a batch against the current records: the error `apply` must
/// return, if any. `current` gives the record the store holds for an id
/// not touched earlier in the batch. Call it under the lock the writes
/// take, so that nothing changes between the check and the write.
pub(crate) fn check_batch(
    changes: &[Change],
    current: impl Fn(KeyId) -> Option<Arc<StoredKey>>,
) -> Result<(), StoreError> {
    // Per id touched so far: whether a record is there after the change.
    let mut touched: std::collections::HashMap<KeyId, bool> = std::collections::HashMap::new();
    for change in changes {
        let (id, after) = match change {
            Change::Insert(e) | Change::Replace(e) => (e.id(), true),
            Change::ReplaceIf { next, .. } => (next.id(), true),
            Change::Remove(id) => (*id, false),
            Change::Settings(_) => continue,
        };
        let earlier = touched.get(&id).copied();
        let present = earlier.unwrap_or_else(|| current(id).is_some());
        match change {
            Change::Insert(_) if present => return Err(StoreError::Duplicate(id)),
            Change::Replace(_) | Change::Remove(_) | Change::ReplaceIf { .. } if !present => {
                return Err(StoreError::NotFound(id));
            }
            Change::ReplaceIf { expected, .. } => {
                let holds =
                    earlier.is_none() && current(id).is_some_and(|c| Arc::ptr_eq(&c, expected));
                if !holds {
                    return Err(StoreError::Conflict(id));
                }
            }
            _ => {}
        }
        touched.insert(id, after);
    }
    Ok(())
}

/// Forwards every method, so a ring can run on `Arc<S>` (a store shared with
/// other code) or `Box<dyn KeyStore>`.
macro_rules! forward_store {
    ($($pointer:ident),*) => {$(
        impl<S: KeyStore + ?Sized> KeyStore for $pointer<S> {
            fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
                (**self).lookup(id)
            }
            fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<&Arc<StoredKey>>)) {
                (**self).inspect(id, f)
            }
            fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
                (**self).list(owner)
            }
            fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
                (**self).load_settings()
            }
            fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
                (**self).apply(changes)
            }
            fn flush(&self) -> Result<(), StoreError> {
                (**self).flush()
            }
        }
    )*};
}

forward_store!(Arc, Box);
