//! The escalation gate inside the guard: escalate, approve, resume once; timeouts, denials,
//! deceleration, flags, redaction of secrets in requests, audit events, restart with a
//! file-backed store, and the async wait.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::clock::ManualClock;
use tollgate::escalation::{
    ApprovalQueue, Approver, Decision, EscalationGate, EscalationPolicy, FileApprovalStore,
    MemoryApprovalStore, QueueConfig, Ticket,
};
use tollgate::{DenyCode, Guard, Outcome, RunBudget, RunContext, RunId, ToolCall, Verdict};

#[path = "common/tempdir.rs"]
mod tempdir;

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "pay",
            ToolSpec::irreversible()
                .arg("amount", Arg::number().required().min(0.0))
                .arg("currency", Arg::string().required())
                .arg("otp", Arg::string().secret()),
        )
        .tool("lookup", ToolSpec::read().allow_unknown_args())
        .role("payments", RoleSpec::new().tools(["pay", "lookup"]))
        .build()
        .unwrap()
}

const POLICY: &str = r#"{
    "groups": { "finance": ["alice", "bob"], "cfo": ["carol"] },
    "defaults": { "timeout": "10m", "chain": [ { "group": "finance" } ] },
    "rules": [
        { "id": "large-payment", "tools": ["pay"],
          "when": { "amount": { "path": "amount", "currency_path": "currency",
                                "over_by_currency": { "EUR": 1000, "USD": 1200 } } } },
        { "id": "ambiguous", "when": { "flag": "ambiguous" } },
        { "id": "decelerate", "when": { "budget_used": { "at_least": 0.8 } } }
    ]
}"#;

struct Setup {
    guard: Guard,
    clock: Arc<ManualClock>,
    audit: Arc<MemorySink>,
}

fn setup_with(store: Arc<dyn tollgate::escalation::ApprovalStore>, budget: RunBudget) -> Setup {
    let b = boundary();
    let policy = EscalationPolicy::from_json(POLICY).unwrap();
    let gate = EscalationGate::for_boundary(policy, &b).unwrap();
    let clock = Arc::new(ManualClock::new());
    let queue = ApprovalQueue::open(
        store,
        clock.clone(),
        QueueConfig::with_groups(gate.groups().clone()),
    )
    .unwrap();
    let audit = Arc::new(MemorySink::new());
    let guard = Guard::builder(b)
        .clock(clock.clone())
        .audit(audit.clone())
        .run_budget(budget)
        .escalation(gate, queue)
        .build()
        .unwrap();
    Setup {
        guard,
        clock,
        audit,
    }
}

fn setup() -> Setup {
    setup_with(Arc::new(MemoryApprovalStore::new()), RunBudget::default())
}

fn ctx() -> RunContext {
    RunContext::new("pay-bot", "payments").triggered_by("dave")
}

fn escalated(v: Verdict<'_>) -> Box<tollgate::ApprovalRequest> {
    match v {
        Verdict::Escalate(r) => r,
        other => panic!("expected an escalation, got {other:?}"),
    }
}

fn kinds(audit: &MemorySink) -> Vec<String> {
    audit
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn small_payments_run_large_ones_wait_for_approval_and_resume_exactly_once() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let small = json!({ "amount": 120, "currency": "EUR" });
    assert!(
        s.guard
            .check(&run, &ToolCall::new("pay", &small))
            .is_allowed()
    );

    let large = json!({ "amount": 5000, "currency": "EUR" });
    let call = ToolCall::new("pay", &large);
    let req = escalated(s.guard.check(&run, &call));
    assert_eq!(req.reasons[0].rule.as_str(), "large-payment");
    assert_eq!(req.run, *run.id());
    // Not yet approved: resuming is refused and consumes nothing.
    let early = s.guard.resume(&run, &call, &req.ticket());
    assert_eq!(early.deny_code(), Some(DenyCode::ApprovalInvalid));
    drop(early);

    let queue = s.guard.approvals().unwrap();
    // Separation of duties: the run's trigger may not approve its own agent's payment.
    assert!(
        queue
            .decide(&req.id, &Approver::new("dave"), Decision::Approve, "mine")
            .is_err()
    );
    s.clock.advance(Duration::from_secs(30));
    queue
        .decide(
            &req.id,
            &Approver::new("alice"),
            Decision::Approve,
            "invoice matches",
        )
        .unwrap();

    // Changed arguments are not authorised, and do not burn the grant.
    let more = json!({ "amount": 50000, "currency": "EUR" });
    let changed = s
        .guard
        .resume(&run, &ToolCall::new("pay", &more), &req.ticket());
    assert_eq!(changed.deny_code(), Some(DenyCode::ApprovalInvalid));
    drop(changed);

    let permit = s
        .guard
        .resume(&run, &call, &req.ticket())
        .into_permit()
        .unwrap();
    permit.complete(Outcome::success()).unwrap();
    let again = s.guard.resume(&run, &call, &req.ticket());
    assert_eq!(
        again.deny_code(),
        Some(DenyCode::ApprovalInvalid),
        "a grant is single-use"
    );
    drop(again);

    let k = kinds(&s.audit);
    for expected in [
        "escalation_requested",
        "escalation_decided",
        "escalation_resumed",
    ] {
        assert!(k.iter().any(|x| x == expected), "no {expected} in {k:?}");
    }
    let events = s.audit.events();
    let esc = events
        .iter()
        .find(|e| e["tollgate.decision"] == "escalate")
        .expect("the escalation decision is recorded");
    assert_eq!(esc["tollgate.approval.id"], req.id.as_str());
    let decided = events
        .iter()
        .find(|e| e["event"] == "escalation_decided")
        .unwrap();
    assert_eq!(decided["tollgate.approval.approver"], "alice");
    assert_eq!(decided["tollgate.approval.wait_ms"], 30_000);
    assert_eq!(decided["tollgate.run.id"], run.id().as_str());
}

#[test]
fn an_expired_request_denies_at_the_deadline_and_not_before() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let large = json!({ "amount": 5000, "currency": "USD" });
    let call = ToolCall::new("pay", &large);
    let req = escalated(s.guard.check(&run, &call));
    let queue = s.guard.approvals().unwrap();
    s.clock.advance(Duration::from_millis(599_999));
    queue.tick().unwrap();
    assert!(queue.status(&req.id).unwrap().state.is_pending());
    s.clock.advance(Duration::from_millis(1));
    queue.tick().unwrap();
    assert!(queue.status(&req.id).unwrap().state.is_timed_out());
    // Too late to approve, and resuming is denied as timed out.
    assert!(
        queue
            .decide(&req.id, &Approver::new("bob"), Decision::Approve, "late")
            .is_err()
    );
    let v = s.guard.resume(&run, &call, &req.ticket());
    assert!(
        matches!(
            v.deny_code(),
            Some(DenyCode::ApprovalTimedOut | DenyCode::ApprovalInvalid)
        ),
        "{v:?}"
    );
    drop(v);
    assert!(kinds(&s.audit).iter().any(|k| k == "escalation_expired"));
}

#[test]
fn flags_and_budget_deceleration_escalate_calls_that_would_be_allowed() {
    let s = setup_with(
        Arc::new(MemoryApprovalStore::new()),
        RunBudget {
            max_calls: Some(10),
            ..RunBudget::default()
        },
    );
    let run = s.guard.start_run(ctx()).unwrap();
    let q = json!({ "q": "balance" });
    let flags = ["ambiguous"];
    let flagged = s
        .guard
        .check(&run, &ToolCall::new("lookup", &q).with_flags(&flags));
    assert_eq!(escalated(flagged).reasons[0].rule.as_str(), "ambiguous");
    // Calls 1..=7 run; the 8th reaches 80% of the 10-call budget and escalates.
    let mut results = Vec::new();
    for _ in 0..8 {
        results.push(match s.guard.check(&run, &ToolCall::new("lookup", &q)) {
            Verdict::Allow(p) => {
                p.complete(Outcome::success()).unwrap();
                "allow"
            }
            Verdict::Escalate(r) => {
                assert_eq!(r.reasons[0].rule.as_str(), "decelerate");
                "escalate"
            }
            Verdict::Deny(d) => panic!("{d}"),
        });
    }
    assert_eq!(results[..7], ["allow"; 7]);
    assert_eq!(results[7], "escalate");
}

#[test]
fn secret_arguments_are_redacted_in_the_request_but_bound_by_the_hash() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = json!({ "amount": 5000, "currency": "EUR", "otp": "991-PLANTED" });
    let call = ToolCall::new("pay", &args);
    let req = escalated(s.guard.check(&run, &call));
    assert_eq!(req.args["otp"], tollgate::audit::SECRET_PLACEHOLDER);
    assert!(!serde_json::to_string(&*req).unwrap().contains("PLANTED"));
    assert!(
        !serde_json::to_string(&s.audit.events())
            .unwrap()
            .contains("PLANTED")
    );
    s.guard
        .approvals()
        .unwrap()
        .decide(&req.id, &Approver::new("bob"), Decision::Approve, "ok")
        .unwrap();
    // The same call with another one-time password is another call.
    let other = json!({ "amount": 5000, "currency": "EUR", "otp": "000-OTHER" });
    let v = s
        .guard
        .resume(&run, &ToolCall::new("pay", &other), &req.ticket());
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalInvalid));
    drop(v);
    assert!(s.guard.resume(&run, &call, &req.ticket()).is_allowed());
}

fn store_key() -> tollgate::escalation::StoreKey {
    tollgate::escalation::StoreKey::new("approvals-test", vec![0x5a; 32]).unwrap()
}

#[test]
fn a_restart_keeps_pending_and_decided_requests_and_executes_none_twice() {
    let dir = tempdir::temp_dir("esc-restart", "approvals");
    let path = dir.path().join("approvals.jsonl");
    let run_id = RunId::new("run-restart-1");
    let a = json!({ "amount": 2000, "currency": "EUR" });
    let b = json!({ "amount": 3000, "currency": "EUR" });
    let c = json!({ "amount": 4000, "currency": "EUR" });
    let (tickets, consumed_id): (Vec<String>, _) = {
        let s = setup_with(
            Arc::new(FileApprovalStore::open(&path, &store_key()).unwrap()),
            RunBudget::default(),
        );
        let run = s
            .guard
            .start_run_with_id(ctx(), Some(run_id.clone()))
            .unwrap();
        let ra = escalated(s.guard.check(&run, &ToolCall::new("pay", &a)));
        let rb = escalated(s.guard.check(&run, &ToolCall::new("pay", &b)));
        let rc = escalated(s.guard.check(&run, &ToolCall::new("pay", &c)));
        let q = s.guard.approvals().unwrap();
        q.decide(&ra.id, &Approver::new("alice"), Decision::Approve, "ok")
            .unwrap();
        q.decide(&rc.id, &Approver::new("alice"), Decision::Approve, "ok")
            .unwrap();
        // c is executed before the restart; a is approved but not yet executed; b is pending.
        assert!(
            s.guard
                .resume(&run, &ToolCall::new("pay", &c), &rc.ticket())
                .is_allowed()
        );
        let t = [&ra, &rb]
            .iter()
            .map(|r| serde_json::to_string(&r.ticket()).unwrap())
            .collect();
        (t, rc.ticket())
    }; // the process "restarts": guard, queue and store are dropped

    let s = setup_with(
        Arc::new(FileApprovalStore::open(&path, &store_key()).unwrap()),
        RunBudget::default(),
    );
    let run = s.guard.start_run_with_id(ctx(), Some(run_id)).unwrap();
    let ta: Ticket = serde_json::from_str(&tickets[0]).unwrap();
    let tb: Ticket = serde_json::from_str(&tickets[1]).unwrap();
    let q = s.guard.approvals().unwrap();
    assert!(
        q.status(&tb.approval).unwrap().state.is_pending(),
        "pending survives"
    );
    assert!(
        q.status(&ta.approval).unwrap().state.is_approved(),
        "decision survives"
    );
    // c was executed before the restart: never again.
    let v = s
        .guard
        .resume(&run, &ToolCall::new("pay", &c), &consumed_id);
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalInvalid));
    drop(v);
    // a resumes exactly once after the restart.
    assert!(
        s.guard
            .resume(&run, &ToolCall::new("pay", &a), &ta)
            .is_allowed()
    );
    let v = s.guard.resume(&run, &ToolCall::new("pay", &a), &ta);
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalInvalid));
    drop(v);
    // b can still be decided and resumed.
    q.decide(&tb.approval, &Approver::new("bob"), Decision::Approve, "ok")
        .unwrap();
    assert!(
        s.guard
            .resume(&run, &ToolCall::new("pay", &b), &tb)
            .is_allowed()
    );
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Decides the first pending request from another thread, once one appears.
fn approver_thread(guard: &Guard, decision: Decision) -> std::thread::JoinHandle<()> {
    let queue = guard.approvals().unwrap().clone();
    std::thread::spawn(move || {
        for _ in 0..2000 {
            if let Some(r) = queue.pending().unwrap().first() {
                queue
                    .decide(
                        &r.id,
                        &Approver::new("bob"),
                        decision,
                        "from another thread",
                    )
                    .unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no request appeared");
    })
}

#[test]
fn check_and_wait_returns_a_permit_once_approved_from_another_thread() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let large = json!({ "amount": 5000, "currency": "EUR" });
    let t = approver_thread(&s.guard, Decision::Approve);
    let v = block_on(s.guard.check_and_wait(&run, &ToolCall::new("pay", &large)));
    t.join().unwrap();
    let permit = v.into_permit().expect("approved calls get a permit");
    permit.complete(Outcome::success()).unwrap();
}

#[test]
fn check_and_wait_denies_when_an_approver_denies() {
    let s = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let large = json!({ "amount": 5000, "currency": "EUR" });
    let t = approver_thread(&s.guard, Decision::Deny);
    let v = block_on(s.guard.check_and_wait(&run, &ToolCall::new("pay", &large)));
    t.join().unwrap();
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalDenied));
    let reason = v.denial().unwrap().reason().to_owned();
    assert!(reason.contains("bob"), "{reason}");
    let last: Value = s.audit.events().last().cloned().unwrap();
    assert_eq!(last["tollgate.deny.code"], "approval_denied");
}
