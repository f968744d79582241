//! Path and URL rules through the whole boundary, including escaped JSON strings (the rule sees the
//! decoded string, exactly what the tool will receive). Each test name says which attack it tries.

mod common;

use common::{allowed, denied};
use tollgate::boundary::{ActionBoundary, Arg, DotDotMode, RoleSpec, ToolSpec};
use tollgate::{DenyCode, RunContext};

fn setup() -> (ActionBoundary, RunContext) {
    let b = ActionBoundary::builder()
        .tool(
            "read",
            ToolSpec::read()
                .compartment_arg("matter")
                .arg("matter", Arg::string().required())
                .arg(
                    "path",
                    Arg::string()
                        .required()
                        .path_under("/matters/{compartment}"),
                ),
        )
        .tool(
            "export",
            ToolSpec::write().arg(
                "path",
                Arg::string()
                    .required()
                    .path_under("/exports")
                    .dot_dot(DotDotMode::Normalize),
            ),
        )
        .tool(
            "fetch",
            ToolSpec::read().arg(
                "url",
                Arg::string()
                    .required()
                    .url_hosts(["api.courts.example", "*.lexis.example"]),
            ),
        )
        .tool(
            "webhook",
            ToolSpec::write().arg(
                "url",
                Arg::string()
                    .required()
                    .url_hosts(["hooks.firm.example"])
                    .url_schemes(["https"])
                    .url_ports([443, 8443]),
            ),
        )
        .role(
            "r",
            RoleSpec::new().tools(["read", "export", "fetch", "webhook"]),
        )
        .build()
        .unwrap();
    (b, RunContext::new("a", "r").in_compartment("M-1"))
}

fn read(path: &str) -> String {
    serde_json::json!({"matter": "M-1", "path": path}).to_string()
}

fn url(u: &str) -> String {
    serde_json::json!({ "url": u }).to_string()
}

#[test]
fn path_inside_own_matter_is_allowed() {
    let (b, c) = setup();
    for p in [
        "/matters/M-1",
        "/matters/M-1/a.pdf",
        "/matters/M-1//sub///b.pdf",
        "/matters/M-1/./c.pdf",
        "/matters/M-1/Müller.pdf",
    ] {
        allowed(&b, &c, "read", &read(p));
    }
}

#[test]
fn path_relative_is_denied_unless_the_policy_opts_in() {
    // A tool resolves a relative path against its own working directory, not the rule's root.
    let (b, c) = setup();
    denied(&b, &c, "read", &read("sub/d.pdf"), DenyCode::PathEscape);
    denied(&b, &c, "read", &read("etc/passwd"), DenyCode::PathEscape);
    let b = ActionBoundary::builder()
        .tool(
            "t",
            ToolSpec::read().arg(
                "p",
                Arg::string().path_under("/srv/data").allow_relative(true),
            ),
        )
        .role("r", RoleSpec::new().tools(["t"]))
        .build()
        .unwrap();
    let c = RunContext::new("a", "r");
    allowed(&b, &c, "t", r#"{"p":"reports/q4.csv"}"#);
    denied(
        &b,
        &c,
        "t",
        r#"{"p":"../etc/passwd"}"#,
        DenyCode::PathEscape,
    );
}

#[test]
fn path_escape_any_percent_sign_denied() {
    // `/matters/M-1%2fx` is outside the root for a tool that does not decode; `%2e%2e` is `..`
    // for one that does. Neither reading is safe.
    let (b, c) = setup();
    for p in [
        "/matters/M-1%2fx",
        "/matters/M-%31/a.pdf",
        "/matters/M-1/100%.pdf",
    ] {
        denied(&b, &c, "read", &read(p), DenyCode::PathEscape);
    }
}

#[test]
fn path_escape_dotdot_into_other_matter_denied() {
    let (b, c) = setup();
    for p in [
        "/matters/M-1/../M-2/a.pdf",
        "../M-2/a.pdf",
        "/matters/M-1/..",
        "sub/../../M-2",
    ] {
        denied(&b, &c, "read", &read(p), DenyCode::PathEscape);
    }
}

#[test]
fn path_escape_percent_encoded_and_double_encoded_dotdot_denied() {
    let (b, c) = setup();
    for p in [
        "/matters/M-1/%2e%2e/M-2",
        "/matters/M-1/%2E%2E%2FM-2",
        "/matters/M-1/..%2fM-2",
        "/matters/M-1/%252e%252e/M-2",
        "/matters/M-1/%c0%ae%c0%ae/M-2",
    ] {
        denied(&b, &c, "read", &read(p), DenyCode::PathEscape);
    }
}

#[test]
fn path_escape_json_unicode_escapes_are_decoded_before_checking() {
    let (b, c) = setup();
    // \u002e\u002e is "..": the JSON layer must not hide it from the path rule.
    denied(
        &b,
        &c,
        "read",
        r#"{"matter":"M-1","path":"/matters/M-1/\u002e\u002e/M-2/a.pdf"}"#,
        DenyCode::PathEscape,
    );
    denied(
        &b,
        &c,
        "read",
        r#"{"matter":"M-1","path":"/matters/M-1/a\u0000.pdf"}"#,
        DenyCode::PathEscape,
    );
    denied(
        &b,
        &c,
        "read",
        r#"{"matter":"M-1","path":"/matters/M-1\\..\\M-2"}"#,
        DenyCode::PathEscape,
    );
}

#[test]
fn path_escape_sibling_prefix_lookalikes_and_platform_tricks_denied() {
    let (b, c) = setup();
    for p in [
        "/matters/M-10/a.pdf",            // sibling sharing a string prefix
        "/matters/M-1\u{ff0e}\u{ff0e}/x", // fullwidth dots
        "/matters/M-1/\u{2215}etc",       // division slash
        "~/secrets",
        "C:\\Windows",
        "//server/share",
        "/matters/M-1/...",
        "/matters/M-1/secret.pdf.",
        "/etc/passwd",
        "",
    ] {
        denied(&b, &c, "read", &read(p), DenyCode::PathEscape);
    }
}

fn relative_boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tool(
            "t",
            ToolSpec::read().arg(
                "p",
                Arg::string().path_under("/srv/data").allow_relative(true),
            ),
        )
        .role("r", RoleSpec::new().tools(["t"]))
        .build()
        .unwrap()
}

fn p(path: &str) -> String {
    serde_json::json!({ "p": path }).to_string()
}

#[test]
fn path_escape_unicode_white_space_at_component_edges_denied() {
    // Tools that trim or NFKC-normalise turn these into `..`, `/etc`, `/` or `~`.
    let b = relative_boundary();
    let c = RunContext::new("a", "r");
    for path in [
        "..\u{A0}/etc/passwd",
        "..\u{3000}/etc/passwd",
        "x/..\u{2003}/..\u{2003}/etc",
        "\u{2003}/etc/passwd",
        "\u{2003}",
        "\u{3000}~/.ssh/id_rsa",
        "reports/q4.csv\u{205F}",
        "..\u{FE52}/etc",
    ] {
        denied(&b, &c, "t", &p(path), DenyCode::PathEscape);
    }
    // JSON escapes are decoded before the rule sees the string.
    denied(
        &b,
        &c,
        "t",
        r#"{"p":"..\u00a0/etc/passwd"}"#,
        DenyCode::PathEscape,
    );
    allowed(&b, &c, "t", &p("reports/q4\u{A0}2026.csv"));
}

#[test]
fn path_escape_url_shaped_value_as_relative_path_denied() {
    let b = relative_boundary();
    let c = RunContext::new("a", "r");
    for path in [
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        "s3://other-bucket/secrets.csv",
        "gs://bucket/x",
        "ftp://host/x",
    ] {
        denied(&b, &c, "t", &p(path), DenyCode::PathEscape);
    }
    allowed(&b, &c, "t", &p("reports/10:30.csv"));
}

#[test]
fn path_normalize_mode_still_cannot_climb_above_root() {
    let (b, c) = setup();
    allowed(&b, &c, "export", r#"{"path":"/exports/2026/q4.csv"}"#);
    denied(
        &b,
        &c,
        "export",
        r#"{"path":"/exports/../etc/passwd"}"#,
        DenyCode::PathEscape,
    );
    denied(
        &b,
        &c,
        "export",
        r#"{"path":"../etc/passwd"}"#,
        DenyCode::PathEscape,
    );
}

#[test]
fn url_on_allowlist_is_allowed() {
    let (b, c) = setup();
    for u in [
        "https://api.courts.example/v1/docket?id=1",
        "HTTPS://API.COURTS.EXAMPLE/x",
        "https://api.courts.example./x",
        "https://www.lexis.example/search",
        "https://a.b.lexis.example/",
        "https://api.courts.example:443/x",
    ] {
        allowed(&b, &c, "fetch", &url(u));
    }
}

#[test]
fn url_escape_userinfo_fragment_query_and_path_tricks_denied() {
    let (b, c) = setup();
    for u in [
        "https://api.courts.example@evil.example/",
        "https://user:pass@api.courts.example/",
        "https://evil.example#@api.courts.example",
        "https://evil.example?@api.courts.example",
        "https://evil.example/api.courts.example",
        "https://api.courts.example.evil.example/",
        "https://evilapi.courts.example/",
        "https://evil.example\\@api.courts.example/",
        "https://api.courts.example%2f@evil.example/",
        "https://%61pi.courts.example/",
    ] {
        denied(&b, &c, "fetch", &url(u), DenyCode::UrlNotAllowed);
    }
}

#[test]
fn url_escape_scheme_whitespace_homograph_and_ip_forms_denied() {
    let (b, c) = setup();
    for u in [
        "//api.courts.example/",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "http://api.courts.example/",
        "https://api.cour\tts.example/",
        " https://api.courts.example/",
        "https://аpi.courts.example/", // Cyrillic а
        "http://2130706433/",
        "https://0x7f.0.0.1/",
        "https://127.1/",
        "https://[::1]/",
        "https://lexis.example/", // wildcard never matches the apex
        "",
    ] {
        denied(&b, &c, "fetch", &url(u), DenyCode::UrlNotAllowed);
    }
}

#[test]
fn url_escape_json_escapes_cannot_smuggle_a_different_host() {
    let (b, c) = setup();
    denied(
        &b,
        &c,
        "fetch",
        r#"{"url":"https://api.courts.example\u0040evil.example/"}"#,
        DenyCode::UrlNotAllowed,
    );
    denied(
        &b,
        &c,
        "fetch",
        r#"{"url":"https://api.courts.example\u005c@evil.example/"}"#,
        DenyCode::UrlNotAllowed,
    );
}

#[test]
fn url_ports_outside_the_list_denied() {
    let (b, c) = setup();
    allowed(&b, &c, "webhook", &url("https://hooks.firm.example/x"));
    allowed(&b, &c, "webhook", &url("https://hooks.firm.example:8443/x"));
    for u in [
        "https://hooks.firm.example:8080/x",
        "https://hooks.firm.example:99999/x",
        "https://hooks.firm.example:/x",
    ] {
        denied(&b, &c, "webhook", &url(u), DenyCode::UrlNotAllowed);
    }
}
