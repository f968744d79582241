//! The replay engine: the candidate's guard and gate driven through the recorded events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::event::{Event, ignorable, required};
use super::{
    ChangeCounts, DecisionKind, Replay, ReplayChange, ReplayDecision, ReplayError, ReplayExample,
    ReplayReport, Uncertainty,
};
use crate::call::{AgentId, RuleId, RunContext, RunId, ToolCall};
use crate::clock::{ManualClock, MonoTime};
use crate::escalation::{EscalationGate, GateInput, args_are_exact};
use crate::flow::FlowRules;
use crate::guard::{DetachedPermit, Guard, GuardError, Permit, Run};
use crate::mode::{Mode, Modes};
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
    /// The candidate's flow rules, which the replay cannot apply (see `decision`).
    flow: Option<&'p FlowRules>,
    /// The candidate's deployment modes, applied to the replay guard's `enforce` decisions.
    modes: Option<&'p Modes>,
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
    uncertain_redacted: u64,
    uncertain_flow: u64,
    per_tool: BTreeMap<String, ChangeCounts>,
    other_tools: ChangeCounts,
    examples: BTreeMap<ReplayChange, Vec<ReplayExample>>,
    uncertain_examples: Vec<ReplayExample>,
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

/// Whether recorded argument text holds a value the log does not show: a `[REDACTED:...]`
/// placeholder (secret, sensitive, unparseable), a keyed hash, or an omitted-value placeholder.
/// (A string the agent wrote that merely contains one of these is counted too: it errs towards
/// calling a result uncertain.)
fn holds_redacted(args: &str) -> bool {
    args.contains("\"[REDACTED:")
        || args.contains("\"hmac-sha256:")
        || args.contains("\"tollgate.omitted\"")
}

/// Deny codes of the stages that decide before any argument is read (kill switch, breaker, the
/// boundary's role, tool, clearance and read-only checks, a run the candidate refuses): such a
/// denial stands whatever values the log redacted.
fn decided_before_arguments(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "suspended"
                | "circuit_open"
                | "foreign_run"
                | "unknown_role"
                | "unknown_tool"
                | "tool_not_allowed"
                | "clearance_too_low"
                | "read_only"
                | "compartment_refused"
        )
    )
}

/// The text of raw arguments that did not parse, recorded as `{"unparsed": text}`.
fn unparsed_text(args: &str) -> Option<String> {
    if !args.starts_with("{\"unparsed\":") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(args).ok()?;
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.get("unparsed")?.as_str().map(str::to_owned)
}

impl<'p> Engine<'p> {
    pub(super) fn new(candidate: &'p Policy, max_examples: usize) -> Result<Self, ReplayError> {
        let mut doc = candidate.document().clone();
        // The engine evaluates the candidate's gate itself (no approval queue that keeps every
        // request), the replay writes no log, and mints nothing.
        doc.escalation = None;
        doc.audit = None;
        doc.credentials = None;
        // Flow rules decide on where argument values came from: the tool outputs and prompts
        // a run saw, which the log never records (see `decision`).
        doc.flow = None;
        // Modes are applied to the guard's decisions here (supervised mode would need the
        // escalation section's approvers).
        doc.modes = None;
        let bare = Policy::from_document(doc)?;
        let clock = Arc::new(ManualClock::new());
        // Offline: the deployment's shared state (`[backend]`) is not touched.
        let guard = bare.guard(Bindings::new().offline().clock(clock.clone()))?;
        Ok(Engine {
            candidate,
            guard,
            gate: candidate.escalation(),
            flow: candidate.flow(),
            modes: candidate.modes(),
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
            uncertain_redacted: t.uncertain_redacted,
            uncertain_flow: t.uncertain_flow,
            per_tool: t.per_tool,
            other_tools: t.other_tools,
            examples: t.examples,
            uncertain_examples: t.uncertain_examples,
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

    /// Replays one record (its seq and event bytes).
    pub(super) fn record(&mut self, seq: u64, bytes: &[u8]) -> Result<(), ReplayError> {
        self.records += 1;
        let ev = match Event::parse(seq, bytes) {
            Ok(ev) => ev,
            // A kind the replay does not act on: its fields are not its concern.
            Err(_) if ignorable(bytes) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(t) = ev.time {
            self.advance(t);
        }
        match required(seq, "event", ev.kind.as_deref())? {
            "run_started" => self.run_started(seq, &ev),
            "decision" => self.decision(seq, &ev),
            "outcome" => self.outcome(seq, &ev),
            "run_finished" => {
                self.run_finished(required(seq, "tollgate.run.id", ev.run.as_deref())?);
                Ok(())
            }
            "escalation_resumed" => self.resumed(seq, &ev),
            "kill_switch" => self.kill_switch(seq, &ev),
            // Credentials, escalation requests and decisions, breaker transitions (the
            // candidate's breakers decide for themselves), reasoning, policy reloads, the
            // sink's own records: nothing to replay.
            _ => Ok(()),
        }
    }

    fn run_started(&mut self, seq: u64, ev: &Event<'_>) -> Result<(), ReplayError> {
        let id = required(seq, "tollgate.run.id", ev.run.as_deref())?;
        let mut ctx = RunContext::new(
            required(seq, "gen_ai.agent.id", ev.agent.as_deref())?,
            required(seq, "tollgate.role", ev.role.as_deref())?,
        );
        if let Some(t) = ev.task_type.as_deref() {
            ctx = ctx.for_task(t);
        }
        if let Some(t) = ev.trigger.as_deref() {
            ctx = ctx.triggered_by(t);
        }
        if let Some(c) = ev.compartment.as_deref() {
            ctx = ctx.in_compartment(c);
        }
        if ev.read_only == Some(true) {
            ctx = ctx.read_only();
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

    fn resumed(&mut self, seq: u64, ev: &Event<'_>) -> Result<(), ReplayError> {
        let id = required(seq, "tollgate.run.id", ev.run.as_deref())?;
        let tool = required(seq, "gen_ai.tool.name", ev.tool.as_deref())?;
        if let Some(Live::Active(a)) = self.runs.get_mut(id) {
            match a.resumes.iter_mut().find(|(t, _)| &**t == tool) {
                Some((_, n)) => *n += 1,
                None => a.resumes.push((tool.into(), 1)),
            }
        }
        Ok(())
    }

    fn kill_switch(&mut self, seq: u64, ev: &Event<'_>) -> Result<(), ReplayError> {
        const BY: &str = "policy replay";
        let action = required(seq, "tollgate.kill.action", ev.kill_action.as_deref())?;
        let scope = required(seq, "tollgate.kill.scope", ev.kill_scope.as_deref())?;
        let suspend = match action {
            "suspend" => true,
            "resume" => false,
            _ => return Ok(()),
        };
        // No sink: the kill switch's own records and flushes cannot fail.
        let _ = match (scope, ev.kill_target.as_deref()) {
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

    fn outcome(&mut self, seq: u64, ev: &Event<'_>) -> Result<(), ReplayError> {
        let id = required(seq, "tollgate.run.id", ev.run.as_deref())?;
        let tool = required(seq, "gen_ai.tool.name", ev.tool.as_deref())?;
        Pending::key(&mut self.key, ev.call_id.as_deref(), tool);
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

    fn decision(&mut self, seq: u64, ev: &Event<'_>) -> Result<(), ReplayError> {
        let run_id = required(seq, "tollgate.run.id", ev.run.as_deref())?;
        let tool = required(seq, "gen_ai.tool.name", ev.tool.as_deref())?;
        let call_id = ev.call_id.as_deref();
        let old = Decided {
            kind: match required(seq, "tollgate.decision", ev.decision.as_deref())? {
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
            code: ev.deny_code.as_deref(),
            rule: ev.rule.as_deref(),
        };
        if old.kind == DecisionKind::Deny && old.code.is_none() {
            return Err(malformed(seq, "tollgate.deny.code", "missing on a denial"));
        }
        let args = required(seq, "gen_ai.tool.call.arguments", ev.args)?.get();
        let flags: Vec<&str> = ev.flags.iter().flatten().map(|f| f.as_ref()).collect();
        // Raw text that did not parse was recorded as `{"unparsed": text}` (and denied for it).
        let unparsed = match old.code {
            Some("malformed_args" | "args_too_large") => unparsed_text(args),
            _ => None,
        };
        let hidden = holds_redacted(args)
            // Denied as malformed, yet recorded as a readable value: what made it malformed may
            // not survive in the record.
            || (unparsed.is_none() && old.code == Some("malformed_args"));
        // The arguments as recorded: the raw text as the agent gave it (minified), or the
        // serialised form of parsed arguments; re-checked as raw text, numbers exact.
        let mut call = ToolCall::new(tool, unparsed.as_deref().unwrap_or(args));
        if !flags.is_empty() {
            call = call.with_flags(&flags);
        }
        if let Some(id) = call_id {
            call = call.with_call_id(id);
        }
        if let Some(c) = ev.confidence {
            call = call.with_confidence(c as f32);
        }

        self.report.decisions += 1;
        let Some(live) = self.runs.get_mut(run_id) else {
            self.report.skipped += 1;
            return Ok(());
        };
        let modes = self.modes;
        let (new_kind, new_code, new_rule, resumed, mode): (_, _, Option<RuleId>, _, _) = match live
        {
            Live::Refused { code, rule } => (
                DecisionKind::Deny,
                Some(*code),
                Some(rule.clone()),
                false,
                Mode::Enforce,
            ),
            Live::Active(a) => {
                let resumed = a.take_resume(tool);
                Pending::key(&mut self.key, call_id, tool);
                // The candidate's mode for this run and tool (the replay guard decides as
                // `enforce`; the mode is applied here, as the guard's last step applies it).
                let (mode, mode_rule) = match modes {
                    Some(m) => {
                        let (mode, rule) = m.resolve_rule(a.run.context(), tool);
                        (mode, Some(rule))
                    }
                    None => (Mode::Enforce, None),
                };
                let mode_rule = || mode_rule.cloned().unwrap_or_else(|| RuleId::new("modes"));
                let mut pushed = false;
                let (kind, code, rule) = match self.guard.check(&a.run, &call) {
                    Verdict::Deny(d) => {
                        let code = d.code().as_str();
                        let hard = matches!(
                            code,
                            "audit_failed" | "suspended" | "foreign_run" | "unknown_role"
                        );
                        match mode {
                            // Shadow lets a refused call of a known tool run (recording
                            // the would-be denial); its usage is not charged here.
                            Mode::Shadow
                                if !hard && self.candidate.document().tools.contains_key(tool) =>
                            {
                                (DecisionKind::Allow, None, None)
                            }
                            Mode::Recommend if !hard => {
                                (DecisionKind::Deny, Some("recommended"), Some(mode_rule()))
                            }
                            _ => (DecisionKind::Deny, Some(code), Some(d.rule().clone())),
                        }
                    }
                    // The replay guard has no gate; kept for completeness.
                    Verdict::Escalate(r) => (
                        DecisionKind::Escalate,
                        None,
                        r.reasons.first().map(|x| x.rule.clone()),
                    ),
                    Verdict::Allow(permit) => {
                        // A resumed call consumes its approval instead of meeting the gate.
                        let gate = if resumed { None } else { self.gate };
                        let stopped = match mode {
                            Mode::Recommend => {
                                Some((DecisionKind::Deny, Some("recommended"), Some(mode_rule())))
                            }
                            // Shadow runs the call whatever the gate says.
                            Mode::Shadow => None,
                            _ => match gate.and_then(|g| escalation(g, &permit, &call)) {
                                Some(Ok(rule)) => Some((DecisionKind::Escalate, None, Some(rule))),
                                Some(Err(())) => Some((
                                    DecisionKind::Deny,
                                    Some("escalation_failed"),
                                    Some(self.escalation_rule.clone()),
                                )),
                                None if mode == Mode::Supervised && !resumed => {
                                    Some(if args_are_exact(call.args()) {
                                        (DecisionKind::Escalate, None, Some(mode_rule()))
                                    } else {
                                        (
                                            DecisionKind::Deny,
                                            Some("escalation_failed"),
                                            Some(self.escalation_rule.clone()),
                                        )
                                    })
                                }
                                None => None,
                            },
                        };
                        match stopped {
                            Some(decided) => {
                                permit.withdraw();
                                decided
                            }
                            None => {
                                let permit = permit.detach();
                                if old.kind == DecisionKind::Allow {
                                    a.pending.push(&self.key, Some(permit));
                                    pushed = true;
                                } else {
                                    // It did not run then, so no outcome is recorded: it
                                    // ran now, usage unknown (its reservation stands).
                                    let _ = permit.complete(Outcome::success());
                                }
                                (DecisionKind::Allow, None, None)
                            }
                        }
                    }
                };
                if old.kind == DecisionKind::Allow && !pushed {
                    // It ran then: its outcome will come, and must not complete another call
                    // (also when it runs now in shadow mode without a permit here).
                    a.pending.push(&self.key, None);
                }
                (kind, code, rule, resumed, mode)
            }
        };
        let new = Decided {
            kind: new_kind,
            code: new_code,
            rule: new_rule.as_ref().map(RuleId::as_str),
        };
        // What the candidate made of placeholders is not its decision on the agent's values,
        // unless it decided before reading any argument.
        // Shadow and recommend modes decide without the arguments (they run, or recommend,
        // whatever the stages said, short of the kill switch and an unknown role).
        let mode_decides = matches!(mode, Mode::Shadow | Mode::Recommend);
        let redacted = hidden
            && !mode_decides
            && !(new.kind == DecisionKind::Deny && decided_before_arguments(new.code));
        // The candidate's flow stage, after the boundary and limits and before the gate, would
        // read the run's provenance index, which the log cannot rebuild: a call it checks is
        // uncertain unless an earlier stage denied it.
        let flow_unknown = self.flow.is_some_and(|f| f.checks(tool))
            && !mode_decides
            && !(new.kind == DecisionKind::Deny && new.code != Some("escalation_failed"));
        let uncertain = (redacted || flow_unknown).then_some(Uncertainty {
            redacted_arguments: redacted,
            flow_provenance: flow_unknown,
        });
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
        uncertain: Option<Uncertainty>,
        resumed: bool,
    ) {
        let t = &mut self.report;
        let change = ReplayChange::of(old.kind, old.code, new.kind, new.code);
        if resumed {
            t.resumed += 1;
        }
        let example = || ReplayExample {
            seq,
            run: run.to_owned(),
            tool: tool.to_owned(),
            call_id: call_id.map(str::to_owned),
            old: old.owned(),
            new: new.owned(),
            uncertain,
            resumed,
        };
        if let Some(u) = uncertain {
            // Counted apart, never as a change or an unchanged decision.
            t.uncertain.add(change);
            t.uncertain_redacted += u64::from(u.redacted_arguments);
            t.uncertain_flow += u64::from(u.flow_provenance);
            if t.uncertain_examples.len() < self.max_examples {
                t.uncertain_examples.push(example());
            }
            return;
        }
        t.changes.add(change);
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
            examples.push(example());
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
    if !args_are_exact(call.args()) {
        return Some(Err(()));
    }
    Some(Ok(gate
        .rule_id(first)
        .cloned()
        .unwrap_or_else(|| RuleId::new("escalation"))))
}

/// The outcome an `outcome` record describes (status, tokens, cost).
fn recorded_outcome(seq: u64, ev: &Event<'_>) -> Result<Outcome, ReplayError> {
    let status = required(seq, "tollgate.outcome", ev.outcome.as_ref())?;
    let mut outcome = match &*status.status {
        "success" => Outcome::success(),
        "abandoned" => Outcome::abandoned(),
        // The message is not needed: nothing is recorded, and the breakers count the status.
        "error" => Outcome::error("error recorded in the audit log"),
        other => {
            return Err(malformed(
                seq,
                "tollgate.outcome",
                format!("unknown status `{other}`"),
            ));
        }
    };
    outcome.input_tokens = ev.input_tokens;
    outcome.output_tokens = ev.output_tokens;
    outcome.cost_micros = ev.cost_micros;
    Ok(outcome)
}
