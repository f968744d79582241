//! `CircuitBreaker`: stop calling what keeps failing, then probe carefully before trusting it
//! again.
//!
//! Semantics follow Resilience4j's breaker:
//!
//! - **Closed**: calls pass; outcomes feed a sliding window (the last N calls, or the calls of the
//!   last T seconds). Once the window holds at least `minimum_calls`, a failure rate or slow-call
//!   rate at or above its threshold opens the breaker; so does a run of consecutive failures.
//! - **Open**: every call is rejected until `wait_in_open` has passed (multiplied by `backoff` on
//!   each consecutive re-opening, up to `max_wait_in_open`).
//! - **Half-open**: exactly `half_open_calls` probe calls are admitted, never more, however many
//!   threads race for them. When all probes have reported, the breaker closes (their failure and
//!   slow rates under the thresholds) or re-opens.
//! - **Forced open** and **disabled**: manual overrides (reject everything / admit everything).
//!
//! The closed-state check is one atomic load. All time comes from the injected [`Clock`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tollgate::breaker::{BreakerConfig, CircuitBreaker, CallResult, State, Window};
//! use tollgate::clock::ManualClock;
//!
//! let clock = Arc::new(ManualClock::new());
//! let cfg = BreakerConfig {
//!     window: Window::Count(10),
//!     minimum_calls: 4,
//!     failure_rate: 50.0,
//!     ..BreakerConfig::default()
//! };
//! let breaker = CircuitBreaker::new(cfg, clock.clone())?;
//! for _ in 0..4 {
//!     let ticket = breaker.try_acquire()?;
//!     breaker.record(ticket, CallResult::Failure, Duration::from_millis(5));
//! }
//! assert_eq!(breaker.state(), State::Open);
//! assert!(breaker.try_acquire().is_err());
//! clock.advance(Duration::from_secs(30));
//! assert!(breaker.try_acquire().is_ok()); // a half-open probe
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod alert;
mod baseline;
mod keyed;
mod rate;

pub use alert::{Alert, AlertKind, AlertSink, ChannelAlerts, TracingAlerts};
pub use baseline::{Baseline, BaselineConfig, BaselineRule, BaselineSnapshot, UnexpectedTool};
pub use keyed::{BreakerKey, Keyed, KeyedBreakers};
pub(crate) use rate::{AgentBucket, Limited, RateLimiters, ToolTable, at as rate_limits_at};
pub use rate::{RateLimit, RateLimits};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Clock;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Calls pass and are measured.
    Closed,
    /// Calls are rejected until the wait is over.
    Open,
    /// A fixed number of probe calls pass.
    HalfOpen,
    /// Manually opened: every call is rejected until [`CircuitBreaker::reset`].
    ForcedOpen,
    /// Manually disabled: every call passes and nothing is measured.
    Disabled,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
const FORCED_OPEN: u8 = 3;
const DISABLED: u8 = 4;

fn decode(s: u8) -> State {
    match s {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        _ => State::Disabled,
    }
}

/// The sliding window over which rates are computed.
///
/// In documents: `window = { calls = 100 }` or `window = { time = "60s" }` (whole seconds: the
/// time window counts in one-second buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N calls.
    Count(u32),
    /// The calls of the last N seconds (one-second buckets).
    Seconds(u32),
}

/// The document form of [`Window`].
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum WindowDoc {
    Calls(u32),
    Time(#[serde(with = "crate::units::duration")] Duration),
}

impl Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Window::Count(n) => WindowDoc::Calls(n),
            Window::Seconds(n) => WindowDoc::Time(Duration::from_secs(u64::from(n))),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match WindowDoc::deserialize(d)? {
            WindowDoc::Calls(n) => Ok(Window::Count(n)),
            WindowDoc::Time(t) if t.subsec_nanos() != 0 => Err(D::Error::custom(
                "a time window is a whole number of seconds (it counts in one-second buckets)",
            )),
            WindowDoc::Time(t) => u32::try_from(t.as_secs())
                .map(Window::Seconds)
                .map_err(|_| D::Error::custom("a time window is at most 3600 seconds")),
        }
    }
}

/// How a call ended, as the breaker counts it (a classifier maps outcomes to this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallResult {
    /// Counts as a success (slowness is judged separately, from the duration).
    Success,
    /// Counts as a failure.
    Failure,
    /// Not counted at all (e.g. a validation error that says nothing about the tool's health).
    Ignored,
}

/// Every threshold of a breaker. All of them are parameters; nothing is hard-coded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// The sliding window.
    pub window: Window,
    /// Calls the window must hold before rates are judged.
    pub minimum_calls: u32,
    /// Failure rate, in percent, at or above which the breaker opens (1 to 100).
    pub failure_rate: f64,
    /// Slow-call rate, in percent, at or above which the breaker opens (1 to 100).
    pub slow_call_rate: f64,
    /// A call at least this long is slow.
    #[serde(with = "crate::units::duration")]
    pub slow_call_duration: Duration,
    /// Consecutive failures that open the breaker whatever the rates (0 = off).
    pub consecutive_failures: u32,
    /// How long the breaker stays open before probing.
    #[serde(with = "crate::units::duration")]
    pub wait_in_open: Duration,
    /// Multiplier applied to the wait on each consecutive re-opening (1.0 = constant).
    pub backoff: f64,
    /// Upper bound of the wait with backoff.
    #[serde(with = "crate::units::duration")]
    pub max_wait_in_open: Duration,
    /// Probe calls admitted in half-open.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Window::Count(100),
            minimum_calls: 20,
            failure_rate: 50.0,
            slow_call_rate: 100.0,
            slow_call_duration: Duration::from_secs(60),
            consecutive_failures: 0,
            wait_in_open: Duration::from_secs(30),
            backoff: 1.0,
            max_wait_in_open: Duration::from_secs(30),
            half_open_calls: 3,
        }
    }
}

/// A breaker configuration that cannot work. Names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("breaker config `{field}`: {reason}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// Why.
    pub reason: &'static str,
}

impl BreakerConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError { field, reason });
        match self.window {
            Window::Count(0) | Window::Seconds(0) => return bad("window", "must be at least 1"),
            Window::Count(n) if n > 100_000 => return bad("window", "at most 100000 calls"),
            Window::Seconds(n) if n > 3600 => return bad("window", "at most 3600 seconds"),
            _ => {}
        }
        if self.minimum_calls == 0 {
            return bad("minimum_calls", "must be at least 1");
        }
        if let Window::Count(n) = self.window
            && self.minimum_calls > n
            && self.consecutive_failures == 0
        {
            // The window holds the last `n` calls, so the rates are never judged; with no
            // consecutive-failure rule either, nothing could ever open the breaker. (With one,
            // a `minimum_calls` over the window is how a breaker opens on consecutive failures
            // only.)
            return bad(
                "minimum_calls",
                "is more than the window's number of calls and `consecutive_failures` is 0: \
                 the breaker could never open",
            );
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 100.0) {
            return bad("failure_rate", "must be in (0, 100]");
        }
        if !(self.slow_call_rate > 0.0 && self.slow_call_rate <= 100.0) {
            return bad("slow_call_rate", "must be in (0, 100]");
        }
        if self.slow_call_duration.is_zero() {
            return bad("slow_call_duration", "must be positive");
        }
        if self.wait_in_open.is_zero() {
            return bad("wait_in_open", "must be positive");
        }
        if !(self.backoff >= 1.0 && self.backoff.is_finite()) {
            return bad("backoff", "must be a finite number >= 1");
        }
        if self.max_wait_in_open < self.wait_in_open {
            return bad("max_wait_in_open", "must be >= wait_in_open");
        }
        if self.half_open_calls == 0 {
            return bad("half_open_calls", "must be at least 1");
        }
        Ok(())
    }
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit {state:?}: call rejected{}", retry_hint(*.retry_after))]
#[non_exhaustive]
pub struct Rejected {
    /// The state that rejected it.
    pub state: State,
    /// When a probe may be admitted, if known.
    pub retry_after: Option<Duration>,
}

fn retry_hint(d: Option<Duration>) -> String {
    d.map(|d| format!(", retry after {} ms", d.as_millis()))
        .unwrap_or_default()
}

/// Proof that a call was admitted; hand it back to [`CircuitBreaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "report the call's result with CircuitBreaker::record"]
pub struct Ticket {
    /// Whether the call was a half-open probe, and of which half-open episode.
    probe_of: Option<u64>,
}

impl Ticket {
    /// A ticket for a call admitted while no breaker existed yet (counted as a closed-state call).
    pub(crate) fn unguarded() -> Self {
        Ticket { probe_of: None }
    }
}

/// A transition, for alerts and audit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    /// From.
    pub from: State,
    /// To.
    pub to: State,
    /// Failure rate of the window (or probes) that caused it, percent.
    pub failure_rate: f64,
    /// Slow-call rate, percent.
    pub slow_call_rate: f64,
    /// Calls measured.
    pub calls: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    calls: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug)]
struct Measure {
    // count-based ring
    ring: Vec<u8>, // bit 0 = failure, bit 1 = slow, 0xFF = empty
    next: usize,
    /// Running totals of the ring, kept in step with it (O(1) per call).
    ring_tally: Tally,
    // time-based buckets: (second, tally)
    buckets: Vec<(u64, Tally)>,
    consecutive_failures: u32,
    probes: Tally,
    reopenings: u32,
}

const EMPTY: u8 = 0xFF;

/// Called on every transition.
type TransitionHook = Box<dyn Fn(&Transition) + Send + Sync>;

/// A circuit breaker. Share it (`Arc`) between threads.
pub struct CircuitBreaker {
    cfg: BreakerConfig,
    clock: Arc<dyn Clock>,
    state: AtomicU8,
    /// Monotonic nanos at which an open breaker may probe.
    open_until: AtomicU64,
    /// Counts half-open episodes, so a late probe result from an earlier episode is ignored.
    episode: AtomicU64,
    admitted_probes: AtomicU32,
    measure: Mutex<Measure>,
    /// Set (under the lock) while the breaker is closed with a count window that holds no
    /// failure and no slow call: a fast success then goes to `deferred` without the lock.
    clean: AtomicBool,
    /// Fast successes not yet in the window (see [`deferred`]).
    deferred: deferred::Deferred,
    on_transition: Option<TransitionHook>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("config", &self.cfg)
            .finish()
    }
}

impl CircuitBreaker {
    /// A closed breaker with `cfg`, reading time from `clock`.
    pub fn new(cfg: BreakerConfig, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let counted = matches!(cfg.window, Window::Count(_));
        let (ring, buckets) = match cfg.window {
            Window::Count(n) => (vec![EMPTY; n as usize], Vec::new()),
            Window::Seconds(n) => (Vec::new(), vec![(u64::MAX, Tally::default()); n as usize]),
        };
        Ok(Self {
            cfg,
            clock,
            state: AtomicU8::new(CLOSED),
            open_until: AtomicU64::new(0),
            episode: AtomicU64::new(0),
            admitted_probes: AtomicU32::new(0),
            measure: Mutex::new(Measure {
                ring,
                next: 0,
                ring_tally: Tally::default(),
                buckets,
                consecutive_failures: 0,
                probes: Tally::default(),
                reopenings: 0,
            }),
            clean: AtomicBool::new(counted),
            deferred: deferred::Deferred::default(),
            on_transition: None,
        })
    }

    /// Calls `f` on every state transition (from the thread that caused it).
    pub fn on_transition(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.on_transition = Some(Box::new(f));
        self
    }

    /// The current state.
    pub fn state(&self) -> State {
        decode(self.state.load(Ordering::Acquire))
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// Admits a call or says why not. Closed: one atomic load.
    #[inline]
    pub fn try_acquire(&self) -> Result<Ticket, Rejected> {
        match self.state.load(Ordering::Acquire) {
            CLOSED | DISABLED => Ok(Ticket { probe_of: None }),
            _ => self.acquire_slow(),
        }
    }

    #[cold]
    fn acquire_slow(&self) -> Result<Ticket, Rejected> {
        loop {
            match self.state.load(Ordering::Acquire) {
                CLOSED | DISABLED => return Ok(Ticket { probe_of: None }),
                FORCED_OPEN => {
                    return Err(Rejected {
                        state: State::ForcedOpen,
                        retry_after: None,
                    });
                }
                OPEN => {
                    let now = self.clock.now().as_nanos();
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(Rejected {
                            state: State::Open,
                            retry_after: Some(Duration::from_nanos(until - now)),
                        });
                    }
                    // Time to probe: one thread moves the breaker to half-open.
                    let mut m = self.lock();
                    if self.state.load(Ordering::Acquire) == OPEN {
                        m.probes = Tally::default();
                        self.episode.fetch_add(1, Ordering::AcqRel);
                        self.admitted_probes.store(0, Ordering::Release);
                        self.state.store(HALF_OPEN, Ordering::Release);
                        drop(m);
                        let _ = self.notify(State::Open, State::HalfOpen, Tally::default());
                    }
                }
                _ => {
                    // HALF_OPEN: admit exactly `half_open_calls` probes.
                    let episode = self.episode.load(Ordering::Acquire);
                    let n = self.cfg.half_open_calls;
                    let admitted = self.admitted_probes.fetch_update(
                        Ordering::AcqRel,
                        Ordering::Acquire,
                        |a| (a < n).then_some(a + 1),
                    );
                    return match admitted {
                        Ok(_) if self.episode.load(Ordering::Acquire) == episode => Ok(Ticket {
                            probe_of: Some(episode),
                        }),
                        _ => Err(Rejected {
                            state: State::HalfOpen,
                            retry_after: None,
                        }),
                    };
                }
            }
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Measure> {
        self.measure.lock()
    }

    fn notify(&self, from: State, to: State, t: Tally) -> Transition {
        let tr = Transition {
            from,
            to,
            failure_rate: rate(t.failures, t.calls),
            slow_call_rate: rate(t.slow, t.calls),
            calls: t.calls,
        };
        if let Some(f) = &self.on_transition {
            f(&tr);
        }
        tr
    }

    /// Reports how an admitted call ended and how long it took. Returns the transition the
    /// result caused, if any.
    pub fn record(&self, ticket: Ticket, result: CallResult, took: Duration) -> Option<Transition> {
        if result == CallResult::Ignored {
            if ticket.probe_of.is_some() {
                // An ignored probe frees its slot so the episode can still conclude.
                let _ =
                    self.admitted_probes
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_sub(1));
            }
            return None;
        }
        let failed = result == CallResult::Failure;
        let slow = took >= self.cfg.slow_call_duration;
        if !failed && !slow && ticket.probe_of.is_none() && self.clean.load(Ordering::Acquire) {
            // Closed, nothing but successes in the window: counted without the lock.
            self.deferred.add();
            return None;
        }
        let mut m = self.lock();
        let owed = self.deferred.take();
        if owed > 0 && self.state.load(Ordering::Acquire) == CLOSED {
            self.push_successes(&mut m, owed);
        }
        match (self.state.load(Ordering::Acquire), ticket.probe_of) {
            (HALF_OPEN, Some(ep)) if ep == self.episode.load(Ordering::Acquire) => {
                m.probes.calls += 1;
                m.probes.failures += u32::from(failed);
                m.probes.slow += u32::from(slow);
                if m.probes.calls >= self.cfg.half_open_calls {
                    let t = m.probes;
                    if self.exceeds(t) {
                        return Some(self.open(&mut m, State::HalfOpen, t));
                    }
                    self.reset_measure(&mut m);
                    m.reopenings = 0;
                    self.state.store(CLOSED, Ordering::Release);
                    self.refresh_clean(&m);
                    drop(m);
                    return Some(self.notify(State::HalfOpen, State::Closed, t));
                }
                None
            }
            (CLOSED, None) => {
                let t = self.push(&mut m, failed, slow);
                m.consecutive_failures = if failed {
                    m.consecutive_failures + 1
                } else {
                    0
                };
                self.refresh_clean(&m);
                let streak = self.cfg.consecutive_failures > 0
                    && m.consecutive_failures >= self.cfg.consecutive_failures;
                if streak || (t.calls >= self.cfg.minimum_calls && self.exceeds(t)) {
                    return Some(self.open(&mut m, State::Closed, t));
                }
                None
            }
            // Results from calls admitted in an earlier state (or a disabled/forced breaker)
            // do not count.
            _ => None,
        }
    }

    fn exceeds(&self, t: Tally) -> bool {
        t.calls > 0
            && (rate(t.failures, t.calls) >= self.cfg.failure_rate
                || rate(t.slow, t.calls) >= self.cfg.slow_call_rate)
    }

    fn open(&self, m: &mut Measure, from: State, t: Tally) -> Transition {
        let wait = self.cfg.wait_in_open.as_secs_f64()
            * self
                .cfg
                .backoff
                .powi(i32::try_from(m.reopenings).unwrap_or(i32::MAX));
        // A `max_wait_in_open` near `Duration::MAX` can round up past it as an f64, where
        // `from_secs_f64` would panic: the cap itself is the wait then.
        let wait = Duration::try_from_secs_f64(wait.min(self.cfg.max_wait_in_open.as_secs_f64()))
            .map_or(self.cfg.max_wait_in_open, |w| {
                w.min(self.cfg.max_wait_in_open)
            });
        m.reopenings = m.reopenings.saturating_add(1);
        self.reset_measure(m);
        let until = self.clock.now().saturating_add(wait);
        self.open_until.store(until.as_nanos(), Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        self.clean.store(false, Ordering::Release);
        self.notify(from, State::Open, t)
    }

    /// Whether a fast success may skip the lock: closed, a count window, no failure or slow
    /// call in it. Called under the lock after every change of the window or the state.
    fn refresh_clean(&self, m: &Measure) {
        let clean = self.state.load(Ordering::Acquire) == CLOSED
            && matches!(self.cfg.window, Window::Count(_))
            && m.ring_tally.failures == 0
            && m.ring_tally.slow == 0
            && m.consecutive_failures == 0;
        self.clean.store(clean, Ordering::Release);
    }

    /// Adds `n` fast successes to a count window that held no failure or slow call when they
    /// were counted (a time window never defers). `n` beyond the window's length leaves it as
    /// full of successes as `len` of them do.
    fn push_successes(&self, m: &mut Measure, n: u64) {
        let len = m.ring.len() as u64;
        for _ in 0..n.min(len) {
            self.push(m, false, false);
        }
        m.consecutive_failures = 0;
    }

    fn reset_measure(&self, m: &mut Measure) {
        // Successes counted before the reset belong to the window being emptied.
        let _ = self.deferred.take();
        m.ring.iter_mut().for_each(|x| *x = EMPTY);
        m.next = 0;
        m.ring_tally = Tally::default();
        m.buckets
            .iter_mut()
            .for_each(|b| *b = (u64::MAX, Tally::default()));
        m.consecutive_failures = 0;
        m.probes = Tally::default();
    }

    /// Adds one outcome to the window and returns the window's totals.
    fn push(&self, m: &mut Measure, failed: bool, slow: bool) -> Tally {
        let bits = u8::from(failed) | (u8::from(slow) << 1);
        match self.cfg.window {
            Window::Count(_) => {
                let i = m.next;
                let old = m.ring[i];
                if old != EMPTY {
                    m.ring_tally.calls -= 1;
                    m.ring_tally.failures -= u32::from(old & 1);
                    m.ring_tally.slow -= u32::from(old >> 1 & 1);
                }
                m.ring[i] = bits;
                m.ring_tally.calls += 1;
                m.ring_tally.failures += u32::from(failed);
                m.ring_tally.slow += u32::from(slow);
                m.next = (i + 1) % m.ring.len();
                m.ring_tally
            }
            Window::Seconds(n) => {
                let sec = self.clock.now().as_nanos() / 1_000_000_000;
                let len = m.buckets.len() as u64;
                let slot = &mut m.buckets[(sec % len) as usize];
                if slot.0 != sec {
                    *slot = (sec, Tally::default());
                }
                slot.1.calls += 1;
                slot.1.failures += u32::from(failed);
                slot.1.slow += u32::from(slow);
                let oldest = sec.saturating_sub(u64::from(n) - 1);
                let mut t = Tally::default();
                for (s, b) in &m.buckets {
                    if *s != u64::MAX && *s >= oldest && *s <= sec {
                        t.calls += b.calls;
                        t.failures += b.failures;
                        t.slow += b.slow;
                    }
                }
                t
            }
        }
    }

    /// Opens the breaker until [`reset`](Self::reset), whatever the measurements.
    pub fn force_open(&self) {
        let from = self.state();
        let _m = self.lock();
        self.state.store(FORCED_OPEN, Ordering::Release);
        self.clean.store(false, Ordering::Release);
        drop(_m);
        let _ = self.notify(from, State::ForcedOpen, Tally::default());
    }

    /// Admits everything and measures nothing until [`reset`](Self::reset).
    pub fn disable(&self) {
        let from = self.state();
        let _m = self.lock();
        self.state.store(DISABLED, Ordering::Release);
        self.clean.store(false, Ordering::Release);
        drop(_m);
        let _ = self.notify(from, State::Disabled, Tally::default());
    }

    /// Back to closed with an empty window.
    pub fn reset(&self) {
        let from = self.state();
        let mut m = self.lock();
        self.reset_measure(&mut m);
        m.reopenings = 0;
        self.state.store(CLOSED, Ordering::Release);
        self.refresh_clean(&m);
        drop(m);
        let _ = self.notify(from, State::Closed, Tally::default());
    }
}

fn rate(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}

mod deferred;
#[cfg(test)]
mod tests;
