//! Verification racing administrative operations.
//!
//! Verifier threads loop over 200 keys while another thread revokes (or
//! disables) them. After an operation on a key *returns*, the operating
//! thread sets that key's flag. A verifier reads the flag *before* it
//! starts a verify: if the flag was already set, the operation had
//! completed before the verify began, so the verify must refuse the key.
//! Nothing here measures time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use keyward::time::macros::datetime;
use keyward::*;

const PREFIX: &str = "acme";
const KEYS: usize = 200;
const VERIFIERS: usize = 4;

fn ring() -> KeyRing {
    KeyRing::builder(PREFIX)
        .clock(ManualClock::new(datetime!(2026-01-01 00:00 UTC)))
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("ring builds")
}

fn issue_keys(ring: &KeyRing) -> Vec<(KeyId, String)> {
    (0..KEYS)
        .map(|i| {
            let issued = ring.issue(NewKey::new(format!("owner_{}", i % 7))).unwrap();
            (issued.key.id(), issued.secret.expose().to_owned())
        })
        .collect()
}

/// What the operating thread does to the keys.
#[derive(Clone, Copy, PartialEq)]
enum Operation {
    /// `revoke(k)`, key by key.
    Revoke,
    /// `disable(k)`, key by key.
    Disable,
    /// One `revoke_all()`.
    RevokeAll,
}

#[derive(Debug, Default)]
struct Tally {
    /// Verifies that began after the operation on their key returned, and
    /// still succeeded.
    late_successes: AtomicUsize,
    /// Refusals with the expected error before the operation on that key
    /// even started.
    early_refusals: AtomicUsize,
    /// Verifies refused with the expected error.
    refused: AtomicUsize,
    /// Successful verifies.
    ok: AtomicUsize,
    /// Any other outcome.
    unexpected: AtomicUsize,
}

/// Spins until `ready`, giving up (instead of hanging) if a verifier died.
fn wait_until(ready: impl Fn() -> bool) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < give_up,
            "verifier threads stopped making progress"
        );
        thread::yield_now();
    }
}

/// Runs the race and returns the tally.
fn race(operation: Operation) -> Tally {
    let ring = ring();
    let keys = issue_keys(&ring);
    let refusal = match operation {
        Operation::Disable => VerifyError::Disabled,
        Operation::Revoke | Operation::RevokeAll => VerifyError::Revoked,
    };
    // Per key: the operation started / returned.
    let started: Vec<AtomicBool> = (0..KEYS).map(|_| AtomicBool::new(false)).collect();
    let done: Vec<AtomicBool> = (0..KEYS).map(|_| AtomicBool::new(false)).collect();
    let finished = AtomicBool::new(false);
    let passes = AtomicUsize::new(0);
    let tally = Tally::default();

    thread::scope(|s| {
        for v in 0..VERIFIERS {
            let (ring, keys, started, done, finished, passes, tally, refusal) = (
                &ring, &keys, &started, &done, &finished, &passes, &tally, &refusal,
            );
            s.spawn(move || {
                loop {
                    // One more whole pass after the operator finished, so
                    // every verifier sees the end state.
                    let last = finished.load(Ordering::Acquire);
                    // Verifiers start at different keys.
                    for n in 0..KEYS {
                        let i = (n + v * KEYS / VERIFIERS) % KEYS;
                        let (_, key) = &keys[i];
                        let was_done = done[i].load(Ordering::Acquire);
                        let result = ring.verify(key);
                        match result {
                            Ok(_) => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                                if was_done {
                                    tally.late_successes.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(ref e) if e == refusal => {
                                tally.refused.fetch_add(1, Ordering::Relaxed);
                                if !started[i].load(Ordering::Acquire) {
                                    tally.early_refusals.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Err(_) => {
                                tally.unexpected.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    passes.fetch_add(1, Ordering::AcqRel);
                    if last {
                        break;
                    }
                }
            });
        }

        // The operator: start once every verifier is under way.
        wait_until(|| passes.load(Ordering::Acquire) >= VERIFIERS);
        match operation {
            Operation::RevokeAll => {
                for flag in &started {
                    flag.store(true, Ordering::Release);
                }
                ring.revoke_all().unwrap();
                for flag in &done {
                    flag.store(true, Ordering::Release);
                }
                // Let the verifiers run over the revoked keys a while.
                let seen = passes.load(Ordering::Acquire);
                wait_until(|| passes.load(Ordering::Acquire) >= seen + VERIFIERS);
            }
            Operation::Revoke | Operation::Disable => {
                for (i, (id, _)) in keys.iter().enumerate() {
                    started[i].store(true, Ordering::Release);
                    if operation == Operation::Revoke {
                        ring.revoke(*id, "race").unwrap();
                    } else {
                        ring.disable(*id).unwrap();
                    }
                    done[i].store(true, Ordering::Release);
                    if i % 8 == 0 {
                        thread::yield_now();
                    }
                }
            }
        }
        finished.store(true, Ordering::Release);
    });

    // Afterwards every key is refused.
    for (_, key) in &keys {
        assert_eq!(ring.verify(key).unwrap_err(), refusal);
    }
    tally
}

fn assert_race_is_clean(operation: Operation, what: &str) {
    let tally = race(operation);
    assert_eq!(
        tally.late_successes.load(Ordering::Relaxed),
        0,
        "a verify that began after {what} returned succeeded: {tally:?}"
    );
    assert_eq!(
        tally.early_refusals.load(Ordering::Relaxed),
        0,
        "a key was refused before {what} started on it: {tally:?}"
    );
    assert_eq!(
        tally.unexpected.load(Ordering::Relaxed),
        0,
        "unexpected verify errors: {tally:?}"
    );
    // At least the final pass of each verifier saw every key refused.
    assert!(
        tally.refused.load(Ordering::Relaxed) >= VERIFIERS * KEYS,
        "too few refusals observed: {tally:?}"
    );
    assert!(
        tally.ok.load(Ordering::Relaxed) >= VERIFIERS * KEYS,
        "verifiers ran before the operation: {tally:?}"
    );
}

#[test]
fn verifies_never_succeed_after_revoke_returned() {
    assert_race_is_clean(Operation::Revoke, "revoke");
}

#[test]
fn verifies_never_succeed_after_revoke_all_returned() {
    assert_race_is_clean(Operation::RevokeAll, "revoke_all");
}

#[test]
fn verifies_never_succeed_after_disable_returned() {
    assert_race_is_clean(Operation::Disable, "disable");
}

fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn key_ring_is_shareable_across_threads() {
    assert_send_sync::<KeyRing>();
    assert_send_sync::<Arc<KeyRing>>();
    assert_send_sync::<KeyRing<Arc<MemoryStore>>>();

    let ring = Arc::new(ring());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let owner = format!("owner_{t}");
                let mut kept = Vec::new();
                for n in 0..25 {
                    let issued = ring.issue(NewKey::new(owner.as_str())).unwrap();
                    assert_eq!(ring.verify(issued.secret.expose()).unwrap().owner(), owner);
                    if n % 5 == 0 {
                        ring.revoke(issued.key.id(), "test").unwrap();
                        assert_eq!(
                            ring.verify(issued.secret.expose()).unwrap_err(),
                            VerifyError::Revoked
                        );
                    } else {
                        kept.push(issued);
                    }
                }
                kept
            })
        })
        .collect();
    let kept: Vec<Issued> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread ran"))
        .collect();
    assert_eq!(kept.len(), 4 * 20);
    for issued in &kept {
        assert!(ring.verify(issued.secret.expose()).is_ok());
    }
    assert_eq!(
        ring.list(&ListFilter::new().state(KeyState::Active))
            .unwrap()
            .len(),
        80
    );
    assert_eq!(
        ring.list(&ListFilter::new().state(KeyState::Revoked))
            .unwrap()
            .len(),
        20
    );
}

/// Adds one to a counter when dropped, so a thread that panics still says
/// it is done and the others stop waiting for it.
struct Bump<'a>(&'a AtomicUsize);

impl Drop for Bump<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// The writes `verify_while_writing` makes at least while verifies run.
const RACING_WRITES: usize = 20;

/// Verifies every key of `keys` `rounds` times on each of two threads
/// (and on until the calling thread has written `RACING_WRITES` times)
/// while the calling thread writes the keys (a new name, or a disable and
/// an enable; then a usage flush) over and over; returns the successful
/// verifies of each key.
fn verify_while_writing<S: KeyStore + 'static>(
    ring: &KeyRing<S>,
    keys: &[(KeyId, String)],
    rounds: usize,
) -> Vec<u64> {
    let verifiers_done = AtomicUsize::new(0);
    let writes = AtomicUsize::new(0);
    let writer_gone = AtomicUsize::new(0);
    let counted: Vec<AtomicUsize> = keys.iter().map(|_| AtomicUsize::new(0)).collect();
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let _done = Bump(&verifiers_done);
                let mut round = 0;
                while round < rounds
                    || (writes.load(Ordering::Acquire) < RACING_WRITES
                        && writer_gone.load(Ordering::Acquire) == 0)
                {
                    for ((_, secret), n) in keys.iter().zip(&counted) {
                        match ring.verify(secret) {
                            Ok(_) => {
                                n.fetch_add(1, Ordering::Relaxed);
                            }
                            // Between a disable and its enable.
                            Err(VerifyError::Disabled) => {}
                            Err(e) => panic!("the key failed to verify: {e:?}"),
                        }
                    }
                    round += 1;
                }
            });
        }
        let _gone = Bump(&writer_gone);
        while verifiers_done.load(Ordering::Acquire) < 2 {
            let n = writes.load(Ordering::Relaxed);
            let (id, _) = keys[n % keys.len()];
            if n.is_multiple_of(2) {
                ring.update(id, KeyUpdate::new().name(format!("write {n}")))
                    .unwrap();
            } else {
                ring.disable(id).unwrap();
                ring.enable(id).unwrap();
            }
            ring.flush().unwrap();
            writes.fetch_add(1, Ordering::Release);
        }
    });
    counted
        .iter()
        .map(|n| n.load(Ordering::Relaxed) as u64)
        .collect()
}

/// Uses of a key without a use limit are counted on the version of its
/// record that `verify` finds, while administrative writes (and the usage
/// flush) replace that version: none may be lost in the swap.
#[test]
fn every_use_is_counted_across_administrative_writes() {
    let ring = ring();
    let keys: Vec<_> = issue_keys(&ring).into_iter().take(4).collect();

    let verified = verify_while_writing(&ring, &keys, 20_000);

    for ((id, _), n) in keys.iter().zip(verified) {
        assert_eq!(ring.get(*id).unwrap().uses(), n, "uses of {id} lost");
    }
}

/// The same on a `FileStore`, where each write's fsync widens the window;
/// and the counts survive a reopen.
#[test]
fn every_use_is_counted_across_administrative_writes_on_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    let build = || {
        KeyRing::builder(PREFIX)
            .clock(ManualClock::new(datetime!(2026-01-01 00:00 UTC)))
            .flush_interval(None)
            .build(FileStore::open(&path).unwrap())
            .unwrap()
    };
    let ring = build();
    let keys: Vec<_> = (0..4)
        .map(|i| {
            let issued = ring.issue(NewKey::new(format!("owner_{i}"))).unwrap();
            (issued.key.id(), issued.secret.expose().to_owned())
        })
        .collect();

    let verified = verify_while_writing(&ring, &keys, 5_000);

    for ((id, _), &n) in keys.iter().zip(&verified) {
        assert_eq!(ring.get(*id).unwrap().uses(), n, "uses of {id} lost");
    }
    drop(ring);
    let reopened = build();
    for ((id, _), n) in keys.iter().zip(verified) {
        assert_eq!(
            reopened.get(*id).unwrap().uses(),
            n,
            "uses of {id} lost at the reopen"
        );
    }
}

/// Exports a store again and again while a limited key is rotated down a
/// chain (each successor used once, then rotated), and checks each
/// export: the uses its records have spent, plus the limit of the one
/// key still in force, make exactly the key's limit. Returns how many
/// exports were checked.
fn export_while_rotating<S: KeyStore + 'static>(store: Arc<S>) -> usize {
    const LIMIT: u64 = 10_000;
    const ROTATIONS: usize = 1_000;
    let ring = KeyRing::builder(PREFIX)
        .clock(ManualClock::new(datetime!(2026-01-01 00:00 UTC)))
        .flush_interval(None)
        .build(Arc::clone(&store))
        .unwrap();
    let first = ring.issue(NewKey::new("o").use_limit(LIMIT)).unwrap();
    let rotating = AtomicBool::new(true);
    let mut exports = 0;
    thread::scope(|s| {
        s.spawn(|| {
            let mut current = first;
            for _ in 0..ROTATIONS {
                ring.verify(current.secret.expose()).unwrap();
                let id = current.key.id();
                current = ring.rotate(id, time::Duration::ZERO).unwrap();
            }
            rotating.store(false, Ordering::Release);
        });
        while rotating.load(Ordering::Acquire) || exports == 0 {
            let mut out = Vec::new();
            keyward::store::export(&*store, &mut out).unwrap();
            let grantable: u64 = out
                .split(|&b| b == b'\n')
                .skip(1)
                .filter(|line| !line.is_empty())
                .map(|line| {
                    let stored: serde_json::Value = serde_json::from_slice(line).unwrap();
                    let key = &stored["key"];
                    let uses = key["uses"].as_u64().unwrap_or(0);
                    if key.get("rotated_to").is_some() {
                        uses
                    } else {
                        key["use_limit"].as_u64().unwrap()
                    }
                })
                .sum();
            assert_eq!(
                grantable, LIMIT,
                "export {exports} holds half a rotation: imported, it grants \
                 {grantable} uses of a key limited to {LIMIT}"
            );
            exports += 1;
        }
    });
    exports
}

/// A store's `list` need not be a snapshot: a `MemoryStore` reads shard by
/// shard, so one list can see a rotation's batch half applied, the
/// successor beside its predecessor as it was before it. An export written
/// from such a list held both with the key's remaining uses (and an
/// unlimited predecessor without the end of its grace): imported, the
/// store granted them twice. An export holds every batch whole or not at
/// all.
#[test]
fn an_export_taken_while_keys_rotate_holds_each_rotation_whole() {
    assert!(export_while_rotating(Arc::new(MemoryStore::new())) > 0);
}

/// The same through the export of any store on a `FileStore`, whose index
/// takes a batch change by change.
#[test]
fn an_export_of_a_file_store_taken_while_keys_rotate_holds_each_rotation_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path().join("keys.kw")).unwrap());
    assert!(export_while_rotating(store) > 0);
}
