//! What a replay found: counts per change, per tool, the first examples of each change, and how
//! many results are uncertain.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::verdict::PolicyVersion;

/// How one recorded decision fares under the candidate policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReplayChange {
    /// Allowed or escalated then, denied now.
    WouldBlock,
    /// Denied or escalated then, allowed now.
    WouldAllow,
    /// Allowed or denied then, sent to a human now.
    WouldEscalate,
    /// Denied then and now, with another deny code.
    DenyReasonChanged,
    /// The same decision (for a denial: the same code).
    Unchanged,
}

impl ReplayChange {
    /// Every change, in report order.
    pub const ALL: [ReplayChange; 5] = [
        ReplayChange::WouldBlock,
        ReplayChange::WouldAllow,
        ReplayChange::WouldEscalate,
        ReplayChange::DenyReasonChanged,
        ReplayChange::Unchanged,
    ];

    /// The changes that are changes (all but [`Unchanged`](Self::Unchanged)).
    pub const CHANGED: [ReplayChange; 4] = [
        ReplayChange::WouldBlock,
        ReplayChange::WouldAllow,
        ReplayChange::WouldEscalate,
        ReplayChange::DenyReasonChanged,
    ];

    /// The stable snake_case name (`would_block`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayChange::WouldBlock => "would_block",
            ReplayChange::WouldAllow => "would_allow",
            ReplayChange::WouldEscalate => "would_escalate",
            ReplayChange::DenyReasonChanged => "deny_reason_changed",
            ReplayChange::Unchanged => "unchanged",
        }
    }

    /// In words (`would block`, ...).
    pub fn label(self) -> &'static str {
        match self {
            ReplayChange::WouldBlock => "would block",
            ReplayChange::WouldAllow => "would allow",
            ReplayChange::WouldEscalate => "would escalate",
            ReplayChange::DenyReasonChanged => "deny reason changed",
            ReplayChange::Unchanged => "unchanged",
        }
    }

    /// The change from `old` to `new` (deny codes compared for denials).
    pub fn between(old: &ReplayDecision, new: &ReplayDecision) -> ReplayChange {
        Self::of(
            old.decision,
            old.code.as_deref(),
            new.decision,
            new.code.as_deref(),
        )
    }

    pub(super) fn of(
        old: DecisionKind,
        old_code: Option<&str>,
        new: DecisionKind,
        new_code: Option<&str>,
    ) -> ReplayChange {
        use DecisionKind::{Allow, Deny, Escalate};
        match (old, new) {
            (Allow | Escalate, Deny) => ReplayChange::WouldBlock,
            (Deny | Escalate, Allow) => ReplayChange::WouldAllow,
            (Allow | Deny, Escalate) => ReplayChange::WouldEscalate,
            (Deny, Deny) if old_code != new_code => ReplayChange::DenyReasonChanged,
            _ => ReplayChange::Unchanged,
        }
    }
}

impl fmt::Display for ReplayChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A number of decisions per [`ReplayChange`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ChangeCounts {
    /// [`ReplayChange::WouldBlock`].
    pub would_block: u64,
    /// [`ReplayChange::WouldAllow`].
    pub would_allow: u64,
    /// [`ReplayChange::WouldEscalate`].
    pub would_escalate: u64,
    /// [`ReplayChange::DenyReasonChanged`].
    pub deny_reason_changed: u64,
    /// [`ReplayChange::Unchanged`].
    pub unchanged: u64,
}

impl ChangeCounts {
    /// The count of one change.
    pub fn get(&self, change: ReplayChange) -> u64 {
        match change {
            ReplayChange::WouldBlock => self.would_block,
            ReplayChange::WouldAllow => self.would_allow,
            ReplayChange::WouldEscalate => self.would_escalate,
            ReplayChange::DenyReasonChanged => self.deny_reason_changed,
            ReplayChange::Unchanged => self.unchanged,
        }
    }

    pub(super) fn add(&mut self, change: ReplayChange) {
        let n = match change {
            ReplayChange::WouldBlock => &mut self.would_block,
            ReplayChange::WouldAllow => &mut self.would_allow,
            ReplayChange::WouldEscalate => &mut self.would_escalate,
            ReplayChange::DenyReasonChanged => &mut self.deny_reason_changed,
            ReplayChange::Unchanged => &mut self.unchanged,
        };
        *n += 1;
    }

    fn merge(&mut self, other: &ChangeCounts) {
        self.would_block += other.would_block;
        self.would_allow += other.would_allow;
        self.would_escalate += other.would_escalate;
        self.deny_reason_changed += other.deny_reason_changed;
        self.unchanged += other.unchanged;
    }

    /// Decisions that changed.
    pub fn changed(&self) -> u64 {
        ReplayChange::CHANGED.iter().map(|c| self.get(*c)).sum()
    }

    /// All decisions counted.
    pub fn total(&self) -> u64 {
        self.changed() + self.unchanged
    }
}

/// A decision's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecisionKind {
    /// Permitted.
    Allow,
    /// Sent to a human.
    Escalate,
    /// Refused.
    Deny,
}

impl DecisionKind {
    /// `"allow"`, `"escalate"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Escalate => "escalate",
            DecisionKind::Deny => "deny",
        }
    }
}

/// One decision, recorded or replayed: its kind, deny code and the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplayDecision {
    /// Allow, escalate or deny.
    pub decision: DecisionKind,
    /// The deny code ([`DenyCode::as_str`](crate::DenyCode::as_str)), for a denial. A run the
    /// candidate refuses to start has its calls denied with `unknown_role` or
    /// `compartment_refused`.
    pub code: Option<String>,
    /// The rule that denied or escalated (for an escalation, the first rule that matched).
    pub rule: Option<String>,
}

impl ReplayDecision {
    /// A decision of `kind` with an optional deny code and rule.
    pub fn new(decision: DecisionKind, code: Option<&str>, rule: Option<&str>) -> Self {
        Self {
            decision,
            code: code.map(str::to_owned),
            rule: rule.map(str::to_owned),
        }
    }
}

/// `allow`, `escalate [rule]`, `deny:code [rule]`.
impl fmt::Display for ReplayDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.decision.as_str())?;
        if let Some(c) = &self.code {
            write!(f, ":{c}")?;
        }
        if let Some(r) = &self.rule {
            write!(f, " [{r}]")?;
        }
        Ok(())
    }
}

/// One decision that changed, as an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplayExample {
    /// The decision's record in the log.
    pub seq: u64,
    /// Its run.
    pub run: String,
    /// The tool.
    pub tool: String,
    /// The framework's call id, if recorded.
    pub call_id: Option<String>,
    /// What was decided then.
    pub old: ReplayDecision,
    /// What the candidate decides.
    pub new: ReplayDecision,
    /// Why the decision cannot be determined (see [`ReplayReport::uncertain`]); set on
    /// [`ReplayReport::uncertain_examples`] only.
    pub uncertain: Option<Uncertainty>,
    /// The call was the resumption of an approved escalation (re-checked without the
    /// escalation gate, as [`Guard::resume`](crate::Guard::resume) does).
    pub resumed: bool,
}

/// Why a decision's result under the candidate cannot be determined from the log (one or both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Uncertainty {
    /// The recorded arguments hold redacted or omitted values (or a `malformed_args` denial
    /// whose original text the record may not show): the candidate saw placeholders where the
    /// agent gave real values.
    pub redacted_arguments: bool,
    /// The candidate's `[flow]` rules check the tool: they decide on where the argument values
    /// came from (tool outputs and prompts the run saw), which the log never records.
    pub flow_provenance: bool,
}

fn per_sec(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

/// What a candidate policy would have changed over a recorded audit log (see
/// [`Policy::replay`](crate::policy::Policy::replay)).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The candidate's version.
    pub candidate_version: PolicyVersion,
    /// Whether the log's hash chain was verified while reading.
    pub verified: bool,
    /// Records read (every record of the log, the sink's own included).
    pub records: u64,
    /// Runs started in the log.
    pub runs: u64,
    /// Runs the candidate refuses to start (unknown role, compartment id refused): their
    /// decisions count as denied.
    pub refused_runs: u64,
    /// Decisions in the log: [`changes`](Self::changes), [`uncertain`](Self::uncertain) and
    /// [`skipped`](Self::skipped) add up to it.
    pub decisions: u64,
    /// Decisions the candidate decides for certain, per change. Uncertain decisions are not
    /// counted here (see [`uncertain`](Self::uncertain)).
    pub changes: ChangeCounts,
    /// Decisions whose result under the candidate **cannot be determined**, counted apart from
    /// [`changes`](Self::changes) (see [`Uncertainty`]):
    ///
    /// - their recorded arguments hold redacted or omitted values (keyed hashes,
    ///   `[REDACTED:...]` placeholders, `{"tollgate.omitted": ...}`), or they were denied as
    ///   `malformed_args` and the record may not show what made them so. The candidate saw the
    ///   placeholders, never a guessed value. A call the candidate refuses before it reads any
    ///   argument (kill switch, open breaker, role, tool, clearance, read-only run, refused run)
    ///   is decided for certain and counted in `changes`;
    /// - or the candidate's `[flow]` rules check the tool, and no stage before the flow stage
    ///   denied the call: where its argument values came from is not in the log.
    ///
    /// The counts are per change *as decided without that knowledge* (on the placeholders,
    /// flow rules not applied), which the real call may not share: a tighter limit on a
    /// redacted field can block the value and pass the placeholder, or the reverse.
    pub uncertain: ChangeCounts,
    /// Uncertain decisions with redacted or omitted arguments.
    pub uncertain_redacted: u64,
    /// Uncertain decisions the candidate's flow rules check (a decision may be counted here
    /// and in [`uncertain_redacted`](Self::uncertain_redacted)).
    pub uncertain_flow: u64,
    /// Certain changed decisions per tool (tools with at least one change; unchanged and
    /// uncertain decisions are not counted per tool). At most
    /// [`Replay::MAX_TOOLS`](super::Replay::MAX_TOOLS) tools; the rest are summed in
    /// [`other_tools`](Self::other_tools).
    pub per_tool: BTreeMap<String, ChangeCounts>,
    /// Changed decisions of tools beyond the per-tool limit.
    pub other_tools: ChangeCounts,
    /// The first examples of each certain change, in log order.
    pub examples: BTreeMap<ReplayChange, Vec<ReplayExample>>,
    /// The first uncertain decisions, in log order, each with what the candidate decided
    /// without the missing knowledge (as many as examples of each change are kept).
    pub uncertain_examples: Vec<ReplayExample>,
    /// Resumed calls of approved escalations (re-checked without the gate).
    pub resumed: u64,
    /// Decisions of runs whose start is not in the log (it begins after they started): not
    /// replayed, since their role and compartment are unknown.
    pub skipped: u64,
    /// Recorded outcomes that matched no recorded permitted call of a known run.
    pub unmatched_outcomes: u64,
    /// How long the replay took (real time).
    #[serde(rename = "elapsed_secs", serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl ReplayReport {
    /// Records read per second.
    pub fn records_per_sec(&self) -> f64 {
        per_sec(self.records, self.elapsed)
    }

    /// Decisions that would change for certain (uncertain ones not included).
    pub fn changed(&self) -> u64 {
        self.changes.changed()
    }

    /// The examples of one change (empty for [`ReplayChange::Unchanged`]).
    pub fn examples_of(&self, change: ReplayChange) -> &[ReplayExample] {
        self.examples.get(&change).map_or(&[], Vec::as_slice)
    }

    /// Changed decisions summed over all tools.
    pub fn per_tool_total(&self) -> ChangeCounts {
        let mut all = self.other_tools;
        for c in self.per_tool.values() {
            all.merge(c);
        }
        all
    }
}

/// The summary `tollgate policy replay` prints.
impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replayed {} records ({} decisions in {} runs) under candidate {} in {:.2} s ({:.0} records/s)",
            self.records,
            self.decisions,
            self.runs,
            self.candidate_version,
            self.elapsed.as_secs_f64(),
            self.records_per_sec()
        )?;
        writeln!(
            f,
            "{}",
            if self.verified {
                "hash chain verified while reading"
            } else {
                "hash chain NOT verified (--no-verify)"
            }
        )?;
        writeln!(f)?;
        writeln!(f, "{:<22} {:>12} {:>12}", "change", "certain", "uncertain")?;
        for c in ReplayChange::ALL {
            writeln!(
                f,
                "{:<22} {:>12} {:>12}",
                c.label(),
                self.changes.get(c),
                self.uncertain.get(c)
            )?;
        }
        if !self.per_tool.is_empty() || self.other_tools.changed() > 0 {
            writeln!(f)?;
            writeln!(f, "changed decisions per tool:")?;
            let width = self
                .per_tool
                .keys()
                .map(|t| t.chars().count())
                .max()
                .unwrap_or(0)
                .clamp(12, 48);
            write!(f, "  {:<width$}", "tool")?;
            for c in ReplayChange::CHANGED {
                write!(f, " {:>20}", c.label())?;
            }
            writeln!(f)?;
            let rows = self
                .per_tool
                .iter()
                .map(|(t, c)| (t.escape_debug().to_string(), c))
                .chain(
                    (self.other_tools.changed() > 0)
                        .then(|| ("(other tools)".to_owned(), &self.other_tools)),
                );
            for (tool, counts) in rows {
                write!(f, "  {tool:<width$}")?;
                for c in ReplayChange::CHANGED {
                    write!(f, " {:>20}", counts.get(c))?;
                }
                writeln!(f)?;
            }
        }
        for c in ReplayChange::CHANGED {
            let examples = self.examples_of(c);
            if examples.is_empty() {
                continue;
            }
            writeln!(f)?;
            writeln!(
                f,
                "{} (first {} of {}):",
                c.label(),
                examples.len(),
                self.changes.get(c)
            )?;
            for e in examples {
                example(f, e)?;
            }
        }
        let uncertain = self.uncertain.total();
        if uncertain > 0 {
            writeln!(f)?;
            writeln!(
                f,
                "UNCERTAIN (first {} of {uncertain}), not counted as changes:",
                self.uncertain_examples.len(),
            )?;
            if self.uncertain_redacted > 0 {
                writeln!(
                    f,
                    "  {} with redacted or omitted arguments: the candidate saw placeholders, not the values the agent gave",
                    self.uncertain_redacted
                )?;
            }
            if self.uncertain_flow > 0 {
                writeln!(
                    f,
                    "  {} checked by the candidate's [flow] rules: where their values came from is not in the log (decided without those rules)",
                    self.uncertain_flow
                )?;
            }
            for e in &self.uncertain_examples {
                example(f, e)?;
            }
        }
        writeln!(f)?;
        if self.refused_runs > 0 {
            writeln!(
                f,
                "refused runs: {} runs cannot start under the candidate (unknown role or compartment refused); their calls count as denied",
                self.refused_runs
            )?;
        }
        if self.resumed > 0 {
            writeln!(
                f,
                "resumed: {} approved escalations resumed (re-checked without the escalation gate)",
                self.resumed
            )?;
        }
        if self.skipped > 0 {
            writeln!(
                f,
                "skipped: {} decisions of runs whose start is not in the log",
                self.skipped
            )?;
        }
        if self.unmatched_outcomes > 0 {
            writeln!(
                f,
                "unmatched outcomes: {} recorded outcomes matched no permitted call",
                self.unmatched_outcomes
            )?;
        }
        write!(
            f,
            "total: {} of {} decisions would change",
            self.changed(),
            self.decisions
        )?;
        if uncertain > 0 {
            write!(
                f,
                "; {uncertain} more cannot be determined, {} of them changed without what the log lacks",
                self.uncertain.changed()
            )?;
        }
        writeln!(f)
    }
}

/// One example line: `  seq 12 run r1 pay (call c4): allow -> deny:argument_out_of_range [...]`.
fn example(f: &mut fmt::Formatter<'_>, e: &ReplayExample) -> fmt::Result {
    write!(
        f,
        "  seq {} run {} {}",
        e.seq,
        e.run.escape_debug(),
        e.tool.escape_debug()
    )?;
    if let Some(id) = &e.call_id {
        write!(f, " (call {})", id.escape_debug())?;
    }
    write!(f, ": {} -> {}", e.old, e.new)?;
    if let Some(u) = e.uncertain {
        if u.redacted_arguments {
            f.write_str(" (on placeholders)")?;
        }
        if u.flow_provenance {
            f.write_str(" (flow rules not applied)")?;
        }
    }
    if e.resumed {
        f.write_str(" (resumed after approval)")?;
    }
    writeln!(f)
}
