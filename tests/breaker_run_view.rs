//! A run finds its breakers through its view of the policy (by tool index, kept between calls)
//! and the breaker stage is decided after the boundary. These tests attack what that could get
//! wrong: a run keeping a breaker that was evicted and replaced (a tripped breaker would not
//! stop it), an open breaker no longer taking precedence over a boundary denial, and a
//! half-open probe slot leaking when the boundary refuses the probe.

use std::sync::Arc;
use std::time::Duration;

use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::breaker::{BreakerConfig, BreakerKey, State, Window};
use tollgate::clock::ManualClock;
use tollgate::{DenyCode, Guard, Outcome, Run, RunContext, ToolCall, Verdict};

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

/// Opens on the first failure; one probe after 30 s.
fn cfg() -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(10),
        minimum_calls: 1,
        failure_rate: 50.0,
        wait_in_open: Duration::from_secs(30),
        max_wait_in_open: Duration::from_secs(30),
        half_open_calls: 1,
        ..BreakerConfig::default()
    }
}

fn guard(clock: Arc<ManualClock>, capacity: usize) -> Guard {
    Guard::builder(boundary())
        .clock(clock)
        .breakers(cfg(), BreakerKey::Tool, capacity)
        .build()
        .unwrap()
}

/// Checks `call` and completes it with `outcome` if allowed; returns the denial code, if any.
fn call(guard: &Guard, run: &Run, call: &ToolCall<'_>, outcome: Outcome) -> Option<DenyCode> {
    match guard.check(run, call) {
        Verdict::Allow(p) => {
            p.complete(outcome).unwrap();
            None
        }
        other => Some(other.deny_code().expect("a denial")),
    }
}

/// Room for one breaker: `fetch`'s breaker is evicted (it is closed) by `ping`'s, then a new
/// `fetch` breaker is created and tripped through another run. The first run, which had found
/// the evicted breaker before, must be stopped by the new, open one.
#[test]
fn a_run_does_not_keep_an_evicted_breaker_past_its_tripped_replacement() {
    let clock = Arc::new(ManualClock::new());
    let guard = guard(clock, 1);
    let fetch = ToolCall::new("fetch", r#"{"id": 1}"#);
    let ping = ToolCall::without_args("ping");
    let first = guard.start_run(RunContext::new("a", "r")).unwrap();
    // The first completion creates `fetch`'s breaker; the second check finds it and keeps it.
    assert_eq!(call(&guard, &first, &fetch, Outcome::success()), None);
    assert_eq!(call(&guard, &first, &fetch, Outcome::success()), None);
    let other = guard.start_run(RunContext::new("b", "r")).unwrap();
    // `ping`'s breaker evicts `fetch`'s; a failing `fetch` then creates and trips a new one.
    assert_eq!(call(&guard, &other, &ping, Outcome::success()), None);
    assert_eq!(call(&guard, &other, &fetch, Outcome::error("503")), None);
    let kb = guard.breakers().unwrap();
    assert_eq!(kb.get("", "fetch").unwrap().breaker.state(), State::Open);
    assert_eq!(
        call(&guard, &first, &fetch, Outcome::success()),
        Some(DenyCode::CircuitOpen),
        "the run must see the breaker now in force for `fetch`"
    );
}

#[test]
fn an_open_breaker_still_takes_precedence_over_a_boundary_denial() {
    let clock = Arc::new(ManualClock::new());
    let guard = guard(clock, 16);
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    let fetch = ToolCall::new("fetch", r#"{"id": 1}"#);
    assert_eq!(call(&guard, &run, &fetch, Outcome::error("503")), None);
    // Arguments the boundary refuses: the open breaker answers first, as it always did.
    let bad = ToolCall::new("fetch", r#"{"id": -1}"#);
    assert_eq!(
        call(&guard, &run, &bad, Outcome::success()),
        Some(DenyCode::CircuitOpen)
    );
    // A closed breaker leaves the boundary's denial.
    let other = guard.start_run(RunContext::new("b", "r")).unwrap();
    assert_eq!(
        call(
            &guard,
            &other,
            &ToolCall::without_args("ping"),
            Outcome::success()
        ),
        None
    );
    let refused = call(
        &guard,
        &other,
        &ToolCall::new("ping", r#"{"x": 1}"#),
        Outcome::success(),
    );
    assert!(
        refused.is_some() && refused != Some(DenyCode::CircuitOpen),
        "{refused:?}"
    );
}

/// In half-open, a call the boundary refuses must not use up the one probe: the next valid
/// call is the probe.
#[test]
fn a_boundary_denial_in_half_open_does_not_use_up_the_probe() {
    let clock = Arc::new(ManualClock::new());
    let guard = guard(clock.clone(), 16);
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    let fetch = ToolCall::new("fetch", r#"{"id": 1}"#);
    assert_eq!(call(&guard, &run, &fetch, Outcome::error("503")), None);
    clock.advance(Duration::from_secs(30));
    let bad = ToolCall::new("fetch", r#"{"id": -1}"#);
    for _ in 0..3 {
        let code = call(&guard, &run, &bad, Outcome::success());
        assert_ne!(code, None);
        assert_ne!(code, Some(DenyCode::CircuitOpen));
    }
    assert_eq!(call(&guard, &run, &fetch, Outcome::success()), None);
    let kb = guard.breakers().unwrap();
    assert_eq!(kb.get("", "fetch").unwrap().breaker.state(), State::Closed);
}
