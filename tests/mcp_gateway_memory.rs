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

/// The same rule when the record comes back in another content shape: an embedded text resource,
/// a resource link, an embedded blob (opaque, but its URI is read), an image whose `_meta` holds
/// the record. Every textual part of every content block is in the flow index, so the number
/// read in any of them cannot be stored (before, only text blocks were indexed: a record
/// returned as a resource was stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_number_read_in_any_content_shape_cannot_be_stored() {
    let Some(node) = common::node::servers() else {
        return;
    };
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/records_server.mjs");
    let tmp = common::tempdir::temp_dir("mcp-memory", "shapes");
    for shape in ["text", "resource", "link", "blob", "image", "result_meta"] {
        let store = tmp.path().join(format!("store-{shape}.jsonl"));
        let text_doc = format!(
            r#"tiers = ["public", "internal", "phi"]
{METADATA}
[tools.read_patient]
effect = "read"
tier = "phi"
args.as = {{ type = "string" }}

[tools.store_memory]
effect = "write"
tier = "internal"
args.note = {{ type = "string", required = true }}

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
command = "{node}"
args = ["{script}"]
env = {{ STORE_FILE = "{store}" }}
"#,
            node = node.node.display(),
            script = script.display(),
            store = store.display(),
        );
        let h = harness::start(&Policy::from_toml(&text_doc).expect("policy")).await;
        let read = h.call("read_patient", json!({"as": shape})).await;
        assert!(!is_error(&read), "{shape}: {read:?}");
        let note = json!({"note": format!("call the patient back on {PHONE}")});
        let st = h.call("store_memory", note).await;
        assert!(is_error(&st), "{shape}: the store went through: {st:?}");
        let stored = std::fs::read_to_string(&store).unwrap_or_default();
        assert!(!stored.contains("555"), "{shape}: PHI was stored: {stored}");
        let denied: Vec<_> = h
            .events("decision")
            .into_iter()
            .filter(|e| e["tollgate.decision"] == "deny")
            .collect();
        assert_eq!(denied.len(), 1, "{shape}: {denied:?}");
        assert_eq!(denied[0]["tollgate.deny.code"], "flow_violation", "{shape}");
        // A value seen nowhere may still be stored: the shapes label, they do not block all.
        let ok = h
            .call(
                "store_memory",
                json!({"note": "prefers morning appointments"}),
            )
            .await;
        assert!(!is_error(&ok), "{shape}: {ok:?}");
        h.gateway.shutdown();
    }
}
