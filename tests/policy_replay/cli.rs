//! `tollgate policy replay`, run as a real process: the text and JSON reports, a tampered
//! log, bad input, and progress on a pipe and on a terminal.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

use super::log_integrity::forge_payment;
use super::*;

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env_remove("TOLLGATE_PROGRESS")
        .env_remove("TOLLGATE_PROGRESS_INTERVAL")
        .output()
        .expect("the tollgate binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A recorded session in `dir/log` and the candidate B in `dir/b.toml`.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("log");
    std::fs::create_dir_all(&log).unwrap();
    record_session(&log);
    let b = dir.join("b.toml");
    std::fs::write(&b, policy_text(&B, "")).unwrap();
    (log, b)
}

#[test]
fn prints_the_report_as_text_and_json() {
    let dir = temp_dir("cli");
    let (log, b) = setup(dir.path());
    let expected = policy(&B, "").replay(&log).run().unwrap();
    let c4 = &expected.examples_of(ReplayChange::WouldBlock)[0];

    let o = tollgate(&["policy", "replay", "--log", s(&log), "--policy", s(&b)]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    // Standard error is a pipe: no progress, nothing at all.
    assert_eq!(err, "");
    assert!(out.starts_with("replayed "), "{out}");
    assert!(out.contains("hash chain verified while reading"), "{out}");
    assert!(out.contains("would block                       4"), "{out}");
    assert!(
        out.contains(&format!(
            "  seq {} run r1 pay (call c4): allow -> deny:argument_out_of_range",
            c4.seq
        )),
        "{out}"
    );
    assert!(out.contains("UNCERTAIN (first 2 of 2)"), "{out}");
    assert!(
        out.contains("total: 6 of 18 decisions would change; 2 more cannot be determined"),
        "{out}"
    );

    // JSON, with the spelling (POLICY --audit DIR): the library's report.
    let o = tollgate(&[
        "policy",
        "replay",
        s(&b),
        "--audit",
        s(&log),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["decisions"], 18);
    assert_eq!(
        json["changes"],
        serde_json::to_value(expected.changes).unwrap()
    );
    assert_eq!(json["uncertain"]["would_escalate"], 1);
    assert_eq!(json["per_tool"]["pay"]["would_block"], 3);
    assert_eq!(json["examples"]["would_block"][0]["seq"], c4.seq);
    assert_eq!(
        json["candidate_version"],
        policy(&B, "").version().to_string()
    );

    // A segment file stands for its directory; fewer examples when asked.
    let seg = log.join("audit-000001.jsonl");
    let o = tollgate(&[
        "policy",
        "replay",
        "--log",
        s(&seg),
        "--policy",
        s(&b),
        "--examples",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["examples"]["would_block"].as_array().unwrap().len(), 1);
    assert_eq!(json["changes"]["would_block"], 4);
}

#[test]
fn a_tampered_log_exits_1_naming_the_record() {
    let dir = temp_dir("cli-tampered");
    let (log, b) = setup(dir.path());
    let (seq, line) = forge_payment(&log);
    let o = tollgate(&["policy", "replay", "--log", s(&log), "--policy", s(&b)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(text(&o.stdout), "", "no report from a tampered log");
    assert!(
        err.starts_with("error: the audit log cannot be replayed: "),
        "{err}"
    );
    assert!(
        err.contains(&format!("audit-000001.jsonl line {line} "))
            && err.contains(&format!("seq {seq}: record modified")),
        "{err}"
    );
}

#[test]
fn bad_input_exits_non_zero_with_a_clear_message() {
    let dir = temp_dir("cli-bad");
    let (log, b) = setup(dir.path());

    // An invalid candidate: exit 1, located.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        policy_text(&A, "").replace("max_repeats = 2", "max_repeats = 0"),
    )
    .unwrap();
    let o = tollgate(&["policy", "replay", "--log", s(&log), "--policy", s(&bad)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with(&format!("{}:", bad.display())), "{err}");
    assert!(err.contains("max_repeats"), "{err}");

    // No such log: a usage error.
    let missing = dir.path().join("nowhere");
    let o = tollgate(&["policy", "replay", "--log", s(&missing), "--policy", s(&b)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no such file or directory"),
        "{}",
        text(&o.stderr)
    );

    // No policy, or two.
    let o = tollgate(&["policy", "replay", "--log", s(&log)]);
    assert_eq!(o.status.code(), Some(2));
    let o = tollgate(&[
        "policy",
        "replay",
        s(&b),
        "--policy",
        s(&b),
        "--log",
        s(&log),
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn progress_only_when_asked_for_or_on_a_terminal() {
    let dir = temp_dir("cli-progress");
    let (log, b) = setup(dir.path());

    // Forced to a pipe: one line per update, then the report on standard output.
    let o = tollgate(&[
        "policy",
        "replay",
        "--log",
        s(&log),
        "--policy",
        s(&b),
        "--progress",
        "always",
        "--progress-interval",
        "0s",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("replay: segment 1/1, ") && l.contains(" records, ")),
        "{err}"
    );
    assert!(!err.contains('\x1b'), "{err:?}");
    assert!(text(&o.stdout).starts_with("replayed "));

    // On a terminal (util-linux `script`): drawn in place, erased before the report.
    let mut cmd = String::from(env!("CARGO_BIN_EXE_tollgate"));
    for a in ["policy", "replay", "--log", s(&log), "--policy", s(&b)] {
        assert!(!a.contains('\''), "{a}");
        cmd.push_str(&format!(" '{a}'"));
    }
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .env_remove("TOLLGATE_PROGRESS")
        .env("TOLLGATE_PROGRESS_INTERVAL", "0s")
        .output()
        .expect("util-linux `script` runs");
    let screen = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{screen:?}");
    assert!(
        screen.starts_with("\rreplay: segment 1/1, 1 records, "),
        "{screen:?}"
    );
    let (progress, report) = screen
        .split_once("\r\x1b[Kreplayed ")
        .expect("erased, then the report");
    assert!(!progress.contains('\n'), "{progress:?}");
    assert!(report.contains("total: 6 of 18"), "{report:?}");
}
