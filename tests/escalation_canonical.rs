//! One canonical form for arguments (finding 7): approval grants hash exact number literals, raw
//! and parsed arguments hash alike, loop detection cannot be evaded by respelling a call, and
//! canonical hashing of small arguments allocates nothing (so loop detection keeps the guard's
//! allow path allocation-free).

// Inside a module named after the file, so `cargo test escalation` selects these tests.
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

mod escalation_canonical {
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
    use tollgate::call::canonical;
    use tollgate::clock::ManualClock;
    use tollgate::escalation::{
        ApprovalQueue, Approver, ArgsError, ArgsKey, Decision, EscalationGate, EscalationPolicy,
        MemoryApprovalStore, QueueConfig, exact_args,
    };
    use tollgate::{Args, DenyCode, Guard, LoopDetection, Outcome, RunContext, ToolCall, Verdict};

    use super::counting_alloc::allocations;

    fn boundary() -> ActionBoundary {
        ActionBoundary::builder()
            .tool(
                "pay",
                ToolSpec::irreversible()
                    .arg("amount", Arg::number().required().min(0.0))
                    .arg("currency", Arg::string().required()),
            )
            .tool("fetch", ToolSpec::read().allow_unknown_args())
            .role("payments", RoleSpec::new().tools(["pay", "fetch"]))
            .build()
            .unwrap()
    }

    const POLICY: &str = r#"{
        "groups": { "finance": ["alice", "bob"] },
        "defaults": { "timeout": "10m", "chain": [ { "group": "finance" } ] },
        "rules": [ { "id": "large-payment", "tools": ["pay"],
                     "when": { "amount": { "path": "amount", "over": 1000 } } } ]
    }"#;

    fn escalating_guard() -> Guard {
        let b = boundary();
        let gate =
            EscalationGate::for_boundary(EscalationPolicy::from_json(POLICY).unwrap(), &b).unwrap();
        let queue = ApprovalQueue::open(
            Arc::new(MemoryApprovalStore::new()),
            Arc::new(ManualClock::new()),
            QueueConfig::with_groups(gate.groups().clone()),
        )
        .unwrap();
        Guard::builder(b)
            .clock(Arc::new(ManualClock::new()))
            .escalation(gate, queue)
            .build()
            .unwrap()
    }

    fn ctx() -> RunContext {
        RunContext::new("pay-bot", "payments").triggered_by("dave")
    }

    #[test]
    fn an_approval_for_one_big_integer_does_not_authorise_another() {
        // The finding: both literals hashed as the same f64.
        let k = ArgsKey::generate().unwrap();
        let a = k.hash(r#"{"amount":100000000000000000000}"#).unwrap();
        let b = k.hash(r#"{"amount":100000000000000008191}"#).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            a,
            k.hash(r#"{ "amount" : 1e20 }"#).unwrap(),
            "the same number in another spelling"
        );

        // Through the guard: approve 1e20 (exactly an f64, so approvers see it exactly), then try
        // to execute the neighbouring literal with the ticket.
        let guard = escalating_guard();
        let run = guard.start_run(ctx()).unwrap();
        let approved = r#"{"amount": 100000000000000000000, "currency": "EUR"}"#;
        let req = match guard.check(&run, &ToolCall::new("pay", approved)) {
            Verdict::Escalate(r) => r,
            other => panic!("expected an escalation, got {other:?}"),
        };
        assert_eq!(req.args["amount"], json!(1e20));
        let q = guard.approvals().unwrap();
        q.decide(&req.id, &Approver::new("alice"), Decision::Approve, "ok")
            .unwrap();
        let other = r#"{"amount": 100000000000000008191, "currency": "EUR"}"#;
        let v = guard.resume(&run, &ToolCall::new("pay", other), &req.ticket());
        assert_eq!(v.deny_code(), Some(DenyCode::ApprovalInvalid));
        assert!(
            v.denial().unwrap().reason().contains("do not match"),
            "{}",
            v.denial().unwrap().reason()
        );
        drop(v);
        // The grant is still unused; the approved arguments, respelled and parsed, run once.
        let parsed = json!({"currency": "EUR", "amount": 1e20});
        match guard.resume(&run, &ToolCall::new("pay", &parsed), &req.ticket()) {
            Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
            other => panic!("expected allow, got {other:?}"),
        }
    }

    #[test]
    fn raw_numbers_a_parsed_value_cannot_show_exactly_are_not_queued() {
        let guard = escalating_guard();
        let run = guard.start_run(ctx()).unwrap();
        for raw in [
            r#"{"amount": 100000000000000008191, "currency": "EUR"}"#,
            r#"{"amount": 1000.0000000000000000001, "currency": "EUR"}"#,
        ] {
            let v = guard.check(&run, &ToolCall::new("pay", raw));
            assert_eq!(v.deny_code(), Some(DenyCode::EscalationFailed), "{raw}");
            assert!(
                v.denial()
                    .unwrap()
                    .reason()
                    .contains("cannot be shown to approvers exactly"),
                "{}",
                v.denial().unwrap().reason()
            );
        }
        assert!(guard.approvals().unwrap().is_empty());
        let k = ArgsKey::generate().unwrap();
        assert!(matches!(
            exact_args(&k, Args::Json(r#"{"a": [1, 2.5, 12345678901234567890123]}"#)),
            Err(ArgsError::Inexact { offset: 15, ref literal }) if literal == "12345678901234567890123"
        ));
        let (shown, hash) = exact_args(&k, Args::Json(r#"{"a": 10e-1}"#)).unwrap();
        assert_eq!(shown, json!({"a": 1.0}));
        assert_eq!(hash, k.hash(&json!({"a": 1})).unwrap());
    }

    #[test]
    fn loop_detection_is_not_evaded_by_key_order_escapes_number_spelling_or_representation() {
        let guard = Guard::builder(boundary())
            .clock(Arc::new(ManualClock::new()))
            .loop_detection(LoopDetection {
                max_repeats: 3,
                window: Duration::from_secs(60),
            })
            .build()
            .unwrap();
        let run = guard.start_run(RunContext::new("bot", "payments")).unwrap();
        for args in [
            r#"{"id":7,"q":"abc"}"#,
            r#"{"q":"\u0061bc","id":7.0}"#, // other key order, an escape, `7.0`
            r#"{"id":7e0,"q":"a\u0062c"}"#, // an exponent
        ] {
            match guard.check(&run, &ToolCall::new("fetch", args)) {
                Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
                other => panic!("{args}: expected allow, got {other:?}"),
            }
        }
        // The fourth time, in any spelling or as a parsed value, is a loop.
        let parsed = json!({"q": "abc", "id": 7});
        for call in [
            ToolCall::new("fetch", &parsed),
            ToolCall::new("fetch", r#"{ "id" : 70e-1 , "q" : "abc" }"#),
        ] {
            assert_eq!(
                guard.check(&run, &call).deny_code(),
                Some(DenyCode::LoopDetected)
            );
        }
        // A different value is a different call.
        assert!(
            guard
                .check(&run, &ToolCall::new("fetch", r#"{"id":7.5,"q":"abc"}"#))
                .is_allowed()
        );
    }

    #[test]
    fn loop_detection_keeps_the_allow_path_allocation_free() {
        let guard = Guard::builder(boundary())
            .clock(Arc::new(ManualClock::new()))
            .loop_detection(LoopDetection {
                max_repeats: 1_000_000,
                window: Duration::from_secs(60),
            })
            .build()
            .unwrap();
        let run = guard.start_run(RunContext::new("bot", "payments")).unwrap();
        // Unsorted keys with escapes and exponents: the selection path, no allocation.
        let raw = r#"{"z":{"b":[1.0,2e1,"x\u00e9"],"a":null},"m":"q\n","a":-0.5e-3,"k":true}"#;
        let value: Value = serde_json::from_str(raw).unwrap();
        let calls = [
            ToolCall::new("fetch", raw),
            ToolCall::new("fetch", &value),
            ToolCall::without_args("fetch"),
        ];
        for call in &calls {
            // Warm-up: the run's loop memory is preallocated, lazy statics initialise.
            match guard.check(&run, call) {
                Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
                other => panic!("expected allow, got {other:?}"),
            }
        }
        for call in &calls {
            let (allowed, n) = allocations(|| match guard.check(&run, call) {
                Verdict::Allow(p) => {
                    p.complete(Outcome::success()).unwrap();
                    true
                }
                _ => false,
            });
            assert!(allowed);
            assert_eq!(
                n, 0,
                "check + complete with loop detection allocated {n} times"
            );
        }
    }

    #[test]
    fn canonical_hashing_of_small_arguments_allocates_nothing() {
        let raw = r#"{"to":"caf\u00e9","amount":1.50e3,"lines":[{"b":2,"a":1}],"n":10e-1}"#;
        let value: Value = serde_json::from_str(raw).unwrap();
        let k = ArgsKey::generate().unwrap();
        let _ = k.hash(raw).unwrap();
        let (a, n) = allocations(|| k.hash(raw).unwrap());
        assert_eq!(n, 0, "raw: {n} allocations");
        let (b, n) = allocations(|| k.hash(&value).unwrap());
        assert_eq!(n, 0, "value: {n} allocations");
        assert_eq!(a, b);
        assert_eq!(
            canonical::to_string(Args::Json(raw)).unwrap(),
            r#"{"amount":1500,"lines":[{"a":1,"b":2}],"n":1,"to":"café"}"#
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-e\u{e9}\u{1f600}]{0,3}", inner, 0..20)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The value's text with object members in reverse order and every string character
    /// `\u`-escaped.
    fn reversed_escaped(v: &Value) -> String {
        let s = |t: &str| {
            let mut out = String::from("\"");
            for u in t.encode_utf16() {
                out.push_str(&format!("\\u{u:04X}"));
            }
            out.push('"');
            out
        };
        match v {
            Value::String(t) => s(t),
            Value::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(reversed_escaped)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Value::Object(m) => format!(
                "{{{}}}",
                m.iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{}", s(k), reversed_escaped(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => other.to_string(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn raw_and_parsed_arguments_hash_alike(v in arb_value()) {
            let k = ArgsKey::generate().unwrap();
            let h = k.hash(&v).unwrap();
            let text = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(k.hash(&text).unwrap(), h);
            prop_assert_eq!(k.hash(reversed_escaped(&v).as_str()).unwrap(), h);
            prop_assert_eq!(k.hash(Args::Value(&v)).unwrap(), h);
        }

        #[test]
        fn number_spellings_hash_alike_and_distinct_big_integers_do_not(
            digits in "[1-9][0-9]{17,40}",
            other in "[1-9][0-9]{17,40}",
            zeros in 0usize..6,
        ) {
            let k = ArgsKey::generate().unwrap();
            let h = |n: &str| k.hash(&format!(r#"{{"amount":{n}}}"#)).unwrap();
            let respelled = format!("{digits}{}e-{zeros}", "0".repeat(zeros));
            prop_assert_eq!(h(&digits), h(&respelled));
            prop_assert_eq!(h(&digits), h(&format!("{digits}.0E+0")));
            prop_assume!(digits != other);
            prop_assert_ne!(h(&digits), h(&other));
        }
    }
}
