//! What a reviewer would want pointed out in a valid document: choices that are allowed but
//! deserve a second look before sign-off.

use std::fmt;

use super::{Keep, Location, Policy};
use crate::boundary::Effect;

/// TTLs above this are flagged: credentials are meant to be short-lived.
const LONG_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// One thing a reviewer should look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// A stable code (`irreversible_without_escalation`, ...).
    pub code: &'static str,
    /// The field it concerns.
    pub path: String,
    /// Where it is written, when the policy was read from text.
    pub location: Option<Location>,
    /// What to look at.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.location {
            write!(f, "{l}: ")?;
        }
        write!(f, "`{}`: {} [{}]", self.path, self.message, self.code)
    }
}

impl Policy {
    /// The reviewer warnings for this document, in document order of their sections:
    ///
    /// - `irreversible_without_escalation`: an irreversible tool no escalation rule can apply to;
    /// - `write_tool_in_read_only_role`: a write or irreversible tool listed for a read-only role
    ///   (the boundary denies it anyway: the entry misleads readers);
    /// - `tier_without_retention_class`: a tier whose records fall to the `default` class;
    /// - `long_credential_ttl`: a credential grant living over an hour;
    /// - `role_with_every_tool`: a role allowed every tool of a document with several tools;
    /// - `no_audit_section`: nothing says how decisions are recorded;
    /// - `escalation_path_not_declared`: an escalation rule reads an argument (an amount or its
    ///   currency) that no tool it applies to declares: every call to them is "missing" it, so the
    ///   rule always escalates (or, with `if_missing = "ignore"`, never does).
    pub fn warnings(&self) -> Vec<Warning> {
        let doc = self.document();
        let mut out = Vec::new();
        let mut warn = |code, path: String, message: String| {
            let location = self.locate(&path);
            out.push(Warning {
                code,
                path,
                location,
                message,
            });
        };

        for (name, tool) in &doc.tools {
            if tool.effect == Effect::Irreversible {
                let covered = doc.escalation.as_ref().is_some_and(|e| {
                    e.rules
                        .iter()
                        .any(|r| r.tools.as_ref().is_none_or(|t| t.contains(name)))
                });
                if !covered {
                    warn(
                        "irreversible_without_escalation",
                        format!("tools.{name}"),
                        format!("`{name}` cannot be undone and no escalation rule applies to it"),
                    );
                }
            }
        }

        let tool_count = doc.tools.len();
        for (role, spec) in &doc.roles {
            if spec.read_only {
                for (i, t) in spec.tools.iter().enumerate() {
                    if doc.tools.get(t).is_some_and(|t| t.effect.is_side_effect()) {
                        warn(
                            "write_tool_in_read_only_role",
                            format!("roles.{role}.tools[{i}]"),
                            format!(
                                "read-only role `{role}` lists `{t}`, which writes; it will always be denied"
                            ),
                        );
                    }
                }
            }
            if tool_count > 1 && doc.tools.keys().all(|t| spec.tools.contains(t)) {
                warn(
                    "role_with_every_tool",
                    format!("roles.{role}.tools"),
                    format!("role `{role}` may call every one of the {tool_count} tools"),
                );
            }
        }

        let retention = doc.audit.as_ref().and_then(|a| a.retention.as_ref());
        for tier in &doc.tiers {
            if !retention.is_some_and(|r| r.tiers.contains_key(tier)) {
                let default = retention.and_then(|r| r.keep.get("default"));
                let kept = match default {
                    Some(Keep::Forever) => "kept forever".to_owned(),
                    Some(Keep::For(d)) => format!("kept {}", crate::units::format_duration(*d)),
                    None => "never deleted by retention".to_owned(),
                };
                warn(
                    "tier_without_retention_class",
                    "tiers".to_owned(),
                    format!("tier `{tier}` has no retention class: its records are {kept}"),
                );
            }
        }

        if let Some(c) = &doc.credentials {
            for (i, g) in c.grants.iter().enumerate() {
                if g.ttl > LONG_TTL {
                    warn(
                        "long_credential_ttl",
                        format!("credentials.grants[{i}].ttl"),
                        format!(
                            "credentials for role `{}` live {}; an hour or less is the norm",
                            g.role,
                            crate::units::format_duration(g.ttl)
                        ),
                    );
                }
            }
        }

        if let Some(e) = &doc.escalation {
            for (i, rule) in e.rules.iter().enumerate() {
                let mut paths = Vec::new();
                amount_paths(&rule.when, &mut paths);
                for (path, if_missing) in paths {
                    let declares = |t: &String| {
                        doc.tools
                            .get(t)
                            .is_some_and(|spec| spec.args.contains_key(path))
                    };
                    let lacking: Vec<&String> = match &rule.tools {
                        Some(tools) => tools.iter().filter(|t| !declares(t)).collect(),
                        // A rule for every tool: only when none declares it.
                        None if !doc.tools.keys().any(declares) => doc.tools.keys().collect(),
                        None => Vec::new(),
                    };
                    if lacking.is_empty() {
                        continue;
                    }
                    let what = match if_missing {
                        Some(crate::escalation::IfMissing::Ignore) => "never escalates them",
                        _ => "escalates every call to them",
                    };
                    let names: Vec<&str> = lacking.iter().map(|t| t.as_str()).collect();
                    warn(
                        "escalation_path_not_declared",
                        format!("escalation.rules[{i}].when"),
                        format!(
                            "rule `{}` reads argument `{path}`, which {} do(es) not declare: the \
                             rule {what}",
                            rule.id,
                            names.join(", ")
                        ),
                    );
                }
            }
        }

        if doc.audit.is_none() {
            warn(
                "no_audit_section",
                "audit".to_owned(),
                "the document does not say how decisions are recorded (no `[audit]` section)"
                    .to_owned(),
            );
        }
        out
    }
}

/// The argument paths a condition reads (an amount and its currency), with what happens when
/// the argument is missing.
fn amount_paths<'c>(
    c: &'c crate::escalation::Condition,
    out: &mut Vec<(&'c str, Option<crate::escalation::IfMissing>)>,
) {
    use crate::escalation::Condition;
    match c {
        Condition::Amount(a) => {
            out.push((a.path.as_str(), a.if_missing));
            if let Some(cp) = &a.currency_path {
                out.push((cp.as_str(), a.if_missing));
            }
        }
        Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| amount_paths(c, out)),
        _ => {}
    }
}
