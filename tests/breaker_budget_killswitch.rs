//! The breaker, budget and kill-switch stages of the guard pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::breaker::{BreakerConfig, BreakerKey, State, Window};
use tollgate::clock::ManualClock;
use tollgate::{AgentId, DenyCode, Guard, Outcome, RunBudget, RunContext, ToolCall, Verdict};

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "fetch",
            ToolSpec::read().arg("id", Arg::integer().required().min(0.0)),
        )
        .tool("ping", ToolSpec::read())
        .role("r", RoleSpec::new().tools(["fetch", "ping"]))
        .build()
        .unwrap()
}

fn breaker_cfg() -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(10),
        minimum_calls: 5,
        failure_rate: 60.0,
        wait_in_open: Duration::from_secs(30),
        max_wait_in_open: Duration::from_secs(30),
        half_open_calls: 1,
        ..BreakerConfig::default()
    }
}

fn guard_with(clock: Arc<ManualClock>, sink: Arc<MemorySink>) -> Guard {
    Guard::builder(boundary())
        .clock(clock)
        .audit(sink)
        .breakers(breaker_cfg(), BreakerKey::AgentTool, 64)
        .build()
        .unwrap()
}

#[test]
fn a_looping_agent_with_a_failing_tool_is_stopped_by_the_breaker() {
    let clock = Arc::new(ManualClock::new());
    let sink = Arc::new(MemorySink::new());
    let guard = guard_with(clock.clone(), sink.clone());
    let run = guard.start_run(RunContext::new("looper", "r")).unwrap();
    let call = ToolCall::new("fetch", r#"{"id": 7}"#);
    let mut allowed = 0;
    let mut first_denial = None;
    for i in 0..50 {
        match guard.check(&run, &call) {
            Verdict::Allow(p) => {
                allowed += 1;
                p.complete(Outcome::error("upstream 503")).unwrap();
            }
            Verdict::Deny(d) => {
                assert_eq!(d.code(), DenyCode::CircuitOpen);
                first_denial.get_or_insert(i);
            }
            Verdict::Escalate(_) => unreachable!(),
        }
    }
    assert_eq!(allowed, 5, "minimum_calls failures open the breaker");
    assert_eq!(first_denial, Some(5));
    let trips: Vec<_> = sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "breaker_transition")
        .collect();
    assert_eq!(trips.len(), 1);
    assert_eq!(trips[0]["tollgate.breaker.to"], "open");
    assert_eq!(trips[0]["tollgate.breaker.failure_rate"], 100.0);
    assert_eq!(trips[0]["gen_ai.tool.name"], "fetch");
    // the audit shows why each later call was refused
    let denied = sink
        .events()
        .into_iter()
        .filter(|e| e["tollgate.deny.code"] == "circuit_open")
        .count();
    assert_eq!(denied, 45);
    // other tools and other agents are unaffected (keyed per agent x tool)
    assert!(
        guard
            .check(&run, &ToolCall::without_args("ping"))
            .is_allowed()
    );
    let other = guard
        .start_run(RunContext::new("someone-else", "r"))
        .unwrap();
    assert!(guard.check(&other, &call).is_allowed());
    // after the wait, one probe; its success closes the breaker
    clock.advance(Duration::from_secs(30));
    let Verdict::Allow(probe) = guard.check(&run, &call) else {
        panic!("probe")
    };
    assert_eq!(
        guard.check(&run, &call).deny_code(),
        Some(DenyCode::CircuitOpen),
        "only one probe"
    );
    probe.complete(Outcome::success()).unwrap();
    let k = guard.breakers().unwrap().get("looper", "fetch").unwrap();
    assert_eq!(k.breaker.state(), State::Closed);
}

#[test]
fn unknown_tool_names_never_create_breakers() {
    let guard = guard_with(Arc::new(ManualClock::new()), Arc::new(MemorySink::new()));
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    for i in 0..500 {
        let name = format!("made_up_{i}");
        assert_eq!(
            guard
                .check(&run, &ToolCall::without_args(&name))
                .deny_code(),
            Some(DenyCode::UnknownTool)
        );
    }
    assert_eq!(guard.breakers().unwrap().len(), 0);
}

#[test]
fn a_probe_denied_by_a_later_stage_frees_its_slot() {
    let clock = Arc::new(ManualClock::new());
    let guard = guard_with(clock.clone(), Arc::new(MemorySink::new()));
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    for _ in 0..5 {
        if let Verdict::Allow(p) = guard.check(&run, &ToolCall::new("fetch", r#"{"id":1}"#)) {
            p.complete(Outcome::error("x")).unwrap();
        }
    }
    clock.advance(Duration::from_secs(30));
    // the probe slot is taken by a call the boundary then denies (id below its minimum)...
    assert_eq!(
        guard
            .check(&run, &ToolCall::new("fetch", r#"{"id":-1}"#))
            .deny_code(),
        Some(DenyCode::ArgumentOutOfRange)
    );
    // ...and given back, so a valid probe still gets through
    assert!(
        guard
            .check(&run, &ToolCall::new("fetch", r#"{"id":1}"#))
            .is_allowed()
    );
}

#[test]
fn call_budget_is_exact_under_concurrency() {
    let guard = Guard::builder(boundary())
        .run_budget(RunBudget {
            max_calls: Some(100),
            max_duration: None,
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    let allowed = AtomicUsize::new(0);
    let denied = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    match guard.check(&run, &ToolCall::without_args("ping")) {
                        Verdict::Allow(p) => {
                            allowed.fetch_add(1, Ordering::SeqCst);
                            p.complete(Outcome::success()).unwrap();
                        }
                        Verdict::Deny(d) => {
                            assert_eq!(d.code(), DenyCode::BudgetExhausted);
                            denied.fetch_add(1, Ordering::SeqCst);
                        }
                        Verdict::Escalate(_) => unreachable!(),
                    }
                }
            });
        }
    });
    assert_eq!(allowed.load(Ordering::SeqCst), 100);
    assert_eq!(denied.load(Ordering::SeqCst), 300);
}

#[test]
fn wall_time_budget_ends_a_run() {
    let clock = Arc::new(ManualClock::new());
    let guard = Guard::builder(boundary())
        .clock(clock.clone())
        .run_budget(RunBudget {
            max_calls: None,
            max_duration: Some(Duration::from_secs(60)),
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    clock.advance(Duration::from_secs(59));
    assert!(
        guard
            .check(&run, &ToolCall::without_args("ping"))
            .is_allowed()
    );
    clock.advance(Duration::from_secs(1));
    let v = guard.check(&run, &ToolCall::without_args("ping"));
    assert_eq!(v.deny_code(), Some(DenyCode::BudgetExhausted));
    assert_eq!(
        v.denial().unwrap().rule().as_str(),
        "guard.budget.max_duration"
    );
    let budget: RunBudget =
        serde_json::from_str(r#"{"max_calls": 10, "max_duration": "1.5s"}"#).unwrap();
    assert_eq!(budget.max_duration, Some(Duration::from_millis(1500)));
    assert!(serde_json::from_str::<RunBudget>(r#"{"max_duration": "-1s"}"#).is_err());
    // A bare number is no longer guessed to be seconds.
    assert!(serde_json::from_str::<RunBudget>(r#"{"max_duration": 1.5}"#).is_err());
    assert!(serde_json::from_str::<RunBudget>(r#"{"max_cals": 1}"#).is_err());
}

#[test]
fn kill_switch_scopes_and_resume_are_audited() {
    let sink = Arc::new(MemorySink::new());
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let a = guard.start_run(RunContext::new("agent-a", "r")).unwrap();
    let b = guard.start_run(RunContext::new("agent-b", "r")).unwrap();
    let ping = ToolCall::without_args("ping");
    guard.suspend_run(&a, "ops:alice").unwrap();
    assert_eq!(
        guard.check(&a, &ping).deny_code(),
        Some(DenyCode::Suspended)
    );
    assert!(guard.check(&b, &ping).is_allowed());
    guard.resume_run(&a, "ops:alice").unwrap();
    guard
        .suspend_agent(&AgentId::new("agent-b"), "ops:bob")
        .unwrap();
    assert!(guard.check(&a, &ping).is_allowed());
    assert_eq!(
        guard.check(&b, &ping).deny_code(),
        Some(DenyCode::Suspended)
    );
    let b2 = guard.start_run(RunContext::new("agent-b", "r")).unwrap();
    assert_eq!(
        guard.check(&b2, &ping).deny_code(),
        Some(DenyCode::Suspended),
        "future runs too"
    );
    guard
        .resume_agent(&AgentId::new("agent-b"), "ops:bob")
        .unwrap();
    guard.suspend_all("ops:carol").unwrap();
    assert_eq!(
        guard.check(&a, &ping).deny_code(),
        Some(DenyCode::Suspended)
    );
    guard.resume_all("ops:carol").unwrap();
    assert!(guard.check(&b, &ping).is_allowed());
    let kills: Vec<(String, String, String)> = sink
        .events()
        .into_iter()
        .filter(|e| e["event"] == "kill_switch")
        .map(|e| {
            (
                e["tollgate.kill.action"].as_str().unwrap().to_owned(),
                e["tollgate.kill.scope"].as_str().unwrap().to_owned(),
                e["tollgate.kill.by"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(kills.len(), 6);
    assert_eq!(
        kills[0],
        ("suspend".into(), "run".into(), "ops:alice".into())
    );
    assert_eq!(
        kills[5],
        ("resume".into(), "global".into(), "ops:carol".into())
    );
}

#[test]
fn nothing_is_allowed_after_suspend_returns_and_in_flight_calls_see_the_cancellation() {
    let guard = Guard::builder(boundary()).build().unwrap();
    let returned = AtomicBool::new(false);
    let suspended_at = std::sync::Mutex::new(None::<Instant>);
    let last_in_flight_end = AtomicU64::new(0);
    let allowed_after = AtomicUsize::new(0);
    let allowed_before = AtomicUsize::new(0);
    let origin = Instant::now();
    std::thread::scope(|s| {
        for t in 0..4 {
            let guard = &guard;
            let returned = &returned;
            let allowed_after = &allowed_after;
            let allowed_before = &allowed_before;
            let last_in_flight_end = &last_in_flight_end;
            s.spawn(move || {
                let run = guard
                    .start_run(RunContext::new(format!("agent-{t}"), "r"))
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline {
                    let after = returned.load(Ordering::SeqCst);
                    match guard.check(&run, &ToolCall::without_args("ping")) {
                        Verdict::Allow(p) => {
                            if after {
                                allowed_after.fetch_add(1, Ordering::SeqCst);
                            } else {
                                allowed_before.fetch_add(1, Ordering::SeqCst);
                            }
                            // a "tool" that works in 1 ms steps and stops when cancelled
                            let cancel = p.cancellation();
                            for _ in 0..20 {
                                if cancel.is_cancelled() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            p.complete(Outcome::success()).unwrap();
                            let end = origin.elapsed().as_nanos() as u64;
                            last_in_flight_end.fetch_max(end, Ordering::SeqCst);
                        }
                        Verdict::Deny(d) => {
                            assert_eq!(d.code(), DenyCode::Suspended);
                            break;
                        }
                        Verdict::Escalate(_) => unreachable!(),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        guard.suspend_all("test").unwrap();
        *suspended_at.lock().unwrap() = Some(Instant::now());
        returned.store(true, Ordering::SeqCst);
    });
    assert!(
        allowed_before.load(Ordering::SeqCst) > 0,
        "the threads were working"
    );
    assert_eq!(
        allowed_after.load(Ordering::SeqCst),
        0,
        "no call allowed after suspend returned"
    );
    let suspended = suspended_at.lock().unwrap().unwrap().duration_since(origin);
    let drained =
        Duration::from_nanos(last_in_flight_end.load(Ordering::SeqCst)).saturating_sub(suspended);
    println!("suspend -> last in-flight call ended: {drained:?}");
    // tools poll in 1 ms steps; allow generous scheduling slack on a loaded 2-core machine
    assert!(drained < Duration::from_secs(1), "{drained:?}");
}

#[test]
fn loop_detection_stops_identical_repeats_within_the_window() {
    let clock = Arc::new(ManualClock::new());
    let sink = Arc::new(MemorySink::new());
    let guard = Guard::builder(boundary())
        .clock(clock.clone())
        .audit(sink.clone())
        .loop_detection(tollgate::LoopDetection {
            max_repeats: 3,
            window: Duration::from_secs(60),
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    // the same call, spelled with different whitespace, is the same call
    for args in [r#"{"id": 7}"#, r#"{"id":7}"#, "{ \"id\" : 7 }"] {
        assert!(
            guard
                .check(&run, &ToolCall::new("fetch", args))
                .is_allowed()
        );
    }
    let v = guard.check(&run, &ToolCall::new("fetch", r#"{"id":7}"#));
    assert_eq!(v.deny_code(), Some(DenyCode::LoopDetected));
    assert!(
        v.denial().unwrap().reason().contains("3 times"),
        "{}",
        v.denial().unwrap().reason()
    );
    // a different argument, or whitespace inside a string, is a different call
    assert!(
        guard
            .check(&run, &ToolCall::new("fetch", r#"{"id":8}"#))
            .is_allowed()
    );
    // parsed values are fingerprinted too
    let v7 = serde_json::json!({"id": 7});
    assert_eq!(
        guard.check(&run, &ToolCall::new("fetch", &v7)).deny_code(),
        Some(DenyCode::LoopDetected)
    );
    // once the window has passed, the call is allowed again
    clock.advance(Duration::from_secs(60));
    assert!(
        guard
            .check(&run, &ToolCall::new("fetch", r#"{"id":7}"#))
            .is_allowed()
    );
    // each run has its own memory
    let fresh = guard.start_run(RunContext::new("a", "r")).unwrap();
    assert!(
        guard
            .check(&fresh, &ToolCall::new("fetch", r#"{"id":8}"#))
            .is_allowed()
    );
    let denials = sink
        .events()
        .into_iter()
        .filter(|e| e["tollgate.deny.code"] == "loop_detected")
        .count();
    assert_eq!(denials, 2);
    let cfg: tollgate::LoopDetection =
        serde_json::from_str(r#"{"max_repeats": 5, "window": "30s"}"#).unwrap();
    assert_eq!(cfg.window, Duration::from_secs(30));
    assert!(
        serde_json::from_str::<tollgate::LoopDetection>(r#"{"max_repeats": 5, "window": 30}"#)
            .is_err()
    );
}

#[test]
fn alerts_carry_the_figures_and_match_the_audit_trail() {
    use tollgate::breaker::{AlertKind, ChannelAlerts};
    let (alerts, rx) = ChannelAlerts::new(64);
    let sink = Arc::new(MemorySink::new());
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .alerts(Arc::new(alerts))
        .breakers(breaker_cfg(), BreakerKey::Tool, 16)
        .loop_detection(tollgate::LoopDetection {
            max_repeats: 2,
            window: Duration::from_secs(60),
        })
        .run_budget(RunBudget {
            max_calls: Some(8),
            max_duration: None,
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    for id in 0..5 {
        let args = format!(r#"{{"id": {id}}}"#);
        if let Verdict::Allow(p) = guard.check(&run, &ToolCall::new("fetch", args.as_str())) {
            p.complete(Outcome::error("boom")).unwrap();
        }
    }
    for _ in 0..2 {
        if let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("ping")) {
            p.complete(Outcome::success()).unwrap();
        }
    }
    // no arguments and `{ }` are the same call
    let over = guard.check(&run, &ToolCall::new("ping", "{ }"));
    assert_eq!(over.deny_code(), Some(DenyCode::LoopDetected));
    drop(over);
    guard.suspend_agent(&AgentId::new("bot"), "ops").unwrap();
    let got: Vec<_> = rx.try_iter().collect();
    let kinds: Vec<AlertKind> = got.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [
            AlertKind::BreakerOpened,
            AlertKind::LoopDetected,
            AlertKind::Suspended
        ]
    );
    assert!(
        got[0].detail.contains("failure rate 100.0 %"),
        "{}",
        got[0].detail
    );
    assert_eq!(got[0].tool.as_deref(), Some("fetch"));
    assert_eq!(got[0].agent.as_deref(), Some("bot"));
    assert!(got[1].detail.contains("2 times"), "{}", got[1].detail);
    // budget exhaustion, on a guard without loop detection
    let (alerts, rx) = ChannelAlerts::new(8);
    let guard = Guard::builder(boundary())
        .alerts(Arc::new(alerts))
        .run_budget(RunBudget {
            max_calls: Some(3),
            max_duration: None,
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let allowed = (0..5)
        .filter(|_| {
            guard
                .check(&run, &ToolCall::without_args("ping"))
                .is_allowed()
        })
        .count();
    assert_eq!(allowed, 3);
    let budget: Vec<_> = rx.try_iter().collect();
    assert_eq!(budget.len(), 2);
    assert!(budget.iter().all(|a| a.kind == AlertKind::BudgetExhausted));
    assert!(
        budget[0].detail.contains("budget of 3 tool calls"),
        "{}",
        budget[0].detail
    );
}

#[test]
fn rate_limits_per_agent_and_per_tool_run_on_the_guards_clock() {
    use std::collections::BTreeMap;
    use std::num::NonZeroU32;
    use tollgate::breaker::{RateLimit, RateLimits};
    let clock = Arc::new(ManualClock::new());
    let guard = Guard::builder(boundary())
        .clock(clock.clone())
        .rate_limits(RateLimits {
            per_agent: Some(RateLimit::new(
                NonZeroU32::new(10).unwrap(),
                Duration::from_secs(1),
            )),
            per_tool: BTreeMap::from([(
                "fetch".to_owned(),
                RateLimit::new(NonZeroU32::new(2).unwrap(), Duration::from_secs(1)),
            )]),
            ..RateLimits::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    let fetch = ToolCall::new("fetch", r#"{"id":1}"#);
    assert!(guard.check(&run, &fetch).is_allowed());
    assert!(guard.check(&run, &fetch).is_allowed());
    let v = guard.check(&run, &fetch);
    assert_eq!(v.deny_code(), Some(DenyCode::RateLimited));
    assert!(
        v.denial().unwrap().reason().contains("tool rate limit"),
        "{}",
        v.denial().unwrap().reason()
    );
    drop(v);
    // another tool still has the agent's quota (3 of 10 used)
    let ping = ToolCall::without_args("ping");
    let allowed = (0..10)
        .filter(|_| guard.check(&run, &ping).is_allowed())
        .count();
    assert_eq!(allowed, 7, "the agent bucket holds 10");
    // time refills both
    clock.advance(Duration::from_secs(1));
    assert!(guard.check(&run, &fetch).is_allowed());
    // an invented tool name never reaches the rate-limit stage
    assert_eq!(
        guard
            .check(&run, &ToolCall::without_args("fetch2"))
            .deny_code(),
        Some(DenyCode::UnknownTool)
    );
}

#[test]
fn a_run_far_above_its_task_baseline_is_stopped_and_unexpected_tools_are_flagged() {
    use tollgate::breaker::{
        AlertKind, Baseline, BaselineConfig, BaselineRule, ChannelAlerts, UnexpectedTool,
    };
    let mut baseline = Baseline::new(BaselineConfig {
        rule: BaselineRule::Median { factor: 3.0 },
        min_runs: 5,
        max_runs: 100,
        unexpected_tool: UnexpectedTool::Deny,
    })
    .unwrap();
    // recorded history: intake runs make 3 to 5 calls, all of them `fetch`
    for calls in [3, 4, 4, 5, 4, 3] {
        baseline.observe("intake", calls, ["fetch"]);
    }
    let (alerts, rx) = ChannelAlerts::new(16);
    let guard = Guard::builder(boundary())
        .alerts(Arc::new(alerts))
        .baseline(baseline, true)
        .build()
        .unwrap();
    let run = guard
        .start_run(RunContext::new("bot", "r").for_task("intake"))
        .unwrap();
    let mut allowed = 0;
    let mut first_denial = None;
    for i in 0..40 {
        let args = format!(r#"{{"id": {i}}}"#);
        match guard.check(&run, &ToolCall::new("fetch", args.as_str())) {
            Verdict::Allow(p) => {
                allowed += 1;
                p.complete(Outcome::success()).unwrap();
            }
            Verdict::Deny(d) => {
                assert_eq!(d.code(), DenyCode::AnomalyDetected);
                first_denial.get_or_insert(d.reason().to_owned());
            }
            Verdict::Escalate(_) => unreachable!(),
        }
    }
    assert_eq!(allowed, 12, "3 x the median (4)");
    assert!(first_denial.unwrap().contains("normally stay within 12"));
    // `ping` was never used by intake runs: denied (policy Deny) and alerted
    let run2 = guard
        .start_run(RunContext::new("bot", "r").for_task("intake"))
        .unwrap();
    assert_eq!(
        guard
            .check(&run2, &ToolCall::without_args("ping"))
            .deny_code(),
        Some(DenyCode::AnomalyDetected)
    );
    // runs without a task type, or of a task type without history, are not judged
    let free = guard.start_run(RunContext::new("bot", "r")).unwrap();
    assert!(
        guard
            .check(&free, &ToolCall::without_args("ping"))
            .is_allowed()
    );
    let kinds: Vec<AlertKind> = rx.try_iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        [AlertKind::AnomalyDetected, AlertKind::UnexpectedTool],
        "one alert per run and kind"
    );
}

#[test]
fn the_baseline_learns_online_from_finished_runs() {
    use tollgate::breaker::{Baseline, BaselineConfig, BaselineRule, UnexpectedTool};
    let baseline = Baseline::new(BaselineConfig {
        rule: BaselineRule::Percentile {
            percentile: 100.0,
            factor: 2.0,
        },
        min_runs: 3,
        max_runs: 10,
        unexpected_tool: UnexpectedTool::Alert,
    })
    .unwrap();
    let guard = Guard::builder(boundary())
        .baseline(baseline, true)
        .build()
        .unwrap();
    for _ in 0..3 {
        let run = guard
            .start_run(RunContext::new("bot", "r").for_task("report"))
            .unwrap();
        for i in 0..5 {
            let args = format!(r#"{{"id": {i}}}"#);
            assert!(
                guard
                    .check(&run, &ToolCall::new("fetch", args.as_str()))
                    .is_allowed()
            );
        }
        run.finish().unwrap();
    }
    // learned: report runs make 5 calls; the limit is 2 x 5 = 10
    let run = guard
        .start_run(RunContext::new("bot", "r").for_task("report"))
        .unwrap();
    let allowed = (0..20)
        .filter(|i| {
            let args = format!(r#"{{"id": {i}}}"#);
            guard
                .check(&run, &ToolCall::new("fetch", args.as_str()))
                .is_allowed()
        })
        .count();
    assert_eq!(allowed, 10);
}

#[test]
fn token_and_cost_budgets_reserve_then_settle_and_never_overshoot_under_concurrency() {
    let guard = Guard::builder(boundary())
        .run_budget(RunBudget {
            max_tokens: Some(10_000),
            tokens_per_call: 500,
            max_cost_micros: Some(1_000_000),
            cost_micros_per_call: 10_000,
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    // 8 threads hold their permits (reservations outstanding) while racing for the budget:
    // at 500 tokens each, exactly 20 fit in 10 000.
    let held = std::sync::Mutex::new(Vec::new());
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..10 {
                    if let Verdict::Allow(p) = guard.check(&run, &ToolCall::without_args("ping")) {
                        held.lock().unwrap().push(p);
                    }
                }
            });
        }
    });
    let permits = held.into_inner().unwrap();
    assert_eq!(permits.len(), 20, "10 000 tokens / 500 reserved per call");
    // settle: each call really used 100 tokens, so 8 000 come back
    for p in permits {
        p.complete(
            Outcome::success()
                .with_tokens(60, 40)
                .with_cost_micros(1_000),
        )
        .unwrap();
    }
    let more = (0..100)
        .filter_map(
            |_| match guard.check(&run, &ToolCall::without_args("ping")) {
                Verdict::Allow(p) => Some(p),
                _ => None,
            },
        )
        .collect::<Vec<_>>();
    assert_eq!(more.len(), 16, "(10 000 - 20 x 100) / 500");
    drop(more); // abandoned calls keep their whole reservation
    let v = guard.check(&run, &ToolCall::without_args("ping"));
    assert_eq!(v.deny_code(), Some(DenyCode::BudgetExhausted));
    assert_eq!(
        v.denial().unwrap().rule().as_str(),
        "guard.budget.max_tokens"
    );
    drop(v);
    // a declared estimate is reserved instead of the default
    let cost_guard = Guard::builder(boundary())
        .run_budget(RunBudget {
            max_cost_micros: Some(50_000),
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = cost_guard.start_run(RunContext::new("a", "r")).unwrap();
    let big = ToolCall::without_args("ping").with_cost_estimate_micros(40_000);
    let p = match cost_guard.check(&run, &big) {
        Verdict::Allow(p) => p,
        other => panic!("{other:?}"),
    };
    let second = cost_guard.check(&run, &big);
    assert_eq!(
        second.denial().unwrap().rule().as_str(),
        "guard.budget.max_cost_micros"
    );
    drop(second);
    // the tool reports it cost only 5 000: 45 000 are free again
    p.complete(Outcome::success().with_cost_micros(5_000))
        .unwrap();
    assert!(cost_guard.check(&run, &big).is_allowed());
}

#[test]
fn a_failed_reservation_releases_what_it_took() {
    // calls succeed, tokens fail: the call unit must come back
    let guard = Guard::builder(boundary())
        .run_budget(RunBudget {
            max_calls: Some(2),
            max_tokens: Some(100),
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    let huge = ToolCall::without_args("ping").with_token_estimate(1_000);
    for _ in 0..5 {
        assert_eq!(
            guard.check(&run, &huge).deny_code(),
            Some(DenyCode::BudgetExhausted)
        );
    }
    let small = ToolCall::without_args("ping").with_token_estimate(10);
    assert!(guard.check(&run, &small).is_allowed());
    assert!(guard.check(&run, &small).is_allowed());
    assert_eq!(
        guard.check(&run, &small).deny_code(),
        Some(DenyCode::BudgetExhausted)
    );
}

/// Finding: an outcome reporting an absurd token count wrapped the run's counter round to a
/// small number, so the budget reopened. Settling saturates: the budget stays spent.
#[test]
fn absurd_reported_usage_exhausts_a_budget_instead_of_wrapping_it() {
    let guard = Guard::builder(boundary())
        .run_budget(RunBudget {
            max_tokens: Some(100),
            ..Default::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    let call = ToolCall::without_args("ping").with_token_estimate(10);
    let permit = |what| match guard.check(&run, &call) {
        Verdict::Allow(p) => p,
        other => panic!("{what}: {:?}", other.deny_code()),
    };
    // Two calls in flight (20 reserved); one reports u64::MAX tokens: 20 + (MAX - 10) would
    // wrap to 9 and reopen the budget.
    let (first, second) = (permit("first"), permit("second"));
    first
        .complete(Outcome::success().with_tokens(u64::MAX, 0))
        .unwrap();
    second
        .complete(Outcome::success().with_tokens(10, 0))
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            guard.check(&run, &call).deny_code(),
            Some(DenyCode::BudgetExhausted)
        );
    }
}

/// The same for a budget leased from the fleet (files backend): the host's local balance
/// saturates instead of wrapping round into a credit.
#[test]
fn absurd_reported_usage_exhausts_a_leased_budget_instead_of_wrapping_it() {
    use tollgate::backend::lease::{
        BudgetSpec, FileLeases, LeasedBudgets, LeasesSection, Measure, Per,
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(tollgate::clock::SystemClock::new());
    let section = LeasesSection {
        budgets: vec![BudgetSpec {
            name: "tokens".into(),
            per: Per::Fleet,
            measure: Measure::Tokens,
            limit: 100,
            window: Duration::from_secs(10_000 * 86_400),
            chunk: Some(100),
        }],
        ..LeasesSection::default()
    };
    let source =
        FileLeases::open(dir.path(), "host-1", section.lease_timeout, clock.clone()).unwrap();
    let leases = Arc::new(LeasedBudgets::start(&section, Arc::new(source), clock).unwrap());
    let guard = Guard::builder(boundary())
        .shared_budget(leases.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    let call = ToolCall::without_args("ping").with_token_estimate(10);
    let permit = |what| match guard.check(&run, &call) {
        Verdict::Allow(p) => p,
        other => panic!("{what}: {:?}", other.deny_code()),
    };
    // Three calls in flight; two report absurd usage: i64::MAX twice would wrap the balance.
    let (a, b, c) = (permit("a"), permit("b"), permit("c"));
    for p in [a, b] {
        p.complete(Outcome::success().with_tokens(u64::MAX, 0))
            .unwrap();
    }
    c.complete(Outcome::success().with_tokens(10, 0)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            guard.check(&run, &call).deny_code(),
            Some(DenyCode::BudgetExhausted)
        );
    }
    leases.shutdown().unwrap();
}

/// Finding: a permit obtained before a suspension still minted and exposed credentials after
/// it. Both are now refused while the run, its agent or the guard is suspended, and each refusal
/// is recorded; after the switch is released the same permit works again.
#[test]
fn permit_issued_before_suspension_cannot_mint_or_expose_credentials() {
    use secrecy::SecretString;
    use tollgate::credential::{
        CredentialBroker, CredentialError, CredentialGrant, Operation, StaticSecretProvider,
    };
    let broker = CredentialBroker::builder()
        .provider(
            "vault",
            StaticSecretProvider::new(SecretString::from("s3cr3t-value")),
        )
        .grant(
            "r",
            CredentialGrant::new(
                "vault",
                ["ping"],
                [Operation::Read],
                "*",
                Duration::from_secs(60),
            ),
        )
        .build()
        .unwrap();
    let sink = Arc::new(MemorySink::new());
    let guard = Guard::builder(boundary())
        .clock(Arc::new(ManualClock::new()))
        .audit(sink.clone())
        .credentials(broker)
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a1", "r")).unwrap();
    let call = ToolCall::new("ping", "{}");
    type Switch = fn(&Guard, &tollgate::Run) -> (&'static str, Box<dyn Fn(&Guard, &tollgate::Run)>);
    let switches: [Switch; 3] = [
        |g, r| {
            g.suspend_run(r, "ops").unwrap();
            ("run", Box::new(|g, r| g.resume_run(r, "ops").unwrap()))
        },
        |g, _| {
            g.suspend_agent(&AgentId::new("a1"), "ops").unwrap();
            (
                "agent",
                Box::new(|g, _| g.resume_agent(&AgentId::new("a1"), "ops").unwrap()),
            )
        },
        |g, _| {
            g.suspend_all("ops").unwrap();
            ("global", Box::new(|g, _| g.resume_all("ops").unwrap()))
        },
    ];
    for switch in switches {
        let permit = guard.check(&run, &call).into_permit().unwrap();
        let cred = permit.credential("vault", "db/main").unwrap();
        let (name, release) = switch(&guard, &run);
        assert_eq!(
            permit.credential("vault", "db/main").unwrap_err(),
            CredentialError::Suspended(name)
        );
        assert_eq!(
            cred.expose(&permit, "db/main").unwrap_err(),
            CredentialError::Suspended(name)
        );
        release(&guard, &run);
        // The switch revoked the credential; resuming does not bring it back, a new one works.
        assert_eq!(
            cred.expose(&permit, "db/main").unwrap_err(),
            CredentialError::Revoked
        );
        let fresh = permit.credential("vault", "db/main").unwrap();
        assert_eq!(fresh.expose(&permit, "db/main").unwrap(), "s3cr3t-value");
        permit.complete(Outcome::success()).unwrap();
    }
    let refusals = sink
        .events()
        .iter()
        .filter(|e| {
            e["event"] == "credential_refused" && e["tollgate.credential.refusal"] == "suspended"
        })
        .count();
    assert_eq!(refusals, 6, "every refusal is recorded");
}

#[test]
fn lifting_one_set_suspension_keeps_the_other_in_force() {
    // The check reads one "anything suspended by agent or run id" flag before the sets; lifting
    // an agent's suspension must not clear it while a run id is still suspended.
    use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
    let boundary = ActionBoundary::builder()
        .tool("lookup", ToolSpec::read())
        .role("clerk", RoleSpec::new().tools(["lookup"]))
        .build()
        .unwrap();
    let guard = tollgate::Guard::builder(boundary).build().unwrap();
    let run = guard
        .start_run(tollgate::RunContext::new("bot", "clerk"))
        .unwrap();
    let call = tollgate::ToolCall::without_args("lookup");
    let other = tollgate::AgentId::new("someone-else");
    guard.suspend_agent(&other, "ops").unwrap();
    guard.suspend_run_id(run.id(), "ops").unwrap();
    guard.resume_agent(&other, "ops").unwrap();
    assert_eq!(
        guard.check(&run, &call).deny_code(),
        Some(tollgate::DenyCode::Suspended),
        "the run id is still suspended"
    );
    guard.resume_run_id(run.id(), "ops").unwrap();
    assert!(guard.check(&run, &call).is_allowed());
    guard
        .suspend_agent(&tollgate::AgentId::new("bot"), "ops")
        .unwrap();
    assert_eq!(
        guard.check(&run, &call).deny_code(),
        Some(tollgate::DenyCode::Suspended)
    );
}
