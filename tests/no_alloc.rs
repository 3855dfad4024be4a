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
            verified += usize::from(who.id() == with_scope.id());
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

#[test]
fn the_counter_sees_allocations() {
    // Proves the check above can fail: an allocation is counted.
    let n = allocations_in(|| {
        std::hint::black_box(vec![1u8; 64]);
    });
    assert!(n >= 1);
}
