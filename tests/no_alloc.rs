//! A successful `verify` allocates nothing on the heap: counted by a global
//! allocator that tallies allocations on this test's thread only (the test
//! harness's other threads allocate freely).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use keyward::{ExpiryPolicy, KeyRing, MemoryStore, NewKey, Requirement, ScopeSet};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is passed unchanged to the system allocator, which
// upholds `GlobalAlloc`'s contract; the counting touches only thread-locals.
// (`forbid(unsafe_code)` holds for the library; this is a test crate.)
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note_allocation() {
    // `try_with`: thread-local storage may be gone while a thread exits.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn successful_verify_does_not_allocate() {
    let ring = KeyRing::builder("acme")
        .default_expiry(ExpiryPolicy::days(30))
        .build(MemoryStore::new())
        .unwrap();
    let mut presented = Vec::new();
    for i in 0..100 {
        let mut request = NewKey::new(format!("owner{i}"))
            .name("alloc test")
            .scopes(ScopeSet::parse(["invoices:read", "customers:*"]).unwrap())
            .metadata("tier", "gold");
        if i % 2 == 0 {
            request = request.expiry(ExpiryPolicy::days(7));
        }
        presented.push(ring.issue(request).unwrap().secret);
    }
    let need = Requirement::all_of(["invoices:read", "customers:write"]).unwrap();
    // Warm up: first use of any lazily initialised state.
    ring.verify(presented[0].expose()).unwrap();

    let mut verified = 0;
    let n = allocations_in(|| {
        for secret in &presented {
            let who = ring.verify(secret.expose()).unwrap();
            let with_scope = ring.verify_with(secret.expose(), &need).unwrap();
            // `key()` raises the record's usage to the table slot's, and
            // dropping a `Verified` drops its chunk's count: neither
            // allocates.
            verified += usize::from(who.id() == with_scope.id() && who.key().uses() > 0);
            drop((who, with_scope));
        }
    });
    assert_eq!(verified, presented.len());
    assert_eq!(
        n,
        0,
        "{n} heap allocations in {} successful verifies",
        2 * presented.len()
    );
}

/// `KeyRing::verify`: "no heap allocation on success for a key without a
/// use limit": not only for a plain key, but for every other kind a key
/// without a use limit can be: bound to a certificate and networks
/// (checked with the request), with an idle timeout, and a rotated key in
/// its grace beside its successor.
#[test]
fn successful_verify_of_every_kind_of_unlimited_key_does_not_allocate() {
    use keyward::time::Duration;
    use keyward::{CertFingerprint, Network, RequestContext};

    let ring = KeyRing::builder("acme")
        .max_lifetime(Duration::days(365))
        .default_expiry(ExpiryPolicy::Idle(Duration::days(30)))
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let der = b"client certificate";
    let bound = ring
        .issue(
            NewKey::new("o")
                .client_cert(CertFingerprint::of_der(der))
                .allow_network("10.0.0.0/8".parse::<Network>().unwrap())
                .allow_network("2001:db8::/32".parse::<Network>().unwrap()),
        )
        .unwrap();
    let idle = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::Idle(Duration::hours(1))))
        .unwrap();
    let by_default = ring.issue(NewKey::new("o")).unwrap();
    let old = ring
        .issue(NewKey::new("o").expiry(ExpiryPolicy::days(7)))
        .unwrap();
    let successor = ring.rotate(old.key.id(), Duration::hours(1)).unwrap();
    let fingerprint = CertFingerprint::of_der(der);
    let request = RequestContext::new()
        .client_cert(fingerprint)
        .peer_addr("10.1.2.3".parse().unwrap());
    let unbound = [&idle, &by_default, &old, &successor];
    // Warm up.
    for issued in unbound {
        ring.verify(issued.secret.expose()).unwrap();
    }
    ring.verify_with(bound.secret.expose(), request).unwrap();

    let n = allocations_in(|| {
        for _ in 0..10 {
            for issued in unbound {
                ring.verify(issued.secret.expose()).unwrap();
            }
            ring.verify_with(bound.secret.expose(), request).unwrap();
        }
    });
    assert_eq!(n, 0, "{n} heap allocations in 50 successful verifies");
}

/// An event sink does not change that: a ring with one verifies a key
/// without allocating, as long as it does not report successes. One that
/// does (`report_successes(true)`, which the host opts into) builds an
/// `Event` for each success, whose owner is an owned `String`: the
/// exception `KeyRing::verify` and the README state.
#[test]
fn successes_allocate_only_when_reported_to_the_sink() {
    struct Discard;
    impl keyward::EventSink for Discard {
        fn record(&self, event: &keyward::Event) {
            std::hint::black_box(event);
        }
    }
    for report in [false, true] {
        let ring = KeyRing::builder("acme")
            .events(Discard)
            .report_successes(report)
            .flush_interval(None)
            .build(MemoryStore::new())
            .unwrap();
        let issued = ring.issue(NewKey::new("acct_42")).unwrap();
        ring.verify(issued.secret.expose()).unwrap();
        let n = allocations_in(|| {
            for _ in 0..10 {
                ring.verify(issued.secret.expose()).unwrap();
            }
        });
        if report {
            assert!(n >= 10, "{n} allocations in 10 reported successes");
        } else {
            assert_eq!(n, 0, "{n} allocations in 10 successes, none reported");
        }
    }
}

/// SPEC "Performance": "no heap allocation on a successful `verify`", and
/// the README's "`verify` inline": on a `FileStore` too, whose `verify`
/// answers from its in-memory index (a plain key, a scoped check, a bound
/// key with its request), as on a `MemoryStore`.
#[test]
fn successful_verify_on_a_file_store_does_not_allocate() {
    use keyward::{CertFingerprint, FileStore, Network, RequestContext};

    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::builder("acme")
        .default_expiry(ExpiryPolicy::days(30))
        .flush_interval(None)
        .build(FileStore::open(dir.path().join("keys.kw")).unwrap())
        .unwrap();
    let plain = ring
        .issue(NewKey::new("o").scopes(ScopeSet::parse(["invoices:read"]).unwrap()))
        .unwrap();
    let der = b"client certificate";
    let bound = ring
        .issue(
            NewKey::new("o")
                .client_cert(CertFingerprint::of_der(der))
                .allow_network("10.0.0.0/8".parse::<Network>().unwrap()),
        )
        .unwrap();
    let need = Requirement::scope("invoices:read").unwrap();
    let request = RequestContext::new()
        .client_cert(CertFingerprint::of_der(der))
        .peer_addr("10.1.2.3".parse().unwrap());
    // Warm up.
    ring.verify(plain.secret.expose()).unwrap();
    ring.verify_with(bound.secret.expose(), request).unwrap();

    let n = allocations_in(|| {
        for _ in 0..10 {
            ring.verify(plain.secret.expose()).unwrap();
            ring.verify_with(plain.secret.expose(), &need).unwrap();
            ring.verify_with(bound.secret.expose(), request).unwrap();
        }
    });
    assert_eq!(n, 0, "{n} heap allocations in 30 successful verifies");
}

#[test]
fn the_counter_sees_allocations() {
    // Proves the check above can fail: an allocation is counted.
    let n = allocations_in(|| {
        std::hint::black_box(vec![1u8; 64]);
    });
    assert!(n >= 1);
}
