//! Blocking waits for synchronous callers: [`ApprovalQueue::wait_blocking`].
//!
//! No runtime is involved: the waiting thread polls the same future [`ApprovalQueue::wait`]
//! returns, with a waker that unparks it, and parks between polls. The queue wakes it exactly
//! as it wakes an async waiter (from `decide`, `tick` or `consume`, after releasing its lock),
//! so a decision taken on another thread ends the wait at once, without polling. Parks are
//! bounded by the caller's timeout and by the request's own deadline, so a blocking waiter sees
//! its request time out even when nothing calls [`tick`](ApprovalQueue::tick) (with a clock
//! that advances by itself).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::ApprovalQueue;
use crate::escalation::error::QueueError;
use crate::escalation::request::{ApprovalId, Resolution};
use crate::escalation::wait::Wait;

/// Unparks the waiting thread.
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// How a blocking wait ended.
pub(crate) enum Blocked<S> {
    /// The request was resolved (or the queue refused: unknown id, poisoned, audit refused).
    Done(Result<Resolution, QueueError>),
    /// `stop` asked to stop, with its reason.
    Stopped(S),
    /// The caller's timeout passed first; the request is still pending.
    TimedOut,
}

impl ApprovalQueue {
    /// Blocks the calling thread until request `id` is resolved (approved, denied or timed
    /// out), or until `timeout` has passed: `Ok(None)` then, and the request is still pending
    /// (wait again, or resume later with its ticket). `Duration::MAX` waits without a bound of
    /// its own.
    ///
    /// The synchronous form of [`wait`](Self::wait), for callers without an executor: no
    /// runtime, no hand-written `block_on`. A decision taken on another thread wakes it at once.
    /// `timeout` bounds how long *this thread* blocks and is measured on the operating system's
    /// monotonic clock; the request's own deadline runs on the queue's clock, and the wait ends
    /// with the timed-out resolution when it passes (applied by [`tick`](Self::tick), or by
    /// this wait itself when it wakes after the deadline).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use serde_json::json;
    /// use tollgate::clock::ManualClock;
    /// use tollgate::escalation::*;
    ///
    /// let groups = ApproverGroups::new().with("ops", ["olga"]);
    /// let queue = Arc::new(ApprovalQueue::open(
    ///     Arc::new(MemoryApprovalStore::new()),
    ///     Arc::new(ManualClock::new()),
    ///     QueueConfig::with_groups(groups),
    /// )?);
    /// let esc = Escalation::manual(
    ///     Reason::new("manual", "please check"),
    ///     ApprovalParams::new(Duration::from_secs(600), [Level::new("ops", Duration::ZERO)]),
    /// );
    /// let version = EscalationGate::none().version();
    /// let sub = Submission::new("run-1", "bot", "restart_db", json!({}), esc, version);
    /// let req = queue.submit(sub)?;
    ///
    /// // Nobody decides within 10 ms: the wait gives up, the request stays pending.
    /// assert_eq!(queue.wait_blocking(&req.id, Duration::from_millis(10))?, None);
    ///
    /// // An approver on another thread decides; the waiting thread wakes at once.
    /// let (q, id) = (queue.clone(), req.id.clone());
    /// let approver = std::thread::spawn(move || {
    ///     q.decide(&id, &Approver::new("olga"), Decision::Approve, "ok").map(|_| ())
    /// });
    /// let resolution = queue.wait_blocking(&req.id, Duration::from_secs(60))?;
    /// approver.join().unwrap()?;
    /// assert!(resolution.is_some_and(|r| r.is_approved()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_blocking(
        &self,
        id: &ApprovalId,
        timeout: Duration,
    ) -> Result<Option<Resolution>, QueueError> {
        match self.block_on_wait(id, timeout, || None::<()>) {
            Blocked::Done(r) => r.map(Some),
            Blocked::Stopped(()) | Blocked::TimedOut => Ok(None),
        }
    }

    /// Wakes every waiter (async and blocking) without changing anything, so each re-checks
    /// its own conditions: the guard calls it when the kill switch is thrown, so that waits
    /// for approvals of suspended runs end at once.
    pub(crate) fn wake_waiters(&self) {
        let wakers: Vec<Waker> = {
            let inner = self.inner.lock();
            inner
                .waiters
                .values()
                .flat_map(|ws| ws.iter().map(|(_, w)| w.clone()))
                .collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// The time left before request `id`'s own deadline on the queue's clock (`None` when it
    /// is not pending or unknown).
    fn time_to_deadline(&self, id: &ApprovalId) -> Option<Duration> {
        let now = self.now().mono;
        let inner = self.inner.lock();
        let e = inner.entries.get(id)?;
        e.state.is_pending().then(|| e.deadline.duration_since(now))
    }

    /// The blocking wait: polls [`Wait`] on this thread, parking between polls, until the
    /// request is resolved, `stop` returns a reason (checked after every wake-up, with the
    /// waker already registered, so a condition raised together with
    /// [`wake_waiters`](Self::wake_waiters) is never missed), or `timeout` passes.
    pub(crate) fn block_on_wait<S>(
        &self,
        id: &ApprovalId,
        timeout: Duration,
        mut stop: impl FnMut() -> Option<S>,
    ) -> Blocked<S> {
        let until = Instant::now().checked_add(timeout);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut wait = Wait::new(self, id.clone());
        loop {
            if let Poll::Ready(r) = Pin::new(&mut wait).poll(&mut cx) {
                return Blocked::Done(r);
            }
            if let Some(s) = stop() {
                return Blocked::Stopped(s);
            }
            let left = match until {
                Some(until) => match until.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Blocked::TimedOut,
                },
                None => None,
            };
            // Wake up by the request's own deadline too: the next poll applies it. A deadline
            // already reached (on a clock that does not advance by itself) is left to `tick`.
            let deadline = self.time_to_deadline(id).filter(|d| !d.is_zero());
            match left.into_iter().chain(deadline).min() {
                Some(d) => std::thread::park_timeout(d),
                None => std::thread::park(),
            }
        }
    }
}
