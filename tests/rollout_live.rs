//! The hard rollback, live (issue 14): a demotion trigger the guard observes itself for a
//! task type of the `[rollout]` section (a safety denial, a breaker opening, an escalation an
//! approver denied) decides that task type's very next call in its first stage's mode, records
//! a `rollout_demoted` event and alerts; a trigger in the first stage changes nothing; other
//! task types are unaffected; a reload of the same version keeps the demotion, a new version
//! replaces it.
#![cfg(feature = "toml")]

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate::audit::AuditSink;
use tollgate::audit::file::{FileSink, FileSinkConfig};
use tollgate::audit::query::Query;
use tollgate::breaker::{Alert, AlertKind, ChannelAlerts};
use tollgate::escalation::{Approver, Decision, MemoryApprovalStore};
use tollgate::mode::HumanAction;
use tollgate::policy::{Bindings, Policy};
use tollgate::rollout::Evidence;
use tollgate::{DenyCode, Guard, Outcome, RunContext, ToolCall, Verdict};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("live", name)
}

/// `refunds` rolled out recommend -> supervised -> autonomous, currently in `mode`; `reports`
/// is not rolled out (enforced). `demote` is the refunds' `demote` table.
fn billing(mode: &str, demote: &str) -> String {
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

[breakers]
key = "tool"
max_keys = 16
window = {{ calls = 4 }}
minimum_calls = 4
failure_rate = 50
wait_in_open = "1h"

[modes]
default = "enforce"
rules = [{{ task_type = "refunds", mode = "{mode}" }}, {{ task_type = "reports", mode = "enforce" }}]

[rollout]
safety_codes = ["argument_out_of_range"]
[rollout.task_types.refunds]
stages = [
  {{ mode = "recommend", promote = {{ min_cases = 3 }} }},
  {{ mode = "supervised", promote = {{ min_cases = 3 }} }},
  {{ mode = "autonomous" }},
]
demote = {{ {demote} }}
"#
    )
}

struct Rig {
    guard: Guard,
    sink: Arc<FileSink>,
    alerts: Receiver<Alert>,
    dir: TempDir,
}

fn rig(mode: &str, demote: &str) -> (Rig, Policy) {
    rig_from(mode, billing(mode, demote))
}

fn rig_from(mode: &str, doc: String) -> (Rig, Policy) {
    let dir = temp_dir(mode);
    let policy = Policy::from_toml(&doc).unwrap();
    let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    let sink = Arc::new(sink);
    let (alerts, rx) = ChannelAlerts::new(64);
    let guard = policy
        .guard(
            Bindings::new()
                .audit(sink.clone())
                .alerts(Arc::new(alerts))
                .approvals(Arc::new(MemoryApprovalStore::new())),
        )
        .unwrap();
    (
        Rig {
            guard,
            sink,
            alerts: rx,
            dir,
        },
        policy,
    )
}

impl Rig {
    fn run(&self, task: &str) -> tollgate::Run {
        self.guard
            .start_run(RunContext::new("billing-agent", "clerk").for_task(task))
            .unwrap()
    }

    fn demotions(&self) -> Vec<Value> {
        self.sink.flush().unwrap();
        Query::new()
            .kind("rollout_demoted")
            .open(self.dir.path())
            .unwrap()
            .map(|r| r.unwrap().event)
            .collect()
    }

    fn demotion_alerts(&self) -> Vec<Alert> {
        self.alerts
            .try_iter()
            .filter(|a| a.kind == AlertKind::RolloutDemoted)
            .collect()
    }
}

fn code(v: &Verdict<'_>) -> Option<DenyCode> {
    v.deny_code()
}

const LOOKUP: &str = r#"{"id": 3}"#;
const TOO_MUCH: &str = r#"{"invoice": 2, "amount": 900}"#;

#[test]
fn a_safety_denial_decides_the_very_next_call_in_the_first_stage() {
    let (rig, _) = rig("autonomous", "");
    let run = rig.run("refunds");
    let reports = rig.run("reports");
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert!(v.is_allowed(), "autonomous before the trigger: {v:?}");
    drop(v);
    let v = rig.guard.check(&run, &ToolCall::new("refund", TOO_MUCH));
    assert_eq!(code(&v), Some(DenyCode::ArgumentOutOfRange));
    drop(v);
    // The very next call: recommend mode, nothing runs.
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "{v:?}");
    assert_eq!(
        v.denial().unwrap().rule().as_str(),
        "rollout.task_types.refunds"
    );
    drop(v);
    // A new run of the task type too; another task type is unaffected.
    let run2 = rig.run("refunds");
    let v = rig
        .guard
        .check(&run2, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended));
    drop(v);
    let v = rig
        .guard
        .check(&reports, &ToolCall::new("lookup_invoice", LOOKUP));
    assert!(v.is_allowed(), "reports is not rolled out: {v:?}");
    drop(v);

    let ds = rig.demotions();
    assert_eq!(ds.len(), 1, "demoted once: {ds:?}");
    let d = &ds[0];
    assert_eq!(d["tollgate.task_type"], "refunds");
    assert_eq!(d["tollgate.rollout.from"], "autonomous");
    assert_eq!(d["tollgate.rollout.to"], "recommend");
    assert_eq!(d["tollgate.rollout.trigger"], "safety_denial");
    assert_eq!(d["tollgate.rollout.detail"], "argument_out_of_range");
    assert_eq!(d["tollgate.rule"], "tools.refund.args.amount.max");
    assert_eq!(d["tollgate.run.id"], run.id().as_str());
    let alerts = rig.demotion_alerts();
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0]
            .detail
            .contains("`refunds` demoted from autonomous to recommend")
    );
}

/// `refunds` rolled out supervised -> autonomous (currently autonomous), with `lookup_invoice`
/// pinned to `recommend` for refunds by a `[modes]` rule of its own.
fn rig_pinned_tool() -> Rig {
    let doc = billing("autonomous", "")
        .replace(
            r#"{ task_type = "reports", mode = "enforce" }]"#,
            r#"{ task_type = "reports", mode = "enforce" }, { task_type = "refunds", tool = "lookup_invoice", mode = "recommend" }]"#,
        )
        .replace(
            "  { mode = \"recommend\", promote = { min_cases = 3 } },\n",
            "",
        );
    assert!(doc.contains("tool = \"lookup_invoice\", mode = \"recommend\""));
    assert!(!doc.contains("{ mode = \"recommend\""));
    rig_from("autonomous", doc).0
}

#[test]
fn a_demotion_never_loosens_a_tool_its_own_mode_rule_holds_stricter() {
    let rig = rig_pinned_tool();
    let run = rig.run("refunds");
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "pinned: {v:?}");
    drop(v);
    let v = rig.guard.check(&run, &ToolCall::new("refund", TOO_MUCH));
    assert_eq!(code(&v), Some(DenyCode::ArgumentOutOfRange));
    drop(v);
    let ds = rig.demotions();
    assert_eq!(ds.len(), 1);
    assert_eq!(ds[0]["tollgate.rollout.to"], "supervised");
    // Demoted to supervised: the pinned tool stays a recommendation (its own rule, the
    // stricter), never a call an approver could let run.
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "{v:?}");
    assert_eq!(v.denial().unwrap().rule().as_str(), "modes.rules[2]");
    drop(v);
    // The other tool of the task type is decided in the demotion's mode.
    let v = rig.guard.check(
        &run,
        &ToolCall::new("refund", r#"{"invoice": 2, "amount": 20}"#),
    );
    assert!(matches!(v, Verdict::Escalate(_)), "supervised: {v:?}");
}

#[test]
fn a_trigger_in_the_first_stage_or_a_disabled_one_changes_nothing() {
    let (rig, _) = rig("recommend", "");
    let run = rig.run("refunds");
    let v = rig.guard.check(&run, &ToolCall::new("refund", TOO_MUCH));
    assert_eq!(code(&v), Some(DenyCode::Recommended));
    drop(v);
    assert!(rig.demotions().is_empty());
    assert!(rig.demotion_alerts().is_empty());

    let (rig, _) = rig_off();
    let run = rig.run("refunds");
    let v = rig.guard.check(&run, &ToolCall::new("refund", TOO_MUCH));
    assert_eq!(code(&v), Some(DenyCode::ArgumentOutOfRange));
    drop(v);
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert!(v.is_allowed(), "on_safety_denial = false: {v:?}");
    drop(v);
    assert!(rig.demotions().is_empty());
}

fn rig_off() -> (Rig, Policy) {
    rig("autonomous", "on_safety_denial = false")
}

#[test]
fn a_breaker_opening_demotes_at_once() {
    let (rig, _) = rig("autonomous", "");
    let run = rig.run("refunds");
    let ok = r#"{"invoice": 1, "amount": 10}"#;
    for i in 0..4 {
        let v = rig.guard.check(&run, &ToolCall::new("refund", ok));
        let Verdict::Allow(p) = v else {
            panic!("call {i}: {v:?}")
        };
        p.complete(Outcome::error("payment gateway timeout"))
            .unwrap();
    }
    let ds = rig.demotions();
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["tollgate.rollout.trigger"], "breaker_trip");
    assert_eq!(ds[0]["tollgate.rollout.detail"], "refund");
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "{v:?}");
}

#[test]
fn an_escalation_denied_by_a_human_demotes_at_once() {
    let (rig, _) = rig("supervised", "");
    let run = rig.run("refunds");
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    let Verdict::Escalate(req) = v else {
        panic!("supervised: {v:?}")
    };
    let queue = rig.guard.approvals().unwrap();
    // An approval changes nothing; a denial demotes.
    let v2 = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", r#"{"id": 4}"#));
    let Verdict::Escalate(req2) = v2 else {
        panic!("supervised: {v2:?}")
    };
    queue
        .decide(&req2.id, &Approver::new("sam"), Decision::Approve, "fine")
        .unwrap();
    assert!(rig.demotions().is_empty());
    queue
        .decide(
            &req.id,
            &Approver::new("maria"),
            Decision::Deny,
            "not that one",
        )
        .unwrap();
    let ds = rig.demotions();
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["tollgate.rollout.trigger"], "human_denial");
    assert_eq!(ds[0]["tollgate.rule"], "maria");
    assert_eq!(ds[0]["tollgate.rollout.from"], "supervised");
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "{v:?}");
}

#[test]
fn a_reload_of_the_same_version_keeps_the_demotion_and_a_new_version_replaces_it() {
    let (rig, policy) = rig("autonomous", "");
    let run = rig.run("refunds");
    drop(rig.guard.check(&run, &ToolCall::new("refund", TOO_MUCH)));
    rig.guard.reload(&policy, "file-watcher").unwrap();
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "same version: kept");
    drop(v);
    // The operator's new document (here: autonomous again, with another safety list) rules.
    let next = Policy::from_toml(&billing("autonomous", "").replace(
        r#"safety_codes = ["argument_out_of_range"]"#,
        r#"safety_codes = ["argument_out_of_range", "path_escape"]"#,
    ))
    .unwrap();
    assert_ne!(next.version(), policy.version());
    rig.guard.reload(&next, "ops").unwrap();
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert!(v.is_allowed(), "new version: {v:?}");
}

/// Proposes a 20-unit refund in supervised mode and answers it: approve, or edit to 10.
fn supervised_answer(rig: &Rig, run: &tollgate::Run, invoice: u64, agree: bool) {
    let text = json!({"invoice": invoice, "amount": 20}).to_string();
    let v = rig
        .guard
        .check(run, &ToolCall::new("refund", text.as_str()));
    let Verdict::Escalate(req) = v else {
        panic!("supervised before the bound is crossed: {v:?}")
    };
    let queue = rig.guard.approvals().unwrap();
    if agree {
        queue
            .decide(&req.id, &Approver::new("maria"), Decision::Approve, "fine")
            .unwrap();
    } else {
        queue
            .edit(
                &req.id,
                &Approver::new("maria"),
                json!({"invoice": invoice, "amount": 10}),
                "half of it",
            )
            .unwrap();
    }
}

#[test]
fn falling_agreement_demotes_on_the_answer_that_takes_the_bound_below() {
    let demote = "on_human_denial = false, agreement_below = 0.5, agreement_min_cases = 10";
    let (rig, _) = rig("supervised", demote);
    let run = rig.run("refunds");
    // 6 approvals and 4 edits: 6/10, Wilson lower bound 0.3127 < 0.5 (by hand: centre 0.5722, half-width 0.2596) once the 10th is in.
    for i in 1..=9 {
        supervised_answer(&rig, &run, i, i <= 6);
        assert!(rig.demotions().is_empty(), "no demotion before 10 answers");
    }
    supervised_answer(&rig, &run, 10, false);
    let ds = rig.demotions();
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["tollgate.rollout.trigger"], "agreement_below");
    assert_eq!(
        ds[0]["tollgate.rule"],
        "rollout.task_types.refunds.demote.agreement_below"
    );
    let detail = ds[0]["tollgate.rollout.detail"].as_str().unwrap();
    assert!(
        detail.contains("6/10") && detail.contains("0.3127"),
        "{detail}"
    );
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "{v:?}");
}

#[test]
fn agreement_above_the_bound_does_not_demote() {
    let demote = "on_human_denial = false, agreement_below = 0.5, agreement_min_cases = 10";
    let (rig, _) = rig("supervised", demote);
    let run = rig.run("refunds");
    // 10/10: lower bound 0.722, above 0.5.
    for i in 1..=10 {
        supervised_answer(&rig, &run, i, true);
    }
    assert!(rig.demotions().is_empty());
}

#[test]
fn human_actions_that_disagree_with_recommendations_in_the_first_stage_demote_nothing() {
    // `recommend` is the strictest mode, so it can only be a rollout's first stage: there is
    // nothing lower to fall back to, and nothing runs in it whatever the humans do.
    let demote = "agreement_below = 0.5, agreement_min_cases = 5";
    let (rig, _) = rig("recommend", demote);
    let run = rig.run("refunds");
    for i in 1..=5u64 {
        let text = json!({"invoice": i, "amount": 20}).to_string();
        let v = rig
            .guard
            .check(&run, &ToolCall::new("refund", text.as_str()));
        let id = v.recommendation().expect("recommend mode").id.to_string();
        drop(v);
        // The clerk refunds another amount each time but the first: 1/5 agree.
        let amount = if i == 1 { 20 } else { 15 };
        rig.guard
            .record_human_action(
                &run,
                &id,
                HumanAction::call("refund", json!({"invoice": i, "amount": amount})),
            )
            .unwrap();
    }
    assert!(rig.demotions().is_empty());
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "{v:?}");
}

#[test]
fn a_wait_that_ends_after_a_demotion_is_recorded_in_the_demoted_mode() {
    let (rig, policy) = rig("supervised", "");
    let run = rig.run("refunds");
    let call = ToolCall::new("lookup_invoice", LOOKUP);
    let v = rig.guard.check(&run, &call);
    let Verdict::Escalate(req) = v else {
        panic!("supervised: {v:?}")
    };
    // The approver's denial demotes refunds to recommend before the waiting call returns.
    rig.guard
        .approvals()
        .unwrap()
        .decide(&req.id, &Approver::new("maria"), Decision::Deny, "no")
        .unwrap();
    assert_eq!(rig.demotions().len(), 1);
    let v =
        rig.guard
            .wait_and_resume_blocking(&run, &call, &req, std::time::Duration::from_secs(5));
    assert_eq!(code(&v), Some(DenyCode::ApprovalDenied), "{v:?}");
    drop(v);
    rig.sink.flush().unwrap();
    let decisions: Vec<Value> = Query::new()
        .kind("decision")
        .open(rig.dir.path())
        .unwrap()
        .map(|r| r.unwrap().event)
        .collect();
    let last = decisions.last().unwrap();
    assert_eq!(last["tollgate.deny.code"], "approval_denied", "{last}");
    assert_eq!(last["tollgate.mode"], "recommend", "{last}");
    // The trail still shows the live demotion.
    let ev = Evidence::from_log(
        rig.dir.path(),
        policy.rollout().unwrap(),
        &tollgate::agreement::Agreement::exact(),
        Query::new(),
    )
    .unwrap();
    assert!(
        ev.task_types["refunds"].demoted_live.is_some(),
        "{:?}",
        ev.task_types["refunds"]
    );
}

#[test]
fn a_human_denial_after_the_run_ended_still_demotes() {
    let (rig, _) = rig("supervised", "");
    let run = rig.run("refunds");
    let req = {
        let v = rig
            .guard
            .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
        match v {
            Verdict::Escalate(req) => *req,
            v => panic!("supervised: {v:?}"),
        }
    };
    assert_eq!(req.task_type.as_ref().map(|t| t.as_str()), Some("refunds"));
    run.finish().unwrap();
    rig.guard
        .approvals()
        .unwrap()
        .decide(&req.id, &Approver::new("maria"), Decision::Deny, "no")
        .unwrap();
    let ds = rig.demotions();
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["tollgate.rollout.trigger"], "human_denial");
    let next = rig.run("refunds");
    let v = rig
        .guard
        .check(&next, &ToolCall::new("lookup_invoice", LOOKUP));
    assert_eq!(code(&v), Some(DenyCode::Recommended), "{v:?}");
}

#[test]
fn lifting_a_demotion_restores_the_stage_and_is_recorded() {
    let (rig, policy) = rig("autonomous", "");
    let run = rig.run("refunds");
    assert!(
        !rig.guard.lift_demotion("refunds", "ops:kim").unwrap(),
        "nothing to lift"
    );
    drop(rig.guard.check(&run, &ToolCall::new("refund", TOO_MUCH)));
    assert_eq!(rig.demotions().len(), 1);
    assert!(rig.guard.lift_demotion("refunds", "ops:kim").unwrap());
    let v = rig
        .guard
        .check(&run, &ToolCall::new("lookup_invoice", LOOKUP));
    assert!(v.is_allowed(), "autonomous again: {v:?}");
    drop(v);
    rig.sink.flush().unwrap();
    let lifted: Vec<Value> = Query::new()
        .kind("rollout_lifted")
        .open(rig.dir.path())
        .unwrap()
        .map(|r| r.unwrap().event)
        .collect();
    assert_eq!(lifted.len(), 1);
    assert_eq!(lifted[0]["tollgate.rollout.lifted_by"], "ops:kim");
    assert_eq!(lifted[0]["tollgate.rollout.from"], "recommend");
    assert_eq!(lifted[0]["tollgate.rollout.to"], "autonomous");
    // The trail agrees: no live demotion stands.
    let ev = Evidence::from_log(
        rig.dir.path(),
        policy.rollout().unwrap(),
        &tollgate::agreement::Agreement::exact(),
        Query::new(),
    )
    .unwrap();
    assert!(ev.task_types["refunds"].demoted_live.is_none());
    // A later trigger demotes again.
    drop(rig.guard.check(&run, &ToolCall::new("refund", TOO_MUCH)));
    assert_eq!(rig.demotions().len(), 2);
}

/// One step an agent and its approvers take in the supervised stage.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A refund in range, approved.
    Approved,
    /// A refund in range, edited by the approver.
    Edited,
    /// A refund out of range: a safety denial (a trigger).
    OutOfRange,
    /// A refund in range, denied by the approver (a trigger).
    HumanDenied,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Approved),
        2 => Just(Step::Edited),
        1 => Just(Step::OutOfRange),
        1 => Just(Step::HumanDenied),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever comes before it, the first triggering event demotes, and the very next call is
    /// decided in the first stage; nothing before it is.
    #[test]
    fn demotion_happens_on_the_first_triggering_event(steps in prop::collection::vec(step(), 1..12)) {
        let (rig, _) = rig("supervised", "");
        let run = rig.run("refunds");
        let queue = rig.guard.approvals().unwrap();
        let mut triggered = false;
        for (i, s) in steps.iter().enumerate() {
            let invoice = i as u64 + 1;
            let amount = if matches!(s, Step::OutOfRange) { 900 } else { 20 };
            let text = json!({"invoice": invoice, "amount": amount}).to_string();
            let v = rig.guard.check(&run, &ToolCall::new("refund", text.as_str()));
            if triggered {
                // Demoted: every call from the trigger on is a recommendation.
                prop_assert_eq!(code(&v), Some(DenyCode::Recommended), "step {} {:?}", i, s);
                continue;
            }
            match (s, v) {
                (Step::OutOfRange, v) => {
                    prop_assert_eq!(code(&v), Some(DenyCode::ArgumentOutOfRange));
                    triggered = true;
                }
                (_, Verdict::Escalate(req)) => {
                    let maria = Approver::new("maria");
                    match s {
                        Step::Approved => {
                            queue.decide(&req.id, &maria, Decision::Approve, "ok").unwrap();
                        }
                        Step::Edited => {
                            queue
                                .edit(&req.id, &maria, json!({"invoice": invoice, "amount": 5}), "less")
                                .unwrap();
                        }
                        _ => {
                            queue.decide(&req.id, &maria, Decision::Deny, "no").unwrap();
                            triggered = true;
                        }
                    }
                }
                (_, v) => prop_assert!(false, "supervised before any trigger: {:?}", v),
            }
            prop_assert_eq!(rig.demotions().len(), usize::from(triggered), "after step {} {:?}", i, s);
        }
    }
}
