//! `scan` and `redact` on any text: no panic, every range found lies on
//! character boundaries inside the text, finds come in order with secret
//! ranges that never overlap, and nothing `scan` finds is left in
//! `redact`'s output.
#![no_main]

use keyward::{redact, scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let found = scan(text);
    // Two finds' ranges may overlap (a string with a valid checksum that
    // runs into the next key's prefix, which then starts inside it: see
    // `scan`'s docs); their secret ranges never do, and each find ends
    // after the one before.
    let mut last_end = 0;
    for hit in &found {
        assert!(
            hit.secret_range.start >= last_end,
            "secret ranges overlap or go back"
        );
        assert!(hit.range.start <= hit.secret_range.start);
        assert!(hit.secret_range.end <= hit.range.end);
        assert!(
            text.get(hit.range.clone()).is_some(),
            "range off a boundary"
        );
        assert!(text.get(hit.secret_range.clone()).is_some());
        last_end = hit.range.end;
    }
    let redacted = redact(text);
    assert!(scan(&redacted).is_empty(), "a key survived redaction");
    if found.is_empty() {
        assert_eq!(redacted, text);
    }
});
