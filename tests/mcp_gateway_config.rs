//! The `[mcp]` section of the policy document: parsed and validated in every build (no `mcp`
//! feature needed), with located errors, and part of the document's version hash.

use tollgate::policy::{DocumentError, Policy};

const BASE: &str = r#"
[policy]
name = "gateway"
owner = "ops"
purpose = "test"
scope = "test"
liability_owner = "ops"
review_cadence = "90d"
data_handling = "none"

[tools.read_file]
effect = "read"

[roles.reader]
tools = ["read_file"]
"#;

fn parse(mcp: &str) -> Result<Policy, DocumentError> {
    Policy::from_toml(&format!("{BASE}\n{mcp}"))
}

const GOOD: &str = r#"
[mcp]
call_timeout = "5s"

[mcp.connection]
agent = "desktop"
role = "reader"

[mcp.servers.fs]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv"]
tools = { read_text_file = "read_file" }
"#;

#[test]
fn a_valid_section_parses_and_reads_back() {
    let p = parse(GOOD).unwrap();
    let mcp = p.document().mcp.as_ref().unwrap();
    assert_eq!(mcp.connection.role, "reader");
    assert_eq!(mcp.servers["fs"].policy_name("read_text_file"), "read_file");
    assert_eq!(mcp.servers["fs"].policy_name("write_file"), "write_file");
    assert_eq!(mcp.call_timeout(), std::time::Duration::from_secs(5));
}

#[test]
fn the_section_is_part_of_the_policy_version() {
    let a = parse(GOOD).unwrap();
    let b = parse(&GOOD.replace("/srv", "/")).unwrap();
    let c = parse(&GOOD.replace("call_timeout = \"5s\"", "call_timeout = \"5000ms\"")).unwrap();
    let without = Policy::from_toml(BASE).unwrap();
    assert_ne!(
        a.version(),
        b.version(),
        "a wider root must be a new version"
    );
    assert_ne!(a.version(), without.version());
    assert_eq!(
        a.version(),
        c.version(),
        "the same duration spelled differently"
    );
}

fn err(mcp: &str) -> DocumentError {
    parse(mcp).expect_err("refused")
}

#[test]
fn a_connection_role_the_document_does_not_define_is_refused_with_its_location() {
    let e = err(&GOOD.replace("role = \"reader\"", "role = \"admin\""));
    assert_eq!(e.path(), Some("mcp.connection.role"));
    assert!(e.location().is_some(), "{e}");
    assert!(e.to_string().contains("unknown role `admin`"), "{e}");
}

#[test]
fn an_explicit_name_for_a_tool_the_policy_does_not_define_is_refused() {
    let e = err(&GOOD.replace("= \"read_file\" }", "= \"read_everything\" }"));
    assert_eq!(e.path(), Some("mcp.servers.fs.tools.read_text_file"));
}

#[test]
fn a_server_with_both_or_neither_transport_is_refused() {
    let both = err(&GOOD.replace(
        "command = \"npx\"",
        "command = \"npx\"\nurl = \"https://x\"",
    ));
    assert_eq!(both.path(), Some("mcp.servers.fs"));
    let neither = err(&GOOD.replace("command = \"npx\"", ""));
    assert_eq!(neither.path(), Some("mcp.servers.fs"));
    let not_http = err(&GOOD.replace(
        "command = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/srv\"]",
        "url = \"ftp://x\"",
    ));
    assert_eq!(not_http.path(), Some("mcp.servers.fs.url"));
}

#[test]
fn two_servers_routing_the_same_policy_tool_are_refused() {
    let two = format!(
        "{GOOD}\n[mcp.servers.other]\ncommand = \"x\"\ntools = {{ read = \"read_file\" }}\n"
    );
    let e = err(&two);
    assert_eq!(e.path(), Some("mcp.servers.other.tools.read"));
    assert!(e.to_string().contains("already routed"), "{e}");
}

#[test]
fn unknown_fields_and_zero_or_overlong_limits_are_refused() {
    let e = err(&GOOD.replace("call_timeout", "call_timeot"));
    assert!(e.to_string().contains("call_timeot"), "{e}");
    let e = err(&GOOD.replace("call_timeout = \"5s\"", "max_message_bytes = 0"));
    assert_eq!(e.path(), Some("mcp.max_message_bytes"));
    let e = err(&GOOD.replace("call_timeout = \"5s\"", "call_timeout = \"0s\""));
    assert_eq!(e.path(), Some("mcp.call_timeout"));
    let e = err(&GOOD.replace("call_timeout = \"5s\"", "escalation_wait = \"2h\""));
    assert_eq!(e.path(), Some("mcp.escalation_wait"));
}

#[test]
fn a_credential_from_an_undeclared_provider_is_refused() {
    let e = err(&format!(
        "{GOOD}credential = {{ provider = \"vault\", resource = \"x\" }}\n"
    ));
    assert_eq!(e.path(), Some("mcp.servers.fs.credential.provider"));
}

#[test]
fn a_section_without_servers_is_refused() {
    let e = err("[mcp.connection]\nagent = \"a\"\nrole = \"reader\"\n[mcp]\nservers = {}\n");
    assert!(e.to_string().contains("mcp"), "{e}");
}
