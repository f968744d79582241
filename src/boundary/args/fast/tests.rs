//! The fast path against the reference path: same verdict, same denial (code, rule, reason) for
//! adversarial raw argument texts, and the fast path really taken where it should be.

use proptest::prelude::*;

use crate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use crate::{RunContext, ToolCall};

/// Tools of flat rules (fast path planned) and one of each kind the plan leaves out.
fn boundary() -> &'static ActionBoundary {
    static B: std::sync::LazyLock<ActionBoundary> = std::sync::LazyLock::new(build);
    &B
}

fn build() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "pay_invoice",
            ToolSpec::irreversible()
                .arg("invoice", Arg::string().required().pattern("INV-[0-9]{6}"))
                .arg("amount", Arg::number().required().max(10_000.0))
                .arg(
                    "currency",
                    Arg::string().required().one_of(["USD", "EUR", "GBP"]),
                ),
        )
        .tool(
            "typed",
            ToolSpec::write()
                .arg("note", Arg::string().max_length(5))
                .arg("flag", Arg::boolean())
                .arg("count", Arg::integer().required().min(-3.0).max(10.0))
                .arg("ratio", Arg::number().min(0.5).max(0.75))
                .arg(
                    "any",
                    Arg::any().one_of([
                        serde_json::json!(1),
                        serde_json::json!(2.5),
                        serde_json::json!("a"),
                        serde_json::json!(true),
                        serde_json::Value::Null,
                    ]),
                )
                .arg("nothing", Arg::any())
                .arg("secret", Arg::forbidden())
                .arg("é", Arg::string().pattern("[a-zé]*").sensitive()),
        )
        .tool(
            "loose",
            ToolSpec::read()
                .allow_unknown_args()
                .arg("q", Arg::string()),
        )
        .tool(
            "nested",
            ToolSpec::read()
                .arg("q", Arg::string())
                .arg("o.k", Arg::integer()),
        )
        .tool(
            "matter",
            ToolSpec::read()
                .compartment_arg("m")
                .arg("m", Arg::string().required()),
        )
        .tool("empty", ToolSpec::read())
        .role(
            "r",
            RoleSpec::new().tools(["pay_invoice", "typed", "loose", "nested", "matter", "empty"]),
        )
        .build()
        .unwrap()
}

const TOOLS: [&str; 6] = ["pay_invoice", "typed", "loose", "nested", "matter", "empty"];

fn ctx() -> RunContext {
    RunContext::new("agent", "r")
}

/// Checks `text` both ways; asserts agreement; returns whether it was admitted.
fn agree(b: &ActionBoundary, ctx: &RunContext, tool: &str, text: &str) -> Result<bool, String> {
    let call = ToolCall::new(tool, text);
    let fast = b.check(ctx, &call);
    let reference = b.check_reference(ctx, &call);
    if fast != reference {
        return Err(format!(
            "{tool} {text:?}: fast {fast:?} vs reference {reference:?}"
        ));
    }
    Ok(fast.is_ok())
}

/// Whether the fast path itself admits `text` for `tool`.
fn fast_admits(b: &ActionBoundary, tool: &str, text: &str) -> bool {
    let i = b.tool_index.get(tool).unwrap() as usize;
    b.tools[i].args.admits_raw(text)
}

const KEYS: &[&str] = &[
    "invoice",
    "amount",
    "currency",
    "note",
    "flag",
    "count",
    "ratio",
    "any",
    "nothing",
    "secret",
    "é",
    "q",
    "o",
    "m",
    "x",
    "",
    "amount ",
    "Amount",
    "inv\\u006fice",
    "am\\u006funt",
    "\\u00e9",
    "e\\u0301",
    "invoice\\\"",
    "count\u{0}",
];

const VALUES: &[&str] = &[
    "\"INV-004711\"",
    "\"INV-00471\"",
    "\"INV-0047111\"",
    "\"INV-004711\\u0000\"",
    "\"INV\\u002d004711\"",
    "\"INV-٠٠٤٧١١\"",
    "\"EUR\"",
    "\"eur\"",
    "\"EU\\u0052\"",
    "\"EUR \"",
    "\"abcde\"",
    "\"abcdé\"",
    "\"abcdef\"",
    "\"\"",
    "\"a\"",
    "\"\u{1}\"",
    "\"tab\there\"",
    "\"\\ud83d\\ude00\"",
    "\"\\ud83d\"",
    "\"é\"",
    "\"ée\"",
    "1250.5",
    "10000",
    "10000.0",
    "10000.00000000000001",
    "10000.000000000001",
    "9999.999999999999",
    "1e4",
    "1E+4",
    "1.0e4",
    "-0",
    "-0.0",
    "0",
    "01",
    "1.",
    ".5",
    "+1",
    "-",
    "--1",
    "1.5.2",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "99999999999999999999999",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "0.5",
    "0.75",
    "0.7500000000000001",
    "0.50",
    "2.5",
    "2.50",
    "1",
    "1.0",
    "-3",
    "-3.0",
    "-4",
    "10",
    "11",
    "true",
    "false",
    "null",
    "tru",
    "nul",
    "True",
    "{}",
    "[]",
    "{\"k\":1}",
    "[1,2]",
    "{\"k\":{}}",
];

const SPACE: &[&str] = &["", " ", "\n", "\t", "\r\n ", "\u{a0}", "\u{feff}"];

const PREFIX: &[&str] = &["", "", "", " ", "\u{feff}", "[", "x"];
const SUFFIX: &[&str] = &["", "", "", " \n", ",", "}", "x", "\u{0}", " {}", "]"];

/// A document of members picked from the pools, with optional damage.
fn document() -> impl Strategy<Value = String> {
    let member = (
        prop::sample::select(KEYS),
        prop::sample::select(VALUES),
        prop::sample::select(SPACE),
        prop::sample::select(SPACE),
    );
    (
        prop::collection::vec(member, 0..6),
        prop::sample::select(PREFIX),
        prop::sample::select(SUFFIX),
        prop::sample::select(&[",", ",", ",", ";", ", ", ",,"][..]),
    )
        .prop_map(|(members, pre, post, sep)| {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v, s1, s2)| format!("{s1}\"{k}\"{s2}:{s1}{v}{s2}"))
                .collect();
            format!("{pre}{{{}}}{post}", body.join(sep))
        })
}

/// A valid-looking document with one byte-level edit (insert, delete or replace).
fn mutated() -> impl Strategy<Value = String> {
    (
        document(),
        any::<prop::sample::Index>(),
        0u8..3,
        prop::sample::select(
            &[
                "\"", "\\", ":", ",", "{", "}", "[", "]", " ", "0", "-", ".", "e", "\u{0}", "é",
                "\u{feff}",
            ][..],
        ),
    )
        .prop_map(|(doc, at, op, piece)| {
            let cuts: Vec<usize> = (0..=doc.len())
                .filter(|&i| doc.is_char_boundary(i))
                .collect();
            let i = cuts[at.index(cuts.len())];
            let mut out = doc[..i].to_owned();
            let rest = &doc[i..];
            let skip = rest.chars().next().map_or(0, char::len_utf8);
            match op {
                0 => {
                    out.push_str(piece);
                    out.push_str(rest);
                }
                1 => out.push_str(&rest[skip..]),
                _ => {
                    out.push_str(piece);
                    out.push_str(&rest[skip..]);
                }
            }
            out
        })
}

/// Members the rules of `pay_invoice` and `typed` admit (and a few they refuse), so that many
/// documents are admitted and a fast path admitting too much shows.
const GOOD: &[&str] = &[
    r#""invoice":"INV-004711""#,
    r#""invoice":"INV-999999""#,
    r#""amount":1250.5"#,
    r#""amount":-7"#,
    r#""amount":10000"#,
    r#""currency":"EUR""#,
    r#""currency":"GBP""#,
    r#""count":-3"#,
    r#""count":10.0"#,
    r#""count":0"#,
    r#""ratio":0.5"#,
    r#""ratio":0.75"#,
    r#""note":"abcdé""#,
    r#""note":"""#,
    r#""flag":false"#,
    r#""any":2.5"#,
    r#""any":"a""#,
    r#""any":null"#,
    r#""any":1.0"#,
    r#""nothing":"x""#,
    r#""nothing":-0.0"#,
    r#""é":"éa""#,
    r#""q":"q""#,
    r#""amount":10000.0000000001"#,
    r#""count":10.5"#,
    r#""ratio":0.4999999999"#,
    r#""note":"abcdef""#,
    r#""any":"b""#,
    r#""secret":1"#,
    r#""é":"E""#,
    r#""flag":"true""#,
];

/// Documents of mostly admitted members, possibly repeated.
fn near_valid() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(GOOD), 0..7),
        prop::sample::select(&["", " ", "\n"][..]),
    )
        .prop_map(|(members, ws)| format!("{{{ws}{}{ws}}}", members.join(&format!("{ws},"))))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn fast_path_agrees_on_nearly_admitted_documents(
        doc in near_valid(),
        tool in prop::sample::select(&["pay_invoice", "typed", "loose"][..]),
    ) {
        if let Err(e) = agree(boundary(), &ctx(), tool, &doc) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn fast_path_agrees_with_the_reference_on_adversarial_documents(
        doc in prop_oneof![document(), mutated()],
        tool in prop::sample::select(&TOOLS[..]),
    ) {
        let b = boundary();
        if let Err(e) = agree(b, &ctx(), tool, &doc) {
            prop_assert!(false, "{}", e);
        }
        // The fast path never admits what the reference refuses (the property the agreement
        // rests on), checked on the fast path alone too.
        if fast_admits(b, tool, &doc) {
            prop_assert!(b.check_reference(&ctx(), &ToolCall::new(tool, &doc)).is_ok(), "{}", doc);
        }
    }

    #[test]
    fn fast_path_agrees_on_arbitrary_text(doc in "\\PC{0,40}", tool in prop::sample::select(&TOOLS[..])) {
        let b = boundary();
        if let Err(e) = agree(b, &ctx(), tool, &doc) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn fast_path_agrees_on_numbers(
        neg in any::<bool>(),
        int in "0|[1-9][0-9]{0,22}|0[0-9]{1,3}",
        frac in proptest::option::of("[0-9]{0,22}"),
        exp in proptest::option::of("[eE][+-]?[0-9]{0,3}"),
        field in prop::sample::select(&["amount", "count", "ratio", "any"][..]),
    ) {
        let num = format!(
            "{}{int}{}{}",
            if neg { "-" } else { "" },
            frac.map(|f| format!(".{f}")).unwrap_or_default(),
            exp.unwrap_or_default()
        );
        let b = boundary();
        let (tool, doc) = if field == "amount" {
            ("pay_invoice", format!(r#"{{"invoice":"INV-004711","amount":{num},"currency":"EUR"}}"#))
        } else {
            ("typed", format!(r#"{{"count":1,"{field}":{num}}}"#))
        };
        if let Err(e) = agree(b, &ctx(), tool, &doc) {
            prop_assert!(false, "{}", e);
        }
    }
}

#[test]
fn the_bench_call_is_admitted_by_the_fast_path() {
    let b = boundary();
    let raw = r#"{"invoice":"INV-004711","amount":1250.5,"currency":"EUR"}"#;
    assert!(fast_admits(b, "pay_invoice", raw));
    assert!(fast_admits(
        b,
        "pay_invoice",
        " {\n \"currency\" : \"GBP\" ,\"amount\":-0,\"invoice\":\"INV-000000\"}\r\n"
    ));
    // An array value (here for an untyped argument) is left to the reference path.
    let nested = r#"{"count":-3,"any":null,"é":"éa","nothing":[]}"#;
    assert!(!fast_admits(b, "typed", nested));
    assert!(b.check(&ctx(), &ToolCall::new("typed", nested)).is_ok());
    assert!(fast_admits(
        b,
        "typed",
        r#"{"count":10.0,"any":2.50,"é":"éa","nothing":"x"}"#
    ));
    assert!(fast_admits(b, "empty", "{}"));
    assert!(fast_admits(b, "empty", " { } "));
}

#[test]
fn rules_the_fast_path_does_not_plan_take_the_reference_path() {
    let b = boundary();
    // Nested rules, and a compartment (checked by `check` before the rules), have no plan.
    assert!(!fast_admits(b, "nested", r#"{"q":"a"}"#));
    assert!(
        b.check(&ctx(), &ToolCall::new("nested", r#"{"q":"a"}"#))
            .is_ok()
    );
    let m = b.tool_index.get("matter").unwrap() as usize;
    assert!(b.tools[m].compartment.is_some());
    // The compartmented tool's rules alone would admit this; its compartment rule (this run is
    // bound to none) refuses it, so the fast path must not even be asked (found by the
    // adversarial property test: `{"m":":INV-٠٠٤٧١١"}` was admitted by the plan alone).
    let doc = r#"{"m":"M-1"}"#;
    assert!(!fast_admits(b, "matter", doc));
    assert!(b.check(&ctx(), &ToolCall::new("matter", doc)).is_err());
    // allow_unknown rules are planned, but an unknown key is left to the reference path.
    assert!(fast_admits(b, "loose", r#"{"q":"a"}"#));
    assert!(!fast_admits(b, "loose", r#"{"q":"a","z":1}"#));
    assert!(
        b.check(&ctx(), &ToolCall::new("loose", r#"{"q":"a","z":1}"#))
            .is_ok()
    );
}

/// Each refusal the reference path makes, seen through `check` (fast path first): the fast path
/// must hand every one of them over, so the same denial comes back.
#[test]
fn attacks_on_the_fast_path_are_refused_with_the_reference_denial() {
    use crate::verdict::DenyCode as C;
    let b = boundary();
    let ok = r#""invoice":"INV-004711","amount":1250.5"#;
    let cases: &[(&str, String, C)] = &[
        (
            "duplicate key",
            format!(r#"{{{ok},"currency":"EUR","currency":"EUR"}}"#),
            C::MalformedArgs,
        ),
        (
            "escaped duplicate",
            format!(r#"{{{ok},"currency":"EUR","curr\u0065ncy":"XXX"}}"#),
            C::MalformedArgs,
        ),
        (
            "byte order mark",
            format!("\u{feff}{{{ok},\"currency\":\"EUR\"}}"),
            C::MalformedArgs,
        ),
        (
            "trailing garbage",
            format!(r#"{{{ok},"currency":"EUR"}}x"#),
            C::MalformedArgs,
        ),
        (
            "second document",
            format!(r#"{{{ok},"currency":"EUR"}}{{}}"#),
            C::MalformedArgs,
        ),
        (
            "leading zero",
            r#"{"invoice":"INV-004711","amount":01250,"currency":"EUR"}"#.to_owned(),
            C::MalformedArgs,
        ),
        (
            "raw control char",
            format!("{{{ok},\"currency\":\"EUR\u{1}\"}}"),
            C::MalformedArgs,
        ),
        (
            "over the bound",
            r#"{"invoice":"INV-004711","amount":10000.000000000001,"currency":"EUR"}"#.to_owned(),
            C::ArgumentOutOfRange,
        ),
        (
            "exponent over the bound",
            r#"{"invoice":"INV-004711","amount":1.0000001e4,"currency":"EUR"}"#.to_owned(),
            C::ArgumentOutOfRange,
        ),
        ("missing required", format!("{{{ok}}}"), C::MissingArgument),
        (
            "unknown key",
            format!(r#"{{{ok},"currency":"EUR","memo":"x"}}"#),
            C::UnknownArgument,
        ),
        (
            "enum miss",
            format!(r#"{{{ok},"currency":"EUR "}}"#),
            C::ArgumentNotAllowed,
        ),
        (
            "pattern miss",
            r#"{"invoice":"INV-0047111","amount":1,"currency":"EUR"}"#.to_owned(),
            C::ArgumentPattern,
        ),
        (
            "wrong type",
            format!(r#"{{{ok},"currency":["EUR"]}}"#),
            C::ArgumentType,
        ),
        ("not an object", "[]".to_owned(), C::MalformedArgs),
    ];
    for (what, text, code) in cases {
        let call = ToolCall::new("pay_invoice", text.as_str());
        let fast = b.check(&ctx(), &call);
        assert_eq!(fast, b.check_reference(&ctx(), &call), "{what}");
        assert_eq!(fast.err().map(|d| d.code()), Some(*code), "{what}: {text}");
    }
    let forbidden = ToolCall::new("typed", r#"{"count":1,"secret":1}"#);
    assert_eq!(
        b.check(&ctx(), &forbidden).unwrap_err().code(),
        C::ForbiddenArgument
    );
}
