//! `tollgate audit verify|query --policy FILE`: the trail in the PostgreSQL database a policy
//! document's `[backend]` names.
#![cfg(all(feature = "postgres", feature = "cli"))]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use tollgate::audit::file::CheckpointKey;
use tollgate::audit::{AuditEvent, AuditSink, EventKind};
use tollgate::backend::postgres::PgBackend;
use tollgate::backend::postgres::audit::{PgAuditConfig, PgAuditSink};

use common::pg::{fresh_backend, pg_url};

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

struct Fixture {
    /// The policy and key files, removed on drop.
    dir: tempfile::TempDir,
    backend: PgBackend,
}

fn fixture(label: &str) -> Option<Fixture> {
    let backend = fresh_backend(label)?;
    let dir = common::tempdir::temp_dir("fleet-audit-cli", label);
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "{DOC}\n[backend]\nkind = \"postgres\"\nurl_env = \"TG_FLEET_CLI_URL\"\nschema = \"{}\"\n",
            backend.schema()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("k.key"),
        format!("cli-k:{}", "ab".repeat(32)),
    )
    .unwrap();
    Some(Fixture { dir, backend })
}

fn key() -> CheckpointKey {
    CheckpointKey::from_hex("cli-k", &"ab".repeat(32)).unwrap()
}

fn tollgate(f: &Fixture, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .arg("--policy")
        .arg(f.dir.path().join("policy.toml"))
        .env("TG_FLEET_CLI_URL", pg_url().unwrap())
        .output()
        .unwrap()
}

fn write(f: &Fixture, writer: &str, n: u64) {
    let (sink, _) =
        PgAuditSink::open(&f.backend, PgAuditConfig::new(writer).checkpoint_key(key())).unwrap();
    for i in 1..=n {
        let tool_free = EventKind::RunFinished {
            duration: Duration::from_millis(i),
        };
        sink.record(&AuditEvent::new(
            i,
            SystemTime::now(),
            None,
            None,
            tool_free,
        ))
        .unwrap();
    }
    sink.close().unwrap();
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verify_from_postgres_passes_then_names_the_tampered_record() {
    let Some(f) = fixture("pgcli_verify") else {
        return;
    };
    write(&f, "host-a", 10);
    write(&f, "host-b", 5);
    let key_file = f.dir.path().join("k.key");
    let key_arg = key_file.to_str().unwrap();
    let o = tollgate(&f, &["audit", "verify", "--key-file", key_arg]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("15 events"), "{}", text(&o));
    assert!(text(&o).contains("MACs verified"), "{}", text(&o));

    let mut c = f.backend.connect().unwrap();
    c.batch_execute(&format!(
        "UPDATE {}.audit_records SET event = convert_to(replace(convert_from(event, 'UTF8'), \
         'run_finished', 'run_finishe_'), 'UTF8') WHERE writer = 'host-b' AND seq = 4",
        f.backend.schema()
    ))
    .unwrap();
    let o = tollgate(&f, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("audit writer `host-b`, record seq 4"),
        "{}",
        text(&o)
    );
    // query verifies first, and refuses to print from a tampered trail.
    let o = tollgate(&f, &["audit", "query", "--kind", "run_finished"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn query_from_postgres_filters_like_the_file_one() {
    let Some(f) = fixture("pgcli_query") else {
        return;
    };
    write(&f, "host-a", 7);
    let o = tollgate(&f, &["audit", "query", "--kind", "run_finished"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert!(lines.iter().all(|l| l["writer"] == "host-a"));
    let o = tollgate(&f, &["audit", "query", "--kind", "decision"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn repair_refuses_a_postgres_trail() {
    let Some(f) = fixture("pgcli_repair") else {
        return;
    };
    let o = tollgate(&f, &["audit", "repair"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
