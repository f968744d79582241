//! Deployment modes through the guard: the `[modes]` section of a policy document decides, per
//! tool, role, task type or agent, whether a decision is enforced, shadowed, turned into a
//! recommendation for a human, or sent to the approval queue, and every decision record says
//! which.
#![cfg(feature = "toml")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::billing::billing;
use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate::audit::{AuditError, AuditEvent, AuditSink, MemorySink};
use tollgate::escalation::{Approver, Decision, MemoryApprovalStore};
use tollgate::mode::{HumanAction, Mode, ModeRule, Modes, ModesSection, WouldBe};
use tollgate::policy::{Bindings, Policy};
use tollgate::{DenyCode, ExecuteError, Guard, GuardError, Outcome, RunContext, ToolCall, Verdict};

struct Fixture {
    guard: Guard,
    sink: Arc<MemorySink>,
    policy: Policy,
}

fn fixture(modes: &str) -> Fixture {
    let policy = Policy::from_toml(&billing(modes)).unwrap();
    let sink = Arc::new(MemorySink::new());
    let guard = policy
        .guard(
            Bindings::new()
                .audit(sink.clone())
                .approvals(Arc::new(MemoryApprovalStore::new())),
        )
        .unwrap();
    Fixture {
        guard,
        sink,
        policy,
    }
}

fn decisions(sink: &MemorySink) -> Vec<Value> {
    sink.events()
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .collect()
}

fn last_decision(sink: &MemorySink) -> Value {
    decisions(sink).pop().expect("a decision record")
}

const SHADOW_ALL: &str = "[modes]\ndefault = \"shadow\"";

#[test]
fn shadow_lets_a_boundary_denied_call_run_and_records_the_would_be_denial() {
    let f = fixture(SHADOW_ALL);
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    // 900 is above the boundary's maximum: enforce denies it.
    let call = ToolCall::new("refund", r#"{"invoice": 7, "amount": 900}"#);
    let permit = f
        .guard
        .check(&run, &call)
        .into_permit()
        .expect("shadow lets the call run");
    let Some(WouldBe::Deny(d)) = permit.shadow().cloned() else {
        panic!(
            "the permit says enforce would have denied: {:?}",
            permit.shadow()
        );
    };
    assert_eq!(d.code(), DenyCode::ArgumentOutOfRange);
    permit.complete(Outcome::success()).unwrap();

    let rec = last_decision(&f.sink);
    assert_eq!(rec["tollgate.decision"], "allow");
    assert_eq!(rec["tollgate.mode"], "shadow");
    assert_eq!(rec["tollgate.shadow.decision"], "deny");
    assert_eq!(rec["tollgate.shadow.deny.code"], "argument_out_of_range");
    assert_eq!(rec["tollgate.shadow.rule"], d.rule().as_str());
    // And the call's outcome is recorded like any permitted call's.
    assert!(f.sink.events().iter().any(|e| e["event"] == "outcome"));
}

#[test]
fn shadow_would_be_verdict_equals_what_enforce_returns_for_the_same_call() {
    let calls = [
        r#"{"invoice": 7, "amount": 50}"#,
        r#"{"invoice": 7, "amount": 900}"#,
        r#"{"invoice": 0, "amount": 5}"#,
        r#"{"invoice": 7}"#,
        r#"not json"#,
    ];
    let enforce = fixture("");
    let shadow = fixture(SHADOW_ALL);
    let re = enforce
        .guard
        .start_run(RunContext::new("bot", "clerk"))
        .unwrap();
    let rs = shadow
        .guard
        .start_run(RunContext::new("bot", "clerk"))
        .unwrap();
    for args in calls {
        let call = ToolCall::new("refund", args);
        let expected = match enforce.guard.check(&re, &call) {
            Verdict::Allow(p) => {
                p.complete(Outcome::success()).unwrap();
                None
            }
            Verdict::Deny(d) => Some(d.code()),
            other => panic!("unexpected {other:?}"),
        };
        let permit = shadow.guard.check(&rs, &call).into_permit().unwrap();
        assert_eq!(
            permit.shadow().and_then(WouldBe::deny_code),
            expected,
            "{args}"
        );
        permit.complete(Outcome::success()).unwrap();
    }
}

#[test]
fn shadow_records_a_would_be_escalation_and_queues_nothing() {
    let f = fixture(SHADOW_ALL);
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let call = ToolCall::new("refund", r#"{"invoice": 7, "amount": 150}"#);
    let permit = f.guard.check(&run, &call).into_permit().unwrap();
    assert!(matches!(permit.shadow(), Some(WouldBe::Escalate { .. })));
    permit.complete(Outcome::success()).unwrap();
    assert!(f.guard.approvals().unwrap().pending().unwrap().is_empty());
    let rec = last_decision(&f.sink);
    assert_eq!(rec["tollgate.shadow.decision"], "escalate");
    assert_eq!(rec["tollgate.shadow.rule"], "refund-over-100");
    assert!(
        !f.sink
            .events()
            .iter()
            .any(|e| e["event"] == "escalation_requested")
    );
}

#[test]
fn shadow_never_bypasses_the_kill_switch() {
    let f = fixture(SHADOW_ALL);
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    f.guard.suspend_run(&run, "oncall").unwrap();
    let v = f
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", r#"{"id": 1}"#));
    assert_eq!(v.deny_code(), Some(DenyCode::Suspended));
    let rec = last_decision(&f.sink);
    assert_eq!(rec["tollgate.decision"], "deny");
    assert_eq!(rec["tollgate.mode"], "shadow");
    assert!(rec.get("tollgate.shadow.decision").is_none());
}

/// Refuses every record once `fail` is set.
#[derive(Default)]
struct Failing {
    fail: AtomicBool,
}

impl AuditSink for Failing {
    fn record(&self, _: &AuditEvent<'_>) -> Result<(), AuditError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(AuditError::Refused {
                sink: "failing",
                reason: "down".into(),
            });
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

#[test]
fn shadow_and_recommend_never_act_past_an_audit_failure() {
    for mode in ["shadow", "recommend"] {
        let policy =
            Policy::from_toml(&billing(&format!("[modes]\ndefault = \"{mode}\""))).unwrap();
        let sink = Arc::new(Failing::default());
        let guard = policy
            .guard(
                Bindings::new()
                    .audit(sink.clone())
                    .approvals(Arc::new(MemoryApprovalStore::new())),
            )
            .unwrap();
        let run = guard.start_run(RunContext::new("bot", "clerk")).unwrap();
        sink.fail.store(true, Ordering::Relaxed);
        let v = guard.check(
            &run,
            &ToolCall::new("refund", r#"{"invoice": 7, "amount": 900}"#),
        );
        assert_eq!(v.deny_code(), Some(DenyCode::AuditFailed), "{mode}");
        assert!(v.recommendation().is_none(), "{mode}");
        sink.fail.store(false, Ordering::Relaxed);
    }
}

#[test]
fn shadow_does_not_admit_a_tool_the_policy_does_not_define() {
    let f = fixture(SHADOW_ALL);
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let v = f.guard.check(&run, &ToolCall::new("wire_money", "{}"));
    assert_eq!(v.deny_code(), Some(DenyCode::UnknownTool));
}

#[test]
fn enforce_records_carry_no_mode_field() {
    let f =
        fixture("[modes]\ndefault = \"enforce\"\nrules = [{ tool = \"note\", mode = \"shadow\" }]");
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let p = f
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", r#"{"id": 1}"#))
        .into_permit()
        .unwrap();
    p.complete(Outcome::success()).unwrap();
    let rec = last_decision(&f.sink);
    assert!(rec.get("tollgate.mode").is_none(), "{rec}");
    assert!(rec.get("tollgate.shadow.decision").is_none(), "{rec}");
}

const RECOMMEND_REFUNDS: &str = "[modes]\nrules = [{ tool = \"refund\", mode = \"recommend\" }]";

#[test]
fn recommend_never_yields_a_permit_and_carries_the_recommendation() {
    let f = fixture(RECOMMEND_REFUNDS);
    let run = f
        .guard
        .start_run(RunContext::new("bot", "clerk").for_task("billing"))
        .unwrap();
    for args in [
        r#"{"invoice": 7, "amount": 40, "card_token": "tok_4242"}"#, // enforce: allow
        r#"{"invoice": 7, "amount": 150}"#,                          // enforce: escalate
        r#"{"invoice": 7, "amount": 900}"#,                          // enforce: deny
    ] {
        let call = ToolCall::new("refund", args).with_call_id("c1");
        let v = f.guard.check(&run, &call);
        assert!(!v.is_allowed());
        let rec = v.recommendation().expect("a recommendation").clone();
        assert_eq!(rec.tool, "refund");
        assert_eq!(rec.run, *run.id());
        assert_eq!(rec.call_id.as_deref(), Some("c1"));
        assert_ne!(rec.args["card_token"], "tok_4242");
        assert!(matches!(
            v.into_permit(),
            Err(tollgate::Refusal::Denied(d)) if d.code() == DenyCode::Recommended
        ));
    }
    let recs = decisions(&f.sink);
    let would: Vec<_> = recs
        .iter()
        .map(|r| r["tollgate.shadow.decision"].as_str().unwrap())
        .collect();
    assert_eq!(would, ["allow", "escalate", "deny"]);
    assert!(recs.iter().all(|r| r["tollgate.mode"] == "recommend"
        && r["tollgate.deny.code"] == "recommended"
        && r["tollgate.rule"] == "modes.rules[0]"
        && r["tollgate.recommendation.id"].is_string()));
    // Nothing was queued for the would-be escalation.
    assert!(f.guard.approvals().unwrap().pending().unwrap().is_empty());
    // The secret never reaches the trail.
    assert!(
        !serde_json::to_string(&f.sink.events())
            .unwrap()
            .contains("tok_4242")
    );
    // Other tools are enforced as usual.
    let p = f
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", r#"{"id": 7}"#))
        .into_permit()
        .unwrap();
    p.complete(Outcome::success()).unwrap();
}

#[test]
fn recommend_through_execute_never_runs_the_closure() {
    let f = fixture(RECOMMEND_REFUNDS);
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let ran = AtomicBool::new(false);
    let call = ToolCall::new("refund", r#"{"invoice": 7, "amount": 40}"#);
    let r: Result<(), ExecuteError<std::io::Error>> = f.guard.execute(&run, &call, |_| {
        ran.store(true, Ordering::Relaxed);
        Ok(())
    });
    assert!(!ran.load(Ordering::Relaxed));
    let err = r.unwrap_err();
    assert_eq!(err.denial().map(|d| d.code()), Some(DenyCode::Recommended));
    assert!(err.denial().unwrap().recommendation().is_some());
    // No outcome was recorded: nothing ran.
    assert!(!f.sink.events().iter().any(|e| e["event"] == "outcome"));
}

#[test]
fn human_action_is_recorded_and_linked_to_its_recommendation_once() {
    let f = fixture(RECOMMEND_REFUNDS);
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let call = ToolCall::new("refund", r#"{"invoice": 7, "amount": 40}"#);
    let rec = f.guard.check(&run, &call).recommendation().unwrap().clone();
    f.guard
        .record_human_action(
            &run,
            &rec.id,
            HumanAction::call(
                "refund",
                json!({"invoice": 7, "amount": 35, "card_token": "tok_9"}),
            )
            .note("kept the fee"),
        )
        .unwrap();
    let acts: Vec<_> = f
        .sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "human_action")
        .collect();
    assert_eq!(acts.len(), 1);
    let act = &acts[0];
    assert_eq!(act["tollgate.recommendation.id"], &*rec.id);
    assert_eq!(act["tollgate.run.id"], run.id().as_str());
    assert_eq!(act["gen_ai.tool.name"], "refund");
    assert_eq!(act["gen_ai.tool.call.arguments"]["amount"], 35);
    assert_ne!(act["gen_ai.tool.call.arguments"]["card_token"], "tok_9");
    assert_eq!(act["tollgate.human.note"], "kept the fee");
    // The decision record carries the same id.
    assert_eq!(
        last_decision(&f.sink)["tollgate.recommendation.id"],
        &*rec.id
    );

    // Once per recommendation; unknown ids and other runs' ids are refused.
    assert!(matches!(
        f.guard
            .record_human_action(&run, &rec.id, HumanAction::nothing()),
        Err(GuardError::RecommendationAnswered(_))
    ));
    assert!(matches!(
        f.guard
            .record_human_action(&run, "rec-made-up-1", HumanAction::nothing()),
        Err(GuardError::UnknownRecommendation(_))
    ));
    let other = f.guard.start_run(RunContext::new("bot2", "clerk")).unwrap();
    let rec2 = f
        .guard
        .check(&other, &call)
        .recommendation()
        .unwrap()
        .clone();
    assert!(matches!(
        f.guard
            .record_human_action(&run, &rec2.id, HumanAction::nothing()),
        Err(GuardError::UnknownRecommendation(_))
    ));
    assert_ne!(rec.id, rec2.id);
}

#[test]
fn a_run_keeps_at_most_its_bound_of_unanswered_recommendations() {
    let f = fixture(
        "[modes]\nmax_pending_recommendations = 2\nrules = [{ tool = \"refund\", mode = \"recommend\" }]",
    );
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let call = ToolCall::new("refund", r#"{"invoice": 7, "amount": 40}"#);
    let ids: Vec<_> = (0..3)
        .map(|_| {
            f.guard
                .check(&run, &call)
                .recommendation()
                .unwrap()
                .id
                .clone()
        })
        .collect();
    // The oldest made room for the third: refused as dropped, not as unknown.
    let err = f
        .guard
        .record_human_action(&run, &ids[0], HumanAction::nothing())
        .unwrap_err();
    assert!(
        matches!(&err, GuardError::RecommendationExpired(id) if *id == *ids[0]),
        "{err}"
    );
    assert!(
        err.to_string().contains("max_pending_recommendations"),
        "{err}"
    );
    for id in &ids[1..] {
        f.guard
            .record_human_action(&run, id, HumanAction::nothing())
            .unwrap();
    }
    // Answered ones stay answered; the dropped one was never recorded as answered.
    assert!(matches!(
        f.guard
            .record_human_action(&run, &ids[2], HumanAction::nothing()),
        Err(GuardError::RecommendationAnswered(_))
    ));
    // Every recommendation still has its decision record; two human actions were recorded.
    let events = f.sink.events();
    let decided = events
        .iter()
        .filter(|e| e["tollgate.recommendation.id"].is_string() && e["event"] == "decision")
        .count();
    assert_eq!(decided, 3);
    let acts = events
        .iter()
        .filter(|e| e["event"] == "human_action")
        .count();
    assert_eq!(acts, 2);
    // A bound of zero is refused where it is written.
    let err = Policy::from_toml(&billing(
        "[modes]\nmax_pending_recommendations = 0\nrules = [{ tool = \"refund\", mode = \"recommend\" }]",
    ))
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("modes.max_pending_recommendations"),
        "{err}"
    );
}

#[test]
fn supervised_escalates_an_otherwise_allowed_call_and_resumes_once_approved() {
    let f = fixture("[modes]\nrules = [{ role = \"intern\", mode = \"supervised\" }]");
    let run = f.guard.start_run(RunContext::new("bot", "intern")).unwrap();
    let call = ToolCall::new("note", r#"{"text": "called the patient"}"#);
    let Verdict::Escalate(req) = f.guard.check(&run, &call) else {
        panic!("supervised mode sends an allowed call to a human");
    };
    assert_eq!(req.reasons[0].text.as_ref(), "supervised mode");
    assert_eq!(req.reasons[0].rule.as_str(), "modes.rules[0]");
    assert_eq!(req.current_group(), Some("leads"));
    let rec = last_decision(&f.sink);
    assert_eq!(rec["tollgate.decision"], "escalate");
    assert_eq!(rec["tollgate.mode"], "supervised");
    // A denied call stays denied (not queued).
    let bad = ToolCall::new("refund", r#"{"invoice": 7, "amount": 1}"#);
    assert_eq!(
        f.guard.check(&run, &bad).deny_code(),
        Some(DenyCode::ToolNotAllowed)
    );
    f.guard
        .approvals()
        .unwrap()
        .decide(&req.id, &Approver::new("maria"), Decision::Approve, "fine")
        .unwrap();
    let permit = f
        .guard
        .resume(&run, &call, &req.ticket())
        .into_permit()
        .expect("approved: runs once");
    permit.complete(Outcome::success()).unwrap();
    // A clerk's run is not supervised.
    let clerk = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    assert!(f.guard.check(&clerk, &call).is_allowed());
}

#[test]
fn autonomous_applies_the_escalation_rules_as_written() {
    let f = fixture("[modes]\ndefault = \"autonomous\"");
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let small = ToolCall::new("refund", r#"{"invoice": 7, "amount": 40}"#);
    let large = ToolCall::new("refund", r#"{"invoice": 7, "amount": 150}"#);
    assert!(f.guard.check(&run, &small).is_allowed());
    assert!(matches!(f.guard.check(&run, &large), Verdict::Escalate(_)));
}

#[test]
fn the_most_specific_rule_wins_and_ties_go_to_document_order() {
    let f = fixture(
        r#"[modes]
default = "enforce"
rules = [
  { tool = "note", mode = "shadow" },
  { role = "clerk", mode = "recommend" },
  { tool = "note", role = "clerk", mode = "supervised" },
  { task_type = "audit", mode = "autonomous" },
]"#,
    );
    let m = f.policy.modes().unwrap();
    let clerk = RunContext::new("a", "clerk");
    let intern = RunContext::new("a", "intern");
    let clerk_audit = RunContext::new("a", "clerk").for_task("audit");
    assert_eq!(m.resolve(&clerk, "note"), Mode::Supervised); // two matchers
    assert_eq!(m.resolve(&intern, "note"), Mode::Shadow);
    assert_eq!(m.resolve(&clerk, "refund"), Mode::Recommend); // tie with task_type: first
    assert_eq!(m.resolve(&clerk_audit, "refund"), Mode::Recommend);
    assert_eq!(
        m.resolve(&intern.clone().for_task("audit"), "refund"),
        Mode::Autonomous
    );
    assert_eq!(m.resolve(&intern, "lookup_invoice"), Mode::Enforce);
}

fn arb_rule() -> impl Strategy<Value = ModeRule> {
    let m = || proptest::option::of(prop_oneof![Just("a".to_owned()), Just("b".to_owned())]);
    let mode = prop_oneof![
        Just(Mode::Enforce),
        Just(Mode::Shadow),
        Just(Mode::Recommend),
        Just(Mode::Supervised),
        Just(Mode::Autonomous),
    ];
    (m(), m(), m(), m(), mode).prop_map(|(tool, role, task, agent, mode)| {
        let mut r = ModeRule::new(mode);
        r.tool = tool;
        r.role = role;
        r.task_type = task;
        r.agent = agent;
        r
    })
}

proptest! {
    /// Against a brute-force reading of the rule: among the matching rules, the one with the
    /// most matchers, the earliest of those; the default if none matches.
    #[test]
    fn resolution_matches_the_most_specific_first_reference(
        rules in proptest::collection::vec(arb_rule(), 0..12),
        tool in prop_oneof![Just("a"), Just("b")],
        role in prop_oneof![Just("a"), Just("b")],
        task in proptest::option::of(prop_oneof![Just("a"), Just("b")]),
        agent in prop_oneof![Just("a"), Just("b")],
    ) {
        let section = ModesSection { default: Mode::Enforce, rules: rules.clone(), ..ModesSection::default() };
        let Ok(modes) = Modes::compile(section) else {
            // Refused only for a rule without matchers or a repeated matcher set.
            let dup = rules.iter().enumerate().any(|(i, r)| {
                r.specificity() == 0
                    || rules[..i].iter().any(|q| (&q.tool, &q.role, &q.task_type, &q.agent)
                        == (&r.tool, &r.role, &r.task_type, &r.agent))
            });
            prop_assert!(dup);
            return Ok(());
        };
        let mut ctx = RunContext::new(agent, role);
        if let Some(t) = task {
            ctx = ctx.for_task(t);
        }
        let matches = |r: &ModeRule| {
            r.tool.as_deref().is_none_or(|x| x == tool)
                && r.role.as_deref().is_none_or(|x| x == role)
                && r.task_type.as_deref().is_none_or(|x| Some(x) == task)
                && r.agent.as_deref().is_none_or(|x| x == agent)
        };
        let mut best: Option<&ModeRule> = None;
        for r in &rules {
            if matches(r) && best.is_none_or(|b| r.specificity() > b.specificity()) {
                best = Some(r);
            }
        }
        prop_assert_eq!(modes.resolve(&ctx, tool), best.map_or(Mode::Enforce, |r| r.mode));
    }
}

#[test]
fn document_errors_are_located() {
    let cases = [
        (
            "[modes]\nrules = [{ tool = \"note\", mode = \"shadow\" }, { tool = \"refnd\", mode = \"shadow\" }]",
            "modes.rules[1].tool",
        ),
        (
            "[modes]\nrules = [{ role = \"admin\", mode = \"shadow\" }]",
            "modes.rules[0].role",
        ),
        ("[modes]\nrules = [{ mode = \"shadow\" }]", "modes.rules[0]"),
        (
            "[modes]\nrules = [{ tool = \"note\", mode = \"shadow\" }, { tool = \"note\", mode = \"enforce\" }]",
            "modes.rules[1]",
        ),
        ("[modes]\ndefault = \"yolo\"", "modes.default"),
        (
            "[modes]\nrules = [{ tool = \"note\", mode = \"shadow\", when = 1 }]",
            "modes.rules[0].when",
        ),
    ];
    for (modes, path) in cases {
        let err = Policy::from_toml(&billing(modes)).unwrap_err();
        assert_eq!(err.path(), Some(path), "{modes}: {err}");
        assert!(err.location().is_some(), "{modes}: {err}");
    }
    // Supervised mode needs approvers to ask.
    let no_defaults = billing("[modes]\nrules = [{ role = \"intern\", mode = \"supervised\" }]")
        .replace(
            "defaults = { timeout = \"1h\", chain = [{ group = \"leads\" }] }\n",
            "",
        )
        // The escalation rule brings its own chain, so only the mode lacks one.
        .replace(
            "tools = [\"refund\"]\n",
            "tools = [\"refund\"]\nchain = [{ group = \"leads\" }]\n",
        );
    let err = Policy::from_toml(&no_defaults).unwrap_err();
    assert_eq!(err.path(), Some("modes.rules[0].mode"), "{err}");
    assert!(err.to_string().contains("escalation.defaults"), "{err}");
    assert!(err.location().is_some());
}

#[test]
fn builder_refuses_modes_it_cannot_honour() {
    use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
    let boundary = || {
        ActionBoundary::builder()
            .tool("note", ToolSpec::write())
            .role("clerk", RoleSpec::new().tools(["note"]))
            .build()
            .unwrap()
    };
    let err = Guard::builder(boundary())
        .modes(Modes::all(Mode::Supervised))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, GuardError::Config { ref field, .. } if field == "modes.default"),
        "{err}"
    );
    let unknown = Modes::compile(ModesSection {
        default: Mode::Enforce,
        rules: vec![ModeRule::new(Mode::Shadow).tool("nope")],
        ..ModesSection::default()
    })
    .unwrap();
    let err = Guard::builder(boundary())
        .modes(unknown)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, GuardError::Config { ref field, .. } if field == "modes.rules[0].tool"),
        "{err}"
    );
}

#[test]
fn the_mode_is_part_of_the_policy_version() {
    let none = Policy::from_toml(&billing("")).unwrap();
    let enforce = Policy::from_toml(&billing("[modes]\ndefault = \"enforce\"")).unwrap();
    let shadow = Policy::from_toml(&billing(SHADOW_ALL)).unwrap();
    let rule = Policy::from_toml(&billing(RECOMMEND_REFUNDS)).unwrap();
    let versions = [
        none.version(),
        enforce.version(),
        shadow.version(),
        rule.version(),
    ];
    for (i, a) in versions.iter().enumerate() {
        for b in &versions[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // And a document without `[modes]` keeps the version it had before modes existed: the
    // section is left out of the canonical form.
    assert!(!String::from_utf8_lossy(none.canonical_json()).contains("modes"));
}

#[test]
fn reload_switches_modes() {
    let f = fixture("");
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let call = ToolCall::new("refund", r#"{"invoice": 7, "amount": 900}"#);
    assert_eq!(
        f.guard.check(&run, &call).deny_code(),
        Some(DenyCode::ArgumentOutOfRange)
    );
    let shadow = Policy::from_toml(&billing(SHADOW_ALL)).unwrap();
    f.guard.reload(&shadow, "test").unwrap();
    let p = f.guard.check(&run, &call).into_permit().unwrap();
    assert!(p.shadow().is_some());
    p.complete(Outcome::success()).unwrap();
    let recommend = Policy::from_toml(&billing(RECOMMEND_REFUNDS)).unwrap();
    f.guard.reload(&recommend, "test").unwrap();
    assert_eq!(
        f.guard.check(&run, &call).deny_code(),
        Some(DenyCode::Recommended)
    );
    f.guard.reload(&f.policy, "test").unwrap();
    assert_eq!(
        f.guard.check(&run, &call).deny_code(),
        Some(DenyCode::ArgumentOutOfRange)
    );
}

#[test]
fn shadow_does_not_admit_a_run_whose_role_the_policy_no_longer_defines() {
    let f = fixture(SHADOW_ALL);
    let run = f.guard.start_run(RunContext::new("bot", "intern")).unwrap();
    let without_intern = billing(SHADOW_ALL).replace(
        "[roles.intern]\ntools = [\"lookup_invoice\", \"note\"]\n",
        "",
    );
    assert_ne!(without_intern, billing(SHADOW_ALL));
    f.guard
        .reload(&Policy::from_toml(&without_intern).unwrap(), "test")
        .unwrap();
    let v = f
        .guard
        .check(&run, &ToolCall::new("note", r#"{"text": "x"}"#));
    assert_eq!(v.deny_code(), Some(DenyCode::UnknownRole));
}

#[test]
fn a_shadowed_call_with_malformed_arguments_is_recorded_as_unparsed_not_verbatim() {
    // The boundary refuses the duplicate key; shadow lets the call run (a tool without marked
    // fields, so the text would otherwise be embedded as it is). The decision record must
    // not embed the text as JSON (the guard only skips the writer's own validation for text its
    // boundary admitted): it is quoted as `unparsed`.
    let f = fixture(SHADOW_ALL);
    let run = f.guard.start_run(RunContext::new("bot", "clerk")).unwrap();
    let text = r#"{"text": "a", "text": "b"}"#;
    let permit = f
        .guard
        .check(&run, &ToolCall::new("note", text))
        .into_permit()
        .expect("shadow lets it run");
    assert!(
        matches!(permit.shadow(), Some(WouldBe::Deny(d)) if d.code() == DenyCode::MalformedArgs),
        "{:?}",
        permit.shadow()
    );
    permit.complete(Outcome::success()).unwrap();
    let rec = last_decision(&f.sink);
    assert_eq!(rec["gen_ai.tool.call.arguments"]["unparsed"], text, "{rec}");
    // An admitted call's text is embedded as JSON (minified).
    let ok = r#"{ "text":  "called" }"#;
    let permit = f
        .guard
        .check(&run, &ToolCall::new("note", ok))
        .into_permit()
        .unwrap();
    permit.complete(Outcome::success()).unwrap();
    let rec = last_decision(&f.sink);
    assert_eq!(rec["gen_ai.tool.call.arguments"], json!({"text": "called"}));
}
