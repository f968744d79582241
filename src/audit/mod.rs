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
mod encode;
pub mod file;
mod json;
pub mod query;
mod redact;
mod sinks;
pub mod values;

#[cfg(feature = "mcp")]
pub(crate) use redact::SecretFinder;
pub(crate) use redact::scrub_credentials;
pub use redact::{
    AuditMarks, CREDENTIAL_PLACEHOLDER, MIN_SCRUB_BYTES, SECRET_PLACEHOLDER, SENSITIVE_PLACEHOLDER,
    UNPARSEABLE_PLACEHOLDER,
};
pub use sinks::{Fanout, MemorySink, TracingSink};
use std::time::{Duration, SystemTime};
pub use values::Redaction;

use serde_json::Value;

use crate::breaker::Transition;
use crate::call::{AgentId, CredentialId, RunContext, RunId, ToolCall};
use crate::credential::{CredentialError, Scope};
use crate::escalation::TransitionKind;
use crate::verdict::{ApprovalRequest, Denial, Outcome, PolicyVersion};

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
    /// The rollout stage of the run's task type when the decision was made (the mode it was
    /// demoted to live, else the document's stage), for a task type of the policy's
    /// `[rollout]` section: written as `tollgate.rollout.stage` on decision records. It can
    /// differ from [`mode`](Self::mode) when a `[modes]` rule of the call's own (a tool's)
    /// gives another mode; [`rollout`](crate::rollout) evidence is gathered per stage.
    pub rollout_stage: Option<crate::mode::Mode>,
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
            rollout_stage: None,
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
