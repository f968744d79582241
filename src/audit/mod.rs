//! The audit seam: every run start, decision, outcome and run end becomes one [`AuditEvent`] handed
//! to an [`AuditSink`].
//!
//! Events borrow from the caller's data (the tool name, the raw argument text, the denial), so a
//! sink serialises straight from them; a sink that keeps an event beyond [`AuditSink::record`]
//! copies what it needs. A sink that returns an error makes the guard **deny** the call it was
//! recording: no decision is acted on without its record (fail closed).
//!
//! # Outcomes
//!
//! A tool's error text and its recorded output can quote its arguments ("login failed for
//! password hunter2"). Before a permit records an outcome, every occurrence of a marked argument
//! value of that call in the error message and in the output is replaced by the placeholder of
//! its class ([`SECRET_PLACEHOLDER`] or [`SENSITIVE_PLACEHOLDER`]; outcomes never carry a keyed
//! hash). What is looked for, for each marked value: a string as given and as JSON-escaped (the
//! text between the quotes of its JSON form); a number or boolean as its JSON text; an object or
//! array as its compact JSON text, and each string, number and object key inside it. Matching is
//! exact, byte for byte: an encoding the tool applied itself (URL, base64, a changed case) is not
//! recognised. Values shorter than [`MIN_SCRUB_BYTES`] cannot be cut out piece by piece
//! (replacing every `"ab"` in a text both destroys it and shows where the value was), so a text
//! that contains one is replaced whole by the placeholder; empty values and `null` are ignored.
//!
//! The secret of every credential the run's permits were handed
//! ([`ScopedCredential::expose`](crate::credential::ScopedCredential::expose)) is cut out of the
//! outcome texts of every permit of that run too, detached ones included, and whether or not the
//! credential was revoked since: replaced by [`CREDENTIAL_PLACEHOLDER`]. It is found as given and
//! with any of its bytes percent-encoded or JSON-escaped (a request URL in an HTTP client's
//! error, a JSON body in the output); not base64-encoded, cut short or split.
//!
//! # Size and depth
//!
//! Every value a shipped sink writes is bounded: too large, or nested too deeply, and it is
//! written as a placeholder with its size, hash and prefix (see [`values`]).
//!
//! Sinks: [`MemorySink`] (tests, inspection), [`TracingSink`], [`Fanout`],
//! [`bridge::AsyncBridge`] (to an async sink), and [`file::FileSink`] (hash-chained JSON Lines with
//! checkpoints and retention; [`file::verify`], [`query::Query`]). Arguments the policy marks secret
//! or sensitive are redacted by every sink (see [`Redaction`]).
//!
//! A custom sink is a dozen lines:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use tollgate::audit::{AuditError, AuditEvent, AuditSink, EventKind};
//!
//! #[derive(Default)]
//! struct CountDenials(AtomicU64);
//!
//! impl AuditSink for CountDenials {
//!     fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
//!         if let EventKind::Decision { decision, .. } = &event.kind {
//!             if decision.is_deny() {
//!                 self.0.fetch_add(1, Ordering::Relaxed);
//!             }
//!         }
//!         Ok(())
//!     }
//!     fn flush(&self) -> Result<(), AuditError> { Ok(()) }
//! }
//! ```

pub mod bridge;
pub mod file;
mod json;
pub mod query;
mod redact;
mod sinks;
pub mod values;

pub(crate) use redact::scrub_credentials;
pub use redact::{
    AuditMarks, CREDENTIAL_PLACEHOLDER, MIN_SCRUB_BYTES, SECRET_PLACEHOLDER, SENSITIVE_PLACEHOLDER,
    UNPARSEABLE_PLACEHOLDER,
};
pub use sinks::{Fanout, TracingSink};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use values::Omitted;
pub use values::Redaction;

use json::{k, kv};
use parking_lot::Mutex;
use serde_json::Value;

use crate::breaker::Transition;
use crate::call::json::{JsonError, JsonLimits, RawJson};
use crate::call::{AgentId, Args, CredentialId, RunContext, RunId, ToolCall};
use crate::credential::{CredentialError, Scope};
use crate::escalation::TransitionKind;
use crate::verdict::{ApprovalRequest, Denial, Outcome, OutcomeStatus, PolicyVersion};

/// One thing that happened, with the run it belongs to.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuditEvent<'a> {
    /// Position in the guard's event sequence (strictly increasing per guard, starting at 1).
    pub seq: u64,
    /// Wall-clock time of the event.
    pub at: SystemTime,
    /// The run; `None` for guard-wide events (policy reload, key rotation).
    pub run: Option<&'a RunId>,
    /// The agent acting in the run; `None` for guard-wide events.
    pub agent: Option<&'a AgentId>,
    /// What happened.
    pub kind: EventKind<'a>,
    /// What the policy says about the records of the event's tool: redacted arguments and
    /// retention class (`None`: nothing redacted, no class).
    pub marks: Option<&'a AuditMarks>,
    /// The [mode](crate::mode) a decision was made in: written as `tollgate.mode` on decision
    /// records when it is not [`Mode::Enforce`](crate::mode::Mode::Enforce).
    pub mode: crate::mode::Mode,
    /// What `enforce` would have decided, for a decision in a mode that did not act on it
    /// (shadow, recommend): written as `tollgate.shadow.decision`, `tollgate.shadow.deny.code`,
    /// `tollgate.shadow.rule` and `tollgate.shadow.reason`.
    pub would_be: Option<&'a crate::mode::WouldBe>,
    /// Set by the guard on a decision whose raw JSON arguments its boundary has just validated
    /// strictly (the same scanner, with the policy's limits, whose depth is never above
    /// [`MAX_DEPTH_CAP`](crate::call::json::MAX_DEPTH_CAP)): the writer embeds that text
    /// without scanning it a second time. Never set for a call the boundary did not admit
    /// (a shadow-mode call it would have denied is written through the full check).
    pub(crate) args_checked: bool,
}

impl<'a> AuditEvent<'a> {
    /// An event, for testing or benchmarking a sink outside a guard (the guard numbers and
    /// timestamps its own events).
    pub fn new(
        seq: u64,
        at: SystemTime,
        run: Option<&'a RunId>,
        agent: Option<&'a AgentId>,
        kind: EventKind<'a>,
    ) -> Self {
        Self {
            seq,
            at,
            run,
            agent,
            kind,
            marks: None,
            mode: crate::mode::Mode::Enforce,
            would_be: None,
            args_checked: false,
        }
    }

    /// The event with the mode its decision was made in and, for a mode that did not act on
    /// it, what `enforce` would have decided.
    pub fn with_mode(
        mut self,
        mode: crate::mode::Mode,
        would_be: Option<&'a crate::mode::WouldBe>,
    ) -> Self {
        self.mode = mode;
        self.would_be = would_be;
        self
    }

    /// The event with its tool's audit marks (see
    /// [`ActionBoundary::audit_marks`](crate::ActionBoundary::audit_marks)).
    pub fn with_marks(mut self, marks: &'a AuditMarks) -> Self {
        self.marks = Some(marks);
        self
    }
}

/// The kinds of event. More kinds may arrive; match with a wildcard arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum EventKind<'a> {
    /// A run started.
    RunStarted {
        /// Who, in which role, for what, in which compartment.
        context: &'a RunContext,
    },
    /// A proposed call was decided.
    Decision {
        /// The call as proposed (arguments included, as given).
        call: &'a ToolCall<'a>,
        /// The decision.
        decision: Decision<'a>,
        /// The policy version the decision was made under (`None` only if no policy was consulted).
        policy_version: Option<PolicyVersion>,
    },
    /// A permitted call ended (or its permit was dropped).
    Outcome {
        /// The tool.
        tool: &'a str,
        /// The framework's call id.
        call_id: Option<&'a str>,
        /// How it ended.
        outcome: &'a Outcome,
        /// Time from permit to outcome.
        latency: Duration,
        /// The policy version the call was permitted under.
        policy_version: PolicyVersion,
    },
    /// An escalated call's approval request changed: requested (routed to its first group),
    /// routed to a later level of its chain, decided by an approver, timed out, or resumed (its
    /// grant consumed for the one execution it authorises).
    Escalation {
        /// The request (as before the change).
        request: &'a ApprovalRequest,
        /// What changed.
        transition: &'a TransitionKind<'a>,
    },
    /// The framework recorded the agent's reasoning at a decision point
    /// ([`Run::note_reasoning`](crate::Run::note_reasoning)).
    Reasoning {
        /// The reasoning, as given.
        text: &'a str,
    },
    /// A run ended.
    RunFinished {
        /// How long the run lasted.
        duration: Duration,
    },
    /// The guard's policy was replaced.
    PolicyReloaded {
        /// The version replaced.
        previous: PolicyVersion,
        /// The version now in force.
        current: PolicyVersion,
        /// Who or what reloaded (an operator, `file-watcher:<path>`, ...).
        by: &'a str,
        /// Breakers whose settings changed and whose windows therefore start afresh (breakers
        /// held open or disabled by hand keep that state).
        breakers_reset: bool,
    },
    /// A scoped credential was issued, used, refused or revoked, or a provider's key rotated.
    Credential(CredentialEvent<'a>),
    /// A task type of the policy's `[rollout]` section was demoted to its first stage at once,
    /// by a trigger the guard observed (see [`crate::rollout`]).
    RolloutDemoted {
        /// The task type.
        task_type: &'a str,
        /// The stage's mode it ran in.
        from: crate::mode::Mode,
        /// The first stage's mode, in force from now on.
        to: crate::mode::Mode,
        /// `safety_denial`, `breaker_trip` or `human_denial`.
        trigger: &'a str,
        /// The rule, breaker or approver that triggered it.
        rule: &'a str,
        /// The deny code, the tool whose breaker opened, or the approval id.
        detail: &'a str,
    },
    /// An operator lifted a live demotion ([`Guard::lift_demotion`](crate::Guard::lift_demotion)).
    RolloutLifted {
        /// The task type.
        task_type: &'a str,
        /// The mode it was demoted to.
        from: crate::mode::Mode,
        /// The document's stage, in force again.
        to: crate::mode::Mode,
        /// Who lifted it.
        by: &'a str,
    },
    /// A circuit breaker changed state.
    BreakerTransition {
        /// The agent part of the breaker's key (empty when keyed by tool).
        agent: &'a str,
        /// The tool part of the breaker's key (empty when keyed by agent).
        tool: &'a str,
        /// The transition and the figures that caused it.
        transition: &'a Transition,
    },
    /// A flow check of a proposed call ([`crate::flow`]): the labels and provenance found for
    /// every value its rules read (names only, never the values), and what it decided. Recorded
    /// before the call's decision.
    Flow {
        /// The tool.
        tool: &'a str,
        /// The framework's call id.
        call_id: Option<&'a str>,
        /// What the check found.
        report: &'a crate::flow::FlowReport,
    },
    /// A human endorsed (or declassified) one value for the run's flow checks
    /// ([`Run::endorse`](crate::Run::endorse)). The value is not recorded: the flow record of
    /// the call that uses the endorsement names it by id, and that call's decision record shows
    /// its arguments under the policy's marks.
    FlowEndorsed {
        /// The endorsement's number within the run.
        id: u32,
        /// Who endorsed it.
        by: &'a str,
        /// Why.
        reason: &'a str,
        /// `"once"` or `"run"`.
        scope: &'static str,
    },
    /// Something the run's context saw could not be held by its flow index (larger than the
    /// policy's `max_index_bytes` allows): flow rules now fail closed for the sources, tiers and
    /// compartments it carried.
    FlowUnindexed {
        /// The tool whose output it was (`None`: the user's prompt or other input).
        tool: Option<&'a str>,
        /// The framework's call id.
        call_id: Option<&'a str>,
        /// Its size in bytes.
        bytes: u64,
    },
    /// A human acted on a [`Recommendation`](crate::mode::Recommendation)
    /// ([`Guard::record_human_action`](crate::Guard::record_human_action)).
    HumanAction {
        /// The recommendation's id.
        recommendation: &'a str,
        /// The tool the human used (`None`: they did nothing).
        tool: Option<&'a str>,
        /// Its arguments, as the human gave them (redacted under the marks of `tool`).
        args: Option<&'a Value>,
        /// The human's note.
        note: Option<&'a str>,
    },
    /// The kill switch suspended or resumed something.
    KillSwitch {
        /// `"suspend"` or `"resume"`.
        action: &'static str,
        /// `"global"`, `"agent"` or `"run"`.
        scope: &'static str,
        /// The agent or run id, for those scopes.
        target: Option<&'a str>,
        /// Who did it.
        by: &'a str,
    },
    /// A message an integration received was refused at the protocol level (the MCP gateway:
    /// not JSON, not a valid JSON-RPC message, or longer than its limit; over HTTP also a
    /// request without a known bearer token, or with another token than its session's).
    /// Recorded before the client is answered with a protocol error; the message itself (and
    /// any token) is not recorded.
    ProtocolFault {
        /// The integration (`"mcp"`, `"mcp-http"`).
        source: &'static str,
        /// `"malformed"`, `"invalid_message"`, `"oversized"`; over HTTP `"unauthenticated"`,
        /// `"unknown_token"`, `"session_token_mismatch"`, `"forbidden_host_or_origin"`.
        fault: &'static str,
        /// What was wrong.
        detail: &'a str,
    },
}

/// Credential lifecycle events. They carry the credential's id and scope, never its value.
#[derive(Debug)]
#[non_exhaustive]
pub enum CredentialEvent<'a> {
    /// A credential was minted for a permit.
    Issued {
        /// Its id.
        id: &'a CredentialId,
        /// The provider that minted it.
        provider: &'a str,
        /// What it covers.
        scope: &'a Scope,
        /// Expiry, unix seconds.
        expires_at_unix: u64,
    },
    /// A credential's value was handed to a tool.
    Used {
        /// Its id.
        id: &'a CredentialId,
        /// The tool using it.
        tool: &'a str,
        /// The resource it was used for.
        resource: &'a str,
    },
    /// Minting or using a credential was refused.
    Refused {
        /// The credential, if one existed.
        id: Option<&'a CredentialId>,
        /// The tool asking.
        tool: &'a str,
        /// The resource asked for.
        resource: &'a str,
        /// Why.
        reason: &'a CredentialError,
    },
    /// A credential was revoked (its run ended, or on request).
    Revoked {
        /// Its id.
        id: &'a CredentialId,
        /// The provider that minted it.
        provider: &'a str,
    },
    /// A provider's signing key rotated.
    KeyRotated {
        /// The provider.
        provider: &'a str,
        /// The key retired (still verifying during its grace period).
        retired: &'a str,
        /// The key now signing.
        current: &'a str,
    },
}

/// A decision as recorded.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Decision<'a> {
    /// The call was permitted.
    Allow,
    /// The call awaits a human.
    Escalate(&'a ApprovalRequest),
    /// The call was denied.
    Deny(&'a Denial),
}

impl Decision<'_> {
    /// `true` for [`Decision::Deny`].
    pub fn is_deny(&self) -> bool {
        matches!(self, Decision::Deny(_))
    }

    /// `"allow"`, `"escalate"` or `"deny"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Escalate(_) => "escalate",
            Decision::Deny(_) => "deny",
        }
    }
}

/// A sink could not take an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The sink is unavailable or refused the event.
    #[error("audit sink `{sink}` refused the event: {reason}")]
    Refused {
        /// Which sink.
        sink: &'static str,
        /// Why.
        reason: String,
    },
    /// An I/O error while writing or flushing.
    #[error("audit sink I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Another [`FileSink`](file::FileSink), in this process or another, has the audit
    /// directory open (see [`file`](mod@file#one-writer-per-directory)).
    #[error(
        "audit directory {} is locked by another writer: {}",
        dir.display(),
        match holder {
            Some(h) => h.to_string(),
            None => "its holder did not say who it is".to_owned(),
        }
    )]
    DirectoryLocked {
        /// The directory.
        dir: std::path::PathBuf,
        /// Who holds it, as its lock file says (`None` if the file does not say).
        holder: Option<file::LockHolder>,
    },
}

/// Receives every audit event. Implementations must be cheap to call from many threads.
pub trait AuditSink: Send + Sync {
    /// Takes one event. An error makes the guard deny the call being recorded.
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError>;
    /// Returns once every event recorded before the call is durable (for in-memory sinks: now).
    fn flush(&self) -> Result<(), AuditError>;
    /// What the sink guarantees, so a policy document's `[audit]` section can be checked
    /// against the sink actually bound
    /// ([`Guard::from_policy`](crate::Guard::from_policy) refuses a sink weaker than the
    /// document). `None` (the default): the sink does not say, and meeting the document is the
    /// binder's responsibility. [`file::FileSink`] says.
    fn guarantees(&self) -> Option<SinkGuarantees> {
        None
    }
}

/// When a sink's records are durable relative to `record` returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkDurability {
    /// Every record is on disk before `record` returns.
    EveryRecord,
    /// Records reach the disk within this interval.
    GroupCommit(std::time::Duration),
    /// Records reach the disk on flush, rotation and close.
    OsBuffered,
}

/// What a sink guarantees (see [`AuditSink::guarantees`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SinkGuarantees {
    /// When records are durable.
    pub durability: SinkDurability,
    /// A full queue refuses the record (the call is denied) instead of waiting.
    pub refuses_when_full: bool,
    /// Sensitive values are written as a keyed hash (otherwise a placeholder).
    pub keyed_hash: bool,
}

impl SinkGuarantees {
    /// The guarantees a sink reports.
    pub fn new(durability: SinkDurability, refuses_when_full: bool, keyed_hash: bool) -> Self {
        Self {
            durability,
            refuses_when_full,
            keyed_hash,
        }
    }
}

impl AuditEvent<'_> {
    /// Appends the event as one compact JSON object (no line break) to `out`, redacting marked
    /// arguments as `redaction` says. This is what sinks write; it serialises straight from the
    /// borrowed data, so a sink that reuses `out` allocates nothing for most events.
    ///
    /// Field names follow the OpenTelemetry GenAI conventions where one exists
    /// (`gen_ai.tool.name`, `gen_ai.tool.call.id`, `gen_ai.agent.id`, `gen_ai.usage.*`); the rest
    /// are `tollgate.*`. Every event has `seq`, `time_unix_nano`, `tollgate.run.id`,
    /// `gen_ai.agent.id` (`null` when the event belongs to no run or agent) and `event` (its
    /// kind), and `tollgate.retention` when its tool's tier has a retention class. Other fields
    /// with no value (a call without an id, an outcome without token counts or cost, a decision
    /// without confidence or reasoning) are left out rather than written as `null`, as
    /// OpenTelemetry leaves unset attributes out: a reader treats a missing field as absent.
    ///
    /// ```
    /// use tollgate::audit::{AuditEvent, Decision, EventKind, Redaction};
    /// use tollgate::{AgentId, RunId, ToolCall};
    ///
    /// let call = ToolCall::without_args("lookup");
    /// let (run, agent) = (RunId::new("run-1"), AgentId::new("agent-7"));
    /// let event = AuditEvent::new(
    ///     1,
    ///     std::time::UNIX_EPOCH,
    ///     Some(&run),
    ///     Some(&agent),
    ///     EventKind::Decision { call: &call, decision: Decision::Allow, policy_version: None },
    /// );
    /// let mut out = Vec::new();
    /// event.write_json(&mut out, &Redaction::default());
    /// let json: serde_json::Value = serde_json::from_slice(&out)?;
    /// assert_eq!(json["tollgate.run.id"], "run-1");
    /// assert_eq!(json["tollgate.decision"], "allow");
    /// // No call id, confidence or reasoning was given: those fields are not written.
    /// assert!(json.get("gen_ai.tool.call.id").is_none());
    /// assert!(json.get("tollgate.confidence").is_none());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>, redaction: &Redaction) {
        let mut o = json::Obj::begin(out, redaction);
        o.u64(k!("seq"), self.seq);
        let at = self.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        o.u64(
            k!("time_unix_nano"),
            u64::try_from(at.as_nanos()).unwrap_or(u64::MAX),
        );
        o.str_or_null(k!("tollgate.run.id"), self.run.map(RunId::as_str));
        o.str_or_null(k!("gen_ai.agent.id"), self.agent.map(AgentId::as_str));
        if let Some(class) = self.marks.and_then(AuditMarks::retention) {
            o.str(k!("tollgate.retention"), class);
        }
        match &self.kind {
            EventKind::RunStarted { context } => {
                o.lit(kv!("event", "run_started"));
                o.str(k!("tollgate.role"), context.role().as_str());
                o.opt_str(
                    k!("tollgate.task_type"),
                    context.task_type().map(|t| t.as_str()),
                );
                o.opt_str(
                    k!("tollgate.trigger"),
                    context.trigger().map(|t| t.as_str()),
                );
                o.opt_str(
                    k!("tollgate.compartment"),
                    context.compartment().map(|c| c.as_str()),
                );
                o.bool(k!("tollgate.read_only"), context.is_read_only());
            }
            EventKind::Decision {
                call,
                decision,
                policy_version,
            } => {
                o.lit(kv!("event", "decision"));
                o.str(k!("gen_ai.tool.name"), call.tool());
                o.opt_str(k!("gen_ai.tool.call.id"), call.call_id());
                write_args(
                    &mut o,
                    call.args(),
                    self.marks,
                    redaction,
                    self.args_checked,
                );
                o.word(k!("tollgate.decision"), decision.as_str());
                match decision {
                    Decision::Deny(d) => {
                        o.word(k!("tollgate.deny.code"), d.code().as_str());
                        o.str(k!("tollgate.rule"), d.rule().as_str());
                        o.str(k!("tollgate.reason"), d.reason());
                    }
                    Decision::Escalate(r) => {
                        if let Some(first) = r.reasons.first() {
                            o.str(k!("tollgate.rule"), first.rule.as_str());
                        }
                        write_approval(&mut o, r);
                        o.ser(k!("tollgate.approval.reasons"), &r.reasons);
                        o.u64(k!("tollgate.approval.deadline_ms"), r.deadline_ms);
                        o.u64(k!("tollgate.approval.quorum"), u64::from(r.quorum));
                        o.opt_str(k!("tollgate.approval.group"), r.current_group());
                    }
                    Decision::Allow => {}
                }
                if let Some(v) = policy_version {
                    o.digest(k!("tollgate.policy.version"), v.as_bytes());
                }
                if let Some(c) = call.confidence() {
                    o.ser(k!("tollgate.confidence"), &c);
                }
                o.opt_str(k!("tollgate.reasoning"), call.reasoning());
                if !call.flags().is_empty() {
                    o.ser(k!("tollgate.flags"), call.flags());
                }
                if let Decision::Deny(d) = decision
                    && let Some(r) = d.recommendation()
                {
                    o.str(k!("tollgate.recommendation.id"), &r.id);
                }
                if self.mode != crate::mode::Mode::Enforce {
                    o.word(k!("tollgate.mode"), self.mode.as_str());
                }
                if let Some(w) = self.would_be {
                    o.str(k!("tollgate.shadow.decision"), w.as_str());
                    if let Some(code) = w.deny_code() {
                        o.str(k!("tollgate.shadow.deny.code"), code.as_str());
                    }
                    if let Some(rule) = w.rule() {
                        o.str(k!("tollgate.shadow.rule"), rule.as_str());
                    }
                    if let Some(reason) = w.reason() {
                        o.str(k!("tollgate.shadow.reason"), &reason);
                    }
                }
            }
            EventKind::Outcome {
                tool,
                call_id,
                outcome,
                latency,
                policy_version,
            } => {
                o.lit(kv!("event", "outcome"));
                o.str(k!("gen_ai.tool.name"), tool);
                o.opt_str(k!("gen_ai.tool.call.id"), *call_id);
                match &outcome.status {
                    // Written by hand (as serde would) so the message alone is bounded.
                    OutcomeStatus::Error { message } => {
                        let how = o.redaction();
                        let out = o.key(k!("tollgate.outcome"));
                        out.extend_from_slice(b"{\"status\":\"error\",\"message\":");
                        json::bounded_string(out, message, how);
                        out.push(b'}');
                    }
                    // The common statuses as literals (what serde writes for them).
                    OutcomeStatus::Success => {
                        o.lit(concat!(k!("tollgate.outcome"), r#"{"status":"success"}"#));
                    }
                    OutcomeStatus::Abandoned => {
                        o.lit(concat!(k!("tollgate.outcome"), r#"{"status":"abandoned"}"#));
                    }
                }
                o.opt_u64(k!("gen_ai.usage.input_tokens"), outcome.input_tokens);
                o.opt_u64(k!("gen_ai.usage.output_tokens"), outcome.output_tokens);
                o.opt_u64(k!("tollgate.cost_micros"), outcome.cost_micros);
                if let Some(out) = &outcome.output {
                    o.str(k!("tollgate.output"), out);
                }
                o.u64(k!("tollgate.latency_ns"), nanos(*latency));
                o.digest(k!("tollgate.policy.version"), policy_version.as_bytes());
            }
            EventKind::Escalation {
                request,
                transition,
            } => write_escalation(&mut o, request, transition),
            EventKind::Reasoning { text } => {
                o.lit(kv!("event", "reasoning"));
                o.str(k!("tollgate.reasoning"), text);
            }
            EventKind::RunFinished { duration } => {
                o.lit(kv!("event", "run_finished"));
                o.u64(k!("tollgate.duration_ns"), nanos(*duration));
            }
            EventKind::PolicyReloaded {
                previous,
                current,
                by,
                breakers_reset,
            } => {
                o.lit(kv!("event", "policy_reloaded"));
                o.hex(k!("tollgate.policy.previous"), previous.as_bytes());
                o.hex(k!("tollgate.policy.version"), current.as_bytes());
                o.str(k!("tollgate.reloaded_by"), by);
                o.bool(k!("tollgate.breakers_reset"), *breakers_reset);
            }
            EventKind::Credential(c) => credential_json(c, &mut o),
            EventKind::RolloutDemoted {
                task_type,
                from,
                to,
                trigger,
                rule,
                detail,
            } => {
                o.lit(kv!("event", "rollout_demoted"));
                o.str(k!("tollgate.task_type"), task_type);
                o.str(k!("tollgate.rollout.from"), from.as_str());
                o.str(k!("tollgate.rollout.to"), to.as_str());
                o.str(k!("tollgate.rollout.trigger"), trigger);
                o.str(k!("tollgate.rule"), rule);
                o.str(k!("tollgate.rollout.detail"), detail);
            }
            EventKind::RolloutLifted {
                task_type,
                from,
                to,
                by,
            } => {
                o.lit(kv!("event", "rollout_lifted"));
                o.str(k!("tollgate.task_type"), task_type);
                o.str(k!("tollgate.rollout.from"), from.as_str());
                o.str(k!("tollgate.rollout.to"), to.as_str());
                o.str(k!("tollgate.rollout.lifted_by"), by);
            }
            EventKind::BreakerTransition {
                agent,
                tool,
                transition,
            } => {
                o.lit(kv!("event", "breaker_transition"));
                o.str(k!("tollgate.breaker.agent"), agent);
                o.str(k!("gen_ai.tool.name"), tool);
                o.ser(k!("tollgate.breaker.from"), &transition.from);
                o.ser(k!("tollgate.breaker.to"), &transition.to);
                o.f64(k!("tollgate.breaker.failure_rate"), transition.failure_rate);
                o.f64(
                    k!("tollgate.breaker.slow_call_rate"),
                    transition.slow_call_rate,
                );
                o.u64(k!("tollgate.breaker.calls"), u64::from(transition.calls));
            }
            EventKind::Flow {
                tool,
                call_id,
                report,
            } => {
                o.lit(kv!("event", "flow_check"));
                o.str(k!("gen_ai.tool.name"), tool);
                o.opt_str(k!("gen_ai.tool.call.id"), *call_id);
                o.ser(k!("tollgate.flow"), report);
            }
            EventKind::FlowEndorsed {
                id,
                by,
                reason,
                scope,
            } => {
                o.lit(kv!("event", "flow_endorsed"));
                o.u64(k!("tollgate.flow.endorsement"), u64::from(*id));
                o.str(k!("tollgate.flow.endorsed_by"), by);
                o.str(k!("tollgate.flow.reason"), reason);
                o.str(k!("tollgate.flow.scope"), scope);
            }
            EventKind::FlowUnindexed {
                tool,
                call_id,
                bytes,
            } => {
                o.lit(kv!("event", "flow_unindexed"));
                o.opt_str(k!("gen_ai.tool.name"), *tool);
                o.opt_str(k!("gen_ai.tool.call.id"), *call_id);
                o.u64(k!("tollgate.flow.bytes"), *bytes);
            }
            EventKind::HumanAction {
                recommendation,
                tool,
                args,
                note,
            } => {
                o.lit(kv!("event", "human_action"));
                o.str(k!("tollgate.recommendation.id"), recommendation);
                o.opt_str(k!("gen_ai.tool.name"), *tool);
                if let Some(v) = args {
                    write_args(&mut o, Args::Value(v), self.marks, redaction, false);
                }
                o.opt_str(k!("tollgate.human.note"), *note);
            }
            EventKind::KillSwitch {
                action,
                scope,
                target,
                by,
            } => {
                o.lit(kv!("event", "kill_switch"));
                o.str(k!("tollgate.kill.action"), action);
                o.str(k!("tollgate.kill.scope"), scope);
                o.opt_str(k!("tollgate.kill.target"), *target);
                o.str(k!("tollgate.kill.by"), by);
            }
            EventKind::ProtocolFault {
                source,
                fault,
                detail,
            } => {
                o.lit(kv!("event", "protocol_fault"));
                o.str(k!("tollgate.protocol.source"), source);
                o.str(k!("tollgate.protocol.fault"), fault);
                o.str(k!("tollgate.protocol.detail"), detail);
            }
        }
        o.end();
    }

    /// The event as a JSON value, with sensitive arguments as placeholders (see
    /// [`write_json`](Self::write_json) for the fields).
    pub fn to_json(&self) -> Value {
        let mut buf = Vec::with_capacity(256);
        self.write_json(&mut buf, &Redaction::placeholder());
        // The writer only produces valid JSON; should that ever fail, say so in the value rather
        // than lose the event.
        serde_json::from_slice(&buf).unwrap_or_else(|e| {
            serde_json::json!({ "seq": self.seq, "tollgate.serialisation_error": e.to_string() })
        })
    }
}

/// The request an event is about: its id only. Its `args_hash` is left out on purpose: it covers
/// every argument, secret ones included, and the audit trail is read (and kept) far more widely
/// than the approval store. It is keyed, so nobody without the store's key can test a guess
/// against it; but it adds nothing the id does not identify, and a record that never holds it
/// cannot leak it should that key ever be exposed.
fn write_approval(o: &mut json::Obj<'_>, r: &ApprovalRequest) {
    o.str(k!("tollgate.approval.id"), r.id.as_str());
}

fn write_escalation(o: &mut json::Obj<'_>, r: &ApprovalRequest, t: &TransitionKind<'_>) {
    let kind = match t {
        TransitionKind::Requested { .. } => "escalation_requested",
        TransitionKind::Escalated { .. } => "escalation_routed",
        TransitionKind::Decided { .. } => "escalation_decided",
        TransitionKind::Edited { .. } => "escalation_edited",
        TransitionKind::TimedOut { .. } => "escalation_expired",
        TransitionKind::Consumed { .. } => "escalation_resumed",
    };
    o.str(k!("event"), kind);
    o.str(k!("gen_ai.tool.name"), &r.tool);
    write_approval(o, r);
    match t {
        TransitionKind::Requested { group } => {
            o.str(k!("tollgate.approval.group"), group);
            o.ser(k!("tollgate.approval.reasons"), &r.reasons);
            o.u64(k!("tollgate.approval.deadline_ms"), r.deadline_ms);
            o.u64(k!("tollgate.approval.quorum"), u64::from(r.quorum));
        }
        TransitionKind::Escalated { from, to, group } => {
            o.u64(k!("tollgate.approval.from_level"), *from as u64);
            o.u64(k!("tollgate.approval.level"), *to as u64);
            o.str(k!("tollgate.approval.group"), group);
        }
        TransitionKind::Decided {
            approver,
            decision,
            reason,
            wait,
            approvals,
            resolution,
        } => {
            o.str(k!("tollgate.approval.approver"), approver.id.as_str());
            o.opt_str(k!("tollgate.approval.channel"), approver.channel.as_deref());
            o.ser(k!("tollgate.approval.decision"), decision);
            o.str(k!("tollgate.reason"), reason);
            o.u64(k!("tollgate.approval.wait_ms"), millis(*wait));
            o.u64(k!("tollgate.approval.approvals"), u64::from(*approvals));
            match resolution {
                Some(res) => o.ser(k!("tollgate.approval.resolution"), res),
                None => o.null(k!("tollgate.approval.resolution")),
            }
        }
        TransitionKind::Edited {
            approver,
            reason,
            args: _,
            changed,
            wait,
            approvals,
            resolution,
        } => {
            // The edited values are not written here: the resumed call's own record carries
            // them, redacted as the tool's arguments always are.
            o.str(k!("tollgate.approval.approver"), approver.id.as_str());
            o.opt_str(k!("tollgate.approval.channel"), approver.channel.as_deref());
            o.lit(kv!("tollgate.approval.decision", "edit"));
            o.ser(k!("tollgate.approval.changed"), changed);
            o.str(k!("tollgate.reason"), reason);
            o.u64(k!("tollgate.approval.wait_ms"), millis(*wait));
            o.u64(k!("tollgate.approval.approvals"), u64::from(*approvals));
            match resolution {
                Some(res) => o.ser(k!("tollgate.approval.resolution"), res),
                None => o.null(k!("tollgate.approval.resolution")),
            }
        }
        TransitionKind::TimedOut { resolution, wait } => {
            o.ser(k!("tollgate.approval.resolution"), resolution);
            o.u64(k!("tollgate.approval.wait_ms"), millis(*wait));
        }
        TransitionKind::Consumed { wait } => {
            o.u64(k!("tollgate.approval.wait_ms"), millis(*wait));
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Writes `gen_ai.tool.call.arguments`, redacted per `marks` and bounded (see
/// [`values`](self::values)): nothing nested deeper than `MAX_DEPTH_CAP` is written as JSON,
/// nothing larger than the value limit is written whole, and no hash or prefix is ever taken of
/// text that still holds a marked value.
///
/// `checked`: raw text the guard's boundary already validated strictly (see
/// [`AuditEvent::args_checked`]) is copied without a second scan; only its size is checked here.
fn write_args(
    o: &mut json::Obj<'_>,
    args: Args<'_>,
    marks: Option<&AuditMarks>,
    how: &Redaction,
    checked: bool,
) {
    const KEY: &str = k!("gen_ai.tool.call.arguments");
    let marks = marks.filter(|m| m.redacts());
    match (args, marks) {
        (Args::None, _) => o.key(KEY).extend_from_slice(b"{}"),
        (Args::Value(v), None) => o.value(KEY, v),
        (Args::Value(v), Some(m)) => {
            let mut v = v.clone();
            m.apply(&mut v, how);
            o.value(KEY, &v);
        }
        (Args::Json(text), None) => {
            if text.len() > how.value_limit() {
                return o.omitted(KEY, Omitted::TooLarge, text.as_bytes());
            }
            if checked && text.len() <= AUDIT_JSON_LIMITS.max_bytes {
                return json::minified(o.key(KEY), text);
            }
            match RawJson::parse(text, AUDIT_JSON_LIMITS) {
                // No longer than the text, so within the limit.
                Ok(_) => json::minified(o.key(KEY), text),
                Err(JsonError::TooDeep { .. }) => o.omitted(KEY, Omitted::TooDeep, text.as_bytes()),
                Err(_) => unparsed(o, text),
            }
        }
        (Args::Json(text), Some(m)) => {
            if text.len() > file::MAX_EVENT_BYTES {
                // Not even parsed: too large to redact, so neither hashed nor quoted.
                let out = o.key(KEY);
                return Redaction::write_omitted_unredactable(out, Omitted::TooLarge, text.len());
            }
            // Strictly valid text, or text only too deep for the strict scanner (serde_json
            // reads up to 128 levels): parsed, redacted, then bounded like any value.
            let readable = match RawJson::parse(text, AUDIT_JSON_LIMITS) {
                Ok(_) | Err(JsonError::TooDeep { .. }) => serde_json::from_str::<Value>(text).ok(),
                Err(_) => None,
            };
            match readable {
                Some(mut v) => {
                    m.apply(&mut v, how);
                    o.value(KEY, &v);
                }
                None => unparsed(o, UNPARSEABLE_PLACEHOLDER),
            }
        }
    }

    fn unparsed(o: &mut json::Obj<'_>, text: &str) {
        let how = o.redaction();
        let out = o.key(KEY);
        out.extend_from_slice(b"{\"unparsed\":");
        json::bounded_string(out, text, how);
        out.push(b'}');
    }
}

/// Raw argument text is embedded verbatim only if it is one strict JSON value within these
/// limits (the value limit bounds its size before it is scanned).
const AUDIT_JSON_LIMITS: JsonLimits = JsonLimits {
    max_bytes: file::MAX_EVENT_BYTES,
    max_depth: crate::call::json::MAX_DEPTH_CAP,
};

/// Keeps every event in memory as JSON (see [`AuditEvent::to_json`]). For tests and inspection;
/// it grows without bound.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<Value>>,
    redaction: Redaction,
}

impl MemorySink {
    /// An empty sink writing sensitive values as placeholders.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty sink writing sensitive values as `redaction` says.
    pub fn with_redaction(redaction: Redaction) -> Self {
        Self {
            events: Mutex::default(),
            redaction,
        }
    }

    /// A copy of every event recorded so far, in order.
    pub fn events(&self) -> Vec<Value> {
        self.lock().clone()
    }

    /// Number of events recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<Value>> {
        // A panic while holding the lock cannot leave a half-written Vec<Value> behind (push is
        // the only mutation).
        self.events.lock()
    }
}

impl AuditSink for MemorySink {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let mut buf = Vec::with_capacity(256);
        event.write_json(&mut buf, &self.redaction);
        let v = serde_json::from_slice(&buf).map_err(|e| AuditError::Refused {
            sink: "memory",
            reason: format!("the event could not be serialised: {e}"),
        })?;
        self.lock().push(v);
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        Ok(())
    }
}

fn credential_json(c: &CredentialEvent<'_>, o: &mut json::Obj<'_>) {
    match c {
        CredentialEvent::Issued {
            id,
            provider,
            scope,
            expires_at_unix,
        } => {
            o.lit(kv!("event", "credential_issued"));
            o.str(k!("tollgate.credential.id"), id.as_str());
            o.str(k!("tollgate.credential.provider"), provider);
            o.ser(k!("tollgate.credential.scope"), scope);
            o.u64(k!("tollgate.credential.expires_at"), *expires_at_unix);
        }
        CredentialEvent::Used { id, tool, resource } => {
            o.lit(kv!("event", "credential_used"));
            o.str(k!("tollgate.credential.id"), id.as_str());
            o.str(k!("gen_ai.tool.name"), tool);
            o.str(k!("tollgate.credential.resource"), resource);
        }
        CredentialEvent::Refused {
            id,
            tool,
            resource,
            reason,
        } => {
            o.lit(kv!("event", "credential_refused"));
            o.opt_str(k!("tollgate.credential.id"), id.map(CredentialId::as_str));
            o.str(k!("gen_ai.tool.name"), tool);
            o.str(k!("tollgate.credential.resource"), resource);
            o.str(k!("tollgate.credential.refusal"), reason.code());
            o.str(k!("tollgate.reason"), &reason.to_string());
        }
        CredentialEvent::Revoked { id, provider } => {
            o.lit(kv!("event", "credential_revoked"));
            o.str(k!("tollgate.credential.id"), id.as_str());
            o.str(k!("tollgate.credential.provider"), provider);
        }
        CredentialEvent::KeyRotated {
            provider,
            retired,
            current,
        } => {
            o.lit(kv!("event", "key_rotated"));
            o.str(k!("tollgate.credential.provider"), provider);
            o.str(k!("tollgate.key.retired"), retired);
            o.str(k!("tollgate.key.current"), current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statuses written as literals read back exactly as serde writes them.
    #[test]
    fn outcome_statuses_are_written_as_serde_writes_them() {
        for status in [
            OutcomeStatus::Success,
            OutcomeStatus::Abandoned,
            OutcomeStatus::Error {
                message: "boom \"quoted\"\n".into(),
            },
        ] {
            let mut outcome = Outcome::success();
            outcome.status = status;
            let event = AuditEvent::new(
                7,
                UNIX_EPOCH,
                None,
                None,
                EventKind::Outcome {
                    tool: "pay_invoice",
                    call_id: None,
                    outcome: &outcome,
                    latency: Duration::from_nanos(5),
                    policy_version: PolicyVersion([7; 32]),
                },
            );
            let mut out = Vec::new();
            event.write_json(&mut out, &Redaction::placeholder());
            let v: Value = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(
                v["tollgate.outcome"],
                serde_json::to_value(&outcome.status).unwrap()
            );
            assert_eq!(v["event"], "outcome");
            assert_eq!(v["tollgate.policy.version"], "07".repeat(32));
        }
    }
}
