//! Scopes: which tools, which operations, which resources a credential covers, and the subset test
//! that keeps a role from ever minting more than it was granted.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::boundary::Effect;
use crate::boundary::path::fold::{EdgeFault, Fold, edge_fault, fold};

/// What a credential may be used for: reading, or changing state (which includes irreversible
/// effects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Reads only.
    Read,
    /// Writes, including irreversible effects.
    Write,
}

impl Operation {
    /// The operation a tool with this effect performs.
    pub fn of(effect: Effect) -> Self {
        match effect {
            Effect::Read => Operation::Read,
            Effect::Write | Effect::Irreversible => Operation::Write,
        }
    }

    /// `"read"` or `"write"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// A resource pattern: an exact resource (`matter/M-1001/intake.pdf`), everything below a prefix
/// (`matter/M-1001/*`), or everything (`*`, which only a grant that says so can produce).
///
/// Resources are `/`-separated; prefixes match whole segments (`matter/M-1/*` does not cover
/// `matter/M-10/x`). Refused, because they are the ways a resource string says one thing to this
/// check and another to the service: empty segments; segments made only of dots (`.`, `..`,
/// `...`), also before a `;parameter` (`..;x`, which servlet containers resolve as `..`) and
/// behind invisible characters; segments that start or end with white space of any kind (every
/// Unicode `White_Space` character and whatever NFKC turns into one: a trimming service reads
/// `..\u{A0}` as `..`); Unicode look-alikes of `.`, `/`, `\`, `%`, `:` and `~` anywhere (the
/// fullwidth `．`, the two-dot leader `‥`, ...); `%`, `\`, `*` (other than a final `/*`) and
/// control characters. The classification of those characters is the one the path rule uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourcePattern {
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PatternKind {
    Any,
    Exact(String),
    /// Prefix including its trailing `/`.
    Below(String),
}

/// A resource string or pattern that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource `{resource}`: {reason}")]
pub struct ResourceError {
    /// The text given.
    pub resource: String,
    /// Why it is refused.
    pub reason: &'static str,
}

fn check_resource(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > 1024 {
        return Err("longer than 1024 bytes");
    }
    if s.chars()
        .any(|c| c.is_control() || matches!(c, '%' | '\\' | '*'))
    {
        return Err("contains a control character, `%`, `\\` or `*`");
    }
    // URL-style resources (`https://host/path`) keep their `//` after the scheme.
    let body = match s.find("://") {
        Some(i) if s[..i].bytes().all(|b| b.is_ascii_alphanumeric()) => &s[i + 3..],
        _ => s,
    };
    for seg in body.split('/') {
        if seg.is_empty() {
            return Err("has an empty segment");
        }
        // Servlet containers drop a `;parameter` before resolving dot segments: `..;x` is `..`.
        let name = seg.split(';').next().unwrap_or(seg);
        match edge_fault(name) {
            None => {}
            Some(EdgeFault::LookAlike) => {
                return Err("contains a Unicode look-alike of `.`, `/`, `\\`, `%`, `:` or `~`");
            }
            Some(EdgeFault::Invisible) => {
                return Err("has an empty or invisible segment (before any `;`)");
            }
            Some(EdgeFault::DotsOnly) => {
                return Err("has a segment made only of dots (`.`, `..`, `..;x`, ...)");
            }
            Some(EdgeFault::LeadingSpace | EdgeFault::TrailingSpace) => {
                return Err("has a segment starting or ending with white space");
            }
        }
        // Parameters may carry look-alikes too.
        if name.len() < seg.len() && seg.chars().any(|c| fold(c).is_some_and(Fold::is_lookalike)) {
            return Err("contains a Unicode look-alike of `.`, `/`, `\\`, `%`, `:` or `~`");
        }
    }
    Ok(())
}

impl ResourcePattern {
    /// Parses `*`, `prefix/*` or an exact resource.
    pub fn parse(s: &str) -> Result<Self, ResourceError> {
        let err = |reason| ResourceError {
            resource: s.to_owned(),
            reason,
        };
        if s == "*" {
            return Ok(Self {
                kind: PatternKind::Any,
            });
        }
        if let Some(prefix) = s.strip_suffix("/*") {
            check_resource(prefix).map_err(err)?;
            return Ok(Self {
                kind: PatternKind::Below(format!("{prefix}/")),
            });
        }
        check_resource(s).map_err(err)?;
        Ok(Self {
            kind: PatternKind::Exact(s.to_owned()),
        })
    }

    /// Checks a concrete resource string (no pattern) for the same hazards.
    pub fn validate_resource(s: &str) -> Result<(), ResourceError> {
        check_resource(s).map_err(|reason| ResourceError {
            resource: s.to_owned(),
            reason,
        })
    }

    /// Whether the concrete resource `r` is covered. `r` is validated first; an invalid one is
    /// never covered.
    pub fn covers(&self, r: &str) -> bool {
        if check_resource(r).is_err() {
            return false;
        }
        match &self.kind {
            PatternKind::Any => true,
            PatternKind::Exact(e) => e == r,
            PatternKind::Below(p) => r.len() > p.len() && r.starts_with(p.as_str()),
        }
    }

    /// Whether everything `other` covers is covered by `self`.
    pub fn includes(&self, other: &ResourcePattern) -> bool {
        match (&self.kind, &other.kind) {
            (PatternKind::Any, _) => true,
            (_, PatternKind::Any) => false,
            (PatternKind::Exact(a), PatternKind::Exact(b)) => a == b,
            (PatternKind::Exact(_), PatternKind::Below(_)) => false,
            (PatternKind::Below(p), PatternKind::Exact(b)) => {
                b.len() > p.len() && b.starts_with(p.as_str())
            }
            (PatternKind::Below(p), PatternKind::Below(q)) => q.starts_with(p.as_str()),
        }
    }

    /// Whether this is the wildcard `*`.
    pub fn is_any(&self) -> bool {
        matches!(self.kind, PatternKind::Any)
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PatternKind::Any => f.write_str("*"),
            PatternKind::Exact(e) => f.write_str(e),
            PatternKind::Below(p) => write!(f, "{p}*"),
        }
    }
}

impl TryFrom<String> for ResourcePattern {
    type Error = ResourceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ResourcePattern> for String {
    fn from(p: ResourcePattern) -> String {
        p.to_string()
    }
}

/// The scope of one credential: the tools, operations and resources it is valid for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scope {
    /// Exact tool names.
    pub tools: Vec<String>,
    /// Allowed operations.
    pub operations: Vec<Operation>,
    /// Covered resources.
    pub resource: ResourcePattern,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<&str> = self.operations.iter().map(|o| o.as_str()).collect();
        write!(
            f,
            "tools [{}] ops [{}] resource {}",
            self.tools.join(", "),
            ops.join(", "),
            self.resource
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ResourcePattern {
        ResourcePattern::parse(s).unwrap()
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let m = p("matter/M-1/*");
        assert!(m.covers("matter/M-1/a.pdf"));
        assert!(m.covers("matter/M-1/sub/b.pdf"));
        assert!(!m.covers("matter/M-1"));
        assert!(!m.covers("matter/M-1/"));
        assert!(!m.covers("matter/M-10/a.pdf"));
        assert!(!m.covers("matter/M-1/../M-2/a.pdf"));
        assert!(!m.covers("matter/M-1/%2e%2e/M-2"));
        assert!(!m.covers("matter/M-1//x"));
        assert!(!m.covers("matter/M-1/x\\..\\y"));
    }

    #[test]
    fn url_resources_keep_their_scheme_slashes() {
        let m = p("https://api.bank.example/v1/*");
        assert!(m.covers("https://api.bank.example/v1/accounts"));
        assert!(!m.covers("https://api.bank.example/v2/accounts"));
        assert!(!m.covers("https://api.bank.example.evil/v1/x"));
    }

    #[test]
    fn inclusion_never_widens() {
        assert!(p("*").includes(&p("matter/*")));
        assert!(!p("matter/*").includes(&p("*")));
        assert!(p("matter/*").includes(&p("matter/M-1/*")));
        assert!(p("matter/*").includes(&p("matter/M-1/a")));
        assert!(!p("matter/M-1/*").includes(&p("matter/*")));
        assert!(!p("matter/M-1/*").includes(&p("matter/M-10/*")));
        assert!(!p("matter/M-1/a").includes(&p("matter/M-1/*")));
        assert!(p("matter/M-1/a").includes(&p("matter/M-1/a")));
    }

    #[test]
    fn covers_refuses_servlet_dot_dot_fullwidth_dots_and_spaced_dot_segments() {
        // Each of these is `matter/M-1/../M-2/...` to some service between the check and the data.
        let m = p("matter/M-1/*");
        for r in [
            "matter/M-1/..;/M-2/a.pdf",
            "matter/M-1/..;jsessionid=x/M-2/a.pdf",
            "matter/M-1/.;/a.pdf",
            "matter/M-1/\u{FF0E}\u{FF0E}/M-2/a.pdf",
            "matter/M-1/\u{2025}/M-2/a.pdf",
            "matter/M-1/.\u{FE52}/M-2/a.pdf",
            "matter/M-1/.. /M-2/a.pdf",
            "matter/M-1/..\u{A0}/M-2/a.pdf",
            "matter/M-1/..\u{3000}/M-2/a.pdf",
            "matter/M-1/\u{2003}../M-2/a.pdf",
            "matter/M-1/..\u{200B}/M-2/a.pdf",
            "matter/M-1/.../a.pdf",
            "matter/M-1/x\u{FF0F}..\u{FF0F}M-2",
            "matter/M-1/;x/a.pdf",
        ] {
            assert!(!m.covers(r), "{r:?}");
            assert!(ResourcePattern::parse(r).is_err(), "{r:?}");
        }
        for ok in [
            "matter/M-1/a b.pdf",
            "matter/M-1/Müller.pdf",
            "matter/M-1/a;v=2",
            "matter/M-1/.hidden",
        ] {
            assert!(m.covers(ok), "{ok:?}");
        }
    }

    #[test]
    fn covers_refuses_every_char_nfkc_folds_into_dot_slash_or_space() {
        use unicode_normalization::UnicodeNormalization;
        let m = p("matter/M-1/*");
        let mut seen = 0;
        for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
            if c.is_ascii() && !c.is_whitespace() {
                continue;
            }
            let n: String = c.to_string().nfkc().collect();
            let dotlike = n.contains(['.', '/', '\\', '\u{3002}']);
            if !dotlike && !n.chars().any(char::is_whitespace) {
                continue;
            }
            seen += 1;
            for r in [
                format!("matter/M-1/..{c}/M-2/x"),
                format!("matter/M-1/{c}../M-2/x"),
                format!("matter/M-1/x{c}"),
            ] {
                assert!(!m.covers(&r), "U+{:04X}: {r:?}", c as u32);
            }
            if dotlike {
                let r = format!("matter/M-1/x{c}y");
                assert!(!m.covers(&r), "U+{:04X}: {r:?}", c as u32);
            }
        }
        assert!(seen > 100, "only {seen} characters examined");
    }

    #[test]
    fn hazardous_resources_are_refused() {
        for bad in [
            "", "a//b", "a/../b", "./a", "a/%2e", "a\\b", "a/*/b", "a\nb", "**",
        ] {
            assert!(ResourcePattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
