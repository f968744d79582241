//! A run's view of the policy snapshot in force: the snapshot, plus what the run would otherwise
//! look up by name on every call (its agent's rate-limit bucket, the breakers of the tools it
//! calls), resolved once.
//!
//! Why per run: every thread checking through one guard used to take a reference to the one
//! shared snapshot (`Arc` increment per check, decrement per completed permit) and to the
//! breaker of its tool: four atomic writes per call to cache lines every thread writes. A check
//! now borrows its run's view instead (one run per agent task, so per thread in practice): the
//! run chains its views and frees none before it ends (see [`Views`]), so neither a lock nor a
//! reference count is taken per call, and a permit finds its breaker through that view by tool
//! index.
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

/// How many views a run chains before it falls back to one replaced under a lock: a reload or
/// an eviction each add one, so a run that sees more than this many goes on as before this
/// chain existed (a lock and a reference count per check).
pub(crate) const CHAINED_VIEWS: usize = 8;

/// A run's views, oldest first. A chained view is never freed before its run, so a check
/// borrows the current one for as long as it borrows the run: finding it costs one atomic
/// load per view chained (one, unless the policy was reloaded during the run) and no write at
/// all, where a lock and a reference count cost four atomic read-modify-writes per call
/// (~28 ns on the development VM, `guard/check_allow` 136 ns). The price: a run keeps up to
/// [`CHAINED_VIEWS`] views (and the snapshots they hold) until it ends.
pub(crate) struct Views {
    first: Node,
    /// The current view once the chain is full, replaced under this lock.
    overflow: parking_lot::Mutex<Option<Arc<RunView>>>,
}

struct Node {
    view: Arc<RunView>,
    next: OnceLock<Box<Node>>,
}

impl Node {
    /// The last node chained after this one (this one if none), and its position counting this
    /// one as `at`.
    fn last(&self, at: usize) -> (&Node, usize) {
        let (mut node, mut at) = (self, at);
        while let Some(next) = node.next.get() {
            (node, at) = (next, at + 1);
        }
        (node, at)
    }
}

impl Views {
    /// A run's views, starting with `first`.
    pub(crate) fn new(first: RunView) -> Self {
        Self {
            first: Node {
                view: Arc::new(first),
                next: OnceLock::new(),
            },
            overflow: parking_lot::Mutex::new(None),
        }
    }
}

/// A view a check or a permit uses: borrowed from its run's chain, or shared (a detached permit;
/// a run past [`CHAINED_VIEWS`]).
pub(crate) enum ViewRef<'a> {
    Chained(&'a Arc<RunView>),
    Owned(Arc<RunView>),
}

impl ViewRef<'_> {
    /// The same view, borrowing nothing (a reference count taken on a chained one).
    pub(crate) fn to_owned(&self) -> ViewRef<'static> {
        ViewRef::Owned(Arc::clone(self.arc()))
    }

    fn arc(&self) -> &Arc<RunView> {
        match self {
            ViewRef::Chained(v) => v,
            ViewRef::Owned(v) => v,
        }
    }
}

impl Deref for ViewRef<'_> {
    type Target = RunView;

    #[inline]
    fn deref(&self) -> &RunView {
        self.arc()
    }
}

impl RunState {
    /// The run's view of the snapshot in force, made anew when a reload replaced the snapshot
    /// or the view is no longer current. Costs one atomic load of the guard's generation and one
    /// per chained view: no write to anything, shared or the run's own (see [`Views`]).
    pub(crate) fn view(&self) -> ViewRef<'_> {
        let (mut node, mut chained) = (&self.views.first, 1);
        loop {
            (node, chained) = node.last(chained);
            if node.view.is_current(&self.shared) {
                return ViewRef::Chained(&node.view);
            }
            if chained >= CHAINED_VIEWS {
                break;
            }
            // Checks racing here agree on one new view (the others wait for it). A view another
            // check made may be older than a reload that returned before this check began: it
            // is used only once it is seen to be current, else the walk goes on.
            let mut made = false;
            let next = node.next.get_or_init(|| {
                made = true;
                let view = RunView::new(&self.shared, &self.ctx);
                #[cfg(test)]
                tests::made_a_view();
                Box::new(Node {
                    view: Arc::new(view),
                    next: OnceLock::new(),
                })
            });
            if made {
                return ViewRef::Chained(&next.view);
            }
        }
        let mut overflow = self.views.overflow.lock();
        match &*overflow {
            Some(view) if view.is_current(&self.shared) => ViewRef::Owned(Arc::clone(view)),
            _ => {
                let view = Arc::new(RunView::new(&self.shared, &self.ctx));
                *overflow = Some(Arc::clone(&view));
                ViewRef::Owned(view)
            }
        }
    }

    /// How many views the run chained (tests).
    #[cfg(test)]
    pub(crate) fn chained_views(&self) -> usize {
        self.views.first.last(1).1
    }
}

#[cfg(test)]
mod tests {
    use super::CHAINED_VIEWS;
    use std::sync::Mutex;

    /// Run once by the next view the given thread makes, before the view is published: lets a
    /// test hold a check between making a view and publishing it (other threads, other tests
    /// running at the same time, are not held).
    type Hook = (std::thread::ThreadId, Box<dyn FnOnce() + Send>);
    static ON_MADE: Mutex<Option<Hook>> = Mutex::new(None);

    pub(super) fn made_a_view() {
        let hook = {
            let mut slot = ON_MADE.lock().unwrap();
            match &*slot {
                Some((id, _)) if *id == std::thread::current().id() => slot.take(),
                _ => None,
            }
        };
        if let Some((_, hook)) = hook {
            hook();
        }
    }

    /// A check that begins after a reload returned runs under the new policy, even when
    /// another check of its run made a view of the old one and publishes it while this check
    /// waits for it (the view it waited for is not current: it makes its own).
    #[test]
    fn a_check_begun_after_a_reload_never_uses_a_view_made_before_it() {
        use std::sync::mpsc;
        use std::time::Duration;
        let guard = Guard::builder(boundary(100.0)).build().unwrap();
        let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
        let call = ToolCall::new("pay", r#"{"amount": 50}"#);
        // Generation 1 allows the call; the run's first view is of generation 0: stale.
        guard.reload_boundary(boundary(90.0), "test").unwrap();
        let v1 = guard.policy_version();
        let (made_tx, made_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let hold: Box<dyn FnOnce() + Send> = Box::new(move || {
            made_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        });
        std::thread::scope(|s| {
            // A: makes a view of generation 1 and is held before publishing it.
            let a = s.spawn(|| {
                *ON_MADE.lock().unwrap() = Some((std::thread::current().id(), hold));
                match guard.check(&run, &call) {
                    Verdict::Allow(p) => p.policy_version(),
                    other => panic!("{other:?}"),
                }
            });
            made_rx.recv().unwrap();
            // Generation 2 forbids the call, and its reload has returned.
            guard.reload_boundary(boundary(20.0), "test").unwrap();
            let v2 = guard.policy_version();
            // B begins now: it finds the stale first view and waits for A's.
            let b = s.spawn(|| match guard.check(&run, &call) {
                Verdict::Deny(d) => d.policy_version(),
                Verdict::Allow(p) => Some(p.policy_version()),
                other => panic!("{other:?}"),
            });
            std::thread::sleep(Duration::from_millis(100));
            go_tx.send(()).unwrap();
            assert_eq!(a.join().unwrap(), v1, "A began before the second reload");
            assert_eq!(b.join().unwrap(), Some(v2), "B began after it returned");
        });
    }
    use crate::audit::MemorySink;
    use crate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
    use crate::{Guard, Outcome, RunContext, ToolCall, Verdict};
    use std::sync::Arc;

    /// `pay` allowed up to `max`.
    fn boundary(max: f64) -> ActionBoundary {
        ActionBoundary::builder()
            .tool(
                "pay",
                ToolSpec::irreversible().arg("amount", Arg::number().required().max(max)),
            )
            .role("r", RoleSpec::new().tools(["pay"]))
            .build()
            .unwrap()
    }

    /// Reloads chain a view each up to the bound, then the run goes on with its overflow view:
    /// every check sees the policy in force, and every permit completes under (and records)
    /// the version that allowed it, whichever view it borrowed.
    #[test]
    fn a_run_chains_views_up_to_the_bound_and_then_uses_its_overflow_view() {
        let sink = Arc::new(MemorySink::new());
        let guard = Guard::builder(boundary(100.0))
            .audit(sink.clone())
            .build()
            .unwrap();
        let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
        let call = ToolCall::new("pay", r#"{"amount": 50}"#);
        let mut permits = Vec::new();
        for i in 0..(3 * CHAINED_VIEWS) {
            // Odd reloads forbid the call, even ones allow it again.
            let max = if i % 2 == 0 { 100.0 } else { 20.0 };
            if i > 0 {
                guard.reload_boundary(boundary(max), "test").unwrap();
            }
            let version = guard.policy_version();
            match guard.check(&run, &call) {
                Verdict::Allow(p) => {
                    assert_eq!(max, 100.0, "reload {i}: allowed under the stricter policy");
                    assert_eq!(p.policy_version(), version, "reload {i}");
                    permits.push((p, version));
                }
                Verdict::Deny(d) => {
                    assert_eq!(max, 20.0, "reload {i}: denied under the looser policy");
                    assert_eq!(d.policy_version(), Some(version), "reload {i}");
                }
                Verdict::Escalate(_) => panic!("nothing escalates"),
            }
            assert_eq!(
                run.chained_views(),
                (i + 1).min(CHAINED_VIEWS),
                "reload {i}"
            );
        }
        // Views chained and overflow views alike keep their snapshot until completion.
        let versions: Vec<String> = permits.iter().map(|(_, v)| v.to_string()).collect();
        for (p, v) in permits {
            assert_eq!(p.policy_version(), v);
            p.complete(Outcome::success()).unwrap();
        }
        let recorded: Vec<String> = sink
            .events()
            .iter()
            .filter(|e| e["event"] == "outcome")
            .map(|e| e["tollgate.policy.version"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(recorded, versions);
    }

    /// A detached permit keeps its chained view past its run handle.
    #[test]
    fn a_detached_permit_keeps_its_view_after_the_run_is_dropped() {
        let sink = Arc::new(MemorySink::new());
        let guard = Guard::builder(boundary(100.0))
            .audit(sink.clone())
            .build()
            .unwrap();
        let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
        let version = guard.policy_version();
        let Verdict::Allow(p) = guard.check(&run, &ToolCall::new("pay", r#"{"amount": 5}"#)) else {
            panic!("allowed")
        };
        let detached = p.detach();
        drop(run);
        guard.reload_boundary(boundary(1.0), "test").unwrap();
        assert_eq!(detached.policy_version(), version);
        detached.complete(Outcome::success()).unwrap();
        let outcome = sink
            .events()
            .into_iter()
            .find(|e| e["event"] == "outcome")
            .unwrap();
        assert_eq!(outcome["tollgate.policy.version"], version.to_string());
    }
}
