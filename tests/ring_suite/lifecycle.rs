//! Acceptance tests of the lifecycle issue, through the public API only:
//! rotate, regenerate, disable / enable, revoke, delete, revoke_owner,
//! revoke_all, owner_password_expired, set_default_expiry, idle timeouts,
//! usage persistence, use limits, expiring_within, update and events.
//!
//! Time is driven by a `ManualClock` everywhere. Wrong secrets and unknown
//! ids are forged from the documented key layout: `<prefix>_`, version `1`,
//! 11 id, 24 secret and 6 checksum characters, the checksum being CRC32 of
//! everything before it as fixed-width base62.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyward::time::macros::datetime;
use keyward::time::{Duration, OffsetDateTime};
use keyward::*;

use crate::stores::{TestStore, fresh_store};

/// The reads of a test store that wraps another in `inner` and changes
/// only its writes: `lookup`, `list` and `load_settings`, passed through.
macro_rules! inner_reads {
    () => {
        fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
            self.inner.lookup(id)
        }
        fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
            self.inner.list(owner)
        }
        fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
            self.inner.load_settings()
        }
    };
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const PREFIX: &str = "acme";
const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 11;
const SECRET_LEN: usize = 24;
const CHECKSUM_LEN: usize = 6;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const NS: Duration = Duration::NANOSECOND;

/// The id part of a key string of [`PREFIX`].
fn id_part(key: &str) -> &str {
    let start = PREFIX.len() + 2;
    &key[start..start + ID_LEN]
}

/// The secret part of a key string of [`PREFIX`].
fn secret_part(key: &str) -> &str {
    let start = PREFIX.len() + 2 + ID_LEN;
    &key[start..start + SECRET_LEN]
}

/// A well-formed key string (valid checksum) of [`PREFIX`] from its parts.
fn forge(id: &str, secret: &str) -> String {
    assert_eq!(id.len(), ID_LEN);
    assert_eq!(secret.len(), SECRET_LEN);
    let checked = format!("{PREFIX}_1{id}{secret}");
    let encoded = base62::encode(crc32fast::hash(checked.as_bytes()));
    format!("{checked}{encoded:0>CHECKSUM_LEN$}")
}

/// The same key with a secret that differs from the real one everywhere.
fn wrong_secret(key: &str) -> String {
    let other: String = secret_part(key)
        .chars()
        .map(|c| {
            let i = BASE62.find(c).expect("secret is base62");
            BASE62.as_bytes()[(i + 1) % 62] as char
        })
        .collect();
    forge(id_part(key), &other)
}

/// A well-formed key whose id the ring never issued.
fn never_issued<S: KeyStore>(ring: &KeyRing<S>, like: &str) -> String {
    let mut raw = id_part(like).parse::<KeyId>().unwrap().as_u64();
    loop {
        raw = raw.wrapping_add(0x9E37_79B9_7F4A_7C15);
        if ring.store().lookup(KeyId::from_u64(raw)).is_none() {
            return forge(&KeyId::from_u64(raw).to_string(), secret_part(like));
        }
    }
}

fn clocked(clock: &ManualClock) -> KeyRing<TestStore> {
    KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(fresh_store())
        .expect("ring builds")
}

fn ring_with_default(clock: &ManualClock, default: ExpiryPolicy) -> KeyRing<TestStore> {
    KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .default_expiry(default)
        .flush_interval(None)
        .build(fresh_store())
        .expect("ring builds")
}

/// The verification outcome without the `Verified` value.
fn check<S: KeyStore>(ring: &KeyRing<S>, key: &Issued) -> Result<(), VerifyError> {
    ring.verify(key.secret.expose()).map(|_| ())
}

/// Polls `done` every 10 ms for at most 5 s, then fails with `what`: a
/// bounded wait for the background threads (which tick every second, or
/// every 50 ms in these tests), not a timing assertion.
fn within_5s(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !done() {
        assert!(std::time::Instant::now() < give_up, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A ring on `store` at `clock`, flushing every `flush` (or only when
/// asked), with every event kept in the log returned.
fn logged<S: KeyStore + 'static>(
    store: S,
    clock: &ManualClock,
    flush: Option<std::time::Duration>,
) -> (KeyRing<S>, Arc<EventLog>) {
    let log = Arc::new(EventLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .events(Arc::clone(&log))
        .flush_interval(flush)
        .build(store)
        .unwrap();
    (ring, log)
}

/// Two rings on `store`: `a` without background threads, `b` with them,
/// flushing every 50 ms.
fn two_rings<S: KeyStore + 'static>(
    store: &Arc<S>,
    clock: &ManualClock,
) -> (KeyRing<Arc<S>>, KeyRing<Arc<S>>) {
    let build = |flush| {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(flush)
            .build(Arc::clone(store))
            .unwrap()
    };
    (
        build(None),
        build(Some(std::time::Duration::from_millis(50))),
    )
}

fn revoked(at: OffsetDateTime, reason: &str) -> Status {
    Status::Revoked {
        at,
        reason: reason.to_owned(),
    }
}

fn contact() -> Contact {
    Contact::new("Ada", "Lovelace", "ada", "ada@example.com")
}

/// The record as the store holds it (not the live view of `get`).
fn stored<S: KeyStore>(ring: &KeyRing<S>, id: KeyId) -> Key {
    ring.store()
        .lookup(id)
        .expect("key is stored")
        .key()
        .clone()
}

// ---------------------------------------------------------------------------
// Rotate
// ---------------------------------------------------------------------------

#[test]
fn rotate_issues_a_new_key_that_inherits_the_settings() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let scopes = ScopeSet::parse(["invoices:read", "customers:*"]).unwrap();
    let old = ring
        .issue(
            NewKey::new("acct_1")
                .name("nightly export")
                .description("exports invoices every night")
                .contact(contact())
                .scopes(scopes.clone())
                .metadata("team", "billing")
                .metadata("env", "prod")
                .expiry(ExpiryPolicy::days(30)),
        )
        .unwrap();
    clock.advance(Duration::days(10));
    let new = ring.rotate(old.key.id(), Duration::hours(1)).unwrap();

    assert_ne!(new.key.id(), old.key.id(), "a rotation keeps the id");
    assert_ne!(
        secret_part(new.secret.expose()),
        secret_part(old.secret.expose()),
        "a rotation keeps the secret"
    );
    assert_eq!(id_part(new.secret.expose()), new.key.id().to_string());
    let k = &new.key;
    assert_eq!(k.name(), "nightly export");
    assert_eq!(k.description(), Some("exports invoices every night"));
    assert_eq!(k.owner(), "acct_1");
    assert_eq!(k.contact(), Some(&contact()));
    assert_eq!(k.scopes(), &scopes);
    assert_eq!(k.metadata(), old.key.metadata());
    assert_eq!(k.metadata().len(), 2);
    assert_eq!(k.created_at(), T0 + Duration::days(10));
    assert_eq!(k.status(), Status::Active);
    assert_eq!(k.uses(), 0);
    // An own-policy key hands its deadline on unchanged.
    assert_eq!(k.expiry(), Some(ExpiryPolicy::days(30)));
    assert_eq!(k.own_deadline(), Some(T0 + Duration::days(30)));
    assert_eq!(ring.expires_at(k.id()), Some(T0 + Duration::days(30)));
    // The stored record is the returned one.
    assert_eq!(&stored(&ring, k.id()), k);

    let verified = ring.verify(new.secret.expose()).unwrap();
    assert_eq!(verified.id(), k.id());
    assert_eq!(verified.owner(), "acct_1");
    assert_eq!(verified.scopes(), &scopes);

    clock.set(T0 + Duration::days(30) - NS);
    assert_eq!(check(&ring, &new), Ok(()));
    clock.set(T0 + Duration::days(30));
    assert_eq!(check(&ring, &new), Err(VerifyError::Expired));
}

#[test]
fn rotate_of_a_default_governed_key_stays_default_governed() {
    let clock = ManualClock::new(T0);
    let ring = ring_with_default(&clock, ExpiryPolicy::days(30));
    let old = ring.issue(NewKey::new("o")).unwrap();
    clock.advance(Duration::days(10));
    let new = ring.rotate(old.key.id(), Duration::ZERO).unwrap();
    assert_eq!(new.key.expiry(), None);
    assert_eq!(new.key.own_deadline(), None);
    ring.set_default_expiry(ExpiryPolicy::days(60)).unwrap();
    assert_eq!(
        ring.expires_at(new.key.id()),
        Some(T0 + Duration::days(70)),
        "the successor follows the ring default"
    );
}

#[test]
fn rotate_links_both_records() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring.issue(NewKey::new("o")).unwrap();
    clock.advance(Duration::hours(5));
    let new = ring.rotate(old.key.id(), Duration::hours(2)).unwrap();
    let grace_end = T0 + Duration::hours(7);

    for old_record in [ring.get(old.key.id()).unwrap(), stored(&ring, old.key.id())] {
        let link = old_record
            .rotation()
            .expect("the old key has rotation links");
        assert_eq!(link.rotated_to, Some(new.key.id()));
        assert_eq!(link.rotated_from, None);
        assert_eq!(link.grace_until, Some(grace_end));
    }
    for new_record in [
        new.key.clone(),
        ring.get(new.key.id()).unwrap(),
        stored(&ring, new.key.id()),
    ] {
        let link = new_record
            .rotation()
            .expect("the new key has rotation links");
        assert_eq!(link.rotated_from, Some(old.key.id()));
        assert_eq!(link.rotated_to, None);
        assert_eq!(link.grace_until, None);
    }
}

#[test]
fn rotated_key_works_until_exactly_the_end_of_the_grace() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring.issue(NewKey::new("o")).unwrap();
    let t = T0 + Duration::hours(1);
    clock.set(t);
    let grace = Duration::hours(2);
    let new = ring.rotate(old.key.id(), grace).unwrap();
    assert_eq!(ring.expires_at(old.key.id()), Some(t + grace));
    assert_eq!(ring.expires_at(new.key.id()), None);

    assert_eq!(check(&ring, &old), Ok(()));
    clock.set(t + grace - NS);
    assert_eq!(
        check(&ring, &old),
        Ok(()),
        "old key refused before its grace ended"
    );
    assert_eq!(ring.state(old.key.id()), Some(KeyState::Active));
    clock.set(t + grace);
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    assert_eq!(ring.state(old.key.id()), Some(KeyState::Expired));
    assert_eq!(check(&ring, &new), Ok(()));
    clock.advance(Duration::days(365));
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    assert_eq!(check(&ring, &new), Ok(()));
}

#[test]
fn rotate_with_zero_grace_ends_the_old_key_at_once() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring.issue(NewKey::new("o")).unwrap();
    clock.advance(Duration::minutes(3));
    let new = ring.rotate(old.key.id(), Duration::ZERO).unwrap();
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    assert_eq!(
        ring.verify(&wrong_secret(old.secret.expose())).unwrap_err(),
        VerifyError::Invalid
    );
    assert_eq!(check(&ring, &new), Ok(()));
    assert_eq!(
        ring.expires_at(old.key.id()),
        Some(T0 + Duration::minutes(3))
    );
}

#[test]
fn old_keys_own_expiry_caps_the_grace() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(3)))
        .unwrap();
    let deadline = T0 + Duration::days(3);
    clock.set(T0 + Duration::days(2)); // one day left
    let new = ring.rotate(old.key.id(), Duration::days(7)).unwrap();
    assert_eq!(
        ring.get(old.key.id())
            .unwrap()
            .rotation()
            .unwrap()
            .grace_until,
        Some(deadline)
    );
    assert_eq!(ring.expires_at(old.key.id()), Some(deadline));

    clock.set(deadline - NS);
    assert_eq!(check(&ring, &old), Ok(()));
    clock.set(deadline);
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    clock.set(T0 + Duration::days(9) - NS); // what the grace alone would allow
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    // The successor inherited the same deadline.
    assert_eq!(check(&ring, &new), Err(VerifyError::Expired));
}

#[test]
fn rotate_refuses_revoked_deleted_and_already_rotated_keys_and_negative_grace() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);

    let gone = ring.issue(NewKey::new("o")).unwrap();
    ring.revoke(gone.key.id(), "leaked").unwrap();
    assert!(matches!(
        ring.rotate(gone.key.id(), Duration::hours(1)),
        Err(Error::Revoked(id)) if id == gone.key.id()
    ));

    let deleted = ring.issue(NewKey::new("o")).unwrap();
    ring.delete(deleted.key.id()).unwrap();
    assert!(matches!(
        ring.rotate(deleted.key.id(), Duration::hours(1)),
        Err(Error::NotFound(id)) if id == deleted.key.id()
    ));

    let once = ring.issue(NewKey::new("o")).unwrap();
    let successor = ring.rotate(once.key.id(), Duration::hours(1)).unwrap();
    let before = ring.store().list(None).unwrap().len();
    assert!(matches!(
        ring.rotate(once.key.id(), Duration::hours(1)),
        Err(Error::AlreadyRotated(id)) if id == once.key.id()
    ));
    // Also after the grace ended.
    clock.advance(Duration::hours(2));
    assert!(matches!(
        ring.rotate(once.key.id(), Duration::ZERO),
        Err(Error::AlreadyRotated(id)) if id == once.key.id()
    ));
    assert_eq!(
        ring.store().list(None).unwrap().len(),
        before,
        "a refused rotation added a key"
    );
    // The successor itself can be rotated.
    ring.rotate(successor.key.id(), Duration::ZERO).unwrap();

    let fresh = ring.issue(NewKey::new("o")).unwrap();
    assert!(matches!(
        ring.rotate(fresh.key.id(), -Duration::SECOND),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        ring.rotate(fresh.key.id(), -NS),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(ring.get(fresh.key.id()).unwrap().rotation(), None);
    assert_eq!(check(&ring, &fresh), Ok(()));
}

#[test]
fn rotate_carries_remaining_uses_over() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring.issue(NewKey::new("o").use_limit(5)).unwrap();
    assert_eq!(check(&ring, &old), Ok(()));
    assert_eq!(check(&ring, &old), Ok(()));
    let new = ring.rotate(old.key.id(), Duration::ZERO).unwrap();
    assert_eq!(new.key.use_limit(), Some(3));
    assert_eq!(new.key.uses(), 0);
    for _ in 0..3 {
        assert_eq!(check(&ring, &new), Ok(()));
    }
    assert_eq!(check(&ring, &new), Err(VerifyError::UsageExceeded));
}

/// A rotated key with a use limit ended at the rotating ring's reading of
/// the clock, and `verify` refuses it as expired whatever the clock says
/// (its successor holds its uses). On a clock before that reading (another
/// ring's clock behind, or this one stepped back), `state` and the state
/// filters must say what `verify` does: expired, not active.
#[test]
fn a_rotated_limited_key_is_expired_on_a_clock_behind_the_rotation() {
    let ahead = ManualClock::new(T0 + Duration::hours(1));
    let behind = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let build = |clock: &ManualClock| {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap()
    };
    let (a, b) = (build(&ahead), build(&behind));
    let old = a.issue(NewKey::new("o").use_limit(5)).unwrap();
    let id = old.key.id();
    let new = a.rotate(id, Duration::hours(1)).unwrap();
    // Ring B's clock is an hour behind ring A's; then ring A's steps back
    // as far.
    for (ring, clock) in [(&b, &behind), (&a, &ahead)] {
        clock.set(T0);
        assert_eq!(check(ring, &old), Err(VerifyError::Expired));
        assert_eq!(ring.state(id), Some(KeyState::Expired));
        assert_eq!(listed(ring, KeyState::Active), vec![new.key.id()]);
        assert_eq!(listed(ring, KeyState::Expired), vec![id]);
    }
    assert_eq!(a.get(id).unwrap().uses(), 0, "a refused use was spent");
}

/// A key with a use limit hands its remaining uses to its successor and
/// stops at once, whatever grace the rotation asks for (a grace would let
/// both spend the same uses): its end, as `expires_at` and its rotation
/// record give it, is the rotation, not the grace asked for.
#[test]
fn a_rotated_limited_key_ends_at_the_rotation_whatever_the_grace() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring.issue(NewKey::new("o").use_limit(5)).unwrap();
    let id = old.key.id();
    ring.rotate(id, Duration::hours(1)).unwrap();
    assert_eq!(ring.expires_at(id), Some(T0));
    let rotation = ring.get(id).unwrap().rotation().unwrap();
    assert_eq!(rotation.grace_until, Some(T0));
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
}

/// A key whose every use is spent has nothing to hand on: `rotate` refuses
/// it (as its docs say) and changes nothing, rather than give a successor
/// unlimited uses or none.
#[test]
fn rotate_refuses_a_key_whose_uses_are_spent() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let spent = ring.issue(NewKey::new("o").use_limit(2)).unwrap();
    assert_eq!(check(&ring, &spent), Ok(()));
    assert_eq!(check(&ring, &spent), Ok(()));
    let before = ring.store().list(None).unwrap().len();
    assert!(matches!(
        ring.rotate(spent.key.id(), Duration::hours(1)),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(ring.store().list(None).unwrap().len(), before);
    assert_eq!(ring.get(spent.key.id()).unwrap().rotation(), None);
    assert_eq!(check(&ring, &spent), Err(VerifyError::UsageExceeded));
}

// ---------------------------------------------------------------------------
// Regenerate
// ---------------------------------------------------------------------------

/// SPEC 6, "regenerate (new secret, same record ...)": everything but the
/// secret is kept, the scopes above all (a regenerated key given more than
/// it held would pass every check of its new secret), and the usage, so
/// regenerating does not refill a use limit. Compared in the serialized
/// form, which names every field of the record; only `tokens_after` (the
/// cut of the old secret's access tokens) may change.
#[test]
fn regenerate_keeps_the_id_and_kills_the_old_secret_at_once() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring
        .issue(
            NewKey::new("o")
                .name("ci")
                .description("deploys")
                .contact(contact())
                .scopes(ScopeSet::parse(["invoices:read"]).unwrap())
                .metadata("team", "billing")
                .use_limit(10)
                .expiry(ExpiryPolicy::days(30)),
        )
        .unwrap();
    assert_eq!(check(&ring, &old), Ok(()));
    clock.advance(Duration::hours(1));
    let before = ring.get(old.key.id()).unwrap();
    let new = ring.regenerate(old.key.id()).unwrap();
    let fields = |key: &Key| {
        let mut json = serde_json::to_value(key).unwrap();
        json.as_object_mut().unwrap().remove("tokens_after");
        json
    };
    assert_eq!(fields(&new.key), fields(&before));
    assert_eq!(new.key.uses(), 1);

    assert_eq!(new.key.id(), old.key.id());
    assert_eq!(id_part(new.secret.expose()), old.key.id().to_string());
    assert_ne!(
        secret_part(new.secret.expose()),
        secret_part(old.secret.expose())
    );
    assert_eq!(new.key.name(), "ci");
    assert_eq!(new.key.created_at(), T0);
    assert_eq!(new.key.own_deadline(), Some(T0 + Duration::days(30)));

    assert_eq!(check(&ring, &old), Err(VerifyError::Invalid));
    assert_eq!(ring.verify(new.secret.expose()).unwrap().id(), old.key.id());
    assert_eq!(check(&ring, &old), Err(VerifyError::Invalid));
    assert_eq!(ring.store().list(None).unwrap().len(), 1);
}

#[test]
fn regenerate_refuses_revoked_and_deleted_keys() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o")).unwrap();
    ring.revoke(key.key.id(), "leaked").unwrap();
    assert!(matches!(
        ring.regenerate(key.key.id()),
        Err(Error::Revoked(id)) if id == key.key.id()
    ));
    assert_eq!(check(&ring, &key), Err(VerifyError::Revoked));

    let other = ring.issue(NewKey::new("o")).unwrap();
    ring.delete(other.key.id()).unwrap();
    assert!(matches!(
        ring.regenerate(other.key.id()),
        Err(Error::NotFound(id)) if id == other.key.id()
    ));
}

/// A ring at `clock` (with `default` as its default expiry, if given) that
/// keeps every event in the log returned.
fn evented(
    clock: &ManualClock,
    default: Option<ExpiryPolicy>,
) -> (KeyRing<TestStore>, Arc<EventLog>) {
    let log = Arc::new(EventLog::new());
    let mut builder = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .events(Arc::clone(&log))
        .flush_interval(None);
    if let Some(default) = default {
        builder = builder.default_expiry(default);
    }
    (builder.build(fresh_store()).expect("ring builds"), log)
}

/// Regenerates `key`, which must be refused, and returns the refusal once
/// it is checked to have changed nothing: the stored record (its hash
/// included) is the same, the key's secret gets the same answer from
/// `verify`, and no event was sent.
#[track_caller]
fn refused_regenerate<S: KeyStore>(ring: &KeyRing<S>, log: &EventLog, key: &Issued) -> Error {
    let id = key.key.id();
    let answer = check(ring, key);
    let record = ring.store().lookup(id).expect("key is stored");
    let sent = log.events().len();
    let refusal = match ring.regenerate(id) {
        Ok(_) => panic!("regenerate of key {id} handed out a new secret ({answer:?} before)"),
        Err(e) => e,
    };
    let kinds: Vec<EventKind> = log.events()[sent..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, vec![], "a refused regenerate sent events");
    assert_eq!(
        *ring.store().lookup(id).expect("key is stored"),
        *record,
        "a refused regenerate changed the record"
    );
    assert_eq!(
        check(ring, key),
        answer,
        "a refused regenerate changed the answer to the key's secret"
    );
    refusal
}

/// `Error::Expired` for the key `key`, with its documented message.
#[track_caller]
fn assert_expired(refusal: &Error, key: &Issued) {
    let id = key.key.id();
    assert!(
        matches!(refusal, Error::Expired(e) if *e == id),
        "refused with {refusal:?}, not Expired({id})"
    );
    assert_eq!(refusal.to_string(), format!("key {id} has expired"));
}

/// A key past its own deadline (a lifetime, an instant) is not given a new
/// secret: it would never verify. Until the deadline it is.
#[test]
fn regenerate_refuses_a_key_past_its_own_lifetime() {
    let clock = ManualClock::new(T0);
    let (ring, log) = evented(&clock, None);
    let lifetime = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(3)))
        .unwrap();
    let until = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::At(T0 + Duration::days(3))))
        .unwrap();
    let before = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(3)))
        .unwrap();
    clock.set(T0 + Duration::days(3) - NS);
    let renewed = ring.regenerate(before.key.id()).unwrap();
    assert_eq!(check(&ring, &renewed), Ok(()));

    clock.set(T0 + Duration::days(3));
    for key in [&lifetime, &until, &renewed] {
        assert_eq!(check(&ring, key), Err(VerifyError::Expired));
        assert_expired(&refused_regenerate(&ring, &log, key), key);
    }
    clock.advance(Duration::days(365));
    assert_expired(&refused_regenerate(&ring, &log, &lifetime), &lifetime);
}

/// The same for a key governed by the ring's default, past its lifetime
/// or its fixed instant; and a later change of the default, which does not
/// revive such a key, does not let it be regenerated either.
#[test]
fn regenerate_refuses_a_key_past_the_ring_defaults_lifetime() {
    let clock = ManualClock::new(T0);
    let (ring, log) = evented(&clock, Some(ExpiryPolicy::days(30)));
    let key = ring.issue(NewKey::new("o")).unwrap();
    clock.set(T0 + Duration::days(30));
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &key), &key);

    clock.set(T0 + Duration::days(40));
    ring.set_default_expiry(ExpiryPolicy::days(90)).unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &key), &key);
    ring.set_default_expiry(ExpiryPolicy::Never).unwrap();
    assert_expired(&refused_regenerate(&ring, &log, &key), &key);

    // A fixed default instant that has passed.
    let end = T0 + Duration::days(50);
    ring.set_default_expiry(ExpiryPolicy::At(end)).unwrap();
    let fixed = ring.issue(NewKey::new("o")).unwrap();
    clock.set(end);
    assert_eq!(check(&ring, &fixed), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &fixed), &fixed);
}

/// A key that expired under a default since replaced is refused by
/// `verify` whatever the clock reads (the replaced default's bar says so),
/// also on a clock behind the instant it expired at: another ring's clock
/// that runs behind the one that changed the default, or a clock stepped
/// back. Regenerate judges it as `verify` does, and so does `state`.
#[test]
fn regenerate_refuses_a_key_expired_under_a_replaced_default_on_a_clock_behind() {
    let clock = ManualClock::new(T0);
    let (ring, log) = evented(&clock, Some(ExpiryPolicy::days(30)));
    let key = ring.issue(NewKey::new("o")).unwrap();
    clock.set(T0 + Duration::days(31));
    ring.set_default_expiry(ExpiryPolicy::days(90)).unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    // Behind the instant the key expired at (T0 + 30 days).
    clock.set(T0 + Duration::days(29));
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &key), &key);
    assert_eq!(ring.state(key.key.id()), Some(KeyState::Expired));
    // Nor does a rotation bring it back through a successor.
    match ring.rotate(key.key.id(), Duration::ZERO) {
        Err(refusal) => assert_expired(&refusal, &key),
        Ok(successor) => panic!(
            "rotate gave the expired key a successor, which verify answers {:?}",
            check(&ring, &successor)
        ),
    }
}

/// An idle timeout, its own or the ring default's, ends a key as a
/// deadline does.
#[test]
fn regenerate_refuses_a_key_idle_past_its_idle_timeout() {
    let clock = ManualClock::new(T0);
    let (ring, log) = evented(&clock, Some(ExpiryPolicy::Idle(Duration::days(5))));
    let own = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::hours(1))))
        .unwrap();
    let by_default = ring.issue(NewKey::new("o")).unwrap();
    clock.set(T0 + Duration::minutes(40));
    assert_eq!(check(&ring, &own), Ok(()));
    clock.set(T0 + Duration::minutes(100));
    assert_eq!(check(&ring, &own), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &own), &own);

    clock.set(T0 + Duration::days(5));
    assert_eq!(check(&ring, &by_default), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &by_default), &by_default);
}

/// A rotated key past the end of its grace (a zero grace ends it at once)
/// is refused; its successor is not touched.
#[test]
fn regenerate_refuses_a_rotated_key_past_its_grace() {
    let clock = ManualClock::new(T0);
    let (ring, log) = evented(&clock, None);
    let old = ring.issue(NewKey::new("o")).unwrap();
    let grace = Duration::hours(2);
    let new = ring.rotate(old.key.id(), grace).unwrap();
    clock.set(T0 + grace);
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &old), &old);
    assert_eq!(check(&ring, &new), Ok(()));

    let at_once = ring.issue(NewKey::new("o")).unwrap();
    let its_new = ring.rotate(at_once.key.id(), Duration::ZERO).unwrap();
    assert_expired(&refused_regenerate(&ring, &log, &at_once), &at_once);
    assert_eq!(check(&ring, &its_new), Ok(()));
}

/// A rotated key with a use limit handed its uses to its successor and
/// ended at once: `verify` refuses it as expired, even on a clock behind
/// the rotation, and so does `regenerate`.
#[test]
fn regenerate_refuses_a_limited_key_that_handed_its_uses_on() {
    let clock = ManualClock::new(T0 + Duration::hours(1));
    let (ring, log) = evented(&clock, None);
    let old = ring.issue(NewKey::new("o").use_limit(5)).unwrap();
    let new = ring.rotate(old.key.id(), Duration::hours(1)).unwrap();
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &old), &old);
    // The clock steps back before the rotation.
    clock.set(T0);
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    assert_expired(&refused_regenerate(&ring, &log, &old), &old);
    assert_eq!(check(&ring, &new), Ok(()));
}

/// A key whose uses are all spent would be refused (`UsageExceeded`)
/// with any new secret: `regenerate` refuses it as `rotate` does, with
/// `InvalidInput`, not as expired (it is not: `state` says used up).
#[test]
fn regenerate_refuses_a_key_whose_uses_are_spent() {
    let clock = ManualClock::new(T0);
    let (ring, log) = evented(&clock, None);
    let spent = ring.issue(NewKey::new("o").use_limit(2)).unwrap();
    assert_eq!(check(&ring, &spent), Ok(()));
    assert_eq!(check(&ring, &spent), Ok(()));
    assert_eq!(check(&ring, &spent), Err(VerifyError::UsageExceeded));
    assert_eq!(ring.state(spent.key.id()), Some(KeyState::UsedUp));
    let refusal = refused_regenerate(&ring, &log, &spent);
    assert!(
        matches!(refusal, Error::InvalidInput(_)),
        "refused with {refusal:?}"
    );
    assert_eq!(
        refusal.to_string(),
        "invalid input: the key's uses are spent; issue a new key"
    );

    // One use left: regenerated, and the use is the new secret's.
    let one_left = ring.issue(NewKey::new("o").use_limit(2)).unwrap();
    assert_eq!(check(&ring, &one_left), Ok(()));
    let renewed = ring.regenerate(one_left.key.id()).unwrap();
    assert_eq!(check(&ring, &renewed), Ok(()));
    assert_eq!(check(&ring, &renewed), Err(VerifyError::UsageExceeded));
}

/// What stays allowed: a rotated key within its grace (the new secret
/// still ends with the grace), the successor of a rotation (before and
/// after its predecessor's grace), and a disabled key (its new secret is
/// disabled too, until enabled) while it has not expired.
#[test]
fn regenerate_of_a_key_in_its_grace_a_successor_or_a_disabled_key_works() {
    let clock = ManualClock::new(T0);
    let (ring, log) = evented(&clock, None);
    let old = ring.issue(NewKey::new("o")).unwrap();
    let grace = Duration::hours(2);
    let new = ring.rotate(old.key.id(), grace).unwrap();
    clock.set(T0 + grace - NS);
    let old2 = ring.regenerate(old.key.id()).unwrap();
    assert_eq!(check(&ring, &old), Err(VerifyError::Invalid));
    assert_eq!(check(&ring, &old2), Ok(()));
    let new2 = ring.regenerate(new.key.id()).unwrap();
    assert_eq!(check(&ring, &new), Err(VerifyError::Invalid));
    assert_eq!(check(&ring, &new2), Ok(()));
    clock.set(T0 + grace);
    assert_eq!(check(&ring, &old2), Err(VerifyError::Expired));
    let new3 = ring.regenerate(new.key.id()).unwrap();
    assert_eq!(check(&ring, &new3), Ok(()));

    let off = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(3)))
        .unwrap();
    ring.disable(off.key.id()).unwrap();
    let off2 = ring.regenerate(off.key.id()).unwrap();
    assert_eq!(check(&ring, &off2), Err(VerifyError::Disabled));
    assert_eq!(check(&ring, &off), Err(VerifyError::Invalid));
    ring.enable(off.key.id()).unwrap();
    assert_eq!(check(&ring, &off2), Ok(()));
    let regenerated = log
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Regenerated)
        .count();
    assert_eq!(regenerated, 4);
}

/// A disabled key past its deadline is expired too (`verify` says
/// disabled, as the status comes first, and would say expired once it is
/// enabled): refused as `rotate` refuses it.
#[test]
fn regenerate_refuses_a_disabled_key_past_its_deadline() {
    let clock = ManualClock::new(T0);
    let (ring, log) = evented(&clock, None);
    let key = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(3)))
        .unwrap();
    ring.disable(key.key.id()).unwrap();
    clock.set(T0 + Duration::days(3));
    assert_eq!(check(&ring, &key), Err(VerifyError::Disabled));
    assert_expired(&refused_regenerate(&ring, &log, &key), &key);
    assert!(matches!(
        ring.rotate(key.key.id(), Duration::ZERO),
        Err(Error::Expired(id)) if id == key.key.id()
    ));
}

// ---------------------------------------------------------------------------
// Disable / enable / revoke
// ---------------------------------------------------------------------------

#[test]
fn disable_and_enable_are_reversible() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o")).unwrap();
    ring.disable(key.key.id()).unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Disabled));
    assert_eq!(ring.get(key.key.id()).unwrap().status(), Status::Disabled);
    assert_eq!(ring.state(key.key.id()), Some(KeyState::Disabled));
    // Disabling again changes nothing.
    ring.disable(key.key.id()).unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Disabled));

    ring.enable(key.key.id()).unwrap();
    assert_eq!(check(&ring, &key), Ok(()));
    assert_eq!(ring.get(key.key.id()).unwrap().status(), Status::Active);
    // Enabling an active key changes nothing.
    ring.enable(key.key.id()).unwrap();
    assert_eq!(check(&ring, &key), Ok(()));
}

/// `disable`: "Disabling a disabled key changes nothing"; `enable`:
/// "Enabling an active key changes nothing". Nothing is written (the
/// store holds the very record it held) and no event is sent, which an
/// audit log would otherwise show as a second switch.
#[test]
fn disabling_a_disabled_key_or_enabling_an_active_one_writes_and_reports_nothing() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged(fresh_store(), &clock, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    let id = key.key.id();
    let unchanged = |what: &str, op: &dyn Fn() -> Result<(), Error>| {
        let (record, events) = (ring.store().lookup(id).unwrap(), log.events().len());
        op().unwrap();
        assert!(
            Arc::ptr_eq(&record, &ring.store().lookup(id).unwrap()),
            "{what} wrote the record"
        );
        assert_eq!(log.events().len(), events, "{what} sent an event");
    };
    unchanged("enable of an active key", &|| ring.enable(id));
    ring.disable(id).unwrap();
    unchanged("disable of a disabled key", &|| ring.disable(id));
    assert_eq!(check(&ring, &key), Err(VerifyError::Disabled));
    ring.enable(id).unwrap();
    assert_eq!(check(&ring, &key), Ok(()));
}

#[test]
fn disabled_is_reported_only_with_the_right_secret() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o")).unwrap();
    ring.disable(key.key.id()).unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Disabled));
    assert_eq!(
        ring.verify(&wrong_secret(key.secret.expose())).unwrap_err(),
        VerifyError::Invalid
    );
}

/// Spec §7: expired, revoked and disabled are reported only once the
/// secret matched, also for a key in more than one of those states at
/// once, and for the states the record does not hold (a revoke-all, the
/// end of a rotation's grace, an idle timeout, the ring default, a spent
/// use limit): with a wrong secret each is `invalid`, as an unknown id is,
/// and the refusal is reported without the key's owner. With the right
/// secret, revoked outranks disabled, which outranks expired and used up.
#[test]
fn every_refusal_by_state_needs_the_right_secret_first() {
    let clock = ManualClock::new(T0);
    let store = fresh_store();
    let log = Arc::new(EventLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .events(Arc::clone(&log))
        .default_expiry(ExpiryPolicy::days(10))
        .flush_interval(None)
        .build(store)
        .unwrap();
    let own_day = NewKey::new("o").expiry(ExpiryPolicy::days(1));
    let issue = |request: NewKey| ring.issue(request).unwrap();

    let disabled_expired = issue(own_day.clone());
    ring.disable(disabled_expired.key.id()).unwrap();
    let revoked_expired = issue(own_day.clone());
    ring.revoke(revoked_expired.key.id(), "left").unwrap();
    let revoked_disabled = issue(own_day);
    ring.disable(revoked_disabled.key.id()).unwrap();
    ring.revoke(revoked_disabled.key.id(), "left").unwrap();
    let spent = || NewKey::new("o").use_limit(1).expiry(ExpiryPolicy::Never);
    let used_up_disabled = issue(spent());
    ring.verify(used_up_disabled.secret.expose()).unwrap();
    ring.disable(used_up_disabled.key.id()).unwrap();
    let used_up = issue(spent());
    ring.verify(used_up.secret.expose()).unwrap();
    let idle = issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::hours(1))));
    let by_default = issue(NewKey::new("o"));
    let rotated = issue(NewKey::new("o").expiry(ExpiryPolicy::days(30)));
    ring.rotate(rotated.key.id(), Duration::hours(1)).unwrap();
    clock.advance(Duration::days(11));
    let cases = [
        (&disabled_expired, VerifyError::Disabled),
        (&revoked_expired, VerifyError::Revoked),
        (&revoked_disabled, VerifyError::Revoked),
        (&used_up_disabled, VerifyError::Disabled),
        (&used_up, VerifyError::UsageExceeded),
        (&idle, VerifyError::Expired),
        (&by_default, VerifyError::Expired),
        (&rotated, VerifyError::Expired),
    ];
    let last_refusal = || {
        let events = log.events();
        let last = events.last().unwrap().clone();
        (last.kind, last.owner)
    };
    let judge = |what: &str, key: &Issued, right: &VerifyError| {
        assert_eq!(
            check(&ring, key).as_ref(),
            Err(right),
            "{what}: right secret"
        );
        assert_eq!(
            ring.verify(&wrong_secret(key.secret.expose())).unwrap_err(),
            VerifyError::Invalid,
            "{what}: a wrong secret learnt the key's state"
        );
        assert_eq!(
            last_refusal(),
            (EventKind::VerifyFailed(VerifyError::Invalid), None),
            "{what}"
        );
        assert_eq!(
            ring.verify(&never_issued(&ring, key.secret.expose()))
                .unwrap_err(),
            VerifyError::Invalid,
            "{what}"
        );
    };
    for (key, right) in &cases {
        judge("before revoke_all", key, right);
    }
    // A revoke-all, which no record holds, outranks every other state.
    let active = issue(NewKey::new("o"));
    ring.revoke_all().unwrap();
    for (key, _) in cases.iter().chain([&(&active, VerifyError::Revoked)]) {
        judge("after revoke_all", key, &VerifyError::Revoked);
    }
}

#[test]
fn revoke_is_irreversible() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o")).unwrap();
    ring.revoke(key.key.id(), "leaked").unwrap();
    assert!(matches!(
        ring.enable(key.key.id()),
        Err(Error::Revoked(id)) if id == key.key.id()
    ));
    assert!(matches!(
        ring.disable(key.key.id()),
        Err(Error::Revoked(id)) if id == key.key.id()
    ));
    assert_eq!(check(&ring, &key), Err(VerifyError::Revoked));
    assert_eq!(
        ring.get(key.key.id()).unwrap().status(),
        revoked(T0, "leaked")
    );

    // A disabled key, once revoked, cannot be enabled either.
    let disabled = ring.issue(NewKey::new("o")).unwrap();
    ring.disable(disabled.key.id()).unwrap();
    ring.revoke(disabled.key.id(), "gone").unwrap();
    assert!(matches!(
        ring.enable(disabled.key.id()),
        Err(Error::Revoked(_))
    ));
    assert_eq!(check(&ring, &disabled), Err(VerifyError::Revoked));
}

#[test]
fn revoke_records_time_and_reason_and_keeps_the_first() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let key = ring.issue(NewKey::new("o")).unwrap();
    let other = ring.issue(NewKey::new("o")).unwrap();
    let at = T0 + Duration::minutes(90);
    clock.set(at);
    ring.revoke(key.key.id(), "leaked in a ci log").unwrap();

    assert_eq!(check(&ring, &key), Err(VerifyError::Revoked));
    assert_eq!(
        ring.verify(&wrong_secret(key.secret.expose())).unwrap_err(),
        VerifyError::Invalid
    );
    assert_eq!(ring.state(key.key.id()), Some(KeyState::Revoked));
    assert_eq!(
        stored(&ring, key.key.id()).status(),
        revoked(at, "leaked in a ci log")
    );

    clock.advance(Duration::days(1));
    ring.revoke(key.key.id(), "second reason").unwrap();
    assert_eq!(
        ring.get(key.key.id()).unwrap().status(),
        revoked(at, "leaked in a ci log"),
        "revoking twice replaced the first reason"
    );
    assert_eq!(check(&ring, &other), Ok(()), "another key was touched");
}

/// A revocation needs a reason: an empty or blank one is refused like one
/// too long (past 256 bytes), for `revoke`, `revoke_owner` and
/// `revoke_leaked`, before anything is written or reported.
#[test]
fn revoke_refuses_an_empty_or_blank_reason() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged(fresh_store(), &clock, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    let events = log.events().len();
    let long = "x".repeat(257);
    for reason in ["", " ", "\t\n ", "\u{3000}", long.as_str()] {
        let refused = |result: Result<Vec<KeyId>, Error>| match result {
            Err(Error::InvalidInput(why)) => why,
            other => panic!("reason {reason:?}: expected a refusal, got {other:?}"),
        };
        let why = refused(ring.revoke(key.key.id(), reason).map(|()| vec![]));
        if reason.len() > 256 {
            assert_eq!(why, "a reason is limited to 256 bytes");
        } else {
            assert_eq!(why, "a revocation needs a reason");
        }
        refused(ring.revoke_owner("o", reason));
        refused(ring.revoke_leaked(key.secret.expose(), reason));
        refused(
            ring.by("admin")
                .revoke(key.key.id(), reason)
                .map(|()| vec![]),
        );
    }
    assert_eq!(check(&ring, &key), Ok(()));
    assert_eq!(stored(&ring, key.key.id()).status(), Status::Active);
    assert_eq!(log.events().len(), events, "a refused revoke reported");
    // At the limit, white space around words and all, it is taken.
    let at_limit = format!(" leaked {} ", "x".repeat(247));
    assert_eq!(at_limit.len(), 256);
    ring.revoke(key.key.id(), &at_limit).unwrap();
    assert_eq!(
        ring.get(key.key.id()).unwrap().status(),
        revoked(T0, &at_limit)
    );
}

/// A reason holding a key or access token is refused by every revocation
/// call, before anything is written or reported (it would be stored in
/// the clear and sent with the `Revoked` event): the key pasted in, or
/// another one.
#[test]
fn revoke_refuses_a_reason_that_holds_a_key() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged(fresh_store(), &clock, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    let other = ring.issue(NewKey::new("p")).unwrap();
    let events = log.events().len();
    for pasted in [&key, &other] {
        let reason = format!("leaked: {}", pasted.secret.expose());
        let refused = |result: Result<Vec<KeyId>, Error>| match result {
            Err(Error::InvalidInput(why)) => assert!(why.starts_with("the reason holds")),
            other => panic!("expected a refusal, got {other:?}"),
        };
        refused(ring.revoke(key.key.id(), &reason).map(|()| vec![]));
        refused(ring.revoke_owner("o", &reason));
        refused(ring.revoke_leaked(key.secret.expose(), &reason));
    }
    assert_eq!(check(&ring, &key), Ok(()));
    assert_eq!(log.events().len(), events, "a refused revoke reported");
    ring.revoke(key.key.id(), &format!("leaked, hint {}", key.key.hint()))
        .unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Revoked));
}

/// `revoke_owner` refuses an owner that no key can have (a pasted key or
/// token, an empty one) before anything is written or reported: the owner
/// goes into the `OwnerRevoked` event even when no key matches.
#[test]
fn revoke_owner_refuses_an_owner_that_holds_a_key() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged(fresh_store(), &clock, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    let events = log.events().len();
    for owner in [key.secret.expose(), ""] {
        match ring.revoke_owner(owner, "offboarded") {
            Err(Error::InvalidInput(why)) => assert!(!why.contains(key.secret.expose())),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        log.events().len(),
        events,
        "a refused revoke_owner reported"
    );
    assert_eq!(
        ring.revoke_owner("o", "offboarded").unwrap(),
        [key.key.id()]
    );
}

/// A key pasted into the actor given to `by` is redacted in the events
/// that name the actor and in `Debug` of the `Acting`; the rest of the
/// actor is kept, and a plain actor is shown as given.
#[test]
fn a_key_in_an_actor_is_redacted() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged(fresh_store(), &clock, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    let pasted = format!("alice {}", key.secret.expose());
    let acting = ring.by(&pasted);
    assert!(!format!("{acting:?}").contains(key.secret.expose()));
    acting.disable(key.key.id()).unwrap();
    let event = log.events().pop().unwrap();
    assert_eq!(event.kind, EventKind::Disabled);
    let shown = event.actor.unwrap();
    assert!(!shown.contains(key.secret.expose()), "{shown}");
    assert_eq!(shown, keyward::redact(&pasted));
    assert!(shown.starts_with("alice "));
    ring.by("bob").enable(key.key.id()).unwrap();
    assert_eq!(log.events().pop().unwrap().actor.as_deref(), Some("bob"));
    assert!(format!("{:?}", ring.by("bob")).contains("\"bob\""));
}

/// The reason is checked first, whatever the key: revoking a revoked key
/// again with a valid reason changes nothing and succeeds, with an invalid
/// one (empty, blank or too long) it is refused, as it is for an unknown
/// id or an owner without keys.
#[test]
fn revoke_checks_the_reason_first_whatever_the_key() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let key = ring.issue(NewKey::new("o")).unwrap();
    ring.revoke(key.key.id(), "leaked").unwrap();
    let long = "x".repeat(257);
    for reason in ["", "  ", long.as_str()] {
        assert!(
            matches!(
                ring.revoke(key.key.id(), reason),
                Err(Error::InvalidInput(_))
            ),
            "revoked key, reason {reason:?}"
        );
        let unknown = KeyId::from_u64(key.key.id().as_u64().wrapping_add(1));
        assert!(
            matches!(ring.revoke(unknown, reason), Err(Error::InvalidInput(_))),
            "unknown key, reason {reason:?}"
        );
        assert!(
            matches!(
                ring.revoke_owner("nobody", reason),
                Err(Error::InvalidInput(_))
            ),
            "owner without keys, reason {reason:?}"
        );
        assert!(
            matches!(
                ring.revoke_leaked("no keys here", reason),
                Err(Error::InvalidInput(_))
            ),
            "text without keys, reason {reason:?}"
        );
    }
    ring.revoke(key.key.id(), "again").unwrap();
    assert_eq!(
        ring.get(key.key.id()).unwrap().status(),
        revoked(T0, "leaked")
    );
    assert_eq!(ring.revoke_owner("o", "again").unwrap(), vec![]);
}

// ---------------------------------------------------------------------------
// Delete
// ---------------------------------------------------------------------------

#[test]
fn deleted_key_is_indistinguishable_from_a_never_issued_one() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o")).unwrap();
    let unknown = never_issued(&ring, key.secret.expose());
    ring.delete(key.key.id()).unwrap();

    let deleted = ring.verify(key.secret.expose()).unwrap_err();
    let forged = ring.verify(&unknown).unwrap_err();
    assert_eq!(deleted, VerifyError::Invalid);
    assert_eq!(deleted, forged);
    assert_eq!(deleted.to_string(), forged.to_string());
    assert_eq!(deleted.code(), forged.code());
    assert_eq!(deleted.http_status(), forged.http_status());
    assert_eq!(ring.get(key.key.id()), None);
    assert_eq!(ring.state(key.key.id()), None);
    assert_eq!(ring.expires_at(key.key.id()), None);
    assert!(ring.store().lookup(key.key.id()).is_none());
    assert!(ring.list(&ListFilter::new()).unwrap().is_empty());
}

#[test]
fn delete_twice_is_not_found() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o")).unwrap();
    ring.delete(key.key.id()).unwrap();
    assert!(matches!(
        ring.delete(key.key.id()),
        Err(Error::NotFound(id)) if id == key.key.id()
    ));
    // A revoked key can still be deleted.
    let revoked = ring.issue(NewKey::new("o")).unwrap();
    ring.revoke(revoked.key.id(), "x").unwrap();
    ring.delete(revoked.key.id()).unwrap();
    assert_eq!(check(&ring, &revoked), Err(VerifyError::Invalid));
}

// ---------------------------------------------------------------------------
// Revoke an owner, revoke everything, password expiry
// ---------------------------------------------------------------------------

#[test]
fn revoke_owner_revokes_only_that_owners_keys() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let alice: Vec<Issued> = (0..4)
        .map(|_| ring.issue(NewKey::new("alice")).unwrap())
        .collect();
    let bob: Vec<Issued> = (0..3)
        .map(|_| ring.issue(NewKey::new("bob")).unwrap())
        .collect();
    // Look-alike owners must not match.
    let alicia = ring.issue(NewKey::new("alice2")).unwrap();
    clock.advance(Duration::hours(1));

    let revoked_ids = ring.revoke_owner("alice", "offboarded").unwrap();
    let mut expected: Vec<KeyId> = alice.iter().map(|k| k.key.id()).collect();
    expected.sort();
    assert_eq!(revoked_ids, expected, "the returned ids, sorted");

    for key in &alice {
        assert_eq!(check(&ring, key), Err(VerifyError::Revoked));
        assert_eq!(
            ring.get(key.key.id()).unwrap().status(),
            revoked(T0 + Duration::hours(1), "offboarded")
        );
    }
    for key in bob.iter().chain([&alicia]) {
        assert_eq!(check(&ring, key), Ok(()));
        assert_eq!(ring.get(key.key.id()).unwrap().status(), Status::Active);
    }
    // Again: nothing left to revoke.
    assert_eq!(ring.revoke_owner("alice", "again").unwrap(), vec![]);
    assert_eq!(ring.revoke_owner("nobody", "x").unwrap(), vec![]);
}

#[test]
fn revoke_all_revokes_existing_keys_and_later_keys_work() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let a = ring.issue(NewKey::new("alice")).unwrap();
    let b = ring
        .issue(NewKey::new("bob").expiry(ExpiryPolicy::days(30)))
        .unwrap();
    assert_eq!(ring.settings().epoch(), 0);
    assert_eq!(ring.settings().revoked_all_at(), None);
    clock.advance(Duration::hours(1));
    ring.revoke_all().unwrap();

    for key in [&a, &b] {
        assert_eq!(check(&ring, key), Err(VerifyError::Revoked));
        assert_eq!(ring.state(key.key.id()), Some(KeyState::Revoked));
        assert!(matches!(
            ring.rotate(key.key.id(), Duration::ZERO),
            Err(Error::Revoked(_))
        ));
        assert!(matches!(
            ring.regenerate(key.key.id()),
            Err(Error::Revoked(_))
        ));
    }
    assert_eq!(ring.settings().epoch(), 1);
    assert_eq!(
        ring.settings().revoked_all_at(),
        Some(T0 + Duration::hours(1))
    );

    let c = ring.issue(NewKey::new("alice")).unwrap();
    assert_eq!(check(&ring, &c), Ok(()));
    assert_eq!(ring.state(c.key.id()), Some(KeyState::Active));

    clock.advance(Duration::hours(1));
    ring.revoke_all().unwrap();
    assert_eq!(check(&ring, &c), Err(VerifyError::Revoked));
    assert_eq!(ring.settings().epoch(), 2);
    assert_eq!(
        ring.settings().revoked_all_at(),
        Some(T0 + Duration::hours(2))
    );
    assert_eq!(
        ring.store().load_settings().unwrap().unwrap(),
        ring.settings(),
        "the settings in force are the stored ones"
    );
}

#[test]
fn revoke_all_boundary_at_the_same_instant() {
    let t = T0 + Duration::days(3);
    let clock = ManualClock::new(t - NS);
    let ring = clocked(&clock);
    let before = ring.issue(NewKey::new("o")).unwrap();
    clock.set(t);
    ring.revoke_all().unwrap();
    let after = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(before.key.created_at(), t - NS);
    assert_eq!(after.key.created_at(), t);

    assert_eq!(check(&ring, &before), Err(VerifyError::Revoked));
    assert_eq!(check(&ring, &after), Ok(()));
    assert_eq!(ring.settings().epoch(), 1);
    assert_eq!(ring.settings().revoked_all_at(), Some(t));
}

/// After `revoke_all` every existing key is revoked, whatever its status:
/// `state()` and `enable()` say so, and `verify` should too. A key that was
/// disabled before the revoke-all is reported as `Disabled` by `verify`,
/// because `KeyRing::check` looks at the record's status before the epoch.
#[test]
fn revoke_all_reports_a_disabled_key_as_revoked() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o")).unwrap();
    ring.disable(key.key.id()).unwrap();
    ring.revoke_all().unwrap();
    assert_eq!(ring.state(key.key.id()), Some(KeyState::Revoked));
    assert!(matches!(ring.enable(key.key.id()), Err(Error::Revoked(_))));
    assert_eq!(
        check(&ring, &key),
        Err(VerifyError::Revoked),
        "a key revoked by revoke_all verifies as disabled"
    );
}

/// A store that counts the writes a ring makes.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryStore,
    inserts: AtomicUsize,
    replaces: AtomicUsize,
    removes: AtomicUsize,
    settings_saves: AtomicUsize,
}

impl CountingStore {
    fn writes(&self) -> [usize; 4] {
        [
            self.inserts.load(Ordering::SeqCst),
            self.replaces.load(Ordering::SeqCst),
            self.removes.load(Ordering::SeqCst),
            self.settings_saves.load(Ordering::SeqCst),
        ]
    }
}

impl KeyStore for CountingStore {
    inner_reads!();
    /// Counts every change of every batch by kind.
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        for change in &changes {
            let counter = match change {
                Change::Insert(_) => &self.inserts,
                Change::Replace(_) | Change::ReplaceIf { .. } => &self.replaces,
                Change::Remove(_) => &self.removes,
                Change::Settings(_) | Change::SettingsIf { .. } => &self.settings_saves,
                _ => unreachable!("no other change kinds exist"),
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.apply(changes)
    }
}

#[test]
fn revoke_all_is_one_settings_write_not_one_write_per_key() {
    let clock = ManualClock::new(T0);
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(CountingStore::default())
        .unwrap();
    let keys: Vec<Issued> = (0..1_000)
        .map(|i| ring.issue(NewKey::new(format!("owner_{}", i % 7))).unwrap())
        .collect();
    // Used keys have usage to write back: revoke_all must not write it either.
    for key in keys.iter().step_by(10) {
        assert_eq!(check(&ring, key), Ok(()));
    }
    let [inserts, replaces, removes, saves] = ring.store().writes();
    assert_eq!(inserts, 1_000);

    ring.revoke_all().unwrap();
    let after = ring.store().writes();
    assert_eq!(after[0] - inserts, 0, "revoke_all inserted records");
    assert_eq!(after[1] - replaces, 0, "revoke_all replaced records");
    assert_eq!(after[2] - removes, 0, "revoke_all removed records");
    assert_eq!(after[3] - saves, 1, "revoke_all saves the settings once");

    for key in keys.iter().step_by(97) {
        assert_eq!(check(&ring, key), Err(VerifyError::Revoked));
    }
}

#[test]
fn owner_password_expired_revokes_the_owners_keys_when_configured() {
    let clock = ManualClock::new(T0);
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .revoke_on_password_expiry(true)
        .flush_interval(None)
        .build(fresh_store())
        .unwrap();
    let alice = [
        ring.issue(NewKey::new("alice")).unwrap(),
        ring.issue(NewKey::new("alice")).unwrap(),
    ];
    let bob = ring.issue(NewKey::new("bob")).unwrap();
    clock.advance(Duration::minutes(5));

    let got = ring.owner_password_expired("alice").unwrap();
    let mut expected: Vec<KeyId> = alice.iter().map(|k| k.key.id()).collect();
    expected.sort();
    assert_eq!(got, expected);
    for key in &alice {
        assert_eq!(check(&ring, key), Err(VerifyError::Revoked));
        assert_eq!(
            ring.get(key.key.id()).unwrap().status(),
            revoked(T0 + Duration::minutes(5), "owner password expired")
        );
    }
    assert_eq!(check(&ring, &bob), Ok(()));
}

#[test]
fn owner_password_expired_does_nothing_by_default() {
    let ring = clocked(&ManualClock::new(T0));
    let alice = ring.issue(NewKey::new("alice")).unwrap();
    assert_eq!(ring.owner_password_expired("alice").unwrap(), vec![]);
    assert_eq!(check(&ring, &alice), Ok(()));
    assert_eq!(ring.get(alice.key.id()).unwrap().status(), Status::Active);
}

// ---------------------------------------------------------------------------
// Default expiry
// ---------------------------------------------------------------------------

#[test]
fn default_expiry_change_counts_from_the_change() {
    let clock = ManualClock::new(T0);
    let ring = ring_with_default(&clock, ExpiryPolicy::days(30));
    let key = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(ring.expires_at(key.key.id()), Some(T0 + Duration::days(30)));

    let change = T0 + Duration::days(10);
    clock.set(change);
    ring.set_default_expiry(ExpiryPolicy::days(180)).unwrap();
    let end = change + Duration::days(180);
    assert_eq!(ring.expires_at(key.key.id()), Some(end));
    assert_eq!(ring.settings().default_expiry(), ExpiryPolicy::days(180));
    assert_eq!(ring.settings().default_since(), change);

    clock.set(T0 + Duration::days(30)); // the old default's end
    assert_eq!(check(&ring, &key), Ok(()));
    clock.set(end - NS);
    assert_eq!(check(&ring, &key), Ok(()));
    clock.set(end);
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
}

/// Setting the default the ring already has is no change: the keys it
/// governs keep their deadline. A host that applies its configured default
/// at each start must not renew every such key (for ever, if it restarts
/// more often than the period), nor report a change.
#[test]
fn setting_the_same_default_again_does_not_extend_its_keys() {
    let clock = ManualClock::new(T0);
    let log = Arc::new(EventLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .default_expiry(ExpiryPolicy::days(30))
        .events(Arc::clone(&log))
        .flush_interval(None)
        .build(fresh_store())
        .unwrap();
    let key = ring.issue(NewKey::new("o")).unwrap();

    clock.set(T0 + Duration::days(20));
    ring.set_default_expiry(ExpiryPolicy::days(30)).unwrap();
    assert_eq!(ring.settings().default_since(), T0);
    assert_eq!(ring.expires_at(key.key.id()), Some(T0 + Duration::days(30)));
    let kinds: Vec<EventKind> = log.events().into_iter().map(|e| e.kind).collect();
    assert!(
        !kinds
            .iter()
            .any(|k| matches!(k, EventKind::PolicyChanged { .. })),
        "{kinds:?}"
    );
    clock.set(T0 + Duration::days(30));
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));

    // The same for an idle default: setting it again gives no key a fresh
    // idle period.
    let policy = ExpiryPolicy::Idle(Duration::days(5));
    ring.set_default_expiry(policy).unwrap();
    let since = ring.settings().default_since();
    let idle = ring.issue(NewKey::new("o")).unwrap();
    clock.advance(Duration::days(4));
    ring.set_default_expiry(policy).unwrap();
    assert_eq!(ring.settings().default_since(), since);
    clock.advance(Duration::days(1));
    assert_eq!(check(&ring, &idle), Err(VerifyError::Expired));
}

/// A change of the default takes effect for the keys still in force: a key
/// that had already expired under the old default stays expired, and keeps
/// the instant it expired at, whatever the new default (longer, never, or
/// idle), through later changes too, and for a second ring on the store.
#[test]
fn a_default_change_does_not_bring_back_an_expired_key() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .default_expiry(ExpiryPolicy::days(30))
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let old = ring.issue(NewKey::new("o")).unwrap();
    clock.set(T0 + Duration::days(20));
    let young = ring.issue(NewKey::new("o")).unwrap();

    // Day 40: `old` expired at day 30; `young` is in force until day 50.
    let change = T0 + Duration::days(40);
    clock.set(change);
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    ring.set_default_expiry(ExpiryPolicy::days(90)).unwrap();
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    assert_eq!(ring.state(old.key.id()), Some(KeyState::Expired));
    assert_eq!(ring.expires_at(old.key.id()), Some(T0 + Duration::days(30)));
    assert_eq!(check(&ring, &young), Ok(()));
    assert_eq!(
        ring.expires_at(young.key.id()),
        Some(change + Duration::days(90))
    );
    // A key issued after the change is under the new default only.
    let new = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&ring, &new), Ok(()));

    // Through a second change, to no expiry at all.
    clock.set(change + Duration::days(1));
    ring.set_default_expiry(ExpiryPolicy::Never).unwrap();
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
    assert_eq!(ring.expires_at(old.key.id()), Some(T0 + Duration::days(30)));
    assert_eq!(check(&ring, &young), Ok(()));
    assert_eq!(ring.expires_at(young.key.id()), None);

    // A second ring on the same store reads the same settings.
    let second = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    assert_eq!(check(&second, &old), Err(VerifyError::Expired));
    assert_eq!(check(&second, &young), Ok(()));
    assert_eq!(
        second.expires_at(old.key.id()),
        Some(T0 + Duration::days(30))
    );
}

/// The same for keys that expired idle under an idle default, and for keys
/// past a fixed default deadline: a change of default does not revive
/// them, while a key used within its idle period moves to the new default.
#[test]
fn a_default_change_does_not_revive_idle_or_fixed_expired_keys() {
    let clock = ManualClock::new(T0);
    let ring = ring_with_default(&clock, ExpiryPolicy::Idle(Duration::days(5)));
    let idle = ring.issue(NewKey::new("o")).unwrap();
    let used = ring.issue(NewKey::new("o")).unwrap();
    clock.set(T0 + Duration::days(4));
    assert_eq!(check(&ring, &used), Ok(()));
    clock.set(T0 + Duration::days(6));
    assert_eq!(check(&ring, &idle), Err(VerifyError::Expired));
    ring.set_default_expiry(ExpiryPolicy::Never).unwrap();
    assert_eq!(check(&ring, &idle), Err(VerifyError::Expired));
    assert_eq!(ring.expires_at(idle.key.id()), Some(T0 + Duration::days(5)));
    assert_eq!(check(&ring, &used), Ok(()));
    assert_eq!(ring.expires_at(used.key.id()), None);

    // A fixed default deadline that has passed.
    let end = T0 + Duration::days(10);
    ring.set_default_expiry(ExpiryPolicy::At(end)).unwrap();
    let fixed = ring.issue(NewKey::new("o")).unwrap();
    clock.set(end);
    assert_eq!(check(&ring, &fixed), Err(VerifyError::Expired));
    ring.set_default_expiry(ExpiryPolicy::days(30)).unwrap();
    assert_eq!(check(&ring, &fixed), Err(VerifyError::Expired));
    assert_eq!(check(&ring, &used), Err(VerifyError::Expired));
    assert_eq!(ring.expires_at(fixed.key.id()), Some(end));
    assert_eq!(ring.state(used.key.id()), Some(KeyState::Expired));
    let after = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&ring, &after), Ok(()));
}

/// A key that reached the ring's maximum lifetime before its idle default
/// ran out keeps the instant it really expired, the cap's, once that
/// default is replaced.
#[test]
fn a_key_capped_by_the_max_lifetime_keeps_its_expiry_through_a_default_change() {
    let clock = ManualClock::new(T0);
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .max_lifetime(Duration::days(10))
        .default_expiry(ExpiryPolicy::Idle(Duration::days(5)))
        .flush_interval(None)
        .build(fresh_store())
        .unwrap();
    let key = ring.issue(NewKey::new("o")).unwrap();
    let capped = T0 + Duration::days(10);
    for day in [4, 8] {
        clock.set(T0 + Duration::days(day));
        assert_eq!(check(&ring, &key), Ok(()));
    }
    // Idle until day 13, but capped at day 10.
    clock.set(T0 + Duration::days(14));
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    assert_eq!(ring.expires_at(key.key.id()), Some(capped));
    ring.set_default_expiry(ExpiryPolicy::days(10)).unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    assert_eq!(ring.expires_at(key.key.id()), Some(capped));
}

/// A maximum lifetime set on a ring built after keys with policies of
/// their own were issued (never, idle, a long lifetime, a far instant)
/// binds them too: "the longest any key may live". `verify`, `state` and
/// `expires_at` agree; a ring without the cap still goes by the key's own.
#[test]
fn a_max_lifetime_set_later_binds_keys_with_policies_of_their_own() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let build = |max: Option<Duration>| {
        let builder = KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None);
        match max {
            Some(max) => builder.max_lifetime(max),
            None => builder,
        }
        .build(Arc::clone(&store))
        .unwrap()
    };
    let uncapped = build(None);
    let keys: Vec<Issued> = [
        ExpiryPolicy::Never,
        ExpiryPolicy::Idle(Duration::days(30)),
        ExpiryPolicy::days(400),
        ExpiryPolicy::At(T0 + Duration::days(300)),
    ]
    .into_iter()
    .map(|policy| uncapped.issue(NewKey::new("o").expiry(policy)).unwrap())
    .collect();
    let capped = build(Some(Duration::days(10)));
    let cap = T0 + Duration::days(10);
    clock.set(T0 + Duration::days(9));
    for key in &keys {
        assert_eq!(check(&capped, key), Ok(()), "{:?}", key.key.expiry());
        assert_eq!(capped.expires_at(key.key.id()), Some(cap));
    }
    clock.set(cap);
    for key in &keys {
        let policy = key.key.expiry();
        assert_eq!(check(&capped, key), Err(VerifyError::Expired), "{policy:?}");
        assert_eq!(
            capped.state(key.key.id()),
            Some(KeyState::Expired),
            "{policy:?}"
        );
        assert_eq!(check(&uncapped, key), Ok(()), "{policy:?}");
    }
}

/// A rotation on a ring whose maximum lifetime was set after the key was
/// issued hands on the deadline the cap gives the old key ("a rotation
/// renews the secret, not the lifetime"): the cap counts from creation,
/// and counted from the successor's it would end later.
#[test]
fn a_rotation_under_a_max_lifetime_set_later_hands_on_the_capped_deadline() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let uncapped = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let keys: Vec<Issued> = [
        ExpiryPolicy::Never,
        ExpiryPolicy::Idle(Duration::days(30)),
        ExpiryPolicy::days(400),
    ]
    .into_iter()
    .map(|policy| uncapped.issue(NewKey::new("o").expiry(policy)).unwrap())
    .collect();
    let capped = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .max_lifetime(Duration::days(10))
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let cap = T0 + Duration::days(10);
    clock.set(T0 + Duration::days(5));
    for key in &keys {
        let policy = key.key.expiry();
        let successor = capped.rotate(key.key.id(), Duration::ZERO).unwrap();
        assert_eq!(successor.key.own_deadline(), Some(cap), "{policy:?}");
        assert_eq!(
            capped.expires_at(successor.key.id()),
            Some(cap),
            "{policy:?}"
        );
        clock.set(cap - NS);
        assert_eq!(check(&capped, &successor), Ok(()), "{policy:?}");
        clock.set(cap);
        assert_eq!(
            check(&capped, &successor),
            Err(VerifyError::Expired),
            "{policy:?}"
        );
        clock.set(T0 + Duration::days(5));
    }
}

/// A key issued under a fixed default that has passed would be dead on
/// arrival: it is refused, while one with its own policy is issued. After
/// a change away from that default, a ring whose clock runs a little
/// behind the one that made the change issues keys that work.
#[test]
fn no_key_is_issued_under_a_fixed_default_that_has_passed() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let end = T0 + Duration::days(10);
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .default_expiry(ExpiryPolicy::At(end))
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let before = ring.issue(NewKey::new("o")).unwrap();
    clock.set(end);
    assert!(matches!(
        ring.issue(NewKey::new("o")),
        Err(Error::InvalidInput(_))
    ));
    let own = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(1)))
        .unwrap();
    assert_eq!(check(&ring, &own), Ok(()));

    clock.set(end + Duration::hours(1));
    ring.set_default_expiry(ExpiryPolicy::days(30)).unwrap();
    assert_eq!(check(&ring, &before), Err(VerifyError::Expired));
    // A second ring, its clock a minute behind the first's.
    let behind = ManualClock::new(end + Duration::hours(1) - Duration::minutes(1));
    let second = KeyRing::builder(PREFIX)
        .clock(behind.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let late = second.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&second, &late), Ok(()));
    assert_eq!(check(&ring, &late), Ok(()));
    assert_eq!(check(&second, &before), Err(VerifyError::Expired));
}

#[test]
fn default_expiry_change_leaves_own_policies_alone() {
    let clock = ManualClock::new(T0);
    let ring = ring_with_default(&clock, ExpiryPolicy::days(30));
    let own = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(30)))
        .unwrap();
    let never = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Never))
        .unwrap();
    clock.set(T0 + Duration::days(10));
    ring.set_default_expiry(ExpiryPolicy::days(180)).unwrap();
    assert_eq!(ring.expires_at(own.key.id()), Some(T0 + Duration::days(30)));
    assert_eq!(ring.expires_at(never.key.id()), None);
    clock.set(T0 + Duration::days(30) - NS);
    assert_eq!(check(&ring, &own), Ok(()));
    clock.set(T0 + Duration::days(30));
    assert_eq!(check(&ring, &own), Err(VerifyError::Expired));
    clock.set(T0 + Duration::days(1000));
    assert_eq!(check(&ring, &never), Ok(()));
}

/// The refusal states the ring's maximum lifetime as it is, also when it
/// is not a whole number of days (a cap of 12 hours is not "0 days").
#[test]
fn expiry_beyond_a_maximum_lifetime_states_the_maximum_truthfully() {
    for (max, stated) in [
        (Duration::hours(12), "12 hours"),
        (Duration::minutes(90), "1 hour 30 minutes"),
        (Duration::hours(36), "1 day 12 hours"),
        (Duration::days(1), "1 day"),
        (Duration::days(30), "30 days"),
        (Duration::seconds(45), "45 seconds"),
        (Duration::milliseconds(1500), "1.5 seconds"),
    ] {
        let clock = ManualClock::new(T0);
        let ring = KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .max_lifetime(max)
            .flush_interval(None)
            .build(fresh_store())
            .unwrap();
        let refusals = [
            ring.issue(NewKey::new("o").expiry(ExpiryPolicy::days(400)))
                .unwrap_err(),
            ring.set_default_expiry(ExpiryPolicy::days(400))
                .unwrap_err(),
        ];
        for err in refusals {
            assert!(matches!(err, Error::ExpiryBeyondMax { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("expiry beyond the key ring's maximum lifetime of {stated}")
            );
        }
    }
}

#[test]
fn default_expiry_beyond_max_lifetime_is_refused() {
    let clock = ManualClock::new(T0);
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .max_lifetime(Duration::days(365))
        .default_expiry(ExpiryPolicy::days(30))
        .flush_interval(None)
        .build(fresh_store())
        .unwrap();
    let before = ring.settings();
    assert!(matches!(
        ring.set_default_expiry(ExpiryPolicy::days(400)),
        Err(Error::ExpiryBeyondMax { max }) if max == Duration::days(365)
    ));
    assert_eq!(ring.settings(), before, "a refused default was applied");
    assert_eq!(ring.store().load_settings().unwrap(), Some(before));
    assert!(matches!(
        ring.issue(NewKey::new("o").expiry(ExpiryPolicy::days(400))),
        Err(Error::ExpiryBeyondMax { max }) if max == Duration::days(365)
    ));
    // Within the cap it is accepted.
    ring.set_default_expiry(ExpiryPolicy::days(365)).unwrap();
    assert_eq!(ring.settings().default_expiry(), ExpiryPolicy::days(365));
}

#[test]
fn default_expiry_is_persisted_in_the_store() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let first = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .default_expiry(ExpiryPolicy::days(30))
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let key = first.issue(NewKey::new("o")).unwrap();
    clock.set(T0 + Duration::days(10));
    first.set_default_expiry(ExpiryPolicy::days(180)).unwrap();

    // A second ring on the same store, built with another default, keeps
    // the stored one.
    let second = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .default_expiry(ExpiryPolicy::days(7))
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    assert_eq!(second.settings().default_expiry(), ExpiryPolicy::days(180));
    assert_eq!(second.settings().default_since(), T0 + Duration::days(10));
    assert_eq!(
        second.expires_at(key.key.id()),
        Some(T0 + Duration::days(190))
    );
    assert_eq!(
        store.load_settings().unwrap().unwrap().default_expiry(),
        ExpiryPolicy::days(180)
    );
}

// ---------------------------------------------------------------------------
// Idle timeout
// ---------------------------------------------------------------------------

#[test]
fn idle_key_in_regular_use_stays_valid_for_hours() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let key = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::hours(1))))
        .unwrap();
    let mut last = T0;
    for step in 1..=30 {
        last = T0 + Duration::minutes(40 * step);
        clock.set(last);
        assert_eq!(
            check(&ring, &key),
            Ok(()),
            "used every 40 minutes, expired after {} minutes",
            40 * step
        );
    }
    assert!(last - T0 >= Duration::hours(20));
    assert_eq!(
        ring.expires_at(key.key.id()),
        Some(last + Duration::hours(1))
    );
    // state() does not count as a use.
    clock.set(last + Duration::hours(1) - NS);
    assert_eq!(ring.state(key.key.id()), Some(KeyState::Active));
    clock.set(last + Duration::hours(1));
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    // A failed verify does not revive it.
    clock.advance(Duration::minutes(1));
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
}

#[test]
fn idle_key_never_used_expires_an_idle_period_after_issue() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let key = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::hours(1))))
        .unwrap();
    clock.set(T0 + Duration::hours(1) - NS);
    assert_eq!(ring.state(key.key.id()), Some(KeyState::Active));
    clock.set(T0 + Duration::hours(1));
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
}

// ---------------------------------------------------------------------------
// Usage persistence
// ---------------------------------------------------------------------------

/// A store that notes, for each key, the usage its last written record
/// carried: what reached the store (and, on a durable store, the disk).
#[derive(Debug)]
struct WriteLog {
    inner: TestStore,
    written: std::sync::Mutex<BTreeMap<KeyId, (u64, Option<OffsetDateTime>)>>,
    /// While set, every write fails (a full disk) and changes nothing.
    failing: std::sync::atomic::AtomicBool,
    /// Records written, over all keys.
    writes: AtomicUsize,
}

impl WriteLog {
    fn new() -> WriteLog {
        WriteLog {
            inner: fresh_store(),
            written: std::sync::Mutex::new(BTreeMap::new()),
            failing: false.into(),
            writes: AtomicUsize::new(0),
        }
    }

    fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn written(&self, id: KeyId) -> Option<(u64, Option<OffsetDateTime>)> {
        self.written.lock().unwrap().get(&id).copied()
    }
}

impl KeyStore for WriteLog {
    inner_reads!();
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                path: "keys".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        let noted: Vec<_> = changes
            .iter()
            .filter_map(|change| match change {
                Change::Insert(e) | Change::Replace(e) | Change::ReplaceIf { next: e, .. } => {
                    Some((e.id(), (e.key().uses(), e.key().last_used_at())))
                }
                _ => None,
            })
            .collect();
        self.inner.apply(changes)?;
        // Only what the store took.
        self.writes.fetch_add(noted.len(), Ordering::SeqCst);
        self.written.lock().unwrap().extend(noted);
        Ok(())
    }
}

#[test]
fn usage_is_written_to_the_store_on_flush_without_a_flusher() {
    let clock = ManualClock::new(T0 + Duration::minutes(1));
    let store = Arc::new(WriteLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let key = ring.issue(NewKey::new("o")).unwrap();
    let id = key.key.id();
    for _ in 0..3 {
        assert_eq!(check(&ring, &key), Ok(()));
    }
    // The live view has it; nothing was written on the verify path.
    assert_eq!(ring.get(id).unwrap().uses(), 3);
    assert_eq!(
        ring.get(id).unwrap().last_used_at(),
        Some(T0 + Duration::minutes(1))
    );
    assert_eq!(store.written(id), Some((0, None)));

    ring.flush().unwrap();
    assert_eq!(
        store.written(id),
        Some((3, Some(T0 + Duration::minutes(1))))
    );
}

#[test]
fn usage_is_written_by_the_background_flusher() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(WriteLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(Some(std::time::Duration::from_millis(50)))
        .build(Arc::clone(&store))
        .unwrap();
    let key = ring.issue(NewKey::new("o")).unwrap();
    let id = key.key.id();
    assert_eq!(check(&ring, &key), Ok(()));
    assert_eq!(check(&ring, &key), Ok(()));

    within_5s(
        "the background flusher did not write usage within 5 s",
        || store.written(id) == Some((2, Some(T0))),
    );
}

#[test]
fn dropping_the_ring_flushes_usage() {
    let clock = ManualClock::new(T0 + Duration::hours(3));
    let store = Arc::new(WriteLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let key = ring.issue(NewKey::new("o")).unwrap();
    let id = key.key.id();
    assert_eq!(check(&ring, &key), Ok(()));
    assert_eq!(check(&ring, &key), Ok(()));
    assert_eq!(store.written(id), Some((0, None)));
    drop(ring);
    assert_eq!(store.written(id), Some((2, Some(T0 + Duration::hours(3)))));
}

#[test]
fn use_limit_allows_exactly_that_many_successes() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o").use_limit(3)).unwrap();
    for _ in 0..3 {
        assert_eq!(check(&ring, &key), Ok(()));
    }
    for _ in 0..3 {
        let err = ring.verify(key.secret.expose()).unwrap_err();
        assert_eq!(err, VerifyError::UsageExceeded);
        assert_eq!(err.http_status(), 429);
    }
    assert_eq!(ring.get(key.key.id()).unwrap().uses(), 3);
    // A wrong secret still says invalid, not usage exceeded.
    assert_eq!(
        ring.verify(&wrong_secret(key.secret.expose())).unwrap_err(),
        VerifyError::Invalid
    );
}

#[test]
fn a_limited_use_is_written_to_the_store_at_once() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(WriteLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let key = ring.issue(NewKey::new("o").use_limit(5)).unwrap();
    let id = key.key.id();
    for n in 1..=5 {
        clock.advance(Duration::SECOND);
        assert_eq!(check(&ring, &key), Ok(()));
        assert_eq!(
            store.written(id),
            Some((n, Some(clock.now()))),
            "use {n} not written without a flush"
        );
    }
    assert_eq!(check(&ring, &key), Err(VerifyError::UsageExceeded));
    assert_eq!(store.written(id), Some((5, Some(clock.now()))));
    // Written already: a flush has nothing of it to write again.
    let writes = store.writes.load(Ordering::SeqCst);
    ring.flush().unwrap();
    assert_eq!(store.writes.load(Ordering::SeqCst), writes);
}

/// A limited use whose write fails (a full disk, a database timeout) is
/// refused as `Unavailable` and spends nothing: a use the store does not
/// hold could be granted again after a restart, or by another ring. Once
/// the store works again, the key's uses are all there.
#[test]
fn a_limited_use_whose_write_fails_is_refused_and_spends_nothing() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(WriteLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let key = ring.issue(NewKey::new("o").use_limit(1)).unwrap();
    let id = key.key.id();
    store.fail(true);
    clock.advance(Duration::SECOND);
    let err = ring.verify(key.secret.expose()).unwrap_err();
    assert_eq!(err, VerifyError::Unavailable);
    assert_eq!((err.http_status(), err.code()), (503, "use_not_recorded"));
    assert_eq!(ring.get(id).unwrap().uses(), 0);
    assert_eq!(store.written(id), Some((0, None)));

    store.fail(false);
    ring.flush().unwrap();
    assert_eq!(
        store.written(id),
        Some((0, None)),
        "a refused use was written"
    );
    assert_eq!(check(&ring, &key), Ok(()));
    assert_eq!(store.written(id), Some((1, Some(clock.now()))));
    assert_eq!(check(&ring, &key), Err(VerifyError::UsageExceeded));
}

/// A store whose `inspect` takes a minute: the clock moves on after the
/// record was lent, as it can while a verify waits for the ring's lock.
#[derive(Debug)]
struct SlowInspect {
    inner: TestStore,
    clock: ManualClock,
}

impl KeyStore for SlowInspect {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.inner.lookup(id)
    }
    fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<keyward::Lent<'_>>)) {
        self.inner.inspect(id, f);
        self.clock.advance(Duration::minutes(1));
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.inner.list(owner)
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        self.inner.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.inner.apply(changes)
    }
}

/// A limited key is judged again when its use is spent, at the time of
/// spending: a key that expired while its verify waited is refused, and
/// keeps its uses.
#[test]
fn a_limited_key_that_expires_before_its_use_is_spent_is_refused() {
    let clock = ManualClock::new(T0);
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(SlowInspect {
            inner: fresh_store(),
            clock: clock.clone(),
        })
        .unwrap();
    let key = ring
        .issue(NewKey::new("o").use_limit(5).expiry(ExpiryPolicy::days(1)))
        .unwrap();
    clock.set(T0 + Duration::days(1) - Duration::SECOND);
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    assert_eq!(ring.get(key.key.id()).unwrap().uses(), 0);
}

#[test]
fn failed_verifies_do_not_consume_uses() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let key = ring
        .issue(
            NewKey::new("o")
                .use_limit(2)
                .scopes(ScopeSet::parse(["invoices:read"]).unwrap()),
        )
        .unwrap();
    let needs_write = Requirement::scope("invoices:write").unwrap();
    let needs_read = Requirement::scope("invoices:read").unwrap();
    for _ in 0..5 {
        assert!(matches!(
            ring.verify_with(key.secret.expose(), &needs_write),
            Err(VerifyError::InsufficientScope(s)) if s.as_str() == "invoices:write"
        ));
        assert_eq!(
            ring.verify(&wrong_secret(key.secret.expose())).unwrap_err(),
            VerifyError::Invalid
        );
    }
    ring.disable(key.key.id()).unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Disabled));
    ring.enable(key.key.id()).unwrap();
    assert_eq!(ring.get(key.key.id()).unwrap().uses(), 0);
    assert_eq!(ring.store().lookup(key.key.id()).unwrap().key().uses(), 0);

    assert!(ring.verify_with(key.secret.expose(), &needs_read).is_ok());
    assert_eq!(check(&ring, &key), Ok(()));
    assert_eq!(check(&ring, &key), Err(VerifyError::UsageExceeded));
}

#[test]
fn use_limit_holds_under_concurrent_verifies() {
    const LIMIT: u64 = 500;
    const THREADS: usize = 8;
    const PER_THREAD: usize = 100;
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o").use_limit(LIMIT)).unwrap();
    let ok = AtomicUsize::new(0);
    let exceeded = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..PER_THREAD {
                    match ring.verify(key.secret.expose()) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(VerifyError::UsageExceeded) => exceeded.fetch_add(1, Ordering::Relaxed),
                        Err(e) => panic!("unexpected verify error: {e:?}"),
                    };
                }
            });
        }
    });
    let ok = ok.into_inner();
    assert_eq!(ok as u64, LIMIT, "successes of a key limited to {LIMIT}");
    assert_eq!(exceeded.into_inner(), THREADS * PER_THREAD - ok);
    assert_eq!(ring.get(key.key.id()).unwrap().uses(), LIMIT);
    assert_eq!(
        ring.store().lookup(key.key.id()).unwrap().key().uses(),
        LIMIT
    );
}

/// Three rings on one store spend a limited key's uses on two threads
/// each while a fourth thread renames the key and flushes usage through
/// them in turn: exactly `LIMIT` verifies succeed, and the store (and a
/// ring built on it afresh) counts exactly `LIMIT` uses. A refusal is
/// `UsageExceeded`, or `Unavailable` when the writes of the others kept
/// winning, and never spends a use.
#[test]
fn use_limit_holds_across_rings_under_concurrent_verifies_and_writes() {
    const LIMIT: u64 = 600;
    const PER_THREAD: usize = 200;
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let build = || {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap()
    };
    let rings = [build(), build(), build()];
    let key = rings[0].issue(NewKey::new("o").use_limit(LIMIT)).unwrap();
    let id = key.key.id();
    let (ok, exceeded, unavailable) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let verifying = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        let verifiers: Vec<_> = rings
            .iter()
            .flat_map(|ring| [ring, ring])
            .map(|ring| {
                s.spawn(|| {
                    for _ in 0..PER_THREAD {
                        let counter = match ring.verify(key.secret.expose()) {
                            Ok(_) => &ok,
                            Err(VerifyError::UsageExceeded) => &exceeded,
                            Err(VerifyError::Unavailable) => &unavailable,
                            Err(e) => panic!("unexpected verify error: {e:?}"),
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        s.spawn(|| {
            let mut n = 0;
            while verifying.load(Ordering::Acquire) {
                n += 1;
                let ring = &rings[n % rings.len()];
                ring.update(id, KeyUpdate::new().name(format!("name {n}")))
                    .unwrap();
                ring.flush().unwrap();
            }
        });
        for verifier in verifiers {
            verifier.join().unwrap();
        }
        verifying.store(false, Ordering::Release);
    });
    let ok = ok.into_inner() as u64;
    let refused = exceeded.into_inner() + unavailable.into_inner();
    assert_eq!(ok, LIMIT, "successes of a key limited to {LIMIT}");
    assert_eq!(ok as usize + refused, 6 * PER_THREAD);
    assert_eq!(store.lookup(id).unwrap().key().uses(), LIMIT);
    for ring in &rings {
        ring.flush().unwrap();
    }
    assert_eq!(build().get(id).unwrap().uses(), LIMIT);
}

// ---------------------------------------------------------------------------
// List by state
// ---------------------------------------------------------------------------

/// The ids `list` gives for `state`, in its order (oldest first).
fn listed<S: KeyStore>(ring: &KeyRing<S>, state: KeyState) -> Vec<KeyId> {
    let filter = ListFilter::new().state(state);
    ring.list(&filter).unwrap().iter().map(Key::id).collect()
}

/// A key is listed under each state that holds for it: disabled or
/// revoked and also past its end, it is listed as expired too; spent, it
/// is not listed as active. Revoked outranks disabled (a revoke-all
/// revokes disabled keys for good), and `state` gives the one state
/// `verify` reports.
#[test]
fn list_by_state_lists_a_key_under_each_state_that_holds() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let issue = |policy: ExpiryPolicy| {
        clock.advance(Duration::SECOND); // distinct creation times: a stable order
        ring.issue(NewKey::new("o").expiry(policy)).unwrap()
    };
    let revoked_by_all_disabled = issue(ExpiryPolicy::Never);
    ring.disable(revoked_by_all_disabled.key.id()).unwrap();
    ring.revoke_all().unwrap();
    let active = issue(ExpiryPolicy::Never);
    let expired = issue(ExpiryPolicy::days(1));
    let disabled = issue(ExpiryPolicy::Never);
    ring.disable(disabled.key.id()).unwrap();
    let disabled_expired = issue(ExpiryPolicy::days(1));
    ring.disable(disabled_expired.key.id()).unwrap();
    let revoked_key = issue(ExpiryPolicy::Never);
    ring.revoke(revoked_key.key.id(), "x").unwrap();
    let revoked_expired = issue(ExpiryPolicy::days(1));
    ring.revoke(revoked_expired.key.id(), "x").unwrap();
    clock.advance(Duration::SECOND);
    let spent = ring.issue(NewKey::new("o").use_limit(1)).unwrap();
    assert_eq!(check(&ring, &spent), Ok(()));
    let in_grace = issue(ExpiryPolicy::Never);
    clock.advance(Duration::SECOND);
    let in_grace_successor = ring.rotate(in_grace.key.id(), Duration::days(10)).unwrap();
    let past_grace = issue(ExpiryPolicy::Never);
    clock.advance(Duration::SECOND);
    let past_grace_successor = ring
        .rotate(past_grace.key.id(), Duration::hours(1))
        .unwrap();
    clock.set(T0 + Duration::days(2));

    assert_eq!(
        listed(&ring, KeyState::Active),
        vec![
            active.key.id(),
            in_grace.key.id(),
            in_grace_successor.key.id(),
            past_grace_successor.key.id(),
        ],
        "active: the keys that verify"
    );
    assert_eq!(
        listed(&ring, KeyState::Disabled),
        vec![disabled.key.id(), disabled_expired.key.id()]
    );
    assert_eq!(
        listed(&ring, KeyState::Revoked),
        vec![
            revoked_by_all_disabled.key.id(),
            revoked_key.key.id(),
            revoked_expired.key.id(),
        ]
    );
    assert_eq!(
        listed(&ring, KeyState::Expired),
        vec![
            expired.key.id(),
            disabled_expired.key.id(),
            revoked_expired.key.id(),
            past_grace.key.id(),
        ],
        "expired: every key past its end, whatever its status"
    );
    // `state` (and so `verify`) reports one of them, by precedence.
    assert_eq!(
        ring.state(disabled_expired.key.id()),
        Some(KeyState::Disabled)
    );
    assert_eq!(check(&ring, &disabled_expired), Err(VerifyError::Disabled));
    assert_eq!(
        ring.state(revoked_expired.key.id()),
        Some(KeyState::Revoked)
    );
    assert_eq!(
        ring.state(revoked_by_all_disabled.key.id()),
        Some(KeyState::Revoked)
    );
    assert_eq!(check(&ring, &spent), Err(VerifyError::UsageExceeded));
}

/// A key whose use limit is spent is used up: listed so, its `state` says
/// so, and when it is also past its end it is listed under both, its
/// `state` giving expired, as `verify` does.
#[test]
fn a_key_whose_uses_are_spent_is_used_up() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let spent = ring.issue(NewKey::new("o").use_limit(2)).unwrap();
    clock.advance(Duration::SECOND);
    let spent_expired = ring
        .issue(NewKey::new("o").use_limit(1).expiry(ExpiryPolicy::days(1)))
        .unwrap();
    clock.advance(Duration::SECOND);
    let unspent = ring.issue(NewKey::new("o").use_limit(2)).unwrap();
    for key in [&spent, &spent, &spent_expired, &unspent] {
        assert_eq!(check(&ring, key), Ok(()));
    }
    assert_eq!(ring.state(spent.key.id()), Some(KeyState::UsedUp));
    assert_eq!(ring.state(unspent.key.id()), Some(KeyState::Active));
    assert_eq!(
        listed(&ring, KeyState::UsedUp),
        vec![spent.key.id(), spent_expired.key.id()]
    );
    assert_eq!(listed(&ring, KeyState::Active), vec![unspent.key.id()]);

    clock.set(T0 + Duration::days(2));
    assert_eq!(ring.state(spent_expired.key.id()), Some(KeyState::Expired));
    assert_eq!(check(&ring, &spent_expired), Err(VerifyError::Expired));
    assert_eq!(
        listed(&ring, KeyState::UsedUp),
        vec![spent.key.id(), spent_expired.key.id()]
    );
    assert_eq!(
        listed(&ring, KeyState::Expired),
        vec![spent_expired.key.id()]
    );
}

// ---------------------------------------------------------------------------
// Pages of a listing
// ---------------------------------------------------------------------------

/// Every page of `filter`'s listing, `limit` keys at a time, as ids: the
/// loop an admin view runs, from the first page until `next` is `None`.
fn paged<S: KeyStore>(ring: &KeyRing<S>, filter: &ListFilter, limit: usize) -> Vec<Vec<KeyId>> {
    let mut pages = Vec::new();
    let mut page = ring.list_page(filter, limit).unwrap();
    loop {
        pages.push(page.keys.iter().map(Key::id).collect());
        let Some(next) = page.next else {
            return pages;
        };
        assert!(pages.len() <= 1000, "paging does not end");
        page = ring.list_page(&filter.clone().after(next), limit).unwrap();
    }
}

fn ids_of<S: KeyStore>(ring: &KeyRing<S>, filter: &ListFilter) -> Vec<KeyId> {
    ring.list(filter).unwrap().iter().map(Key::id).collect()
}

/// Pages, concatenated, are `list` (oldest first, then by id among keys
/// created in the same instant): every key once, in order; each page full
/// but the last, and no empty page after it, even when the keys fill the
/// last page exactly.
#[test]
fn pages_list_every_key_once_in_list_order() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    for i in 0..23 {
        if i % 3 == 0 {
            // Three keys an instant: the id breaks the tie.
            clock.advance(Duration::SECOND);
        }
        ring.issue(NewKey::new("o")).unwrap();
    }
    let keys = ring.list(&ListFilter::new()).unwrap();
    assert!(
        keys.windows(2)
            .all(|w| (w[0].created_at(), w[0].id()) < (w[1].created_at(), w[1].id())),
        "list is ordered by creation time, then id"
    );
    let all: Vec<KeyId> = keys.iter().map(Key::id).collect();
    assert_eq!(all.len(), 23);
    for limit in [1, 2, 4, 5, 22, 23] {
        let pages = paged(&ring, &ListFilter::new(), limit);
        assert_eq!(pages.concat(), all, "limit {limit}");
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        let expected: Vec<usize> = (0..23)
            .step_by(limit)
            .map(|s| (23 - s).min(limit))
            .collect();
        assert_eq!(sizes, expected, "limit {limit}");
    }
}

/// Paging applies the owner and state filters, as `list` does.
#[test]
fn pages_keep_to_the_owner_and_state_filters() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let mut by: BTreeMap<(&str, &str), Vec<KeyId>> = BTreeMap::new();
    for i in 0..18 {
        clock.advance(Duration::SECOND);
        let owner = ["alice", "bob"][i % 2];
        let (kind, policy) = match i % 3 {
            0 => ("expired", ExpiryPolicy::days(1)),
            _ => ("active", ExpiryPolicy::Never),
        };
        let id = ring
            .issue(NewKey::new(owner).expiry(policy))
            .unwrap()
            .key
            .id();
        let kind = if matches!(i, 4 | 7 | 14) {
            ring.disable(id).unwrap();
            "disabled"
        } else {
            kind
        };
        by.entry((owner, kind)).or_default().push(id);
    }
    clock.set(T0 + Duration::days(2));
    let counts: Vec<((&str, &str), usize)> = by.iter().map(|(k, v)| (*k, v.len())).collect();
    assert_eq!(
        counts,
        [
            (("alice", "active"), 4),
            (("alice", "disabled"), 2),
            (("alice", "expired"), 3),
            (("bob", "active"), 5),
            (("bob", "disabled"), 1),
            (("bob", "expired"), 3),
        ]
    );
    let of = |keys: &[(&str, &str)]| -> Vec<KeyId> {
        let mut ids: Vec<KeyId> = keys.iter().flat_map(|k| by[k].clone()).collect();
        ids.sort_by_key(|id| ring.get(*id).unwrap().created_at());
        ids
    };
    let cases = [
        (
            ListFilter::new().owner("alice"),
            of(&[
                ("alice", "active"),
                ("alice", "expired"),
                ("alice", "disabled"),
            ]),
        ),
        (
            ListFilter::new().state(KeyState::Active),
            of(&[("alice", "active"), ("bob", "active")]),
        ),
        (
            ListFilter::new().state(KeyState::Expired),
            of(&[("alice", "expired"), ("bob", "expired")]),
        ),
        (
            ListFilter::new().owner("bob").state(KeyState::Active),
            of(&[("bob", "active")]),
        ),
        (
            ListFilter::new().owner("bob").state(KeyState::Disabled),
            of(&[("bob", "disabled")]),
        ),
        (ListFilter::new().owner("carol"), vec![]),
    ];
    for (filter, expected) in cases {
        assert_eq!(ids_of(&ring, &filter), expected, "{filter:?}");
        for limit in [1, 2, 3, 100] {
            assert_eq!(
                paged(&ring, &filter, limit).concat(),
                expected,
                "{filter:?}, limit {limit}"
            );
        }
    }
}

/// The cursor is a position, not an offset: keys deleted before it (the
/// key it was taken from included) or after it, a key issued after every
/// other and one whose creation time falls before the cursor (a clock set
/// back), all between two pages, neither repeat nor skip another key. An
/// offset would skip keys here.
#[test]
fn a_key_issued_or_deleted_between_pages_moves_no_other_key() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let k: Vec<KeyId> = (0..10)
        .map(|_| {
            clock.advance(Duration::SECOND);
            ring.issue(NewKey::new("o")).unwrap().key.id()
        })
        .collect();
    let first = ring.list_page(&ListFilter::new(), 4).unwrap();
    assert_eq!(first.keys.iter().map(Key::id).collect::<Vec<_>>(), k[..4]);
    let next = first.next.expect("keys are left");

    ring.delete(k[1]).unwrap(); // listed already
    ring.delete(k[3]).unwrap(); // the key the cursor was taken from
    ring.delete(k[6]).unwrap(); // not listed yet
    let now = clock.now();
    clock.set(T0 + Duration::milliseconds(2500)); // between k[1] and k[2]
    let back_dated = ring.issue(NewKey::new("o")).unwrap().key.id();
    clock.set(now + Duration::SECOND);
    let late = ring.issue(NewKey::new("o")).unwrap().key.id();

    let rest = paged(&ring, &ListFilter::new().after(next), 4);
    assert_eq!(
        rest,
        vec![vec![k[4], k[5], k[7], k[8]], vec![k[9], late]],
        "the keys after the cursor, each once"
    );
    assert!(ids_of(&ring, &ListFilter::new()).contains(&back_dated));
}

/// A limit beyond the set gives one page with every key and no `next`
/// (usize::MAX too: nothing is sized by the limit); an empty ring, or a
/// cursor after the last key, gives an empty page.
#[test]
fn a_page_larger_than_the_set_holds_it_all_and_an_empty_ring_an_empty_page() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    for limit in [1, 10, usize::MAX] {
        let page = ring.list_page(&ListFilter::new(), limit).unwrap();
        assert!(page.keys.is_empty(), "limit {limit}");
        assert_eq!(page.next, None, "limit {limit}");
    }
    let ids: Vec<KeyId> = (0..3)
        .map(|_| {
            clock.advance(Duration::SECOND);
            ring.issue(NewKey::new("o")).unwrap().key.id()
        })
        .collect();
    for limit in [3, 4, usize::MAX] {
        let page = ring.list_page(&ListFilter::new(), limit).unwrap();
        assert_eq!(page.keys.iter().map(Key::id).collect::<Vec<_>>(), ids);
        assert_eq!(page.next, None, "limit {limit}");
    }
    let last = ring.get(ids[2]).unwrap();
    let after_last = ListFilter::new().after(ListCursor::from(&last));
    let page = ring.list_page(&after_last, 10).unwrap();
    assert!(page.keys.is_empty());
    assert_eq!(page.next, None);
    assert!(ring.list(&after_last).unwrap().is_empty());
}

/// A page of no keys could never move on: refused with a clear error, on
/// an empty ring as on a full one.
#[test]
fn a_page_of_no_keys_is_refused() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    for _ in 0..2 {
        let err = ring.list_page(&ListFilter::new(), 0).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "invalid input: a page holds at least one key"
        );
        assert_eq!((err.http_status(), err.code()), (400, "invalid_input"));
        ring.issue(NewKey::new("o")).unwrap();
    }
}

/// The cursor a page gives goes to a client and back, as text or in the
/// page's JSON, unchanged, and is the position of the page's last key; a
/// string it did not print is refused.
#[test]
fn a_cursor_survives_its_text_and_json_forms() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    for _ in 0..5 {
        clock.advance(Duration::SECOND);
        ring.issue(NewKey::new("o")).unwrap();
    }
    let page = ring.list_page(&ListFilter::new(), 2).unwrap();
    let next = page.next.unwrap();
    assert_eq!(next, ListCursor::from(&page.keys[1]));
    let text = next.to_string();
    let parsed: ListCursor = text.parse().unwrap();
    assert_eq!(parsed, next);
    assert_eq!(
        ring.list_page(&ListFilter::new().after(parsed), 2).unwrap(),
        ring.list_page(&ListFilter::new().after(next), 2).unwrap()
    );

    let json = serde_json::to_value(&page).unwrap();
    assert_eq!(json["next"], serde_json::Value::String(text.clone()));
    assert_eq!(json["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        serde_json::from_value::<ListCursor>(json["next"].clone()).unwrap(),
        next
    );
    let last = ring.list_page(&ListFilter::new().after(next), 10).unwrap();
    assert_eq!(
        serde_json::to_value(&last).unwrap()["next"],
        serde_json::Value::Null
    );

    let upper = text.to_uppercase();
    for garbage in ["", "1", &text[1..], &upper, &format!("{text}0"), "nonsense"] {
        let err = garbage.parse::<ListCursor>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid input: not a list cursor",
            "{garbage:?}"
        );
    }
    assert!(serde_json::from_str::<ListCursor>("\"nonsense\"").is_err());
}

// ---------------------------------------------------------------------------
// Reminders
// ---------------------------------------------------------------------------

#[test]
fn expiring_within_lists_the_keys_due_soonest_first() {
    let day = Duration::days(1);
    let clock = ManualClock::new(T0 - Duration::days(2));
    let ring = ring_with_default(&clock, ExpiryPolicy::days(5));
    // Expired already at T0.
    let expired = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(1)))
        .unwrap();
    clock.set(T0);
    let own = ring
        .issue(
            NewKey::new("o")
                .name("own deadline")
                .contact(contact())
                .expiry(ExpiryPolicy::days(3)),
        )
        .unwrap();
    let by_default = ring.issue(NewKey::new("o").name("default")).unwrap();
    let idle = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::days(2))))
        .unwrap();
    let rotated = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(100)))
        .unwrap();
    let successor = ring.rotate(rotated.key.id(), day).unwrap();
    let revoked_key = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(4)))
        .unwrap();
    ring.revoke(revoked_key.key.id(), "x").unwrap();
    let disabled = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(4)))
        .unwrap();
    ring.disable(disabled.key.id()).unwrap();
    let later = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(30)))
        .unwrap();
    let never = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Never))
        .unwrap();

    let due = ring.expiring_within(Duration::days(7)).unwrap();
    let got: Vec<(KeyId, OffsetDateTime)> =
        due.iter().map(|r| (r.key.id(), r.expires_at)).collect();
    assert_eq!(
        got,
        vec![
            (idle.key.id(), T0 + Duration::days(2)),
            (own.key.id(), T0 + Duration::days(3)),
            (by_default.key.id(), T0 + Duration::days(5)),
        ]
    );
    assert_eq!(due[1].key.contact(), Some(&contact()));
    assert_eq!(due[1].key.name(), "own deadline");
    for left_out in [
        &expired,
        &rotated,
        &successor,
        &revoked_key,
        &disabled,
        &later,
        &never,
    ] {
        assert!(!got.iter().any(|(id, _)| *id == left_out.key.id()));
    }

    // A narrower window, and a use that pushes the idle end out.
    assert_eq!(
        ring.expiring_within(Duration::days(2)).unwrap().len(),
        1,
        "only the idle key is due within two days"
    );
    assert_eq!(ring.expiring_within(day).unwrap().len(), 0);
    clock.set(T0 + Duration::hours(12));
    assert_eq!(check(&ring, &idle), Ok(()));
    let due = ring.expiring_within(Duration::days(7)).unwrap();
    let idle_due = due.iter().find(|r| r.key.id() == idle.key.id()).unwrap();
    assert_eq!(idle_due.expires_at, T0 + Duration::hours(60));
}

/// A reminder is for a key its holder can keep using until it expires: a
/// key replaced by a rotation (still in its grace) and a key whose use
/// limit is spent are left out, as are revoked and disabled keys; the
/// successor of a rotation, which inherits the deadline, is listed.
#[test]
fn expiring_within_leaves_out_keys_that_cannot_be_used_again() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let issue = |request: NewKey| {
        clock.advance(Duration::SECOND); // distinct deadlines: a stable order
        ring.issue(request.expiry(ExpiryPolicy::days(3))).unwrap()
    };
    let due = issue(NewKey::new("o"));
    let rotated = issue(NewKey::new("o"));
    let successor = ring.rotate(rotated.key.id(), Duration::days(10)).unwrap();
    let rotated_grace_ends = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(30)))
        .unwrap();
    ring.rotate(rotated_grace_ends.key.id(), Duration::days(1))
        .unwrap();
    let spent = issue(NewKey::new("o").use_limit(1));
    assert_eq!(check(&ring, &spent), Ok(()));
    let unspent = issue(NewKey::new("o").use_limit(2));
    assert_eq!(check(&ring, &unspent), Ok(()));
    let disabled = issue(NewKey::new("o"));
    ring.disable(disabled.key.id()).unwrap();
    let revoked_key = issue(NewKey::new("o"));
    ring.revoke(revoked_key.key.id(), "x").unwrap();
    // Both replaced keys still verify, in their grace.
    assert_eq!(check(&ring, &rotated), Ok(()));
    assert_eq!(check(&ring, &rotated_grace_ends), Ok(()));

    let due_at = |key: &Issued| ring.expires_at(key.key.id()).unwrap();
    let got: Vec<(KeyId, OffsetDateTime)> = ring
        .expiring_within(Duration::days(7))
        .unwrap()
        .iter()
        .map(|r| (r.key.id(), r.expires_at))
        .collect();
    assert_eq!(
        got,
        vec![
            (due.key.id(), due_at(&due)),
            (successor.key.id(), due_at(&rotated)),
            (unspent.key.id(), due_at(&unspent)),
        ]
    );

    // Enabled again, a disabled key is due again.
    ring.enable(disabled.key.id()).unwrap();
    let again = ring.expiring_within(Duration::days(7)).unwrap();
    assert!(again.iter().any(|r| r.key.id() == disabled.key.id()));
}

// ---------------------------------------------------------------------------
// Update
// ---------------------------------------------------------------------------

/// SPEC 6: an update changes the descriptive fields it names, and nothing
/// else: the key's own expiry, use limit and scopes stay (an update that
/// dropped the expiry would hand the key to the ring's default, perhaps
/// `never`; one that dropped the limit, unlimited uses). Compared in the
/// serialized form, which names every field of the record.
#[test]
fn update_changes_the_descriptive_fields() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let key = ring
        .issue(
            NewKey::new("o")
                .name("before")
                .description("old description")
                .contact(contact())
                .metadata("team", "billing")
                .scopes(ScopeSet::parse(["invoices:read"]).unwrap())
                .expiry(ExpiryPolicy::days(30))
                .use_limit(5),
        )
        .unwrap();
    let id = key.key.id();
    let untouched = |key: &Key| {
        let mut json = serde_json::to_value(key).unwrap();
        for field in ["name", "description", "contact", "metadata"] {
            json.as_object_mut().unwrap().remove(field);
        }
        json
    };
    let before = untouched(&key.key);
    let new_contact = Contact::new("Grace", "Hopper", "grace", "grace@example.com");
    let metadata = BTreeMap::from([
        ("env".to_owned(), "prod".to_owned()),
        ("ticket".to_owned(), "SEC-1".to_owned()),
    ]);
    let updated = ring
        .update(
            id,
            KeyUpdate::new()
                .name("after")
                .description(Some("new description".to_owned()))
                .contact(Some(new_contact.clone()))
                .metadata(metadata.clone()),
        )
        .unwrap();
    let got = ring.get(id).unwrap();
    for k in [&updated, &got, &stored(&ring, id)] {
        assert_eq!(k.name(), "after");
        assert_eq!(k.description(), Some("new description"));
        assert_eq!(k.contact(), Some(&new_contact));
        assert_eq!(k.metadata(), &metadata);
        assert_eq!(k.owner(), "o");
        assert_eq!(k.created_at(), T0);
        assert_eq!(untouched(k), before);
    }
    assert_eq!(
        ring.verify(key.secret.expose()).unwrap().metadata(),
        &metadata
    );

    // Fields left unset stay; `None` removes.
    let updated = ring
        .update(id, KeyUpdate::new().description(None).contact(None))
        .unwrap();
    assert_eq!(updated.name(), "after");
    assert_eq!(updated.description(), None);
    assert_eq!(updated.contact(), None);
    assert_eq!(updated.metadata(), &metadata);
    assert_eq!(ring.get(id).unwrap().description(), None);
}

/// An update "narrows its scopes (widening is refused)", and a sensitive
/// resource is never covered by an unrestricted key or a wildcard (SPEC
/// 4): so an update that names a sensitive scope is a widening for a key
/// that holds it only through `*` or unrestricted, and would otherwise
/// grant it. A key that holds it by name narrows to it.
#[test]
fn update_cannot_narrow_a_wildcard_or_unrestricted_key_to_a_sensitive_scope() {
    let ring = KeyRing::builder(PREFIX)
        .clock(ManualClock::new(T0))
        .sensitive(["billing"])
        .flush_interval(None)
        .build(fresh_store())
        .unwrap();
    let billing_read = Requirement::scope("billing:read").unwrap();
    for held in [
        ScopeSet::unrestricted(),
        ScopeSet::parse(["*:*"]).unwrap(),
        ScopeSet::parse(["*:read"]).unwrap(),
    ] {
        let key = ring.issue(NewKey::new("o").scopes(held.clone())).unwrap();
        let id = key.key.id();
        assert!(
            ring.verify_with(key.secret.expose(), &billing_read)
                .is_err()
        );
        for asked in [
            vec!["billing:read"],
            vec!["billing:*"],
            vec!["x:read", "billing:read"],
        ] {
            let update = KeyUpdate::new().scopes(ScopeSet::parse(&asked).unwrap());
            match ring.update(id, update) {
                Err(Error::ScopeWidening(scope)) => {
                    assert!(scope.starts_with("billing:"), "{scope}")
                }
                other => panic!(
                    "{held:?} narrowed to {asked:?}: {:?}",
                    other.map(|k| k.scopes().clone())
                ),
            }
        }
        assert_eq!(ring.get(id).unwrap().scopes(), &held);
        assert!(
            ring.verify_with(key.secret.expose(), &billing_read)
                .is_err()
        );
    }
    // Granted by name, it narrows.
    let named = ring
        .issue(NewKey::new("o").scopes(ScopeSet::parse(["billing:*"]).unwrap()))
        .unwrap();
    let narrowed = KeyUpdate::new().scopes(ScopeSet::parse(["billing:read"]).unwrap());
    ring.update(named.key.id(), narrowed).unwrap();
    assert!(
        ring.verify_with(named.secret.expose(), &billing_read)
            .is_ok()
    );
}

#[test]
fn update_narrows_scopes_and_refuses_widening() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring
        .issue(NewKey::new("o").scopes(ScopeSet::parse(["invoices:*"]).unwrap()))
        .unwrap();
    let id = key.key.id();
    let write = Requirement::scope("invoices:write").unwrap();
    assert!(ring.verify_with(key.secret.expose(), &write).is_ok());

    let narrowed = ring
        .update(
            id,
            KeyUpdate::new().scopes(ScopeSet::parse(["invoices:read"]).unwrap()),
        )
        .unwrap();
    assert_eq!(
        narrowed.scopes(),
        &ScopeSet::parse(["invoices:read"]).unwrap()
    );
    assert_eq!(ring.get(id).unwrap().scopes(), narrowed.scopes());
    assert!(matches!(
        ring.verify_with(key.secret.expose(), &write),
        Err(VerifyError::InsufficientScope(s)) if s.as_str() == "invoices:write"
    ));

    // Back to the wildcard, or to another resource: widening.
    for (wider, named) in [
        (vec!["invoices:read", "invoices:write"], "invoices:write"),
        (vec!["invoices:*"], "invoices:*"),
        (vec!["invoices:read", "customers:read"], "customers:read"),
    ] {
        match ring.update(id, KeyUpdate::new().scopes(ScopeSet::parse(wider).unwrap())) {
            Err(Error::ScopeWidening(scope)) => assert_eq!(scope, named),
            other => panic!("widening to include {named} gave {other:?}"),
        }
    }
    match ring.update(
        id,
        KeyUpdate::new()
            .name("ignored")
            .scopes(ScopeSet::unrestricted()),
    ) {
        Err(Error::ScopeWidening(_)) => {}
        other => panic!("widening to unrestricted gave {other:?}"),
    }
    let after = ring.get(id).unwrap();
    assert_eq!(after.scopes(), &ScopeSet::parse(["invoices:read"]).unwrap());
    assert_eq!(after.name(), "", "a refused update changed the name");
}

#[test]
fn update_of_a_revoked_or_deleted_key_is_refused() {
    let ring = clocked(&ManualClock::new(T0));
    let key = ring.issue(NewKey::new("o").name("n")).unwrap();
    ring.revoke(key.key.id(), "x").unwrap();
    assert!(matches!(
        ring.update(key.key.id(), KeyUpdate::new().name("m")),
        Err(Error::Revoked(id)) if id == key.key.id()
    ));
    assert_eq!(ring.get(key.key.id()).unwrap().name(), "n");
    let gone = ring.issue(NewKey::new("o")).unwrap();
    ring.delete(gone.key.id()).unwrap();
    assert!(matches!(
        ring.update(gone.key.id(), KeyUpdate::new().name("m")),
        Err(Error::NotFound(_))
    ));
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// Events recorded since the last call.
struct Tail {
    log: Arc<EventLog>,
    seen: usize,
}

impl Tail {
    fn next(&mut self) -> Vec<Event> {
        let events = self.log.events();
        let fresh = events[self.seen..].to_vec();
        self.seen = events.len();
        fresh
    }
}

#[track_caller]
fn assert_event(
    event: &Event,
    kind: EventKind,
    key: Option<KeyId>,
    owner: Option<&str>,
    at: OffsetDateTime,
    actor: Option<&str>,
) {
    assert_eq!(event.kind, kind, "{event:?}");
    assert_eq!(event.key, key, "key of {event:?}");
    assert_eq!(event.owner.as_deref(), owner, "owner of {event:?}");
    assert_eq!(event.at, at, "time of {event:?}");
    assert_eq!(event.actor.as_deref(), actor, "actor of {event:?}");
}

#[test]
fn every_operation_emits_its_event_with_key_owner_time_and_actor() {
    let clock = ManualClock::new(T0);
    let log = Arc::new(EventLog::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .events(Arc::clone(&log))
        .revoke_on_password_expiry(true)
        .flush_interval(None)
        .build(fresh_store())
        .unwrap();
    let mut tail = Tail {
        log: Arc::clone(&log),
        seen: 0,
    };
    let alice = ring.by("alice");
    let me = Some("alice");
    let mut secrets: Vec<String> = Vec::new();
    let tick = || {
        clock.advance(Duration::minutes(1));
        clock.now()
    };

    let now = tick();
    let a = alice.issue(NewKey::new("acct_1")).unwrap();
    let a_id = a.key.id();
    secrets.push(a.secret.expose().to_owned());
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Issued,
        Some(a_id),
        Some("acct_1"),
        now,
        me,
    );

    let now = tick();
    let b = alice.rotate(a_id, Duration::hours(1)).unwrap();
    let b_id = b.key.id();
    secrets.push(b.secret.expose().to_owned());
    let ev = tail.next();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Rotated { to: b_id },
        Some(a_id),
        Some("acct_1"),
        now,
        me,
    );
    assert_event(
        &ev[1],
        EventKind::Issued,
        Some(b_id),
        Some("acct_1"),
        now,
        me,
    );

    let now = tick();
    let b2 = alice.regenerate(b_id).unwrap();
    secrets.push(b2.secret.expose().to_owned());
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Regenerated,
        Some(b_id),
        Some("acct_1"),
        now,
        me,
    );

    let now = tick();
    alice.disable(b_id).unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Disabled,
        Some(b_id),
        Some("acct_1"),
        now,
        me,
    );

    // A disabled key presented: the failure names the key and its owner,
    // not the actor.
    let now = tick();
    assert_eq!(
        ring.verify(b2.secret.expose()).unwrap_err(),
        VerifyError::Disabled
    );
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::VerifyFailed(VerifyError::Disabled),
        Some(b_id),
        Some("acct_1"),
        now,
        None,
    );

    let now = tick();
    alice.enable(b_id).unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Enabled,
        Some(b_id),
        Some("acct_1"),
        now,
        me,
    );

    let now = tick();
    alice
        .update(b_id, KeyUpdate::new().name("renamed"))
        .unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Updated,
        Some(b_id),
        Some("acct_1"),
        now,
        me,
    );

    let now = tick();
    alice.revoke(b_id, "leaked").unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Revoked {
            reason: "leaked".into(),
        },
        Some(b_id),
        Some("acct_1"),
        now,
        me,
    );

    let now = tick();
    alice.delete(a_id).unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Deleted,
        Some(a_id),
        Some("acct_1"),
        now,
        me,
    );

    // Every key of an owner: one Revoked per key, then OwnerRevoked.
    let c = alice.issue(NewKey::new("acct_2")).unwrap();
    let d = alice.issue(NewKey::new("acct_2")).unwrap();
    secrets.push(c.secret.expose().to_owned());
    secrets.push(d.secret.expose().to_owned());
    assert_eq!(tail.next().len(), 2);
    let now = tick();
    alice.revoke_owner("acct_2", "offboarded").unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 3, "{ev:?}");
    let mut revoked_ids: Vec<Option<KeyId>> = ev[..2].iter().map(|e| e.key).collect();
    revoked_ids.sort();
    let mut expected = vec![Some(c.key.id()), Some(d.key.id())];
    expected.sort();
    assert_eq!(revoked_ids, expected);
    for e in &ev[..2] {
        assert_event(
            e,
            EventKind::Revoked {
                reason: "offboarded".into(),
            },
            e.key,
            Some("acct_2"),
            now,
            me,
        );
    }
    assert_event(
        &ev[2],
        EventKind::OwnerRevoked { count: 2 },
        None,
        Some("acct_2"),
        now,
        me,
    );

    // Password expiry goes the same way.
    let e = alice.issue(NewKey::new("acct_3")).unwrap();
    secrets.push(e.secret.expose().to_owned());
    tail.next();
    let now = tick();
    assert_eq!(
        alice.owner_password_expired("acct_3").unwrap(),
        vec![e.key.id()]
    );
    let ev = tail.next();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Revoked {
            reason: "owner password expired".into(),
        },
        Some(e.key.id()),
        Some("acct_3"),
        now,
        me,
    );
    assert_event(
        &ev[1],
        EventKind::OwnerRevoked { count: 1 },
        None,
        Some("acct_3"),
        now,
        me,
    );

    let now = tick();
    alice.set_default_expiry(ExpiryPolicy::days(90)).unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::PolicyChanged {
            policy: ExpiryPolicy::days(90),
        },
        None,
        None,
        now,
        me,
    );

    // A key issued before the revoke-all.
    let f = ring.issue(NewKey::new("acct_4")).unwrap();
    secrets.push(f.secret.expose().to_owned());
    let ev = tail.next();
    assert_event(
        &ev[0],
        EventKind::Issued,
        Some(f.key.id()),
        Some("acct_4"),
        clock.now(),
        None,
    );

    let now = tick();
    alice.revoke_all().unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::AllRevoked { epoch: 1 },
        None,
        None,
        now,
        me,
    );

    let now = tick();
    alice.revoke_all().unwrap();
    let ev = tail.next();
    assert_event(
        &ev[0],
        EventKind::AllRevoked { epoch: 2 },
        None,
        None,
        now,
        me,
    );

    // Without `by`, no actor.
    let now = tick();
    let g = ring
        .issue(NewKey::new("acct_5").expiry(ExpiryPolicy::days(1)))
        .unwrap();
    secrets.push(g.secret.expose().to_owned());
    ring.disable(g.key.id()).unwrap();
    ring.enable(g.key.id()).unwrap();
    let ev = tail.next();
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_event(
        &ev[0],
        EventKind::Issued,
        Some(g.key.id()),
        Some("acct_5"),
        now,
        None,
    );
    assert_event(
        &ev[1],
        EventKind::Disabled,
        Some(g.key.id()),
        Some("acct_5"),
        now,
        None,
    );
    assert_event(
        &ev[2],
        EventKind::Enabled,
        Some(g.key.id()),
        Some("acct_5"),
        now,
        None,
    );

    // Failed verifications: reason, the id that parsed, never a secret;
    // the key's owner only when the secret matched (a refusal for its
    // state), never for a wrong secret, which must cost what an unknown
    // id does.
    let now = tick();
    let failures: Vec<(String, VerifyError, Option<KeyId>, Option<&str>)> = vec![
        (
            b2.secret.expose().to_owned(),
            VerifyError::Revoked,
            Some(b_id),
            Some("acct_1"),
        ),
        (
            b.secret.expose().to_owned(),
            VerifyError::Invalid,
            Some(b_id),
            None,
        ),
        (
            a.secret.expose().to_owned(),
            VerifyError::Invalid,
            Some(a_id),
            None,
        ),
        (
            f.secret.expose().to_owned(),
            VerifyError::Revoked,
            Some(f.key.id()),
            Some("acct_4"),
        ),
        (
            wrong_secret(g.secret.expose()),
            VerifyError::Invalid,
            Some(g.key.id()),
            None,
        ),
        (
            format!("{}x", g.secret.expose()),
            VerifyError::Malformed(MalformedReason::WrongLength),
            None,
            None,
        ),
    ];
    for (presented, expected, _, _) in &failures {
        assert_eq!(&ring.verify(presented).unwrap_err(), expected);
    }
    let ev = tail.next();
    assert_eq!(ev.len(), failures.len(), "{ev:?}");
    for (event, (_, error, key, owner)) in ev.iter().zip(&failures) {
        assert_event(
            event,
            EventKind::VerifyFailed(error.clone()),
            *key,
            *owner,
            now,
            None,
        );
    }
    let now = tick();
    clock.advance(Duration::days(2));
    assert_eq!(
        ring.verify(g.secret.expose()).unwrap_err(),
        VerifyError::Expired
    );
    let ev = tail.next();
    assert_event(
        &ev[0],
        EventKind::VerifyFailed(VerifyError::Expired),
        Some(g.key.id()),
        Some("acct_5"),
        now + Duration::days(2),
        None,
    );
    // Successes are not reported by default.
    let h = ring.issue(NewKey::new("acct_6")).unwrap();
    secrets.push(h.secret.expose().to_owned());
    tail.next();
    assert!(ring.verify(h.secret.expose()).is_ok());
    assert!(tail.next().is_empty());

    // No event anywhere contains any secret, or a 10-character run of one.
    let all = log.events();
    assert!(all.len() > 30);
    for event in &all {
        let debug = format!("{event:?}");
        for key in &secrets {
            let secret = secret_part(key);
            assert!(!debug.contains(key.as_str()), "{debug} contains a key");
            for start in 0..=secret.len() - 10 {
                assert!(
                    !debug.contains(&secret[start..start + 10]),
                    "{debug} contains part of a secret"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Findings beyond the acceptance list (see the closing report)
// ---------------------------------------------------------------------------

/// `NewKey::use_limit` promises "at most `limit` successful
/// verifications", and rotate hands the *remaining* uses on. But the old
/// key keeps its own remaining uses during the grace period, so a rotation
/// with a grace doubles the budget (and every further rotation within the
/// grace adds another copy).
#[test]
fn rotation_with_grace_does_not_multiply_a_use_limit() {
    let ring = clocked(&ManualClock::new(T0));
    let old = ring.issue(NewKey::new("o").use_limit(3)).unwrap();
    assert_eq!(check(&ring, &old), Ok(()));
    let new = ring.rotate(old.key.id(), Duration::hours(1)).unwrap();
    assert_eq!(new.key.use_limit(), Some(2));
    let mut successes = 1;
    for _ in 0..5 {
        successes += usize::from(check(&ring, &old).is_ok());
        successes += usize::from(check(&ring, &new).is_ok());
    }
    assert!(
        successes <= 3,
        "a key limited to 3 uses verified {successes} times across one rotation"
    );
}

/// Two rings on one store (the crate supports `Arc<S>` stores for this):
/// a `revoke` by one is seen by the other at once, because it is a record
/// write; a `revoke_all` moves the epoch, which each ring holds in memory,
/// and arrives with the other ring's once-a-second settings reload.
#[test]
fn revoke_all_reaches_another_ring_on_the_same_store() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let (a, b) = two_rings(&store, &clock);
    let one = a.issue(NewKey::new("o")).unwrap();
    let other = a.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&b, &one), Ok(()));

    a.revoke(other.key.id(), "leaked").unwrap();
    assert_eq!(check(&b, &other), Err(VerifyError::Revoked));

    a.revoke_all().unwrap();
    assert_eq!(check(&a, &one), Err(VerifyError::Revoked));
    within_5s(
        "another ring on the same store still accepts a key 5 s after revoke_all",
        || check(&b, &one).is_err(),
    );
    assert_eq!(check(&b, &one), Err(VerifyError::Revoked));
}

/// `regenerate`, `update`, `disable` and `enable` reload the ring settings
/// before they act, as `issue` and `rotate` do: on a ring that has not yet
/// reloaded them (no background thread here; with one, for up to a
/// second), a key another ring revoked with `revoke_all` is refused as
/// revoked, and `regenerate` hands out no new secret for it.
#[test]
fn administrative_writes_see_another_rings_revoke_all_at_once() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let build = || {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap()
    };
    let (a, b) = (build(), build());
    let key = a.issue(NewKey::new("o")).unwrap();
    let disabled = a.issue(NewKey::new("o")).unwrap();
    a.disable(disabled.key.id()).unwrap();
    a.revoke_all().unwrap();

    let id = key.key.id();
    assert!(
        matches!(b.regenerate(id), Err(Error::Revoked(r)) if r == id),
        "regenerate handed out a secret for a key revoked by another ring's revoke_all"
    );
    assert!(matches!(
        b.update(id, KeyUpdate::new().name("renamed")),
        Err(Error::Revoked(r)) if r == id
    ));
    assert!(matches!(b.disable(id), Err(Error::Revoked(r)) if r == id));
    let off = disabled.key.id();
    assert!(matches!(b.enable(off), Err(Error::Revoked(r)) if r == off));
    // Nothing was written: the record keeps its secret and its name.
    assert_eq!(stored(&b, id), key.key);
    assert_eq!(check(&b, &key), Err(VerifyError::Revoked));
}

/// A store whose revoke-all epoch is already at its maximum (an edited
/// export, say) cannot take another revoke-all: it is refused, with
/// nothing written and no event, rather than overflow (a panic, or in a
/// release build a wrapped epoch 0 that the store's merge drops: an `Ok`
/// and an `AllRevoked` event for a revocation that revoked nothing).
#[test]
fn revoke_all_at_the_last_epoch_is_refused_not_wrapped() {
    let clock = ManualClock::new(T0);
    let store = fresh_store();
    let settings: RingSettings = serde_json::from_value(serde_json::json!({
        "default_expiry": "never",
        "default_since": "2026-01-01T00:00:00Z",
        "epoch": u64::MAX,
    }))
    .unwrap();
    store.save_settings(&settings).unwrap();
    let (ring, log) = logged(store, &clock, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    assert!(
        matches!(ring.revoke_all(), Err(Error::InvalidInput(_))),
        "revoke_all at the last epoch was not refused"
    );
    assert_eq!(ring.settings().epoch(), u64::MAX);
    assert_eq!(
        ring.store().load_settings().unwrap().unwrap().epoch(),
        u64::MAX
    );
    assert!(
        !log.events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::AllRevoked { .. })),
        "a refused revoke-all was reported"
    );
    // Keys can still be revoked one by one.
    ring.revoke(key.key.id(), "emergency").unwrap();
    assert_eq!(check(&ring, &key), Err(VerifyError::Revoked));
}

/// Worse than not seeing it: a ring whose settings were loaded before
/// another ring's `revoke_all` writes its stale copy (epoch and all) back
/// on `set_default_expiry`, and so undoes the emergency revocation for
/// every ring built on the store afterwards (e.g. after a restart).
#[test]
fn a_settings_change_on_another_ring_does_not_undo_revoke_all() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let build = || {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap()
    };
    let a = build();
    let b = build();
    let leaked = a.issue(NewKey::new("o")).unwrap();
    a.revoke_all().unwrap();
    assert_eq!(store.load_settings().unwrap().unwrap().epoch(), 1);

    clock.advance(Duration::hours(1));
    b.set_default_expiry(ExpiryPolicy::days(90)).unwrap();
    let saved = store.load_settings().unwrap().unwrap();
    assert_eq!(saved.default_expiry(), ExpiryPolicy::days(90));
    assert_eq!(
        saved.epoch(),
        1,
        "set_default_expiry wrote an old revoke-all epoch back"
    );
    assert_eq!(saved.revoked_all_at(), Some(T0));

    let restarted = build();
    assert_eq!(check(&restarted, &leaked), Err(VerifyError::Revoked));
}

/// A gate the first store flush waits at until the test opens it; later
/// flushes pass. The test learns when that first flush has arrived.
#[derive(Debug, Default)]
struct Gate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    /// A flush is waiting at the gate, or has waited there.
    arrived: bool,
    /// The flush that waited has returned.
    left: bool,
}

impl Gate {
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        if state.arrived {
            return;
        }
        state.arrived = true;
        self.changed.notify_all();
        while !state.open {
            state = self.changed.wait(state).unwrap();
        }
        state.left = true;
    }

    fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.changed.notify_all();
    }

    /// Waits (at most 5 s: a bounded wait, not a timing assertion) for a
    /// flush to arrive at the gate.
    fn wait_for_a_flush(&self) {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut state = self.state.lock().unwrap();
        while !state.arrived {
            let left = give_up.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "no background flush within 5 s");
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    fn held(&self) -> bool {
        let state = self.state.lock().unwrap();
        state.arrived && !state.left
    }
}

/// Opens the gate when dropped, so a failing test never leaves a thread
/// waiting at it (dropping a ring waits for its flush thread).
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// A store whose first flush waits at a [`Gate`].
#[derive(Debug)]
struct GatedFlush {
    inner: TestStore,
    gate: Arc<Gate>,
}

impl KeyStore for GatedFlush {
    inner_reads!();
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.inner.apply(changes)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.gate.pass();
        self.inner.flush()
    }
}

fn gated_store() -> (Arc<GatedFlush>, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let store = GatedFlush {
        inner: fresh_store(),
        gate: Arc::clone(&gate),
    };
    (Arc::new(store), gate)
}

/// A store flush can be long (a `FileStore` compaction takes seconds at a
/// million keys); the once-a-second settings reload must not wait for it,
/// or another ring's `revoke_all` arrives that much later.
#[test]
fn a_long_store_flush_does_not_hold_up_the_settings_reload() {
    let clock = ManualClock::new(T0);
    let (store, gate) = gated_store();
    let (a, b) = two_rings(&store, &clock);
    let _open = OpenOnDrop(Arc::clone(&gate));
    let key = a.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&b, &key), Ok(()));
    gate.wait_for_a_flush();

    a.revoke_all().unwrap();
    within_5s(
        "a ring whose flush is held up still accepts a key 5 s after another ring's revoke_all",
        || check(&b, &key).is_err(),
    );
    assert!(gate.held(), "the flush was released before the end");
}

/// Dropping a ring waits for its background flush to end, so the store
/// is released (a `FileStore`'s lock with it) when the drop returns.
#[test]
fn dropping_the_ring_waits_for_its_background_flush() {
    let (store, gate) = gated_store();
    let ring = KeyRing::builder(PREFIX)
        .clock(ManualClock::new(T0))
        .flush_interval(Some(std::time::Duration::from_millis(50)))
        .build(Arc::clone(&store))
        .unwrap();
    // Dropped before the ring if the test fails before its own drop.
    let _open = OpenOnDrop(Arc::clone(&gate));
    let key = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&ring, &key), Ok(()));
    gate.wait_for_a_flush();
    let opener = std::thread::spawn({
        let gate = Arc::clone(&gate);
        move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            gate.open();
        }
    });

    drop(ring);

    assert!(!gate.held(), "the drop returned while its flush was held");
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "the ring's flush thread still held the store after the drop"
    );
    opener.join().unwrap();
}

/// A store whose next `load_settings` and next `flush` panic, once armed.
#[derive(Debug)]
struct PanicsOnce {
    inner: TestStore,
    settings: std::sync::atomic::AtomicBool,
    flush: std::sync::atomic::AtomicBool,
    /// Records replaced through `apply` (the usage flush writes them).
    replaced: AtomicUsize,
}

impl PanicsOnce {
    fn arm(&self) {
        self.settings.store(true, Ordering::SeqCst);
        self.flush.store(true, Ordering::SeqCst);
    }

    /// Both panics have happened.
    fn spent(&self) -> bool {
        !self.settings.load(Ordering::SeqCst) && !self.flush.load(Ordering::SeqCst)
    }
}

impl KeyStore for PanicsOnce {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.inner.lookup(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.inner.list(owner)
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        if self.settings.swap(false, Ordering::SeqCst) {
            panic!("test store: load_settings panics once");
        }
        self.inner.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let replaces = changes
            .iter()
            .filter(|c| matches!(c, Change::Replace(_) | Change::ReplaceIf { .. }))
            .count();
        self.inner.apply(changes)?;
        self.replaced.fetch_add(replaces, Ordering::SeqCst);
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        if self.flush.swap(false, Ordering::SeqCst) {
            panic!("test store: flush panics once");
        }
        self.inner.flush()
    }
}

/// A store that panics once in a background reload and once in a
/// background flush does not end either thread: usage still reaches the
/// store, and another ring's `revoke_all` still arrives.
#[test]
fn a_panic_in_the_store_does_not_stop_the_background_threads() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(PanicsOnce {
        inner: fresh_store(),
        settings: false.into(),
        flush: false.into(),
        replaced: AtomicUsize::new(0),
    });
    let (a, b) = two_rings(&store, &clock);
    let key = a.issue(NewKey::new("o")).unwrap();

    store.arm();
    within_5s("the background threads never called the store", || {
        store.spent()
    });
    let written = store.replaced.load(Ordering::SeqCst);
    assert_eq!(check(&b, &key), Ok(()));

    // `lookup` would show the use at once (it is the record `verify`
    // counts on): wait for the flush's write of it instead.
    within_5s("no usage was written after a flush panicked", || {
        store.replaced.load(Ordering::SeqCst) > written
    });
    a.revoke_all().unwrap();
    within_5s(
        "another ring's revoke_all never arrived after a reload panicked",
        || check(&b, &key).is_err(),
    );
}

/// The events of `kinds` in `log`, oldest first.
fn store_events(log: &EventLog) -> Vec<EventKind> {
    log.events()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| {
            matches!(
                k,
                EventKind::StoreFailed { .. } | EventKind::StoreRecovered { .. }
            )
        })
        .collect()
}

fn failed(task: StoreTask, error: &str) -> EventKind {
    EventKind::StoreFailed {
        task,
        error: error.to_owned(),
    }
}

/// A background reload or flush that panics is reported as a store
/// failure, without the panic's own message, and then as recovered.
#[test]
fn a_panic_in_a_background_task_is_reported_and_so_is_its_recovery() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(PanicsOnce {
        inner: fresh_store(),
        settings: false.into(),
        flush: false.into(),
        replaced: AtomicUsize::new(0),
    });
    let (_ring, log) = logged(
        Arc::clone(&store),
        &clock,
        Some(std::time::Duration::from_millis(50)),
    );
    store.arm();
    let recovered = |task| {
        let log = Arc::clone(&log);
        move || store_events(&log).contains(&EventKind::StoreRecovered { task })
    };
    within_5s(
        "the reload's recovery was not reported",
        recovered(StoreTask::SettingsReload),
    );
    within_5s(
        "the flush's recovery was not reported",
        recovered(StoreTask::UsageFlush),
    );
    let panicked = "the store panicked (its message went to the panic hook)";
    for task in [StoreTask::SettingsReload, StoreTask::UsageFlush] {
        let mine: Vec<_> = store_events(&log)
            .into_iter()
            .filter(|k| match k {
                EventKind::StoreFailed { task: t, .. } | EventKind::StoreRecovered { task: t } => {
                    *t == task
                }
                _ => false,
            })
            .collect();
        assert_eq!(
            mine,
            [failed(task, panicked), EventKind::StoreRecovered { task }],
            "{task}"
        );
    }
}

/// A store that panics in the last flush, the one the drop of the ring
/// makes, does not make the drop panic (a ring dropped while unwinding,
/// from a handler that panicked, say, would abort the process): the panic
/// is reported as the background flush reports one.
#[test]
fn a_panic_in_the_store_when_the_ring_is_dropped_is_reported_not_raised() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(PanicsOnce {
        inner: fresh_store(),
        settings: false.into(),
        flush: false.into(),
        replaced: AtomicUsize::new(0),
    });
    let (ring, log) = logged(Arc::clone(&store), &clock, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&ring, &key), Ok(()));
    store.arm();
    let written = store.replaced.load(Ordering::SeqCst);

    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(ring)));
    assert!(dropped.is_ok(), "the drop panicked");
    let panicked = "the store panicked (its message went to the panic hook)";
    assert_eq!(
        store_events(&log),
        [failed(StoreTask::UsageFlush, panicked)]
    );
    // The use was written before the store's own flush panicked.
    assert_eq!(store.replaced.load(Ordering::SeqCst), written + 1);
}

/// A store whose reads of the settings, writes and flushes all fail while
/// it is down (a lost database connection, a full disk).
#[derive(Debug)]
struct Outage {
    inner: TestStore,
    down: std::sync::atomic::AtomicBool,
    /// Failed reads of the settings.
    reads_refused: AtomicUsize,
    /// Failed writes and flushes.
    writes_refused: AtomicUsize,
}

impl Outage {
    fn new() -> Outage {
        Outage {
            inner: fresh_store(),
            down: false.into(),
            reads_refused: AtomicUsize::new(0),
            writes_refused: AtomicUsize::new(0),
        }
    }

    fn check(&self, refused: &AtomicUsize) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Io {
                path: "keys".into(),
                source: std::io::Error::other("connection reset"),
            });
        }
        Ok(())
    }
}

impl KeyStore for Outage {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.inner.lookup(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.inner.list(owner)
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        self.check(&self.reads_refused)?;
        self.inner.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.check(&self.writes_refused)?;
        self.inner.apply(changes)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.check(&self.writes_refused)?;
        self.inner.flush()
    }
}

/// While the store is down, each background task reports one failure with
/// the store's error and its cause, however many ticks fail; once it is
/// back, one recovery each.
#[test]
fn a_failing_background_task_is_reported_once_and_its_recovery_once() {
    let store = Arc::new(Outage::new());
    let (ring, log) = logged(
        Arc::clone(&store),
        &ManualClock::new(T0),
        Some(std::time::Duration::from_millis(20)),
    );
    ring.issue(NewKey::new("o")).unwrap();
    store.down.store(true, Ordering::SeqCst);
    within_5s("the failures were not reported", || {
        store_events(&log).len() >= 2
    });
    // Two more settings reloads (one a second) and more flushes fail.
    let reads = store.reads_refused.load(Ordering::SeqCst);
    let writes = store.writes_refused.load(Ordering::SeqCst);
    within_5s("the store was not called again while down", || {
        store.reads_refused.load(Ordering::SeqCst) >= reads + 2
            && store.writes_refused.load(Ordering::SeqCst) >= writes + 2
    });
    let error = "i/o error on keys: connection reset";
    let events = store_events(&log);
    assert_eq!(events.len(), 2, "{events:?}");
    for task in [StoreTask::SettingsReload, StoreTask::UsageFlush] {
        assert!(events.contains(&failed(task, error)), "{task}: {events:?}");
    }
    assert!(
        log.events()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::StoreFailed { .. }))
            .all(|e| e.key.is_none() && e.at == T0),
        "a background failure named a key or the wrong time"
    );

    store.down.store(false, Ordering::SeqCst);
    within_5s("the recoveries were not reported", || {
        store_events(&log).len() == 4
    });
    let events = store_events(&log);
    for task in [StoreTask::SettingsReload, StoreTask::UsageFlush] {
        let at = |kind: &EventKind| events.iter().position(|k| k == kind).unwrap();
        assert!(
            at(&failed(task, error)) < at(&EventKind::StoreRecovered { task }),
            "{task}: {events:?}"
        );
    }
}

/// The last flush, when the ring is dropped, reports its failure: the
/// usage held in memory is lost.
#[test]
fn a_failed_flush_when_the_ring_is_dropped_is_reported() {
    let store = Arc::new(Outage::new());
    let (ring, log) = logged(Arc::clone(&store), &ManualClock::new(T0), None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&ring, &key), Ok(()));
    store.down.store(true, Ordering::SeqCst);
    drop(ring);
    assert_eq!(
        store_events(&log),
        [failed(
            StoreTask::UsageFlush,
            "i/o error on keys: connection reset"
        )]
    );
}

/// A limited key's use that the store fails to write is reported with the
/// key and the store's error, then the verify's own `Unavailable`.
#[test]
fn a_limited_use_the_store_fails_is_reported_with_its_cause() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(WriteLog::new());
    let (ring, log) = logged(Arc::clone(&store), &clock, None);
    let key = ring.issue(NewKey::new("o").use_limit(1)).unwrap();
    let id = key.key.id();
    store.fail(true);
    assert_eq!(
        ring.verify(key.secret.expose()).unwrap_err(),
        VerifyError::Unavailable
    );
    let events = log.events();
    let last: Vec<_> = events[events.len() - 2..]
        .iter()
        .map(|e| (e.kind.clone(), e.key))
        .collect();
    assert_eq!(
        last,
        [
            (
                failed(StoreTask::LimitedUse, "i/o error on keys: disk full"),
                Some(id)
            ),
            (EventKind::VerifyFailed(VerifyError::Unavailable), Some(id)),
        ]
    );
}

/// The report of a limited key's use that the store failed is sent after
/// the verify let go of the ring's write lock, as its other reports are
/// (only administrative operations report under the lock): a sink that
/// reacts to a store failure through the ring, here by disabling a key,
/// gets its answer and the verify returns. It deadlocked, the verify
/// holding the lock while the sink waited for it.
#[test]
fn a_sink_may_call_the_ring_on_a_limited_use_the_store_failed() {
    type Ring = KeyRing<Arc<WriteLog>>;
    struct Disables {
        ring: std::sync::OnceLock<std::sync::Weak<Ring>>,
        other: std::sync::OnceLock<KeyId>,
        answered: std::sync::Mutex<Vec<String>>,
    }
    impl EventSink for Disables {
        fn record(&self, event: &Event) {
            if !matches!(event.kind, EventKind::StoreFailed { .. }) {
                return;
            }
            let ring = self.ring.get().and_then(std::sync::Weak::upgrade);
            if let (Some(ring), Some(&other)) = (ring, self.other.get()) {
                let answer = ring.disable(other);
                self.answered.lock().unwrap().push(format!("{answer:?}"));
            }
        }
    }
    let store = Arc::new(WriteLog::new());
    let sink = Arc::new(Disables {
        ring: std::sync::OnceLock::new(),
        other: std::sync::OnceLock::new(),
        answered: std::sync::Mutex::new(Vec::new()),
    });
    let ring: Arc<Ring> = Arc::new(
        KeyRing::builder(PREFIX)
            .clock(ManualClock::new(T0))
            .events(Arc::clone(&sink))
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap(),
    );
    sink.ring.set(Arc::downgrade(&ring)).unwrap();
    let key = ring.issue(NewKey::new("o").use_limit(1)).unwrap();
    let other = ring.issue(NewKey::new("o")).unwrap();
    sink.other.set(other.key.id()).unwrap();
    store.fail(true);
    let (done, verified) = std::sync::mpsc::channel();
    let verifying = Arc::clone(&ring);
    let secret = key.secret.expose().to_owned();
    // Left running if it deadlocks: the test fails on the timeout.
    std::thread::spawn(move || {
        let _ = done.send(verifying.verify(&secret).map(|v| v.id()));
    });
    let outcome = verified.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(
        outcome,
        Ok(Err(VerifyError::Unavailable)),
        "the verify did not return: the sink waits for the lock it holds"
    );
    // The sink's disable ran, and met the same failing store.
    let answered = sink.answered.lock().unwrap().clone();
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert!(answered[0].contains("disk full"), "{answered:?}");
}

/// A store that, on the first `apply` replacing `target`'s record, first
/// runs `hook` (another ring's write of the same key, slipped in between
/// this ring's read of the record and its write).
struct Interleaved {
    inner: Arc<TestStore>,
    target: std::sync::Mutex<Option<KeyId>>,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Run on the first `apply` that writes settings, before it.
    settings_hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Run by the next `list` in the middle of its scan (see `arm_list`).
    list_hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Run by the next `list` at the end of its scan (see `arm_scanned`).
    scanned_hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Interleaved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interleaved").finish_non_exhaustive()
    }
}

impl Interleaved {
    fn arm(&self, target: KeyId, hook: impl FnOnce() + Send + 'static) {
        *self.target.lock().unwrap() = Some(target);
        *self.hook.lock().unwrap() = Some(Box::new(hook));
    }

    fn fired(&self) -> bool {
        self.hook.lock().unwrap().is_none()
    }

    /// Runs `hook` on the next settings write, between this ring's read of
    /// the settings and its write.
    fn arm_settings(&self, hook: impl FnOnce() + Send + 'static) {
        *self.settings_hook.lock().unwrap() = Some(Box::new(hook));
    }

    fn settings_fired(&self) -> bool {
        self.settings_hook.lock().unwrap().is_none()
    }

    /// Runs `hook` in the middle of the next `list`'s scan: the records
    /// the scan had reached come back as they are after the hook, and a
    /// record the hook added is missed. A `MemoryStore` lists shard by
    /// shard, so its scan can do just that while another ring's batch
    /// lands: reach a new record's shard before the batch inserts it, and
    /// an old record's after the batch replaced it.
    fn arm_list(&self, hook: impl FnOnce() + Send + 'static) {
        *self.list_hook.lock().unwrap() = Some(Box::new(hook));
    }

    /// Runs `hook` when the next `list` has read every record, which come
    /// back as they were read: a write landing after the scan passed its
    /// record, which in a large store takes a while.
    fn arm_scanned(&self, hook: impl FnOnce() + Send + 'static) {
        *self.scanned_hook.lock().unwrap() = Some(Box::new(hook));
    }
}

impl KeyStore for Interleaved {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.inner.lookup(id)
    }
    fn inspect(&self, id: KeyId, f: &mut dyn FnMut(Option<keyward::Lent<'_>>)) {
        self.inner.inspect(id, f)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        let before = self.inner.list(owner)?;
        let scanned = self.scanned_hook.lock().unwrap().take();
        if let Some(hook) = scanned {
            hook();
            return Ok(before);
        }
        let hook = self.list_hook.lock().unwrap().take();
        let Some(hook) = hook else {
            return Ok(before);
        };
        hook();
        Ok(before
            .iter()
            .filter_map(|e| self.inner.lookup(e.id()))
            .collect())
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        self.inner.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let target = *self.target.lock().unwrap();
        let writes_target = changes.iter().any(|c| match c {
            Change::Replace(e) | Change::ReplaceIf { next: e, .. } => Some(e.id()) == target,
            Change::Remove(id) => Some(*id) == target,
            _ => false,
        });
        if writes_target {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        if changes.iter().any(writes_settings) {
            let hook = self.settings_hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.inner.apply(changes)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }
}

type SharedRing = KeyRing<Arc<dyn KeyStore>>;

/// Ring A on a store, and ring B on the same store through [`Interleaved`],
/// where A's write can be slipped into B's.
fn interleaved_rings() -> (Arc<SharedRing>, SharedRing, Arc<Interleaved>) {
    interleaved_rings_on(&ManualClock::new(T0))
}

/// [`interleaved_rings`], both rings on `clock` (and signing access
/// tokens with the same key).
fn interleaved_rings_on(clock: &ManualClock) -> (Arc<SharedRing>, SharedRing, Arc<Interleaved>) {
    interleaved_rings_on_clocks(clock, clock)
}

/// [`interleaved_rings_on`], ring A on `clock_a` and ring B on `clock_b`.
fn interleaved_rings_on_clocks(
    clock_a: &ManualClock,
    clock_b: &ManualClock,
) -> (Arc<SharedRing>, SharedRing, Arc<Interleaved>) {
    let shared = Arc::new(fresh_store());
    let interleaved = interleaved_over(&shared);
    let build = |store, clock: &ManualClock| {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .signing_key(1, [7; 32])
            .flush_interval(None)
            .build(store)
            .unwrap()
    };
    let a = Arc::new(build(Arc::clone(&shared) as Arc<dyn KeyStore>, clock_a));
    let b = build(Arc::clone(&interleaved) as Arc<dyn KeyStore>, clock_b);
    (a, b, interleaved)
}

/// What ring A does to the key while ring B is between reading the record
/// and writing its copy back.
#[derive(Debug, Clone, Copy)]
enum Meanwhile {
    Revoke,
    Regenerate,
    RotateAtOnce,
    Disable,
}

/// What ring B writes from the copy it read before A's write.
#[derive(Debug, Clone, Copy)]
enum StaleWrite {
    Rename,
    UsageFlush,
    /// A verify of a key with a use limit, which writes the use at once.
    LimitedUse,
}

/// Two rings on one store write the same key at once: ring B has read the
/// record, ring A revokes (regenerates, rotates, disables) it, and then B
/// writes its change. B's write must not bring back the record A replaced:
/// a revoked key verifying again, an old secret working after a
/// regeneration, a rotated-out key without its end, a disabled key active.
#[test]
fn a_write_from_another_ring_never_undoes_a_revocation_or_a_new_secret() {
    let mut failures = Vec::new();
    for meanwhile in [
        Meanwhile::Revoke,
        Meanwhile::Regenerate,
        Meanwhile::RotateAtOnce,
        Meanwhile::Disable,
    ] {
        for stale in [
            StaleWrite::Rename,
            StaleWrite::UsageFlush,
            StaleWrite::LimitedUse,
        ] {
            let case = format!("{meanwhile:?} during {stale:?}");
            let (a, b, interleaved) = interleaved_rings();
            let request = NewKey::new("o").name("first");
            let request = match stale {
                StaleWrite::LimitedUse => request.use_limit(10),
                _ => request,
            };
            let issued = a.issue(request).unwrap();
            let id = issued.key.id();
            let old = issued.secret.expose().to_owned();
            // A use for the flush to write.
            b.verify(&old).unwrap();

            let replaced = Arc::new(std::sync::Mutex::new(None::<String>));
            let (ring, out) = (Arc::clone(&a), Arc::clone(&replaced));
            interleaved.arm(id, move || match meanwhile {
                Meanwhile::Revoke => ring.revoke(id, "leaked").unwrap(),
                Meanwhile::Regenerate => {
                    let new = ring.regenerate(id).unwrap();
                    *out.lock().unwrap() = Some(new.secret.expose().to_owned());
                }
                Meanwhile::RotateAtOnce => {
                    let new = ring.rotate(id, Duration::ZERO).unwrap();
                    *out.lock().unwrap() = Some(new.secret.expose().to_owned());
                }
                Meanwhile::Disable => ring.disable(id).unwrap(),
            });
            let outcome = match stale {
                StaleWrite::Rename => b
                    .update(id, KeyUpdate::new().name("second"))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                StaleWrite::UsageFlush => b.flush().map_err(|e| e.to_string()),
                // Written on the record A wrote, or refused by it.
                StaleWrite::LimitedUse => b.verify(&old).map(|_| ()).map_err(|e| e.to_string()),
            };
            assert!(interleaved.fired(), "{case}: ring A's write never ran");
            // B's refused verify spent no use: the record counts the one
            // use before (and no verify of the new secret yet).
            if let StaleWrite::LimitedUse = stale {
                let uses = a.get(id).unwrap().uses();
                if uses != 1 {
                    failures.push(format!("{case}: {uses} uses counted, not 1"));
                }
            }

            let expected = match meanwhile {
                Meanwhile::Revoke => Err(VerifyError::Revoked),
                Meanwhile::Regenerate | Meanwhile::RotateAtOnce => Err(VerifyError::Invalid),
                Meanwhile::Disable => Err(VerifyError::Disabled),
            };
            for (name, ring) in [("ring A", &*a), ("ring B", &b)] {
                let got = ring.verify(&old).map(|_| ());
                let got = match (meanwhile, got) {
                    // A rotated-out key reads as expired once its grace
                    // ends; any refusal is what this test asks.
                    (Meanwhile::RotateAtOnce, Err(_)) => Err(VerifyError::Invalid),
                    (_, got) => got,
                };
                if got != expected {
                    failures.push(format!("{case}: {name} on the old secret: {got:?}"));
                }
            }
            if let Some(new) = replaced.lock().unwrap().as_deref()
                && b.verify(new).is_err()
            {
                failures.push(format!("{case}: the new secret is refused"));
            }
            // B's own change: made on the new record, or refused.
            if let (StaleWrite::Rename, Ok(())) = (stale, &outcome)
                && a.get(id).unwrap().name() != "second"
            {
                failures.push(format!("{case}: the rename was lost"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// An administrative write of ring B read before ring A revoked the key.
#[derive(Debug, Clone, Copy)]
enum StaleAdmin {
    Disable,
    Regenerate,
    RotateAtOnce,
    Revoke,
    RevokeOwner,
    RevokeLeaked,
}

/// Ring B has read a key's record for one of its administrative writes;
/// ring A revokes the key; then B writes. B's write is redone on the
/// revoked record (or refused by it), so the key stays revoked with A's
/// reason: B's copy never brings it back as disabled, with a new secret or
/// a rotated successor, or with B's reason.
#[test]
fn an_administrative_write_from_another_ring_never_undoes_a_revocation() {
    let mut failures = Vec::new();
    for stale in [
        StaleAdmin::Disable,
        StaleAdmin::Regenerate,
        StaleAdmin::RotateAtOnce,
        StaleAdmin::Revoke,
        StaleAdmin::RevokeOwner,
        StaleAdmin::RevokeLeaked,
    ] {
        let case = format!("{stale:?}");
        let (a, b, interleaved) = interleaved_rings();
        let issued = a.issue(NewKey::new("o")).unwrap();
        let id = issued.key.id();
        let old = issued.secret.expose().to_owned();
        let ring = Arc::clone(&a);
        interleaved.arm(id, move || ring.revoke(id, "by ring A").unwrap());
        // B's write is redone on the revoked record, where it is refused
        // or changes nothing: either is right, the state is checked below.
        let new_secret = match stale {
            StaleAdmin::Disable => b.disable(id).err().and(None),
            StaleAdmin::Regenerate => b.regenerate(id).ok().map(|i| i.secret),
            StaleAdmin::RotateAtOnce => b.rotate(id, Duration::ZERO).ok().map(|i| i.secret),
            StaleAdmin::Revoke => b.revoke(id, "by ring B").err().and(None),
            StaleAdmin::RevokeOwner => b.revoke_owner("o", "by ring B").err().and(None),
            StaleAdmin::RevokeLeaked => b.revoke_leaked(&old, "by ring B").err().and(None),
        };
        if !interleaved.fired() {
            failures.push(format!("{case}: ring A's revocation never ran"));
            continue;
        }
        for (name, ring) in [("ring A", &*a), ("ring B", &b)] {
            let got = ring.verify(&old).map(|_| ());
            if got != Err(VerifyError::Revoked) {
                failures.push(format!("{case}: {name} on the old secret: {got:?}"));
            }
            if let Some(new) = &new_secret
                && let Ok(v) = ring.verify(new.expose())
            {
                failures.push(format!("{case}: {name} accepts B's new key {:?}", v.id()));
            }
        }
        match a.get(id).map(|k| k.status().clone()) {
            Some(Status::Revoked { reason, .. }) if reason == "by ring A" => {}
            other => failures.push(format!("{case}: the record now reads {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A store on which another writer gets in first: each `ReplaceIf` of a
/// record finds it rewritten (by an equal copy), `budget` times.
#[derive(Debug)]
struct Raced {
    inner: TestStore,
    budget: AtomicUsize,
    races: AtomicUsize,
}

impl Raced {
    fn new(budget: usize) -> Raced {
        Raced {
            inner: fresh_store(),
            budget: AtomicUsize::new(budget),
            races: AtomicUsize::new(0),
        }
    }

    /// Races the next `budget` conditional writes; returns the races so far.
    fn rearm(&self, budget: usize) -> usize {
        self.budget.store(budget, Ordering::SeqCst);
        self.races.swap(0, Ordering::SeqCst)
    }
}

impl KeyStore for Raced {
    inner_reads!();
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        for change in &changes {
            if let Change::ReplaceIf { next, .. } = change
                && self
                    .budget
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                    .is_ok()
            {
                let current = self.inner.lookup(next.id()).expect("raced record exists");
                self.inner.replace(StoredKey::clone(&current))?;
                self.races.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.inner.apply(changes)
    }
}

fn raced_ring(budget: usize) -> KeyRing<Raced> {
    KeyRing::builder(PREFIX)
        .clock(ManualClock::new(T0))
        .flush_interval(None)
        .build(Raced::new(budget))
        .unwrap()
}

/// An administrative write that meets a conflict on every run gives up
/// after 1024 runs with `StoreError::Conflict`, changing nothing, instead
/// of spinning; the use of a limited key in `verify` after 64, refusing
/// the key as `Unavailable` and spending nothing.
#[test]
fn a_write_that_always_meets_a_conflict_gives_up_with_an_error() {
    let ring = raced_ring(0);
    let issued = ring.issue(NewKey::new("o").name("first")).unwrap();
    let id = issued.key.id();
    let limited = ring.issue(NewKey::new("o").use_limit(5)).unwrap();
    ring.store().rearm(usize::MAX);

    let err = ring
        .update(id, KeyUpdate::new().name("second"))
        .unwrap_err();
    assert!(
        matches!(err, Error::Storage(StoreError::Conflict(c)) if c == id),
        "{err:?}"
    );
    assert_eq!(ring.store().rearm(usize::MAX), 1024);
    let err = ring.revoke(id, "leaked").unwrap_err();
    assert!(
        matches!(err, Error::Storage(StoreError::Conflict(_))),
        "{err:?}"
    );
    assert_eq!(ring.store().rearm(usize::MAX), 1024);
    assert_eq!(ring.get(id).unwrap().name(), "first");
    assert!(ring.verify(issued.secret.expose()).is_ok());

    assert_eq!(check(&ring, &limited), Err(VerifyError::Unavailable));
    assert_eq!(ring.store().rearm(0), 64);
    assert_eq!(ring.get(limited.key.id()).unwrap().uses(), 0);
    assert_eq!(check(&ring, &limited), Ok(()));
    assert_eq!(ring.get(limited.key.id()).unwrap().uses(), 1);
}

/// Another ring writing a key over and over (its holder verifying a
/// limited key, say) cannot hold off its revocation, regeneration or
/// disabling: each is redone until it lands, well past the 64 runs a
/// request's verify allows.
#[test]
fn a_revocation_is_redone_through_a_long_run_of_conflicts() {
    const RACES: usize = 500;
    let ring = raced_ring(0);
    let issue = || ring.issue(NewKey::new("o").use_limit(1_000)).unwrap();
    let (one, two, three, four, five) = (issue(), issue(), issue(), issue(), issue());
    let text = format!("pasted: {}", five.secret.expose());
    type Write<'a> = Box<dyn Fn() -> Result<(), Error> + 'a>;
    let writes: [(&str, &Issued, VerifyError, Write); 4] = [
        (
            "revoke",
            &one,
            VerifyError::Revoked,
            Box::new(|| ring.revoke(one.key.id(), "leaked")),
        ),
        (
            "disable",
            &two,
            VerifyError::Disabled,
            Box::new(|| ring.disable(two.key.id())),
        ),
        (
            "regenerate",
            &three,
            VerifyError::Invalid,
            Box::new(|| ring.regenerate(three.key.id()).map(|_| ())),
        ),
        (
            "revoke_leaked",
            &five,
            VerifyError::Revoked,
            Box::new(|| ring.revoke_leaked(&text, "pasted").map(|_| ())),
        ),
    ];
    for (name, key, refused, write) in writes {
        ring.store().rearm(RACES);
        write().unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(ring.store().rearm(0), RACES, "{name}");
        assert_eq!(check(&ring, key), Err(refused), "{name}");
    }
    ring.store().rearm(RACES);
    let revoked = ring.revoke_owner("o", "offboarded").unwrap();
    assert_eq!(ring.store().rearm(0), RACES);
    // Every key of the owner not revoked before.
    let mut want = vec![two.key.id(), three.key.id(), four.key.id()];
    want.sort();
    assert_eq!(revoked, want);
    assert_eq!(check(&ring, &four), Err(VerifyError::Revoked));
}

/// `revoke_leaked` passes over an old secret of a regenerated key (and a
/// token exchanged with it): the regeneration is what the leak called for,
/// and the clean key must keep working. So also when the regeneration
/// lands (on another ring, or this one's other thread) after the text was
/// checked and before the revocation is written: the secret is judged
/// against the record the revocation replaces.
#[test]
fn revoke_leaked_passes_over_a_key_regenerated_while_it_runs() {
    let clock = ManualClock::new(T0);
    for token in [false, true] {
        let (a, b, interleaved) = interleaved_rings_on(&clock);
        let issued = a.issue(NewKey::new("o")).unwrap();
        let id = issued.key.id();
        let leaked = if token {
            let token = a
                .exchange(issued.secret.expose(), Duration::minutes(5))
                .unwrap();
            token.expose().to_owned()
        } else {
            issued.secret.expose().to_owned()
        };
        clock.advance(Duration::seconds(2));
        let fresh = Arc::new(std::sync::Mutex::new(None));
        let (ring, into) = (Arc::clone(&a), Arc::clone(&fresh));
        interleaved.arm(id, move || {
            *into.lock().unwrap() = Some(ring.regenerate(id).unwrap());
        });
        let revoked = b.revoke_leaked(&format!("pasted: {leaked}"), "leaked");
        assert!(
            interleaved.fired(),
            "token {token}: the regeneration never ran"
        );
        assert_eq!(revoked.unwrap(), Vec::<KeyId>::new(), "token {token}");
        let fresh = fresh.lock().unwrap().take().unwrap();
        assert_eq!(check(&a, &fresh), Ok(()), "token {token}: the clean key");
    }
}

/// `revoke_leaked` sends its `Exposed` events once the revocation is
/// written: one per key however many runs the conflicts cost, and none
/// when it gives up.
#[test]
fn revoke_leaked_reports_an_exposure_once_and_only_when_revoked() {
    let (ring, log) = logged(Raced::new(0), &ManualClock::new(T0), None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    let text = format!("pasted: {}", key.secret.expose());
    let exposed = |log: &EventLog| {
        log.events()
            .iter()
            .filter(|e| e.kind == EventKind::Exposed)
            .count()
    };

    ring.store().rearm(usize::MAX);
    assert!(ring.revoke_leaked(&text, "pasted").is_err());
    assert_eq!(
        exposed(&log),
        0,
        "an exposure reported for a key not revoked"
    );
    assert_eq!(check(&ring, &key), Ok(()));

    ring.store().rearm(3);
    assert_eq!(
        ring.revoke_leaked(&text, "pasted").unwrap(),
        vec![key.key.id()]
    );
    assert_eq!(ring.store().rearm(0), 3);
    assert_eq!(exposed(&log), 1);
    assert_eq!(check(&ring, &key), Err(VerifyError::Revoked));
}

// ---------------------------------------------------------------------------
// From the review of 2026-12-05 (helper-29)
// ---------------------------------------------------------------------------

/// An idle-timeout key in use keeps its whole rotation grace: its own
/// expiry moves with each use, so the grace is not cut at the idle end it
/// had when it was rotated. Idle for an hour, it still ends.
#[test]
fn a_rotated_idle_key_in_use_keeps_its_whole_grace() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::hours(1))))
        .unwrap();
    let new = ring.rotate(old.key.id(), Duration::hours(3)).unwrap();
    assert_eq!(check(&ring, &new), Ok(()));
    for step in 1..=5 {
        clock.set(T0 + Duration::minutes(30 * step));
        assert_eq!(
            check(&ring, &old),
            Ok(()),
            "refused {} minutes into a 3-hour grace, used every 30 minutes",
            30 * step
        );
    }
    clock.set(T0 + Duration::hours(3));
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired), "grace over");

    // Left idle, the old key ends at its idle end, within the grace.
    let old = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::hours(1))))
        .unwrap();
    ring.rotate(old.key.id(), Duration::hours(3)).unwrap();
    clock.advance(Duration::minutes(59));
    assert_eq!(check(&ring, &old), Ok(()));
    clock.advance(Duration::minutes(61));
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired), "idle end");
}

/// A rotation grace is still capped by a fixed deadline of the key.
#[test]
fn a_rotation_grace_never_outlasts_the_keys_deadline() {
    let clock = ManualClock::new(T0);
    let ring = clocked(&clock);
    let old = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Lifetime(Duration::hours(2))))
        .unwrap();
    ring.rotate(old.key.id(), Duration::hours(3)).unwrap();
    assert_eq!(
        ring.get(old.key.id())
            .unwrap()
            .rotation()
            .unwrap()
            .grace_until,
        Some(T0 + Duration::hours(2))
    );
    clock.set(T0 + Duration::hours(2));
    assert_eq!(check(&ring, &old), Err(VerifyError::Expired));
}

/// A store whose settings reads fail while `fail_loads` is set (a database
/// read timing out); writes still land.
#[derive(Debug)]
struct FlakyReads {
    inner: TestStore,
    fail_loads: std::sync::atomic::AtomicBool,
}

impl KeyStore for FlakyReads {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.inner.lookup(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.inner.list(owner)
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("settings read timed out".into()));
        }
        self.inner.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        // Once settings are written, reads fail. (A ring writes them as
        // `SettingsIf`: matching only `Settings` would never arm the
        // failure, and the test below would check nothing.)
        let settings = changes.iter().any(writes_settings);
        self.inner.apply(changes)?;
        if settings {
            self.fail_loads.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A revoke-all or a new default that landed is reported as done, with
/// its event, even when the look at the store after it fails.
#[test]
fn a_settings_change_that_landed_succeeds_and_is_reported() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(FlakyReads {
        inner: fresh_store(),
        fail_loads: false.into(),
    });
    let (ring, log) = logged(Arc::clone(&store), &clock, None);
    store.fail_loads.store(false, Ordering::SeqCst);
    let key = ring.issue(NewKey::new("o")).unwrap();

    ring.revoke_all().expect("the revoke-all landed");
    assert!(
        store.fail_loads.load(Ordering::SeqCst),
        "the store's settings reads did not fail after the write"
    );
    assert_eq!(check(&ring, &key), Err(VerifyError::Revoked));
    assert_eq!(store.inner.load_settings().unwrap().unwrap().epoch(), 1);
    store.fail_loads.store(false, Ordering::SeqCst);
    let policy = ExpiryPolicy::Lifetime(Duration::days(1));
    ring.set_default_expiry(policy)
        .expect("the new default landed");
    assert!(store.fail_loads.load(Ordering::SeqCst));
    assert_eq!(
        store
            .inner
            .load_settings()
            .unwrap()
            .unwrap()
            .default_expiry(),
        policy
    );
    let kinds: Vec<EventKind> = log.events().into_iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&EventKind::AllRevoked { epoch: 1 }),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&EventKind::PolicyChanged { policy }),
        "{kinds:?}"
    );
}

/// A store whose next settings read, once armed, returns only when the
/// test releases it: it holds a reload between its read and its install.
#[derive(Debug)]
struct GatedSettings {
    inner: TestStore,
    armed: std::sync::atomic::AtomicBool,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl KeyStore for GatedSettings {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.inner.lookup(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.inner.list(owner)
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        let read = self.inner.load_settings();
        if self.armed.swap(false, Ordering::SeqCst) {
            self.entered.lock().unwrap().send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        read
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.inner.apply(changes)
    }
}

/// A background reload that read the settings just before this ring wrote
/// a new default does not put the old one back after it: the default "takes
/// effect now" and stays.
#[test]
fn a_reload_that_read_before_a_new_default_does_not_undo_it() {
    let clock = ManualClock::new(T0);
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let store = Arc::new(GatedSettings {
        inner: fresh_store(),
        armed: false.into(),
        entered: std::sync::Mutex::new(entered_tx),
        release: std::sync::Mutex::new(release_rx),
    });
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(Some(std::time::Duration::from_secs(3600)))
        .build(Arc::clone(&store))
        .unwrap();
    let key = ring.issue(NewKey::new("o")).unwrap(); // default: never
    let wait = std::time::Duration::from_secs(5);
    // The background reload (every second) reads the settings...
    store.armed.store(true, Ordering::SeqCst);
    entered.recv_timeout(wait).expect("the reload reads");
    // ...the default is shortened...
    let policy = ExpiryPolicy::Lifetime(Duration::minutes(1));
    ring.set_default_expiry(policy).unwrap();
    clock.set(T0 + Duration::minutes(2));
    assert_eq!(check(&ring, &key), Err(VerifyError::Expired));
    // ...the reload goes on with what it read. Once the next reload has
    // begun to read, that one is over.
    store.armed.store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    entered.recv_timeout(wait).expect("the next reload reads");
    let default = ring.settings().default_expiry();
    let outcome = check(&ring, &key);
    release.send(()).unwrap();
    assert_eq!(
        (default, outcome),
        (policy, Err(VerifyError::Expired)),
        "the reload put the old default back"
    );
}

/// A key revoked by `revoke_all` is already revoked: `revoke_leaked`,
/// `revoke_owner` and `revoke` pass it over (no write, no events, not in
/// the ids returned).
#[test]
fn keys_revoked_by_revoke_all_are_passed_over_by_later_revocations() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(WriteLog::new());
    let (ring, log) = logged(Arc::clone(&store), &clock, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    ring.revoke_all().unwrap();
    assert_eq!(ring.state(key.key.id()), Some(KeyState::Revoked));
    let (events, writes) = (log.events().len(), store.writes.load(Ordering::SeqCst));

    let text = format!("leaked: {}", key.secret.expose());
    assert_eq!(ring.revoke_leaked(&text, "found in a paste").unwrap(), []);
    assert_eq!(ring.revoke_owner("o", "offboarded").unwrap(), []);
    ring.revoke(key.key.id(), "again").unwrap();
    let later: Vec<EventKind> = log.events()[events..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(later, [EventKind::OwnerRevoked { count: 0 }]);
    assert_eq!(
        store.writes.load(Ordering::SeqCst),
        writes,
        "a record was written"
    );
}

/// A default expiry at an instant with an offset of seconds (which RFC
/// 3339, the stored form, cannot write) is kept in UTC, as a key's own
/// expiry is: the store takes it, and a ring built on the store reads the
/// same instant back.
#[test]
fn a_default_expiry_instant_is_kept_in_utc() {
    let odd = keyward::time::UtcOffset::from_hms(1, 0, 30).unwrap();
    let at = (T0 + Duration::days(30)).to_offset(odd);
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let ring = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    ring.set_default_expiry(ExpiryPolicy::At(at)).unwrap();
    let kept = ring.settings().default_expiry();
    assert_eq!(kept, ExpiryPolicy::At(at));
    let ExpiryPolicy::At(kept) = kept else {
        unreachable!()
    };
    assert_eq!(kept.offset(), keyward::time::UtcOffset::UTC);
    drop(ring);
    let again = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    assert_eq!(again.settings().default_expiry(), ExpiryPolicy::At(at));

    // The same through the builder, on a fresh store.
    let built = KeyRing::builder(PREFIX)
        .clock(clock)
        .default_expiry(ExpiryPolicy::At(at))
        .flush_interval(None)
        .build(fresh_store())
        .unwrap();
    let ExpiryPolicy::At(kept) = built.settings().default_expiry() else {
        panic!("not an instant")
    };
    assert_eq!((kept, kept.offset()), (at, keyward::time::UtcOffset::UTC));
}

/// An expired key is not rotated: its successor would start a new life
/// (a default lifetime, an idle timeout) and bring the credential back.
/// Nothing is written; a key still in its life rotates as ever.
#[test]
fn an_expired_key_is_not_rotated_back_to_life() {
    let clock = ManualClock::new(T0);
    let ring = ring_with_default(&clock, ExpiryPolicy::Lifetime(Duration::days(1)));
    let by_default = ring.issue(NewKey::new("o")).unwrap();
    let idle = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::hours(1))))
        .unwrap();
    let fixed = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Lifetime(Duration::hours(12))))
        .unwrap();
    clock.advance(Duration::days(1));
    for key in [&by_default, &idle, &fixed] {
        let id = key.key.id();
        assert_eq!(check(&ring, key), Err(VerifyError::Expired));
        let err = ring.rotate(id, Duration::hours(1)).unwrap_err();
        assert!(matches!(err, Error::Expired(e) if e == id), "{err:?}");
        assert_eq!(err.to_string(), format!("key {id} has expired"));
        assert_eq!(
            ring.get(id).unwrap().rotation(),
            None,
            "a rotation was written"
        );
    }
    assert_eq!(ring.list(&ListFilter::default()).unwrap().len(), 3);
    let fresh = ring.issue(NewKey::new("o")).unwrap();
    assert!(ring.rotate(fresh.key.id(), Duration::hours(1)).is_ok());
}

/// An event sink that panics on a background thread (on `StoreFailed`,
/// say) ends neither background thread: another ring's `revoke_all` still
/// arrives once the store is back. (From helper-36's review: the sink was
/// called outside the threads' `catch_unwind`.)
#[test]
fn a_sink_that_panics_does_not_stop_the_background_threads() {
    struct Picky(Arc<AtomicUsize>);
    impl EventSink for Picky {
        fn record(&self, event: &Event) {
            if matches!(event.kind, EventKind::StoreFailed { .. }) {
                self.0.fetch_add(1, Ordering::SeqCst);
                panic!("test sink: panics on a store failure");
            }
        }
    }
    let clock = ManualClock::new(T0);
    let store = Arc::new(Outage::new());
    let a = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let panics = Arc::new(AtomicUsize::new(0));
    let b = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .events(Picky(Arc::clone(&panics)))
        .flush_interval(Some(std::time::Duration::from_millis(50)))
        .build(Arc::clone(&store))
        .unwrap();
    let key = a.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&b, &key), Ok(()));
    store.down.store(true, Ordering::SeqCst);
    within_5s("both threads did not report a failure", || {
        panics.load(Ordering::SeqCst) >= 2
    });
    store.down.store(false, Ordering::SeqCst);
    a.revoke_all().unwrap();
    within_5s(
        "another ring's revoke_all never arrived after the sink panicked",
        || check(&b, &key).is_err(),
    );
}

/// A limited key's use that meets a conflict at every try is reported with
/// the key and the count of tries, then the verify's own `Unavailable`.
#[test]
fn a_limited_use_that_conflicts_at_every_try_is_reported() {
    let (ring, log) = logged(Raced::new(0), &ManualClock::new(T0), None);
    let key = ring.issue(NewKey::new("o").use_limit(3)).unwrap();
    ring.store().rearm(usize::MAX);
    assert_eq!(check(&ring, &key), Err(VerifyError::Unavailable));
    let events = log.events();
    let last: Vec<_> = events[events.len() - 2..]
        .iter()
        .map(|e| (e.kind.clone(), e.key))
        .collect();
    let id = Some(key.key.id());
    assert_eq!(
        last,
        [
            (
                failed(
                    StoreTask::LimitedUse,
                    &format!(
                        "the record of key {} changed since it was read, 64 times in a row",
                        key.key.id()
                    )
                ),
                id
            ),
            (EventKind::VerifyFailed(VerifyError::Unavailable), id),
        ]
    );
}

/// A sink that panics on an administrative operation's event unwinds into
/// the caller after the change took effect, as `EventSink` documents: the
/// store holds it whole, the events still to send are not sent, and the
/// ring goes on working (its write lock is not left poisoned for good).
#[test]
fn a_sink_that_panics_on_an_operation_leaves_its_change_and_the_ring_whole() {
    struct PanicsOn(std::sync::Mutex<Option<EventKind>>, EventLog);
    impl EventSink for PanicsOn {
        fn record(&self, event: &Event) {
            self.1.record(event);
            let armed = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if armed.is_some_and(|kind| {
                std::mem::discriminant(&kind) == std::mem::discriminant(&event.kind)
            }) {
                panic!("test sink: panics on {:?}", event.kind);
            }
        }
    }
    let sink = Arc::new(PanicsOn(std::sync::Mutex::new(None), EventLog::new()));
    let ring = KeyRing::builder(PREFIX)
        .clock(ManualClock::new(T0))
        .events(Arc::clone(&sink))
        .flush_interval(None)
        .build(fresh_store())
        .unwrap();
    let arm = |kind: Option<EventKind>| *sink.0.lock().unwrap() = kind;
    let kinds = || -> Vec<EventKind> { sink.1.events().into_iter().map(|e| e.kind).collect() };
    let panics = |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();

    // A rotation: in the store whole, its successor's `Issued` not sent.
    let old = ring.issue(NewKey::new("o")).unwrap();
    let sent = kinds().len();
    arm(Some(EventKind::Rotated { to: old.key.id() }));
    assert!(panics(&|| drop(
        ring.rotate(old.key.id(), Duration::hours(1))
    )));
    arm(None);
    let successor = ring
        .get(old.key.id())
        .and_then(|k| k.rotation())
        .and_then(|r| r.rotated_to)
        .expect("the rotation is in the store");
    assert!(ring.get(successor).is_some());
    assert!(
        matches!(kinds()[sent..], [EventKind::Rotated { to }] if to == successor),
        "{:?}",
        &kinds()[sent..]
    );
    // Recovered as after a storage error: regenerate the successor.
    let recovered = ring.regenerate(successor).unwrap();
    assert_eq!(check(&ring, &recovered), Ok(()));
    assert_eq!(check(&ring, &old), Ok(()), "the old key lost its grace");

    // An owner's keys: all revoked in one batch, one `Revoked` sent.
    let a = ring.issue(NewKey::new("p")).unwrap();
    let b = ring.issue(NewKey::new("p")).unwrap();
    let sent = kinds().len();
    arm(Some(EventKind::Revoked {
        reason: String::new(),
    }));
    assert!(panics(&|| drop(ring.revoke_owner("p", "offboarded"))));
    arm(None);
    let reported = kinds()[sent..].to_vec();
    assert!(
        matches!(&reported[..], [EventKind::Revoked { .. }]),
        "{reported:?}"
    );
    assert_eq!(check(&ring, &a), Err(VerifyError::Revoked));
    assert_eq!(check(&ring, &b), Err(VerifyError::Revoked));

    // The ring goes on: every operation takes its write lock.
    let c = ring.issue(NewKey::new("q")).unwrap();
    ring.disable(c.key.id()).unwrap();
    ring.enable(c.key.id()).unwrap();
    ring.revoke(c.key.id(), "done").unwrap();
    assert_eq!(check(&ring, &c), Err(VerifyError::Revoked));
}

/// Dropping a ring whose last flush fails, with a sink that panics on
/// that report, does not panic (dropped while unwinding, that would
/// abort the process).
#[test]
fn a_sink_that_panics_does_not_make_the_drop_panic() {
    struct Panics;
    impl EventSink for Panics {
        fn record(&self, event: &Event) {
            if matches!(event.kind, EventKind::StoreFailed { .. }) {
                panic!("test sink: panics on a store failure");
            }
        }
    }
    let store = Arc::new(Outage::new());
    let ring = KeyRing::builder(PREFIX)
        .clock(ManualClock::new(T0))
        .events(Panics)
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let key = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(check(&ring, &key), Ok(()));
    store.down.store(true, Ordering::SeqCst);
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(ring)));
    assert!(dropped.is_ok(), "the drop panicked");
    assert!(
        store.writes_refused.load(Ordering::SeqCst) > 0,
        "no flush was tried"
    );
}

/// What ring B does to a key that ring A deletes between B's read of the
/// record and B's write.
#[derive(Debug, Clone, Copy)]
enum OnDeleted {
    Disable,
    Update,
    Regenerate,
    Rotate,
    Revoke,
    Delete,
}

/// Ring B has read a record for an administrative write (a delete
/// included); ring A deletes the key; then B writes. The key is gone, which B's write must take as
/// a change since it read (as it takes a conflict), not as a failure of
/// the store: an operation on the deleted key says it is not found, and
/// `revoke_owner` still revokes the owner's other keys instead of failing
/// with a bare "storage error" that leaves them all working.
#[test]
fn a_key_another_ring_deletes_meanwhile_is_not_found_not_a_store_failure() {
    let mut failures = Vec::new();

    let (a, b, interleaved) = interleaved_rings();
    let gone = a.issue(NewKey::new("o")).unwrap();
    let kept = a.issue(NewKey::new("o")).unwrap();
    let (ring, id) = (Arc::clone(&a), gone.key.id());
    interleaved.arm(id, move || ring.delete(id).unwrap());
    match b.revoke_owner("o", "offboarded") {
        Ok(ids) if ids == [kept.key.id()] => {}
        other => failures.push(format!("revoke_owner: {other:?}")),
    }
    assert!(interleaved.fired(), "ring A's delete never ran");
    if check(&a, &kept) != Err(VerifyError::Revoked) {
        failures.push("revoke_owner: the owner's other key still works".into());
    }

    for op in [
        OnDeleted::Disable,
        OnDeleted::Update,
        OnDeleted::Regenerate,
        OnDeleted::Rotate,
        OnDeleted::Revoke,
        OnDeleted::Delete,
    ] {
        let (a, b, interleaved) = interleaved_rings();
        let id = a.issue(NewKey::new("o")).unwrap().key.id();
        let ring = Arc::clone(&a);
        interleaved.arm(id, move || ring.delete(id).unwrap());
        let err = match op {
            OnDeleted::Disable => b.disable(id).err(),
            OnDeleted::Update => b.update(id, KeyUpdate::new().name("n")).err(),
            OnDeleted::Regenerate => b.regenerate(id).err(),
            OnDeleted::Rotate => b.rotate(id, Duration::hours(1)).err(),
            OnDeleted::Revoke => b.revoke(id, "leaked").err(),
            OnDeleted::Delete => b.delete(id).err(),
        };
        assert!(interleaved.fired(), "{op:?}: ring A's delete never ran");
        if !matches!(err, Some(Error::NotFound(e)) if e == id) {
            failures.push(format!("{op:?}: {err:?}"));
        }
        if !b.list(&ListFilter::new()).unwrap().is_empty() {
            failures.push(format!("{op:?}: a record was written"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// `revoke`, `revoke_owner` and `revoke_leaked` pass over the keys a
/// `revoke_all` revoked (see
/// `keys_revoked_by_revoke_all_are_passed_over_by_later_revocations`) on
/// another ring too, one that has not reloaded the settings since (no
/// background thread here; with one, for up to a second): as `issue`,
/// `rotate` and the other administrative writes do, they reload the
/// settings first. No record is written, no `Revoked` event sent, and no
/// id reported as revoked by this call.
#[test]
fn revocations_on_another_ring_pass_over_keys_its_revoke_all_revoked() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let a = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let (b, log) = logged(Arc::clone(&store), &clock, None);
    let key = a.issue(NewKey::new("o")).unwrap();
    let id = key.key.id();
    a.revoke_all().unwrap();
    let seen = log.events().len();

    let text = format!("leaked: {}", key.secret.expose());
    assert_eq!(b.revoke_leaked(&text, "found in a paste").unwrap(), []);
    assert_eq!(b.revoke_owner("o", "offboarded").unwrap(), []);
    b.revoke(id, "again").unwrap();
    let later: Vec<EventKind> = log.events()[seen..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(later, [EventKind::OwnerRevoked { count: 0 }]);
    assert_eq!(stored(&b, id), key.key, "the record was written");
    assert_eq!(check(&b, &key), Err(VerifyError::Revoked));
}

/// An update that changes nothing (no field given, or each given field at
/// the value it has) writes nothing and sends no `Updated` event, which
/// says that a key's fields changed; it returns the key as it stands. An
/// update that changes a field still does both.
#[test]
fn an_update_that_changes_nothing_is_neither_written_nor_reported() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(CountingStore::default());
    let (ring, log) = logged(Arc::clone(&store), &clock, None);
    let scopes = ScopeSet::parse(["invoices:read"]).unwrap();
    let key = ring
        .issue(
            NewKey::new("o")
                .name("n")
                .contact(contact())
                .scopes(scopes.clone()),
        )
        .unwrap();
    let id = key.key.id();
    let (writes, events) = (store.writes(), log.events().len());
    for same in [
        KeyUpdate::new(),
        KeyUpdate::new().name("n"),
        KeyUpdate::new()
            .contact(Some(contact()))
            .description(None)
            .metadata(BTreeMap::new())
            .scopes(scopes),
    ] {
        assert_eq!(ring.by("alice").update(id, same).unwrap(), key.key);
    }
    assert_eq!(store.writes(), writes, "a record was written");
    assert_eq!(log.events()[events..], [], "an event was sent");

    let renamed = ring.update(id, KeyUpdate::new().name("m")).unwrap();
    assert_eq!(renamed.name(), "m");
    assert_eq!(store.writes()[1], writes[1] + 1);
    let kinds: Vec<EventKind> = log.events()[events..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, [EventKind::Updated]);
}

/// Nor while the key is in use: `verify` counts a use in the record, in
/// place, and a use counted between the update's copy of the record and
/// its comparison is not a changed field. (On a ring that compared the
/// usage too, such an update was written and reported as `Updated`: a
/// race, so the updates run until one is reported, or 20,000 times.)
#[test]
fn an_update_that_changes_nothing_is_not_reported_while_the_key_is_in_use() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged(fresh_store(), &clock, None);
    let issued = ring.issue(NewKey::new("o").name("n")).unwrap();
    let id = issued.key.id();
    let secret = issued.secret.expose().to_owned();
    let events = log.events().len();
    let done = std::sync::atomic::AtomicBool::new(false);
    let updates = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                ring.verify(&secret).unwrap();
            }
        });
        while ring.get(id).unwrap().uses() == 0 {
            std::thread::yield_now();
        }
        let mut updates = 0;
        while updates < 20_000 && log.events().len() == events {
            ring.update(id, KeyUpdate::new().name("n")).unwrap();
            updates += 1;
        }
        done.store(true, Ordering::Relaxed);
        updates
    });
    let kinds: Vec<EventKind> = log.events()[events..]
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, [], "after {updates} updates that change nothing");
    assert!(ring.get(id).unwrap().uses() > 0);
}

/// A rotation hands a limited key's remaining uses to its successor and
/// ends the key at once (its grace ends at the rotating ring's clock
/// reading). Ring A rotates the key while ring B is spending a use of it,
/// after B read its clock (a moment before A's): B's write meets the
/// rotated record, and must not spend a use of it, or the key and its
/// successor grant one use more than the limit.
#[test]
fn a_limited_key_rotated_by_another_ring_during_a_use_grants_no_extra_use() {
    let clock = ManualClock::new(T0);
    let (a, b, interleaved) = interleaved_rings_on(&clock);
    let issued = a.issue(NewKey::new("o").use_limit(2)).unwrap();
    let id = issued.key.id();
    let old = issued.secret.expose().to_owned();
    b.verify(&old).unwrap();

    let successor = Arc::new(std::sync::Mutex::new(None::<String>));
    let (ring, out, later) = (Arc::clone(&a), Arc::clone(&successor), clock.clone());
    interleaved.arm(id, move || {
        later.advance(Duration::seconds(1));
        let new = ring.rotate(id, Duration::ZERO).unwrap();
        *out.lock().unwrap() = Some(new.secret.expose().to_owned());
    });
    let during = b.verify(&old).map(|_| ());
    assert!(interleaved.fired(), "ring A's rotation never ran");
    let new = successor.lock().unwrap().clone().unwrap();
    let mut granted = 1 + usize::from(during.is_ok());
    // Bounded: a broken limit must fail the test, not hang it.
    while granted <= 4 && a.verify(&new).is_ok() {
        granted += 1;
    }
    assert_eq!(
        (granted, during, a.get(id).unwrap().uses()),
        (2, Err(VerifyError::Expired), 1),
        "uses granted in all, ring B's verify during the rotation, uses of the old key"
    );
}

/// Setting the default already in force writes nothing, and must not put
/// back settings older than the ones the ring took while it read them:
/// here, another ring's shorter default, which a refresh took meanwhile.
#[test]
fn setting_the_default_in_force_does_not_put_back_older_settings() {
    let clock = ManualClock::new(T0);
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let store = Arc::new(GatedSettings {
        inner: fresh_store(),
        armed: false.into(),
        entered: std::sync::Mutex::new(entered_tx),
        release: std::sync::Mutex::new(release_rx),
    });
    let build = || {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap()
    };
    let a = Arc::new(build());
    let b = build();
    let key = a.issue(NewKey::new("o")).unwrap(); // default: never
    clock.set(T0 + Duration::days(10));
    // Ring A sets the default it has, and has read the settings...
    store.armed.store(true, Ordering::SeqCst);
    let again = {
        let a = Arc::clone(&a);
        std::thread::spawn(move || a.set_default_expiry(ExpiryPolicy::Never))
    };
    let wait = std::time::Duration::from_secs(5);
    entered
        .recv_timeout(wait)
        .expect("ring A reads the settings");
    // ...when ring B shortens the default, and ring A takes that.
    let policy = ExpiryPolicy::Lifetime(Duration::days(1));
    b.set_default_expiry(policy).unwrap();
    a.refresh().unwrap();
    release.send(()).unwrap();
    again.join().unwrap().unwrap();
    clock.set(T0 + Duration::days(12));
    assert_eq!(check(&b, &key), Err(VerifyError::Expired));
    assert_eq!(
        (a.settings().default_expiry(), check(&a, &key)),
        (policy, Err(VerifyError::Expired)),
        "ring A put the settings it read back over newer ones"
    );
}

/// Whether `change` writes the ring settings.
fn writes_settings(change: &Change) -> bool {
    matches!(change, Change::Settings(_) | Change::SettingsIf { .. })
}

/// Ring B's `revoke_all` read the settings, then ring A changed the
/// default, then B wrote: B's write must not put back the default it read,
/// undoing A's (here from a day to never, so keys A's default would end
/// live on).
#[test]
fn a_revoke_all_racing_a_new_default_keeps_the_new_default() {
    let clock = ManualClock::new(T0);
    let (a, b, interleaved) = interleaved_rings_on(&clock);
    let hook_ring = Arc::clone(&a);
    interleaved.arm_settings(move || {
        hook_ring.set_default_expiry(ExpiryPolicy::days(1)).unwrap();
    });
    b.revoke_all().unwrap();
    assert!(interleaved.settings_fired());
    assert_eq!(b.settings().default_expiry(), ExpiryPolicy::days(1));
    assert_eq!(b.settings().epoch(), 1);
    a.refresh().unwrap();
    assert_eq!(a.settings().default_expiry(), ExpiryPolicy::days(1));
    // A key issued after both lives a day, as the store's default says.
    let key = b.issue(NewKey::new("o")).unwrap();
    clock.advance(Duration::days(2));
    assert_eq!(check(&b, &key), Err(VerifyError::Expired));
    assert_eq!(check(&a, &key), Err(VerifyError::Expired));
}

/// Ring B's `set_default_expiry` read the settings, then ring A set a
/// one-hour idle timeout, and B's write stalled for two hours (a store's
/// stall stands in for any window longer than the period): an idle key
/// expired under A's default meanwhile, and must stay expired once B's
/// default lands, as it does when the two changes come one after the
/// other.
#[test]
fn a_default_change_racing_another_keeps_keys_expired_under_it() {
    let clock = ManualClock::new(T0);
    let (a, b, interleaved) = interleaved_rings_on(&clock);
    let key = a.issue(NewKey::new("o")).unwrap();
    clock.advance(Duration::days(5));
    let hook_ring = Arc::clone(&a);
    let hook_clock = clock.clone();
    let presented = key.secret.expose().to_owned();
    interleaved.arm_settings(move || {
        hook_ring
            .set_default_expiry(ExpiryPolicy::Idle(Duration::hours(1)))
            .unwrap();
        hook_clock.advance(Duration::hours(2));
        // Under A's default alone, the key has idled out.
        assert_eq!(
            hook_ring.verify(&presented).map(|_| ()),
            Err(VerifyError::Expired)
        );
    });
    b.set_default_expiry(ExpiryPolicy::days(30)).unwrap();
    assert!(interleaved.settings_fired());
    // The last write wins the default...
    assert_eq!(b.settings().default_expiry(), ExpiryPolicy::days(30));
    a.refresh().unwrap();
    assert_eq!(a.settings().default_expiry(), ExpiryPolicy::days(30));
    // ...and the key A's default ended stays ended.
    assert_eq!(check(&b, &key), Err(VerifyError::Expired));
    assert_eq!(check(&a, &key), Err(VerifyError::Expired));
}

/// Two rings calling `revoke_all` at once each raise the epoch: the
/// second does not land on the epoch the first wrote.
#[test]
fn two_racing_revoke_alls_each_raise_the_epoch() {
    let clock = ManualClock::new(T0);
    let (a, b, interleaved) = interleaved_rings_on(&clock);
    let hook_ring = Arc::clone(&a);
    interleaved.arm_settings(move || hook_ring.revoke_all().unwrap());
    b.revoke_all().unwrap();
    assert!(interleaved.settings_fired());
    assert_eq!(b.settings().epoch(), 2);
    a.refresh().unwrap();
    assert_eq!(a.settings().epoch(), 2);
}

/// [`Interleaved`] over `shared`, unarmed.
fn interleaved_over(shared: &Arc<TestStore>) -> Arc<Interleaved> {
    Arc::new(Interleaved {
        inner: Arc::clone(shared),
        target: std::sync::Mutex::new(None),
        hook: std::sync::Mutex::new(None),
        settings_hook: std::sync::Mutex::new(None),
        list_hook: std::sync::Mutex::new(None),
        scanned_hook: std::sync::Mutex::new(None),
    })
}

/// A `revoke_all` redone after another ring's reports the epoch it wrote
/// and marks the revoke-all at the time of the write that landed (the
/// clock read again), not of its refused first attempt: a revoke-all
/// instant moved back would let a ring built later take, in its plain
/// token checks, tokens exchanged in between.
#[test]
fn a_redone_revoke_all_reports_and_marks_what_it_wrote() {
    let clock = ManualClock::new(T0);
    let shared = Arc::new(fresh_store());
    let interleaved = interleaved_over(&shared);
    let a = Arc::new(
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None)
            .build(Arc::clone(&shared))
            .unwrap(),
    );
    let (b, log) = logged(Arc::clone(&interleaved), &clock, None);
    let (hook_ring, hook_clock) = (Arc::clone(&a), clock.clone());
    interleaved.arm_settings(move || {
        hook_clock.advance(Duration::minutes(1));
        hook_ring.revoke_all().unwrap();
    });
    b.revoke_all().unwrap();
    assert!(interleaved.settings_fired());
    let at = T0 + Duration::minutes(1);
    let stored = shared.load_settings().unwrap().unwrap();
    assert_eq!((stored.epoch(), stored.revoked_all_at()), (2, Some(at)));
    let reported: Vec<_> = log
        .events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::AllRevoked { .. }))
        .map(|e| (e.kind, e.at))
        .collect();
    assert_eq!(reported, vec![(EventKind::AllRevoked { epoch: 2 }, at)]);
}

/// Two rings built at once on a store without settings: the one whose
/// first settings write comes second takes the settings the other wrote,
/// rather than putting its own default over them while the other ring
/// holds another.
#[test]
fn a_ring_built_racing_another_on_an_empty_store_takes_its_settings() {
    let clock = ManualClock::new(T0);
    let shared = Arc::new(fresh_store());
    let interleaved = interleaved_over(&shared);
    let first = Arc::new(std::sync::Mutex::new(None));
    let (slot, hook_store, hook_clock) = (Arc::clone(&first), Arc::clone(&shared), clock.clone());
    interleaved.arm_settings(move || {
        let ring = KeyRing::builder(PREFIX)
            .clock(hook_clock)
            .flush_interval(None)
            .default_expiry(ExpiryPolicy::days(1))
            .build(hook_store)
            .unwrap();
        *slot.lock().unwrap() = Some(ring);
    });
    let b = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .flush_interval(None)
        .default_expiry(ExpiryPolicy::days(30))
        .build(Arc::clone(&interleaved))
        .unwrap();
    assert!(interleaved.settings_fired());
    let a = first
        .lock()
        .unwrap()
        .take()
        .expect("ring A built in the hook");
    let stored = shared.load_settings().unwrap().unwrap();
    assert_eq!(stored.default_expiry(), ExpiryPolicy::days(1));
    assert_eq!(a.settings(), stored);
    assert_eq!(b.settings(), stored);
}

/// A store whose `load_settings` answers a stale copy for a while after
/// another ring's write (a cache fed by notifications, which the contract
/// forbids but a host may still build).
#[derive(Debug)]
struct Lagging {
    inner: Arc<TestStore>,
    stale: std::sync::Mutex<Option<(RingSettings, std::time::Instant)>>,
}

impl KeyStore for Lagging {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.inner.lookup(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.inner.list(owner)
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        if let Some((stale, until)) = &*self.stale.lock().unwrap()
            && std::time::Instant::now() < *until
        {
            return Ok(Some(stale.clone()));
        }
        self.inner.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.inner.apply(changes)
    }
}

/// A `revoke_all` through a store whose settings copy lags another ring's
/// write by 50 ms: each run's conditional write conflicts until the copy
/// catches up, and the ring waits between runs rather than spending them
/// all at once, so the emergency stop lands (keeping the other ring's
/// default).
#[test]
fn a_revoke_all_waits_out_a_settings_copy_that_lags() {
    let clock = ManualClock::new(T0);
    let shared = Arc::new(fresh_store());
    let build = |store: Arc<dyn KeyStore>| {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None)
            .build(store)
            .unwrap()
    };
    let a = build(Arc::clone(&shared) as Arc<dyn KeyStore>);
    let lagging = Arc::new(Lagging {
        inner: Arc::clone(&shared),
        stale: std::sync::Mutex::new(None),
    });
    let b = build(Arc::clone(&lagging) as Arc<dyn KeyStore>);
    let before = shared.load_settings().unwrap().unwrap();
    a.set_default_expiry(ExpiryPolicy::days(1)).unwrap();
    *lagging.stale.lock().unwrap() = Some((
        before,
        std::time::Instant::now() + std::time::Duration::from_millis(50),
    ));
    b.revoke_all().unwrap();
    let stored = shared.load_settings().unwrap().unwrap();
    assert_eq!(stored.epoch(), 1);
    assert_eq!(stored.default_expiry(), ExpiryPolicy::days(1));
}

/// `KeyState` names itself in snake case, the same in `as_str`, `Display`
/// and serde (JSON for an administrator's view), and reads back.
#[test]
fn key_states_have_stable_names() {
    let states = [
        (KeyState::Active, "active"),
        (KeyState::Disabled, "disabled"),
        (KeyState::Revoked, "revoked"),
        (KeyState::Expired, "expired"),
        (KeyState::UsedUp, "used_up"),
    ];
    for (state, name) in states {
        assert_eq!(state.as_str(), name);
        assert_eq!(state.to_string(), name);
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<KeyState>(&json).unwrap(), state);
    }
}

/// A refused verify's event names the key's owner when the presented
/// secret matched (a refusal for scope or state): the host's audit log
/// sees whose key was refused. A wrong secret for a stored id carries the
/// id only, like an id naming no key (the two must cost the same, and an
/// id alone must not reveal its owner); a string that does not parse
/// carries neither.
#[test]
fn a_refused_verify_reports_the_owner_of_the_key_it_names() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged(fresh_store(), &clock, None);
    let key = ring
        .issue(NewKey::new("acct_7").scopes(ScopeSet::parse(["a:read"]).unwrap()))
        .unwrap();
    let refused_with = |presented: &str, need: Option<&Requirement>| {
        let outcome = match need {
            Some(need) => ring.verify_with(presented, need).map(|_| ()),
            None => ring.verify(presented).map(|_| ()),
        };
        assert!(outcome.is_err());
        let events = log.events();
        let last = events.last().unwrap();
        assert!(matches!(last.kind, EventKind::VerifyFailed(_)));
        (last.key, last.owner.clone())
    };
    let write = Requirement::scope("a:write").unwrap();
    let id = Some(key.key.id());
    let owner = Some("acct_7".to_owned());
    assert_eq!(
        refused_with(key.secret.expose(), Some(&write)),
        (id, owner.clone())
    );
    let guessed = wrong_secret(key.secret.expose());
    assert_eq!(refused_with(&guessed, None), (id, None));
    ring.disable(key.key.id()).unwrap();
    assert_eq!(refused_with(key.secret.expose(), None), (id, owner));
    ring.delete(key.key.id()).unwrap();
    assert_eq!(refused_with(key.secret.expose(), None), (id, None));
    assert_eq!(refused_with("acme_nope", None), (None, None));
}

/// Settings of another ring put into the store under a running ring (a
/// database edited by hand, say): another prefix, or another pepper's
/// check. The ring neither installs them (a reload reports
/// `ForeignSettings`) nor writes over them (`revoke_all` and a new default
/// are refused), and its keys verify as before.
#[test]
fn a_ring_refuses_foreign_settings_put_in_its_store() {
    let other_pepper = KeyRing::builder(PREFIX)
        .pepper([9; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let their_check = serde_json::to_value(other_pepper.settings()).unwrap()["check"].clone();
    for (field, value) in [
        ("prefix", serde_json::json!("other")),
        ("check", their_check),
    ] {
        let clock = ManualClock::new(T0);
        let store = Arc::new(fresh_store());
        let ring = KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap();
        let key = ring.issue(NewKey::new("o")).unwrap();
        let mut foreign = serde_json::to_value(store.load_settings().unwrap().unwrap()).unwrap();
        foreign[field] = value;
        let foreign: RingSettings = serde_json::from_value(foreign).unwrap();
        store.save_settings(&foreign).unwrap();
        assert_eq!(store.load_settings().unwrap().as_ref(), Some(&foreign));

        let refused = |result: Result<(), Error>| {
            assert!(
                matches!(result, Err(Error::Storage(StoreError::ForeignSettings))),
                "{field}: {result:?}"
            );
        };
        refused(ring.refresh());
        refused(ring.revoke_all());
        refused(ring.set_default_expiry(ExpiryPolicy::days(3)));
        assert_eq!(ring.settings().prefix(), Some(PREFIX));
        assert_eq!(store.load_settings().unwrap(), Some(foreign), "{field}");
        assert_eq!(check(&ring, &key), Ok(()));
    }
}

/// Ring A rotates (twice over) a key of an owner while ring B's
/// `revoke_owner` lists the owner's keys, and B's scan sees the rotated-out
/// key but misses its successors. The successors inherit the owner and
/// were in the store before B revoked anything: once `revoke_owner`
/// returns, none of the owner's keys may verify.
#[test]
fn revoke_owner_revokes_the_successor_of_a_key_rotated_while_it_lists() {
    let (a, b, interleaved) = interleaved_rings();
    let old = a.issue(NewKey::new("alice")).unwrap();
    let successors = Arc::new(std::sync::Mutex::new(Vec::<Issued>::new()));
    let (ring, out) = (Arc::clone(&a), Arc::clone(&successors));
    let id = old.key.id();
    interleaved.arm_list(move || {
        let first = ring.rotate(id, Duration::hours(1)).unwrap();
        let second = ring.rotate(first.key.id(), Duration::hours(1)).unwrap();
        out.lock().unwrap().extend([first, second]);
    });

    let revoked_ids = b.revoke_owner("alice", "offboarded").unwrap();
    let successors = successors.lock().unwrap();
    assert_eq!(successors.len(), 2, "ring A's rotations never ran");
    let mut expected: Vec<KeyId> = [&old]
        .into_iter()
        .chain(successors.iter())
        .map(|k| k.key.id())
        .collect();
    expected.sort();
    assert_eq!(revoked_ids, expected);
    for key in [&old].into_iter().chain(successors.iter()) {
        for ring in [&*a, &b] {
            assert_eq!(check(ring, key), Err(VerifyError::Revoked));
        }
    }
}

/// Arms `interleaved` to spend a use of the limited key `secret` on `ring`
/// as each `list` ends its scan, as a holder who keeps using the key on
/// another ring would within each scan of a large store; counts the uses.
fn use_on_each_list(
    interleaved: &Arc<Interleaved>,
    ring: &Arc<SharedRing>,
    secret: &Arc<str>,
    uses: &Arc<AtomicUsize>,
) {
    let (again, ring, secret, uses) = (
        Arc::clone(interleaved),
        Arc::clone(ring),
        Arc::clone(secret),
        Arc::clone(uses),
    );
    interleaved.arm_scanned(move || {
        ring.verify(&secret).unwrap();
        uses.fetch_add(1, Ordering::SeqCst);
        use_on_each_list(&again, &ring, &secret, &uses);
    });
}

/// The holder of a limited key uses it on ring A during every scan ring
/// B's `revoke_owner` makes of the store. Each use writes the record, so a
/// run that scanned again meets a conflict every time, and after its
/// 1024 runs the revocation failed while the key kept working. A redone
/// run reads the owner's keys again by id: the revocation lands.
#[test]
fn revoke_owner_is_not_held_off_by_uses_on_another_ring_during_its_scans() {
    let (a, b, interleaved) = interleaved_rings();
    let used = a.issue(NewKey::new("alice").use_limit(u64::MAX)).unwrap();
    let other = a.issue(NewKey::new("alice")).unwrap();
    let uses = Arc::new(AtomicUsize::new(0));
    let secret: Arc<str> = used.secret.expose().into();
    use_on_each_list(&interleaved, &a, &secret, &uses);

    let revoked = b.revoke_owner("alice", "offboarded");
    interleaved.arm_scanned(|| {});

    let revoked = revoked.unwrap_or_else(|e| {
        panic!(
            "the revocation failed ({e}) after {} uses meanwhile",
            uses.load(Ordering::SeqCst)
        )
    });
    let mut expected = vec![used.key.id(), other.key.id()];
    expected.sort();
    assert_eq!(revoked, expected);
    assert_eq!(uses.load(Ordering::SeqCst), 1, "scanned more than once");
    for key in [&used, &other] {
        for ring in [&*a, &b] {
            assert_eq!(check(ring, key), Err(VerifyError::Revoked));
        }
    }
}

/// Ring B's `regenerate` read the clock and the record, and its write took
/// long enough to cross into the next second (a slow fsync); meanwhile an
/// exchange of the old secret (on another ring, or another thread of B)
/// found the record as it was and minted a token in that next second. Once
/// the regeneration has returned, the strict checks must refuse that token,
/// as they refuse every token of the old secret: it would otherwise pass
/// them for its whole life.
#[test]
fn a_token_of_the_old_secret_minted_while_a_regeneration_lands_fails_the_strict_checks() {
    let clock = ManualClock::new(T0);
    let (a, b, interleaved) = interleaved_rings_on(&clock);
    let key = a.issue(NewKey::new("o")).unwrap();
    let id = key.key.id();
    let old = key.secret.expose().to_owned();
    let minted = Arc::new(std::sync::Mutex::new(None::<String>));
    let (ring, hook_clock, out) = (Arc::clone(&a), clock.clone(), Arc::clone(&minted));
    interleaved.arm(id, move || {
        hook_clock.advance(Duration::seconds(1));
        let token = ring.exchange(&old, Duration::minutes(10)).unwrap();
        *out.lock().unwrap() = Some(token.expose().to_owned());
    });
    let new = b.regenerate(id).unwrap();
    assert!(interleaved.fired(), "the exchange never ran");
    let token = minted.lock().unwrap().take().unwrap();
    clock.advance(Duration::seconds(5));
    for (name, ring) in [("A", &*a), ("B", &b)] {
        assert_eq!(
            ring.verify_access_token_strict(&token).map(|_| ()),
            Err(VerifyError::Revoked),
            "ring {name}: a token of the old secret passed the strict check"
        );
    }
    // The new secret works, and its tokens pass.
    assert!(check(&a, &new).is_ok());
    let fresh = a
        .exchange(new.secret.expose(), Duration::minutes(10))
        .unwrap();
    assert!(a.verify_access_token_strict(fresh.expose()).is_ok());
}

/// Ring B's `revoke_all` read the clock and the settings, and its write
/// took long enough to cross into the next second; meanwhile an exchange
/// on ring A read the settings (still the old epoch), checked the key and
/// minted a token in that next second. Once the revoke-all has landed, no
/// ring may take that token, a ring built afterwards included, not even in
/// the plain check: the revoke-all ended the key it was minted from.
#[test]
fn a_token_minted_while_a_revoke_all_lands_is_refused_by_the_plain_check() {
    let clock = ManualClock::new(T0);
    let (a, b, interleaved) = interleaved_rings_on(&clock);
    let key = a.issue(NewKey::new("o")).unwrap();
    let secret = key.secret.expose().to_owned();
    let minted = Arc::new(std::sync::Mutex::new(None::<String>));
    let (ring, hook_clock, out) = (Arc::clone(&a), clock.clone(), Arc::clone(&minted));
    interleaved.arm_settings(move || {
        hook_clock.advance(Duration::seconds(1));
        let token = ring.exchange(&secret, Duration::minutes(10)).unwrap();
        *out.lock().unwrap() = Some(token.expose().to_owned());
    });
    b.revoke_all().unwrap();
    assert!(interleaved.settings_fired(), "the exchange never ran");
    let token = minted.lock().unwrap().take().unwrap();
    clock.advance(Duration::seconds(5));
    a.refresh().unwrap();
    let later = KeyRing::builder(PREFIX)
        .clock(clock.clone())
        .signing_key(1, [7; 32])
        .flush_interval(None)
        .build(Arc::clone(&interleaved) as Arc<dyn KeyStore>)
        .unwrap();
    for (name, ring) in [("A", &*a), ("B", &b), ("built later", &later)] {
        assert_eq!(
            ring.verify_access_token(&token).map(|_| ()),
            Err(VerifyError::Revoked),
            "ring {name}: a token minted from a revoked key passed the plain check"
        );
    }
    assert_eq!(check(&a, &key), Err(VerifyError::Revoked));
}

/// A [`WriteLog`] whose armed write lands and takes a second (the clock
/// moves on while it is written), after which every write fails (a disk
/// that has just filled up).
#[derive(Debug)]
struct LandsSlowlyThenFails {
    inner: WriteLog,
    clock: ManualClock,
    armed: std::sync::atomic::AtomicBool,
}

impl KeyStore for LandsSlowlyThenFails {
    inner_reads!();
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.inner.apply(changes)?;
        if self.armed.swap(false, Ordering::SeqCst) {
            self.clock.advance(Duration::seconds(1));
            self.inner.fail(true);
        }
        Ok(())
    }
}

/// `regenerate` and `revoke_all` whose first write lands across a second
/// boundary, and whose second write (the cut of the tokens raised to the
/// landing) then fails: the call returns the storage error, but the first
/// write is in the store, the old secret (or every key) is refused, and
/// the audit trail says so (`Regenerated`, `AllRevoked`). It said nothing:
/// the event was sent only after the second write.
#[test]
fn a_regeneration_or_revoke_all_that_landed_is_reported_when_its_second_write_fails() {
    for revoke_all in [false, true] {
        let clock = ManualClock::new(T0);
        let store = Arc::new(LandsSlowlyThenFails {
            inner: WriteLog::new(),
            clock: clock.clone(),
            armed: false.into(),
        });
        let log = Arc::new(EventLog::new());
        let ring = KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .signing_key(1, [7; 32])
            .events(Arc::clone(&log))
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap();
        let key = ring.issue(NewKey::new("o")).unwrap();
        let before = log.events().len();
        store.armed.store(true, Ordering::SeqCst);
        let outcome = if revoke_all {
            ring.revoke_all()
        } else {
            ring.regenerate(key.key.id()).map(|_| ())
        };
        assert!(
            matches!(outcome, Err(Error::Storage(StoreError::Io { .. }))),
            "revoke_all {revoke_all}: {outcome:?}"
        );
        assert!(
            !store.armed.load(Ordering::SeqCst),
            "revoke_all {revoke_all}: the first write did not land"
        );
        let reported: Vec<EventKind> = log.events()[before..]
            .iter()
            .map(|e| e.kind.clone())
            .collect();
        let expected = if revoke_all {
            EventKind::AllRevoked { epoch: 1 }
        } else {
            EventKind::Regenerated
        };
        assert_eq!(reported, [expected], "revoke_all {revoke_all}");
        assert_eq!(
            check(&ring, &key),
            Err(if revoke_all {
                VerifyError::Revoked
            } else {
                VerifyError::Invalid
            }),
            "revoke_all {revoke_all}: the first write is in force"
        );
    }
}

// ---------------------------------------------------------------------------
// Id collisions
// ---------------------------------------------------------------------------

/// A store whose next `refusals` batches with an `Insert` are refused as
/// [`StoreError::Duplicate`] (naming `named` if set, else the id inserted)
/// and change nothing, as a store that held the id already would refuse
/// them.
#[derive(Debug)]
struct TakenIds {
    inner: TestStore,
    refusals: AtomicUsize,
    named: std::sync::Mutex<Option<KeyId>>,
    /// Batches with an `Insert` seen, refused or not.
    inserts: AtomicUsize,
}

impl TakenIds {
    fn refuse(&self, refusals: usize, named: Option<KeyId>) {
        self.refusals.store(refusals, Ordering::SeqCst);
        *self.named.lock().unwrap() = named;
    }
}

impl KeyStore for TakenIds {
    inner_reads!();
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let inserted = changes.iter().find_map(|change| match change {
            Change::Insert(e) => Some(e.id()),
            _ => None,
        });
        if let Some(id) = inserted {
            self.inserts.fetch_add(1, Ordering::SeqCst);
            let refused = self
                .refusals
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if refused {
                let named = *self.named.lock().unwrap();
                return Err(StoreError::Duplicate(named.unwrap_or(id)));
            }
        }
        self.inner.apply(changes)
    }
}

/// `issue` and `rotate` draw another id when the store already holds the
/// one drawn (the store refuses the whole batch, changing nothing), up to
/// four draws in all; then they give up with the store's `Duplicate`. A
/// `Duplicate` naming an id the ring did not draw is no collision of its
/// own: returned at once.
#[test]
fn issue_and_rotate_draw_another_id_when_the_store_holds_the_one_drawn() {
    let store = Arc::new(TakenIds {
        inner: fresh_store(),
        refusals: AtomicUsize::new(0),
        named: std::sync::Mutex::new(None),
        inserts: AtomicUsize::new(0),
    });
    let ring = KeyRing::builder(PREFIX)
        .clock(ManualClock::new(T0))
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let inserts = || store.inserts.load(Ordering::SeqCst);

    // Three ids taken: the fourth draw is stored.
    store.refuse(3, None);
    let key = ring.issue(NewKey::new("o")).unwrap();
    assert_eq!(inserts(), 4);
    assert_eq!(ring.get(key.key.id()).unwrap(), key.key);
    assert_eq!(check(&ring, &key), Ok(()));

    // A rotation draws again too, and lands whole.
    store.refuse(1, None);
    let next = ring.rotate(key.key.id(), Duration::ZERO).unwrap();
    assert_eq!(inserts(), 6);
    assert_eq!(check(&ring, &next), Ok(()));
    let rotation = ring.get(key.key.id()).unwrap().rotation().unwrap();
    assert_eq!(rotation.rotated_to, Some(next.key.id()));

    // Four ids taken: given up, nothing written.
    let held = ring.list(&ListFilter::default()).unwrap().len();
    store.refuse(4, None);
    let refused = ring.issue(NewKey::new("o"));
    assert!(
        matches!(refused, Err(Error::Storage(StoreError::Duplicate(_)))),
        "{refused:?}"
    );
    assert_eq!(inserts(), 10);
    assert_eq!(ring.list(&ListFilter::default()).unwrap().len(), held);

    // A duplicate of another id: the store's own fault, not retried.
    store.refuse(1, Some(key.key.id()));
    let refused = ring.issue(NewKey::new("o"));
    assert!(
        matches!(refused, Err(Error::Storage(StoreError::Duplicate(id))) if id == key.key.id()),
        "{refused:?}"
    );
    assert_eq!(inserts(), 11);
    store.refuse(0, None);
    assert!(ring.issue(NewKey::new("o")).is_ok());
}

/// Ring B's `regenerate` lands across a second boundary, and before its
/// second write (the old secrets' cut raised to the landing) ring A, on a
/// clock a second behind, regenerates the key again. B's raise finds A's
/// secret in the record by then, and leaves A's record as A wrote it: A's
/// new secret is exchanged from the second after A's regeneration on, as
/// `regenerate` promises, and B reports the key as it wrote it. Raising the
/// cut of A's record too would refuse A's secret for a second more.
#[test]
fn a_regeneration_landing_slowly_leaves_a_later_regenerations_cut_alone() {
    let (clock_a, clock_b) = (ManualClock::new(T0), ManualClock::new(T0));
    let (a, b, interleaved) = interleaved_rings_on_clocks(&clock_a, &clock_b);
    let key = a.issue(NewKey::new("o")).unwrap();
    let id = key.key.id();
    let from_a = Arc::new(std::sync::Mutex::new(None::<Issued>));
    // Before B's first write: B's clock moves on a second while it lands,
    // and A's regeneration is armed for B's next write of the key (the
    // raise), slipped in after B has read the record for it.
    let (hook_clock, rearm, ring, out) = (
        clock_b.clone(),
        Arc::downgrade(&interleaved),
        Arc::clone(&a),
        Arc::clone(&from_a),
    );
    interleaved.arm(id, move || {
        hook_clock.advance(Duration::seconds(1));
        rearm.upgrade().unwrap().arm(id, move || {
            *out.lock().unwrap() = Some(ring.regenerate(id).unwrap());
        });
    });
    let from_b = b.regenerate(id).unwrap();
    assert!(interleaved.fired(), "ring A's regeneration never ran");
    let from_a = from_a.lock().unwrap().take().unwrap();
    assert_eq!(b.get(id).unwrap(), from_a.key);
    assert_eq!(from_b.key.id(), id);
    // B's secret is an old one now; A's works, and is exchanged in the
    // second after A's regeneration.
    assert_eq!(check(&a, &from_b), Err(VerifyError::Invalid));
    assert_eq!(check(&a, &from_a), Ok(()));
    clock_a.advance(Duration::seconds(1));
    assert!(
        a.exchange(from_a.secret.expose(), Duration::minutes(10))
            .is_ok()
    );
}

/// A [`WriteLog`] whose writes each take `delay` on the ring's clock.
#[derive(Debug)]
struct TimedWrites {
    inner: WriteLog,
    clock: ManualClock,
    delay: std::sync::Mutex<Duration>,
}

impl KeyStore for TimedWrites {
    inner_reads!();
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.inner.apply(changes)?;
        self.clock.advance(*self.delay.lock().unwrap());
        Ok(())
    }
}

/// `regenerate` raises the old secrets' cut in a second write only when
/// its first write landed in a later second than the one it was made in:
/// a write that lands within the second writes once. Either way the new
/// secret is exchanged from the second after the regeneration on.
#[test]
fn a_regeneration_writes_a_second_time_only_when_it_lands_in_a_later_second() {
    for (delay, writes) in [(Duration::milliseconds(500), 1), (Duration::seconds(1), 2)] {
        let clock = ManualClock::new(T0);
        let store = Arc::new(TimedWrites {
            inner: WriteLog::new(),
            clock: clock.clone(),
            delay: std::sync::Mutex::new(Duration::ZERO),
        });
        let ring = KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .signing_key(1, [7; 32])
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap();
        let key = ring.issue(NewKey::new("o")).unwrap();
        let before = store.inner.writes.load(Ordering::SeqCst);
        *store.delay.lock().unwrap() = delay;
        let new = ring.regenerate(key.key.id()).unwrap();
        *store.delay.lock().unwrap() = Duration::ZERO;
        assert_eq!(
            store.inner.writes.load(Ordering::SeqCst) - before,
            writes,
            "a write taking {delay}"
        );
        assert_eq!(ring.get(key.key.id()).unwrap(), new.key);
        clock.set(T0 + Duration::seconds(2));
        assert!(
            ring.exchange(new.secret.expose(), Duration::minutes(10))
                .is_ok(),
            "a write taking {delay}"
        );
    }
}

/// An exchange reads the store's settings first: a key another ring on
/// the same store revoked with `revoke_all` is refused at once, before
/// this ring's background reload (here there is none) brings the new
/// epoch, and no token is minted from it (the plain token check would
/// pass one for its whole life: its time is after the revoke-all).
#[test]
fn an_exchange_catches_up_with_another_rings_revoke_all_at_once() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(fresh_store());
    let build = || {
        KeyRing::builder(PREFIX)
            .clock(clock.clone())
            .signing_key(1, [7; 32])
            .flush_interval(None)
            .build(Arc::clone(&store))
            .unwrap()
    };
    let (a, b) = (build(), build());
    let key = a.issue(NewKey::new("o")).unwrap();
    assert!(
        a.exchange(key.secret.expose(), Duration::minutes(10))
            .is_ok()
    );
    b.revoke_all().unwrap();
    clock.advance(Duration::seconds(2));
    assert!(
        matches!(
            a.exchange(key.secret.expose(), Duration::minutes(10)),
            Err(Error::Rejected(VerifyError::Revoked))
        ),
        "an exchange passed a key another ring revoked with revoke_all"
    );
    assert_eq!(a.settings().epoch(), 1);
    assert_eq!(check(&a, &key), Err(VerifyError::Revoked));
}
