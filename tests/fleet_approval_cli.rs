//! `tollgate approvals list|approve|deny` on the shared queue in PostgreSQL.
#![cfg(all(feature = "postgres", feature = "cli"))]

mod common;

use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::json;
use tollgate::backend::postgres::approvals::PgApprovalStore;
use tollgate::boundary::Effect;
use tollgate::clock::SystemClock;
use tollgate::escalation::{ApprovalQueue, GateInput, QueueConfig, StoreKey, Submission};
use tollgate::policy::Policy;

use common::pg::{fresh_backend, pg_url};

fn doc(schema: &str) -> String {
    format!(
        r#"
[policy]
name = "fleet"
owner = "ops"
purpose = "test"
scope = "test"
liability_owner = "ops"
review_cadence = "90d"
data_handling = "none"

[tools.pay]
effect = "irreversible"

[roles.worker]
tools = ["pay"]

[escalation]
groups.ops = ["alice", "bob"]
defaults = {{ timeout = "10m", on_timeout = "deny", chain = [{{ group = "ops" }}] }}

[[escalation.rules]]
id = "payments"
reason = "Payments need ops."
tools = ["pay"]
when.amount = {{ path = "amount", over = 0 }}

[backend]
kind = "postgres"
url_env = "TG_FLEET_APPROVALS_URL"
schema = "{schema}"
"#
    )
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn an_operator_lists_and_decides_from_the_command_line() {
    let Some(b) = fresh_backend("pgq_cli") else {
        return;
    };
    let tmp = common::tempdir::temp_dir("pgq-cli", "decide");
    let dir = tmp.path();
    let policy_file = dir.join("fleet.toml");
    std::fs::write(&policy_file, doc(b.schema())).unwrap();
    let key_file = dir.join("approvals.key");
    std::fs::write(&key_file, format!("apk:{}", "cd".repeat(32))).unwrap();
    let key = StoreKey::from_key_file(&key_file).unwrap();

    // A host raises two requests.
    let policy = Policy::from_toml(&doc(b.schema())).unwrap();
    let gate = policy.escalation().unwrap();
    let store = Arc::new(PgApprovalStore::open(&b, &key, &[]).unwrap());
    let host = ApprovalQueue::open(
        store,
        Arc::new(SystemClock::new()),
        QueueConfig::for_gate(gate),
    )
    .unwrap();
    let sub = |amount: u64| {
        let args = json!({ "amount": amount });
        let esc = gate
            .check(&GateInput::new("pay", Effect::Irreversible, &args))
            .unwrap();
        Submission::new("run-9", "pay-bot", "pay", args, esc, gate.version()).triggered_by("bob")
    };
    let r1 = host.submit(sub(10)).unwrap();
    let r2 = host.submit(sub(20)).unwrap();

    let tollgate = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("approvals")
            .args(args)
            .arg("--policy")
            .arg(&policy_file)
            .arg("--key-file")
            .arg(&key_file)
            .env("TG_FLEET_APPROVALS_URL", pg_url().unwrap())
            .output()
            .unwrap()
    };
    let o = tollgate(&["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{}", text(&o));
    assert!(listed.iter().any(|l| l["id"] == r1.id.as_str()));

    // bob triggered the run: separation of duties refuses him.
    let o = tollgate(&["approve", r1.id.as_str(), "--as", "bob"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = tollgate(&["approve", r1.id.as_str(), "--as", "alice", "--reason", "ok"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = tollgate(&["deny", r2.id.as_str(), "--as", "alice", "--reason", "no"]);
    assert!(o.status.success(), "{}", text(&o));
    // Decided once: a second decision is refused.
    let o = tollgate(&["deny", r1.id.as_str(), "--as", "alice"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    host.sync().unwrap();
    assert!(
        host.status(&r1.id)
            .unwrap()
            .state
            .to_string()
            .contains("approved")
    );
    assert!(
        host.status(&r2.id)
            .unwrap()
            .state
            .to_string()
            .contains("denied")
    );
    let o = tollgate(&["list"]);
    assert!(o.stdout.is_empty(), "{}", text(&o));
}
