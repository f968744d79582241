//! One read-only view over both argument representations (`&serde_json::Value` and validated raw
//! JSON text), so every rule is written once and neither path allocates.

use std::borrow::Cow;

use serde_json::Value;

use crate::call::json::{ArrayIter, JsonKind, JsonStr, ObjectIter, RawValue};

/// A JSON number as found in the arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    I(i64),
    U(u64),
    F(f64),
}

impl Num {
    /// Whether the number has no fractional part (JSON Schema's notion of integer: `3.0` counts).
    pub(crate) fn is_integer(self) -> bool {
        match self {
            Num::I(_) | Num::U(_) => true,
            Num::F(f) => f.is_finite() && f.fract() == 0.0,
        }
    }

    /// Exact comparison with a finite bound (no precision loss for integers beyond 2^53).
    pub(crate) fn cmp_bound(self, bound: f64) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let exact = |i: i128| -> Ordering {
            if bound.fract() == 0.0 && bound.abs() < 1e38 {
                // Integral bound within i128: compare exactly.
                i.cmp(&(bound as i128))
            } else if bound.fract() != 0.0 {
                // A bound with a fraction is below 2^53 in magnitude, where f64 is exact enough:
                // an integer converted to f64 cannot round across it.
                (i as f64).partial_cmp(&bound).unwrap_or(Ordering::Less)
            } else if bound > 0.0 {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        };
        match self {
            Num::I(i) => exact(i128::from(i)),
            Num::U(u) => exact(i128::from(u)),
            Num::F(f) => f.partial_cmp(&bound).unwrap_or(Ordering::Greater),
        }
    }

    /// Equality with an enum value from the policy.
    pub(crate) fn eq_value(self, v: &serde_json::Number) -> bool {
        match self {
            Num::I(i) => v.as_i64() == Some(i) || (v.is_f64() && v.as_f64() == Some(i as f64)),
            Num::U(u) => v.as_u64() == Some(u) || (v.is_f64() && v.as_f64() == Some(u as f64)),
            Num::F(f) => v.as_f64() == Some(f),
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::I(i) => write!(f, "{i}"),
            Num::U(u) => write!(f, "{u}"),
            Num::F(x) => write!(f, "{x}"),
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
    let mut diff = 0u8;
    for i in 0..n {
        diff |= a[i] ^ b[i];
    }
    diff == 0
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
        JsonStr::eq_str(&self, s)
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
            n.as_f64().map(Num::F)
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
        if let Some(i) = n.as_i64() {
            Some(Num::I(i))
        } else if let Some(u) = n.as_u64() {
            Some(Num::U(u))
        } else {
            Some(Num::F(n.as_f64()))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn integer_comparison_is_exact_beyond_f64_precision() {
        // 2^53 + 1 is not representable as f64; it must still compare above 2^53.
        let big = Num::I(9_007_199_254_740_993);
        assert_eq!(big.cmp_bound(9_007_199_254_740_992.0), Ordering::Greater);
        assert_eq!(Num::U(u64::MAX).cmp_bound(1e30), Ordering::Less);
        assert_eq!(Num::I(-5).cmp_bound(-4.5), Ordering::Less);
        assert_eq!(Num::I(5).cmp_bound(5.0), Ordering::Equal);
        assert_eq!(Num::F(5.5).cmp_bound(5.0), Ordering::Greater);
        assert_eq!(Num::I(1).cmp_bound(1e300), Ordering::Less);
        assert_eq!(Num::I(1).cmp_bound(-1e300), Ordering::Greater);
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
        ];
        for a in words {
            for b in words {
                assert_eq!(short_eq(a.as_bytes(), b.as_bytes()), a == b, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn integer_notion_follows_json_schema() {
        assert!(Num::F(3.0).is_integer());
        assert!(!Num::F(3.5).is_integer());
        assert!(Num::U(u64::MAX).is_integer());
    }
}
