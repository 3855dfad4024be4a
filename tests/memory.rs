//! What a stored key costs in heap allocations: a `MemoryStore` keeps a
//! plain key (no description, contact, metadata, bindings, rotation or
//! revocation, nor a use limit or expiry policy of its own, which take a
//! box of their own) in three: its record, its hint, owner and name, and
//! its scopes, however many scopes it has; a key with a use limit or a
//! policy of its own in four. Each allocation costs a host malloc's header
//! and rounding beside the bytes asked for (`benches/verify.rs` counts both),
//! so their number is part of the memory per key. Counted by a global
//! allocator that tallies this test's thread only (the harness's other
//! threads allocate freely).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use keyward::{ExpiryPolicy, KeyRing, MemoryStore, NewKey, ScopeSet};
use time::Duration;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Allocations made less allocations freed, on this thread.
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

// SAFETY: every call is passed unchanged to the system allocator, which
// upholds `GlobalAlloc`'s contract; the counting touches only thread-locals.
// (`forbid(unsafe_code)` holds for the library; this is a test crate.)
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(1);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-1);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(change: i64) {
    // `try_with`: thread-local storage may be gone while a thread exits.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = LIVE.try_with(|n| n.set(n.get() + change));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations `f` made on this thread and left live.
fn left_live(f: impl FnOnce()) -> i64 {
    LIVE.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    LIVE.with(Cell::get)
}

/// The allocations left live by issuing `keys` keys (a UUID owner, a
/// name, `scopes`, and what `terms` adds) into a fresh ring's
/// `MemoryStore`, which must then hold them all.
fn live_after_issuing(keys: usize, scopes: &ScopeSet, terms: fn(NewKey) -> NewKey) -> i64 {
    let ring = KeyRing::builder("acme")
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let mut issued = Vec::with_capacity(keys);
    let live = left_live(|| {
        for i in 0..keys {
            let request = NewKey::new(format!("9f0c41d2-7a55-4b1e-a3c8-{i:012x}"))
                .name("billing sync")
                .scopes(scopes.clone());
            // The secret is dropped; the id stays, so nothing the test
            // keeps but what the store holds is counted.
            issued.push(ring.issue(terms(request)).unwrap().key.id());
        }
    });
    assert_eq!(ring.store().len(), keys);
    live
}

#[test]
fn a_stored_key_takes_three_allocations_whatever_its_scopes() {
    let keys = 20_000;
    for scopes in [
        vec!["invoices:read"],
        vec!["invoices:read", "invoices:write", "customers:read"],
    ] {
        let scopes = ScopeSet::parse(&scopes).unwrap();
        let live = live_after_issuing(keys, &scopes, |r| r);
        // Three per key, and the tables' chunks: a chunk holds 128 slots,
        // and a table that grows stays at least 78% full (its growth frees
        // the chunks it replaces), so the chunks number at most one per
        // 99.8 keys, and one short chunk more per shard (64). A fourth
        // allocation per key would be 20,000 more.
        let (least, most) = (3 * keys as i64, 3 * keys as i64 + keys as i64 / 90 + 64);
        assert!(
            (least..=most).contains(&live),
            "live allocations for {keys} keys of {} scopes: {live}, not in {least}..={most}",
            scopes.len()
        );
    }
}

/// A kind of key: its name, what it adds to a request, and the
/// allocations it takes.
type Kind = (&'static str, fn(NewKey) -> NewKey, i64);

/// The use limit and the key's own policy (and its deadline) are kept in
/// the box of rarely set fields, not in the record: a key with either takes
/// one allocation more than a plain key, and the record stays 120 bytes.
#[test]
fn a_key_with_a_use_limit_or_a_policy_of_its_own_takes_four_allocations() {
    let keys = 5_000;
    let kinds: [Kind; 5] = [
        ("plain", |r| r, 3),
        ("use limit", |r| r.use_limit(10), 4),
        ("lifetime", |r| r.expiry(ExpiryPolicy::days(30)), 4),
        (
            "idle timeout",
            |r| r.expiry(ExpiryPolicy::Idle(Duration::days(7))),
            4,
        ),
        (
            "both",
            |r| r.use_limit(10).expiry(ExpiryPolicy::days(30)),
            4,
        ),
    ];
    for (kind, terms, per_key) in kinds {
        let scopes = ScopeSet::parse(["invoices:read"]).unwrap();
        let live = live_after_issuing(keys, &scopes, terms);
        assert_eq!(
            live,
            per_key * keys as i64,
            "live allocations for {keys} keys with {kind}"
        );
    }
}
