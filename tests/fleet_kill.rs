//! The shared kill switch across processes: a suspension thrown by one process ("host A")
//! reaches a guard in another process ("host B"), which denies; propagation measured over many
//! trials (p50, p99 printed; only a generous sanity bound is asserted). PostgreSQL (LISTEN/NOTIFY)
//! and the files backend (polling) both.
#![cfg(feature = "postgres")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::pg::fresh_backend;
use tollgate::backend::kill::{
    FileKillSwitch, KillChange, KillError, KillFollower, KillScope, KillSwitchSection,
    KillSwitchStore,
};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::kill::PgKillSwitch;
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::call::RunId;
use tollgate::{Guard, RunContext, ToolCall, Verdict};

const ROLE: &str = "TOLLGATE_FLEET_KILL_ROLE";
const TRIALS: usize = 200;

fn guard() -> Guard {
    let boundary = ActionBoundary::builder()
        .tool("read", ToolSpec::read())
        .role("worker", RoleSpec::new().tools(["read"]))
        .build()
        .unwrap();
    Guard::builder(boundary).build().unwrap()
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn allowed(g: &Guard, run: &tollgate::Run) -> bool {
    match g.check(run, &ToolCall::new("read", "{}")) {
        Verdict::Allow(p) => {
            let _ = p.complete(tollgate::Outcome::success());
            true
        }
        _ => false,
    }
}

/// Host B: follows the store named by the environment and reports, per trial, when its guard
/// first allows ("ready") and when it first denies ("denied <unix nanos>").
#[test]
fn child_host() {
    let Ok(kind) = std::env::var(ROLE) else {
        return;
    };
    let store: Arc<dyn KillSwitchStore> = match kind.as_str() {
        "postgres" => {
            let url = std::env::var("TOLLGATE_PG_URL").unwrap();
            let schema = std::env::var("TOLLGATE_FLEET_SCHEMA").unwrap();
            let b = PgBackend::from_url(&url, &schema, Duration::from_secs(10)).unwrap();
            Arc::new(PgKillSwitch::open(b).unwrap())
        }
        _ => Arc::new(FileKillSwitch::open(std::env::var("TOLLGATE_FLEET_DIR").unwrap()).unwrap()),
    };
    let poll = std::env::var("TOLLGATE_FLEET_POLL_MS")
        .unwrap()
        .parse()
        .unwrap();
    let cfg = KillSwitchSection {
        poll_interval: Duration::from_millis(poll),
        staleness: Duration::from_secs(30),
        dir: None,
    };
    let g = guard();
    let _follower = KillFollower::start(g.clone(), store, &cfg);
    let run = g
        .start_run_with_id(
            RunContext::new("worker-b", "worker"),
            Some(RunId::new("run-b")),
        )
        .unwrap();
    let trials: usize = std::env::var("TOLLGATE_FLEET_TRIALS")
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..trials {
        while !allowed(&g, &run) {
            std::thread::sleep(Duration::from_micros(100));
        }
        println!("ready {i}");
        while allowed(&g, &run) {
            std::thread::sleep(Duration::from_micros(100));
        }
        println!("denied {i} {}", unix_nanos());
    }
}

fn spawn_host(envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_host", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Throws the switch `TRIALS` times from this process and returns the propagation latencies
/// (suspension issued here -> the other process's guard denies), sorted.
fn measure(store: &dyn KillSwitchStore, child: &mut Child, scopes: &[KillScope]) -> Vec<Duration> {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = |prefix: &str| loop {
        let line = lines
            .next()
            .expect("host B ended early")
            .expect("host B's output");
        // The harness prints `test child_host ... ` before the first line, without a newline.
        if let Some(at) = line.find(prefix) {
            return line[at..].to_owned();
        }
    };
    let mut latencies = Vec::with_capacity(TRIALS);
    for i in 0..TRIALS {
        assert_eq!(next("ready "), format!("ready {i}"));
        let scope = scopes[i % scopes.len()].clone();
        let t0 = unix_nanos();
        let applied = store
            .apply(&KillChange::suspend(scope.clone(), "host-a").reason("propagation trial"))
            .unwrap();
        assert!(applied.changed);
        let line = next("denied ");
        let t1: u128 = line.rsplit(' ').next().unwrap().parse().unwrap();
        latencies.push(Duration::from_nanos(t1.saturating_sub(t0) as u64));
        store.apply(&KillChange::resume(scope, "host-a")).unwrap();
    }
    // Read to the end: host B still prints its test result.
    for _ in lines {}
    latencies.sort();
    latencies
}

fn report(what: &str, l: &[Duration]) -> (Duration, Duration) {
    let p = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)];
    let (p50, p99) = (p(0.50), p(0.99));
    println!(
        "kill switch propagation ({what}, {} trials, across processes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        l[l.len() - 1].as_secs_f64() * 1e3
    );
    (p50, p99)
}

fn scopes() -> Vec<KillScope> {
    vec![
        KillScope::Global,
        KillScope::Agent("worker-b".into()),
        KillScope::Run("run-b".into()),
    ]
}

#[test]
fn a_suspension_on_host_a_reaches_host_b_through_notify_p50_p99() {
    let Some(backend) = fresh_backend("kill_prop") else {
        return;
    };
    let store = PgKillSwitch::open(backend.clone()).unwrap();
    // A poll interval far above the measured latencies: what is measured is NOTIFY.
    let mut child = spawn_host(&[
        (ROLE, "postgres".into()),
        ("TOLLGATE_PG_URL", common::pg::pg_url().unwrap()),
        ("TOLLGATE_FLEET_SCHEMA", backend.schema().to_owned()),
        ("TOLLGATE_FLEET_POLL_MS", "5000".into()),
        ("TOLLGATE_FLEET_TRIALS", TRIALS.to_string()),
    ]);
    let l = measure(&store, &mut child, &scopes());
    assert!(child.wait().unwrap().success());
    let (_, p99) = report("PostgreSQL LISTEN/NOTIFY, poll 5 s", &l);
    // Sanity only: well under the poll interval, so notifications did the work.
    assert!(p99 < Duration::from_millis(2500), "p99 {p99:?}");
    let log: i64 = backend
        .connect()
        .unwrap()
        .query_one(
            &format!("SELECT count(*) FROM {}.kill_log", backend.schema()),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(log, 2 * TRIALS as i64, "every change is in kill_log");
}

#[test]
fn a_suspension_in_the_state_file_reaches_another_process_p50_p99() {
    let tmp = common::tempdir::temp_dir("fleet-kill", "files");
    let dir = tmp.path();
    let store = FileKillSwitch::open(dir).unwrap();
    let mut child = spawn_host(&[
        (ROLE, "files".into()),
        ("TOLLGATE_FLEET_DIR", dir.display().to_string()),
        ("TOLLGATE_FLEET_POLL_MS", "10".into()),
        ("TOLLGATE_FLEET_TRIALS", TRIALS.to_string()),
    ]);
    let t = Instant::now();
    let l = measure(&store, &mut child, &scopes());
    assert!(child.wait().unwrap().success());
    let (_, p99) = report("files, poll 10 ms", &l);
    assert!(p99 < Duration::from_millis(2500), "p99 {p99:?}");
    assert!(t.elapsed() < Duration::from_secs(120));
}

/// Review finding: the kill tables dropped while the fleet was suspended, then any process
/// opening the store recreated them with revision 0 and every follower applied that: the fleet
/// resumed. Now the state is not re-seeded (`kill_created` records it was created), and the
/// follower refuses a lower revision anyway.
#[test]
fn dropped_kill_tables_are_not_reseeded_and_the_fleet_stays_suspended() {
    let Some(b) = fresh_backend("kill_drop") else {
        return;
    };
    let store = Arc::new(PgKillSwitch::open(b.clone()).unwrap());
    let g = guard();
    let cfg = KillSwitchSection {
        poll_interval: Duration::from_millis(50),
        staleness: Duration::from_millis(400),
        dir: None,
    };
    let f = KillFollower::start(g.clone(), store.clone(), &cfg);
    let run = g.start_run(RunContext::new("bot", "worker")).unwrap();
    assert!(allowed(&g, &run));
    store
        .apply(&KillChange::suspend(KillScope::Global, "ic"))
        .unwrap();
    let until = |f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    until(&|| !allowed(&g, &run));
    let s = b.schema();
    let mut c = b.connect().unwrap();
    c.batch_execute(&format!(
        "DROP TABLE {s}.kill_switch, {s}.kill_meta, {s}.kill_log"
    ))
    .unwrap();
    until(&|| f.status().stale);
    // Any process opening the store (a host starting, `tollgate kill status`).
    let again = PgKillSwitch::open(b.clone()).unwrap();
    assert!(matches!(again.load(), Err(KillError::Missing(_))));
    std::thread::sleep(Duration::from_millis(700));
    assert!(!allowed(&g, &run), "the fleet stays suspended");
    // Re-seeded by hand at revision 0 (or restored from an old copy): refused all the same.
    c.batch_execute(&format!("INSERT INTO {s}.kill_meta VALUES (1, 0)"))
        .unwrap();
    assert_eq!(again.load().unwrap().revision, 0);
    until(&|| f.status().regressed_from == Some(1));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!allowed(&g, &run), "revision 0 is not applied");
    assert!(f.status().stale);
}
