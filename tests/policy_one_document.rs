//! One policy document for the whole deployment: parsing, errors that name the section path,
//! line and column, cross-reference checks, the version that covers every setting, and binding
//! the document into a guard (every primitive from one file, the approval queue's grant
//! lifetime, bindings and sinks that must match the document). Signatures, reviewer warnings,
//! `diff` and `explain` are in `policy_one_document_review.rs`.

#[path = "common/clinic_policy.rs"]
mod clinic_policy;
mod common;

use clinic_policy::{CLINIC, clinic, edited, err_of, line_of};
use tollgate::policy::{DocumentError, Format, Policy};

#[test]
fn the_complete_clinic_policy_compiles() {
    let p = clinic();
    let doc = p.document();
    assert_eq!(doc.policy.name, "clinic-assistant 2026-11");
    assert_eq!(doc.tools.len(), 6);
    assert_eq!(doc.roles.len(), 3);
    assert!(p.escalation().is_some());
    assert_eq!(p.boundary().version(), p.version());
    assert_eq!(
        doc.budgets.as_ref().unwrap().max_cost.unwrap().to_string(),
        "2.50"
    );
}

/// A new user's five deliberate mistakes each get one error naming the section path, the line
/// and the column.
#[test]
fn five_deliberate_mistakes_name_path_line_and_column() {
    // 1. An unknown field (a typo).
    let text = edited("max_repeats = 3", "max_repeat = 3");
    let e = err_of(&text);
    assert!(matches!(e, DocumentError::Shape { .. }), "{e}");
    assert_eq!(e.path(), Some("loops.max_repeat"));
    assert!(e.to_string().contains("unknown field"), "{e}");
    let loc = e.location().expect("a location");
    assert_eq!(loc.line, line_of(&text, "max_repeat = 3"));

    // 2. A wrong type.
    let text = edited("max_calls = 60", "max_calls = \"sixty\"");
    let e = err_of(&text);
    assert_eq!(e.path(), Some("budgets.max_calls"));
    let loc = e.location().unwrap();
    assert_eq!(loc.line, line_of(&text, "max_calls = \"sixty\""));
    assert_eq!(loc.column, 13);

    // 3. An unknown tool in a role.
    let text = edited(
        "tools = [\"search_clinic_faq\"]\n",
        "tools = [\"search_clinic_faqs\"]\n",
    );
    let e = err_of(&text);
    assert!(
        matches!(&e, DocumentError::UnknownReference { kind: "tool", name, .. } if name == "search_clinic_faqs"),
        "{e}"
    );
    assert_eq!(e.path(), Some("roles.faq_bot.tools[0]"));
    let loc = e.location().unwrap();
    assert_eq!(loc.line, line_of(&text, "tools = [\"search_clinic_faqs\"]"));
    assert_eq!(loc.column, 10);

    // 4. A bad regular expression.
    let text = edited("pattern = \"INV-[0-9]{8}\"", "pattern = \"INV-[0-9{8}\"");
    let e = err_of(&text);
    assert_eq!(e.path(), Some("tools.issue_refund.args.invoice_id.pattern"));
    assert!(e.to_string().contains("regular expression"), "{e}");
    assert_eq!(
        e.location().unwrap().line,
        line_of(&text, "pattern = \"INV-[0-9{8}\"")
    );

    // 5. A negative limit.
    let text = edited("max_cost = \"2.50\"", "max_cost = \"-2.50\"");
    let e = err_of(&text);
    assert_eq!(e.path(), Some("budgets.max_cost"));
    assert!(e.to_string().contains("negative"), "{e}");
    assert_eq!(
        e.location().unwrap().line,
        line_of(&text, "max_cost = \"-2.50\"")
    );
}

/// Three cross-reference mistakes: a grant naming a role that does not exist, a role given a
/// tool above its clearance, and an escalation chain naming an approver group that does not
/// exist.
#[test]
fn three_cross_reference_mistakes_name_path_line_and_column() {
    let text = edited(
        "role = \"front_desk_agent\"\nprovider = \"payments\"",
        "role = \"front_desk\"\nprovider = \"payments\"",
    );
    let e = err_of(&text);
    assert!(
        matches!(&e, DocumentError::UnknownReference { kind: "role", known, .. } if known.contains("front_desk_agent")),
        "{e}"
    );
    assert_eq!(e.path(), Some("credentials.grants[1].role"));
    assert_eq!(
        e.location().unwrap().line,
        line_of(&text, "role = \"front_desk\"")
    );

    let text = edited(
        "clearance = \"public\"\ntools = [\"search_clinic_faq\"]",
        "clearance = \"public\"\ntools = [\"search_clinic_faq\", \"lookup_appointments\"]",
    );
    let e = err_of(&text);
    assert!(matches!(e, DocumentError::AboveClearance { .. }), "{e}");
    assert_eq!(e.path(), Some("roles.faq_bot.tools[1]"));
    let loc = e.location().unwrap();
    assert_eq!(
        loc.line,
        line_of(
            &text,
            "tools = [\"search_clinic_faq\", \"lookup_appointments\"]"
        )
    );
    assert_eq!(loc.column, 31);

    let text = edited(
        "{ group = \"practice_manager\", after = \"30m\" }",
        "{ group = \"practice_managers\", after = \"30m\" }",
    );
    let e = err_of(&text);
    assert!(
        matches!(&e, DocumentError::UnknownReference { kind: "approver group", name, .. } if name == "practice_managers"),
        "{e}"
    );
    assert_eq!(e.path(), Some("escalation.defaults.chain[1].group"));
    assert_eq!(
        e.location().unwrap().line,
        line_of(&text, "practice_managers")
    );
}

#[test]
fn values_that_make_no_sense_are_refused_by_path() {
    for (from, to, path) in [
        ("max_repeats = 3", "max_repeats = 0", "loops.max_repeats"),
        ("window = \"2m\"", "window = \"0s\"", "loops.window"),
        (
            "window = { calls = 50 }",
            "window = { calls = 0 }",
            "breakers.window",
        ),
        (
            "failure_rate = 50",
            "failure_rate = -5",
            "breakers.failure_rate",
        ),
        ("ttl = \"2m\"", "ttl = \"2d\"", "credentials.grants[1].ttl"),
        // Credentials expire on whole seconds: a fraction is refused, not rounded.
        (
            "ttl = \"2m\"",
            "ttl = \"1500ms\"",
            "credentials.grants[1].ttl",
        ),
        (
            "ttl = \"2m\"",
            "ttl = \"500ms\"",
            "credentials.grants[1].ttl",
        ),
        (
            "timeout = \"15m\"",
            "timeout = \"0s\"",
            "escalation.rules[1].timeout",
        ),
        (
            "after = \"30m\"",
            "after = \"400d\"",
            "escalation.defaults.chain[1].after",
        ),
        (
            "grant_ttl = \"10m\"",
            "grant_ttl = \"500ms\"",
            "escalation.approvals.grant_ttl",
        ),
        (
            "over = 100",
            "over = \"100.0000000000001\"",
            "escalation.rules[0].when.amount.over",
        ),
        (
            "over = 100",
            "over = -1",
            "escalation.rules[0].when.amount.over",
        ),
        (
            "max_uses = 1\n",
            "max_uses = 0\n",
            "credentials.grants[1].max_uses",
        ),
        (
            "review_cadence = \"90d\"",
            "review_cadence = \"0s\"",
            "policy.review_cadence",
        ),
        (
            "max_cost = \"2.50\"",
            "max_cost = \"0.0000001\"",
            "budgets.max_cost",
        ),
        (
            "keep = { hipaa = \"6y\"",
            "keep = { hipaa = \"0s\"",
            "audit.retention.keep.hipaa",
        ),
        (
            "per = \"1h\"",
            "per = \"0s\"",
            "rate_limits.per_tool.issue_refund.per",
        ),
        // 5 calls per 600 years with a burst of 5: 600 years, more than the limiter counts
        // (it panicked when the guard was built).
        (
            "per = \"1h\"",
            "per = \"600y\"",
            "rate_limits.per_tool.issue_refund.per",
        ),
        // serde_json would make `nan` a `null`, which the rule would then admit.
        (
            "enum = [\"USD\"]",
            "enum = [\"USD\", nan]",
            "tools.issue_refund.args.refund.currency.enum[1]",
        ),
        // A window of 50 calls never holds 60: with no consecutive-failure rule either,
        // nothing could open the breaker.
        (
            "minimum_calls = 10\n",
            "minimum_calls = 60\n",
            "breakers.minimum_calls",
        ),
        // Role names follow the rules of tool names: no look-alike letters (Cyrillic `а`).
        (
            "[roles.faq_bot]",
            "[roles.\"f\u{0430}q_bot\"]",
            "roles.fаq_bot",
        ),
    ] {
        let to = if to == "minimum_calls = 60\n" {
            // The consecutive-failure rule goes too, or the breaker could still open.
            edited(from, to).replacen("consecutive_failures = 5", "consecutive_failures = 0", 1)
        } else {
            edited(from, to)
        };
        let e = err_of(&to);
        assert_eq!(e.path(), Some(path), "{to}: {e}");
        assert!(e.location().is_some(), "{to}: {e} has no location");
    }
}

#[test]
fn durations_need_units_and_money_must_be_exact() {
    let e = err_of(&edited("wait_in_open = \"30s\"", "wait_in_open = 30000"));
    assert_eq!(e.path(), Some("breakers.wait_in_open"));
    assert!(e.to_string().contains("with a unit"), "{e}");
    let e = err_of(&edited("max_cost = \"2.50\"", "max_cost = 2.5"));
    assert_eq!(e.path(), Some("budgets.max_cost"));
    assert!(e.to_string().contains("not exact"), "{e}");
    // The escalation section follows the same convention.
    let e = err_of(&edited("timeout = \"15m\"", "timeout = 900"));
    assert_eq!(e.path(), Some("escalation.rules[1].timeout"), "{e}");
    assert!(e.to_string().contains("with a unit"), "{e}");
    let e = err_of(&edited("timeout = \"15m\"", "timeout_secs = 900"));
    assert_eq!(e.path(), Some("escalation.rules[1].timeout_secs"), "{e}");
    let e = err_of(&edited("after = \"30m\"", "after = 1800"));
    assert_eq!(e.path(), Some("escalation.defaults.chain[1].after"), "{e}");
    let e = err_of(&edited("grant_ttl = \"10m\"", "grant_ttl = 600"));
    assert_eq!(e.path(), Some("escalation.approvals.grant_ttl"), "{e}");
    let e = err_of(&edited("over = 100", "over = 100.5"));
    assert_eq!(
        e.path(),
        Some("escalation.rules[0].when.amount.over"),
        "{e}"
    );
    assert!(e.to_string().contains("not exact"), "{e}");
    let e = err_of(&edited("ttl = \"5m\"", "ttl = 300"));
    assert_eq!(e.path(), Some("credentials.grants[0].ttl"), "{e}");
}

#[test]
fn unknown_references_in_every_section_are_errors() {
    for (from, to, path) in [
        (
            "provider = \"ehr\"",
            "provider = \"vault\"",
            "credentials.grants[0].provider",
        ),
        (
            "tools = [\"lookup_appointments\", \"read_chart_summary\"]\noperations",
            "tools = [\"lookup_appointments\", \"read_chart_sumary\"]\noperations",
            "credentials.grants[0].tools[1]",
        ),
        (
            "per_tool.issue_refund",
            "per_tool.issue_refunds",
            "rate_limits.per_tool.issue_refunds",
        ),
        (
            "tools = [\"issue_refund\"]\nwhen",
            "tools = [\"issue_refunds\"]\nwhen",
            "escalation.rules[0].tools[0]",
        ),
        (
            "tiers = { phi = \"hipaa\"",
            "tiers = { phi = \"hippa\"",
            "audit.retention.tiers.phi",
        ),
        (
            "internal = \"standard\", public",
            "intern = \"standard\", public",
            "audit.retention.tiers.intern",
        ),
    ] {
        let e = err_of(&edited(from, to));
        assert_eq!(e.path(), Some(path), "{to}: {e}");
        assert!(
            matches!(e, DocumentError::UnknownReference { .. }),
            "{to}: {e}"
        );
        assert!(e.location().is_some(), "{e}");
    }
}

#[test]
fn duplicate_keys_are_refused_in_both_formats() {
    let e = err_of(&format!("{CLINIC}\n[loops]\nmax_repeats = 4\n"));
    assert!(matches!(e, DocumentError::Syntax { .. }), "{e}");
    assert!(e.location().is_some());

    let json = serde_json::to_string_pretty(&toml::from_str::<serde_json::Value>(CLINIC).unwrap())
        .unwrap();
    assert!(Policy::from_json(&json).is_ok());
    let dup = json.replacen(
        "\"max_repeats\": 3",
        "\"max_repeats\": 3,\n    \"max_repeats\": 300",
        1,
    );
    let e = Policy::from_json(&dup).unwrap_err();
    assert!(e.to_string().contains("duplicate key `max_repeats`"), "{e}");
    assert_eq!(
        e.location().unwrap().line,
        line_of(&dup, "\"max_repeats\": 300")
    );
}

#[test]
fn the_version_covers_every_setting_and_nothing_else() {
    let base = clinic().version();
    // Comments, whitespace and the format do not change it.
    let reformatted = CLINIC
        .replace("# The whole", "#   The whole")
        .replace(" = ", "  =  ");
    assert_eq!(Policy::from_toml(&reformatted).unwrap().version(), base);
    let json =
        serde_json::to_string(&toml::from_str::<serde_json::Value>(CLINIC).unwrap()).unwrap();
    assert_eq!(Policy::parse(&json, Format::Json).unwrap().version(), base);
    // Every threshold, budget, breaker, escalation, credential, rate, loop and audit setting
    // does.
    for (from, to) in [
        ("failure_rate = 50", "failure_rate = 51"),
        ("wait_in_open = \"30s\"", "wait_in_open = \"31s\""),
        ("max_calls = 60", "max_calls = 61"),
        ("max_cost = \"2.50\"", "max_cost = \"2.51\""),
        ("over = 100", "over = 101"),
        ("timeout = \"15m\"", "timeout = \"16m\""),
        ("after = \"30m\"", "after = \"31m\""),
        ("grant_ttl = \"10m\"", "grant_ttl = \"11m\""),
        ("ttl = \"5m\"", "ttl = \"6m\""),
        ("per = \"1h\"", "per = \"2h\""),
        ("max_repeats = 3", "max_repeats = 4"),
        (
            "durability = \"every_record\"",
            "durability = \"os_buffered\"",
        ),
        ("hipaa = \"6y\"", "hipaa = \"7y\""),
        ("max_keys = 4096", "max_keys = 4097"),
        ("review_cadence = \"90d\"", "review_cadence = \"30d\""),
    ] {
        let v = Policy::from_toml(&edited(from, to)).unwrap().version();
        assert_ne!(v, base, "changing `{from}` to `{to}` kept the version");
    }
}

mod whole_guard {
    use std::sync::Arc;

    use secrecy::SecretString;
    use serde_json::json;
    use tollgate::audit::MemorySink;
    use tollgate::clock::ManualClock;
    use tollgate::credential::StaticSecretProvider;
    use tollgate::escalation::MemoryApprovalStore;
    use tollgate::policy::{BindError, Bindings, Policy};
    use tollgate::{DenyCode, Guard, GuardError, Outcome, RunContext, ToolCall, Verdict};

    /// A complete deployment (every primitive) from one file: the lines from `Policy::from_file`
    /// to the guard are the whole of the setup.
    #[test]
    fn every_primitive_from_one_file_in_a_few_lines() {
        let sink = Arc::new(MemorySink::new());
        let clock = Arc::new(ManualClock::new());
        // --- the deployment's setup: 9 lines ---
        let policy = Policy::from_file("examples/policies/clinic.toml").unwrap();
        let bindings = Bindings::new()
            .clock(clock.clone())
            .audit(sink.clone())
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider(
                "ehr",
                StaticSecretProvider::new(SecretString::from("ehr-k")),
            )
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("pay-k")),
            );
        let guard = Guard::from_policy(&policy, bindings).unwrap();
        // --- end of setup ---

        assert_eq!(guard.policy_version(), policy.version());
        // Compartments: ids must look like patients.
        assert!(matches!(
            guard.start_run(RunContext::new("desk-1", "front_desk_agent").in_compartment("M-1")),
            Err(GuardError::CompartmentRefused(_))
        ));
        let run = guard
            .start_run(RunContext::new("desk-1", "front_desk_agent").in_compartment("P-000123"))
            .unwrap();

        // Boundary + credentials: a chart read inside the compartment, with an EHR token.
        let args = json!({"patient_id": "P-000123", "section": "allergies"});
        let permit = guard
            .check(&run, &ToolCall::new("read_chart_summary", &args))
            .into_permit()
            .unwrap();
        let cred = permit
            .credential("ehr", "fhir/Patient/P-000123/AllergyIntolerance")
            .unwrap();
        assert_eq!(
            cred.expose(&permit, "fhir/Patient/P-000123/AllergyIntolerance")
                .unwrap(),
            "ehr-k"
        );
        assert!(permit.credential("ehr", "fhir/Patient/P-999999/x").is_err());
        permit.complete(Outcome::success()).unwrap();

        // Another patient's record: cross-compartment.
        let other = json!({"patient_id": "P-999999", "section": "allergies"});
        assert_eq!(
            guard
                .check(&run, &ToolCall::new("read_chart_summary", &other))
                .deny_code(),
            Some(DenyCode::CrossCompartment)
        );

        // Escalation: a refund over 100 USD goes to a human.
        let refund = json!({"patient_id": "P-000123", "invoice_id": "INV-00001234",
            "refund": {"amount": 250, "currency": "USD"}, "card_token": "tok_live_1"});
        assert!(matches!(
            guard.check(&run, &ToolCall::new("issue_refund", &refund)),
            Verdict::Escalate(_)
        ));

        // Loop detection: the same FAQ query a fourth time within two minutes.
        let faq = json!({"query": "parking"});
        for _ in 0..3 {
            guard
                .check(&run, &ToolCall::new("search_clinic_faq", &faq))
                .into_permit()
                .unwrap()
                .complete(Outcome::success())
                .unwrap();
        }
        assert_eq!(
            guard
                .check(&run, &ToolCall::new("search_clinic_faq", &faq))
                .deny_code(),
            Some(DenyCode::LoopDetected)
        );

        // Every record carries the whole document's version.
        let version = policy.version().to_string();
        let events = sink.events();
        assert!(events.len() > 8);
        for e in events
            .iter()
            .filter(|e| e.get("tollgate.policy.version").is_some())
        {
            assert_eq!(e["tollgate.policy.version"], version.as_str());
        }
        assert!(
            events
                .iter()
                .any(|e| e["tollgate.policy.version"] == version.as_str())
        );
    }

    /// `[escalation.approvals]` reaches the queue the guard is built with: the clinic's approved
    /// refunds must be carried out within 10 minutes (`grant_ttl = "10m"`), not the default hour.
    #[test]
    fn the_documents_grant_lifetime_reaches_the_approval_queue() {
        let clock = Arc::new(ManualClock::new());
        let policy = Policy::from_file("examples/policies/clinic.toml").unwrap();
        let bindings = Bindings::new()
            .clock(clock.clone())
            .audit(Arc::new(MemorySink::new()))
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider("ehr", StaticSecretProvider::new(SecretString::from("a")))
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("b")),
            );
        let guard = Guard::from_policy(&policy, bindings).unwrap();
        let run = guard
            .start_run(RunContext::new("desk-1", "front_desk_agent").in_compartment("P-000123"))
            .unwrap();
        let queue = guard.approvals().unwrap();
        let refund = |n: u32| {
            json!({"patient_id": "P-000123", "invoice_id": format!("INV-0000123{n}"),
                "refund": {"amount": 250, "currency": "USD"}, "card_token": "tok_live_1"})
        };
        let (late, in_time) = (refund(1), refund(2));
        let mut tickets = Vec::new();
        for args in [&late, &in_time] {
            let Verdict::Escalate(req) = guard.check(&run, &ToolCall::new("issue_refund", args))
            else {
                panic!("a refund over 100 escalates");
            };
            queue
                .decide(
                    &req.id,
                    &tollgate::escalation::Approver::new("maria.chen"),
                    tollgate::escalation::Decision::Approve,
                    "checked",
                )
                .unwrap();
            tickets.push(req.ticket());
        }
        clock.advance(std::time::Duration::from_secs(10 * 60 - 1));
        guard
            .resume(&run, &ToolCall::new("issue_refund", &in_time), &tickets[1])
            .into_permit()
            .unwrap()
            .complete(Outcome::success())
            .unwrap();
        clock.advance(std::time::Duration::from_secs(1));
        assert_eq!(
            guard
                .resume(&run, &ToolCall::new("issue_refund", &late), &tickets[0])
                .deny_code(),
            Some(DenyCode::ApprovalTimedOut)
        );
    }

    #[test]
    fn bindings_must_match_the_document() {
        let policy = Policy::from_file("examples/policies/clinic.toml").unwrap();
        let base = || {
            Bindings::new()
                .audit(Arc::new(MemorySink::new()))
                .approvals(Arc::new(MemoryApprovalStore::new()))
                .provider("ehr", StaticSecretProvider::new(SecretString::from("a")))
        };
        assert!(matches!(
            Guard::from_policy(&policy, base()),
            Err(BindError::MissingProvider(p)) if p == "payments"
        ));
        let extra = base()
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("b")),
            )
            .provider("vault", StaticSecretProvider::new(SecretString::from("c")));
        assert!(matches!(
            Guard::from_policy(&policy, extra),
            Err(BindError::UndeclaredProvider(p)) if p == "vault"
        ));
        let no_sink = Bindings::new()
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider("ehr", StaticSecretProvider::new(SecretString::from("a")))
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("b")),
            );
        assert!(matches!(
            Guard::from_policy(&policy, no_sink),
            Err(BindError::MissingAuditSink)
        ));
        let no_store = Bindings::new()
            .audit(Arc::new(MemorySink::new()))
            .provider("ehr", StaticSecretProvider::new(SecretString::from("a")))
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("b")),
            );
        assert!(matches!(
            Guard::from_policy(&policy, no_store),
            Err(BindError::MissingApprovalStore)
        ));
    }
}

mod bound_sinks {
    use std::sync::Arc;
    use std::time::Duration;

    use secrecy::SecretString;
    use tollgate::audit::Redaction;
    use tollgate::audit::file::{Backpressure, Durability, FileSink, FileSinkConfig};
    use tollgate::breaker::{Baseline, BaselineConfig, UnexpectedTool};
    use tollgate::credential::StaticSecretProvider;
    use tollgate::escalation::MemoryApprovalStore;
    use tollgate::policy::{BindError, Bindings, Policy};

    fn bindings() -> Bindings {
        Bindings::new()
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider("ehr", StaticSecretProvider::new(SecretString::from("a")))
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("b")),
            )
    }

    /// A fresh directory for one sink, deleted when the value drops.
    fn dir(name: &str) -> tempfile::TempDir {
        super::common::tempdir::temp_dir("bound", name)
    }

    /// The clinic document says every record is on disk before a decision takes effect, calls
    /// wait when the writer is behind, and sensitive values are keyed hashes: a file sink that
    /// does less is refused, and the one the document describes is accepted.
    #[test]
    fn a_sink_weaker_than_the_audit_section_is_refused() {
        let policy = Policy::from_toml(super::CLINIC).unwrap();
        let key = || Redaction::keyed_hash("k1", vec![7u8; 32]).unwrap();
        for (name, cfg, field) in [
            (
                "buffered",
                FileSinkConfig::default()
                    .durability(Durability::OsBuffered)
                    .redaction(key()),
                "durability",
            ),
            (
                "fail",
                FileSinkConfig::default()
                    .backpressure(Backpressure::Fail)
                    .redaction(key()),
                "when_full",
            ),
            ("placeholder", FileSinkConfig::default(), "redaction"),
        ] {
            let d = dir(name);
            let (sink, _) = FileSink::open(d.path(), cfg).unwrap();
            let err = tollgate::Guard::from_policy(&policy, bindings().audit(Arc::new(sink)))
                .unwrap_err();
            assert!(
                matches!(&err, BindError::WeakerSink { field: f, .. } if *f == field),
                "{name}: {err}"
            );
        }
        let d = dir("exact");
        let (sink, _) =
            FileSink::open(d.path(), policy.file_sink_config(Some(key())).unwrap()).unwrap();
        assert!(tollgate::Guard::from_policy(&policy, bindings().audit(Arc::new(sink))).is_ok());
        assert!(
            policy.file_sink_config(None).is_err(),
            "keyed_hash needs a key"
        );
    }

    #[test]
    fn the_retention_schedule_comes_from_the_document() {
        let policy = Policy::from_toml(super::CLINIC).unwrap();
        let r = policy.retention_policy();
        let year = 31_557_600;
        assert_eq!(r.keep_for("hipaa"), Some(Duration::from_secs(6 * year)));
        assert_eq!(r.keep_for("standard"), Some(Duration::from_secs(year)));
        // Records of no class are `default`; a class the schedule does not name is never deleted.
        assert_eq!(r.keep_for("default"), Some(Duration::from_secs(year)));
        assert_eq!(r.keep_for("unknown-class"), None);
    }

    /// A learned baseline bound in code may not replace the document's baseline parameters.
    #[test]
    fn a_bound_baseline_with_other_parameters_is_refused() {
        let text = format!(
            "{}\n[baseline]\nconfig = {{ unexpected_tool = \"deny\" }}\n",
            super::CLINIC
        );
        let policy = Policy::from_toml(&text).unwrap();
        let sink = Arc::new(tollgate::audit::MemorySink::new());
        let lax = Baseline::new(BaselineConfig {
            unexpected_tool: UnexpectedTool::Ignore,
            ..BaselineConfig::default()
        })
        .unwrap();
        let err =
            tollgate::Guard::from_policy(&policy, bindings().audit(sink.clone()).baseline(lax))
                .unwrap_err();
        assert!(err.to_string().contains("baseline.config"), "{err}");
        let same = Baseline::new(policy.document().baseline.as_ref().unwrap().config).unwrap();
        assert!(
            tollgate::Guard::from_policy(&policy, bindings().audit(sink).baseline(same)).is_ok()
        );
    }
}
