//! The on-disk format: a header, then one record per committed batch.
//!
//! ```text
//! header (12288 bytes: three pages of 4096, so that rewriting a slot
//! never rewrites the page of another slot, of the magic or of a record)
//!   page 0: magic    8  b"KEYWARD\0"
//!           version  2  u16 LE, 2
//!           reserved 2  zero
//!           crc      4  u32 LE, CRC32 of the 12 bytes above
//!           zeros to the end of the page
//!   pages 1 and 2: a synced-length slot each, at the page's start, all
//!   zero (never written) or
//!           synced   8  u64 LE: a length of the file that was durable
//!                       when the slot was written
//!           crc      4  u32 LE, CRC32 of the slot's number (one byte) and
//!                       synced
//!           reserved 4  zero
//!           zeros to the end of the page
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
//! Only the last write can be torn: each is fsynced before the next
//! begins. A record a crash zeroed says nothing, not even its length,
//! and zeros from its start to the end look alike whether they cover one
//! unsynced record or several synced ones. So each write also records, in
//! a slot of the header (one more small write, to the slot's own page,
//! under the same fsync), the length the file had when its previous fsync
//! returned: the start of the record it adds; a rewrite records its whole
//! length before the fsync that precedes its rename, and an open, once it
//! has made the file durable, the length it found. At open, the larger
//! slot that checks bounds the *synced part*: an invalid record or the end of
//! the file inside it is damage to acknowledged data, an error naming the
//! offset. Writes take turns between the two slots, overwriting the
//! smaller value, so a slot write cut short (ignored at open: a slot that
//! does not check only weakens the bound) never loses the larger one.
//!
//! Past the synced part, an invalid record at offset X is a *torn tail* (a
//! write cut short by a crash; dropped) only if no valid record starts
//! anywhere after X. Otherwise the damage is followed by committed data,
//! and dropping it could resurrect a revoked key: the open fails with the
//! offset. So does one followed by more bytes than one write leaves
//! ([`MAX_TORN_TAIL`] from X to the end of the file), read no further.

use serde::{Deserialize, Serialize};

use crate::store::{RingSettings, StoredKey};
use crate::token::KeyId;

/// Where the first record starts: the header page and the two slot pages.
pub(crate) const HEADER_LEN: usize = 3 * PAGE;
/// A page of the page cache: what a write of a few bytes rewrites.
const PAGE: usize = 4096;
/// The magic, version and CRC of the header, at the start of its page.
const FIXED_LEN: usize = 16;
const SLOT_LEN: usize = 16;
pub(crate) const RECORD_HEAD_LEN: usize = 12;
const FILE_MAGIC: &[u8; 8] = b"KEYWARD\0";
/// 2 since the slots (version 1 files, from before them, are refused
/// rather than misread).
pub(crate) const FORMAT_VERSION: u16 = 2;
const RECORD_MAGIC: &[u8; 2] = b"KW";
const KIND_BATCH: u8 = 1;
/// Longest payload accepted; a longer length field is damage.
pub(crate) const MAX_PAYLOAD: u32 = 512 << 20;
/// Most bytes from the start of a torn tail to the end of the file: one
/// record, its head and the longest payload a head may claim. Each write
/// (an `apply`) appends one record, writes its slot inside the header, and
/// fsyncs before the next write begins; an open truncates or fsyncs what
/// it found before it writes, and a rewrite records its whole length
/// before its file takes the store's place. So a crash leaves at most the
/// last write's record unsynced. (A slot write cut short leaves the other
/// slot, a write behind: the record before, fsynced and valid, then also
/// lies past the synced part, but the tail starts after it.) More than
/// this after an invalid record is damage, not a write cut short.
pub(crate) const MAX_TORN_TAIL: u64 = RECORD_HEAD_LEN as u64 + MAX_PAYLOAD as u64;

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

/// A new file's header: its slots unwritten.
pub(crate) fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(FILE_MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..FIXED_LEN].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Where slot `slot` (0 or 1) lies in the file: at the start of a page of
/// its own.
pub(crate) fn slot_offset(slot: usize) -> u64 {
    (PAGE * (1 + (slot & 1))) as u64
}

/// The bytes of slot `slot` saying that the file's first `synced` bytes
/// are durable.
pub(crate) fn slot(slot: usize, synced: u64) -> [u8; SLOT_LEN] {
    let mut s = [0u8; SLOT_LEN];
    s[..8].copy_from_slice(&synced.to_le_bytes());
    s[8..12].copy_from_slice(&slot_crc(slot, synced).to_le_bytes());
    s
}

fn slot_crc(slot: usize, synced: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[(slot & 1) as u8]);
    h.update(&synced.to_le_bytes());
    h.finalize()
}

/// The length a slot vouches for, if it checks.
fn read_slot(slot: usize, bytes: &[u8; SLOT_LEN]) -> Option<u64> {
    let synced = u64::from_le_bytes(*bytes.first_chunk::<8>()?);
    let crc = u32::from_le_bytes(*bytes[8..].first_chunk::<4>()?);
    (crc == slot_crc(slot, synced) && bytes[12..] == [0; 4]).then_some(synced)
}

/// What the header's slots say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Synced {
    /// The file's first `len` bytes were durable when a write began.
    pub(crate) len: u64,
    /// The slot the next write takes: the one holding the smaller length
    /// (slot 0 on a tie), so the other keeps `len`.
    pub(crate) next_slot: usize,
}

/// What the first bytes of a file say.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Valid(Synced),
    /// Shorter than a header and all zero or a prefix of one. A store file
    /// is created whole (renamed into place once its header is durable), so
    /// only an empty one is started afresh; a part of a header is a file cut
    /// short, reported as damage.
    Unfinished,
    /// A whole header of another format version.
    OtherVersion(u16),
    Invalid,
}

pub(crate) fn check_header(bytes: &[u8]) -> HeaderCheck {
    let expected = header();
    if let Some(fixed) = bytes.first_chunk::<FIXED_LEN>()
        && fixed[..8] == *FILE_MAGIC
        && fixed[12..] == crc32fast::hash(&fixed[..12]).to_le_bytes()
    {
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version != FORMAT_VERSION {
            return HeaderCheck::OtherVersion(version);
        }
    }
    if let Some(h) = bytes.first_chunk::<HEADER_LEN>() {
        // The header page is written once: any byte changed in it is damage.
        if h[..PAGE] == expected[..PAGE] {
            let slots = [0, 1].map(|i| {
                let page = &h[PAGE * (1 + i)..PAGE * (2 + i)];
                page.first_chunk::<SLOT_LEN>()
                    .filter(|_| page[SLOT_LEN..].iter().all(|&b| b == 0))
                    .and_then(|s| read_slot(i, s))
                    .unwrap_or(0)
            });
            let next_slot = usize::from(slots[0] > slots[1]);
            HeaderCheck::Valid(Synced {
                len: slots[0].max(slots[1]).max(HEADER_LEN as u64),
                next_slot,
            })
        } else {
            // All zeros included: a whole header's length is no creation
            // cut short, but a header overwritten.
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
    scan_after_start(tail).0
}

/// [`valid_record_after_start`], and the bytes it ran through CRC32.
///
/// A head that parses can start at every fourth byte of a hostile tail,
/// each claiming up to [`MAX_PAYLOAD`] bytes: checking each claim over its
/// own bytes takes time quadratic in the tail (15 s for 4 MiB). So the
/// tail is hashed once per pass, keeping the running CRC where a claimed
/// payload starts or ends. CRC32 is linear: the CRC of a stretch follows
/// from those of the two prefixes that bound it (zlib's `crc32_combine`,
/// run backwards), for a few multiplications per head.
///
/// A pass takes at most [`CLAIMS_PER_PASS`] heads, in file order, so the
/// memory a scan takes beyond the tail is bounded (about 56 bytes a head,
/// 56 MiB), where holding every head of a hostile 512 MiB tail at once
/// took some 7 GiB. A tail with fewer heads, which is any tail but a
/// hostile one, takes one pass: work linear in the tail, plus a sort of
/// the heads' offsets. A pass hashes from where its first payload starts.
pub(crate) fn scan_after_start(tail: &[u8]) -> (bool, usize) {
    scan_in_passes(tail, CLAIMS_PER_PASS)
}

/// The most heads [`scan_after_start`] checks in one pass.
const CLAIMS_PER_PASS: usize = 1 << 20;

/// A head found in a tail: (its offset, payload start, payload end, head).
type Claim = (usize, usize, usize, Head);

/// [`scan_after_start`], `per_pass` heads at a time.
fn scan_in_passes(tail: &[u8], per_pass: usize) -> (bool, usize) {
    let mut claims = (1..tail.len()).filter_map(|p| {
        let head = parse_head(tail[p..].first_chunk::<RECORD_HEAD_LEN>()?)?;
        let start = p + RECORD_HEAD_LEN;
        let end = start.checked_add(head.len as usize)?;
        (end <= tail.len()).then_some((p, start, end, head))
    });
    let mut hashed = 0;
    let mut pass: Vec<Claim> = Vec::new();
    loop {
        pass.clear();
        pass.extend(claims.by_ref().take(per_pass));
        if pass.is_empty() {
            return (false, hashed);
        }
        if check_claims(tail, &pass, &mut hashed) {
            return (true, hashed);
        }
    }
}

/// Whether any of `claims` (heads in `tail`) is a valid record, adding the
/// bytes run through CRC32 to `hashed`.
fn check_claims(tail: &[u8], claims: &[Claim], hashed: &mut usize) -> bool {
    let mut offsets: Vec<usize> = claims.iter().flat_map(|c| [c.1, c.2]).collect();
    offsets.sort_unstable();
    offsets.dedup();
    // The CRC of the tail up to each offset, as the CRC of the stretch
    // from the first offset on (a prefix's CRC can start anywhere: the
    // stretch between two offsets follows from the difference).
    let from = offsets[0];
    let mut running = crc32fast::Hasher::new();
    let mut at = from;
    let prefix_crcs: Vec<u32> = offsets
        .iter()
        .map(|&offset| {
            running.update(&tail[at..offset]);
            *hashed += offset - at;
            at = offset;
            running.clone().finalize()
        })
        .collect();
    let prefix_crc = |offset| offsets.binary_search(&offset).map_or(0, |i| prefix_crcs[i]);
    claims.iter().any(|&(p, start, end, head)| {
        // The CRC covers kind, flags and length, then the payload:
        // crc(a ‖ b) = shift(crc(a), |b|) ^ crc(b), and, for the stretch
        // s = tail[from..] up to `start` and up to `end`,
        // crc(payload) = crc(s[..end]) ^ shift(crc(s[..start]), len).
        let fields = crc32fast::hash(&tail[p + 2..p + 8]);
        *hashed += 6;
        let crc = shift(fields ^ prefix_crc(start), head.len) ^ prefix_crc(end);
        crc == head.crc
    })
}

/// The CRC32 polynomial, bit-reflected (as crc32fast and zlib use it).
const POLY: u32 = 0xEDB8_8320;

/// `a * b` modulo the CRC32 polynomial, both bit-reflected (zlib's
/// `multmodp`).
fn mul_mod_poly(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    for bit in (0..32).rev() {
        if a & (1 << bit) != 0 {
            product ^= b;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    product
}

/// What `crc` (of some bytes `a`) contributes to the CRC of `a` followed
/// by `len` more bytes: `crc * x^(8 len)` modulo the polynomial.
fn shift(crc: u32, len: u32) -> u32 {
    // powers[j][d] = x^(8 d 256^j): one factor per byte of `len`.
    static POWERS: std::sync::OnceLock<[[u32; 256]; 4]> = std::sync::OnceLock::new();
    let powers = POWERS.get_or_init(|| {
        let mut powers = [[0u32; 256]; 4];
        // x^8, bit-reflected.
        let mut base = 1 << (31 - 8);
        for row in &mut powers {
            row[0] = 1 << 31;
            for d in 1..256 {
                row[d] = mul_mod_poly(row[d - 1], base);
            }
            base = mul_mod_poly(row[255], base);
        }
        powers
    });
    len.to_le_bytes()
        .iter()
        .zip(powers)
        .fold(crc, |crc, (&digit, row)| {
            mul_mod_poly(row[usize::from(digit)], crc)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let mut h = header();
        let none = Synced {
            len: HEADER_LEN as u64,
            next_slot: 0,
        };
        assert_eq!(check_header(&h), HeaderCheck::Valid(none));
        assert_eq!(check_header(&h[..5]), HeaderCheck::Unfinished);
        assert_eq!(check_header(&[]), HeaderCheck::Unfinished);
        assert_eq!(check_header(&[0; 16]), HeaderCheck::Unfinished);
        assert_eq!(check_header(&[0; HEADER_LEN]), HeaderCheck::Invalid);
        assert_eq!(check_header(b"not a keyward file"), HeaderCheck::Invalid);
        // A file of version 1 (before the slots) is refused, not misread.
        let mut other = h;
        other[8] = 1;
        assert_eq!(check_header(&other), HeaderCheck::Invalid, "crc");
        let crc = crc32fast::hash(&other[..12]).to_le_bytes();
        other[12..16].copy_from_slice(&crc);
        assert_eq!(check_header(&other), HeaderCheck::OtherVersion(1));
        assert_eq!(check_header(&other[..16]), HeaderCheck::OtherVersion(1));
        let n = HEADER_LEN as u64;
        // The larger slot that checks; the next write takes the other.
        let at = |i: usize| slot_offset(i) as usize..slot_offset(i) as usize + SLOT_LEN;
        h[at(0)].copy_from_slice(&slot(0, n + 900));
        h[at(1)].copy_from_slice(&slot(1, n + 700));
        assert_eq!(
            check_header(&h),
            HeaderCheck::Valid(Synced {
                len: n + 900,
                next_slot: 1
            })
        );
        h[at(1)].copy_from_slice(&slot(1, n + 1000));
        let both = HeaderCheck::Valid(Synced {
            len: n + 1000,
            next_slot: 0,
        });
        assert_eq!(check_header(&h), both);
        // A slot written to the other place does not check.
        h[at(0)].copy_from_slice(&slot(1, n + 2000));
        assert_eq!(check_header(&h), both);
        // Nor does a slot half written over another.
        h[at(0)].copy_from_slice(&slot(0, n + 900));
        h[at(0)][..8].copy_from_slice(&(n + 5000).to_le_bytes());
        assert_eq!(check_header(&h), both);
    }

    /// The slots as the format describes them: at the start of pages 1
    /// and 2, synced as u64 LE, then CRC32 of the slot's number (one byte)
    /// and synced, then four zero bytes.
    #[test]
    fn slots_are_laid_out_as_the_format_says() {
        assert_eq!([slot_offset(0), slot_offset(1)], [4096, 8192]);
        for (i, synced) in [(0, 12_288u64), (1, 12_288), (0, 1 << 40), (1, 77_777)] {
            let mut covered = vec![i as u8];
            covered.extend_from_slice(&synced.to_le_bytes());
            let mut expected = [0u8; SLOT_LEN];
            expected[..8].copy_from_slice(&synced.to_le_bytes());
            expected[8..12].copy_from_slice(&crc32fast::hash(&covered).to_le_bytes());
            assert_eq!(slot(i, synced), expected, "slot {i}, {synced}");
            assert_eq!(read_slot(i, &expected), Some(synced));
        }
    }

    /// The longest record a head may claim is the longest torn tail: one
    /// byte more is refused at the head.
    #[test]
    fn the_longest_torn_tail_is_the_longest_record() {
        let head = |len: u32| {
            let mut h = [0u8; RECORD_HEAD_LEN];
            h[..4].copy_from_slice(b"KW\x01\x00");
            h[4..8].copy_from_slice(&len.to_le_bytes());
            parse_head(&h)
        };
        let longest = head(MAX_PAYLOAD).expect("the longest payload");
        assert!(head(MAX_PAYLOAD + 1).is_none());
        assert_eq!(
            RECORD_HEAD_LEN as u64 + u64::from(longest.len),
            MAX_TORN_TAIL
        );
        assert_eq!(MAX_PAYLOAD, 512 << 20);
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

    /// The scan as it was: every offset, a CRC over every claim (the
    /// oracle the linear scan must agree with).
    fn scan_byte_by_byte(tail: &[u8]) -> bool {
        (1..tail.len()).any(|p| {
            let rest = &tail[p..];
            let Some(head) = rest.first_chunk().and_then(parse_head) else {
                return false;
            };
            rest[RECORD_HEAD_LEN..]
                .get(..head.len as usize)
                .is_some_and(|payload| payload_matches(head, payload))
        })
    }

    /// xorshift64*, so a failure replays from its seed.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn a_shifted_crc_joins_crcs_as_crc32_over_the_joined_bytes() {
        let mut seed = 7;
        for len_a in [0, 1, 5, 64, 1000] {
            for len_b in [0, 1, 2, 3, 255, 256, 257, 4096, 70_000] {
                let bytes: Vec<u8> = (0..len_a + len_b).map(|_| next(&mut seed) as u8).collect();
                let (a, b) = bytes.split_at(len_a);
                let joined = shift(crc32fast::hash(a), len_b as u32) ^ crc32fast::hash(b);
                assert_eq!(joined, crc32fast::hash(&bytes), "{len_a} + {len_b}");
            }
        }
    }

    /// Lengths of 2^24 bytes and more (a payload may be 512 MiB) take the
    /// last row of powers: checked against CRC32 over zeros.
    #[test]
    fn a_shifted_crc_joins_crcs_over_lengths_of_every_byte_of_a_u32() {
        let head = b"a head";
        for len in [1 << 24, (1 << 25) + (1 << 16) + (1 << 8) + 1] {
            let zeros = vec![0u8; len];
            let mut whole = head.to_vec();
            whole.extend_from_slice(&zeros);
            let joined = shift(crc32fast::hash(head), len as u32) ^ crc32fast::hash(&zeros);
            assert_eq!(joined, crc32fast::hash(&whole), "{len}");
        }
    }

    /// What the scan runs through CRC32, counted exactly: the payloads
    /// from the first one claimed, and each head's six checked bytes.
    #[test]
    fn the_scan_counts_the_bytes_it_hashes() {
        let record =
            encode_payload(&serde_json::to_vec(&[Entry::Remove(KeyId::from_u64(5))]).unwrap())
                .unwrap();
        let payload = record.len() - RECORD_HEAD_LEN;
        let mut tail = vec![0xAB; 3];
        tail.extend_from_slice(&record);
        assert_eq!(scan_after_start(&tail), (true, payload + 6));
        // A second, damaged record: both claims hashed, no valid one.
        let mut bad = record.clone();
        *bad.last_mut().unwrap() ^= 1;
        let mut tail = vec![0xAB; 3];
        tail.extend_from_slice(&bad);
        tail.extend_from_slice(&bad);
        assert_eq!(
            scan_after_start(&tail),
            (false, payload + RECORD_HEAD_LEN + payload + 2 * 6)
        );
    }

    #[test]
    fn the_scan_finds_a_record_exactly_where_a_check_at_every_offset_does() {
        let record = |n: u64| {
            encode_payload(&serde_json::to_vec(&[Entry::Remove(KeyId::from_u64(n))]).unwrap())
                .unwrap()
        };
        let mut seed = 11;
        let mut found = 0;
        for round in 0..3000 {
            // Junk, zeros, records, cut records and heads claiming lengths
            // that end inside, at or past the end of the tail.
            let mut tail = Vec::new();
            for _ in 0..1 + next(&mut seed) % 6 {
                match next(&mut seed) % 6 {
                    0 => tail.extend((0..next(&mut seed) % 40).map(|_| next(&mut seed) as u8)),
                    1 => tail.extend(std::iter::repeat_n(0, (next(&mut seed) % 30) as usize)),
                    2 => tail.extend_from_slice(&record(next(&mut seed))),
                    3 => {
                        let r = record(next(&mut seed));
                        let keep = (next(&mut seed) as usize) % r.len();
                        tail.extend_from_slice(&r[..keep]);
                    }
                    4 => {
                        let mut r = record(next(&mut seed));
                        let at = (next(&mut seed) as usize) % r.len();
                        r[at] ^= 1 << (next(&mut seed) % 8);
                        tail.extend_from_slice(&r);
                    }
                    _ => {
                        tail.extend_from_slice(b"KW\x01\x00");
                        let len = (next(&mut seed) % 80) as u32;
                        tail.extend_from_slice(&len.to_le_bytes());
                        tail.extend_from_slice(&(next(&mut seed) as u32).to_le_bytes());
                    }
                }
            }
            let expected = scan_byte_by_byte(&tail);
            found += usize::from(expected);
            assert_eq!(valid_record_after_start(&tail), expected, "round {round}");
            for per_pass in [1, 2, 3] {
                assert_eq!(
                    scan_in_passes(&tail, per_pass).0,
                    expected,
                    "round {round}, {per_pass} heads a pass"
                );
            }
        }
        assert!(found > 300 && found < 2700, "{found} of 3000 found one");
    }

    #[test]
    fn the_scan_hashes_a_hostile_tail_a_bounded_number_of_times_over() {
        // Overlapping heads, each claiming half the tail, none valid: a
        // check at every offset ran CRC32 over half the tail for each.
        for (n, claim) in [(64 << 10, 32 << 10), (256 << 10, 100_000)] {
            let mut tail = vec![0xEE; RECORD_HEAD_LEN];
            while tail.len() + RECORD_HEAD_LEN <= n {
                tail.extend_from_slice(b"KW\x01\x00");
                tail.extend_from_slice(&(claim as u32).to_le_bytes());
                tail.extend_from_slice(&[0; 4]);
            }
            let (found, hashed) = scan_after_start(&tail);
            assert!(!found);
            assert!(
                hashed <= 2 * tail.len(),
                "{hashed} bytes hashed for a tail of {}",
                tail.len()
            );
        }
    }

    /// A hostile tail with more heads than a pass takes: the scan still
    /// finds a valid record behind them, in a later pass, and refuses the
    /// tail without it. Each pass hashes from its first payload on, not
    /// from the tail's start.
    #[test]
    fn the_scan_finds_a_record_behind_more_heads_than_a_pass_takes() {
        let record =
            encode_payload(&serde_json::to_vec(&[Entry::Remove(KeyId::from_u64(5))]).unwrap())
                .unwrap();
        let mut tail = vec![0xEE; RECORD_HEAD_LEN];
        while tail.len() < 64 << 10 {
            tail.extend_from_slice(b"KW\x01\x00");
            tail.extend_from_slice(&64u32.to_le_bytes());
            tail.extend_from_slice(&[0; 4]);
        }
        let heads = (tail.len() - RECORD_HEAD_LEN) / RECORD_HEAD_LEN;
        let without = tail.clone();
        tail.extend_from_slice(&record);
        for per_pass in [100, 1000, heads + 2] {
            assert!(!scan_in_passes(&without, per_pass).0, "{per_pass}");
            let (found, hashed) = scan_in_passes(&tail, per_pass);
            assert!(found, "{per_pass} heads a pass");
            // Each head claims 64 bytes: a pass hashes little beyond its
            // own heads.
            assert!(
                hashed <= 3 * tail.len(),
                "{hashed} bytes hashed, {per_pass} heads a pass"
            );
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
