//! PHI read for one patient cannot reach a notes/memory tool or another patient's record; a
//! clinician's endorsement lets one value through, and every decision prints the facts an audit
//! record carries (rule, violation, where each value came from, its tier and compartment, the
//! endorsement).
//!
//! `cargo run --example clinic_phi_flow`

use serde_json::json;
use tollgate::call::Principal;
use tollgate::flow::{EndorsementScope, FlowDecision, FlowPolicy, FlowRules, FlowTracker, Output};
use tollgate::policy::Policy;
use tollgate::{RunContext, ToolCall};

const DOCUMENT: &str = r#"
tiers = ["public", "internal", "phi"]

[policy]
name = "clinic-assistant flow demo"
owner = "Clinical Informatics <informatics@clinic.example>"
purpose = "Summarise a patient's chart for the treating clinician and keep working notes."
scope = "One patient per task."
liability_owner = "Chief Medical Officer"
review_cadence = "90d"
data_handling = "PHI stays in its patient's record; the assistant's memory holds no PHI."

[tools.read_chart_summary]
effect = "read"
tier = "phi"
compartment_arg = "patient_id"
args.patient_id = { type = "string", required = true, pattern = "P-[0-9]{6}" }

[tools.write_chart_note]
effect = "write"
tier = "phi"
compartment_arg = "patient_id"
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

/// The document through `Policy`, its `[flow]` section compiled against the document's tiers
/// and tools (until the document type embeds `[flow]` itself).
fn load() -> Result<(Policy, FlowRules), Box<dyn std::error::Error>> {
    let mut table: toml::Table = toml::from_str(DOCUMENT)?;
    let flow: FlowPolicy = table.remove("flow").ok_or("no [flow]")?.try_into()?;
    let policy = Policy::from_json(&serde_json::to_string(&table)?)?;
    let tools: Vec<&str> = policy.document().tools.keys().map(String::as_str).collect();
    let rules = flow.compile(&policy.document().tiers, &tools)?;
    Ok((policy, rules))
}

fn print(label: &str, rules: &FlowRules, tracker: &FlowTracker, d: &FlowDecision) {
    println!("{label}");
    println!(
        "  decision: {}  rule: {}  violation: {}",
        d.action.name(),
        d.rule.as_ref().map_or("-", |r| r.as_str()),
        d.violation.map_or("-", |v| v.name())
    );
    for f in &d.findings {
        let compartments: Vec<&str> = tracker
            .compartment_names(f.origin.compartments)
            .map(|c| c.as_str())
            .collect();
        let endorsement = f.endorsement.and_then(|id| {
            tracker
                .endorsements()
                .iter()
                .find(|e| e.id == id)
                .map(|e| format!("#{} by {} ({})", e.id, e.by, e.reason))
        });
        println!(
            "  - arg `{}`{}: from {:?}, tier {}, compartments {:?}{}{}",
            f.arg,
            f.part.map_or(String::new(), |k| format!(" [{}]", k.name())),
            f.origin.sources.names(),
            f.origin
                .max_tier
                .and_then(|t| rules.tier_name(t))
                .unwrap_or("-"),
            compartments,
            f.violation
                .map_or(String::new(), |v| format!(", violates {}", v.name())),
            endorsement.map_or(String::new(), |e| format!(", endorsed {e}")),
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (policy, rules) = load()?;
    let ctx = RunContext::new("clinic-bot", "clinical_assistant").in_compartment("P-100001");
    let mut run = rules.tracker();
    run.observe_prompt("Summarise patient P-100001's medications and keep a working note.");

    // The chart of patient P-100001 enters the context (PHI, compartment P-100001).
    let read_a = json!({"patient_id": "P-100001"});
    assert!(
        policy
            .boundary()
            .check(&ctx, &ToolCall::new("read_chart_summary", &read_a))
            .is_ok()
    );
    let chart = json!({
        "patient": "P-100001",
        "mrn": "MRN-483920",
        "medications": ["metformin 500mg twice daily", "lisinopril 20mg"],
        "diagnosis": "E11.9 type 2 diabetes",
        "contact": "+41 44 555 0199"
    });
    rules.observe_output(
        &mut run,
        "read_chart_summary",
        (&read_a).into(),
        Output::Json(&chart),
    );

    // 1. PHI into the unclassified, long-lived memory: denied (confidentiality).
    let memory = json!({"text": "Patient MRN-483920 on metformin 500mg; diagnosis E11.9."});
    let d = rules.check(&run, "save_memory", (&memory).into());
    print("save_memory with the chart's identifiers", &rules, &run, &d);
    assert_eq!(d.action.name(), "deny");

    // 2. Generic text without PHI: allowed.
    let memory_ok = json!({"text": "Prefers summaries as bullet lists."});
    let d = rules.check(&run, "save_memory", (&memory_ok).into());
    print("save_memory without PHI", &rules, &run, &d);
    assert!(d.is_allowed());

    // 3. Patient A's PHI into patient B's record: denied (compartment).
    let note_b =
        json!({"patient_id": "P-200002", "note": "Same regimen as MRN-483920: metformin 500mg."});
    let d = rules.check(&run, "write_chart_note", (&note_b).into());
    print(
        "write_chart_note on P-200002 with P-100001's data",
        &rules,
        &run,
        &d,
    );
    assert_eq!(d.action.name(), "deny");

    // ... while the same note in patient A's own record is fine.
    let note_a = json!({"patient_id": "P-100001", "note": "Reviewed metformin 500mg dosing."});
    let d = rules.check(&run, "write_chart_note", (&note_a).into());
    print(
        "write_chart_note on P-100001 with its own data",
        &rules,
        &run,
        &d,
    );
    assert!(d.is_allowed());

    // 4. Reading patient B into a context holding patient A: quarantined.
    let read_b = json!({"patient_id": "P-200002"});
    let d = rules.check(&run, "read_chart_summary", (&read_b).into());
    print(
        "read_chart_summary of P-200002 in a P-100001 context",
        &rules,
        &run,
        &d,
    );
    assert_eq!(d.action.name(), "quarantine");
    println!(
        "  the model is given: {}",
        rules.quarantine_text("read_chart_summary", d.rule.as_ref())
    );

    // 5. A clinician endorses one value for the memory (the diabetes code, for the care team's
    //    shared protocol list): recorded, used once.
    let id = run.endorse(
        "E11.9",
        Principal::new("dr.rivera"),
        "diagnosis code only, for the team's protocol list",
        EndorsementScope::Once,
    );
    let code = json!({"text": "Protocol list: E11.9"});
    let d = rules.check(&run, "save_memory", (&code).into());
    print("save_memory of the endorsed code", &rules, &run, &d);
    assert!(d.is_allowed());
    assert_eq!(d.findings[0].endorsement, Some(id));
    let d = rules.check(&run, "save_memory", (&code).into());
    print(
        "the same again (the endorsement was for once)",
        &rules,
        &run,
        &d,
    );
    assert_eq!(d.action.name(), "deny");

    println!("\nendorsements recorded in this run:");
    for e in run.endorsements() {
        println!(
            "  #{} by {}: {} ({:?}, {} use(s) left)",
            e.id,
            e.by,
            e.reason,
            e.scope,
            e.remaining()
        );
    }
    println!("index memory for this run: {} bytes", run.memory_bytes());
    Ok(())
}
