//! A fleet on PostgreSQL: three worker processes and one operator.
//!
//! - The workers share one budget of calls (leased from PostgreSQL, spent locally): together
//!   they are allowed exactly the budget, never one call more.
//! - The operator throws the kill switch; every worker's guard follows it through
//!   LISTEN/NOTIFY and denies; the operator measures how long each took to stop.
//!
//! Run with `cargo run --example fleet --features postgres`. It starts a throwaway PostgreSQL
//! from the machine's server binaries unless `TOLLGATE_PG_URL` holds a connection string. The
//! workers are this same program re-executed with `worker N`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tollgate::backend::kill::{
    KillChange, KillFollower, KillScope, KillSwitchSection, KillSwitchStore,
};
use tollgate::backend::lease::{BudgetSpec, LeasedBudgets, LeasesSection, Measure, Per};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::kill::PgKillSwitch;
use tollgate::backend::postgres::lease::PgLeases;
use tollgate::backend::postgres::throwaway::ThrowawayPostgres;
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::clock::SystemClock;
use tollgate::{DenyCode, Guard, RunContext, ToolCall, Verdict};

const WORKERS: usize = 3;
const BUDGET: u64 = 150;
/// What this example promises about stopping: generous next to the measured propagation (a few
/// milliseconds through NOTIFY; see tests/fleet_kill.rs), far below the staleness bound.
const STOP_BOUND: Duration = Duration::from_secs(1);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The parts of the policy document's `[backend]` section this example uses, written in code.
fn kill_section() -> KillSwitchSection {
    KillSwitchSection {
        poll_interval: Duration::from_millis(500),
        staleness: Duration::from_secs(5),
        dir: None,
    }
}

fn lease_section() -> LeasesSection {
    LeasesSection {
        budgets: vec![BudgetSpec {
            name: "fleet-calls".into(),
            per: Per::Fleet,
            measure: Measure::Calls,
            limit: BUDGET,
            window: Duration::from_secs(86_400),
            chunk: Some(10),
        }],
        ..LeasesSection::default()
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(args.get(2).cloned().unwrap_or_default());
    }
    operator()
}

fn backend_from_env() -> Result<PgBackend, Error> {
    let url = std::env::var("TOLLGATE_PG_URL")?;
    let schema = std::env::var("FLEET_SCHEMA")?;
    Ok(PgBackend::from_url(&url, &schema, Duration::from_secs(10))?)
}

/// One worker host: a guard following the shared kill switch and spending the shared budget.
fn worker(name: String) -> Result<(), Error> {
    let backend = backend_from_env()?;
    let boundary = ActionBoundary::builder()
        .tool("lookup", ToolSpec::read())
        .role("worker", RoleSpec::new().tools(["lookup"]))
        .build()?;
    let leases = lease_section();
    let source = Arc::new(PgLeases::open(
        backend.clone(),
        &name,
        leases.lease_timeout,
    )?);
    let budgets = Arc::new(LeasedBudgets::start(
        &leases,
        source,
        Arc::new(SystemClock::new()),
    )?);
    let guard = Guard::builder(boundary)
        .shared_budget(Arc::clone(&budgets) as _)
        .build()?;
    let _follower = KillFollower::start(
        guard.clone(),
        Arc::new(PgKillSwitch::open(backend)?),
        &kill_section(),
    );
    // --- fleet-b: approvals on PostgreSQL and the shared audit trail go here (the lead adds
    // --- them after merging): an approval requested on this worker and granted by the
    // --- operator, and an audit sink writing to the fleet's one verified trail.
    let run = guard.start_run(RunContext::new(name.as_str(), "worker"))?;
    let call = ToolCall::new("lookup", "{}");
    let mut allowed = 0u64;
    let mut exhausted = false;
    loop {
        match guard.check(&run, &call) {
            Verdict::Allow(permit) => {
                permit.complete(tollgate::Outcome::success())?;
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
            Verdict::Escalate(_) => return Err("no escalation rules here".into()),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    budgets.shutdown()?;
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

fn operator() -> Result<(), Error> {
    let server;
    let url = match std::env::var("TOLLGATE_PG_URL") {
        Ok(url) => url,
        Err(_) => {
            server = ThrowawayPostgres::start()?;
            server.url()
        }
    };
    let schema = format!("fleet_example_{}", std::process::id());
    let backend = PgBackend::from_url(&url, &schema, Duration::from_secs(10))?;
    let kill = PgKillSwitch::open(backend.clone())?;
    // The tables exist before the workers race to create them.
    PgLeases::open(backend, "operator", lease_section().lease_timeout)?;

    let (tx, rx) = mpsc::channel::<String>();
    let mut workers = Workers(Vec::new());
    for i in 0..WORKERS {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker", &format!("worker-{i}")])
            .env("TOLLGATE_PG_URL", &url)
            .env("FLEET_SCHEMA", &schema)
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
    }
    drop(tx);
    let next = |what: &str| -> Result<String, Error> {
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| format!("no word from the workers while waiting for {what}").into())
    };

    // 1. The shared budget: every worker runs until the fleet's budget is spent.
    let mut total = 0;
    for _ in 0..WORKERS {
        let line = next("the budget")?;
        let f: Vec<&str> = line.split(' ').collect();
        if f.first() != Some(&"exhausted") {
            return Err(format!("unexpected: {line}").into());
        }
        let n: u64 = f.get(2).ok_or("count")?.parse()?;
        println!("{} was allowed {n} calls", f[1]);
        total += n;
    }
    println!("together: {total} calls of a shared budget of {BUDGET}");
    assert_eq!(total, BUDGET, "exactly the budget, never one more");

    // 2. The kill switch, thrown by the operator.
    let t0 = unix_nanos();
    let thrown = Instant::now();
    kill.apply(&KillChange::suspend(KillScope::Global, "operator").reason("fleet example"))?;
    let mut slowest = Duration::ZERO;
    for _ in 0..WORKERS {
        let line = next("the kill switch")?;
        let f: Vec<&str> = line.split(' ').collect();
        if f.first() != Some(&"stopped") {
            return Err(format!("unexpected: {line}").into());
        }
        let at: u128 = f.get(2).ok_or("time")?.parse()?;
        let took = Duration::from_nanos(u64::try_from(at.saturating_sub(t0))?);
        println!(
            "{} stopped {:.1} ms after the switch",
            f[1],
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
    // --- fleet-b: verify the fleet's one audit trail here (`tollgate audit verify` on
    // --- PostgreSQL) once the lead merges the audit sink.
    workers.0.clear();
    Ok(())
}
