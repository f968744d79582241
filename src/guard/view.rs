//! A run's view of the policy snapshot in force: the snapshot, plus what the run would otherwise
//! look up by name on every call (its agent's rate-limit bucket, the breakers of the tools it
//! calls), resolved once.
//!
//! Why per run: every thread checking through one guard used to take a reference to the one
//! shared snapshot (`Arc` increment per check, decrement per completed permit) and to the
//! breaker of its tool: four atomic writes per call to cache lines every thread writes. A check
//! now takes a reference to its run's view instead (one run per agent task, so per thread in
//! practice), and a permit finds its breaker through that view by tool index.
//!
//! A view is current while the guard's snapshot is the one it was made for and nothing it
//! holds was evicted since (an agent bucket from the rate limiters, a breaker from the keyed
//! breakers: a run keeping an evicted one would keep a second bucket or breaker for the same
//! key). Otherwise the next check makes a new one; permits keep the view they were issued under,
//! so a call already permitted still finishes under the snapshot that allowed it.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use std::sync::atomic::Ordering;

use super::run::RunState;
use super::shared::{Shared, Snapshot};
use crate::breaker::{AgentBucket, Keyed, Ticket};
use crate::call::RunContext;

/// One run's view of one snapshot.
pub(crate) struct RunView {
    pub(crate) snap: Arc<Snapshot>,
    /// The guard's policy generation `snap` was in force at (read before loading it).
    generation: u64,
    /// The agent's rate-limit bucket (`None`: no per-agent quota).
    pub(crate) rate_agent: Option<AgentBucket>,
    /// The breakers of the tools this run called, by the boundary's dense tool index, filled
    /// as each is found (breakers are created by the first completed call of their key). Empty
    /// without breakers.
    breakers: Box<[OnceLock<Arc<Keyed>>]>,
    /// The keyed breakers' eviction count when the view was made.
    breaker_evictions: u64,
}

impl Deref for RunView {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snap
    }
}

impl RunView {
    /// The view of the snapshot in force for a run of `ctx`.
    pub(crate) fn new(shared: &Shared, ctx: &RunContext) -> Self {
        // The generation first: a reload between the two reads makes the view look older
        // than its snapshot (made anew at the next check), never newer.
        let generation = shared.generation.load(Ordering::Acquire);
        let snap = shared.policy.load_full();
        // Eviction counts are read before anything is looked up (see `is_current`).
        let breaker_evictions = snap.breakers().map_or(0, |kb| kb.evictions());
        let breakers = match snap.breakers() {
            Some(_) => (0..snap.boundary.tool_count())
                .map(|_| OnceLock::new())
                .collect(),
            None => Box::default(),
        };
        let rate_agent = snap
            .rate_limits()
            .and_then(|rl| rl.agent_bucket(ctx.agent().as_str()));
        Self {
            snap,
            generation,
            rate_agent,
            breakers,
            breaker_evictions,
        }
    }

    /// Whether the view is of the snapshot in force and still holds only what its primitives
    /// would hand out now.
    #[inline]
    fn is_current(&self, shared: &Shared) -> bool {
        if shared.generation.load(Ordering::Acquire) != self.generation {
            return false;
        }
        let rate = match (&self.rate_agent, self.snap.rate_limits()) {
            (Some(bucket), Some(rl)) => bucket.is_current(rl),
            _ => true,
        };
        let breakers = self
            .snap
            .breakers()
            .is_none_or(|kb| kb.evictions() == self.breaker_evictions);
        rate && breakers
    }

    /// The breaker of the admitted tool at `index` for this run's agent, if it exists yet.
    #[inline]
    pub(crate) fn breaker(&self, index: usize, agent: &str, tool: &str) -> Option<&Arc<Keyed>> {
        let slot = self.breakers.get(index)?;
        if let Some(keyed) = slot.get() {
            return Some(keyed);
        }
        let keyed = self.snap.breakers()?.get(agent, tool)?;
        Some(slot.get_or_init(|| keyed))
    }

    /// The breaker a permit holds a ticket of (found by [`breaker`](Self::breaker) at check
    /// time, so present).
    pub(crate) fn held(&self, index: usize) -> Option<&Arc<Keyed>> {
        self.breakers.get(index)?.get()
    }

    /// Gives a breaker ticket back unused (the call never ran), so a half-open probe slot is
    /// freed.
    pub(crate) fn release(&self, held: Option<Held>) {
        if let Some(h) = held
            && let Some(keyed) = self.held(h.index)
        {
            keyed.give_back(h.ticket);
        }
    }
}

/// A breaker ticket a call holds: its breaker is the view's at `index`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) index: usize,
    pub(crate) ticket: Ticket,
}

impl RunState {
    /// The run's view of the snapshot in force, made anew when a reload replaced the snapshot
    /// or the view is no longer current. Costs one atomic load of the guard's generation, the
    /// run's own (uncontended) lock and a reference-count increment on the run's own view: no
    /// write to anything every thread shares.
    pub(crate) fn view(&self) -> Arc<RunView> {
        let mut view = self.view.lock();
        if !view.is_current(&self.shared) {
            *view = Arc::new(RunView::new(&self.shared, &self.ctx));
        }
        Arc::clone(&view)
    }
}
