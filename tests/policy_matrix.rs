//! The access-control matrix for sign-off: Markdown, CSV and an HTML page checked in a real
//! headless browser.

mod common;

use tollgate::policy::{MatrixFormat, Policy};

fn clinic() -> Policy {
    Policy::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/policies/clinic.toml"
    ))
    .unwrap()
}

#[test]
fn markdown_and_csv_hold_every_role_tool_and_the_version() {
    let p = clinic();
    let md = p.matrix(MatrixFormat::Markdown);
    let version = p.version().to_string();
    assert!(md.contains(&version));
    for role in p.document().roles.keys() {
        assert!(md.contains(&format!(" {role} |")), "role {role} missing");
    }
    for tool in p.document().tools.keys() {
        assert!(md.contains(&format!("### `{tool}`")), "tool {tool} missing");
    }
    // Plain-language limits and conditions.
    assert!(md.contains("`refund.amount`: required; number; from 0.01 to 2000"));
    assert!(md.contains(
        "`card_token`: required; string; up to 64 characters; never written to the audit trail"
    ));
    assert!(md.contains("rule `refund-over-100`"));
    assert!(md.contains("front_desk_agent via `payments`: write on `refunds/{compartment}/*`, valid 2m, at most 1 use(s)"));
    assert!(md.contains("hipaa: kept 6y"));
    assert!(md.contains(
        "Budget per run: at most 60 tool calls, 15m of wall time, 200000 tokens, a cost of 2.50."
    ));
    assert!(md.contains("| `search_clinic_faq` | read | public | allowed | allowed | allowed |"));

    let csv = p.matrix(MatrixFormat::Csv);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 1 + 3 * 6, "header + roles x tools");
    let refund_row = rows
        .iter()
        .find(|r| r.starts_with("front_desk_agent,issue_refund,allowed,irreversible,phi,"))
        .expect("the refund row");
    assert!(refund_row.ends_with(&version));
    assert!(
        rows.iter()
            .any(|r| r.starts_with("faq_bot,issue_refund,-,"))
    );
}

/// The HTML page renders in headless Chromium: the DOM after rendering holds a header and a row
/// for every role and tool, and a screenshot is produced.
#[test]
fn the_html_matrix_renders_in_a_headless_browser() {
    let p = clinic();
    let tmp = common::tempdir::temp_dir("matrix", "html");
    let dir = tmp.path();
    let page = dir.join("matrix.html");
    std::fs::write(&page, p.matrix(MatrixFormat::Html)).unwrap();
    let Some(dom) = common::dump_dom(&page, dir) else {
        return;
    };
    assert!(dom.contains("<title>Access-control matrix: clinic-assistant 2026-11</title>"));
    for role in p.document().roles.keys() {
        assert!(
            dom.contains(&format!("data-role=\"{role}\"")),
            "role {role} not rendered"
        );
    }
    for tool in p.document().tools.keys() {
        assert!(
            dom.contains(&format!("data-tool=\"{tool}\"")),
            "tool {tool} not rendered"
        );
        assert!(
            dom.contains(&format!("id=\"tool-{tool}\"")),
            "tool {tool} section missing"
        );
    }
    assert!(dom.contains(&p.version().to_string()));

    let shot = dir.join("matrix.png");
    common::headless_chromium(
        &page,
        &dir.join("profile2"),
        &[
            "--window-size=1200,1600".to_owned(),
            format!("--screenshot={}", shot.display()),
        ],
    )
    .expect("chromium was found for the DOM above");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}
