//! Getting requests to people ([`ApprovalNotifier`]) and transitions to the audit trail
//! ([`QueueObserver`]).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use crate::audit::AuditError;

use super::request::{ApprovalRequest, Approver, Decision, Resolution};

/// What a transition did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TransitionKind<'a> {
    /// The request was opened and routed to the group of level 0.
    Requested {
        /// The group asked first.
        group: &'a str,
    },
    /// An undecided request moved to a later level of its chain.
    Escalated {
        /// The level left.
        from: usize,
        /// The level reached.
        to: usize,
        /// The group asked now.
        group: &'a str,
    },
    /// An approver decided.
    Decided {
        /// Who.
        approver: &'a Approver,
        /// What.
        decision: Decision,
        /// Why.
        reason: &'a str,
        /// Decision time minus creation time.
        wait: Duration,
        /// Distinct approvals after this decision.
        approvals: u32,
        /// How the request ended, if this decision ended it (quorum reached, or a veto).
        resolution: Option<Resolution>,
    },
    /// An approver replaced the arguments and approved the edited call: approvals cast before
    /// no longer count, and the grant binds the new arguments.
    Edited {
        /// Who.
        approver: &'a Approver,
        /// Why.
        reason: &'a str,
        /// The arguments as edited.
        args: &'a serde_json::Value,
        /// The argument paths that differ from the proposal (JSON pointers, e.g. `/amount`),
        /// names only: the values are in the resumed call's own record, redacted as the tool's
        /// arguments always are.
        changed: &'a [String],
        /// Edit time minus creation time.
        wait: Duration,
        /// Distinct approvals after the edit (the editor's own).
        approvals: u32,
        /// How the request ended, if the edit ended it (a quorum of one).
        resolution: Option<Resolution>,
    },
    /// The deadline passed with no decision.
    TimedOut {
        /// Approved or denied, per the request's `on_timeout`.
        resolution: Resolution,
        /// Deadline minus creation time.
        wait: Duration,
    },
    /// The grant was consumed: the call may now execute, once.
    Consumed {
        /// Consumption time minus creation time.
        wait: Duration,
    },
}

/// One change of one request, shown to the [`QueueObserver`] before it is stored or applied.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Transition<'a> {
    /// When (wall clock, unix ms).
    pub at_ms: u64,
    /// The request (as before the change).
    pub request: &'a ApprovalRequest,
    /// What changes.
    pub kind: TransitionKind<'a>,
}

/// Sees every queue transition after validation and *before* it is stored or applied; an error
/// aborts the operation, which then changes nothing (fail closed: a transition that cannot be
/// audited does not happen). The guard turns transitions into audit events.
///
/// Called with the queue's lock held: it must not call back into the queue, and should be quick.
pub trait QueueObserver: Send + Sync {
    /// Records `t`.
    fn on_transition(&self, t: &Transition<'_>) -> Result<(), AuditError>;
}

/// An observer that accepts everything and records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl QueueObserver for NoopObserver {
    fn on_transition(&self, _: &Transition<'_>) -> Result<(), AuditError> {
        Ok(())
    }
}

/// What a [`Notification`] announces.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum NotificationKind {
    /// A new request for `group`.
    Requested {
        /// The group asked first.
        group: String,
    },
    /// A request nobody decided in time is now routed to `group`.
    Escalated {
        /// The level reached.
        level: usize,
        /// The group asked now.
        group: String,
    },
    /// An approver decided without ending the request (e.g. 1 of a quorum of 2).
    Decided {
        /// Who.
        approver: Approver,
        /// What.
        decision: Decision,
        /// Distinct approvals so far.
        approvals: u32,
    },
    /// The request ended.
    Resolved(Resolution),
    /// The grant was consumed.
    Consumed,
}

/// A message for the people who decide: owned, so it can cross threads and channels.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Notification {
    /// When (unix ms).
    pub at_ms: u64,
    /// The request, as after the change.
    pub request: ApprovalRequest,
    /// What happened.
    pub kind: NotificationKind,
}

/// Forwards requests to people in real time (chat, e-mail, a dashboard). Called after the
/// transition is stored and applied, without the queue's lock; delivery is best effort (the
/// store and the audit trail are the durable record).
pub trait ApprovalNotifier: Send + Sync {
    /// Delivers `n`.
    fn notify(&self, n: &Notification);
}

/// A notifier that sends every notification into a `std::sync::mpsc` channel, for an
/// application thread that forwards them to people (chat, e-mail, a dashboard).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use serde_json::json;
/// use tollgate::clock::ManualClock;
/// use tollgate::escalation::*;
///
/// let (notifier, rx) = ChannelNotifier::new();
/// let groups = ApproverGroups::new().with("ops", ["olga"]);
/// let queue = ApprovalQueue::open(
///     Arc::new(MemoryApprovalStore::new()),
///     Arc::new(ManualClock::new()),
///     QueueConfig::with_groups(groups),
/// )?
/// .with_notifier(Arc::new(notifier));
/// let esc = Escalation::manual(
///     Reason::new("manual", "please check"),
///     ApprovalParams::new(Duration::from_secs(600), [Level::new("ops", Duration::ZERO)]),
/// );
/// let version = EscalationGate::none().version();
/// let req = queue.submit(Submission::new("run-1", "bot", "restart_db", json!({}), esc, version))?;
///
/// // On the forwarding thread:
/// let n = rx.recv()?;
/// assert_eq!(n.request.id, req.id);
/// assert_eq!(n.kind, NotificationKind::Requested { group: "ops".into() });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ChannelNotifier {
    // `Sender` is `Sync` (since Rust 1.72): no lock needed.
    tx: Sender<Notification>,
}

impl ChannelNotifier {
    /// A notifier and the receiving end of its channel.
    pub fn new() -> (Self, Receiver<Notification>) {
        let (tx, rx) = channel();
        (Self { tx }, rx)
    }
}

impl ApprovalNotifier for ChannelNotifier {
    fn notify(&self, n: &Notification) {
        // A dropped receiver only means nobody listens any more.
        let _ = self.tx.send(n.clone());
    }
}
