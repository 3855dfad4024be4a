//! [`KeyRing`]: the lifecycle manager, and the one place that ties the
//! leaves together. A `verify()` runs, in order:
//!
//! 1. `token::parse`: length, prefix, version, alphabet, checksum (offline);
//! 2. `Hasher::hash`: one keyed BLAKE3 of (id, secret text);
//! 3. `KeyStore::lookup`: one in-memory map lookup;
//! 4. a constant-time compare against the stored hash, or against a
//!    placeholder when the id is unknown (same work, same answer: invalid);
//! 5. only then: status, expiry, scope requirement.

use std::fmt;
use std::sync::{PoisonError, RwLock};

use time::{Duration, OffsetDateTime};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, StoreError, VerifyError};
use crate::event::{Event, EventKind, EventSink};
use crate::expiry::{self, ExpiryPolicy};
use crate::hash::{Hasher, KeyHash};
use crate::key::{Issued, Key, NewKey, Status, Verified};
use crate::scope::{Requirement, Sensitive};
use crate::store::{KeyStore, MemoryStore, RingSettings, StoredKey};
use crate::token::{self, KeyId, Prefix};

/// Longest owner, name or metadata entry accepted, in bytes.
const MAX_FIELD_LEN: usize = 256;
/// Longest description accepted, in bytes.
const MAX_DESCRIPTION_LEN: usize = 4096;
/// Most metadata entries per key.
const MAX_METADATA_ENTRIES: usize = 64;
/// Attempts at drawing an unused id before giving up (a collision of 64-bit
/// random ids is already negligible once).
const ID_ATTEMPTS: usize = 4;

/// Manages the keys of one prefix on one store.
///
/// ```
/// use keyward::{KeyRing, MemoryStore, NewKey, ScopeSet};
/// let ring = KeyRing::builder("acme").build(MemoryStore::new())?;
/// let issued = ring.issue(NewKey::new("acct_42").scopes(ScopeSet::parse(["invoices:read"])?))?;
/// let who = ring.verify(issued.secret.expose())?;
/// assert_eq!(who.owner(), "acct_42");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyRing<S: KeyStore = MemoryStore> {
    prefix: Prefix,
    hasher: Hasher,
    store: S,
    clock: Box<dyn Clock>,
    events: Option<Box<dyn EventSink>>,
    report_successes: bool,
    sensitive: Sensitive,
    max_lifetime: Option<Duration>,
    settings: RwLock<RingSettings>,
}

/// Configures a [`KeyRing`]; made by [`KeyRing::builder`].
#[must_use]
pub struct KeyRingBuilder {
    prefix: String,
    hasher: Hasher,
    clock: Box<dyn Clock>,
    events: Option<Box<dyn EventSink>>,
    report_successes: bool,
    sensitive: Vec<String>,
    max_lifetime: Option<Duration>,
    default_expiry: ExpiryPolicy,
}

impl KeyRing<MemoryStore> {
    /// Starts configuring a ring whose keys start with `prefix` and `_`.
    /// The prefix is checked by [`KeyRingBuilder::build`].
    pub fn builder(prefix: impl Into<String>) -> KeyRingBuilder {
        KeyRingBuilder {
            prefix: prefix.into(),
            hasher: Hasher::new(None),
            clock: Box::new(SystemClock),
            events: None,
            report_successes: false,
            sensitive: Vec::new(),
            max_lifetime: None,
            default_expiry: ExpiryPolicy::Never,
        }
    }
}

impl KeyRingBuilder {
    /// The 32-byte secret that keys the hash at rest, from the host's secret
    /// manager. Without one, hashes are keyed by a fixed context only, and a
    /// stolen store can be checked against a guessed key (which, at 142
    /// random bits, nobody can guess). Changing it invalidates every key.
    pub fn pepper(mut self, pepper: [u8; 32]) -> Self {
        let mut pepper = zeroize::Zeroizing::new(pepper);
        self.hasher = Hasher::new(Some(&pepper));
        zeroize::Zeroize::zeroize(&mut *pepper);
        self
    }

    /// The time source (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Where events go (default: nowhere).
    pub fn events(mut self, sink: impl EventSink + 'static) -> Self {
        self.events = Some(Box::new(sink));
        self
    }

    /// Whether successful verifications are reported as events too (default:
    /// no, since they happen on every request).
    pub fn report_successes(mut self, yes: bool) -> Self {
        self.report_successes = yes;
        self
    }

    /// Resources never covered by `*` or an unrestricted key; they must be
    /// granted by name.
    pub fn sensitive<I: IntoIterator<Item = R>, R: Into<String>>(mut self, resources: I) -> Self {
        self.sensitive.extend(resources.into_iter().map(Into::into));
        self
    }

    /// The longest any key may live: an explicit expiry beyond it is
    /// refused, and `Never` or idle keys get it as a hard deadline.
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    /// The policy of keys issued without their own (default: never). It
    /// seeds a new store; a store that already has ring settings keeps its
    /// own. Under a [maximum lifetime](Self::max_lifetime) a fixed default
    /// must fit the cap, and a `Never` or idle default expires keys at the
    /// cap.
    pub fn default_expiry(mut self, policy: ExpiryPolicy) -> Self {
        self.default_expiry = policy;
        self
    }

    /// Checks the configuration and opens the ring on `store`.
    pub fn build<S: KeyStore>(self, store: S) -> Result<KeyRing<S>, Error> {
        let prefix = Prefix::new(&self.prefix)?;
        let sensitive = Sensitive::new(&self.sensitive)?;
        if let Some(max) = self.max_lifetime
            && !max.is_positive()
        {
            return Err(Error::InvalidExpiry(
                "the maximum lifetime must be positive",
            ));
        }
        let now = self.clock.now();
        let settings = match store.load_settings()? {
            Some(saved) => saved,
            None => {
                check_default(self.default_expiry, self.max_lifetime, now)?;
                let fresh = RingSettings {
                    default_expiry: self.default_expiry,
                    default_since: now,
                };
                store.save_settings(&fresh)?;
                fresh
            }
        };
        Ok(KeyRing {
            prefix,
            hasher: self.hasher,
            store,
            clock: self.clock,
            events: self.events,
            report_successes: self.report_successes,
            sensitive,
            max_lifetime: self.max_lifetime,
            settings: RwLock::new(settings),
        })
    }
}

/// A default policy must be valid, and a fixed one must fit the cap;
/// `Never` and idle defaults are allowed under a cap, which then gives
/// default-governed keys their deadline.
fn check_default(
    policy: ExpiryPolicy,
    max: Option<Duration>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    policy.validate(now)?;
    match policy {
        ExpiryPolicy::Never | ExpiryPolicy::Idle(_) => Ok(()),
        _ => capped_deadline(policy, now, max).map(|_| ()),
    }
}

/// The deadline of `policy` for a key created at `created`, within the cap
/// `max`: `Never` is refused under a cap, idle keys get the cap as their
/// deadline, and a deadline past the cap is refused.
fn capped_deadline(
    policy: ExpiryPolicy,
    created: OffsetDateTime,
    max: Option<Duration>,
) -> Result<Option<OffsetDateTime>, Error> {
    let deadline = policy.deadline(created);
    let Some(max) = max else { return Ok(deadline) };
    let limit = created.saturating_add(max);
    let beyond = || Error::ExpiryBeyondMax {
        max_days: max.whole_days(),
    };
    match (policy, deadline) {
        (ExpiryPolicy::Idle(_), _) => Ok(Some(limit)),
        (_, None) => Err(beyond()),
        (_, Some(d)) if d > limit => Err(beyond()),
        (_, Some(d)) => Ok(Some(d)),
    }
}

/// What a request asks of a key besides its secret.
///
/// A `&Requirement` converts into one, so `ring.verify_with(key, &need)`
/// reads naturally.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct RequestContext<'a> {
    /// The scopes the request needs.
    pub requirement: Option<&'a Requirement>,
}

impl<'a> RequestContext<'a> {
    /// A context that asks nothing beyond a valid key.
    pub fn new() -> Self {
        RequestContext::default()
    }

    /// Requires `requirement`.
    pub fn require(mut self, requirement: &'a Requirement) -> Self {
        self.requirement = Some(requirement);
        self
    }
}

impl<'a> From<&'a Requirement> for RequestContext<'a> {
    fn from(requirement: &'a Requirement) -> Self {
        RequestContext::new().require(requirement)
    }
}

/// The state of a key at an instant, for listings and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyState {
    /// Verifies.
    Active,
    /// Disabled (reversibly).
    Disabled,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// Which keys [`KeyRing::list`] returns.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ListFilter {
    owner: Option<String>,
    state: Option<KeyState>,
}

impl ListFilter {
    /// Every key.
    pub fn new() -> Self {
        ListFilter::default()
    }

    /// Only keys of this owner.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Only keys in this state now.
    pub fn state(mut self, state: KeyState) -> Self {
        self.state = Some(state);
        self
    }
}

impl<S: KeyStore> KeyRing<S> {
    /// Issues a key. Its plaintext is in the returned [`Issued::secret`] and
    /// nowhere else.
    ///
    /// Refused: an empty owner, oversized fields, an expiry that has passed
    /// or lies beyond the ring's maximum lifetime. When the request names
    /// the owner's scopes, the key's scopes are capped to them.
    pub fn issue(&self, request: NewKey) -> Result<Issued, Error> {
        check_request(&request)?;
        let now = self.clock.now();
        let expires_at = match request.expiry {
            Some(policy) => {
                policy.validate(now)?;
                capped_deadline(policy, now, self.max_lifetime)?
            }
            None => None,
        };
        let scopes = match &request.owner_scopes {
            Some(held) => request.scopes.cap(held, &self.sensitive),
            None => request.scopes,
        };
        let mut key = Key {
            id: KeyId::from_u64(0),
            hint: Box::from(""),
            name: request.name.into(),
            description: request.description.map(Into::into),
            owner: request.owner.into(),
            contact: request.contact.map(Box::new),
            scopes,
            created_at: now,
            expiry: request.expiry,
            expires_at,
            status: Status::Active,
            last_used_at: None,
            uses: 0,
            use_limit: request.use_limit,
            rotation: None,
            metadata: request.metadata,
        };
        for _ in 0..ID_ATTEMPTS {
            let generated = token::generate(&self.prefix)?;
            key.id = generated.id;
            key.hint = self.prefix.hint(generated.id).into();
            let hash = self.hasher.hash(generated.id, generated.secret_part());
            match self.store.insert(StoredKey {
                key: key.clone(),
                hash,
            }) {
                Ok(()) => {
                    self.emit(|| {
                        Event::new(EventKind::Issued, now)
                            .key(key.id)
                            .owner(&key.owner)
                    });
                    return Ok(Issued {
                        key,
                        secret: generated.secret,
                    });
                }
                Err(StoreError::Duplicate(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Storage(StoreError::Duplicate(key.id)))
    }

    /// Checks a presented key: valid, active, not expired. The per-request
    /// call: no I/O, no heap allocation on success.
    pub fn verify(&self, presented: &str) -> Result<Verified, VerifyError> {
        self.verify_with(presented, RequestContext::new())
    }

    /// Like [`verify`](Self::verify), and the key must also meet what the
    /// request asks, e.g. a scope [`Requirement`].
    pub fn verify_with<'a>(
        &self,
        presented: &str,
        request: impl Into<RequestContext<'a>>,
    ) -> Result<Verified, VerifyError> {
        let outcome = self.check(presented, &request.into());
        if self.events.is_some() {
            self.report(presented, &outcome);
        }
        outcome
    }

    fn check(
        &self,
        presented: &str,
        request: &RequestContext<'_>,
    ) -> Result<Verified, VerifyError> {
        let parsed = token::parse(presented, &self.prefix).map_err(VerifyError::Malformed)?;
        let digest = self.hasher.hash(parsed.id, parsed.secret);
        let entry = self.store.lookup(parsed.id);
        // An unknown id is compared against a placeholder: the same work as a
        // wrong secret, and the same answer.
        let placeholder = KeyHash::placeholder();
        let stored = entry.as_ref().map_or(&placeholder, |e| &e.hash);
        let matches = digest == *stored;
        let entry = match entry {
            Some(entry) if matches => entry,
            _ => return Err(VerifyError::Invalid),
        };
        let key = &entry.key;
        match key.status {
            Status::Active => {}
            Status::Disabled => return Err(VerifyError::Disabled),
            Status::Revoked { .. } => return Err(VerifyError::Revoked),
        }
        if self.is_expired(key, self.clock.now()) {
            return Err(VerifyError::Expired);
        }
        if let Some(requirement) = request.requirement {
            requirement
                .check(&key.scopes, &self.sensitive)
                .map_err(|missing| VerifyError::InsufficientScope(missing.clone()))?;
        }
        Ok(Verified { entry })
    }

    fn report(&self, presented: &str, outcome: &Result<Verified, VerifyError>) {
        let now = self.clock.now();
        match outcome {
            Ok(v) if self.report_successes => {
                self.emit(|| {
                    Event::new(EventKind::Verified, now)
                        .key(v.id())
                        .owner(v.owner())
                });
            }
            Ok(_) => {}
            Err(e) => self.emit(|| {
                let event = Event::new(EventKind::VerifyFailed(e.clone()), now);
                // The id is public; report it when the string parsed.
                match token::parse(presented, &self.prefix) {
                    Ok(parsed) => event.key(parsed.id),
                    Err(_) => event,
                }
            }),
        }
    }

    fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(sink) = &self.events {
            sink.record(&event());
        }
    }

    /// The key with this id, if any. Never includes a secret.
    pub fn get(&self, id: KeyId) -> Option<Key> {
        self.store.lookup(id).map(|e| e.key.clone())
    }

    /// The keys that match `filter`, oldest first. Never includes a secret.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Key>, Error> {
        let now = self.clock.now();
        let mut keys: Vec<Key> = self
            .store
            .list(filter.owner.as_deref())?
            .into_iter()
            .filter(|e| filter.owner.as_deref().is_none_or(|o| e.key.owner() == o))
            .filter(|e| filter.state.is_none_or(|s| self.state_at(&e.key, now) == s))
            .map(|e| e.key.clone())
            .collect();
        keys.sort_by_key(|k| (k.created_at, k.id));
        Ok(keys)
    }

    /// The state of `key` now.
    pub fn state(&self, key: &Key) -> KeyState {
        self.state_at(key, self.clock.now())
    }

    fn state_at(&self, key: &Key, now: OffsetDateTime) -> KeyState {
        match key.status {
            Status::Revoked { .. } => KeyState::Revoked,
            Status::Disabled => KeyState::Disabled,
            Status::Active if self.is_expired(key, now) => KeyState::Expired,
            Status::Active => KeyState::Active,
        }
    }

    /// The fixed deadline of `key`: its own policy's, or the ring default's
    /// as it applies now. `None` when it has none (it may still expire
    /// through an idle timeout).
    pub fn expires_at(&self, key: &Key) -> Option<OffsetDateTime> {
        match key.expiry {
            Some(_) => key.expires_at,
            None => self.default_deadline(key, &self.settings()),
        }
    }

    /// The ring settings in force.
    pub fn settings(&self) -> RingSettings {
        self.settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The store the ring works on.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Default-governed keys count from the later of their creation and the
    /// moment the default was set, within the ring's cap from creation.
    fn default_deadline(&self, key: &Key, settings: &RingSettings) -> Option<OffsetDateTime> {
        let anchor = key.created_at.max(settings.default_since);
        let deadline = settings.default_expiry.deadline(anchor);
        match self.max_lifetime {
            Some(max) => {
                let limit = key.created_at.saturating_add(max);
                Some(deadline.map_or(limit, |d| d.min(limit)))
            }
            None => deadline,
        }
    }

    fn is_expired(&self, key: &Key, now: OffsetDateTime) -> bool {
        let last_active = key
            .last_used_at
            .map_or(key.created_at, |u| u.max(key.created_at));
        match key.expiry {
            Some(policy) => {
                expiry::is_expired(now, key.expires_at, policy.idle().map(|d| (d, last_active)))
            }
            None => {
                let settings = self.settings.read().unwrap_or_else(PoisonError::into_inner);
                let deadline = self.default_deadline(key, &settings);
                let idle = settings
                    .default_expiry
                    .idle()
                    .map(|d| (d, last_active.max(settings.default_since)));
                expiry::is_expired(now, deadline, idle)
            }
        }
    }
}

fn check_request(request: &NewKey) -> Result<(), Error> {
    if request.owner.is_empty() {
        return Err(Error::InvalidInput("owner must not be empty"));
    }
    if request.owner.len() > MAX_FIELD_LEN || request.name.len() > MAX_FIELD_LEN {
        return Err(Error::InvalidInput(
            "owner and name are limited to 256 bytes",
        ));
    }
    if request
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
    {
        return Err(Error::InvalidInput("description is limited to 4096 bytes"));
    }
    if request.metadata.len() > MAX_METADATA_ENTRIES
        || request
            .metadata
            .iter()
            .any(|(k, v)| k.len() > MAX_FIELD_LEN || v.len() > MAX_FIELD_LEN)
    {
        return Err(Error::InvalidInput(
            "metadata is limited to 64 entries of 256 bytes each",
        ));
    }
    if request.use_limit == Some(0) {
        return Err(Error::InvalidInput("a use limit must be at least 1"));
    }
    Ok(())
}

impl<S: KeyStore> fmt::Debug for KeyRing<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("prefix", &self.prefix)
            .field("store", &self.store)
            .field("clock", &self.clock)
            .field("events", &self.events.is_some())
            .field("sensitive", &self.sensitive)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyRingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}
