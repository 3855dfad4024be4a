//! Events: what happened to which key, for audit logs and alerting.
//!
//! The ring calls an [`EventSink`] synchronously, after the operation took
//! effect. Events carry key ids and owners, never a secret: a failed
//! verification reports the reason and, when the presented string parsed,
//! the id it named.

use std::fmt;
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

use crate::error::VerifyError;
use crate::expiry::ExpiryPolicy;
use crate::token::KeyId;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        /// The new default.
        policy: ExpiryPolicy,
    },
    /// A verification succeeded (only when the ring reports successes).
    Verified,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
/// in [`EventKind::StoreFailed`].
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The key concerned, when known.
    pub key: Option<KeyId>,
    /// The key's owner, when known.
    pub owner: Option<String>,
    /// When, by the ring's clock.
    pub at: OffsetDateTime,
    /// Who did it, when the operation was made through
    /// [`KeyRing::by`](crate::KeyRing::by).
    pub actor: Option<String>,
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
/// lock: a sink that calls back into the same ring, for an administrative
/// operation or to verify a key with a use limit, deadlocks. Hand such
/// work to another thread. Dropping the ring waits for its background
/// threads, so a sink that blocks there (a full channel that the dropping
/// thread would drain) holds up the drop. A sink that panics on a
/// background thread does not stop it.
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
