//! Integration tests of request bindings (client certificate, networks),
//! the exchange of API keys for access tokens, and leak response (`scan`,
//! `redact`, `KeyRing::revoke_leaked`), through the public API only.
//!
//! Time is driven by a `ManualClock` standing on whole seconds (tokens carry
//! whole seconds). Keys and tokens are forged or tampered with through the
//! documented formats: the last six characters are the CRC32 (IEEE) of
//! everything before them, as zero-padded base62.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use keyward::time::macros::datetime;
use keyward::time::{Duration, OffsetDateTime};
use keyward::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const ID_LEN: usize = 11;
const SECRET_LEN: usize = 24;
const CHECKSUM_LEN: usize = 6;
/// Width of an access token's MAC, just before its checksum.
const MAC_LEN: usize = 22;

/// A whole second, so that a token's expiry is exactly now + ttl.
const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

const SIGNING: [u8; 32] = [0x5a; 32];
const OLD_SIGNING: [u8; 32] = [0x17; 32];

/// Stand-ins for DER certificates: only their bytes matter.
const CERT: &[u8] = b"0\x82\x01\x0a\x02\x82\x01\x01\x00client certificate of acct_1";
const OTHER_CERT: &[u8] = b"0\x82\x01\x0a\x02\x82\x01\x01\x00client certificate of mallory";

/// A ring at `clock` with signing key 1 and no background flusher.
fn ring(prefix: &str, clock: &ManualClock) -> KeyRing {
    ring_on(prefix, clock, MemoryStore::new())
}

/// Like [`ring`], on `store`.
fn ring_on<S: KeyStore + 'static>(prefix: &str, clock: &ManualClock, store: S) -> KeyRing<S> {
    KeyRing::builder(prefix)
        .clock(clock.clone())
        .signing_key(1, SIGNING)
        .flush_interval(None)
        .build(store)
        .expect("ring builds")
}

/// Like [`ring`], with every event recorded in the returned log.
fn logged_ring(prefix: &str, clock: &ManualClock) -> (KeyRing, Arc<EventLog>) {
    let log = Arc::new(EventLog::new());
    let ring = KeyRing::builder(prefix)
        .clock(clock.clone())
        .signing_key(1, SIGNING)
        .events(Arc::clone(&log))
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("ring builds");
    (ring, log)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address parses")
}

fn net(s: &str) -> Network {
    s.parse().expect("test network parses")
}

fn scopes(list: &[&str]) -> ScopeSet {
    ScopeSet::parse(list).expect("test scopes parse")
}

/// The documented checksum: CRC32 (IEEE) as 6 zero-padded base62 digits.
fn checksum(checked: &str) -> String {
    let encoded = base62::encode(crc32fast::hash(checked.as_bytes()));
    format!("{encoded:0>CHECKSUM_LEN$}")
}

/// A well-formed key string (valid checksum) of `prefix` from its parts.
fn forge(prefix: &str, id: KeyId, secret: &str) -> String {
    assert_eq!(secret.len(), SECRET_LEN);
    let checked = format!("{prefix}_1{id}{secret}");
    let sum = checksum(&checked);
    format!("{checked}{sum}")
}

/// `text` with its last six characters replaced by the right checksum.
fn with_fresh_checksum(text: &str) -> String {
    let checked = &text[..text.len() - CHECKSUM_LEN];
    format!("{checked}{}", checksum(checked))
}

/// The 24-character secret part of a key of `prefix`.
fn secret_part<'a>(key: &'a str, prefix: &str) -> &'a str {
    let start = prefix.len() + 2 + ID_LEN;
    &key[start..start + SECRET_LEN]
}

/// What a redaction keeps of a key: prefix, `_1` and the id.
fn key_public_part<'a>(key: &'a str, prefix: &str) -> &'a str {
    &key[..prefix.len() + 2 + ID_LEN]
}

/// What a redaction keeps of a token: prefix, `_T`, signing key id, key id.
fn token_public_part<'a>(token: &'a str, prefix: &str) -> &'a str {
    &token[..prefix.len() + 2 + 1 + ID_LEN]
}

/// The MAC of an access token (the 22 characters before the checksum).
fn mac_part(token: &str) -> &str {
    &token[token.len() - CHECKSUM_LEN - MAC_LEN..token.len() - CHECKSUM_LEN]
}

/// Another 24-char base62 secret, different from `secret` everywhere.
fn other_secret(secret: &str) -> String {
    secret.bytes().map(|c| shifted(c, 1) as char).collect()
}

/// The base62 character `by` places after `c` (wrapping).
fn shifted(c: u8, by: usize) -> u8 {
    let i = BASE62.iter().position(|&b| b == c).expect("base62 char");
    BASE62[(i + by) % 62]
}

fn replaced(text: &str, at: usize, with: u8) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = with;
    String::from_utf8(bytes).expect("ascii")
}

fn refused<T: Debug>(outcome: Result<T, VerifyError>) -> VerifyError {
    outcome.expect_err("must be refused")
}

/// A deterministic PRNG (SplitMix64), so every run scans the same text.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn base62(&mut self) -> u8 {
        BASE62[self.below(62) as usize]
    }

    fn base62_string(&mut self, len: usize) -> String {
        (0..len).map(|_| self.base62() as char).collect()
    }
}

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Bindings: client certificate
// ---------------------------------------------------------------------------

fn cert_bound(ring: &KeyRing) -> Issued {
    ring.issue(NewKey::new("acct_1").client_cert(CertFingerprint::of_der(CERT)))
        .expect("issue")
}

/// The fingerprint as `openssl x509 -fingerprint -sha256` prints it.
fn openssl_form(fp: CertFingerprint) -> String {
    fp.to_string()
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).expect("hex"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn client_cert_binding_accepts_the_right_certificate_as_der_or_fingerprint() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = cert_bound(&ring);
    let key = issued.secret.expose();
    let fp = CertFingerprint::of_der(CERT);
    assert_eq!(issued.key.bindings().client_cert, Some(fp));
    assert!(issued.key.bindings().networks.is_empty());

    let by_der = ring
        .verify_with(key, RequestContext::new().client_cert_der(CERT))
        .expect("right certificate, as DER");
    assert_eq!(by_der.id(), issued.key.id());
    let by_fp = ring
        .verify_with(key, RequestContext::new().client_cert(fp))
        .expect("right certificate, as fingerprint");
    assert_eq!(by_fp.id(), issued.key.id());

    // The fingerprint as a TLS terminator or openssl prints it.
    for printed in [
        fp.to_string(),
        fp.to_string().to_uppercase(),
        openssl_form(fp),
    ] {
        let parsed: CertFingerprint = printed.parse().expect("printed fingerprint parses");
        assert_eq!(parsed, fp, "{printed}");
        ring.verify_with(key, RequestContext::new().client_cert(parsed))
            .expect("parsed fingerprint matches");
    }

    // Other request facts do not get in the way.
    ring.verify_with(
        key,
        RequestContext::new()
            .peer_addr(ip("198.51.100.7"))
            .client_cert_der(CERT),
    )
    .expect("certificate plus peer");
}

/// SPEC 10: the certificate binding is "the SHA-256 fingerprint of the
/// DER". The fingerprint matches the FIPS 180-2 test vector and a digest
/// computed apart from keyward; a key bound to that digest, given as the
/// hex an operator would paste, admits the certificate's DER.
#[test]
fn client_cert_fingerprint_is_the_sha256_of_the_der() {
    use sha2::Digest;
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    assert_eq!(
        CertFingerprint::of_der(b"abc").to_string(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let digest = hex(&sha2::Sha256::digest(CERT));
    assert_eq!(CertFingerprint::of_der(CERT).to_string(), digest);

    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let pasted = CertFingerprint::from_hex(&digest).expect("a SHA-256 digest in hex");
    let issued = ring
        .issue(NewKey::new("acct_1").client_cert(pasted))
        .expect("issue");
    let key = issued.secret.expose();
    assert!(
        ring.verify_with(key, RequestContext::new().client_cert_der(CERT))
            .is_ok()
    );
    assert_eq!(
        ring.verify_with(key, RequestContext::new().client_cert_der(OTHER_CERT))
            .unwrap_err(),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
}

#[test]
fn client_cert_binding_refuses_a_wrong_or_missing_certificate_with_403() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = cert_bound(&ring);
    let key = issued.secret.expose();
    let truncated = &CERT[..CERT.len() - 1];
    let contexts = [
        ("no certificate", RequestContext::new()),
        ("peer only", RequestContext::new().peer_addr(ip("10.1.2.3"))),
        (
            "other certificate (der)",
            RequestContext::new().client_cert_der(OTHER_CERT),
        ),
        (
            "other certificate (fingerprint)",
            RequestContext::new().client_cert(CertFingerprint::of_der(OTHER_CERT)),
        ),
        (
            "truncated certificate",
            RequestContext::new().client_cert_der(truncated),
        ),
        (
            "empty certificate",
            RequestContext::new().client_cert_der(&[]),
        ),
    ];
    for (what, ctx) in contexts {
        let e = refused(ring.verify_with(key, ctx));
        assert_eq!(
            e,
            VerifyError::BindingMismatch(Binding::ClientCertificate),
            "{what}"
        );
        assert_eq!(e.http_status(), 403, "{what}");
        assert_eq!(e.code(), "binding_mismatch", "{what}");
    }
    assert_eq!(
        refused(ring.verify(key)),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
    // An unbound key of the same ring needs no certificate.
    let free = ring.issue(NewKey::new("acct_2")).expect("issue");
    ring.verify(free.secret.expose()).expect("unbound key");
    ring.verify_with(
        free.secret.expose(),
        RequestContext::new().client_cert_der(OTHER_CERT),
    )
    .expect("unbound key with any certificate");
}

/// Regression: no certificate has an empty DER, so the SHA-256 of nothing
/// is what a host presents when it hashes "no certificate" (`&[]` for a
/// connection without one). A key bound to that fingerprint (say, computed
/// from an empty certificate file) admitted such a request: a certificate
/// binding met by presenting none. It is refused as a missing certificate,
/// by `verify`, by the exchange and by the token check with the request.
#[test]
fn the_fingerprint_of_an_empty_der_is_no_certificate() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let nothing = CertFingerprint::of_der(&[]);
    assert_eq!(
        nothing.to_string(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // `issue` and `update` refuse such a binding; a record can still hold
    // one (written by an older build, or by hand in a host's store).
    assert!(matches!(
        ring.issue(NewKey::new("acct_1").client_cert(nothing)),
        Err(Error::InvalidInput(reason)) if reason.contains("fingerprint of empty input")
    ));
    let issued = cert_bound(&ring);
    let id = issued.key.id();
    let mut to_nothing = issued.key.bindings().clone();
    to_nothing.client_cert = Some(nothing);
    assert!(matches!(
        ring.update(id, KeyUpdate::new().bindings(to_nothing)),
        Err(Error::InvalidInput(reason)) if reason.contains("fingerprint of empty input")
    ));
    let mut record = serde_json::to_value(&*ring.store().lookup(id).unwrap()).unwrap();
    record["key"]["bindings"]["client_cert"] = nothing.to_string().into();
    let record: StoredKey = serde_json::from_value(record).unwrap();
    assert_eq!(record.key().bindings().client_cert, Some(nothing));
    ring.store().replace(record).unwrap();
    let key = issued.secret.expose();
    let missing = VerifyError::BindingMismatch(Binding::ClientCertificate);
    for (what, ctx) in [
        ("no certificate", RequestContext::new()),
        ("empty der", RequestContext::new().client_cert_der(&[])),
        (
            "its fingerprint",
            RequestContext::new().client_cert(nothing),
        ),
        (
            "its fingerprint, pasted",
            RequestContext::new().client_cert(openssl_form(nothing).parse().expect("hex")),
        ),
    ] {
        assert_eq!(refused(ring.verify_with(key, ctx)), missing, "{what}");
    }
    let exchanged = ring.exchange_with(
        key,
        TokenRequest::new().context(RequestContext::new().client_cert_der(&[])),
    );
    assert!(
        matches!(&exchanged, Err(Error::Rejected(e)) if *e == missing),
        "{:?}",
        exchanged.map(|t| t.claims.clone())
    );
    // A key bound to a real certificate is not affected, and neither is
    // an unbound key presented with an empty one.
    let real = cert_bound(&ring);
    ring.verify_with(
        real.secret.expose(),
        RequestContext::new().client_cert_der(CERT),
    )
    .expect("real certificate");
    let free = ring.issue(NewKey::new("acct_2")).expect("issue");
    ring.verify_with(
        free.secret.expose(),
        RequestContext::new().client_cert_der(&[]),
    )
    .expect("unbound key");
}

#[test]
fn bindings_are_checked_only_after_the_secret_matched() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring
        .issue(
            NewKey::new("acct_1")
                .client_cert(CertFingerprint::of_der(CERT))
                .allow_network(net("10.1.0.0/16")),
        )
        .expect("issue");
    let key = issued.secret.expose();
    let wrong_secret = forge(
        "acme",
        issued.key.id(),
        &other_secret(secret_part(key, "acme")),
    );
    let unknown_id = forge(
        "acme",
        KeyId::from_u64(0x0123_4567_89ab_cdef),
        secret_part(key, "acme"),
    );
    let contexts = [
        RequestContext::new(),
        RequestContext::new().client_cert_der(OTHER_CERT),
        RequestContext::new().peer_addr(ip("192.0.2.1")),
        RequestContext::new()
            .client_cert_der(CERT)
            .peer_addr(ip("10.1.2.3")),
    ];
    for ctx in contexts {
        assert_eq!(
            refused(ring.verify_with(&wrong_secret, ctx)),
            VerifyError::Invalid,
            "{ctx:?}"
        );
        assert_eq!(
            refused(ring.verify_with(&unknown_id, ctx)),
            VerifyError::Invalid,
            "{ctx:?}"
        );
    }
    // The right secret with the right request passes.
    ring.verify_with(
        key,
        RequestContext::new()
            .client_cert_der(CERT)
            .peer_addr(ip("10.1.2.3")),
    )
    .expect("right secret, certificate and network");
}

// ---------------------------------------------------------------------------
// Bindings: networks
// ---------------------------------------------------------------------------

fn net_bound(ring: &KeyRing, networks: &[&str]) -> Issued {
    let request = networks
        .iter()
        .fold(NewKey::new("acct_1"), |r, n| r.allow_network(net(n)));
    ring.issue(request).expect("issue")
}

fn assert_admits(ring: &KeyRing, key: &str, inside: &[&str], outside: &[&str]) {
    for peer in inside {
        ring.verify_with(key, RequestContext::new().peer_addr(ip(peer)))
            .unwrap_or_else(|e| panic!("{peer} must be admitted, got {e:?}"));
    }
    for peer in outside {
        assert_eq!(
            ring.verify_with(key, RequestContext::new().peer_addr(ip(peer)))
                .map(|v| v.id()),
            Err(VerifyError::BindingMismatch(Binding::Network)),
            "{peer} must be refused"
        );
    }
}

#[test]
fn ipv4_network_binding_admits_both_edges_and_nothing_beyond() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = net_bound(&ring, &["10.1.0.0/16"]);
    assert_eq!(issued.key.bindings().networks, vec![net("10.1.0.0/16")]);
    assert_admits(
        &ring,
        issued.secret.expose(),
        &[
            "10.1.0.0",
            "10.1.0.1",
            "10.1.128.77",
            "10.1.255.254",
            "10.1.255.255",
        ],
        &[
            "10.0.255.255",
            "10.2.0.0",
            "10.0.0.0",
            "11.1.0.0",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::1",
            // IPv4-compatible (not mapped) IPv6: an IPv6 address.
            "::10.1.2.3",
        ],
    );
    // Every address of a /31 and a /32.
    let pair = net_bound(&ring, &["192.0.2.6/31"]);
    assert_admits(
        &ring,
        pair.secret.expose(),
        &["192.0.2.6", "192.0.2.7"],
        &["192.0.2.5", "192.0.2.8"],
    );
    let single = net_bound(&ring, &["192.0.2.9"]);
    assert_admits(
        &ring,
        single.secret.expose(),
        &["192.0.2.9"],
        &["192.0.2.8", "192.0.2.10"],
    );
    // /0 admits every IPv4 address.
    let all = net_bound(&ring, &["0.0.0.0/0"]);
    assert_admits(
        &ring,
        all.secret.expose(),
        &["0.0.0.0", "255.255.255.255", "10.1.2.3"],
        &["2001:db8::1"],
    );
}

#[test]
fn ipv6_network_binding_admits_both_edges_and_nothing_beyond() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = net_bound(&ring, &["2001:db8::/32"]);
    assert_admits(
        &ring,
        issued.secret.expose(),
        &[
            "2001:db8::",
            "2001:db8::1",
            "2001:db8:1234::42",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        ],
        &[
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db9::",
            "3001:db8::",
            "::",
            "::1",
            "10.1.2.3",
            "::ffff:10.1.2.3",
        ],
    );
    let single = net_bound(&ring, &["2001:db8::42"]);
    assert_admits(
        &ring,
        single.secret.expose(),
        &["2001:db8::42"],
        &["2001:db8::41", "2001:db8::43"],
    );
}

#[test]
fn ipv4_mapped_ipv6_peer_counts_as_its_ipv4_address() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = net_bound(&ring, &["10.1.0.0/16"]);
    assert_admits(
        &ring,
        issued.secret.expose(),
        &["::ffff:10.1.0.0", "::ffff:10.1.2.3", "::ffff:10.1.255.255"],
        &["::ffff:10.0.255.255", "::ffff:10.2.0.0", "::ffff:192.0.2.1"],
    );
    let single = net_bound(&ring, &["192.0.2.9"]);
    assert_admits(
        &ring,
        single.secret.expose(),
        &["::ffff:192.0.2.9", "192.0.2.9"],
        &["::ffff:192.0.2.10"],
    );
}

/// Regression (a bug this independent test found, since fixed): a network
/// written in IPv4-mapped IPv6 form was accepted by `Network::parse` but
/// could never match anything, because `contains` turns mapped peers into
/// IPv4 and then required the network to be IPv4. The fix refuses that
/// form, naming the one to write instead; the IPv4 form admits both ways
/// of writing its addresses.
#[test]
fn ipv4_mapped_ipv6_network_is_refused_and_its_ipv4_form_admits_both_forms() {
    for (text, ipv4, inside) in [
        ("::ffff:10.1.0.0/112", "10.1.0.0/16", "10.1.2.3"),
        ("::ffff:192.0.2.9", "192.0.2.9", "192.0.2.9"),
    ] {
        match text.parse::<Network>() {
            Err(Error::InvalidBinding(why)) => assert!(
                why.contains("write an IPv4-mapped network as IPv4"),
                "{text}: {why}"
            ),
            other => panic!("{text}: {other:?}, not a refusal naming the IPv4 form"),
        }
        let network: Network = ipv4.parse().expect(ipv4);
        let mapped = format!("::ffff:{inside}");
        assert!(
            network.contains(ip(inside)) && network.contains(ip(&mapped)),
            "`{ipv4}` admits neither {inside} nor {mapped}"
        );
    }
}

#[test]
fn any_of_several_networks_admits_the_request() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = net_bound(
        &ring,
        &[
            "10.1.0.0/16",
            "192.168.7.0/24",
            "2001:db8::/32",
            "203.0.113.9",
        ],
    );
    assert_eq!(issued.key.bindings().networks.len(), 4);
    assert_admits(
        &ring,
        issued.secret.expose(),
        &[
            "10.1.0.0",
            "10.1.255.255",
            "192.168.7.0",
            "192.168.7.255",
            "2001:db8::",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            "203.0.113.9",
            "::ffff:192.168.7.8",
        ],
        &[
            "10.2.0.0",
            "192.168.6.255",
            "192.168.8.0",
            "2001:db9::",
            "203.0.113.8",
            "203.0.113.10",
        ],
    );
}

#[test]
fn missing_peer_fails_a_network_binding() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let network_only = net_bound(&ring, &["10.1.0.0/16"]);
    let key = network_only.secret.expose();
    let network = VerifyError::BindingMismatch(Binding::Network);
    assert_eq!(refused(ring.verify(key)), network);
    assert_eq!(
        refused(ring.verify_with(key, RequestContext::new())),
        network
    );
    assert_eq!(
        refused(ring.verify_with(key, RequestContext::new().client_cert_der(CERT))),
        network
    );
    assert_eq!(network.http_status(), 403);
    assert_eq!(network.code(), "binding_mismatch");

    // Both bindings: each must be met.
    let both = ring
        .issue(
            NewKey::new("acct_1")
                .client_cert(CertFingerprint::of_der(CERT))
                .allow_network(net("10.1.0.0/16")),
        )
        .expect("issue");
    let key = both.secret.expose();
    assert_eq!(
        refused(ring.verify_with(key, RequestContext::new().client_cert_der(CERT))),
        network
    );
    assert_eq!(
        refused(
            ring.verify_with(
                key,
                RequestContext::new()
                    .client_cert_der(CERT)
                    .peer_addr(ip("10.2.0.0"))
            )
        ),
        network
    );
    assert_eq!(
        refused(ring.verify_with(key, RequestContext::new().peer_addr(ip("10.1.2.3")))),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
    assert!(matches!(
        refused(ring.verify_with(key, RequestContext::new())),
        VerifyError::BindingMismatch(_)
    ));
    ring.verify_with(
        key,
        RequestContext::new()
            .client_cert_der(CERT)
            .peer_addr(ip("10.1.2.3")),
    )
    .expect("both met");
}

// ---------------------------------------------------------------------------
// Bindings: malformed input
// ---------------------------------------------------------------------------

#[test]
fn malformed_networks_are_refused_with_a_clear_message() {
    let cases = [
        ("10.0.0.0/33", "prefix length too long"),
        ("::/129", "prefix length too long"),
        ("10.0.0.0/255", "prefix length too long"),
        ("10.0.0.1/8", "host bits are set"),
        ("10.1.0.0/8", "host bits are set"),
        ("10.1.0.1/16", "host bits are set"),
        ("2001:db8::1/32", "host bits are set"),
        ("2001:db9::/15", "host bits are set"),
        ("10.0.0.0/", "bad prefix length"),
        ("10.0.0.0/-1", "bad prefix length"),
        ("10.0.0.0/+8", "bad prefix length"),
        ("10.0.0.0/8a", "bad prefix length"),
        ("10.0.0.0/ 8", "bad prefix length"),
        ("10.0.0.0/1000", "bad prefix length"),
        ("10.0.0.0/256", "bad prefix length"),
        ("10.0.0.0/8/8", "bad prefix length"),
        ("10.0.0.0/08", "bad prefix length"),
        ("10.0.0.0/010", "bad prefix length"),
        ("0.0.0.0/00", "bad prefix length"),
        ("", "not an ip address"),
        ("/8", "not an ip address"),
        ("10.0.0/8", "not an ip address"),
        ("256.0.0.0/8", "not an ip address"),
        (" 10.0.0.0/8", "not an ip address"),
        ("x/8", "not an ip address"),
        ("fe80::1%eth0/64", "not an ip address"),
        ("10.0.0.0-10.0.0.255", "not an ip address"),
    ];
    for (text, reason) in cases {
        let err = text
            .parse::<Network>()
            .expect_err(&format!("`{text}` must be refused"));
        let Error::InvalidBinding(message) = &err else {
            panic!("`{text}`: expected InvalidBinding, got {err:?}");
        };
        assert!(
            message.contains(&format!("`{text}`")),
            "`{text}`: message names the input: {message}"
        );
        assert!(
            message.contains(reason),
            "`{text}`: message gives the reason `{reason}`: {message}"
        );
        assert_eq!(
            err.to_string(),
            format!("invalid binding: invalid network `{text}`: {reason}")
        );
        assert!(Network::parse(text).is_err());
    }
    // A very long input is cut in the message.
    let long = "1".repeat(10_000);
    let Err(Error::InvalidBinding(message)) = long.parse::<Network>() else {
        panic!("long input must be refused");
    };
    assert!(message.len() < 300, "{}", message.len());

    // Well-formed ones, and how they print.
    for (text, shown) in [
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("::/0", "::/0"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("192.168.1.7", "192.168.1.7/32"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("2001:db8::42", "2001:db8::42/128"),
    ] {
        assert_eq!(net(text).to_string(), shown, "{text}");
        assert_eq!(Network::parse(text).expect("parses"), net(shown));
    }
}

#[test]
fn garbage_fingerprints_are_refused_with_a_clear_message() {
    let hex64 = "ab".repeat(32);
    let cases = [
        String::new(),
        "abc".to_owned(),
        ":".repeat(64),
        "g".repeat(64),
        "0".repeat(63),
        "0".repeat(65),
        "0".repeat(128),
        format!("0x{}", &hex64[2..]),
        format!(" {}", &hex64[1..]),
        format!("{}-", &hex64[..63]),
        "é".repeat(32),
        format!("{}é", &hex64[..62]),
        format!("sha256:{hex64}"),
        format!("{hex64}\n"),
    ];
    for text in &cases {
        let err = CertFingerprint::from_hex(text).expect_err(&format!("`{text}` must be refused"));
        let Error::InvalidBinding(message) = &err else {
            panic!("`{text}`: expected InvalidBinding, got {err:?}");
        };
        assert!(
            message.contains("not a SHA-256 fingerprint"),
            "`{text}`: {message}"
        );
        assert!(text.parse::<CertFingerprint>().is_err(), "`{text}`");
    }
    // The accepted forms.
    let fp = CertFingerprint::of_der(CERT);
    assert_eq!(
        CertFingerprint::from_hex(&fp.to_string()).expect("lower"),
        fp
    );
    assert_eq!(
        CertFingerprint::from_hex(&openssl_form(fp)).expect("openssl"),
        fp
    );
    assert_eq!(fp.to_string().len(), 64);
    assert_ne!(fp, CertFingerprint::of_der(OTHER_CERT));
}

/// Regression (a bug this independent test found, since fixed):
/// `u8::from_str_radix` accepts a leading `+`, so
/// `CertFingerprint::from_hex` took `+0+1+2...` (32 pairs) as a
/// fingerprint.
#[test]
fn fingerprint_with_plus_signs_is_refused() {
    for text in ["+0".repeat(32), format!("+f{}", "0".repeat(62))] {
        assert!(
            CertFingerprint::from_hex(&text).is_err(),
            "`{text}` is not 64 hex digits but was accepted as {:?}",
            CertFingerprint::from_hex(&text).ok()
        );
    }
}

// ---------------------------------------------------------------------------
// Bindings through the lifecycle
// ---------------------------------------------------------------------------

fn full_bindings() -> NewKey {
    NewKey::new("acct_1")
        .client_cert(CertFingerprint::of_der(CERT))
        .allow_network(net("10.1.0.0/16"))
        .allow_network(net("2001:db8::/32"))
}

fn good_request() -> RequestContext<'static> {
    RequestContext::new()
        .client_cert_der(CERT)
        .peer_addr(ip("10.1.2.3"))
}

#[test]
fn rotate_hands_the_bindings_on() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let old = ring.issue(full_bindings()).expect("issue");
    let new = ring
        .rotate(old.key.id(), Duration::minutes(5))
        .expect("rotate");
    assert_eq!(new.key.bindings(), old.key.bindings());
    assert_eq!(
        ring.get(new.key.id()).expect("stored").bindings(),
        old.key.bindings()
    );
    for key in [old.secret.expose(), new.secret.expose()] {
        ring.verify_with(key, good_request())
            .expect("bound request");
        assert_eq!(
            refused(ring.verify_with(key, RequestContext::new().peer_addr(ip("10.1.2.3")))),
            VerifyError::BindingMismatch(Binding::ClientCertificate)
        );
        assert_eq!(
            refused(ring.verify_with(key, RequestContext::new().client_cert_der(CERT))),
            VerifyError::BindingMismatch(Binding::Network)
        );
    }
}

#[test]
fn update_replaces_adds_and_removes_bindings() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring.issue(full_bindings()).expect("issue");
    let id = issued.key.id();
    let key = issued.secret.expose();

    // Another certificate and another network.
    let mut moved = Bindings::default();
    moved.client_cert = Some(CertFingerprint::of_der(OTHER_CERT));
    moved.networks = vec![net("192.0.2.0/24")];
    let updated = ring
        .update(id, KeyUpdate::new().bindings(moved.clone()))
        .expect("update");
    assert_eq!(updated.bindings(), &moved);
    assert_eq!(ring.get(id).expect("stored").bindings(), &moved);
    assert_eq!(
        refused(ring.verify_with(key, good_request())),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
    assert_eq!(
        refused(
            ring.verify_with(
                key,
                RequestContext::new()
                    .client_cert_der(OTHER_CERT)
                    .peer_addr(ip("10.1.2.3"))
            )
        ),
        VerifyError::BindingMismatch(Binding::Network)
    );
    ring.verify_with(
        key,
        RequestContext::new()
            .client_cert_der(OTHER_CERT)
            .peer_addr(ip("192.0.2.200")),
    )
    .expect("new bindings met");

    // Other updates leave the bindings alone.
    ring.update(id, KeyUpdate::new().name("renamed"))
        .expect("rename");
    assert_eq!(ring.get(id).expect("stored").bindings(), &moved);

    // Removing every binding frees the key.
    ring.update(id, KeyUpdate::new().bindings(Bindings::default()))
        .expect("unbind");
    assert_eq!(
        ring.get(id).expect("stored").bindings(),
        &Bindings::default()
    );
    ring.verify(key).expect("unbound now");

    // And binding an unbound key takes effect at once.
    let mut network_only = Bindings::default();
    network_only.networks.push(net("10.1.0.0/16"));
    ring.update(id, KeyUpdate::new().bindings(network_only))
        .expect("bind");
    assert_eq!(
        refused(ring.verify(key)),
        VerifyError::BindingMismatch(Binding::Network)
    );
    ring.verify_with(key, RequestContext::new().peer_addr(ip("10.1.0.9")))
        .expect("network met");
}

#[test]
fn bindings_survive_serde_of_key_and_stored_key() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring.issue(full_bindings()).expect("issue");
    let fp = CertFingerprint::of_der(CERT);

    let json = serde_json::to_value(&issued.key).expect("key serializes");
    assert_eq!(json["bindings"]["client_cert"], fp.to_string());
    assert_eq!(
        json["bindings"]["networks"],
        serde_json::json!(["10.1.0.0/16", "2001:db8::/32"])
    );
    let back: Key = serde_json::from_value(json.clone()).expect("key deserializes");
    assert_eq!(back, issued.key);
    assert_eq!(back.bindings(), issued.key.bindings());

    // An unbound key writes no bindings field.
    let free = ring.issue(NewKey::new("acct_2")).expect("issue");
    let free_json = serde_json::to_value(&free.key).expect("serializes");
    assert!(free_json.get("bindings").is_none(), "{free_json}");

    // A record moved through its serde form into another store still
    // enforces its bindings.
    let stored = ring.store().lookup(issued.key.id()).expect("stored");
    let text = serde_json::to_string(&*stored).expect("stored key serializes");
    let moved: StoredKey = serde_json::from_str(&text).expect("stored key deserializes");
    let other_store = MemoryStore::new();
    other_store.insert(moved).expect("insert");
    let other = KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .build(other_store)
        .expect("ring");
    let key = issued.secret.expose();
    other
        .verify_with(key, good_request())
        .expect("bound request");
    assert_eq!(
        refused(other.verify(key)),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );

    // Malformed bindings in a record are refused, with the reason.
    let mut bad = json;
    bad["bindings"]["networks"] = serde_json::json!(["10.0.0.1/8"]);
    let err = serde_json::from_value::<Key>(bad.clone()).expect_err("host bits");
    assert!(err.to_string().contains("host bits are set"), "{err}");
    bad["bindings"]["networks"] = serde_json::json!([]);
    bad["bindings"]["client_cert"] = serde_json::json!("not hex");
    let err = serde_json::from_value::<Key>(bad).expect_err("bad fingerprint");
    assert!(
        err.to_string().contains("not a SHA-256 fingerprint"),
        "{err}"
    );
}

#[test]
fn bindings_survive_a_file_store_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.kw");
    let clock = ManualClock::new(T0);
    let (id, key) = {
        let ring = KeyRing::builder("acme")
            .clock(clock.clone())
            .flush_interval(None)
            .build(FileStore::open(&path).expect("open"))
            .expect("ring");
        let issued = ring.issue(full_bindings()).expect("issue");
        (issued.key.id(), issued.secret.expose().to_owned())
    };
    let ring = KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .build(FileStore::open(&path).expect("reopen"))
        .expect("ring");
    assert_eq!(
        ring.get(id).expect("stored").bindings().networks,
        vec![net("10.1.0.0/16"), net("2001:db8::/32")]
    );
    ring.verify_with(&key, good_request())
        .expect("bound request");
    assert_eq!(
        refused(ring.verify(&key)),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
}

#[test]
fn a_binding_failure_is_reported_as_an_event_with_the_broken_binding() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged_ring("acme", &clock);
    let issued = ring.issue(full_bindings()).expect("issue");
    let key = issued.secret.expose();
    let before = log.events().len();
    let _ = ring.verify_with(key, RequestContext::new().peer_addr(ip("10.1.2.3")));
    let _ = ring.verify_with(key, RequestContext::new().client_cert_der(CERT));
    let failures: Vec<Event> = log.events()[before..].to_vec();
    assert_eq!(failures.len(), 2, "{failures:?}");
    for (event, which) in failures
        .iter()
        .zip([Binding::ClientCertificate, Binding::Network])
    {
        assert_eq!(
            event.kind,
            EventKind::VerifyFailed(VerifyError::BindingMismatch(which))
        );
        assert_eq!(event.key, Some(issued.key.id()));
        assert_eq!(event.at, T0);
        let shown = format!("{event:?}");
        assert!(!shown.contains(secret_part(key, "acme")), "{shown}");
    }
    // A met binding reports no failure.
    ring.verify_with(key, good_request()).expect("met");
    assert_eq!(log.events().len(), before + 2);
}

// ---------------------------------------------------------------------------
// Exchange: lifetime
// ---------------------------------------------------------------------------

fn invoices_key<S: KeyStore>(ring: &KeyRing<S>) -> Issued {
    ring.issue(NewKey::new("acct_42").scopes(scopes(&[
        "invoices:read",
        "invoices:write",
        "customers:read",
    ])))
    .expect("issue")
}

/// `MalformedReason::TooLong`: "longer than the longest possible key;
/// refused before any other work", for tokens as for keys. A real token
/// with characters of its alphabet appended (so that length is all that is
/// wrong) is refused as too long by every token check, and by an exchange
/// (where it is taken for a key), however long it is; the real token,
/// with the event it is refused with naming no key.
#[test]
fn an_oversize_token_is_refused_as_too_long() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged_ring("acme", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    assert!(ring.verify_access_token(token.expose()).is_ok());
    let too_long = VerifyError::Malformed(MalformedReason::TooLong);
    for length in [10_000, 1 << 20] {
        let mut long = token.expose().to_owned();
        long.extend(std::iter::repeat_n('A', length - long.len()));
        let checks = [
            ring.verify_access_token(&long).err(),
            ring.verify_access_token_strict(&long).err(),
            ring.verify_access_token_with(&long, RequestContext::new())
                .err(),
        ];
        for refused in checks {
            assert_eq!(refused, Some(too_long.clone()), "{length} characters");
        }
        assert!(matches!(
            ring.exchange(&long, Duration::minutes(5)),
            Err(Error::Rejected(e)) if e == too_long
        ));
    }
    let refusals: Vec<Event> = log
        .events()
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::VerifyFailed(e) if *e == too_long))
        .collect();
    assert_eq!(refusals.len(), 8, "{refusals:?}");
    assert!(refusals.iter().all(|e| e.key.is_none()), "{refusals:?}");
}

#[test]
fn token_is_valid_until_its_expiry_and_not_an_instant_after() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(10))
        .expect("exchange");
    let expiry = T0 + Duration::minutes(10);
    assert_eq!(token.claims.key_id, issued.key.id());
    assert_eq!(token.claims.owner, "acct_42");
    assert_eq!(token.claims.scopes, *issued.key.scopes());
    assert_eq!(token.claims.issued_at, T0);
    assert_eq!(token.claims.expires_at, expiry);

    let claims = ring
        .verify_access_token(token.expose())
        .expect("fresh token");
    assert_eq!(claims, token.claims);
    assert_eq!(
        ring.verify_access_token_strict(token.expose())
            .expect("strict"),
        token.claims
    );

    clock.set(expiry - Duration::nanoseconds(1));
    assert_eq!(
        ring.verify_access_token(token.expose())
            .expect("last instant"),
        token.claims
    );
    ring.verify_access_token_strict(token.expose())
        .expect("strict, last instant");
    clock.set(expiry);
    assert_eq!(
        refused(ring.verify_access_token(token.expose())),
        VerifyError::Expired
    );
    assert_eq!(
        refused(ring.verify_access_token_strict(token.expose())),
        VerifyError::Expired
    );
    clock.set(expiry + Duration::days(365));
    assert_eq!(
        refused(ring.verify_access_token(token.expose())),
        VerifyError::Expired
    );
    // The key itself is unaffected.
    ring.verify(issued.secret.expose())
        .expect("key still works");
}

#[test]
fn token_expiry_is_rounded_down_to_the_second() {
    let clock = ManualClock::new(T0 + Duration::milliseconds(700));
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(10))
        .expect("exchange");
    assert_eq!(token.claims.issued_at, T0);
    // Never later than asked for.
    assert_eq!(token.claims.expires_at, T0 + Duration::minutes(10));
    clock.set(T0 + Duration::minutes(10) - Duration::nanoseconds(1));
    ring.verify_access_token(token.expose())
        .expect("before expiry");
    clock.set(T0 + Duration::minutes(10));
    assert_eq!(
        refused(ring.verify_access_token(token.expose())),
        VerifyError::Expired
    );

    // A lifetime that rounds to nothing, or none at all, is refused.
    clock.set(T0 + Duration::milliseconds(200));
    for ttl in [
        Duration::milliseconds(500),
        Duration::ZERO,
        Duration::seconds(-5),
    ] {
        assert!(
            matches!(
                ring.exchange(issued.secret.expose(), ttl),
                Err(Error::InvalidInput(_))
            ),
            "{ttl}"
        );
    }
}

#[test]
fn token_life_is_capped_by_the_keys_own_expiry() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring
        .issue(NewKey::new("acct_42").expiry(ExpiryPolicy::Lifetime(Duration::minutes(10))))
        .expect("issue");
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .expect("exchange");
    let key_end = T0 + Duration::minutes(10);
    assert_eq!(token.claims.expires_at, key_end);
    clock.set(key_end - Duration::nanoseconds(1));
    ring.verify_access_token(token.expose())
        .expect("while the key lives");
    clock.set(key_end);
    assert_eq!(
        refused(ring.verify_access_token(token.expose())),
        VerifyError::Expired
    );
    assert_eq!(
        refused(ring.verify(issued.secret.expose())),
        VerifyError::Expired
    );

    // A fixed instant that is not a whole second: the token ends before it.
    clock.set(T0);
    let at = T0 + Duration::minutes(5) + Duration::milliseconds(250);
    let fixed = ring
        .issue(NewKey::new("acct_42").expiry(ExpiryPolicy::At(at)))
        .expect("issue");
    let token = ring
        .exchange(fixed.secret.expose(), Duration::minutes(30))
        .expect("exchange");
    assert_eq!(token.claims.expires_at, T0 + Duration::minutes(5));

    // The end of a rotation grace caps it too.
    let rotated = invoices_key(&ring);
    ring.rotate(rotated.key.id(), Duration::minutes(3))
        .expect("rotate");
    let token = ring
        .exchange(rotated.secret.expose(), Duration::minutes(30))
        .expect("exchange in grace");
    assert_eq!(token.claims.expires_at, T0 + Duration::minutes(3));

    // A key that ends within the current second gets no token.
    clock.set(T0 + Duration::minutes(5) + Duration::milliseconds(100));
    assert!(matches!(
        ring.exchange(fixed.secret.expose(), Duration::minutes(30)),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn token_life_is_capped_by_max_token_ttl() {
    let clock = ManualClock::new(T0);
    let capped = KeyRing::builder("acme")
        .clock(clock.clone())
        .signing_key(1, SIGNING)
        .max_token_ttl(Duration::minutes(5))
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("ring");
    let issued = invoices_key(&capped);
    let token = capped
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .expect("exchange");
    assert_eq!(token.claims.expires_at, T0 + Duration::minutes(5));
    let default = capped
        .exchange_with(issued.secret.expose(), TokenRequest::new())
        .expect("exchange");
    assert_eq!(default.claims.expires_at, T0 + Duration::minutes(5));
    let short = capped
        .exchange(issued.secret.expose(), Duration::minutes(2))
        .expect("exchange");
    assert_eq!(short.claims.expires_at, T0 + Duration::minutes(2));

    // The default cap is one hour.
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::hours(5))
        .expect("exchange");
    assert_eq!(token.claims.expires_at, T0 + Duration::hours(1));

    // A cap must be positive, and at most a day.
    for bad in [
        Duration::ZERO,
        Duration::minutes(-1),
        Duration::hours(24) + Duration::nanoseconds(1),
        Duration::weeks(52),
    ] {
        assert!(matches!(
            KeyRing::builder("acme")
                .max_token_ttl(bad)
                .flush_interval(None)
                .build(MemoryStore::new()),
            Err(Error::InvalidInput(_))
        ));
    }
    assert!(
        KeyRing::builder("acme")
            .max_token_ttl(Duration::hours(24))
            .flush_interval(None)
            .build(MemoryStore::new())
            .is_ok()
    );
}

#[test]
fn default_token_life_is_30_minutes() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange_with(issued.secret.expose(), TokenRequest::new())
        .expect("exchange");
    assert_eq!(token.claims.issued_at, T0);
    assert_eq!(token.claims.expires_at, T0 + Duration::minutes(30));
    assert_eq!(token.claims.scopes, *issued.key.scopes());
    clock.set(T0 + Duration::minutes(30) - Duration::nanoseconds(1));
    ring.verify_access_token(token.expose()).expect("valid");
    clock.set(T0 + Duration::minutes(30));
    assert_eq!(
        refused(ring.verify_access_token(token.expose())),
        VerifyError::Expired
    );
}

// ---------------------------------------------------------------------------
// Exchange: signing keys
// ---------------------------------------------------------------------------

#[test]
fn a_previous_signing_key_verifies_only_while_it_is_accepted() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(MemoryStore::new());
    let build = |keys: &[(u8, [u8; 32], bool)]| {
        keys.iter()
            .fold(
                KeyRing::builder("acme")
                    .clock(clock.clone())
                    .flush_interval(None),
                |b, &(id, key, current)| {
                    if current {
                        b.signing_key(id, key)
                    } else {
                        b.accept_signing_key(id, key)
                    }
                },
            )
            .build(Arc::clone(&store))
            .expect("ring")
    };

    let before = build(&[(1, OLD_SIGNING, true)]);
    let issued = invoices_key(&before);
    let old_token = before
        .exchange(issued.secret.expose(), Duration::minutes(20))
        .expect("exchange");
    drop(before);

    // Rolled: new key 2, old key 1 still accepted.
    let rolled = build(&[(2, SIGNING, true), (1, OLD_SIGNING, false)]);
    assert_eq!(
        rolled
            .verify_access_token(old_token.expose())
            .expect("old token on rolled ring"),
        old_token.claims
    );
    rolled
        .verify_access_token_strict(old_token.expose())
        .expect("strict too");
    let new_token = rolled
        .exchange(issued.secret.expose(), Duration::minutes(20))
        .expect("exchange");
    assert_ne!(
        token_public_part(new_token.expose(), "acme"),
        token_public_part(old_token.expose(), "acme"),
        "signed under another signing key id"
    );
    rolled
        .verify_access_token(new_token.expose())
        .expect("new token");

    // The order of builder calls does not matter.
    let reordered = build(&[(1, OLD_SIGNING, false), (2, SIGNING, true)]);
    reordered
        .verify_access_token(old_token.expose())
        .expect("old token");
    let again = reordered
        .exchange(issued.secret.expose(), Duration::minutes(20))
        .expect("exchange");
    assert_eq!(
        token_public_part(again.expose(), "acme"),
        token_public_part(new_token.expose(), "acme")
    );

    // Without the old key: refused as invalid.
    let finished = build(&[(2, SIGNING, true)]);
    assert_eq!(
        refused(finished.verify_access_token(old_token.expose())),
        VerifyError::Invalid
    );
    assert_eq!(
        refused(finished.verify_access_token_strict(old_token.expose())),
        VerifyError::Invalid
    );
    finished
        .verify_access_token(new_token.expose())
        .expect("new token");

    // A ring that knows id 1 under another key, and one that only knows
    // the old key, refuse what they cannot check.
    let impostor = build(&[(1, SIGNING, true)]);
    assert_eq!(
        refused(impostor.verify_access_token(old_token.expose())),
        VerifyError::Invalid
    );
    let old_only = build(&[(1, OLD_SIGNING, true)]);
    assert_eq!(
        refused(old_only.verify_access_token(new_token.expose())),
        VerifyError::Invalid
    );

    // Accepting alone verifies but signs nothing.
    let verifier = build(&[(1, OLD_SIGNING, false)]);
    verifier
        .verify_access_token(old_token.expose())
        .expect("verifier");
    assert!(matches!(
        verifier.exchange(issued.secret.expose(), Duration::minutes(5)),
        Err(Error::NoSigningKey)
    ));

    // After its expiry an accepted old token is still expired.
    clock.set(T0 + Duration::minutes(20));
    assert_eq!(
        refused(rolled.verify_access_token(old_token.expose())),
        VerifyError::Expired
    );
}

#[test]
fn signing_key_ids_are_0_to_61() {
    KeyRing::builder("acme")
        .signing_key(0, SIGNING)
        .accept_signing_key(61, OLD_SIGNING)
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("0 and 61");
    for bad in [62, 255] {
        assert!(matches!(
            KeyRing::builder("acme")
                .signing_key(bad, SIGNING)
                .flush_interval(None)
                .build(MemoryStore::new()),
            Err(Error::InvalidInput(_))
        ));
    }
}

/// A token is judged against a `revoke_all` by its own time, the clock of
/// the ring that exchanged it: a ring whose clock runs 30 s ahead of the
/// one that calls `revoke_all` dates its token after the revoke-all, and
/// the plain check passes it on both rings until it expires (as the docs
/// of `verify_access_token` say). The strict check refuses it on both: it
/// reads the key, which the revoke-all ended.
#[test]
fn a_token_from_a_ring_whose_clock_runs_ahead_is_ended_by_revoke_all_only_in_the_strict_check() {
    let store = Arc::new(MemoryStore::new());
    let behind = ManualClock::new(T0);
    let ahead = ManualClock::new(T0 + Duration::seconds(30));
    let a = ring_on("acme", &ahead, Arc::clone(&store));
    let b = ring_on("acme", &behind, Arc::clone(&store));
    let issued = a.issue(NewKey::new("acct_1")).unwrap();
    let token = a
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .unwrap();
    behind.advance(Duration::seconds(2));
    b.revoke_all().unwrap();
    a.refresh().unwrap();
    for clock in [&ahead, &behind] {
        clock.advance(Duration::minutes(5));
    }
    for ring in [&a, &b] {
        assert_eq!(
            ring.verify(issued.secret.expose()).unwrap_err(),
            VerifyError::Revoked
        );
        assert!(ring.verify_access_token(token.expose()).is_ok());
        assert_eq!(
            ring.verify_access_token_strict(token.expose()).unwrap_err(),
            VerifyError::Revoked
        );
    }
}

/// One key signs new tokens: a second `signing_key`, which would make
/// the last one given sign without a word, is refused by `build`, in
/// either order and with accepted keys between them. One signing key with
/// any number of accepted ones builds.
#[test]
fn a_second_current_signing_key_is_refused() {
    for (first, second) in [(1, 2), (2, 1)] {
        let built = KeyRing::builder("acme")
            .signing_key(first, SIGNING)
            .accept_signing_key(7, OLD_SIGNING)
            .signing_key(second, [9; 32])
            .flush_interval(None)
            .build(MemoryStore::new());
        match built {
            Err(Error::InvalidInput(why)) => assert_eq!(
                why,
                "one signing key signs: give the others with accept_signing_key"
            ),
            other => panic!("{first}, {second}: {:?}", other.map(|_| ())),
        }
    }
    KeyRing::builder("acme")
        .accept_signing_key(1, OLD_SIGNING)
        .signing_key(2, SIGNING)
        .accept_signing_key(3, [9; 32])
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("one signing key, two accepted");
}

#[test]
fn a_ring_without_signing_key_cannot_exchange() {
    let clock = ManualClock::new(T0);
    let unsigned = KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("ring");
    let issued = invoices_key(&unsigned);
    assert!(matches!(
        unsigned.exchange(issued.secret.expose(), Duration::minutes(5)),
        Err(Error::NoSigningKey)
    ));
    assert!(matches!(
        unsigned.exchange_with(issued.secret.expose(), TokenRequest::new()),
        Err(Error::NoSigningKey)
    ));
    assert_eq!(
        Error::NoSigningKey.to_string(),
        "no signing key configured for access tokens"
    );
    // And it verifies no token.
    let signer = ring("acme", &clock);
    let other = invoices_key(&signer);
    let token = signer
        .exchange(other.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    assert_eq!(
        refused(unsigned.verify_access_token(token.expose())),
        VerifyError::Invalid
    );
}

// ---------------------------------------------------------------------------
// Exchange: integrity
// ---------------------------------------------------------------------------

#[test]
fn a_tampered_token_never_verifies() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme_live", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(10))
        .expect("exchange");
    let text = token.expose();
    ring.verify_access_token(text).expect("original");
    let mut tried = 0;
    for at in 0..text.len() {
        let original = text.as_bytes()[at];
        for &c in BASE62.iter().filter(|&&c| c != original) {
            let tampered = replaced(text, at, c);
            assert!(
                ring.verify_access_token(&tampered).is_err(),
                "byte {at} changed to {}: accepted",
                c as char
            );
            tried += 1;
            // With the checksum made right again, the MAC must catch it
            // (the checksum's own characters just come back).
            if at < text.len() - CHECKSUM_LEN {
                let resummed = with_fresh_checksum(&tampered);
                assert_ne!(resummed, text);
                let outcome = ring.verify_access_token(&resummed);
                assert!(
                    outcome.is_err(),
                    "byte {at} changed to {} with a fresh checksum: accepted as {outcome:?}",
                    c as char
                );
            }
        }
    }
    assert!(tried > 60 * 100, "{tried}");
    // Truncated and extended tokens.
    for cut in 1..text.len() {
        assert!(ring.verify_access_token(&text[..cut]).is_err(), "{cut}");
        assert!(ring.verify_access_token(&text[cut..]).is_err(), "{cut}");
    }
    for extra in ["0", "x", "_", " ", "000000000000000000000"] {
        let longer = format!("{text}{extra}");
        assert!(ring.verify_access_token(&longer).is_err(), "{extra:?}");
        assert!(
            ring.verify_access_token(&with_fresh_checksum(&longer))
                .is_err(),
            "{extra:?}"
        );
    }
    assert!(
        ring.verify_access_token(&"a".repeat(1_000_000)).is_err(),
        "huge input"
    );
    // The strict form refuses them as well.
    let tampered = with_fresh_checksum(&replaced(text, text.len() - 10, b'0'));
    let tampered = if tampered == text {
        with_fresh_checksum(&replaced(text, text.len() - 10, b'1'))
    } else {
        tampered
    };
    assert_eq!(
        refused(ring.verify_access_token_strict(&tampered)),
        VerifyError::Invalid
    );
}

#[test]
fn strict_verification_follows_the_parent_key_while_the_plain_one_does_not() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let issued = invoices_key(&ring);
        let token = ring
            .exchange(issued.secret.expose(), Duration::minutes(15))
            .expect("exchange");
        tokens.push((issued, token));
    }
    let [revoked, disabled, deleted, rotated, fine] = &tokens[..] else {
        unreachable!()
    };
    ring.revoke(revoked.0.key.id(), "compromised")
        .expect("revoke");
    ring.disable(disabled.0.key.id()).expect("disable");
    ring.delete(deleted.0.key.id()).expect("delete");
    ring.rotate(rotated.0.key.id(), Duration::ZERO)
        .expect("rotate");

    for (what, (_, token), strict) in [
        ("revoked", revoked, Some(VerifyError::Revoked)),
        ("disabled", disabled, Some(VerifyError::Disabled)),
        ("deleted", deleted, Some(VerifyError::Invalid)),
        ("rotated, no grace", rotated, Some(VerifyError::Expired)),
        ("fine", fine, None),
    ] {
        assert_eq!(
            ring.verify_access_token_strict(token.expose()).err(),
            strict,
            "{what}"
        );
        assert_eq!(
            ring.verify_access_token(token.expose()).expect(what),
            token.claims,
            "non-strict, {what}"
        );
    }

    // Non-strict passes until the token's own expiry.
    clock.set(T0 + Duration::minutes(15) - Duration::nanoseconds(1));
    for (issued, token) in &tokens {
        ring.verify_access_token(token.expose())
            .unwrap_or_else(|e| panic!("{:?}: {e:?}", issued.key.id()));
    }
    clock.set(T0 + Duration::minutes(15));
    for (_, token) in &tokens {
        assert_eq!(
            refused(ring.verify_access_token(token.expose())),
            VerifyError::Expired
        );
    }

    // Enabling again restores strict verification.
    clock.set(T0);
    ring.enable(disabled.0.key.id()).expect("enable");
    ring.verify_access_token_strict(disabled.1.expose())
        .expect("enabled again");
    // A revoke-all revokes every parent, and (the one thing the plain
    // check sees, from the ring's settings) the tokens issued before it.
    ring.revoke_all().expect("revoke all");
    assert_eq!(
        refused(ring.verify_access_token_strict(fine.1.expose())),
        VerifyError::Revoked
    );
    assert_eq!(
        refused(ring.verify_access_token(fine.1.expose())),
        VerifyError::Revoked
    );
}

/// A revoke-all by another ring on the same store stops this ring's
/// exchanges at once, not within the second its background reload takes
/// (never, with none): a token minted from a key it revoked carries a time
/// after the revoke-all, so the plain check would take it for its whole
/// life. The exchange reads the store's settings first; the exchanging
/// ring then refuses the key on `verify` too.
#[test]
fn a_revoke_all_by_another_ring_stops_exchanges_at_once() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(MemoryStore::new());
    let a = ring_on("acme", &clock, Arc::clone(&store));
    let b = ring_on("acme", &clock, Arc::clone(&store));
    let issued = invoices_key(&a);
    let key = issued.secret.expose();
    let before = b.exchange(key, Duration::minutes(30)).expect("exchange");
    clock.set(T0 + Duration::seconds(1));
    a.revoke_all().expect("revoke all");
    clock.set(T0 + Duration::seconds(2));
    let after = b.exchange(key, Duration::minutes(30));
    assert!(
        matches!(&after, Err(Error::Rejected(VerifyError::Revoked))),
        "{:?}",
        after.map(|t| t.claims.clone())
    );
    assert_eq!(refused(b.verify(key)), VerifyError::Revoked);
    // The token of before the revoke-all is refused by both rings' plain
    // checks once they know of it.
    for ring in [&a, &b] {
        assert_eq!(
            refused(ring.verify_access_token(before.expose())),
            VerifyError::Revoked
        );
    }
    // A key issued after the revoke-all exchanges on either ring.
    let fresh = invoices_key(&a);
    b.exchange(fresh.secret.expose(), Duration::minutes(30))
        .expect("a key of the new epoch");
}

/// Counts `lookup` and `load_settings` calls, to prove which paths
/// consult the store.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryStore,
    lookups: AtomicUsize,
    settings_loads: AtomicUsize,
}

impl CountingStore {
    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    fn settings_loads(&self) -> usize {
        self.settings_loads.load(Ordering::SeqCst)
    }
}

impl KeyStore for CountingStore {
    fn lookup(&self, id: KeyId) -> Option<Arc<StoredKey>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.inner.lookup(id)
    }
    fn list(&self, owner: Option<&str>) -> Result<Vec<Arc<StoredKey>>, StoreError> {
        self.inner.list(owner)
    }
    fn load_settings(&self) -> Result<Option<RingSettings>, StoreError> {
        self.settings_loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_settings()
    }
    fn apply(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        self.inner.apply(changes)
    }
}

/// `revoke_all` is the emergency stop: the plain token checks, which look
/// nothing up, refuse as revoked every token issued at or before it, from
/// the revoke-all instant the ring holds in its settings (no store read).
/// Tokens carry whole seconds, so one exchanged in the second of the
/// revoke-all (even for a key issued after it) is refused too: fail
/// closed. Another ring on the same store refuses them once it has
/// reloaded its settings.
#[test]
fn revoke_all_refuses_earlier_tokens_in_the_plain_checks() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(CountingStore::default());
    let build = || ring_on("acme", &clock, Arc::clone(&store));
    let ring = build();
    let other = build();
    let old_key = invoices_key(&ring);
    let before = ring
        .exchange(old_key.secret.expose(), Duration::minutes(30))
        .expect("exchange");

    clock.set(T0 + Duration::milliseconds(500));
    ring.revoke_all().expect("revoke all");
    let new_key = invoices_key(&ring);
    clock.set(T0 + Duration::milliseconds(700));
    let same_second = ring
        .exchange(new_key.secret.expose(), Duration::minutes(30))
        .expect("a key issued after the revoke-all is exchanged");
    assert_eq!(same_second.claims.issued_at, T0);
    clock.set(T0 + Duration::seconds(1));
    let next_second = ring
        .exchange(new_key.secret.expose(), Duration::minutes(30))
        .expect("exchange");

    let (lookups, loads) = (store.lookups(), store.settings_loads());
    for token in [&before, &same_second] {
        assert_eq!(
            refused(ring.verify_access_token(token.expose())),
            VerifyError::Revoked
        );
    }
    assert_eq!(
        ring.verify_access_token(next_second.expose())
            .expect("a token of the next second"),
        next_second.claims
    );
    assert_eq!(
        (store.lookups(), store.settings_loads()),
        (lookups, loads),
        "the plain check read the store"
    );
    // The strict checks agree.
    for token in [&before, &same_second] {
        assert_eq!(
            refused(ring.verify_access_token_strict(token.expose())),
            VerifyError::Revoked
        );
    }
    ring.verify_access_token_strict(next_second.expose())
        .expect("strict, next second");

    // Another ring on the store, once it has reloaded the settings.
    other.refresh().expect("refresh");
    for token in [&before, &same_second] {
        assert_eq!(
            refused(other.verify_access_token(token.expose())),
            VerifyError::Revoked
        );
    }
    other
        .verify_access_token(next_second.expose())
        .expect("the other ring, next second");
}

#[test]
fn non_strict_verification_does_not_look_up_the_store() {
    let clock = ManualClock::new(T0);
    let log = Arc::new(EventLog::new());
    let ring = KeyRing::builder("acme")
        .clock(clock.clone())
        .signing_key(1, SIGNING)
        .events(Arc::clone(&log))
        .report_successes(true)
        .flush_interval(None)
        .build(CountingStore::default())
        .expect("ring");
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(10))
        .expect("exchange");
    let tampered = with_fresh_checksum(&replaced(
        token.expose(),
        token.expose().len() - 12,
        shifted(token.expose().as_bytes()[token.expose().len() - 12], 1),
    ));

    let before = ring.store().lookups();
    for _ in 0..100 {
        ring.verify_access_token(token.expose()).expect("valid");
    }
    let _ = ring.verify_access_token(&tampered);
    let _ = ring.verify_access_token("acme_Tgarbage");
    clock.set(T0 + Duration::minutes(11));
    let _ = ring.verify_access_token(token.expose());
    assert_eq!(
        ring.store().lookups(),
        before,
        "verify_access_token must not consult the store"
    );

    clock.set(T0);
    ring.verify_access_token_strict(token.expose())
        .expect("strict");
    assert!(
        ring.store().lookups() > before,
        "the strict form looks up the parent key"
    );
}

/// A store that implements only `lookup` gets the default `inspect`, and
/// `verify` gives the same answers through it, one lookup per call.
#[test]
fn verify_works_through_the_default_inspect() {
    let ring = KeyRing::builder("acme")
        .flush_interval(None)
        .build(CountingStore::default())
        .expect("ring");
    let issued = invoices_key(&ring);
    let other = invoices_key(&ring);
    let key = issued.secret.expose();
    let wrong_secret = with_fresh_checksum(&replaced(
        key,
        key.len() - 10,
        shifted(key.as_bytes()[key.len() - 10], 1),
    ));

    ring.revoke(other.key.id(), "test").expect("revoke");
    let before = ring.store().lookups();
    let verified = ring.verify(key).expect("valid key");
    assert_eq!(verified.id(), issued.key.id());
    assert_eq!(verified.key().uses(), 1, "the use is counted");
    assert_eq!(
        ring.verify(&wrong_secret).unwrap_err(),
        VerifyError::Invalid
    );
    assert_eq!(
        ring.verify(other.secret.expose()).unwrap_err(),
        VerifyError::Revoked
    );
    assert_eq!(ring.store().lookups(), before + 3, "one lookup per verify");
}

#[test]
fn exchange_refuses_keys_that_do_not_verify() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let rejected = |key: &str| match ring.exchange(key, Duration::minutes(5)) {
        Err(Error::Rejected(e)) => e,
        other => panic!("expected Rejected, got {other:?}"),
    };

    let revoked = invoices_key(&ring);
    ring.revoke(revoked.key.id(), "gone").expect("revoke");
    assert_eq!(rejected(revoked.secret.expose()), VerifyError::Revoked);

    let disabled = invoices_key(&ring);
    ring.disable(disabled.key.id()).expect("disable");
    assert_eq!(rejected(disabled.secret.expose()), VerifyError::Disabled);
    ring.enable(disabled.key.id()).expect("enable");
    ring.exchange(disabled.secret.expose(), Duration::minutes(5))
        .expect("enabled again");

    let expiring = ring
        .issue(NewKey::new("acct_42").expiry(ExpiryPolicy::Lifetime(Duration::minutes(10))))
        .expect("issue");
    let wrong = forge(
        "acme",
        expiring.key.id(),
        &other_secret(secret_part(expiring.secret.expose(), "acme")),
    );
    assert_eq!(rejected(&wrong), VerifyError::Invalid);
    assert!(matches!(
        rejected("acme_1nonsense"),
        VerifyError::Malformed(_)
    ));
    clock.set(T0 + Duration::minutes(10));
    assert_eq!(rejected(expiring.secret.expose()), VerifyError::Expired);
    clock.set(T0);

    let deleted = invoices_key(&ring);
    ring.delete(deleted.key.id()).expect("delete");
    assert_eq!(rejected(deleted.secret.expose()), VerifyError::Invalid);

    let before_all = invoices_key(&ring);
    ring.revoke_all().expect("revoke all");
    assert_eq!(rejected(before_all.secret.expose()), VerifyError::Revoked);
    let after_all = invoices_key(&ring);
    ring.exchange(after_all.secret.expose(), Duration::minutes(5))
        .expect("issued after revoke-all");

    // The message says why.
    let err = ring
        .exchange(revoked.secret.expose(), Duration::minutes(5))
        .expect_err("revoked");
    assert_eq!(err.to_string(), "exchange refused: api key revoked");
}

#[test]
fn exchange_of_a_bound_key_needs_its_bindings_and_requirement() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring
        .issue(full_bindings().scopes(scopes(&["invoices:read"])))
        .expect("issue");
    let key = issued.secret.expose();
    assert!(matches!(
        ring.exchange(key, Duration::minutes(5)),
        Err(Error::Rejected(VerifyError::BindingMismatch(
            Binding::ClientCertificate
        )))
    ));
    assert!(matches!(
        ring.exchange_with(
            key,
            TokenRequest::new().context(RequestContext::new().client_cert_der(CERT))
        ),
        Err(Error::Rejected(VerifyError::BindingMismatch(
            Binding::Network
        )))
    ));
    let token = ring
        .exchange_with(
            key,
            TokenRequest::new()
                .ttl(Duration::minutes(5))
                .context(good_request()),
        )
        .expect("bindings met");
    assert_eq!(token.claims.expires_at, T0 + Duration::minutes(5));

    let need = Requirement::scope("invoices:write").expect("requirement");
    assert!(matches!(
        ring.exchange_with(
            key,
            TokenRequest::new().context(good_request().require(&need))
        ),
        Err(Error::Rejected(VerifyError::InsufficientScope(_)))
    ));
}

#[test]
fn token_scopes_may_be_narrowed_never_widened() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let key = issued.secret.expose();
    let read = Requirement::scope("invoices:read").expect("req");
    let write = Requirement::scope("invoices:write").expect("req");
    let customers = Requirement::scope("customers:read").expect("req");

    // The key's scopes by default.
    let full = ring.exchange(key, Duration::minutes(5)).expect("exchange");
    let claims = ring.verify_access_token(full.expose()).expect("valid");
    for need in [&read, &write, &customers] {
        ring.authorize(&claims, need).expect("the key's scopes");
    }

    // Narrowed.
    let narrow = ring
        .exchange_with(key, TokenRequest::new().scopes(scopes(&["invoices:read"])))
        .expect("narrowed");
    assert_eq!(narrow.claims.scopes, scopes(&["invoices:read"]));
    let claims = ring.verify_access_token(narrow.expose()).expect("valid");
    assert_eq!(claims.scopes, scopes(&["invoices:read"]));
    ring.authorize(&claims, &read).expect("kept scope");
    for need in [&write, &customers] {
        let e = ring.authorize(&claims, need).expect_err("dropped scope");
        assert!(matches!(e, VerifyError::InsufficientScope(_)), "{e:?}");
        assert_eq!(e.http_status(), 403);
    }
    let either = Requirement::any([write.clone(), read.clone()]).expect("any");
    ring.authorize(&claims, &either).expect("any of");

    // Narrowed to nothing.
    let none = ring
        .exchange_with(key, TokenRequest::new().scopes(ScopeSet::empty()))
        .expect("empty");
    let claims = ring.verify_access_token(none.expose()).expect("valid");
    assert!(claims.scopes.is_empty());
    assert!(ring.authorize(&claims, &read).is_err());

    // Widening is refused, naming the scope.
    for wider in [
        vec!["admin:write"],
        vec!["invoices:read", "invoices:delete"],
        vec!["invoices:*"],
    ] {
        match ring.exchange_with(key, TokenRequest::new().scopes(scopes(&wider))) {
            Err(Error::ScopeWidening(scope)) => {
                assert!(wider.contains(&scope.as_str()), "{scope} in {wider:?}");
            }
            other => panic!("{wider:?}: expected ScopeWidening, got {other:?}"),
        }
    }
    assert!(matches!(
        ring.exchange_with(key, TokenRequest::new().scopes(ScopeSet::unrestricted())),
        Err(Error::ScopeWidening(_))
    ));

    // A wildcard key narrows to one action; an unrestricted key to anything.
    let wildcard = ring
        .issue(NewKey::new("acct_42").scopes(scopes(&["invoices:*"])))
        .expect("issue");
    let t = ring
        .exchange_with(
            wildcard.secret.expose(),
            TokenRequest::new().scopes(scopes(&["invoices:read"])),
        )
        .expect("within the wildcard");
    let claims = ring.verify_access_token(t.expose()).expect("valid");
    ring.authorize(&claims, &read).expect("read");
    assert!(ring.authorize(&claims, &write).is_err());
    let unrestricted = ring
        .issue(NewKey::new("acct_42").scopes(ScopeSet::unrestricted()))
        .expect("issue");
    let t = ring
        .exchange(unrestricted.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    let claims = ring.verify_access_token(t.expose()).expect("valid");
    assert!(claims.scopes.is_unrestricted());
    ring.authorize(&claims, &write).expect("unrestricted");
    let t = ring
        .exchange_with(
            unrestricted.secret.expose(),
            TokenRequest::new().scopes(scopes(&["customers:read"])),
        )
        .expect("narrowed");
    let claims = ring.verify_access_token(t.expose()).expect("valid");
    ring.authorize(&claims, &customers).expect("kept");
    assert!(ring.authorize(&claims, &write).is_err());
}

#[test]
fn sensitive_resources_stay_out_of_tokens_of_unrestricted_keys() {
    let clock = ManualClock::new(T0);
    let ring = KeyRing::builder("acme")
        .clock(clock.clone())
        .signing_key(1, SIGNING)
        .sensitive(["admin"])
        .flush_interval(None)
        .build(MemoryStore::new())
        .expect("ring");
    let unrestricted = ring
        .issue(NewKey::new("acct_42").scopes(ScopeSet::unrestricted()))
        .expect("issue");
    let admin = Requirement::scope("admin:write").expect("req");
    let t = ring
        .exchange(unrestricted.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    let claims = ring.verify_access_token(t.expose()).expect("valid");
    assert!(ring.authorize(&claims, &admin).is_err());
    assert!(matches!(
        ring.exchange_with(
            unrestricted.secret.expose(),
            TokenRequest::new().scopes(scopes(&["admin:write"]))
        ),
        Err(Error::ScopeWidening(_))
    ));
}

#[test]
fn owners_and_scope_sets_round_trip_through_tokens() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let many: Vec<String> = (0..40).map(|i| format!("resource{i}:read")).collect();
    let many = ScopeSet::parse(&many).expect("parse");
    let long_owner = "x".repeat(256);
    for (owner, set) in [
        ("a", ScopeSet::empty()),
        ("acct 42 / Zürich ✓", scopes(&["invoices:read"])),
        (long_owner.as_str(), many),
        ("acct_42", ScopeSet::unrestricted()),
        ("acct_42", scopes(&["*:*"])),
        ("acct_42", scopes(&["a.b-c_d:e.f-g_h", "invoices:*"])),
    ] {
        let issued = ring
            .issue(NewKey::new(owner).scopes(set.clone()))
            .expect("issue");
        let token = ring
            .exchange(issued.secret.expose(), Duration::minutes(5))
            .expect("exchange");
        let claims = ring
            .verify_access_token(token.expose())
            .unwrap_or_else(|e| panic!("{owner}: {e:?}"));
        assert_eq!(claims.owner, owner);
        assert_eq!(claims.scopes, set, "{owner}");
        assert_eq!(claims, token.claims);
        assert!(
            token.expose()["acme_T".len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric()),
            "a token body is base62 only"
        );
    }
}

/// Regression (a bug this independent test found, since fixed): an owner
/// containing a NUL byte was accepted by `issue` and `exchange`, but the
/// token never verified: the claims are `owner \0 scopes` and `claims_of`
/// split at the first NUL. The fix refuses such an owner at issue (an
/// update cannot change the owner), so no key carries one to an exchange;
/// the owner next to it goes through an exchange whole.
#[test]
fn an_owner_with_a_nul_byte_is_refused_at_issue() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let owner = "acct\u{0}42";
    match ring.issue(NewKey::new(owner).scopes(scopes(&["invoices:read"]))) {
        Err(Error::InvalidInput(why)) => {
            assert_eq!(why, "owner must not contain a NUL character")
        }
        other => panic!("issue for {owner:?}: {:?}", other.map(|i| i.key)),
    }
    assert!(ring.list(&ListFilter::new()).expect("list").is_empty());
    let issued = ring
        .issue(NewKey::new("acct_42").scopes(scopes(&["invoices:read"])))
        .expect("issue");
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    assert_eq!(
        ring.verify_access_token(token.expose()).map(|c| c.owner),
        Ok("acct_42".to_owned())
    );
}

#[test]
fn tokens_and_api_keys_are_not_interchangeable() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let key = issued.secret.expose();
    let token = ring.exchange(key, Duration::minutes(5)).expect("exchange");
    assert!(matches!(
        refused(ring.verify(token.expose())),
        VerifyError::Malformed(_)
    ));
    assert!(matches!(
        refused(ring.verify_with(token.expose(), good_request())),
        VerifyError::Malformed(_)
    ));
    assert!(matches!(
        ring.exchange(token.expose(), Duration::minutes(5)),
        Err(Error::Rejected(VerifyError::Malformed(_)))
    ));
    assert!(matches!(
        refused(ring.verify_access_token(key)),
        VerifyError::Malformed(_)
    ));
    assert!(matches!(
        refused(ring.verify_access_token_strict(key)),
        VerifyError::Malformed(_)
    ));
    // Cut down to the length of a key, with a fresh checksum: still not one.
    let key_len = key.len();
    let cut = with_fresh_checksum(&token.expose()[..key_len]);
    assert!(ring.verify(&cut).is_err());
    // A key with `T` for its version and a fresh checksum: not a token.
    let as_token = with_fresh_checksum(&replaced(key, "acme_".len(), b'T'));
    assert!(ring.verify_access_token(&as_token).is_err());
    assert!(ring.verify(&as_token).is_err());
}

#[test]
fn a_token_whose_key_id_is_above_64_bits_is_out_of_range() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    // `<prefix>_T`, one character of signing-key id, then the key id.
    let at = "acme_T".len() + 1;
    let with_id = |id: &str| {
        let t = token.expose();
        with_fresh_checksum(&format!("{}{id}{}", &t[..at], &t[at + ID_LEN..]))
    };
    // u64::MAX parses, and fails only at the MAC; one more is out of range.
    assert_eq!(
        refused(ring.verify_access_token(&with_id("LygHa16AHYF"))),
        VerifyError::Invalid
    );
    for id in ["LygHa16AHYG", "zzzzzzzzzzz"] {
        assert_eq!(
            refused(ring.verify_access_token(&with_id(id))),
            VerifyError::Malformed(MalformedReason::IdOutOfRange),
            "{id}"
        );
    }
}

#[test]
fn token_debug_shows_neither_the_token_nor_its_mac() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    for shown in [format!("{token:?}"), format!("{token:#?}")] {
        assert!(!shown.contains(token.expose()), "{shown}");
        let mac = mac_part(token.expose());
        assert!(!shown.contains(mac), "{shown}");
        for start in 0..=mac.len() - 8 {
            assert!(
                !shown.contains(&mac[start..start + 8]),
                "8 characters of the MAC at {start}: {shown}"
            );
        }
        assert!(shown.contains("redacted"), "{shown}");
        assert!(shown.contains(&issued.key.id().to_string()), "{shown}");
    }
    // Claims are public and carry no token text.
    let claims = format!("{:?}", token.claims);
    assert!(!claims.contains(mac_part(token.expose())), "{claims}");
}

#[test]
fn tokens_of_another_prefix_are_refused() {
    let clock = ManualClock::new(T0);
    let acme = ring("acme", &clock);
    let beta = ring("beta", &clock);
    let acme_live = ring("acme_live", &clock);
    let mut tokens = Vec::new();
    for r in [&acme, &beta, &acme_live] {
        let issued = invoices_key(r);
        let token = r
            .exchange(issued.secret.expose(), Duration::minutes(5))
            .expect("exchange");
        r.verify_access_token(token.expose()).expect("own prefix");
        tokens.push(token);
    }
    let [t_acme, t_beta, t_live] = &tokens[..] else {
        unreachable!()
    };
    for (verifier, token) in [
        (&acme, t_beta),
        (&acme, t_live),
        (&beta, t_acme),
        (&beta, t_live),
        (&acme_live, t_acme),
        (&acme_live, t_beta),
    ] {
        assert!(matches!(
            refused(verifier.verify_access_token(token.expose())),
            VerifyError::Malformed(_)
        ));
        assert!(verifier.verify_access_token_strict(token.expose()).is_err());
    }
    // The signing key is bound to the prefix: the same signing key under
    // another prefix, re-labelled with a fresh checksum, does not verify.
    let relabelled = with_fresh_checksum(&format!("acme{}", &t_beta.expose()["beta".len()..]));
    assert_eq!(
        refused(acme.verify_access_token(&relabelled)),
        VerifyError::Invalid
    );
    let relabelled = with_fresh_checksum(&format!("acme_live{}", &t_acme.expose()["acme".len()..]));
    assert_eq!(
        refused(acme_live.verify_access_token(&relabelled)),
        VerifyError::Invalid
    );
}

// ---------------------------------------------------------------------------
// The principal as JSON
// ---------------------------------------------------------------------------

/// Asserts that `json` holds no 10-character window of `text` that reaches
/// past its first `public` characters: the prefix, version and ids, which
/// name the key (the JSON's `key` holds the id, and must) and which
/// `redact` keeps too. Everything after them (a key's secret and checksum;
/// a token's instants, encoded claims, MAC and checksum) must be absent.
fn assert_no_window(what: &str, json: &str, text: &str, public: usize) {
    assert!(text.len() > public + 10);
    for start in public.saturating_sub(9)..=text.len() - 10 {
        let window = &text[start..start + 10];
        assert!(
            !json.contains(window),
            "{what} holds {window:?}, characters {start}..{} of a credential: {json}",
            start + 10
        );
    }
}

/// `Verified` and `AccessClaims` as a host forwards them: serialized from a
/// real verify, exchange and token checks (plain, strict, with a request
/// context, of a bound key too), they hold the key's id and owner but no
/// part of the key's secret or checksum, of the stored hash, or of the
/// token's text beyond its public head (instants, claims, MAC, checksum).
#[test]
fn verified_and_claims_serialize_without_key_material() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring
        .issue(
            NewKey::new("acct_1")
                .name("billing sync")
                .description("nightly export")
                .contact(Contact::new("Ada", "Lovelace", "ada", "ada@example.com"))
                .scopes(scopes(&["invoices:read", "invoices:write"]))
                .metadata("team", "billing"),
        )
        .unwrap();
    let bound = ring
        .issue(
            NewKey::new("acct_2")
                .scopes(ScopeSet::unrestricted())
                .allow_network(net("10.0.0.0/8")),
        )
        .unwrap();
    let at_office = || RequestContext::new().peer_addr(ip("10.1.2.3"));
    let key = issued.secret.expose();
    let bound_key = bound.secret.expose();

    let mut json = Vec::new();
    let verified = ring.verify(key).unwrap();
    json.push(serde_json::to_string(&verified).unwrap());
    let required = Requirement::scope("invoices:read").unwrap();
    json.push(serde_json::to_string(&ring.verify_with(key, &required).unwrap()).unwrap());
    json.push(serde_json::to_string(&ring.verify_with(bound_key, at_office()).unwrap()).unwrap());

    let token = ring.exchange(key, Duration::minutes(15)).unwrap();
    let narrow = ring
        .exchange_with(key, TokenRequest::new().scopes(scopes(&["invoices:read"])))
        .unwrap();
    let bound_token = ring
        .exchange_with(bound_key, TokenRequest::new().context(at_office()))
        .unwrap();
    let mut claims = vec![
        token.claims.clone(),
        ring.verify_access_token(token.expose()).unwrap(),
        ring.verify_access_token_strict(token.expose()).unwrap(),
        ring.verify_access_token_strict(narrow.expose()).unwrap(),
        bound_token.claims.clone(),
    ];
    claims.push(
        ring.verify_access_token_with(bound_token.expose(), at_office())
            .unwrap(),
    );
    json.extend(claims.iter().map(|c| serde_json::to_string(c).unwrap()));

    // What the forms are for: the principal, named as in an event.
    assert_eq!(
        serde_json::to_value(&verified).unwrap(),
        serde_json::json!({
            "key": issued.key.id().to_string(),
            "owner": "acct_1",
            "scopes": ["invoices:read", "invoices:write"],
            "metadata": {"team": "billing"},
        })
    );
    let value = serde_json::to_value(&claims[1]).unwrap();
    assert_eq!(value["key"], issued.key.id().to_string());
    assert_eq!(value["owner"], "acct_1");
    assert_eq!(value["expires_at"], "2026-01-01T00:15:00Z");
    for (c, text) in claims.iter().zip(&json[3..]) {
        assert_eq!(text.contains(r#""bound":true"#), c.bound, "{text}");
    }
    assert!(claims[4].bound && claims[5].bound);

    let all = json.join("\n");
    for (key, issued) in [(key, &issued), (bound_key, &bound)] {
        let id = issued.key.id().to_string();
        assert!(all.contains(&format!(r#""key":"{id}""#)), "{all}");
        assert_no_window("JSON", &all, key, key_public_part(key, "acme").len());
        let hash = ring
            .store()
            .lookup(issued.key.id())
            .unwrap()
            .hash()
            .to_string();
        let digest = hash.len() - 64;
        assert_no_window("JSON", &all, &hash, digest);
    }
    for token in [&token, &narrow, &bound_token] {
        let text = token.expose();
        assert_no_window("JSON", &all, text, token_public_part(text, "acme").len());
        assert!(!all.contains(mac_part(text)));
    }
}

// ---------------------------------------------------------------------------
// Scan
// ---------------------------------------------------------------------------

/// What a scan should report for `needle` (a key or token) in `text`.
struct Expected<'a> {
    needle: &'a str,
    prefix: &'a str,
    key_id: KeyId,
    kind: FoundKind,
}

/// A report as (start, end, secret start, prefix, key id, kind).
type Report = (usize, usize, usize, String, KeyId, FoundKind);

fn expected_finds(text: &str, items: &[Expected<'_>]) -> Vec<Report> {
    let mut out = Vec::new();
    for item in items {
        let hits: Vec<usize> = text.match_indices(item.needle).map(|(i, _)| i).collect();
        assert!(!hits.is_empty(), "{} is in the text", item.needle);
        for start in hits {
            let public = match item.kind {
                FoundKind::AccessToken => token_public_part(item.needle, item.prefix).len(),
                _ => key_public_part(item.needle, item.prefix).len(),
            };
            out.push((
                start,
                start + item.needle.len(),
                start + public,
                item.prefix.to_owned(),
                item.key_id,
                item.kind,
            ));
        }
    }
    out.sort_by_key(|e| e.0);
    out
}

#[test]
fn scan_finds_every_key_and_token_with_positions_ids_and_kinds() {
    let clock = ManualClock::new(T0);
    let acme = ring("acme", &clock);
    let live = ring("acme_live", &clock);
    let a1 = invoices_key(&acme);
    let a2 = invoices_key(&acme);
    let b1 = invoices_key(&live);
    let b2 = invoices_key(&live);
    let ta = acme
        .exchange(a2.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    let tb = live
        .exchange(b1.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    let (a1s, a2s, b1s, b2s) = (
        a1.secret.expose(),
        a2.secret.expose(),
        b1.secret.expose(),
        b2.secret.expose(),
    );
    let near_key = replaced(a1s, 20, shifted(a1s.as_bytes()[20], 1));
    let near_token = replaced(tb.expose(), 30, shifted(tb.expose().as_bytes()[30], 1));
    let text = format!(
        "{{\"key\":\"{a1s}\",\"note\":\"first\"}}\n\
         GET https://api.example.com/v1/invoices?api_key={b1s}&x=1 HTTP/1.1\n\
         2026-01-01T00:00:00Z INFO auth ok key={a2s} owner=acct_42 took=3ms\n\
         Authorization: Bearer {ta}\r\n\
         export ACME_TOKEN='{tb}'\n\
         [{b2s}] and again: {a1s}.\n\
         near misses: {near_key} {near_token} acme_1 acme_T live_1 x_1 _1 acme_Tx_1\n\
         ü{a2s}é\n",
        ta = ta.expose(),
        tb = tb.expose(),
    );
    let items = [
        Expected {
            needle: a1s,
            prefix: "acme",
            key_id: a1.key.id(),
            kind: FoundKind::ApiKey,
        },
        Expected {
            needle: a2s,
            prefix: "acme",
            key_id: a2.key.id(),
            kind: FoundKind::ApiKey,
        },
        Expected {
            needle: b1s,
            prefix: "acme_live",
            key_id: b1.key.id(),
            kind: FoundKind::ApiKey,
        },
        Expected {
            needle: b2s,
            prefix: "acme_live",
            key_id: b2.key.id(),
            kind: FoundKind::ApiKey,
        },
        Expected {
            needle: ta.expose(),
            prefix: "acme",
            key_id: a2.key.id(),
            kind: FoundKind::AccessToken,
        },
        Expected {
            needle: tb.expose(),
            prefix: "acme_live",
            key_id: b1.key.id(),
            kind: FoundKind::AccessToken,
        },
    ];
    let want = expected_finds(&text, &items);
    assert_eq!(want.len(), 8);
    let found = scan(&text);
    let got: Vec<Report> = found
        .iter()
        .map(|f| {
            (
                f.range.start,
                f.range.end,
                f.secret_range.start,
                f.prefix.clone(),
                f.key_id,
                f.kind,
            )
        })
        .collect();
    assert_eq!(got, want);
    for f in &found {
        assert_eq!(f.secret_range.end, f.range.end);
        let hit = &text[f.range.clone()];
        assert!(hit.starts_with(&format!("{}_", f.prefix)), "{hit}");
        // A found item holds no secret.
        let shown = format!("{f:?}");
        assert!(!shown.contains(&hit[f.secret_range.start - f.range.start..]));
    }
}

#[test]
fn scan_finds_a_key_glued_to_a_word_with_an_underscore() {
    let clock = ManualClock::new(T0);
    let live = ring("acme_live", &clock);
    let key = invoices_key(&live);
    for glue in ["x_", "leaked_", "ACME_KEY_", "acme_", "acme_live_"] {
        let text = format!("env {glue}{} end", key.secret.expose());
        let found = scan(&text);
        assert_eq!(found.len(), 1, "{glue}");
        assert_eq!(&text[found[0].range.clone()], key.secret.expose(), "{glue}");
        assert_eq!(found[0].prefix, "acme_live", "{glue}");
        assert_eq!(found[0].key_id, key.key.id(), "{glue}");
    }
}

/// Regression (a bug this independent test found, since fixed): an API key
/// glued to a preceding word with `_` was found (token.rs checks the
/// checksum from each possible prefix start), but an access token in the
/// same place was not: access.rs `recognise` checked the checksum over the
/// whole run from its start.
#[test]
fn scan_finds_a_token_glued_to_a_word_with_an_underscore() {
    let clock = ManualClock::new(T0);
    let live = ring("acme_live", &clock);
    let key = invoices_key(&live);
    let token = live
        .exchange(key.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    for glue in ["x_", "leaked_", "ACME_TOKEN_", "acme_"] {
        let text = format!("env {glue}{} end", token.expose());
        let found = scan(&text);
        assert_eq!(
            found.len(),
            1,
            "token after `{glue}` not found (a key in the same place is)"
        );
        assert_eq!(&text[found[0].range.clone()], token.expose(), "{glue}");
        assert_eq!(found[0].prefix, "acme_live", "{glue}");
        assert_eq!(found[0].kind, FoundKind::AccessToken, "{glue}");
    }
}

/// Keys and tokens in log lines often follow a letter or digit with no
/// word break: a JSON-escaped newline (`\n<key>`), URL encoding
/// (`%20<key>`), a JSON-escaped `<` (`\u003c<key>`). The checksum covers
/// the prefix, so it tells where the prefix starts inside the word.
#[test]
fn scan_and_redact_find_a_key_or_token_right_after_a_letter_or_digit() {
    let clock = ManualClock::new(T0);
    let live = ring("acme_live", &clock);
    let key = invoices_key(&live);
    let token = live
        .exchange(key.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    let (k, t) = (key.secret.expose(), token.expose());
    for (item, kind, public) in [
        (k, FoundKind::ApiKey, key_public_part(k, "acme_live")),
        (t, FoundKind::AccessToken, token_public_part(t, "acme_live")),
    ] {
        let lines = [
            format!(r#"{{"msg":"bad request\n{item}"}}"#),
            format!("GET /cb?h=Authorization%3A%20Bearer%20{item}"),
            format!(r#"{{"arg":"\u003c{item}\u003e"}}"#),
        ];
        for line in &lines {
            let found = scan(line);
            assert_eq!(found.len(), 1, "{line}");
            assert_eq!(&line[found[0].range.clone()], item, "{line}");
            assert_eq!(found[0].prefix, "acme_live", "{line}");
            assert_eq!(found[0].key_id, key.key.id(), "{line}");
            assert_eq!(found[0].kind, kind, "{line}");
            let redacted = redact(line);
            assert!(
                !redacted.contains(&item[public.len()..]),
                "secret left visible in {redacted}"
            );
            assert!(
                redacted.contains(&format!("{public}[redacted]")),
                "{redacted}"
            );
        }
    }
}

/// Scans `text` and fails with the first few reports, if any.
fn assert_nothing_found(what: &str, text: &str) {
    let found = scan(text);
    assert!(
        found.is_empty(),
        "{what}: {} false positives, first {:?} = {:?}",
        found.len(),
        found[0],
        &text[found[0].range.clone()]
    );
}

/// 10 MiB of base62 text from `rng`; with `underscores`, about one
/// character in 24 is a `_`, often followed by the body version of a key
/// (`1`) or a token (`T`); with `separators`, about one in 64 ends a run (a
/// space, a newline, `=`, `"`, `&`), so the scanner sees many candidates
/// instead of one 10 MiB run.
fn random_text(rng: &mut Rng, underscores: bool, separators: bool) -> String {
    let mut text = String::with_capacity(10 * MIB + 64);
    while text.len() < 10 * MIB {
        if separators && rng.below(64) == 0 {
            text.push([' ', '\n', '=', '"', '&'][rng.below(5) as usize]);
            // Runs of at least six characters (shorter ones with a `_T`
            // once crashed the scanner; the test of short runs below
            // covers them).
            for _ in 0..6 {
                text.push(rng.base62() as char);
            }
        } else if underscores && rng.below(24) == 0 {
            text.push('_');
            match rng.below(4) {
                0 => text.push('1'),
                1 => text.push('T'),
                _ => {}
            }
        } else {
            text.push(rng.base62() as char);
        }
    }
    text
}

#[test]
fn random_base62_text_yields_no_reports() {
    let mut rng = Rng(0x6b65_7977_6172_6421);
    for (underscores, separators) in [(false, false), (true, false), (true, true)] {
        let text = random_text(&mut rng, underscores, separators);
        assert_nothing_found(
            &format!("10 MiB of base62, underscores {underscores}, separators {separators}"),
            &text,
        );
    }
}

/// Regression (a crash this independent test found, since fixed): access.rs
/// `parse_body` computed `bytes.len() - CHECKSUM_LEN` before any length
/// check, so a run of word characters shorter than six with a `_T` in it
/// (`MY_T`, `x_Tab`) made `scan` panic: an overflow in debug builds, an
/// out-of-range `split_at` in release. `redact` and `revoke_leaked` went
/// down with it.
#[test]
fn scan_redact_and_revoke_leaked_survive_short_runs_with_a_token_marker() {
    let clock = ManualClock::new(T0);
    let acme = ring("acme", &clock);
    let quiet = |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
    for text in ["_T", "a_T", "MY_T", "x_Tab", "see FOO_T.", "_T1", "a_T_T"] {
        assert!(
            quiet(&|| assert!(scan(text).is_empty())),
            "scan({text:?}) panicked"
        );
        assert!(
            quiet(&|| assert_eq!(redact(text), text)),
            "redact({text:?}) panicked"
        );
        assert!(
            quiet(&|| {
                acme.revoke_leaked(text, "x").expect("revoke leaked");
            }),
            "revoke_leaked({text:?}) panicked"
        );
    }
    // Every short string over a small alphabet.
    let alphabet = [b'a', b'_', b'T', b'1', b' '];
    let mut text = Vec::new();
    for len in 1..=7u32 {
        for mut n in 0..alphabet.len().pow(len) {
            text.clear();
            for _ in 0..len {
                text.push(alphabet[n % alphabet.len()]);
                n /= alphabet.len();
            }
            let text = std::str::from_utf8(&text).expect("ascii");
            assert!(scan(text).is_empty(), "{text:?}");
        }
    }
}

#[test]
fn random_key_and_token_shaped_strings_yield_no_reports() {
    // Prefix and shape right, body random: only the checksum stands between
    // these and a report (odds about 1 in 4.3e9 each).
    let mut rng = Rng(42);
    let mut text = String::new();
    for i in 0..100_000 {
        let prefix = ["acme", "acme_live", "x"][i % 3];
        text.push_str(prefix);
        text.push_str("_1");
        text.push_str(&rng.base62_string(41));
        text.push('\n');
        text.push_str(prefix);
        text.push_str("_T1");
        // signing key, id, two instants, claims length 015, one chunk, MAC,
        // checksum.
        text.push_str(&rng.base62_string(11 + 14));
        text.push_str("00F");
        text.push_str(&rng.base62_string(21 + MAC_LEN + CHECKSUM_LEN));
        text.push('\n');
    }
    assert_nothing_found("key-shaped random strings", &text);
}

#[test]
fn single_character_changes_of_real_keys_are_never_reported() {
    let started = std::time::Instant::now();
    let clock = ManualClock::new(T0);
    let rings = [ring("acme_live", &clock), ring("acme", &clock)];
    let keys: Vec<String> = (0..1000)
        .map(|i| {
            let issued = rings[i % 2].issue(NewKey::new("acct_1")).expect("issue");
            issued.secret.expose().to_owned()
        })
        .collect();
    // The unchanged keys are all found.
    let all: String = keys.iter().map(|k| format!("{k}\n")).collect();
    assert_eq!(scan(&all).len(), 1000);

    let mut mutations = 0usize;
    let mut batch = String::new();
    for key in &keys {
        batch.clear();
        for at in 0..key.len() {
            let original = key.as_bytes()[at];
            let base = if original.is_ascii_alphanumeric() {
                original
            } else {
                b'a'
            };
            for with in [shifted(base, 1), shifted(base, 31), b'_', b'-'] {
                if with == original {
                    continue;
                }
                batch.push_str(&replaced(key, at, with));
                batch.push('\n');
                mutations += 1;
            }
        }
        let found = scan(&batch);
        assert!(
            found.is_empty(),
            "a changed key was reported: {:?} from {key}",
            &batch[found[0].range.clone()]
        );
    }
    assert!(mutations > 1000 * 45 * 3, "{mutations}");
    eprintln!(
        "{mutations} single-character changes of 1000 keys scanned in {:?}",
        started.elapsed()
    );
}

#[test]
fn single_character_changes_of_real_tokens_are_never_reported() {
    let clock = ManualClock::new(T0);
    let rings = [ring("acme_live", &clock), ring("acme", &clock)];
    for (i, r) in rings.iter().enumerate() {
        for _ in 0..10 {
            let key = invoices_key(r);
            let token = r
                .exchange(key.secret.expose(), Duration::minutes(5))
                .expect("exchange");
            let text = token.expose();
            assert_eq!(scan(text).len(), 1, "ring {i}");
            let mut batch = String::new();
            for at in 0..text.len() {
                let original = text.as_bytes()[at];
                let base = if original.is_ascii_alphanumeric() {
                    original
                } else {
                    b'a'
                };
                for with in [shifted(base, 1), shifted(base, 31), b'_', b'-'] {
                    if with != original {
                        batch.push_str(&replaced(text, at, with));
                        batch.push('\n');
                    }
                }
            }
            assert_nothing_found("changed tokens", &batch);
        }
    }
}

// ---------------------------------------------------------------------------
// Redact
// ---------------------------------------------------------------------------

#[test]
fn redact_removes_every_secret_and_keeps_prefix_and_id() {
    let clock = ManualClock::new(T0);
    let acme = ring("acme", &clock);
    let live = ring("acme_live", &clock);
    let keys: Vec<(Issued, &str)> = vec![
        (invoices_key(&acme), "acme"),
        (invoices_key(&acme), "acme"),
        (invoices_key(&live), "acme_live"),
        (invoices_key(&live), "acme_live"),
    ];
    let tokens: Vec<(AccessToken, &str)> = vec![
        (
            acme.exchange(keys[0].0.secret.expose(), Duration::minutes(5))
                .expect("exchange"),
            "acme",
        ),
        (
            live.exchange(keys[2].0.secret.expose(), Duration::minutes(5))
                .expect("exchange"),
            "acme_live",
        ),
    ];
    let k = |i: usize| keys[i].0.secret.expose();
    let text = format!(
        "{{\"key\":\"{}\"}}\nGET /v1?api_key={}&x=1\nINFO key={} ok\nAuthorization: Bearer {}\n\
         token={}; again {} and {}\n",
        k(0),
        k(2),
        k(1),
        tokens[0].0.expose(),
        tokens[1].0.expose(),
        k(3),
        k(0),
    );
    let out = redact(&text);
    assert_eq!(out.matches("[redacted]").count(), 7, "{out}");
    for (issued, prefix) in &keys {
        let key = issued.secret.expose();
        let secret = secret_part(key, prefix);
        assert!(!out.contains(key), "{out}");
        for start in 0..=SECRET_LEN - 8 {
            assert!(
                !out.contains(&secret[start..start + 8]),
                "8 characters of a secret part remain: {out}"
            );
        }
        assert!(
            out.contains(&format!("{}[redacted]", key_public_part(key, prefix))),
            "prefix and id kept: {out}"
        );
    }
    for (token, prefix) in &tokens {
        let text = token.expose();
        assert!(!out.contains(text), "{out}");
        let mac = mac_part(text);
        for start in 0..=mac.len() - 8 {
            assert!(!out.contains(&mac[start..start + 8]), "MAC remains: {out}");
        }
        assert!(
            out.contains(&format!("{}[redacted]", token_public_part(text, prefix))),
            "{out}"
        );
    }
    // Everything else is untouched.
    assert!(out.starts_with("{\"key\":\"acme_1"), "{out}");
    assert!(out.contains("[redacted]&x=1\nINFO key=acme_1"), "{out}");
    assert!(out.ends_with("[redacted]\n"), "{out}");
    // Nothing left to find, and redaction is idempotent.
    assert!(scan(&out).is_empty());
    assert_eq!(redact(&out), out);
    // Text without keys comes back unchanged.
    let plain = "no keys here: acme_1 acme_T ü ✓ _1abc\n";
    assert_eq!(redact(plain), plain);
    assert_eq!(redact(""), "");
}

// ---------------------------------------------------------------------------
// Revoke leaked
// ---------------------------------------------------------------------------

#[test]
fn revoke_leaked_revokes_this_rings_found_keys_only() {
    let clock = ManualClock::new(T0);
    let (acme, log) = logged_ring("acme", &clock);
    let other_ring = ring("acme_live", &clock);
    let same_prefix_elsewhere = ring("acme", &clock);
    let a1 = invoices_key(&acme);
    let a2 = invoices_key(&acme);
    let a3 = invoices_key(&acme); // not leaked
    let a4 = invoices_key(&acme); // only its token leaked
    let b1 = invoices_key(&other_ring);
    let elsewhere = invoices_key(&same_prefix_elsewhere);
    let t4 = acme
        .exchange(a4.secret.expose(), Duration::minutes(30))
        .expect("exchange");
    let unknown = forge(
        "acme",
        KeyId::from_u64(0x0bad_cafe_dead_beef),
        &"Q".repeat(SECRET_LEN),
    );
    // a3's id and secret under another ring's prefix: that ring's key.
    let relabelled = forge(
        "acme_live",
        a3.key.id(),
        secret_part(a3.secret.expose(), "acme"),
    );
    let text = format!(
        "{{\"key\":\"{}\"}}\n?api_key={}&x=1\nkey={} key={}\nBearer {}\n{} {} {} {} {}\n",
        a1.secret.expose(),
        a2.secret.expose(),
        a2.secret.expose(),
        b1.secret.expose(),
        t4.expose(),
        elsewhere.secret.expose(),
        unknown,
        relabelled,
        a1.secret.expose(),
        replaced(
            a3.secret.expose(),
            10,
            shifted(a3.secret.expose().as_bytes()[10], 1)
        ),
    );
    let before = log.events().len();
    let mut want = vec![a1.key.id(), a2.key.id(), a4.key.id()];
    want.sort();
    let revoked = acme
        .revoke_leaked(&text, "found in a paste")
        .expect("revoke leaked");
    assert_eq!(revoked, want);

    let events = log.events()[before..].to_vec();
    let exposed: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::Exposed)
        .collect();
    let exposed_ids: BTreeSet<KeyId> = exposed.iter().filter_map(|e| e.key).collect();
    assert_eq!(exposed.len(), 3, "{events:?}");
    assert_eq!(exposed_ids, want.iter().copied().collect::<BTreeSet<_>>());
    for e in &exposed {
        assert_eq!(e.owner.as_deref(), Some("acct_42"));
        assert_eq!(e.at, T0);
    }
    for id in &want {
        let exposed_at = events
            .iter()
            .position(|e| e.kind == EventKind::Exposed && e.key == Some(*id))
            .expect("exposed event");
        let revoked_at = events
            .iter()
            .position(|e| {
                e.kind
                    == EventKind::Revoked {
                        reason: "found in a paste".into(),
                    }
                    && e.key == Some(*id)
            })
            .expect("revoked event");
        assert!(exposed_at < revoked_at, "{id:?}: exposed, then revoked");
        assert!(matches!(
            acme.get(*id).expect("kept").status(),
            Status::Revoked { reason, .. } if reason == "found in a paste"
        ));
    }
    for shown in events.iter().map(|e| format!("{e:?}")) {
        for key in [&a1, &a2, &a4] {
            assert!(!shown.contains(secret_part(key.secret.expose(), "acme")));
        }
    }

    for key in [&a1, &a2, &a4] {
        assert_eq!(
            refused(acme.verify(key.secret.expose())),
            VerifyError::Revoked
        );
    }
    assert_eq!(
        refused(acme.verify_access_token_strict(t4.expose())),
        VerifyError::Revoked
    );
    acme.verify(a3.secret.expose())
        .expect("a changed copy of a key is not a leak of it");
    other_ring
        .verify(b1.secret.expose())
        .expect("another ring's key is left alone");
    same_prefix_elsewhere
        .verify(elsewhere.secret.expose())
        .expect("a key of another store is left alone");
    assert!(acme.get(KeyId::from_u64(0x0bad_cafe_dead_beef)).is_none());

    // Again: nothing new to revoke.
    assert_eq!(
        acme.revoke_leaked(&text, "again").expect("again"),
        Vec::<KeyId>::new()
    );
    assert!(matches!(
        acme.get(a1.key.id()).expect("kept").status(),
        Status::Revoked { reason, .. } if reason == "found in a paste"
    ));
    // Text without keys revokes nothing.
    assert_eq!(
        acme.revoke_leaked("nothing here", "x").expect("none"),
        Vec::<KeyId>::new()
    );
}

/// Regression (a security bug this independent test found, since fixed):
/// `revoke_leaked` revoked a key whose id appeared in a checksum-valid
/// string even when the secret in it was not the key's. Key ids are public
/// (events, listings, and every redacted log line keep them), so anyone who
/// could get text in front of the scanner (a public paste a secret-scanning
/// partner reports) could revoke any key by forging
/// `prefix_1<id><any secret><crc>`, or a token string naming the id.
#[test]
fn revoke_leaked_ignores_forged_strings_that_name_a_real_key() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let victim = invoices_key(&ring);
    let attacker = invoices_key(&ring);
    let id = victim.key.id();

    // Id from a redacted log line, any secret, a right checksum.
    let redacted = redact(&format!("key={}", victim.secret.expose()));
    assert!(redacted.contains(&id.to_string()));
    let forged_key = forge("acme", id, &"A".repeat(SECRET_LEN));
    assert_eq!(scan(&forged_key)[0].key_id, id);

    // The attacker's own token, relabelled with the victim's id.
    let own = ring
        .exchange(attacker.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    let id_at = "acme_T".len() + 1;
    let forged_token = with_fresh_checksum(&format!(
        "{}{}{}",
        &own.expose()[..id_at],
        id,
        &own.expose()[id_at + ID_LEN..]
    ));
    assert_eq!(scan(&forged_token)[0].key_id, id);
    assert!(ring.verify_access_token(&forged_token).is_err());

    let revoked = ring
        .revoke_leaked(&format!("{forged_key}\n{forged_token}\n"), "leaked")
        .expect("revoke leaked");
    assert!(
        revoked.is_empty(),
        "forged strings revoked {revoked:?}: the secret (or MAC) in them was never checked"
    );
    ring.verify(victim.secret.expose())
        .expect("the victim's key still works");
}

// ---------------------------------------------------------------------------
// Fixes from the security review of the token paths
// ---------------------------------------------------------------------------

#[test]
fn a_token_of_a_bound_key_needs_the_bindings_again() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring
        .issue(
            NewKey::new("acct_1")
                .client_cert(CertFingerprint::of_der(CERT))
                .allow_network(net("10.0.0.0/8")),
        )
        .unwrap();
    let inside = RequestContext::new()
        .client_cert_der(CERT)
        .peer_addr(ip("10.1.2.3"));
    let token = ring
        .exchange_with(issued.secret.expose(), TokenRequest::new().context(inside))
        .unwrap();
    assert!(token.claims.bound);
    // Without the request, a bound token is refused by both checks that
    // take none: the plain one cannot see the bindings (`NotPresented`);
    // the strict one checks them against no request and names the one
    // missing, as `verify` does for the key itself.
    assert_eq!(
        ring.verify_access_token(token.expose()).unwrap_err(),
        VerifyError::BindingMismatch(Binding::NotPresented)
    );
    assert_eq!(
        ring.verify_access_token_strict(token.expose()).unwrap_err(),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
    assert_eq!(
        ring.verify_access_token_strict(token.expose()).unwrap_err(),
        ring.verify(issued.secret.expose()).unwrap_err()
    );
    let networked = ring
        .issue(NewKey::new("acct_1").allow_network(net("10.0.0.0/8")))
        .unwrap();
    let networked_token = ring
        .exchange_with(
            networked.secret.expose(),
            TokenRequest::new().context(RequestContext::new().peer_addr(ip("10.1.2.3"))),
        )
        .unwrap();
    assert_eq!(
        ring.verify_access_token_strict(networked_token.expose())
            .unwrap_err(),
        VerifyError::BindingMismatch(Binding::Network)
    );
    assert_eq!(
        ring.verify(networked.secret.expose()).unwrap_err(),
        VerifyError::BindingMismatch(Binding::Network)
    );
    // With it, the key's bindings are checked as for the key itself.
    assert!(
        ring.verify_access_token_with(token.expose(), inside)
            .is_ok()
    );
    let outside = inside.peer_addr(ip("8.8.8.8"));
    assert_eq!(
        ring.verify_access_token_with(token.expose(), outside)
            .unwrap_err(),
        VerifyError::BindingMismatch(Binding::Network)
    );
    let no_cert = RequestContext::new().peer_addr(ip("10.1.2.3"));
    assert_eq!(
        ring.verify_access_token_with(token.expose(), no_cert)
            .unwrap_err(),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
}

/// The strict checks follow the key's current bindings, not the token's
/// claim of them: a token exchanged while its key was unbound (its claims
/// say unbound) is held to the bindings an `update` gave the key since,
/// as the key itself is; the plain check, which cannot see them, still
/// takes it.
#[test]
fn a_token_of_a_key_bound_since_its_exchange_needs_the_new_bindings() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .unwrap();
    assert!(!token.claims.bound);
    let mut bindings = Bindings::default();
    bindings.client_cert = Some(CertFingerprint::of_der(CERT));
    ring.update(issued.key.id(), KeyUpdate::new().bindings(bindings))
        .unwrap();
    assert_eq!(
        ring.verify_access_token_strict(token.expose()).unwrap_err(),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
    assert_eq!(
        ring.verify_access_token_with(
            token.expose(),
            RequestContext::new().client_cert_der(OTHER_CERT)
        )
        .unwrap_err(),
        VerifyError::BindingMismatch(Binding::ClientCertificate)
    );
    assert!(
        ring.verify_access_token_with(token.expose(), RequestContext::new().client_cert_der(CERT))
            .is_ok()
    );
    assert!(ring.verify_access_token(token.expose()).is_ok());
}

/// A token asks for at most 256 scopes, as a key holds: a strict check
/// meets each of a token's scopes with each of its key's, and a token of
/// some 800 short scopes made that check take 40 ms. More is refused
/// before the key is checked (no use counted), whatever the key holds.
#[test]
fn a_token_asks_for_at_most_256_scopes() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring
        .issue(NewKey::new("acct_1").scopes(ScopeSet::parse(["*:*"]).unwrap()))
        .unwrap();
    let asking = |n: usize| {
        let scopes = ScopeSet::parse((0..n).map(|i| format!("r{i}:read"))).unwrap();
        ring.exchange_with(issued.secret.expose(), TokenRequest::new().scopes(scopes))
    };
    match asking(257) {
        Err(Error::InvalidInput(why)) => {
            assert_eq!(why, "a token's scopes are limited to 256, as a key's are")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(ring.get(issued.key.id()).unwrap().uses(), 0);
    let token = asking(256).unwrap();
    assert_eq!(token.claims.scopes.len(), 256);
    assert_eq!(ring.get(issued.key.id()).unwrap().uses(), 1);
}

/// A key with a use limit is refused a token, and the refused exchange
/// spends none of its uses. A wrong secret for it is refused as invalid,
/// like any other: the refusal names the limit only to the key's holder.
#[test]
fn a_key_with_a_use_limit_cannot_be_exchanged() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_1").use_limit(1)).unwrap();
    match ring.exchange(issued.secret.expose(), Duration::minutes(5)) {
        Err(Error::InvalidInput(why)) => assert!(why.contains("use limit"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(ring.get(issued.key.id()).unwrap().uses(), 0);
    let secret = secret_part(issued.secret.expose(), "acme");
    let wrong = forge("acme", issued.key.id(), &other_secret(secret));
    assert!(matches!(
        ring.exchange(&wrong, Duration::minutes(5)),
        Err(Error::Rejected(VerifyError::Invalid))
    ));
    assert!(ring.verify(issued.secret.expose()).is_ok());
    assert_eq!(
        ring.verify(issued.secret.expose()).unwrap_err(),
        VerifyError::UsageExceeded
    );
}

/// An exchange refused whatever the key (a lifetime that is not positive,
/// a ring without a signing key, a clock before 1970) is not a use of the
/// key: its count and last use stay, so such failed exchanges do not keep
/// an idle key alive. Nor is an exchange or a verification refused for a
/// scope the request requires. A token granted is one use.
#[test]
fn an_exchange_refused_whatever_the_key_counts_no_use() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let idle = |ring: &KeyRing| {
        ring.issue(
            NewKey::new("acct_1")
                .scopes(scopes(&["invoices:read"]))
                .expiry(ExpiryPolicy::Idle(Duration::hours(1))),
        )
        .unwrap()
    };
    let issued = idle(&ring);
    let before_1970 = idle(&ring);
    let granted = idle(&ring);
    let unsigned_ring = KeyRing::builder("acme")
        .clock(clock.clone())
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let unsigned = idle(&unsigned_ring);
    let key = issued.secret.expose();

    clock.set(datetime!(1969-12-31 23:00 UTC));
    assert!(matches!(
        ring.exchange(before_1970.secret.expose(), Duration::minutes(5)),
        Err(Error::InvalidInput(m)) if m.contains("1970")
    ));
    clock.set(T0 + Duration::minutes(50));
    for ttl in [Duration::ZERO, Duration::seconds(-1)] {
        assert!(matches!(
            ring.exchange(key, ttl),
            Err(Error::InvalidInput(m)) if m.contains("lifetime")
        ));
    }
    assert!(matches!(
        unsigned_ring.exchange(unsigned.secret.expose(), Duration::minutes(5)),
        Err(Error::NoSigningKey)
    ));
    let need = Requirement::scope("invoices:write").unwrap();
    assert!(matches!(
        ring.exchange_with(key, TokenRequest::new().context((&need).into())),
        Err(Error::Rejected(VerifyError::InsufficientScope(_)))
    ));
    assert!(matches!(
        ring.verify_with(key, &need),
        Err(VerifyError::InsufficientScope(_))
    ));
    ring.exchange(granted.secret.expose(), Duration::minutes(5))
        .unwrap();

    for (ring, refused) in [
        (&ring, &issued),
        (&ring, &before_1970),
        (&unsigned_ring, &unsigned),
    ] {
        let key = ring.get(refused.key.id()).unwrap();
        assert_eq!(
            (key.uses(), key.last_used_at()),
            (0, None),
            "key {}",
            key.id()
        );
    }
    let key = ring.get(granted.key.id()).unwrap();
    assert_eq!(key.uses(), 1);
    assert_eq!(key.last_used_at(), Some(T0 + Duration::minutes(50)));

    // Idle since their issue, the keys expired an hour after it.
    clock.set(T0 + Duration::minutes(61));
    for (ring, refused) in [(&ring, &issued), (&unsigned_ring, &unsigned)] {
        assert_eq!(
            ring.verify(refused.secret.expose()).unwrap_err(),
            VerifyError::Expired
        );
    }
    assert!(ring.verify(granted.secret.expose()).is_ok());
}

#[test]
fn tokens_from_before_a_regeneration_fail_strict_checks() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let old_token = ring
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .unwrap();
    clock.advance(Duration::seconds(10));
    let regenerated = ring.regenerate(issued.key.id()).unwrap();
    assert_eq!(
        ring.verify_access_token_strict(old_token.expose())
            .unwrap_err(),
        VerifyError::Revoked
    );
    // Plain checks do not look at the key (documented): still valid.
    assert!(ring.verify_access_token(old_token.expose()).is_ok());
    clock.advance(Duration::seconds(1));
    let new_token = ring
        .exchange(regenerated.secret.expose(), Duration::minutes(30))
        .unwrap();
    assert!(ring.verify_access_token_strict(new_token.expose()).is_ok());
    // The mark survives a save and reload of the record.
    let json = serde_json::to_string(&ring.get(issued.key.id()).unwrap()).unwrap();
    assert!(json.contains("tokens_after"), "{json}");
}

/// Tokens carry whole seconds, so one exchanged in the second of its key's
/// regeneration would count as a token of the old secret and fail every
/// strict check: the exchange is refused instead, and works a second later.
#[test]
fn an_exchange_in_the_second_of_a_regeneration_is_refused() {
    let clock = ManualClock::new(T0 + Duration::milliseconds(200));
    let ring = ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let id = issued.key.id();
    let regenerated = ring.regenerate(id).unwrap();
    clock.advance(Duration::milliseconds(500));
    assert!(matches!(
        ring.exchange(regenerated.secret.expose(), Duration::minutes(30)),
        Err(Error::RegeneratedThisSecond(refused)) if refused == id
    ));
    // The key itself is fine.
    assert!(ring.verify(regenerated.secret.expose()).is_ok());
    // The next second, the token is issued and passes strict checks.
    clock.advance(Duration::milliseconds(300));
    let token = ring
        .exchange(regenerated.secret.expose(), Duration::minutes(30))
        .expect("a second after the regeneration");
    assert_eq!(token.claims.issued_at, T0 + Duration::seconds(1));
    assert!(ring.verify_access_token_strict(token.expose()).is_ok());
}

#[test]
fn rotating_a_disabled_key_gives_a_disabled_successor() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    ring.disable(issued.key.id()).unwrap();
    let successor = ring.rotate(issued.key.id(), Duration::hours(1)).unwrap();
    assert_eq!(successor.key.status(), Status::Disabled);
    assert_eq!(
        ring.verify(successor.secret.expose()).unwrap_err(),
        VerifyError::Disabled
    );
}

#[test]
fn signing_key_ids_must_be_distinct() {
    let built = KeyRing::builder("acme")
        .signing_key(3, SIGNING)
        .accept_signing_key(3, OLD_SIGNING)
        .build(MemoryStore::new());
    assert!(matches!(built, Err(Error::InvalidInput(_))));
}

#[test]
fn scan_finds_keys_and_tokens_followed_by_an_underscore() {
    let clock = ManualClock::new(T0);
    let live = ring("acme_live", &clock);
    let key = invoices_key(&live);
    let other = invoices_key(&live);
    let token = live
        .exchange(key.secret.expose(), Duration::minutes(5))
        .expect("exchange");
    let (k, k2, t) = (key.secret.expose(), other.secret.expose(), token.expose());
    // Each case: the text, and the strings scan must find in it, in order.
    let long_glue = format!("{}_", "x".repeat(7000));
    let cases: Vec<(String, Vec<&str>)> = vec![
        (format!("env {k}_old end"), vec![k]),
        (format!("env {k}_ end"), vec![k]),
        (format!("env {t}_old end"), vec![t]),
        (format!("env {k}_{k2} end"), vec![k, k2]),
        (format!("env {k}_{t}_{k2}_x"), vec![k, t, k2]),
        (format!("env x_{k}_y end"), vec![k]),
        // Glue longer than the longest token before the key or token.
        (format!("{long_glue}{k}_z"), vec![k]),
        (format!("{long_glue}{t}_z"), vec![t]),
    ];
    for (text, expected) in &cases {
        let found = scan(text);
        let shown: Vec<&str> = found.iter().map(|f| &text[f.range.clone()]).collect();
        assert_eq!(
            &shown,
            expected,
            "in {:?}",
            &text[text.len().saturating_sub(200)..]
        );
        let redacted = redact(text);
        for secret in expected {
            assert!(!redacted.contains(secret), "redact left a key in place");
        }
    }
    // A key or token with more letters or digits after it is not one.
    for text in [format!("env {k}x end"), format!("env {k}1_old end")] {
        assert_nothing_found("a key run on into letters", &text);
    }
}

#[test]
fn scan_survives_overlong_bodies_and_finds_a_longest_prefix_glued_to_a_word() {
    // A `_T` or `_1` stretch longer than any token or key: nothing found,
    // no panic (a slice once started past its end here).
    for len in [5843, 5844, 5845, 5846, 12_000] {
        for marker in ["_T", "_1", "acme_T", "acme_1"] {
            let text = format!("see {marker}{} end", "A".repeat(len));
            assert_nothing_found("an overlong body", &text);
            assert_eq!(redact(&text), text);
        }
    }
    // A key whose prefix is as long as a prefix can be: found after `_`
    // and when glued to letters (its search then starts mid-word), with
    // the prefix the checksum was made over.
    let clock = ManualClock::new(T0);
    let prefix = "abcdefghijklmnopqrstuvwxyzabcdef";
    assert_eq!(prefix.len(), 32);
    let long = ring(prefix, &clock);
    let key = invoices_key(&long);
    let k = key.secret.expose();
    let found = scan(&format!("q_{k} end"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].prefix, prefix);
    for glued in [format!("q{k} end"), format!("qq{k}_old end")] {
        let found = scan(&glued);
        assert_eq!(found.len(), 1, "{glued}");
        assert_eq!(&glued[found[0].range.clone()], k);
        assert_eq!(found[0].prefix, prefix);
    }
}

/// A strict check grants only what the key still grants: after `update`
/// narrowed the key's scopes, a token exchanged before passes no
/// requirement on the scope taken away, and its claims come back narrowed.
/// The plain check (no lookup) still goes by the token until it expires.
#[test]
fn strict_token_checks_follow_the_keys_narrowed_scopes() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let key = ring
        .issue(NewKey::new("o").scopes(scopes(&["invoices:read", "invoices:write"])))
        .unwrap();
    let token = ring
        .exchange(key.secret.expose(), Duration::minutes(30))
        .unwrap();
    ring.update(
        key.key.id(),
        KeyUpdate::new().scopes(scopes(&["invoices:read"])),
    )
    .unwrap();
    let write = Requirement::scope("invoices:write").unwrap();
    let read = Requirement::scope("invoices:read").unwrap();
    assert_eq!(
        ring.verify_access_token_with(token.expose(), &write),
        Err(VerifyError::InsufficientScope(
            Scope::new("invoices:write").unwrap()
        ))
    );
    let claims = ring
        .verify_access_token_with(token.expose(), &read)
        .unwrap();
    assert_eq!(claims.scopes, scopes(&["invoices:read"]));
    let strict = ring.verify_access_token_strict(token.expose()).unwrap();
    assert_eq!(strict.scopes, scopes(&["invoices:read"]));
    let plain = ring.verify_access_token(token.expose()).unwrap();
    assert_eq!(plain.scopes, scopes(&["invoices:read", "invoices:write"]));
}

/// A token cannot carry a time before 1970: on a clock set before it, the
/// exchange is refused, rather than signing a time the token would read
/// as 1970 (a five-minute token that then verified for a whole hour).
#[test]
fn no_token_is_signed_on_a_clock_before_1970() {
    let clock = ManualClock::new(datetime!(1969-12-31 23:00 UTC));
    let ring = ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let err = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput(m) if m.contains("1970")),
        "{err:?}"
    );
    // From 1970 on, tokens are signed as ever.
    clock.set(datetime!(1970-01-01 00:00 UTC));
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .unwrap();
    clock.advance(Duration::minutes(5));
    assert_eq!(
        ring.verify_access_token(token.expose()),
        Err(VerifyError::Expired)
    );
}

/// Before 1677 a clock reading is below what the ring's nanosecond times
/// hold: an exchange there is refused like one before 1970, with an error
/// and no panic (it overflowed rounding the time to whole seconds).
#[test]
fn no_token_is_signed_on_a_clock_before_1677() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    for at in [
        datetime!(1677-09-21 00:12:43 UTC),
        datetime!(1600-01-01 00:00 UTC),
        datetime!(-9999-01-01 00:00 UTC),
    ] {
        clock.set(at);
        let err = ring
            .exchange(issued.secret.expose(), Duration::minutes(5))
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput(m) if m.contains("1970")),
            "{at}: {err:?}"
        );
    }
}

/// Regenerates a key when the ring reports the exchange's successful key
/// check, then moves the clock on a second: a regeneration that lands
/// between the check of the old secret and the signing of the token.
struct RegenerateOnVerified {
    ring: std::sync::OnceLock<std::sync::Weak<KeyRing>>,
    clock: ManualClock,
    id: std::sync::OnceLock<KeyId>,
}

impl EventSink for RegenerateOnVerified {
    fn record(&self, event: &Event) {
        if event.kind != EventKind::Verified {
            return;
        }
        let ring = self.ring.get().and_then(std::sync::Weak::upgrade);
        if let (Some(ring), Some(&id)) = (ring, self.id.get()) {
            ring.regenerate(id).expect("regenerate");
            self.clock.advance(Duration::seconds(1));
        }
    }
}

/// A token exchanged with a secret that a regeneration ended while the
/// exchange was under way carries a time no later than the check of that
/// secret, so strict checks refuse it like any token from before the
/// regeneration.
#[test]
fn a_regeneration_during_an_exchange_ends_the_token_for_strict_checks() {
    let clock = ManualClock::new(T0 + Duration::milliseconds(500));
    let sink = Arc::new(RegenerateOnVerified {
        ring: std::sync::OnceLock::new(),
        clock: clock.clone(),
        id: std::sync::OnceLock::new(),
    });
    let ring = Arc::new(
        KeyRing::builder("acme")
            .clock(clock.clone())
            .signing_key(1, SIGNING)
            .events(Arc::clone(&sink))
            .report_successes(true)
            .flush_interval(None)
            .build(MemoryStore::new())
            .expect("ring builds"),
    );
    sink.ring.set(Arc::downgrade(&ring)).unwrap();
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    sink.id.set(issued.key.id()).unwrap();
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .expect("the old secret passed its check");
    // The regeneration happened: the old secret is dead.
    assert_eq!(
        ring.verify(issued.secret.expose()).unwrap_err(),
        VerifyError::Invalid
    );
    assert_eq!(
        ring.verify_access_token_strict(token.expose()).unwrap_err(),
        VerifyError::Revoked
    );
    assert!(token.claims.issued_at <= T0 + Duration::milliseconds(500));
}

/// With successes reported, a key's passed check is reported as
/// `Verified`, in a verify and in an exchange, and a token's passed check,
/// plain or strict, as `TokenVerified`, with the key and its owner: an
/// audit of every successful authentication holds the token traffic too.
/// Without the option, neither is reported.
#[test]
fn reported_successes_are_those_of_keys_and_of_tokens() {
    let log = Arc::new(EventLog::new());
    let ring = KeyRing::builder("acme")
        .clock(ManualClock::new(T0))
        .signing_key(1, SIGNING)
        .events(Arc::clone(&log))
        .report_successes(true)
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let id = issued.key.id();
    let before = log.events().len();
    ring.verify(issued.secret.expose()).unwrap();
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .unwrap();
    ring.verify_access_token(token.expose()).unwrap();
    ring.verify_access_token_strict(token.expose()).unwrap();
    let reported: Vec<(EventKind, Option<KeyId>, Option<String>)> = log.events()[before..]
        .iter()
        .map(|e| (e.kind.clone(), e.key, e.owner.clone()))
        .collect();
    let owner = Some("acct_1".to_owned());
    assert_eq!(
        reported,
        vec![
            (EventKind::Verified, Some(id), owner.clone()),
            (EventKind::Verified, Some(id), owner.clone()),
            (EventKind::TokenVerified, Some(id), owner.clone()),
            (EventKind::TokenVerified, Some(id), owner),
        ]
    );
    // An exchange refused after the key passed its check reports the
    // passed check too: a key with a use limit (which no token may carry)
    // as one asking for wider scopes. (The first was refused before it
    // was reported.)
    let limited = ring.issue(NewKey::new("acct_2").use_limit(3)).unwrap();
    let before = log.events().len();
    assert!(matches!(
        ring.exchange(limited.secret.expose(), Duration::minutes(5)),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        ring.exchange_with(
            issued.secret.expose(),
            TokenRequest::new().scopes(ScopeSet::parse(["invoices:write"]).unwrap())
        ),
        Err(Error::ScopeWidening(_))
    ));
    let reported: Vec<(EventKind, Option<KeyId>)> = log.events()[before..]
        .iter()
        .map(|e| (e.kind.clone(), e.key))
        .collect();
    assert_eq!(
        reported,
        vec![
            (EventKind::Verified, Some(limited.key.id())),
            (EventKind::Verified, Some(id)),
        ]
    );

    let quiet_log = Arc::new(EventLog::new());
    let quiet = KeyRing::builder("acme")
        .clock(ManualClock::new(T0))
        .signing_key(1, SIGNING)
        .events(Arc::clone(&quiet_log))
        .flush_interval(None)
        .build(MemoryStore::new())
        .unwrap();
    let issued = quiet.issue(NewKey::new("acct_1")).unwrap();
    let before = quiet_log.events().len();
    let token = quiet
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .unwrap();
    quiet.verify_access_token(token.expose()).unwrap();
    quiet.verify_access_token_strict(token.expose()).unwrap();
    assert_eq!(quiet_log.events()[before..], []);
}

/// A refused access token is reported with the id of the key it names, as a
/// refused API key is (SPEC 9: "key id where known"), so an administrator
/// can tell which key's tokens are being refused; a string that does not
/// parse as a token names none.
#[test]
fn a_refused_token_is_reported_with_its_key_id() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged_ring("acme", &clock);
    let issued = ring
        .issue(NewKey::new("acct_1").client_cert(CertFingerprint::of_der(CERT)))
        .unwrap();
    let id = issued.key.id();
    let token = ring
        .exchange_with(
            issued.secret.expose(),
            TokenRequest::new().context(RequestContext::new().client_cert_der(CERT)),
        )
        .unwrap();
    let before = log.events().len();
    // A bound token without its certificate, plain and with a request.
    let _ = ring.verify_access_token(token.expose());
    let _ = ring.verify_access_token_with(
        token.expose(),
        RequestContext::new().client_cert_der(OTHER_CERT),
    );
    // Revoked: strict.
    ring.revoke(id, "test").unwrap();
    let _ = ring.verify_access_token_strict(token.expose());
    // Expired: plain.
    clock.advance(Duration::hours(2));
    let _ = ring.verify_access_token(token.expose());
    let failures: Vec<Event> = log.events()[before..]
        .iter()
        .filter(|e| matches!(e.kind, EventKind::VerifyFailed(_)))
        .cloned()
        .collect();
    let kinds: Vec<EventKind> = failures.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::VerifyFailed(VerifyError::BindingMismatch(Binding::NotPresented)),
            EventKind::VerifyFailed(VerifyError::BindingMismatch(Binding::ClientCertificate)),
            EventKind::VerifyFailed(VerifyError::Revoked),
            EventKind::VerifyFailed(VerifyError::Expired),
        ]
    );
    for event in &failures {
        assert_eq!(event.key, Some(id), "{event:?}");
        let shown = format!("{event:?}");
        assert!(!shown.contains(mac_part(token.expose())), "{shown}");
    }
    // A token whose checksum holds but whose MAC does not names its key id,
    // as a key with a wrong secret does; one that does not parse names none.
    let text = token.expose();
    // The MAC's last digit: a shifted first digit can take the field past
    // `u128::MAX`, which the parser refuses as malformed (about one run in
    // ten failed so).
    let mac_last = text.len() - CHECKSUM_LEN - 1;
    let forged = with_fresh_checksum(&replaced(
        text,
        mac_last,
        shifted(text.as_bytes()[mac_last], 1),
    ));
    let bad_checksum = replaced(text, mac_last, shifted(text.as_bytes()[mac_last], 1));
    let before = log.events().len();
    assert_eq!(ring.verify_access_token(&forged), Err(VerifyError::Invalid));
    assert!(matches!(
        ring.verify_access_token(&bad_checksum),
        Err(VerifyError::Malformed(MalformedReason::BadChecksum))
    ));
    let _ = ring.verify_access_token("acme_Tnot-a-token");
    let keys: Vec<Option<KeyId>> = log.events()[before..].iter().map(|e| e.key).collect();
    assert_eq!(keys, vec![Some(id), None, None]);
}

/// `revoke_leaked` passes over an old secret of a regenerated key (it no
/// longer matches the stored hash); a token exchanged with that old secret
/// is just as dead (strict checks refuse it), so finding it must not revoke
/// the key under its new secret either. A token of the new secret does.
#[test]
fn revoke_leaked_passes_over_tokens_from_before_a_regeneration() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let id = issued.key.id();
    let old_token = ring
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .unwrap();
    clock.advance(Duration::seconds(10));
    let regenerated = ring.regenerate(id).unwrap();
    let log = format!(
        "key={} token={}\n",
        issued.secret.expose(),
        old_token.expose()
    );
    assert_eq!(ring.revoke_leaked(&log, "leaked").unwrap(), vec![]);
    assert!(ring.verify(regenerated.secret.expose()).is_ok());

    clock.advance(Duration::seconds(1));
    let new_token = ring
        .exchange(regenerated.secret.expose(), Duration::minutes(30))
        .unwrap();
    let log = format!("token={}\n", new_token.expose());
    assert_eq!(ring.revoke_leaked(&log, "leaked").unwrap(), vec![id]);
    assert_eq!(
        ring.verify(regenerated.secret.expose()).unwrap_err(),
        VerifyError::Revoked
    );
}

/// A token cut short (a header limit, a bad copy) is refused for its
/// length, as a short API key is, not for a prefix it has right nor for
/// the checksum its cut lost (regression: a cut past the fixed part was a
/// bad checksum); a string
/// long enough with another prefix is refused for its prefix.
#[test]
fn a_truncated_token_is_refused_for_its_length_not_its_prefix() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .unwrap();
    let text = token.expose();
    // Past its fixed part too (a token's claims length says how long it
    // is), and run on by a character that could belong to it.
    for cut in "acme_T".len()..text.len() {
        assert_eq!(
            ring.verify_access_token(&text[..cut]),
            Err(VerifyError::Malformed(MalformedReason::WrongLength)),
            "cut at {cut}"
        );
    }
    assert_eq!(
        ring.verify_access_token(&format!("{text}0")),
        Err(VerifyError::Malformed(MalformedReason::WrongLength))
    );
    assert_eq!(
        ring.verify_access_token(&format!("acmf{}", &text[4..])),
        Err(VerifyError::Malformed(MalformedReason::WrongPrefix))
    );
}

/// A well-formed key string of `prefix` (valid checksum, id 1) whose
/// checksum ends with `tail`: found by trying secrets, one in 62^len.
fn forge_ending_with(prefix: &str, tail: &str) -> String {
    let id = KeyId::from_u64(1);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    loop {
        let key = forge(prefix, id, &rng.base62_string(SECRET_LEN));
        if key.ends_with(tail) {
            return key;
        }
    }
}

/// Regression (found by this review): a string with a valid checksum that
/// runs into the prefix of a real key or token, with no break (`<forged
/// key whose last characters are the real prefix>_1…`), claimed the text up
/// to the real key's `_`, and the real key's prefix was searched for only
/// after it: the real key was neither found nor redacted nor revoked. Its
/// checksum is public arithmetic, so anyone who can put text right before
/// a key in a log line could hide the key from `scan` and leave it in
/// `redact`'s output. A key's prefix may now start inside an earlier find
/// (its body, after its own `_`, never does).
#[test]
fn a_checksummed_string_running_into_a_real_prefix_does_not_hide_the_key() {
    let clock = ManualClock::new(T0);
    for prefix in ["a", "ab_c"] {
        let ring = ring(prefix, &clock);
        let key = invoices_key(&ring);
        let token = ring
            .exchange(key.secret.expose(), Duration::minutes(5))
            .expect("exchange");
        // The forged string ends where the real item's first `_` is, so its
        // checksum ends with the real prefix up to that `_`.
        let glued = prefix.split('_').next().expect("a first part");
        let forged = forge_ending_with("q", glued);
        let head = &forged[..forged.len() - glued.len()];
        for (item, public) in [
            (
                key.secret.expose(),
                key_public_part(key.secret.expose(), prefix),
            ),
            (token.expose(), token_public_part(token.expose(), prefix)),
        ] {
            let text = format!("log {head}{item} end");
            let found = scan(&text);
            let shown: Vec<&str> = found.iter().map(|f| &text[f.range.clone()]).collect();
            assert_eq!(shown, vec![forged.as_str(), item], "{text}");
            assert_eq!(found[1].prefix, prefix);
            let redacted = redact(&text);
            assert!(
                !redacted.contains(&item[public.len()..]),
                "secret left visible in {redacted}"
            );
            // The forged string's redaction takes the prefix characters it
            // ran into; the rest of the public part stays.
            let kept = &public[glued.len()..];
            assert!(
                redacted.ends_with(&format!("[redacted]{kept}[redacted] end")),
                "{redacted}"
            );
            assert!(scan(&redacted).is_empty(), "{redacted}");
        }
        assert_eq!(
            ring.revoke_leaked(&format!("log {head}{}", key.secret.expose()), "leaked")
                .expect("revoke"),
            vec![key.key.id()]
        );
    }
}

/// Twelve letters (`p` to `w`) that, put right before `item` (a real key
/// or token), make the string from the first of them to `item`'s end carry
/// a valid checksum too: `item`'s own checksum, over a longer prefix. The
/// CRC32 of messages of one length is affine in their bits, so the letters
/// come from solving 32 linear equations over GF(2), not from a search.
fn checksummed_glue(item: &str) -> String {
    let checked = &item.as_bytes()[..item.len() - CHECKSUM_LEN];
    let crc = |glue: &[u8]| crc32fast::hash(&[glue, checked].concat());
    let base = [b'p'; 12];
    let at_base = crc(&base);
    // Each of the three low bits of each letter, as the change it makes.
    let mut rows: Vec<(u32, u64)> = (0..base.len() * 3)
        .map(|bit| {
            let mut glue = base;
            glue[bit / 3] ^= 1 << (bit % 3);
            (crc(&glue) ^ at_base, 1u64 << bit)
        })
        .collect();
    // Gaussian elimination: `rows` to a basis, then the target reduced by it.
    let mut basis: Vec<(u32, u64)> = Vec::new();
    for (mut v, mut used) in rows.drain(..) {
        for &(b, b_used) in &basis {
            if v ^ b < v {
                v ^= b;
                used ^= b_used;
            }
        }
        if v != 0 {
            basis.push((v, used));
            basis.sort_by_key(|b| std::cmp::Reverse(b.0));
        }
    }
    let (mut want, mut used) = (crc32fast::hash(checked) ^ at_base, 0u64);
    for &(b, b_used) in &basis {
        if want ^ b < want {
            want ^= b;
            used ^= b_used;
        }
    }
    assert_eq!(want, 0, "the letters' changes span every CRC");
    let mut glue = base;
    for bit in 0..base.len() * 3 {
        if used & (1 << bit) != 0 {
            glue[bit / 3] ^= 1 << (bit % 3);
        }
    }
    let glue = String::from_utf8(glue.to_vec()).expect("letters");
    assert_eq!(crc(glue.as_bytes()), crc32fast::hash(checked));
    glue
}

/// Regression (found by this review): of the prefix starts a checksum
/// matches, `scan` kept the longest, and letters put right before a real
/// key or token can be chosen (CRC32 is public, linear arithmetic) so that
/// the string from the first of them matches the item's own checksum. The
/// item was then reported with those letters in its prefix, and
/// `revoke_leaked`, which takes only finds of its own ring's prefix,
/// passed over the leaked key. The starts a checksum can match without
/// such help lie inside the item, so the shortest is taken.
#[test]
fn checksummed_letters_before_a_key_do_not_take_its_prefix() {
    let clock = ManualClock::new(T0);
    for prefix in ["acme", "acme_live"] {
        let ring = ring(prefix, &clock);
        for kind in [FoundKind::ApiKey, FoundKind::AccessToken] {
            // A key of its own each time: the first revoke_leaked revokes.
            let key = invoices_key(&ring);
            let item = match kind {
                FoundKind::ApiKey => key.secret.expose().to_owned(),
                _ => ring
                    .exchange(key.secret.expose(), Duration::minutes(5))
                    .expect("exchange")
                    .expose()
                    .to_owned(),
            };
            let text = format!("log {}{item} end", checksummed_glue(&item));
            let found = scan(&text);
            assert_eq!(found.len(), 1, "{text}");
            assert_eq!(&text[found[0].range.clone()], item, "{text}");
            assert_eq!(found[0].prefix, prefix, "{text}");
            assert_eq!(found[0].kind, kind);
            assert_eq!(
                ring.revoke_leaked(&text, "leaked").expect("revoke"),
                vec![key.key.id()],
                "{text}"
            );
        }
    }
}

/// Regression (found by this review): the README gave secret-scanning
/// services the patterns from before keys glued to a preceding letter or
/// digit, or followed by `_`, were found (`\b…\b`): a service following it
/// missed `%20acme_1…` and `<key>_old`, which `scan` finds. The README
/// must give the patterns `scan`'s documentation gives.
#[test]
fn the_readme_gives_the_patterns_scan_documents() {
    let readme = include_str!("../README.md");
    let scan_doc = include_str!("../src/scan.rs");
    let patterns: Vec<&str> = scan_doc
        .lines()
        .filter_map(|line| line.strip_prefix("//! "))
        .filter(|line| line.starts_with("[a-z]"))
        .collect();
    assert_eq!(patterns.len(), 2, "an API key's and a token's");
    for pattern in patterns {
        assert!(
            readme.contains(&format!("`{pattern}`")),
            "the README lacks `{pattern}`"
        );
    }
    assert!(!readme.contains(r"`\b[a-z]"), "a stale pattern remains");
}

/// Two rings that share a signing key and a prefix but not a pepper (one
/// ring per tenant, say) do not accept each other's tokens, even in the
/// plain check that looks at no store; rings with the same pepper do.
#[test]
fn a_token_is_accepted_only_by_rings_with_its_pepper() {
    let clock = ManualClock::new(T0);
    let tenant = |pepper: [u8; 32]| {
        KeyRing::builder("acme")
            .clock(clock.clone())
            .pepper(pepper)
            .signing_key(1, SIGNING)
            .flush_interval(None)
            .build(MemoryStore::new())
            .expect("ring builds")
    };
    let (a, b, a_again) = (tenant([1; 32]), tenant([2; 32]), tenant([1; 32]));
    let issued = a.issue(NewKey::new("acct_1")).unwrap();
    let token = a
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .unwrap();
    assert!(a.verify_access_token(token.expose()).is_ok());
    assert!(a_again.verify_access_token(token.expose()).is_ok());
    assert_eq!(
        b.verify_access_token(token.expose()).unwrap_err(),
        VerifyError::Invalid
    );
    // Nor does a ring without a pepper.
    assert_eq!(
        ring("acme", &clock)
            .verify_access_token(token.expose())
            .unwrap_err(),
        VerifyError::Invalid
    );
}

/// Lowering the ring's maximum token life shortens the tokens already out:
/// a ring built on the same store with a lower maximum refuses, as expired,
/// a token that lives longer, in the plain and the strict check, and takes
/// one that does not. A maximum of whole seconds is exact: it takes a token
/// that lives exactly as long and refuses one a second longer (only a
/// maximum with a fraction of a second is rounded up to the next second).
#[test]
fn a_lower_maximum_token_life_refuses_longer_outstanding_tokens() {
    let clock = ManualClock::new(T0 + Duration::milliseconds(300));
    let store = Arc::new(MemoryStore::new());
    let with_max = |max: Duration| {
        KeyRing::builder("acme")
            .clock(clock.clone())
            .signing_key(1, SIGNING)
            .max_token_ttl(max)
            .flush_interval(None)
            .build(Arc::clone(&store))
            .expect("ring builds")
    };
    let ring = with_max(Duration::hours(1));
    let issued = ring.issue(NewKey::new("acct_1")).unwrap();
    let long = ring
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .unwrap();
    let short = ring
        .exchange(issued.secret.expose(), Duration::minutes(10))
        .unwrap();
    let exact = ring
        .exchange(issued.secret.expose(), Duration::minutes(15))
        .unwrap();
    let longer = ring
        .exchange(
            issued.secret.expose(),
            Duration::minutes(15) + Duration::seconds(1),
        )
        .unwrap();
    assert_eq!(
        longer.claims.expires_at - longer.claims.issued_at,
        Duration::minutes(15) + Duration::seconds(1)
    );
    let lowered = with_max(Duration::minutes(15));
    for check in [
        KeyRing::verify_access_token,
        KeyRing::verify_access_token_strict,
    ] {
        assert!(check(&lowered, exact.expose()).is_ok());
        assert_eq!(
            check(&lowered, longer.expose()).unwrap_err(),
            VerifyError::Expired
        );
        assert_eq!(
            check(&lowered, long.expose()).unwrap_err(),
            VerifyError::Expired
        );
        assert!(check(&lowered, short.expose()).is_ok());
        assert!(check(&ring, long.expose()).is_ok());
    }
    // A maximum with a fraction of a second takes the tokens its own
    // exchanges sign (their ends are rounded to whole seconds).
    let fractional = with_max(Duration::minutes(10) + Duration::milliseconds(800));
    let signed = fractional
        .exchange(issued.secret.expose(), Duration::hours(1))
        .unwrap();
    assert!(fractional.verify_access_token(signed.expose()).is_ok());
}

/// The README tells a service that takes keys and tokens in one header to
/// tell them apart by length: the shortest token (one-letter prefix and
/// owner, no scopes) is longer than the longest key (a 32-character
/// prefix), which is `MAX_KEY_LEN` long.
#[test]
fn every_token_is_longer_than_any_key() {
    let clock = ManualClock::new(T0);
    let short = ring("a", &clock);
    let issued = short.issue(NewKey::new("o")).unwrap();
    let token = short
        .exchange(issued.secret.expose(), Duration::seconds(1))
        .unwrap();
    assert!(
        token.expose().len() > MAX_KEY_LEN,
        "{}",
        token.expose().len()
    );
    let long = ring(&"a".repeat(MAX_PREFIX_LEN), &clock);
    let longest = long.issue(NewKey::new("o")).unwrap();
    assert_eq!(longest.secret.expose().len(), MAX_KEY_LEN);
}

/// A refused token's event names the key it was exchanged for and, for
/// the strict check, that key's owner, from the store (not from the
/// token's unchecked claims). The plain check, which never reads the
/// store, names the key only.
#[test]
fn a_refused_token_reports_the_owner_of_its_key() {
    let clock = ManualClock::new(T0);
    let (ring, log) = logged_ring("acme", &clock);
    let issued = ring.issue(NewKey::new("acct_9")).unwrap();
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(5))
        .unwrap();
    ring.revoke(issued.key.id(), "rotated out").unwrap();
    assert_eq!(
        ring.verify_access_token_strict(token.expose()).unwrap_err(),
        VerifyError::Revoked
    );
    let events = log.events();
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::VerifyFailed(VerifyError::Revoked));
    assert_eq!(last.key, Some(issued.key.id()));
    assert_eq!(last.owner.as_deref(), Some("acct_9"));

    // The plain check: refused for a revoke-all, named by id only.
    let other = ring.issue(NewKey::new("acct_9")).unwrap();
    let token = ring
        .exchange(other.secret.expose(), Duration::minutes(5))
        .unwrap();
    clock.advance(Duration::seconds(1));
    ring.revoke_all().unwrap();
    assert_eq!(
        ring.verify_access_token(token.expose()).unwrap_err(),
        VerifyError::Revoked
    );
    let events = log.events();
    let last = events.last().unwrap();
    assert_eq!(last.kind, EventKind::VerifyFailed(VerifyError::Revoked));
    assert_eq!((last.key, last.owner.clone()), (Some(other.key.id()), None));
}

// ---------------------------------------------------------------------------
// A clock that goes back (an NTP step, a restored VM)
// ---------------------------------------------------------------------------

/// A regeneration stops the tokens of the secrets before it for good: a
/// second regeneration on a clock that went back meanwhile must not move
/// the cut earlier and bring back tokens the first one stopped.
#[test]
fn a_regeneration_on_a_clock_gone_back_keeps_older_tokens_dead() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    clock.set(T0 + Duration::seconds(5));
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .expect("exchange");
    clock.set(T0 + Duration::seconds(10));
    ring.regenerate(issued.key.id()).expect("regenerate");
    assert_eq!(
        refused(ring.verify_access_token_strict(token.expose())),
        VerifyError::Revoked
    );
    // The clock steps back a minute; the key is regenerated again.
    clock.set(T0 - Duration::minutes(1));
    ring.regenerate(issued.key.id()).expect("regenerate again");
    assert_eq!(
        refused(ring.verify_access_token_strict(token.expose())),
        VerifyError::Revoked,
        "a token of a secret two regenerations old"
    );
}

/// A first regeneration on a clock that went back since the exchange
/// (the token carries a later second than the regeneration's reading)
/// still stops the tokens of the old secret: the cut reaches the key's
/// last use, which every exchange stamps with its token's second.
#[test]
fn a_regeneration_on_a_clock_gone_back_stops_tokens_exchanged_before_it() {
    let clock = ManualClock::new(T0 + Duration::seconds(5));
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .expect("exchange");
    // The clock steps back a minute; the key is regenerated.
    clock.set(T0 - Duration::minutes(1));
    let regenerated = ring.regenerate(issued.key.id()).expect("regenerate");
    assert_eq!(
        refused(ring.verify_access_token_strict(token.expose())),
        VerifyError::Revoked,
        "a token of the old secret"
    );
    // Fail closed: the new secret gets no token before the clock is past
    // the old secret's last exchange, then one that verifies.
    assert!(matches!(
        ring.exchange(regenerated.secret.expose(), Duration::minutes(5)),
        Err(Error::RegeneratedThisSecond(_))
    ));
    clock.set(T0 + Duration::seconds(6));
    let fresh = ring
        .exchange(regenerated.secret.expose(), Duration::minutes(5))
        .expect("exchange with the new secret");
    ring.verify_access_token_strict(fresh.expose())
        .expect("a token of the new secret");
}

/// The revoke-all instant only moves forward, like the epoch: a second
/// `revoke_all` on a clock that went back must not let a ring that loads
/// the settings (another ring on the store, or this one restarted) take
/// tokens the first one revoked.
#[test]
fn a_revoke_all_on_a_clock_gone_back_keeps_earlier_tokens_revoked() {
    let clock = ManualClock::new(T0);
    let store = Arc::new(MemoryStore::new());
    let build = || ring_on("acme", &clock, Arc::clone(&store));
    let ring = build();
    let issued = invoices_key(&ring);
    clock.set(T0 + Duration::seconds(5));
    let token = ring
        .exchange(issued.secret.expose(), Duration::minutes(30))
        .expect("exchange");
    clock.set(T0 + Duration::seconds(10));
    ring.revoke_all().expect("revoke all");
    assert_eq!(
        refused(ring.verify_access_token(token.expose())),
        VerifyError::Revoked
    );
    // The clock steps back a minute; every key is revoked again.
    clock.set(T0 - Duration::minutes(1));
    ring.revoke_all().expect("revoke all again");
    assert_eq!(
        refused(ring.verify_access_token(token.expose())),
        VerifyError::Revoked,
        "this ring"
    );
    let restarted = build();
    assert_eq!(
        refused(restarted.verify_access_token(token.expose())),
        VerifyError::Revoked,
        "a ring that loaded the settings"
    );
    assert!(
        restarted.settings().revoked_all_at() >= Some(T0 + Duration::seconds(10)),
        "the revoke-all instant moved back"
    );
}

/// A rotation's successor is a new key with its own id, never
/// regenerated: no token of its id was exchanged with an older secret, so
/// an exchange in the second its predecessor was regenerated in is not
/// refused as one of a regenerated key.
#[test]
fn a_successor_is_exchanged_in_the_second_its_predecessor_was_regenerated_in() {
    let clock = ManualClock::new(T0);
    let ring = ring("acme", &clock);
    let issued = invoices_key(&ring);
    clock.set(T0 + Duration::milliseconds(300));
    ring.regenerate(issued.key.id()).expect("regenerate");
    clock.set(T0 + Duration::milliseconds(500));
    let successor = ring
        .rotate(issued.key.id(), Duration::ZERO)
        .expect("rotate");
    clock.set(T0 + Duration::milliseconds(700));
    let token = ring
        .exchange(successor.secret.expose(), Duration::minutes(5))
        .expect("the successor was never regenerated");
    assert_eq!(
        ring.verify_access_token_strict(token.expose())
            .expect("strict")
            .key_id,
        successor.key.id()
    );
}
