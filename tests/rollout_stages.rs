//! Staged rollout (issue 14, part 3): the `[rollout]` section, promotion proposed on criteria
//! met (never applied silently), demotion at once on a trigger, breaker windows, and the whole
//! thing from a real guard's hash-chained audit log and through `tollgate rollout status`.
#![cfg(feature = "toml")]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tollgate::agreement::Agreement;
use tollgate::audit::file::{FileSink, FileSinkConfig};
use tollgate::audit::query::Query;
use tollgate::escalation::MemoryApprovalStore;
use tollgate::mode::{HumanAction, Mode};
use tollgate::policy::{Bindings, Policy};
use tollgate::rollout::{
    Evidence, EvidenceBuilder, ProposalKind, Trigger, apply, evaluate, status,
};
use tollgate::{DenyCode, RunContext, ToolCall};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("stages", name)
}

/// A clinic's billing desk whose `refunds` task type is rolled out in three stages. `mode` is
/// the current stage, `top` goes at the top of `[rollout]`, `min_cases` is the first stage's.
fn billing(mode: &str, top: &str, min_cases: u64) -> String {
    format!(
        r#"
[policy]
name = "clinic-billing"
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

[roles.clerk]
tools = ["lookup_invoice", "refund"]

[escalation]
groups.leads = ["maria", "sam"]
defaults = {{ timeout = "1h", chain = [{{ group = "leads" }}] }}

[modes]
default = "enforce"
rules = [{{ task_type = "refunds", mode = "{mode}" }}]

[rollout]
{top}
safety_codes = ["argument_out_of_range", "path_escape"]
[rollout.task_types.refunds]
stages = [
  {{ mode = "recommend", promote = {{ min_cases = {min_cases}, min_agreement_lower_bound = 0.4, max_safety_denials = 0, no_breaker_trip_within = "7d", max_budget_overruns = 0 }} }},
  {{ mode = "supervised", promote = {{ min_cases = 50, min_agreement_lower_bound = 0.9 }} }},
  {{ mode = "autonomous" }},
]
demote = {{ agreement_below = 0.5, agreement_min_cases = 30 }}
"#
    )
}

/// The billing document with `stages` (the TOML array's items) as the refunds' stages.
fn billing_with_stages(mode: &str, stages: &str) -> String {
    let text = billing(mode, "", 3);
    let start = text.find("stages = [\n").unwrap() + "stages = [\n".len();
    let end = text[start..].find("]\ndemote").unwrap() + start;
    format!("{}{stages}\n{}", &text[..start], &text[end..])
}

fn guard_on(policy: &Policy, dir: &Path) -> (tollgate::Guard, Arc<FileSink>) {
    let (sink, _) = FileSink::open(dir, FileSinkConfig::default()).unwrap();
    let sink = Arc::new(sink);
    let guard = policy
        .guard(
            Bindings::new()
                .audit(sink.clone())
                .approvals(Arc::new(MemoryApprovalStore::new())),
        )
        .unwrap();
    (guard, sink)
}

fn close(guard: tollgate::Guard, sink: Arc<FileSink>) {
    drop(guard);
    Arc::into_inner(sink)
        .expect("the guard released the sink")
        .close()
        .unwrap();
}

/// Three refunds recommended in recommend mode, each done exactly so by the clerk.
fn recommend_and_agree(guard: &tollgate::Guard, n: u64) {
    let run = guard
        .start_run(RunContext::new("billing-agent", "clerk").for_task("refunds"))
        .unwrap();
    for i in 1..=n {
        let args = json!({"invoice": i, "amount": 20});
        let text = args.to_string();
        let v = guard.check(&run, &ToolCall::new("refund", text.as_str()));
        assert!(!v.is_allowed(), "recommend mode never allows");
        let id = v.recommendation().expect("a recommendation").id.to_string();
        guard
            .record_human_action(&run, &id, HumanAction::call("refund", args))
            .unwrap();
    }
    run.finish().unwrap();
}

fn evidence(dir: &Path, policy: &Policy) -> Evidence {
    Evidence::from_log(
        dir,
        policy.rollout().unwrap(),
        policy.agreement().unwrap_or(&Agreement::exact()),
        Query::new(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// From a real guard's log

#[test]
fn criteria_met_propose_a_promotion_that_is_not_applied() {
    let dir = temp_dir("promote");
    let policy = Policy::from_toml(&billing("recommend", "", 3)).unwrap();
    let (guard, sink) = guard_on(&policy, dir.path());
    recommend_and_agree(&guard, 3);
    close(guard, sink);

    let ev = evidence(dir.path(), &policy);
    let e = &ev.task_types["refunds"];
    assert_eq!(
        (e.mode, e.cases, e.agreements),
        (Some(Mode::Recommend), 3, 3)
    );
    assert_eq!(e.decisions, 3);
    // 3/3: Wilson lower bound 0.4385.
    assert!((e.agreement_lower.unwrap() - 0.4385).abs() < 1e-3, "{e:?}");

    let proposals = evaluate(policy.rollout().unwrap(), &ev, SystemTime::now());
    assert_eq!(proposals.len(), 1, "{proposals:?}");
    let p = &proposals[0];
    assert_eq!(p.kind, ProposalKind::Promote);
    assert_eq!((p.from, p.to), (Mode::Recommend, Mode::Supervised));
    assert!(!p.applies, "promotion is proposed, not applied");
    let met: Vec<&str> = p.criteria_met.iter().map(|c| c.name).collect();
    assert_eq!(
        met,
        [
            "min_cases",
            "min_agreement_lower_bound",
            "max_safety_denials",
            "no_breaker_trip_within",
            "max_budget_overruns"
        ]
    );
    assert_eq!(p.evidence.cases, 3);
    assert!(
        apply(policy.document(), &proposals).is_none(),
        "nothing applies without auto_promote"
    );

    // With auto_promote the same evidence applies: a new document in the next stage.
    let auto = Policy::from_toml(&billing("recommend", "auto_promote = true", 3)).unwrap();
    let proposals = evaluate(auto.rollout().unwrap(), &ev, SystemTime::now());
    assert!(proposals[0].applies);
    let promoted = Policy::from_document(apply(auto.document(), &proposals).unwrap()).unwrap();
    assert_eq!(
        promoted.rollout().unwrap().state("refunds").unwrap().mode(),
        Mode::Supervised
    );
    assert_ne!(promoted.version(), auto.version());
}

#[test]
fn one_unmet_criterion_blocks_promotion_and_is_named() {
    let dir = temp_dir("unmet");
    let policy = Policy::from_toml(&billing("recommend", "", 4)).unwrap();
    let (guard, sink) = guard_on(&policy, dir.path());
    recommend_and_agree(&guard, 3);
    close(guard, sink);

    let rollout = policy.rollout().unwrap();
    let ev = evidence(dir.path(), &policy);
    assert!(evaluate(rollout, &ev, SystemTime::now()).is_empty());
    let st = &status(rollout, &ev, SystemTime::now())[0];
    let unmet: Vec<_> = st.criteria.iter().filter(|c| !c.met).collect();
    assert_eq!(unmet.len(), 1, "{:?}", st.criteria);
    assert_eq!(unmet[0].name, "min_cases");
    assert_eq!(
        (unmet[0].required.as_str(), unmet[0].actual.as_str()),
        (">= 4", "3")
    );
    assert!(st.proposal.is_none());
}

#[test]
fn a_safety_denial_after_promotion_demotes_at_once_and_earlier_ones_do_not_count() {
    let dir = temp_dir("demote");
    let recommend = Policy::from_toml(&billing("recommend", "", 3)).unwrap();
    let (guard, sink) = guard_on(&recommend, dir.path());
    // In recommend mode: a would-be safety denial (900 is above the maximum), then agreement.
    let run = guard
        .start_run(RunContext::new("billing-agent", "clerk").for_task("refunds"))
        .unwrap();
    let v = guard.check(
        &run,
        &ToolCall::new("refund", r#"{"invoice": 1, "amount": 900}"#),
    );
    assert_eq!(v.deny_code(), Some(DenyCode::Recommended));
    drop(v);
    run.finish().unwrap();
    recommend_and_agree(&guard, 3);
    // The recommend stage saw a safety denial: no promotion, and no demotion below the first.
    let ev = evidence_of(&guard, &sink, dir.path(), &recommend);
    assert_eq!(ev.task_types["refunds"].safety_denials, 1);
    let st = &status(recommend.rollout().unwrap(), &ev, SystemTime::now())[0];
    assert!(st.proposal.is_none(), "{st:?}");
    assert!(
        st.criteria
            .iter()
            .any(|c| c.name == "max_safety_denials" && !c.met && c.actual == "1")
    );

    // Promoted by the operator: the supervised stage starts clean.
    let supervised = Policy::from_toml(&billing("supervised", "", 3)).unwrap();
    guard.reload(&supervised, "ops").unwrap();
    let run = guard
        .start_run(RunContext::new("billing-agent", "clerk").for_task("refunds"))
        .unwrap();
    let v = guard.check(&run, &ToolCall::new("lookup_invoice", r#"{"id": 3}"#));
    assert!(matches!(v, tollgate::Verdict::Escalate(_)), "{v:?}");
    drop(v);
    let ev = evidence_of(&guard, &sink, dir.path(), &supervised);
    let e = &ev.task_types["refunds"];
    assert_eq!((e.mode, e.safety_denials), (Some(Mode::Supervised), 0));
    assert!(evaluate(supervised.rollout().unwrap(), &ev, SystemTime::now()).is_empty());

    // The first safety denial in the stage demotes to the first stage, at once: the guard
    // decides the very next call in recommend mode (the live demotion, tests/rollout_live.rs).
    let v = guard.check(
        &run,
        &ToolCall::new("refund", r#"{"invoice": 2, "amount": 700}"#),
    );
    assert_eq!(v.deny_code(), Some(DenyCode::ArgumentOutOfRange));
    drop(v);
    let v = guard.check(
        &run,
        &ToolCall::new("refund", r#"{"invoice": 3, "amount": 800}"#),
    );
    assert_eq!(v.deny_code(), Some(DenyCode::Recommended));
    drop(v);
    run.finish().unwrap();
    let ev = evidence_of(&guard, &sink, dir.path(), &supervised);
    let e = &ev.task_types["refunds"];
    assert_eq!(
        e.mode,
        Some(Mode::Recommend),
        "the stretch since the demotion"
    );
    let proposals = evaluate(supervised.rollout().unwrap(), &ev, SystemTime::now());
    assert_eq!(proposals.len(), 1);
    let p = &proposals[0];
    assert_eq!(p.kind, ProposalKind::Demote);
    assert_eq!((p.from, p.to), (Mode::Supervised, Mode::Recommend));
    assert!(p.applies, "demotion applies at once");
    let [Trigger::Event(first)] = &p.triggers[..] else {
        panic!("one trigger: {:?}", p.triggers)
    };
    assert_eq!(first.kind, "live_demotion");
    assert!(
        first
            .detail
            .starts_with("supervised -> recommend: safety_denial argument_out_of_range"),
        "{}",
        first.detail
    );
    // Recorded right after the first triggering denial, before the next decision.
    let seqs = denial_seqs(dir.path());
    assert_eq!(first.seq, seqs[seqs.len() - 1] + 1, "{seqs:?}");

    let demoted = Policy::from_document(apply(supervised.document(), &proposals).unwrap()).unwrap();
    assert_eq!(
        demoted.rollout().unwrap().state("refunds").unwrap().mode(),
        Mode::Recommend
    );
    // The demoted document is what the guard reloads.
    guard.reload(&demoted, "rollout").unwrap();
    let run = guard
        .start_run(RunContext::new("billing-agent", "clerk").for_task("refunds"))
        .unwrap();
    let v = guard.check(&run, &ToolCall::new("lookup_invoice", r#"{"id": 3}"#));
    assert!(
        v.recommendation().is_some(),
        "back in recommend mode: {v:?}"
    );
    drop(v);
    run.finish().unwrap();
    close(guard, sink);
}

#[test]
fn a_call_its_own_mode_rule_puts_in_another_mode_keeps_the_stages_safety_denials() {
    // `refunds` in its enforce stage (promotion: no safety denial); `lookup_invoice` held in
    // recommend by a rule of its own. Live demotion off, to read the evidence alone.
    let stages = "  { mode = \"recommend\", promote = { min_cases = 3 } },\n  { mode = \"enforce\", promote = { max_safety_denials = 0 } },\n  { mode = \"autonomous\" },";
    let text = billing_with_stages("enforce", stages)
        .replace(
            r#"rules = [{ task_type = "refunds", mode = "enforce" }]"#,
            r#"rules = [{ task_type = "refunds", mode = "enforce" }, { task_type = "refunds", tool = "lookup_invoice", mode = "recommend" }]"#,
        )
        .replace(
            "demote = { agreement_below = 0.5, agreement_min_cases = 30 }",
            "demote = { on_safety_denial = false }",
        );
    let policy = Policy::from_toml(&text).unwrap();
    let dir = temp_dir("own-rule");
    let (guard, sink) = guard_on(&policy, dir.path());
    let run = guard
        .start_run(RunContext::new("billing-agent", "clerk").for_task("refunds"))
        .unwrap();
    let v = guard.check(
        &run,
        &ToolCall::new("refund", r#"{"invoice": 1, "amount": 900}"#),
    );
    assert_eq!(v.deny_code(), Some(DenyCode::ArgumentOutOfRange));
    drop(v);
    let v = guard.check(&run, &ToolCall::new("lookup_invoice", r#"{"id": 3}"#));
    assert_eq!(v.deny_code(), Some(DenyCode::Recommended), "its own rule");
    drop(v);
    let v = guard.check(
        &run,
        &ToolCall::new("refund", r#"{"invoice": 1, "amount": 20}"#),
    );
    assert!(v.is_allowed(), "{v:?}");
    drop(v);
    run.finish().unwrap();
    let ev = evidence_of(&guard, &sink, dir.path(), &policy);
    let e = &ev.task_types["refunds"];
    assert_eq!((e.mode, e.decisions), (Some(Mode::Enforce), 3), "{e:?}");
    assert_eq!(e.safety_denials, 1, "{e:?}");
    let st = &status(policy.rollout().unwrap(), &ev, SystemTime::now())[0];
    assert!(
        st.proposal.is_none(),
        "no promotion past a safety denial: {st:?}"
    );
    assert!(
        st.criteria
            .iter()
            .any(|c| c.name == "max_safety_denials" && !c.met && c.actual == "1")
    );
    close(guard, sink);
}

#[test]
fn a_decision_in_another_mode_within_a_stage_does_not_wipe_its_evidence() {
    // The reviewer's sequence: an enforce decision with a safety denial, a shadow decision
    // (a tool's own rule), an enforce decision. Records with and without the stage field.
    let stages = "  { mode = \"recommend\", promote = { min_cases = 3 } },\n  { mode = \"enforce\", promote = { max_safety_denials = 0 } },\n  { mode = \"autonomous\" },";
    let policy = Policy::from_toml(&billing_with_stages("enforce", stages)).unwrap();
    let started =
        json!({"event": "run_started", "tollgate.run.id": "r", "tollgate.task_type": "refunds"});
    let decision = |seq: u64, mode: &str, stage: Option<&str>, code: Option<&str>| {
        let mut d = json!({"event": "decision", "seq": seq, "time_unix_nano": DAY,
            "tollgate.run.id": "r", "tollgate.mode": mode});
        if let Some(stage) = stage {
            d["tollgate.rollout.stage"] = json!(stage);
        }
        if let Some(code) = code {
            d["tollgate.deny.code"] = json!(code);
        }
        d
    };
    let trails = [
        // Written before the stage was recorded: shadow is no stage, so no stage change.
        vec![
            started.clone(),
            decision(2, "enforce", None, Some("path_escape")),
            decision(3, "shadow", None, None),
            decision(4, "enforce", None, None),
        ],
        // With the stage recorded, even a mode that is a stage (recommend) is no stage change.
        vec![
            started.clone(),
            decision(2, "enforce", Some("enforce"), Some("path_escape")),
            decision(3, "recommend", Some("enforce"), None),
            decision(4, "shadow", Some("enforce"), None),
            decision(5, "enforce", Some("enforce"), None),
        ],
    ];
    for trail in trails {
        let ev = events(&policy, &trail);
        let e = &ev.task_types["refunds"];
        assert_eq!(e.mode, Some(Mode::Enforce), "{trail:?}");
        assert_eq!(e.safety_denials, 1, "{trail:?}");
        assert_eq!(e.first_triggers[0].kind, "safety_denial");
        let st = &status(policy.rollout().unwrap(), &ev, SystemTime::now())[0];
        assert!(!st.triggers.is_empty(), "{st:?}");
        assert_eq!(
            st.proposal.as_ref().map(|p| p.kind),
            Some(ProposalKind::Demote),
            "{st:?}"
        );
    }
    // A real stage change (the recorded stage changes) still starts a clean slate.
    let ev = events(
        &policy,
        &[
            started,
            decision(2, "enforce", Some("enforce"), Some("path_escape")),
            decision(3, "autonomous", Some("autonomous"), None),
        ],
    );
    let e = &ev.task_types["refunds"];
    assert_eq!((e.mode, e.safety_denials), (Some(Mode::Autonomous), 0));
}

fn evidence_of(
    _guard: &tollgate::Guard,
    sink: &Arc<FileSink>,
    dir: &Path,
    policy: &Policy,
) -> Evidence {
    use tollgate::audit::AuditSink;
    sink.flush().unwrap();
    evidence(dir, policy)
}

fn denial_seqs(dir: &Path) -> Vec<u64> {
    Query::new()
        .kind("decision")
        .decision("deny")
        .open(dir)
        .unwrap()
        .map(|r| r.unwrap().event)
        .filter(|e| e["tollgate.deny.code"] == "argument_out_of_range")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Breaker windows and triggers, from events

const DAY: u64 = 86_400_000_000_000;

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn events(policy: &Policy, list: &[Value]) -> Evidence {
    let agreement = Agreement::exact();
    let mut b = EvidenceBuilder::new(policy.rollout().unwrap(), &agreement);
    for e in list {
        b.push(e);
    }
    b.finish()
}

/// `n` agreed recommendations at day 1, and a breaker trip at `trip` (ns).
fn agreed_then_trip(n: u64, trip: u64, mode: &str) -> Vec<Value> {
    let mut v = vec![
        json!({"event": "run_started", "tollgate.run.id": "r", "tollgate.task_type": "refunds"}),
    ];
    for i in 0..n {
        let args = json!({"invoice": i + 1, "amount": 5});
        v.push(json!({"event": "decision", "seq": 10 + 2 * i, "time_unix_nano": DAY, "tollgate.run.id": "r",
            "tollgate.mode": mode, "gen_ai.tool.name": "refund", "gen_ai.tool.call.arguments": args,
            "tollgate.recommendation.id": format!("rec-{i}")}));
        v.push(json!({"event": "human_action", "seq": 11 + 2 * i, "time_unix_nano": DAY, "tollgate.run.id": "r",
            "tollgate.recommendation.id": format!("rec-{i}"), "gen_ai.tool.name": "refund",
            "gen_ai.tool.call.arguments": args}));
    }
    v.push(json!({"event": "breaker_transition", "seq": 1000, "time_unix_nano": trip, "tollgate.run.id": "r",
        "gen_ai.tool.name": "refund", "tollgate.breaker.from": "closed", "tollgate.breaker.to": "open"}));
    v
}

#[test]
fn a_breaker_trip_within_the_window_blocks_promotion() {
    let policy = Policy::from_toml(&billing("recommend", "", 3)).unwrap();
    let rollout = policy.rollout().unwrap();
    let ev = events(&policy, &agreed_then_trip(3, 2 * DAY, "recommend"));
    assert_eq!(ev.task_types["refunds"].breaker_trips, 1);

    // Six days after the trip: inside the 7-day window.
    let st = &status(rollout, &ev, at(8 * DAY))[0];
    let unmet: Vec<_> = st
        .criteria
        .iter()
        .filter(|c| !c.met)
        .map(|c| c.name)
        .collect();
    assert_eq!(unmet, ["no_breaker_trip_within"]);
    assert!(st.proposal.is_none());
    // Exactly seven days after: still inside (the window includes its edge).
    assert!(evaluate(rollout, &ev, at(9 * DAY)).is_empty());
    // Past it: promotion proposed (a first stage cannot be demoted further).
    let p = evaluate(rollout, &ev, at(9 * DAY + 1));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].kind, ProposalKind::Promote);
}

#[test]
fn a_breaker_trip_or_a_human_denial_demotes_a_later_stage_on_the_first_event() {
    let policy = Policy::from_toml(&billing("supervised", "", 3)).unwrap();
    let rollout = policy.rollout().unwrap();
    let ev = events(&policy, &agreed_then_trip(2, 2 * DAY, "supervised"));
    let p = evaluate(rollout, &ev, at(100 * DAY));
    assert_eq!(
        p.len(),
        1,
        "a trip long ago still demotes: it happened in this stage"
    );
    assert_eq!(
        (p[0].kind, p[0].to),
        (ProposalKind::Demote, Mode::Recommend)
    );
    let Trigger::Event(t) = &p[0].triggers[0] else {
        panic!()
    };
    assert_eq!((t.kind.as_str(), t.seq), ("breaker_trip", 1000));

    // A human's denial of an escalation.
    let mut list = agreed_then_trip(1, 2 * DAY, "supervised");
    list.pop();
    list.push(json!({"event": "escalation_decided", "seq": 50, "time_unix_nano": DAY, "tollgate.run.id": "r",
        "tollgate.approval.decision": "deny", "tollgate.approval.approver": "maria"}));
    list.push(json!({"event": "escalation_decided", "seq": 51, "time_unix_nano": DAY, "tollgate.run.id": "r",
        "tollgate.approval.decision": "deny", "tollgate.approval.approver": "sam"}));
    let ev = events(&policy, &list);
    assert_eq!(ev.task_types["refunds"].human_denials, 2);
    let p = evaluate(rollout, &ev, at(3 * DAY));
    let Trigger::Event(t) = &p[0].triggers[0] else {
        panic!()
    };
    assert_eq!(
        (t.kind.as_str(), t.detail.as_str(), t.seq),
        ("human_denial", "maria", 50)
    );

    // Events of another task type, or before the stage began, do not count.
    let mut list = agreed_then_trip(1, 2 * DAY, "recommend");
    list.push(json!({"event": "decision", "seq": 2000, "time_unix_nano": 3 * DAY, "tollgate.run.id": "r",
        "tollgate.mode": "supervised", "gen_ai.tool.name": "lookup_invoice", "tollgate.decision": "escalate"}));
    list.push(
        json!({"event": "run_started", "tollgate.run.id": "o", "tollgate.task_type": "other"}),
    );
    list.push(
        json!({"event": "decision", "seq": 2001, "time_unix_nano": 3 * DAY, "tollgate.run.id": "o",
        "tollgate.mode": "supervised", "gen_ai.tool.name": "refund", "tollgate.decision": "deny",
        "tollgate.deny.code": "path_escape"}),
    );
    let ev = events(&policy, &list);
    let e = &ev.task_types["refunds"];
    assert_eq!((e.breaker_trips, e.safety_denials, e.decisions), (0, 0, 1));
    assert_eq!(
        e.last_breaker_trip_unix_nano,
        Some(2 * DAY),
        "the window still sees it"
    );
    assert!(evaluate(rollout, &ev, at(3 * DAY)).is_empty());
}

#[test]
fn agreement_below_its_bound_demotes_only_over_enough_cases() {
    let policy = Policy::from_toml(&billing("supervised", "", 3)).unwrap();
    let rollout = policy.rollout().unwrap();
    let decided = |n: u64, approve: u64| {
        let mut v = vec![
            json!({"event": "run_started", "tollgate.run.id": "r", "tollgate.task_type": "refunds"}),
            json!({"event": "decision", "seq": 1, "time_unix_nano": DAY, "tollgate.run.id": "r",
                "tollgate.mode": "supervised", "gen_ai.tool.name": "refund", "tollgate.decision": "escalate"}),
        ];
        for i in 0..n {
            let d = if i < approve { "approve" } else { "deny" };
            v.push(json!({"event": "escalation_decided", "seq": 2 + i, "time_unix_nano": DAY,
                "tollgate.run.id": "r", "tollgate.approval.decision": d, "tollgate.approval.approver": "maria"}));
        }
        v
    };
    // 30 approvals of 30: no trigger.
    let ev = events(&policy, &decided(30, 30));
    assert_eq!(ev.task_types["refunds"].cases, 30);
    assert!(evaluate(rollout, &ev, at(2 * DAY)).is_empty());
    // Without the human-denial trigger, 12 of 30 approved (lower bound 0.246 < 0.5) demotes.
    let text = billing("supervised", "", 3).replace(
        "demote = { agreement_below",
        "demote = { on_human_denial = false, agreement_below",
    );
    let quiet = Policy::from_toml(&text).unwrap();
    let ev = events(&quiet, &decided(30, 12));
    let p = evaluate(quiet.rollout().unwrap(), &ev, at(2 * DAY));
    assert_eq!(p.len(), 1);
    assert!(
        matches!(
            p[0].triggers[..],
            [Trigger::AgreementBelow { cases: 30, .. }]
        ),
        "{:?}",
        p[0].triggers
    );
    // The same rate over 29 cases: too few to judge.
    let ev = events(&quiet, &decided(29, 11));
    assert!(evaluate(quiet.rollout().unwrap(), &ev, at(2 * DAY)).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The document

#[test]
fn stages_that_would_let_a_demotion_open_more_are_refused_naming_the_stage() {
    // The reviewer's configuration: a safety denial in `autonomous` would demote to `shadow`,
    // where the very call just denied runs.
    let cases = [
        (
            "autonomous",
            "  { mode = \"shadow\", promote = { min_cases = 3 } },\n  { mode = \"autonomous\" },",
            "rollout.task_types.refunds.stages[0].mode",
            "`shadow` cannot be a rollout stage",
        ),
        // Shadow as the top stage: promotion would let denied calls run.
        (
            "recommend",
            "  { mode = \"recommend\", promote = { min_cases = 3 } },\n  { mode = \"shadow\" },",
            "rollout.task_types.refunds.stages[1].mode",
            "`shadow` cannot be a rollout stage",
        ),
        // Demoting `supervised` to `autonomous` would skip the human.
        (
            "supervised",
            "  { mode = \"autonomous\", promote = { min_cases = 3 } },\n  { mode = \"supervised\" },",
            "rollout.task_types.refunds.stages[1].mode",
            "stricter than the stage before it (`autonomous`)",
        ),
        (
            "recommend",
            "  { mode = \"recommend\", promote = { min_cases = 3 } },\n  { mode = \"enforce\", promote = { min_cases = 3 } },\n  { mode = \"supervised\" },",
            "rollout.task_types.refunds.stages[2].mode",
            "stricter than the stage before it (`enforce`)",
        ),
    ];
    for (mode, stages, path, reason) in cases {
        let text = billing_with_stages(mode, stages);
        let err = Policy::from_toml(&text).expect_err(stages);
        assert_eq!(err.path(), Some(path), "{stages}: {err}");
        assert!(err.to_string().contains(reason), "{stages}: {err}");
        assert!(err.location().is_some(), "{stages}: {err} is located");
    }
    // The same refusal from the API, as a typed error with the path.
    let mut section = tollgate::rollout::RolloutSection::default();
    let mut refunds = tollgate::rollout::TaskRollout::default();
    refunds.stages = vec![
        tollgate::rollout::Stage::new(Mode::Shadow),
        tollgate::rollout::Stage::new(Mode::Autonomous),
    ];
    section.task_types.insert("refunds".into(), refunds);
    let err = tollgate::rollout::Rollout::compile(&section, |_| Some(Mode::Autonomous))
        .expect_err("shadow is not a stage");
    assert_eq!(err.path, "rollout.task_types.refunds.stages[0].mode");
    // Equally strict stages in either order, and strict-to-permissive ones, are fine.
    for stages in [
        "  { mode = \"enforce\", promote = { min_cases = 3 } },\n  { mode = \"autonomous\" },",
        "  { mode = \"autonomous\", promote = { min_cases = 3 } },\n  { mode = \"enforce\" },",
        "  { mode = \"recommend\", promote = { min_cases = 3 } },\n  { mode = \"supervised\", promote = { min_cases = 3 } },\n  { mode = \"enforce\" },",
    ] {
        let mode = &stages[12..stages[12..].find('"').unwrap() + 12];
        Policy::from_toml(&billing_with_stages(mode, stages)).expect(stages);
    }
}

#[test]
fn the_rollout_section_is_versioned_and_its_mistakes_are_located() {
    let text = billing("recommend", "", 3);
    let with = Policy::from_toml(&text).unwrap();
    let start = text.find("[rollout]").unwrap();
    let without = Policy::from_toml(&text[..start]).unwrap();
    assert!(with.rollout().is_some() && without.rollout().is_none());
    assert_ne!(with.version(), without.version());
    assert!(!String::from_utf8_lossy(without.canonical_json()).contains("rollout"));
    let canonical = String::from_utf8_lossy(with.canonical_json()).into_owned();
    assert!(
        canonical.contains(r#""no_breaker_trip_within":"7d""#),
        "{canonical}"
    );

    let cases = [
        // (from, to, path, reason fragment)
        (
            "[rollout.task_types.refunds]",
            "[rollout.task_types.refnds]",
            "rollout.task_types.refnds",
            "unknown task type `refnds`",
        ),
        (
            r#"{ mode = "autonomous" },"#,
            "",
            "rollout.task_types.refunds.stages[1].promote",
            "last stage",
        ),
        (
            r#"{ mode = "autonomous" },"#,
            r#"{ mode = "supervised" },"#,
            "rollout.task_types.refunds.stages[2].mode",
            "already an earlier stage",
        ),
        (
            "min_agreement_lower_bound = 0.9",
            "min_agreement_lower_bound = 1.5",
            "rollout.task_types.refunds.stages[1].promote.min_agreement_lower_bound",
            "between 0 and 1",
        ),
        (
            "agreement_below = 0.5",
            "agreement_below = -0.5",
            "rollout.task_types.refunds.demote.agreement_below",
            "between 0 and 1",
        ),
        (
            r#"rules = [{ task_type = "refunds", mode = "recommend" }]"#,
            r#"rules = [{ task_type = "refunds", mode = "shadow" }]"#,
            "rollout.task_types.refunds",
            "not one of its stages",
        ),
    ];
    for (from, to, path, reason) in cases {
        assert!(text.contains(from), "{from}");
        let bad = text.replacen(from, to, 1);
        let err = Policy::from_toml(&bad).expect_err(to);
        assert_eq!(err.path(), Some(path), "{to}: {err}");
        assert!(err.to_string().contains(reason), "{to}: {err}");
        assert!(err.location().is_some(), "{to}: {err} is located");
    }
    // A supervised stage needs someone to ask.
    let no_chain = text.replace(
        "defaults = { timeout = \"1h\", chain = [{ group = \"leads\" }] }",
        "",
    );
    let err = Policy::from_toml(&no_chain).unwrap_err();
    assert_eq!(
        err.path(),
        Some("rollout.task_types.refunds.stages[1].mode"),
        "{err}"
    );
    assert!(err.location().is_some());
    // Fewer than two stages.
    let one = text.replace(
        r#"{ mode = "autonomous" },"#,
        "",
    ).replace(
        r#"{ mode = "supervised", promote = { min_cases = 50, min_agreement_lower_bound = 0.9 } },"#,
        "",
    );
    let err = Policy::from_toml(&one).unwrap_err();
    assert_eq!(
        err.path(),
        Some("rollout.task_types.refunds.stages"),
        "{err}"
    );
    // Unknown modes, deny codes and fields are refused by the parser, with a location.
    for (from, to) in [
        (r#"{ mode = "autonomous" }"#, r#"{ mode = "yolo" }"#),
        ("\"path_escape\"]", "\"path_escap\"]"),
        ("demote = {", "demote = { on_full_moon = true,"),
    ] {
        let err = Policy::from_toml(&text.replacen(from, to, 1)).expect_err(to);
        assert!(err.location().is_some(), "{to}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// The CLI

fn tollgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("run tollgate")
}

#[test]
fn rollout_status_prints_text_and_json_and_writes_the_demoted_document() {
    let dir = temp_dir("cli");
    let log = dir.path().join("audit");
    fs::create_dir_all(&log).unwrap();
    let policy_path = dir.path().join("policy.toml");
    let text = billing("recommend", "", 3);
    fs::write(&policy_path, &text).unwrap();
    let policy = Policy::from_toml(&text).unwrap();
    let (guard, sink) = guard_on(&policy, &log);
    recommend_and_agree(&guard, 3);
    close(guard, sink);
    let (log_s, pol_s) = (log.to_str().unwrap(), policy_path.to_str().unwrap());

    let out = tollgate(&["rollout", "status", "--log", log_s, "--policy", pol_s]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    assert!(
        stdout.contains("refunds: stage 1 of 3 (recommend), next supervised"),
        "{stdout}"
    );
    assert!(stdout.contains("[met] min_cases >= 3: 3"), "{stdout}");
    assert!(
        stdout.contains("PROMOTE recommend -> supervised (proposed"),
        "{stdout}"
    );

    let out = tollgate(&[
        "rollout", "status", "--log", log_s, "--policy", pol_s, "--format", "json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["task_types"][0];
    assert_eq!(t["task_type"], "refunds");
    assert_eq!(t["proposal"]["kind"], "promote");
    assert_eq!(t["proposal"]["applies"], false);
    assert_eq!(t["evidence"]["cases"], 3);
    assert!(v["written"].is_null());

    // Under a supervised document the same log is another stage's: nothing to judge yet, and a
    // log with a safety denial in the stage writes the demoted document.
    let sup_path = dir.path().join("supervised.toml");
    fs::write(&sup_path, billing("supervised", "", 3)).unwrap();
    let supervised = Policy::from_file(&sup_path).unwrap();
    let log2 = dir.path().join("audit2");
    fs::create_dir_all(&log2).unwrap();
    let (guard, sink) = guard_on(&supervised, &log2);
    let run = guard
        .start_run(RunContext::new("billing-agent", "clerk").for_task("refunds"))
        .unwrap();
    let v = guard.check(
        &run,
        &ToolCall::new("refund", r#"{"invoice": 2, "amount": 700}"#),
    );
    assert_eq!(v.deny_code(), Some(DenyCode::ArgumentOutOfRange));
    drop(v);
    run.finish().unwrap();
    close(guard, sink);
    let written = dir.path().join("demoted.json");
    let out = tollgate(&[
        "rollout",
        "status",
        "--log",
        log2.to_str().unwrap(),
        "--policy",
        sup_path.to_str().unwrap(),
        "--write",
        written.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    println!("{stdout}");
    assert!(
        // The guard demoted live; status sees its `rollout_demoted` record.
        stdout.contains(
            "trigger: live_demotion (supervised -> recommend: safety_denial argument_out_of_range"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("DEMOTE supervised -> recommend (applies at once)"),
        "{stdout}"
    );
    let demoted = Policy::from_file(&written).unwrap();
    assert_eq!(
        demoted.rollout().unwrap().state("refunds").unwrap().mode(),
        Mode::Recommend
    );
    assert!(stdout.contains(&demoted.version().to_string()), "{stdout}");

    // A policy without [rollout] and a tampered log are refused.
    let bare = dir.path().join("bare.toml");
    fs::write(&bare, &text[..text.find("[rollout]").unwrap()]).unwrap();
    let out = tollgate(&[
        "rollout",
        "status",
        "--log",
        log_s,
        "--policy",
        bare.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no [rollout]"));
}

#[test]
fn the_module_docs_example_is_a_valid_section() {
    let docs = include_str!("../src/rollout/mod.rs");
    let example: String = docs
        .split("//! ```toml\n")
        .nth(1)
        .and_then(|s| s.split("//! ```\n").next())
        .unwrap()
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("//!").unwrap().trim_start()))
        .collect();
    let text = billing("recommend", "", 3);
    let head = &text[..text.find("[modes]").unwrap()];
    let policy = Policy::from_toml(&format!("{head}{example}")).unwrap();
    let rollout = policy.rollout().unwrap();
    let state = rollout.state("refunds").unwrap();
    assert_eq!(state.stages.len(), 3);
    assert_eq!(state.demote.agreement_below, Some(0.8));
    assert_eq!(rollout.safety_codes().len(), 4);
}
