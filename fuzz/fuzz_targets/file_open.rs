//! `FileStore::open` on a file of any bytes: no panic; a store that opens
//! can be listed and read, and opens again to the same keys. The first byte
//! picks the file: the bytes as they are, a real store's file with the
//! bytes written over part of it, or that file cut short.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use keyward::{ExpiryPolicy, FileStore, KeyId, KeyRing, KeyStore, NewKey, ScopeSet};
use libfuzzer_sys::fuzz_target;

mod common;

struct Fixture {
    dir: tempfile::TempDir,
    /// The file of a store a ring wrote to: settings, keys, a revocation,
    /// an update and a deletion.
    real: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("real.kw");
        {
            let ring = KeyRing::builder("fz")
                .default_expiry(ExpiryPolicy::days(30))
                .build(FileStore::open(&path).expect("open"))
                .expect("ring");
            let scopes = ScopeSet::parse(["invoices:read"]).expect("scopes");
            let ids: Vec<KeyId> = (0..4)
                .map(|i| {
                    let issued = ring
                        .issue(NewKey::new(format!("owner{i}")).scopes(scopes.clone()))
                        .expect("issue");
                    issued.key.id()
                })
                .collect();
            ring.revoke(ids[0], "fuzz fixture").expect("revoke");
            ring.disable(ids[1]).expect("disable");
            ring.delete(ids[2]).expect("delete");
        }
        let real = std::fs::read(&path).expect("read the real store");
        Fixture { dir, real }
    })
}

fn ids(store: &FileStore) -> Vec<KeyId> {
    let mut ids: Vec<KeyId> = store
        .list(None)
        .expect("list an open store")
        .iter()
        .map(|k| k.key().id())
        .collect();
    ids.sort();
    ids
}

fn check(path: &Path) {
    let first = match FileStore::open(path) {
        Ok(store) => store,
        Err(_) => return,
    };
    let listed = ids(&first);
    let settings = first.load_settings().expect("settings of an open store");
    for &id in &listed {
        let mut found = false;
        first.inspect(id, &mut |stored| found = stored.is_some());
        assert!(found, "listed but not found");
    }
    drop(first);
    let again = FileStore::open(path).expect("a store that opened opens again");
    assert_eq!(ids(&again), listed, "reopening changed the keys");
    assert_eq!(
        again.load_settings().expect("settings"),
        settings,
        "reopening changed the settings"
    );
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => {
            let Some((&at, over)) = rest.split_first() else {
                return;
            };
            common::overwrite(&f.real, at, over)
        }
        _ => {
            let cut = rest.first().map_or(0, |&b| usize::from(b));
            f.real[..cut * f.real.len() / 256].to_vec()
        }
    };
    let path = f.dir.path().join("keys.kw");
    std::fs::write(&path, &bytes).expect("write the input");
    check(&path);
});
