//! Gathering a rollout's evidence from the audit trail, in one streaming pass.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::agreement::Agreement;
use crate::agreement::stats::wilson;
use crate::audit::file::VerifyError;
use crate::audit::query::Query;
use crate::mode::Mode;

use super::Rollout;

/// The evidence could not be gathered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// The log could not be read or failed verification: a log that does not verify is not
    /// evidence, so nothing is evaluated.
    #[error("the audit log cannot be used: {0}")]
    Log(#[from] VerifyError),
}

/// The first event of a stretch that triggers a demotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TriggerEvent {
    /// `breaker_trip`, `safety_denial` or `human_denial`.
    pub kind: String,
    /// The record's `seq`.
    pub seq: u64,
    /// When it happened.
    pub time_unix_nano: u64,
    /// The run.
    pub run: String,
    /// What happened: the deny code, the tool whose breaker opened, the approver.
    pub detail: String,
}

/// The figures of one task type's current stretch: the latest run of its decisions made in one
/// stage (`tollgate.rollout.stage`; whatever mode a tool's own `[modes]` rule gave a call), and
/// what happened to its runs meanwhile.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StageEvidence {
    /// The stage (its mode) of the stretch (`None`: no decision of the task type in the log).
    pub mode: Option<Mode>,
    /// When the stretch began (its first decision).
    pub since_unix_nano: Option<u64>,
    /// Decisions in the stretch.
    pub decisions: u64,
    /// Answered cases: recommendations a human answered (recommend), or approvers' answers
    /// (supervised).
    pub cases: u64,
    /// Of those, agreements (the human's action agreed; the approver approved).
    pub agreements: u64,
    /// 95% Wilson lower bound of `agreements / cases`.
    pub agreement_lower: Option<f64>,
    /// 95% Wilson upper bound.
    pub agreement_upper: Option<f64>,
    /// Safety denials (actual, or would-be in shadow and recommend).
    pub safety_denials: u64,
    /// Budget exhaustions (actual or would-be).
    pub budget_overruns: u64,
    /// Escalations an approver denied.
    pub human_denials: u64,
    /// Supervised proposals an approver edited before approving (each also a case, and not an
    /// agreement).
    pub edits: u64,
    /// Breakers of the task type's runs that opened in the stretch.
    pub breaker_trips: u64,
    /// When a breaker of the task type's runs last opened (any stretch).
    pub last_breaker_trip_unix_nano: Option<u64>,
    /// The first event of the stretch that triggers a demotion (breaker trip, safety denial,
    /// human denial; whether it does depends on the document's `demote`).
    pub first_triggers: Vec<TriggerEvent>,
    /// The guard's live demotion of the task type (a `rollout_demoted` record, kind
    /// `live_demotion`, detail `from -> to: trigger`), while the task type's decisions are still
    /// made in the mode it was demoted to.
    pub demoted_live: Option<TriggerEvent>,
}

/// Every rollout task type's [`StageEvidence`], as gathered by an [`EvidenceBuilder`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Evidence {
    /// Records taken (those of the kinds the evidence is gathered from).
    pub records: u64,
    /// By task type (only the rollout's task types).
    pub task_types: std::collections::BTreeMap<String, StageEvidence>,
}

impl Evidence {
    /// Reads the log in `dir` (verifying its chain) and gathers the evidence for `rollout`,
    /// comparing recommendations with `agreement`. `query` narrows what is read (a time range,
    /// a progress hook).
    pub fn from_log(
        dir: impl AsRef<Path>,
        rollout: &Rollout,
        agreement: &Agreement,
        query: Query,
    ) -> Result<Self, RolloutError> {
        let records = query
            .kind("run_started")
            .kind("decision")
            .kind("human_action")
            .kind("breaker_transition")
            .kind("escalation_decided")
            .kind("escalation_edited")
            .kind("rollout_demoted")
            .kind("rollout_lifted")
            .open(dir)?;
        let mut b = EvidenceBuilder::new(rollout, agreement);
        for r in records {
            b.push(&r?.event);
        }
        Ok(b.finish())
    }
}

#[derive(Default)]
struct Stretch {
    epoch: u64,
    ev: StageEvidence,
}

struct Pending {
    task: usize,
    epoch: u64,
    tool: String,
    args: Value,
}

/// Gathers [`Evidence`] one audit event (as JSON) at a time. Held: run -> task type for the
/// rollout's task types, recommendations awaiting an answer, and fixed counters per task type.
///
/// ```
/// use serde_json::json;
/// use tollgate::agreement::Agreement;
/// use tollgate::mode::Mode;
/// use tollgate::rollout::{EvidenceBuilder, Rollout, RolloutSection, Stage, TaskRollout};
///
/// let mut section = RolloutSection::default();
/// let mut t = TaskRollout::default();
/// t.stages = vec![Stage::new(Mode::Enforce), Stage::new(Mode::Autonomous)];
/// section.task_types.insert("refunds".into(), t);
/// let rollout = Rollout::compile(&section, |_| Some(Mode::Enforce))?;
/// let agreement = Agreement::exact();
/// let mut b = EvidenceBuilder::new(&rollout, &agreement);
/// b.push(&json!({"event": "run_started", "tollgate.run.id": "r1", "tollgate.task_type": "refunds"}));
/// b.push(&json!({"event": "decision", "seq": 2, "time_unix_nano": 5, "tollgate.run.id": "r1",
///     "gen_ai.tool.name": "read", "tollgate.decision": "deny", "tollgate.deny.code": "path_escape"}));
/// let e = b.finish();
/// assert_eq!(e.task_types["refunds"].safety_denials, 1);
/// assert_eq!(e.task_types["refunds"].first_triggers[0].kind, "safety_denial");
/// # Ok::<(), tollgate::rollout::RolloutConfigError>(())
/// ```
pub struct EvidenceBuilder<'a> {
    agreement: &'a Agreement,
    names: Vec<String>,
    safety: Vec<&'static str>,
    runs: HashMap<String, usize>,
    pending: HashMap<String, Pending>,
    stretches: Vec<Stretch>,
    last_trip: Vec<Option<u64>>,
    /// The latest live demotion of each task type and the mode it demoted to.
    live: Vec<Option<(Mode, TriggerEvent)>>,
    /// Each task type's stage modes (to read records written before `tollgate.rollout.stage`).
    stages: Vec<Vec<Mode>>,
    records: u64,
}

impl<'a> EvidenceBuilder<'a> {
    /// A builder for `rollout`'s task types, comparing with `agreement`.
    pub fn new(rollout: &Rollout, agreement: &'a Agreement) -> Self {
        let names: Vec<String> = rollout
            .states()
            .iter()
            .map(|s| s.task_type.clone())
            .collect();
        Self {
            agreement,
            stretches: names.iter().map(|_| Stretch::default()).collect(),
            last_trip: vec![None; names.len()],
            live: vec![None; names.len()],
            stages: rollout
                .states()
                .iter()
                .map(|s| s.stages.iter().map(|st| st.mode).collect())
                .collect(),
            names,
            safety: rollout.safety_codes().iter().map(|c| c.as_str()).collect(),
            runs: HashMap::new(),
            pending: HashMap::new(),
            records: 0,
        }
    }

    /// Takes one event; events of other kinds or runs, and records missing fields, are ignored.
    pub fn push(&mut self, event: &Value) {
        self.records += 1;
        let s = |k: &str| event.get(k).and_then(Value::as_str);
        if s("event") == Some("rollout_demoted") {
            self.push_demotion(event);
            return;
        }
        if s("event") == Some("rollout_lifted") {
            // An operator lifted the live demotion: the document's stage stands again.
            if let Some(task) =
                s("tollgate.task_type").and_then(|t| self.names.iter().position(|n| n == t))
            {
                self.live[task] = None;
            }
            return;
        }
        let Some(run) = s("tollgate.run.id") else {
            return;
        };
        if s("event") == Some("run_started") {
            if let Some(i) =
                s("tollgate.task_type").and_then(|t| self.names.iter().position(|n| n == t))
            {
                self.runs.insert(run.to_owned(), i);
            }
            return;
        }
        let Some(&task) = self.runs.get(run) else {
            return;
        };
        let seq = event.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let time = event
            .get("time_unix_nano")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let trigger = |kind: &str, detail: &str| TriggerEvent {
            kind: kind.to_owned(),
            seq,
            time_unix_nano: time,
            run: run.to_owned(),
            detail: detail.to_owned(),
        };
        match s("event") {
            Some("decision") => {
                let parse = |m: &str| serde_json::from_value::<Mode>(Value::String(m.to_owned()));
                let mode = match s("tollgate.mode") {
                    None => Mode::Enforce,
                    Some(m) => match parse(m) {
                        Ok(m) => m,
                        Err(_) => return,
                    },
                };
                // The stage the task type was in. A call a `[modes]` rule of its own (a tool's)
                // puts in another mode is still a decision of that stage: it neither starts a
                // new stretch nor wipes the stage's evidence (its safety denials count).
                let stage = match s("tollgate.rollout.stage") {
                    Some(m) => match parse(m) {
                        Ok(m) => m,
                        Err(_) => return,
                    },
                    // A record written before the stage was: its mode, unless that is not one
                    // of the task type's stages (then it cannot be a stage change).
                    None => match self.stretches[task].ev.mode {
                        Some(current) if !self.stages[task].contains(&mode) => current,
                        _ => mode,
                    },
                };
                let st = &mut self.stretches[task];
                if st.ev.mode != Some(stage) {
                    // Decisions in another stage than the one it was demoted to: the live
                    // demotion was superseded (a new document).
                    if self.live[task].as_ref().is_some_and(|(to, _)| *to != stage) {
                        self.live[task] = None;
                    }
                    st.epoch += 1;
                    st.ev = StageEvidence {
                        mode: Some(stage),
                        since_unix_nano: Some(time),
                        last_breaker_trip_unix_nano: self.last_trip[task],
                        ..StageEvidence::default()
                    };
                }
                st.ev.decisions += 1;
                let codes = [s("tollgate.deny.code"), s("tollgate.shadow.deny.code")];
                if let Some(code) = codes.iter().flatten().find(|c| self.safety.contains(c)) {
                    st.ev.safety_denials += 1;
                    note(&mut st.ev, trigger("safety_denial", code));
                }
                if codes.contains(&Some("budget_exhausted")) {
                    st.ev.budget_overruns += 1;
                }
                // A recommendation is the stage's case only when the stage is recommend (not one
                // a tool's own rule makes in another stage).
                if let (Some(id), Some(tool), true) = (
                    s("tollgate.recommendation.id"),
                    s("gen_ai.tool.name"),
                    mode == stage,
                ) {
                    let args = event
                        .get("gen_ai.tool.call.arguments")
                        .cloned()
                        .unwrap_or_else(|| Value::Object(Default::default()));
                    self.pending.insert(
                        id.to_owned(),
                        Pending {
                            task,
                            epoch: st.epoch,
                            tool: tool.to_owned(),
                            args,
                        },
                    );
                }
            }
            Some("human_action") => {
                let Some(p) =
                    s("tollgate.recommendation.id").and_then(|id| self.pending.remove(id))
                else {
                    return;
                };
                let st = &mut self.stretches[p.task];
                if p.epoch != st.epoch {
                    return; // made in an earlier stretch: not this stage's evidence
                }
                let agrees = self
                    .agreement
                    .compare(
                        &p.tool,
                        &p.args,
                        s("gen_ai.tool.name"),
                        event.get("gen_ai.tool.call.arguments"),
                    )
                    .agrees();
                st.ev.cases += 1;
                st.ev.agreements += u64::from(agrees);
            }
            Some("escalation_decided") => {
                let st = &mut self.stretches[task];
                match s("tollgate.approval.decision") {
                    Some("approve") if st.ev.mode == Some(Mode::Supervised) => {
                        st.ev.cases += 1;
                        st.ev.agreements += 1;
                    }
                    Some("deny") => {
                        if st.ev.mode == Some(Mode::Supervised) {
                            st.ev.cases += 1;
                        }
                        st.ev.human_denials += 1;
                        let who = s("tollgate.approval.approver").unwrap_or("an approver");
                        note(&mut st.ev, trigger("human_denial", who));
                    }
                    _ => {}
                }
            }
            Some("escalation_edited") => {
                let st = &mut self.stretches[task];
                if st.ev.mode == Some(Mode::Supervised) {
                    st.ev.cases += 1;
                    st.ev.edits += 1;
                }
            }
            Some("breaker_transition") if s("tollgate.breaker.to") == Some("open") => {
                self.last_trip[task] = Some(time);
                let st = &mut self.stretches[task];
                st.ev.breaker_trips += 1;
                st.ev.last_breaker_trip_unix_nano = Some(time);
                let tool = s("gen_ai.tool.name").unwrap_or("");
                note(&mut st.ev, trigger("breaker_trip", tool));
            }
            _ => {}
        }
    }

    /// A `rollout_demoted` record: the guard demoted a task type live.
    fn push_demotion(&mut self, event: &Value) {
        let s = |k: &str| event.get(k).and_then(Value::as_str);
        let Some(task) =
            s("tollgate.task_type").and_then(|t| self.names.iter().position(|n| n == t))
        else {
            return;
        };
        let mode = |k: &str| {
            s(k).and_then(|m| serde_json::from_value::<Mode>(Value::String(m.to_owned())).ok())
        };
        let (Some(from), Some(to)) = (mode("tollgate.rollout.from"), mode("tollgate.rollout.to"))
        else {
            return;
        };
        let t = TriggerEvent {
            kind: "live_demotion".into(),
            seq: event.get("seq").and_then(Value::as_u64).unwrap_or(0),
            time_unix_nano: event
                .get("time_unix_nano")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            run: s("tollgate.run.id").unwrap_or("").to_owned(),
            detail: format!(
                "{} -> {}: {} {} ({})",
                from.as_str(),
                to.as_str(),
                s("tollgate.rollout.trigger").unwrap_or("?"),
                s("tollgate.rollout.detail").unwrap_or("?"),
                s("tollgate.rule").unwrap_or("?")
            ),
        };
        self.live[task] = Some((to, t));
    }

    /// The evidence gathered.
    pub fn finish(self) -> Evidence {
        let task_types = self
            .names
            .into_iter()
            .zip(self.stretches)
            .zip(self.live)
            .map(|((name, st), live)| {
                let mut ev = st.ev;
                ev.demoted_live = live.map(|(_, t)| t);
                let w = wilson(ev.agreements, ev.cases);
                ev.agreement_lower = w.map(|w| w.0);
                ev.agreement_upper = w.map(|w| w.1);
                (name, ev)
            })
            .collect();
        Evidence {
            records: self.records,
            task_types,
        }
    }
}

/// Keeps the first event of each trigger kind.
fn note(ev: &mut StageEvidence, t: TriggerEvent) {
    if !ev.first_triggers.iter().any(|f| f.kind == t.kind) {
        ev.first_triggers.push(t);
    }
}
