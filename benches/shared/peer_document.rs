//! The decision the peer bench (`benches/peers`) and the sustained audited probe
//! (`benches/sustained.rs`) measure, in tollgate's terms: the call, the agent and role, the
//! role's ten tools and the policy document. One copy, included by both with `#[path]`.

#![allow(dead_code)] // each includer uses part of it

pub const RAW: &str = r#"{"invoice":"INV-004711","amount":1250.5,"currency":"EUR"}"#;
pub const AGENT: &str = "agent-7";
pub const ROLE: &str = "clerk";
pub const TOOL: &str = "pay_invoice";
/// The role's tools; `pay_invoice` last (engines that scan a list pay for the whole list).
pub const TOOLS: [&str; 10] = [
    "tool_00", "tool_01", "tool_02", "tool_03", "tool_04", "tool_05", "tool_06", "tool_07",
    "lookup", TOOL,
];
/// The policy document: metadata, ten tools, one role; with `args`, `pay_invoice`'s three
/// argument rules; with `runtime`, breakers, budget and rate limits (generous enough never to
/// trip); with `audit`, an `[audit]` section asking for an OS-buffered trail.
pub fn tollgate_document(args: bool, runtime: bool, audit: bool) -> String {
    let mut d = String::from(
        r#"
[policy]
name = "peer-bench"
owner = "tollgate maintainers"
purpose = "Compare decision engines on one decision."
scope = "Benchmarks only."
liability_owner = "nobody"
review_cadence = "180d"
data_handling = "No real data."
"#,
    );
    for t in &TOOLS[..TOOLS.len() - 1] {
        d.push_str(&format!("\n[tools.{t}]\neffect = \"read\"\n"));
    }
    d.push_str("\n[tools.pay_invoice]\neffect = \"irreversible\"\n");
    if args {
        d.push_str(
            r#"args.invoice = { type = "string", required = true, pattern = "INV-[0-9]{6}" }
args.amount = { type = "number", required = true, min = 0.01, max = 10000 }
args.currency = { type = "string", required = true, enum = ["USD", "EUR", "GBP"] }
"#,
        );
    }
    let list = TOOLS
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    d.push_str(&format!("\n[roles.{ROLE}]\ntools = [{list}]\n"));
    if runtime {
        d.push_str(
            r#"
[breakers]
key = "tool"
max_keys = 256
window = { calls = 100 }
minimum_calls = 5
failure_rate = 50
wait_in_open = "1m"

[budgets]
max_calls = 1000000000000

[rate_limits]
per_agent = { max_calls = 1000000000, per = "1s", burst = 4294967295 }
default_per_tool = { max_calls = 1000000000, per = "1s", burst = 4294967295 }
"#,
        );
    }
    if audit {
        d.push_str("\n[audit]\ndurability = \"os_buffered\"\n");
    }
    d
}
