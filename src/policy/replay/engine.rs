//! The replay engine: the candidate's guard and gate driven through the recorded events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::{
    ChangeCounts, DecisionKind, Replay, ReplayChange, ReplayDecision, ReplayError, ReplayExample,
    ReplayProgress, ReplayReport,
};
use crate::call::{AgentId, Args, RuleId, RunContext, RunId, ToolCall};
use crate::clock::{ManualClock, MonoTime};
use crate::escalation::{EscalationGate, GateInput, exact_args};
use crate::guard::{DetachedPermit, Guard, GuardError, Permit, Run};
use crate::policy::{Bindings, Policy};
use crate::verdict::{Outcome, Verdict};

/// The per-run state of the replay.
enum Live {
    Active(Box<ActiveRun>),
    /// The candidate refuses to start the run: every call is denied with this code and rule.
    Refused {
        code: &'static str,
        rule: RuleId,
    },
}

struct ActiveRun {
    run: Run,
    pending: Pending,
    /// Tools whose next decision resumes an approved escalation, with how many.
    resumes: Vec<(Box<str>, u32)>,
}

impl ActiveRun {
    fn take_resume(&mut self, tool: &str) -> bool {
        let Some(i) = self.resumes.iter().position(|(t, _)| &**t == tool) else {
            return false;
        };
        self.resumes[i].1 -= 1;
        if self.resumes[i].1 == 0 {
            self.resumes.swap_remove(i);
        }
        true
    }
}

/// Permits waiting for their recorded outcome, by call id (`i:<id>`) or tool (`t:<tool>`).
/// `None` stands for a call that ran then but not under the candidate: its outcome is consumed
/// without effect, so it cannot be matched to another call of the same tool.
#[derive(Default)]
struct Pending(HashMap<Box<str>, VecDeque<Option<DetachedPermit>>>);

impl Pending {
    fn key(buf: &mut String, call_id: Option<&str>, tool: &str) {
        buf.clear();
        match call_id {
            Some(id) => {
                buf.push_str("i:");
                buf.push_str(id);
            }
            None => {
                buf.push_str("t:");
                buf.push_str(tool);
            }
        }
    }

    fn push(&mut self, key: &str, permit: Option<DetachedPermit>) {
        match self.0.get_mut(key) {
            Some(q) => q.push_back(permit),
            None => {
                self.0.insert(key.into(), VecDeque::from([permit]));
            }
        }
    }

    /// The oldest entry under `key`; `None` if there is none.
    fn pop(&mut self, key: &str) -> Option<Option<DetachedPermit>> {
        let q = self.0.get_mut(key)?;
        let p = q.pop_front();
        if q.is_empty() {
            self.0.remove(key);
        }
        p
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The replay itself: the candidate's guard and gate, the live runs, the tallies.
pub(super) struct Engine<'p> {
    candidate: &'p Policy,
    guard: Guard,
    gate: Option<&'p EscalationGate>,
    clock: Arc<ManualClock>,
    /// `time_unix_nano` of the first record: the clock's zero.
    t0: Option<u64>,
    runs: HashMap<String, Live>,
    /// Pending permits of runs that ended before their outcome arrived.
    orphans: HashMap<String, Pending>,
    key: String,
    escalation_rule: RuleId,
    max_examples: usize,
    pub(super) records: u64,
    report: Tally,
}

#[derive(Default)]
struct Tally {
    runs: u64,
    refused_runs: u64,
    decisions: u64,
    changes: ChangeCounts,
    uncertain: ChangeCounts,
    per_tool: BTreeMap<String, ChangeCounts>,
    other_tools: ChangeCounts,
    examples: BTreeMap<ReplayChange, Vec<ReplayExample>>,
    resumed: u64,
    skipped: u64,
    unmatched_outcomes: u64,
}

/// One decision as the replay sees it, borrowing from the record or the guard.
struct Decided<'x> {
    kind: DecisionKind,
    code: Option<&'x str>,
    rule: Option<&'x str>,
}

impl Decided<'_> {
    fn owned(&self) -> ReplayDecision {
        ReplayDecision::new(self.kind, self.code, self.rule)
    }
}

fn malformed(seq: u64, field: &'static str, reason: impl Into<String>) -> ReplayError {
    ReplayError::Malformed {
        seq,
        field,
        reason: reason.into(),
    }
}

/// A required string field.
fn req_str<'v>(ev: &'v Value, seq: u64, field: &'static str) -> Result<&'v str, ReplayError> {
    match ev.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(malformed(seq, field, "not a string")),
        None => Err(malformed(seq, field, "missing")),
    }
}

/// An optional string field (absent or null: `None`).
fn opt_str<'v>(
    ev: &'v Value,
    seq: u64,
    field: &'static str,
) -> Result<Option<&'v str>, ReplayError> {
    match ev.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(malformed(seq, field, "not a string")),
    }
}

fn opt_u64(ev: &Value, seq: u64, field: &'static str) -> Result<Option<u64>, ReplayError> {
    match ev.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| malformed(seq, field, "not a non-negative integer")),
    }
}

/// Whether recorded arguments hold a value the log does not show: a `[REDACTED:...]`
/// placeholder (secret, sensitive, unparseable), a keyed hash, or an omitted-value placeholder.
fn holds_redacted(v: &Value) -> bool {
    match v {
        Value::String(s) => s.starts_with("[REDACTED:") || s.starts_with("hmac-sha256:"),
        Value::Array(a) => a.iter().any(holds_redacted),
        Value::Object(o) => o.contains_key("tollgate.omitted") || o.values().any(holds_redacted),
        _ => false,
    }
}

/// The text of raw arguments that did not parse, recorded as `{"unparsed": text}`.
fn unparsed_text(args: &Value) -> Option<&str> {
    let o = args.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.get("unparsed")?.as_str()
}

impl<'p> Engine<'p> {
    pub(super) fn new(candidate: &'p Policy, max_examples: usize) -> Result<Self, ReplayError> {
        let mut doc = candidate.document().clone();
        // The engine evaluates the candidate's gate itself (no approval queue that keeps every
        // request), the replay writes no log, and mints nothing.
        doc.escalation = None;
        doc.audit = None;
        doc.credentials = None;
        let bare = Policy::from_document(doc)?;
        let clock = Arc::new(ManualClock::new());
        let guard = bare.guard(Bindings::new().clock(clock.clone()))?;
        Ok(Engine {
            candidate,
            guard,
            gate: candidate.escalation(),
            clock,
            t0: None,
            runs: HashMap::new(),
            orphans: HashMap::new(),
            key: String::new(),
            escalation_rule: RuleId::new("guard.escalation"),
            max_examples,
            records: 0,
            report: Tally::default(),
        })
    }

    pub(super) fn progress(&self, started: Instant) -> ReplayProgress {
        ReplayProgress {
            records: self.records,
            decisions: self.report.decisions,
            changed: self.report.changes.changed(),
            elapsed: started.elapsed(),
        }
    }

    pub(super) fn finish(mut self, started: Instant, verified: bool) -> ReplayReport {
        // Runs still live end now; permits never completed are dropped (recorded nowhere).
        self.runs.clear();
        self.orphans.clear();
        let t = self.report;
        ReplayReport {
            candidate_version: self.candidate.version(),
            verified,
            records: self.records,
            runs: t.runs,
            refused_runs: t.refused_runs,
            decisions: t.decisions,
            changes: t.changes,
            uncertain: t.uncertain,
            per_tool: t.per_tool,
            other_tools: t.other_tools,
            examples: t.examples,
            resumed: t.resumed,
            skipped: t.skipped,
            unmatched_outcomes: t.unmatched_outcomes,
            elapsed: started.elapsed(),
        }
    }

    /// Moves the clock to the record's time (never back: a wall clock stepped back in the log
    /// leaves the replay clock where it was).
    fn advance(&mut self, t: u64) {
        let t0 = *self.t0.get_or_insert(t);
        self.clock.set(MonoTime::from_nanos(t.saturating_sub(t0)));
    }

    pub(super) fn record(&mut self, seq: u64, ev: &Value) -> Result<(), ReplayError> {
        self.records += 1;
        if let Some(t) = opt_u64(ev, seq, "time_unix_nano")? {
            self.advance(t);
        }
        match req_str(ev, seq, "event")? {
            "run_started" => self.run_started(seq, ev),
            "decision" => self.decision(seq, ev),
            "outcome" => self.outcome(seq, ev),
            "run_finished" => {
                self.run_finished(req_str(ev, seq, "tollgate.run.id")?);
                Ok(())
            }
            "escalation_resumed" => self.resumed(seq, ev),
            "kill_switch" => self.kill_switch(seq, ev),
            // Credentials, escalation requests and decisions, breaker transitions (the
            // candidate's breakers decide for themselves), reasoning, policy reloads, the
            // sink's own records: nothing to replay.
            _ => Ok(()),
        }
    }

    fn run_started(&mut self, seq: u64, ev: &Value) -> Result<(), ReplayError> {
        let id = req_str(ev, seq, "tollgate.run.id")?;
        let mut ctx = RunContext::new(
            req_str(ev, seq, "gen_ai.agent.id")?,
            req_str(ev, seq, "tollgate.role")?,
        );
        if let Some(t) = opt_str(ev, seq, "tollgate.task_type")? {
            ctx = ctx.for_task(t);
        }
        if let Some(t) = opt_str(ev, seq, "tollgate.trigger")? {
            ctx = ctx.triggered_by(t);
        }
        if let Some(c) = opt_str(ev, seq, "tollgate.compartment")? {
            ctx = ctx.in_compartment(c);
        }
        match ev.get("tollgate.read_only") {
            None | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => ctx = ctx.read_only(),
            Some(_) => return Err(malformed(seq, "tollgate.read_only", "not a boolean")),
        }
        // A run id started again while still live (its end is not in the log): end it first.
        self.run_finished(id);
        let live = match self.guard.start_run_with_id(ctx, Some(RunId::new(id))) {
            Ok(run) => Live::Active(Box::new(ActiveRun {
                run,
                pending: Pending::default(),
                resumes: Vec::new(),
            })),
            Err(GuardError::UnknownRole(role)) => Live::Refused {
                code: "unknown_role",
                rule: RuleId::new(format!("roles.{role}")),
            },
            Err(GuardError::CompartmentRefused(_)) => Live::Refused {
                code: "compartment_refused",
                rule: RuleId::new("compartments.id_pattern"),
            },
            // Duplicate ids were ended above, and there is no sink to fail.
            Err(e) => return Err(malformed(seq, "tollgate.run.id", e.to_string())),
        };
        self.report.runs += 1;
        if matches!(live, Live::Refused { .. }) {
            self.report.refused_runs += 1;
        }
        self.runs.insert(id.to_owned(), live);
        Ok(())
    }

    fn run_finished(&mut self, id: &str) {
        if let Some(Live::Active(a)) = self.runs.remove(id) {
            let ActiveRun { run, pending, .. } = *a;
            // Ending the run revokes nothing (nothing was minted) and teaches the baseline.
            drop(run);
            if !pending.is_empty() {
                self.orphans.insert(id.to_owned(), pending);
            }
        }
    }

    fn resumed(&mut self, seq: u64, ev: &Value) -> Result<(), ReplayError> {
        let id = req_str(ev, seq, "tollgate.run.id")?;
        let tool = req_str(ev, seq, "gen_ai.tool.name")?;
        if let Some(Live::Active(a)) = self.runs.get_mut(id) {
            match a.resumes.iter_mut().find(|(t, _)| &**t == tool) {
                Some((_, n)) => *n += 1,
                None => a.resumes.push((tool.into(), 1)),
            }
        }
        Ok(())
    }

    fn kill_switch(&mut self, seq: u64, ev: &Value) -> Result<(), ReplayError> {
        const BY: &str = "policy replay";
        let action = req_str(ev, seq, "tollgate.kill.action")?;
        let scope = req_str(ev, seq, "tollgate.kill.scope")?;
        let target = opt_str(ev, seq, "tollgate.kill.target")?;
        let suspend = match action {
            "suspend" => true,
            "resume" => false,
            _ => return Ok(()),
        };
        // No sink: the kill switch's own records and flushes cannot fail.
        let _ = match (scope, target) {
            ("global", _) if suspend => self.guard.suspend_all(BY),
            ("global", _) => self.guard.resume_all(BY),
            ("agent", Some(agent)) => {
                let agent = AgentId::new(agent);
                if suspend {
                    self.guard.suspend_agent(&agent, BY)
                } else {
                    self.guard.resume_agent(&agent, BY)
                }
            }
            ("run", Some(run)) => match self.runs.get(run) {
                Some(Live::Active(a)) if suspend => self.guard.suspend_run(&a.run, BY),
                Some(Live::Active(a)) => self.guard.resume_run(&a.run, BY),
                _ => Ok(()),
            },
            _ => Ok(()),
        };
        Ok(())
    }

    fn outcome(&mut self, seq: u64, ev: &Value) -> Result<(), ReplayError> {
        let id = req_str(ev, seq, "tollgate.run.id")?;
        let tool = req_str(ev, seq, "gen_ai.tool.name")?;
        let call_id = opt_str(ev, seq, "gen_ai.tool.call.id")?;
        Pending::key(&mut self.key, call_id, tool);
        let entry = match self.runs.get_mut(id) {
            Some(Live::Active(a)) => a.pending.pop(&self.key),
            Some(Live::Refused { .. }) => return Ok(()),
            None => match self.orphans.get_mut(id) {
                Some(p) => {
                    let e = p.pop(&self.key);
                    if p.is_empty() {
                        self.orphans.remove(id);
                    }
                    e
                }
                // A run the log does not start: its decisions were skipped too.
                None => return Ok(()),
            },
        };
        match entry {
            Some(Some(permit)) => {
                // No sink: completing records nothing and cannot fail.
                let _ = permit.complete(recorded_outcome(seq, ev)?);
            }
            Some(None) => {}
            None => self.report.unmatched_outcomes += 1,
        }
        Ok(())
    }

    fn decision(&mut self, seq: u64, ev: &Value) -> Result<(), ReplayError> {
        let run_id = req_str(ev, seq, "tollgate.run.id")?;
        let tool = req_str(ev, seq, "gen_ai.tool.name")?;
        let call_id = opt_str(ev, seq, "gen_ai.tool.call.id")?;
        let old = Decided {
            kind: match req_str(ev, seq, "tollgate.decision")? {
                "allow" => DecisionKind::Allow,
                "escalate" => DecisionKind::Escalate,
                "deny" => DecisionKind::Deny,
                other => {
                    return Err(malformed(
                        seq,
                        "tollgate.decision",
                        format!("unknown decision `{other}`"),
                    ));
                }
            },
            code: opt_str(ev, seq, "tollgate.deny.code")?,
            rule: opt_str(ev, seq, "tollgate.rule")?,
        };
        if old.kind == DecisionKind::Deny && old.code.is_none() {
            return Err(malformed(seq, "tollgate.deny.code", "missing on a denial"));
        }
        let Some(args) = ev.get("gen_ai.tool.call.arguments") else {
            return Err(malformed(seq, "gen_ai.tool.call.arguments", "missing"));
        };
        let confidence = match ev.get("tollgate.confidence") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| malformed(seq, "tollgate.confidence", "not a number"))?
                    as f32,
            ),
        };
        let flags: Vec<&str> = match ev.get("tollgate.flags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|f| {
                    f.as_str()
                        .ok_or_else(|| malformed(seq, "tollgate.flags", "not a list of strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(malformed(seq, "tollgate.flags", "not a list of strings")),
        };
        // Raw text that did not parse was recorded as `{"unparsed": text}` (and denied for it).
        let raw = match old.code {
            Some("malformed_args" | "args_too_large") => unparsed_text(args),
            _ => None,
        };
        let uncertain = holds_redacted(args)
            // Parsed arguments denied as malformed: what made them so (a duplicate key, say)
            // may not survive in the record.
            || (raw.is_none() && old.code == Some("malformed_args"));
        let mut call = ToolCall::new(tool, raw.map_or(Args::Value(args), Args::Json));
        if !flags.is_empty() {
            call = call.with_flags(&flags);
        }
        if let Some(id) = call_id {
            call = call.with_call_id(id);
        }
        if let Some(c) = confidence {
            call = call.with_confidence(c);
        }

        self.report.decisions += 1;
        let Some(live) = self.runs.get_mut(run_id) else {
            self.report.skipped += 1;
            return Ok(());
        };
        let (new_kind, new_code, new_rule, resumed): (_, _, Option<RuleId>, _) = match live {
            Live::Refused { code, rule } => {
                (DecisionKind::Deny, Some(*code), Some(rule.clone()), false)
            }
            Live::Active(a) => {
                let resumed = a.take_resume(tool);
                Pending::key(&mut self.key, call_id, tool);
                let (kind, code, rule) = match self.guard.check(&a.run, &call) {
                    Verdict::Deny(d) => (
                        DecisionKind::Deny,
                        Some(d.code().as_str()),
                        Some(d.rule().clone()),
                    ),
                    // The replay guard has no gate; kept for completeness.
                    Verdict::Escalate(r) => (
                        DecisionKind::Escalate,
                        None,
                        r.reasons.first().map(|x| x.rule.clone()),
                    ),
                    Verdict::Allow(permit) => {
                        let gate = if resumed { None } else { self.gate };
                        match gate.and_then(|g| escalation(g, &permit, &call)) {
                            Some(Ok(rule)) => {
                                permit.withdraw();
                                (DecisionKind::Escalate, None, Some(rule))
                            }
                            Some(Err(())) => {
                                permit.withdraw();
                                (
                                    DecisionKind::Deny,
                                    Some("escalation_failed"),
                                    Some(self.escalation_rule.clone()),
                                )
                            }
                            None => {
                                let permit = permit.detach();
                                if old.kind == DecisionKind::Allow {
                                    a.pending.push(&self.key, Some(permit));
                                } else {
                                    // It did not run then, so no outcome is recorded: it ran
                                    // now, usage unknown (its reservation stands).
                                    let _ = permit.complete(Outcome::success());
                                }
                                (DecisionKind::Allow, None, None)
                            }
                        }
                    }
                };
                if old.kind == DecisionKind::Allow && kind != DecisionKind::Allow {
                    // It ran then: its outcome will come, and must not complete another call.
                    a.pending.push(&self.key, None);
                }
                (kind, code, rule, resumed)
            }
        };
        let new = Decided {
            kind: new_kind,
            code: new_code,
            rule: new_rule.as_ref().map(RuleId::as_str),
        };
        self.tally(seq, run_id, tool, call_id, &old, &new, uncertain, resumed);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn tally(
        &mut self,
        seq: u64,
        run: &str,
        tool: &str,
        call_id: Option<&str>,
        old: &Decided<'_>,
        new: &Decided<'_>,
        uncertain: bool,
        resumed: bool,
    ) {
        let t = &mut self.report;
        let change = ReplayChange::of(old.kind, old.code, new.kind, new.code);
        t.changes.add(change);
        if uncertain {
            t.uncertain.add(change);
        }
        if resumed {
            t.resumed += 1;
        }
        if change == ReplayChange::Unchanged {
            return;
        }
        if let Some(c) = t.per_tool.get_mut(tool) {
            c.add(change);
        } else if t.per_tool.len() < Replay::MAX_TOOLS {
            t.per_tool.entry(tool.to_owned()).or_default().add(change);
        } else {
            t.other_tools.add(change);
        }
        let examples = t.examples.entry(change).or_default();
        if examples.len() < self.max_examples {
            examples.push(ReplayExample {
                seq,
                run: run.to_owned(),
                tool: tool.to_owned(),
                call_id: call_id.map(str::to_owned),
                old: old.owned(),
                new: new.owned(),
                uncertain,
                resumed,
            });
        }
    }
}

/// The candidate's escalation stage for a call its guard allowed, given exactly what the
/// guard's own stage gives the gate. `Some(Ok(rule))`: escalated (the first matched rule);
/// `Some(Err(()))`: it would be escalated but its arguments cannot be put before a human, so
/// the guard denies it (`escalation_failed`); `None`: no rule applies.
fn escalation(
    gate: &EscalationGate,
    permit: &Permit<'_>,
    call: &ToolCall<'_>,
) -> Option<Result<RuleId, ()>> {
    let info = permit.info();
    let mut input = GateInput::from_call(call, info.effect()).flags(call.flags());
    if let Some(i) = info.tier().and_then(|t| gate.tier_index(t)) {
        input = input.tier(i);
    }
    if let Some(f) = permit.budget_used() {
        input = input.budget_used(f);
    }
    let matched = gate.evaluate(&input);
    let first = matched.iter().next()?;
    if exact_args(call.args()).is_err() {
        return Some(Err(()));
    }
    Some(Ok(gate
        .rule_id(first)
        .cloned()
        .unwrap_or_else(|| RuleId::new("escalation"))))
}

/// The outcome an `outcome` record describes (status, tokens, cost).
fn recorded_outcome(seq: u64, ev: &Value) -> Result<Outcome, ReplayError> {
    const FIELD: &str = "tollgate.outcome";
    let Some(o) = ev.get(FIELD) else {
        return Err(malformed(seq, FIELD, "missing"));
    };
    let mut outcome = match o.get("status").and_then(Value::as_str) {
        Some("success") => Outcome::success(),
        Some("abandoned") => Outcome::abandoned(),
        // The message may be an omitted-value placeholder; the breakers count the status.
        Some("error") => Outcome::error(
            o.get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => return Err(malformed(seq, FIELD, "no known `status`")),
    };
    outcome.input_tokens = opt_u64(ev, seq, "gen_ai.usage.input_tokens")?;
    outcome.output_tokens = opt_u64(ev, seq, "gen_ai.usage.output_tokens")?;
    outcome.cost_micros = opt_u64(ev, seq, "tollgate.cost_micros")?;
    Ok(outcome)
}
