//! The public types read from JSON or parsed from text: no panic, and what
//! reads back writes a form that reads back to an equal value. The first
//! byte picks the type.
#![no_main]

use std::fmt::{Debug, Display};
use std::str::FromStr;

use keyward::store::RingSettings;
use keyward::{
    Bindings, CertFingerprint, ExpiryPolicy, Key, KeyHash, KeyId, ListCursor, Network, Scope,
    ScopeSet, StoredKey,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn json<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let written = serde_json::to_vec(&value).expect("a value read writes");
        let again: T = serde_json::from_slice(&written).expect("what was written reads back");
        assert_eq!(value, again, "a JSON round trip changed the value");
    }
}

fn text<T: FromStr + Display + PartialEq + Debug>(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = s.parse::<T>() {
        let again: T = value
            .to_string()
            .parse()
            .unwrap_or_else(|_| panic!("a shown value parses back"));
        assert_eq!(value, again, "a text round trip changed the value");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 14 {
        0 => json::<ExpiryPolicy>(rest),
        1 => json::<ScopeSet>(rest),
        2 => json::<Scope>(rest),
        3 => json::<Key>(rest),
        4 => json::<StoredKey>(rest),
        5 => json::<RingSettings>(rest),
        6 => json::<Bindings>(rest),
        7 => json::<KeyHash>(rest),
        8 => json::<KeyId>(rest),
        9 => json::<ListCursor>(rest),
        10 => text::<KeyId>(rest),
        11 => text::<Scope>(rest),
        12 => text::<Network>(rest),
        _ => {
            text::<CertFingerprint>(rest);
            text::<ListCursor>(rest);
        }
    }
});
