//! The raw-JSON argument path (one-pass strict scanner, recorded root members, fast number
//! reading) decides exactly as the reference does: serde_json parses the text and the boundary
//! checks the parsed `Value`. Where serde_json would silently keep the last of two equal keys,
//! the raw path must refuse the text as malformed.

use proptest::prelude::*;
use serde_json::Value;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::{DenyCode, RunContext, ToolCall};

fn boundary() -> ActionBoundary {
    let spec = ToolSpec::read()
        .arg("invoice", Arg::string().required().pattern("INV-[0-9]{6}"))
        .arg("amount", Arg::number().required().min(-500.0).max(500.0))
        .arg("count", Arg::integer().max(100.0))
        .arg("currency", Arg::string().one_of(["USD", "EUR"]))
        .arg(
            "level",
            Arg::any().one_of([Value::from(1), Value::from(2.5)]),
        )
        .arg("meta.note", Arg::string().max_length(5));
    ActionBoundary::builder()
        .tool("t", spec)
        .role("r", RoleSpec::new().tools(["t"]))
        .build()
        .unwrap()
}

/// Keys in sorted order (document order = the parsed map's order, so the first failing rule is
/// the same on both paths); `other` is undeclared.
const KEYS: [&str; 7] = [
    "amount", "count", "currency", "invoice", "level", "meta", "other",
];
const INNER: [&str; 2] = ["note", "x"];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1",
    "2.5",
    "2.50",
    "25e-1",
    "100",
    "100.0",
    "101",
    "1e2",
    "500",
    "500.0",
    "500.0000000001",
    "499.999999999999",
    "-500",
    "-500.0000000001",
    "1250.5",
    "5e2",
    "5.000000000001e2",
    "12345678901234",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
];
const STRINGS: &[&str] = &[
    "INV-004711",
    "INV-00471",
    "INV-0047111",
    "EUR",
    "USD",
    "GBP",
    "abc",
    "abcdef",
    "",
];

fn escape_every_char(s: &str) -> String {
    let mut units = [0u16; 2];
    s.chars()
        .flat_map(|c| c.encode_utf16(&mut units).to_vec())
        .map(|u| format!("\\u{u:04x}"))
        .collect()
}

/// A key or string spelled plainly, with every character escaped, or with one escaped.
fn spell(s: &str, how: u8) -> String {
    match how % 3 {
        0 => s.to_owned(),
        1 => escape_every_char(s),
        _ => {
            let mut c = s.chars();
            match c.next() {
                Some(first) => format!("{}{}", escape_every_char(&first.to_string()), c.as_str()),
                None => String::new(),
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Val {
    Num(String),
    Str(usize, u8),
    Bool(bool),
    Null,
    Obj(Vec<(usize, u8, Val)>),
}

fn arb_number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(NUMBERS).prop_map(str::to_owned),
        any::<i64>().prop_map(|i| i.to_string()),
        // At most 15 significant digits: the parsed double and the text say the same number.
        (-99_999_999i64..99_999_999, 0u32..10_000_000).prop_map(|(a, b)| format!("{a}.{b}")),
    ]
}

fn arb_val() -> impl Strategy<Value = Val> {
    let leaf = prop_oneof![
        4 => arb_number().prop_map(Val::Num),
        4 => (0..STRINGS.len(), any::<u8>()).prop_map(|(i, h)| Val::Str(i, h)),
        1 => any::<bool>().prop_map(Val::Bool),
        1 => Just(Val::Null),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop::collection::vec((0..INNER.len(), any::<u8>(), inner), 0..4).prop_map(|mut m| {
            m.sort_by_key(|(k, _, _)| *k);
            Val::Obj(m)
        })
    })
}

/// Writes `v`; returns whether some object in it repeats a key.
fn write(v: &Val, names: &[&str], out: &mut String) -> bool {
    match v {
        Val::Num(n) => {
            out.push_str(n);
            false
        }
        Val::Str(i, how) => {
            out.push_str(&format!("\"{}\"", spell(STRINGS[*i], *how)));
            false
        }
        Val::Bool(b) => {
            out.push_str(&b.to_string());
            false
        }
        Val::Null => {
            out.push_str("null");
            false
        }
        Val::Obj(members) => write_object(members, names, out),
    }
}

fn write_object(members: &[(usize, u8, Val)], names: &[&str], out: &mut String) -> bool {
    out.push('{');
    let mut dup = false;
    for (i, (k, how, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
            dup |= members[i - 1].0 == *k;
        }
        out.push_str(&format!("\"{}\":", spell(names[*k], *how)));
        dup |= write(v, &INNER, out);
    }
    out.push('}');
    dup
}

type Decision = Result<(), (DenyCode, String)>;

fn decide(b: &ActionBoundary, call: &ToolCall<'_>) -> Decision {
    let ctx = RunContext::new("agent", "r");
    b.check(&ctx, call)
        .map(|_| ())
        .map_err(|d| (d.code(), d.rule().as_str().to_owned()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn raw_arguments_are_decided_as_their_parsed_value_is(
        members in prop::collection::vec((0..KEYS.len(), any::<u8>(), arb_val()), 0..9),
    ) {
        let mut members = members;
        members.sort_by_key(|(k, _, _)| *k);
        let mut text = String::new();
        let dup = write_object(&members, &KEYS, &mut text);
        let b = boundary();
        let raw = decide(&b, &ToolCall::new("t", text.as_str()));
        let reference = if dup {
            Err((DenyCode::MalformedArgs, "arguments.json".to_owned()))
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            decide(&b, &ToolCall::new("t", &v))
        };
        prop_assert_eq!(raw, reference, "{}", text);
    }
}

#[test]
fn escaped_key_names_the_declared_argument() {
    // `am\u006funt` is the key `amount`: its bound applies, and it repeats a plain `amount`.
    let b = boundary();
    let call = |text: &'static str| decide(&b, &ToolCall::new("t", text));
    assert_eq!(
        call(r#"{"am\u006funt":501,"invoice":"INV-004711"}"#),
        Err((
            DenyCode::ArgumentOutOfRange,
            "tools.t.args.amount.max".to_owned()
        ))
    );
    assert_eq!(
        call(r#"{"amount":1,"am\u006funt":501,"invoice":"INV-004711"}"#).map_err(|e| e.0),
        Err(DenyCode::MalformedArgs)
    );
    assert_eq!(
        call(r#"{"amount":500.0000000001,"invoice":"INV-004711"}"#).map_err(|e| e.0),
        Err(DenyCode::ArgumentOutOfRange)
    );
    assert_eq!(call(r#"{"amount":500.000,"invoice":"INV-004711"}"#), Ok(()));
}
