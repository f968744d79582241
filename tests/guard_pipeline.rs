//! The Guard pipeline: permits, outcomes, abandoned permits, execute (sync and async), hot reload,
//! audit fail-closed, foreign runs and run lifecycle events.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use serde_json::Value;
use tollgate::audit::{AuditError, AuditEvent, AuditSink, MemorySink};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::clock::ManualClock;
use tollgate::{DenyCode, ExecuteError, Guard, GuardError, Outcome, RunContext, ToolCall, Verdict};

fn boundary(max: f64) -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "pay",
            ToolSpec::irreversible().arg("amount", Arg::number().required().max(max)),
        )
        .tool("look", ToolSpec::read())
        .role("r", RoleSpec::new().tools(["pay", "look"]))
        .build()
        .unwrap()
}

fn setup() -> (Guard, Arc<MemorySink>, Arc<ManualClock>) {
    let sink = Arc::new(MemorySink::new());
    let clock = Arc::new(ManualClock::new());
    let guard = Guard::builder(boundary(100.0))
        .audit(sink.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    (guard, sink, clock)
}

fn events_of(sink: &MemorySink, kind: &str) -> Vec<Value> {
    sink.events()
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

#[test]
fn allow_yields_a_permit_and_records_decision_and_outcome() {
    let (guard, sink, clock) = setup();
    let run = guard
        .start_run(RunContext::new("bot", "r").triggered_by("user:7"))
        .unwrap();
    let call = ToolCall::new("pay", r#"{"amount": 10}"#)
        .with_call_id("call_1")
        .with_reasoning("invoice due");
    let Verdict::Allow(permit) = guard.check(&run, &call) else {
        panic!("expected allow")
    };
    assert_eq!(permit.tool(), "pay");
    assert_eq!(permit.policy_version(), guard.policy_version());
    clock.advance(Duration::from_millis(30));
    permit
        .complete(Outcome::success().with_tokens(100, 20))
        .unwrap();

    let started = events_of(&sink, "run_started");
    assert_eq!(started[0]["tollgate.trigger"], "user:7");
    let decision = &events_of(&sink, "decision")[0];
    assert_eq!(decision["tollgate.decision"], "allow");
    assert_eq!(decision["gen_ai.tool.name"], "pay");
    assert_eq!(decision["gen_ai.tool.call.id"], "call_1");
    assert_eq!(decision["gen_ai.tool.call.arguments"]["amount"], 10);
    assert_eq!(decision["tollgate.reasoning"], "invoice due");
    assert_eq!(
        decision["tollgate.policy.version"],
        guard.policy_version().to_string()
    );
    let outcome = &events_of(&sink, "outcome")[0];
    assert_eq!(outcome["tollgate.outcome"]["status"], "success");
    assert_eq!(outcome["tollgate.latency_ns"], 30_000_000);
    assert_eq!(outcome["gen_ai.usage.input_tokens"], 100);
    assert_eq!(outcome["gen_ai.tool.call.id"], "call_1");
}

#[test]
fn deny_is_recorded_with_code_rule_and_reason() {
    let (guard, sink, _) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let v = guard.check(&run, &ToolCall::new("pay", r#"{"amount": 1000}"#));
    assert_eq!(v.deny_code(), Some(DenyCode::ArgumentOutOfRange));
    let d = &events_of(&sink, "decision")[0];
    assert_eq!(d["tollgate.decision"], "deny");
    assert_eq!(d["tollgate.deny.code"], "argument_out_of_range");
    assert_eq!(d["tollgate.rule"], "tools.pay.args.amount.max");
}

#[test]
fn dropped_permit_is_recorded_as_abandoned() {
    let (guard, sink, _) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    {
        let v = guard.check(&run, &ToolCall::without_args("look"));
        assert!(v.is_allowed());
    }
    let outcomes = events_of(&sink, "outcome");
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0]["tollgate.outcome"]["status"], "abandoned");
}

#[test]
fn execute_runs_the_tool_only_when_allowed_and_records_errors() {
    let (guard, sink, _) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let ran = AtomicBool::new(false);
    let r: Result<(), ExecuteError<String>> =
        guard.execute(&run, &ToolCall::new("pay", r#"{"amount": 1e6}"#), |_| {
            ran.store(true, Ordering::SeqCst);
            Ok(())
        });
    assert_eq!(
        r.unwrap_err().denial().map(|d| d.code()),
        Some(DenyCode::ArgumentOutOfRange)
    );
    assert!(!ran.load(Ordering::SeqCst), "a denied tool must not run");

    let r = guard.execute(&run, &ToolCall::new("pay", r#"{"amount": 5}"#), |p| {
        assert_eq!(p.tool(), "pay");
        Err::<(), _>("bank offline".to_string())
    });
    assert!(matches!(r, Err(ExecuteError::Tool(ref m)) if m == "bank offline"));
    let outcome = &events_of(&sink, "outcome")[0];
    assert_eq!(outcome["tollgate.outcome"]["status"], "error");
    assert_eq!(outcome["tollgate.outcome"]["message"], "bank offline");

    let v = guard
        .execute(&run, &ToolCall::without_args("look"), |_| {
            Ok::<_, String>(42)
        })
        .unwrap();
    assert_eq!(v, 42);
}

fn block_on<F: Future>(f: F) -> F::Output {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[test]
fn execute_async_runs_only_when_allowed() {
    let (guard, sink, _) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let calls = AtomicUsize::new(0);
    let ok =
        block_on(
            guard.execute_async(&run, &ToolCall::new("pay", r#"{"amount": 5}"#), async |p| {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(p.tool().len())
            }),
        );
    assert_eq!(ok.unwrap(), 3);
    let denied = block_on(guard.execute_async(
        &run,
        &ToolCall::new("pay", r#"{"amount": 500}"#),
        async |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(0)
        },
    ));
    assert!(denied.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(events_of(&sink, "outcome").len(), 1);
}

#[test]
fn reload_swaps_policy_and_permits_keep_their_generation() {
    let (guard, sink, _) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let v1 = guard.policy_version();
    let Verdict::Allow(permit) = guard.check(&run, &ToolCall::new("pay", r#"{"amount": 50}"#))
    else {
        panic!()
    };

    let old = guard.reload_boundary(boundary(20.0), "ops").unwrap();
    assert_eq!(old, v1);
    let v2 = guard.policy_version();
    assert_ne!(v1, v2);
    // the same call is now denied, under the new version
    let d = guard.check(&run, &ToolCall::new("pay", r#"{"amount": 50}"#));
    assert_eq!(d.denial().unwrap().policy_version(), Some(v2));
    // the reload itself is recorded with both versions
    let reload = &events_of(&sink, "policy_reloaded")[0];
    assert_eq!(reload["tollgate.policy.previous"], v1.to_string());
    assert_eq!(reload["tollgate.policy.version"], v2.to_string());
    assert_eq!(reload["tollgate.reloaded_by"], "ops");
    // the permit issued before the reload still reports and records the old generation
    assert_eq!(permit.policy_version(), v1);
    permit.complete(Outcome::success()).unwrap();
    assert_eq!(
        events_of(&sink, "outcome")[0]["tollgate.policy.version"],
        v1.to_string()
    );
}

#[derive(Default)]
struct FailingSink {
    fail: AtomicBool,
}

impl AuditSink for FailingSink {
    fn record(&self, _: &AuditEvent<'_>) -> Result<(), AuditError> {
        if self.fail.load(Ordering::SeqCst) {
            Err(AuditError::Refused {
                sink: "failing",
                reason: "disk full".into(),
            })
        } else {
            Ok(())
        }
    }
    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

#[test]
fn audit_failure_fails_closed() {
    let sink = Arc::new(FailingSink::default());
    let guard = Guard::builder(boundary(100.0))
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    assert!(
        guard
            .check(&run, &ToolCall::without_args("look"))
            .is_allowed()
    );
    sink.fail.store(true, Ordering::SeqCst);
    let v = guard.check(&run, &ToolCall::without_args("look"));
    assert_eq!(v.deny_code(), Some(DenyCode::AuditFailed));
    assert!(v.denial().unwrap().reason().contains("disk full"));
    // a run cannot even start without its start record
    assert!(matches!(
        guard.start_run(RunContext::new("bot", "r")),
        Err(GuardError::Audit(_))
    ));
    // and a tool that ran but whose outcome cannot be recorded surfaces that
    sink.fail.store(false, Ordering::SeqCst);
    let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("look")) else {
        panic!()
    };
    sink.fail.store(true, Ordering::SeqCst);
    assert!(p.complete(Outcome::success()).is_err());
}

#[test]
fn run_from_another_guard_is_denied() {
    let (g1, _, _) = setup();
    let (g2, sink2, _) = setup();
    let run = g1.start_run(RunContext::new("bot", "r")).unwrap();
    let before = sink2.len();
    assert_eq!(
        g2.check(&run, &ToolCall::without_args("look")).deny_code(),
        Some(DenyCode::ForeignRun)
    );
    assert_eq!(
        sink2.len(),
        before,
        "a foreign run is not recorded in this guard's trail"
    );
}

#[test]
fn starting_a_run_with_an_unknown_role_fails() {
    let (guard, _, _) = setup();
    assert!(
        matches!(guard.start_run(RunContext::new("bot", "admin")), Err(GuardError::UnknownRole(r)) if r == "admin")
    );
}

#[test]
fn run_end_is_recorded_once_with_its_duration() {
    let (guard, sink, clock) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let id = run.id().to_string();
    clock.advance(Duration::from_secs(3));
    run.finish().unwrap();
    let dropped = guard.start_run(RunContext::new("bot", "r")).unwrap();
    drop(dropped);
    let finished = events_of(&sink, "run_finished");
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[0]["tollgate.run.id"], id);
    assert_eq!(finished[0]["tollgate.duration_ns"], 3_000_000_000u64);
}

#[test]
fn sequence_numbers_strictly_increase() {
    let (guard, sink, _) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    for i in 0..20 {
        let args = format!(r#"{{"amount": {}}}"#, i * 10);
        let _ = guard.check(&run, &ToolCall::new("pay", args.as_str()));
    }
    drop(run);
    let seqs: Vec<u64> = sink
        .events()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[test]
fn visible_tools_follow_role_and_run_mode() {
    let (guard, _, _) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    assert_eq!(guard.visible_tools(&run), ["look", "pay"]);
    let ro = guard
        .start_run(RunContext::new("bot", "r").read_only())
        .unwrap();
    assert_eq!(guard.visible_tools(&ro), ["look"]);
}

#[test]
fn guard_is_shared_across_threads() {
    let (guard, sink, _) = setup();
    std::thread::scope(|s| {
        for t in 0..4 {
            let guard = guard.clone();
            s.spawn(move || {
                let run = guard
                    .start_run(RunContext::new(format!("bot{t}"), "r"))
                    .unwrap();
                for i in 0..250 {
                    let args = format!(r#"{{"amount": {}}}"#, i % 200);
                    match guard.check(&run, &ToolCall::new("pay", args.as_str())) {
                        Verdict::Allow(p) => {
                            assert!(i % 200 <= 100);
                            p.complete(Outcome::success()).unwrap();
                        }
                        Verdict::Deny(d) => assert_eq!(d.code(), DenyCode::ArgumentOutOfRange),
                        Verdict::Escalate(_) => panic!("no escalation stage yet"),
                    }
                }
            });
        }
    });
    let seqs: std::collections::BTreeSet<u64> = sink
        .events()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), sink.len(), "sequence numbers are unique");
}

/// Finding: two live runs could share one id, so a rogue agent could resume another agent's
/// approved call or use its credentials. A duplicate live id is refused; once the first run
/// ends the id is free again, and the new run is a different instance.
#[test]
fn duplicate_live_run_id_is_refused() {
    let guard = Guard::builder(boundary(100.0)).build().unwrap();
    let id = tollgate::RunId::new("shared-id");
    let first = guard
        .start_run_with_id(RunContext::new("agent-a", "r"), Some(id.clone()))
        .unwrap();
    let err = guard
        .start_run_with_id(RunContext::new("agent-b", "r"), Some(id.clone()))
        .unwrap_err();
    assert!(
        matches!(err, GuardError::DuplicateRun(ref s) if s == "shared-id"),
        "{err}"
    );
    let first_instance = first.instance();
    first.finish().unwrap();
    let second = guard
        .start_run_with_id(RunContext::new("agent-b", "r"), Some(id))
        .unwrap();
    assert_ne!(second.instance(), first_instance);
}

/// A permit detached from its run and call completes on another thread, after the run handle
/// moved on: the outcome is recorded under the version that allowed it, the budget settles, and a
/// detached permit dropped without an outcome is recorded as abandoned.
#[test]
fn detached_permits_complete_elsewhere_and_record_abandonment() {
    let (guard, sink, _) = setup();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let v1 = guard.policy_version();
    let args = String::from(r#"{"amount": 50}"#);
    let detached = guard
        .check(
            &run,
            &ToolCall::new("pay", args.as_str()).with_call_id("c-1"),
        )
        .into_permit()
        .unwrap()
        .detach();
    drop(args); // the detached permit borrows nothing
    guard.reload_boundary(boundary(20.0), "ops").unwrap();
    std::thread::spawn(move || {
        assert_eq!(detached.tool(), "pay");
        assert_eq!(detached.policy_version(), v1);
        detached.complete(Outcome::success()).unwrap();
    })
    .join()
    .unwrap();
    let dropped = guard
        .check(&run, &ToolCall::new("look", "{}"))
        .into_permit()
        .unwrap()
        .detach();
    drop(dropped);
    let outcomes = events_of(&sink, "outcome");
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0]["gen_ai.tool.call.id"], "c-1");
    assert_eq!(outcomes[0]["tollgate.policy.version"], v1.to_string());
    assert_eq!(outcomes[0]["tollgate.outcome"]["status"], "success");
    assert_eq!(outcomes[1]["tollgate.outcome"]["status"], "abandoned");
}

/// Builder setters never fail; `build` reports the first setting that cannot work, by field.
#[test]
fn builder_errors_are_deferred_to_build_and_name_the_field() {
    use tollgate::breaker::{BreakerConfig, BreakerKey, RateLimit, RateLimits, Window};
    let bad_breaker = Guard::builder(boundary(100.0))
        .breakers(
            BreakerConfig {
                window: Window::Count(0),
                ..BreakerConfig::default()
            },
            BreakerKey::Tool,
            16,
        )
        .audit(Arc::new(MemorySink::new()))
        .build();
    assert!(
        matches!(&bad_breaker, Err(GuardError::Config { field, .. }) if field == "window"),
        "{bad_breaker:?}"
    );
    let bad_rate = Guard::builder(boundary(100.0))
        .rate_limits(RateLimits {
            per_agent: Some(RateLimit::new(
                std::num::NonZeroU32::new(1).unwrap(),
                Duration::ZERO,
            )),
            ..RateLimits::default()
        })
        .build();
    assert!(
        matches!(&bad_rate, Err(GuardError::Config { field, .. }) if field == "rate_limits.per_agent"),
        "{bad_rate:?}"
    );
}
