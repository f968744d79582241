//! The hard rollback, live: a demotion trigger the guard observes itself (a safety denial, a
//! breaker opening, an escalation an approver denied) for a task type of the policy's
//! `[rollout]` section switches that task type to its **first** stage at once, before the next
//! check: an in-memory override every later call of the task type is decided under, recorded as
//! a `rollout_demoted` audit event and sent to the alert sink.
//!
//! Falling agreement is a live trigger too: every human answer the guard sees for a task type
//! above its first stage (an approver's approve, deny or edit in `supervised`; `recommend` can
//! only be a first stage, so human actions against its recommendations, compared with the
//! document's `[agreement]` comparators, count toward promotion, never a demotion) is counted
//! per task type, and once `demote.agreement_min_cases` answers are in
//! and the 95% Wilson lower bound of agreement is below `demote.agreement_below`, the task type
//! is demoted (trigger `agreement_below`). The counts are this guard's since the document
//! version was loaded; `tollgate rollout status` computes the same bound over the whole trail.
//!
//! The override belongs to the document version it was made under: reloading the *same*
//! version keeps it (re-reading an unchanged file does not undo a rollback); a document with
//! another version replaces it (the operator's new document, e.g. the demoted one `tollgate
//! rollout status --write` produces, is the state from then on). An operator who finds a
//! trigger was false lifts it with [`Guard::lift_demotion`](crate::Guard::lift_demotion),
//! recorded as a `rollout_lifted` event.

use std::collections::HashMap;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::agreement::Agreement;
use crate::audit::AuditError;

use crate::audit::EventKind;
use crate::breaker::AlertKind;
use crate::call::{AgentId, RuleId, RunContext, RunId};
use crate::mode::Mode;
use crate::rollout::Rollout;
use crate::verdict::{DenyCode, PolicyVersion};

use super::shared::{Shared, Snapshot};

/// A `[rollout]` section in force, and the task types demoted live under it.
pub(crate) struct LiveRollout {
    pub(crate) version: PolicyVersion,
    rollout: Rollout,
    /// Task type -> (the mode it was demoted to, the rule id recorded with its decisions).
    /// Read by every check of a rollout task type, written once per demotion: a lock-free read
    /// instead of a mutex every thread takes on every check.
    demoted: ArcSwap<HashMap<String, (Mode, RuleId)>>,
    /// How recommendations are compared with what humans did.
    agreement: Agreement,
    /// Task type -> (answers, agreements) seen by this guard in the current stage.
    answers: Mutex<HashMap<String, (u64, u64)>>,
}

/// What triggered a live demotion.
pub(crate) struct Cause<'a> {
    /// `safety_denial`, `breaker_trip`, `human_denial` or `agreement_below`.
    pub(crate) kind: &'static str,
    /// The rule, breaker or approver that triggered it (`boundary.tools.x`, `guard.breaker`).
    pub(crate) rule: &'a str,
    /// The deny code, the tool whose breaker opened, the approval id.
    pub(crate) detail: &'a str,
}

impl LiveRollout {
    pub(crate) fn new(rollout: Rollout, agreement: Agreement, version: PolicyVersion) -> Self {
        Self {
            version,
            rollout,
            demoted: ArcSwap::from_pointee(HashMap::new()),
            agreement,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// The comparators recommendations are checked against human actions with.
    pub(crate) fn agreement(&self) -> &Agreement {
        &self.agreement
    }

    /// The mode (and rule) a demoted task type's calls are decided in.
    pub(crate) fn override_for(&self, task_type: Option<&str>) -> Option<(Mode, RuleId)> {
        let t = task_type?;
        let demoted = self.demoted.load();
        if demoted.is_empty() {
            return None;
        }
        self.rollout.state(t)?;
        demoted.get(t).cloned()
    }

    /// The stage `task_type` is in: the mode it was demoted to live, else its document stage
    /// (`None`: not a rollout task type).
    pub(crate) fn stage_of(&self, task_type: &str) -> Option<Mode> {
        let state = self.rollout.state(task_type)?;
        let demoted = self.demoted.load();
        Some(demoted.get(task_type).map_or(state.mode(), |(m, _)| *m))
    }

    /// Whether `code` is one of the section's safety codes.
    pub(crate) fn is_safety(&self, code: DenyCode) -> bool {
        self.rollout.safety_codes().contains(&code)
    }
}

impl Snapshot {
    /// The mode a call of `tool` in a run with `ctx` is decided in, and the rule that gave it
    /// (`None`: the policy has no `[modes]`). Every place that decides or records a call's
    /// decision asks this, so they agree.
    ///
    /// While the run's task type is demoted live, the **stricter** of the demotion's mode and
    /// the mode the `[modes]` rules give the call (see [`Mode::permissiveness`]): a demotion
    /// never loosens a tool the document pins stricter (a tool held in `recommend` by its own
    /// rule stays there when the task type falls back to `supervised`). On a tie, the
    /// demotion's rule (`rollout.task_types.<t>`), which says the task type is demoted.
    pub(crate) fn call_mode(&self, ctx: &RunContext, tool: &str) -> (Mode, Option<RuleId>) {
        let demoted = self
            .rollout
            .as_ref()
            .and_then(|r| r.override_for(ctx.task_type().map(|t| t.as_str())));
        let resolved = self.modes.as_ref().map(|m| m.resolve_rule(ctx, tool));
        match (resolved, demoted) {
            (Some((mode, rule)), Some((to, demotion))) => {
                let m = to.stricter(mode);
                (m, Some(if m == to { demotion } else { rule.clone() }))
            }
            (None, Some((to, rule))) => (to, Some(rule)),
            (Some((mode, rule)), None) => (mode, Some(rule.clone())),
            (None, None) => (Mode::Enforce, None),
        }
    }
}

impl super::GuardBuilder {
    /// Sets the policy's [staged rollout](crate::rollout): a demotion trigger the guard
    /// observes (a safety denial, a breaker opening, an escalation an approver denied) sends
    /// the run's task type back to its first stage at once, recorded as a `rollout_demoted`
    /// event and alerted. Set by [`Policy::guard`](crate::policy::Policy::guard) from the
    /// document's `[rollout]` section.
    pub fn rollout(mut self, rollout: Rollout) -> Self {
        self.rollout = Some(rollout);
        self
    }

    /// The comparators the live agreement trigger compares recommendations with human actions
    /// by (default: exact). Set by [`Policy::guard`](crate::policy::Policy::guard) from the
    /// document's `[agreement]` section.
    pub fn rollout_agreement(mut self, agreement: Agreement) -> Self {
        self.agreement = Some(agreement);
        self
    }
}

/// A human's answer to what the agent proposed, for the live agreement trigger.
pub(crate) struct Answer<'a> {
    pub(crate) run: Option<&'a RunId>,
    pub(crate) agent: Option<&'a AgentId>,
    pub(crate) task_type: Option<&'a str>,
    /// The mode the proposal was made in (`supervised` or `recommend`).
    pub(crate) mode: Mode,
    pub(crate) agrees: bool,
}

impl super::Guard {
    /// Lifts a live demotion of `task_type` (see [`crate::rollout`]): its calls are decided in
    /// the document's stage again, and the live agreement counts start afresh. For an operator
    /// who finds the trigger was false; recorded as a `rollout_lifted` event naming `by`.
    /// Returns whether the task type was demoted. The record is written first: if it cannot be,
    /// the demotion stays (failing toward the lower stage).
    pub fn lift_demotion(&self, task_type: &str, by: &str) -> Result<bool, AuditError> {
        let snap = self.shared.policy.load();
        let Some(live) = &snap.rollout else {
            return Ok(false);
        };
        let Some(state) = live.rollout.state(task_type) else {
            return Ok(false);
        };
        let Some((demoted_to, _)) = live.demoted.load().get(task_type).cloned() else {
            return Ok(false);
        };
        self.shared.record_event(
            None,
            None,
            EventKind::RolloutLifted {
                task_type,
                from: demoted_to,
                to: state.mode(),
                by,
            },
            || None,
        )?;
        let mut removed = false;
        live.demoted.rcu(|current| {
            removed = current.contains_key(task_type);
            let mut next = HashMap::clone(current);
            next.remove(task_type);
            next
        });
        live.answers.lock().remove(task_type);
        Ok(removed)
    }
}

impl Shared {
    /// A human answered a proposal of `answer.task_type`'s current stage: counts it, and demotes
    /// the task type when the section's agreement bound is set, enough answers are in, and the
    /// 95% Wilson lower bound of agreement is below it.
    pub(crate) fn rollout_answer(&self, live: &LiveRollout, answer: Answer<'_>) {
        let Some(t) = answer.task_type else { return };
        let Some(state) = live.rollout.state(t) else {
            return;
        };
        // Answers of another mode than the stage's, of the first stage (nothing lower), or of a
        // task type already demoted are not this stage's evidence.
        if state.stage == 0 || state.mode() != answer.mode || live.override_for(Some(t)).is_some() {
            return;
        }
        let (cases, agreements) = {
            let mut answers = live.answers.lock();
            let e = answers.entry(t.to_owned()).or_default();
            e.0 += 1;
            e.1 += u64::from(answer.agrees);
            *e
        };
        let Some(bound) = state.demote.agreement_below else {
            return;
        };
        if cases < state.demote.agreement_min_cases {
            return;
        }
        let Some((lower, _)) = crate::agreement::stats::wilson(agreements, cases) else {
            return;
        };
        if lower < bound {
            let rule = format!("rollout.task_types.{t}.demote.agreement_below");
            let detail =
                format!("agreement {agreements}/{cases}, 95% lower bound {lower:.4} < {bound}");
            self.rollout_trigger(
                live,
                answer.run,
                answer.agent,
                Some(t),
                Cause {
                    kind: "agreement_below",
                    rule: &rule,
                    detail: &detail,
                },
            );
        }
    }

    /// A demotion trigger observed for `task_type`: demotes it to its first stage if the section
    /// has it, the trigger is on, and it is not already there. Records and alerts; the override
    /// applies even if the record fails (failing toward the lower stage).
    pub(crate) fn rollout_trigger(
        &self,
        live: &LiveRollout,
        run: Option<&RunId>,
        agent: Option<&AgentId>,
        task_type: Option<&str>,
        cause: Cause<'_>,
    ) {
        let Some(t) = task_type else { return };
        let Some(state) = live.rollout.state(t) else {
            return;
        };
        let on = match cause.kind {
            "safety_denial" => state.demote.on_safety_denial,
            "breaker_trip" => state.demote.on_breaker_trip,
            "human_denial" => state.demote.on_human_denial,
            "agreement_below" => state.demote.agreement_below.is_some(),
            _ => false,
        };
        let first = state.stages[0].mode;
        if !on || state.stage == 0 {
            return;
        }
        let from = state.mode();
        // Copy-on-write under the compare-and-swap: of two threads demoting the same task type
        // at once, exactly one inserts it (and records and alerts).
        let mut inserted = false;
        live.demoted.rcu(|current| {
            inserted = !current.contains_key(t);
            let mut next = HashMap::clone(current);
            if inserted {
                next.insert(
                    t.to_owned(),
                    (first, RuleId::new(format!("rollout.task_types.{t}"))),
                );
            }
            next
        });
        if !inserted {
            return;
        }
        let _ = self.record_event(
            run,
            agent,
            EventKind::RolloutDemoted {
                task_type: t,
                from,
                to: first,
                trigger: cause.kind,
                rule: cause.rule,
                detail: cause.detail,
            },
            || None,
        );
        if let Some(sink) = &self.alerts {
            sink.alert(&crate::breaker::Alert {
                kind: AlertKind::RolloutDemoted,
                agent: agent.map(|a| a.to_string()),
                run: run.map(|r| r.to_string()),
                tool: None,
                detail: format!(
                    "task type `{t}` demoted from {} to {} at once: {} ({}, {})",
                    from.as_str(),
                    first.as_str(),
                    cause.kind,
                    cause.rule,
                    cause.detail
                ),
            });
        }
    }
}
