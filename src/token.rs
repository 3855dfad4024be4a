//! The key string format: `<prefix>_<body>`.
//!
//! The body is fixed width and base62 only, so a double click selects the
//! whole key and a secret scanner can recognise it offline:
//!
//! ```text
//! acme_live_1 0Jx3Zk9aBcD 7fQ2...(24 chars) 3hT9aQ
//!           ^ ^           ^                 ^
//!           | id: 11      secret: 24        CRC32 of everything before it,
//!           | (u64)       (142 bits)        6 base62 chars
//!           body version: 1 char
//! ```
//!
//! Parsing goes by position from the right and never splits on `_`, because
//! prefixes may contain `_`. Every check here (length, prefix, alphabet,
//! checksum) runs before the store is consulted, and an input longer than the
//! longest possible key is refused before anything else looks at it.
//!
//! The leading version character leaves room for another body layout later:
//! a parser tries each known (version, length) pair from the right.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use rand::TryRng;
use rand::rngs::SysRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, MalformedReason, echo};

/// The base62 alphabet, in the standard order (`0-9A-Za-z`).
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The body version this crate writes.
pub(crate) const BODY_VERSION: u8 = b'1';
/// Width of the key id in base62 characters (62^11 > 2^64).
pub(crate) const ID_LEN: usize = 11;
/// Width of the secret in base62 characters (24 * log2(62) = 142.9 bits).
pub(crate) const SECRET_LEN: usize = 24;
/// Width of the checksum in base62 characters (62^6 > 2^32).
pub(crate) const CHECKSUM_LEN: usize = 6;
/// Width of the whole body: version, id, secret, checksum.
pub(crate) const BODY_LEN: usize = 1 + ID_LEN + SECRET_LEN + CHECKSUM_LEN;
/// Longest prefix a ring accepts.
pub const MAX_PREFIX_LEN: usize = 32;
/// Longest string that can be a key of any ring; longer input is refused
/// before it is looked at further.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + 1 + BODY_LEN;
/// How many id characters the display hint keeps.
const HINT_ID_CHARS: usize = 6;
/// Longest display hint: the longest prefix, `_`, the version and the id's
/// first characters.
pub(crate) const MAX_HINT_LEN: usize = MAX_PREFIX_LEN + 2 + HINT_ID_CHARS;

/// The identifier of a key: 64 random bits, public, shown as 11 base62
/// characters.
///
/// The id is not secret: it is part of every key string, of the display hint
/// and of every event. It is what a store is indexed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u64);

impl KeyId {
    /// Wraps a raw 64-bit id (for stores that persist ids as integers).
    pub const fn from_u64(raw: u64) -> Self {
        KeyId(raw)
    }

    /// The raw 64-bit value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The id as its fixed-width base62 text.
    fn encode(self) -> [u8; ID_LEN] {
        let mut out = [0u8; ID_LEN];
        encode_fixed(u128::from(self.0), &mut out);
        out
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The encoding is ASCII by construction.
        f.write_str(std::str::from_utf8(&self.encode()).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = Error;

    /// Parses the 11-character base62 form printed by `Display`.
    fn from_str(s: &str) -> Result<Self, Error> {
        decode_id(s.as_bytes()).ok_or_else(|| {
            // Echo the input only when it is no longer than an id: a longer
            // one may be a whole key pasted by mistake (with a short prefix,
            // the first 16 characters would reach into its secret). Its
            // control characters escaped, as `echo` shows them.
            let length = s.chars().count();
            Error::InvalidKeyId(if length <= ID_LEN {
                crate::error::echo(s, usize::MAX)
            } else {
                format!("<{length} characters>")
            })
        })
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The plaintext of an API key, as handed to its holder exactly once.
///
/// It exists only in the value returned by issue (and, with the lifecycle
/// operations, rotate and regenerate). It is never stored or logged: `Debug`
/// prints only the non-secret display hint, there is no `Display` and no
/// `Serialize`, and the bytes are overwritten with zeros when it is dropped.
/// Read it with [`Secret::expose`] at the one place that hands it over.
pub struct Secret {
    text: String,
    hint_len: usize,
}

impl Secret {
    /// The full key string, e.g. `acme_live_1…`. Hand it to its holder and
    /// drop it; do not log it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The non-secret display hint (prefix, version and the first id
    /// characters), the same as [`Key::hint`](crate::Key::hint).
    pub fn hint(&self) -> &str {
        &self.text[..self.hint_len]
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}…, redacted)", self.hint())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

impl ZeroizeOnDrop for Secret {}

/// An unchecked prefix as a message or a `Debug` may show it: cut after 40
/// characters, long runs of letters and digits as their length (see
/// [`echo`]), since it may be a key pasted into the wrong field.
pub(crate) fn shown_prefix(prefix: &str) -> String {
    echo(prefix, MAX_PREFIX_LEN + 8)
}

/// A validated key-ring prefix: `[a-z][a-z0-9_]*`, at most 32 characters, not
/// ending in `_`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Prefix(Box<str>);

impl Prefix {
    pub(crate) fn new(prefix: &str) -> Result<Self, Error> {
        if is_valid_prefix(prefix.as_bytes()) {
            Ok(Prefix(prefix.into()))
        } else {
            Err(Error::InvalidPrefix(shown_prefix(prefix)))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Length of a whole key of this prefix.
    fn key_len(&self) -> usize {
        self.0.len() + 1 + BODY_LEN
    }

    /// The display hint of the key with this id.
    pub(crate) fn hint(&self, id: KeyId) -> String {
        let mut hint = String::with_capacity(self.0.len() + 2 + HINT_ID_CHARS);
        hint.push_str(&self.0);
        hint.push('_');
        hint.push(char::from(BODY_VERSION));
        let id = id.encode();
        hint.extend(id[..HINT_ID_CHARS].iter().map(|&b| char::from(b)));
        hint
    }
}

/// Whether a display hint (see [`Prefix::hint`]) is of a key of `prefix`:
/// `<prefix>_` then the body's start, which holds no `_`, so a prefix that
/// merely starts another (`acme` in `acme_live`) is told apart.
pub(crate) fn hint_is_of(hint: &str, prefix: &str) -> bool {
    hint.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('_'))
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

fn is_valid_prefix(p: &[u8]) -> bool {
    matches!(p.first(), Some(b'a'..=b'z'))
        && p.len() <= MAX_PREFIX_LEN
        && p.last() != Some(&b'_')
        && p.iter()
            .all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// A key string that passed every offline check, borrowed from the input.
#[derive(Clone, Copy)]
pub(crate) struct ParsedKey<'a> {
    pub(crate) id: KeyId,
    /// The secret part as its base62 text; hashed as is, never decoded.
    pub(crate) secret: &'a [u8; SECRET_LEN],
}

/// Checks a presented key against a ring's prefix: length first (oversize
/// input is refused before any other work), then prefix and separator, body
/// version, alphabet, checksum and the id's range. Never panics, whatever
/// the input.
#[inline]
pub(crate) fn parse<'a>(
    presented: &'a str,
    prefix: &Prefix,
) -> Result<ParsedKey<'a>, MalformedReason> {
    let bytes = presented.as_bytes();
    if bytes.len() > MAX_KEY_LEN {
        return Err(MalformedReason::TooLong);
    }
    if bytes.len() != prefix.key_len() {
        return Err(MalformedReason::WrongLength);
    }
    let (head, body) = bytes.split_at(bytes.len() - BODY_LEN);
    let Some((b'_', head_prefix)) = head.split_last() else {
        return Err(MalformedReason::WrongPrefix);
    };
    if head_prefix != prefix.as_str().as_bytes() {
        return Err(MalformedReason::WrongPrefix);
    }
    parse_body(bytes, body)
}

/// Checks a body (the last [`BODY_LEN`] bytes of `whole`) and splits it.
#[inline]
fn parse_body<'a>(whole: &[u8], body: &'a [u8]) -> Result<ParsedKey<'a>, MalformedReason> {
    if body.first() != Some(&BODY_VERSION) {
        return Err(MalformedReason::UnknownVersion);
    }
    // Branch-free over the whole body, so the check vectorises.
    if !body[1..]
        .iter()
        .fold(true, |ok, &b| ok & b.is_ascii_alphanumeric())
    {
        return Err(MalformedReason::BadAlphabet);
    }
    let (checked, checksum) = whole.split_at(whole.len() - CHECKSUM_LEN);
    let expected = decode_fixed(checksum).ok_or(MalformedReason::BadChecksum)?;
    if u128::from(crc32(checked)) != expected {
        return Err(MalformedReason::BadChecksum);
    }
    let id = decode_id(&body[1..1 + ID_LEN]).ok_or(MalformedReason::IdOutOfRange)?;
    let secret = body[1 + ID_LEN..1 + ID_LEN + SECRET_LEN]
        .try_into()
        .map_err(|_| MalformedReason::WrongLength)?;
    Ok(ParsedKey { id, secret })
}

/// A key recognised in a run of word characters, by shape and checksum.
pub(crate) struct Hit {
    /// Where the key starts in the run (it always ends with the run).
    pub(crate) start: usize,
    /// Where its prefix ends.
    pub(crate) prefix_end: usize,
    /// Where the part a redaction removes starts.
    pub(crate) secret_start: usize,
    pub(crate) key_id: KeyId,
    /// An access token rather than an API key.
    pub(crate) token: bool,
}

/// Finds the API key that a run of `[A-Za-z0-9_]` characters ends with, if
/// any (for the scanner). The prefix may be glued to what precedes it, by
/// `_` or by letters and digits: each possible prefix start is tried, and
/// only the right one matches the checksum.
pub(crate) fn recognise_api_key(run: &[u8]) -> Option<Hit> {
    let head_len = run.len().checked_sub(BODY_LEN + 1)?;
    let body = &run[head_len + 1..];
    if run[head_len] != b'_'
        || body[0] != BODY_VERSION
        || !body.iter().all(u8::is_ascii_alphanumeric)
    {
        return None;
    }
    prefix_starts(&run[..head_len]).find_map(|start| {
        let key = &run[start..];
        parse_body(key, body).ok().map(|parsed| Hit {
            start,
            prefix_end: head_len,
            secret_start: head_len + 2 + ID_LEN,
            key_id: parsed.id,
            token: false,
        })
    })
}

/// The positions in `head` where a valid prefix ending at its end could
/// start, shortest prefix first: every one within [`MAX_PREFIX_LEN`] of the
/// end, not only the start of a word or the place after a `_`. In a log
/// line a key often follows a letter or digit with no break (`\n<key>` in
/// JSON, `%20<key>` in a URL); the checksum covers the prefix, so it picks
/// the right start, and each further start tried is one more 2^-32 chance
/// for text that is not a key.
///
/// Shortest first, because only a longer start can be made to match: the
/// characters before a key are anyone's to choose, and CRC32 is linear, so
/// a dozen letters glued in front give a longer string the key's own
/// checksum. Longest first, the key was then reported with those letters
/// in its prefix, and [`KeyRing::revoke_leaked`](crate::KeyRing::revoke_leaked),
/// which takes its own ring's prefix only, passed over it. A shorter start
/// lies inside the key, whose characters only its issuer chose.
pub(crate) fn prefix_starts(head: &[u8]) -> impl Iterator<Item = usize> + '_ {
    // A prefix is `[a-z][a-z0-9_]*`, not ending in `_`: it starts within
    // the stretch of such characters that `head` ends with.
    let stretch = head
        .iter()
        .rev()
        .take(MAX_PREFIX_LEN)
        .take_while(|&&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
        .count();
    let ends_well = head.last() != Some(&b'_');
    (head.len() - stretch..head.len())
        .rev()
        .filter(move |&i| ends_well && head[i].is_ascii_lowercase())
}

/// A fresh id and secret from the operating system's CSPRNG.
pub(crate) struct Generated {
    pub(crate) id: KeyId,
    pub(crate) secret: Secret,
    /// The secret part's text, for hashing; wiped on drop.
    secret_part: Zeroizing<[u8; SECRET_LEN]>,
}

impl Generated {
    /// The secret part's text, for hashing.
    pub(crate) fn secret_part(&self) -> &[u8; SECRET_LEN] {
        &self.secret_part
    }
}

/// Draws a new id and secret from the OS CSPRNG and formats the key string.
pub(crate) fn generate(prefix: &Prefix) -> Result<Generated, Error> {
    let mut id_bytes = [0u8; 8];
    SysRng
        .try_fill_bytes(&mut id_bytes)
        .map_err(|e| Error::Random(e.to_string()))?;
    generate_with_id(prefix, KeyId(u64::from_le_bytes(id_bytes)))
}

/// A new secret for an existing id (regeneration), formatted as a key.
pub(crate) fn generate_with_id(prefix: &Prefix, id: KeyId) -> Result<Generated, Error> {
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    random_base62(&mut secret[..])?;
    let text = format_key(prefix, id, &secret);
    let hint_len = prefix.as_str().len() + 2 + HINT_ID_CHARS;
    Ok(Generated {
        id,
        secret: Secret { text, hint_len },
        secret_part: secret,
    })
}

/// Writes the key string into a buffer allocated once at its final size, so
/// no reallocation leaves a copy of the secret behind.
fn format_key(prefix: &Prefix, id: KeyId, secret: &[u8; SECRET_LEN]) -> String {
    let mut text = String::with_capacity(prefix.key_len());
    text.push_str(prefix.as_str());
    text.push('_');
    text.push(char::from(BODY_VERSION));
    text.extend(id.encode().iter().map(|&b| char::from(b)));
    text.extend(secret.iter().map(|&b| char::from(b)));
    let mut checksum = [0u8; CHECKSUM_LEN];
    encode_fixed(u128::from(crc32(text.as_bytes())), &mut checksum);
    text.extend(checksum.iter().map(|&b| char::from(b)));
    debug_assert_eq!(text.len(), prefix.key_len());
    text
}

/// Fills `out` with uniformly random base62 characters: each random byte's
/// low 6 bits are kept when below 62 (rejection sampling, no modulo bias).
fn random_base62(out: &mut [u8]) -> Result<(), Error> {
    // Wiped when dropped, on the error path too.
    let mut pool = zeroize::Zeroizing::new([0u8; 64]);
    let mut filled = 0;
    while filled < out.len() {
        SysRng
            .try_fill_bytes(&mut *pool)
            .map_err(|e| Error::Random(e.to_string()))?;
        for &b in pool.iter() {
            let v = b & 0x3f;
            if v < 62 && filled < out.len() {
                out[filled] = ALPHABET[usize::from(v)];
                filled += 1;
            }
        }
    }
    Ok(())
}

/// Writes `value` as exactly `out.len()` base62 digits, zero-padded on the
/// left. Callers size `out` so that the value fits.
pub(crate) fn encode_fixed(mut value: u128, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    debug_assert_eq!(value, 0, "value does not fit the fixed width");
}

/// The CRC32 (IEEE) of `bytes`, as `crc32fast::hash` computes it but
/// without its choice of implementation on every call (a check of the CPU
/// features std has cached): the hasher it picks is built once and copied.
#[inline]
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    static FRESH: OnceLock<crc32fast::Hasher> = OnceLock::new();
    let mut hasher = FRESH.get_or_init(crc32fast::Hasher::new).clone();
    hasher.update(bytes);
    hasher.finalize()
}

/// Decodes fixed-width base62 digits (at most 30); `None` on a character
/// outside the alphabet or a value over `u128::MAX`.
///
/// In chunks of ten digits through [`decode_small`], so the work does not
/// depend on the digits: an access token's MAC is decoded here, and a
/// decode whose time followed the presented digits (the `base62` crate
/// skips leading zeros) would blur what `benches/timing.rs` measures of
/// the constant-time compare after it.
pub(crate) fn decode_fixed(digits: &[u8]) -> Option<u128> {
    const CHUNK: u128 = 62u128.pow(10);
    if digits.len() <= 10 {
        // 62^10 < 2^64: the common case (checksums, ids' halves) in u64.
        return decode_small(digits).map(u128::from);
    }
    if digits.len() > 30 {
        return None;
    }
    let (upper, low) = digits.split_at(digits.len() - 10);
    let (high, middle) = upper.split_at(upper.len().saturating_sub(10));
    let (high, middle, low) = (
        decode_small(high)?,
        decode_small(middle)?,
        decode_small(low)?,
    );
    // high < 62^10 and middle < 62^10, so this is below 62^20 < 2^120.
    let upper = u128::from(high) * CHUNK + u128::from(middle);
    upper.checked_mul(CHUNK)?.checked_add(u128::from(low))
}

/// Decodes up to 10 base62 digits through a table; `None` on a character
/// outside the alphabet. Branch-free over the digits: a bad character (255
/// in the table) is noted in `seen` and the sum, which wraps harmlessly, is
/// then thrown away; verify's parse decodes two of these per call.
#[inline]
fn decode_small(digits: &[u8]) -> Option<u64> {
    debug_assert!(digits.len() <= 10, "62^10 < 2^64: at most 10 digits");
    let (value, seen) = digits.iter().fold((0u64, 0u8), |(acc, seen), &b| {
        let d = DIGIT[usize::from(b)];
        (acc.wrapping_mul(62).wrapping_add(u64::from(d)), seen | d)
    });
    // Every digit is below 64 (62 values), so only a bad one sets a bit
    // above the sixth.
    (seen < 64).then_some(value)
}

/// The value of each byte as a base62 digit; 255 for non-digits.
/// `decode_small` relies on both: digits fit in six bits, and 255 does not.
static DIGIT: [u8; 256] = {
    let mut table = [255u8; 256];
    let mut i = 0;
    while i < 62 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Decodes an 11-character id; `None` on bad characters or a value above
/// `u64::MAX` (11 base62 digits can express more than 64 bits).
#[inline]
fn decode_id(digits: &[u8]) -> Option<KeyId> {
    if digits.len() != ID_LEN {
        return None;
    }
    // 11 digits: the first one times 62^10, then the other ten, checked.
    let (first, rest) = digits.split_first()?;
    let high = decode_small(std::slice::from_ref(first))?;
    let low = decode_small(rest)?;
    high.checked_mul(62u64.pow(10))?.checked_add(low).map(KeyId)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix() -> Prefix {
        Prefix::new("acme_live").unwrap()
    }

    /// The key format is a public contract (SPEC 1): a fixed prefix, id and
    /// secret give this exact string, checksum included, and it parses
    /// back to them. A change to the body layout, the base62 alphabet or
    /// the checksum fails here; one made on purpose takes a new body
    /// version beside this one, never a change to it.
    #[test]
    fn a_known_id_and_secret_give_the_pinned_key_string() {
        let secret = b"Zy9x8W7v6U5t4S3r2Q1p0OnM";
        let id = KeyId::from_u64(0x0123_4567_89AB_CDEF);
        let text = format_key(&prefix(), id, secret);
        assert_eq!(text, "acme_live_1063UfDVRKBzZy9x8W7v6U5t4S3r2Q1p0OnM1ptmY5");
        let parsed = parse(&text, &prefix()).unwrap();
        assert_eq!((parsed.id, parsed.secret), (id, secret));
        assert_eq!(prefix().hint(id), "acme_live_1063UfD");
        assert_eq!(id.to_string(), "063UfDVRKBz");
        // The extremes of the id's range (checked against an independent
        // base62 and CRC32 in Python).
        for (id, expected) in [
            (0, "acme_live_100000000000Zy9x8W7v6U5t4S3r2Q1p0OnM19zxst"),
            (
                u64::MAX,
                "acme_live_1LygHa16AHYFZy9x8W7v6U5t4S3r2Q1p0OnM2IkL7C",
            ),
        ] {
            assert_eq!(format_key(&prefix(), KeyId::from_u64(id), secret), expected);
        }
    }

    #[test]
    fn generated_key_has_the_documented_shape() {
        let g = generate(&prefix()).unwrap();
        let text = g.secret.expose();
        assert_eq!(text.len(), "acme_live_".len() + BODY_LEN);
        assert!(text.starts_with("acme_live_1"));
        assert!(
            text["acme_live_".len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        let parsed = parse(text, &prefix()).unwrap();
        assert_eq!(parsed.id, g.id);
        assert_eq!(parsed.secret, g.secret_part());
    }

    #[test]
    fn fixed_width_encoding_agrees_with_the_base62_crate() {
        for v in [0u64, 1, 61, 62, 12345678901234, u64::MAX] {
            let mut out = [0u8; ID_LEN];
            encode_fixed(u128::from(v), &mut out);
            let ours = std::str::from_utf8(&out).unwrap().trim_start_matches('0');
            let theirs = base62::encode(v);
            assert_eq!(if ours.is_empty() { "0" } else { ours }, theirs);
            assert_eq!(decode_fixed(&out), Some(u128::from(v)));
        }
    }

    #[test]
    fn fixed_width_decoding_agrees_with_the_base62_crate_to_22_digits() {
        // Every width a field has (up to a MAC's 22 digits), on random
        // digits and on the edges: the largest value, the first over it,
        // leading zeros, the largest digits.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut max = [0u8; 22];
        encode_fixed(u128::MAX, &mut max);
        let over = {
            // u128::MAX + 1 in base62: the last digit of MAX is not 'z'.
            let mut o = max;
            let last = ALPHABET.iter().position(|&a| a == o[21]).unwrap();
            o[21] = ALPHABET[last + 1];
            o
        };
        let mut cases: Vec<Vec<u8>> = vec![max.to_vec(), over.to_vec(), vec![b'z'; 22]];
        cases.push(b"0000000000000000000001".to_vec());
        cases.push(b"00000000000".to_vec());
        for width in 11..=22 {
            for _ in 0..500 {
                cases.push(
                    (0..width)
                        .map(|_| ALPHABET[(next() % 62) as usize])
                        .collect(),
                );
            }
        }
        for digits in &cases {
            assert_eq!(
                decode_fixed(digits),
                base62::decode(digits).ok(),
                "{}",
                String::from_utf8_lossy(digits)
            );
        }
        assert_eq!(decode_fixed(&max), Some(u128::MAX));
        assert_eq!(decode_fixed(&over), None);
        let mut bad = max;
        bad[3] = b'-';
        assert_eq!(decode_fixed(&bad), None);
    }

    #[test]
    fn a_bad_character_anywhere_is_refused_and_good_digits_decode() {
        // The decode is branch-free (a bad digit is noted, not returned on):
        // every byte value outside the alphabet, at every position of a
        // 10-digit field, must still be refused.
        let good = *b"7aZ09yQkLm";
        let value = good.iter().fold(0u64, |acc, &b| {
            let d = ALPHABET.iter().position(|&a| a == b).unwrap() as u64;
            acc * 62 + d
        });
        assert_eq!(decode_small(&good), Some(value));
        assert_eq!(decode_small(b"zzzzzzzzzz"), Some(62u64.pow(10) - 1));
        assert_eq!(decode_small(b""), Some(0));
        for position in 0..good.len() {
            for byte in 0..=255u8 {
                let mut digits = good;
                digits[position] = byte;
                let expected = ALPHABET.contains(&byte);
                assert_eq!(
                    decode_small(&digits).is_some(),
                    expected,
                    "byte {byte} at position {position}"
                );
            }
        }
    }

    /// The bad digits are noted by OR-ing their table values, which no
    /// count of bad characters can cancel (an XOR of two 255s would be 0):
    /// two or more are refused like one, here and in a key id's text.
    #[test]
    fn several_bad_characters_are_refused_like_one() {
        for digits in [
            &b"--aaaaaaaa"[..],
            b"a-b-c-d-e-",
            b"\xff\xffzzzzzzzz",
            b"----------",
        ] {
            assert_eq!(decode_small(digits), None, "{digits:?}");
        }
        for id in ["--000000000", "0-0-0000000", "1..........", "ab~~cdefghi"] {
            assert!(id.parse::<KeyId>().is_err(), "{id}");
        }
    }

    #[test]
    fn crc32_matches_crc32fast() {
        for text in [&b""[..], b"a", b"bench_1", &[0xA5; 300]] {
            assert_eq!(crc32(text), crc32fast::hash(text));
        }
    }

    #[test]
    fn a_bad_key_id_error_never_echoes_a_secret() {
        // A whole key with a one-character prefix passed where an id is
        // expected: no character of its secret may reach the error.
        let key = generate(&Prefix::new("a").unwrap()).unwrap();
        let text = key.secret.expose();
        // (The first 16 characters, once echoed, were `a_1`, the id and two
        // of the secret's.)
        let message = text.parse::<KeyId>().unwrap_err().to_string();
        assert_eq!(
            message,
            format!("invalid key id `<{} characters>`", text.len())
        );
        // A short bad id is echoed, to help whoever typed it.
        let message = "zzzzzzzzzzz".parse::<KeyId>().unwrap_err().to_string();
        assert_eq!(message, "invalid key id `zzzzzzzzzzz`");
        // Its control characters escaped: the message stays on one line.
        let message = "ab\ncd\u{1b}[2J".parse::<KeyId>().unwrap_err().to_string();
        assert_eq!(message, "invalid key id `ab\\ncd\\u{1b}[2J`");
    }

    #[test]
    fn id_above_u64_is_refused() {
        // "zzzzzzzzzzz" is 62^11 - 1 > u64::MAX.
        assert!(decode_id(b"zzzzzzzzzzz").is_none());
        assert_eq!(decode_id(b"00000000001"), Some(KeyId(1)));
    }

    #[test]
    fn key_id_text_round_trips() {
        let id = KeyId(0xDEAD_BEEF_0BAD_F00D);
        let text = id.to_string();
        assert_eq!(text.len(), ID_LEN);
        assert_eq!(text.parse::<KeyId>().unwrap(), id);
        assert!("short".parse::<KeyId>().is_err());
        assert!("zzzzzzzzzzz".parse::<KeyId>().is_err());
    }

    #[test]
    fn prefix_rules() {
        for ok in ["a", "acme", "acme_live", "a1_b2", &"a".repeat(32)] {
            assert!(Prefix::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Acme",
            "1acme",
            "acme_",
            "_acme",
            "ac-me",
            "acmé",
            &"a".repeat(33),
        ] {
            assert!(Prefix::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checks_run_in_the_documented_order() {
        let p = prefix();
        let key = generate(&p).unwrap();
        let text = key.secret.expose().to_owned();
        assert_eq!(
            parse(&"x".repeat(MAX_KEY_LEN + 1), &p).err(),
            Some(MalformedReason::TooLong)
        );
        assert_eq!(
            parse(&text[1..], &p).err(),
            Some(MalformedReason::WrongLength)
        );
        let other = text.replacen("acme_live", "acme_test", 1);
        assert_eq!(parse(&other, &p).err(), Some(MalformedReason::WrongPrefix));
        let mut v2 = text.clone().into_bytes();
        v2["acme_live_".len()] = b'2';
        assert_eq!(
            parse(std::str::from_utf8(&v2).unwrap(), &p).err(),
            Some(MalformedReason::UnknownVersion)
        );
        let mut bad_char = text.clone().into_bytes();
        bad_char[20] = b'-';
        assert_eq!(
            parse(std::str::from_utf8(&bad_char).unwrap(), &p).err(),
            Some(MalformedReason::BadAlphabet)
        );
        let mut bad_sum = text.clone().into_bytes();
        let last = bad_sum.len() - 1;
        bad_sum[last] = if bad_sum[last] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            parse(std::str::from_utf8(&bad_sum).unwrap(), &p).err(),
            Some(MalformedReason::BadChecksum)
        );
    }

    #[test]
    fn a_checksummed_id_above_64_bits_is_out_of_range() {
        let p = prefix();
        let mut text = generate(&p).unwrap().secret.expose().as_bytes().to_vec();
        let id_start = "acme_live_".len() + 1;
        // u64::MAX is accepted; one more, and the largest 11-digit id
        // (62^11 - 1), are out of range.
        assert_eq!(KeyId(u64::MAX).to_string(), "LygHa16AHYF");
        for (id, expected) in [
            ("LygHa16AHYF", None),
            ("LygHa16AHYG", Some(MalformedReason::IdOutOfRange)),
            ("zzzzzzzzzzz", Some(MalformedReason::IdOutOfRange)),
        ] {
            text[id_start..id_start + ID_LEN].copy_from_slice(id.as_bytes());
            let sum_start = text.len() - CHECKSUM_LEN;
            encode_fixed(
                u128::from(crc32(&text[..sum_start])),
                &mut text[sum_start..],
            );
            let key = std::str::from_utf8(&text).unwrap();
            assert_eq!(parse(key, &p).err(), expected, "{id}");
        }
    }

    /// The scanner's recogniser takes a key only with the `_` before its
    /// body, even when the checksum was made to match a text glued without
    /// it; and it reports where the key, its prefix and its secret are.
    #[test]
    fn a_key_is_recognised_only_with_the_underscore_before_its_body() {
        let g = generate(&prefix()).unwrap();
        let mut text = format!("x9{}", g.secret.expose()).into_bytes();
        let hit = recognise_api_key(&text).unwrap();
        let prefix_end = "x9acme_live".len();
        assert_eq!(
            (
                hit.start,
                hit.prefix_end,
                hit.secret_start,
                hit.key_id,
                hit.token
            ),
            (2, prefix_end, prefix_end + 2 + ID_LEN, g.id, false)
        );
        text[prefix_end] = b'x';
        let sum_start = text.len() - CHECKSUM_LEN;
        encode_fixed(
            u128::from(crc32(&text[2..sum_start])),
            &mut text[sum_start..],
        );
        assert!(recognise_api_key(&text).is_none());
    }

    /// A prefix can start only at a lowercase letter, at most
    /// `MAX_PREFIX_LEN` before the end, within the prefix characters the
    /// head ends with, and never before a `_` that ends the head: the
    /// starts come shortest prefix first.
    #[test]
    fn prefix_starts_are_the_lowercase_letters_of_the_tail_shortest_first() {
        let starts = |head: &[u8]| prefix_starts(head).collect::<Vec<_>>();
        assert_eq!(starts(b"x9_ab"), [4, 3, 0]);
        assert_eq!(starts(b"AB-c9d"), [5, 3]);
        assert_eq!(starts(b"acme_"), [] as [usize; 0]);
        assert_eq!(starts(b""), [] as [usize; 0]);
        let long = [b'a'; MAX_PREFIX_LEN + 8];
        assert_eq!(
            starts(&long),
            (8..MAX_PREFIX_LEN + 8).rev().collect::<Vec<_>>()
        );
    }

    #[test]
    fn secret_debug_shows_only_the_hint() {
        let g = generate(&prefix()).unwrap();
        let debug = format!("{:?}", g.secret);
        assert!(!debug.contains(g.secret.expose()));
        assert!(!debug.contains(std::str::from_utf8(g.secret_part()).unwrap()));
        assert!(debug.contains(g.secret.hint()));
        assert_eq!(g.secret.hint(), prefix().hint(g.id));
    }

    /// The longest key, of a 32-character prefix, is exactly `MAX_KEY_LEN`
    /// long and passes: only longer input is refused as too long.
    #[test]
    fn the_longest_key_is_not_too_long() {
        let p = Prefix::new(&"a".repeat(MAX_PREFIX_LEN)).unwrap();
        let g = generate(&p).unwrap();
        assert_eq!(g.secret.expose().len(), MAX_KEY_LEN);
        assert_eq!(parse(g.secret.expose(), &p).map(|k| k.id).ok(), Some(g.id));
        // As long, for a shorter prefix: the wrong length, not too long.
        assert_eq!(
            parse(&"a".repeat(MAX_KEY_LEN), &prefix()).err(),
            Some(MalformedReason::WrongLength)
        );
    }

    /// A key id's `Debug` names the type and shows the id's text (public),
    /// and its raw value round-trips.
    #[test]
    fn key_id_debug_shows_its_text_and_the_raw_value_round_trips() {
        let id = KeyId::from_u64(0x0123_4567_89AB_CDEF);
        assert_eq!(format!("{id:?}"), "KeyId(063UfDVRKBz)");
        for raw in [0, 1, 0x0123_4567_89AB_CDEF, u64::MAX] {
            assert_eq!(KeyId::from_u64(raw).as_u64(), raw);
        }
    }

    /// The hint of a key of the longest prefix is exactly `MAX_HINT_LEN`
    /// long: a stored key's hint is refused above it, so a shorter limit
    /// would refuse the keys of a ring with a 32-character prefix.
    #[test]
    fn the_longest_hint_is_max_hint_len() {
        let p = Prefix::new(&"a".repeat(MAX_PREFIX_LEN)).unwrap();
        let g = generate(&p).unwrap();
        assert_eq!(p.hint(g.id).len(), MAX_HINT_LEN);
        assert_eq!(g.secret.hint().len(), MAX_HINT_LEN);
    }

    /// A refused prefix is shown in the error as given, cut after 40
    /// characters; a valid prefix's `Debug` is its quoted text.
    #[test]
    fn a_refused_prefix_is_echoed_cut_after_40_characters() {
        let message = |p: &str| match Prefix::new(p) {
            Err(Error::InvalidPrefix(shown)) => shown,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(message("Acme"), "Acme");
        assert_eq!(message(&"a-".repeat(30)), "a-".repeat(20));
        assert_eq!(format!("{:?}", prefix()), "\"acme_live\"");
    }

    /// A hint is of a prefix when `<prefix>_` is followed by a body start
    /// with no `_`: a prefix that only starts another's is told apart.
    #[test]
    fn hint_is_of_tells_a_prefix_from_one_it_starts() {
        assert!(hint_is_of("acme_live_1063UfD", "acme_live"));
        assert!(hint_is_of(&prefix().hint(KeyId(7)), "acme_live"));
        for (hint, prefix) in [
            ("acme_live_1063UfD", "acme"),
            ("acme_1063UfD", "acme_live"),
            ("acme_", "acme"),
            ("acme1063UfD", "acme"),
            ("acme_live_1063UfD", "acme_test"),
        ] {
            assert!(!hint_is_of(hint, prefix), "{hint} {prefix}");
        }
    }

    /// Generated secrets are uniform over the whole alphabet and fresh
    /// every time: 62 * 2000 characters drawn give each character 2000
    /// times give or take 300 (6.7 standard deviations; a modulo bias
    /// would give the first eight 2422), every position of a key's secret
    /// is drawn, and generated keys never repeat an id or a secret.
    #[test]
    fn generated_secrets_are_uniform_and_never_repeat() {
        let mut drawn = vec![0u8; 62 * 2000];
        random_base62(&mut drawn).unwrap();
        let mut counts = [0usize; 256];
        for &b in &drawn {
            counts[usize::from(b)] += 1;
        }
        for &c in ALPHABET {
            let n = counts[usize::from(c)];
            assert!(
                (1700..=2300).contains(&n),
                "{} drawn {n} times",
                char::from(c)
            );
        }
        assert_eq!(
            ALPHABET
                .iter()
                .map(|&c| counts[usize::from(c)])
                .sum::<usize>(),
            drawn.len(),
            "a character outside the alphabet"
        );
        // Every position of a generated secret varies: 200 keys show about
        // 60 characters at each (fewer than 30 has odds below 10^-30).
        let keys: Vec<Generated> = (0..200).map(|_| generate(&prefix()).unwrap()).collect();
        for position in 0..SECRET_LEN {
            let seen: std::collections::HashSet<u8> =
                keys.iter().map(|g| g.secret_part()[position]).collect();
            assert!(
                seen.len() >= 30,
                "position {position}: {} characters",
                seen.len()
            );
        }
        let ids: std::collections::HashSet<_> = keys.iter().map(|g| g.id).collect();
        let secrets: std::collections::HashSet<_> = keys.iter().map(|g| *g.secret_part()).collect();
        assert_eq!((ids.len(), secrets.len()), (200, 200));
    }
}
