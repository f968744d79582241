//! Accept-only fast path for raw JSON arguments of a flat tool (issue 12).
//!
//! The reference path validates the whole text ([`RawJson::parse_into`](crate::call::json::RawJson))
//! and then walks the rules over the validated document: ~2,700 instructions for the benches'
//! 58-byte, three-rule `pay_invoice` call (callgrind: ~1,220 validating, ~1,340 evaluating, the
//! rest indexing). For a tool whose argument rules are *flat* (top-level scalar arguments with
//! type, enum, bound, length and pattern rules, keys that need no escaping; see
//! [`FastPlan::compile`]), this module does both in one pass over the bytes: each key is matched
//! against the declared names in place, each value is read as a borrowed scalar and checked
//! against its field's rules as soon as it ends, presence is tracked in a bitmask.
//!
//! It only ever **admits**: [`admits`] returns `true` when the reference path certainly admits the
//! call, and `false` for anything else: a rule refusing, and also everything this pass does not
//! handle itself (escapes, nested values, exponents, numbers of more than 15 significant digits,
//! unknown keys, duplicates, any grammar error, a byte order mark...). On `false` the caller runs
//! the reference path, which gives the verdict and the exact denial. So the fast path can change
//! no denial and no reason; it must only never admit what the reference refuses, which holds
//! because every test below is the reference's own test on the same reading of the value:
//!
//! - *Structure*: only the grammar `ws { ws ( "key" ws : ws scalar ws ( , ws "key" ... )* )? } ws`
//!   with strict RFC 8259 numbers without exponent, plain strings (no `\`, no byte below 0x20;
//!   the text is a `&str`, so it is valid UTF-8) and `true`/`false`/`null` passes. A key matches
//!   a declared name when its bytes equal the name's and a quote follows; declared names contain
//!   no `"`, `\` or control character (else there is no plan), so that key is exactly the name.
//!   Every key is declared and seen once (a second sighting bails), so there are no duplicates.
//! - *Values*: a string is its raw bytes (what `JsonStr` decodes to when it has no escapes), a
//!   number is [`fast_num`]'s reading (the reference's first choice, which it returns whenever
//!   `fast_num` does), the same [`Num`] comparisons, [`short_eq`] and [`Matcher::is_match`](super::Matcher::is_match).
//!
//! Hand-written for a measured need (the 40 ns target of issue 12); `tests.rs` holds the
//! differential property test against the reference path.

use serde_json::Value;

use super::{CheckKind, FieldRules, ObjectRules};
use crate::boundary::spec::ArgType;
use crate::boundary::view::{Num, fast_num, short_eq};
use crate::call::json::{plain_string_end, skip_ws};

#[cfg(test)]
mod tests;

/// What the fast path needs besides the rules: which fields are required (bit `i` for field `i`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastPlan {
    required: u64,
}

impl FastPlan {
    /// The plan for a top-level object's rules, or `None` when a rule needs the reference path:
    /// nested objects or arrays, path and URL rules, `max_items`, or a declared name with a `"`,
    /// `\` or control character in it.
    pub(crate) fn compile(rules: &ObjectRules) -> Option<Self> {
        let mut required = 0u64;
        for (i, f) in rules.fields.iter().enumerate() {
            if i >= 64 || !eligible(f) {
                return None;
            }
            if f.required {
                required |= 1 << i;
            }
        }
        Some(Self { required })
    }
}

fn eligible(f: &FieldRules) -> bool {
    let plain_key = !f.key.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20);
    plain_key
        && f.object.is_none()
        && f.items.is_none()
        && !matches!(f.ty, Some(ArgType::Object | ArgType::Array))
        && f.checks.iter().all(|c| {
            matches!(
                c.kind,
                CheckKind::OneOf(_)
                    | CheckKind::Min(_)
                    | CheckKind::Max(_)
                    | CheckKind::MaxLength(_)
                    | CheckKind::Pattern(_)
            )
        })
}

/// A top-level argument value as the fast path reads it.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    /// A string without escapes: its raw bytes are its text.
    Str(&'a str),
    Num(Num),
    Bool(bool),
    Null,
}

/// Whether the reference path certainly admits `text` as the arguments of a tool with `rules`
/// (`plan` compiled from them). `false` means "ask the reference path", not "refused". The caller
/// checks the size and depth limits and that the tool names no compartment.
pub(crate) fn admits(rules: &ObjectRules, plan: FastPlan, text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return false;
    }
    i = skip_ws(b, i + 1);
    let mut seen = 0u64;
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return false;
            }
            let Some((index, end)) = match_key(rules, b, i + 1) else {
                return false;
            };
            let bit = 1u64 << index;
            if seen & bit != 0 {
                return false;
            }
            seen |= bit;
            i = skip_ws(b, end);
            if b.get(i) != Some(&b':') {
                return false;
            }
            i = skip_ws(b, i + 1);
            let Some((value, end)) = scalar(text, i) else {
                return false;
            };
            if !field_admits(&rules.fields[index], value) {
                return false;
            }
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return false,
            }
        }
    }
    skip_ws(b, i) == b.len() && seen & plan.required == plan.required
}

/// The declared field whose name is the key whose content starts at `start`, and the position
/// just past the key's closing quote.
#[inline]
fn match_key(rules: &ObjectRules, b: &[u8], start: usize) -> Option<(usize, usize)> {
    rules
        .fields
        .iter()
        .position(|f| {
            let k = f.key.as_bytes();
            let end = start + k.len();
            b.get(end) == Some(&b'"') && b.get(start..end).is_some_and(|s| short_eq(s, k))
        })
        .map(|i| (i, start + rules.fields[i].key.len() + 1))
}

/// The scalar value starting at `i` and the position just past it; `None` for objects, arrays,
/// strings with escapes, numbers `fast_num` does not read, and anything invalid.
#[inline]
fn scalar(text: &str, i: usize) -> Option<(Scalar<'_>, usize)> {
    let b = text.as_bytes();
    match *b.get(i)? {
        b'"' => {
            let end = plain_string_end(b, i + 1)?;
            Some((Scalar::Str(text.get(i + 1..end - 1)?), end))
        }
        b'-' | b'0'..=b'9' => {
            let end = number_end(b, i)?;
            Some((Scalar::Num(fast_num(text.get(i..end)?)?), end))
        }
        b't' if b[i..].starts_with(b"true") => Some((Scalar::Bool(true), i + 4)),
        b'f' if b[i..].starts_with(b"false") => Some((Scalar::Bool(false), i + 5)),
        b'n' if b[i..].starts_with(b"null") => Some((Scalar::Null, i + 4)),
        _ => None,
    }
}

/// The end of the RFC 8259 number without exponent starting at `i`: `-? (0 | [1-9][0-9]*)
/// (. [0-9]+)?`. `None` if the text there is not one, or goes on with an exponent.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match *b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        i = digits(i + 1);
    }
    // An exponent (or a digit after a leading zero, which the caller refuses anyway as the
    // member does not end there) is left to the reference path.
    (!matches!(b.get(i), Some(b'e' | b'E'))).then_some(i)
}

/// Whether `f`'s rules admit `v`: the same tests, in the same terms, as `FieldRules::check`.
#[inline]
fn field_admits(f: &FieldRules, v: Scalar<'_>) -> bool {
    if f.forbidden {
        return false;
    }
    if let Some(ty) = f.ty {
        let ok = match (ty, v) {
            (ArgType::String, Scalar::Str(_))
            | (ArgType::Boolean, Scalar::Bool(_))
            | (ArgType::Null, Scalar::Null) => true,
            (ArgType::Number, Scalar::Num(n)) => n.is_finite(),
            (ArgType::Integer, Scalar::Num(n)) => n.is_integer(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    f.checks.iter().all(|c| match &c.kind {
        CheckKind::OneOf(values) => values.iter().any(|w| match (w, v) {
            (Value::Null, Scalar::Null) => true,
            (Value::Bool(a), Scalar::Bool(b)) => *a == b,
            (Value::Number(n), Scalar::Num(x)) => x.eq_value(n),
            (Value::String(s), Scalar::Str(x)) => short_eq(x.as_bytes(), s.as_bytes()),
            _ => false,
        }),
        CheckKind::Min(lo) => !matches!(v, Scalar::Num(n) if n.below(*lo)),
        CheckKind::Max(hi) => !matches!(v, Scalar::Num(n) if n.above(*hi)),
        CheckKind::MaxLength(max) => !matches!(v, Scalar::Str(s) if s.chars().count() > *max),
        CheckKind::Pattern(re) => !matches!(v, Scalar::Str(s) if !re.is_match(s)),
        // Not in a plan (see `eligible`); refuse to decide.
        CheckKind::Path(_) | CheckKind::Url(_) | CheckKind::MaxItems(_) => false,
    })
}
