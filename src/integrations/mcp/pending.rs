//! Escalated calls a connection answered with "pending approval": kept by tool and argument
//! hash, so that retrying the same call (same tool, same arguments) resumes it once approved,
//! exactly once (the guard's grant is single-use), and anything else is a new call.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::escalation::{ApprovalRequest, ArgsHash};

/// Most calls one connection may leave pending at once: beyond it the oldest is forgotten (its
/// request stays in the approval queue; a retry then raises a new one). Bounds memory against a
/// client that escalates in a loop.
const MAX_PENDING: usize = 1024;

#[derive(Default)]
pub(crate) struct Pending {
    calls: Mutex<(
        HashMap<(String, ArgsHash), ApprovalRequest>,
        Vec<(String, ArgsHash)>,
    )>,
}

impl Pending {
    /// Remembers `request` for the call `(tool, hash)`.
    pub(crate) fn insert(&self, tool: &str, hash: ArgsHash, request: ApprovalRequest) {
        let mut g = self.calls.lock();
        let (map, order) = &mut *g;
        let key = (tool.to_owned(), hash);
        if map.insert(key.clone(), request).is_none() {
            order.push(key);
        }
        if order.len() > MAX_PENDING {
            let oldest = order.remove(0);
            map.remove(&oldest);
        }
    }

    /// The pending request of the call `(tool, hash)`, taken out (a resume consumes it).
    pub(crate) fn take(&self, tool: &str, hash: &ArgsHash) -> Option<ApprovalRequest> {
        let mut g = self.calls.lock();
        let (map, order) = &mut *g;
        let key = (tool.to_owned(), *hash);
        let found = map.remove(&key)?;
        order.retain(|k| k != &key);
        Some(found)
    }
}
