//! Leak response: find keyward keys in text (logs, diffs, chat exports),
//! redact them, and (through [`KeyRing::revoke_leaked`](crate::KeyRing::revoke_leaked))
//! revoke the ones that leaked.
//!
//! A key is recognised by its shape and its checksum, offline and without a
//! store: the CRC32 over everything before the last six characters must
//! match them, which random text does with odds of one in 4.3 billion per
//! candidate, and a typo (any single changed character) never does.
//!
//! # For secret-scanning services
//!
//! An API key matches
//!
//! ```text
//! \b[a-z][a-z0-9_]{0,31}_1[0-9A-Za-z]{41}\b
//! ```
//!
//! (prefix, `_`, body version `1`, then 11 id, 24 secret and 6 checksum
//! characters). Confirm a match offline: take the CRC32 (IEEE 802.3, the
//! zlib / `crc32fast` one) of the match without its last six characters,
//! write it in base62 (`0-9A-Za-z`, most significant digit first) padded to
//! six digits with `0`, and compare with the last six characters. Access
//! tokens match `\b[a-z][a-z0-9_]{0,31}_T[0-9A-Za-z]{78,}\b` and carry the
//! same checksum at their end.

use std::ops::Range;

use crate::token::{self, KeyId};

/// What a found string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FoundKind {
    /// A long-lived API key.
    ApiKey,
    /// A short-lived access token from an exchange.
    AccessToken,
}

/// A keyward key or token found in a text. Holds positions and public
/// parts only, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Found {
    /// Byte range of the whole key in the text.
    pub range: Range<usize>,
    /// Byte range of the part a redaction removes (secret and checksum, or
    /// a token's claims and MAC).
    pub secret_range: Range<usize>,
    /// The key's prefix.
    pub prefix: String,
    /// The id of the key (for a token: of the key it was exchanged for).
    pub key_id: KeyId,
    /// API key or access token.
    pub kind: FoundKind,
}

/// Every keyward API key and access token in `text`, in order, with byte
/// positions. Near-misses (a changed character, a wrong checksum) and
/// random text are not reported.
///
/// ```
/// use keyward::{KeyRing, MemoryStore, NewKey, scan};
/// let ring = KeyRing::builder("acme").build(MemoryStore::new())?;
/// let issued = ring.issue(NewKey::new("o"))?;
/// let log = format!("GET /v1/invoices?api_key={} 200", issued.secret.expose());
/// let found = scan(&log);
/// assert_eq!(found.len(), 1);
/// assert_eq!(found[0].key_id, issued.key.id());
/// assert_eq!(&log[found[0].range.clone()], issued.secret.expose());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scan(text: &str) -> Vec<Found> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        if !is_word(bytes[start]) {
            start += 1;
            continue;
        }
        let end = start + bytes[start..].iter().take_while(|&&b| is_word(b)).count();
        if let Some(hit) = token::recognise(&bytes[start..end]) {
            found.push(Found {
                range: start + hit.start..end,
                secret_range: start + hit.secret_start..end,
                prefix: String::from_utf8_lossy(&bytes[start + hit.start..start + hit.prefix_end])
                    .into_owned(),
                key_id: hit.key_id,
                kind: if hit.token {
                    FoundKind::AccessToken
                } else {
                    FoundKind::ApiKey
                },
            });
        }
        start = end;
    }
    found
}

/// `text` with the secret part of every found key replaced by
/// `[redacted]`, keeping prefix and id so a log line still says which key it
/// was: `acme_1JFA4D1omlLd[redacted]`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for hit in scan(text) {
        out.push_str(&text[copied..hit.secret_range.start]);
        out.push_str("[redacted]");
        copied = hit.secret_range.end;
    }
    out.push_str(&text[copied..]);
    out
}

/// The characters a key is made of; a key is a whole run of them.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
