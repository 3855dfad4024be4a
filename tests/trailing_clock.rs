//! `verify` on a clock with a trailing reading (`Clock::trailing_unix_nanos`,
//! as `SystemClock` has on Linux): expiry is judged from the trailing
//! reading alone only where the answer cannot depend on how far it trails,
//! and by the precise clock within a second of a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use keyward::time::macros::datetime;
use keyward::time::{Duration, OffsetDateTime};
use keyward::*;

const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);
const SECOND: i64 = 1_000_000_000;

/// A clock whose precise and trailing readings the test sets apart, and
/// which counts its precise readings.
#[derive(Debug, Clone, Default)]
struct TwoReadings(Arc<Readings>);

#[derive(Debug, Default)]
struct Readings {
    /// Nanoseconds after `T0`.
    precise: AtomicI64,
    /// Nanoseconds after `T0`.
    trailing: AtomicI64,
    precise_reads: AtomicUsize,
}

impl TwoReadings {
    /// Sets both readings, as offsets from `T0` in nanoseconds.
    fn set(&self, trailing: i64, precise: i64) {
        self.0.trailing.store(trailing, Ordering::SeqCst);
        self.0.precise.store(precise, Ordering::SeqCst);
    }

    fn precise_reads(&self) -> usize {
        self.0.precise_reads.load(Ordering::SeqCst)
    }
}

fn at(offset: i64) -> i128 {
    T0.unix_timestamp_nanos() + i128::from(offset)
}

impl Clock for TwoReadings {
    fn now(&self) -> OffsetDateTime {
        T0 + Duration::nanoseconds(self.0.precise.load(Ordering::SeqCst))
    }

    fn unix_nanos(&self) -> i128 {
        self.0.precise_reads.fetch_add(1, Ordering::SeqCst);
        at(self.0.precise.load(Ordering::SeqCst))
    }

    fn trailing_unix_nanos(&self) -> Option<i128> {
        Some(at(self.0.trailing.load(Ordering::SeqCst)))
    }
}

/// A ring on `clock` and one key of it that expires at `T0 + 1 hour`.
fn ring_with_key(clock: &TwoReadings) -> (KeyRing, String) {
    let ring = KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = ring
        .issue(NewKey::new("acct_1").expiry(ExpiryPolicy::At(T0 + Duration::hours(1))))
        .unwrap();
    (ring, issued.secret.expose().to_owned())
}

const DEADLINE: i64 = 3600 * SECOND;

/// Verifies `key` with the clock's readings set, and returns the outcome
/// with the number of precise readings the verify took.
fn verify_at(
    ring: &KeyRing,
    clock: &TwoReadings,
    key: &str,
    trailing: i64,
    precise: i64,
) -> (Result<Verified, VerifyError>, usize) {
    clock.set(trailing, precise);
    let before = clock.precise_reads();
    let outcome = ring.verify(key);
    (outcome, clock.precise_reads() - before)
}

#[test]
fn a_deadline_far_past_the_trailing_reading_is_judged_without_a_precise_read() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with_key(&clock);
    let (outcome, reads) = verify_at(&ring, &clock, &key, 0, 5_000_000);
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(reads, 0);
}

#[test]
fn a_deadline_the_trailing_reading_has_reached_is_expired_without_a_precise_read() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with_key(&clock);
    let (outcome, reads) = verify_at(&ring, &clock, &key, DEADLINE, DEADLINE + 5_000_000);
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    assert_eq!(reads, 0);
}

#[test]
fn within_a_second_of_the_deadline_the_precise_clock_decides() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with_key(&clock);
    // The trailing reading is half a second short of the deadline.
    let trailing = DEADLINE - SECOND / 2;
    let (outcome, reads) = verify_at(&ring, &clock, &key, trailing, DEADLINE - 1);
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(reads, 1);
    let (outcome, reads) = verify_at(&ring, &clock, &key, trailing, DEADLINE);
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    assert_eq!(reads, 1);
}

#[test]
fn the_precise_clock_is_read_up_to_exactly_one_second_before_the_deadline() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with_key(&clock);
    // One second short: the precise clock decides, and it says expired.
    let (outcome, reads) = verify_at(&ring, &clock, &key, DEADLINE - SECOND, DEADLINE);
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    assert_eq!(reads, 1);
    // A nanosecond more: the trailing reading alone decides. This is the
    // documented limit: a trailing reading that lags by over a second (a
    // stalled kernel tick) lets a key through past its deadline.
    let (outcome, reads) = verify_at(&ring, &clock, &key, DEADLINE - SECOND - 1, DEADLINE);
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(reads, 0);
}

#[test]
fn an_idle_timeout_is_judged_the_same_way() {
    let clock = TwoReadings::default();
    let ring = KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = ring
        .issue(NewKey::new("acct_1").expiry(ExpiryPolicy::Idle(Duration::minutes(10))))
        .unwrap();
    let key = issued.secret.expose().to_owned();
    let idle_end = 600 * SECOND;
    let (outcome, reads) = verify_at(&ring, &clock, &key, idle_end - 2 * SECOND, idle_end);
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(reads, 0);
    // That use moved the idle deadline to ten minutes after its second.
    let idle_end = idle_end - 2 * SECOND + 600 * SECOND;
    let (outcome, reads) = verify_at(&ring, &clock, &key, idle_end - 1, idle_end);
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    assert_eq!(reads, 1);
}

#[test]
fn the_last_use_is_stamped_from_the_trailing_reading() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with_key(&clock);
    // The precise clock has moved into the next second; the trailing one
    // has not.
    let (outcome, _) = verify_at(
        &ring,
        &clock,
        &key,
        10 * SECOND - 1,
        10 * SECOND + 3_000_000,
    );
    let verified = outcome.unwrap();
    let record = ring.get(verified.id()).unwrap();
    assert_eq!(record.last_used_at(), Some(T0 + Duration::seconds(9)));
}

#[test]
fn a_ring_on_a_clock_without_a_trailing_reading_reads_the_precise_one_every_time() {
    /// Forwards only the precise reading.
    #[derive(Debug)]
    struct PreciseOnly(TwoReadings);
    impl Clock for PreciseOnly {
        fn now(&self) -> OffsetDateTime {
            self.0.now()
        }
        fn unix_nanos(&self) -> i128 {
            self.0.unix_nanos()
        }
    }
    let clock = TwoReadings::default();
    let ring = KeyRing::builder("acme")
        .clock(PreciseOnly(clock.clone()))
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = ring
        .issue(NewKey::new("acct_1").expiry(ExpiryPolicy::At(T0 + Duration::hours(1))))
        .unwrap();
    let key = issued.secret.expose();
    // The trailing reading, were it read, would say expired.
    let (outcome, reads) = verify_at(&ring, &clock, key, DEADLINE, 0);
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(reads, 1);
    let (outcome, reads) = verify_at(&ring, &clock, key, 0, DEADLINE);
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    assert_eq!(reads, 1);
}
