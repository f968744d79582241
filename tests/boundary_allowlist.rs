//! Default deny, per-role allowlists, visibility, tiers and read-only mode.

mod common;

use common::{allowed, denied};
use tollgate::boundary::{ActionBoundary, RoleSpec, ToolSpec};
use tollgate::{DenyCode, RunContext, ToolCall};

fn boundary() -> ActionBoundary {
    ActionBoundary::builder()
        .tiers(["public", "internal", "confidential", "privileged"])
        .tool("search", ToolSpec::read().tier("public"))
        .tool("read_file", ToolSpec::read().tier("privileged"))
        .tool("draft", ToolSpec::write().tier("internal"))
        .tool("send_email", ToolSpec::irreversible().tier("confidential"))
        .tool("admin_reset", ToolSpec::irreversible().tier("internal"))
        .role(
            "clerk",
            RoleSpec::new()
                .clearance("internal")
                .tools(["search", "draft", "read_file"]),
        )
        .role(
            "senior",
            RoleSpec::new().clearance("privileged").tools([
                "search",
                "read_file",
                "draft",
                "send_email",
            ]),
        )
        .role(
            "auditor",
            RoleSpec::new()
                .clearance("privileged")
                .tools(["search", "read_file", "draft"])
                .read_only(),
        )
        .role("nobody", RoleSpec::new().clearance("public"))
        .build()
        .unwrap()
}

#[test]
fn empty_boundary_denies_everything() {
    let b = ActionBoundary::deny_all();
    let ctx = RunContext::new("a", "any");
    let d = b
        .check(&ctx, &ToolCall::without_args("search"))
        .unwrap_err();
    assert_eq!(d.code(), DenyCode::UnknownRole);
    assert_eq!(b.visible_tools("any").count(), 0);
}

#[test]
fn allowlisted_tool_is_allowed() {
    let b = boundary();
    allowed(&b, &RunContext::new("a", "clerk"), "search", "{}");
    allowed(&b, &RunContext::new("a", "senior"), "send_email", "{}");
}

#[test]
fn tool_outside_role_is_denied_even_though_it_exists() {
    let b = boundary();
    denied(
        &b,
        &RunContext::new("a", "clerk"),
        "send_email",
        "{}",
        DenyCode::ToolNotAllowed,
    );
    denied(
        &b,
        &RunContext::new("a", "senior"),
        "admin_reset",
        "{}",
        DenyCode::ToolNotAllowed,
    );
    denied(
        &b,
        &RunContext::new("a", "nobody"),
        "search",
        "{}",
        DenyCode::ToolNotAllowed,
    );
}

#[test]
fn unknown_tool_and_unknown_role_are_denied() {
    let b = boundary();
    denied(
        &b,
        &RunContext::new("a", "clerk"),
        "delete_everything",
        "{}",
        DenyCode::UnknownTool,
    );
    denied(
        &b,
        &RunContext::new("a", "root"),
        "search",
        "{}",
        DenyCode::UnknownRole,
    );
    let long = "s".repeat(10_000);
    denied(
        &b,
        &RunContext::new("a", "clerk"),
        &long,
        "{}",
        DenyCode::UnknownTool,
    );
    denied(
        &b,
        &RunContext::new("a", "clerk"),
        "",
        "{}",
        DenyCode::UnknownTool,
    );
}

#[test]
fn confusable_tool_names_are_unknown_tools() {
    let b = boundary();
    let ctx = RunContext::new("a", "senior");
    for name in [
        "sеnd_email",          // Cyrillic е (U+0435)
        "send_emaіl",          // Cyrillic і (U+0456)
        "ѕend_email",          // Cyrillic ѕ (U+0455)
        "send_email ",         // trailing space
        " send_email",         // leading space
        "send_email\t",        // trailing tab
        "send_email\n",        // trailing newline
        "send_email\0",        // trailing NUL
        "Send_Email",          // case
        "SEND_EMAIL",          // case
        "send\u{200b}_email",  // zero-width space
        "send_email\u{feff}",  // BOM
        "ｓｅｎｄ_ｅｍａｉｌ", // fullwidth
        "send-email",          // separator swap
        "send_emai",           // prefix
        "send_email_",         // extension
    ] {
        let d = b.check(&ctx, &ToolCall::without_args(name)).unwrap_err();
        assert_eq!(d.code(), DenyCode::UnknownTool, "{name:?}");
        assert_eq!(d.agent_message(), "tool not available");
    }
}

#[test]
fn visible_tools_lists_only_callable_tools() {
    let b = boundary();
    let names = |role: &str, ro: bool| {
        b.visible_tools_for(role, ro)
            .map(|t| t.name().to_owned())
            .collect::<Vec<_>>()
    };
    // clerk is allowlisted for read_file but its clearance (internal) is below privileged: hidden.
    assert_eq!(names("clerk", false), ["draft", "search"]);
    assert_eq!(
        names("senior", false),
        ["draft", "read_file", "search", "send_email"]
    );
    // a read-only role sees no write or irreversible tools
    assert_eq!(names("auditor", false), ["read_file", "search"]);
    // a read-only run of a normal role sees no write tools either
    assert_eq!(names("senior", true), ["read_file", "search"]);
    assert!(names("ghost", false).is_empty());
    // nothing visible is ever denied by the allowlist/tier/read-only stages
    for role in ["clerk", "senior", "auditor", "nobody"] {
        for t in b.visible_tools(role) {
            assert!(
                b.check(&RunContext::new("a", role), &ToolCall::new(t.name(), "{}"))
                    .is_ok()
            );
        }
    }
}

#[test]
fn tier_above_clearance_is_denied() {
    let b = boundary();
    denied(
        &b,
        &RunContext::new("a", "clerk"),
        "read_file",
        "{}",
        DenyCode::ClearanceTooLow,
    );
    allowed(&b, &RunContext::new("a", "senior"), "read_file", "{}");
}

#[test]
fn read_only_role_denies_writes_and_irreversible_effects() {
    let b = boundary();
    let ctx = RunContext::new("a", "auditor");
    allowed(&b, &ctx, "read_file", "{}");
    denied(&b, &ctx, "draft", "{}", DenyCode::ReadOnly);
}

#[test]
fn read_only_run_denies_writes_and_irreversible_effects() {
    let b = boundary();
    let ctx = RunContext::new("a", "senior").read_only();
    allowed(&b, &ctx, "search", "{}");
    denied(&b, &ctx, "draft", "{}", DenyCode::ReadOnly);
    denied(&b, &ctx, "send_email", "{}", DenyCode::ReadOnly);
}

#[test]
fn denial_names_rule_and_policy_version() {
    let b = boundary();
    let d = b
        .check(
            &RunContext::new("a", "clerk"),
            &ToolCall::without_args("send_email"),
        )
        .unwrap_err();
    assert_eq!(d.rule().as_str(), "tools.send_email.roles");
    assert_eq!(d.policy_version(), Some(b.version()));
    assert!(d.reason().contains("clerk"), "{}", d.reason());
    // the agent is not told that the tool exists
    assert_eq!(d.agent_message(), "tool not available");
}
