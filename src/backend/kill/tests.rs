use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::*;
use crate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use crate::call::RunId;
use crate::clock::ManualClock;
use crate::{DenyCode, Guard, Run, RunContext, ToolCall, Verdict};

fn guard() -> Guard {
    let boundary = ActionBoundary::builder()
        .tool("read", ToolSpec::read())
        .role("worker", RoleSpec::new().tools(["read"]))
        .build()
        .unwrap();
    Guard::builder(boundary).build().unwrap()
}

fn allowed(g: &Guard, run: &Run) -> bool {
    match g.check(run, &ToolCall::new("read", "{}")) {
        Verdict::Allow(p) => {
            p.complete(crate::Outcome::success()).unwrap();
            true
        }
        Verdict::Deny(d) => {
            assert_eq!(d.code(), DenyCode::Suspended, "{d}");
            false
        }
        Verdict::Escalate(_) => panic!("no escalation configured"),
    }
}

/// Waits (really) for `f`, up to 5 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A fresh directory `<system temp dir>/tollgate-kill-<name>-<random>`, deleted when the value
/// drops (also when the test panics).
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tollgate-kill-{name}-"))
        .tempdir()
        .unwrap()
}

fn fast() -> KillSwitchSection {
    KillSwitchSection {
        poll_interval: Duration::from_millis(5),
        staleness: Duration::from_secs(2),
        dir: None,
    }
}

#[test]
fn a_stopped_follower_leaves_its_guard_suspended_until_a_follower_confirms_again() {
    let tmp = temp_dir("stop");
    let store = Arc::new(FileKillSwitch::open(tmp.path()).unwrap());
    let g = guard();
    let follower = KillFollower::start(g.clone(), store.clone(), &fast());
    let run = g.start_run(RunContext::new("a", "worker")).unwrap();
    assert!(allowed(&g, &run));
    // A clone outlives the follower (as one handed out by a deployment that shut down).
    let clone = g.clone();
    follower.stop();
    assert!(
        !allowed(&clone, &run),
        "nobody follows the shared state any more"
    );
    assert!(g.is_unconfirmed());
    let again = KillFollower::start(g.clone(), store, &fast());
    eventually("confirmed by a new follower", || allowed(&g, &run));
    drop(again);
    assert!(
        !allowed(&clone, &run),
        "dropping a follower stops following too"
    );
}

/// A store whose replies can be held up: while `slow` is set, each read takes longer (on the
/// manual clock) than the staleness bound.
struct SlowWatch {
    clock: Arc<ManualClock>,
    slow: Arc<AtomicBool>,
    by: Duration,
}

impl KillWatch for SlowWatch {
    fn next(&mut self, wait: Duration) -> Result<KillState, KillError> {
        std::thread::sleep(wait);
        if self.slow.load(Ordering::Acquire) {
            self.clock.advance(self.by);
        }
        Ok(KillState::default())
    }
}

#[derive(Debug)]
struct SlowStore {
    clock: Arc<ManualClock>,
    slow: Arc<AtomicBool>,
    by: Duration,
}

impl KillSwitchStore for SlowStore {
    fn load(&self) -> Result<KillState, KillError> {
        Ok(KillState::default())
    }
    fn apply(&self, _: &KillChange) -> Result<Applied, KillError> {
        Err(KillError::Missing("read-only test store".into()))
    }
    fn watch(&self) -> Box<dyn KillWatch> {
        Box::new(SlowWatch {
            clock: Arc::clone(&self.clock),
            slow: Arc::clone(&self.slow),
            by: self.by,
        })
    }
}

#[test]
fn a_reply_held_up_past_the_staleness_bound_confirms_nothing() {
    let clock = Arc::new(ManualClock::new());
    let slow = Arc::new(AtomicBool::new(false));
    let cfg = KillSwitchSection {
        poll_interval: Duration::from_millis(2),
        staleness: Duration::from_secs(30),
        dir: None,
    };
    let store = Arc::new(SlowStore {
        clock: Arc::clone(&clock),
        slow: Arc::clone(&slow),
        by: Duration::from_secs(31),
    });
    let g = guard();
    let follower = KillFollower::start_with_clock(g.clone(), store, &cfg, clock.clone());
    let run = g.start_run(RunContext::new("a", "worker")).unwrap();
    assert!(allowed(&g, &run));
    // Every answer now arrives 31 s after it was asked for: each says what the state was
    // longer ago than the bound, so none of them keeps the guard running.
    slow.store(true, Ordering::Release);
    eventually("stale", || !allowed(&g, &run));
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !allowed(&g, &run),
        "a held-up reply lifted the stale suspension"
    );
    assert!(follower.status().stale);
    slow.store(false, Ordering::Release);
    eventually("confirmed again by a prompt reply", || allowed(&g, &run));
}

#[test]
fn suspensions_from_another_process_reach_the_guard_and_resumes_lift_them() {
    let tmp = temp_dir("follow");
    let dir = tmp.path().to_path_buf();
    let store = Arc::new(FileKillSwitch::open(&dir).unwrap());
    let g = guard();
    let follower = KillFollower::start(g.clone(), store.clone(), &fast());
    let a = g
        .start_run_with_id(RunContext::new("a", "worker"), Some(RunId::new("r-a")))
        .unwrap();
    let b = g.start_run(RunContext::new("b", "worker")).unwrap();
    assert!(allowed(&g, &a) && allowed(&g, &b));

    // A second handle on the same directory stands for another process.
    let other = FileKillSwitch::open(&dir).unwrap();
    other
        .apply(&KillChange::suspend(KillScope::Agent("b".into()), "ops").reason("drill"))
        .unwrap();
    eventually("agent b suspended", || !allowed(&g, &b));
    assert!(allowed(&g, &a));
    other
        .apply(&KillChange::suspend(KillScope::Run("r-a".into()), "ops"))
        .unwrap();
    eventually("run r-a suspended", || !allowed(&g, &a));
    other
        .apply(&KillChange::resume(KillScope::Agent("b".into()), "ops"))
        .unwrap();
    other
        .apply(&KillChange::resume(KillScope::Run("r-a".into()), "ops"))
        .unwrap();
    eventually("both resumed", || allowed(&g, &a) && allowed(&g, &b));
    other
        .apply(&KillChange::suspend(KillScope::Global, "ops"))
        .unwrap();
    eventually("global", || !allowed(&g, &a) && !allowed(&g, &b));
    let st = follower.status();
    assert_eq!(st.revision, Some(5));
    assert!(!st.stale);
    drop(follower);
}

#[test]
fn suspending_twice_keeps_the_first_record_and_the_revision() {
    let tmp = temp_dir("twice");
    let dir = tmp.path().to_path_buf();
    let store = FileKillSwitch::open(&dir).unwrap();
    let one = store
        .apply(&KillChange::suspend(KillScope::Global, "alice").reason("incident 7"))
        .unwrap();
    assert!(one.changed);
    let two = store
        .apply(&KillChange::suspend(KillScope::Global, "bob"))
        .unwrap();
    assert!(!two.changed);
    assert_eq!(two.state.revision, 1);
    assert_eq!(two.state.global.as_ref().unwrap().by, "alice");
    assert!(
        !store
            .apply(&KillChange::resume(KillScope::Agent("x".into()), "bob"))
            .unwrap()
            .changed
    );
}

#[test]
fn concurrent_changes_from_many_writers_are_all_kept() {
    let tmp = temp_dir("race");
    let dir = tmp.path().to_path_buf();
    FileKillSwitch::open(&dir).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let s = FileKillSwitch::open(&dir).unwrap();
                for j in 0..10 {
                    s.apply(&KillChange::suspend(
                        KillScope::Agent(format!("a{i}-{j}")),
                        "t",
                    ))
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let state = FileKillSwitch::open(&dir).unwrap().load().unwrap();
    assert_eq!(state.agents.len(), 80);
    assert_eq!(state.revision, 80);
}

#[test]
fn a_damaged_state_file_suspends_the_guard_instead_of_reading_as_nothing_suspended() {
    let tmp = temp_dir("damaged");
    let dir = tmp.path().to_path_buf();
    let store = Arc::new(FileKillSwitch::open(&dir).unwrap());
    std::fs::write(
        store.state_path(),
        b"{\"format\": \"tollgate-kill-switch/1\", ",
    )
    .unwrap();
    assert!(matches!(store.load(), Err(KillError::Corrupt { .. })));
    let g = guard();
    let cfg = KillSwitchSection {
        staleness: Duration::from_millis(200),
        ..fast()
    };
    let follower = KillFollower::start(g.clone(), store.clone(), &cfg);
    let run = g.start_run(RunContext::new("a", "worker")).unwrap();
    // No confirmation at start: suspended before the first check.
    assert!(!allowed(&g, &run));
    assert!(follower.status().stale);
    // Repaired deliberately (the state and the marker of its creation removed, the store
    // opened again): confirmed again, the stale suspension lifts.
    std::fs::remove_file(store.state_path()).unwrap();
    std::fs::remove_file(store.marker_path()).unwrap();
    FileKillSwitch::open(&dir).unwrap();
    eventually("recovered", || allowed(&g, &run));
    // Deleted after creation: never "nothing suspended".
    std::fs::remove_file(store.state_path()).unwrap();
    assert!(matches!(store.load(), Err(KillError::Missing(_))));
    eventually("stale again", || !allowed(&g, &run));
}

/// A store whose reads can be made to fail (a database that went away).
#[derive(Debug, Default)]
struct Flaky {
    state: Mutex<KillState>,
    down: AtomicBool,
}

impl Flaky {
    fn load(&self) -> Result<KillState, KillError> {
        if self.down.load(Ordering::Acquire) {
            return Err(KillError::Missing("down".into()));
        }
        Ok(self.state.lock().clone())
    }
    fn apply(&self, change: &KillChange) -> Result<Applied, KillError> {
        let mut s = self.state.lock();
        let changed = s.apply(change, 0);
        Ok(Applied {
            state: s.clone(),
            changed,
        })
    }
}

struct FlakyWatch(Arc<Flaky>);

impl KillWatch for FlakyWatch {
    fn next(&mut self, wait: Duration) -> Result<KillState, KillError> {
        std::thread::sleep(wait);
        self.0.load()
    }
}

#[derive(Debug)]
struct FlakyStore(Arc<Flaky>);

impl KillSwitchStore for FlakyStore {
    fn load(&self) -> Result<KillState, KillError> {
        self.0.load()
    }
    fn apply(&self, change: &KillChange) -> Result<Applied, KillError> {
        self.0.apply(change)
    }
    fn watch(&self) -> Box<dyn KillWatch> {
        Box::new(FlakyWatch(Arc::clone(&self.0)))
    }
}

#[test]
fn a_lost_store_suspends_after_the_staleness_bound_and_recovery_never_lifts_an_operator_suspension()
{
    let flaky = Arc::new(Flaky::default());
    let store = Arc::new(FlakyStore(Arc::clone(&flaky)));
    let clock = Arc::new(ManualClock::new());
    let g = guard();
    let cfg = KillSwitchSection {
        poll_interval: Duration::from_millis(2),
        staleness: Duration::from_secs(30),
        dir: None,
    };
    let follower = KillFollower::start_with_clock(g.clone(), store, &cfg, clock.clone());
    let a = g.start_run(RunContext::new("a", "worker")).unwrap();
    let b = g.start_run(RunContext::new("b", "worker")).unwrap();
    assert!(allowed(&g, &a));
    // An operator on this host suspends agent b directly.
    g.suspend_agent(&crate::call::AgentId::new("b"), "local-op")
        .unwrap();

    flaky.down.store(true, Ordering::Release);
    // Within the bound (no time passes on the manual clock): the last state still holds.
    std::thread::sleep(Duration::from_millis(50));
    assert!(allowed(&g, &a), "stale before the bound");
    clock.advance(Duration::from_secs(31));
    eventually("stale", || !allowed(&g, &a));
    assert!(g.is_unconfirmed());

    flaky.down.store(false, Ordering::Release);
    eventually("confirmed again", || allowed(&g, &a));
    assert!(!follower.status().stale);
    assert!(!allowed(&g, &b), "the operator's suspension stays");
}

#[test]
fn the_section_refuses_a_staleness_bound_within_one_poll() {
    let s = KillSwitchSection {
        poll_interval: Duration::from_secs(5),
        staleness: Duration::from_secs(5),
        dir: None,
    };
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("backend.kill_switch.staleness"), "{e}");
    // Confirmations are dated from before their poll's wait: twice the poll is still too short,
    // just above it is accepted.
    let twice = KillSwitchSection {
        poll_interval: Duration::from_secs(5),
        staleness: Duration::from_secs(10),
        dir: None,
    };
    let e = twice.validate().unwrap_err().to_string();
    assert!(e.contains("twice"), "{e}");
    assert!(
        KillSwitchSection {
            staleness: Duration::from_millis(10_001),
            ..twice
        }
        .validate()
        .is_ok()
    );
    assert!(
        KillSwitchSection {
            poll_interval: Duration::ZERO,
            ..KillSwitchSection::default()
        }
        .validate()
        .is_err()
    );
}

/// Review finding: the state file deleted while the fleet was suspended, then any process
/// opening the store (a worker starting, `tollgate kill status`) recreated it empty at revision
/// 0 and every follower applied it: the fleet resumed. Now the store is not recreated (the
/// marker of its creation stays), and the follower refuses a lower revision anyway.
#[test]
fn a_deleted_state_file_is_not_recreated_and_the_fleet_stays_suspended() {
    let tmp = temp_dir("recreated");
    let dir = tmp.path().to_path_buf();
    let store = Arc::new(FileKillSwitch::open(&dir).unwrap());
    assert!(store.marker_path().exists());
    let g = guard();
    let cfg = KillSwitchSection {
        staleness: Duration::from_millis(300),
        ..fast()
    };
    let follower = KillFollower::start(g.clone(), store.clone(), &cfg);
    let run = g.start_run(RunContext::new("a", "worker")).unwrap();
    for i in 0..3 {
        store
            .apply(&KillChange::suspend(KillScope::Agent(format!("a{i}")), "x"))
            .unwrap();
    }
    store
        .apply(&KillChange::suspend(KillScope::Global, "incident"))
        .unwrap();
    eventually("suspended", || !allowed(&g, &run));
    std::fs::remove_file(store.state_path()).unwrap();
    eventually("stale", || follower.status().stale);
    // Another process opens the store: it opens, but the state stays missing.
    let other = FileKillSwitch::open(&dir).unwrap();
    assert!(matches!(other.load(), Err(KillError::Missing(_))));
    assert!(!store.state_path().exists());
    std::thread::sleep(Duration::from_millis(400));
    assert!(!allowed(&g, &run), "the fleet stays suspended");
    assert!(follower.status().stale);
    // Even when something does write an empty state at revision 0 (a restore of an old copy,
    // the marker removed), the follower refuses the lower revision and says why.
    std::fs::remove_file(store.marker_path()).unwrap();
    FileKillSwitch::open(&dir).unwrap();
    assert_eq!(store.load().unwrap().revision, 0);
    eventually("regression noticed", || {
        follower.status().regressed_from == Some(4)
    });
    let st = follower.status();
    assert!(st.stale, "{st:?}");
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains("went back from 4 to 0"),
        "{st:?}"
    );
    std::thread::sleep(Duration::from_millis(400));
    assert!(!allowed(&g, &run), "revision 0 is not applied");
    assert_eq!(follower.status().revision, Some(4));
}

#[test]
fn a_lower_revision_is_refused_until_the_revision_is_back_where_it_was() {
    let flaky = Arc::new(Flaky::default());
    let store = Arc::new(FlakyStore(Arc::clone(&flaky)));
    let clock = Arc::new(ManualClock::new());
    let g = guard();
    let cfg = KillSwitchSection {
        poll_interval: Duration::from_millis(2),
        staleness: Duration::from_secs(30),
        dir: None,
    };
    let follower = KillFollower::start_with_clock(g.clone(), store.clone(), &cfg, clock);
    let run = g.start_run(RunContext::new("a", "worker")).unwrap();
    store
        .apply(&KillChange::suspend(KillScope::Agent("z".into()), "ops"))
        .unwrap();
    store
        .apply(&KillChange::suspend(KillScope::Global, "ops"))
        .unwrap();
    eventually("suspended", || !allowed(&g, &run));
    // The state is replaced by an empty one at revision 0 (no time passes: not stale).
    *flaky.state.lock() = KillState::default();
    eventually("refused", || follower.status().regressed_from == Some(2));
    assert!(follower.status().stale);
    assert!(!allowed(&g, &run));
    // Changes bring the revision back to where it was: applied again, the guard follows it.
    store
        .apply(&KillChange::suspend(KillScope::Agent("y".into()), "ops"))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!allowed(&g, &run), "revision 1 < 2: still refused");
    store
        .apply(&KillChange::resume(KillScope::Agent("y".into()), "ops"))
        .unwrap();
    eventually("revision 2 applied", || allowed(&g, &run));
    let st = follower.status();
    assert_eq!(
        (st.revision, st.regressed_from, st.stale),
        (Some(2), None, false)
    );
}

/// Review finding: a local `resume_all` lifted a fleet-wide suspension on this host for good
/// (the follower compared only against its own last-applied state).
#[test]
fn a_local_resume_never_lifts_a_fleet_suspension() {
    let tmp = temp_dir("local-resume");
    let store = Arc::new(FileKillSwitch::open(tmp.path()).unwrap());
    let g = guard();
    let _follower = KillFollower::start(g.clone(), store.clone(), &fast());
    let a = g
        .start_run_with_id(RunContext::new("a", "worker"), Some(RunId::new("r-a")))
        .unwrap();
    assert!(allowed(&g, &a));
    store
        .apply(&KillChange::suspend(
            KillScope::Global,
            "incident-commander",
        ))
        .unwrap();
    eventually("fleet suspension applied", || !allowed(&g, &a));
    assert!(g.is_fleet_suspended());
    g.resume_all("local-breaker-reset").unwrap();
    g.resume_agent(&crate::call::AgentId::new("a"), "local")
        .unwrap();
    g.resume_run_id(&RunId::new("r-a"), "local").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(!allowed(&g, &a), "the fleet suspension stands");
    // Same for the fleet's agent and run-id suspensions.
    store
        .apply(&KillChange::resume(KillScope::Global, "ic"))
        .unwrap();
    eventually("fleet resumed", || allowed(&g, &a));
    for scope in [KillScope::Agent("a".into()), KillScope::Run("r-a".into())] {
        store
            .apply(&KillChange::suspend(scope.clone(), "ic"))
            .unwrap();
        eventually("fleet scope applied", || !allowed(&g, &a));
        g.resume_agent(&crate::call::AgentId::new("a"), "local")
            .unwrap();
        g.resume_run_id(&RunId::new("r-a"), "local").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!allowed(&g, &a), "{scope} stays suspended by the fleet");
        store.apply(&KillChange::resume(scope, "ic")).unwrap();
        eventually("fleet scope lifted", || allowed(&g, &a));
    }
}

/// Review finding: a fleet resume lifted a suspension set locally before.
#[test]
fn a_fleet_resume_never_lifts_a_local_suspension() {
    let tmp = temp_dir("fleet-resume");
    let store = Arc::new(FileKillSwitch::open(tmp.path()).unwrap());
    let g = guard();
    let follower = KillFollower::start(g.clone(), store.clone(), &fast());
    let a = g
        .start_run_with_id(RunContext::new("a", "worker"), Some(RunId::new("r-a")))
        .unwrap();
    let b = g.start_run(RunContext::new("b", "worker")).unwrap();
    g.suspend_all("oncall-local").unwrap();
    assert!(!allowed(&g, &a));
    store
        .apply(&KillChange::suspend(KillScope::Global, "x"))
        .unwrap();
    eventually("applied", || follower.status().revision == Some(1));
    store
        .apply(&KillChange::resume(KillScope::Global, "x"))
        .unwrap();
    eventually("applied", || follower.status().revision == Some(2));
    assert!(!g.is_fleet_suspended());
    assert!(!allowed(&g, &a), "the local suspension stands");
    g.resume_all("oncall-local").unwrap();
    assert!(allowed(&g, &a));
    // Agent and run id: local ones stay through the fleet's suspend and resume of the same.
    g.suspend_agent(&crate::call::AgentId::new("b"), "local")
        .unwrap();
    g.suspend_run_id(&RunId::new("r-a"), "local").unwrap();
    // Each change applied before the next (the follower could otherwise read only the last
    // state and never apply the suspension the resume must not undo).
    let mut revision = 2;
    for scope in [KillScope::Agent("b".into()), KillScope::Run("r-a".into())] {
        for change in [
            KillChange::suspend(scope.clone(), "x"),
            KillChange::resume(scope, "x"),
        ] {
            store.apply(&change).unwrap();
            revision += 1;
            eventually("applied", || follower.status().revision == Some(revision));
        }
    }
    assert_eq!(revision, 6);
    assert!(
        !allowed(&g, &a) && !allowed(&g, &b),
        "local suspensions stand"
    );
    g.resume_agent(&crate::call::AgentId::new("b"), "local")
        .unwrap();
    g.resume_run_id(&RunId::new("r-a"), "local").unwrap();
    assert!(allowed(&g, &a) && allowed(&g, &b));
}
