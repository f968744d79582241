//! The host's side of the leases: per budget and key a local balance spent with one atomic
//! update on the check path, a background thread that leases ahead and renews, and the
//! give-back at shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use super::{BudgetSpec, LeaseError, LeaseSource, LeasesSection, Measure, Per};
use crate::call::{RuleId, RunContext};
use crate::clock::{Clock, MonoTime};
use crate::guard::{SharedBudget, SharedRefusal, Taken, Units};

/// One key's local balance (e.g. budget `agent-daily-calls`, agent `bot-7`).
struct Local {
    /// Units spendable now (negative after a call reported more than it took).
    available: AtomicI64,
    /// The window (its start, in the source's milliseconds) the balance belongs to.
    window: AtomicI64,
    /// The generation ([`Inner::epoch`]) that installed `window`, or [`SWITCHING`] while a new
    /// window is being installed: units taken at an earlier generation are not given back here.
    window_epoch: AtomicU64,
    /// The end of that window on this host's clock (`MonoTime` nanoseconds): no spending after.
    deadline: AtomicU64,
    /// No lease attempt before this (`MonoTime` nanoseconds) after a refusal or an error.
    retry_after: AtomicU64,
    /// A refill is queued.
    queued: AtomicBool,
    /// Serialises leasing for this key (the background thread and a check that ran dry).
    leasing: Mutex<()>,
}

impl Local {
    fn new() -> Self {
        Local {
            available: AtomicI64::new(0),
            window: AtomicI64::new(i64::MIN),
            window_epoch: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            retry_after: AtomicU64::new(0),
            queued: AtomicBool::new(false),
            leasing: Mutex::new(()),
        }
    }

    /// Spends `amount` (needs at least one unit even for zero: an exhausted budget denies a
    /// call that declares no estimate). Returns the balance left.
    fn spend(&self, amount: u64, now: u64) -> Option<i64> {
        if now >= self.deadline.load(Ordering::Acquire) {
            return None;
        }
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        let need = amount.max(1);
        self.available
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (a >= need).then(|| a - amount)
            })
            .ok()
            .map(|a| a - amount)
    }

    fn install(&self, grant: &super::Grant, now: MonoTime, epoch: &AtomicU64) {
        let units = i64::try_from(grant.units).unwrap_or(i64::MAX);
        if self.window.load(Ordering::Acquire) == grant.window {
            self.available.fetch_add(units, Ordering::AcqRel);
        } else {
            // A new window: what was left of the last one is of no use any more. The order
            // matters to `give_back`: marked as switching, the balance replaced, and only then a
            // new generation, so a take that spent from the old balance read an older one.
            self.window_epoch.store(SWITCHING, Ordering::Release);
            self.available.store(units, Ordering::Release);
            self.window.store(grant.window, Ordering::Release);
            let generation = epoch.fetch_add(1, Ordering::AcqRel).saturating_add(1);
            self.window_epoch.store(generation, Ordering::Release);
        }
        let end = now.saturating_add(grant.window_left);
        self.deadline.store(nanos(end), Ordering::Release);
    }

    /// Gives `amount` back if the balance's window is still the one of `taken` (installed at or
    /// before the generation the take read). A window switch racing the give-back takes the
    /// units back out: at worst they are lost to the new window, never spent in it twice.
    fn give_back(&self, amount: u64, taken: Taken) {
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        let before = self.window_epoch.load(Ordering::Acquire);
        if before > taken.0 {
            return; // taken from an earlier window (or one is being installed)
        }
        self.available.fetch_add(amount, Ordering::AcqRel);
        if self.window_epoch.load(Ordering::Acquire) != before {
            self.available.fetch_sub(amount, Ordering::AcqRel);
        }
    }
}

/// [`Local::window_epoch`] while a new window is being installed.
const SWITCHING: u64 = u64::MAX;

fn nanos(t: MonoTime) -> u64 {
    t.as_nanos()
}

struct Budget {
    spec: BudgetSpec,
    rule: RuleId,
    chunk: u64,
    threshold: i64,
    keys: ArcSwap<HashMap<Arc<str>, Arc<Local>>>,
    /// For `per = "fleet"`: the one key's balance, also in `keys` under `*`, reached without a
    /// map lookup on the check path.
    fleet: Option<Arc<Local>>,
}

impl Budget {
    fn key<'r>(&self, run: &'r RunContext) -> Option<&'r str> {
        match self.spec.per {
            Per::Fleet => Some("*"),
            Per::Agent => Some(run.agent().as_str()),
            Per::Tenant => run.compartment().map(|c| c.as_str()),
            Per::TaskType => run.task_type().map(|t| t.as_str()),
        }
    }

    fn amount(&self, u: Units) -> u64 {
        match self.spec.measure {
            Measure::Calls => u.calls,
            Measure::Tokens => u.tokens,
            Measure::CostMicros => u.cost_micros,
        }
    }

    /// The key's balance, created on first use (lock-free lookup; creation copies the map).
    fn local(&self, key: &str) -> Arc<Local> {
        if let Some(l) = self.keys.load().get(key) {
            return Arc::clone(l);
        }
        let mut made = None;
        self.keys.rcu(|map| {
            let mut map = HashMap::clone(map);
            let l = map
                .entry(Arc::from(key))
                .or_insert_with(|| Arc::new(Local::new()));
            made = Some(Arc::clone(l));
            map
        });
        made.unwrap_or_else(|| Arc::new(Local::new()))
    }
}

struct Inner {
    budgets: Vec<Budget>,
    source: Arc<dyn LeaseSource>,
    clock: Arc<dyn Clock>,
    heartbeat: Duration,
    queue: Mutex<VecDeque<(usize, Arc<str>)>>,
    wake: Condvar,
    stop: AtomicBool,
    /// Counters for reports.
    sync_leases: AtomicU64,
    background_leases: AtomicU64,
    /// Incremented by every window switch of any key: a take records the value it read
    /// ([`Taken`]), and units go back only to a balance whose window is not newer.
    epoch: AtomicU64,
}

/// Budgets shared by a fleet, spent from leases (see the [module docs](super)): give it to
/// [`GuardBuilder::shared_budget`](crate::guard::GuardBuilder::shared_budget). Returns unused
/// units when shut down or dropped.
pub struct LeasedBudgets {
    inner: Arc<Inner>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LeasedBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeasedBudgets")
            .field("budgets", &self.inner.budgets.len())
            .finish_non_exhaustive()
    }
}

/// What a host did with its leases (for reports and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Leases taken on the check path (the local balance ran dry before a refill arrived).
    pub sync_leases: u64,
    /// Leases taken ahead by the background thread.
    pub background_leases: u64,
    /// Units given back at shutdown.
    pub returned: u64,
}

impl LeasedBudgets {
    /// Starts leasing the section's budgets from `source`, with a background thread for refills
    /// and heartbeats. Budgets of the whole fleet (`per = "fleet"`) take their first lease now:
    /// a source that cannot lease refuses the start.
    pub fn start(
        section: &LeasesSection,
        source: Arc<dyn LeaseSource>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LeaseError> {
        let budgets = section
            .budgets
            .iter()
            .map(|spec| {
                let chunk = spec.chunk();
                let fleet = (spec.per == Per::Fleet).then(|| Arc::new(Local::new()));
                let mut keys = HashMap::new();
                if let Some(l) = &fleet {
                    keys.insert(Arc::<str>::from("*"), Arc::clone(l));
                }
                Budget {
                    rule: RuleId::new(format!("fleet.budget.{}", spec.name)),
                    threshold: i64::try_from(
                        chunk.saturating_mul(u64::from(section.refill_below_percent)) / 100,
                    )
                    .unwrap_or(i64::MAX),
                    chunk,
                    spec: spec.clone(),
                    keys: ArcSwap::from_pointee(keys),
                    fleet,
                }
            })
            .collect();
        let inner = Arc::new(Inner {
            budgets,
            source,
            clock,
            heartbeat: section.heartbeat,
            queue: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            sync_leases: AtomicU64::new(0),
            background_leases: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
        });
        for b in inner.budgets.iter().filter(|b| b.spec.per == Per::Fleet) {
            let local = b.local("*");
            let grant = inner.source.lease(&b.spec, "*", b.chunk)?;
            local.install(&grant, inner.clock.now(), &inner.epoch);
        }
        let worker_inner = Arc::clone(&inner);
        let worker = std::thread::Builder::new()
            .name("tollgate-lease".into())
            .spawn(move || worker_inner.work())
            .map_err(|e| LeaseError::Thread(e.to_string()))?;
        Ok(LeasedBudgets {
            inner,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> LeaseStats {
        LeaseStats {
            sync_leases: self.inner.sync_leases.load(Ordering::Relaxed),
            background_leases: self.inner.background_leases.load(Ordering::Relaxed),
            returned: 0,
        }
    }

    /// The local balance of `budget` for `key` (`*` for a fleet budget), if it has one.
    pub fn local_balance(&self, budget: &str, key: &str) -> Option<i64> {
        let b = self.inner.budgets.iter().find(|b| b.spec.name == budget)?;
        let l = b.keys.load().get(key).cloned()?;
        Some(l.available.load(Ordering::Acquire))
    }

    /// Stops the background thread and gives every unused unit back (each key's balance is
    /// zeroed first, so nothing given back can still be spent here). Returns what was given
    /// back; the first error, if any, after trying every key.
    pub fn shutdown(&self) -> Result<LeaseStats, LeaseError> {
        self.inner.stop.store(true, Ordering::Release);
        self.inner.wake.notify_all();
        if let Some(h) = self.worker.lock().take() {
            let _ = h.join();
        }
        let mut stats = self.stats();
        let mut first = Ok(());
        for b in &self.inner.budgets {
            for (key, l) in b.keys.load().iter() {
                let _g = l.leasing.lock();
                let window = l.window.load(Ordering::Acquire);
                if window == i64::MIN {
                    continue; // never leased
                }
                // Zeroed first: nothing given back can still be spent here.
                l.deadline.store(0, Ordering::Release);
                let unused = u64::try_from(l.available.swap(0, Ordering::AcqRel)).unwrap_or(0);
                match self.inner.source.release(&b.spec, key, window, unused) {
                    Ok(()) => stats.returned += unused,
                    Err(e) => {
                        if first.is_ok() {
                            first = Err(e);
                        }
                    }
                }
            }
        }
        first.map(|()| stats)
    }
}

impl Drop for LeasedBudgets {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "leases: unused units could not be given back");
        }
    }
}

impl Inner {
    fn work(&self) {
        let mut next_beat = self.clock.now().saturating_add(self.heartbeat);
        while !self.stop.load(Ordering::Acquire) {
            let job = {
                let mut q = self.queue.lock();
                if q.is_empty() {
                    self.wake
                        .wait_for(&mut q, self.heartbeat.min(Duration::from_millis(200)));
                }
                q.pop_front()
            };
            if let Some((i, key)) = job {
                self.refill_ahead(i, &key);
            }
            let now = self.clock.now();
            if now >= next_beat {
                if let Err(e) = self.source.heartbeat() {
                    tracing::warn!(error = %e, "leases: heartbeat failed");
                }
                next_beat = now.saturating_add(self.heartbeat);
            }
        }
    }

    fn refill_ahead(&self, i: usize, key: &str) {
        let b = &self.budgets[i];
        let local = b.local(key);
        let _g = local.leasing.lock();
        local.queued.store(false, Ordering::Release);
        let now = self.clock.now();
        let live = nanos(now) < local.deadline.load(Ordering::Acquire);
        if live && local.available.load(Ordering::Acquire) >= b.threshold {
            return;
        }
        match self.source.lease(&b.spec, key, b.chunk) {
            Ok(g) => {
                self.background_leases.fetch_add(1, Ordering::Relaxed);
                local.install(&g, now, &self.epoch);
                if g.units == 0 {
                    local
                        .retry_after
                        .store(nanos(now.saturating_add(self.heartbeat)), Ordering::Release);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, budget = %b.spec.name, "leases: refill failed");
                local
                    .retry_after
                    .store(nanos(now.saturating_add(self.heartbeat)), Ordering::Release);
            }
        }
    }

    /// The check path: spend locally, queue a refill when low, lease here only when dry.
    /// Returns the generation of the window spent from when it is known (spent under the
    /// key's leasing lock, which every window switch holds).
    fn take_one(&self, i: usize, key: &str, amount: u64) -> Result<Option<u64>, SharedRefusal> {
        let b = &self.budgets[i];
        let t = nanos(self.clock.now());
        // The fast path: one atomic update on the key's balance, found without a lock or a
        // reference count (a fleet-wide budget without even a map lookup).
        let keys;
        let found = match &b.fleet {
            Some(l) => Some(l),
            None => {
                keys = b.keys.load();
                keys.get(key)
            }
        };
        if let Some(local) = found
            && let Some(left) = local.spend(amount, t)
        {
            if left < b.threshold
                && t >= local.retry_after.load(Ordering::Acquire)
                && !local.queued.swap(true, Ordering::AcqRel)
            {
                self.queue.lock().push_back((i, Arc::from(key)));
                self.wake.notify_one();
            }
            return Ok(None);
        }
        let local = b.local(key);
        // Dry (or a new window): one lease here, unless one just failed.
        let refuse = |why: String| SharedRefusal {
            rule: b.rule.clone(),
            reason: format!(
                "the shared {} budget `{}` ({} per {} s for {} `{key}`) {why}",
                b.spec.measure.as_str(),
                b.spec.name,
                b.spec.limit,
                b.spec.window.as_secs(),
                per_name(b.spec.per),
            ),
        };
        if t < local.retry_after.load(Ordering::Acquire) {
            return Err(refuse("is exhausted or unreachable; retrying later".into()));
        }
        let _g = local.leasing.lock();
        if local.spend(amount, nanos(self.clock.now())).is_some() {
            // Another thread refilled it meanwhile.
            return Ok(Some(local.window_epoch.load(Ordering::Acquire)));
        }
        let now = self.clock.now();
        let want = b.chunk.max(amount);
        match self.source.lease(&b.spec, key, want) {
            Ok(g) => {
                self.sync_leases.fetch_add(1, Ordering::Relaxed);
                local.install(&g, now, &self.epoch);
                if local.spend(amount, nanos(now)).is_some() {
                    return Ok(Some(local.window_epoch.load(Ordering::Acquire)));
                }
                local
                    .retry_after
                    .store(nanos(now.saturating_add(self.heartbeat)), Ordering::Release);
                Err(refuse("is exhausted for this window".into()))
            }
            Err(e) => {
                local
                    .retry_after
                    .store(nanos(now.saturating_add(self.heartbeat)), Ordering::Release);
                Err(refuse(format!("cannot be leased: {e}")))
            }
        }
    }
}

fn per_name(p: Per) -> &'static str {
    match p {
        Per::Fleet => "the fleet",
        Per::Agent => "agent",
        Per::Tenant => "tenant",
        Per::TaskType => "task type",
    }
}

impl SharedBudget for LeasedBudgets {
    fn take(&self, run: &RunContext, want: Units) -> Result<Taken, SharedRefusal> {
        let inner = &*self.inner;
        // Read before any spending: a window installed after this is newer than the take.
        let mut taken = Taken(inner.epoch.load(Ordering::Acquire));
        for (i, b) in inner.budgets.iter().enumerate() {
            let Some(key) = b.key(run) else { continue };
            let spent = inner.take_one(i, key, b.amount(want));
            if let Ok(Some(generation)) = spent
                && generation > taken.0
            {
                // This take spent from a window installed after it began (it leased the new
                // window itself): its units may go back there, provided no key an earlier
                // budget spent from switched meanwhile (then they would go back to a window
                // newer than theirs). A switch from now on gets a later generation; one under
                // way is marked. Otherwise these units are simply not given back.
                let earlier_unchanged = inner.budgets.iter().take(i).all(|b| {
                    b.key(run)
                        .and_then(|k| b.keys.load().get(k).cloned())
                        .is_none_or(|l| l.window_epoch.load(Ordering::Acquire) <= taken.0)
                });
                if earlier_unchanged {
                    taken = Taken(generation);
                }
            }
            if let Err(refusal) = spent {
                // All or nothing: give back what the earlier budgets took (to the windows they
                // took it from).
                for b in inner.budgets.iter().take(i) {
                    if let Some(key) = b.key(run)
                        && let Some(l) = b.keys.load().get(key)
                    {
                        l.give_back(b.amount(want), taken);
                    }
                }
                return Err(refusal);
            }
        }
        Ok(taken)
    }

    fn give_back(&self, run: &RunContext, units: Units, taken: Taken) {
        for b in &self.inner.budgets {
            let (Some(key), amount) = (b.key(run), b.amount(units)) else {
                continue;
            };
            if amount == 0 {
                continue;
            }
            if let Some(l) = b.keys.load().get(key) {
                l.give_back(amount, taken);
            }
        }
    }

    fn charge(&self, run: &RunContext, units: Units) {
        for b in &self.inner.budgets {
            let (Some(key), amount) = (b.key(run), b.amount(units)) else {
                continue;
            };
            if amount == 0 {
                continue;
            }
            // May go below zero: the next calls wait for leases that cover the excess.
            // Saturating: an absurd reported usage must leave the balance deeply negative,
            // never wrap it round into a credit.
            let amount = i64::try_from(amount).unwrap_or(i64::MAX);
            let _ = b
                .local(key)
                .available
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                    Some(a.saturating_sub(amount))
                });
        }
    }
}
