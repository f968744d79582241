//! The one-pass validator behind [`RawJson::parse`](super::RawJson::parse).
//!
//! Hand-written for a measured need: the boundary validates every raw tool-call argument text
//! on the check path. Before this version (one byte at a time, every key through a hashed Bloom
//! filter, a second pass for the rules) the 58-byte, three-rule argument of the benches cost
//! 5,584 instructions per check (callgrind, `benches/icount.rs`), of which ~1,800 were
//! validation. Strings are now scanned eight bytes at a time, small objects find duplicate keys
//! by comparing with the (few) keys already seen in the same object, and the root object's
//! members are recorded as they are validated so the rules need no second pass (see
//! [`KeyTable`]). The guarantees are unchanged: duplicate keys compared after unescaping, RFC 8259
//! strictness, depth and size limits, the same typed errors at the same offsets.

use std::hash::{BuildHasher, Hasher, RandomState};

use super::{JsonError, JsonStr, MAX_DEPTH_CAP, MAX_KEYS, ObjectIter, hex4, skip_ws};

/// Keys an object may hold before its duplicate detection moves from pairwise comparison to the
/// Bloom filter (pairwise: at most this many length checks per key).
const PAIRWISE_MAX: usize = 16;
/// Keys of the open objects remembered for pairwise comparison (all open objects together).
pub(crate) const KEY_TABLE: usize = 32;
/// Marks an object whose keys go through the Bloom filter (in its `frames` entry).
const BLOOM: u16 = 1 << 15;

/// One remembered object member: the key's content span (between the quotes), whether it has
/// escapes, and the span of its value (set when the value ends).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeySpan {
    pub(crate) key_start: u32,
    pub(crate) key_end: u32,
    pub(crate) val_start: u32,
    pub(crate) val_end: u32,
    pub(crate) escaped: bool,
}

/// The validator's memory of the keys of the objects currently open, used for duplicate detection
/// and, once validation succeeded, as an index of the root object's members.
///
/// Keys of an object are pushed while it is open and dropped when it closes (so a nested object's
/// keys never count against its parent's); the root object's stay. An object with more than
/// [`PAIRWISE_MAX`] keys, or one opened when the table is full, moves all its keys into the Bloom
/// filter and is checked there from then on.
#[derive(Debug, Clone)]
pub(crate) struct KeyTable {
    keys: [KeySpan; KEY_TABLE],
    top: usize,
    /// Whether the root is an object all of whose members are in `keys[..top]`.
    root_indexed: bool,
}

impl KeyTable {
    pub(crate) fn new() -> Self {
        Self {
            keys: [KeySpan::default(); KEY_TABLE],
            top: 0,
            root_indexed: false,
        }
    }

    /// The root object's members in document order, if the last validation recorded all of them.
    pub(crate) fn root_members(&self) -> Option<&[KeySpan]> {
        self.root_indexed.then(|| &self.keys[..self.top])
    }
}

/// Bloom filter over `(object, decoded key)` pairs seen so far in one document, so that duplicate
/// detection in large objects only rescans an object when a key may repeat. The hash is seeded once
/// per process from the OS's randomness, so an attacker cannot precompute keys that collide to
/// force the rescans; and a rescan is exact, so a collision costs time, never correctness.
struct KeyFilter<'b> {
    bits: &'b mut [u64],
    seed: u64,
}

/// A per-process random seed for [`KeyFilter`].
fn filter_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x746f_6c6c_6761_7465);
        h.finish() | 1
    })
}

/// Multiply-rotate hash over a byte stream, fed 8 bytes at a time.
struct StreamHash {
    h: u64,
    word: u64,
    n: u32,
}

impl StreamHash {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new(seed: u64) -> Self {
        Self {
            h: seed,
            word: 0,
            n: 0,
        }
    }

    #[inline]
    fn mix(&mut self, w: u64) {
        self.h = (self.h.rotate_left(23) ^ w).wrapping_mul(Self::K);
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.word |= u64::from(b) << (8 * self.n);
        self.n += 1;
        if self.n == 8 {
            self.mix(self.word);
            self.word = 0;
            self.n = 0;
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        if self.n == 0 {
            let mut chunks = bytes.chunks_exact(8);
            for c in &mut chunks {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                self.mix(u64::from_le_bytes(w));
            }
            for &b in chunks.remainder() {
                self.byte(b);
            }
        } else {
            for &b in bytes {
                self.byte(b);
            }
        }
    }

    fn finish(mut self, len: usize) -> u64 {
        let w = self.word ^ ((len as u64) << 40);
        self.mix(w);
        // final avalanche (splitmix64)
        let mut z = self.h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl KeyFilter<'_> {
    /// Records the key of the object starting at `object`; returns whether it may be a repeat.
    fn insert(&mut self, object: usize, key: &JsonStr<'_>) -> bool {
        let mut h = StreamHash::new(self.seed ^ (object as u64).wrapping_mul(StreamHash::K));
        // Hash the decoded UTF-8 bytes, so a key and its escaped spelling hash alike.
        let len = if key.escaped {
            let mut len = 0;
            let mut buf = [0u8; 4];
            for c in key.chars() {
                let enc = c.encode_utf8(&mut buf).as_bytes();
                len += enc.len();
                for &b in enc {
                    h.byte(b);
                }
            }
            len
        } else {
            h.bytes(key.raw.as_bytes());
            key.raw.len()
        };
        let h = h.finish(len);
        let mask = (self.bits.len() * 64).wrapping_sub(1);
        // Four probes by double hashing: at the key cap the large filter holds at most 4 bits per
        // 64, which keeps false positives (and so exact rescans) near 0.2 %.
        let (h1, h2) = (h as usize, ((h >> 32) as usize) | 1);
        let mut seen = true;
        for bit in (0..4).map(|i| h1.wrapping_add(i * h2) & mask) {
            let Some(word) = self.bits.get_mut(bit / 64) else {
                return true;
            };
            seen &= *word & (1 << (bit % 64)) != 0;
            *word |= 1 << (bit % 64);
        }
        seen
    }
}

/// Key bookkeeping of one validation: the pairwise table, the Bloom filter and the key count.
struct Keys<'t, 'b> {
    table: &'t mut KeyTable,
    filter: KeyFilter<'b>,
    count: usize,
    /// Per open container (indexed by depth): for objects, where its keys start in the table, or
    /// [`BLOOM`].
    frames: [u16; MAX_DEPTH_CAP],
}

/// Validates the whole text, returning the span of the top-level value; `table` ends holding the
/// root object's members when it could hold all of them (see [`KeyTable::root_members`]).
pub(super) fn validate(
    text: &str,
    max_depth: usize,
    bits: &mut [u64],
    table: &mut KeyTable,
) -> Result<(usize, usize), JsonError> {
    let b = text.as_bytes();
    // Start offsets of the open containers; `max_depth <= MAX_DEPTH_CAP` bounds `depth`.
    let mut stack = [0u32; MAX_DEPTH_CAP];
    let mut depth = 0;
    table.top = 0;
    table.root_indexed = false;
    let mut keys = Keys {
        table,
        filter: KeyFilter {
            bits,
            seed: filter_seed(),
        },
        count: 0,
        frames: [0; MAX_DEPTH_CAP],
    };
    let mut pos = skip_ws(b, 0);
    if pos == b.len() {
        return Err(JsonError::Empty);
    }
    let root_start = pos;
    'value: loop {
        match b.get(pos) {
            Some(&open @ (b'{' | b'[')) => {
                if depth >= max_depth {
                    return Err(JsonError::TooDeep {
                        offset: pos,
                        limit: max_depth,
                    });
                }
                stack[depth] = pos as u32;
                if open == b'{' {
                    keys.frames[depth] = if keys.table.top < KEY_TABLE {
                        keys.table.top as u16
                    } else {
                        BLOOM
                    };
                }
                depth += 1;
                pos = skip_ws(b, pos + 1);
                let close = if open == b'{' { b'}' } else { b']' };
                if b.get(pos) == Some(&close) {
                    pos += 1;
                    depth -= 1;
                } else {
                    if open == b'{' {
                        pos = keys.member(text, pos, stack[depth - 1] as usize, depth - 1)?;
                    }
                    continue 'value;
                }
            }
            Some(b'"') => pos = scan_string(b, pos)?.0,
            Some(b'-' | b'0'..=b'9') => pos = scan_number(text, pos)?,
            Some(b't') if b[pos..].starts_with(b"true") => pos += 4,
            Some(b'f') if b[pos..].starts_with(b"false") => pos += 5,
            Some(b'n') if b[pos..].starts_with(b"null") => pos += 4,
            _ => {
                return Err(JsonError::Syntax {
                    offset: pos,
                    expected: "a JSON value",
                });
            }
        }
        // A value just ended at `pos`: continue or close the enclosing containers.
        while depth > 0 {
            let container = stack[depth - 1] as usize;
            let is_object = b[container] == b'{';
            if is_object {
                keys.value_ended(depth - 1, pos);
            }
            pos = skip_ws(b, pos);
            match (b.get(pos), is_object) {
                (Some(b','), true) => {
                    pos = keys.member(text, skip_ws(b, pos + 1), container, depth - 1)?;
                    continue 'value;
                }
                (Some(b','), false) => {
                    pos = skip_ws(b, pos + 1);
                    continue 'value;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    depth -= 1;
                    if is_object && depth > 0 {
                        keys.close(depth);
                    }
                    pos += 1;
                }
                _ => {
                    return Err(JsonError::Syntax {
                        offset: pos,
                        expected: if is_object {
                            "',' or '}'"
                        } else {
                            "',' or ']'"
                        },
                    });
                }
            }
        }
        break;
    }
    let root_end = pos;
    let rest = skip_ws(b, pos);
    if rest != b.len() {
        return Err(JsonError::TrailingCharacters { offset: rest });
    }
    // The root object's keys stay in the table (its frame was never closed) unless it moved to
    // the Bloom filter.
    keys.table.root_indexed = b[root_start] == b'{' && keys.frames[0] & BLOOM == 0;
    if !keys.table.root_indexed {
        keys.table.top = 0;
    }
    Ok((root_start, root_end))
}

impl Keys<'_, '_> {
    /// The value of the current member of the object at depth index `d` ended at `end`.
    #[inline]
    fn value_ended(&mut self, d: usize, end: usize) {
        if self.frames[d] & BLOOM == 0
            && let Some(k) = self
                .table
                .top
                .checked_sub(1)
                .map(|i| &mut self.table.keys[i])
        {
            k.val_end = end as u32;
        }
    }

    /// The object at depth index `d` closed: its keys leave the table.
    #[inline]
    fn close(&mut self, d: usize) {
        if self.frames[d] & BLOOM == 0 {
            self.table.top = usize::from(self.frames[d]);
        }
    }

    /// Validates an object key at `pos` of the object starting at `object` (depth index `d`),
    /// rejects duplicates, and consumes the `:` after it. Returns the position of the member's
    /// value.
    #[inline(always)]
    fn member(
        &mut self,
        text: &str,
        pos: usize,
        object: usize,
        d: usize,
    ) -> Result<usize, JsonError> {
        let b = text.as_bytes();
        if b.get(pos) != Some(&b'"') {
            return Err(JsonError::Syntax {
                offset: pos,
                expected: "'\"' to start an object key",
            });
        }
        let (end, escaped) = scan_string(b, pos)?;
        self.count += 1;
        if self.count > MAX_KEYS {
            return Err(JsonError::TooManyKeys {
                offset: pos,
                limit: MAX_KEYS,
            });
        }
        let key = JsonStr {
            raw: text.get(pos + 1..end - 1).unwrap_or_default(),
            escaped,
        };
        if self.is_duplicate(text, pos, object, d, &key) {
            return Err(JsonError::DuplicateKey { offset: pos });
        }
        let colon = skip_ws(b, end);
        if b.get(colon) != Some(&b':') {
            return Err(JsonError::Syntax {
                offset: colon,
                expected: "':' after object key",
            });
        }
        let value = skip_ws(b, colon + 1);
        if self.frames[d] & BLOOM == 0 {
            let top = self.table.top;
            self.table.keys[top] = KeySpan {
                key_start: (pos + 1) as u32,
                key_end: (end - 1) as u32,
                val_start: value as u32,
                val_end: value as u32,
                escaped,
            };
            self.table.top = top + 1;
        }
        Ok(value)
    }

    /// Whether `key` (at `pos`) repeats a key of the object at depth index `d`. Leaves room in the
    /// table for the key when the object stays in pairwise mode.
    fn is_duplicate(
        &mut self,
        text: &str,
        pos: usize,
        object: usize,
        d: usize,
        key: &JsonStr<'_>,
    ) -> bool {
        let frame = self.frames[d];
        if frame & BLOOM == 0 {
            let (base, top) = (usize::from(frame), self.table.top);
            if top - base < PAIRWISE_MAX && top < KEY_TABLE {
                return self.table.keys[base..top]
                    .iter()
                    .any(|k| same_key(text, k, key));
            }
            // Too many keys for pairwise comparison: the object's keys so far (all distinct)
            // move into the filter, and the object is checked there from now on.
            for k in &self.table.keys[base..top] {
                let earlier = JsonStr {
                    raw: text
                        .get(k.key_start as usize..k.key_end as usize)
                        .unwrap_or_default(),
                    escaped: k.escaped,
                };
                self.filter.insert(object, &earlier);
            }
            self.table.top = base;
            self.frames[d] = BLOOM;
        }
        if self.filter.insert(object, key) {
            let mut previous = ObjectIter {
                text: text.get(..pos).unwrap_or_default(),
                pos: object + 1,
            };
            return previous.any(|(k, _)| k.same(key));
        }
        false
    }
}

/// Whether the remembered key `k` and `key` are the same after unescaping.
#[inline]
fn same_key(text: &str, k: &KeySpan, key: &JsonStr<'_>) -> bool {
    let (start, end) = (k.key_start as usize, k.key_end as usize);
    if !k.escaped && !key.escaped {
        return end - start == key.raw.len()
            && text.as_bytes().get(start..end) == Some(key.raw.as_bytes());
    }
    let earlier = JsonStr {
        raw: text.get(start..end).unwrap_or_default(),
        escaped: k.escaped,
    };
    earlier.same(key)
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Flags (in each byte's top bit) the bytes of `w` that end a run of plain string content: `"`,
/// `\` and control characters below 0x20. The lowest flag is exact (borrows only propagate
/// upwards), which is all the scan needs.
#[inline]
fn specials(w: u64) -> u64 {
    let quote = w ^ (LO * u64::from(b'"'));
    let backslash = w ^ (LO * u64::from(b'\\'));
    let zero_q = quote.wrapping_sub(LO) & !quote;
    let zero_b = backslash.wrapping_sub(LO) & !backslash;
    let control = w.wrapping_sub(LO * 0x20) & !w;
    (zero_q | zero_b | control) & HI
}

/// The first position from `i` that may hold a quote, a backslash or a control character,
/// skipping plain string content eight bytes at a time; within the last seven bytes of `b` it
/// stops at once (the callers go on byte by byte).
#[inline(always)]
fn skip_plain(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let hits = specials(u64::from_le_bytes(w));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

/// The end (just past the closing quote) of the string whose content starts at `start`, if that
/// content is plain: no escape and no control character, so the raw bytes are the decoded text
/// and the string is valid JSON. `None` for anything else (the caller then takes the full
/// validator's path, which reports the exact error). Used by the boundary's accept-only fast
/// path for flat raw arguments.
#[inline(always)]
pub(crate) fn plain_string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = skip_plain(b, start);
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// Validates the string starting at the quote at `start`; returns the position after it and
/// whether it contains escapes. Plain content is skipped eight bytes at a time.
#[inline(always)]
pub(super) fn scan_string(b: &[u8], start: usize) -> Result<(usize, bool), JsonError> {
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        i = skip_plain(b, i);
        match b.get(i) {
            None => {
                return Err(JsonError::Syntax {
                    offset: b.len(),
                    expected: "'\"' to close the string",
                });
            }
            Some(b'"') => return Ok((i + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                i = scan_escape(b, i)?;
            }
            Some(0..=0x1f) => return Err(JsonError::ControlCharacter { offset: i }),
            Some(_) => i += 1,
        }
    }
}

/// Validates the escape whose backslash is at `i`; returns the position after it.
fn scan_escape(b: &[u8], i: usize) -> Result<usize, JsonError> {
    match b.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => match hex4(b, i + 2) {
            None => Err(JsonError::InvalidEscape { offset: i }),
            Some(0xD800..=0xDBFF) => {
                if b.get(i + 6..i + 8) != Some(b"\\u") {
                    return Err(JsonError::LoneSurrogate { offset: i });
                }
                match hex4(b, i + 8) {
                    None => Err(JsonError::InvalidEscape { offset: i + 6 }),
                    Some(0xDC00..=0xDFFF) => Ok(i + 12),
                    Some(_) => Err(JsonError::LoneSurrogate { offset: i }),
                }
            }
            Some(0xDC00..=0xDFFF) => Err(JsonError::LoneSurrogate { offset: i }),
            Some(_) => Ok(i + 6),
        },
        _ => Err(JsonError::InvalidEscape { offset: i }),
    }
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// Validates the number starting at `start`; returns the position after it.
fn scan_number(text: &str, start: usize) -> Result<usize, JsonError> {
    let b = text.as_bytes();
    let expect_digit = |i: usize, expected| {
        if b.get(i).is_some_and(u8::is_ascii_digit) {
            Ok(digits(b, i))
        } else {
            Err(JsonError::Syntax {
                offset: i,
                expected,
            })
        }
    };
    let mut i = start + usize::from(b[start] == b'-');
    if b.get(i) == Some(&b'0') {
        i += 1;
        if b.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(JsonError::Syntax {
                offset: i,
                expected: "'.' or exponent after a leading zero",
            });
        }
    } else {
        i = expect_digit(i, "a digit")?;
    }
    let int_end = i;
    if b.get(i) == Some(&b'.') {
        i = expect_digit(i + 1, "a digit after '.'")?;
    }
    let mut exponent = false;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = expect_digit(i, "a digit in the exponent")?;
        exponent = true;
    }
    // Without an exponent a number overflows f64 only with more than 308 integer digits; only
    // then, or with an exponent, is it parsed to check.
    if exponent || int_end - start > 300 {
        let value: f64 = text[start..i].parse().unwrap_or(f64::INFINITY);
        if value.is_infinite() {
            return Err(JsonError::NumberOutOfRange { offset: start });
        }
    }
    Ok(i)
}
