//! Injectable time.
//!
//! Every time-dependent part of tollgate (latency measurement today; windows, TTLs, approval timeouts
//! and rate limits as they arrive) reads time through a [`Clock`], so tests drive time with a
//! [`ManualClock`] instead of sleeping.
//!
//! Two readings are kept apart on purpose: [`Clock::now`] is *monotonic* (never goes backwards, used
//! for every duration and deadline) and [`Clock::wall`] is the wall-clock time written into audit
//! records. Mixing them is how rate limiters and timeouts break when NTP steps the system clock.
//!
//! Wall time decides something in exactly one place: a deadline that must survive a restart. A
//! restarted process shares no monotonic origin with its predecessor, so the approval queue
//! records deadlines and approval times on the wall clock and, when it replays them, turns each
//! into a monotonic deadline once (the time left on the wall clock, capped at the original
//! timeout); from then on only the monotonic clock counts. A wall-clock step *while the
//! process is down* is therefore the only one that can move an approval deadline or a grant's
//! expiry; a step while it runs moves none. [`ManualClock::step_wall_forward`] and
//! [`ManualClock::step_wall_back`] let tests prove that.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::clock::{Clock, ManualClock};
//!
//! let clock = ManualClock::new();
//! let t0 = clock.now();
//! clock.advance(Duration::from_millis(250));
//! assert_eq!(clock.now().duration_since(t0), Duration::from_millis(250));
//! ```

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point on a monotonic clock, in nanoseconds since that clock's own origin.
///
/// Only differences between two readings of the *same* clock are meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(u64);

impl MonoTime {
    /// A reading `nanos` nanoseconds after the clock's origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the clock's origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later (never panics).
    pub fn duration_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This reading moved forward by `d` (saturating).
    pub fn saturating_add(self, d: Duration) -> MonoTime {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        MonoTime(self.0.saturating_add(nanos))
    }
}

/// A source of monotonic and wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current monotonic reading. Never decreases between two calls on the same clock.
    fn now(&self) -> MonoTime;
    /// The current wall-clock time, for records meant for humans.
    fn wall(&self) -> SystemTime;
}

/// The real clock: [`Instant`] for monotonic time, [`SystemTime`] for wall time.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A system clock whose monotonic origin is the moment of this call.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> MonoTime {
        let nanos = Instant::now().duration_since(self.origin).as_nanos();
        MonoTime(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to. Shared freely between threads.
///
/// Its wall time is a fixed start (by default 2026-01-01T00:00:00Z) plus the monotonic reading, so
/// audit timestamps in tests are reproducible, plus any steps of the wall clock alone
/// ([`step_wall_forward`](Self::step_wall_forward), [`step_wall_back`](Self::step_wall_back)),
/// which simulate NTP or an operator setting the system clock.
///
/// ```
/// use std::time::Duration;
/// use tollgate::clock::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let (t0, w0) = (clock.now(), clock.wall());
/// clock.step_wall_forward(Duration::from_secs(3600));
/// assert_eq!(clock.now(), t0, "the monotonic clock does not move");
/// assert_eq!(clock.wall().duration_since(w0)?, Duration::from_secs(3600));
/// clock.step_wall_back(Duration::from_secs(7200));
/// assert!(clock.wall() < w0);
/// # Ok::<(), std::time::SystemTimeError>(())
/// ```
#[derive(Debug)]
pub struct ManualClock {
    nanos: AtomicU64,
    wall_origin: SystemTime,
    /// Net wall-clock steps, in nanoseconds (positive: forward).
    wall_offset: AtomicI64,
}

impl ManualClock {
    /// A manual clock at monotonic zero, wall time 2026-01-01T00:00:00Z.
    pub fn new() -> Self {
        Self::with_wall_origin(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }

    /// A manual clock at monotonic zero whose wall time starts at `origin`.
    pub fn with_wall_origin(origin: SystemTime) -> Self {
        Self {
            nanos: AtomicU64::new(0),
            wall_origin: origin,
            wall_offset: AtomicI64::new(0),
        }
    }

    /// Moves the clock forward by `d` (saturating at the end of time).
    pub fn advance(&self, d: Duration) {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(add))
            });
    }

    /// Steps the wall clock forward by `d` without moving the monotonic clock (saturating).
    pub fn step_wall_forward(&self, d: Duration) {
        let by = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let _ = self
            .wall_offset
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o.saturating_add(by))
            });
    }

    /// Steps the wall clock back by `d` without moving the monotonic clock (saturating).
    pub fn step_wall_back(&self, d: Duration) {
        let by = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let _ = self
            .wall_offset
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| {
                Some(o.saturating_sub(by))
            });
    }

    /// Sets the monotonic reading. Moving backwards is refused (returns `false`), because a
    /// monotonic clock that goes back is exactly the bug this abstraction exists to rule out.
    pub fn set(&self, to: MonoTime) -> bool {
        self.nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (to.0 >= n).then_some(to.0)
            })
            .is_ok()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> MonoTime {
        MonoTime(self.nanos.load(Ordering::Acquire))
    }

    fn wall(&self) -> SystemTime {
        let base = self.wall_origin + Duration::from_nanos(self.nanos.load(Ordering::Acquire));
        let offset = self.wall_offset.load(Ordering::Acquire);
        let step = Duration::from_nanos(offset.unsigned_abs());
        let stepped = if offset >= 0 {
            base.checked_add(step)
        } else {
            base.checked_sub(step)
        };
        stepped.unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_advances_and_refuses_to_go_back() {
        let c = ManualClock::new();
        assert_eq!(c.now(), MonoTime::from_nanos(0));
        c.advance(Duration::from_secs(2));
        assert_eq!(c.now().as_nanos(), 2_000_000_000);
        assert!(!c.set(MonoTime::from_nanos(1)));
        assert_eq!(c.now().as_nanos(), 2_000_000_000);
        assert!(c.set(MonoTime::from_nanos(3_000_000_000)));
        assert_eq!(
            c.wall().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_767_225_603
        );
    }

    #[test]
    fn wall_steps_leave_the_monotonic_clock_alone() {
        let c = ManualClock::new();
        let secs = |c: &ManualClock| c.wall().duration_since(UNIX_EPOCH).unwrap().as_secs();
        c.advance(Duration::from_secs(10));
        c.step_wall_forward(Duration::from_secs(3600));
        assert_eq!(c.now().as_nanos(), 10_000_000_000);
        assert_eq!(secs(&c), 1_767_225_600 + 10 + 3600);
        c.step_wall_back(Duration::from_secs(7200));
        assert_eq!(secs(&c), 1_767_225_600 + 10 - 3600);
        c.advance(Duration::from_secs(5));
        assert_eq!(secs(&c), 1_767_225_600 + 15 - 3600);
        assert_eq!(c.now().as_nanos(), 15_000_000_000);
    }

    #[test]
    fn duration_since_saturates_instead_of_panicking() {
        let a = MonoTime::from_nanos(10);
        let b = MonoTime::from_nanos(20);
        assert_eq!(a.duration_since(b), Duration::ZERO);
        assert_eq!(b.duration_since(a), Duration::from_nanos(10));
        assert_eq!(
            MonoTime::from_nanos(u64::MAX - 1).saturating_add(Duration::from_secs(1)),
            MonoTime::from_nanos(u64::MAX)
        );
    }

    #[test]
    fn system_clock_is_monotonic() {
        let c = SystemClock::new();
        let mut last = c.now();
        for _ in 0..1000 {
            let n = c.now();
            assert!(n >= last);
            last = n;
        }
    }
}
