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
