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
    /// building an [`OffsetDateTime`].
    fn unix_nanos(&self) -> i128 {
        self.now().unix_timestamp_nanos()
    }
}

/// The operating system's wall clock.
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
