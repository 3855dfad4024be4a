//! The public `KeyStore` conformance suite, run on the shipped stores.

use keyward::store::conformance;
use keyward::{FileStore, MemoryStore};

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
            fn list(
                &self,
                owner: Option<&str>,
            ) -> Result<Vec<std::sync::Arc<keyward::StoredKey>>, keyward::StoreError> {
                self.0.list(owner)
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

/// A store that writes settings as given, so that a stale copy moves the
/// revoke-all epoch back (and undoes a `revoke_all`): the suite refuses it.
#[test]
fn the_suite_catches_a_store_whose_epoch_moves_back() {
    #[derive(Debug, Default)]
    struct Verbatim {
        keys: MemoryStore,
        settings: std::sync::Mutex<Option<keyward::RingSettings>>,
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
        fn load_settings(&self) -> Result<Option<keyward::RingSettings>, keyward::StoreError> {
            Ok(self.settings.lock().unwrap().clone())
        }
        fn apply(&self, changes: Vec<keyward::Change>) -> Result<(), keyward::StoreError> {
            let mut last = None;
            let keys: Vec<_> = changes
                .into_iter()
                .filter_map(|c| match c {
                    keyward::Change::Settings(s) => {
                        last = Some(s);
                        None
                    }
                    other => Some(other),
                })
                .collect();
            if !keys.is_empty() {
                self.keys.apply(keys)?;
            }
            if let Some(s) = last {
                *self.settings.lock().unwrap() = Some(s);
            }
            Ok(())
        }
    }
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
