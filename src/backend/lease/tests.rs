//! The host side of the leases against an in-memory source, with a manual clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::call::RunContext;
use crate::clock::ManualClock;
use crate::guard::{SharedBudget, Units};

/// One budget key in memory: a limit per window, windows advanced by the test.
#[derive(Default)]
struct Memory {
    limit: u64,
    allocated: Mutex<u64>,
    window: AtomicU64,
    window_left: Mutex<Duration>,
    down: AtomicBool,
    leases: AtomicU64,
    released: Mutex<Vec<(i64, u64)>>,
}

impl LeaseSource for Memory {
    fn lease(&self, _: &BudgetSpec, _: &str, want: u64) -> Result<Grant, LeaseError> {
        if self.down.load(Ordering::Acquire) {
            return Err(LeaseError::Refused {
                budget: "calls".into(),
                reason: "down".into(),
            });
        }
        self.leases.fetch_add(1, Ordering::Relaxed);
        let mut a = self.allocated.lock();
        let units = want.min(self.limit - *a);
        *a += units;
        Ok(Grant {
            units,
            window: self.window.load(Ordering::Acquire) as i64,
            window_left: *self.window_left.lock(),
        })
    }
    fn release(&self, _: &BudgetSpec, _: &str, window: i64, unused: u64) -> Result<(), LeaseError> {
        self.released.lock().push((window, unused));
        Ok(())
    }
    fn heartbeat(&self) -> Result<(), LeaseError> {
        Ok(())
    }
}

fn section(limit: u64, chunk: u64) -> LeasesSection {
    LeasesSection {
        lease_timeout: Duration::from_secs(60),
        heartbeat: Duration::from_secs(10),
        refill_below_percent: 50,
        budgets: vec![BudgetSpec {
            name: "calls".into(),
            per: Per::Agent,
            measure: Measure::Calls,
            limit,
            window: Duration::from_secs(60),
            chunk: Some(chunk),
        }],
    }
}

fn one() -> Units {
    Units {
        calls: 1,
        ..Units::default()
    }
}

fn setup(limit: u64, chunk: u64) -> (Arc<Memory>, Arc<ManualClock>, LeasedBudgets) {
    setup_with(section(limit, chunk))
}

fn setup_with(sec: LeasesSection) -> (Arc<Memory>, Arc<ManualClock>, LeasedBudgets) {
    let limit = sec.budgets[0].limit;
    let mem = Arc::new(Memory {
        limit,
        ..Memory::default()
    });
    *mem.window_left.lock() = Duration::from_secs(60);
    let clock = Arc::new(ManualClock::new());
    let b = LeasedBudgets::start(&sec, mem.clone(), clock.clone()).unwrap();
    (mem, clock, b)
}

#[test]
fn units_of_an_ended_window_are_never_spent_in_the_next() {
    let (mem, clock, b) = setup(1_000, 10);
    let run = RunContext::new("a", "worker");
    b.take(&run, one()).unwrap();
    let before = mem.leases.load(Ordering::Relaxed);
    // The window ends with units left locally: the next call leases in the new window.
    clock.advance(Duration::from_secs(61));
    mem.window.store(60_000, Ordering::Release);
    b.take(&run, one()).unwrap();
    assert!(mem.leases.load(Ordering::Relaxed) > before, "leased anew");
    assert_eq!(b.local_balance("calls", "a").map(|v| v < 10), Some(true));
}

#[test]
fn an_exhausted_budget_denies_without_asking_the_source_again_until_the_retry_time() {
    // No lease ahead (1 % of a 3-unit chunk is 0): every lease below is the check path's.
    let mut sec = section(3, 3);
    sec.refill_below_percent = 1;
    let (mem, clock, b) = setup_with(sec);
    let run = RunContext::new("a", "worker");
    for _ in 0..3 {
        b.take(&run, one()).unwrap();
    }
    let e = b.take(&run, one()).unwrap_err();
    assert_eq!(e.rule.as_str(), "fleet.budget.calls");
    assert!(e.reason.contains("exhausted"), "{}", e.reason);
    let asked = mem.leases.load(Ordering::Relaxed);
    for _ in 0..100 {
        assert!(b.take(&run, one()).is_err());
    }
    assert_eq!(
        mem.leases.load(Ordering::Relaxed),
        asked,
        "no lease per denied call"
    );
    clock.advance(Duration::from_secs(11));
    assert!(b.take(&run, one()).is_err());
    assert_eq!(mem.leases.load(Ordering::Relaxed), asked + 1);
}

#[test]
fn a_source_that_fails_denies_and_nothing_unleased_is_spent() {
    let (mem, _clock, b) = setup(100, 5);
    mem.down.store(true, Ordering::Release);
    let run = RunContext::new("a", "worker");
    let e = b.take(&run, one()).unwrap_err();
    assert!(e.reason.contains("cannot be leased"), "{}", e.reason);
    assert_eq!(*mem.allocated.lock(), 0);
}

#[test]
fn shutdown_gives_back_exactly_what_is_left_and_nothing_can_be_spent_after() {
    let (mem, _clock, b) = setup(100, 10);
    let run = RunContext::new("a", "worker");
    for _ in 0..2 {
        b.take(&run, one()).unwrap();
    }
    // A call that never ran gives its unit back locally.
    let taken = b.take(&run, one()).unwrap();
    b.give_back(&run, one(), taken);
    let left = b.local_balance("calls", "a").unwrap();
    let stats = b.shutdown().unwrap();
    assert_eq!(stats.returned as i64, left);
    let spent = *mem.allocated.lock() - stats.returned;
    assert_eq!(spent, 2);
    assert_eq!(b.local_balance("calls", "a"), Some(0));
    assert_eq!(mem.released.lock().len(), 1);
}

/// Review finding: units reserved in one window and given back after the next window began
/// were credited to the new window: 100 reserved in window 1, window 2 starts, another call
/// takes all 100 of window 2, the first call reports 0 used -> its 100 went into window 2 and a
/// third take of 100 succeeded (200 spent against 100). Units go back only to their window.
#[test]
fn units_given_back_after_their_window_ended_are_not_credited_to_the_next() {
    let mut sec = section(100, 100);
    sec.budgets[0].measure = Measure::Tokens;
    let (mem, clock, b) = setup_with(sec);
    let run = RunContext::new("a", "worker");
    let u = Units {
        calls: 1,
        tokens: 100,
        cost_micros: 0,
    };
    let first = b.take(&run, u).unwrap(); // window 1: all of it
    // Window 2 begins while the first call runs.
    clock.advance(Duration::from_secs(61));
    mem.window.store(1, Ordering::Release);
    *mem.allocated.lock() = 0;
    let second = b.take(&run, u).unwrap(); // all of window 2
    b.give_back(&run, u, first); // the first call used nothing
    assert_eq!(b.local_balance("calls", "a"), Some(0));
    assert!(b.take(&run, u).is_err(), "window 2 would spend 200 of 100");
    // A give-back within its own window still returns.
    b.give_back(&run, u, second);
    assert_eq!(b.local_balance("calls", "a"), Some(100));
    assert!(b.take(&run, u).is_ok());
}

/// The all-or-nothing rollback of a take refused by a later budget also gives back only to the
/// window the units came from.
#[test]
fn a_refused_take_rolls_back_into_its_own_window_only() {
    let mut sec = section(100, 10);
    sec.budgets.push(BudgetSpec {
        name: "tokens".into(),
        per: Per::Agent,
        measure: Measure::Tokens,
        limit: 100,
        window: Duration::from_secs(60),
        chunk: Some(10),
    });
    let (_mem, _clock, b) = setup_with(sec);
    let run = RunContext::new("a", "worker");
    let u = Units {
        calls: 1,
        tokens: 1_000,
        cost_micros: 0,
    };
    // The calls budget takes 1, the tokens budget refuses: the 1 call comes back.
    assert!(b.take(&run, u).is_err());
    assert_eq!(b.local_balance("calls", "a"), Some(10));
}
