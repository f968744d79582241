//! The blocking approvals API: `ApprovalQueue::wait_blocking`, `Guard::check_and_wait_blocking`
//! and `Guard::wait_and_resume_blocking`, for synchronous callers without an executor.
//!
//! Decisions come from other threads; request deadlines run on a `ManualClock` advanced and
//! ticked by another thread. Two tests use short real timeouts because their point is how long
//! an OS thread blocks (the caller's own bound, and a deadline seen without any ticker).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::clock::{Clock, ManualClock, SystemClock};
use tollgate::escalation::{
    ApprovalId, ApprovalQueue, Approver, Decision, EscalationGate, EscalationPolicy,
    MemoryApprovalStore, QueueConfig, QueueError,
};
use tollgate::{AgentId, DenyCode, Guard, Outcome, RunContext, ToolCall, Verdict};

const LONG: Duration = Duration::from_secs(60);

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "pay",
            ToolSpec::irreversible()
                .arg("amount", Arg::number().required().min(0.0))
                .arg("currency", Arg::string().required()),
        )
        .role("payments", RoleSpec::new().tools(["pay"]))
        .build()
        .unwrap()
}

fn policy(timeout: &str) -> EscalationPolicy {
    EscalationPolicy::from_json(&format!(
        r#"{{
        "groups": {{ "finance": ["alice", "bob"] }},
        "defaults": {{ "timeout": "{timeout}", "chain": [ {{ "group": "finance" }} ] }},
        "rules": [ {{ "id": "large-payment", "tools": ["pay"],
                      "when": {{ "amount": {{ "path": "amount", "over": 1000 }} }} }} ]
    }}"#
    ))
    .unwrap()
}

struct Setup {
    guard: Guard,
    audit: Arc<MemorySink>,
}

fn setup_with(clock: Arc<dyn Clock>, timeout: &str) -> Setup {
    let b = boundary();
    let gate = EscalationGate::for_boundary(policy(timeout), &b).unwrap();
    let queue = ApprovalQueue::open(
        Arc::new(MemoryApprovalStore::new()),
        clock.clone(),
        QueueConfig::for_gate(&gate),
    )
    .unwrap();
    let audit = Arc::new(MemorySink::new());
    let guard = Guard::builder(b)
        .clock(clock)
        .audit(audit.clone())
        .escalation(gate, queue)
        .build()
        .unwrap();
    Setup { guard, audit }
}

fn setup() -> (Setup, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    (setup_with(clock.clone(), "10m"), clock)
}

fn ctx() -> RunContext {
    RunContext::new("pay-bot", "payments").triggered_by("dave")
}

fn large() -> serde_json::Value {
    json!({ "amount": 5000, "currency": "EUR" })
}

/// Blocks until a request is pending *and* a waiter is registered for it, then returns its id.
fn await_waiter(queue: &ApprovalQueue) -> ApprovalId {
    let start = Instant::now();
    loop {
        if queue.waiting() > 0
            && let Some(r) = queue.pending().unwrap().first()
        {
            return r.id.clone();
        }
        assert!(
            start.elapsed() < LONG,
            "no waiter registered for a pending request"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `act` on another thread once the calling thread waits for an approval.
fn once_waiting(
    guard: &Guard,
    act: impl FnOnce(&ApprovalQueue, ApprovalId) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let queue = guard.approvals().unwrap().clone();
    std::thread::spawn(move || {
        let id = await_waiter(&queue);
        act(&queue, id);
    })
}

fn last_deny_code(audit: &MemorySink) -> String {
    let events = audit.events();
    let last = events.last().expect("events recorded");
    last["tollgate.deny.code"].as_str().unwrap_or("").to_owned()
}

#[test]
fn check_and_wait_blocking_returns_a_permit_once_approved_from_another_thread() {
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let t = once_waiting(&s.guard, |q, id| {
        q.decide(&id, &Approver::new("bob"), Decision::Approve, "ok")
            .unwrap();
    });
    let v = s
        .guard
        .check_and_wait_blocking(&run, &ToolCall::new("pay", &args), LONG);
    t.join().unwrap();
    let permit = v.into_permit().expect("an approved call gets a permit");
    permit.complete(Outcome::success()).unwrap();
}

#[test]
fn check_and_wait_blocking_denies_when_an_approver_denies_from_another_thread() {
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let t = once_waiting(&s.guard, |q, id| {
        q.decide(&id, &Approver::new("alice"), Decision::Deny, "too much")
            .unwrap();
    });
    let v = s
        .guard
        .check_and_wait_blocking(&run, &ToolCall::new("pay", &args), LONG);
    t.join().unwrap();
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalDenied));
    assert!(v.denial().unwrap().reason().contains("alice"));
    assert_eq!(last_deny_code(&s.audit), "approval_denied");
}

#[test]
fn calls_that_need_no_human_return_at_once_without_waiting() {
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let small = json!({ "amount": 10, "currency": "EUR" });
    let v = s
        .guard
        .check_and_wait_blocking(&run, &ToolCall::new("pay", &small), LONG);
    assert!(v.is_allowed());
    drop(v);
    let bad = json!({ "amount": -1, "currency": "EUR" });
    let v = s
        .guard
        .check_and_wait_blocking(&run, &ToolCall::new("pay", &bad), LONG);
    assert_eq!(v.deny_code(), Some(DenyCode::ArgumentOutOfRange));
    assert_eq!(s.guard.approvals().unwrap().waiting(), 0);
}

#[test]
fn request_deadline_passing_while_blocked_denies_with_approval_timed_out() {
    let (s, clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let t = once_waiting(&s.guard, move |q, _id| {
        clock.advance(Duration::from_secs(601));
        q.tick().unwrap();
    });
    let v = s
        .guard
        .check_and_wait_blocking(&run, &ToolCall::new("pay", &args), LONG);
    t.join().unwrap();
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalTimedOut));
    assert_eq!(last_deny_code(&s.audit), "approval_timed_out");
}

#[test]
fn callers_timeout_returns_the_escalation_still_pending_and_resumable() {
    // Real time: the point is how long this thread blocks.
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let call = ToolCall::new("pay", &args);
    let start = Instant::now();
    let v = s
        .guard
        .check_and_wait_blocking(&run, &call, Duration::from_millis(30));
    assert!(start.elapsed() >= Duration::from_millis(30));
    let request = match v {
        Verdict::Escalate(r) => r,
        other => panic!("expected the pending escalation back, got {other:?}"),
    };
    let queue = s.guard.approvals().unwrap();
    assert_eq!(queue.pending().unwrap().len(), 1);
    assert_eq!(queue.waiting(), 0, "a timed-out wait deregisters itself");

    // Approved later: waiting again returns the permit at once, exactly once.
    queue
        .decide(&request.id, &Approver::new("bob"), Decision::Approve, "ok")
        .unwrap();
    let v = s
        .guard
        .wait_and_resume_blocking(&run, &call, &request, Duration::ZERO);
    v.into_permit()
        .expect("approved")
        .complete(Outcome::success())
        .unwrap();
    let again = s
        .guard
        .wait_and_resume_blocking(&run, &call, &request, LONG);
    assert_eq!(again.deny_code(), Some(DenyCode::ApprovalInvalid));
}

#[test]
fn kill_switch_thrown_while_waiting_stops_the_wait_and_denies() {
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let guard = s.guard.clone();
    let t = once_waiting(&s.guard, move |_q, _id| {
        guard.suspend_all("security-officer").unwrap();
    });
    let start = Instant::now();
    let v = s
        .guard
        .check_and_wait_blocking(&run, &ToolCall::new("pay", &args), LONG);
    t.join().unwrap();
    assert!(start.elapsed() < LONG, "the kill switch must end the wait");
    assert_eq!(v.deny_code(), Some(DenyCode::Suspended));
    let reason = v.denial().unwrap().reason().to_owned();
    assert!(reason.contains("global"), "{reason}");
    assert_eq!(last_deny_code(&s.audit), "suspended");

    // Even if someone approves the request afterwards, the suspended run cannot consume it.
    let queue = s.guard.approvals().unwrap();
    let id = queue.pending().unwrap()[0].id.clone();
    queue
        .decide(&id, &Approver::new("bob"), Decision::Approve, "late")
        .unwrap();
    let request = queue.status(&id).unwrap().request;
    let v = s
        .guard
        .wait_and_resume_blocking(&run, &ToolCall::new("pay", &args), &request, LONG);
    assert_eq!(v.deny_code(), Some(DenyCode::Suspended));
}

#[test]
fn agent_kill_switch_thrown_while_waiting_stops_the_wait_and_denies() {
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let guard = s.guard.clone();
    let t = once_waiting(&s.guard, move |_q, _id| {
        guard
            .suspend_agent(&AgentId::new("pay-bot"), "security-officer")
            .unwrap();
    });
    let v = s
        .guard
        .check_and_wait_blocking(&run, &ToolCall::new("pay", &args), LONG);
    t.join().unwrap();
    assert_eq!(v.deny_code(), Some(DenyCode::Suspended));
    assert!(v.denial().unwrap().reason().contains("agent"));
}

#[test]
fn run_kill_switch_thrown_while_waiting_stops_the_wait_and_denies() {
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let queue = s.guard.approvals().unwrap().clone();
    let v = std::thread::scope(|scope| {
        scope.spawn(|| {
            await_waiter(&queue);
            s.guard.suspend_run(&run, "security-officer").unwrap();
        });
        s.guard
            .check_and_wait_blocking(&run, &ToolCall::new("pay", &args), LONG)
            .deny_code()
    });
    assert_eq!(v, Some(DenyCode::Suspended));
}

#[test]
fn another_runs_kill_switch_does_not_end_the_wait() {
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let other = s
        .guard
        .start_run(RunContext::new("other-bot", "payments"))
        .unwrap();
    let args = large();
    let queue = s.guard.approvals().unwrap().clone();
    let v = std::thread::scope(|scope| {
        scope.spawn(|| {
            let id = await_waiter(&queue);
            // Wakes every waiter; ours must go back to waiting.
            s.guard.suspend_run(&other, "security-officer").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            queue
                .decide(&id, &Approver::new("bob"), Decision::Approve, "ok")
                .unwrap();
        });
        s.guard
            .check_and_wait_blocking(&run, &ToolCall::new("pay", &args), LONG)
            .into_permit()
            .map(|p| p.complete(Outcome::success()).unwrap())
    });
    assert!(v.is_ok(), "{v:?}");
}

#[test]
fn blocking_wait_sees_its_deadline_without_any_ticker() {
    // Real time: with a clock that advances by itself, the waiter wakes at the request's own
    // deadline and applies it; nothing calls `tick`.
    let s = setup_with(Arc::new(SystemClock::new()), "200ms");
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let start = Instant::now();
    let v = s
        .guard
        .check_and_wait_blocking(&run, &ToolCall::new("pay", &args), LONG);
    assert_eq!(v.deny_code(), Some(DenyCode::ApprovalTimedOut));
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert!(start.elapsed() < LONG);
}

#[test]
fn a_run_of_another_guard_is_denied_without_waiting() {
    let (s, _clock) = setup();
    let (other, _c) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let call = ToolCall::new("pay", &args);
    let request = match s.guard.check(&run, &call) {
        Verdict::Escalate(r) => r,
        v => panic!("{v:?}"),
    };
    let v = other
        .guard
        .wait_and_resume_blocking(&run, &call, &request, LONG);
    assert_eq!(v.deny_code(), Some(DenyCode::ForeignRun));
    assert!(other.audit.events().is_empty());
}

#[test]
fn queue_wait_blocking_reports_decisions_timeouts_and_unknown_ids() {
    let (s, clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let request = match s.guard.check(&run, &ToolCall::new("pay", &args)) {
        Verdict::Escalate(r) => r,
        v => panic!("{v:?}"),
    };
    let queue = s.guard.approvals().unwrap().clone();
    assert_eq!(
        queue
            .wait_blocking(&request.id, Duration::from_millis(5))
            .unwrap(),
        None
    );
    let q = queue.clone();
    let t = std::thread::spawn(move || {
        await_waiter(&q);
        clock.advance(Duration::from_secs(601));
        q.tick().unwrap();
    });
    let r = queue.wait_blocking(&request.id, LONG).unwrap();
    t.join().unwrap();
    let r = r.expect("resolved");
    assert!(!r.is_approved());

    let unknown = ApprovalId::new("no-such-request");
    assert!(matches!(
        queue.wait_blocking(&unknown, LONG),
        Err(QueueError::NotFound { .. })
    ));
}

/// Polls `f` on this thread, parking between polls (the futures here are woken by the queue).
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
    let start = Instant::now();
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(start.elapsed() < LONG, "the future was never woken");
        std::thread::park_timeout(LONG);
    }
}

#[test]
fn kill_switch_thrown_while_awaiting_an_approval_ends_the_async_wait_too() {
    let (s, _clock) = setup();
    let run = s.guard.start_run(ctx()).unwrap();
    let args = large();
    let guard = s.guard.clone();
    let t = once_waiting(&s.guard, move |_q, _id| {
        guard
            .suspend_agent(&AgentId::new("pay-bot"), "security-officer")
            .unwrap();
    });
    let v = block_on(s.guard.check_and_wait(&run, &ToolCall::new("pay", &args)));
    t.join().unwrap();
    assert_eq!(v.deny_code(), Some(DenyCode::Suspended));
    assert!(v.denial().unwrap().reason().contains("agent"));
    assert_eq!(last_deny_code(&s.audit), "suspended");
}
