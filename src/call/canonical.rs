//! One canonical form for tool-call arguments, whether they arrive as raw JSON text or as a
//! parsed [`serde_json::Value`]: what approval grants hash ([`ArgsHash`](crate::escalation::ArgsHash))
//! and what loop detection fingerprints.
//!
//! # The form
//!
//! Canonical JSON text with no whitespace, in the spirit of RFC 8785 (JCS):
//!
//! - **objects**: members sorted by key, keys compared as their *unescaped* text in Unicode code
//!   point order (which is UTF-8 byte order); duplicate keys never reach this point (the strict
//!   scanner refuses them);
//! - **strings**: unescaped, then written with the minimal escaping JCS uses: `\"`, `\\`, `\b`,
//!   `\f`, `\n`, `\r`, `\t`, `\u00xx` (lower-case hex) for the other control characters, every
//!   other character as its UTF-8 bytes (`"\u00e9"` and `"é"` are the same string);
//! - **numbers**: one exact decimal literal per numeric value (below);
//! - `true`, `false`, `null` as themselves; arrays in order; [`Args::None`] is `{}`.
//!
//! # Numbers: exact, not `f64`
//!
//! A number literal is read as sign, significant digits `D` and a decimal exponent `E` (value
//! `±D × 10^E`, `D` without leading or trailing zeros), with no rounding at any step. Then:
//!
//! - zero, whatever its spelling or sign (`0`, `-0`, `0.0e7`), is `0`;
//! - an integer value (`E >= 0`) is written as its full integer literal: `1.0`, `1e0`, `10e-1`
//!   and `1` are all `1`; `1e3` is `1000`; `100000000000000000000` and `100000000000000008191`
//!   stay two different literals, at any size;
//! - a non-integral value whose leading digit lies at most six places after the decimal point is
//!   written as a plain decimal (`1.5`, `0.25`, `-0.000001`), anything smaller in scientific
//!   form with one digit before the point (`1e-7`, `1.25e-10`); trailing zeros never appear.
//!
//! JCS instead prints every number as the shortest `f64` that rounds to it (ECMAScript's
//! `Number.prototype.toString`). That is deliberately *not* done here: it would make
//! `100000000000000000000` and `100000000000000008191` (and any two decimals with more than
//! 17 significant digits that round to one `f64`) hash alike, so an approval granted for one
//! amount would authorise another. A tool receives the literal, so the literal is what is
//! bound.
//!
//! # Raw text and parsed values
//!
//! Raw text and the `Value` that `serde_json` parses from it give the same canonical bytes
//! whenever the `Value` holds every number exactly: integers within `i64`/`u64`, and decimals
//! that are the shortest representation of their `f64` (what `serde_json` itself prints). This
//! crate builds `serde_json` *without* `arbitrary_precision`, so a parsed `Value` has already
//! rounded any other number to the `f64` it holds, and its canonical form is that `f64`'s
//! shortest decimal: a `Value` parsed from `100000000000000008191` canonicalises as
//! `100000000000000000000`. Raw text keeps the literal. Hash what the tool will execute; the
//! guard's escalation stage refuses to queue raw arguments whose numbers a `Value` cannot show
//! approvers exactly (see [`ArgsError::Inexact`](crate::escalation::ArgsError::Inexact)), so
//! a request's shown arguments, its raw text and its grant always agree.
//!
//! # Cost
//!
//! The canonical bytes are streamed into a [`CanonicalSink`] (a hasher), through a 256-byte
//! buffer, without building a string. An object's members (borrowed spans of the text) are
//! sorted in place in an array on the stack when there are at most 16 of them, so small
//! arguments are canonicalised without touching the heap; larger objects sort a vector of
//! borrowed members. Raw text is validated by the strict scanner first. Nesting is
//! limited to [`MAX_DEPTH`] (64) levels for both forms (the scanner's limit for raw text, an
//! explicit check for values), so recursion stays bounded.
//!
//! ```
//! use serde_json::json;
//! use tollgate::Args;
//! use tollgate::call::canonical;
//!
//! let raw = r#"{ "to": "caf\u00e9", "amount": 1.50e3, "n": 10e-1 }"#;
//! let canon = canonical::to_string(Args::Json(raw))?;
//! assert_eq!(canon, r#"{"amount":1500,"n":1,"to":"café"}"#);
//! let parsed = json!({"n": 1, "to": "café", "amount": 1500.0});
//! assert_eq!(canonical::to_string(Args::Value(&parsed))?, canon);
//! // Big integers stay exact.
//! assert_ne!(
//!     canonical::to_string(Args::Json("100000000000000000000"))?,
//!     canonical::to_string(Args::Json("100000000000000008191"))?,
//! );
//! # Ok::<(), tollgate::call::JsonError>(())
//! ```

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::Value;

use super::Args;
use super::json::{JsonError, JsonKind, JsonLimits, JsonStr, MAX_DEPTH_CAP, RawJson, RawValue};

/// Receives canonical bytes, piece by piece (a hasher, a buffer).
pub trait CanonicalSink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl CanonicalSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl CanonicalSink for sha2::Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        sha2::Digest::update(self, bytes);
    }
}

/// Deepest nesting canonicalised, for raw text and parsed values alike: the one depth limit of
/// every record tollgate writes, so a record always stays inside `serde_json`'s recursion limit.
pub const MAX_DEPTH: usize = MAX_DEPTH_CAP;

/// Limits for raw text canonicalised by [`write()`] and [`to_string()`]: 1 MiB, nesting
/// [`MAX_DEPTH`].
pub const LIMITS: JsonLimits = JsonLimits {
    max_bytes: 1 << 20,
    max_depth: MAX_DEPTH_CAP,
};

/// Objects with at most this many members are sorted in an array on the stack (no allocation;
/// at most 16 × 40 bytes per nesting level, so under 45 KiB at the deepest).
const INLINE_MEMBERS: usize = 16;

/// Bytes collected before they are handed to the sink: a hasher's per-call overhead is paid
/// once per buffer instead of once per token.
const SINK_BUFFER: usize = 256;

/// Exponents with more significant digits than this are refused (the value is either zero, or
/// so far below `f64`'s range that it cannot be a meaningful argument); keeps exponent
/// arithmetic exact in `i64`.
const MAX_EXPONENT_DIGITS: usize = 18;

/// Writes the canonical form of `args` into `out`; raw text is validated with [`LIMITS`].
///
/// Errors: raw text the strict scanner refuses; a value nested deeper than [`MAX_DEPTH`]
/// ([`JsonError::TooDeep`] with offset 0, since a parsed value has no offsets); a number whose
/// exponent has more than 18 significant digits ([`JsonError::NumberOutOfRange`]). On error,
/// `out` holds a partial form and must be discarded.
pub fn write(args: Args<'_>, out: &mut impl CanonicalSink) -> Result<(), JsonError> {
    write_with(args, LIMITS, out)
}

/// [`write()`] with explicit limits for raw text (their depth is capped at [`MAX_DEPTH`]).
pub fn write_with(
    args: Args<'_>,
    limits: JsonLimits,
    out: &mut impl CanonicalSink,
) -> Result<(), JsonError> {
    let mut out = Buffered {
        out,
        buf: [0; SINK_BUFFER],
        len: 0,
    };
    let r = match args {
        Args::None => {
            out.put(b"{}");
            Ok(())
        }
        Args::Value(v) => write_value(v, 1, &mut out),
        Args::Json(text) => RawJson::parse(text, limits).and_then(|doc| {
            write_raw(doc.root(), &mut out).map_err(|at| JsonError::NumberOutOfRange {
                offset: offset_in(text, at),
            })
        }),
    };
    out.flush();
    r
}

/// A small buffer in front of a sink.
struct Buffered<'s, S: CanonicalSink> {
    out: &'s mut S,
    buf: [u8; SINK_BUFFER],
    len: usize,
}

impl<S: CanonicalSink> Buffered<'_, S> {
    fn flush(&mut self) {
        if self.len > 0 {
            self.out.put(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<S: CanonicalSink> CanonicalSink for Buffered<'_, S> {
    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > SINK_BUFFER {
            self.flush();
            if bytes.len() > SINK_BUFFER {
                self.out.put(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

/// The canonical form of `args` as a string (for display and tests; hashing streams instead).
pub fn to_string(args: Args<'_>) -> Result<String, JsonError> {
    let mut out = Vec::new();
    write(args, &mut out)?;
    // Every piece written is valid UTF-8 (ASCII punctuation, validated string contents and
    // whole encoded characters); the fallback cannot happen.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// Byte offset of `part` inside `whole` (0 if it is not a subslice).
fn offset_in(whole: &str, part: &str) -> usize {
    (part.as_ptr() as usize)
        .checked_sub(whole.as_ptr() as usize)
        .filter(|&o| o <= whole.len())
        .unwrap_or(0)
}

// ------------------------------------------------------------------------------------------------
// Raw text
// ------------------------------------------------------------------------------------------------

/// Writes a validated raw value. The error is the text of a number whose exponent is too large.
/// Recursion is bounded by the scanner's depth limit.
fn write_raw<'a>(v: RawValue<'a>, out: &mut impl CanonicalSink) -> Result<(), &'a str> {
    match v.kind() {
        JsonKind::Null => out.put(b"null"),
        JsonKind::Bool => out.put(if v.as_bool() == Some(true) {
            b"true"
        } else {
            b"false"
        }),
        JsonKind::Number => {
            // The number's text borrowed from the document, so an error can point into it.
            let text = v.text();
            if write_number(text, out).is_err() {
                return Err(text);
            }
        }
        JsonKind::String => {
            if let Some(s) = v.as_str() {
                write_raw_str(&s, out);
            }
        }
        JsonKind::Array => {
            out.put(b"[");
            for (i, item) in v.items().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_raw(item, out)?;
            }
            out.put(b"]");
        }
        JsonKind::Object => write_raw_object(v, out)?,
    }
    Ok(())
}

fn key_cmp(a: &JsonStr<'_>, b: &JsonStr<'_>) -> Ordering {
    if a.has_escapes() || b.has_escapes() {
        a.chars().cmp(b.chars())
    } else {
        // UTF-8 byte order is code point order.
        a.raw().cmp(b.raw())
    }
}

fn write_member<'a>(
    i: usize,
    k: &JsonStr<'a>,
    v: RawValue<'a>,
    out: &mut impl CanonicalSink,
) -> Result<(), &'a str> {
    if i > 0 {
        out.put(b",");
    }
    write_raw_str(k, out);
    out.put(b":");
    write_raw(v, out)
}

fn write_raw_object<'a>(v: RawValue<'a>, out: &mut impl CanonicalSink) -> Result<(), &'a str> {
    type Member<'a> = (JsonStr<'a>, RawValue<'a>);
    let by_key = |a: &Member<'_>, b: &Member<'_>| key_cmp(&a.0, &b.0);
    let mut inline: [Option<Member<'a>>; INLINE_MEMBERS] = [None; INLINE_MEMBERS];
    let mut n = 0usize;
    let mut spilled: Vec<Member<'a>> = Vec::new();
    for m in v.entries() {
        if n < INLINE_MEMBERS {
            inline[n] = Some(m);
        } else {
            if spilled.is_empty() {
                spilled.extend(inline.iter().flatten().copied());
            }
            spilled.push(m);
        }
        n += 1;
    }
    out.put(b"{");
    // Keys are unique (the scanner refuses duplicates), so an unstable sort is exact; it sorts
    // in place.
    if spilled.is_empty() {
        let members = &mut inline[..n];
        members.sort_unstable_by(|a, b| match (a, b) {
            (Some(a), Some(b)) => by_key(a, b),
            _ => Ordering::Equal,
        });
        for (i, (k, val)) in members.iter().flatten().enumerate() {
            write_member(i, k, *val, out)?;
        }
    } else {
        spilled.sort_unstable_by(by_key);
        for (i, (k, val)) in spilled.iter().enumerate() {
            write_member(i, k, *val, out)?;
        }
    }
    out.put(b"}");
    Ok(())
}

fn write_raw_str(s: &JsonStr<'_>, out: &mut impl CanonicalSink) {
    out.put(b"\"");
    if s.has_escapes() {
        let mut buf = [0u8; 4];
        for c in s.chars() {
            write_char(c, &mut buf, out);
        }
    } else {
        // Validated text has no unescaped quote, backslash or control character: the content
        // is already canonical.
        out.put(s.raw().as_bytes());
    }
    out.put(b"\"");
}

fn write_char(c: char, buf: &mut [u8; 4], out: &mut impl CanonicalSink) {
    match c {
        '"' => out.put(b"\\\""),
        '\\' => out.put(b"\\\\"),
        '\u{8}' => out.put(b"\\b"),
        '\u{c}' => out.put(b"\\f"),
        '\n' => out.put(b"\\n"),
        '\r' => out.put(b"\\r"),
        '\t' => out.put(b"\\t"),
        c if (c as u32) < 0x20 => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let b = c as u8;
            out.put(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
        c => out.put(c.encode_utf8(buf).as_bytes()),
    }
}

// ------------------------------------------------------------------------------------------------
// Parsed values
// ------------------------------------------------------------------------------------------------

fn too_deep() -> JsonError {
    JsonError::TooDeep {
        offset: 0,
        limit: MAX_DEPTH_CAP,
    }
}

/// Writes a parsed value; `depth` is the nesting depth of `v` if it is a container.
fn write_value(v: &Value, depth: usize, out: &mut impl CanonicalSink) -> Result<(), JsonError> {
    match v {
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => {
            let mut buf = StackText::new();
            // A `Number` prints as an integer or as the shortest decimal of its finite `f64`,
            // at most ~25 bytes: the buffer cannot overflow.
            write!(buf, "{n}").map_err(|_| JsonError::NumberOutOfRange { offset: 0 })?;
            write_number(buf.as_str(), out)
                .map_err(|()| JsonError::NumberOutOfRange { offset: 0 })?;
        }
        Value::String(s) => write_value_str(s, out),
        Value::Array(items) => {
            if depth > MAX_DEPTH_CAP {
                return Err(too_deep());
            }
            out.put(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_value(item, depth + 1, out)?;
            }
            out.put(b"]");
        }
        Value::Object(map) => {
            if depth > MAX_DEPTH_CAP {
                return Err(too_deep());
            }
            out.put(b"{");
            // Without serde_json's `preserve_order` a map iterates in key order already (one
            // pass, no allocation); with it, sort a vector of borrowed members.
            let sorted = map
                .keys()
                .zip(map.keys().skip(1))
                .all(|(a, b)| a.as_bytes() < b.as_bytes());
            let mut member = |i: usize, k: &str, val: &Value| {
                if i > 0 {
                    out.put(b",");
                }
                write_value_str(k, out);
                out.put(b":");
                write_value(val, depth + 1, out)
            };
            if sorted {
                for (i, (k, val)) in map.iter().enumerate() {
                    member(i, k, val)?;
                }
            } else if map.len() <= INLINE_MEMBERS {
                // Small objects sort on the stack, as raw JSON does: the allow path stays free
                // of allocations when a dependency turns `preserve_order` on (rig-core does).
                let mut inline: [Option<(&String, &Value)>; INLINE_MEMBERS] =
                    [None; INLINE_MEMBERS];
                for (slot, m) in inline.iter_mut().zip(map.iter()) {
                    *slot = Some(m);
                }
                let members = &mut inline[..map.len()];
                // Map keys are unique, so an unstable sort is exact.
                members.sort_unstable_by(|a, b| match (a, b) {
                    (Some(a), Some(b)) => a.0.as_bytes().cmp(b.0.as_bytes()),
                    _ => Ordering::Equal,
                });
                for (i, (k, val)) in members.iter().flatten().enumerate() {
                    member(i, k, val)?;
                }
            } else {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (i, (k, val)) in members.into_iter().enumerate() {
                    member(i, k, val)?;
                }
            }
            out.put(b"}");
        }
    }
    Ok(())
}

fn write_value_str(s: &str, out: &mut impl CanonicalSink) {
    out.put(b"\"");
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut buf = [0u8; 4];
    for (i, &b) in bytes.iter().enumerate() {
        if b < 0x20 || b == b'"' || b == b'\\' {
            out.put(&bytes[start..i]);
            write_char(char::from(b), &mut buf, out);
            start = i + 1;
        }
    }
    out.put(&bytes[start..]);
    out.put(b"\"");
}

/// A small text buffer on the stack, for formatting one number without allocating.
struct StackText {
    buf: [u8; 64],
    len: usize,
}

impl StackText {
    fn new() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(std::fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Numbers
// ------------------------------------------------------------------------------------------------

/// A number literal taken apart, exactly: `±D × 10^exp`, `D` = `digits` without leading or
/// trailing zeros (`None` for zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decimal<'a> {
    negative: bool,
    /// Integer-part and fraction-part digits; `D` is the run from `first` to `last` (inclusive)
    /// of their concatenation.
    int: &'a [u8],
    frac: &'a [u8],
    first: usize,
    last: usize,
    /// Decimal exponent of `D`'s last digit.
    exp: i64,
}

impl Decimal<'_> {
    fn len(&self) -> usize {
        self.last - self.first + 1
    }

    fn put_digits(&self, from: usize, to: usize, out: &mut impl CanonicalSink) {
        // `from..to` indexes D; map onto the two slices without copying.
        let (a, b) = (self.first + from, self.first + to);
        let il = self.int.len();
        if a < il {
            out.put(&self.int[a..b.min(il)]);
        }
        if b > il {
            out.put(&self.frac[a.max(il) - il..b - il]);
        }
    }
}

/// Parses a JSON number literal exactly. `Ok(None)`: the value is zero. `Err`: not a number
/// literal, or an exponent with more than [`MAX_EXPONENT_DIGITS`] significant digits on a
/// non-zero value.
fn decimal(text: &str) -> Result<Option<Decimal<'_>>, ()> {
    let b = text.as_bytes();
    let digits_from = |mut i: usize| {
        let s = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (s, i)
    };
    let negative = b.first() == Some(&b'-');
    let (is, ie) = digits_from(usize::from(negative));
    if is == ie {
        return Err(());
    }
    let int = &b[is..ie];
    let mut i = ie;
    let mut frac: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        let (fs, fe) = digits_from(i + 1);
        if fs == fe {
            return Err(());
        }
        frac = &b[fs..fe];
        i = fe;
    }
    let mut exp_neg = false;
    let mut exp_digits: &[u8] = &[];
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if let Some(&s @ (b'+' | b'-')) = b.get(i) {
            exp_neg = s == b'-';
            i += 1;
        }
        let (es, ee) = digits_from(i);
        if es == ee {
            return Err(());
        }
        exp_digits = &b[es..ee];
        i = ee;
    }
    if i != b.len() {
        return Err(());
    }
    let n = int.len() + frac.len();
    let at = |k: usize| {
        if k < int.len() {
            int[k]
        } else {
            frac[k - int.len()]
        }
    };
    let Some(first) = (0..n).find(|&k| at(k) != b'0') else {
        return Ok(None);
    };
    let last = (0..n).rev().find(|&k| at(k) != b'0').unwrap_or(first);
    let sig = exp_digits
        .iter()
        .position(|&d| d != b'0')
        .map_or(&[][..], |p| &exp_digits[p..]);
    if sig.len() > MAX_EXPONENT_DIGITS {
        return Err(());
    }
    let e = sig
        .iter()
        .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    let e = if exp_neg { -e } else { e };
    // The last significant digit sits at position `last`; the units digit at `int.len() - 1`.
    // Text is at most 4 GiB (the scanner's limit), so these fit in i64 with room to spare.
    let units = i64::try_from(int.len()).map_err(|_| ())? - 1;
    let last_i = i64::try_from(last).map_err(|_| ())?;
    Ok(Some(Decimal {
        negative,
        int,
        frac,
        first,
        last,
        exp: e + units - last_i,
    }))
}

/// Writes the canonical literal of the number `text` (see the module docs).
fn write_number(text: &str, out: &mut impl CanonicalSink) -> Result<(), ()> {
    let Some(d) = decimal(text)? else {
        out.put(b"0");
        return Ok(());
    };
    if d.negative {
        out.put(b"-");
    }
    let len = d.len();
    if d.exp >= 0 {
        // An integer: all its digits. `exp` is bounded by the f64 range check of the scanner
        // (~308) for text, and by f64 itself for values.
        d.put_digits(0, len, out);
        put_zeros(usize::try_from(d.exp).map_err(|_| ())?, out);
        return Ok(());
    }
    // Decimal exponent of the leading digit.
    let lead = d.exp + i64::try_from(len).map_err(|_| ())? - 1;
    if lead >= 0 {
        let point = usize::try_from(lead).map_err(|_| ())? + 1; // digits before the point
        d.put_digits(0, point, out);
        out.put(b".");
        d.put_digits(point, len, out);
    } else if lead >= -6 {
        out.put(b"0.");
        put_zeros(usize::try_from(-lead - 1).map_err(|_| ())?, out);
        d.put_digits(0, len, out);
    } else {
        d.put_digits(0, 1, out);
        if len > 1 {
            out.put(b".");
            d.put_digits(1, len, out);
        }
        out.put(b"e-");
        let mut buf = StackText::new();
        write!(buf, "{}", lead.unsigned_abs()).map_err(|_| ())?;
        out.put(buf.as_str().as_bytes());
    }
    Ok(())
}

fn put_zeros(mut n: usize, out: &mut impl CanonicalSink) {
    const ZEROS: &[u8; 64] = &[b'0'; 64];
    while n > 0 {
        let k = n.min(ZEROS.len());
        out.put(&ZEROS[..k]);
        n -= k;
    }
}

/// The first number in validated raw text whose value a parsed [`Value`] does not hold exactly
/// (its canonical form differs from that of the number `serde_json` parses it to): its byte
/// offset and literal. `None` when every number round-trips.
pub(crate) fn first_inexact_number(text: &str) -> Result<Option<(usize, &str)>, JsonError> {
    let doc = RawJson::parse(text, LIMITS)?;
    Ok(find_inexact(doc.root()).map(|lit| (offset_in(text, lit), lit)))
}

fn find_inexact(v: RawValue<'_>) -> Option<&str> {
    match v.kind() {
        JsonKind::Number => {
            let lit = v.text();
            let parsed: Value = serde_json::from_str(lit).ok()?;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let exact = write_number(lit, &mut a).is_ok()
                && write_value(&parsed, 1, &mut b).is_ok()
                && a == b;
            (!exact).then_some(lit)
        }
        JsonKind::Array => v.items().find_map(find_inexact),
        JsonKind::Object => v.entries().find_map(|(_, val)| find_inexact(val)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn raw(s: &str) -> String {
        to_string(Args::Json(s)).unwrap()
    }

    fn val(v: &Value) -> String {
        to_string(Args::Value(v)).unwrap()
    }

    fn num(s: &str) -> String {
        let mut out = Vec::new();
        write_number(s, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_have_one_exact_spelling() {
        for (lit, canon) in [
            ("0", "0"),
            ("-0", "0"),
            ("0.000", "0"),
            ("-0.0e-5", "0"),
            ("0e99999999999999999999999", "0"),
            ("1", "1"),
            ("1.0", "1"),
            ("1e0", "1"),
            ("10e-1", "1"),
            ("1E+0", "1"),
            ("0.1e1", "1"),
            ("100e-2", "1"),
            ("1e3", "1000"),
            ("1.5e3", "1500"),
            ("-12.340", "-12.34"),
            ("1.5", "1.5"),
            ("15e-1", "1.5"),
            ("0.25", "0.25"),
            ("0.000001", "0.000001"),
            ("1e-6", "0.000001"),
            ("1e-7", "1e-7"),
            ("0.0000001", "1e-7"),
            ("-1.25e-10", "-1.25e-10"),
            ("123.456e-300", "1.23456e-298"),
            ("1e308", &format!("1{}", "0".repeat(308))),
            ("100000000000000000000", "100000000000000000000"),
            ("100000000000000008191", "100000000000000008191"),
            ("0.30000000000000004441", "0.30000000000000004441"),
            ("1e-400", "1e-400"),
            ("00012e-0000000000000000000000001", "1.2"),
        ] {
            assert_eq!(num(lit), canon, "{lit}");
        }
        let mut out = Vec::new();
        assert!(write_number("1e-9999999999999999999", &mut out).is_err());
        for bad in ["", "-", "1.", ".5", "1e", "1e+", "x", "1x"] {
            assert!(decimal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn raw_and_parsed_agree_on_key_order_escapes_and_spelling() {
        let a = raw(r#"{"b":[1.0,{"y":"\u00e9","x":null}],"a":true,"\u0061b":"\/\t"}"#);
        assert_eq!(a, r#"{"a":true,"ab":"/\t","b":[1,{"x":null,"y":"é"}]}"#);
        let v = json!({"ab": "/\t", "a": true, "b": [1, {"x": null, "y": "é"}]});
        assert_eq!(val(&v), a);
        assert_eq!(raw("\"\\u001f\\\"\\\\\""), r#""\u001f\"\\""#);
        assert_eq!(val(&json!("\u{1f}\"\\")), r#""\u001f\"\\""#);
        assert_eq!(to_string(Args::None).unwrap(), "{}");
    }

    #[test]
    fn big_objects_sort_through_the_vector_path() {
        let keys: Vec<String> = (0..40).rev().map(|i| format!("k{i:02}")).collect();
        let text = format!(
            "{{{}}}",
            keys.iter()
                .map(|k| format!("\"{k}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut sorted = keys.clone();
        sorted.sort();
        let expect = format!(
            "{{{}}}",
            sorted
                .iter()
                .map(|k| format!("\"{k}\":1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(raw(&text), expect);
    }

    #[test]
    fn keys_sort_by_code_point_after_unescaping() {
        // U+E000 sorts before U+1F600 in code point order (JCS's UTF-16 order would differ).
        let t = r#"{"\ud83d\ude00":1,"\ue000":2,"a":3,"\u0041":4}"#;
        assert_eq!(raw(t), "{\"A\":4,\"a\":3,\"\u{e000}\":2,\"\u{1f600}\":1}");
    }

    #[test]
    fn values_deeper_than_the_cap_are_refused() {
        let mut v = json!(1);
        for _ in 0..MAX_DEPTH_CAP {
            v = json!([v]);
        }
        assert!(to_string(Args::Value(&v)).is_ok());
        let v = json!({ "x": v });
        assert!(matches!(
            to_string(Args::Value(&v)),
            Err(JsonError::TooDeep {
                limit: MAX_DEPTH_CAP,
                ..
            })
        ));
    }

    #[test]
    fn inexact_numbers_are_found() {
        assert_eq!(first_inexact_number(r#"{"a":[1,2.5,1e20]}"#).unwrap(), None);
        let t = r#"{"a":[1, 100000000000000008191]}"#;
        assert_eq!(
            first_inexact_number(t).unwrap(),
            Some((9, "100000000000000008191"))
        );
        assert!(
            first_inexact_number(r#"{"a":0.30000000000000004441}"#)
                .unwrap()
                .is_some()
        );
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]{0,3}",
            "\\PC{0,6}",
            Just("\u{1f}\"\\\u{e000}\u{1f600}".to_string()),
        ]
    }

    fn arb_number() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            (-1000i64..1000, 0u32..4)
                .prop_map(|(m, s)| Value::from(m as f64 / 10f64.powi(s as i32))),
        ]
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            arb_number(),
            arb_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(arb_string(), inner, 0..20)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Escapes every character of a JSON text's strings as `\uXXXX` (keys included).
    fn escape_strings(text: &str) -> String {
        let mut out = String::new();
        let mut in_str = false;
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if !in_str {
                in_str = c == '"';
                out.push(c);
                continue;
            }
            match c {
                '"' => {
                    in_str = false;
                    out.push(c);
                }
                '\\' => {
                    out.push(c);
                    if let Some(n) = chars.next() {
                        out.push(n);
                        if n == 'u' {
                            out.extend(chars.by_ref().take(4));
                        }
                    }
                }
                c => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
            }
        }
        out
    }

    /// An equal literal in another spelling: mantissa times ten and exponent minus one, or a
    /// trailing fraction zero, or zero with an exponent.
    fn respell_number(s: &str) -> String {
        let (m, e) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i64>().unwrap()),
            None => (s, 0),
        };
        let sign = if m.starts_with('-') { "-" } else { "" };
        if m.trim_start_matches('-')
            .bytes()
            .all(|c| c == b'0' || c == b'.')
        {
            return format!("{sign}0.0e{}", e + 3);
        }
        if m.contains('.') {
            format!("{m}00E{e:+}")
        } else {
            format!("{m}0e{}", e - 1)
        }
    }

    /// Rewrites a value's text: members in reverse order, whitespace, numbers respelled.
    fn respell(v: &Value) -> String {
        match v {
            Value::Number(n) => respell_number(&n.to_string()),
            Value::Array(items) => format!(
                "[ {} ]",
                items.iter().map(respell).collect::<Vec<_>>().join(" , ")
            ),
            Value::Object(m) => format!(
                "{{ {} }}",
                m.iter()
                    .rev()
                    .map(|(k, v)| format!("{} : {}", Value::String(k.clone()), respell(v)))
                    .collect::<Vec<_>>()
                    .join(" , ")
            ),
            other => other.to_string(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn raw_and_parsed_forms_give_the_same_canonical_bytes(v in arb_value()) {
            let text = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(raw(&text), val(&v));
            // Every string escaped differently: same form.
            prop_assert_eq!(raw(&escape_strings(&text)), val(&v));
            // Keys in reverse order, whitespace, numbers respelled: same form.
            let other = respell(&v);
            prop_assert_eq!(raw(&other), val(&v), "{}", other);
            // Parsing the raw text again gives the same form whenever serde_json's parser
            // gives back the same value (without its `float_roundtrip` feature it may round a
            // float near the subnormal range differently; the form then differs, as it must).
            let reparsed: Value = serde_json::from_str(&text).unwrap();
            if reparsed == v {
                prop_assert_eq!(val(&reparsed), val(&v));
            }
        }

        #[test]
        fn distinct_big_integers_differ(a in "[1-9][0-9]{19,40}", b in "[1-9][0-9]{19,40}") {
            prop_assume!(a != b);
            prop_assert_ne!(raw(&a), raw(&b));
            prop_assert_eq!(raw(&a), a.clone());
            prop_assert_eq!(raw(&format!("{a}.000e0")), a);
        }

        #[test]
        fn equal_decimals_in_any_spelling_agree(m in "[1-9][0-9]{0,30}", shift in 0usize..40, zeros in 0usize..5) {
            // m × 10^-shift written three ways.
            let a = format!("{m}e-{shift}");
            let b = format!("{m}{}e-{}", "0".repeat(zeros), shift + zeros);
            let c = if shift == 0 {
                m.clone()
            } else if shift < m.len() {
                format!("{}.{}", &m[..m.len() - shift], &m[m.len() - shift..])
            } else {
                format!("0.{}{m}", "0".repeat(shift - m.len()))
            };
            prop_assert_eq!(raw(&a), raw(&b));
            prop_assert_eq!(raw(&a), raw(&c));
        }
    }
}
