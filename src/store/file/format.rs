//! The on-disk format: a header, then one record per committed batch.
//!
//! ```text
//! header (16 bytes)
//!   magic    8  b"KEYWARD\0"
//!   version  2  u16 LE, 1
//!   reserved 2  zero
//!   crc      4  u32 LE, CRC32 of the 12 bytes above
//! record (12-byte head, then the payload)
//!   magic    2  b"KW"
//!   kind     1  1 = batch
//!   flags    1  zero
//!   len      4  u32 LE, payload length
//!   crc      4  u32 LE, CRC32 of kind, flags, len and payload
//!   payload  len bytes: a JSON array of entries, each
//!            {"put": StoredKey} | {"remove": "<key id>"} | {"settings": RingSettings}
//! ```
//!
//! One `apply` is one record, so a batch is on disk whole or not at all: a
//! record is taken only when its checksum matches. Records are replayed in
//! order; a later `put` of an id replaces the earlier one.
//!
//! At open, an invalid record at offset X is a *torn tail* (a write cut
//! short by a crash; dropped) only if no valid record starts anywhere after
//! X. Otherwise the damage is followed by committed data, and dropping it
//! could resurrect a revoked key: the open fails with the offset.

use serde::{Deserialize, Serialize};

use crate::store::{RingSettings, StoredKey};
use crate::token::KeyId;

pub(crate) const HEADER_LEN: usize = 16;
pub(crate) const RECORD_HEAD_LEN: usize = 12;
const FILE_MAGIC: &[u8; 8] = b"KEYWARD\0";
const FORMAT_VERSION: u16 = 1;
const RECORD_MAGIC: &[u8; 2] = b"KW";
const KIND_BATCH: u8 = 1;
/// Longest payload accepted; a longer length field is damage.
pub(crate) const MAX_PAYLOAD: u32 = 512 << 20;

/// One entry of a batch record.
// Unboxed: an open decodes a million of these and moves each record straight
// into its `Arc`; a box would cost one more allocation and copy per key.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Entry {
    Put(StoredKey),
    Remove(KeyId),
    Settings(RingSettings),
}

pub(crate) fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(FILE_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What the first bytes of a file say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Valid,
    /// Shorter than a header and all zero or a prefix of one: a creation
    /// cut short by a crash; the file can be started afresh.
    Unfinished,
    Invalid,
}

pub(crate) fn check_header(bytes: &[u8]) -> HeaderCheck {
    let expected = header();
    if bytes.len() >= HEADER_LEN {
        if bytes[..HEADER_LEN] == expected {
            HeaderCheck::Valid
        } else if bytes[..HEADER_LEN].iter().all(|&b| b == 0) {
            HeaderCheck::Unfinished
        } else {
            HeaderCheck::Invalid
        }
    } else if bytes.iter().all(|&b| b == 0) || expected.starts_with(bytes) {
        HeaderCheck::Unfinished
    } else {
        HeaderCheck::Invalid
    }
}

/// Frames a JSON payload as one record; `None` if it is too long.
pub(crate) fn encode_payload(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)?;
    let mut record = Vec::with_capacity(RECORD_HEAD_LEN + payload.len());
    record.extend_from_slice(RECORD_MAGIC);
    record.push(KIND_BATCH);
    record.push(0);
    record.extend_from_slice(&len.to_le_bytes());
    record.extend_from_slice(&checksum(KIND_BATCH, 0, len, payload).to_le_bytes());
    record.extend_from_slice(payload);
    Some(record)
}

fn checksum(kind: u8, flags: u8, len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind, flags]);
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A record head that passed its own checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) len: u32,
    crc: u32,
}

/// Reads a record head; `None` if it cannot start a valid record.
pub(crate) fn parse_head(bytes: &[u8; RECORD_HEAD_LEN]) -> Option<Head> {
    let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let ok = &bytes[..2] == RECORD_MAGIC
        && bytes[2] == KIND_BATCH
        && bytes[3] == 0
        && len <= MAX_PAYLOAD;
    ok.then_some(Head { len, crc })
}

/// Whether `payload` is the one `head` promises.
pub(crate) fn payload_matches(head: Head, payload: &[u8]) -> bool {
    payload.len() == head.len as usize && checksum(KIND_BATCH, 0, head.len, payload) == head.crc
}

/// Whether a valid record starts anywhere in `tail` after its first byte:
/// the test that tells damage followed by data from a torn tail.
pub(crate) fn valid_record_after_start(tail: &[u8]) -> bool {
    (1..tail.len()).any(|p| {
        let rest = &tail[p..];
        let Some(head_bytes) = rest.first_chunk::<RECORD_HEAD_LEN>() else {
            return false;
        };
        let Some(head) = parse_head(head_bytes) else {
            return false;
        };
        rest[RECORD_HEAD_LEN..]
            .get(..head.len as usize)
            .is_some_and(|payload| payload_matches(head, payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let h = header();
        assert_eq!(check_header(&h), HeaderCheck::Valid);
        assert_eq!(check_header(&h[..5]), HeaderCheck::Unfinished);
        assert_eq!(check_header(&[]), HeaderCheck::Unfinished);
        assert_eq!(check_header(&[0; 16]), HeaderCheck::Unfinished);
        assert_eq!(check_header(b"not a keyward file"), HeaderCheck::Invalid);
        let mut other = h;
        other[8] = 2;
        assert_eq!(check_header(&other), HeaderCheck::Invalid);
    }

    #[test]
    fn a_record_round_trips_and_any_flipped_byte_is_caught() {
        let record =
            encode_payload(&serde_json::to_vec(&[Entry::Remove(KeyId::from_u64(5))]).unwrap())
                .unwrap();
        let head = parse_head(record[..RECORD_HEAD_LEN].try_into().unwrap()).unwrap();
        assert!(payload_matches(head, &record[RECORD_HEAD_LEN..]));
        for i in 0..record.len() {
            let mut bad = record.clone();
            bad[i] ^= 0x01;
            let ok = parse_head(bad[..RECORD_HEAD_LEN].try_into().unwrap())
                .is_some_and(|h| payload_matches(h, &bad[RECORD_HEAD_LEN..]));
            assert!(!ok, "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn finds_a_record_after_damage() {
        let record =
            encode_payload(&serde_json::to_vec(&[Entry::Remove(KeyId::from_u64(5))]).unwrap())
                .unwrap();
        let mut tail = vec![0xAB; 7];
        assert!(!valid_record_after_start(&tail));
        tail.extend_from_slice(&record);
        assert!(valid_record_after_start(&tail));
        tail.pop();
        assert!(!valid_record_after_start(&tail));
    }
}
