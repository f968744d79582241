//! The escalation module's errors: one enum for policies, one for the queue, one for stores.
//! Every variant says what was wrong and where (a field path, an approval id, a file line).

use std::path::PathBuf;

use crate::audit::AuditError;
use crate::call::Principal;

use super::binding::ArgsHash;
use super::request::{ApprovalId, RequestState};

/// An escalation policy that cannot become an [`EscalationGate`](super::EscalationGate).
///
/// `field` is a path into the document such as `rules[2].when.amount.path`, so the author can find
/// the line to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EscalationPolicyError {
    /// The document is not well-formed TOML/JSON, or a field is unknown or has the wrong shape.
    #[error("invalid {format} escalation policy at `{field}`: {message}")]
    Parse {
        /// `"JSON"` or `"TOML"`.
        format: &'static str,
        /// Where in the document (`.` for the root).
        field: String,
        /// The parser's explanation.
        message: String,
    },
    /// A value is not acceptable.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// Where in the document.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A tier name the boundary's tier list does not define.
    #[error("`{field}`: unknown tier `{tier}` (defined tiers: {known})")]
    UnknownTier {
        /// Where in the document.
        field: String,
        /// The name used.
        tier: String,
        /// The tiers that exist, comma-separated.
        known: String,
    },
    /// An escalation chain names an approver group that `groups` does not define.
    #[error("`{field}`: unknown approver group `{group}`")]
    UnknownGroup {
        /// Where in the document.
        field: String,
        /// The name used.
        group: String,
    },
    /// A rule is scoped to a tool that the boundary does not define.
    #[error("`{field}`: unknown tool `{tool}`")]
    UnknownTool {
        /// Where in the document.
        field: String,
        /// The name used.
        tool: String,
    },
    /// More rules than a gate can hold (matches are a 64-bit set of rule indices).
    #[error("`rules`: {count} rules given, at most {limit} are supported")]
    TooManyRules {
        /// Rules in the document.
        count: usize,
        /// The limit (64).
        limit: usize,
    },
    /// The policy file could not be read.
    #[error("cannot read escalation policy `{}`: {message}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error, as text.
        message: String,
    },
}

impl EscalationPolicyError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The path of the field at fault, where there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Parse { field, .. }
            | Self::Invalid { field, .. }
            | Self::UnknownTier { field, .. }
            | Self::UnknownGroup { field, .. }
            | Self::UnknownTool { field, .. } => Some(field),
            Self::TooManyRules { .. } => Some("rules"),
            Self::Io { .. } => None,
        }
    }
}

/// Arguments that cannot be put before approvers exactly as they would execute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// Not valid JSON for the strict scanner, nested deeper than 64 levels, or a number with an
    /// absurd exponent.
    #[error(transparent)]
    Json(#[from] crate::call::JsonError),
    /// Raw text holds a number that a parsed value cannot represent exactly (an integer beyond
    /// 64 bits that is not an exact `f64`, or a decimal with more precision than an `f64`):
    /// approvers would be shown a rounded value while the grant binds the literal.
    #[error(
        "the number `{literal}` at byte {offset} cannot be shown to approvers exactly; send it as a string or with fewer digits"
    )]
    Inexact {
        /// Byte offset of the literal in the raw text.
        offset: usize,
        /// The literal (its first 40 characters).
        literal: String,
    },
}

/// Why an approval store could not open, load or keep a record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An I/O error on one of the store's files.
    #[error("approval store `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another [`FileApprovalStore`](super::FileApprovalStore) (in this process or another)
    /// holds the store's lock. Two stores on one file could each hand out the same single-use
    /// grant, so the second is refused.
    #[error(
        "approval store `{}` is in use by {} (lock file `{}`)",
        path.display(),
        holder.map_or_else(|| "another store".to_owned(), |pid| format!("process {pid}")),
        lock.display()
    )]
    Locked {
        /// The store file.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The process id the holder wrote into the lock file, where the OS lets it be read.
        holder: Option<u32>,
    },
    /// A complete line does not hold a valid, chained and authenticated record: it was changed,
    /// inserted, reordered, written without the store key, or follows a removed record. Never
    /// repaired silently; see [`FileApprovalStore::repair`](super::FileApprovalStore::repair).
    #[error(
        "approval store `{}` is damaged at line {line} ({record}): {reason}; nothing was changed (FileApprovalStore::repair removes the damage and declares it)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The record as far as it can be read (`seq 7: consumed of request ...`, or
        /// `unreadable`).
        record: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store's head vouches for more records than the file holds: records were removed from
    /// the end (a deleted `consumed` or `decided` line would otherwise re-arm a grant).
    #[error(
        "approval store `{}` ends at record {last_seq} but its head vouches for record {head_seq}: records were removed from the end; nothing was changed (FileApprovalStore::repair declares the loss)",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The last record in the file.
        last_seq: u64,
        /// The last record the head vouches for.
        head_seq: u64,
    },
    /// The store's head file is missing while the store holds records, no slot of it
    /// authenticates, or it vouches for a record other than the one in the file.
    #[error(
        "approval store head `{}` {reason}; nothing was changed (FileApprovalStore::repair declares the damage)",
        path.display()
    )]
    HeadDamaged {
        /// The head file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record that could not be read back once written (arguments nested deeper than the
    /// one record depth limit, 64 levels), refused before anything was written or
    /// acknowledged.
    #[error("approval record for request {} cannot be stored: {reason}", id.as_ref().map_or_else(|| "(none)".to_owned(), |i| format!("`{i}`")))]
    Unrepresentable {
        /// The request, if the record is about one.
        id: Option<ApprovalId>,
        /// Why.
        reason: String,
    },
    /// A record could not be serialised.
    #[error("cannot serialise approval record: {0}")]
    Serialize(String),
    /// An earlier append failed and could not be rolled back, so the file's tail is unknown; the
    /// store refuses further appends until it is reopened (which repairs or reports the tail).
    #[error("approval store `{}` refuses appends after a failed write; reopen it", path.display())]
    Broken {
        /// The file.
        path: PathBuf,
    },
    /// The operating system had no randomness to give for the store's argument key.
    #[error("approval store: cannot generate its argument key: {0}")]
    Random(String),
    /// A shared store refused the record: another host changed the request first (decided,
    /// timed out or consumed it). Nothing was written; sync the queue and look again.
    #[error("approval request `{id}`: {reason}")]
    Conflict {
        /// The request.
        id: ApprovalId,
        /// What the store holds instead.
        reason: String,
    },
    /// A shared store's database could not be reached or refused a statement (nothing was
    /// acknowledged).
    #[error("approval store database: {0}")]
    Database(String),
    /// A shared store's record does not verify: changed, inserted, reordered or removed by
    /// someone without the store key.
    #[error("approval store record seq {seq} does not verify: {reason}")]
    Tampered {
        /// The record.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Why a queue operation was refused. Nothing changed when one of these is returned, except
/// that due expiries and chain moves found on the way were applied first.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// No request with this id exists.
    #[error("approval request `{id}` does not exist")]
    NotFound {
        /// The id asked for.
        id: ApprovalId,
    },
    /// The request was already decided (approved, denied, timed out or consumed).
    #[error("approval request `{id}` is no longer pending (it is {state})")]
    NotPending {
        /// The request.
        id: ApprovalId,
        /// Its state.
        state: RequestState,
    },
    /// The request's deadline passed before this operation.
    #[error("approval request `{id}` expired at unix ms {deadline_ms}")]
    Expired {
        /// The request.
        id: ApprovalId,
        /// Its deadline as recorded (wall clock, unix milliseconds; enforced on the monotonic
        /// clock).
        deadline_ms: u64,
    },
    /// The approver is not a member of the group of the request's current level or of an
    /// earlier level.
    #[error(
        "`{approver}` may not decide approval request `{id}` at level {level} (eligible groups: {groups})"
    )]
    NotEligible {
        /// The request.
        id: ApprovalId,
        /// Who tried.
        approver: Principal,
        /// The request's current level.
        level: usize,
        /// The groups eligible now, comma-separated.
        groups: String,
    },
    /// Separation of duties: the principal who triggered the run (or the acting agent) may not
    /// decide its own request.
    #[error("`{approver}` triggered the run of approval request `{id}` and may not decide it")]
    SelfApproval {
        /// The request.
        id: ApprovalId,
        /// Who tried.
        approver: Principal,
    },
    /// The approver already approved this request; a repeat does not count toward the quorum.
    #[error("`{approver}` already approved request `{id}`; a repeat approval does not count")]
    AlreadyApproved {
        /// The request.
        id: ApprovalId,
        /// Who repeated.
        approver: Principal,
    },
    /// Consume was asked for a request that is not approved (pending or denied).
    #[error("approval request `{id}` is not approved (it is {state})")]
    NotApproved {
        /// The request.
        id: ApprovalId,
        /// Its state.
        state: RequestState,
    },
    /// The request's grant was already consumed: a grant authorises exactly one execution.
    #[error("the grant of approval request `{id}` was already used")]
    AlreadyUsed {
        /// The request.
        id: ApprovalId,
    },
    /// The arguments presented differ from the approved ones; the grant stays unused.
    #[error(
        "arguments do not match approval request `{id}` (approved {expected}, presented {actual})"
    )]
    ArgsMismatch {
        /// The request.
        id: ApprovalId,
        /// Keyed hash of the approved arguments.
        expected: ArgsHash,
        /// Keyed hash (under the queue's current key) of the presented arguments.
        actual: ArgsHash,
    },
    /// A ticket presented for another call than its request's: another tool, run id, agent,
    /// trigger or compartment; the grant stays unused.
    #[error("ticket does not match approval request `{id}`: {field} differs")]
    TicketMismatch {
        /// The request.
        id: ApprovalId,
        /// `"tool"`, `"run"`, `"agent"`, `"trigger"` or `"compartment"`.
        field: &'static str,
    },
    /// Presented arguments that are not valid JSON.
    #[error("arguments presented for approval request `{id}` are not valid JSON: {source}")]
    MalformedArgs {
        /// The request.
        id: ApprovalId,
        /// The parser's explanation.
        #[source]
        source: crate::call::JsonError,
    },
    /// The approval is older than the queue's grant lifetime.
    #[error("the grant of approval request `{id}` expired at unix ms {expired_ms}")]
    GrantExpired {
        /// The request.
        id: ApprovalId,
        /// When the grant stopped being usable: the approval's wall-clock time plus the
        /// lifetime, unix milliseconds (the lifetime itself runs on the monotonic clock).
        expired_ms: u64,
    },
    /// A submission that cannot become a request anyone could approve.
    #[error("invalid submission: `{field}`: {reason}")]
    InvalidSubmission {
        /// The field at fault.
        field: String,
        /// Why.
        reason: String,
    },
    /// The queue holds its configured maximum of pending requests.
    #[error("approval queue is full ({limit} pending requests)")]
    Full {
        /// The configured `max_pending`.
        limit: usize,
    },
    /// The observer (audit) refused the transition, so it did not happen (fail closed).
    #[error("the queue observer refused the transition: {0}")]
    Observer(#[source] AuditError),
    /// The store refused the record, so the transition did not happen (fail closed).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Replaying the store found records that contradict each other; the queue does not open.
    #[error("approval store record {index} cannot be replayed: {reason}")]
    Replay {
        /// 0-based index of the record.
        index: usize,
        /// What contradicts what.
        reason: String,
    },
    /// The store accepted a record that the in-memory state cannot apply. A bug; the queue
    /// reports it instead of guessing.
    #[error("approval request `{id}`: inconsistent state: {reason}")]
    Inconsistent {
        /// The request.
        id: ApprovalId,
        /// What contradicts what.
        reason: String,
    },
    /// No randomness was available for a new approval id (or, when the queue opens, for its
    /// argument key).
    #[error("no randomness available: {0}")]
    Random(String),
    /// An earlier operation panicked (an observer or store that panicked) while it was changing
    /// the queue's state, which may therefore be torn: the queue refuses everything from then on
    /// (fail closed). Reopen it from its store.
    #[error("approval queue refuses operations after a panic inside an earlier one; reopen it")]
    Poisoned,
}
