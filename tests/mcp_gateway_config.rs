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
    assert_eq!(
        mcp.connection.as_ref().map(|c| c.role.as_str()),
        Some("reader")
    );
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
    for field in [
        "max_message_bytes",
        "max_server_message_bytes",
        "max_connections",
        "refused_records_per_minute",
    ] {
        let e = err(&GOOD.replace("call_timeout = \"5s\"", &format!("{field} = 0")));
        assert_eq!(e.path(), Some(format!("mcp.{field}").as_str()), "{e}");
    }
    let e = err(&GOOD.replace("call_timeout = \"5s\"", "call_timeout = \"0s\""));
    assert_eq!(e.path(), Some("mcp.call_timeout"));
    let e = err(&GOOD.replace("call_timeout = \"5s\"", "escalation_wait = \"2h\""));
    assert_eq!(e.path(), Some("mcp.escalation_wait"));
    for field in [
        "session_idle_timeout",
        "session_init_timeout",
        "sse_keep_alive",
        "header_read_timeout",
    ] {
        let e = err(&GOOD.replace("call_timeout = \"5s\"", &format!("{field} = \"0s\"")));
        assert_eq!(e.path(), Some(format!("mcp.{field}").as_str()), "{e}");
    }
}

#[test]
fn the_http_session_limits_default_to_rmcps_and_follow_the_document() {
    let p = parse(GOOD).unwrap();
    let mcp = p.document().mcp.as_ref().unwrap();
    assert_eq!(
        mcp.session_idle_timeout(),
        std::time::Duration::from_secs(300)
    );
    assert_eq!(
        mcp.session_init_timeout(),
        std::time::Duration::from_secs(60)
    );
    assert_eq!(mcp.sse_keep_alive(), std::time::Duration::from_secs(15));
    let p = parse(&GOOD.replace(
        "call_timeout = \"5s\"",
        "session_idle_timeout = \"90s\"\nsession_init_timeout = \"5s\"\nsse_keep_alive = \"2s\"",
    ))
    .unwrap();
    let mcp = p.document().mcp.as_ref().unwrap();
    assert_eq!(
        mcp.session_idle_timeout(),
        std::time::Duration::from_secs(90)
    );
    assert_eq!(
        mcp.session_init_timeout(),
        std::time::Duration::from_secs(5)
    );
    assert_eq!(mcp.sse_keep_alive(), std::time::Duration::from_secs(2));
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

/// SHA-256 of `test` and of `other` (hex).
const SHA_TEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const SHA_OTHER: &str = "d9298a10d1b0735837dc4bd85dac641b0f3cef27a47e5d53a54f2f3f5b2fcffa";

fn tokens(entries: &[(&str, &str)]) -> String {
    let mut s = GOOD.to_owned();
    for (sha, role) in entries {
        s.push_str(&format!(
            "\n[[mcp.tokens]]\nsha256 = \"{sha}\"\nagent = \"bot\"\nrole = \"{role}\"\n"
        ));
    }
    s
}

#[test]
fn token_identities_parse_and_read_back() {
    let p = parse(&tokens(&[
        (SHA_TEST, "reader"),
        (SHA_OTHER.to_uppercase().as_str(), "reader"),
    ]))
    .unwrap();
    let mcp = p.document().mcp.as_ref().unwrap();
    assert_eq!(mcp.tokens.len(), 2);
    let d = mcp.tokens[0].digest().unwrap();
    assert_eq!(d[0], 0x9f);
    assert_eq!(d[31], 0x08);
    // Hex is case-insensitive.
    assert_eq!(mcp.tokens[1].digest().unwrap()[0], 0xd9);
    assert_eq!(mcp.tokens[0].connection().role, "reader");
}

#[test]
fn a_token_role_the_document_does_not_define_is_refused_with_its_location() {
    let text = tokens(&[(SHA_TEST, "reader"), (SHA_OTHER, "admin")]);
    let e = err(&text);
    assert_eq!(e.path(), Some("mcp.tokens[1].role"));
    assert!(e.location().is_some(), "{e}");
    assert!(e.to_string().contains("admin"), "{e}");
}

#[test]
fn a_token_written_in_clear_or_as_bad_hex_is_refused() {
    // The token itself instead of its digest, a digest one digit short, a non-hex digit.
    let bad_hex = SHA_TEST.replace('f', "g");
    for bad in ["test", &SHA_TEST[1..], bad_hex.as_str()] {
        let e = err(&tokens(&[(SHA_OTHER, "reader"), (bad, "reader")]));
        assert_eq!(e.path(), Some("mcp.tokens[1].sha256"), "{bad}: {e}");
    }
}

#[test]
fn the_same_token_twice_is_refused() {
    let e = err(&tokens(&[
        (SHA_TEST, "reader"),
        (SHA_TEST.to_uppercase().as_str(), "reader"),
    ]));
    assert_eq!(e.path(), Some("mcp.tokens[1].sha256"));
    assert!(e.to_string().contains("mcp.tokens[0]"), "{e}");
}

#[test]
fn tokens_alone_name_an_identity_and_neither_is_refused() {
    let http_only = tokens(&[(SHA_TEST, "reader")]).replace(
        "[mcp.connection]\nagent = \"desktop\"\nrole = \"reader\"\n",
        "",
    );
    let p = parse(&http_only).unwrap();
    assert!(p.document().mcp.as_ref().unwrap().connection.is_none());
    let neither = GOOD.replace(
        "[mcp.connection]\nagent = \"desktop\"\nrole = \"reader\"\n",
        "",
    );
    assert_eq!(err(&neither).path(), Some("mcp.connection"));
}

#[test]
fn an_allowed_host_with_a_path_or_space_is_refused() {
    let e = err(&GOOD.replace(
        "call_timeout = \"5s\"",
        "call_timeout = \"5s\"\nallowed_hosts = [\"gw.internal\", \"evil.example/x\"]",
    ));
    assert_eq!(e.path(), Some("mcp.allowed_hosts[1]"));
}

#[test]
fn a_malformed_allowed_origin_is_refused() {
    for (bad, ok) in [
        ("https://app.example", "https://app.example:443"),
        ("app.example:443", "http://localhost:*"),
        ("https://app.example:443/path", "null"),
    ] {
        let with = |o: &str| {
            GOOD.replace(
                "call_timeout = \"5s\"",
                &format!("call_timeout = \"5s\"\nallowed_origins = [\"{o}\"]"),
            )
        };
        assert_eq!(
            err(&with(bad)).path(),
            Some("mcp.allowed_origins[0]"),
            "{bad}"
        );
        assert!(parse(&with(ok)).is_ok(), "{ok}");
    }
}

#[test]
fn the_http_connection_limits_have_defaults_and_follow_the_document() {
    let p = parse(GOOD).unwrap();
    let mcp = p.document().mcp.as_ref().unwrap();
    assert_eq!(
        mcp.header_read_timeout(),
        std::time::Duration::from_secs(10)
    );
    assert_eq!(mcp.max_connections(), 512);
    assert_eq!(mcp.refused_records_per_minute(), 600);
    let p = parse(&GOOD.replace(
        "call_timeout = \"5s\"",
        "header_read_timeout = \"2s\"\nmax_connections = 8\nrefused_records_per_minute = 5",
    ))
    .unwrap();
    let mcp = p.document().mcp.as_ref().unwrap();
    assert_eq!(mcp.header_read_timeout(), std::time::Duration::from_secs(2));
    assert_eq!(mcp.max_connections(), 8);
    assert_eq!(mcp.refused_records_per_minute(), 5);
}

#[test]
fn inherit_env_applies_to_a_spawned_server_only() {
    let p = parse(&GOOD.replace("tools = {", "inherit_env = true\ntools = {")).unwrap();
    let mcp = p.document().mcp.as_ref().unwrap();
    assert!(mcp.servers["fs"].inherits_env());
    assert!(
        !parse(GOOD)
            .unwrap()
            .document()
            .mcp
            .as_ref()
            .unwrap()
            .servers["fs"]
            .inherits_env()
    );
    let e = err(&GOOD.replace(
        "command = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/srv\"]",
        "url = \"https://x.example/mcp\"\ninherit_env = true",
    ));
    assert_eq!(e.path(), Some("mcp.servers.fs"), "{e}");
    assert!(e.to_string().contains("inherit_env"), "{e}");
}
