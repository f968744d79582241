//! A small JSON object writer for audit events: writes straight from borrowed data into a reused
//! byte buffer, without building a `serde_json::Value` first. Keys are `'static` literals chosen by
//! this crate (no escaping needed); every string value is escaped exactly as `serde_json` would.
//! Every value is bounded by the [`Redaction`]'s limits (see [`values`](super::values)): one
//! that would be written larger is replaced by its placeholder.

use serde::Serialize;
use serde_json::Value;

use super::Redaction;
use super::values::Omitted;
use crate::call::json::MAX_DEPTH_CAP;

/// A key as the writer takes it: the JSON string with its quotes and the colon
/// (`k!("seq")` is `"\"seq\":"`), so writing a key is one copy.
macro_rules! k {
    ($name:literal) => {
        concat!("\"", $name, "\":")
    };
}
pub(crate) use k;

/// A whole field with a string value known at compile time, as [`Obj::lit`] takes it
/// (`kv!("event", "outcome")` is `"\"event\":\"outcome\""`). The value must need no escaping.
macro_rules! kv {
    ($name:literal, $value:literal) => {
        concat!("\"", $name, "\":\"", $value, "\"")
    };
}
pub(crate) use kv;

/// Writes `{"k":v,...}` into `out`. Call [`Obj::end`] to close the object.
pub(crate) struct Obj<'b> {
    out: &'b mut Vec<u8>,
    first: bool,
    how: &'b Redaction,
}

impl<'b> Obj<'b> {
    pub(crate) fn begin(out: &'b mut Vec<u8>, how: &'b Redaction) -> Self {
        out.reserve(512);
        out.push(b'{');
        Self {
            out,
            first: true,
            how,
        }
    }

    /// The limits values are written under.
    pub(crate) fn redaction(&self) -> &'b Redaction {
        self.how
    }

    pub(crate) fn end(self) {
        self.out.push(b'}');
    }

    /// Writes the key (made with [`k!`]); the value must follow.
    #[inline(always)]
    pub(crate) fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        debug_assert!(key.starts_with('"') && key.ends_with("\":"));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out
    }

    /// A whole field written as it is (made with [`kv!`]): one copy of a length the
    /// compiler knows.
    #[inline(always)]
    pub(crate) fn lit(&mut self, field: &'static str) {
        debug_assert!(field.starts_with('"') && field.contains("\":"));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.extend_from_slice(field.as_bytes());
    }

    /// A string value of this crate's own vocabulary (a decision, an event kind): written as
    /// it is, without scanning it for bytes to escape.
    #[inline]
    pub(crate) fn word(&mut self, key: &'static str, v: &'static str) {
        debug_assert!(!v.bytes().any(needs_escape));
        let out = self.key(key);
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }

    /// A string, or its placeholder if its escaped form would exceed the value limit.
    #[inline]
    pub(crate) fn str(&mut self, key: &'static str, v: &str) {
        let how = self.how;
        bounded_string(self.key(key), v, how);
    }

    /// A string if there is one; an absent value leaves the field out (records carry only
    /// what happened: fewer bytes to encode, hash and write).
    #[inline]
    pub(crate) fn opt_str(&mut self, key: &'static str, v: Option<&str>) {
        if let Some(s) = v {
            self.str(key, s);
        }
    }

    /// A string, or `null`: for the fields every event has.
    #[inline]
    pub(crate) fn str_or_null(&mut self, key: &'static str, v: Option<&str>) {
        match v {
            Some(s) => self.str(key, s),
            None => self.null(key),
        }
    }

    #[inline]
    pub(crate) fn u64(&mut self, key: &'static str, v: u64) {
        let out = self.key(key);
        u64_to(out, v);
    }

    /// A number if there is one; an absent value leaves the field out.
    #[inline]
    pub(crate) fn opt_u64(&mut self, key: &'static str, v: Option<u64>) {
        if let Some(n) = v {
            self.u64(key, n);
        }
    }

    pub(crate) fn f64(&mut self, key: &'static str, v: f64) {
        let out = self.key(key);
        f64_to(out, v);
    }

    pub(crate) fn bool(&mut self, key: &'static str, v: bool) {
        let out = self.key(key);
        out.extend_from_slice(if v { b"true" } else { b"false" });
    }

    #[inline]
    pub(crate) fn null(&mut self, key: &'static str) {
        self.key(key).extend_from_slice(b"null");
    }

    /// A 32-byte digest as 64 lowercase hex digits.
    pub(crate) fn hex(&mut self, key: &'static str, bytes: &[u8]) {
        hex_into(self.key(key), bytes);
    }

    /// A 32-byte digest that most records repeat (the policy version) as 64 lowercase hex
    /// digits: the last one this thread wrote is kept with its digits, so a repeat is a
    /// comparison and a copy instead of an encoding (measured with `benches/icount.rs`).
    pub(crate) fn digest(&mut self, key: &'static str, bytes: &[u8; 32]) {
        thread_local! {
            static LAST: std::cell::RefCell<([u8; 32], [u8; 66])> =
                const { std::cell::RefCell::new(([0; 32], [0; 66])) };
        }
        let out = self.key(key);
        LAST.with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                // Not reachable (nothing here re-enters), but never worth a panic.
                return hex_into(out, bytes);
            };
            let (seen, quoted) = &mut *last;
            if quoted[0] != b'"' || seen != bytes {
                quoted[0] = b'"';
                crate::hex::encode_to_slice(&mut quoted[1..65], bytes);
                quoted[65] = b'"';
                *seen = *bytes;
            }
            out.extend_from_slice(quoted.as_slice());
        });
    }

    /// Any serialisable value of this crate's own (cold paths: scopes, reasons, flags), or its
    /// placeholder if it would exceed the value limit.
    pub(crate) fn ser<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) {
        let how = self.how;
        let out = self.key(key);
        let mark = out.len();
        if serde_json::to_writer(&mut *out, v).is_err() {
            // Our own types cannot fail to serialise; should one ever, record that rather than a
            // partial value.
            out.truncate(mark);
            out.extend_from_slice(b"null");
        }
        bound(out, mark, how);
    }

    /// A JSON value someone else chose (arguments): its placeholder if it is nested deeper than
    /// `MAX_DEPTH_CAP` or its compact form exceeds the value limit.
    pub(crate) fn value(&mut self, key: &'static str, v: &Value) {
        let how = self.how;
        let out = self.key(key);
        let mark = out.len();
        if compact(out, v, MAX_DEPTH_CAP).is_err() {
            // Too deep: serialised aside only to hash it and keep its prefix.
            out.truncate(mark);
            let text = serde_json::to_vec(v).unwrap_or_default();
            how.write_omitted(out, Omitted::TooDeep, &text);
            return;
        }
        bound(out, mark, how);
    }

    /// Writes the placeholder of a value (its bytes as received) under `key`.
    pub(crate) fn omitted(&mut self, key: &'static str, why: Omitted, raw: &[u8]) {
        let how = self.how;
        how.write_omitted(self.key(key), why, raw);
    }
}

/// A value nested deeper than the limit [`compact`] was given.
#[derive(Debug, PartialEq)]
struct TooDeep;

/// `v` in compact form, byte for byte what `serde_json::to_writer` writes, unless it nests more
/// than `left` arrays and objects (`{}` has depth 1): then `Err`, with part of it written. One
/// walk instead of a depth check and then serde's generic serializer; strings and keys go
/// through [`string`]'s word-at-a-time scan (measured with `benches/icount.rs`).
fn compact(out: &mut Vec<u8>, v: &Value, left: usize) -> Result<(), TooDeep> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's own number writer, whatever its features (`arbitrary_precision` keeps
        // the text as received).
        Value::Number(n) => {
            if serde_json::to_writer(&mut *out, n).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        Value::String(s) => string(out, s),
        Value::Array(items) => {
            let left = left.checked_sub(1).ok_or(TooDeep)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                compact(out, item, left)?;
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let left = left.checked_sub(1).ok_or(TooDeep)?;
            out.push(b'{');
            for (i, (k, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k);
                out.push(b':');
                compact(out, item, left)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// `bytes` as a JSON string of lowercase hex digits.
fn hex_into(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    crate::hex::encode_into(out, bytes);
    out.push(b'"');
}

/// `v` as a JSON string, or its placeholder if its escaped form would exceed the value limit.
#[inline]
pub(crate) fn bounded_string(out: &mut Vec<u8>, v: &str, how: &Redaction) {
    let max = how.value_limit();
    if v.len() <= max {
        let mark = out.len();
        string(out, v);
        if out.len() - mark <= max {
            return;
        }
        out.truncate(mark);
    }
    how.write_omitted(out, Omitted::TooLarge, v.as_bytes());
}

/// If what was written after `mark` exceeds the value limit, replaces it by its placeholder.
fn bound(out: &mut Vec<u8>, mark: usize, how: &Redaction) {
    if out.len() - mark > how.value_limit() {
        let written = out.split_off(mark);
        how.write_omitted(out, Omitted::TooLarge, &written);
    }
}

/// `v` in decimal (`itoa`: two digits per step; every record writes a 19-digit timestamp).
pub(crate) fn u64_to(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn f64_to(out: &mut Vec<u8>, v: f64) {
    // serde_json writes non-finite floats as null and finite ones in their shortest form.
    if serde_json::to_writer(&mut *out, &v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// Which bytes need escaping in a JSON string: control characters, `"` and `\`.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the 8 bytes in `w` is a control character, `"` or `\` (SWAR: a byte is
/// flagged when `byte < 0x20`, `byte ^ '"' == 0` or `byte ^ '\\' == 0`).
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // Exact for the word as a whole (the borrow of a flagged byte may flag the bytes above it,
    // never an unflagged word): some byte is flagged if and only if one needs escaping.
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below_space | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\')))
        != 0
}

/// The 8 bytes at `at` as a little-endian word.
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Whether a text of at most 16 bytes needs no escaping, in one word test: its bytes are
/// gathered into one or two words (overlapping reads cover every byte at least once; a text
/// shorter than 8 bytes is read as two overlapping 4-byte halves, or byte by byte below 4, the
/// rest of the word padded with `a`). Most audit strings (ids, tool and argument names, short
/// values) are this short: the loop of [`clean_prefix`] cost ~40 instructions on each of them
/// (`benches/icount.rs`, `audit_serialize_event`).
#[inline(always)]
fn short_is_clean(bytes: &[u8]) -> bool {
    const PAD: u64 = 0x6161_6161_6161_6161; // "aaaaaaaa": needs no escaping
    let n = bytes.len();
    let half = |at: usize| {
        let mut h = [0u8; 4];
        h.copy_from_slice(&bytes[at..at + 4]);
        u64::from(u32::from_le_bytes(h))
    };
    match n {
        0 => true,
        1..=3 => {
            let w = (PAD & !0xff_ffff)
                | u64::from(bytes[0])
                | u64::from(bytes[n / 2]) << 8
                | u64::from(bytes[n - 1]) << 16;
            !word_needs_escape(w)
        }
        4..=7 => !word_needs_escape(half(0) | half(n - 4) << 32),
        8 => !word_needs_escape(word_at(bytes, 0)),
        _ => !word_needs_escape(word_at(bytes, 0)) && !word_needs_escape(word_at(bytes, n - 8)),
    }
}

/// How many leading bytes of `bytes` need no escaping, at least: a text of up to 16 bytes is
/// checked whole by [`short_is_clean`] (0 when any byte needs escaping); longer ones whole 8-byte
/// words at a time, and a tail shorter than a word by re-checking the last full word
/// (overlapping what was checked). Stops at the first word holding a byte to escape.
#[inline]
fn clean_prefix(bytes: &[u8]) -> usize {
    if bytes.len() <= 16 {
        return if short_is_clean(bytes) {
            bytes.len()
        } else {
            0
        };
    }
    let mut clean = 0;
    while clean + 8 <= bytes.len() {
        if word_needs_escape(word_at(bytes, clean)) {
            return clean;
        }
        clean += 8;
    }
    if clean == bytes.len() || !word_needs_escape(word_at(bytes, bytes.len() - 8)) {
        bytes.len()
    } else {
        clean
    }
}

/// `s` as a JSON string literal, escaped as `serde_json` escapes it.
///
/// Audit records are mostly identifiers that need no escaping: the text is scanned a word at a
/// time and, when clean, copied whole (measured with `benches/icount.rs`).
#[inline]
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let clean = clean_prefix(bytes);
    if clean == bytes.len() {
        out.extend_from_slice(bytes);
    } else {
        escape_from(out, bytes, clean);
    }
    out.push(b'"');
}

/// The rest of [`string`] once a byte may need escaping: `bytes[..clean]` needs none.
#[cold]
fn escape_from(out: &mut Vec<u8>, bytes: &[u8], clean: usize) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(crate::hex::DIGITS[usize::from(b >> 4)]);
                out.push(crate::hex::DIGITS[usize::from(b & 15)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Copies a JSON text that has already been validated, dropping the whitespace between tokens so
/// the result fits on one line. (Inside strings nothing changes: a valid JSON string has no raw
/// control characters, so a validated text's only line breaks are between tokens.)
pub(crate) fn minified(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Most frameworks send compact JSON: no whitespace byte at all (inside strings or out) means
    // nothing to drop, and one copy. The fold has no early exit, so it vectorises.
    let ws = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    if !bytes.iter().fold(false, |any, &b| any | ws(b)) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                out.extend_from_slice(&bytes[start..i.min(bytes.len())]);
            }
            _ => {
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r' | b'"') {
                    i += 1;
                }
                out.extend_from_slice(&bytes[start..i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::values::deeper_than;
    use proptest::prelude::*;
    use serde_json::Value;
    use serde_json::json;

    fn obj_with(f: impl FnOnce(&mut Obj<'_>)) -> Value {
        let mut buf = Vec::new();
        let how = Redaction::placeholder();
        let mut o = Obj::begin(&mut buf, &how);
        f(&mut o);
        o.end();
        serde_json::from_slice(&buf).expect("the writer produced valid JSON")
    }

    #[test]
    fn fields_of_every_type_round_trip() {
        let v = obj_with(|o| {
            o.str(k!("s"), "a\"b\\c\n\u{1}é");
            o.opt_str(k!("absent"), None);
            o.opt_str(k!("some"), Some("x"));
            o.str_or_null(k!("none"), None);
            o.opt_u64(k!("absent_n"), None);
            o.u64(k!("zero"), 0);
            o.u64(k!("max"), u64::MAX);
            o.opt_u64(k!("n"), Some(42));
            o.f64(k!("pi"), 3.25);
            o.f64(k!("nan"), f64::NAN);
            o.bool(k!("t"), true);
            o.hex(k!("h"), &[0xab, 0x01]);
            o.ser(k!("list"), &["x", "y"]);
        });
        assert_eq!(
            v,
            serde_json::json!({
                "s": "a\"b\\c\n\u{1}é", "some": "x", "none": null, "zero": 0, "max": u64::MAX, "n": 42,
                "pi": 3.25, "nan": null, "t": true, "h": "ab01", "list": ["x", "y"]
            })
        );
    }

    /// Every byte of a short text is looked at: one byte to escape (or a non-ASCII character,
    /// or a byte next to the escape range) at every position of every length up to 24, in texts
    /// of bytes that need no escaping, is written as `serde_json` writes it.
    #[test]
    fn a_byte_to_escape_is_found_at_every_position_of_short_texts() {
        for len in 0..=24 {
            for at in 0..len {
                for special in ["\"", "\\", "\u{1}", "\u{1f}", "\n", "é", "\u{7f}", " "] {
                    let s: String = (0..len)
                        .map(|i| if i == at { special } else { "x" })
                        .collect();
                    let mut out = Vec::new();
                    string(&mut out, &s);
                    assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
                    // Never "clean" past a byte to escape (a false alarm only costs time).
                    let clean = clean_prefix(s.as_bytes());
                    assert!(
                        !s.as_bytes()[..clean].iter().any(|&b| needs_escape(b)),
                        "{s:?}"
                    );
                }
            }
        }
    }

    /// The digest memo gives each record its own digest, whatever the previous one was.
    #[test]
    fn repeated_and_alternating_digests_are_each_written_right() {
        let digests = [
            [0u8; 32], [0xab; 32], [0xab; 32], [0u8; 32], [7; 32], [7; 32],
        ];
        for d in digests {
            let v = obj_with(|o| o.digest(k!("d"), &d));
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(v, serde_json::json!({ "d": hex }));
        }
    }

    #[test]
    fn minified_text_has_no_line_breaks_and_keeps_strings_verbatim() {
        let text = "{ \"a\" :\n [1, 2,\r\n\t3],\n \"b\": \"x \\\" y\\n\" }";
        let mut out = Vec::new();
        minified(&mut out, text);
        assert_eq!(out, br#"{"a":[1,2,3],"b":"x \" y\n"}"#);
    }

    proptest! {
        #[test]
        fn strings_escape_exactly_like_serde_json(s in any::<String>()) {
            let mut out = Vec::new();
            string(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }

        /// Texts dense in bytes to escape, of every length around the 8-byte word.
        #[test]
        fn escape_dense_strings_escape_exactly_like_serde_json(
            s in "[a-z0-9\"\\\\\n\t\u{1}\u{1f}\u{7f}é€ -]{0,40}"
        ) {
            let mut out = Vec::new();
            string(&mut out, &s);
            prop_assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }

        #[test]
        fn integers_print_like_std(n in any::<u64>()) {
            let mut out = Vec::new();
            u64_to(&mut out, n);
            prop_assert_eq!(out, n.to_string().into_bytes());
        }

        #[test]
        fn minifying_pretty_json_gives_the_compact_form(v in json_value()) {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let mut out = Vec::new();
            minified(&mut out, &pretty);
            prop_assert_eq!(out, serde_json::to_vec(&v).unwrap());
        }
    }

    proptest! {
        /// The one-walk writer agrees with serde_json byte for byte, and refuses exactly the
        /// values `deeper_than` calls too deep.
        #[test]
        fn compact_writes_what_serde_json_writes(v in json_value(), left in 0usize..6) {
            let mut out = b"x".to_vec();
            let written = compact(&mut out, &v, left);
            prop_assert_eq!(written.is_err(), deeper_than(&v, left));
            if written.is_ok() {
                prop_assert_eq!(&out[1..], &serde_json::to_vec(&v).unwrap()[..]);
            }
        }
    }

    #[test]
    fn compact_writes_numbers_as_serde_json_does() {
        for v in [
            json!(0),
            json!(-0.0),
            json!(1250.5),
            json!(1e300),
            json!(-1.5e-300),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(0.1),
            json!(100000000000000000000.0),
        ] {
            let mut out = Vec::new();
            compact(&mut out, &v, 1).unwrap();
            assert_eq!(out, serde_json::to_vec(&v).unwrap(), "{v}");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            "[\"\\\\\n\u{1}a-z]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
