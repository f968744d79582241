//! Failure behaviour of the fleet kill switch and leases, each tested against a real PostgreSQL:
//! database down at start, database lost mid-run, a host killed holding leases, one host
//! partitioned (its connections cut by a TCP proxy thread; other hosts unaffected), a host's
//! connection terminated by the server.
#![cfg(feature = "postgres")]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::pg::{fresh_backend, pg_url};
use parking_lot::Mutex;
use tollgate::backend::kill::{
    KillChange, KillFollower, KillScope, KillSwitchSection, KillSwitchStore,
};
use tollgate::backend::lease::{
    BudgetSpec, LeaseSource, LeasedBudgets, LeasesSection, Measure, Per,
};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::kill::PgKillSwitch;
use tollgate::backend::postgres::lease::PgLeases;
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::clock::SystemClock;
use tollgate::{DenyCode, Guard, RunContext, ToolCall, Verdict};

/// A TCP proxy in front of the database that can be cut (every connection dropped, new ones
/// refused) and restored: a host losing its network.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c2, k2) = (Arc::clone(&cut), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c2.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect((upstream.0.as_str(), upstream.1)) else {
                    continue;
                };
                {
                    let mut k = k2.lock();
                    k.push(client.try_clone().unwrap());
                    k.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for c in self.conns.lock().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }

    /// `backend`'s database and schema, reached through this proxy.
    fn backend(&self, backend: &PgBackend) -> PgBackend {
        let c = postgres::Config::from_str(&pg_url().unwrap()).unwrap();
        let mut url = format!("host=127.0.0.1 port={} connect_timeout=2", self.port);
        if let Some(u) = c.get_user() {
            url += &format!(" user={u}");
        }
        if let Some(d) = c.get_dbname() {
            url += &format!(" dbname={d}");
        }
        if let Some(p) = c.get_password() {
            url += &format!(" password={}", String::from_utf8_lossy(p));
        }
        PgBackend::from_url(&url, backend.schema(), Duration::from_secs(2)).unwrap()
    }
}

fn upstream() -> (String, u16) {
    let c = postgres::Config::from_str(&pg_url().unwrap()).unwrap();
    let host = match &c.get_hosts()[0] {
        postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        other => panic!("the fleet failure tests need a TCP database, not {other:?}"),
    };
    (host, c.get_ports().first().copied().unwrap_or(5432))
}

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool("read", ToolSpec::read())
        .role("worker", RoleSpec::new().tools(["read"]))
        .build()
        .unwrap()
}

/// The call's verdict: `None` for allowed, the deny code otherwise.
fn verdict(g: &Guard, run: &tollgate::Run) -> Option<DenyCode> {
    match g.check(run, &ToolCall::new("read", "{}")) {
        Verdict::Allow(p) => {
            p.complete(tollgate::Outcome::success()).unwrap();
            None
        }
        Verdict::Deny(d) => Some(d.code()),
        Verdict::Escalate(_) => unreachable!(),
    }
}

fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

fn kill_cfg() -> KillSwitchSection {
    KillSwitchSection {
        poll_interval: Duration::from_millis(50),
        staleness: Duration::from_millis(600),
        dir: None,
    }
}

fn budget(per: Per, limit: u64, chunk: u64) -> LeasesSection {
    LeasesSection {
        lease_timeout: Duration::from_secs(1),
        heartbeat: Duration::from_millis(200),
        refill_below_percent: 50,
        budgets: vec![BudgetSpec {
            name: "calls".into(),
            per,
            measure: Measure::Calls,
            limit,
            window: Duration::from_secs(10_000 * 86_400),
            chunk: Some(chunk),
        }],
    }
}

#[test]
fn database_down_at_start_refuses_to_start_or_denies_never_allows_unchecked() {
    let Some(backend) = fresh_backend("fail_start") else {
        return;
    };
    // Nothing listens: opening the stores refuses.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = PgBackend::from_url(
        &format!("host=127.0.0.1 port={port} user=postgres"),
        "s",
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(PgKillSwitch::open(down.clone()).is_err());
    assert!(PgLeases::open(down, "h", Duration::from_secs(1)).is_err());

    // Stores opened, then the database is gone before the guard starts.
    let proxy = Proxy::start(upstream());
    let via = proxy.backend(&backend);
    let kill: Arc<dyn KillSwitchStore> = Arc::new(PgKillSwitch::open(via.clone()).unwrap());
    let leases = Arc::new(PgLeases::open(via, "h", Duration::from_secs(1)).unwrap());
    proxy.cut();
    // A fleet budget takes its first lease at start: refused.
    assert!(
        LeasedBudgets::start(
            &budget(Per::Fleet, 100, 10),
            leases.clone(),
            Arc::new(SystemClock::new())
        )
        .is_err()
    );
    // A per-agent budget starts (it has no key yet) but its first call is denied.
    let budgets = Arc::new(
        LeasedBudgets::start(
            &budget(Per::Agent, 100, 10),
            leases,
            Arc::new(SystemClock::new()),
        )
        .unwrap(),
    );
    let g = Guard::builder(boundary())
        .shared_budget(budgets)
        .build()
        .unwrap();
    let follower = KillFollower::start(g.clone(), kill, &kill_cfg());
    let run = g.start_run(RunContext::new("a", "worker")).unwrap();
    // The follower could not confirm the switch at start: suspended before the first check.
    assert!(follower.status().stale);
    assert_eq!(verdict(&g, &run), Some(DenyCode::Suspended));
    proxy.restore();
    eventually(
        "confirmed once the database is back",
        Duration::from_secs(10),
        || !g.is_unconfirmed(),
    );
    // The budget's first lease failed during the outage; after its retry pause it leases.
    eventually(
        "leased once the database is back",
        Duration::from_secs(10),
        || verdict(&g, &run).is_none(),
    );
}

#[test]
fn database_lost_mid_run_spends_only_what_is_leased_then_denies_and_the_switch_goes_stale() {
    let Some(backend) = fresh_backend("fail_mid") else {
        return;
    };
    let proxy = Proxy::start(upstream());
    let via = proxy.backend(&backend);
    let leases = Arc::new(PgLeases::open(via.clone(), "h", Duration::from_secs(30)).unwrap());
    let mut sec = budget(Per::Fleet, 1_000, 40);
    sec.lease_timeout = Duration::from_secs(30);
    let budgets =
        Arc::new(LeasedBudgets::start(&sec, leases, Arc::new(SystemClock::new())).unwrap());
    let g = Guard::builder(boundary())
        .shared_budget(Arc::clone(&budgets) as _)
        .build()
        .unwrap();
    let _f = KillFollower::start(
        g.clone(),
        Arc::new(PgKillSwitch::open(via).unwrap()),
        &kill_cfg(),
    );
    let run = g.start_run(RunContext::new("a", "worker")).unwrap();
    for _ in 0..30 {
        assert_eq!(verdict(&g, &run), None);
    }
    // Let the background refill land, then lose the database.
    eventually("refilled", Duration::from_secs(5), || {
        budgets.local_balance("calls", "*").unwrap() >= 40
    });
    proxy.cut();
    let balance = budgets.local_balance("calls", "*").unwrap();
    let mut spent = 0;
    let first_denial = loop {
        match verdict(&g, &run) {
            None => spent += 1,
            Some(code) => break code,
        }
        assert!(spent <= balance, "spent {spent} with {balance} leased");
    };
    println!("database lost: spent {spent} of {balance} units leased, then {first_denial:?}");
    assert_eq!(spent, balance, "exactly the leased units");
    assert_eq!(first_denial, DenyCode::BudgetExhausted);
    let stale = eventually("the switch goes stale", Duration::from_secs(5), || {
        verdict(&g, &run) == Some(DenyCode::Suspended)
    });
    println!(
        "kill switch: stale -> deny {} ms after the budget ran dry (staleness bound 600 ms)",
        stale.as_millis()
    );
    assert!(g.is_unconfirmed());
    proxy.restore();
    eventually("recovered", Duration::from_secs(10), || {
        verdict(&g, &run).is_none()
    });
}

#[test]
fn a_partitioned_host_denies_and_on_reconnection_applies_what_it_missed() {
    let Some(backend) = fresh_backend("fail_partition") else {
        return;
    };
    // Host A reaches the database directly; host B through a proxy that is cut.
    let a = PgKillSwitch::open(backend.clone()).unwrap();
    let proxy = Proxy::start(upstream());
    let g = Guard::builder(boundary()).build().unwrap();
    let _f = KillFollower::start(
        g.clone(),
        Arc::new(PgKillSwitch::open(proxy.backend(&backend)).unwrap()),
        &kill_cfg(),
    );
    let x = g.start_run(RunContext::new("x", "worker")).unwrap();
    let y = g.start_run(RunContext::new("y", "worker")).unwrap();
    assert_eq!(verdict(&g, &x), None);
    proxy.cut();
    // Host A keeps working and suspends agent x meanwhile.
    a.apply(&KillChange::suspend(KillScope::Agent("x".into()), "ops"))
        .unwrap();
    eventually("B stale", Duration::from_secs(5), || {
        verdict(&g, &y) == Some(DenyCode::Suspended)
    });
    proxy.restore();
    eventually("B confirmed", Duration::from_secs(10), || {
        !g.is_unconfirmed()
    });
    assert_eq!(verdict(&g, &y), None, "the stale suspension is lifted");
    assert_eq!(
        verdict(&g, &x),
        Some(DenyCode::Suspended),
        "x's suspension arrived"
    );
}

#[test]
fn a_connection_the_server_terminates_is_replaced_before_the_switch_goes_stale() {
    let Some(backend) = fresh_backend("fail_terminate") else {
        return;
    };
    let name = format!("tg_{}", backend.schema());
    let url = format!("{} application_name={name}", pg_url().unwrap());
    let b = PgBackend::from_url(&url, backend.schema(), Duration::from_secs(5)).unwrap();
    let g = Guard::builder(boundary()).build().unwrap();
    let f = KillFollower::start(
        g.clone(),
        Arc::new(PgKillSwitch::open(b).unwrap()),
        &kill_cfg(),
    );
    let run = g.start_run(RunContext::new("x", "worker")).unwrap();
    let killed: i64 = backend
        .connect()
        .unwrap()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the follower's connection was terminated");
    // The suspension thrown after the termination arrives over the new connection.
    PgKillSwitch::open(backend.clone())
        .unwrap()
        .apply(&KillChange::suspend(KillScope::Global, "ops"))
        .unwrap();
    eventually("suspended", Duration::from_secs(5), || {
        verdict(&g, &run) == Some(DenyCode::Suspended)
    });
    assert!(
        !g.is_unconfirmed(),
        "reconnected within the staleness bound"
    );
    assert!(!f.status().stale);
}

const ROLE: &str = "TOLLGATE_FLEET_FAILURE_ROLE";

/// A host that leases, spends a little, says so, and waits to be killed.
#[test]
fn child_host() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    let url = std::env::var("TOLLGATE_PG_URL").unwrap();
    let schema = std::env::var("TOLLGATE_FLEET_SCHEMA").unwrap();
    let backend = PgBackend::from_url(&url, &schema, Duration::from_secs(10)).unwrap();
    let sec = budget(Per::Fleet, 100, 25);
    let source = Arc::new(PgLeases::open(backend, "doomed", sec.lease_timeout).unwrap());
    let budgets =
        Arc::new(LeasedBudgets::start(&sec, source, Arc::new(SystemClock::new())).unwrap());
    let g = Guard::builder(boundary())
        .shared_budget(budgets)
        .build()
        .unwrap();
    let run = g.start_run(RunContext::new("doomed", "worker")).unwrap();
    for _ in 0..5 {
        assert_eq!(verdict(&g, &run), None);
    }
    println!("holding");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_host_killed_holding_leases_has_them_reclaimed_after_the_timeout() {
    let Some(backend) = fresh_backend("fail_killed") else {
        return;
    };
    let survivor = PgLeases::open(backend.clone(), "survivor", Duration::from_secs(60)).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_host", "--nocapture", "--test-threads=1"])
        .env(ROLE, "1")
        .env("TOLLGATE_PG_URL", pg_url().unwrap())
        .env("TOLLGATE_FLEET_SCHEMA", backend.schema())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().contains("holding") {}
    child.kill().unwrap(); // SIGKILL: no shutdown, no release
    child.wait().unwrap();
    let spec = &budget(Per::Fleet, 100, 25).budgets[0];
    // Right away the dead host's lease is still outstanding (it renewed less than 1 s ago).
    let g = survivor.lease(spec, "*", 0).unwrap();
    let before = survivor.row("calls", "*", g.window).unwrap().unwrap();
    assert!(before.outstanding >= 25, "{before:?}");
    std::thread::sleep(Duration::from_millis(1_500));
    // The next lease of the key reclaims it: written off (the dead host may have spent it),
    // never handed out again.
    let g = survivor.lease(spec, "*", 100).unwrap();
    let after = survivor.row("calls", "*", g.window).unwrap().unwrap();
    println!(
        "killed host: before {before:?}, after reclaim {after:?}, survivor got {}",
        g.units
    );
    assert_eq!(after.written_off, before.outstanding);
    assert_eq!(g.units as i64, 100 - before.outstanding);
    assert_eq!(after.allocated, 100);
    assert_eq!(after.outstanding, g.units as i64);
}
