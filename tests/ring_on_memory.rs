//! The KeyRing suite (lifecycle acceptance tests and the model-based test)
//! on `MemoryStore`.

mod stores {
    pub type TestStore = keyward::MemoryStore;
    pub const DEFAULT_MODEL_CASES: u32 = 2000;

    pub fn fresh_store() -> TestStore {
        keyward::MemoryStore::new()
    }
}

#[path = "ring_suite/lifecycle.rs"]
mod lifecycle;
#[path = "ring_suite/model.rs"]
mod model;
