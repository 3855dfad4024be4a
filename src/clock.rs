//! Injectable time. The ring reads time only through [`Clock`], so tests
//! (ours and the host's) drive expiry with a [`ManualClock`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use time::{Duration, OffsetDateTime};

/// A source of the current time (UTC).
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current instant.
    fn now(&self) -> OffsetDateTime;

    /// The current instant as nanoseconds since the Unix epoch, the form
    /// `verify` compares with. Override it when there is a cheaper way than
    /// building an [`OffsetDateTime`]. `verify` may call it while it holds
    /// a store's read lock, so it must not block for long or call back into
    /// the ring.
    fn unix_nanos(&self) -> i128 {
        self.now().unix_timestamp_nanos()
    }

    /// A cheaper reading of the same clock, for `verify`, that may trail
    /// [`unix_nanos`](Self::unix_nanos) but never runs ahead of it, and in
    /// normal operation trails it by far less than a second (e.g. the time
    /// at the kernel's last tick). `None`, the default: there is no such
    /// reading, and `verify` reads `unix_nanos` every time.
    ///
    /// `verify` judges expiry from this reading alone only when the answer
    /// cannot depend on the trail: a key whose deadline the reading has
    /// passed is expired, and a key whose deadline is more than one second
    /// after the reading is not. For a key in between, and for every key
    /// with an idle timeout (a use extends it, so a wrong yes would last a
    /// whole period), `verify` reads `unix_nanos`. The answer is the
    /// precise clock's as long as the trail stays under a second. A key's
    /// last use, kept to the second, is stamped from this reading, so a use
    /// in the first tick of a second can be recorded in the second before,
    /// and an idle timeout can end up to a second and that trail earlier
    /// than the use's own second would give.
    fn trailing_unix_nanos(&self) -> Option<i128> {
        None
    }
}

/// A clock shared with other code: a ring built with `Arc::clone(&clock)`
/// reads the host's clock, all three readings forwarded (a host's cheaper
/// [`trailing_unix_nanos`](Clock::trailing_unix_nanos) included).
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> OffsetDateTime {
        (**self).now()
    }

    fn unix_nanos(&self) -> i128 {
        (**self).unix_nanos()
    }

    fn trailing_unix_nanos(&self) -> Option<i128> {
        (**self).trailing_unix_nanos()
    }
}

/// The operating system's wall clock.
///
/// On Linux, with the `coarse-clock` feature (on by default), `verify`
/// reads it through [`trailing_unix_nanos`](Clock::trailing_unix_nanos):
/// `CLOCK_REALTIME_COARSE`, the wall time at the kernel's last tick (1–10
/// ms ago), without the ordered read of the CPU's time stamp counter that a
/// precise reading needs. That ordered read makes the CPU finish everything
/// before it; on the bench machine, skipping it made valid verify about
/// 0.04x of the floor faster back to back at a million keys, and 0.02x
/// one at a time (see BENCHMARKS.md). `verify`
/// still reads the precise time for a key within a second of its deadline
/// and for a key with an idle timeout, so its answers are the precise
/// clock's unless the kernel's timekeeping has stalled for over a second:
/// in the first tick after a virtual machine resumes from a longer pause,
/// a key whose fixed deadline passed during the pause can still be
/// accepted, until the next tick. Apart from the last-use stamp (see
/// [`trailing_unix_nanos`](Clock::trailing_unix_nanos)), everything else
/// (issue times, events, [`now`](Clock::now), [`unix_nanos`](Clock::unix_nanos))
/// reads the precise clock. Elsewhere than Linux, or without the feature,
/// `verify` reads the precise clock every time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn unix_nanos(&self) -> i128 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => since.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        }
    }

    #[cfg(all(feature = "coarse-clock", target_os = "linux"))]
    fn trailing_unix_nanos(&self) -> Option<i128> {
        Some(coarse_unix_nanos())
    }
}

/// `CLOCK_REALTIME_COARSE` in nanoseconds since the Unix epoch.
#[cfg(all(feature = "coarse-clock", target_os = "linux"))]
fn coarse_unix_nanos() -> i128 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
}

/// The operating system's wall clock read at the kernel's tick resolution,
/// for every reading: cheaper per read than [`SystemClock`]'s precise
/// readings, for hosts that want no precise reading at all. `verify` on a
/// [`SystemClock`] is as fast for most keys, since it reads the same coarse
/// time and reads the precise time only near a key's deadline and for keys
/// with an idle timeout (the bench reads the two alike at a million keys);
/// prefer that unless you have measured a need.
///
/// On Linux it reads `CLOCK_REALTIME_COARSE` from the vDSO: the wall time
/// at the kernel's last timekeeping tick, with no ordered read of the
/// CPU's time stamp counter. That ordered read makes the CPU finish
/// everything before it, and on the bench machine it cost valid verify
/// about 0.05x of the floor back to back at a million keys (see
/// BENCHMARKS.md). A tick is 1–10 ms depending on the kernel's `HZ`
/// (`clock_getres(CLOCK_REALTIME_COARSE)` reports it); when the tick is
/// delayed (e.g. a descheduled virtual CPU) the reading can lag by several
/// ticks. It never runs ahead of [`SystemClock`].
///
/// The price, compared with [`SystemClock`]:
/// - a key can be accepted up to that lag after its deadline, and a key
///   with an idle timeout that is accepted so is extended by a whole
///   period from that use;
/// - deadlines measured from a coarse reading (a lifetime from creation,
///   a rotation's grace, an idle timeout from the last use, which is kept
///   to the second) can fall up to that lag earlier, and an idle timeout up
///   to a second earlier;
/// - rings sharing one store should use the same clock, or they differ by
///   up to that lag, as hosts with skewed clocks do.
///
/// Elsewhere than Linux it is [`SystemClock`]. It needs the `coarse-clock`
/// feature (on by default), which brings in `rustix`.
///
/// ```
/// use keyward::{CoarseClock, KeyRing, MemoryStore, NewKey};
///
/// let ring = KeyRing::builder("acme")
///     .clock(CoarseClock)
///     .build(MemoryStore::new())?;
/// let issued = ring.issue(NewKey::new("acct_1"))?;
/// assert!(ring.verify(issued.secret.expose()).is_ok());
/// # Ok::<(), keyward::Error>(())
/// ```
#[cfg(feature = "coarse-clock")]
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

#[cfg(feature = "coarse-clock")]
impl Clock for CoarseClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(self.unix_nanos())
            .unwrap_or_else(|_| SystemClock.now())
    }

    #[cfg(target_os = "linux")]
    fn unix_nanos(&self) -> i128 {
        coarse_unix_nanos()
    }

    #[cfg(not(target_os = "linux"))]
    fn unix_nanos(&self) -> i128 {
        SystemClock.unix_nanos()
    }
}

/// A clock that moves only when told to. Clones share one time, so a test
/// keeps a clone and advances the clock the ring reads.
///
/// ```
/// use keyward::{Clock, ManualClock};
/// use time::{Duration, macros::datetime};
///
/// let clock = ManualClock::new(datetime!(2026-03-31 23:59:59 UTC));
/// let ring_view = clock.clone();
/// clock.advance(Duration::seconds(1));
/// assert_eq!(ring_view.now(), datetime!(2026-04-01 0:00 UTC));
/// ```
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: OffsetDateTime) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock to `to` (backwards too).
    pub fn set(&self, to: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = to;
    }

    /// Moves the clock by `by` (negative goes back). Saturates at the limits
    /// of [`OffsetDateTime`].
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ManualClock").field(&self.now()).finish()
    }
}

#[cfg(test)]
mod system_tests {
    use super::*;

    #[test]
    #[cfg(all(feature = "coarse-clock", target_os = "linux"))]
    fn the_system_clocks_trailing_reading_is_the_coarse_clock() {
        // Between two coarse readings, as a precise one (ahead of the
        // coarse clock by up to a tick) would not be; how the coarse clock
        // trails the precise one is `CoarseClock`'s test below.
        for _ in 0..1_000 {
            let before = CoarseClock.unix_nanos();
            let trailing = SystemClock.trailing_unix_nanos().expect("coarse on Linux");
            let after = CoarseClock.unix_nanos();
            assert!(
                before <= trailing && trailing <= after,
                "{before} <= {trailing} <= {after}"
            );
        }
    }

    #[test]
    #[cfg(not(all(feature = "coarse-clock", target_os = "linux")))]
    fn without_the_coarse_clock_the_system_clock_has_no_trailing_reading() {
        assert_eq!(SystemClock.trailing_unix_nanos(), None);
    }

    #[test]
    fn a_manual_clock_is_set_both_ways_and_shows_its_time_in_debug() {
        let start = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let clock = ManualClock::new(start);
        let ring_view = clock.clone();
        clock.set(start + Duration::hours(1));
        assert_eq!(ring_view.now(), start + Duration::hours(1));
        clock.set(start - Duration::hours(1));
        assert_eq!(
            ring_view.unix_nanos(),
            (start - Duration::hours(1)).unix_timestamp_nanos()
        );
        // A test's failure message names the time the ring was reading.
        assert_eq!(
            format!("{ring_view:?}"),
            "ManualClock(2024-10-03 23:00:00.0 +00:00:00)"
        );
    }

    #[test]
    fn other_clocks_have_no_trailing_reading_unless_they_say_so() {
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(clock.trailing_unix_nanos(), None);
    }
}

#[cfg(all(test, feature = "coarse-clock"))]
mod tests {
    use super::*;

    /// A host clock with its own answer to each of the three readings, so
    /// a forward that fell back on a default (`unix_nanos` from `now`, or
    /// no trailing reading) shows.
    #[derive(Debug)]
    struct ThreeAnswers;

    impl Clock for ThreeAnswers {
        fn now(&self) -> OffsetDateTime {
            OffsetDateTime::UNIX_EPOCH + Duration::seconds(7)
        }
        fn unix_nanos(&self) -> i128 {
            11
        }
        fn trailing_unix_nanos(&self) -> Option<i128> {
            Some(5)
        }
    }

    #[test]
    fn a_shared_clock_forwards_each_reading() {
        let shared: Arc<dyn Clock> = Arc::new(ThreeAnswers);
        let by_arc = Arc::clone(&shared);
        assert_eq!(
            by_arc.now(),
            OffsetDateTime::UNIX_EPOCH + Duration::seconds(7)
        );
        assert_eq!(by_arc.unix_nanos(), 11);
        assert_eq!(by_arc.trailing_unix_nanos(), Some(5));
        // A sized one too, as `KeyRingBuilder::clock` takes it.
        let manual = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
        let ring_side = Arc::clone(&manual);
        manual.advance(Duration::seconds(3));
        assert_eq!(ring_side.unix_nanos(), 3_000_000_000);
    }

    #[test]
    fn the_coarse_clock_trails_the_system_clock_by_less_than_a_second() {
        // Read coarse, then precise: the coarse time is the wall time at the
        // last tick, so it is not after the precise time read later (unless
        // the clock is stepped between the two reads), and not far behind
        // it (a tick is at most 10 ms; a second allows for the test thread
        // being descheduled between the two reads).
        for _ in 0..1_000 {
            let coarse = CoarseClock.unix_nanos();
            let precise = SystemClock.unix_nanos();
            assert!(coarse <= precise, "coarse {coarse} after precise {precise}");
            assert!(
                precise - coarse < 1_000_000_000,
                "coarse {coarse}, precise {precise}"
            );
        }
    }

    #[test]
    fn the_coarse_clock_moves_forward_and_now_agrees_with_unix_nanos() {
        let before = CoarseClock.unix_nanos();
        let now = CoarseClock.now().unix_timestamp_nanos();
        let after = CoarseClock.unix_nanos();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
        // It moves on within a few ticks.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while CoarseClock.unix_nanos() <= after {
            assert!(
                std::time::Instant::now() < deadline,
                "the coarse clock never moved on"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(CoarseClock.unix_nanos() > after);
    }

    #[test]
    fn the_coarse_clock_never_goes_back_from_one_tick_to_the_next() {
        // Over 30 ms, several ticks at any `HZ`: each reading is at or
        // after the one before (unless the clock is stepped meanwhile), the
        // nanoseconds within a second included.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(30);
        let mut last = CoarseClock.unix_nanos();
        let mut ticks = 0;
        while std::time::Instant::now() < deadline {
            let now = CoarseClock.unix_nanos();
            assert!(now >= last, "went back from {last} to {now}");
            ticks += usize::from(now > last);
            last = now;
        }
        assert!(ticks > 0, "no tick in 30 ms");
    }
}
