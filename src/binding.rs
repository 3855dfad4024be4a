//! Request bindings: a key that works only with a given client certificate,
//! or only from given networks, in addition to its secret.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, echo};

/// The SHA-256 fingerprint of a client certificate's DER encoding, as TLS
/// layers report it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

impl CertFingerprint {
    /// The fingerprint of a certificate in DER form.
    pub fn of_der(der: &[u8]) -> CertFingerprint {
        CertFingerprint(Sha256::digest(der).into())
    }

    /// Parses 64 hex digits in a row, or 32 pairs of them separated by `:`
    /// (as `openssl x509 -fingerprint -sha256` prints them), in either
    /// case. Colons anywhere else are refused.
    pub fn from_hex(text: &str) -> Result<CertFingerprint, Error> {
        let invalid =
            || Error::InvalidBinding(format!("not a SHA-256 fingerprint: `{}`", echo(text, 100)));
        let bytes = text.as_bytes();
        let digits: Vec<u8> = if bytes.len() == 64 {
            bytes.to_vec()
        } else if bytes.len() == 95
            && bytes
                .iter()
                .enumerate()
                .all(|(i, &b)| (b == b':') == (i % 3 == 2))
        {
            bytes.iter().copied().filter(|&b| b != b':').collect()
        } else {
            return Err(invalid());
        };
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let hex = std::str::from_utf8(pair).map_err(|_| invalid())?;
            *slot = u8::from_str_radix(hex, 16).map_err(|_| invalid())?;
        }
        Ok(CertFingerprint(out))
    }

    fn matches(&self, other: &CertFingerprint) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    /// Whether this is the fingerprint of empty input, which no
    /// certificate has (a DER certificate is never empty): what a host
    /// gets when it hashes the certificate of a connection that presented
    /// none as `&[]`.
    pub(crate) fn is_of_nothing(&self) -> bool {
        self.0 == OF_NOTHING
    }
}

/// SHA-256 of the empty input.
const OF_NOTHING: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

impl FromStr for CertFingerprint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        CertFingerprint::from_hex(s)
    }
}

/// An IPv4 or IPv6 network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`; a
/// bare address is a network of one).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses CIDR notation. Host bits must be zero (`10.0.0.1/8` is
    /// refused, as a likely typo), and the prefix length is decimal
    /// without a leading zero (`/08` is refused, as `IpAddr` refuses the
    /// octet `08`).
    pub fn parse(text: &str) -> Result<Network, Error> {
        let invalid = |why: &str| {
            Error::InvalidBinding(format!("invalid network `{}`: {why}", echo(text, 100)))
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| invalid("not an ip address"))?;
        if addr.to_canonical() != addr {
            return Err(invalid("write an IPv4-mapped network as IPv4"));
        }
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Decimal without a leading zero, as `IpAddr` reads an
            // octet: `/010` is not `/10` to every reader.
            Some(p)
                if !p.is_empty()
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && p.len() <= 3
                    && (p == "0" || !p.starts_with('0')) =>
            {
                p.parse::<u8>().map_err(|_| invalid("bad prefix length"))?
            }
            Some(_) => return Err(invalid("bad prefix length")),
        };
        if prefix > max {
            return Err(invalid("prefix length too long"));
        }
        let network = Network { addr, prefix };
        if network.masked(addr) != bits(addr) {
            return Err(invalid("host bits are set"));
        }
        Ok(network)
    }

    /// Whether `peer` is inside the network. An IPv4 address given as an
    /// IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) counts as IPv4.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        peer.is_ipv4() == self.addr.is_ipv4() && self.masked(peer) == bits(self.addr)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(width - self.prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            u128::MAX << host_bits
        };
        bits(ip) & mask
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Network({self})")
    }
}

impl FromStr for Network {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Network::parse(s)
    }
}

/// What a request must present besides the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Bindings {
    /// The client certificate the request must present, if any. A
    /// presented fingerprint of empty input (`client_cert_der(&[])`) counts
    /// as no certificate: no certificate has an empty DER, so a binding to
    /// that fingerprint would admit no request (`issue`, `update` and an
    /// import refuse one).
    pub client_cert: Option<CertFingerprint>,
    /// The networks the request must come from; empty for any.
    pub networks: Vec<Network>,
}

impl Bindings {
    pub(crate) fn is_empty(&self) -> bool {
        self.client_cert.is_none() && self.networks.is_empty()
    }

    /// The first binding the request breaks, if any. Both must hold. The
    /// fingerprint of empty input is no certificate (see `client_cert`).
    pub(crate) fn check(
        &self,
        cert: Option<CertFingerprint>,
        peer: Option<IpAddr>,
    ) -> Result<(), Binding> {
        if let Some(required) = &self.client_cert
            && !cert.is_some_and(|c| !c.is_of_nothing() && required.matches(&c))
        {
            return Err(Binding::ClientCertificate);
        }
        if !self.networks.is_empty()
            && !peer.is_some_and(|p| self.networks.iter().any(|n| n.contains(p)))
        {
            return Err(Binding::Network);
        }
        Ok(())
    }
}

/// Which binding a request broke.
///
/// Serialized as its variant's name in snake case: `"client_certificate"`,
/// `"network"`, `"not_presented"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Binding {
    /// The client certificate was missing or not the bound one.
    ClientCertificate,
    /// The peer address was missing or outside the allowed networks.
    Network,
    /// A token of a bound key was checked by
    /// [`verify_access_token`](crate::KeyRing::verify_access_token), which
    /// takes no request and looks no key up, so it cannot check bindings.
    /// The strict checks look the key's bindings up and, as `verify` does
    /// for the key itself, report the one the request lacks
    /// (`ClientCertificate`, `Network`), also when given no request
    /// ([`verify_access_token_strict`](crate::KeyRing::verify_access_token_strict)).
    NotPresented,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Binding::ClientCertificate => "client certificate",
            Binding::Network => "network",
            Binding::NotPresented => "no request context for a bound key",
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingsRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    networks: Vec<String>,
}

impl Serialize for Bindings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        BindingsRepr {
            client_cert: self.client_cert.map(|c| c.to_string()),
            networks: self.networks.iter().map(ToString::to_string).collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Bindings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = BindingsRepr::deserialize(deserializer)?;
        Ok(Bindings {
            client_cert: r
                .client_cert
                .map(|c| CertFingerprint::from_hex(&c))
                .transpose()
                .map_err(serde::de::Error::custom)?,
            networks: r
                .networks
                .iter()
                .map(|n| Network::parse(n))
                .collect::<Result<_, _>>()
                .map_err(serde::de::Error::custom)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_edges_and_nothing_else() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains(ip("10.1.0.0")));
        assert!(n.contains(ip("10.1.255.255")));
        assert!(!n.contains(ip("10.0.255.255")));
        assert!(!n.contains(ip("10.2.0.0")));
        assert!(n.contains(ip("::ffff:10.1.2.3")));
        assert!(!n.contains(ip("::1")));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8::")));
        assert!(v6.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!v6.contains(ip("2001:db9::")));
        assert!(!v6.contains(ip("10.1.2.3")));
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("255.255.255.255"))
        );
        assert!(Network::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        let one = Network::parse("192.168.1.7").unwrap();
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
    }

    #[test]
    fn malformed_networks_are_refused() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.1/8",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/-1",
            "10.0.0.0/08a",
            "10.0.0.0/+8",
            "10.0.0.0/0008",
            "x/8",
            "2001:db8::1/32",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Network::parse("10.0.0.1/8").unwrap_err().to_string(),
            "invalid binding: invalid network `10.0.0.1/8`: host bits are set"
        );
    }

    #[test]
    fn fingerprints() {
        let fp = CertFingerprint::of_der(b"certificate");
        assert_eq!(CertFingerprint::from_hex(&fp.to_string()).unwrap(), fp);
        let colons: String = fp
            .to_string()
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(CertFingerprint::from_hex(&colons).unwrap(), fp);
        for bad in ["", "abc", &"g".repeat(64), &"0".repeat(63)] {
            assert!(CertFingerprint::from_hex(bad).is_err(), "{bad}");
        }
    }

    /// Colons are accepted only between the 32 pairs, one each.
    #[test]
    fn fingerprint_colons_only_between_pairs() {
        let hex = CertFingerprint::of_der(b"certificate").to_string();
        let leading = format!(":{hex}");
        let trailing = format!("{hex}:");
        let doubled = format!("{}::{}", &hex[..2], &hex[2..]);
        let mid_pair = format!("{}:{}", &hex[..1], &hex[1..]);
        let one_colon = format!("{}:{}", &hex[..2], &hex[2..]);
        let mut scattered = String::new();
        for (i, c) in hex.chars().enumerate() {
            scattered.push(c);
            if i % 4 == 3 && i != 63 {
                scattered.push(':');
            }
        }
        let misplaced: String = {
            // 95 characters, 31 colons, but one of them inside a pair.
            let pairs: Vec<&str> = (0..32).map(|i| &hex[2 * i..2 * i + 2]).collect();
            let mut s = pairs.join(":");
            s.replace_range(2..4, &format!("{}:", &hex[2..3]));
            s
        };
        assert_eq!(misplaced.len(), 95);
        for bad in [
            &leading,
            &trailing,
            &doubled,
            &mid_pair,
            &one_colon,
            &scattered,
            &misplaced,
            &":".repeat(95),
        ] {
            assert!(CertFingerprint::from_hex(bad).is_err(), "{bad}");
        }
    }

    /// A request that hashed "no certificate" as empty input presents
    /// none, also to a key bound to that fingerprint.
    #[test]
    fn the_fingerprint_of_nothing_is_no_certificate() {
        let nothing = CertFingerprint::of_der(b"");
        assert!(nothing.is_of_nothing());
        assert!(!CertFingerprint::of_der(b"\0").is_of_nothing());
        let b = Bindings {
            client_cert: Some(nothing),
            networks: vec![],
        };
        assert_eq!(
            b.check(Some(nothing), None),
            Err(Binding::ClientCertificate)
        );
        assert_eq!(b.check(None, None), Err(Binding::ClientCertificate));
    }

    /// `Debug` names the type and shows the value as `Display` does (a
    /// fingerprint and a network are public, unlike a key).
    #[test]
    fn debug_shows_the_type_and_the_value() {
        let fp = CertFingerprint::of_der(b"abc");
        assert_eq!(
            format!("{fp:?}"),
            "CertFingerprint(ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad)"
        );
        let v4 = Network::parse("10.0.0.0/8").unwrap();
        assert_eq!(format!("{v4:?}"), "Network(10.0.0.0/8)");
        let v6 = Network::parse("2001:db8::42").unwrap();
        assert_eq!(format!("{v6:?}"), "Network(2001:db8::42/128)");
    }

    #[test]
    fn bindings_check_both() {
        let fp = CertFingerprint::of_der(b"right");
        let b = Bindings {
            client_cert: Some(fp),
            networks: vec![Network::parse("10.0.0.0/8").unwrap()],
        };
        assert_eq!(b.check(Some(fp), Some(ip("10.2.3.4"))), Ok(()));
        assert_eq!(
            b.check(None, Some(ip("10.2.3.4"))),
            Err(Binding::ClientCertificate)
        );
        assert_eq!(
            b.check(
                Some(CertFingerprint::of_der(b"wrong")),
                Some(ip("10.2.3.4"))
            ),
            Err(Binding::ClientCertificate)
        );
        assert_eq!(b.check(Some(fp), None), Err(Binding::Network));
        assert_eq!(
            b.check(Some(fp), Some(ip("11.0.0.1"))),
            Err(Binding::Network)
        );
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Bindings>(&json).unwrap(), b);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// An IPv4 network holds the addresses whose first `prefix` bits
        /// are its own, also written IPv4-mapped, and no other IPv6
        /// address. `near` keeps the network's bits, to reach its inside.
        #[test]
        fn ipv4_networks_hold_their_prefix(
            net: u32,
            prefix in 0u8..=32,
            peer: u32,
            near: bool,
            mapped: bool,
        ) {
            let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
            let network = Network::parse(&format!("{}/{prefix}", Ipv4Addr::from(net & mask))).unwrap();
            let peer = if near { (net & mask) | (peer & !mask) } else { peer };
            let v4 = Ipv4Addr::from(peer);
            let shown = if mapped { IpAddr::V6(v4.to_ipv6_mapped()) } else { IpAddr::V4(v4) };
            proptest::prop_assert_eq!(network.contains(shown), peer & mask == net & mask);
            proptest::prop_assert!(!network.contains(IpAddr::V6(Ipv6Addr::from(u128::from(peer)))));
        }

        /// An IPv6 network holds the addresses whose first `prefix` bits are
        /// its own, except IPv4-mapped ones, which count as IPv4; a network
        /// written IPv4-mapped is refused.
        #[test]
        fn ipv6_networks_hold_their_prefix(net: u128, prefix in 0u8..=128, peer: u128, near: bool) {
            let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
            let addr = Ipv6Addr::from(net & mask);
            let Ok(network) = Network::parse(&format!("{addr}/{prefix}")) else {
                proptest::prop_assert!(addr.to_ipv4_mapped().is_some());
                return Ok(());
            };
            let peer = Ipv6Addr::from(if near { (net & mask) | (peer & !mask) } else { peer });
            let inside = u128::from(peer) & mask == net & mask;
            proptest::prop_assert_eq!(
                network.contains(IpAddr::V6(peer)),
                inside && peer.to_ipv4_mapped().is_none()
            );
        }
    }
}
