//! The follower: keeps one guard's kill switch equal to the shared state, and suspends the
//! guard when it cannot confirm that state in time.
//!
//! Two threads. The *fetcher* does the I/O: it waits on the store's [`KillWatch`](super::KillWatch) (a `LISTEN`
//! or a poll) and sends every state it reads, or the error, to the *applier*. The applier never
//! blocks on I/O: it wakes at least every quarter of the staleness bound, applies what changed
//! through the guard's own kill-switch methods, and suspends the guard (`kill-switch-stale`) when
//! the last confirmation is older than the bound, however the fetcher is stuck (a hung socket, a
//! partition, a damaged file). The stale suspension is a flag of its own in the guard: lifting it
//! when confirmations return never lifts a suspension an operator set.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use super::{KillState, KillSwitchSection, KillSwitchStore, Suspension};
use crate::Guard;
use crate::call::{AgentId, RunId};
use crate::clock::{Clock, MonoTime, SystemClock};
use crate::guard::Side;

/// The reason recorded when the follower suspends its guard for want of confirmation.
pub const STALE_REASON: &str = "kill-switch-stale";

/// What the alert says when the shared state's revision went back (see
/// [`FollowerStatus::regressed_from`]).
pub const REGRESSED_REASON: &str = "kill-switch-revision-regressed";

/// What a follower knows (for health checks and dashboards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The revision of the shared state last applied, if any was read.
    pub revision: Option<u64>,
    /// Whether the guard is suspended because the state is unconfirmed.
    pub stale: bool,
    /// The last error reading the state, cleared by the next confirmation.
    pub last_error: Option<String>,
    /// How many states were applied that changed the guard.
    pub changes_applied: u64,
    /// Set while the shared state reads at a revision lower than this one, the last applied:
    /// the state was recreated or restored, the follower refuses it and keeps the guard
    /// suspended (`stale`) until the revision is back at least here. `last_error` says so.
    pub regressed_from: Option<u64>,
}

struct Inner {
    stop: AtomicBool,
    status: Mutex<FollowerStatus>,
}

enum Fetched {
    State(KillState, MonoTime),
    Failed(String),
}

/// Applies a shared kill-switch state to one guard (see the [module docs](super)). Stops when
/// dropped or [stopped](Self::stop): the guard is then suspended as unconfirmed
/// (`kill-switch-stale`), since nothing confirms the shared state any more, until a follower
/// confirms it again.
pub struct KillFollower {
    inner: Arc<Inner>,
    applier: Option<JoinHandle<()>>,
    guard: Guard,
}

impl std::fmt::Debug for KillFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillFollower")
            .field("status", &*self.inner.status.lock())
            .finish_non_exhaustive()
    }
}

impl KillFollower {
    /// Starts following `store` for `guard` with the section's poll interval and staleness
    /// bound. Waits up to the staleness bound for a first confirmation; without one the guard
    /// is suspended (`kill-switch-stale`) before this returns, and stays so until the state is
    /// confirmed. Start the follower before the guard's first run.
    pub fn start(guard: Guard, store: Arc<dyn KillSwitchStore>, cfg: &KillSwitchSection) -> Self {
        Self::start_with_clock(guard, store, cfg, Arc::new(SystemClock::new()))
    }

    /// [`start`](Self::start) measuring staleness with `clock` (a
    /// [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn start_with_clock(
        guard: Guard,
        store: Arc<dyn KillSwitchStore>,
        cfg: &KillSwitchSection,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // A guard left unconfirmed by an earlier follower (stopped, or gone stale) is this
        // one's to confirm: its first confirmation lifts that suspension (`stale` is the
        // guard's own flag, read, never copied).
        let inner = Arc::new(Inner {
            stop: AtomicBool::new(false),
            status: Mutex::new(FollowerStatus::default()),
        });
        let (tx, rx) = mpsc::channel();
        spawn_fetcher(
            store,
            cfg.poll_interval,
            Arc::clone(&clock),
            Arc::clone(&inner),
            tx,
        );
        let mut applier = Applier {
            guard,
            clock,
            staleness: cfg.staleness,
            applied: KillState::default(),
            last_ok: None,
            inner: Arc::clone(&inner),
        };
        // The first confirmation, synchronously: a guard that starts without one is suspended
        // before its first run can check.
        if let Ok(msg) = rx.recv_timeout(cfg.staleness) {
            applier.receive(msg);
        }
        if applier.last_ok.is_none() {
            applier.go_stale();
        }
        let tick = (cfg.staleness / 4)
            .min(cfg.poll_interval)
            .max(Duration::from_millis(1));
        let guard = applier.guard.clone();
        let handle = std::thread::Builder::new()
            .name("tollgate-kill-follower".into())
            .spawn(move || applier.run(rx, tick))
            .ok();
        if handle.is_none() {
            // No thread: nothing would ever confirm the state again.
            let _ = guard.suspend_unconfirmed(STALE_REASON);
        }
        KillFollower {
            inner,
            applier: handle,
            guard,
        }
    }

    /// What the follower knows now.
    pub fn status(&self) -> FollowerStatus {
        FollowerStatus {
            stale: self.guard.is_unconfirmed(),
            ..self.inner.status.lock().clone()
        }
    }

    /// Stops following. The guard (and every clone of it) is suspended as unconfirmed
    /// (`kill-switch-stale`): a guard whose shared kill switch nobody follows could miss a
    /// fleet-wide suspension, so it fails closed. A follower started again for the guard lifts
    /// that once it confirms the state; an operator's own suspensions are never touched.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        let Some(h) = self.applier.take() else {
            return;
        };
        let _ = h.join();
        if let Err(e) = self.guard.suspend_unconfirmed(STALE_REASON) {
            tracing::error!(error = %e, "kill switch: a stopped follower could not record the suspension");
        }
    }
}

impl Drop for KillFollower {
    fn drop(&mut self) {
        self.halt();
    }
}

fn spawn_fetcher(
    store: Arc<dyn KillSwitchStore>,
    poll: Duration,
    clock: Arc<dyn Clock>,
    inner: Arc<Inner>,
    tx: Sender<Fetched>,
) {
    let run = move || {
        let mut watch = store.watch();
        while !inner.stop.load(Ordering::Acquire) {
            // A state is as fresh as the moment it was asked for, not when its answer came: a
            // reply held up in the network must not count as a recent confirmation. (Asked
            // before the wait for a change, so up to one poll earlier than the read: the
            // section requires a staleness bound above two polls.)
            let asked = clock.now();
            let msg = match watch.next(poll) {
                Ok(state) => Fetched::State(state, asked),
                Err(e) => {
                    let text = e.to_string();
                    tracing::warn!(error = %text, "kill switch: cannot read the shared state");
                    // A fresh watch (a new connection) next time, after a pause.
                    watch = store.watch();
                    if tx.send(Fetched::Failed(text)).is_err() {
                        return;
                    }
                    std::thread::sleep(poll);
                    continue;
                }
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    };
    // The fetcher may block in I/O for long: it is never joined, it ends at its next wake-up
    // after the follower stops.
    let _ = std::thread::Builder::new()
        .name("tollgate-kill-fetch".into())
        .spawn(run);
}

struct Applier {
    guard: Guard,
    clock: Arc<dyn Clock>,
    staleness: Duration,
    applied: KillState,
    last_ok: Option<MonoTime>,
    inner: Arc<Inner>,
}

impl Applier {
    fn run(mut self, rx: Receiver<Fetched>, tick: Duration) {
        let since = self.clock.now();
        while !self.inner.stop.load(Ordering::Acquire) {
            match rx.recv_timeout(tick) {
                Ok(msg) => self.receive(msg),
                Err(RecvTimeoutError::Timeout) => {}
                // The fetcher is gone: nothing will confirm the state again.
                Err(RecvTimeoutError::Disconnected) => {
                    self.inner.status.lock().last_error = Some("the fetcher thread ended".into());
                    self.go_stale();
                    return;
                }
            }
            let confirmed = self.last_ok.unwrap_or(since);
            if self.clock.now().duration_since(confirmed) > self.staleness {
                self.go_stale();
            }
        }
    }

    fn receive(&mut self, msg: Fetched) {
        match msg {
            Fetched::State(state, at) => {
                let last = self.applied.revision;
                if state.revision < last {
                    // The revision only goes up: a lower one is a state recreated (a deleted
                    // file, dropped tables) or restored from an old copy. Applying it could lift
                    // suspensions nobody lifted: it is no confirmation, and the guard is
                    // suspended until the revision is back at least where it was.
                    self.regressed(last, state.revision);
                    return;
                }
                self.apply(&state);
                self.last_ok = Some(at);
                if self.clock.now().duration_since(at) <= self.staleness {
                    self.recover();
                }
            }
            Fetched::Failed(e) => self.inner.status.lock().last_error = Some(e),
        }
    }

    /// Suspends the guard as unconfirmed (once: the guard records only the change).
    fn go_stale(&mut self) {
        if let Err(e) = self.guard.suspend_unconfirmed(STALE_REASON) {
            tracing::error!(error = %e, "kill switch: the stale suspension could not be recorded (it stands)");
        }
    }

    /// Lifts the unconfirmed suspension, if it stands (the guard records only the change).
    fn recover(&mut self) {
        self.inner.status.lock().last_error = None;
        if let Err(e) = self.guard.resume_unconfirmed(STALE_REASON) {
            tracing::error!(error = %e, "kill switch: the end of the stale suspension could not be recorded");
        }
    }

    /// Refuses a state whose revision went back from `last` (applied) to `now`.
    fn regressed(&mut self, last: u64, now: u64) {
        let why = format!(
            "the shared state's revision went back from {last} to {now} (recreated or restored \
             from an old copy?): refused, the guard stays suspended until the revision is at \
             least {last} again"
        );
        let first = {
            let mut status = self.inner.status.lock();
            let first = status.regressed_from.is_none();
            status.regressed_from = Some(last);
            status.last_error = Some(why.clone());
            first
        };
        if first {
            tracing::error!(revision = last, read = now, "kill switch: {why}");
            self.guard
                .fleet_alert(|| format!("kill switch: {REGRESSED_REASON}: {why}"));
        }
        self.go_stale();
    }

    /// Brings the guard from `self.applied` to `state` through its fleet kill-switch methods
    /// (kept apart from the guard's own switches).
    fn apply(&mut self, state: &KillState) {
        let g = &self.guard;
        let old = std::mem::take(&mut self.applied);
        let mut changed = false;
        let by = |s: &Suspension| match &s.reason {
            Some(r) => format!("{} ({r})", s.by),
            None => s.by.clone(),
        };
        let log = |r: Result<(), crate::audit::AuditError>| {
            if let Err(e) = r {
                tracing::error!(error = %e, "kill switch: a change could not be recorded (it stands)");
            }
        };
        match (&old.global, &state.global) {
            (None, Some(s)) => {
                log(g.suspend_all_on(Side::Fleet, &by(s)));
                changed = true;
            }
            (Some(_), None) => {
                log(g.resume_all_on(Side::Fleet, &format!("fleet revision {}", state.revision)));
                changed = true;
            }
            _ => {}
        }
        let resumer = format!("fleet revision {}", state.revision);
        changed |= diff(&old.agents, &state.agents, |id, s| {
            let agent = AgentId::new(id);
            log(match s {
                Some(s) => g.suspend_agent_on(Side::Fleet, &agent, &by(s)),
                None => g.resume_agent_on(Side::Fleet, &agent, &resumer),
            })
        });
        changed |= diff(&old.runs, &state.runs, |id, s| {
            let run = RunId::new(id);
            log(match s {
                Some(s) => g.suspend_run_id_on(Side::Fleet, &run, &by(s)),
                None => g.resume_run_id_on(Side::Fleet, &run, &resumer),
            })
        });
        self.applied = state.clone();
        let mut status = self.inner.status.lock();
        status.revision = Some(state.revision);
        status.regressed_from = None;
        if changed {
            status.changes_applied += 1;
        }
    }
}

/// Calls `f(key, Some(new))` for each key suspended in `new` only and `f(key, None)` for each in
/// `old` only; returns whether there was any.
fn diff(
    old: &BTreeMap<String, Suspension>,
    new: &BTreeMap<String, Suspension>,
    mut f: impl FnMut(&str, Option<&Suspension>),
) -> bool {
    let mut any = false;
    for (k, s) in new {
        if !old.contains_key(k) {
            f(k, Some(s));
            any = true;
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            f(k, None);
            any = true;
        }
    }
    any
}
