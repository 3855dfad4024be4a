//! What the benches share: the key prefix, a small generator, and base62
//! text of a number (for forging key strings with a valid checksum).

/// The prefix of every bench ring's keys.
pub const PREFIX: &str = "bench";
/// The base62 digits, in keyward's order.
pub const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A small deterministic generator (xorshift) for drawing keys and classes.
pub struct Rng(pub u64);

impl Rng {
    /// The next value; the seed must not be zero.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `v` in exactly `width` base62 digits, zero-padded on the left.
pub fn base62(mut v: u64, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(out).expect("base62 is ASCII")
}
