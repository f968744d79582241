//! Regressions for the escalation findings of the attacker review after issue 10 (findings 1, 2
//! and 4 of `review.md`). Each test reproduces the attack as the reviewer wrote it and checks
//! that it is now stopped:
//!
//! 1. another agent (or the same agent under another trigger or compartment) reusing a finished
//!    run's id cannot consume its approval;
//! 2. removing the final `consumed` record and destroying (or overwriting) the head slot that
//!    vouched for it no longer makes the approval store open, so a single-use grant cannot be
//!    re-armed;
//! 4. a secret argument of an escalated call cannot be recovered from the approval hash: the hash
//!    is keyed, and the audit trail does not carry it.

#[path = "common/tempdir.rs"]
mod tempdir;

// Inside a module named after the file, so `cargo test review` selects these tests.
mod review_escalation {
    use std::path::PathBuf;
    use std::sync::Arc;

    use serde_json::json;
    use sha2::{Digest, Sha256};
    use tempfile::TempDir;
    use tollgate::audit::MemorySink;
    use tollgate::boundary::{ActionBoundary, Arg, Effect, RoleSpec, ToolSpec};
    use tollgate::call::canonical;
    use tollgate::clock::ManualClock;
    use tollgate::escalation::{
        ApprovalQueue, ApprovalRequest, Approver, Decision, EscalationGate, EscalationPolicy,
        FileApprovalStore, GateInput, MemoryApprovalStore, QueueConfig, QueueError, RequestState,
        StoreError, StoreKey, StoreRecord, Submission,
    };
    use tollgate::{Args, DenyCode, Guard, Outcome, RunContext, RunId, ToolCall, Verdict};

    use crate::tempdir;

    const ESC: &str = r#"{
        "groups": { "finance": ["alice", "bob"] },
        "defaults": { "timeout": "10m", "chain": [ { "group": "finance" } ] },
        "rules": [
            { "id": "large-payment", "tools": ["pay"],
              "when": { "amount": { "path": "amount", "over": 1000 } } }
        ]
    }"#;

    fn pay_boundary() -> ActionBoundary {
        ActionBoundary::builder()
            .tool(
                "pay",
                ToolSpec::irreversible()
                    .arg("amount", Arg::number().required().min(0.0))
                    .arg("currency", Arg::string().required())
                    .arg("otp", Arg::string().secret()),
            )
            .role("payments", RoleSpec::new().tools(["pay"]))
            .build()
            .unwrap()
    }

    fn esc_guard(sink: Arc<MemorySink>) -> Guard {
        let b = pay_boundary();
        let gate =
            EscalationGate::for_boundary(EscalationPolicy::from_json(ESC).unwrap(), &b).unwrap();
        let clock = Arc::new(ManualClock::new());
        let queue = ApprovalQueue::open(
            Arc::new(MemoryApprovalStore::new()),
            clock.clone(),
            QueueConfig::with_groups(gate.groups().clone()),
        )
        .unwrap();
        Guard::builder(b)
            .clock(clock)
            .audit(sink)
            .escalation(gate, queue)
            .build()
            .unwrap()
    }

    fn escalated(v: Verdict<'_>) -> Box<ApprovalRequest> {
        match v {
            Verdict::Escalate(r) => r,
            other => panic!("expected an escalation, got {other:?}"),
        }
    }

    /// Asserts `v` is a denial for an invalid approval whose reason names `field`.
    fn refused_for(v: Verdict<'_>, field: &str) {
        assert_eq!(v.deny_code(), Some(DenyCode::ApprovalInvalid), "{v:?}");
        let reason = v.denial().unwrap().reason();
        assert!(reason.contains(&format!("{field} differs")), "{reason}");
    }

    // ------------------------------------------------------------------------------------------
    // Finding 1

    /// The reviewer's attack: `pay-bot-alice`'s run `run-shared` has its payment approved and
    /// ends; `rogue-bot` starts a run with the same id (allowed: the id is no longer live) and
    /// resumes the approved payment. Refused now: the grant is bound to the agent that asked.
    /// The grant stays unused, and a run of the same agent with the same id and context (a
    /// restart) still consumes it once.
    #[test]
    fn approval_grant_is_not_consumed_by_another_agent_reusing_the_run_id() {
        let guard = esc_guard(Arc::new(MemorySink::new()));
        let id = RunId::new("run-shared");
        let args = json!({"amount": 5000, "currency": "EUR"});
        let call = ToolCall::new("pay", &args);

        let alice_run = guard
            .start_run_with_id(
                RunContext::new("pay-bot-alice", "payments"),
                Some(id.clone()),
            )
            .unwrap();
        let req = escalated(guard.check(&alice_run, &call));
        assert_eq!(req.agent.as_str(), "pay-bot-alice");
        guard
            .approvals()
            .unwrap()
            .decide(
                &req.id,
                &Approver::new("bob"),
                Decision::Approve,
                "ok for alice's bot",
            )
            .unwrap();
        alice_run.finish().unwrap();

        // A different agent, same id.
        let mallory_run = guard
            .start_run_with_id(RunContext::new("rogue-bot", "payments"), Some(id.clone()))
            .unwrap();
        refused_for(guard.resume(&mallory_run, &call, &req.ticket()), "agent");
        mallory_run.finish().unwrap();
        assert!(
            guard
                .approvals()
                .unwrap()
                .status(&req.id)
                .unwrap()
                .state
                .is_approved()
                && !matches!(
                    guard.approvals().unwrap().status(&req.id).unwrap().state,
                    RequestState::Consumed { .. }
                ),
            "the refused attempt left the grant unused"
        );

        // The agent that asked, resuming under the same id (e.g. after a restart): allowed, once.
        let again = guard
            .start_run_with_id(RunContext::new("pay-bot-alice", "payments"), Some(id))
            .unwrap();
        match guard.resume(&again, &call, &req.ticket()) {
            Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
            other => panic!("expected allow, got {other:?}"),
        }
        assert_eq!(
            guard.resume(&again, &call, &req.ticket()).deny_code(),
            Some(DenyCode::ApprovalInvalid)
        );
    }

    /// The same agent reusing the run id under another trigger (the approver starting the run
    /// to execute what they approved, which separation of duties forbids) or in another
    /// compartment (another patient's or matter's credentials) is refused too: the resumed call
    /// would run under a context nobody approved.
    #[test]
    fn approval_grant_is_not_consumed_under_another_trigger_or_compartment() {
        let guard = esc_guard(Arc::new(MemorySink::new()));
        let id = RunId::new("run-ctx");
        let args = json!({"amount": 5000, "currency": "EUR"});
        let call = ToolCall::new("pay", &args);
        let ctx = RunContext::new("pay-bot", "payments")
            .triggered_by("alice")
            .in_compartment("M-1");
        let run = guard
            .start_run_with_id(ctx.clone(), Some(id.clone()))
            .unwrap();
        let req = escalated(guard.check(&run, &call));
        assert_eq!(req.trigger.as_ref().map(|p| p.as_str()), Some("alice"));
        assert_eq!(req.compartment.as_ref().map(|c| c.as_str()), Some("M-1"));
        let q = guard.approvals().unwrap();
        // alice triggered the run, so she may not approve; bob does.
        assert!(matches!(
            q.decide(&req.id, &Approver::new("alice"), Decision::Approve, "mine"),
            Err(QueueError::SelfApproval { .. })
        ));
        q.decide(&req.id, &Approver::new("bob"), Decision::Approve, "ok")
            .unwrap();
        run.finish().unwrap();

        for (other, field) in [
            (
                RunContext::new("pay-bot", "payments")
                    .triggered_by("bob")
                    .in_compartment("M-1"),
                "trigger",
            ),
            (
                RunContext::new("pay-bot", "payments").in_compartment("M-1"),
                "trigger",
            ),
            (
                RunContext::new("pay-bot", "payments")
                    .triggered_by("alice")
                    .in_compartment("M-2"),
                "compartment",
            ),
            (
                RunContext::new("pay-bot", "payments").triggered_by("alice"),
                "compartment",
            ),
        ] {
            let r = guard.start_run_with_id(other, Some(id.clone())).unwrap();
            refused_for(guard.resume(&r, &call, &req.ticket()), field);
            r.finish().unwrap();
        }
        let r = guard.start_run_with_id(ctx, Some(id)).unwrap();
        match guard.resume(&r, &call, &req.ticket()) {
            Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
            other => panic!("expected allow, got {other:?}"),
        }
    }

    // ------------------------------------------------------------------------------------------
    // Finding 2

    /// A fresh directory for one test under the system temp dir, deleted when the value drops.
    fn temp_dir(name: &str) -> TempDir {
        tempdir::temp_dir("review-esc", name)
    }

    /// A store holding one request, approved and consumed (single use confirmed), and what it
    /// takes to open a queue on it again.
    struct Consumed {
        _dir: TempDir,
        path: PathBuf,
        head: PathBuf,
        key: StoreKey,
        gate: EscalationGate,
        clock: Arc<ManualClock>,
        req: ApprovalRequest,
        args: serde_json::Value,
    }

    fn open_queue(
        path: &std::path::Path,
        key: &StoreKey,
        gate: &EscalationGate,
        clock: &Arc<ManualClock>,
    ) -> Result<ApprovalQueue, StoreError> {
        let store = FileApprovalStore::open(path, key)?;
        Ok(ApprovalQueue::open(
            Arc::new(store),
            clock.clone(),
            QueueConfig::with_groups(gate.groups().clone()),
        )
        .unwrap())
    }

    impl Consumed {
        fn new(name: &str) -> Self {
            let dir = temp_dir(name);
            let path = dir.path().join("approvals.jsonl");
            let head = dir.path().join("approvals.jsonl.head");
            let key = StoreKey::new("k1", vec![0x42; 32]).unwrap();
            let gate =
                EscalationGate::compile(EscalationPolicy::from_json(ESC).unwrap(), &[]).unwrap();
            let clock = Arc::new(ManualClock::new());
            let args = json!({"amount": 5000, "currency": "EUR"});
            let q = open_queue(&path, &key, &gate, &clock).unwrap();
            let esc = gate
                .check(&GateInput::new("pay", Effect::Irreversible, &args))
                .unwrap();
            let req = q
                .submit(Submission::new(
                    "run-1",
                    "bot",
                    "pay",
                    args.clone(),
                    esc,
                    gate.version(),
                ))
                .unwrap();
            q.decide(&req.id, &Approver::new("alice"), Decision::Approve, "ok")
                .unwrap();
            let _grant = q.consume(&req.id, &args).expect("first use");
            assert!(
                matches!(
                    q.consume(&req.id, &args),
                    Err(QueueError::AlreadyUsed { .. })
                ),
                "single use"
            );
            Consumed {
                _dir: dir,
                path,
                head,
                key,
                gate,
                clock,
                req,
                args,
            }
        }

        fn open(&self) -> Result<ApprovalQueue, StoreError> {
            open_queue(&self.path, &self.key, &self.gate, &self.clock)
        }

        /// Removes the final line (the `consumed` record); returns its seq.
        fn drop_consumed_line(&self) -> usize {
            let text = std::fs::read_to_string(&self.path).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let last_seq = lines.len();
            assert!(lines.last().unwrap().contains("\"consumed\""));
            let shorter: String = lines[..last_seq - 1]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&self.path, shorter).unwrap();
            last_seq
        }
    }

    fn assert_head_damaged(c: &Consumed) {
        match c.open() {
            Err(StoreError::HeadDamaged { path, reason }) => {
                assert_eq!(path, c.head, "the error names the head file");
                assert!(reason.contains("no record after seq"), "{reason}");
            }
            Err(other) => panic!("expected HeadDamaged, got {other}"),
            Ok(q) => panic!(
                "the store opened; consuming again gives {:?}",
                q.consume(&c.req.id, &c.args)
            ),
        }
    }

    /// The reviewer's attack: with the queue closed, someone who can write the files (no key, no
    /// older copy) removes the final `consumed` line and zeroes the newest head slot (`seq % 2`,
    /// 256 bytes each). The older slot would vouch for the shorter file. Refused now: a damaged
    /// slot is a torn head write only if the file holds the record it was being written for.
    /// An explicit repair then voids the request instead of re-arming it.
    #[test]
    fn approval_store_tail_rolled_back_by_damaging_the_newest_head_slot_is_refused() {
        let c = Consumed::new("zeroed-slot");
        let last_seq = c.drop_consumed_line();
        let mut h = std::fs::read(&c.head).unwrap();
        let slot = 256 * (last_seq % 2);
        h[slot..slot + 256].fill(0);
        std::fs::write(&c.head, &h).unwrap();
        assert_head_damaged(&c);

        // Also when the newest slot is cut off the file rather than zeroed (submitted, decided,
        // consumed: seq 3 is in slot 1, the file's last 256 bytes).
        assert_eq!(last_seq, 3);
        std::fs::write(&c.head, &h[..256]).unwrap();
        assert_head_damaged(&c);

        // Nor does a fake torn append excuse the damaged slot: a final line without a newline
        // is no record (it is cut), so the file still holds nothing past the valid slot.
        std::fs::write(&c.head, &h).unwrap();
        let mut file = std::fs::read(&c.path).unwrap();
        file.extend_from_slice(b"{\"seq\":3,\"prev\":\"");
        std::fs::write(&c.path, &file).unwrap();
        assert_head_damaged(&c);
        file.truncate(file.len() - b"{\"seq\":3,\"prev\":\"".len());
        std::fs::write(&c.path, &file).unwrap();

        // The operator's way out declares the damage and never re-arms the grant.
        let report =
            FileApprovalStore::repair(&c.path, &c.key, &*c.clock, "head slot destroyed").unwrap();
        assert!(report.removal.is_some());
        let q = c.open().unwrap();
        assert!(matches!(
            q.status(&c.req.id).unwrap().state,
            RequestState::Voided { .. }
        ));
        assert!(matches!(
            q.consume(&c.req.id, &c.args),
            Err(QueueError::NotApproved { .. })
        ));
    }

    /// A variant of the attack that needs no damaged slot: copy the older slot (still the
    /// previous head) over the newest one, so that both vouch for the shorter file. Refused:
    /// a slot's MAC covers its position, so the copy does not authenticate where it was put,
    /// and the head is damaged as above.
    #[test]
    fn approval_store_older_head_slot_copied_over_the_newest_is_refused() {
        let c = Consumed::new("copied-slot");
        let last_seq = c.drop_consumed_line();
        let mut h = std::fs::read(&c.head).unwrap();
        let (newest, older) = (256 * (last_seq % 2), 256 * ((last_seq + 1) % 2));
        let copy = h[older..older + 256].to_vec();
        h[newest..newest + 256].copy_from_slice(&copy);
        std::fs::write(&c.head, &h).unwrap();
        assert_head_damaged(&c);
    }

    // ------------------------------------------------------------------------------------------
    // Finding 4

    /// SHA-256 of the canonical form of `args`: the reviewer's oracle, what a plain binding hash
    /// would be.
    fn plain_sha256(args: &serde_json::Value) -> [u8; 32] {
        Sha256::digest(canonical::to_string(Args::Value(args)).unwrap().as_bytes()).into()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The reviewer's attack: an escalated call's audit record carried
    /// `tollgate.approval.args_hash`, a plain SHA-256 over all arguments, secret ones included,
    /// next to the other arguments in clear; trying the million 6-digit codes recovered the
    /// OTP. Now the audit trail carries no argument hash at all, and the hash that requests,
    /// tickets and the store carry is keyed: the attacker's search over the candidates (here a
    /// window that holds the right code; a full search adds only wrong ones) matches nothing,
    /// not even the right code, and the same arguments hash differently under another queue's
    /// key. The keyed hash still binds the exact arguments.
    #[test]
    fn secret_argument_is_not_recovered_from_the_approval_hash() {
        let sink = Arc::new(MemorySink::new());
        let guard = esc_guard(sink.clone());
        let run = guard.start_run(RunContext::new("bot", "payments")).unwrap();
        let args = json!({"amount": 5000, "currency": "EUR", "otp": "482913"});
        let req = escalated(guard.check(&run, &ToolCall::new("pay", &args)));
        assert_eq!(req.args["otp"], tollgate::audit::SECRET_PLACEHOLDER);

        // What an auditor (or anyone reading the log) sees.
        let events = sink.events();
        let d = events
            .iter()
            .find(|e| e["tollgate.decision"] == "escalate")
            .unwrap();
        assert_eq!(
            d["gen_ai.tool.call.arguments"]["otp"],
            tollgate::audit::SECRET_PLACEHOLDER
        );
        let log = serde_json::to_string(&events).unwrap();
        assert!(!log.contains("args_hash"), "{log}");
        assert!(!log.contains(&req.args_hash.to_string()));
        assert!(!log.contains("482913"));

        // What approvers, ticket holders and the store see: a keyed hash. The attacker's search.
        let published = *req.args_hash.as_bytes();
        assert_eq!(published, *req.ticket().args_hash.as_bytes());
        let mut found = None;
        for n in 482_000..484_000u32 {
            let mut guess = args.clone();
            guess["otp"] = json!(format!("{n:06}"));
            if plain_sha256(&guess) == published {
                found = Some(n);
            }
        }
        assert_eq!(found, None, "a secret was recovered from the approval hash");
        assert!(!log.contains(&hex(&plain_sha256(&args))));

        // Keyed: another queue's key gives another hash for the very same arguments.
        let other = ApprovalQueue::open(
            Arc::new(MemoryApprovalStore::new()),
            Arc::new(ManualClock::new()),
            QueueConfig::default(),
        )
        .unwrap();
        let q = guard.approvals().unwrap();
        assert_eq!(q.args_hash(&args).unwrap(), req.args_hash);
        assert_ne!(other.args_hash(&args).unwrap(), req.args_hash);

        // Still bound to the exact arguments, secret included, and single use.
        q.decide(&req.id, &Approver::new("alice"), Decision::Approve, "ok")
            .unwrap();
        let wrong = json!({"amount": 5000, "currency": "EUR", "otp": "000000"});
        assert_eq!(
            guard
                .resume(&run, &ToolCall::new("pay", &wrong), &req.ticket())
                .deny_code(),
            Some(DenyCode::ApprovalInvalid)
        );
        let respelled = r#"{"otp": "482913", "currency": "EUR", "amount": 5e3}"#;
        match guard.resume(&run, &ToolCall::new("pay", respelled), &req.ticket()) {
            Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
            other => panic!("expected allow, got {other:?}"),
        }
        // The stored request holds the same keyed hash, never the plain one.
        let log = serde_json::to_string(&sink.events()).unwrap();
        assert!(!log.contains(&hex(&plain_sha256(&args))));
    }

    /// The file store's argument key is derived from its store key: a restarted process binds
    /// the same arguments to the same hash (tickets survive), and its records carry the keyed
    /// hash, not the plain one.
    #[test]
    fn file_store_records_carry_the_keyed_hash_and_it_survives_a_restart() {
        let c = Consumed::new("keyed-file");
        let text = std::fs::read_to_string(&c.path).unwrap();
        assert!(text.contains(&c.req.args_hash.to_string()));
        assert!(!text.contains(&hex(&plain_sha256(&c.args))));
        let q = c.open().unwrap();
        assert_eq!(q.args_hash(&c.args).unwrap(), c.req.args_hash);
        let records: Vec<StoreRecord> = text
            .lines()
            .map(|l| {
                serde_json::from_value(
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["record"].clone(),
                )
                .unwrap()
            })
            .collect();
        assert!(
            matches!(&records[0], StoreRecord::Submitted { request } if request.args_hash == c.req.args_hash)
        );
    }
}
