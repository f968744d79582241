//! The guard's shared state: the policy snapshot every check reads, the state that outlives a
//! reload (kill switch, run registry, approval queue, credentials), and the recording helpers
//! every stage uses.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::limits::{LoopDetection, RunBudget};
use super::run::RunState;
use crate::audit::{AuditError, AuditEvent, AuditMarks, AuditSink, Decision, EventKind};
use crate::boundary::ActionBoundary;
use crate::breaker::{
    Alert, AlertKind, AlertSink, Baseline, BaselineConfig, BaselineSnapshot, BreakerConfig,
    BreakerKey, CallResult, KeyedBreakers, RateLimiters, RateLimits, ToolTable,
};
use crate::call::{AgentId, RuleId, RunId, ToolCall};
use crate::clock::Clock;
use crate::credential::CredentialBroker;
use crate::escalation::EscalationGate;
use crate::mode::{Mode, WouldBe};
use crate::verdict::{Denial, DenyCode, Outcome, OutcomeStatus, PolicyVersion, Verdict};

/// [`Shared::kill_flags`]: suspended by the guard's own kill switch (`suspend_all`).
pub(crate) const KILL_LOCAL: u8 = 1;
/// [`Shared::kill_flags`]: suspended by the fleet's shared kill switch (its follower).
pub(crate) const KILL_FLEET: u8 = 2;
/// [`Shared::kill_flags`]: suspended because the fleet's shared state is unconfirmed.
pub(crate) const KILL_UNCONFIRMED: u8 = 4;

/// Everything a policy decides, swapped as one by a reload: a check loads it once and decides
/// every stage under it, and a permit keeps the snapshot it was checked against, so no call is
/// ever decided by a mixture of two policies.
pub(crate) struct Snapshot {
    pub(crate) boundary: Arc<ActionBoundary>,
    pub(crate) budget: RunBudget,
    pub(crate) loops: Option<LoopDetection>,
    /// The breakers and the configuration they were built with (state carries over a reload
    /// that keeps the configuration).
    pub(crate) breakers: Option<(BreakerSettings, Arc<KeyedBreakers>)>,
    /// The rate limiters and their configuration (buckets whose quota is unchanged carry over).
    pub(crate) rate: Option<(RateLimits, Arc<RateLimiters>)>,
    /// `rate`'s tool limiters by the boundary's dense tool index (see [`Snapshot::tool_table`]):
    /// a check takes from its tool's bucket without hashing the name.
    pub(crate) rate_tools: ToolTable,
    pub(crate) gate: Option<Arc<EscalationGate>>,
    pub(crate) baseline: Option<Arc<BaselineState>>,
    /// The compiled `[flow]` section.
    pub(crate) flow: Option<crate::flow::FlowRules>,
    /// The compiled `[modes]` section (`None`: every call is enforced).
    pub(crate) modes: Option<crate::mode::Modes>,
    /// The `[rollout]` section and its live demotions (see `guard::rollout`).
    pub(crate) rollout: Option<Arc<super::rollout::LiveRollout>>,
}

/// What a guard was bound to when it was built: the document whose fixed parts (credentials,
/// audit, approver groups and settings) a reload may not change, and the reviewer keys new
/// documents must be signed by.
#[derive(Default)]
pub(crate) struct Bound {
    pub(crate) document: Option<crate::policy::Policy>,
    pub(crate) trust: Option<crate::policy::Trust>,
    /// The tier list runs' flow indexes label data under (tiers are held by position): set by
    /// the first flow rules the guard has, and kept across reloads whether or not a later
    /// document has flow rules, since runs keep their indexes. Flow rules under another tier
    /// list are refused by reload.
    pub(crate) flow_tiers: Option<Vec<String>>,
}

impl Snapshot {
    pub(crate) fn version(&self) -> PolicyVersion {
        self.boundary.version()
    }

    pub(crate) fn breakers(&self) -> Option<&KeyedBreakers> {
        self.breakers.as_ref().map(|(_, b)| &**b)
    }

    pub(crate) fn rate_limits(&self) -> Option<&RateLimiters> {
        self.rate.as_ref().map(|(_, r)| &**r)
    }

    /// The table of `rate`'s tool limiters for `boundary` (empty without rate limits). Built
    /// with every snapshot: a reload of the boundary alone renumbers the tools.
    pub(crate) fn tool_table(
        rate: Option<&(RateLimits, Arc<RateLimiters>)>,
        boundary: &ActionBoundary,
    ) -> ToolTable {
        rate.map_or_else(Default::default, |(_, rl)| rl.tool_table(boundary))
    }
}

/// How a guard's breakers are keyed and configured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BreakerSettings {
    pub(crate) config: BreakerConfig,
    pub(crate) key: BreakerKey,
    pub(crate) capacity: usize,
}

/// A baseline and what learns into it.
pub(crate) struct BaselineState {
    pub(crate) learner: parking_lot::Mutex<Baseline>,
    pub(crate) snapshot: ArcSwap<BaselineSnapshot>,
    pub(crate) learn: bool,
    pub(crate) config: BaselineConfig,
}

impl BaselineState {
    pub(crate) fn new(baseline: Baseline, learn: bool) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(baseline.snapshot()),
            config: *baseline.config(),
            learner: parking_lot::Mutex::new(baseline),
            learn,
        }
    }
}

/// Rule ids of the guard's own stages, built once.
pub(crate) struct Rules {
    pub(crate) foreign: RuleId,
    pub(crate) audit: RuleId,
    pub(crate) kill: RuleId,
    pub(crate) breaker: RuleId,
    pub(crate) budget_calls: RuleId,
    pub(crate) budget_time: RuleId,
    pub(crate) budget_tokens: RuleId,
    pub(crate) budget_cost: RuleId,
    pub(crate) loops: RuleId,
    pub(crate) rate: RuleId,
    pub(crate) baseline: RuleId,
    pub(crate) escalation: RuleId,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            foreign: RuleId::new("guard.run"),
            audit: RuleId::new("guard.audit"),
            kill: RuleId::new("guard.kill_switch"),
            breaker: RuleId::new("guard.breaker"),
            budget_calls: RuleId::new("guard.budget.max_calls"),
            budget_time: RuleId::new("guard.budget.max_duration"),
            budget_tokens: RuleId::new("guard.budget.max_tokens"),
            budget_cost: RuleId::new("guard.budget.max_cost_micros"),
            loops: RuleId::new("guard.loop_detection"),
            rate: RuleId::new("guard.rate_limits"),
            baseline: RuleId::new("guard.baseline"),
            escalation: RuleId::new("guard.escalation"),
        }
    }
}

/// State shared by a guard, its runs and its permits.
pub(crate) struct Shared {
    /// The policy in force. Replaced only by [`install`](Self::install).
    pub(crate) policy: ArcSwap<Snapshot>,
    /// How many times `policy` was replaced: a run's view was made for one generation and is
    /// made anew once this moves (one atomic load per check instead of loading the snapshot).
    pub(crate) generation: AtomicU64,
    /// Serialises reloads (checks never take it).
    pub(crate) reload_lock: parking_lot::Mutex<()>,
    /// What the guard was built with (see [`Bound`]).
    pub(crate) bound: parking_lot::Mutex<Bound>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    pub(crate) alerts: Option<Arc<dyn AlertSink>>,
    pub(crate) credentials: Option<CredentialBroker>,
    pub(crate) escalation: Option<super::escalate::Escalations>,
    pub(crate) classify: fn(&Outcome) -> CallResult,
    pub(crate) seq: AtomicU64,
    pub(crate) runs: AtomicU64,
    /// Recommendations made (for their ids).
    pub(crate) recommendations: AtomicU64,
    /// Ids of the runs started and not yet ended.
    /// Ids of the runs started and not yet ended, with their task types (for triggers the
    /// approval queue reports by run id).
    pub(crate) live_runs: parking_lot::Mutex<HashMap<RunId, Option<Arc<str>>>>,
    /// The whole-guard switches, one bit each ([`KILL_LOCAL`], [`KILL_FLEET`],
    /// [`KILL_UNCONFIRMED`]): the check reads them with one atomic load. Each bit has its own
    /// owner: the guard's own `suspend_all`/`resume_all`, the fleet kill-switch follower, and
    /// the follower's fail-closed "unconfirmed" suspension. Lifting one never lifts another.
    pub(crate) kill_flags: AtomicU8,
    /// Agents suspended through this guard ([`Guard::suspend_agent`](super::Guard::suspend_agent)).
    pub(crate) suspended_agents: ArcSwap<HashSet<AgentId>>,
    /// Run ids suspended by id through this guard.
    pub(crate) suspended_runs: ArcSwap<HashSet<RunId>>,
    /// Agents suspended by the fleet's shared kill switch (set only by its follower).
    pub(crate) fleet_agents: ArcSwap<HashSet<AgentId>>,
    /// Run ids suspended by the fleet's shared kill switch (set only by its follower).
    pub(crate) fleet_runs: ArcSwap<HashSet<RunId>>,
    /// Whether any of the four sets above holds anything: the check loads this one flag and
    /// only then the sets. Recomputed under `suspension_sets` after every change of a set (so
    /// the last writer always leaves it true while a set is not empty).
    pub(crate) any_set_suspension: AtomicBool,
    pub(crate) suspension_sets: parking_lot::Mutex<()>,
    /// Budgets shared across hosts (see `guard::fleet`).
    pub(crate) shared_budget: Option<Arc<dyn super::fleet::SharedBudget>>,
    pub(crate) rules: Rules,
}

impl Shared {
    /// Records a denial made in `mode` and returns it (or the audit failure, which also
    /// denies). A recommendation's denial is recorded with what `enforce` would have decided.
    pub(crate) fn deny<'a>(
        &self,
        run: &RunState,
        call: &ToolCall<'_>,
        denial: Denial,
        boundary: &ActionBoundary,
        mode: Mode,
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
        let recorded = self.record_decision(
            run,
            call,
            Decision::Deny(&denial),
            version,
            || Some(boundary.audit_marks(call.tool())),
            mode,
            denial.recommendation().map(|r| &r.would_be),
            false,
        );
        match recorded {
            Ok(()) => Verdict::Deny(denial),
            Err(e) => Verdict::Deny(self.audit_denial(e, version)),
        }
    }

    /// The denial of a decision that could not be recorded.
    pub(crate) fn audit_denial(&self, e: AuditError, version: PolicyVersion) -> Denial {
        Denial::new(
            DenyCode::AuditFailed,
            self.rules.audit.clone(),
            format!("the decision could not be recorded, so it is not acted on: {e}"),
        )
        .with_version(version)
    }

    pub(crate) fn record(&self, run: &RunState, kind: EventKind<'_>) -> Result<(), AuditError> {
        self.record_for(Some(run), kind)
    }

    /// Sends an alert, building its text only if a sink is configured.
    pub(crate) fn alert(
        &self,
        kind: AlertKind,
        run: Option<&RunState>,
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

    pub(crate) fn record_for(
        &self,
        run: Option<&RunState>,
        kind: EventKind<'_>,
    ) -> Result<(), AuditError> {
        self.record_marked(run, kind, || None)
    }

    /// Records an event about a tool, with the policy's marks for it (redactions, retention).
    pub(crate) fn record_marked<'m>(
        &self,
        run: Option<&RunState>,
        kind: EventKind<'_>,
        marks: impl FnOnce() -> Option<&'m AuditMarks>,
    ) -> Result<(), AuditError> {
        self.record_event(run.map(|r| &r.id), run.map(|r| r.ctx.agent()), kind, marks)
    }

    /// Numbers, timestamps and records one event (nothing happens without a sink; `marks` is
    /// only evaluated with one).
    pub(crate) fn record_event<'m>(
        &self,
        run: Option<&RunId>,
        agent: Option<&AgentId>,
        kind: EventKind<'_>,
        marks: impl FnOnce() -> Option<&'m AuditMarks>,
    ) -> Result<(), AuditError> {
        self.record_event_in(run, agent, kind, marks, Mode::Enforce, None)
    }

    /// Records the decision of one call, made in `mode` (`would_be`: what `enforce` would have
    /// decided, for a mode that did not act on it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_decision<'m>(
        &self,
        run: &RunState,
        call: &ToolCall<'_>,
        decision: Decision<'_>,
        version: PolicyVersion,
        marks: impl FnOnce() -> Option<&'m AuditMarks>,
        mode: Mode,
        would_be: Option<&WouldBe>,
        args_checked: bool,
    ) -> Result<(), AuditError> {
        let Some(sink) = &self.audit else {
            return Ok(());
        };
        let mut event = AuditEvent::new(
            self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            self.clock.wall(),
            Some(&run.id),
            Some(run.ctx.agent()),
            EventKind::Decision {
                call,
                decision,
                policy_version: Some(version),
            },
        )
        .with_mode(mode, would_be);
        // The task type's rollout stage, so the evidence tells a stage change from a call a
        // `[modes]` rule of its own puts in another mode.
        if let Some(t) = run.ctx.task_type() {
            let snap = self.policy.load();
            event.rollout_stage = snap.rollout.as_ref().and_then(|r| r.stage_of(t.as_str()));
        }
        event.marks = marks();
        event.args_checked = args_checked;
        sink.record(&event)
    }

    fn record_event_in<'m>(
        &self,
        run: Option<&RunId>,
        agent: Option<&AgentId>,
        kind: EventKind<'_>,
        marks: impl FnOnce() -> Option<&'m AuditMarks>,
        mode: Mode,
        would_be: Option<&WouldBe>,
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
        )
        .with_mode(mode, would_be);
        event.marks = marks();
        sink.record(&event)
    }
}

/// The default classifier: errors and abandoned calls count as failures.
pub(crate) fn default_classifier(outcome: &Outcome) -> CallResult {
    match outcome.status {
        OutcomeStatus::Success => CallResult::Success,
        _ => CallResult::Failure,
    }
}

impl Shared {
    /// Puts `next` in force. The generation moves after the store, and views read it before
    /// loading the snapshot (see `RunState::view`): a view never pairs an older snapshot with a
    /// newer generation.
    pub(crate) fn install(&self, next: Snapshot) {
        self.policy.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Recomputes [`any_set_suspension`](Self::any_set_suspension) after a change of the
    /// suspended agent or run-id sets.
    pub(crate) fn note_set_suspensions(&self) {
        let _serial = self.suspension_sets.lock();
        let any = !self.suspended_agents.load().is_empty()
            || !self.suspended_runs.load().is_empty()
            || !self.fleet_agents.load().is_empty()
            || !self.fleet_runs.load().is_empty();
        self.any_set_suspension.store(any, Ordering::Release);
    }
}
