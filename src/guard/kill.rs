//! The kill switch: suspend and resume everything, one agent or one run. A suspension is one
//! atomic store seen by the very next check on every thread, revokes the live credentials it
//! covers, and is recorded and flushed.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::Ordering;

use arc_swap::ArcSwap;

use super::Guard;
use super::run::{Run, RunState};
use super::shared::{KILL_FLEET, KILL_LOCAL, Shared};
use crate::audit::{AuditError, AuditMarks, CredentialEvent, EventKind};
use crate::breaker::AlertKind;
use crate::call::{AgentId, RunId};
use crate::credential::{CredentialBroker, unix_secs};

impl Shared {
    /// Which kill switch holds the run, if any: one atomic load for the whole-guard switches
    /// (the guard's own, the fleet's, and the unconfirmed-fleet-state one), one for the run's
    /// own switch, and lock-free snapshot loads of the suspended run-id and agent sets (the
    /// guard's own and the fleet's, searched only when one is not empty).
    pub(crate) fn suspended(&self, run: &RunState) -> Option<&'static str> {
        let flags = self.kill_flags.load(Ordering::Acquire);
        if flags != 0 {
            return Some(if flags & KILL_LOCAL != 0 {
                "global"
            } else if flags & KILL_FLEET != 0 {
                "fleet"
            } else {
                "kill-switch-stale"
            });
        }
        if run.suspended.load(Ordering::Acquire) {
            return Some("run");
        }
        // One flag for every set: the common case (nothing suspended by id or agent) is a
        // single atomic load.
        if !self.any_set_suspension.load(Ordering::Acquire) {
            return None;
        }
        self.suspended_by_set(run)
    }

    /// The sets' part of [`suspended`](Self::suspended), out of line: most checks never get
    /// here.
    #[cold]
    #[inline(never)]
    fn suspended_by_set(&self, run: &RunState) -> Option<&'static str> {
        for runs in [self.suspended_runs.load(), self.fleet_runs.load()] {
            if !runs.is_empty() && runs.contains(&run.id) {
                return Some("run");
            }
        }
        for agents in [self.suspended_agents.load(), self.fleet_agents.load()] {
            if !agents.is_empty() && agents.contains(run.ctx.agent()) {
                return Some("agent");
            }
        }
        None
    }
}

impl Guard {
    /// Kill switch: suspends every run of this guard. Effective for the very next `check` on
    /// every thread (an atomic store, no polling); running tools see it through
    /// [`Permit::cancellation`](super::Permit::cancellation). Every live credential is revoked (tokens copied out fail
    /// verification wherever the revocation list is consulted) and stays revoked after a resume:
    /// resumed runs mint new ones. The suspension and each revocation are recorded and the audit
    /// sink flushed; an audit error is returned but the suspension and revocations stand.
    ///
    /// This is the guard's own switch: a fleet's shared kill switch (see
    /// [`crate::backend::kill`]) is kept apart, and a call is refused while either suspends it.
    pub fn suspend_all(&self, by: &str) -> Result<(), AuditError> {
        self.suspend_all_on(Side::Own, by)
    }

    /// Revokes (and records) the credentials the kill switch just took away.
    pub(super) fn revoke_for_kill_switch(
        &self,
        revoke: impl FnOnce(&CredentialBroker, u64) -> Vec<crate::credential::RevokedCredential>,
    ) -> Result<(), AuditError> {
        let Some(broker) = &self.shared.credentials else {
            return Ok(());
        };
        let now = unix_secs(self.shared.clock.wall());
        let mut first = Ok(());
        for r in revoke(broker, now) {
            // With the retention class of the tool it was minted for, like its issue and uses.
            let marks = AuditMarks::retention_only(r.retention.clone());
            let recorded = self.shared.record_marked(
                None,
                EventKind::Credential(CredentialEvent::Revoked {
                    id: &r.id,
                    provider: &r.provider,
                }),
                || Some(&marks),
            );
            if first.is_ok() {
                first = recorded;
            }
        }
        first
    }

    /// Lifts [`suspend_all`](Self::suspend_all) (agent and run suspensions stay, and so does a
    /// suspension of the fleet's shared kill switch: only the fleet lifts that). Recorded.
    pub fn resume_all(&self, by: &str) -> Result<(), AuditError> {
        self.resume_all_on(Side::Own, by)
    }

    /// Suspends every run of `agent`, current and future, until resumed, and revokes the
    /// agent's live credentials (see [`suspend_all`](Self::suspend_all)).
    pub fn suspend_agent(&self, agent: &AgentId, by: &str) -> Result<(), AuditError> {
        self.suspend_agent_on(Side::Own, agent, by)
    }

    /// Lifts [`suspend_agent`](Self::suspend_agent) (a suspension of the agent by the fleet's
    /// shared kill switch stays).
    pub fn resume_agent(&self, agent: &AgentId, by: &str) -> Result<(), AuditError> {
        self.resume_agent_on(Side::Own, agent, by)
    }

    /// Suspends one run and revokes its live credentials.
    pub fn suspend_run(&self, run: &Run, by: &str) -> Result<(), AuditError> {
        run.suspended.store(true, Ordering::Release);
        self.shared.wake_approval_waiters();
        // Revokes (and records) the run's live credentials.
        let revoked = run.revoke_credentials();
        revoked.and(self.kill_event(Some(&**run), "suspend", "run", Some(run.id.as_str()), by))
    }

    /// Lifts [`suspend_run`](Self::suspend_run).
    pub fn resume_run(&self, run: &Run, by: &str) -> Result<(), AuditError> {
        run.suspended.store(false, Ordering::Release);
        self.kill_event(Some(&**run), "resume", "run", Some(run.id.as_str()), by)
    }

    pub(super) fn kill_event(
        &self,
        run: Option<&RunState>,
        action: &'static str,
        scope: &'static str,
        target: Option<&str>,
        by: &str,
    ) -> Result<(), AuditError> {
        let kind = if action == "suspend" {
            AlertKind::Suspended
        } else {
            AlertKind::Resumed
        };
        self.shared.alert(kind, run, None, || {
            format!(
                "kill switch: {action} {scope}{} by {by}",
                target.map(|t| format!(" {t}")).unwrap_or_default()
            )
        });
        let recorded = self.shared.record_for(
            run,
            EventKind::KillSwitch {
                action,
                scope,
                target,
                by,
            },
        );
        // Whatever was recorded before the switch is made durable now.
        let flushed = match &self.shared.audit {
            Some(sink) => sink.flush(),
            None => Ok(()),
        };
        recorded.and(flushed)
    }
}

/// Whose switch a change is: the guard's own, or the fleet's shared one as its follower applies
/// it. The two are kept apart (a call is refused while either suspends it; each side lifts only
/// its own suspensions) and are otherwise changed, revoked and recorded alike.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// The guard's own switch (`suspend_all`, `suspend_agent`, ...).
    Own,
    /// The fleet's shared switch, applied by a kill-switch follower.
    Fleet,
}

impl Side {
    fn flag(self) -> u8 {
        match self {
            Side::Own => KILL_LOCAL,
            Side::Fleet => KILL_FLEET,
        }
    }

    fn agents(self, shared: &Shared) -> &ArcSwap<HashSet<AgentId>> {
        match self {
            Side::Own => &shared.suspended_agents,
            Side::Fleet => &shared.fleet_agents,
        }
    }

    fn runs(self, shared: &Shared) -> &ArcSwap<HashSet<RunId>> {
        match self {
            Side::Own => &shared.suspended_runs,
            Side::Fleet => &shared.fleet_runs,
        }
    }
}

/// Adds `item` to, or removes it from, a suspension set (readers keep the snapshot they hold).
fn edit<T: Eq + Hash + Clone>(set: &ArcSwap<HashSet<T>>, item: &T, suspend: bool) {
    set.rcu(|s| {
        let mut s = HashSet::clone(s);
        if suspend {
            s.insert(item.clone());
        } else {
            s.remove(item);
        }
        s
    });
}

impl Guard {
    pub(crate) fn suspend_all_on(&self, side: Side, by: &str) -> Result<(), AuditError> {
        self.shared
            .kill_flags
            .fetch_or(side.flag(), Ordering::AcqRel);
        self.shared.wake_approval_waiters();
        // Flag first, then revoke: a mint racing with the switch re-checks it before handing out.
        let revoked = self.revoke_for_kill_switch(|b, now| b.revoke_all(now));
        revoked.and(self.kill_event(None, "suspend", "global", None, by))
    }

    pub(crate) fn resume_all_on(&self, side: Side, by: &str) -> Result<(), AuditError> {
        self.shared
            .kill_flags
            .fetch_and(!side.flag(), Ordering::AcqRel);
        self.kill_event(None, "resume", "global", None, by)
    }

    pub(crate) fn suspend_agent_on(
        &self,
        side: Side,
        agent: &AgentId,
        by: &str,
    ) -> Result<(), AuditError> {
        edit(side.agents(&self.shared), agent, true);
        self.shared.note_set_suspensions();
        self.shared.wake_approval_waiters();
        let revoked = self.revoke_for_kill_switch(|b, now| b.revoke_agent(agent, now));
        revoked.and(self.kill_event(None, "suspend", "agent", Some(agent.as_str()), by))
    }

    pub(crate) fn resume_agent_on(
        &self,
        side: Side,
        agent: &AgentId,
        by: &str,
    ) -> Result<(), AuditError> {
        edit(side.agents(&self.shared), agent, false);
        self.shared.note_set_suspensions();
        self.kill_event(None, "resume", "agent", Some(agent.as_str()), by)
    }

    pub(crate) fn suspend_run_id_on(
        &self,
        side: Side,
        run: &RunId,
        by: &str,
    ) -> Result<(), AuditError> {
        edit(side.runs(&self.shared), run, true);
        self.shared.note_set_suspensions();
        self.shared.wake_approval_waiters();
        let revoked = self.revoke_for_kill_switch(|b, now| b.revoke_run_id(run, now));
        revoked.and(self.kill_event(None, "suspend", "run", Some(run.as_str()), by))
    }

    pub(crate) fn resume_run_id_on(
        &self,
        side: Side,
        run: &RunId,
        by: &str,
    ) -> Result<(), AuditError> {
        edit(side.runs(&self.shared), run, false);
        self.shared.note_set_suspensions();
        self.kill_event(None, "resume", "run", Some(run.as_str()), by)
    }
}
