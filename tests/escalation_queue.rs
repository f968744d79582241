//! The approval queue, driven by a `ManualClock`: deadlines, chains, quorum, separation of duties,
//! single-use grants bound to their arguments, observer and store failures (fail closed),
//! restart from a file store, torn-tail recovery, a concurrency stress test, async waiting and
//! cancellation, and a property test of the request state machine against a reference model.

#[path = "common/tempdir.rs"]
mod tempdir;

// Inside a module named after the file, so `cargo test escalation` selects these tests.
mod escalation_queue {

    use std::collections::HashMap;
    use std::future::Future;
    use std::path::{Path, PathBuf};
    use std::pin::pin;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier, Mutex, mpsc};
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tempfile::TempDir;
    use tollgate::audit::AuditError;
    use tollgate::boundary::Effect;
    use tollgate::clock::{Clock, ManualClock};
    use tollgate::escalation::{
        ApprovalId, ApprovalQueue, ApprovalRequest, ApprovalStore, Approver, Condition, Decision,
        EscalationGate, EscalationPolicy, FileApprovalStore, GateInput, LevelSpec,
        MemoryApprovalStore, NotificationKind, OnTimeout, QueueConfig, QueueError, QueueEvent,
        QueueObserver, RequestState, Resolution, RuleParams, RuleSpec, StoreError, StoreKey,
        StoreRecord, Submission, Transition, TransitionKind,
    };
    use tollgate::{Args, RunContext, RunId};

    use crate::tempdir;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy() -> EscalationPolicy {
        EscalationPolicy::new()
            .group("finance", ["alice", "bob", "erin", "dave"])
            .group("cfo", ["carol"])
            .defaults(RuleParams::new().timeout(Duration::from_secs(3600)).chain([
                LevelSpec::new("finance"),
                LevelSpec::after("cfo", Duration::from_secs(1800)),
            ]))
            .rule(
                RuleSpec::new("large-payment", Condition::amount_over("amount", 1000))
                    .tools(["pay"])
                    .quorum(2),
            )
            .rule(
                RuleSpec::new("ambiguous", Condition::flag("ambiguous"))
                    .timeout(Duration::from_secs(600))
                    .on_timeout(OnTimeout::Approve),
            )
    }

    fn gate() -> EscalationGate {
        EscalationGate::compile(policy(), &[]).unwrap()
    }

    struct Fixture {
        clock: Arc<ManualClock>,
        store: Arc<MemoryApprovalStore>,
        queue: ApprovalQueue,
        gate: EscalationGate,
    }

    fn fixture() -> Fixture {
        fixture_with(QueueConfig::default())
    }

    fn fixture_with(mut config: QueueConfig) -> Fixture {
        let gate = gate();
        config.groups = gate.groups().clone();
        let clock = Arc::new(ManualClock::new());
        let store = Arc::new(MemoryApprovalStore::new());
        let queue = ApprovalQueue::open(store.clone(), clock.clone(), config).unwrap();
        Fixture {
            clock,
            store,
            queue,
            gate,
        }
    }

    fn submission(gate: &EscalationGate, args: Value, flags: &[&str]) -> Submission {
        let esc = gate
            .check(&GateInput::new("pay", Effect::Irreversible, &args).flags(flags))
            .expect("the call escalates");
        Submission::new("run-1", "billing-bot", "pay", args, esc, gate.version())
            .triggered_by("dave")
    }

    fn big(f: &Fixture) -> ApprovalRequest {
        f.queue
            .submit(submission(
                &f.gate,
                json!({"amount": 5000, "to": "ACME"}),
                &[],
            ))
            .unwrap()
    }

    fn who(id: &str) -> Approver {
        Approver::new(id)
    }

    fn approve(q: &ApprovalQueue, id: &ApprovalId, by: &str) -> Result<RequestState, QueueError> {
        q.decide(id, &who(by), Decision::Approve, "looks right")
            .map(|o| o.state)
    }

    fn state(q: &ApprovalQueue, id: &ApprovalId) -> RequestState {
        q.status(id).unwrap().state
    }

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

    #[test]
    fn stress_no_lost_or_duplicated_decisions_and_one_consume_per_grant() {
        const SUBMITTERS: usize = 6;
        const PER: usize = 30;
        const CONSUMERS: usize = 4;
        let clock = Arc::new(ManualClock::new());
        let store = Arc::new(MemoryApprovalStore::new());
        let gate = Arc::new(gate());
        let queue = Arc::new(
            ApprovalQueue::open(
                store.clone(),
                clock.clone(),
                QueueConfig::with_groups(gate.groups().clone()),
            )
            .unwrap(),
        );
        let approvers = ["alice", "bob", "erin"];
        let (txs, rxs): (Vec<_>, Vec<_>) = approvers
            .iter()
            .map(|_| mpsc::channel::<ApprovalRequest>())
            .unzip();
        let decided_ok = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for (name, rx) in approvers.iter().zip(rxs) {
            let queue = queue.clone();
            let decided_ok = decided_ok.clone();
            let name = name.to_string();
            handles.push(thread::spawn(move || {
                for req in rx {
                    match approve(&queue, &req.id, &name) {
                        Ok(_) => {
                            decided_ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(QueueError::NotPending { .. }) => {}
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            }));
        }
        let submitted = Arc::new(Mutex::new(Vec::new()));
        let mut subs = Vec::new();
        for s in 0..SUBMITTERS {
            let queue = queue.clone();
            let gate = gate.clone();
            let txs = txs.clone();
            let submitted = submitted.clone();
            subs.push(thread::spawn(move || {
                for i in 0..PER {
                    let req = queue
                        .submit(submission(
                            &gate,
                            json!({"amount": 2000 + s * 1000 + i}),
                            &[],
                        ))
                        .unwrap();
                    for tx in &txs {
                        tx.send(req.clone()).unwrap();
                    }
                    submitted.lock().unwrap().push(req);
                }
            }));
        }
        drop(txs);
        for h in subs.into_iter().chain(handles) {
            h.join().unwrap();
        }
        let reqs = submitted.lock().unwrap().clone();
        assert_eq!(reqs.len(), SUBMITTERS * PER);
        // Quorum 2 of 3 approvers: exactly two decisions per request were accepted.
        assert_eq!(decided_ok.load(Ordering::SeqCst), 2 * reqs.len());

        let barrier = Arc::new(Barrier::new(CONSUMERS));
        let wins: Arc<Vec<AtomicUsize>> =
            Arc::new((0..reqs.len()).map(|_| AtomicUsize::new(0)).collect());
        let reqs = Arc::new(reqs);
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let (queue, barrier, wins, reqs) =
                    (queue.clone(), barrier.clone(), wins.clone(), reqs.clone());
                thread::spawn(move || {
                    barrier.wait();
                    for (i, r) in reqs.iter().enumerate() {
                        match queue.consume(&r.id, &r.args) {
                            Ok(_grant) => {
                                wins[i].fetch_add(1, Ordering::SeqCst);
                            }
                            Err(QueueError::AlreadyUsed { .. }) => {}
                            Err(e) => panic!("unexpected {e}"),
                        }
                    }
                })
            })
            .collect();
        for c in consumers {
            c.join().unwrap();
        }
        assert!(wins.iter().all(|w| w.load(Ordering::SeqCst) == 1));

        let mut per_id: HashMap<String, (usize, usize, usize)> = HashMap::new();
        for rec in store.records() {
            let e = per_id.entry(rec.id().unwrap().to_string()).or_default();
            match rec {
                StoreRecord::Submitted { .. } => e.0 += 1,
                StoreRecord::Decided { .. } => e.1 += 1,
                StoreRecord::Consumed { .. } => e.2 += 1,
                _ => panic!("unexpected record"),
            }
        }
        assert_eq!(per_id.len(), reqs.len());
        assert!(per_id.values().all(|c| *c == (1, 2, 1)), "{per_id:?}");
        for r in reqs.iter() {
            let s = queue.status(&r.id).unwrap();
            assert_eq!(s.approvals, 2);
            assert!(matches!(s.state, RequestState::Consumed { .. }));
        }
    }

    struct Unpark(Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// A minimal executor: polls, parks until woken, polls again. Gives up (panics) after 10 s, so
    /// a future that is never woken fails the test instead of hanging it.
    fn block_on<F: Future>(f: F) -> F::Output {
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = pin!(f);
        let start = Instant::now();
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "future never resolved"
            );
            thread::park_timeout(Duration::from_secs(5));
        }
    }

    #[test]
    fn wait_is_woken_by_decisions_and_by_ticks() {
        let f = Arc::new(fixture());
        let req = big(&f);
        let started = Instant::now();
        let decider = {
            let (f, id) = (f.clone(), req.id.clone());
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                approve(&f.queue, &id, "alice").unwrap();
                thread::sleep(Duration::from_millis(20));
                approve(&f.queue, &id, "bob").unwrap();
            })
        };
        let res = block_on(f.queue.wait(&req.id)).unwrap();
        decider.join().unwrap();
        assert!(res.is_approved());
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "woken, not timed out"
        );
        assert_eq!(f.queue.waiting(), 0);
        // Resolved requests answer at once.
        assert!(block_on(f.queue.wait(&req.id)).unwrap().is_approved());

        let other = big(&f);
        let started = Instant::now();
        let ticker = {
            let (f, clock) = (f.clone(), f.clock.clone());
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                clock.advance(HOUR);
                f.queue.tick().unwrap();
            })
        };
        let res = block_on(f.queue.wait(&other.id)).unwrap();
        ticker.join().unwrap();
        assert_eq!(
            res,
            Resolution::Denied {
                by: None,
                reason: None
            }
        );
        assert!(started.elapsed() < Duration::from_secs(4));
        assert!(matches!(
            block_on(f.queue.wait(&ApprovalId::new("missing"))),
            Err(QueueError::NotFound { .. })
        ));
    }

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn dropping_a_wait_deregisters_it() {
        let f = fixture();
        let req = big(&f);
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        {
            let mut fut = pin!(f.queue.wait(&req.id));
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
            assert_eq!(f.queue.waiting(), 1, "re-polling does not register twice");
            let mut second = pin!(f.queue.wait(&req.id));
            assert!(second.as_mut().poll(&mut cx).is_pending());
            assert_eq!(f.queue.waiting(), 2);
        }
        assert_eq!(f.queue.waiting(), 0);
        approve(&f.queue, &req.id, "alice").unwrap();
        approve(&f.queue, &req.id, "bob").unwrap();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "a dropped wait is never woken"
        );
        // The request itself is unaffected by the cancelled waits.
        assert!(state(&f.queue, &req.id).is_approved());

        // A live wait is woken exactly when the request resolves.
        let req = big(&f);
        let mut fut = pin!(f.queue.wait(&req.id));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        approve(&f.queue, &req.id, "alice").unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        f.queue
            .decide(&req.id, &who("erin"), Decision::Deny, "no")
            .unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            fut.as_mut().poll(&mut cx),
            Poll::Ready(Ok(Resolution::Denied { .. }))
        ));
        assert_eq!(f.queue.waiting(), 0);
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
