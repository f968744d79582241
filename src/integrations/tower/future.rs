//! [`ResponseFuture`]: the inner service's future, completing the call's permit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::error::GuardedError;
use super::request::ToolOutput;
use crate::guard::{Delivery, DetachedPermit};
use crate::verdict::{ApprovalRequest, Denial, Outcome};

/// Why the guard did not let a call through (the part of [`GuardedError`] without the inner
/// service's error type).
#[derive(Debug)]
pub(super) enum Refused {
    Denied(Denial),
    Escalated(Box<ApprovalRequest>),
}

impl Refused {
    fn into_error<E>(self) -> GuardedError<E> {
        match self {
            Refused::Denied(d) => GuardedError::Denied(d),
            Refused::Escalated(r) => GuardedError::Escalated(r),
        }
    }
}

pin_project! {
    /// The future of a [`GuardService`](super::GuardService) call: either the guard's refusal,
    /// ready at once, or the inner service's future with the call's permit, which it completes
    /// from the response. Dropped early, the permit records an abandoned outcome.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        permit: Option<DetachedPermit>,
        refused: Option<Refused>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("permit", &self.permit)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn running(inner: F, permit: DetachedPermit) -> Self {
        Self {
            inner: Some(inner),
            permit: Some(permit),
            refused: None,
        }
    }

    pub(super) fn refused(why: Refused) -> Self {
        Self {
            inner: None,
            permit: None,
            refused: Some(why),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: ToolOutput,
    E: fmt::Display,
{
    type Output = Result<T, GuardedError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(match this.refused.take() {
                Some(why) => why.into_error(),
                // Polled again after completion: nothing can be handed out twice.
                None => GuardedError::Polled,
            }));
        };
        let result = std::task::ready!(inner.poll(cx));
        let Some(permit) = this.permit.take() else {
            return Poll::Ready(Err(GuardedError::Polled));
        };
        Poll::Ready(finish(permit, result))
    }
}

/// Completes the permit from the inner service's result; a quarantined output is withheld.
fn finish<T: ToolOutput, E: fmt::Display>(
    permit: DetachedPermit,
    result: Result<T, E>,
) -> Result<T, GuardedError<E>> {
    match result {
        Ok(response) => {
            let delivery = match response.tool_output() {
                Some(output) => match permit.deliver(output) {
                    Ok(d) => d,
                    Err(e) => {
                        // Fail closed: an output the flow index could not record is not handed
                        // out; the outcome still is.
                        let _ = permit.complete(Outcome::error(format!(
                            "the output could not be recorded: {e}"
                        )));
                        return Err(GuardedError::Audit(e));
                    }
                },
                None => Delivery::Show,
            };
            permit
                .complete(Outcome::success())
                .map_err(GuardedError::Audit)?;
            match delivery {
                Delivery::Show => Ok(response),
                Delivery::Withhold(placeholder) => Err(GuardedError::Withheld { placeholder }),
            }
        }
        Err(e) => {
            permit
                .complete(Outcome::error(e.to_string()))
                .map_err(GuardedError::Audit)?;
            Err(GuardedError::Service(e))
        }
    }
}
