//! Why a call was stopped before it was answered: its client cancelled it, or the client's
//! session ended. The audit record says which, so the gateway must know.
//!
//! On rmcp's typed path a handler gets one token, `RequestContext::ct`, and rmcp cancels it in
//! two cases: the client's `notifications/cancelled` naming the request, and the session ending
//! with the handler still running (the client closed stdin or its HTTP session, or the gateway
//! shut down; after rmcp's drain of the answers). The token alone does not say which. So each
//! session also keeps, for every typed-path request in flight, a token of its own that only the
//! client's `notifications/cancelled` cancels: [`ClientCancels`], fed by the session's
//! `ServerHandler::on_cancelled`.
//!
//! rmcp cancels `ct` first and only then spawns the task that runs `on_cancelled`, so a call
//! that sees `ct` fire waits a short bounded grace ([`CLIENT_CANCEL_GRACE`]) for its client
//! token before it takes the stop for the session's end ([`Stop::cause`]). A client's
//! cancellation is seen within a task switch; only a session's end waits the grace out, and
//! nobody is waiting for that call's answer any more. (Deciding the other way round, from a
//! "session ended" signal, would race the same way: rmcp cancels the handlers before its serve
//! loop returns, and for HTTP sessions that loop is rmcp's, not the gateway's.)
//!
//! On the stdio fast path both tokens are the gateway's own ([`Stop::fast`]): the call's, which
//! only the client's cancellation cancels, and its session's, cancelled when the client's input
//! ends. The call watches both, and whichever fired says why at once: no grace. (One token per
//! call made a child of the session's would stop it the same way, but not say why: a call the
//! client cancelled just before it closed its input would be recorded as the session's end.)

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use rmcp::model::RequestId;
use tokio_util::sync::CancellationToken;

/// How long a call whose rmcp token fired waits for the client's own cancellation to be seen
/// before it records the stop as the client's session ending. rmcp cancels the token, then
/// spawns the `on_cancelled` hook that marks the client's cancellation: the two are a task
/// switch apart (microseconds), far inside this bound. Only a session's end waits it out in
/// full (its calls are abandoned downstream this much later).
pub(crate) const CLIENT_CANCEL_GRACE: Duration = Duration::from_millis(100);

/// How many cancellations naming no call in flight are remembered (see
/// [`ClientCancels::cancel`]).
const UNMATCHED_KEPT: usize = 64;

/// Why a call was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The client cancelled the request (its own `notifications/cancelled`).
    Client,
    /// The client's session ended (its connection closed, or the gateway shut down) with the
    /// call in flight.
    SessionEnded,
}

impl Cause {
    /// The audit outcome's message (distinct from the call timeout's and the kill switch's).
    pub(crate) fn outcome(self) -> &'static str {
        match self {
            Cause::Client => "cancelled: the client cancelled the call",
            Cause::SessionEnded => "cancelled: the client's session ended",
        }
    }

    /// The `reason` of the `notifications/cancelled` the downstream server is sent.
    pub(crate) fn abandon_reason(self) -> &'static str {
        match self {
            Cause::Client => "tollgate: the client cancelled the call",
            Cause::SessionEnded => "tollgate: the client's session ended",
        }
    }
}

/// What stops one call, and how to tell why it stopped.
pub(crate) struct Stop<'a> {
    /// Cancelled when the call must stop (on the fast path: when its client cancels it).
    token: &'a CancellationToken,
    by: By<'a>,
}

/// Which path's call a [`Stop`] stops.
enum By<'a> {
    /// rmcp's typed path: `token` is rmcp's `ct` (the client's cancellation or the session's
    /// end); `client` is cancelled in the first case only.
    Rmcp { client: &'a CancellationToken },
    /// The stdio fast path: `token` is cancelled by the client only, `ended` when its session
    /// ends; either stops the call.
    Fast { ended: &'a CancellationToken },
}

impl<'a> Stop<'a> {
    /// A fast-path call: stopped by its client's cancellation (`client`) or by the end of its
    /// session (`ended`).
    pub(crate) fn fast(client: &'a CancellationToken, ended: &'a CancellationToken) -> Self {
        Self {
            token: client,
            by: By::Fast { ended },
        }
    }

    /// A typed-path call: rmcp's `ct` stops it (the client's cancellation or the session's
    /// end); `client` says whether the client cancelled it.
    pub(crate) fn by_rmcp(ct: &'a CancellationToken, client: &'a CancellationToken) -> Self {
        Self {
            token: ct,
            by: By::Rmcp { client },
        }
    }

    /// Whether the call was stopped.
    pub(crate) fn is_stopped(&self) -> bool {
        self.token.is_cancelled() || matches!(self.by, By::Fast { ended } if ended.is_cancelled())
    }

    /// Completes once the call is stopped.
    pub(crate) async fn stopped(&self) {
        match self.by {
            By::Rmcp { .. } => self.token.cancelled().await,
            By::Fast { ended } => {
                tokio::select! {
                    () = self.token.cancelled() => {}
                    () = ended.cancelled() => {}
                }
            }
        }
    }

    /// Why a stopped call was stopped. Typed path: the client cancelled it if its token says so
    /// now or within [`CLIENT_CANCEL_GRACE`], else its session ended. Fast path: the client
    /// cancelled it if its own token fired (the client's cancellations are read before its
    /// input's end, so one that came first is never taken for the session's end), else its
    /// session ended.
    pub(crate) async fn cause(&self) -> Cause {
        match self.by {
            By::Fast { .. } if self.token.is_cancelled() => Cause::Client,
            By::Fast { .. } => Cause::SessionEnded,
            By::Rmcp { client } => {
                match tokio::time::timeout(CLIENT_CANCEL_GRACE, client.cancelled()).await {
                    Ok(()) => Cause::Client,
                    Err(_) => Cause::SessionEnded,
                }
            }
        }
    }
}

/// A session's typed-path calls in flight by request id, each with the token that says its
/// client cancelled it.
#[derive(Debug, Default)]
pub(crate) struct ClientCancels {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The latest call under each id (a client reusing an id still in flight breaks MCP's rule;
    /// rmcp then cancels the later call only, and so does this), with its sequence number.
    calls: HashMap<RequestId, (u64, CancellationToken)>,
    next: u64,
    /// Ids cancelled while no call under them was in flight, the latest last, at most
    /// [`UNMATCHED_KEPT`]: a cancellation that rmcp saw after it started the request's handler
    /// but that `on_cancelled` ran before the handler registered the call.
    unmatched: VecDeque<RequestId>,
}

impl ClientCancels {
    /// Registers the call `id` until the returned watch is dropped.
    pub(crate) fn watch(&self, id: RequestId) -> Watch<'_> {
        let token = CancellationToken::new();
        let mut inner = self.inner.lock();
        if let Some(i) = inner.unmatched.iter().position(|u| *u == id) {
            // Cancelled before it got here (MCP ids are not reused within a session).
            inner.unmatched.remove(i);
            token.cancel();
        }
        let seq = inner.next;
        inner.next += 1;
        inner.calls.insert(id.clone(), (seq, token.clone()));
        Watch {
            cancels: self,
            id,
            seq,
            token,
        }
    }

    /// The client cancelled the request `id`: marks the call in flight under it, if any (and
    /// forgets it, as rmcp does), or remembers the id for a call not registered yet.
    pub(crate) fn cancel(&self, id: &RequestId) {
        let mut inner = self.inner.lock();
        match inner.calls.remove(id) {
            Some((_, token)) => token.cancel(),
            None => {
                if inner.unmatched.len() == UNMATCHED_KEPT {
                    inner.unmatched.pop_front();
                }
                inner.unmatched.push_back(id.clone());
            }
        }
    }
}

/// One registered call: its client token, unregistered on drop.
pub(crate) struct Watch<'a> {
    cancels: &'a ClientCancels,
    id: RequestId,
    seq: u64,
    token: CancellationToken,
}

impl Watch<'_> {
    /// Cancelled when the client cancels this call.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut inner = self.cancels.inner.lock();
        if inner
            .calls
            .get(&self.id)
            .is_some_and(|(s, _)| *s == self.seq)
        {
            inner.calls.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> RequestId {
        RequestId::Number(n)
    }

    #[tokio::test]
    async fn the_cause_is_the_client_only_if_its_token_fires_within_the_grace() {
        let ct = CancellationToken::new();
        let cancels = ClientCancels::default();
        let w = cancels.watch(id(1));
        ct.cancel();
        assert_eq!(
            Stop::by_rmcp(&ct, w.token()).cause().await,
            Cause::SessionEnded
        );
        // The client's cancellation seen during the grace.
        let w2 = cancels.watch(id(2));
        let stop = Stop::by_rmcp(&ct, w2.token());
        let (cause, ()) = tokio::join!(stop.cause(), async {
            tokio::time::sleep(CLIENT_CANCEL_GRACE / 2).await;
            cancels.cancel(&id(2));
        });
        assert_eq!(cause, Cause::Client);
    }

    #[tokio::test]
    async fn a_fast_path_call_is_stopped_by_its_client_or_its_sessions_end_and_knows_which() {
        let (client, ended) = (CancellationToken::new(), CancellationToken::new());
        let stop = Stop::fast(&client, &ended);
        assert!(!stop.is_stopped());
        ended.cancel();
        assert!(stop.is_stopped());
        stop.stopped().await;
        // No grace: the answer is there at once.
        let cause = tokio::time::timeout(Duration::from_millis(1), stop.cause()).await;
        assert_eq!(cause, Ok(Cause::SessionEnded));
        // Cancelled by its client first, then the session ended: the client's doing.
        let (client, ended) = (CancellationToken::new(), CancellationToken::new());
        let stop = Stop::fast(&client, &ended);
        let (cause, ()) = tokio::join!(
            async {
                stop.stopped().await;
                stop.cause().await
            },
            async {
                tokio::task::yield_now().await;
                client.cancel();
                ended.cancel();
            }
        );
        assert_eq!(cause, Cause::Client);
    }

    #[test]
    fn a_cancellation_marks_the_latest_call_under_its_id_and_is_forgotten_with_it() {
        let cancels = ClientCancels::default();
        let first = cancels.watch(id(1));
        let second = cancels.watch(id(1));
        cancels.cancel(&id(1));
        assert!(second.token().is_cancelled());
        assert!(!first.token().is_cancelled());
        drop(first);
        drop(second);
        assert!(cancels.inner.lock().calls.is_empty());
        // A string id is not the number with the same text.
        let s = cancels.watch(RequestId::String("3".into()));
        let n = cancels.watch(id(3));
        cancels.cancel(&id(3));
        assert!(n.token().is_cancelled() && !s.token().is_cancelled());
    }

    #[test]
    fn a_cancellation_seen_before_its_call_registered_marks_it_and_unmatched_ones_are_bounded() {
        let cancels = ClientCancels::default();
        cancels.cancel(&id(5));
        assert!(cancels.watch(id(5)).token().is_cancelled());
        assert!(!cancels.watch(id(5)).token().is_cancelled(), "used once");
        for n in 0..(UNMATCHED_KEPT as i64 * 2) {
            cancels.cancel(&id(100 + n));
        }
        assert_eq!(cancels.inner.lock().unmatched.len(), UNMATCHED_KEPT);
    }
}
