//! The approval queue under concurrency: a stress test (no lost or duplicated decisions, one
//! consume per grant across threads), and async waiting: a wait is woken by decisions and by
//! ticks, and a dropped wait is deregistered and never woken.

#[path = "common/approval_queue.rs"]
mod approval_queue;

// Inside a module named after the file, so `cargo test escalation` selects these tests.
mod escalation_queue_concurrency {
    use std::collections::HashMap;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier, Mutex, mpsc};
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread::{self, Thread};
    use std::time::{Duration, Instant};

    use serde_json::json;
    use tollgate::clock::ManualClock;
    use tollgate::escalation::{
        ApprovalId, ApprovalQueue, ApprovalRequest, Decision, MemoryApprovalStore, QueueConfig,
        QueueError, RequestState, Resolution, StoreRecord,
    };

    use crate::approval_queue::{HOUR, approve, big, fixture, gate, state, submission, who};

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
}
