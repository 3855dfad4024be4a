//! Random sequences of lifecycle operations on a `FileStore` ring, with
//! clocks, durations and policies drawn from their extremes (the ends of
//! `time`'s range, of a nanosecond count, clocks set back, durations of
//! `Duration::MIN` and `MAX`), reopens between them, and the invariants
//! that must hold whatever the sequence:
//!
//! - nothing panics, and the store always reopens;
//! - a secret that was revoked (one by one or by `revoke_all`) or
//!   replaced by `regenerate` never verifies or exchanges again;
//! - a key that verifies is `Active` and before its `expires_at`, and so
//!   is the key of a token that passes the strict check;
//! - the store's export imports into a fresh store (`Replace`), where each
//!   key reads the same state, end and record.
//!
//! Where the model-based test (tests/ring_suite/model.rs) holds the ring to
//! a reference model step by step, over ordinary values, this one holds
//! only these invariants, over extreme values, reopens and a round trip
//! through an export.
//!
//! CI runs 128 sequences; a long run takes more:
//! `KEYWARD_EXTREMES_CASES=4000 cargo test --release --test lifecycle_extremes`
//! (it found that a rotation on a clock days behind wrote a store whose
//! export did not import).

use std::collections::HashSet;
use std::path::Path;

use keyward::store::ImportMode;
use keyward::time::macros::datetime;
use keyward::time::{Date, Duration, OffsetDateTime, Time};
use keyward::*;
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("KEYWARD_EXTREMES_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(128)
}

fn clock_time() -> impl Strategy<Value = OffsetDateTime> {
    prop_oneof![
        Just(OffsetDateTime::new_utc(Date::MAX, Time::MAX)),
        Just(datetime!(0000-01-01 0:00 UTC)),
        Just(datetime!(1600-01-01 0:00 UTC)),
        // The ends of a signed nanosecond count since 1970.
        Just(datetime!(1677-09-21 0:12:44 UTC)),
        Just(datetime!(2262-04-11 23:47:16 UTC)),
        Just(datetime!(2262-04-11 23:47:17 UTC)),
        Just(datetime!(1969-12-31 23:59:59 UTC)),
        Just(datetime!(2026-01-01 0:00 UTC)),
        Just(datetime!(2026-03-01 0:00 UTC)),
        Just(datetime!(2300-01-01 0:00 UTC)),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MIN),
        Just(Duration::MAX),
        Just(Duration::ZERO),
        Just(Duration::nanoseconds(1)),
        Just(Duration::seconds(1)),
        Just(Duration::days(30)),
        Just(Duration::days(365 * 1000)),
    ]
}

fn policy() -> impl Strategy<Value = Option<ExpiryPolicy>> {
    prop_oneof![
        Just(None),
        Just(Some(ExpiryPolicy::Never)),
        duration().prop_map(|d| Some(ExpiryPolicy::Lifetime(d))),
        duration().prop_map(|d| Some(ExpiryPolicy::Idle(d))),
        clock_time().prop_map(|t| Some(ExpiryPolicy::At(t))),
        Just(Some(ExpiryPolicy::EndOfDate(Date::MAX))),
        Just(Some(ExpiryPolicy::EndOfDate(
            datetime!(2262-04-11 0:00 UTC).date()
        ))),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    SetClock(OffsetDateTime),
    Advance(Duration),
    Issue(Option<ExpiryPolicy>, Option<u64>),
    Verify(usize),
    Rotate(usize, Duration),
    Regenerate(usize),
    Revoke(usize),
    Disable(usize),
    RevokeAll,
    SetDefault(Option<ExpiryPolicy>),
    Exchange(usize, Duration),
    Flush,
    Reopen,
    ExpiringWithin(Duration),
}

fn op() -> impl Strategy<Value = Op> {
    let limit = prop_oneof![Just(None), Just(Some(1u64)), Just(Some(u64::MAX))];
    prop_oneof![
        clock_time().prop_map(Op::SetClock),
        duration().prop_map(Op::Advance),
        (policy(), limit).prop_map(|(p, l)| Op::Issue(p, l)),
        (0..32usize).prop_map(Op::Verify),
        (0..32usize, duration()).prop_map(|(i, d)| Op::Rotate(i, d)),
        (0..32usize).prop_map(Op::Regenerate),
        (0..32usize).prop_map(Op::Revoke),
        (0..32usize).prop_map(Op::Disable),
        Just(Op::RevokeAll),
        policy().prop_map(Op::SetDefault),
        (0..32usize, duration()).prop_map(|(i, d)| Op::Exchange(i, d)),
        Just(Op::Flush),
        Just(Op::Reopen),
        duration().prop_map(Op::ExpiringWithin),
    ]
}

fn open(path: &Path, clock: &ManualClock, max: Option<Duration>) -> KeyRing<FileStore> {
    let mut builder = KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .signing_key(0, [7; 32]);
    if let Some(max) = max {
        builder = builder.max_lifetime(max);
    }
    builder
        .build(FileStore::open(path).expect("the store reopens"))
        .expect("the ring builds on it")
}

/// Whether `now` is within the range of record times, where `state` and
/// `expires_at` can be compared with the clock as it reads.
fn in_record_range(now: OffsetDateTime) -> bool {
    now > datetime!(1678-01-01 0:00 UTC) && now < datetime!(2262-01-01 0:00 UTC)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_keeps_dead_secrets_dead_and_the_store_whole(
        ops in proptest::collection::vec(op(), 1..25),
        max in prop_oneof![Just(None), Just(Some(Duration::MAX)), Just(Some(Duration::days(90)))],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.kw");
        let clock = ManualClock::new(datetime!(2026-01-01 0:00 UTC));
        let mut ring = open(&path, &clock, max);
        // Every secret handed out, with its key, and those that must never
        // work again.
        let mut keys: Vec<(KeyId, String)> = Vec::new();
        let mut dead: HashSet<String> = HashSet::new();
        let kill = |keys: &[(KeyId, String)], dead: &mut HashSet<String>, id: KeyId| {
            dead.extend(keys.iter().filter(|(k, _)| *k == id).map(|(_, s)| s.clone()));
        };
        for op in ops {
            let pick = |i: usize| keys.get(i % keys.len().max(1)).cloned();
            match op {
                Op::SetClock(t) => clock.set(t),
                Op::Advance(d) => clock.advance(d),
                Op::Issue(policy, limit) => {
                    let mut request = NewKey::new("o");
                    if let Some(policy) = policy {
                        request = request.expiry(policy);
                    }
                    if let Some(limit) = limit {
                        request = request.use_limit(limit);
                    }
                    if let Ok(issued) = ring.issue(request) {
                        keys.push((issued.key.id(), issued.secret.expose().to_owned()));
                    }
                }
                Op::Verify(i) => if let Some((id, secret)) = pick(i) {
                    let (state, end, now) = (ring.state(id), ring.expires_at(id), clock.now());
                    if ring.verify(&secret).is_ok() {
                        prop_assert!(!dead.contains(&secret), "a dead secret verified");
                        if in_record_range(now) {
                            prop_assert_eq!(state, Some(KeyState::Active));
                            prop_assert!(end.is_none_or(|end| now < end), "verified at {} past its end {:?}", now, end);
                        }
                    }
                },
                Op::Rotate(i, grace) => if let Some((id, _)) = pick(i)
                    && let Ok(next) = ring.rotate(id, grace)
                {
                    keys.push((next.key.id(), next.secret.expose().to_owned()));
                },
                Op::Regenerate(i) => if let Some((id, _)) = pick(i)
                    && let Ok(next) = ring.regenerate(id)
                {
                    kill(&keys, &mut dead, id);
                    keys.push((id, next.secret.expose().to_owned()));
                },
                Op::Revoke(i) => if let Some((id, _)) = pick(i)
                    && ring.revoke(id, "compromised").is_ok()
                {
                    kill(&keys, &mut dead, id);
                },
                Op::Disable(i) => if let Some((id, _)) = pick(i) {
                    let _ = ring.disable(id);
                },
                Op::RevokeAll => if ring.revoke_all().is_ok() {
                    dead.extend(keys.iter().map(|(_, s)| s.clone()));
                },
                Op::SetDefault(policy) => {
                    let _ = ring.set_default_expiry(policy.unwrap_or(ExpiryPolicy::Never));
                }
                Op::Exchange(i, ttl) => if let Some((id, secret)) = pick(i)
                    && let Ok(token) = ring.exchange(&secret, ttl)
                {
                    prop_assert!(!dead.contains(&secret), "a dead secret was exchanged");
                    let before = clock.now();
                    clock.advance(ttl.clamp(Duration::ZERO, Duration::hours(2)) / 2);
                    let (state, now) = (ring.state(id), clock.now());
                    if let Ok(claims) = ring.verify_access_token_strict(token.expose()) {
                        prop_assert_eq!(state, Some(KeyState::Active));
                        prop_assert!(now < claims.expires_at);
                    }
                    clock.set(before);
                },
                Op::Flush => { let _ = ring.flush(); }
                Op::Reopen => {
                    drop(ring);
                    ring = open(&path, &clock, max);
                }
                Op::ExpiringWithin(window) => { let _ = ring.expiring_within(window); }
            }
        }

        let mut export = Vec::new();
        ring.store().export(&mut export).expect("the store exports");
        drop(ring);
        let ring = open(&path, &clock, max);
        let read = |ring: &KeyRing<FileStore>| -> Vec<_> {
            keys.iter()
                .map(|(id, _)| (ring.state(*id), ring.expires_at(*id), ring.get(*id)))
                .collect()
        };
        let before = read(&ring);
        let other = tempfile::tempdir().unwrap();
        let copy = other.path().join("keys.kw");
        let target = FileStore::open(&copy).unwrap();
        if let Err(e) = target.import(&export[..], ImportMode::Replace) {
            return Err(TestCaseError::fail(format!("the export does not import: {e}")));
        }
        drop(target);
        prop_assert_eq!(before, read(&open(&copy, &clock, max)));
    }
}
