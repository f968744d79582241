//! One shared clock tick for every in-flight forwarded call: the kill-switch look and the call
//! timeout of each call ride on it instead of each call arming timers of its own.
//!
//! Why (measured, `benches/mcp.rs` probe under `strace`): a timer armed earlier than the tokio
//! time driver's next wake-up makes tokio unpark the driver, an 8-byte `write` to its eventfd
//! and one more `epoll_wait` round. Two such timers per call (a kill-switch poll `interval` and
//! the call `timeout`) were two syscalls on every forwarded call. The ticker arms one timer per
//! period while calls are in flight (and for one idle period after the last, so a client
//! calling in sequence keeps it armed), whatever the number of calls: a call only waits on a
//! [`Notify`], which costs no syscall when it is woken from the same runtime.
//!
//! The price: a call's timeout and a kill switch are noticed at the next tick, i.e. up to one
//! period ([`TICK`], 10 ms) late, as the kill switch already was with the per-call poll.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The period of the tick: how late a kill switch or a call timeout may be noticed.
pub(crate) const TICK: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Inner {
    /// Woken at every tick (every waiter at once).
    tick: Notify,
    /// Wakes the ticking task when the first call starts after an idle time.
    wake: Notify,
    /// Calls in flight (holders of a [`Ticking`]).
    active: AtomicUsize,
    /// Whether the ticking task was spawned.
    started: AtomicBool,
    /// Set when the owner is dropped: the task ends.
    closed: AtomicBool,
}

/// The tick of one gateway. Dropping it stops its task.
#[derive(Default)]
pub(crate) struct Ticker {
    inner: Arc<Inner>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

/// A call's registration with the ticker: ticks go on while one exists.
pub(crate) struct Ticking<'a> {
    inner: &'a Inner,
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Ticking<'_> {
    /// Resolves at the next tick.
    pub(crate) async fn next(&self) {
        self.inner.tick.notified().await;
    }
}

impl Ticker {
    /// Registers an in-flight call (must be called inside a tokio runtime: the first call
    /// spawns the ticking task on it).
    pub(crate) fn register(&self) -> Ticking<'_> {
        let inner = &*self.inner;
        if inner.active.fetch_add(1, Ordering::AcqRel) == 0 {
            if inner.started.swap(true, Ordering::AcqRel) {
                inner.wake.notify_one();
            } else {
                tokio::spawn(run(Arc::clone(&self.inner)));
            }
        }
        Ticking { inner }
    }
}

/// The ticking task: idle (no timer) while no call is in flight; otherwise ticks every
/// [`TICK`] and goes idle again after a whole period without calls.
async fn run(inner: Arc<Inner>) {
    loop {
        while inner.active.load(Ordering::Acquire) == 0 {
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            // `notify_one` stores a permit when nobody waits: a call registered between the
            // load above and this await is not missed.
            inner.wake.notified().await;
        }
        let start = tokio::time::Instant::now() + TICK;
        let mut interval = tokio::time::interval_at(start, TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle = false;
        loop {
            interval.tick().await;
            inner.tick.notify_waiters();
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            if inner.active.load(Ordering::Acquire) == 0 {
                if idle {
                    break;
                }
                idle = true;
            } else {
                idle = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real time (the ticker runs on tokio's clock, and the dev build has no paused clock):
    /// bounds are loose, the point is that ticks come, and come again after an idle time.
    #[tokio::test]
    async fn a_call_after_the_ticker_went_idle_is_still_ticked() {
        let ticker = Ticker::default();
        let bound = Duration::from_secs(5);
        {
            let t = ticker.register();
            let start = tokio::time::Instant::now();
            tokio::time::timeout(bound, t.next()).await.expect("a tick");
            tokio::time::timeout(bound, t.next())
                .await
                .expect("a second tick");
            assert!(start.elapsed() >= TICK, "{:?}", start.elapsed());
        }
        assert_eq!(ticker.inner.active.load(Ordering::Acquire), 0);
        // Past the idle period the task waits without a timer; a new call wakes it again.
        tokio::time::sleep(5 * TICK).await;
        let t = ticker.register();
        tokio::time::timeout(bound, t.next())
            .await
            .expect("a tick after idling");
    }
}
