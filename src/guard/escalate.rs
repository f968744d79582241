//! The escalation stage of the guard: a call an [`EscalationGate`] rule concerns becomes an
//! [`ApprovalRequest`] in the guard's [`ApprovalQueue`] instead of running, and runs later only
//! through [`Guard::resume`] (or [`Guard::check_and_wait`]) with an approval consumed once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::run::Run;
use super::shared::{Shared, Snapshot};
use super::{Guard, GuardBuilder};
use crate::audit::{AuditError, Decision, EventKind};
use crate::boundary::{ActionBoundary, Admitted};
use crate::call::ToolCall;
use crate::escalation::{
    ApprovalQueue, ApprovalRequest, Escalation, EscalationGate, GateInput, Matched, QueueError,
    QueueObserver, Reason, Resolution, Submission, Ticket, Transition,
};
use crate::mode::Mode;
use crate::verdict::{Denial, DenyCode, Verdict};

/// The queue escalated calls go to (the gate that sends them is part of the policy snapshot).
pub(crate) struct Escalations {
    pub(crate) queue: Arc<ApprovalQueue>,
    observer: Arc<AuditObserver>,
}

/// Records the queue's transitions in the guard's audit trail, before they take effect.
#[derive(Default)]
struct AuditObserver {
    shared: OnceLock<Weak<Shared>>,
}

impl QueueObserver for AuditObserver {
    fn on_transition(&self, t: &Transition<'_>) -> Result<(), AuditError> {
        let Some(shared) = self.shared.get().and_then(Weak::upgrade) else {
            return Err(AuditError::Refused {
                sink: "guard",
                reason: "the guard that owns this approval queue is gone".into(),
            });
        };
        let snap = shared.policy.load();
        shared.record_event(
            Some(&t.request.run),
            Some(&t.request.agent),
            EventKind::Escalation {
                request: t.request,
                transition: &t.kind,
            },
            || Some(snap.boundary.audit_marks(&t.request.tool)),
        )?;
        // An approver's answer is rollout evidence for the run's task type: the request
        // records it, so this holds after the run ended or the process restarted (requests
        // stored before the field existed fall back to the live run's). A denial demotes at
        // once; every answer (approve, deny, edit) counts toward the live agreement bound.
        use crate::escalation::{Decision as Vote, TransitionKind as T};
        let answer = match &t.kind {
            T::Decided {
                decision, approver, ..
            } => Some((
                *decision == Vote::Approve,
                *decision == Vote::Deny,
                *approver,
            )),
            T::Edited { approver, .. } => Some((false, false, *approver)),
            _ => None,
        };
        if let Some((agrees, denied, approver)) = answer
            && let Some(live) = &snap.rollout
        {
            // Borrowed from the request; only an old request without it asks the live runs.
            let from_live_run: Option<Arc<str>> = match &t.request.task_type {
                Some(_) => None,
                None => shared
                    .live_runs
                    .lock()
                    .get(&t.request.run)
                    .cloned()
                    .flatten(),
            };
            let task_type = t
                .request
                .task_type
                .as_ref()
                .map(|t| t.as_str())
                .or(from_live_run.as_deref());
            if denied {
                shared.rollout_trigger(
                    live,
                    Some(&t.request.run),
                    Some(&t.request.agent),
                    task_type,
                    super::rollout::Cause {
                        kind: "human_denial",
                        rule: approver.id.as_str(),
                        detail: t.request.id.as_str(),
                    },
                );
            }
            shared.rollout_answer(
                live,
                super::rollout::Answer {
                    run: Some(&t.request.run),
                    agent: Some(&t.request.agent),
                    task_type,
                    mode: Mode::Supervised,
                    agrees,
                },
            );
        }
        Ok(())
    }
}

impl Escalations {
    pub(super) fn attach(&self, shared: &Arc<Shared>) {
        let _ = self.observer.shared.set(Arc::downgrade(shared));
    }
}

impl GuardBuilder {
    /// Sends calls that `gate`'s rules concern to a human through `queue` (see
    /// [`crate::escalation`]). The guard records every transition of the queue's requests
    /// (requested, routed, decided, expired, resumed) in its audit trail before it takes effect,
    /// so do not give the queue an observer of your own. Build the gate with
    /// [`EscalationGate::for_boundary`] so its tiers and tools are the policy's.
    pub fn escalation(mut self, gate: EscalationGate, queue: ApprovalQueue) -> Self {
        let observer = Arc::new(AuditObserver::default());
        let queue = Arc::new(queue.with_observer(observer.clone()));
        self.escalation = Some((gate, Escalations { queue, observer }));
        self
    }
}

impl Shared {
    /// Evaluates the gate (and a flow rule's escalation): `Ok(Some)` is the approval the call
    /// needs (not yet queued), `Ok(None)` no rule concerns it, `Err` the (unrecorded)
    /// denial of a call that needs a human but could not be put before one.
    pub(super) fn gate_escalation(
        &self,
        snap: &Snapshot,
        run: &Run,
        call: &ToolCall<'_>,
        admitted: Admitted,
        flow: Option<Reason>,
    ) -> Result<Option<Escalation>, Denial> {
        let boundary = &*snap.boundary;
        let gate = snap.gate.as_deref();
        let matched = match gate {
            Some(gate) => {
                let info = boundary.tool_info(admitted);
                let mut input = GateInput::from_call(call, info.effect()).flags(call.flags());
                if let Some(i) = info.tier().and_then(|t| gate.tier_index(t)) {
                    input = input.tier(i);
                }
                if let Some(f) = self.budget_used(snap, run) {
                    input = input.budget_used(f);
                }
                gate.evaluate(&input)
            }
            None => Matched::NONE,
        };
        if matched.is_empty() && flow.is_none() {
            return Ok(None);
        }
        if self.escalation.is_none() {
            return Err(self.escalation_failed(
                snap,
                "the policy escalates but this guard has no approval queue".into(),
            ));
        }
        // The gate's rules and a violated flow rule make one request: the rules' approval
        // (the flow's reason added), or for a flow alone the approval of `escalation.defaults`.
        let escalation = match (gate.and_then(|g| g.escalation(matched)), flow) {
            (Some(mut e), Some(reason)) => {
                e.reasons.push(reason);
                e
            }
            (Some(e), None) => e,
            (None, Some(reason)) => match gate.and_then(EscalationGate::default_params) {
                Some(params) => Escalation::manual(reason, params.clone()),
                None => {
                    return Err(self.escalation_failed(
                        snap,
                        "a flow rule escalates but the policy's `escalation.defaults` name no \
                         approvers"
                            .into(),
                    ));
                }
            },
            (None, None) => {
                return Err(
                    self.escalation_failed(snap, "the matched rules gave no escalation".into())
                );
            }
        };
        Ok(Some(escalation))
    }

    /// The denial of a call that needs a human but cannot be put before one.
    pub(super) fn escalation_failed(&self, snap: &Snapshot, why: String) -> Denial {
        Denial::new(
            DenyCode::EscalationFailed,
            self.rules.escalation.clone(),
            format!("the call needs a human decision but could not be queued: {why}"),
        )
        .with_version(snap.version())
    }

    /// Submits `escalation` for the call to the queue and records the escalation
    /// (`Verdict::Escalate`), or denies the call if that fails.
    pub(super) fn submit<'a>(
        &self,
        snap: &Snapshot,
        run: &Run,
        call: &ToolCall<'_>,
        admitted: Admitted,
        escalation: Escalation,
        mode: Mode,
    ) -> Verdict<'a> {
        let boundary = &*snap.boundary;
        let version = boundary.version();
        let fail = |why: String| {
            let d = self.escalation_failed(snap, why);
            self.deny(run, call, d, boundary, mode)
        };
        let Some(esc) = &self.escalation else {
            return fail("the policy escalates but this guard has no approval queue".into());
        };
        // The arguments as approvers see them and the store keeps them: secret values redacted.
        // The grant binds the arguments as proposed: their exact canonical form, hashed under
        // the queue's key (a plain digest would let anyone who reads the request, a ticket or a
        // refusal test guesses of the redacted values). Arguments a parsed value cannot show
        // exactly (a number beyond f64 precision), or nested deeper than any record can hold,
        // are refused here, before anything is queued or stored. The request also records the
        // run's agent, trigger and compartment: only a run with the same ones may consume it.
        let (mut shown, hash) = match esc.queue.exact_args(call.args()) {
            Ok(x) => x,
            Err(e) => return fail(format!("unusable arguments: {e}")),
        };
        boundary.marks_of(admitted).redact_secrets(&mut shown);
        let sub = Submission::for_run(
            run.id.clone(),
            &run.ctx,
            call.tool(),
            shown,
            escalation,
            version,
        )
        .args_hash(hash);
        let request = match esc.queue.submit(sub) {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        let recorded = self.record_decision(
            run,
            call,
            Decision::Escalate(&request),
            version,
            || Some(boundary.marks_of(admitted)),
            mode,
            None,
            false,
        );
        match recorded {
            Ok(()) => Verdict::Escalate(Box::new(request)),
            Err(e) => Verdict::Deny(self.audit_denial(e, version)),
        }
    }

    /// Consumes the approval `ticket` for this exact call (once, ever) by this run: same run
    /// id, agent, trigger and compartment as the request recorded. `None`: consumed, the call
    /// may proceed; `Some` the (unrecorded) denial otherwise.
    pub(super) fn consume_grant(
        &self,
        run: &Run,
        call: &ToolCall<'_>,
        boundary: &ActionBoundary,
        ticket: &Ticket,
    ) -> Option<Denial> {
        let version = boundary.version();
        let refuse = |code: DenyCode, why: String| {
            Some(Denial::new(code, self.rules.escalation.clone(), why).with_version(version))
        };
        let Some(esc) = &self.escalation else {
            return refuse(
                DenyCode::ApprovalInvalid,
                "this guard has no approval queue".into(),
            );
        };
        match esc
            .queue
            .consume_ticket(ticket, &run.id, &run.ctx, call.tool(), call.args())
        {
            Ok(_grant) => None,
            Err(e) => refuse(
                approval_code(&e),
                format!("the approval does not authorise this call: {e}"),
            ),
        }
    }
}

/// The deny code for a refused consumption.
fn approval_code(e: &QueueError) -> DenyCode {
    match e {
        QueueError::GrantExpired { .. } | QueueError::Expired { .. } => DenyCode::ApprovalTimedOut,
        _ => DenyCode::ApprovalInvalid,
    }
}

impl Guard {
    /// The approval queue escalated calls wait in (for approvers' decisions, `tick`, `pending`),
    /// if the guard has an escalation stage.
    pub fn approvals(&self) -> Option<&Arc<ApprovalQueue>> {
        self.shared.escalation.as_ref().map(|e| &e.queue)
    }

    /// Resumes an escalated call once its request is approved: runs the whole pipeline again
    /// (kill switch, breaker, boundary, budgets: the policy may have changed meanwhile), but
    /// instead of the escalation gate it consumes the approval, which succeeds once, ever, and
    /// only for the same tool and arguments in a run with the same id, agent, trigger and
    /// compartment as the run that raised it. A framework that checkpoints its state keeps
    /// the [`Ticket`] (it is serialisable) and calls this after a restart, from a run started
    /// with the same id and context ([`Guard::start_run_with_id`]).
    ///
    /// Denied with [`DenyCode::ApprovalInvalid`] when the ticket is for another run id, agent,
    /// trigger, compartment, tool or arguments, not yet approved, denied, already used or
    /// unknown, and with
    /// [`DenyCode::ApprovalTimedOut`] when the request or its grant expired.
    pub fn resume<'a>(&self, run: &'a Run, call: &ToolCall<'a>, ticket: &Ticket) -> Verdict<'a> {
        self.decide(run, call, Some(ticket))
    }

    /// [`check`](Self::check), and if the call is escalated, waits for the decision and then
    /// [`resume`](Self::resume)s it: `Allow` once approved, `Deny` when denied
    /// ([`DenyCode::ApprovalDenied`]) or timed out ([`DenyCode::ApprovalTimedOut`]), and `Deny`
    /// ([`DenyCode::Suspended`]) as soon as the kill switch is thrown for the run, its agent or
    /// everything while it waits. Works on any executor and is cancellation-safe (dropping it
    /// leaves the request pending, resumable with its ticket). Timeouts need something calling
    /// the queue's `tick` (see
    /// [`spawn_approval_ticker`](Self::spawn_approval_ticker)).
    pub async fn check_and_wait<'a>(&self, run: &'a Run, call: &ToolCall<'a>) -> Verdict<'a> {
        let request = match self.check(run, call) {
            Verdict::Escalate(r) => r,
            other => return other,
        };
        self.wait_and_resume(run, call, &request).await
    }

    /// Waits for `request` (returned by [`check`](Self::check) for `call`) to be decided, then
    /// resumes or denies `call` as [`check_and_wait`](Self::check_and_wait) does.
    pub async fn wait_and_resume<'a>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        request: &ApprovalRequest,
    ) -> Verdict<'a> {
        if !Arc::ptr_eq(&run.shared, &self.shared) {
            // The pipeline denies a foreign run without recording it in this guard's trail.
            return self.resume(run, call, &request.ticket());
        }
        let shared = &*self.shared;
        let Some(esc) = &shared.escalation else {
            return self.after_wait(run, call, request, None);
        };
        // The kill switch wakes every waiter; it is re-checked after each wake-up (the waker is
        // registered first, so a switch thrown in between is not missed).
        let mut wait = std::pin::pin!(esc.queue.wait(&request.id));
        let waited = std::future::poll_fn(|cx| match wait.as_mut().poll(cx) {
            std::task::Poll::Ready(r) => std::task::Poll::Ready(Ok(r)),
            std::task::Poll::Pending => match shared.suspended(run) {
                Some(scope) => std::task::Poll::Ready(Err(scope)),
                None => std::task::Poll::Pending,
            },
        })
        .await;
        match waited {
            Ok(r) => self.after_wait(run, call, request, Some(r)),
            Err(scope) => self.suspended_while_waiting(run, call, request, scope),
        }
    }

    /// The (recorded) denial of a call whose run the kill switch suspended while it waited for
    /// `request`.
    pub(super) fn suspended_while_waiting<'a>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        request: &ApprovalRequest,
        scope: &str,
    ) -> Verdict<'a> {
        let shared = &*self.shared;
        let snap = shared.policy.load_full();
        // As `decide` resolves it: a live demotion counts.
        let (mode, _) = snap.call_mode(&run.ctx, call.tool());
        let d = Denial::new(
            DenyCode::Suspended,
            shared.rules.kill.clone(),
            format!(
                "suspended by the kill switch ({scope}) while waiting for approval {}",
                request.id
            ),
        )
        .with_version(snap.version());
        shared.deny(run, call, d, &snap.boundary, mode)
    }

    /// What a finished wait for `request` means for `call`: resumed once approved, denied
    /// otherwise (`waited` is `None` when the guard has no approval queue). Shared by the async
    /// and the blocking waits.
    pub(super) fn after_wait<'a>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        request: &ApprovalRequest,
        waited: Option<Result<Resolution, QueueError>>,
    ) -> Verdict<'a> {
        let shared = &*self.shared;
        let snap = shared.policy.load_full();
        // As `decide` resolves it: a live demotion counts.
        let (mode, _) = snap.call_mode(&run.ctx, call.tool());
        let deny = |code: DenyCode, why: String| {
            let d = Denial::new(code, shared.rules.escalation.clone(), why)
                .with_version(snap.version());
            shared.deny(run, call, d, &snap.boundary, mode)
        };
        let Some(waited) = waited else {
            return deny(
                DenyCode::ApprovalInvalid,
                "this guard has no approval queue".into(),
            );
        };
        match waited {
            Ok(r) if r.is_approved() => {
                let edit = shared
                    .escalation
                    .as_ref()
                    .and_then(|esc| edited(&esc.queue, request));
                match edit {
                    Some(why) => deny(DenyCode::ApprovalEdited, why),
                    None => self.resume(run, call, &request.ticket()),
                }
            }
            Ok(Resolution::Denied {
                by: Some(by),
                reason,
            }) => deny(
                DenyCode::ApprovalDenied,
                format!(
                    "denied by {by}: {}",
                    reason.as_deref().unwrap_or("(no reason given)")
                ),
            ),
            Ok(Resolution::Denied {
                by: None,
                reason: Some(reason),
            }) => deny(DenyCode::ApprovalInvalid, reason),
            Ok(_) => deny(
                DenyCode::ApprovalTimedOut,
                "nobody decided before the deadline".into(),
            ),
            Err(e) => deny(approval_code(&e), e.to_string()),
        }
    }

    /// Starts a thread that calls the approval queue's `tick` every `interval`, so deadlines and
    /// chain moves happen on time and waiting callers wake. Stops when the handle is dropped.
    /// `None` if the guard has no escalation stage.
    pub fn spawn_approval_ticker(&self, interval: Duration) -> Option<ApprovalTicker> {
        let queue = self.approvals()?.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tollgate-approvals".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    // A failing tick (store or audit refused) leaves the transition undone; the
                    // next tick retries it.
                    let _ = queue.tick();
                    std::thread::park_timeout(interval);
                }
            })
            .ok()?;
        Some(ApprovalTicker {
            stop,
            thread: Some(thread),
        })
    }
}

/// Why the call as proposed in `request` must not run when its approval is for edited
/// arguments (`None` when it was approved as proposed, or the queue cannot say: then resuming
/// checks the arguments against the grant and refuses a mismatch anyway).
pub(super) fn edited(queue: &ApprovalQueue, request: &ApprovalRequest) -> Option<String> {
    let now = queue.status(&request.id).ok()?;
    (now.request.args_hash != request.args_hash).then(|| {
        let by = now
            .votes
            .iter()
            .rev()
            .find(|v| v.edited)
            .map_or("an approver", |v| v.approver.id.as_str());
        format!(
            "{by} approved the call with edited arguments; the call as proposed does not run \
             (resume the edited call with request {}'s ticket)",
            request.id
        )
    })
}

/// Stops the ticker thread of [`Guard::spawn_approval_ticker`] when dropped.
#[derive(Debug)]
pub struct ApprovalTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for ApprovalTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
