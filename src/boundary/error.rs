//! Errors raised while reading or compiling a policy. Every variant names the field at fault.

use std::path::PathBuf;

use super::path::PathRootError;
use super::url::UrlPolicyError;

/// A policy document that cannot become a boundary. The `field` is a dotted path into the document
/// (`tools.send_email.args.amount.max`), so the author can find the line to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The document is not well-formed TOML/JSON, or a field has the wrong shape or is unknown.
    #[error("invalid {format} policy document at `{field}`: {message}")]
    Parse {
        /// `"JSON"` or `"TOML"`.
        format: &'static str,
        /// Where in the document (dotted path; `.` for the root).
        field: String,
        /// The parser's explanation (includes line and column where the parser gives them).
        message: String,
    },
    /// A value is not acceptable.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// Where in the document.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A tier name that the document's `tiers` list does not define.
    #[error("`{field}`: unknown tier `{tier}` (defined tiers: {known})")]
    UnknownTier {
        /// Where in the document.
        field: String,
        /// The name used.
        tier: String,
        /// The tiers that exist, comma-separated.
        known: String,
    },
    /// A role lists a tool that the document does not define.
    #[error("`{field}`: unknown tool `{tool}`")]
    UnknownTool {
        /// Where in the document.
        field: String,
        /// The name used.
        tool: String,
    },
    /// Two tools whose names differ only in letter case or in separators (`-` `_` `.` `:` `/`).
    #[error(
        "`tools.{second}`: tools `{first}` and `{second}` differ only in case or separators; rename one so no agent can confuse them"
    )]
    ConfusableNames {
        /// One name.
        first: String,
        /// The other name.
        second: String,
    },
    /// A `pattern` that is not a valid regular expression (or compiles too large).
    #[error("`{field}`: invalid regular expression: {source}")]
    Pattern {
        /// Where in the document.
        field: String,
        /// The regex crate's explanation.
        #[source]
        source: Box<regex::Error>,
    },
    /// A `path_under` root that is not acceptable.
    #[error("`{field}`: {source}")]
    PathRoot {
        /// Where in the document.
        field: String,
        /// Why the root is rejected.
        #[source]
        source: PathRootError,
    },
    /// A `url_hosts` / `url_schemes` / `url_ports` setting that is not acceptable.
    #[error("`{field}`: {source}")]
    UrlPolicy {
        /// Where in the document.
        field: String,
        /// Why the setting is rejected.
        #[source]
        source: UrlPolicyError,
    },
    /// The policy file could not be read.
    #[error("cannot read policy file `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl PolicyError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The dotted path of the field at fault, where there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            PolicyError::Parse { field, .. }
            | PolicyError::Invalid { field, .. }
            | PolicyError::UnknownTier { field, .. }
            | PolicyError::UnknownTool { field, .. }
            | PolicyError::Pattern { field, .. }
            | PolicyError::PathRoot { field, .. }
            | PolicyError::UrlPolicy { field, .. } => Some(field),
            PolicyError::ConfusableNames { .. } | PolicyError::Io { .. } => None,
        }
    }
}
