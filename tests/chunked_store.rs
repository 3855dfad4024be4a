//! `MemoryStore` keeps the fields `verify` reads for a plain key, and every
//! key's usage, in its table's slots (docs/design/chunked-store.md); a
//! `Verified` holds the slot's chunk. These tests pin what callers see of
//! that: a held `Verified` keeps the version it verified, `key()` counts
//! the verify that returned it, a write never lowers usage, and the fast
//! path judges exactly as the record path does.

use std::sync::Arc;

use keyward::time::{Duration, macros::datetime};
use keyward::{
    Change, ExpiryPolicy, KeyId, KeyRing, KeyStore, KeyUpdate, ManualClock, MemoryStore, NewKey,
    Requirement, RingSettings, ScopeSet, StoreError, StoredKey, VerifyError,
};
use proptest::prelude::*;

const PREFIX: &str = "kw";

fn ring_on(store: Arc<MemoryStore>, clock: &ManualClock) -> KeyRing<Arc<MemoryStore>> {
    KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(store)
        .unwrap()
}

fn clock() -> ManualClock {
    ManualClock::new(datetime!(2026-03-01 12:00 UTC))
}

fn scopes(names: &[&str]) -> ScopeSet {
    ScopeSet::parse(names.iter().copied()).unwrap()
}

/// A `Verified` held across an update, a revoke and a delete, and across
/// the growth of the table (which rebuilds every chunk), reads the owner,
/// scopes, metadata and status of the version it verified.
#[test]
fn a_held_verified_keeps_the_version_it_verified() {
    let clock = clock();
    let ring = ring_on(Arc::new(MemoryStore::new()), &clock);
    let issued = ring
        .issue(
            NewKey::new("acct_1")
                .scopes(scopes(&["invoices:read", "invoices:write"]))
                .metadata("team", "billing"),
        )
        .unwrap();
    let id = issued.key.id();
    let held = ring.verify(issued.secret.expose()).unwrap();

    ring.update(
        id,
        KeyUpdate::new()
            .scopes(scopes(&["invoices:read"]))
            .metadata(Default::default()),
    )
    .unwrap();
    ring.revoke(id, "leaked").unwrap();
    // Enough keys to grow the key's shard many times over.
    for i in 0..5_000 {
        ring.issue(NewKey::new(format!("acct_{i}"))).unwrap();
    }
    ring.delete(id).unwrap();

    assert_eq!(held.id(), id);
    assert_eq!(held.owner(), "acct_1");
    assert_eq!(held.scopes(), &scopes(&["invoices:read", "invoices:write"]));
    assert_eq!(
        held.metadata().get("team").map(String::as_str),
        Some("billing")
    );
    assert_eq!(held.key().status(), keyward::Status::Active);
    assert_eq!(
        ring.verify(issued.secret.expose()).unwrap_err(),
        VerifyError::Invalid
    );
}

/// `verified.key().uses()` counts the verify that returned it, whether the
/// chunk it holds is still the table's or was copied away by later writes;
/// the live count (`get`) counts every verify.
#[test]
fn a_verified_key_counts_its_own_verify_on_a_fresh_and_a_stale_chunk() {
    let clock = clock();
    let ring = ring_on(Arc::new(MemoryStore::new()), &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let id = issued.key.id();
    let first = ring.verify(issued.secret.expose()).unwrap();
    assert_eq!(first.key().uses(), 1);
    assert_eq!(
        first.key().last_used_at(),
        Some(datetime!(2026-03-01 12:00 UTC))
    );
    let second = ring.verify(issued.secret.expose()).unwrap();
    assert_eq!(second.key().uses(), 2);

    // Writes to the key's shard copy the chunk `second` holds.
    for i in 0..2_000 {
        ring.issue(NewKey::new(format!("acct_{i}"))).unwrap();
    }
    clock.advance(Duration::seconds(5));
    let third = ring.verify(issued.secret.expose()).unwrap();
    assert_eq!(third.key().uses(), 3);
    assert_eq!(
        third.key().last_used_at(),
        Some(datetime!(2026-03-01 12:00:05 UTC))
    );
    // The stale copy reads what it held when it went stale, never less.
    assert!((2..=3).contains(&second.key().uses()));
    assert_eq!(ring.get(id).unwrap().uses(), 3);
}

/// `Debug` of a `Verified` shows the usage the slot keeps, the verify that
/// returned it counted, as `key()` does: not the record's lagging mirror.
#[test]
fn a_verified_key_debug_shows_live_usage() {
    let clock = clock();
    let ring = ring_on(Arc::new(MemoryStore::new()), &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    drop(ring.verify(issued.secret.expose()).unwrap());
    let second = ring.verify(issued.secret.expose()).unwrap();
    let shown = format!("{second:?}");
    assert!(shown.contains("uses: Counter(2)"), "{shown}");
    assert!(!shown.contains(issued.secret.expose()), "{shown}");
}

/// A write of a record with fewer uses than the store counted (a host's
/// `Replace` of an old copy) keeps the store's count: a write never lowers
/// usage in a `MemoryStore`.
#[test]
fn a_replace_with_a_lower_count_keeps_the_higher() {
    let clock = clock();
    let store = Arc::new(MemoryStore::new());
    let ring = ring_on(Arc::clone(&store), &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let id = issued.key.id();
    let before = StoredKey::clone(&store.lookup(id).unwrap());
    assert_eq!(before.key().uses(), 0);
    for _ in 0..3 {
        ring.verify(issued.secret.expose()).unwrap();
    }
    store.apply(vec![Change::Replace(before)]).unwrap();
    assert_eq!(store.lookup(id).unwrap().key().uses(), 3);
    assert_eq!(ring.get(id).unwrap().uses(), 3);
}

/// A store over a `MemoryStore` that does not forward `inspect`: the
/// trait's default lends `lookup`'s record, so `verify` judges every key
/// on its record (the path keys that are not plain take), never on the
/// slot. Single-threaded, it counts every use too (on the record, whose
/// count the store keeps across its own writes).
#[derive(Debug)]
struct RecordPath(MemoryStore);

impl KeyStore for RecordPath {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.0.lookup(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.0.list(owner)
    }
    fn snapshot(&self) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.0.snapshot()
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        self.0.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.0.apply(changes)
    }
}

/// A key's kind at issue.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Plain,
    Scoped,
    OwnLifetimeHours(i64),
    OwnIdleHours(i64),
    Limited(u64),
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Issue(Kind),
    Verify(usize),
    VerifyScoped(usize),
    VerifyWrong(usize),
    Rotate { key: usize, grace_hours: i64 },
    Disable(usize),
    Enable(usize),
    Revoke(usize),
    RevokeAll,
    Default(Option<(bool, i64)>),
    Advance(i64),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Plain),
        1 => Just(Kind::Scoped),
        1 => (1i64..48).prop_map(Kind::OwnLifetimeHours),
        1 => (1i64..24).prop_map(Kind::OwnIdleHours),
        1 => (1u64..4).prop_map(Kind::Limited),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => kind().prop_map(Step::Issue),
        6 => any::<usize>().prop_map(Step::Verify),
        2 => any::<usize>().prop_map(Step::VerifyScoped),
        1 => any::<usize>().prop_map(Step::VerifyWrong),
        1 => (any::<usize>(), 0i64..6).prop_map(|(key, grace_hours)| Step::Rotate { key, grace_hours }),
        1 => any::<usize>().prop_map(Step::Disable),
        1 => any::<usize>().prop_map(Step::Enable),
        1 => any::<usize>().prop_map(Step::Revoke),
        1 => Just(Step::RevokeAll),
        1 => proptest::option::of((any::<bool>(), 1i64..30)).prop_map(Step::Default),
        3 => (0i64..30).prop_map(Step::Advance),
    ]
}

/// One ring and its keys' secrets, in issue order.
struct Side<S: KeyStore> {
    ring: KeyRing<S>,
    clock: ManualClock,
    keys: Vec<(KeyId, String)>,
}

impl<S: KeyStore + 'static> Side<S> {
    fn new(store: S, max_hours: Option<i64>) -> Side<S> {
        let clock = clock();
        let mut builder = KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None);
        if let Some(hours) = max_hours {
            builder = builder.max_lifetime(Duration::hours(hours));
        }
        Side {
            ring: builder.build(store).unwrap(),
            clock,
            keys: Vec::new(),
        }
    }

    /// What the step did, as text both sides must agree on: the outcome,
    /// and for a verify that passed the uses its `Verified` and `get` read.
    fn run(&mut self, step: Step) -> String {
        let ring = &self.ring;
        let key = |i: usize| self.keys.get(i % self.keys.len().max(1)).cloned();
        match step {
            Step::Issue(kind) => {
                let mut request = NewKey::new("acct_1").scopes(scopes(&["a:read", "b:read"]));
                request = match kind {
                    Kind::Plain | Kind::Scoped => request,
                    Kind::OwnLifetimeHours(h) => {
                        request.expiry(ExpiryPolicy::Lifetime(Duration::hours(h)))
                    }
                    Kind::OwnIdleHours(h) => request.expiry(ExpiryPolicy::Idle(Duration::hours(h))),
                    Kind::Limited(n) => request.use_limit(n),
                };
                match ring.issue(request) {
                    Ok(issued) => {
                        self.keys
                            .push((issued.key.id(), issued.secret.expose().to_owned()));
                        "issued".to_owned()
                    }
                    Err(e) => format!("issue refused: {e:?}").replace(char::is_numeric, "#"),
                }
            }
            Step::Verify(i) | Step::VerifyScoped(i) | Step::VerifyWrong(i) => {
                let Some((id, secret)) = key(i) else {
                    return "no key".to_owned();
                };
                let wrong;
                let presented = if matches!(step, Step::VerifyWrong(_)) {
                    let mut bytes = secret.clone().into_bytes();
                    let last = bytes.len() - 1;
                    bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
                    wrong = String::from_utf8(bytes).unwrap();
                    &wrong
                } else {
                    &secret
                };
                let outcome = if matches!(step, Step::VerifyScoped(_)) {
                    let need =
                        Requirement::scope(if i % 2 == 0 { "a:read" } else { "c:read" }).unwrap();
                    ring.verify_with(presented, &need)
                } else {
                    ring.verify(presented)
                };
                match outcome {
                    Ok(verified) => format!(
                        "ok, uses {} / {}, last use {:?}",
                        verified.key().uses(),
                        ring.get(id).unwrap().uses(),
                        verified.key().last_used_at()
                    ),
                    Err(e) => format!("{e:?}"),
                }
            }
            Step::Rotate {
                key: i,
                grace_hours,
            } => match key(i) {
                Some((id, _)) => match ring.rotate(id, Duration::hours(grace_hours)) {
                    Ok(issued) => {
                        self.keys
                            .push((issued.key.id(), issued.secret.expose().to_owned()));
                        "rotated".to_owned()
                    }
                    Err(e) => format!("rotate refused: {}", e.to_string().len()),
                },
                None => "no key".to_owned(),
            },
            Step::Disable(i) | Step::Enable(i) | Step::Revoke(i) => match key(i) {
                Some((id, _)) => {
                    let done = match step {
                        Step::Disable(_) => ring.disable(id),
                        Step::Enable(_) => ring.enable(id),
                        _ => ring.revoke(id, "test"),
                    };
                    format!("{:?}", done.is_ok())
                }
                None => "no key".to_owned(),
            },
            Step::RevokeAll => format!("{:?}", ring.revoke_all().is_ok()),
            Step::Default(policy) => {
                let policy = match policy {
                    None => ExpiryPolicy::Never,
                    Some((true, h)) => ExpiryPolicy::Idle(Duration::hours(h)),
                    Some((false, h)) => ExpiryPolicy::Lifetime(Duration::hours(h)),
                };
                format!("{:?}", ring.set_default_expiry(policy).is_ok())
            }
            Step::Advance(minutes) => {
                self.clock.advance(Duration::minutes(minutes * 17));
                "advanced".to_owned()
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every step gives the same outcome on a ring whose `verify` takes
    /// the slot's fast path for plain keys (`MemoryStore`) as on one that
    /// judges every key on its record: the same answers, the same uses,
    /// the same last use, under every kind of key, default policy, maximum
    /// lifetime, rotation, disable, revoke and revoke-all.
    #[test]
    fn the_fast_path_judges_as_the_record_path_does(
        steps in proptest::collection::vec(step(), 1..60),
        max_hours in proptest::option::of(24i64..200),
    ) {
        let mut fast = Side::new(MemoryStore::new(), max_hours);
        let mut slow = Side::new(RecordPath(MemoryStore::new()), max_hours);
        for (n, step) in steps.iter().enumerate() {
            let (a, b) = (fast.run(*step), slow.run(*step));
            prop_assert_eq!(a, b, "step {}: {:?}", n, step);
        }
    }
}
