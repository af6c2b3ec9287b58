//! Byte searches eight bytes at a time in a `u64` (SIMD within a register), for the short
//! fields and records of the hot paths, where a call into a vectorised search costs more than
//! the search.

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW_SEVEN: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The eight bytes from `at` as a little-endian word; bytes past the end read as zeros.
pub fn word_at(bytes: &[u8], at: usize) -> u64 {
    let eight = |from: usize| u64::from_le_bytes(bytes[from..from + 8].try_into().expect("8"));
    match bytes.len().checked_sub(at) {
        Some(8..) => eight(at),
        // The last eight bytes, shifted down past those before `at`.
        Some(rest @ 1..) if bytes.len() >= 8 => eight(bytes.len() - 8) >> (8 * (8 - rest)),
        _ => {
            (bytes[at.min(bytes.len())..].iter().rev()).fold(0, |word, &b| word << 8 | u64::from(b))
        }
    }
}

/// The high bit of every byte of `word` equal to `byte`, and no other bit (exact: no carries
/// cross bytes).
pub fn matches(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !((x & LOW_SEVEN).wrapping_add(LOW_SEVEN) | x) & HIGH
}

/// Whether `bytes` holds any of `wanted` (none of which may be zero: the padding is zeros).
pub fn contains_any<const N: usize>(bytes: &[u8], wanted: [u8; N]) -> bool {
    debug_assert!(!wanted.contains(&0));
    let mut at = 0;
    while at < bytes.len() {
        let word = word_at(bytes, at);
        if wanted.iter().fold(0, |hits, &b| hits | matches(word, b)) != 0 {
            return true;
        }
        at += 8;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exactly_the_bytes_asked_for_at_every_position() {
        for len in 0..20 {
            for at in 0..len {
                for byte in [b',', b'"', b'\n', 0x80, 0xff, 0x01] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let found: Vec<usize> = (0..len)
                        .step_by(8)
                        .flat_map(|at| {
                            let mut bits = matches(word_at(&bytes, at), byte);
                            std::iter::from_fn(move || {
                                (bits != 0).then(|| {
                                    let found = at + bits.trailing_zeros() as usize / 8;
                                    bits &= bits - 1;
                                    found
                                })
                            })
                        })
                        .collect();
                    assert_eq!(found, [at], "{byte} at {at} of {len}");
                    assert!(contains_any(&bytes, [b'x', byte]));
                    assert!(!contains_any(&bytes, [b'x', b'y']));
                }
            }
        }
    }
}
