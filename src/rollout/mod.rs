//! Staged rollout: per task type, an ordered list of [modes](crate::mode::Mode) an agent climbs
//! on measured criteria, and falls back down on the first sign of trouble.
//!
//! The policy document's `[rollout]` section names, per task type, the stages (e.g.
//! `recommend` -> `supervised` -> `autonomous`), the criteria to leave each stage, and the
//! triggers that send the task type back to its first stage:
//!
//! ```toml
//! [modes]
//! default = "enforce"
//! rules = [{ task_type = "refunds", mode = "recommend" }]   # the current stage
//!
//! [rollout]
//! auto_promote = false                       # the default: promotions are proposed only
//! safety_codes = ["path_escape", "cross_compartment", "flow_violation", "clearance_too_low"]
//!
//! [rollout.task_types.refunds]
//! stages = [
//!   { mode = "recommend", promote = { min_cases = 200, min_agreement_lower_bound = 0.9, max_safety_denials = 0, no_breaker_trip_within = "7d", max_budget_overruns = 0 } },
//!   { mode = "supervised", promote = { min_cases = 500, min_agreement_lower_bound = 0.95, max_edit_rate = 0.02 } },
//!   { mode = "autonomous" },
//! ]
//! [rollout.task_types.refunds.demote]        # every trigger is on by default
//! on_breaker_trip = true
//! on_safety_denial = true
//! on_human_denial = true
//! agreement_below = 0.8                      # Wilson lower bound below 0.8...
//! agreement_min_cases = 30                   # ...over at least 30 cases (the default)
//! ```
//!
//! - **Stages go from the strictest to the most permissive**, in the order of
//!   [`Mode::permissiveness`]: `recommend` (nothing runs), `supervised` (a human approves every
//!   call), `enforce` / `autonomous` (as decided). Each mode at most once, and
//!   [`Rollout::compile`] refuses a stage stricter than the one before it, so the first stage,
//!   where every demotion sends the task type, is always the strictest.
//!   **`shadow` is never a stage**: it lets denied and escalated calls run, so a rollback to it
//!   would run the very call that triggered it. Shadow is for observing a new *rule* of the
//!   policy (a `[modes]` rule of its own), not for earning an agent autonomy.
//! - **The current stage is the document's own `[modes]` rule** `{ task_type = "refunds", mode
//!   = ... }` (a rule with the task type as its only matcher; required). Changing stage is
//!   changing that rule: a new document, a new policy version, which the operator signs and
//!   reloads ([`Guard::reload`](crate::Guard::reload)). [`apply`] writes that document.
//! - **Evidence** ([`Evidence`]) is gathered from the audit trail in one pass: each decision
//!   record of a rollout task type's run says which stage the task type was in
//!   (`tollgate.rollout.stage`: the mode it was demoted to live, else the document's stage), and
//!   a task type's *stretch* is the latest run of its decisions made in one stage. Only events
//!   of the stretch in the current stage count for promotion and demotion (a new stage starts
//!   with a clean slate); breaker trips count in their window whatever the stage. A call that a
//!   `[modes]` rule of its own (a tool's) puts in another mode (`tollgate.mode`) is still a
//!   decision of the stage: it changes no stretch, and its safety denials count. (Records
//!   written before the stage was recorded are read by their `tollgate.mode`; one in a mode
//!   that is none of the task type's stages is taken as the current stretch's.)
//! - **Agreement**: in `recommend`, a recommendation paired with the human's action (the
//!   [`crate::agreement`] comparators); in `supervised`, an approver's answer (approve = agrees,
//!   deny = disagrees). The promotion bound is on the 95% Wilson lower bound.
//! - **Promotion** is a [`Proposal`] carrying the figures and every criterion with its verdict;
//!   it is applied only when the document says `auto_promote = true`.
//! - **Demotion** ([`ProposalKind::Demote`]) is due on the first triggering event of the stretch
//!   and always marked to apply: back to the **first** stage (the hard rollback).
//! - **Live**: a guard built from the document ([`GuardBuilder::rollout`](crate::GuardBuilder::rollout),
//!   set by [`Policy::guard`](crate::policy::Policy::guard)) applies a demotion itself, at once:
//!   a safety denial (actual or would-be), a breaker opening or an approver's denial it
//!   observes for a task type above its first stage decides that task type's very next call in
//!   the first stage's mode (rule `rollout.task_types.<t>`; a call whose own `[modes]` rule is
//!   stricter stays in that rule's mode), recorded as a `rollout_demoted`
//!   event and alerted. The override lasts while the same document version is in force (a
//!   reload of that version keeps it); [`Evidence`] reads the record (`demoted_live`), and the
//!   demotion is proposed so the document catches up. Falling agreement is live too, over the
//!   answers this guard saw since the version was loaded (approve, deny, edit in `supervised`;
//!   human actions against recommendations in `recommend`); `status` computes it over the
//!   whole trail. An operator lifts a false demotion with
//!   [`Guard::lift_demotion`](crate::Guard::lift_demotion) (a `rollout_lifted` record).
//!
//! - **Edits**: in `supervised`, an approver may approve with edited arguments
//!   ([`ApprovalQueue::edit`](crate::escalation::ApprovalQueue::edit), an `escalation_edited`
//!   record): a case that is not an agreement, counted in [`StageEvidence::edits`]; the
//!   `max_edit_rate` criterion bounds their share of the stage's cases.

mod evaluate;
mod evidence;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mode::Mode;
use crate::verdict::DenyCode;

pub use evaluate::{
    Criterion, Proposal, ProposalKind, TaskStatus, Trigger, apply, evaluate, status,
};
pub use evidence::{Evidence, EvidenceBuilder, RolloutError, StageEvidence, TriggerEvent};

/// The deny codes counted as safety denials when the document does not list its own.
pub const DEFAULT_SAFETY_CODES: [DenyCode; 4] = [
    DenyCode::PathEscape,
    DenyCode::CrossCompartment,
    DenyCode::FlowViolation,
    DenyCode::ClearanceTooLow,
];

/// The policy document's `[rollout]` section (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RolloutSection {
    /// Apply promotions without a person (default false: they are only proposed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_promote: bool,
    /// Deny codes counted as safety denials (default [`DEFAULT_SAFETY_CODES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_codes: Option<Vec<DenyCode>>,
    /// The stages of each task type.
    #[serde(default, deserialize_with = "crate::boundary::spec::unique_keys")]
    pub task_types: BTreeMap<String, TaskRollout>,
}

/// One task type's stages and demotion triggers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TaskRollout {
    /// The stages, strictest first (at least two, each mode once, never `shadow`, none stricter
    /// than the one before it: see [`Mode::permissiveness`]).
    pub stages: Vec<Stage>,
    /// What sends the task type back to its first stage.
    #[serde(default)]
    pub demote: Demote,
}

/// One stage: a mode and what it takes to leave it for the next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Stage {
    /// The mode the task type runs in at this stage.
    pub mode: Mode,
    /// The criteria for the next stage (absent: no promotion from here; the last stage has
    /// none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<Criteria>,
}

impl Stage {
    /// A stage in `mode` with no promotion criteria.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            promote: None,
        }
    }

    /// With these promotion criteria.
    pub fn promote(mut self, criteria: Criteria) -> Self {
        self.promote = Some(criteria);
        self
    }
}

/// Promotion criteria: every one set must be met.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Criteria {
    /// At least this many answered cases in the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cases: Option<u64>,
    /// The 95% Wilson lower bound of agreement at least this (in `[0, 1]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement_lower_bound: Option<f64>,
    /// At most this many safety denials in the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_safety_denials: Option<u64>,
    /// No breaker of the task type's runs opened within this long before now.
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub no_breaker_trip_within: Option<Duration>,
    /// At most this many budget exhaustions in the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_overruns: Option<u64>,
    /// At most this share (in `[0, 1]`) of the stage's supervised cases edited by the approver
    /// before approval ([`ApprovalQueue::edit`](crate::escalation::ApprovalQueue::edit)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_edit_rate: Option<f64>,
}

/// Demotion triggers: any one sends the task type back to its first stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Demote {
    /// A breaker of one of the task type's runs opened (default true).
    #[serde(default = "yes")]
    pub on_breaker_trip: bool,
    /// A safety denial (default true).
    #[serde(default = "yes")]
    pub on_safety_denial: bool,
    /// An approver denied an escalation (default true).
    #[serde(default = "yes")]
    pub on_human_denial: bool,
    /// The Wilson lower bound of agreement fell below this (in `[0, 1]`)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_below: Option<f64>,
    /// ...over at least this many cases (default 30).
    #[serde(default = "thirty")]
    pub agreement_min_cases: u64,
}

impl Default for Demote {
    fn default() -> Self {
        Self {
            on_breaker_trip: true,
            on_safety_denial: true,
            on_human_denial: true,
            agreement_below: None,
            agreement_min_cases: 30,
        }
    }
}

fn yes() -> bool {
    true
}

fn thirty() -> u64 {
    30
}

/// A `[rollout]` section that does not hold together: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
#[non_exhaustive]
pub struct RolloutConfigError {
    /// The field path (`rollout.task_types.refunds.stages[1].mode`).
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// A task type's compiled plan and where it stands.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RolloutState {
    /// The task type.
    pub task_type: String,
    /// Its stages.
    pub stages: Vec<Stage>,
    /// Index of the current stage (the mode its `[modes]` rule gives).
    pub stage: usize,
    /// Its demotion triggers.
    pub demote: Demote,
}

impl RolloutState {
    /// The current stage's mode.
    pub fn mode(&self) -> Mode {
        self.stages[self.stage].mode
    }
}

/// The compiled `[rollout]` section together with each task type's current stage (read from the
/// document's `[modes]`). Built by [`Policy`](crate::policy::Policy) (see
/// [`Policy::rollout`](crate::policy::Policy::rollout)) or [`Rollout::compile`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    auto_promote: bool,
    safety: Vec<DenyCode>,
    tasks: Vec<RolloutState>,
}

impl Rollout {
    /// Compiles `section` given the current mode of each task type (`current(task_type)`,
    /// `None` when no `[modes]` rule names the task type alone). Errors carry the field path.
    ///
    /// ```
    /// use tollgate::mode::Mode;
    /// use tollgate::rollout::{Criteria, Rollout, RolloutSection, Stage, TaskRollout};
    ///
    /// let mut section = RolloutSection::default();
    /// let mut refunds = TaskRollout::default();
    /// refunds.stages = vec![
    ///     Stage::new(Mode::Recommend).promote(Criteria::default()),
    ///     Stage::new(Mode::Autonomous),
    /// ];
    /// section.task_types.insert("refunds".into(), refunds);
    /// let rollout = Rollout::compile(&section, |_| Some(Mode::Recommend))?;
    /// assert_eq!(rollout.states()[0].mode(), Mode::Recommend);
    /// assert!(Rollout::compile(&section, |_| Some(Mode::Shadow)).is_err()); // not a stage
    /// # Ok::<(), tollgate::rollout::RolloutConfigError>(())
    /// ```
    pub fn compile(
        section: &RolloutSection,
        current: impl Fn(&str) -> Option<Mode>,
    ) -> Result<Self, RolloutConfigError> {
        let err = |path: String, reason: String| RolloutConfigError { path, reason };
        let mut tasks = Vec::new();
        for (task, plan) in &section.task_types {
            let at = format!("rollout.task_types.{task}");
            if plan.stages.len() < 2 {
                return Err(err(
                    format!("{at}.stages"),
                    "a rollout needs at least two stages".into(),
                ));
            }
            for (i, stage) in plan.stages.iter().enumerate() {
                if plan.stages[..i].iter().any(|s| s.mode == stage.mode) {
                    return Err(err(
                        format!("{at}.stages[{i}].mode"),
                        format!("`{}` is already an earlier stage", stage.mode),
                    ));
                }
                if stage.mode == Mode::Shadow {
                    return Err(err(
                        format!("{at}.stages[{i}].mode"),
                        "`shadow` cannot be a rollout stage: it lets denied and escalated calls \
                         run, so a demotion to it (or a promotion to it) would open what the \
                         policy closes; shadow is for observing a new rule (a `[modes]` rule), \
                         not for rolling out an agent"
                            .into(),
                    ));
                }
                if let Some(prev) = i.checked_sub(1).map(|j| plan.stages[j].mode)
                    && stage.mode.permissiveness() < prev.permissiveness()
                {
                    return Err(err(
                        format!("{at}.stages[{i}].mode"),
                        format!(
                            "`{}` is stricter than the stage before it (`{prev}`): stages go \
                             from the strictest to the most permissive (recommend, supervised, \
                             enforce or autonomous), so that the hard rollback to the first \
                             stage never lets more run",
                            stage.mode
                        ),
                    ));
                }
                let last = i + 1 == plan.stages.len();
                if last && stage.promote.is_some() {
                    return Err(err(
                        format!("{at}.stages[{i}].promote"),
                        "the last stage has nothing to be promoted to".into(),
                    ));
                }
                let proportions = stage.promote.as_ref().map(|c| {
                    [
                        ("min_agreement_lower_bound", c.min_agreement_lower_bound),
                        ("max_edit_rate", c.max_edit_rate),
                    ]
                });
                for (name, value) in proportions.into_iter().flatten() {
                    if let Some(b) = value
                        && !(0.0..=1.0).contains(&b)
                    {
                        return Err(err(
                            format!("{at}.stages[{i}].promote.{name}"),
                            format!("{b} is not a proportion between 0 and 1"),
                        ));
                    }
                }
            }
            if let Some(b) = plan.demote.agreement_below
                && !(0.0..=1.0).contains(&b)
            {
                return Err(err(
                    format!("{at}.demote.agreement_below"),
                    format!("{b} is not a proportion between 0 and 1"),
                ));
            }
            let Some(mode) = current(task) else {
                return Err(err(
                    at,
                    format!(
                        "the current stage is the mode of a `[modes]` rule with `task_type = \
                         \"{task}\"` as its only matcher, and there is none: add one"
                    ),
                ));
            };
            let Some(stage) = plan.stages.iter().position(|s| s.mode == mode) else {
                return Err(err(
                    at,
                    format!(
                        "the `[modes]` rule for `{task}` gives `{mode}`, which is not one of its stages"
                    ),
                ));
            };
            tasks.push(RolloutState {
                task_type: task.clone(),
                stages: plan.stages.clone(),
                stage,
                demote: plan.demote.clone(),
            });
        }
        Ok(Self {
            auto_promote: section.auto_promote,
            safety: section
                .safety_codes
                .clone()
                .unwrap_or_else(|| DEFAULT_SAFETY_CODES.to_vec()),
            tasks,
        })
    }

    /// Whether promotions apply without a person.
    pub fn auto_promote(&self) -> bool {
        self.auto_promote
    }

    /// The deny codes counted as safety denials.
    pub fn safety_codes(&self) -> &[DenyCode] {
        &self.safety
    }

    /// Every task type's plan and current stage, by task type name.
    pub fn states(&self) -> &[RolloutState] {
        &self.tasks
    }

    /// One task type's plan.
    pub fn state(&self, task_type: &str) -> Option<&RolloutState> {
        self.tasks.iter().find(|t| t.task_type == task_type)
    }
}
