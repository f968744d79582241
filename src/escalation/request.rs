//! The data of the approval workflow: requests, approvers, decisions, tickets and grants.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::call::{AgentId, CompartmentId, Principal, RuleId, RunContext, RunId, TaskType};
use crate::verdict::PolicyVersion;

use super::binding::ArgsHash;
use super::gate::Escalation;
use super::policy::OnTimeout;
use super::serde_util::{policy_version, unique_keys};
use crate::hex::encode as hex;

/// The id of one approval request: 128 random bits as 32 lower-case hex digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalId(Arc<str>);

impl ApprovalId {
    /// A fresh random id from the operating system's generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)?;
        Ok(Self(hex(&b).into()))
    }

    /// Wraps an id received from elsewhere (a ticket, a UI, a log).
    pub fn new(s: impl AsRef<str>) -> Self {
        Self(s.as_ref().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ApprovalId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// Why a call needs a human: the rule that fired and its human text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reason {
    /// The escalation rule's id.
    pub rule: RuleId,
    /// The explanation shown to approvers.
    pub text: Arc<str>,
}

impl Reason {
    /// A reason from `rule` with `text`.
    pub fn new(rule: impl Into<RuleId>, text: impl AsRef<str>) -> Self {
        Self {
            rule: rule.into(),
            text: text.as_ref().into(),
        }
    }
}

/// A person (or system) deciding approval requests. Identity is [`id`](Self::id): group
/// membership, quorum distinctness and separation of duties all compare it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    /// The approver's principal id, as listed in approver groups.
    pub id: Principal,
    /// A display name for audit and notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where the decision came from (`slack`, `web`, `cli`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl Approver {
    /// The approver with principal id `id`.
    pub fn new(id: impl Into<Principal>) -> Self {
        Self {
            id: id.into(),
            name: None,
            channel: None,
        }
    }

    /// Sets the display name.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the channel the decision arrives through.
    pub fn via(mut self, channel: impl Into<String>) -> Self {
        self.channel = Some(channel.into());
        self
    }
}

/// One approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Counts toward the quorum.
    Approve,
    /// Vetoes the request.
    Deny,
}

/// Approver groups: group name to the principal ids that belong to it.
///
/// ```
/// use tollgate::escalation::ApproverGroups;
///
/// let groups = ApproverGroups::new().with("finance", ["alice", "bob"]);
/// assert!(groups.is_member("finance", "alice"));
/// assert!(!groups.is_member("finance", "mallory"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ApproverGroups(BTreeMap<String, BTreeSet<Principal>>);

impl ApproverGroups {
    /// No groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defines (or replaces) `group`.
    pub fn insert<P: Into<Principal>>(
        &mut self,
        group: impl Into<String>,
        members: impl IntoIterator<Item = P>,
    ) {
        self.0
            .insert(group.into(), members.into_iter().map(Into::into).collect());
    }

    /// [`insert`](Self::insert), builder style.
    pub fn with<P: Into<Principal>>(
        mut self,
        group: impl Into<String>,
        members: impl IntoIterator<Item = P>,
    ) -> Self {
        self.insert(group, members);
        self
    }

    /// Whether `group` is defined.
    pub fn contains_group(&self, group: &str) -> bool {
        self.0.contains_key(group)
    }

    /// The members of `group`.
    pub fn members(&self, group: &str) -> Option<&BTreeSet<Principal>> {
        self.0.get(group)
    }

    /// Whether `id` belongs to `group` (an undefined group has no members).
    pub fn is_member(&self, group: &str, id: &str) -> bool {
        self.0
            .get(group)
            .is_some_and(|m| m.contains(&Principal::new(id)))
    }

    /// Group names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

impl<'de> Deserialize<'de> for ApproverGroups {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map: BTreeMap<String, Vec<String>> = unique_keys(d)?;
        let mut g = ApproverGroups::new();
        for (name, members) in map {
            g.insert(name, members);
        }
        Ok(g)
    }
}

/// One level of a request's chain, with its schedule fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainLevel {
    /// The approver group asked at this level.
    pub group: String,
    /// Milliseconds after creation (as configured).
    pub after_ms: u64,
    /// Wall-clock time (unix ms) at which an undecided request reaches this level; rounded up,
    /// so a level is never reached early.
    pub at_ms: u64,
}

/// A call waiting for a human decision. Serialisable: it is stored, audited and shown to
/// approvers as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApprovalRequest {
    /// Random 128-bit id.
    pub id: ApprovalId,
    /// The run that proposed the call.
    pub run: RunId,
    /// The agent acting in the run. Only a run of this agent can consume the grant.
    pub agent: AgentId,
    /// Who triggered the run; may not decide the request (separation of duties). Only a run
    /// with this trigger can consume the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Principal>,
    /// The compartment (matter, patient) the run is bound to. Only a run bound to this
    /// compartment can consume the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartment: Option<CompartmentId>,
    /// The task type the run serves, if any: what a staged rollout demotes when an approver
    /// denies the request, even after the run ended or the process restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<TaskType>,
    /// The tool proposed.
    pub tool: String,
    /// The arguments proposed, as approvers see them (possibly with secret values redacted).
    pub args: Value,
    /// [`ArgsHash`] (keyed by the queue) of the arguments as proposed: a grant authorises
    /// exactly these arguments. Usually the hash of `args`; see [`Submission::args_hash`] for
    /// redacted `args`.
    pub args_hash: ArgsHash,
    /// Every matched rule's reason.
    pub reasons: Vec<Reason>,
    /// Creation, wall clock, unix milliseconds (rounded down).
    pub created_ms: u64,
    /// The deadline, wall clock, unix milliseconds (rounded up, so never early), as recorded
    /// at submission. The queue enforces it on the monotonic clock: an undecided request times
    /// out once the time that was left to this instant has elapsed (see the
    /// [module docs](super#time)).
    pub deadline_ms: u64,
    /// The policy version the request was raised under (64 hex digits).
    #[serde(with = "policy_version")]
    pub policy_version: PolicyVersion,
    /// What the deadline means.
    pub on_timeout: OnTimeout,
    /// Distinct approvers needed.
    pub quorum: u32,
    /// Who is asked, and when.
    pub chain: Vec<ChainLevel>,
    /// The chain level reached (as of this snapshot).
    pub level: usize,
}

impl ApprovalRequest {
    /// The ticket a synchronous caller stores and later presents to
    /// [`ApprovalQueue::consume_ticket`](super::ApprovalQueue::consume_ticket).
    pub fn ticket(&self) -> Ticket {
        Ticket {
            approval: self.id.clone(),
            run: self.run.clone(),
            tool: self.tool.clone(),
            args_hash: self.args_hash,
        }
    }

    /// The group asked at the current level.
    pub fn current_group(&self) -> Option<&str> {
        self.chain.get(self.level).map(|l| l.group.as_str())
    }
}

/// What a caller keeps while a request is pending: enough to find it again and to prove which
/// call it is for. Holding a ticket authorises nothing by itself: the queue compares the call
/// presented with the request it stored (run, agent, trigger, compartment, tool, arguments),
/// not with the ticket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    /// The request.
    pub approval: ApprovalId,
    /// The run that proposed the call.
    pub run: RunId,
    /// The tool.
    pub tool: String,
    /// The (keyed) hash of the approved arguments.
    pub args_hash: ArgsHash,
}

/// Proof that an approved request was consumed for one execution of exactly its tool and
/// arguments. Returned once per request, ever (also across restarts).
#[derive(Debug, PartialEq, Eq, Serialize)]
#[must_use = "a grant authorises one execution; executing without it bypasses the approval"]
#[non_exhaustive]
pub struct Grant {
    /// The request.
    pub approval: ApprovalId,
    /// The run.
    pub run: RunId,
    /// The tool.
    pub tool: String,
    /// The arguments authorised.
    pub args_hash: ArgsHash,
    /// Who approved (empty when approved by timeout).
    pub approvers: Vec<Principal>,
    /// When the grant was consumed (unix ms).
    pub consumed_ms: u64,
    /// The policy version of the request.
    #[serde(serialize_with = "policy_version::serialize")]
    pub policy_version: PolicyVersion,
}

/// One approver's recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    /// Who.
    pub approver: Approver,
    /// What.
    pub decision: Decision,
    /// Why (free text from the approver).
    pub reason: String,
    /// When (unix ms).
    pub at_ms: u64,
    /// The chain level the request was at.
    pub level: usize,
    /// An approval of arguments the approver edited (see
    /// [`ApprovalQueue::edit`](super::ApprovalQueue::edit)): the request's arguments were
    /// replaced, and approvals cast before it no longer count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
}

/// Where a request is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestState {
    /// Waiting for approvers.
    Pending,
    /// Approved (by quorum, or by timeout where the rules say so); the grant is unused.
    Approved {
        /// When (unix ms).
        at_ms: u64,
        /// Whether the deadline, not people, approved it.
        by_timeout: bool,
    },
    /// Denied by an approver's veto or by the deadline.
    Denied {
        /// When (unix ms).
        at_ms: u64,
        /// The approver who denied; `None` when the deadline passed.
        by: Option<Principal>,
    },
    /// Approved and its single-use grant consumed.
    Consumed {
        /// When (unix ms).
        at_ms: u64,
    },
    /// Withdrawn without a decision because the approval store was repaired while the request
    /// was open: records about it may have been among those removed, so neither its votes nor
    /// an approval can be trusted (fail closed). Submit it again.
    Voided {
        /// When the repair was declared (unix ms).
        at_ms: u64,
    },
}

impl RequestState {
    /// Whether the request still waits for a decision.
    pub fn is_pending(&self) -> bool {
        matches!(self, RequestState::Pending)
    }

    /// Whether the request was approved (consumed or not).
    pub fn is_approved(&self) -> bool {
        matches!(
            self,
            RequestState::Approved { .. } | RequestState::Consumed { .. }
        )
    }

    /// Whether the request was denied (by an approver or by the deadline).
    pub fn is_denied(&self) -> bool {
        matches!(self, RequestState::Denied { .. })
    }

    /// Whether a store repair withdrew the request ([`RequestState::Voided`]).
    pub fn is_voided(&self) -> bool {
        matches!(self, RequestState::Voided { .. })
    }

    /// Whether the deadline decided the request.
    pub fn is_timed_out(&self) -> bool {
        matches!(
            self,
            RequestState::Denied { by: None, .. }
                | RequestState::Approved {
                    by_timeout: true,
                    ..
                }
        )
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestState::Pending => f.write_str("pending"),
            RequestState::Approved {
                by_timeout: true, ..
            } => f.write_str("approved by timeout"),
            RequestState::Approved { .. } => f.write_str("approved"),
            RequestState::Denied { by: Some(p), .. } => write!(f, "denied by `{p}`"),
            RequestState::Denied { by: None, .. } => f.write_str("denied by timeout"),
            RequestState::Consumed { .. } => f.write_str("consumed"),
            RequestState::Voided { .. } => f.write_str("voided by a store repair"),
        }
    }
}

/// How a request ended, as [`ApprovalQueue::wait`](super::ApprovalQueue::wait) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "resolution", rename_all = "snake_case")]
pub enum Resolution {
    /// Approved: consume the grant to execute.
    Approved {
        /// The approvers who made the quorum (empty when approved by timeout).
        by: Vec<Principal>,
        /// Whether the deadline approved it.
        by_timeout: bool,
    },
    /// Denied: the call must not run.
    Denied {
        /// The approver who vetoed; `None` when the deadline passed.
        by: Option<Principal>,
        /// The approver's reason.
        reason: Option<String>,
    },
}

impl Resolution {
    /// Whether the request was approved.
    pub fn is_approved(&self) -> bool {
        matches!(self, Resolution::Approved { .. })
    }
}

/// A request with everything that happened to it so far.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RequestStatus {
    /// The request (its `level` is the current one).
    pub request: ApprovalRequest,
    /// Its state.
    pub state: RequestState,
    /// Every decision recorded, in order.
    pub votes: Vec<Vote>,
    /// Distinct approvers who approved.
    pub approvals: u32,
}

/// What [`ApprovalQueue::submit`](super::ApprovalQueue::submit) needs to open a request.
///
/// ```
/// use std::time::Duration;
/// use serde_json::json;
/// use tollgate::escalation::{ApprovalParams, Escalation, Level, Reason, Submission};
///
/// let escalation = Escalation::manual(
///     Reason::new("manual", "operator asked for review"),
///     ApprovalParams::new(Duration::from_secs(600), [Level::new("ops", Duration::ZERO)]),
/// );
/// # let version = tollgate::escalation::EscalationGate::none().version();
/// let s = Submission::new("run-1", "bot", "wire", json!({"amount": 10}), escalation, version)
///     .triggered_by("user:jdoe");
/// # let _ = s;
/// ```
#[derive(Debug, Clone)]
pub struct Submission {
    pub(crate) run: RunId,
    pub(crate) agent: AgentId,
    pub(crate) trigger: Option<Principal>,
    pub(crate) compartment: Option<CompartmentId>,
    pub(crate) task_type: Option<TaskType>,
    pub(crate) tool: String,
    pub(crate) args: Value,
    pub(crate) escalation: Escalation,
    pub(crate) policy_version: PolicyVersion,
    pub(crate) args_hash: Option<ArgsHash>,
}

impl Submission {
    /// A request for `agent`'s call of `tool` with `args` in `run`, escalated as `escalation`
    /// says, under `policy_version`.
    pub fn new(
        run: impl Into<RunId>,
        agent: impl Into<AgentId>,
        tool: impl Into<String>,
        args: Value,
        escalation: Escalation,
        policy_version: PolicyVersion,
    ) -> Self {
        Self {
            run: run.into(),
            agent: agent.into(),
            trigger: None,
            compartment: None,
            task_type: None,
            tool: tool.into(),
            args,
            escalation,
            policy_version,
            args_hash: None,
        }
    }

    /// A request for a call of `tool` with `args` in run `run` with context `ctx`: its agent,
    /// trigger and compartment, which [`ApprovalQueue::consume_ticket`](super::ApprovalQueue::consume_ticket)
    /// then requires of the run that consumes the grant.
    pub fn for_run(
        run: impl Into<RunId>,
        ctx: &RunContext,
        tool: impl Into<String>,
        args: Value,
        escalation: Escalation,
        policy_version: PolicyVersion,
    ) -> Self {
        Self::new(
            run,
            ctx.agent().clone(),
            tool,
            args,
            escalation,
            policy_version,
        )
        .trigger(ctx.trigger().cloned())
        .compartment(ctx.compartment().cloned())
        .task_type(ctx.task_type().cloned())
    }

    /// Binds the grant to `hash` instead of the hash of `args`: for callers that show approvers
    /// a redacted copy of the arguments (secret values masked) while the grant must authorise
    /// exactly the arguments as proposed (`queue.args_hash(call.args())`, or the hash from
    /// [`ApprovalQueue::exact_args`](super::ApprovalQueue::exact_args)). The request's
    /// `args_hash` is then this hash, not the hash of `request.args`. It must be made with the
    /// queue's key, or no call will ever match it.
    pub fn args_hash(mut self, hash: ArgsHash) -> Self {
        self.args_hash = Some(hash);
        self
    }

    /// The principal who triggered the run (barred from deciding, see
    /// [`QueueConfig::separation_of_duties`](super::QueueConfig::separation_of_duties)).
    pub fn triggered_by(mut self, p: impl Into<Principal>) -> Self {
        self.trigger = Some(p.into());
        self
    }

    /// Sets the trigger from an optional principal (e.g. [`RunContext::trigger`](crate::RunContext::trigger)).
    pub fn trigger(mut self, p: Option<Principal>) -> Self {
        self.trigger = p;
        self
    }

    /// The compartment the run is bound to (e.g. [`RunContext::compartment`](crate::RunContext::compartment)).
    pub fn compartment(mut self, c: Option<CompartmentId>) -> Self {
        self.compartment = c;
        self
    }

    /// The task type the run serves (e.g. [`RunContext::task_type`](crate::RunContext::task_type)).
    pub fn task_type(mut self, t: Option<TaskType>) -> Self {
        self.task_type = t;
        self
    }
}
