//! The `tollgate policy` command line: check, explain, diff, matrix, keygen, sign and verify,
//! run as a real process.
#![cfg(feature = "cli")]

use std::path::Path;
use std::process::{Command, Output};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

const CLINIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policies/clinic.toml");

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("the tollgate binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("cli", name)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn check_prints_version_and_warnings_or_the_located_error() {
    let o = tollgate(&["policy", "check", CLINIC]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("ok: `clinic-assistant 2026-11`, 6 tools, 3 roles, version "),
        "{out}"
    );
    assert!(
        out.contains(":74:1: warning: `roles.front_desk_agent.tools`"),
        "{out}"
    );
    assert_eq!(
        tollgate(&["policy", "check", CLINIC, "--deny-warnings"])
            .status
            .code(),
        Some(1)
    );

    let tmp = temp_dir("check");
    let dir = tmp.path();
    let text = std::fs::read_to_string(CLINIC).unwrap();
    let bad = write(
        dir,
        "bad.toml",
        &text.replace("provider = \"ehr\"", "provider = \"vault\""),
    );
    let o = tollgate(&["policy", "check", &bad]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    let line = text[..text.find("provider = \"ehr\"").unwrap()]
        .matches('\n')
        .count()
        + 1;
    assert!(
        err.starts_with(&format!("{bad}:{line}:1: error: `credentials.grants[0].provider`: unknown credential provider `vault`")),
        "{err}"
    );
    // Usage errors exit 2.
    assert_eq!(tollgate(&["policy", "check"]).status.code(), Some(2));
}

#[test]
fn explain_prints_each_stage_and_the_verdict() {
    let o = tollgate(&[
        "policy",
        "explain",
        CLINIC,
        "--role",
        "front_desk_agent",
        "--tool",
        "issue_refund",
        "--compartment",
        "P-000123",
        "--args",
        r#"{"patient_id":"P-000123","invoice_id":"INV-00001234","refund":{"amount":250,"currency":"USD"},"card_token":"tok_1"}"#,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for stage in [
        "kill switch",
        "circuit breaker",
        "boundary",
        "budgets/limits",
        "escalation",
        "credentials",
    ] {
        assert!(out.contains(stage), "{stage} missing from {out}");
    }
    assert!(
        out.contains("escalation       ESCALATE [refund-over-100]"),
        "{out}"
    );
    assert!(out.contains("verdict: escalate [refund-over-100]"), "{out}");
}

#[test]
fn diff_lists_semantic_changes() {
    let tmp = temp_dir("diff");
    let dir = tmp.path();
    let text = std::fs::read_to_string(CLINIC).unwrap();
    let new = write(
        dir,
        "new.toml",
        &text.replace("over = 100", "over = 500").replace(
            "clearance = \"public\"\ntools = [\"search_clinic_faq\"]",
            "clearance = \"phi\"\ntools = [\"search_clinic_faq\", \"lookup_appointments\"]",
        ),
    );
    let o = tollgate(&["policy", "diff", CLINIC, &new]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("gained   roles.faq_bot x tools.lookup_appointments"),
        "{out}"
    );
    assert!(
        out.contains(
            "changed  escalation.rules[refund-over-100].when.amount.over: \"100\" -> \"500\""
        ),
        "{out}"
    );
    assert_eq!(
        tollgate(&["policy", "diff", CLINIC, &new, "--exit-code"])
            .status
            .code(),
        Some(1)
    );
    let o = tollgate(&["policy", "diff", CLINIC, CLINIC, "--exit-code"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("no differences"));
}

#[test]
fn matrix_writes_every_format() {
    let tmp = temp_dir("matrix");
    let dir = tmp.path();
    for (fmt, needle) in [
        ("md", "# Access-control matrix"),
        ("csv", "role,tool,access"),
        ("html", "<!DOCTYPE html>"),
    ] {
        let out = dir.join(format!("m.{fmt}"));
        let o = tollgate(&[
            "policy",
            "matrix",
            CLINIC,
            "--format",
            fmt,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            std::fs::read_to_string(&out).unwrap().starts_with(needle),
            "{fmt}"
        );
    }
}

#[test]
fn keygen_sign_verify_round_trip() {
    let tmp = temp_dir("sign");
    let dir = tmp.path();
    let policy = write(
        dir,
        "clinic.toml",
        &std::fs::read_to_string(CLINIC).unwrap(),
    );
    let (a, b) = (dir.join("legal.pem"), dir.join("compliance.pem"));
    for k in [&a, &b] {
        let o = tollgate(&["policy", "keygen", "--out", k.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(k).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
    let pub_a = format!("{}.pub", a.display());
    let pub_b = format!("{}.pub", b.display());
    let verify = |threshold: &str| {
        tollgate(&[
            "policy",
            "verify",
            &policy,
            "--trust",
            &pub_a,
            "--trust",
            &pub_b,
            "--threshold",
            threshold,
        ])
    };
    let o = tollgate(&[
        "policy",
        "sign",
        &policy,
        "--key",
        a.to_str().unwrap(),
        "--reviewer",
        "Legal",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(verify("1").status.success());
    let o = verify("2");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("1 valid signature(s) from trusted keys, 2 required"),
        "{}",
        stderr(&o)
    );
    let o = tollgate(&[
        "policy",
        "sign",
        &policy,
        "--key",
        b.to_str().unwrap(),
        "--reviewer",
        "Compliance",
    ]);
    assert!(o.status.success());
    let o = verify("2");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("signed by Legal, Compliance"),
        "{}",
        stdout(&o)
    );
    // Changing the document invalidates the signatures.
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, text.replace("max_calls = 60", "max_calls = 6000")).unwrap();
    let o = verify("1");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("signed another version"),
        "{}",
        stderr(&o)
    );
    // keygen never overwrites a key.
    assert_eq!(
        tollgate(&["policy", "keygen", "--out", a.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
}
