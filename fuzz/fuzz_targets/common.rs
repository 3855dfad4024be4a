//! What the targets share.

/// `base` with `over` written on it from a place `at` picks, growing it
/// where `over` runs past its end: a valid input with damage in one place,
/// so the fuzzer starts past the checks any stray bytes fail.
pub fn overwrite(base: &[u8], at: u8, over: &[u8]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    let at = usize::from(at) * (bytes.len() + 1) / 256;
    for (i, b) in over.iter().enumerate() {
        match bytes.get_mut(at + i) {
            Some(slot) => *slot = *b,
            None => bytes.push(*b),
        }
    }
    bytes
}
