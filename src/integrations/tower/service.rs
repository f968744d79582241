//! [`GuardService`]: checks each request, then calls the inner service under its permit.

use std::fmt;
use std::task::{Context, Poll};

use tower::Service;

use super::error::GuardedError;
use super::future::{Refused, ResponseFuture};
use super::request::{ToolOutput, ToolRequest};
use crate::call::ToolCall;
use crate::guard::Guard;
use crate::verdict::Verdict;

/// A service guarded by a [`GuardLayer`](super::GuardLayer): every request is checked first and
/// reaches the inner service only when allowed. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    guard: Guard,
    inner: S,
}

impl<S> GuardService<S> {
    /// Guards `inner` with `guard`.
    pub fn new(guard: Guard, inner: S) -> Self {
        Self { guard, inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for GuardService<S>
where
    S: Service<R>,
    S::Response: ToolOutput,
    S::Error: fmt::Display,
    R: ToolRequest,
{
    type Response = S::Response;
    type Error = GuardedError<S::Error>;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(GuardedError::Service)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let verdict = {
            let run = req.run();
            let mut call = ToolCall::new(req.tool_name(), req.arguments());
            if let Some(id) = req.call_id() {
                call = call.with_call_id(id);
            }
            // Detached at once: the permit then borrows neither the request nor its run, so
            // the request can move into the inner service.
            match self.guard.check(run, &call) {
                Verdict::Allow(permit) => Ok(permit.detach()),
                Verdict::Deny(d) => Err(Refused::Denied(d)),
                Verdict::Escalate(r) => Err(Refused::Escalated(r)),
            }
        };
        match verdict {
            Ok(permit) => ResponseFuture::running(self.inner.call(req), permit),
            Err(why) => ResponseFuture::refused(why),
        }
    }
}
