//! Compartments: a run bound to one matter or patient can never touch another.

mod common;

use common::{allowed, denied};
use tollgate::boundary::{ActionBoundary, Arg, PolicyError, RoleSpec, ToolSpec};
use tollgate::{DenyCode, RunContext};

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "read_chart",
            ToolSpec::read()
                .compartment_arg("patient_id")
                .arg("patient_id", Arg::string().required())
                .arg("path", Arg::string().path_under("/charts/{compartment}")),
        )
        .tool(
            "bill",
            ToolSpec::write()
                .compartment_arg("account.number")
                .arg("account.number", Arg::integer().required()),
        )
        .tool(
            "lookup_drug",
            ToolSpec::read().arg("name", Arg::string().required()),
        )
        .role(
            "nurse",
            RoleSpec::new().tools(["read_chart", "bill", "lookup_drug"]),
        )
        .build()
        .unwrap()
}

#[test]
fn same_compartment_is_allowed() {
    let b = boundary();
    let c = RunContext::new("a", "nurse").in_compartment("P-17");
    allowed(&b, &c, "read_chart", r#"{"patient_id":"P-17"}"#);
    allowed(
        &b,
        &c,
        "read_chart",
        r#"{"patient_id":"P-17","path":"/charts/P-17/2026/labs.json"}"#,
    );
    allowed(&b, &c, "read_chart", r#"{"patient_id":"\u0050-17"}"#);
}

#[test]
fn other_compartment_is_denied() {
    let b = boundary();
    let c = RunContext::new("a", "nurse").in_compartment("P-17");
    for other in [
        "P-18",
        "p-17",
        "P-17 ",
        " P-17",
        "P-1",
        "P-170",
        "P-17\u{0}",
        "",
    ] {
        let args = serde_json::json!({ "patient_id": other }).to_string();
        denied(&b, &c, "read_chart", &args, DenyCode::CrossCompartment);
    }
}

#[test]
fn path_placeholder_binds_the_path_to_the_run_compartment() {
    let b = boundary();
    let c = RunContext::new("a", "nurse").in_compartment("P-17");
    denied(
        &b,
        &c,
        "read_chart",
        r#"{"patient_id":"P-17","path":"/charts/P-18/labs.json"}"#,
        DenyCode::PathEscape,
    );
    denied(
        &b,
        &c,
        "read_chart",
        r#"{"patient_id":"P-17","path":"/charts/P-17/../P-18/labs.json"}"#,
        DenyCode::PathEscape,
    );
    denied(
        &b,
        &c,
        "read_chart",
        r#"{"patient_id":"P-17","path":"/charts/P-170/labs.json"}"#,
        DenyCode::PathEscape,
    );
}

#[test]
fn numeric_compartment_ids_compare_by_canonical_decimal() {
    let b = boundary();
    let c = RunContext::new("a", "nurse").in_compartment("4711");
    allowed(&b, &c, "bill", r#"{"account":{"number":4711}}"#);
    denied(
        &b,
        &c,
        "bill",
        r#"{"account":{"number":4712}}"#,
        DenyCode::CrossCompartment,
    );
    denied(
        &b,
        &c,
        "bill",
        r#"{"account":{"number":-4711}}"#,
        DenyCode::CrossCompartment,
    );
}

#[test]
fn unbound_run_cannot_call_compartmented_tools() {
    let b = boundary();
    let c = RunContext::new("a", "nurse");
    denied(
        &b,
        &c,
        "read_chart",
        r#"{"patient_id":"P-17"}"#,
        DenyCode::CompartmentRequired,
    );
    // tools without a compartment argument remain usable
    allowed(&b, &c, "lookup_drug", r#"{"name":"ibuprofen"}"#);
}

#[test]
fn compartment_argument_must_be_declared_required() {
    let r = ActionBoundary::builder()
        .tool(
            "t",
            ToolSpec::read()
                .compartment_arg("matter")
                .arg("matter", Arg::string()),
        )
        .build();
    match r {
        Err(e @ PolicyError::Invalid { .. }) => {
            assert_eq!(e.field(), Some("tools.t.compartment_arg"))
        }
        other => panic!("expected an invalid-field error, got {other:?}"),
    }
    let r = ActionBoundary::builder()
        .tool("t", ToolSpec::read().compartment_arg("matter"))
        .build();
    assert!(r.is_err());
}
