//! The `tollgate audit` command line: verify, query and repair a real log, with and without a
//! key, run as a real process; tampering gives exit status 1 with the bad record named; every
//! usage error gives exit status 2; progress goes to standard error only, and only when asked
//! for or on a terminal.
#![cfg(feature = "cli")]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tollgate::audit::file::{
    self, CheckpointConfig, CheckpointKey, Durability, FileSink, FileSinkConfig,
};
use tollgate::audit::{AuditEvent, AuditSink, Decision, EventKind};
use tollgate::{AgentId, RunId, ToolCall};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("cli-audit", name)
}

/// Paths inside a test's log directory.
trait LogDir {
    /// Segment `index` of the log written straight into the directory.
    fn seg(&self, index: u64) -> PathBuf;
}

impl LogDir for TempDir {
    fn seg(&self, index: u64) -> PathBuf {
        self.path().join(format!("audit-{index:06}.jsonl"))
    }
}

const KEY_HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn key() -> CheckpointKey {
    CheckpointKey::from_hex("ops-1", KEY_HEX).unwrap()
}

fn t(i: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i)
}

/// 12 allowed decisions at t(0)..t(11), on `look` (even i) and `pay` (odd i), in run `r-0`
/// (i < 6) or `r-1`, with a checkpoint every 5 records and one on close.
fn write_log(dir: &Path) {
    let config = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .checkpoint(CheckpointConfig::new(key()).every_records(Some(5)));
    let (sink, _) = FileSink::open(dir, config).unwrap();
    let runs = [RunId::new("r-0"), RunId::new("r-1")];
    let agent = AgentId::new("bot");
    let look = ToolCall::new("look", "{}");
    let pay = ToolCall::new("pay", r#"{"amount":5}"#);
    for i in 0..12u64 {
        let call = if i % 2 == 0 { &look } else { &pay };
        let kind = EventKind::Decision {
            call,
            decision: Decision::Allow,
            policy_version: None,
        };
        let run = &runs[(i / 6) as usize];
        sink.record(&AuditEvent::new(i + 1, t(i), Some(run), Some(&agent), kind))
            .unwrap();
    }
    sink.close().unwrap();
}

/// `tollgate audit ARGS...`, with no progress settings inherited from the environment.
fn audit(args: &[&str]) -> Output {
    audit_env(args, &[])
}

fn audit_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.arg("audit")
        .args(args)
        .env_remove("TOLLGATE_PROGRESS")
        .env_remove("TOLLGATE_PROGRESS_INTERVAL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the tollgate binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn lines(o: &Output) -> Vec<Value> {
    text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn help_is_printed_and_exits_0() {
    for (args, usage) in [
        (&["--help"][..], "Usage: tollgate audit <COMMAND>"),
        (&["-h"], "Usage: tollgate audit <COMMAND>"),
        (&["help"], "Usage: tollgate audit <COMMAND>"),
        (
            &["verify", "--help"],
            "Usage: tollgate audit verify [OPTIONS] <PATH>",
        ),
        (
            &["query", "-h"],
            "Usage: tollgate audit query [OPTIONS] <PATH>",
        ),
        (
            &["help", "repair"],
            "Usage: tollgate audit repair [OPTIONS] <PATH>",
        ),
    ] {
        let o = audit(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        let out = text(&o.stdout);
        assert!(out.contains(usage), "{args:?}: {out}");
        assert!(out.contains("EXIT STATUS"), "{args:?}: {out}");
    }
    // The long help keeps what the hand-written help said: what PATH stands for, the TIME
    // formats, the key file format.
    let out = text(&audit(&["--help"]).stdout);
    assert!(out.contains("stands for that file's directory"), "{out}");
    let out = text(&audit(&["query", "--help"]).stdout);
    for want in [
        "1700000000000ms",
        "2024-05-01T14:00:00.250+02:00",
        "<key id>:<hex secret>",
        "A filter given several times matches any of its values",
        "retention_applied",
        "TOLLGATE_PROGRESS",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let out = text(&audit(&["repair", "--help"]).stdout);
    assert!(out.contains("repair-<time>.removed"), "{out}");
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let dir = temp_dir("usage");
    write_log(dir.path());
    let d = s(dir.path());
    let key_file = dir.path().join("bad.key");
    fs::write(&key_file, "ops-1:nothex").unwrap();
    let other = dir.path().join("notes.txt");
    fs::write(&other, "x").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "Usage: tollgate audit <COMMAND>"),
        (vec!["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (vec!["verify"], "required arguments were not provided"),
        (vec!["verify", d, d], "unexpected argument"),
        (vec!["verify", d, "--frob"], "unexpected argument '--frob'"),
        (
            vec!["verify", d, "--run", "x"],
            "unexpected argument '--run' found",
        ),
        (
            vec!["query", d, "--run"],
            "a value is required for '--run <ID>'",
        ),
        (
            vec!["query", d, "--decision", "maybe"],
            "[possible values: allow, escalate, deny]",
        ),
        (
            vec!["query", d, "--since", "yesterday"],
            "invalid value 'yesterday' for '--since <TIME>'",
        ),
        (vec!["query", d, "--until", "5h"], "unknown unit"),
        (
            vec!["query", d, "--since", "2023-11-14T22:13:20"],
            "not RFC 3339",
        ),
        (
            vec!["query", d, "--since", "1s", "--since", "2s"],
            "cannot be used multiple times",
        ),
        (
            vec!["query", d, "--no-verify", "--key-file", s(&key_file)],
            "bad.key",
        ),
        (
            vec!["verify", "/no/such/tollgate/dir"],
            "no such file or directory",
        ),
        (vec!["verify", s(&other)], "not an audit segment"),
        (vec!["verify", d, "--key-file", s(&key_file)], "bad.key"),
        (
            vec!["verify", d, "--progress", "sometimes"],
            "invalid value 'sometimes' for '--progress <WHEN>'",
        ),
        (
            vec!["verify", d, "--progress-interval", "250"],
            "a duration is a string with a unit",
        ),
    ];
    for (args, want) in cases {
        let o = audit(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(err.contains("--help"), "{err}");
        assert!(o.stdout.is_empty());
    }
    // A key file that parses but cannot be used with --no-verify (nothing would check it).
    let good = dir.path().join("ops.key");
    fs::write(&good, format!("ops-1:{KEY_HEX}")).unwrap();
    let o = audit(&["query", d, "--no-verify", "--key-file", s(&good)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("cannot be used with"),
        "{}",
        text(&o.stderr)
    );
    // A bad TOLLGATE_PROGRESS is a usage error too, named as the variable.
    let o = audit_env(&["verify", d], &[("TOLLGATE_PROGRESS", "sometimes")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("sometimes"), "{}", text(&o.stderr));
}

#[test]
fn verify_prints_one_summary_line() {
    let dir = temp_dir("verify");
    write_log(dir.path());
    let report = file::verify(dir.path()).unwrap();
    let o = audit(&["verify", s(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("ok: 15 records (seq 1..=15) in 1 segments"),
        "{out}"
    );
    assert!(out.contains(&report.head_hash), "{out}");
    assert!(out.contains("3 checkpoints (MACs not checked"), "{out}");

    // A segment file stands for its directory.
    let o = audit(&["verify", s(&dir.seg(1))]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(text(&o.stdout), out);

    // With the key.
    let key_file = dir.path().join("ops.key");
    fs::write(&key_file, format!("ops-1:{KEY_HEX}\n")).unwrap();
    let o = audit(&[
        "verify",
        s(dir.path()),
        "--key-file",
        s(&key_file),
        "--require-covered",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let out = text(&o.stdout);
    assert!(out.contains("MACs verified with ops-1"), "{out}");
    assert!(out.contains("0 trailing records not covered"), "{out}");

    // With the wrong key.
    let wrong = dir.path().join("wrong.key");
    fs::write(&wrong, format!("ops-1:{}", "ff".repeat(32))).unwrap();
    let o = audit(&["verify", s(dir.path()), "--key-file", s(&wrong)]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("FAILED:") && out.contains("bad MAC"),
        "{out}"
    );
    assert!(out.contains("seq 6"), "{out}");
}

#[test]
fn verify_names_the_first_bad_record_and_exits_1() {
    let dir = temp_dir("tamper");
    write_log(dir.path());
    let seg = dir.seg(1);
    let original = fs::read_to_string(&seg).unwrap();
    let tampered: Vec<String> = original
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 2 {
                l.replacen("\"look\"", "\"lock\"", 1)
            } else {
                l.to_owned()
            }
        })
        .collect();
    fs::write(&seg, tampered.join("\n") + "\n").unwrap();
    let o = audit(&["verify", s(dir.path())]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(out.starts_with("FAILED:"), "{out}");
    assert!(out.contains("audit-000001.jsonl line 3"), "{out}");
    assert!(out.contains("seq 3"), "{out}");
    assert!(out.contains("record modified"), "{out}");

    // A log with uncovered records fails --require-covered.
    fs::write(&seg, &original).unwrap();
    let cut: Vec<&str> = original.lines().take(8).collect();
    fs::write(&seg, cut.join("\n") + "\n").unwrap();
    let key_file = dir.path().join("ops.key");
    fs::write(&key_file, format!("ops-1:{KEY_HEX}")).unwrap();
    let o = audit(&["verify", s(dir.path()), "--key-file", s(&key_file)]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains("2 trailing records not covered"));
    let o = audit(&[
        "verify",
        s(dir.path()),
        "--key-file",
        s(&key_file),
        "--require-covered",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("not covered by any checkpoint"));
}

#[test]
fn query_prints_matching_events_as_json_lines() {
    let dir = temp_dir("query");
    write_log(dir.path());
    let d = s(dir.path());
    let o = audit(&["query", d]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let all = lines(&o);
    assert_eq!(all.len(), 15);
    assert_eq!(all[0]["seq"], 1);
    assert_eq!(all[0]["event"]["event"], "decision");
    assert!(text(&o.stderr).contains("chain verified"));

    let seqs = |args: &[&str]| -> Vec<u64> {
        let mut full = vec!["query", d];
        full.extend_from_slice(args);
        let o = audit(&full);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        lines(&o)
            .iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect()
    };
    // Records: 1-5 events, 6 checkpoint, 7-11 events, 12 checkpoint, 13-14 events, 15 checkpoint.
    assert_eq!(seqs(&["--kind", "checkpoint"]), [6, 12, 15]);
    assert_eq!(seqs(&["--tool", "pay"]), [2, 4, 7, 9, 11, 14]);
    assert_eq!(seqs(&["--run", "r-1", "--tool", "look"]), [8, 10, 13]);
    assert_eq!(seqs(&["--agent", "bot", "--decision", "allow"]).len(), 12);
    assert_eq!(seqs(&["--decision", "deny"]), Vec::<u64>::new());
    assert_eq!(seqs(&["--run", "r-0", "--run", "r-1"]).len(), 12);
    // Event i (record i + 1, or + 2 after the first checkpoint) is at 1_700_000_000 + i seconds.
    assert_eq!(
        seqs(&["--since", "1700000002s", "--until", "1700000004s"]),
        [3, 4]
    );
    assert_eq!(
        seqs(&[
            "--since",
            "1700000002000000000",
            "--until",
            "1700000004000ms"
        ]),
        [3, 4]
    );
    assert_eq!(
        seqs(&[
            "--since",
            "2023-11-14T22:13:22Z",
            "--until",
            "2023-11-15T00:13:24+02:00"
        ]),
        [3, 4]
    );
    assert_eq!(
        seqs(&[
            "--since",
            "2023-11-14T22:13:21.5Z",
            "--until",
            "1700000003s"
        ]),
        [3]
    );
}

#[test]
fn query_stops_at_tampering_with_exit_1() {
    let dir = temp_dir("query-tamper");
    write_log(dir.path());
    let seg = dir.seg(1);
    let original = fs::read_to_string(&seg).unwrap();
    let tampered: Vec<String> = original
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 3 {
                l.replacen("\"r-0\"", "\"r-9\"", 1)
            } else {
                l.to_owned()
            }
        })
        .collect();
    fs::write(&seg, tampered.join("\n") + "\n").unwrap();
    let o = audit(&["query", s(dir.path())]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(lines(&o).len(), 3, "the records before the bad one");
    let err = text(&o.stderr);
    assert!(err.contains("FAILED after 3 matching records"), "{err}");
    assert!(err.starts_with("tollgate: "), "{err}");
    assert!(err.contains("line 4") && err.contains("seq 4"), "{err}");

    let o = audit(&["query", s(dir.path()), "--no-verify", "--run", "r-9"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(lines(&o).len(), 1);
    assert!(text(&o.stderr).contains("NOT verified"));
}

#[test]
fn repair_plans_first_then_repairs_and_verify_prints_the_notice() {
    let dir = temp_dir("repair");
    write_log(dir.path());
    let d = s(dir.path());
    let key_file = dir.path().join("ops.key");
    fs::write(&key_file, format!("ops-1:{KEY_HEX}\n")).unwrap();
    let seg = dir.seg(1);
    let mut damaged = fs::read(&seg).unwrap();
    damaged.extend([0u8; 100]);
    fs::write(&seg, &damaged).unwrap();
    assert_eq!(audit(&["verify", d]).status.code(), Some(1));

    // Planned only: nothing changes.
    let o = audit(&["repair", d, "--key-file", s(&key_file)]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("removes 1 line(s), 100 bytes"), "{out}");
    assert!(out.contains("run again with --yes"), "{out}");
    assert_eq!(fs::read(&seg).unwrap(), damaged);

    let o = audit(&[
        "repair",
        d,
        "--key-file",
        s(&key_file),
        "--reason",
        "zeroed by a crash of the storage array",
        "--yes",
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("repaired: declaration at seq 16"), "{out}");
    let o = audit(&["verify", d, "--key-file", s(&key_file)]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("notice: seq 16: repair removed 1 line(s), 100 bytes")
            && out.contains("storage array"),
        "{out}"
    );
    let o = audit(&["verify", d, "--key-file", s(&key_file), "--require-clean"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("--require-clean"));
    // Nothing left to repair.
    let o = audit(&["repair", d, "--key-file", s(&key_file)]);
    assert!(text(&o.stdout).contains("nothing to repair"));
    assert_eq!(o.status.code(), Some(0));
    let o = audit(&["repair", d, "--cut-after", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("not a record seq"));
}

#[test]
fn verify_with_a_witness_file_catches_a_cut_tail() {
    use std::sync::Arc;
    use tollgate::audit::file::{DirWitness, WitnessConfig};
    let dir = temp_dir("witness");
    let log = dir.path().join("log");
    let witness = dir.path().join("head.json");
    let config =
        FileSinkConfig::default().witness(WitnessConfig::new(Arc::new(DirWitness::new(&witness))));
    let (sink, _) = FileSink::open(&log, config).unwrap();
    let agent = AgentId::new("bot");
    for i in 0..5u64 {
        let kind = EventKind::RunFinished {
            duration: Duration::ZERO,
        };
        sink.record(&AuditEvent::new(i + 1, t(i), None, Some(&agent), kind))
            .unwrap();
    }
    sink.close().unwrap();
    let o = audit(&["verify", s(&log), "--witness-file", s(&witness)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("reaches the witnessed head (seq 5)"));
    let seg = log.join("audit-000001.jsonl");
    let kept: Vec<String> = fs::read_to_string(&seg)
        .unwrap()
        .lines()
        .take(3)
        .map(str::to_owned)
        .collect();
    fs::write(&seg, kept.join("\n") + "\n").unwrap();
    assert_eq!(audit(&["verify", s(&log)]).status.code(), Some(0));
    let o = audit(&["verify", s(&log), "--witness-file", s(&witness)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).contains("before the witnessed head seq 5"),
        "{}",
        text(&o.stdout)
    );
}

/// 40 decisions over segments of at most 2 KiB, with a checkpoint every 7 records.
fn write_segmented_log(dir: &Path) -> u64 {
    let config = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .max_segment_bytes(2048)
        .checkpoint(CheckpointConfig::new(key()).every_records(Some(7)));
    let (sink, _) = FileSink::open(dir, config).unwrap();
    let run = RunId::new("r-0");
    let agent = AgentId::new("bot");
    let look = ToolCall::new("look", "{}");
    let pay = ToolCall::new("pay", r#"{"amount":5}"#);
    for i in 0..40u64 {
        let call = if i % 2 == 0 { &look } else { &pay };
        let kind = EventKind::Decision {
            call,
            decision: Decision::Allow,
            policy_version: None,
        };
        sink.record(&AuditEvent::new(
            i + 1,
            t(i),
            Some(&run),
            Some(&agent),
            kind,
        ))
        .unwrap();
    }
    sink.close().unwrap();
    let report = file::verify(dir).unwrap();
    assert!(report.segments >= 3, "{report:?}");
    report.segments
}

const FORCED: [(&str, &str); 2] = [
    ("TOLLGATE_PROGRESS", "always"),
    ("TOLLGATE_PROGRESS_INTERVAL", "0s"),
];

/// The progress lines `verb` wrote to standard error, and the rest of it.
fn split_progress<'a>(err: &'a str, verb: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let prefix = format!("{verb}: segment ");
    err.lines().partition(|l| l.starts_with(&prefix))
}

#[test]
fn forced_progress_goes_to_stderr_and_stdout_stays_byte_identical() {
    let dir = temp_dir("progress");
    let segments = write_segmented_log(dir.path());
    let d = s(dir.path());
    let records = file::verify(dir.path()).unwrap().records;
    let total: u64 = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let key_file = dir.path().join("ops.key");
    fs::write(&key_file, format!("ops-1:{KEY_HEX}")).unwrap();
    let cases: [(&str, Vec<&str>); 5] = [
        ("verify", vec!["verify", d]),
        ("verify", vec!["verify", d, "--key-file", s(&key_file)]),
        ("query", vec!["query", d]),
        ("query", vec!["query", d, "--tool", "pay"]),
        // Nothing matches: the progress still counts every record read.
        ("query", vec!["query", d, "--decision", "deny"]),
    ];
    for (verb, args) in cases {
        let quiet = audit(&args);
        let loud = audit_env(&args, &FORCED);
        assert_eq!(quiet.status.code(), Some(0), "{args:?}");
        assert_eq!(loud.status.code(), Some(0), "{args:?}");
        assert_eq!(loud.stdout, quiet.stdout, "{args:?}");
        // Standard error is a pipe here: without being asked, no progress at all.
        let quiet_err = text(&quiet.stderr);
        let (none, quiet_rest) = split_progress(&quiet_err, verb);
        assert!(none.is_empty(), "{args:?}: {none:?}");
        let loud_err = text(&loud.stderr);
        let (lines, rest) = split_progress(&loud_err, verb);
        // Apart from the progress lines, standard error is what it was.
        assert_eq!(rest, quiet_rest, "{args:?}");
        // Interval 0: one line per record, in order, up to the whole log.
        assert_eq!(lines.len() as u64, records, "{args:?}: {loud_err}");
        assert!(
            lines[0].starts_with(&format!("{verb}: segment 1/{segments}, 1 records, ")),
            "{}",
            lines[0]
        );
        let last = lines[lines.len() - 1];
        assert!(
            last.starts_with(&format!(
                "{verb}: segment {segments}/{segments}, {records} records, "
            )),
            "{last}"
        );
        // All the bytes: the same size twice, at 100%.
        let (done, of) = last.split_once(" of ").expect("a total");
        let done_size = done.rsplit_once(", ").unwrap().1;
        assert!(of.starts_with(&format!("{done_size} (100%), ")), "{last}");
        assert!(
            total > 1024 && done_size.ends_with(" KiB"),
            "{total}: {last}"
        );
        assert!(last.ends_with("/s"), "a rate: {last}");
    }

    // `--progress never` beats the environment; a long interval shows nothing for a short read.
    for extra in [&["--progress", "never"][..], &["--progress-interval", "1h"]] {
        let mut args = vec!["verify", d];
        args.extend_from_slice(extra);
        let o = audit_env(&args, &FORCED);
        assert_eq!(o.status.code(), Some(0));
        assert!(o.stderr.is_empty(), "{extra:?}: {}", text(&o.stderr));
    }
}

#[test]
fn forced_progress_stops_at_tampering_and_the_verdict_is_unchanged() {
    let dir = temp_dir("progress-tamper");
    write_segmented_log(dir.path());
    let seg = dir.seg(2);
    let original = fs::read_to_string(&seg).unwrap();
    // The segment's last record is altered, so its earlier records are read (and shown) first.
    let last = original
        .trim_end()
        .rsplit_once('\n')
        .expect("two records")
        .1;
    let altered = last.replacen("\"r-0\"", "\"r-9\"", 1);
    assert_ne!(altered, last);
    fs::write(&seg, original.replacen(last, &altered, 1)).unwrap();
    let d = s(dir.path());
    for (verb, args) in [("verify", vec!["verify", d]), ("query", vec!["query", d])] {
        let quiet = audit(&args);
        let loud = audit_env(&args, &FORCED);
        assert_eq!(quiet.status.code(), Some(1), "{args:?}");
        assert_eq!(loud.status.code(), Some(1), "{args:?}");
        assert_eq!(loud.stdout, quiet.stdout, "{args:?}");
        let loud_err = text(&loud.stderr);
        let (lines, rest) = split_progress(&loud_err, verb);
        assert_eq!(rest, split_progress(&text(&quiet.stderr), verb).1);
        // It got into segment 2 and no further: the bad record was never counted as read.
        assert!(!lines.is_empty(), "{loud_err}");
        assert!(
            lines.iter().all(|l| !l.contains("segment 3/")),
            "{loud_err}"
        );
        assert!(lines.last().unwrap().contains("segment 2/"), "{loud_err}");
    }
}

/// Runs `tollgate ARGS` on a pseudo-terminal (util-linux `script`, in Debian's essential
/// `bsdutils`), standard output and standard error both on it; returns what the terminal got.
fn on_terminal(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = String::from(env!("CARGO_BIN_EXE_tollgate"));
    for a in args {
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
    (o.status.code(), text(&o.stdout))
}

#[test]
fn on_a_terminal_progress_is_drawn_in_place_and_erased_before_the_result() {
    let dir = temp_dir("progress-tty");
    let segments = write_segmented_log(dir.path());
    let d = s(dir.path());
    let (code, screen) = on_terminal(&["audit", "verify", d]);
    assert_eq!(code, Some(0), "{screen:?}");
    assert!(
        screen.starts_with(&format!("\rverify: segment 1/{segments}, 1 records, ")),
        "{screen:?}"
    );
    // Each update redraws the line (erasing what the last one left), and the line is erased
    // before the summary, which therefore starts at the beginning of a clean line.
    assert!(screen.contains("\x1b[K\rverify: segment "), "{screen:?}");
    let (progress, result) = screen
        .split_once("\r\x1b[Kok: ")
        .expect("erased, then the result");
    assert!(!progress.contains('\n'), "{progress:?}");
    let records = file::verify(dir.path()).unwrap().records;
    assert!(
        result.starts_with(&format!(
            "{records} records (seq 1..={records}) in {segments} segments"
        )),
        "{result:?}"
    );

    // `query` writes its records to the same terminal: no progress line to interleave with them.
    let (code, screen) = on_terminal(&["audit", "query", d, "--tool", "pay"]);
    assert_eq!(code, Some(0), "{screen:?}");
    assert!(!screen.contains("query: segment"), "{screen:?}");
    assert!(!screen.contains('\x1b'), "{screen:?}");
    assert!(screen.contains("chain verified"), "{screen:?}");
}
