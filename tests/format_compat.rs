//! Format stability across versions (SPEC 1 and 8): the key string, the
//! hash at rest, the `FileStore` file, the export, the access token and
//! the serde forms of public types are things hosts persist or send to
//! other services. What an earlier build wrote must read the same, and a
//! format this build does not know must be refused as such, never misread.
//!
//! The fixtures under `tests/fixtures/compat/` (see the README there) were
//! written by a given commit and are never regenerated: a later build
//! must read them as they are. A format changed on purpose takes a new
//! version (file, export, hash, key body or token), which these files,
//! of the old version, then pin as refused or as still read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward::store::{FileStore, ImportMode};
use keyward::time::macros::{date, datetime};
use keyward::time::{Duration, OffsetDateTime};
use keyward::{
    CertFingerprint, Contact, EventLog, ExpiryPolicy, KeyRing, ListCursor, ListFilter, ManualClock,
    Network, NewKey, RequestContext, Requirement, ScopeSet, StoreError,
};

/// The pepper and signing key of every fixture (not real ones).
const PEPPER: [u8; 32] = *b"fixture pepper, not a real one!!";
const SIGNING_KEY: [u8; 32] = *b"fixture signing key, not real!!!";
const PREFIX: &str = "kwfixture";

fn fixture(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compat")
        .join(dir)
}

/// The plaintext keys a fixture's generator issued, by name.
fn keys(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("keys.txt"))
        .unwrap()
        .lines()
        .map(|line| {
            let (name, key) = line.split_once(' ').unwrap();
            (name.to_owned(), key.to_owned())
        })
        .collect()
}

fn key<'a>(keys: &'a [(String, String)], name: &str) -> &'a str {
    &keys.iter().find(|(n, _)| n == name).unwrap().1
}

/// A copy of a fixture's store file, opened (the fixture itself is never
/// written to).
fn open_copy(dir: &Path, file: &str) -> (tempfile::TempDir, FileStore) {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("store.kw");
    std::fs::copy(dir.join(file), &path).unwrap();
    let store = FileStore::open(&path).unwrap();
    (work, store)
}

/// The ring configuration of every fixture's generator.
fn ring(
    store: FileStore,
    clock: &ManualClock,
    events: Option<Arc<EventLog>>,
) -> KeyRing<FileStore> {
    let mut builder = KeyRing::builder(PREFIX)
        .pepper(PEPPER)
        .clock(clock.clone())
        .sensitive(["admin"])
        .default_expiry(ExpiryPolicy::days(30))
        .signing_key(3, SIGNING_KEY)
        .flush_interval(None);
    if let Some(events) = events {
        builder = builder.events(events);
    }
    builder.build(store).unwrap()
}

/// What each fixture key gets from `verify_with` (with the request the
/// bound key needs): `ok <owner>` or the error's code.
fn outcomes(ring: &KeyRing<FileStore>, keys: &[(String, String)]) -> Vec<(String, String)> {
    let context = RequestContext::new()
        .peer_addr("10.1.2.3".parse().unwrap())
        .client_cert_der(b"fixture certificate");
    keys.iter()
        .map(|(name, key)| {
            let outcome = match ring.verify_with(key, context) {
                Ok(verified) => format!("ok {}", verified.owner()),
                Err(e) => e.code().to_owned(),
            };
            (name.clone(), outcome)
        })
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|&(name, outcome)| (name.to_owned(), outcome.to_owned()))
        .collect()
}

/// Exports `store` to a string.
fn export(store: &FileStore) -> String {
    let mut out = Vec::new();
    store.export(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// A store file and an export written by commit 5977b4d, the first build
/// of file format version 2 (every write a record, slots in the header),
/// with keys of every kind: each expiry policy, bindings, contact and
/// metadata, a use limit and uses, a rotation in its grace, a
/// regeneration, disabled, revoked and deleted keys, a key from before a
/// revoke-all, a changed default. Its periods and dates are in `time`'s
/// tuple forms, its settings without the prefix and pepper check later
/// builds keep. This build opens both and every key verifies, or is
/// refused, as it was then (the secrets hash as they did).
#[test]
fn a_store_and_an_export_of_the_first_version_2_build_read_the_same() {
    let dir = fixture("v2-5977b4d");
    let keys = keys(&dir);
    let before = expected(&[
        ("early", "key_revoked"),
        ("full", "ok acct_1"),
        ("bound", "ok acct_2"),
        ("idle", "ok acct_3"),
        ("at", "ok acct_3"),
        ("never", "ok acct_3"),
        ("default", "ok acct_4"),
        ("rotated_old", "ok acct_5"),
        ("rotated_new", "ok acct_5"),
        ("regen_dead", "invalid_key"),
        ("regen_live", "ok acct_5"),
        ("disabled", "key_disabled"),
        ("revoked", "key_revoked"),
        ("deleted", "invalid_key"),
    ]);
    // The generator's clock stopped at 10:08.
    let now = datetime!(2026-12-01 10:09 UTC);

    let (_work, store) = open_copy(&dir, "store.kw");
    assert_eq!(store.len(), 12);
    let (_imported_dir, imported) = {
        let work = tempfile::tempdir().unwrap();
        let store = FileStore::open(work.path().join("imported.kw")).unwrap();
        let input = std::fs::File::open(dir.join("export.jsonl")).unwrap();
        let report = store.import(input, ImportMode::Replace).unwrap();
        assert_eq!(report.imported, 12);
        (work, store)
    };
    // The file and the export hold the same: this build exports both alike.
    assert_eq!(export(&store), export(&imported));

    for store in [store, imported] {
        let clock = ManualClock::new(now);
        let ring = ring(store, &clock, None);
        assert_eq!(outcomes(&ring, &keys), before);
        let settings = ring.settings();
        assert_eq!(settings.default_expiry(), ExpiryPolicy::days(60));
        assert_eq!(settings.epoch(), 1);
        let full = ring.verify(key(&keys, "full")).unwrap().key().clone();
        // Two uses in the file, one for `outcomes` and this one.
        assert_eq!(full.uses(), 4);
        assert_eq!(full.use_limit(), Some(100));
        assert_eq!(full.expiry(), Some(ExpiryPolicy::days(90)));
        assert_eq!(full.description(), Some("every field"));
        assert_eq!(
            full.contact(),
            Some(&Contact::new("Ada", "Lovelace", "ada", "ada@example.com"))
        );
        assert_eq!(full.metadata()["tier"], "gold");
        assert_eq!(
            full.scopes(),
            &ScopeSet::parse(["invoices:read", "admin:read", "*:list"]).unwrap()
        );
        let bound = ring.verify_with(key(&keys, "bound"), RequestContext::new());
        assert_eq!(bound.unwrap_err().code(), "binding_mismatch");
        let policy = |name: &str| {
            let id = ring
                .verify_with(
                    key(&keys, name),
                    RequestContext::new()
                        .peer_addr("10.1.2.3".parse().unwrap())
                        .client_cert_der(b"fixture certificate"),
                )
                .unwrap()
                .id();
            ring.get(id).unwrap().expiry()
        };
        assert_eq!(
            policy("bound"),
            Some(ExpiryPolicy::EndOfDate(date!(2027 - 03 - 31)))
        );
        assert_eq!(
            policy("idle"),
            Some(ExpiryPolicy::Idle(Duration::hours(36)))
        );
        assert_eq!(
            policy("at"),
            Some(ExpiryPolicy::At(datetime!(2027-01-01 12:30:15.5 UTC)))
        );
        assert_eq!(policy("never"), Some(ExpiryPolicy::Never));
        assert_eq!(policy("default"), None);
        // Later, past every end but `never`'s.
        clock.set(now + Duration::days(200));
        let later = outcomes(&ring, &keys);
        let active: Vec<&str> = later
            .iter()
            .filter(|(_, outcome)| outcome.starts_with("ok"))
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(active, ["never"]);
    }
}

/// An export of another format version is refused as one, its version
/// named, whatever else its first line holds: a later version may add
/// header fields, or settings of a shape this one cannot read, and the
/// host must learn that the export is newer than this build, not that a
/// field is unknown. Nothing is imported.
#[test]
fn an_export_of_another_version_is_refused_naming_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path().join("keys.kw")).unwrap();
    for (header, version) in [
        (r#"{"keyward_export":3,"keys":0,"settings":null}"#, 3),
        (r#"{"keyward_export":3}"#, 3),
        (
            r#"{"keyward_export":3,"keys":0,"settings":null,"signed_by":"ops"}"#,
            3,
        ),
        (
            r#"{"settings":{"default_expiry":"P30D","rules":[]},"keyward_export":4}"#,
            4,
        ),
        (r#"{"keyward_export":0,"settings":null}"#, 0),
    ] {
        let input = format!("{header}\n");
        for mode in [ImportMode::Merge, ImportMode::Replace] {
            match store.import(input.as_bytes(), mode) {
                Err(e @ StoreError::InvalidImport { .. }) => assert_eq!(
                    e.to_string(),
                    format!("invalid import at line 1: unknown export version {version}"),
                    "{header}"
                ),
                other => panic!("{header}: {other:?}"),
            }
        }
    }
    assert!(store.is_empty());
}

/// When [`write_a_fixture_of_this_build`] starts its clock.
const GENERATED_FROM: OffsetDateTime = datetime!(2026-12-01 10:00 UTC);
/// A minute after its clock stopped: when the tests read its fixture.
const READ_AT: OffsetDateTime = datetime!(2026-12-03 10:09 UTC);

/// The JSON of a serde value.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

/// The serde and text forms of the public types a host persists or sends
/// on, taken from a fixture's store at [`READ_AT`] (on a copy), one
/// `name<TAB>form` line each: `Verified`, `Key`, `RingSettings`,
/// `ListCursor` (text and JSON), a page, an access token under the fixed
/// signing key and the `AccessClaims` it carries, refusals' `VerifyError`
/// and the events of a few operations. Nothing here depends on anything
/// but the fixture and the clock: no key is issued.
fn forms(dir: &Path, keys: &[(String, String)]) -> String {
    let (_work, store) = open_copy(dir, "store.kw");
    let clock = ManualClock::new(READ_AT);
    let log = Arc::new(EventLog::new());
    let ring = ring(store, &clock, Some(log.clone()));
    let mut out = String::new();
    let mut line = |name: &str, form: String| {
        out.push_str(name);
        out.push('\t');
        out.push_str(&form);
        out.push('\n');
    };
    let need = Requirement::scope("invoices:read").unwrap();
    let verified = ring.verify_with(key(keys, "full"), &need).unwrap();
    line("verified", json(&verified));
    line("key", json(verified.key()));
    line("settings", json(&ring.settings()));
    let cursor = ListCursor::from(verified.key());
    line("cursor", cursor.to_string());
    line("cursor_json", json(&cursor));
    let page = ring.list_page(&ListFilter::new(), 2).unwrap();
    let ids: Vec<String> = page.keys.iter().map(|k| k.id().to_string()).collect();
    line(
        "page",
        format!("{} next {}", ids.join(" "), page.next.unwrap()),
    );
    let token = ring
        .exchange(key(keys, "never"), Duration::minutes(30))
        .unwrap();
    line("token", token.expose().to_owned());
    let claims = ring.verify_access_token(token.expose()).unwrap();
    line("claims", json(&claims));
    for name in ["regen_dead", "revoked", "disabled", "lapsed"] {
        line("error", json(&ring.verify(key(keys, name)).unwrap_err()));
    }
    let id = |name: &str| {
        let context = RequestContext::new()
            .peer_addr("10.1.2.3".parse().unwrap())
            .client_cert_der(b"fixture certificate");
        ring.verify_with(key(keys, name), context).unwrap().id()
    };
    let (bound, at) = (id("bound"), id("at"));
    ring.by("admin@example.com").disable(bound).unwrap();
    ring.enable(bound).unwrap();
    ring.revoke(at, "fixture").unwrap();
    ring.revoke_owner("acct_3", "owner left").unwrap();
    ring.set_default_expiry(ExpiryPolicy::days(90)).unwrap();
    for event in log.events() {
        line("event", json(&event));
    }
    out
}

/// The expected outcomes at [`READ_AT`] of the keys of a fixture written by
/// [`write_a_fixture_of_this_build`].
fn outcomes_of_this_builds_fixture() -> Vec<(String, String)> {
    expected(&[
        ("early", "key_revoked"),
        ("lapsed", "key_expired"),
        ("full", "ok acct_1"),
        ("bound", "ok acct_2"),
        ("idle", "ok acct_3"),
        ("at", "ok acct_3"),
        ("never", "ok acct_3"),
        ("default", "ok acct_4"),
        ("rotated_old", "ok acct_5"),
        ("rotated_new", "ok acct_5"),
        ("regen_dead", "invalid_key"),
        ("regen_live", "ok acct_5"),
        ("disabled", "key_disabled"),
        ("revoked", "key_revoked"),
        ("deleted", "invalid_key"),
    ])
}

/// A fixture of commit 8c19671 (file format 2, export 1, hash v=1, key
/// body 1, token `T`), with what later builds added to the stored forms:
/// ISO 8601 periods and dates, settings with the ring's prefix, pepper
/// check and a superseded default. Its file and its export read back,
/// byte for byte, to the export it was written with, in export version 2
/// (the same lines, the first with the key count); its version 1 export
/// still imports, and writes the pinned file byte for byte; every key
/// verifies or is refused as then; and the serde and text forms of the
/// public types (see [`forms`]), the access token under the fixed signing
/// key included, are the ones pinned.
#[test]
fn a_fixture_of_commit_8c19671_reads_and_writes_byte_for_byte() {
    reads_and_writes_byte_for_byte("v2-8c19671", |pinned| {
        let keys = pinned.lines().count() - 1;
        let rest = pinned
            .strip_prefix(r#"{"keyward_export":1,"#)
            .expect("a version 1 header");
        format!(r#"{{"keyward_export":2,"keys":{keys},"#) + rest
    });
}

/// A fixture of commit 2f24b49 (file format 2, export 2: its first line
/// counts the keys), read and written as the one of 8c19671 is, its
/// export byte for byte as pinned. A change to any of these formats fails
/// here: make it a new version, and add a fixture beside this one.
#[test]
fn a_fixture_of_commit_2f24b49_reads_and_writes_byte_for_byte() {
    reads_and_writes_byte_for_byte("v2-2f24b49", str::to_owned);
}

/// Opens the fixture in `dir` and checks, as the tests above say, that
/// its file exports (and its export imports and exports) as
/// `as_exported_now` of the pinned export, that the import writes the
/// pinned `imported.kw`, that its keys verify or are refused as then, and
/// that the forms of the public types are the pinned ones.
fn reads_and_writes_byte_for_byte(dir: &str, as_exported_now: impl Fn(&str) -> String) {
    let dir = fixture(dir);
    let keys = keys(&dir);
    let pinned_export = std::fs::read_to_string(dir.join("export.jsonl")).unwrap();
    let exported_now = as_exported_now(&pinned_export);
    let (_work, store) = open_copy(&dir, "store.kw");
    assert_eq!(export(&store), exported_now);

    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("imported.kw");
    let imported = FileStore::open(&path).unwrap();
    imported
        .import(pinned_export.as_bytes(), ImportMode::Replace)
        .unwrap();
    assert_eq!(export(&imported), exported_now);
    let written = std::fs::read(&path).unwrap();
    let pinned = std::fs::read(dir.join("imported.kw")).unwrap();
    // Not assert_eq!: two files of 16 KiB would fill the screen.
    assert!(
        written == pinned,
        "an import of the pinned export wrote another file ({} bytes, {} pinned; first \
         difference at byte {:?})",
        written.len(),
        pinned.len(),
        written.iter().zip(&pinned).position(|(a, b)| a != b)
    );

    for store in [store, imported] {
        let ring = ring(store, &ManualClock::new(READ_AT), None);
        assert_eq!(outcomes(&ring, &keys), outcomes_of_this_builds_fixture());
    }

    let pinned_forms = std::fs::read_to_string(dir.join("forms.txt")).unwrap();
    let forms = forms(&dir, &keys);
    for (line, (now, then)) in forms.lines().zip(pinned_forms.lines()).enumerate() {
        assert_eq!(now, then, "line {} of forms.txt", line + 1);
    }
    assert_eq!(forms.lines().count(), pinned_forms.lines().count());
}

/// Writes a fixture of this build to the directory `KEYWARD_FIXTURE_OUT`
/// (`cargo test --test format_compat -- --ignored write_a_fixture`): a
/// ring's store file, its export, the plaintext keys, the file an import
/// of the export writes and the forms of [`forms`]. Run it only to add a
/// fixture for a new format version, into a new directory named for the
/// version and commit; a fixture once committed is never rewritten.
#[test]
#[ignore = "writes a fixture; run by hand for a new format version"]
fn write_a_fixture_of_this_build() {
    let Some(out) = std::env::var_os("KEYWARD_FIXTURE_OUT") else {
        panic!("set KEYWARD_FIXTURE_OUT to a new directory");
    };
    let dir = PathBuf::from(out);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.kw");
    assert!(!path.exists(), "a fixture is never rewritten");
    let clock = ManualClock::new(GENERATED_FROM);
    let ring = ring(FileStore::open(&path).unwrap(), &clock, None);
    let mut keys: Vec<(&str, String)> = Vec::new();
    let early = ring
        .issue(NewKey::new("acct_0").name("before revoke_all"))
        .unwrap();
    keys.push(("early", early.secret.expose().to_owned()));
    clock.advance(Duration::minutes(1));
    ring.revoke_all().unwrap();
    clock.advance(Duration::minutes(1));
    // A default under which a key lapses, then replaced: kept as
    // superseded in the settings.
    ring.set_default_expiry(ExpiryPolicy::days(1)).unwrap();
    let lapsed = ring.issue(NewKey::new("acct_0").name("lapsed")).unwrap();
    keys.push(("lapsed", lapsed.secret.expose().to_owned()));
    clock.advance(Duration::days(2));
    ring.set_default_expiry(ExpiryPolicy::days(30)).unwrap();
    let issue = |keys: &mut Vec<(&str, String)>, name: &'static str, request: NewKey| {
        let issued = ring.issue(request.name(name)).unwrap();
        keys.push((name, issued.secret.expose().to_owned()));
        issued.key.id()
    };
    issue(
        &mut keys,
        "full",
        NewKey::new("acct_1")
            .description("every field")
            .contact(Contact::new("Ada", "Lovelace", "ada", "ada@example.com"))
            .scopes(ScopeSet::parse(["invoices:read", "admin:read", "*:list"]).unwrap())
            .expiry(ExpiryPolicy::days(90))
            .use_limit(100)
            .metadata("team", "billing")
            .metadata("tier", "gold"),
    );
    issue(
        &mut keys,
        "bound",
        NewKey::new("acct_2")
            .expiry(ExpiryPolicy::EndOfDate(date!(2027 - 03 - 31)))
            .client_cert(CertFingerprint::of_der(b"fixture certificate"))
            .allow_network(Network::parse("10.0.0.0/8").unwrap())
            .allow_network(Network::parse("2001:db8::/32").unwrap()),
    );
    let expiring = [
        ("idle", ExpiryPolicy::Idle(Duration::hours(36))),
        ("at", ExpiryPolicy::At(datetime!(2027-01-01 12:30:15.5 UTC))),
    ];
    for (name, policy) in expiring {
        issue(&mut keys, name, NewKey::new("acct_3").expiry(policy));
    }
    issue(
        &mut keys,
        "never",
        NewKey::new("acct_3")
            .expiry(ExpiryPolicy::Never)
            .scopes(ScopeSet::parse(["*:*"]).unwrap()),
    );
    issue(&mut keys, "default", NewKey::new("acct_4"));
    clock.advance(Duration::minutes(5));
    for name in ["default", "full", "full"] {
        ring.verify(key_of(&keys, name)).unwrap();
    }
    ring.flush().unwrap();
    let old = issue(&mut keys, "rotated_old", NewKey::new("acct_5"));
    let new = ring.rotate(old, Duration::days(400)).unwrap();
    keys.push(("rotated_new", new.secret.expose().to_owned()));
    let regenerated = issue(&mut keys, "regen_dead", NewKey::new("acct_5"));
    let live = ring.regenerate(regenerated).unwrap();
    keys.push(("regen_live", live.secret.expose().to_owned()));
    let disabled = issue(&mut keys, "disabled", NewKey::new("acct_6"));
    ring.disable(disabled).unwrap();
    let revoked = issue(&mut keys, "revoked", NewKey::new("acct_6"));
    ring.revoke(revoked, "left the company").unwrap();
    let deleted = issue(&mut keys, "deleted", NewKey::new("acct_6"));
    ring.delete(deleted).unwrap();
    clock.advance(Duration::minutes(1));
    ring.set_default_expiry(ExpiryPolicy::days(60)).unwrap();
    ring.flush().unwrap();
    assert!(clock_reading(&clock) < READ_AT);
    let text: String = keys.iter().map(|(n, k)| format!("{n} {k}\n")).collect();
    std::fs::write(dir.join("keys.txt"), text).unwrap();
    let exported = export(ring.store());
    std::fs::write(dir.join("export.jsonl"), &exported).unwrap();
    drop(ring);
    std::fs::remove_file(dir.join("store.kw.lock")).ok();
    let imported = dir.join("imported.kw");
    FileStore::open(&imported)
        .unwrap()
        .import(exported.as_bytes(), ImportMode::Replace)
        .unwrap();
    std::fs::remove_file(dir.join("imported.kw.lock")).ok();
    let keys = self::keys(&dir);
    std::fs::write(dir.join("forms.txt"), forms(&dir, &keys)).unwrap();
}

fn key_of<'a>(keys: &'a [(&str, String)], name: &str) -> &'a str {
    &keys.iter().find(|(n, _)| *n == name).unwrap().1
}

fn clock_reading(clock: &ManualClock) -> OffsetDateTime {
    keyward::Clock::now(clock)
}
