//! The approval-queue fixture shared by the `escalation_queue*` integration tests: a payment
//! policy (finance then cfo, a quorum-2 large-payment rule, an ambiguous rule that times out to
//! approve), a queue on a `ManualClock` and a memory store, and short-hands to submit and decide.
//!
//! Included with `#[path = "common/approval_queue.rs"] mod approval_queue;` by each of those test
//! binaries; not every binary uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate::boundary::Effect;
use tollgate::clock::ManualClock;
use tollgate::escalation::{
    ApprovalId, ApprovalQueue, ApprovalRequest, Approver, Condition, Decision, EscalationGate,
    EscalationPolicy, GateInput, LevelSpec, MemoryApprovalStore, OnTimeout, QueueConfig,
    QueueError, RequestState, RuleParams, RuleSpec, Submission,
};

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn policy() -> EscalationPolicy {
    EscalationPolicy::new()
        .group("finance", ["alice", "bob", "erin", "dave"])
        .group("cfo", ["carol"])
        .defaults(RuleParams::new().timeout(Duration::from_secs(3600)).chain([
            LevelSpec::new("finance"),
            LevelSpec::after("cfo", Duration::from_secs(1800)),
        ]))
        .rule(
            RuleSpec::new("large-payment", Condition::amount_over("amount", 1000))
                .tools(["pay"])
                .quorum(2),
        )
        .rule(
            RuleSpec::new("ambiguous", Condition::flag("ambiguous"))
                .timeout(Duration::from_secs(600))
                .on_timeout(OnTimeout::Approve),
        )
}

pub fn gate() -> EscalationGate {
    EscalationGate::compile(policy(), &[]).unwrap()
}

pub struct Fixture {
    pub clock: Arc<ManualClock>,
    pub store: Arc<MemoryApprovalStore>,
    pub queue: ApprovalQueue,
    pub gate: EscalationGate,
}

pub fn fixture() -> Fixture {
    fixture_with(QueueConfig::default())
}

pub fn fixture_with(mut config: QueueConfig) -> Fixture {
    let gate = gate();
    config.groups = gate.groups().clone();
    let clock = Arc::new(ManualClock::new());
    let store = Arc::new(MemoryApprovalStore::new());
    let queue = ApprovalQueue::open(store.clone(), clock.clone(), config).unwrap();
    Fixture {
        clock,
        store,
        queue,
        gate,
    }
}

pub fn submission(gate: &EscalationGate, args: Value, flags: &[&str]) -> Submission {
    let esc = gate
        .check(&GateInput::new("pay", Effect::Irreversible, &args).flags(flags))
        .expect("the call escalates");
    Submission::new("run-1", "billing-bot", "pay", args, esc, gate.version()).triggered_by("dave")
}

pub fn big(f: &Fixture) -> ApprovalRequest {
    f.queue
        .submit(submission(
            &f.gate,
            json!({"amount": 5000, "to": "ACME"}),
            &[],
        ))
        .unwrap()
}

pub fn who(id: &str) -> Approver {
    Approver::new(id)
}

pub fn approve(q: &ApprovalQueue, id: &ApprovalId, by: &str) -> Result<RequestState, QueueError> {
    q.decide(id, &who(by), Decision::Approve, "looks right")
        .map(|o| o.state)
}

pub fn state(q: &ApprovalQueue, id: &ApprovalId) -> RequestState {
    q.status(id).unwrap().state
}
