//! [`KeyRing`]: the lifecycle manager, and the one place that ties the
//! leaves together. A `verify()` runs, in order:
//!
//! 1. `token::parse`: length, prefix, version, alphabet, checksum (offline);
//! 2. `Hasher::hash`: one keyed BLAKE3 of (id, secret text);
//! 3. `KeyStore::inspect`: one in-memory map lookup, the record lent to
//!    the checks below;
//! 4. a constant-time compare against the stored hash, or against a
//!    placeholder when the id is unknown (same work, same answer: invalid);
//! 5. only then: status and revoke-all epoch, expiry (own deadline, rotation
//!    grace, idle timeout, ring default), bindings, scope requirement, use
//!    limit.
//!
//! Every administrative operation is a read-modify-write of one record,
//! serialised by one ring-wide lock (writes are rare; verification takes it
//! only for a key with a use limit), so two operations on one key cannot
//! lose each other's change.
//! Across rings on one store, the write is conditional
//! ([`Change::ReplaceIf`]): the store refuses it if the record changed since
//! the ring read it, and the ring reads again and redoes its change, so a
//! stale copy never undoes another ring's revocation or new secret.
//!
//! Usage (`last_used_at`, the use count) is updated by `verify` in memory,
//! with atomics, and written back to the store by a background thread every
//! [`flush_interval`](KeyRingBuilder::flush_interval), on
//! [`KeyRing::flush`] and when the ring is dropped. Keys with a use limit
//! are the exception: each successful use is written at once, so a restart
//! cannot hand out uses again.
//!
//! No caller sees the errors of those background writes, nor of the
//! settings reload: the ring reports them to its [`EventSink`] as
//! [`EventKind::StoreFailed`] (once, when a task starts failing) and
//! [`EventKind::StoreRecovered`].

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use time::{Duration, OffsetDateTime};

use crate::access::{AccessClaims, AccessToken, Signer};
use crate::binding::{Binding, CertFingerprint};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, StoreError, VerifyError};
use crate::event::{self, Event, EventKind, EventSink, StoreTask};
use crate::expiry::ExpiryPolicy;
use crate::hash::{Hasher, KeyHash};
use crate::key::{
    Counter, Extra, Fields, Issued, Key, KeyUpdate, MAX_FIELD_LEN, MAX_SCOPES, NEVER, NOT_YET,
    Nanos, NewKey, Reminder, Stamp, Status, StatusCode, Verified, instant, nanos,
};
use crate::page::{ListCursor, Page};
use crate::scan::FoundKind;
use crate::scope::{Requirement, ScopeSet, Sensitive};
use crate::store::chunks::SlotRef;
use crate::store::{
    Change, KeyStore, Lent, LentAs, MemoryStore, OtherRing, RingSettings, StoredKey,
};
use crate::token::{self, KeyId, Prefix};

/// Attempts at drawing an unused id before giving up (a collision of 64-bit
/// random ids is already negligible once).
const ID_ATTEMPTS: usize = 4;
/// Default delay bound for writing usage back to the store.
const DEFAULT_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Default life of an access token.
const DEFAULT_TOKEN_TTL: Duration = Duration::minutes(30);
/// Default cap on the life of an access token.
const DEFAULT_MAX_TOKEN_TTL: Duration = Duration::hours(1);
/// The most [`KeyRingBuilder::max_token_ttl`] may be: access tokens are
/// short-lived bearer credentials that a plain check cannot see revoked.
const TOKEN_TTL_LIMIT: Duration = Duration::hours(24);
/// Keys per store write when usage is flushed.
const FLUSH_BATCH: usize = 1024;
/// Runs of an administrative write whose store reported a conflict
/// (another ring wrote the same key between this ring's read and its
/// write) before the conflict is returned. Many: each conflict means that
/// another ring's write landed in that window (a use of a limited key,
/// say), and the holder of a key verifying it on another ring must not be
/// able to hold off its revocation, regeneration or disabling. A run costs
/// a lookup and a copy on an in-process store, which checks the condition
/// before any I/O; a store that checks it in a database pays a round trip,
/// only as long as another writer keeps winning. Still bounded, so a store
/// that reports a conflict on every write gives an error, not a hang.
const CONFLICT_ATTEMPTS: usize = 1024;
/// Runs of the write of a limited key's use in `verify` before the key is
/// refused as [`VerifyError::Unavailable`]: each conflict means another
/// ring's write of the key landed, so a run makes progress, but a request
/// does not wait without end on a key other rings keep writing.
const VERIFY_CONFLICT_ATTEMPTS: usize = 64;
/// Runs of a settings write ([`Change::SettingsIf`]) before it fails with
/// [`StoreError::SettingsConflict`]. Settings writes are rare, so a run of
/// conflicts means a store whose `load_settings` lags its writes (a cache
/// fed by notifications, against the contract) more likely than rings
/// writing settings nonstop: after the first few runs each waits a little
/// longer ([`settings_backoff`]), giving such a copy about 7 seconds to
/// catch up before a `revoke_all` gives up.
const SETTINGS_ATTEMPTS: usize = 64;

/// The wait before run `runs + 1` of a settings write: none for the first
/// four, then 2, 4, ... up to 128 ms.
fn settings_backoff(runs: usize) {
    if runs >= 4 {
        let ms = 1u64 << (runs - 3).min(7);
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// How often the background thread reloads the ring settings.
const SETTINGS_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);
/// The reason recorded by [`KeyRing::owner_password_expired`].
const PASSWORD_EXPIRED: &str = "owner password expired";
/// Why `rotate` and `regenerate` refuse a key whose uses are all spent
/// ([`Error::InvalidInput`]): any secret of it would be refused as
/// [`VerifyError::UsageExceeded`].
const USES_SPENT: &str = "the key's uses are spent; issue a new key";

/// How far past a trailing clock reading (see
/// [`Clock::trailing_unix_nanos`]) a deadline must lie for `verify` to
/// judge it by that reading alone: a hundred ticks of the slowest kernel
/// tick (10 ms).
const TRAIL_MARGIN: Nanos = 1_000_000_000;

/// A reading of the ring's clock for `verify`: `nanos` is never after the
/// clock's precise time, and is that time when `exact`.
#[derive(Clone, Copy)]
struct Reading {
    nanos: Nanos,
    exact: bool,
}

/// A clock reading clamped into the range of record times, a second clear
/// of `NOT_YET`: a use is stamped at the start of its second, which must
/// not fall to or below it.
fn clamp_nanos(n: i128) -> Nanos {
    n.clamp(i128::from(NOT_YET + 1_000_000_000), i128::from(NEVER - 1)) as Nanos
}

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
    signer: Signer,
    max_token_ttl: Duration,
    shared: Arc<Shared<S>>,
    clock: Arc<dyn Clock>,
    events: Option<Arc<dyn EventSink>>,
    report_successes: bool,
    revoke_on_password_expiry: bool,
    sensitive: Sensitive,
    max_lifetime: Option<Duration>,
    /// The background threads (settings reload, usage flush), stopped and
    /// joined when the ring is dropped.
    background: Option<Background>,
}

/// What the background thread shares with the ring.
struct Shared<S> {
    store: S,
    /// Serialises every read-modify-write of a record.
    writes: Mutex<()>,
    /// The ring settings as last read from or written to the store.
    settings: RwLock<RingSettings>,
    /// Their revoke-all instant (`NOT_YET` for none), read by the token
    /// checks without a lock. Like the epoch, it only moves forward.
    revoked_all_at: AtomicI64,
    /// Their revoke-all epoch, read on every verify without a lock.
    epoch: AtomicU64,
    /// Their default policy, read on every verify without a lock.
    default: HotDefault,
    /// How many times settings were installed. A reload installs what it
    /// read only if none were installed since it began to read: otherwise
    /// a reload that read just before this ring wrote new settings could
    /// put the old ones back after them.
    installed: AtomicU64,
}

/// Reads of the settings a reload makes while other installs overtake it.
const RELOAD_ATTEMPTS: usize = 4;

/// The ring's default policy in a form `verify` reads without taking a lock
/// (a sequence lock over atomics: a reader retries if a writer was at work).
/// Written only under the settings write lock.
struct HotDefault {
    seq: AtomicU64,
    kind: AtomicU64,
    value: AtomicI64,
    since: AtomicI64,
    /// The bars of the superseded defaults (see
    /// [`RingSettings::expired_bars`]); [`NOT_YET`] for none.
    expired_created_by: AtomicI64,
    expired_idle_by: AtomicI64,
}

/// The default policy as `verify` uses it.
#[derive(Clone, Copy)]
struct DefaultPolicy {
    kind: u64,
    value: i64,
    since: Nanos,
    expired_created_by: Nanos,
    expired_idle_by: Nanos,
}

/// The cutoff `verify` sees for a key that expired under a default since
/// replaced: any instant in the past will do there; [`KeyRing::expires_at`]
/// finds the real one.
const EXPIRED_EARLIER: Nanos = NOT_YET;

const DEFAULT_NEVER: u64 = 0;
const DEFAULT_FIXED: u64 = 1;
const DEFAULT_LIFETIME: u64 = 2;
const DEFAULT_IDLE: u64 = 3;

/// A period in nanoseconds, saturating by its sign: a period too long for
/// an `i64` is forever, and one too far below zero is the most negative
/// (never "forever": that would fail open on a negative period read from
/// a store, which no call can set).
fn span(d: Duration) -> i64 {
    i64::try_from(d.whole_nanoseconds()).unwrap_or(if d.is_negative() {
        i64::MIN
    } else {
        i64::MAX
    })
}

impl HotDefault {
    fn new(settings: &RingSettings) -> HotDefault {
        let hot = HotDefault {
            seq: AtomicU64::new(0),
            kind: AtomicU64::new(0),
            value: AtomicI64::new(0),
            since: AtomicI64::new(0),
            expired_created_by: AtomicI64::new(NOT_YET),
            expired_idle_by: AtomicI64::new(NOT_YET),
        };
        hot.store(settings);
        hot
    }

    fn store(&self, settings: &RingSettings) {
        let (kind, value) = match settings.default_expiry {
            ExpiryPolicy::Lifetime(d) => (DEFAULT_LIFETIME, span(d)),
            ExpiryPolicy::Idle(d) => (DEFAULT_IDLE, span(d)),
            ExpiryPolicy::Never => (DEFAULT_NEVER, 0),
            fixed => (
                DEFAULT_FIXED,
                fixed.deadline(settings.default_since).map_or(NEVER, nanos),
            ),
        };
        let (created_by, idle_by) = settings.expired_bars();
        self.seq.fetch_add(1, Ordering::AcqRel);
        std::sync::atomic::fence(Ordering::Release);
        self.kind.store(kind, Ordering::Relaxed);
        self.value.store(value, Ordering::Relaxed);
        self.since
            .store(nanos(settings.default_since), Ordering::Relaxed);
        self.expired_created_by
            .store(created_by.map_or(NOT_YET, nanos), Ordering::Relaxed);
        self.expired_idle_by
            .store(idle_by.map_or(NOT_YET, nanos), Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Release);
    }

    #[inline]
    fn load(&self) -> DefaultPolicy {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            let policy = DefaultPolicy {
                kind: self.kind.load(Ordering::Relaxed),
                value: self.value.load(Ordering::Relaxed),
                since: self.since.load(Ordering::Relaxed),
                expired_created_by: self.expired_created_by.load(Ordering::Relaxed),
                expired_idle_by: self.expired_idle_by.load(Ordering::Relaxed),
            };
            std::sync::atomic::fence(Ordering::Acquire);
            if before & 1 == 0 && self.seq.load(Ordering::Relaxed) == before {
                return policy;
            }
            std::hint::spin_loop();
        }
    }
}

impl<S: KeyStore> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it broken.
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the settings in the store, where another ring on the same
    /// store may have changed them. The epoch only moves forward.
    fn refresh(&self) -> Result<(), StoreError> {
        self.reload().map(|_| ())
    }

    /// [`Self::refresh`], giving the revoke-all epoch of the settings it
    /// last read (0 for none).
    fn reload(&self) -> Result<u64, StoreError> {
        let mut epoch = 0;
        for _ in 0..RELOAD_ATTEMPTS {
            let seen = self.installed.load(Ordering::Acquire);
            let Some(stored) = self.store.load_settings()? else {
                return Ok(0);
            };
            if self.foreign(&stored) {
                return Err(StoreError::ForeignSettings);
            }
            epoch = stored.epoch;
            if self.install(stored, Some(seen)) {
                return Ok(epoch);
            }
        }
        // Each time, other settings were installed meanwhile, read after
        // ours began: they are at least as new.
        Ok(epoch)
    }

    /// [`Self::refresh`] before a key is stamped with this ring's epoch
    /// (`issue`, `rotate`). When the store's epoch went back below the
    /// ring's (an import's `Replace` of an older export, a restored
    /// backup), the store's is raised to the ring's first, with the ring's
    /// revoke-all instant: a key stamped above the store's epoch would
    /// outlive the next `revoke_all` of any ring that reads the store's.
    /// One settings read otherwise, as `refresh`. Call under
    /// [`Self::lock`].
    fn refresh_to_stamp(&self) -> Result<(), Error> {
        let stored = self.reload()?;
        if stored >= self.epoch.load(Ordering::Acquire) {
            return Ok(());
        }
        let at = self.revoked_all_at.load(Ordering::Acquire);
        // `change_settings` raises the epoch; the instant goes with it.
        self.change_settings(|next| {
            if at != NOT_YET {
                let ours = instant(at);
                next.revoked_all_at = Some(next.revoked_all_at.map_or(ours, |r| r.max(ours)));
            }
            Ok(true)
        })
    }

    /// Takes the store's settings at once if another ring raised the
    /// revoke-all epoch since this ring last read them; otherwise leaves
    /// what is installed alone (verify reads the epoch and the default:
    /// nothing written to them unless they changed). One settings read.
    fn catch_up_with_revoke_all(&self) -> Result<(), StoreError> {
        let behind = self
            .store
            .load_settings()?
            .is_some_and(|stored| stored.epoch > self.epoch.load(Ordering::Acquire));
        if behind { self.refresh() } else { Ok(()) }
    }

    /// Whether `settings` name another prefix or pepper check than the
    /// ones this ring claimed its store with, which its own settings carry
    /// (`claim_store`; settings without them, from an older keyward, name
    /// none).
    fn foreign(&self, settings: &RingSettings) -> bool {
        let ours = self.settings.read().unwrap_or_else(PoisonError::into_inner);
        settings
            .other_ring(ours.prefix.as_deref(), ours.check.as_ref())
            .is_some()
    }

    /// Installs settings this ring has just written.
    fn take_settings(&self, settings: RingSettings) {
        self.install(settings, None);
    }

    /// Installs `settings`, unless they were read when `seen` installs
    /// had been made and more have been made since; says whether it did.
    /// The epoch is raised either way: it only moves forward.
    fn install(&self, mut settings: RingSettings, seen: Option<u64>) -> bool {
        let mut current = self
            .settings
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_max(settings.epoch, Ordering::AcqRel);
        if let Some(at) = settings.revoked_all_at {
            self.revoked_all_at.fetch_max(nanos(at), Ordering::AcqRel);
        }
        if seen.is_some_and(|seen| seen != self.installed.load(Ordering::Acquire)) {
            return false;
        }
        // The settings kept are those in force, for `settings()`: a store
        // whose epoch went back (an import's `Replace`), or a stale copy,
        // leaves the ring's higher epoch and revoke-all instant.
        settings.epoch = self.epoch.load(Ordering::Acquire);
        let at = self.revoked_all_at.load(Ordering::Acquire);
        settings.revoked_all_at = (at != NOT_YET).then(|| instant(at));
        self.default.store(&settings);
        *current = settings;
        self.installed.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Changes the settings: `change` derives them from the store's
    /// (another ring may have written them), never behind this ring's
    /// epoch, and they are written only over the settings they were
    /// derived from ([`Change::SettingsIf`]). When another ring writes in
    /// between, the settings are read again and `change` runs again, so a
    /// default or a revoke-all that ring wrote is kept. `change` says
    /// whether there is anything to write: if not, what was read is
    /// installed as a reload's would be (not over settings installed since
    /// it was read) and nothing is written. Call under [`Self::lock`].
    fn change_settings(
        &self,
        mut change: impl FnMut(&mut RingSettings) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut runs = 1;
        loop {
            let seen = self.installed.load(Ordering::Acquire);
            let expected = self.store.load_settings()?;
            if expected.as_ref().is_some_and(|s| self.foreign(s)) {
                return Err(StoreError::ForeignSettings.into());
            }
            let mut next = match &expected {
                Some(stored) => stored.clone(),
                None => self
                    .settings
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            };
            next.epoch = next.epoch.max(self.epoch.load(Ordering::Acquire));
            if !change(&mut next)? {
                self.install(next, Some(seen));
                return Ok(());
            }
            let write = Change::SettingsIf {
                expected,
                next: next.clone(),
            };
            match self.store.apply(vec![write]) {
                Err(StoreError::SettingsConflict) if runs < SETTINGS_ATTEMPTS => {
                    settings_backoff(runs);
                    runs += 1;
                }
                Err(e) => return Err(e.into()),
                Ok(()) => {
                    self.take_settings(next);
                    return Ok(());
                }
            }
        }
    }

    /// Writes every key's changed usage back to the store, in batches.
    fn flush_usage(&self) -> Result<(), StoreError> {
        let changed: Vec<KeyId> = self
            .store
            .list(None)?
            .iter()
            .filter(|e| e.usage_changed())
            .map(|e| e.id())
            .collect();
        for ids in changed.chunks(FLUSH_BATCH) {
            let _guard = self.lock();
            redo_on_conflict(|| {
                let (batch, carries): (Vec<Change>, Vec<Carry>) = ids
                    .iter()
                    .filter_map(|&id| self.store.lookup(id))
                    .filter(|e| e.usage_changed())
                    .map(|e| {
                        let (next, carry) = Carry::revise(&e, |_| {});
                        (carry.replace(next), carry)
                    })
                    .unzip();
                Carry::write(&self.store, batch, carries)
            })?;
        }
        self.store.flush()
    }
}

/// A signing key in its own allocation, wiped on drop: the builder's list
/// may reallocate as keys are added, which would leave copies of keys held
/// inline in freed memory.
type BoxedKey = Box<zeroize::Zeroizing<[u8; 32]>>;

/// Configures a [`KeyRing`]; made by [`KeyRing::builder`].
#[must_use]
pub struct KeyRingBuilder {
    prefix: String,
    pepper: Option<zeroize::Zeroizing<[u8; 32]>>,
    clock: Box<dyn Clock>,
    events: Option<Box<dyn EventSink>>,
    report_successes: bool,
    revoke_on_password_expiry: bool,
    sensitive: Vec<String>,
    max_lifetime: Option<Duration>,
    default_expiry: ExpiryPolicy,
    flush_interval: Option<std::time::Duration>,
    signing_keys: Vec<(u8, BoxedKey, bool)>,
    max_token_ttl: Duration,
}

impl KeyRing<MemoryStore> {
    /// Starts configuring a ring whose keys start with `prefix` and `_`.
    /// The prefix is checked by [`KeyRingBuilder::build`].
    ///
    /// Call it as `KeyRing::builder`, whatever the store: the store's type
    /// comes from [`build`](KeyRingBuilder::build). (It is defined on
    /// `KeyRing<MemoryStore>`, the default type parameter, so that
    /// `KeyRing::builder` needs no annotation; through an alias such as
    /// `type Ring = KeyRing<FileStore>`, `Ring::builder` is not found.)
    pub fn builder(prefix: impl Into<String>) -> KeyRingBuilder {
        KeyRingBuilder {
            prefix: prefix.into(),
            pepper: None,
            clock: Box::new(SystemClock),
            events: None,
            report_successes: false,
            revoke_on_password_expiry: false,
            sensitive: Vec::new(),
            max_lifetime: None,
            default_expiry: ExpiryPolicy::Never,
            flush_interval: Some(DEFAULT_FLUSH_INTERVAL),
            signing_keys: Vec::new(),
            max_token_ttl: DEFAULT_MAX_TOKEN_TTL,
        }
    }
}

impl KeyRingBuilder {
    /// The 32-byte secret that keys the hash at rest, from the host's secret
    /// manager. Without one, hashes are keyed by a fixed context only, and a
    /// stolen store can be checked against a guessed key (which, at 142
    /// random bits, nobody can guess). Changing it invalidates every key,
    /// and every access token: their MAC keys are derived from it too.
    ///
    /// Give 32 bytes from a CSPRNG (e.g. `openssl rand -hex 32`), never
    /// bytes derived from a passphrase or other guessable text: the store's
    /// settings, every export and [`KeyRing::settings`] hold the ring's
    /// hash of a fixed input under the pepper (so that `build` can refuse a
    /// wrong one), and whoever holds a copy can test guessed peppers against
    /// it offline, each guess costing a few BLAKE3 compressions; so can
    /// anyone with a copy of the store and one key of the ring (their own).
    pub fn pepper(mut self, pepper: [u8; 32]) -> Self {
        self.pepper = Some(zeroize::Zeroizing::new(pepper));
        self
    }

    /// The time source (default: [`SystemClock`]).
    #[cfg_attr(
        feature = "coarse-clock",
        doc = "[`CoarseClock`](crate::CoarseClock) reads the wall clock more cheaply, \
               at the kernel's tick resolution."
    )]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Where events go (default: nowhere). The sink is called from the
    /// ring's background threads too, for [`EventKind::StoreFailed`] and
    /// [`EventKind::StoreRecovered`].
    pub fn events(mut self, sink: impl EventSink + 'static) -> Self {
        self.events = Some(Box::new(sink));
        self
    }

    /// Whether successful verifications are reported as events too
    /// (default: no, since they happen on every request): each
    /// [`verify`](KeyRing::verify) and [`verify_with`](KeyRing::verify_with)
    /// that passes, and the key check of each
    /// [`exchange`](KeyRing::exchange_with) of a key without a use limit
    /// (reported before the exchange's own checks, which may still refuse
    /// it), as [`EventKind::Verified`]; each access token that passes
    /// [`verify_access_token`](KeyRing::verify_access_token) or its strict
    /// forms, as [`EventKind::TokenVerified`]. Refusals are always
    /// reported.
    ///
    /// Each reported success builds an [`Event`], whose owner is an owned
    /// `String`: with this on, every successful `verify` allocates (without
    /// it, one of a key without a use limit does not).
    pub fn report_successes(mut self, yes: bool) -> Self {
        self.report_successes = yes;
        self
    }

    /// Whether [`KeyRing::owner_password_expired`] revokes the owner's keys
    /// (default: no, it does nothing).
    pub fn revoke_on_password_expiry(mut self, yes: bool) -> Self {
        self.revoke_on_password_expiry = yes;
        self
    }

    /// Resources never covered by `*` or an unrestricted key; they must be
    /// granted by name.
    pub fn sensitive<I: IntoIterator<Item = R>, R: Into<String>>(mut self, resources: I) -> Self {
        self.sensitive.extend(resources.into_iter().map(Into::into));
        self
    }

    /// The longest any key may live: an explicit expiry beyond it is
    /// refused, and `Never` or idle keys get it as a hard deadline. It
    /// binds keys issued before it was set as well (on a ring built with
    /// it, a key older than the maximum is expired, whatever its own
    /// policy); a key's stored deadline keeps the cap of the ring that
    /// issued it.
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = Some(max);
        self
    }

    /// The policy of keys issued without their own (default: never). It
    /// seeds a new store; a store that already has ring settings keeps its
    /// own (change it with [`KeyRing::set_default_expiry`]). Under a
    /// [maximum lifetime](Self::max_lifetime) a fixed default must fit the
    /// cap, and a `Never` or idle default expires keys at the cap.
    ///
    /// [`build`](Self::build) checks it on every store, new or not: a
    /// period that is not positive is refused with
    /// [`Error::InvalidExpiry`], a lifetime past the maximum with
    /// [`Error::ExpiryBeyondMax`]. A fixed instant or date that has passed
    /// is refused only when it would seed a new store (so a service whose
    /// store keeps its own default still restarts after that date).
    pub fn default_expiry(mut self, policy: ExpiryPolicy) -> Self {
        self.default_expiry = policy;
        self
    }

    /// How often a background thread writes usage (`last_used_at`, use
    /// counts) back to the store, then flushes the store: the most a crash
    /// can lose. Default 30 seconds. A second thread reloads the ring
    /// settings every second (another ring on the same store may have
    /// revoked all keys), apart from the first so that a long flush never
    /// delays it. Dropping the ring stops both, waiting for a flush under
    /// way.
    ///
    /// `None` runs no thread: usage is written only by [`KeyRing::flush`]
    /// and when the ring is dropped, and settings are reloaded by
    /// [`KeyRing::refresh`] and by the ring's own writes (`issue`,
    /// `rotate`, `revoke`, `update`, `revoke_all` and the like read them
    /// before they write), and an [`exchange`](KeyRing::exchange) first
    /// catches up with a `revoke_all` written since; `verify` goes by the
    /// settings last loaded. A [`FileStore`](crate::FileStore) compacts its
    /// file on those flushes, so with `None` call [`KeyRing::flush`] (or
    /// [`FileStore::compact`](crate::FileStore::compact)) from time to time.
    /// A zero interval, which would flush without pause, is refused by
    /// [`build`](Self::build) with [`Error::InvalidInput`].
    pub fn flush_interval(mut self, every: Option<std::time::Duration>) -> Self {
        self.flush_interval = every;
        self
    }

    /// The key that signs access tokens from now on, with its id (0 to 61,
    /// written into each token), from the host's secret manager. See
    /// [`KeyRing::exchange`]. One key signs: [`build`](Self::build) refuses
    /// a second `signing_key` with [`Error::InvalidInput`] (give the keys
    /// tokens may still carry with [`accept_signing_key`](Self::accept_signing_key)).
    pub fn signing_key(mut self, id: u8, key: [u8; 32]) -> Self {
        self.signing_keys
            .push((id, Box::new(zeroize::Zeroizing::new(key)), true));
        self
    }

    /// A previous signing key: tokens it signed still verify (until they
    /// expire), but no new token is signed with it. For rolling the key.
    pub fn accept_signing_key(mut self, id: u8, key: [u8; 32]) -> Self {
        self.signing_keys
            .push((id, Box::new(zeroize::Zeroizing::new(key)), false));
        self
    }

    /// The longest life of an access token (default one hour, at most 24
    /// hours: [`build`](Self::build) refuses more, since a plain token
    /// check cannot see a single key's revocation until the token expires).
    /// At least one second: tokens carry whole seconds, and under a shorter
    /// maximum an exchange early in a second would end its token in the
    /// second it was issued in (refused), so `build` refuses less with
    /// [`Error::InvalidInput`].
    pub fn max_token_ttl(mut self, max: Duration) -> Self {
        self.max_token_ttl = max;
        self
    }

    /// Checks the configuration and opens the ring on `store`.
    pub fn build<S: KeyStore + 'static>(self, store: S) -> Result<KeyRing<S>, Error> {
        let prefix = Prefix::new(&self.prefix)?;
        let hasher = Hasher::new(self.pepper.as_deref(), prefix.as_str());
        let mut signer = Signer::with_capacity(self.signing_keys.len());
        for (id, key, current) in &self.signing_keys {
            signer.add(*id, key, prefix.as_str(), self.pepper.as_deref(), *current)?;
        }
        if !self.max_token_ttl.is_positive() {
            return Err(Error::InvalidInput(
                "the maximum token lifetime must be positive",
            ));
        }
        if self.max_token_ttl < Duration::SECOND {
            return Err(Error::InvalidInput(
                "the maximum token lifetime must be at least one second (tokens carry whole seconds)",
            ));
        }
        if self.max_token_ttl > TOKEN_TTL_LIMIT {
            return Err(Error::InvalidInput(
                "the maximum token lifetime must be at most 24 hours",
            ));
        }
        if self.flush_interval.is_some_and(|every| every.is_zero()) {
            return Err(Error::InvalidInput(
                "a flush interval must be positive (None runs no flush thread)",
            ));
        }
        let sensitive = Sensitive::new(&self.sensitive)?;
        if let Some(max) = self.max_lifetime
            && !max.is_positive()
        {
            return Err(Error::InvalidExpiry(
                "the maximum lifetime must be positive",
            ));
        }
        // As `KeyRing::stamp` gives it.
        let now = instant(clamp_nanos(self.clock.unix_nanos()));
        let check = hasher.hash(KeyId::from_u64(0), STORE_CHECK);
        // The default is checked on every build, not only when it seeds a
        // new store: a period that is not positive, or one past the cap, is
        // a configuration error that must show where the service runs, not
        // first in a new environment. A fixed instant or date is judged
        // only when it seeds a store: once it has passed, a service whose
        // store keeps its own default must still restart.
        let default_expiry = self.default_expiry.normalized()?;
        if !matches!(
            default_expiry,
            ExpiryPolicy::At(_) | ExpiryPolicy::EndOfDate(_)
        ) {
            check_default(default_expiry, self.max_lifetime, now)?;
        }
        let settings = claim_store(&store, &prefix, &check, || {
            check_default(default_expiry, self.max_lifetime, now)?;
            Ok(RingSettings {
                default_expiry,
                default_since: now,
                epoch: 0,
                revoked_all_at: None,
                superseded: Vec::new(),
                prefix: None,
                check: None,
            })
        })?;
        let shared = Arc::new(Shared {
            store,
            writes: Mutex::new(()),
            revoked_all_at: AtomicI64::new(settings.revoked_all_at.map_or(NOT_YET, nanos)),
            epoch: AtomicU64::new(settings.epoch),
            default: HotDefault::new(&settings),
            settings: RwLock::new(settings),
            installed: AtomicU64::new(0),
        });
        let clock: Arc<dyn Clock> = Arc::from(self.clock);
        let events: Option<Arc<dyn EventSink>> = self.events.map(Arc::from);
        let background = match self.flush_interval {
            Some(every) => {
                let reporter = events.clone().map(|sink| Reporter {
                    sink,
                    clock: Arc::clone(&clock),
                });
                Some(Background::spawn(&shared, every, reporter)?)
            }
            None => None,
        };
        Ok(KeyRing {
            prefix,
            hasher,
            signer,
            max_token_ttl: self.max_token_ttl,
            shared,
            clock,
            events,
            report_successes: self.report_successes,
            revoke_on_password_expiry: self.revoke_on_password_expiry,
            sensitive,
            max_lifetime: self.max_lifetime,
            background,
        })
    }
}

#[cfg(test)]
mod builder_tests {
    use super::*;

    /// Each signing key stays where the builder first put it, however many
    /// are added: growing the list moves no key, so none is left behind in
    /// freed memory.
    #[test]
    fn builder_signing_keys_never_move() {
        let mut builder = KeyRing::builder("acme").signing_key(0, [1; 32]);
        let first: *const [u8; 32] = &**builder.signing_keys[0].1;
        for id in 1..100u8 {
            builder = builder.accept_signing_key(id, [id; 32]);
        }
        assert!(std::ptr::eq(first, &**builder.signing_keys[0].1));
    }

    /// The builder's default is checked on a store that has settings of
    /// its own too (which it does not change): a period that is not
    /// positive, or a lifetime past the cap, is refused there as on a new
    /// store. A fixed instant that has passed is refused only where it
    /// would seed the store.
    #[test]
    fn the_default_is_checked_on_a_store_that_keeps_its_own() {
        let store = Arc::new(MemoryStore::new());
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let build = |store: &Arc<MemoryStore>, policy, max: Option<Duration>| {
            let builder = KeyRing::builder("acme")
                .clock(crate::ManualClock::new(t0))
                .default_expiry(policy)
                .flush_interval(None);
            let builder = match max {
                Some(max) => builder.max_lifetime(max),
                None => builder,
            };
            builder.build(Arc::clone(store)).map(drop)
        };
        build(&store, ExpiryPolicy::days(7), None).unwrap();
        let saved = store.load_settings().unwrap();
        for fresh in [false, true] {
            let store = if fresh {
                Arc::new(MemoryStore::new())
            } else {
                Arc::clone(&store)
            };
            assert!(matches!(
                build(&store, ExpiryPolicy::days(0), None),
                Err(Error::InvalidExpiry(_))
            ));
            assert!(matches!(
                build(&store, ExpiryPolicy::Idle(Duration::ZERO), None),
                Err(Error::InvalidExpiry(_))
            ));
            assert!(matches!(
                build(&store, ExpiryPolicy::days(90), Some(Duration::days(30))),
                Err(Error::ExpiryBeyondMax { .. })
            ));
            let passed = build(&store, ExpiryPolicy::At(t0 - Duration::DAY), None);
            assert_eq!(passed.is_err(), fresh, "{passed:?}");
        }
        assert_eq!(store.load_settings().unwrap(), saved);
    }

    /// A zero flush interval would run the flush thread without pause: it
    /// is refused, and the smallest positive one builds.
    #[test]
    fn a_zero_flush_interval_is_refused() {
        let build = |every| {
            KeyRing::builder("acme")
                .flush_interval(Some(every))
                .build(MemoryStore::new())
        };
        assert!(matches!(
            build(std::time::Duration::ZERO),
            Err(Error::InvalidInput(reason)) if reason.contains("flush interval")
        ));
        assert!(build(std::time::Duration::from_nanos(1)).is_ok());
    }

    /// Tokens carry whole seconds: under a maximum life of less than one,
    /// an exchange early in a second ended its token in that very second
    /// and was refused ("the key expires too soon"), one late in it was
    /// not. Such a maximum is refused at build; one second exchanges at
    /// any fraction of a second.
    #[test]
    fn a_maximum_token_life_under_a_second_is_refused() {
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let clock = crate::ManualClock::new(t0);
        let build = |max| {
            KeyRing::builder("acme")
                .clock(clock.clone())
                .signing_key(1, [1; 32])
                .max_token_ttl(max)
                .flush_interval(None)
                .build(MemoryStore::new())
        };
        for max in [Duration::NANOSECOND, Duration::milliseconds(999)] {
            assert!(matches!(
                build(max),
                Err(Error::InvalidInput(reason)) if reason.contains("at least one second")
            ));
        }
        let ring = build(Duration::SECOND).unwrap();
        let issued = ring.issue(crate::NewKey::new("o")).unwrap();
        for ms in [0, 300, 999] {
            clock.set(t0 + Duration::milliseconds(ms));
            let token = ring.exchange(issued.secret.expose(), Duration::SECOND);
            assert!(token.is_ok(), "{ms} ms: {token:?}");
        }
    }
}

/// The uses a record's old version counted after its new version was
/// copied from it: `verify` counts a use on the version it found, and a
/// write replaces the version under it. Carried over to the new version
/// once that is in the store; by then no use can reach the old one,
/// since `verify` counts within [`KeyStore::inspect`], which the swap of
/// a store whose `inspect` holds a lock (`MemoryStore`, `FileStore`)
/// waits for. Through a store with the default `inspect`, a racing use
/// can still be lost.
///
/// Across rings: every write is a [`Change::ReplaceIf`] of the version it
/// copied, so of two rings that copied the same version only one writes
/// it; the other meets a conflict, drops its carry and copies the new
/// version. A carry lands on whatever version is in the store when it is
/// taken, and a later copy of that version takes it along. Not exact,
/// though: the carry's lookup and its addition are not under the store's
/// lock, so a carry that found a version just before another ring
/// replaced it, and added to it after that ring's own carry, is lost
/// (usage statistics, off by the uses of a few instructions' window).
///
/// A key with a use limit takes no carry: its use is counted on the new
/// version a [`Change::ReplaceIf`] writes at once (see
/// `KeyRing::consume_limited`), so its count is exact across rings.
struct Carry {
    old: Arc<StoredKey>,
    uses: u64,
    last_used: Nanos,
}

impl Carry {
    /// A new version of `old` made by `change`, and its carry.
    fn revise(old: &Arc<StoredKey>, change: impl FnOnce(&mut Key)) -> (StoredKey, Carry) {
        let (next, uses, last_used) = old.revised_counting(change);
        let carry = Carry {
            old: Arc::clone(old),
            uses,
            last_used,
        };
        (next, carry)
    }

    /// The change that writes `next`, derived from the old version, if the
    /// store still holds the old version.
    fn replace(&self, next: StoredKey) -> Change {
        Change::ReplaceIf {
            expected: Arc::clone(&self.old),
            next,
        }
    }

    /// Applies `batch` to `store` (under the ring's write lock), then, if
    /// it was written, carries `carries` onto the versions it wrote.
    fn write<S: KeyStore>(
        store: &S,
        batch: Vec<Change>,
        carries: Vec<Carry>,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        store.apply(batch)?;
        carries.into_iter().for_each(|c| c.onto(store));
        Ok(())
    }

    /// Adds what the old version counted since the copy to the version now
    /// in `store` (under the ring's write lock, after the write).
    fn onto<S: KeyStore>(self, store: &S) {
        let key = &self.old.key;
        // A store that keeps usage in its table (`MemoryStore`) kept every
        // use across the swap: the record's count is a mirror, and carrying
        // it would count those uses twice.
        if key.kept.get() {
            return;
        }
        let more = key.uses.get().saturating_sub(self.uses);
        let last_used = key.last_used_at.get();
        if more == 0 && last_used <= self.last_used {
            return;
        }
        if let Some(current) = store.lookup(self.old.id()) {
            current.key.carry_usage(more, last_used);
        }
    }
}

/// What `check` does with a key that has a use limit and passed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limited {
    /// Spend a use, written at once (`verify`).
    Spend,
    /// Spend nothing: the caller refuses the key (`exchange`).
    Hold,
}

/// An error that may say the record changed since it was read: a
/// [`StoreError::Conflict`], or a [`StoreError::NotFound`], which the
/// [`Change::ReplaceIf`] of a record another ring deleted meanwhile meets
/// (every write redone on a conflict is a `ReplaceIf`, or an `Insert`,
/// which cannot meet it). Redone, the write finds the key gone and says
/// so as [`Error::NotFound`], or passes it over (`revoke_owner`, a flush).
trait MayConflict {
    fn is_conflict(&self) -> bool;
}

impl MayConflict for StoreError {
    fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_) | StoreError::NotFound(_))
    }
}

impl MayConflict for Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Storage(e) if e.is_conflict())
    }
}

/// Whether a refusal came after the presented secret (or a token's
/// signature) matched: only then does a refusal's event carry the key's
/// owner. A refusal as `Invalid` or `Malformed` carries none, so that with
/// an event sink, a string naming a stored id with a wrong secret costs
/// what one naming no key does (their timing must not tell which ids
/// exist), and an owner is never reported to whoever merely knows an id.
fn authenticated(error: &VerifyError) -> bool {
    !matches!(error, VerifyError::Invalid | VerifyError::Malformed(_))
}

/// What a ring hashes, under id 0, for [`RingSettings::check`]: no key's
/// secret is this (a secret is base62), so the value says nothing of any
/// key, and a ring with another pepper (or prefix) computes another.
const STORE_CHECK: &[u8; token::SECRET_LEN] = b"keyward-ring-store-check";

/// The store's settings, claimed for the ring of `prefix` whose hash of
/// [`STORE_CHECK`] is `check`. A store of another prefix or pepper is
/// refused with [`Error::StoreOfAnotherRing`]; a store without settings
/// gets `fresh()`'s, and settings saved before keyward kept a prefix and a
/// check get the ring's, in both cases unless the store holds keys and
/// none of them is of the ring's prefix (as their hints say). Each write
/// is a [`Change::SettingsIf`]: when another ring writes first, its
/// settings are read and judged instead.
fn claim_store<S: KeyStore>(
    store: &S,
    prefix: &Prefix,
    check: &KeyHash,
    mut fresh: impl FnMut() -> Result<RingSettings, Error>,
) -> Result<RingSettings, Error> {
    let mut runs = 1;
    loop {
        let saved = store.load_settings()?;
        let mut next = match &saved {
            Some(saved) => {
                match saved.other_ring(Some(prefix.as_str()), Some(check)) {
                    Some(OtherRing::Prefix) => {
                        // Not a secret, and what an operator needs to see
                        // which ring's store was configured by mistake;
                        // shown as an unchecked prefix is, since the store
                        // may hold anything there.
                        let theirs = token::shown_prefix(saved.prefix().unwrap_or_default());
                        return Err(Error::StoreOfAnotherRing(format!(
                            "it holds the keys of prefix `{theirs}`"
                        )));
                    }
                    Some(OtherRing::Pepper) => {
                        return Err(Error::StoreOfAnotherRing(
                            "its keys were hashed under another pepper".into(),
                        ));
                    }
                    None => {}
                }
                if saved.prefix.is_some() && saved.check.is_some() {
                    return Ok(saved.clone());
                }
                saved.clone()
            }
            None => fresh()?,
        };
        // Settings an older keyward saved, or none (a store a host filled
        // with `insert`, or an import of an export without settings): the
        // keys' hints say whose they are. A store that holds keys, none of
        // this prefix, is another ring's (a test ring starting first must
        // not take the live ring's store, list its keys and revoke them).
        if saved.as_ref().is_none_or(|s| s.prefix.is_none())
            && crate::store::none_of_prefix(&store.list(None)?, prefix.as_str())
        {
            return Err(Error::StoreOfAnotherRing(
                "it holds the keys of another prefix".into(),
            ));
        }
        next.prefix = Some(prefix.as_str().to_owned());
        next.check = Some(check.clone());
        let claim = Change::SettingsIf {
            expected: saved,
            next: next.clone(),
        };
        match store.apply(vec![claim]) {
            Ok(()) => return Ok(next),
            Err(StoreError::SettingsConflict) if runs < SETTINGS_ATTEMPTS => {
                settings_backoff(runs);
                runs += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs `write` again while it fails on a conflict, up to
/// [`CONFLICT_ATTEMPTS`] runs. `write` reads the records it changes, derives
/// the new versions and writes them with [`Change::ReplaceIf`], so each run
/// starts from what another ring wrote meanwhile: a revocation it finds
/// makes an update fail as on any revoked key, and is kept by a usage
/// flush. A run sends its events only once its write has landed.
fn redo_on_conflict<T, E: MayConflict>(mut write: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let mut runs = 1;
    loop {
        match write() {
            Err(e) if e.is_conflict() && runs < CONFLICT_ATTEMPTS => runs += 1,
            done => return done,
        }
    }
}

/// The ring's two background threads: one reloads the settings every
/// second, so a revoke-all or a new default written by another ring on the
/// same store arrives within it; the other writes usage back and flushes
/// the store every flush interval. They are apart so that a long store
/// flush (a [`FileStore`](crate::FileStore) compaction takes seconds at a
/// million keys) never holds up the reload.
struct Background {
    /// Dropping these wakes and stops the threads.
    stops: Vec<SyncSender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    fn spawn<S: KeyStore + 'static>(
        shared: &Arc<Shared<S>>,
        every: std::time::Duration,
        reporter: Option<Reporter>,
    ) -> Result<Background, Error> {
        let mut background = Background {
            stops: Vec::with_capacity(2),
            threads: Vec::with_capacity(2),
        };
        // On an error the threads already started stop with `background`.
        // A failed read keeps the settings held; the next tick retries.
        let settings = Task {
            name: "keyward-settings",
            every: SETTINGS_REFRESH,
            task: StoreTask::SettingsReload,
            work: Shared::refresh,
        };
        // A failed write leaves the keys marked; the next round retries.
        let flush = Task {
            name: "keyward-flush",
            every,
            task: StoreTask::UsageFlush,
            work: Shared::flush_usage,
        };
        background.start(shared, settings, reporter.clone())?;
        background.start(shared, flush, reporter)?;
        Ok(background)
    }

    /// Starts a thread running the task's work every period until stopped.
    /// It holds the ring's shared state only while working. A failure is
    /// reported when the task starts failing, and the recovery when it next
    /// succeeds: not once a tick.
    fn start<S: KeyStore + 'static>(
        &mut self,
        shared: &Arc<Shared<S>>,
        task: Task<S>,
        reporter: Option<Reporter>,
    ) -> Result<(), Error> {
        let (stop, stopped) = mpsc::sync_channel::<()>(0);
        let shared = Arc::downgrade(shared);
        let thread = std::thread::Builder::new()
            .name(task.name.into())
            .spawn(move || {
                let mut failing = false;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(task.every) {
                    let Some(shared) = shared.upgrade() else {
                        break;
                    };
                    // A store that panics once (the hook has printed it)
                    // must not end the reloads for good: a revoke-all by
                    // another ring would never arrive. The ring's locks
                    // shrug off poisoning, and `FileStore` is whole after
                    // an unwinding write or compaction.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        (task.work)(&shared)
                    }));
                    drop(shared);
                    let failure = match outcome {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(event::describe(&e)),
                        Err(_) => Some(PANICKED.to_owned()),
                    };
                    let failed = failure.is_some();
                    if let Some(reporter) = &reporter {
                        // A sink that panics (the host's code) must not end
                        // the thread either.
                        let _ =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                                || match failure {
                                    Some(error) if !failing => reporter.failed(task.task, error),
                                    None if failing => reporter.recovered(task.task),
                                    _ => {}
                                },
                            ));
                    }
                    failing = failed;
                }
            })
            .map_err(|e| Error::Storage(StoreError::Backend(Box::new(e))))?;
        self.stops.push(stop);
        self.threads.push(thread);
        Ok(())
    }
}

/// One background task: a thread name, a period, and the work.
struct Task<S> {
    name: &'static str,
    every: std::time::Duration,
    task: StoreTask,
    work: fn(&Shared<S>) -> Result<(), StoreError>,
}

/// Sends the events of the ring's own store accesses, from any thread.
#[derive(Clone)]
struct Reporter {
    sink: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
}

impl Reporter {
    fn failed(&self, task: StoreTask, error: String) {
        let event = Event::new(EventKind::StoreFailed { task, error }, self.clock.now());
        self.sink.record(&event);
    }

    fn recovered(&self, task: StoreTask) {
        let event = Event::new(EventKind::StoreRecovered { task }, self.clock.now());
        self.sink.record(&event);
    }
}

/// A panic, as a store failure. Its message is left out: the panic hook
/// has printed it, and an event may go where a message made by someone
/// else's code should not.
const PANICKED: &str = "the store panicked (its message went to the panic hook)";

impl Drop for Background {
    /// Stops the threads and waits for them: a flush under way (a
    /// compaction, perhaps) ends first, so the store is released when the
    /// ring is gone.
    fn drop(&mut self) {
        self.stops.clear();
        for thread in self.threads.drain(..) {
            // A thread that panicked has nothing left to stop.
            let _ = thread.join();
        }
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
    let beyond = || Error::ExpiryBeyondMax { max };
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
    /// The address the request came from, for keys bound to networks.
    pub peer: Option<IpAddr>,
    /// The client certificate the request presented (from the TLS layer),
    /// for keys bound to one.
    pub client_cert: Option<CertFingerprint>,
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

    /// The peer address of the request. An `IpAddr` has no zone id, so a
    /// key bound to a link-local network (`fe80::/10`, `169.254.0.0/16`)
    /// accepts such an address from any of the host's interfaces: bind
    /// link-local keys by certificate where the interface matters.
    pub fn peer_addr(mut self, peer: IpAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// The fingerprint of the client certificate the request presented.
    pub fn client_cert(mut self, fingerprint: CertFingerprint) -> Self {
        self.client_cert = Some(fingerprint);
        self
    }

    /// The client certificate the request presented, in DER form (hashed
    /// here with SHA-256). An empty `der` counts as no certificate, for
    /// every key (see [`Bindings::client_cert`](crate::Bindings::client_cert)).
    pub fn client_cert_der(self, der: &[u8]) -> Self {
        self.client_cert(CertFingerprint::of_der(der))
    }
}

impl<'a> From<&'a Requirement> for RequestContext<'a> {
    fn from(requirement: &'a Requirement) -> Self {
        RequestContext::new().require(requirement)
    }
}

/// What [`KeyRing::exchange_with`] asks for.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct TokenRequest<'a> {
    ttl: Option<Duration>,
    scopes: Option<ScopeSet>,
    context: RequestContext<'a>,
}

impl<'a> TokenRequest<'a> {
    /// The default: 30 minutes, the key's scopes, no request context.
    pub fn new() -> Self {
        TokenRequest::default()
    }

    /// How long the token lives (capped by the ring's maximum and the key's
    /// expiry).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Fewer scopes than the key has: at most 256, as a key holds
    /// ([`KeyRing::exchange_with`] refuses more with
    /// [`Error::InvalidInput`]).
    pub fn scopes(mut self, scopes: ScopeSet) -> Self {
        self.scopes = Some(scopes);
        self
    }

    /// The request the key is presented with (bindings, a requirement).
    pub fn context(mut self, context: RequestContext<'a>) -> Self {
        self.context = context;
        self
    }
}

/// Whether a token was exchanged before the last regeneration of its key
/// (with a secret that is dead now). Tokens carry whole seconds: one issued
/// in the second of a regeneration counts as before it (fail closed).
fn predates_regeneration(entry: &StoredKey, claims: &AccessClaims) -> bool {
    issued_by_regeneration(entry, nanos(claims.issued_at))
}

/// Whether a token issued at `issued` (whole seconds) counts as exchanged
/// before the key's last regeneration.
fn issued_by_regeneration(entry: &StoredKey, issued: Nanos) -> bool {
    let regenerated = entry.key.extra.as_ref().and_then(|e| e.tokens_after);
    regenerated.is_some_and(|at| issued <= at)
}

/// Whether a token was exchanged at or before the ring's last revoke-all
/// (as the ring last loaded its settings), which revoked the key it was
/// exchanged for. Tokens carry whole seconds: one issued in the second of
/// the revoke-all counts as before it (fail closed).
fn predates_revoke_all<S: KeyStore>(shared: &Shared<S>, claims: &AccessClaims) -> bool {
    nanos(claims.issued_at) <= shared.revoked_all_at.load(Ordering::Acquire)
}

/// The start of `n`'s second, or the earliest time there is.
fn whole_second(n: Nanos) -> Nanos {
    n.saturating_sub(n.rem_euclid(1_000_000_000))
}

/// The state of a key at an instant, for listings and filters.
///
/// Several can hold at once. A key is revoked, or else disabled, or else
/// neither (revoked outranks disabled: a revoke-all revokes a disabled key
/// for good, and [`Key::status`] still shows the status it had); besides,
/// whatever that status, it may be expired and it may be used up. Active
/// holds only when none of the others does.
///
/// [`KeyRing::state`] gives the one state that [`KeyRing::verify`] reports
/// for the key (with its right secret): the first that holds of revoked,
/// disabled, expired, used up, else active. [`ListFilter::state`] lists a
/// key under each state that holds for it: a disabled key past its end is
/// listed as disabled and as expired, and its `state` is disabled.
///
/// Serialized (and [`as_str`](Self::as_str)) in snake case: `"active"`,
/// `"disabled"`, `"revoked"`, `"expired"`, `"used_up"`, for an
/// administrator's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyState {
    /// Verifies: none of the other states holds. (A request can still be
    /// refused for its scopes or bindings.)
    Active,
    /// Disabled (reversibly), and not revoked.
    Disabled,
    /// Revoked, one by one or by a revoke-all.
    Revoked,
    /// Past its expiry (or its rotation grace, or idle too long); or, with
    /// a use limit, rotated (its remaining uses went to its successor).
    Expired,
    /// Its use limit is spent ([`VerifyError::UsageExceeded`]).
    UsedUp,
}

impl KeyState {
    /// The state's name in snake case, as serialized: `"active"`,
    /// `"disabled"`, `"revoked"`, `"expired"` or `"used_up"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Disabled => "disabled",
            KeyState::Revoked => "revoked",
            KeyState::Expired => "expired",
            KeyState::UsedUp => "used_up",
        }
    }
}

impl fmt::Display for KeyState {
    /// [`as_str`](Self::as_str).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which keys [`KeyRing::list`] and [`KeyRing::list_page`] return: each
/// filter given must match.
///
/// A key matches [`state`](Self::state) when that state holds for it, one
/// of possibly several (see [`KeyState`]): `state(KeyState::Expired)` lists
/// every key past its end, whether active, disabled or revoked, and
/// `state(KeyState::Active)` only the keys that verify.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ListFilter {
    owner: Option<String>,
    state: Option<KeyState>,
    after: Option<ListCursor>,
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

    /// Only keys for which this state holds now, among the others that may
    /// hold too (see [`KeyState`]).
    pub fn state(mut self, state: KeyState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only keys after this position in the listing's order (oldest
    /// first): the keys that follow a page, from its
    /// [`next`](crate::Page::next), or those after a key
    /// (`ListCursor::from(&key)`). Keep the other filters as they were
    /// for the first page: the cursor does not remember them.
    pub fn after(mut self, cursor: ListCursor) -> Self {
        self.after = Some(cursor);
        self
    }
}

/// The ring's administrative operations on behalf of a named actor, who is
/// then recorded in every event: `ring.by("alice").revoke(id, "left")`. A
/// key or access token pasted into the actor is redacted in events and in
/// `Debug`.
pub struct Acting<'a, S: KeyStore> {
    ring: &'a KeyRing<S>,
    actor: Option<&'a str>,
}

impl<S: KeyStore> fmt::Debug for Acting<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acting")
            .field("ring", self.ring)
            .field("actor", &self.actor.map(event::shown_actor))
            .finish()
    }
}

impl<S: KeyStore> KeyRing<S> {
    /// The administrative operations, recorded as done by `actor`.
    pub fn by<'a>(&'a self, actor: &'a str) -> Acting<'a, S> {
        Acting {
            ring: self,
            actor: Some(actor),
        }
    }

    fn anonymous(&self) -> Acting<'_, S> {
        Acting {
            ring: self,
            actor: None,
        }
    }

    /// Issues a key. Its plaintext is in the returned [`Issued::secret`] and
    /// nowhere else.
    ///
    /// Refused with [`Error::InvalidInput`]: an empty owner, or one with a
    /// NUL character; fields past their limits (owner, name, each metadata
    /// key and value and each contact field 256 bytes; description 4096
    /// bytes; 64 metadata entries; 256 scopes in the key's set, in the
    /// owner's, and in the key's set once capped to the owner's; 64
    /// networks); a use limit of 0; a key without its own expiry while the
    /// ring's default is a fixed instant or date that has passed (it would
    /// be dead on arrival). Refused with
    /// [`Error::InvalidExpiry`]: an expiry that has passed, or a period
    /// that is not positive. Refused with [`Error::ExpiryBeyondMax`]: an
    /// expiry of its own that ends after the ring's maximum lifetime
    /// (`Never` included). When the request names the owner's scopes, the
    /// key's scopes are capped to them.
    pub fn issue(&self, request: NewKey) -> Result<Issued, Error> {
        self.anonymous().issue(request)
    }

    /// Replaces a key by a new one (new id and secret) that inherits its
    /// name, description, owner, contact, scopes, metadata, bindings,
    /// expiry, remaining uses and status (a disabled key's successor is
    /// disabled). The old key keeps working until `grace` from now, but
    /// never past its own expiry; a zero grace ends it at once.
    ///
    /// A key with its own expiry policy hands its deadline on unchanged (a
    /// rotation renews the secret, not the lifetime), within the ring's
    /// [maximum lifetime](KeyRingBuilder::max_lifetime) as it bound the old
    /// key (counted from the old key's creation); a key governed by the
    /// ring default stays so. A key with a use limit gets no grace: its
    /// remaining uses go to the successor, and it stops at once. Refused for
    /// a revoked ([`Error::Revoked`]), deleted ([`Error::NotFound`]),
    /// expired ([`Error::Expired`]) or already rotated
    /// ([`Error::AlreadyRotated`]) key, and with [`Error::InvalidInput`]
    /// for a negative grace or a key whose uses are all spent.
    ///
    /// **After a storage error** ([`Error::Storage`]) the outcome is
    /// unknown: the store may hold the whole rotation, though its
    /// successor's secret was never returned (a
    /// [`FileStore`](crate::FileStore) whose fsync failed after the record
    /// reached the disk finds it when reopened; a database may commit a
    /// transaction whose acknowledgement is lost). It holds all of it or
    /// none, never half. Once the store works again (a `FileStore`
    /// reopened), [`get`](Self::get) the old key: if its
    /// [`rotation`](Key::rotation) names a successor (`rotated_to`), the
    /// rotation happened, the old key works until the end of its grace
    /// (`grace_until`: at once for a zero grace or a key with a use
    /// limit), a retried `rotate` is refused with
    /// [`Error::AlreadyRotated`], and [`regenerate`](Self::regenerate) of
    /// the successor issues the secret for it; no `Rotated` or `Issued`
    /// event was sent. If it names none, nothing changed: rotate again.
    /// Regenerate the successor, not the old key: that would end the
    /// secret the old key's clients still use, and give one that still
    /// ends with the grace.
    pub fn rotate(&self, id: KeyId, grace: Duration) -> Result<Issued, Error> {
        self.anonymous().rotate(id, grace)
    }

    /// Gives a key a new secret, keeping its id and record; the old secret
    /// fails at once. A disabled key can be regenerated (its new secret
    /// works once it is enabled), and so can a rotated key in its grace,
    /// but its new secret still ends with the grace.
    ///
    /// The access tokens exchanged with the old secret fail the strict
    /// checks from then on: those issued up to the regeneration (up to the
    /// moment its write landed: an exchange that found the old record
    /// while a slow write crossed into the next second is covered, at the
    /// cost of a second write), or up to the key's last use if that is
    /// later (a clock that went back since), so that no token of the old
    /// secret outlives it. The new secret is
    /// exchanged from the second after that on (until then
    /// [`Error::RegeneratedThisSecond`]).
    ///
    /// Refused, changing nothing, for a key whose new secret could never
    /// verify: a revoked key, one by one or by a revoke-all
    /// ([`Error::Revoked`]); a deleted key ([`Error::NotFound`]); an
    /// expired key ([`Error::Expired`]), whether active or disabled: past
    /// its own expiry or the ring default's (a later change of the default
    /// does not revive it), idle past its idle timeout, a rotated key past
    /// its grace, or a key with a use limit that was rotated (its uses went
    /// to its successor); and with [`Error::InvalidInput`] a key whose uses
    /// are all spent ([`VerifyError::UsageExceeded`]), as `rotate` refuses
    /// it. Issue a new key instead.
    ///
    /// After a storage error ([`Error::Storage`]) the store may hold the
    /// new secret, which was never returned, and the old one then fails:
    /// regenerate again once the store works. (When the new secret's write
    /// landed and only the second write failed, the regeneration is
    /// reported, [`EventKind::Regenerated`].) To recover a rotation whose
    /// secret was lost, regenerate the successor (see
    /// [`rotate`](Self::rotate)).
    pub fn regenerate(&self, id: KeyId) -> Result<Issued, Error> {
        self.anonymous().regenerate(id)
    }

    /// Switches a key off, reversibly. Disabling a disabled key changes
    /// nothing; a revoked key cannot be disabled.
    pub fn disable(&self, id: KeyId) -> Result<(), Error> {
        self.anonymous().disable(id)
    }

    /// Switches a disabled key back on. Enabling an active key changes
    /// nothing; a revoked key cannot be enabled.
    pub fn enable(&self, id: KeyId) -> Result<(), Error> {
        self.anonymous().enable(id)
    }

    /// Revokes a key for good, with a reason kept in its record. Revoking a
    /// revoked key changes nothing (the first reason stays).
    ///
    /// The reason is checked first, whatever the key (unknown, revoked):
    /// refused with [`Error::InvalidInput`] when it is empty or only white
    /// space, or longer than 256 bytes, and then nothing is written or
    /// reported. The same holds for [`revoke_owner`](Self::revoke_owner)
    /// and [`revoke_leaked`](Self::revoke_leaked).
    pub fn revoke(&self, id: KeyId, reason: &str) -> Result<(), Error> {
        self.anonymous().revoke(id, reason)
    }

    /// Deletes a key's record. A deleted key verifies as `invalid`, like one
    /// that never existed.
    pub fn delete(&self, id: KeyId) -> Result<(), Error> {
        self.anonymous().delete(id)
    }

    /// Changes a key's name, description, contact, metadata or bindings, or
    /// narrows its scopes (widening is refused). The new values are held to
    /// the limits of [`issue`](Self::issue); a refused update changes
    /// nothing. An update that gives each field the value it has already
    /// writes nothing and sends no event.
    pub fn update(&self, id: KeyId, change: KeyUpdate) -> Result<Key, Error> {
        self.anonymous().update(id, change)
    }

    /// Revokes every key of `owner`; returns the ids it revoked. The reason
    /// is checked first, as for [`revoke`](Self::revoke), even when the
    /// owner has no keys. A key another ring on the same store rotates
    /// meanwhile is revoked with its successor, even when the store's
    /// [`list`](KeyStore::list), which need not be a snapshot, missed it.
    pub fn revoke_owner(&self, owner: &str, reason: &str) -> Result<Vec<KeyId>, Error> {
        self.anonymous().revoke_owner(owner, reason)
    }

    /// Revokes every key in the ring at once, in one settings write however
    /// many keys there are: it raises the ring's epoch, and keys issued in an
    /// earlier epoch no longer verify, nor do access tokens issued up to the
    /// end of the second its write landed in, even in the plain
    /// [`verify_access_token`](Self::verify_access_token) (by the tokens'
    /// own times: see there for a ring whose clock runs ahead; when the write
    /// crossed into a later second than the one it was made in, a second
    /// settings write moves the instant there: an exchange that found the
    /// old epoch meanwhile dated its token in that second). Keys issued
    /// afterwards work. Refused
    /// with [`Error::InvalidInput`], changing nothing, when the epoch
    /// (a `u64`, raised by one each time) is already at its maximum, which
    /// only edited settings reach. After a storage error the revoke-all may
    /// have landed all the same ([`settings`](Self::settings) tells, once
    /// [`refresh`](Self::refresh)ed; when the second write failed, the
    /// first had landed, and its [`EventKind::AllRevoked`] is reported);
    /// calling it again revokes again, and marks the tokens of this second
    /// too.
    pub fn revoke_all(&self) -> Result<(), Error> {
        self.anonymous().revoke_all()
    }

    /// Tells the ring that `owner`'s password expired: revokes the owner's
    /// keys when the ring was built with
    /// [`revoke_on_password_expiry`](KeyRingBuilder::revoke_on_password_expiry),
    /// else does nothing. Returns the ids it revoked.
    pub fn owner_password_expired(&self, owner: &str) -> Result<Vec<KeyId>, Error> {
        self.anonymous().owner_password_expired(owner)
    }

    /// Changes the policy of keys issued without their own. It takes effect
    /// now for the keys it governs that are still in force: such a key
    /// expires the new period after this moment, not after its creation. A
    /// key that had already expired under the old default stays expired
    /// (a longer default, or none, does not bring it back), and
    /// [`expires_at`](Self::expires_at) still gives the instant it expired
    /// (the settings keep at most 64 replaced defaults: past that many
    /// changes that each left keys expired, a key that expired under one
    /// of the oldest is reported at the instant it expired under a later
    /// one; it stays expired).
    /// Keys with their own policy are not touched. Persisted in the store,
    /// in one settings write whatever the number of keys. Setting the
    /// policy already in force changes nothing (no key gets a fresh period,
    /// no event).
    pub fn set_default_expiry(&self, policy: ExpiryPolicy) -> Result<(), Error> {
        self.anonymous().set_default_expiry(policy)
    }

    /// Checks a presented key: valid, active, not expired, uses left. The
    /// per-request call: no I/O (except for a key with a use limit, whose
    /// use is written at once; if the store fails that write, the key is
    /// refused as [`VerifyError::Unavailable`] and no use is spent), and no
    /// heap allocation on success for a key without a use limit (a limited
    /// key's write builds the record's next version), unless the ring
    /// [reports successes](KeyRingBuilder::report_successes) to its event
    /// sink (each builds an [`Event`], which owns its strings).
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
        let outcome = self.check(presented, &request.into(), Limited::Spend, NOT_YET);
        if self.events.is_some() {
            self.report(presented, &outcome);
        }
        outcome
    }

    /// `verify`'s checks, the use counted. `stamp` is a later instant the
    /// key's last use must reach (an exchange's, whose token carries it;
    /// `NOT_YET` for none).
    fn check(
        &self,
        presented: &str,
        request: &RequestContext<'_>,
        limited: Limited,
        stamp: Nanos,
    ) -> Result<Verified, VerifyError> {
        let parsed = token::parse(presented, &self.prefix).map_err(VerifyError::Malformed)?;
        // The clock is read before the record: a precise reading's ordered
        // TSC read (`rdtscp`, or `lfence; rdtsc`) waits for every earlier
        // instruction, so after the lookup it would wait out the record's
        // cache misses. A trailing reading has no such read.
        let now = self.reading();
        let digest = self.hasher.hash(parsed.id, parsed.secret);
        let mut outcome = Err(VerifyError::Invalid);
        self.store().inspect(parsed.id, &mut |lent| {
            outcome = self.judge_lent(lent, &digest, now, request, stamp);
        });
        // Whether the key has a use limit comes from the judgement: read
        // from the `Verified`, it would reach the record the fast path
        // spared.
        let (verified, has_limit) = outcome?;
        if has_limit && limited == Limited::Spend {
            return self.consume_limited(verified.id(), &digest, request);
        }
        Ok(verified)
    }

    /// [`judge`](Self::judge) on what the store lent, and the use of a key
    /// without a use limit counted where the store keeps it, at `now` or
    /// at `stamp` if that is later: here, where the store cannot swap the
    /// record (see `Carry`); and whether the key has a use limit.
    #[inline]
    fn judge_lent(
        &self,
        lent: Option<Lent<'_>>,
        digest: &KeyHash,
        now: Reading,
        request: &RequestContext<'_>,
        stamp: Nanos,
    ) -> Result<(Verified, bool), VerifyError> {
        let at = match lent {
            Some(Lent(LentAs::Slot(at))) => {
                if at.slot().is_plain() {
                    // A plain key has no use limit.
                    return Ok((self.judge_slot(at, digest, now, request, stamp)?, false));
                }
                // The slow path reads the record's last use (an idle
                // timeout of its own): raise it to the slot's first.
                at.slot().refresh();
                Some(at)
            }
            _ => None,
        };
        let entry = self.judge(lent.map(|l| l.record()), digest, now, request)?;
        if let Some(lent) = lent
            && !entry.key.shape.limited
        {
            lent.consume(now.nanos.max(stamp));
        }
        let verified = match at {
            Some(at) => Verified::of_slot(at),
            None => Verified::of_record(Arc::clone(entry)),
        };
        Ok((verified, entry.key.shape.limited))
    }

    /// [`judge`](Self::judge) of a plain key (see `store::chunks::PLAIN`:
    /// active, under the ring's default policy, no use limit, no grace, no
    /// bindings) from its table slot alone, the record untouched unless the
    /// request names scopes: the secret (16 bytes of the digest, constant
    /// time, see SECURITY.md), the revoke-all epoch, the default policy's
    /// ends, the scopes; then the use, counted in the slot.
    #[inline]
    fn judge_slot(
        &self,
        at: SlotRef<'_>,
        digest: &KeyHash,
        now: Reading,
        request: &RequestContext<'_>,
        stamp: Nanos,
    ) -> Result<Verified, VerifyError> {
        let slot = at.slot();
        if !digest.head_is(slot.hash_head()) {
            return Err(VerifyError::Invalid);
        }
        if slot.epoch() < self.shared.epoch.load(Ordering::Acquire) {
            return Err(VerifyError::Revoked);
        }
        let created_at = slot.created_at();
        let (deadline, idle_end) = self.default_ends(created_at, created_at.max(slot.last_used()));
        if self.expired(now, deadline.min(idle_end), idle_end != NEVER) {
            return Err(VerifyError::Expired);
        }
        if let Some(requirement) = request.requirement {
            requirement
                .check(&slot.record().key.scopes, &self.sensitive)
                .map_err(|missing| VerifyError::InsufficientScope(missing.clone()))?;
        }
        slot.count_use(whole_second(now.nanos.max(stamp)));
        Ok(Verified::of_slot(at))
    }

    /// The checks of `verify` on a record the store lends: the secret
    /// (constant time; an unknown id is compared against a placeholder, the
    /// same answer as a wrong secret, and about the same time, as the store
    /// reads another record for it: see [`KeyStore::inspect`]), then revocation,
    /// status, expiry, bindings and scopes. Only a key that passes is
    /// reference counted.
    fn judge<'e>(
        &self,
        entry: Option<&'e Arc<StoredKey>>,
        digest: &KeyHash,
        now: Reading,
        request: &RequestContext<'_>,
    ) -> Result<&'e Arc<StoredKey>, VerifyError> {
        let placeholder = KeyHash::placeholder();
        let stored = entry.map_or(&placeholder, |e| &e.hash);
        // Read the record's reference count now, alongside its hash: the
        // count can sit on the cache line before the hash, and the locked
        // increment of the clone below would otherwise fetch that line only
        // once every check is done. A plain load for every record, whatever
        // the secret, so the timing stays independent of it; a live record
        // always counts at least one.
        let counted = entry.is_none_or(|e| Arc::strong_count(e) > 0);
        let matches = (*digest == *stored) & counted;
        let entry = match entry {
            Some(entry) if matches => entry,
            _ => return Err(VerifyError::Invalid),
        };
        let key = &entry.key;
        // Revoked (by epoch or by record) outranks disabled.
        if key.epoch < self.shared.epoch.load(Ordering::Acquire) {
            return Err(VerifyError::Revoked);
        }
        match key.status {
            StatusCode::Active => {}
            StatusCode::Disabled => return Err(VerifyError::Disabled),
            StatusCode::Revoked => return Err(VerifyError::Revoked),
        }
        let (cutoff, renews) = self.limits(entry);
        if self.expired(now, cutoff, renews) {
            return Err(VerifyError::Expired);
        }
        if key.bound {
            key.bindings()
                .check(request.client_cert, request.peer)
                .map_err(VerifyError::BindingMismatch)?;
        }
        if let Some(requirement) = request.requirement {
            requirement
                .check(&key.scopes, &self.sensitive)
                .map_err(|missing| VerifyError::InsufficientScope(missing.clone()))?;
        }
        Ok(entry)
    }

    /// Spends one use of a limited key and writes it at once, under the
    /// write lock, as a [`Change::ReplaceIf`] of the version judged: exact
    /// across threads, administrative writes and other rings on the same
    /// store, and a restart cannot grant it again. The record is judged
    /// again under the lock, at a fresh reading of the clock (the wait for
    /// the lock may have been long), and the use is counted on the new
    /// version: a write refused for a conflict spends nothing, and the
    /// version another ring wrote meanwhile is judged afresh (it may be
    /// revoked, or have a new secret). A write the store fails, or
    /// [`VERIFY_CONFLICT_ATTEMPTS`] conflicts, refuse the key as
    /// [`VerifyError::Unavailable`], with nothing spent: fail closed. A key
    /// found rotated is refused as [`VerifyError::Expired`], whatever the
    /// clock: its successor holds its remaining uses.
    ///
    /// A failure is reported once the lock is released: a sink that calls
    /// back into the ring (see [`EventSink`]) would wait for it.
    fn consume_limited(
        &self,
        id: KeyId,
        digest: &KeyHash,
        request: &RequestContext<'_>,
    ) -> Result<Verified, VerifyError> {
        let guard = self.shared.lock();
        let now = self.reading();
        for _ in 0..VERIFY_CONFLICT_ATTEMPTS {
            let current = self.store().lookup(id);
            let judged = Arc::clone(self.judge(current.as_ref(), digest, now, request)?);
            // A rotation handed the key's remaining uses to its successor
            // and ended it at once, at the rotating ring's reading of the
            // clock, which may be after `now`: another ring's rotation can
            // land after that reading. Judged by its end alone, the key
            // would spend a use its successor holds too.
            if judged.key.handed_on() {
                return Err(VerifyError::Expired);
            }
            let mut spent = false;
            let next = judged.revised(|k| spent = k.spend(now.nanos));
            if !spent {
                return Err(VerifyError::UsageExceeded);
            }
            let write = Change::ReplaceIf {
                expected: Arc::clone(&judged),
                next,
            };
            match self.store().apply(vec![write]) {
                Ok(()) => {
                    let entry = self.store().lookup(id).unwrap_or(judged);
                    return Ok(Verified::of_record(entry));
                }
                Err(StoreError::Conflict(_)) => {}
                // Deleted by another ring since the lookup.
                Err(StoreError::NotFound(_)) => return Err(VerifyError::Invalid),
                Err(e) => {
                    drop(guard);
                    self.store_failed(StoreTask::LimitedUse, Some(id), || event::describe(&e));
                    return Err(VerifyError::Unavailable);
                }
            }
        }
        drop(guard);
        self.store_failed(StoreTask::LimitedUse, Some(id), || {
            let conflict = StoreError::Conflict(id);
            format!("{conflict}, {VERIFY_CONFLICT_ATTEMPTS} times in a row")
        });
        Err(VerifyError::Unavailable)
    }

    /// Reports a failure of the ring's own use of the store (see
    /// [`EventKind::StoreFailed`]).
    fn store_failed(&self, task: StoreTask, key: Option<KeyId>, error: impl FnOnce() -> String) {
        self.emit(|| {
            let event = Event::new(
                EventKind::StoreFailed {
                    task,
                    error: error(),
                },
                self.clock.now(),
            );
            match key {
                Some(id) => event.key(id),
                None => event,
            }
        });
    }

    fn now_nanos(&self) -> Nanos {
        clamp_nanos(self.clock.unix_nanos())
    }

    /// The clock's reading as the ring settings keep an instant: in UTC,
    /// within the range of record times, as keys keep theirs. A host clock
    /// may answer in an offset RFC 3339 cannot write (one with seconds),
    /// and a store that writes the settings in it would refuse them.
    fn stamp(&self) -> OffsetDateTime {
        instant(self.now_nanos())
    }

    /// The time `verify` judges by: the clock's trailing reading when it
    /// has one (see [`Clock::trailing_unix_nanos`]), else its precise one.
    fn reading(&self) -> Reading {
        match self.clock.trailing_unix_nanos() {
            Some(trailing) => Reading {
                nanos: clamp_nanos(trailing),
                exact: false,
            },
            None => Reading {
                nanos: self.now_nanos(),
                exact: true,
            },
        }
    }

    /// Whether `cutoff` has passed. A trailing reading never runs ahead of
    /// the clock, so a cutoff it has reached has passed; one more than
    /// [`TRAIL_MARGIN`] after it has not; in between, the precise clock
    /// decides. It decides too for a key a use `renews` (an idle timeout):
    /// a trailing reading that lagged by more than the margin (a stalled
    /// kernel tick) would otherwise let such a key through after its idle
    /// end, and the use it stamps would extend it by a whole period.
    fn expired(&self, now: Reading, cutoff: Nanos, renews: bool) -> bool {
        if cutoff <= now.nanos {
            true
        } else if now.exact || (cutoff > now.nanos.saturating_add(TRAIL_MARGIN) && !renews) {
            false
        } else {
            self.now_nanos() >= cutoff
        }
    }

    // Out of line: only a ring with an event sink calls it, and its store
    // lookup for a refused key's owner stays out of `verify_with`'s code.
    #[inline(never)]
    fn report(&self, presented: &str, outcome: &Result<Verified, VerifyError>) {
        // The clock is read only for an event that is sent: a success that
        // is not reported must not pay for a precise reading.
        match outcome {
            Ok(v) if self.report_successes => {
                self.emit(|| {
                    Event::new(EventKind::Verified, self.clock.now())
                        .key(v.id())
                        .owner(v.owner())
                });
            }
            Ok(_) => {}
            Err(e) => self.emit(|| {
                let event = Event::new(EventKind::VerifyFailed(e.clone()), self.clock.now());
                // The id is public; report it when the string parsed, with
                // the owner of its key when the secret matched (see
                // `authenticated`: for the host's audit of whose key was
                // refused).
                let Ok(parsed) = token::parse(presented, &self.prefix) else {
                    return event;
                };
                let event = event.key(parsed.id);
                match authenticated(e)
                    .then(|| self.store().lookup(parsed.id))
                    .flatten()
                {
                    Some(entry) => event.owner(entry.key.owner()),
                    None => event,
                }
            }),
        }
    }

    fn emit(&self, event: impl FnOnce() -> Event) {
        if let Some(sink) = &self.events {
            sink.record(&event());
        }
    }

    /// Trades a valid API key for a short-lived access token of `ttl`
    /// (capped by the ring's [maximum](KeyRingBuilder::max_token_ttl) and by
    /// the key's own expiry), carrying the key's id, owner and scopes. See
    /// [`exchange_with`](Self::exchange_with) for narrower scopes, bindings
    /// and the default lifetime (30 minutes).
    pub fn exchange(&self, presented: &str, ttl: Duration) -> Result<AccessToken, Error> {
        self.exchange_with(presented, TokenRequest::new().ttl(ttl))
    }

    /// Trades a valid API key for an access token: the key is verified with
    /// the request's context (bindings, scope requirement), so a revoked,
    /// disabled or expired key gets none. The token's scopes may be narrowed,
    /// never widened. On a clock before 1970, which no token can carry, the
    /// exchange is refused with [`Error::InvalidInput`]; in the second the
    /// key was [regenerated](Self::regenerate) in, with
    /// [`Error::RegeneratedThisSecond`] (a token of that second could not be
    /// told from one of the old secret).
    ///
    /// The key check counts a use of the key, as [`verify`](Self::verify)
    /// does. What refuses an exchange whatever the key (no signing key, a
    /// lifetime that is not positive, over 256 scopes asked, a clock before
    /// 1970) is decided
    /// before it, so such a refusal counts no use; a refusal that depends
    /// on the key (wider scopes, a key regenerated this second or expiring
    /// within it, an owner and scopes too long for a token) comes after the
    /// check, and its use is counted: a key with an
    /// [idle timeout](ExpiryPolicy::Idle) is kept alive by those.
    ///
    /// An exchange reads the store's settings first (one
    /// [`load_settings`](KeyStore::load_settings)), so a
    /// [`revoke_all`](Self::revoke_all) by another ring on the same store
    /// stops it at once: a token minted from a key it ended would carry a
    /// time after it, which the plain
    /// [`verify_access_token`](Self::verify_access_token) takes.
    pub fn exchange_with(
        &self,
        presented: &str,
        request: TokenRequest<'_>,
    ) -> Result<AccessToken, Error> {
        // The token's time is read before the key is checked, so it never
        // postdates that check: a regeneration that lands between the
        // check and the signing is after the token's time, and strict
        // checks refuse the token (see `tokens_after`).
        let now = self.clock.now();
        // `check` counts a use of a key without a use limit as it passes
        // it, so whatever refuses the exchange regardless of the key is
        // decided first. The refusals that depend on the key need it
        // judged first, and a judgement that counts nothing would be a
        // second caller of the store's `inspect` beside `check`, which
        // changes how the compiler builds `check` for `verify` (it stopped
        // inlining `inspect` there: seen in the bench's disassembly).
        if !self.signer.can_sign() {
            return Err(Error::NoSigningKey);
        }
        let ttl = request.ttl.unwrap_or(DEFAULT_TOKEN_TTL);
        if !ttl.is_positive() {
            return Err(Error::InvalidInput("a token lifetime must be positive"));
        }
        // Held to a key's limit: a strict check of the token meets each of
        // its scopes with each of the key's (when the key was narrowed
        // since), and without a limit a token of some 800 short scopes
        // made that check take 40 ms.
        if request
            .scopes
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SCOPES)
        {
            return Err(Error::InvalidInput(
                "a token's scopes are limited to 256, as a key's are",
            ));
        }
        // A token carries no time before 1970 (the signer refuses one), and
        // before 1677 the ring's nanosecond times hold none: refuse here,
        // before rounding such a reading.
        if now < OffsetDateTime::UNIX_EPOCH {
            return Err(Error::InvalidInput(crate::access::BEFORE_1970));
        }
        // A revoke-all by another ring on the same store reaches this
        // ring's `verify` within a second (the background reload), but a
        // token minted in that second from a key it revoked would pass the
        // plain check for its whole life: its time is after the
        // revoke-all. So an exchange reads the store's settings first, as
        // `issue` does. (Read after `now`: a revoke-all that lands after
        // this read is later than the token's time, which the plain check
        // refuses once it knows of it.)
        self.shared.catch_up_with_revoke_all()?;
        // A token is not counted against the key's uses, so it would
        // outlive them: a limited key is refused once it passed its checks
        // (the refusal tells nothing to a caller without its secret), and
        // before a use is spent.
        // The key's last use covers every token exchanged for it, which a
        // regeneration's cut reaches (see `regenerate_locked`): the check
        // stamps the token's second.
        let issued = whole_second(nanos(now));
        let outcome = self.check(presented, &request.context, Limited::Hold, issued);
        // Reported before any refusal that follows a passed check, as the
        // later ones are: the key passed, and the event says so.
        if self.events.is_some() {
            self.report(presented, &outcome);
        }
        if let Ok(verified) = &outcome
            && verified.key().limit().is_some()
        {
            return Err(Error::InvalidInput(
                "a key with a use limit cannot be exchanged for access tokens",
            ));
        }
        let verified = outcome.map_err(Error::Rejected)?;
        let key = verified.key();
        let scopes = match request.scopes {
            Some(narrower) => {
                if !narrower.is_within(&key.scopes, &self.sensitive) {
                    let wider = narrower
                        .iter()
                        .find(|s| !key.scopes.permits_text(s, &self.sensitive))
                        .map_or_else(|| "unrestricted".to_owned(), ToString::to_string);
                    return Err(Error::ScopeWidening(wider));
                }
                narrower
            }
            None => key.scopes.clone(),
        };
        // A token of the second the key was regenerated in counts as one of
        // the old secret (tokens carry whole seconds), and strict checks
        // would refuse it for its whole life: refuse the exchange instead,
        // so the caller knows to try again.
        if issued_by_regeneration(verified.record(), issued) {
            return Err(Error::RegeneratedThisSecond(key.id));
        }
        // Tokens carry whole seconds: round the end down, never past a cap.
        let end = nanos(now.saturating_add(ttl.min(self.max_token_ttl)))
            .min(self.cutoff(verified.record()));
        let expires = whole_second(end);
        if expires <= issued {
            return Err(Error::InvalidInput(
                "the key expires too soon for an access token",
            ));
        }
        let claims = AccessClaims {
            key_id: key.id,
            owner: key.owner().to_string(),
            scopes,
            issued_at: instant(issued),
            expires_at: instant(expires),
            bound: key.bound,
        };
        self.signer.sign(&self.prefix, claims)
    }

    /// Checks an access token: shape, signature (constant time), expiry.
    /// No store lookup: a token of a key revoked, disabled or regenerated
    /// since its exchange still works until it expires (minutes), and keeps
    /// the scopes of its exchange and whether the key was bound then (an
    /// [`update`](Self::update) narrowing or binding the key since is not
    /// seen); use
    /// [`verify_access_token_strict`](Self::verify_access_token_strict) to
    /// refuse it at once, or to narrow it to the key's current scopes.
    ///
    /// A [`revoke_all`](Self::revoke_all) is the exception: its instant is
    /// held in the ring's settings, in memory, and every token issued at or
    /// before it is refused as [`VerifyError::Revoked`]. Tokens carry whole
    /// seconds, so one exchanged in the second of the revoke-all is refused
    /// too, even for a key issued after it. Another ring on the same store
    /// sees the revoke-all when it reloads its settings (within a second
    /// with its background thread, else on [`refresh`](Self::refresh)); its
    /// [exchanges](Self::exchange_with) see it at once, so it mints no
    /// token from a key the revoke-all ended.
    ///
    /// The token is judged by its own time, which is the clock of the ring
    /// that exchanged it. A ring whose clock runs ahead of the one that
    /// calls `revoke_all` (or whose clock jumped forward and was set back
    /// before the call) dates its tokens after the revoke-all's instant,
    /// and those tokens pass this check until they expire (within the
    /// [maximum](KeyRingBuilder::max_token_ttl)). The strict check refuses
    /// them: it reads the key, which the revoke-all ended. Keep the rings'
    /// clocks in step, or use the strict check where that matters.
    ///
    /// A token that lives longer than the ring's
    /// [maximum](KeyRingBuilder::max_token_ttl) (lowered since the token was
    /// exchanged) is refused as [`VerifyError::Expired`]: lowering it, and
    /// restarting, shortens every outstanding token.
    pub fn verify_access_token(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let outcome = self.check_token(token);
        match &outcome {
            // Without the owner: this check never reaches the store.
            Err(e) => self.report_token(token, e, false),
            Ok(claims) => self.report_token_passed(claims),
        }
        outcome
    }

    /// Like [`verify_access_token`](Self::verify_access_token), and the key
    /// the token was exchanged for must still be active: one in-memory
    /// lookup, no I/O. The claims' scopes come back narrowed to what the
    /// key still grants (an [`update`](Self::update) may have narrowed its
    /// scopes since the exchange).
    ///
    /// It checks the key's bindings against an empty request, as
    /// [`verify`](Self::verify) does for the key itself: a token of a bound
    /// key is refused with the binding the request lacks,
    /// [`Binding::ClientCertificate`] or [`Binding::Network`] (the plain
    /// check, which cannot look the bindings up, says
    /// [`Binding::NotPresented`]). Check such a token with its request
    /// through [`verify_access_token_with`](Self::verify_access_token_with).
    ///
    /// ```
    /// use keyward::{Binding, CertFingerprint, KeyRing, MemoryStore, NewKey, RequestContext};
    /// use keyward::{TokenRequest, VerifyError};
    /// let ring = KeyRing::builder("acme").signing_key(1, [7; 32]).build(MemoryStore::new())?;
    /// let cert = CertFingerprint::of_der(b"client certificate");
    /// let issued = ring.issue(NewKey::new("acct_42").client_cert(cert))?;
    /// let request = RequestContext::new().client_cert(cert);
    /// let token = ring.exchange_with(
    ///     issued.secret.expose(),
    ///     TokenRequest::new().context(request),
    /// )?;
    /// let lacking = VerifyError::BindingMismatch(Binding::ClientCertificate);
    /// assert_eq!(ring.verify(issued.secret.expose()).unwrap_err(), lacking);
    /// assert_eq!(ring.verify_access_token_strict(token.expose()).unwrap_err(), lacking);
    /// assert_eq!(
    ///     ring.verify_access_token(token.expose()).unwrap_err(),
    ///     VerifyError::BindingMismatch(Binding::NotPresented),
    /// );
    /// assert!(ring.verify_access_token_with(token.expose(), request).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify_access_token_strict(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        self.verify_access_token_with(token, RequestContext::new())
    }

    /// Strict verification with the request's context: the key must still be
    /// active, the token must postdate the key's last regeneration, and a
    /// token of a bound key must come with what the key is bound to (the
    /// key's current bindings are checked, as for the key itself). The
    /// claims' scopes are narrowed to what the key still grants, and a
    /// scope requirement is checked against those.
    pub fn verify_access_token_with<'a>(
        &self,
        token: &str,
        request: impl Into<RequestContext<'a>>,
    ) -> Result<AccessClaims, VerifyError> {
        let request = request.into();
        let outcome = self.signer.open(&self.prefix, token).and_then(|claims| {
            self.token_in_force(&claims)?;
            let entry = self
                .store()
                .lookup(claims.key_id)
                .ok_or(VerifyError::Invalid)?;
            match self.state_at(&entry, self.clock.now()) {
                KeyState::Active => {}
                KeyState::Revoked => return Err(VerifyError::Revoked),
                KeyState::Disabled => return Err(VerifyError::Disabled),
                KeyState::Expired => return Err(VerifyError::Expired),
                KeyState::UsedUp => return Err(VerifyError::UsageExceeded),
            }
            if predates_regeneration(&entry, &claims) {
                return Err(VerifyError::Revoked);
            }
            if claims.bound || entry.key.bound {
                entry
                    .key
                    .bindings()
                    .check(request.client_cert, request.peer)
                    .map_err(VerifyError::BindingMismatch)?;
            }
            // The key's scopes may have narrowed since the exchange (an
            // `update`): the token grants only what both still grant.
            let mut claims = claims;
            if !claims.scopes.is_within(&entry.key.scopes, &self.sensitive) {
                claims.scopes = claims.scopes.cap(&entry.key.scopes, &self.sensitive);
            }
            if let Some(requirement) = request.requirement {
                self.authorize(&claims, requirement)?;
            }
            Ok(claims)
        });
        match &outcome {
            Err(e) => self.report_token(token, e, true),
            Ok(claims) => self.report_token_passed(claims),
        }
        outcome
    }

    /// Reports a token that passed, when the ring reports successes: its
    /// key and owner as its claims name them (signed by the ring, and
    /// checked).
    fn report_token_passed(&self, claims: &AccessClaims) {
        if self.report_successes {
            self.emit(|| {
                Event::new(EventKind::TokenVerified, self.clock.now())
                    .key(claims.key_id)
                    .owner(&claims.owner)
            });
        }
    }

    /// Reports a refused token, with the id of the key it names when it
    /// parsed (public, as for a refused key; see `report`), and, for a
    /// strict check (which reads the store anyway) of a token whose
    /// signature held, that key's owner from the store, never from the
    /// token's unchecked claims.
    fn report_token(&self, token: &str, error: &VerifyError, strict: bool) {
        self.emit(|| {
            let event = Event::new(EventKind::VerifyFailed(error.clone()), self.clock.now());
            let Some(id) = crate::access::key_id_of(&self.prefix, token) else {
                return event;
            };
            let event = event.key(id);
            let lookup = strict && authenticated(error);
            match lookup.then(|| self.store().lookup(id)).flatten() {
                Some(entry) => event.owner(entry.key.owner()),
                None => event,
            }
        });
    }

    /// The checks of a token's claims that need no store: its expiry, its
    /// life against the ring's maximum, and the last revoke-all.
    fn token_in_force(&self, claims: &AccessClaims) -> Result<(), VerifyError> {
        if self.clock.now() >= claims.expires_at {
            return Err(VerifyError::Expired);
        }
        // A ring whose maximum was lowered since the exchange (the
        // emergency lever against tokens it cannot see revoked) refuses the
        // longer ones. Tokens carry whole seconds: the maximum counts as its
        // whole seconds, rounded up.
        let max = self.max_token_ttl;
        let longest =
            Duration::seconds(max.whole_seconds() + i64::from(max.subsec_nanoseconds() > 0));
        if claims.expires_at - claims.issued_at > longest {
            return Err(VerifyError::Expired);
        }
        // The revoke-all instant is in memory: the emergency stop reaches
        // tokens without a store lookup.
        if predates_revoke_all(&self.shared, claims) {
            return Err(VerifyError::Revoked);
        }
        Ok(())
    }

    fn check_token(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let claims = self.signer.open(&self.prefix, token)?;
        self.token_in_force(&claims)?;
        if claims.bound {
            // Bindings need the request: see `verify_access_token_with`.
            return Err(VerifyError::BindingMismatch(Binding::NotPresented));
        }
        Ok(claims)
    }

    /// Whether a token's scopes meet `requirement` (with the ring's
    /// sensitive resources): the error names the first missing scope.
    ///
    /// A check of claims alone, which reports nothing to the event sink
    /// (claims are plain values a caller can build). For a refusal the
    /// audit trail holds, check the token with its requirement through
    /// [`verify_access_token_with`](Self::verify_access_token_with).
    pub fn authorize(
        &self,
        claims: &AccessClaims,
        requirement: &Requirement,
    ) -> Result<(), VerifyError> {
        requirement
            .check(&claims.scopes, &self.sensitive)
            .map_err(|missing| VerifyError::InsufficientScope(missing.clone()))
    }

    /// Revokes every key of this ring found in `text` (a log, a commit, a
    /// paste) and records an `Exposed` event for each; returns the ids it
    /// revoked. Only genuine finds count: a key whose secret matches its
    /// stored hash, or a token whose signature checks (it revokes the key it
    /// was exchanged for) and that postdates the key's last
    /// [`regenerate`](Self::regenerate). Strings that merely name a key id,
    /// keys of other rings, unknown ids, keys already revoked, and old
    /// secrets of a regenerated key and their tokens are passed over. The
    /// reason is checked first, as for [`revoke`](Self::revoke), even when
    /// `text` holds no key.
    pub fn revoke_leaked(&self, text: &str, reason: &str) -> Result<Vec<KeyId>, Error> {
        self.anonymous().revoke_leaked(text, reason)
    }

    /// The key with this id, if any, with its live usage. Never includes a
    /// secret.
    pub fn get(&self, id: KeyId) -> Option<Key> {
        self.store().lookup(id).map(|e| e.current_key())
    }

    /// The keys that match `filter`, oldest first (by creation time, then
    /// id). Never includes a secret. Every one of them: over a large ring,
    /// an admin view pages with [`list_page`](Self::list_page) instead.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Key>, Error> {
        let mut entries = self.matching(filter)?;
        entries.sort_by_key(|e| ListCursor::of(&e.key));
        Ok(entries.iter().map(|e| e.current_key()).collect())
    }

    /// At most `limit` keys that match `filter`, the first of
    /// [`list`](Self::list)'s order, and where the next page starts:
    /// pass [`Page::next`] to [`ListFilter::after`], with the same filters
    /// otherwise, until it is `None`.
    ///
    /// Each page is taken from the store afresh and the server keeps no
    /// state: the cursor is the last key's position (creation time, id),
    /// so a key issued, revoked or deleted between two pages never makes
    /// another key appear twice or go missing. Only the page's keys are
    /// copied out of the store. `limit` may be larger than the set (one
    /// page holds them all); `limit` 0 is refused with
    /// [`Error::InvalidInput`] (a page that cannot move on would page
    /// forever).
    ///
    /// ```
    /// use keyward::{KeyRing, ListFilter, MemoryStore, NewKey};
    /// let ring = KeyRing::builder("acme").build(MemoryStore::new())?;
    /// for _ in 0..5 {
    ///     ring.issue(NewKey::new("acct_42"))?;
    /// }
    /// let filter = ListFilter::new().owner("acct_42");
    /// let (mut listed, mut page) = (0, ring.list_page(&filter, 2)?);
    /// loop {
    ///     listed += page.keys.len();
    ///     let Some(next) = page.next else { break };
    ///     page = ring.list_page(&filter.clone().after(next), 2)?;
    /// }
    /// assert_eq!(listed, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list_page(&self, filter: &ListFilter, limit: usize) -> Result<Page, Error> {
        if limit == 0 {
            return Err(Error::InvalidInput("a page holds at least one key"));
        }
        let mut entries = self.matching(filter)?;
        let more = entries.len() > limit;
        if more {
            // The `limit` first in linear time, then only they are sorted.
            entries.select_nth_unstable_by_key(limit, |e| ListCursor::of(&e.key));
            entries.truncate(limit);
        }
        entries.sort_unstable_by_key(|e| ListCursor::of(&e.key));
        let keys: Vec<Key> = entries.iter().map(|e| e.current_key()).collect();
        let next = if more {
            keys.last().map(ListCursor::from)
        } else {
            None
        };
        Ok(Page { keys, next })
    }

    /// The records that match `filter`, in no order.
    fn matching(&self, filter: &ListFilter) -> Result<Vec<Arc<StoredKey>>, Error> {
        let now = self.clock.now();
        let mut entries = self.store().list(filter.owner.as_deref())?;
        entries.retain(|e| {
            filter.after.is_none_or(|c| ListCursor::of(&e.key) > c)
                && filter.owner.as_deref().is_none_or(|o| e.key.owner() == o)
                && filter.state.is_none_or(|s| self.holds(e, s, now))
        });
        Ok(entries)
    }

    /// The keys that stop working within `window` from now (their end at
    /// or before now + `window`, as [`expires_at`](Self::expires_at) gives
    /// it), soonest first, each with its record (and so its contact): what
    /// a host needs to e-mail a reminder.
    ///
    /// Listed: [active](KeyState::Active) keys only, and of those not a key
    /// replaced by a [rotation](Self::rotate) that is still in its grace
    /// (its successor is the key to keep, listed when its own end is due).
    /// Left out: revoked, expired and used-up keys, which can never be used
    /// again, and disabled keys, which an administrator switched off (once
    /// enabled again, they are listed again).
    pub fn expiring_within(&self, window: Duration) -> Result<Vec<Reminder>, Error> {
        let now = self.clock.now();
        let until = now.saturating_add(window);
        let mut due: Vec<Reminder> = self
            .store()
            .list(None)?
            .into_iter()
            .filter(|e| self.state_at(e, now) == KeyState::Active)
            .filter(|e| e.key.extra.as_ref().is_none_or(|x| x.rotated_to.is_none()))
            .filter_map(|e| {
                let at = self.cutoff(&e);
                (at != NEVER && at <= nanos(until)).then(|| Reminder {
                    key: e.current_key(),
                    expires_at: instant(at),
                })
            })
            .collect();
        due.sort_by_key(|r| (r.expires_at, r.key.id));
        Ok(due)
    }

    /// The state of the key with this id now, the one `verify` reports
    /// (see [`KeyState`]); `None` if there is no such key.
    pub fn state(&self, id: KeyId) -> Option<KeyState> {
        let now = self.clock.now();
        self.store().lookup(id).map(|e| self.state_at(&e, now))
    }

    /// The first state that holds of revoked, disabled, expired, used up,
    /// else active: the order of `judge` and `consume_limited`.
    fn state_at(&self, entry: &StoredKey, now: OffsetDateTime) -> KeyState {
        let key = &entry.key;
        match key.status {
            StatusCode::Revoked => KeyState::Revoked,
            _ if key.epoch < self.shared.epoch.load(Ordering::Acquire) => KeyState::Revoked,
            StatusCode::Disabled => KeyState::Disabled,
            StatusCode::Active if self.expired_at(entry, now) => KeyState::Expired,
            StatusCode::Active if key.used_up() => KeyState::UsedUp,
            StatusCode::Active => KeyState::Active,
        }
    }

    /// Whether `state` holds for the key now, whichever others hold too.
    fn holds(&self, entry: &StoredKey, state: KeyState, now: OffsetDateTime) -> bool {
        match state {
            // `state_at` looks at the status first: it gives revoked or
            // disabled whenever either holds, and active only when nothing
            // else does.
            KeyState::Active | KeyState::Revoked | KeyState::Disabled => {
                self.state_at(entry, now) == state
            }
            KeyState::Expired => self.expired_at(entry, now),
            KeyState::UsedUp => entry.key.used_up(),
        }
    }

    /// Whether the key has ended at `now`, as `verify` judges it: past its
    /// cutoff, or a limited key whose rotation handed its uses on (ended
    /// at the rotating ring's reading, which a clock behind it or stepped
    /// back has not reached). The cutoff is the one `verify` compares
    /// ([`limits`](Self::limits), not [`cutoff`](Self::cutoff)): a key
    /// that expired under a default since replaced is ended whatever the
    /// clock reads, also on one behind the instant it expired at (another
    /// ring's, or one stepped back), as `verify` refuses it there.
    fn expired_at(&self, entry: &StoredKey, now: OffsetDateTime) -> bool {
        nanos(now) >= self.limits(entry).0 || entry.key.handed_on()
    }

    /// When the key with this id stops working, as things stand: the
    /// earliest of its own deadline (or the ring default's), its rotation
    /// grace and its idle timeout. `None` when it has no end, or no such key.
    pub fn expires_at(&self, id: KeyId) -> Option<OffsetDateTime> {
        let entry = self.store().lookup(id)?;
        let cutoff = self.cutoff(&entry);
        (cutoff != NEVER).then_some(instant(cutoff))
    }

    /// Reloads the ring settings (revoke-all epoch, default policy) from the
    /// store, where another ring on the same store may have changed them.
    /// The background thread does this every second; call it to be sure at
    /// once, or when the ring runs without the thread.
    pub fn refresh(&self) -> Result<(), Error> {
        Ok(self.shared.refresh()?)
    }

    /// The ring settings in force.
    pub fn settings(&self) -> RingSettings {
        self.read_settings().clone()
    }

    fn read_settings(&self) -> std::sync::RwLockReadGuard<'_, RingSettings> {
        // Off the hot path: verify reads `shared.default` and `shared.epoch`.
        self.shared
            .settings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The store the ring works on.
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// Writes usage (`last_used_at`, use counts) changed since the last
    /// flush back to the store, then flushes the store
    /// ([`KeyStore::flush`]: a [`FileStore`](crate::FileStore) compacts
    /// there when dead records call for it).
    ///
    /// # Errors
    ///
    /// The first failed usage write (the keys it did not write stay marked
    /// for the next flush), or else the store's flush error. A
    /// [`FileStore`](crate::FileStore) writes through, so an error from its
    /// flush is a failed compaction: the usage was written and is durable.
    /// The data file stays whole, unless the failure came at or after the
    /// rename: then the store is poisoned (every later write fails until it
    /// is reopened). After a failed compaction, flushes return `Ok` without
    /// compacting until enough new records call for another try (see
    /// [`FileStore`](crate::FileStore)'s `flush`).
    pub fn flush(&self) -> Result<(), Error> {
        Ok(self.shared.flush_usage()?)
    }

    /// The instant the key stops working ([`NEVER`] for none): the
    /// earliest of its fixed deadline (its own, or the ring default's within
    /// the ring's cap), its rotation grace and its idle timeout. Reads only
    /// the record's first cache lines and the lock-free default.
    fn cutoff(&self, entry: &StoredKey) -> Nanos {
        match self.limits(entry).0 {
            EXPIRED_EARLIER => {
                let key = &entry.key;
                let created = instant(key.created_at);
                let last_active = instant(key.created_at.max(key.last_used_at.get()));
                let expired = self
                    .read_settings()
                    .expired_under_superseded(created, last_active)
                    // The bars come from these very settings, so one of
                    // them covers the key, unless a reload changed them
                    // in between: then it expired by its creation at the
                    // latest.
                    .map_or(key.created_at, nanos);
                // The ring's cap applied under that default too, and may
                // have ended the key first.
                let expired = match self.max_lifetime {
                    Some(max) => expired.min(key.created_at.saturating_add(span(max))),
                    None => expired,
                };
                if key.shape.graced {
                    expired.min(key.grace_until_nanos())
                } else {
                    expired
                }
            }
            cutoff => cutoff,
        }
    }

    /// The key's cutoff, and whether a use moves it (an idle timeout
    /// applies).
    #[inline]
    fn limits(&self, entry: &StoredKey) -> (Nanos, bool) {
        let (deadline, idle_end) = self.ends(entry);
        let cutoff = deadline.min(idle_end);
        let renews = idle_end != NEVER;
        if entry.key.shape.graced {
            (cutoff.min(entry.key.grace_until_nanos()), renews)
        } else {
            (cutoff, renews)
        }
    }

    /// The key's deadline (its own, or the ring default's under the
    /// maximum lifetime) and its idle end (`NEVER` without an idle
    /// timeout), before any rotation grace.
    #[inline]
    fn ends(&self, entry: &StoredKey) -> (Nanos, Nanos) {
        let key = &entry.key;
        let last_active = key.created_at.max(key.last_used_at.get());
        // The shape tells which further fields to read (see `Shape`).
        if key.shape.own_policy {
            let idle_end = if key.shape.own_idle {
                match key.expiry() {
                    Some(ExpiryPolicy::Idle(d)) => last_active.saturating_add(span(d)),
                    _ => NEVER,
                }
            } else {
                NEVER
            };
            // The cap binds keys issued before it was set (or lowered
            // since) too: issue wrote the cap of its day into `expires_at`.
            // (Applied in each branch, not once after both: that form read
            // about 0.08x slower back to back in two A/B pairs of the
            // blocks, session 36.)
            let deadline = match self.max_lifetime {
                Some(max) => key
                    .expires_at_nanos()
                    .min(key.created_at.saturating_add(span(max))),
                None => key.expires_at_nanos(),
            };
            (deadline, idle_end)
        } else {
            self.default_ends(key.created_at, last_active)
        }
    }

    /// [`ends`](Self::ends) of a key under the ring's default policy,
    /// created at `created_at` and last active (created or used) at
    /// `last_active`: the record's fields, or a table slot's (`verify`'s
    /// fast path, see `judge_slot`).
    #[inline]
    fn default_ends(&self, created_at: Nanos, last_active: Nanos) -> (Nanos, Nanos) {
        let d = self.shared.default.load();
        if created_at <= d.expired_created_by || last_active <= d.expired_idle_by {
            // Expired under a default since replaced (see `cutoff` for
            // when).
            return (EXPIRED_EARLIER, NEVER);
        }
        let deadline = match d.kind {
            DEFAULT_FIXED => d.value,
            DEFAULT_LIFETIME => created_at.max(d.since).saturating_add(d.value),
            _ => NEVER,
        };
        let deadline = match self.max_lifetime {
            Some(max) => deadline.min(created_at.saturating_add(span(max))),
            None => deadline,
        };
        let idle_end = match d.kind {
            DEFAULT_IDLE => last_active.max(d.since).saturating_add(d.value),
            _ => NEVER,
        };
        (deadline, idle_end)
    }

    /// Draws a fresh key string with an unused id and stores `key` under it,
    /// in one batch with the changes `with` makes for the new id.
    fn insert_new(
        &self,
        mut key: Key,
        with: impl Fn(KeyId) -> Vec<Change>,
    ) -> Result<Issued, Error> {
        for _ in 0..ID_ATTEMPTS {
            let generated = token::generate(&self.prefix)?;
            key.id = generated.id;
            key.set_hint(&self.prefix.hint(generated.id));
            let hash = self
                .hasher
                .hash_new_secret(generated.id, generated.secret_part());
            let mut batch = vec![Change::Insert(StoredKey::new(key.clone(), hash))];
            batch.extend(with(generated.id));
            match self.store().apply(batch) {
                Ok(()) => {
                    return Ok(Issued {
                        key,
                        secret: generated.secret,
                    });
                }
                Err(StoreError::Duplicate(dup)) if dup == generated.id => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Storage(StoreError::Duplicate(key.id)))
    }

    /// Raises the cut of the tokens of a regenerated key's old secrets to
    /// `at` (see [`Acting::regenerate`]), in a write of its own; unless the
    /// key is gone, its cut is there already, or it holds another secret
    /// than the one of `hash` by now: a later regeneration read the record
    /// after the one of `hash` had landed, and its cut, read after that,
    /// covers the same tokens. The key's new record, if written.
    fn raise_cut(&self, id: KeyId, hash: &KeyHash, at: Nanos) -> Result<Option<Key>, Error> {
        let Some(entry) = self.store().lookup(id) else {
            return Ok(None);
        };
        let cut = entry.key.extra.as_ref().and_then(|e| e.tokens_after);
        if entry.hash != *hash || cut.is_some_and(|cut| cut >= at) {
            return Ok(None);
        }
        let (next, carry) = Carry::revise(&entry, |k| k.extra_mut().tokens_after = Some(at));
        let key = next.key.clone();
        Carry::write(self.store(), vec![carry.replace(next)], vec![carry])?;
        Ok(Some(key))
    }

    /// The current record of `id`, refusing a revoked one. Judged by the
    /// ring's epoch as it stands: reload the settings first (another ring
    /// may have revoked every key).
    fn live_entry(&self, id: KeyId) -> Result<Arc<StoredKey>, Error> {
        let entry = self.store().lookup(id).ok_or(Error::NotFound(id))?;
        let revoked = entry.key.status == StatusCode::Revoked
            || entry.key.epoch < self.shared.epoch.load(Ordering::Acquire);
        if revoked {
            return Err(Error::Revoked(id));
        }
        Ok(entry)
    }
}

impl<S: KeyStore> Acting<'_, S> {
    fn event(&self, kind: EventKind, key: &Key, now: OffsetDateTime) {
        self.ring.emit(|| {
            Event::new(kind, now)
                .key(key.id)
                .owner(key.owner())
                .actor(self.actor)
        });
    }

    /// See [`KeyRing::issue`].
    pub fn issue(&self, request: NewKey) -> Result<Issued, Error> {
        let ring = self.ring;
        check_request(&request)?;
        let _guard = ring.shared.lock();
        // Stamp the key with the store's epoch, which another ring may have
        // raised (or the ring's, the store's raised to it).
        ring.shared.refresh_to_stamp()?;
        let now = ring.clock.now();
        let policy = request.expiry.map(ExpiryPolicy::normalized).transpose()?;
        let expires_at = match policy {
            Some(policy) => {
                policy.validate(now)?;
                capped_deadline(policy, now, ring.max_lifetime)?
            }
            None => {
                // Under a fixed default that has passed the key would be
                // dead on arrival; and the keys such a default expired are
                // known, after a change, as those created before it.
                let settings = ring.read_settings();
                let fixed = !matches!(
                    settings.default_expiry,
                    ExpiryPolicy::Never | ExpiryPolicy::Lifetime(_) | ExpiryPolicy::Idle(_)
                );
                if fixed
                    && (settings.default_expiry)
                        .deadline(settings.default_since)
                        .is_some_and(|end| end <= now)
                {
                    return Err(Error::InvalidInput(
                        "the ring's default expiry has passed: set another default, or give the key its own",
                    ));
                }
                None
            }
        };
        let scopes = match &request.owner_scopes {
            Some(held) => request.scopes.cap(held, &ring.sensitive),
            None => request.scopes,
        };
        // Each asked scope is met with each held one, so the capped set can
        // be longer than either: hold it to the limit of a stored set.
        if scopes.len() > MAX_SCOPES {
            return Err(Error::InvalidInput(
                "the scopes capped to the owner's come to more than 256 scopes",
            ));
        }
        let mut key = Key::blank(KeyId::from_u64(0), &request.owner, now);
        key.epoch = ring.shared.epoch.load(Ordering::Acquire);
        key.set_name(&request.name);
        key.scopes = scopes;
        key.extra = Some(Box::new(Extra {
            use_limit: request.use_limit.and_then(NonZeroU64::new),
            description: request.description.map(Into::into),
            contact: request.contact,
            metadata: request.metadata,
            bindings: request.bindings,
            ..Extra::default()
        }));
        key.set_expiry(policy, expires_at);
        key.tidy();
        let issued = ring.insert_new(key, |_| Vec::new())?;
        self.event(EventKind::Issued, &issued.key, now);
        Ok(issued)
    }

    /// See [`KeyRing::rotate`].
    pub fn rotate(&self, id: KeyId, grace: Duration) -> Result<Issued, Error> {
        let ring = self.ring;
        if grace.is_negative() {
            return Err(Error::InvalidInput("a grace period must not be negative"));
        }
        let _guard = ring.shared.lock();
        redo_on_conflict(|| self.rotate_locked(id, grace))
    }

    fn rotate_locked(&self, id: KeyId, grace: Duration) -> Result<Issued, Error> {
        let ring = self.ring;
        ring.shared.refresh_to_stamp()?;
        let old = ring.live_entry(id)?;
        if old
            .key
            .extra
            .as_ref()
            .is_some_and(|e| e.rotated_to.is_some())
        {
            return Err(Error::AlreadyRotated(id));
        }
        let now = ring.clock.now();
        // The successor starts its life now (a default lifetime, an idle
        // timeout): an expired key would come back through it. Judged as
        // `verify` judges it (see `expired_at`).
        if ring.expired_at(&old, now) {
            return Err(Error::Expired(id));
        }
        #[cfg(test)]
        if tests::run_between_rotate_reads() {
            ring.shared.refresh()?;
        }
        // Read once, for the grace's cap below. A reload of the settings
        // since the check above (another ring's new default, on a clock
        // ahead) may find the key expired under the default it replaced:
        // refused as the check would refuse it now. Capped to that mark,
        // the grace would be written as none at all, and a replaced key
        // without one cannot be read back (a `FileStore` would not open).
        let (deadline, _) = ring.ends(&old);
        if deadline == EXPIRED_EARLIER {
            return Err(Error::Expired(id));
        }
        let old_key = old.current_key();
        let mut successor = old_key.clone();
        successor.epoch = ring.shared.epoch.load(Ordering::Acquire);
        // The epoch is read again here, after `live_entry` judged the key
        // by it: a revoke-all reloaded in between revoked the key, and its
        // successor would carry the new epoch and verify.
        if old.key.epoch < successor.epoch {
            return Err(Error::Revoked(id));
        }
        successor.created_at = nanos(now);
        // A policy of the key's own hands on the deadline `verify` gives
        // the old key, the ring's cap included: that cap counts from
        // creation, so from the successor's it would end later (a cap set
        // or lowered since the old key was issued).
        if successor.expiry().is_some() {
            successor.set_expires_at(deadline);
        }
        successor.set_grace_until(NEVER);
        // A disabled key's successor is disabled too (revoked keys are not
        // rotated at all).
        successor.status = old_key.status;
        successor.last_used_at = Stamp::new(NOT_YET);
        successor.uses = Counter::new(0);
        successor.set_use_limit(
            old_key
                .limit()
                .and_then(|limit| NonZeroU64::new(limit.get().saturating_sub(old_key.uses()))),
        );
        let extra = successor.extra_mut();
        extra.rotated_from = Some(id);
        extra.rotated_to = None;
        extra.revoked = None;
        // A new id: no token of it was exchanged with an older secret.
        extra.tokens_after = None;
        successor.tidy();
        if old_key.limit().is_some() && successor.limit().is_none() {
            // Every use is spent: there is nothing to hand on.
            return Err(Error::InvalidInput(USES_SPENT));
        }
        // A key with a use limit hands its remaining uses to the successor
        // and stops at once: a grace would let both spend the same uses.
        let grace = if old_key.limit().is_some() {
            Duration::ZERO
        } else {
            grace
        };
        // Capped by the key's deadline, not by its idle end: that moves with
        // each use, and `limits` applies it as it stands (so an idle key in
        // use keeps its whole grace).
        let grace_until = nanos(now.saturating_add(grace)).min(deadline);
        // One batch: a crash leaves the rotation whole or absent.
        let carry = std::cell::Cell::new(None);
        let issued = ring.insert_new(successor, |new_id| {
            let (next, copied) = Carry::revise(&old, |k| {
                k.extra_mut().rotated_to = Some(new_id);
                k.set_grace_until(grace_until);
            });
            let change = copied.replace(next);
            carry.set(Some(copied));
            vec![change]
        })?;
        if let Some(carry) = carry.take() {
            carry.onto(ring.store());
        }
        self.event(EventKind::Rotated { to: issued.key.id }, &old.key, now);
        self.event(EventKind::Issued, &issued.key, now);
        Ok(issued)
    }

    /// See [`KeyRing::regenerate`].
    pub fn regenerate(&self, id: KeyId) -> Result<Issued, Error> {
        let ring = self.ring;
        let _guard = ring.shared.lock();
        let (mut issued, hash, cut) = redo_on_conflict(|| self.regenerate_locked(id))?;
        // An exchange of the old secret that found the record before the
        // write landed dated its token by a reading it took before that
        // check: later than `cut` when the write crossed into a later
        // second (a slow fsync), and the token would pass the strict
        // checks for its whole life. Every such reading precedes the
        // landing, so one taken now covers them: the cut is raised to it,
        // in a second write, before the new secret is handed out (so no
        // token of the new secret can be dated before it).
        let landed = nanos(ring.clock.now());
        let raised = if whole_second(landed) > cut {
            redo_on_conflict(|| ring.raise_cut(id, &hash, landed))
        } else {
            Ok(None)
        };
        // The new secret is in the store whether the raise landed or not:
        // reported either way (a failed raise returns its error, and the
        // caller regenerates again, as after any storage error).
        if let Ok(Some(key)) = &raised {
            issued.key = key.clone();
        }
        self.event(EventKind::Regenerated, &issued.key, ring.clock.now());
        raised?;
        Ok(issued)
    }

    /// One run of [`regenerate`](Self::regenerate)'s write: the issued key,
    /// the hash of its new secret and the cut of the old secrets' tokens.
    fn regenerate_locked(&self, id: KeyId) -> Result<(Issued, KeyHash, Nanos), Error> {
        let ring = self.ring;
        // Another ring may have revoked every key: a new secret for such a
        // key would be handed out for nothing (see `live_entry`).
        ring.shared.refresh()?;
        let old = ring.live_entry(id)?;
        let now = ring.clock.now();
        // A new secret for an ended key would never verify, and would be
        // handed out for nothing: refused as `verify` judges the key (past
        // its cutoff, or a limited key that handed its uses on), whatever
        // its status, as `rotate` refuses it.
        if ring.expired_at(&old, now) {
            return Err(Error::Expired(id));
        }
        if old.key.used_up() {
            return Err(Error::InvalidInput(USES_SPENT));
        }
        let generated = token::generate_with_id(&ring.prefix, id)?;
        let now_nanos = nanos(now);
        // Tokens exchanged with the old secret stop too (strict checks).
        // The cut only moves forward: on a clock that went back since an
        // earlier regeneration, an earlier cut would let the tokens of the
        // secrets before that one through again. For the same reason it
        // reaches the key's last use, which each exchange stamps with its
        // token's second: on a clock that went back since the last
        // exchange, the reading alone would let that token through.
        let cut = old
            .key
            .extra
            .as_ref()
            .and_then(|e| e.tokens_after)
            .map_or(now_nanos, |at| at.max(now_nanos))
            .max(old.key.last_used_at.get());
        let (mut next, carry) = Carry::revise(&old, |k| k.extra_mut().tokens_after = Some(cut));
        next.hash = ring.hasher.hash_new_secret(id, generated.secret_part());
        let (key, hash) = (next.key.clone(), next.hash.clone());
        Carry::write(ring.store(), vec![carry.replace(next)], vec![carry])?;
        let issued = Issued {
            key,
            secret: generated.secret,
        };
        Ok((issued, hash, cut))
    }

    /// See [`KeyRing::disable`].
    pub fn disable(&self, id: KeyId) -> Result<(), Error> {
        self.set_status(id, Status::Active, Status::Disabled, EventKind::Disabled)
    }

    /// See [`KeyRing::enable`].
    pub fn enable(&self, id: KeyId) -> Result<(), Error> {
        self.set_status(id, Status::Disabled, Status::Active, EventKind::Enabled)
    }

    fn set_status(
        &self,
        id: KeyId,
        from: Status,
        to: Status,
        kind: EventKind,
    ) -> Result<(), Error> {
        let ring = self.ring;
        let _guard = ring.shared.lock();
        redo_on_conflict(|| {
            ring.shared.refresh()?;
            let entry = ring.live_entry(id)?;
            if entry.key.status() != from {
                return Ok(());
            }
            let (next, carry) = Carry::revise(&entry, |k| k.set_status(to.clone()));
            Carry::write(ring.store(), vec![carry.replace(next)], vec![carry])?;
            self.event(kind.clone(), &entry.key, ring.clock.now());
            Ok(())
        })
    }

    /// See [`KeyRing::revoke`].
    pub fn revoke(&self, id: KeyId, reason: &str) -> Result<(), Error> {
        check_reason(reason)?;
        let _guard = self.ring.shared.lock();
        redo_on_conflict(|| {
            let entry = self.ring.store().lookup(id).ok_or(Error::NotFound(id))?;
            self.revoke_locked(&[entry], reason, false).map(|_| ())
        })
    }

    /// Revokes `entries` that are not revoked yet, in one batch; returns
    /// their ids, sorted. Once the batch is written, sends for each key an
    /// `Exposed` event when `exposed`, then its `Revoked` event. The caller
    /// has checked the reason (`check_reason`).
    fn revoke_locked(
        &self,
        entries: &[Arc<StoredKey>],
        reason: &str,
        exposed: bool,
    ) -> Result<Vec<KeyId>, Error> {
        let ring = self.ring;
        let now = ring.clock.now();
        // Revoked one by one, or by a revoke-all (the epoch only moves
        // forward, so such a key stays revoked without a write). Another
        // ring's revoke-all counts too: reload the settings first. Best
        // effort: a failed read must not stop a revocation, and the epoch
        // held only makes it revoke such a key again (fail closed).
        let _ = ring.shared.refresh();
        let epoch = ring.shared.epoch.load(Ordering::Acquire);
        let fresh: Vec<&Arc<StoredKey>> = entries
            .iter()
            .filter(|e| e.key.status != StatusCode::Revoked && e.key.epoch >= epoch)
            .collect();
        let (batch, carries): (Vec<Change>, Vec<Carry>) = fresh
            .iter()
            .map(|e| {
                let (next, carry) = Carry::revise(e, |k| {
                    k.set_status(Status::Revoked {
                        at: now,
                        reason: reason.to_owned(),
                    })
                });
                (carry.replace(next), carry)
            })
            .unzip();
        Carry::write(ring.store(), batch, carries)?;
        for entry in &fresh {
            if exposed {
                self.event(EventKind::Exposed, &entry.key, now);
            }
            let kind = EventKind::Revoked {
                reason: reason.to_owned(),
            };
            self.event(kind, &entry.key, now);
        }
        let mut ids: Vec<KeyId> = fresh.iter().map(|e| e.id()).collect();
        ids.sort();
        Ok(ids)
    }

    /// See [`KeyRing::delete`].
    pub fn delete(&self, id: KeyId) -> Result<(), Error> {
        let ring = self.ring;
        let _guard = ring.shared.lock();
        // Another ring may delete the key between the read and the write:
        // read again, and it is not found.
        redo_on_conflict(|| {
            let entry = ring.store().lookup(id).ok_or(Error::NotFound(id))?;
            ring.store().remove(id)?;
            self.event(EventKind::Deleted, &entry.key, ring.clock.now());
            Ok(())
        })
    }

    /// See [`KeyRing::update`].
    pub fn update(&self, id: KeyId, change: KeyUpdate) -> Result<Key, Error> {
        let _guard = self.ring.shared.lock();
        redo_on_conflict(|| self.update_locked(id, change.clone()))
    }

    fn update_locked(&self, id: KeyId, change: KeyUpdate) -> Result<Key, Error> {
        let ring = self.ring;
        ring.shared.refresh()?;
        let entry = ring.live_entry(id)?;
        if let Some(scopes) = &change.scopes
            && !scopes.is_within(&entry.key.scopes, &ring.sensitive)
        {
            let wider = match scopes
                .iter()
                .find(|s| !entry.key.scopes.permits_text(s, &ring.sensitive))
            {
                Some(s) => s.to_string(),
                None => "unrestricted".to_owned(),
            };
            return Err(Error::ScopeWidening(wider));
        }
        Fields {
            name: change.name.as_deref(),
            description: change.description.as_ref().and_then(Option::as_deref),
            contact: change.contact.as_ref().and_then(Option::as_ref),
            metadata: change.metadata.as_ref(),
            scopes: change.scopes.as_ref(),
            bindings: change.bindings.as_ref(),
            ..Fields::default()
        }
        .check()
        .map_err(Error::InvalidInput)?;
        let (next, carry) = Carry::revise(&entry, |k| {
            if let Some(name) = change.name {
                k.set_name(&name);
            }
            if let Some(description) = change.description {
                k.extra_mut().description = description.map(Into::into);
            }
            if let Some(contact) = change.contact {
                k.extra_mut().contact = contact;
            }
            if let Some(metadata) = change.metadata {
                k.extra_mut().metadata = metadata;
            }
            if let Some(scopes) = change.scopes {
                k.scopes = scopes;
            }
            if let Some(bindings) = change.bindings {
                k.extra_mut().bindings = bindings;
            }
        });
        // Every field given already has its value: nothing to write, and
        // no `Updated` event, which says that a field changed. The usage is
        // left out: `verify` may count a use in the record after it was
        // copied, which is no change of a field (and stays in the record,
        // for the flush to write).
        if next.key.eq_but_usage(&entry.key) {
            return Ok(entry.current_key());
        }
        let key = next.key.clone();
        Carry::write(ring.store(), vec![carry.replace(next)], vec![carry])?;
        self.event(EventKind::Updated, &key, ring.clock.now());
        Ok(key)
    }

    /// See [`KeyRing::revoke_owner`].
    pub fn revoke_owner(&self, owner: &str, reason: &str) -> Result<Vec<KeyId>, Error> {
        check_reason(reason)?;
        // The owner goes into the `OwnerRevoked` event, even when no key
        // matches; no owner can hold a key (`issue` refuses one).
        Fields {
            owner: Some(owner),
            ..Fields::default()
        }
        .check()
        .map_err(Error::InvalidInput)?;
        let ring = self.ring;
        let _guard = ring.shared.lock();
        // The store is scanned for the owner's keys on the first run only:
        // a run redone after a conflict (another ring wrote one of them
        // meanwhile, a use of a limited key, say) reads the keys it found
        // again by id, as `revoke` does. A scan takes time in proportion
        // to the whole store, and a key its holder keeps using on another
        // ring is written again within each scan of a large one: redone
        // by scans, no run would land, and the holder would hold off the
        // revocation. A key issued to the owner after the scan was issued
        // during the call.
        let mut scanned: Option<Vec<KeyId>> = None;
        let revoked = redo_on_conflict(|| {
            let mut entries = match &scanned {
                None => ring.store().list(Some(owner))?,
                Some(ids) => ids
                    .iter()
                    .filter_map(|&id| ring.store().lookup(id))
                    .collect(),
            };
            entries.retain(|e| e.key.owner() == owner);
            // A list need not be a snapshot (a `MemoryStore` scans shard by
            // shard): it can hold a key another ring rotated while it ran
            // and miss the successor that rotation inserted in the same
            // batch, before it. The successor inherits the owner, so
            // follow the rotation links to it (and to its own, if rotated
            // again).
            let mut listed: std::collections::HashSet<KeyId> =
                entries.iter().map(|e| e.id()).collect();
            let mut next = 0;
            while let Some(entry) = entries.get(next) {
                next += 1;
                let successor = entry.key.extra.as_ref().and_then(|e| e.rotated_to);
                if let Some(found) = successor
                    .filter(|s| !listed.contains(s))
                    .and_then(|s| ring.store().lookup(s))
                    .filter(|e| e.key.owner() == owner)
                {
                    listed.insert(found.id());
                    entries.push(found);
                }
            }
            scanned = Some(entries.iter().map(|e| e.id()).collect());
            // One batch: an owner's keys are revoked together or not at all.
            self.revoke_locked(&entries, reason, false)
        })?;
        let now = ring.clock.now();
        ring.emit(|| {
            Event::new(
                EventKind::OwnerRevoked {
                    count: revoked.len(),
                },
                now,
            )
            .owner(owner)
            .actor(self.actor)
        });
        Ok(revoked)
    }

    /// See [`KeyRing::revoke_all`].
    pub fn revoke_all(&self) -> Result<(), Error> {
        let ring = self.ring;
        let _guard = ring.shared.lock();
        let (mut now, mut epoch, mut marked) = (ring.stamp(), 0, NOT_YET);
        // Durable first: a failed write leaves every key as it was.
        ring.shared.change_settings(|next| {
            now = ring.stamp();
            // Only a store whose settings were edited gets here; a wrapped
            // epoch would revoke nothing (the store keeps the higher one).
            next.epoch = next.epoch.checked_add(1).ok_or(Error::InvalidInput(
                "the revoke-all epoch is at its maximum; revoke keys one by one",
            ))?;
            // The instant only moves forward, as the epoch does: on a clock
            // that went back since an earlier revoke-all, an earlier instant
            // would let the tokens that one refused through again.
            let held = ring.shared.revoked_all_at.load(Ordering::Acquire);
            let mut at = next.revoked_all_at.map_or(now, |at| at.max(now));
            if held != NOT_YET {
                at = at.max(instant(held));
            }
            next.revoked_all_at = Some(at);
            (epoch, marked) = (next.epoch, nanos(at));
            Ok(true)
        })?;
        // An exchange on any ring that found the old epoch (in its ring, or
        // in the store, read before the write landed) dated its token by a
        // reading it took before: later than the instant written when the
        // write crossed into a later second (a slow fsync), and the plain
        // check would take the token for its whole life. Every such reading
        // precedes the landing, so one taken now covers them: the instant
        // is raised to it, in a second write (the epoch stays).
        let landed = ring.stamp();
        let raised = if whole_second(nanos(landed)) > marked {
            ring.shared.change_settings(|next| {
                if next.revoked_all_at.is_some_and(|at| at >= landed) {
                    return Ok(false);
                }
                next.revoked_all_at = Some(landed);
                Ok(true)
            })
        } else {
            Ok(())
        };
        // Another ring may have written newer settings meanwhile. Only a
        // look: the revoke-all has landed, so a failed read must not report
        // it as failed (the background reload retries).
        let _ = ring.shared.refresh();
        // The new epoch is in the store whether the raise landed or not:
        // reported either way, and a failed raise returns its error.
        ring.emit(|| Event::new(EventKind::AllRevoked { epoch }, now).actor(self.actor));
        raised
    }

    /// See [`KeyRing::revoke_leaked`].
    pub fn revoke_leaked(&self, text: &str, reason: &str) -> Result<Vec<KeyId>, Error> {
        check_reason(reason)?;
        let ring = self.ring;
        // Only what proves itself: a key whose secret matches, a token whose
        // MAC does. Ids are public, so a string that merely names a key (with
        // a valid checksum) must not be able to revoke it. Hashes and MACs
        // are computed first; the proofs are judged against the records the
        // revocation replaces, under the lock and again on each run: a
        // regeneration landing meanwhile (on this ring, or another) makes
        // the leaked secret an old one, passed over.
        enum Proof {
            Secret(KeyHash),
            Token(AccessClaims),
        }
        let found: Vec<(KeyId, Proof)> = crate::scan::scan(text)
            .into_iter()
            .filter(|found| found.prefix == ring.prefix.as_str())
            .filter_map(|found| {
                let leaked = &text[found.range.clone()];
                match found.kind {
                    FoundKind::ApiKey => {
                        let parsed = token::parse(leaked, &ring.prefix).ok()?;
                        let digest = ring.hasher.hash(parsed.id, parsed.secret);
                        Some((parsed.id, Proof::Secret(digest)))
                    }
                    _ => {
                        let claims = ring.signer.open(&ring.prefix, leaked).ok()?;
                        Some((claims.key_id, Proof::Token(claims)))
                    }
                }
            })
            .collect();
        let _guard = ring.shared.lock();
        redo_on_conflict(|| {
            let mut entries: Vec<Arc<StoredKey>> = Vec::new();
            for (id, proof) in &found {
                if entries.iter().any(|e| e.id() == *id) {
                    continue;
                }
                let Some(entry) = ring.store().lookup(*id) else {
                    continue;
                };
                let genuine = match proof {
                    Proof::Secret(digest) => *digest == entry.hash,
                    // A token exchanged with a secret a regeneration
                    // ended is refused by the strict checks (the plain
                    // check takes it until it expires, as it would after
                    // a revocation): passed over, as that secret is.
                    Proof::Token(claims) => !predates_regeneration(&entry, claims),
                };
                if genuine {
                    entries.push(entry);
                }
            }
            self.revoke_locked(&entries, reason, true)
        })
    }

    /// See [`KeyRing::owner_password_expired`].
    pub fn owner_password_expired(&self, owner: &str) -> Result<Vec<KeyId>, Error> {
        if self.ring.revoke_on_password_expiry {
            self.revoke_owner(owner, PASSWORD_EXPIRED)
        } else {
            Ok(Vec::new())
        }
    }

    /// See [`KeyRing::set_default_expiry`].
    pub fn set_default_expiry(&self, policy: ExpiryPolicy) -> Result<(), Error> {
        let ring = self.ring;
        let _guard = ring.shared.lock();
        // In UTC, as the store keeps it (see `ExpiryPolicy::normalized`).
        let policy = policy.normalized()?;
        let (mut now, mut changed) = (ring.stamp(), false);
        check_default(policy, ring.max_lifetime, now)?;
        ring.shared.change_settings(|next| {
            now = ring.stamp();
            // No change: moving `default_since` would give every key the
            // default governs a fresh period, and a host that applies its
            // configured default at each start would renew them for ever.
            changed = next.default_expiry != policy;
            if changed {
                check_default(policy, ring.max_lifetime, now)?;
                // Keys already expired under the old default stay expired.
                next.replace_default(policy, now);
            }
            Ok(changed)
        })?;
        if changed {
            // As in `revoke_all`: the change has landed.
            let _ = ring.shared.refresh();
            ring.emit(|| Event::new(EventKind::PolicyChanged { policy }, now).actor(self.actor));
        }
        Ok(())
    }
}

/// A revocation's reason, checked before anything else: kept in the record
/// and the events for good, so it must say something, within the limit of
/// the record's other free text.
fn check_reason(reason: &str) -> Result<(), Error> {
    if reason.trim().is_empty() {
        return Err(Error::InvalidInput("a revocation needs a reason"));
    }
    if reason.len() > MAX_FIELD_LEN {
        return Err(Error::InvalidInput("a reason is limited to 256 bytes"));
    }
    // Stored in the clear and sent with the `Revoked` event: a key pasted
    // in ("leaked, was acme_live_...") would reach every log of them.
    if !crate::scan::scan(reason).is_empty() {
        return Err(Error::InvalidInput(
            "the reason holds an API key or access token; never paste one into a key's fields",
        ));
    }
    Ok(())
}

fn check_request(request: &NewKey) -> Result<(), Error> {
    let fields = Fields {
        owner: Some(&request.owner),
        name: Some(&request.name),
        description: request.description.as_deref(),
        contact: request.contact.as_ref(),
        metadata: Some(&request.metadata),
        scopes: Some(&request.scopes),
        bindings: Some(&request.bindings),
    };
    fields.check().map_err(Error::InvalidInput)?;
    // The owner's set is capped against pair by pair: hold it to the same
    // count.
    Fields {
        scopes: request.owner_scopes.as_ref(),
        ..Fields::default()
    }
    .check()
    .map_err(Error::InvalidInput)?;
    if request.use_limit == Some(0) {
        return Err(Error::InvalidInput("a use limit must be at least 1"));
    }
    Ok(())
}

impl<S: KeyStore> Drop for KeyRing<S> {
    /// Stops the background threads, waiting for a flush under way, then
    /// writes outstanding usage back and flushes the store, best effort.
    fn drop(&mut self) {
        drop(self.background.take());
        // Neither a store nor a sink that panics may make the drop panic:
        // that aborts the process if the ring is dropped while unwinding.
        // A store's panic is reported as the background threads report it.
        let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.shared.flush_usage().map_err(|e| event::describe(&e))
        }))
        .unwrap_or_else(|_| Err(PANICKED.to_owned()));
        if let Err(error) = flushed {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.store_failed(StoreTask::UsageFlush, None, || error);
            }));
        }
    }
}

impl<S: KeyStore> fmt::Debug for KeyRing<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("prefix", &self.prefix)
            .field("store", self.store())
            .field("clock", &self.clock)
            .field("events", &self.events.is_some())
            .field("sensitive", &self.sensitive)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for KeyRingBuilder {
    /// Shows the prefix as [`Error::InvalidPrefix`] does: not yet checked,
    /// it may be a key pasted into the wrong field. Never the pepper or a
    /// signing key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRingBuilder")
            .field("prefix", &token::shown_prefix(&self.prefix))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Run by `rotate` on this thread between its expiry check and
        /// its read of the key's deadline, then the ring reloads its
        /// settings: the background reload, landing in that window.
        static BETWEEN_ROTATE_READS: std::cell::RefCell<Option<Box<dyn FnOnce()>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// Runs the hook set for this thread, if any; whether one ran.
    pub(super) fn run_between_rotate_reads() -> bool {
        let hook = BETWEEN_ROTATE_READS.with(|h| h.borrow_mut().take());
        hook.map(|run| run()).is_some()
    }

    /// A default changed by another ring (its clock 2 s ahead), reloaded
    /// while `rotate` judges a key that this change finds expired under
    /// the default it replaced: the rotation is refused as expired, and
    /// the store holds nothing unreadable. It wrote the key's grace as
    /// none at all, which reading refuses on a rotated key.
    #[test]
    fn a_reload_during_rotate_that_ends_the_key_refuses_the_rotation() {
        use crate::{ManualClock, MemoryStore, NewKey};
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let store = Arc::new(MemoryStore::new());
        let (here, there) = (ManualClock::new(t0), ManualClock::new(t0));
        let ring = |clock: &ManualClock| {
            KeyRing::builder("acme")
                .clock(clock.clone())
                .default_expiry(ExpiryPolicy::days(10))
                .flush_interval(None)
                .build(Arc::clone(&store))
                .unwrap()
        };
        let (a, b) = (ring(&here), ring(&there));
        let id = a.issue(NewKey::new("acct_42")).unwrap().key.id;
        here.set(t0 + Duration::days(10) - Duration::seconds(1));
        there.set(t0 + Duration::days(10) + Duration::seconds(1));
        BETWEEN_ROTATE_READS.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                b.set_default_expiry(ExpiryPolicy::days(20)).unwrap();
            }));
        });
        let rotated = a.rotate(id, Duration::hours(1));
        assert!(
            matches!(rotated, Err(Error::Expired(e)) if e == id),
            "{rotated:?}"
        );
        let keys = store.list(None).unwrap();
        assert_eq!(keys.len(), 1, "no successor was written");
        let text = serde_json::to_string(&keys[0].current_key()).unwrap();
        serde_json::from_str::<Key>(&text).expect("the record reads back");
        assert_eq!(a.state(id), Some(KeyState::Expired));
    }

    /// Another ring's revoke-all, reloaded while `rotate` works on a key it
    /// found live: the key is revoked now, and its successor must not be
    /// stamped with the new epoch (it would verify: a revoked key living on
    /// through its successor). The rotation is refused as revoked, and
    /// nothing is written.
    #[test]
    fn a_revoke_all_reloaded_during_rotate_refuses_the_rotation() {
        use crate::{ManualClock, MemoryStore, NewKey};
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let store = Arc::new(MemoryStore::new());
        let clock = ManualClock::new(t0);
        let ring = || {
            KeyRing::builder("acme")
                .clock(clock.clone())
                .flush_interval(None)
                .build(Arc::clone(&store))
                .unwrap()
        };
        let (a, b) = (ring(), ring());
        let id = a.issue(NewKey::new("acct_42")).unwrap().key.id;
        clock.advance(Duration::seconds(2));
        BETWEEN_ROTATE_READS.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || b.revoke_all().unwrap()));
        });
        let rotated = a.rotate(id, Duration::hours(1));
        if let Ok(issued) = &rotated {
            assert_eq!(
                a.verify(issued.secret.expose()).map(|v| v.id()),
                Err(VerifyError::Revoked),
                "the successor of a key a revoke-all revoked verifies"
            );
        }
        assert!(
            matches!(rotated, Err(Error::Revoked(e)) if e == id),
            "{:?}",
            rotated.map(|i| i.key.id)
        );
        assert_eq!(
            store.list(None).unwrap().len(),
            1,
            "no successor was written"
        );
    }

    /// A ring on a fresh `MemoryStore` read by `clock`, with a default
    /// lifetime of 10 days and no background flusher.
    fn ten_day_default_ring(clock: &crate::ManualClock) -> KeyRing<crate::MemoryStore> {
        KeyRing::builder("acme")
            .clock(clock.clone())
            .default_expiry(ExpiryPolicy::days(10))
            .flush_interval(None)
            .build(crate::MemoryStore::new())
            .unwrap()
    }

    /// A reload that lands between `limits` (which read the hot default,
    /// with the bar of a default since replaced) and `cutoff`'s read of the
    /// settings (which then have no superseded default covering the key):
    /// the key is refused by `verify`, so `expires_at` must give an end (its
    /// creation, at the latest), never "no end at all".
    #[test]
    fn a_key_past_a_bar_the_settings_no_longer_hold_ends_by_its_creation() {
        use crate::{ManualClock, NewKey};
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let clock = ManualClock::new(t0);
        let ring = ten_day_default_ring(&clock);
        let issued = ring.issue(NewKey::new("acct_42")).unwrap();
        clock.set(t0 + Duration::days(11));
        // The hot default as a reload in flight has installed it; the
        // settings behind the lock are still the ones before it.
        let mut reloaded = ring.settings();
        reloaded.replace_default(ExpiryPolicy::Never, clock.now());
        assert!(reloaded.expired_bars().0.is_some(), "the change left a bar");
        ring.shared.default.store(&reloaded);
        assert_eq!(
            ring.verify(issued.secret.expose()).map(|v| v.id()),
            Err(VerifyError::Expired)
        );
        assert_eq!(ring.expires_at(issued.key.id), Some(t0));
    }

    /// A negative period read from a store (no call can set one) must not
    /// turn into "forever": that would fail open.
    #[test]
    fn a_period_too_long_for_nanoseconds_saturates_by_its_sign() {
        assert_eq!(span(Duration::days(365 * 300)), i64::MAX);
        assert_eq!(span(-Duration::days(365 * 300)), i64::MIN);
        assert_eq!(span(-Duration::days(1)), -86_400_000_000_000);
    }

    /// `RingSettings::default_end` (what a merge import judges keys by)
    /// gives the instant the ring gives, for keys under each kind of
    /// default and under defaults since replaced, used or not.
    #[test]
    fn settings_give_the_default_end_the_ring_gives() {
        use crate::{ManualClock, NewKey};
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let clock = ManualClock::new(t0);
        let ring = ten_day_default_ring(&clock);
        let mut keys = Vec::new();
        let defaults = [
            ExpiryPolicy::Idle(Duration::days(3)),
            ExpiryPolicy::At(t0 + Duration::days(40)),
            ExpiryPolicy::days(2),
            ExpiryPolicy::Never,
            ExpiryPolicy::Idle(Duration::days(1)),
            ExpiryPolicy::days(30),
        ];
        let mut checked = (0, 0);
        for (round, next) in defaults.into_iter().enumerate() {
            for _ in 0..3 {
                keys.push(ring.issue(NewKey::new("o")).unwrap());
                clock.advance(Duration::days(1) + Duration::hours(round as i64));
                // Every other key is used now and then.
                for issued in keys.iter().step_by(2) {
                    let _ = ring.verify(issued.secret.expose());
                }
            }
            ring.flush().unwrap();
            for issued in &keys {
                let key = ring.get(issued.key.id()).unwrap();
                let last_active = key
                    .last_used_at()
                    .unwrap_or(key.created_at())
                    .max(key.created_at());
                let end = ring.settings().default_end(key.created_at(), last_active);
                assert_eq!(
                    ring.expires_at(key.id()),
                    end,
                    "round {round}, key {}",
                    key.id()
                );
                checked.0 += 1;
                checked.1 += usize::from(end.is_some_and(|e| e <= clock.now()));
            }
            clock.advance(Duration::days(2));
            ring.set_default_expiry(next).unwrap();
        }
        // Both live and expired keys were compared.
        assert!(checked.1 > 0 && checked.1 < checked.0, "{checked:?}");
    }
}
