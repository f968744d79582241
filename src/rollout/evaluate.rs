//! Evaluating the criteria and triggers against the evidence, and applying the outcome to the
//! document.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::mode::{Mode, ModeRule};
use crate::policy::Document;

use super::{Evidence, Rollout, RolloutState, StageEvidence, TriggerEvent};

/// One promotion criterion, checked: what the document asks, what the evidence shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Criterion {
    /// The criterion's name as written in the document (`min_cases`).
    pub name: &'static str,
    /// What it asks, in words (`>= 200`).
    pub required: String,
    /// What the evidence shows (`137`, `none`).
    pub actual: String,
    /// Whether it is met.
    pub met: bool,
}

/// Why a demotion is due.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Trigger {
    /// A triggering event (breaker trip, safety denial, human denial).
    Event(TriggerEvent),
    /// The agreement lower bound fell below the document's bound.
    AgreementBelow {
        /// The bound.
        bound: f64,
        /// The lower bound observed.
        lower: f64,
        /// Over this many cases.
        cases: u64,
    },
}

/// Promotion or demotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProposalKind {
    /// To the next stage, every criterion met.
    Promote,
    /// Back to the first stage, on a trigger.
    Demote,
}

/// A change of stage, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Proposal {
    /// The task type.
    pub task_type: String,
    /// Promotion or demotion.
    pub kind: ProposalKind,
    /// The current stage's mode.
    pub from: Mode,
    /// The mode proposed.
    pub to: Mode,
    /// The figures it rests on.
    pub evidence: StageEvidence,
    /// The criteria met (a promotion meets all of its stage's).
    pub criteria_met: Vec<Criterion>,
    /// What triggered a demotion (first first).
    pub triggers: Vec<Trigger>,
    /// Whether [`apply`] applies it: always for a demotion, for a promotion only under
    /// `auto_promote = true`.
    pub applies: bool,
}

/// Where one task type stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TaskStatus {
    /// The task type.
    pub task_type: String,
    /// The current stage's mode.
    pub stage: Mode,
    /// Its index among the stages (0 = first).
    pub stage_index: usize,
    /// Every stage's mode, lowest first.
    pub stages: Vec<Mode>,
    /// The next stage's mode, if there is one.
    pub next: Option<Mode>,
    /// The figures of the current stretch (empty if its decisions were made in another mode
    /// than the current stage's, or there were none).
    pub evidence: StageEvidence,
    /// The promotion criteria of the current stage, each checked.
    pub criteria: Vec<Criterion>,
    /// Demotion triggers found.
    pub triggers: Vec<Trigger>,
    /// The proposal, if any (a demotion takes precedence over a promotion).
    pub proposal: Option<Proposal>,
}

/// Where every task type of `rollout` stands given `evidence` at `now`.
pub fn status(rollout: &Rollout, evidence: &Evidence, now: SystemTime) -> Vec<TaskStatus> {
    let now_ns = u64::try_from(
        now.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX);
    rollout
        .states()
        .iter()
        .map(|state| task_status(rollout, state, evidence, now_ns))
        .collect()
}

/// The proposals for every task type of `rollout` given `evidence` at `now`: demotions (marked
/// to apply) and promotions (marked to apply only under `auto_promote`).
///
/// ```
/// use std::time::SystemTime;
/// use serde_json::json;
/// use tollgate::agreement::Agreement;
/// use tollgate::mode::Mode;
/// use tollgate::rollout::{
///     Criteria, EvidenceBuilder, ProposalKind, Rollout, RolloutSection, Stage, TaskRollout, evaluate,
/// };
///
/// let mut section = RolloutSection::default();
/// let mut criteria = Criteria::default();
/// criteria.min_cases = Some(1);
/// let mut t = TaskRollout::default();
/// t.stages = vec![Stage::new(Mode::Recommend).promote(criteria), Stage::new(Mode::Autonomous)];
/// section.task_types.insert("refunds".into(), t);
/// let rollout = Rollout::compile(&section, |_| Some(Mode::Recommend))?;
/// let agreement = Agreement::exact();
/// let mut b = EvidenceBuilder::new(&rollout, &agreement);
/// b.push(&json!({"event": "run_started", "tollgate.run.id": "r", "tollgate.task_type": "refunds"}));
/// b.push(&json!({"event": "decision", "tollgate.run.id": "r", "tollgate.mode": "recommend",
///     "gen_ai.tool.name": "lookup", "gen_ai.tool.call.arguments": {"id": 7},
///     "tollgate.recommendation.id": "rec-1"}));
/// b.push(&json!({"event": "human_action", "tollgate.run.id": "r", "tollgate.recommendation.id": "rec-1",
///     "gen_ai.tool.name": "lookup", "gen_ai.tool.call.arguments": {"id": 7}}));
/// let proposals = evaluate(&rollout, &b.finish(), SystemTime::now());
/// assert_eq!(proposals[0].kind, ProposalKind::Promote);
/// assert_eq!((proposals[0].from, proposals[0].to), (Mode::Recommend, Mode::Autonomous));
/// assert!(!proposals[0].applies, "proposed, not applied");
/// # Ok::<(), tollgate::rollout::RolloutConfigError>(())
/// ```
pub fn evaluate(rollout: &Rollout, evidence: &Evidence, now: SystemTime) -> Vec<Proposal> {
    status(rollout, evidence, now)
        .into_iter()
        .filter_map(|s| s.proposal)
        .collect()
}

fn task_status(
    rollout: &Rollout,
    state: &RolloutState,
    evidence: &Evidence,
    now_ns: u64,
) -> TaskStatus {
    let mode = state.mode();
    let gathered = evidence.task_types.get(&state.task_type);
    // Only the stretch in the current stage's mode is this stage's evidence; breaker trips count
    // in their window whatever the stage.
    let ev = match gathered {
        Some(e) if e.mode == Some(mode) => e.clone(),
        other => StageEvidence {
            last_breaker_trip_unix_nano: other.and_then(|e| e.last_breaker_trip_unix_nano),
            // The guard demoted this stage live (its detail reads `<from> -> <to>: ...`): the
            // document must follow.
            demoted_live: other
                .and_then(|e| e.demoted_live.clone())
                .filter(|l| l.detail.starts_with(&format!("{} -> ", mode.as_str()))),
            ..StageEvidence::default()
        },
    };
    let mut criteria = Vec::new();
    if let Some(c) = &state.stages[state.stage].promote {
        if let Some(n) = c.min_cases {
            criteria.push(Criterion {
                name: "min_cases",
                required: format!(">= {n}"),
                actual: ev.cases.to_string(),
                met: ev.cases >= n,
            });
        }
        if let Some(b) = c.min_agreement_lower_bound {
            criteria.push(Criterion {
                name: "min_agreement_lower_bound",
                required: format!(">= {b}"),
                actual: ev
                    .agreement_lower
                    .map_or("none (no cases)".into(), |l| format!("{l:.4}")),
                met: ev.agreement_lower.is_some_and(|l| l >= b),
            });
        }
        if let Some(n) = c.max_safety_denials {
            criteria.push(Criterion {
                name: "max_safety_denials",
                required: format!("<= {n}"),
                actual: ev.safety_denials.to_string(),
                met: ev.safety_denials <= n,
            });
        }
        if let Some(d) = c.no_breaker_trip_within {
            let window = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            let since = now_ns.saturating_sub(window);
            let last = ev.last_breaker_trip_unix_nano;
            criteria.push(Criterion {
                name: "no_breaker_trip_within",
                required: format!("none in the last {}", crate::units::format_duration(d)),
                actual: match last {
                    None => "none".into(),
                    Some(t) => format!(
                        "last at {t} ns, {} ago",
                        crate::units::format_duration(std::time::Duration::from_nanos(
                            now_ns.saturating_sub(t)
                        ))
                    ),
                },
                met: last.is_none_or(|t| t < since),
            });
        }
        if let Some(n) = c.max_budget_overruns {
            criteria.push(Criterion {
                name: "max_budget_overruns",
                required: format!("<= {n}"),
                actual: ev.budget_overruns.to_string(),
                met: ev.budget_overruns <= n,
            });
        }
        if let Some(r) = c.max_edit_rate {
            // No cases, no edits: the rate is 0 (`min_cases` is the criterion for enough cases).
            let rate = if ev.cases == 0 {
                0.0
            } else {
                ev.edits as f64 / ev.cases as f64
            };
            criteria.push(Criterion {
                name: "max_edit_rate",
                required: format!("<= {r}"),
                actual: format!("{rate:.4} ({} of {} cases)", ev.edits, ev.cases),
                met: rate <= r,
            });
        }
    }
    let d = &state.demote;
    let mut triggers: Vec<Trigger> = ev
        .first_triggers
        .iter()
        .filter(|t| match t.kind.as_str() {
            "breaker_trip" => d.on_breaker_trip,
            "safety_denial" => d.on_safety_denial,
            "human_denial" => d.on_human_denial,
            _ => false,
        })
        .cloned()
        .map(Trigger::Event)
        .collect();
    // Demoted live by the guard: the stretch is the first stage's, and the demotion (which
    // names its trigger) is the one reason the document must follow.
    if let Some(live) = &ev.demoted_live {
        triggers = vec![Trigger::Event(live.clone())];
    }
    triggers.sort_by_key(|t| match t {
        Trigger::Event(e) => e.seq,
        Trigger::AgreementBelow { .. } => u64::MAX,
    });
    if let (Some(bound), Some(lower)) = (d.agreement_below, ev.agreement_lower)
        && ev.cases >= d.agreement_min_cases
        && lower < bound
    {
        triggers.push(Trigger::AgreementBelow {
            bound,
            lower,
            cases: ev.cases,
        });
    }
    let next = state.stages.get(state.stage + 1).map(|s| s.mode);
    let first = state.stages[0].mode;
    let proposal = if !triggers.is_empty() && state.stage > 0 {
        Some(Proposal {
            task_type: state.task_type.clone(),
            kind: ProposalKind::Demote,
            from: mode,
            to: first,
            evidence: ev.clone(),
            criteria_met: Vec::new(),
            triggers: triggers.clone(),
            applies: true,
        })
    } else if let Some(to) = next
        && state.stages[state.stage].promote.is_some()
        && criteria.iter().all(|c| c.met)
    {
        Some(Proposal {
            task_type: state.task_type.clone(),
            kind: ProposalKind::Promote,
            from: mode,
            to,
            evidence: ev.clone(),
            criteria_met: criteria.clone(),
            triggers: Vec::new(),
            applies: rollout.auto_promote(),
        })
    } else {
        None
    };
    TaskStatus {
        task_type: state.task_type.clone(),
        stage: mode,
        stage_index: state.stage,
        stages: state.stages.iter().map(|s| s.mode).collect(),
        next,
        evidence: ev,
        criteria,
        triggers,
        proposal,
    }
}

/// The document with every proposal marked [`applies`](Proposal::applies) applied: the
/// `[modes]` rule naming the task type alone gets the proposal's mode. The guard does not
/// change by itself: compile the result ([`Policy::from_document`](crate::policy::Policy::from_document)),
/// sign it if your deployment signs policies, and [`Guard::reload`](crate::Guard::reload) it.
/// Returns `None` when nothing applies.
pub fn apply(document: &Document, proposals: &[Proposal]) -> Option<Document> {
    let mut out = document.clone();
    let modes = out.modes.as_mut()?;
    let mut changed = false;
    for p in proposals.iter().filter(|p| p.applies) {
        let solo = |r: &ModeRule| {
            r.task_type.as_deref() == Some(p.task_type.as_str())
                && r.tool.is_none()
                && r.role.is_none()
                && r.agent.is_none()
        };
        if let Some(rule) = modes.rules.iter_mut().find(|r| solo(r))
            && rule.mode != p.to
        {
            rule.mode = p.to;
            changed = true;
        }
    }
    changed.then_some(out)
}
