//! The key record ([`Key`]) and the values that go in and out of the ring:
//! [`NewKey`] (an issue request), [`Issued`] (record plus plaintext, once) and
//! [`Verified`] (the outcome of a successful check).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::binding::{Bindings, CertFingerprint, Network};
use crate::expiry::ExpiryPolicy;
use crate::scope::ScopeSet;
use crate::store::StoredKey;
use crate::store::chunks::{Chunk, SlotRef, slot_at};
use crate::token::{KeyId, MAX_HINT_LEN, Secret};

/// Longest owner, name, metadata key or value, contact field or revocation
/// reason accepted, in bytes.
pub(crate) const MAX_FIELD_LEN: usize = 256;
/// Longest description accepted, in bytes.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 4096;
/// Most metadata entries per key.
pub(crate) const MAX_METADATA_ENTRIES: usize = 64;
/// Most scopes in a key's set, and in the owner's set a request names.
pub(crate) const MAX_SCOPES: usize = 256;
/// Most networks a key can be bound to.
pub(crate) const MAX_NETWORKS: usize = 64;

/// A key's fields that callers and imports fill in, to hold them to their
/// limits with [`Fields::check`]. A field left `None` is not checked.
#[derive(Default)]
pub(crate) struct Fields<'a> {
    pub(crate) owner: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    pub(crate) description: Option<&'a str>,
    pub(crate) contact: Option<&'a Contact>,
    pub(crate) metadata: Option<&'a BTreeMap<String, String>>,
    pub(crate) scopes: Option<&'a ScopeSet>,
    pub(crate) bindings: Option<&'a Bindings>,
}

impl Fields<'_> {
    /// The limits: a non-empty owner without a NUL character; owner and
    /// name up to [`MAX_FIELD_LEN`] bytes; a description up to
    /// [`MAX_DESCRIPTION_LEN`]; each contact field up to [`MAX_FIELD_LEN`];
    /// at most [`MAX_METADATA_ENTRIES`] metadata entries whose keys and
    /// values are up to [`MAX_FIELD_LEN`] each; at most [`MAX_SCOPES`]
    /// scopes; at most [`MAX_NETWORKS`] bound networks, and no binding to
    /// the fingerprint of empty input. Each scope is
    /// already held to its own length by [`Scope::new`](crate::Scope::new).
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if let Some(owner) = self.owner {
            if owner.is_empty() {
                return Err("owner must not be empty");
            }
            if owner.contains('\0') {
                return Err("owner must not contain a NUL character");
            }
        }
        if self.owner.is_some_and(|o| o.len() > MAX_FIELD_LEN)
            || self.name.is_some_and(|n| n.len() > MAX_FIELD_LEN)
        {
            return Err("owner and name are limited to 256 bytes");
        }
        if self
            .description
            .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
        {
            return Err("description is limited to 4096 bytes");
        }
        if self.contact.is_some_and(|c| {
            [&c.first_name, &c.last_name, &c.login, &c.email]
                .iter()
                .any(|f| f.len() > MAX_FIELD_LEN)
        }) {
            return Err("each contact field is limited to 256 bytes");
        }
        if self.metadata.is_some_and(|m| {
            m.len() > MAX_METADATA_ENTRIES
                || m.iter()
                    .any(|(k, v)| k.len() > MAX_FIELD_LEN || v.len() > MAX_FIELD_LEN)
        }) {
            return Err("metadata is limited to 64 entries of 256 bytes each");
        }
        if self.scopes.is_some_and(|s| s.len() > MAX_SCOPES) {
            return Err("a scope set is limited to 256 scopes");
        }
        if self
            .bindings
            .is_some_and(|b| b.networks.len() > MAX_NETWORKS)
        {
            return Err("a key can be bound to at most 64 networks");
        }
        // It would admit no request (see `Bindings::client_cert`).
        if self
            .bindings
            .is_some_and(|b| b.client_cert.is_some_and(|c| c.is_of_nothing()))
        {
            return Err(
                "a key cannot be bound to the fingerprint of empty input: no certificate has it",
            );
        }
        self.check_no_key_material()
    }

    /// Refuses text that holds an API key or access token (anything
    /// [`scan`](crate::scan) finds): these fields are stored in the clear,
    /// exported, listed and sent with events, so a key pasted into one (a
    /// description saying "replaces acme_live_...", say) would reach every
    /// log and copy of the store.
    fn check_no_key_material(&self) -> Result<(), &'static str> {
        let holds = |text: &str| !crate::scan::scan(text).is_empty();
        if self.owner.is_some_and(holds) {
            return Err(
                "the owner holds an API key or access token; never paste one into a key's fields",
            );
        }
        if self.name.is_some_and(holds) {
            return Err(
                "the name holds an API key or access token; never paste one into a key's fields",
            );
        }
        if self.description.is_some_and(holds) {
            return Err(
                "the description holds an API key or access token; never paste one into a key's fields",
            );
        }
        if self.contact.is_some_and(|c| {
            [&c.first_name, &c.last_name, &c.login, &c.email]
                .iter()
                .any(|f| holds(f))
        }) {
            return Err(
                "the contact holds an API key or access token; never paste one into a key's fields",
            );
        }
        if self
            .metadata
            .is_some_and(|m| m.iter().any(|(k, v)| holds(k) || holds(v)))
        {
            return Err(
                "the metadata holds an API key or access token; never paste one into a key's fields",
            );
        }
        Ok(())
    }
}

/// Who to tell about a key: shown in audit and integration history and used
/// for expiry reminders.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Contact {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Login name in the host application.
    pub login: String,
    /// E-mail address, for reminders.
    pub email: String,
}

impl Contact {
    /// A contact from its four parts.
    pub fn new(
        first_name: impl Into<String>,
        last_name: impl Into<String>,
        login: impl Into<String>,
        email: impl Into<String>,
    ) -> Contact {
        Contact {
            first_name: first_name.into(),
            last_name: last_name.into(),
            login: login.into(),
            email: email.into(),
        }
    }
}

/// Whether a key may be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Status {
    /// In use.
    Active,
    /// Switched off, reversibly.
    Disabled,
    /// Switched off for good.
    Revoked {
        /// When it was revoked.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// Why, as given by the administrator.
        reason: String,
    },
}

/// Reads the form `Status` writes (`{"state": "revoked", "at": ..., "reason":
/// ...}`), refusing a field it does not know, and `at` or `reason` on a
/// status that has none (serde's derive skips any field beside a unit
/// variant's tag).
impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum State {
            Active,
            Disabled,
            Revoked,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct StatusRepr {
            state: State,
            #[serde(default, with = "time::serde::rfc3339::option")]
            at: Option<OffsetDateTime>,
            reason: Option<String>,
        }
        let r = StatusRepr::deserialize(deserializer)?;
        match (r.state, r.at, r.reason) {
            (State::Active, None, None) => Ok(Status::Active),
            (State::Disabled, None, None) => Ok(Status::Disabled),
            (State::Revoked, Some(at), Some(reason)) => Ok(Status::Revoked { at, reason }),
            (State::Revoked, None, _) => Err(serde::de::Error::missing_field("at")),
            (State::Revoked, _, None) => Err(serde::de::Error::missing_field("reason")),
            (State::Active | State::Disabled, ..) => Err(serde::de::Error::custom(
                "only a revoked status has `at` and `reason`",
            )),
        }
    }
}

/// Rotation links of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Rotation {
    /// The key this one replaced.
    pub rotated_from: Option<KeyId>,
    /// The key that replaced this one.
    pub rotated_to: Option<KeyId>,
    /// Until when this (replaced) key keeps working.
    pub grace_until: Option<OffsetDateTime>,
}

/// An instant as Unix nanoseconds: what records keep, 8 bytes instead of
/// 16, compared with one instruction on the verify path. Covers the years
/// 1677 to 2262; instants beyond saturate (a deadline in 2300 is kept as
/// one in 2262). A deadline the ring works out past the range (a default
/// lifetime, idle period or maximum lifetime added to an instant near
/// 2262) saturates to [`NEVER`] instead: no key expires after 2262.
pub(crate) type Nanos = i64;
/// "No such instant" for deadlines: never reached.
pub(crate) const NEVER: Nanos = i64::MAX;
/// "No such instant" for last use: before everything.
pub(crate) const NOT_YET: Nanos = i64::MIN;

pub(crate) fn nanos(t: OffsetDateTime) -> Nanos {
    t.unix_timestamp_nanos()
        .clamp(i128::from(NOT_YET + 1), i128::from(NEVER - 1)) as Nanos
}

pub(crate) fn instant(n: Nanos) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn optional(n: Nanos) -> Option<OffsetDateTime> {
    (n != NEVER && n != NOT_YET).then(|| instant(n))
}

/// The status of a record, as kept: one byte (the revocation's time and
/// reason live with the rarely used fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum StatusCode {
    Active,
    Disabled,
    Revoked,
}

/// The rarely set fields of a record, boxed so that a plain key does not
/// pay for them: the key's own expiry policy and its deadline, the end of a
/// rotation's grace and the use limit (which `verify` reads only when the
/// key's [`Shape`] says it has them), and the fields it reads never or only
/// for a bound key. Its `Default` holds each field's "not set" value, those
/// of [`Key::blank`], so that [`Key::tidy`] drops a box with nothing set.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Extra {
    /// The deadline of the key's own policy, capped by the ring's maximum;
    /// `NEVER` without one.
    pub(crate) expires_at: Nanos,
    /// The end of the rotation grace of a replaced key; `NEVER` without one.
    pub(crate) grace_until: Nanos,
    pub(crate) use_limit: Option<NonZeroU64>,
    /// `None`: governed by the ring's default policy.
    pub(crate) expiry: Option<ExpiryPolicy>,
    pub(crate) description: Option<Box<str>>,
    pub(crate) contact: Option<Contact>,
    pub(crate) rotated_from: Option<KeyId>,
    pub(crate) rotated_to: Option<KeyId>,
    pub(crate) revoked: Option<(Nanos, Box<str>)>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) bindings: Bindings,
    /// Access tokens issued up to this instant are refused by strict checks
    /// (set by `regenerate`).
    pub(crate) tokens_after: Option<Nanos>,
}

impl Default for Extra {
    fn default() -> Extra {
        Extra {
            expires_at: NEVER,
            grace_until: NEVER,
            use_limit: None,
            expiry: None,
            description: None,
            contact: None,
            rotated_from: None,
            rotated_to: None,
            revoked: None,
            metadata: BTreeMap::new(),
            bindings: Bindings::default(),
            tokens_after: None,
        }
    }
}

impl Extra {
    fn is_empty(&self) -> bool {
        *self == Extra::default()
    }

    /// Whether nothing but the four fields [`Key`]'s `Debug` shows as its
    /// own is set: the box it would not have had before they moved here.
    fn only_terms(&self) -> bool {
        let Extra {
            expires_at: _,
            grace_until: _,
            use_limit: _,
            expiry: _,
            description,
            contact,
            rotated_from,
            rotated_to,
            revoked,
            metadata,
            bindings,
            tokens_after,
        } = self;
        description.is_none()
            && contact.is_none()
            && rotated_from.is_none()
            && rotated_to.is_none()
            && revoked.is_none()
            && metadata.is_empty()
            && bindings.is_empty()
            && tokens_after.is_none()
    }
}

/// Shows the fields that are not [`Key`]'s own in its `Debug` (the four
/// terms are shown there, as the record's fields).
impl fmt::Debug for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extra")
            .field("description", &self.description)
            .field("contact", &self.contact)
            .field("rotated_from", &self.rotated_from)
            .field("rotated_to", &self.rotated_to)
            .field("revoked", &self.revoked)
            .field("metadata", &self.metadata)
            .field("bindings", &self.bindings)
            .field("tokens_after", &self.tokens_after)
            .finish()
    }
}

static NO_METADATA: BTreeMap<String, String> = BTreeMap::new();
static NO_BINDINGS: Bindings = Bindings {
    client_cert: None,
    networks: Vec::new(),
};

/// A use count that `verify` bumps in place; clones and comparisons read it.
#[derive(Debug, Default)]
pub(crate) struct Counter(pub(crate) AtomicU64);

impl Clone for Counter {
    fn clone(&self) -> Self {
        Counter(AtomicU64::new(self.get()))
    }
}

impl PartialEq for Counter {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Counter {}

impl Counter {
    pub(crate) fn new(n: u64) -> Counter {
        Counter(AtomicU64::new(n))
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// An instant that `verify` moves forward in place.
#[derive(Debug)]
pub(crate) struct Stamp(AtomicI64);

impl Clone for Stamp {
    fn clone(&self) -> Self {
        Stamp(AtomicI64::new(self.get()))
    }
}

impl PartialEq for Stamp {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Stamp {}

impl Stamp {
    pub(crate) fn new(n: Nanos) -> Stamp {
        Stamp(AtomicI64::new(n))
    }

    #[inline]
    pub(crate) fn get(&self) -> Nanos {
        self.0.load(Ordering::Relaxed)
    }
}

/// A flag on a record that is not part of the key's value: clones start
/// clear and comparisons ignore it. `Key::dirty` ("usage changed since the
/// record was last written") and `Key::kept` ("this record's usage is a
/// mirror of its store's table slot").
#[derive(Default)]
pub(crate) struct Flag(AtomicBool);

impl fmt::Debug for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

impl Clone for Flag {
    fn clone(&self) -> Self {
        Flag::default()
    }
}

impl PartialEq for Flag {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Flag {}

impl Flag {
    #[inline]
    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The record of an API key. It never contains the plaintext: only the store
/// keeps the key's hash, beside this record.
///
/// **What is stored, not the state now.** A [`revoke_all`](crate::KeyRing::revoke_all)
/// is one settings write (an epoch), not a write per key, and expiry
/// follows from the clock and the ring's default: neither is in the
/// record. After a `revoke_all`, [`status`](Self::status) still reads
/// `Active`, and [`own_deadline`](Self::own_deadline) is not the end of a
/// rotation's grace or of the default. To show a key's state (in an
/// administrator's view, say), ask the ring:
/// [`KeyRing::state`](crate::KeyRing::state) and
/// [`KeyRing::expires_at`](crate::KeyRing::expires_at), or list by state
/// with [`ListFilter::state`](crate::ListFilter::state).
///
/// The fields `verify` reads on its common path come first, kept small
/// (times as nanoseconds, status as a byte, the shape of the rarely read
/// fields as flags): with the hash before them they end within 96 bytes of
/// the start of the record's allocation (see
/// [`StoredKey`](crate::StoredKey)). Rarely set fields are boxed, the use
/// limit, the key's own expiry policy, its deadline and a rotation's grace
/// among them (read when the shape says so): the record is 88 bytes, 120
/// with the hash.
///
/// A stored form that would read as more than the ring granted does not
/// read at all (fail closed): a `use_limit` of 0 (it would read as no
/// limit), an expiry policy with a deadline (an instant, a date, a
/// lifetime) without its resolved `expires_at` (`verify` goes by that, so
/// the key would never expire), or a `rotated_to` without `grace_until`
/// (the replaced key would never stop working). A
/// [`FileStore`](crate::FileStore) record holding one is corrupt.
#[derive(Clone, PartialEq, Eq)]
#[repr(C)]
pub struct Key {
    /// Successful verifications, counted in place by `verify`.
    pub(crate) uses: Counter,
    /// The last successful verification (to the second), moved in place.
    pub(crate) last_used_at: Stamp,
    pub(crate) created_at: Nanos,
    /// The ring's revoke-all epoch when the key was issued.
    pub(crate) epoch: u64,
    pub(crate) status: StatusCode,
    /// Set by `verify` when it changed the usage; cleared by a write.
    pub(crate) dirty: Flag,
    /// Whether the key has bindings (kept with the rarely set fields), so
    /// `verify` looks there only when it must.
    pub(crate) bound: bool,
    /// Which of the boxed fields `verify` must read; kept by
    /// [`tidy`](Self::tidy).
    pub(crate) shape: Shape,
    /// Set by a store that keeps this record's usage elsewhere (a table
    /// slot, see `store::chunks`), by `MemoryStore` on each record it
    /// takes: the record's usage is then a mirror, and the ring's `Carry`
    /// must not add uses the slot already holds.
    pub(crate) kept: Flag,
    // The fields `verify` reads only for a key that needs them, or never.
    pub(crate) id: KeyId,
    /// The hint, owner and name, in one allocation.
    pub(crate) labels: Labels,
    pub(crate) scopes: ScopeSet,
    pub(crate) extra: Option<Box<Extra>>,
}

// The record's fields as they were before the four terms moved into
// `Extra`: those shown as the record's own, and `extra` only when it holds
// more than them.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("uses", &self.uses)
            .field("last_used_at", &self.last_used_at)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at_nanos())
            .field("epoch", &self.epoch)
            .field("status", &self.status)
            .field("dirty", &self.dirty)
            .field("bound", &self.bound)
            .field("shape", &self.shape)
            .field("id", &self.id)
            .field("grace_until", &self.grace_until_nanos())
            .field("use_limit", &self.limit())
            .field("expiry", &self.expiry())
            .field("labels", &self.labels)
            .field("scopes", &self.scopes)
            .field("extra", &self.extra.as_deref().filter(|e| !e.only_terms()))
            .finish()
    }
}

/// A key's hint, owner and name in one allocation (a key's scopes take a
/// second, its record a third): `hint NUL owner`, then `NUL name` when it
/// has one. A hint and an owner never hold a NUL (`issue` makes the one,
/// [`Fields::check`] refuses one in the other, and so does reading a
/// stored record, see [`Key`]'s `Deserialize`), so the first two NULs part
/// them; a name may hold one, being last.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Labels(Box<str>);

impl Labels {
    /// The labels of `hint`, `owner` and `name`; neither `hint` nor `owner`
    /// may hold a NUL (see [`Labels`]).
    pub(crate) fn new(hint: &str, owner: &str, name: &str) -> Labels {
        debug_assert!(!hint.contains('\0') && !owner.contains('\0'));
        let mut text = String::with_capacity(
            hint.len() + 1 + owner.len() + if name.is_empty() { 0 } else { 1 + name.len() },
        );
        text.push_str(hint);
        text.push('\0');
        text.push_str(owner);
        if !name.is_empty() {
            text.push('\0');
            text.push_str(name);
        }
        Labels(text.into_boxed_str())
    }

    fn parts(&self) -> (&str, &str, &str) {
        let (hint, rest) = self.0.split_once('\0').unwrap_or((&self.0, ""));
        let (owner, name) = rest.split_once('\0').unwrap_or((rest, ""));
        (hint, owner, name)
    }

    pub(crate) fn hint(&self) -> &str {
        self.parts().0
    }

    pub(crate) fn owner(&self) -> &str {
        self.parts().1
    }

    pub(crate) fn name(&self) -> &str {
        self.parts().2
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (hint, owner, name) = self.parts();
        f.debug_struct("Labels")
            .field("hint", &hint)
            .field("owner", &owner)
            .field("name", &name)
            .finish()
    }
}

/// Which of a record's further fields `verify` has to read, so that for
/// most keys it reads none of them: they lie in the boxed [`Extra`], a
/// further allocation (when they lay in the record, they could lie in a
/// third cache line; reading it cost a stripped-down verify about a quarter
/// of the floor back to back at a million keys, and in the whole verify the
/// saving was within the run-to-run noise: see docs/benchmark-history.md).
/// Derived from those fields by
/// [`Key::tidy`], which every stored record has been through
/// ([`StoredKey::new`](crate::StoredKey) calls it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Shape {
    /// `use_limit` is set.
    pub(crate) limited: bool,
    /// `grace_until` is set.
    pub(crate) graced: bool,
    /// `expiry` is set: the key has a policy of its own.
    pub(crate) own_policy: bool,
    /// `expiry` is an idle timeout.
    pub(crate) own_idle: bool,
}

impl Key {
    /// A new active record: never used, no expiry of its own, nothing in the
    /// rarely set fields. Callers fill in the rest and call
    /// [`tidy`](Self::tidy).
    pub(crate) fn blank(id: KeyId, owner: &str, created_at: OffsetDateTime) -> Key {
        Key {
            uses: Counter::new(0),
            last_used_at: Stamp::new(NOT_YET),
            created_at: nanos(created_at),
            epoch: 0,
            status: StatusCode::Active,
            dirty: Flag::default(),
            bound: false,
            shape: Shape::default(),
            kept: Flag::default(),
            id,
            labels: Labels::new("", owner, ""),
            scopes: ScopeSet::empty(),
            extra: None,
        }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The non-secret display hint: prefix, body version and the first id
    /// characters, e.g. `acme_1AbC9xQ`, so listings show which key is which.
    pub fn hint(&self) -> &str {
        self.labels.hint()
    }

    /// Human-readable name.
    pub fn name(&self) -> &str {
        self.labels.name()
    }

    /// Longer description, if any.
    pub fn description(&self) -> Option<&str> {
        self.extra.as_ref()?.description.as_deref()
    }

    /// The host's user or account id that owns the key.
    pub fn owner(&self) -> &str {
        self.labels.owner()
    }

    /// Sets the hint, keeping the owner and name.
    pub(crate) fn set_hint(&mut self, hint: &str) {
        self.labels = Labels::new(hint, self.owner(), self.name());
    }

    /// Sets the name, keeping the hint and owner.
    pub(crate) fn set_name(&mut self, name: &str) {
        self.labels = Labels::new(self.hint(), self.owner(), name);
    }

    /// Who to tell about the key.
    pub fn contact(&self) -> Option<&Contact> {
        self.extra.as_ref()?.contact.as_ref()
    }

    /// What the key may do.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    /// When the key was issued.
    pub fn created_at(&self) -> OffsetDateTime {
        instant(self.created_at)
    }

    /// The key's own expiry policy; `None` when the ring's default governs
    /// it.
    pub fn expiry(&self) -> Option<ExpiryPolicy> {
        self.extra.as_ref().and_then(|e| e.expiry)
    }

    /// The deadline of the key's own policy as stored (`NEVER` without
    /// one); `verify` reads it when the shape says the key has a policy.
    #[inline]
    pub(crate) fn expires_at_nanos(&self) -> Nanos {
        self.extra.as_ref().map_or(NEVER, |e| e.expires_at)
    }

    /// The end of a rotation's grace (`NEVER` without one).
    #[inline]
    pub(crate) fn grace_until_nanos(&self) -> Nanos {
        self.extra.as_ref().map_or(NEVER, |e| e.grace_until)
    }

    /// The use limit, as kept.
    #[inline]
    pub(crate) fn limit(&self) -> Option<NonZeroU64> {
        self.extra.as_ref().and_then(|e| e.use_limit)
    }

    /// Sets the deadline of the key's own policy (callers then
    /// [`tidy`](Self::tidy)); boxes nothing to set `NEVER` on a key
    /// without rarely set fields.
    pub(crate) fn set_expires_at(&mut self, at: Nanos) {
        if at != NEVER || self.extra.is_some() {
            self.extra_mut().expires_at = at;
        }
    }

    /// Sets the end of a rotation's grace, as
    /// [`set_expires_at`](Self::set_expires_at) does the deadline.
    pub(crate) fn set_grace_until(&mut self, at: Nanos) {
        if at != NEVER || self.extra.is_some() {
            self.extra_mut().grace_until = at;
        }
    }

    /// Sets the use limit, as [`set_expires_at`](Self::set_expires_at)
    /// does the deadline.
    pub(crate) fn set_use_limit(&mut self, limit: Option<NonZeroU64>) {
        if limit.is_some() || self.extra.is_some() {
            self.extra_mut().use_limit = limit;
        }
    }

    /// The fixed deadline of the key's own policy, as stored: capped by
    /// the ring's maximum lifetime in force when the key was issued, the
    /// predecessor's for a rotation's successor (capped by the rotating
    /// ring's maximum from the predecessor's creation). `None` for a key without
    /// one, or governed by the ring's default. The ring also caps it by
    /// its maximum lifetime as it stands, and adds the ring's default, a
    /// rotation's grace and an idle timeout:
    /// [`KeyRing::expires_at`](crate::KeyRing::expires_at) gives when the
    /// key actually stops working.
    pub fn own_deadline(&self) -> Option<OffsetDateTime> {
        // A deadline without a policy of the key's own (only an edited
        // store file holds one: every call and import refuse it) is not
        // what `verify` goes by: the ring's default governs the key.
        self.expiry().and(optional(self.expires_at_nanos()))
    }

    /// Active, disabled or revoked (with time and reason), as stored on
    /// the record: not a [`revoke_all`](crate::KeyRing::revoke_all) (an
    /// epoch in the ring's settings) nor expiry. The key's state now is
    /// [`KeyRing::state`](crate::KeyRing::state).
    pub fn status(&self) -> Status {
        match self.status {
            StatusCode::Active => Status::Active,
            StatusCode::Disabled => Status::Disabled,
            StatusCode::Revoked => {
                let (at, reason) = self
                    .extra
                    .as_ref()
                    .and_then(|e| e.revoked.as_ref())
                    .map_or((NOT_YET + 1, ""), |(at, reason)| (*at, &**reason));
                Status::Revoked {
                    at: instant(at),
                    reason: reason.to_owned(),
                }
            }
        }
    }

    /// The last successful verification (one-second resolution).
    pub fn last_used_at(&self) -> Option<OffsetDateTime> {
        optional(self.last_used_at.get())
    }

    /// Successful verifications so far.
    pub fn uses(&self) -> u64 {
        self.uses.get()
    }

    /// Counts one use at `now`, within the key's use limit: `false` when the
    /// limit is used up (exactly `limit` calls succeed, whatever the
    /// threads). No lock; the last use moves only when the second changes,
    /// so concurrent verifiers of a hot key mostly read its cache line.
    #[inline]
    pub(crate) fn consume(&self, now: Nanos) -> bool {
        // `use_limit` is read only for a key the shape says has one.
        let limit = if self.shape.limited {
            self.limit()
        } else {
            None
        };
        match limit {
            None => {
                self.uses.0.fetch_add(1, Ordering::AcqRel);
            }
            Some(limit) => {
                let taken = self
                    .uses
                    .0
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        // Not `then_some(n + 1)`, which adds first: a count
                        // read from a store can be `u64::MAX`.
                        n.checked_add(1).filter(|&m| m <= limit.get())
                    });
                if taken.is_err() {
                    return false;
                }
            }
        }
        let second = now - now.rem_euclid(1_000_000_000);
        if self.last_used_at.get() < second {
            self.last_used_at.0.fetch_max(second, Ordering::Relaxed);
        }
        if !self.dirty.get() {
            self.dirty.set();
        }
        true
    }

    /// [`consume`](Self::consume) on a new version about to be written: the
    /// use is part of that write, so the usage is not marked unwritten.
    pub(crate) fn spend(&mut self, now: Nanos) -> bool {
        let spent = self.consume(now);
        self.dirty = Flag::default();
        spent
    }

    /// Adds uses counted on an older version of this record after this one
    /// was copied from it, and its later last use; marks the usage changed.
    pub(crate) fn carry_usage(&self, uses: u64, last_used: Nanos) {
        if uses > 0 {
            self.uses.0.fetch_add(uses, Ordering::AcqRel);
        }
        self.last_used_at.0.fetch_max(last_used, Ordering::Relaxed);
        self.dirty.set();
    }

    /// Whether the two records hold the same values but for their usage
    /// (use count and last use), which `verify` moves in place at any
    /// moment: what tells whether an administrative change changed
    /// anything, since a use counted meanwhile is not a change of a field.
    pub(crate) fn eq_but_usage(&self, other: &Key) -> bool {
        // Every field is named, so that one added later must be placed.
        let Key {
            uses: _,
            last_used_at: _,
            dirty: _,
            kept: _,
            created_at,
            epoch,
            status,
            bound,
            shape,
            id,
            labels,
            scopes,
            extra,
        } = self;
        // (The use limit, the own policy, its deadline and the grace are
        // in `extra`.)
        *created_at == other.created_at
            && *epoch == other.epoch
            && *status == other.status
            && *bound == other.bound
            && *shape == other.shape
            && *id == other.id
            && *labels == other.labels
            && *scopes == other.scopes
            && *extra == other.extra
    }

    /// The most successful verifications allowed, if limited.
    pub fn use_limit(&self) -> Option<u64> {
        self.limit().map(NonZeroU64::get)
    }

    /// Whether a rotation handed the key's remaining uses to its successor:
    /// a rotated key with a use limit, which ended at the rotation, whatever
    /// a clock reads (see `KeyRing::consume_limited`).
    pub(crate) fn handed_on(&self) -> bool {
        self.shape.limited && self.extra.as_ref().is_some_and(|e| e.rotated_to.is_some())
    }

    /// Whether the use limit is spent: no use is left.
    pub(crate) fn used_up(&self) -> bool {
        self.limit()
            .is_some_and(|limit| self.uses.get() >= limit.get())
    }

    /// Rotation links, if the key was rotated or is a rotation.
    pub fn rotation(&self) -> Option<Rotation> {
        let extra = self.extra.as_deref();
        let rotation = Rotation {
            rotated_from: extra.and_then(|e| e.rotated_from),
            rotated_to: extra.and_then(|e| e.rotated_to),
            grace_until: optional(self.grace_until_nanos()),
        };
        (rotation != Rotation::default()).then_some(rotation)
    }

    /// What a request must present besides the key.
    pub fn bindings(&self) -> &Bindings {
        self.extra.as_ref().map_or(&NO_BINDINGS, |e| &e.bindings)
    }

    /// Free-form host data.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.extra.as_ref().map_or(&NO_METADATA, |e| &e.metadata)
    }

    /// Holds the record's free text to the limits `issue`, `update` and
    /// `revoke` hold it to (see [`Fields::check`]); for records that come
    /// from outside, such as an import.
    pub(crate) fn check_fields(&self) -> Result<(), &'static str> {
        Fields {
            owner: Some(self.owner()),
            name: Some(self.name()),
            description: self.description(),
            contact: self.contact(),
            metadata: Some(self.metadata()),
            scopes: Some(&self.scopes),
            bindings: Some(self.bindings()),
        }
        .check()?;
        if self.hint().len() > MAX_HINT_LEN {
            return Err("a hint is limited to the prefix and the id's first characters");
        }
        if let Some(ExpiryPolicy::Lifetime(d) | ExpiryPolicy::Idle(d)) = self.expiry()
            && !d.is_positive()
        {
            return Err("an expiry period must be positive");
        }
        // `verify` goes by the resolved deadline, not the policy: a policy
        // with a deadline needs one, no later than the policy gives from
        // the key's creation. Not a rotation's successor: it keeps its
        // predecessor's deadline, which its own creation does not bound. It
        // is earlier than the successor's lifetime gives, unless the
        // rotation read a clock behind the one that issued the predecessor
        // (another ring's, one stepped back, a machine booted with a clock
        // days or years behind): then later by as much, and the export of
        // such a store must import. (Not a way around the check: an edited
        // record can as well say `never`.)
        let successor = self
            .extra
            .as_ref()
            .is_some_and(|e| e.rotated_from.is_some());
        if !successor
            && let Some(policy) = self.expiry()
            && let Some(deadline) = policy.deadline(instant(self.created_at))
            && self.expires_at_nanos() > nanos(deadline)
        {
            return Err("the expiry policy's deadline is missing or later than the policy gives");
        }
        // Without a policy the ring's default governs: no deadline of its own.
        if self.expiry().is_none() && self.expires_at_nanos() != NEVER {
            return Err("a deadline needs an expiry policy of the key's own");
        }
        // (A rotated key without the end of its grace does not even read:
        // see `Deserialize for Key`.)
        match self.status() {
            Status::Revoked { reason, .. } if reason.len() > MAX_FIELD_LEN => {
                Err("a reason is limited to 256 bytes")
            }
            // As `revoke` refuses it: kept in the clear and exported.
            Status::Revoked { reason, .. } if !crate::scan::scan(&reason).is_empty() => Err(
                "the reason holds an API key or access token; never paste one into a key's fields",
            ),
            _ => Ok(()),
        }
    }

    /// The rarely set fields, to change them.
    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Drops the box of rarely set fields when nothing is in it, and keeps
    /// the binding flag and the [`Shape`] true to the fields.
    pub(crate) fn tidy(&mut self) {
        self.bound = self.extra.as_ref().is_some_and(|e| !e.bindings.is_empty());
        let expiry = self.expiry();
        self.shape = Shape {
            limited: self.limit().is_some(),
            graced: self.grace_until_nanos() != NEVER,
            own_policy: expiry.is_some(),
            own_idle: matches!(expiry, Some(ExpiryPolicy::Idle(_))),
        };
        if self.extra.as_ref().is_some_and(|e| e.is_empty()) {
            self.extra = None;
        }
    }

    /// Sets the status, keeping the revocation's time and reason with it.
    pub(crate) fn set_status(&mut self, status: Status) {
        match status {
            Status::Active => self.status = StatusCode::Active,
            Status::Disabled => self.status = StatusCode::Disabled,
            Status::Revoked { at, reason } => {
                self.status = StatusCode::Revoked;
                self.extra_mut().revoked = Some((nanos(at), reason.into()));
            }
        }
    }

    /// Sets the key's own policy and its resolved deadline.
    pub(crate) fn set_expiry(
        &mut self,
        policy: Option<ExpiryPolicy>,
        deadline: Option<OffsetDateTime>,
    ) {
        let deadline = deadline.map_or(NEVER, nanos);
        if policy.is_some() || deadline != NEVER || self.extra.is_some() {
            let extra = self.extra_mut();
            extra.expiry = policy;
            extra.expires_at = deadline;
        }
    }
}

/// The stored form of a [`Key`]: fields by name, instants in RFC 3339. A
/// field at its default (empty, none, zero) is left out, and read as the
/// default when absent: smaller files that open faster, and records written
/// with every field still read (builds before this form cannot read it).
/// `status` has no default: a record without it does not read. A field this
/// version does not know is refused, not skipped: a misspelt restriction
/// (`expire_at`, `use_limt`) would otherwise read as a key without it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRepr<'a> {
    id: KeyId,
    // Borrowed: from the record when written, from the input when read
    // (where it holds no escape), as they are copied into the record's
    // `Labels`.
    #[serde(borrow)]
    hint: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "str::is_empty")]
    name: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<Box<str>>,
    #[serde(borrow)]
    owner: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    contact: Option<Contact>,
    scopes: ScopeSet,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry: Option<ExpiryPolicy>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    expires_at: Option<OffsetDateTime>,
    status: Status,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    last_used_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "is_zero")]
    uses: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    use_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated_from: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated_to: Option<KeyId>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    grace_until: Option<OffsetDateTime>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_entries"
    )]
    metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Bindings::is_empty")]
    bindings: Bindings,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    tokens_after: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "is_zero")]
    epoch: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Reads stored metadata, refusing a key that appears twice (`{"team":
/// "a", "team": "b"}`): no call writes one, and which value won would be
/// the parser's choice. The key is not repeated in the error.
fn unique_entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Entries;
    impl<'de> serde::de::Visitor<'de> for Entries {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("metadata: an object of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if entries.insert(key, value).is_some() {
                    return Err(serde::de::Error::custom("a metadata key appears twice"));
                }
            }
            Ok(entries)
        }
    }
    d.deserialize_map(Entries)
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let extra = self.extra.as_deref();
        KeyRepr {
            id: self.id,
            hint: Cow::Borrowed(self.hint()),
            name: Cow::Borrowed(self.name()),
            description: extra.and_then(|e| e.description.clone()),
            owner: Cow::Borrowed(self.owner()),
            contact: extra.and_then(|e| e.contact.clone()),
            scopes: self.scopes.clone(),
            created_at: self.created_at(),
            expiry: self.expiry(),
            expires_at: self.own_deadline(),
            status: self.status(),
            last_used_at: self.last_used_at(),
            uses: self.uses(),
            use_limit: self.use_limit(),
            rotated_from: extra.and_then(|e| e.rotated_from),
            rotated_to: extra.and_then(|e| e.rotated_to),
            grace_until: optional(self.grace_until_nanos()),
            metadata: self.metadata().clone(),
            bindings: self.bindings().clone(),
            tokens_after: extra.and_then(|e| e.tokens_after).map(instant),
            epoch: self.epoch,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = KeyRepr::deserialize(deserializer)?;
        // `issue` makes no hint and takes no owner with a NUL, which parts
        // the two from the name in memory (see `Labels`).
        if r.hint.contains('\0') {
            return Err(serde::de::Error::custom(
                "hint must not contain a NUL character",
            ));
        }
        if r.owner.contains('\0') {
            return Err(serde::de::Error::custom(
                "owner must not contain a NUL character",
            ));
        }
        // `issue` refuses a limit of 0 and this build never writes one (an
        // early development build wrote 0 for a rotated, fully spent key).
        // Read as "no limit", a 0 would grant unlimited uses: refuse it.
        let use_limit = match r.use_limit {
            Some(0) => {
                return Err(serde::de::Error::custom(
                    "use_limit must be at least 1 (absent: no limit)",
                ));
            }
            limit => limit.and_then(NonZeroU64::new),
        };
        // `verify` goes by the resolved deadline, not the policy (see
        // `check_fields`), and every call that sets a policy with a deadline
        // resolves it: read without one, such a key would never expire.
        if r.expires_at.is_none()
            && r.expiry
                .is_some_and(|policy| policy.deadline(r.created_at).is_some())
        {
            return Err(serde::de::Error::custom(
                "expires_at is missing, but the expiry policy has a deadline",
            ));
        }
        // A rotation always ends the replaced key's grace (a zero grace at
        // the rotation), and `verify` goes by `grace_until` alone: read
        // without one, the replaced key would verify beside its successor
        // for ever.
        if r.rotated_to.is_some() && r.grace_until.is_none() {
            return Err(serde::de::Error::custom(
                "grace_until is missing, but the key was rotated (rotated_to)",
            ));
        }
        let extra = Extra {
            // The deadline and the policy are set below.
            expires_at: NEVER,
            grace_until: r.grace_until.map_or(NEVER, nanos),
            use_limit,
            expiry: None,
            description: r.description,
            contact: r.contact,
            rotated_from: r.rotated_from,
            rotated_to: r.rotated_to,
            revoked: None,
            metadata: r.metadata,
            bindings: r.bindings,
            tokens_after: r.tokens_after.map(nanos),
        };
        let mut key = Key {
            id: r.id,
            epoch: r.epoch,
            created_at: nanos(r.created_at),
            status: StatusCode::Active,
            last_used_at: Stamp::new(r.last_used_at.map_or(NOT_YET, nanos)),
            uses: Counter::new(r.uses),
            dirty: Flag::default(),
            bound: false,
            shape: Shape::default(),
            kept: Flag::default(),
            labels: Labels::new(&r.hint, &r.owner, &r.name),
            scopes: r.scopes,
            // Most keys have none of these: no allocation for them.
            extra: (!extra.is_empty()).then(|| Box::new(extra)),
        };
        key.set_expiry(r.expiry, r.expires_at);
        key.set_status(r.status);
        key.tidy();
        Ok(key)
    }
}

/// A request to issue a key.
///
/// ```
/// use keyward::{ExpiryPolicy, NewKey, ScopeSet};
/// let request = NewKey::new("acct_42")
///     .name("billing sync")
///     .scopes(ScopeSet::parse(["invoices:read"])?)
///     .expiry(ExpiryPolicy::days(90));
/// # let _ = request;
/// # Ok::<(), keyward::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct NewKey {
    pub(crate) owner: String,
    pub(crate) name: String,
    pub(crate) description: Option<String>,
    pub(crate) contact: Option<Contact>,
    pub(crate) scopes: ScopeSet,
    pub(crate) owner_scopes: Option<ScopeSet>,
    pub(crate) expiry: Option<ExpiryPolicy>,
    pub(crate) use_limit: Option<u64>,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) bindings: Bindings,
}

impl NewKey {
    /// A key for `owner` (the host's user or account id), with no scopes and
    /// the ring's default expiry until told otherwise.
    pub fn new(owner: impl Into<String>) -> NewKey {
        NewKey {
            owner: owner.into(),
            name: String::new(),
            description: None,
            contact: None,
            scopes: ScopeSet::empty(),
            owner_scopes: None,
            expiry: None,
            use_limit: None,
            metadata: BTreeMap::new(),
            bindings: Bindings::default(),
        }
    }

    /// Human-readable name.
    pub fn name(mut self, name: impl Into<String>) -> NewKey {
        self.name = name.into();
        self
    }

    /// Longer description.
    pub fn description(mut self, description: impl Into<String>) -> NewKey {
        self.description = Some(description.into());
        self
    }

    /// Who to tell about the key.
    pub fn contact(mut self, contact: Contact) -> NewKey {
        self.contact = Some(contact);
        self
    }

    /// What the key may do (by default: nothing that needs a scope).
    pub fn scopes(mut self, scopes: ScopeSet) -> NewKey {
        self.scopes = scopes;
        self
    }

    /// The scopes the owner holds: the key's scopes are capped to them, so a
    /// key never carries more than its owner.
    pub fn owner_scopes(mut self, held: ScopeSet) -> NewKey {
        self.owner_scopes = Some(held);
        self
    }

    /// The key's own expiry policy, instead of the ring's default.
    pub fn expiry(mut self, policy: ExpiryPolicy) -> NewKey {
        self.expiry = Some(policy);
        self
    }

    /// At most `limit` successful verifications.
    pub fn use_limit(mut self, limit: u64) -> NewKey {
        self.use_limit = Some(limit);
        self
    }

    /// Binds the key to a client certificate: a request must present it
    /// (see [`RequestContext::client_cert`](crate::RequestContext::client_cert)).
    /// The fingerprint of empty input is no certificate's: `issue` refuses
    /// a key bound to it with [`Error::InvalidInput`](crate::Error::InvalidInput)
    /// (see [`Bindings::client_cert`]).
    pub fn client_cert(mut self, fingerprint: CertFingerprint) -> NewKey {
        self.bindings.client_cert = Some(fingerprint);
        self
    }

    /// Lets the key be used from `network` (call once per network; a key
    /// with none may be used from anywhere).
    pub fn allow_network(mut self, network: Network) -> NewKey {
        self.bindings.networks.push(network);
        self
    }

    /// One metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> NewKey {
        self.metadata.insert(key.into(), value.into());
        self
    }
}

/// A freshly issued key: its record and its plaintext, which exists only
/// here. `Debug` shows the record and the redacted secret.
#[derive(Debug)]
#[non_exhaustive]
pub struct Issued {
    /// The stored record.
    pub key: Key,
    /// The plaintext key to hand to its holder once.
    pub secret: Secret,
}

/// A successful verification: who the caller is and what it may do.
///
/// It shares the record with the store (no copy, no allocation on the hot
/// path).
///
/// # JSON form
///
/// A `Verified` serializes (e.g. with `serde_json`) to one flat object, the
/// principal of a request, to forward to a downstream service, a request
/// log or a template: `key` (the key's [`KeyId`], named as in an
/// [`Event`](crate::Event)), `owner`, `scopes` (as in a [`Key`]:
/// `"unrestricted"` or a list of scope strings) and `metadata` (an object
/// of strings), left out when empty, as in a `Key`. The same `key`,
/// `owner` and `scopes` as an [`AccessClaims`](crate::AccessClaims). A
/// release may add fields, never rename or remove one.
///
/// ```json
/// {"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":["invoices:read"],"metadata":{"team":"billing"}}
/// {"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":"unrestricted"}
/// ```
///
/// It holds no key material: not the secret, nor the stored hash. Nor the
/// rest of the record (name, description, contact, bindings, usage):
/// serialize [`key`](Self::key) for that, which holds no key material
/// either, but does hold the contact's personal data.
///
/// ```
/// use keyward::{KeyRing, MemoryStore, NewKey, ScopeSet};
/// let ring = KeyRing::builder("acme").build(MemoryStore::new())?;
/// let issued = ring.issue(
///     NewKey::new("acct_42")
///         .scopes(ScopeSet::parse(["invoices:read"])?)
///         .metadata("team", "billing"),
/// )?;
/// let who = ring.verify(issued.secret.expose())?;
/// assert_eq!(
///     serde_json::to_string(&who)?,
///     format!(
///         r#"{{"key":"{}","owner":"acct_42","scopes":["invoices:read"],"metadata":{{"team":"billing"}}}}"#,
///         who.id(),
///     ),
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// It serializes only: there is no `Deserialize`, and no other way to
/// build one outside this crate. A `Verified` is the ring's word that a
/// key's secret matched; one rebuilt from text would be a principal that
/// no key authenticated. Read the JSON back as plain JSON
/// (`serde_json::Value`) or into a type of your own.
#[derive(Clone)]
pub struct Verified {
    held: Held,
}

/// What a [`Verified`] holds of the key it names.
#[derive(Clone)]
enum Held {
    /// The record judged (a host store's, or a key with a use limit).
    Record(Arc<StoredKey>),
    /// The table chunk of `MemoryStore` that held the key's slot, and the
    /// slot's place in it: the chunk, not the table, so a later write
    /// (which copies a chunk a `Verified` holds) leaves it as it was
    /// verified, usage aside.
    Slot { chunk: Chunk, index: u32 },
}

impl fmt::Debug for Verified {
    /// The record's `Debug` (which prints no hash value), with its usage
    /// raised to the slot's first, as [`key`](Self::key) does, so that it
    /// shows live usage, not a lagging mirror.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.key();
        f.debug_struct("Verified")
            .field("entry", self.record())
            .finish()
    }
}

/// The JSON form of a [`Verified`]: borrowed from the record, copied
/// nowhere.
#[derive(Serialize)]
struct VerifiedRepr<'a> {
    key: KeyId,
    owner: &'a str,
    scopes: &'a ScopeSet,
    #[serde(skip_serializing_if = "no_entries")]
    metadata: &'a BTreeMap<String, String>,
}

fn no_entries(metadata: &&BTreeMap<String, String>) -> bool {
    metadata.is_empty()
}

impl Serialize for Verified {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        VerifiedRepr {
            key: self.id(),
            owner: self.owner(),
            scopes: self.scopes(),
            metadata: self.metadata(),
        }
        .serialize(serializer)
    }
}

impl Verified {
    /// The ring's word for the record it judged.
    pub(crate) fn of_record(record: Arc<StoredKey>) -> Verified {
        Verified {
            held: Held::Record(record),
        }
    }

    /// The ring's word for the key in the table slot `at`.
    #[inline]
    pub(crate) fn of_slot(at: SlotRef<'_>) -> Verified {
        Verified {
            held: Held::Slot {
                chunk: Arc::clone(at.chunk),
                index: at.index,
            },
        }
    }

    /// The record of the version verified.
    #[inline]
    pub(crate) fn record(&self) -> &Arc<StoredKey> {
        match &self.held {
            Held::Record(record) => record,
            Held::Slot { chunk, index } => slot_at(chunk, *index).record(),
        }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.record().key.id
    }

    /// The key's owner.
    pub fn owner(&self) -> &str {
        self.record().key.owner()
    }

    /// The key's scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.record().key.scopes
    }

    /// The key's metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.record().key.metadata()
    }

    /// The whole record, its usage counting the verification that
    /// returned it.
    pub fn key(&self) -> &Key {
        if let Held::Slot { chunk, index } = &self.held {
            // The slot keeps the usage; the record mirrors it.
            slot_at(chunk, *index).refresh();
        }
        &self.record().key
    }
}

/// Changes to a key's descriptive fields, for
/// [`KeyRing::update`](crate::KeyRing::update). Fields left unset stay as
/// they are. Scopes may only narrow.
///
/// ```
/// use keyward::{KeyUpdate, ScopeSet};
/// let change = KeyUpdate::new().name("nightly export").scopes(ScopeSet::parse(["invoices:read"])?);
/// # let _ = change;
/// # Ok::<(), keyward::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct KeyUpdate {
    pub(crate) name: Option<String>,
    pub(crate) description: Option<Option<String>>,
    pub(crate) contact: Option<Option<Contact>>,
    pub(crate) metadata: Option<BTreeMap<String, String>>,
    pub(crate) scopes: Option<ScopeSet>,
    pub(crate) bindings: Option<Bindings>,
}

impl KeyUpdate {
    /// No change yet.
    pub fn new() -> KeyUpdate {
        KeyUpdate::default()
    }

    /// A new name.
    pub fn name(mut self, name: impl Into<String>) -> KeyUpdate {
        self.name = Some(name.into());
        self
    }

    /// A new description (`None` removes it).
    pub fn description(mut self, description: Option<String>) -> KeyUpdate {
        self.description = Some(description);
        self
    }

    /// A new contact (`None` removes it).
    pub fn contact(mut self, contact: Option<Contact>) -> KeyUpdate {
        self.contact = Some(contact);
        self
    }

    /// New metadata, replacing all entries.
    pub fn metadata(mut self, metadata: BTreeMap<String, String>) -> KeyUpdate {
        self.metadata = Some(metadata);
        self
    }

    /// New bindings, replacing the old ones.
    pub fn bindings(mut self, bindings: Bindings) -> KeyUpdate {
        self.bindings = Some(bindings);
        self
    }

    /// Narrower scopes: every scope must already be granted by the key.
    pub fn scopes(mut self, scopes: ScopeSet) -> KeyUpdate {
        self.scopes = Some(scopes);
        self
    }
}

/// A key that expires soon, with what a reminder needs: see
/// [`KeyRing::expiring_within`](crate::KeyRing::expiring_within).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reminder {
    /// The key, with its contact.
    pub key: Key,
    /// When it stops working unless renewed (for an idle timeout: unless
    /// used again).
    pub expires_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use std::mem::{offset_of, size_of};

    use crate::StoredKey;
    use crate::hash::KeyHash;

    /// `Arc`'s two counts before the data.
    const ARC_COUNTS: usize = 16;

    #[test]
    fn what_verify_reads_of_a_plain_key_ends_96_bytes_into_its_allocation() {
        let key = offset_of!(StoredKey, key);
        let ends = [
            offset_of!(StoredKey, hash) + size_of::<KeyHash>(),
            key + offset_of!(Key, uses) + size_of::<Counter>(),
            key + offset_of!(Key, last_used_at) + size_of::<Stamp>(),
            key + offset_of!(Key, created_at) + size_of::<Nanos>(),
            key + offset_of!(Key, epoch) + size_of::<u64>(),
            key + offset_of!(Key, status) + size_of::<StatusCode>(),
            key + offset_of!(Key, dirty) + size_of::<Flag>(),
            key + offset_of!(Key, bound) + size_of::<bool>(),
            key + offset_of!(Key, shape) + size_of::<Shape>(),
        ];
        for end in ends {
            assert!(
                ARC_COUNTS + end <= 96,
                "a hot field ends at {}",
                ARC_COUNTS + end
            );
        }
        // The hot fields come first, in this order, ahead of the rest.
        let order = [
            offset_of!(Key, uses),
            offset_of!(Key, last_used_at),
            offset_of!(Key, created_at),
            offset_of!(Key, epoch),
            offset_of!(Key, status),
            offset_of!(Key, dirty),
            offset_of!(Key, bound),
            offset_of!(Key, shape),
            offset_of!(Key, id),
            offset_of!(Key, labels),
            offset_of!(Key, scopes),
            offset_of!(Key, extra),
        ];
        assert!(order.is_sorted(), "{order:?}");
        assert_eq!(offset_of!(StoredKey, hash), 0);
    }

    /// The fields the shape guards (use limit, grace, own policy and its
    /// deadline) are boxed with the rarely set ones: the record is 88
    /// bytes, 120 with its hash, so its `Arc` asks malloc for 136 (144
    /// handed out) where it asked for 184 (192).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_record_is_120_bytes_with_its_hash() {
        assert_eq!(size_of::<Key>(), 88);
        assert_eq!(size_of::<StoredKey>(), 120);
        assert_eq!(ARC_COUNTS + size_of::<StoredKey>(), 136);
    }

    #[test]
    fn tidy_derives_the_shape_from_the_fields() {
        let mut key = blank();
        key.tidy();
        assert_eq!(key.shape, Shape::default());
        assert!(key.extra.is_none());
        key.set_use_limit(NonZeroU64::new(3));
        key.set_grace_until(5);
        key.set_expiry(Some(ExpiryPolicy::Idle(time::Duration::days(1))), None);
        key.tidy();
        assert_eq!(
            key.shape,
            Shape {
                limited: true,
                graced: true,
                own_policy: true,
                own_idle: true
            }
        );
        let deadline = datetime!(2026-12-27 12:00 UTC);
        key.set_expiry(Some(ExpiryPolicy::days(30)), Some(deadline));
        key.tidy();
        assert!(key.shape.own_policy && !key.shape.own_idle);
        assert_eq!(key.own_deadline(), Some(deadline));
        // Each field alone sets its flag, and keeps the box.
        key.set_use_limit(None);
        key.set_grace_until(NEVER);
        key.tidy();
        assert_eq!(
            key.shape,
            Shape {
                own_policy: true,
                ..Shape::default()
            }
        );
        key.set_expiry(None, None);
        key.set_grace_until(7);
        key.tidy();
        assert_eq!(
            key.shape,
            Shape {
                graced: true,
                ..Shape::default()
            }
        );
        assert!(key.extra.is_some());
        // Unset again, they leave an empty box, which `tidy` drops: the
        // box's default is a fresh key's "not set".
        key.set_grace_until(NEVER);
        key.tidy();
        assert_eq!(key.shape, Shape::default());
        assert!(key.extra.is_none(), "{:?}", key.extra);
        assert_eq!(key, blank());
        // Setting "not set" on a key without the box makes none.
        key.set_use_limit(None);
        key.set_grace_until(NEVER);
        key.set_expires_at(NEVER);
        key.set_expiry(None, None);
        assert!(key.extra.is_none());
    }

    #[test]
    fn a_key_with_terms_debugs_as_before_they_moved() {
        // The four terms show as the record's own fields, and `extra`
        // shows only when it holds more.
        let mut key = blank();
        key.set_use_limit(NonZeroU64::new(3));
        key.set_grace_until(5);
        key.tidy();
        let shown = format!("{key:?}");
        assert!(shown.contains("grace_until: 5,"), "{shown}");
        assert!(shown.contains("use_limit: Some(3),"), "{shown}");
        assert!(
            shown.contains("expires_at: 9223372036854775807,"),
            "{shown}"
        );
        assert!(shown.ends_with("extra: None }"), "{shown}");
        key.extra_mut().tokens_after = Some(1);
        let shown = format!("{key:?}");
        assert!(shown.contains("extra: Some(Extra { description"), "{shown}");
        assert!(!shown.contains("Extra { expires_at"), "{shown}");
    }

    #[test]
    fn a_stored_record_has_its_shape_even_if_the_caller_forgot_tidy() {
        let mut key = blank();
        key.set_use_limit(NonZeroU64::new(1));
        key.set_grace_until(5);
        let stored = StoredKey::new(key, KeyHash::placeholder());
        assert!(stored.key.shape.limited && stored.key.shape.graced);
    }

    use super::*;

    fn blank() -> Key {
        Key::blank(
            KeyId::from_u64(0x1234_5678),
            "acct_1",
            datetime!(2026-11-27 12:00 UTC),
        )
    }

    fn json(key: &Key) -> serde_json::Value {
        serde_json::to_value(key).unwrap()
    }

    #[test]
    fn stored_form_leaves_fields_at_their_default_out() {
        let stored = json(&blank());
        let mut fields: Vec<&str> = stored
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        // The defaults (name, expiry, expires_at, last_used_at, uses,
        // use_limit, epoch) are absent.
        assert_eq!(
            fields,
            ["created_at", "hint", "id", "owner", "scopes", "status"]
        );
    }

    #[test]
    fn stored_form_round_trips_fields_away_from_their_default() {
        let mut key = blank();
        key.set_name("ci deploy");
        key.epoch = 3;
        key.uses = Counter::new(7);
        key.set_use_limit(NonZeroU64::new(9));
        key.last_used_at = Stamp::new(nanos(datetime!(2026-11-28 8:30 UTC)));
        key.set_expiry(
            Some(ExpiryPolicy::Idle(time::Duration::days(30))),
            Some(datetime!(2026-12-28 8:30 UTC)),
        );
        let stored = json(&key);
        for field in [
            "name",
            "epoch",
            "uses",
            "use_limit",
            "last_used_at",
            "expiry",
            "expires_at",
        ] {
            assert!(stored.get(field).is_some(), "{field} must be written");
        }
        let back: Key = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(json(&back), stored);
        assert_eq!(back.uses(), 7);
        assert_eq!(back.epoch, 3);
    }

    fn verified(key: Key) -> Verified {
        Verified::of_record(Arc::new(StoredKey::new(key, KeyHash::placeholder())))
    }

    /// The JSON form documented on `Verified`, written out by hand: `key`,
    /// `owner`, `scopes`, then `metadata` when there is any; nothing else
    /// of the record, however much of it is set.
    #[test]
    fn verified_serializes_to_the_documented_json() {
        let mut key = Key::blank(
            "0Oa2wCGYzlq".parse().unwrap(),
            "acct_42",
            datetime!(2026-01-01 00:00 UTC),
        );
        key.scopes = ScopeSet::parse(["invoices:read"]).unwrap();
        key.extra_mut()
            .metadata
            .insert("team".into(), "billing".into());
        // The rest of the record, all set: none of it is in the form.
        key.set_hint("acme_10Oa2wCG");
        key.set_name("billing sync");
        key.epoch = 2;
        key.uses = Counter::new(5);
        key.set_use_limit(NonZeroU64::new(9));
        key.last_used_at = Stamp::new(nanos(datetime!(2026-01-02 00:00 UTC)));
        key.set_grace_until(nanos(datetime!(2026-02-01 00:00 UTC)));
        key.set_expiry(
            Some(ExpiryPolicy::days(90)),
            Some(datetime!(2026-04-01 00:00 UTC)),
        );
        let extra = key.extra_mut();
        extra.description = Some("nightly".into());
        extra.contact = Some(Contact::new("Ada", "Lovelace", "ada", "ada@example.com"));
        extra.rotated_from = Some("0Ob3xDHZamr".parse().unwrap());
        extra.bindings.client_cert = Some(CertFingerprint::of_der(b"cert"));
        extra.bindings.networks.push("10.0.0.0/8".parse().unwrap());
        extra.tokens_after = Some(nanos(datetime!(2026-01-01 12:00 UTC)));
        key.tidy();
        let cases = [
            (
                key,
                r#"{"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":["invoices:read"],"metadata":{"team":"billing"}}"#,
            ),
            (
                {
                    let mut k = blank_as("acct_42");
                    k.scopes = ScopeSet::unrestricted();
                    k
                },
                r#"{"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":"unrestricted"}"#,
            ),
            (
                blank_as("acct_7"),
                r#"{"key":"0Oa2wCGYzlq","owner":"acct_7","scopes":[]}"#,
            ),
        ];
        for (key, expected) in cases {
            let who = verified(key);
            assert_eq!(serde_json::to_string(&who).unwrap(), expected, "{who:?}");
        }
    }

    fn blank_as(owner: &str) -> Key {
        let mut key = Key::blank(
            "0Oa2wCGYzlq".parse().unwrap(),
            owner,
            datetime!(2026-01-01 00:00 UTC),
        );
        key.tidy();
        key
    }

    #[test]
    fn stored_use_limit_of_zero_is_refused_not_read_as_unlimited() {
        let mut stored = json(&blank());
        stored["use_limit"] = serde_json::json!(0);
        let error = serde_json::from_value::<Key>(stored.clone()).unwrap_err();
        assert!(error.to_string().contains("use_limit"), "{error}");
        stored["use_limit"] = serde_json::json!(1);
        let key: Key = serde_json::from_value(stored).unwrap();
        assert_eq!(key.use_limit(), Some(1));
    }

    /// The hint, owner and name share one allocation and come back apart:
    /// empty ones too, and a name holding NULs (only a hint's and an
    /// owner's would mix them up, and neither can hold one).
    #[test]
    fn labels_give_back_the_hint_owner_and_name_they_were_made_of() {
        for (hint, owner, name) in [
            ("acme_1AbCdEf", "acct_42", ""),
            ("acme_1AbCdEf", "acct_42", "billing sync"),
            ("", "acct_42", "n"),
            ("h", "", ""),
            ("h", "", "a\0name\0with NULs\0"),
            ("", "", ""),
        ] {
            let labels = Labels::new(hint, owner, name);
            assert_eq!(
                (labels.hint(), labels.owner(), labels.name()),
                (hint, owner, name)
            );
            let mut key = blank_as(owner);
            key.set_hint(hint);
            key.set_name(name);
            assert_eq!((key.hint(), key.owner(), key.name()), (hint, owner, name));
            key.set_hint("acme_1XyZ000");
            assert_eq!((key.owner(), key.name()), (owner, name));
            key.set_name("renamed");
            assert_eq!((key.hint(), key.owner()), ("acme_1XyZ000", owner));
        }
    }

    /// A stored record whose hint or owner holds a NUL does not read: none
    /// was ever written (issue makes hints without one, refuses an owner
    /// with one), and read, it would mix up the key's owner and name.
    #[test]
    fn a_stored_hint_or_owner_with_a_nul_is_refused() {
        let mut key = blank_as("acct_42");
        key.set_hint("acme_1AbCdEf");
        key.set_name("billing sync");
        let stored = json(&key);
        let back: Key = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(
            (back.hint(), back.owner(), back.name()),
            ("acme_1AbCdEf", "acct_42", "billing sync")
        );
        // Read from text, borrowed or (with an escape) copied, alike.
        let text = serde_json::to_string(&stored).unwrap();
        let escaped = text
            .replace("\"acct_42\"", "\"acct\\u005f42\"")
            .replace("\"billing sync\"", "\"billing\\u0020sync\"");
        assert_ne!(text, escaped);
        for text in [text, escaped] {
            let back: Key = serde_json::from_str(&text).unwrap();
            assert_eq!(
                (back.hint(), back.owner(), back.name()),
                ("acme_1AbCdEf", "acct_42", "billing sync")
            );
        }
        for field in ["hint", "owner"] {
            let mut edited = stored.clone();
            edited[field] = serde_json::json!("acct\u{0}42");
            let error = serde_json::from_value::<Key>(edited).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains(&format!("{field} must not contain a NUL")),
                "{error}"
            );
        }
        // A name may hold one.
        let mut edited = stored;
        edited["name"] = serde_json::json!("billing\u{0}sync");
        let back: Key = serde_json::from_value(edited).unwrap();
        assert_eq!((back.owner(), back.name()), ("acct_42", "billing\0sync"));
    }

    /// A field this version does not know is refused, at every level of
    /// the stored form, not skipped: skipped, a misspelt restriction in an
    /// edited record or export (`expire_at`, `use_limt`, `binding`) would
    /// read as a key without it. The error names the field.
    #[test]
    fn a_stored_field_this_version_does_not_know_is_refused_not_ignored() {
        let mut stored =
            serde_json::to_value(StoredKey::new(blank(), KeyHash::placeholder())).unwrap();
        let key = &mut stored["key"];
        key["contact"] = serde_json::json!({
            "first_name": "Ada", "last_name": "L", "login": "ada", "email": "ada@example.com"
        });
        key["bindings"] = serde_json::json!({ "networks": ["10.0.0.0/8"] });
        key["status"] = serde_json::json!({
            "state": "revoked", "at": "2026-11-28T00:00:00Z", "reason": "left"
        });
        let read: StoredKey = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(serde_json::to_value(&read).unwrap(), stored);
        assert!(!read.key().bindings().is_empty());
        let refused = |edited| {
            serde_json::from_value::<StoredKey>(edited)
                .unwrap_err()
                .to_string()
        };

        // JSON pointers to the record, the key, its contact, its bindings
        // and its status.
        for place in ["", "/key", "/key/contact", "/key/bindings", "/key/status"] {
            for field in ["expire_at", "use_limt", "binding", "x"] {
                let mut edited = stored.clone();
                edited
                    .pointer_mut(place)
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .insert(field.into(), serde_json::json!(1));
                let error = refused(edited);
                assert!(
                    error.contains(&format!("unknown field `{field}`")),
                    "{field} at {place:?}: {error}"
                );
            }
        }
        // The statuses without fields of their own take none.
        for state in ["active", "disabled"] {
            let mut edited = stored.clone();
            edited["key"]["status"] = serde_json::json!({ "state": state });
            serde_json::from_value::<StoredKey>(edited.clone()).unwrap();
            for (field, value) in [
                ("x", serde_json::json!(1)),
                ("reason", serde_json::json!("left")),
                ("at", serde_json::json!("2026-11-28T00:00:00Z")),
            ] {
                let mut extra = edited.clone();
                extra["key"]["status"][field] = value;
                let error = refused(extra);
                let expected = if field == "x" {
                    "unknown field `x`"
                } else {
                    "only a revoked status has `at` and `reason`"
                };
                assert!(error.contains(expected), "{state}, {field}: {error}");
            }
        }
        // A revoked status needs both.
        for missing in ["at", "reason"] {
            let mut edited = stored.clone();
            edited["key"]["status"]
                .as_object_mut()
                .unwrap()
                .remove(missing);
            let error = refused(edited);
            assert!(
                error.contains(&format!("missing field `{missing}`")),
                "{missing}: {error}"
            );
        }
    }

    /// Stored metadata with a key twice is refused, naming neither the key
    /// nor its values; the same entries once each read back.
    #[test]
    fn stored_metadata_with_a_key_twice_is_refused() {
        let mut key = blank();
        key.extra_mut().metadata = BTreeMap::from([
            ("team".to_owned(), "billing".to_owned()),
            ("tier".to_owned(), "gold".to_owned()),
        ]);
        let text = serde_json::to_string(&key).unwrap();
        let back: Key = serde_json::from_str(&text).unwrap();
        assert_eq!(back.metadata(), key.metadata());
        let twice = text.replace(r#""tier":"gold""#, r#""team":"ops""#);
        assert!(
            twice.contains(r#""team":"billing","team":"ops""#),
            "{twice}"
        );
        let error = serde_json::from_str::<Key>(&twice).unwrap_err().to_string();
        assert!(error.contains("a metadata key appears twice"), "{error}");
        assert!(!error.contains("team") && !error.contains("ops"), "{error}");
    }

    /// `verify` goes by the resolved deadline: a stored policy that has a
    /// deadline (an instant, a date, a lifetime) without `expires_at` would
    /// read as never expiring. It is refused; policies without a deadline
    /// (never, idle) need none, and the record as written reads.
    #[test]
    fn stored_policy_with_a_deadline_but_no_expires_at_is_refused() {
        let created = datetime!(2026-11-27 12:00 UTC);
        let with_deadline = [
            ExpiryPolicy::At(datetime!(2027-01-01 0:00 UTC)),
            ExpiryPolicy::EndOfDate(time::macros::date!(2027 - 01 - 01)),
            ExpiryPolicy::Lifetime(time::Duration::days(30)),
        ];
        for policy in with_deadline {
            let mut key = blank();
            key.set_expiry(Some(policy), policy.deadline(created));
            let stored = json(&key);
            let back: Key = serde_json::from_value(stored.clone()).unwrap();
            assert_eq!(back.own_deadline(), policy.deadline(created));
            for missing in [None, Some(serde_json::Value::Null)] {
                let mut edited = stored.clone();
                let object = edited.as_object_mut().unwrap();
                match missing {
                    None => object.remove("expires_at"),
                    Some(null) => object.insert("expires_at".into(), null),
                };
                let error = serde_json::from_value::<Key>(edited).unwrap_err();
                assert!(
                    error.to_string().contains("expires_at"),
                    "{policy:?}: {error}"
                );
            }
        }
        for policy in [
            ExpiryPolicy::Never,
            ExpiryPolicy::Idle(time::Duration::days(30)),
        ] {
            let mut key = blank();
            key.set_expiry(Some(policy), None);
            let back: Key = serde_json::from_value(json(&key)).unwrap();
            assert_eq!((back.expiry(), back.own_deadline()), (Some(policy), None));
        }
    }

    /// The other way round: a stored deadline without a policy of the
    /// key's own (no call writes one, an import refuses it; only an edited
    /// store file holds one) is not what `verify` goes by, the ring's
    /// default is. `own_deadline` says so, and the record is written back
    /// without it.
    #[test]
    fn a_stored_deadline_without_a_policy_is_no_deadline_of_the_keys_own() {
        let mut edited = json(&blank());
        let object = edited.as_object_mut().unwrap();
        assert!(!object.contains_key("expiry"));
        object.insert(
            "expires_at".into(),
            serde_json::Value::from("2027-01-01T00:00:00Z"),
        );
        let key: Key = serde_json::from_value(edited).unwrap();
        assert_eq!((key.expiry(), key.own_deadline()), (None, None));
        assert_eq!(json(&key), json(&blank()));
    }

    #[test]
    fn stored_form_with_defaults_written_out_reads_as_the_short_form() {
        // A record as written before defaults were left out.
        let long = serde_json::json!({
            "id": "0005iZpROH4",
            "hint": "bench_10005iZ",
            "name": "",
            "owner": "acct_20799",
            "scopes": ["invoices:read"],
            "created_at": "2026-11-27T18:02:13.471153598Z",
            "expiry": null,
            "expires_at": null,
            "status": {"state": "active"},
            "last_used_at": null,
            "uses": 0,
            "use_limit": null,
            "epoch": 0
        });
        let mut short = long.clone();
        let object = short.as_object_mut().unwrap();
        for field in [
            "name",
            "expiry",
            "expires_at",
            "last_used_at",
            "uses",
            "use_limit",
            "epoch",
        ] {
            object.remove(field);
        }
        let from_long: Key = serde_json::from_value(long).unwrap();
        let from_short: Key = serde_json::from_value(short.clone()).unwrap();
        assert_eq!(json(&from_long), short);
        assert_eq!(json(&from_short), short);
        assert!(
            from_long.extra.is_none(),
            "none of the rarely set fields: none kept"
        );
    }

    /// A key string `scan` finds, to paste into fields.
    fn pasted_key() -> String {
        let ring = crate::KeyRing::builder("acme")
            .build(crate::MemoryStore::new())
            .unwrap();
        let issued = ring.issue(NewKey::new("acct_1")).unwrap();
        issued.secret.expose().to_owned()
    }

    /// Each limit `Fields::check` holds a field to, at the byte: the
    /// longest value passes, one byte more is refused with the field's own
    /// message; one field over is enough (the others at their limit).
    #[test]
    fn fields_are_held_to_each_limit_at_the_byte() {
        let at = "a".repeat(MAX_FIELD_LEN);
        let over = "a".repeat(MAX_FIELD_LEN + 1);
        let check = |fields: Fields<'_>| fields.check();
        assert_eq!(check(Fields::default()), Ok(()));
        for (owner, expected) in [
            ("", Err("owner must not be empty")),
            ("a\0b", Err("owner must not contain a NUL character")),
            (&at, Ok(())),
            (&over, Err("owner and name are limited to 256 bytes")),
        ] {
            let fields = Fields {
                owner: Some(owner),
                name: Some(&at),
                ..Fields::default()
            };
            assert_eq!(check(fields), expected, "owner of {} bytes", owner.len());
        }
        let name_over = Fields {
            owner: Some("acct_1"),
            name: Some(&over),
            ..Fields::default()
        };
        assert_eq!(
            check(name_over),
            Err("owner and name are limited to 256 bytes")
        );
        for (len, expected) in [
            (MAX_DESCRIPTION_LEN, Ok(())),
            (
                MAX_DESCRIPTION_LEN + 1,
                Err("description is limited to 4096 bytes"),
            ),
        ] {
            let description = "d".repeat(len);
            let fields = Fields {
                description: Some(&description),
                ..Fields::default()
            };
            assert_eq!(check(fields), expected, "description of {len} bytes");
        }
        let contact_at = Contact::new(at.clone(), at.clone(), at.clone(), at.clone());
        assert_eq!(
            check(Fields {
                contact: Some(&contact_at),
                ..Fields::default()
            }),
            Ok(())
        );
        for field in 0..4 {
            let mut contact = contact_at.clone();
            *[
                &mut contact.first_name,
                &mut contact.last_name,
                &mut contact.login,
                &mut contact.email,
            ][field] = over.clone();
            let fields = Fields {
                contact: Some(&contact),
                ..Fields::default()
            };
            assert_eq!(
                check(fields),
                Err("each contact field is limited to 256 bytes"),
                "contact field {field}"
            );
        }
        let entries = |n: usize| -> BTreeMap<String, String> {
            (0..n).map(|i| (format!("k{i}"), "v".to_owned())).collect()
        };
        let metadata_error = Err("metadata is limited to 64 entries of 256 bytes each");
        for (metadata, expected) in [
            (entries(MAX_METADATA_ENTRIES), Ok(())),
            (entries(MAX_METADATA_ENTRIES + 1), metadata_error),
            (BTreeMap::from([(at.clone(), at.clone())]), Ok(())),
            (
                BTreeMap::from([(over.clone(), "v".to_owned())]),
                metadata_error,
            ),
            (
                BTreeMap::from([("k".to_owned(), over.clone())]),
                metadata_error,
            ),
        ] {
            let fields = Fields {
                metadata: Some(&metadata),
                ..Fields::default()
            };
            assert_eq!(check(fields), expected, "{} entries", metadata.len());
        }
        for (n, expected) in [
            (MAX_SCOPES, Ok(())),
            (MAX_SCOPES + 1, Err("a scope set is limited to 256 scopes")),
        ] {
            let scopes = ScopeSet::parse((0..n).map(|i| format!("r{i}:read"))).unwrap();
            assert_eq!(scopes.len(), n);
            let fields = Fields {
                scopes: Some(&scopes),
                ..Fields::default()
            };
            assert_eq!(check(fields), expected, "{n} scopes");
        }
        for (n, expected) in [
            (MAX_NETWORKS, Ok(())),
            (
                MAX_NETWORKS + 1,
                Err("a key can be bound to at most 64 networks"),
            ),
        ] {
            let bindings = Bindings {
                client_cert: Some(CertFingerprint::of_der(b"cert")),
                networks: (0..n)
                    .map(|i| format!("10.{i}.0.0/16").parse().unwrap())
                    .collect(),
            };
            let fields = Fields {
                bindings: Some(&bindings),
                ..Fields::default()
            };
            assert_eq!(check(fields), expected, "{n} networks");
        }
        let of_nothing = Bindings {
            client_cert: Some(CertFingerprint::of_der(b"")),
            networks: Vec::new(),
        };
        assert_eq!(
            check(Fields {
                bindings: Some(&of_nothing),
                ..Fields::default()
            }),
            Err("a key cannot be bound to the fingerprint of empty input: no certificate has it")
        );
    }

    /// A key pasted into any free-text field is refused, naming the field;
    /// in a metadata key or a metadata value alike. The same text without
    /// the key passes.
    #[test]
    fn a_key_pasted_into_any_field_is_refused_naming_the_field() {
        let key = pasted_key();
        let text = format!("replaces {key} (lost)");
        let clean = "replaces the lost one".to_owned();
        let with = |field: usize, text: &str| -> Result<(), &'static str> {
            let contact = Contact::new("Ada", "L", text, "ada@example.com");
            let metadata = match field {
                4 => BTreeMap::from([(text.to_owned(), "v".to_owned())]),
                5 => BTreeMap::from([("k".to_owned(), text.to_owned())]),
                _ => BTreeMap::new(),
            };
            Fields {
                owner: Some(if field == 0 { text } else { "acct_1" }),
                name: (field == 1).then_some(text),
                description: (field == 2).then_some(text),
                contact: (field == 3).then_some(&contact),
                metadata: Some(&metadata),
                ..Fields::default()
            }
            .check()
        };
        let refused = |what: &str| -> Result<(), &'static str> {
            Err(match what {
                "owner" => {
                    "the owner holds an API key or access token; never paste one into a key's fields"
                }
                "name" => {
                    "the name holds an API key or access token; never paste one into a key's fields"
                }
                "description" => {
                    "the description holds an API key or access token; never paste one into a key's fields"
                }
                "contact" => {
                    "the contact holds an API key or access token; never paste one into a key's fields"
                }
                _ => {
                    "the metadata holds an API key or access token; never paste one into a key's fields"
                }
            })
        };
        for (field, what) in [
            "owner",
            "name",
            "description",
            "contact",
            "metadata",
            "metadata",
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(with(field, &text), refused(what), "{what} ({field})");
            assert_eq!(with(field, &clean), Ok(()), "{what} ({field})");
        }
    }

    /// A record a call could write, to hold to `check_fields`: a lifetime
    /// of 30 days, resolved.
    fn checkable() -> Key {
        let mut key = blank();
        key.set_hint("acme_1AbCdEf");
        let policy = ExpiryPolicy::Lifetime(time::Duration::days(30));
        key.set_expiry(Some(policy), policy.deadline(key.created_at()));
        key.tidy();
        key
    }

    /// What `check_fields` adds to `Fields::check` for an import: the
    /// hint's length, a positive period, a deadline no later than the
    /// policy gives (not held for a rotation's successor), no deadline
    /// without a policy, and the revocation reason's length and content.
    #[test]
    fn check_fields_holds_an_imported_record_to_what_a_call_could_write() {
        assert_eq!(checkable().check_fields(), Ok(()));
        // The rest of the fields go through `Fields::check`.
        let mut key = checkable();
        key.labels = Labels::new(key.hint(), "", key.name());
        assert_eq!(key.check_fields(), Err("owner must not be empty"));

        let mut key = checkable();
        key.set_hint(&"h".repeat(MAX_HINT_LEN));
        assert_eq!(key.check_fields(), Ok(()));
        key.set_hint(&"h".repeat(MAX_HINT_LEN + 1));
        assert_eq!(
            key.check_fields(),
            Err("a hint is limited to the prefix and the id's first characters")
        );

        let period = Err("an expiry period must be positive");
        for days in [0, -1] {
            let d = time::Duration::days(days);
            for policy in [ExpiryPolicy::Lifetime(d), ExpiryPolicy::Idle(d)] {
                let mut key = checkable();
                key.set_expiry(Some(policy), None);
                assert_eq!(key.check_fields(), period, "{policy:?}");
            }
        }
        let mut key = checkable();
        key.set_expiry(Some(ExpiryPolicy::Idle(time::Duration::days(1))), None);
        assert_eq!(key.check_fields(), Ok(()));

        // The deadline: up to the one the policy gives from creation.
        let given = checkable().expires_at_nanos();
        let later = Err("the expiry policy's deadline is missing or later than the policy gives");
        for (expires_at, expected) in [
            (given - 1, Ok(())),
            (given, Ok(())),
            (given + 1, later),
            (NEVER, later),
        ] {
            let mut key = checkable();
            key.set_expires_at(expires_at);
            assert_eq!(key.check_fields(), expected, "{expires_at} against {given}");
            // A rotation's successor keeps its predecessor's deadline.
            key.extra_mut().rotated_from = Some(KeyId::from_u64(9));
            assert_eq!(key.check_fields(), Ok(()), "successor, {expires_at}");
        }

        // No deadline of its own without a policy of its own.
        let mut key = checkable();
        key.set_expiry(None, None);
        assert_eq!(key.check_fields(), Ok(()));
        key.set_expires_at(given);
        assert_eq!(
            key.check_fields(),
            Err("a deadline needs an expiry policy of the key's own")
        );

        // The revocation's reason: its length and no pasted key.
        let revoked = |reason: String| {
            let mut key = checkable();
            key.set_status(Status::Revoked {
                at: datetime!(2026-11-28 0:00 UTC),
                reason,
            });
            key.check_fields()
        };
        assert_eq!(revoked("r".repeat(MAX_FIELD_LEN)), Ok(()));
        assert_eq!(
            revoked("r".repeat(MAX_FIELD_LEN + 1)),
            Err("a reason is limited to 256 bytes")
        );
        assert_eq!(
            revoked(format!("leaked: {}", pasted_key())),
            Err("the reason holds an API key or access token; never paste one into a key's fields")
        );
        assert_eq!(revoked("leaked in a log".into()), Ok(()));
    }

    /// Record times are clamped into the range a record keeps, short of
    /// the two sentinels: an instant before 1677 is not "never used", one
    /// after 2262 is not "no deadline".
    #[test]
    fn nanos_stops_short_of_both_sentinels() {
        assert_eq!(nanos(datetime!(1000-01-01 0:00 UTC)), NOT_YET + 1);
        assert_eq!(nanos(datetime!(3000-01-01 0:00 UTC)), NEVER - 1);
        assert_eq!(
            optional(nanos(datetime!(1000-01-01 0:00 UTC))),
            Some(instant(NOT_YET + 1))
        );
        assert_eq!(
            optional(nanos(datetime!(3000-01-01 0:00 UTC))),
            Some(instant(NEVER - 1))
        );
        assert_eq!((optional(NOT_YET), optional(NEVER)), (None, None));
    }

    /// The usage cells: clones copy the count and the last use but start
    /// clean; comparisons read the count and the last use and ignore
    /// whether the usage was written.
    #[test]
    fn usage_cells_clone_and_compare_by_value_and_dirt_by_neither() {
        let count = Counter::new(3);
        assert_eq!(count.clone().get(), 3);
        assert!(count == Counter::new(3) && count != Counter::new(4));
        let stamp = Stamp::new(5);
        assert_eq!(stamp.clone().get(), 5);
        assert!(stamp == Stamp::new(5) && stamp != Stamp::new(6));

        let key = blank();
        assert!(!key.dirty.get(), "a fresh record has nothing unwritten");
        assert!(key.consume(nanos(datetime!(2026-11-28 0:00 UTC))));
        assert!(key.dirty.get(), "a use marks the usage unwritten");
        let copy = key.clone();
        assert!(!copy.dirty.get(), "a clone starts clean");
        assert_eq!(copy, key, "and still equals its original");
    }

    /// `consume` counts a use and stamps the start of its second, never
    /// moving the last use back; with a limit exactly `limit` uses pass.
    /// `spend` does the same but leaves the usage marked written.
    #[test]
    fn consume_counts_within_the_limit_and_stamps_the_second() {
        let t = nanos(datetime!(2026-11-28 8:30:15.7 UTC));
        let second = nanos(datetime!(2026-11-28 8:30:15 UTC));
        let key = blank();
        assert!(key.consume(t));
        assert_eq!((key.uses(), key.last_used_at.get()), (1, second));
        // An earlier reading (another thread's, a trailing clock's) does
        // not move it back.
        assert!(key.consume(t - 5_000_000_000));
        assert_eq!((key.uses(), key.last_used_at.get()), (2, second));
        assert!(key.consume(t + 1_000_000_000));
        assert_eq!(key.last_used_at.get(), second + 1_000_000_000);

        let mut limited = blank();
        limited.set_use_limit(NonZeroU64::new(2));
        limited.tidy();
        assert!(!limited.used_up());
        assert!(limited.consume(t));
        assert!(!limited.used_up());
        assert!(limited.consume(t));
        assert!(limited.used_up());
        assert!(!limited.consume(t), "the limit is spent");
        assert_eq!(limited.uses(), 2);
        assert!(!blank().used_up(), "no limit: never used up");

        let mut spent = blank();
        spent.set_use_limit(NonZeroU64::new(1));
        spent.tidy();
        assert!(spent.spend(t));
        assert_eq!(spent.uses(), 1);
        assert!(!spent.dirty.get(), "the use is part of the write");
        assert!(!spent.spend(t));
    }

    /// `carry_usage` adds the uses and moves the last use forward only.
    #[test]
    fn carry_usage_moves_usage_forward_only() {
        let second = nanos(datetime!(2026-11-28 8:30 UTC));
        let key = blank();
        key.carry_usage(3, second);
        assert_eq!((key.uses(), key.last_used_at.get()), (3, second));
        key.carry_usage(0, second - 1);
        assert_eq!((key.uses(), key.last_used_at.get()), (3, second));
    }

    /// A rotated key with a use limit handed its uses on; neither a limit
    /// alone nor a rotation alone did. `rotation` is `None` only without
    /// any link or grace.
    #[test]
    fn rotation_links_and_handed_on() {
        let mut key = blank();
        key.tidy();
        assert_eq!(key.rotation(), None);
        assert!(!key.handed_on());
        let to = KeyId::from_u64(9);
        let grace = nanos(datetime!(2026-12-01 0:00 UTC));
        let mut rotated = blank();
        rotated.extra_mut().rotated_to = Some(to);
        rotated.set_grace_until(grace);
        rotated.tidy();
        assert!(!rotated.handed_on(), "no limit: nothing handed on");
        let rotation = rotated.rotation().unwrap();
        assert_eq!(
            (
                rotation.rotated_from,
                rotation.rotated_to,
                rotation.grace_until
            ),
            (None, Some(to), Some(instant(grace)))
        );
        rotated.set_use_limit(NonZeroU64::new(5));
        rotated.tidy();
        assert!(rotated.handed_on());
        let mut limited = blank();
        limited.set_use_limit(NonZeroU64::new(5));
        limited.tidy();
        assert!(!limited.handed_on(), "not rotated: nothing handed on");
        let mut graced = blank();
        graced.set_grace_until(grace);
        graced.tidy();
        assert_eq!(graced.rotation().unwrap().grace_until, Some(instant(grace)));
    }

    /// A record is marked bound only for bindings, not for other rarely
    /// set fields.
    #[test]
    fn tidy_marks_bound_only_for_bindings() {
        let mut key = blank();
        key.extra_mut().description = Some("d".into());
        key.tidy();
        assert!(!key.bound && key.extra.is_some());
        key.extra_mut()
            .bindings
            .networks
            .push("10.0.0.0/8".parse().unwrap());
        key.tidy();
        assert!(key.bound);
    }

    /// Stored metadata that is not an object says what it must be.
    #[test]
    fn stored_metadata_of_the_wrong_type_says_what_it_must_be() {
        let mut stored = json(&blank());
        stored["metadata"] = serde_json::json!(["team"]);
        let error = serde_json::from_value::<Key>(stored)
            .unwrap_err()
            .to_string();
        assert!(error.contains("metadata: an object of strings"), "{error}");
    }

    /// What tells an update that changes nothing: every field but the
    /// usage, which `verify` moves in place whenever it likes.
    #[test]
    fn eq_but_usage_leaves_out_the_use_count_and_last_use_only() {
        let key = Key::blank(
            crate::KeyId::from_u64(7),
            "o",
            datetime!(2026-01-01 0:00 UTC),
        );
        let copy = key.clone();
        key.carry_usage(3, super::nanos(datetime!(2026-01-02 0:00 UTC)));
        assert_ne!(copy, key);
        assert!(copy.eq_but_usage(&key) && key.eq_but_usage(&copy));
        let mut renamed = copy.clone();
        renamed.set_name("m");
        assert!(!renamed.eq_but_usage(&key));
        let mut described = copy;
        described.extra_mut().description = Some("d".into());
        assert!(!described.eq_but_usage(&key));
    }
}
