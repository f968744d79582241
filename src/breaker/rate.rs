//! Rate limits per agent and per tool, built on `governor`'s GCRA limiter.
//!
//! Each key (an agent, or a tool) gets its own direct limiter, so per-tool quotas can differ
//! (governor's keyed limiters share one quota). Time comes from tollgate's monotonic [`Clock`],
//! never from `quanta`'s TSC clock, which can step backwards across cores (governor issue #299).
//! Agents' limiters live in a bounded map; tools' limiters exist only for tools the policy
//! defines, so invented tool names cannot grow anything.
//!
//! The guard's check path hashes nothing: a policy snapshot holds its tools' limiters in a table
//! indexed by the boundary's dense tool index ([`RateLimiters::tool_table`]), and a run resolves
//! its agent's limiter once ([`RateLimiters::agent_bucket`]) and keeps it while it stays
//! current ([`AgentBucket::is_current`]: same limiters, no agent bucket evicted since). Agent
//! names come from callers, so the map they key keeps SipHash; it is only consulted when a run
//! starts, after a reload and after an eviction.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock as GovClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::clock::Clock;

/// One quota: at most `max_calls` per `per`, with bursts of up to `burst` calls (default:
/// `max_calls`). In documents: `{ max_calls = 30, per = "1m" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls allowed per period.
    pub max_calls: NonZeroU32,
    /// The period.
    #[serde(with = "crate::units::duration")]
    pub per: Duration,
    /// Largest burst (default `max_calls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<NonZeroU32>,
}

impl RateLimit {
    /// `max_calls` per `per`.
    pub fn new(max_calls: NonZeroU32, per: Duration) -> Self {
        Self {
            max_calls,
            per,
            burst: None,
        }
    }

    /// Why the limiter could not represent this limit, if it cannot: it counts in 64-bit
    /// nanoseconds (and panics past them), so one call's period times the burst, plus the
    /// process's running time, must stay within them. Bounded at 100 years.
    pub(crate) fn span_error(&self) -> Option<&'static str> {
        const MAX_SPAN: Duration = Duration::from_secs(100 * 365 * 86_400);
        let period = self.per / self.max_calls.get();
        let burst = self.burst.unwrap_or(self.max_calls).get();
        match period.checked_mul(burst) {
            Some(span) if span <= MAX_SPAN => None,
            _ => Some(
                "the period of one call (`per` / `max_calls`) times the burst is over 100 years, \
                 more than the limiter can count",
            ),
        }
    }

    fn quota(&self, field: &'static str) -> Result<Quota, ConfigError> {
        if self.per.is_zero() {
            return Err(ConfigError {
                field,
                reason: "the period `per` must be longer than zero",
            });
        }
        if let Some(reason) = self.span_error() {
            return Err(ConfigError { field, reason });
        }
        let period = self.per / self.max_calls.get();
        let quota = Quota::with_period(period).ok_or(ConfigError {
            field,
            reason: "the resulting replenish interval is zero",
        })?;
        Ok(quota.allow_burst(self.burst.unwrap_or(self.max_calls)))
    }
}

/// Rate limits for a guard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// One quota per agent (each agent its own bucket).
    pub per_agent: Option<RateLimit>,
    /// Quotas for named tools (shared by every agent calling them).
    pub per_tool: BTreeMap<String, RateLimit>,
    /// The quota of tools not named in `per_tool` (none: unlimited).
    pub default_per_tool: Option<RateLimit>,
    /// Most agents tracked at once (default 10 000); the oldest bucket is dropped beyond it.
    pub max_agents: Option<usize>,
}

/// Adapts tollgate's monotonic clock to governor.
#[derive(Clone)]
pub(crate) struct MonoClock(Arc<dyn Clock>);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct MonoInstant(u64);

impl Add<Nanos> for MonoInstant {
    type Output = Self;
    fn add(self, n: Nanos) -> Self {
        MonoInstant(self.0.saturating_add(n.as_u64()))
    }
}

impl Reference for MonoInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }
    fn saturating_sub(&self, d: Nanos) -> Self {
        MonoInstant(self.0.saturating_sub(d.as_u64()))
    }
}

thread_local! {
    /// The instant [`at`] pinned for this thread's rate-limit checks (`u64::MAX`: none).
    static PINNED: std::cell::Cell<u64> = const { std::cell::Cell::new(u64::MAX) };
}

impl GovClock for MonoClock {
    type Instant = MonoInstant;
    fn now(&self) -> MonoInstant {
        let pinned = PINNED.with(std::cell::Cell::get);
        if pinned != u64::MAX {
            return MonoInstant(pinned);
        }
        MonoInstant(self.0.now().as_nanos())
    }
}

/// Runs `f` with the rate limiters' clock reading `now` on this thread: a guard's check takes
/// from the agent's and the tool's buckets at the one instant it read for the whole check
/// (budget wall time, permit start) instead of reading the clock once per bucket. governor has
/// no way to pass the time to a check, hence this thread-local; each clock read costs ~25 ns
/// (about 100 instructions), and there were five per call. `now` must come from the clock the
/// limiters were built with (the guard's); the previous pin is restored even if `f` panics.
pub(crate) fn at<R>(now: crate::clock::MonoTime, f: impl FnOnce() -> R) -> R {
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            PINNED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(PINNED.with(|c| c.replace(now.as_nanos())));
    f()
}

/// One GCRA bucket.
pub(crate) type Limiter =
    RateLimiter<NotKeyed, InMemoryState, MonoClock, NoOpMiddleware<MonoInstant>>;

/// The tools' limiters of one policy snapshot, by the boundary's dense tool index (`None`: the
/// tool has no quota).
pub(crate) type ToolTable = Box<[Option<Arc<Limiter>>]>;

/// An agent's limiter as a run keeps it, with what says whether it is still the agent's.
pub(crate) struct AgentBucket {
    /// The [`RateLimiters`] it came from (compared by address, never dereferenced).
    owner: usize,
    /// That set's eviction count when the bucket was looked up.
    evictions: u64,
    pub(crate) limiter: Arc<Limiter>,
}

impl AgentBucket {
    /// Whether `rl` would still hand out this bucket for the agent: the same set of limiters
    /// (not replaced by a reload) and no agent bucket evicted since it was looked up. An evicted
    /// agent gets a new bucket on its next lookup; a run still holding the old one would give
    /// the agent a second quota.
    #[inline]
    pub(crate) fn is_current(&self, rl: &RateLimiters) -> bool {
        self.owner == std::ptr::from_ref(rl) as usize
            && self.evictions == rl.evictions.load(Ordering::Acquire)
    }
}

/// Why a call was rate limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limited {
    pub(crate) scope: &'static str,
    pub(crate) retry_after: Duration,
}

/// The limiters of one guard.
pub(crate) struct RateLimiters {
    clock: MonoClock,
    agent_quota: Option<Quota>,
    max_agents: usize,
    agents: ArcSwap<HashMap<Box<str>, Arc<Limiter>>>,
    agent_order: Mutex<std::collections::VecDeque<Box<str>>>,
    tools: HashMap<String, Quota>,
    default_tool: Option<Quota>,
    tool_limiters: ArcSwap<HashMap<Box<str>, Arc<Limiter>>>,
    writer: Mutex<()>,
    /// Agent buckets evicted so far (see [`AgentBucket::is_current`]). Incremented after the
    /// map without the bucket is published, so a lookup that reads the count first and then
    /// finds the bucket either sees the eviction counted or finds the new map.
    evictions: AtomicU64,
}

impl RateLimiters {
    pub(crate) fn new(cfg: &RateLimits, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let agent_quota = cfg
            .per_agent
            .map(|r| r.quota("rate_limits.per_agent"))
            .transpose()?;
        let default_tool = cfg
            .default_per_tool
            .map(|r| r.quota("rate_limits.default_per_tool"))
            .transpose()?;
        let mut tools = HashMap::new();
        for (name, r) in &cfg.per_tool {
            tools.insert(name.clone(), r.quota("rate_limits.per_tool")?);
        }
        let max_agents = cfg.max_agents.unwrap_or(10_000);
        if max_agents == 0 {
            return Err(ConfigError {
                field: "rate_limits.max_agents",
                reason: "must be at least 1",
            });
        }
        Ok(Self {
            clock: MonoClock(clock),
            agent_quota,
            max_agents,
            agents: ArcSwap::from_pointee(HashMap::new()),
            agent_order: Mutex::new(std::collections::VecDeque::new()),
            tools,
            default_tool,
            tool_limiters: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
            evictions: AtomicU64::new(0),
        })
    }

    /// Takes one unit from `l`, or says how long until one is there.
    #[inline]
    pub(crate) fn take(&self, l: &Limiter, scope: &'static str) -> Result<(), Limited> {
        // The clock is read again only to say how long to wait.
        l.check().map_err(|not_until| Limited {
            scope,
            retry_after: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// The bucket of `key`, created on first use. The common case borrows the map snapshot: no
    /// reference-count traffic on the map, no lock.
    fn bucket(
        &self,
        map: &ArcSwap<HashMap<Box<str>, Arc<Limiter>>>,
        key: &str,
        quota: Quota,
        bounded: bool,
    ) -> Arc<Limiter> {
        if let Some(l) = map.load().get(key) {
            return Arc::clone(l);
        }
        let _w = self.writer.lock();
        if let Some(l) = map.load().get(key) {
            return Arc::clone(l);
        }
        let mut next = HashMap::clone(&map.load());
        let mut evicted = false;
        if bounded {
            let mut order = self.agent_order.lock();
            while next.len() >= self.max_agents {
                match order.pop_front() {
                    Some(old) => {
                        evicted |= next.remove(&old).is_some();
                    }
                    None => break,
                }
            }
            order.push_back(key.into());
        }
        let l = Arc::new(RateLimiter::direct_with_clock(quota, self.clock.clone()));
        next.insert(key.into(), Arc::clone(&l));
        map.store(Arc::new(next));
        if evicted {
            self.evictions.fetch_add(1, Ordering::AcqRel);
        }
        l
    }

    /// The agent's bucket for a run to keep (`None` without a per-agent quota). The eviction
    /// count is read before the lookup (see [`AgentBucket::is_current`]).
    pub(crate) fn agent_bucket(&self, agent: &str) -> Option<AgentBucket> {
        let quota = self.agent_quota?;
        let evictions = self.evictions.load(Ordering::Acquire);
        Some(AgentBucket {
            owner: std::ptr::from_ref(self) as usize,
            evictions,
            limiter: self.bucket(&self.agents, agent, quota, true),
        })
    }

    /// The limiters of `boundary`'s tools, by its dense tool index: what a policy snapshot
    /// holds, so a check finds its tool's limiter without hashing. Every tool the policy
    /// defines with a quota (its own or the default) gets its bucket now; buckets already made
    /// (or carried over by a reload) are reused.
    pub(crate) fn tool_table(&self, boundary: &crate::boundary::ActionBoundary) -> ToolTable {
        let mut table: Vec<Option<Arc<Limiter>>> = vec![None; boundary.tool_count()];
        for name in boundary.document().tools.keys() {
            let (Some(admitted), Some(quota)) = (
                boundary.admitted_by_name(name),
                self.tools.get(name.as_str()).copied().or(self.default_tool),
            ) else {
                continue;
            };
            if let Some(slot) = table.get_mut(admitted.index()) {
                *slot = Some(self.bucket(&self.tool_limiters, name, quota, false));
            }
        }
        table.into_boxed_slice()
    }

    /// Takes one unit from the agent's and the tool's buckets, or says which is empty and for
    /// how long. The agent bucket is checked first; a call refused by the tool bucket has still
    /// used its agent unit (conservative). The guard does the same through the buckets it
    /// resolved beforehand; this keyed form serves the unit tests.
    #[cfg(test)]
    pub(crate) fn check(&self, agent: &str, tool: &str) -> Result<(), Limited> {
        if let Some(q) = self.agent_quota {
            self.take(&self.bucket(&self.agents, agent, q, true), "agent")?;
        }
        if let Some(q) = self.tools.get(tool).copied().or(self.default_tool) {
            self.take(&self.bucket(&self.tool_limiters, tool, q, false), "tool")?;
        }
        Ok(())
    }

    /// Takes over `previous`'s buckets wherever the quota is the same: the per-agent buckets if
    /// the agent quota is unchanged, and each tool's bucket if that tool's quota is. Used by a
    /// reload, so tightening one quota does not refill every other bucket.
    pub(crate) fn carry_over(&self, previous: &RateLimiters) {
        if self.agent_quota.is_some() && self.agent_quota == previous.agent_quota {
            self.agents.store(previous.agents.load_full());
            *self.agent_order.lock() = previous.agent_order.lock().clone();
        }
        let quota = |rl: &RateLimiters, tool: &str| rl.tools.get(tool).copied().or(rl.default_tool);
        let kept: HashMap<Box<str>, Arc<Limiter>> = previous
            .tool_limiters
            .load()
            .iter()
            .filter(|(tool, _)| {
                quota(self, tool).is_some() && quota(self, tool) == quota(previous, tool)
            })
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        self.tool_limiters.store(Arc::new(kept));
    }

    #[cfg(test)]
    fn agents_tracked(&self) -> usize {
        self.agents.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn per_tool_quotas_differ_and_refill_with_the_manual_clock() {
        let clock = Arc::new(ManualClock::new());
        let cfg = RateLimits {
            per_tool: BTreeMap::from([
                (
                    "search".to_owned(),
                    RateLimit::new(nz(5), Duration::from_secs(1)),
                ),
                (
                    "pay".to_owned(),
                    RateLimit::new(nz(1), Duration::from_secs(60)),
                ),
            ]),
            ..RateLimits::default()
        };
        let rl = RateLimiters::new(&cfg, clock.clone()).unwrap();
        for _ in 0..5 {
            rl.check("a", "search").unwrap();
        }
        let e = rl.check("a", "search").unwrap_err();
        assert_eq!(e.scope, "tool");
        assert_eq!(e.retry_after, Duration::from_millis(200));
        rl.check("a", "pay").unwrap();
        assert_eq!(
            rl.check("b", "pay").unwrap_err().retry_after,
            Duration::from_secs(60)
        );
        // unlisted tools are unlimited without a default
        for _ in 0..100 {
            rl.check("a", "other").unwrap();
        }
        clock.advance(Duration::from_millis(200));
        rl.check("a", "search").unwrap();
        assert!(rl.check("a", "search").is_err());
    }

    /// A guard pins the check's instant for its buckets; the pin must not outlive the check
    /// (later checks would run at a stale time: refused although refilled, or worse), not even
    /// one that panicked.
    #[test]
    fn a_pinned_instant_does_not_outlive_its_check() {
        let clock = Arc::new(ManualClock::new());
        let cfg = RateLimits {
            per_agent: Some(RateLimit::new(nz(1), Duration::from_secs(1))),
            ..RateLimits::default()
        };
        let rl = RateLimiters::new(&cfg, clock.clone()).unwrap();
        let t0 = clock.now();
        at(t0, || rl.check("a", "t")).unwrap();
        // Pinned at t0, the bucket is empty whatever the clock says.
        clock.advance(Duration::from_secs(5));
        assert_eq!(at(t0, || rl.check("a", "t")).unwrap_err().scope, "agent");
        // Unpinned: the clock's time, refilled.
        rl.check("a", "t").unwrap();
        let panicked = std::panic::catch_unwind(|| at(t0, || panic!("stage failed")));
        assert!(panicked.is_err());
        clock.advance(Duration::from_secs(5));
        rl.check("a", "t").unwrap();
    }

    #[test]
    fn per_agent_buckets_are_separate_and_bounded() {
        let clock = Arc::new(ManualClock::new());
        let cfg = RateLimits {
            per_agent: Some(RateLimit::new(nz(2), Duration::from_secs(10))),
            max_agents: Some(4),
            ..RateLimits::default()
        };
        let rl = RateLimiters::new(&cfg, clock).unwrap();
        rl.check("a", "t").unwrap();
        rl.check("a", "t").unwrap();
        assert_eq!(rl.check("a", "t").unwrap_err().scope, "agent");
        rl.check("b", "t").unwrap();
        for i in 0..100 {
            let _ = rl.check(&format!("x{i}"), "t");
        }
        assert!(rl.agents_tracked() <= 4);
    }

    #[test]
    fn bad_quotas_name_the_field() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let cfg = RateLimits {
            per_agent: Some(RateLimit {
                max_calls: nz(1),
                per: Duration::ZERO,
                burst: None,
            }),
            ..RateLimits::default()
        };
        assert_eq!(
            RateLimiters::new(&cfg, Arc::clone(&clock))
                .err()
                .unwrap()
                .field,
            "rate_limits.per_agent"
        );
        let cfg: RateLimits = serde_json::from_str(
            r#"{"per_tool": {"pay": {"max_calls": 3, "per": "1m"}}, "default_per_tool": {"max_calls": 100, "per": "1s", "burst": 10}}"#,
        )
        .unwrap();
        assert_eq!(cfg.per_tool["pay"].per, Duration::from_secs(60));
        assert!(RateLimiters::new(&cfg, clock).is_ok());
        for bad in [
            r#"{"per_tool": {"pay": {"max_calls": 0, "per": "1m"}}}"#,
            r#"{"per_tool": {"pay": {"max_calls": 3, "per": 60}}}"#,
            r#"{"per_tool": {"pay": {"max_calls": 3, "per_secs": 60}}}"#,
        ] {
            assert!(serde_json::from_str::<RateLimits>(bad).is_err(), "{bad}");
        }
    }
}
