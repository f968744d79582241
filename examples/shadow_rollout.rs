//! A clinic's billing agent earns autonomy on measured criteria, and loses it at once.
//!
//! One policy document, one guard, one hash-chained audit log (in a temp dir), a few thousand
//! simulated tasks (a deterministic generator, so the output is the same every run):
//!
//! 1. **shadow**: a new rule (statement balances above 5,000 need review) runs in shadow mode
//!    over 1,000 statement tasks: the calls proceed, the would-be denials are counted;
//! 2. **recommend**: 2,000 refund tasks; the agent's refund is only a recommendation, a scripted
//!    clerk does the work and sometimes differs; the agreement report (`tollgate rollout
//!    report`'s text) compares them;
//! 3. **promotion**: `rollout status` evidence meets every criterion, the promotion is proposed
//!    (not applied: `auto_promote` is off); the operator applies it: supervised;
//! 4. **supervised**: 120 refunds each approved by a lead; promoted again: autonomous;
//! 5. **hard rollback**: the payment gateway starts failing, the breaker opens, and the guard
//!    demotes `refunds` to recommend before the next call: nothing more is paid out.
//!
//! `cargo run --example shadow_rollout`

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use tollgate::agreement::{Agreement, AgreementReport};
use tollgate::audit::AuditSink;
use tollgate::audit::file::{FileSink, FileSinkConfig};
use tollgate::audit::query::Query;
use tollgate::escalation::{Approver, Decision, MemoryApprovalStore};
use tollgate::mode::{HumanAction, WouldBe};
use tollgate::policy::{Bindings, Policy};
use tollgate::rollout::{Evidence, ProposalKind, TaskStatus, Trigger, apply, status};
use tollgate::{DenyCode, Outcome, RunContext, ToolCall, Verdict};

const DOCUMENT: &str = r#"
[policy]
name = "clinic-billing"
owner = "Revenue Cycle <billing@clinic.example>"
purpose = "Refund patients' overpayments and send statements."
scope = "The clinic's own invoices."
liability_owner = "Practice Manager"
review_cadence = "90d"
data_handling = "Card tokens are never recorded."

[tools.lookup_invoice]
effect = "read"
args.invoice = { type = "integer", required = true, min = 1 }
[tools.refund]
effect = "irreversible"
args.invoice = { type = "integer", required = true, min = 1 }
args.amount = { type = "number", required = true, min = 0, max = 500 }
[tools.send_statement]
effect = "write"
args.invoice = { type = "integer", required = true, min = 1 }
args.balance = { type = "number", required = true, min = 0, max = 5000 }

[roles.billing]
tools = ["lookup_invoice", "refund", "send_statement"]

[escalation]
groups.leads = ["maria", "sam"]
defaults = { timeout = "1h", chain = [{ group = "leads" }] }

[breakers]
key = "tool"
max_keys = 16
window = { calls = 10 }
minimum_calls = 5
failure_rate = 50
wait_in_open = "1h"

[modes]
default = "enforce"
rules = [
  { task_type = "statements", mode = "shadow" },
  { task_type = "refunds", mode = "recommend" },
]

[agreement.tools.refund]
fields = ["invoice", "amount"]
tolerance.amount = { absolute = 1.0 }

[rollout]
[rollout.task_types.refunds]
stages = [
  { mode = "recommend", promote = { min_cases = 1000, min_agreement_lower_bound = 0.9, max_safety_denials = 0, no_breaker_trip_within = "7d", max_budget_overruns = 0 } },
  { mode = "supervised", promote = { min_cases = 100, min_agreement_lower_bound = 0.95 } },
  { mode = "autonomous" },
]
"#;

/// splitmix64: a deterministic generator, so every run prints the same figures.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Removed again when `dir` drops at the end of `main`.
    let dir = tempfile::Builder::new()
        .prefix("tollgate-shadow-rollout-")
        .tempdir()?;
    let policy = Policy::from_toml(DOCUMENT)?;
    let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default())?;
    let sink = Arc::new(sink);
    let guard = policy.guard(
        Bindings::new()
            .audit(sink.clone())
            .approvals(Arc::new(MemoryApprovalStore::new())),
    )?;
    let agreement = policy.agreement().cloned().unwrap_or_else(Agreement::exact);
    let mut rng = Rng(0x5EED_2026);
    let ctx = |task: &str| RunContext::new("billing-agent", "billing").for_task(task);

    // 1. Shadow: the balance rule is new; its would-be denials are measured, nothing blocked.
    let (mut ran, mut would_deny) = (0u32, 0u32);
    let run = guard.start_run(ctx("statements"))?;
    for invoice in 1..=1000u32 {
        let balance = if rng.unit() < 0.03 {
            5200.0 + 900.0 * rng.unit()
        } else {
            40.0 + 900.0 * rng.unit()
        };
        let args = json!({"invoice": invoice, "balance": (balance * 100.0f64).round() / 100.0});
        let text = args.to_string();
        match guard.check(&run, &ToolCall::new("send_statement", text.as_str())) {
            Verdict::Allow(permit) => {
                ran += 1;
                if let Some(WouldBe::Deny(d)) = permit.shadow() {
                    assert_eq!(d.code(), DenyCode::ArgumentOutOfRange);
                    would_deny += 1;
                }
                permit.complete(Outcome::success())?;
            }
            other => panic!("shadow mode lets every statement through: {other:?}"),
        }
    }
    run.finish()?;
    assert_eq!(ran, 1000);
    assert!((15..=45).contains(&would_deny), "about 3 %: {would_deny}");
    println!("== 1. shadow: statements, new rule `balance <= 5000`");
    println!(
        "   {ran} statements sent, {would_deny} would have been denied (argument_out_of_range)"
    );

    // 2. Recommend: the agent recommends, a clerk does the work, sometimes differently.
    let (mut same, mut differ, mut skipped) = (0u32, 0u32, 0u32);
    for invoice in 1..=2000u32 {
        let run = guard.start_run(ctx("refunds"))?;
        let owed = (5.0 + 300.0 * rng.unit()).round();
        let args = json!({"invoice": invoice, "amount": owed});
        let text = args.to_string();
        let v = guard.check(&run, &ToolCall::new("refund", text.as_str()));
        assert_eq!(
            v.deny_code(),
            Some(DenyCode::Recommended),
            "nothing runs in recommend"
        );
        let rec = v.recommendation().ok_or("a recommendation")?.id.to_string();
        drop(v);
        let r = rng.unit();
        let action = if r < 0.955 {
            same += 1;
            HumanAction::call("refund", args)
        } else if r < 0.99 {
            differ += 1; // the clerk nets off a late fee the agent did not see
            HumanAction::call("refund", json!({"invoice": invoice, "amount": owed - 25.0}))
        } else {
            skipped += 1; // the clerk decides no refund is due
            HumanAction::nothing()
        };
        guard.record_human_action(&run, &rec, action)?;
        run.finish()?;
    }
    sink.flush()?;
    let report = AgreementReport::from_log(dir.path(), &agreement, Query::new())?;
    println!();
    println!(
        "== 2. recommend: 2000 refunds recommended; the clerk did the same {same}, differed {differ}, did nothing {skipped}"
    );
    for line in report.to_text().lines().take(12) {
        println!("   {line}");
    }

    // 3. The evidence meets every criterion: promotion proposed, not applied.
    let statuses = rollout_status(dir.path(), &policy)?;
    let p = statuses[0].proposal.as_ref().ok_or("a proposal")?;
    assert_eq!(p.kind, ProposalKind::Promote);
    assert!(!p.applies, "auto_promote is off: proposed only");
    assert!(apply(policy.document(), std::slice::from_ref(p)).is_none());
    println!();
    println!("== 3. rollout status");
    print_status(&statuses);
    // The operator accepts it (in production: sign the written document and reload).
    let mut accepted = p.clone();
    accepted.applies = true;
    let supervised =
        Policy::from_document(apply(policy.document(), &[accepted]).ok_or("applied")?)?;
    guard.reload(&supervised, "operator: promotion accepted")?;

    // 4. Supervised: every refund waits for a lead's approval.
    let queue = guard.approvals().ok_or("an approval queue")?;
    let run = guard.start_run(ctx("refunds"))?;
    for invoice in 2001..=2120u32 {
        let text = json!({"invoice": invoice, "amount": 60}).to_string();
        let call = ToolCall::new("refund", text.as_str());
        let Verdict::Escalate(req) = guard.check(&run, &call) else {
            panic!("supervised: every refund goes to a lead");
        };
        queue.decide(
            &req.id,
            &Approver::new("maria"),
            Decision::Approve,
            "matches the ledger",
        )?;
        match guard.resume(&run, &call, &req.ticket()) {
            Verdict::Allow(permit) => permit.complete(Outcome::success())?,
            other => panic!("approved: {other:?}"),
        }
    }
    run.finish()?;
    let statuses = rollout_status(dir.path(), &supervised)?;
    println!();
    println!("== 4. supervised: 120 refunds, each approved by a lead");
    print_status(&statuses);
    let p = statuses[0].proposal.clone().ok_or("a proposal")?;
    assert_eq!(
        (p.kind, p.to.as_str()),
        (ProposalKind::Promote, "autonomous")
    );
    let mut accepted = p;
    accepted.applies = true;
    let autonomous =
        Policy::from_document(apply(supervised.document(), &[accepted]).ok_or("applied")?)?;
    guard.reload(&autonomous, "operator: promotion accepted")?;

    // 5. Autonomous, until the payment gateway fails: the breaker opens, refunds go back to
    //    recommend before the next call.
    let run = guard.start_run(ctx("refunds"))?;
    let mut paid = 0u32;
    let mut demoted_at = None;
    for invoice in 3001..=3100u32 {
        let text = json!({"invoice": invoice, "amount": 45}).to_string();
        match guard.check(&run, &ToolCall::new("refund", text.as_str())) {
            Verdict::Allow(permit) => {
                paid += 1;
                let outcome = if invoice > 3040 {
                    Outcome::error("payment gateway: 503")
                } else {
                    Outcome::success()
                };
                permit.complete(outcome)?;
            }
            Verdict::Deny(d) => {
                assert_eq!(d.code(), DenyCode::Recommended, "{d}");
                demoted_at.get_or_insert(invoice);
            }
            Verdict::Escalate(r) => panic!("autonomous: {r:?}"),
        }
    }
    run.finish()?;
    sink.flush()?;
    let demoted_at = demoted_at.ok_or("the breaker trip demoted refunds")?;
    let demotions: Vec<Value> = Query::new()
        .kind("rollout_demoted")
        .open(dir.path())?
        .map(|r| r.map(|r| r.event))
        .collect::<Result<_, _>>()?;
    assert_eq!(demotions.len(), 1);
    let d = &demotions[0];
    assert_eq!(d["tollgate.rollout.trigger"], "breaker_trip");
    assert_eq!(demoted_at, 3001 + paid, "the very next call after the trip");
    println!();
    println!("== 5. autonomous: the gateway fails from invoice 3041");
    println!(
        "   {paid} refunds ran; breaker opened; record seq {}: rollout_demoted {} {} -> {} ({} on `{}`)",
        d["seq"],
        d["tollgate.task_type"].as_str().unwrap_or(""),
        d["tollgate.rollout.from"].as_str().unwrap_or(""),
        d["tollgate.rollout.to"].as_str().unwrap_or(""),
        d["tollgate.rollout.trigger"].as_str().unwrap_or(""),
        d["tollgate.rollout.detail"].as_str().unwrap_or("")
    );
    println!(
        "   invoice {demoted_at} onwards: recommendations only ({} calls, none executed)",
        3101 - demoted_at
    );
    let statuses = rollout_status(dir.path(), &autonomous)?;
    print_status(&statuses);
    let p = statuses[0].proposal.as_ref().ok_or("a demotion")?;
    assert_eq!(
        (p.kind, p.to.as_str(), p.applies),
        (ProposalKind::Demote, "recommend", true)
    );

    drop(guard);
    Arc::into_inner(sink)
        .ok_or("the guard released the sink")?
        .close()?;
    Ok(())
}

fn rollout_status(
    dir: &Path,
    policy: &Policy,
) -> Result<Vec<TaskStatus>, Box<dyn std::error::Error>> {
    let rollout = policy.rollout().ok_or("a [rollout] section")?;
    let exact = Agreement::exact();
    let agreement = policy.agreement().unwrap_or(&exact);
    let evidence = Evidence::from_log(dir, rollout, agreement, Query::new())?;
    Ok(status(rollout, &evidence, SystemTime::now()))
}

/// What `tollgate rollout status` prints, compactly.
fn print_status(statuses: &[TaskStatus]) {
    for t in statuses {
        let e = &t.evidence;
        println!(
            "   {}: stage {} of {} ({}); {} decisions, {}/{} agree (95% lower bound {})",
            t.task_type,
            t.stage_index + 1,
            t.stages.len(),
            t.stage,
            e.decisions,
            e.agreements,
            e.cases,
            e.agreement_lower.map_or("-".into(), |l| format!("{l:.4}"))
        );
        for c in &t.criteria {
            let mark = if c.met { "met" } else { "UNMET" };
            println!("     [{mark}] {} {}: {}", c.name, c.required, c.actual);
        }
        for tr in &t.triggers {
            if let Trigger::Event(ev) = tr {
                println!(
                    "     trigger: {} ({}) at seq {}",
                    ev.kind, ev.detail, ev.seq
                );
            }
        }
        if let Some(p) = &t.proposal {
            let how = match (p.kind, p.applies) {
                (ProposalKind::Demote, _) => "applies at once",
                (_, true) => "applies",
                _ => "proposed, awaiting the operator",
            };
            println!("     {:?} {} -> {} ({how})", p.kind, p.from, p.to);
        }
    }
}
