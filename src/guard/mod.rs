//! `Guard`: the pipeline an agent framework wraps around its tool dispatch.
//!
//! ```text
//! check(run, call):
//!   run belongs to this guard        -> Deny(ForeignRun)
//!   kill switch (global/agent/run)   -> Deny(Suspended)
//!   circuit breaker for the key      -> Deny(CircuitOpen)
//!   ActionBoundary (policy snapshot) -> Deny(unknown tool, not allowed, tier, read-only, args, compartment)
//!   run budgets (calls, wall time)   -> Deny(BudgetExhausted)
//!   audit record of the verdict      -> Deny(AuditFailed) if the sink refuses it
//!   otherwise                        -> Allow(Permit)
//! permit.complete(outcome)           -> breaker observes it; one audit event (latency, tokens)
//! permit dropped without outcome     -> the same, as "abandoned"
//! run finished or dropped            -> its credentials revoked; one run-end audit event
//! ```
//!
//! After the boundary come loop detection, rate limits, the baseline and the budgets, then the
//! escalation gate (a call a rule sends to a human becomes `Verdict::Escalate`; see
//! [`GuardBuilder::escalation`]), then the audit record. Each stage is a plain method call on the
//! hot path; nothing is boxed or dynamically dispatched except the audit sink and the clock.
//!
//! The boundary lives in an [`ArcSwap`] snapshot. [`Guard::reload`] swaps it atomically; a permit
//! holds the snapshot it was checked against, so a call already permitted finishes under the policy
//! generation that allowed it, and every verdict, permit and audit record carries that policy's
//! [`PolicyVersion`].
//!
//! ```
//! use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
//! use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};
//!
//! let boundary = ActionBoundary::builder()
//!     .tool("lookup", ToolSpec::read().arg("id", Arg::integer().required().min(1.0)))
//!     .role("reader", RoleSpec::new().tools(["lookup"]))
//!     .build()?;
//! let guard = Guard::builder(boundary).build();
//! let run = guard.start_run(RunContext::new("agent-7", "reader"))?;
//!
//! match guard.check(&run, &ToolCall::new("lookup", r#"{"id": 42}"#)) {
//!     Verdict::Allow(permit) => {
//!         // ... run the tool ...
//!         permit.complete(Outcome::success());
//!     }
//!     Verdict::Escalate(request) => println!("needs a human: approval {}", request.id),
//!     Verdict::Deny(denial) => println!("{denial}"),
//! }
//!
//! // Or let the guard run the tool only if allowed and record the outcome itself:
//! let n: Result<u32, _> = guard.execute(&run, &ToolCall::new("lookup", r#"{"id": 0}"#), |_permit| {
//!     Ok::<u32, std::io::Error>(1)
//! });
//! assert!(n.is_err()); // id 0 is below the minimum: the closure never ran
//! run.finish()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::audit::{
    AuditError, AuditEvent, AuditMarks, AuditSink, CredentialEvent, Decision, EventKind,
};
use crate::boundary::{ActionBoundary, Admitted, Effect, ToolInfo};
use crate::breaker::{
    Alert, AlertKind, AlertSink, Baseline, BaselineSnapshot, BreakerConfig, BreakerKey, CallResult,
    ConfigError, Keyed, KeyedBreakers, RateLimiters, RateLimits, State as BreakerState, Ticket,
    Transition, UnexpectedTool,
};
use crate::call::AgentId;
use crate::call::{Args, RuleId, RunContext, RunId, ToolCall};
use crate::clock::{Clock, MonoTime, SystemClock};
use crate::credential::{
    Asker, CredentialBroker, CredentialError, MintRequest, Operation, ScopedCredential, unix_secs,
};
use crate::escalation::Ticket as ApprovalTicket;
use crate::verdict::{Denial, DenyCode, Outcome, OutcomeStatus, PolicyVersion, Refusal, Verdict};

mod escalate;
pub use escalate::ApprovalTicker;

/// Errors from guard operations other than `check` (which never errors: it denies).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The run's role does not exist in the current policy.
    #[error("role `{0}` is not defined by the current policy")]
    UnknownRole(String),
    /// The audit sink refused a record the operation needs.
    #[error("audit failed: {0}")]
    Audit(#[from] AuditError),
    /// A run with this id is still live in this guard: two live runs may not share an id, or one
    /// could resume the other's approved calls and use its credentials.
    #[error("run `{0}` is already live in this guard")]
    DuplicateRun(String),
}

struct Shared {
    boundary: ArcSwap<ActionBoundary>,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<dyn AuditSink>>,
    credentials: Option<CredentialBroker>,
    seq: AtomicU64,
    runs: AtomicU64,
    /// Ids of the runs started and not yet ended.
    live_runs: parking_lot::Mutex<HashSet<RunId>>,
    breakers: Option<KeyedBreakers>,
    classify: fn(&Outcome) -> CallResult,
    budget: RunBudget,
    suspended_all: AtomicBool,
    suspended_agents: ArcSwap<HashSet<AgentId>>,
    rule_foreign: RuleId,
    rule_audit: RuleId,
    rule_kill: RuleId,
    rule_breaker: RuleId,
    rule_budget_calls: RuleId,
    rule_budget_time: RuleId,
    rule_budget_tokens: RuleId,
    rule_budget_cost: RuleId,
    loops: Option<LoopDetection>,
    rule_loop: RuleId,
    alerts: Option<Arc<dyn AlertSink>>,
    rate_limits: Option<RateLimiters>,
    rule_rate: RuleId,
    baseline: Option<BaselineState>,
    rule_baseline: RuleId,
    escalation: Option<Box<escalate::Escalations>>,
    rule_escalation: RuleId,
}

struct BaselineState {
    learner: std::sync::Mutex<Baseline>,
    snapshot: ArcSwap<BaselineSnapshot>,
    learn: bool,
}

impl Shared {
    /// Which kill switch holds the run, if any: one atomic load each for the global and run
    /// switches, and a lock-free snapshot load of the suspended-agent set (searched only when it
    /// is not empty).
    fn suspended(&self, run: &Run) -> Option<&'static str> {
        if self.suspended_all.load(Ordering::Acquire) {
            return Some("global");
        }
        if run.suspended.load(Ordering::Acquire) {
            return Some("run");
        }
        let agents = self.suspended_agents.load();
        if !agents.is_empty() && agents.contains(run.ctx.agent()) {
            return Some("agent");
        }
        None
    }

    /// Denies the call if the run made the same call (same tool, same arguments) `max_repeats`
    /// times within the window already; otherwise remembers it.
    fn detect_loop(&self, run: &Run, call: &ToolCall<'_>) -> Result<(), Denial> {
        let Some(cfg) = self.loops else {
            return Ok(());
        };
        let key = call_fingerprint(call);
        let now = self.clock.now();
        let mut recent = run.recent.lock().unwrap_or_else(|p| p.into_inner());
        while recent
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) >= cfg.window)
        {
            recent.pop_front();
        }
        let repeats = recent.iter().filter(|(k, _)| *k == key).count() as u32;
        if repeats >= cfg.max_repeats {
            return Err(Denial::new(
                DenyCode::LoopDetected,
                self.rule_loop.clone(),
                format!(
                    "`{}` was called with the same arguments {repeats} times in the last {} s",
                    call.tool(),
                    cfg.window.as_secs_f64()
                ),
            ));
        }
        if recent.len() == LOOP_MEMORY {
            recent.pop_front();
        }
        recent.push_back((key, now));
        Ok(())
    }

    /// Compares the run with its task type's baseline: too many calls, or an unexpected tool.
    /// Counts the call and remembers its tool when it passes.
    fn check_baseline(&self, run: &Run, call: &ToolCall<'_>) -> Result<(), Denial> {
        let (Some(b), Some(task)) = (&self.baseline, run.ctx.task_type()) else {
            return Ok(());
        };
        let snap = b.snapshot.load();
        let task = task.as_str();
        if !snap.knows_tool(task, call.tool()) {
            let policy = snap.unexpected_tool();
            if policy != UnexpectedTool::Ignore {
                let reason = format!(
                    "runs of task type `{task}` have never used `{}`",
                    call.tool()
                );
                // One alert per run, not one per retried call.
                if !run.unexpected_alerted.swap(true, Ordering::AcqRel) {
                    self.alert(
                        AlertKind::UnexpectedTool,
                        Some(run),
                        Some(call.tool()),
                        || reason.clone(),
                    );
                }
                if policy == UnexpectedTool::Deny {
                    return Err(Denial::new(
                        DenyCode::AnomalyDetected,
                        self.rule_baseline.clone(),
                        reason,
                    ));
                }
            }
        }
        // Count the call, atomically against the limit: racing threads cannot overshoot it.
        let limit = snap.limit(task).map_or(u64::MAX, u64::from);
        if let Err(made) = run
            .made
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
                (m < limit).then_some(m + 1)
            })
        {
            let reason = format!(
                "the run has made {made} tool calls; runs of task type `{task}` normally stay within {limit}"
            );
            if !run.anomaly_alerted.swap(true, Ordering::AcqRel) {
                self.alert(
                    AlertKind::AnomalyDetected,
                    Some(run),
                    Some(call.tool()),
                    || reason.clone(),
                );
            }
            return Err(Denial::new(
                DenyCode::AnomalyDetected,
                self.rule_baseline.clone(),
                reason,
            ));
        }
        if b.learn {
            let mut used = run.tools_used.lock().unwrap_or_else(|p| p.into_inner());
            if !used.contains(call.tool()) {
                used.insert(call.tool().to_owned());
            }
        }
        Ok(())
    }

    /// Feeds a finished run into the baseline (online learning).
    fn learn_from(&self, run: &Run) {
        let (Some(b), Some(task)) = (&self.baseline, run.ctx.task_type()) else {
            return;
        };
        if !b.learn {
            return;
        }
        let made = u32::try_from(run.made.load(Ordering::Acquire)).unwrap_or(u32::MAX);
        let tools: Vec<String> = run
            .tools_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut learner = b.learner.lock().unwrap_or_else(|p| p.into_inner());
        learner.observe(task.as_str(), made, tools);
        b.snapshot.store(Arc::new(learner.snapshot()));
    }

    /// Takes a unit from the agent's and the tool's rate-limit buckets.
    fn rate_limit(&self, run: &Run, call: &ToolCall<'_>) -> Result<(), Denial> {
        let Some(rl) = &self.rate_limits else {
            return Ok(());
        };
        rl.check(run.ctx.agent().as_str(), call.tool())
            .map_err(|l| {
                Denial::new(
                    DenyCode::RateLimited,
                    self.rule_rate.clone(),
                    format!(
                        "the {} rate limit is reached; retry in {} ms",
                        l.scope,
                        l.retry_after.as_millis()
                    ),
                )
            })
    }

    /// Reserves the call's share of the run's budgets (never exceeded, even under concurrency)
    /// and checks its wall-time budget. All or nothing: a failed reservation releases the others.
    fn reserve_budget(&self, run: &Run, call: &ToolCall<'_>) -> Result<Reserved, Denial> {
        let b = &self.budget;
        if let Some(max) = b.max_duration
            && self.clock.now().duration_since(run.started) >= max
        {
            return Err(Denial::new(
                DenyCode::BudgetExhausted,
                self.rule_budget_time.clone(),
                format!(
                    "the run has used its wall-time budget of {} s",
                    max.as_secs_f64()
                ),
            ));
        }
        let take = |counter: &AtomicU64, amount: u64, max: u64| {
            counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    c.checked_add(amount).filter(|n| *n <= max)
                })
                .is_ok()
        };
        let mut r = Reserved::default();
        if let Some(max) = b.max_calls {
            if !take(&run.calls, 1, max) {
                return Err(Denial::new(
                    DenyCode::BudgetExhausted,
                    self.rule_budget_calls.clone(),
                    format!("the run has used its budget of {max} tool calls"),
                ));
            }
            r.call = true;
        }
        // Tokens, then cost: the declared estimate, or the per-call default. A refusal gives
        // back what was already reserved.
        let meter = |max: Option<u64>,
                     want: u64,
                     counter: &AtomicU64,
                     rule: &RuleId,
                     what: &str,
                     r| {
            let Some(max) = max else { return Ok(0) };
            if take(counter, want, max) {
                return Ok(want);
            }
            self.release_budget(run, r);
            Err(Denial::new(
                DenyCode::BudgetExhausted,
                rule.clone(),
                format!(
                    "the run's {what} budget of {max} cannot cover this call's {want} (used {})",
                    counter.load(Ordering::Acquire)
                ),
            ))
        };
        r.tokens = meter(
            b.max_tokens,
            call.token_estimate().unwrap_or(b.tokens_per_call),
            &run.tokens,
            &self.rule_budget_tokens,
            "token",
            r,
        )?;
        r.cost = meter(
            b.max_cost_micros,
            call.cost_estimate_micros()
                .unwrap_or(b.cost_micros_per_call),
            &run.cost,
            &self.rule_budget_cost,
            "cost (micros)",
            r,
        )?;
        Ok(r)
    }

    /// Gives a reservation back (the call never ran).
    fn release_budget(&self, run: &Run, r: Reserved) {
        if r.call {
            run.calls.fetch_sub(1, Ordering::AcqRel);
        }
        run.tokens.fetch_sub(r.tokens, Ordering::AcqRel);
        run.cost.fetch_sub(r.cost, Ordering::AcqRel);
    }

    /// Settles a reservation to what the call reported using.
    fn settle_budget(&self, run: &Run, r: Reserved, outcome: &Outcome) {
        let settle = |counter: &AtomicU64, reserved: u64, actual: Option<u64>| {
            let Some(actual) = actual else { return };
            if actual < reserved {
                counter.fetch_sub(reserved - actual, Ordering::AcqRel);
            } else {
                counter.fetch_add(actual - reserved, Ordering::AcqRel);
            }
        };
        if self.budget.max_tokens.is_some() {
            settle(&run.tokens, r.tokens, outcome.total_tokens());
        }
        if self.budget.max_cost_micros.is_some() {
            settle(&run.cost, r.cost, outcome.cost_micros);
        }
    }

    /// Records a denial and returns it (or the audit failure, which also denies).
    fn deny<'a>(
        &self,
        run: &Run,
        call: &ToolCall<'_>,
        denial: Denial,
        boundary: &ActionBoundary,
    ) -> Verdict<'a> {
        let version = boundary.version();
        let kind = match denial.code() {
            DenyCode::BudgetExhausted => Some(AlertKind::BudgetExhausted),
            DenyCode::LoopDetected => Some(AlertKind::LoopDetected),
            _ => None,
        };
        if let Some(kind) = kind {
            self.alert(kind, Some(run), Some(call.tool()), || {
                denial.reason().to_owned()
            });
        }
        let recorded = self.record_marked(
            Some(run),
            EventKind::Decision {
                call,
                decision: Decision::Deny(&denial),
                policy_version: Some(version),
            },
            || Some(boundary.audit_marks(call.tool())),
        );
        match recorded {
            Ok(()) => Verdict::Deny(denial),
            Err(e) => Verdict::Deny(audit_denial(self, e, version)),
        }
    }

    fn record(&self, run: &Run, kind: EventKind<'_>) -> Result<(), AuditError> {
        self.record_for(Some(run), kind)
    }

    /// Sends an alert, building its text only if a sink is configured.
    fn alert(
        &self,
        kind: AlertKind,
        run: Option<&Run>,
        tool: Option<&str>,
        detail: impl FnOnce() -> String,
    ) {
        if let Some(sink) = &self.alerts {
            sink.alert(&Alert {
                kind,
                agent: run.map(|r| r.ctx.agent().to_string()),
                run: run.map(|r| r.id.to_string()),
                tool: tool.map(str::to_owned),
                detail: detail(),
            });
        }
    }

    fn record_for(&self, run: Option<&Run>, kind: EventKind<'_>) -> Result<(), AuditError> {
        self.record_marked(run, kind, || None)
    }

    /// Records an event about a tool, with the policy's marks for it (redactions, retention).
    fn record_marked<'m>(
        &self,
        run: Option<&Run>,
        kind: EventKind<'_>,
        marks: impl FnOnce() -> Option<&'m AuditMarks>,
    ) -> Result<(), AuditError> {
        self.record_event(run.map(|r| &r.id), run.map(|r| r.ctx.agent()), kind, marks)
    }

    /// Numbers, timestamps and records one event (nothing happens without a sink; `marks` is
    /// only evaluated with one).
    fn record_event<'m>(
        &self,
        run: Option<&RunId>,
        agent: Option<&AgentId>,
        kind: EventKind<'_>,
        marks: impl FnOnce() -> Option<&'m AuditMarks>,
    ) -> Result<(), AuditError> {
        let Some(sink) = &self.audit else {
            return Ok(());
        };
        let mut event = AuditEvent::new(
            self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            self.clock.wall(),
            run,
            agent,
            kind,
        );
        event.marks = marks();
        sink.record(&event)
    }
}

/// Composes the primitives into one pipeline. Cheap to clone (one `Arc`); share it across threads.
#[derive(Clone)]
pub struct Guard {
    shared: Arc<Shared>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("policy_version", &self.policy_version())
            .field("audit", &self.shared.audit.is_some())
            .finish()
    }
}

/// Configures a [`Guard`].
pub struct GuardBuilder {
    boundary: ActionBoundary,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<dyn AuditSink>>,
    credentials: Option<CredentialBroker>,
    breakers: Option<(BreakerConfig, BreakerKey, usize)>,
    classify: fn(&Outcome) -> CallResult,
    budget: RunBudget,
    loops: Option<LoopDetection>,
    alerts: Option<Arc<dyn AlertSink>>,
    escalation: Option<escalate::Escalations>,
    rate_limits: Option<RateLimits>,
    baseline: Option<(Baseline, bool)>,
}

/// Loop detection: the same call (tool and arguments) more than `max_repeats` times within
/// `window` is denied.
///
/// Arguments are compared by a fingerprint: raw JSON text with whitespace outside strings
/// ignored, parsed values in their compact serialisation. A run remembers its last 1024 calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopDetection {
    /// Identical calls allowed within the window.
    pub max_repeats: u32,
    /// The window.
    #[serde(with = "secs")]
    pub window: std::time::Duration,
}

/// Durations as (fractional) seconds in configuration documents.
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    fn from_secs<E: serde::de::Error>(secs: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(secs)
            .map_err(|_| E::custom("a duration must be a non-negative number of seconds"))
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        from_secs(f64::deserialize(d)?)
    }

    /// The same for `Option<Duration>`.
    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&d.as_secs_f64()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<f64>::deserialize(d)?.map(from_secs).transpose()
        }
    }
}

/// How many recent calls a run remembers for loop detection.
const LOOP_MEMORY: usize = 1024;

/// A fingerprint of a call's tool and arguments, stable across insignificant whitespace.
fn call_fingerprint(call: &ToolCall<'_>) -> u64 {
    struct H(u64);
    impl H {
        fn byte(&mut self, b: u8) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    impl std::io::Write for H {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            buf.iter().for_each(|&b| self.byte(b));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = H(0xcbf2_9ce4_8422_2325);
    call.tool().bytes().for_each(|b| h.byte(b));
    h.byte(0);
    match call.args() {
        // No arguments is the empty object.
        crate::call::Args::None => b"{}".iter().for_each(|&b| h.byte(b)),
        crate::call::Args::Value(v) => {
            let _ = serde_json::to_writer(&mut h, v);
        }
        crate::call::Args::Json(text) => {
            let (mut in_str, mut esc) = (false, false);
            for b in text.bytes() {
                if in_str {
                    if esc {
                        esc = false;
                    } else if b == b'\\' {
                        esc = true;
                    } else if b == b'"' {
                        in_str = false;
                    }
                } else if b == b'"' {
                    in_str = true;
                } else if b.is_ascii_whitespace() {
                    continue;
                }
                h.byte(b);
            }
        }
    }
    h.0
}

/// Per-run limits. Every limit is optional; none is set by default.
///
/// Budgets are reserve-then-commit: an allowed call reserves its share atomically (one call, its
/// declared token and cost estimates or the per-call defaults) before it runs, so racing threads
/// never exceed a budget by even one unit; when the permit completes, the reservation settles to
/// the reported usage. A tool that reports more than it reserved is charged the excess, and the
/// next call finds the budget that much smaller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunBudget {
    /// Most tool calls a run may be allowed.
    pub max_calls: Option<u64>,
    /// Longest a run may keep calling tools, from its start.
    #[serde(default, with = "secs::opt")]
    pub max_duration: Option<std::time::Duration>,
    /// Most tokens (input + output) a run may use.
    pub max_tokens: Option<u64>,
    /// Tokens reserved for a call that declares no estimate.
    pub tokens_per_call: u64,
    /// Most a run may cost, in millionths of a currency unit.
    pub max_cost_micros: Option<u64>,
    /// Cost reserved for a call that declares no estimate.
    pub cost_micros_per_call: u64,
}

/// What a permitted call reserved from its run's budgets.
#[derive(Debug, Clone, Copy, Default)]
struct Reserved {
    call: bool,
    tokens: u64,
    cost: u64,
}

impl GuardBuilder {
    /// Uses `clock` for every duration (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sends every event to `sink`. Without a sink nothing is recorded.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Puts a circuit breaker in front of every call, one per `key` (tool, agent, or agent x
    /// tool), at most `capacity` of them. Outcomes are classified by
    /// [`classifier`](Self::classifier) (default: errors and abandoned calls are failures).
    /// Set the [`clock`](Self::clock) first if you use a manual one.
    pub fn breakers(
        mut self,
        cfg: BreakerConfig,
        key: BreakerKey,
        capacity: usize,
    ) -> Result<Self, ConfigError> {
        KeyedBreakers::validate(&cfg, capacity)?;
        self.breakers = Some((cfg, key, capacity));
        Ok(self)
    }

    /// Decides what counts as a failure for the breakers.
    pub fn classifier(mut self, f: fn(&Outcome) -> CallResult) -> Self {
        self.classify = f;
        self
    }

    /// Judges runs that have a task type against `baseline` (learned from recorded runs):
    /// denies calls past its call limit and alerts on (or denies) tools the task type never used.
    /// With `learn_online`, every finished run is added to the baseline.
    pub fn baseline(mut self, baseline: Baseline, learn_online: bool) -> Self {
        self.baseline = Some((baseline, learn_online));
        self
    }

    /// Rate limits per agent and per tool (on the guard's monotonic clock). Validated now.
    pub fn rate_limits(mut self, cfg: RateLimits) -> Result<Self, ConfigError> {
        RateLimiters::new(&cfg, Arc::clone(&self.clock))?;
        self.rate_limits = Some(cfg);
        Ok(self)
    }

    /// Sends breaker openings and closings, budget exhaustion, loop detections and kill-switch
    /// actions to `sink` as they happen (they are audit events as well).
    pub fn alerts(mut self, sink: Arc<dyn AlertSink>) -> Self {
        self.alerts = Some(sink);
        self
    }

    /// Denies a call repeated (same tool, same arguments) more than `cfg.max_repeats` times within
    /// `cfg.window` in one run.
    pub fn loop_detection(mut self, cfg: LoopDetection) -> Self {
        self.loops = Some(cfg);
        self
    }

    /// Per-run budgets.
    pub fn run_budget(mut self, budget: RunBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Lets permits obtain scoped credentials from `broker`; a run's credentials are revoked
    /// when it ends.
    pub fn credentials(mut self, broker: CredentialBroker) -> Self {
        self.credentials = Some(broker);
        self
    }

    /// Builds the guard.
    pub fn build(self) -> Guard {
        let breakers = self.breakers.and_then(|(cfg, key, cap)| {
            // Validated in `breakers`, so this cannot fail.
            KeyedBreakers::new(cfg, key, cap, Arc::clone(&self.clock)).ok()
        });
        let escalation = self.escalation.map(Box::new);
        let guard = Guard {
            shared: Arc::new(Shared {
                escalation,
                rule_escalation: RuleId::new("guard.escalation"),
                boundary: ArcSwap::from_pointee(self.boundary),
                breakers,
                classify: self.classify,
                budget: self.budget,
                suspended_all: AtomicBool::new(false),
                suspended_agents: ArcSwap::from_pointee(HashSet::new()),
                rule_kill: RuleId::new("guard.kill_switch"),
                rule_breaker: RuleId::new("guard.breaker"),
                rule_budget_calls: RuleId::new("guard.budget.max_calls"),
                rule_budget_time: RuleId::new("guard.budget.max_duration"),
                rule_budget_tokens: RuleId::new("guard.budget.max_tokens"),
                rule_budget_cost: RuleId::new("guard.budget.max_cost_micros"),
                loops: self.loops,
                rule_loop: RuleId::new("guard.loop_detection"),
                alerts: self.alerts,
                rate_limits: self.rate_limits.and_then(|cfg| {
                    // Validated in `rate_limits`, so this cannot fail.
                    RateLimiters::new(&cfg, Arc::clone(&self.clock)).ok()
                }),
                rule_rate: RuleId::new("guard.rate_limits"),
                baseline: self.baseline.map(|(b, learn)| BaselineState {
                    snapshot: ArcSwap::from_pointee(b.snapshot()),
                    learner: std::sync::Mutex::new(b),
                    learn,
                }),
                rule_baseline: RuleId::new("guard.baseline"),
                clock: self.clock,
                audit: self.audit,
                credentials: self.credentials,
                seq: AtomicU64::new(0),
                runs: AtomicU64::new(0),
                live_runs: parking_lot::Mutex::new(HashSet::new()),
                rule_foreign: RuleId::new("guard.run"),
                rule_audit: RuleId::new("guard.audit"),
            }),
        };
        if let Some(e) = &guard.shared.escalation {
            e.attach(&guard.shared);
        }
        guard
    }
}

impl Guard {
    /// Starts configuring a guard around `boundary`.
    pub fn builder(boundary: ActionBoundary) -> GuardBuilder {
        GuardBuilder {
            boundary,
            clock: Arc::new(SystemClock::new()),
            audit: None,
            credentials: None,
            breakers: None,
            classify: default_classifier,
            budget: RunBudget::default(),
            loops: None,
            alerts: None,
            escalation: None,
            rate_limits: None,
            baseline: None,
        }
    }

    /// The version of the policy currently in force.
    pub fn policy_version(&self) -> PolicyVersion {
        self.shared.boundary.load().version()
    }

    /// The boundary currently in force.
    pub fn boundary(&self) -> Arc<ActionBoundary> {
        self.shared.boundary.load_full()
    }

    /// Atomically replaces the policy. Calls checked from now on use `boundary`; permits already
    /// issued keep the policy that allowed them. The reload is recorded first: if the audit sink
    /// refuses the record, the policy is not replaced. Returns the replaced boundary.
    pub fn reload(&self, boundary: ActionBoundary) -> Result<Arc<ActionBoundary>, GuardError> {
        let previous = self.policy_version();
        self.shared.record_for(
            None,
            EventKind::PolicyReloaded {
                previous,
                current: boundary.version(),
            },
        )?;
        Ok(self.shared.boundary.swap(Arc::new(boundary)))
    }

    /// Kill switch: suspends every run of this guard. Effective for the very next `check` on
    /// every thread (an atomic store, no polling); running tools see it through
    /// [`Permit::cancellation`]. Revokes nothing by itself (credentials die with their runs).
    /// The suspension is recorded and the audit sink flushed; an audit error is returned but the
    /// suspension stands.
    pub fn suspend_all(&self, by: &str) -> Result<(), AuditError> {
        self.shared.suspended_all.store(true, Ordering::Release);
        self.kill_event(None, "suspend", "global", None, by)
    }

    /// Lifts [`suspend_all`](Self::suspend_all) (agent and run suspensions stay). Recorded.
    pub fn resume_all(&self, by: &str) -> Result<(), AuditError> {
        self.shared.suspended_all.store(false, Ordering::Release);
        self.kill_event(None, "resume", "global", None, by)
    }

    /// Suspends every run of `agent`, current and future, until resumed.
    pub fn suspend_agent(&self, agent: &AgentId, by: &str) -> Result<(), AuditError> {
        self.shared.suspended_agents.rcu(|set| {
            let mut set = HashSet::clone(set);
            set.insert(agent.clone());
            set
        });
        self.kill_event(None, "suspend", "agent", Some(agent.as_str()), by)
    }

    /// Lifts [`suspend_agent`](Self::suspend_agent).
    pub fn resume_agent(&self, agent: &AgentId, by: &str) -> Result<(), AuditError> {
        self.shared.suspended_agents.rcu(|set| {
            let mut set = HashSet::clone(set);
            set.remove(agent);
            set
        });
        self.kill_event(None, "resume", "agent", Some(agent.as_str()), by)
    }

    /// Suspends one run.
    pub fn suspend_run(&self, run: &Run, by: &str) -> Result<(), AuditError> {
        run.suspended.store(true, Ordering::Release);
        self.kill_event(Some(run), "suspend", "run", Some(run.id.as_str()), by)
    }

    /// Lifts [`suspend_run`](Self::suspend_run).
    pub fn resume_run(&self, run: &Run, by: &str) -> Result<(), AuditError> {
        run.suspended.store(false, Ordering::Release);
        self.kill_event(Some(run), "resume", "run", Some(run.id.as_str()), by)
    }

    fn kill_event(
        &self,
        run: Option<&Run>,
        action: &'static str,
        scope: &'static str,
        target: Option<&str>,
        by: &str,
    ) -> Result<(), AuditError> {
        let kind = if action == "suspend" {
            AlertKind::Suspended
        } else {
            AlertKind::Resumed
        };
        self.shared.alert(kind, run, None, || {
            format!(
                "kill switch: {action} {scope}{} by {by}",
                target.map(|t| format!(" {t}")).unwrap_or_default()
            )
        });
        let recorded = self.shared.record_for(
            run,
            EventKind::KillSwitch {
                action,
                scope,
                target,
                by,
            },
        );
        // Whatever was recorded before the switch is made durable now.
        let flushed = match &self.shared.audit {
            Some(sink) => sink.flush(),
            None => Ok(()),
        };
        recorded.and(flushed)
    }

    /// The circuit breakers, if configured (for dashboards and manual overrides).
    pub fn breakers(&self) -> Option<&KeyedBreakers> {
        self.shared.breakers.as_ref()
    }

    /// Rotates a credential provider's signing key now, without any human step, and records the
    /// rotation. Tokens signed with the retired key keep verifying until its grace period ends.
    /// Returns `Ok(None)` for providers that have no key to rotate.
    pub fn rotate_credential_key(
        &self,
        provider: &str,
    ) -> Result<Option<crate::credential::Rotated>, CredentialError> {
        let Some(broker) = &self.shared.credentials else {
            return Err(CredentialError::NoBroker);
        };
        let rotated = broker.rotate_now(provider, unix_secs(self.shared.clock.wall()))?;
        if let Some(r) = &rotated {
            self.shared.record_for(
                None,
                EventKind::Credential(CredentialEvent::KeyRotated {
                    provider,
                    retired: &r.retired,
                    current: &r.current,
                }),
            )?;
        }
        Ok(rotated)
    }

    /// Starts a run: records its start (who, role, task, trigger, compartment) and returns the
    /// handle every check of the run needs. Fails if the role is unknown or the start cannot be
    /// recorded.
    pub fn start_run(&self, ctx: RunContext) -> Result<Run, GuardError> {
        self.start_run_with_id(ctx, None)
    }

    /// Like [`start_run`](Self::start_run) with a caller-chosen run id (e.g. the framework's own).
    pub fn start_run_with_id(&self, ctx: RunContext, id: Option<RunId>) -> Result<Run, GuardError> {
        if !self.shared.boundary.load().has_role(ctx.role().as_str()) {
            return Err(GuardError::UnknownRole(ctx.role().to_string()));
        }
        let n = self.shared.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let id = id.unwrap_or_else(|| {
            let wall = self
                .shared
                .clock
                .wall()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            RunId::new(format!("run-{:x}-{n}", wall.as_millis()))
        });
        if !self.shared.live_runs.lock().insert(id.clone()) {
            return Err(GuardError::DuplicateRun(id.to_string()));
        }
        let run = Run {
            shared: Arc::clone(&self.shared),
            instance: next_run_instance(),
            id,
            ctx,
            started: self.shared.clock.now(),
            finished: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            cost: AtomicU64::new(0),
            made: AtomicU64::new(0),
            anomaly_alerted: AtomicBool::new(false),
            unexpected_alerted: AtomicBool::new(false),
            tools_used: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            recent: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(
                if self.shared.loops.is_some() { 64 } else { 0 },
            )),
        };
        if let Err(e) = self
            .shared
            .record(&run, EventKind::RunStarted { context: &run.ctx })
        {
            // Never started: no end record, no learning from it; its id is free again.
            run.finished.store(true, Ordering::Release);
            self.shared.live_runs.lock().remove(&run.id);
            return Err(e.into());
        }
        Ok(run)
    }

    /// The tools this run's agent may see: allowlisted for its role, within its clearance, and
    /// read-only tools only in a read-only run or role.
    pub fn visible_tools(&self, run: &Run) -> Vec<String> {
        self.shared
            .boundary
            .load()
            .visible_tools_for(run.ctx.role().as_str(), run.ctx.is_read_only())
            .map(|t| t.name().to_owned())
            .collect()
    }

    /// Decides one proposed call. Never panics and never errors: anything that cannot be decided
    /// is a denial. Only [`Verdict::Allow`] carries the [`Permit`] a tool runs under.
    pub fn check<'a>(&self, run: &'a Run, call: &ToolCall<'a>) -> Verdict<'a> {
        self.decide(run, call, None)
    }

    /// The pipeline; `grant` is the approval ticket of a resumed call (see
    /// [`resume`](Self::resume)), which replaces the escalation gate's evaluation.
    fn decide<'a>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        grant: Option<&ApprovalTicket>,
    ) -> Verdict<'a> {
        if !Arc::ptr_eq(&run.shared, &self.shared) {
            // Not recorded through this guard's sink: the run is not ours.
            return Verdict::Deny(Denial::new(
                DenyCode::ForeignRun,
                self.shared.rule_foreign.clone(),
                "the run was started by a different guard",
            ));
        }
        let shared = &*self.shared;
        let boundary = shared.boundary.load_full();
        let version = boundary.version();
        // Stage 1: kill switch.
        if let Some(scope) = shared.suspended(run) {
            let d = Denial::new(
                DenyCode::Suspended,
                shared.rule_kill.clone(),
                format!("suspended by the kill switch ({scope})"),
            )
            .with_version(version);
            return shared.deny(run, call, d, &boundary);
        }
        // Stage 2: circuit breaker (only breakers that exist: unknown tool names never create
        // one).
        let mut breaker = None;
        if let Some(kb) = &shared.breakers
            && let Some(keyed) = kb.get(run.ctx.agent().as_str(), call.tool())
        {
            match keyed.breaker.try_acquire() {
                Ok(ticket) => breaker = Some((keyed, ticket)),
                Err(rejected) => {
                    let d = Denial::new(
                        DenyCode::CircuitOpen,
                        shared.rule_breaker.clone(),
                        rejected.to_string(),
                    )
                    .with_version(version);
                    return shared.deny(run, call, d, &boundary);
                }
            }
        }
        // Stage 3: action boundary. Stage 4: loop detection, rate limits, budgets. (The
        // escalation gate will follow them.)
        let admitted = boundary.check(&run.ctx, call).and_then(|a| {
            shared
                .detect_loop(run, call)
                .and_then(|()| shared.rate_limit(run, call))
                .and_then(|()| shared.check_baseline(run, call))
                .and_then(|()| shared.reserve_budget(run, call))
                .map(|r| (a, r))
                .map_err(|d| d.with_version(version))
        });
        let (admitted, reserved) = match admitted {
            Ok(a) => a,
            Err(denial) => {
                release(breaker);
                return shared.deny(run, call, denial, &boundary);
            }
        };
        // Stage 5: escalation gate (or, for a resumed call, its approval, consumed once).
        if shared.escalation.is_some() || grant.is_some() {
            let stop = match grant {
                None => shared.escalate(run, call, &boundary, admitted),
                Some(ticket) => shared.consume_grant(run, call, &boundary, ticket),
            };
            if let Some(verdict) = stop {
                release(breaker);
                shared.release_budget(run, reserved);
                return verdict;
            }
        }
        // Stage 6: audit. A decision that cannot be recorded is not acted on.
        let recorded = shared.record_marked(
            Some(run),
            EventKind::Decision {
                call,
                decision: Decision::Allow,
                policy_version: Some(version),
            },
            || Some(boundary.marks_of(admitted)),
        );
        if let Err(e) = recorded {
            release(breaker);
            shared.release_budget(run, reserved);
            return Verdict::Deny(audit_denial(shared, e, version));
        }
        // Latency feeds the audit trail and the breaker's slow-call rate; with neither, reading
        // the clock (two reads, ~25 ns each) would be dead work.
        let timed = shared.audit.is_some() || shared.breakers.is_some();
        Verdict::Allow(Permit {
            run,
            boundary,
            admitted,
            call_id: call.call_id(),
            args: call.args(),
            started: timed.then(|| shared.clock.now()),
            breaker,
            reserved,
            done: false,
        })
    }

    /// Checks `call` and runs `tool` only if it is allowed, recording the outcome (`Ok` = success,
    /// `Err(e)` = error with `e`'s message). A denial or escalation is returned without running it.
    pub fn execute<'a, T, E, F>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        tool: F,
    ) -> Result<T, ExecuteError<E>>
    where
        F: FnOnce(&Permit<'a>) -> Result<T, E>,
        E: fmt::Display,
    {
        let permit = self.check(run, call).into_permit()?;
        let result = tool(&permit);
        finish_execute(permit, result)
    }

    /// The async form of [`execute`](Self::execute); works on any executor. If the returned future
    /// is dropped before the tool finishes, the permit records an abandoned outcome.
    pub async fn execute_async<'a, T, E, F>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        tool: F,
    ) -> Result<T, ExecuteError<E>>
    where
        F: AsyncFnOnce(&Permit<'a>) -> Result<T, E>,
        E: fmt::Display,
    {
        let permit = self.check(run, call).into_permit()?;
        let result = tool(&permit).await;
        finish_execute(permit, result)
    }
}

fn finish_execute<T, E: fmt::Display>(
    permit: Permit<'_>,
    result: Result<T, E>,
) -> Result<T, ExecuteError<E>> {
    let outcome = match &result {
        Ok(_) => Outcome::success(),
        Err(e) => Outcome::error(e.to_string()),
    };
    permit.complete(outcome).map_err(ExecuteError::Audit)?;
    result.map_err(ExecuteError::Tool)
}

/// Gives a breaker ticket back unused (the call never ran), so a half-open probe slot is freed.
fn release(breaker: Option<(Arc<Keyed>, Ticket)>) {
    if let Some((keyed, ticket)) = breaker {
        let _ = keyed
            .breaker
            .record(ticket, CallResult::Ignored, std::time::Duration::ZERO);
    }
}

/// The default classifier: errors and abandoned calls count as failures.
fn default_classifier(outcome: &Outcome) -> CallResult {
    match outcome.status {
        OutcomeStatus::Success => CallResult::Success,
        _ => CallResult::Failure,
    }
}

fn audit_denial(shared: &Shared, e: AuditError, version: PolicyVersion) -> Denial {
    Denial::new(
        DenyCode::AuditFailed,
        shared.rule_audit.clone(),
        format!("the decision could not be recorded, so it is not acted on: {e}"),
    )
    .with_version(version)
}

/// Why [`Guard::execute`] did not return the tool's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecuteError<E> {
    /// The guard refused the call; the tool did not run.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The tool ran and failed.
    #[error("tool failed: {0}")]
    Tool(E),
    /// The tool ran (its side effects happened) but its outcome could not be recorded.
    #[error("the tool ran but its outcome could not be recorded: {0}")]
    Audit(AuditError),
}

impl<E> ExecuteError<E> {
    /// The denial, if the guard denied the call.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            ExecuteError::Refused(Refusal::Denied(d)) => Some(d),
            _ => None,
        }
    }
}

/// One agent task. All per-task state lives here. Dropping it (or [`finish`](Self::finish)) ends
/// the run and records its end.
pub struct Run {
    shared: Arc<Shared>,
    /// Unique among all runs this process ever starts, whatever their ids.
    instance: u64,
    id: RunId,
    ctx: RunContext,
    started: MonoTime,
    finished: AtomicBool,
    suspended: AtomicBool,
    calls: AtomicU64,
    tokens: AtomicU64,
    cost: AtomicU64,
    made: AtomicU64,
    anomaly_alerted: AtomicBool,
    unexpected_alerted: AtomicBool,
    tools_used: std::sync::Mutex<std::collections::BTreeSet<String>>,
    recent: std::sync::Mutex<std::collections::VecDeque<(u64, MonoTime)>>,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.id)
            .field("context", &self.ctx)
            .finish()
    }
}

impl Run {
    /// The run's id.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// A number no other [`Run`] started in this process shares, even one started later with the
    /// same id: what credentials and other per-run state bind to, so that a second run reusing an
    /// id (after this one ended) can never use what was issued to this one.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The run's context.
    pub fn context(&self) -> &RunContext {
        &self.ctx
    }

    /// Ends the run and records its end; returns the audit error if that record fails.
    pub fn finish(self) -> Result<(), AuditError> {
        self.end()
    }

    /// Records the agent's reasoning at a decision point (a plan, a chain-of-thought summary, why
    /// it chose a tool) as a `reasoning` audit event of this run. Reasoning given on a
    /// [`ToolCall`] is recorded with its decision; this is for the steps in between.
    pub fn note_reasoning(&self, text: &str) -> Result<(), AuditError> {
        self.shared.record(self, EventKind::Reasoning { text })
    }

    /// Revokes every credential issued to this run so far (ending the run does this by itself).
    /// Returns the first audit error, after revoking all of them.
    pub fn revoke_credentials(&self) -> Result<(), AuditError> {
        let Some(broker) = &self.shared.credentials else {
            return Ok(());
        };
        let mut first = Ok(());
        for (id, provider) in broker.revoke_run(&self.id) {
            let r = self.shared.record(
                self,
                EventKind::Credential(CredentialEvent::Revoked {
                    id: &id,
                    provider: &provider,
                }),
            );
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn end(&self) -> Result<(), AuditError> {
        if self.finished.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Revocation first: it must happen even if the records below fail.
        let revoked = self.revoke_credentials();
        self.shared.learn_from(self);
        let duration = self.shared.clock.now().duration_since(self.started);
        let finished = self
            .shared
            .record(self, EventKind::RunFinished { duration });
        // The id is free again only once everything issued under it is revoked.
        self.shared.live_runs.lock().remove(&self.id);
        revoked.and(finished)
    }
}

/// The next process-wide run instance number (see [`Run::instance`]).
fn next_run_instance() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Drop for Run {
    fn drop(&mut self) {
        // Best effort: a sink failing here has no caller to report to; `finish` reports it.
        let _ = self.end();
    }
}

/// Permission to run one tool call, issued only by [`Verdict::Allow`].
///
/// Report how the call ended with [`complete`](Self::complete); a permit dropped without an outcome
/// is recorded as *abandoned*. The permit keeps the policy snapshot it was issued under.
#[must_use = "a permit records an abandoned outcome if dropped without `complete`"]
pub struct Permit<'a> {
    run: &'a Run,
    boundary: Arc<ActionBoundary>,
    admitted: Admitted,
    call_id: Option<&'a str>,
    /// The call's arguments, so marked values can be cut out of the outcome's texts.
    args: Args<'a>,
    started: Option<MonoTime>,
    breaker: Option<(Arc<Keyed>, Ticket)>,
    reserved: Reserved,
    done: bool,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("run", &self.run.id)
            .field("tool", &self.tool())
            .field("policy_version", &self.policy_version())
            .finish()
    }
}

impl<'a> Permit<'a> {
    fn info(&self) -> &ToolInfo {
        self.boundary.tool_info(self.admitted)
    }

    /// The permitted tool's exact name.
    pub fn tool(&self) -> &str {
        self.info().name()
    }

    /// The tool's effect.
    pub fn effect(&self) -> Effect {
        self.info().effect()
    }

    /// The version of the policy that allowed the call.
    pub fn policy_version(&self) -> PolicyVersion {
        self.boundary.version()
    }

    /// The run the permit belongs to.
    pub fn run(&self) -> &'a Run {
        self.run
    }

    fn asker(&self) -> Asker<'_> {
        Asker {
            run: &self.run.id,
            role: self.run.ctx.role(),
            compartment: self.run.ctx.compartment().map(|c| c.as_str()),
            tool: self.tool(),
            operation: Operation::of(self.effect()),
        }
    }

    fn refuse(&self, resource: &str, e: CredentialError) -> CredentialError {
        let recorded = self.run.shared.record(
            self.run,
            EventKind::Credential(CredentialEvent::Refused {
                id: None,
                tool: self.tool(),
                resource,
                reason: &e,
            }),
        );
        match recorded {
            Ok(()) => e,
            Err(a) => a.into(),
        }
    }

    /// Mints a credential from `provider` for this permit's tool and operation and `resource`
    /// (an exact resource or a `prefix/*` pattern), if a grant of the run's role covers it.
    pub fn credential(
        &self,
        provider: &str,
        resource: &str,
    ) -> Result<ScopedCredential, CredentialError> {
        let (broker, prepared, expires, issued_unix, expires_unix) =
            self.begin_mint(provider, resource)?;
        let req = self.mint_request(&prepared, issued_unix, expires_unix);
        let secret = broker
            .mint_sync(&prepared, &req)
            .map_err(|e| self.refuse(resource, e))?;
        self.issue(broker, prepared, expires, expires_unix, secret)
    }

    /// The async form of [`credential`](Self::credential), for async providers (a vault, an STS).
    pub async fn credential_async(
        &self,
        provider: &str,
        resource: &str,
    ) -> Result<ScopedCredential, CredentialError> {
        let (broker, prepared, expires, issued_unix, expires_unix) =
            self.begin_mint(provider, resource)?;
        let secret = {
            let req = self.mint_request(&prepared, issued_unix, expires_unix);
            broker.mint_async(&prepared, &req).await
        }
        .map_err(|e| self.refuse(resource, e))?;
        self.issue(broker, prepared, expires, expires_unix, secret)
    }

    /// Grant check, scheduled key rotation and validity window: everything before the provider.
    #[allow(clippy::type_complexity)]
    fn begin_mint(
        &self,
        provider: &str,
        resource: &str,
    ) -> Result<
        (
            &CredentialBroker,
            crate::credential::Prepared,
            MonoTime,
            u64,
            u64,
        ),
        CredentialError,
    > {
        let shared = &self.run.shared;
        let Some(broker) = &shared.credentials else {
            return Err(CredentialError::NoBroker);
        };
        let prepared = broker
            .prepare(&self.asker(), provider, resource)
            .map_err(|e| self.refuse(resource, e))?;
        self.rotate_if_due(broker, provider)?;
        let now = shared.clock.now();
        let issued_unix = unix_secs(shared.clock.wall());
        let expires = now.saturating_add(std::time::Duration::from_secs(prepared.ttl));
        let expires_unix = issued_unix.saturating_add(prepared.ttl);
        Ok((broker, prepared, expires, issued_unix, expires_unix))
    }

    fn rotate_if_due(
        &self,
        broker: &CredentialBroker,
        provider: &str,
    ) -> Result<(), CredentialError> {
        let shared = &self.run.shared;
        if let Some(r) = broker.rotate_if_due(provider, unix_secs(shared.clock.wall()))? {
            shared.record(
                self.run,
                EventKind::Credential(CredentialEvent::KeyRotated {
                    provider,
                    retired: &r.retired,
                    current: &r.current,
                }),
            )?;
        }
        Ok(())
    }

    fn mint_request<'r>(
        &'r self,
        prepared: &'r crate::credential::Prepared,
        issued_at_unix: u64,
        expires_at_unix: u64,
    ) -> MintRequest<'r> {
        MintRequest {
            id: &prepared.id,
            run: &self.run.id,
            agent: self.run.ctx.agent(),
            role: self.run.ctx.role(),
            scope: &prepared.scope,
            issued_at_unix,
            expires_at_unix,
        }
    }

    fn issue(
        &self,
        broker: &CredentialBroker,
        prepared: crate::credential::Prepared,
        expires: MonoTime,
        expires_unix: u64,
        secret: secrecy::SecretString,
    ) -> Result<ScopedCredential, CredentialError> {
        let cred = ScopedCredential::new(
            broker,
            prepared,
            &self.run.id,
            expires,
            expires_unix,
            secret,
        );
        let recorded = self.run.shared.record(
            self.run,
            EventKind::Credential(CredentialEvent::Issued {
                id: cred.id(),
                provider: cred.provider_name(),
                scope: cred.scope(),
                expires_at_unix: expires_unix,
            }),
        );
        if let Err(e) = recorded {
            // Not recorded, not handed out: the credential is dropped (and zeroized) here.
            return Err(e.into());
        }
        Ok(cred)
    }

    /// Records how the call ended (audit, breaker). Returns the audit error if the record fails.
    pub fn complete(mut self, outcome: Outcome) -> Result<(), AuditError> {
        self.done = true;
        self.record(&outcome)
    }

    fn record(&mut self, outcome: &Outcome) -> Result<(), AuditError> {
        let shared = &self.run.shared;
        // An abandoned call keeps its whole reservation (it may have run).
        shared.settle_budget(self.run, self.reserved, outcome);
        let Some(started) = self.started else {
            // Neither a sink nor a breaker: nothing observes the outcome.
            return Ok(());
        };
        let latency = shared.clock.now().duration_since(started);
        let transition = self.feed_breaker(outcome, latency);
        // The error text and the output may quote a marked argument: recorded without it.
        let scrubbed = match &shared.audit {
            Some(_) => self
                .boundary
                .marks_of(self.admitted)
                .scrub_outcome(self.args, outcome),
            None => None,
        };
        let recorded = shared.record_marked(
            Some(self.run),
            EventKind::Outcome {
                tool: self.tool(),
                call_id: self.call_id,
                outcome: scrubbed.as_ref().unwrap_or(outcome),
                latency,
                policy_version: self.boundary.version(),
            },
            || Some(self.boundary.marks_of(self.admitted)),
        );
        if let Some((keyed, t)) = &transition {
            let kind = match t.to {
                BreakerState::Open => Some(AlertKind::BreakerOpened),
                BreakerState::Closed => Some(AlertKind::BreakerClosed),
                _ => None,
            };
            if let Some(kind) = kind {
                shared.alert(kind, Some(self.run), Some(keyed.tool()), || {
                    format!(
                        "breaker {}{}{} {:?} -> {:?}: failure rate {:.1} %, slow-call rate {:.1} % over {} calls",
                        keyed.agent(),
                        if keyed.agent().is_empty() || keyed.tool().is_empty() { "" } else { " x " },
                        keyed.tool(),
                        t.from,
                        t.to,
                        t.failure_rate,
                        t.slow_call_rate,
                        t.calls
                    )
                });
            }
        }
        let transitioned = match &transition {
            Some((keyed, t)) => shared.record(
                self.run,
                EventKind::BreakerTransition {
                    agent: keyed.agent(),
                    tool: keyed.tool(),
                    transition: t,
                },
            ),
            None => Ok(()),
        };
        recorded.and(transitioned)
    }

    /// Feeds the outcome to the call's breaker (created now if this is its key's first call).
    fn feed_breaker(
        &mut self,
        outcome: &Outcome,
        latency: std::time::Duration,
    ) -> Option<(Arc<Keyed>, Transition)> {
        let shared = &self.run.shared;
        let kb = shared.breakers.as_ref()?;
        let (keyed, ticket) = match self.breaker.take() {
            Some(b) => b,
            None => (
                kb.get_or_insert(self.run.ctx.agent().as_str(), self.info().name())?,
                Ticket::unguarded(),
            ),
        };
        let t = keyed
            .breaker
            .record(ticket, (shared.classify)(outcome), latency)?;
        Some((keyed, t))
    }

    /// A handle the running tool can poll to learn that the kill switch was thrown for this run,
    /// its agent, or everything, so it can stop early.
    pub fn cancellation(&self) -> Cancellation<'a> {
        Cancellation { run: self.run }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.record(&Outcome::abandoned());
        }
    }
}

/// Tells a running tool whether the kill switch now holds its run.
#[derive(Debug, Clone, Copy)]
pub struct Cancellation<'a> {
    run: &'a Run,
}

impl Cancellation<'_> {
    /// `true` once the run, its agent or everything is suspended.
    pub fn is_cancelled(&self) -> bool {
        self.run.shared.suspended(self.run).is_some()
    }
}

impl ScopedCredential {
    /// The secret, for `permit`'s tool to use on `resource`. Checked on every call: the permit
    /// must belong to the credential's run, its tool and operation and `resource` must be inside
    /// the scope, and the credential must be unexpired, unrevoked and not used up. Every use and
    /// every refusal is recorded; if the record fails the value is not released.
    pub fn expose<'c>(
        &'c self,
        permit: &Permit<'_>,
        resource: &str,
    ) -> Result<&'c str, CredentialError> {
        let shared = &permit.run.shared;
        let tool = permit.tool();
        let checked = self.check_use(
            &permit.run.id,
            tool,
            Operation::of(permit.effect()),
            resource,
            shared.clock.now(),
        );
        match checked {
            Ok(()) => {
                shared.record(
                    permit.run,
                    EventKind::Credential(self.event_used(tool, resource)),
                )?;
                Ok(self.secret())
            }
            Err(e) => {
                shared.record(
                    permit.run,
                    EventKind::Credential(CredentialEvent::Refused {
                        id: Some(self.id()),
                        tool,
                        resource,
                        reason: &e,
                    }),
                )?;
                Err(e)
            }
        }
    }
}
