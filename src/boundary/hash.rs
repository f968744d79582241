//! A small, fast, non-cryptographic hasher for the boundary's lookup tables.
//!
//! The tables are built once from the trusted policy and only *probed* with attacker-chosen names,
//! so hash flooding cannot grow them; SipHash's protection buys nothing here and costs ~15 ns a
//! lookup. The multiply-rotate scheme is the one rustc's `FxHasher` uses.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Fx-style hasher: fold 8 bytes at a time with rotate, xor and multiply.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` keyed by names from the policy, probed with borrowed `&str`.
pub(crate) type NameMap<V> = HashMap<Box<str>, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_exact_byte_matches() {
        let mut m: NameMap<u32> = NameMap::default();
        m.insert("send_email".into(), 1);
        m.insert("read_document".into(), 2);
        assert_eq!(m.get("send_email"), Some(&1));
        assert_eq!(m.get("send_email "), None);
        assert_eq!(m.get("Send_email"), None);
        assert_eq!(m.get("send_emai"), None);
        assert_eq!(m.get("sеnd_email"), None); // Cyrillic е
    }

    #[test]
    fn tail_length_changes_the_hash() {
        let h = |b: &[u8]| {
            let mut h = FastHasher::default();
            h.write(b);
            h.finish()
        };
        assert_ne!(h(b"a"), h(b"a\0"));
        assert_ne!(h(b"abcdefgh"), h(b"abcdefgh\0"));
    }
}
