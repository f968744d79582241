//! The file approval store under attack and after faults (findings 8, 9, 10 and 14): records
//! appended, deleted or changed by someone without the store key, a second store on the same
//! file (in this process and in another), damage in the final record, a crash between a record
//! and its head, explicit repair, keys, and records no reader could read.

#[path = "common/tempdir.rs"]
mod tempdir;

// Inside a module named after the file, so `cargo test escalation` selects these tests.
mod escalation_store {
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use hmac::{Hmac, Mac};
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};
    use tempfile::TempDir;
    use tollgate::boundary::Effect;
    use tollgate::clock::ManualClock;
    use tollgate::escalation::{
        ApprovalId, ApprovalQueue, ApprovalRequest, ApprovalStore, Approver, Condition, Decision,
        EscalationGate, EscalationPolicy, FileApprovalStore, GateInput, LevelSpec,
        MemoryApprovalStore, QueueConfig, QueueError, RequestState, RuleSpec, StoreError, StoreKey,
        StoreRecord, Submission,
    };
    use tollgate::{Args, RunContext, RunId};

    use crate::tempdir;

    /// A fresh directory for one test under the system temp dir, deleted when the value drops.
    fn temp_dir(name: &str) -> TempDir {
        tempdir::temp_dir("store", name)
    }

    /// Paths inside a test's directory.
    trait StoreDir {
        /// The approval store's file.
        fn file(&self) -> PathBuf;
        /// The head slot next to it.
        fn head(&self) -> PathBuf;
    }

    impl StoreDir for TempDir {
        fn file(&self) -> PathBuf {
            self.path().join("approvals.jsonl")
        }

        fn head(&self) -> PathBuf {
            self.path().join("approvals.jsonl.head")
        }
    }

    fn key() -> StoreKey {
        StoreKey::new("approvals-1", vec![0x42; 32]).unwrap()
    }

    fn gate() -> EscalationGate {
        let policy = EscalationPolicy::new()
            .group("finance", ["alice", "bob", "erin"])
            .rule(
                RuleSpec::new("large", Condition::amount_over("amount", 1000))
                    .timeout(Duration::from_secs(3600))
                    .quorum(2)
                    .chain([LevelSpec::new("finance")]),
            );
        EscalationGate::compile(policy, &[]).unwrap()
    }

    fn config() -> QueueConfig {
        QueueConfig::with_groups(gate().groups().clone())
    }

    fn submission(amount: u64) -> Submission {
        let g = gate();
        let args = json!({ "amount": amount });
        let esc = g
            .check(&GateInput::new("pay", Effect::Irreversible, &args))
            .unwrap();
        Submission::new("run-1", "bot", "pay", args, esc, g.version()).triggered_by("dave")
    }

    fn queue(path: &Path, clock: &Arc<ManualClock>) -> Result<ApprovalQueue, StoreError> {
        let store = Arc::new(FileApprovalStore::open(path, &key())?);
        Ok(ApprovalQueue::open(store, clock.clone(), config()).unwrap())
    }

    fn approve(q: &ApprovalQueue, id: &ApprovalId, by: &str) {
        q.decide(id, &Approver::new(by), Decision::Approve, "ok")
            .unwrap();
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }

    /// A store with: a consumed request, an approved one, a denied one and a pending one with
    /// one approval; returns them in that order.
    fn populated(dir: &TempDir, clock: &Arc<ManualClock>) -> [ApprovalRequest; 4] {
        let q = queue(&dir.file(), clock).unwrap();
        let consumed = q.submit(submission(2000)).unwrap();
        let approved = q.submit(submission(3000)).unwrap();
        let denied = q.submit(submission(4000)).unwrap();
        let pending = q.submit(submission(5000)).unwrap();
        for r in [&consumed, &approved] {
            approve(&q, &r.id, "alice");
            approve(&q, &r.id, "bob");
        }
        q.decide(&denied.id, &Approver::new("erin"), Decision::Deny, "no")
            .unwrap();
        approve(&q, &pending.id, "alice");
        let _g = q.consume(&consumed.id, &consumed.args).unwrap();
        [consumed, approved, denied, pending]
    }

    /// What an attacker without the key can build: a correctly chained line (the chain hash is
    /// public) with a MAC under some other secret.
    fn forged_line(prev_line: &str, seq: u64, record: &Value) -> String {
        let prev: Value = serde_json::from_str(prev_line).unwrap();
        let prev = prev["hash"].as_str().unwrap();
        let record = serde_json::to_string(record).unwrap();
        let mut h = Sha256::new();
        h.update(b"tollgate-approval-chain-v1\n");
        h.update(prev.as_bytes());
        h.update(format!("\n{seq}\n").as_bytes());
        h.update(record.as_bytes());
        let hash = hex(&h.finalize());
        let mut mac = Hmac::<Sha256>::new_from_slice(&[0x13; 32]).unwrap();
        mac.update(format!("tollgate-approval-record-v1\napprovals-1\n{seq}\n{hash}").as_bytes());
        let mac = hex(&mac.finalize().into_bytes());
        format!(
            r#"{{"seq":{seq},"prev":"{prev}","hash":"{hash}","key":"approvals-1","mac":"{mac}","record":{record}}}"#
        )
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn appended_decision_by_outsider_is_refused_on_replay() {
        let dir = temp_dir("outsider");
        let clock = Arc::new(ManualClock::new());
        let [.., pending] = populated(&dir, &clock);
        let before = std::fs::read(dir.file()).unwrap();
        let mut l = lines(&dir.file());
        let forged = forged_line(
            l.last().unwrap(),
            l.len() as u64 + 1,
            &json!({"record": "decided", "id": pending.id.as_str(),
                    "approver": {"id": "mallory"}, "decision": "approve",
                    "reason": "trust me", "at_ms": 1}),
        );
        l.push(forged);
        write_lines(&dir.file(), &l);
        let e = FileApprovalStore::open(dir.file(), &key()).unwrap_err();
        match &e {
            StoreError::Corrupt {
                line,
                record,
                reason,
                path,
            } => {
                assert_eq!(*line, l.len());
                assert!(record.contains("decided of request"), "{record}");
                assert!(reason.contains("MAC does not verify"), "{reason}");
                assert_eq!(path, &dir.file());
            }
            other => panic!("expected Corrupt, got {other}"),
        }
        assert!(e.to_string().contains(&format!("line {}", l.len())), "{e}");
        // Nothing was cut or rewritten.
        let mut expect = before;
        expect.extend_from_slice(l.last().unwrap().as_bytes());
        expect.push(b'\n');
        assert_eq!(std::fs::read(dir.file()).unwrap(), expect);
    }

    #[test]
    fn decision_by_outsider_in_an_unkeyed_store_does_not_count_on_replay() {
        // A store without integrity (memory here; any custom store a database user can write):
        // the queue re-checks every approval of an open request when it replays.
        let clock = Arc::new(ManualClock::new());
        let store = Arc::new(MemoryApprovalStore::new());
        let q = ApprovalQueue::open(store.clone(), clock.clone(), config()).unwrap();
        let req = q.submit(submission(5000)).unwrap();
        let other = q.submit(submission(6000)).unwrap();
        approve(&q, &req.id, "alice");
        let decided = |id: &ApprovalId, who: &str| -> StoreRecord {
            serde_json::from_value(json!({"record": "decided", "id": id.as_str(),
                "approver": {"id": who}, "decision": "approve", "reason": "x", "at_ms": 1}))
            .unwrap()
        };
        store.append(&decided(&req.id, "mallory")).unwrap(); // an outsider
        store.append(&decided(&other.id, "dave")).unwrap(); // the run's trigger
        store.append(&decided(&other.id, "bob")).unwrap();
        drop(q);
        let q = ApprovalQueue::open(store, clock, config()).unwrap();
        let refused: Vec<(&str, &str)> = q
            .replay_refusals()
            .iter()
            .map(|r| (r.approver.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(refused[0].1.contains("not a member") || refused[1].1.contains("not a member"));
        assert!(
            refused
                .iter()
                .any(|(who, why)| *who == "dave" && why.contains("separation of duties"))
        );
        for r in [&req, &other] {
            let s = q.status(&r.id).unwrap();
            assert!(s.state.is_pending(), "{:?}", s.state);
            assert_eq!(s.approvals, 1);
            assert!(matches!(
                q.consume(&r.id, &r.args),
                Err(QueueError::NotApproved { .. })
            ));
        }
        // The honest second approval still completes the quorum.
        approve(&q, &req.id, "bob");
        let _g = q.consume(&req.id, &req.args).unwrap();
    }

    #[test]
    fn deleted_consumed_record_is_detected() {
        let dir = temp_dir("deleted");
        let clock = Arc::new(ManualClock::new());
        let [consumed, ..] = populated(&dir, &clock);
        let all = lines(&dir.file());
        let consumed_at = all
            .iter()
            .position(|l| l.contains("\"record\":{\"record\":\"consumed\""))
            .unwrap();
        assert_eq!(
            consumed_at,
            all.len() - 1,
            "the consumption is the last record"
        );

        // Removed from the end: the head vouches for it.
        write_lines(&dir.file(), &all[..consumed_at]);
        let e = FileApprovalStore::open(dir.file(), &key()).unwrap_err();
        assert!(
            matches!(e, StoreError::Truncated { last_seq, head_seq, .. }
                if last_seq as usize == consumed_at && head_seq as usize == all.len()),
            "{e}"
        );
        // ... also when the head file is deleted with it.
        let head = std::fs::read(dir.head()).unwrap();
        std::fs::remove_file(dir.head()).unwrap();
        assert!(matches!(
            FileApprovalStore::open(dir.file(), &key()),
            Err(StoreError::HeadDamaged { .. })
        ));
        std::fs::write(dir.head(), &head).unwrap();

        // Removed from the middle, with records after it: the chain breaks there.
        write_lines(&dir.file(), &all);
        {
            let q = queue(&dir.file(), &clock).unwrap();
            let r = q.submit(submission(7000)).unwrap();
            approve(&q, &r.id, "alice");
        }
        let current = lines(&dir.file());
        let mut l = current.clone();
        l.remove(consumed_at);
        write_lines(&dir.file(), &l);
        let e = FileApprovalStore::open(dir.file(), &key()).unwrap_err();
        assert!(
            matches!(e, StoreError::Corrupt { line, ref reason, .. }
                if line == consumed_at + 1 && reason.contains("sequence number")),
            "{e}"
        );
        // With the line back, the grant stays used.
        write_lines(&dir.file(), &current);
        let q = queue(&dir.file(), &clock).unwrap();
        assert!(matches!(
            q.consume(&consumed.id, &consumed.args),
            Err(QueueError::AlreadyUsed { .. })
        ));
    }

    #[test]
    fn flipped_byte_in_final_record_refuses_open() {
        let dir = temp_dir("flip");
        let clock = Arc::new(ManualClock::new());
        let [consumed, _, denied, _] = populated(&dir, &clock);
        // Make a deny the final record, then test the consumption as final record too.
        for last in ["deny", "consume"] {
            {
                let q = queue(&dir.file(), &clock).unwrap();
                if last == "deny" {
                    let r = q.submit(submission(9000)).unwrap();
                    q.decide(&r.id, &Approver::new("bob"), Decision::Deny, "no")
                        .unwrap();
                } else {
                    let r = q.submit(submission(9500)).unwrap();
                    approve(&q, &r.id, "alice");
                    approve(&q, &r.id, "bob");
                    let _g = q.consume(&r.id, &r.args).unwrap();
                }
            }
            let good = std::fs::read(dir.file()).unwrap();
            let start = good[..good.len() - 1]
                .iter()
                .rposition(|&b| b == b'\n')
                .unwrap()
                + 1;
            // A single-bit flip of every byte of the final line, newline included, and the
            // case bit of every letter (an upper-case hex digit decodes to the same value).
            for i in start..good.len() {
                let bits: &[u8] = if good[i].is_ascii_alphabetic() {
                    &[0x01, 0x20]
                } else {
                    &[0x01]
                };
                for &bit in bits {
                    let mut bad = good.clone();
                    bad[i] ^= bit;
                    std::fs::write(dir.file(), &bad).unwrap();
                    let r = FileApprovalStore::open(dir.file(), &key());
                    assert!(
                        r.is_err(),
                        "{last}: flipping bit {bit:#x} of byte {} of the final line was accepted",
                        i - start
                    );
                    assert_eq!(std::fs::read(dir.file()).unwrap(), bad, "nothing was cut");
                }
            }
            std::fs::write(dir.file(), &good).unwrap();
        }
        let q = queue(&dir.file(), &clock).unwrap();
        assert!(q.status(&denied.id).unwrap().state.is_denied());
        assert!(matches!(
            q.consume(&consumed.id, &consumed.args),
            Err(QueueError::AlreadyUsed { .. })
        ));
    }

    #[test]
    fn a_crash_between_a_record_and_its_head_loses_nothing_acknowledged() {
        let dir = temp_dir("crash");
        let clock = Arc::new(ManualClock::new());
        let [.., pending] = populated(&dir, &clock);
        let head_before = std::fs::read(dir.head()).unwrap();
        let file_before = std::fs::read(dir.file()).unwrap();
        {
            let q = queue(&dir.file(), &clock).unwrap();
            approve(&q, &pending.id, "bob");
        }
        let full = std::fs::read(dir.file()).unwrap();
        // The record reached the disk, the head update did not: the record was not
        // acknowledged, but it is authentic, so it is kept.
        std::fs::write(dir.head(), &head_before).unwrap();
        let q = queue(&dir.file(), &clock).unwrap();
        assert!(q.status(&pending.id).unwrap().state.is_approved());
        drop(q);
        // The head was brought up to date on open.
        let q = queue(&dir.file(), &clock).unwrap();
        drop(q);
        // A crash *during* the head update: the record is synced, the slot being written (the
        // record's, `seq % 2`) is torn. The file holds the record past the other slot's seq,
        // which proves the crash: opened, the record kept, the head rewritten whole.
        let seq = lines(&dir.file()).len();
        let mut torn = head_before.clone();
        let slot = 256 * (seq % 2);
        torn[slot + 100..slot + 256].fill(b'#');
        std::fs::write(dir.head(), &torn).unwrap();
        let q = queue(&dir.file(), &clock).unwrap();
        assert!(q.status(&pending.id).unwrap().state.is_approved());
        drop(q);
        let healed = std::fs::read(dir.head()).unwrap();
        assert_eq!(healed.len(), 512, "the head was rewritten with both slots");
        // The same damage with the record gone is not a crash: refused.
        let all = lines(&dir.file());
        write_lines(&dir.file(), &all[..all.len() - 1]);
        std::fs::write(dir.head(), &torn).unwrap();
        assert!(matches!(
            queue(&dir.file(), &clock),
            Err(StoreError::HeadDamaged { .. })
        ));
        write_lines(&dir.file(), &all);
        std::fs::write(dir.head(), &healed).unwrap();
        let q = queue(&dir.file(), &clock).unwrap();
        drop(q);
        // An append interrupted before its newline, head not updated: a torn tail, cut.
        std::fs::write(dir.head(), &head_before).unwrap();
        std::fs::write(dir.file(), &full[..full.len() - 1]).unwrap();
        let store = FileApprovalStore::open(dir.file(), &key()).unwrap();
        let torn = store.recovered().unwrap();
        assert_eq!(torn.bytes as usize, full.len() - 1 - file_before.len());
        assert_eq!(std::fs::read(dir.file()).unwrap(), file_before);
        let q = ApprovalQueue::open(Arc::new(store), clock.clone(), config()).unwrap();
        assert!(q.status(&pending.id).unwrap().state.is_pending());
    }

    #[test]
    fn two_stores_on_one_file_are_refused() {
        if let Ok(path) = std::env::var("TOLLGATE_TEST_HOLD_STORE") {
            // The second process: hold the store until the parent closes our stdin.
            let _store = FileApprovalStore::open(&path, &key()).unwrap();
            println!("holding the store");
            std::io::stdout().flush().unwrap();
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            return;
        }
        let dir = temp_dir("lock");
        let clock = Arc::new(ManualClock::new());
        let [_, approved, ..] = populated(&dir, &clock);

        // In this process: the finding ran two queues on one file and consumed a grant twice.
        let first = queue(&dir.file(), &clock).unwrap();
        let e = FileApprovalStore::open(dir.file(), &key()).unwrap_err();
        assert!(
            matches!(&e, StoreError::Locked { holder: Some(pid), path, .. }
                if *pid == std::process::id() && path == &dir.file()),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        assert!(matches!(
            FileApprovalStore::repair(dir.file(), &key(), &*clock, "x"),
            Err(StoreError::Locked { .. })
        ));
        let _g = first.consume(&approved.id, &approved.args).unwrap();
        drop(first);
        let q = queue(&dir.file(), &clock).unwrap();
        assert!(matches!(
            q.consume(&approved.id, &approved.args),
            Err(QueueError::AlreadyUsed { .. })
        ));
        drop(q);

        // In another process.
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "escalation_store::two_stores_on_one_file_are_refused",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TOLLGATE_TEST_HOLD_STORE", dir.file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the child exited");
            if line.contains("holding the store") {
                break;
            }
        }
        let e = FileApprovalStore::open(dir.file(), &key()).unwrap_err();
        assert!(
            matches!(e, StoreError::Locked { holder: Some(pid), .. } if pid == child.id()),
            "{e}"
        );
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
        // The lock died with the holder.
        assert!(FileApprovalStore::open(dir.file(), &key()).is_ok());
    }

    #[test]
    fn repair_removes_damage_declares_it_and_voids_open_requests() {
        let dir = temp_dir("repair");
        let clock = Arc::new(ManualClock::new());
        let [consumed, approved, denied, pending] = populated(&dir, &clock);
        let all = lines(&dir.file());
        // Damage line 10 of 11: alice's approval of `pending`. The consumption of `consumed`
        // (line 11) goes with it: every line after the damage is chained to it.
        let at = 9;
        assert!(all[at].contains(pending.id.as_str()) && all[at].contains("decided"));
        let mut bad = all.clone();
        bad[at] = bad[at].replace("\"alice\"", "\"alicf\"");
        write_lines(&dir.file(), &bad);
        let e = FileApprovalStore::open(dir.file(), &key()).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { line: 10, .. }), "{e}");

        let report =
            FileApprovalStore::repair(dir.file(), &key(), &*clock, "disk error, ticket 42")
                .unwrap();
        let removal = report.removal.clone().unwrap();
        assert_eq!(removal.first_line, Some(10));
        assert_eq!(removal.lines, 2);
        assert_eq!(removal.kept_seq, 9);
        assert_eq!(report.seq, Some(10));
        assert!(removal.damage.contains("line 10"), "{}", removal.damage);
        // The removed bytes are kept beside the store, and their digest is declared.
        let saved = std::fs::read(dir.path().join(removal.saved_as.as_deref().unwrap())).unwrap();
        assert_eq!(saved, format!("{}\n", bad[at..].join("\n")).into_bytes());
        let digest: String = Sha256::digest(&saved)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        assert_eq!(removal.sha256, digest);

        let store = Arc::new(FileApprovalStore::open(dir.file(), &key()).unwrap());
        let records = store.load().unwrap();
        assert!(matches!(
            records.last(),
            Some(StoreRecord::Repaired { reason, removed, .. })
                if reason == "disk error, ticket 42" && *removed == removal
        ));
        let q = ApprovalQueue::open(store, clock.clone(), config()).unwrap();
        // Every request still open when the repair was declared is voided, never re-armed: the
        // consumed one too, whose consumption was removed. The denied one stays denied.
        assert!(q.status(&denied.id).unwrap().state.is_denied());
        for r in [&approved, &pending, &consumed] {
            let s = q.status(&r.id).unwrap().state;
            assert!(s.is_voided(), "{}: {s:?}", r.id);
            assert!(matches!(
                q.consume(&r.id, &r.args),
                Err(QueueError::NotApproved { .. })
            ));
        }
        assert!(matches!(
            q.decide(
                &pending.id,
                &Approver::new("bob"),
                Decision::Approve,
                "late"
            ),
            Err(QueueError::NotPending {
                state: RequestState::Voided { .. },
                ..
            })
        ));
        // New work continues on the repaired chain; a clean store needs no repair.
        let fresh = q.submit(submission(8000)).unwrap();
        approve(&q, &fresh.id, "alice");
        drop(q);
        let report = FileApprovalStore::repair(dir.file(), &key(), &*clock, "again").unwrap();
        assert_eq!(report.removal, None);
        let q = queue(&dir.file(), &clock).unwrap();
        assert_eq!(q.status(&fresh.id).unwrap().approvals, 1);
    }

    #[test]
    fn a_repair_declares_records_removed_from_the_end_and_never_rearms_a_grant() {
        let dir = temp_dir("repair-end");
        let clock = Arc::new(ManualClock::new());
        let [consumed, ..] = populated(&dir, &clock);
        let all = lines(&dir.file());
        write_lines(&dir.file(), &all[..all.len() - 1]);
        assert!(matches!(
            FileApprovalStore::open(dir.file(), &key()),
            Err(StoreError::Truncated { .. })
        ));
        let report = FileApprovalStore::repair(dir.file(), &key(), &*clock, "restored").unwrap();
        let removal = report.removal.unwrap();
        assert_eq!(removal.head_seq, Some(all.len() as u64));
        assert_eq!(
            (removal.lines, removal.bytes, removal.first_line),
            (0, 0, None)
        );
        let q = queue(&dir.file(), &clock).unwrap();
        // The consumption was lost; the grant is voided, not usable again.
        assert!(q.status(&consumed.id).unwrap().state.is_voided());
        assert!(matches!(
            q.consume(&consumed.id, &consumed.args),
            Err(QueueError::NotApproved { .. })
        ));
    }

    #[test]
    fn records_nested_deeper_than_the_cap_are_refused_before_anything_is_acknowledged() {
        let dir = temp_dir("deep");
        let clock = Arc::new(ManualClock::new());
        let nested = |depth: usize| {
            let mut v = json!(1);
            for _ in 0..depth {
                v = json!({ "a": v });
            }
            v
        };
        let g = gate();
        let sub = |args: Value| {
            let esc = g
                .check(&GateInput::new(
                    "pay",
                    Effect::Irreversible,
                    r#"{"amount": 5000}"#,
                ))
                .unwrap();
            Submission::new("run-1", "bot", "pay", args, esc, g.version())
        };
        let store = Arc::new(FileApprovalStore::open(dir.file(), &key()).unwrap());
        let q = ApprovalQueue::open(store.clone(), clock.clone(), config()).unwrap();
        // 200 levels: far past serde_json's recursion limit, as in the finding.
        for depth in [65, 200] {
            assert!(matches!(
                q.submit(sub(nested(depth))),
                Err(QueueError::InvalidSubmission { ref field, .. }) if field == "args"
            ));
        }
        assert!(q.is_empty());
        assert_eq!(std::fs::read(dir.file()).unwrap(), b"");
        // The store refuses on its own too (for callers that append directly).
        let deep = q.submit(sub(nested(64))).unwrap();
        let mut request = deep.clone();
        request.args = nested(200);
        let before = std::fs::read(dir.file()).unwrap();
        assert!(matches!(
            store.append(&StoreRecord::Submitted { request }),
            Err(StoreError::Unrepresentable { .. })
        ));
        assert_eq!(std::fs::read(dir.file()).unwrap(), before);
        // What was acknowledged (64 levels, the cap) is read back after a restart.
        drop(q);
        drop(store);
        let q = queue(&dir.file(), &clock).unwrap();
        assert_eq!(q.status(&deep.id).unwrap().request.args, nested(64));
    }

    #[test]
    fn records_under_an_unknown_key_are_refused_and_retired_keys_are_accepted() {
        let dir = temp_dir("keys");
        let clock = Arc::new(ManualClock::new());
        let [.., pending] = populated(&dir, &clock);
        let new_key = StoreKey::new("approvals-2", vec![0x77; 32]).unwrap();
        let e = FileApprovalStore::open(dir.file(), &new_key).unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt { line: 1, reason, .. } if reason.contains("`approvals-1`, which is not configured")),
            "{e}"
        );
        // A key with the same id but another secret: every MAC fails.
        let impostor = StoreKey::new("approvals-1", vec![0x43; 32]).unwrap();
        assert!(matches!(
            FileApprovalStore::open(dir.file(), &impostor),
            Err(StoreError::Corrupt { line: 1, .. })
        ));
        // Rotation: old records under the retired key, new ones under the new key.
        {
            let store = FileApprovalStore::open_with_keys(dir.file(), &new_key, &[key()]).unwrap();
            let q = ApprovalQueue::open(Arc::new(store), clock.clone(), config()).unwrap();
            approve(&q, &pending.id, "bob");
        }
        assert!(
            lines(&dir.file())
                .last()
                .unwrap()
                .contains("\"key\":\"approvals-2\"")
        );
        let store = FileApprovalStore::open_with_keys(dir.file(), &new_key, &[key()]).unwrap();
        let q = ApprovalQueue::open(Arc::new(store), clock, config()).unwrap();
        assert!(q.status(&pending.id).unwrap().state.is_approved());
        assert!(matches!(
            StoreKey::new("bad id", vec![0; 32]),
            Err(tollgate::escalation::StoreKeyError::BadId { .. })
        ));
    }

    #[test]
    fn a_ticket_survives_a_restart_and_a_key_rotation() {
        // Arguments are bound with a key derived from the store key: the same in every process,
        // and the retired key's still binds the requests recorded under it.
        let dir = temp_dir("args-keys");
        let clock = Arc::new(ManualClock::new());
        let [_, approved, _, pending] = populated(&dir, &clock);
        let run = RunId::new("run-1");
        let ctx = RunContext::new("bot", "payments").triggered_by("dave");
        let new_key = StoreKey::new("approvals-2", vec![0x77; 32]).unwrap();
        let store = FileApprovalStore::open_with_keys(dir.file(), &new_key, &[key()]).unwrap();
        let q = ApprovalQueue::open(Arc::new(store), clock.clone(), config()).unwrap();
        // New requests bind under the new key.
        assert_ne!(q.args_hash(&approved.args).unwrap(), approved.args_hash);
        let fresh = q.submit(submission(7000)).unwrap();
        assert_eq!(q.args_hash(&fresh.args).unwrap(), fresh.args_hash);
        approve(&q, &pending.id, "bob");
        for r in [&approved, &pending] {
            // Another amount is still refused under either key.
            let other = json!({ "amount": 1 });
            assert!(matches!(
                q.consume_ticket(&r.ticket(), &run, &ctx, "pay", Args::Value(&other)),
                Err(QueueError::ArgsMismatch { .. })
            ));
            let args = serde_json::to_string(&r.args).unwrap();
            let _g = q
                .consume_ticket(&r.ticket(), &run, &ctx, "pay", Args::Json(&args))
                .unwrap();
        }
        // Without the store key, the same arguments cannot be bound (or tested) at all: a queue
        // over another store has another key.
        let other =
            ApprovalQueue::open(Arc::new(MemoryApprovalStore::new()), clock, config()).unwrap();
        assert_ne!(other.args_hash(&approved.args).unwrap(), approved.args_hash);
    }
}
