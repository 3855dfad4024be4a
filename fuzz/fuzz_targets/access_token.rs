//! Access token verification on any input: no panic, and only the minted
//! token verifies. The first byte picks the input's shape: the bytes as they
//! are, or the minted token with the bytes written over part of it.
#![no_main]

use std::sync::OnceLock;

use keyward::{KeyRing, ManualClock, MemoryStore, NewKey, ScopeSet};
use libfuzzer_sys::fuzz_target;

mod common;

struct Fixture {
    ring: KeyRing<MemoryStore>,
    token: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // A clock that stands still: on the system clock the minted token
        // expires an hour into the run, and every check of it after that
        // would fail the oracle.
        let now =
            keyward::time::OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("an instant");
        let ring = KeyRing::builder("fz")
            .clock(ManualClock::new(now))
            .signing_key(1, [5u8; 32])
            .build(MemoryStore::new())
            .expect("ring");
        let scopes = ScopeSet::parse(["invoices:read", "customers:*"]).expect("scopes");
        let issued = ring
            .issue(NewKey::new("owner").scopes(scopes))
            .expect("issue");
        let token = ring
            .exchange(issued.secret.expose(), keyward::time::Duration::hours(1))
            .expect("exchange");
        Fixture {
            ring,
            token: token.expose().to_owned(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let presented = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let Some((&at, over)) = rest.split_first() else {
            return;
        };
        let bytes = common::overwrite(f.token.as_bytes(), at, over);
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let minted = presented == f.token;
    assert_eq!(f.ring.verify_access_token(&presented).is_ok(), minted);
    assert_eq!(
        f.ring.verify_access_token_strict(&presented).is_ok(),
        minted
    );
});
