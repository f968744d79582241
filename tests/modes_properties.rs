//! Properties of the deployment modes over random calls: a shadow guard's would-be verdict is
//! exactly what an enforcing guard built from the same document returns, and a recommend guard
//! never lets anything run.
#![cfg(feature = "toml")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use tollgate::escalation::MemoryApprovalStore;
use tollgate::mode::WouldBe;
use tollgate::policy::{Bindings, Policy};
use tollgate::{ExecuteError, Guard, Outcome, RunContext, ToolCall, Verdict};

/// A billing agent's document: a read, an irreversible refund bounded at 500 with an escalation
/// over 100, and a note; interns may not refund.
fn document(modes: &str) -> String {
    format!(
        r#"
[policy]
name = "billing"
owner = "billing team"
purpose = "refund patients' overpayments"
scope = "the clinic's own invoices"
liability_owner = "practice manager"
review_cadence = "90d"
data_handling = "card tokens are never recorded"

[tools.lookup_invoice]
effect = "read"
args.id = {{ type = "integer", required = true, min = 1 }}
[tools.refund]
effect = "irreversible"
args.invoice = {{ type = "integer", required = true, min = 1 }}
args.amount = {{ type = "number", required = true, min = 0, max = 500 }}
args.card_token = {{ type = "string", redact = "secret" }}
[tools.note]
effect = "write"
args.text = {{ type = "string", required = true, max_length = 40 }}

[roles.clerk]
tools = ["lookup_invoice", "refund", "note"]
[roles.intern]
tools = ["lookup_invoice", "note"]

[escalation]
groups.leads = ["maria", "sam"]
defaults = {{ timeout = "1h", chain = [{{ group = "leads" }}] }}

[[escalation.rules]]
id = "refund-over-100"
reason = "Refunds over 100 need a billing lead."
tools = ["refund"]
when.amount = {{ path = "amount", over = 100 }}

{modes}
"#
    )
}

fn guard(modes: &str) -> Guard {
    Policy::from_toml(&document(modes))
        .unwrap()
        .guard(Bindings::new().approvals(Arc::new(MemoryApprovalStore::new())))
        .unwrap()
}

/// Random calls: well-formed calls to every tool with values in and out of range (so allowed,
/// escalated and denied), mutated now and then into an unknown-argument, missing-argument,
/// wrong-type or not-JSON variant, plus an undefined tool.
fn arb_call() -> impl Strategy<Value = (String, String)> {
    let tool = prop_oneof![
        3 => Just("lookup_invoice"),
        5 => Just("refund"),
        3 => Just("note"),
        1 => Just("wire_money"),
    ];
    // 0: as is; 1: an unknown argument; 2: a required argument dropped; 3: a wrong type;
    // 4: not JSON.
    let mutation =
        prop_oneof![6 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3), 1 => Just(4)];
    (
        tool,
        mutation,
        -3i64..20,
        -10.0f64..700.0,
        "[a-z ]{0,50}",
        any::<bool>(),
    )
        .prop_map(|(tool, mutation, id, amount, text, token)| {
            let mut fields: Vec<(String, String)> = match tool {
                "lookup_invoice" => vec![("id".into(), id.to_string())],
                "refund" => {
                    let mut f = vec![
                        ("invoice".into(), id.to_string()),
                        ("amount".into(), format!("{amount:.2}")),
                    ];
                    if token {
                        f.push(("card_token".into(), "\"tok_4242\"".into()));
                    }
                    f
                }
                "note" => vec![("text".into(), format!("{text:?}"))],
                _ => vec![("to".into(), "\"acct\"".into())],
            };
            match mutation {
                1 => fields.push(("unknown_arg".into(), "1".into())),
                2 => {
                    fields.remove(0);
                }
                3 => fields[0].1 = "[1, 2]".into(),
                _ => {}
            }
            let args = if mutation == 4 {
                "not json".to_owned()
            } else {
                let f: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
                format!("{{{}}}", f.join(", "))
            };
            (tool.to_owned(), args)
        })
}

/// What a verdict or would-be verdict says, comparable across modes: the decision, and the deny
/// code and rule, or the escalation rules.
#[derive(Debug, PartialEq, Eq)]
enum Said {
    Allow,
    Escalate(Vec<String>),
    Deny(String, String),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Shadow's would-be verdict equals enforce's verdict for the same call, call after call,
    /// with both guards taken through the same sequence.
    #[test]
    fn shadow_would_be_equals_enforce(
        role in prop_oneof![Just("clerk"), Just("intern")],
        calls in proptest::collection::vec(arb_call(), 1..16),
    ) {
        let enforce = guard("");
        let shadow = guard("[modes]\ndefault = \"shadow\"");
        let re = enforce.start_run(RunContext::new("bot", role).for_task("billing")).unwrap();
        let rs = shadow.start_run(RunContext::new("bot", role).for_task("billing")).unwrap();
        for (tool, args) in &calls {
            let call = ToolCall::new(tool.as_str(), args.as_str());
            let expected = match enforce.check(&re, &call) {
                Verdict::Allow(p) => {
                    p.complete(Outcome::success()).unwrap();
                    Said::Allow
                }
                Verdict::Escalate(req) => {
                    Said::Escalate(req.reasons.iter().map(|r| r.rule.as_str().to_owned()).collect())
                }
                Verdict::Deny(d) => Said::Deny(format!("{:?}", d.code()), d.rule().as_str().to_owned()),
            };
            let got = match shadow.check(&rs, &call) {
                Verdict::Allow(p) => {
                    let said = match p.shadow() {
                        None | Some(WouldBe::Allow) => Said::Allow,
                        Some(WouldBe::Escalate { reasons }) => {
                            Said::Escalate(reasons.iter().map(|r| r.rule.as_str().to_owned()).collect())
                        }
                        Some(WouldBe::Deny(d)) => {
                            Said::Deny(format!("{:?}", d.code()), d.rule().as_str().to_owned())
                        }
                        Some(other) => Said::Deny(format!("unknown {}", other.as_str()), String::new()),
                    };
                    p.complete(Outcome::success()).unwrap();
                    said
                }
                // Shadow still refuses what it cannot admit at all (an undefined tool); the
                // refusal must then be enforce's own.
                Verdict::Deny(d) => Said::Deny(format!("{:?}", d.code()), d.rule().as_str().to_owned()),
                Verdict::Escalate(req) => {
                    prop_assert!(false, "shadow queued an escalation: {:?}", req.reasons);
                    unreachable!()
                }
            };
            prop_assert_eq!(got, expected, "{} {}", tool, args);
        }
    }

    /// Recommend never runs the closure through `execute` and never returns `Allow` from
    /// `check`, whatever the call.
    #[test]
    fn recommend_never_acts(
        role in prop_oneof![Just("clerk"), Just("intern")],
        calls in proptest::collection::vec(arb_call(), 1..16),
    ) {
        let g = guard("[modes]\ndefault = \"recommend\"");
        let run = g.start_run(RunContext::new("bot", role).for_task("billing")).unwrap();
        for (tool, args) in &calls {
            let call = ToolCall::new(tool.as_str(), args.as_str());
            let v = g.check(&run, &call);
            prop_assert!(!v.is_allowed(), "check allowed {} {}", tool, args);
            drop(v);
            let ran = AtomicBool::new(false);
            let r: Result<(), ExecuteError<std::io::Error>> = g.execute(&run, &call, |_| {
                ran.store(true, Ordering::Relaxed);
                Ok(())
            });
            prop_assert!(!ran.load(Ordering::Relaxed), "execute ran {} {}", tool, args);
            prop_assert!(r.is_err());
        }
    }
}
