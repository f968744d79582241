//! Supervised mode's third answer: an approver approves the call with **edited** arguments. The
//! grant then binds the edit, only the edited call can run (through the whole pipeline again),
//! the edit is recorded, survives a restart, and counts against the rollout's `max_edit_rate`.
#![cfg(feature = "toml")]

mod common;

use std::sync::Arc;

use serde_json::{Value, json};
use tollgate::agreement::Agreement;
use tollgate::audit::MemorySink;
use tollgate::clock::ManualClock;
use tollgate::escalation::{
    ApprovalQueue, Approver, Decision, FileApprovalStore, QueueConfig, QueueError, RequestState,
    StoreKey,
};
use tollgate::policy::{Bindings, Policy};
use tollgate::rollout::{EvidenceBuilder, status};
use tollgate::{DenyCode, Guard, Outcome, RunContext, ToolCall, Verdict};

use common::billing::billing;

const SUPERVISED_REFUNDS: &str = r#"
[modes]
rules = [{ task_type = "refunds", mode = "supervised" }]

[rollout.task_types.refunds]
stages = [
  { mode = "supervised", promote = { min_cases = 4, max_edit_rate = 0.2 } },
  { mode = "autonomous" },
]
"#;

struct Fixture {
    guard: Guard,
    sink: Arc<MemorySink>,
    policy: Policy,
}

fn fixture() -> Fixture {
    let policy = Policy::from_toml(&billing(SUPERVISED_REFUNDS)).unwrap();
    let sink = Arc::new(MemorySink::new());
    let guard = policy
        .guard(
            Bindings::new()
                .audit(sink.clone())
                .approvals(Arc::new(tollgate::escalation::MemoryApprovalStore::new())),
        )
        .unwrap();
    Fixture {
        guard,
        sink,
        policy,
    }
}

fn refunds_run(g: &Guard) -> tollgate::Run {
    g.start_run(RunContext::new("billing-agent", "clerk").for_task("refunds"))
        .unwrap()
}

fn maria() -> Approver {
    Approver::new("maria")
}

#[test]
fn an_edited_approval_runs_only_the_edited_call_and_only_once() {
    let f = fixture();
    let run = refunds_run(&f.guard);
    let proposed = ToolCall::new("refund", r#"{"invoice": 7, "amount": 90}"#);
    let Verdict::Escalate(req) = f.guard.check(&run, &proposed) else {
        panic!("supervised: every allowed call goes to a human");
    };
    let queue = f.guard.approvals().unwrap();
    let out = queue
        .edit(
            &req.id,
            &maria(),
            json!({"invoice": 7, "amount": 60}),
            "the invoice was paid twice for a smaller sum",
        )
        .unwrap();
    assert!(matches!(out.state, RequestState::Approved { .. }));

    // The proposal as the agent made it does not run, with the code that says why.
    let v = futures_lite_block_on(f.guard.wait_and_resume(&run, &proposed, &req));
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalEdited));
    assert_eq!(
        f.guard.resume(&run, &proposed, &req.ticket()).deny_code(),
        Some(DenyCode::ApprovalInvalid),
        "the original arguments no longer match the grant"
    );

    // The framework reads the edit and resumes the edited call: it runs, once.
    let now = queue.status(&req.id).unwrap();
    assert_eq!(now.request.args, json!({"invoice": 7, "amount": 60}));
    assert!(now.votes.last().unwrap().edited);
    let text = now.request.args.to_string();
    let edited = ToolCall::new("refund", text.as_str());
    let ticket = now.request.ticket();
    let permit = f
        .guard
        .resume(&run, &edited, &ticket)
        .into_permit()
        .expect("the edited call runs");
    permit.complete(Outcome::success()).unwrap();
    assert_eq!(
        f.guard.resume(&run, &edited, &ticket).deny_code(),
        Some(DenyCode::ApprovalInvalid),
        "a grant is used once"
    );

    // Recorded: which argument changed (names only), who, why; the resumed decision carries
    // the edited arguments like any call's.
    let events = f.sink.events();
    let rec = events
        .iter()
        .find(|e| e["event"] == "escalation_edited")
        .expect("an escalation_edited record");
    assert_eq!(rec["tollgate.approval.approver"], "maria");
    assert_eq!(rec["tollgate.approval.decision"], "edit");
    assert_eq!(rec["tollgate.approval.changed"], json!(["/amount"]));
    assert_eq!(rec["tollgate.approval.approvals"], 1);
    assert!(
        rec.get("gen_ai.tool.call.arguments").is_none() && !rec.to_string().contains("\"amount\""),
        "no edited value in the edit record: {rec}"
    );
    let allowed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "decision" && e["tollgate.decision"] == "allow")
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0]["gen_ai.tool.call.arguments"]["amount"], 60);
}

#[test]
fn an_edit_cannot_take_the_call_outside_the_boundary() {
    let f = fixture();
    let run = refunds_run(&f.guard);
    let proposed = ToolCall::new("refund", r#"{"invoice": 7, "amount": 90}"#);
    let Verdict::Escalate(req) = f.guard.check(&run, &proposed) else {
        panic!("escalates");
    };
    let queue = f.guard.approvals().unwrap();
    // 5000 is above the refund tool's `max = 500`: the approver may write it, the boundary
    // still refuses it when the edited call is resumed.
    queue
        .edit(
            &req.id,
            &maria(),
            json!({"invoice": 7, "amount": 5000}),
            "typo",
        )
        .unwrap();
    let now = queue.status(&req.id).unwrap();
    let text = now.request.args.to_string();
    let v = f.guard.resume(
        &run,
        &ToolCall::new("refund", text.as_str()),
        &now.request.ticket(),
    );
    assert_eq!(v.deny_code(), Some(DenyCode::ArgumentOutOfRange));
}

#[test]
fn edits_that_would_hide_or_change_nothing_or_come_from_the_wrong_person_are_refused() {
    let f = fixture();
    let queue = f.guard.approvals().unwrap();
    let run = refunds_run(&f.guard);
    // A secret argument is redacted for approvers: an edit of what they see would drop it.
    let secret = ToolCall::new(
        "refund",
        r#"{"invoice": 7, "amount": 90, "card_token": "tok_live_123"}"#,
    );
    let Verdict::Escalate(req) = f.guard.check(&run, &secret) else {
        panic!("escalates");
    };
    let e = queue
        .edit(
            &req.id,
            &maria(),
            json!({"invoice": 7, "amount": 10}),
            "less",
        )
        .unwrap_err();
    assert!(matches!(e, QueueError::InvalidSubmission { .. }), "{e}");
    assert!(e.to_string().contains("redacted"), "{e}");

    let plain = ToolCall::new("refund", r#"{"invoice": 8, "amount": 90}"#);
    let Verdict::Escalate(req) = f.guard.check(&run, &plain) else {
        panic!("escalates");
    };
    let same = queue
        .edit(
            &req.id,
            &maria(),
            json!({"amount": 90, "invoice": 8}),
            "same",
        )
        .unwrap_err();
    assert!(same.to_string().contains("changes nothing"), "{same}");
    let not_object = queue
        .edit(&req.id, &maria(), json!([1, 2]), "array")
        .unwrap_err();
    assert!(
        not_object.to_string().contains("JSON object"),
        "{not_object}"
    );
    // Not in the approver group, or the run's own agent (separation of duties).
    assert!(matches!(
        queue.edit(
            &req.id,
            &Approver::new("mallory"),
            json!({"invoice": 8, "amount": 1}),
            "x"
        ),
        Err(QueueError::NotEligible { .. })
    ));
    assert!(matches!(
        queue.edit(
            &req.id,
            &Approver::new("billing-agent"),
            json!({"invoice": 8, "amount": 1}),
            "x"
        ),
        Err(QueueError::SelfApproval { .. })
    ));
    // Nothing above changed the request.
    let now = queue.status(&req.id).unwrap();
    assert_eq!(now.state, RequestState::Pending);
    assert_eq!(now.request.args_hash, req.args_hash);
    // And a decided request cannot be edited afterwards.
    queue
        .decide(&req.id, &maria(), Decision::Deny, "no")
        .unwrap();
    assert!(matches!(
        queue.edit(
            &req.id,
            &Approver::new("sam"),
            json!({"invoice": 8, "amount": 1}),
            "x"
        ),
        Err(QueueError::NotPending { .. })
    ));
}

#[test]
fn an_edit_resets_the_quorum_and_survives_a_restart() {
    let tmp = common::tempdir::temp_dir("edits", "restart");
    let dir = tmp.path();
    let key = StoreKey::new("k1", vec![7; 32]).unwrap();
    let policy = Policy::from_toml(&billing(
        "[modes]\nrules = [{ task_type = \"refunds\", mode = \"supervised\" }]",
    ))
    .unwrap();
    let gate = policy.escalation().unwrap();
    let clock = Arc::new(ManualClock::new());
    let mut config = QueueConfig::for_gate(gate);
    config.groups = gate
        .groups()
        .clone()
        .with("leads", ["maria", "sam", "ines"]);
    let open = || {
        let store = FileApprovalStore::open(dir.join("approvals.jsonl"), &key).unwrap();
        ApprovalQueue::open(Arc::new(store), clock.clone(), config.clone()).unwrap()
    };
    let queue = open();
    let args = json!({"invoice": 3, "amount": 400});
    let esc = gate
        .check(&tollgate::escalation::GateInput::new(
            "refund",
            tollgate::boundary::Effect::Irreversible,
            &args,
        ))
        .expect("over 100 escalates");
    let mut esc = esc;
    esc.params.quorum = 2;
    let req = queue
        .submit(tollgate::escalation::Submission::new(
            "run-1",
            "billing-agent",
            "refund",
            args,
            esc,
            gate.version(),
        ))
        .unwrap();
    queue
        .decide(&req.id, &maria(), Decision::Approve, "ok as proposed")
        .unwrap();
    // sam edits: maria approved other arguments, so her approval no longer counts.
    let out = queue
        .edit(
            &req.id,
            &Approver::new("sam"),
            json!({"invoice": 3, "amount": 40}),
            "40",
        )
        .unwrap();
    assert_eq!(out.approvals, 1);
    assert_eq!(out.state, RequestState::Pending);
    drop(queue);

    // After a restart the edit, and the reset quorum, are replayed from the store.
    let queue = open();
    let now = queue.status(&req.id).unwrap();
    assert_eq!(now.request.args["amount"], 40);
    assert_eq!(now.approvals, 1);
    assert!(queue.replay_refusals().is_empty());
    // maria approves the edited call: two approvals of the same arguments.
    let out = queue
        .decide(&req.id, &maria(), Decision::Approve, "40 is right")
        .unwrap();
    assert!(matches!(out.state, RequestState::Approved { .. }));
    let edited = queue.status(&req.id).unwrap().request;
    assert_ne!(edited.args_hash, req.args_hash);
}

#[test]
fn edits_count_as_cases_that_disagree_and_bound_promotion_by_max_edit_rate() {
    let f = fixture();
    let queue = f.guard.approvals().unwrap();
    let run = refunds_run(&f.guard);
    // Five supervised proposals: three approved as proposed, two edited.
    for i in 1..=5 {
        let text = json!({"invoice": i, "amount": 20}).to_string();
        let Verdict::Escalate(req) = f.guard.check(&run, &ToolCall::new("refund", text.as_str()))
        else {
            panic!("escalates");
        };
        if i <= 3 {
            queue
                .decide(&req.id, &maria(), Decision::Approve, "fine")
                .unwrap();
        } else {
            queue
                .edit(
                    &req.id,
                    &maria(),
                    json!({"invoice": i, "amount": 10}),
                    "half",
                )
                .unwrap();
        }
    }
    let agreement = Agreement::exact();
    let rollout = f.policy.rollout().unwrap();
    let mut b = EvidenceBuilder::new(rollout, &agreement);
    for e in f.sink.events() {
        b.push(&e);
    }
    let ev = b.finish();
    let refunds = &ev.task_types["refunds"];
    assert_eq!(
        (refunds.cases, refunds.agreements, refunds.edits),
        (5, 3, 2)
    );
    let st = status(rollout, &ev, std::time::SystemTime::now());
    let c = st[0]
        .criteria
        .iter()
        .find(|c| c.name == "max_edit_rate")
        .expect("the criterion is evaluated");
    // 2 of 5 = 0.4 > 0.2: not met, so no promotion.
    assert!(!c.met, "{c:?}");
    assert!(c.actual.starts_with("0.4000 (2 of 5"), "{}", c.actual);
    assert!(st[0].proposal.is_none(), "{:?}", st[0].proposal);
}

#[test]
fn a_max_edit_rate_outside_zero_to_one_is_refused_with_its_path() {
    let bad = SUPERVISED_REFUNDS.replace("max_edit_rate = 0.2", "max_edit_rate = 1.5");
    let e = Policy::from_toml(&billing(&bad)).unwrap_err().to_string();
    assert!(e.contains("max_edit_rate"), "{e}");
    assert!(e.contains("line"), "{e}");
}

/// Drives a future on this thread (the queue's wait is runtime-independent).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
