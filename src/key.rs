//! The key record ([`Key`]) and the values that go in and out of the ring:
//! [`NewKey`] (an issue request), [`Issued`] (record plus plaintext, once) and
//! [`Verified`] (the outcome of a successful check).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::expiry::ExpiryPolicy;
use crate::scope::ScopeSet;
use crate::store::StoredKey;
use crate::token::{KeyId, Secret};

/// Who to tell about a key: shown in audit and integration history and used
/// for expiry reminders.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Rotation links of a key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rotation {
    /// The key this one replaced.
    pub rotated_from: Option<KeyId>,
    /// The key that replaced this one.
    pub rotated_to: Option<KeyId>,
    /// Until when this (replaced) key keeps working.
    #[serde(with = "time::serde::rfc3339::option")]
    pub grace_until: Option<OffsetDateTime>,
}

/// The record of an API key. It never contains the plaintext: only the store
/// keeps the key's hash, beside this record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub(crate) id: KeyId,
    pub(crate) hint: Box<str>,
    pub(crate) name: Box<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<Box<str>>,
    pub(crate) owner: Box<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) contact: Option<Box<Contact>>,
    pub(crate) scopes: ScopeSet,
    #[serde(with = "time::serde::rfc3339")]
    pub(crate) created_at: OffsetDateTime,
    /// `None`: governed by the ring's default policy.
    pub(crate) expiry: Option<ExpiryPolicy>,
    /// The deadline of the key's own policy, capped by the ring's maximum.
    #[serde(with = "time::serde::rfc3339::option")]
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) status: Status,
    #[serde(with = "time::serde::rfc3339::option")]
    pub(crate) last_used_at: Option<OffsetDateTime>,
    pub(crate) uses: u64,
    pub(crate) use_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rotation: Option<Box<Rotation>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) metadata: BTreeMap<String, String>,
    /// The ring's revoke-all epoch when the key was issued.
    #[serde(default)]
    pub(crate) epoch: u64,
}

impl Key {
    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The non-secret display hint: prefix, body version and the first id
    /// characters, e.g. `acme_1AbC9x`, so listings show which key is which.
    pub fn hint(&self) -> &str {
        &self.hint
    }

    /// Human-readable name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Longer description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The host's user or account id that owns the key.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Who to tell about the key.
    pub fn contact(&self) -> Option<&Contact> {
        self.contact.as_deref()
    }

    /// What the key may do.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    /// When the key was issued.
    pub fn created_at(&self) -> OffsetDateTime {
        self.created_at
    }

    /// The key's own expiry policy; `None` when the ring's default governs
    /// it.
    pub fn expiry(&self) -> Option<ExpiryPolicy> {
        self.expiry
    }

    /// The fixed deadline of the key's own policy (capped by the ring's
    /// maximum lifetime). `None` for a key without one, or governed by the
    /// ring's default, whose deadline [`KeyRing::expires_at`](crate::KeyRing::expires_at)
    /// resolves.
    pub fn own_deadline(&self) -> Option<OffsetDateTime> {
        self.expires_at
    }

    /// Active, disabled or revoked.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The last successful verification (one-second resolution).
    pub fn last_used_at(&self) -> Option<OffsetDateTime> {
        self.last_used_at
    }

    /// Successful verifications so far.
    pub fn uses(&self) -> u64 {
        self.uses
    }

    /// The most successful verifications allowed, if limited.
    pub fn use_limit(&self) -> Option<u64> {
        self.use_limit
    }

    /// Rotation links, if the key was rotated or is a rotation.
    pub fn rotation(&self) -> Option<&Rotation> {
        self.rotation.as_deref()
    }

    /// Free-form host data.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
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
#[derive(Debug, Clone)]
pub struct Verified {
    pub(crate) entry: Arc<StoredKey>,
}

impl Verified {
    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.entry.key.id
    }

    /// The key's owner.
    pub fn owner(&self) -> &str {
        &self.entry.key.owner
    }

    /// The key's scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.entry.key.scopes
    }

    /// The key's metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.entry.key.metadata
    }

    /// The whole record.
    pub fn key(&self) -> &Key {
        &self.entry.key
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
