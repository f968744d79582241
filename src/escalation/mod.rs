//! The escalation gate: rules that route a call to a human, and the approval workflow that
//! decides it.
//!
//! # The model
//!
//! 1. **Rules are parameters.** An [`EscalationPolicy`] (TOML, JSON or builder) lists approver
//!    groups, default approval parameters and up to 64 rules. Each rule has a condition (an
//!    amount over a threshold, optionally per currency; a data tier at or above a level; model
//!    confidence below a floor; an irreversible effect; a flag the caller sets; the run's budget
//!    usage at or above a fraction, i.e. *deceleration*; `all` / `any` combinations), an optional
//!    tool scope, and approval parameters (timeout, what a timeout means, quorum, escalation
//!    chain). Durations are strings with a unit (`timeout = "15m"`, `after = "30m"`) and
//!    amount thresholds exact decimals (`over = "100.10"` or `over = 100`, never a float literal;
//!    see [`crate::units`]). [`EscalationGate::compile`] validates it against the boundary's tier
//!    list; errors name the field (`rules[2].when.amount.path`). The queue's own settings
//!    (separation of duties, grant lifetime, most pending requests) live in the same document
//!    ([`ApprovalSettings`], `[escalation.approvals]`).
//! 2. **Evaluation is cheap.** [`EscalationGate::evaluate`] takes a borrowed [`GateInput`] and
//!    returns a [`Matched`] bit set without allocating. Rules scoped to tools are looked up per
//!    tool, so a call no rule concerns costs one table lookup. Raw JSON arguments are parsed
//!    only when a candidate rule reads them, by the crate's strict zero-allocation scanner, and
//!    numbers compare exactly. Everything that cannot be told fails closed (escalates): unreadable
//!    arguments, a non-numeric or non-finite amount, a missing or unlisted currency, an unknown
//!    tier, a missing confidence (configurable).
//! 3. **A match becomes a request.** [`EscalationGate::escalation`] turns the matches into every
//!    reason plus the strictest combined parameters (highest quorum, earliest deny deadline, ...;
//!    see that method). [`ApprovalQueue::submit`] opens an [`ApprovalRequest`]: random id, the
//!    run's id, agent, trigger and compartment, the arguments and their [`ArgsHash`] (an HMAC of
//!    their exact canonical form under the queue's [`ArgsKey`], so nobody who sees it can test
//!    guesses of redacted values), deadline (recorded on the wall clock so it survives a
//!    restart, enforced on the monotonic clock), policy version, chain schedule.
//! 4. **Identity-bound decisions.** [`ApprovalQueue::decide`] records who decided what and why.
//!    Only members of the current level's group (or an earlier level's) may decide; the run's
//!    trigger may not (separation of duties); the quorum counts *distinct* approvers; any deny
//!    vetoes. At the deadline an undecided request is denied (or approved, where every matched
//!    rule says `on_timeout = "approve"`), never a nanosecond before; chains move an undecided
//!    request to the next level on schedule. [`ApprovalQueue::tick`] applies due transitions;
//!    `status`, `decide` and `consume` apply them lazily for their request, so a late decision is
//!    refused even if nobody ticked.
//! 5. **Single-use grants.** [`ApprovalQueue::consume`] turns an approved request into a
//!    [`Grant`] exactly once, and only for the approved arguments. A synchronous caller keeps a
//!    [`Ticket`]; [`ApprovalQueue::consume_ticket`] (what the guard uses) also requires the
//!    request's tool and a run with its id, agent, trigger and compartment, so another agent
//!    reusing a finished run's id cannot consume it. An async caller awaits
//!    [`ApprovalQueue::wait`] on any executor.
//! 6. **Durable and audited.** Every transition is shown to a [`QueueObserver`] (the guard's
//!    audit) *before* it is stored or applied, and an error aborts it. It is then appended to an
//!    [`ApprovalStore`] before it takes effect; reopening replays the store and re-checks every
//!    approval of a still-open request against the current groups. [`FileApprovalStore`] keeps
//!    JSON Lines, hash-chained and MAC'd under a [`StoreKey`], with a head against truncation,
//!    an OS lock against a second writer, fsync per record; it refuses to open when damaged and
//!    is repaired only explicitly and on the record ([`FileApprovalStore::repair`]).
//!    [`ApprovalNotifier`]s (e.g. [`ChannelNotifier`]) forward requests, chain moves and
//!    outcomes to people.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use serde_json::json;
//! use tollgate::boundary::Effect;
//! use tollgate::clock::ManualClock;
//! use tollgate::escalation::*;
//!
//! let policy = EscalationPolicy::from_json(r#"{
//!     "groups": { "finance": ["alice", "bob"], "cfo": ["carol"] },
//!     "defaults": { "timeout": "1h",
//!                   "chain": [ { "group": "finance" }, { "group": "cfo", "after": "30m" } ] },
//!     "approvals": { "grant_ttl": "15m" },
//!     "rules": [
//!         { "id": "large-payment", "tools": ["pay_invoice"], "quorum": 2,
//!           "when": { "amount": { "path": "amount", "currency_path": "currency",
//!                                 "over_by_currency": { "EUR": "900.00", "USD": 1000 } } } },
//!         { "id": "decelerate", "when": { "budget_used": { "at_least": 0.8 } },
//!           "timeout": "60s", "on_timeout": "approve" }
//!     ]
//! }"#)?;
//! let gate = EscalationGate::compile(policy, &["public".into(), "confidential".into()])?;
//!
//! // A read no rule concerns, and a small payment: no human needed.
//! assert!(gate.evaluate(&GateInput::new("search", Effect::Read, r#"{"q":"x"}"#)).is_empty());
//! let small = r#"{"amount": 120, "currency": "EUR"}"#;
//! assert!(gate.evaluate(&GateInput::new("pay_invoice", Effect::Irreversible, small)).is_empty());
//!
//! // A large payment escalates; so would an unlisted currency.
//! let args = json!({"amount": 5000, "currency": "EUR"});
//! let esc = gate.check(&GateInput::new("pay_invoice", Effect::Irreversible, &args)).unwrap();
//! assert_eq!(esc.reasons[0].rule.as_str(), "large-payment");
//!
//! // The queue: time comes from the injected clock.
//! let clock = Arc::new(ManualClock::new());
//! let store = Arc::new(MemoryApprovalStore::new());
//! let queue = ApprovalQueue::open(store, clock.clone(), QueueConfig::for_gate(&gate))?;
//! let req = queue.submit(
//!     Submission::new("run-1", "billing-bot", "pay_invoice", args.clone(), esc, gate.version())
//!         .triggered_by("dave"),
//! )?;
//!
//! // Two distinct finance approvers make the quorum.
//! queue.decide(&req.id, &Approver::new("alice"), Decision::Approve, "invoice checked")?;
//! assert!(matches!(
//!     queue.decide(&req.id, &Approver::new("alice"), Decision::Approve, "again"),
//!     Err(QueueError::AlreadyApproved { .. })
//! ));
//! clock.advance(Duration::from_secs(60));
//! let out = queue.decide(&req.id, &Approver::new("bob"), Decision::Approve, "ok")?;
//! assert!(out.state.is_approved());
//!
//! // The grant authorises exactly these arguments (in any spelling), once.
//! let changed = r#"{"amount": 50000, "currency": "EUR"}"#;
//! let same = r#"{"currency": "EUR", "amount": 5e3}"#;
//! assert_eq!(queue.args_hash(same)?, req.args_hash);
//! assert!(matches!(queue.consume(&req.id, changed), Err(QueueError::ArgsMismatch { .. })));
//! let grant = queue.consume(&req.id, same)?;
//! assert_eq!(grant.approvers.len(), 2);
//! assert!(matches!(queue.consume(&req.id, &args), Err(QueueError::AlreadyUsed { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Time
//!
//! Deadlines, chain levels and grant lifetimes are measured on the monotonic clock
//! ([`Clock::now`](crate::clock::Clock::now)): a wall-clock step while the process runs neither
//! expires a request early (nor auto-approves one whose timeout approves) nor keeps a grant
//! alive past its lifetime. They are *recorded* as wall-clock unix milliseconds (a deadline
//! rounded up, so never early), because only wall time survives a restart: reopening a queue
//! converts each recorded time into a monotonic deadline once, as the time left on the wall
//! clock, capped at the request's full timeout or the grant lifetime. A wall-clock step while
//! the process is down is the one case that moves a deadline. Wall time also stamps records,
//! transitions and notifications for people.

mod binding;
mod error;
mod gate;
mod notify;
mod policy;
mod queue;
mod request;
mod serde_util;
mod state;
mod store;
mod wait;

pub(crate) use binding::args_are_exact;
pub use binding::{ArgsHash, ArgsKey, args_value, exact_args, parse_args};
pub use error::{ArgsError, EscalationPolicyError, QueueError, StoreError};
pub use gate::{
    ApprovalParams, DEFAULT_TIMEOUT, Escalation, EscalationGate, GateInput, Level, MAX_RULES,
    Matched,
};
pub use notify::{
    ApprovalNotifier, ChannelNotifier, NoopObserver, Notification, NotificationKind, QueueObserver,
    Transition, TransitionKind,
};
pub use policy::{
    AmountCondition, ApprovalSettings, BudgetCondition, Condition, ConfidenceCondition,
    EscalationPolicy, IfMissing, LevelSpec, OnTimeout, RuleParams, RuleSpec,
};
pub(crate) use queue::Blocked;
pub use queue::{ApprovalQueue, DecideOutcome, QueueConfig, QueueEvent};
pub use request::{
    ApprovalId, ApprovalRequest, Approver, ApproverGroups, ChainLevel, Decision, Grant, Reason,
    RequestState, RequestStatus, Resolution, Submission, Ticket, Vote,
};
pub use state::ReplayRefusal;
pub use store::{
    ApprovalStore, FileApprovalStore, MemoryApprovalStore, Removal, RepairReport, StoreKey,
    StoreKeyError, StoreRecord, TornTail,
};
