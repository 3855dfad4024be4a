//! Persistence behind one trait, [`KeyStore`], with [`MemoryStore`] as the
//! in-process backend.
//!
//! # The contract every implementation must keep
//!
//! - **`inspect` and `lookup` are the hot path.** `verify()` calls
//!   `inspect` once (its default calls `lookup`); both must answer from
//!   memory: no I/O, no blocking on a network, no allocation beyond
//!   cloning an `Arc`. A backend on a shared database keeps an
//!   in-memory index of its records and refreshes it from the database's
//!   change notifications; it must not assume it is the only writer.
//! - **Records are lent in place.** `inspect`, `lookup` and `list` give the
//!   `Arc` the store holds for each record (the one its last write put
//!   there), not a copy decoded for the call: `verify` counts the uses of a
//!   key without a use limit in place on what `inspect` lends, and a
//!   ring finds them through `list` and `lookup` to write them back; and a
//!   ring writes a record `lookup` or `list` gave it as a
//!   [`Change::ReplaceIf`] of that record. A store that lends copies loses
//!   those uses (a key with an idle expiry then expires while in use) and
//!   fails the ring's compare-and-swaps. ([`MemoryStore`] lends `verify`
//!   a table slot that keeps the usage beside the record, and raises the
//!   record's own count to the slot's whenever it lends the record: the
//!   same contract, kept in another place.)
//! - **Writes are durable before they return `Ok`.** Once `apply` (or one of
//!   the single-change writers built on it) has returned `Ok`, the change survives a
//!   crash of the process (and, for a durable backend, of the machine), and
//!   every later read in this process (`lookup`, `inspect`, `list`,
//!   `snapshot`) sees every change of the batch, not only the first: a ring
//!   writes a rotation, or all of an owner's revocations, as one batch. A
//!   revocation in particular must never be lost or reordered behind an
//!   older write of the same key.
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
//!   [`StoreError::Duplicate`] naming that id, and leaves the existing
//!   record as it was. A ring that draws a new key's id draws again on a
//!   `Duplicate` of the id it drew; a `Duplicate` naming another id is
//!   returned to the caller as the store's own fault.
//! - **No plaintext.** The store sees only [`StoredKey`]s (record and hash);
//!   it must not log them, and a `Debug` of the store should not print them.
//! - **Settings are the ring's.** `Change::Settings` / `load_settings` keep
//!   one [`RingSettings`] value per store, durable like a key write. A ring
//!   writes them with [`Change::SettingsIf`], which, like `ReplaceIf`,
//!   applies only over the settings its change was derived from. The
//!   revoke-all epoch never moves backwards: a settings write carrying a
//!   lower epoch than the stored one keeps the stored epoch (and its
//!   instant), nor does its instant within one epoch, so a ring with stale
//!   settings cannot undo a `revoke_all`;
//!   nor can it drop the replaced defaults kept so that keys expired under
//!   them stay expired. A store keeps
//!   [`new.written_over(current)`](RingSettings::written_over).

pub(crate) mod chunks;
pub mod conformance;
mod file;
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
pub use file::{FileStore, FileStoreOptions, ImportMode, ImportReport, Recovery, export};
pub use memory::MemoryStore;

/// What a store keeps per key: the record and the hash of its secret.
///
/// Serialize it (e.g. with `serde_json`) to persist it in a host database;
/// only the record and the hash are written. Reading one back refuses a
/// field this version does not know, at any depth, rather than skip it: a
/// misspelt or newer restriction must not read as a key without it.
///
/// The record's usage (last use, use count) is updated in place by `verify`
/// without I/O, and written back to the store by the ring with a bounded
/// delay ([`KeyRing::flush`](crate::KeyRing::flush)); except for a key with
/// a use limit, whose every use is written at once, as a new version.
///
/// Layout: the hash and the fields `verify` reads and counts come first,
/// so a verification of most keys reads within the first 96 bytes of the
/// record's allocation (the `Arc`'s two counts, the hash, then the record's
/// first fields, which end 88 bytes in) and no other allocation. The record
/// is 120 bytes (its allocation 136 with the counts, 144 as malloc rounds
/// it): the fields a plain key leaves unset are boxed. At malloc's 16-byte
/// alignment the first 96 bytes span two cache lines when the allocation
/// starts 0, 16 or 32 bytes into a line, three when it starts 48 bytes in.
/// A key with a use limit,
/// a rotation grace, a policy of its own, bindings, or a request for
/// scopes makes verify read further.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[repr(C)]
pub struct StoredKey {
    pub(crate) hash: KeyHash,
    pub(crate) key: Key,
}

/// Whether `keys` holds keys and none of them is of `prefix`, as their
/// hints say: the keys of another ring, whose store a ring of `prefix`
/// must not claim (see `claim_store` and [`FileStore::import`]).
pub(crate) fn none_of_prefix(keys: &[Arc<StoredKey>], prefix: &str) -> bool {
    !keys.is_empty()
        && !keys
            .iter()
            .any(|k| crate::token::hint_is_of(k.key.hint(), prefix))
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
#[serde(deny_unknown_fields)]
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
    /// Earlier defaults that keys had expired under when they were
    /// replaced, oldest first: those keys stay expired, whatever the
    /// default becomes. (A change of the default takes effect for the keys
    /// still in force; it does not bring back an expired one.)
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "at_most_kept"
    )]
    pub(crate) superseded: Vec<Superseded>,
    /// The prefix of the ring whose keys the store holds: a ring of another
    /// prefix refuses to open on it. `None` in settings saved before it was
    /// kept (the next ring to open adopts the store, unless it holds keys
    /// and none of them is of that ring's prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prefix: Option<String>,
    /// The ring's hash of a fixed input (see `KeyRingBuilder::build`): a
    /// ring whose pepper differs computes another, and refuses to open
    /// rather than refuse every key. One-way: it tells nothing of any key,
    /// and of the pepper only whether a guess is right; so whoever holds
    /// the store or an export can test guessed peppers offline, which is
    /// why a pepper must be random bytes, not a passphrase (see
    /// [`KeyRingBuilder::pepper`](crate::KeyRingBuilder::pepper)). `None`
    /// as for `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) check: Option<KeyHash>,
}

/// Reads [`RingSettings::superseded`], refusing more entries than any call
/// writes ([`SUPERSEDED_KEPT`]): each change of the default prunes them in
/// time cubic in their number, so settings edited in a store or a host's
/// database to hold thousands would stall every later change.
fn at_most_kept<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Superseded>, D::Error> {
    let superseded = Vec::<Superseded>::deserialize(d)?;
    if superseded.len() > SUPERSEDED_KEPT {
        return Err(serde::de::Error::custom(format_args!(
            "more than {SUPERSEDED_KEPT} superseded defaults"
        )));
    }
    Ok(superseded)
}

/// How many [`Superseded`] defaults a [`RingSettings`] keeps. Each one
/// kept raises the bar below which keys are known expired; past this many,
/// the oldest of a kind is dropped, as the newer one of its kind covers
/// every key it did (only the instant reported for those keys' expiry
/// moves later, to the time they were found expired at the latest).
pub(crate) const SUPERSEDED_KEPT: usize = 64;

/// A default policy that was replaced at `until` after being in force
/// since `since`, while keys it governed had already expired under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Superseded {
    pub(crate) policy: ExpiryPolicy,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) until: OffsetDateTime,
}

impl Superseded {
    /// Keys the policy governed that were created at or before this
    /// instant had expired by `until` (a lifetime or a fixed deadline). For
    /// a fixed deadline, that is every key created before it: `issue`
    /// refuses a key under a fixed default that has passed, so none was
    /// created after it (and a ring whose clock runs a little behind the
    /// one that made the change does not issue keys below the bar).
    pub(crate) fn expired_created_by(&self) -> Option<OffsetDateTime> {
        match self.policy {
            ExpiryPolicy::Lifetime(period) => self.period_threshold(period),
            ExpiryPolicy::Never | ExpiryPolicy::Idle(_) => None,
            fixed => fixed
                .deadline(self.since)
                .filter(|at| *at <= self.until)
                .and_then(|at| at.checked_sub(time::Duration::nanoseconds(1))),
        }
    }

    /// Keys the policy governed whose last activity (use, or creation) was
    /// at or before this instant had expired idle by `until`.
    pub(crate) fn expired_idle_by(&self) -> Option<OffsetDateTime> {
        match self.policy {
            ExpiryPolicy::Idle(period) => self.period_threshold(period),
            _ => None,
        }
    }

    /// For a period counted from the later of a key's own instant and
    /// `since`: a key had expired by `until` if both are `period` before
    /// it, i.e. if its instant is at or before `until - period` and
    /// `since` is too.
    fn period_threshold(&self, period: time::Duration) -> Option<OffsetDateTime> {
        let bar = self.until.checked_sub(period)?;
        (self.since <= bar).then_some(bar)
    }

    /// When a key with these times expired under this policy, if it had by
    /// `until`.
    pub(crate) fn expiry_of(
        &self,
        created: OffsetDateTime,
        last_active: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let at = match self.policy {
            ExpiryPolicy::Never => None,
            ExpiryPolicy::Lifetime(period) => created.max(self.since).checked_add(period),
            ExpiryPolicy::Idle(period) => last_active.max(self.since).checked_add(period),
            // Only keys created before it (see `expired_created_by`).
            fixed => fixed.deadline(self.since).filter(|at| created < *at),
        }?;
        // A key created at the change or after was never under this policy.
        (at <= self.until && created < self.until).then_some(at)
    }
}

impl RingSettings {
    /// What a store keeps when these settings are written over `current`
    /// (the settings it holds, if any): these, except that nothing a ring
    /// with a stale copy could undo is lost. The revoke-all epoch never
    /// moves backwards, nor its instant within one epoch (a higher epoch
    /// brings its own instant, which a ring's `revoke_all` makes no earlier
    /// than the held one), so a stale copy cannot undo another ring's
    /// `revoke_all`; and the defaults kept because keys had expired
    /// under them are kept from both, so a stale copy cannot bring those
    /// keys back; settings without the ring's prefix and check (written by
    /// an older keyward) keep the stored ones. A [`KeyStore`] calls it
    /// under the lock its writes take.
    #[must_use]
    pub fn written_over(mut self, current: Option<&RingSettings>) -> RingSettings {
        let Some(current) = current else {
            return self;
        };
        if self.prefix.is_none() {
            self.prefix.clone_from(&current.prefix);
        }
        if self.check.is_none() {
            self.check.clone_from(&current.check);
        }
        if current.epoch > self.epoch {
            self.epoch = current.epoch;
            self.revoked_all_at = current.revoked_all_at;
        } else if current.epoch == self.epoch {
            // A revoke-all raises its instant within its epoch when its
            // write crossed a second (see `KeyRing::revoke_all`): a stale
            // copy of that epoch must not lower it again.
            self.revoked_all_at = self.revoked_all_at.max(current.revoked_all_at);
        }
        let missing: Vec<Superseded> = current
            .superseded
            .iter()
            .filter(|s| !self.superseded.contains(s))
            .copied()
            .collect();
        if !missing.is_empty() {
            self.superseded.extend(missing);
            self.superseded.sort_by_key(|s| s.until);
            self.prune_superseded();
        }
        self
    }

    /// Drops superseded defaults, oldest first, while more than
    /// [`SUPERSEDED_KEPT`] are kept and one of them is covered by another
    /// of its kind with a bar as high: that one keeps every key the dropped
    /// one did expired (only the instant reported for them may move later).
    /// A default that gives no bar (no call keeps one, but settings read
    /// from a store or an export may hold it) keeps no key expired, and
    /// goes first: otherwise a set of them could keep the count past the
    /// cap, and settings that no longer read back would be written.
    fn prune_superseded(&mut self) {
        fn covers(newer: &Superseded, older: &Superseded) -> bool {
            let higher = |a: Option<OffsetDateTime>, b: Option<OffsetDateTime>| matches!((a, b), (Some(a), Some(b)) if a >= b);
            higher(newer.expired_created_by(), older.expired_created_by())
                || higher(newer.expired_idle_by(), older.expired_idle_by())
        }
        fn inert(s: &Superseded) -> bool {
            s.expired_created_by().is_none() && s.expired_idle_by().is_none()
        }
        while self.superseded.len() > SUPERSEDED_KEPT {
            let kept = &self.superseded;
            let Some(covered) = (0..kept.len()).find(|&i| inert(&kept[i])).or_else(|| {
                (0..kept.len())
                    .find(|&i| (0..kept.len()).any(|j| j != i && covers(&kept[j], &kept[i])))
            }) else {
                return;
            };
            self.superseded.remove(covered);
        }
    }

    /// Replaces the default policy at `now`, keeping the old one among the
    /// superseded if keys had expired under it that no policy kept so far
    /// covers.
    pub(crate) fn replace_default(&mut self, policy: ExpiryPolicy, now: OffsetDateTime) {
        let old = Superseded {
            policy: self.default_expiry,
            since: self.default_since,
            until: now,
        };
        let raises = |bar: Option<OffsetDateTime>, kept: Option<OffsetDateTime>| {
            bar.is_some_and(|bar| kept.is_none_or(|kept| bar > kept))
        };
        let (created_by, idle_by) = self.expired_bars();
        if raises(old.expired_created_by(), created_by) || raises(old.expired_idle_by(), idle_by) {
            self.superseded.push(old);
            self.prune_superseded();
        }
        self.default_expiry = policy;
        self.default_since = now;
    }

    /// The highest bars of the superseded defaults: keys under the default
    /// created at or before the first, or last active at or before the
    /// second, stay expired.
    pub(crate) fn expired_bars(&self) -> (Option<OffsetDateTime>, Option<OffsetDateTime>) {
        let created = self
            .superseded
            .iter()
            .filter_map(Superseded::expired_created_by);
        let idle = self
            .superseded
            .iter()
            .filter_map(Superseded::expired_idle_by);
        (created.max(), idle.max())
    }

    /// When a key under the default expired under a superseded one, if it
    /// did: under the first that covers it.
    pub(crate) fn expired_under_superseded(
        &self,
        created: OffsetDateTime,
        last_active: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        self.superseded
            .iter()
            .find_map(|s| s.expiry_of(created, last_active))
    }

    /// When a key governed by the default, created at `created` and last
    /// active at `last_active`, stops working under these settings (`None`:
    /// never): under a replaced default it had expired under, or else under
    /// the default in force. A ring's maximum lifetime, which is the ring's
    /// and not in the settings, may end it earlier.
    pub(crate) fn default_end(
        &self,
        created: OffsetDateTime,
        last_active: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        if let Some(at) = self.expired_under_superseded(created, last_active) {
            return Some(at);
        }
        match self.default_expiry {
            ExpiryPolicy::Never => None,
            ExpiryPolicy::Lifetime(d) => created.max(self.default_since).checked_add(d),
            ExpiryPolicy::Idle(d) => last_active.max(self.default_since).checked_add(d),
            fixed => fixed.deadline(self.default_since),
        }
    }
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

    /// The prefix of the ring whose keys the store holds (`None` in
    /// settings saved before keyward kept it, until a ring opens on them).
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// Whether these settings name another ring than the one of `prefix`
    /// and pepper `check`, and by what: the prefix first, then the pepper.
    /// A side that does not say (`None`: settings an older keyward saved)
    /// differs from nothing.
    pub(crate) fn other_ring(
        &self,
        prefix: Option<&str>,
        check: Option<&KeyHash>,
    ) -> Option<OtherRing> {
        if matches!((self.prefix.as_deref(), prefix), (Some(a), Some(b)) if a != b) {
            Some(OtherRing::Prefix)
        } else if matches!((&self.check, check), (Some(a), Some(b)) if a != b) {
            Some(OtherRing::Pepper)
        } else {
            None
        }
    }
}

/// What tells another ring's settings apart (see
/// [`RingSettings::other_ring`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtherRing {
    /// Another prefix.
    Prefix,
    /// The same prefix under another pepper.
    Pepper,
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
    /// batch to the same id is a conflict too; a removal earlier in it
    /// leaves the id gone, so [`StoreError::NotFound`].
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
    /// Replace the ring settings, whatever the store holds (the store
    /// still keeps [`written_over`](RingSettings::written_over) of them).
    Settings(RingSettings),
    /// Replace the ring settings with `next` (the store keeps
    /// [`written_over`](RingSettings::written_over) of them, as for
    /// [`Change::Settings`]), but only if the store still holds `expected`
    /// (compared by value; `None`: no settings were saved yet). Otherwise the batch fails with
    /// [`StoreError::SettingsConflict`] and nothing is applied; a change of
    /// the settings earlier in the same batch is a conflict too. A key ring
    /// writes its settings this way (a `revoke_all`, a new default), so
    /// that a write by another ring in between is never overwritten by a
    /// copy of what came before it: a default that ring set would be lost,
    /// and keys that had expired under it would come back. The ring reads
    /// the settings again and redoes its change.
    ///
    /// Equal by value is enough, though an equal value need not be the
    /// same write (a default changed and changed back at one instant): the
    /// ring derives `next` from `expected` alone (and the clock), so over
    /// any settings equal to `expected`, `next` is what a fresh read would
    /// have given.
    ///
    /// Compare under the lock the write takes, against what
    /// [`KeyStore::load_settings`] answers: after a conflict the ring reads
    /// them there again and redoes its change at once, a bounded number of
    /// times. So a store whose `load_settings` answers from a copy that
    /// lags the one compared (a cache kept fresh by change notifications)
    /// fails a `revoke_all` with `SettingsConflict` whenever another
    /// process wrote the settings within the lag: read them from the
    /// database, or bring the copy up to date before reporting the
    /// conflict. A database store shared by several processes can read the
    /// row with a revision kept beside it, compare the decoded value with
    /// `expected`, and write with a conditional update on that revision
    /// (`UPDATE ... WHERE revision = ?`), reporting a conflict when the
    /// value differs or no row matched. Comparing the stored text with an
    /// encoding of `expected` instead holds only while every row is in
    /// exactly that encoding: a row edited by hand, written by another
    /// encoder or re-encoded by the database (fields reordered, spaces
    /// added) never matches, and every settings change then fails.
    SettingsIf {
        /// The settings the change was derived from, as the store gave
        /// them by [`KeyStore::load_settings`].
        expected: Option<RingSettings>,
        /// The new settings.
        next: RingSettings,
    },
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
    /// the call as a [`Lent`]: the verify hot path. The default lends what
    /// [`lookup`](Self::lookup) returns. A store that can lend the record in place
    /// should override it (`MemoryStore` lends it under its shard's read
    /// lock): `verify` then reads the record with plain loads, which the CPU
    /// overlaps, and takes a reference count (a locked instruction) only for
    /// a key that verified. `f` must not call back into the store: a store
    /// may run it under a lock, as `MemoryStore` does, and a write to the
    /// same shard from inside `f` would deadlock or panic (`verify`'s `f`
    /// only reads the record and counts its use).
    ///
    /// `verify` counts the use of a key without a use limit inside `f`. If
    /// `apply` cannot replace the record while `f` runs on it (as with
    /// `MemoryStore`'s lock), every such use is counted across
    /// administrative writes: the ring carries the uses an old version
    /// counted over to the new one once `apply` returns. With the default,
    /// a use that races a write of the same key may go uncounted. A store
    /// that wraps another should forward `inspect` to it (as the impls for
    /// `Arc<S>` and `Box<S>` do), or it loses both the speed and the count.
    ///
    /// A store of your own builds its `Lent` from the record's `Arc`:
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use keyward::{KeyId, StoredKey};
    /// # use keyward::store::Lent;
    /// # fn lend(found: Option<Arc<StoredKey>>, f: &mut dyn FnMut(Option<Lent<'_>>)) {
    /// f(found.as_ref().map(Lent::from));
    /// # }
    /// ```
    ///
    /// An unknown id should take as long as a known one, or timing tells
    /// which ids exist: for a stored id `verify` reads the record's hash,
    /// for an unknown one it compares a constant. (`MemoryStore` and
    /// `FileStore` keep the hash's first half in the table slot the lookup
    /// reads either way.) A host store whose lookup of a stored id costs
    /// more than that of an unknown one (a cache miss, a second query)
    /// should even that out.
    fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<Lent<'_>>)) {
        f(self.lookup(id).as_ref().map(Lent::from));
    }

    /// Every record, or every record of one owner, each once, as the store
    /// holds it: the allocations [`lookup`](Self::lookup) lends, which
    /// carry the uses `verify` counted on them (see the [module
    /// docs](self)). Order is unspecified.
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError>;

    /// Every record as of one moment: no batch half applied. An
    /// [`export`] writes this. The default calls [`list`](Self::list); a
    /// store whose `list` can see a batch half applied must override it
    /// (`MemoryStore` and `FileStore` read under the lock their writes
    /// take), or an export taken during a rotation can hold the successor
    /// beside its predecessor as it was before the rotation: imported, the
    /// predecessor works without the end of its grace, and a key with a
    /// use limit grants its remaining uses twice.
    fn snapshot(&self) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.list(None)
    }

    /// The ring settings last saved, if any: those the store holds, which
    /// a [`Change::SettingsIf`] is compared with (not a copy that may lag
    /// them).
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError>;

    /// Applies a batch of changes atomically: all of them, durably, or none
    /// (a rotation, for instance, inserts the new key and marks the old one
    /// in one batch, so a crash cannot leave half a rotation). Checks first:
    /// [`StoreError::Duplicate`] for an `Insert` of an existing id,
    /// [`StoreError::NotFound`] for a `Replace` or `Remove` of a missing
    /// one, [`StoreError::Conflict`] for a [`Change::ReplaceIf`] whose
    /// expected record is no longer the one held,
    /// [`StoreError::SettingsConflict`] for a [`Change::SettingsIf`] whose
    /// expected settings are no longer the ones held, and then nothing is
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

    /// Saves the ring settings, whatever the store holds (see
    /// [`Change::Settings`]).
    fn save_settings(&self, settings: &RingSettings) -> Result<(), StoreError> {
        self.apply(vec![Change::Settings(settings.clone())])
    }
}

/// Checks a batch against the current records: the error `apply` must
/// return, if any. `current` gives the record the store holds for an id
/// not touched earlier in the batch, and `settings` the settings it holds
/// (called only for a [`Change::SettingsIf`]). Call it under the lock the
/// writes take, so that nothing changes between the check and the write.
pub(crate) fn check_batch(
    changes: &[Change],
    current: impl Fn(KeyId) -> Option<Arc<StoredKey>>,
    settings: impl FnOnce() -> Result<Option<RingSettings>, StoreError>,
) -> Result<(), StoreError> {
    // Per id touched so far: whether a record is there after the change.
    let mut touched: std::collections::HashMap<KeyId, bool> = std::collections::HashMap::new();
    let mut settings = Some(settings);
    let mut settings_touched = false;
    for change in changes {
        let (id, after) = match change {
            Change::Insert(e) | Change::Replace(e) => (e.id(), true),
            Change::ReplaceIf { next, .. } => (next.id(), true),
            Change::Remove(id) => (*id, false),
            Change::Settings(_) => {
                settings_touched = true;
                continue;
            }
            Change::SettingsIf { expected, .. } => {
                let held = match settings.take() {
                    Some(load) if !settings_touched => load()?,
                    _ => return Err(StoreError::SettingsConflict),
                };
                if held != *expected {
                    return Err(StoreError::SettingsConflict);
                }
                settings_touched = true;
                continue;
            }
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

/// A record lent by [`KeyStore::inspect`] for the length of one call: what
/// `verify` judges.
///
/// A store of your own lends the `Arc` it holds, with `Lent::from`; the
/// stores of this crate may lend their table's slot for the record
/// instead, which carries the key's usage (see [`MemoryStore`]). Either
/// way [`record`](Self::record) reads the record.
#[derive(Clone, Copy)]
pub struct Lent<'a>(pub(crate) LentAs<'a>);

/// What a [`Lent`] holds.
#[derive(Clone, Copy)]
pub(crate) enum LentAs<'a> {
    /// A record, usage and all (a host store, or `lookup`).
    Record(&'a Arc<StoredKey>),
    /// A table slot of `MemoryStore`: the record, and its usage beside it.
    Slot(chunks::SlotRef<'a>),
}

impl<'a> From<&'a Arc<StoredKey>> for Lent<'a> {
    fn from(record: &'a Arc<StoredKey>) -> Lent<'a> {
        Lent(LentAs::Record(record))
    }
}

impl<'a> Lent<'a> {
    /// The record lent.
    #[inline]
    pub fn record(&self) -> &'a Arc<StoredKey> {
        match self.0 {
            LentAs::Record(record) => record,
            LentAs::Slot(at) => at.slot().record(),
        }
    }

    /// Counts one use of a key without a use limit at `now`, where the
    /// store keeps it (see [`Key::consume`](crate::Key)).
    #[inline]
    pub(crate) fn consume(&self, now: crate::key::Nanos) {
        match self.0 {
            LentAs::Record(record) => {
                record.key.consume(now);
            }
            LentAs::Slot(at) => at.slot().count_use(now - now.rem_euclid(1_000_000_000)),
        }
    }
}

impl fmt::Debug for Lent<'_> {
    /// The record's `Debug` (which prints no hash value).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Lent").field(self.record()).finish()
    }
}

/// Forwards every method, so a ring can run on `Arc<S>` (a store shared with
/// other code) or `Box<dyn KeyStore>`.
macro_rules! forward_store {
    ($($pointer:ident),*) => {$(
        impl<S: KeyStore + ?Sized> KeyStore for $pointer<S> {
            fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
                (**self).lookup(id)
            }
            fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<Lent<'_>>)) {
                (**self).inspect(id, f)
            }
            fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
                (**self).list(owner)
            }
            fn snapshot(&self) -> Result<Vec<Arc<StoredKey>>, StoreError> {
                (**self).snapshot()
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

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::datetime;

    use super::*;

    fn settings(policy: ExpiryPolicy) -> RingSettings {
        RingSettings {
            default_expiry: policy,
            default_since: datetime!(2026-01-01 0:00 UTC),
            epoch: 0,
            revoked_all_at: None,
            superseded: Vec::new(),
            prefix: None,
            check: None,
        }
    }

    #[test]
    fn a_replaced_default_is_kept_only_if_keys_had_expired_under_it() {
        let mut s = settings(ExpiryPolicy::days(30));
        // Day 20: no key had lived 30 days.
        s.replace_default(ExpiryPolicy::days(90), datetime!(2026-01-21 0:00 UTC));
        assert!(s.superseded.is_empty());
        assert_eq!(s.expired_bars(), (None, None));
        // Day 120 of the 90-day default set on day 20: keys created up to
        // day 30 had lived 90 days since the change.
        let at = datetime!(2026-05-01 0:00 UTC);
        s.replace_default(ExpiryPolicy::Never, at);
        assert_eq!(s.superseded.len(), 1);
        assert_eq!(s.expired_bars(), (Some(at - Duration::days(90)), None));
        // Never kills no key: replacing it keeps nothing.
        s.replace_default(ExpiryPolicy::days(1), datetime!(2026-06-01 0:00 UTC));
        assert_eq!(s.superseded.len(), 1);
        assert_eq!(s.default_expiry, ExpiryPolicy::days(1));
        assert_eq!(s.default_since, datetime!(2026-06-01 0:00 UTC));
    }

    /// Settings as stored and exported: a field this version does not know,
    /// in the settings or in a superseded default, is refused (a misspelt
    /// `revoked_all_at` would otherwise read as no revoke-all), naming it.
    #[test]
    fn settings_with_a_field_this_version_does_not_know_are_refused() {
        let mut s = settings(ExpiryPolicy::days(90));
        s.replace_default(ExpiryPolicy::Never, datetime!(2026-05-01 0:00 UTC));
        let stored = serde_json::to_value(&s).unwrap();
        let read: RingSettings = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(read, s);
        for superseded in [false, true] {
            let mut edited = stored.clone();
            let object = if superseded {
                &mut edited["superseded"][0]
            } else {
                &mut edited
            };
            object.as_object_mut().unwrap().insert(
                "revoked_all".into(),
                serde_json::json!("2026-06-01T00:00:00Z"),
            );
            let error = serde_json::from_value::<RingSettings>(edited).unwrap_err();
            assert!(
                error.to_string().contains("unknown field `revoked_all`"),
                "superseded {superseded}: {error}"
            );
        }
    }

    #[test]
    fn superseded_defaults_are_capped_and_the_bars_keep_rising() {
        let mut s = settings(ExpiryPolicy::days(1));
        let mut at = datetime!(2026-01-01 0:00 UTC);
        for i in 0..3 * SUPERSEDED_KEPT {
            at += Duration::days(2);
            let next = if i % 2 == 0 {
                ExpiryPolicy::Idle(Duration::days(1))
            } else {
                ExpiryPolicy::days(1)
            };
            s.replace_default(next, at);
            assert!(s.superseded.len() <= SUPERSEDED_KEPT, "{i}");
        }
        // The last idle default was replaced at `at` after two days in
        // force, and the last lifetime one two days before that.
        let (created, idle) = s.expired_bars();
        assert_eq!(idle, Some(at - Duration::days(1)));
        assert_eq!(created, Some(at - Duration::days(3)));
        // A key created just after an early change is still known expired.
        let early = datetime!(2026-01-05 0:00 UTC);
        assert!(s.expired_under_superseded(early, early).is_some());
    }

    /// Two rings that each replaced the default from the same stale copy:
    /// the store keeps both rings' superseded defaults, in order.
    #[test]
    fn a_write_over_settings_keeps_the_superseded_defaults_of_both() {
        let base = settings(ExpiryPolicy::days(1));
        let mut first = base.clone();
        first.replace_default(ExpiryPolicy::Never, datetime!(2026-02-01 0:00 UTC));
        let mut second = base.clone();
        second.replace_default(ExpiryPolicy::days(2), datetime!(2026-03-01 0:00 UTC));
        let kept = second.clone().written_over(Some(&first));
        assert_eq!(kept.default_expiry, ExpiryPolicy::days(2));
        assert_eq!(kept.superseded, [first.superseded[0], second.superseded[0]]);
        // Written again over itself, nothing doubles.
        assert_eq!(kept.clone().written_over(Some(&kept)), kept);
        assert_eq!(base.clone().written_over(None), base);
    }

    /// The revoke-all instant never moves back, also within one epoch: a
    /// `revoke_all` raises it in a second write when its first crossed a
    /// second, and a copy of the settings taken between the two (a stale
    /// ring's, an export's) written over them keeps the later instant, and
    /// so keeps refusing the tokens minted in that second.
    #[test]
    fn a_write_over_settings_keeps_the_later_revoke_all_instant_of_an_epoch() {
        let mut raised = settings(ExpiryPolicy::Never);
        raised.epoch = 4;
        raised.revoked_all_at = Some(datetime!(2026-03-01 0:00:01 UTC));
        let stale = RingSettings {
            revoked_all_at: Some(datetime!(2026-03-01 0:00 UTC)),
            ..raised.clone()
        };
        assert_eq!(stale.clone().written_over(Some(&raised)), raised);
        // The later instant of the same epoch is taken over the held one.
        assert_eq!(raised.clone().written_over(Some(&stale)), raised);
        // A higher epoch brings its own instant, earlier or not.
        let next = RingSettings {
            epoch: 5,
            ..stale.clone()
        };
        assert_eq!(next.clone().written_over(Some(&raised)), next);
        assert_eq!(raised.clone().written_over(Some(&next)), next);
    }

    /// Past the cap, a default is dropped only when another of its kind
    /// covers it: the one lifetime default among many idle ones stays
    /// (dropping it would bring back the keys created before its bar), and
    /// exactly [`SUPERSEDED_KEPT`] are kept.
    #[test]
    fn past_the_cap_a_default_alone_of_its_kind_is_kept() {
        let mut s = settings(ExpiryPolicy::days(1));
        let mut at = datetime!(2026-01-03 0:00 UTC);
        s.replace_default(ExpiryPolicy::Idle(Duration::days(1)), at);
        let lifetime_bar = at - Duration::days(1);
        for _ in 0..2 * SUPERSEDED_KEPT {
            at += Duration::days(2);
            s.replace_default(ExpiryPolicy::Idle(Duration::days(1)), at);
        }
        assert_eq!(s.superseded.len(), SUPERSEDED_KEPT);
        assert_eq!(
            s.expired_bars(),
            (Some(lifetime_bar), Some(at - Duration::days(1)))
        );
        assert_eq!(
            s.expired_under_superseded(lifetime_bar, at),
            Some(datetime!(2026-01-02 0:00 UTC) + Duration::days(1))
        );
    }

    /// Settings read from an export or a store may hold superseded
    /// defaults that no call keeps, which give no bar (`never`, say): past
    /// the cap they go first, so a change of the default (or a write over
    /// them) never keeps more than [`SUPERSEDED_KEPT`], and what a store
    /// writes reads back. (Before, 64 of them and one change of the default
    /// made settings that no longer read: a `FileStore` then failed to
    /// open, "undecodable record".)
    #[test]
    fn superseded_defaults_that_give_no_bar_do_not_keep_the_count_past_the_cap() {
        let mut s = settings(ExpiryPolicy::days(1));
        s.superseded = (0..SUPERSEDED_KEPT)
            .map(|i| Superseded {
                policy: ExpiryPolicy::Never,
                since: datetime!(2025-01-01 0:00 UTC),
                until: datetime!(2025-02-01 0:00 UTC) + Duration::minutes(i as i64),
            })
            .collect();
        let stored = s.clone();
        let at = datetime!(2026-05-01 0:00 UTC);
        s.replace_default(ExpiryPolicy::Never, at);
        assert_eq!(s.superseded.len(), SUPERSEDED_KEPT);
        assert_eq!(s.expired_bars(), (Some(at - Duration::days(1)), None));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RingSettings>(&json).unwrap(), s);
        // Written over the stored settings, which hold all the inert ones.
        let kept = s.clone().written_over(Some(&stored));
        assert!(kept.superseded.len() <= SUPERSEDED_KEPT);
        assert!(kept.superseded.contains(s.superseded.last().unwrap()));
    }

    /// A fixed default is kept once its deadline has passed, for the keys
    /// created before the deadline (expired at it), not before it passed,
    /// and not twice: set again and replaced again, it raises no bar.
    #[test]
    fn a_fixed_default_is_kept_once_it_has_passed() {
        let deadline = datetime!(2026-03-01 0:00 UTC);
        let mut s = settings(ExpiryPolicy::At(deadline));
        s.replace_default(ExpiryPolicy::At(deadline), datetime!(2026-02-01 0:00 UTC));
        assert!(s.superseded.is_empty(), "{:?}", s.superseded);
        s.replace_default(ExpiryPolicy::At(deadline), datetime!(2026-04-01 0:00 UTC));
        s.replace_default(ExpiryPolicy::Never, datetime!(2026-05-01 0:00 UTC));
        assert_eq!(s.superseded.len(), 1, "{:?}", s.superseded);
        let last = deadline - Duration::nanoseconds(1);
        assert_eq!(s.expired_bars(), (Some(last), None));
        assert_eq!(s.expired_under_superseded(last, last), Some(deadline));
        assert_eq!(s.expired_under_superseded(deadline, deadline), None);
    }

    /// Under a replaced lifetime default, a key had expired if its
    /// lifetime (from its creation or the default's start, the later)
    /// ended by the replacement; a key whose lifetime ran past it had not.
    #[test]
    fn a_replaced_lifetime_default_expires_only_the_keys_it_had_ended() {
        let mut s = settings(ExpiryPolicy::days(30));
        let until = datetime!(2026-03-01 0:00 UTC);
        s.replace_default(ExpiryPolicy::Never, until);
        let old = datetime!(2026-01-15 0:00 UTC);
        assert_eq!(
            s.expired_under_superseded(old, until),
            Some(old + Duration::days(30))
        );
        // Created before the default was set: counted from its start.
        let older = datetime!(2025-12-01 0:00 UTC);
        assert_eq!(
            s.expired_under_superseded(older, older),
            Some(datetime!(2026-01-31 0:00 UTC))
        );
        let young = until - Duration::days(10);
        assert_eq!(s.expired_under_superseded(young, young), None);
    }

    /// A store that implements only the four required methods, over a
    /// `MemoryStore`: every other method is the trait's default.
    #[derive(Debug, Default)]
    struct RequiredOnly(MemoryStore);

    impl KeyStore for RequiredOnly {
        fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
            self.0.lookup(id)
        }
        fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
            self.0.list(owner)
        }
        fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
            self.0.load_settings()
        }
        fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
            self.0.apply(changes)
        }
    }

    /// The defaults a host store gets for free: `inspect` lends what
    /// `lookup` gives, once, also `None`; `snapshot` is every record, as
    /// `list(None)` gives them (an export of the store writes it).
    #[test]
    fn the_default_inspect_and_snapshot_give_the_records_lookup_and_list_give() {
        use crate::store::conformance::sample_key;
        let store = RequiredOnly::default();
        for id in [1, 2 << 32] {
            store.insert(sample_key(id, "alice", "k")).unwrap();
        }
        for id in [1, 2 << 32, 3] {
            let id = KeyId::from_u64(id);
            let mut lent = Vec::new();
            store.inspect(id, &mut |entry| {
                lent.push(entry.map(|e| Arc::clone(e.record())))
            });
            assert_eq!(lent.len(), 1, "inspect called its function {lent:?}");
            let (lent, found) = (lent[0].as_ref(), store.lookup(id));
            assert_eq!(lent.is_some(), found.is_some());
            if let (Some(lent), Some(found)) = (lent, found) {
                assert!(Arc::ptr_eq(lent, &found), "inspect lent a copy");
            }
        }
        let mut snapshot: Vec<u64> = store
            .snapshot()
            .unwrap()
            .iter()
            .map(|e| e.id().as_u64())
            .collect();
        snapshot.sort_unstable();
        assert_eq!(snapshot, [1, 2 << 32]);
    }

    #[test]
    fn settings_written_before_superseded_defaults_existed_still_read() {
        let json = r#"{"default_expiry":"never","default_since":"2026-01-01T00:00:00Z","epoch":3}"#;
        let s: RingSettings = serde_json::from_str(json).unwrap();
        assert!(s.superseded.is_empty());
        assert_eq!(s.epoch, 3);
        // And none is written while there are none.
        assert!(!serde_json::to_string(&s).unwrap().contains("superseded"));
    }

    /// Settings read from a store or a host's database hold at most as many
    /// superseded defaults as any call writes: each later change of the
    /// default prunes them in time cubic in their number.
    #[test]
    fn settings_with_more_superseded_defaults_than_kept_do_not_read() {
        let with = |n: usize| {
            let mut s = settings(ExpiryPolicy::days(1));
            s.superseded = (0..n)
                .map(|i| Superseded {
                    policy: ExpiryPolicy::days(1),
                    since: datetime!(2026-01-01 0:00 UTC),
                    until: datetime!(2026-02-01 0:00 UTC) + Duration::minutes(i as i64),
                })
                .collect();
            (serde_json::to_string(&s).unwrap(), s)
        };
        let (json, kept) = with(SUPERSEDED_KEPT);
        assert_eq!(serde_json::from_str::<RingSettings>(&json).unwrap(), kept);
        let (json, _) = with(SUPERSEDED_KEPT + 1);
        let err = serde_json::from_str::<RingSettings>(&json).unwrap_err();
        assert!(
            err.to_string().contains("more than 64 superseded defaults"),
            "{err}"
        );
    }
}
