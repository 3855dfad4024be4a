//! Short-lived access tokens, exchanged for an API key and verified without
//! a store lookup.
//!
//! ```text
//! <prefix>_T  k  iiiiiiiiiii  ttttttt  eeeeeee  lll  <claims>  <mac: 22>  <crc: 6>
//!             |  key id (11)  issued   expires  len  owner and scopes, base62 in
//!             signing key     (Unix seconds)         21-character chunks of 15 bytes
//! ```
//!
//! The MAC is a keyed BLAKE3 over everything before it, under a key derived
//! from the ring's signing key (chosen by the one-character signing key id,
//! so a ring can roll to a new signing key while tokens signed by the
//! previous one stay valid until they expire), the ring prefix and the
//! ring's pepper if it has one, cut to 128 bits and compared in constant time. The `T` after the prefix keeps a
//! token from ever parsing as an API key (whose body starts with `1`); the
//! CRC32 at the end lets a scanner find tokens offline, as it finds keys.

use std::fmt;

use serde::Serialize;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, MalformedReason, VerifyError};
use crate::scope::ScopeSet;
use crate::token::{self, Hit, KeyId, Prefix, decode_fixed, encode_fixed};

/// The body version character of access tokens.
const TOKEN_VERSION: u8 = b'T';
const KID_LEN: usize = 1;
const TIME_LEN: usize = 7;
const CLAIMS_LEN_LEN: usize = 3;
const CHUNK_BYTES: usize = 15;
const CHUNK_CHARS: usize = 21;
const MAC_LEN: usize = 22;
/// The fixed part after `_T`: signing key id, key id, two instants, claims
/// length, MAC and checksum.
pub(crate) const FIXED_LEN: usize =
    KID_LEN + token::ID_LEN + 2 * TIME_LEN + CLAIMS_LEN_LEN + MAC_LEN + token::CHECKSUM_LEN;
/// Most bytes of claims (owner and scopes) a token carries.
pub(crate) const MAX_CLAIMS: usize = 4096;
/// Longest token text accepted.
pub(crate) const MAX_TOKEN_LEN: usize =
    token::MAX_PREFIX_LEN + 2 + FIXED_LEN + MAX_CLAIMS.div_ceil(CHUNK_BYTES) * CHUNK_CHARS;
/// Why a token is refused on a clock before 1970.
pub(crate) const BEFORE_1970: &str = "an access token cannot carry a time before 1970";
/// The purpose string of MAC keys.
const CONTEXT: &str = "keyward 2026-11-27 access token mac v1";

/// What an access token says: whose key, what it may do, for how long.
///
/// # JSON form
///
/// Claims serialize (e.g. with `serde_json`) to one flat object, to forward
/// the principal of a request to a downstream service, a request log or a
/// template: `key` (the id of the key the token was exchanged for, named
/// as in an [`Event`](crate::Event)), `owner`, `scopes` (as in a
/// [`Key`](crate::Key): `"unrestricted"` or a list of scope strings),
/// `issued_at` and `expires_at` (RFC 3339, in UTC, as a `Key`'s and an
/// `Event`'s instants), and `bound`, only when it is `true` (a field at
/// its default is left out, as in a `Key`). The same `key`, `owner` and
/// `scopes` as a [`Verified`](crate::Verified). A release may add fields,
/// never rename or remove one.
///
/// ```json
/// {"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":["invoices:read"],"issued_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:30:00Z"}
/// {"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":"unrestricted","issued_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:30:00Z","bound":true}
/// ```
///
/// Claims hold no key material: not the token's text, nor its MAC, nor
/// the key's secret or hash, so their JSON is no credential.
///
/// They serialize only: there is no `Deserialize`. Claims are what the
/// ring vouches for once a token's MAC checked (and what
/// [`KeyRing::authorize`](crate::KeyRing::authorize) judges), and
/// `#[non_exhaustive]` keeps a host from building them from nothing;
/// claims read from text would carry whatever key, owner and scopes the
/// text said, with no token behind them. Read the JSON back as plain JSON
/// (`serde_json::Value`) or into a type of your own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AccessClaims {
    /// The API key the token was exchanged for (`"key"` in JSON).
    #[serde(rename = "key")]
    pub key_id: KeyId,
    /// That key's owner.
    pub owner: String,
    /// The scopes of the token (the key's, or fewer).
    pub scopes: ScopeSet,
    /// When the token was issued (to the second).
    #[serde(serialize_with = "crate::event::rfc3339_utc")]
    pub issued_at: OffsetDateTime,
    /// When it stops working (to the second).
    #[serde(serialize_with = "crate::event::rfc3339_utc")]
    pub expires_at: OffsetDateTime,
    /// Whether the key was bound (to a client certificate or networks) when
    /// the token was exchanged: the plain check refuses such a token
    /// ([`Binding::NotPresented`](crate::Binding::NotPresented)); it
    /// verifies with a request context, through
    /// [`KeyRing::verify_access_token_with`](crate::KeyRing::verify_access_token_with),
    /// which checks the key's bindings as they stand (so once an
    /// administrator has removed them, there is nothing left to present).
    #[serde(skip_serializing_if = "is_false")]
    pub bound: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A freshly issued access token: its text (handed over once; redacted in
/// `Debug`, no `Display`, wiped on drop) and its claims.
pub struct AccessToken {
    text: String,
    hint_len: usize,
    /// What the token says.
    pub claims: AccessClaims,
}

impl AccessToken {
    /// The token text to hand to the client.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field(
                "token",
                &format_args!("{}…, redacted", &self.text[..self.hint_len]),
            )
            .field("claims", &self.claims)
            .finish()
    }
}

impl Drop for AccessToken {
    fn drop(&mut self) {
        self.text.zeroize();
    }
}

impl ZeroizeOnDrop for AccessToken {}

/// The MAC keys of a ring, by signing key id, wiped on drop.
pub(crate) struct Signer {
    current: Option<u8>,
    keys: Vec<(u8, Zeroizing<[u8; 32]>)>,
}

impl Signer {
    /// A signer with room for `capacity` keys: adding no more than that
    /// never reallocates, which would leave a copy of the keys in freed
    /// memory.
    pub(crate) fn with_capacity(capacity: usize) -> Signer {
        Signer {
            current: None,
            keys: Vec::with_capacity(capacity),
        }
    }

    /// Adds a signing key under `id` (0 to 61), derived for `prefix` and the
    /// ring's `pepper` (so two rings sharing a signing key and a prefix but
    /// not a pepper, one per tenant say, do not accept each other's
    /// tokens); `current` makes it the one new tokens are signed with.
    pub(crate) fn add(
        &mut self,
        id: u8,
        key: &[u8; 32],
        prefix: &str,
        pepper: Option<&[u8; 32]>,
        current: bool,
    ) -> Result<(), Error> {
        if id >= 62 {
            return Err(Error::InvalidInput("a signing key id is 0 to 61"));
        }
        if self.keys.iter().any(|(k, _)| *k == id) {
            return Err(Error::InvalidInput("each signing key needs its own id"));
        }
        if current && self.current.is_some() {
            // The last would sign, silently: one of the two is a mistake.
            return Err(Error::InvalidInput(
                "one signing key signs: give the others with accept_signing_key",
            ));
        }
        let mut material = Zeroizing::new(Vec::with_capacity(32 + prefix.len() + 1 + 32));
        material.extend_from_slice(key);
        material.extend_from_slice(prefix.as_bytes());
        if let Some(pepper) = pepper {
            // 0xFF is in no prefix, so (prefix, pepper) pairs stay distinct;
            // a ring without a pepper derives what it always did.
            material.push(0xFF);
            material.extend_from_slice(pepper);
        }
        // Derived straight into its wiped slot (`blake3::derive_key` would
        // return it through a local that nothing wipes).
        self.keys.push((id, Zeroizing::new([0; 32])));
        if let Some((_, slot)) = self.keys.last_mut() {
            blake3::Hasher::new_derive_key(CONTEXT)
                .update(&material)
                .finalize_xof()
                .fill(&mut slot[..]);
        }
        if current {
            self.current = Some(id);
        }
        Ok(())
    }

    /// Whether [`sign`](Self::sign) has a key to sign with.
    pub(crate) fn can_sign(&self) -> bool {
        self.current.and_then(|kid| self.key(kid)).is_some()
    }

    fn key(&self, id: u8) -> Option<&[u8; 32]> {
        self.keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, key)| &**key)
    }

    /// Issues a token for `claims`.
    pub(crate) fn sign(&self, prefix: &Prefix, claims: AccessClaims) -> Result<AccessToken, Error> {
        let kid = self.current.ok_or(Error::NoSigningKey)?;
        let key = self.key(kid).ok_or(Error::NoSigningKey)?;
        let mut bytes = claims.owner.as_bytes().to_vec();
        bytes.push(0);
        bytes.extend_from_slice(scopes_text(&claims.scopes).as_bytes());
        if claims.bound {
            bytes.extend_from_slice(b"\0bound");
        }
        if bytes.len() > MAX_CLAIMS {
            return Err(Error::InvalidInput(
                "owner and scopes are too long for an access token",
            ));
        }
        // A clock before 1970 has no time a token can carry: refuse, rather
        // than sign a time it would read differently.
        let (issued, expires) = match (seconds(claims.issued_at), seconds(claims.expires_at)) {
            (Some(issued), Some(expires)) => (issued, expires),
            _ => return Err(Error::InvalidInput(BEFORE_1970)),
        };
        // Room for the whole token at once: no reallocation leaves a copy
        // of its text behind in freed memory.
        let mut text = String::with_capacity(MAX_TOKEN_LEN);
        text.push_str(prefix.as_str());
        text.push('_');
        text.push(char::from(TOKEN_VERSION));
        push_fixed(&mut text, u128::from(kid), KID_LEN);
        text.push_str(&claims.key_id.to_string());
        push_fixed(&mut text, issued, TIME_LEN);
        push_fixed(&mut text, expires, TIME_LEN);
        push_fixed(&mut text, bytes.len() as u128, CLAIMS_LEN_LEN);
        for chunk in bytes.chunks(CHUNK_BYTES) {
            let mut block = [0u8; 16];
            block[1..1 + chunk.len()].copy_from_slice(chunk);
            push_fixed(&mut text, u128::from_be_bytes(block), CHUNK_CHARS);
        }
        let tag = mac(key, text.as_bytes());
        push_fixed(&mut text, tag, MAC_LEN);
        let checksum = u128::from(token::crc32(text.as_bytes()));
        push_fixed(&mut text, checksum, token::CHECKSUM_LEN);
        let hint_len = prefix.as_str().len() + 2 + KID_LEN + token::ID_LEN;
        Ok(AccessToken {
            text,
            hint_len,
            claims,
        })
    }

    /// Checks a token's shape, checksum, signing key and MAC, and reads its
    /// claims. Expiry and the parent key are the caller's.
    pub(crate) fn open(
        &self,
        prefix: &Prefix,
        presented: &str,
    ) -> Result<AccessClaims, VerifyError> {
        let bytes = presented.as_bytes();
        let body = parse(prefix, bytes)?;
        let key = self.key(body.kid).ok_or(VerifyError::Invalid)?;
        let expected = mac(key, &bytes[..body.mac_at]).to_be_bytes();
        if !bool::from(expected.ct_eq(&body.mac.to_be_bytes())) {
            return Err(VerifyError::Invalid);
        }
        claims_of(&body).ok_or(VerifyError::Invalid)
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Signer")
            .field("current", &self.current)
            .field("key_ids", &ids)
            .finish()
    }
}

/// The id of the key a token names, if `presented` has the shape and
/// checksum of a token of `prefix` (its MAC unchecked): public, for the
/// events of refused tokens, as for refused keys.
pub(crate) fn key_id_of(prefix: &Prefix, presented: &str) -> Option<KeyId> {
    parse(prefix, presented.as_bytes()).ok().map(|b| b.key_id)
}

/// Checks a presented token's length, prefix and version, then reads its
/// body (see [`parse_body`]).
fn parse(prefix: &Prefix, bytes: &[u8]) -> Result<Body, VerifyError> {
    let malformed = |r| VerifyError::Malformed(r);
    if bytes.len() > MAX_TOKEN_LEN {
        return Err(malformed(MalformedReason::TooLong));
    }
    let head = prefix.as_str().len() + 2;
    // Length before prefix, as for API keys: a token cut short is reported
    // as such, not as a prefix it has right.
    if bytes.len() < head + FIXED_LEN {
        return Err(malformed(MalformedReason::WrongLength));
    }
    if &bytes[..head - 2] != prefix.as_str().as_bytes() || bytes[head - 2] != b'_' {
        return Err(malformed(MalformedReason::WrongPrefix));
    }
    if bytes[head - 1] != TOKEN_VERSION {
        return Err(malformed(MalformedReason::UnknownVersion));
    }
    parse_body(bytes, head)
}

/// The fields of a token that passed its shape and checksum checks.
struct Body {
    kid: u8,
    key_id: KeyId,
    issued: u128,
    expires: u128,
    claims: Vec<u8>,
    mac: u128,
    mac_at: usize,
}

/// Reads the fields after `<prefix>_T` (at `head`), checking lengths,
/// alphabet and checksum. Never panics.
fn parse_body(bytes: &[u8], head: usize) -> Result<Body, VerifyError> {
    let malformed = |r| VerifyError::Malformed(r);
    if bytes.len() < head + FIXED_LEN {
        return Err(malformed(MalformedReason::WrongLength));
    }
    if !bytes[head..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(malformed(MalformedReason::BadAlphabet));
    }
    // The claims length gives the token's whole length: a token cut short
    // (a header limit, a bad copy) or run on is refused for its length, as
    // an API key is, rather than for the checksum that its cut lost.
    let len_at = head + KID_LEN + token::ID_LEN + 2 * TIME_LEN;
    let declared = decode_fixed(&bytes[len_at..len_at + CLAIMS_LEN_LEN])
        .and_then(|n| usize::try_from(n).ok())
        .map(|n| head + FIXED_LEN + n.div_ceil(CHUNK_BYTES) * CHUNK_CHARS);
    if declared != Some(bytes.len()) {
        return Err(malformed(MalformedReason::WrongLength));
    }
    let (checked, checksum) = bytes.split_at(bytes.len() - token::CHECKSUM_LEN);
    if decode_fixed(checksum) != Some(u128::from(token::crc32(checked))) {
        return Err(malformed(MalformedReason::BadChecksum));
    }
    let mut at = head;
    let mut field = |len: usize| -> Result<(u128, usize), VerifyError> {
        let value = bytes.get(at..at + len).and_then(decode_fixed);
        at += len;
        value
            .map(|v| (v, at))
            .ok_or(malformed(MalformedReason::WrongLength))
    };
    let (kid, _) = field(KID_LEN)?;
    let kid = u8::try_from(kid).map_err(|_| malformed(MalformedReason::WrongLength))?;
    let (key_id, _) = field(token::ID_LEN)?;
    let key_id = u64::try_from(key_id)
        .map(KeyId::from_u64)
        .map_err(|_| malformed(MalformedReason::IdOutOfRange))?;
    let (issued, _) = field(TIME_LEN)?;
    let (expires, _) = field(TIME_LEN)?;
    let (claims_len, _) = field(CLAIMS_LEN_LEN)?;
    let claims_len =
        usize::try_from(claims_len).map_err(|_| malformed(MalformedReason::WrongLength))?;
    let chunks = claims_len.div_ceil(CHUNK_BYTES);
    if claims_len > MAX_CLAIMS || bytes.len() != head + FIXED_LEN + chunks * CHUNK_CHARS {
        return Err(malformed(MalformedReason::WrongLength));
    }
    let mut claims = Vec::with_capacity(chunks * CHUNK_BYTES);
    let mut mac_at = 0;
    for _ in 0..chunks {
        let (block, end) = field(CHUNK_CHARS)?;
        let block = block.to_be_bytes();
        if block[0] != 0 {
            return Err(malformed(MalformedReason::WrongLength));
        }
        claims.extend_from_slice(&block[1..]);
        mac_at = end;
    }
    claims.truncate(claims_len);
    let (mac, _) = field(MAC_LEN)?;
    if chunks == 0 {
        mac_at = head + KID_LEN + token::ID_LEN + 2 * TIME_LEN + CLAIMS_LEN_LEN;
    }
    Ok(Body {
        kid,
        key_id,
        issued,
        expires,
        claims,
        mac,
        mac_at,
    })
}

fn claims_of(body: &Body) -> Option<AccessClaims> {
    // owner NUL scopes [NUL "bound"]: owners and scopes never hold a NUL.
    let mut parts = body.claims.split(|&b| b == 0);
    let owner = std::str::from_utf8(parts.next()?).ok()?.to_owned();
    let scopes = std::str::from_utf8(parts.next()?).ok()?;
    let bound = match parts.next() {
        None => false,
        Some(b"bound") => true,
        Some(_) => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    let scopes = match scopes {
        "*" => ScopeSet::unrestricted(),
        "" => ScopeSet::empty(),
        list => ScopeSet::parse(list.split(' ')).ok()?,
    };
    Some(AccessClaims {
        key_id: body.key_id,
        owner,
        scopes,
        issued_at: instant(body.issued)?,
        expires_at: instant(body.expires)?,
        bound,
    })
}

/// Finds an access token that a run of word characters ends with (for the
/// scanner), its version character `T` at `marker` (just after a `_`):
/// shape and checksum only, no key needed. The prefix may be glued to what
/// precedes it with `_`: each possible prefix start is tried.
pub(crate) fn recognise_at(run: &[u8], marker: usize) -> Option<Hit> {
    if marker == 0 || run.get(marker) != Some(&TOKEN_VERSION) || run[marker - 1] != b'_' {
        return None;
    }
    let head = marker + 1;
    // The checksum covers the token from its prefix on: try each place the
    // prefix could start, as for API keys.
    token::prefix_starts(&run[..marker - 1]).find_map(|start| {
        let body = parse_body(&run[start..], head - start).ok()?;
        Some(Hit {
            start,
            prefix_end: marker - 1,
            secret_start: head + KID_LEN + token::ID_LEN,
            key_id: body.key_id,
            token: true,
        })
    })
}

fn scopes_text(scopes: &ScopeSet) -> String {
    if scopes.is_unrestricted() {
        return "*".to_owned();
    }
    scopes.iter().collect::<Vec<_>>().join(" ")
}

fn mac(key: &[u8; 32], data: &[u8]) -> u128 {
    let hash = blake3::keyed_hash(key, data);
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_be_bytes(first)
}

/// Seconds since 1970, if `t` is not earlier.
fn seconds(t: OffsetDateTime) -> Option<u128> {
    u128::try_from(t.unix_timestamp()).ok()
}

fn instant(secs: u128) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()
}

fn push_fixed(text: &mut String, value: u128, width: usize) {
    let mut digits = [0u8; 22];
    encode_fixed(value, &mut digits[..width]);
    text.extend(digits[..width].iter().map(|&b| char::from(b)));
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    /// The JSON form documented on `AccessClaims`, written out by hand:
    /// `key`, `owner`, `scopes`, the two instants in UTC, and `bound` only
    /// when set.
    #[test]
    fn claims_serialize_to_the_documented_json() {
        let claims = |scopes: ScopeSet, issued_at, expires_at, bound| AccessClaims {
            key_id: "0Oa2wCGYzlq".parse().unwrap(),
            owner: "acct_42".into(),
            scopes,
            issued_at,
            expires_at,
            bound,
        };
        let t0 = datetime!(2026-01-01 00:00 UTC);
        let t1 = datetime!(2026-01-01 00:30 UTC);
        let cases = [
            (
                claims(ScopeSet::parse(["invoices:read"]).unwrap(), t0, t1, false),
                r#"{"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":["invoices:read"],"issued_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:30:00Z"}"#,
            ),
            (
                claims(ScopeSet::unrestricted(), t0, t1, true),
                r#"{"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":"unrestricted","issued_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:30:00Z","bound":true}"#,
            ),
            // A host can set the instants: in another offset, they are
            // still written in UTC.
            (
                claims(
                    ScopeSet::empty(),
                    datetime!(2026-01-01 01:30 +01:30),
                    datetime!(2026-01-01 00:30:30 +00:00:30),
                    false,
                ),
                r#"{"key":"0Oa2wCGYzlq","owner":"acct_42","scopes":[],"issued_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:30:00Z"}"#,
            ),
        ];
        for (claims, expected) in &cases {
            assert_eq!(
                &serde_json::to_string(claims).unwrap(),
                expected,
                "{claims:?}"
            );
        }
    }

    /// A signer with one key, of id `kid`, for `prefix`.
    fn one_key_signer(kid: u8, prefix: &Prefix) -> Signer {
        let mut signer = Signer::with_capacity(1);
        signer
            .add(kid, &[7; 32], prefix.as_str(), None, true)
            .unwrap();
        signer
    }

    /// Claims of key 42 for `owner`, unscoped, unbound, for half an hour.
    fn claims_of_42(owner: String) -> AccessClaims {
        AccessClaims {
            key_id: KeyId::from_u64(42),
            owner,
            scopes: ScopeSet::empty(),
            issued_at: datetime!(2026-01-01 00:00 UTC),
            expires_at: datetime!(2026-01-01 00:30 UTC),
            bound: false,
        }
    }

    /// A token's `Debug` shows what names it and no more: prefix, `_T`,
    /// signing key id and key id, whatever the prefix's length (not the
    /// times after them, and never the MAC).
    #[test]
    fn token_debug_shows_exactly_prefix_signing_key_id_and_key_id() {
        for prefix in ["a", "acme", "acme_live_eu"] {
            let prefix = Prefix::new(prefix).unwrap();
            let signer = one_key_signer(7, &prefix);
            let token = signer.sign(&prefix, claims_of_42("o".to_owned())).unwrap();
            let shown = format!("{token:?}");
            let named = format!("{}_T7{}", prefix.as_str(), KeyId::from_u64(42));
            let expected = format!("AccessToken {{ token: {named}…, redacted, claims: ");
            assert!(shown.starts_with(&expected), "{shown}");
        }
    }

    /// The longest token, of a 32-character prefix and the most bytes of
    /// claims, is exactly `MAX_TOKEN_LEN` long and opens: only longer text
    /// is refused as too long (as `the_longest_key_is_not_too_long` pins
    /// for keys). One byte of claims more is refused at signing.
    #[test]
    fn the_longest_token_is_not_too_long() {
        let prefix = Prefix::new(&"a".repeat(token::MAX_PREFIX_LEN)).unwrap();
        let signer = one_key_signer(0, &prefix);
        // With the NUL after it, `MAX_CLAIMS` bytes.
        let claims = claims_of_42("o".repeat(MAX_CLAIMS - 1));
        let token = signer.sign(&prefix, claims.clone()).unwrap();
        assert_eq!(token.expose().len(), MAX_TOKEN_LEN);
        assert_eq!(signer.open(&prefix, token.expose()), Ok(claims.clone()));
        // A claims length over the most, in a text of the same length and
        // a good checksum, is malformed, whatever the MAC.
        let mut text = token.expose().as_bytes().to_vec();
        let at = prefix.as_str().len() + 2 + KID_LEN + token::ID_LEN + 2 * TIME_LEN;
        encode_fixed(MAX_CLAIMS as u128 + 1, &mut text[at..at + CLAIMS_LEN_LEN]);
        let sum_at = text.len() - token::CHECKSUM_LEN;
        encode_fixed(
            u128::from(token::crc32(&text[..sum_at])),
            &mut text[sum_at..],
        );
        assert_eq!(
            signer.open(&prefix, std::str::from_utf8(&text).unwrap()),
            Err(VerifyError::Malformed(MalformedReason::WrongLength))
        );
        let mut over = claims;
        over.owner.push('o');
        assert!(matches!(
            signer.sign(&prefix, over),
            Err(Error::InvalidInput(_))
        ));
    }

    /// The MAC keys are derived in place, as `blake3::derive_key` would
    /// derive them, into a list that never reallocates (which would leave
    /// copies of them in freed memory).
    #[test]
    fn signing_keys_are_derived_in_place_without_reallocation() {
        let mut signer = Signer::with_capacity(8);
        let buffer = signer.keys.as_ptr();
        for id in 0..8u8 {
            signer.add(id, &[id; 32], "acme", None, id == 7).unwrap();
        }
        assert_eq!(signer.keys.as_ptr(), buffer, "the key list reallocated");
        for id in 0..8u8 {
            let mut material = [id; 32].to_vec();
            material.extend_from_slice(b"acme");
            assert_eq!(
                signer.key(id),
                Some(&blake3::derive_key(CONTEXT, &material))
            );
        }
        assert!(matches!(
            signer.add(3, &[0; 32], "acme", None, false),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(signer.keys.len(), 8);
    }

    /// With a pepper, the MAC key depends on it too, and on nothing that a
    /// longer prefix could imitate.
    #[test]
    fn signing_keys_are_derived_for_the_pepper() {
        let mut signer = Signer::with_capacity(3);
        signer.add(0, &[1; 32], "acme", None, false).unwrap();
        signer
            .add(1, &[1; 32], "acme", Some(&[2; 32]), false)
            .unwrap();
        signer
            .add(2, &[1; 32], "acme", Some(&[3; 32]), true)
            .unwrap();
        let keys = [0, 1, 2].map(|id| *signer.key(id).unwrap());
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[1], keys[2]);
        let mut material = [1; 32].to_vec();
        material.extend_from_slice(b"acme");
        material.push(0xFF);
        material.extend_from_slice(&[2; 32]);
        assert_eq!(keys[1], blake3::derive_key(CONTEXT, &material));
    }

    /// A token's MAC is BLAKE3 keyed with the derived signing key, over
    /// everything before it, cut to its first 16 bytes (computed here with
    /// `blake3` directly); a token signed under another key is refused,
    /// and so is one whose MAC was changed and its checksum made good.
    #[test]
    fn the_mac_is_keyed_blake3_and_another_key_is_refused() {
        let prefix = Prefix::new("acme").unwrap();
        let signer = one_key_signer(3, &prefix);
        let token = signer.sign(&prefix, claims_of_42("o".to_owned())).unwrap();
        let text = token.expose().as_bytes();
        let mac_at = text.len() - token::CHECKSUM_LEN - MAC_LEN;
        let mut material = [7; 32].to_vec();
        material.extend_from_slice(b"acme");
        let key = blake3::derive_key(CONTEXT, &material);
        let hash = blake3::keyed_hash(&key, &text[..mac_at]);
        let mut expected = [0u8; MAC_LEN];
        encode_fixed(
            u128::from_be_bytes(hash.as_bytes()[..16].try_into().unwrap()),
            &mut expected,
        );
        assert_eq!(&text[mac_at..mac_at + MAC_LEN], &expected[..]);
        // Same signing key id, another key: refused.
        let mut other = Signer::with_capacity(1);
        other.add(3, &[8; 32], "acme", None, true).unwrap();
        assert_eq!(
            other.open(&prefix, token.expose()),
            Err(VerifyError::Invalid)
        );
        // A signing key id the signer does not hold: refused.
        let unknown = one_key_signer(4, &prefix);
        assert_eq!(
            unknown.open(&prefix, token.expose()),
            Err(VerifyError::Invalid)
        );
        // Another MAC with a good checksum: refused.
        let mut forged = text.to_vec();
        forged[mac_at] = if forged[mac_at] == b'0' { b'1' } else { b'0' };
        let sum_at = forged.len() - token::CHECKSUM_LEN;
        encode_fixed(
            u128::from(token::crc32(&forged[..sum_at])),
            &mut forged[sum_at..],
        );
        assert_eq!(
            signer.open(&prefix, std::str::from_utf8(&forged).unwrap()),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            signer.open(&prefix, token.expose()),
            Ok(claims_of_42("o".to_owned()))
        );
    }

    /// Claims come back from a token as they went in: scopes unrestricted,
    /// empty or listed, bound or not, and the instants to the second.
    #[test]
    fn claims_round_trip_through_a_token() {
        let prefix = Prefix::new("acme").unwrap();
        let signer = one_key_signer(0, &prefix);
        for (scopes, bound) in [
            (ScopeSet::unrestricted(), false),
            (ScopeSet::empty(), true),
            (
                ScopeSet::parse(["invoices:read", "customers:*"]).unwrap(),
                true,
            ),
            (ScopeSet::parse(["a:b"]).unwrap(), false),
        ] {
            let claims = AccessClaims {
                scopes,
                bound,
                issued_at: datetime!(2026-05-01 12:34:56 UTC),
                expires_at: datetime!(2026-05-01 13:04:56 UTC),
                ..claims_of_42("acct_42".to_owned())
            };
            let token = signer.sign(&prefix, claims.clone()).unwrap();
            assert_eq!(token.claims, claims);
            assert_eq!(signer.open(&prefix, token.expose()), Ok(claims));
        }
    }

    /// A signer can sign only with a current key it holds; its `Debug`
    /// shows the signing key ids and never the keys.
    #[test]
    fn a_signer_signs_with_its_current_key_and_shows_only_ids() {
        let prefix = Prefix::new("acme").unwrap();
        let mut signer = Signer::with_capacity(2);
        assert!(!signer.can_sign());
        signer.add(5, &[1; 32], "acme", None, false).unwrap();
        assert!(!signer.can_sign());
        assert!(matches!(
            signer.sign(&prefix, claims_of_42("o".to_owned())),
            Err(Error::NoSigningKey)
        ));
        signer.add(61, &[2; 32], "acme", None, true).unwrap();
        assert!(signer.can_sign());
        assert!(matches!(
            signer.add(62, &[3; 32], "acme", None, false),
            Err(Error::InvalidInput(_))
        ));
        let token = signer.sign(&prefix, claims_of_42("o".to_owned())).unwrap();
        assert!(token.expose().starts_with("acme_Tz"), "{:?}", token);
        assert_eq!(
            format!("{signer:?}"),
            "Signer { current: Some(61), key_ids: [5, 61] }"
        );
    }

    /// The key id a token names is read from its shape and checksum alone
    /// (for the events of refused tokens), whatever the MAC; text that is
    /// not a token of the prefix names none.
    #[test]
    fn key_id_of_reads_the_id_of_a_well_formed_token() {
        let prefix = Prefix::new("acme").unwrap();
        let token = one_key_signer(0, &prefix)
            .sign(&prefix, claims_of_42("o".to_owned()))
            .unwrap();
        assert_eq!(
            key_id_of(&prefix, token.expose()),
            Some(KeyId::from_u64(42))
        );
        let other = Prefix::new("acme_test").unwrap();
        assert_eq!(key_id_of(&other, token.expose()), None);
        assert_eq!(key_id_of(&prefix, &token.expose()[1..]), None);
    }
}
