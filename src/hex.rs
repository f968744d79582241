//! Lowercase hex encoding and decoding, shared by the audit writer, the file sink, the escalation
//! types and the token nonces.

/// The sixteen lowercase hex digits.
pub(crate) const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Every byte's two hex digits: one table lookup per byte instead of two shifts and lookups
/// (every audit record writes a 64-digit policy version; measured with `benches/icount.rs`).
const PAIRS: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    t
};

/// Appends `bytes` as lowercase hex to `out`, 32 bytes (64 digits) per copy.
pub(crate) fn encode_into(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.chunks(32) {
        let mut buf = [0u8; 64];
        encode_to_slice(&mut buf, chunk);
        out.extend_from_slice(&buf[..2 * chunk.len()]);
    }
}

/// Writes `bytes` as lowercase hex into the first `2 * bytes.len()` bytes of `out` (the rest of
/// `out`, if any, is left as it was; a shorter `out` gets only the digits that fit).
pub(crate) fn encode_to_slice(out: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
}

/// `bytes` as a lowercase hex string.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    encode_into(&mut out, bytes);
    // Only ASCII hex digits were written.
    String::from_utf8(out).unwrap_or_default()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes an even number of lower- or upper-case hex digits.
pub(crate) fn decode(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// Decodes exactly `2 * N` lower- or upper-case hex digits.
pub(crate) fn decode_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_input() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode(&bytes), "0001abff");
        let long: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(encode(&long).as_bytes()), Some(long));
        assert_eq!(decode_array::<4>("0001abff"), Some(bytes));
        assert_eq!(decode_array::<4>("0001ABFF"), Some(bytes));
        assert_eq!(decode_array::<4>("0001abf"), None);
        assert_eq!(decode_array::<4>("0001abfg"), None);
        assert_eq!(decode_array::<4>("0001abff00"), None);
        assert_eq!(decode(b"abc"), None);
        assert_eq!(decode(b"zz"), None);
    }

    /// Every byte value in every position, and every length around a 32-byte chunk, against
    /// `format!`.
    #[test]
    fn encodes_every_byte_in_every_position_like_format() {
        let reference = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        for v in 0..=255u8 {
            for at in 0..4 {
                let mut quad = [0x5a, 0xa5, 0x0f, 0xf0];
                quad[at] = v;
                assert_eq!(encode(&quad), reference(&quad), "byte {v:#04x} at {at}");
            }
        }
        let long: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
        for len in (0..=40).chain([63, 64, 65]) {
            assert_eq!(encode(&long[..len]), reference(&long[..len]));
        }
        assert_eq!(encode(&long), reference(&long));
    }
}
