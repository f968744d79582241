//! The approval queue: requests, decisions, timeouts, chain moves, grants, waiting.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::call::{Args, Principal, RunId};
use crate::clock::Clock;

use super::error::QueueError;
use super::notify::{
    ApprovalNotifier, NoopObserver, Notification, NotificationKind, QueueObserver, Transition,
    TransitionKind,
};
use super::policy::OnTimeout;
use super::request::{
    ApprovalId, ApprovalRequest, Approver, ApproverGroups, ArgsHash, ChainLevel, Decision, Grant,
    RequestState, RequestStatus, Resolution, Submission, Ticket, Vote,
};
use super::store::{ApprovalStore, StoreRecord};

const NANOS_PER_MS: u64 = 1_000_000;
/// Longest accepted timeout: 366 days.
const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 86_400);
/// Most levels in a chain.
const MAX_LEVELS: usize = 16;
/// Longest reason an approver may give, in bytes.
const MAX_REASON_BYTES: usize = 4096;

/// Queue settings. Serde-loadable (`deny_unknown_fields`); every field has a default.
///
/// ```
/// use tollgate::escalation::QueueConfig;
///
/// let cfg: QueueConfig = serde_json::from_str(
///     r#"{"groups": {"finance": ["alice", "bob"]}, "grant_ttl_secs": 600}"#)?;
/// assert!(cfg.separation_of_duties);
/// assert_eq!(cfg.max_pending, 10_000);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Who belongs to which approver group (usually [`EscalationGate::groups`](super::EscalationGate::groups)).
    pub groups: ApproverGroups,
    /// Refuse decisions by the principal who triggered the run, or by the acting agent's id
    /// (default `true`).
    pub separation_of_duties: bool,
    /// How long an approval stays consumable, in seconds from the approval (default 3600).
    pub grant_ttl_secs: u64,
    /// Most pending requests; further submissions fail with [`QueueError::Full`] (default 10 000).
    pub max_pending: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            groups: ApproverGroups::new(),
            separation_of_duties: true,
            grant_ttl_secs: 3600,
            max_pending: 10_000,
        }
    }
}

impl QueueConfig {
    /// The defaults with these approver groups.
    pub fn with_groups(groups: ApproverGroups) -> Self {
        Self {
            groups,
            ..Self::default()
        }
    }
}

/// The result of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecideOutcome {
    /// The request's state after the decision.
    pub state: RequestState,
    /// Distinct approvers who approved so far.
    pub approvals: u32,
    /// Distinct approvers needed.
    pub quorum: u32,
}

/// A time-driven transition applied by [`ApprovalQueue::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueEvent {
    /// An undecided request reached a later level of its chain.
    Escalated {
        /// The request.
        id: ApprovalId,
        /// The level reached.
        level: usize,
        /// The group asked now.
        group: String,
    },
    /// A request's deadline passed.
    TimedOut {
        /// The request.
        id: ApprovalId,
        /// How it ended.
        resolution: Resolution,
    },
}

#[derive(Debug)]
struct Entry {
    request: ApprovalRequest,
    state: RequestState,
    votes: Vec<Vote>,
    /// Distinct approvers who approved, in order.
    approvers: Vec<Principal>,
}

impl Entry {
    fn resolution(&self) -> Option<Resolution> {
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
        }
    }

    fn approvals(&self) -> u32 {
        u32::try_from(self.approvers.len()).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<ApprovalId, Entry>,
    pending: BTreeSet<ApprovalId>,
    groups: ApproverGroups,
    waiters: HashMap<ApprovalId, Vec<(u64, Waker)>>,
    next_token: u64,
}

/// What to do once the lock is released.
#[derive(Default)]
struct Effects {
    notes: Vec<Notification>,
    wake: Vec<Waker>,
    events: Vec<QueueEvent>,
}

/// Applies one record to the state: the single definition of every state change, used both live
/// (after validation, observer and store) and when replaying a store.
fn apply(inner: &mut Inner, rec: &StoreRecord) -> Result<(), String> {
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
            inner.pending.insert(request.id.clone());
            inner.entries.insert(
                request.id.clone(),
                Entry {
                    request: request.clone(),
                    state: RequestState::Pending,
                    votes: Vec::new(),
                    approvers: Vec::new(),
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
            });
            let resolved = match decision {
                Decision::Deny => Some(RequestState::Denied {
                    at_ms: *at_ms,
                    by: Some(approver.id.clone()),
                }),
                Decision::Approve if e.approvals() >= e.request.quorum => {
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
        StoreRecord::TimedOut {
            id,
            approved,
            at_ms,
        } => {
            pending_entry(inner, id)?;
            let e = inner.entries.get_mut(id).ok_or("missing entry")?;
            e.state = if *approved {
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
        }
    }
    Ok(())
}

/// The approval queue: opens requests, records identity-bound decisions, applies timeouts and
/// chain moves, hands out single-use grants, and wakes waiters. See the [module docs](super).
///
/// `Send + Sync`; share it behind an `Arc`. Every operation takes one internal lock, runs the
/// observer and appends to the store under it (so the store's order is the order of events),
/// and notifies and wakes after releasing it.
pub struct ApprovalQueue {
    inner: Mutex<Inner>,
    store: Arc<dyn ApprovalStore>,
    clock: Arc<dyn Clock>,
    separation_of_duties: bool,
    grant_ttl_ms: u64,
    max_pending: usize,
    observer: Arc<dyn QueueObserver>,
    notifiers: Vec<Arc<dyn ApprovalNotifier>>,
}

impl std::fmt::Debug for ApprovalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalQueue")
            .field("clock", &self.clock)
            .field("separation_of_duties", &self.separation_of_duties)
            .field("grant_ttl_ms", &self.grant_ttl_ms)
            .field("max_pending", &self.max_pending)
            .field("notifiers", &self.notifiers.len())
            .finish_non_exhaustive()
    }
}

fn ceil_ms(ns: u64) -> u64 {
    ns.div_ceil(NANOS_PER_MS)
}

fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn invalid(field: &str, reason: impl Into<String>) -> QueueError {
    QueueError::InvalidSubmission {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl ApprovalQueue {
    /// Opens a queue over `store`, replaying its records: every pending and decided request is
    /// restored, and a consumed grant stays consumed. Records that contradict each other make
    /// this fail ([`QueueError::Replay`]) rather than guess.
    pub fn open(
        store: Arc<dyn ApprovalStore>,
        clock: Arc<dyn Clock>,
        config: QueueConfig,
    ) -> Result<Self, QueueError> {
        if config.max_pending == 0 {
            return Err(invalid("max_pending", "must be at least 1"));
        }
        if config.grant_ttl_secs == 0 {
            return Err(invalid("grant_ttl_secs", "must be at least 1"));
        }
        let mut inner = Inner {
            groups: config.groups,
            ..Inner::default()
        };
        for (index, rec) in store.load()?.iter().enumerate() {
            apply(&mut inner, rec).map_err(|reason| QueueError::Replay { index, reason })?;
        }
        Ok(Self {
            inner: Mutex::new(inner),
            store,
            clock,
            separation_of_duties: config.separation_of_duties,
            grant_ttl_ms: config.grant_ttl_secs.saturating_mul(1000),
            max_pending: config.max_pending,
            observer: Arc::new(NoopObserver),
            notifiers: Vec::new(),
        })
    }

    /// Sets the observer that sees (and may veto) every transition, e.g. the guard's audit.
    pub fn with_observer(mut self, observer: Arc<dyn QueueObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Adds a notifier.
    pub fn with_notifier(mut self, notifier: Arc<dyn ApprovalNotifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    /// Replaces the approver groups. Takes effect for every later decision, pending requests
    /// included (removing someone revokes their say at once). A request whose groups no longer
    /// exist cannot be decided and runs into its timeout.
    pub fn set_groups(&self, groups: ApproverGroups) -> Result<(), QueueError> {
        self.lock()?.groups = groups;
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, QueueError> {
        self.inner.lock().map_err(|_| QueueError::Poisoned)
    }

    fn now_ns(&self) -> u64 {
        self.clock
            .wall()
            .duration_since(UNIX_EPOCH)
            .map(dur_ns)
            .unwrap_or(0)
    }

    fn dispatch(&self, fx: Effects) {
        for w in fx.wake {
            w.wake();
        }
        for n in &fx.notes {
            for notifier in &self.notifiers {
                notifier.notify(n);
            }
        }
    }

    /// Runs `f` under the lock, then dispatches its effects (also when it failed part-way).
    fn with_inner<T>(
        &self,
        f: impl FnOnce(&mut Inner, &mut Effects) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let mut fx = Effects::default();
        let result = match self.lock() {
            Ok(mut inner) => f(&mut inner, &mut fx),
            Err(e) => Err(e),
        };
        self.dispatch(fx);
        result
    }

    /// Shows a validated transition to the observer; an error aborts it (fail closed).
    fn observe(&self, t: &Transition<'_>) -> Result<(), QueueError> {
        self.observer.on_transition(t).map_err(QueueError::Observer)
    }

    /// After [`observe`](Self::observe): store, then state, then wake waiters of a resolved
    /// request. That order keeps audit, disk and memory agreeing.
    fn persist(
        &self,
        inner: &mut Inner,
        fx: &mut Effects,
        rec: StoreRecord,
    ) -> Result<(), QueueError> {
        self.store.append(&rec)?;
        apply(inner, &rec).map_err(|reason| QueueError::Inconsistent {
            id: rec.id().clone(),
            reason,
        })?;
        if let Some(e) = inner.entries.get(rec.id())
            && !e.state.is_pending()
            && let Some(ws) = inner.waiters.remove(rec.id())
        {
            fx.wake.extend(ws.into_iter().map(|(_, w)| w));
        }
        Ok(())
    }

    fn note(inner: &Inner, fx: &mut Effects, id: &ApprovalId, at_ms: u64, kind: NotificationKind) {
        if let Some(e) = inner.entries.get(id) {
            fx.notes.push(Notification {
                at_ms,
                request: e.request.clone(),
                kind,
            });
        }
    }

    /// Applies a due timeout and due chain moves of one pending request.
    fn settle(
        &self,
        inner: &mut Inner,
        fx: &mut Effects,
        id: &ApprovalId,
        now_ns: u64,
    ) -> Result<(), QueueError> {
        loop {
            let Some(e) = inner.entries.get(id) else {
                return Ok(());
            };
            if !e.state.is_pending() {
                return Ok(());
            }
            let req = &e.request;
            if now_ns >= req.deadline_ms.saturating_mul(NANOS_PER_MS) {
                let approved = req.on_timeout == OnTimeout::Approve;
                let resolution = if approved {
                    Resolution::Approved {
                        by: e.approvers.clone(),
                        by_timeout: true,
                    }
                } else {
                    Resolution::Denied {
                        by: None,
                        reason: None,
                    }
                };
                let at_ms = req.deadline_ms;
                let t = Transition {
                    at_ms,
                    request: req,
                    kind: TransitionKind::TimedOut {
                        resolution: resolution.clone(),
                        wait: Duration::from_millis(at_ms.saturating_sub(req.created_ms)),
                    },
                };
                let rec = StoreRecord::TimedOut {
                    id: id.clone(),
                    approved,
                    at_ms,
                };
                self.observe(&t)?;
                self.persist(inner, fx, rec)?;
                Self::note(
                    inner,
                    fx,
                    id,
                    at_ms,
                    NotificationKind::Resolved(resolution.clone()),
                );
                fx.events.push(QueueEvent::TimedOut {
                    id: id.clone(),
                    resolution,
                });
                return Ok(());
            }
            let next = req.level + 1;
            let Some(level) = req.chain.get(next) else {
                return Ok(());
            };
            if now_ns < level.at_ms.saturating_mul(NANOS_PER_MS) {
                return Ok(());
            }
            let (at_ms, group) = (level.at_ms, level.group.clone());
            let t = Transition {
                at_ms,
                request: req,
                kind: TransitionKind::Escalated {
                    from: req.level,
                    to: next,
                    group: &group,
                },
            };
            let rec = StoreRecord::Escalated {
                id: id.clone(),
                level: next,
                at_ms,
            };
            self.observe(&t)?;
            self.persist(inner, fx, rec)?;
            Self::note(
                inner,
                fx,
                id,
                at_ms,
                NotificationKind::Escalated {
                    level: next,
                    group: group.clone(),
                },
            );
            fx.events.push(QueueEvent::Escalated {
                id: id.clone(),
                level: next,
                group,
            });
        }
    }

    /// Opens a request for `sub`: validates it, shows it to the observer, persists it, then
    /// notifies the first level's group. The returned request carries its id, deadline and
    /// [`ticket`](ApprovalRequest::ticket).
    ///
    /// Refused (nothing stored) when the chain is empty or names a group the queue does not
    /// know, when the quorum exceeds the distinct members of the chain's groups, when the
    /// queue is full, or when the observer or store refuse.
    pub fn submit(&self, sub: Submission) -> Result<ApprovalRequest, QueueError> {
        let now_ns = self.now_ns();
        self.with_inner(|inner, fx| {
            let p = &sub.escalation.params;
            if sub.tool.is_empty() {
                return Err(invalid("tool", "must not be empty"));
            }
            if sub.escalation.reasons.is_empty() {
                return Err(invalid("reasons", "a request needs at least one reason"));
            }
            if p.timeout.is_zero() || p.timeout > MAX_TIMEOUT {
                return Err(invalid("timeout", "must be above 0 and at most 366 days"));
            }
            if p.chain.is_empty() || p.chain.len() > MAX_LEVELS {
                return Err(invalid("chain", format!("needs 1 to {MAX_LEVELS} levels")));
            }
            let mut members: BTreeSet<&Principal> = BTreeSet::new();
            for (j, level) in p.chain.iter().enumerate() {
                let Some(m) = inner.groups.members(&level.group) else {
                    return Err(invalid(
                        &format!("chain[{j}].group"),
                        format!("the queue knows no approver group `{}`", level.group),
                    ));
                };
                members.extend(m.iter());
                let ok = if j == 0 {
                    level.after.is_zero()
                } else {
                    level.after > p.chain[j - 1].after
                };
                if !ok {
                    return Err(invalid(
                        &format!("chain[{j}].after"),
                        "the first level starts at 0 and later ones strictly later",
                    ));
                }
            }
            if p.quorum == 0 || p.quorum as usize > members.len() {
                return Err(invalid(
                    "quorum",
                    format!(
                        "{} is unreachable: the chain has {} distinct approvers",
                        p.quorum,
                        members.len()
                    ),
                ));
            }
            if inner.pending.len() >= self.max_pending {
                return Err(QueueError::Full {
                    limit: self.max_pending,
                });
            }
            let mut id = ApprovalId::generate().map_err(|e| QueueError::Random(e.to_string()))?;
            while inner.entries.contains_key(&id) {
                id = ApprovalId::generate().map_err(|e| QueueError::Random(e.to_string()))?;
            }
            let created_ms = now_ns / NANOS_PER_MS;
            let chain = p
                .chain
                .iter()
                .enumerate()
                .map(|(j, l)| ChainLevel {
                    group: l.group.clone(),
                    after_ms: u64::try_from(l.after.as_millis()).unwrap_or(u64::MAX),
                    at_ms: if j == 0 {
                        created_ms
                    } else {
                        ceil_ms(now_ns.saturating_add(dur_ns(l.after)))
                    },
                })
                .collect();
            let request = ApprovalRequest {
                id: id.clone(),
                run: sub.run.clone(),
                agent: sub.agent.clone(),
                trigger: sub.trigger.clone(),
                tool: sub.tool.clone(),
                args_hash: sub
                    .args_hash
                    .unwrap_or_else(|| ArgsHash::of_value(&sub.args)),
                args: sub.args.clone(),
                reasons: sub.escalation.reasons.clone(),
                created_ms,
                deadline_ms: ceil_ms(now_ns.saturating_add(dur_ns(p.timeout))),
                policy_version: sub.policy_version,
                on_timeout: p.on_timeout,
                quorum: p.quorum,
                chain,
                level: 0,
            };
            let group = p.chain[0].group.clone();
            let t = Transition {
                at_ms: created_ms,
                request: &request,
                kind: TransitionKind::Requested { group: &group },
            };
            self.observe(&t)?;
            self.persist(
                inner,
                fx,
                StoreRecord::Submitted {
                    request: request.clone(),
                },
            )?;
            Self::note(
                inner,
                fx,
                &id,
                created_ms,
                NotificationKind::Requested { group },
            );
            Ok(request)
        })
    }

    /// Records `approver`'s `decision` on request `id`, with the approver's `reason`.
    ///
    /// Rules, checked in this order after applying a due timeout or chain move:
    /// - only a pending request can be decided ([`QueueError::Expired`] after the deadline,
    ///   even if nobody called [`tick`](Self::tick); [`QueueError::NotPending`] once decided);
    /// - separation of duties (unless disabled): the principal who triggered the run, and an
    ///   approver whose id equals the acting agent's, are refused ([`QueueError::SelfApproval`]);
    /// - the approver must belong to the group of the current level or of an earlier level
    ///   (escalation widens who may decide; it never takes the decision away from the first
    ///   approvers) ([`QueueError::NotEligible`]);
    /// - an approval counts once per approver ([`QueueError::AlreadyApproved`]); the request is
    ///   approved when `quorum` distinct approvers approved;
    /// - any eligible approver's deny vetoes the request at once, even after approvals.
    pub fn decide(
        &self,
        id: &ApprovalId,
        approver: &Approver,
        decision: Decision,
        reason: &str,
    ) -> Result<DecideOutcome, QueueError> {
        let now_ns = self.now_ns();
        let at_ms = now_ns / NANOS_PER_MS;
        self.with_inner(|inner, fx| {
            self.settle(inner, fx, id, now_ns)?;
            let e = inner
                .entries
                .get(id)
                .ok_or_else(|| QueueError::NotFound { id: id.clone() })?;
            let req = &e.request;
            match &e.state {
                RequestState::Pending => {}
                s if s.is_timed_out() => {
                    return Err(QueueError::Expired {
                        id: id.clone(),
                        deadline_ms: req.deadline_ms,
                    });
                }
                s => {
                    return Err(QueueError::NotPending {
                        id: id.clone(),
                        state: s.clone(),
                    });
                }
            }
            if self.separation_of_duties
                && (req.trigger.as_ref() == Some(&approver.id)
                    || req.agent.as_str() == approver.id.as_str())
            {
                return Err(QueueError::SelfApproval {
                    id: id.clone(),
                    approver: approver.id.clone(),
                });
            }
            let eligible_levels = &req.chain[..=req.level.min(req.chain.len() - 1)];
            if !eligible_levels
                .iter()
                .any(|l| inner.groups.is_member(&l.group, approver.id.as_str()))
            {
                let groups: Vec<&str> = eligible_levels.iter().map(|l| l.group.as_str()).collect();
                return Err(QueueError::NotEligible {
                    id: id.clone(),
                    approver: approver.id.clone(),
                    level: req.level,
                    groups: groups.join(", "),
                });
            }
            if decision == Decision::Approve && e.approvers.contains(&approver.id) {
                return Err(QueueError::AlreadyApproved {
                    id: id.clone(),
                    approver: approver.id.clone(),
                });
            }
            if reason.len() > MAX_REASON_BYTES {
                return Err(invalid(
                    "reason",
                    format!("at most {MAX_REASON_BYTES} bytes"),
                ));
            }
            let approvals = e.approvals() + u32::from(decision == Decision::Approve);
            let resolution = match decision {
                Decision::Deny => Some(Resolution::Denied {
                    by: Some(approver.id.clone()),
                    reason: Some(reason.to_owned()),
                }),
                Decision::Approve if approvals >= req.quorum => {
                    let mut by = e.approvers.clone();
                    by.push(approver.id.clone());
                    Some(Resolution::Approved {
                        by,
                        by_timeout: false,
                    })
                }
                Decision::Approve => None,
            };
            let quorum = req.quorum;
            let t = Transition {
                at_ms,
                request: req,
                kind: TransitionKind::Decided {
                    approver,
                    decision,
                    reason,
                    wait: Duration::from_millis(at_ms.saturating_sub(req.created_ms)),
                    approvals,
                    resolution: resolution.clone(),
                },
            };
            let rec = StoreRecord::Decided {
                id: id.clone(),
                approver: approver.clone(),
                decision,
                reason: reason.to_owned(),
                at_ms,
            };
            self.observe(&t)?;
            self.persist(inner, fx, rec)?;
            let kind = match resolution {
                Some(r) => NotificationKind::Resolved(r),
                None => NotificationKind::Decided {
                    approver: approver.clone(),
                    decision,
                    approvals,
                },
            };
            Self::note(inner, fx, id, at_ms, kind);
            let state = inner
                .entries
                .get(id)
                .map(|e| e.state.clone())
                .unwrap_or(RequestState::Pending);
            Ok(DecideOutcome {
                state,
                approvals,
                quorum,
            })
        })
    }

    /// Turns approved request `id` into its single-use [`Grant`], if `args_hash` is the hash of
    /// the approved arguments. Succeeds once per request, ever: the consumption is persisted
    /// before this returns, and survives restarts.
    ///
    /// Refused: arguments that differ ([`QueueError::ArgsMismatch`], the grant stays unused), a
    /// second consumption ([`QueueError::AlreadyUsed`]), a request that is pending, denied or
    /// timed out, an approval older than the grant lifetime ([`QueueError::GrantExpired`]).
    pub fn consume(&self, id: &ApprovalId, args_hash: &ArgsHash) -> Result<Grant, QueueError> {
        self.consume_inner(id, args_hash, None)
    }

    /// [`consume`](Self::consume) for a stored [`Ticket`] and the call about to execute: also
    /// checks that `tool` and `run` are the ticket's and that `args` hash to the approved
    /// arguments.
    pub fn consume_ticket(
        &self,
        ticket: &Ticket,
        run: &RunId,
        tool: &str,
        args: Args<'_>,
    ) -> Result<Grant, QueueError> {
        let id = &ticket.approval;
        let hash = ArgsHash::of_args(args).map_err(|source| QueueError::MalformedArgs {
            id: id.clone(),
            source,
        })?;
        if hash != ticket.args_hash {
            return Err(QueueError::ArgsMismatch {
                id: id.clone(),
                expected: ticket.args_hash,
                actual: hash,
            });
        }
        if tool != ticket.tool {
            return Err(QueueError::TicketMismatch {
                id: id.clone(),
                field: "tool",
            });
        }
        if *run != ticket.run {
            return Err(QueueError::TicketMismatch {
                id: id.clone(),
                field: "run",
            });
        }
        self.consume_inner(id, &hash, Some((run, tool)))
    }

    fn consume_inner(
        &self,
        id: &ApprovalId,
        args_hash: &ArgsHash,
        call: Option<(&RunId, &str)>,
    ) -> Result<Grant, QueueError> {
        let now_ns = self.now_ns();
        let at_ms = now_ns / NANOS_PER_MS;
        self.with_inner(|inner, fx| {
            self.settle(inner, fx, id, now_ns)?;
            let e = inner
                .entries
                .get(id)
                .ok_or_else(|| QueueError::NotFound { id: id.clone() })?;
            let req = &e.request;
            let approved_ms = match &e.state {
                RequestState::Approved { at_ms, .. } => *at_ms,
                RequestState::Consumed { .. } => {
                    return Err(QueueError::AlreadyUsed { id: id.clone() });
                }
                RequestState::Denied { by: None, .. } => {
                    return Err(QueueError::Expired {
                        id: id.clone(),
                        deadline_ms: req.deadline_ms,
                    });
                }
                s => {
                    return Err(QueueError::NotApproved {
                        id: id.clone(),
                        state: s.clone(),
                    });
                }
            };
            if let Some((run, tool)) = call {
                if req.tool != tool {
                    return Err(QueueError::TicketMismatch {
                        id: id.clone(),
                        field: "tool",
                    });
                }
                if req.run != *run {
                    return Err(QueueError::TicketMismatch {
                        id: id.clone(),
                        field: "run",
                    });
                }
            }
            if *args_hash != req.args_hash {
                return Err(QueueError::ArgsMismatch {
                    id: id.clone(),
                    expected: req.args_hash,
                    actual: *args_hash,
                });
            }
            let expired_ms = approved_ms.saturating_add(self.grant_ttl_ms);
            if now_ns >= expired_ms.saturating_mul(NANOS_PER_MS) {
                return Err(QueueError::GrantExpired {
                    id: id.clone(),
                    expired_ms,
                });
            }
            let grant = Grant {
                approval: id.clone(),
                run: req.run.clone(),
                tool: req.tool.clone(),
                args_hash: req.args_hash,
                approvers: e.approvers.clone(),
                consumed_ms: at_ms,
                policy_version: req.policy_version,
            };
            let t = Transition {
                at_ms,
                request: req,
                kind: TransitionKind::Consumed {
                    wait: Duration::from_millis(at_ms.saturating_sub(req.created_ms)),
                },
            };
            let rec = StoreRecord::Consumed {
                id: id.clone(),
                at_ms,
            };
            self.observe(&t)?;
            self.persist(inner, fx, rec)?;
            Self::note(inner, fx, id, at_ms, NotificationKind::Consumed);
            Ok(grant)
        })
    }

    /// The request with its state and votes, after applying a due timeout or chain move.
    pub fn status(&self, id: &ApprovalId) -> Result<RequestStatus, QueueError> {
        let now_ns = self.now_ns();
        self.with_inner(|inner, fx| {
            self.settle(inner, fx, id, now_ns)?;
            let e = inner
                .entries
                .get(id)
                .ok_or_else(|| QueueError::NotFound { id: id.clone() })?;
            Ok(RequestStatus {
                request: e.request.clone(),
                state: e.state.clone(),
                votes: e.votes.clone(),
                approvals: e.approvals(),
            })
        })
    }

    /// Applies every due timeout and chain move, in request-id order, and returns them. Call
    /// it periodically (e.g. every second from a timer thread); it is also what wakes
    /// [`wait`](Self::wait)ers at a deadline. `status`, `decide` and `consume` apply what is due
    /// for their own request, so a missed tick never lets a late decision through.
    ///
    /// Stops at the first transition the observer or store refuses and returns that error; the
    /// transitions applied before it stand (and were notified).
    pub fn tick(&self) -> Result<Vec<QueueEvent>, QueueError> {
        let now_ns = self.now_ns();
        let mut events = Vec::new();
        let result = self.with_inner(|inner, fx| {
            let ids: Vec<ApprovalId> = inner.pending.iter().cloned().collect();
            let r = ids
                .iter()
                .try_for_each(|id| self.settle(inner, fx, id, now_ns));
            events = std::mem::take(&mut fx.events);
            r
        });
        result.map(|()| events)
    }

    /// The pending requests (a snapshot; nothing due is applied).
    pub fn pending(&self) -> Result<Vec<ApprovalRequest>, QueueError> {
        let inner = self.lock()?;
        Ok(inner
            .pending
            .iter()
            .filter_map(|id| inner.entries.get(id).map(|e| e.request.clone()))
            .collect())
    }

    /// Number of requests known (pending and decided).
    pub fn len(&self) -> usize {
        self.lock().map(|i| i.entries.len()).unwrap_or(0)
    }

    /// Whether the queue holds no request.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of futures currently registered by [`wait`](Self::wait) (for monitoring; a
    /// dropped wait deregisters itself).
    pub fn waiting(&self) -> usize {
        self.lock()
            .map(|i| i.waiters.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Waits until request `id` is resolved (approved, denied or timed out). Works on any
    /// executor: the queue keeps the waker and wakes it from `decide`, `tick` or `consume`.
    /// Timeouts need something that calls [`tick`](Self::tick) (or polls again).
    ///
    /// Cancellation-safe: dropping the future deregisters its waker and changes nothing else.
    pub async fn wait(&self, id: &ApprovalId) -> Result<Resolution, QueueError> {
        Wait {
            queue: self,
            id: id.clone(),
            token: None,
        }
        .await
    }
}

/// The future behind [`ApprovalQueue::wait`].
struct Wait<'q> {
    queue: &'q ApprovalQueue,
    id: ApprovalId,
    token: Option<u64>,
}

impl Future for Wait<'_> {
    type Output = Result<Resolution, QueueError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let queue = this.queue;
        let now_ns = queue.now_ns();
        let id = this.id.clone();
        let token = &mut this.token;
        let r = queue.with_inner(|inner, fx| {
            queue.settle(inner, fx, &id, now_ns)?;
            let e = inner
                .entries
                .get(&id)
                .ok_or_else(|| QueueError::NotFound { id: id.clone() })?;
            if let Some(res) = e.resolution() {
                if let Some(t) = token.take()
                    && let Some(ws) = inner.waiters.get_mut(&id)
                {
                    ws.retain(|(k, _)| *k != t);
                    if ws.is_empty() {
                        inner.waiters.remove(&id);
                    }
                }
                return Ok(Some(res));
            }
            let ws = inner.waiters.entry(id.clone()).or_default();
            match token.and_then(|t| ws.iter_mut().find(|(k, _)| *k == t)) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => {
                    let t = inner.next_token;
                    inner.next_token += 1;
                    *token = Some(t);
                    inner
                        .waiters
                        .entry(id.clone())
                        .or_default()
                        .push((t, cx.waker().clone()));
                }
            }
            Ok(None)
        });
        match r {
            Ok(Some(res)) => Poll::Ready(Ok(res)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.token.take()
            && let Ok(mut inner) = self.queue.inner.lock()
            && let Some(ws) = inner.waiters.get_mut(&self.id)
        {
            ws.retain(|(k, _)| *k != t);
            if ws.is_empty() {
                inner.waiters.remove(&self.id);
            }
        }
    }
}
