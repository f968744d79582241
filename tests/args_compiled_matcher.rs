//! The one-pass fast path for raw arguments of flat tools (issue 12), through the public API:
//! the benches' 3-rule `pay_invoice` call is admitted without allocating, and every attack on the
//! fast path's reading of the text is refused with the reference path's denial. (The
//! differential property tests against the reference path live next to the code, in
//! `src/boundary/args/fast/tests.rs`, as they call the crate-internal reference check.)

use shared::RAW;
use tollgate::boundary::ActionBoundary;
use tollgate::verdict::DenyCode;
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
/// The boundary and call the benches measure (the same setup, not a copy of it).
#[path = "../benches/shared/mod.rs"]
mod shared;
use counting_alloc::allocations;

/// The benches' boundary: `pay_invoice` among 100 tools, three argument rules.
fn boundary() -> ActionBoundary {
    shared::boundary(100)
}

fn ctx() -> RunContext {
    RunContext::new("agent-7", "clerk")
}

#[test]
fn raw_three_rule_call_allocates_nothing_in_the_boundary_or_the_guard() {
    let b = boundary();
    let call = ToolCall::new("pay_invoice", RAW);
    let ctx = ctx();
    assert!(b.check(&ctx, &call).is_ok());
    let (ok, n) = allocations(|| b.check(&ctx, &call).is_ok());
    assert!(ok);
    assert_eq!(n, 0, "boundary check allocated {n} times");

    let guard = Guard::builder(boundary()).build().unwrap();
    let run = guard.start_run(ctx).unwrap();
    let step = || match guard.check(&run, &call) {
        Verdict::Allow(p) => p.complete(Outcome::success()).is_ok(),
        _ => false,
    };
    assert!(step());
    let (ok, n) = allocations(step);
    assert!(ok);
    assert_eq!(n, 0, "guard check + complete allocated {n} times");
}

fn denial(text: &str) -> Option<DenyCode> {
    boundary()
        .check(&ctx(), &ToolCall::new("pay_invoice", text))
        .err()
        .map(|d| d.code())
}

#[test]
fn duplicate_argument_smuggled_past_the_fast_path_is_refused() {
    // A second `currency` (plain or escaped) would let one parser see "EUR" and the tool "XXX".
    let plain = r#"{"invoice":"INV-004711","amount":1,"currency":"EUR","currency":"XXX"}"#;
    let escaped = r#"{"invoice":"INV-004711","amount":1,"currency":"EUR","curr\u0065ncy":"XXX"}"#;
    let same = r#"{"invoice":"INV-004711","amount":1,"currency":"EUR","currency":"EUR"}"#;
    for text in [plain, escaped, same] {
        assert_eq!(denial(text), Some(DenyCode::MalformedArgs), "{text}");
    }
}

#[test]
fn escaped_or_unicode_lookalike_values_are_judged_after_decoding() {
    // Escapes are decoded by the reference path: the decoded value passes or fails the rule.
    assert_eq!(
        denial(r#"{"invoice":"INV\u002d004711","amount":1,"currency":"EU\u0052"}"#),
        None
    );
    // Arabic-Indic digits are not [0-9]; a trailing NUL (escaped) is not in the enum.
    assert_eq!(
        denial(r#"{"invoice":"INV-٠٠٤٧١١","amount":1,"currency":"EUR"}"#),
        Some(DenyCode::ArgumentPattern)
    );
    assert_eq!(
        denial(r#"{"invoice":"INV-004711","amount":1,"currency":"EUR\u0000"}"#),
        Some(DenyCode::ArgumentNotAllowed)
    );
}

#[test]
fn numbers_just_over_the_bound_are_refused_in_every_spelling() {
    for text in [
        "10000.000000000001",
        "10000.0000000000000000001",
        "1.0000000000000001e4",
        "10001",
        "1e5",
        "100000000000000000000",
    ] {
        let doc = format!(r#"{{"invoice":"INV-004711","amount":{text},"currency":"EUR"}}"#);
        assert_eq!(denial(&doc), Some(DenyCode::ArgumentOutOfRange), "{text}");
    }
    for text in ["10000", "10000.0", "1e4", "-1e400"] {
        let doc = format!(r#"{{"invoice":"INV-004711","amount":{text},"currency":"EUR"}}"#);
        let want = if text == "-1e400" {
            Some(DenyCode::MalformedArgs)
        } else {
            None
        };
        assert_eq!(denial(&doc), want, "{text}");
    }
}

#[test]
fn malformed_text_around_an_admissible_document_is_refused() {
    let inner = r#""invoice":"INV-004711","amount":1250.5,"currency":"EUR""#;
    for text in [
        format!("\u{feff}{{{inner}}}"),
        format!("{{{inner}}}x"),
        format!("{{{inner}}} {{}}"),
        format!("{{{inner},}}"),
        format!("{{{inner}"),
        format!("{{,{inner}}}"),
        format!("{{{}}}", inner.replace("1250.5", "01250.5")),
        format!("{{{}}}", inner.replace("1250.5", "1250.")),
        format!("{{{}}}", inner.replace("1250.5", "NaN")),
        format!("{{{}}}", inner.replace("EUR", "EUR\u{1}")),
        format!("{{{}}}", inner.replace(':', "\u{a0}:")),
        format!("[{{{inner}}}]"),
    ] {
        assert_eq!(denial(&text), Some(DenyCode::MalformedArgs), "{text:?}");
    }
}

#[test]
fn missing_wrong_typed_and_undeclared_arguments_are_refused() {
    assert_eq!(
        denial(r#"{"invoice":"INV-004711","amount":1250.5}"#),
        Some(DenyCode::MissingArgument)
    );
    assert_eq!(
        denial(r#"{"invoice":"INV-004711","amount":"1250.5","currency":"EUR"}"#),
        Some(DenyCode::ArgumentType)
    );
    assert_eq!(
        denial(r#"{"invoice":"INV-004711","amount":1250.5,"currency":"EUR","to":"x"}"#),
        Some(DenyCode::UnknownArgument)
    );
    assert_eq!(
        denial(r#"{"invoice":"INV-004711","amount":1250.5,"currency":"EUR","amount ":1}"#),
        Some(DenyCode::UnknownArgument)
    );
}
