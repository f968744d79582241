//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod billing;
pub mod node;
pub mod pg;
pub mod tempdir;
#[cfg(feature = "mcp")]
pub mod tls;
#[cfg(feature = "mcp")]
pub mod tls_gateway;

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

/// Runs headless Chromium on `page` with the flags a closed network needs, a fresh profile in
/// `profile`, and `extra` arguments; asserts it succeeded. `None` (skip) when no Chromium is
/// installed outside CI (see [`external_tool`]).
pub fn headless_chromium(
    page: &std::path::Path,
    profile: &std::path::Path,
    extra: &[String],
) -> Option<std::process::Output> {
    let chromium = external_tool(&["chromium", "chromium-browser", "google-chrome"])?;
    let out = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium starts");
    assert!(out.status.success(), "chromium failed: {out:?}");
    Some(out)
}

/// The DOM headless Chromium builds for `page` (`--dump-dom`), with a profile under `scratch`.
pub fn dump_dom(page: &std::path::Path, scratch: &std::path::Path) -> Option<String> {
    let out = headless_chromium(page, &scratch.join("profile"), &["--dump-dom".to_owned()])?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
