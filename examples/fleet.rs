//! A fleet on PostgreSQL: three worker processes and one operator, all joined to one deployment
//! by the policy document's `[backend]` section alone (`Deployment::open`).
//!
//! - The workers share one budget of calls (leased from PostgreSQL, spent locally): together
//!   they are allowed exactly the budget, never one call more.
//! - A refund over 100 on worker-0 waits for approval; the operator, another process, grants
//!   it; worker-0's call resumes.
//! - The operator throws the kill switch; every worker's guard follows it through
//!   LISTEN/NOTIFY and denies; the operator measures how long each took to stop.
//! - Every process wrote its own chain of the fleet's one audit trail; the operator verifies
//!   the whole trail (hashes, links, keyed checkpoints).
//!
//! Run with `cargo run --example fleet --features postgres`. It starts a throwaway PostgreSQL
//! from the machine's server binaries unless `TOLLGATE_PG_URL` holds a connection string. The
//! operator and the workers are this same program re-executed (`operator`, `worker N`).
//! Moving this fleet onto one host's files is a change of the `[backend]` section
//! (`kind = "files"`, `dir = ...`): see tests/deployment.rs, which runs the same worker code on
//! both.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate::audit::file::CheckpointKey;
use tollgate::backend::Deployment;
use tollgate::backend::kill::{KillChange, KillScope};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::throwaway::ThrowawayPostgres;
use tollgate::escalation::{ApprovalId, Approver, Decision, StoreKey};
use tollgate::policy::{Bindings, Policy};
use tollgate::{DenyCode, Outcome, RunContext, ToolCall, Verdict};

const WORKERS: usize = 3;
const BUDGET: u64 = 150;
/// What this example promises about stopping: generous next to the measured propagation (a few
/// milliseconds through NOTIFY; see tests/fleet_kill.rs), far below the staleness bound.
const STOP_BOUND: Duration = Duration::from_secs(1);
const POLICY_VAR: &str = "FLEET_POLICY";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The policy document every process loads. Only `[backend]` says where the shared state is.
fn policy_text(schema: &str) -> String {
    format!(
        r#"
[policy]
name = "fleet"
owner = "platform team"
purpose = "look up and refund invoices"
scope = "example"
liability_owner = "CTO"
review_cadence = "90d"
data_handling = "no personal data"

[tools.lookup]
effect = "read"
[tools.refund]
effect = "irreversible"
args.amount = {{ type = "number", required = true, min = 0, max = 500 }}

[roles.worker]
tools = ["lookup", "refund"]

[audit]
durability = {{ group_commit = {{ interval = "5s" }} }}

[escalation]
groups.leads = ["maria"]
defaults = {{ timeout = "1h", chain = [{{ group = "leads" }}] }}

[[escalation.rules]]
id = "refund-over-100"
reason = "Refunds over 100 need a lead."
tools = ["refund"]
when.amount = {{ path = "amount", over = 100 }}

[backend]
kind = "postgres"
url_env = "TOLLGATE_PG_URL"
schema = "{schema}"

[backend.kill_switch]
poll_interval = "500ms"
staleness = "5s"

[[backend.leases.budgets]]
name = "fleet-calls"
per = "fleet"
measure = "calls"
limit = {BUDGET}
window = "1d"
chunk = 10
"#
    )
}

/// Key material is bound in code (from a vault in a real deployment), the same on every host.
fn bindings(host: &str) -> Result<Bindings, Error> {
    Ok(Bindings::new()
        .host(host)
        .checkpoint_key(CheckpointKey::new("fleet-k1", vec![0x17; 32])?)
        .approval_key(StoreKey::new("fleet-a1", vec![0x29; 32])?))
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("worker") => worker(args.get(2).cloned().unwrap_or_default()),
        Some("operator") => operator(),
        _ => launch(),
    }
}

/// Finds or starts PostgreSQL, writes the policy document, runs the operator with the
/// connection string in the variable the document names.
fn launch() -> Result<(), Error> {
    let server;
    let url = match std::env::var("TOLLGATE_PG_URL") {
        Ok(url) => url,
        Err(_) => {
            server = ThrowawayPostgres::start()?;
            server.url()
        }
    };
    // Removed when `dir` drops, on every return path.
    let dir = tempfile::Builder::new()
        .prefix("tollgate-fleet-")
        .tempdir()?;
    let path = dir.path().join("policy.toml");
    let schema = format!("fleet_example_{}", std::process::id());
    std::fs::write(&path, policy_text(&schema))?;
    let status = Command::new(std::env::current_exe()?)
        .arg("operator")
        .env("TOLLGATE_PG_URL", &url)
        .env(POLICY_VAR, &path)
        .status()?;
    if !status.success() {
        return Err(format!("the operator failed: {status}").into());
    }
    Ok(())
}

fn load_policy() -> Result<Policy, Error> {
    let path = std::env::var(POLICY_VAR)?;
    Ok(Policy::from_file(Path::new(&path))?)
}

/// One worker host: joins the deployment and works until the kill switch stops it.
fn worker(name: String) -> Result<(), Error> {
    let policy = load_policy()?;
    let deployment = Deployment::open(&policy, bindings(&name)?)?;
    let guard = deployment.guard();
    let run = guard.start_run(RunContext::new(name.as_str(), "worker"))?;
    if name == "worker-0" {
        // A refund over 100: waits until a lead on another host decides.
        let refund = ToolCall::new("refund", r#"{"amount":250}"#);
        let Verdict::Escalate(request) = guard.check(&run, &refund) else {
            return Err("a refund over 100 must escalate".into());
        };
        println!("pending {name} {}", request.id);
        match guard.wait_and_resume_blocking(&run, &refund, &request, Duration::from_secs(60)) {
            Verdict::Allow(permit) => {
                permit.complete(Outcome::success())?;
                println!("refunded {name}");
            }
            other => return Err(format!("the approved refund did not resume: {other:?}").into()),
        }
    }
    let call = ToolCall::new("lookup", "{}");
    let mut allowed = u64::from(name == "worker-0");
    let mut exhausted = false;
    loop {
        match guard.check(&run, &call) {
            Verdict::Allow(permit) => {
                permit.complete(Outcome::success())?;
                allowed += 1;
            }
            Verdict::Deny(d) if d.code() == DenyCode::BudgetExhausted => {
                if !exhausted {
                    exhausted = true;
                    println!("exhausted {name} {allowed}");
                }
            }
            Verdict::Deny(d) if d.code() == DenyCode::Suspended => {
                println!("stopped {name} {}", unix_nanos());
                break;
            }
            Verdict::Deny(d) => return Err(d.to_string().into()),
            Verdict::Escalate(_) => return Err("a lookup never escalates".into()),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(run);
    deployment.shutdown()?;
    Ok(())
}

/// Kills the workers if the operator fails half way.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn field(line: &str, n: usize) -> Result<&str, Error> {
    line.split(' ')
        .nth(n)
        .ok_or_else(|| format!("malformed line `{line}`").into())
}

fn operator() -> Result<(), Error> {
    let policy = load_policy()?;
    // The operator joins the same deployment: its guard's approval queue is the fleet's.
    let deployment = Deployment::open(&policy, bindings("operator")?)?;
    let queue = deployment
        .guard()
        .approvals()
        .ok_or("the document has [escalation]")?;
    let kill = deployment
        .kill_switch()
        .ok_or("a postgres backend has a kill switch")?;

    let (tx, rx) = mpsc::channel::<String>();
    let mut workers = Workers(Vec::new());
    let spawn = |i: usize, workers: &mut Workers| -> Result<(), Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker", &format!("worker-{i}")])
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().ok_or("worker stdout")?;
        workers.0.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok(())
    };
    let next = |what: &str| -> Result<String, Error> {
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| format!("no word from the workers while waiting for {what}").into())
    };

    // 1. The approval: requested on worker-0, granted here, resumed there.
    spawn(0, &mut workers)?;
    let line = next("the approval request")?;
    if field(&line, 0)? != "pending" {
        return Err(format!("unexpected: {line}").into());
    }
    let id = ApprovalId::from(field(&line, 2)?);
    // The request reached this host through the shared store (NOTIFY); sync in case the
    // notification is still on its way.
    queue.sync()?;
    queue.decide(
        &id,
        &Approver::new("maria"),
        Decision::Approve,
        "checked the invoice",
    )?;
    let asked = Instant::now();
    println!("maria (operator host) approved {id}, requested on worker-0");
    let line = next("the resumed refund")?;
    if field(&line, 0)? != "refunded" {
        return Err(format!("unexpected: {line}").into());
    }
    println!(
        "worker-0 resumed the approved refund {:.1} ms after the decision",
        asked.elapsed().as_secs_f64() * 1e3
    );

    // 2. The shared budget: every worker runs until the fleet's budget is spent.
    for i in 1..WORKERS {
        spawn(i, &mut workers)?;
    }
    let mut total = 0;
    for _ in 0..WORKERS {
        let line = next("the budget")?;
        if field(&line, 0)? != "exhausted" {
            return Err(format!("unexpected: {line}").into());
        }
        let n: u64 = field(&line, 2)?.parse()?;
        println!("{} was allowed {n} calls", field(&line, 1)?);
        total += n;
    }
    // The operator's process joined the deployment too: it holds the lease it took at start
    // (unspent; returned when it shuts down).
    let held = deployment
        .leases()
        .and_then(|l| l.local_balance("fleet-calls", "*"))
        .map_or(0, |n| u64::try_from(n).unwrap_or(0));
    println!(
        "together: {total} calls of a shared budget of {BUDGET} ({held} held unspent by the operator)"
    );
    assert_eq!(total + held, BUDGET, "exactly the budget, never one more");

    // 3. The kill switch, thrown by the operator.
    let t0 = unix_nanos();
    let thrown = Instant::now();
    kill.apply(&KillChange::suspend(KillScope::Global, "operator").reason("fleet example"))?;
    let mut slowest = Duration::ZERO;
    for _ in 0..WORKERS {
        let line = next("the kill switch")?;
        if field(&line, 0)? != "stopped" {
            return Err(format!("unexpected: {line}").into());
        }
        let at: u128 = field(&line, 2)?.parse()?;
        let took = Duration::from_nanos(u64::try_from(at.saturating_sub(t0))?);
        println!(
            "{} stopped {:.1} ms after the switch",
            field(&line, 1)?,
            took.as_secs_f64() * 1e3
        );
        slowest = slowest.max(took);
    }
    println!(
        "all {WORKERS} workers stopped within {:.1} ms (bound {} ms; {:.1} ms wall for the operator)",
        slowest.as_secs_f64() * 1e3,
        STOP_BOUND.as_millis(),
        thrown.elapsed().as_secs_f64() * 1e3
    );
    assert!(slowest < STOP_BOUND);
    for c in &mut workers.0 {
        if !c.wait()?.success() {
            return Err("a worker failed".into());
        }
    }
    workers.0.clear();
    let section = policy
        .document()
        .backend
        .clone()
        .ok_or("the document has [backend]")?;
    deployment.shutdown()?;

    // 4. The fleet's one audit trail: every process's chain, verified with the checkpoint key.
    let backend = PgBackend::from_section(&section)?;
    let mut client = backend.connect()?;
    let report = tollgate::backend::postgres::audit::verify(
        &mut client,
        backend.schema(),
        &[CheckpointKey::new("fleet-k1", vec![0x17; 32])?],
    )?;
    println!(
        "audit trail verified: {} chains, {} records ({} guard events, {} checkpoints)",
        report.writers, report.records, report.events, report.checkpoints
    );
    assert_eq!(
        report.writers,
        WORKERS as u64 + 1,
        "three workers and the operator"
    );
    Ok(())
}
