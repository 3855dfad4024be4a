//! SPEC 1: the plaintext key "is wiped from memory on drop", and an access
//! token's text likewise (`AccessToken`: "wiped on drop"). A marker trait
//! (`ZeroizeOnDrop`) says nothing of what `Drop` does, so this test looks
//! at the memory itself: a global allocator keeps a copy of every heap
//! block this test's thread frees while it watches, taken just before the
//! block goes back to the system, and the test then searches those copies
//! for any piece of the secret. A `Secret` dropped without its bytes
//! overwritten, or a key string that grew by reallocation and left its
//! first buffer behind, is found there.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};

use keyward::{KeyRing, MemoryStore, NewKey, time::Duration};

struct Watching;

/// Room for the freed blocks of one watched call.
const ARENA: usize = 8 << 20;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static OVERFLOW: Cell<bool> = const { Cell::new(false) };
    static FREED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

// SAFETY: every call is passed to the system allocator, which upholds
// `GlobalAlloc`'s contract. Blocks are zeroed when allocated (and `realloc`
// is the trait's default: a new block, a copy, a `dealloc` of the old one),
// so every byte a `dealloc` reads was written, and it reads them before
// the block is freed. The copy goes into a buffer reserved in advance, so
// watching never allocates. (`forbid(unsafe_code)` holds for the library;
// this is a test crate.)
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` initialized bytes.
        let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
        keep(block);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Watching = Watching;

fn keep(block: &[u8]) {
    // `try_with`: thread-local storage may be gone while a thread exits.
    let _ = WATCHING.try_with(|watching| {
        if !watching.get() {
            return;
        }
        let _ = FREED.try_with(|freed| {
            let mut freed = freed.borrow_mut();
            if freed.len() + block.len() < freed.capacity() {
                freed.extend_from_slice(block);
                // A separator, so that two blocks never join into a match.
                freed.push(0);
            } else {
                let _ = OVERFLOW.try_with(|o| o.set(true));
            }
        });
    });
}

/// The contents of every heap block `f` freed on this thread.
fn freed_by(f: impl FnOnce()) -> Vec<u8> {
    FREED.with(|freed| {
        let mut freed = freed.borrow_mut();
        freed.clear();
        freed.reserve(ARENA);
    });
    OVERFLOW.with(|o| o.set(false));
    WATCHING.with(|w| w.set(true));
    f();
    WATCHING.with(|w| w.set(false));
    assert!(!OVERFLOW.with(Cell::get), "more freed than the arena holds");
    FREED.with(|freed| std::mem::take(&mut *freed.borrow_mut()))
}

/// Whether `haystack` holds any 10 characters in a row of `secret`: a
/// buffer that a reallocation left behind holds only the part of the key
/// written before it grew. (Ten random base62 characters turn up by chance
/// with odds of about 1 in 10^17 a position.)
fn holds(haystack: &[u8], secret: &[u8]) -> bool {
    secret
        .windows(10)
        .any(|piece| haystack.windows(piece.len()).any(|w| w == piece))
}

/// The secret part of a key (24 characters before the 6 of the checksum),
/// copied onto the stack, so that keeping it frees nothing.
fn secret_part(key: &str) -> [u8; 24] {
    let end = key.len() - 6;
    key.as_bytes()[end - 24..end].try_into().unwrap()
}

/// The last 40 characters of a token (its MAC and checksum), on the stack.
fn token_tail(token: &str) -> [u8; 40] {
    token.as_bytes()[token.len() - 40..].try_into().unwrap()
}

fn ring() -> KeyRing {
    KeyRing::builder("acme")
        .signing_key(1, [9; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap()
}

#[test]
fn the_watch_sees_a_freed_string_that_held_a_secret() {
    // The check itself: a plain `String` copy of a key, dropped unwiped,
    // is found.
    let ring = ring();
    let issued = ring.issue(NewKey::new("o")).unwrap();
    let part = secret_part(issued.secret.expose());
    let copy = issued.secret.expose().to_owned();
    let freed = freed_by(|| drop(copy));
    assert!(holds(&freed, &part));
}

#[test]
fn a_dropped_secret_leaves_no_copy_in_freed_memory() {
    let ring = ring();
    let issued = ring.issue(NewKey::new("o")).unwrap();
    let part = secret_part(issued.secret.expose());
    let freed = freed_by(|| drop(issued));
    assert!(!freed.is_empty(), "the drop freed nothing: not watched");
    assert!(!holds(&freed, &part), "the secret is left in freed memory");
}

#[test]
fn issue_rotate_and_regenerate_free_no_copy_of_the_secret() {
    let ring = ring();
    let id = ring.issue(NewKey::new("o")).unwrap().key.id();
    let operations: [(&str, &dyn Fn() -> keyward::Issued); 3] = [
        ("issue", &|| ring.issue(NewKey::new("o").name("n")).unwrap()),
        ("regenerate", &|| ring.regenerate(id).unwrap()),
        ("rotate", &|| ring.rotate(id, Duration::ZERO).unwrap()),
    ];
    for (what, operation) in operations {
        let mut part = [0u8; 24];
        let freed = freed_by(|| {
            let issued = operation();
            part = secret_part(issued.secret.expose());
            drop(issued);
        });
        assert!(!freed.is_empty(), "{what} freed nothing: not watched");
        assert!(
            !holds(&freed, &part),
            "{what} left the secret in freed memory"
        );
    }
}

#[test]
fn an_exchanged_token_leaves_no_copy_in_freed_memory() {
    let ring = ring();
    let issued = ring.issue(NewKey::new("o")).unwrap();
    let mut tail = [0u8; 40];
    let freed = freed_by(|| {
        let token = ring
            .exchange(issued.secret.expose(), Duration::minutes(5))
            .unwrap();
        tail = token_tail(token.expose());
        drop(token);
    });
    assert!(!freed.is_empty(), "the drop freed nothing: not watched");
    assert!(!holds(&freed, &tail), "the token is left in freed memory");
}

/// The ring's hashing key, derived from the pepper and the prefix (see
/// `hash.rs`; `hash::tests::a_known_input_gives_the_pinned_digest` pins the
/// derivation), is as good as the pepper to anyone checking guesses
/// against a stolen store: a ring dropped from the heap leaves no copy of
/// it in the freed block.
#[test]
fn a_dropped_ring_leaves_no_copy_of_its_hashing_key() {
    let pepper = [5u8; 32];
    let mut material = pepper.to_vec();
    material.push(4);
    material.extend_from_slice(b"acme");
    let hashing_key = blake3::derive_key("keyward 2026-11-27 api key secret hash v1", &material);
    let ring = Box::new(
        KeyRing::builder("acme")
            .pepper(pepper)
            .flush_interval(None)
            .build(MemoryStore::new())
            .unwrap(),
    );
    let freed = freed_by(|| drop(ring));
    assert!(freed.len() >= 32, "the drop freed nothing: not watched");
    assert!(
        !freed.windows(32).any(|w| w == hashing_key),
        "the hashing key is left in freed memory"
    );
}
