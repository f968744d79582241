//! The queue's in-memory state and the one definition of how a record changes it, used live and
//! on replay; the monotonic deadlines; the re-check of open requests after a replay.

use std::collections::{BTreeSet, HashMap};
use std::task::Waker;
use std::time::Duration;

use crate::call::Principal;
use crate::clock::MonoTime;

use super::policy::OnTimeout;
use super::request::{
    ApprovalId, ApprovalRequest, ApproverGroups, Decision, RequestState, Resolution, Vote,
};
use super::store::StoreRecord;

pub(super) const NANOS_PER_MS: u64 = 1_000_000;

/// One reading of both clocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    pub(super) mono: MonoTime,
    /// Wall clock, unix nanoseconds.
    pub(super) wall_ns: u64,
}

impl Now {
    /// Wall clock, unix milliseconds (rounded down).
    pub(super) fn wall_ms(&self) -> u64 {
        self.wall_ns / NANOS_PER_MS
    }

    /// The monotonic instant at which the wall clock reads `wall_ms`, assuming it runs in step
    /// with the monotonic clock from now on; never more than `cap` away, never in the past.
    ///
    /// This is how a wall-clock time (all that survives a restart) becomes a deadline once:
    /// afterwards only the monotonic clock decides, so a wall-clock step while the process runs
    /// moves no deadline.
    pub(super) fn mono_at(&self, wall_ms: u64, cap: Duration) -> MonoTime {
        let left = wall_ms
            .saturating_mul(NANOS_PER_MS)
            .saturating_sub(self.wall_ns);
        let cap = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        MonoTime::from_nanos(self.mono.as_nanos().saturating_add(left.min(cap)))
    }

    /// The monotonic instant at which the wall clock read `wall_ms` (never after now).
    pub(super) fn mono_since(&self, wall_ms: u64) -> MonoTime {
        let ago = self
            .wall_ns
            .saturating_sub(wall_ms.saturating_mul(NANOS_PER_MS));
        MonoTime::from_nanos(self.mono.as_nanos().saturating_sub(ago))
    }
}

/// How a record is being applied.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// As it happens: monotonic instants are exact.
    Live(Now),
    /// From the store, when the queue opens at `Now`: monotonic instants come from the recorded
    /// wall-clock times, once.
    Replay(Now),
}

impl Mode {
    fn now(&self) -> &Now {
        match self {
            Mode::Live(n) | Mode::Replay(n) => n,
        }
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) request: ApprovalRequest,
    pub(super) state: RequestState,
    pub(super) votes: Vec<Vote>,
    /// Distinct approvers who approved, in order.
    pub(super) approvers: Vec<Principal>,
    /// When the request was created, on the monotonic clock.
    pub(super) created: MonoTime,
    /// When an undecided request times out, on the monotonic clock.
    pub(super) deadline: MonoTime,
    /// When each chain level is reached, on the monotonic clock.
    pub(super) levels: Vec<MonoTime>,
    /// While approved and unused: when the grant expires, on the monotonic clock.
    pub(super) grant_expiry: Option<MonoTime>,
}

impl Entry {
    pub(super) fn resolution(&self) -> Option<Resolution> {
        match &self.state {
            RequestState::Pending => None,
            RequestState::Approved { by_timeout, .. } => Some(Resolution::Approved {
                by: self.approvers.clone(),
                by_timeout: *by_timeout,
            }),
            RequestState::Consumed { .. } => Some(Resolution::Approved {
                by: self.approvers.clone(),
                by_timeout: self.approvers.len() < self.request.quorum as usize,
            }),
            RequestState::Denied { by, .. } => Some(Resolution::Denied {
                by: by.clone(),
                reason: self
                    .votes
                    .iter()
                    .rev()
                    .find(|v| v.decision == Decision::Deny)
                    .map(|v| v.reason.clone()),
            }),
            RequestState::Voided { .. } => Some(Resolution::Denied {
                by: None,
                reason: Some(VOIDED.into()),
            }),
        }
    }

    pub(super) fn approvals(&self) -> u32 {
        u32::try_from(self.approvers.len()).unwrap_or(u32::MAX)
    }
}

/// The reason a voided request reports.
pub(super) const VOIDED: &str =
    "voided: the approval store was repaired while the request was open; submit it again";

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) entries: HashMap<ApprovalId, Entry>,
    pub(super) pending: BTreeSet<ApprovalId>,
    pub(super) groups: ApproverGroups,
    pub(super) waiters: HashMap<ApprovalId, Vec<(u64, Waker)>>,
    pub(super) next_token: u64,
    /// An operation panicked while changing the state (set on entry, cleared on return).
    pub(super) torn: bool,
}

/// Applies one record to the state: the single definition of every state change, used both live
/// (after validation, observer and store) and when replaying a store. `grant_ttl` is the
/// queue's grant lifetime.
pub(super) fn apply(
    inner: &mut Inner,
    rec: &StoreRecord,
    mode: Mode,
    grant_ttl: Duration,
) -> Result<(), String> {
    let now = *mode.now();
    let pending_entry = |inner: &mut Inner, id: &ApprovalId| -> Result<(), String> {
        match inner.entries.get(id) {
            None => Err(format!("request `{id}` was never submitted")),
            Some(e) if !e.state.is_pending() => {
                Err(format!("request `{id}` is already {}", e.state))
            }
            Some(_) => Ok(()),
        }
    };
    match rec {
        StoreRecord::Submitted { request } => {
            if inner.entries.contains_key(&request.id) {
                return Err(format!("request `{}` is submitted twice", request.id));
            }
            if request.chain.is_empty() || request.level >= request.chain.len() {
                return Err(format!("request `{}` has no valid chain level", request.id));
            }
            if request.deadline_ms < request.created_ms {
                return Err(format!(
                    "request `{}` has its deadline before its creation",
                    request.id
                ));
            }
            let timeout = Duration::from_millis(request.deadline_ms - request.created_ms);
            let created = match mode {
                Mode::Live(n) => n.mono,
                Mode::Replay(n) => n.mono_since(request.created_ms),
            };
            inner.pending.insert(request.id.clone());
            inner.entries.insert(
                request.id.clone(),
                Entry {
                    request: request.clone(),
                    state: RequestState::Pending,
                    votes: Vec::new(),
                    approvers: Vec::new(),
                    created,
                    deadline: now.mono_at(request.deadline_ms, timeout),
                    levels: request
                        .chain
                        .iter()
                        .map(|l| now.mono_at(l.at_ms, timeout))
                        .collect(),
                    grant_expiry: None,
                },
            );
        }
        StoreRecord::Escalated { id, level, .. } => {
            pending_entry(inner, id)?;
            let e = inner.entries.get_mut(id).ok_or("missing entry")?;
            if *level <= e.request.level || *level >= e.request.chain.len() {
                return Err(format!("request `{id}` cannot move to level {level}"));
            }
            e.request.level = *level;
        }
        StoreRecord::Decided {
            id,
            approver,
            decision,
            reason,
            at_ms,
        } => {
            pending_entry(inner, id)?;
            let e = inner.entries.get_mut(id).ok_or("missing entry")?;
            if *decision == Decision::Approve {
                if e.approvers.contains(&approver.id) {
                    return Err(format!(
                        "`{}` approves request `{id}` a second time",
                        approver.id
                    ));
                }
                e.approvers.push(approver.id.clone());
            }
            e.votes.push(Vote {
                approver: approver.clone(),
                decision: *decision,
                reason: reason.clone(),
                at_ms: *at_ms,
                level: e.request.level,
                edited: false,
            });
            let resolved = match decision {
                Decision::Deny => Some(RequestState::Denied {
                    at_ms: *at_ms,
                    by: Some(approver.id.clone()),
                }),
                Decision::Approve if e.approvals() >= e.request.quorum => {
                    e.grant_expiry = Some(match mode {
                        Mode::Live(n) => n.mono.saturating_add(grant_ttl),
                        Mode::Replay(n) => {
                            n.mono_at(at_ms.saturating_add(ms(grant_ttl)), grant_ttl)
                        }
                    });
                    Some(RequestState::Approved {
                        at_ms: *at_ms,
                        by_timeout: false,
                    })
                }
                Decision::Approve => None,
            };
            if let Some(s) = resolved {
                e.state = s;
                inner.pending.remove(id);
            }
        }
        StoreRecord::Edited {
            id,
            approver,
            args,
            args_hash,
            reason,
            at_ms,
        } => {
            pending_entry(inner, id)?;
            let e = inner.entries.get_mut(id).ok_or("missing entry")?;
            // The edited call is a new proposal: only approvals of it count.
            e.request.args = args.clone();
            e.request.args_hash = *args_hash;
            e.approvers = vec![approver.id.clone()];
            e.votes.push(Vote {
                approver: approver.clone(),
                decision: Decision::Approve,
                reason: reason.clone(),
                at_ms: *at_ms,
                level: e.request.level,
                edited: true,
            });
            if e.approvals() >= e.request.quorum {
                e.grant_expiry = Some(match mode {
                    Mode::Live(n) => n.mono.saturating_add(grant_ttl),
                    Mode::Replay(n) => n.mono_at(at_ms.saturating_add(ms(grant_ttl)), grant_ttl),
                });
                e.state = RequestState::Approved {
                    at_ms: *at_ms,
                    by_timeout: false,
                };
                inner.pending.remove(id);
            }
        }
        StoreRecord::TimedOut {
            id,
            approved,
            at_ms,
        } => {
            pending_entry(inner, id)?;
            let e = inner.entries.get_mut(id).ok_or("missing entry")?;
            if *approved && e.request.on_timeout != OnTimeout::Approve {
                return Err(format!(
                    "request `{id}` is approved by its timeout, but its timeout denies"
                ));
            }
            e.state = if *approved {
                e.grant_expiry = Some(match mode {
                    Mode::Live(_) => e.deadline.saturating_add(grant_ttl),
                    Mode::Replay(n) => n.mono_at(at_ms.saturating_add(ms(grant_ttl)), grant_ttl),
                });
                RequestState::Approved {
                    at_ms: *at_ms,
                    by_timeout: true,
                }
            } else {
                RequestState::Denied {
                    at_ms: *at_ms,
                    by: None,
                }
            };
            inner.pending.remove(id);
        }
        StoreRecord::Consumed { id, at_ms } => {
            let e = inner
                .entries
                .get_mut(id)
                .ok_or_else(|| format!("request `{id}` was never submitted"))?;
            if !matches!(e.state, RequestState::Approved { .. }) {
                return Err(format!("request `{id}` is consumed while {}", e.state));
            }
            e.state = RequestState::Consumed { at_ms: *at_ms };
            e.grant_expiry = None;
        }
        StoreRecord::Repaired { at_ms, .. } => {
            // Fail closed: a removed record may have closed any open request.
            for e in inner.entries.values_mut() {
                if matches!(
                    e.state,
                    RequestState::Pending | RequestState::Approved { .. }
                ) {
                    e.state = RequestState::Voided { at_ms: *at_ms };
                    e.grant_expiry = None;
                }
            }
            inner.pending.clear();
        }
    }
    Ok(())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A decision that replay did not count: see [`ApprovalQueue::open`](super::ApprovalQueue::open).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayRefusal {
    /// The request.
    pub id: ApprovalId,
    /// Who the record says approved.
    pub approver: Principal,
    /// Why the approval does not count.
    pub reason: String,
}

/// After a replay: re-checks every approval of every request still open (pending, or approved
/// and unused) against the queue's current configuration, as [`decide`](super::ApprovalQueue::decide)
/// would check it now: group membership for the level it was cast at, separation of duties,
/// distinctness; then recomputes the quorum. An approval that fails is not counted; a request
/// approved only thanks to it is pending again. Closed requests are history and stay as they
/// are (none of them can be approved or consumed any more).
pub(super) fn recheck_open(inner: &mut Inner, separation_of_duties: bool) -> Vec<ReplayRefusal> {
    let mut refused = Vec::new();
    let groups = &inner.groups;
    let mut reopened = Vec::new();
    for (id, e) in inner.entries.iter_mut() {
        let by_votes = match e.state {
            RequestState::Pending => true,
            RequestState::Approved { by_timeout, .. } => !by_timeout,
            _ => continue,
        };
        let req = &e.request;
        let mut counted: Vec<Principal> = Vec::new();
        // Approvals cast before the last edit approved other arguments: they never count. An
        // edit whose approver no longer qualifies leaves the edited arguments with no approval
        // (a qualified approver must approve them, seeing them).
        let since = e.votes.iter().rposition(|v| v.edited).unwrap_or(0);
        for v in e.votes[since..]
            .iter()
            .filter(|v| v.decision == Decision::Approve)
        {
            let who = &v.approver.id;
            let levels = &req.chain[..=v.level.min(req.chain.len() - 1)];
            let why = if separation_of_duties
                && (req.trigger.as_ref() == Some(who) || req.agent.as_str() == who.as_str())
            {
                Some("separation of duties: the approver triggered the run or is its agent".into())
            } else if !levels
                .iter()
                .any(|l| groups.is_member(&l.group, who.as_str()))
            {
                let names: Vec<&str> = levels.iter().map(|l| l.group.as_str()).collect();
                Some(format!(
                    "not a member of the groups eligible at level {} ({}) under the current configuration",
                    v.level,
                    names.join(", ")
                ))
            } else if counted.contains(who) {
                Some("a repeated approval".into())
            } else {
                None
            };
            match why {
                Some(reason) => refused.push(ReplayRefusal {
                    id: id.clone(),
                    approver: who.clone(),
                    reason,
                }),
                None => counted.push(who.clone()),
            }
        }
        if counted.len() != e.approvers.len() {
            e.approvers = counted;
            if by_votes && e.approvals() < e.request.quorum && !e.state.is_pending() {
                e.state = RequestState::Pending;
                e.grant_expiry = None;
                reopened.push(id.clone());
            }
        }
    }
    inner.pending.extend(reopened);
    refused
}
