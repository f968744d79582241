//! Policy documents in TOML and JSON: equivalence with the builder, errors that name the field,
//! and the version hash.

use tollgate::boundary::{ActionBoundary, Arg, PolicyError, RoleSpec, ToolSpec};
use tollgate::{RunContext, ToolCall};

#[path = "common/tempdir.rs"]
mod tempdir;

const TOML: &str = r#"
name = "p"
tiers = ["public", "confidential"]

[tools.search]
effect = "read"
tier = "public"
args.q = { type = "string", required = true, max_length = 100 }

[tools.pay]
effect = "irreversible"
tier = "confidential"
args."payment.amount" = { type = "number", required = true, max = 500 }

[roles.clerk]
clearance = "confidential"
tools = ["search", "pay"]
"#;

const JSON: &str = r#"{
  "name": "p",
  "tiers": ["public", "confidential"],
  "tools": {
    "search": {"effect": "read", "tier": "public", "args": {"q": {"type": "string", "required": true, "max_length": 100}}},
    "pay": {"effect": "irreversible", "tier": "confidential", "args": {"payment.amount": {"type": "number", "required": true, "max": 500}}}
  },
  "roles": {"clerk": {"clearance": "confidential", "tools": ["search", "pay"]}}
}"#;

fn built() -> ActionBoundary {
    ActionBoundary::builder()
        .name("p")
        .tiers(["public", "confidential"])
        .tool(
            "search",
            ToolSpec::read()
                .tier("public")
                .arg("q", Arg::string().required().max_length(100)),
        )
        .tool(
            "pay",
            ToolSpec::irreversible()
                .tier("confidential")
                .arg("payment.amount", Arg::number().required().max(500.0)),
        )
        .role(
            "clerk",
            RoleSpec::new()
                .clearance("confidential")
                .tools(["search", "pay"]),
        )
        .build()
        .unwrap()
}

#[test]
fn toml_json_and_builder_compile_to_the_same_policy_version() {
    let t = ActionBoundary::from_toml(TOML).unwrap();
    let j = ActionBoundary::from_json(JSON).unwrap();
    let b = built();
    assert_eq!(t.version(), j.version());
    assert_eq!(t.version(), b.version());
    assert_eq!(t.document(), b.document());
    let ctx = RunContext::new("a", "clerk");
    let call = ToolCall::new("pay", r#"{"payment":{"amount":501}}"#);
    for x in [&t, &j, &b] {
        assert!(x.check(&ctx, &call).is_err());
    }
}

#[test]
fn any_change_changes_the_version() {
    let a = ActionBoundary::from_toml(TOML).unwrap().version();
    let b = ActionBoundary::from_toml(&TOML.replace("max = 500", "max = 501"))
        .unwrap()
        .version();
    let c = ActionBoundary::from_toml(&TOML.replace("name = \"p\"", "name = \"q\""))
        .unwrap()
        .version();
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.to_string().len(), 64);
    assert_eq!(format!("{a:#}").len(), 12);
}

fn err(toml: &str) -> PolicyError {
    ActionBoundary::from_toml(toml).expect_err("policy should be rejected")
}

#[test]
fn typo_in_a_field_name_is_an_error_naming_where() {
    let e = err(&TOML.replace("required = true, max_length", "requried = true, max_length"));
    let text = e.to_string();
    assert!(matches!(e, PolicyError::Parse { .. }), "{e:?}");
    assert_eq!(e.field(), Some("tools.search.args.q.requried"), "{text}");
    assert!(text.contains("line 8"), "{text}");
    assert!(text.contains("requried"), "{text}");
}

#[test]
fn wrong_value_shape_names_the_field() {
    let e = err(&TOML.replace(r#"effect = "read""#, r#"effect = "reed""#));
    assert_eq!(e.field(), Some("tools.search.effect"), "{e}");
    let e = err(&TOML.replace("max = 500", r#"max = "500""#));
    assert_eq!(e.field(), Some("tools.pay.args.payment.amount.max"), "{e}");
}

#[test]
fn missing_effect_is_an_error() {
    let e = err("[tools.x]\ntier = \"public\"\n");
    assert!(e.to_string().contains("effect"), "{e}");
}

#[test]
fn unknown_tier_names_the_field_and_the_known_tiers() {
    let e = err(&TOML.replace(r#"tier = "public""#, r#"tier = "secret""#));
    match &e {
        PolicyError::UnknownTier { field, tier, known } => {
            assert_eq!(field, "tools.search.tier");
            assert_eq!(tier, "secret");
            assert_eq!(known, "public, confidential");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_tier_when_tiers_are_defined_is_an_error() {
    let e = err(&TOML.replace("tier = \"public\"\n", ""));
    assert_eq!(e.field(), Some("tools.search.tier"), "{e}");
}

#[test]
fn role_naming_an_unknown_tool_is_an_error() {
    let e = err(&TOML.replace(
        r#"tools = ["search", "pay"]"#,
        r#"tools = ["search", "payy"]"#,
    ));
    match &e {
        PolicyError::UnknownTool { field, tool } => {
            assert_eq!(field, "roles.clerk.tools[1]");
            assert_eq!(tool, "payy");
        }
        other => panic!("{other:?}"),
    }
}

/// Roles follow the rules of tool names: a reviewer signing the access matrix must not see two
/// columns that look alike (case, separators, invisible or look-alike characters).
#[test]
fn role_names_that_look_alike_or_hide_characters_are_errors() {
    for (extra, field, says) in [
        (
            "[roles.Clerk]\nclearance = \"public\"\ntools = []\n",
            "roles.clerk",
            "differ only in case",
        ),
        (
            "[roles.\"ops-lead\"]\nclearance = \"public\"\ntools = []\n\
             [roles.ops_lead]\nclearance = \"public\"\ntools = []\n",
            "roles.ops_lead",
            "differ only in case or separators",
        ),
        (
            "[roles.\"cl\\u200berk\"]\nclearance = \"public\"\ntools = []\n",
            "roles.cl\u{200b}erk",
            "ASCII",
        ),
        (
            "[roles.\"clerk \"]\nclearance = \"public\"\ntools = []\n",
            "roles.clerk ",
            "ASCII",
        ),
    ] {
        let e = err(&format!("{TOML}\n{extra}"));
        assert_eq!(e.field(), Some(field), "{extra}: {e}");
        assert!(e.to_string().contains(says), "{extra}: {e}");
    }
}

#[test]
fn invalid_constraints_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            r#"args.q = { type = "string", pattern = "(" }"#,
            "tools.t.args.q.pattern",
        ),
        (
            r#"args.q = { type = "integer", max_length = 3 }"#,
            "tools.t.args.q",
        ),
        (r#"args.q = { min = 5, max = 1 }"#, "tools.t.args.q.min"),
        (
            r#"args.q = { path_under = "relative/root" }"#,
            "tools.t.args.q.path_under",
        ),
        (
            r#"args.q = { path_under = "/a/../b" }"#,
            "tools.t.args.q.path_under",
        ),
        (
            r#"args.q = { url_hosts = ["exa mple.com"] }"#,
            "tools.t.args.q.url_hosts",
        ),
        (
            r#"args.q = { url_hosts = ["ехample.com"] }"#,
            "tools.t.args.q.url_hosts",
        ),
        (r#"args.q = { enum = [] }"#, "tools.t.args.q.enum"),
        (r#"args.q = { enum = [[1]] }"#, "tools.t.args.q.enum[0]"),
        (
            r#"args.q = { forbidden = true, required = true }"#,
            "tools.t.args.q",
        ),
        (r#"args.q = { dot_dot = "normalize" }"#, "tools.t.args.q"),
        (r#"args."a..b" = { type = "string" }"#, "tools.t.args.a..b"),
        (r#"args."a[0]" = { type = "string" }"#, "tools.t.args.a[0]"),
        (
            r#"args.q = { type = "string", enum = [1, 2] }"#,
            "tools.t.args.q.enum[0]",
        ),
        (
            r#"args.q = { type = "integer", enum = ["1"] }"#,
            "tools.t.args.q.enum[0]",
        ),
        (
            r#"args.q = { pattern = "M-[0-9]{4})|(.*" }"#,
            "tools.t.args.q.pattern",
        ),
        (r#"args."q[]" = { required = true }"#, "tools.t.args.q[]"),
        (
            r#"args.q = { url_hosts = ["*.com"] }"#,
            "tools.t.args.q.url_hosts",
        ),
        (
            r#"args.q = { url_hosts = ["a.example"], url_schemes = ["file"] }"#,
            "tools.t.args.q.url_hosts",
        ),
    ];
    for (arg, field) in cases {
        let doc = format!("[tools.t]\neffect = \"read\"\n{arg}\n");
        let e = err(&doc);
        assert_eq!(e.field(), Some(*field), "{arg}: {e}");
    }
}

#[test]
fn non_finite_bounds_are_rejected() {
    let r = ActionBoundary::builder()
        .tool("t", ToolSpec::read().arg("n", Arg::number().max(f64::NAN)))
        .build();
    assert_eq!(r.unwrap_err().field(), Some("tools.t.args.n.max"));
}

#[test]
fn malformed_documents_are_parse_errors() {
    assert!(matches!(
        ActionBoundary::from_toml("[tools.x"),
        Err(PolicyError::Parse { format: "TOML", .. })
    ));
    assert!(matches!(
        ActionBoundary::from_json("{\"tools\": "),
        Err(PolicyError::Parse { format: "JSON", .. })
    ));
    assert!(matches!(
        ActionBoundary::from_json("{\"tool\": {}}"),
        Err(PolicyError::Parse { .. })
    ));
}

#[test]
fn policy_file_is_read_by_extension_and_missing_file_is_an_io_error() {
    let tmp = tempdir::temp_dir("policy", "by-extension");
    let dir = tmp.path();
    let t = dir.join("p.toml");
    let j = dir.join("p.json");
    std::fs::write(&t, TOML).unwrap();
    std::fs::write(&j, JSON).unwrap();
    assert_eq!(
        ActionBoundary::from_file(&t).unwrap().version(),
        ActionBoundary::from_file(&j).unwrap().version()
    );
    assert!(matches!(
        ActionBoundary::from_file(dir.join("missing.toml")),
        Err(PolicyError::Io { .. })
    ));
}

#[test]
fn the_example_policy_compiles() {
    let text = include_str!("../examples/policies/legal_intake.toml");
    let p = tollgate::policy::Policy::from_toml(text).unwrap();
    assert_eq!(p.boundary().tool_count(), 6);
    // A whole document is not a boundary document: its other sections are unknown fields there.
    assert!(ActionBoundary::from_toml(text).is_err());
}

#[test]
fn duplicate_keys_in_json_policies_are_errors() {
    let tools = r#"{"tools":{"pay":{"effect":"irreversible","args":{"amount":{"type":"number","max":100}}},"pay":{"effect":"irreversible"}}}"#;
    let e = ActionBoundary::from_json(tools).unwrap_err();
    assert!(e.to_string().contains("duplicate key `pay`"), "{e}");
    assert_eq!(e.field(), Some("tools"), "{e}");
    let roles = r#"{"tools":{"t":{"effect":"read"}},"roles":{"r":{"tools":["t"],"read_only":true},"r":{"tools":["t"]}}}"#;
    assert!(
        ActionBoundary::from_json(roles)
            .unwrap_err()
            .to_string()
            .contains("duplicate key `r`")
    );
    let args = r#"{"tools":{"t":{"effect":"read","args":{"a":{"max":1},"a":{}}}}}"#;
    let e = ActionBoundary::from_json(args).unwrap_err();
    assert_eq!(e.field(), Some("tools.t.args"), "{e}");
}

#[test]
fn tool_names_differing_only_in_separators_or_case_are_refused() {
    for (a, b) in [
        ("send_email", "send-email"),
        ("send_email", "send.email"),
        ("send_email", "SEND_EMAIL"),
    ] {
        let r = ActionBoundary::builder()
            .tool(a, ToolSpec::write())
            .tool(b, ToolSpec::write())
            .build();
        assert!(
            matches!(r, Err(PolicyError::ConfusableNames { .. })),
            "{a} {b}"
        );
    }
}

#[test]
fn limits_are_capped() {
    assert_eq!(
        err("[limits]\nmax_bytes = 2000000\n").field(),
        Some("limits.max_bytes")
    );
    assert_eq!(
        err("[limits]\nmax_depth = 500\n").field(),
        Some("limits.max_depth")
    );
    assert_eq!(err("[limits]\nmax_depth = 0\n").field(), Some("limits"));
}
