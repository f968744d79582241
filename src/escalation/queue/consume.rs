//! Grants: the keyed hash that binds a request to its arguments, and consuming an approval
//! once, for exactly the call and the run context it was raised for.

use serde_json::Value;

use crate::call::{Args, JsonError, RunContext, RunId};

use super::ApprovalQueue;
use crate::escalation::binding::{ArgsHash, exact_args};
use crate::escalation::error::{ArgsError, QueueError};
use crate::escalation::notify::{NotificationKind, Transition, TransitionKind};
use crate::escalation::request::{ApprovalId, ApprovalRequest, Grant, RequestState, Ticket};
use crate::escalation::store::StoreRecord;

/// The run that presents a ticket: what [`ApprovalQueue::consume_ticket`] compares with the
/// request.
#[derive(Clone, Copy)]
struct Caller<'a> {
    run: &'a RunId,
    ctx: &'a RunContext,
    tool: &'a str,
}

/// The first field in which the request differs from the run presenting its ticket.
fn mismatch(req: &ApprovalRequest, c: Caller<'_>) -> Option<&'static str> {
    if req.tool != c.tool {
        Some("tool")
    } else if req.run != *c.run {
        Some("run")
    } else if req.agent != *c.ctx.agent() {
        Some("agent")
    } else if req.trigger.as_ref() != c.ctx.trigger() {
        Some("trigger")
    } else if req.compartment.as_ref() != c.ctx.compartment() {
        Some("compartment")
    } else {
        None
    }
}

impl ApprovalQueue {
    /// The [`ArgsHash`] of `args` under the queue's key: what a request binds, and what
    /// [`Submission::args_hash`](crate::escalation::Submission::args_hash) takes. Errors as
    /// [`ArgsKey::hash`](crate::escalation::ArgsKey::hash).
    pub fn args_hash<'a>(&self, args: impl Into<Args<'a>>) -> Result<ArgsHash, JsonError> {
        self.args_keys[0].hash(args)
    }

    /// [`exact_args`] under the queue's key: the arguments as approvers are
    /// shown them and the hash a grant binds, refused where the two could disagree.
    pub fn exact_args(&self, args: Args<'_>) -> Result<(Value, ArgsHash), ArgsError> {
        exact_args(&self.args_keys[0], args)
    }

    /// The hashes of `args` under every key of the queue, the current one first.
    fn hashes(&self, id: &ApprovalId, args: Args<'_>) -> Result<Vec<ArgsHash>, QueueError> {
        self.args_keys
            .iter()
            .map(|k| k.hash(args))
            .collect::<Result<_, _>>()
            .map_err(|source| QueueError::MalformedArgs {
                id: id.clone(),
                source,
            })
    }

    /// Turns approved request `id` into its single-use [`Grant`], if `args` (a `&Value`, raw
    /// JSON text, or [`Args::None`]) are the approved arguments in the
    /// [canonical form](crate::call::canonical) (keys in any order, any spelling of the same
    /// numbers). Succeeds once per request, ever: the consumption is persisted before this
    /// returns, and survives restarts.
    ///
    /// Refused: arguments that differ ([`QueueError::ArgsMismatch`], the grant stays unused), a
    /// second consumption ([`QueueError::AlreadyUsed`]), a request that is pending, denied or
    /// timed out, an approval older than the grant lifetime ([`QueueError::GrantExpired`]).
    ///
    /// This binds the tool's arguments only: the caller answers for running the request's tool
    /// in the request's run. [`consume_ticket`](Self::consume_ticket) (what the guard uses)
    /// checks the run, its agent, trigger and compartment and the tool too.
    pub fn consume<'a>(
        &self,
        id: &ApprovalId,
        args: impl Into<Args<'a>>,
    ) -> Result<Grant, QueueError> {
        let hashes = self.hashes(id, args.into())?;
        self.consume_inner(id, &hashes, None)
    }

    /// [`consume`](Self::consume) for a stored [`Ticket`] and the call about to execute: `tool`
    /// with `args` in run `run` with context `ctx`. Besides the arguments, the request must have
    /// been raised for this tool, in a run with this id, by this agent, with this trigger and
    /// in this compartment ([`QueueError::TicketMismatch`] naming the field; the grant stays
    /// unused).
    ///
    /// A run id alone proves little: once a run has ended, any agent may start a run with the
    /// same id. The agent, trigger and compartment are the context the approvers judged (and
    /// separation of duties was checked against), and they come from the request the queue
    /// stored, not from the ticket, which the caller holds.
    pub fn consume_ticket(
        &self,
        ticket: &Ticket,
        run: &RunId,
        ctx: &RunContext,
        tool: &str,
        args: Args<'_>,
    ) -> Result<Grant, QueueError> {
        let id = &ticket.approval;
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
        let hashes = self.hashes(id, args)?;
        if !hashes.contains(&ticket.args_hash) {
            return Err(QueueError::ArgsMismatch {
                id: id.clone(),
                expected: ticket.args_hash,
                actual: hashes[0],
            });
        }
        self.consume_inner(id, &hashes, Some(Caller { run, ctx, tool }))
    }

    fn consume_inner(
        &self,
        id: &ApprovalId,
        hashes: &[ArgsHash],
        caller: Option<Caller<'_>>,
    ) -> Result<Grant, QueueError> {
        let now = self.now();
        let at_ms = now.wall_ms();
        self.with_inner(|inner, fx| {
            self.settle(inner, fx, id, &now)?;
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
            if let Some(c) = caller
                && let Some(field) = mismatch(req, c)
            {
                return Err(QueueError::TicketMismatch {
                    id: id.clone(),
                    field,
                });
            }
            if !hashes.contains(&req.args_hash) {
                return Err(QueueError::ArgsMismatch {
                    id: id.clone(),
                    expected: req.args_hash,
                    actual: hashes[0],
                });
            }
            // The lifetime runs on the monotonic clock; the wall time is for the message.
            let expired_ms = approved_ms
                .saturating_add(u64::try_from(self.grant_ttl.as_millis()).unwrap_or(u64::MAX));
            if e.grant_expiry.is_none_or(|at| now.mono >= at) {
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
                    wait: now.mono.duration_since(e.created),
                },
            };
            let rec = StoreRecord::Consumed {
                id: id.clone(),
                at_ms,
            };
            self.observe(&t)?;
            self.persist(inner, fx, &now, rec)?;
            Self::note(inner, fx, id, at_ms, NotificationKind::Consumed);
            Ok(grant)
        })
    }
}
