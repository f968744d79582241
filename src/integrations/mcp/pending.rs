//! Escalated calls a connection answered with "pending approval": kept by tool and argument
//! hash, so that retrying the same call (same tool, same arguments) resumes it once approved,
//! exactly once (the guard's grant is single-use), and anything else is a new call.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

use crate::escalation::{ApprovalRequest, ArgsHash};

/// Most calls one connection may leave pending at once: beyond it the oldest is forgotten (its
/// request stays in the approval queue; a retry then raises a new one). Bounds memory against a
/// client that escalates in a loop.
const MAX_PENDING: usize = 1024;

/// A pending call: its tool and the hash of its arguments.
type Key = (String, ArgsHash);

#[derive(Default)]
struct Calls {
    by_key: HashMap<Key, ApprovalRequest>,
    /// Insertion order, oldest first, for the bound.
    order: VecDeque<Key>,
}

#[derive(Default)]
pub(crate) struct Pending {
    calls: Mutex<Calls>,
}

impl Pending {
    /// Remembers `request` for the call `(tool, hash)`.
    pub(crate) fn insert(&self, tool: &str, hash: ArgsHash, request: ApprovalRequest) {
        let mut c = self.calls.lock();
        let key = (tool.to_owned(), hash);
        if c.by_key.insert(key.clone(), request).is_none() {
            c.order.push_back(key);
        }
        if c.order.len() > MAX_PENDING
            && let Some(oldest) = c.order.pop_front()
        {
            c.by_key.remove(&oldest);
        }
    }

    /// The pending request of the call `(tool, hash)`, taken out (a resume consumes it).
    pub(crate) fn take(&self, tool: &str, hash: &ArgsHash) -> Option<ApprovalRequest> {
        let mut c = self.calls.lock();
        let key = (tool.to_owned(), *hash);
        let found = c.by_key.remove(&key)?;
        c.order.retain(|k| k != &key);
        Some(found)
    }
}
