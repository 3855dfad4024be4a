//! Scratch probe (session 47, 2026-12-07): which part of `verify` keeps
//! consecutive calls from overlapping back to back at 1M keys. Not a
//! figure for BENCHMARKS.md; its findings are in docs/benchmark-history.md,
//! "A new bench machine, the chunked store's first runs on it, and a
//! rejection's string in cache".
//!
//! Kept here, not in `benches/`, so that CI neither builds nor runs it. To
//! run it: copy it to `benches/probe.rs`, add to Cargo.toml
//! `[[bench]] name = "probe" harness = false`, then
//! `cargo bench --bench probe` (about 20 s at 1M keys). `PROBE_N` sets the
//! number of keys, `PROBE_ROUNDS` the rounds (21), `PROBE_CALLS` a
//! comma-separated list of rows by index (the floor, 0, first).
//!
//! Standalone on purpose: `IdHasher`, `crc32`, `decode62` and `parse_like`
//! are copies of benches/verify.rs's (as of 029b15b), so that the probe
//! needs nothing but keyward's public API.

mod common;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::{PREFIX, Rng};
use keyward::{KeyRing, MemoryStore, NewKey};

#[derive(Default)]
struct IdHasher(u64);
impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!()
    }
    fn write_u64(&mut self, id: u64) {
        let p = u128::from(id ^ 0x243F_6A88_85A3_08D3) * u128::from(0x9E37_79B9_7F4A_7C15_u64);
        self.0 = (p >> 64) as u64 ^ p as u64;
    }
}

struct P {
    ring: KeyRing<MemoryStore>,
    valid: Vec<String>,
    bad: Vec<String>,
    map: HashMap<u64, [u8; 32], BuildHasherDefault<IdHasher>>,
    key: [u8; 32],
    order: Vec<usize>,
    mask: usize,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
static LOCK: RwLock<u64> = RwLock::new(0);

fn floor_id(key: &[u8]) -> u64 {
    let start = PREFIX.len() + 2;
    u64::from_le_bytes(key[start..start + 8].try_into().unwrap())
}

#[inline]
fn s(p: &P, i: usize) -> &[u8] {
    p.valid[p.order[i & p.mask]].as_bytes()
}

#[inline]
fn find(p: &P, key: &[u8], mix: u64) -> bool {
    let start = PREFIX.len() + 2;
    let computed = blake3::keyed_hash(&p.key, &key[start..start + 35]);
    let Some(stored) = p.map.get(&(floor_id(key) ^ mix)) else {
        return false;
    };
    blake3::Hash::from(*stored) == computed
}

fn crc32(bytes: &[u8]) -> u32 {
    static FRESH: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut hasher = FRESH.get_or_init(crc32fast::Hasher::new).clone();
    hasher.update(bytes);
    hasher.finalize()
}

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

fn decode62(digits: &[u8]) -> Option<u64> {
    let (value, seen) = digits.iter().fold((0u64, 0u8), |(acc, seen), &b| {
        let d = DIGIT[usize::from(b)];
        (acc.wrapping_mul(62).wrapping_add(u64::from(d)), seen | d)
    });
    (seen < 64).then_some(value)
}

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

type Call = fn(&P, usize) -> bool;

const CALLS: &[(&str, Call)] = &[
    ("floor", |p, i| find(p, s(p, i), 0)),
    ("touch string", |p, i| {
        let k = s(p, i);
        (k[0] ^ k[k.len() - 1]) != 0
    }),
    ("touch bad string", |p, i| {
        let k = p.bad[p.order[i & p.mask]].as_bytes();
        (k[0] ^ k[k.len() - 1]) != 0
    }),
    ("crc32 of string", |p, i| {
        let k = s(p, i);
        crc32(&k[..k.len() - 6]) != 0
    }),
    ("parse_like", |p, i| parse_like(s(p, i)).is_some()),
    ("blake3 of string", |p, i| {
        let k = s(p, i);
        blake3::keyed_hash(&p.key, &k[7..42]).as_bytes()[0] != 0
    }),
    ("floor + parse_like", |p, i| {
        let k = s(p, i);
        let Some(d) = parse_like(k) else {
            return false;
        };
        find(p, k, d & black_box(0))
    }),
    ("floor + fetch_add", |p, i| {
        let f = find(p, s(p, i), 0);
        COUNTER.fetch_add(1, Ordering::Relaxed);
        f
    }),
    ("floor in RwLock read", |p, i| {
        let g = LOCK.read().unwrap();
        let f = find(p, s(p, i), *g);
        drop(g);
        f
    }),
    ("verify bad checksum", |p, i| {
        p.ring.verify(&p.bad[p.order[i & p.mask]]).is_err()
    }),
    ("verify valid", |p, i| {
        p.ring.verify(&p.valid[p.order[i & p.mask]]).is_ok()
    }),
];

#[inline]
fn next<const ONE: bool>(i: usize, found: bool) -> usize {
    if ONE {
        let next = i.wrapping_add(2 - usize::from(found));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: lfence needs only SSE2.
        unsafe {
            std::arch::x86_64::_mm_lfence();
        }
        next
    } else {
        i.wrapping_add(1)
    }
}

fn blocks<const ONE: bool>(p: &P, rounds: usize, calls: usize, chosen: &[usize]) -> Vec<[f64; 2]> {
    let mut rng = Rng(0x5EED ^ u64::from(ONE));
    let mut t = vec![vec![0f64; chosen.len()]; rounds];
    let mut order: Vec<usize> = (0..chosen.len()).collect();
    for times in &mut t {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next() as usize % (i + 1));
        }
        for &k in &order {
            let call = CALLS[chosen[k]].1;
            let run = |mut i: usize| {
                for _ in 0..calls {
                    let found = black_box(call(p, i));
                    i = next::<ONE>(i, found);
                }
            };
            run(rng.next() as usize);
            let started = Instant::now();
            run(rng.next() as usize);
            times[k] = started.elapsed().as_secs_f64() * 1e9 / calls as f64;
        }
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (0..chosen.len())
        .map(|k| {
            [
                med(t.iter().map(|r| r[k]).collect()),
                med(t.iter().map(|r| r[k] / r[0]).collect()),
            ]
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("PROBE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("PROBE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let chosen: Vec<usize> = std::env::var("PROBE_CALLS")
        .ok()
        .map(|v| v.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or_else(|| (0..CALLS.len()).collect());
    assert_eq!(chosen[0], 0, "the floor first");
    let ring = KeyRing::builder(PREFIX)
        .pepper([7; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let mut ids = std::collections::HashSet::new();
    let beside: Vec<String> = (0..n)
        .map(|i| {
            loop {
                let issued = ring
                    .issue(NewKey::new(format!("acct_{}", i % 50_000)))
                    .unwrap();
                let key = issued.secret.expose().to_owned();
                if ids.insert(floor_id(key.as_bytes())) {
                    break key;
                }
                ring.delete(issued.key.id()).unwrap();
            }
        })
        .collect();
    let valid: Vec<String> = beside.iter().map(|k| k.as_str().to_owned()).collect();
    drop(beside);
    let bad: Vec<String> = valid
        .iter()
        .map(|v| {
            let mut k = v.clone();
            let last = k.pop().unwrap();
            k.push(if last == 'A' { 'B' } else { 'A' });
            k
        })
        .collect();
    let key = [9u8; 32];
    let map = valid
        .iter()
        .map(|k| {
            let k = k.as_bytes();
            (floor_id(k), *blake3::keyed_hash(&key, &k[7..42]).as_bytes())
        })
        .collect();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let order: Vec<usize> = (0..n.max(1 << 16).next_power_of_two())
        .map(|_| (rng.next() % n as u64) as usize)
        .collect();
    let mask = order.len() - 1;
    let p = P {
        ring,
        valid,
        bad,
        map,
        key,
        order,
        mask,
    };
    for (k, (name, call)) in CALLS.iter().enumerate() {
        if chosen.contains(&k) {
            let want = !(name.starts_with("touch")
                || name.starts_with("crc")
                || name.starts_with("blake3"));
            if want {
                assert!((0..100).all(|i| call(&p, i)), "{name} failed");
            }
        }
    }
    let b2b = blocks::<false>(&p, rounds, 20_000, &chosen);
    let one = blocks::<true>(&p, rounds, 20_000, &chosen);
    println!("| call | b2b ns | b2b / floor | one ns | one / floor | one ns / b2b ns |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (k, &c) in chosen.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.2}x | {:.0} | {:.2}x | {:.2} |",
            CALLS[c].0,
            b2b[k][0],
            b2b[k][1],
            one[k][0],
            one[k][1],
            one[k][0] / b2b[k][0]
        );
    }
}
