//! The pipeline's stages 2 to 5 (breaker, boundary, limits, flow, escalation gate) decide a
//! call as `enforce` would, without recording or queueing anything; the call's
//! [mode](crate::mode) then says what is done with that decision (see [`Decided::finish`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::limits::{CheckTime, Reserved};
use super::permit::{self, Permit};
use super::run::{Run, Standing};
use super::shared::Shared;
use super::view::{Held, RunView, ViewRef};
use super::{Guard, GuardBuilder, GuardError};
use crate::audit::{AuditError, Decision, EventKind};
use crate::boundary::Admitted;
use crate::call::{Args, RuleId, ToolCall};
use crate::escalation::{Escalation, Reason, Ticket as ApprovalTicket};
use crate::mode::{HumanAction, Mode, Modes, Recommendation, WouldBe};
use crate::verdict::{Denial, DenyCode, Verdict};

use super::flow::FlowStage;

/// What stages 2 to 5 decided, before anything was recorded or queued.
pub(super) enum Staged {
    /// No stage refused the call (it may still need a human: `escalation`).
    Pass(Passed),
    /// A stage refused it: the denial, unrecorded (breaker probe and budget already released).
    Stop(Denial),
}

/// A call no stage refused, and what it holds.
pub(super) struct Passed {
    admitted: Admitted,
    /// Whether the boundary checked the call (and so validated raw argument text strictly):
    /// false for a shadow-mode call it refused.
    args_checked: bool,
    breaker: Option<Held>,
    reserved: Reserved,
    /// The check's time, if a stage read it.
    now: Option<crate::clock::MonoTime>,
    quarantine: Option<RuleId>,
    /// The approval the escalation gate (or a flow rule) asks for; `None` after a consumed
    /// grant. Boxed: the allow path moves `Passed` through the stages, and the request is
    /// rare and already allocates.
    escalation: Option<Box<Escalation>>,
}

impl Shared {
    /// Stages 2 to 5, as `enforce` decides them; `grant` replaces the escalation gate.
    pub(super) fn stages(
        &self,
        snap: &RunView,
        run: &Run,
        call: &ToolCall<'_>,
        grant: Option<&ApprovalTicket>,
    ) -> Staged {
        let boundary = &*snap.boundary;
        let version = boundary.version();
        let open = |rejected: crate::breaker::Rejected| {
            Staged::Stop(
                Denial::new(
                    DenyCode::CircuitOpen,
                    self.rules.breaker.clone(),
                    rejected.to_string(),
                )
                .with_version(version),
            )
        };
        // Stage 2: circuit breaker, decided after the boundary (which changes nothing) so the
        // breaker is found by the admitted tool's index through the run's view, without hashing
        // or reference counting. An open breaker still takes precedence over a boundary denial,
        // as if it had been asked first. Only breakers that exist are asked: unknown tool names
        // never create one.
        let checked = boundary.check(&run.ctx, call);
        let agent = run.ctx.agent().as_str();
        // A refused tool has no index: its breaker, if any, is found by name.
        let by_name;
        let keyed = match &checked {
            Ok(a) => snap.breaker(a.index(), agent, call.tool()),
            Err(_) => {
                by_name = snap.breakers().and_then(|kb| kb.get(agent, call.tool()));
                by_name.as_ref()
            }
        };
        let mut breaker = None;
        if let Some(keyed) = keyed {
            match (keyed.breaker.try_acquire(), &checked) {
                (Err(rejected), _) => return open(rejected),
                (Ok(ticket), Ok(a)) => {
                    breaker = Some(Held {
                        index: a.index(),
                        ticket,
                    });
                }
                // Asked and answered: the boundary's denial stands.
                (Ok(ticket), Err(_)) => keyed.give_back(ticket),
            }
        }
        // Stage 3: action boundary (decided above). Stage 4: loop detection, rate limits,
        // baseline, budgets.
        // At most one clock read for the stages that need the time (rate limits, the
        // wall-time budget) and, without an audit sink, the permit's start.
        let now = CheckTime::new(&*self.clock);
        let admitted = checked.and_then(|a| {
            self.detect_loop(snap, run, call)
                .and_then(|()| self.rate_limit(snap, a, &now))
                .and_then(|()| self.check_baseline(snap, run, call))
                .and_then(|()| self.reserve_budget(snap, run, call, &now))
                .map(|r| (a, r))
                .map_err(|d| d.with_version(version))
        });
        let (admitted, reserved) = match admitted {
            Ok(a) => a,
            Err(denial) => {
                snap.release(breaker);
                return Staged::Stop(denial);
            }
        };
        let stop = |denial: Denial, breaker| {
            snap.release(breaker);
            self.release_budget(run, reserved);
            Staged::Stop(denial)
        };
        // Stage 4b: information flow (where the arguments' values came from).
        let (flow_reason, quarantine) = match self.check_flow(snap, run, call, grant) {
            Ok(FlowStage::Pass) => (None, None),
            Ok(FlowStage::Quarantine(rule)) => (None, Some(rule)),
            Ok(FlowStage::Escalate(reason)) => (Some(reason), None),
            Err(denial) => return stop(denial, breaker),
        };
        // Stage 5: escalation gate (or, for a resumed call, its approval, consumed once: it
        // also endorses an escalated flow).
        let escalation = match grant {
            Some(ticket) => match self.consume_grant(run, call, boundary, ticket) {
                None => None,
                Some(denial) => return stop(denial, breaker),
            },
            None if snap.gate.is_some() || flow_reason.is_some() => {
                match self.gate_escalation(snap, run, call, admitted, flow_reason) {
                    Ok(e) => e.map(Box::new),
                    Err(denial) => return stop(denial, breaker),
                }
            }
            None => None,
        };
        Staged::Pass(Passed {
            admitted,
            args_checked: true,
            breaker,
            reserved,
            now: now.read(),
            quarantine,
            escalation,
        })
    }

    /// Records an allowed call and issues its permit (`shadow`: what enforce would have
    /// decided, for a shadow-mode call).
    fn allow<'a>(
        &self,
        snap: ViewRef<'a>,
        run: &'a Run,
        call: &ToolCall<'a>,
        p: Passed,
        mode: Mode,
        shadow: Option<WouldBe>,
    ) -> Verdict<'a> {
        let boundary = &*snap.boundary;
        let version = boundary.version();
        // Stage 6: audit. A decision that cannot be recorded is not acted on.
        let recorded = self.record_decision(
            run,
            call,
            Decision::Allow,
            version,
            || Some(boundary.marks_of(p.admitted)),
            mode,
            shadow.as_ref(),
            p.args_checked,
        );
        if let Err(e) = recorded {
            snap.release(p.breaker);
            self.release_budget(run, p.reserved);
            return Verdict::Deny(self.audit_denial(e, version));
        }
        // Latency feeds the audit trail and the breaker's slow-call rate; with neither, reading
        // the clock (two reads, ~25 ns each) would be dead work. Without a sink, only the flow
        // and escalation stages (computation, no waiting) ran since the stages read the time,
        // if they did: the permit starts then. With one, recording the decision may have taken
        // a while: the time is read again.
        let timed = self.audit.is_some() || snap.breakers.is_some();
        let started = match (timed, self.audit.is_some(), p.now) {
            (false, _, _) => None,
            (true, false, Some(now)) => Some(now),
            (true, _, _) => Some(self.clock.now()),
        };
        Verdict::Allow(Permit {
            run,
            call_id: call.call_id(),
            args: call.args(),
            core: permit::Core {
                snap,
                admitted: p.admitted,
                started,
                breaker: p.breaker,
                reserved: p.reserved,
                done: false,
                quarantine: p.quarantine,
                shadow: shadow.filter(|w| *w != WouldBe::Allow).map(Box::new),
            },
        })
    }
}

/// A denial no mode may act past: the kill switch (decided before the stages), a decision
/// that could not be recorded, a role the policy does not define.
fn hard(d: &Denial) -> bool {
    matches!(
        d.code(),
        DenyCode::AuditFailed | DenyCode::Suspended | DenyCode::ForeignRun | DenyCode::UnknownRole
    )
}

/// The mode a call is decided in and the rule that gave it.
pub(super) struct Decided {
    pub(super) mode: Mode,
    /// `modes.rules[i]` or `modes.default` (`None`: the policy has no `[modes]`).
    pub(super) rule: Option<RuleId>,
    /// The call is a resumed one (its approval was consumed by the stages).
    pub(super) grant: bool,
}

impl Decided {
    fn rule(&self) -> RuleId {
        self.rule.clone().unwrap_or_else(|| RuleId::new("modes"))
    }

    /// Acts on what the stages decided, as the mode says:
    ///
    /// - `enforce`, `autonomous`: as decided.
    /// - `shadow`: a denial or escalation becomes an allowed call whose permit and record say
    ///   what enforce would have done; nothing is queued. Hard denials (audit failure, unknown
    ///   role) and denials of tools the policy does not define stay denials: a permit needs the
    ///   tool's definition (its marks, its effect).
    /// - `recommend`: nothing runs; a [`DenyCode::Recommended`] denial carries the
    ///   recommendation, with what enforce would have decided.
    /// - `supervised`: a call the stages allow goes to the approval queue with the approvers of
    ///   `escalation.defaults` (unless it is a resumed call whose approval was just consumed).
    pub(super) fn finish<'a>(
        self,
        shared: &Shared,
        snap: ViewRef<'a>,
        run: &'a Run,
        call: &ToolCall<'a>,
        staged: Staged,
    ) -> Verdict<'a> {
        let mode = self.mode;
        let boundary = &*snap.boundary;
        match (mode, staged) {
            (Mode::Recommend, staged) => self.recommend(shared, &snap, run, call, staged),
            (Mode::Shadow, Staged::Stop(d)) => {
                let known = boundary.admitted_by_name(call.tool());
                match known {
                    Some(admitted) if !hard(&d) => {
                        let p = Passed {
                            admitted,
                            // The boundary refused the call: its arguments were not validated.
                            args_checked: false,
                            breaker: None,
                            reserved: Reserved::default(),
                            now: None,
                            quarantine: None,
                            escalation: None,
                        };
                        shared.allow(snap, run, call, p, mode, Some(WouldBe::Deny(d)))
                    }
                    _ => shared.deny(run, call, d, boundary, mode),
                }
            }
            (Mode::Shadow, Staged::Pass(mut p)) => {
                let would_be = match p.escalation.take() {
                    Some(e) => WouldBe::Escalate { reasons: e.reasons },
                    None => WouldBe::Allow,
                };
                shared.allow(snap, run, call, p, mode, Some(would_be))
            }
            (_, Staged::Stop(d)) => shared.deny(run, call, d, boundary, mode),
            (_, Staged::Pass(mut p)) => {
                let mut escalation = p.escalation.take();
                if mode == Mode::Supervised && escalation.is_none() && !self.grant {
                    let params = snap.gate.as_deref().and_then(|g| g.default_params());
                    match params {
                        Some(params) => {
                            escalation = Some(Box::new(Escalation::manual(
                                Reason::new(self.rule(), "supervised mode"),
                                params.clone(),
                            )));
                        }
                        None => {
                            snap.release(p.breaker.take());
                            shared.release_budget(run, p.reserved);
                            let d = shared.escalation_failed(
                                &snap,
                                "the call is in supervised mode but the policy's \
                                 `escalation.defaults` name no approvers"
                                    .into(),
                            );
                            return shared.deny(run, call, d, boundary, mode);
                        }
                    }
                }
                match escalation {
                    Some(e) => {
                        let v = shared.submit(&snap, run, call, p.admitted, *e, mode);
                        snap.release(p.breaker);
                        shared.release_budget(run, p.reserved);
                        v
                    }
                    None => shared.allow(snap, run, call, p, mode, None),
                }
            }
        }
    }

    /// Recommend mode: nothing runs; the call becomes a recommendation.
    fn recommend<'a>(
        &self,
        shared: &Shared,
        snap: &RunView,
        run: &'a Run,
        call: &ToolCall<'a>,
        staged: Staged,
    ) -> Verdict<'a> {
        let boundary = &*snap.boundary;
        let version = boundary.version();
        let (would_be, admitted) = match staged {
            Staged::Stop(d) if hard(&d) => return shared.deny(run, call, d, boundary, self.mode),
            Staged::Stop(d) => (WouldBe::Deny(d), None),
            Staged::Pass(p) => {
                snap.release(p.breaker);
                shared.release_budget(run, p.reserved);
                let w = match p.escalation {
                    Some(e) => WouldBe::Escalate { reasons: e.reasons },
                    None => WouldBe::Allow,
                };
                (w, Some(p.admitted))
            }
        };
        let n = shared.recommendations.fetch_add(1, Ordering::Relaxed) + 1;
        let id = super::run::recommendation_id(&run.id, n);
        let mut args = shown_args(call.args());
        let marks = match admitted {
            Some(a) => boundary.marks_of(a),
            None => boundary.audit_marks(call.tool()),
        };
        marks.redact_secrets(&mut args);
        let recommendation = Recommendation {
            id: Arc::clone(&id),
            run: run.id.clone(),
            agent: run.ctx.agent().clone(),
            tool: call.tool().to_owned(),
            call_id: call.call_id().map(str::to_owned),
            args,
            would_be,
            policy_version: version,
        };
        let denial = Denial::new(
            DenyCode::Recommended,
            self.rule(),
            format!(
                "recommend mode: the call is not executed; recorded as recommendation `{id}` \
                 for a human"
            ),
        )
        .with_version(version)
        .with_recommendation(recommendation);
        let verdict = shared.deny(run, call, denial, boundary, self.mode);
        if let Some(r) = verdict.recommendation() {
            let max = snap
                .modes
                .as_ref()
                .map_or(crate::mode::DEFAULT_MAX_PENDING_RECOMMENDATIONS, |m| {
                    m.max_pending_recommendations()
                });
            run.recommended
                .lock()
                .insert(n, (r.tool.clone(), r.args.clone()), max);
        }
        verdict
    }
}

/// The arguments as a value, for a recommendation: unparseable or oversized text is a
/// placeholder.
fn shown_args(args: Args<'_>) -> serde_json::Value {
    const MAX: usize = crate::audit::file::MAX_EVENT_BYTES;
    let unreadable = || serde_json::Value::String(crate::audit::UNPARSEABLE_PLACEHOLDER.into());
    match args {
        Args::None => serde_json::Value::Object(Default::default()),
        Args::Value(v) => v.clone(),
        Args::Json(t) if t.len() > MAX => unreadable(),
        Args::Json(t) => serde_json::from_str(t).unwrap_or_else(|_| unreadable()),
    }
}

impl GuardBuilder {
    /// Sets the [modes](crate::mode) calls are decided in (default: every call enforced).
    /// [`build`](Self::build) refuses rules naming tools or roles the boundary does not
    /// define, and supervised mode without an escalation stage whose `defaults` name
    /// approvers.
    pub fn modes(mut self, modes: Modes) -> Self {
        self.modes = Some(modes);
        self
    }
}

/// Checks modes against the boundary and the escalation gate (for [`GuardBuilder::build`]).
pub(super) fn check_modes(
    modes: &Modes,
    boundary: &crate::ActionBoundary,
    gate: Option<&crate::escalation::EscalationGate>,
) -> Result<(), GuardError> {
    let config = |field: String, reason: String| GuardError::Config { field, reason };
    for (i, rule) in modes.section().rules.iter().enumerate() {
        if let Some(tool) = &rule.tool
            && boundary.admitted_by_name(tool).is_none()
        {
            return Err(config(
                format!("modes.rules[{i}].tool"),
                format!("no tool is named `{tool}`"),
            ));
        }
        if let Some(role) = &rule.role
            && !boundary.has_role(role)
        {
            return Err(config(
                format!("modes.rules[{i}].role"),
                format!("no role is named `{role}`"),
            ));
        }
    }
    if let Some(at) = modes.first_use(Mode::Supervised)
        && gate.and_then(|g| g.default_params()).is_none()
    {
        return Err(config(
            at,
            "supervised mode sends calls to the approval queue: it needs an escalation stage \
             whose `defaults` name a chain of approvers"
                .into(),
        ));
    }
    Ok(())
}

impl Guard {
    /// Records what a human actually did about `recommendation` (made in `run`, in recommend
    /// mode): a `human_action` audit event linked to the recommendation's id, with the tool
    /// and arguments under the policy's marks for that tool. Each recommendation takes one
    /// action; a second, or an id this run was never given, is refused.
    ///
    /// ```
    /// use serde_json::json;
    /// use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
    /// use tollgate::mode::{HumanAction, Mode, Modes};
    /// use tollgate::{DenyCode, Guard, RunContext, ToolCall};
    ///
    /// let boundary = ActionBoundary::builder()
    ///     .tool("refund", ToolSpec::write().arg("amount", Arg::number()))
    ///     .role("clerk", RoleSpec::new().tools(["refund"]))
    ///     .build()?;
    /// let guard = Guard::builder(boundary).modes(Modes::all(Mode::Recommend)).build()?;
    /// let run = guard.start_run(RunContext::new("billing-bot", "clerk"))?;
    ///
    /// let verdict = guard.check(&run, &ToolCall::new("refund", r#"{"amount": 40}"#));
    /// assert_eq!(verdict.deny_code(), Some(DenyCode::Recommended)); // nothing runs
    /// let rec = verdict.recommendation().expect("a recommendation").clone();
    ///
    /// // The human refunds 35 instead; the framework records it against the recommendation.
    /// guard.record_human_action(&run, &rec.id, HumanAction::call("refund", json!({"amount": 35})))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record_human_action(
        &self,
        run: &Run,
        recommendation: &str,
        action: HumanAction,
    ) -> Result<(), GuardError> {
        if !Arc::ptr_eq(&run.shared, &self.shared) {
            return Err(GuardError::UnknownRecommendation(recommendation.to_owned()));
        }
        let n = super::run::recommendation_number(&run.id, recommendation);
        let mut issued = run.recommended.lock();
        let standing = match n {
            Some(n) => issued.standing(n),
            None => Standing::Unknown,
        };
        let proposed = match standing {
            Standing::Pending(p) => p,
            Standing::Unknown => {
                return Err(GuardError::UnknownRecommendation(recommendation.to_owned()));
            }
            Standing::Answered => {
                return Err(GuardError::RecommendationAnswered(
                    recommendation.to_owned(),
                ));
            }
            Standing::Dropped => {
                return Err(GuardError::RecommendationExpired(recommendation.to_owned()));
            }
        };
        let snap = self.shared.policy.load();
        let marks = action.tool.as_deref().map(|t| snap.boundary.audit_marks(t));
        let recorded: Result<(), AuditError> = self.shared.record_marked(
            Some(run),
            EventKind::HumanAction {
                recommendation,
                tool: action.tool.as_deref(),
                args: action.args.as_ref(),
                note: action.note.as_deref(),
            },
            || marks,
        );
        recorded?;
        // Live agreement evidence for the run's task type (see `guard/rollout.rs`).
        if let Some(live) = &snap.rollout {
            // Compared as the recommendation was kept: secret values masked on both sides.
            let human_args = action.args.clone().map(|mut a| {
                if let Some(m) = marks {
                    m.redact_secrets(&mut a);
                }
                a
            });
            let agrees = live
                .agreement()
                .compare(
                    &proposed.0,
                    &proposed.1,
                    action.tool.as_deref(),
                    human_args.as_ref(),
                )
                .agrees();
            self.shared.rollout_answer(
                live,
                super::rollout::Answer {
                    run: Some(&run.id),
                    agent: Some(run.ctx.agent()),
                    task_type: run.ctx.task_type().map(|t| t.as_str()),
                    mode: Mode::Recommend,
                    agrees,
                },
            );
        }
        if let Some(n) = n {
            issued.answer(n);
        }
        Ok(())
    }
}
