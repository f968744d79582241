//! The data of the approval workflow: requests, approvers, decisions, tickets and grants.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::call::canonical;
use crate::call::json::{JsonError, RawJson};
use crate::call::{AgentId, Args, Principal, RuleId, RunId};
use crate::verdict::PolicyVersion;

use super::error::ArgsError;
use super::gate::Escalation;
use super::policy::OnTimeout;
use super::serde_util::{policy_version, unique_keys};
use crate::hex::{decode_array as unhex, encode as hex};

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

/// SHA-256 of a call's arguments in the crate's [canonical form](crate::call::canonical):
/// object keys sorted by their unescaped text, strings compared unescaped, no whitespace, and
/// every number as one *exact* decimal literal. The same arguments with keys in another order,
/// other escapes, other spacing or another spelling of the same number (`1.0`, `1e0`, `10e-1`)
/// hash equal, raw text and parsed value alike; two different literals never do, however large
/// (`100000000000000000000` and `100000000000000008191` are different amounts). Serialised as
/// 64 hex digits.
///
/// A parsed [`Value`] (built without `serde_json`'s `arbitrary_precision`) holds a number it
/// cannot represent exactly as the nearest `f64`, and hashes as that `f64`; raw text hashes its
/// literal. Hash what the tool will execute: the guard binds grants to the call's own
/// arguments and refuses to queue raw arguments a `Value` cannot show exactly
/// ([`exact_args`]).
///
/// ```
/// use serde_json::json;
/// use tollgate::escalation::ArgsHash;
///
/// let a = ArgsHash::of_value(&json!({"amount": 5, "to": "x"}))?;
/// let b = ArgsHash::of_json(r#"{ "to": "\u0078", "amount": 5.0 }"#)?;
/// assert_eq!(a, b);
/// assert_ne!(a, ArgsHash::of_json(r#"{"to": "x", "amount": 6}"#)?);
/// assert_ne!(
///     ArgsHash::of_json(r#"{"amount": 100000000000000000000}"#)?,
///     ArgsHash::of_json(r#"{"amount": 100000000000000008191}"#)?,
/// );
/// # Ok::<(), tollgate::call::JsonError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArgsHash([u8; 32]);

impl ArgsHash {
    /// The hash of parsed arguments. Refused: a value nested deeper than
    /// [`canonical::MAX_DEPTH`] (no record could hold it).
    pub fn of_value(v: &Value) -> Result<Self, JsonError> {
        Self::of_args(Args::Value(v))
    }

    /// The hash of raw JSON arguments, validated strictly first (duplicate keys, lone
    /// surrogates, trailing data are refused: they could mean different things to different
    /// parsers), with every number literal kept exactly.
    pub fn of_json(text: &str) -> Result<Self, JsonError> {
        Self::of_args(Args::Json(text))
    }

    /// The hash of arguments in any representation ([`Args::None`] hashes as `{}`). The
    /// canonical bytes stream into the hasher; no string is built.
    pub fn of_args(args: Args<'_>) -> Result<Self, JsonError> {
        let mut h = Sha256::new();
        canonical::write(args, &mut h)?;
        Ok(Self(h.finalize().into()))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Parses raw JSON arguments strictly into a [`Value`] (for [`Submission`]s built from raw
/// text). A number the `Value` cannot hold exactly becomes the nearest `f64`; use
/// [`exact_args`] where that must not happen.
pub fn parse_args(text: &str) -> Result<Value, JsonError> {
    RawJson::parse(text, canonical::LIMITS)?;
    serde_json::from_str(text).map_err(|_| JsonError::Syntax {
        offset: 0,
        expected: "a JSON document serde_json can read",
    })
}

/// [`Args`] as an owned [`Value`] ([`Args::None`] is `{}`), raw text parsed strictly (numbers
/// as [`parse_args`] reads them).
pub fn args_value(args: Args<'_>) -> Result<Value, JsonError> {
    match args {
        Args::None => Ok(Value::Object(serde_json::Map::new())),
        Args::Value(v) => Ok(v.clone()),
        Args::Json(t) => parse_args(t),
    }
}

/// The arguments as approvers are shown them (an owned [`Value`]) and the [`ArgsHash`] a grant
/// binds, refusing arguments for which the two could disagree: raw text holding a number that
/// a parsed `Value` cannot represent exactly ([`ArgsError::Inexact`]: an approver would see a
/// rounded amount while the grant authorises the literal), or arguments nested deeper than
/// [`canonical::MAX_DEPTH`].
///
/// ```
/// use tollgate::Args;
/// use tollgate::escalation::{ArgsError, exact_args};
///
/// let (shown, hash) = exact_args(Args::Json(r#"{"amount": 1.50e3}"#))?;
/// assert_eq!(shown["amount"], 1500.0);
/// assert!(matches!(
///     exact_args(Args::Json(r#"{"amount": 100000000000000008191}"#)),
///     Err(ArgsError::Inexact { offset: 11, .. })
/// ));
/// # let _ = hash;
/// # Ok::<(), ArgsError>(())
/// ```
pub fn exact_args(args: Args<'_>) -> Result<(Value, ArgsHash), ArgsError> {
    let hash = ArgsHash::of_args(args)?;
    if let Args::Json(text) = args
        && let Some((offset, literal)) = canonical::first_inexact_number(text)?
    {
        const SHOWN: usize = 40;
        let mut literal = literal.to_owned();
        if literal.len() > SHOWN {
            literal.truncate(SHOWN);
            literal.push_str("...");
        }
        return Err(ArgsError::Inexact { offset, literal });
    }
    Ok((args_value(args)?, hash))
}

impl fmt::Display for ArgsHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for ArgsHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArgsHash({})", hex(&self.0[..6]))
    }
}

impl Serialize for ArgsHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ArgsHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        unhex::<32>(&s)
            .map(ArgsHash)
            .ok_or_else(|| serde::de::Error::custom("an args hash must be 64 hexadecimal digits"))
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
    /// The agent acting in the run.
    pub agent: AgentId,
    /// Who triggered the run; may not decide the request (separation of duties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Principal>,
    /// The tool proposed.
    pub tool: String,
    /// The arguments proposed, as approvers see them (possibly with secret values redacted).
    pub args: Value,
    /// [`ArgsHash`] of the arguments as proposed: a grant authorises exactly these arguments.
    /// Usually the hash of `args`; see [`Submission::args_hash`] for redacted `args`.
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
/// call it is for. Holding a ticket authorises nothing by itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    /// The request.
    pub approval: ApprovalId,
    /// The run that proposed the call.
    pub run: RunId,
    /// The tool.
    pub tool: String,
    /// The hash of the approved arguments.
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
            tool: tool.into(),
            args,
            escalation,
            policy_version,
            args_hash: None,
        }
    }

    /// Binds the grant to `hash` instead of the hash of `args`: for callers that show approvers
    /// a redacted copy of the arguments (secret values masked) while the grant must authorise
    /// exactly the arguments as proposed (`ArgsHash::of_args(call.args())`). The request's
    /// `args_hash` is then this hash, not `ArgsHash::of_value(&request.args)`.
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
}
