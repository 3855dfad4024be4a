//! Expiry policies and how they resolve to a deadline.
//!
//! A key either carries its own [`ExpiryPolicy`], resolved once at issue to a
//! fixed deadline, or is governed by the ring's default policy. A default is
//! resolved at every check from the moment the default was last set, not from
//! the key's creation: changing the default from one month to six at instant
//! T makes those keys expire at T + 6 months (hence no write per key when the
//! default changes).

use serde::{Deserialize, Serialize};
use time::{Date, Duration, OffsetDateTime, Time};

use crate::error::Error;

/// When a key stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpiryPolicy {
    /// Never expires. Under a ring's maximum lifetime, a key's own `Never`
    /// is refused ([`Error::ExpiryBeyondMax`]); as the ring's default, it
    /// gives the keys it governs the maximum as their deadline.
    Never,
    /// Expires at this instant: valid strictly before it.
    At(#[serde(with = "time::serde::rfc3339")] OffsetDateTime),
    /// Valid through this UTC date, invalid from the following midnight UTC.
    EndOfDate(Date),
    /// Valid for this long after creation (minutes to years).
    Lifetime(Duration),
    /// Expires after this long without a successful verification (and,
    /// under a ring's maximum lifetime, at the maximum at the latest). An
    /// exchange for an access token counts as one once the key passed its
    /// checks, even when the exchange is then refused for a reason of the
    /// key's (see [`KeyRing::exchange_with`](crate::KeyRing::exchange_with)).
    Idle(Duration),
}

impl ExpiryPolicy {
    /// A lifetime of `days` days.
    pub const fn days(days: i64) -> ExpiryPolicy {
        ExpiryPolicy::Lifetime(Duration::days(days))
    }

    /// Refuses policies that could never let a key work: a zero or negative
    /// period, an instant or date already past at `now`.
    pub(crate) fn validate(&self, now: OffsetDateTime) -> Result<(), Error> {
        match *self {
            ExpiryPolicy::Never => Ok(()),
            ExpiryPolicy::Lifetime(d) | ExpiryPolicy::Idle(d) if !d.is_positive() => {
                Err(Error::InvalidExpiry("the period must be positive"))
            }
            ExpiryPolicy::Lifetime(_) | ExpiryPolicy::Idle(_) => Ok(()),
            ExpiryPolicy::At(at) if at <= now => {
                Err(Error::InvalidExpiry("the instant has passed"))
            }
            // `Date::MAX` has no following midnight: it never ends.
            ExpiryPolicy::EndOfDate(date) if end_of_date(date).is_some_and(|end| end <= now) => {
                Err(Error::InvalidExpiry("the date has passed"))
            }
            ExpiryPolicy::At(_) | ExpiryPolicy::EndOfDate(_) => Ok(()),
        }
    }

    /// The same policy with any instant in UTC: RFC 3339, the stored form,
    /// has no room for an offset with seconds. Refuses an instant that has
    /// no UTC form (beyond the supported range).
    pub(crate) fn normalized(self) -> Result<ExpiryPolicy, Error> {
        match self {
            ExpiryPolicy::At(at) => at
                .checked_to_offset(time::UtcOffset::UTC)
                .map(ExpiryPolicy::At)
                .ok_or(Error::InvalidExpiry("the instant is out of range")),
            other => Ok(other),
        }
    }

    /// The fixed deadline this policy gives a key whose period starts at
    /// `anchor`; `None` for no fixed deadline (never, idle).
    pub(crate) fn deadline(&self, anchor: OffsetDateTime) -> Option<OffsetDateTime> {
        match *self {
            ExpiryPolicy::Never | ExpiryPolicy::Idle(_) => None,
            ExpiryPolicy::At(at) => Some(at),
            // The last representable date has no following midnight: treat it
            // as never expiring rather than fail.
            ExpiryPolicy::EndOfDate(date) => end_of_date(date),
            ExpiryPolicy::Lifetime(d) => Some(anchor.saturating_add(d)),
        }
    }
}

/// Midnight UTC at the start of the day after `date`.
fn end_of_date(date: Date) -> Option<OffsetDateTime> {
    date.next_day()
        .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn end_of_date_is_the_following_midnight_utc() {
        let p = ExpiryPolicy::EndOfDate(date!(2026 - 03 - 31));
        let d = p.deadline(datetime!(2026-01-01 0:00 UTC));
        assert_eq!(d, Some(datetime!(2026-04-01 0:00 UTC)));
        assert!(datetime!(2026-03-31 23:59:59.999 UTC) < d.unwrap());
        assert_eq!(
            ExpiryPolicy::EndOfDate(Date::MAX).deadline(datetime!(2026-01-01 0:00 UTC)),
            None
        );
    }

    #[test]
    fn lifetime_counts_from_the_anchor() {
        let t = datetime!(2026-01-01 0:00 UTC);
        assert_eq!(
            ExpiryPolicy::days(30).deadline(t),
            Some(datetime!(2026-01-31 0:00 UTC))
        );
        assert_eq!(ExpiryPolicy::Never.deadline(t), None);
        assert_eq!(ExpiryPolicy::Idle(Duration::days(1)).deadline(t), None);
    }

    #[test]
    fn validation() {
        let now = datetime!(2026-01-01 12:00 UTC);
        assert!(ExpiryPolicy::Never.validate(now).is_ok());
        assert!(ExpiryPolicy::days(1).validate(now).is_ok());
        assert!(
            ExpiryPolicy::Lifetime(Duration::ZERO)
                .validate(now)
                .is_err()
        );
        assert!(
            ExpiryPolicy::Idle(Duration::seconds(-1))
                .validate(now)
                .is_err()
        );
        assert!(ExpiryPolicy::At(now).validate(now).is_err());
        assert!(
            ExpiryPolicy::At(now + Duration::SECOND)
                .validate(now)
                .is_ok()
        );
        assert!(
            ExpiryPolicy::EndOfDate(date!(2026 - 01 - 01))
                .validate(now)
                .is_ok()
        );
        assert!(
            ExpiryPolicy::EndOfDate(date!(2025 - 12 - 31))
                .validate(now)
                .is_err()
        );
    }
}
