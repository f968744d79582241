//! One read-only view over both argument representations (`&serde_json::Value` and validated raw
//! JSON text), so every rule is written once and neither path allocates.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use crate::call::json::{
    ArrayIter, JsonKind, JsonStr, MemberIter, Members, ObjectIter, RawNumber, RawValue,
};

/// A JSON number as found in the arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    I(i64),
    U(u64),
    /// A float, and whether it is *exactly* the number the tool will see. Raw literals with more
    /// than 15 significant digits (or integers beyond 64 bits) are inexact: the nearest `f64` may
    /// compare equal to a bound the true value exceeds. Non-finite values (serde_json's
    /// `arbitrary_precision` can carry `1e400`) are never within any bound.
    F(f64, bool),
}

/// 2^53: integers of smaller magnitude convert to and from `f64` exactly.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

impl Num {
    /// Whether the number has no fractional part (JSON Schema's notion of integer: `3.0` counts).
    pub(crate) fn is_integer(self) -> bool {
        match self {
            Num::I(_) | Num::U(_) => true,
            Num::F(f, _) => f.is_finite() && f.fract() == 0.0,
        }
    }

    /// Whether the number is finite (every integer is).
    pub(crate) fn is_finite(self) -> bool {
        match self {
            Num::I(_) | Num::U(_) => true,
            Num::F(f, _) => f.is_finite(),
        }
    }

    fn int(self) -> Option<i128> {
        match self {
            Num::I(i) => Some(i128::from(i)),
            Num::U(u) => Some(i128::from(u)),
            Num::F(..) => None,
        }
    }

    /// Exact comparison of an integer with a finite bound.
    fn cmp_int(i: i128, bound: f64) -> Ordering {
        if bound.fract() == 0.0 && bound.abs() < 1e38 {
            // Integral bound within i128: compare exactly.
            i.cmp(&(bound as i128))
        } else if bound.fract() != 0.0 {
            // A bound with a fraction is below 2^53 in magnitude, where an integer converted to
            // f64 cannot round across it.
            (i as f64).partial_cmp(&bound).unwrap_or(Ordering::Less)
        } else if bound > 0.0 {
            Ordering::Less
        } else {
            Ordering::Greater
        }
    }

    /// `true` if the number is, or may be, below `lo` (fail closed when it cannot be told).
    pub(crate) fn below(self, lo: f64) -> bool {
        match (self.int(), self) {
            (Some(i), _) => Self::cmp_int(i, lo) == Ordering::Less,
            (None, Num::F(f, exact)) => !f.is_finite() || if exact { f < lo } else { f <= lo },
            (None, _) => true,
        }
    }

    /// `true` if the number is, or may be, above `hi` (fail closed when it cannot be told).
    pub(crate) fn above(self, hi: f64) -> bool {
        match (self.int(), self) {
            (Some(i), _) => Self::cmp_int(i, hi) == Ordering::Greater,
            (None, Num::F(f, exact)) => !f.is_finite() || if exact { f > hi } else { f >= hi },
            (None, _) => true,
        }
    }

    /// Equality with an enum value from the policy; never true when it cannot be told exactly.
    pub(crate) fn eq_value(self, v: &serde_json::Number) -> bool {
        let want_int = v
            .as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from));
        match (self.int(), self) {
            (Some(i), _) => match want_int {
                Some(w) => i == w,
                None => v
                    .as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < EXACT_INT && f as i128 == i),
            },
            (None, Num::F(f, exact)) => {
                if !exact || !f.is_finite() {
                    return false;
                }
                match want_int {
                    Some(w) => f.fract() == 0.0 && f.abs() < EXACT_INT && f as i128 == w,
                    None => v.as_f64() == Some(f),
                }
            }
            (None, _) => false,
        }
    }
}

/// Most significant digits of an argument bound (`f64::DIGITS`).
const MAX_BOUND_DIGITS: usize = 15;

/// Checks that `min`/`max` bound `b` is compared exactly; returns why not.
///
/// A bound reaches the boundary as a double `B` (a document's float literal is parsed to the
/// nearest double, TOML and JSON numbers being binary64). It stands for the decimal `b`, the
/// shortest decimal that parses back to `B` (what Rust and serde_json print for it). Arguments
/// are compared with `B` by [`Num::below`] and [`Num::above`], which gives exactly the answer
/// the decimal comparison with `b` gives, or fails closed, when:
///
/// 1. **`b` has at most 15 significant digits.** Distinct decimals of at most 15 significant
///    digits map to distinct doubles, in the same order (15 = `f64::DIGITS`), so an argument
///    literal with at most 15 significant digits compares with `B` as it does with `b`. One
///    with more is compared fail-closed (`A >= B` counts as above a maximum), since rounding is
///    monotonic. An argument given as a double (a parsed `serde_json::Value`) stands for its own
///    shortest decimal, and shortest decimals are in the order of their doubles.
/// 2. **An integral `B` is below 2^53 in magnitude**, where every integer is a double: an
///    integer literal written in the document is then `B` exactly (above it,
///    `max = 9007199254740995` is stored as 9007199254740996 and would admit that value), and
///    integer arguments are compared with it exactly. A non-integral `b` with at most 15
///    significant digits lies closer to `B` than to any integer (the argument of
///    `threshold_f64` in `escalation/gate/compile.rs`), so integers compare with `B` as with `b`.
///
/// A float literal with more than 15 significant digits is refused when its double shows it (its
/// shortest decimal needs more): `0.12345678901234567`, `100.00000000000001` and
/// `9007199254740991.5` (stored as 2^53) are refused. A literal whose double is also the double
/// of a decimal of at most 15 digits cannot be told from that decimal, and is read as it
/// (`0.29999999999999999` as `0.3`, `0.1000000000000000055` as `0.1`): the parser drops the
/// extra digits before the boundary sees the bound.
pub(crate) fn bound_is_exact(b: f64) -> Result<(), String> {
    if !b.is_finite() {
        return Err("must be a finite number".into());
    }
    if b.fract() == 0.0 && b.abs() >= EXACT_INT {
        return Err(format!(
            "{b} is not below 2^53 (9007199254740992) in magnitude, where a double cannot hold every integer: the bound may have been rounded from the one written, and integer arguments near it cannot be compared exactly"
        ));
    }
    // `{:e}` prints the shortest decimal that parses back to `b`: `1.5e-1`, `9.007199254740991e15`.
    let shortest = format!("{b:e}");
    let mantissa = shortest.split('e').next().unwrap_or("");
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    if digits > MAX_BOUND_DIGITS {
        return Err(format!(
            "{b} has {digits} significant digits; at most {MAX_BOUND_DIGITS} can be compared exactly (a bound of more may already have been rounded)"
        ));
    }
    Ok(())
}

/// Whether a raw JSON number literal converts to `f64` without losing the order against bounds
/// and enum values written with at most 15 significant digits: at most 15 significant digits
/// itself (distinct such decimals map to distinct, order-preserving doubles).
pub(crate) fn literal_is_exact(text: &str) -> bool {
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    let digits = mantissa.bytes().filter(u8::is_ascii_digit);
    let mut first = None;
    let mut last = 0;
    for (i, d) in digits.enumerate() {
        if d != b'0' {
            first.get_or_insert(i);
            last = i;
        }
    }
    first.is_none_or(|f| last - f < 15)
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::I(i) => write!(f, "{i}"),
            Num::U(u) => write!(f, "{u}"),
            Num::F(x, _) => write!(f, "{x}"),
        }
    }
}

/// A string inside the arguments.
pub(crate) trait StrView<'a>: Copy {
    fn eq_str(self, s: &str) -> bool;
    fn char_count(self) -> usize;
    /// Borrowed unless the raw text contains escapes.
    fn cow(self) -> Cow<'a, str>;
}

/// Byte equality tuned for the short keys of tool arguments: strings of up to 16 bytes are
/// compared as two (overlapping) 64-bit words instead of through a `memcmp` call.
#[inline]
pub(crate) fn short_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if n > 16 {
        return a == b;
    }
    if n >= 8 {
        return word(&a[..8]) == word(&b[..8]) && word(&a[n - 8..]) == word(&b[n - 8..]);
    }
    // Two overlapping loads cover every byte of a string of 2 to 7 bytes.
    if n >= 4 {
        return half(&a[..4]) == half(&b[..4]) && half(&a[n - 4..]) == half(&b[n - 4..]);
    }
    if n >= 2 {
        return a[..2] == b[..2] && a[n - 1] == b[n - 1];
    }
    a.first() == b.first()
}

#[inline]
fn half(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

#[inline]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    u64::from_le_bytes(w)
}

impl<'a> StrView<'a> for &'a str {
    fn eq_str(self, s: &str) -> bool {
        short_eq(self.as_bytes(), s.as_bytes())
    }
    fn char_count(self) -> usize {
        self.chars().count()
    }
    fn cow(self) -> Cow<'a, str> {
        Cow::Borrowed(self)
    }
}

impl<'a> StrView<'a> for JsonStr<'a> {
    fn eq_str(self, s: &str) -> bool {
        if self.has_escapes() {
            JsonStr::eq_str(&self, s)
        } else {
            short_eq(self.raw().as_bytes(), s.as_bytes())
        }
    }
    fn char_count(self) -> usize {
        JsonStr::char_count(&self)
    }
    fn cow(self) -> Cow<'a, str> {
        self.to_cow()
    }
}

/// A JSON value inside the arguments.
pub(crate) trait View<'a>: Copy {
    type S: StrView<'a>;
    type Entries: Iterator<Item = (Self::S, Self)>;
    type Items: Iterator<Item = Self>;
    fn kind(self) -> JsonKind;
    fn as_bool(self) -> Option<bool>;
    fn as_num(self) -> Option<Num>;
    fn as_string(self) -> Option<Self::S>;
    fn get(self, key: &str) -> Option<Self>;
    fn entries(self) -> Self::Entries;
    fn items(self) -> Self::Items;
}

type ValueEntry<'a> = (&'a String, &'a Value);

fn value_entry<'a>((k, v): ValueEntry<'a>) -> (&'a str, &'a Value) {
    (k.as_str(), v)
}

impl<'a> View<'a> for &'a Value {
    type S = &'a str;
    type Entries =
        std::iter::Map<serde_json::map::Iter<'a>, fn(ValueEntry<'a>) -> (&'a str, &'a Value)>;
    type Items = std::slice::Iter<'a, Value>;

    fn kind(self) -> JsonKind {
        match self {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }
    fn as_bool(self) -> Option<bool> {
        Value::as_bool(self)
    }
    fn as_num(self) -> Option<Num> {
        let n = self.as_number()?;
        if let Some(i) = n.as_i64() {
            Some(Num::I(i))
        } else if let Some(u) = n.as_u64() {
            Some(Num::U(u))
        } else {
            // `None` only with serde_json's `arbitrary_precision` and a value beyond f64: carry
            // it as a non-finite number, which no bound or enum accepts.
            Some(Num::F(n.as_f64().unwrap_or(f64::INFINITY), true))
        }
    }
    fn as_string(self) -> Option<&'a str> {
        self.as_str()
    }
    fn get(self, key: &str) -> Option<Self> {
        self.as_object()?.get(key)
    }
    fn entries(self) -> Self::Entries {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> =
            std::sync::OnceLock::new();
        let map = match self {
            Value::Object(m) => m,
            _ => EMPTY.get_or_init(serde_json::Map::new),
        };
        map.iter().map(value_entry as fn(ValueEntry<'a>) -> _)
    }
    fn items(self) -> Self::Items {
        match self {
            Value::Array(a) => a.iter(),
            _ => [].iter(),
        }
    }
}

impl<'a> View<'a> for RawValue<'a> {
    type S = JsonStr<'a>;
    type Entries = ObjectIter<'a>;
    type Items = ArrayIter<'a>;

    fn kind(self) -> JsonKind {
        RawValue::kind(&self)
    }
    fn as_bool(self) -> Option<bool> {
        RawValue::as_bool(&self)
    }
    fn as_num(self) -> Option<Num> {
        let n = RawValue::as_number(&self)?;
        Some(fast_num(n.text()).unwrap_or_else(|| slow_num(n)))
    }
    fn as_string(self) -> Option<JsonStr<'a>> {
        RawValue::as_str(&self)
    }
    fn get(self, key: &str) -> Option<Self> {
        RawValue::get(&self, key)
    }
    fn entries(self) -> ObjectIter<'a> {
        RawValue::entries(&self)
    }
    fn items(self) -> ArrayIter<'a> {
        RawValue::items(&self)
    }
}

/// Powers of ten a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The number of a validated literal, for the literals arguments mostly hold: integers of at most
/// 19 digits, and decimals without exponent of at most 15 significant digits. `None` for the
/// rest, which [`slow_num`] reads. Gives exactly what `slow_num` gives (a property test checks):
/// an integer as `I`/`U`, `-0` as `-0.0`; a decimal `m / 10^d` with `m < 10^15 < 2^53` and
/// `d <= 22` is one correctly rounded division of two exact doubles, which is the correctly
/// rounded value the standard parser returns (Clinger's fast path), and it has at most 15
/// significant digits, so it is exact in [`literal_is_exact`]'s sense.
///
/// Hand-written for a measured need: `slow_num` (integer checks, two integer parses, a float
/// parse, a digit count) cost ~530 instructions for `1250.5`, this ~40 (callgrind).
pub(crate) fn fast_num(text: &str) -> Option<Num> {
    let b = text.as_bytes();
    let (neg, digits) = match b.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, b),
    };
    let mut m: u64 = 0;
    let mut i = 0;
    while let Some(&c) = digits.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        if i == 19 {
            return None;
        }
        m = m * 10 + u64::from(c - b'0');
        i += 1;
    }
    match digits.get(i) {
        None => {
            return Some(if neg {
                match m {
                    0 => Num::F(-0.0, true),
                    // `m as i64` of 2^63 is i64::MIN, whose negation wraps to itself.
                    _ if m <= 1 << 63 => Num::I((m as i64).wrapping_neg()),
                    _ => return None,
                }
            } else if let Ok(i) = i64::try_from(m) {
                Num::I(i)
            } else {
                Num::U(m)
            });
        }
        Some(b'.') => i += 1,
        Some(_) => return None,
    }
    let fraction = i;
    while let Some(&c) = digits.get(i) {
        if !c.is_ascii_digit() {
            return None;
        }
        m = m.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    let d = i - fraction;
    if m >= 1_000_000_000_000_000 || d >= POW10.len() {
        return None;
    }
    let f = m as f64 / POW10[d];
    Some(Num::F(if neg { -f } else { f }, true))
}

/// The number of a validated literal, as serde_json reads it, for any literal.
fn slow_num(n: RawNumber<'_>) -> Num {
    if n.text().starts_with('-') && n.as_u64() == Some(0) {
        // `-0` is the float -0.0, as serde_json reads it.
        Num::F(-0.0, true)
    } else if let Some(i) = n.as_i64() {
        Num::I(i)
    } else if let Some(u) = n.as_u64() {
        Num::U(u)
    } else {
        Num::F(n.as_f64(), literal_is_exact(n.text()))
    }
}

/// A raw value that, for the root object, reads the members the validator recorded
/// ([`Members`]) instead of scanning the text again; every other value is a plain [`RawValue`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Indexed<'a> {
    raw: RawValue<'a>,
    members: Option<Members<'a>>,
}

impl<'a> Indexed<'a> {
    /// `raw`, with its members if it is the root object the validator indexed.
    pub(crate) fn new(raw: RawValue<'a>, members: Option<Members<'a>>) -> Self {
        Self { raw, members }
    }

    fn plain(raw: RawValue<'a>) -> Self {
        Self { raw, members: None }
    }
}

/// The entries of an [`Indexed`] value: from the index or from the text.
#[derive(Debug, Clone)]
pub(crate) enum IndexedEntries<'a> {
    Index(MemberIter<'a>),
    Text(ObjectIter<'a>),
}

impl<'a> Iterator for IndexedEntries<'a> {
    type Item = (JsonStr<'a>, Indexed<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (k, v) = match self {
            Self::Index(i) => i.next()?,
            Self::Text(t) => t.next()?,
        };
        Some((k, Indexed::plain(v)))
    }
}

impl<'a> View<'a> for Indexed<'a> {
    type S = JsonStr<'a>;
    type Entries = IndexedEntries<'a>;
    type Items = std::iter::Map<ArrayIter<'a>, fn(RawValue<'a>) -> Indexed<'a>>;

    fn kind(self) -> JsonKind {
        self.raw.kind()
    }
    fn as_bool(self) -> Option<bool> {
        self.raw.as_bool()
    }
    fn as_num(self) -> Option<Num> {
        View::as_num(self.raw)
    }
    fn as_string(self) -> Option<JsonStr<'a>> {
        self.raw.as_str()
    }
    fn get(self, key: &str) -> Option<Self> {
        match self.members {
            Some(m) => m
                .iter()
                .find_map(|(k, v)| StrView::eq_str(k, key).then_some(Indexed::plain(v))),
            None => self.raw.get(key).map(Indexed::plain),
        }
    }
    fn entries(self) -> Self::Entries {
        match self.members {
            Some(m) => IndexedEntries::Index(m.iter()),
            None => IndexedEntries::Text(self.raw.entries()),
        }
    }
    fn items(self) -> Self::Items {
        self.raw
            .items()
            .map(Indexed::plain as fn(RawValue<'a>) -> Indexed<'a>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_comparison_is_exact_beyond_f64_precision() {
        // 2^53 + 1 is not representable as f64; it must still compare above 2^53.
        let big = Num::I(9_007_199_254_740_993);
        assert!(big.above(9_007_199_254_740_992.0));
        assert!(!Num::U(u64::MAX).above(1e30));
        assert!(Num::I(-5).below(-4.5));
        assert!(!Num::I(5).above(5.0) && !Num::I(5).below(5.0));
        assert!(Num::F(5.5, true).above(5.0));
        assert!(!Num::I(1).above(1e300));
        assert!(!Num::I(1).below(-1e300));
    }

    #[test]
    fn inexact_or_non_finite_floats_fail_closed_at_the_bound() {
        assert!(Num::F(1e20, false).above(1e20));
        assert!(!Num::F(1e20, true).above(1e20));
        assert!(!Num::F(1e19, false).above(1e20));
        assert!(Num::F(f64::INFINITY, true).above(1e300));
        assert!(Num::F(f64::NEG_INFINITY, true).below(-1e300));
        assert!(Num::F(f64::NAN, true).above(0.0) && Num::F(f64::NAN, true).below(0.0));
    }

    #[test]
    fn enum_equality_needs_exact_conversion() {
        let n = |v: serde_json::Value| v.as_number().unwrap().clone();
        assert!(Num::I(3).eq_value(&n(serde_json::json!(3))));
        assert!(Num::I(3).eq_value(&n(serde_json::json!(3.0))));
        assert!(Num::F(3.0, true).eq_value(&n(serde_json::json!(3))));
        // 2^53 + 1 as an integer enum value must not match the float 2^53.
        assert!(
            !Num::F(9_007_199_254_740_992.0, true)
                .eq_value(&n(serde_json::json!(9_007_199_254_740_993u64)))
        );
        assert!(
            !Num::I(9_007_199_254_740_993).eq_value(&n(serde_json::json!(9_007_199_254_740_992.0)))
        );
        assert!(!Num::F(3.0, false).eq_value(&n(serde_json::json!(3))));
    }

    #[test]
    fn literal_exactness_counts_significant_digits() {
        assert!(literal_is_exact("1000.0000000000000000"));
        assert!(literal_is_exact("0.000000000000000000123"));
        assert!(literal_is_exact("123456789012345e300"));
        assert!(!literal_is_exact("1234567890123456"));
        assert!(!literal_is_exact("9007199254740993.0"));
        assert!(!literal_is_exact("100000000000000000001"));
        assert!(literal_is_exact("0"));
    }

    #[test]
    fn short_eq_matches_slice_equality() {
        let words = [
            "",
            "a",
            "ab",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnoq",
            "bbcdefgh",
            "abcdefgi",
            "b",
            "ac",
            "bb",
            "abc",
            "abd",
            "xbc",
            "abcd",
            "abce",
            "xbcd",
            "abcde",
            "abxde",
            "abcdef",
            "abcdeg",
            "abcxef",
            "abcdefx",
            "abcxefg",
        ];
        for a in words {
            for b in words {
                assert_eq!(short_eq(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    fn same(a: Num, b: Num) -> bool {
        match (a, b) {
            (Num::I(x), Num::I(y)) => x == y,
            (Num::U(x), Num::U(y)) => x == y,
            (Num::F(x, e), Num::F(y, f)) => x.to_bits() == y.to_bits() && e == f,
            _ => false,
        }
    }

    /// The number the boundary reads from `text`, and the reference reading.
    fn read(text: &str) -> Option<(Num, Num)> {
        let limits = crate::call::json::JsonLimits::default();
        let doc = crate::call::json::RawJson::parse(text, limits).ok()?;
        let n = doc.root().as_number()?;
        Some((View::as_num(doc.root())?, slow_num(n)))
    }

    #[test]
    fn fast_number_reading_agrees_at_the_edges() {
        for text in [
            "0",
            "-0",
            "-0.0",
            "7",
            "-7",
            "1250.5",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "9999999999999999999",
            "10000000000000000000",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999.5",
            "999999999999999.5",
            "0.999999999999999",
            "0.9999999999999999",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "500.0000000001",
            "500.00000000000001",
            "1000.0000000000000001",
            "100000000000000.00001",
            "1.5e3",
            "-12.25",
        ] {
            let (ours, reference) = read(text).unwrap();
            assert!(same(ours, reference), "{text}: {ours:?} vs {reference:?}");
        }
        assert!(matches!(fast_num("1250.5"), Some(Num::F(f, true)) if f == 1250.5));
        assert!(matches!(
            fast_num("-9223372036854775808"),
            Some(Num::I(i64::MIN))
        ));
        assert!(matches!(fast_num("9223372036854775808"), Some(Num::U(u)) if u == 1 << 63));
        // Past 15 significant digits the reference decides (and marks the reading inexact).
        assert!(fast_num("999999999999999.5").is_none());
        assert!(matches!(
            read("999999999999999.5"),
            Some((Num::F(_, false), _))
        ));
        // 500.0000000001 stays above 500: no rounding to the bound.
        assert!(read("500.0000000001").unwrap().0.above(500.0));
        assert!(read("500.00000000000001").unwrap().0.above(500.0));
        assert!(!read("500.000").unwrap().0.above(500.0));
    }

    proptest::proptest! {
        #[test]
        fn fast_number_reading_agrees_with_the_reference(
            neg in proptest::bool::ANY,
            int in "0|[1-9][0-9]{0,24}",
            frac in proptest::option::of("[0-9]{1,25}"),
            exp in proptest::option::of("[eE][+-]?[0-9]{1,3}"),
        ) {
            let text = format!(
                "{}{int}{}{}",
                if neg { "-" } else { "" },
                frac.map(|f| format!(".{f}")).unwrap_or_default(),
                exp.unwrap_or_default()
            );
            if let Some((ours, reference)) = read(&text) {
                proptest::prop_assert!(same(ours, reference), "{}: {:?} vs {:?}", text, ours, reference);
            }
        }
    }

    #[test]
    fn integer_notion_follows_json_schema() {
        assert!(Num::F(3.0, true).is_integer());
        assert!(!Num::F(3.5, true).is_integer());
        assert!(!Num::F(f64::INFINITY, true).is_integer());
        assert!(Num::U(u64::MAX).is_integer());
    }
}
