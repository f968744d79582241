//! What the approval queue records and how it comes back: an observer or a store that refuses a
//! transition aborts it (fail closed), a restart from a file store keeps every request and
//! consumes no grant twice, a torn last line is truncated and reported, damage before it is an
//! error naming the line, and contradictory records refuse to replay.

#[path = "common/approval_queue.rs"]
mod approval_queue;
#[path = "common/tempdir.rs"]
mod tempdir;

// Inside a module named after the file, so `cargo test escalation` selects these tests.
mod escalation_queue_store {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use serde_json::json;
    use tempfile::TempDir;
    use tollgate::audit::AuditError;
    use tollgate::clock::ManualClock;
    use tollgate::escalation::{
        ApprovalId, ApprovalQueue, ApprovalStore, Decision, FileApprovalStore, MemoryApprovalStore,
        QueueConfig, QueueError, QueueObserver, StoreError, StoreKey, StoreRecord, Transition,
        TransitionKind,
    };

    use crate::approval_queue::{approve, big, fixture, gate, state, submission, who};
    use crate::tempdir;

    /// Records every transition; refuses them while `fail` is set.
    #[derive(Default)]
    struct Recorder {
        fail: AtomicBool,
        seen: Mutex<Vec<String>>,
    }

    impl QueueObserver for Recorder {
        fn on_transition(&self, t: &Transition<'_>) -> Result<(), AuditError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(AuditError::Refused {
                    sink: "test",
                    reason: "down".into(),
                });
            }
            let s = match &t.kind {
                TransitionKind::Requested { group } => format!("requested {group}"),
                TransitionKind::Escalated { to, group, .. } => format!("escalated {to} {group}"),
                TransitionKind::Decided {
                    approver,
                    decision,
                    wait,
                    resolution,
                    ..
                } => format!(
                    "decided {} {decision:?} after {}s resolved={}",
                    approver.id,
                    wait.as_secs(),
                    resolution.is_some()
                ),
                TransitionKind::TimedOut { wait, .. } => {
                    format!("timed out after {}s", wait.as_secs())
                }
                TransitionKind::Consumed { .. } => "consumed".into(),
                _ => "other".into(),
            };
            self.seen.lock().unwrap().push(s);
            Ok(())
        }
    }

    #[test]
    fn the_observer_sees_every_transition_and_its_refusal_aborts_it() {
        let clock = Arc::new(ManualClock::new());
        let store = Arc::new(MemoryApprovalStore::new());
        let rec = Arc::new(Recorder::default());
        let gate = gate();
        let queue = ApprovalQueue::open(
            store.clone(),
            clock.clone(),
            QueueConfig::with_groups(gate.groups().clone()),
        )
        .unwrap()
        .with_observer(rec.clone());

        rec.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            queue.submit(submission(&gate, json!({"amount": 5000}), &[])),
            Err(QueueError::Observer(_))
        ));
        assert!(store.is_empty() && queue.is_empty());

        rec.fail.store(false, Ordering::SeqCst);
        let req = queue
            .submit(submission(&gate, json!({"amount": 5000}), &[]))
            .unwrap();
        clock.advance(Duration::from_secs(90));
        approve(&queue, &req.id, "alice").unwrap();
        rec.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            approve(&queue, &req.id, "bob"),
            Err(QueueError::Observer(_))
        ));
        assert_eq!(queue.status(&req.id).unwrap().approvals, 1);
        rec.fail.store(false, Ordering::SeqCst);
        clock.advance(Duration::from_secs(1800));
        approve(&queue, &req.id, "bob").unwrap();
        rec.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            queue.consume(&req.id, &req.args),
            Err(QueueError::Observer(_))
        ));
        rec.fail.store(false, Ordering::SeqCst);
        let _grant = queue.consume(&req.id, &req.args).unwrap();
        assert_eq!(
            *rec.seen.lock().unwrap(),
            [
                "requested finance",
                "decided alice Approve after 90s resolved=false",
                "escalated 1 cfo",
                "decided bob Approve after 1890s resolved=true",
                "consumed",
            ]
        );
        assert_eq!(store.len(), 5);
    }

    /// A store that refuses appends while `fail` is set.
    #[derive(Default)]
    struct Flaky {
        fail: AtomicBool,
        inner: MemoryApprovalStore,
    }

    impl ApprovalStore for Flaky {
        fn append(&self, rec: &StoreRecord) -> Result<(), StoreError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(StoreError::Io {
                    path: "flaky".into(),
                    source: std::io::Error::other("disk full"),
                });
            }
            self.inner.append(rec)
        }
        fn load(&self) -> Result<Vec<StoreRecord>, StoreError> {
            self.inner.load()
        }
    }

    #[test]
    fn a_store_failure_aborts_the_transition() {
        let clock = Arc::new(ManualClock::new());
        let store = Arc::new(Flaky::default());
        let gate = gate();
        let queue = ApprovalQueue::open(
            store.clone(),
            clock.clone(),
            QueueConfig::with_groups(gate.groups().clone()),
        )
        .unwrap();
        store.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            queue.submit(submission(&gate, json!({"amount": 5000}), &[])),
            Err(QueueError::Store(_))
        ));
        assert!(queue.is_empty());
        store.fail.store(false, Ordering::SeqCst);
        let req = queue
            .submit(submission(&gate, json!({"amount": 5000}), &[]))
            .unwrap();
        approve(&queue, &req.id, "alice").unwrap();
        approve(&queue, &req.id, "bob").unwrap();
        store.fail.store(true, Ordering::SeqCst);
        assert!(matches!(
            queue.consume(&req.id, &req.args),
            Err(QueueError::Store(_))
        ));
        // Not consumed: once the store works again, the grant can be taken (once).
        store.fail.store(false, Ordering::SeqCst);
        assert!(state(&queue, &req.id).is_approved());
        let _g = queue.consume(&req.id, &req.args).unwrap();
        assert!(matches!(
            queue.consume(&req.id, &req.args),
            Err(QueueError::AlreadyUsed { .. })
        ));
    }

    /// A fresh directory for one test under the system temp dir, deleted when the value drops.
    fn temp_dir(name: &str) -> TempDir {
        tempdir::temp_dir("escalation", name)
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

    fn store_key() -> StoreKey {
        StoreKey::new("approvals-test", vec![0x5a; 32]).unwrap()
    }

    fn open_file_queue(path: &Path, clock: &Arc<ManualClock>) -> ApprovalQueue {
        let store = Arc::new(FileApprovalStore::open(path, &store_key()).unwrap());
        assert!(store.recovered().is_none());
        ApprovalQueue::open(
            store,
            clock.clone(),
            QueueConfig::with_groups(gate().groups().clone()),
        )
        .unwrap()
    }

    #[test]
    fn a_restart_keeps_every_request_and_consumes_none_twice() {
        let dir = temp_dir("restart");
        let clock = Arc::new(ManualClock::new());
        let gate = gate();
        let q = open_file_queue(&dir.file(), &clock);
        let sub = |amount: u64| submission(&gate, json!({"amount": amount}), &[]);
        let pending = q.submit(sub(2000)).unwrap();
        let half = q.submit(sub(3000)).unwrap();
        let approved = q.submit(sub(4000)).unwrap();
        let denied = q.submit(sub(5000)).unwrap();
        let consumed = q.submit(sub(6000)).unwrap();
        approve(&q, &half.id, "alice").unwrap();
        for id in [&approved.id, &consumed.id] {
            approve(&q, id, "alice").unwrap();
            approve(&q, id, "bob").unwrap();
        }
        q.decide(&denied.id, &who("erin"), Decision::Deny, "no")
            .unwrap();
        let _grant = q.consume(&consumed.id, &consumed.args).unwrap();
        clock.advance(Duration::from_secs(1800));
        assert_eq!(q.tick().unwrap().len(), 2, "pending and half move to cfo");
        let before: HashMap<String, _> = [&pending, &half, &approved, &denied, &consumed]
            .iter()
            .map(|r| (r.id.to_string(), q.status(&r.id).unwrap()))
            .collect();
        drop(q);

        let q = open_file_queue(&dir.file(), &clock);
        assert_eq!(q.len(), 5);
        for (id, status) in &before {
            assert_eq!(&q.status(&ApprovalId::new(id)).unwrap(), status);
        }
        assert!(q.tick().unwrap().is_empty(), "chain moves are not repeated");
        assert!(matches!(
            q.consume(&consumed.id, &consumed.args),
            Err(QueueError::AlreadyUsed { .. })
        ));
        assert!(matches!(
            approve(&q, &half.id, "alice"),
            Err(QueueError::AlreadyApproved { .. })
        ));
        assert!(approve(&q, &half.id, "carol").unwrap().is_approved());
        let _g = q.consume(&approved.id, &approved.args).unwrap();
        drop(q);

        // A second restart: both grants stay consumed; the deadline still applies.
        let q = open_file_queue(&dir.file(), &clock);
        for r in [&approved, &consumed] {
            assert!(matches!(
                q.consume(&r.id, &r.args),
                Err(QueueError::AlreadyUsed { .. })
            ));
        }
        clock.advance(Duration::from_secs(1800));
        assert!(matches!(
            approve(&q, &pending.id, "alice"),
            Err(QueueError::Expired { .. })
        ));
        let _g = q.consume(&half.id, &half.args).unwrap();
    }

    /// Only a final line without a newline (what a crash during an append leaves) is a torn
    /// write; a complete final line that does not verify is damage (see escalation_store.rs).
    #[test]
    fn a_torn_last_line_is_truncated_and_reported() {
        let dir = temp_dir("torn");
        let clock = Arc::new(ManualClock::new());
        let gate = gate();
        let q = open_file_queue(&dir.file(), &clock);
        let req = q
            .submit(submission(&gate, json!({"amount": 5000}), &[]))
            .unwrap();
        approve(&q, &req.id, "alice").unwrap();
        drop(q);
        let good = std::fs::read(dir.file()).unwrap();

        for tail in [
            &b"{\"seq\":3,\"prev\":\"abc"[..], // crash mid-append
            &b"\0\0\0\0"[..],                  // zeros after a crash
        ] {
            let mut bytes = good.clone();
            bytes.extend_from_slice(tail);
            std::fs::write(dir.file(), &bytes).unwrap();
            let store = FileApprovalStore::open(dir.file(), &store_key()).unwrap();
            let torn = store.recovered().expect("reported").clone();
            assert_eq!(torn.line, 3);
            assert_eq!(torn.bytes, tail.len() as u64);
            assert_eq!(std::fs::read(dir.file()).unwrap(), good);
            let q = ApprovalQueue::open(
                Arc::new(store),
                clock.clone(),
                QueueConfig::with_groups(gate.groups().clone()),
            )
            .unwrap();
            assert_eq!(q.status(&req.id).unwrap().approvals, 1);
        }
        // Appends continue cleanly after a repair.
        let q = open_file_queue(&dir.file(), &clock);
        assert!(approve(&q, &req.id, "bob").unwrap().is_approved());
        drop(q);
        let q = open_file_queue(&dir.file(), &clock);
        assert!(state(&q, &req.id).is_approved());
    }

    #[test]
    fn damage_before_the_last_line_is_an_error_naming_the_line() {
        let dir = temp_dir("corrupt");
        let clock = Arc::new(ManualClock::new());
        let gate = gate();
        let q = open_file_queue(&dir.file(), &clock);
        let req = q
            .submit(submission(&gate, json!({"amount": 5000}), &[]))
            .unwrap();
        approve(&q, &req.id, "alice").unwrap();
        approve(&q, &req.id, "bob").unwrap();
        drop(q);
        let text = std::fs::read_to_string(dir.file()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let damaged = format!("{}\n{}\n{}\n", lines[0], &lines[1][..10], lines[2]);
        std::fs::write(dir.file(), &damaged).unwrap();
        let e = FileApprovalStore::open(dir.file(), &store_key()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        // Untouched: nothing was repaired.
        assert_eq!(std::fs::read_to_string(dir.file()).unwrap(), damaged);
        // A damaged complete line followed by a torn tail is damage too.
        let damaged = format!("{}\n{}\n{}", lines[0], &lines[1][..10], &lines[2][..5]);
        std::fs::write(dir.file(), &damaged).unwrap();
        assert!(matches!(
            FileApprovalStore::open(dir.file(), &store_key()),
            Err(StoreError::Corrupt { line: 2, .. })
        ));
    }

    #[test]
    fn contradictory_records_refuse_to_replay() {
        let f = fixture();
        let req = big(&f);
        let store = Arc::new(MemoryApprovalStore::new());
        store
            .append(&StoreRecord::Submitted {
                request: req.clone(),
            })
            .unwrap();
        // Consumed without approval.
        let rec: StoreRecord = serde_json::from_value(json!({
            "record": "consumed", "id": req.id.as_str(), "at_ms": 1
        }))
        .unwrap();
        store.append(&rec).unwrap();
        let e = ApprovalQueue::open(store, f.clock.clone(), QueueConfig::default()).unwrap_err();
        assert!(matches!(e, QueueError::Replay { index: 1, .. }), "{e}");
    }
}
