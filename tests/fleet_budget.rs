//! Budgets shared by many processes through leases on PostgreSQL: N processes racing on one
//! budget never overspend it by a single unit, and the unused-at-end fraction is reported.
#![cfg(feature = "postgres")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::pg::fresh_backend;
use tollgate::backend::lease::{
    BudgetSpec, LeaseSource, LeasedBudgets, LeasesSection, Measure, Per,
};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::lease::PgLeases;
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::clock::SystemClock;
use tollgate::{DenyCode, Guard, RunContext, ToolCall, Verdict};

const ROLE: &str = "TOLLGATE_FLEET_BUDGET_ROLE";
const HOSTS: usize = 4;
const LIMIT: u64 = 2_000;
/// Far longer than any test run: the window cannot roll over mid-test.
const WINDOW: Duration = Duration::from_secs(10_000 * 86_400);

fn section(chunk: u64) -> LeasesSection {
    LeasesSection {
        lease_timeout: Duration::from_secs(60),
        heartbeat: Duration::from_secs(5),
        refill_below_percent: 50,
        budgets: vec![BudgetSpec {
            name: "fleet-calls".into(),
            per: Per::Fleet,
            measure: Measure::Calls,
            limit: LIMIT,
            window: WINDOW,
            chunk: Some(chunk),
        }],
    }
}

fn guard(budgets: Arc<LeasedBudgets>) -> Guard {
    let boundary = ActionBoundary::builder()
        .tool("read", ToolSpec::read())
        .role("worker", RoleSpec::new().tools(["read"]))
        .build()
        .unwrap();
    Guard::builder(boundary)
        .shared_budget(budgets)
        .build()
        .unwrap()
}

/// One racing host: spends until the shared budget denies, gives back what is left, reports.
#[test]
fn child_host() {
    let Ok(host) = std::env::var(ROLE) else {
        return;
    };
    let url = std::env::var("TOLLGATE_PG_URL").unwrap();
    let schema = std::env::var("TOLLGATE_FLEET_SCHEMA").unwrap();
    let backend = PgBackend::from_url(&url, &schema, Duration::from_secs(10)).unwrap();
    let sec = section(25);
    let source = Arc::new(PgLeases::open(backend, &host, sec.lease_timeout).unwrap());
    let budgets =
        Arc::new(LeasedBudgets::start(&sec, source, Arc::new(SystemClock::new())).unwrap());
    let g = guard(Arc::clone(&budgets));
    let run = g
        .start_run(RunContext::new(host.as_str(), "worker"))
        .unwrap();
    let stop_after: u64 = std::env::var("TOLLGATE_FLEET_STOP_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    let mut allowed = 0u64;
    while allowed < stop_after {
        match g.check(&run, &ToolCall::new("read", "{}")) {
            Verdict::Allow(p) => {
                p.complete(tollgate::Outcome::success()).unwrap();
                allowed += 1;
            }
            Verdict::Deny(d) => {
                assert_eq!(d.code(), DenyCode::BudgetExhausted, "{d}");
                assert_eq!(d.rule().as_str(), "fleet.budget.fleet-calls");
                break;
            }
            Verdict::Escalate(_) => unreachable!(),
        }
    }
    let stats = budgets.shutdown().unwrap();
    println!(
        "host-report {host} allowed {allowed} returned {} sync_leases {} background_leases {}",
        stats.returned, stats.sync_leases, stats.background_leases
    );
}

/// Runs `HOSTS` racing hosts; returns (allowed in total, given back in total).
fn race(backend: &PgBackend, stop_after: Option<u64>) -> (u64, u64) {
    let children: Vec<_> = (0..HOSTS)
        .map(|i| {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--exact", "child_host", "--nocapture", "--test-threads=1"])
                .env(ROLE, format!("host-{i}"))
                .env("TOLLGATE_PG_URL", common::pg::pg_url().unwrap())
                .env("TOLLGATE_FLEET_SCHEMA", backend.schema())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            if let Some(n) = stop_after {
                c.env("TOLLGATE_FLEET_STOP_AFTER", n.to_string());
            }
            c.spawn().unwrap()
        })
        .collect();
    let mut total = 0u64;
    let mut returned = 0u64;
    for mut c in children {
        let out = BufReader::new(c.stdout.take().unwrap());
        let mut report = None;
        for line in out.lines() {
            let line = line.unwrap();
            if let Some(at) = line.find("host-report ") {
                report = Some(line[at..].to_owned());
            }
        }
        assert!(c.wait().unwrap().success());
        let report = report.expect("a host report");
        println!("{report}");
        let f: Vec<&str> = report.split(' ').collect();
        total += f[3].parse::<u64>().unwrap();
        returned += f[5].parse::<u64>().unwrap();
    }
    (total, returned)
}

fn row(probe: &PgLeases) -> tollgate::backend::postgres::lease::BudgetRow {
    let window = probe.lease(&section(25).budgets[0], "*", 0).unwrap().window;
    probe.row("fleet-calls", "*", window).unwrap().unwrap()
}

#[test]
fn four_processes_racing_on_one_budget_never_overspend_by_a_single_unit() {
    let Some(backend) = fresh_backend("budget_race") else {
        return;
    };
    // The tables exist before the hosts race to create them.
    let probe = PgLeases::open(backend.clone(), "probe", Duration::from_secs(60)).unwrap();
    let (total, returned) = race(&backend, None);
    let row = row(&probe);
    println!(
        "{HOSTS} processes draining a budget of {LIMIT} calls (chunk 25): {total} allowed, \
         {returned} given back, unused at end {:.2} %; {row:?}",
        100.0 * (LIMIT - total.min(LIMIT)) as f64 / LIMIT as f64
    );
    assert!(total <= LIMIT, "overspent: {total} > {LIMIT}");
    assert!(row.allocated <= row.capacity);
    // Exact accounting: what is handed out and not given back is what was spent.
    assert_eq!(row.allocated as u64, total, "{row:?}");
    assert_eq!(row.spent as u64, total, "{row:?}");
    assert_eq!(row.outstanding, 0, "every lease closed: {row:?}");
    assert_eq!(row.written_off, 0);
}

#[test]
fn hosts_that_stop_early_give_their_unused_leases_back() {
    let Some(backend) = fresh_backend("budget_return") else {
        return;
    };
    let probe = PgLeases::open(backend.clone(), "probe", Duration::from_secs(60)).unwrap();
    let (total, returned) = race(&backend, Some(310));
    let row = row(&probe);
    println!(
        "{HOSTS} processes stopping after 310 calls each: {total} allowed, {returned} given back \
         at shutdown; {row:?}"
    );
    assert_eq!(total, 4 * 310);
    assert!(returned > 0, "the last chunks were not used up");
    assert_eq!(row.returned as u64, returned);
    assert_eq!(row.allocated as u64, total, "{row:?}");
    assert_eq!(row.spent as u64, total);
    assert_eq!(row.outstanding, 0);
    // What the early stoppers gave back can be leased by the next host.
    let g = probe.lease(&section(25).budgets[0], "*", LIMIT).unwrap();
    assert_eq!(g.units, LIMIT - total);
}

/// Waits until the database's clock is in the window after `window` (windows of `len`).
fn wait_for_window_after(probe: &PgLeases, budget: &BudgetSpec, window: i64) -> i64 {
    // A lease of zero units reads the current window without taking anything.
    loop {
        let now = probe.lease(budget, "clock", 0).unwrap();
        if now.window > window {
            return now.window;
        }
        std::thread::sleep(
            now.window_left.min(Duration::from_millis(50)) + Duration::from_millis(5),
        );
    }
}

#[test]
fn ended_windows_are_dropped_once_no_lease_is_left_in_them() {
    let Some(backend) = fresh_backend("budget_prune") else {
        return;
    };
    let budget = BudgetSpec {
        name: "per-second".into(),
        per: Per::Fleet,
        measure: Measure::Calls,
        limit: 100,
        window: Duration::from_secs(1),
        chunk: Some(10),
    };
    let a = PgLeases::open(backend.clone(), "host-a", Duration::from_secs(60)).unwrap();
    let b = PgLeases::open(backend.clone(), "host-b", Duration::from_secs(60)).unwrap();
    // Far from the window's end, so both leases land in the same window.
    let w1 = wait_for_window_after(&a, &budget, a.lease(&budget, "clock", 0).unwrap().window);
    let g1 = a.lease(&budget, "k1", 10).unwrap();
    let g2 = b.lease(&budget, "k2", 10).unwrap();
    assert_eq!((g1.window, g2.window), (w1, w1));
    a.release(&budget, "k1", w1, 4).unwrap();

    // The next window opens (for any key): k1's ended row, without a lease, goes; k2's stays
    // while host b still holds its lease.
    let w2 = wait_for_window_after(&a, &budget, w1);
    assert!(
        a.row("per-second", "k1", w1).unwrap().is_none(),
        "k1's ended window kept"
    );
    let kept = a
        .row("per-second", "k2", w1)
        .unwrap()
        .expect("k2's window with a live lease");
    assert_eq!(kept.outstanding, 10);
    // Host b gives it back to its own (ended) window: accounted as before.
    b.release(&budget, "k2", w1, 3).unwrap();
    let after = a.row("per-second", "k2", w1).unwrap().unwrap();
    assert_eq!((after.returned, after.spent, after.outstanding), (3, 7, 0));

    // The window after: nothing of w1 is left; w2's rows without leases went too.
    let w3 = wait_for_window_after(&a, &budget, w2);
    assert!(a.row("per-second", "k2", w1).unwrap().is_none());
    assert!(a.row("per-second", "clock", w2).unwrap().is_none());
    // The current window's row is there and untouched.
    assert!(a.row("per-second", "clock", w3).unwrap().is_some());
}
