//! A conformance suite that any [`KeyStore`] implementation can run against
//! itself, e.g. a host's store on its own database. The shipped stores run
//! it in their tests.
//!
//! Each check panics with a message saying which rule of the
//! [`KeyStore` contract](super) was broken, so call them from a test:
//!
//! ```
//! use keyward::MemoryStore;
//! use keyward::store::conformance;
//!
//! // In a #[test]:
//! conformance::check_all(MemoryStore::new);
//! ```
//!
//! For a durable store, also run [`check_persistence`] with a function that
//! opens the same storage each time it is called.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use time::macros::datetime;

use super::{Change, KeyStore, RingSettings, StoreError, StoredKey};
use crate::expiry::ExpiryPolicy;
use crate::hash::Hasher;
use crate::key::{Extra, Key};
use crate::scope::ScopeSet;
use crate::token::KeyId;

/// A record for the checks: id `id`, owner `owner`, name `name`. Its
/// secret follows its name (the first bytes of it), so two records of one
/// id with other names have other hashes too: a store that writes a new
/// version without its hash (a hash column its update leaves alone) keeps
/// the old secret working after a `regenerate`.
///
/// # Panics
///
/// If `owner` holds a NUL character, which no key's owner can hold.
pub fn sample_key(id: u64, owner: &str, name: &str) -> StoredKey {
    assert!(
        !owner.contains('\0'),
        "sample_key: an owner cannot hold a NUL character"
    );
    let mut key = Key::blank(KeyId::from_u64(id), owner, datetime!(2026-01-01 0:00 UTC));
    key.set_hint(&format!("conformance_1{id}"));
    key.set_name(name);
    key.scopes = ScopeSet::parse(["invoices:read"]).unwrap_or_else(|_| ScopeSet::empty());
    key.extra = Some(Box::new(Extra {
        description: Some("conformance suite".into()),
        metadata: BTreeMap::from([("suite".to_owned(), "conformance".to_owned())]),
        ..Extra::default()
    }));
    key.set_expiry(
        Some(ExpiryPolicy::days(30)),
        Some(datetime!(2026-01-31 0:00 UTC)),
    );
    let mut secret = [b'c'; crate::token::SECRET_LEN];
    for (byte, from_name) in secret.iter_mut().zip(name.bytes()) {
        *byte ^= from_name;
    }
    StoredKey::new(
        key,
        Hasher::new(None, "conformance").hash(KeyId::from_u64(id), &secret),
    )
}

/// `entry` revoked, as a ring's `revoke` writes it.
fn revoked(entry: StoredKey) -> StoredKey {
    let mut key = entry.key.clone();
    key.set_status(crate::key::Status::Revoked {
        at: datetime!(2026-01-03 0:00 UTC),
        reason: "conformance".to_owned(),
    });
    StoredKey::new(key, entry.hash)
}

fn sample_settings(epoch: u64) -> RingSettings {
    RingSettings {
        default_expiry: ExpiryPolicy::days(7),
        default_since: datetime!(2026-01-01 0:00 UTC),
        epoch,
        revoked_all_at: None,
        superseded: Vec::new(),
        // Kept by every store: a ring refuses a store of another prefix or
        // pepper only if its settings come back with them.
        prefix: Some("conformance".to_owned()),
        check: Some(Hasher::new(None, "conformance").hash(KeyId::from_u64(0), &[b'-'; 24])),
    }
}

/// Settings of `epoch` whose revoke-all happened at `at`, with a default
/// policy of `days`.
fn settings_revoked(epoch: u64, at: time::OffsetDateTime, days: i64) -> RingSettings {
    RingSettings {
        default_expiry: ExpiryPolicy::days(days),
        revoked_all_at: Some(at),
        ..sample_settings(epoch)
    }
}

/// The record by `lookup`, checked against what `inspect` lends (which
/// must be called exactly once, with the same record). `inspect` is asked
/// first: `verify` reaches the record through it alone, often with no
/// `lookup` since the last write (a `revoke` looks the key up before its
/// write, not after), so a store whose `inspect` answers from a copy that
/// only `lookup` brings up to date lets a revoked key verify.
fn get<S: KeyStore>(store: &S, id: u64) -> Option<Arc<StoredKey>> {
    let id = KeyId::from_u64(id);
    let mut calls = 0;
    let mut lent = None;
    store.inspect(id, &mut |entry| {
        calls += 1;
        lent = entry.map(|e| Arc::clone(e.record()));
    });
    let found = store.lookup(id);
    assert_eq!(calls, 1, "inspect must call its function exactly once");
    assert_eq!(
        lent.as_deref(),
        found.as_deref(),
        "inspect lent another record than lookup returned"
    );
    found
}

fn ids(list: Vec<Arc<StoredKey>>) -> Vec<u64> {
    let mut ids: Vec<u64> = list.iter().map(|k| k.id().as_u64()).collect();
    ids.sort_unstable();
    ids
}

/// Runs every check below, each on a fresh, empty store from `fresh`.
pub fn check_all<S: KeyStore>(mut fresh: impl FnMut() -> S) {
    check_empty(&fresh());
    check_insert_and_lookup(&fresh());
    check_duplicate_insert(&fresh());
    check_replace(&fresh());
    check_replace_if(&fresh());
    check_replace_if_is_atomic(&fresh());
    check_remove(&fresh());
    check_batch_is_all_or_nothing(&fresh());
    check_batch_sees_earlier_changes(&fresh());
    check_batch_lands_whole(&fresh());
    check_settings(&fresh());
    check_settings_if(&fresh());
    check_settings_if_is_atomic(&fresh());
    check_list_by_owner(&fresh());
    check_records_are_lent_in_place(&fresh());
    check_snapshot_holds_batches_whole(&fresh());
    check_concurrent_writers(&fresh());
    check_debug_hides_records(&fresh());
}

/// A new store is empty.
pub fn check_empty<S: KeyStore>(store: &S) {
    assert!(get(store, 1).is_none(), "an empty store found a key");
    assert!(
        store.list(None).expect("list").is_empty(),
        "an empty store listed keys"
    );
    assert!(
        store.load_settings().expect("load_settings").is_none(),
        "an empty store has settings"
    );
}

/// An inserted record is found by `lookup`, `inspect` and `list`, unchanged.
pub fn check_insert_and_lookup<S: KeyStore>(store: &S) {
    let key = sample_key(1, "alice", "first");
    store.insert(key.clone()).expect("insert");
    assert_eq!(get(store, 1).as_deref(), Some(&key), "lookup after insert");
    assert_eq!(
        ids(store.list(None).expect("list")),
        [1],
        "list after insert"
    );
}

/// Inserting an existing id fails with `Duplicate` and keeps the original.
pub fn check_duplicate_insert<S: KeyStore>(store: &S) {
    let original = sample_key(1, "alice", "original");
    store.insert(original.clone()).expect("insert");
    match store.insert(sample_key(1, "mallory", "impostor")) {
        Err(StoreError::Duplicate(id)) => assert_eq!(id, KeyId::from_u64(1)),
        other => panic!("insert of an existing id: expected Duplicate, got {other:?}"),
    }
    assert_eq!(
        get(store, 1).as_deref(),
        Some(&original),
        "a refused insert changed the record"
    );
}

/// `replace` needs an existing record and then takes effect at once.
pub fn check_replace<S: KeyStore>(store: &S) {
    assert!(
        matches!(
            store.replace(sample_key(1, "alice", "x")),
            Err(StoreError::NotFound(_))
        ),
        "replace of a missing id must fail with NotFound"
    );
    assert!(
        get(store, 1).is_none(),
        "a refused replace created a record"
    );
    store
        .insert(sample_key(1, "alice", "before"))
        .expect("insert");
    let after = sample_key(1, "alice", "after");
    store.replace(after.clone()).expect("replace");
    assert_eq!(
        get(store, 1).as_deref(),
        Some(&after),
        "lookup right after replace"
    );
}

/// `Change::ReplaceIf` replaces only the very record it was derived from:
/// after another write of the id (even of an equal record) it fails with
/// `Conflict` and its whole batch is refused; for a missing id it fails
/// with `NotFound`; a change to the same id earlier in its batch is a
/// conflict too, and a removal of it earlier in its batch `NotFound`.
pub fn check_replace_if<S: KeyStore>(store: &S) {
    let replace_if = |expected: &Arc<StoredKey>, name: &str| Change::ReplaceIf {
        expected: Arc::clone(expected),
        next: sample_key(1, "alice", name),
    };
    store
        .insert(sample_key(1, "alice", "first"))
        .expect("insert");
    let first = get(store, 1).expect("inserted");
    // A revocation and a new secret: the store writes the whole record.
    let written = revoked(sample_key(1, "alice", "second"));
    store
        .apply(vec![Change::ReplaceIf {
            expected: Arc::clone(&first),
            next: written.clone(),
        }])
        .expect("a replace-if of the record the store holds must apply");
    let second = get(store, 1).expect("replaced");
    assert_eq!(
        *second, written,
        "lookup right after replace-if: the record as written, its status and \
         hash too (a revocation, a new secret: the old key must stop working)"
    );

    // `first` is gone: a change derived from it conflicts, with its batch.
    let result = store.apply(vec![
        Change::Insert(sample_key(2, "alice", "new")),
        replace_if(&first, "stale"),
    ]);
    assert!(
        matches!(result, Err(StoreError::Conflict(id)) if id == KeyId::from_u64(1)),
        "a replace-if of a record written over since must fail with Conflict, got {result:?}"
    );
    assert!(
        get(store, 2).is_none(),
        "part of a batch refused for a conflict was applied"
    );
    assert!(
        Arc::ptr_eq(&get(store, 1).expect("kept"), &second),
        "a conflicting replace-if changed the record"
    );

    // An equal record written over it is another write all the same.
    store
        .replace(StoredKey::clone(&second))
        .expect("replace with an equal record");
    let result = store.apply(vec![replace_if(&second, "stale")]);
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "a replace-if must compare the allocation, not the value: got {result:?}"
    );

    let current = get(store, 1).expect("kept");
    let result = store.apply(vec![
        Change::Replace(sample_key(1, "alice", "earlier in the batch")),
        replace_if(&current, "stale"),
    ]);
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "a replace-if after a change to its id in the same batch must conflict, got {result:?}"
    );
    assert_eq!(get(store, 1).expect("kept").key().name(), "second");

    // A removal earlier in the batch leaves the id gone.
    let result = store.apply(vec![
        Change::Remove(KeyId::from_u64(1)),
        replace_if(&current, "stale"),
    ]);
    assert!(
        matches!(result, Err(StoreError::NotFound(id)) if id == KeyId::from_u64(1)),
        "a replace-if after a removal of its id in the same batch must fail with NotFound, got {result:?}"
    );
    assert!(
        Arc::ptr_eq(&get(store, 1).expect("kept"), &current),
        "part of a batch refused for a missing id was applied"
    );

    store.remove(KeyId::from_u64(1)).expect("remove");
    let result = store.apply(vec![replace_if(&current, "gone")]);
    assert!(
        matches!(result, Err(StoreError::NotFound(_))),
        "a replace-if of a removed id must fail with NotFound, got {result:?}"
    );
    assert!(
        get(store, 1).is_none(),
        "a refused replace-if created a record"
    );
}

/// `remove` deletes, and fails with `NotFound` for a missing id.
pub fn check_remove<S: KeyStore>(store: &S) {
    store.insert(sample_key(1, "alice", "k")).expect("insert");
    store.insert(sample_key(2, "alice", "k")).expect("insert");
    store.remove(KeyId::from_u64(1)).expect("remove");
    assert!(get(store, 1).is_none(), "a removed key is still found");
    assert_eq!(
        ids(store.list(None).expect("list")),
        [2],
        "list after remove"
    );
    assert!(
        matches!(
            store.remove(KeyId::from_u64(1)),
            Err(StoreError::NotFound(_))
        ),
        "remove of a missing id must fail with NotFound"
    );
}

/// A batch with one bad change applies none of its changes.
pub fn check_batch_is_all_or_nothing<S: KeyStore>(store: &S) {
    store
        .insert(sample_key(1, "alice", "existing"))
        .expect("insert");
    let result = store.apply(vec![
        Change::Insert(sample_key(2, "alice", "new")),
        Change::Settings(sample_settings(9)),
        Change::Replace(sample_key(3, "alice", "missing")),
    ]);
    assert!(
        matches!(result, Err(StoreError::NotFound(_))),
        "expected NotFound, got {result:?}"
    );
    assert!(
        get(store, 2).is_none(),
        "part of a refused batch was applied"
    );
    assert!(
        store.load_settings().expect("load_settings").is_none(),
        "settings of a refused batch were applied"
    );
    let result = store.apply(vec![
        Change::Insert(sample_key(4, "alice", "new")),
        Change::Insert(sample_key(1, "alice", "duplicate")),
    ]);
    assert!(
        matches!(result, Err(StoreError::Duplicate(_))),
        "expected Duplicate, got {result:?}"
    );
    assert!(
        get(store, 4).is_none(),
        "part of a refused batch was applied"
    );
}

/// Later changes of a batch see the earlier ones: an `Insert` of an id
/// inserted earlier in its batch fails with `Duplicate` (ids are unique),
/// and the batch is refused.
pub fn check_batch_sees_earlier_changes<S: KeyStore>(store: &S) {
    let result = store.apply(vec![
        Change::Insert(sample_key(7, "alice", "first")),
        Change::Insert(sample_key(7, "mallory", "second")),
    ]);
    assert!(
        matches!(result, Err(StoreError::Duplicate(id)) if id == KeyId::from_u64(7)),
        "an id inserted twice in one batch must fail with Duplicate, got {result:?}"
    );
    assert!(
        get(store, 7).is_none(),
        "part of a batch refused for a duplicate id was applied"
    );

    let second = sample_key(1, "alice", "second");
    store
        .apply(vec![
            Change::Insert(sample_key(1, "alice", "first")),
            Change::Replace(second.clone()),
        ])
        .expect("insert then replace in one batch");
    assert_eq!(get(store, 1).as_deref(), Some(&second));
    let again = sample_key(1, "alice", "again");
    store
        .apply(vec![
            Change::Remove(KeyId::from_u64(1)),
            Change::Insert(again.clone()),
        ])
        .expect("remove then insert in one batch");
    assert_eq!(get(store, 1).as_deref(), Some(&again));
}

/// A batch that returned `Ok` has landed whole: every record it wrote
/// reads as written through `lookup`, `inspect`, `list` and `snapshot` at
/// once, not only the first. A key ring writes several records in one
/// batch (a rotation; `revoke_owner`'s revocations; a usage flush): a
/// store that shows or keeps only part of it leaves the other keys'
/// revocations unseen by `verify`.
pub fn check_batch_lands_whole<S: KeyStore>(store: &S) {
    for id in 1..=4 {
        store
            .insert(sample_key(id, "alice", "before"))
            .expect("insert");
    }
    let mut batch = vec![Change::Insert(sample_key(5, "alice", "after"))];
    for id in 1..=3 {
        batch.push(Change::ReplaceIf {
            expected: get(store, id).expect("inserted"),
            next: sample_key(id, "alice", "after"),
        });
    }
    batch.push(Change::Remove(KeyId::from_u64(4)));
    store.apply(batch).expect("a batch of several records");
    for id in [1, 2, 3, 5] {
        assert_eq!(
            get(store, id).as_ref().map(|e| e.key().name()),
            Some("after"),
            "record {id} of a batch that returned Ok does not read as written"
        );
    }
    assert!(
        get(store, 4).is_none(),
        "a record removed by a batch that returned Ok is still found"
    );
    for (what, listed) in [
        ("list", store.list(None)),
        ("list by owner", store.list(Some("alice"))),
        ("snapshot", store.snapshot()),
    ] {
        let listed = listed.expect(what);
        assert!(
            listed.iter().all(|e| e.key().name() == "after"),
            "{what} holds a record as it was before a batch that returned Ok"
        );
        assert_eq!(
            ids(listed),
            [1, 2, 3, 5],
            "{what} after a batch that returned Ok"
        );
    }
}

/// Settings round-trip, the last write wins, except that the revoke-all
/// epoch never moves back: a write with a lower epoch keeps the stored
/// epoch and its `revoked_all_at` (a stale copy must not undo a
/// `revoke_all`), and takes the rest; nor does the instant within one
/// epoch: a write of the same epoch with an earlier `revoked_all_at`
/// keeps the stored one (a `revoke_all` raises it in a second write,
/// which a write of the same epoch with a later instant must take);
/// and the superseded defaults of the stored settings are kept (see
/// [`RingSettings::written_over`]).
pub fn check_settings<S: KeyStore>(store: &S) {
    store
        .save_settings(&sample_settings(1))
        .expect("save_settings");
    store
        .save_settings(&sample_settings(2))
        .expect("save_settings");
    assert_eq!(
        store.load_settings().expect("load_settings"),
        Some(sample_settings(2))
    );
    let first = datetime!(2026-02-01 0:00 UTC);
    let later = datetime!(2026-03-01 0:00 UTC);
    store
        .save_settings(&settings_revoked(5, first, 7))
        .expect("save_settings");
    store
        .save_settings(&settings_revoked(3, later, 30))
        .expect("save_settings");
    assert_eq!(
        store.load_settings().expect("load_settings"),
        Some(RingSettings {
            default_expiry: ExpiryPolicy::days(30),
            ..settings_revoked(5, first, 7)
        }),
        "a settings write with a lower epoch moved the revoke-all epoch back"
    );

    // A default replaced while keys had expired under it is kept, so they
    // stay expired; a write from a ring that has not seen the change must
    // not drop it (and bring those keys back).
    let mut changed = settings_revoked(5, first, 7);
    changed.replace_default(ExpiryPolicy::Never, datetime!(2026-04-01 0:00 UTC));
    assert_eq!(changed.superseded.len(), 1);
    store.save_settings(&changed).expect("save_settings");
    store
        .save_settings(&settings_revoked(5, first, 7))
        .expect("save_settings");
    let kept = store.load_settings().expect("load_settings");
    assert_eq!(
        kept.map(|s| s.superseded),
        Some(changed.superseded),
        "a settings write from a stale copy dropped a superseded default"
    );

    // Settings without the ring's prefix and check (an older keyward's
    // write) keep the stored ones.
    let claimed = store.load_settings().expect("load_settings");
    let older = RingSettings {
        prefix: None,
        check: None,
        ..settings_revoked(6, first, 7)
    };
    store.save_settings(&older).expect("save_settings");
    let kept = store.load_settings().expect("load_settings");
    assert_eq!(
        kept.as_ref().map(|s| (s.prefix.clone(), s.check.clone())),
        claimed.map(|s| (s.prefix, s.check)),
        "settings without a prefix and check dropped the stored ones"
    );

    // A `revoke_all` whose write crossed a second raises its instant in a
    // second write of the same epoch; a stale copy of that epoch (another
    // ring's, read between the two) must not lower it again, or the plain
    // token check takes the tokens of that second.
    let raised = datetime!(2026-05-01 0:00:01 UTC);
    store
        .save_settings(&settings_revoked(7, raised, 7))
        .expect("save_settings");
    store
        .save_settings(&settings_revoked(7, raised - time::Duration::SECOND, 30))
        .expect("save_settings");
    let kept = store.load_settings().expect("load_settings");
    assert_eq!(
        kept.as_ref().map(|s| (s.epoch, s.revoked_all_at)),
        Some((7, Some(raised))),
        "a settings write moved the revoke-all instant of its epoch back"
    );
    assert_eq!(
        kept.map(|s| s.default_expiry),
        Some(ExpiryPolicy::days(30)),
        "a settings write of the same epoch did not take the rest"
    );
    // And the raise itself lands: a write of the same epoch with a later
    // instant (that `revoke_all`'s second write) takes it.
    let later = raised + time::Duration::SECOND;
    store
        .save_settings(&settings_revoked(7, later, 30))
        .expect("save_settings");
    assert_eq!(
        store
            .load_settings()
            .expect("load_settings")
            .map(|s| (s.epoch, s.revoked_all_at)),
        Some((7, Some(later))),
        "a settings write of the same epoch did not raise the revoke-all instant"
    );
}

/// [`Change::SettingsIf`] writes only over the settings it was derived
/// from: on a store without settings only with `expected: None`, then only
/// with the settings held (the value as `load_settings` gives it). Any
/// other expected value, or a change of the settings earlier in its batch,
/// fails with `SettingsConflict` and the whole batch is refused. What it
/// writes is kept as [`RingSettings::written_over`] the held settings, as
/// for [`Change::Settings`].
pub fn check_settings_if<S: KeyStore>(store: &S) {
    let settings_if =
        |expected: Option<RingSettings>, next: RingSettings| Change::SettingsIf { expected, next };
    let conflict = |result: Result<(), StoreError>, what: &str| {
        assert!(
            matches!(result, Err(StoreError::SettingsConflict)),
            "a SettingsIf {what} gave {result:?}, not SettingsConflict"
        );
    };
    let held = |store: &S| store.load_settings().expect("load_settings");

    conflict(
        store.apply(vec![settings_if(
            Some(sample_settings(1)),
            sample_settings(2),
        )]),
        "expecting settings on a store without any",
    );
    assert_eq!(held(store), None, "a refused SettingsIf was applied");
    store
        .apply(vec![settings_if(None, sample_settings(1))])
        .expect("SettingsIf of a store's first settings");
    assert_eq!(held(store), Some(sample_settings(1)));

    conflict(
        store.apply(vec![settings_if(None, sample_settings(2))]),
        "expecting no settings on a store that has them",
    );
    // A stale copy: equal but for the default, as after another ring's
    // change of it. The key insert in its batch is refused with it.
    let stale = RingSettings {
        default_expiry: ExpiryPolicy::days(30),
        ..sample_settings(1)
    };
    conflict(
        store.apply(vec![
            Change::Insert(sample_key(1, "alice", "beside a stale SettingsIf")),
            settings_if(Some(stale), sample_settings(2)),
        ]),
        "expecting settings other than the held ones",
    );
    assert_eq!(held(store), Some(sample_settings(1)));
    assert!(
        get(store, 1).is_none(),
        "a batch with a refused SettingsIf applied its insert"
    );

    let current = held(store);
    store
        .apply(vec![settings_if(current, sample_settings(2))])
        .expect("SettingsIf over the settings held");
    assert_eq!(held(store), Some(sample_settings(2)));

    let current = held(store);
    conflict(
        store.apply(vec![
            Change::Settings(sample_settings(3)),
            settings_if(current, sample_settings(4)),
        ]),
        "after a settings change earlier in its batch",
    );
    assert_eq!(held(store), Some(sample_settings(2)));

    // Like any settings write, it keeps `next.written_over(held)`: a lower
    // epoch in `next` does not move the stored one back.
    let lower = RingSettings {
        default_expiry: ExpiryPolicy::days(30),
        ..sample_settings(1)
    };
    store
        .apply(vec![settings_if(held(store), lower)])
        .expect("SettingsIf over the settings held");
    assert_eq!(
        held(store),
        Some(RingSettings {
            default_expiry: ExpiryPolicy::days(30),
            ..sample_settings(2)
        }),
        "a SettingsIf with a lower epoch moved the revoke-all epoch back"
    );
}

/// Two writers racing a [`Change::SettingsIf`] over the same settings:
/// exactly one wins, every round (as [`check_replace_if_is_atomic`] for
/// records). One that checks, then writes after letting another writer in,
/// lets a stale copy put back a default another ring replaced.
pub fn check_settings_if_is_atomic<S: KeyStore>(store: &S) {
    store
        .save_settings(&sample_settings(0))
        .expect("save_settings");
    for round in 1..=200u64 {
        let read = store.load_settings().expect("load_settings");
        let wins = race_two(store, |who| Change::SettingsIf {
            expected: read.clone(),
            next: RingSettings {
                default_expiry: ExpiryPolicy::days(1 + who),
                ..sample_settings(round)
            },
        });
        assert_eq!(
            wins, 1,
            "round {round}: {wins} compare-and-swaps of one settings version succeeded"
        );
    }
}

/// Two writers, released together, each applying the change `change`
/// builds for it (0 or 1): how many succeeded.
fn race_two<S: KeyStore>(store: &S, change: impl Fn(i64) -> Change + Sync) -> usize {
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|scope| {
        let racers: Vec<_> = [0, 1]
            .map(|who| {
                let (start, change) = (&start, &change);
                scope.spawn(move || {
                    let batch = vec![change(who)];
                    start.wait();
                    store.apply(batch).is_ok()
                })
            })
            .into_iter()
            .collect();
        racers
            .into_iter()
            .map(|r| r.join().expect("racer"))
            .filter(|&won| won)
            .count()
    })
}

/// Two writers racing a [`Change::ReplaceIf`] of the same version: exactly
/// one wins, every round. The store compares and writes under one lock;
/// one that checks, then writes after letting another writer in, lets a
/// stale copy overwrite a revocation. (A race may go unseen in a round;
/// over the rounds a store whose window is wide is caught.)
pub fn check_replace_if_is_atomic<S: KeyStore>(store: &S) {
    store
        .insert(sample_key(1, "alice", "round 0"))
        .expect("insert");
    for round in 1..=200 {
        let read = get(store, 1).expect("the record");
        let wins = race_two(store, |who| Change::ReplaceIf {
            expected: Arc::clone(&read),
            next: sample_key(1, "alice", &format!("round {round} by {who}")),
        });
        assert_eq!(
            wins, 1,
            "round {round}: {wins} compare-and-swaps of one version succeeded"
        );
    }
}

/// `list(Some(owner))` returns every one of that owner's records (and may
/// return others'), `list(None)` every record: also for an owner with
/// more records than a page of a database query holds, which a store must
/// read to the end, and for owners a query could take for a pattern
/// (`CORP\alice` in a `LIKE`). `revoke_owner` revokes the records `list`
/// gives it; an owner's key left out goes on verifying.
pub fn check_list_by_owner<S: KeyStore>(store: &S) {
    for (id, owner) in [(1, "alice"), (2, "bob"), (3, "alice")] {
        store.insert(sample_key(id, owner, "k")).expect("insert");
    }
    let listed = |store: &S, owner: &str| -> Vec<u64> {
        let of_owner = store
            .list(Some(owner))
            .expect("list")
            .into_iter()
            .filter(|k| k.key().owner() == owner)
            .collect();
        ids(of_owner)
    };
    assert_eq!(
        listed(store, "alice"),
        [1, 3],
        "list by owner misses records"
    );
    assert_eq!(ids(store.list(None).expect("list")), [1, 2, 3]);

    // Many more, in batches of 50 (ids 11.., every third one bob's).
    const MANY: u64 = 3000;
    let owner = |id: u64| if id.is_multiple_of(3) { "bob" } else { "carol" };
    let many: Vec<u64> = (11..11 + MANY).collect();
    for chunk in many.chunks(50) {
        store
            .apply(
                chunk
                    .iter()
                    .map(|&id| Change::Insert(sample_key(id, owner(id), "k")))
                    .collect(),
            )
            .expect("a batch of inserts");
    }
    let carol: Vec<u64> = many
        .iter()
        .copied()
        .filter(|&id| owner(id) == "carol")
        .collect();
    assert_eq!(
        listed(store, "carol"),
        carol,
        "list by owner misses records of an owner with {} of them",
        carol.len()
    );
    assert_eq!(
        store.list(None).expect("list").len() as u64,
        3 + MANY,
        "list misses records of a store with {} of them",
        3 + MANY
    );

    // Owners a query can read as more than text: a `LIKE` pattern's escape
    // and wildcards, a quote, a trailing space, case, text beyond ASCII.
    // An owner is any text (a `DOMAIN\user`, say), compared as it is.
    let unusual = ["CORP\\alice", "50%_off", "O'Brien", "dave ", "Alice", "Åsa"];
    for (id, owner) in (MANY + 100..).zip(unusual) {
        store.insert(sample_key(id, owner, "k")).expect("insert");
    }
    for (id, owner) in (MANY + 100..).zip(unusual) {
        assert_eq!(
            listed(store, owner),
            [id],
            "list by owner misses the record of owner {owner:?}"
        );
    }
}

/// `inspect`, `lookup` and `list` give the records the store holds, not
/// copies: `verify` counts a use in place on the record `inspect` lends,
/// and a ring finds that count through `list` and `lookup` to write it
/// back (a usage flush); `revoke_owner` writes a [`Change::ReplaceIf`] of
/// each record `list` gave it. A store that lends copies loses every use
/// of a key without a use limit (and a key with an idle expiry expires
/// while in use), or fails `revoke_owner` with conflicts.
pub fn check_records_are_lent_in_place<S: KeyStore>(store: &S) {
    store.insert(sample_key(1, "alice", "k")).expect("insert");
    let id = KeyId::from_u64(1);
    let now = datetime!(2026-01-02 0:00 UTC).unix_timestamp_nanos() as crate::key::Nanos;
    let mut lent = 0;
    store.inspect(id, &mut |entry| {
        if let Some(entry) = entry {
            entry.consume(now);
            lent += 1;
        }
    });
    assert_eq!(lent, 1, "inspect lent no record");
    let counted = |e: &Arc<StoredKey>| e.key().uses() == 1 && e.usage_changed();
    assert!(
        store.lookup(id).is_some_and(|e| counted(&e)),
        "a use counted on the record inspect lends is lost: lookup gives another"
    );
    for (what, listed) in [
        ("list", store.list(None)),
        ("list by owner", store.list(Some("alice"))),
    ] {
        assert!(
            listed.expect(what).iter().any(counted),
            "a use counted on the record inspect lends is lost: {what} gives another"
        );
    }
    let listed = store
        .list(Some("alice"))
        .expect("list")
        .into_iter()
        .find(|e| e.id() == id)
        .expect("list by owner misses a record");
    let result = store.apply(vec![Change::ReplaceIf {
        expected: listed,
        next: sample_key(1, "alice", "revoked"),
    }]);
    assert!(
        result.is_ok(),
        "a replace-if of the record list by owner gave must apply, got {result:?}"
    );
}

/// [`snapshot`](KeyStore::snapshot) holds every record, and no batch half
/// applied. A writer applies batches shaped like a rotation (insert record
/// `n + 1`, rename record `n`) while a reader takes snapshots: in each,
/// record `n` is renamed exactly when record `n + 1` is there. The ids are
/// spread over the id space as a ring's random ids are, so that a store
/// that reads its records part by part (shard by shard, partition by
/// partition) finds the two records of a batch in different parts. Such a
/// store can still pass by chance, so a pass is evidence, not proof; a
/// failure is a broken rule.
pub fn check_snapshot_holds_batches_whole<S: KeyStore>(store: &S) {
    // At least this many batches, and on until this many were under way
    // while a snapshot was taken (or the cap is reached): on a busy
    // machine the two threads take turns more than they run side by side,
    // and a writer done with a fixed count in one turn left the reader
    // little to catch (a store read part by part passed a run in four).
    const BATCHES: u64 = 1000;
    const CONTESTED: u64 = 100;
    const MOST_BATCHES: u64 = 10_000;
    // Odd, so a bijection of the ids; it spreads consecutive `n` over
    // every bit of the id.
    let id = |n: u64| n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    store
        .insert(sample_key(id(1), "alice", "1"))
        .expect("insert");
    assert_eq!(ids(store.snapshot().expect("snapshot")), [id(1)]);
    let done = AtomicBool::new(false);
    // Batches begun and landed, and how many were under way (begun before
    // a snapshot ended, landed after it began) while one was taken.
    let (begun, landed) = (AtomicU64::new(0), AtomicU64::new(0));
    let contested = AtomicU64::new(0);
    // Sets its flag when dropped, a failed assertion's unwinding included:
    // a reader that stops stops the writer (rather than let it go on to
    // the cap), and a writer that stops ends the reader's loop.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let stopped = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let _done = Stop(&done);
            let mut n = 0;
            while !stopped.load(Ordering::Acquire)
                && (n < BATCHES
                    || (n < MOST_BATCHES && contested.load(Ordering::Acquire) < CONTESTED))
            {
                n += 1;
                let batch = vec![
                    Change::Insert(sample_key(id(n + 1), "alice", &format!("{}", n + 1))),
                    Change::Replace(sample_key(id(n), "alice", &format!("{n} rotated"))),
                ];
                begun.store(n, Ordering::Release);
                store.apply(batch).expect("a batch");
                landed.store(n, Ordering::Release);
            }
        });
        let _stop = Stop(&stopped);
        let mut counted = 0;
        loop {
            let finished = done.load(Ordering::Acquire);
            let before = landed.load(Ordering::Acquire);
            let snapshot = store.snapshot().expect("snapshot");
            // Each batch counted once: a writer paused within one batch
            // while the reader takes many snapshots gives one chance.
            let under_way = begun.load(Ordering::Acquire);
            if under_way > before.max(counted) {
                counted = under_way;
                contested.fetch_add(1, Ordering::AcqRel);
            }
            // Per `n`: whether record `n` is renamed.
            let named: BTreeMap<u64, bool> = snapshot
                .iter()
                .filter_map(|k| {
                    let (n, rotated) = match k.key().name().split_once(' ') {
                        Some((n, _)) => (n, true),
                        None => (k.key().name(), false),
                    };
                    Some((n.parse().ok()?, rotated))
                })
                .collect();
            assert_eq!(
                named.len(),
                snapshot.len(),
                "a snapshot holds a record twice or altered"
            );
            for (&n, &rotated) in &named {
                assert_eq!(
                    rotated,
                    named.contains_key(&(n + 1)),
                    "a snapshot holds a batch half applied (record {n})"
                );
            }
            if finished {
                let written = landed.load(Ordering::Acquire);
                assert_eq!(named.len() as u64, written + 1, "snapshot misses records");
                break;
            }
        }
    });
}

/// Writers on several threads lose nothing.
pub fn check_concurrent_writers<S: KeyStore>(store: &S) {
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            scope.spawn(move || {
                for i in 0..50u64 {
                    store
                        .insert(sample_key(1 + t * 1000 + i, "alice", "k"))
                        .expect("concurrent insert");
                }
            });
        }
    });
    assert_eq!(
        store.list(None).expect("list").len(),
        200,
        "concurrent inserts were lost"
    );
}

/// `Debug` of the store does not print the hashes it holds.
pub fn check_debug_hides_records<S: KeyStore>(store: &S) {
    let key = sample_key(1, "alice", "k");
    store.insert(key.clone()).expect("insert");
    let hash = key.hash().to_string();
    let digest = &hash[hash.len() - 16..];
    assert!(
        !format!("{store:?}").contains(digest),
        "Debug of the store prints a key hash"
    );
}

/// Writes survive closing and reopening: `open` must open the same storage
/// each time (empty the first time). The compare-and-swaps too, which are
/// what a ring writes: a revocation is a [`Change::ReplaceIf`], a
/// rotation one batch of an `Insert` and a `ReplaceIf`, a `revoke_all` a
/// [`Change::SettingsIf`]; a store that kept them only in memory would
/// undo them at the next start.
pub fn check_persistence<S: KeyStore>(mut open: impl FnMut() -> S) {
    // Records with uses counted on them, as a ring writes every use of a
    // key with a use limit: a store that does not keep the count (usage
    // taken for statistics) gives a used-up key its uses again at the
    // next start.
    let used = |entry: StoredKey, uses: u32| {
        let at = datetime!(2026-01-02 0:00 UTC).unix_timestamp_nanos() as crate::key::Nanos;
        for _ in 0..uses {
            entry.key.consume(at);
        }
        entry
    };
    let kept = sample_key(1, "alice", "kept");
    let replaced = used(sample_key(2, "alice", "replaced"), 2);
    {
        let store = open();
        check_empty(&store);
        store.insert(kept.clone()).expect("insert");
        store
            .insert(sample_key(2, "alice", "before"))
            .expect("insert");
        store.replace(replaced.clone()).expect("replace");
        store
            .insert(sample_key(3, "alice", "removed"))
            .expect("insert");
        store.remove(KeyId::from_u64(3)).expect("remove");
        store
            .save_settings(&sample_settings(5))
            .expect("save_settings");
    }
    let store = open();
    assert_eq!(
        get(&store, 1).as_deref(),
        Some(&kept),
        "an insert did not survive a reopen"
    );
    assert_eq!(
        get(&store, 2).as_deref(),
        Some(&replaced),
        "a replace did not survive a reopen as written (its use count too)"
    );
    assert!(
        get(&store, 3).is_none(),
        "a remove did not survive a reopen"
    );
    assert_eq!(
        store.load_settings().expect("load_settings"),
        Some(sample_settings(5)),
        "settings did not survive a reopen"
    );

    let revoked_all = settings_revoked(6, datetime!(2026-02-01 0:00 UTC), 7);
    {
        let expected = get(&store, 1).expect("kept");
        store
            .apply(vec![
                Change::Insert(sample_key(4, "alice", "successor")),
                Change::ReplaceIf {
                    expected,
                    next: used(revoked(sample_key(1, "alice", "rotated")), 3),
                },
            ])
            .expect("an insert and a replace-if in one batch");
        let expected = store.load_settings().expect("load_settings");
        store
            .apply(vec![Change::SettingsIf {
                expected,
                next: revoked_all.clone(),
            }])
            .expect("a settings-if over the settings held");
    }
    drop(store);
    let store = open();
    assert_eq!(
        get(&store, 1).as_deref(),
        Some(&used(revoked(sample_key(1, "alice", "rotated")), 3)),
        "a replace-if did not survive a reopen as written (its status, hash and use count too)"
    );
    assert!(
        get(&store, 4).is_some(),
        "an insert batched with a replace-if did not survive a reopen"
    );
    assert_eq!(
        store.load_settings().expect("load_settings"),
        Some(revoked_all),
        "a settings-if did not survive a reopen"
    );
}
