//! Decisions: [`Verdict`], [`Denial`] and its machine-readable [`DenyCode`], the [`PolicyVersion`]
//! every decision carries, and the [`Outcome`] a permitted call reports back.
//!
//! The [`Permit`] itself lives with the guard that issues it.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::call::RuleId;
use crate::guard::Permit;

/// Why a call was denied, as a stable machine-readable code.
///
/// Codes are stable strings (see [`DenyCode::as_str`]) meant for dashboards, alerts and tests;
/// the human reason is in [`Denial::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DenyCode {
    /// The run's role is not defined in the policy.
    UnknownRole,
    /// No tool of that exact name exists (names are compared byte for byte: no case folding, no
    /// trimming, no Unicode normalisation).
    UnknownTool,
    /// The tool exists but the run's role may not call it.
    ToolNotAllowed,
    /// The tool's data tier is above the role's clearance.
    ClearanceTooLow,
    /// The run or role is read-only and the tool writes or is irreversible.
    ReadOnly,
    /// The arguments are not a valid JSON object.
    MalformedArgs,
    /// The raw argument text is larger or deeper than the policy's limits.
    ArgsTooLarge,
    /// A required argument is absent.
    MissingArgument,
    /// An argument the policy forbids is present.
    ForbiddenArgument,
    /// An argument no rule declares is present.
    UnknownArgument,
    /// An argument has the wrong JSON type.
    ArgumentType,
    /// An argument is not one of the allowed values.
    ArgumentNotAllowed,
    /// A number is outside its bounds.
    ArgumentOutOfRange,
    /// A string is too long or an array has too many elements.
    ArgumentTooLong,
    /// A string does not match its pattern.
    ArgumentPattern,
    /// A path argument leaves its root (or uses a construct that could).
    PathEscape,
    /// A URL argument is malformed, ambiguous, or names a host outside the allowlist.
    UrlNotAllowed,
    /// The call names a compartment other than the run's.
    CrossCompartment,
    /// The tool is compartmented but the run is bound to no compartment.
    CompartmentRequired,
    /// The run was started by a different guard.
    ForeignRun,
    /// The audit sink refused the decision's record, so the call cannot proceed (fail closed).
    AuditFailed,
    /// The kill switch suspended the run, its agent, or everything.
    Suspended,
    /// The circuit breaker for this tool / agent is open (or its half-open probes are taken).
    CircuitOpen,
    /// The run used up a budget (tool calls, wall time).
    BudgetExhausted,
    /// The same call was repeated more often than loop detection allows.
    LoopDetected,
    /// The agent's or the tool's rate limit is reached.
    RateLimited,
    /// The run departs from its task type's learned baseline (far too many calls, or a tool the
    /// task type never used).
    AnomalyDetected,
    /// A human denied the escalated call.
    ApprovalDenied,
    /// Nobody decided the escalated call before its deadline (or the grant expired unused).
    ApprovalTimedOut,
    /// The approval presented does not authorise this call: other arguments, tool or run, not
    /// yet decided, already used, or unknown.
    ApprovalInvalid,
    /// The call needed a human but could not be put before one (the approval queue refused it).
    EscalationFailed,
    /// An approver approved the call with *edited* arguments
    /// ([`ApprovalQueue::edit`](crate::escalation::ApprovalQueue::edit)): the call as proposed
    /// does not run. The edited arguments are the request's (`approvals().status(id)`), and its
    /// ticket resumes the edited call ([`Guard::resume`](crate::Guard::resume)).
    ApprovalEdited,
    /// An argument's value comes from a source, tier or compartment a flow rule does not
    /// accept for it ([`crate::flow`]), or the run's context already holds data the call may
    /// not be mixed with.
    FlowViolation,
    /// The run is in [recommend mode](crate::mode::Mode::Recommend): the call is never executed
    /// through the guard but recorded as a [`Recommendation`](crate::mode::Recommendation) for a
    /// human ([`Denial::recommendation`]).
    Recommended,
}

impl DenyCode {
    /// The stable snake_case name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::UnknownRole => "unknown_role",
            DenyCode::UnknownTool => "unknown_tool",
            DenyCode::ToolNotAllowed => "tool_not_allowed",
            DenyCode::ClearanceTooLow => "clearance_too_low",
            DenyCode::ReadOnly => "read_only",
            DenyCode::MalformedArgs => "malformed_args",
            DenyCode::ArgsTooLarge => "args_too_large",
            DenyCode::MissingArgument => "missing_argument",
            DenyCode::ForbiddenArgument => "forbidden_argument",
            DenyCode::UnknownArgument => "unknown_argument",
            DenyCode::ArgumentType => "argument_type",
            DenyCode::ArgumentNotAllowed => "argument_not_allowed",
            DenyCode::ArgumentOutOfRange => "argument_out_of_range",
            DenyCode::ArgumentTooLong => "argument_too_long",
            DenyCode::ArgumentPattern => "argument_pattern",
            DenyCode::PathEscape => "path_escape",
            DenyCode::UrlNotAllowed => "url_not_allowed",
            DenyCode::CrossCompartment => "cross_compartment",
            DenyCode::CompartmentRequired => "compartment_required",
            DenyCode::ForeignRun => "foreign_run",
            DenyCode::AuditFailed => "audit_failed",
            DenyCode::Suspended => "suspended",
            DenyCode::CircuitOpen => "circuit_open",
            DenyCode::BudgetExhausted => "budget_exhausted",
            DenyCode::LoopDetected => "loop_detected",
            DenyCode::RateLimited => "rate_limited",
            DenyCode::AnomalyDetected => "anomaly_detected",
            DenyCode::ApprovalDenied => "approval_denied",
            DenyCode::ApprovalTimedOut => "approval_timed_out",
            DenyCode::ApprovalInvalid => "approval_invalid",
            DenyCode::EscalationFailed => "escalation_failed",
            DenyCode::ApprovalEdited => "approval_edited",
            DenyCode::FlowViolation => "flow_violation",
            DenyCode::Recommended => "recommended",
        }
    }

    /// Whether telling the agent this exact code would reveal that a tool it may not see exists.
    pub fn reveals_hidden_tool(self) -> bool {
        matches!(
            self,
            DenyCode::ToolNotAllowed | DenyCode::ClearanceTooLow | DenyCode::ReadOnly
        )
    }
}

impl fmt::Display for DenyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The content hash of the policy a decision was made under (SHA-256 of its canonical JSON form).
///
/// `Display` prints all 64 hex digits; `{:#}` prints the first 12.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyVersion(pub(crate) [u8; 32]);

impl PolicyVersion {
    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = if f.alternate() { 6 } else { 32 };
        for b in &self.0[..n] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyVersion({self:#})")
    }
}

impl Serialize for PolicyVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A refused call: what rule refused it, in machine and human terms, under which policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    code: DenyCode,
    rule: RuleId,
    reason: Cow<'static, str>,
    policy_version: Option<PolicyVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recommendation: Option<std::sync::Arc<crate::mode::Recommendation>>,
}

impl Denial {
    /// A denial with `code`, produced by `rule`, explained by `reason`.
    pub fn new(code: DenyCode, rule: RuleId, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            rule,
            reason: reason.into(),
            policy_version: None,
            recommendation: None,
        }
    }

    pub(crate) fn with_recommendation(mut self, r: crate::mode::Recommendation) -> Self {
        self.recommendation = Some(std::sync::Arc::new(r));
        self
    }

    /// The recommendation, for a [`DenyCode::Recommended`] denial: the call the agent proposed,
    /// for a human to act on.
    pub fn recommendation(&self) -> Option<&crate::mode::Recommendation> {
        self.recommendation.as_deref()
    }

    pub(crate) fn with_version(mut self, v: PolicyVersion) -> Self {
        self.policy_version = Some(v);
        self
    }

    /// The machine-readable code.
    pub fn code(&self) -> DenyCode {
        self.code
    }

    /// The id of the rule that fired, e.g. `tools.send_email.args.amount.max`.
    pub fn rule(&self) -> &RuleId {
        &self.rule
    }

    /// The human explanation (for operators and audit; may name tools the agent cannot see).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The version of the policy that denied the call; `None` only for denials issued before any
    /// policy was consulted (e.g. [`DenyCode::ForeignRun`]).
    pub fn policy_version(&self) -> Option<PolicyVersion> {
        self.policy_version
    }

    /// What to tell the *agent*. Denials that would confirm the existence of a tool the agent may
    /// not see collapse into the same message as an unknown tool, so the denial channel cannot be
    /// used to discover the tool list.
    pub fn agent_message(&self) -> Cow<'_, str> {
        if self.code.reveals_hidden_tool() || self.code == DenyCode::UnknownTool {
            Cow::Borrowed("tool not available")
        } else if self.code == DenyCode::Recommended {
            Cow::Borrowed("not executed: the call was recorded as a recommendation for a human")
        } else {
            Cow::Borrowed(&self.reason)
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "denied [{}] by {}: {}",
            self.code, self.rule, self.reason
        )
    }
}

impl std::error::Error for Denial {}

pub use crate::escalation::ApprovalRequest;

/// The guard's answer for one proposed call.
///
/// Match it exhaustively; only [`Verdict::Allow`] carries the [`Permit`] through which a tool runs.
#[must_use = "a verdict must be acted on: only Allow carries a permit"]
#[derive(Debug)]
pub enum Verdict<'a> {
    /// The call may run under this permit.
    Allow(Permit<'a>),
    /// A human must decide first: the request is in the guard's approval queue. Keep its
    /// [`ticket`](ApprovalRequest::ticket) and [`Guard::resume`](crate::Guard::resume) once it is
    /// approved, or await [`Guard::check_and_wait`](crate::Guard::check_and_wait).
    Escalate(Box<ApprovalRequest>),
    /// The call must not run.
    Deny(Denial),
}

impl<'a> Verdict<'a> {
    /// `true` for [`Verdict::Allow`].
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow(_))
    }

    /// The denial, if this is one.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            Verdict::Deny(d) => Some(d),
            _ => None,
        }
    }

    /// The deny code, if this is a denial.
    pub fn deny_code(&self) -> Option<DenyCode> {
        self.denial().map(Denial::code)
    }

    /// The recommendation, if the call was in [recommend mode](crate::mode::Mode::Recommend)
    /// (a [`DenyCode::Recommended`] denial: nothing runs).
    pub fn recommendation(&self) -> Option<&crate::mode::Recommendation> {
        self.denial().and_then(Denial::recommendation)
    }

    /// The permit, or what stood in its way.
    pub fn into_permit(self) -> Result<Permit<'a>, Refusal> {
        match self {
            Verdict::Allow(p) => Ok(p),
            Verdict::Escalate(r) => Err(Refusal::Escalated(r)),
            Verdict::Deny(d) => Err(Refusal::Denied(d)),
        }
    }
}

/// Why a call did not get a permit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The call was denied.
    #[error("{0}")]
    Denied(Denial),
    /// The call awaits a human decision.
    #[error("escalated to a human (approval {}): {}", .0.id, .0.reasons.iter().map(|r| &*r.text).collect::<Vec<_>>().join("; "))]
    Escalated(Box<ApprovalRequest>),
}

/// How a permitted call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutcomeStatus {
    /// The tool ran and succeeded.
    Success,
    /// The tool ran and failed.
    Error {
        /// What went wrong.
        message: Cow<'static, str>,
    },
    /// The permit was dropped without an outcome: the tool may or may not have run.
    Abandoned,
}

/// The outcome a permitted call reports back: status and resource usage.
///
/// ```
/// use tollgate::Outcome;
///
/// let ok = Outcome::success().with_tokens(812, 64);
/// let failed = Outcome::error("upstream timed out");
/// assert!(ok.is_success() && !failed.is_success());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// How the call ended.
    #[serde(flatten)]
    pub status: OutcomeStatus,
    /// Input tokens consumed by the step, if known.
    pub input_tokens: Option<u64>,
    /// Output tokens produced by the step, if known.
    pub output_tokens: Option<u64>,
    /// What the step cost, in millionths of the budget's currency unit, if known.
    pub cost_micros: Option<u64>,
    /// What the tool returned, as the framework chose to record it (a summary, a digest, or the
    /// output itself), if given. Recorded in the audit trail as `tollgate.output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Cow<'static, str>>,
}

impl Outcome {
    /// A successful call.
    pub fn success() -> Self {
        Self::with_status(OutcomeStatus::Success)
    }

    /// A failed call.
    pub fn error(message: impl Into<Cow<'static, str>>) -> Self {
        Self::with_status(OutcomeStatus::Error {
            message: message.into(),
        })
    }

    pub(crate) fn abandoned() -> Self {
        Self::with_status(OutcomeStatus::Abandoned)
    }

    fn with_status(status: OutcomeStatus) -> Self {
        Self {
            status,
            input_tokens: None,
            output_tokens: None,
            cost_micros: None,
            output: None,
        }
    }

    /// Attaches token usage.
    pub fn with_tokens(mut self, input: u64, output: u64) -> Self {
        self.input_tokens = Some(input);
        self.output_tokens = Some(output);
        self
    }

    /// Attaches what the tool returned, as the framework chooses to record it (a summary, a
    /// digest, or the output itself: the audit trail keeps it verbatim, so leave out what must
    /// not be kept).
    pub fn with_output(mut self, output: impl Into<Cow<'static, str>>) -> Self {
        self.output = Some(output.into());
        self
    }

    /// The step's cost, in millionths of the budget's currency unit.
    pub fn with_cost_micros(mut self, micros: u64) -> Self {
        self.cost_micros = Some(micros);
        self
    }

    /// Tokens used, if either count is known.
    pub fn total_tokens(&self) -> Option<u64> {
        match (self.input_tokens, self.output_tokens) {
            (None, None) => None,
            (i, o) => Some(i.unwrap_or(0).saturating_add(o.unwrap_or(0))),
        }
    }

    /// `true` if the call succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self.status, OutcomeStatus::Success)
    }
}
