//! Expiry policies and how they resolve to a deadline.
//!
//! A key either carries its own [`ExpiryPolicy`], resolved once at issue to a
//! fixed deadline, or is governed by the ring's default policy. A default is
//! resolved at every check from the moment the default was last set, not from
//! the key's creation: changing the default from one month to six at instant
//! T makes those keys expire at T + 6 months (hence no write per key when the
//! default changes).

use std::fmt;

use serde::de::{self, EnumAccess, VariantAccess};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Date, Duration, OffsetDateTime, Time};

use crate::error::Error;

/// When a key stops working.
///
/// # Serialized form
///
/// In human-readable formats (JSON, TOML, YAML: what a host's admin API
/// and a `FileStore` write), a policy is its name in snake case, with its
/// value: an instant in RFC 3339, a date as `YYYY-MM-DD`, a period as an
/// ISO 8601 duration of days, hours, minutes and seconds (a day being
/// 86,400 seconds, as everywhere in UTC):
///
/// ```
/// # use keyward::ExpiryPolicy;
/// # use time::{macros::{date, datetime}, Duration};
/// let json = |p: ExpiryPolicy| serde_json::to_string(&p).unwrap();
/// assert_eq!(json(ExpiryPolicy::Never), r#""never""#);
/// assert_eq!(json(ExpiryPolicy::At(datetime!(2026-12-31 12:00 UTC))), r#"{"at":"2026-12-31T12:00:00Z"}"#);
/// assert_eq!(json(ExpiryPolicy::EndOfDate(date!(2026-12-31))), r#"{"end_of_date":"2026-12-31"}"#);
/// assert_eq!(json(ExpiryPolicy::days(30)), r#"{"lifetime":"P30D"}"#);
/// assert_eq!(json(ExpiryPolicy::Idle(Duration::minutes(90))), r#"{"idle":"PT1H30M"}"#);
/// ```
///
/// Reading, the forms an earlier keyward wrote are accepted too (a period
/// as `[seconds, nanoseconds]`, a date as `[year, day of the year]`, or,
/// when `time`'s `serde-human-readable` feature was on in the build, a
/// period as `"<seconds>.<nanoseconds>"` and a date as `YYYY-MM-DD`), so
/// stores and exports written before keep opening. Errors never repeat
/// the text they refuse. Formats that are not human readable (bincode,
/// CBOR) keep the compact form: `time`'s own tuples for the date and the
/// periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpiryPolicy {
    /// Never expires. Under a ring's maximum lifetime, a key's own `Never`
    /// is refused ([`Error::ExpiryBeyondMax`]); as the ring's default, it
    /// gives the keys it governs the maximum as their deadline.
    Never,
    /// Expires at this instant: valid strictly before it.
    At(OffsetDateTime),
    /// Valid through this UTC date, invalid from the following midnight UTC.
    EndOfDate(Date),
    /// Valid for this long after creation (minutes to years).
    Lifetime(Duration),
    /// Expires after this long without a successful verification (and,
    /// under a ring's maximum lifetime, at the maximum at the latest). An
    /// exchange for an access token counts as one once the key passed its
    /// checks, even when the exchange is then refused for a reason of the
    /// key's (see [`KeyRing::exchange_with`](crate::KeyRing::exchange_with)).
    /// A use is kept to the second (rounded down), so the period can end up
    /// to a second early, never late.
    Idle(Duration),
}

impl ExpiryPolicy {
    /// A lifetime of `days` days. More days than a [`Duration`] holds
    /// (about 292 billion years) saturate to [`Duration::MAX`], a key that
    /// never expires by its lifetime (fewer, to [`Duration::MIN`], which
    /// `issue` refuses as not positive): a count from an admin's form or a
    /// configuration file never panics here.
    pub const fn days(days: i64) -> ExpiryPolicy {
        ExpiryPolicy::Lifetime(match days.checked_mul(DAY as i64) {
            Some(seconds) => Duration::seconds(seconds),
            None if days < 0 => Duration::MIN,
            None => Duration::MAX,
        })
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

/// The policies' names, in the order of their variant indices.
const VARIANTS: &[&str] = &["never", "at", "end_of_date", "lifetime", "idle"];

impl Serialize for ExpiryPolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let readable = serializer.is_human_readable();
        let name = "ExpiryPolicy";
        match *self {
            ExpiryPolicy::Never => serializer.serialize_unit_variant(name, 0, VARIANTS[0]),
            ExpiryPolicy::At(at) => {
                serializer.serialize_newtype_variant(name, 1, VARIANTS[1], &Rfc3339(at))
            }
            ExpiryPolicy::EndOfDate(date) if readable => {
                serializer.serialize_newtype_variant(name, 2, VARIANTS[2], &IsoDate(date))
            }
            ExpiryPolicy::EndOfDate(date) => {
                serializer.serialize_newtype_variant(name, 2, VARIANTS[2], &date)
            }
            ExpiryPolicy::Lifetime(period) if readable => {
                serializer.serialize_newtype_variant(name, 3, VARIANTS[3], &IsoPeriod(period))
            }
            ExpiryPolicy::Lifetime(period) => {
                serializer.serialize_newtype_variant(name, 3, VARIANTS[3], &period)
            }
            ExpiryPolicy::Idle(period) if readable => {
                serializer.serialize_newtype_variant(name, 4, VARIANTS[4], &IsoPeriod(period))
            }
            ExpiryPolicy::Idle(period) => {
                serializer.serialize_newtype_variant(name, 4, VARIANTS[4], &period)
            }
        }
    }
}

impl<'de> Deserialize<'de> for ExpiryPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let readable = deserializer.is_human_readable();
        deserializer.deserialize_enum("ExpiryPolicy", VARIANTS, PolicyVisitor { readable })
    }
}

/// Reads a policy: its name, then its value in the form the format calls
/// for.
struct PolicyVisitor {
    readable: bool,
}

impl<'de> de::Visitor<'de> for PolicyVisitor {
    type Value = ExpiryPolicy;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an expiry policy")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<ExpiryPolicy, A::Error> {
        let (tag, value) = data.variant::<Tag>()?;
        Ok(match (tag, self.readable) {
            (Tag::Never, _) => {
                // Its own error would quote a value given to `never`.
                value
                    .unit_variant()
                    .map_err(|_| de::Error::custom("`never` takes no value"))?;
                ExpiryPolicy::Never
            }
            (Tag::At, _) => ExpiryPolicy::At(value.newtype_variant::<Rfc3339>()?.0),
            (Tag::EndOfDate, true) => {
                ExpiryPolicy::EndOfDate(value.newtype_variant::<IsoDate>()?.0)
            }
            (Tag::EndOfDate, false) => ExpiryPolicy::EndOfDate(value.newtype_variant()?),
            (Tag::Lifetime, true) => {
                ExpiryPolicy::Lifetime(value.newtype_variant::<IsoPeriod>()?.0)
            }
            (Tag::Lifetime, false) => ExpiryPolicy::Lifetime(value.newtype_variant()?),
            (Tag::Idle, true) => ExpiryPolicy::Idle(value.newtype_variant::<IsoPeriod>()?.0),
            (Tag::Idle, false) => ExpiryPolicy::Idle(value.newtype_variant()?),
        })
    }
}

/// A policy's name. An unknown one is refused without being repeated (a
/// derived enum's error would quote it).
enum Tag {
    Never,
    At,
    EndOfDate,
    Lifetime,
    Idle,
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(TagVisitor)
    }
}

struct TagVisitor;

impl TagVisitor {
    fn unknown<E: de::Error>() -> E {
        E::custom(
            "unknown expiry policy: expected `never`, `at`, `end_of_date`, `lifetime` or `idle`",
        )
    }
}

impl de::Visitor<'_> for TagVisitor {
    type Value = Tag;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the name of an expiry policy")
    }

    fn visit_u64<E: de::Error>(self, index: u64) -> Result<Tag, E> {
        match index {
            0 => Ok(Tag::Never),
            1 => Ok(Tag::At),
            2 => Ok(Tag::EndOfDate),
            3 => Ok(Tag::Lifetime),
            4 => Ok(Tag::Idle),
            _ => Err(Self::unknown()),
        }
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Tag, E> {
        match name {
            "never" => Ok(Tag::Never),
            "at" => Ok(Tag::At),
            "end_of_date" => Ok(Tag::EndOfDate),
            "lifetime" => Ok(Tag::Lifetime),
            "idle" => Ok(Tag::Idle),
            _ => Err(Self::unknown()),
        }
    }

    fn visit_bytes<E: de::Error>(self, name: &[u8]) -> Result<Tag, E> {
        std::str::from_utf8(name).map_or_else(|_| Err(Self::unknown()), |n| self.visit_str(n))
    }
}

/// An instant in RFC 3339, in every format (as before).
struct Rfc3339(OffsetDateTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Rfc3339 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        time::serde::rfc3339::deserialize(deserializer).map(Rfc3339)
    }
}

/// A date as `YYYY-MM-DD`; read also as an earlier keyward wrote it,
/// `[year, day of the year]`.
struct IsoDate(Date);

/// The date form of [`IsoDate`].
const DATE_FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
    time::macros::format_description!("[year]-[month]-[day]");

impl Serialize for IsoDate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self
            .0
            .format(DATE_FORMAT)
            .map_err(|_| serde::ser::Error::custom("the date has no `YYYY-MM-DD` form"))?;
        serializer.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for IsoDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DateVisitor).map(IsoDate)
    }
}

struct DateVisitor;

impl DateVisitor {
    fn invalid<E: de::Error>() -> E {
        E::custom("invalid date: expected `YYYY-MM-DD`")
    }
}

impl<'de> de::Visitor<'de> for DateVisitor {
    type Value = Date;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a date, `YYYY-MM-DD`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Date, E> {
        Date::parse(text, DATE_FORMAT).map_err(|_| Self::invalid())
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Date, A::Error> {
        let (year, day) = legacy_pair(seq, Self::invalid)?;
        Date::from_ordinal_date(year, day).map_err(|_| Self::invalid())
    }
}

/// The two elements of a tuple an earlier keyward wrote, and no third;
/// anything else is `invalid()`, never an element's own error, which
/// would quote it.
fn legacy_pair<'de, A, X, Y>(mut seq: A, invalid: fn() -> A::Error) -> Result<(X, Y), A::Error>
where
    A: de::SeqAccess<'de>,
    X: Deserialize<'de>,
    Y: Deserialize<'de>,
{
    let x = seq
        .next_element()
        .map_err(|_| invalid())?
        .ok_or_else(invalid)?;
    let y = seq
        .next_element()
        .map_err(|_| invalid())?
        .ok_or_else(invalid)?;
    if seq
        .next_element::<de::IgnoredAny>()
        .map_err(|_| invalid())?
        .is_some()
    {
        return Err(invalid());
    }
    Ok((x, y))
}

/// A period as an ISO 8601 duration (see [`format_period`]); read also as
/// an earlier keyward wrote it, `[seconds, nanoseconds]`.
struct IsoPeriod(Duration);

impl Serialize for IsoPeriod {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_period(self.0))
    }
}

impl<'de> Deserialize<'de> for IsoPeriod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PeriodVisitor).map(IsoPeriod)
    }
}

struct PeriodVisitor;

impl PeriodVisitor {
    fn invalid<E: de::Error>() -> E {
        E::custom(
            "invalid period: expected an ISO 8601 duration of days, hours, minutes and seconds, such as `P30D` or `PT1H30M`",
        )
    }
}

impl<'de> de::Visitor<'de> for PeriodVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ISO 8601 duration such as `P30D`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_period(text)
            .or_else(|| parse_seconds(text))
            .ok_or_else(Self::invalid)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Duration, A::Error> {
        let (seconds, nanos): (i64, i32) = legacy_pair(seq, Self::invalid)?;
        // As `time` wrote it: the nanoseconds below a second, of the
        // seconds' sign.
        let same_sign = seconds == 0 || nanos == 0 || (seconds < 0) == (nanos < 0);
        if nanos.unsigned_abs() >= 1_000_000_000 || !same_sign {
            return Err(Self::invalid());
        }
        Ok(Duration::seconds(seconds) + Duration::nanoseconds(i64::from(nanos)))
    }
}

/// Seconds in a day: UTC days, as the policies count them.
const DAY: u64 = 86_400;

/// `period` as an ISO 8601 duration, largest units first, each left out
/// when zero: `P30D`, `PT1H30M`, `P1DT0.5S`, `-PT5S`; zero is `PT0S`.
fn format_period(period: Duration) -> String {
    use fmt::Write as _;
    let seconds = period.whole_seconds().unsigned_abs();
    let nanos = period.subsec_nanoseconds().unsigned_abs();
    let (days, hours) = (seconds / DAY, seconds % DAY / 3600);
    let (minutes, secs) = (seconds % 3600 / 60, seconds % 60);
    let mut out = String::from(if period.is_negative() { "-P" } else { "P" });
    if days > 0 {
        let _ = write!(out, "{days}D");
    }
    if hours + minutes + secs > 0 || nanos > 0 || days == 0 {
        out.push('T');
        if hours > 0 {
            let _ = write!(out, "{hours}H");
        }
        if minutes > 0 {
            let _ = write!(out, "{minutes}M");
        }
        if secs > 0 || nanos > 0 || seconds == 0 {
            let _ = write!(out, "{secs}");
            if nanos > 0 {
                let fraction = format!("{nanos:09}");
                let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
            }
            out.push('S');
        }
    }
    out
}

/// Reads what [`format_period`] writes, and any other ISO 8601 duration of
/// days, hours, minutes and seconds (each at most once, in that order, a
/// fraction on the seconds only, up to nanoseconds). Weeks, months and
/// years are refused: a month has no fixed length. `None` for anything
/// else, or for a period beyond `Duration`'s range; never panics.
fn parse_period(text: &str) -> Option<Duration> {
    if text.len() > 64 {
        return None;
    }
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let rest = rest.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let mut seconds: u64 = 0;
    let mut nanos: u32 = 0;
    let mut any = false;
    if !date.is_empty() {
        let days = date.strip_suffix('D')?;
        seconds = number(days)?.checked_mul(DAY)?;
        any = true;
    }
    if let Some(mut time) = time {
        if time.is_empty() {
            return None;
        }
        for (unit, size) in [('H', 3600), ('M', 60)] {
            let digits = time.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 && time[digits..].starts_with(unit) {
                let part = number(&time[..digits])?.checked_mul(size)?;
                seconds = seconds.checked_add(part)?;
                time = &time[digits + 1..];
                any = true;
            }
        }
        if !time.is_empty() {
            let secs = time.strip_suffix('S')?;
            let (whole, fraction) = match secs.split_once('.') {
                Some((whole, fraction)) => (whole, Some(fraction)),
                None => (secs, None),
            };
            seconds = seconds.checked_add(number(whole)?)?;
            if let Some(fraction) = fraction {
                nanos = nanoseconds(fraction)?;
            }
            any = true;
        }
    }
    if !any {
        return None;
    }
    // Signed before it is bounded: a negative period reaches one second
    // further than a positive one (`Duration::MIN`).
    let sign = if negative { -1 } else { 1 };
    let seconds = i64::try_from(sign * i128::from(seconds)).ok()?;
    Duration::seconds(seconds).checked_add(Duration::nanoseconds(sign as i64 * i64::from(nanos)))
}

/// Reads a period in the form `time` writes one in when its
/// `serde-human-readable` feature is on, `[-]<seconds>.<nanoseconds>`
/// (`"2592000.000000000"`): a host's build that enables the feature (for
/// any crate: features are unified) had an earlier keyward write its
/// stores and exports so. `None` for anything else or out of range.
fn parse_seconds(text: &str) -> Option<Duration> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = rest.split_once('.')?;
    let nanos = nanoseconds(fraction)?;
    let sign = if negative { -1 } else { 1 };
    let seconds = i64::try_from(sign * i128::from(number(whole)?)).ok()?;
    Duration::seconds(seconds).checked_add(Duration::nanoseconds(sign as i64 * i64::from(nanos)))
}

/// A decimal fraction of a second, 1 to 9 ASCII digits, in nanoseconds.
fn nanoseconds(fraction: &str) -> Option<u32> {
    if fraction.is_empty() || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    format!("{fraction:0<9}").parse().ok()
}

/// A run of ASCII digits (at least one, no sign) as a number.
fn number(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
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

    fn json(policy: ExpiryPolicy) -> String {
        serde_json::to_string(&policy).unwrap()
    }

    fn from_json(text: &str) -> Result<ExpiryPolicy, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_json_form_names_dates_and_periods_as_iso_8601() {
        let cases = [
            (ExpiryPolicy::Never, r#""never""#),
            (
                ExpiryPolicy::At(datetime!(2026-12-31 12:00 UTC)),
                r#"{"at":"2026-12-31T12:00:00Z"}"#,
            ),
            (
                ExpiryPolicy::EndOfDate(date!(2026 - 12 - 31)),
                r#"{"end_of_date":"2026-12-31"}"#,
            ),
            (
                ExpiryPolicy::EndOfDate(date!(0987 - 01 - 05)),
                r#"{"end_of_date":"0987-01-05"}"#,
            ),
            (ExpiryPolicy::days(30), r#"{"lifetime":"P30D"}"#),
            (
                ExpiryPolicy::Lifetime(Duration::days(365) + Duration::hours(6)),
                r#"{"lifetime":"P365DT6H"}"#,
            ),
            (
                ExpiryPolicy::Idle(Duration::minutes(90)),
                r#"{"idle":"PT1H30M"}"#,
            ),
            // Days with only minutes, or only seconds, after them.
            (
                ExpiryPolicy::Idle(Duration::days(2) + Duration::minutes(5)),
                r#"{"idle":"P2DT5M"}"#,
            ),
            (
                ExpiryPolicy::Lifetime(Duration::days(1) + Duration::seconds(1)),
                r#"{"lifetime":"P1DT1S"}"#,
            ),
            (
                ExpiryPolicy::Idle(Duration::days(1) + Duration::milliseconds(500)),
                r#"{"idle":"P1DT0.5S"}"#,
            ),
            (
                ExpiryPolicy::Lifetime(Duration::new(61, 1)),
                r#"{"lifetime":"PT1M1.000000001S"}"#,
            ),
            (
                ExpiryPolicy::Lifetime(Duration::ZERO),
                r#"{"lifetime":"PT0S"}"#,
            ),
            (
                ExpiryPolicy::Lifetime(-Duration::seconds(5)),
                r#"{"lifetime":"-PT5S"}"#,
            ),
        ];
        for (policy, text) in cases {
            assert_eq!(json(policy), text);
            assert_eq!(from_json(text), Ok(policy), "{text}");
        }
    }

    /// Stores and exports written before the ISO forms keep opening.
    #[test]
    fn the_forms_an_earlier_keyward_wrote_are_read() {
        for (text, policy) in [
            (r#"{"lifetime":[2592000,0]}"#, ExpiryPolicy::days(30)),
            (
                r#"{"idle":[5400,0]}"#,
                ExpiryPolicy::Idle(Duration::minutes(90)),
            ),
            (
                r#"{"idle":[-1,-500000000]}"#,
                ExpiryPolicy::Idle(-Duration::milliseconds(1500)),
            ),
            (
                r#"{"end_of_date":[2026,365]}"#,
                ExpiryPolicy::EndOfDate(date!(2026 - 12 - 31)),
            ),
        ] {
            assert_eq!(from_json(text), Ok(policy), "{text}");
        }
        for text in [
            r#"{"lifetime":[1,1000000000]}"#,
            r#"{"lifetime":[1,-1]}"#,
            r#"{"lifetime":[1]}"#,
            r#"{"lifetime":[1,0,0]}"#,
            r#"{"end_of_date":[2026,366]}"#,
            r#"{"end_of_date":[2026]}"#,
        ] {
            assert!(from_json(text).is_err(), "{text}");
        }
    }

    #[test]
    fn malformed_periods_are_refused() {
        for text in [
            "",
            "P",
            "PT",
            "P1DT",
            "30D",
            "P30",
            "p30d",
            "P30d",
            "P1W",
            "P1M",
            "P1Y",
            "PT1H1H",
            "PT1S1M",
            "PT1M1H",
            "PT1",
            "PT.5S",
            "PT1.S",
            "PT1.1234567890S",
            "PT1,5S",
            "P-1D",
            "P+1D",
            "--P1D",
            "+P1D",
            " P1D",
            "P1D ",
            "P1DT1H ",
            "P99999999999999999999D",
            "P106751991167301D",
            "PT9223372036854775808S",
            "P1D\u{0}",
            "PT\u{662}S",
        ] {
            assert_eq!(parse_period(text), None, "{text:?}");
        }
        // At the edges of `Duration`'s range, both ways.
        assert_eq!(
            parse_period(&format_period(Duration::MAX)),
            Some(Duration::MAX)
        );
        assert_eq!(
            parse_period(&format_period(Duration::MIN)),
            Some(Duration::MIN)
        );
    }

    /// An unknown or malformed policy is refused without being repeated: a
    /// key pasted into a configuration file must not reach the error.
    #[test]
    fn refusals_do_not_repeat_the_input() {
        let body = "1JFAk9dPq3cVb7xYz0LmN4sTu8wRe2Gh5IoKjQ6";
        for text in [
            format!(r#""acme_{body}""#),
            format!(r#"{{"acme_{body}":"P1D"}}"#),
            format!(r#"{{"lifetime":"P{body}"}}"#),
            format!(r#"{{"end_of_date":"{body}"}}"#),
        ] {
            let error = from_json(&text).unwrap_err();
            assert!(!error.contains(body), "{error}");
        }
    }

    /// Formats that are not human readable keep the compact form, so data
    /// written in it before still reads.
    #[test]
    fn a_binary_format_keeps_the_compact_form() {
        #[derive(Serialize)]
        #[serde(rename_all = "snake_case")]
        enum Before {
            EndOfDate(Date),
            Lifetime(Duration),
        }
        for (before, policy) in [
            (
                Before::EndOfDate(date!(2026 - 12 - 31)),
                ExpiryPolicy::EndOfDate(date!(2026 - 12 - 31)),
            ),
            (
                Before::Lifetime(Duration::new(61, 5)),
                ExpiryPolicy::Lifetime(Duration::new(61, 5)),
            ),
        ] {
            let (mut old, mut new) = (Vec::new(), Vec::new());
            ciborium::into_writer(&before, &mut old).unwrap();
            ciborium::into_writer(&policy, &mut new).unwrap();
            assert_eq!(old, new);
            let read: ExpiryPolicy = ciborium::from_reader(&new[..]).unwrap();
            assert_eq!(read, policy);
        }
        for policy in [
            ExpiryPolicy::Never,
            ExpiryPolicy::At(datetime!(2026-12-31 12:00 UTC)),
        ] {
            let mut bytes = Vec::new();
            ciborium::into_writer(&policy, &mut bytes).unwrap();
            let read: ExpiryPolicy = ciborium::from_reader(&bytes[..]).unwrap();
            assert_eq!(read, policy);
        }
    }

    /// A `time` built with its `serde-human-readable` feature (enabled by
    /// any crate in a host's build: features are unified) wrote a period
    /// as `"<seconds>.<nanoseconds>"`, so stores and exports an earlier
    /// keyward wrote in such a build hold that form. It must still read.
    #[test]
    fn the_period_form_of_time_human_readable_is_read() {
        for (text, policy) in [
            (
                r#"{"lifetime":"2592000.000000000"}"#,
                ExpiryPolicy::days(30),
            ),
            (
                r#"{"idle":"7200.000000000"}"#,
                ExpiryPolicy::Idle(Duration::hours(2)),
            ),
            (
                r#"{"idle":"61.000000005"}"#,
                ExpiryPolicy::Idle(Duration::new(61, 5)),
            ),
            (
                r#"{"lifetime":"-1.500000000"}"#,
                ExpiryPolicy::Lifetime(-Duration::milliseconds(1500)),
            ),
            (
                r#"{"lifetime":"-0.500000000"}"#,
                ExpiryPolicy::Lifetime(-Duration::milliseconds(500)),
            ),
            (
                r#"{"lifetime":"9223372036854775807.999999999"}"#,
                ExpiryPolicy::Lifetime(Duration::MAX),
            ),
            (
                r#"{"lifetime":"-9223372036854775808.999999999"}"#,
                ExpiryPolicy::Lifetime(Duration::MIN),
            ),
        ] {
            assert_eq!(from_json(text), Ok(policy), "{text}");
        }
        for text in [
            "1.",
            ".5",
            "1.0000000000",
            "1.5e3",
            "+1.5",
            "--1.5",
            "1.-5",
            "9223372036854775808.000000000",
            "-9223372036854775809.000000000",
            "1.5 ",
            "P1.5",
        ] {
            assert_eq!(parse_seconds(text), None, "{text:?}");
        }
    }

    /// A format that names a variant by its index (bincode, postcard)
    /// or by bytes reads each policy's name, in the order of
    /// [`VARIANTS`]; any other index or name is refused, unrepeated.
    #[test]
    fn a_policy_name_is_read_by_index_and_by_bytes() {
        use serde::de::value::{BoolDeserializer, BytesDeserializer, Error, U64Deserializer};
        let name = |tag: Result<Tag, Error>| tag.map(|t| VARIANTS[t as usize]);
        for (index, expected) in VARIANTS.iter().enumerate() {
            let by_index = Tag::deserialize(U64Deserializer::<Error>::new(index as u64));
            assert_eq!(name(by_index), Ok(*expected));
            let by_bytes = Tag::deserialize(BytesDeserializer::<Error>::new(expected.as_bytes()));
            assert_eq!(name(by_bytes), Ok(*expected));
        }
        for refused in [
            Tag::deserialize(U64Deserializer::<Error>::new(5)),
            Tag::deserialize(U64Deserializer::<Error>::new(u64::MAX)),
            Tag::deserialize(BytesDeserializer::<Error>::new(b"Never")),
            Tag::deserialize(BytesDeserializer::<Error>::new(b"\xffidle")),
        ] {
            let error = name(refused).unwrap_err().to_string();
            assert!(error.starts_with("unknown expiry policy"), "{error}");
        }
        let error = name(Tag::deserialize(BoolDeserializer::<Error>::new(true))).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("expected the name of an expiry policy"),
            "{error}"
        );
    }

    /// `time` writes a period's nanoseconds with the sign of its seconds,
    /// and a period under a second, or of whole seconds, with the sign
    /// the nonzero part has: all of these read.
    #[test]
    fn the_legacy_period_takes_the_sign_of_its_nonzero_part() {
        for (text, period) in [
            (r#"{"idle":[0,-500000000]}"#, -Duration::milliseconds(500)),
            (r#"{"idle":[0,500000000]}"#, Duration::milliseconds(500)),
            (r#"{"idle":[-5,0]}"#, Duration::seconds(-5)),
            (r#"{"idle":[0,0]}"#, Duration::ZERO),
            (
                r#"{"idle":[0,-999999999]}"#,
                Duration::nanoseconds(-999_999_999),
            ),
        ] {
            assert_eq!(from_json(text), Ok(ExpiryPolicy::Idle(period)), "{text}");
        }
        for text in [r#"{"idle":[-1,1]}"#, r#"{"idle":[0,-1000000000]}"#] {
            assert!(from_json(text).is_err(), "{text}");
        }
    }

    /// A key pasted where a legacy tuple or a `never` belongs is not
    /// repeated either (the element's own error would quote it).
    #[test]
    fn refusals_inside_the_legacy_forms_do_not_repeat_the_input() {
        let body = "1JFAk9dPq3cVb7xYz0LmN4sTu8wRe2Gh5IoKjQ6";
        for text in [
            format!(r#"{{"lifetime":["acme_{body}",0]}}"#),
            format!(r#"{{"idle":[1,"acme_{body}"]}}"#),
            format!(r#"{{"end_of_date":["acme_{body}",1]}}"#),
            format!(r#"{{"end_of_date":[2026,"acme_{body}"]}}"#),
            format!(r#"{{"never":"acme_{body}"}}"#),
            format!(r#"{{"at":"acme_{body}"}}"#),
        ] {
            let error = from_json(&text).unwrap_err();
            assert!(!error.contains(body), "{text}: {error}");
        }
    }

    proptest::proptest! {
        /// Every period reads back as itself, through JSON.
        #[test]
        fn every_period_round_trips(
            seconds in proptest::prelude::any::<i64>(),
            nanos in 0..1_000_000_000i64,
        ) {
            let nanos = if seconds < 0 { -nanos } else { nanos };
            let period = Duration::seconds(seconds) + Duration::nanoseconds(nanos);
            proptest::prop_assert_eq!(parse_period(&format_period(period)), Some(period));
            let policy = ExpiryPolicy::Idle(period);
            proptest::prop_assert_eq!(from_json(&json(policy)), Ok(policy));
        }

        /// Any text is read or refused, never a panic.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,40}|-?P[0-9DTHMS.]{0,30}|-?[0-9.]{0,30}") {
            let quoted = serde_json::to_string(&text).unwrap();
            let _ = parse_period(&text);
            let _ = parse_seconds(&text);
            let _ = from_json(&quoted);
            let _ = from_json(&format!(r#"{{"idle":{quoted}}}"#));
            let _ = from_json(&format!(r#"{{"end_of_date":{quoted}}}"#));
        }
    }

    /// A count of days from an admin's form or a configuration file, too
    /// many for a `Duration`, saturates (forever, or refused as not
    /// positive) instead of panicking.
    #[test]
    fn days_beyond_the_range_of_a_duration_saturate() {
        assert_eq!(
            ExpiryPolicy::days(i64::MAX),
            ExpiryPolicy::Lifetime(Duration::MAX)
        );
        assert_eq!(
            ExpiryPolicy::days(i64::MAX / 86_400 + 1),
            ExpiryPolicy::Lifetime(Duration::MAX)
        );
        assert_eq!(
            ExpiryPolicy::days(i64::MAX / 86_400),
            ExpiryPolicy::Lifetime(Duration::seconds(i64::MAX / 86_400 * 86_400))
        );
        assert_eq!(
            ExpiryPolicy::days(i64::MIN),
            ExpiryPolicy::Lifetime(Duration::MIN)
        );
        let now = datetime!(2026-01-01 12:00 UTC);
        assert!(ExpiryPolicy::days(i64::MAX).validate(now).is_ok());
        assert!(ExpiryPolicy::days(i64::MIN).validate(now).is_err());
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

    /// A text over 64 characters is refused before it is read, even one
    /// whose leading zeros would make a period of it (no period
    /// [`format_period`] writes comes near); 64 characters are read.
    #[test]
    fn a_period_of_more_than_64_characters_is_refused_unread() {
        let longest = format!("P{}1D", "0".repeat(61));
        assert_eq!(longest.len(), 64);
        assert_eq!(parse_period(&longest), Some(Duration::days(1)));
        let over = format!("P{}1D", "0".repeat(62));
        assert_eq!(parse_period(&over), None);
        assert!(from_json(&format!(r#"{{"lifetime":"{over}"}}"#)).is_err());
    }

    /// `normalized` moves an instant to UTC (the same instant), leaves the
    /// other policies as they are, and refuses an instant with no UTC form.
    #[test]
    fn normalized_puts_an_instant_in_utc() {
        let at = datetime!(2026-06-01 08:00:00.5 +02:00);
        let normal = ExpiryPolicy::At(at).normalized().unwrap();
        assert_eq!(normal, ExpiryPolicy::At(at));
        let ExpiryPolicy::At(utc) = normal else {
            panic!("{normal:?}")
        };
        assert_eq!(utc.offset(), time::UtcOffset::UTC);
        assert_eq!(utc, datetime!(2026-06-01 06:00:00.5 UTC));
        for other in [
            ExpiryPolicy::Never,
            ExpiryPolicy::days(3),
            ExpiryPolicy::Idle(Duration::minutes(5)),
            ExpiryPolicy::EndOfDate(date!(2026 - 06 - 01)),
        ] {
            assert_eq!(other.normalized().unwrap(), other);
        }
        // The last date's last half hour, an hour west of UTC: later than
        // any UTC instant.
        let beyond = Date::MAX
            .with_hms(23, 30, 0)
            .unwrap()
            .assume_offset(time::macros::offset!(-01:00));
        assert!(matches!(
            ExpiryPolicy::At(beyond).normalized(),
            Err(Error::InvalidExpiry(_))
        ));
    }

    /// A date ends at the following midnight UTC: at that very instant it
    /// has passed; `Date::MAX` never ends; a lifetime past the end of time
    /// saturates instead of panicking.
    #[test]
    fn a_date_has_passed_at_its_following_midnight() {
        let midnight = datetime!(2026-01-01 0:00 UTC);
        assert!(
            ExpiryPolicy::EndOfDate(date!(2025 - 12 - 31))
                .validate(midnight)
                .is_err()
        );
        assert!(
            ExpiryPolicy::EndOfDate(date!(2025 - 12 - 31))
                .validate(midnight - Duration::NANOSECOND)
                .is_ok()
        );
        assert!(
            ExpiryPolicy::EndOfDate(Date::MAX)
                .validate(midnight)
                .is_ok()
        );
        assert_eq!(
            ExpiryPolicy::Lifetime(Duration::MAX).deadline(midnight),
            Some(time::PrimitiveDateTime::MAX.assume_utc())
        );
    }
}
