//! Helpers shared by the integration tests.
#![allow(dead_code)]

use tollgate::{ActionBoundary, DenyCode, RunContext, ToolCall};

/// Checks `args` both as raw JSON text and as a parsed `serde_json::Value`, asserts that both
/// representations get the same decision, and returns it.
pub fn decide(
    b: &ActionBoundary,
    ctx: &RunContext,
    tool: &str,
    args: &str,
) -> Result<(), DenyCode> {
    let raw = b
        .check(ctx, &ToolCall::new(tool, args))
        .map(|_| ())
        .map_err(|d| d.code());
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(args) {
        let parsed = b
            .check(ctx, &ToolCall::new(tool, &value))
            .map(|_| ())
            .map_err(|d| d.code());
        assert_eq!(
            raw, parsed,
            "raw and parsed arguments disagree for {tool}({args})"
        );
    }
    raw
}

pub fn allowed(b: &ActionBoundary, ctx: &RunContext, tool: &str, args: &str) {
    assert_eq!(
        decide(b, ctx, tool, args),
        Ok(()),
        "expected {tool}({args}) to be allowed"
    );
}

pub fn denied(b: &ActionBoundary, ctx: &RunContext, tool: &str, args: &str, code: DenyCode) {
    assert_eq!(
        decide(b, ctx, tool, args),
        Err(code),
        "expected {tool}({args}) to be denied with {code}"
    );
}
