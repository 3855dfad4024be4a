//! Leak response: find keyward keys in text (logs, diffs, chat exports),
//! redact them, and (through [`KeyRing::revoke_leaked`](crate::KeyRing::revoke_leaked))
//! revoke the ones that leaked.
//!
//! A key is recognised by its shape and its checksum, offline and without a
//! store: the CRC32 over everything before the last six characters must
//! match them, which random text does with odds of one in 4.3 billion per
//! candidate, and a typo (any single changed character) never does within
//! the text the checksum covers. A typo in the prefix that ends the word
//! early (`acme-live_1…` for `acme_live_1…`) leaves a shorter candidate
//! (`live_1…`), which is random text to the checksum: a match with those
//! same odds.
//!
//! # For secret-scanning services
//!
//! An API key matches
//!
//! ```text
//! [a-z][a-z0-9_]{0,31}_1[0-9A-Za-z]{41}(?![0-9A-Za-z])
//! ```
//!
//! (prefix, `_`, body version `1`, then 11 id, 24 secret and 6 checksum
//! characters; the key ends where no letter or digit follows, so a `_`
//! may: `<key>_old`. Without lookahead, `(?:\b|_)` at the end does the
//! same but takes the `_` into the match, to be cut off; the next match
//! starts after it, so of two keys joined by `_` it still finds both, as
//! [`scan`] does).
//!
//! Confirm a match offline: take the CRC32 (IEEE 802.3, the zlib /
//! `crc32fast` one) of the key without its last six characters, write it
//! in base62 (`0-9A-Za-z`, most significant digit first) padded to six
//! digits with `0`, and compare with the last six characters. Access tokens
//! match
//!
//! ```text
//! [a-z][a-z0-9_]{0,31}_T[0-9A-Za-z]{78,}(?![0-9A-Za-z])
//! ```
//!
//! and carry the same checksum at their end.
//!
//! A key need not start a word: in log lines it often follows a letter or
//! digit (`\n<key>` in escaped JSON, `%20<key>` in a URL, `\u003c<key>`)
//! or a word and `_` (`leaked_<key>`). So a match says where a key ends,
//! not where its prefix starts: try each start the pattern allows, up to
//! 32 characters before the `_1` or `_T`, shortest first, and keep the
//! first whose checksum matches. The checksum covers the prefix, so by
//! chance only the key's own start does; but letters right before a key
//! can be chosen (CRC32 is public, linear arithmetic) so that a longer
//! start matches the same checksum, and longest first would then report
//! them as part of the prefix. A shorter start lies inside the key, which
//! no one but its issuer chose. [`scan`] works so.

use std::ops::Range;

use crate::access;
use crate::token::{self, KeyId, MAX_KEY_LEN};

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
    /// Byte range of the part a redaction removes: everything after the
    /// key id (a key's secret and checksum; a token's instants, claims,
    /// MAC and checksum).
    pub secret_range: Range<usize>,
    /// The key's prefix.
    pub prefix: String,
    /// The id of the key (for a token: of the key it was exchanged for).
    pub key_id: KeyId,
    /// API key or access token.
    pub kind: FoundKind,
}

/// Every keyward API key and access token in `text`, in order, with byte
/// positions, including one glued to the word before it (by `_` or not)
/// or by `_` to the word after it. Two finds' ranges may overlap (text
/// with a valid checksum that runs into the next key's prefix); their
/// secret ranges never do.
/// Near-misses (a changed character, a wrong checksum) and random text are
/// not reported.
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
        scan_run(bytes, start, end, &mut found);
        start = end;
    }
    found
}

/// Finds the keys and tokens in the run of word characters
/// `bytes[start..end]`. A key or token ends where the run does or where a
/// `_` follows it (`<key>_old`), and its body, after its last `_`, is
/// letters and digits only: so each `_` of the run, and its end, is a
/// place one can end, and only if the stretch since the `_` before it has
/// the shape of a body is its checksum worked out.
fn scan_run(bytes: &[u8], start: usize, end: usize, found: &mut Vec<Found>) {
    let run = &bytes[start..end];
    // Where the last hit ends: a body starts after it (a prefix may start
    // before it, see `recognise`), so secret ranges never overlap.
    let mut free = 0;
    // The last `_` before the place being tried.
    let mut marker: Option<usize> = None;
    let ends = run
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'_')
        .map(|(i, _)| i)
        .chain(std::iter::once(run.len()));
    for stop in ends {
        let Some(q) = marker.replace(stop).filter(|&q| q >= free) else {
            continue;
        };
        let body = &run[q + 1..stop];
        // The longest a key or token of this shape can be, prefix and `_`
        // included; a stretch as long as that is neither.
        let longest = match body.first() {
            Some(b'1') if body.len() == token::BODY_LEN => MAX_KEY_LEN,
            Some(b'T') if body.len() > access::FIXED_LEN => access::MAX_TOKEN_LEN,
            _ => continue,
        };
        if body.len() >= longest {
            continue;
        }
        let Some((from, hit)) = recognise(run, q, stop, longest) else {
            continue;
        };
        let at = start + from;
        found.push(Found {
            range: at + hit.start..start + stop,
            secret_range: at + hit.secret_start..start + stop,
            prefix: String::from_utf8_lossy(&bytes[at + hit.start..at + hit.prefix_end])
                .into_owned(),
            key_id: hit.key_id,
            kind: if hit.token {
                FoundKind::AccessToken
            } else {
                FoundKind::ApiKey
            },
        });
        free = stop;
    }
}

/// The key or token that `run[..stop]` ends with, whose body starts after
/// the `_` at `q`, if any, with where the window it was found in starts. It
/// is at most `longest` long. Kept out of [`scan_run`]'s loop, which most
/// text leaves before it gets here.
#[inline(never)]
fn recognise(run: &[u8], q: usize, stop: usize, longest: usize) -> Option<(usize, token::Hit)> {
    // Search no earlier than the longest one could start, so each place
    // costs a bounded amount. The prefix may start anywhere in the window,
    // mid-word too (`%20<key>`), and inside the text of an earlier find
    // (only its body, after `q`, must not be): the checksum says where. A
    // string with a valid checksum (public arithmetic) that runs into this
    // one's prefix must not hide it.
    let from = stop.saturating_sub(longest);
    let window = &run[from..stop];
    // Only the `_` at `q` can begin this one's body.
    let hit = if run[q + 1] == b'1' {
        token::recognise_api_key(window)
    } else {
        access::recognise_at(window, q + 1 - from)
    };
    hit.map(|hit| (from, hit))
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
