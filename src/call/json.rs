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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn parse(s: &str) -> Result<RawJson<'_>, JsonError> {
        RawJson::parse(s, JsonLimits::default())
    }

    fn syntax(offset: usize, expected: &'static str) -> JsonError {
        JsonError::Syntax { offset, expected }
    }

    #[test]
    fn accepts_valid_documents() {
        for s in [
            "0",
            "-0",
            "1e-400",
            "-12.5E+3",
            "0.5e-0",
            "true",
            "null",
            r#""""#,
            r#""\u00e9\ud83d\ude00\/\b\f\n\r\t\"\\""#,
            "\u{7f}\"\u{10ffff}é\"".get(1..).unwrap(),
            " \t\r\n[ 1 , {\"a\" : [ ] , \"b\":{}} ] \n",
            r#"{"a":{"a":{"a":1}},"b":[{"a":1},{"a":1}]}"#,
        ] {
            assert!(parse(s).is_ok(), "{s:?}: {:?}", parse(s));
        }
        assert_eq!(parse(" \n[1, 2]\t").unwrap().root().text(), "[1, 2]");
    }

    #[test]
    fn rejects_with_variant_and_offset() {
        use JsonError::*;
        let big = format!("1{}", "0".repeat(400));
        let cases: &[(&str, JsonError)] = &[
            ("", Empty),
            (" \n\t\r", Empty),
            (r#"{"a" 1}"#, syntax(5, "':' after object key")),
            ("[1,]", syntax(3, "a JSON value")),
            (r#"{"a":1,}"#, syntax(7, "'\"' to start an object key")),
            ("{'a':1}", syntax(1, "'\"' to start an object key")),
            ("['a']", syntax(1, "a JSON value")),
            ("// c\n1", syntax(0, "a JSON value")),
            ("/* c */ 1", syntax(0, "a JSON value")),
            ("NaN", syntax(0, "a JSON value")),
            ("-Infinity", syntax(1, "a digit")),
            ("01", syntax(1, "'.' or exponent after a leading zero")),
            ("-012", syntax(2, "'.' or exponent after a leading zero")),
            ("+1", syntax(0, "a JSON value")),
            (".5", syntax(0, "a JSON value")),
            ("1.", syntax(2, "a digit after '.'")),
            ("1.e5", syntax(2, "a digit after '.'")),
            ("1e+", syntax(3, "a digit in the exponent")),
            ("-", syntax(1, "a digit")),
            ("\u{feff}1", syntax(0, "a JSON value")),
            ("\u{c}1", syntax(0, "a JSON value")),
            ("\u{a0}1", syntax(0, "a JSON value")),
            ("[1\u{b}]", syntax(2, "',' or ']'")),
            ("[1 2]", syntax(3, "',' or ']'")),
            (r#"{"a":1 "b":2}"#, syntax(7, "',' or '}'")),
            ("[1}", syntax(2, "',' or ']'")),
            (r#"{"a":1]"#, syntax(6, "',' or '}'")),
            (r#""abc"#, syntax(4, "'\"' to close the string")),
            ("[", syntax(1, "a JSON value")),
            ("{", syntax(1, "'\"' to start an object key")),
            ("tru", syntax(0, "a JSON value")),
            ("True", syntax(0, "a JSON value")),
            (r#""\x""#, InvalidEscape { offset: 1 }),
            (r#""\'""#, InvalidEscape { offset: 1 }),
            (r#""a\U0041""#, InvalidEscape { offset: 2 }),
            (r#""\u12""#, InvalidEscape { offset: 1 }),
            (r#""\u12G4""#, InvalidEscape { offset: 1 }),
            (r#""\ud800\uZZZZ""#, InvalidEscape { offset: 7 }),
            (r#""\ud800""#, LoneSurrogate { offset: 1 }),
            (r#""\udc00""#, LoneSurrogate { offset: 1 }),
            (r#""x\ud800x""#, LoneSurrogate { offset: 2 }),
            (r#""\ud800\u0041""#, LoneSurrogate { offset: 1 }),
            (r#""\ud800\ud800""#, LoneSurrogate { offset: 1 }),
            (r#""\ude00\ud83d""#, LoneSurrogate { offset: 1 }),
            ("\"a\tb\"", ControlCharacter { offset: 2 }),
            ("\"\u{0}\"", ControlCharacter { offset: 1 }),
            ("{\"k\u{1f}\":1}", ControlCharacter { offset: 3 }),
            ("1e400", NumberOutOfRange { offset: 0 }),
            ("[0, -1e309]", NumberOutOfRange { offset: 4 }),
            (&big, NumberOutOfRange { offset: 0 }),
            (r#"{"a":1,"a":2}"#, DuplicateKey { offset: 7 }),
            ("1 2", TrailingCharacters { offset: 2 }),
            ("{} {}", TrailingCharacters { offset: 3 }),
            ("nulls", TrailingCharacters { offset: 4 }),
            ("[]]", TrailingCharacters { offset: 2 }),
            ("\"a\"\u{0}", TrailingCharacters { offset: 3 }),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s).unwrap_err(), *want, "{s:?}");
            assert_eq!(want.offset().is_some(), *want != Empty, "{want}");
        }
        let tight = JsonLimits {
            max_bytes: 2,
            max_depth: 32,
        };
        assert_eq!(
            RawJson::parse("[1]", tight).unwrap_err(),
            TooLarge { len: 3, limit: 2 }
        );
        assert_eq!(
            syntax(17, "':' after object key").to_string(),
            "invalid JSON at byte 17: expected ':' after object key"
        );
    }

    #[test]
    fn duplicate_keys_compare_decoded_at_every_level() {
        let dup = |s: &str| match parse(s) {
            Err(JsonError::DuplicateKey { offset }) => offset,
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(dup(r#"{"a":1,"\u0061":2}"#), 7);
        assert_eq!(dup(r#"{"ab":1, "a\u0062":2}"#), 9);
        assert_eq!(dup(r#"{"/":1,"\/":2}"#), 7);
        assert_eq!(dup(r#"{"😀":1,"\ud83d\ude00":2}"#), 10);
        assert_eq!(dup(r#"{"a":{},"a":1}"#), 8);
        assert_eq!(dup(r#"{"x":{"a":1,"b":[{}],"a":3}}"#), 21);
        assert_eq!(dup(r#"[{"a":{"b":1}},{"a":{"b":1,"b":2}}]"#), 27);
        assert!(parse(r#"{"a":{"a":1},"b":{"a":1},"A":1,"a ":1}"#).is_ok());
        // Large objects (and texts past SMALL_TEXT) fill the key filter; repeats are still caught.
        for (n, last) in [(255, "k0"), (300, "k299"), (300, "k\\u0030"), (600, "k42")] {
            let mut s = String::from("{\"o\":{\"inner\":1},");
            for i in 0..n {
                s.push_str(&format!("\"k{i}\":{{\"k{i}\":[{i}]}},"));
            }
            let offset = s.len();
            s.push_str(&format!("\"{last}\":0}}"));
            let limits = JsonLimits {
                max_bytes: 1 << 20,
                max_depth: 4,
            };
            assert_eq!(
                RawJson::parse(&s, limits).unwrap_err(),
                JsonError::DuplicateKey { offset },
                "{n} {last}"
            );
            s.truncate(offset);
            s.push_str("\"fresh\":0}");
            let doc = RawJson::parse(&s, limits).unwrap();
            assert_eq!(doc.root().entries().count(), n + 2);
        }
    }

    #[test]
    fn duplicate_keys_around_the_switch_to_the_key_filter_are_found() {
        // Objects of up to 16 keys compare pairwise; the 17th key moves the object's keys into
        // the Bloom filter. A repeat of any earlier key, escaped or not, is found on both sides.
        for n in [1, 15, 16, 17, 18, 31, 40] {
            for repeat in [0, n / 2, n - 1] {
                for escaped in [false, true] {
                    let mut s = String::from("{");
                    for i in 0..n {
                        s.push_str(&format!("\"k{i}\":{{\"k{i}\":[{i}]}},"));
                    }
                    let offset = s.len();
                    let key = format!("k{repeat}");
                    let key = if escaped {
                        escape_every_char(&key)
                    } else {
                        key
                    };
                    s.push_str(&format!("\"{key}\":0}}"));
                    assert_eq!(
                        parse(&s).unwrap_err(),
                        JsonError::DuplicateKey { offset },
                        "{n} {repeat} {escaped}"
                    );
                }
            }
        }
        // Open objects holding 15 keys each fill the table: the innermost starts in the filter.
        let mut s = String::new();
        for level in 0..3 {
            s.push('{');
            for i in 0..15 {
                s.push_str(&format!("\"l{level}k{i}\":0,"));
            }
            s.push_str("\"next\":");
        }
        s.push_str("{\"a\":1,");
        let offset = s.len();
        s.push_str("\"\\u0061\":2}}}}");
        assert_eq!(parse(&s).unwrap_err(), JsonError::DuplicateKey { offset });
        // After the inner objects close, the outer keys are still compared.
        let mut s = String::from("{\"a\":{\"b\":{\"c\":1,\"d\":2},\"e\":3},\"f\":4,");
        let offset = s.len();
        s.push_str("\"a\":5}");
        assert_eq!(parse(&s).unwrap_err(), JsonError::DuplicateKey { offset });
        assert!(parse(r#"{"a":{"b":{"c":1,"d":2},"e":3},"f":4,"b":5,"c":6,"e":7}"#).is_ok());
    }

    #[test]
    fn depth_is_limited_before_the_stack_is() {
        let limits = |max_depth| JsonLimits {
            max_bytes: usize::MAX,
            max_depth,
        };
        assert!(RawJson::parse("{}", limits(1)).is_ok());
        assert!(RawJson::parse(r#"{"a":[1]}"#, limits(2)).is_ok());
        assert_eq!(
            RawJson::parse(r#"{"a":[[1]]}"#, limits(2)).unwrap_err(),
            JsonError::TooDeep {
                offset: 6,
                limit: 2
            }
        );
        assert!(RawJson::parse("7", limits(0)).is_ok());
        assert_eq!(
            RawJson::parse("[]", limits(0)).unwrap_err(),
            JsonError::TooDeep {
                offset: 0,
                limit: 0
            }
        );
        let deep = "[".repeat(1 << 20);
        assert_eq!(
            RawJson::parse(&deep, limits(usize::MAX)).unwrap_err(),
            JsonError::TooDeep {
                offset: MAX_DEPTH_CAP,
                limit: MAX_DEPTH_CAP
            }
        );
        assert_eq!(
            parse(&deep).unwrap_err(),
            JsonError::TooLarge {
                len: 1 << 20,
                limit: 64 * 1024
            }
        );
        let objects = "{\"a\":".repeat(10_000);
        assert_eq!(
            parse(&objects).unwrap_err(),
            JsonError::TooDeep {
                offset: 32 * 5,
                limit: 32
            }
        );
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn accessors() {
        let doc =
            parse(r#" {"name":"a\"b\u00e9\ud83d\ude00","n":[1,-2.5,true,null],"e":{}} "#).unwrap();
        let root = doc.root();
        assert_eq!(root.kind(), JsonKind::Object);
        let name = root.get("name").unwrap().as_str().unwrap();
        assert!(name.has_escapes());
        assert_eq!(name.raw(), r#"a\"b\u00e9\ud83d\ude00"#);
        assert!(name.as_borrowed().is_none());
        assert!(name.eq_str("a\"bé😀"));
        assert!(!name.eq_str("a\"bé"));
        assert!(name.chars().eq("a\"bé😀".chars()));
        assert_eq!(name.char_count(), 5);
        assert_eq!(name.to_cow(), "a\"bé😀");
        let items: Vec<_> = root.get("n").unwrap().items().collect();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_number().unwrap().as_i64(), Some(1));
        assert_eq!(items[1].as_number().unwrap().as_f64(), -2.5);
        assert_eq!(items[2].as_bool(), Some(true));
        assert!(items[3].is_null());
        assert_eq!(root.get("e").unwrap().entries().count(), 0);
        assert!(root.get("missing").is_none());
        assert!(items[0].get("x").is_none());
        assert_eq!(items[0].items().count(), 0);
        let keys: Vec<_> = root.entries().map(|(k, _)| k.raw()).collect();
        assert_eq!(keys, ["name", "n", "e"]);
        let plain = parse(r#""plain é""#).unwrap().root().as_str().unwrap();
        assert_eq!(plain.as_borrowed(), Some("plain é"));
        assert!(matches!(plain.to_cow(), Cow::Borrowed("plain é")));
    }

    #[test]
    fn number_edges() {
        let num = |s: &'static str| RawNumber { text: s };
        assert_eq!(num("9223372036854775807").as_i64(), Some(i64::MAX));
        assert_eq!(num("-9223372036854775808").as_i64(), Some(i64::MIN));
        assert_eq!(num("-9223372036854775809").as_i64(), None);
        assert_eq!(num("9223372036854775808").as_i64(), None);
        assert_eq!(num("9223372036854775808").as_u64(), Some(1 << 63));
        assert_eq!(num("18446744073709551615").as_u64(), Some(u64::MAX));
        assert_eq!(num("18446744073709551616").as_u64(), None);
        assert_eq!(num("18446744073709551616").as_f64(), 18446744073709551616.0);
        assert_eq!(num("-1").as_u64(), None);
        assert_eq!(num("-0").as_u64(), Some(0));
        assert_eq!(num("-0").as_i64(), Some(0));
        assert_eq!(num("1.0").as_i64(), None);
        assert_eq!(num("1e2").as_u64(), None);
        assert_eq!(num("1e2").as_f64(), 100.0);
        assert_eq!(num("1e-400").as_f64(), 0.0);
        for s in [
            "9223372036854775807",
            "18446744073709551616",
            "1e308",
            "-0.0",
        ] {
            assert_eq!(parse(s).unwrap().root().as_number().unwrap().text(), s);
        }
    }

    /// Exercises every accessor; must never panic whatever text it is given.
    fn walk(v: RawValue<'_>, depth: usize) {
        let _ = (v.kind(), v.as_bool(), v.is_null(), v.text(), v.get("a"));
        if let Some(n) = v.as_number() {
            let _ = (n.as_i64(), n.as_u64(), n.as_f64(), n.text());
        }
        if let Some(s) = v.as_str() {
            let _ = (s.chars().count(), s.char_count(), s.eq_str("a"), s.to_cow());
        }
        if depth < 8 {
            v.items().for_each(|i| walk(i, depth + 1));
            for (k, val) in v.entries() {
                let _ = (k.to_cow(), k.raw());
                walk(val, depth + 1);
            }
        }
    }

    #[test]
    fn lookups_tolerate_malformed_spans() {
        for text in [
            "",
            "{",
            "[",
            "{\"a",
            "{\"a\":",
            "{\"a\" 1}",
            "[1,",
            "[,]",
            "\"\\",
            "\"\\u12\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800\"",
            "\"\\é\"",
            "{\"é\\",
            "[[[",
            "]]",
            "{}}",
            "-",
        ] {
            walk(RawValue { text }, 0);
        }
        let odd = RawValue {
            text: "{\"a\":1,\"b\"",
        };
        assert_eq!(odd.entries().count(), 1);
        assert!(odd.get("b").is_none());
    }

    const ALPHABET: &[u8] = b"{}[]\",:\\ \t\n01-+.eEtrufalsn\x00\x1f/bu\xc3\xa9";

    fn arb_string() -> impl Strategy<Value = String> {
        prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter)
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                .map(Value::Number)),
            arb_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((arb_string(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Asserts that `raw` describes `v`; `exact` also demands document order and bit-exact floats.
    fn agree(raw: RawValue<'_>, v: &Value, exact: bool) {
        let kind = match v {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        };
        assert_eq!(raw.kind(), kind, "{}", raw.text());
        assert_eq!(raw.is_null(), v.is_null());
        assert_eq!(raw.as_bool(), v.as_bool());
        assert_eq!(raw.as_number().is_some(), v.is_number());
        assert_eq!(raw.as_str().is_some(), v.is_string());
        assert_eq!(raw.items().count(), v.as_array().map_or(0, Vec::len));
        assert_eq!(raw.entries().count(), v.as_object().map_or(0, |m| m.len()));
        match v {
            Value::Number(n) => {
                let num = raw.as_number().unwrap();
                if num.text() != "-0" {
                    assert_eq!(num.as_i64(), n.as_i64(), "{}", num.text());
                    assert_eq!(num.as_u64(), n.as_u64(), "{}", num.text());
                }
                let (ours, theirs) = (num.as_f64(), n.as_f64().unwrap());
                if exact {
                    assert_eq!(ours.to_bits(), theirs.to_bits(), "{}", num.text());
                } else {
                    assert!(
                        (ours - theirs).abs() <= theirs.abs() * 1e-15,
                        "{}",
                        num.text()
                    );
                }
            }
            Value::String(s) => {
                let js = raw.as_str().unwrap();
                assert!(js.eq_str(s));
                assert!(js.chars().eq(s.chars()));
                assert_eq!(js.char_count(), s.chars().count());
                assert_eq!(js.to_cow(), s.as_str());
                assert_eq!(js.as_borrowed().is_some(), !js.has_escapes());
            }
            Value::Array(a) => raw.items().zip(a).for_each(|(r, v)| agree(r, v, exact)),
            Value::Object(m) => {
                for (k, v) in m {
                    agree(raw.get(k).expect("member present"), v, exact);
                }
                if exact {
                    assert!(raw.entries().zip(m).all(|((k, _), (mk, _))| k.eq_str(mk)));
                }
            }
            _ => {}
        }
    }

    /// Never panics; whatever we accept serde_json accepts, and vice versa unless for a reason
    /// serde_json does not check.
    fn differential(s: &str) {
        let ours = parse(s);
        if let Ok(doc) = ours {
            walk(doc.root(), 0);
        }
        match (ours, serde_json::from_str::<Value>(s)) {
            (Ok(doc), Ok(v)) => agree(doc.root(), &v, false),
            (Ok(_), Err(e)) => panic!("accepted {s:?}, serde_json refused: {e}"),
            (Err(e), Ok(_)) => assert!(
                matches!(
                    e,
                    JsonError::DuplicateKey { .. } | JsonError::TooDeep { .. }
                ),
                "refused {s:?} ({e}), serde_json accepted"
            ),
            (Err(_), Err(_)) => {}
        }
    }

    fn escape_every_char(s: &str) -> String {
        let mut units = [0u16; 2];
        s.chars()
            .flat_map(|c| c.encode_utf16(&mut units).to_vec())
            .map(|u| format!("\\u{u:04x}"))
            .collect()
    }

    /// A generated document: numbers and objects whose keys are `k<n>`, each spelled plainly or
    /// with every character escaped; `distinct` objects drop repeated keys.
    #[derive(Debug, Clone)]
    enum Doc {
        Leaf(u32),
        Obj(bool, Vec<(u16, bool, Doc)>),
    }

    fn arb_doc() -> impl Strategy<Value = Doc> {
        any::<u32>()
            .prop_map(Doc::Leaf)
            .prop_recursive(4, 160, 40, |inner| {
                (
                    any::<bool>(),
                    prop::collection::vec((0u16..48, any::<bool>(), inner), 0..40),
                )
                    .prop_map(|(distinct, members)| Doc::Obj(distinct, members))
            })
    }

    /// Writes `doc`, noting where the first key that repeats one of its object starts.
    fn write_doc(doc: &Doc, out: &mut String, first_dup: &mut Option<usize>) {
        match doc {
            Doc::Leaf(n) => out.push_str(&n.to_string()),
            Doc::Obj(distinct, members) => {
                out.push('{');
                let mut seen = std::collections::HashSet::new();
                let mut written = 0;
                for (k, escape, v) in members {
                    let fresh = seen.insert(*k);
                    if *distinct && !fresh {
                        continue;
                    }
                    if written > 0 {
                        out.push(',');
                    }
                    written += 1;
                    if !fresh && first_dup.is_none() {
                        *first_dup = Some(out.len());
                    }
                    let name = format!("k{k}");
                    let spelled = if *escape {
                        escape_every_char(&name)
                    } else {
                        name
                    };
                    out.push_str(&format!("\"{spelled}\":"));
                    write_doc(v, out, first_dup);
                }
                out.push('}');
            }
        }
    }

    proptest! {
        #[test]
        fn duplicate_keys_are_found_in_objects_of_any_size(doc in arb_doc()) {
            let mut text = String::new();
            let mut first_dup = None;
            write_doc(&doc, &mut text, &mut first_dup);
            let mut table = KeyTable::new();
            match (RawJson::parse_into(&text, JsonLimits::default(), &mut table), first_dup) {
                (Err(JsonError::DuplicateKey { offset }), Some(dup)) => {
                    prop_assert_eq!(offset, dup, "{}", text)
                }
                (Ok(doc), None) => {
                    // The recorded root members are exactly what a second pass reads.
                    let root = doc.root();
                    let count = root.entries().count();
                    let members = Members::of(&text, &table);
                    prop_assert_eq!(
                        members.is_some(),
                        root.kind() == JsonKind::Object && count <= 16,
                        "{}", text
                    );
                    if let Some(m) = members {
                        prop_assert_eq!(m.iter().count(), count);
                        for ((k, v), (k2, v2)) in m.iter().zip(root.entries()) {
                            prop_assert_eq!(k.raw(), k2.raw());
                            prop_assert_eq!(k.has_escapes(), k2.has_escapes());
                            prop_assert_eq!(v.text(), v2.text());
                        }
                    }
                }
                (other, dup) => prop_assert!(false, "{text}: {other:?}, expected duplicate at {dup:?}"),
            }
        }

        #[test]
        fn serialized_values_parse_and_agree(v in arb_value()) {
            let compact = serde_json::to_string(&v).unwrap();
            agree(parse(&compact).unwrap().root(), &v, true);
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            agree(parse(&pretty).unwrap().root(), &v, true);
        }

        #[test]
        fn escaped_duplicate_keys_are_refused(
            members in prop::collection::vec((arb_string(), arb_value()), 1..8),
            pick in any::<prop::sample::Index>(),
        ) {
            let map: serde_json::Map<String, Value> = members.into_iter().collect();
            let body = serde_json::to_string(&Value::Object(map.clone())).unwrap();
            let key = map.keys().nth(pick.index(map.len())).unwrap();
            let offset = body.len();
            let text = format!("{},\"{}\":0}}", &body[..body.len() - 1], escape_every_char(key));
            prop_assert_eq!(parse(&text).unwrap_err(), JsonError::DuplicateKey { offset });
        }

        #[test]
        fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
            differential(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn json_alphabet(bytes in prop::collection::vec(prop::sample::select(ALPHABET), 0..32)) {
            differential(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn mutated_json(
            v in arb_value(),
            edits in prop::collection::vec(
                (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(ALPHABET)),
                1..4,
            ),
        ) {
            let mut bytes = serde_json::to_string(&v).unwrap().into_bytes();
            for (at, op, c) in edits {
                let at = at.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(at, c),
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ if at < bytes.len() => bytes[at] = c,
                    _ => bytes.push(c),
                }
            }
            differential(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn lookups_never_panic(text in "\\PC{0,40}|[\\[\\]{}\",:\\\\u0-9a-f ]{0,40}") {
            walk(RawValue { text: &text }, 0);
        }
    }
}
