#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access;
mod binding;
mod clock;
mod error;
mod event;
mod expiry;
mod hash;
mod key;
mod page;
mod ring;
mod scan;
mod scope;
pub mod store;
mod token;

pub use crate::access::{AccessClaims, AccessToken};
pub use crate::binding::{Binding, Bindings, CertFingerprint, Network};
#[cfg(feature = "coarse-clock")]
pub use crate::clock::CoarseClock;
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::error::{Error, MalformedReason, StoreError, VerifyError};
pub use crate::event::{Event, EventKind, EventLog, EventSink, StoreTask};
pub use crate::expiry::ExpiryPolicy;
pub use crate::hash::{HashFormatError, KeyHash};
pub use crate::key::{
    Contact, Issued, Key, KeyUpdate, NewKey, Reminder, Rotation, Status, Verified,
};
pub use crate::page::{ListCursor, Page};
pub use crate::ring::{
    Acting, KeyRing, KeyRingBuilder, KeyState, ListFilter, RequestContext, TokenRequest,
};
pub use crate::scan::{Found, FoundKind, redact, scan};
pub use crate::scope::{Requirement, Scope, ScopeSet};
pub use crate::store::{Change, FileStore, KeyStore, Lent, MemoryStore, RingSettings, StoredKey};
pub use crate::token::{KeyId, MAX_KEY_LEN, MAX_PREFIX_LEN, Secret};

/// The `time` crate, re-exported: its types appear in keyward's API.
pub use time;
