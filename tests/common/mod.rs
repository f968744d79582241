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

/// The path of an external program a test needs (`openssl`, `chromium`), or `None` to skip the
/// test. CI sets `TOLLGATE_CI=1` after installing them, and then a missing program fails the test
/// instead of skipping it, so nothing is silently skipped in CI.
pub fn external_tool(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    if std::env::var_os("TOLLGATE_CI").is_some_and(|v| v == "1") {
        panic!("{names:?} not found on PATH, and TOLLGATE_CI=1 requires it (.ci/run installs it)");
    }
    eprintln!("SKIPPED: none of {names:?} is installed (CI installs them and runs this test)");
    None
}
