//! Setups shared by the criterion benches and the instruction-count guard (`icount`): the same
//! boundary, call and guards, so the two measure the same thing.
#![allow(dead_code)]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate::audit::AuditSink;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::breaker::{BreakerConfig, BreakerKey, RateLimit, RateLimits};
use tollgate::{Guard, Outcome, RunBudget, ToolCall, Verdict};

/// A boundary of `n` tools: `n - 2` argument-less reads, `lookup`, and `pay_invoice` with three
/// argument rules (anchored regex, numeric bound, enum); role `clerk` may call all of them.
pub fn boundary(n: usize) -> ActionBoundary {
    let mut b = ActionBoundary::builder();
    let mut names = Vec::new();
    for i in 0..n.saturating_sub(2) {
        let name = format!("tool_{i:04}");
        b = b.tool(name.clone(), ToolSpec::read());
        names.push(name);
    }
    b = b.tool("lookup", ToolSpec::read());
    b = b.tool(
        "pay_invoice",
        ToolSpec::irreversible()
            .arg("invoice", Arg::string().required().pattern("INV-[0-9]{6}"))
            .arg("amount", Arg::number().required().max(10_000.0))
            .arg(
                "currency",
                Arg::string().required().one_of(["USD", "EUR", "GBP"]),
            ),
    );
    names.push("lookup".into());
    names.push("pay_invoice".into());
    b.role("clerk", RoleSpec::new().tools(names))
        .build()
        .unwrap()
}

/// The `pay_invoice` arguments as raw JSON text (what a framework holds).
pub const RAW: &str = r#"{"invoice":"INV-004711","amount":1250.5,"currency":"EUR"}"#;

/// The same arguments, parsed.
pub fn args() -> Value {
    json!({"invoice": "INV-004711", "amount": 1250.5, "currency": "EUR"})
}

/// `check` and, if allowed, complete the permit with a success: what every tool call costs.
pub fn check_and_complete(guard: &Guard, run: &tollgate::Run, call: &ToolCall<'_>) -> bool {
    match guard.check(run, call) {
        Verdict::Allow(p) => p.complete(Outcome::success()).is_ok(),
        Verdict::Escalate(_) | Verdict::Deny(_) => false,
    }
}

/// A rate limit high enough never to run dry.
pub fn generous_rate() -> RateLimit {
    RateLimit {
        max_calls: NonZeroU32::new(1_000_000_000).unwrap(),
        per: Duration::from_secs(1),
        burst: NonZeroU32::new(u32::MAX),
    }
}

/// A guard over `boundary(100)` with every runtime primitive on (a breaker per tool, an agent
/// and a per-tool rate limit, a run budget of calls and time) and `sink` if given. Loop
/// detection is off, as in the peer bench: the bench repeats one identical call, which it would
/// refuse (its cost alone is `breaker/loop_detect`).
pub fn all_primitives(sink: Option<Arc<dyn AuditSink>>) -> Guard {
    let mut b = Guard::builder(boundary(100))
        .breakers(BreakerConfig::default(), BreakerKey::Tool, 1024)
        .rate_limits(RateLimits {
            per_agent: Some(generous_rate()),
            default_per_tool: Some(generous_rate()),
            ..Default::default()
        })
        .run_budget(RunBudget {
            max_calls: Some(u64::MAX),
            max_duration: Some(Duration::from_secs(1 << 40)),
            ..Default::default()
        });
    if let Some(sink) = sink {
        b = b.audit(sink);
    }
    b.build().unwrap()
}
