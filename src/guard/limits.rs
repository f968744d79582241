//! The per-run limits stage: loop detection, rate limits, the task baseline and the budgets.
//! Each reads its configuration from the policy [`Snapshot`] of the check; the counters live in
//! the [`Run`] (budgets, loop memory, baseline counts) or in the snapshot's limiters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::run::{Run, RunState};
use super::shared::{Shared, Snapshot};
use super::view::RunView;
use crate::boundary::Admitted;
use crate::breaker::{AlertKind, Limited, UnexpectedTool};
use crate::call::ToolCall;
use crate::clock::MonoTime;
use crate::verdict::{Denial, DenyCode, Outcome};

/// Loop detection: the same call (tool and arguments) more than `max_repeats` times within
/// `window` is denied.
///
/// Arguments are compared by a fingerprint of their [canonical form](crate::call::canonical):
/// the same arguments with keys in another order, other escapes or whitespace, another spelling
/// of a number, raw or parsed, are the same call. A run remembers its last 1024 calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopDetection {
    /// Identical calls allowed within the window.
    pub max_repeats: u32,
    /// The window (`"60s"`).
    #[serde(with = "crate::units::duration")]
    pub window: std::time::Duration,
}

/// How many recent calls a run remembers for loop detection.
pub(super) const LOOP_MEMORY: usize = 1024;

/// A fingerprint of a call's tool and arguments: a 64-bit hash of the tool name and the
/// arguments' [canonical form](crate::call::canonical), streamed without building a string (and,
/// for objects of up to 16 members, without allocating). Key order, escapes, whitespace, number
/// spelling (`1.0`, `1e0`) and raw-versus-parsed arguments therefore cannot make one call look
/// like another.
///
/// The hash takes eight bytes per multiply (FNV-1a's byte-at-a-time multiply chain cost more
/// than the canonicalisation). It is not collision-resistant, and need not be: the caller's own
/// arguments could at worst collide with one of its own earlier calls and be counted as a
/// repeat (a false loop denial of its own run); evading detection would need one call with two
/// fingerprints, which the canonical form rules out.
pub(super) fn call_fingerprint(call: &ToolCall<'_>) -> u64 {
    use crate::call::canonical::{self, CanonicalSink};
    /// Word-at-a-time multiply-rotate hash; bytes carried across `put`s so the result depends
    /// only on the byte sequence, not on how it was split.
    struct Fingerprint {
        h: u64,
        tail: [u8; 8],
        n: usize,
    }
    impl Fingerprint {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        fn new() -> Self {
            Self {
                h: 0x243f_6a88_85a3_08d3,
                tail: [0; 8],
                n: 0,
            }
        }
        fn mix(&mut self, w: u64) {
            self.h = (self.h ^ w).wrapping_mul(Self::K).rotate_left(31);
        }
        fn finish(mut self) -> u64 {
            let n = self.n;
            self.tail[n..].fill(0);
            self.mix(u64::from_le_bytes(self.tail) ^ (n as u64) << 59);
            let mut h = self.h;
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^ (h >> 33)
        }
    }
    impl CanonicalSink for Fingerprint {
        fn put(&mut self, mut bytes: &[u8]) {
            if self.n > 0 {
                let k = (8 - self.n).min(bytes.len());
                self.tail[self.n..self.n + k].copy_from_slice(&bytes[..k]);
                self.n += k;
                bytes = &bytes[k..];
                if self.n < 8 {
                    return;
                }
                self.n = 0;
                let w = u64::from_le_bytes(self.tail);
                self.mix(w);
            }
            let mut words = bytes.chunks_exact(8);
            for w in &mut words {
                let mut a = [0u8; 8];
                a.copy_from_slice(w);
                self.mix(u64::from_le_bytes(a));
            }
            let rest = words.remainder();
            self.tail[..rest.len()].copy_from_slice(rest);
            self.n = rest.len();
        }
    }
    // The boundary validated raw text with its own (tighter) limits before this stage.
    let limits = crate::call::JsonLimits {
        max_bytes: usize::MAX,
        max_depth: canonical::MAX_DEPTH,
    };
    let mut h = Fingerprint::new();
    h.put(call.tool().as_bytes());
    h.put(&[0]);
    if canonical::write_with(call.args(), limits, &mut h).is_err() {
        // No canonical form (a value nested deeper than 64 levels, an absurd exponent): every
        // such call of this tool shares one fingerprint, so repeating it still counts as a
        // loop and varying it cannot evade detection.
        h = Fingerprint::new();
        h.put(call.tool().as_bytes());
        h.put(&[0xff]);
    }
    h.finish()
}

/// Per-run limits. Every limit is optional; none is set by default.
///
/// Budgets are reserve-then-commit: an allowed call reserves its share atomically (one call, its
/// declared token and cost estimates or the per-call defaults) before it runs, so racing threads
/// never exceed a budget by even one unit; when the permit completes, the reservation settles to
/// the reported usage. A tool that reports more than it reserved is charged the excess, and the
/// next call finds the budget that much smaller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunBudget {
    /// Most tool calls a run may be allowed.
    pub max_calls: Option<u64>,
    /// Longest a run may keep calling tools, from its start.
    #[serde(default, with = "crate::units::duration_opt")]
    pub max_duration: Option<std::time::Duration>,
    /// Most tokens (input + output) a run may use.
    pub max_tokens: Option<u64>,
    /// Tokens reserved for a call that declares no estimate.
    pub tokens_per_call: u64,
    /// Most a run may cost, in millionths of a currency unit.
    pub max_cost_micros: Option<u64>,
    /// Cost reserved for a call that declares no estimate.
    pub cost_micros_per_call: u64,
}

/// The time of one check, read from the guard's clock at most once, when a stage first needs
/// it (rate limits, the wall-time budget, the permit's start): each read costs ~25 ns.
pub(super) struct CheckTime<'c> {
    clock: &'c dyn crate::clock::Clock,
    at: std::cell::OnceCell<MonoTime>,
}

impl<'c> CheckTime<'c> {
    pub(super) fn new(clock: &'c dyn crate::clock::Clock) -> Self {
        Self {
            clock,
            at: std::cell::OnceCell::new(),
        }
    }

    /// The check's time (read now if no stage needed it yet).
    pub(super) fn get(&self) -> MonoTime {
        *self.at.get_or_init(|| self.clock.now())
    }

    /// The check's time if a stage read it.
    pub(super) fn read(&self) -> Option<MonoTime> {
        self.at.get().copied()
    }
}

/// What a permitted call reserved from its run's budgets.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reserved {
    pub(crate) call: bool,
    pub(crate) tokens: u64,
    pub(crate) cost: u64,
    /// What the guard's shared (fleet) budget gave this call.
    pub(crate) shared: super::fleet::Units,
    /// What the shared budget recorded about it (the window it came from).
    pub(crate) shared_taken: super::fleet::Taken,
}

/// Adds `amount` to `counter` if the sum stays within `max`; says whether it did.
fn take(counter: &AtomicU64, amount: u64, max: u64) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            c.checked_add(amount).filter(|n| *n <= max)
        })
        .is_ok()
}

/// The metered budgets besides calls.
#[derive(Clone, Copy)]
enum Metered {
    Tokens,
    Cost,
}

impl Shared {
    /// Denies the call if the run made the same call (same tool, same arguments) `max_repeats`
    /// times within the window already; otherwise remembers it.
    pub(super) fn detect_loop(
        &self,
        snap: &Snapshot,
        run: &Run,
        call: &ToolCall<'_>,
    ) -> Result<(), Denial> {
        let Some(cfg) = snap.loops else {
            return Ok(());
        };
        let key = call_fingerprint(call);
        let now = self.clock.now();
        let mut recent = run.recent.lock();
        while recent
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) >= cfg.window)
        {
            recent.pop_front();
        }
        let repeats = recent.iter().filter(|(k, _)| *k == key).count() as u32;
        if repeats >= cfg.max_repeats {
            return Err(Denial::new(
                DenyCode::LoopDetected,
                self.rules.loops.clone(),
                format!(
                    "`{}` was called with the same arguments {repeats} times in the last {} s",
                    call.tool(),
                    cfg.window.as_secs_f64()
                ),
            ));
        }
        if recent.len() == LOOP_MEMORY {
            recent.pop_front();
        }
        recent.push_back((key, now));
        Ok(())
    }

    /// Compares the run with its task type's baseline: too many calls, or an unexpected tool.
    /// Counts the call and remembers its tool when it passes.
    pub(super) fn check_baseline(
        &self,
        snap: &Snapshot,
        run: &Run,
        call: &ToolCall<'_>,
    ) -> Result<(), Denial> {
        let (Some(b), Some(task)) = (&snap.baseline, run.ctx.task_type()) else {
            return Ok(());
        };
        let snap = b.snapshot.load();
        let task = task.as_str();
        if !snap.knows_tool(task, call.tool()) {
            let policy = snap.unexpected_tool();
            if policy != UnexpectedTool::Ignore {
                let reason = format!(
                    "runs of task type `{task}` have never used `{}`",
                    call.tool()
                );
                // One alert per run, not one per retried call.
                if !run.unexpected_alerted.swap(true, Ordering::AcqRel) {
                    self.alert(
                        AlertKind::UnexpectedTool,
                        Some(run),
                        Some(call.tool()),
                        || reason.clone(),
                    );
                }
                if policy == UnexpectedTool::Deny {
                    return Err(Denial::new(
                        DenyCode::AnomalyDetected,
                        self.rules.baseline.clone(),
                        reason,
                    ));
                }
            }
        }
        // Count the call, atomically against the limit: racing threads cannot overshoot it.
        let limit = snap.limit(task).map_or(u64::MAX, u64::from);
        if let Err(made) = run
            .made
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
                (m < limit).then_some(m + 1)
            })
        {
            let reason = format!(
                "the run has made {made} tool calls; runs of task type `{task}` normally stay within {limit}"
            );
            if !run.anomaly_alerted.swap(true, Ordering::AcqRel) {
                self.alert(
                    AlertKind::AnomalyDetected,
                    Some(run),
                    Some(call.tool()),
                    || reason.clone(),
                );
            }
            return Err(Denial::new(
                DenyCode::AnomalyDetected,
                self.rules.baseline.clone(),
                reason,
            ));
        }
        if b.learn {
            let mut used = run.tools_used.lock();
            if !used.contains(call.tool()) {
                used.insert(call.tool().to_owned());
            }
        }
        Ok(())
    }

    /// Feeds a finished run into the baseline (online learning).
    pub(super) fn learn_from(&self, run: &Run) {
        let snap = self.policy.load();
        let (Some(b), Some(task)) = (&snap.baseline, run.ctx.task_type()) else {
            return;
        };
        if !b.learn {
            return;
        }
        let made = u32::try_from(run.made.load(Ordering::Acquire)).unwrap_or(u32::MAX);
        let tools: Vec<String> = run.tools_used.lock().iter().cloned().collect();
        let mut learner = b.learner.lock();
        learner.observe(task.as_str(), made, tools);
        b.snapshot.store(Arc::new(learner.snapshot()));
    }

    /// Takes a unit from the agent's and the tool's rate-limit buckets. Neither is looked up by
    /// name: the run keeps its agent's bucket (looked up again only when no longer current) and
    /// the snapshot holds the tools' buckets by dense tool index.
    pub(super) fn rate_limit(
        &self,
        snap: &RunView,
        admitted: Admitted,
        now: &CheckTime<'_>,
    ) -> Result<(), Denial> {
        let Some(rl) = snap.rate_limits() else {
            return Ok(());
        };
        let refused = |l: Limited| {
            Denial::new(
                DenyCode::RateLimited,
                self.rules.rate.clone(),
                format!(
                    "the {} rate limit is reached; retry in {} ms",
                    l.scope,
                    l.retry_after.as_millis()
                ),
            )
        };
        crate::breaker::rate_limits_at(now.get(), || {
            if let Some(bucket) = &snap.rate_agent {
                rl.take(&bucket.limiter, "agent")?;
            }
            if let Some(Some(l)) = snap.rate_tools.get(admitted.index()) {
                rl.take(l, "tool")?;
            }
            Ok(())
        })
        .map_err(refused)
    }

    /// Reserves the call's share of the run's budgets (never exceeded, even under concurrency)
    /// and checks its wall-time budget. All or nothing: a failed reservation releases the others.
    pub(super) fn reserve_budget(
        &self,
        snap: &Snapshot,
        run: &Run,
        call: &ToolCall<'_>,
        now: &CheckTime<'_>,
    ) -> Result<Reserved, Denial> {
        let b = &snap.budget;
        if let Some(max) = b.max_duration
            && now.get().duration_since(run.started) >= max
        {
            return Err(Denial::new(
                DenyCode::BudgetExhausted,
                self.rules.budget_time.clone(),
                format!(
                    "the run has used its wall-time budget of {} s",
                    max.as_secs_f64()
                ),
            ));
        }
        let mut r = Reserved::default();
        if let Some(max) = b.max_calls {
            if !take(&run.calls, 1, max) {
                return Err(Denial::new(
                    DenyCode::BudgetExhausted,
                    self.rules.budget_calls.clone(),
                    format!("the run has used its budget of {max} tool calls"),
                ));
            }
            r.call = true;
        }
        // Tokens, then cost: the declared estimate, or the per-call default. A refusal gives
        // back what was already reserved. Most runs meter neither: that test stays inline, and
        // the reservation and its refusal live in a function of their own (measured: calling
        // it for an absent limit cost ~10 ns per check in `guard/check_allow`).
        if let Some(max) = b.max_tokens {
            let want = call.token_estimate().unwrap_or(b.tokens_per_call);
            r.tokens = self.meter(run, r, &run.tokens, want, max, Metered::Tokens)?;
        }
        if let Some(max) = b.max_cost_micros {
            let want = call
                .cost_estimate_micros()
                .unwrap_or(b.cost_micros_per_call);
            r.cost = self.meter(run, r, &run.cost, want, max, Metered::Cost)?;
        }
        // Budgets shared across hosts, last: a refusal gives back the run's reservation.
        if let Some(fleet) = &self.shared_budget {
            let want = super::fleet::Units {
                calls: 1,
                tokens: call.token_estimate().unwrap_or(b.tokens_per_call),
                cost_micros: call
                    .cost_estimate_micros()
                    .unwrap_or(b.cost_micros_per_call),
            };
            match fleet.take(&run.ctx, want) {
                Ok(taken) => {
                    r.shared = want;
                    r.shared_taken = taken;
                }
                Err(refusal) => {
                    self.release_budget(run, r);
                    return Err(Denial::new(
                        DenyCode::BudgetExhausted,
                        refusal.rule,
                        refusal.reason,
                    ));
                }
            }
        }
        Ok(r)
    }

    /// Reserves `want` of a metered budget whose limit is `max`, or refuses the call and gives
    /// back `r`, what it had reserved so far.
    fn meter(
        &self,
        run: &RunState,
        r: Reserved,
        counter: &AtomicU64,
        want: u64,
        max: u64,
        what: Metered,
    ) -> Result<u64, Denial> {
        if take(counter, want, max) {
            return Ok(want);
        }
        self.release_budget(run, r);
        let (rule, what) = match what {
            Metered::Tokens => (&self.rules.budget_tokens, "token"),
            Metered::Cost => (&self.rules.budget_cost, "cost (micros)"),
        };
        Err(Denial::new(
            DenyCode::BudgetExhausted,
            rule.clone(),
            format!(
                "the run's {what} budget of {max} cannot cover this call's {want} (used {})",
                counter.load(Ordering::Acquire)
            ),
        ))
    }

    /// Gives a reservation back (the call never ran).
    pub(super) fn release_budget(&self, run: &RunState, r: Reserved) {
        if r.call {
            run.calls.fetch_sub(1, Ordering::AcqRel);
        }
        run.tokens.fetch_sub(r.tokens, Ordering::AcqRel);
        run.cost.fetch_sub(r.cost, Ordering::AcqRel);
        if let Some(fleet) = &self.shared_budget
            && !r.shared.is_zero()
        {
            fleet.give_back(&run.ctx, r.shared, r.shared_taken);
        }
    }

    /// Settles a reservation to what the call reported using.
    pub(super) fn settle_budget(
        &self,
        snap: &Snapshot,
        run: &RunState,
        r: Reserved,
        outcome: &Outcome,
    ) {
        // Saturating both ways: an outcome reporting an absurd usage must exhaust the budget,
        // never wrap the counter round to a small number.
        let settle = |counter: &AtomicU64, reserved: u64, actual: Option<u64>| {
            let Some(actual) = actual else { return };
            let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(if actual < reserved {
                    c.saturating_sub(reserved - actual)
                } else {
                    c.saturating_add(actual - reserved)
                })
            });
        };
        if snap.budget.max_tokens.is_some() {
            settle(&run.tokens, r.tokens, outcome.total_tokens());
        }
        if snap.budget.max_cost_micros.is_some() {
            settle(&run.cost, r.cost, outcome.cost_micros);
        }
        if let Some(fleet) = &self.shared_budget
            && !r.shared.is_zero()
        {
            // Reported usage against what the shared budget gave: the rest back, excess charged.
            let (mut back, mut more) = (
                super::fleet::Units::default(),
                super::fleet::Units::default(),
            );
            let split = |reserved: u64, actual: Option<u64>, back: &mut u64, more: &mut u64| {
                if let Some(actual) = actual {
                    *back = reserved.saturating_sub(actual);
                    *more = actual.saturating_sub(reserved);
                }
            };
            split(
                r.shared.tokens,
                outcome.total_tokens(),
                &mut back.tokens,
                &mut more.tokens,
            );
            split(
                r.shared.cost_micros,
                outcome.cost_micros,
                &mut back.cost_micros,
                &mut more.cost_micros,
            );
            if !back.is_zero() {
                fleet.give_back(&run.ctx, back, r.shared_taken);
            }
            if !more.is_zero() {
                fleet.charge(&run.ctx, more);
            }
        }
    }

    /// The largest fraction of any configured run budget used so far (calls, tokens, cost, wall
    /// time), this call's reservation included; `None` without budgets.
    pub(super) fn budget_used(&self, snap: &Snapshot, run: &Run) -> Option<f64> {
        let b = &snap.budget;
        let mut most: Option<f64> = None;
        let mut note = |used: f64, max: f64| {
            let f = if max <= 0.0 { 1.0 } else { used / max };
            most = Some(most.map_or(f, |m: f64| m.max(f)));
        };
        if let Some(max) = b.max_calls {
            note(run.calls.load(Ordering::Acquire) as f64, max as f64);
        }
        if let Some(max) = b.max_tokens {
            note(run.tokens.load(Ordering::Acquire) as f64, max as f64);
        }
        if let Some(max) = b.max_cost_micros {
            note(run.cost.load(Ordering::Acquire) as f64, max as f64);
        }
        if let Some(max) = b.max_duration {
            let used = self.clock.now().duration_since(run.started);
            note(used.as_secs_f64(), max.as_secs_f64());
        }
        most
    }
}
