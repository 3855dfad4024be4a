//! The public `KeyStore` conformance suite, run on the shipped stores.

use keyward::store::conformance;
use keyward::{FileStore, KeyStore, MemoryStore};

/// A `KeyStore` over a `MemoryStore`: reads go to it, and `apply` runs
/// `$apply` with `$inner` the `MemoryStore` (a broken store, for the tests
/// that show the suite refuses it).
macro_rules! store_over_memory {
    ($name:ident, |$inner:ident, $changes:ident| $apply:block) => {
        #[derive(Debug, Default)]
        struct $name(MemoryStore);
        impl keyward::KeyStore for $name {
            fn lookup(&self, id: keyward::KeyId) -> Option<std::sync::Arc<keyward::StoredKey>> {
                self.0.lookup(id)
            }
            fn inspect(&self, id: keyward::KeyId, f: &mut dyn FnMut(Option<keyward::Lent<'_>>)) {
                self.0.inspect(id, f)
            }
            fn list(
                &self,
                owner: Option<&str>,
            ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
                self.0.list(owner)
            }
            fn snapshot(
                &self,
            ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
                self.0.snapshot()
            }
            fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
                self.0.load_settings()
            }
            fn apply(&self, $changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
                let $inner = &self.0;
                $apply
            }
        }
    };
}

/// The reads a broken store over a `MemoryStore` changes (see [`Reads`]);
/// each one it leaves alone is the `MemoryStore`'s own.
trait ReadHooks: std::fmt::Debug + Default + Send + Sync {
    fn inspect(
        inner: &MemoryStore,
        id: keyward::KeyId,
        f: &mut dyn FnMut(Option<keyward::Lent<'_>>),
    ) {
        inner.inspect(id, f)
    }
    fn list(
        inner: &MemoryStore,
        owner: Option<&str>,
    ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
        inner.list(owner)
    }
    fn snapshot(
        inner: &MemoryStore,
    ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
        inner.snapshot()
    }
}

/// A `KeyStore` over a `MemoryStore` whose reads go through `R`'s hooks,
/// and whose writes are the `MemoryStore`'s (a broken store, for the tests
/// that show the suite refuses it).
#[derive(Debug, Default)]
struct Reads<R>(MemoryStore, std::marker::PhantomData<R>);

impl<R: ReadHooks> keyward::KeyStore for Reads<R> {
    fn lookup(&self, id: keyward::KeyId) -> Option<std::sync::Arc<keyward::StoredKey>> {
        self.0.lookup(id)
    }
    fn inspect(&self, id: keyward::KeyId, f: &mut dyn FnMut(Option<keyward::Lent<'_>>)) {
        R::inspect(&self.0, id, f)
    }
    fn list(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
        R::list(&self.0, owner)
    }
    fn snapshot(&self) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
        R::snapshot(&self.0)
    }
    fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
        self.0.load_settings()
    }
    fn apply(&self, changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
        self.0.apply(changes)
    }
}

#[test]
fn memory_store_conforms() {
    conformance::check_all(MemoryStore::new);
}

#[test]
fn file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    conformance::check_all(|| {
        n += 1;
        FileStore::open(dir.path().join(format!("store{n}.kw"))).unwrap()
    });
}

#[test]
fn file_store_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    conformance::check_persistence(|| FileStore::open(&path).unwrap());
}

#[test]
fn the_suite_catches_a_broken_store() {
    // A store that forgets writes must fail the suite: proof that it checks.
    store_over_memory!(Forgetful, |inner, changes| {
        // Applies only the first change of a batch.
        inner.apply(changes.into_iter().take(1).collect())
    });
    let outcome =
        std::panic::catch_unwind(|| conformance::check_all(|| Forgetful(MemoryStore::new())));
    assert!(
        outcome.is_err(),
        "the suite passed a store that drops changes"
    );
}

#[test]
fn the_suite_catches_a_store_that_ignores_replace_if_s_condition() {
    // A store that writes a `ReplaceIf` whatever it holds lets a stale copy
    // undo a revocation: the suite must refuse it.
    store_over_memory!(Unconditional, |inner, changes| {
        let changes = changes
            .into_iter()
            .map(|c| match c {
                keyward::Change::ReplaceIf { next, .. } => keyward::Change::Replace(next),
                other => other,
            })
            .collect();
        inner.apply(changes)
    });
    let outcome = std::panic::catch_unwind(|| {
        conformance::check_replace_if(&Unconditional(MemoryStore::new()))
    });
    assert!(
        outcome.is_err(),
        "the suite passed a store that ignores ReplaceIf's condition"
    );
}

#[test]
fn the_suite_catches_a_store_that_ignores_settings_if_s_condition() {
    // A store that writes a `SettingsIf` whatever it holds lets a stale
    // copy put back a default another ring replaced: the suite refuses it.
    store_over_memory!(Unconditional, |inner, changes| {
        let changes = changes
            .into_iter()
            .map(|c| match c {
                keyward::Change::SettingsIf { next, .. } => keyward::Change::Settings(next),
                other => other,
            })
            .collect();
        inner.apply(changes)
    });
    let outcome = std::panic::catch_unwind(|| {
        conformance::check_settings_if(&Unconditional(MemoryStore::new()))
    });
    assert!(
        outcome.is_err(),
        "the suite passed a store that ignores SettingsIf's condition"
    );
}

/// A store that checks a `SettingsIf` and writes it after letting another
/// writer in: both of two racing compare-and-swaps of one settings version
/// succeed. The suite refuses it.
#[test]
fn the_suite_catches_a_store_whose_settings_if_is_not_atomic() {
    store_over_memory!(Racy, |inner, changes| {
        let mut plain = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                keyward::Change::SettingsIf { expected, next } => {
                    if inner.load_settings()? != expected {
                        return Err(keyward::StoreError::SettingsConflict);
                    }
                    plain.push(keyward::Change::Settings(next));
                }
                other => plain.push(other),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        inner.apply(plain)
    });
    let outcome =
        std::panic::catch_unwind(|| conformance::check_settings_if_is_atomic(&Racy::default()));
    assert!(
        outcome.is_err(),
        "the suite passed a store whose SettingsIf checks and writes apart"
    );
}

/// A store that keeps its settings apart from its records (a
/// `MemoryStore`), and writes them as given: a `Change::SettingsIf`'s once
/// its `expected` matches, and a `Change::Settings`' too, unless
/// `written_over` (then as [`keyward::RingSettings::written_over`] the
/// settings held, as it should), or `by_epoch_alone` (then every settings
/// write as [`by_epoch_alone`] merges it).
#[derive(Debug, Default)]
struct Verbatim {
    keys: MemoryStore,
    settings: std::sync::Mutex<Option<keyward::RingSettings>>,
    written_over: bool,
    by_epoch_alone: bool,
}

/// `new` written over `held` as a store that compares the revoke-all
/// epochs alone keeps it (as `written_over` did before it compared the
/// instants of one epoch): the stored epoch and instant over a lower
/// epoch, and otherwise the new ones, though the new instant of the same
/// epoch is earlier.
fn by_epoch_alone(
    new: keyward::RingSettings,
    held: Option<&keyward::RingSettings>,
) -> keyward::RingSettings {
    let kept = new.clone().written_over(held);
    if held.is_none_or(|held| held.epoch() != new.epoch()) {
        return kept;
    }
    let mut kept = serde_json::to_value(&kept).unwrap();
    kept["revoked_all_at"] = serde_json::to_value(&new).unwrap()["revoked_all_at"].take();
    serde_json::from_value(kept).unwrap()
}

impl keyward::KeyStore for Verbatim {
    fn lookup(&self, id: keyward::KeyId) -> Option<std::sync::Arc<keyward::StoredKey>> {
        self.keys.lookup(id)
    }
    fn list(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
        self.keys.list(owner)
    }
    fn snapshot(&self) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
        self.keys.snapshot()
    }
    fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
        Ok(self.settings.lock().unwrap().clone())
    }
    fn apply(&self, changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
        let mut held = self.settings.lock().unwrap();
        let (mut next, mut touched, mut keys) = (held.clone(), false, Vec::new());
        for change in changes {
            match change {
                keyward::Change::Settings(s) if self.by_epoch_alone => {
                    next = Some(by_epoch_alone(s, next.as_ref()));
                    touched = true;
                }
                keyward::Change::Settings(s) if self.written_over => {
                    next = Some(s.written_over(next.as_ref()));
                    touched = true;
                }
                keyward::Change::Settings(s) => {
                    next = Some(s);
                    touched = true;
                }
                keyward::Change::SettingsIf { expected, next: s } => {
                    if touched || expected != *held {
                        return Err(keyward::StoreError::SettingsConflict);
                    }
                    next = Some(if self.by_epoch_alone {
                        by_epoch_alone(s, next.as_ref())
                    } else {
                        s
                    });
                    touched = true;
                }
                other => keys.push(other),
            }
        }
        if !keys.is_empty() {
            self.keys.apply(keys)?;
        }
        *held = next;
        Ok(())
    }
}

/// A store that writes settings as given, so that a stale copy moves the
/// revoke-all epoch back (and undoes a `revoke_all`): the suite refuses it.
#[test]
fn the_suite_catches_a_store_whose_epoch_moves_back() {
    let outcome = std::panic::catch_unwind(|| conformance::check_settings(&Verbatim::default()));
    assert!(
        outcome.is_err(),
        "the suite passed a store whose revoke-all epoch moves back"
    );
}

/// A store that checks a `ReplaceIf` and writes it after letting another
/// writer in (a millisecond apart, as a network round trip would): both of
/// two racing compare-and-swaps of one version succeed. The suite refuses
/// it.
#[test]
fn the_suite_catches_a_store_whose_replace_if_is_not_atomic() {
    store_over_memory!(Racy, |inner, changes| {
        let mut plain = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                keyward::Change::ReplaceIf { expected, next } => {
                    let holds = inner
                        .lookup(next.id())
                        .is_some_and(|c| std::sync::Arc::ptr_eq(&c, &expected));
                    if !holds {
                        return Err(keyward::StoreError::Conflict(next.id()));
                    }
                    plain.push(keyward::Change::Replace(next));
                }
                other => plain.push(other),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        inner.apply(plain)
    });
    let outcome =
        std::panic::catch_unwind(|| conformance::check_replace_if_is_atomic(&Racy::default()));
    assert!(
        outcome.is_err(),
        "the suite passed a store whose ReplaceIf checks and writes apart"
    );
}

/// What the suite says of a broken store: the message of the check that
/// refused it, run through [`conformance::check_all`] as a host would.
fn rejection<S: keyward::KeyStore>(fresh: impl FnMut() -> S) -> String {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conformance::check_all(fresh)
    }));
    let Err(panic) = outcome else {
        panic!("the suite passed a broken store");
    };
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// The id of the record a change writes, if any.
fn written_id(change: &keyward::Change) -> Option<keyward::KeyId> {
    match change {
        keyward::Change::Insert(e)
        | keyward::Change::Replace(e)
        | keyward::Change::ReplaceIf { next: e, .. } => Some(e.id()),
        keyward::Change::Remove(id) => Some(*id),
        _ => None,
    }
}

/// A store whose in-memory view of its records (a cache in front of its
/// database) takes only the first record of each batch: the others read
/// as they were. `revoke_owner` revokes an owner's keys in one batch, so
/// all but one would still verify. The suite refuses it.
#[test]
fn the_suite_catches_a_store_that_shows_part_of_a_batch() {
    #[derive(Debug, Default)]
    struct Cached {
        db: MemoryStore,
        cache: std::sync::Mutex<
            std::collections::HashMap<keyward::KeyId, Option<std::sync::Arc<keyward::StoredKey>>>,
        >,
    }
    impl keyward::KeyStore for Cached {
        fn lookup(&self, id: keyward::KeyId) -> Option<std::sync::Arc<keyward::StoredKey>> {
            let mut cache = self.cache.lock().unwrap();
            cache
                .entry(id)
                .or_insert_with(|| self.db.lookup(id))
                .clone()
        }
        fn list(
            &self,
            owner: Option<&str>,
        ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            self.db.list(owner)
        }
        fn snapshot(&self) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            self.db.snapshot()
        }
        fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
            self.db.load_settings()
        }
        fn apply(&self, changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
            let ids: Vec<_> = changes.iter().filter_map(written_id).collect();
            // What the cache held before (read now if it held nothing).
            ids.iter().for_each(|&id| drop(self.lookup(id)));
            self.db.apply(changes)?;
            if let Some(&first) = ids.first() {
                let now = self.db.lookup(first);
                self.cache.lock().unwrap().insert(first, now);
            }
            Ok(())
        }
    }
    let message = rejection(Cached::default);
    assert!(message.contains("of a batch that returned Ok"), "{message}");
}

/// A store that writes only the first `ReplaceIf` of a batch and reports
/// the batch written: `revoke_owner` would lose all revocations but one.
/// The suite refuses it.
#[test]
fn the_suite_catches_a_store_that_drops_part_of_a_batch_of_replace_ifs() {
    store_over_memory!(FirstOnly, |inner, changes| {
        let mut seen = 0;
        let changes = changes
            .into_iter()
            .filter(|c| {
                if matches!(c, keyward::Change::ReplaceIf { .. }) {
                    seen += 1;
                    seen == 1
                } else {
                    true
                }
            })
            .collect();
        inner.apply(changes)
    });
    let message = rejection(FirstOnly::default);
    assert!(message.contains("of a batch that returned Ok"), "{message}");
}

/// A store that checks each `Insert` against the records it held before
/// the batch only: a second `Insert` of one id in a batch writes over the
/// first, and the store ends up having accepted a duplicate id. The suite
/// refuses it.
#[test]
fn the_suite_catches_a_store_that_takes_an_id_twice_in_one_batch() {
    store_over_memory!(TwiceInABatch, |inner, changes| {
        let mut inserted = std::collections::HashSet::new();
        let changes = changes
            .into_iter()
            .map(|c| match c {
                keyward::Change::Insert(e) if !inserted.insert(e.id()) => {
                    keyward::Change::Replace(e)
                }
                other => other,
            })
            .collect();
        inner.apply(changes)
    });
    let message = rejection(TwiceInABatch::default);
    assert!(message.contains("inserted twice in one batch"), "{message}");
}

/// A store that lends `verify` a copy of the record (equal, in another
/// allocation): the uses `verify` counts on it are lost, and a key with an
/// idle expiry expires while in use. The suite refuses it.
#[test]
fn the_suite_catches_a_store_that_lends_inspect_a_copy() {
    #[derive(Debug, Default)]
    struct Copying;
    impl ReadHooks for Copying {
        fn inspect(
            inner: &MemoryStore,
            id: keyward::KeyId,
            f: &mut dyn FnMut(Option<keyward::Lent<'_>>),
        ) {
            let copy = inner
                .lookup(id)
                .map(|e| std::sync::Arc::new(keyward::StoredKey::clone(&e)));
            f(copy.as_ref().map(keyward::Lent::from))
        }
    }
    let message = rejection(Reads::<Copying>::default);
    assert!(message.contains("counted on the record"), "{message}");
}

/// A store whose `list` decodes copies (from its database, say) rather
/// than give the records it lends: the ring's usage flush, which finds
/// the records `verify` counted uses on through `list`, never writes them,
/// and `revoke_owner`'s compare-and-swap of the listed records conflicts
/// every time. The suite refuses it.
#[test]
fn the_suite_catches_a_store_whose_list_gives_copies() {
    #[derive(Debug, Default)]
    struct Copying;
    impl ReadHooks for Copying {
        fn list(
            inner: &MemoryStore,
            owner: Option<&str>,
        ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            Ok(inner
                .list(owner)?
                .into_iter()
                .map(|e| std::sync::Arc::new(keyward::StoredKey::clone(&e)))
                .collect())
        }
    }
    let message = rejection(Reads::<Copying>::default);
    assert!(message.contains("is lost: list gives another"), "{message}");
}

/// A store whose `snapshot` is its `list`, read part by part (here a
/// `MemoryStore`'s, shard by shard) while batches land: an export taken
/// during a rotation can hold the successor beside its predecessor as it
/// was before, and an import of it grants a limited key's uses twice. The
/// check is one of chance, so it must catch the store every time of ten,
/// not merely some of them.
#[test]
fn the_suite_catches_a_store_whose_snapshot_is_read_part_by_part() {
    #[derive(Debug, Default)]
    struct ListedSnapshot;
    impl ReadHooks for ListedSnapshot {
        fn snapshot(
            inner: &MemoryStore,
        ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            inner.list(None)
        }
    }
    let caught = (0..10)
        .filter(|_| {
            std::panic::catch_unwind(|| {
                conformance::check_snapshot_holds_batches_whole(&Reads::<ListedSnapshot>::default())
            })
            .is_err()
        })
        .count();
    assert_eq!(caught, 10, "the suite passed a snapshot read part by part");
}

/// A durable store (a `FileStore` behind an in-memory view) that writes
/// to its file every change but one kind, which it keeps only in memory:
/// [`keyward::Change::ReplaceIf`], which a ring writes a revocation as, or
/// [`keyward::Change::SettingsIf`], which it writes a `revoke_all` as.
/// Either way revocations come undone at the next start. The suite's
/// persistence check refuses both.
#[test]
fn the_suite_catches_a_durable_store_that_keeps_compare_and_swaps_in_memory() {
    #[derive(Debug)]
    struct HalfDurable {
        file: FileStore,
        view: MemoryStore,
        /// Whether `SettingsIf` is the kind lost (else `ReplaceIf`).
        loses_settings: bool,
    }
    impl HalfDurable {
        fn open(path: &std::path::Path, loses_settings: bool) -> HalfDurable {
            use keyward::KeyStore;
            let file = FileStore::open(path).unwrap();
            let view = MemoryStore::new();
            let mut load: Vec<keyward::Change> = file
                .list(None)
                .unwrap()
                .iter()
                .map(|e| keyward::Change::Insert(keyward::StoredKey::clone(e)))
                .collect();
            load.extend(file.load_settings().unwrap().map(keyward::Change::Settings));
            view.apply(load).unwrap();
            HalfDurable {
                file,
                view,
                loses_settings,
            }
        }
    }
    impl keyward::KeyStore for HalfDurable {
        fn lookup(&self, id: keyward::KeyId) -> Option<std::sync::Arc<keyward::StoredKey>> {
            self.view.lookup(id)
        }
        fn list(
            &self,
            owner: Option<&str>,
        ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            self.view.list(owner)
        }
        fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
            self.view.load_settings()
        }
        fn apply(&self, changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
            self.view.apply(changes.clone())?;
            let written: Vec<keyward::Change> = changes
                .into_iter()
                .filter_map(|c| match c {
                    keyward::Change::ReplaceIf { next, .. } => self
                        .loses_settings
                        .then_some(keyward::Change::Replace(next)),
                    keyward::Change::SettingsIf { next, .. } => {
                        (!self.loses_settings).then_some(keyward::Change::Settings(next))
                    }
                    other => Some(other),
                })
                .collect();
            if written.is_empty() {
                Ok(())
            } else {
                self.file.apply(written)
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for (loses_settings, name) in [(false, "replace_if.kw"), (true, "settings_if.kw")] {
        let path = dir.path().join(name);
        let outcome = std::panic::catch_unwind(|| {
            conformance::check_persistence(|| HalfDurable::open(&path, loses_settings))
        });
        assert!(
            outcome.is_err(),
            "the suite passed a store that keeps {} only in memory",
            if loses_settings {
                "SettingsIf"
            } else {
                "ReplaceIf"
            }
        );
    }
}

/// A store whose `list` of one owner returns one page of a database query
/// (here the first 100 records) and drops the rest: `revoke_owner`
/// revokes the keys listed, and the owner's other keys go on verifying.
/// The suite refuses it.
#[test]
fn the_suite_catches_a_store_that_lists_one_page_of_an_owner() {
    #[derive(Debug, Default)]
    struct OnePage;
    impl ReadHooks for OnePage {
        fn list(
            inner: &MemoryStore,
            owner: Option<&str>,
        ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            let mut listed = inner.list(owner)?;
            if owner.is_some() {
                listed.truncate(100);
            }
            Ok(listed)
        }
    }
    let message = rejection(Reads::<OnePage>::default);
    assert!(
        message.contains("list by owner misses records"),
        "{message}"
    );
}

/// A store that keeps `written_over` for `Change::Settings` but writes a
/// `Change::SettingsIf`'s settings as given: a compare-and-swap carrying
/// a lower epoch than the one held moves the revoke-all epoch back. The
/// suite refuses it.
#[test]
fn the_suite_catches_a_store_whose_settings_if_moves_the_epoch_back() {
    let message = rejection(|| Verbatim {
        written_over: true,
        ..Verbatim::default()
    });
    assert!(
        message.contains("SettingsIf with a lower epoch"),
        "{message}"
    );
}

/// A store that merges settings by the revoke-all epoch alone: over a
/// lower epoch it keeps the stored epoch and instant, as it must, but a
/// write of the same epoch puts back an earlier instant. A `revoke_all`
/// whose write crossed a second raises its instant in a second write of
/// the same epoch, and a stale copy taken between the two (another
/// ring's, an export's) written over them lowered it again: the plain
/// token check then took the tokens exchanged in that second, from keys
/// the revoke-all ended, for their whole life. The suite refuses it.
#[test]
fn the_suite_catches_a_store_that_lowers_the_revoke_all_instant_of_an_epoch() {
    let message = rejection(|| Verbatim {
        by_epoch_alone: true,
        ..Verbatim::default()
    });
    assert!(
        message.contains("moved the revoke-all instant of its epoch back"),
        "{message}"
    );
}

/// Broken stores the suite already refused, kept so that it goes on
/// refusing them: each breaks one rule a ring relies on to fail closed.
#[test]
fn the_suite_catches_stores_that_break_the_write_rules() {
    // Applies a batch change by change, and stops at the first refused
    // one: the changes before it stay (half a rotation, half of an
    // owner's revocations).
    store_over_memory!(ChangeByChange, |inner, changes| {
        changes
            .into_iter()
            .try_for_each(|change| inner.apply(vec![change]))
    });
    let message = rejection(ChangeByChange::default);
    assert!(message.contains("was applied"), "{message}");

    // Writes an `Insert` over an existing id: a duplicate id accepted, and
    // the existing key's record (a revocation with it) replaced.
    store_over_memory!(Overwriting, |inner, changes| {
        let changes = changes
            .into_iter()
            .map(|c| match c {
                keyward::Change::Insert(e) if inner.lookup(e.id()).is_some() => {
                    keyward::Change::Replace(e)
                }
                other => other,
            })
            .collect();
        inner.apply(changes)
    });
    let message = rejection(Overwriting::default);
    assert!(message.contains("expected Duplicate"), "{message}");

    // Takes the `Remove` of a missing id as done: a ring's delete of a key
    // another ring deleted meanwhile reports success for nothing written.
    store_over_memory!(Forgiving, |inner, changes| {
        let changes = changes
            .into_iter()
            .filter(|c| !matches!(c, keyward::Change::Remove(id) if inner.lookup(*id).is_none()))
            .collect();
        inner.apply(changes)
    });
    let message = rejection(Forgiving::default);
    assert!(message.contains("must fail with NotFound"), "{message}");
}

/// Stores whose update of a record leaves one field as it was (a column
/// of its own, which the `UPDATE` does not set): the hash, and after a
/// `regenerate` the old secret goes on verifying; the status, and after a
/// `revoke` the key does. The suite refuses both.
#[test]
fn the_suite_catches_a_store_that_keeps_a_field_on_update() {
    /// `next` with the field at `pointer` of `held`, as the store reads it back.
    fn keeping(
        next: &keyward::StoredKey,
        held: &keyward::StoredKey,
        pointer: &str,
    ) -> keyward::StoredKey {
        let mut record = serde_json::to_value(next).unwrap();
        let mut held = serde_json::to_value(held).unwrap();
        *record.pointer_mut(pointer).unwrap() = held.pointer_mut(pointer).unwrap().take();
        serde_json::from_value(record).unwrap()
    }
    macro_rules! keeps {
        ($name:ident, $pointer:literal) => {
            store_over_memory!($name, |inner, changes| {
                let changes = changes
                    .into_iter()
                    .map(|c| match c {
                        keyward::Change::Replace(next) => match inner.lookup(next.id()) {
                            Some(held) => keyward::Change::Replace(keeping(&next, &held, $pointer)),
                            None => keyward::Change::Replace(next),
                        },
                        keyward::Change::ReplaceIf { expected, next } => {
                            let next = keeping(&next, &expected, $pointer);
                            keyward::Change::ReplaceIf { expected, next }
                        }
                        other => other,
                    })
                    .collect();
                inner.apply(changes)
            });
        };
    }
    keeps!(KeepsHash, "/hash");
    keeps!(KeepsStatus, "/key/status");
    for message in [
        rejection(KeepsHash::default),
        rejection(KeepsStatus::default),
    ] {
        assert!(message.contains("right after replace"), "{message}");
    }
}

/// A store whose `inspect` answers from a cache that `lookup` fills and
/// `apply` does not clear: `verify` goes through `inspect` alone, and a
/// `revoke` looks the key up before its write, so the revoked key goes on
/// verifying. The suite refuses it.
#[test]
fn the_suite_catches_a_store_whose_inspect_only_lookup_refreshes() {
    type Cache =
        std::collections::HashMap<keyward::KeyId, Option<std::sync::Arc<keyward::StoredKey>>>;
    #[derive(Debug, Default)]
    struct Stale(MemoryStore, std::sync::Mutex<Cache>);
    impl keyward::KeyStore for Stale {
        fn lookup(&self, id: keyward::KeyId) -> Option<std::sync::Arc<keyward::StoredKey>> {
            let found = self.0.lookup(id);
            self.1.lock().unwrap().insert(id, found.clone());
            found
        }
        fn inspect(&self, id: keyward::KeyId, f: &mut dyn FnMut(Option<keyward::Lent<'_>>)) {
            let cached = self.1.lock().unwrap().get(&id).cloned();
            f(cached
                .unwrap_or_else(|| self.lookup(id))
                .as_ref()
                .map(keyward::Lent::from))
        }
        fn list(
            &self,
            owner: Option<&str>,
        ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            self.0.list(owner)
        }
        fn snapshot(&self) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            self.0.snapshot()
        }
        fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
            self.0.load_settings()
        }
        fn apply(&self, changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
            self.0.apply(changes)
        }
    }
    let message = rejection(Stale::default);
    assert!(message.contains("inspect lent another record"), "{message}");
}

/// A store whose `list(Some(owner))` is `WHERE owner LIKE ?` with the
/// owner bound as it is: `\` escapes the next character, so the keys of
/// an owner `CORP\alice` are never listed, and `revoke_owner` of it
/// revokes none of them (they go on verifying). The suite refuses it.
#[test]
fn the_suite_catches_a_store_that_lists_an_owner_by_pattern() {
    /// SQL's `LIKE` with `\` as its escape character.
    fn like(text: &[char], pattern: &[char]) -> bool {
        match pattern {
            [] => text.is_empty(),
            ['%', rest @ ..] => (0..=text.len()).any(|i| like(&text[i..], rest)),
            ['_', rest @ ..] => !text.is_empty() && like(&text[1..], rest),
            ['\\', c, rest @ ..] | [c, rest @ ..] => {
                text.first() == Some(c) && like(&text[1..], rest)
            }
        }
    }
    #[derive(Debug, Default)]
    struct ByPattern;
    impl ReadHooks for ByPattern {
        fn list(
            inner: &MemoryStore,
            owner: Option<&str>,
        ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            let pattern: Vec<char> = owner.map(|o| o.chars().collect()).unwrap_or_default();
            let mut all = inner.list(None)?;
            if owner.is_some() {
                all.retain(|k| like(&k.key().owner().chars().collect::<Vec<_>>(), &pattern));
            }
            Ok(all)
        }
    }
    let message = rejection(Reads::<ByPattern>::default);
    assert!(message.contains("misses the record of owner"), "{message}");
}

/// A durable store that does not keep the use count (taken for a
/// statistic): at the next start a key with a use limit that was used up
/// has all its uses again. The suite refuses it.
#[test]
fn the_suite_catches_a_durable_store_that_drops_use_counts() {
    /// What the store keeps: each record as JSON, and the settings.
    type Disk = std::sync::Mutex<(Vec<serde_json::Value>, Option<keyward::RingSettings>)>;
    struct Uncounted<'d>(MemoryStore, &'d Disk);
    impl std::fmt::Debug for Uncounted<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Uncounted")
        }
    }
    impl<'d> Uncounted<'d> {
        fn open(disk: &'d Disk) -> Uncounted<'d> {
            let memory = MemoryStore::new();
            let (records, settings) = &*disk.lock().unwrap();
            for record in records {
                let mut record = record.clone();
                record["key"].as_object_mut().unwrap().remove("uses");
                memory
                    .insert(serde_json::from_value(record).unwrap())
                    .unwrap();
            }
            if let Some(settings) = settings {
                memory.save_settings(settings).unwrap();
            }
            Uncounted(memory, disk)
        }
    }
    impl keyward::KeyStore for Uncounted<'_> {
        fn lookup(&self, id: keyward::KeyId) -> Option<std::sync::Arc<keyward::StoredKey>> {
            self.0.lookup(id)
        }
        fn list(
            &self,
            owner: Option<&str>,
        ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
            self.0.list(owner)
        }
        fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
            self.0.load_settings()
        }
        fn apply(&self, changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
            let mut disk = self.1.lock().unwrap();
            self.0.apply(changes)?;
            disk.0 = (self.0.snapshot()?.iter())
                .map(|e| serde_json::to_value(&**e).unwrap())
                .collect();
            disk.1 = self.0.load_settings()?;
            Ok(())
        }
    }
    let disk = Disk::default();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        conformance::check_persistence(|| Uncounted::open(&disk))
    }));
    let message = outcome.expect_err("the suite passed a store that drops use counts");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(message.contains("its use count too"), "{message}");
}

/// A sample record's owner and name come back as given, a name with a NUL
/// too; an owner with one, which no key can have, is refused with a
/// message rather than read back as another owner and name.
#[test]
fn sample_key_keeps_its_owner_and_name_and_refuses_a_nul_owner() {
    let key = conformance::sample_key(7, "alice", "a\0name");
    assert_eq!((key.key().owner(), key.key().name()), ("alice", "a\0name"));
    let outcome = std::panic::catch_unwind(|| conformance::sample_key(7, "a\0b", "n"));
    let message = outcome.expect_err("an owner with a NUL was taken");
    let message = message.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(message.contains("cannot hold a NUL"), "{message}");
}
