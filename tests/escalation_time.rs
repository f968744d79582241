//! Deadlines and grant lifetimes on the monotonic clock (finding 13): wall-clock steps while the
//! process runs move nothing; after a restart, the time left is taken from the wall clock once,
//! capped at the original timeout or lifetime, and runs on the monotonic clock from then on.

#[path = "common/tempdir.rs"]
mod tempdir;

// Inside a module named after the file, so `cargo test escalation` selects these tests.
mod escalation_time {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use serde_json::json;
    use tempfile::TempDir;
    use tollgate::boundary::Effect;
    use tollgate::clock::{Clock, ManualClock};
    use tollgate::escalation::{
        ApprovalQueue, ApprovalRequest, ApprovalStore, Approver, Condition, Decision,
        EscalationGate, EscalationPolicy, FileApprovalStore, GateInput, LevelSpec,
        MemoryApprovalStore, OnTimeout, QueueConfig, QueueError, RuleSpec, StoreKey, Submission,
    };

    use crate::tempdir;

    const HOUR: Duration = Duration::from_secs(3600);
    const NS: Duration = Duration::from_nanos(1);

    fn gate() -> EscalationGate {
        let policy = EscalationPolicy::new()
            .group("finance", ["alice", "bob"])
            .rule(
                RuleSpec::new("auto", Condition::flag("auto"))
                    .timeout(Duration::from_secs(600))
                    .on_timeout(OnTimeout::Approve)
                    .chain([LevelSpec::new("finance")]),
            )
            .rule(
                RuleSpec::new("strict", Condition::flag("strict"))
                    .timeout(Duration::from_secs(600))
                    .chain([LevelSpec::new("finance")]),
            );
        EscalationGate::compile(policy, &[]).unwrap()
    }

    fn config(grant_ttl: Duration) -> QueueConfig {
        QueueConfig {
            grant_ttl,
            ..QueueConfig::with_groups(gate().groups().clone())
        }
    }

    fn submission(flag: &str) -> Submission {
        let g = gate();
        let flags = [flag];
        let esc = g
            .check(&GateInput::new("pay", Effect::Write, "{}").flags(&flags))
            .unwrap();
        Submission::new("run-1", "bot", "pay", json!({"n": 1}), esc, g.version())
    }

    fn memory_queue(clock: &Arc<ManualClock>, grant_ttl: Duration) -> ApprovalQueue {
        ApprovalQueue::open(
            Arc::new(MemoryApprovalStore::new()),
            clock.clone(),
            config(grant_ttl),
        )
        .unwrap()
    }

    fn approve(q: &ApprovalQueue, r: &ApprovalRequest) {
        q.decide(&r.id, &Approver::new("alice"), Decision::Approve, "ok")
            .unwrap();
    }

    #[test]
    fn wall_clock_step_forward_does_not_expire_request() {
        let clock = Arc::new(ManualClock::new());
        let q = memory_queue(&clock, HOUR);
        let auto = q.submit(submission("auto")).unwrap();
        let strict = q.submit(submission("strict")).unwrap();
        // The finding: +1 h on the wall clock, one second later, auto-approved / denied.
        clock.step_wall_forward(HOUR);
        clock.advance(Duration::from_secs(1));
        assert!(q.tick().unwrap().is_empty());
        for r in [&auto, &strict] {
            assert!(q.status(&r.id).unwrap().state.is_pending());
        }
        assert!(matches!(
            q.consume(&auto.id, &auto.args),
            Err(QueueError::NotApproved { .. })
        ));
        // A decision still counts; the deadline is 600 s on the monotonic clock.
        approve(&q, &strict);
        clock.advance(Duration::from_secs(599) - NS);
        assert!(q.status(&auto.id).unwrap().state.is_pending());
        clock.advance(NS);
        let events = q.tick().unwrap();
        assert_eq!(events.len(), 1);
        assert!(q.status(&auto.id).unwrap().state.is_approved());
        let _g = q.consume(&auto.id, &auto.args).unwrap();
    }

    #[test]
    fn wall_clock_step_back_does_not_extend_a_request_or_a_grant() {
        let clock = Arc::new(ManualClock::new());
        let q = memory_queue(&clock, HOUR);
        let granted = q.submit(submission("strict")).unwrap();
        approve(&q, &granted);
        let strict = q.submit(submission("strict")).unwrap();
        // The finding: −2 h on the wall clock let a 3600 s grant be consumed after 7200 s.
        clock.step_wall_back(2 * HOUR);
        clock.advance(Duration::from_secs(600));
        assert!(matches!(
            q.decide(&strict.id, &Approver::new("bob"), Decision::Approve, "late"),
            Err(QueueError::Expired { .. })
        ));
        clock.advance(Duration::from_secs(3000) - NS);
        let grant = q.consume(&granted.id, &granted.args);
        assert!(
            grant.is_ok(),
            "one nanosecond before the lifetime ends: {grant:?}"
        );
        let again = q.submit(submission("strict")).unwrap();
        approve(&q, &again);
        clock.step_wall_back(2 * HOUR);
        clock.advance(HOUR);
        assert!(matches!(
            q.consume(&again.id, &again.args),
            Err(QueueError::GrantExpired { .. })
        ));
    }

    /// A fresh directory for one test under the system temp dir, deleted when the value drops.
    fn temp_dir(name: &str) -> TempDir {
        tempdir::temp_dir("time", name)
    }

    /// Paths inside a test's directory.
    trait StoreDir {
        /// The approval store's file.
        fn file(&self) -> PathBuf;
    }

    impl StoreDir for TempDir {
        fn file(&self) -> PathBuf {
            self.path().join("approvals.jsonl")
        }
    }

    fn key() -> StoreKey {
        StoreKey::new("k", vec![9; 32]).unwrap()
    }

    /// A "restarted process": a new store and a new manual clock whose monotonic origin is its
    /// own, and whose wall clock reads `wall`.
    fn restart(
        dir: &TempDir,
        wall: SystemTime,
        grant_ttl: Duration,
    ) -> (Arc<ManualClock>, ApprovalQueue) {
        let clock = Arc::new(ManualClock::with_wall_origin(wall));
        let store: Arc<dyn ApprovalStore> =
            Arc::new(FileApprovalStore::open(dir.file(), &key()).unwrap());
        let q = ApprovalQueue::open(store, clock.clone(), config(grant_ttl)).unwrap();
        (clock, q)
    }

    #[test]
    fn after_a_restart_the_time_left_is_taken_from_the_wall_clock_once() {
        let dir = temp_dir("restart");
        let (clock, q) = restart(&dir, ManualClock::new().wall(), HOUR);
        let req = q.submit(submission("strict")).unwrap();
        let granted = q.submit(submission("strict")).unwrap();
        approve(&q, &granted);
        clock.advance(Duration::from_secs(100));
        let stopped = clock.wall();
        drop(q);

        // Down for 50 s: 450 s left of 600, 3450 s of the 3600 s grant.
        let (clock, q) = restart(&dir, stopped + Duration::from_secs(50), HOUR);
        // Wall-clock steps after the restart change nothing any more.
        clock.step_wall_forward(HOUR);
        clock.advance(Duration::from_secs(450) - Duration::from_millis(1));
        assert!(q.status(&req.id).unwrap().state.is_pending());
        clock.advance(Duration::from_millis(1));
        assert!(q.status(&req.id).unwrap().state.is_timed_out());
        clock.step_wall_back(2 * HOUR);
        clock.advance(Duration::from_secs(3000) - Duration::from_millis(1));
        assert!(q.consume(&granted.id, &granted.args).is_ok());
    }

    #[test]
    fn a_wall_clock_step_while_the_process_is_down_is_bounded_by_the_original_timeout() {
        let dir = temp_dir("down");
        let start = ManualClock::new().wall();
        let (_, q) = restart(&dir, start, HOUR);
        let req = q.submit(submission("strict")).unwrap();
        let granted = q.submit(submission("strict")).unwrap();
        approve(&q, &granted);
        drop(q);

        // The wall clock went back ten days while the process was down: the request keeps at
        // most its 600 s, the grant at most its 3600 s, not ten days more.
        let (clock, q) = restart(&dir, start - Duration::from_secs(10 * 86_400), HOUR);
        clock.advance(Duration::from_secs(600));
        assert!(matches!(
            q.decide(&req.id, &Approver::new("bob"), Decision::Approve, "late"),
            Err(QueueError::Expired { .. })
        ));
        clock.advance(Duration::from_secs(3000));
        assert!(matches!(
            q.consume(&granted.id, &granted.args),
            Err(QueueError::GrantExpired { .. })
        ));
        drop(q);

        // Forward past the deadline while down: that one step counts (documented).
        let dir = temp_dir("down-fwd");
        let (_, q) = restart(&dir, start, HOUR);
        let req = q.submit(submission("auto")).unwrap();
        drop(q);
        let (_, q) = restart(&dir, start + HOUR, HOUR);
        assert!(q.status(&req.id).unwrap().state.is_timed_out());
    }
}
