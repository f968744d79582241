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
//! Everything a policy decides (boundary, budgets, loop detection, breakers, rate limits,
//! escalation gate, baseline) lives in one snapshot behind an [`arc_swap::ArcSwap`]: a check
//! loads it once and decides every stage under it. [`Guard::reload`] swaps it atomically; a
//! permit holds the snapshot it was checked against, so a call already permitted finishes under
//! the policy generation that allowed it, and every verdict, permit and audit record carries that
//! policy's [`PolicyVersion`].
//!
//! A check reaches the snapshot through its run's *view* of it (`view`): the snapshot plus what
//! the run would otherwise look up by name on every call (its agent's rate-limit bucket, its
//! tools' breakers), so the allow path hashes no name and writes to no cache line that every
//! thread writes (no reference count on the shared snapshot or breaker per call).
//!
//! One file per job: `shared` (the snapshot and the recording helpers), `view`, `builder`,
//! `run`, `permit`, `credentials`, `kill` (the kill switch), `limits` (loops, rate limits,
//! baseline, budgets), `escalate` (the escalation stage and resumption) and `reload`.
//!
//! ```
//! use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
//! use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};
//!
//! let boundary = ActionBoundary::builder()
//!     .tool("lookup", ToolSpec::read().arg("id", Arg::integer().required().min(1.0)))
//!     .role("reader", RoleSpec::new().tools(["lookup"]))
//!     .build()?;
//! let guard = Guard::builder(boundary).build()?;
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

use crate::audit::AuditError;
use crate::boundary::ActionBoundary;
use crate::breaker::KeyedBreakers;
use crate::call::ToolCall;
use crate::escalation::Ticket as ApprovalTicket;
use crate::verdict::{Denial, DenyCode, Outcome, PolicyVersion, Refusal, Verdict};

mod blocking;
mod builder;
mod credentials;
mod escalate;
mod fleet;
mod flow;
mod kill;
mod limits;
mod mode;
mod permit;
mod reload;
mod rollout;
mod run;
mod shared;
mod view;

pub use builder::GuardBuilder;
pub use escalate::ApprovalTicker;
pub use fleet::{SharedBudget, SharedRefusal, Taken, Units};
pub use flow::Delivery;
pub(crate) use kill::Side;
pub use limits::{LoopDetection, RunBudget};
pub use permit::{Cancellation, DetachedPermit, Permit};
pub use reload::ReloadError;
pub use run::Run;
use shared::Shared;

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
    /// The run's compartment id is not one the policy admits (`compartments.id_pattern`).
    #[error("compartment `{0}` does not match the policy's compartment id pattern")]
    CompartmentRefused(String),
    /// A setting given to the [`GuardBuilder`] cannot work.
    #[error("guard configuration `{field}`: {reason}")]
    Config {
        /// The field at fault (`breakers.window`, `rate_limits.per_agent`, ...).
        field: String,
        /// Why.
        reason: String,
    },
    /// A run with this id is still live in this guard: two live runs may not share an id, or one
    /// could resume the other's approved calls and use its credentials.
    #[error("run `{0}` is already live in this guard")]
    DuplicateRun(String),
    /// [`Guard::record_human_action`] was given an id this run's recommendations do not
    /// include.
    #[error("recommendation `{0}` was not made in this run")]
    UnknownRecommendation(String),
    /// [`Guard::record_human_action`] was given a recommendation whose human action is already
    /// recorded.
    #[error("the human action on recommendation `{0}` is already recorded")]
    RecommendationAnswered(String),
    /// [`Guard::record_human_action`] was given a recommendation this run made but no longer
    /// keeps: more than `modes.max_pending_recommendations` newer ones were waiting (its record
    /// stays in the audit trail).
    #[error(
        "recommendation `{0}` was dropped unanswered: the run made more than its bound of \
         pending recommendations after it (`modes.max_pending_recommendations`)"
    )]
    RecommendationExpired(String),
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

impl Guard {
    /// Records a guard-wide event (no run): for an integration that refuses a request before
    /// any run exists (the MCP gateway's HTTP listener answering 401).
    #[cfg(feature = "mcp")]
    pub(crate) fn record_unbound(
        &self,
        kind: crate::audit::EventKind<'_>,
    ) -> Result<(), AuditError> {
        self.shared.record_for(None, kind)
    }

    /// The whole guard a [`Policy`](crate::policy::Policy) document describes, with `bindings`
    /// for what a document cannot hold (key material, sinks, stores, the clock). See
    /// [`Policy::guard`](crate::policy::Policy::guard).
    pub fn from_policy(
        policy: &crate::policy::Policy,
        bindings: crate::policy::Bindings,
    ) -> Result<Guard, crate::policy::BindError> {
        policy.guard(bindings)
    }

    /// The version of the policy currently in force.
    pub fn policy_version(&self) -> PolicyVersion {
        self.shared.policy.load().version()
    }

    /// The boundary currently in force.
    pub fn boundary(&self) -> Arc<ActionBoundary> {
        Arc::clone(&self.shared.policy.load().boundary)
    }

    /// The circuit breakers currently in force, if configured (for dashboards and manual
    /// overrides).
    pub fn breakers(&self) -> Option<Arc<KeyedBreakers>> {
        self.shared
            .policy
            .load()
            .breakers
            .as_ref()
            .map(|(_, b)| Arc::clone(b))
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
                self.shared.rules.foreign.clone(),
                "the run was started by a different guard",
            ));
        }
        let shared = &*self.shared;
        // One policy for the whole decision.
        // One policy for the whole decision, seen through the run's view of it.
        let snap = run.view();
        let boundary = &*snap.boundary;
        let version = boundary.version();
        let task_type = run.ctx.task_type().map(|t| t.as_str());
        // A task type demoted live: the stricter of its first stage's mode and the call's own
        // `[modes]` rule.
        let (mode, mode_rule) = snap.call_mode(&run.ctx, call.tool());
        // Stage 1: kill switch (in every mode: nothing shadows or recommends past it).
        if let Some(scope) = shared.suspended(run) {
            let d = Denial::new(
                DenyCode::Suspended,
                shared.rules.kill.clone(),
                format!("suspended by the kill switch ({scope})"),
            )
            .with_version(version);
            return shared.deny(run, call, d, boundary, mode);
        }
        // Stages 2 to 5 decide; the mode says what is done with the decision.
        let staged = shared.stages(&snap, run, call, grant);
        // A safety denial (actual or would-be) of a rollout task type demotes it, once the
        // denial is recorded and before the next check.
        let safety = match (&staged, &snap.rollout) {
            (mode::Staged::Stop(d), Some(live)) if live.is_safety(d.code()) => {
                Some((Arc::clone(live), d.code(), d.rule().as_str().to_owned()))
            }
            _ => None,
        };
        let ctx = mode::Decided {
            mode,
            rule: mode_rule,
            grant: grant.is_some(),
        };
        let verdict = ctx.finish(shared, snap, run, call, staged);
        if let Some((live, code, rule)) = safety {
            shared.rollout_trigger(
                &live,
                Some(&run.id),
                Some(run.ctx.agent()),
                task_type,
                rollout::Cause {
                    kind: "safety_denial",
                    rule: &rule,
                    detail: code.as_str(),
                },
            );
        }
        verdict
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
