//! The hard rollback, live: a demotion trigger the guard observes itself (a safety denial, a
//! breaker opening, an escalation an approver denied) for a task type of the policy's
//! `[rollout]` section switches that task type to its **first** stage at once, before the next
//! check: an in-memory override every later call of the task type is decided under, recorded as
//! a `rollout_demoted` audit event and sent to the alert sink.
//!
//! The override belongs to the document version it was made under: reloading the *same*
//! version keeps it (re-reading an unchanged file does not undo a rollback); a document with
//! another version replaces it (the operator's new document, e.g. the demoted one `tollgate
//! rollout status --write` produces, is the state from then on).

use std::collections::HashMap;

use arc_swap::ArcSwap;

use crate::audit::EventKind;
use crate::breaker::AlertKind;
use crate::call::{AgentId, RuleId, RunId};
use crate::mode::Mode;
use crate::rollout::Rollout;
use crate::verdict::{DenyCode, PolicyVersion};

use super::shared::Shared;

/// A `[rollout]` section in force, and the task types demoted live under it.
pub(crate) struct LiveRollout {
    pub(crate) version: PolicyVersion,
    rollout: Rollout,
    /// Task type -> (the mode it was demoted to, the rule id recorded with its decisions).
    /// Read by every check of a rollout task type, written once per demotion: a lock-free read
    /// instead of a mutex every thread takes on every check.
    demoted: ArcSwap<HashMap<String, (Mode, RuleId)>>,
}

/// What triggered a live demotion.
pub(crate) struct Cause<'a> {
    /// `safety_denial`, `breaker_trip` or `human_denial`.
    pub(crate) kind: &'static str,
    /// The rule, breaker or approver that triggered it (`boundary.tools.x`, `guard.breaker`).
    pub(crate) rule: &'a str,
    /// The deny code, the tool whose breaker opened, the approval id.
    pub(crate) detail: &'a str,
}

impl LiveRollout {
    pub(crate) fn new(rollout: Rollout, version: PolicyVersion) -> Self {
        Self {
            version,
            rollout,
            demoted: ArcSwap::from_pointee(HashMap::new()),
        }
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

    /// Whether `code` is one of the section's safety codes.
    pub(crate) fn is_safety(&self, code: DenyCode) -> bool {
        self.rollout.safety_codes().contains(&code)
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
}

impl Shared {
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
