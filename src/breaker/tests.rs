//! Unit, property (against a reference model) and concurrency tests for the breaker.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

fn cfg() -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(10),
        minimum_calls: 4,
        failure_rate: 50.0,
        slow_call_rate: 80.0,
        slow_call_duration: Duration::from_millis(500),
        consecutive_failures: 0,
        wait_in_open: Duration::from_secs(10),
        backoff: 2.0,
        max_wait_in_open: Duration::from_secs(60),
        half_open_calls: 2,
    }
}

fn call(b: &CircuitBreaker, r: CallResult, ms: u64) -> Result<(), Rejected> {
    let t = b.try_acquire()?;
    let _ = b.record(t, r, Duration::from_millis(ms));
    Ok(())
}

#[test]
fn opens_on_failure_rate_only_after_minimum_calls() {
    let clock = Arc::new(ManualClock::new());
    let b = CircuitBreaker::new(cfg(), clock).unwrap();
    for _ in 0..3 {
        call(&b, CallResult::Failure, 1).unwrap();
    }
    assert_eq!(b.state(), State::Closed, "3 calls < minimum 4");
    call(&b, CallResult::Failure, 1).unwrap();
    assert_eq!(b.state(), State::Open);
}

/// The longest waits a configuration can state open the breaker without a panic (the wait
/// is computed as an f64, which can round up past `Duration::MAX`).
#[test]
fn the_longest_waits_open_without_overflow() {
    let clock = Arc::new(ManualClock::new());
    let b = CircuitBreaker::new(
        BreakerConfig {
            wait_in_open: Duration::MAX,
            max_wait_in_open: Duration::MAX,
            ..cfg()
        },
        clock.clone(),
    )
    .unwrap();
    for _ in 0..4 {
        call(&b, CallResult::Failure, 1).unwrap();
    }
    assert_eq!(b.state(), State::Open);
    clock.advance(Duration::from_secs(100 * 365 * 86_400));
    assert!(call(&b, CallResult::Success, 1).is_err(), "still open");
}

#[test]
fn opens_on_slow_call_rate() {
    let b = CircuitBreaker::new(cfg(), Arc::new(ManualClock::new())).unwrap();
    for _ in 0..4 {
        call(&b, CallResult::Success, 600).unwrap();
    }
    assert_eq!(b.state(), State::Open);
}

#[test]
fn opens_on_consecutive_failures() {
    let b = CircuitBreaker::new(
        BreakerConfig {
            consecutive_failures: 3,
            minimum_calls: 100,
            window: Window::Count(100),
            ..cfg()
        },
        Arc::new(ManualClock::new()),
    )
    .unwrap();
    call(&b, CallResult::Failure, 1).unwrap();
    call(&b, CallResult::Failure, 1).unwrap();
    call(&b, CallResult::Success, 1).unwrap();
    call(&b, CallResult::Failure, 1).unwrap();
    call(&b, CallResult::Failure, 1).unwrap();
    assert_eq!(b.state(), State::Closed);
    call(&b, CallResult::Failure, 1).unwrap();
    assert_eq!(b.state(), State::Open);
}

#[test]
fn open_waits_then_half_open_closes_or_reopens_with_backoff() {
    let clock = Arc::new(ManualClock::new());
    let b = CircuitBreaker::new(cfg(), clock.clone()).unwrap();
    for _ in 0..4 {
        call(&b, CallResult::Failure, 1).unwrap();
    }
    let e = b.try_acquire().unwrap_err();
    assert_eq!(e.state, State::Open);
    assert_eq!(e.retry_after, Some(Duration::from_secs(10)));
    clock.advance(Duration::from_secs(10));
    // two probes, both fail: re-open with the wait doubled
    call(&b, CallResult::Failure, 1).unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    call(&b, CallResult::Failure, 1).unwrap();
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Some(Duration::from_secs(20))
    );
    clock.advance(Duration::from_secs(20));
    call(&b, CallResult::Success, 1).unwrap();
    call(&b, CallResult::Success, 1).unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn time_window_forgets_old_calls() {
    let clock = Arc::new(ManualClock::new());
    let b = CircuitBreaker::new(
        BreakerConfig {
            window: Window::Seconds(5),
            ..cfg()
        },
        clock.clone(),
    )
    .unwrap();
    for _ in 0..3 {
        call(&b, CallResult::Failure, 1).unwrap();
    }
    clock.advance(Duration::from_secs(6));
    // the 3 old failures are out of the window: 1 failure in 4 calls = 25 %
    call(&b, CallResult::Failure, 1).unwrap();
    for _ in 0..3 {
        call(&b, CallResult::Success, 1).unwrap();
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn forced_open_and_disabled_override_everything() {
    let b = CircuitBreaker::new(cfg(), Arc::new(ManualClock::new())).unwrap();
    b.force_open();
    assert_eq!(b.try_acquire().unwrap_err().state, State::ForcedOpen);
    b.disable();
    for _ in 0..50 {
        call(&b, CallResult::Failure, 1).unwrap();
    }
    assert_eq!(b.state(), State::Disabled);
    b.reset();
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn transitions_are_reported_with_their_figures() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let b = CircuitBreaker::new(cfg(), Arc::new(ManualClock::new()))
        .unwrap()
        .on_transition(move |t| s2.lock().unwrap().push(*t));
    for r in [
        CallResult::Failure,
        CallResult::Success,
        CallResult::Failure,
        CallResult::Failure,
    ] {
        call(&b, r, 1).unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].from, seen[0].to), (State::Closed, State::Open));
    assert_eq!(seen[0].calls, 4);
    assert!((seen[0].failure_rate - 75.0).abs() < 1e-9);
}

#[test]
fn invalid_configs_name_the_field() {
    let check = |c: BreakerConfig| c.validate().unwrap_err().field;
    assert_eq!(
        check(BreakerConfig {
            window: Window::Count(0),
            ..cfg()
        }),
        "window"
    );
    // A count window of 10 calls never holds 11, so the rates are never judged: with no
    // consecutive-failure rule, nothing could open the breaker.
    assert_eq!(
        check(BreakerConfig {
            window: Window::Count(10),
            minimum_calls: 11,
            consecutive_failures: 0,
            ..cfg()
        }),
        "minimum_calls"
    );
    for (minimum_calls, consecutive_failures) in [(10, 0), (11, 2)] {
        assert!(
            BreakerConfig {
                window: Window::Count(10),
                minimum_calls,
                consecutive_failures,
                ..cfg()
            }
            .validate()
            .is_ok(),
            "{minimum_calls} {consecutive_failures}"
        );
    }
    assert_eq!(
        check(BreakerConfig {
            failure_rate: 0.0,
            ..cfg()
        }),
        "failure_rate"
    );
    assert_eq!(
        check(BreakerConfig {
            failure_rate: f64::NAN,
            ..cfg()
        }),
        "failure_rate"
    );
    assert_eq!(
        check(BreakerConfig {
            backoff: 0.5,
            ..cfg()
        }),
        "backoff"
    );
    assert_eq!(
        check(BreakerConfig {
            half_open_calls: 0,
            ..cfg()
        }),
        "half_open_calls"
    );
    assert_eq!(
        check(BreakerConfig {
            max_wait_in_open: Duration::from_secs(1),
            ..cfg()
        }),
        "max_wait_in_open"
    );
    let parsed: BreakerConfig = serde_json::from_str(
        r#"{"window":{"time":"60s"},"failure_rate":25,"wait_in_open":"1m 30s"}"#,
    )
    .unwrap();
    assert_eq!(parsed.window, Window::Seconds(60));
    assert_eq!(parsed.wait_in_open, Duration::from_secs(90));
    assert!(serde_json::from_str::<BreakerConfig>(r#"{"failure_rat":25}"#).is_err());
    // The old integer-millisecond fields are gone: a bare number is refused, not guessed at.
    let err = serde_json::from_str::<BreakerConfig>(r#"{"wait_in_open":30000}"#).unwrap_err();
    assert!(err.to_string().contains("with a unit"), "{err}");
    let err = serde_json::from_str::<BreakerConfig>(r#"{"window":{"time":"1.5s"}}"#).unwrap_err();
    assert!(err.to_string().contains("whole number of seconds"), "{err}");
    let back: BreakerConfig =
        serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
    assert_eq!(back, parsed);
}

#[test]
fn half_open_admits_exactly_n_probes_under_contention() {
    for round in 0..20 {
        let clock = Arc::new(ManualClock::new());
        let n = 1 + round % 5;
        let b = CircuitBreaker::new(
            BreakerConfig {
                half_open_calls: n,
                ..cfg()
            },
            clock.clone(),
        )
        .unwrap();
        for _ in 0..4 {
            call(&b, CallResult::Failure, 1).unwrap();
        }
        clock.advance(Duration::from_secs(10));
        let admitted = AtomicUsize::new(0);
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..100 {
                        if let Ok(t) = b.try_acquire() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                            // hold the ticket: probes are still in flight
                            let _ = std::hint::black_box(t);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), n as usize, "round {round}");
        assert_eq!(b.state(), State::HalfOpen);
    }
}

// ---------------------------------------------------------------------------------------------
// Reference model: the same semantics written as plainly as possible.

struct Model {
    cfg: BreakerConfig,
    state: State,
    now: u64,
    open_until: u64,
    window: VecDeque<(u64, bool, bool)>,
    consecutive: u32,
    reopenings: u32,
    probes: Vec<(bool, bool)>,
    admitted: u32,
}

impl Model {
    fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            state: State::Closed,
            now: 0,
            open_until: 0,
            window: VecDeque::new(),
            consecutive: 0,
            reopenings: 0,
            probes: Vec::new(),
            admitted: 0,
        }
    }

    fn acquire(&mut self) -> Option<bool> {
        match self.state {
            State::Closed | State::Disabled => Some(false),
            State::ForcedOpen => None,
            State::Open => {
                if self.now < self.open_until {
                    return None;
                }
                self.state = State::HalfOpen;
                self.probes.clear();
                self.admitted = 0;
                self.acquire()
            }
            State::HalfOpen => {
                if self.admitted < self.cfg.half_open_calls {
                    self.admitted += 1;
                    Some(true)
                } else {
                    None
                }
            }
        }
    }

    fn totals(&self) -> (u32, u32, u32) {
        let sec = self.now / 1_000_000_000;
        let in_window = |s: u64| match self.cfg.window {
            Window::Count(_) => true,
            Window::Seconds(n) => s + u64::from(n) > sec,
        };
        let w: Vec<_> = self
            .window
            .iter()
            .filter(|(s, _, _)| in_window(*s))
            .collect();
        (
            w.len() as u32,
            w.iter().filter(|x| x.1).count() as u32,
            w.iter().filter(|x| x.2).count() as u32,
        )
    }

    fn exceeds(&self, calls: u32, fails: u32, slow: u32) -> bool {
        calls > 0
            && (rate(fails, calls) >= self.cfg.failure_rate
                || rate(slow, calls) >= self.cfg.slow_call_rate)
    }

    fn open(&mut self) {
        let wait = (self.cfg.wait_in_open.as_secs_f64()
            * self.cfg.backoff.powi(self.reopenings as i32))
        .min(self.cfg.max_wait_in_open.as_secs_f64());
        self.reopenings += 1;
        self.clear();
        self.open_until = self.now + Duration::from_secs_f64(wait).as_nanos() as u64;
        self.state = State::Open;
    }

    fn clear(&mut self) {
        self.window.clear();
        self.consecutive = 0;
        self.probes.clear();
    }

    fn record(&mut self, probe: bool, r: CallResult, slow: bool) {
        if r == CallResult::Ignored {
            if probe {
                self.admitted -= 1;
            }
            return;
        }
        let fail = r == CallResult::Failure;
        match (self.state, probe) {
            (State::HalfOpen, true) => {
                self.probes.push((fail, slow));
                if self.probes.len() as u32 >= self.cfg.half_open_calls {
                    let c = self.probes.len() as u32;
                    let f = self.probes.iter().filter(|p| p.0).count() as u32;
                    let s = self.probes.iter().filter(|p| p.1).count() as u32;
                    if self.exceeds(c, f, s) {
                        self.open();
                    } else {
                        self.clear();
                        self.reopenings = 0;
                        self.state = State::Closed;
                    }
                }
            }
            (State::Closed, false) => {
                self.window
                    .push_back((self.now / 1_000_000_000, fail, slow));
                if let Window::Count(n) = self.cfg.window
                    && self.window.len() > n as usize
                {
                    self.window.pop_front();
                }
                self.consecutive = if fail { self.consecutive + 1 } else { 0 };
                let (c, f, s) = self.totals();
                let streak = self.cfg.consecutive_failures > 0
                    && self.consecutive >= self.cfg.consecutive_failures;
                if streak || (c >= self.cfg.minimum_calls && self.exceeds(c, f, s)) {
                    self.open();
                }
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Call(CallResult, bool),
    Advance(u64),
    Force,
    Disable,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (prop_oneof![Just(CallResult::Success), Just(CallResult::Failure), Just(CallResult::Ignored)], any::<bool>())
            .prop_map(|(r, s)| Op::Call(r, s)),
        5 => (0u64..30_000).prop_map(Op::Advance),
        1 => Just(Op::Force),
        1 => Just(Op::Disable),
        1 => Just(Op::Reset),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (
        prop_oneof![
            (1u32..12).prop_map(Window::Count),
            (1u32..8).prop_map(Window::Seconds)
        ],
        1u32..6,
        prop_oneof![Just(25.0), Just(50.0), Just(100.0)],
        prop_oneof![Just(50.0), Just(100.0)],
        0u32..4,
        prop_oneof![Just(1.0), Just(2.0), Just(3.0)],
        1u32..4,
    )
        .prop_map(
            |(
                window,
                minimum_calls,
                failure_rate,
                slow_call_rate,
                consecutive_failures,
                backoff,
                half_open_calls,
            )| {
                // A breaker that nothing could open is refused by `validate`.
                let minimum_calls = match window {
                    Window::Count(n) if consecutive_failures == 0 => minimum_calls.min(n),
                    _ => minimum_calls,
                };
                BreakerConfig {
                    window,
                    minimum_calls,
                    failure_rate,
                    slow_call_rate,
                    slow_call_duration: Duration::from_millis(100),
                    consecutive_failures,
                    wait_in_open: Duration::from_secs(5),
                    backoff,
                    max_wait_in_open: Duration::from_secs(40),
                    half_open_calls,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn breaker_matches_the_reference_model(cfg in config(), ops in prop::collection::vec(op(), 1..200)) {
        let clock = Arc::new(ManualClock::new());
        let real = CircuitBreaker::new(cfg.clone(), clock.clone()).unwrap();
        let mut model = Model::new(cfg);
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Call(r, slow) => {
                    let ms = if *slow { 150 } else { 10 };
                    let expected = model.acquire();
                    let got = real.try_acquire();
                    prop_assert_eq!(expected.is_some(), got.is_ok(), "op {} {:?}: admission", i, op);
                    if let (Some(probe), Ok(t)) = (expected, got) {
                        model.record(probe, *r, *slow);
                        let _ = real.record(t, *r, Duration::from_millis(ms));
                    }
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(*ms));
                    model.now += ms * 1_000_000;
                }
                Op::Force => { real.force_open(); model.state = State::ForcedOpen; }
                Op::Disable => { real.disable(); model.state = State::Disabled; }
                Op::Reset => {
                    real.reset();
                    model.clear();
                    model.reopenings = 0;
                    model.state = State::Closed;
                }
            }
            prop_assert_eq!(real.state(), model.state, "after op {} {:?}", i, op);
        }
    }
}

/// Successes from many threads while the window is clean skip the lock; none may be lost or
/// counted twice: the window they filled decides exactly when failures open the breaker.
#[test]
fn concurrent_fast_successes_all_reach_the_window() {
    let clock = Arc::new(ManualClock::new());
    let cfg = BreakerConfig {
        window: Window::Count(100),
        minimum_calls: 10,
        failure_rate: 50.0,
        ..cfg()
    };
    let opened = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = Arc::clone(&opened);
    let b = CircuitBreaker::new(cfg, clock)
        .unwrap()
        .on_transition(move |t| seen.lock().push(*t));
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..5_000 {
                    call(&b, CallResult::Success, 1).unwrap();
                }
            });
        }
    });
    // The window is 100 successes: 49 failures are 49 %, under the threshold ...
    for _ in 0..49 {
        call(&b, CallResult::Failure, 1).unwrap();
    }
    assert_eq!(b.state(), State::Closed);
    // ... the 50th makes 50 % of 100 calls. (Had the successes been lost, 10 failures would
    // have opened it at 100 %.)
    call(&b, CallResult::Failure, 1).unwrap();
    assert_eq!(b.state(), State::Open);
    let t = opened.lock()[0];
    assert_eq!((t.calls, t.failure_rate), (100, 50.0));
}

/// A success counted without the lock while the breaker was closed does not leak into the
/// window after a reset.
#[test]
fn deferred_successes_do_not_survive_a_reset() {
    let clock = Arc::new(ManualClock::new());
    let cfg = BreakerConfig {
        window: Window::Count(10),
        minimum_calls: 4,
        failure_rate: 50.0,
        ..cfg()
    };
    let b = CircuitBreaker::new(cfg, clock).unwrap();
    for _ in 0..10 {
        call(&b, CallResult::Success, 1).unwrap();
    }
    b.reset();
    // An empty window: 4 failures are 100 % of the minimum.
    for _ in 0..4 {
        call(&b, CallResult::Failure, 1).unwrap();
    }
    assert_eq!(b.state(), State::Open);
}
