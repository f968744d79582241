//! The approval queue: requests, decisions, timeouts, chain moves, grants, waiting.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};

use crate::call::Principal;
use crate::clock::Clock;

use super::binding::ArgsKey;
use super::error::QueueError;
use super::gate::EscalationGate;
use super::notify::{
    ApprovalNotifier, NoopObserver, Notification, NotificationKind, QueueObserver, Transition,
    TransitionKind,
};
use super::policy::{ApprovalSettings, OnTimeout};
use super::request::{
    ApprovalId, ApprovalRequest, Approver, ApproverGroups, ChainLevel, Decision, RequestState,
    RequestStatus, Resolution, Submission,
};
use super::state::{Inner, Mode, NANOS_PER_MS, Now, ReplayRefusal, apply, recheck_open};
use super::store::{ApprovalStore, StoreRecord, depth_exceeds};
use super::wait::Wait;

mod blocking;
mod consume;
mod edit;
use crate::call::canonical::MAX_DEPTH;
pub(crate) use blocking::Blocked;

/// Longest accepted timeout: 366 days.
const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 86_400);
/// Most levels in a chain.
const MAX_LEVELS: usize = 16;
/// Longest reason an approver may give, in bytes.
pub(super) const MAX_REASON_BYTES: usize = 4096;

/// Queue settings. Serde-loadable (`deny_unknown_fields`); every field has a default. A queue
/// for a compiled gate takes its groups and its policy's `[escalation.approvals]` with
/// [`QueueConfig::for_gate`].
///
/// ```
/// use std::time::Duration;
/// use tollgate::escalation::QueueConfig;
///
/// let cfg: QueueConfig = serde_json::from_str(
///     r#"{"groups": {"finance": ["alice", "bob"]}, "grant_ttl": "10m"}"#)?;
/// assert!(cfg.separation_of_duties);
/// assert_eq!(cfg.grant_ttl, Duration::from_secs(600));
/// assert_eq!(cfg.max_pending, 10_000);
/// // A bare number is refused: seconds or milliseconds?
/// assert!(serde_json::from_str::<QueueConfig>(r#"{"grant_ttl": 600}"#).is_err());
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
    /// How long an approval stays consumable, from the approval (default `"1h"`; 1 s to 366
    /// days).
    #[serde(with = "crate::units::duration")]
    pub grant_ttl: Duration,
    /// Most pending requests; further submissions fail with [`QueueError::Full`] (default 10 000).
    pub max_pending: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self::with_settings(ApproverGroups::new(), &ApprovalSettings::default())
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

    /// These approver groups with these settings.
    pub fn with_settings(groups: ApproverGroups, settings: &ApprovalSettings) -> Self {
        Self {
            groups,
            separation_of_duties: settings.separation_of_duties,
            grant_ttl: settings.grant_ttl,
            max_pending: settings.max_pending,
        }
    }

    /// What `gate`'s policy says: its approver groups and its `[escalation.approvals]`
    /// settings ([`EscalationGate::approvals`](super::EscalationGate::approvals)).
    pub fn for_gate(gate: &EscalationGate) -> Self {
        Self::with_settings(gate.groups().clone(), gate.approvals())
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

/// What to do once the lock is released.
#[derive(Default)]
pub(super) struct Effects {
    notes: Vec<Notification>,
    wake: Vec<std::task::Waker>,
    events: Vec<QueueEvent>,
}

/// The approval queue: opens requests, records identity-bound decisions, applies timeouts and
/// chain moves, hands out single-use grants, and wakes waiters. See the [module docs](super).
///
/// `Send + Sync`; share it behind an `Arc`. Every operation takes one internal lock, runs the
/// observer and appends to the store under it (so the store's order is the order of events),
/// and notifies and wakes after releasing it.
pub struct ApprovalQueue {
    pub(super) inner: Mutex<Inner>,
    store: Arc<dyn ApprovalStore>,
    clock: Arc<dyn Clock>,
    separation_of_duties: bool,
    grant_ttl: Duration,
    max_pending: usize,
    /// The keys of [`ArgsHash`](super::ArgsHash): the first hashes new requests, every one is accepted when a
    /// grant is consumed (never empty).
    args_keys: Vec<ArgsKey>,
    observer: Arc<dyn QueueObserver>,
    notifiers: Vec<Arc<dyn ApprovalNotifier>>,
    refused: Vec<ReplayRefusal>,
}

impl std::fmt::Debug for ApprovalQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalQueue")
            .field("clock", &self.clock)
            .field("separation_of_duties", &self.separation_of_duties)
            .field("grant_ttl", &self.grant_ttl)
            .field("max_pending", &self.max_pending)
            .field("notifiers", &self.notifiers.len())
            .finish_non_exhaustive()
    }
}

fn ceil_ms(ns: u64) -> u64 {
    ns.div_ceil(NANOS_PER_MS)
}

/// Both clocks, read once.
fn now(clock: &dyn Clock) -> Now {
    Now {
        mono: clock.now(),
        wall_ns: clock
            .wall()
            .duration_since(UNIX_EPOCH)
            .map(dur_ns)
            .unwrap_or(0),
    }
}

fn dur_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn invalid(field: &str, reason: impl Into<String>) -> QueueError {
    QueueError::InvalidSubmission {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl ApprovalQueue {
    /// Opens a queue over `store`, replaying its records: every pending and decided request is
    /// restored, and a consumed grant stays consumed. Records that contradict each other make
    /// this fail ([`QueueError::Replay`]) rather than guess.
    ///
    /// Replay then re-checks every approval of every request still open (pending, or approved
    /// and unused) as [`decide`](Self::decide) would check it now, under `config`: membership
    /// of a group eligible at the level the vote was cast at, separation of duties, one vote per
    /// approver; and recomputes the quorum. An approval that fails (an outsider's, the trigger's,
    /// a member's since removed) does not count, is reported in
    /// [`replay_refusals`](Self::replay_refusals) and logged, and a request approved only thanks
    /// to it is pending again. A store cannot smuggle in an approval that the queue would refuse
    /// live. Closed requests (consumed, denied, timed out, voided) are history and are not
    /// re-judged: none of them can be approved or consumed again.
    ///
    /// Deadlines and grant lifetimes run on the monotonic clock. A restarted process shares no
    /// monotonic origin with the one that wrote the records, so replay converts each recorded
    /// wall-clock deadline (and each approval time plus the grant lifetime) into a monotonic
    /// instant *once*, as the time left on the wall clock now, capped at the request's full
    /// timeout (or the grant lifetime): a wall-clock step while the process was down shortens
    /// or (within that cap) lengthens what is left; a step while it runs changes nothing.
    ///
    /// Arguments are bound with the store's [`args_keys`](ApprovalStore::args_keys), or, if it
    /// offers none, with a random key generated now ([`QueueError::Random`] if the operating
    /// system has no randomness to give).
    pub fn open(
        store: Arc<dyn ApprovalStore>,
        clock: Arc<dyn Clock>,
        config: QueueConfig,
    ) -> Result<Self, QueueError> {
        if config.max_pending == 0 {
            return Err(invalid("max_pending", "must be at least 1"));
        }
        if config.grant_ttl < Duration::from_secs(1) || config.grant_ttl > MAX_TIMEOUT {
            return Err(invalid(
                "grant_ttl",
                format!(
                    "`{}`: must be at least 1s and at most {}",
                    crate::units::format_duration(config.grant_ttl),
                    crate::units::format_duration(MAX_TIMEOUT)
                ),
            ));
        }
        let mut inner = Inner {
            groups: config.groups,
            ..Inner::default()
        };
        let grant_ttl = config.grant_ttl;
        let now = now(&*clock);
        for (index, rec) in store.load()?.iter().enumerate() {
            apply(&mut inner, rec, Mode::Replay(now), grant_ttl)
                .map_err(|reason| QueueError::Replay { index, reason })?;
        }
        let mut args_keys = store.args_keys()?;
        if args_keys.is_empty() {
            args_keys.push(ArgsKey::generate().map_err(|e| QueueError::Random(e.to_string()))?);
            if !inner.entries.is_empty() {
                // Fail closed, but not silently: the replayed requests were bound under a key
                // this queue does not have, so none of their grants can ever be consumed.
                tracing::warn!(
                    requests = inner.entries.len(),
                    "approval queue: the store replayed requests but offers no argument key \
                     (ApprovalStore::args_keys); their grants cannot be consumed"
                );
            }
        }
        let refused = recheck_open(&mut inner, config.separation_of_duties);
        for r in &refused {
            tracing::warn!(
                request = %r.id,
                approver = %r.approver,
                reason = %r.reason,
                "approval queue: a stored approval does not count on replay"
            );
        }
        Ok(Self {
            inner: Mutex::new(inner),
            store,
            clock,
            separation_of_duties: config.separation_of_duties,
            grant_ttl,
            max_pending: config.max_pending,
            args_keys,
            observer: Arc::new(NoopObserver),
            notifiers: Vec::new(),
            refused,
        })
    }

    /// Applies what other queues sharing the store (other hosts) recorded since this one last
    /// looked ([`ApprovalStore::fetch_new`]): their requests, decisions, timeouts and
    /// consumptions. Waiters of requests now resolved are woken. Every open request is then
    /// re-checked as on [`open`](Self::open) (a store cannot smuggle in an approval this queue
    /// would refuse). Returns how many records were applied.
    ///
    /// A foreign record that does not apply on top of this queue's state (records of two hosts
    /// that interleaved differently in memory than in the store) makes the queue rebuild its
    /// state from the whole store, in the store's order.
    pub fn sync(&self) -> Result<usize, QueueError> {
        let config_sod = self.separation_of_duties;
        let grant_ttl = self.grant_ttl;
        self.with_inner(|inner, fx| {
            let new = self.store.fetch_new()?;
            if new.is_empty() {
                return Ok(0);
            }
            let now = self.now();
            let mut rebuild = false;
            for rec in &new {
                if apply(inner, rec, Mode::Replay(now), grant_ttl).is_err() {
                    rebuild = true;
                    break;
                }
            }
            if rebuild {
                let records = self.store.load()?;
                let mut fresh = Inner {
                    groups: inner.groups.clone(),
                    next_token: inner.next_token,
                    ..Inner::default()
                };
                for (index, rec) in records.iter().enumerate() {
                    apply(&mut fresh, rec, Mode::Replay(now), grant_ttl)
                        .map_err(|reason| QueueError::Replay { index, reason })?;
                }
                fresh.waiters = std::mem::take(&mut inner.waiters);
                *inner = fresh;
            }
            for r in recheck_open(inner, config_sod) {
                tracing::warn!(
                    request = %r.id,
                    approver = %r.approver,
                    reason = %r.reason,
                    "approval queue: a synced approval does not count"
                );
            }
            let resolved: Vec<ApprovalId> = inner
                .waiters
                .keys()
                .filter(|id| {
                    inner
                        .entries
                        .get(*id)
                        .is_some_and(|e| !e.state.is_pending())
                })
                .cloned()
                .collect();
            for id in resolved {
                if let Some(ws) = inner.waiters.remove(&id) {
                    fx.wake.extend(ws.into_iter().map(|(_, w)| w));
                }
            }
            Ok(new.len())
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

    /// The approvals that replay did not count when the queue was opened (see
    /// [`open`](Self::open)).
    pub fn replay_refusals(&self) -> &[ReplayRefusal] {
        &self.refused
    }

    /// The state, unless an operation panicked while changing it (fail closed).
    fn lock(&self) -> Result<MutexGuard<'_, Inner>, QueueError> {
        let inner = self.inner.lock();
        if inner.torn {
            return Err(QueueError::Poisoned);
        }
        Ok(inner)
    }

    pub(super) fn now(&self) -> Now {
        now(&*self.clock)
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

    /// Runs `f` under the lock, then dispatches its effects (also when it failed part-way). A
    /// panic inside `f` (an observer's or store's) leaves the state marked torn, and every later
    /// operation fails with [`QueueError::Poisoned`].
    pub(super) fn with_inner<T>(
        &self,
        f: impl FnOnce(&mut Inner, &mut Effects) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let mut fx = Effects::default();
        let result = match self.lock() {
            Ok(mut inner) => {
                inner.torn = true;
                let r = f(&mut inner, &mut fx);
                inner.torn = false;
                r
            }
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
        now: &Now,
        rec: StoreRecord,
    ) -> Result<(), QueueError> {
        self.store.append(&rec)?;
        let Some(id) = rec.id() else {
            return Ok(());
        };
        apply(inner, &rec, Mode::Live(*now), self.grant_ttl).map_err(|reason| {
            QueueError::Inconsistent {
                id: id.clone(),
                reason,
            }
        })?;
        if let Some(e) = inner.entries.get(id)
            && !e.state.is_pending()
            && let Some(ws) = inner.waiters.remove(id)
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
    pub(super) fn settle(
        &self,
        inner: &mut Inner,
        fx: &mut Effects,
        id: &ApprovalId,
        now: &Now,
    ) -> Result<(), QueueError> {
        loop {
            let Some(e) = inner.entries.get(id) else {
                return Ok(());
            };
            if !e.state.is_pending() {
                return Ok(());
            }
            let req = &e.request;
            if now.mono >= e.deadline {
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
                        wait: e.deadline.duration_since(e.created),
                    },
                };
                let rec = StoreRecord::TimedOut {
                    id: id.clone(),
                    approved,
                    at_ms,
                };
                self.observe(&t)?;
                self.persist(inner, fx, now, rec)?;
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
            let (Some(level), Some(at)) = (req.chain.get(next), e.levels.get(next)) else {
                return Ok(());
            };
            if now.mono < *at {
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
            self.persist(inner, fx, now, rec)?;
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
    /// arguments are nested deeper than [`MAX_DEPTH`] levels (no record could hold them), when
    /// the queue is full, or when the observer or store refuse.
    ///
    /// The deadline and the chain's schedule are recorded on the wall clock (unix ms, rounded
    /// up, so they survive a restart) and enforced on the monotonic clock: the request times out
    /// exactly when the monotonic clock has advanced by the time that was left to the recorded
    /// deadline at submission, whatever the wall clock does meanwhile.
    pub fn submit(&self, sub: Submission) -> Result<ApprovalRequest, QueueError> {
        let now = self.now();
        let now_ns = now.wall_ns;
        self.with_inner(|inner, fx| {
            let p = &sub.escalation.params;
            if sub.tool.is_empty() {
                return Err(invalid("tool", "must not be empty"));
            }
            if depth_exceeds(&sub.args, MAX_DEPTH) {
                return Err(invalid(
                    "args",
                    format!("nested deeper than {MAX_DEPTH} levels; no record could hold them"),
                ));
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
                compartment: sub.compartment.clone(),
                task_type: sub.task_type.clone(),
                tool: sub.tool.clone(),
                args_hash: match sub.args_hash {
                    Some(h) => h,
                    None => self
                        .args_hash(&sub.args)
                        .map_err(|e| invalid("args", e.to_string()))?,
                },
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
                &now,
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
        let now = self.now();
        let at_ms = now.wall_ms();
        self.with_inner(|inner, fx| {
            self.settle(inner, fx, id, &now)?;
            let e = inner
                .entries
                .get(id)
                .ok_or_else(|| QueueError::NotFound { id: id.clone() })?;
            self.check_decider(inner, e, id, approver)?;
            let req = &e.request;
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
                    wait: now.mono.duration_since(e.created),
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
            self.persist(inner, fx, &now, rec)?;
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

    /// Whether `approver` may decide `e` (request `id`) now: it is pending, not expired, the
    /// approver is neither its trigger nor its agent (with separation of duties), and belongs to
    /// a group asked at a level reached so far.
    pub(super) fn check_decider(
        &self,
        inner: &Inner,
        e: &super::state::Entry,
        id: &ApprovalId,
        approver: &Approver,
    ) -> Result<(), QueueError> {
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
        Ok(())
    }

    /// The request with its state and votes, after applying a due timeout or chain move.
    pub fn status(&self, id: &ApprovalId) -> Result<RequestStatus, QueueError> {
        let now = self.now();
        self.with_inner(|inner, fx| {
            self.settle(inner, fx, id, &now)?;
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
        let now = self.now();
        let mut events = Vec::new();
        let result = self.with_inner(|inner, fx| {
            let ids: Vec<ApprovalId> = inner.pending.iter().cloned().collect();
            let r = ids
                .iter()
                .try_for_each(|id| self.settle(inner, fx, id, &now));
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
        Wait::new(self, id.clone()).await
    }
}
