//! Timing leaks, tested statistically: `cargo bench --bench timing`.
//!
//! Each test times calls of two classes of input, drawn at random and
//! interleaved one by one (so drift of the machine falls on both alike),
//! and compares the two distributions with Welch's t-test, as dudect
//! (Reparaz, Balasch and Verbauwhede, "Dude, is my code constant time?",
//! 2017) does: |t| under 4.5 finds no difference; over 10, the classes
//! differ beyond doubt. A test run with two classes that really differ (a
//! valid key against a wrong secret) shows the tool can see a difference.
//!
//! Sizes come from `KEYWARD_TIMING_SIZES` (default 1000,1000000) and the
//! samples per test from `KEYWARD_TIMING_SAMPLES` (default 2,000,000).
//! Timing, not a pass/fail test: the figures go into BENCHMARKS.md.

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{ALPHABET, PREFIX, Rng, base62};
use keyward::{KeyHash, KeyRing, MemoryStore, NewKey, ScopeSet};

/// `text` followed by its checksum, as keys and tokens end: the CRC32 of
/// everything before it, in six base62 characters.
fn with_checksum(text: &str) -> String {
    let sum = base62(u64::from(crc32fast::hash(text.as_bytes())), 6);
    format!("{text}{sum}")
}

/// `s` with the character at `at` replaced by another base62 character.
fn changed_at(s: &str, at: usize) -> String {
    let mut bytes = s.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ASCII")
}

/// Welch's t statistic of two samples, and the difference of their means.
fn welch_t(a: &[f64], b: &[f64]) -> (f64, f64) {
    let stats = |x: &[f64]| {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (n, mean, var)
    };
    let ((na, ma, va), (nb, mb, vb)) = (stats(a), stats(b));
    ((ma - mb) / (va / na + vb / nb).sqrt(), ma - mb)
}

fn median(x: &mut [f64]) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

/// What one test measured.
struct Outcome {
    t: f64,
    medians: [f64; 2],
    /// Mean of class 0 minus mean of class 1, in ns.
    difference: f64,
}

/// Times `call` on inputs of class 0 and 1, interleaved at random, and
/// compares them. `prepare` writes the input of a class into the one buffer
/// every call reads, outside the timed part, so both classes are read from
/// the same memory (where separate strings sit could itself tell them
/// apart). Samples above the pooled 90th percentile (interrupts,
/// migrations) are left out of the t-test, as dudect crops them.
fn compare(
    samples: usize,
    rng: &mut Rng,
    mut prepare: impl FnMut(usize, u64, &mut String),
    mut call: impl FnMut(&str),
) -> Outcome {
    let mut input = String::with_capacity(256);
    let mut timed: Vec<(usize, f64)> = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let draw = rng.next();
        let class = (draw >> 63) as usize;
        input.clear();
        prepare(class, draw, &mut input);
        let start = Instant::now();
        call(black_box(&input));
        let ns = start.elapsed().as_nanos() as f64;
        // The first tenth warms up.
        if i >= samples / 10 {
            timed.push((class, ns));
        }
    }
    let mut pooled: Vec<f64> = timed.iter().map(|&(_, ns)| ns).collect();
    pooled.sort_by(f64::total_cmp);
    let cut = pooled[pooled.len() * 9 / 10];
    let class = |c: usize| -> Vec<f64> {
        timed
            .iter()
            .filter(|&&(k, ns)| k == c && ns <= cut)
            .map(|&(_, ns)| ns)
            .collect()
    };
    let (mut a, mut b) = (class(0), class(1));
    let (t, difference) = welch_t(&a, &b);
    Outcome {
        t,
        medians: [median(&mut a), median(&mut b)],
        difference,
    }
}

fn verdict(t: f64) -> &'static str {
    match t.abs() {
        x if x < 4.5 => "no difference found",
        x if x < 10.0 => "possible difference",
        _ => "differ",
    }
}

fn report(size: &str, name: &str, classes: [&str; 2], o: &Outcome) {
    println!(
        "| {size} | {name} | {} / {} | {:.0} / {:.0} | {:+.2} | {:+.1} | {} |",
        classes[0],
        classes[1],
        o.medians[0],
        o.medians[1],
        o.difference,
        o.t,
        verdict(o.t)
    );
}

/// A test on a ring: its name, its two classes, and their strings.
type Test<'a> = (&'static str, [&'static str; 2], [&'a [String]; 2]);

/// The keys of a ring and strings made from them.
struct Set {
    ring: KeyRing<MemoryStore>,
    valid: Vec<String>,
    /// A stored id with another key's secret.
    wrong_secret: Vec<String>,
    /// An id no key has, with a key's secret.
    unknown_id: Vec<String>,
    /// A key with the first character of its secret changed.
    first_wrong: Vec<String>,
    /// A key with the last character of its secret changed.
    last_wrong: Vec<String>,
}

fn build(n: usize) -> Set {
    let ring = KeyRing::builder(PREFIX)
        .pepper([7; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("ring");
    let scopes = ScopeSet::parse(["invoices:read"]).expect("scopes");
    let valid: Vec<String> = (0..n)
        .map(|i| {
            let issued = ring
                .issue(NewKey::new(format!("acct_{}", i % 50_000)).scopes(scopes.clone()))
                .expect("issue");
            issued.secret.expose().to_owned()
        })
        .collect();
    // `<prefix>_1` + id (11) + secret (24) + checksum (6).
    let body = PREFIX.len() + 2;
    let unchecked = |k: &str| k[..k.len() - 6].to_owned();
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let wrong_secret = (0..n)
        .map(|i| {
            let other = &valid[(i + 1) % n];
            with_checksum(&format!(
                "{}{}",
                &valid[i][..body + 11],
                &other[body + 11..body + 35]
            ))
        })
        .collect();
    let unknown_id = (0..n)
        .map(|i| {
            with_checksum(&format!(
                "{PREFIX}_1{}{}",
                base62(rng.next(), 11),
                &valid[i][body + 11..body + 35]
            ))
        })
        .collect();
    let first_wrong = valid
        .iter()
        .map(|k| with_checksum(&changed_at(&unchecked(k), body + 11)))
        .collect();
    let last_wrong = valid
        .iter()
        .map(|k| with_checksum(&changed_at(&unchecked(k), body + 34)))
        .collect();
    // Each key's string was allocated while issuing, beside its record: a
    // `prepare` that copies it would bring the record's memory (its page,
    // a neighbouring line) into cache before the timed call, and a valid
    // key read one memory latency faster than a wrong secret on the same
    // record (-123 ns at a million keys; +14 ns with the copies). Copied
    // here, after every record, like the other classes' strings.
    let valid = valid.iter().map(|k| k.as_str().to_owned()).collect();
    Set {
        ring,
        valid,
        wrong_secret,
        unknown_id,
        first_wrong,
        last_wrong,
    }
}

/// Checks that each class gets the answer the test assumes, so a mistake
/// in making the inputs cannot pass for a timing result.
fn check_classes(set: &Set) {
    let all = |keys: &[String], ok: bool| {
        keys.iter()
            .take(100)
            .all(|k| set.ring.verify(k).is_ok() == ok)
    };
    assert!(all(&set.valid, true), "valid keys must verify");
    for (name, keys) in [
        ("wrong secret", &set.wrong_secret),
        ("unknown id", &set.unknown_id),
        ("first character wrong", &set.first_wrong),
        ("last character wrong", &set.last_wrong),
    ] {
        for k in keys.iter().take(100) {
            assert!(
                matches!(set.ring.verify(k), Err(keyward::VerifyError::Invalid)),
                "{name}: must be refused as invalid, not malformed"
            );
        }
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("KEYWARD_TIMING_SIZES")
        .unwrap_or_else(|_| "1000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("KEYWARD_TIMING_SIZES: numbers"))
        .collect();
    let samples: usize = std::env::var("KEYWARD_TIMING_SAMPLES")
        .map(|s| s.parse().expect("KEYWARD_TIMING_SAMPLES: a number"))
        .unwrap_or(2_000_000);
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the
    // binary with no arguments and only builds it here.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    println!("Welch's t over {samples} interleaved samples per test (medians in ns)\n");
    println!("| keys | test | classes | medians | mean difference | t | verdict |");
    println!("|---:|---|---|---|---:|---:|---|");
    for &n in &sizes {
        let set = build(n);
        check_classes(&set);
        let size = n.to_string();
        // Each class's string for a draw: the same key index for both.
        let tests: [Test; 3] = [
            (
                "which ids exist",
                ["wrong secret", "unknown id"],
                [&set.wrong_secret, &set.unknown_id],
            ),
            (
                "how much of a secret matched",
                ["first character wrong", "last character wrong"],
                [&set.first_wrong, &set.last_wrong],
            ),
            (
                "control: the tool sees a difference",
                ["valid", "wrong secret"],
                [&set.valid, &set.wrong_secret],
            ),
        ];
        for (name, classes, keys) in tests {
            let o = compare(
                samples,
                &mut rng,
                |class, draw, input| input.push_str(&keys[class][(draw as usize >> 1) % n]),
                |presented| {
                    black_box(set.ring.verify(presented).is_ok());
                },
            );
            report(&size, name, classes, &o);
        }
    }
    // An access token's MAC, wrong in its first or its last character (the
    // checksum made right again, so both reach the MAC compare).
    let ring = KeyRing::builder(PREFIX)
        .signing_key(1, [5; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("ring");
    let issued = ring
        .issue(NewKey::new("acct").scopes(ScopeSet::parse(["invoices:read"]).expect("scopes")))
        .expect("issue");
    let token = ring
        .exchange(issued.secret.expose(), keyward::time::Duration::hours(1))
        .expect("token");
    let unchecked = &token.expose()[..token.expose().len() - 6];
    let mac_at = unchecked.len() - 22;
    let mac_wrong = |at: usize| {
        let mut bytes = unchecked.as_bytes().to_vec();
        // One digit moved by one (0 and 1 up, the rest down): the value stays
        // under 2^128, as any MAC's, and a zero digit appears or goes only
        // where the MAC had a 0, so both classes present digits alike.
        let digit = ALPHABET
            .iter()
            .position(|&c| c == bytes[at])
            .expect("base62");
        let moved = match digit {
            0 => 1,
            1 => 2,
            d => d - 1,
        };
        bytes[at] = ALPHABET[moved];
        with_checksum(&String::from_utf8(bytes).expect("ASCII"))
    };
    // The third digit, not the first: the MAC's 22 digits decode as 2 + 10
    // + 10, and the first two decide whether the upper part fits 64 bits,
    // which takes the 128-bit multiply another way (a time that follows
    // the presented digits, not the MAC they are compared with). A change
    // of the third digit (62^19, about 2^113) still changes the MAC's
    // first byte or two; the last digit changes its last.
    let wrong = [mac_wrong(mac_at + 2), mac_wrong(mac_at + 21)];
    for presented in &wrong {
        assert!(
            matches!(
                ring.verify_access_token(presented),
                Err(keyward::VerifyError::Invalid)
            ),
            "a token with a wrong MAC must be refused as invalid"
        );
    }
    let o = compare(
        samples,
        &mut rng,
        |class, _, input| input.push_str(&wrong[class]),
        |presented| {
            black_box(ring.verify_access_token(presented).is_ok());
        },
    );
    report(
        "-",
        "how much of a token's MAC matched",
        ["third character wrong", "last character wrong"],
        &o,
    );

    // The digest compare alone, in cache: a stored digest against an
    // equal one, or one that differs in the first or the last byte. The
    // presented digest is copied into one slot before each timed call, so
    // both classes read the same memory.
    let digest = |first: u8, last: u8| -> KeyHash {
        let hex = format!("{first:02x}{}{last:02x}", "ab".repeat(30));
        format!("$kw-b3k$v=1${hex}").parse().expect("a stored hash")
    };
    let stored = digest(0, 0);
    for (name, other) in [("first byte", digest(1, 0)), ("last byte", digest(0, 1))] {
        let classes = [digest(0, 0), other];
        let slot = std::cell::RefCell::new(digest(0, 0));
        let o = compare(
            samples,
            &mut rng,
            |class, _, _| *slot.borrow_mut() = classes[class].clone(),
            |_| {
                let presented = slot.borrow();
                for _ in 0..16 {
                    black_box(black_box(&stored) == black_box(&*presented));
                }
            },
        );
        report(
            "-",
            "`KeyHash` ==, 16 compares",
            ["equal", &format!("differ in the {name}")],
            &o,
        );
    }
}
