//! What would a policy change have changed over last month's audit log?
//!
//! Records a month of the clinic assistant's sessions under `examples/policies/clinic.toml`
//! (a real guard writing a hash-chained, keyed-hash-redacted file sink: FAQ searches,
//! appointment look-ups, chart summaries, partner directory pages, referral drafts, refunds, some
//! escalated and approved, some mistakes denied), writes a candidate policy beside it, and
//! replays the log under the candidate. Run with
//! `cargo run --example policy_replay -- DIR` (default: a directory under the system temp
//! directory), then try the command line on the same files:
//! `tollgate policy replay --log DIR/audit --policy DIR/clinic-candidate.toml`.
//!
//! The candidate: refunds over 50 USD (not 100) need a billing lead, referrals below 0.9 (not
//! 0.8) confidence go to a human, FAQ queries are capped at 80 characters (not 300), chart
//! summaries no longer include past visits, and the front desk loses the partner directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tollgate::audit::Redaction;
use tollgate::audit::file::FileSink;
use tollgate::clock::ManualClock;
use tollgate::credential::StaticSecretProvider;
use tollgate::escalation::{Approver, Decision, MemoryApprovalStore};
use tollgate::policy::{Bindings, Policy};
use tollgate::prelude::*;

const CLINIC: &str = include_str!("policies/clinic.toml");

/// The candidate: the clinic policy with five edits.
fn candidate() -> String {
    let edits = [
        (
            "when.amount = { path = \"refund.amount\", over = 100 }",
            "when.amount = { path = \"refund.amount\", over = 50 }",
        ),
        (
            "when.confidence = { below = 0.8 }",
            "when.confidence = { below = 0.9 }",
        ),
        (
            "args.query = { type = \"string\", required = true, max_length = 300 }",
            "args.query = { type = \"string\", required = true, max_length = 80 }",
        ),
        (
            "enum = [\"allergies\", \"medications\", \"problems\", \"visits\"]",
            "enum = [\"allergies\", \"medications\", \"problems\"]",
        ),
        (
            "\"draft_referral_email\", \"fetch_partner_directory\", \"issue_refund\"]",
            "\"draft_referral_email\", \"issue_refund\"]",
        ),
    ];
    let mut text = CLINIC.replace(
        "clinic-assistant 2026-11",
        "clinic-assistant 2026-12 (draft)",
    );
    for (from, to) in edits {
        assert!(text.contains(from), "the clinic policy changed: {from}");
        text = text.replacen(from, to, 1);
    }
    text
}

/// A deterministic pseudo-random stream (xorshift), so every run records the same month.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const QUESTIONS: [&str; 6] = [
    "parking",
    "opening hours on public holidays",
    "which insurers do you accept",
    "can I bring my child to my own appointment and is there a waiting room with toys for a \
     four-year-old",
    "how do I get a copy of my invoice",
    "is the clinic wheelchair accessible from the north entrance or only from the car park \
     behind the pharmacy",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("tollgate-policy-replay"));
    let dir = root.join("audit");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&root)?;

    // The deployment as it ran last month.
    let policy = Policy::from_toml(CLINIC)?;
    let redaction =
        Redaction::keyed_hash("audit-2026", b"a 32-byte demo key, not a secret!".to_vec())?;
    let (sink, _) = FileSink::open(&dir, policy.file_sink_config(Some(redaction))?)?;
    let sink = Arc::new(sink);
    let clock = Arc::new(ManualClock::new());
    clock.step_wall_back(Duration::from_secs(31 * 86_400));
    let guard = policy.guard(
        Bindings::new()
            .audit(sink.clone())
            .clock(clock.clone())
            .approvals(Arc::new(MemoryApprovalStore::new()))
            .provider(
                "ehr",
                StaticSecretProvider::new(SecretString::from("ehr-demo")),
            )
            .provider(
                "payments",
                StaticSecretProvider::new(SecretString::from("pay-demo")),
            ),
    )?;
    let approvals = guard
        .approvals()
        .ok_or("the clinic policy escalates")?
        .clone();
    let tick = |secs: u64| clock.advance(Duration::from_secs(secs));
    let ok = || Outcome::success().with_tokens(900, 150);

    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for day in 0..30u64 {
        for visit in 0..8u64 {
            tick(3_600);
            let patient = format!("P-{:06}", 100_000 + day * 10 + visit);
            if visit == 7 {
                // The public FAQ bot, which once tries a patient tool.
                let run = guard.start_run(RunContext::new("faq-bot", "faq_bot"))?;
                let q = QUESTIONS[rng.below(6) as usize];
                let args = serde_json::json!({ "query": q }).to_string();
                if let Verdict::Allow(p) =
                    guard.check(&run, &ToolCall::new("search_clinic_faq", args.as_str()))
                {
                    p.complete(ok())?;
                }
                if day % 10 == 3 {
                    let args = format!(r#"{{"patient_id":"{patient}"}}"#);
                    let _ = guard.check(&run, &ToolCall::new("lookup_appointments", args.as_str()));
                }
                run.finish()?;
                continue;
            }
            let run = guard.start_run(
                RunContext::new("front-desk-1", "front_desk_agent")
                    .triggered_by(format!("patient:{patient}"))
                    .in_compartment(patient.as_str()),
            )?;
            let mut calls: Vec<(&str, String, Option<f32>)> = vec![(
                "search_clinic_faq",
                serde_json::json!({ "query": QUESTIONS[rng.below(6) as usize] }).to_string(),
                None,
            )];
            calls.push((
                "lookup_appointments",
                format!(r#"{{"patient_id":"{patient}"}}"#),
                None,
            ));
            let section = ["allergies", "medications", "visits"][rng.below(3) as usize];
            calls.push((
                "read_chart_summary",
                format!(r#"{{"patient_id":"{patient}","section":"{section}"}}"#),
                None,
            ));
            if rng.below(4) == 0 {
                calls.push((
                    "fetch_partner_directory",
                    r#"{"url":"https://directory.cardiology-partners.example/cardiologists"}"#
                        .into(),
                    None,
                ));
            }
            if rng.below(3) == 0 {
                calls.push((
                    "draft_referral_email",
                    serde_json::json!({
                        "patient_id": patient,
                        "to": "referrals@cardiology-partners.example",
                        "subject": "Referral",
                        "body": format!("Please see {patient} for a follow-up on palpitations."),
                    })
                    .to_string(),
                    Some(0.7 + rng.below(30) as f32 / 100.0),
                ));
            }
            if rng.below(3) == 0 {
                let amount = 10 + rng.below(190);
                calls.push((
                    "issue_refund",
                    format!(
                        r#"{{"patient_id":"{patient}","invoice_id":"INV-{:08}","refund":{{"amount":{amount},"currency":"USD"}},"card_token":"tok_{:012}"}}"#,
                        rng.below(100_000_000),
                        rng.below(1_000_000_000_000)
                    ),
                    None,
                ));
            }
            if rng.below(12) == 0 {
                // A mistake: another patient's chart.
                calls.push((
                    "read_chart_summary",
                    r#"{"patient_id":"P-999999","section":"medications"}"#.into(),
                    None,
                ));
            }
            for (tool, args, confidence) in &calls {
                tick(60);
                let mut call = ToolCall::new(tool, args.as_str());
                if let Some(c) = confidence {
                    call = call.with_confidence(*c);
                }
                match guard.check(&run, &call) {
                    Verdict::Allow(p) => p.complete(ok())?,
                    Verdict::Escalate(request) if *tool == "issue_refund" => {
                        // A billing lead approves; the refund goes through.
                        tick(600);
                        approvals.decide(
                            &request.id,
                            &Approver::new("maria.chen"),
                            Decision::Approve,
                            "checked the invoice",
                        )?;
                        if let Verdict::Allow(p) = guard.resume(&run, &call, &request.ticket()) {
                            p.complete(ok())?;
                        }
                    }
                    // Referrals wait for a clinician; denials are recorded.
                    Verdict::Escalate(_) | Verdict::Deny(_) => {}
                }
            }
            run.finish()?;
        }
    }
    drop(guard);
    Arc::into_inner(sink)
        .ok_or("the sink is still shared")?
        .close()?;

    let candidate_path = root.join("clinic-candidate.toml");
    std::fs::write(&candidate_path, candidate())?;
    let report = Policy::from_toml(&candidate())?.replay(&dir).run()?;
    print!("{report}");
    println!(
        "\nthe same from the command line:\n  tollgate policy replay --log {} --policy {}",
        dir.display(),
        candidate_path.display()
    );
    Ok(())
}
