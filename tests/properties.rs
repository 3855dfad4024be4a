//! Property tests of every parser of untrusted input: key strings, key ids,
//! list cursors, scopes, stored hashes and the leak scanner. Whatever the
//! input, nothing panics; what is printed parses back to the same value.

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
