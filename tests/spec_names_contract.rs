//! SPEC, "Names (the public contract)": downstream code written from the
//! SPEC alone compiles and runs. Every name it lists is used here with the
//! kind the SPEC gives it (the manager built by
//! `KeyRing::builder(prefix)...build(store)`, traits a host implements,
//! types it holds), and every operation it lists on `KeyRing` is called,
//! generically over the store, as a host's admin code would. A renamed,
//! removed or reshaped name fails this target to build.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use keyward::time::macros::datetime;
use keyward::time::{Duration, OffsetDateTime};
use keyward::{
    Clock, Error, Event, EventSink, ExpiryPolicy, FileStore, Issued, Key, KeyId, KeyRing, KeyStore,
    ManualClock, MemoryStore, NewKey, Requirement, Scope, ScopeSet, Secret, SystemClock, Verified,
    VerifyError,
};

/// A host's clock: `Clock` is a trait a host implements.
#[derive(Debug)]
struct HostClock(ManualClock);

impl Clock for HostClock {
    fn now(&self) -> OffsetDateTime {
        self.0.now()
    }
}

/// A host's audit sink: `EventSink` is a trait a host implements, and an
/// `Event` is a value it reads.
#[derive(Default)]
struct Audit(Mutex<Vec<Event>>);

impl EventSink for Audit {
    fn record(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

/// A host's own backend: `KeyStore` is a trait a host implements (here on
/// top of a `MemoryStore`, forwarding what the ring needs).
#[derive(Debug, Default)]
struct HostStore(MemoryStore);

impl KeyStore for HostStore {
    fn lookup(&self, id: KeyId) -> Option<Arc<keyward::StoredKey>> {
        self.0.lookup(id)
    }
    fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<keyward::Lent<'_>>)) {
        self.0.inspect(id, f)
    }
    fn list(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<Arc<keyward::StoredKey>>, keyward::StoreError> {
        self.0.list(owner)
    }
    fn snapshot(&self) -> Result<Vec<Arc<keyward::StoredKey>>, keyward::StoreError> {
        self.0.snapshot()
    }
    fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
        self.0.load_settings()
    }
    fn apply(&self, changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
        self.0.apply(changes)
    }
    fn flush(&self) -> Result<(), keyward::StoreError> {
        self.0.flush()
    }
}

/// SPEC 8: the trait is "object safe, `Debug + Send + Sync`".
fn debug_send_sync<T: ?Sized + Debug + Send + Sync>() {}

/// What the SPEC's error names are: errors a host can box and report.
fn an_error<E: std::error::Error + Send + Sync + 'static>() {}

/// Every operation the SPEC lists on `KeyRing`, called as a host's admin
/// code would, over any store.
fn every_operation<S: KeyStore>(ring: &KeyRing<S>, clock: &ManualClock) -> Result<(), Error> {
    // issue: a `NewKey` in, an `Issued` (record + plaintext) out.
    let scopes: ScopeSet = ScopeSet::parse(["invoices:read", "invoices:write"])?;
    let issued: Issued = ring.issue(
        NewKey::new("acct_42")
            .name("export")
            .scopes(scopes)
            .expiry(ExpiryPolicy::days(30)),
    )?;
    let key: &Key = &issued.key;
    let id: KeyId = key.id();
    let secret: &Secret = &issued.secret;
    let presented: &str = secret.expose();

    // verify / verify_with: `Verified` or a `VerifyError`.
    let who: Result<Verified, VerifyError> = ring.verify(presented);
    assert_eq!(who.unwrap().id(), id);
    let read: Requirement = Requirement::scope("invoices:read")?;
    let who = ring.verify_with(presented, &read).unwrap();
    assert_eq!(who.owner(), "acct_42");
    let scope: Scope = Scope::new("billing:read")?;
    let missing = Requirement::scope(scope.as_str())?;
    let refused: VerifyError = ring.verify_with(presented, &missing).unwrap_err();
    assert!(matches!(refused, VerifyError::InsufficientScope(s) if s == scope));
    let both = Requirement::all_of(["invoices:read", "invoices:write"])?;
    let either = Requirement::any_of(["billing:read", "invoices:read"])?;
    assert!(ring.verify_with(presented, &both).is_ok());
    assert!(ring.verify_with(presented, &either).is_ok());

    // get / list
    let got: Option<Key> = ring.get(id);
    assert_eq!(got.unwrap().owner(), "acct_42");
    let listed: Vec<Key> = ring.list(&keyward::ListFilter::new().owner("acct_42"))?;
    assert_eq!(listed.len(), 1);

    // update: narrow only.
    let narrowed: Key = ring.update(
        id,
        keyward::KeyUpdate::new()
            .name("nightly export")
            .metadata(BTreeMap::from([("team".to_owned(), "billing".to_owned())]))
            .scopes(ScopeSet::parse(["invoices:read"])?),
    )?;
    assert_eq!(narrowed.name(), "nightly export");

    // rotate (with a grace), regenerate: each a new plaintext.
    let rotated: Issued = ring.rotate(id, Duration::minutes(5))?;
    assert!(ring.verify(presented).is_ok(), "old key in its grace");
    let regenerated: Issued = ring.regenerate(rotated.key.id())?;
    assert!(ring.verify(rotated.secret.expose()).is_err());
    let current = regenerated.key.id();
    assert!(ring.verify(regenerated.secret.expose()).is_ok());

    // disable / enable / revoke / delete
    ring.disable(current)?;
    assert_eq!(
        ring.verify(regenerated.secret.expose()).unwrap_err(),
        VerifyError::Disabled
    );
    ring.enable(current)?;
    assert!(ring.verify(regenerated.secret.expose()).is_ok());
    ring.revoke(current, "rotated out")?;
    assert_eq!(
        ring.verify(regenerated.secret.expose()).unwrap_err(),
        VerifyError::Revoked
    );
    ring.delete(current)?;
    assert!(ring.get(current).is_none());

    // expiring_within: reminders carry the record (and its contact).
    let soon =
        ring.issue(NewKey::new("acct_7").expiry(ExpiryPolicy::Lifetime(Duration::days(2))))?;
    let due = ring.expiring_within(Duration::days(3))?;
    assert!(due.iter().any(|r| r.key.id() == soon.key.id()));

    // set_default_expiry, then revoke_owner, owner_password_expired,
    // revoke_all.
    ring.set_default_expiry(ExpiryPolicy::days(90))?;
    let by_owner: Vec<KeyId> = ring.revoke_owner("acct_7", "offboarded")?;
    assert_eq!(by_owner, vec![soon.key.id()]);
    let pw = ring.issue(NewKey::new("acct_9"))?;
    let by_password: Vec<KeyId> = ring.owner_password_expired("acct_9")?;
    assert_eq!(by_password, vec![pw.key.id()]);
    let last = ring.issue(NewKey::new("acct_1"))?;
    clock.advance(Duration::seconds(1));
    ring.revoke_all()?;
    assert_eq!(
        ring.verify(last.secret.expose()).unwrap_err(),
        VerifyError::Revoked
    );
    Ok(())
}

#[test]
fn every_name_of_the_spec_exists_with_its_kind() {
    debug_send_sync::<dyn KeyStore>();
    debug_send_sync::<dyn Clock>();
    debug_send_sync::<MemoryStore>();
    debug_send_sync::<FileStore>();
    debug_send_sync::<SystemClock>();
    debug_send_sync::<KeyRing<MemoryStore>>();
    an_error::<Error>();
    an_error::<VerifyError>();
    // Object safety, as a host stores them.
    let _: Option<Box<dyn KeyStore>> = None;
    let _: Option<Arc<dyn Clock>> = None;
    let _: Option<Arc<dyn EventSink>> = None;
    let _system: &dyn Clock = &SystemClock;
}

#[test]
fn every_operation_of_the_spec_runs_on_each_shipped_store_and_a_host_store() {
    let start = datetime!(2026-01-01 00:00 UTC);

    let clock = ManualClock::new(start);
    let audit = Arc::new(Audit::default());
    let ring: KeyRing<MemoryStore> = KeyRing::builder("acme_live")
        .pepper([7u8; 32])
        .clock(clock.clone())
        .events(Arc::clone(&audit))
        .revoke_on_password_expiry(true)
        .build(MemoryStore::new())
        .unwrap();
    every_operation(&ring, &clock).unwrap();
    assert!(!audit.0.lock().unwrap().is_empty());

    let clock = ManualClock::new(start);
    let ring = KeyRing::builder("acme_live")
        .clock(HostClock(clock.clone()))
        .revoke_on_password_expiry(true)
        .build(HostStore::default())
        .unwrap();
    every_operation(&ring, &clock).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start);
    let store: FileStore = FileStore::open(dir.path().join("keys.kw")).unwrap();
    let ring = KeyRing::builder("acme_live")
        .clock(clock.clone())
        .revoke_on_password_expiry(true)
        .build(store)
        .unwrap();
    every_operation(&ring, &clock).unwrap();

    // And on a store behind a trait object, as a host that picks its
    // backend at start-up holds it.
    let clock = ManualClock::new(start);
    let boxed: Box<dyn KeyStore> = Box::new(MemoryStore::new());
    let ring = KeyRing::builder("acme_live")
        .clock(clock.clone())
        .revoke_on_password_expiry(true)
        .build(boxed)
        .unwrap();
    every_operation(&ring, &clock).unwrap();
}
