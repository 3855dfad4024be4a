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
//! - **Writes are durable before they return `Ok`.** Once `insert`, `replace`,
//!   `remove` or `save_settings` has returned `Ok`, the change survives a
//!   crash of the process (and, for a durable backend, of the machine), and
//!   every later `lookup` in this process sees it. A revocation in particular
//!   must never be lost or reordered behind an older write of the same key.
//! - **A failed write changes nothing.** On `Err`, neither the index nor the
//!   durable copy holds the new value.
//! - **Ids are unique.** `insert` of an id that exists fails with
//!   [`StoreError::Duplicate`] and leaves the existing record as it was.
//! - **No plaintext.** The store sees only [`StoredKey`]s (record and hash);
//!   it must not log them, and a `Debug` of the store should not print them.
//! - **Settings are the ring's.** `save_settings` / `load_settings` keep one
//!   [`RingSettings`] value per store, durable like a key write.

mod memory;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use crate::error::StoreError;
use crate::expiry::ExpiryPolicy;
use crate::hash::KeyHash;
use crate::key::Key;
use crate::token::KeyId;
pub use memory::MemoryStore;

/// What a store keeps per key: the record and the hash of its secret.
///
/// Serialize it (e.g. with `serde_json`) to persist it in a host database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub(crate) key: Key,
    pub(crate) hash: KeyHash,
}

impl StoredKey {
    /// The key record.
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
}

/// Storage for a key ring's records. See the [module docs](self) for the
/// guarantees an implementation must give.
///
/// The trait is object safe: `&dyn KeyStore` and `Box<dyn KeyStore>` work.
pub trait KeyStore: fmt::Debug + Send + Sync {
    /// The record with this id, from memory. The verify hot path: no I/O.
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>>;

    /// Adds a new record; [`StoreError::Duplicate`] if the id exists.
    fn insert(&self, entry: StoredKey) -> Result<(), StoreError>;

    /// Replaces the record with the same id; [`StoreError::NotFound`] if
    /// there is none.
    fn replace(&self, entry: StoredKey) -> Result<(), StoreError>;

    /// Deletes a record for good; `Ok(false)` if there was none.
    fn remove(&self, id: KeyId) -> Result<bool, StoreError>;

    /// Every record, or every record of one owner. Order is unspecified.
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError>;

    /// The ring settings last saved, if any.
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError>;

    /// Saves the ring settings.
    fn save_settings(&self, settings: &RingSettings) -> Result<(), StoreError>;

    /// Makes buffered writes durable. Stores that write through (as they
    /// should for every mutation above) need not override it.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl<S: KeyStore + ?Sized> KeyStore for Arc<S> {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        (**self).lookup(id)
    }
    fn insert(&self, entry: StoredKey) -> Result<(), StoreError> {
        (**self).insert(entry)
    }
    fn replace(&self, entry: StoredKey) -> Result<(), StoreError> {
        (**self).replace(entry)
    }
    fn remove(&self, id: KeyId) -> Result<bool, StoreError> {
        (**self).remove(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        (**self).list(owner)
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        (**self).load_settings()
    }
    fn save_settings(&self, settings: &RingSettings) -> Result<(), StoreError> {
        (**self).save_settings(settings)
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
}
