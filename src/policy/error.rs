//! What can be wrong with a policy document. Every variant names the field's path with its
//! section prefix (`escalation.rules[0].tools[1]`) and, when the document's text is known, the
//! line and column where it is written.

use std::fmt;
use std::path::PathBuf;

use super::locate::Location;

/// Formats an optional location as a prefix (`"line 3, column 5: "`).
struct At<'a>(&'a Option<Location>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, "{l}: "),
            None => Ok(()),
        }
    }
}

/// A policy document that cannot become a guard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// The text is not well-formed TOML or JSON (or holds a duplicate key).
    #[error("{}{format} syntax error: {message}", At(location))]
    Syntax {
        /// `"TOML"` or `"JSON"`.
        format: &'static str,
        /// Where the parser stopped.
        location: Option<Location>,
        /// The parser's explanation.
        message: String,
    },
    /// A field that does not exist, has the wrong type or is missing.
    #[error("{}`{path}`: {message}", At(location))]
    Shape {
        /// The field's path (`.` for the root).
        path: String,
        /// Where it is written.
        location: Option<Location>,
        /// What is wrong (from the deserializer).
        message: String,
    },
    /// A value that makes no sense (a zero window, a negative threshold, a bad regex).
    #[error("{}`{path}`: {reason}", At(location))]
    Invalid {
        /// The field's path.
        path: String,
        /// Where it is written.
        location: Option<Location>,
        /// Why it is refused.
        reason: String,
    },
    /// A name that refers to nothing the document defines (a tool, role, tier, approver group or
    /// credential provider).
    #[error("{}`{path}`: unknown {kind} `{name}` (defined: {known})", At(location))]
    UnknownReference {
        /// The field's path.
        path: String,
        /// Where it is written.
        location: Option<Location>,
        /// `"tool"`, `"role"`, `"tier"`, `"approver group"`, `"credential provider"`,
        /// `"retention class"`.
        kind: &'static str,
        /// The name used.
        name: String,
        /// The names that exist, comma-separated (`(none)` if none).
        known: String,
    },
    /// A role lists a tool whose data tier is above the role's clearance.
    #[error(
        "{}`{path}`: `{tool}` touches tier `{tier}`, above the role's clearance `{clearance}`",
        At(location)
    )]
    AboveClearance {
        /// The field's path (`roles.<role>.tools[i]`).
        path: String,
        /// Where it is written.
        location: Option<Location>,
        /// The tool.
        tool: String,
        /// The tool's tier.
        tier: String,
        /// The role's clearance.
        clearance: String,
    },
    /// The file could not be read.
    #[error("cannot read policy file `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl DocumentError {
    /// The field's path with its section prefix, where the error has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            DocumentError::Shape { path, .. }
            | DocumentError::Invalid { path, .. }
            | DocumentError::UnknownReference { path, .. }
            | DocumentError::AboveClearance { path, .. } => Some(path),
            DocumentError::Syntax { .. } | DocumentError::Io { .. } => None,
        }
    }

    /// Where in the text the error is, when the text is known.
    pub fn location(&self) -> Option<Location> {
        match self {
            DocumentError::Syntax { location, .. }
            | DocumentError::Shape { location, .. }
            | DocumentError::Invalid { location, .. }
            | DocumentError::UnknownReference { location, .. }
            | DocumentError::AboveClearance { location, .. } => *location,
            DocumentError::Io { .. } => None,
        }
    }

    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        DocumentError::Invalid {
            path: path.into(),
            location: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn unknown(
        path: impl Into<String>,
        kind: &'static str,
        name: impl Into<String>,
        known: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        let known: Vec<String> = known.into_iter().map(|s| s.as_ref().to_owned()).collect();
        DocumentError::UnknownReference {
            path: path.into(),
            location: None,
            kind,
            name: name.into(),
            known: if known.is_empty() {
                "(none)".into()
            } else {
                known.join(", ")
            },
        }
    }

    /// Fills in the location of the error's path from the document text, if not known yet.
    pub(crate) fn located(mut self, text: &str, format: super::Format) -> Self {
        let path = self.path().map(str::to_owned);
        if let (Some(path), None) = (path, self.location()) {
            let found = super::locate::locate(text, format, &path);
            match &mut self {
                DocumentError::Shape { location, .. }
                | DocumentError::Invalid { location, .. }
                | DocumentError::UnknownReference { location, .. }
                | DocumentError::AboveClearance { location, .. } => *location = found,
                DocumentError::Syntax { .. } | DocumentError::Io { .. } => {}
            }
        }
        self
    }
}

impl From<crate::boundary::PolicyError> for DocumentError {
    /// The boundary's errors name top-level paths (`tools.pay.args.amount.max`), which are the
    /// document's own.
    fn from(e: crate::boundary::PolicyError) -> Self {
        use crate::boundary::PolicyError as B;
        match e {
            B::UnknownTier { field, tier, known } => DocumentError::UnknownReference {
                path: field,
                location: None,
                kind: "tier",
                name: tier,
                known,
            },
            B::UnknownTool { field, tool } => DocumentError::UnknownReference {
                path: field,
                location: None,
                kind: "tool",
                name: tool,
                known: "see `tools`".into(),
            },
            B::Io { path, source } => DocumentError::Io { path, source },
            other => {
                let path = match &other {
                    B::ConfusableNames { second, .. } => format!("tools.{second}"),
                    _ => other.field().unwrap_or(".").to_owned(),
                };
                // The boundary's own message repeats the field; keep only the reason.
                let full = other.to_string();
                let prefix = format!("`{path}`: ");
                let reason = full.strip_prefix(&prefix).unwrap_or(&full).to_owned();
                DocumentError::Invalid {
                    path,
                    location: None,
                    reason,
                }
            }
        }
    }
}

impl DocumentError {
    /// An escalation section error, with the `escalation.` prefix put on its path.
    pub(crate) fn from_flow(e: crate::flow::FlowPolicyError) -> Self {
        use crate::flow::FlowPolicyError as E;
        let path = if e.path().is_empty() || e.path() == "." {
            "flow".to_owned()
        } else {
            format!("flow.{}", e.path())
        };
        match e {
            E::UnknownTier { name, known, .. } => DocumentError::UnknownReference {
                path,
                location: None,
                kind: "tier",
                name,
                known,
            },
            E::UnknownTool { name, .. } => DocumentError::UnknownReference {
                path,
                location: None,
                kind: "tool",
                name,
                known: "see `tools`".into(),
            },
            E::Shape { message, .. } => DocumentError::Shape {
                path,
                location: None,
                message,
            },
            E::Invalid { reason, .. } => DocumentError::Invalid {
                path,
                location: None,
                reason,
            },
        }
    }

    pub(crate) fn from_escalation(e: crate::escalation::EscalationPolicyError) -> Self {
        use crate::escalation::EscalationPolicyError as E;
        let prefixed = |f: &str| {
            if f == "." || f.is_empty() {
                "escalation".to_owned()
            } else {
                format!("escalation.{f}")
            }
        };
        match e {
            E::UnknownTier { field, tier, known } => DocumentError::UnknownReference {
                path: prefixed(&field),
                location: None,
                kind: "tier",
                name: tier,
                known,
            },
            E::UnknownGroup { field, group } => DocumentError::UnknownReference {
                path: prefixed(&field),
                location: None,
                kind: "approver group",
                name: group,
                known: "see `escalation.groups`".into(),
            },
            E::UnknownTool { field, tool } => DocumentError::UnknownReference {
                path: prefixed(&field),
                location: None,
                kind: "tool",
                name: tool,
                known: "see `tools`".into(),
            },
            other => {
                let field = other.field().unwrap_or(".").to_owned();
                let full = other.to_string();
                let reason = full
                    .strip_prefix(&format!("`{field}`: "))
                    .unwrap_or(&full)
                    .to_owned();
                DocumentError::Invalid {
                    path: prefixed(&field),
                    location: None,
                    reason,
                }
            }
        }
    }
}
