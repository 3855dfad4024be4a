//! Hostile input: records and settings read from a store (a host's
//! database, an edited file, an import) with extreme values, clocks at the
//! ends of time, and extreme arguments. Whatever they hold, every operation
//! returns (an error at worst) and never panics, also in a debug build,
//! where arithmetic overflow panics.

use keyward::time::macros::datetime;
use keyward::time::{Date, Duration, OffsetDateTime, Time};
use keyward::*;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Instants at and near the limits: of RFC 3339 text, of the nanosecond
/// range records keep (1677 to 2262), of 1970, with extreme offsets.
const INSTANTS: &[&str] = &[
    "0000-01-01T00:00:00Z",
    "0000-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59.999999999Z",
    "9999-12-31T23:59:59.999999999-23:59",
    "1677-09-21T00:12:43.145224192Z",
    "1677-09-21T00:12:44Z",
    "2262-04-11T23:47:16.854775807Z",
    "2262-04-11T23:47:15Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:01Z",
];

/// Periods at and near the limits of `Duration` and of `i64` nanoseconds.
const PERIODS: &[&str] = &[
    "PT0S",
    "PT0.000000001S",
    "-PT0.000000001S",
    "PT1S",
    "P1D",
    "-P1D",
    "P106751991167300DT15H30M7.999999999S",
    "-P106751991167300DT15H30M8S",
    "PT9223372036.854775807S",
    "PT9223372036.854775808S",
    "-PT9223372036.854775808S",
    "-PT9223372036.854775809S",
    "P106751DT23H47M16S",
];

fn instant() -> impl Strategy<Value = Value> {
    proptest::sample::select(INSTANTS).prop_map(|s| json!(s))
}

fn period() -> impl Strategy<Value = String> {
    proptest::sample::select(PERIODS).prop_map(str::to_owned)
}

fn policy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("never")),
        instant().prop_map(|at| json!({ "at": at })),
        proptest::sample::select(&["0000-01-01", "9999-12-31", "1969-12-31", "2262-04-11"][..])
            .prop_map(|d| json!({ "end_of_date": d })),
        period().prop_map(|p| json!({ "lifetime": p })),
        period().prop_map(|p| json!({ "idle": p })),
    ]
}

fn counter() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(2),
        Just(u64::MAX - 1),
        Just(u64::MAX)
    ]
}

fn clock_time() -> impl Strategy<Value = OffsetDateTime> {
    prop_oneof![
        Just(OffsetDateTime::new_utc(Date::MIN, Time::MIDNIGHT)),
        Just(OffsetDateTime::new_utc(Date::MAX, Time::MAX)),
        Just(datetime!(1677-09-21 0:12:44 UTC)),
        Just(datetime!(2262-04-11 23:47:16 UTC)),
        Just(datetime!(1969-12-31 23:59:59 UTC)),
        Just(datetime!(2026-01-01 0:00 UTC)),
        Just(datetime!(2026-01-02 0:00 UTC)),
        Just(datetime!(2100-01-01 0:00 UTC)),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MIN),
        Just(Duration::MAX),
        Just(Duration::ZERO),
        Just(Duration::nanoseconds(1)),
        Just(Duration::seconds(-1)),
        Just(Duration::minutes(5)),
        Just(Duration::days(365 * 1000)),
    ]
}

fn positive() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MAX),
        Just(Duration::nanoseconds(1)),
        Just(Duration::days(1)),
        Just(Duration::days(365 * 1000)),
    ]
}

/// Changes to a stored record's JSON, each field maybe.
#[derive(Debug, Clone)]
struct RecordEdit {
    fields: Vec<(&'static str, Value)>,
}

fn record_edit() -> impl Strategy<Value = RecordEdit> {
    let field = prop_oneof![
        instant().prop_map(|v| ("created_at", v)),
        instant().prop_map(|v| ("expires_at", v)),
        instant().prop_map(|v| ("last_used_at", v)),
        instant().prop_map(|v| ("grace_until", v)),
        instant().prop_map(|v| ("tokens_after", v)),
        policy().prop_map(|v| ("expiry", v)),
        counter().prop_map(|v| ("uses", json!(v))),
        counter().prop_map(|v| ("use_limit", json!(v))),
        counter().prop_map(|v| ("epoch", json!(v))),
        instant().prop_map(|at| (
            "status",
            json!({"state": "revoked", "at": at, "reason": "r"})
        )),
        Just(("status", json!({"state": "disabled"}))),
        Just(("rotated_to", json!("00000000001"))),
        Just(("rotated_from", json!("LygHa16AHYF"))),
    ];
    proptest::collection::vec(field, 0..6).prop_map(|fields| RecordEdit { fields })
}

fn settings_edit() -> impl Strategy<Value = Vec<(&'static str, Value)>> {
    let field = prop_oneof![
        policy().prop_map(|v| ("default_expiry", v)),
        instant().prop_map(|v| ("default_since", v)),
        counter().prop_map(|v| ("epoch", json!(v))),
        instant().prop_map(|v| ("revoked_all_at", v)),
        (policy(), instant(), instant()).prop_map(|(policy, since, until)| (
            "superseded",
            json!([{ "policy": policy, "since": since, "until": until }])
        )),
    ];
    proptest::collection::vec(field, 0..4)
}

/// Runs every operation of a ring on a key; the results do not matter,
/// only that each returns.
fn exercise<S: KeyStore + 'static>(
    ring: &KeyRing<S>,
    clock: &ManualClock,
    id: KeyId,
    secret: &str,
    now: OffsetDateTime,
) {
    let need = Requirement::scope("a:b").expect("scope");
    let _ = ring.verify(secret);
    let _ = ring.verify_with(secret, RequestContext::new().require(&need));
    if let Ok(token) = ring.exchange(secret, Duration::minutes(5)) {
        let _ = ring.verify_access_token(token.expose());
        let _ = ring.verify_access_token_strict(token.expose());
        let _ = format!("{:?}", token.claims);
        let _ = serde_json::to_string(&token.claims);
    }
    let _ = ring.exchange(secret, Duration::MAX);
    let _ = ring.get(id).map(|k| serde_json::to_string(&k));
    let _ = ring.state(id);
    let _ = ring.expires_at(id);
    let _ = ring.list(&ListFilter::new());
    let _ = ring.list_page(&ListFilter::new(), 1);
    for window in [Duration::MAX, Duration::MIN, Duration::days(1)] {
        let _ = ring.expiring_within(window);
    }
    let _ = ring.flush();
    clock.set(now);
    let _ = ring.update(id, KeyUpdate::new().name("n"));
    let _ = ring.disable(id);
    let _ = ring.enable(id);
    let _ = ring.verify(secret);
    for grace in [
        Duration::MAX,
        Duration::MIN,
        Duration::ZERO,
        Duration::days(1),
    ] {
        if let Ok(next) = ring.rotate(id, grace) {
            let _ = ring.verify(secret);
            let _ = ring.verify(next.secret.expose());
            let _ = ring.state(id);
            let _ = ring.expiring_within(Duration::MAX);
        }
    }
    if let Ok(again) = ring.regenerate(id) {
        let _ = ring.verify(again.secret.expose());
    }
    let _ = ring.verify(secret);
    let _ = ring.revoke_owner("o", "r");
    let _ = ring.owner_password_expired("o");
    let _ = ring.revoke(id, "r");
    let _ = ring.flush();
    let _ = ring.list(&ListFilter::new());
}

/// `value` with `fields` set in its JSON object (in the object under
/// `within`, if given), if it still reads.
fn edited<T: serde::Serialize + serde::de::DeserializeOwned>(
    value: &T,
    within: Option<&str>,
    fields: &[(&'static str, Value)],
) -> Option<T> {
    let mut json = serde_json::to_value(value).expect("serializes");
    let object = match within {
        Some(name) => json[name].as_object_mut(),
        None => json.as_object_mut(),
    }
    .expect("an object");
    for (name, v) in fields {
        object.insert((*name).to_owned(), v.clone());
    }
    serde_json::from_value(json).ok()
}

/// A key with a use limit whose stored count is at the top of `u64` (a
/// record edited in the store, or a count no build wrote) is used up: no
/// overflow when the count is checked against the limit.
#[test]
fn a_use_count_at_u64_max_is_used_up_without_overflow() {
    let ring = KeyRing::builder("acme")
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("ring");
    let issued = ring.issue(NewKey::new("o").use_limit(3)).expect("issue");
    let stored = ring.store().lookup(issued.key.id()).expect("stored");
    let spent = edited(&*stored, Some("key"), &[("uses", json!(u64::MAX))]).expect("reads");
    ring.store().replace(spent).expect("replace");
    assert_eq!(
        ring.verify(issued.secret.expose()).unwrap_err(),
        VerifyError::UsageExceeded
    );
    assert_eq!(ring.state(issued.key.id()), Some(KeyState::UsedUp));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A record edited in the store to hold extreme instants, periods and
    /// counters, under settings edited so too, with the clock anywhere:
    /// every operation returns.
    #[test]
    fn extreme_records_and_settings_never_panic(
        edit in record_edit(),
        settings in settings_edit(),
        issue_policy in prop_oneof![Just(None), policy().prop_map(Some)],
        limit in prop_oneof![Just(None), counter().prop_map(Some)],
        max_lifetime in prop_oneof![Just(None), positive().prop_map(Some)],
        token_ttl in prop_oneof![Just(Duration::seconds(1)), Just(Duration::hours(24))],
        ring_default in prop_oneof![Just(None), policy().prop_map(Some)],
        now in clock_time(),
        later in duration(),
        new_default in prop_oneof![Just(None), policy().prop_map(Some)],
    ) {
        let start = datetime!(2026-01-01 0:00 UTC);
        let clock = ManualClock::new(start);
        let mut builder = KeyRing::builder("acme")
            .clock(clock.clone())
            .signing_key(0, [7; 32])
            .max_token_ttl(token_ttl);
        if let Some(policy) = ring_default.and_then(|p| serde_json::from_value(p).ok()) {
            builder = builder.default_expiry(policy);
        }
        if let Some(max) = max_lifetime {
            builder = builder.max_lifetime(max);
        }
        let Ok(ring) = builder.build(MemoryStore::new()) else {
            return Ok(());
        };
        let mut request = NewKey::new("o").scopes(ScopeSet::parse(["a:b"]).expect("scopes"));
        if let Some(policy) = issue_policy.and_then(|p| serde_json::from_value(p).ok()) {
            request = request.expiry(policy);
        }
        if let Some(limit) = limit {
            request = request.use_limit(limit);
        }
        let Ok(issued) = ring.issue(request) else {
            return Ok(());
        };
        let id = issued.key.id();
        let secret = issued.secret.expose().to_owned();
        let stored = ring.store().lookup(id).expect("stored");
        if let Some(record) = edited(&*stored, Some("key"), &edit.fields) {
            ring.store().replace(record).expect("replace");
        }
        let current = ring.settings();
        if let Some(changed) = edited(&current, None, &settings) {
            ring.store().save_settings(&changed).expect("save");
            let _ = ring.refresh();
        }
        clock.set(now);
        clock.advance(later);
        let now = clock.now();
        exercise(&ring, &clock, id, &secret, now);
        if let Some(policy) = new_default.and_then(|p| serde_json::from_value(p).ok()) {
            let _ = ring.set_default_expiry(policy);
        }
        let _ = ring.revoke_all();
        let _ = ring.verify(&secret);
        let _ = ring.expiring_within(Duration::MAX);
    }
}

/// A record of the store file's format (see `src/store/file/format.rs`),
/// with a checksum that matches: what an attacker who can write the file
/// (or an edited copy) can put there.
fn record(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("short payload");
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[1, 0]);
    crc.update(&len.to_le_bytes());
    crc.update(payload);
    let mut out = b"KW\x01\x00".to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A store file written by a ring: a few keys, a revocation, a new
/// default; with one key's secret to verify.
fn store_file(dir: &std::path::Path) -> (Vec<u8>, String, Value) {
    let path = dir.join("seed.kw");
    let ring = KeyRing::builder("acme")
        .flush_interval(None)
        .build(FileStore::open(&path).expect("open"))
        .expect("ring");
    let issued = ring.issue(NewKey::new("o").use_limit(3)).expect("issue");
    let other = ring.issue(NewKey::new("p")).expect("issue");
    ring.revoke(other.key.id(), "r").expect("revoke");
    ring.set_default_expiry(ExpiryPolicy::days(30))
        .expect("default");
    let _ = ring.verify(issued.secret.expose());
    let stored = ring.store().lookup(issued.key.id()).expect("stored");
    let stored = serde_json::to_value(&*stored).expect("json");
    drop(ring);
    let bytes = std::fs::read(&path).expect("read");
    (bytes, issued.secret.expose().to_owned(), stored)
}

#[derive(Debug, Clone)]
enum Damage {
    Flip { at: usize, bit: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Append(Vec<u8>),
}

fn hostile_payload(stored: Value) -> impl Strategy<Value = Vec<u8>> {
    let id = stored["key"]["id"].as_str().expect("id").to_owned();
    let put = (record_edit(), Just(stored)).prop_map(|(edit, mut stored)| {
        for (name, v) in edit.fields {
            stored["key"][name] = v;
        }
        serde_json::to_vec(&json!([{ "put": stored }])).expect("json")
    });
    let settings = settings_edit().prop_map(|fields| {
        let mut s = json!({
            "default_expiry": "never", "default_since": "2026-01-01T00:00:00Z",
        });
        for (name, v) in fields {
            s[name] = v;
        }
        serde_json::to_vec(&json!([{ "settings": s }])).expect("json")
    });
    prop_oneof![
        put,
        settings,
        Just(format!(r#"[{{"remove":"{id}"}}]"#).into_bytes()),
        Just(br#"[{"remove":"zzzzzzzzzzz"}]"#.to_vec()),
        Just(b"[]".to_vec()),
        Just(b"{}".to_vec()),
        (1usize..5000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Where the records start: after the header's three pages.
const HEADER_LEN: usize = 3 * 4096;

fn damage(len: usize, stored: Value) -> impl Strategy<Value = Damage> {
    let at = prop_oneof![1 => 0..len, 9 => HEADER_LEN..len];
    prop_oneof![
        1 => (at.clone(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        1 => at.clone().prop_map(|at| Damage::Cut { at }),
        1 => (at, hostile_payload(stored.clone()).prop_map(|p| record(&p)))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        4 => hostile_payload(stored).prop_map(|p| Damage::Append(record(&p))),
        1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Damage::Append),
    ]
}

#[test]
fn a_damaged_or_crafted_store_file_opens_or_fails_but_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seed, secret, stored) = store_file(dir.path());
    let id: KeyId = stored["key"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("id");
    let path = dir.path().join("keys.kw");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    let strategy = proptest::collection::vec(damage(seed.len(), stored.clone()), 1..4);
    runner
        .run(&strategy, |damages| {
            let mut bytes = seed.clone();
            for d in damages {
                match d {
                    Damage::Flip { at, bit } => {
                        if let Some(b) = bytes.get_mut(at) {
                            *b ^= 1 << bit;
                        }
                    }
                    Damage::Cut { at } => bytes.truncate(at),
                    Damage::Insert { at, bytes: more } => {
                        let at = at.min(bytes.len());
                        bytes.splice(at..at, more);
                    }
                    Damage::Append(more) => bytes.extend(more),
                }
            }
            std::fs::write(&path, &bytes).expect("write");
            let Ok(store) = FileStore::open(&path) else {
                return Ok(());
            };
            let _ = store.len();
            let _ = store.recovery();
            let mut export = Vec::new();
            let _ = store.export(&mut export);
            let clock = ManualClock::new(datetime!(2026-06-01 0:00 UTC));
            let ring = KeyRing::builder("acme")
                .clock(clock.clone())
                .flush_interval(None)
                .build(store);
            if let Ok(ring) = ring {
                exercise(&ring, &clock, id, &secret, clock.now());
                let _ = ring
                    .store()
                    .import(&export[..], keyward::store::ImportMode::Merge);
                let _ = ring
                    .store()
                    .import(&export[..], keyward::store::ImportMode::Replace);
                let _ = ring.store().compact();
            }
            Ok(())
        })
        .expect("no panic");
}

/// `text` with its last six characters replaced by the checksum of the
/// rest, as the scanner's documentation gives it.
fn rechecked(mut text: String) -> String {
    text.truncate(text.len() - 6);
    let sum = base62::encode(crc32fast::hash(text.as_bytes()));
    text.push_str(&format!("{sum:0>6}"));
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A real access token or API key with characters changed and its
    /// checksum made right again (public arithmetic) passes the offline
    /// checks into the MAC, hash and claims code: it is refused there,
    /// never accepted, and nothing panics; the scanner takes it without
    /// panicking too.
    #[test]
    fn a_changed_token_or_key_with_a_good_checksum_is_refused(
        changes in proptest::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(
                b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_T1".to_vec())),
            1..4,
        ),
        cut in 0usize..30,
    ) {
        let ring = KeyRing::builder("acme")
            .signing_key(0, [7; 32])
            .flush_interval(None)
            .build(MemoryStore::new())
            .expect("ring");
        let issued = ring.issue(NewKey::new("o").scopes(ScopeSet::parse(["a:b", "c:d"]).expect("scopes"))).expect("issue");
        let token = ring.exchange(issued.secret.expose(), Duration::minutes(5)).expect("token");
        for original in [token.expose(), issued.secret.expose()] {
            let mut bytes = original.as_bytes().to_vec();
            for (at, b) in &changes {
                let at = "acme_".len() + at.index(bytes.len() - "acme_".len());
                bytes[at] = *b;
            }
            let cut = cut.min(bytes.len() - 12);
            bytes.truncate(bytes.len() - cut);
            let changed = rechecked(String::from_utf8(bytes).expect("ascii"));
            let _ = keyward::scan(&changed);
            let _ = keyward::redact(&changed);
            let _ = ring.revoke_leaked(&changed, "leaked");
            if changed != original {
                prop_assert!(ring.verify_access_token(&changed).is_err());
                prop_assert!(ring.verify_access_token_strict(&changed).is_err());
                prop_assert!(ring.verify(&changed).is_err());
            }
        }
    }
}

/// Reads `bytes` as each public type that deserializes, as JSON and as
/// CBOR (a format that is not human readable, where `ExpiryPolicy` takes
/// `time`'s tuples): errors, never a panic.
fn read_as_each(bytes: &[u8]) {
    fn both<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
        let _ = serde_json::from_slice::<T>(bytes);
        let _ = ciborium::from_reader::<T, _>(bytes);
    }
    both::<ExpiryPolicy>(bytes);
    both::<ScopeSet>(bytes);
    both::<Scope>(bytes);
    both::<KeyId>(bytes);
    both::<KeyHash>(bytes);
    both::<ListCursor>(bytes);
    both::<Key>(bytes);
    both::<StoredKey>(bytes);
    both::<RingSettings>(bytes);
    both::<Bindings>(bytes);
    both::<Status>(bytes);
    both::<Contact>(bytes);
}

/// CBOR of a value built from JSON: tuples, maps and integers at their
/// limits, where JSON text alone would not reach.
fn cbor_of(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("cbor");
    out
}

fn extreme_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(i64::MIN)),
        Just(json!(i64::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(i32::MIN)),
        Just(json!(i32::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(366)),
        Just(json!(999_999_999)),
        Just(json!(1_000_000_000)),
        Just(json!(-999_999_999)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_deserializer(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        read_as_each(&bytes);
    }

    /// Each policy with a tuple of extreme integers (the legacy and compact
    /// forms of dates and periods), in JSON and CBOR.
    #[test]
    fn extreme_tuples_never_panic_a_policy(
        tag in prop::sample::select(&["never", "at", "end_of_date", "lifetime", "idle"][..]),
        a in extreme_number(),
        b in extreme_number(),
        more in prop::option::of(extreme_number()),
    ) {
        let mut tuple = vec![a, b];
        tuple.extend(more);
        let value = json!({ tag: tuple });
        let text = serde_json::to_vec(&value).expect("json");
        read_as_each(&text);
        read_as_each(&cbor_of(&value));
    }
}
