//! Permits: the only way a tool runs through the guard. A permit keeps the policy snapshot it
//! was issued under, observes the outcome (audit, breaker, budget settlement) and records an
//! abandoned outcome if dropped without one.

use std::fmt;
use std::sync::Arc;

use super::limits::Reserved;
use super::run::{Run, RunState};
use super::view::{Held, ViewRef};
use crate::audit::{AuditError, EventKind};
use crate::boundary::{Admitted, Effect, ToolInfo};
use crate::breaker::{AlertKind, Keyed, State as BreakerState, Ticket, Transition};
use crate::call::Args;
use crate::clock::MonoTime;
use crate::verdict::{Outcome, PolicyVersion};

/// Permission to run one tool call, issued only by [`Verdict::Allow`](crate::Verdict::Allow).
///
/// Report how the call ended with [`complete`](Self::complete); a permit dropped without an outcome
/// is recorded as *abandoned*. The permit keeps the policy snapshot it was issued under. To
/// complete it where the run and the call cannot be borrowed (another task, a queue), turn it into
/// a [`DetachedPermit`] with [`detach`](Self::detach).
#[must_use = "a permit records an abandoned outcome if dropped without `complete`"]
pub struct Permit<'a> {
    pub(crate) run: &'a Run,
    pub(crate) call_id: Option<&'a str>,
    /// The call's arguments, so marked values can be cut out of the outcome's texts.
    pub(crate) args: Args<'a>,
    pub(crate) core: Core<'a>,
}

/// What a permit holds whether borrowed or detached.
pub(crate) struct Core<'a> {
    /// The run's view of the snapshot the call was checked under.
    pub(crate) snap: ViewRef<'a>,
    pub(crate) admitted: Admitted,
    pub(crate) started: Option<MonoTime>,
    pub(crate) breaker: Option<Held>,
    pub(crate) reserved: Reserved,
    pub(crate) done: bool,
    /// The flow rule that quarantined the call: its output must not reach the model.
    pub(crate) quarantine: Option<crate::call::RuleId>,
    /// In shadow mode, what enforce would have decided instead of allowing the call.
    pub(crate) shadow: Option<Box<crate::mode::WouldBe>>,
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

impl Core<'_> {
    fn info(&self) -> &ToolInfo {
        self.snap.boundary.tool_info(self.admitted)
    }

    /// Settles the budget, feeds the breaker and records the outcome, once.
    fn record(
        &mut self,
        run: &RunState,
        call_id: Option<&str>,
        args: Args<'_>,
        outcome: &Outcome,
    ) -> Result<(), AuditError> {
        self.done = true;
        let shared = &run.shared;
        // An abandoned call keeps its whole reservation (it may have run).
        shared.settle_budget(&self.snap, run, self.reserved, outcome);
        let Some(started) = self.started else {
            // Neither a sink nor a breaker: nothing observes the outcome.
            return Ok(());
        };
        let latency = shared.clock.now().duration_since(started);
        let transition = self.feed_breaker(run, outcome, latency);
        let marks = self.snap.boundary.marks_of(self.admitted);
        // The error text and the output may quote a marked argument, or the secret of a
        // credential this run's permits were handed: recorded without them.
        let scrubbed = match &shared.audit {
            Some(_) => run
                .exposed
                .scrub(marks.scrub_outcome(args, outcome), outcome),
            None => None,
        };
        let recorded = shared.record_marked(
            Some(run),
            EventKind::Outcome {
                tool: self.info().name(),
                call_id,
                outcome: scrubbed.as_ref().unwrap_or(outcome),
                latency,
                policy_version: self.snap.version(),
            },
            || Some(marks),
        );
        if let Some((keyed, t)) = &transition {
            let kind = match t.to {
                BreakerState::Open => Some(AlertKind::BreakerOpened),
                BreakerState::Closed => Some(AlertKind::BreakerClosed),
                _ => None,
            };
            if t.to == BreakerState::Open
                && let Some(live) = &self.snap.rollout
            {
                shared.rollout_trigger(
                    live,
                    Some(&run.id),
                    Some(run.ctx.agent()),
                    run.ctx.task_type().map(|t| t.as_str()),
                    super::rollout::Cause {
                        kind: "breaker_trip",
                        rule: "guard.breaker",
                        detail: keyed.tool(),
                    },
                );
            }
            if let Some(kind) = kind {
                shared.alert(kind, Some(run), Some(keyed.tool()), || {
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
                run,
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
        run: &RunState,
        outcome: &Outcome,
        latency: std::time::Duration,
    ) -> Option<(Arc<Keyed>, Transition)> {
        let kb = self.snap.breakers()?;
        let result = (run.shared.classify)(outcome);
        if let Some(held) = self.breaker.take()
            && let Some(keyed) = self.snap.held(held.index)
        {
            // The common case: no reference taken unless the breaker changes state.
            let t = keyed.breaker.record(held.ticket, result, latency)?;
            return Some((Arc::clone(keyed), t));
        }
        let keyed = kb.get_or_insert(run.ctx.agent().as_str(), self.info().name())?;
        let t = keyed.breaker.record(Ticket::unguarded(), result, latency)?;
        Some((keyed, t))
    }

    /// Gives the breaker probe and the budget reservation back without any outcome (the call was
    /// never run).
    fn withdraw(&mut self, run: &RunState) {
        self.done = true;
        self.snap.release(self.breaker.take());
        run.shared.release_budget(run, self.reserved);
    }
}

impl<'a> Permit<'a> {
    pub(crate) fn info(&self) -> &ToolInfo {
        self.core.info()
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
        self.core.snap.version()
    }

    /// The run the permit belongs to.
    pub fn run(&self) -> &'a Run {
        self.run
    }

    /// In [shadow mode](crate::mode::Mode::Shadow), what `enforce` would have decided instead
    /// of allowing the call (a denial or an escalation); `None` when enforce would have allowed
    /// it too, or the call is not in shadow mode. Frameworks log it; the decision's audit
    /// record holds it as well.
    pub fn shadow(&self) -> Option<&crate::mode::WouldBe> {
        self.core.shadow.as_deref()
    }

    /// Records how the call ended (audit, breaker). Returns the audit error if the record fails.
    pub fn complete(mut self, outcome: Outcome) -> Result<(), AuditError> {
        self.core
            .record(self.run, self.call_id, self.args, &outcome)
    }

    /// Turns the permit into one that borrows neither the run nor the call, to complete it later
    /// or elsewhere (another task, after the run handle moved on). It keeps the policy snapshot,
    /// the breaker probe and the budget reservation, and records an abandoned outcome if dropped
    /// without one. Mint credentials before detaching: a detached permit cannot.
    ///
    /// The values of arguments the policy marks secret or sensitive are copied into it (and only
    /// they), so its outcome's texts are still recorded without them.
    pub fn detach(mut self) -> DetachedPermit {
        // The husk left behind records nothing when this permit drops.
        let husk = Core {
            snap: self.core.snap.to_owned(),
            admitted: self.core.admitted,
            started: None,
            breaker: None,
            reserved: Reserved::default(),
            done: true,
            quarantine: None,
            shadow: None,
        };
        let core = std::mem::replace(&mut self.core, husk);
        let core = Core {
            snap: core.snap.to_owned(),
            ..core
        };
        let marks = core.snap.boundary.marks_of(core.admitted);
        // Flow labels may depend on the arguments (`when`, `compartment_arg`).
        let flow_reads = core
            .snap
            .flow
            .as_ref()
            .is_some_and(|f| f.covers(self.tool()));
        let args = if marks.redacts() || flow_reads {
            OwnedArgs::of(self.args)
        } else {
            OwnedArgs::None
        };
        DetachedPermit {
            run: Arc::clone(self.run.state()),
            call_id: self.call_id.map(Into::into),
            args,
            core,
        }
    }

    /// Gives the permit back unused: no outcome is recorded, the breaker probe and the budget
    /// reservation are released (for dry runs and replays that decide not to run the call).
    pub(crate) fn withdraw(mut self) {
        self.core.withdraw(self.run);
    }

    /// The largest fraction of any run budget used so far, this call's reservation included:
    /// what the escalation stage hands the gate (for replays that evaluate a gate themselves).
    pub(crate) fn budget_used(&self) -> Option<f64> {
        self.run.shared.budget_used(&self.core.snap, self.run)
    }

    /// A handle the running tool can poll to learn that the kill switch was thrown for this run,
    /// its agent, or everything, so it can stop early.
    pub fn cancellation(&self) -> Cancellation<'a> {
        Cancellation { run: self.run }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.core.done {
            let _ = self
                .core
                .record(self.run, self.call_id, self.args, &Outcome::abandoned());
        }
    }
}

/// The arguments a detached permit keeps: only those of a tool with marked arguments, to cut
/// their values out of the outcome's texts.
enum OwnedArgs {
    None,
    Value(serde_json::Value),
    Json(Box<str>),
}

impl OwnedArgs {
    fn of(args: Args<'_>) -> Self {
        match args {
            Args::None => OwnedArgs::None,
            Args::Value(v) => OwnedArgs::Value(v.clone()),
            Args::Json(t) => OwnedArgs::Json(t.into()),
        }
    }

    fn borrow(&self) -> Args<'_> {
        match self {
            OwnedArgs::None => Args::None,
            OwnedArgs::Value(v) => Args::Value(v),
            OwnedArgs::Json(t) => Args::Json(t),
        }
    }
}

/// A [`Permit`] that borrows neither its run nor its call ([`Permit::detach`]): `Send`, `'static`,
/// completed with [`complete`](Self::complete) or recorded as abandoned when dropped.
#[must_use = "a permit records an abandoned outcome if dropped without `complete`"]
pub struct DetachedPermit {
    run: Arc<RunState>,
    call_id: Option<Box<str>>,
    args: OwnedArgs,
    core: Core<'static>,
}

impl fmt::Debug for DetachedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedPermit")
            .field("run", &self.run.id)
            .field("tool", &self.tool())
            .field("policy_version", &self.policy_version())
            .finish()
    }
}

impl DetachedPermit {
    /// The permitted tool's exact name.
    pub fn tool(&self) -> &str {
        self.core.info().name()
    }

    /// The version of the policy that allowed the call.
    pub fn policy_version(&self) -> PolicyVersion {
        self.core.snap.version()
    }

    /// Records how the call ended (audit, breaker, budget settlement).
    pub fn complete(mut self, outcome: Outcome) -> Result<(), AuditError> {
        let args = std::mem::replace(&mut self.args, OwnedArgs::None);
        let call_id = self.call_id.take();
        self.core
            .record(&self.run, call_id.as_deref(), args.borrow(), &outcome)
    }

    /// [`Permit::shadow`] for a detached permit.
    pub fn shadow(&self) -> Option<&crate::mode::WouldBe> {
        self.core.shadow.as_deref()
    }

    /// `true` once the kill switch holds the permit's run, its agent or everything.
    pub fn is_cancelled(&self) -> bool {
        self.run.shared.suspended(&self.run).is_some()
    }

    /// [`Permit::deliver`] for a detached permit.
    pub fn deliver(&self, output: crate::flow::Output<'_>) -> Result<super::Delivery, AuditError> {
        super::flow::deliver(
            &self.run,
            &self.core.snap,
            self.tool(),
            self.call_id.as_deref(),
            self.args.borrow(),
            self.core.quarantine.as_ref(),
            output,
        )
    }
}

impl Drop for DetachedPermit {
    fn drop(&mut self) {
        if !self.core.done {
            let args = std::mem::replace(&mut self.args, OwnedArgs::None);
            let _ = self.core.record(
                &self.run,
                self.call_id.as_deref(),
                args.borrow(),
                &Outcome::abandoned(),
            );
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
