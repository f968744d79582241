//! A forwarded call the gateway gives up on before the server answered it (the call timeout
//! passed, the kill switch stopped the run, the client cancelled its request or its session
//! ended, or the call's future was dropped from outside). The server is told with
//! `notifications/cancelled` (`params: { requestId, reason }`), as MCP's cancellation utility
//! says the side that abandons a request should: it may stop the tool (and its side effects)
//! instead of running it to its end for nobody.
//!
//! Both ways a call reaches a server ([`Relay::call`](super::relay::Relay::call) over stdio,
//! rmcp's client over streamable HTTP) send it from a drop guard armed once the request was sent
//! and disarmed by its answer: exactly once for an abandoned call, never for an answered one, and
//! never for a request that was not sent. The caller says why through an [`Abandon`] before it
//! drops the call. The send runs on a task of its own, counted among its session's calls in
//! flight (see [`Session::ended`](super::session::Session::ended)): a stdio session that ends
//! waits for it, so `tollgate mcp` does not close its servers before they were told.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::cancel::Cause;

/// The reason sent when the caller set none (its future was dropped from outside).
const DROPPED: &str =
    "tollgate: the call was abandoned (the client went away or the gateway is closing)";

/// Why a forwarded call is abandoned: set by the caller before it drops the call, sent as the
/// `reason` of the server's `notifications/cancelled`. Allocates nothing unless set.
#[derive(Debug)]
pub(crate) struct Abandon<'a> {
    reason: OnceLock<String>,
    /// The calls in flight of the call's session, which its notification is counted among.
    calls: &'a TaskTracker,
}

impl<'a> Abandon<'a> {
    /// A call of the session whose calls in flight `calls` counts.
    pub(crate) fn new(calls: &'a TaskTracker) -> Self {
        Self {
            reason: OnceLock::new(),
            calls,
        }
    }

    /// The call timeout passed.
    pub(crate) fn timed_out(&self, timeout: Duration) {
        let _ = self.reason.set(format!(
            "tollgate: no answer within the call timeout ({timeout:?})"
        ));
    }

    /// The kill switch stopped the run.
    pub(crate) fn killed(&self) {
        let _ = self
            .reason
            .set("tollgate: the kill switch stopped the run".to_owned());
    }

    /// The client cancelled its request (its own `notifications/cancelled`), or its session
    /// ended: `cause` says which.
    pub(crate) fn stopped(&self, cause: Cause) {
        let _ = self.reason.set(cause.abandon_reason().to_owned());
    }

    /// The reason to send (the first one set, or a generic one).
    pub(crate) fn reason(&self) -> String {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| DROPPED.to_owned())
    }

    /// Runs `send` on the current tokio runtime, from a drop guard (which cannot await),
    /// counted among the session's calls in flight until it is done. Outside a runtime (a drop
    /// during its shutdown) nothing is sent: the server's pipe or session is being closed with
    /// it.
    pub(crate) fn spawn_send(&self, send: impl Future<Output = ()> + Send + 'static) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            drop(rt.spawn(self.calls.track_future(send)));
        }
    }
}

/// Logs the outcome of sending `notifications/cancelled` for request `id` of `server` (both
/// downstream paths).
pub(crate) fn log_sent<E: std::fmt::Display>(
    server: &str,
    id: impl std::fmt::Display,
    reason: &str,
    sent: Result<(), E>,
) {
    match sent {
        Ok(()) => {
            tracing::info!(target: "tollgate::mcp", server = %server, request_id = %id, reason = %reason, "abandoned call: notifications/cancelled sent to the server");
        }
        Err(e) => {
            tracing::debug!(target: "tollgate::mcp", server = %server, request_id = %id, error = %e, "abandoned call: notifications/cancelled could not be sent");
        }
    }
}
