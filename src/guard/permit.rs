//! Permits: the only way a tool runs through the guard. A permit keeps the policy snapshot it
//! was issued under, observes the outcome (audit, breaker, budget settlement) and records an
//! abandoned outcome if dropped without one.

use std::fmt;
use std::sync::Arc;

use super::limits::Reserved;
use super::run::Run;
use super::shared::Snapshot;
use crate::audit::{AuditError, EventKind};
use crate::boundary::{Admitted, Effect, ToolInfo};
use crate::breaker::{AlertKind, Keyed, State as BreakerState, Ticket, Transition};
use crate::call::Args;
use crate::clock::MonoTime;
use crate::verdict::{Outcome, PolicyVersion};

/// Permission to run one tool call, issued only by [`Verdict::Allow`](crate::Verdict::Allow).
///
/// Report how the call ended with [`complete`](Self::complete); a permit dropped without an outcome
/// is recorded as *abandoned*. The permit keeps the policy snapshot it was issued under.
#[must_use = "a permit records an abandoned outcome if dropped without `complete`"]
pub struct Permit<'a> {
    pub(crate) run: &'a Run,
    pub(crate) snap: Arc<Snapshot>,
    pub(crate) admitted: Admitted,
    pub(crate) call_id: Option<&'a str>,
    /// The call's arguments, so marked values can be cut out of the outcome's texts.
    pub(crate) args: Args<'a>,
    pub(crate) started: Option<MonoTime>,
    pub(crate) breaker: Option<(Arc<Keyed>, Ticket)>,
    pub(crate) reserved: Reserved,
    pub(crate) done: bool,
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
        self.snap.boundary.tool_info(self.admitted)
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
        self.snap.version()
    }

    /// The run the permit belongs to.
    pub fn run(&self) -> &'a Run {
        self.run
    }

    /// Records how the call ended (audit, breaker). Returns the audit error if the record fails.
    pub fn complete(mut self, outcome: Outcome) -> Result<(), AuditError> {
        self.done = true;
        self.record(&outcome)
    }

    fn record(&mut self, outcome: &Outcome) -> Result<(), AuditError> {
        let shared = &self.run.shared;
        // An abandoned call keeps its whole reservation (it may have run).
        shared.settle_budget(&self.snap, self.run, self.reserved, outcome);
        let Some(started) = self.started else {
            // Neither a sink nor a breaker: nothing observes the outcome.
            return Ok(());
        };
        let latency = shared.clock.now().duration_since(started);
        let transition = self.feed_breaker(outcome, latency);
        // The error text and the output may quote a marked argument: recorded without it.
        let scrubbed = match &shared.audit {
            Some(_) => self
                .snap
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
                policy_version: self.snap.version(),
            },
            || Some(self.snap.boundary.marks_of(self.admitted)),
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
        let kb = self.snap.breakers()?;
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
