//! `verify` on any input: no panic, and only an issued key's exact string
//! verifies. The first byte picks the input's shape: the bytes as they are,
//! or an issued key with the bytes written over part of it (so the fuzzer
//! starts from strings that pass the prefix and length checks).
#![no_main]

use std::sync::OnceLock;

use keyward::{KeyRing, MemoryStore, NewKey, RequestContext, Requirement, ScopeSet};
use libfuzzer_sys::fuzz_target;

mod common;

struct Fixture {
    ring: KeyRing<MemoryStore>,
    keys: Vec<String>,
    need: Requirement,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ring = KeyRing::builder("fz")
            .pepper([9u8; 32])
            .build(MemoryStore::new())
            .expect("ring");
        let scopes = ScopeSet::parse(["invoices:read"]).expect("scopes");
        let keys = (0..4)
            .map(|i| {
                let issued = ring
                    .issue(NewKey::new(format!("owner{i}")).scopes(scopes.clone()))
                    .expect("issue");
                issued.secret.expose().to_owned()
            })
            .collect();
        let need = Requirement::all_of(["invoices:read"]).expect("requirement");
        Fixture { ring, keys, need }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let presented = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        _ => {
            // An issued key, with `rest` written over it from a chosen offset.
            let key = &f.keys[usize::from(mode) % f.keys.len()];
            let Some((&at, over)) = rest.split_first() else {
                return;
            };
            let bytes = common::overwrite(key.as_bytes(), at, over);
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    let issued = f.keys.contains(&presented);
    let plain = f.ring.verify(&presented);
    assert_eq!(
        plain.is_ok(),
        issued,
        "verify disagrees with the issued set"
    );
    let with = f
        .ring
        .verify_with(&presented, RequestContext::new().require(&f.need));
    assert_eq!(
        with.is_ok(),
        issued,
        "verify_with disagrees with the issued set"
    );
});
