//! Errors: [`VerifyError`] for the per-request check, [`Error`] for every
//! other operation, [`StoreError`] for storage backends.
//!
//! Messages are lowercase, without a trailing period, and never contain key
//! material: at most a key id, which is public. A message that repeats its
//! input (a scope, a network, a prefix) repeats it through `echo`, since a
//! key pasted into the wrong field must not reach the logs that way.

use thiserror::Error;
use time::Duration;

use crate::binding::Binding;
use crate::scope::Scope;
use crate::token::KeyId;

/// Longest run of ASCII letters and digits an error message repeats as
/// is. The body of every key or token is a longer run (42 or more: version,
/// id, secret, checksum), and so is the secret alone (24), while the words
/// of scopes, addresses and prefixes seldom are.
const ECHO_RUN: usize = 16;

/// `text` as an error message may repeat it: at most `max_chars`
/// characters, and each run of more than [`ECHO_RUN`] letters and digits
/// shown as `<N characters>`, so that no message holds any part of a key's
/// body, however the key was pasted or where the text is cut
/// (`acme_1JFA…` becomes `acme_<42 characters>`). Runs are measured in the
/// whole of `text` before it is cut, so a cut never leaves a short piece of
/// a long run.
pub(crate) fn echo(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut rest = text;
    while shown < max_chars {
        let run = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
        let taken = if run > ECHO_RUN {
            let length = format!("<{run} characters>");
            if shown + length.len() > max_chars {
                break;
            }
            shown += length.len();
            out.push_str(&length);
            run
        } else if run > 0 {
            let take = run.min(max_chars - shown);
            out.push_str(&rest[..take]);
            shown += take;
            run
        } else if let Some(c) = rest.chars().next() {
            out.push(c);
            shown += 1;
            c.len_utf8()
        } else {
            break;
        };
        rest = &rest[taken..];
    }
    out
}

/// A (positive) length of time as a message states it: its whole days,
/// hours, minutes and seconds, each only when not zero, the seconds with
/// their fraction (`1 day 12 hours`, `1.5 seconds`). A cap of 12 hours in
/// whole days would read "0 days".
fn lifetime(d: &Duration) -> String {
    let d = d.unsigned_abs();
    let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
    let counted = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let mut parts: Vec<String> = [
        (secs / 86_400, "day"),
        (secs / 3_600 % 24, "hour"),
        (secs / 60 % 60, "minute"),
    ]
    .into_iter()
    .filter(|&(n, _)| n > 0)
    .map(|(n, unit)| counted(n, unit))
    .collect();
    let seconds = secs % 60;
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        parts.push(format!(
            "{seconds}.{} seconds",
            fraction.trim_end_matches('0')
        ));
    } else if seconds > 0 || parts.is_empty() {
        parts.push(counted(seconds, "second"));
    }
    parts.join(" ")
}

/// Why a presented string is not a key of this ring. Every reason is found
/// offline, before the store is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MalformedReason {
    /// Longer than the longest possible key; refused before any other work.
    TooLong,
    /// Not the length of a key of this ring.
    WrongLength,
    /// The prefix (or its `_` separator) is not this ring's.
    WrongPrefix,
    /// The body starts with a version this crate does not know.
    UnknownVersion,
    /// A character outside `0-9A-Za-z` in the body.
    BadAlphabet,
    /// The CRC32 checksum does not match: a typo or not a key at all.
    BadChecksum,
    /// The checksum matches, but the key id's digits encode a number of more
    /// than 64 bits: a string made to pass the checksum, never a key that
    /// this crate issued.
    IdOutOfRange,
}

impl MalformedReason {
    /// A stable, lowercase description.
    pub const fn as_str(self) -> &'static str {
        match self {
            MalformedReason::TooLong => "too long",
            MalformedReason::WrongLength => "wrong length",
            MalformedReason::WrongPrefix => "wrong prefix",
            MalformedReason::UnknownVersion => "unknown version",
            MalformedReason::BadAlphabet => "bad character",
            MalformedReason::BadChecksum => "bad checksum",
            MalformedReason::IdOutOfRange => "id out of range",
        }
    }
}

impl std::fmt::Display for MalformedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a presented key was refused.
///
/// An unknown id and a wrong secret are one variant, [`VerifyError::Invalid`],
/// on purpose: a caller cannot tell which ids exist. Expired, revoked and
/// disabled are reported only once the secret has matched, for the same
/// reason.
///
/// Each variant maps to an HTTP status ([`VerifyError::http_status`]) and a
/// stable machine-readable code ([`VerifyError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a key of this ring: wrong length, prefix, version, alphabet or
    /// checksum, or an id out of range.
    #[error("malformed api key: {0}")]
    Malformed(MalformedReason),
    /// No such key, or the secret does not match.
    #[error("invalid api key")]
    Invalid,
    /// The key's expiry has passed.
    #[error("api key expired")]
    Expired,
    /// The key was revoked.
    #[error("api key revoked")]
    Revoked,
    /// The key is disabled (reversibly).
    #[error("api key disabled")]
    Disabled,
    /// The key lacks a scope the request requires; names the first missing
    /// scope.
    #[error("insufficient scope: missing `{0}`")]
    InsufficientScope(Scope),
    /// The key's use limit is used up.
    #[error("api key usage limit exceeded")]
    UsageExceeded,
    /// The key has a use limit, and its use could not be written to the
    /// store (the store failed the write, or other key rings on the same
    /// store kept writing the key meanwhile). The request is refused, since
    /// a use the store does not hold could be granted again, and nothing is
    /// spent in memory (a durable store whose write failed late, e.g. in
    /// its fsync, may still show the use once reopened: never a use too
    /// few). A retry may succeed; a [`FileStore`](crate::FileStore) that
    /// met an I/O error refuses every write until it is reopened, so until
    /// then every limited key gets this answer.
    #[error("api key use could not be recorded")]
    Unavailable,
    /// The request did not present what the key is bound to (a client
    /// certificate, a network).
    #[error("api key binding mismatch: {0}")]
    BindingMismatch(Binding),
}

impl VerifyError {
    /// The HTTP status a server should answer with: 401 when the caller is
    /// not authenticated, 403 when it is but may not do this, 429 when its
    /// uses are exhausted, 503 when its use could not be recorded.
    pub const fn http_status(&self) -> u16 {
        match self {
            VerifyError::Malformed(_)
            | VerifyError::Invalid
            | VerifyError::Expired
            | VerifyError::Revoked
            | VerifyError::Disabled => 401,
            VerifyError::InsufficientScope(_) | VerifyError::BindingMismatch(_) => 403,
            VerifyError::UsageExceeded => 429,
            VerifyError::Unavailable => 503,
        }
    }

    /// A stable machine-readable code, e.g. for a JSON error body.
    pub const fn code(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed_key",
            VerifyError::Invalid => "invalid_key",
            VerifyError::Expired => "key_expired",
            VerifyError::Revoked => "key_revoked",
            VerifyError::Disabled => "key_disabled",
            VerifyError::InsufficientScope(_) => "insufficient_scope",
            VerifyError::UsageExceeded => "usage_exceeded",
            VerifyError::Unavailable => "use_not_recorded",
            VerifyError::BindingMismatch(_) => "binding_mismatch",
        }
    }
}

/// The error of every [`KeyRing`](crate::KeyRing) operation other than
/// verification.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The ring's prefix breaks the format rules. Holds the prefix as
    /// given, cut after 40 characters, with each run of more than 16 letters
    /// and digits shown as its length (`<42 characters>`), so that a key
    /// pasted into the field is not repeated.
    #[error(
        "invalid key prefix `{0}`: expected [a-z][a-z0-9_]*, at most 32 characters, not ending in `_`"
    )]
    InvalidPrefix(String),
    /// [`KeyRingBuilder::build`](crate::KeyRingBuilder::build) refused a
    /// store that holds another ring's keys: keys of another prefix, or
    /// keys hashed under another pepper (a misconfigured pepper would
    /// otherwise refuse every key at its first use). One store holds the
    /// keys of one ring; give each prefix a store of its own.
    #[error("the store belongs to another key ring: {0}")]
    StoreOfAnotherRing(&'static str),
    /// A scope string breaks the `resource:action` rules. Holds the scope
    /// as given, cut after 128 characters, with each run of more than 16
    /// letters and digits shown as its length (`<42 characters>`), so that
    /// a key pasted into the field is not repeated.
    #[error("invalid scope `{0}`: expected `resource:action`, each [a-z0-9_.-]+ or `*`")]
    InvalidScope(String),
    /// A sensitive resource given to
    /// [`KeyRingBuilder::sensitive`](crate::KeyRingBuilder::sensitive) is
    /// not a resource name (`*` is not one). Holds the name as given, shown
    /// as [`Error::InvalidScope`] shows a scope.
    #[error("invalid sensitive resource `{0}`: expected a resource name, [a-z0-9_.-]+ (not `*`)")]
    InvalidSensitiveResource(String),
    /// A requirement with no alternative can never be met.
    #[error("empty requirement: `any` needs at least one alternative")]
    EmptyRequirement,
    /// A [`Requirement`](crate::Requirement) whose `all` and `any` nest
    /// more than 32 levels: refused, so that one built from request data
    /// cannot exhaust the stack when it is checked or dropped.
    #[error("requirement too deep: `all` and `any` nest more than 32 levels")]
    RequirementTooDeep,
    /// A key id string is not 11 base62 characters of a 64-bit value.
    #[error("invalid key id `{0}`")]
    InvalidKeyId(String),
    /// A client-certificate fingerprint or a network that cannot be parsed.
    /// The message repeats the input as given, cut after 100 characters, with
    /// each run of more than 16 letters and digits shown as its length
    /// (`<64 characters>`), so that a key sent in the field is not repeated.
    #[error("invalid binding: {0}")]
    InvalidBinding(String),
    /// An expiry policy that cannot be applied (zero or negative period, an
    /// instant or date already past).
    #[error("invalid expiry: {0}")]
    InvalidExpiry(&'static str),
    /// The expiry asked for ends after the ring's maximum lifetime. The
    /// message states the maximum in days, hours, minutes and seconds, each
    /// when not zero (`90 days`, `12 hours`, `1 day 12 hours`).
    #[error("expiry beyond the key ring's maximum lifetime of {}", lifetime(.max))]
    ExpiryBeyondMax {
        /// The ring's maximum lifetime, as given to
        /// [`KeyRingBuilder::max_lifetime`](crate::KeyRingBuilder::max_lifetime).
        max: Duration,
    },
    /// A field of a request breaks its limits.
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// No key with this id.
    #[error("no key with id {0}")]
    NotFound(KeyId),
    /// The operation needs a key that is not revoked.
    #[error("key {0} is revoked")]
    Revoked(KeyId),
    /// The key was rotated already; rotate its successor instead.
    #[error("key {0} was already rotated")]
    AlreadyRotated(KeyId),
    /// The key has expired, so it cannot be rotated: a successor would give
    /// it new life. Issue a new key instead.
    #[error("key {0} has expired")]
    Expired(KeyId),
    /// An update, or an exchange asking for narrower scopes, named a scope
    /// the key does not hold.
    #[error("scopes may only narrow: `{0}` is not granted to the key")]
    ScopeWidening(String),
    /// The operating system's random number generator failed.
    #[error("operating system random number generator failed: {0}")]
    Random(String),
    /// The ring has no signing key for access tokens.
    #[error("no signing key configured for access tokens")]
    NoSigningKey,
    /// The key presented for an exchange was regenerated within the current
    /// second. Access tokens carry whole seconds, so a token exchanged now
    /// could not be told from one of the old secret, and strict checks
    /// would refuse it for its whole life. Exchange again a second later.
    #[error("key {0} was regenerated within this second: exchange again in a second")]
    RegeneratedThisSecond(KeyId),
    /// The API key presented for an exchange was refused.
    #[error("exchange refused: {0}")]
    Rejected(#[source] VerifyError),
    /// The store failed.
    #[error("storage error")]
    Storage(#[from] StoreError),
}

/// The one error type of every [`KeyStore`](crate::KeyStore) method.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `insert` found a record with this id already.
    #[error("a key with id {0} already exists")]
    Duplicate(KeyId),
    /// `replace` found no record with this id.
    #[error("no key with id {0}")]
    NotFound(KeyId),
    /// A [`Change::ReplaceIf`](crate::Change::ReplaceIf) found another
    /// record than the one its change was derived from: the key was
    /// written meanwhile (by another ring on the same store, say). Read it
    /// again and redo the change.
    #[error("the record of key {0} changed since it was read")]
    Conflict(KeyId),
    /// A [`Change::SettingsIf`](crate::Change::SettingsIf) found other
    /// settings than the ones its change was derived from: another ring on
    /// the same store wrote them meanwhile. Read them again and redo the
    /// change.
    #[error("the ring settings changed since they were read")]
    SettingsConflict,
    /// The settings the store holds now belong to another key ring (another
    /// prefix or pepper than the ring claimed the store with): someone
    /// replaced them under a running ring, in a database say. The ring
    /// neither installs nor writes over them; restart it against its own
    /// store.
    #[error("the store's settings belong to another key ring")]
    ForeignSettings,
    /// Another open store holds the lock on this path (this process or
    /// another).
    #[error("store {} is locked by another open store", .0.display())]
    Locked(std::path::PathBuf),
    /// The file is damaged before its tail: committed data follows the
    /// damage, so it cannot be dropped as a torn write.
    #[error("store {} is corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: std::path::PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong there.
        reason: &'static str,
    },
    /// An earlier write failed, so the store refuses writes until it is
    /// reopened (which finds out what reached the disk).
    #[error("store {} refuses writes after an earlier i/o error; reopen it", .0.display())]
    Poisoned(std::path::PathBuf),
    /// An operating-system i/o error.
    #[error("i/o error on {}", path.display())]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An import stream is not a keyward export.
    #[error("invalid import at line {line}: {reason}")]
    InvalidImport {
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Anything else the backend reports, with its cause kept as the source.
    #[error("storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::lifetime;

    #[test]
    fn a_lifetime_is_stated_in_the_units_it_has() {
        for (d, stated) in [
            (Duration::days(90), "90 days"),
            (Duration::days(1), "1 day"),
            (Duration::hours(12), "12 hours"),
            (Duration::hours(25), "1 day 1 hour"),
            (Duration::minutes(1), "1 minute"),
            (Duration::minutes(61), "1 hour 1 minute"),
            (Duration::days(2) + Duration::seconds(1), "2 days 1 second"),
            (Duration::seconds(1), "1 second"),
            (Duration::milliseconds(250), "0.25 seconds"),
            (
                Duration::seconds(61) + Duration::NANOSECOND,
                "1 minute 1.000000001 seconds",
            ),
            (Duration::ZERO, "0 seconds"),
        ] {
            assert_eq!(lifetime(&d), stated, "{d:?}");
        }
    }
}
