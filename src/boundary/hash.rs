//! A small open-addressing name table for the boundary's lookups.
//!
//! The table is built once from the trusted policy and only *probed* with attacker-chosen names, so
//! hash flooding cannot grow it and SipHash's protection buys nothing; an Fx-style multiply-rotate
//! hash (the one rustc uses) keeps a lookup to a few nanoseconds. Entries store the full 64-bit
//! hash, so a probe compares bytes only when the hashes agree, and then with [`short_eq`] rather
//! than a `memcmp` call. Names must match byte for byte: no case folding, trimming or Unicode
//! normalisation ever happens here.

use super::view::short_eq;

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Hashes a name: 8 bytes at a time, the tail read as at most two overlapping loads (the last 8
/// bytes of a name of 8 or more, or the first and last 4 or 2 bytes of a shorter one: every byte
/// is covered, so for one length the words determine the name), the length folded in so `"a"`
/// and `"a\0"` differ. A byte-at-a-time tail cost ~25 of the ~100 instructions of a lookup.
#[inline]
pub(crate) fn hash_name(bytes: &[u8]) -> u64 {
    let n = bytes.len();
    let mut h: u64 = 0;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(5) ^ word8(c)).wrapping_mul(SEED);
    }
    let tail = if chunks.remainder().is_empty() {
        0
    } else if n >= 8 {
        word8(&bytes[n - 8..])
    } else if n >= 4 {
        word4(&bytes[..4]) | word4(&bytes[n - 4..]) << 32
    } else if n >= 2 {
        word2(&bytes[..2]) | word2(&bytes[n - 2..]) << 16
    } else {
        u64::from(bytes[0])
    };
    h = (h.rotate_left(5) ^ tail ^ ((n as u64) << 56)).wrapping_mul(SEED);
    h ^ (h >> 29)
}

#[inline]
fn word8(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

#[inline]
fn word4(b: &[u8]) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u64::from(u32::from_le_bytes(w))
}

#[inline]
fn word2(b: &[u8]) -> u64 {
    u64::from(b[0]) | u64::from(b[1]) << 8
}

#[derive(Debug, Clone)]
struct Slot {
    hash: u64,
    name: Box<str>,
    value: u32,
}

/// Maps names to `u32` indices. Built once, then read-only.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameTable {
    slots: Vec<Option<Slot>>,
    mask: usize,
}

impl NameTable {
    /// Builds a table; later duplicates of a name are ignored (callers reject them first).
    pub(crate) fn build<'n>(names: impl IntoIterator<Item = (&'n str, u32)>) -> Self {
        let names: Vec<(&str, u32)> = names.into_iter().collect();
        // Load factor <= 1/2 keeps probe sequences short.
        let cap = (names.len() * 2).next_power_of_two().max(8);
        let mut slots: Vec<Option<Slot>> = vec![None; cap];
        let mask = cap - 1;
        for (name, value) in names {
            let hash = hash_name(name.as_bytes());
            let mut i = hash as usize & mask;
            loop {
                match &slots[i] {
                    None => {
                        slots[i] = Some(Slot {
                            hash,
                            name: name.into(),
                            value,
                        });
                        break;
                    }
                    Some(s) if &*s.name == name => break,
                    Some(_) => i = (i + 1) & mask,
                }
            }
        }
        Self { slots, mask }
    }

    /// The value stored under exactly `name`.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let hash = hash_name(name.as_bytes());
        let mut i = hash as usize & self.mask;
        loop {
            match self.slots.get(i)? {
                None => return None,
                Some(s) if s.hash == hash && short_eq(s.name.as_bytes(), name.as_bytes()) => {
                    return Some(s.value);
                }
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_exact_byte_matches() {
        let m = NameTable::build([("send_email", 1), ("read_document", 2)]);
        assert_eq!(m.get("send_email"), Some(1));
        assert_eq!(m.get("read_document"), Some(2));
        assert_eq!(m.get("send_email "), None);
        assert_eq!(m.get("Send_email"), None);
        assert_eq!(m.get("send_emai"), None);
        assert_eq!(m.get("sеnd_email"), None); // Cyrillic е
        assert_eq!(m.get(""), None);
        assert_eq!(NameTable::default().get("x"), None);
    }

    #[test]
    fn full_table_of_many_names_finds_each_exactly_once() {
        let names: Vec<String> = (0..1000).map(|i| format!("tool_{i}")).collect();
        let m = NameTable::build(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i as u32)),
        );
        for (i, n) in names.iter().enumerate() {
            assert_eq!(m.get(n), Some(i as u32));
        }
        assert_eq!(m.get("tool_1000"), None);
        assert_eq!(m.get("tool_01"), None);
    }

    #[test]
    fn tail_and_length_change_the_hash() {
        assert_ne!(hash_name(b"a"), hash_name(b"a\0"));
        assert_ne!(hash_name(b"abcdefgh"), hash_name(b"abcdefgh\0"));
        assert_ne!(hash_name(b""), hash_name(b"\0"));
    }

    #[test]
    fn names_of_one_length_differing_in_any_byte_hash_apart() {
        // The tail is read with overlapping loads: every byte must still reach the hash.
        for len in 1..=20usize {
            let base: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            for at in 0..len {
                let mut other = base.clone();
                other[at] = b'Z';
                assert_ne!(hash_name(&base), hash_name(&other), "{len} {at}");
            }
        }
    }
}
