//! Redaction of marked arguments in audit records, retention classes on events, and the direct
//! JSON writer agreeing with the documented field names.

use std::sync::Arc;

use serde_json::{Value, json};
use tollgate::audit::{
    AuditSink, MemorySink, Redaction, SECRET_PLACEHOLDER, SENSITIVE_PLACEHOLDER,
    UNPARSEABLE_PLACEHOLDER,
};
use tollgate::boundary::{ActionBoundary, Arg, RoleSpec, ToolSpec};
use tollgate::{DenyCode, Guard, Outcome, RunContext, ToolCall};

#[path = "common/tempdir.rs"]
mod tempdir;

const PASSWORD: &str = "hunter2-PLANTED-password";
const PATIENT: &str = "Jane Q. Patient 1958-04-02";

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tiers(["public", "phi"])
        .tool(
            "ehr_login",
            ToolSpec::write()
                .tier("phi")
                .arg("user", Arg::string().required())
                .arg("password", Arg::string().required().max_length(40).secret()),
        )
        .tool(
            "ehr_search",
            ToolSpec::read()
                .tier("phi")
                .arg("patient.name", Arg::string().required().sensitive())
                .arg("patient.visits", Arg::integer().max(10.0).sensitive())
                .arg("cards[]", Arg::string().secret())
                .arg("limit", Arg::integer()),
        )
        .tool(
            "weather",
            ToolSpec::read().tier("public").allow_unknown_args(),
        )
        .role(
            "clinician",
            RoleSpec::new()
                .clearance("phi")
                .tools(["ehr_login", "ehr_search", "weather"]),
        )
        .build()
        .unwrap()
}

fn boundary_with_retention() -> ActionBoundary {
    let doc = boundary().document().clone();
    let mut doc = doc;
    doc.retention.insert("phi".into(), "hipaa_6y".into());
    ActionBoundary::compile(doc).unwrap()
}

/// A guard on a manual clock: timestamps, latencies and run ids are fixed, so the digit strings
/// the tests look for (planted values) can only come from the arguments, never by chance from
/// the time of day.
fn session(sink: Arc<MemorySink>, b: ActionBoundary) -> (Guard, tollgate::Run) {
    let guard = Guard::builder(b)
        .clock(Arc::new(tollgate::clock::ManualClock::new()))
        .audit(sink)
        .build()
        .unwrap();
    let run = guard
        .start_run(RunContext::new("nurse-bot", "clinician"))
        .unwrap();
    (guard, run)
}

fn decisions(sink: &MemorySink) -> Vec<Value> {
    sink.events()
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .collect()
}

#[test]
fn secret_arguments_never_reach_the_record_allowed_or_denied_value_or_raw() {
    let sink = Arc::new(MemorySink::new());
    let (guard, run) = session(sink.clone(), boundary());
    let ok = json!({ "user": "n.smith", "password": PASSWORD });
    assert!(
        guard
            .check(&run, &ToolCall::new("ehr_login", &ok))
            .is_allowed()
    );
    let raw = format!(
        r#"{{ "user": "n.smith",
        "password": "{PASSWORD}" }}"#
    );
    assert!(
        guard
            .check(&run, &ToolCall::new("ehr_login", raw.as_str()))
            .is_allowed()
    );
    // Denied for length: still redacted, and the reason does not quote it.
    let long = format!("{PASSWORD}{}", "x".repeat(40));
    let v = json!({ "user": "n.smith", "password": long });
    let verdict = guard.check(&run, &ToolCall::new("ehr_login", &v));
    assert_eq!(verdict.deny_code(), Some(DenyCode::ArgumentTooLong));
    assert!(!verdict.denial().unwrap().reason().contains("hunter2"));
    drop(verdict);
    // Unparseable raw text for a tool with a secret: nothing of it is written.
    let broken = format!(r#"{{"user": "n.smith", "password": "{PASSWORD}""#);
    assert!(
        guard
            .check(&run, &ToolCall::new("ehr_login", broken.as_str()))
            .denial()
            .is_some()
    );
    run.finish().unwrap();

    let all = serde_json::to_string(&sink.events()).unwrap();
    assert!(
        !all.contains("hunter2"),
        "a secret reached the memory sink: {all}"
    );
    let d = decisions(&sink);
    assert_eq!(d.len(), 4);
    for e in &d[..3] {
        assert_eq!(
            e["gen_ai.tool.call.arguments"]["password"],
            SECRET_PLACEHOLDER
        );
        assert_eq!(e["gen_ai.tool.call.arguments"]["user"], "n.smith");
    }
    assert_eq!(
        d[3]["gen_ai.tool.call.arguments"]["unparsed"],
        UNPARSEABLE_PLACEHOLDER
    );
}

#[test]
fn sensitive_values_are_placeholders_by_default_and_nested_and_element_paths_apply() {
    let sink = Arc::new(MemorySink::new());
    let (guard, run) = session(sink.clone(), boundary());
    let args = json!({
        "patient": { "name": PATIENT, "visits": 3 },
        "cards": ["4111-1111-1111-1111", "5500-0000-0000-0004"],
        "limit": 5
    });
    assert!(
        guard
            .check(&run, &ToolCall::new("ehr_search", &args))
            .is_allowed()
    );
    // Over the bound: denied, and the reason leaves the number out.
    let over = json!({ "patient": { "name": PATIENT, "visits": 977 } });
    let v = guard.check(&run, &ToolCall::new("ehr_search", &over));
    assert_eq!(v.deny_code(), Some(DenyCode::ArgumentOutOfRange));
    assert!(!v.denial().unwrap().reason().contains("977"));

    let d = decisions(&sink);
    let a = &d[0]["gen_ai.tool.call.arguments"];
    assert_eq!(a["patient"]["name"], SENSITIVE_PLACEHOLDER);
    assert_eq!(a["patient"]["visits"], SENSITIVE_PLACEHOLDER);
    assert_eq!(a["cards"], json!([SECRET_PLACEHOLDER, SECRET_PLACEHOLDER]));
    assert_eq!(a["limit"], 5, "unmarked values are recorded as given");
    let all = serde_json::to_string(&sink.events()).unwrap();
    for leaked in ["Jane", "4111", "5500", "977"] {
        assert!(!all.contains(leaked), "`{leaked}` reached the sink: {all}");
    }
}

#[test]
fn keyed_hash_mode_is_stable_per_value_and_key_and_reveals_nothing() {
    let key = b"0123456789abcdef0123456789abcdef-test-key".to_vec();
    let sink = Arc::new(MemorySink::with_redaction(
        Redaction::keyed_hash("k1", key.clone()).unwrap(),
    ));
    let other = Arc::new(MemorySink::with_redaction(
        Redaction::keyed_hash("k2", b"another key, also 32 bytes or more!!".to_vec()).unwrap(),
    ));
    let fan = Arc::new(tollgate::audit::Fanout::new(vec![
        sink.clone() as Arc<dyn AuditSink>,
        other.clone(),
    ]));
    let guard = Guard::builder(boundary()).audit(fan).build().unwrap();
    let run = guard
        .start_run(RunContext::new("bot", "clinician"))
        .unwrap();
    for name in [PATIENT, PATIENT, "John Roe"] {
        let a = json!({ "patient": { "name": name } });
        assert!(
            guard
                .check(&run, &ToolCall::new("ehr_search", &a))
                .is_allowed()
        );
    }
    // A secret stays a placeholder even in keyed-hash mode.
    let login = json!({ "user": "u", "password": PASSWORD });
    assert!(
        guard
            .check(&run, &ToolCall::new("ehr_login", &login))
            .is_allowed()
    );

    let names: Vec<String> = decisions(&sink)
        .iter()
        .map(|e| {
            e["gen_ai.tool.call.arguments"]["patient"]["name"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(
        names[0].starts_with("hmac-sha256:k1:") && names[0].len() == "hmac-sha256:k1:".len() + 64
    );
    assert_eq!(
        names[0], names[1],
        "the same value under the same key hashes the same"
    );
    assert_ne!(names[0], names[2], "different values hash differently");
    let other_names: Vec<Value> = decisions(&other)
        .iter()
        .map(|e| e["gen_ai.tool.call.arguments"]["patient"]["name"].clone())
        .collect();
    assert_ne!(
        Value::from(names[0].clone()),
        other_names[0],
        "another key gives another hash"
    );
    assert_eq!(
        decisions(&sink)[3]["gen_ai.tool.call.arguments"]["password"],
        SECRET_PLACEHOLDER
    );
    let all = serde_json::to_string(&sink.events()).unwrap();
    assert!(!all.contains("Jane") && !all.contains("hunter2"));
}

#[test]
fn keyed_hash_refuses_short_keys_and_bad_ids() {
    assert!(Redaction::keyed_hash("k", vec![7; 31]).is_err());
    assert!(Redaction::keyed_hash("", vec![7; 32]).is_err());
    assert!(Redaction::keyed_hash("has space", vec![7; 32]).is_err());
    assert!(Redaction::keyed_hash("ok-id_1.2", vec![7; 32]).is_ok());
}

#[test]
fn unmarked_raw_arguments_are_recorded_compactly_on_one_line() {
    let sink = Arc::new(MemorySink::new());
    let (guard, run) = session(sink.clone(), boundary());
    let raw = "{\n  \"city\" : \"Oslo\",\n  \"days\": [1, 2]\n}";
    assert!(
        guard
            .check(&run, &ToolCall::new("weather", raw))
            .is_allowed()
    );
    let not_json = "{city: Oslo\n";
    assert!(
        guard
            .check(&run, &ToolCall::new("weather", not_json))
            .denial()
            .is_some()
    );
    let d = decisions(&sink);
    assert_eq!(
        d[0]["gen_ai.tool.call.arguments"],
        json!({"city": "Oslo", "days": [1, 2]})
    );
    assert_eq!(
        d[1]["gen_ai.tool.call.arguments"],
        json!({ "unparsed": not_json })
    );
}

#[test]
fn events_carry_the_retention_class_of_their_tools_tier() {
    let sink = Arc::new(MemorySink::new());
    let (guard, run) = session(sink.clone(), boundary_with_retention());
    let a = json!({ "patient": { "name": PATIENT } });
    let permit = guard
        .check(&run, &ToolCall::new("ehr_search", &a))
        .into_permit()
        .unwrap();
    permit
        .complete(Outcome::success().with_output("3 records found"))
        .unwrap();
    assert!(
        guard
            .check(&run, &ToolCall::new("weather", &json!({})))
            .is_allowed()
    );
    run.note_reasoning("checked the chart before answering")
        .unwrap();
    run.finish().unwrap();
    let ev = sink.events();
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    // (The weather permit is dropped unused: its outcome is recorded as abandoned.)
    assert_eq!(
        kinds,
        [
            "run_started",
            "decision",
            "outcome",
            "decision",
            "outcome",
            "reasoning",
            "run_finished"
        ]
    );
    assert_eq!(ev[1]["tollgate.retention"], "hipaa_6y");
    assert_eq!(ev[2]["tollgate.retention"], "hipaa_6y");
    assert_eq!(ev[2]["tollgate.output"], "3 records found");
    assert!(ev[4].get("tollgate.output").is_none());
    assert!(
        ev[3].get("tollgate.retention").is_none(),
        "public tier has no class"
    );
    assert!(ev[4].get("tollgate.retention").is_none());
    assert!(ev[0].get("tollgate.retention").is_none());
    assert_eq!(
        ev[5]["tollgate.reasoning"],
        "checked the chart before answering"
    );
}

#[test]
fn policy_documents_mark_arguments_and_name_retention_classes_with_field_errors() {
    let good = r#"
        tiers = ["public", "privileged"]
        [retention]
        privileged = "legal_hold"
        [tools.file_note]
        effect = "write"
        tier = "privileged"
        [tools.file_note.args.body]
        type = "string"
        redact = "sensitive"
        [tools.file_note.args.api_key]
        type = "string"
        redact = "secret"
        [roles.r]
        clearance = "privileged"
        tools = ["file_note"]
    "#;
    let b = ActionBoundary::from_toml(good).unwrap();
    assert!(b.audit_marks("file_note").redacts());
    assert_eq!(b.audit_marks("file_note").retention(), Some("legal_hold"));
    assert!(!b.audit_marks("no_such_tool").redacts());

    let unknown_tier = good.replace("privileged = \"legal_hold\"", "secretive = \"x\"");
    let e = ActionBoundary::from_toml(&unknown_tier).unwrap_err();
    assert_eq!(e.field(), Some("retention.secretive"), "{e}");
    let bad_class = good.replace("\"legal_hold\"", "\"legal hold\"");
    let e = ActionBoundary::from_toml(&bad_class).unwrap_err();
    assert_eq!(e.field(), Some("retention.privileged"), "{e}");
    let bad_mark = good.replace("redact = \"secret\"", "redact = \"hidden\"");
    let e = ActionBoundary::from_toml(&bad_mark).unwrap_err();
    assert!(
        e.to_string().contains("redact") || e.field().is_some_and(|f| f.contains("api_key")),
        "{e}"
    );
}

#[test]
fn the_file_sink_writes_what_its_redaction_says_and_never_a_secret() {
    use tollgate::audit::file::{self, FileSink, FileSinkConfig};
    let tmp = tempdir::temp_dir("redact", "file-sink");
    let dir = tmp.path();
    let redaction = Redaction::keyed_hash("k1", vec![42; 32]).unwrap();
    let (sink, _) = FileSink::open(dir, FileSinkConfig::default().redaction(redaction)).unwrap();
    let sink = Arc::new(sink);
    let guard = Guard::builder(boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard
        .start_run(RunContext::new("bot", "clinician"))
        .unwrap();
    let a = json!({ "patient": { "name": PATIENT }, "cards": ["4111-PLANTED"] });
    assert!(
        guard
            .check(&run, &ToolCall::new("ehr_search", &a))
            .is_allowed()
    );
    run.finish().unwrap();
    drop(guard);
    drop(sink);
    assert_eq!(file::verify(dir).unwrap().records, 4);
    let mut text = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        text.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    assert!(
        !text.contains("Jane") && !text.contains("PLANTED"),
        "{text}"
    );
    assert!(text.contains("hmac-sha256:k1:"), "{text}");
    assert!(text.contains(SECRET_PLACEHOLDER));
}

// ------------------------------------------------------------------------------------------------
// Finding 3: a marked path meeting a value of another shape redacts the whole value
// ------------------------------------------------------------------------------------------------

fn shapes_boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "login",
            ToolSpec::write()
                .arg("auth.user", Arg::string().sensitive())
                .arg("auth.password", Arg::string().secret()),
        )
        .tool(
            "charge",
            ToolSpec::write()
                .arg("cards[].number", Arg::string().secret())
                .arg("memo", Arg::string()),
        )
        .role("r", RoleSpec::new().tools(["login", "charge"]))
        .build()
        .unwrap()
}

#[test]
fn a_secret_sent_where_its_parent_should_be_is_redacted_whole_in_the_denial() {
    let sink = Arc::new(MemorySink::with_redaction(
        Redaction::keyed_hash("k1", vec![9; 32]).unwrap(),
    ));
    let guard = Guard::builder(shapes_boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let p = json!(SECRET_PLACEHOLDER);
    // (tool, arguments, the arguments as they must be recorded)
    let wrong_shapes: Vec<(&str, Value, Value)> = vec![
        ("login", json!({ "auth": PASSWORD }), json!({ "auth": p })),
        ("login", json!({ "auth": [PASSWORD] }), json!({ "auth": p })),
        (
            "login",
            json!({ "auth": 4_111_111_111_111_111u64 }),
            json!({ "auth": p }),
        ),
        (
            "charge",
            json!({ "cards": [PASSWORD] }),
            json!({ "cards": [p] }),
        ),
        (
            "charge",
            json!({ "cards": PASSWORD }),
            json!({ "cards": p }),
        ),
        (
            "charge",
            json!({ "cards": [[PASSWORD]] }),
            json!({ "cards": [p] }),
        ),
        ("charge", json!(PASSWORD), p.clone()),
        ("charge", json!([{ "number": PASSWORD }]), p.clone()),
    ];
    for (tool, args, _) in &wrong_shapes {
        let v = guard.check(&run, &ToolCall::new(tool, args));
        assert!(v.denial().is_some(), "{tool} {args} should be denied");
        // The raw text form too.
        let raw = args.to_string();
        let v = guard.check(&run, &ToolCall::new(tool, raw.as_str()));
        assert!(v.denial().is_some(), "{tool} {raw} should be denied");
    }
    run.finish().unwrap();
    let all = serde_json::to_string(&sink.events()).unwrap();
    assert!(
        !all.contains("hunter2"),
        "a secret reached the record: {all}"
    );
    assert!(!all.contains("4111111111111111"), "{all}");
    let d = decisions(&sink);
    assert_eq!(d.len(), 2 * wrong_shapes.len());
    for (i, e) in d.iter().enumerate() {
        assert_eq!(e["tollgate.decision"], "deny");
        // Secret marks are applied last: where a sensitive and a secret path meet the same
        // wrong-shaped value (`auth`), the secret placeholder is what remains.
        assert_eq!(
            e["gen_ai.tool.call.arguments"],
            wrong_shapes[i / 2].2,
            "record {i}: {e}"
        );
    }
}

#[test]
fn null_and_absent_parents_are_left_as_they_are() {
    let sink = Arc::new(MemorySink::new());
    let guard = Guard::builder(shapes_boundary())
        .audit(sink.clone())
        .build()
        .unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    for args in [json!({ "auth": null }), json!({}), json!({ "cards": null })] {
        drop(guard.check(&run, &ToolCall::new("charge", &args)));
    }
    let d = decisions(&sink);
    assert_eq!(d[0]["gen_ai.tool.call.arguments"], json!({ "auth": null }));
    assert_eq!(d[1]["gen_ai.tool.call.arguments"], json!({}));
    assert_eq!(d[2]["gen_ai.tool.call.arguments"], json!({ "cards": null }));
}

// ------------------------------------------------------------------------------------------------
// Finding 3, part 2: outcome texts never carry the call's marked values
// ------------------------------------------------------------------------------------------------

fn outcomes(sink: &MemorySink) -> Vec<Value> {
    sink.events()
        .into_iter()
        .filter(|e| e["event"] == "outcome")
        .collect()
}

#[test]
fn a_secret_quoted_in_a_tool_error_is_cut_out_of_the_outcome_record() {
    let sink = Arc::new(MemorySink::new());
    let (guard, run) = session(sink.clone(), boundary());
    let args = json!({ "user": "n.smith", "password": PASSWORD });
    let result: Result<(), _> = guard.execute(&run, &ToolCall::new("ehr_login", &args), |_| {
        Err(format!(
            "login refused for n.smith with password {PASSWORD} (try again)"
        ))
    });
    assert!(matches!(result, Err(tollgate::ExecuteError::Tool(_))));
    // The same through raw argument text, and through Outcome::with_output.
    let raw = format!(r#"{{"user":"n.smith","password":"{PASSWORD}"}}"#);
    let permit = guard
        .check(&run, &ToolCall::new("ehr_login", raw.as_str()))
        .into_permit()
        .unwrap();
    permit
        .complete(Outcome::success().with_output(format!("session for {PASSWORD}: ok")))
        .unwrap();
    // And through a detached permit, completed after the arguments' text is gone.
    let raw = format!(r#"{{"user":"n.smith","password":"{PASSWORD}"}}"#);
    let detached = guard
        .check(&run, &ToolCall::new("ehr_login", raw.as_str()))
        .into_permit()
        .unwrap()
        .detach();
    drop(raw);
    detached
        .complete(Outcome::error(format!("bad password {PASSWORD}")))
        .unwrap();
    run.finish().unwrap();
    let all = serde_json::to_string(&sink.events()).unwrap();
    assert!(
        !all.contains("hunter2"),
        "a secret reached the record: {all}"
    );
    let o = outcomes(&sink);
    assert_eq!(
        o[2]["tollgate.outcome"]["message"],
        format!("bad password {SECRET_PLACEHOLDER}")
    );
    assert_eq!(
        o[0]["tollgate.outcome"]["message"],
        format!("login refused for n.smith with password {SECRET_PLACEHOLDER} (try again)")
    );
    assert_eq!(
        o[1]["tollgate.output"],
        format!("session for {SECRET_PLACEHOLDER}: ok")
    );
}

#[test]
fn escaped_nested_and_numeric_marked_values_are_cut_out_of_outputs() {
    let sink = Arc::new(MemorySink::new());
    let b = ActionBoundary::builder()
        .tool(
            "pay",
            ToolSpec::write()
                .arg("card.number", Arg::integer().secret())
                .arg("card.holder", Arg::string().sensitive())
                .arg("note", Arg::string().secret()),
        )
        .role("r", RoleSpec::new().tools(["pay"]))
        .build()
        .unwrap();
    let guard = Guard::builder(b).audit(sink.clone()).build().unwrap();
    let run = guard.start_run(RunContext::new("bot", "r")).unwrap();
    let note = "quote \" and backslash \\ inside PLANTED-note";
    let args = json!({
        "card": { "number": 4_111_111_111_111_111u64, "holder": PATIENT },
        "note": note,
    });
    let permit = guard
        .check(&run, &ToolCall::new("pay", &args))
        .into_permit()
        .unwrap();
    // The tool echoes its input as JSON (escaped) and as plain text.
    let output = format!("echo {args} / holder={PATIENT} / note={note}");
    permit
        .complete(Outcome::error(output.clone()).with_output(output))
        .unwrap();
    let o = &outcomes(&sink)[0];
    for text in [
        o["tollgate.outcome"]["message"].as_str().unwrap(),
        o["tollgate.output"].as_str().unwrap(),
    ] {
        for leaked in ["4111111111111111", "Jane", "PLANTED", "1958"] {
            assert!(!text.contains(leaked), "`{leaked}` in {text}");
        }
        assert!(text.contains(SECRET_PLACEHOLDER), "{text}");
        assert!(text.contains(SENSITIVE_PLACEHOLDER), "{text}");
    }
}

#[test]
fn a_text_holding_a_marked_value_too_short_to_cut_out_is_replaced_whole() {
    let sink = Arc::new(MemorySink::new());
    let (guard, run) = session(sink.clone(), boundary());
    let args = json!({ "user": "n.smith", "password": "x7" });
    const { assert!(tollgate::audit::MIN_SCRUB_BYTES > 2) };
    let permit = guard
        .check(&run, &ToolCall::new("ehr_login", &args))
        .into_permit()
        .unwrap();
    permit
        .complete(Outcome::error("bad password x7 for n.smith"))
        .unwrap();
    // A text without the short value is kept as it is.
    let permit = guard
        .check(&run, &ToolCall::new("ehr_login", &args))
        .into_permit()
        .unwrap();
    permit
        .complete(Outcome::error("upstream timed out"))
        .unwrap();
    let o = outcomes(&sink);
    assert_eq!(o[0]["tollgate.outcome"]["message"], SECRET_PLACEHOLDER);
    assert_eq!(o[1]["tollgate.outcome"]["message"], "upstream timed out");
}
