//! [`GuardedError`]: why a guarded service did not return the inner service's response.

use crate::audit::AuditError;
use crate::verdict::{ApprovalRequest, Denial};

/// The error of a [`GuardService`](super::GuardService): the guard's refusal, or the inner
/// service's own error `E`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardedError<E> {
    /// The guard denied the call; the inner service never saw it. Tell the model
    /// [`Denial::agent_message`], not the reason.
    #[error("{0}")]
    Denied(Denial),
    /// A human must decide first; the inner service never saw the call. Resume it with the
    /// request's [`ticket`](ApprovalRequest::ticket) once approved.
    #[error("the call waits for human approval (request {})", .0.id)]
    Escalated(Box<ApprovalRequest>),
    /// The tool ran, but a flow rule quarantined the call: its output must not reach the model,
    /// which gets this placeholder instead.
    #[error("the output was withheld: {placeholder}")]
    Withheld {
        /// What to show the model instead of the output.
        placeholder: String,
    },
    /// The inner service failed (`poll_ready` or the call itself); a failed call is recorded
    /// as an error outcome.
    #[error("tool service failed: {0}")]
    Service(E),
    /// The tool ran (its side effects happened) but its outcome or output could not be
    /// recorded; the response is not handed out (fail closed).
    #[error("the tool ran but its outcome could not be recorded: {0}")]
    Audit(AuditError),
    /// The response future was polled again after it completed.
    #[error("the guarded call's future was polled after it completed")]
    Polled,
}

impl<E> GuardedError<E> {
    /// The denial, if the guard denied the call.
    pub fn denial(&self) -> Option<&Denial> {
        match self {
            GuardedError::Denied(d) => Some(d),
            _ => None,
        }
    }

    /// The approval request, if the call was escalated.
    pub fn approval(&self) -> Option<&ApprovalRequest> {
        match self {
            GuardedError::Escalated(r) => Some(r),
            _ => None,
        }
    }
}
