//! Runs: one agent task each, the one place per-task state lives (budget counters, loop memory,
//! baseline counts, the kill switch of the run). Ending a run revokes its credentials, teaches
//! the baseline and records the end.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::shared::Shared;
use super::{Guard, GuardError};
use crate::audit::{AuditError, AuditMarks, CredentialEvent, EventKind};
use crate::call::{RunContext, RunId};
use crate::clock::MonoTime;
use crate::credential::unix_secs;

impl Guard {
    /// Starts a run: records its start (who, role, task, trigger, compartment) and returns the
    /// handle every check of the run needs. Fails if the role is unknown or the start cannot be
    /// recorded.
    pub fn start_run(&self, ctx: RunContext) -> Result<Run, GuardError> {
        self.start_run_with_id(ctx, None)
    }

    /// Like [`start_run`](Self::start_run) with a caller-chosen run id (e.g. the framework's own).
    pub fn start_run_with_id(&self, ctx: RunContext, id: Option<RunId>) -> Result<Run, GuardError> {
        let snap = self.shared.policy.load();
        if !snap.boundary.has_role(ctx.role().as_str()) {
            return Err(GuardError::UnknownRole(ctx.role().to_string()));
        }
        if let Some(c) = ctx.compartment()
            && !snap.boundary.admits_compartment(c.as_str())
        {
            return Err(GuardError::CompartmentRefused(c.to_string()));
        }
        let n = self.shared.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let id = id.unwrap_or_else(|| {
            let wall = self
                .shared
                .clock
                .wall()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            RunId::new(format!("run-{:x}-{n}", wall.as_millis()))
        });
        {
            let mut live = self.shared.live_runs.lock();
            if live.contains_key(&id) {
                return Err(GuardError::DuplicateRun(id.to_string()));
            }
            live.insert(id.clone(), ctx.task_type().map(|t| Arc::from(t.as_str())));
        }
        let view = super::view::RunView::new(&self.shared, &ctx);
        let run = Run::from_state(RunState {
            views: super::view::Views::new(view),
            shared: Arc::clone(&self.shared),
            instance: next_run_instance(),
            id,
            ctx,
            started: self.shared.clock.now(),
            finished: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            cost: AtomicU64::new(0),
            made: AtomicU64::new(0),
            anomaly_alerted: AtomicBool::new(false),
            unexpected_alerted: AtomicBool::new(false),
            tools_used: parking_lot::Mutex::new(std::collections::BTreeSet::new()),
            recent: parking_lot::Mutex::new(std::collections::VecDeque::with_capacity(
                if snap.loops.is_some() { 64 } else { 0 },
            )),
            exposed: Default::default(),
            flow: parking_lot::Mutex::new(snap.flow.as_ref().map(|r| r.tracker())),
            recommended: Default::default(),
        });
        if let Err(e) = self
            .shared
            .record(&run, EventKind::RunStarted { context: &run.ctx })
        {
            // Never started: no end record, no learning from it; its id is free again.
            run.finished.store(true, Ordering::Release);
            self.shared.live_runs.lock().remove(&run.id);
            return Err(e.into());
        }
        Ok(run)
    }

    /// The tools this run's agent may see: allowlisted for its role, within its clearance, and
    /// read-only tools only in a read-only run or role.
    pub fn visible_tools(&self, run: &Run) -> Vec<String> {
        self.shared
            .policy
            .load()
            .boundary
            .visible_tools_for(run.ctx.role().as_str(), run.ctx.is_read_only())
            .map(|t| t.name().to_owned())
            .collect()
    }
}

/// One agent task. All per-task state lives here. Dropping it (or [`finish`](Self::finish)) ends
/// the run and records its end.
pub struct Run {
    state: Arc<RunState>,
}

impl std::ops::Deref for Run {
    type Target = RunState;

    fn deref(&self) -> &RunState {
        &self.state
    }
}

/// The state of one run, shared by the [`Run`] handle and the permits detached from it
/// ([`Permit::detach`](super::Permit::detach)). Not constructible outside the crate.
pub struct RunState {
    pub(crate) shared: Arc<Shared>,
    /// Unique among all runs this process ever starts, whatever their ids.
    pub(crate) instance: u64,
    pub(crate) id: RunId,
    pub(crate) ctx: RunContext,
    pub(crate) started: MonoTime,
    pub(crate) finished: AtomicBool,
    pub(crate) suspended: AtomicBool,
    pub(crate) calls: AtomicU64,
    pub(crate) tokens: AtomicU64,
    pub(crate) cost: AtomicU64,
    pub(crate) made: AtomicU64,
    pub(crate) anomaly_alerted: AtomicBool,
    pub(crate) unexpected_alerted: AtomicBool,
    pub(crate) tools_used: parking_lot::Mutex<std::collections::BTreeSet<String>>,
    pub(crate) recent: parking_lot::Mutex<std::collections::VecDeque<(u64, MonoTime)>>,
    /// The run's views of the snapshots in force (see `guard::view`): what its checks resolved
    /// once instead of on every call.
    pub(crate) views: super::view::Views,
    /// The secrets this run's permits were handed, scrubbed from its outcome texts.
    pub(crate) exposed: crate::credential::ExposedSecrets,
    /// What the run's context has seen, for the flow rules (made when the policy has them).
    pub(crate) flow: parking_lot::Mutex<Option<crate::flow::FlowTracker>>,
    /// Recommendations issued in this run and whether a human answered each (see
    /// [`Recommended`]).
    pub(crate) recommended: parking_lot::Mutex<Recommended>,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.id)
            .field("context", &self.ctx)
            .finish()
    }
}

impl Run {
    /// The shared state (what detached permits keep).
    pub(crate) fn state(&self) -> &Arc<RunState> {
        &self.state
    }

    /// The run's id.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// A number no other [`Run`] started in this process shares, even one started later with the
    /// same id: what credentials and other per-run state bind to, so that a second run reusing an
    /// id (after this one ended) can never use what was issued to this one.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The run's context.
    pub fn context(&self) -> &RunContext {
        &self.ctx
    }

    /// Ends the run and records its end; returns the audit error if that record fails.
    pub fn finish(self) -> Result<(), AuditError> {
        self.end()
    }

    /// Records the agent's reasoning at a decision point (a plan, a chain-of-thought summary, why
    /// it chose a tool) as a `reasoning` audit event of this run. Reasoning given on a
    /// [`ToolCall`](crate::ToolCall) is recorded with its decision; this is for the steps in between.
    pub fn note_reasoning(&self, text: &str) -> Result<(), AuditError> {
        self.shared.record(self, EventKind::Reasoning { text })
    }

    /// Revokes every credential issued to this run so far (ending the run does this by itself).
    /// Each revocation is recorded with the retention class of the tool the credential was
    /// minted for, like its issue and uses. Returns the first audit error, after revoking all of
    /// them.
    pub fn revoke_credentials(&self) -> Result<(), AuditError> {
        let Some(broker) = &self.shared.credentials else {
            return Ok(());
        };
        let mut first = Ok(());
        let now = unix_secs(self.shared.clock.wall());
        for revoked in broker.revoke_run(self.instance, now) {
            let marks = AuditMarks::retention_only(revoked.retention.clone());
            let r = self.shared.record_marked(
                Some(self),
                EventKind::Credential(CredentialEvent::Revoked {
                    id: &revoked.id,
                    provider: &revoked.provider,
                }),
                || Some(&marks),
            );
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn end(&self) -> Result<(), AuditError> {
        if self.finished.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Revocation first: it must happen even if the records below fail.
        let revoked = self.revoke_credentials();
        self.shared.learn_from(self);
        let duration = self.shared.clock.now().duration_since(self.started);
        let finished = self
            .shared
            .record(self, EventKind::RunFinished { duration });
        // The id is free again only once everything issued under it is revoked.
        self.shared.live_runs.lock().remove(&self.id);
        revoked.and(finished)
    }
}

impl Run {
    fn from_state(state: RunState) -> Self {
        Run {
            state: Arc::new(state),
        }
    }
}

impl fmt::Debug for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunState")
            .field("id", &self.id)
            .field("context", &self.ctx)
            .finish()
    }
}

/// The next process-wide run instance number (see [`Run::instance`]).
fn next_run_instance() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Drop for Run {
    fn drop(&mut self) {
        // Best effort: a sink failing here has no caller to report to; `finish` reports it.
        let _ = self.end();
    }
}

/// A recommendation's proposed tool and arguments (as recorded).
pub(crate) type Proposed = (String, serde_json::Value);

/// The recommendations a run made (recommend mode), by their number `n` (the last part of
/// their id `rec-<run>-<n>`; numbers grow with each one): the unanswered ones, at most a bound
/// of them, and the numbers of the answered ones.
#[derive(Debug, Default)]
pub(crate) struct Recommended {
    /// Waiting for a human's action, oldest first.
    pending: std::collections::BTreeMap<u64, Proposed>,
    /// Answered (one per human action: grows at the pace people act).
    answered: std::collections::HashSet<u64>,
    /// The largest number dropped unanswered to keep `pending` within its bound.
    dropped_through: u64,
}

/// The id of recommendation `n` made in run `run`: `rec-<run id>-<n>`.
pub(crate) fn recommendation_id(run: &RunId, n: u64) -> Arc<str> {
    format!("rec-{run}-{n}").into()
}

/// The number of a recommendation id [`recommendation_id`] made for `run`; `None` for an id of
/// another run or of no recommendation.
pub(crate) fn recommendation_number(run: &RunId, id: &str) -> Option<u64> {
    id.strip_prefix("rec-")?
        .strip_prefix(run.as_str())?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// Where a recommendation stands, by its number.
pub(crate) enum Standing<'a> {
    Pending(&'a Proposed),
    Answered,
    Dropped,
    Unknown,
}

impl Recommended {
    /// Keeps recommendation `n` (newer than any kept) until answered; drops the oldest
    /// unanswered ones to stay within `max` (at least 1).
    pub(crate) fn insert(&mut self, n: u64, proposed: Proposed, max: usize) {
        while self.pending.len() >= max.max(1) {
            match self.pending.pop_first() {
                Some((old, _)) => self.dropped_through = self.dropped_through.max(old),
                None => break,
            }
        }
        self.pending.insert(n, proposed);
    }

    pub(crate) fn standing(&self, n: u64) -> Standing<'_> {
        match self.pending.get(&n) {
            Some(p) => Standing::Pending(p),
            None if self.answered.contains(&n) => Standing::Answered,
            None if n <= self.dropped_through => Standing::Dropped,
            None => Standing::Unknown,
        }
    }

    /// Marks `n` answered (it was pending).
    pub(crate) fn answer(&mut self, n: u64) {
        if self.pending.remove(&n).is_some() {
            self.answered.insert(n);
        }
    }

    /// How many wait for a human's action.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_recommendation_id_names_its_run_and_number() {
        let (a, b) = (RunId::new("a"), RunId::new("a-1"));
        let id = recommendation_id(&b, 5);
        assert_eq!(&*id, "rec-a-1-5");
        assert_eq!(recommendation_number(&b, &id), Some(5));
        assert_eq!(recommendation_number(&a, &id), None, "another run's id");
        assert_eq!(recommendation_number(&a, "rec-a-x"), None);
    }

    proptest! {
        /// However recommendations are made and answered, at most `max` wait, and each number
        /// stands where its history put it.
        #[test]
        fn pending_recommendations_stay_within_their_bound(
            max in 1usize..5,
            steps in proptest::collection::vec(any::<(bool, u8)>(), 0..60),
        ) {
            let mut r = Recommended::default();
            let mut next = 0u64;
            let mut answered = std::collections::HashSet::new();
            for (make, pick) in steps {
                if make {
                    next += 1;
                    r.insert(next, ("t".into(), serde_json::Value::Null), max);
                } else if next > 0 {
                    let n = u64::from(pick) % next + 1;
                    if matches!(r.standing(n), Standing::Pending(_)) {
                        r.answer(n);
                        answered.insert(n);
                    }
                }
                prop_assert!(r.pending() <= max);
            }
            for n in 1..=next {
                let s = r.standing(n);
                if answered.contains(&n) {
                    prop_assert!(matches!(s, Standing::Answered));
                } else {
                    prop_assert!(matches!(s, Standing::Pending(_) | Standing::Dropped));
                }
            }
            prop_assert!(matches!(r.standing(next + 1), Standing::Unknown));
        }
    }
}
