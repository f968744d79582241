//! Malformed, hostile and oversized arguments get typed denials and never a panic.

mod common;

use common::denied;
use proptest::prelude::*;
use serde_json::json;
use tollgate::boundary::{ActionBoundary, Arg, ArgLimits, RoleSpec, ToolSpec};
use tollgate::{DenyCode, RunContext, ToolCall};

fn boundary() -> (ActionBoundary, RunContext) {
    let b = ActionBoundary::builder()
        .limits(ArgLimits {
            max_bytes: 4096,
            max_depth: 8,
        })
        .tool(
            "pay",
            ToolSpec::irreversible()
                .arg("amount", Arg::number().required().max(100.0))
                .arg("memo", Arg::string().max_length(50))
                .arg("meta", Arg::object().allow_unknown_fields()),
        )
        .role("r", RoleSpec::new().tools(["pay"]))
        .build()
        .unwrap();
    (b, RunContext::new("a", "r"))
}

#[test]
fn syntax_errors_are_malformed_args_with_a_position() {
    let (b, c) = boundary();
    for text in [
        "",
        "   ",
        "{",
        "}",
        r#"{"amount": 5"#,
        r#"{"amount": 5,}"#,
        r#"{amount: 5}"#,
        r#"{'amount': 5}"#,
        r#"{"amount": 05}"#,
        r#"{"amount": +5}"#,
        r#"{"amount": .5}"#,
        r#"{"amount": NaN}"#,
        r#"{"amount": Infinity}"#,
        r#"{"amount": 5} {"amount": 500}"#,
        r#"{"amount": 5} // comment"#,
        "\u{feff}{\"amount\": 5}",
        r#"{"amount": 5, "memo": "\x"}"#,
        r#"{"amount": 5, "memo": "\ud800"}"#,
        "{\"amount\": 5, \"memo\": \"a\u{1}b\"}",
        r#"{"amount": 5, "memo": "unterminated}"#,
    ] {
        let d = b.check(&c, &ToolCall::new("pay", text)).unwrap_err();
        assert_eq!(d.code(), DenyCode::MalformedArgs, "{text:?}: {d}");
        assert!(d.reason().starts_with("arguments:"), "{}", d.reason());
    }
}

#[test]
fn duplicate_keys_are_rejected_not_last_one_wins() {
    // serde_json's Value keeps the last duplicate; a tool's own parser may keep the first. Either
    // way the check and the tool could see different amounts, so duplicates are refused outright.
    let (b, c) = boundary();
    for text in [
        r#"{"amount": 5, "amount": 5000}"#,
        r#"{"amount": 5, "\u0061mount": 5000}"#,
        r#"{"amount": 5, "meta": {"k": 1, "k": 2}}"#,
    ] {
        let d = b.check(&c, &ToolCall::new("pay", text)).unwrap_err();
        assert_eq!(d.code(), DenyCode::MalformedArgs, "{text}");
        assert!(d.reason().contains("duplicate"), "{}", d.reason());
    }
}

#[test]
fn arguments_must_be_an_object() {
    let (b, c) = boundary();
    for text in ["[]", "5", "null", "\"amount\"", "true"] {
        denied(&b, &c, "pay", text, DenyCode::MalformedArgs);
    }
}

#[test]
fn oversized_and_overdeep_arguments_are_refused_before_any_rule() {
    let (b, c) = boundary();
    let big = format!(r#"{{"amount": 5, "memo": "{}"}}"#, "x".repeat(5000));
    denied(&b, &c, "pay", &big, DenyCode::ArgsTooLarge);
    let deep = format!(
        r#"{{"amount": 5, "meta": {{"a":{}1{}}}}}"#,
        "[".repeat(20),
        "]".repeat(20)
    );
    denied(&b, &c, "pay", &deep, DenyCode::ArgsTooLarge);
    // a megabyte of brackets is rejected by size without recursing
    let bomb = "[".repeat(1 << 20);
    let d = b
        .check(&c, &ToolCall::new("pay", bomb.as_str()))
        .unwrap_err();
    assert_eq!(d.code(), DenyCode::ArgsTooLarge);
}

#[test]
fn too_many_keys_are_refused_on_both_representations() {
    let b = ActionBoundary::builder()
        .limits(ArgLimits {
            max_bytes: 1 << 20,
            max_depth: 8,
        })
        .tool(
            "t",
            ToolSpec::read().arg("m", Arg::object().allow_unknown_fields()),
        )
        .role("r", RoleSpec::new().tools(["t"]))
        .build()
        .unwrap();
    let c = RunContext::new("a", "r");
    let body: Vec<String> = (0..9000).map(|i| format!("\"k{i}\":{i}")).collect();
    let text = format!("{{\"m\":{{{}}}}}", body.join(","));
    denied(&b, &c, "t", &text, DenyCode::ArgsTooLarge);
    let body: Vec<String> = (0..8000).map(|i| format!("\"k{i}\":{i}")).collect();
    let text = format!("{{\"m\":{{{}}}}}", body.join(","));
    common::allowed(&b, &c, "t", &text);
}

#[test]
fn parsed_values_with_wrong_shapes_are_denied() {
    let (b, c) = boundary();
    for v in [
        json!([]),
        json!(null),
        json!({"amount": "5"}),
        json!({"amount": [5]}),
        json!({"amount": {"v": 5}}),
    ] {
        assert!(b.check(&c, &ToolCall::new("pay", &v)).is_err(), "{v}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics_and_only_valid_objects_pass(text in ".{0,200}") {
        let (b, c) = boundary();
        if b.check(&c, &ToolCall::new("pay", text.as_str())).is_ok() {
            let v: serde_json::Value = serde_json::from_str(&text).expect("accepted text must be JSON");
            let amount = v["amount"].as_f64().expect("accepted call has a numeric amount");
            prop_assert!(amount <= 100.0);
        }
    }

    #[test]
    fn mutated_valid_arguments_never_panic(
        pos in 0usize..60,
        byte in prop::sample::select(vec![b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', b'0', b'e', b'-', b' ']),
    ) {
        let (b, c) = boundary();
        let mut text = br#"{"amount": 50, "memo": "rent", "meta": {"k": [1, 2.5, null]}}"#.to_vec();
        let p = pos % text.len();
        text[p] = byte;
        let text = String::from_utf8(text).unwrap();
        if b.check(&c, &ToolCall::new("pay", text.as_str())).is_ok() {
            let v: serde_json::Value = serde_json::from_str(&text).expect("accepted text must be JSON");
            prop_assert!(v["amount"].as_f64().unwrap() <= 100.0);
        }
    }
}
