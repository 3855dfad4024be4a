//! Events: what happened to which key, for audit logs and alerting.
//!
//! The ring calls an [`EventSink`] synchronously, after the operation took
//! effect. Events carry key ids and owners, never a secret: a failed
//! verification reports the reason and, when the presented string parsed,
//! the id it named.
//!
//! Events serialize (serde) to a flat JSON object, described on [`Event`],
//! for a JSON log or a SIEM. They do not deserialize: an event is the
//! ring's report, and a host that builds one from text could put back an
//! actor the ring redacted.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use serde::{Serialize, Serializer};
use time::{OffsetDateTime, UtcOffset};

use crate::error::VerifyError;
use crate::expiry::ExpiryPolicy;
use crate::token::KeyId;

/// What happened.
///
/// Serialized into its [`Event`] (see there): `"kind"` is the variant's
/// name in snake case (`"issued"`, `"owner_revoked"`, `"verify_failed"`,
/// ...) and a variant's fields follow it under their own names. A
/// [`VerifyFailed`](EventKind::VerifyFailed) adds its error's fields
/// (see [`VerifyError`]). No variant has a field named like one of the
/// event's own (`kind`, `key`, `owner`, `at`, `actor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A key was issued.
    Issued,
    /// A key was rotated: `to` is its successor; the event's key is the old
    /// one.
    Rotated {
        /// The new key.
        to: KeyId,
    },
    /// A key got a new secret; the old one stopped working.
    Regenerated,
    /// A key was disabled.
    Disabled,
    /// A disabled key was enabled again.
    Enabled,
    /// A key was revoked.
    Revoked {
        /// Why, as given.
        reason: String,
    },
    /// A key was deleted.
    Deleted,
    /// A key was found in leaked text (and then revoked, in its own event).
    Exposed,
    /// A key's name, description, contact, metadata, bindings or scopes
    /// changed.
    Updated,
    /// Every key of an owner was revoked (each also has its own `Revoked`
    /// event); the event's owner says whose.
    OwnerRevoked {
        /// How many keys this revoked.
        count: usize,
    },
    /// Every key in the ring was revoked at once.
    AllRevoked {
        /// The new revoke-all epoch.
        epoch: u64,
    },
    /// The ring's default expiry policy changed.
    PolicyChanged {
        /// The new default, in its serialized form (as in a [`Key`](crate::Key)).
        policy: ExpiryPolicy,
    },
    /// A key passed its verification, in a `verify` or an exchange (only
    /// when the ring [reports successes](crate::KeyRingBuilder::report_successes)).
    Verified,
    /// An access token passed a check, plain or strict (only when the ring
    /// [reports successes](crate::KeyRingBuilder::report_successes)). The
    /// event's key is the one the token was exchanged for, and its owner
    /// the one the token's signed claims name.
    TokenVerified,
    /// A verification failed, and why.
    VerifyFailed(VerifyError),
    /// The store failed a read or write the ring made on its own, which no
    /// caller sees the error of: the background reload or usage flush, or
    /// the write of a limited key's use (the event's key; the verify is
    /// refused as [`VerifyError::Unavailable`], reported in its own event
    /// after this one). A background task reports when it starts failing,
    /// not on each retry, and [`EventKind::StoreRecovered`] when it next
    /// succeeds.
    StoreFailed {
        /// What the ring was doing.
        task: StoreTask,
        /// The store's error, with its causes (a path, an operating-system
        /// error), never key material.
        error: String,
    },
    /// A background task that had failed (see [`EventKind::StoreFailed`])
    /// succeeded again.
    StoreRecovered {
        /// Which task.
        task: StoreTask,
    },
}

/// The ring's own uses of the store, named in [`EventKind::StoreFailed`].
///
/// Serialized as its variant's name in snake case: `"settings_reload"`,
/// `"usage_flush"`, `"limited_use"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreTask {
    /// The background reload of the ring settings, each second: while it
    /// fails, a revoke-all or a new default policy written by another ring
    /// on the same store does not reach this one.
    SettingsReload,
    /// Writing usage (use counts, last use) back to the store and flushing
    /// it: by the background thread, or when the ring is dropped. While it
    /// fails, usage accumulates in memory and a crash loses it.
    UsageFlush,
    /// Writing the use of a key with a use limit, during its verify.
    LimitedUse,
}

impl StoreTask {
    /// A stable, lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreTask::SettingsReload => "settings reload",
            StoreTask::UsageFlush => "usage flush",
            StoreTask::LimitedUse => "limited use",
        }
    }
}

impl fmt::Display for StoreTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error and its causes, each after a `: `, as a store error is shown
/// in [`EventKind::StoreFailed`], with any key or access token in them
/// redacted: a host's store may quote a row or a request in its errors.
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    crate::scan::redact(&text)
}

/// One event.
///
/// # JSON form
///
/// An event serializes (e.g. with `serde_json`) to one flat object, a
/// stable form for audit logs: `kind`, the [`EventKind`] variant's name in
/// snake case, then that variant's fields, then `key` (the [`KeyId`]),
/// `owner`, `at` (RFC 3339, in UTC, as a [`Key`](crate::Key)'s instants)
/// and `actor`. A field without a value (no key, no owner, no actor) is
/// left out, not `null`. A release may add kinds and fields, never rename
/// or remove one.
///
/// ```json
/// {"kind":"issued","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z","actor":"alice"}
/// {"kind":"revoked","reason":"contract ended","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z"}
/// {"kind":"verify_failed","code":"invalid_key","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00.25Z"}
/// {"kind":"all_revoked","epoch":1,"at":"2026-01-01T00:00:00Z"}
/// ```
///
/// No event holds key material: keys are named by their id, a key or
/// access token pasted into the actor is redacted, and the free text a
/// host gives (a revocation's reason, an owner) is refused when it holds
/// one.
///
/// Events serialize only: there is no `Deserialize`. An event is the
/// ring's report; one rebuilt from text could carry an actor that the
/// ring would have redacted, and a log reader that does not know a newer
/// release's kinds would fail on them. Read logs back as plain JSON
/// (`serde_json::Value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The key concerned, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyId>,
    /// The key's owner, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When, by the ring's clock.
    #[serde(serialize_with = "rfc3339_utc")]
    pub at: OffsetDateTime,
    /// Who did it, when the operation was made through
    /// [`KeyRing::by`](crate::KeyRing::by).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// An instant in RFC 3339, in UTC: a host's clock may answer in another
/// offset, and one with seconds (`+00:00:30`) has no RFC 3339 form. Also
/// for [`AccessClaims`](crate::AccessClaims)' instants, whose fields a host
/// can set.
pub(crate) fn rfc3339_utc<S: Serializer>(
    at: &OffsetDateTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let utc = at.checked_to_offset(UtcOffset::UTC).unwrap_or(*at);
    time::serde::rfc3339::serialize(&utc, serializer)
}

impl Event {
    pub(crate) fn new(kind: EventKind, at: OffsetDateTime) -> Event {
        Event {
            kind,
            key: None,
            owner: None,
            at,
            actor: None,
        }
    }

    /// Sets the actor, with any key or access token in it redacted (an
    /// actor is the host's text, given to [`KeyRing::by`](crate::KeyRing::by)
    /// unchecked: a key pasted there must not reach the event sink).
    pub(crate) fn actor(mut self, actor: Option<&str>) -> Event {
        self.actor = actor.map(|actor| shown_actor(actor).into_owned());
        self
    }

    pub(crate) fn key(mut self, id: KeyId) -> Event {
        self.key = Some(id);
        self
    }

    pub(crate) fn owner(mut self, owner: &str) -> Event {
        self.owner = Some(owner.to_owned());
        self
    }
}

/// Receives the ring's events. Called on the thread that did the operation,
/// so keep it quick (hand the event to a channel for slow sinks), and
/// from the ring's background threads for store failures.
///
/// Administrative operations call it while they hold the ring's write
/// lock, so a slow sink holds up the ring's other writes too (other
/// administrative operations, the verifies of keys with a use limit, the
/// usage flush), and a sink that calls back into the same ring, for an
/// administrative operation or to verify a key with a use limit,
/// deadlocks. Hand such work to another thread. Verifications (of keys
/// and of access tokens), exchanges and the background threads call it
/// holding no lock of the ring. Dropping the ring waits for its background
/// threads, so a sink that blocks there (a full channel that the dropping
/// thread would drain) holds up the drop. A sink that panics on a
/// background thread does not stop it.
///
/// A sink that panics on the thread of an operation unwinds into the
/// operation's caller after the operation took effect: the store holds
/// the change and the ring goes on working, but the caller gets no result
/// (a new secret from [`rotate`](crate::KeyRing::rotate) or
/// [`regenerate`](crate::KeyRing::regenerate) is lost: recover as they
/// document for a storage error), and the events the operation had still
/// to send (a rotation's `Issued`, the other keys' `Revoked` and the
/// `OwnerRevoked` of a `revoke_owner`) are not sent.
pub trait EventSink: Send + Sync {
    /// Records one event.
    fn record(&self, event: &Event);
}

impl<T: EventSink + ?Sized> EventSink for std::sync::Arc<T> {
    fn record(&self, event: &Event) {
        (**self).record(event);
    }
}

/// An [`EventSink`] that keeps every event in memory, for tests and small
/// tools.
#[derive(Default)]
pub struct EventLog(Mutex<Vec<Event>>);

impl EventLog {
    /// An empty log.
    pub fn new() -> EventLog {
        EventLog::default()
    }

    /// A copy of the events so far, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl EventSink for EventLog {
    fn record(&self, event: &Event) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
    }
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("EventLog").field("events", &n).finish()
    }
}

/// An actor as events and `Debug` show it: with any key or access token in
/// it redacted ([`redact`](crate::redact)).
pub(crate) fn shown_actor(actor: &str) -> std::borrow::Cow<'_, str> {
    if crate::scan::scan(actor).is_empty() {
        std::borrow::Cow::Borrowed(actor)
    } else {
        std::borrow::Cow::Owned(crate::scan::redact(actor))
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;
    use time::macros::{date, datetime};

    use super::*;
    use crate::binding::Binding;
    use crate::error::MalformedReason;

    const T: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    /// A host store's error that quotes a key (a row, a request) reaches
    /// `StoreFailed` with the key's secret part redacted, at any depth of
    /// its causes.
    #[test]
    fn a_store_error_quoting_a_key_is_redacted() {
        let ring = crate::KeyRing::builder("acme")
            .flush_interval(None)
            .build(crate::MemoryStore::new())
            .unwrap();
        let secret = ring.issue(crate::NewKey::new("o")).unwrap().secret;
        let key = secret.expose();
        #[derive(Debug)]
        struct Quoting(String, Option<std::io::Error>);
        impl fmt::Display for Quoting {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_ref().map(|e| e as _)
            }
        }
        let error = Quoting(
            "insert failed".into(),
            Some(std::io::Error::other(format!("duplicate row ({key})"))),
        );
        let text = describe(&error);
        assert!(
            text.starts_with("insert failed: duplicate row (acme_"),
            "{text}"
        );
        assert!(text.contains("[redacted])"), "{text}");
        assert!(!text.contains(key), "{text}");
    }

    fn id(text: &str) -> KeyId {
        text.parse().unwrap()
    }

    fn json(event: &Event) -> String {
        serde_json::to_string(event).unwrap()
    }

    /// The JSON form documented on `Event`, written out by hand: one flat
    /// object, `kind` first, then the variant's fields, then key, owner,
    /// at and actor, absent ones left out. Each kind at least once.
    #[test]
    fn events_serialize_to_the_documented_json() {
        let key = id("0Oa2wCGYzlq");
        let cases = [
            (
                Event::new(EventKind::Issued, T)
                    .key(key)
                    .owner("acct_42")
                    .actor(Some("alice")),
                r#"{"kind":"issued","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z","actor":"alice"}"#,
            ),
            (
                Event::new(
                    EventKind::Rotated {
                        to: id("0Ob3xDHZamr"),
                    },
                    T,
                )
                .key(key)
                .owner("acct_42"),
                r#"{"kind":"rotated","to":"0Ob3xDHZamr","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::Regenerated, T).key(key),
                r#"{"kind":"regenerated","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::Disabled, T).key(key),
                r#"{"kind":"disabled","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::Enabled, T).key(key),
                r#"{"kind":"enabled","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::Revoked {
                        reason: "contract ended".into(),
                    },
                    T,
                )
                .key(key)
                .owner("acct_42")
                .actor(Some("bob")),
                r#"{"kind":"revoked","reason":"contract ended","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z","actor":"bob"}"#,
            ),
            (
                Event::new(EventKind::Deleted, T).key(key),
                r#"{"kind":"deleted","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::Exposed, T).key(key),
                r#"{"kind":"exposed","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::Updated, T).key(key),
                r#"{"kind":"updated","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::OwnerRevoked { count: 3 }, T)
                    .owner("acct_42")
                    .actor(Some("alice")),
                r#"{"kind":"owner_revoked","count":3,"owner":"acct_42","at":"2026-01-01T00:00:00Z","actor":"alice"}"#,
            ),
            (
                Event::new(EventKind::AllRevoked { epoch: 1 }, T),
                r#"{"kind":"all_revoked","epoch":1,"at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::PolicyChanged {
                        policy: ExpiryPolicy::days(30),
                    },
                    T,
                ),
                r#"{"kind":"policy_changed","policy":{"lifetime":"P30D"},"at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::PolicyChanged {
                        policy: ExpiryPolicy::EndOfDate(date!(2026 - 03 - 31)),
                    },
                    T,
                ),
                r#"{"kind":"policy_changed","policy":{"end_of_date":"2026-03-31"},"at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::PolicyChanged {
                        policy: ExpiryPolicy::Never,
                    },
                    T,
                ),
                r#"{"kind":"policy_changed","policy":"never","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::Verified, T).key(key).owner("acct_42"),
                r#"{"kind":"verified","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::TokenVerified, T)
                    .key(key)
                    .owner("acct_42"),
                r#"{"kind":"token_verified","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::VerifyFailed(VerifyError::Invalid), T).key(key),
                r#"{"kind":"verify_failed","code":"invalid_key","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::VerifyFailed(VerifyError::Malformed(MalformedReason::BadChecksum)),
                    T,
                ),
                r#"{"kind":"verify_failed","code":"malformed_key","reason":"bad_checksum","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::VerifyFailed(VerifyError::InsufficientScope(
                        "invoices:write".parse().unwrap(),
                    )),
                    T,
                )
                .key(key)
                .owner("acct_42"),
                r#"{"kind":"verify_failed","code":"insufficient_scope","scope":"invoices:write","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::VerifyFailed(VerifyError::BindingMismatch(
                        Binding::ClientCertificate,
                    )),
                    T,
                )
                .key(key)
                .owner("acct_42"),
                r#"{"kind":"verify_failed","code":"binding_mismatch","binding":"client_certificate","key":"0Oa2wCGYzlq","owner":"acct_42","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(EventKind::VerifyFailed(VerifyError::Unavailable), T).key(key),
                r#"{"kind":"verify_failed","code":"use_not_recorded","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::StoreFailed {
                        task: StoreTask::UsageFlush,
                        error: "i/o error on keys.kw: disk full".into(),
                    },
                    T,
                ),
                r#"{"kind":"store_failed","task":"usage_flush","error":"i/o error on keys.kw: disk full","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::StoreFailed {
                        task: StoreTask::LimitedUse,
                        error: "locked".into(),
                    },
                    T,
                )
                .key(key),
                r#"{"kind":"store_failed","task":"limited_use","error":"locked","key":"0Oa2wCGYzlq","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                Event::new(
                    EventKind::StoreRecovered {
                        task: StoreTask::SettingsReload,
                    },
                    T,
                ),
                r#"{"kind":"store_recovered","task":"settings_reload","at":"2026-01-01T00:00:00Z"}"#,
            ),
        ];
        for (event, expected) in &cases {
            assert_eq!(&json(event), expected, "{event:?}");
        }
    }

    /// A task's stable name, as `as_str` and `Display` give it.
    #[test]
    fn store_tasks_have_stable_names() {
        for (task, name) in [
            (StoreTask::SettingsReload, "settings reload"),
            (StoreTask::UsageFlush, "usage flush"),
            (StoreTask::LimitedUse, "limited use"),
        ] {
            assert_eq!(task.as_str(), name);
            assert_eq!(task.to_string(), name);
        }
    }

    /// An `EventLog` keeps what it is given, oldest first, also through
    /// an `Arc` (as a ring holds its sink), and its `Debug` shows only how
    /// many events it holds.
    #[test]
    fn an_event_log_keeps_events_in_order_and_debug_counts_them() {
        let log = std::sync::Arc::new(EventLog::new());
        assert_eq!(format!("{log:?}"), "EventLog { events: 0 }");
        let first = Event::new(EventKind::Issued, T).owner("acct_42");
        let second = Event::new(EventKind::Deleted, T + Duration::seconds(1));
        let sink: &dyn EventSink = &log;
        sink.record(&first);
        sink.record(&second);
        assert_eq!(log.events(), [first, second]);
        assert_eq!(format!("{log:?}"), "EventLog { events: 2 }");
    }

    /// `at` is RFC 3339 in UTC whatever offset the host's clock answered
    /// in (one with seconds has no RFC 3339 form at all), with the
    /// fraction of a second when there is one.
    #[test]
    fn event_time_is_rfc3339_in_utc() {
        let cases = [
            (
                datetime!(2026-01-01 01:30:00.25 +01:30),
                r#"{"kind":"issued","at":"2026-01-01T00:00:00.25Z"}"#,
            ),
            (
                datetime!(2026-01-01 00:00:30 +00:00:30),
                r#"{"kind":"issued","at":"2026-01-01T00:00:00Z"}"#,
            ),
            (
                T + Duration::nanoseconds(1),
                r#"{"kind":"issued","at":"2026-01-01T00:00:00.000000001Z"}"#,
            ),
        ];
        for (at, expected) in cases {
            assert_eq!(json(&Event::new(EventKind::Issued, at)), expected);
        }
    }
}
