//! Criterion benches for the escalation gate and approval queue. Run with
//! `cargo bench --bench escalation`. Group `escalation`:
//! - `rules_no_match`: a read tool that none of the 5 configured (tool-scoped) rules concerns,
//!   raw JSON arguments: the cost every unconcerned call pays.
//! - `rules_match`: `pay_invoice` with raw JSON arguments whose amount is over its currency's
//!   threshold (parse, path lookup, exact comparison).
//! - `request_roundtrip`: submit, decide (quorum 1) and consume one request with a
//!   `MemoryApprovalStore` and a no-op observer (a fresh queue every 1000 requests).
//! - `args_hash_raw` / `args_hash_value`: the keyed hash (HMAC-SHA-256 under an `ArgsKey`) of
//!   the payment's arguments in their exact canonical form (keys out of order, an escape), raw
//!   JSON and parsed: what a grant binds and, with FNV instead of the HMAC, what loop detection
//!   fingerprints.
//!
//! Group `escalation_file` (10 samples): `request_roundtrip_file`, the same round trip on a
//! `FileApprovalStore` in the temp directory: three chained, MAC'd records, each followed by
//! its head slot, each synced (six fsyncs); the figure is the disk's.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tollgate::boundary::Effect;
use tollgate::clock::ManualClock;
use tollgate::escalation::{
    ApprovalQueue, Approver, ArgsKey, Condition, Decision, EscalationGate, EscalationPolicy,
    FileApprovalStore, GateInput, LevelSpec, MemoryApprovalStore, NoopObserver, QueueConfig,
    RuleParams, RuleSpec, StoreKey, Submission,
};

fn gate() -> EscalationGate {
    let policy = EscalationPolicy::new()
        .group("finance", ["alice", "bob"])
        .group("legal", ["lena"])
        .defaults(
            RuleParams::new()
                .timeout(Duration::from_secs(3600))
                .chain([LevelSpec::new("finance")]),
        )
        .rule(
            RuleSpec::new(
                "large-payment",
                Condition::amount_over_by_currency(
                    "amount",
                    "currency",
                    [("EUR", 900), ("USD", 1000), ("GBP", 800)],
                ),
            )
            .tools(["pay_invoice"]),
        )
        .rule(RuleSpec::new("refunds", Condition::amount_over("amount", 200)).tools(["refund"]))
        .rule(
            RuleSpec::new("filings", Condition::irreversible())
                .tools(["file_with_court"])
                .chain([LevelSpec::new("legal")]),
        )
        .rule(
            RuleSpec::new("low-confidence-email", Condition::confidence_below(0.7))
                .tools(["send_email"]),
        )
        .rule(
            RuleSpec::new(
                "decelerate-writes",
                Condition::all([
                    Condition::budget_used_at_least(0.8),
                    Condition::effect_at_least(Effect::Write),
                ]),
            )
            .tools(["update_record", "send_email"]),
        );
    EscalationGate::compile(policy, &["public".into(), "confidential".into()]).unwrap()
}

const READ: &str = r#"{"matter_id":"M-1001","path":"/matters/M-1001/intake.pdf"}"#;
const PAY: &str = r#"{"invoice":"INV-004711","amount":1250.5,"currency":"EUR"}"#;

fn escalation(c: &mut Criterion) {
    let gate = gate();
    let mut g = c.benchmark_group("escalation");

    g.bench_function("rules_no_match", |b| {
        b.iter(|| {
            let input = GateInput::new(black_box("read_document"), Effect::Read, black_box(READ))
                .tier(1)
                .confidence(0.9);
            black_box(gate.evaluate(&input))
        })
    });

    g.bench_function("rules_match", |b| {
        b.iter(|| {
            let input = GateInput::new(
                black_box("pay_invoice"),
                Effect::Irreversible,
                black_box(PAY),
            )
            .tier(1);
            black_box(gate.evaluate(&input))
        })
    });

    let esc = gate
        .check(&GateInput::new("pay_invoice", Effect::Irreversible, PAY))
        .unwrap();
    let args = json!({"invoice": "INV-004711", "amount": 1250.5, "currency": "EUR"});
    let alice = Approver::new("alice");
    g.bench_function("request_roundtrip", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(1000);
                left -= n;
                let queue = ApprovalQueue::open(
                    Arc::new(MemoryApprovalStore::new()),
                    Arc::new(ManualClock::new()),
                    QueueConfig::with_groups(gate.groups().clone()),
                )
                .unwrap()
                .with_observer(Arc::new(NoopObserver));
                let subs: Vec<Submission> = (0..n)
                    .map(|_| {
                        Submission::new(
                            "run-1",
                            "billing-bot",
                            "pay_invoice",
                            args.clone(),
                            esc.clone(),
                            gate.version(),
                        )
                        .triggered_by("dave")
                    })
                    .collect();
                let start = Instant::now();
                for sub in subs {
                    let req = queue.submit(sub).unwrap();
                    queue
                        .decide(&req.id, &alice, Decision::Approve, "ok")
                        .unwrap();
                    let grant = queue.consume(&req.id, &req.args).unwrap();
                    black_box(&grant);
                }
                total += start.elapsed();
            }
            total
        })
    });

    let unsorted =
        r#"{"invoice":"INV-004711","currency":"EUR","amount":1250.5,"memo":"caf\u00e9"}"#;
    let parsed: serde_json::Value = serde_json::from_str(unsorted).unwrap();
    let key = ArgsKey::generate().unwrap();
    g.bench_function("args_hash_raw", |b| {
        b.iter(|| black_box(key.hash(black_box(unsorted)).unwrap()))
    });
    g.bench_function("args_hash_value", |b| {
        b.iter(|| black_box(key.hash(black_box(&parsed)).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("escalation_file");
    g.sample_size(10);
    let dir_guard = tempfile::tempdir().unwrap();
    let dir = dir_guard.path();
    let key = StoreKey::new("bench", vec![1; 32]).unwrap();
    let store = Arc::new(FileApprovalStore::open(dir.join("approvals.jsonl"), &key).unwrap());
    let queue = ApprovalQueue::open(
        store,
        Arc::new(ManualClock::new()),
        QueueConfig::with_groups(gate.groups().clone()),
    )
    .unwrap();
    g.bench_function("request_roundtrip_file", |b| {
        b.iter(|| {
            let sub = Submission::new(
                "run-1",
                "billing-bot",
                "pay_invoice",
                args.clone(),
                esc.clone(),
                gate.version(),
            )
            .triggered_by("dave");
            let req = queue.submit(sub).unwrap();
            queue
                .decide(&req.id, &alice, Decision::Approve, "ok")
                .unwrap();
            black_box(queue.consume(&req.id, &req.args).unwrap())
        })
    });
    g.finish();
    drop(queue);
    drop(dir_guard);
}

criterion_group!(benches, escalation);
criterion_main!(benches);
