//! Property tests of every parser of untrusted input: key strings, key ids,
//! list cursors, scopes and scope sets, stored hashes, networks, client
//! certificate fingerprints, bindings, expiry policies, access tokens and
//! the leak scanner. Whatever the input, nothing panics; what is printed
//! parses back to the same value. (Exports and store files: see
//! `lifecycle_extremes.rs` and `hostile_input.rs`.)

use keyward::*;
use proptest::prelude::*;

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const PREFIX: &str = "acme";
/// Version, id, secret, checksum.
const BODY_LEN: usize = 1 + 11 + 24 + 6;

fn ring(prefix: &str) -> KeyRing {
    KeyRing::builder(prefix)
        .build(MemoryStore::new())
        .expect("ring builds")
}

/// `[a-z][a-z0-9_]{0,31}`, not ending in `_`.
fn prefix() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9_]{0,30}[a-z0-9])?"
}

/// `len` characters of the base62 alphabet.
fn base62(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(BASE62.as_bytes().to_vec()), len)
        .prop_map(|bytes| String::from_utf8(bytes).expect("ascii"))
}

/// The documented checksum: CRC32 as 6 base62 digits, zero-padded.
fn checksum(checked: &str) -> String {
    let encoded = base62::encode(crc32fast::hash(checked.as_bytes()));
    format!("{encoded:0>6}")
}

/// A resource or action: `[a-z0-9_.-]+` or `*`.
fn scope_part() -> impl Strategy<Value = String> {
    prop_oneof![Just("*".to_owned()), "[a-z0-9_.-]{1,40}"]
}

fn valid_scope() -> impl Strategy<Value = String> {
    (scope_part(), scope_part()).prop_map(|(r, a)| format!("{r}:{a}"))
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn issued_key_parses_back_to_its_id_for_any_prefix(prefix in prefix()) {
        let ring = ring(&prefix);
        let issued = ring.issue(NewKey::new("o")).unwrap();
        let key = issued.secret.expose();
        let head = format!("{prefix}_1");
        prop_assert!(key.starts_with(&head), "{} does not start with {}", issued.key.hint(), head);
        prop_assert_eq!(key.len(), prefix.len() + 1 + BODY_LEN);
        prop_assert!(key.len() <= MAX_KEY_LEN);
        let verified = ring.verify(key).unwrap();
        prop_assert_eq!(verified.id(), issued.key.id());
        let id_text = issued.key.id().to_string();
        prop_assert_eq!(&key[prefix.len() + 2..prefix.len() + 13], id_text.as_str());
    }
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn key_id_text_round_trips(raw in any::<u64>()) {
        let id = KeyId::from_u64(raw);
        let text = id.to_string();
        prop_assert_eq!(text.len(), 11);
        prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric()));
        prop_assert_eq!(text.parse::<KeyId>().unwrap(), id);
        prop_assert_eq!(id.as_u64(), raw);
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);
    }

    #[test]
    fn key_id_parsing_never_panics(s in any::<String>()) {
        if let Ok(id) = s.parse::<KeyId>() {
            prop_assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn list_cursor_text_round_trips(s in "1[0-9a-f]{32}") {
        // Every string of the printed shape is a cursor, printed back as is.
        let cursor: ListCursor = s.parse().unwrap();
        prop_assert_eq!(&cursor.to_string(), &s);
        let json = serde_json::to_string(&cursor).unwrap();
        prop_assert_eq!(serde_json::from_str::<ListCursor>(&json).unwrap(), cursor);
    }

    #[test]
    fn list_cursor_parsing_never_panics(
        s in prop_oneof![
            any::<String>(),
            // Near misses of the printed shape, each 33 bytes long but
            // the last: upper-case digits; a sign where a field starts
            // (which `u64::from_str_radix` takes); a two-byte character
            // across the fields' boundary; another version; a character
            // more or less.
            "1[0-9a-fA-F]{32}",
            "1(\\+[0-9a-f]{15}|[0-9a-f]{16})(\\+[0-9a-f]{15}|[0-9a-f]{16})",
            "1[0-9a-f]{15}é[0-9a-f]{15}",
            "[0-9a-z][0-9a-f]{32}",
            "1[0-9a-f]{31,34}",
        ]
    ) {
        match s.parse::<ListCursor>() {
            Ok(cursor) => prop_assert_eq!(cursor.to_string(), s),
            Err(err) => prop_assert_eq!(err.to_string(), "invalid input: not a list cursor"),
        }
    }

    #[test]
    fn base62_key_ids_parse_or_are_refused(s in base62(11)) {
        // 11 base62 digits go past u64::MAX: those are refused, the rest
        // round trip.
        let value = base62::decode(&s).unwrap();
        match s.parse::<KeyId>() {
            Ok(id) => {
                prop_assert_eq!(u128::from(id.as_u64()), value);
                prop_assert_eq!(id.to_string(), s);
            }
            Err(_) => prop_assert!(value > u128::from(u64::MAX)),
        }
    }

    #[test]
    fn verify_of_arbitrary_strings_is_an_error(s in any::<String>()) {
        let ring = ring(PREFIX);
        prop_assert!(ring.verify(&s).is_err());
    }

    #[test]
    fn verify_of_arbitrary_prefixed_strings_is_an_error(s in "acme_.{0,80}") {
        let ring = ring(PREFIX);
        prop_assert!(ring.verify(&s).is_err());
    }

    #[test]
    fn right_length_base62_text_is_refused(body in base62(BODY_LEN - 1)) {
        let ring = ring(PREFIX);
        ring.issue(NewKey::new("o")).unwrap();
        let candidate = format!("{PREFIX}_1{body}");
        match ring.verify(&candidate) {
            Err(VerifyError::Malformed(MalformedReason::BadChecksum) | VerifyError::Invalid) => {}
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
    }

    #[test]
    fn well_formed_keys_of_unknown_ids_are_invalid(id_and_secret in base62(11 + 24)) {
        let ring = ring(PREFIX);
        ring.issue(NewKey::new("o")).unwrap();
        let checked = format!("{PREFIX}_1{id_and_secret}");
        let candidate = format!("{checked}{}", checksum(&checked));
        let id_value = base62::decode(&id_and_secret[..11]).unwrap();
        let expected = if id_value > u128::from(u64::MAX) {
            // The checksum matches but the id is not a 64-bit value.
            VerifyError::Malformed(MalformedReason::IdOutOfRange)
        } else {
            VerifyError::Invalid
        };
        prop_assert_eq!(ring.verify(&candidate).unwrap_err(), expected);
    }

    #[test]
    fn scope_parsing_never_panics(s in any::<String>()) {
        if let Ok(scope) = Scope::new(&s) {
            prop_assert_eq!(scope.to_string(), s.clone());
            prop_assert_eq!(format!("{}:{}", scope.resource(), scope.action()), s.clone());
            prop_assert_eq!(s.parse::<Scope>().unwrap(), scope);
        }
        let _ = Requirement::scope(&s);
        let _ = ScopeSet::parse([&s]);
    }

    #[test]
    fn scope_like_strings_never_panic(s in "[a-z0-9_.*:é-]{0,140}") {
        if let Ok(scope) = Scope::new(&s) {
            prop_assert_eq!(scope.to_string(), s);
        }
    }

    #[test]
    fn valid_scopes_print_as_parsed(s in valid_scope()) {
        let scope = Scope::new(&s).unwrap();
        prop_assert_eq!(scope.to_string(), s.clone());
        prop_assert_eq!(scope.as_str(), s.as_str());
        let (resource, action) = s.split_once(':').unwrap();
        prop_assert_eq!((scope.resource(), scope.action()), (resource, action));
        let reparsed = Scope::new(&scope.to_string()).unwrap();
        prop_assert_eq!(&reparsed, &scope);
        prop_assert_eq!(Scope::new(&reparsed.to_string()).unwrap(), reparsed);
        let json = serde_json::to_string(&scope).unwrap();
        prop_assert_eq!(serde_json::from_str::<Scope>(&json).unwrap(), scope);
    }

    #[test]
    fn scopes_longer_than_128_bytes_are_refused(r in "[a-z]{64,100}", a in "[a-z]{64,100}") {
        let s = format!("{r}:{a}");
        prop_assert!(s.len() > 128);
        prop_assert!(matches!(Scope::new(&s), Err(Error::InvalidScope(_))));
    }

    #[test]
    fn key_hash_parsing_never_panics(s in any::<String>()) {
        if let Ok(hash) = s.parse::<KeyHash>() {
            prop_assert_eq!(hash.to_string(), s);
        }
    }

    #[test]
    fn key_hash_like_strings_never_panic(tail in ".{0,70}", hex in "[0-9a-fA-Fé]{60,66}") {
        for s in [format!("$kw-b3k$v=1${tail}"), format!("$kw-b3k$v=1${hex}")] {
            if let Ok(hash) = s.parse::<KeyHash>() {
                prop_assert_eq!(hash.to_string(), s);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn verify_of_long_strings_is_an_error(s in ".{0,10000}") {
        let ring = ring(PREFIX);
        prop_assert!(ring.verify(&s).is_err());
    }

    #[test]
    fn verify_of_long_ascii_strings_is_too_long(s in "[ -~]{76,10000}") {
        let ring = ring(PREFIX);
        prop_assert_eq!(
            ring.verify(&s).unwrap_err(),
            VerifyError::Malformed(MalformedReason::TooLong)
        );
    }

    #[test]
    fn stored_hashes_round_trip_through_text(prefix in prefix(), pepper in any::<[u8; 32]>()) {
        let ring = KeyRing::builder(prefix).pepper(pepper).build(MemoryStore::new()).unwrap();
        let issued = ring.issue(NewKey::new("o")).unwrap();
        let stored = ring.store().lookup(issued.key.id()).unwrap();
        let text = stored.hash().to_string();
        prop_assert!(text.starts_with("$kw-b3k$v=1$"));
        let parsed: KeyHash = text.parse().unwrap();
        prop_assert_eq!(&parsed, stored.hash());
        prop_assert_eq!(parsed.to_string(), text);
        prop_assert_eq!(parsed.version(), 1);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever letters and digits come right before it (`\n`, `%20`,
    /// `\u003c` in a log line leave `n`, `20`, `u003c`), a key or token is
    /// found whole, with its prefix, and redact removes its secret part.
    #[test]
    fn a_key_or_token_glued_after_letters_and_digits_is_found_and_redacted(
        prefix in prefix(),
        lead in "[A-Za-z0-9]{1,40}",
        token in any::<bool>(),
        before in "[ \"=:]{0,2}",
        after in "[ \"\\,]{0,2}",
    ) {
        let ring = KeyRing::builder(prefix.as_str())
            .signing_key(1, [7; 32])
            .flush_interval(None)
            .build(MemoryStore::new())
            .unwrap();
        let issued = ring
            .issue(NewKey::new("o").scopes(ScopeSet::parse(["invoices:read"]).unwrap()))
            .unwrap();
        let item = if token {
            ring.exchange(issued.secret.expose(), keyward::time::Duration::minutes(5))
                .unwrap()
                .expose()
                .to_owned()
        } else {
            issued.secret.expose().to_owned()
        };
        // Prefix, `_`, version, (a token's signing key id), key id.
        let public = prefix.len() + 2 + usize::from(token) + 11;
        let text = format!("{before}{lead}{item}{after}");
        let at = before.len() + lead.len();

        let found = scan(&text);
        prop_assert_eq!(found.len(), 1, "{}", text);
        prop_assert_eq!(found[0].range.clone(), at..at + item.len());
        prop_assert_eq!(found[0].secret_range.clone(), at + public..at + item.len());
        prop_assert_eq!(&found[0].prefix, &prefix);
        prop_assert_eq!(found[0].key_id, issued.key.id());
        let kind = if token { FoundKind::AccessToken } else { FoundKind::ApiKey };
        prop_assert_eq!(found[0].kind, kind);

        let redacted = redact(&text);
        prop_assert!(!redacted.contains(&item[public..]), "{} -> {}", text, redacted);
        prop_assert_eq!(
            redacted,
            format!("{before}{lead}{}[redacted]{after}", &item[..public])
        );
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever surrounds a key pasted into a scope, network, fingerprint
    /// or prefix field, and wherever the message cuts the input, the error
    /// holds no 8 characters in a row of its secret.
    #[test]
    fn parse_errors_hold_no_part_of_a_pasted_key(
        prefix in prefix(),
        before in "[ -~]{0,140}",
        after in "[ -~]{0,20}",
    ) {
        let issued = ring(&prefix).issue(NewKey::new("o")).unwrap();
        let key = issued.secret.expose();
        let secret = &key[prefix.len() + 2 + 11..][..24];
        let input = format!("{before}{key}{after}");
        let errors = [
            input.parse::<Scope>().unwrap_err(),
            input.parse::<Network>().unwrap_err(),
            input.parse::<CertFingerprint>().unwrap_err(),
            input.parse::<KeyId>().unwrap_err(),
            KeyRing::builder(input.as_str()).build(MemoryStore::new()).unwrap_err(),
        ];
        for e in &errors {
            for shown in [e.to_string(), format!("{e:?}")] {
                for piece in secret.as_bytes().windows(8) {
                    let piece = std::str::from_utf8(piece).unwrap();
                    prop_assert!(!shown.contains(piece), "{} in {}", piece, shown);
                }
            }
        }
    }
}

/// A network of `bits` (an IPv4 address in the low 32 bits when `v4`)
/// with its host bits cleared, in CIDR form.
fn network_text(v4: bool, bits: u128, prefix: u8) -> String {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let width = if v4 { 32 } else { 128 };
    let prefix = u32::from(prefix) % (width + 1);
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix) >> (128 - width)
    };
    if v4 {
        format!("{}/{prefix}", Ipv4Addr::from((bits & mask) as u32))
    } else {
        format!("{}/{prefix}", Ipv6Addr::from(bits & mask))
    }
}

/// 64 hex digits, each in either case, as in a row or as `openssl` prints
/// them (pairs joined by `:`).
fn fingerprint_text() -> impl Strategy<Value = (String, [u8; 32])> {
    (any::<[u8; 32]>(), any::<[bool; 32]>(), any::<bool>()).prop_map(|(bytes, upper, colons)| {
        let pairs: Vec<String> = bytes
            .iter()
            .zip(upper)
            .map(|(b, up)| {
                if up {
                    format!("{b:02X}")
                } else {
                    format!("{b:02x}")
                }
            })
            .collect();
        (pairs.join(if colons { ":" } else { "" }), bytes)
    })
}

fn expiry_policy() -> impl Strategy<Value = ExpiryPolicy> {
    use keyward::time::{Date, Duration, OffsetDateTime};
    let instant =
        (-62_135_596_800i64..253_402_300_799, 0..1_000_000_000i64).prop_map(|(seconds, nanos)| {
            OffsetDateTime::from_unix_timestamp(seconds).unwrap() + Duration::nanoseconds(nanos)
        });
    let date = (-365_243i32..2_932_896).prop_map(|day| Date::from_julian_day(day).unwrap());
    let period = (1i64..i64::MAX, 0..1_000_000_000i32)
        .prop_map(|(seconds, nanos)| Duration::new(seconds, nanos));
    prop_oneof![
        Just(ExpiryPolicy::Never),
        instant.prop_map(ExpiryPolicy::At),
        date.prop_map(ExpiryPolicy::EndOfDate),
        period.clone().prop_map(ExpiryPolicy::Lifetime),
        period.prop_map(ExpiryPolicy::Idle),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    /// A network prints in the form it parses from: parse, print, parse
    /// gives the same network, and the JSON of bindings holding it reads
    /// back as they were.
    #[test]
    fn networks_round_trip_through_text_and_json(
        v4 in any::<bool>(),
        bits in any::<u128>(),
        prefix in 0u8..=128,
    ) {
        let text = network_text(v4, bits, prefix);
        let network = Network::parse(&text).unwrap();
        let printed = network.to_string();
        prop_assert_eq!(&printed, &text);
        prop_assert_eq!(Network::parse(&printed).unwrap(), network);
        prop_assert_eq!(printed.parse::<Network>().unwrap(), network);
        let mut bindings = Bindings::default();
        bindings.networks = vec![network];
        let json = serde_json::to_string(&bindings).unwrap();
        prop_assert_eq!(serde_json::from_str::<Bindings>(&json).unwrap(), bindings);
    }

    /// Whatever network-like text parses prints as text that parses to the
    /// same network (a bare address and a prefix with leading zeros
    /// included), and nothing panics.
    #[test]
    fn network_like_text_parses_back_from_its_print(
        s in "[0-9a-fA-F:.]{0,40}(/[0-9]{0,4})?",
    ) {
        if let Ok(network) = Network::parse(&s) {
            let again = Network::parse(&network.to_string()).unwrap();
            prop_assert_eq!(again, network);
            prop_assert_eq!(again.to_string(), network.to_string());
        }
    }

    /// A fingerprint in either form and case parses to its bytes, prints
    /// as 64 lowercase digits, and that print parses to the same
    /// fingerprint; bindings to it read back from JSON as they were.
    #[test]
    fn cert_fingerprints_round_trip_through_text_and_json(
        (text, bytes) in fingerprint_text(),
    ) {
        let fingerprint = CertFingerprint::from_hex(&text).unwrap();
        let printed = fingerprint.to_string();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        prop_assert_eq!(&printed, &expected);
        prop_assert_eq!(CertFingerprint::from_hex(&printed).unwrap(), fingerprint);
        prop_assert_eq!(printed.parse::<CertFingerprint>().unwrap(), fingerprint);
        let mut bindings = Bindings::default();
        bindings.client_cert = Some(fingerprint);
        let json = serde_json::to_string(&bindings).unwrap();
        prop_assert_eq!(serde_json::from_str::<Bindings>(&json).unwrap(), bindings);
    }

    /// Fingerprint-like text never panics, and what parses prints back.
    #[test]
    fn fingerprint_like_text_parses_back_from_its_print(s in "[0-9a-fA-Fg:]{60,100}") {
        if let Ok(fingerprint) = CertFingerprint::from_hex(&s) {
            prop_assert_eq!(CertFingerprint::from_hex(&fingerprint.to_string()).unwrap(), fingerprint);
            prop_assert_eq!(fingerprint.to_string(), s.replace(':', "").to_lowercase());
        }
    }

    /// A set of scopes reads back from its JSON as it was.
    #[test]
    fn scope_sets_round_trip_through_json(
        scopes in proptest::collection::vec(valid_scope(), 0..12),
    ) {
        let set = ScopeSet::parse(&scopes).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        let read: ScopeSet = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&read, &set);
        prop_assert_eq!(serde_json::to_string(&read).unwrap(), json);
    }

    /// Every expiry policy reads back from its JSON as it was: an
    /// instant, a date, a period, or never.
    #[test]
    fn expiry_policies_round_trip_through_json(policy in expiry_policy()) {
        let json = serde_json::to_string(&policy).unwrap();
        let read: ExpiryPolicy = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(read, policy);
        prop_assert_eq!(serde_json::to_string(&read).unwrap(), json);
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// An access token's text reads back to the claims it was minted with,
    /// whatever the owner and scopes it carries.
    #[test]
    fn access_tokens_read_back_to_their_claims(
        owner in "[ -~]{1,40}",
        scopes in proptest::collection::vec(valid_scope(), 0..6),
    ) {
        let ring = KeyRing::builder(PREFIX)
            .signing_key(3, [7; 32])
            .build(MemoryStore::new())
            .unwrap();
        let issued = ring
            .issue(NewKey::new(owner).scopes(ScopeSet::parse(&scopes).unwrap()))
            .unwrap();
        let token = ring
            .exchange(issued.secret.expose(), keyward::time::Duration::minutes(5))
            .unwrap();
        let read = ring.verify_access_token(token.expose()).unwrap();
        prop_assert_eq!(&read, &token.claims);
        prop_assert_eq!(read.key_id, issued.key.id());
    }
}
