//! A payments agent under an escalation gate: small payments run at once, a large one waits for
//! a finance approver (simulated on another thread) and runs once approved, another large one
//! nobody answers is denied at its deadline, and the audit trail shows every step. Requests
//! live in a keyed, hash-chained file store that a second process could not open at the same
//! time. Run with `cargo run --example payment_approval`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tollgate::audit::MemorySink;
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::clock::ManualClock;
use tollgate::escalation::{
    ApprovalQueue, Approver, ChannelNotifier, Decision, EscalationGate, EscalationPolicy,
    FileApprovalStore, QueueConfig, StoreError, StoreKey,
};
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

const ESCALATION: &str = r#"
    [groups]
    finance = ["alice", "bob"]
    cfo = ["carol"]

    [defaults]
    timeout = "15m"
    chain = [ { group = "finance" }, { group = "cfo", after = "10m" } ]

    # An approved payment must be made within 10 minutes of the approval.
    [approvals]
    grant_ttl = "10m"

    [[rules]]
    id = "large-payment"
    tools = ["pay_invoice"]
    when = { amount = { path = "amount", currency_path = "currency", over_by_currency = { EUR = "1000.00", USD = "1100.00" } } }
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let boundary = ActionBoundary::builder()
        .tool(
            "pay_invoice",
            ToolSpec::irreversible()
                .arg("invoice", Arg::string().required().pattern("INV-[0-9]{6}"))
                .arg("amount", Arg::number().required().min(0.0))
                .arg("currency", Arg::string().required().one_of(["EUR", "USD"])),
        )
        .role("payments", RoleSpec::new().tools(["pay_invoice"]))
        .build()?;
    let gate = EscalationGate::for_boundary(EscalationPolicy::from_toml(ESCALATION)?, &boundary)?;
    // A manual clock makes the deadline visible in a second; production uses the system clock.
    let clock = Arc::new(ManualClock::new());
    let (notifier, notifications) = ChannelNotifier::new();
    // The store's records are chained and MAC'd with a key only this process holds (in
    // production: `StoreKey::from_key_file`, a secret of at least 32 bytes from a vault).
    // Removed when `dir` drops (also on an early return); `close` below reports a failure.
    let dir = tempfile::Builder::new()
        .prefix("tollgate-payment-")
        .tempdir()?;
    let path = dir.path().join("approvals.jsonl");
    let key = StoreKey::new(
        "approvals-2026",
        b"example secret, at least 32 bytes long".to_vec(),
    )?;
    let queue = ApprovalQueue::open(
        Arc::new(FileApprovalStore::open(&path, &key)?),
        clock.clone(),
        QueueConfig::for_gate(&gate),
    )?
    .with_notifier(Arc::new(notifier));
    // While this guard holds the store, nobody else can open it (a second store on the same
    // file could hand out a single-use grant twice).
    match FileApprovalStore::open(&path, &key) {
        Err(e @ StoreError::Locked { .. }) => println!("second store refused: {e}\n"),
        other => return Err(format!("expected the store to be locked, got {other:?}").into()),
    }
    let audit = Arc::new(MemorySink::new());
    let guard = Guard::builder(boundary)
        .clock(clock.clone())
        .audit(audit.clone())
        .escalation(gate, queue)
        .build()?;
    let run = guard.start_run(RunContext::new("ap-agent", "payments").triggered_by("ops:dave"))?;

    // 1. A small payment runs at once.
    let small = json!({ "invoice": "INV-000101", "amount": 240, "currency": "EUR" });
    match guard.check(&run, &ToolCall::new("pay_invoice", &small)) {
        Verdict::Allow(p) => {
            p.complete(Outcome::success())?;
            println!("INV-000101 (240 EUR): paid without asking anyone");
        }
        other => return Err(format!("unexpected {other:?}").into()),
    }

    // 2. A large one waits; Alice in finance approves it from another thread, as a chat bot or
    //    web console would, on the notification the queue sends.
    let queue = guard.approvals().expect("escalation configured").clone();
    let approver = std::thread::spawn(move || {
        let n = notifications
            .recv_timeout(Duration::from_secs(5))
            .expect("a request notification");
        println!(
            "  [finance console] request {} for {:?}",
            n.request.id, n.kind
        );
        std::thread::sleep(Duration::from_millis(50)); // reading the invoice
        let out = queue
            .decide(
                &n.request.id,
                &Approver::new("alice").via("console"),
                Decision::Approve,
                "matches PO-7781",
            )
            .expect("alice may decide");
        println!("  [finance console] alice approved: {}", out.state);
    });
    let large = json!({ "invoice": "INV-000102", "amount": 18500, "currency": "EUR" });
    let call = ToolCall::new("pay_invoice", &large);
    let verdict = block_on(guard.check_and_wait(&run, &call));
    approver.join().map_err(|_| "approver thread panicked")?;
    let permit = verdict.into_permit()?;
    permit.complete(Outcome::success())?;
    println!("INV-000102 (18500 EUR): paid after approval");

    // 3. Another large one nobody answers: denied at its deadline. (A sync caller keeps the
    //    ticket and resumes later.)
    let late = json!({ "invoice": "INV-000103", "amount": 9900, "currency": "USD" });
    let call = ToolCall::new("pay_invoice", &late);
    let Verdict::Escalate(request) = guard.check(&run, &call) else {
        return Err("expected an escalation".into());
    };
    let ticket = request.ticket();
    println!(
        "INV-000103 (9900 USD): waiting for {:?}, deadline in 900 s",
        request.current_group()
    );
    let queue = guard.approvals().expect("escalation configured");
    clock.advance(Duration::from_secs(600));
    queue.tick()?; // routed to the CFO after 10 minutes
    clock.advance(Duration::from_secs(300));
    queue.tick()?; // deadline: denied
    let verdict = guard.resume(&run, &call, &ticket);
    println!(
        "INV-000103: {}",
        verdict
            .denial()
            .map(|d| format!("denied [{}]: {}", d.code(), d.reason()))
            .unwrap_or_else(|| "?".into())
    );
    drop(verdict);
    run.finish()?;

    println!("\naudit trail:");
    for e in audit.events() {
        let kind = e["event"].as_str().unwrap_or("?");
        let detail = match kind {
            "decision" => format!(
                "{} {}",
                e["gen_ai.tool.name"].as_str().unwrap_or(""),
                e["tollgate.decision"].as_str().unwrap_or("")
            ),
            k if k.starts_with("escalation_") => format!(
                "approval {} {}",
                &e["tollgate.approval.id"].as_str().unwrap_or("")[..8],
                e.get("tollgate.approval.approver")
                    .or(e.get("tollgate.approval.group"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
            ),
            _ => String::new(),
        };
        println!("  #{:<3} {kind:<22} {detail}", e["seq"]);
    }
    drop(guard);
    dir.close()?;
    Ok(())
}

/// A minimal executor: polls the future on this thread, parking between wake-ups.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
