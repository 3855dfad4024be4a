//! `verify` on a clock with a trailing reading (`Clock::trailing_unix_nanos`,
//! as `SystemClock` has on Linux): expiry is judged from the trailing
//! reading alone only where the answer cannot depend on how far it trails,
//! and by the precise clock within a second of a deadline and for keys
//! with an idle timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    precise: Mutex<i64>,
    /// Nanoseconds since the Unix epoch.
    trailing: Mutex<i128>,
    precise_reads: AtomicUsize,
    /// Readings through `now` (an `OffsetDateTime`, the precise clock too).
    now_reads: AtomicUsize,
}

impl TwoReadings {
    /// Sets both readings, as offsets from `T0` in nanoseconds.
    fn set(&self, trailing: i64, precise: i64) {
        self.set_trailing_at(at(trailing));
        *self.0.precise.lock().unwrap() = precise;
    }

    /// Sets the trailing reading in nanoseconds since the Unix epoch.
    fn set_trailing_at(&self, nanos: i128) {
        *self.0.trailing.lock().unwrap() = nanos;
    }

    fn precise_reads(&self) -> usize {
        self.0.precise_reads.load(Ordering::SeqCst)
    }

    fn now_reads(&self) -> usize {
        self.0.now_reads.load(Ordering::SeqCst)
    }
}

fn at(offset: i64) -> i128 {
    T0.unix_timestamp_nanos() + i128::from(offset)
}

impl Clock for TwoReadings {
    fn now(&self) -> OffsetDateTime {
        self.0.now_reads.fetch_add(1, Ordering::SeqCst);
        T0 + Duration::nanoseconds(*self.0.precise.lock().unwrap())
    }

    fn unix_nanos(&self) -> i128 {
        self.0.precise_reads.fetch_add(1, Ordering::SeqCst);
        at(*self.0.precise.lock().unwrap())
    }

    fn trailing_unix_nanos(&self) -> Option<i128> {
        Some(*self.0.trailing.lock().unwrap())
    }
}

/// A ring on `clock` and one key of it that expires at `T0 + 1 hour`.
fn ring_with_key(clock: &TwoReadings) -> (KeyRing, String) {
    ring_with(
        clock,
        NewKey::new("acct_1").expiry(ExpiryPolicy::At(T0 + Duration::hours(1))),
    )
}

/// A ring on `clock` and the key `new` issued on it at `T0`.
fn ring_with(clock: &TwoReadings, new: NewKey) -> (KeyRing, String) {
    clock.set(0, 0);
    let ring = KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = ring.issue(new).unwrap();
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
fn an_idle_timeout_is_judged_by_the_precise_clock() {
    // A use renews an idle key: a trailing reading that lags by over a
    // second must not let one through after its idle end, or the use it
    // stamps would extend the key by a whole period.
    let clock = TwoReadings::default();
    let (ring, key) = ring_with(
        &clock,
        NewKey::new("acct_1").expiry(ExpiryPolicy::Idle(Duration::minutes(10))),
    );
    let idle_end = 600 * SECOND;
    assert_refused_on_a_stalled_reading(&ring, &clock, &key, idle_end);
    let (outcome, _) = verify_at(
        &ring,
        &clock,
        &key,
        idle_end + 300 * SECOND,
        idle_end + 300 * SECOND,
    );
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    // Before its idle end it verifies, on the precise clock's word.
    let (outcome, reads) = verify_at(&ring, &clock, &key, idle_end - 2 * SECOND, idle_end - 1);
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(reads, 1);
    // A reading that has passed the idle end needs no precise read.
    let (outcome, reads) = verify_at(&ring, &clock, &key, 2 * idle_end, 2 * idle_end);
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    assert_eq!(reads, 0);
}

#[test]
fn a_ring_default_idle_timeout_is_judged_by_the_precise_clock() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with(&clock, NewKey::new("acct_1"));
    ring.set_default_expiry(ExpiryPolicy::Idle(Duration::minutes(10)))
        .unwrap();
    assert_refused_on_a_stalled_reading(&ring, &clock, &key, 600 * SECOND);
}

/// Asserts that `key`, whose idle end is `idle_end`, is refused on the
/// precise clock's word when the trailing reading, two seconds short of
/// the idle end, lags the precise one by half a minute.
fn assert_refused_on_a_stalled_reading(
    ring: &KeyRing,
    clock: &TwoReadings,
    key: &str,
    idle_end: i64,
) {
    let (outcome, reads) = verify_at(
        ring,
        clock,
        key,
        idle_end - 2 * SECOND,
        idle_end + 30 * SECOND,
    );
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    assert_eq!(reads, 1);
}

#[test]
fn a_trailing_reading_beyond_the_range_of_record_times_is_clamped() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with_key(&clock);
    // The clock says the far future: past any deadline.
    clock.set_trailing_at(i128::MAX);
    let before = clock.precise_reads();
    let outcome = ring.verify(&key);
    assert!(matches!(outcome, Err(VerifyError::Expired)), "{outcome:?}");
    assert_eq!(clock.precise_reads(), before);
    // A key that never expires still verifies; at the end of the range of
    // record times the precise clock is asked.
    let (ring, key) = ring_with(&clock, NewKey::new("acct_2").expiry(ExpiryPolicy::Never));
    clock.set_trailing_at(i128::MAX);
    let before = clock.precise_reads();
    let outcome = ring.verify(&key);
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(clock.precise_reads() - before, 1);
}

#[test]
fn a_limited_key_is_stamped_from_the_trailing_reading_too() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with(&clock, NewKey::new("acct_1").use_limit(5));
    let record = used_across_a_second(&ring, &clock, &key);
    assert_eq!(record.uses(), 1);
    assert_eq!(record.last_used_at(), Some(T0 + Duration::seconds(9)));
}

#[test]
fn the_last_use_is_stamped_from_the_trailing_reading() {
    let clock = TwoReadings::default();
    let (ring, key) = ring_with_key(&clock);
    let record = used_across_a_second(&ring, &clock, &key);
    assert_eq!(record.last_used_at(), Some(T0 + Duration::seconds(9)));
}

/// Verifies `key` when the precise clock has moved into `T0`'s tenth
/// second and the trailing one has not, and returns its record after.
fn used_across_a_second(ring: &KeyRing, clock: &TwoReadings, key: &str) -> Key {
    let (outcome, _) = verify_at(ring, clock, key, 10 * SECOND - 1, 10 * SECOND + 3_000_000);
    let verified = outcome.unwrap();
    ring.get(verified.id()).unwrap()
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
    // A key with an idle timeout too: one precise reading, not a second.
    let idle = ring
        .issue(NewKey::new("acct_2").expiry(ExpiryPolicy::Idle(Duration::minutes(10))))
        .unwrap();
    let (outcome, reads) = verify_at(&ring, &clock, idle.secret.expose(), 0, 600 * SECOND - 1);
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(reads, 1);
}

/// A ring with an event sink that does not report successes takes no
/// precise reading for a success either: nothing is reported, so there is
/// no event to date. (`report` read `Clock::now`, the precise clock as an
/// `OffsetDateTime`, before it knew whether it would send anything: on
/// `SystemClock`, the ordered read that the trailing reading exists to
/// skip, on every successful verify of a ring with an audit sink.)
#[test]
fn a_success_nobody_reports_takes_no_precise_reading_on_a_ring_with_a_sink() {
    let clock = TwoReadings::default();
    clock.set(0, 0);
    let log = Arc::new(EventLog::new());
    let ring = KeyRing::builder("acme")
        .clock(clock.clone())
        .events(Arc::clone(&log))
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = ring
        .issue(NewKey::new("acct_1").expiry(ExpiryPolicy::At(T0 + Duration::hours(1))))
        .unwrap();
    let key = issued.secret.expose();
    let (precise, now) = (clock.precise_reads(), clock.now_reads());
    for _ in 0..10 {
        ring.verify(key).unwrap();
    }
    assert_eq!(
        (clock.precise_reads() - precise, clock.now_reads() - now),
        (0, 0),
        "precise readings (unix_nanos, now) in 10 unreported successes"
    );
    // A refusal is reported, dated by the precise clock.
    let events = log.events().len();
    let mut wrong = key.to_owned();
    wrong.pop();
    assert!(ring.verify(&wrong).is_err());
    assert_eq!(log.events().len(), events + 1);
    assert!(clock.now_reads() > now);
}
