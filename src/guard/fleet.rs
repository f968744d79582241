//! What a fleet backend (see [`crate::backend`]) plugs into a guard: suspensions by run id and
//! the fail-closed "unconfirmed" suspension a kill-switch follower sets, and the budgets shared
//! across hosts ([`SharedBudget`]) the budget stage consults after the run's own budgets.
//!
//! The hooks are deliberately small. The fleet's kill switch is a set of atomic flags and sets of
//! the guard's, read by the very next check beside (never merged with) the guard's own switches;
//! a follower thread only changes the fleet's side of them (`Side::Fleet`) when the shared
//! state changes. A shared budget is one trait object the budget stage asks to take the call's
//! units: an implementation spends from a local lease with an atomic decrement (no I/O, no lock on the
//! check path) and denies when the lease is empty and cannot be refilled.

use std::sync::atomic::Ordering;

use super::Guard;
use super::kill::Side;
use super::shared::{KILL_FLEET, KILL_UNCONFIRMED};
use crate::audit::AuditError;
use crate::call::{RuleId, RunContext, RunId};

/// Amounts a call takes from budgets shared across hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Units {
    /// Tool calls.
    pub calls: u64,
    /// Tokens (input + output).
    pub tokens: u64,
    /// Cost in millionths of a currency unit.
    pub cost_micros: u64,
}

impl Units {
    /// Whether every amount is zero.
    pub fn is_zero(&self) -> bool {
        self.calls == 0 && self.tokens == 0 && self.cost_micros == 0
    }
}

/// What a shared budget's [`take`](SharedBudget::take) records about the units it took, handed
/// back with any of them it is given back: an implementation returns units only to the window
/// (the budget period) they were taken from, never to a later one. Opaque to the guard (the
/// leased budgets keep a window generation in it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken(pub u64);

/// Why a shared budget refused a call: the rule (e.g. `fleet.budget.daily-calls`) and a reason
/// for the denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRefusal {
    /// The budget's rule id.
    pub rule: RuleId,
    /// Why (which budget, for whom).
    pub reason: String,
}

/// Budgets shared by many guards (many hosts): the guard's budget stage calls
/// [`take`](Self::take) after the run's own budgets reserved the call, and denies with
/// [`DenyCode::BudgetExhausted`](crate::DenyCode::BudgetExhausted) when it refuses.
///
/// `take` is on the check path: implementations must not do I/O there between refills (the
/// PostgreSQL one spends from a local lease with an atomic decrement).
pub trait SharedBudget: Send + Sync {
    /// Takes `want` for one call of a run with context `run`, all or nothing; what it returns
    /// comes back with any units given back for the call.
    fn take(&self, run: &RunContext, want: Units) -> Result<Taken, SharedRefusal>;
    /// Gives back units `taken` for a call that never ran, or reserved beyond what it used.
    /// Units whose window has ended since they were taken are not returned (to a later window
    /// they would be spent twice).
    fn give_back(&self, run: &RunContext, units: Units, taken: Taken);
    /// Charges units a call reported using beyond what it took (never refused: the call ran).
    fn charge(&self, run: &RunContext, units: Units);
}

impl Guard {
    /// Suspends every run with id `run` (current and future, in this guard) until
    /// [`resume_run_id`](Self::resume_run_id), and revokes its live credentials. This is the
    /// by-id form of [`suspend_run`](Self::suspend_run) for a suspension that arrives from
    /// elsewhere (the CLI, another host) and so has no [`Run`](super::Run) handle.
    pub fn suspend_run_id(&self, run: &RunId, by: &str) -> Result<(), AuditError> {
        self.suspend_run_id_on(Side::Own, run, by)
    }

    /// Lifts [`suspend_run_id`](Self::suspend_run_id) (a suspension set through
    /// [`suspend_run`](Self::suspend_run) stays, and so does one of the fleet's shared kill
    /// switch).
    pub fn resume_run_id(&self, run: &RunId, by: &str) -> Result<(), AuditError> {
        self.resume_run_id_on(Side::Own, run, by)
    }

    /// Suspends every run because the shared kill-switch state cannot be confirmed (`reason`,
    /// e.g. `kill-switch-stale`). Kept apart from the operator's switches: lifting it
    /// ([`resume_unconfirmed`](Self::resume_unconfirmed)) never lifts a suspension an operator
    /// set. Idempotent: only the first call records and revokes.
    pub(crate) fn suspend_unconfirmed(&self, reason: &str) -> Result<(), AuditError> {
        if self
            .shared
            .kill_flags
            .fetch_or(KILL_UNCONFIRMED, Ordering::AcqRel)
            & KILL_UNCONFIRMED
            != 0
        {
            return Ok(());
        }
        let revoked = self.revoke_for_kill_switch(|b, now| b.revoke_all(now));
        revoked.and(self.kill_event(
            None,
            "suspend",
            "global",
            Some(reason),
            "kill-switch-follower",
        ))
    }

    /// Lifts [`suspend_unconfirmed`](Self::suspend_unconfirmed) once the state is confirmed
    /// again. Idempotent.
    pub(crate) fn resume_unconfirmed(&self, reason: &str) -> Result<(), AuditError> {
        if self
            .shared
            .kill_flags
            .fetch_and(!KILL_UNCONFIRMED, Ordering::AcqRel)
            & KILL_UNCONFIRMED
            == 0
        {
            return Ok(());
        }
        self.kill_event(
            None,
            "resume",
            "global",
            Some(reason),
            "kill-switch-follower",
        )
    }

    /// Whether the guard is suspended because the shared kill-switch state is unconfirmed.
    pub fn is_unconfirmed(&self) -> bool {
        self.shared.kill_flags.load(Ordering::Acquire) & KILL_UNCONFIRMED != 0
    }

    /// Whether the fleet's shared kill switch suspends every run of this guard (as applied by
    /// its follower; the guard's own [`suspend_all`](Self::suspend_all) is apart).
    pub fn is_fleet_suspended(&self) -> bool {
        self.shared.kill_flags.load(Ordering::Acquire) & KILL_FLEET != 0
    }

    /// Sends an alert ([`AlertKind::Suspended`](crate::breaker::AlertKind::Suspended)) about the
    /// fleet's kill switch, e.g. a shared state its follower refuses.
    pub(crate) fn fleet_alert(&self, detail: impl FnOnce() -> String) {
        self.shared
            .alert(crate::breaker::AlertKind::Suspended, None, None, detail);
    }
}
