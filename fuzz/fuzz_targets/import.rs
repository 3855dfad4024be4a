//! `FileStore::import` of any input, in both modes: no panic, and a refused
//! import leaves the store as it was. The first byte picks the input's
//! shape: the bytes as they are, or a real export with the bytes written
//! over part of it.
#![no_main]

use std::sync::{Mutex, OnceLock};

use keyward::store::{ImportMode, export};
use keyward::{ExpiryPolicy, FileStore, KeyRing, KeyStore, MemoryStore, NewKey, ScopeSet};
use libfuzzer_sys::fuzz_target;

mod common;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Mutex<FileStore>,
    export: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ring = KeyRing::builder("fz")
            .default_expiry(ExpiryPolicy::days(30))
            .build(MemoryStore::new())
            .expect("ring");
        let scopes = ScopeSet::parse(["invoices:read"]).expect("scopes");
        for i in 0..3 {
            ring.issue(NewKey::new(format!("owner{i}")).scopes(scopes.clone()))
                .expect("issue");
        }
        let mut out = Vec::new();
        export(ring.store(), &mut out).expect("export");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FileStore::open(dir.path().join("keys.kw")).expect("open");
        Fixture {
            _dir: dir,
            store: Mutex::new(store),
            export: out,
        }
    })
}

fn keys(store: &FileStore) -> Vec<String> {
    let mut all: Vec<String> = store
        .list(None)
        .expect("list")
        .iter()
        .map(|k| serde_json::to_string(&**k).expect("record as JSON"))
        .collect();
    all.sort();
    all
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let input = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let Some((&at, over)) = rest.split_first() else {
            return;
        };
        common::overwrite(&f.export, at, over)
    };
    let store = f.store.lock().expect("fixture lock");
    let before = keys(&store);
    let settings_before = store.load_settings().expect("settings");
    let import_mode = if mode & 2 == 0 {
        ImportMode::Merge
    } else {
        ImportMode::Replace
    };
    if store.import(input.as_slice(), import_mode).is_err() {
        assert_eq!(keys(&store), before, "a refused import changed the keys");
        assert_eq!(
            store.load_settings().expect("settings"),
            settings_before,
            "a refused import changed the settings"
        );
    }
});
