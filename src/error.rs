//! Errors: [`VerifyError`] for the per-request check, [`Error`] for every
//! other operation, [`StoreError`] for storage backends.
//!
//! Messages are lowercase, without a trailing period, and never contain key
//! material: at most a key id, which is public. A message that repeats its
//! input (a scope, a network, a prefix) repeats it through `echo`, since a
//! key pasted into the wrong field must not reach the logs that way.

use serde::Serialize;
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
/// a long run. A control character is shown escaped (`\n`, `\u{1b}`), so
/// that a message a host logs keeps to one line and carries no terminal
/// escape from the input; the escape counts its own characters.
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
            if c.is_control() {
                let escaped = c.escape_default().to_string();
                if shown + escaped.len() > max_chars {
                    break;
                }
                shown += escaped.len();
                out.push_str(&escaped);
            } else {
                out.push(c);
                shown += 1;
            }
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
///
/// Serialized as its variant's name in snake case (`"too_long"`,
/// `"wrong_length"`, `"wrong_prefix"`, `"unknown_version"`,
/// `"bad_alphabet"`, `"bad_checksum"`, `"id_out_of_range"`): the name
/// for programs (metrics, JSON logs), which follows the variant. Its words
/// for people, from [`as_str`](Self::as_str) and `Display`, can differ
/// from it (`bad character` for `bad_alphabet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
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
    /// A lowercase description for people, as `Display` shows it
    /// (`"bad character"`); for programs, match the variant or read its
    /// serde name.
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
///
/// Serialized (in an [`Event`](crate::Event), or as a JSON error body) as
/// an object with its [`code`](VerifyError::code) and, for the variants
/// that carry one, what it names: `reason` ([`MalformedReason`], in snake
/// case), `scope` (the missing scope) or `binding` ([`Binding`], in snake
/// case). Never key material: the presented string is not kept.
///
/// ```json
/// {"code":"invalid_key"}
/// {"code":"malformed_key","reason":"bad_checksum"}
/// {"code":"insufficient_scope","scope":"invoices:write"}
/// {"code":"binding_mismatch","binding":"client_certificate"}
/// ```
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

/// The serialized form of a [`VerifyError`]: its code, then what it names.
#[derive(Serialize)]
struct VerifyErrorRepr<'a> {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<MalformedReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    binding: Option<Binding>,
}

impl Serialize for VerifyError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut repr = VerifyErrorRepr {
            code: self.code(),
            reason: None,
            scope: None,
            binding: None,
        };
        match self {
            VerifyError::Malformed(reason) => repr.reason = Some(*reason),
            VerifyError::InsufficientScope(scope) => repr.scope = Some(scope),
            VerifyError::BindingMismatch(binding) => repr.binding = Some(*binding),
            VerifyError::Invalid
            | VerifyError::Expired
            | VerifyError::Revoked
            | VerifyError::Disabled
            | VerifyError::UsageExceeded
            | VerifyError::Unavailable => {}
        }
        repr.serialize(serializer)
    }
}

/// The error of every [`KeyRing`](crate::KeyRing) operation other than
/// verification.
///
/// Like [`VerifyError`], each variant maps to an HTTP status
/// ([`Error::http_status`]) and a stable machine-readable code
/// ([`Error::code`]), so an administrative API answers a refusal without
/// matching every variant itself.
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
    ///
    /// Holds what told the rings apart: the prefix the store was claimed
    /// for when it keeps one (`` it holds the keys of prefix `acme_test` ``,
    /// shown as [`Error::InvalidPrefix`] shows a prefix), or that the
    /// pepper differs (never the pepper or anything derived from it).
    #[error("the store belongs to another key ring: {0}")]
    StoreOfAnotherRing(String),
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
    /// Holds the string as given, its control characters escaped (`\n`),
    /// when it is at most 11 characters long; a longer one (perhaps a
    /// whole key pasted by mistake) as its length, `<42 characters>`.
    #[error("invalid key id `{0}`")]
    InvalidKeyId(String),
    /// A client-certificate fingerprint or a network that cannot be parsed.
    /// The message repeats the input as given, cut after 100 characters, with
    /// each run of more than 16 letters and digits shown as its length
    /// (`<64 characters>`), so that a key sent in the field is not repeated.
    #[error("invalid binding: {0}")]
    InvalidBinding(String),
    /// An expiry policy that cannot be applied (zero or negative period, an
    /// instant or date already past or out of range), or a ring's maximum
    /// lifetime that is not positive.
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
    /// The key was rotated already; rotate its successor instead. After a
    /// rotation that failed with [`Error::Storage`], this says the rotation
    /// happened all the same: see [`KeyRing::rotate`](crate::KeyRing::rotate)
    /// for getting the successor's secret.
    #[error("key {0} was already rotated")]
    AlreadyRotated(KeyId),
    /// The key has expired, so it cannot be rotated (a successor would give
    /// it new life) or regenerated (a new secret would never verify). Issue
    /// a new key instead.
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
    /// The API key presented for an exchange was refused. The refusal is
    /// in the message and in the field, not also the error's
    /// [`source`](std::error::Error::source), so a report that prints the
    /// chain does not say it twice.
    #[error("exchange refused: {0}")]
    Rejected(VerifyError),
    /// The store failed.
    ///
    /// For a write, the outcome is then unknown: the store may hold the
    /// whole change though the call failed (a
    /// [`FileStore`](crate::FileStore) whose fsync failed after the record
    /// reached the disk finds it when reopened), or none of it. Read the key
    /// again once the store works. Where a secret was to be returned and
    /// was lost with the error: a rotation may have happened (see
    /// [`KeyRing::rotate`](crate::KeyRing::rotate) for the way back to its
    /// successor's secret), a regeneration may have ended the old secret
    /// (regenerate again), an issue may have stored a key whose secret
    /// nobody holds (a listing shows it; delete it). A revoke, disable or
    /// enable can simply be repeated.
    #[error("storage error")]
    Storage(#[from] StoreError),
}

impl Error {
    /// The HTTP status a REST administrative API should answer with:
    ///
    /// - **400** for a request the caller can fix: invalid input, prefix,
    ///   scope, sensitive resource, requirement, key id, binding or
    ///   expiry, an expiry beyond the ring's maximum, a scope widening, and
    ///   an import that is not an export ([`StoreError::InvalidImport`]).
    ///   The prefix and sensitive resources are refused only by
    ///   [`KeyRingBuilder::build`](crate::KeyRingBuilder::build): a host
    ///   that builds its ring from its own configuration fails at start-up
    ///   and never answers a request with them; one that builds rings from
    ///   requests (a tenant's prefix) has a bad value to send back.
    ///   [`Error::InvalidInput`] is 400 throughout, though a few of its
    ///   refusals are of the key's or the ring's state rather than the
    ///   request's (a rotation or regeneration of a key whose uses are
    ///   spent, an exchange for a key about to expire or on a clock before
    ///   1970).
    /// - **404** when there is no key with the id
    ///   ([`Error::NotFound`], and [`StoreError::NotFound`] when another
    ///   ring deleted the key meanwhile).
    /// - **409** when the request conflicts with the key's state: the key is
    ///   revoked, expired (for a rotation or a regeneration) or already
    ///   rotated, or was regenerated within this second (for an exchange; a
    ///   retry a second later succeeds).
    /// - **500** when the service is at fault, not the caller: a store of
    ///   another ring, no signing key for an exchange, a failed OS random
    ///   number generator, or fresh random ids that the store holds
    ///   already ([`StoreError::Duplicate`]: the ring draws ids itself and
    ///   retries, so this means a broken generator or store).
    /// - **503** when the store failed ([`Error::Storage`]: i/o, a lock, a
    ///   poisoned or corrupt file, a backend), or other rings kept writing
    ///   the same record or settings through all the ring's retries
    ///   ([`StoreError::Conflict`], [`StoreError::SettingsConflict`]): the
    ///   request was sound, and a retry may succeed. A 409 would tell the
    ///   caller to change its request; there is nothing to change.
    /// - For [`Error::Rejected`], the refused key's own status
    ///   ([`VerifyError::http_status`]: 401, 403, 429 or 503), as the
    ///   request path answers it.
    pub const fn http_status(&self) -> u16 {
        match self {
            Error::InvalidPrefix(_)
            | Error::InvalidScope(_)
            | Error::InvalidSensitiveResource(_)
            | Error::EmptyRequirement
            | Error::RequirementTooDeep
            | Error::InvalidKeyId(_)
            | Error::InvalidBinding(_)
            | Error::InvalidExpiry(_)
            | Error::ExpiryBeyondMax { .. }
            | Error::InvalidInput(_)
            | Error::ScopeWidening(_) => 400,
            Error::NotFound(_) => 404,
            Error::Revoked(_)
            | Error::AlreadyRotated(_)
            | Error::Expired(_)
            | Error::RegeneratedThisSecond(_) => 409,
            Error::StoreOfAnotherRing(_) | Error::Random(_) | Error::NoSigningKey => 500,
            Error::Rejected(e) => e.http_status(),
            Error::Storage(e) => match e {
                StoreError::InvalidImport { .. } => 400,
                StoreError::NotFound(_) => 404,
                StoreError::Duplicate(_) | StoreError::ForeignSettings => 500,
                StoreError::Conflict(_)
                | StoreError::SettingsConflict
                | StoreError::Locked(_)
                | StoreError::Corrupt { .. }
                | StoreError::Poisoned(_)
                | StoreError::Io { .. }
                | StoreError::Backend(_) => 503,
            },
        }
    }

    /// A stable machine-readable code, e.g. for a JSON error body.
    ///
    /// Codes are stable: a release may add codes (with variants) but never
    /// changes what one means or the status it comes with. A code is
    /// `snake_case`, names the kind of refusal only, and never holds key
    /// material or any part of the input. Each code has one meaning and
    /// one status; no code of this type's own is one of
    /// [`VerifyError::code`]'s, except that [`Error::Rejected`] answers
    /// with the refused key's code, as the request path does
    /// (`invalid_key`, `key_revoked`, `usage_exceeded`, ...), so a token
    /// endpoint tells the key's holder what the request path would; that
    /// it was an exchange the host knows from the endpoint.
    ///
    /// | code | status | meaning |
    /// | --- | --- | --- |
    /// | `invalid_prefix` | 400 | [`Error::InvalidPrefix`] |
    /// | `invalid_scope` | 400 | [`Error::InvalidScope`] |
    /// | `invalid_sensitive_resource` | 400 | [`Error::InvalidSensitiveResource`] |
    /// | `empty_requirement` | 400 | [`Error::EmptyRequirement`] |
    /// | `requirement_too_deep` | 400 | [`Error::RequirementTooDeep`] |
    /// | `invalid_key_id` | 400 | [`Error::InvalidKeyId`] |
    /// | `invalid_binding` | 400 | [`Error::InvalidBinding`] |
    /// | `invalid_expiry` | 400 | [`Error::InvalidExpiry`] |
    /// | `expiry_beyond_max` | 400 | [`Error::ExpiryBeyondMax`] |
    /// | `invalid_input` | 400 | [`Error::InvalidInput`] |
    /// | `scope_widening` | 400 | [`Error::ScopeWidening`] |
    /// | `invalid_import` | 400 | [`StoreError::InvalidImport`] |
    /// | `key_not_found` | 404 | [`Error::NotFound`], [`StoreError::NotFound`]: no key with this id |
    /// | `key_already_revoked` | 409 | [`Error::Revoked`]: the operation needs a key that is not revoked |
    /// | `key_already_expired` | 409 | [`Error::Expired`]: an expired key cannot be rotated or regenerated |
    /// | `key_already_rotated` | 409 | [`Error::AlreadyRotated`]: rotate its successor |
    /// | `regenerated_this_second` | 409 | [`Error::RegeneratedThisSecond`]: exchange again a second later |
    /// | `store_of_another_ring` | 500 | [`Error::StoreOfAnotherRing`], [`StoreError::ForeignSettings`]: the service is configured against another ring's store |
    /// | `no_signing_key` | 500 | [`Error::NoSigningKey`] |
    /// | `random_failed` | 500 | [`Error::Random`] |
    /// | `duplicate_key_id` | 500 | [`StoreError::Duplicate`] |
    /// | `store_conflict` | 503 | [`StoreError::Conflict`], [`StoreError::SettingsConflict`]: other writers kept winning; retry |
    /// | `storage_unavailable` | 503 | any other [`Error::Storage`]: the store failed; retry |
    /// | [`VerifyError::code`] | [`VerifyError::http_status`] | [`Error::Rejected`]: the key presented for an exchange was refused |
    pub const fn code(&self) -> &'static str {
        match self {
            Error::InvalidPrefix(_) => "invalid_prefix",
            Error::StoreOfAnotherRing(_) => "store_of_another_ring",
            Error::InvalidScope(_) => "invalid_scope",
            Error::InvalidSensitiveResource(_) => "invalid_sensitive_resource",
            Error::EmptyRequirement => "empty_requirement",
            Error::RequirementTooDeep => "requirement_too_deep",
            Error::InvalidKeyId(_) => "invalid_key_id",
            Error::InvalidBinding(_) => "invalid_binding",
            Error::InvalidExpiry(_) => "invalid_expiry",
            Error::ExpiryBeyondMax { .. } => "expiry_beyond_max",
            Error::InvalidInput(_) => "invalid_input",
            Error::NotFound(_) => "key_not_found",
            Error::Revoked(_) => "key_already_revoked",
            Error::AlreadyRotated(_) => "key_already_rotated",
            Error::Expired(_) => "key_already_expired",
            Error::ScopeWidening(_) => "scope_widening",
            Error::Random(_) => "random_failed",
            Error::NoSigningKey => "no_signing_key",
            Error::RegeneratedThisSecond(_) => "regenerated_this_second",
            Error::Rejected(e) => e.code(),
            Error::Storage(e) => match e {
                StoreError::InvalidImport { .. } => "invalid_import",
                StoreError::NotFound(_) => "key_not_found",
                StoreError::ForeignSettings => "store_of_another_ring",
                StoreError::Duplicate(_) => "duplicate_key_id",
                StoreError::Conflict(_) | StoreError::SettingsConflict => "store_conflict",
                StoreError::Locked(_)
                | StoreError::Corrupt { .. }
                | StoreError::Poisoned(_)
                | StoreError::Io { .. }
                | StoreError::Backend(_) => "storage_unavailable",
            },
        }
    }
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

    /// `echo` word for word: a run of up to 16 letters and digits shown as
    /// is, a longer one as its length, and never more than `max_chars`
    /// characters, however the limit falls (within a short run, just after
    /// one, or on a placeholder that fits exactly or by one too few).
    #[test]
    fn an_echo_shows_short_runs_and_the_length_of_long_ones_within_its_limit() {
        let a = |n: usize| "a".repeat(n);
        for (text, max, shown) in [
            ("abcdefghijklmnop".to_owned(), 100, "abcdefghijklmnop"),
            ("abcdefghijklmnopq".to_owned(), 100, "<17 characters>"),
            (format!("acme_{}", a(42)), 40, "acme_<42 characters>"),
            ("abc-def".to_owned(), 3, "abc"),
            ("x-abcdef".to_owned(), 4, "x-ab"),
            (a(20), 15, "<20 characters>"),
            (a(20), 14, ""),
            (format!("{}-xyz", a(20)), 16, "<20 characters>-"),
            ("é-ü:ö".to_owned(), 3, "é-ü"),
            (String::new(), 10, ""),
            (
                "a\nb\r\tc\u{1b}[31m\u{85}".to_owned(),
                100,
                "a\\nb\\r\\tc\\u{1b}[31m\\u{85}",
            ),
            ("ab\ncd".to_owned(), 3, "ab"),
            ("ab\ncd".to_owned(), 4, "ab\\n"),
            ("ab\u{7f}".to_owned(), 7, "ab"),
            ("ab\u{7f}".to_owned(), 8, "ab\\u{7f}"),
        ] {
            assert_eq!(super::echo(&text, max), shown, "{text:?} cut at {max}");
        }
    }

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

    /// Which variant, by an exhaustive match: a new variant fails to
    /// compile here until the tests below construct it.
    fn error_variant(e: &super::Error) -> usize {
        use super::Error as E;
        match e {
            E::InvalidPrefix(_) => 0,
            E::StoreOfAnotherRing(_) => 1,
            E::InvalidScope(_) => 2,
            E::InvalidSensitiveResource(_) => 3,
            E::EmptyRequirement => 4,
            E::RequirementTooDeep => 5,
            E::InvalidKeyId(_) => 6,
            E::InvalidBinding(_) => 7,
            E::InvalidExpiry(_) => 8,
            E::ExpiryBeyondMax { .. } => 9,
            E::InvalidInput(_) => 10,
            E::NotFound(_) => 11,
            E::Revoked(_) => 12,
            E::AlreadyRotated(_) => 13,
            E::Expired(_) => 14,
            E::ScopeWidening(_) => 15,
            E::Random(_) => 16,
            E::NoSigningKey => 17,
            E::RegeneratedThisSecond(_) => 18,
            E::Rejected(_) => 19,
            E::Storage(_) => 20,
        }
    }
    const ERROR_VARIANTS: usize = 21;

    fn store_variant(e: &super::StoreError) -> usize {
        use super::StoreError as S;
        match e {
            S::Duplicate(_) => 0,
            S::NotFound(_) => 1,
            S::Conflict(_) => 2,
            S::SettingsConflict => 3,
            S::Locked(_) => 4,
            S::Corrupt { .. } => 5,
            S::Poisoned(_) => 6,
            S::Io { .. } => 7,
            S::InvalidImport { .. } => 8,
            S::Backend(_) => 9,
            S::ForeignSettings => 10,
        }
    }
    const STORE_VARIANTS: usize = 11;

    fn verify_variant(e: &super::VerifyError) -> usize {
        use super::VerifyError as V;
        match e {
            V::Malformed(_) => 0,
            V::Invalid => 1,
            V::Expired => 2,
            V::Revoked => 3,
            V::Disabled => 4,
            V::InsufficientScope(_) => 5,
            V::UsageExceeded => 6,
            V::Unavailable => 7,
            V::BindingMismatch(_) => 8,
        }
    }
    const VERIFY_VARIANTS: usize = 9;

    fn every_verify_error() -> Vec<super::VerifyError> {
        use super::{MalformedReason, VerifyError as V};
        use crate::binding::Binding;
        vec![
            V::Malformed(MalformedReason::BadChecksum),
            V::Invalid,
            V::Expired,
            V::Revoked,
            V::Disabled,
            V::InsufficientScope(crate::Scope::new("billing:write").unwrap()),
            V::UsageExceeded,
            V::Unavailable,
            V::BindingMismatch(Binding::Network),
        ]
    }

    fn is_snake_case(code: &str) -> bool {
        code.starts_with(|c: char| c.is_ascii_lowercase())
            && !code.ends_with('_')
            && !code.contains("__")
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }

    #[test]
    fn every_error_has_a_pinned_status_and_a_code_unique_to_its_meaning() {
        use super::{Error as E, StoreError as S};
        use crate::KeyId;
        use std::path::PathBuf;

        let id = KeyId::from_u64(42);
        let path = || PathBuf::from("/var/lib/keys");
        // (error, status, code, meaning): two errors share a code exactly
        // when they share a meaning.
        let store = |e: S, status: u16, code: &'static str, meaning: &'static str| {
            (E::Storage(e), status, code, meaning)
        };
        let mut cases: Vec<(E, u16, &str, &str)> = vec![
            (
                E::InvalidPrefix("Acme".into()),
                400,
                "invalid_prefix",
                "prefix",
            ),
            (E::InvalidScope("a".into()), 400, "invalid_scope", "scope"),
            (
                E::InvalidSensitiveResource("*".into()),
                400,
                "invalid_sensitive_resource",
                "sensitive",
            ),
            (
                E::EmptyRequirement,
                400,
                "empty_requirement",
                "empty requirement",
            ),
            (
                E::RequirementTooDeep,
                400,
                "requirement_too_deep",
                "deep requirement",
            ),
            (E::InvalidKeyId("x".into()), 400, "invalid_key_id", "key id"),
            (
                E::InvalidBinding("x".into()),
                400,
                "invalid_binding",
                "binding",
            ),
            (E::InvalidExpiry("x"), 400, "invalid_expiry", "expiry"),
            (
                E::ExpiryBeyondMax {
                    max: Duration::days(90),
                },
                400,
                "expiry_beyond_max",
                "beyond max",
            ),
            (E::InvalidInput("x"), 400, "invalid_input", "input"),
            (
                E::ScopeWidening("a:b".into()),
                400,
                "scope_widening",
                "widening",
            ),
            (E::NotFound(id), 404, "key_not_found", "no such key"),
            (E::Revoked(id), 409, "key_already_revoked", "revoked"),
            (E::AlreadyRotated(id), 409, "key_already_rotated", "rotated"),
            (E::Expired(id), 409, "key_already_expired", "expired"),
            (
                E::RegeneratedThisSecond(id),
                409,
                "regenerated_this_second",
                "regenerated",
            ),
            (
                E::StoreOfAnotherRing("x".into()),
                500,
                "store_of_another_ring",
                "another ring",
            ),
            (E::Random("x".into()), 500, "random_failed", "random"),
            (E::NoSigningKey, 500, "no_signing_key", "no signing key"),
            store(
                S::InvalidImport {
                    line: 1,
                    reason: "x".into(),
                },
                400,
                "invalid_import",
                "import",
            ),
            store(S::NotFound(id), 404, "key_not_found", "no such key"),
            store(S::Duplicate(id), 500, "duplicate_key_id", "duplicate id"),
            store(S::Conflict(id), 503, "store_conflict", "conflict"),
            store(S::SettingsConflict, 503, "store_conflict", "conflict"),
            store(
                S::ForeignSettings,
                500,
                "store_of_another_ring",
                "another ring",
            ),
            store(
                S::Locked(path()),
                503,
                "storage_unavailable",
                "store failed",
            ),
            store(
                S::Corrupt {
                    path: path(),
                    offset: 7,
                    reason: "x",
                },
                503,
                "storage_unavailable",
                "store failed",
            ),
            store(
                S::Poisoned(path()),
                503,
                "storage_unavailable",
                "store failed",
            ),
            store(
                S::Io {
                    path: path(),
                    source: std::io::Error::other("x"),
                },
                503,
                "storage_unavailable",
                "store failed",
            ),
            store(
                S::Backend(Box::new(std::io::Error::other("x"))),
                503,
                "storage_unavailable",
                "store failed",
            ),
        ];
        // A refused exchange answers as the request path does.
        let verify_codes: Vec<&str> = every_verify_error().iter().map(|v| v.code()).collect();
        for v in every_verify_error() {
            let (status, code) = (v.http_status(), v.code());
            cases.push((E::Rejected(v), status, code, code));
        }

        let mut seen = [false; ERROR_VARIANTS];
        let mut seen_store = [false; STORE_VARIANTS];
        let mut seen_verify = [false; VERIFY_VARIANTS];
        for (e, status, code, _) in &cases {
            seen[error_variant(e)] = true;
            match e {
                E::Storage(s) => seen_store[store_variant(s)] = true,
                E::Rejected(v) => seen_verify[verify_variant(v)] = true,
                _ => {}
            }
            assert_eq!(e.http_status(), *status, "{e:?}");
            assert_eq!(e.code(), *code, "{e:?}");
            assert!(is_snake_case(code), "{code}");
            if !matches!(e, E::Rejected(_)) {
                assert!(!verify_codes.contains(code), "{code} is a VerifyError code");
            }
        }
        assert!(seen.iter().all(|&s| s), "an Error variant is not tested");
        assert!(
            seen_store.iter().all(|&s| s),
            "a StoreError variant is not tested"
        );
        assert!(
            seen_verify.iter().all(|&s| s),
            "a VerifyError variant is not tested"
        );
        for (a, a_status, a_code, a_meaning) in &cases {
            for (b, b_status, b_code, b_meaning) in &cases {
                assert_eq!(a_code == b_code, a_meaning == b_meaning, "{a:?} / {b:?}");
                if a_code == b_code {
                    assert_eq!(a_status, b_status, "{a:?} / {b:?}");
                }
            }
        }
    }

    /// `VerifyError`'s serialized form as documented: its code, then the
    /// reason, scope or binding it names, each reason and binding by its
    /// stable snake-case name (a JSON error body or an event carries
    /// them). Every variant, reason and binding is listed: the matches
    /// below fail to compile when one is added.
    #[test]
    fn verify_errors_serialize_to_the_documented_json() {
        use super::{MalformedReason as M, VerifyError as V};
        use crate::binding::Binding as B;

        let reasons = [
            (M::TooLong, "too_long"),
            (M::WrongLength, "wrong_length"),
            (M::WrongPrefix, "wrong_prefix"),
            (M::UnknownVersion, "unknown_version"),
            (M::BadAlphabet, "bad_alphabet"),
            (M::BadChecksum, "bad_checksum"),
            (M::IdOutOfRange, "id_out_of_range"),
        ];
        for (reason, _) in &reasons {
            match reason {
                M::TooLong
                | M::WrongLength
                | M::WrongPrefix
                | M::UnknownVersion
                | M::BadAlphabet
                | M::BadChecksum
                | M::IdOutOfRange => {}
            }
        }
        let bindings = [
            (B::ClientCertificate, "client_certificate"),
            (B::Network, "network"),
            (B::NotPresented, "not_presented"),
        ];
        for (binding, _) in &bindings {
            match binding {
                B::ClientCertificate | B::Network | B::NotPresented => {}
            }
        }
        let mut cases: Vec<(V, String)> = vec![
            (V::Invalid, r#"{"code":"invalid_key"}"#.into()),
            (V::Expired, r#"{"code":"key_expired"}"#.into()),
            (V::Revoked, r#"{"code":"key_revoked"}"#.into()),
            (V::Disabled, r#"{"code":"key_disabled"}"#.into()),
            (
                V::InsufficientScope(crate::Scope::new("invoices:write").unwrap()),
                r#"{"code":"insufficient_scope","scope":"invoices:write"}"#.into(),
            ),
            (V::UsageExceeded, r#"{"code":"usage_exceeded"}"#.into()),
            (V::Unavailable, r#"{"code":"use_not_recorded"}"#.into()),
        ];
        for (reason, name) in reasons {
            let json = format!(r#"{{"code":"malformed_key","reason":"{name}"}}"#);
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{name}\"")
            );
            cases.push((V::Malformed(reason), json));
        }
        for (binding, name) in bindings {
            let json = format!(r#"{{"code":"binding_mismatch","binding":"{name}"}}"#);
            assert_eq!(
                serde_json::to_string(&binding).unwrap(),
                format!("\"{name}\"")
            );
            cases.push((V::BindingMismatch(binding), json));
        }
        let mut seen = [false; VERIFY_VARIANTS];
        for (error, json) in &cases {
            seen[verify_variant(error)] = true;
            assert_eq!(&serde_json::to_string(error).unwrap(), json, "{error:?}");
        }
        assert!(
            seen.iter().all(|&s| s),
            "a VerifyError variant is not tested"
        );
    }

    #[test]
    fn no_code_or_message_repeats_a_key_pasted_into_a_field() {
        use crate::store::{FileStore, ImportMode};
        use crate::{CertFingerprint, KeyRing, MemoryStore, Network, NewKey, Requirement, Scope};

        let ring = KeyRing::builder("acme")
            .signing_key(1, [9; 32])
            .build(MemoryStore::new())
            .unwrap();
        let issued = ring.issue(NewKey::new("o")).unwrap();
        let key = issued.secret.expose();
        let body = &key["acme_".len()..];
        // A key of another ring with the prefix: well formed, unknown here.
        let stranger = KeyRing::builder("acme").build(MemoryStore::new()).unwrap();
        let unknown = stranger.issue(NewKey::new("o")).unwrap();
        ring.disable(issued.key.id).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = FileStore::open(dir.path().join("keys")).unwrap();
        let built = |b: crate::KeyRingBuilder| b.build(MemoryStore::new()).err().unwrap();

        let refused: Vec<super::Error> = vec![
            built(KeyRing::builder(key)),
            built(KeyRing::builder(format!("x {key}"))),
            built(KeyRing::builder("acme").sensitive([key])),
            Scope::new(key).unwrap_err(),
            Scope::new(&format!("{key}:read")).unwrap_err(),
            Scope::new(&format!("invoices:{key}")).unwrap_err(),
            Requirement::scope(key).unwrap_err(),
            key.parse::<crate::KeyId>().unwrap_err(),
            body.parse::<crate::KeyId>().unwrap_err(),
            CertFingerprint::from_hex(key).unwrap_err(),
            Network::parse(key).unwrap_err(),
            Network::parse(&format!("{key}/24")).unwrap_err(),
            ring.issue(NewKey::new(format!("{key}\0"))).unwrap_err(),
            ring.revoke(issued.key.id, &format!("leaked: {key}"))
                .unwrap_err(),
            ring.exchange(unknown.secret.expose(), Duration::minutes(5))
                .unwrap_err(),
            ring.exchange(key, Duration::minutes(5)).unwrap_err(),
            file.import(key.as_bytes(), ImportMode::Merge)
                .unwrap_err()
                .into(),
            file.import(
                format!("{{\"keyward_export\":1}}\n{key}\n").as_bytes(),
                ImportMode::Merge,
            )
            .unwrap_err()
            .into(),
        ];
        for e in &refused {
            let mut shown = vec![e.code().to_owned(), e.to_string(), format!("{e:?}")];
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                shown.push(s.to_string());
                source = s.source();
            }
            for text in &shown {
                // Not the key, nor any 17 characters of its body (an echo
                // shows at most 16 letters and digits in a run).
                assert!(
                    !(0..=body.len() - 17).any(|i| text.contains(&body[i..i + 17])),
                    "{text}"
                );
            }
        }
        let codes: Vec<&str> = refused.iter().map(super::Error::code).collect();
        assert_eq!(
            codes,
            [
                "invalid_prefix",
                "invalid_prefix",
                "invalid_sensitive_resource",
                "invalid_scope",
                "invalid_scope",
                "invalid_scope",
                "invalid_scope",
                "invalid_key_id",
                "invalid_key_id",
                "invalid_binding",
                "invalid_binding",
                "invalid_binding",
                "invalid_input",
                "invalid_input",
                "invalid_key",
                "key_disabled",
                "invalid_import",
                "invalid_import",
            ]
        );
    }
}
