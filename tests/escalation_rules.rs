//! Escalation rules: documents and builders, field-naming errors, every condition (raw JSON and
//! parsed arguments must agree), fail-closed cases, tool scoping, combining several matches, and
//! allocation-free evaluation.

// Inside a module named after the file, so `cargo test escalation` selects these tests.
#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "common/tempdir.rs"]
mod tempdir;

mod escalation_rules {

    use std::time::Duration;

    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tollgate::boundary::{ActionBoundary, Effect, RoleSpec, ToolSpec};
    use tollgate::escalation::ApprovalSettings;
    use tollgate::escalation::{
        AmountCondition, BudgetCondition, Condition, ConfidenceCondition, EscalationGate,
        EscalationPolicy, EscalationPolicyError, GateInput, IfMissing, LevelSpec, Matched,
        OnTimeout, RuleParams, RuleSpec,
    };
    use tollgate::units::Money;

    use super::counting_alloc::allocations;

    fn tiers() -> Vec<String> {
        ["public", "internal", "confidential", "privileged"]
            .map(String::from)
            .to_vec()
    }

    fn base() -> EscalationPolicy {
        EscalationPolicy::new()
            .group("finance", ["alice", "bob", "erin"])
            .group("cfo", ["carol"])
            .defaults(RuleParams::new().timeout(Duration::from_secs(3600)).chain([
                LevelSpec::new("finance"),
                LevelSpec::after("cfo", Duration::from_secs(1800)),
            ]))
    }

    fn gate_with(rules: impl IntoIterator<Item = RuleSpec>) -> EscalationGate {
        let mut p = base();
        for r in rules {
            p = p.rule(r);
        }
        EscalationGate::compile(p, &tiers()).expect("valid policy")
    }

    /// Evaluates `args` as raw JSON text and (when it parses) as a `Value`; both must agree.
    fn eval(
        gate: &EscalationGate,
        tool: &str,
        args: &str,
        f: impl Fn(GateInput) -> GateInput,
    ) -> bool {
        let raw = gate.evaluate(&f(GateInput::new(tool, Effect::Write, args)));
        if let Ok(v) = serde_json::from_str::<Value>(args) {
            let parsed = gate.evaluate(&f(GateInput::new(tool, Effect::Write, &v)));
            assert_eq!(raw, parsed, "raw and parsed disagree for {tool}({args})");
        }
        !raw.is_empty()
    }

    fn plain(i: GateInput) -> GateInput {
        i
    }

    fn money(text: &str) -> Money {
        text.parse().expect("a valid amount")
    }

    fn err(p: EscalationPolicy) -> EscalationPolicyError {
        EscalationGate::compile(p, &tiers()).expect_err("policy must be refused")
    }

    #[test]
    fn toml_json_and_builder_describe_the_same_policy() {
        let toml = r#"
        [groups]
        finance = ["alice", "bob", "erin"]
        cfo = ["carol"]

        [defaults]
        timeout = "1h"
        chain = [{ group = "finance" }, { group = "cfo", after = "30m" }]

        [[rules]]
        id = "large-payment"
        tools = ["pay"]
        quorum = 2
        when = { amount = { path = "payment.amount", over = "1000.00" } }

        [[rules]]
        id = "risky"
        when = { all = [{ effect_at_least = "irreversible" }, { flag = "ambiguous" }] }
        on_timeout = "deny"
    "#;
        let from_toml = EscalationPolicy::from_toml(toml).unwrap();
        let json = serde_json::to_string(&from_toml).unwrap();
        let from_json = EscalationPolicy::from_json(&json).unwrap();
        let built = base()
            .rule(
                RuleSpec::new(
                    "large-payment",
                    // Spelled as in the document: the version hashes the canonical form,
                    // which keeps an amount's written scale ("1000.00").
                    Condition::amount_over("payment.amount", money("1000.00")),
                )
                .tools(["pay"])
                .quorum(2),
            )
            .rule(
                RuleSpec::new(
                    "risky",
                    Condition::all([Condition::irreversible(), Condition::flag("ambiguous")]),
                )
                .on_timeout(OnTimeout::Deny),
            );
        assert_eq!(from_toml, from_json);
        let dir = super::tempdir::temp_dir("esc-policy", "from-file");
        let path = dir.path().join("escalation.toml");
        std::fs::write(&path, toml).unwrap();
        let from_file = EscalationPolicy::from_file(&path);
        assert_eq!(from_file.unwrap(), from_json);
        let missing = EscalationPolicy::from_file("/nonexistent/escalation.toml").unwrap_err();
        assert!(
            matches!(missing, EscalationPolicyError::Io { .. }),
            "{missing}"
        );
        assert_eq!(from_toml, built);
        let a = EscalationGate::compile(from_toml, &tiers()).unwrap();
        let b = EscalationGate::compile(built.clone(), &tiers()).unwrap();
        assert_eq!(a.version(), b.version());
        let c = EscalationGate::compile(
            built.rule(RuleSpec::new("x", Condition::flag("f"))),
            &tiers(),
        )
        .unwrap();
        assert_ne!(a.version(), c.version());
    }

    #[test]
    fn documents_refuse_unknown_fields_duplicates_and_trailing_data() {
        let e = EscalationPolicy::from_json(
            r#"{"rules": [{"id": "a", "when": {"flag": "x"}, "qourum": 2}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, EscalationPolicyError::Parse { .. }), "{e}");
        assert_eq!(e.field(), Some("rules[0].qourum"), "{e}");
        let e = EscalationPolicy::from_json(r#"{"groups": {"a": ["x"], "a": ["y"]}}"#).unwrap_err();
        assert!(e.to_string().contains("duplicate key `a`"), "{e}");
        let e = EscalationPolicy::from_json(
            r#"{"rules": [{"id": "a", "when": {"amount": {"path": "p", "currency_path": "c",
            "over_by_currency": {"EUR": 1, "EUR": 2}}}}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("duplicate key `EUR`"), "{e}");
        let e = EscalationPolicy::from_json(r#"{} {}"#).unwrap_err();
        assert!(matches!(e, EscalationPolicyError::Parse { .. }), "{e}");
        let e = EscalationPolicy::from_json(r#"{"rules": [{"id": "a", "when": {"smell": "x"}}]}"#)
            .unwrap_err();
        assert_eq!(e.field(), Some("rules[0].when"), "{e}");
    }

    #[test]
    fn compile_errors_name_the_field() {
        let cases: Vec<(EscalationPolicy, &str)> = vec![
            (
                base()
                    .rule(RuleSpec::new("a", Condition::flag("x")))
                    .rule(RuleSpec::new("b", Condition::flag("x")))
                    .rule(RuleSpec::new("c", Condition::amount_over("", 5))),
                "rules[2].when.amount.path",
            ),
            (
                base().rule(RuleSpec::new(
                    "a",
                    Condition::amount_over("items[].amount", 5),
                )),
                "rules[0].when.amount.path",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::amount_over("a..b", 5))),
                "rules[0].when.amount.path",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::amount_over("a", -1))),
                "rules[0].when.amount.over",
            ),
            (
                base().rule(RuleSpec::new(
                    "a",
                    Condition::amount_over("a", money("1000.0000000000001")),
                )),
                "rules[0].when.amount.over",
            ),
            (
                base().rule(RuleSpec::new(
                    "a",
                    Condition::Amount(AmountCondition {
                        currency_path: Some("c".into()),
                        ..AmountCondition::over("a", 1)
                    }),
                )),
                "rules[0].when.amount.over",
            ),
            (
                base().rule(RuleSpec::new(
                    "a",
                    Condition::amount_over_by_currency("a", "c", [("EUR", money("-0.01"))]),
                )),
                "rules[0].when.amount.over_by_currency.EUR",
            ),
            (
                base().rule(RuleSpec::new(
                    "a",
                    Condition::amount_over_by_currency("a", "c", Vec::<(String, Money)>::new()),
                )),
                "rules[0].when.amount.over_by_currency",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::tier_at_least("secret"))),
                "rules[0].when.tier_at_least",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::confidence_below(1.5))),
                "rules[0].when.confidence.below",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::budget_used_at_least(0.0))),
                "rules[0].when.budget_used.at_least",
            ),
            (
                base().rule(RuleSpec::new(
                    "a",
                    Condition::any([Condition::flag("x"), Condition::all([])]),
                )),
                "rules[0].when.any[1].all",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::flag(" x"))),
                "rules[0].when.flag",
            ),
            (
                base()
                    .rule(RuleSpec::new("a", Condition::flag("x")))
                    .rule(RuleSpec::new("a", Condition::flag("y"))),
                "rules[1].id",
            ),
            (
                base().rule(RuleSpec::new("has space", Condition::flag("x"))),
                "rules[0].id",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::flag("x")).tools(Vec::<String>::new())),
                "rules[0].tools",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::flag("x")).tools(["pay", "pay"])),
                "rules[0].tools[1]",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::flag("x")).quorum(0)),
                "rules[0].quorum",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::flag("x")).quorum(5)),
                "rules[0].quorum",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::flag("x")).timeout(Duration::ZERO)),
                "rules[0].timeout",
            ),
            (
                base().rule(
                    RuleSpec::new("a", Condition::flag("x"))
                        .timeout(Duration::from_secs(367 * 86_400)),
                ),
                "rules[0].timeout",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::flag("x")).chain([
                    LevelSpec::new("finance"),
                    LevelSpec::after("nobody", Duration::from_secs(5)),
                ])),
                "rules[0].chain[1].group",
            ),
            (
                base().rule(
                    RuleSpec::new("a", Condition::flag("x"))
                        .chain([LevelSpec::after("finance", Duration::from_secs(5))]),
                ),
                "rules[0].chain[0].after",
            ),
            (
                base().rule(RuleSpec::new("a", Condition::flag("x")).chain([
                    LevelSpec::new("finance"),
                    LevelSpec::after("cfo", Duration::from_secs(10)),
                    LevelSpec::after("finance", Duration::from_secs(10)),
                ])),
                "rules[0].chain[2].after",
            ),
            (
                base().rule(
                    RuleSpec::new("a", Condition::flag("x"))
                        .timeout(Duration::from_secs(60))
                        .chain([
                            LevelSpec::new("finance"),
                            LevelSpec::after("cfo", Duration::from_secs(60)),
                        ]),
                ),
                "rules[0].chain[1].after",
            ),
            (
                base().approvals(ApprovalSettings::new().grant_ttl(Duration::from_millis(999))),
                "approvals.grant_ttl",
            ),
            (
                base().approvals(
                    ApprovalSettings::new().grant_ttl(Duration::from_secs(367 * 86_400)),
                ),
                "approvals.grant_ttl",
            ),
            (
                base().approvals(ApprovalSettings::new().max_pending(0)),
                "approvals.max_pending",
            ),
            (base().group("empty", Vec::<String>::new()), "groups.empty"),
            (base().group("dup", ["x", "x"]), "groups.dup[1]"),
            (
                EscalationPolicy::new()
                    .group("g", ["x"])
                    .rule(RuleSpec::new("a", Condition::flag("x"))),
                "rules[0].chain",
            ),
        ];
        for (policy, field) in cases {
            let e = err(policy);
            assert_eq!(e.field(), Some(field), "{e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn more_than_64_rules_is_a_clear_error_and_64_is_fine() {
        let mut p = base();
        for i in 0..64 {
            p = p.rule(RuleSpec::new(
                format!("r{i}"),
                Condition::flag(format!("f{i}")),
            ));
        }
        let gate = EscalationGate::compile(p.clone(), &tiers()).unwrap();
        let flags = ["f63"];
        let m = gate.evaluate(&GateInput::new("t", Effect::Read, "{}").flags(&flags));
        assert_eq!(m.iter().collect::<Vec<_>>(), [63]);
        let e = err(p.rule(RuleSpec::new("r64", Condition::flag("x"))));
        assert!(
            matches!(
                e,
                EscalationPolicyError::TooManyRules {
                    count: 65,
                    limit: 64
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn rules_scoped_to_unknown_tools_are_refused_against_a_boundary() {
        let boundary = ActionBoundary::builder()
            .tiers(["public", "confidential"])
            .tool("pay", ToolSpec::irreversible().tier("confidential"))
            .role(
                "clerk",
                RoleSpec::new().clearance("confidential").tools(["pay"]),
            )
            .build()
            .unwrap();
        let ok = base()
            .rule(RuleSpec::new("a", Condition::tier_at_least("confidential")).tools(["pay"]));
        let gate = EscalationGate::for_boundary(ok, &boundary).unwrap();
        assert_eq!(gate.tier_index("confidential"), Some(1));
        let bad = base().rule(RuleSpec::new("a", Condition::flag("x")).tools(["pay", "pya"]));
        let e = EscalationGate::for_boundary(bad, &boundary).unwrap_err();
        assert!(
            matches!(&e, EscalationPolicyError::UnknownTool { field, tool } if field == "rules[0].tools[1]" && tool == "pya"),
            "{e}"
        );
    }

    #[test]
    fn amount_over_a_threshold_compares_exactly_and_fails_closed() {
        let gate = gate_with([RuleSpec::new(
            "big",
            Condition::amount_over("payment.amount", 1000),
        )]);
        let over = |args: &str| eval(&gate, "pay", args, plain);
        assert!(!over(r#"{"payment": {"amount": 999.99}}"#));
        assert!(!over(r#"{"payment": {"amount": 1000}}"#));
        assert!(!over(r#"{"payment": {"amount": 1000.0}}"#));
        assert!(!over(r#"{"payment": {"amount": -5000}}"#));
        assert!(over(r#"{"payment": {"amount": 1000.01}}"#));
        assert!(over(r#"{"payment": {"amount": 1e4}}"#));
        assert!(over(r#"{"payment": {"amount": 18446744073709551615}}"#));
        // Too many significant digits to tell from 1000 in an f64: raw text escalates. (A parsed
        // `Value` already holds the rounded 1000.0, exactly what a serde_json tool would see.)
        let raw = r#"{"payment": {"amount": 1000.0000000000000001}}"#;
        assert!(
            !gate
                .evaluate(&GateInput::new("pay", Effect::Write, raw))
                .is_empty()
        );
        // Not a number, or not there: escalate.
        assert!(over(r#"{"payment": {"amount": "5"}}"#));
        assert!(over(r#"{"payment": {"amount": null}}"#));
        assert!(over(r#"{"payment": {"amount": [1]}}"#));
        assert!(over(r#"{"payment": {}}"#));
        assert!(over(r#"{"payment": 5}"#));
        assert!(over(r#"{}"#));
        // Unreadable raw arguments: escalate.
        assert!(over(r#"{"payment": {"amount": 1e400}}"#));
        assert!(over(r#"{"payment": {"amount": 1, "amount": 2000}}"#));
        assert!(over(r#"{"payment": "#));
        // A call without arguments has no amount: escalate.
        assert!(
            !gate
                .evaluate(&GateInput::new("pay", Effect::Write, tollgate::Args::None))
                .is_empty()
        );

        let lenient = gate_with([RuleSpec::new(
            "big",
            AmountCondition::over("amount", 10)
                .if_missing(IfMissing::Ignore)
                .into(),
        )]);
        assert!(!eval(&lenient, "pay", r#"{}"#, plain));
        assert!(eval(&lenient, "pay", r#"{"amount": "3"}"#, plain));

        // Integers beyond 2^53 compare exactly against an integral threshold.
        let exact = gate_with([RuleSpec::new(
            "big",
            Condition::amount_over("n", 1_000_000_000_000_000_000u64),
        )]);
        assert!(!eval(&exact, "t", r#"{"n": 1000000000000000000}"#, plain));
        assert!(eval(&exact, "t", r#"{"n": 1000000000000000001}"#, plain));
        let exact = gate_with([RuleSpec::new(
            "big",
            Condition::amount_over("n", 9_007_199_254_740_990u64),
        )]);
        assert!(!eval(&exact, "t", r#"{"n": 9007199254740990}"#, plain));
        assert!(eval(&exact, "t", r#"{"n": 9007199254740991}"#, plain));
    }

    /// A decimal threshold is compared on `f64` in the hot path: every comparison must still be
    /// the exact decimal one, at the edges where a binary double differs from the decimal.
    #[test]
    fn decimal_threshold_compares_exactly_at_the_edges() {
        let gate = gate_with([RuleSpec::new(
            "cents",
            Condition::amount_over("amount", money("100.10")),
        )]);
        let over = |args: &str| eval(&gate, "pay", args, plain);
        let over_raw = |args: &str| {
            !gate
                .evaluate(&GateInput::new("pay", Effect::Write, args))
                .is_empty()
        };
        // Equal in any spelling: not over.
        assert!(!over(r#"{"amount": 100.1}"#));
        assert!(!over(r#"{"amount": 100.10}"#));
        assert!(!over(r#"{"amount": 100.100000000000}"#));
        assert!(!over(r#"{"amount": 1.001e2}"#));
        assert!(!over(r#"{"amount": 10010e-2}"#));
        // Just above, within 15 significant digits: over.
        assert!(over(r#"{"amount": 100.100000000001}"#));
        assert!(over(r#"{"amount": 100.11}"#));
        // Just below: not over.
        assert!(!over(r#"{"amount": 100.099999999999}"#));
        // Integers around it, and an integral float literal.
        assert!(!over(r#"{"amount": 100}"#));
        assert!(over(r#"{"amount": 101}"#));
        assert!(!over(r#"{"amount": 1e2}"#));
        assert!(over(r#"{"amount": 1.01e2}"#));
        // Big integers and big floats.
        assert!(over(r#"{"amount": 9007199254740993}"#));
        assert!(over(r#"{"amount": 18446744073709551615}"#));
        assert!(over(r#"{"amount": 1e300}"#));
        assert!(!over(r#"{"amount": -18446744073709551615}"#));
        // More than 15 significant digits in the raw text: above the threshold, or too close
        // to tell on an f64, escalates (fail closed).
        assert!(over_raw(r#"{"amount": 100.1000000000001}"#));
        assert!(over_raw(r#"{"amount": 100.10000000000000001}"#));
        assert!(over_raw(r#"{"amount": 100.0999999999999999}"#));
        // ... and clearly below stays below.
        assert!(!over_raw(r#"{"amount": 100.0000000000000001}"#));
        assert!(!over_raw(r#"{"amount": 99.99999999999999999}"#));

        // The threshold itself: 15 significant digits are accepted, 16 refused with the field;
        // trailing zeros do not count.
        let fifteen = gate_with([RuleSpec::new(
            "f",
            Condition::amount_over("a", money("1234567890.12345")),
        )]);
        let esc = |args: &str| eval(&fifteen, "t", args, plain);
        assert!(!esc(r#"{"a": 1234567890.12345}"#));
        assert!(esc(r#"{"a": 1234567890.12346}"#));
        assert!(!esc(r#"{"a": 1234567890}"#));
        assert!(esc(r#"{"a": 1234567891}"#));
        gate_with([RuleSpec::new(
            "z",
            Condition::amount_over("a", money("100.100000000000000000")),
        )]);
        let e = err(base().rule(RuleSpec::new(
            "f",
            Condition::amount_over("a", money("1234567890.123456")),
        )));
        assert_eq!(e.field(), Some("rules[0].when.amount.over"), "{e}");
        assert!(e.to_string().contains("16 significant digits"), "{e}");
        // An integral threshold with no double of its own: integer arguments one above it would
        // compare wrongly, so it is refused.
        let e = err(base().rule(RuleSpec::new(
            "f",
            Condition::amount_over("a", 1_234_567_890_123_450_000u64),
        )));
        assert_eq!(e.field(), Some("rules[0].when.amount.over"), "{e}");
        assert!(e.to_string().contains("no exact binary double"), "{e}");
        // Negative thresholds are refused, per currency too.
        let e = err(base().rule(RuleSpec::new(
            "f",
            Condition::amount_over_by_currency("a", "c", [("EUR", money("-5"))]),
        )));
        assert_eq!(
            e.field(),
            Some("rules[0].when.amount.over_by_currency.EUR"),
            "{e}"
        );
        assert!(e.to_string().contains("must not be negative"), "{e}");
    }

    /// Amount thresholds in documents are exact decimals: a float literal would already be a
    /// rounded binary number, so it is refused where the document is read.
    #[test]
    fn float_threshold_literals_are_refused_in_documents() {
        let doc = |over: &str| {
            format!(
                r#"{{"groups": {{"g": ["a"]}}, "defaults": {{"chain": [{{"group": "g"}}]}},
                "rules": [{{"id": "r", "when": {{"amount": {{"path": "x", "over": {over}}}}}}}]}}"#
            )
        };
        let e = EscalationPolicy::from_json(&doc("100.1")).unwrap_err();
        assert_eq!(e.field(), Some("rules[0].when.amount.over"), "{e}");
        assert!(e.to_string().contains("float literal is not exact"), "{e}");
        let p = EscalationPolicy::from_json(&doc(r#""100.10""#)).unwrap();
        let gate = EscalationGate::compile(p, &tiers()).unwrap();
        assert!(!eval(&gate, "t", r#"{"x": 100.1}"#, plain));
        assert!(eval(&gate, "t", r#"{"x": 100.11}"#, plain));
        let p = EscalationPolicy::from_json(&doc("100")).unwrap();
        assert!(EscalationGate::compile(p, &tiers()).is_ok());
        let e = EscalationPolicy::from_toml(
            r#"
            [[rules]]
            id = "r"
            when = { amount = { path = "x", over = 1e3 } }
        "#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("float literal is not exact"), "{e}");
    }

    /// Durations in documents carry their unit: a bare number could be seconds or milliseconds.
    #[test]
    fn bare_number_durations_are_refused_in_documents() {
        for (doc, field) in [
            (r#"{"defaults": {"timeout": 3600}}"#, "defaults.timeout"),
            (
                r#"{"defaults": {"chain": [{"group": "g", "after": 1800}]}}"#,
                "defaults.chain[0].after",
            ),
            (
                r#"{"rules": [{"id": "r", "when": {"flag": "x"}, "timeout": "900"}]}"#,
                "rules[0].timeout",
            ),
            (r#"{"approvals": {"grant_ttl": 60}}"#, "approvals.grant_ttl"),
            (
                r#"{"defaults": {"timeout_secs": 3600}}"#,
                "defaults.timeout_secs",
            ),
        ] {
            let e = EscalationPolicy::from_json(doc).unwrap_err();
            assert_eq!(e.field(), Some(field), "{doc}: {e}");
        }
        let p = EscalationPolicy::from_toml(
            r#"
            groups.g = ["a"]
            groups.h = ["b"]
            defaults = { timeout = "2h", chain = [{ group = "g" }, { group = "h", after = "1h 30m" }] }
            approvals = { grant_ttl = "10m", max_pending = 50, separation_of_duties = false }
        "#,
        )
        .unwrap();
        assert_eq!(p.defaults.timeout, Some(Duration::from_secs(7200)));
        let chain = p.defaults.chain.as_ref().unwrap();
        assert_eq!(chain[1].after, Duration::from_secs(5400));
        assert_eq!(chain[0].after, Duration::ZERO);
        assert_eq!(
            p.approvals,
            ApprovalSettings::new()
                .grant_ttl(Duration::from_secs(600))
                .max_pending(50)
                .separation_of_duties(false)
        );
        // Written back with units, read back the same.
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""after":"1h 30m""#), "{json}");
        assert!(json.contains(r#""grant_ttl":"10m""#), "{json}");
        assert_eq!(EscalationPolicy::from_json(&json).unwrap(), p);
        let gate = EscalationGate::compile(p, &tiers()).unwrap();
        assert_eq!(gate.approvals().max_pending, 50);
    }

    #[test]
    fn per_currency_thresholds_escalate_missing_and_unlisted_currencies() {
        let gate = gate_with([RuleSpec::new(
            "fx",
            Condition::amount_over_by_currency("amount", "currency", [("EUR", 900), ("USD", 1000)]),
        )]);
        let esc = |args: &str| eval(&gate, "pay", args, plain);
        assert!(!esc(r#"{"amount": 950, "currency": "USD"}"#));
        assert!(esc(r#"{"amount": 950, "currency": "EUR"}"#));
        assert!(!esc(r#"{"amount": 900, "currency": "EUR"}"#));
        // Escaped spelling of the same code is the same code.
        assert!(!esc(r#"{"amount": 800, "currency": "\u0045UR"}"#));
        assert!(esc(r#"{"amount": 1, "currency": "eur"}"#));
        assert!(esc(r#"{"amount": 1, "currency": "GBP"}"#));
        assert!(esc(r#"{"amount": 1}"#));
        assert!(esc(r#"{"amount": 1, "currency": 978}"#));
        assert!(esc(r#"{"amount": 1, "currency": null}"#));
    }

    #[test]
    fn tier_effect_flag_confidence_and_budget_conditions() {
        let gate = gate_with([
            RuleSpec::new("tier", Condition::tier_at_least("confidential")),
            RuleSpec::new("irrev", Condition::irreversible()),
            RuleSpec::new("flag", Condition::flag("ambiguous")),
            RuleSpec::new("conf", Condition::confidence_below(0.7)),
            RuleSpec::new("budget", Condition::budget_used_at_least(0.8)),
        ]);
        let m = |i: GateInput| -> Vec<usize> { gate.evaluate(&i).iter().collect() };
        let read = || GateInput::new("t", Effect::Read, "{}").confidence(0.9);
        // Tier: at or above; an unknown tier (None, or past the list) fails closed.
        assert_eq!(m(read()), [0]);
        assert_eq!(m(read().tier(1)), Vec::<usize>::new());
        assert_eq!(m(read().tier(2)), [0]);
        assert_eq!(m(read().tier(3)), [0]);
        assert_eq!(m(read().tier(17)), [0]);
        let no_tier = GateInput::new("t", Effect::Read, "{}").confidence(0.9);
        let only_tier = gate_with([RuleSpec::new("tier", Condition::tier_at_least("internal"))]);
        assert!(!only_tier.evaluate(&no_tier).is_empty());
        // Effect.
        let w = GateInput::new("t", Effect::Write, "{}")
            .confidence(0.9)
            .tier(0);
        assert_eq!(m(w), Vec::<usize>::new());
        let i = GateInput::new("t", Effect::Irreversible, "{}")
            .confidence(0.9)
            .tier(0);
        assert_eq!(m(i), [1]);
        // Flags.
        let flags = ["anomaly", "ambiguous"];
        assert_eq!(m(read().tier(0).flags(&flags)), [2]);
        let other = ["Ambiguous"];
        assert_eq!(m(read().tier(0).flags(&other)), Vec::<usize>::new());
        // Confidence: below the floor, missing, NaN or out of range escalate.
        assert_eq!(m(read().tier(0).confidence(0.69)), [3]);
        assert_eq!(m(read().tier(0).confidence(0.7)), Vec::<usize>::new());
        assert_eq!(m(read().tier(0).confidence(f64::NAN)), [3]);
        assert_eq!(m(read().tier(0).confidence(1.5)), [3]);
        assert_eq!(m(GateInput::new("t", Effect::Read, "{}").tier(0)), [3]);
        // Budget: at or above the threshold; none given means no deceleration.
        assert_eq!(m(read().tier(0).budget_used(0.79)), Vec::<usize>::new());
        assert_eq!(m(read().tier(0).budget_used(0.8)), [4]);
        assert_eq!(m(read().tier(0).budget_used(1.3)), [4]);
        assert_eq!(m(read().tier(0).budget_used(f64::NAN)), [4]);

        let configured = gate_with([
            RuleSpec::new(
                "conf",
                ConfidenceCondition::below(0.5)
                    .if_missing(IfMissing::Ignore)
                    .into(),
            ),
            RuleSpec::new(
                "budget",
                BudgetCondition::at_least(0.5)
                    .if_missing(IfMissing::Escalate)
                    .into(),
            ),
        ]);
        let got: Vec<usize> = configured
            .evaluate(&GateInput::new("t", Effect::Read, "{}"))
            .iter()
            .collect();
        assert_eq!(got, [1]);
    }

    #[test]
    fn combinations_and_tool_scoping() {
        let gate = gate_with([
            RuleSpec::new(
                "irrev-ambiguous",
                Condition::all([Condition::irreversible(), Condition::flag("ambiguous")]),
            ),
            RuleSpec::new(
                "pay-big-or-flagged",
                Condition::any([
                    Condition::amount_over("amount", 100),
                    Condition::flag("anomaly"),
                ]),
            )
            .tools(["pay", "refund"]),
        ]);
        let amb = ["ambiguous"];
        let anomaly = ["anomaly"];
        let m = |i: GateInput| -> Vec<usize> { gate.evaluate(&i).iter().collect() };
        assert_eq!(
            m(GateInput::new("x", Effect::Irreversible, "{}")),
            Vec::<usize>::new()
        );
        assert_eq!(
            m(GateInput::new("x", Effect::Irreversible, "{}").flags(&amb)),
            [0]
        );
        assert_eq!(
            m(GateInput::new("x", Effect::Write, "{}").flags(&amb)),
            Vec::<usize>::new()
        );
        // The scoped rule never fires for other tools, whatever the arguments.
        assert_eq!(
            m(GateInput::new("x", Effect::Write, r#"{"amount": 1e6}"#)),
            Vec::<usize>::new()
        );
        assert_eq!(
            m(GateInput::new("x", Effect::Write, "{").flags(&anomaly)),
            Vec::<usize>::new()
        );
        assert_eq!(
            m(GateInput::new("pay", Effect::Write, r#"{"amount": 5}"#)),
            Vec::<usize>::new()
        );
        assert_eq!(
            m(GateInput::new(
                "refund",
                Effect::Write,
                r#"{"amount": 500}"#
            )),
            [1]
        );
        assert_eq!(
            m(GateInput::new("pay", Effect::Write, r#"{"amount": 5}"#).flags(&anomaly)),
            [1]
        );
        assert_eq!(
            m(GateInput::new("pay", Effect::Irreversible, r#"{"amount": 500}"#).flags(&amb)),
            [0, 1]
        );
        // Names match exactly.
        assert_eq!(
            m(GateInput::new("Pay", Effect::Write, r#"{"amount": 500}"#)),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn several_matches_carry_every_reason_and_the_strictest_parameters() {
        let gate = gate_with([
            RuleSpec::new("a-slow-approve", Condition::flag("a"))
                .timeout(Duration::from_secs(600))
                .on_timeout(OnTimeout::Approve)
                .chain([LevelSpec::new("cfo")]),
            RuleSpec::new("b-two", Condition::flag("b"))
                .reason("two people must look")
                .quorum(2)
                .timeout(Duration::from_secs(3000)),
            RuleSpec::new("c-deny-short", Condition::flag("c"))
                .timeout(Duration::from_secs(1200))
                .quorum(2)
                .chain([LevelSpec::new("finance")]),
            RuleSpec::new("d-approve-fast", Condition::flag("d"))
                .timeout(Duration::from_secs(60))
                .on_timeout(OnTimeout::Approve),
        ]);
        let all = ["a", "b", "c", "d"];
        let esc = gate
            .check(&GateInput::new("t", Effect::Read, "{}").flags(&all))
            .unwrap();
        let ids: Vec<&str> = esc.reasons.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(
            ids,
            ["a-slow-approve", "b-two", "c-deny-short", "d-approve-fast"]
        );
        assert_eq!(&*esc.reasons[1].text, "two people must look");
        assert_eq!(&*esc.reasons[0].text, "the call is flagged `a`");
        assert_eq!(esc.params.quorum, 2);
        // Chain of the first rule with the highest quorum (b-two: the defaults' chain).
        assert_eq!(esc.params.chain.len(), 2);
        assert_eq!(esc.params.chain[1].group, "cfo");
        assert_eq!(esc.params.chain[1].after, Duration::from_secs(1800));
        assert_eq!(esc.params.on_timeout, OnTimeout::Deny);
        // Earliest deadline among the deny-on-timeout rules.
        assert_eq!(esc.params.timeout, Duration::from_secs(1200));

        // Only approve-on-timeout rules: the latest automatic approval.
        let ad = ["a", "d"];
        let esc = gate
            .check(&GateInput::new("t", Effect::Read, "{}").flags(&ad))
            .unwrap();
        assert_eq!(esc.params.on_timeout, OnTimeout::Approve);
        assert_eq!(esc.params.timeout, Duration::from_secs(600));
        assert_eq!(esc.params.chain[0].group, "cfo");
        // The inherited chain is cut to what a 60 s rule can reach.
        let d = ["d"];
        let esc = gate
            .check(&GateInput::new("t", Effect::Read, "{}").flags(&d))
            .unwrap();
        assert_eq!(esc.params.chain.len(), 1);
        assert!(gate.escalation(Matched::NONE).is_none());
    }

    #[test]
    fn evaluation_allocates_nothing_matched_or_not() {
        let mut p = base();
        for i in 0..4 {
            p = p.rule(
                RuleSpec::new(format!("w{i}"), Condition::amount_over("amount", 1000))
                    .tools([format!("write_{i}")]),
            );
        }
        p = p.rule(
            RuleSpec::new(
                "fx",
                Condition::amount_over_by_currency("amount", "currency", [("EUR", 900)]),
            )
            .tools(["pay"]),
        );
        let gate = EscalationGate::compile(p, &tiers()).unwrap();
        let value = json!({"amount": 1250.5, "currency": "EUR"});
        let raw = r#"{"invoice":"INV-1","amount":1250.5,"currency":"EUR"}"#;
        // Warm up lazily initialised statics.
        let _ = gate.evaluate(&GateInput::new("pay", Effect::Write, tollgate::Args::None));
        let (m, n) = allocations(|| gate.evaluate(&GateInput::new("read", Effect::Read, raw)));
        assert!(m.is_empty());
        assert_eq!(n, 0);
        let (m, n) = allocations(|| gate.evaluate(&GateInput::new("pay", Effect::Write, raw)));
        assert_eq!(m.len(), 1);
        assert_eq!(n, 0);
        let (m, n) = allocations(|| gate.evaluate(&GateInput::new("pay", Effect::Write, &value)));
        assert_eq!(m.len(), 1);
        assert_eq!(n, 0);
    }

    /// Significant digits of a JSON number literal's mantissa (first to last non-zero digit).
    fn literal_digits(text: &str) -> usize {
        let mantissa = text.split(['e', 'E']).next().unwrap();
        let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
        match (
            digits.iter().position(|&d| d != b'0'),
            digits.iter().rposition(|&d| d != b'0'),
        ) {
            (Some(f), Some(l)) => l - f + 1,
            _ => 0,
        }
    }

    /// `±digits e exponent`: the same number in scientific notation.
    fn scientific(d: rust_decimal::Decimal) -> String {
        let sign = if d.is_sign_negative() && !d.is_zero() {
            "-"
        } else {
            ""
        };
        format!("{sign}{}e-{}", d.mantissa().unsigned_abs(), d.scale())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The hot path compares on `f64`; the answer must be the exact decimal one for every
        /// argument literal of at most 15 significant digits and every integer, and fail closed
        /// (escalate) for a longer literal whose value is over the threshold.
        #[test]
        fn amount_comparison_on_f64_agrees_with_exact_decimals(
            m in 0u64..1_000_000_000_000_000,
            scale in 0u32..16,
            zeros in prop_oneof![Just(0u32), 1u32..6],
            near in prop_oneof![
                (-300i64..300, prop_oneof![Just(0u32), 0u32..22]).prop_map(Some),
                Just(None),
            ],
            other in (any::<i64>(), 0u32..22),
            form in 0u8..3,
        ) {
            use rust_decimal::Decimal;
            // A threshold of at most 15 significant digits, sometimes integral and large.
            let t = if zeros > 0 {
                Decimal::from(m) * Decimal::from(10u64.pow(zeros))
            } else {
                Decimal::new(m as i64, scale)
            };
            let policy = base().rule(RuleSpec::new(
                "t",
                Condition::amount_over("a", Money::from(t)),
            ));
            let gate = match EscalationGate::compile(policy, &tiers()) {
                Ok(g) => g,
                Err(e) => {
                    // Only an integral threshold without a double of its own is refused.
                    prop_assert!(e.to_string().contains("no exact binary double"), "{t}: {e}");
                    prop_assert!(t.fract().is_zero() && t > Decimal::from(1u64 << 53), "{t}");
                    return Ok(());
                }
            };
            // An argument near the threshold, or anywhere.
            let a = match near {
                Some((delta, at)) => t + Decimal::new(delta, at),
                None => Decimal::new(other.0, other.1.min(28)),
            };
            let text = match form {
                0 => a.to_string(),
                1 => scientific(a),
                // Trailing zeros: the same value, more digits written.
                _ => format!("{a}{}", if a.scale() > 0 { "000" } else { ".000" }),
            };
            let args = format!(r#"{{"a": {text}}}"#);
            let escalates = !gate
                .evaluate(&GateInput::new("pay", Effect::Write, args.as_str()))
                .is_empty();
            let over = a > t;
            let integer_literal = !text.contains(['.', 'e'])
                && (text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok());
            if integer_literal || literal_digits(&text) <= 15 {
                prop_assert_eq!(escalates, over, "{} over {}?", text, t);
                // A parsed `Value` holds serde_json's double, which (without its
                // `float_roundtrip` feature) is not always the correctly rounded one for long
                // literals: the gate then judges the number the Value (and a tool reading it)
                // holds. Compare with the exact answer when that double is the literal's own.
                let value: Value = serde_json::from_str(&args).unwrap();
                let own = value["a"].as_f64() == text.parse::<f64>().ok();
                if integer_literal || own {
                    let parsed = !gate
                        .evaluate(&GateInput::new("pay", Effect::Write, &value))
                        .is_empty();
                    prop_assert_eq!(parsed, over, "{} (parsed) over {}?", text, t);
                }
            } else if over {
                prop_assert!(escalates, "{} is over {} but did not escalate", text, t);
            }
        }
    }
}
