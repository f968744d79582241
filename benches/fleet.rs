//! The check path's cost of the fleet control plane (feature `postgres`).
//!
//! Run with `cargo bench --bench fleet --features postgres`. A throwaway PostgreSQL is started
//! unless `TOLLGATE_PG_URL` is set. Group `fleet`, each a `Guard::check` of an argument-less
//! call plus completing the permit, no audit sink:
//! - `check_no_fleet`: the plain guard (the baseline);
//! - `check_kill_follower`: the same guard following a PostgreSQL kill switch (the follower only
//!   writes the guard's flags when the state changes: the check reads the same atomics);
//! - `check_leased_fleet_budget`: with a shared fleet budget of calls spent from a local lease
//!   (chunks of 100 000 000: no refill falls inside a measurement, so this is the cost
//!   *between* refills);
//! - `check_leased_agent_budget`: the same with a per-agent budget (adds the key lookup);
//! - `lease_take_agent`: `SharedBudget::take` alone on that budget (clock read, lock-free key
//!   lookup, one atomic update): what the lease adds to a check.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate::backend::kill::{KillFollower, KillSwitchSection};
use tollgate::backend::lease::{BudgetSpec, LeasedBudgets, LeasesSection, Measure, Per};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::kill::PgKillSwitch;
use tollgate::backend::postgres::lease::PgLeases;
use tollgate::backend::postgres::throwaway::ThrowawayPostgres;
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::clock::SystemClock;
use tollgate::{Guard, Outcome, RunContext, ToolCall, Verdict};

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool("lookup", ToolSpec::read())
        .role("worker", RoleSpec::new().tools(["lookup"]))
        .build()
        .unwrap()
}

fn leases(per: Per) -> LeasesSection {
    LeasesSection {
        lease_timeout: Duration::from_secs(600),
        heartbeat: Duration::from_secs(60),
        refill_below_percent: 1,
        budgets: vec![BudgetSpec {
            name: "calls".into(),
            per,
            measure: Measure::Calls,
            limit: 1_000_000_000_000,
            window: Duration::from_secs(10_000 * 86_400),
            chunk: Some(100_000_000),
        }],
    }
}

fn check_loop(c: &mut Criterion, name: &str, g: &Guard) {
    let run = g.start_run(RunContext::new("agent-1", "worker")).unwrap();
    let call = ToolCall::new("lookup", "{}");
    c.bench_function(name, |b| {
        b.iter(|| match g.check(black_box(&run), black_box(&call)) {
            Verdict::Allow(p) => p.complete(Outcome::success()).unwrap(),
            _ => panic!("denied"),
        })
    });
}

fn fleet(c: &mut Criterion) {
    let server;
    let url = match std::env::var("TOLLGATE_PG_URL") {
        Ok(u) => u,
        Err(_) => {
            server = ThrowawayPostgres::start().expect("a PostgreSQL to bench against");
            server.url()
        }
    };
    let schema = format!("bench_fleet_{}", std::process::id());
    let backend = PgBackend::from_url(&url, &schema, Duration::from_secs(10)).unwrap();

    check_loop(
        c,
        "fleet/check_no_fleet",
        &Guard::builder(boundary()).build().unwrap(),
    );

    let g = Guard::builder(boundary()).build().unwrap();
    let _f = KillFollower::start(
        g.clone(),
        Arc::new(PgKillSwitch::open(backend.clone()).unwrap()),
        &KillSwitchSection::default(),
    );
    check_loop(c, "fleet/check_kill_follower", &g);

    for (name, per) in [
        ("fleet/check_leased_fleet_budget", Per::Fleet),
        ("fleet/check_leased_agent_budget", Per::Agent),
    ] {
        let sec = leases(per);
        let source = Arc::new(PgLeases::open(backend.clone(), name, sec.lease_timeout).unwrap());
        let budgets =
            Arc::new(LeasedBudgets::start(&sec, source, Arc::new(SystemClock::new())).unwrap());
        let g = Guard::builder(boundary())
            .shared_budget(Arc::clone(&budgets) as _)
            .build()
            .unwrap();
        check_loop(c, name, &g);
        {
            // The lease alone: what the budget stage adds to a check between refills.
            use tollgate::guard::{SharedBudget, Units};
            let ctx = RunContext::new("agent-1", "worker");
            let one = Units {
                calls: 1,
                ..Units::default()
            };
            let take = if per == Per::Agent {
                "fleet/lease_take_agent"
            } else {
                "fleet/lease_take_fleet"
            };
            c.bench_function(take, |b| {
                b.iter(|| budgets.take(black_box(&ctx), black_box(one)).unwrap())
            });
        }
        let s = budgets.stats();
        eprintln!(
            "{name}: {} leases on the check path, {} ahead",
            s.sync_leases, s.background_leases
        );
    }
}

criterion_group!(benches, fleet);
criterion_main!(benches);
