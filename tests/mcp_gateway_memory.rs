//! The gateway in front of two real `@modelcontextprotocol/server-memory` servers (from npm):
//! one holds patient records, the other is the assistant's long-lived memory. A PHI flow rule
//! keeps values read from a patient's record out of the memory.
#![cfg(feature = "mcp")]

mod common;

use common::node::harness::{self, METADATA, is_error, text};
use serde_json::json;
use tollgate::policy::Policy;

const PHONE: &str = "+1 415 555 0142";

fn policy(bin: &std::path::Path, records: &std::path::Path, memory: &std::path::Path) -> Policy {
    let text = format!(
        r#"tiers = ["public", "internal", "phi"]
{METADATA}
[tools.read_patient]
effect = "read"
tier = "phi"
args.names = {{ type = "array", required = true }}

[tools.store_memory]
effect = "write"
tier = "internal"
args.entities = {{ type = "array", required = true }}

[roles.assistant]
clearance = "phi"
tools = ["read_patient", "store_memory"]

[flow]
on_violation = "deny"

[flow.tools.read_patient]
integrity = "trusted"
tier = "phi"

[flow.tools.store_memory]
args."*" = {{ match = "parts", parts = ["identifier", "email", "phone"], max_tier = "internal" }}

[mcp.connection]
agent = "clinic-assistant"
role = "assistant"

[mcp.servers.records]
command = "{bin}"
env = {{ MEMORY_FILE_PATH = "{records}" }}
prefix = "records_"
tools = {{ open_nodes = "read_patient" }}

[mcp.servers.memory]
command = "{bin}"
env = {{ MEMORY_FILE_PATH = "{memory}" }}
prefix = "memory_"
tools = {{ create_entities = "store_memory" }}
"#,
        bin = bin.display(),
        records = records.display(),
        memory = memory.display(),
    );
    Policy::from_toml(&text).expect("policy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_number_read_from_a_patient_record_cannot_be_stored_in_memory() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let tmp = common::tempdir::temp_dir("mcp-memory", "phi");
    let dir = tmp.path();
    let records = dir.join("records.jsonl");
    let memory = dir.join("memory.jsonl");
    let patient = json!({
        "type": "entity",
        "name": "P-123456",
        "entityType": "patient",
        "observations": [format!("mobile {PHONE}"), "allergic to penicillin"],
    });
    std::fs::write(&records, format!("{patient}\n")).unwrap();

    let h = harness::start(&policy(&node.bin("mcp-server-memory"), &records, &memory)).await;
    // Only the two mapped tools are visible; the servers' other tools are not in the policy.
    assert_eq!(h.tool_names().await, ["read_patient", "store_memory"]);

    let read = h.call("read_patient", json!({"names": ["P-123456"]})).await;
    assert!(!is_error(&read), "{read:?}");
    assert!(text(&read).contains(PHONE), "{}", text(&read));

    // The model now tries to keep the number in its long-lived memory.
    let store = h
        .call(
            "store_memory",
            json!({"entities": [{"name": "callback", "entityType": "todo",
                                 "observations": [format!("call the patient back on {PHONE}")]}]}),
        )
        .await;
    assert!(is_error(&store), "{store:?}");
    let stored = std::fs::read_to_string(&memory).unwrap_or_default();
    assert!(
        !stored.contains("555"),
        "PHI reached the memory server: {stored}"
    );
    let denied: Vec<_> = h
        .events("decision")
        .into_iter()
        .filter(|e| e["tollgate.decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["tollgate.deny.code"], "flow_violation");
    assert_eq!(denied[0]["gen_ai.tool.name"], "store_memory");
    let flow = h.events("flow_check");
    assert!(
        flow.iter().any(|e| e["gen_ai.tool.name"] == "store_memory"),
        "{flow:?}"
    );

    // A value the user gave (seen nowhere in a record) may be stored.
    let ok = h
        .call(
            "store_memory",
            json!({"entities": [{"name": "preference", "entityType": "note",
                                 "observations": ["prefers morning appointments"]}]}),
        )
        .await;
    assert!(!is_error(&ok), "{ok:?}");
    let stored = std::fs::read_to_string(&memory).unwrap_or_default();
    assert!(stored.contains("prefers morning"), "{stored}");
}
