//! PHI read for one patient cannot reach a notes/memory tool or another patient's record; a
//! clinician's endorsement lets one value through, audited. Everything goes through a `Guard`
//! built from one policy document with a `[flow]` section; after each decision the example
//! prints the `flow_check` audit record that explains it (rule, violation, where each value came
//! from, its tier and compartment, the endorsement used: never the value).
//!
//! The assistant works across the clinician's patients, so its runs are not bound to one
//! patient's compartment by the boundary; the flow rules keep the patients apart instead.
//!
//! `cargo run --example clinic_phi_flow`

use std::sync::Arc;

use serde_json::{Value, json};
use tollgate::audit::MemorySink;
use tollgate::flow::{EndorsementScope, Output};
use tollgate::policy::{Bindings, Policy};
use tollgate::{Guard, Outcome, Run, RunContext, ToolCall, Verdict};

const DOCUMENT: &str = r#"
tiers = ["public", "internal", "phi"]

[policy]
name = "clinic-assistant flow demo"
owner = "Clinical Informatics <informatics@clinic.example>"
purpose = "Summarise the charts of a clinician's patients and keep working notes."
scope = "The treating clinician's own patients; flow rules keep each patient's PHI in that patient's record."
liability_owner = "Chief Medical Officer"
review_cadence = "90d"
data_handling = "PHI stays in its patient's record; the assistant's memory holds no PHI."

[tools.read_chart_summary]
effect = "read"
tier = "phi"
args.patient_id = { type = "string", required = true, pattern = "P-[0-9]{6}" }

[tools.write_chart_note]
effect = "write"
tier = "phi"
args.patient_id = { type = "string", required = true, pattern = "P-[0-9]{6}" }
args.note = { type = "string", required = true, max_length = 4000 }

[tools.save_memory]
effect = "write"
tier = "internal"
description = "The assistant's long-lived memory across tasks (unclassified)."
args.text = { type = "string", required = true, max_length = 4000 }

[roles.clinical_assistant]
clearance = "phi"
tools = ["read_chart_summary", "write_chart_note", "save_memory"]

[flow]
on_violation = "deny"
tier_retention = { phi = "task" }

[flow.tools.read_chart_summary]
integrity = "trusted"
tier = "phi"
compartment_arg = "patient_id"
exclusive_compartment = true      # a context holding one patient may not read another
on_violation = "quarantine"       # the read runs for the record, the model never sees it

[flow.tools.write_chart_note]
compartment_arg = "patient_id"
args.note = { match = "parts", parts = ["identifier", "email", "phone"], same_compartment = true }

[flow.tools.save_memory]
retention = "forever"
args.text = { match = "parts", parts = ["identifier", "email", "phone"], max_tier = "internal" }
"#;

/// Checks one call, prints the verdict and the flow record that explains it; runs allowed calls
/// (delivering `output` when given) and returns whether the call was allowed.
fn step(
    guard: &Guard,
    sink: &MemorySink,
    run: &Run,
    label: &str,
    tool: &str,
    args: &Value,
    output: Option<&Value>,
) -> Result<&'static str, Box<dyn std::error::Error>> {
    println!("{label}");
    let before = sink.events().len();
    let verdict = guard.check(run, &ToolCall::new(tool, args));
    for e in &sink.events()[before..] {
        if e["event"] == "flow_check" {
            println!("  flow record: {}", e["tollgate.flow"]);
        }
    }
    Ok(match verdict {
        Verdict::Allow(permit) => {
            let shown = match output {
                Some(v) => permit.deliver(Output::Json(v))?,
                None => tollgate::Delivery::Show,
            };
            match shown.withheld() {
                Some(text) => println!("  allowed, output withheld; the model is given: {text}"),
                None => println!("  allowed"),
            }
            permit.complete(Outcome::success())?;
            if shown.withheld().is_some() {
                "quarantine"
            } else {
                "allow"
            }
        }
        Verdict::Escalate(req) => {
            println!("  escalated: approval {}", req.id);
            "escalate"
        }
        Verdict::Deny(d) => {
            println!("  denied ({}): {}", d.code().as_str(), d.reason());
            "deny"
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = Policy::from_toml(DOCUMENT)?;
    let sink = Arc::new(MemorySink::new());
    let guard = policy.guard(Bindings::new().audit(sink.clone()))?;
    let run = guard.start_run(RunContext::new("clinic-bot", "clinical_assistant"))?;
    run.observe_prompt("Summarise patient P-100001's medications and keep a working note.")?;

    // The chart of patient P-100001 enters the context (PHI, compartment P-100001).
    let chart = json!({
        "patient": "P-100001",
        "mrn": "MRN-483920",
        "medications": ["metformin 500mg twice daily", "lisinopril 20mg"],
        "diagnosis": "E11.9 type 2 diabetes",
        "contact": "+41 44 555 0199"
    });
    let read_a = json!({"patient_id": "P-100001"});
    let r = step(
        &guard,
        &sink,
        &run,
        "read_chart_summary of P-100001",
        "read_chart_summary",
        &read_a,
        Some(&chart),
    )?;
    assert_eq!(r, "allow");

    // 1. PHI into the unclassified, long-lived memory: denied (confidentiality).
    let memory = json!({"text": "Patient MRN-483920 on metformin 500mg; diagnosis E11.9."});
    let r = step(
        &guard,
        &sink,
        &run,
        "save_memory with the chart's identifiers",
        "save_memory",
        &memory,
        None,
    )?;
    assert_eq!(r, "deny");

    // 2. Generic text without PHI: allowed.
    let memory_ok = json!({"text": "Prefers summaries as bullet lists."});
    let r = step(
        &guard,
        &sink,
        &run,
        "save_memory without PHI",
        "save_memory",
        &memory_ok,
        None,
    )?;
    assert_eq!(r, "allow");

    // 3. Patient A's PHI into patient B's record: denied (compartment) ...
    let note_b =
        json!({"patient_id": "P-200002", "note": "Same regimen as MRN-483920: metformin 500mg."});
    let r = step(
        &guard,
        &sink,
        &run,
        "write_chart_note on P-200002 with P-100001's data",
        "write_chart_note",
        &note_b,
        None,
    )?;
    assert_eq!(r, "deny");
    // ... while a note in patient A's own record is fine.
    let note_a =
        json!({"patient_id": "P-100001", "note": "Reviewed MRN-483920: metformin 500mg dosing."});
    let r = step(
        &guard,
        &sink,
        &run,
        "write_chart_note on P-100001 with its own data",
        "write_chart_note",
        &note_a,
        None,
    )?;
    assert_eq!(r, "allow");

    // 4. Reading patient B into a context holding patient A: the read runs (for the record),
    //    the model never sees it.
    let chart_b =
        json!({"patient": "P-200002", "mrn": "MRN-771203", "diagnosis": "I10 hypertension"});
    let read_b = json!({"patient_id": "P-200002"});
    let r = step(
        &guard,
        &sink,
        &run,
        "read_chart_summary of P-200002 in a P-100001 context",
        "read_chart_summary",
        &read_b,
        Some(&chart_b),
    )?;
    assert_eq!(r, "quarantine");

    // 5. A clinician endorses one value for the memory (the diabetes code, for the care team's
    //    shared protocol list): recorded, used once.
    let id = run.endorse(
        "E11.9",
        "dr.rivera",
        "diagnosis code only, for the team's protocol list",
        EndorsementScope::Once,
    )?;
    println!("endorsement #{id} by dr.rivera recorded");
    let code = json!({"text": "Protocol list: E11.9"});
    let r = step(
        &guard,
        &sink,
        &run,
        "save_memory of the endorsed code",
        "save_memory",
        &code,
        None,
    )?;
    assert_eq!(r, "allow");
    let r = step(
        &guard,
        &sink,
        &run,
        "the same again (the endorsement was for once)",
        "save_memory",
        &code,
        None,
    )?;
    assert_eq!(r, "deny");

    println!(
        "\nindex memory for this run: {} bytes",
        run.flow_memory_bytes()
    );
    run.finish()?;
    let kinds: Vec<String> = sink
        .events()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?").to_owned())
        .collect();
    println!("audit trail: {}", kinds.join(", "));
    let trail = serde_json::to_string(&sink.events())?;
    assert!(
        !trail.contains("MRN-771203"),
        "patient B's data never reached the trail"
    );
    Ok(())
}
