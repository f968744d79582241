//! Waiting for approvals from synchronous code: [`Guard::check_and_wait_blocking`] and
//! [`Guard::wait_and_resume_blocking`], the blocking forms of
//! [`check_and_wait`](Guard::check_and_wait) and [`wait_and_resume`](Guard::wait_and_resume).
//!
//! The waiting thread parks on the approval queue's own wake-ups (see
//! [`ApprovalQueue::wait_blocking`](crate::escalation::ApprovalQueue::wait_blocking)); no
//! runtime is involved. The kill switch wakes every waiter too, so a suspension thrown while a
//! thread waits for a human ends the wait at once with a
//! [`DenyCode::Suspended`](crate::DenyCode::Suspended) denial.

use std::sync::Arc;
use std::time::Duration;

use super::Guard;
use super::run::Run;
use super::shared::Shared;
use crate::call::ToolCall;
use crate::escalation::{ApprovalRequest, Blocked};
use crate::verdict::Verdict;

impl Shared {
    /// Wakes every thread or task waiting for an approval, so waits of runs the kill switch
    /// now holds end at once (called by the kill switch after setting its flag).
    pub(super) fn wake_approval_waiters(&self) {
        if let Some(esc) = &self.escalation {
            esc.queue.wake_waiters();
        }
    }
}

impl Guard {
    /// [`check`](Self::check), and if the call is escalated, blocks the calling thread until
    /// the request is decided and then [`resume`](Self::resume)s it: `Allow` once approved,
    /// `Deny` when denied ([`DenyCode::ApprovalDenied`](crate::DenyCode::ApprovalDenied)) or
    /// timed out ([`DenyCode::ApprovalTimedOut`](crate::DenyCode::ApprovalTimedOut)), and
    /// `Deny` ([`DenyCode::Suspended`](crate::DenyCode::Suspended)) as soon as the kill switch
    /// is thrown for the run, its agent or everything while it waits.
    ///
    /// `timeout` bounds how long this thread blocks (on the operating system's monotonic
    /// clock; `Duration::MAX` for no bound of its own). When it passes first, the verdict is
    /// the [`Verdict::Escalate`] itself: the request is still pending, and the call can be
    /// resumed later with its [`ticket`](ApprovalRequest::ticket) or waited for again with
    /// [`wait_and_resume_blocking`](Self::wait_and_resume_blocking). The request's own deadline
    /// (the policy's approval timeout) ends the wait with a denial when it passes.
    ///
    /// For synchronous callers: no executor, no hand-written `block_on`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use serde_json::json;
    /// use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
    /// use tollgate::escalation::{
    ///     ApprovalQueue, Approver, Decision, EscalationGate, EscalationPolicy,
    ///     MemoryApprovalStore, QueueConfig,
    /// };
    /// use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};
    ///
    /// let boundary = ActionBoundary::builder()
    ///     .tool("restart_db", ToolSpec::irreversible().allow_unknown_args())
    ///     .role("ops", RoleSpec::new().tools(["restart_db"]))
    ///     .build()?;
    /// let policy = EscalationPolicy::from_json(r#"{
    ///     "groups": { "dba": ["olga"] },
    ///     "defaults": { "timeout": "10m", "chain": [ { "group": "dba" } ] },
    ///     "rules": [ { "id": "irreversible", "when": { "effect_at_least": "irreversible" } } ]
    /// }"#)?;
    /// let gate = EscalationGate::for_boundary(policy, &boundary)?;
    /// let queue = ApprovalQueue::open(
    ///     Arc::new(MemoryApprovalStore::new()),
    ///     Arc::new(tollgate::clock::SystemClock::new()),
    ///     QueueConfig::for_gate(&gate),
    /// )?;
    /// let guard = Guard::builder(boundary).escalation(gate, queue).build()?;
    ///
    /// // Olga approves from her own thread (a chat bot, a dashboard) as soon as she is asked.
    /// let approvals = guard.approvals().unwrap().clone();
    /// let olga = std::thread::spawn(move || loop {
    ///     if let Some(r) = approvals.pending().unwrap().first() {
    ///         approvals.decide(&r.id, &Approver::new("olga"), Decision::Approve, "ok").unwrap();
    ///         break;
    ///     }
    ///     std::thread::sleep(Duration::from_millis(1));
    /// });
    ///
    /// let run = guard.start_run(RunContext::new("ops-bot", "ops"))?;
    /// let call = ToolCall::new("restart_db", r#"{"db": "orders"}"#);
    /// match guard.check_and_wait_blocking(&run, &call, Duration::from_secs(60)) {
    ///     Verdict::Allow(permit) => permit.complete(Outcome::success())?,
    ///     Verdict::Escalate(still_pending) => println!("ask again later: {}", still_pending.id),
    ///     Verdict::Deny(denial) => println!("{}", denial.agent_message()),
    /// }
    /// olga.join().unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_and_wait_blocking<'a>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        timeout: Duration,
    ) -> Verdict<'a> {
        let request = match self.check(run, call) {
            Verdict::Escalate(r) => r,
            other => return other,
        };
        self.wait_and_resume_blocking(run, call, &request, timeout)
    }

    /// Blocks until `request` (returned by [`check`](Self::check) for `call`, possibly in an
    /// earlier process: see [`resume`](Self::resume)) is decided, then resumes or denies `call`
    /// as [`check_and_wait_blocking`](Self::check_and_wait_blocking) does, with the same
    /// `timeout` and kill-switch behaviour.
    pub fn wait_and_resume_blocking<'a>(
        &self,
        run: &'a Run,
        call: &ToolCall<'a>,
        request: &ApprovalRequest,
        timeout: Duration,
    ) -> Verdict<'a> {
        if !Arc::ptr_eq(&run.shared, &self.shared) {
            // The pipeline denies a foreign run without recording it in this guard's trail.
            return self.resume(run, call, &request.ticket());
        }
        let shared = &*self.shared;
        let Some(esc) = &shared.escalation else {
            return self.after_wait(run, call, request, None);
        };
        // The kill switch is re-checked after every wake-up; throwing it wakes every waiter.
        match esc
            .queue
            .block_on_wait(&request.id, timeout, || shared.suspended(run))
        {
            Blocked::Done(r) => self.after_wait(run, call, request, Some(r)),
            Blocked::Stopped(scope) => self.suspended_while_waiting(run, call, request, scope),
            Blocked::TimedOut => Verdict::Escalate(Box::new(request.clone())),
        }
    }
}
