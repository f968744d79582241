//! Strict, allocation-free validation and inspection of raw JSON text.
//!
//! Agent frameworks hand tool-call arguments over as JSON text. [`RawJson::parse`] checks that text
//! against RFC 8259 in one pass without touching the heap, and is deliberately stricter than most
//! parsers wherever parsers disagree: duplicate keys (compared after unescaping), lone surrogates,
//! unescaped control characters, non-standard escapes, out-of-range numbers, a byte order mark and
//! trailing data are all refused. A validated document can then be inspected through borrowed
//! [`RawValue`]s, still without allocating.
//!
//! Validation never recurses and uses a few KiB of stack (a fixed container stack, a small key
//! table and a key filter sized to the text). Duplicate keys are found by comparing each key with
//! the keys already seen in its object while the object has at most 16, and beyond that through a
//! randomly seeded Bloom filter with exact rescans of an object on a possible hit; a document may
//! hold at most [`MAX_KEYS`] keys, so the filter stays sparse and the cost stays near-linear (a 64
//! KiB object of unique keys: under 1 ms in a release build on the development machine).

use std::borrow::Cow;

mod validate;

use validate::validate;
pub(crate) use validate::{KeySpan, KeyTable, plain_string_end};

/// Hard upper bound on nesting depth, whatever [`JsonLimits::max_depth`] says.
///
/// The validator keeps its container stack in a fixed-size array so that it never allocates and
/// never recurses. This is also the one depth limit shared by every writer and reader of
/// tollgate's records (audit log, approval store): a value nested deeper is never written as
/// JSON, so a record always stays within `serde_json`'s recursion limit of 128 with room for
/// the record's own envelope.
pub const MAX_DEPTH_CAP: usize = 64;

/// Most object keys one document may hold, across all its objects. Keeps duplicate detection
/// linear: the key filter stays sparse (at most 2 bits per key in 128 Kibit), so exact rescans
/// are rare whatever the text size.
pub const MAX_KEYS: usize = 8192;

/// Texts up to this many bytes get a small key filter; longer ones a large one.
const SMALL_TEXT: usize = 4 * 1024;
/// Texts up to this many bytes (typical tool arguments) get a tiny filter: less to zero.
const TINY_TEXT: usize = 512;
/// Tiny filter size in 64-bit words (512 bits for at most ~100 keys).
const TINY_FILTER_WORDS: usize = 8;
/// Key filter sizes in 64-bit words (powers of two): 16 Kibit and 128 Kibit.
const SMALL_FILTER_WORDS: usize = 256;
const LARGE_FILTER_WORDS: usize = 2048;

/// Limits applied while validating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Largest accepted document, in bytes of UTF-8 text.
    pub max_bytes: usize,
    /// Deepest accepted nesting of arrays and objects (`{}` has depth 1, `{"a":[1]}` depth 2);
    /// effectively capped at 128 (`MAX_DEPTH_CAP`).
    pub max_depth: usize,
}

impl Default for JsonLimits {
    /// 64 KiB and a depth of 32.
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_depth: 32,
        }
    }
}

/// Why a JSON text was refused. Offsets are byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The text is longer than [`JsonLimits::max_bytes`]; nothing was scanned.
    #[error("JSON text of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Length of the text in bytes.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Arrays and objects are nested deeper than allowed.
    #[error("invalid JSON at byte {offset}: nesting deeper than {limit} levels")]
    TooDeep {
        /// Offset of the first bracket beyond the limit.
        offset: usize,
        /// The effective depth limit.
        limit: usize,
    },
    /// The text does not follow the JSON grammar.
    #[error("invalid JSON at byte {offset}: expected {expected}")]
    Syntax {
        /// Offset of the offending byte (the text length if the text ended early).
        offset: usize,
        /// What the grammar required at that point.
        expected: &'static str,
    },
    /// A backslash escape other than the eight standard ones or `\u` with four hex digits.
    #[error("invalid JSON at byte {offset}: invalid escape sequence")]
    InvalidEscape {
        /// Offset of the escape's backslash.
        offset: usize,
    },
    /// A `\u` escape of a UTF-16 surrogate that is not part of a valid pair.
    #[error("invalid JSON at byte {offset}: unpaired surrogate escape")]
    LoneSurrogate {
        /// Offset of the escape's backslash.
        offset: usize,
    },
    /// An unescaped character U+0000..=U+001F inside a string.
    #[error("invalid JSON at byte {offset}: unescaped control character in string")]
    ControlCharacter {
        /// Offset of the control character.
        offset: usize,
    },
    /// A number whose magnitude overflows `f64`.
    #[error("invalid JSON at byte {offset}: number out of range")]
    NumberOutOfRange {
        /// Offset of the number's first byte.
        offset: usize,
    },
    /// The same key (after unescaping) appears twice in one object.
    #[error("invalid JSON at byte {offset}: duplicate object key")]
    DuplicateKey {
        /// Offset of the opening quote of the repeated key.
        offset: usize,
    },
    /// The document holds more than `MAX_KEYS` (8192) object keys.
    #[error("invalid JSON at byte {offset}: more than {limit} object keys")]
    TooManyKeys {
        /// Where the key past the limit starts.
        offset: usize,
        /// The limit.
        limit: usize,
    },
    /// Something other than whitespace follows the document's value.
    #[error("invalid JSON at byte {offset}: trailing characters after the value")]
    TrailingCharacters {
        /// Offset of the first trailing byte.
        offset: usize,
    },
    /// The text is empty or only whitespace.
    #[error("invalid JSON: empty input")]
    Empty,
}

impl JsonError {
    /// The byte offset the error was detected at, if it has one.
    pub fn offset(&self) -> Option<usize> {
        match *self {
            Self::TooDeep { offset, .. }
            | Self::Syntax { offset, .. }
            | Self::InvalidEscape { offset }
            | Self::LoneSurrogate { offset }
            | Self::ControlCharacter { offset }
            | Self::NumberOutOfRange { offset }
            | Self::DuplicateKey { offset }
            | Self::TrailingCharacters { offset }
            | Self::TooManyKeys { offset, .. } => Some(offset),
            Self::TooLarge { .. } | Self::Empty => None,
        }
    }
}

/// A fully validated JSON document borrowed from the caller's text.
#[derive(Debug, Clone, Copy)]
pub struct RawJson<'a> {
    root: &'a str,
}

impl<'a> RawJson<'a> {
    /// Validates `text` as one strict RFC 8259 JSON document, without allocating.
    ///
    /// Whitespace around the value is allowed; a byte order mark is not.
    pub fn parse(text: &'a str, limits: JsonLimits) -> Result<Self, JsonError> {
        Self::parse_into(text, limits, &mut KeyTable::new())
    }

    /// [`parse`](Self::parse), leaving the root object's members in `table` when it can hold
    /// them all ([`KeyTable::root_members`]), so a caller can read them without a second pass.
    pub(crate) fn parse_into(
        text: &'a str,
        limits: JsonLimits,
        table: &mut KeyTable,
    ) -> Result<Self, JsonError> {
        if text.len() > limits.max_bytes || text.len() > u32::MAX as usize {
            return Err(JsonError::TooLarge {
                len: text.len(),
                limit: limits.max_bytes,
            });
        }
        let max_depth = limits.max_depth.min(MAX_DEPTH_CAP);
        let (start, end) = if text.len() <= TINY_TEXT {
            validate(text, max_depth, &mut [0; TINY_FILTER_WORDS], table)
        } else if text.len() <= SMALL_TEXT {
            validate(text, max_depth, &mut [0; SMALL_FILTER_WORDS], table)
        } else {
            validate(text, max_depth, &mut [0; LARGE_FILTER_WORDS], table)
        }?;
        Ok(Self {
            root: text.get(start..end).unwrap_or_default(),
        })
    }

    /// The document's top-level value.
    pub fn root(&self) -> RawValue<'a> {
        RawValue { text: self.root }
    }
}

/// The root object's members as the validator recorded them (see [`KeyTable::root_members`]):
/// the same `(key, value)` pairs as [`RawValue::entries`] gives, without scanning the text again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Members<'a> {
    /// The whole text given to [`RawJson::parse_into`] (the spans' offsets are into it).
    text: &'a str,
    spans: &'a [KeySpan],
}

impl<'a> Members<'a> {
    /// The members of the root of `text`, validated by [`RawJson::parse_into`] with `table`;
    /// `None` when the table does not hold them all.
    pub(crate) fn of(text: &'a str, table: &'a KeyTable) -> Option<Self> {
        table.root_members().map(|spans| Self { text, spans })
    }

    /// The members in document order.
    pub(crate) fn iter(self) -> MemberIter<'a> {
        MemberIter {
            text: self.text,
            spans: self.spans.iter(),
        }
    }
}

/// Iterator over [`Members`].
#[derive(Debug, Clone)]
pub(crate) struct MemberIter<'a> {
    text: &'a str,
    spans: std::slice::Iter<'a, KeySpan>,
}

impl<'a> Iterator for MemberIter<'a> {
    type Item = (JsonStr<'a>, RawValue<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let k = self.spans.next()?;
        let key = JsonStr {
            raw: self
                .text
                .get(k.key_start as usize..k.key_end as usize)
                .unwrap_or_default(),
            escaped: k.escaped,
        };
        let value = RawValue {
            text: self
                .text
                .get(k.val_start as usize..k.val_end as usize)
                .unwrap_or_default(),
        };
        Some((key, value))
    }
}

/// The type of a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

/// One value inside a validated document: the exact text span of the value (no surrounding
/// whitespace).
#[derive(Debug, Clone, Copy)]
pub struct RawValue<'a> {
    text: &'a str,
}

impl<'a> RawValue<'a> {
    /// The value's type, read from its first byte.
    pub fn kind(&self) -> JsonKind {
        match self.text.as_bytes().first() {
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::Array,
            Some(b'"') => JsonKind::String,
            Some(b't' | b'f') => JsonKind::Bool,
            Some(b'-' | b'0'..=b'9') => JsonKind::Number,
            _ => JsonKind::Null,
        }
    }

    /// The boolean, if this is `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.text {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    // Used by this module's tests (and kept as part of the accessor set).
    #[cfg_attr(not(test), allow(dead_code))]
    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        self.text == "null"
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<RawNumber<'a>> {
        (self.kind() == JsonKind::Number).then_some(RawNumber { text: self.text })
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<JsonStr<'a>> {
        let inner = self.text.strip_prefix('"')?.strip_suffix('"')?;
        Some(JsonStr::new(inner))
    }

    /// The member named `key` (compared after unescaping); `None` if this is not an object or the
    /// key is absent.
    pub fn get(&self, key: &str) -> Option<RawValue<'a>> {
        self.entries().find_map(|(k, v)| k.eq_str(key).then_some(v))
    }

    /// The object's members in document order; empty if this is not an object.
    pub fn entries(&self) -> ObjectIter<'a> {
        let text = if self.kind() == JsonKind::Object {
            self.text
        } else {
            ""
        };
        ObjectIter { text, pos: 1 }
    }

    /// The array's items in order; empty if this is not an array.
    pub fn items(&self) -> ArrayIter<'a> {
        let text = if self.kind() == JsonKind::Array {
            self.text
        } else {
            ""
        };
        ArrayIter { text, pos: 1 }
    }

    // Used by this module's tests (and kept as part of the accessor set).
    #[cfg_attr(not(test), allow(dead_code))]
    /// The value's exact text.
    pub fn text(&self) -> &'a str {
        self.text
    }
}

/// Iterator over an object's `(key, value)` members, from [`RawValue::entries`].
#[derive(Debug, Clone)]
pub struct ObjectIter<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> ObjectIter<'a> {
    fn step(&mut self) -> Option<(JsonStr<'a>, RawValue<'a>)> {
        let b = self.text.as_bytes();
        let p = skip_ws(b, self.pos);
        if *b.get(p)? != b'"' {
            return None;
        }
        let key_end = string_end(b, p)?;
        let key = JsonStr::new(self.text.get(p + 1..key_end - 1)?);
        let colon = skip_ws(b, key_end);
        if *b.get(colon)? != b':' {
            return None;
        }
        let start = skip_ws(b, colon + 1);
        let end = value_end(b, start)?;
        let value = RawValue {
            text: self.text.get(start..end)?,
        };
        let next = skip_ws(b, end);
        self.pos = if b.get(next) == Some(&b',') {
            next + 1
        } else {
            b.len()
        };
        Some((key, value))
    }
}

impl<'a> Iterator for ObjectIter<'a> {
    type Item = (JsonStr<'a>, RawValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.step();
        if item.is_none() {
            self.pos = self.text.len();
        }
        item
    }
}

/// Iterator over an array's items, from [`RawValue::items`].
#[derive(Debug, Clone)]
pub struct ArrayIter<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = RawValue<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.text.as_bytes();
        let start = skip_ws(b, self.pos);
        let Some(end) = value_end(b, start) else {
            self.pos = b.len();
            return None;
        };
        let next = skip_ws(b, end);
        self.pos = if b.get(next) == Some(&b',') {
            next + 1
        } else {
            b.len()
        };
        self.text.get(start..end).map(|text| RawValue { text })
    }
}

/// A JSON number's text.
#[derive(Debug, Clone, Copy)]
pub struct RawNumber<'a> {
    text: &'a str,
}

impl RawNumber<'_> {
    fn is_integer(&self) -> bool {
        !self.text.bytes().any(|c| matches!(c, b'.' | b'e' | b'E'))
    }

    /// The value as `i64`, if the text is an integer literal (no fraction or exponent) that fits.
    pub fn as_i64(&self) -> Option<i64> {
        self.is_integer().then(|| self.text.parse().ok()).flatten()
    }

    /// The value as `u64`, if the text is a non-negative integer literal that fits (`-0` is 0).
    pub fn as_u64(&self) -> Option<u64> {
        if !self.is_integer() {
            return None;
        }
        match self.text.strip_prefix('-') {
            Some(digits) => digits.bytes().all(|c| c == b'0').then_some(0),
            None => self.text.parse().ok(),
        }
    }

    /// The value as the nearest `f64` (finite for any validated number).
    pub fn as_f64(&self) -> f64 {
        self.text.parse().unwrap_or(f64::NAN)
    }

    /// The number's exact text.
    pub fn text(&self) -> &str {
        self.text
    }
}

/// A JSON string's content between the quotes, still escaped.
#[derive(Debug, Clone, Copy)]
pub struct JsonStr<'a> {
    raw: &'a str,
    escaped: bool,
}

impl<'a> JsonStr<'a> {
    fn new(raw: &'a str) -> Self {
        Self {
            raw,
            escaped: has_backslash(raw.as_bytes()),
        }
    }

    // Used by this module's tests (and kept as part of the accessor set).
    #[cfg_attr(not(test), allow(dead_code))]
    /// The content as written, escapes included, without the quotes.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    // Used by this module's tests (and kept as part of the accessor set).
    #[cfg_attr(not(test), allow(dead_code))]
    /// Whether the content contains any backslash escape.
    pub fn has_escapes(&self) -> bool {
        self.escaped
    }

    // Used by this module's tests (and kept as part of the accessor set).
    #[cfg_attr(not(test), allow(dead_code))]
    /// The content, when it has no escapes and so equals its decoded form.
    pub fn as_borrowed(&self) -> Option<&'a str> {
        (!self.escaped).then_some(self.raw)
    }

    /// The decoded characters (escapes resolved, surrogate pairs combined), without allocating.
    pub fn chars(&self) -> impl Iterator<Item = char> + 'a {
        Decode { rest: self.raw }
    }

    /// Whether the decoded content equals `s`, without allocating.
    pub fn eq_str(&self, s: &str) -> bool {
        if self.escaped {
            self.chars().eq(s.chars())
        } else {
            self.raw == s
        }
    }

    /// The decoded length in `char`s.
    pub fn char_count(&self) -> usize {
        if self.escaped {
            self.chars().count()
        } else {
            self.raw.chars().count()
        }
    }

    /// The decoded content; allocates only if there are escapes.
    #[allow(clippy::wrong_self_convention)] // `&self` kept for callers written against this API
    pub fn to_cow(&self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(self.chars().collect())
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    fn same(&self, other: &JsonStr<'_>) -> bool {
        if self.escaped || other.escaped {
            self.chars().eq(other.chars())
        } else {
            self.raw == other.raw
        }
    }
}

/// Decoding iterator behind [`JsonStr::chars`]; yields U+FFFD for malformed escapes rather than
/// panicking (validated text never has any).
struct Decode<'a> {
    rest: &'a str,
}

impl Iterator for Decode<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let b = self.rest.as_bytes();
        if *b.first()? != b'\\' {
            let c = self.rest.chars().next()?;
            self.rest = self.rest.get(c.len_utf8()..).unwrap_or_default();
            return Some(c);
        }
        let (c, used) = match b.get(1) {
            Some(b'"') => ('"', 2),
            Some(b'\\') => ('\\', 2),
            Some(b'/') => ('/', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => match hex4(b, 2) {
                Some(hi @ 0xD800..=0xDBFF) => match (b.get(6..8), hex4(b, 8)) {
                    (Some(b"\\u"), Some(lo @ 0xDC00..=0xDFFF)) => {
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        (char::from_u32(c).unwrap_or('\u{FFFD}'), 12)
                    }
                    _ => ('\u{FFFD}', 6),
                },
                Some(u) => (char::from_u32(u).unwrap_or('\u{FFFD}'), 6),
                None => ('\u{FFFD}', 2),
            },
            _ => ('\u{FFFD}', 1),
        };
        self.rest = self.rest.get(used..).unwrap_or_default();
        Some(c)
    }
}

/// Whether `b` holds a backslash; eight bytes at a time (the strings are short: a `memchr` call
/// costs more than it saves).
fn has_backslash(b: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w) ^ (LO * u64::from(b'\\'));
        if x.wrapping_sub(LO) & !x & (LO << 7) != 0 {
            return true;
        }
    }
    let mut hit = false;
    for &c in chunks.remainder() {
        hit |= c == b'\\';
    }
    hit
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.iter().try_fold(0u32, |acc, &c| {
        let d = char::from(c).to_digit(16)?;
        Some(acc << 4 | d)
    })
}

/// The position of the first byte at or after `i` that is not JSON whitespace.
#[inline]
pub(crate) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Lenient scan from an opening quote to just past the closing quote.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Lenient scan to just past the value starting at `start` (for already validated text).
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match *b.get(start)? {
        b'"' => string_end(b, start),
        b'{' | b'[' => {
            let (mut depth, mut i) = (0usize, start);
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = start;
            while b.get(i).is_some_and(|c| {
                !matches!(c, b',' | b':' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
            }) {
                i += 1;
            }
            (i > start).then_some(i)
        }
    }
}

#[cfg(test)]
mod tests;
