//! Durable approval records: the [`ApprovalStore`] trait, an in-memory store and an append-only,
//! hash-chained and keyed JSON Lines file store.
//!
//! The queue is event-sourced: every transition is one [`StoreRecord`], appended (and, for the
//! file store, synced) before the queue applies it in memory or reports success. Reopening a
//! queue replays the records, so pending requests stay pending, decisions stay decided and a
//! consumed grant stays consumed.
//!
//! Every store refuses a record it could not read back: arguments nested deeper than
//! [`MAX_DEPTH`] levels are refused before anything is
//! written ([`StoreError::Unrepresentable`]), so no acknowledged record is ever unreadable.

mod file;
mod frame;
mod key;
mod repair;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::binding::{ArgsHash, ArgsKey};
use super::error::StoreError;
use super::request::{ApprovalId, ApprovalRequest, Approver, Decision};
use crate::call::canonical::MAX_DEPTH;

pub use file::{FileApprovalStore, TornTail};
pub use key::{StoreKey, StoreKeyError};
pub use repair::{Removal, RepairReport};

/// One transition of one request, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum StoreRecord {
    /// A request was opened.
    Submitted {
        /// The request as created.
        request: ApprovalRequest,
    },
    /// An undecided request moved to a later chain level.
    Escalated {
        /// The request.
        id: ApprovalId,
        /// The level reached.
        level: usize,
        /// When (unix ms).
        at_ms: u64,
    },
    /// An approver decided.
    Decided {
        /// The request.
        id: ApprovalId,
        /// Who.
        approver: Approver,
        /// What.
        decision: Decision,
        /// Why.
        reason: String,
        /// When (unix ms).
        at_ms: u64,
    },
    /// An approver replaced the arguments and approved the edited call
    /// ([`ApprovalQueue::edit`](super::ApprovalQueue::edit)).
    Edited {
        /// The request.
        id: ApprovalId,
        /// Who.
        approver: Approver,
        /// The arguments as edited: what the grant now authorises.
        args: Value,
        /// Their keyed hash under the queue's key.
        args_hash: ArgsHash,
        /// Why.
        reason: String,
        /// When (unix ms).
        at_ms: u64,
    },
    /// The deadline passed with no decision.
    TimedOut {
        /// The request.
        id: ApprovalId,
        /// Whether the timeout approved (else it denied).
        approved: bool,
        /// When (unix ms).
        at_ms: u64,
    },
    /// The grant was consumed.
    Consumed {
        /// The request.
        id: ApprovalId,
        /// When (unix ms).
        at_ms: u64,
    },
    /// The store was repaired ([`FileApprovalStore::repair`]): damaged or missing records were
    /// removed, as described. Replaying it voids every request still open at that point
    /// ([`RequestState::Voided`](super::RequestState::Voided)): a removed record may have been
    /// the decision or consumption that closed it.
    Repaired {
        /// When the repair was made (unix ms).
        at_ms: u64,
        /// Why, as the operator gave it.
        reason: String,
        /// What was removed.
        removed: Removal,
    },
}

impl StoreRecord {
    /// The request the record is about (`None` for a store's own [`Repaired`](Self::Repaired)
    /// declaration).
    pub fn id(&self) -> Option<&ApprovalId> {
        match self {
            StoreRecord::Submitted { request } => Some(&request.id),
            StoreRecord::Escalated { id, .. }
            | StoreRecord::Decided { id, .. }
            | StoreRecord::Edited { id, .. }
            | StoreRecord::TimedOut { id, .. }
            | StoreRecord::Consumed { id, .. } => Some(id),
            StoreRecord::Repaired { .. } => None,
        }
    }

    /// The record's kind as stored (`"submitted"`, `"decided"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreRecord::Submitted { .. } => "submitted",
            StoreRecord::Escalated { .. } => "escalated",
            StoreRecord::Decided { .. } => "decided",
            StoreRecord::Edited { .. } => "edited",
            StoreRecord::TimedOut { .. } => "timed_out",
            StoreRecord::Consumed { .. } => "consumed",
            StoreRecord::Repaired { .. } => "repaired",
        }
    }
}

/// Refuses a record that no reader could read back: arguments nested deeper than
/// [`MAX_DEPTH`] (the record's own envelope adds three levels, well inside `serde_json`'s
/// recursion limit of 128).
pub(crate) fn check_record(rec: &StoreRecord) -> Result<(), StoreError> {
    let (id, args) = match rec {
        StoreRecord::Submitted { request } => (&request.id, &request.args),
        StoreRecord::Edited { id, args, .. } => (id, args),
        _ => return Ok(()),
    };
    if depth_exceeds(args, MAX_DEPTH) {
        return Err(StoreError::Unrepresentable {
            id: Some(id.clone()),
            reason: format!("its arguments are nested deeper than {MAX_DEPTH} levels"),
        });
    }
    Ok(())
}

/// Whether `v` nests deeper than `limit` (`{}` is depth 1); stops descending at the limit.
pub(crate) fn depth_exceeds(v: &Value, limit: usize) -> bool {
    match v {
        Value::Array(a) => limit == 0 || a.iter().any(|c| depth_exceeds(c, limit - 1)),
        Value::Object(m) => limit == 0 || m.values().any(|c| depth_exceeds(c, limit - 1)),
        _ => false,
    }
}

/// Where the queue keeps its records. `append` must make the record durable (as durable as the
/// store promises) before it returns `Ok`; the queue applies a transition only after that.
/// `append` must refuse (not truncate, not drop) a record that `load` could not return, e.g.
/// with the same depth limit ([`MAX_DEPTH`]) the shipped stores apply.
pub trait ApprovalStore: Send + Sync {
    /// Appends one record.
    fn append(&self, rec: &StoreRecord) -> Result<(), StoreError>;
    /// Every record, in append order.
    fn load(&self) -> Result<Vec<StoreRecord>, StoreError>;

    /// The keys the queue binds approved arguments with ([`ArgsHash`]), asked
    /// once when a queue opens over the store: the first makes the hash of every new request;
    /// the others (of retired store keys) are accepted for requests recorded under them.
    ///
    /// Every queue opened over the store must get the same keys, or the requests it replays can
    /// never be consumed (their hashes were made under a key it does not have: refused, fail
    /// closed). A store whose records outlive the process returns keys derived from a secret
    /// that outlives it too ([`ArgsKey::from_store_key`]); [`MemoryApprovalStore`] generates one
    /// the first time it is asked and keeps it. The default, no key, is right only for a store
    /// that no second queue ever opens: the queue then generates a random key of its own.
    fn args_keys(&self) -> Result<Vec<ArgsKey>, StoreError> {
        Ok(Vec::new())
    }

    /// For a store shared by several queues (several hosts): the records *others* appended
    /// since this store last loaded, appended or fetched, in the store's order.
    /// [`ApprovalQueue::sync`](super::ApprovalQueue::sync) applies them. The default, nothing,
    /// is right for a store only one queue writes.
    fn fetch_new(&self) -> Result<Vec<StoreRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// Records in memory (tests, or processes that accept losing pending approvals on restart). No
/// integrity protection: whoever holds a reference can append anything; the queue re-checks
/// decisions of open requests when it replays. Its [`args_keys`](ApprovalStore::args_keys) is
/// one random key, generated when a queue first asks, and kept for every queue opened over the
/// store later.
#[derive(Debug, Default)]
pub struct MemoryApprovalStore {
    records: Mutex<Vec<StoreRecord>>,
    args_key: Mutex<Option<ArgsKey>>,
}

impl MemoryApprovalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<StoreRecord> {
        self.records.lock().clone()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.lock().len()
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ApprovalStore for MemoryApprovalStore {
    fn append(&self, rec: &StoreRecord) -> Result<(), StoreError> {
        check_record(rec)?;
        self.records.lock().push(rec.clone());
        Ok(())
    }

    fn load(&self) -> Result<Vec<StoreRecord>, StoreError> {
        Ok(self.records.lock().clone())
    }

    fn args_keys(&self) -> Result<Vec<ArgsKey>, StoreError> {
        let mut key = self.args_key.lock();
        if key.is_none() {
            *key = Some(ArgsKey::generate().map_err(|e| StoreError::Random(e.to_string()))?);
        }
        Ok(key.iter().cloned().collect())
    }
}
