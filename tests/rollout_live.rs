//! The hard rollback, live (issue 14): a demotion trigger the guard observes itself for a
//! task type of the `[rollout]` section (a safety denial, a breaker opening, an escalation an
//! approver denied) decides that task type's very next call in its first stage's mode, records
//! a `rollout_demoted` event and alerts; a trigger in the first stage changes nothing; other
//! task types are unaffected; a reload of the same version keeps the demotion, a new version
//! replaces it.
#![cfg(feature = "toml")]

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;

use serde_json::Value;
use tollgate::audit::AuditSink;
use tollgate::audit::file::{FileSink, FileSinkConfig};
use tollgate::audit::query::Query;
use tollgate::breaker::{Alert, AlertKind, ChannelAlerts};
use tollgate::escalation::{Approver, Decision, MemoryApprovalStore};
use tollgate::policy::{Bindings, Policy};
use tollgate::{DenyCode, Guard, Outcome, RunContext, ToolCall, Verdict};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tollgate-live-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
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
    let dir = TempDir::new(mode);
    let policy = Policy::from_toml(&billing(mode, demote)).unwrap();
    let (sink, _) = FileSink::open(&dir.0, FileSinkConfig::default()).unwrap();
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
            .open(&self.dir.0)
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
