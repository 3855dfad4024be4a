//! The same KeyRing suite as `ring_on_memory`, on `FileStore`: every
//! operation goes through the durable backend (each in its own temporary
//! directory, removed with the store).

mod stores {
    use std::sync::Arc;

    use keyward::{Change, FileStore, KeyId, KeyStore, RingSettings, StoreError, StoredKey};

    pub const DEFAULT_MODEL_CASES: u32 = 200;

    /// A `FileStore` that owns its temporary directory.
    #[derive(Debug)]
    pub struct TestStore {
        store: FileStore,
        _dir: tempfile::TempDir,
    }

    pub fn fresh_store() -> TestStore {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = FileStore::open(dir.path().join("keys.kw")).expect("store opens");
        TestStore { store, _dir: dir }
    }

    impl KeyStore for TestStore {
        fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
            self.store.lookup(id)
        }
        // Forwarded, so the suite runs `verify` as a host's ring on a
        // `FileStore` does: counting uses under the store's read lock.
        fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<keyward::Lent<'_>>)) {
            self.store.inspect(id, f)
        }
        fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
            self.store.list(owner)
        }
        // Every method `FileStore` overrides is forwarded, so the suite
        // runs its own, not the trait's defaults.
        fn snapshot(&self) -> Result<Vec<Arc<StoredKey>>, StoreError> {
            self.store.snapshot()
        }
        fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
            self.store.load_settings()
        }
        fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
            self.store.apply(changes)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.store.flush()
        }
    }
}

#[path = "ring_suite/lifecycle.rs"]
mod lifecycle;
#[path = "ring_suite/model.rs"]
mod model;
