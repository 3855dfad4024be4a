//! Hash at rest: a keyed BLAKE3 of (key id, secret).
//!
//! Why BLAKE3 and not Argon2 or PBKDF2: those stretch a low-entropy password
//! so that guessing it costs time. A keyward secret is 142 bits from the OS
//! CSPRNG; nobody can guess it, so stretching buys nothing and would cost
//! 16-28 ms on every request (Argon2id with the `argon2` crate's defaults
//! on the bench machines, BENCHMARKS.md). A single keyed BLAKE3 call
//! (~60 ns) is preimage resistant, and its key (the host's pepper, kept in
//! its secret manager) means a stolen copy of the store cannot even be
//! checked against a guessed key without the pepper.
//!
//! The pepper itself gets no such protection, so it must be 32 random
//! bytes, not a passphrase: the store's settings (and every export) hold
//! this hash of a fixed input (`STORE_CHECK` in `ring.rs`, how `build`
//! refuses a wrong pepper), against which a guessed pepper is tested
//! offline at the cost of a few BLAKE3 compressions, as it is against the
//! record of any key whose plaintext the guesser holds (their own).
//!
//! The 32-byte hashing key is derived once per ring with BLAKE3's
//! `derive_key` under a fixed purpose string, from the host's pepper (when
//! it gives one) and the ring's prefix: every keyward hash is then domain
//! separated from any other use of BLAKE3 or of the pepper, and a key
//! relabelled with another ring's prefix (its checksum recomputed) does not
//! verify on that ring, even under the same pepper.
//!
//! The stored form is self-describing, `$kw-b3k$v=1$<64 hex digits>`, so a
//! later algorithm can sit beside this one. Digests are compared in constant
//! time through [`subtle`], as four 64-bit words.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::token::{KeyId, MAX_PREFIX_LEN, SECRET_LEN};

/// The purpose string of the hashing key (BLAKE3 `derive_key` context).
const CONTEXT: &str = "keyward 2026-11-27 api key secret hash v1";
/// The algorithm tag of the stored form.
const TAG: &str = "$kw-b3k$v=1$";
/// The only hash version so far.
pub(crate) const VERSION: u8 = 1;

/// The stored hash of a key: algorithm, version and a 32-byte digest.
///
/// `==` is constant time. There is no accessor for the raw bytes, so
/// nothing compares them with a variable-time `==` by accident; the only
/// way out is the stored text form (`Display`, `Serialize`), for storing:
/// compare hashes as `KeyHash`es, never as their texts. `Debug` does not
/// print the digest.
#[derive(Clone)]
pub struct KeyHash {
    digest: [u8; 32],
}

impl KeyHash {
    /// The hash version of this record (1 for keyed BLAKE3).
    pub fn version(&self) -> u8 {
        VERSION
    }

    /// The digest as four words, as `==` reads it (also read, and thrown
    /// away, by a lookup of an unknown id: see `MemoryStore::inspect`).
    #[inline]
    pub(crate) fn words(&self) -> [u64; 4] {
        let mut words = [0u64; 4];
        for (word, chunk) in words.iter_mut().zip(self.digest.chunks_exact(8)) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            *word = u64::from_le_bytes(bytes);
        }
        words
    }

    /// A digest no key hashes to in practice, compared against when the id is
    /// unknown so that the work equals that of a wrong secret.
    pub(crate) const fn placeholder() -> KeyHash {
        KeyHash { digest: [0u8; 32] }
    }
}

impl KeyHash {
    /// Whether the first 16 bytes of the digest are `head`, in constant
    /// time, as [`ct_eq`](ConstantTimeEq::ct_eq) compares all 32: 128 bits
    /// a guess must match, of a keyed hash (see SECURITY.md).
    #[inline]
    pub(crate) fn head_is(&self, head: [u64; 2]) -> bool {
        let words = self.words();
        let diff = (words[0] ^ head[0]) | (words[1] ^ head[1]);
        diff.ct_eq(&0).into()
    }
}

impl ConstantTimeEq for KeyHash {
    /// Folds the differences of the four words into one (xor and or: no
    /// branch, and no early exit) and asks `subtle` whether it is zero: one
    /// optimisation barrier per compare instead of one per word.
    #[inline]
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        let (a, b) = (self.words(), other.words());
        let diff = a.iter().zip(&b).fold(0u64, |acc, (x, y)| acc | (x ^ y));
        diff.ct_eq(&0)
    }
}

impl PartialEq for KeyHash {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for KeyHash {}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({TAG}…)")
    }
}

impl fmt::Display for KeyHash {
    /// The stored form, `$kw-b3k$v=1$<64 hex digits>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TAG)?;
        for b in self.digest {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The stored form of a hash could not be read. `#[non_exhaustive]`, so
/// that it can come to say more (which part is wrong) without breaking
/// code that uses it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised key hash: expected `$kw-b3k$v=1$` and 64 lowercase hex digits")]
#[non_exhaustive]
pub struct HashFormatError;

impl FromStr for KeyHash {
    type Err = HashFormatError;

    fn from_str(s: &str) -> Result<Self, HashFormatError> {
        let hex = s.strip_prefix(TAG).ok_or(HashFormatError)?.as_bytes();
        if hex.len() != 64 {
            return Err(HashFormatError);
        }
        let mut digest = [0u8; 32];
        for (out, pair) in digest.iter_mut().zip(hex.chunks_exact(2)) {
            *out = (hex_val(pair[0]).ok_or(HashFormatError)? << 4)
                | hex_val(pair[1]).ok_or(HashFormatError)?;
        }
        Ok(KeyHash { digest })
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl Serialize for KeyHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The ring's hashing key, derived once from the host's pepper.
pub(crate) struct Hasher {
    key: [u8; 32],
}

impl Hasher {
    /// A hasher for keys of `prefix`, keyed by `pepper` or, without one, by
    /// the fixed context alone. The prefix is part of the key material, so a
    /// key of one ring does not verify on another ring that shares its store
    /// and pepper (an `acme_live` key relabelled `acme_test` fails).
    pub(crate) fn new(pepper: Option<&[u8; 32]>, prefix: &str) -> Self {
        let prefix = &prefix.as_bytes()[..prefix.len().min(MAX_PREFIX_LEN)];
        let mut material = Zeroizing::new([0u8; 32 + 1 + MAX_PREFIX_LEN]);
        let mut len = 0;
        if let Some(pepper) = pepper {
            material[..32].copy_from_slice(pepper);
            len = 32;
        }
        // A length byte keeps (pepper, prefix) pairs unambiguous.
        material[len] = prefix.len() as u8;
        material[len + 1..len + 1 + prefix.len()].copy_from_slice(prefix);
        len += 1 + prefix.len();
        Hasher {
            key: blake3::derive_key(CONTEXT, &material[..len]),
        }
    }

    /// Hashes the id and the secret's base62 text: 1 + 8 + 24 = 33 bytes, one
    /// BLAKE3 block.
    #[inline]
    pub(crate) fn hash(&self, id: KeyId, secret: &[u8; SECRET_LEN]) -> KeyHash {
        let mut input = [0u8; 1 + 8 + SECRET_LEN];
        input[0] = VERSION;
        input[1..9].copy_from_slice(&id.as_u64().to_le_bytes());
        input[9..].copy_from_slice(secret);
        let digest = *blake3::keyed_hash(&self.key, &input).as_bytes();
        input.zeroize();
        KeyHash { digest }
    }

    /// [`hash`](Self::hash) for a secret just drawn (issue, regenerate),
    /// which the caller hands out: the stack the hashing used is then
    /// overwritten.
    ///
    /// BLAKE3 copies its input into state of its own on the stack (a chunk
    /// state, an output block) and leaves it there when it returns, out of
    /// reach of the `zeroize` above. Such a stale copy is later copied to
    /// the heap: a value built on the stack and moved into a box carries
    /// whatever its bytes that are never written held (the payload of a
    /// `None`, padding). With rustc 1.95, `regenerate`'s clone of the key
    /// built the new `Box<Extra>` over that stack, and the unused payload
    /// of its `contact: None` held the 33 bytes hashed (version, id,
    /// secret): a heap block that the `Issued` later freed unwiped
    /// (`tests/wipe_on_drop.rs`). Wiping the stack the hashing used removes
    /// the copy at its source, whatever the build lays out; `verify` keeps
    /// the plain `hash` (its input is the caller's, and it is the hot path).
    pub(crate) fn hash_new_secret(&self, id: KeyId, secret: &[u8; SECRET_LEN]) -> KeyHash {
        let digest = self.hash_out_of_line(id, secret);
        // Called from the same frame as the hashing, so its frame lies
        // over the stack that BLAKE3 used (well under 8 KiB for one block).
        // Best effort: Rust promises no stack layout, but no safe code can
        // reach BLAKE3's copies otherwise.
        wipe_stack();
        digest
    }

    /// The hashing in a frame of its own, below the caller's, so that all
    /// of BLAKE3's state is where [`wipe_stack`] then writes.
    #[inline(never)]
    fn hash_out_of_line(&self, id: KeyId, secret: &[u8; SECRET_LEN]) -> KeyHash {
        self.hash(id, secret)
    }
}

/// Overwrites 8 KiB of the stack below the caller's frame with zeros
/// (volatile writes, which the compiler keeps), without `unsafe`.
#[inline(never)]
fn wipe_stack() {
    let mut scratch = [0u64; 1024];
    scratch.zeroize();
    std::hint::black_box(&scratch);
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl ZeroizeOnDrop for Hasher {}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(keyed BLAKE3, key redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8; SECRET_LEN] = b"abcdefghijklmnopqrstuvwx";

    /// Every bit of the id and every character of the secret is hashed: a
    /// change to any one of them gives another digest.
    #[test]
    fn same_input_same_hash_and_every_input_matters() {
        let h = Hasher::new(None, "acme");
        let a = h.hash(KeyId::from_u64(7), SECRET);
        assert_eq!(a, h.hash(KeyId::from_u64(7), SECRET));
        for bit in 0..64 {
            let id = KeyId::from_u64(7 ^ (1 << bit));
            assert_ne!(a, h.hash(id, SECRET), "bit {bit} of the id");
        }
        for position in 0..SECRET_LEN {
            let mut other = *SECRET;
            other[position] = b'0';
            assert_ne!(
                a,
                h.hash(KeyId::from_u64(7), &other),
                "character {position}"
            );
        }
    }

    /// The hash at rest is a stored format (SPEC 2): records written by
    /// any earlier build must still verify. A fixed pepper, prefix, id and
    /// secret give this exact stored text, with and without a pepper. A
    /// change to the purpose string, the derivation of the hashing key or
    /// the hashed input fails here; one made on purpose takes a new hash
    /// version (`v=2`) beside this one, never a change to `v=1`.
    #[test]
    fn a_known_input_gives_the_pinned_digest() {
        let id = KeyId::from_u64(0x0123_4567_89AB_CDEF);
        let secret = b"Zy9x8W7v6U5t4S3r2Q1p0OnM";
        let pepper = *b"fixture pepper, not a real one!!";
        // Both digests were checked against an independent implementation
        // of the derivation (Python, the `blake3` package).
        assert_eq!(
            Hasher::new(Some(&pepper), "acme_live")
                .hash(id, secret)
                .to_string(),
            "$kw-b3k$v=1$06cf882d84655a471a85ea49a0cbb86c23825702a793bfc08776bd28a46a2bc4"
        );
        assert_eq!(
            Hasher::new(None, "acme_live").hash(id, secret).to_string(),
            "$kw-b3k$v=1$7b963b31101f095e922db427c6cbedf52863e08be5ead04dd2cce06df32e835e"
        );
    }

    #[test]
    fn pepper_changes_the_hash() {
        let plain = Hasher::new(None, "acme").hash(KeyId::from_u64(7), SECRET);
        let peppered = Hasher::new(Some(&[9u8; 32]), "acme").hash(KeyId::from_u64(7), SECRET);
        let other = Hasher::new(Some(&[8u8; 32]), "acme").hash(KeyId::from_u64(7), SECRET);
        assert_ne!(plain, peppered);
        assert_ne!(peppered, other);
    }

    #[test]
    fn prefix_changes_the_hash() {
        let live = Hasher::new(Some(&[9u8; 32]), "acme_live").hash(KeyId::from_u64(7), SECRET);
        let test = Hasher::new(Some(&[9u8; 32]), "acme_test").hash(KeyId::from_u64(7), SECRET);
        assert_ne!(live, test);
    }

    #[test]
    fn stored_form_round_trips_and_is_tagged() {
        let h = Hasher::new(None, "acme").hash(KeyId::from_u64(7), SECRET);
        let text = h.to_string();
        assert!(text.starts_with("$kw-b3k$v=1$"));
        assert_eq!(text.len(), TAG.len() + 64);
        assert_eq!(text.parse::<KeyHash>().unwrap(), h);
        assert_eq!(h.version(), 1);
        for bad in [
            "",
            "$kw-b3k$v=2$00",
            &text.replace("v=1", "v=2"),
            &text[..text.len() - 1],
            &text.to_uppercase(),
        ] {
            assert_eq!(bad.parse::<KeyHash>(), Err(HashFormatError), "{bad}");
        }
    }

    #[test]
    fn every_digit_position_accepts_exactly_lowercase_hex() {
        let h = Hasher::new(None, "acme").hash(KeyId::from_u64(7), SECRET);
        let text = h.to_string();
        for position in 0..64 {
            for byte in 0u8..128 {
                let mut bytes = text.clone().into_bytes();
                bytes[TAG.len() + position] = byte;
                let candidate = String::from_utf8(bytes).unwrap();
                let parsed = candidate.parse::<KeyHash>();
                if byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte) {
                    let value = (byte as char).to_digit(16).unwrap() as u8;
                    let digest = parsed.expect("a hex digit is accepted").digest;
                    let nibble = if position % 2 == 0 {
                        digest[position / 2] >> 4
                    } else {
                        digest[position / 2] & 0x0f
                    };
                    assert_eq!(nibble, value, "digit {byte} at {position}");
                } else {
                    assert_eq!(parsed, Err(HashFormatError), "byte {byte} at {position}");
                }
            }
        }
    }

    #[test]
    fn equality_sees_every_byte_of_the_digest() {
        let hasher = Hasher::new(None, "pfx");
        let a = hasher.hash(KeyId::from_u64(5), SECRET);
        assert!(a == a.clone());
        for byte in 0..32 {
            for bit in 0..8 {
                let mut b = a.clone();
                b.digest[byte] ^= 1 << bit;
                assert!(a != b, "a flip of bit {bit} of byte {byte} is seen");
                assert!(!bool::from(a.ct_eq(&b)));
            }
        }
    }

    /// The same bit changed in two, three or all four words of the digest
    /// is a difference too: the fold keeps every word's difference (an
    /// xor of the differences would cancel an even number of them).
    #[test]
    fn equality_sees_the_same_change_in_several_words() {
        let a = Hasher::new(None, "pfx").hash(KeyId::from_u64(5), SECRET);
        for words in [&[0, 1][..], &[1, 3], &[0, 1, 2], &[0, 1, 2, 3]] {
            for bit in [0, 7] {
                let mut b = a.clone();
                for word in words {
                    b.digest[word * 8] ^= 1 << bit;
                }
                assert!(a != b, "bit {bit} changed in words {words:?}");
                assert!(!bool::from(a.ct_eq(&b)));
            }
        }
    }

    /// `Debug` names the type and its algorithm tag, nothing else.
    #[test]
    fn debug_is_the_tag_only() {
        let h = Hasher::new(None, "acme").hash(KeyId::from_u64(7), SECRET);
        assert_eq!(format!("{h:?}"), "KeyHash($kw-b3k$v=1$…)");
        assert_eq!(
            format!("{:?}", Hasher::new(Some(&[1; 32]), "acme")),
            "Hasher(keyed BLAKE3, key redacted)"
        );
    }

    #[test]
    fn debug_hides_the_digest() {
        let h = Hasher::new(None, "acme").hash(KeyId::from_u64(7), SECRET);
        let hex = &h.to_string()[TAG.len()..];
        assert!(!format!("{h:?}").contains(&hex[..8]));
        assert!(!format!("{:?}", Hasher::new(Some(&[1; 32]), "acme")).contains("1, 1"));
    }
}
