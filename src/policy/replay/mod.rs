//! `Policy::replay`: re-decides every call of a recorded audit log under a candidate policy and
//! reports what would change (see [`Replay`]).

mod engine;
mod event;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use report::{
    ChangeCounts, DecisionKind, ReplayChange, ReplayDecision, ReplayExample, ReplayReport,
    Uncertainty,
};

use super::{BindError, DocumentError, Policy};
use crate::audit::file::{CheckpointKey, Progress, ProgressHook, RawRecords, VerifyError};
use engine::Engine;

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The log failed verification (or could not be read): treat it as tampered as a whole.
    #[error("the audit log cannot be replayed: {0}")]
    Log(#[from] Box<VerifyError>),
    /// The candidate without its escalation, audit and credential sections does not validate
    /// (cannot happen for a candidate that validated itself).
    #[error("the candidate policy cannot be prepared for replay: {0}")]
    Document(#[from] DocumentError),
    /// The replay guard cannot be built from the candidate.
    #[error("the candidate policy cannot build a replay guard: {0}")]
    Bind(#[from] BindError),
    /// A record's event is not JSON, lacks a field the replay needs, or holds one of another
    /// shape (only a well-formed event of a kind the replay does not act on may).
    #[error("record seq {seq}: `{field}`: {reason}")]
    Malformed {
        /// The record.
        seq: u64,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<VerifyError> for ReplayError {
    fn from(e: VerifyError) -> Self {
        ReplayError::Log(Box::new(e))
    }
}

/// A replay of an audit log under a candidate policy, ready to [`run`](Self::run): re-decides every
/// call of the log under the candidate and reports what would change. Made by [`Policy::replay`].
///
/// It streams a [`FileSink`](crate::audit::file::FileSink) directory, checking every record
/// against the hash chain as a [`Query`](crate::audit::query::Query) verifying while reading
/// does (unless told not to; the event's JSON is checked by the replay's own parse of it, and an
/// event that does not parse stops the replay with [`ReplayError::Malformed`], whatever its
/// kind), and drives a **fresh guard built from the candidate** through the recorded history:
///
/// - its clock is a [`ManualClock`](crate::clock::ManualClock) moved to each record's `time_unix_nano`, so wall-time
///   budgets, rate limits, loop windows and breaker waits see the time that passed then;
/// - `run_started` starts the run with the recorded context (agent, role, task type, trigger,
///   compartment, read-only). A run the candidate refuses to start (its role is gone, its
///   compartment id no longer matches) has every call counted as denied, with the code
///   `unknown_role` or `compartment_refused`;
/// - `decision` rebuilds the call (tool, arguments as recorded, call id, confidence, flags) and
///   checks it; the recorded and the new decision are compared ([`ReplayChange`]);
/// - `outcome` completes the call's new permit with the recorded status, tokens and cost, so
///   breakers and token and cost budgets see what happened. Permits are kept by (run, call id),
///   or per (run, tool) first in first out for calls without an id, until their outcome arrives
///   (also after the run ended: a detached permit may complete late);
/// - `run_finished` ends the run (the baseline learns from it, as it would have);
///   `kill_switch` suspends and resumes as recorded; `escalation_resumed` marks the next
///   decision of its tool as the resumption of an approved call.
///
/// The replay writes no audit record, mints no credential and queues no approval request.
///
/// # Memory
///
/// The log is streamed: memory holds the live runs, the permits waiting for their outcome,
/// the counters, at most [`Replay::MAX_TOOLS`] per-tool rows and the first examples of each change,
/// whatever the log's length. (A run that never finishes in the log, e.g. after a crash,
/// stays live until the end.)
///
/// # Escalation
///
/// The replay guard is built from the candidate *without* its escalation section (an approval
/// queue would keep every request). The candidate's own compiled [`EscalationGate`](crate::escalation::EscalationGate) is evaluated
/// on every call the guard allows, with exactly what the guard's escalation stage gives it: the
/// tool's effect and tier, the arguments, the confidence, the flags and the fraction of the run's
/// budget used with this call's reservation. A call a rule matches counts as escalated; its
/// permit is given back (breaker probe and budget reservation released), as the guard does.
///
/// # What is approximate
///
/// - **Redacted arguments: uncertain, never guessed.** A log keeps placeholders, keyed hashes
///   and omitted-value placeholders where the agent gave secret, sensitive or oversized values.
///   The candidate sees the placeholder, never a guessed value, and such a decision is
///   **uncertain**: counted in [`ReplayReport::uncertain`] (by what the candidate made of the
///   placeholders) and listed in [`ReplayReport::uncertain_examples`], never in
///   [`ReplayReport::changes`]. Only a denial decided before any argument is read (kill
///   switch, open breaker, role, tool, clearance, read-only run) is certain whatever the values
///   were. (Argument text the agent wrote that merely contains a placeholder's marker is taken
///   as redacted too: it errs towards uncertain.)
/// - **Modes.** The replay guard decides as `enforce`; the candidate's `[modes]` are applied to
///   each decision as the guard's last step applies them: `shadow` allows (runs) what the stages
///   refused, short of the kill switch, an unknown role or an unknown tool, and what they
///   escalated; `recommend` turns every decision but those into a `recommended` denial;
///   `supervised` escalates every call the stages allow (but a resumed one). A call shadow runs
///   after the stages refused it holds no permit here, so its recorded usage is not charged to
///   the candidate's budgets and breakers. Shadow and recommend decide without the arguments,
///   so their decisions are certain even with redacted arguments.
/// - **Flow rules: uncertain.** The candidate's `[flow]` rules decide on where argument values
///   came from (the tool outputs and prompts a run saw), which the log never records. The
///   replay guard is built without them; a call they check is uncertain unless a stage before
///   the flow stage (kill switch, breaker, boundary, loops, rate limits, baseline, budgets)
///   denied it.
/// - **Arguments as recorded.** The recorded arguments are re-checked as raw JSON text: the
///   text the agent gave, minified, or the serialised form of arguments given as a value, so
///   numbers are read exactly as the log shows them. The raw-size limit applies to the minified
///   text, a lower bound of what the agent sent. Raw text that did not parse is recorded as
///   `{"unparsed": text}` and is re-checked as that text.
/// - **Estimates.** Token and cost estimates a call declared are not recorded: budgets reserve
///   the per-call defaults, then settle to the recorded usage as before.
/// - **Calls that did not run then.** A call the candidate allows that was denied or escalated
///   then has no recorded outcome: it is completed at once as a success without usage (its
///   budget reservation stands).
/// - **Code bindings.** A baseline learned elsewhere, a custom outcome classifier and key
///   material are not in a document: the replay uses the document's own baseline parameters
///   and the default classifier.
pub struct Replay<'p> {
    policy: &'p Policy,
    dir: PathBuf,
    verify: bool,
    keys: Vec<CheckpointKey>,
    examples: usize,
    progress: Option<ProgressHook>,
}

impl std::fmt::Debug for Replay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("candidate", &self.policy.version())
            .field("dir", &self.dir)
            .field("verify", &self.verify)
            .field("examples", &self.examples)
            .finish()
    }
}

impl Policy {
    /// Prepares a replay of the audit log in `dir` under this policy as the candidate (see
    /// [`Replay`] for what is replayed and how faithfully).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tollgate::audit::file::{Durability, FileSink, FileSinkConfig};
    /// # use tollgate::policy::{Bindings, Policy, ReplayChange};
    /// # use tollgate::{Outcome, RunContext, ToolCall, Verdict};
    /// let policy = |amount_max: u32| Policy::from_toml(&format!(r#"
    ///     [policy]
    ///     name = "payments"
    ///     owner = "finance"
    ///     purpose = "pay invoices"
    ///     scope = "docs"
    ///     liability_owner = "CFO"
    ///     review_cadence = "90d"
    ///     data_handling = "none"
    ///
    ///     [tools.pay]
    ///     effect = "irreversible"
    ///     args.amount = {{ type = "number", required = true, max = {amount_max} }}
    ///
    ///     [roles.clerk]
    ///     tools = ["pay"]
    /// "#));
    /// let dir = tempfile::tempdir()?; // removed when dropped
    /// // Record a session under the current policy.
    /// let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default().durability(Durability::OsBuffered))?;
    /// let sink = Arc::new(sink);
    /// let guard = policy(1000)?.guard(Bindings::new().audit(sink.clone()))?;
    /// let run = guard.start_run(RunContext::new("bot", "clerk"))?;
    /// for amount in [10, 500, 5000] {
    ///     let args = format!(r#"{{"amount": {amount}}}"#);
    ///     if let Verdict::Allow(p) = guard.check(&run, &ToolCall::new("pay", args.as_str())) {
    ///         p.complete(Outcome::success())?;
    ///     }
    /// }
    /// run.finish()?;
    /// drop(guard);
    /// Arc::into_inner(sink).unwrap().close()?;
    ///
    /// // What would a limit of 100 have changed?
    /// let report = policy(100)?.replay(dir.path()).run()?;
    /// assert_eq!(report.decisions, 3);
    /// assert_eq!(report.changes.would_block, 1);
    /// assert_eq!(report.examples_of(ReplayChange::WouldBlock)[0].new.code.as_deref(),
    ///            Some("argument_out_of_range"));
    /// # dir.close()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay(&self, dir: impl AsRef<Path>) -> Replay<'_> {
        Replay {
            policy: self,
            dir: dir.as_ref().to_owned(),
            verify: true,
            keys: Vec::new(),
            examples: Replay::DEFAULT_EXAMPLES,
            progress: None,
        }
    }
}

impl<'p> Replay<'p> {
    /// Most tools the per-tool table of a [`ReplayReport`] keeps; changes of further tools are
    /// summed in [`ReplayReport::other_tools`] (tool names come from agents, so their number is
    /// theirs to choose).
    pub const MAX_TOOLS: usize = 1024;

    /// Examples kept per change unless told otherwise.
    pub const DEFAULT_EXAMPLES: usize = 5;

    /// Whether to verify the hash chain while reading (default `true`). A log that fails
    /// verification stops the replay with [`ReplayError::Log`].
    pub fn verify(mut self, on: bool) -> Self {
        self.verify = on;
        self
    }

    /// Also checks checkpoint MACs with `key` (turns verification on).
    pub fn checkpoint_key(mut self, key: CheckpointKey) -> Self {
        self.keys.push(key);
        self.verify = true;
        self
    }

    /// How many examples to keep per change (default [`DEFAULT_EXAMPLES`](Self::DEFAULT_EXAMPLES)).
    pub fn examples(mut self, n: usize) -> Self {
        self.examples = n;
        self
    }

    /// Calls `hook` with the [`Progress`] of the read after each record (records and bytes
    /// read, segment N of M), as [`Query::progress`](crate::audit::query::Query::progress) does:
    /// keep it cheap and throttle in it.
    pub fn progress(mut self, hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(ProgressHook::new(hook));
        self
    }

    /// Replays the whole log.
    pub fn run(self) -> Result<ReplayReport, ReplayError> {
        let started = Instant::now();
        let mut records = RawRecords::open(&self.dir, self.verify, self.keys, self.progress)?;
        let mut engine = Engine::new(self.policy, self.examples)?;
        while let Some((seq, event)) = records.next_event()? {
            engine.record(seq, event)?;
        }
        Ok(engine.finish(started, self.verify))
    }
}
