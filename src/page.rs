//! Pages of a listing: [`ListCursor`] and [`Page`].
//!
//! Why a cursor of (created_at, id) and not an offset: the listing's order
//! is by those two fields, neither changes over a record's life, and ids
//! are unique, so "the keys after this one" names the same keys whatever
//! was issued or deleted since the previous page. An offset would shift
//! by one for each key deleted before it (a key skipped) or issued before
//! it (a key repeated). The cursor holds nothing else, so the server keeps
//! no state between pages, and nothing in it is secret.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;
use crate::key::{Key, Nanos};
use crate::token::KeyId;

/// Where a page of [`KeyRing::list_page`](crate::KeyRing::list_page)
/// ended: the listing goes on with the keys after it
/// ([`ListFilter::after`](crate::ListFilter::after)).
///
/// It is the position of one key in the listing's order, oldest first:
/// its creation time and id. Neither changes while the key lives, so a
/// cursor stays valid however many keys are issued or deleted between two
/// pages, the key it was taken from included, and the server keeps no
/// state for it. It holds no secret.
///
/// For a web client it has an opaque text form (`Display`, and `FromStr`,
/// which refuses anything it did not print with
/// [`Error::InvalidInput`] and never panics), also its serde form. The
/// text is a version digit and 32 lowercase hex digits; clients should
/// pass it back unread, as its layout may change in a later version.
///
/// ```
/// use keyward::{KeyRing, ListCursor, ListFilter, MemoryStore, NewKey};
/// let ring = KeyRing::builder("acme").build(MemoryStore::new())?;
/// for _ in 0..3 {
///     ring.issue(NewKey::new("acct_42"))?;
/// }
/// let first = ring.list_page(&ListFilter::new(), 2)?;
/// assert_eq!(first.keys.len(), 2);
/// // To the client and back.
/// let text = first.next.expect("a key is left").to_string();
/// let cursor: ListCursor = text.parse()?;
/// let second = ring.list_page(&ListFilter::new().after(cursor), 2)?;
/// assert_eq!(second.keys.len(), 1);
/// assert_eq!(second.next, None);
/// assert!("not a cursor".parse::<ListCursor>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListCursor {
    // Field order is the listing's order: the derived `Ord` compares
    // `created_at` first.
    created_at: Nanos,
    id: KeyId,
}

/// The text form's version digit.
const VERSION: u8 = b'1';
/// The text form's length: the version, then two fields of 16 hex digits.
const TEXT_LEN: usize = 1 + 16 + 16;

impl ListCursor {
    /// The position of this record in the listing's order.
    pub(crate) fn of(key: &Key) -> ListCursor {
        ListCursor {
            created_at: key.created_at,
            id: key.id,
        }
    }
}

impl From<&Key> for ListCursor {
    /// The cursor just after `key`: a listing that goes on from it starts
    /// with the key that follows `key`, whether `key` still exists or not.
    fn from(key: &Key) -> ListCursor {
        ListCursor::of(key)
    }
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bits of the signed time, so that every instant has one form.
        write!(
            f,
            "1{:016x}{:016x}",
            self.created_at as u64,
            self.id.as_u64()
        )
    }
}

impl FromStr for ListCursor {
    type Err = Error;

    /// Parses the form `Display` prints, and only that: any other length,
    /// version or character (an upper-case or `+` included, which
    /// `u64::from_str_radix` would take) is refused. The input is not
    /// echoed in the error: it comes from a client and could be anything
    /// pasted, a key included.
    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidInput("not a list cursor");
        let bytes = s.as_bytes();
        if bytes.len() != TEXT_LEN
            || bytes[0] != VERSION
            || !bytes[1..]
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid());
        }
        // ASCII by the check above, so slicing at any index is on a char
        // boundary.
        let field = |at: usize| u64::from_str_radix(&s[at..at + 16], 16).map_err(|_| invalid());
        Ok(ListCursor {
            created_at: field(1)? as Nanos,
            id: KeyId::from_u64(field(17)?),
        })
    }
}

impl Serialize for ListCursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListCursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One page of a listing, from [`KeyRing::list_page`](crate::KeyRing::list_page).
///
/// Serializes as `{"keys": [...], "next": "<cursor>"}` (`next` is `null`
/// on the last page), for an admin API to return as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Page {
    /// The keys of this page, oldest first (as [`KeyRing::list`](crate::KeyRing::list)
    /// orders them). Never includes a secret.
    pub keys: Vec<Key>,
    /// Where the next page starts (pass it to
    /// [`ListFilter::after`](crate::ListFilter::after)), or `None` when no
    /// key matching the filter came after this page's last when the page
    /// was taken. A key issued later usually sorts after every key listed
    /// so far and so appears on a page still to come, or on a page asked
    /// for after the last one; not if the clock went back, or gave the
    /// same instant to it and to a listed key with a larger id (possible
    /// with a coarse clock), nor a key imported with a creation time before
    /// this page's last. Either way the other keys are each listed once.
    pub next: Option<ListCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(created_at: Nanos, id: u64) -> ListCursor {
        ListCursor {
            created_at,
            id: KeyId::from_u64(id),
        }
    }

    #[test]
    fn text_form_round_trips_at_the_extremes() {
        for c in [
            cursor(0, 0),
            cursor(-1, 1),
            cursor(i64::MIN, u64::MAX),
            cursor(i64::MAX, 0),
            cursor(1_767_225_600_000_000_000, 0x0123_4567_89ab_cdef),
        ] {
            let text = c.to_string();
            assert_eq!(text.len(), TEXT_LEN, "{text}");
            assert_eq!(text.parse::<ListCursor>().unwrap(), c, "{text}");
        }
        assert_eq!(
            cursor(1, 2).to_string(),
            "100000000000000010000000000000002"
        );
    }

    #[test]
    fn orders_by_creation_time_then_id() {
        assert!(cursor(1, 9) < cursor(2, 0));
        assert!(cursor(2, 0) < cursor(2, 1));
        assert!(cursor(-5, 0) < cursor(0, 0));
    }
}
