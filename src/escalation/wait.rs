//! [`ApprovalQueue::wait`]: a future that any executor can drive, woken by the queue.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::error::QueueError;
use super::queue::ApprovalQueue;
use super::request::{ApprovalId, Resolution};

/// The future behind [`ApprovalQueue::wait`].
pub(super) struct Wait<'q> {
    queue: &'q ApprovalQueue,
    id: ApprovalId,
    token: Option<u64>,
}

impl<'q> Wait<'q> {
    pub(super) fn new(queue: &'q ApprovalQueue, id: ApprovalId) -> Self {
        Self {
            queue,
            id,
            token: None,
        }
    }
}

impl Future for Wait<'_> {
    type Output = Result<Resolution, QueueError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let queue = this.queue;
        let now = queue.now();
        let id = this.id.clone();
        let token = &mut this.token;
        let r = queue.with_inner(|inner, fx| {
            queue.settle(inner, fx, &id, &now)?;
            let e = inner
                .entries
                .get(&id)
                .ok_or_else(|| QueueError::NotFound { id: id.clone() })?;
            if let Some(res) = e.resolution() {
                if let Some(t) = token.take()
                    && let Some(ws) = inner.waiters.get_mut(&id)
                {
                    ws.retain(|(k, _)| *k != t);
                    if ws.is_empty() {
                        inner.waiters.remove(&id);
                    }
                }
                return Ok(Some(res));
            }
            let ws = inner.waiters.entry(id.clone()).or_default();
            match token.and_then(|t| ws.iter_mut().find(|(k, _)| *k == t)) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => {
                    let t = inner.next_token;
                    inner.next_token += 1;
                    *token = Some(t);
                    inner
                        .waiters
                        .entry(id.clone())
                        .or_default()
                        .push((t, cx.waker().clone()));
                }
            }
            Ok(None)
        });
        match r {
            Ok(Some(res)) => Poll::Ready(Ok(res)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.token.take() {
            let mut inner = self.queue.inner.lock();
            if let Some(ws) = inner.waiters.get_mut(&self.id) {
                ws.retain(|(k, _)| *k != t);
                if ws.is_empty() {
                    inner.waiters.remove(&self.id);
                }
            }
        }
    }
}
