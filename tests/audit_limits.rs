//! Oversized and too-deeply nested values (issue 10, findings 14 and 15): every writer bounds
//! what it writes (size, hash and prefix instead of the value; never JSON nested deeper than
//! `MAX_DEPTH_CAP`), and every reader (verify, query, retention) reads every record a writer
//! produces, and refuses alike what no writer produces.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tollgate::audit::file::{self, Durability, FileSink, FileSinkConfig, RetentionPolicy};
use tollgate::audit::query::Query;
use tollgate::audit::{
    AuditEvent, AuditSink, Decision, EventKind, MemorySink, Redaction, SECRET_PLACEHOLDER,
};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::{Denial, DenyCode, Guard, Outcome, RuleId, RunContext, ToolCall};

#[path = "common/tempdir.rs"]
mod tempdir;

use tempfile::TempDir;

/// A fresh directory for one test under the system temp dir, deleted when the value drops.
fn temp_dir(name: &str) -> TempDir {
    tempdir::temp_dir("audit-limits", name)
}

const PASSWORD: &str = "hunter2-PLANTED-password";

/// The one nesting limit every record writer and reader shares (`call::json::MAX_DEPTH_CAP`).
const MAX_DEPTH_CAP: usize = 64;

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool("look", ToolSpec::read().allow_unknown_args())
        .tool(
            "login",
            ToolSpec::write()
                .arg("user", Arg::string())
                .arg("password", Arg::string().secret())
                .allow_unknown_args(),
        )
        .role("r", RoleSpec::new().tools(["look", "login"]))
        .build()
        .unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decisions(sink: &MemorySink) -> Vec<Value> {
    sink.events()
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .collect()
}

/// `[[[...[1]...]]]`, `depth` levels.
fn nested_text(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_value(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!([v]);
    }
    v
}

fn segment_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

// ------------------------------------------------------------------------------------------------
// Finding 15: oversized attempts
// ------------------------------------------------------------------------------------------------

#[test]
fn a_ten_megabyte_denied_argument_is_recorded_as_size_plain_hash_and_prefix() {
    let dir = temp_dir("ten-mb");
    let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    let sink = Arc::new(sink);
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let huge = format!(r#"{{"blob":"{}"}}"#, "z".repeat(10 * 1024 * 1024));
    // An unknown tool: the agent controls everything in this record.
    let name = "y".repeat(200_000);
    let v = guard.check(&run, &ToolCall::new(&name, huge.as_str()));
    assert_eq!(v.deny_code(), Some(DenyCode::UnknownTool));
    drop(v);
    sink.flush().unwrap();
    assert!(
        segment_bytes(dir.path()) < 8 * 1024,
        "{} bytes written for one denial",
        segment_bytes(dir.path())
    );
    let rec = Query::new()
        .kind("decision")
        .open(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let args = &rec.event["gen_ai.tool.call.arguments"];
    assert_eq!(args["tollgate.omitted"], "too_large");
    assert_eq!(args["bytes"], huge.len());
    assert_eq!(
        args["hash"],
        format!("sha256:{}", sha256_hex(huge.as_bytes()))
    );
    assert_eq!(args["prefix"], &huge[..64]);
    let tool = &rec.event["gen_ai.tool.name"];
    assert_eq!(tool["tollgate.omitted"], "too_large");
    assert_eq!(tool["bytes"], name.len());
}

#[test]
fn with_a_redaction_key_the_hash_of_an_oversized_value_is_keyed() {
    let key = vec![5u8; 32];
    let redaction = Redaction::keyed_hash("k9", key.clone())
        .unwrap()
        .max_value_bytes(1024)
        .unwrap()
        .prefix_bytes(8)
        .unwrap();
    let sink = Arc::new(MemorySink::with_redaction(redaction));
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let big = json!({ "q": "w".repeat(2000) });
    assert!(guard.check(&run, &ToolCall::new("look", &big)).is_allowed());
    let args = &decisions(&sink)[0]["gen_ai.tool.call.arguments"];
    let compact = serde_json::to_vec(&big).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(&compact);
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(args["hash"], format!("hmac-sha256:k9:{tag}"));
    assert_eq!(args["bytes"], compact.len());
    assert_eq!(args["prefix"], r#"{"q":"ww"#);
}

#[test]
fn oversized_outputs_error_texts_and_reasoning_are_placeholders_too() {
    let redaction = Redaction::placeholder().max_value_bytes(1000).unwrap();
    let sink = Arc::new(MemorySink::with_redaction(redaction));
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let long = "o".repeat(5000);
    // Control characters escape to six bytes each: the written form counts.
    let escapes = "\u{1}".repeat(600);
    let empty = json!({});
    let call = ToolCall::new("look", &empty).with_reasoning(&long);
    let permit = guard.check(&run, &call).into_permit().unwrap();
    permit
        .complete(Outcome::error(escapes.clone()).with_output(long.clone()))
        .unwrap();
    let ev = sink.events();
    let decision = ev.iter().find(|e| e["event"] == "decision").unwrap();
    assert_eq!(decision["tollgate.reasoning"]["bytes"], 5000);
    let outcome = ev.iter().find(|e| e["event"] == "outcome").unwrap();
    assert_eq!(outcome["tollgate.output"]["tollgate.omitted"], "too_large");
    assert_eq!(outcome["tollgate.outcome"]["status"], "error");
    let message = &outcome["tollgate.outcome"]["message"];
    assert_eq!(message["tollgate.omitted"], "too_large");
    assert_eq!(message["bytes"], 600);
    assert_eq!(
        message["hash"],
        format!("sha256:{}", sha256_hex(escapes.as_bytes()))
    );
}

#[test]
fn an_oversized_attempt_at_a_tool_with_a_secret_never_hashes_or_quotes_the_secret() {
    let dir = temp_dir("secret-big");
    let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    let sink = Arc::new(sink);
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    // The secret first, so a prefix of the raw text would show it.
    let big = format!(
        r#"{{"password":"{PASSWORD}","user":"u","pad":"{}"}}"#,
        "p".repeat(200_000)
    );
    drop(guard.check(&run, &ToolCall::new("login", big.as_str())));
    // Over the largest record: not even parsed, so neither hashed nor quoted.
    let giant = format!(
        r#"{{"password":"{PASSWORD}","pad":"{}"}}"#,
        "p".repeat(file::MAX_EVENT_BYTES)
    );
    drop(guard.check(&run, &ToolCall::new("login", giant.as_str())));
    // A secret value that is itself huge: redacted first, so the rest is recorded as it is.
    let huge_secret = json!({ "user": "u", "password": "s".repeat(300_000) });
    drop(guard.check(&run, &ToolCall::new("login", &huge_secret)));
    sink.flush().unwrap();
    let text: String = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(!text.contains("hunter2"), "the secret reached the log");
    let d: Vec<Value> = Query::new()
        .kind("decision")
        .open(dir.path())
        .unwrap()
        .map(|r| r.unwrap().event)
        .collect();
    let a0 = &d[0]["gen_ai.tool.call.arguments"];
    assert_eq!(a0["tollgate.omitted"], "too_large");
    assert_ne!(a0["hash"], format!("sha256:{}", sha256_hex(big.as_bytes())));
    // The hash and prefix are those of the redacted value.
    let mut redacted: Value = serde_json::from_str(&big).unwrap();
    redacted["password"] = json!(SECRET_PLACEHOLDER);
    let redacted = serde_json::to_vec(&redacted).unwrap();
    assert_eq!(a0["hash"], format!("sha256:{}", sha256_hex(&redacted)));
    assert_eq!(a0["bytes"], redacted.len());
    assert_eq!(
        d[1]["gen_ai.tool.call.arguments"],
        json!({ "tollgate.omitted": "too_large", "bytes": giant.len(), "redacted": true })
    );
    assert_eq!(
        d[2]["gen_ai.tool.call.arguments"],
        json!({ "user": "u", "password": SECRET_PLACEHOLDER })
    );
}

// ------------------------------------------------------------------------------------------------
// Finding 14: records no reader can read
// ------------------------------------------------------------------------------------------------

fn deny_event<'a>(
    seq: u64,
    at: SystemTime,
    call: &'a ToolCall<'a>,
    denial: &'a Denial,
) -> AuditEvent<'a> {
    AuditEvent::new(
        seq,
        at,
        None,
        None,
        EventKind::Decision {
            call,
            decision: Decision::Deny(denial),
            policy_version: None,
        },
    )
}

#[test]
fn too_deep_attempts_are_placeholders_that_verify_query_and_retention_all_read() {
    let dir = temp_dir("deep");
    let config = FileSinkConfig::default()
        .durability(Durability::OsBuffered)
        .max_segment_bytes(1); // one record per segment
    let (sink, _) = FileSink::open(dir.path(), config).unwrap();
    let denial = Denial::new(DenyCode::UnknownTool, RuleId::new("tools"), "unknown");
    let long_ago = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    // Raw text nested 100 deep (beyond the strict scanner, within serde_json), 200 deep
    // (beyond serde_json too), and a parsed value nested 100 deep.
    let deep100 = nested_text(100);
    let deep200 = nested_text(200);
    let deep_value = nested_value(100);
    let at_cap = nested_text(MAX_DEPTH_CAP);
    let mut seq = 0;
    for round in 0..34 {
        for args in [
            ToolCall::new("nope", deep100.as_str()),
            ToolCall::new("nope", deep200.as_str()),
            ToolCall::new("nope", &deep_value),
        ] {
            seq += 1;
            sink.record(&deny_event(seq, long_ago, &args, &denial))
                .unwrap();
        }
        if round == 0 {
            // Exactly at the cap: written as JSON.
            seq += 1;
            let call = ToolCall::new("nope", at_cap.as_str());
            sink.record(&deny_event(seq, long_ago, &call, &denial))
                .unwrap();
        }
    }
    // One fresh record, which keeps its segment (and the live one).
    let fresh = ToolCall::without_args("nope");
    sink.record(&deny_event(seq + 1, SystemTime::now(), &fresh, &denial))
        .unwrap();
    sink.flush().unwrap();

    let report = file::verify(dir.path()).unwrap();
    assert_eq!(report.records, seq + 1);
    let recs: Vec<Value> = Query::new()
        .open(dir.path())
        .unwrap()
        .map(|r| r.unwrap().event)
        .collect();
    assert_eq!(recs.len() as u64, seq + 1);
    let args = |i: usize| &recs[i]["gen_ai.tool.call.arguments"];
    assert_eq!(args(0)["tollgate.omitted"], "too_deep");
    assert_eq!(args(0)["bytes"], deep100.len());
    assert_eq!(
        args(0)["hash"],
        format!("sha256:{}", sha256_hex(deep100.as_bytes()))
    );
    assert_eq!(args(1)["tollgate.omitted"], "too_deep");
    assert_eq!(args(1)["bytes"], deep200.len());
    assert_eq!(args(2)["tollgate.omitted"], "too_deep");
    assert_eq!(
        args(2)["bytes"],
        serde_json::to_vec(&deep_value).unwrap().len()
    );
    assert_eq!(args(3), &serde_json::from_str::<Value>(&at_cap).unwrap());

    // Retention reads every one of them and drops them all (103 expired segments).
    let r = sink
        .retain(
            &RetentionPolicy::new(Some(Duration::from_secs(86_400))),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(r.records_dropped, seq);
    assert_eq!(r.segments_dropped, seq);
    sink.close().unwrap();
    let after = file::verify(dir.path()).unwrap();
    assert_eq!(after.first_seq, seq + 1);
}

/// Appends one record holding `event` (raw bytes) to the last segment, correctly chained.
fn append_forged(dir: &Path, event: &str) {
    let report = file::verify(dir).unwrap();
    let seq = report.last_seq + 1;
    let hash = sha256_hex(format!("{}\n{seq}\n{event}", report.head_hash).as_bytes());
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segs.sort();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(segs.last().unwrap())
        .unwrap();
    writeln!(
        f,
        r#"{{"seq":{seq},"prev":"{}","hash":"{hash}","event":{event}}}"#,
        report.head_hash
    )
    .unwrap();
}

#[test]
fn a_record_nested_deeper_than_any_writer_writes_is_refused_alike_by_every_reader() {
    let dir = temp_dir("forged-deep");
    let (sink, _) = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap();
    let denial = Denial::new(DenyCode::UnknownTool, RuleId::new("tools"), "unknown");
    let call = ToolCall::without_args("nope");
    sink.record(&deny_event(1, SystemTime::now(), &call, &denial))
        .unwrap();
    sink.close().unwrap();
    // Written by hand (an old writer, or someone with access to the files): 100 levels, which
    // serde_json alone would still parse, but which no writer produces.
    append_forged(
        dir.path(),
        &format!(r#"{{"time_unix_nano":1,"a":{}}}"#, nested_text(100)),
    );
    let e = file::verify(dir.path()).unwrap_err();
    assert!(
        matches!(&e, file::VerifyError::Malformed { at, reason }
            if at.seq == Some(2) && reason.contains("nested deeper")),
        "{e}"
    );
    let q = Query::new().open(dir.path()).unwrap().last().unwrap();
    assert!(
        matches!(q, Err(file::VerifyError::Malformed { ref at, .. }) if at.seq == Some(2)),
        "{q:?}"
    );
    let unverified = Query::new()
        .verify_while_reading(false)
        .open(dir.path())
        .unwrap()
        .last()
        .unwrap();
    assert!(unverified.is_err(), "{unverified:?}");
    // Recovery refuses it too, and cuts nothing (it is damage, not a torn write).
    let before = fs::read_dir(dir.path()).unwrap().count();
    let open = FileSink::open(dir.path(), FileSinkConfig::default()).unwrap_err();
    assert!(
        matches!(file::corruption(&open), Some(file::VerifyError::Malformed { at, .. }) if at.seq == Some(2)),
        "{open}"
    );
    assert_eq!(
        file::verify(dir.path())
            .unwrap_err()
            .location()
            .unwrap()
            .seq,
        Some(2)
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), before);
}
