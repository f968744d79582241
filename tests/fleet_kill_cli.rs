//! `tollgate kill suspend|resume|status`, run as a real process against the files backend and
//! PostgreSQL, with a guard in this process following the same switch.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::backend::kill::{FileKillSwitch, KillFollower, KillSwitchSection, KillSwitchStore};
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::{Guard, RunContext, ToolCall, Verdict};

const DOC: &str = r#"
[policy]
name = "fleet"
owner = "ops"
purpose = "test"
scope = "test"
liability_owner = "ops"
review_cadence = "90d"
data_handling = "none"

[tools.read]
effect = "read"

[roles.worker]
tools = ["read"]
"#;

fn tollgate(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("the tollgate binary runs")
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> tempfile::TempDir {
    common::tempdir::temp_dir("kill-cli", name)
}

fn guard() -> Guard {
    let boundary = ActionBoundary::builder()
        .tool("read", ToolSpec::read())
        .role("worker", RoleSpec::new().tools(["read"]))
        .build()
        .unwrap();
    Guard::builder(boundary).build().unwrap()
}

fn allowed(g: &Guard, run: &tollgate::Run) -> bool {
    match g.check(run, &ToolCall::new("read", "{}")) {
        Verdict::Allow(p) => {
            p.complete(tollgate::Outcome::success()).unwrap();
            true
        }
        _ => false,
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn follow(g: &Guard, store: Arc<dyn KillSwitchStore>) -> KillFollower {
    let cfg = KillSwitchSection {
        poll_interval: Duration::from_millis(5),
        staleness: Duration::from_secs(10),
        dir: None,
    };
    KillFollower::start(g.clone(), store, &cfg)
}

/// Suspends agent `bot` from the CLI, sees the guard deny, checks `status`, resumes.
fn round_trip(policy: &Path, envs: &[(&str, &str)], g: &Guard) {
    let policy = policy.to_str().unwrap();
    let run = g.start_run(RunContext::new("bot", "worker")).unwrap();
    let other = g.start_run(RunContext::new("other", "worker")).unwrap();
    assert!(allowed(g, &run));

    let o = tollgate(
        &[
            "kill",
            "suspend",
            "--agent",
            "bot",
            "--policy",
            policy,
            "--by",
            "alice",
            "--reason",
            "incident 42",
        ],
        envs,
    );
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("suspended agent bot (revision 1)"),
        "{}",
        out(&o)
    );
    eventually("the guard follows the CLI", || !allowed(g, &run));
    assert!(allowed(g, &other));

    let o = tollgate(
        &["kill", "suspend", "--agent", "bot", "--policy", policy],
        envs,
    );
    assert!(
        out(&o).contains("already suspended (by alice at "),
        "{}",
        out(&o)
    );

    let o = tollgate(&["kill", "status", "--policy", policy], envs);
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("revision 1"), "{text}");
    assert!(text.contains("agent bot: suspended by alice at "), "{text}");
    assert!(text.contains("incident 42"), "{text}");

    let o = tollgate(
        &[
            "kill", "resume", "--agent", "bot", "--policy", policy, "--by", "bob",
        ],
        envs,
    );
    assert!(
        out(&o).contains("resumed agent bot (revision 2)"),
        "{}",
        out(&o)
    );
    eventually("resumed", || allowed(g, &run));
    let o = tollgate(&["kill", "status", "--policy", policy], envs);
    assert!(out(&o).contains("nothing suspended"), "{}", out(&o));

    let o = tollgate(&["kill", "suspend", "--all", "--policy", policy], envs);
    assert!(o.status.success(), "{}", out(&o));
    eventually("global", || !allowed(g, &run) && !allowed(g, &other));
}

#[test]
fn the_cli_throws_the_file_switch_a_guard_in_another_process_follows() {
    let tmp = temp_dir("files");
    let dir = tmp.path();
    let state = dir.join("kill");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "{DOC}\n[backend.kill_switch]\ndir = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    let g = guard();
    let _f = follow(&g, Arc::new(FileKillSwitch::open(&state).unwrap()));
    round_trip(&policy, &[], &g);
}

#[test]
fn the_cli_refuses_two_scopes_and_a_files_backend_without_a_directory() {
    let tmp = temp_dir("usage");
    let dir = tmp.path();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, DOC).unwrap();
    let p = policy.to_str().unwrap();
    let o = tollgate(
        &["kill", "suspend", "--all", "--agent", "x", "--policy", p],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let o = tollgate(&["kill", "suspend", "--policy", p], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let o = tollgate(&["kill", "status", "--policy", p], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("[backend.kill_switch] dir"), "{}", out(&o));
}

#[cfg(feature = "postgres")]
#[test]
fn the_cli_throws_the_postgres_switch_a_guard_follows() {
    use tollgate::backend::postgres::kill::PgKillSwitch;
    let Some(backend) = common::pg::fresh_backend("kill_cli") else {
        return;
    };
    let tmp = temp_dir("pg");
    let dir = tmp.path();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "{DOC}\n[backend]\nkind = \"postgres\"\nurl_env = \"TG_KILL_CLI_URL\"\nschema = \"{}\"\n",
            backend.schema()
        ),
    )
    .unwrap();
    let url = common::pg::pg_url().unwrap();
    let g = guard();
    let _f = follow(&g, Arc::new(PgKillSwitch::open(backend).unwrap()));
    round_trip(&policy, &[("TG_KILL_CLI_URL", &url)], &g);
    // Without the connection string: an error naming the variable, nothing thrown.
    let o = tollgate(
        &["kill", "status", "--policy", policy.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("TG_KILL_CLI_URL"), "{}", out(&o));
}
