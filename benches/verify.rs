//! Every figure of BENCHMARKS.md from one command: `cargo bench --bench verify`.
//!
//! Criterion times the per-call costs (each printed with its ratio to the
//! floor measured in the same run); plain loops measure what criterion does
//! not: thread scaling, memory per key, FileStore open and issue rates.
//! Sizes come from `KEYWARD_BENCH_SIZES` (default 1000,10000,100000,1000000);
//! `KEYWARD_BENCH_LATENCY_ONLY=1` stops after the latency table;
//! `KEYWARD_BENCH_STORE_ONLY=1` runs only the memory and FileStore part, at
//! the largest size.
//! A CSV of the latency figures is written to `target/keyward-bench.csv` for
//! `cargo run --example plot_benchmarks`.
//!
//! Without `--bench` (`cargo test --benches`) or with `--test` (`cargo bench
//! --bench verify -- --test`, which `.ci/run` runs), it is a smoke run: every
//! row and part once or for a moment, at 1,000 keys, with every setup check,
//! and no figure worth reading (see `SMOKE`).

mod chunked;
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{PREFIX, Rng, base62};
use criterion::Criterion;
use keyward::{
    Clock, CoarseClock, FileStore, KeyId, KeyRing, KeyStore, MemoryStore, NewKey, ScopeSet,
    StoredKey, SystemClock,
};
use sha2::{Digest, Sha256};

// ---- live heap bytes, for memory per key -------------------------------

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Live heap bytes as glibc's malloc hands them out (see [`chunk`]): what a
/// host pays, beside the bytes requested that `LIVE` counts.
static LIVE_CHUNKS: AtomicIsize = AtomicIsize::new(0);
/// Allocations made (`alloc` and `realloc` calls), for the setup checks that
/// a timed call allocates no more than the design it stands for.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes unchanged to the system allocator; the counter is
// a relaxed atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_CHUNKS.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        LIVE_CHUNKS.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn live_chunks() -> isize {
    LIVE_CHUNKS.load(Ordering::Relaxed)
}

/// The bytes glibc's malloc (x86-64) takes for a request of `size`: an
/// 8-byte size header, rounded up to 16 bytes, 32 at least; from 128 KiB
/// (its default mmap threshold) a mapping of whole 4 KiB pages. The bench
/// also reads the resident set's growth, which this model should match.
fn chunk(size: usize) -> isize {
    let bytes = if size >= 128 * 1024 {
        (size + 16).div_ceil(4096) * 4096
    } else {
        ((size + 8).div_ceil(16) * 16).max(32)
    };
    bytes as isize
}

/// The process's resident set in bytes, from `/proc/self/statm` (Linux);
/// 0 where it cannot be read.
fn resident() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<isize>().ok())
        .map_or(0, |pages| pages * 4096)
}

// ---- the key set ----------------------------------------------------------

/// A key string with a valid checksum from its parts.
fn forge(id: &str, secret: &str) -> String {
    let checked = format!("{PREFIX}_1{id}{secret}");
    let sum = base62(u64::from(crc32fast::hash(checked.as_bytes())), 6);
    format!("{checked}{sum}")
}

fn issue_request(i: usize) -> NewKey {
    NewKey::new(format!("acct_{}", i % 50_000)).scopes(ScopeSet::parse(["invoices:read"]).unwrap())
}

struct Set {
    ring: KeyRing<MemoryStore>,
    valid: Vec<String>,
    wrong_secret: Vec<String>,
    unknown_id: Vec<String>,
    bad_checksum: Vec<String>,
    malformed: Vec<String>,
    /// Malformed at the right length: a character outside the alphabet in
    /// the secret, refused by the alphabet check (after the length, prefix
    /// and version checks, before the checksum).
    bad_character: Vec<String>,
    /// The floor: id -> digest in a map of the same size.
    floor_map: HashMap<u64, [u8; 32], BuildHasherDefault<IdHasher>>,
    floor_key: [u8; 32],
    /// Peer (a): SHA-256 hex of the key string -> record, in a String map.
    sha_map: HashMap<String, (String, u64)>,
    /// Random indices to draw keys by, uniform over the whole set with
    /// repeats, at least as many as keys (a power of two long; at 1M keys
    /// about 65% of the keys are drawn).
    order: Vec<usize>,
    /// `order.len() - 1`.
    mask: usize,
}

/// The floor map's hasher: a folded 128-bit multiply of the key with a
/// fixed seed, the kind of mixer keyward's table uses. Every output bit
/// depends on every key bit, so the map's bucket bits (its low bits) do not
/// cluster on the few values of the id text's first characters, as a plain
/// multiply's low bits would.
#[derive(Default)]
struct IdHasher(u64);
impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, id: u64) {
        let p = u128::from(id ^ 0x243F_6A88_85A3_08D3) * u128::from(0x9E37_79B9_7F4A_7C15_u64);
        self.0 = (p >> 64) as u64 ^ p as u64;
    }
}

/// Issues `n` keys on `ring` and returns their strings, copied once every
/// record exists. A string allocated as its key is issued sits beside the
/// key's record in the heap, so reading the string would bring the
/// record's lines into cache ahead of the lookup, as a request's buffer
/// would not (helper-64 found this in benches/timing.rs).
///
/// The floor's map is keyed by the first 8 bytes of a key's id text (about
/// 46 bits: the first of the 11 digits takes 22 values), and two of a
/// million random ids share them about once in 150 draws of a million
/// keys: a key whose 8 bytes another key already has is deleted and
/// issued again, so that the floor finds every key.
fn issue_keys(ring: &KeyRing, n: usize) -> Vec<String> {
    let mut floor_ids = std::collections::HashSet::with_capacity(n);
    let beside: Vec<String> = (0..n)
        .map(|i| {
            loop {
                let issued = ring.issue(issue_request(i)).unwrap();
                let key = issued.secret.expose().to_owned();
                if floor_ids.insert(floor_id(key.as_bytes())) {
                    break key;
                }
                ring.delete(issued.key.id()).unwrap();
            }
        })
        .collect();
    beside.iter().map(|k| k.as_str().to_owned()).collect()
}

/// What the floor's map keys a key by: the first 8 bytes of its id text.
#[inline]
fn floor_id(key: &[u8]) -> u64 {
    let start = PREFIX.len() + 2;
    u64::from_le_bytes(key[start..start + 8].try_into().unwrap())
}

fn build(n: usize) -> Set {
    let ring = KeyRing::builder(PREFIX)
        .pepper([7; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let valid: Vec<String> = issue_keys(&ring, n);
    let body = PREFIX.len() + 1;
    let id_of = |k: &str| k[body + 1..body + 12].to_owned();
    let secret_of = |k: &str| k[body + 12..body + 36].to_owned();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    // As many of each kind of bad input as there are keys, so that every
    // kind is drawn from the whole set (the same records and the same spread
    // in memory as the valid keys).
    let samples = n;
    let wrong_secret = (0..samples)
        .map(|i| forge(&id_of(&valid[i]), &secret_of(&valid[(i + 1) % n])))
        .collect();
    let unknown_id = (0..samples)
        .map(|i| forge(&base62(rng.next(), 11), &secret_of(&valid[i])))
        .collect();
    let bad_checksum = (0..samples)
        .map(|i| {
            let mut k = valid[i].clone();
            let last = k.pop().unwrap();
            k.push(if last == 'A' { 'B' } else { 'A' });
            k
        })
        .collect();
    let malformed = (0..samples)
        .map(|i| format!("{PREFIX}_1{}", &valid[i][body + 1..body + 20]))
        .collect();
    let bad_character = (0..samples)
        .map(|i| {
            let mut k = valid[i].clone();
            k.replace_range(body + 24..body + 25, "-");
            k
        })
        .collect();
    // The floor finds every valid key: its map holds each key's first 8 id
    // bytes and the digest of its id and secret text.
    let floor_key = [9u8; 32];
    let start = PREFIX.len() + 2;
    let floor_map = valid
        .iter()
        .map(|k| {
            let k = k.as_bytes();
            (
                floor_id(k),
                *blake3::keyed_hash(&floor_key, &k[start..start + 35]).as_bytes(),
            )
        })
        .collect::<HashMap<_, _, _>>();
    assert_eq!(floor_map.len(), n, "floor ids must be distinct");
    let sha_map = valid
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                hex(&Sha256::digest(k.as_bytes())),
                (format!("acct_{i}"), i as u64),
            )
        })
        .collect();
    let order: Vec<usize> = (0..n.max(1 << 16).next_power_of_two())
        .map(|_| (rng.next() % n as u64) as usize)
        .collect();
    let mask = order.len() - 1;
    Set {
        ring,
        valid,
        wrong_secret,
        unknown_id,
        bad_checksum,
        malformed,
        bad_character,
        floor_map,
        floor_key,
        sha_map,
        order,
        mask,
    }
}

/// Peer (a) for the key drawn at `i`: SHA-256 of the whole key string,
/// hex-encoded, looked up in a `HashMap<String, _>`.
#[inline]
fn peer_sha256_call(set: &Set, i: usize) -> Option<u64> {
    let key = &set.valid[set.order[i & set.mask]];
    let digest = hex(&Sha256::digest(key.as_bytes()));
    set.sha_map.get(&digest).map(|r| r.1)
}

/// Checks that each rejection row is timed on the refusal it is named for
/// (a mistake in forging the strings, e.g. a wrong secret whose checksum
/// no longer matches, would otherwise time another refusal under the
/// row's name), and that every valid key verifies.
fn check_rejections(set: &Set) {
    use keyward::{MalformedReason, VerifyError};
    let start = PREFIX.len() + 2;
    let stored = |key: &str| {
        let id: KeyId = key[start..start + 11].parse().expect("an id's digits");
        set.ring.store().lookup(id).is_some()
    };
    // As many of each as there are keys, so that each row draws its string
    // through `order` as the valid row does, with no extra work (until
    // 2026-12 these rows took the drawn place modulo the set's length: a
    // division on every call that the valid row, their ratio's divisor,
    // did not make).
    for bad in [
        &set.wrong_secret,
        &set.unknown_id,
        &set.bad_checksum,
        &set.malformed,
        &set.bad_character,
    ] {
        assert_eq!(bad.len(), set.valid.len(), "a rejection string per key");
    }
    for i in 0..set.valid.len().min(1000) {
        assert!(
            set.ring.verify(&set.valid[i]).is_ok(),
            "valid keys must verify"
        );
        let wrong = &set.wrong_secret[i];
        assert!(
            matches!(set.ring.verify(wrong), Err(VerifyError::Invalid)) && stored(wrong),
            "wrong secret: a stored id refused as invalid"
        );
        let unknown = &set.unknown_id[i];
        assert!(
            matches!(set.ring.verify(unknown), Err(VerifyError::Invalid)) && !stored(unknown),
            "unknown id: an id no key has, refused as invalid"
        );
        assert!(
            matches!(
                set.ring.verify(&set.bad_checksum[i]),
                Err(VerifyError::Malformed(MalformedReason::BadChecksum))
            ),
            "bad checksum: refused on its checksum"
        );
        assert!(
            matches!(
                set.ring.verify(&set.malformed[i]),
                Err(VerifyError::Malformed(MalformedReason::WrongLength))
            ),
            "malformed: refused on its length"
        );
        let bad_character = &set.bad_character[i];
        assert!(
            bad_character.len() == set.valid[i].len()
                && matches!(
                    set.ring.verify(bad_character),
                    Err(VerifyError::Malformed(MalformedReason::BadAlphabet))
                ),
            "bad character: the right length, refused on its alphabet"
        );
    }
}

/// Checks that the peer's call finds every key it is timed on, and does
/// the peer's work and no more: one allocation, its hex digest (a peer
/// encodes with a table, as `hex::encode` does; a `format!` per byte would
/// time the bench's own encoder, 35 allocations a call).
fn check_peer(set: &Set) {
    for i in 0..1000 {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let found = peer_sha256_call(set, i);
        let made = ALLOCATIONS.load(Ordering::Relaxed) - before;
        assert!(found.is_some(), "the SHA-256 peer must find the key drawn");
        assert_eq!(made, 1, "the SHA-256 peer's call must allocate once");
    }
}

/// Lowercase hex of `bytes` in one allocation, from a table, as peers
/// encode their digests (`hex::encode`). Until 2026-12 this was a
/// `format!` per byte: 35 allocations, about 1.5 µs of the peer's 1.7 µs at
/// 1,000 keys, so the peer's row timed the bench's encoder.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

// ---- the calls measured --------------------------------------------------

/// The floor for the key drawn at `i`: hash id and secret text, find the id
/// (its first 8 bytes as the map key), compare in constant time.
#[inline]
fn floor_call(set: &Set, i: usize) -> bool {
    floor_lookup(set, i).is_some()
}

/// The floor's work, returning the stored digest when it matched.
#[inline]
fn floor_lookup(set: &Set, i: usize) -> Option<&[u8; 32]> {
    floor_lookup_with(set, i, |_| {})
}

/// The floor's work with `after_string` run where `verify` reads its clock:
/// once the presented string has been read (`verify` parses and checksums
/// it first), before the hash.
#[inline]
fn floor_lookup_with(set: &Set, i: usize, after_string: impl FnOnce(&[u8])) -> Option<&[u8; 32]> {
    let key = set.valid[set.order[i & set.mask]].as_bytes();
    after_string(key);
    floor_find(set, key, 0)
}

/// The floor's hash and lookup of `key`, whose map key (the id text's first
/// 8 bytes) is xored with `mix`: zero, but when it comes from a decode the
/// lookup waits for that decode, as verify's lookup waits for its parse.
#[inline]
fn floor_find<'s>(set: &'s Set, key: &[u8], mix: u64) -> Option<&'s [u8; 32]> {
    find_in(set, &set.floor_map, key, mix, |stored| stored)
}

/// A map keyed as the floor's: by the id text's first 8 bytes.
type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// [`floor_find`] in `map`, whose values hold the stored digest where
/// `digest` finds it.
#[inline]
fn find_in<'m, V>(
    set: &Set,
    map: &'m IdMap<V>,
    key: &[u8],
    mix: u64,
    digest: impl Fn(&V) -> &[u8; 32],
) -> Option<&'m V> {
    let start = PREFIX.len() + 2;
    let computed = blake3::keyed_hash(&set.floor_key, &key[start..start + 35]);
    let id = floor_id(key) ^ mix;
    let stored = map.get(&id)?;
    (blake3::Hash::from(*digest(stored)) == computed).then_some(stored)
}

/// The base62 value of each byte (keyward's alphabet); 255 for others.
static DIGIT: [u8; 256] = {
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut table = [255u8; 256];
    let mut i = 0;
    while i < 62 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Decodes up to 10 base62 digits, as keyward does; `None` on a character
/// outside the alphabet.
fn decode62(digits: &[u8]) -> Option<u64> {
    let (value, seen) = digits.iter().fold((0u64, 0u8), |(acc, seen), &b| {
        let d = DIGIT[usize::from(b)];
        (acc.wrapping_mul(62).wrapping_add(u64::from(d)), seen | d)
    });
    (seen < 64).then_some(value)
}

/// CRC32 as keyward computes it: a hasher built once (CPU detection done)
/// and copied per call.
fn crc32(bytes: &[u8]) -> u32 {
    static FRESH: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut hasher = FRESH.get_or_init(crc32fast::Hasher::new).clone();
    hasher.update(bytes);
    hasher.finalize()
}

/// What `verify`'s parse does before the lookup: length, prefix,
/// version, alphabet, CRC32 checksum, id decode.
#[inline]
fn parse_like(key: &[u8]) -> Option<u64> {
    if key.len() != PREFIX.len() + 1 + 42 {
        return None;
    }
    let (head, body) = key.split_at(key.len() - 42);
    let (&b'_', p) = head.split_last()? else {
        return None;
    };
    if p != PREFIX.as_bytes() || body[0] != b'1' {
        return None;
    }
    if !body[1..]
        .iter()
        .fold(true, |ok, &b| ok & b.is_ascii_alphanumeric())
    {
        return None;
    }
    let (checked, checksum) = key.split_at(key.len() - 6);
    if u64::from(crc32(checked)) != decode62(checksum)? {
        return None;
    }
    let high = decode62(&body[1..2])?;
    let low = decode62(&body[2..12])?;
    high.checked_mul(62u64.pow(10))?.checked_add(low)
}

/// The floor with verify's parse first (the lookup's key made to depend on
/// the decoded id, as verify's does) and, if `clock`, the clock read after.
#[inline]
fn floor_parsed(set: &Set, i: usize, clock: bool) -> Option<&[u8; 32]> {
    floor_parsed_then(set, i, || {
        if clock {
            black_box(SystemClock.unix_nanos());
        }
    })
}

/// [`floor_parsed`] with the clock read as `verify` ships: `SystemClock`'s
/// trailing (coarse) reading, not a precise one.
#[inline]
fn floor_parsed_shipped_clock(set: &Set, i: usize) -> Option<&[u8; 32]> {
    floor_parsed_then(set, i, || {
        black_box(SystemClock.trailing_unix_nanos());
    })
}

/// Verify's parse, then `read_clock` where verify reads its clock, then
/// the floor's lookup made to depend on the decoded id.
#[inline]
fn floor_parsed_then(set: &Set, i: usize, read_clock: impl FnOnce()) -> Option<&[u8; 32]> {
    parsed_then(set, &set.floor_map, i, read_clock, |stored| stored)
}

/// [`floor_parsed_then`] in `map` (see [`find_in`]).
#[inline]
fn parsed_then<'m, V>(
    set: &Set,
    map: &'m IdMap<V>,
    i: usize,
    read_clock: impl FnOnce(),
    digest: impl Fn(&V) -> &[u8; 32],
) -> Option<&'m V> {
    let key = set.valid[set.order[i & set.mask]].as_bytes();
    let decoded = parse_like(key)?;
    read_clock();
    find_in(set, map, key, decoded & black_box(0), digest)
}

/// [`floor_parsed_shipped_clock`] on [`Variants::arc_map`]: the slot found,
/// with its digest and its record's `Arc`.
#[inline]
fn arc_slot<'v>(set: &Set, v: &'v Variants, i: usize) -> Option<&'v ([u8; 32], Arc<Record>)> {
    arc_slot_in(set, &v.arc_map, i)
}

/// [`floor_parsed_shipped_clock`] on a map like [`Variants::arc_map`].
#[inline]
fn arc_slot_in<'m, R>(
    set: &Set,
    map: &'m IdMap<([u8; 32], Arc<R>)>,
    i: usize,
) -> Option<&'m ([u8; 32], Arc<R>)> {
    let read_clock = || {
        black_box(SystemClock.trailing_unix_nanos());
    };
    parsed_then(set, map, i, read_clock, |slot| &slot.0)
}

/// Checks on words a record's first 96 bytes span (two cache lines), as
/// verify reads of a plain key's record since a143197: branches on data
/// that just arrived, as verify's checks.
#[inline]
fn record_checks(r: &Record) -> bool {
    let d = &r.data;
    d[1] < u64::MAX - 1 && d[4] != 3 && d[7].min(d[8]).min(d[9]) > 2 && d[9] != 5 && d[2] != 7
}

/// The same checks on the words of the slot the floor's lookup found,
/// standing in for a record's hot fields held in a table's slot.
#[inline]
fn slot_checks(digest: &[u8; 32]) -> bool {
    let w = |k: usize| u64::from_le_bytes(digest[k * 8..k * 8 + 8].try_into().unwrap());
    w(1) < u64::MAX - 1 && w(0) != 3 && w(2).min(w(3)) > 2 && w(3) != 5 && w(2) != 7
}

/// Verify's parse and clock read, the floor's hash, then the model of a
/// chunked table (see [`chunked`]) in place of the floor's map, its
/// chunks' counts in the chunks or, if `apart`, together.
#[inline]
fn chunked_model(set: &Set, v: &Variants, i: usize, apart: bool) -> bool {
    chunked_on(set, if apart { &v.chunked_apart } else { &v.chunked }, i)
}

/// [`chunked_model`] on `table`.
#[inline]
fn chunked_on(set: &Set, table: &chunked::ChunkedTable, i: usize) -> bool {
    let key = set.valid[set.order[i & set.mask]].as_bytes();
    let Some(decoded) = parse_like(key) else {
        return false;
    };
    let now = SystemClock
        .trailing_unix_nanos()
        .unwrap_or_else(|| SystemClock.unix_nanos());
    let start = PREFIX.len() + 2;
    let computed = blake3::keyed_hash(&set.floor_key, &key[start..start + 35]);
    let id = floor_id(key) ^ (decoded & black_box(0));
    table.verify(id, computed.as_bytes(), now as i64).is_some()
}

/// The chunked table's model of the largest size's keys, for the thread
/// table (whose calls are plain functions of the set).
static THREADS_CHUNKED: std::sync::OnceLock<chunked::ChunkedTable> = std::sync::OnceLock::new();

/// [`chunked_on`] the table of [`THREADS_CHUNKED`], which must be set.
fn chunked_call(set: &Set, i: usize) -> bool {
    let table = THREADS_CHUNKED
        .get()
        .expect("the thread table builds its chunked table first");
    chunked_on(set, table, i)
}

/// A verify of the valid key drawn at `i`.
#[inline]
fn valid_call(set: &Set, i: usize) -> bool {
    set.ring.verify(&set.valid[set.order[i & set.mask]]).is_ok()
}

/// The next draw: back to back the next index; one at a time an index that
/// depends on the answer, behind an `lfence`, so the next call cannot start
/// before this one has finished.
/// A constant, so that back to back the index never waits for the answer (a
/// runtime flag lets the compiler select with a conditional move, which
/// makes every draw wait for the previous answer).
///
/// The `lfence` (on x86_64) is what makes one at a time hold for every
/// call. An index computed from the answer waits for it only where the
/// answer is data; where a call reaches its answer through branches (a
/// `HashMap` probe that compares keys, a `match` on a compare), the CPU
/// predicts them and starts the next call while this one's cache misses are
/// still outstanding. Until 2026-12-07 there was no fence: the SHA-256
/// peer's `HashMap<String, _>` lookup then overlapped call with call one at
/// a time as back to back (about 780 ns both ways at 1M keys, where the
/// floor read 450 and 725), and so did the models that answer from a table
/// slot before their write to a record. The floor and `verify` read the
/// same with the fence as without it (docs/benchmark-history.md, "One at a
/// time, fenced").
#[inline]
fn next<const ONE_AT_A_TIME: bool>(i: usize, found: bool) -> usize {
    if ONE_AT_A_TIME {
        let next = i.wrapping_add(2 - usize::from(found));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_lfence` needs only SSE2, which every x86_64 CPU
        // has; it reads and writes no memory.
        unsafe {
            std::arch::x86_64::_mm_lfence();
        }
        next
    } else {
        i.wrapping_add(1)
    }
}

/// What the variants of [`PAIRED`] need beside the set: the largest size's
/// valid keys on a second ring, on [`SwitchedClock`], and stand-ins for
/// records.
struct Variants {
    ring: KeyRing<MemoryStore>,
    valid: Vec<String>,

    /// One per key, laid out as a `StoredKey`'s allocation.
    records: Vec<Record>,
    /// The floor's map again, each slot holding its digest and an `Arc` of
    /// its own record, allocated one by one as keyward's records are: a
    /// table of hot fields whose slot points to the record `Verified` must
    /// reference.
    arc_map: IdMap<([u8; 32], Arc<Record>)>,
    /// The same with each slot holding an `Arc` of the key's own record in
    /// the first ring's store, where `verify` finds it.
    ring_arc_map: IdMap<([u8; 32], Arc<StoredKey>)>,
    /// The floor's ids and digests in a model of a chunked table (see
    /// [`chunked`]), each chunk's count in its own allocation...
    chunked: chunked::ChunkedTable,
    /// ...and the same with the counts apart, together.
    chunked_apart: chunked::ChunkedTable,
}

/// Which clock [`SwitchedClock`] acts as: one of the `AS_*` values.
static CLOCK_MODE: AtomicU8 = AtomicU8::new(AS_SYSTEM);
/// `SystemClock` as shipped: `verify` judges by its trailing reading.
const AS_SYSTEM: u8 = 0;
/// `SystemClock` without its trailing reading: `verify` reads the precise
/// clock every call, as it did before `SystemClock` had one.
const AS_PRECISE: u8 = 1;
/// `CoarseClock`.
const AS_COARSE: u8 = 2;

/// The second ring's clock, switched per call by [`CLOCK_MODE`], so the
/// three clocks are compared on one ring and one set of keys (rings built
/// one after the other lie in different memory, which can differ by a
/// tenth of the floor back to back).
#[derive(Debug)]
struct SwitchedClock;

impl Clock for SwitchedClock {
    fn now(&self) -> keyward::time::OffsetDateTime {
        SystemClock.now()
    }

    fn unix_nanos(&self) -> i128 {
        if CLOCK_MODE.load(Ordering::Relaxed) == AS_COARSE {
            CoarseClock.unix_nanos()
        } else {
            SystemClock.unix_nanos()
        }
    }

    fn trailing_unix_nanos(&self) -> Option<i128> {
        if CLOCK_MODE.load(Ordering::Relaxed) == AS_SYSTEM {
            SystemClock.trailing_unix_nanos()
        } else {
            None
        }
    }
}

/// Verify on the second ring, its clock acting as `mode`.
fn second_ring_call(set: &Set, v: &Variants, i: usize, mode: u8) -> bool {
    CLOCK_MODE.store(mode, Ordering::Relaxed);
    v.ring.verify(&v.valid[set.order[i & set.mask]]).is_ok()
}

/// A stand-in for a record: an `Arc<StoredKey>` allocation is two counts
/// and the `StoredKey` (120 bytes; 168 before the record diet), in a
/// 144-byte malloc chunk at 16-byte alignment; so is this (144 bytes apart,
/// 16-byte aligned). Sized from
/// `StoredKey`, and checked against its malloc chunk below, so that it
/// follows the record's layout.
#[repr(C, align(16))]
struct Record {
    count: AtomicU64,
    weak: u64,
    data: [u64; RECORD_WORDS],
}

/// The words of a `StoredKey`.
const RECORD_WORDS: usize = size_of::<StoredKey>() / 8;

const _: () = {
    assert!(size_of::<StoredKey>().is_multiple_of(8));
    // glibc's chunk for the `Arc<StoredKey>` allocation (see [`chunk`]).
    let arc = 16 + size_of::<StoredKey>();
    assert!(size_of::<Record>() == (arc + 8).div_ceil(16) * 16);
};

impl Variants {
    fn build(set: &Set, n: usize) -> Variants {
        let ring = KeyRing::builder(PREFIX)
            .pepper([7; 32])
            .flush_interval(None)
            .clock(SwitchedClock)
            .build(MemoryStore::new())
            .unwrap();
        let valid = issue_keys(&ring, n);
        let records = (0..n as u64)
            .map(|k| Record {
                count: AtomicU64::new(1),
                weak: 1,
                data: [k; RECORD_WORDS],
            })
            .collect();
        // In the order of the keys' strings, as keyward's records are
        // allocated in the order the keys were issued.
        let mut arc_map = HashMap::with_capacity_and_hasher(n, Default::default());
        let mut ring_arc_map = HashMap::with_capacity_and_hasher(n, Default::default());
        for key in &set.valid {
            let id = floor_id(key.as_bytes());
            let digest = set.floor_map[&id];
            let record = Arc::new(Record {
                count: AtomicU64::new(1),
                weak: 1,
                data: [id; RECORD_WORDS],
            });
            arc_map.insert(id, (digest, record));
            let start = PREFIX.len() + 2;
            let key_id: KeyId = key[start..start + 11].parse().unwrap();
            let stored = set.ring.store().lookup(key_id).unwrap();
            ring_arc_map.insert(id, (digest, stored));
        }
        let created_at = SystemClock.unix_nanos() as i64;
        let chunked_table = |apart| {
            let table = chunked::ChunkedTable::build(
                set.floor_map.iter().map(|(&id, &d)| (id, d)),
                created_at,
                apart,
            )
            .expect("the chunked table's model places every key");
            assert_eq!(table.len(), n);
            table
        };
        let chunked = chunked_table(false);
        let chunked_apart = chunked_table(true);
        let variants = Variants {
            ring,
            valid,
            records,
            arc_map,
            ring_arc_map,
            chunked,
            chunked_apart,
        };
        assert!(
            (0..n.min(1000)).all(|i| chunked_model(set, &variants, i, false)
                && chunked_model(set, &variants, i, true)),
            "the chunked table's model verifies the valid keys"
        );
        variants
    }

    /// The record the floor's lookup for `i` points to: a random one,
    /// reached straight from what the lookup found (one dependent access,
    /// as keyward's table slot holds its record's pointer).
    fn record(&self, set: &Set, i: usize) -> Option<&Record> {
        floor_lookup(set, i).map(|digest| self.record_of(digest))
    }

    /// The record a stored digest points to (see [`Variants::record`]).
    fn record_of(&self, digest: &[u8; 32]) -> &Record {
        let at = u64::from_le_bytes(digest[..8].try_into().unwrap());
        // Scaled by a multiply, as keyward's table picks its buckets (a
        // division would lengthen the chain).
        let at = ((u128::from(at) * self.records.len() as u128) >> 64) as usize;
        &self.records[at]
    }
}

/// Reads every byte of `key`, as `verify`'s checksum does before its clock
/// read.
#[inline]
fn read_whole(key: &[u8]) {
    black_box(key.iter().fold(0u8, |acc, &b| acc ^ b));
}

/// A counter every call of the locked-increment variant adds to.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The calls timed in alternating blocks, the floor first: the floor plus
/// one thing `verify` does (a clock read or a locked increment on a line in
/// cache, at the point where `verify` reads its clock: after the string,
/// whose last byte is read first as `verify`'s checksum reads it, and
/// before the hash;
/// dependent work on what the lookup found, as verify's checks of the
/// record; reading the record the lookup points to, in one line or in the
/// three its first bytes span, with or without checks on what it read, or
/// taking a reference count on it, as verify returns one); the floor with
/// verify's parse and checksum in front (and its clock read); a model of
/// verify on the floor's map (that parse, the clock read, then the record
/// reached from the floor's slot, referenced and checked: verify's work
/// with the floor's lookup in place of keyward's store); the same model
/// with the record's hot fields inline in the map's slot (its checks read
/// the slot, so only the reference count still reaches the record), and
/// with no record at all (a store whose slots hold everything and that
/// returns no reference-counted record): what a table of hot fields could
/// gain, with the precise clock read of the model; the model again with
/// the clock read as `verify` ships (its trailing, coarse reading) and the
/// record's first two lines checked, as verify's, with and without the
/// reference, its two hot-field variants, and two whose slot holds an
/// `Arc`, cloned as `Verified` is: of a record of its own, or of the key's
/// record in the first ring's store; a model of a chunked table (see
/// [`chunked`]), its chunks' counts in the chunks or together;
/// and verify itself; then verify on a second ring whose clock acts, call
/// by call, as
/// `SystemClock` (judged by its trailing reading), as `SystemClock` with
/// only precise readings (as before it had a trailing one), and as
/// `CoarseClock`; then the floor and verify with the presented string in
/// cache (fetched ahead, as in the criterion rows that say so), and the
/// bad-checksum rejection with the string from memory and in cache, and
/// the presented string fetched with nothing done to it, for the
/// [`DERIVED`] ratios.
type PairedCall = fn(&Set, &Variants, usize) -> bool;
const PAIRED: [(&str, PairedCall); 32] = [
    ("floor", |set, _, i| floor_call(set, i)),
    ("floor + clock read", |set, _, i| {
        floor_lookup_with(set, i, |key| {
            read_whole(key);
            black_box(SystemClock.unix_nanos());
        })
        .is_some()
    }),
    ("floor + coarse clock read", |set, _, i| {
        floor_lookup_with(set, i, |key| {
            read_whole(key);
            black_box(CoarseClock.unix_nanos());
        })
        .is_some()
    }),
    ("floor + locked increment", |set, _, i| {
        floor_lookup_with(set, i, |key| {
            read_whole(key);
            COUNTER.fetch_add(1, Ordering::Relaxed);
        })
        .is_some()
    }),
    ("floor + dependent steps", |set, _, i| {
        floor_lookup(set, i).is_some_and(|digest| {
            // 60 steps, each waiting for the one before, on what the lookup
            // found: work after the last cache miss that the CPU cannot do
            // early, as verify's checks of the record it found.
            let mut x = u64::from_le_bytes(digest[..8].try_into().unwrap());
            for _ in 0..black_box(60) {
                x = x.rotate_left(7) ^ x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
            x != 1
        })
    }),
    ("floor + record read", |set, v, i| {
        v.record(set, i)
            .is_some_and(|r| black_box(r.data[0]) != u64::MAX)
    }),
    ("floor + record reference", |set, v, i| {
        v.record(set, i).is_some_and(|r| {
            // As an `Arc` is cloned and its clone dropped.
            r.count.fetch_add(1, Ordering::Relaxed);
            let seen = black_box(r.data[0]) != u64::MAX;
            r.count.fetch_sub(1, Ordering::Release);
            seen
        })
    }),
    ("floor + record read, 3 lines", |set, v, i| {
        // A word in each of the three cache lines a record spans (bytes 0,
        // 72 and 128: for every 16-byte start offset within a line, three
        // distinct lines): what verify read of it before the layout change
        // of a143197, which keeps a plain key's reads within the first 96
        // bytes. (Bytes 0, 72 and 136 of the 192-byte chunk of the record
        // before the record diet; its 136 bytes now end before 136.)
        v.record(set, i).is_some_and(|r| {
            (r.count.load(Ordering::Relaxed) ^ black_box(r.data[7]) ^ black_box(r.data[14]))
                != u64::MAX
        })
    }),
    ("floor + record read, 3 lines, with checks", |set, v, i| {
        // As verify's checks: compares and a minimum over fields in those
        // lines, each a branch on data that just arrived.
        v.record(set, i).is_some_and(|r| {
            let d = &r.data;
            r.count.load(Ordering::Relaxed) != 0
                && d[1] < u64::MAX - 1
                && d[7] != 3
                && d[9].min(d[10]).min(d[11]) > 2
                && d[14] != 5
                && d[2] != 7
        })
    }),
    ("floor + parse and checksum", |set, _, i| {
        floor_parsed(set, i, false).is_some()
    }),
    ("floor + parse, checksum, clock read", |set, _, i| {
        floor_parsed(set, i, true).is_some()
    }),
    ("verify model on the floor's map", |set, v, i| {
        // Parse, checksum, clock read, hash, the floor's lookup, then the
        // record: a reference taken, the checks, the reference dropped.
        floor_parsed(set, i, true).is_some_and(|digest| {
            let r = v.record_of(digest);
            r.count.fetch_add(1, Ordering::Relaxed);
            let d = &r.data;
            let ok = d[1] < u64::MAX - 1
                && d[7] != 3
                && d[9].min(d[10]).min(d[11]) > 2
                && d[14] != 5
                && d[2] != 7;
            r.count.fetch_sub(1, Ordering::Release);
            ok
        })
    }),
    (
        "model, hot fields in the slot, record referenced",
        |set, v, i| {
            // The model with its checks on the slot the lookup found (the
            // digest's words stand in for the hot fields), the record only
            // referenced, as the `Verified` that verify returns must be.
            floor_parsed(set, i, true).is_some_and(|digest| {
                let w = |k: usize| u64::from_le_bytes(digest[k * 8..k * 8 + 8].try_into().unwrap());
                let ok = w(1) < u64::MAX - 1
                    && w(0) != 3
                    && w(2).min(w(3)) > 2
                    && w(3) != 5
                    && w(2) != 7;
                let r = v.record_of(digest);
                r.count.fetch_add(1, Ordering::Relaxed);
                r.count.fetch_sub(1, Ordering::Release);
                ok
            })
        },
    ),
    ("model, hot fields in the slot, no record", |set, _, i| {
        // The same with no record reached at all.
        floor_parsed(set, i, true).is_some_and(|digest| {
            let w = |k: usize| u64::from_le_bytes(digest[k * 8..k * 8 + 8].try_into().unwrap());
            w(1) < u64::MAX - 1 && w(0) != 3 && w(2).min(w(3)) > 2 && w(3) != 5 && w(2) != 7
        })
    }),
    ("model, shipped clock", |set, v, i| {
        // The model as `verify` ships: the trailing clock reading, the
        // record's first two lines read and checked under a reference.
        floor_parsed_shipped_clock(set, i).is_some_and(|digest| {
            let r = v.record_of(digest);
            r.count.fetch_add(1, Ordering::Relaxed);
            let ok = record_checks(r);
            r.count.fetch_sub(1, Ordering::Release);
            ok
        })
    }),
    (
        "model, shipped clock, record read, no write",
        |set, v, i| {
            // The same, the record read and checked but not written: no
            // locked instruction on its line.
            floor_parsed_shipped_clock(set, i)
                .is_some_and(|digest| record_checks(v.record_of(digest)))
        },
    ),
    (
        "model, shipped clock, hot fields in the slot, record referenced",
        |set, v, i| {
            // The checks on the slot; the record only referenced.
            floor_parsed_shipped_clock(set, i).is_some_and(|digest| {
                let ok = slot_checks(digest);
                let r = v.record_of(digest);
                r.count.fetch_add(1, Ordering::Relaxed);
                r.count.fetch_sub(1, Ordering::Release);
                ok
            })
        },
    ),
    (
        "model, shipped clock, hot fields in the slot, its Arc cloned",
        |set, v, i| {
            // The checks on the slot; the record reached through the `Arc`
            // the slot holds, cloned and dropped, as `Verified` would be.
            arc_slot(set, v, i).is_some_and(|(digest, record)| {
                let ok = slot_checks(digest);
                drop(black_box(Arc::clone(record)));
                ok
            })
        },
    ),
    (
        "model, shipped clock, hot fields in the slot, the ring's record's Arc cloned",
        |set, v, i| {
            // The same, the `Arc` the slot holds being of the record
            // `verify` reaches for this key in the first ring's store.
            arc_slot_in(set, &v.ring_arc_map, i).is_some_and(|(digest, record)| {
                let ok = slot_checks(digest);
                drop(black_box(Arc::clone(record)));
                ok
            })
        },
    ),
    ("model, shipped clock, chunked table", |set, v, i| {
        chunked_model(set, v, i, false)
    }),
    (
        "model, shipped clock, chunked table, counts apart",
        |set, v, i| chunked_model(set, v, i, true),
    ),
    (
        "model, shipped clock, hot fields in the slot, no record",
        |set, _, i| floor_parsed_shipped_clock(set, i).is_some_and(slot_checks),
    ),
    ("valid verify", |set, _, i| valid_call(set, i)),
    ("valid verify, second ring, SystemClock", |set, v, i| {
        second_ring_call(set, v, i, AS_SYSTEM)
    }),
    (
        "valid verify, second ring, precise reading every call",
        |set, v, i| second_ring_call(set, v, i, AS_PRECISE),
    ),
    ("valid verify, second ring, CoarseClock", |set, v, i| {
        second_ring_call(set, v, i, AS_COARSE)
    }),
    ("floor, string in cache", |set, _, i| {
        prefetch_ahead(&set.valid, set, i);
        floor_call(set, i)
    }),
    ("valid verify, string in cache", |set, _, i| {
        prefetch_ahead(&set.valid, set, i);
        valid_call(set, i)
    }),
    ("bad checksum", |set, _, i| bad_checksum_call(set, i)),
    // Its strings stay in cache: drawn from a few (see `IN_CACHE`).
    ("bad checksum, string in cache", |set, _, i| {
        set.ring
            .verify(&set.bad_checksum[set.order[i & (IN_CACHE - 1)]])
            .is_err()
    }),
    // What any rejection that reads the presented string costs at the
    // least: the string fetched (its first and last bytes), nothing else.
    ("string fetched, nothing else", |set, _, i| {
        let text = set.bad_checksum[set.order[i & set.mask]].as_bytes();
        black_box(text[0] ^ text[text.len() - 1]) != 0
    }),
    // Peer (a), taking turns with verify: criterion times it in a row of
    // its own, after verify's, and a change of the host's speed between
    // the two rows moves their ratio (run 15 read it either side of 1).
    ("peer: SHA-256 + String map", |set, _, i| {
        peer_sha256_call(set, i).is_some()
    }),
];

/// Ratios of one call of [`PAIRED`] to another (not the floor), each taken
/// round by round as the ratios to the floor are: verify against a floor
/// that also references the record its slot points to (as a verify that
/// returns its record must), the conditions the targets are read under,
/// with the string in cache on both sides or on neither, and peer (a)
/// against verify.
const DERIVED: [(&str, &str, &str); 6] = [
    (
        "valid verify / floor + record reference (a floor that reaches its record)",
        "valid verify",
        "floor + record reference",
    ),
    (
        "valid verify / floor, both with the string in cache",
        "valid verify, string in cache",
        "floor, string in cache",
    ),
    (
        "bad checksum / valid verify, both fetching the string from memory",
        "bad checksum",
        "valid verify",
    ),
    (
        "string fetched, nothing else / valid verify: the least a rejection from memory can cost",
        "string fetched, nothing else",
        "valid verify",
    ),
    (
        "bad checksum / valid verify, both with the string in cache",
        "bad checksum, string in cache",
        "valid verify, string in cache",
    ),
    (
        "peer (SHA-256 + String map) / valid verify: how much faster keyward is",
        "peer: SHA-256 + String map",
        "valid verify",
    ),
];

/// A verify of the bad-checksum string drawn at `i`: refused before any
/// lookup. Returns whether it was refused (always, so one at a time steps
/// through the draw order one place per call, as the valid rows do, and
/// the next draw still waits for the answer).
#[inline]
fn bad_checksum_call(set: &Set, i: usize) -> bool {
    set.ring
        .verify(&set.bad_checksum[set.order[i & set.mask]])
        .is_err()
}

/// The place in [`PAIRED`] of the call named `name`.
fn paired_index(name: &str) -> usize {
    PAIRED
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("DERIVED names a call PAIRED lacks: {name}"))
}

/// The calls of [`PAIRED`] timed in blocks that take turns (in an order
/// shuffled each round), so that all see the same state of a noisy
/// machine: for each call after the floor, the median and quartiles of its
/// per-round ratio to the floor; and the floor's median ns per call.
///
/// The order is shuffled, not rotated: a block finds the cache as the
/// block before it left it (the untimed warm-up below touches 20,000 keys,
/// a few MB, not a million keys' records), and a rotated order keeps each
/// call behind the same call in every round. Until 2026-12-07 it was
/// rotated, and a call's place decided its ratio one at a time by up to
/// 0.08x within a run: the second ring's first row after the first ring's
/// `verify` read 1.50x-1.51x and its last 1.42x-1.45x, whichever clock
/// each of them read (docs/benchmark-history.md, "A new bench machine, and
/// row order in the blocks").
///
/// Each block walks its own stretch of the draw order, starting at a random
/// place, after an untimed warm-up of the same call on another stretch: so
/// every call is timed in the cache state its own work leaves, on keys no
/// block before it has just read. (Until 2026-11-28 every block of a round
/// walked the same stretch, so each block found the strings, and the map
/// entries or records, that the blocks before it in the round had brought
/// into cache: the floor variants ran on keys already in cache while
/// `verify` found its table and records cold, which put the ratio of
/// `verify` to the floor too high.)
///
/// Also returns the [`DERIVED`] ratios, in its order.
fn paired<const ONE_AT_A_TIME: bool>(
    set: &Set,
    variants: &Variants,
    scale: &Scale,
) -> (f64, Vec<[f64; 3]>, Vec<[f64; 3]>) {
    let (rounds, calls) = (scale.rounds, scale.calls);
    let mut rng = Rng(0x005E_ED0F_B10C_u64 ^ u64::from(ONE_AT_A_TIME));
    // The parse model must take the path a valid key takes in `verify`.
    assert!(
        (0..1000).all(|i| floor_parsed(set, i, true).is_some()),
        "the bench's parse model refused a valid key"
    );
    let mut seconds = vec![[0f64; PAIRED.len()]; rounds];
    let mut order: Vec<usize> = (0..PAIRED.len()).collect();
    for times in &mut seconds {
        shuffle(&mut order, &mut rng);
        for &k in &order {
            let call = PAIRED[k].1;
            let run = |mut i: usize| {
                for _ in 0..calls {
                    let found = black_box(call(set, variants, i));
                    i = next::<ONE_AT_A_TIME>(i, found);
                }
            };
            run(rng.next() as usize);
            let started = Instant::now();
            run(rng.next() as usize);
            times[k] = started.elapsed().as_secs_f64();
        }
    }
    let quartiles = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        [v[rounds / 4], v[rounds / 2], v[rounds * 3 / 4]]
    };
    let floor_ns = quartiles(seconds.iter().map(|t| t[0] * 1e9 / calls as f64).collect())[1];
    let ratio = |k: usize, to: usize| quartiles(seconds.iter().map(|t| t[k] / t[to]).collect());
    let ratios = (1..PAIRED.len()).map(|k| ratio(k, 0)).collect();
    let derived = DERIVED
        .iter()
        .map(|(_, call, to)| ratio(paired_index(call), paired_index(to)))
        .collect();
    (floor_ns, ratios, derived)
}

/// Puts `order` in a random order drawn from `rng` (Fisher-Yates).
fn shuffle(order: &mut [usize], rng: &mut Rng) {
    for i in (1..order.len()).rev() {
        order.swap(i, rng.next() as usize % (i + 1));
    }
}

// ---- criterion part ------------------------------------------------------

/// One criterion row of `call` (generic, so the call is inlined as it would
/// be in a server: no indirect call).
fn row<const ONE_AT_A_TIME: bool>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    set: &Set,
    call: impl Fn(&Set, usize) -> bool,
) {
    let mut i = row_start();
    group.bench_function(name, |b| {
        b.iter(|| {
            let found = call(set, i);
            i = next::<ONE_AT_A_TIME>(i, found);
            found
        })
    });
}

/// Where a criterion row starts in the draw order: its own place, so that
/// it does not begin on the keys the row before it just brought into cache.
fn row_start() -> usize {
    let seed = DRAW_SEED.fetch_add(1, Ordering::Relaxed);
    Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).next() as usize
}

/// A criterion row of `call` on the key drawn at each place, with the
/// string it presents fetched ahead into cache.
fn row_string_in_cache<const ONE_AT_A_TIME: bool>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    set: &Set,
    keys: &[String],
    call: impl Fn(&Set, usize) -> bool,
) {
    let mut i = row_start();
    group.bench_function(name, |b| {
        b.iter(|| {
            prefetch_ahead(keys, set, i);
            let found = call(set, i);
            // One at a time the next draw waits for the answer (every key
            // here is found, so it is the next place all the same).
            i = next::<ONE_AT_A_TIME>(i, found);
            found
        })
    });
}

/// How many draws ahead [`prefetch_ahead`] fetches a string (and twice as
/// many, where it is): enough for a valid verify (8 calls take about 3 µs
/// at 1M keys). Not used for a rejection's rows (see [`IN_CACHE`]): 32
/// draws ahead read the same as 8 for them (run 30, 2026-12-07).
const AHEAD: usize = 8;

/// How many of the set's strings a rejection's "string in cache" rows
/// draw from (a power of two): few enough to stay in cache after the first
/// calls, since no prefetch can make a million strings look cached to a
/// call this fast. A rejection never reaches the store, so the work timed
/// is the same whichever strings it is shown. Until 2026-12-07 these rows
/// fetched their strings ahead as the valid rows do; at 1M keys a bad
/// checksum then read 73–75 ns in criterion against 29 ns at 1,000 keys
/// (runs 29 and 30, with the fetch 8 and 32 draws ahead alike): the cost of
/// fetching a random string from memory every 30 ns, which the bench's own
/// fetches pay (fetching the string and doing nothing else costs 48 ns a
/// call back to back at 1M keys, run 30's blocks), not the rejection.
const IN_CACHE: usize = 1024;

/// Has the CPU fetch, ahead of time, the string the call [`AHEAD`] draws
/// later presents (and, twice as far ahead, where that string is), so that
/// each call finds its presented string in cache, as a server finds the
/// request it has just parsed. Only the presented strings: the store, and
/// the floor's map, are left as cold as they are. The prefetches cost a few
/// ns per call (three instructions and an address), charged to every row
/// that uses them. On targets other than x86_64 it does nothing and these
/// rows read the string from memory like the others.
#[inline(always)]
fn prefetch_ahead(keys: &[String], set: &Set, i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let slot: *const String = &keys[set.order[i.wrapping_add(2 * AHEAD) & set.mask]];
        // The slot was asked for `AHEAD` draws ago: this read finds it in
        // cache.
        let text = keys[set.order[i.wrapping_add(AHEAD) & set.mask]].as_bytes();
        let (first, last) = (text.as_ptr(), text.as_ptr().wrapping_add(text.len() - 1));
        // SAFETY: `_mm_prefetch` only needs SSE, which every x86_64 CPU
        // has; a prefetch is a hint that reads nothing into the program and
        // cannot fault, and these are addresses of live data anyway.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(slot.cast());
            _mm_prefetch::<_MM_HINT_T0>(first.cast());
            _mm_prefetch::<_MM_HINT_T0>(last.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (keys, set, i);
}

fn bench_size(c: &mut Criterion, n: usize, set: &Set) {
    let mut group = c.benchmark_group(format!("n{n}"));
    // One at a time: the next key is chosen from the previous call's answer,
    // so a call cannot start before the one before it finished (as for
    // requests, whose verifications do not overlap). Back to back, the CPU
    // may overlap one call's memory accesses with the next call's work;
    // `verify` lets it do so less (BENCHMARKS.md discusses why).
    row::<false>(&mut group, "floor", set, floor_call);
    row::<false>(&mut group, "valid", set, valid_call);
    row::<true>(&mut group, "floor_one_at_a_time", set, floor_call);
    row::<true>(&mut group, "valid_one_at_a_time", set, valid_call);
    for (name, keys) in [
        ("wrong_secret", &set.wrong_secret[..]),
        ("unknown_id", &set.unknown_id[..]),
        ("bad_checksum", &set.bad_checksum[..]),
        ("malformed", &set.malformed[..]),
        ("bad_character", &set.bad_character[..]),
    ] {
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(set.ring.verify(&keys[set.order[i & set.mask]]).is_err())
            })
        });
    }
    // The same calls with the presented string in cache, as a server has
    // the request it just parsed: each call's string is fetched ahead (see
    // `prefetch_ahead`), while the store and the floor's map stay as cold
    // as above. Rejecting cannot skip reading the string; here the figure is
    // the work of rejecting, not the bench's own fetch of the string. The
    // rejections' rows draw their strings from a few that stay in cache
    // instead (see `IN_CACHE`).
    let valid = &set.valid[..];
    row_string_in_cache::<false>(&mut group, "floor_string_in_cache", set, valid, floor_call);
    row_string_in_cache::<false>(&mut group, "valid_string_in_cache", set, valid, valid_call);
    let (floor_name, valid_name) = (
        "floor_one_at_a_time_string_in_cache",
        "valid_one_at_a_time_string_in_cache",
    );
    row_string_in_cache::<true>(&mut group, floor_name, set, valid, floor_call);
    row_string_in_cache::<true>(&mut group, valid_name, set, valid, valid_call);
    for (name, keys) in [
        ("bad_checksum_string_in_cache", &set.bad_checksum[..]),
        ("malformed_string_in_cache", &set.malformed[..]),
        ("bad_character_string_in_cache", &set.bad_character[..]),
    ] {
        let mut i = row_start();
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                black_box(
                    set.ring
                        .verify(&keys[set.order[i & (IN_CACHE - 1)]])
                        .is_err(),
                )
            })
        });
    }
    let mut i = 0usize;
    group.bench_function("peer_sha256_string_map", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(peer_sha256_call(set, i))
        })
    });
    group.finish();
}

fn bench_argon2(c: &mut Criterion) {
    let argon = argon2::Argon2::default();
    let salt = [5u8; 16];
    let key = b"bench_1JFA4D1omlLdYUGrgJLQzJ29pTBAIpyr8I1G1x1f02";
    let mut stored = [0u8; 32];
    argon.hash_password_into(key, &salt, &mut stored).unwrap();
    let mut group = c.benchmark_group("argon2");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("peer_argon2id_default", |b| {
        b.iter(|| {
            let mut out = [0u8; 32];
            argon
                .hash_password_into(black_box(key), &salt, &mut out)
                .unwrap();
            black_box(out == stored)
        })
    });
    group.finish();
}

/// Access-token verification next to API-key verification (1,000 keys), and
/// leak scanning throughput.
fn bench_tokens_and_scan(c: &mut Criterion) {
    let ring = KeyRing::builder(PREFIX)
        .pepper([7; 32])
        .signing_key(1, [3; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let keys: Vec<String> = issue_keys(&ring, 1000);
    let tokens: Vec<String> = keys
        .iter()
        .map(|k| {
            ring.exchange(k, keyward::time::Duration::minutes(30))
                .unwrap()
                .expose()
                .to_owned()
        })
        .collect();
    let mut group = c.benchmark_group("tokens");
    let mut i = 0usize;
    group.bench_function("api_key_verify", |b| {
        b.iter(|| {
            i = i.wrapping_add(7);
            black_box(ring.verify(&keys[i % keys.len()]).is_ok())
        })
    });
    let mut i = 0usize;
    group.bench_function("access_token_verify", |b| {
        b.iter(|| {
            i = i.wrapping_add(7);
            black_box(ring.verify_access_token(&tokens[i % tokens.len()]).is_ok())
        })
    });
    let mut i = 0usize;
    group.bench_function("access_token_verify_strict", |b| {
        b.iter(|| {
            i = i.wrapping_add(7);
            black_box(
                ring.verify_access_token_strict(&tokens[i % tokens.len()])
                    .is_ok(),
            )
        })
    });
    group.finish();

    // 8 MB of log lines, one in a hundred carrying a key.
    let mut text = String::new();
    let mut n = 0;
    while text.len() < 8 << 20 {
        if n % 100 == 0 {
            text.push_str(&format!(
                "2026-11-27T10:00:00Z INFO GET /v1/invoices?api_key={} 200 12ms\n",
                keys[n % keys.len()]
            ));
        } else {
            text.push_str(&format!(
                "2026-11-27T10:00:00Z INFO GET /v1/invoices/{n} user=acct_{n} 200 12ms\n"
            ));
        }
        n += 1;
    }
    let mut group = c.benchmark_group("scan");
    group.throughput(criterion::Throughput::Bytes(text.len() as u64));
    group.sample_size(10);
    group.bench_function("log_8mb", |b| {
        b.iter(|| black_box(keyward::scan(&text).len()))
    });
    group.finish();
}

/// When this run began (set first thing in `main`).
static STARTED: std::sync::OnceLock<std::time::SystemTime> = std::sync::OnceLock::new();

/// The median of a criterion benchmark, in ns, from its saved estimates;
/// `None` if this run did not write them. Criterion leaves the estimates of
/// earlier runs in place, so a row that a filter (or `--test`) left out
/// would otherwise print, and go into the CSV, with an earlier run's figure
/// beside this run's, its ratio taken across two runs. The estimates are
/// where criterion writes them: under `CRITERION_HOME` if it is set, else
/// under `criterion` in the target directory.
fn median(group: &str, name: &str) -> Option<f64> {
    let home = std::env::var("CRITERION_HOME").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        format!("{target}/criterion")
    });
    let path = format!("{home}/{group}/{name}/new/estimates.json");
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if written < *STARTED.get()? {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

// ---- plain-loop part -----------------------------------------------------

/// How much of each part the run does: the full bench, or a smoke run.
struct Scale {
    /// Rounds of the blocks that take turns.
    rounds: usize,
    /// Timed calls per block.
    calls: usize,
    /// Rounds of the thread-scaling table.
    thread_rounds: usize,
    /// Seconds per row and round of the thread-scaling table.
    thread_secs: f64,
}

/// The full bench.
const FULL: Scale = Scale {
    rounds: 61,
    calls: 20_000,
    thread_rounds: 9,
    thread_secs: 0.5,
};

/// A smoke run (`cargo test --benches`, or `-- --test`): every part and
/// every setup check, at 1,000 keys unless `KEYWARD_BENCH_SIZES` says
/// otherwise, for a moment each; its figures mean nothing.
const SMOKE: Scale = Scale {
    rounds: 3,
    calls: 200,
    thread_rounds: 1,
    thread_secs: 0.02,
};

/// Seeds the draws of every thread of [`throughput`]: each thread takes the
/// next, so no two threads (and no two rows) walk the same keys.
static DRAW_SEED: AtomicU64 = AtomicU64::new(1);

/// Calls per second of `call` over `secs` on `threads` threads, optionally
/// with a writer thread issuing and revoking `writer` keys per second
/// meanwhile (`Some(0)`: as fast as it can). Each thread draws its keys at
/// random on its own: until 2026-11-28 the threads walked one draw order a
/// few thousand places apart, so each verified keys the other had just
/// verified, and paid to fetch those records' lines from the other core.
fn throughput(
    set: &Set,
    threads: usize,
    writer: Option<u32>,
    secs: f64,
    call: fn(&Set, usize) -> bool,
) -> f64 {
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (stop, total) = (&stop, &total);
            let seed = DRAW_SEED.fetch_add(1, Ordering::Relaxed);
            scope.spawn(move || {
                let mut draws = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        black_box(call(set, draws.next() as usize));
                    }
                    n += 256;
                }
                total.fetch_add(n, Ordering::Relaxed);
            });
        }
        if let Some(rate) = writer {
            let stop = &stop;
            scope.spawn(move || {
                let started = Instant::now();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let issued = set.ring.issue(issue_request(i)).unwrap();
                    set.ring.revoke(issued.key.id(), "bench").unwrap();
                    i += 1;
                    if rate > 0 {
                        let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate));
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    total.load(Ordering::Relaxed) as f64 / secs
}

/// The variable that makes this binary open the store at its path, print
/// the seconds it took, and exit (see [`open_in_child`]).
const OPEN_CHILD: &str = "KEYWARD_BENCH_OPEN_CHILD";

/// Opens the store at `path` in a fresh process (this binary again) and
/// returns the seconds the open took there.
fn open_in_child(path: &std::path::Path, n: usize) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(OPEN_CHILD, path)
        .output()
        .unwrap();
    assert!(out.status.success(), "open in a child process failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (keys, seconds) = text.trim().split_once(' ').unwrap();
    assert_eq!(keys.parse::<usize>().unwrap(), n);
    seconds.parse().unwrap()
}

/// Set in a child process that issues this many keys to a `MemoryStore`
/// and prints the growth of its resident set per key.
const MEMORY_CHILD: &str = "KEYWARD_BENCH_MEMORY_CHILD";

/// The growth of a fresh process's resident set per key, as it issues `n`
/// keys to a `MemoryStore`.
fn memory_in_child(n: usize) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(MEMORY_CHILD, n.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "the memory child process failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn main() {
    if let Some(n) = std::env::var_os(MEMORY_CHILD) {
        let n: usize = n.to_str().unwrap().parse().unwrap();
        let before = resident();
        let ring = memory_ring(n);
        println!("{}", (resident() - before) as f64 / n as f64);
        drop(ring);
        return;
    }
    if let Some(path) = std::env::var_os(OPEN_CHILD) {
        let started = Instant::now();
        let store = FileStore::open(path).unwrap();
        println!("{} {}", store.len(), started.elapsed().as_secs_f64());
        return;
    }
    STARTED.get_or_init(std::time::SystemTime::now);
    // A misnamed ratio fails here, not after the criterion part has run.
    for (_, call, to) in DERIVED {
        paired_index(call);
        paired_index(to);
    }
    // `cargo test --benches` (and `--all-targets`) runs this binary without
    // `--bench`, and `cargo bench --bench verify -- --test` with `--test`:
    // criterion then runs each row once, untimed, and the rest of the bench
    // runs as a smoke run (see `SMOKE`) instead of building a million keys.
    let args: Vec<String> = std::env::args().collect();
    let smoke = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    let scale = if smoke { &SMOKE } else { &FULL };
    let sizes: Vec<usize> = std::env::var("KEYWARD_BENCH_SIZES")
        .unwrap_or_else(|_| {
            if smoke {
                "1000".into()
            } else {
                "1000,10000,100000,1000000".into()
            }
        })
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("KEYWARD_BENCH_SIZES: comma-separated numbers")
        })
        .collect();
    if std::env::var_os("KEYWARD_BENCH_STORE_ONLY").is_some() {
        let n = sizes.iter().copied().max().unwrap_or(0);
        memory_and_file_store(n);
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(60)
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(2));

    let mut report = Vec::new();
    let mut largest = None;
    for &n in &sizes {
        let set = build(n);
        check_rejections(&set);
        check_peer(&set);
        bench_size(&mut c, n, &set);
        largest = Some((n, set));
    }
    bench_argon2(&mut c);
    bench_tokens_and_scan(&mut c);
    c.final_summary();

    // Latency tables.
    let get = |n: usize, name: &str| median(&format!("n{n}"), name);
    let ratio = |v: Option<f64>, base: Option<f64>| match (v, base) {
        (Some(v), Some(b)) => format!("{v:.0} ({:.2}x)", v / b),
        _ => "-".into(),
    };
    let plain = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let mut csv = String::from("keys,name,median_ns\n");
    println!(
        "\n## verify latency, back to back (criterion medians, ns; ratio to the floor of the same size)\n"
    );
    println!(
        "| keys | floor | valid | wrong secret | unknown id | bad checksum | malformed | SHA-256 + String map |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        for name in [
            "floor",
            "valid",
            "floor_one_at_a_time",
            "valid_one_at_a_time",
            "wrong_secret",
            "unknown_id",
            "bad_checksum",
            "malformed",
            "floor_string_in_cache",
            "valid_string_in_cache",
            "floor_one_at_a_time_string_in_cache",
            "valid_one_at_a_time_string_in_cache",
            "bad_checksum_string_in_cache",
            "malformed_string_in_cache",
            "bad_character",
            "bad_character_string_in_cache",
            "peer_sha256_string_map",
        ] {
            if let Some(v) = get(n, name) {
                csv.push_str(&format!("{n},{name},{v:.1}\n"));
            }
        }
        let floor = get(n, "floor");
        let cell = |name: &str| ratio(get(n, name), floor);
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            plain(floor),
            cell("valid"),
            cell("wrong_secret"),
            cell("unknown_id"),
            cell("bad_checksum"),
            cell("malformed"),
            cell("peer_sha256_string_map"),
        );
        report.push((n, get(n, "valid")));
    }
    println!(
        "\n## one at a time: each call waits for the previous one (per-request latency; ratio to the floor measured the same way)\n"
    );
    println!("| keys | floor | valid |");
    println!("|---:|---:|---:|");
    for &n in &sizes {
        let floor = get(n, "floor_one_at_a_time");
        println!(
            "| {n} | {} | {} |",
            plain(floor),
            ratio(get(n, "valid_one_at_a_time"), floor),
        );
    }
    println!(
        "\n## presented string in cache (fetched ahead, as a server has the request it just parsed; the store as cold as above), ratio to the floor measured the same way\n"
    );
    println!(
        "| keys | floor, back to back | valid, back to back | floor, one at a time | valid, one at a time |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let floor = get(n, "floor_string_in_cache");
        let floor_one = get(n, "floor_one_at_a_time_string_in_cache");
        println!(
            "| {n} | {} | {} | {} | {} |",
            plain(floor),
            ratio(get(n, "valid_string_in_cache"), floor),
            plain(floor_one),
            ratio(get(n, "valid_one_at_a_time_string_in_cache"), floor_one),
        );
    }
    println!(
        "\n## rejections, ratio to a valid verify of the same size measured the same way (back to back)\n"
    );
    println!(
        "| keys | bad checksum | malformed | malformed, right length | bad checksum, string in cache | malformed, string in cache | malformed, right length, string in cache |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let cell = |name: &str, valid: &str| ratio(get(n, name), get(n, valid));
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} |",
            cell("bad_checksum", "valid"),
            cell("malformed", "valid"),
            cell("bad_character", "valid"),
            cell("bad_checksum_string_in_cache", "valid_string_in_cache"),
            cell("malformed_string_in_cache", "valid_string_in_cache"),
            cell("bad_character_string_in_cache", "valid_string_in_cache"),
        );
    }
    let argon = median("argon2", "peer_argon2id_default");
    if let Some(a) = argon {
        csv.push_str(&format!("0,peer_argon2id_default,{a:.1}\n"));
        let valid_small = report.first().and_then(|r| r.1);
        println!(
            "\nArgon2id (argon2 crate defaults), one verify: {:.2} ms; keyward valid verify is {:.0}x faster",
            a / 1e6,
            valid_small.map_or(f64::NAN, |v| a / v)
        );
    }
    if let (Some(key), Some(token), Some(strict)) = (
        median("tokens", "api_key_verify"),
        median("tokens", "access_token_verify"),
        median("tokens", "access_token_verify_strict"),
    ) {
        println!("\n## access tokens (1,000 keys, criterion medians)\n");
        println!("| check | ns | ratio to API-key verify |");
        println!("|---|---:|---:|");
        println!("| API-key verify | {key:.0} | 1.00x |");
        println!(
            "| access-token verify (no store lookup) | {token:.0} | {:.2}x |",
            token / key
        );
        println!(
            "| access-token verify, strict (one lookup) | {strict:.0} | {:.2}x |",
            strict / key
        );
    }
    if let Some(scan) = median("scan", "log_8mb") {
        let bytes = 8u64 << 20;
        println!(
            "\nscan: {:.0} MB/s over 8 MB of log lines (one key per 100 lines)",
            bytes as f64 / scan * 1e3
        );
    }
    let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    // A smoke run's figures mean nothing: it leaves a full run's CSV alone.
    if !smoke {
        let _ = std::fs::write(format!("{dir}/keyward-bench.csv"), csv);
    }

    if let Some((n, set)) = &largest {
        println!(
            "\n## ratios to the floor, {n} keys, timed in blocks that take turns ({} rounds of {} calls each; median, and the middle half of the rounds)\n",
            scale.rounds, scale.calls
        );
        // Where the records' allocations start in their cache lines: what
        // a plain key's `verify` reads of its record (the `Arc`'s counts
        // and its first 80 bytes) spans two lines from three of malloc's
        // four 16-byte offsets, three from the fourth (48), so the share
        // at 48 can move the ratios from one process to the next.
        let mut offsets = [0usize; 4];
        let records = set.ring.store().list(None).unwrap();
        for record in &records {
            let start = Arc::as_ptr(record) as usize - 16;
            offsets[start % 64 / 16] += 1;
        }
        let share = |k: usize| 100.0 * offsets[k] as f64 / records.len() as f64;
        println!(
            "Records' allocations by offset in their cache line: 0: {:.0}%, 16: {:.0}%, 32: {:.0}%, 48: {:.0}% (48: verify reads three lines of the record, two otherwise)\n",
            share(0),
            share(1),
            share(2),
            share(3)
        );
        drop(records);
        let variants = Variants::build(set, *n);
        let (apart_ns, apart, apart_derived) = paired::<false>(set, &variants, scale);
        let (chained_ns, chained, chained_derived) = paired::<true>(set, &variants, scale);
        println!("| call | back to back | one at a time |");
        println!("|---|---:|---:|");
        println!("| floor, ns | {apart_ns:.0} | {chained_ns:.0} |");
        let cell = |[low, median, high]: [f64; 3]| format!("{median:.2}x ({low:.2}–{high:.2})");
        for (k, (name, _)) in PAIRED[1..].iter().enumerate() {
            println!("| {name} | {} | {} |", cell(apart[k]), cell(chained[k]));
        }
        println!("\n| ratio, round by round, in the same blocks | back to back | one at a time |");
        println!("|---|---:|---:|");
        for (k, (name, _, _)) in DERIVED.iter().enumerate() {
            println!(
                "| {name} | {} | {} |",
                cell(apart_derived[k]),
                cell(chained_derived[k])
            );
        }
    }

    if std::env::var_os("KEYWARD_BENCH_LATENCY_ONLY").is_some() {
        return;
    }
    let Some((n, set)) = largest else { return };
    println!(
        "\n## threads, {n} keys, verifies of random valid keys (and the floor's calls), each thread drawing its own keys, {} rounds of {} s per row taking turns (median; lowest and highest round)\n",
        scale.thread_rounds, scale.thread_secs
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Each row: label, threads, writer, the call, and the row its ratio is
    // to. The floor's rows show what the machine itself gives a second
    // thread on this work (both threads miss the cache on every call).
    type Row = (String, usize, Option<u32>, fn(&Set, usize) -> bool, usize);
    THREADS_CHUNKED.get_or_init(|| {
        let created_at = SystemClock.unix_nanos() as i64;
        let entries = set.floor_map.iter().map(|(&id, &d)| (id, d));
        chunked::ChunkedTable::build(entries, created_at, false)
            .expect("the chunked table's model places every key")
    });
    assert!(
        (0..n.min(1000)).all(|i| chunked_call(&set, i)),
        "the chunked table's model verifies the valid keys"
    );
    let rows: [Row; 8] = [
        ("1".into(), 1, None, valid_call, 0),
        ("2".into(), 2, None, valid_call, 0),
        (
            "2 + a writer, 1,000 issue+revoke/s".into(),
            2,
            Some(1000),
            valid_call,
            0,
        ),
        (
            format!("2 + a writer issuing and revoking flat out (3 busy threads on {cores} cores)"),
            2,
            Some(0),
            valid_call,
            0,
        ),
        ("floor, 1".into(), 1, None, floor_call, 4),
        ("floor, 2".into(), 2, None, floor_call, 4),
        // Its chunks' counts are shared by 128 keys each, so two threads
        // write the same count lines, where verify's records are a million.
        ("chunked table model, 1".into(), 1, None, chunked_call, 6),
        ("chunked table model, 2".into(), 2, None, chunked_call, 6),
    ];
    // Each round times every row for a short window, in an order rotated
    // each round, and divides by that round's one-thread rate: a slow or
    // fast phase of the host then shows in both sides of a ratio.
    let mut rates = vec![Vec::new(); rows.len()];
    let mut ratios = vec![Vec::new(); rows.len()];
    let keys_before = set.ring.store().len();
    for round in 0..scale.thread_rounds {
        let mut got = vec![0.0; rows.len()];
        for turn in 0..rows.len() {
            let k = (round + turn) % rows.len();
            let (_, threads, writer, call, _) = &rows[k];
            got[k] = throughput(&set, *threads, *writer, scale.thread_secs, *call);
        }
        for (k, row) in rows.iter().enumerate() {
            rates[k].push(got[k]);
            ratios[k].push(got[k] / got[row.4]);
        }
    }
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    println!("| threads | calls/s | ratio to 1 thread |");
    println!("|---|---:|---:|");
    for (k, (label, ..)) in rows.iter().enumerate() {
        let rate = sorted(rates[k].clone());
        let ratio = sorted(ratios[k].clone());
        let last = ratio.len() - 1;
        println!(
            "| {label} | {:.2} M | {:.2}x ({:.2}–{:.2}) |",
            rate[rate.len() / 2] / 1e6,
            ratio[ratio.len() / 2],
            ratio[0],
            ratio[last]
        );
    }
    // The writers' keys stay in the store, revoked (as revoked keys do):
    // the table's later rounds ran on a larger store than its heading says.
    println!(
        "\nThe store held {keys_before} keys when the table began and {} when it ended (the writers' keys stay, revoked).",
        set.ring.store().len()
    );
    drop(set);

    memory_and_file_store(n);
}

/// Memory per key of fuller keys than the bench's: a 36-character owner
/// (a UUID, as many hosts use), a name and three scopes, in a ring of their
/// own, dropped after.
fn fuller_keys(n: usize) {
    let before = live();
    let chunks_before = live_chunks();
    let ring = bare_memory_ring();
    let scopes = ScopeSet::parse(["invoices:read", "invoices:write", "customers:read"]).unwrap();
    for i in 0..n {
        let owner = format!("{:08x}-0000-4000-8000-{:012x}", i % 50_000, i % 50_000);
        let request = NewKey::new(owner)
            .name("billing sync")
            .scopes(scopes.clone());
        drop(ring.issue(request).unwrap());
    }
    let requested = (live() - before) as f64 / n as f64;
    let chunks = (live_chunks() - chunks_before) as f64 / n as f64;
    println!(
        "MemoryStore, keys with a UUID owner, a name and three scopes: {requested:.0} bytes per key requested, {chunks:.0} as malloc hands them out"
    );
}

/// A ring on a `MemoryStore` holding the bench's first `n` keys
/// ([`issue_request`]), as the memory rows measure it.
fn memory_ring(n: usize) -> KeyRing<MemoryStore> {
    let ring = bare_memory_ring();
    for i in 0..n {
        drop(ring.issue(issue_request(i)).unwrap());
    }
    ring
}

/// A ring on an empty `MemoryStore`, with no background flush.
fn bare_memory_ring() -> KeyRing<MemoryStore> {
    KeyRing::builder(PREFIX)
        .pepper([7; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap()
}

/// Memory per key (`MemoryStore`, `FileStore`), and `FileStore`'s open
/// time, issue rate and compaction, at `n` keys.
fn memory_and_file_store(n: usize) {
    println!("\n## memory and FileStore, {n} keys\n");
    let before = live();
    let chunks_before = live_chunks();
    let ring = memory_ring(n);
    let memory_per_key = (live() - before) as f64 / n as f64;
    let chunks_per_key = (live_chunks() - chunks_before) as f64 / n as f64;
    println!("MemoryStore: {memory_per_key:.0} bytes per key (live heap, allocator-counted)");
    // The resident set of this process already holds what the bench freed,
    // so it is read in a fresh one.
    let resident_per_key = memory_in_child(n);
    println!(
        "MemoryStore: {chunks_per_key:.0} bytes per key as malloc hands them out (glibc's chunk sizes); in a fresh process the resident set grew by {resident_per_key:.0} per key"
    );
    fuller_keys(n);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.kw");
    {
        let store = FileStore::open(&path).unwrap();
        let mut export = Vec::new();
        keyward::store::export(ring.store(), &mut export).unwrap();
        store
            .import(&export[..], keyward::store::ImportMode::Replace)
            .unwrap();
    }
    drop(ring);
    let file_size = std::fs::metadata(&path).unwrap().len();
    // As a host opens its store: at start-up, in a process of its own.
    let mut fresh: Vec<f64> = (0..3).map(|_| open_in_child(&path, n)).collect();
    fresh.sort_by(f64::total_cmp);
    println!(
        "FileStore open, fresh process: {:.2} s for {n} keys ({:.0} MB file; median of 3, {:.2}-{:.2} s)",
        fresh[1],
        file_size as f64 / 1e6,
        fresh[0],
        fresh[2]
    );
    let before = live();
    let started = Instant::now();
    let store = FileStore::open(&path).unwrap();
    let open_time = started.elapsed();
    let file_per_key = (live() - before) as f64 / n as f64;
    assert_eq!(store.len(), n);
    println!(
        "FileStore open, in this process (its heap holding what the bench freed): {:.2} s",
        open_time.as_secs_f64()
    );
    println!("FileStore: {file_per_key:.0} bytes per key after open (live heap)");
    let ring = KeyRing::builder(PREFIX)
        .pepper([7; 32])
        .flush_interval(None)
        .build(store)
        .unwrap();
    let count = 200;
    let started = Instant::now();
    for i in 0..count {
        ring.issue(issue_request(i)).unwrap();
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    println!(
        "FileStore issue with fsync: {rate:.0} keys/s ({:.2} ms each)",
        1e3 / rate
    );

    // Compaction while keys are issued, as a ring's flusher compacts while
    // an administrator works: how long the compaction takes, and how long
    // the writes made meanwhile wait (each appends and fsyncs its record).
    let compacting = AtomicBool::new(true);
    let (compaction, mut waits) = std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            let started = Instant::now();
            ring.store().compact().unwrap();
            let took = started.elapsed();
            compacting.store(false, Ordering::Release);
            took
        });
        let mut waits = Vec::new();
        let mut i = count;
        while compacting.load(Ordering::Acquire) {
            let started = Instant::now();
            ring.issue(issue_request(i)).unwrap();
            waits.push(started.elapsed().as_secs_f64() * 1e3);
            i += 1;
        }
        (compactor.join().unwrap(), waits)
    });
    waits.sort_by(f64::total_cmp);
    println!(
        "FileStore compaction of {n} keys: {:.2} s; {} keys issued meanwhile, each waiting median {:.2} ms, longest {:.0} ms",
        compaction.as_secs_f64(),
        waits.len(),
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
}
