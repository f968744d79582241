//! The access-control matrix a compliance officer signs: every role against every tool, each
//! tool's effect, tier, compartment binding and argument limits in plain language, the
//! escalation conditions and credential scopes that apply to it, its retention, the run limits,
//! the document's hash and a signature block. Rendered as Markdown, CSV or a standalone HTML page.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Keep, Policy};
use crate::boundary::{Arg, ToolSpec};

/// Output formats of [`Policy::matrix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatrixFormat {
    /// GitHub-flavoured Markdown.
    Markdown,
    /// One row per role and tool (RFC 4180).
    Csv,
    /// A standalone, printable HTML page.
    Html,
}

/// What one role may do with one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Allowed.
    Allowed,
    /// Not on the role's allowlist.
    NotListed,
    /// Listed, but the role is read-only and the tool writes.
    ReadOnly,
}

impl Access {
    fn short(self) -> &'static str {
        match self {
            Access::Allowed => "allowed",
            Access::NotListed => "-",
            Access::ReadOnly => "denied (read-only role)",
        }
    }
}

/// One tool's row of facts.
struct ToolFacts {
    name: String,
    description: String,
    effect: &'static str,
    tier: String,
    compartment: String,
    arguments: Vec<String>,
    escalation: Vec<String>,
    credentials: Vec<String>,
    rate_limit: String,
    retention: String,
}

impl Policy {
    /// The access-control matrix in `format`.
    pub fn matrix(&self, format: MatrixFormat) -> String {
        let facts = self.tool_facts();
        match format {
            MatrixFormat::Markdown => self.markdown(&facts),
            MatrixFormat::Csv => self.csv(&facts),
            MatrixFormat::Html => self.html(&facts),
        }
    }

    fn access(&self, role: &str, tool: &str) -> Access {
        let Some(r) = self.document().roles.get(role) else {
            return Access::NotListed;
        };
        if !r.tools.iter().any(|t| t == tool) {
            return Access::NotListed;
        }
        let writes = self
            .document()
            .tools
            .get(tool)
            .is_some_and(|t| t.effect.is_side_effect());
        if r.read_only && writes {
            Access::ReadOnly
        } else {
            Access::Allowed
        }
    }

    fn tool_facts(&self) -> Vec<ToolFacts> {
        let doc = self.document();
        let canonical: Value = serde_json::from_slice(self.canonical_json()).unwrap_or(Value::Null);
        let rules = canonical["escalation"]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let retention = doc.audit.as_ref().and_then(|a| a.retention.as_ref());
        doc.tools
            .iter()
            .map(|(name, spec)| {
                let escalation = rules
                    .iter()
                    .filter(|r| {
                        r["tools"]
                            .as_array()
                            .is_none_or(|t| t.iter().any(|t| t == name.as_str()))
                    })
                    .map(|r| describe_rule(r, &canonical["escalation"]["defaults"]))
                    .collect();
                let credentials = doc
                    .credentials
                    .iter()
                    .flat_map(|c| c.grants.iter())
                    .filter(|g| g.tools.contains(name))
                    .map(|g| {
                        let ops: Vec<&str> = g.operations.iter().map(|o| o.as_str()).collect();
                        format!(
                            "{} via `{}`: {} on `{}`, valid {}{}",
                            g.role,
                            g.provider,
                            ops.join("/"),
                            g.resource,
                            crate::units::format_duration(g.ttl),
                            g.max_uses
                                .map(|n| format!(", at most {n} use(s)"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                let rate = doc.rate_limits.as_ref().and_then(|r| {
                    r.per_tool
                        .get(name)
                        .or(r.default_per_tool.as_ref())
                        .map(|q| {
                            format!(
                                "{} call(s) per {}",
                                q.max_calls,
                                crate::units::format_duration(q.per)
                            )
                        })
                });
                let tier = spec.tier.clone().unwrap_or_default();
                let class = retention.and_then(|r| r.tiers.get(&tier)).cloned();
                let keep = retention
                    .and_then(|r| r.keep.get(class.as_deref().unwrap_or("default")).copied());
                let retention = match (class, keep) {
                    (c, Some(Keep::Forever)) => {
                        format!("{}: kept forever", c.unwrap_or_else(|| "default".into()))
                    }
                    (c, Some(Keep::For(d))) => format!(
                        "{}: kept {}",
                        c.unwrap_or_else(|| "default".into()),
                        crate::units::format_duration(d)
                    ),
                    (Some(c), None) => format!("{c}: not deleted by retention"),
                    (None, None) => "not deleted by retention".into(),
                };
                ToolFacts {
                    name: name.clone(),
                    description: spec.description.clone().unwrap_or_default(),
                    effect: spec.effect.as_str(),
                    tier: if tier.is_empty() { "-".into() } else { tier },
                    compartment: spec
                        .compartment_arg
                        .as_ref()
                        .map(|a| {
                            format!(
                                "one {} per run, by argument `{a}`",
                                doc.compartments
                                    .as_ref()
                                    .map_or("compartment", |c| c.kind.as_str())
                            )
                        })
                        .unwrap_or_else(|| "none".into()),
                    arguments: describe_args(spec),
                    escalation,
                    credentials,
                    rate_limit: rate.unwrap_or_else(|| "none".into()),
                    retention,
                }
            })
            .collect()
    }

    /// The limits that apply to every run, one line each.
    fn run_limits(&self) -> Vec<String> {
        let doc = self.document();
        let mut out = Vec::new();
        if let Some(b) = &doc.budgets {
            let mut parts = Vec::new();
            if let Some(n) = b.max_calls {
                parts.push(format!("{n} tool calls"));
            }
            if let Some(d) = b.max_duration {
                parts.push(format!("{} of wall time", crate::units::format_duration(d)));
            }
            if let Some(n) = b.max_tokens {
                parts.push(format!("{n} tokens"));
            }
            if let Some(m) = b.max_cost {
                parts.push(format!("a cost of {m}"));
            }
            if !parts.is_empty() {
                out.push(format!("Budget per run: at most {}.", parts.join(", ")));
            }
        }
        if let Some(r) = doc.rate_limits.as_ref().and_then(|r| r.per_agent.as_ref()) {
            out.push(format!(
                "Rate limit per agent: {} call(s) per {}.",
                r.max_calls,
                crate::units::format_duration(r.per)
            ));
        }
        if let Some(l) = &doc.loops {
            out.push(format!(
                "Loop detection: the same call more than {} time(s) within {} is denied.",
                l.max_repeats,
                crate::units::format_duration(l.window)
            ));
        }
        if let Some(b) = &doc.breakers {
            let c = b.config();
            out.push(format!(
                "Circuit breakers ({}): open at {}% failures over {}, or {} consecutive failures; stay open {} (backoff x{}, up to {}).",
                match b.key {
                    crate::breaker::BreakerKey::Tool => "one per tool",
                    crate::breaker::BreakerKey::Agent => "one per agent",
                    crate::breaker::BreakerKey::AgentTool => "one per agent and tool",
                },
                c.failure_rate,
                match c.window {
                    crate::breaker::Window::Count(n) => format!("the last {n} calls"),
                    crate::breaker::Window::Seconds(n) => format!("the last {n} s"),
                },
                if c.consecutive_failures == 0 { "never on".to_owned() } else { c.consecutive_failures.to_string() },
                crate::units::format_duration(c.wait_in_open),
                c.backoff,
                crate::units::format_duration(c.max_wait_in_open),
            ));
        }
        if let Some(a) = &doc.audit {
            out.push(format!(
                "Audit: {}; when the writer is behind, {}; sensitive values written as {}.",
                match a.durability {
                    super::AuditDurability::EveryRecord =>
                        "a decision takes effect only once its record is on disk".to_owned(),
                    super::AuditDurability::GroupCommit { interval } => format!(
                        "records reach the disk within {}",
                        crate::units::format_duration(interval)
                    ),
                    super::AuditDurability::OsBuffered =>
                        "records are flushed on demand, rotation and close".to_owned(),
                },
                match a.when_full {
                    super::WhenFull::Block => "calls wait",
                    super::WhenFull::Deny => "calls are denied",
                },
                match a.redaction {
                    super::RedactionMode::Placeholder => "a placeholder",
                    super::RedactionMode::KeyedHash => "a keyed hash",
                }
            ));
        } else {
            out.push(
                "Audit: no `[audit]` section: decisions are not required to be recorded.".into(),
            );
        }
        if let Some(e) = &doc.escalation {
            for (group, members) in &e.groups {
                out.push(format!("Approver group `{group}`: {}.", members.join(", ")));
            }
            let a = &e.approvals;
            out.push(format!(
                "Approvals: {}; an approval must be used within {}; at most {} requests pending.",
                if a.separation_of_duties {
                    "a run's trigger and agent may not approve it (separation of duties)"
                } else {
                    "separation of duties is OFF (a run's trigger may approve it)"
                },
                crate::units::format_duration(a.grant_ttl),
                a.max_pending
            ));
        }
        out
    }

    fn header_lines(&self) -> Vec<(&'static str, String)> {
        let m = &self.document().policy;
        let mut v = vec![
            ("Policy", m.name.clone()),
            ("Owner", m.owner.clone()),
            ("Purpose", m.purpose.clone()),
            ("Scope", m.scope.clone()),
            ("Liability owner", m.liability_owner.clone()),
            (
                "Review cadence",
                format!("every {}", crate::units::format_duration(m.review_cadence)),
            ),
            ("Data handling", m.data_handling.clone()),
        ];
        if let Some(c) = &self.document().compartments {
            v.push((
                "Compartments",
                format!(
                    "one {} per run{}",
                    c.kind,
                    c.id_pattern
                        .as_ref()
                        .map(|p| format!("; ids match `{p}`"))
                        .unwrap_or_default()
                ),
            ));
        }
        v.push(("Policy version (SHA-256)", self.version().to_string()));
        v
    }

    fn markdown(&self, facts: &[ToolFacts]) -> String {
        let doc = self.document();
        let mut s = format!("# Access-control matrix: {}\n\n", doc.policy.name);
        for (k, v) in self.header_lines() {
            let _ = writeln!(s, "- **{k}:** {}", md(&v));
        }
        s.push_str("\n## Who may call what\n\n| tool | effect | tier |");
        for role in doc.roles.keys() {
            let _ = write!(s, " {} |", md(role));
        }
        s.push_str("\n|---|---|---|");
        for _ in doc.roles.keys() {
            s.push_str("---|");
        }
        s.push('\n');
        for f in facts {
            let _ = write!(s, "| `{}` | {} | {} |", f.name, f.effect, md(&f.tier));
            for role in doc.roles.keys() {
                let _ = write!(s, " {} |", self.access(role, &f.name).short());
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "\nRole clearances: {}.\n",
            doc.roles
                .iter()
                .map(|(r, spec)| format!(
                    "`{r}` up to `{}`{}",
                    spec.clearance.as_deref().unwrap_or("-"),
                    if spec.read_only { " (read-only)" } else { "" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s.push_str("## Tools\n");
        for f in facts {
            let _ = writeln!(s, "\n### `{}`\n", f.name);
            if !f.description.is_empty() {
                let _ = writeln!(s, "{}\n", md(&f.description));
            }
            let _ = writeln!(s, "- **Effect:** {}; **tier:** {}", f.effect, md(&f.tier));
            let _ = writeln!(s, "- **Compartment:** {}", md(&f.compartment));
            list_md(&mut s, "Arguments", &f.arguments, "any (no rules)");
            list_md(&mut s, "Needs a human when", &f.escalation, "never");
            list_md(&mut s, "Credentials", &f.credentials, "none");
            let _ = writeln!(s, "- **Rate limit:** {}", md(&f.rate_limit));
            let _ = writeln!(s, "- **Audit retention:** {}", md(&f.retention));
        }
        s.push_str("\n## Limits on every run\n\n");
        for l in self.run_limits() {
            let _ = writeln!(s, "- {}", md(&l));
        }
        s.push_str("\n## Sign-off\n\n");
        let _ = writeln!(
            s,
            "By signing, the reviewer approves policy version `{}`.\n",
            self.version()
        );
        s.push_str("| role | name | date | signature |\n|---|---|---|---|\n");
        for r in ["Legal", "Compliance", "Liability owner"] {
            let _ = writeln!(s, "| {r} | | | |");
        }
        s
    }

    fn csv(&self, facts: &[ToolFacts]) -> String {
        let doc = self.document();
        let mut s = String::from(
            "role,tool,access,effect,tier,compartment,arguments,escalation,credentials,rate_limit,retention,policy_version\n",
        );
        let version = self.version().to_string();
        for role in doc.roles.keys() {
            for f in facts {
                let access = self.access(role, &f.name);
                let fields = [
                    role.as_str(),
                    f.name.as_str(),
                    access.short(),
                    f.effect,
                    f.tier.as_str(),
                    f.compartment.as_str(),
                    &f.arguments.join("; "),
                    &f.escalation.join("; "),
                    &f.credentials
                        .iter()
                        .filter(|c| c.starts_with(&format!("{role} via")))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; "),
                    f.rate_limit.as_str(),
                    f.retention.as_str(),
                    version.as_str(),
                ];
                let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                s.push_str(&row.join(","));
                s.push('\n');
            }
        }
        s
    }

    fn html(&self, facts: &[ToolFacts]) -> String {
        let doc = self.document();
        let mut s = String::new();
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Access-control matrix: {}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<main>\n<h1>Access-control matrix: {}</h1>\n<dl class=\"meta\">\n",
            h(&doc.policy.name),
            h(&doc.policy.name)
        );
        for (k, v) in self.header_lines() {
            let _ = writeln!(s, "<dt>{}</dt><dd>{}</dd>", h(k), h_code(&v));
        }
        s.push_str("</dl>\n<h2>Who may call what</h2>\n<table class=\"matrix\">\n<thead><tr><th>tool</th><th>effect</th><th>tier</th>");
        for (role, spec) in &doc.roles {
            let _ = write!(
                s,
                "<th data-role=\"{}\">{}<br><small>up to {}{}</small></th>",
                h(role),
                h(role),
                h(spec.clearance.as_deref().unwrap_or("-")),
                if spec.read_only { ", read-only" } else { "" }
            );
        }
        s.push_str("</tr></thead>\n<tbody>\n");
        for f in facts {
            let _ = write!(
                s,
                "<tr><th scope=\"row\" data-tool=\"{}\"><a href=\"#tool-{}\">{}</a></th><td class=\"effect-{}\">{}</td><td>{}</td>",
                h(&f.name),
                h(&f.name),
                h(&f.name),
                f.effect,
                f.effect,
                h(&f.tier)
            );
            for role in doc.roles.keys() {
                let a = self.access(role, &f.name);
                let class = match a {
                    Access::Allowed => "allowed",
                    Access::NotListed => "none",
                    Access::ReadOnly => "denied",
                };
                let _ = write!(s, "<td class=\"{class}\">{}</td>", h(a.short()));
            }
            s.push_str("</tr>\n");
        }
        s.push_str("</tbody>\n</table>\n<h2>Tools</h2>\n");
        for f in facts {
            let _ = write!(
                s,
                "<section class=\"tool\" id=\"tool-{}\">\n<h3>{}</h3>\n",
                h(&f.name),
                h(&f.name)
            );
            if !f.description.is_empty() {
                let _ = writeln!(s, "<p>{}</p>", h(&f.description));
            }
            let _ = writeln!(
                s,
                "<dl>\n<dt>Effect and tier</dt><dd>{}, tier {}</dd>\n<dt>Compartment</dt><dd>{}</dd>",
                f.effect,
                h(&f.tier),
                h_code(&f.compartment)
            );
            list_html(&mut s, "Arguments", &f.arguments, "any (no rules)");
            list_html(&mut s, "Needs a human when", &f.escalation, "never");
            list_html(&mut s, "Credentials", &f.credentials, "none");
            let _ = writeln!(
                s,
                "<dt>Rate limit</dt><dd>{}</dd>\n<dt>Audit retention</dt><dd>{}</dd>\n</dl>\n</section>",
                h(&f.rate_limit),
                h(&f.retention)
            );
        }
        s.push_str("<h2>Limits on every run</h2>\n<ul>\n");
        for l in self.run_limits() {
            let _ = writeln!(s, "<li>{}</li>", h_code(&l));
        }
        let _ = write!(
            s,
            "</ul>\n<h2>Sign-off</h2>\n<p>By signing, the reviewer approves policy version <code class=\"version\">{}</code>.</p>\n<table class=\"signoff\">\n<thead><tr><th>role</th><th>name</th><th>date</th><th>signature</th></tr></thead>\n<tbody>\n",
            self.version()
        );
        for r in ["Legal", "Compliance", "Liability owner"] {
            let _ = writeln!(s, "<tr><td>{r}</td><td></td><td></td><td></td></tr>");
        }
        s.push_str("</tbody>\n</table>\n</main>\n</body>\n</html>\n");
        s
    }
}

const CSS: &str = "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;margin:0;background:#fff}
main{max-width:1100px;margin:0 auto;padding:2rem 1.5rem}
h1{font-size:1.6rem;margin:0 0 1rem}h2{font-size:1.25rem;margin:2rem 0 .75rem;border-bottom:1px solid #d0d7de;padding-bottom:.25rem}
h3{font-size:1.05rem;margin:0 0 .4rem;font-family:ui-monospace,monospace}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}dl.meta dt{font-weight:600}dl.meta dd{margin:0}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
thead th{background:#f6f8fa}td.allowed{background:#dafbe1}td.denied{background:#ffebe9}td.none{color:#8c959f}
td.effect-irreversible{font-weight:600;color:#a40e26}
section.tool{border:1px solid #d0d7de;border-radius:6px;padding:.75rem 1rem;margin:.75rem 0;page-break-inside:avoid}
section.tool dl{display:grid;grid-template-columns:12rem 1fr;gap:.2rem 1rem;margin:0}section.tool dt{font-weight:600}section.tool dd{margin:0}
section.tool ul{margin:0;padding-left:1.1rem}code{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}
table.signoff td{height:2.2rem}
@media print{main{max-width:none;padding:0}}
";

fn list_md(s: &mut String, title: &str, items: &[String], none: &str) {
    if items.is_empty() {
        let _ = writeln!(s, "- **{title}:** {none}");
    } else {
        let _ = writeln!(s, "- **{title}:**");
        for i in items {
            let _ = writeln!(s, "  - {}", md(i));
        }
    }
}

fn list_html(s: &mut String, title: &str, items: &[String], none: &str) {
    let _ = write!(s, "<dt>{}</dt><dd>", h(title));
    if items.is_empty() {
        s.push_str(&h(none));
    } else {
        s.push_str("<ul>");
        for i in items {
            let _ = write!(s, "<li>{}</li>", h_code(i));
        }
        s.push_str("</ul>");
    }
    s.push_str("</dd>\n");
}

/// HTML-escapes text.
fn h(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// HTML-escapes text and shows `backquoted` spans as code.
fn h_code(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", h(part));
        } else {
            out.push_str(&h(part));
        }
    }
    // An unpaired backquote: show the text as it was.
    if text.matches('`').count() % 2 == 1 {
        return h(text);
    }
    out
}

/// Escapes Markdown table separators and line breaks.
fn md(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// One RFC 4180 field. A field starting with `=`, `+`, `-` or `@` is prefixed with `'` so a
/// spreadsheet does not evaluate it as a formula.
fn csv_field(text: &str) -> String {
    let guarded = if text.starts_with(['=', '+', '-', '@']) && text != "-" {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

/// Each argument rule in plain language.
fn describe_args(spec: &ToolSpec) -> Vec<String> {
    let mut out: Vec<String> = spec
        .args
        .iter()
        .map(|(name, a)| format!("`{name}`: {}", describe_arg(a)))
        .collect();
    if !spec.allow_unknown_args && !spec.args.is_empty() {
        out.push("no other arguments".into());
    }
    out
}

fn describe_arg(a: &Arg) -> String {
    if a.forbidden {
        return "must not be given".into();
    }
    let mut parts: Vec<String> = Vec::new();
    parts.push(if a.required { "required" } else { "optional" }.into());
    if let Some(t) = &a.ty {
        parts.push(
            serde_json::to_value(t)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        );
    }
    match (a.min, a.max) {
        (Some(lo), Some(hi)) => parts.push(format!("from {lo} to {hi}")),
        (Some(lo), None) => parts.push(format!("at least {lo}")),
        (None, Some(hi)) => parts.push(format!("at most {hi}")),
        (None, None) => {}
    }
    if let Some(n) = a.max_length {
        parts.push(format!("up to {n} characters"));
    }
    if let Some(values) = &a.one_of {
        let v: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        parts.push(format!("one of {}", v.join(", ")));
    }
    if let Some(p) = &a.pattern {
        parts.push(format!("matching `{p}`"));
    }
    if let Some(root) = &a.path_under {
        parts.push(format!("a path under `{root}`"));
    }
    if let Some(hosts) = &a.url_hosts {
        parts.push(format!("a URL on {}", hosts.join(", ")));
    }
    if let Some(n) = a.max_items {
        parts.push(format!("at most {n} items"));
    }
    if let Some(r) = &a.redact {
        parts.push(match r {
            crate::boundary::Sensitivity::Secret => "never written to the audit trail".into(),
            crate::boundary::Sensitivity::Sensitive => "redacted in the audit trail".into(),
        });
    }
    parts.retain(|p| !p.is_empty());
    parts.join("; ")
}

/// One escalation rule in plain language.
fn describe_rule(rule: &Value, defaults: &Value) -> String {
    let id = rule["id"].as_str().unwrap_or("?");
    let when = describe_condition(&rule["when"]);
    let quorum = rule["quorum"]
        .as_u64()
        .or(defaults["quorum"].as_u64())
        .unwrap_or(1);
    let chain = rule["chain"]
        .as_array()
        .or(defaults["chain"].as_array())
        .map(|levels| {
            levels
                .iter()
                .filter_map(|l| l["group"].as_str())
                .collect::<Vec<_>>()
                .join(" then ")
        })
        .unwrap_or_default();
    let mut s = format!("{when} (rule `{id}`");
    if !chain.is_empty() {
        let _ = write!(s, "; approved by {quorum} of {chain}");
    }
    let on_timeout = rule["on_timeout"]
        .as_str()
        .or(defaults["on_timeout"].as_str())
        .unwrap_or("deny");
    // Durations are written with their unit in the canonical form ("15m", "1h").
    let timeout = rule["timeout"]
        .as_str()
        .or(defaults["timeout"].as_str())
        .map_or_else(
            || crate::units::format_duration(crate::escalation::DEFAULT_TIMEOUT),
            str::to_owned,
        );
    let _ = write!(s, "; unanswered requests {on_timeout} after {timeout})");
    if let Some(r) = rule["reason"].as_str() {
        let _ = write!(s, ": {r}");
    }
    s
}

fn describe_condition(c: &Value) -> String {
    let Some(obj) = c.as_object() else {
        return c.to_string();
    };
    let Some((kind, v)) = obj.iter().next() else {
        return "always".into();
    };
    match kind.as_str() {
        "amount" => {
            let path = v["path"].as_str().unwrap_or("?");
            // Thresholds are exact decimals, written as strings in the canonical form.
            let amount = |t: &Value| t.as_str().map_or_else(|| t.to_string(), str::to_owned);
            if let Some(over) = v.get("over").filter(|o| !o.is_null()) {
                format!("`{path}` is over {}", amount(over))
            } else if let Some(by) = v["over_by_currency"].as_object() {
                let per: Vec<String> = by
                    .iter()
                    .map(|(c, t)| format!("{} {c}", amount(t)))
                    .collect();
                format!(
                    "`{path}` is over {} (or in another currency)",
                    per.join(" / ")
                )
            } else {
                format!("`{path}` is over a threshold")
            }
        }
        "tier_at_least" => format!(
            "the tool's tier is `{}` or above",
            v.as_str().unwrap_or("?")
        ),
        "effect_at_least" => format!(
            "the tool's effect is {} or above",
            v.as_str().unwrap_or("?")
        ),
        "confidence" => format!("the agent's confidence is below {}", v["below"]),
        "flag" => format!("the call is flagged `{}`", v.as_str().unwrap_or("?")),
        "budget_used" => format!("the run has used {} of its budget", v["at_least"]),
        "all" | "any" => {
            let parts: Vec<String> = v
                .as_array()
                .map(|a| a.iter().map(describe_condition).collect())
                .unwrap_or_default();
            parts.join(if kind == "all" { " and " } else { " or " })
        }
        other => format!("{other}: {v}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-"), "-");
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(h("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
        assert_eq!(h_code("a `<b>` c"), "a <code>&lt;b&gt;</code> c");
        assert_eq!(h_code("odd ` one"), "odd ` one");
    }
}
