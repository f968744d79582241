//! Switching a deployment between files and PostgreSQL is a change of the policy document's
//! `[backend]` section and nothing else: the same worker code (this test binary, re-executed as
//! three processes) joins with `Deployment::open`, spends one shared budget exactly, stops when
//! an operator throws the shared kill switch, writes an audit chain that verifies, and returns
//! its unused leases, on both backends.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tollgate::audit::file::CheckpointKey;
use tollgate::backend::kill::{KillChange, KillScope, KillSwitchStore, open_store};
use tollgate::backend::{DeployError, Deployment};
use tollgate::escalation::{MemoryApprovalStore, StoreKey};
use tollgate::policy::{BindError, Bindings, Policy};
use tollgate::{DenyCode, Guard, Outcome, RunContext, ToolCall, Verdict};

const HOST_VAR: &str = "TOLLGATE_DEPLOY_HOST";
const POLICY_VAR: &str = "TOLLGATE_DEPLOY_POLICY";
const WORKERS: usize = 3;
const LIMIT: u64 = 120;

/// Everything but `[backend]`: the part that does not change when the deployment moves.
fn body() -> String {
    format!(
        r#"
[policy]
name = "deployment"
owner = "platform team"
purpose = "look up invoices"
scope = "test"
liability_owner = "CTO"
review_cadence = "90d"
data_handling = "none"

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

[backend.kill_switch]
poll_interval = "50ms"
staleness = "3s"

[backend.leases]
lease_timeout = "60s"
heartbeat = "5s"

[[backend.leases.budgets]]
name = "fleet-calls"
per = "fleet"
measure = "calls"
limit = {LIMIT}
window = "3650d"
chunk = 10
"#
    )
}

fn checkpoint_key() -> CheckpointKey {
    CheckpointKey::new("deploy-k1", vec![7; 32]).unwrap()
}

fn approval_key() -> StoreKey {
    StoreKey::new("deploy-a1", vec![9; 32]).unwrap()
}

/// The bindings every process uses, whatever the backend: its name and key material.
fn bindings(host: &str) -> Bindings {
    Bindings::new()
        .host(host)
        .checkpoint_key(checkpoint_key())
        .approval_key(approval_key())
}

/// One worker process: the same code for both backends.
#[test]
fn worker_process() {
    let (Ok(host), Ok(path)) = (std::env::var(HOST_VAR), std::env::var(POLICY_VAR)) else {
        return;
    };
    let policy = Policy::from_file(&path).unwrap();
    let deployment = Deployment::open(&policy, bindings(&host)).unwrap();
    let guard = deployment.guard();
    let run = guard
        .start_run(RunContext::new(host.as_str(), "worker"))
        .unwrap();
    let call = ToolCall::new("lookup", "{}");
    let mut allowed = 0u64;
    let mut exhausted = false;
    loop {
        match guard.check(&run, &call) {
            Verdict::Allow(p) => {
                p.complete(Outcome::success()).unwrap();
                allowed += 1;
            }
            Verdict::Deny(d) if d.code() == DenyCode::BudgetExhausted => {
                if !exhausted {
                    exhausted = true;
                    println!("exhausted {allowed}");
                }
            }
            Verdict::Deny(d) if d.code() == DenyCode::Suspended => {
                println!("stopped");
                break;
            }
            other => panic!("unexpected verdict {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(run);
    let report = deployment.shutdown().unwrap();
    let leases = report.leases.expect("the document has shared budgets");
    println!("returned {}", leases.returned);
}

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs three workers on the document `policy_path`, throws its kill switch, and returns each
/// worker's host name. Panics when the budget is not spent exactly or a worker does not stop.
fn run_fleet(
    policy_path: &Path,
    extra_env: &[(&str, String)],
    operator: Arc<dyn KillSwitchStore>,
) -> Vec<String> {
    let mut workers = Workers(Vec::new());
    let mut outputs = Vec::new();
    let hosts: Vec<String> = (0..WORKERS).map(|i| format!("worker-{i}")).collect();
    for host in &hosts {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "worker_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOST_VAR, host)
        .env(POLICY_VAR, policy_path)
        .stdout(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        workers.0.push(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        outputs.push(rx);
    }
    let next = |i: usize, prefix: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match outputs[i].recv_timeout(left) {
                // The harness prints `test worker_process ... ` before the test's own output,
                // on the same line.
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at + prefix.len()..].trim().to_owned();
                    }
                }
                Err(e) => panic!("worker {i}: no `{prefix}` line ({e})"),
            }
        }
    };
    let mut total = 0;
    for i in 0..WORKERS {
        total += next(i, "exhausted ").parse::<u64>().unwrap();
    }
    assert_eq!(
        total, LIMIT,
        "the workers together spent exactly the budget"
    );

    // The operator throws the kill switch.
    let thrown = Instant::now();
    operator
        .apply(&KillChange::suspend(KillScope::Global, "operator").reason("test"))
        .unwrap();
    for i in 0..WORKERS {
        next(i, "stopped");
    }
    let took = thrown.elapsed();
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    let mut returned = 0;
    for i in 0..WORKERS {
        returned += next(i, "returned ").parse::<u64>().unwrap();
    }
    // The budget was spent: nothing was left to give back.
    assert_eq!(returned, 0);
    for c in &mut workers.0 {
        assert!(c.wait().unwrap().success());
    }
    workers.0.clear();
    hosts
}

/// The document on the files backend, sharing `dir`.
fn files_policy(dir: &Path) -> Policy {
    Policy::from_toml(&format!(
        "{}\n[backend]\nkind = \"files\"\ndir = {:?}\n",
        body(),
        dir
    ))
    .unwrap()
}

fn write_policy(dir: &Path, backend: &str) -> PathBuf {
    let path = dir.join("policy.toml");
    std::fs::write(&path, format!("{}\n{backend}", body())).unwrap();
    path
}

#[test]
fn three_processes_share_budget_kill_switch_and_audit_on_files() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let path = write_policy(
        dir.path(),
        &format!("[backend]\nkind = \"files\"\ndir = {:?}\n", state),
    );
    let policy = Policy::from_file(&path).unwrap();
    let operator = open_store(policy.document().backend.as_ref().unwrap()).unwrap();
    let hosts = run_fleet(&path, &[], operator);
    for host in hosts {
        let report =
            tollgate::audit::file::verify_keyed(state.join("audit").join(&host), &checkpoint_key())
                .unwrap_or_else(|e| panic!("{host}'s chain: {e}"));
        // run_started + (decision + outcome) per allowed call + denials + run_finished.
        assert!(report.records > 3, "{host}: {report:?}");
    }
}

#[cfg(feature = "postgres")]
#[test]
fn three_processes_share_budget_kill_switch_and_audit_on_postgres() {
    let Some(backend) = common::pg::fresh_backend("deploy") else {
        return;
    };
    let url = common::pg::pg_url().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(
        dir.path(),
        &format!(
            "[backend]\nkind = \"postgres\"\nurl_env = \"TOLLGATE_DEPLOY_PG_URL\"\nschema = {:?}\n",
            backend.schema()
        ),
    );
    let operator =
        Arc::new(tollgate::backend::postgres::kill::PgKillSwitch::open(backend.clone()).unwrap());
    let hosts = run_fleet(&path, &[("TOLLGATE_DEPLOY_PG_URL", url)], operator);
    let mut client = backend.connect().unwrap();
    let report = tollgate::backend::postgres::audit::verify(
        &mut client,
        backend.schema(),
        &[checkpoint_key()],
    )
    .unwrap();
    assert_eq!(report.writers, hosts.len() as u64, "{report:?}");
    assert!(report.events > 3 * hosts.len() as u64, "{report:?}");
}

#[test]
fn a_guard_built_without_its_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = files_policy(dir.path());
    let e = Guard::from_policy(
        &policy,
        Bindings::new()
            .audit(Arc::new(tollgate::audit::MemorySink::new()))
            .approvals(Arc::new(MemoryApprovalStore::new())),
    )
    .unwrap_err();
    assert!(matches!(e, BindError::BackendNotOpened), "{e}");
}

#[test]
fn a_part_bound_twice_or_a_missing_key_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let policy = files_policy(dir.path());
    let e = Deployment::open(
        &policy,
        bindings("w").audit(Arc::new(tollgate::audit::MemorySink::new())),
    )
    .unwrap_err();
    assert!(matches!(e, DeployError::BoundTwice { .. }), "{e}");
    let e = Deployment::open(
        &policy,
        Bindings::new().host("w").checkpoint_key(checkpoint_key()),
    )
    .unwrap_err();
    assert!(
        matches!(e, DeployError::MissingBinding { .. }) && e.to_string().contains("approval_key"),
        "{e}"
    );
    let e = Deployment::open(&policy, bindings("..")).unwrap_err();
    assert!(matches!(e, DeployError::BadHost(_)), "{e}");
}

#[test]
fn a_reload_cannot_change_the_backend_it_was_opened_with() {
    let dir = tempfile::tempdir().unwrap();
    let policy = files_policy(dir.path());
    let d = Deployment::open(&policy, bindings("w1")).unwrap();
    let guard = d.guard();
    let before = guard.policy_version();
    // The leased budget lowered: the leases were opened from the old section, so the new limit
    // would be recorded as in force while the old one is spent.
    let text = format!(
        "{}\n[backend]\nkind = \"files\"\ndir = {:?}\n",
        body(),
        dir.path()
    );
    let lowered = text.replacen(&format!("limit = {LIMIT}"), "limit = 20", 1);
    assert_ne!(lowered, text);
    let err = guard
        .reload(&Policy::from_toml(&lowered).unwrap(), "ops")
        .unwrap_err();
    assert!(
        matches!(err, tollgate::guard::ReloadError::Fixed("backend")),
        "{err}"
    );
    assert_eq!(guard.policy_version(), before, "nothing was swapped");
    // The same section with another tool limit reloads.
    let edited = text.replacen("max = 500", "max = 400", 1);
    assert_ne!(edited, text);
    guard
        .reload(&Policy::from_toml(&edited).unwrap(), "ops")
        .unwrap();
    assert_ne!(guard.policy_version(), before);
    d.shutdown().unwrap();
}

#[test]
fn approvals_on_the_files_backend_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policy = files_policy(dir.path());
    let id = {
        let d = Deployment::open(&policy, bindings("w1")).unwrap();
        let run = d
            .guard()
            .start_run(RunContext::new("bot", "worker"))
            .unwrap();
        let Verdict::Escalate(request) = d
            .guard()
            .check(&run, &ToolCall::new("refund", r#"{"amount":250}"#))
        else {
            panic!("a refund over 100 escalates");
        };
        let id = request.id.clone();
        drop(run);
        d.shutdown().unwrap();
        id
    };
    // The same process name after a restart finds its queue again.
    let d = Deployment::open(&policy, bindings("w1")).unwrap();
    let queue = d.guard().approvals().unwrap();
    let pending = queue.pending().unwrap();
    assert_eq!(pending.len(), 1, "the request was replayed from the file");
    assert_eq!(pending[0].id, id);
    d.shutdown().unwrap();
}

#[test]
fn explain_and_replay_of_a_deployed_document_stay_offline() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let policy = files_policy(&state);
    let e = policy.explain(&tollgate::policy::Probe::new(
        "worker",
        "refund",
        r#"{"amount":250}"#,
    ));
    assert_eq!(e.verdict, "escalate", "{e}");
    let e = policy.explain(&tollgate::policy::Probe::new("worker", "lookup", "{}"));
    assert_eq!(e.verdict, "allow", "{e}");
    // Nothing of the deployment was opened or created by the dry runs.
    assert!(!state.exists(), "explain touched {}", state.display());

    // Replay the trail one process of the deployment wrote, under the same document.
    let d = Deployment::open(&policy, bindings("w1")).unwrap();
    let run = d
        .guard()
        .start_run(RunContext::new("bot", "worker"))
        .unwrap();
    for _ in 0..3 {
        let Verdict::Allow(p) = d.guard().check(&run, &ToolCall::new("lookup", "{}")) else {
            panic!("a lookup is allowed");
        };
        p.complete(Outcome::success()).unwrap();
    }
    drop(run);
    d.shutdown().unwrap();
    let leases = std::fs::read(state.join("leases").join("leases.json")).unwrap();
    let report = policy
        .replay(state.join("audit").join("w1"))
        .checkpoint_key(checkpoint_key())
        .run()
        .unwrap();
    assert!(report.records >= 3, "{report:?}");
    assert_eq!(report.runs, 1, "{report:?}");
    // The replay took no lease of the deployment's budget.
    assert_eq!(
        std::fs::read(state.join("leases").join("leases.json")).unwrap(),
        leases
    );
}
