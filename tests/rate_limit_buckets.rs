//! The guard takes rate-limit units without looking buckets up by name: a run keeps its agent's
//! bucket, a policy snapshot holds its tools' buckets by tool index. These tests attack what
//! such caching could get wrong: a run started before a reload keeping the old quota, a run
//! keeping an agent bucket that was evicted (a second quota for the agent), a boundary reload
//! renumbering the tools under the table.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::breaker::{RateLimit, RateLimits};
use tollgate::clock::ManualClock;
use tollgate::policy::{Bindings, Policy};
use tollgate::{DenyCode, Guard, Outcome, Run, RunContext, ToolCall, Verdict};

const DOC: &str = r#"
[policy]
name = "rates"
owner = "platform"
purpose = "rate-limit reuse tests"
scope = "tests"
liability_owner = "nobody"
review_cadence = "90d"
data_handling = "none"

[tools.fetch]
effect = "read"

[tools.ping]
effect = "read"

[roles.r]
tools = ["fetch", "ping"]

[rate_limits]
per_agent = { max_calls = AGENT, per = "1m" }
per_tool.fetch = { max_calls = TOOL, per = "1m" }

[audit]
"#;

fn policy(agent: u32, tool: u32) -> Policy {
    Policy::from_toml(
        &DOC.replace("AGENT", &agent.to_string())
            .replace("TOOL", &tool.to_string()),
    )
    .unwrap()
}

fn guard_of(p: &Policy) -> Guard {
    let bindings = Bindings::new()
        .clock(Arc::new(ManualClock::new()))
        .audit(Arc::new(MemorySink::new()));
    Guard::from_policy(p, bindings).unwrap()
}

/// Checks `call` and completes it if allowed; returns the denial code, if any.
fn call(guard: &Guard, run: &Run, tool: &str) -> Option<DenyCode> {
    match guard.check(run, &ToolCall::without_args(tool)) {
        Verdict::Allow(p) => {
            p.complete(Outcome::success()).unwrap();
            None
        }
        other => Some(other.deny_code().expect("a denial")),
    }
}

fn allowed(guard: &Guard, run: &Run, tool: &str, n: usize) -> usize {
    (0..n).filter(|_| call(guard, run, tool).is_none()).count()
}

#[test]
fn a_run_started_before_a_reload_is_held_to_the_tightened_agent_quota() {
    let guard = guard_of(&policy(10, 100));
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    assert_eq!(allowed(&guard, &run, "ping", 2), 2);
    // Tighter agent quota: a new bucket of 1 (quotas differ, nothing carries over). A run that
    // kept its old bucket would still have 8 calls.
    guard.reload(&policy(1, 100), "ops").unwrap();
    assert_eq!(allowed(&guard, &run, "ping", 5), 1);
    assert_eq!(call(&guard, &run, "ping"), Some(DenyCode::RateLimited));
}

#[test]
fn a_run_started_before_a_reload_gets_the_loosened_agent_quota() {
    let guard = guard_of(&policy(2, 100));
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    assert_eq!(allowed(&guard, &run, "ping", 5), 2);
    guard.reload(&policy(5, 100), "ops").unwrap();
    assert_eq!(allowed(&guard, &run, "ping", 10), 5);
}

#[test]
fn a_reload_that_keeps_the_agent_quota_keeps_the_runs_bucket_level() {
    let guard = guard_of(&policy(3, 100));
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    assert_eq!(allowed(&guard, &run, "ping", 3), 3);
    // Only the tool quota changes: the agent's bucket carries over, still empty.
    guard.reload(&policy(3, 50), "ops").unwrap();
    assert_eq!(call(&guard, &run, "ping"), Some(DenyCode::RateLimited));
    // And a run started after the reload shares it.
    let later = guard.start_run(RunContext::new("a", "r")).unwrap();
    assert_eq!(call(&guard, &later, "ping"), Some(DenyCode::RateLimited));
}

#[test]
fn a_reload_that_tightens_a_tool_quota_applies_to_live_runs() {
    let guard = guard_of(&policy(100, 10));
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    assert_eq!(allowed(&guard, &run, "fetch", 2), 2);
    guard.reload(&policy(100, 1), "ops").unwrap();
    assert_eq!(allowed(&guard, &run, "fetch", 5), 1);
}

/// With room for one agent bucket, agent `a`'s bucket is evicted while its first run lives and
/// a second run of `a` gets a fresh one. If the first run kept its evicted bucket, `a` would
/// have two quotas at once: one call through each run within a minute of a quota of 1.
#[test]
fn a_live_run_does_not_keep_its_agents_evicted_bucket_as_a_second_quota() {
    let clock = Arc::new(ManualClock::new());
    let b = ActionBoundary::builder()
        .tool("ping", ToolSpec::read())
        .role("r", RoleSpec::new().tools(["ping"]))
        .build()
        .unwrap();
    let guard = Guard::builder(b)
        .clock(clock)
        .rate_limits(RateLimits {
            per_agent: Some(RateLimit::new(
                NonZeroU32::new(1).unwrap(),
                Duration::from_secs(60),
            )),
            max_agents: Some(1),
            ..RateLimits::default()
        })
        .build()
        .unwrap();
    let first = guard.start_run(RunContext::new("a", "r")).unwrap();
    // `b` evicts `a`, then a second run of `a` evicts `b` and gets a new bucket for `a`.
    let _other = guard.start_run(RunContext::new("b", "r")).unwrap();
    let second = guard.start_run(RunContext::new("a", "r")).unwrap();
    let through_first = call(&guard, &first, "ping");
    let through_second = call(&guard, &second, "ping");
    assert_eq!(
        [through_first, through_second]
            .iter()
            .filter(|d| d.is_none())
            .count(),
        1,
        "agent `a` has one call a minute, whichever run makes it: {through_first:?} {through_second:?}"
    );
}

/// Reloading the boundary alone renumbers the tools (here a new tool sorts before `fetch`); the
/// snapshot's table must still hand `fetch` its own bucket, and the new tool no bucket of
/// another tool.
#[test]
fn a_boundary_reload_that_renumbers_tools_keeps_each_tools_bucket() {
    let boundary = |extra: bool| {
        let mut b = ActionBoundary::builder()
            .tool("fetch", ToolSpec::read())
            .tool("ping", ToolSpec::read());
        let mut tools = vec!["fetch", "ping"];
        if extra {
            b = b.tool("aaa", ToolSpec::read());
            tools.push("aaa");
        }
        b.role("r", RoleSpec::new().tools(tools)).build().unwrap()
    };
    let guard = Guard::builder(boundary(false))
        .clock(Arc::new(ManualClock::new()))
        .rate_limits(RateLimits {
            per_tool: [(
                "fetch".to_owned(),
                RateLimit::new(NonZeroU32::new(2).unwrap(), Duration::from_secs(60)),
            )]
            .into(),
            ..RateLimits::default()
        })
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("a", "r")).unwrap();
    assert_eq!(allowed(&guard, &run, "fetch", 3), 2);
    guard.reload_boundary(boundary(true), "ops").unwrap();
    assert_eq!(call(&guard, &run, "fetch"), Some(DenyCode::RateLimited));
    assert_eq!(allowed(&guard, &run, "aaa", 5), 5, "`aaa` has no quota");
    assert_eq!(allowed(&guard, &run, "ping", 5), 5, "`ping` has no quota");
}
