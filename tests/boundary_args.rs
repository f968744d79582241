//! Argument rules, one kind at a time, each with allow and deny cases, on both argument
//! representations (raw JSON text and parsed `serde_json::Value`).

mod common;

use common::{allowed, denied};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::{DenyCode, RunContext};

fn one_tool(spec: ToolSpec) -> (ActionBoundary, RunContext) {
    let b = ActionBoundary::builder()
        .tool("t", spec)
        .role("r", RoleSpec::new().tools(["t"]))
        .build()
        .unwrap();
    (b, RunContext::new("agent", "r"))
}

#[test]
fn required_argument() {
    let (b, c) = one_tool(ToolSpec::read().arg("id", Arg::string().required()));
    allowed(&b, &c, "t", r#"{"id":"x"}"#);
    denied(&b, &c, "t", r#"{}"#, DenyCode::MissingArgument);
    // null is present but of the wrong type, not "missing"
    denied(&b, &c, "t", r#"{"id":null}"#, DenyCode::ArgumentType);
}

#[test]
fn optional_argument_may_be_absent() {
    let (b, c) = one_tool(ToolSpec::read().arg("note", Arg::string()));
    allowed(&b, &c, "t", r#"{}"#);
    allowed(&b, &c, "t", r#"{"note":"hi"}"#);
    denied(&b, &c, "t", r#"{"note":3}"#, DenyCode::ArgumentType);
}

#[test]
fn forbidden_argument() {
    let (b, c) = one_tool(
        ToolSpec::read()
            .arg("bcc", Arg::forbidden())
            .arg("to", Arg::string()),
    );
    allowed(&b, &c, "t", r#"{"to":"a"}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"to":"a","bcc":"x@evil"}"#,
        DenyCode::ForbiddenArgument,
    );
    denied(&b, &c, "t", r#"{"bcc":null}"#, DenyCode::ForbiddenArgument);
}

#[test]
fn unknown_arguments_are_rejected_by_default() {
    let (b, c) = one_tool(ToolSpec::read().arg("q", Arg::string()));
    denied(
        &b,
        &c,
        "t",
        r#"{"q":"a","extra":1}"#,
        DenyCode::UnknownArgument,
    );
    denied(&b, &c, "t", r#"{"Q":"a"}"#, DenyCode::UnknownArgument);
    denied(&b, &c, "t", r#"{"q ":"a"}"#, DenyCode::UnknownArgument);
    // escaped key that decodes to the declared name is the declared name
    allowed(&b, &c, "t", r#"{"\u0071":"a"}"#);
}

#[test]
fn unknown_arguments_can_be_opened_explicitly() {
    let (b, c) = one_tool(
        ToolSpec::read()
            .allow_unknown_args()
            .arg("q", Arg::string().required()),
    );
    allowed(&b, &c, "t", r#"{"q":"a","extra":[1,2,{"x":null}]}"#);
    denied(&b, &c, "t", r#"{"extra":1}"#, DenyCode::MissingArgument);
}

#[test]
fn tool_without_declared_arguments_accepts_only_empty_object() {
    let (b, c) = one_tool(ToolSpec::read());
    allowed(&b, &c, "t", "{}");
    allowed(&b, &c, "t", " { } ");
    denied(&b, &c, "t", r#"{"a":1}"#, DenyCode::UnknownArgument);
}

#[test]
fn type_rules() {
    let cases: &[(Arg, &str, &str)] = &[
        (Arg::string(), r#""s""#, "1"),
        (Arg::integer(), "7", "7.5"),
        (Arg::integer(), "-7", r#""7""#),
        (Arg::integer(), "3.0", "true"),
        (Arg::number(), "7.5", r#""7.5""#),
        (Arg::boolean(), "false", "0"),
        (Arg::object(), "{}", "[]"),
        (Arg::array(), "[]", "{}"),
        (Arg::any().min(0.0), "1", "null"),
    ];
    for (rule, ok, bad) in cases {
        let (b, c) = one_tool(ToolSpec::read().arg("v", rule.clone()));
        allowed(&b, &c, "t", &format!(r#"{{"v":{ok}}}"#));
        denied(
            &b,
            &c,
            "t",
            &format!(r#"{{"v":{bad}}}"#),
            DenyCode::ArgumentType,
        );
    }
}

#[test]
fn enum_rule() {
    let (b, c) = one_tool(ToolSpec::read().arg("level", Arg::string().one_of(["low", "high"])));
    allowed(&b, &c, "t", r#"{"level":"low"}"#);
    allowed(&b, &c, "t", r#"{"level":"\u0068igh"}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"level":"LOW"}"#,
        DenyCode::ArgumentNotAllowed,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"level":"low "}"#,
        DenyCode::ArgumentNotAllowed,
    );
    let (b, c) = one_tool(ToolSpec::read().arg("n", Arg::any().one_of([1, 2, 3])));
    allowed(&b, &c, "t", r#"{"n":2}"#);
    allowed(&b, &c, "t", r#"{"n":2.0}"#);
    denied(&b, &c, "t", r#"{"n":4}"#, DenyCode::ArgumentNotAllowed);
    denied(&b, &c, "t", r#"{"n":"2"}"#, DenyCode::ArgumentNotAllowed);
}

#[test]
fn numeric_bounds() {
    let (b, c) = one_tool(ToolSpec::read().arg("amount", Arg::number().min(0.01).max(1000.0)));
    allowed(&b, &c, "t", r#"{"amount":0.01}"#);
    allowed(&b, &c, "t", r#"{"amount":1000}"#);
    allowed(&b, &c, "t", r#"{"amount":1e3}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"amount":1000.0001}"#,
        DenyCode::ArgumentOutOfRange,
    );
    denied(&b, &c, "t", r#"{"amount":0}"#, DenyCode::ArgumentOutOfRange);
    denied(
        &b,
        &c,
        "t",
        r#"{"amount":-5}"#,
        DenyCode::ArgumentOutOfRange,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"amount":1e4}"#,
        DenyCode::ArgumentOutOfRange,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"amount":18446744073709551615}"#,
        DenyCode::ArgumentOutOfRange,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"amount":-9223372036854775808}"#,
        DenyCode::ArgumentOutOfRange,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"amount":1e308}"#,
        DenyCode::ArgumentOutOfRange,
    );
    // out-of-range literals are malformed, never infinity slipping past a bound
    denied(&b, &c, "t", r#"{"amount":1e400}"#, DenyCode::MalformedArgs);
}

#[test]
fn integer_bounds_are_exact_beyond_f64_precision() {
    // Integer arguments beyond 2^53 compare exactly with the largest bound accepted.
    let (b, c) = one_tool(ToolSpec::read().arg("n", Arg::integer().max(999_999_999_999_999.0)));
    allowed(&b, &c, "t", r#"{"n":999999999999999}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"n":1000000000000000}"#,
        DenyCode::ArgumentOutOfRange,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"n":9007199254740993}"#,
        DenyCode::ArgumentOutOfRange,
    );
    // A bound at or beyond 2^53 could be the rounding of another integer: refused.
    let r = ActionBoundary::builder()
        .tool(
            "t",
            ToolSpec::read().arg("n", Arg::integer().max(9_007_199_254_740_992.0)),
        )
        .build();
    assert_eq!(r.unwrap_err().field(), Some("tools.t.args.n.max"));
}

#[test]
fn string_max_length_counts_characters() {
    let (b, c) = one_tool(ToolSpec::read().arg("s", Arg::string().max_length(3)));
    allowed(&b, &c, "t", r#"{"s":"abc"}"#);
    allowed(&b, &c, "t", r#"{"s":"äöü"}"#);
    allowed(&b, &c, "t", r#"{"s":"\u00e4\u00f6\u00fc"}"#);
    allowed(&b, &c, "t", r#"{"s":"😀😀😀"}"#);
    allowed(&b, &c, "t", r#"{"s":"\ud83d\ude00"}"#);
    denied(&b, &c, "t", r#"{"s":"abcd"}"#, DenyCode::ArgumentTooLong);
    denied(
        &b,
        &c,
        "t",
        r#"{"s":"\u0061\u0062\u0063\u0064"}"#,
        DenyCode::ArgumentTooLong,
    );
}

#[test]
fn regex_is_anchored_to_the_whole_string() {
    let (b, c) = one_tool(ToolSpec::read().arg("id", Arg::string().pattern("M-[0-9]{4}")));
    allowed(&b, &c, "t", r#"{"id":"M-1001"}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"id":"M-1001; DROP TABLE matters"}"#,
        DenyCode::ArgumentPattern,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"id":"xM-1001"}"#,
        DenyCode::ArgumentPattern,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"id":"M-1001\n"}"#,
        DenyCode::ArgumentPattern,
    );
    denied(&b, &c, "t", r#"{"id":"M-100"}"#, DenyCode::ArgumentPattern);
    // an alternation in the user's pattern stays inside the anchors
    let (b, c) = one_tool(ToolSpec::read().arg("v", Arg::string().pattern("a|b")));
    allowed(&b, &c, "t", r#"{"v":"a"}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"v":"a-and-more"}"#,
        DenyCode::ArgumentPattern,
    );
    denied(&b, &c, "t", r#"{"v":"more-b"}"#, DenyCode::ArgumentPattern);
}

#[test]
fn nested_paths_reach_into_objects() {
    let (b, c) = one_tool(
        ToolSpec::irreversible()
            .arg("payment.amount", Arg::number().required().max(500.0))
            .arg("payment.currency", Arg::string().one_of(["USD", "EUR"])),
    );
    allowed(&b, &c, "t", r#"{"payment":{"amount":45,"currency":"USD"}}"#);
    allowed(&b, &c, "t", r#"{"payment":{"amount":45}}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"payment":{"amount":4500}}"#,
        DenyCode::ArgumentOutOfRange,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"payment":{"currency":"USD"}}"#,
        DenyCode::MissingArgument,
    );
    denied(&b, &c, "t", r#"{}"#, DenyCode::MissingArgument);
    denied(
        &b,
        &c,
        "t",
        r#"{"payment":"45 USD"}"#,
        DenyCode::ArgumentType,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"payment":{"amount":45,"iban":"X"}}"#,
        DenyCode::UnknownArgument,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"payment":{"amount":45},"amount":1}"#,
        DenyCode::UnknownArgument,
    );
}

#[test]
fn array_elements_and_max_items() {
    let (b, c) = one_tool(
        ToolSpec::irreversible()
            .arg("recipients", Arg::array().required().max_items(2))
            .arg(
                "recipients[]",
                Arg::string().pattern("[a-z]+@firm\\.example"),
            ),
    );
    allowed(&b, &c, "t", r#"{"recipients":["a@firm.example"]}"#);
    allowed(&b, &c, "t", r#"{"recipients":[]}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"recipients":["a@firm.example","x@evil.example"]}"#,
        DenyCode::ArgumentPattern,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"recipients":["a@firm.example","b@firm.example","c@firm.example"]}"#,
        DenyCode::ArgumentTooLong,
    );
    denied(&b, &c, "t", r#"{"recipients":[7]}"#, DenyCode::ArgumentType);
    denied(
        &b,
        &c,
        "t",
        r#"{"recipients":"a@firm.example"}"#,
        DenyCode::ArgumentType,
    );
}

#[test]
fn array_of_objects_checks_each_element() {
    let (b, c) = one_tool(
        ToolSpec::irreversible()
            .arg("lines[].amount", Arg::number().required().max(100.0))
            .arg("lines[].memo", Arg::string().max_length(10)),
    );
    allowed(
        &b,
        &c,
        "t",
        r#"{"lines":[{"amount":1},{"amount":2,"memo":"ok"}]}"#,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"lines":[{"amount":1},{"amount":200}]}"#,
        DenyCode::ArgumentOutOfRange,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"lines":[{"memo":"x"}]}"#,
        DenyCode::MissingArgument,
    );
    denied(
        &b,
        &c,
        "t",
        r#"{"lines":[{"amount":1,"to":"evil"}]}"#,
        DenyCode::UnknownArgument,
    );
}

#[test]
fn object_can_open_its_own_unknown_fields() {
    let (b, c) = one_tool(
        ToolSpec::read()
            .arg("meta", Arg::object().allow_unknown_fields())
            .arg("meta.kind", Arg::string().required()),
    );
    allowed(&b, &c, "t", r#"{"meta":{"kind":"a","anything":[1]}}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"meta":{"anything":[1]}}"#,
        DenyCode::MissingArgument,
    );
}

#[test]
fn denial_names_the_rule_and_the_argument() {
    let (b, c) = one_tool(ToolSpec::irreversible().arg("payment.amount", Arg::number().max(500.0)));
    let d = b
        .check(
            &c,
            &tollgate::ToolCall::new("t", r#"{"payment":{"amount":501}}"#),
        )
        .unwrap_err();
    assert_eq!(d.rule().as_str(), "tools.t.args.payment.amount.max");
    assert!(d.reason().contains("payment.amount"), "{}", d.reason());
    assert!(d.reason().contains("501"), "{}", d.reason());
}

#[test]
fn required_argument_three_levels_deep_makes_its_ancestors_required() {
    let (b, c) = one_tool(ToolSpec::irreversible().arg(
        "payment.details.amount",
        Arg::number().required().max(100.0),
    ));
    allowed(&b, &c, "t", r#"{"payment":{"details":{"amount":5}}}"#);
    denied(&b, &c, "t", r#"{}"#, DenyCode::MissingArgument);
    denied(&b, &c, "t", r#"{"payment":{}}"#, DenyCode::MissingArgument);
    denied(
        &b,
        &c,
        "t",
        r#"{"payment":{"details":{}}}"#,
        DenyCode::MissingArgument,
    );
    let none = b
        .check(&c, &tollgate::ToolCall::without_args("t"))
        .unwrap_err();
    assert_eq!(none.code(), DenyCode::MissingArgument);
}

fn raw(b: &ActionBoundary, c: &RunContext, args: &str) -> Result<(), DenyCode> {
    b.check(c, &tollgate::ToolCall::new("t", args))
        .map(|_| ())
        .map_err(|d| d.code())
}

#[test]
fn numbers_beyond_f64_precision_fail_closed_at_the_bound() {
    // A tool that parses numbers exactly (Python int, Decimal) must never see a value past the
    // bound that tollgate allowed.
    let (b, c) = one_tool(ToolSpec::read().arg("n", Arg::number().max(1e14)));
    assert_eq!(
        raw(&b, &c, r#"{"n":100000000000000.00001}"#),
        Err(DenyCode::ArgumentOutOfRange)
    );
    assert_eq!(
        raw(&b, &c, r#"{"n":100000000000000000001}"#),
        Err(DenyCode::ArgumentOutOfRange)
    );
    assert_eq!(
        raw(&b, &c, r#"{"n":100000000000001}"#),
        Err(DenyCode::ArgumentOutOfRange)
    );
    assert_eq!(raw(&b, &c, r#"{"n":1e14}"#), Ok(()));
    assert_eq!(raw(&b, &c, r#"{"n":99999999999999}"#), Ok(()));
    let (b, c) = one_tool(ToolSpec::read().arg("n", Arg::number().max(9e15)));
    assert_eq!(
        raw(&b, &c, r#"{"n":9000000000000001.0}"#),
        Err(DenyCode::ArgumentOutOfRange)
    );
    let (b, c) = one_tool(ToolSpec::read().arg("amount", Arg::number().max(1000.0)));
    assert_eq!(
        raw(&b, &c, r#"{"amount":1000.0000000000000001}"#),
        Err(DenyCode::ArgumentOutOfRange)
    );
    assert_eq!(raw(&b, &c, r#"{"amount":1000.00}"#), Ok(()));
}

#[test]
fn enum_numbers_match_only_when_the_conversion_is_exact() {
    let (b, c) = one_tool(ToolSpec::read().arg("n", Arg::any().one_of([9_007_199_254_740_993u64])));
    assert_eq!(raw(&b, &c, r#"{"n":9007199254740993}"#), Ok(()));
    assert_eq!(
        raw(&b, &c, r#"{"n":9007199254740992.0}"#),
        Err(DenyCode::ArgumentNotAllowed)
    );
    assert_eq!(
        raw(&b, &c, r#"{"n":9007199254740993.0}"#),
        Err(DenyCode::ArgumentNotAllowed)
    );
}

#[test]
fn negative_zero_reads_as_serde_json_reads_it() {
    let (b, c) = one_tool(ToolSpec::read().arg("n", Arg::integer().min(0.0)));
    allowed(&b, &c, "t", r#"{"n":-0}"#);
    allowed(&b, &c, "t", r#"{"n":0}"#);
}
