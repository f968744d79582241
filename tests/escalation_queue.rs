//! The approval queue's request state machine, driven by a `ManualClock`: deadlines and timeouts,
//! chains, quorum and vetoes, single-use grants bound to their arguments, separation of duties,
//! the queue's settings, and a property test of the state machine against a reference model.
//! Persistence and fail-closed recording are in `escalation_queue_store.rs`, threads and async
//! waiting in `escalation_queue_concurrency.rs`.

#[path = "common/approval_queue.rs"]
mod approval_queue;

// Inside a module named after the file, so `cargo test escalation` selects these tests.
mod escalation_queue {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;
    use serde_json::json;
    use tollgate::boundary::Effect;
    use tollgate::clock::{Clock, ManualClock};
    use tollgate::escalation::{
        ApprovalId, ApprovalQueue, Approver, Condition, Decision, EscalationGate, EscalationPolicy,
        GateInput, LevelSpec, MemoryApprovalStore, NotificationKind, OnTimeout, QueueConfig,
        QueueError, QueueEvent, RequestState, Resolution, RuleSpec, StoreRecord, Submission,
    };
    use tollgate::{Args, RunContext, RunId};

    use crate::approval_queue::{
        HOUR, approve, big, fixture, fixture_with, state, submission, who,
    };

    fn wall_ns(clock: &ManualClock) -> u64 {
        clock.wall().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
    }

    /// Advances `clock` until its wall time is `target_ns` (unix nanoseconds).
    fn advance_to(clock: &ManualClock, target_ns: u64) {
        let now = wall_ns(clock);
        assert!(target_ns >= now);
        clock.advance(Duration::from_nanos(target_ns - now));
    }

    #[test]
    fn timeout_denies_at_the_deadline_and_not_a_nanosecond_before() {
        let f = fixture();
        // Start off a millisecond boundary, so rounding is exercised.
        f.clock.advance(Duration::from_nanos(300));
        let created_ns = wall_ns(&f.clock);
        let req = big(&f);
        let deadline_ns = req.deadline_ms * 1_000_000;
        assert!(deadline_ns >= created_ns + HOUR.as_nanos() as u64);
        assert!(deadline_ns < created_ns + HOUR.as_nanos() as u64 + 1_000_000);

        advance_to(&f.clock, deadline_ns - 1);
        assert_eq!(
            f.queue.tick().unwrap().len(),
            1,
            "only the chain move to cfo"
        );
        assert!(state(&f.queue, &req.id).is_pending());
        // A decision one nanosecond before the deadline still counts.
        assert!(approve(&f.queue, &req.id, "alice").unwrap().is_pending());

        f.clock.advance(Duration::from_nanos(1));
        let events = f.queue.tick().unwrap();
        assert_eq!(
            events,
            [QueueEvent::TimedOut {
                id: req.id.clone(),
                resolution: Resolution::Denied {
                    by: None,
                    reason: None
                }
            }]
        );
        assert_eq!(
            state(&f.queue, &req.id),
            RequestState::Denied {
                at_ms: req.deadline_ms,
                by: None
            }
        );
        assert!(matches!(
            approve(&f.queue, &req.id, "bob"),
            Err(QueueError::Expired { .. })
        ));
        assert!(matches!(
            f.queue.consume(&req.id, &req.args),
            Err(QueueError::Expired { .. })
        ));
        assert!(f.queue.tick().unwrap().is_empty());
    }

    #[test]
    fn a_late_decision_is_refused_even_if_nobody_ticked() {
        let f = fixture();
        let req = big(&f);
        f.clock.advance(HOUR);
        assert!(matches!(
            approve(&f.queue, &req.id, "alice"),
            Err(QueueError::Expired { deadline_ms, .. }) if deadline_ms == req.deadline_ms
        ));
        assert!(state(&f.queue, &req.id).is_timed_out());
        let records = f.store.records();
        assert!(matches!(
            records.last(),
            Some(StoreRecord::TimedOut {
                approved: false,
                ..
            })
        ));
        assert!(
            !records
                .iter()
                .any(|r| matches!(r, StoreRecord::Decided { .. })),
            "the late decision was not recorded"
        );
    }

    #[test]
    fn timeout_approves_when_every_matched_rule_says_so() {
        let f = fixture();
        let req = f
            .queue
            .submit(submission(&f.gate, json!({"amount": 5}), &["ambiguous"]))
            .unwrap();
        assert_eq!(req.on_timeout, OnTimeout::Approve);
        assert_eq!(req.quorum, 1);
        f.clock
            .advance(Duration::from_secs(600) - Duration::from_nanos(1));
        assert!(matches!(
            f.queue.consume(&req.id, &req.args),
            Err(QueueError::NotApproved { .. })
        ));
        f.clock.advance(Duration::from_nanos(1));
        let grant = f.queue.consume(&req.id, &req.args).unwrap();
        assert!(grant.approvers.is_empty());
        assert!(matches!(
            f.queue.consume(&req.id, &req.args),
            Err(QueueError::AlreadyUsed { .. })
        ));
        // Also matched by the deny-on-timeout payment rule: deny wins.
        let both = f
            .queue
            .submit(submission(&f.gate, json!({"amount": 5000}), &["ambiguous"]))
            .unwrap();
        assert_eq!(both.on_timeout, OnTimeout::Deny);
        assert_eq!(both.reasons.len(), 2);
        assert_eq!(both.deadline_ms - both.created_ms, 3_600_000);
    }

    #[test]
    fn chains_escalate_on_schedule_and_not_before() {
        let (notifier, rx) = tollgate::escalation::ChannelNotifier::new();
        let mut f = fixture();
        f.queue = ApprovalQueue::open(
            Arc::new(MemoryApprovalStore::new()),
            f.clock.clone(),
            QueueConfig::with_groups(f.gate.groups().clone()),
        )
        .unwrap()
        .with_notifier(Arc::new(notifier));
        let req = big(&f);
        assert_eq!(req.level, 0);
        assert_eq!(req.current_group(), Some("finance"));
        let n = rx.try_recv().unwrap();
        assert_eq!(
            n.kind,
            NotificationKind::Requested {
                group: "finance".into()
            }
        );

        f.clock
            .advance(Duration::from_secs(1800) - Duration::from_nanos(1));
        assert!(f.queue.tick().unwrap().is_empty());
        assert!(matches!(
            approve(&f.queue, &req.id, "carol"),
            Err(QueueError::NotEligible { level: 0, ref groups, .. }) if groups == "finance"
        ));
        assert!(rx.try_recv().is_err());

        f.clock.advance(Duration::from_nanos(1));
        let events = f.queue.tick().unwrap();
        assert_eq!(
            events,
            [QueueEvent::Escalated {
                id: req.id.clone(),
                level: 1,
                group: "cfo".into()
            }]
        );
        let n = rx.try_recv().unwrap();
        assert_eq!(
            n.kind,
            NotificationKind::Escalated {
                level: 1,
                group: "cfo".into()
            }
        );
        assert_eq!(n.request.level, 1);
        assert_eq!(f.queue.status(&req.id).unwrap().request.level, 1);
        // The cfo may now decide, and the first level keeps its say.
        assert!(approve(&f.queue, &req.id, "carol").unwrap().is_pending());
        assert!(approve(&f.queue, &req.id, "alice").unwrap().is_approved());
        let kinds: Vec<NotificationKind> = rx.try_iter().map(|n| n.kind).collect();
        assert!(matches!(
            kinds.as_slice(),
            [
                NotificationKind::Decided { approvals: 1, .. },
                NotificationKind::Resolved(Resolution::Approved { by, by_timeout: false })
            ] if by.len() == 2
        ));
    }

    #[test]
    fn a_decision_applies_a_due_chain_move_first() {
        let f = fixture();
        let req = big(&f);
        f.clock.advance(Duration::from_secs(1800));
        // Nobody ticked; carol's decision is still accepted at the scheduled time.
        assert!(approve(&f.queue, &req.id, "carol").unwrap().is_pending());
        let status = f.queue.status(&req.id).unwrap();
        assert_eq!(status.votes[0].level, 1);
        assert!(
            f.store
                .records()
                .iter()
                .any(|r| matches!(r, StoreRecord::Escalated { level: 1, .. }))
        );
    }

    #[test]
    fn quorum_needs_k_distinct_approvers() {
        let f = fixture();
        let req = big(&f);
        assert_eq!(req.quorum, 2);
        let first = f
            .queue
            .decide(&req.id, &who("alice"), Decision::Approve, "ok")
            .unwrap();
        assert_eq!((first.approvals, first.quorum), (1, 2));
        assert!(first.state.is_pending());
        for _ in 0..3 {
            assert!(matches!(
                approve(&f.queue, &req.id, "alice"),
                Err(QueueError::AlreadyApproved { .. })
            ));
        }
        let status = f.queue.status(&req.id).unwrap();
        assert_eq!(status.approvals, 1);
        assert_eq!(status.votes.len(), 1);
        assert!(status.state.is_pending());
        let second = f
            .queue
            .decide(&req.id, &who("bob").via("slack"), Decision::Approve, "fine")
            .unwrap();
        assert!(second.state.is_approved());
        assert_eq!(second.approvals, 2);
        let status = f.queue.status(&req.id).unwrap();
        assert_eq!(status.votes[1].approver.channel.as_deref(), Some("slack"));
        assert_eq!(status.votes[1].reason, "fine");
        assert!(matches!(
            approve(&f.queue, &req.id, "erin"),
            Err(QueueError::NotPending { .. })
        ));
    }

    #[test]
    fn any_deny_vetoes() {
        let f = fixture();
        let req = big(&f);
        approve(&f.queue, &req.id, "alice").unwrap();
        let out = f
            .queue
            .decide(&req.id, &who("bob"), Decision::Deny, "wrong vendor")
            .unwrap();
        assert_eq!(
            out.state,
            RequestState::Denied {
                at_ms: req.created_ms,
                by: Some("bob".into())
            }
        );
        assert!(matches!(
            f.queue.consume(&req.id, &req.args),
            Err(QueueError::NotApproved { .. })
        ));
    }

    #[test]
    fn a_grant_authorises_only_the_approved_arguments_and_only_once() {
        let f = fixture();
        let req = big(&f);
        assert!(matches!(
            f.queue.consume(&req.id, &req.args),
            Err(QueueError::NotApproved { .. })
        ));
        approve(&f.queue, &req.id, "alice").unwrap();
        approve(&f.queue, &req.id, "bob").unwrap();

        let changed = r#"{"amount": 50000, "to": "ACME"}"#;
        let changed_hash = f.queue.args_hash(changed).unwrap();
        assert!(matches!(
            f.queue.consume(&req.id, changed),
            Err(QueueError::ArgsMismatch { expected, actual, .. })
                if expected == req.args_hash && actual == changed_hash
        ));
        // Still unused after the mismatch; a ticket for another tool, run id, agent, trigger or
        // compartment is refused too.
        let ticket = req.ticket();
        let args = r#"{ "to": "ACME", "amount": 5000 }"#; // same arguments, other key order
        let run = RunId::new("run-1");
        let ctx = RunContext::new("billing-bot", "payments").triggered_by("dave");
        assert!(matches!(
            f.queue
                .consume_ticket(&ticket, &run, &ctx, "refund", Args::Json(args)),
            Err(QueueError::TicketMismatch { field: "tool", .. })
        ));
        assert!(matches!(
            f.queue
                .consume_ticket(&ticket, &RunId::new("run-2"), &ctx, "pay", Args::Json(args)),
            Err(QueueError::TicketMismatch { field: "run", .. })
        ));
        for (other, field) in [
            (
                RunContext::new("rogue-bot", "payments").triggered_by("dave"),
                "agent",
            ),
            (
                RunContext::new("billing-bot", "payments").triggered_by("alice"),
                "trigger",
            ),
            (RunContext::new("billing-bot", "payments"), "trigger"),
            (
                RunContext::new("billing-bot", "payments")
                    .triggered_by("dave")
                    .in_compartment("M-2"),
                "compartment",
            ),
        ] {
            let got = f
                .queue
                .consume_ticket(&ticket, &run, &other, "pay", Args::Json(args));
            assert!(
                matches!(got, Err(QueueError::TicketMismatch { field: f, .. }) if f == field),
                "{field}: {got:?}"
            );
        }
        assert!(matches!(
            f.queue.consume_ticket(
                &ticket,
                &run,
                &ctx,
                "pay",
                Args::Json(r#"{"amount": 5000}"#)
            ),
            Err(QueueError::ArgsMismatch { .. })
        ));
        assert!(matches!(
            f.queue.consume_ticket(
                &ticket,
                &run,
                &ctx,
                "pay",
                Args::Json(r#"{"amount": 5000, "amount": 1}"#)
            ),
            Err(QueueError::MalformedArgs { .. })
        ));
        let grant = f
            .queue
            .consume_ticket(&ticket, &run, &ctx, "pay", Args::Json(args))
            .unwrap();
        assert_eq!(grant.approvers, ["alice".into(), "bob".into()]);
        assert_eq!(grant.args_hash, req.args_hash);
        assert!(matches!(
            f.queue.consume(&req.id, &req.args),
            Err(QueueError::AlreadyUsed { .. })
        ));
        assert!(matches!(
            f.queue
                .consume_ticket(&ticket, &run, &ctx, "pay", Args::Json(args)),
            Err(QueueError::AlreadyUsed { .. })
        ));
        assert!(matches!(
            f.queue.status(&req.id).unwrap().state,
            RequestState::Consumed { .. }
        ));
        assert!(matches!(
            f.queue.consume(&ApprovalId::new("nope"), &req.args),
            Err(QueueError::NotFound { .. })
        ));
    }

    #[test]
    fn a_grant_expires_after_its_lifetime() {
        let f = fixture_with(QueueConfig {
            grant_ttl: Duration::from_secs(60),
            ..QueueConfig::default()
        });
        let req = big(&f);
        approve(&f.queue, &req.id, "alice").unwrap();
        approve(&f.queue, &req.id, "bob").unwrap();
        f.clock.advance(Duration::from_secs(60));
        assert!(matches!(
            f.queue.consume(&req.id, &req.args),
            Err(QueueError::GrantExpired { .. })
        ));
    }

    #[test]
    fn separation_of_duties_refuses_the_trigger_and_the_agent() {
        let f = fixture();
        let req = big(&f);
        // dave triggered the run and is in finance.
        assert!(matches!(
            approve(&f.queue, &req.id, "dave"),
            Err(QueueError::SelfApproval { .. })
        ));
        assert!(matches!(
            f.queue.decide(&req.id, &who("dave"), Decision::Deny, "no"),
            Err(QueueError::SelfApproval { .. })
        ));
        assert!(matches!(
            approve(&f.queue, &req.id, "billing-bot"),
            Err(QueueError::SelfApproval { .. })
        ));
        assert!(matches!(
            approve(&f.queue, &req.id, "mallory"),
            Err(QueueError::NotEligible { .. })
        ));
        assert_eq!(f.queue.status(&req.id).unwrap().votes.len(), 0);

        let lax = fixture_with(QueueConfig {
            separation_of_duties: false,
            ..QueueConfig::default()
        });
        let req = big(&lax);
        assert!(approve(&lax.queue, &req.id, "dave").unwrap().is_pending());
    }

    #[test]
    fn removing_an_approver_from_a_group_revokes_their_say_at_once() {
        let f = fixture();
        let req = big(&f);
        approve(&f.queue, &req.id, "alice").unwrap();
        f.queue
            .set_groups(
                f.gate
                    .groups()
                    .clone()
                    .with("finance", ["alice", "erin", "dave"]),
            )
            .unwrap();
        assert!(matches!(
            approve(&f.queue, &req.id, "bob"),
            Err(QueueError::NotEligible { .. })
        ));
        assert!(approve(&f.queue, &req.id, "erin").unwrap().is_approved());
    }

    #[test]
    fn submissions_nobody_could_approve_are_refused() {
        let f = fixture();
        let sub = Submission::new(
            "r",
            "a",
            "pay",
            json!({}),
            tollgate::escalation::Escalation::manual(
                tollgate::escalation::Reason::new("manual", "check"),
                tollgate::escalation::ApprovalParams::new(
                    HOUR,
                    [tollgate::escalation::Level::new("nobody", Duration::ZERO)],
                ),
            ),
            f.gate.version(),
        )
        .trigger(Some("x".into()));
        assert!(matches!(
            f.queue.submit(sub),
            Err(QueueError::InvalidSubmission { ref field, .. }) if field == "chain[0].group"
        ));
        let sub = Submission::new(
            "r",
            "a",
            "pay",
            json!({}),
            tollgate::escalation::Escalation::manual(
                tollgate::escalation::Reason::new("manual", "check"),
                tollgate::escalation::ApprovalParams::new(
                    HOUR,
                    [tollgate::escalation::Level::new("cfo", Duration::ZERO)],
                )
                .quorum(2),
            ),
            f.gate.version(),
        );
        assert!(matches!(
            f.queue.submit(sub),
            Err(QueueError::InvalidSubmission { ref field, .. }) if field == "quorum"
        ));
        assert!(f.store.is_empty());

        let full = fixture_with(QueueConfig {
            max_pending: 1,
            ..QueueConfig::default()
        });
        big(&full);
        assert!(matches!(
            full.queue
                .submit(submission(&full.gate, json!({"amount": 5000}), &[])),
            Err(QueueError::Full { limit: 1 })
        ));
    }

    /// The queue's settings come from the same document as the rules (`[escalation.approvals]`),
    /// so what reviewers sign is what the queue enforces.
    #[test]
    fn queue_settings_come_from_the_escalation_document() {
        let doc = EscalationPolicy::from_toml(
            r#"
            groups.finance = ["alice", "bob", "dave"]
            defaults = { timeout = "1h", chain = [{ group = "finance" }] }
            approvals = { grant_ttl = "90s", max_pending = 1, separation_of_duties = false }

            [[rules]]
            id = "large-payment"
            tools = ["pay"]
            when.amount = { path = "amount", over = "1000.00" }
            "#,
        )
        .unwrap();
        let gate = EscalationGate::compile(doc, &[]).unwrap();
        let config = QueueConfig::for_gate(&gate);
        assert_eq!(config.grant_ttl, Duration::from_secs(90));
        assert_eq!(config.max_pending, 1);
        assert!(!config.separation_of_duties);
        assert_eq!(&config.groups, gate.groups());
        let clock = Arc::new(ManualClock::new());
        let queue =
            ApprovalQueue::open(Arc::new(MemoryApprovalStore::new()), clock.clone(), config)
                .unwrap();
        let req = queue
            .submit(submission(&gate, json!({"amount": 5000}), &[]))
            .unwrap();
        // max_pending = 1.
        assert!(matches!(
            queue.submit(submission(&gate, json!({"amount": 6000}), &[])),
            Err(QueueError::Full { limit: 1 })
        ));
        // No separation of duties: the trigger may approve.
        assert!(approve(&queue, &req.id, "dave").unwrap().is_approved());
        // The grant lives 90 s.
        clock.advance(Duration::from_secs(90));
        assert!(matches!(
            queue.consume(&req.id, &req.args),
            Err(QueueError::GrantExpired { .. })
        ));
    }

    #[test]
    fn grant_lifetimes_below_a_second_or_over_a_year_are_refused() {
        for ttl in [
            Duration::ZERO,
            Duration::from_millis(999),
            Duration::from_secs(367 * 86_400),
        ] {
            let e = ApprovalQueue::open(
                Arc::new(MemoryApprovalStore::new()),
                Arc::new(ManualClock::new()),
                QueueConfig {
                    grant_ttl: ttl,
                    ..QueueConfig::default()
                },
            )
            .unwrap_err();
            assert!(
                matches!(&e, QueueError::InvalidSubmission { field, .. } if field == "grant_ttl"),
                "{ttl:?}: {e}"
            );
        }
    }

    // ---------------------------------------------------------------------------------------------
    // State machine property test

    #[derive(Debug, Clone)]
    enum Op {
        Decide(usize, bool),
        Advance(u64),
        Tick,
        Consume(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..6, proptest::bool::weighted(0.8)).prop_map(|(a, y)| Op::Decide(a, y)),
            2 => (0u64..250).prop_map(Op::Advance),
            1 => Just(Op::Tick),
            2 => proptest::bool::weighted(0.8).prop_map(Op::Consume),
        ]
    }

    /// Approver names: finance members a, b, c; the cfo d; the trigger t (in finance); outsider x.
    const NAMES: [&str; 6] = ["a", "b", "c", "d", "t", "x"];

    #[derive(Debug, Clone, PartialEq)]
    enum M {
        Pending,
        Approved(u64),
        Denied,
        TimedOut,
        Consumed,
    }

    struct Model {
        now: u64,
        state: M,
        level: usize,
        approvers: Vec<usize>,
    }

    impl Model {
        const TIMEOUT: u64 = 300;
        const CFO_AT: u64 = 100;
        const TTL: u64 = 1000;

        /// Due transitions: the timeout first (a request past its deadline does not move on).
        fn settle(&mut self) {
            if self.state == M::Pending {
                if self.now >= Self::TIMEOUT {
                    self.state = M::TimedOut;
                } else if self.now >= Self::CFO_AT {
                    self.level = 1;
                }
            }
        }

        fn decide(&mut self, who: usize, approve: bool) -> Result<(), &'static str> {
            self.settle();
            match self.state {
                M::Pending => {}
                M::TimedOut => return Err("expired"),
                _ => return Err("not_pending"),
            }
            if who == 4 {
                return Err("self");
            }
            let eligible = matches!(who, 0..=2) || (who == 3 && self.level == 1);
            if !eligible {
                return Err("not_eligible");
            }
            if approve {
                if self.approvers.contains(&who) {
                    return Err("already_approved");
                }
                self.approvers.push(who);
                if self.approvers.len() >= 2 {
                    self.state = M::Approved(self.now);
                }
            } else {
                self.state = M::Denied;
            }
            Ok(())
        }

        fn consume(&mut self, right_args: bool) -> Result<(), &'static str> {
            self.settle();
            let at = match self.state {
                M::Approved(at) => at,
                M::Consumed => return Err("already_used"),
                M::TimedOut => return Err("expired"),
                _ => return Err("not_approved"),
            };
            if !right_args {
                return Err("mismatch");
            }
            if self.now >= at + Self::TTL {
                return Err("grant_expired");
            }
            self.state = M::Consumed;
            Ok(())
        }
    }

    fn kind(r: Result<(), QueueError>) -> Result<(), &'static str> {
        r.map_err(|e| match e {
            QueueError::Expired { .. } => "expired",
            QueueError::NotPending { .. } => "not_pending",
            QueueError::SelfApproval { .. } => "self",
            QueueError::NotEligible { .. } => "not_eligible",
            QueueError::AlreadyApproved { .. } => "already_approved",
            QueueError::AlreadyUsed { .. } => "already_used",
            QueueError::NotApproved { .. } => "not_approved",
            QueueError::ArgsMismatch { .. } => "mismatch",
            QueueError::GrantExpired { .. } => "grant_expired",
            e => panic!("unexpected error {e}"),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn the_request_state_machine_follows_the_model(ops in proptest::collection::vec(op(), 1..40)) {
            let policy = EscalationPolicy::new()
                .group("finance", ["a", "b", "c", "t"])
                .group("cfo", ["d"])
                .rule(RuleSpec::new("r", Condition::flag("f"))
                    .timeout(Duration::from_secs(Model::TIMEOUT))
                    .quorum(2)
                    .chain([LevelSpec::new("finance"), LevelSpec::after("cfo", Duration::from_secs(Model::CFO_AT))]));
            let gate = EscalationGate::compile(policy, &[]).unwrap();
            let clock = Arc::new(ManualClock::new());
            let queue = ApprovalQueue::open(
                Arc::new(MemoryApprovalStore::new()),
                clock.clone(),
                QueueConfig { grant_ttl: Duration::from_secs(Model::TTL), ..QueueConfig::for_gate(&gate) },
            ).unwrap();
            let flags = ["f"];
            let esc = gate.check(&GateInput::new("pay", Effect::Write, "{}").flags(&flags)).unwrap();
            let req = queue.submit(
                Submission::new("run", "agent", "pay", json!({"n": 1}), esc, gate.version()).triggered_by("t"),
            ).unwrap();
            let (right_args, wrong) = (json!({"n": 1}), json!({"n": 2}));
            let mut model = Model { now: 0, state: M::Pending, level: 0, approvers: Vec::new() };
            for op in ops {
                match op {
                    Op::Decide(who, yes) => {
                        let d = if yes { Decision::Approve } else { Decision::Deny };
                        let got = kind(queue.decide(&req.id, &Approver::new(NAMES[who]), d, "r").map(|_| ()));
                        prop_assert_eq!(got, model.decide(who, yes), "decide {} {}", NAMES[who], yes);
                    }
                    Op::Advance(s) => {
                        clock.advance(Duration::from_secs(s));
                        model.now += s;
                    }
                    Op::Tick => {
                        queue.tick().unwrap();
                        model.settle();
                    }
                    Op::Consume(right) => {
                        let a = if right { &right_args } else { &wrong };
                        let got = kind(queue.consume(&req.id, a).map(|_| ()));
                        prop_assert_eq!(got, model.consume(right));
                    }
                }
                let s = queue.status(&req.id).unwrap();
                model.settle();
                prop_assert_eq!(s.request.level, model.level);
                let ok = match (&model.state, &s.state) {
                    (M::Pending, RequestState::Pending) => true,
                    (M::Approved(at), RequestState::Approved { at_ms, by_timeout: false }) => {
                        *at_ms == req.created_ms + at * 1000
                    }
                    (M::Denied, RequestState::Denied { by: Some(_), .. }) => true,
                    (M::TimedOut, RequestState::Denied { by: None, at_ms }) => *at_ms == req.deadline_ms,
                    (M::Consumed, RequestState::Consumed { .. }) => true,
                    _ => false,
                };
                prop_assert!(ok, "model {:?} vs queue {:?}", model.state, s.state);
                prop_assert_eq!(s.approvals as usize, model.approvers.len());
            }
        }
    }
}
