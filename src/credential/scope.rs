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
/// check and another to the service:
///
/// - empty segments;
/// - segments made only of dots (`.`, `..`, `...`), also behind invisible characters, and also
///   when the dots are followed by a character that ends the segment for some parser: `;`
///   (servlet containers resolve `..;x` as `..`), `?` and `#` (a URL parser cuts the query or
///   fragment off first, so `https://h/a/..?x` has the path `/`), or any non-ASCII
///   character (a lossy conversion to ASCII, such as Java's `getBytes(US_ASCII)` or Python's
///   `encode("ascii", "replace")`, turns it into `?`);
/// - segments that start or end with white space of any kind (every Unicode `White_Space`
///   character and whatever NFKC turns into one: a trimming service reads `..\u{A0}` as `..`);
/// - Unicode look-alikes of `.`, `/`, `\`, `%`, `:`, `~`, `?`, `#` and `;` anywhere (the
///   fullwidth `．` and `？`, the two-dot leader `‥`, the Greek question mark U+037E, ...);
/// - `%` (so no percent-encoded form of any of these, such as `%2e` or `%3F`), `\`, `*` (other
///   than a final `/*`) and control characters;
/// - in the prefix of a `prefix/*` pattern, `?` and `#`: a URL's path ends there, so nothing is
///   below it.
///
/// The classification of those characters is the one the path rule uses
/// (`boundary::path::fold`). For an `http`/`https` prefix, a covered resource therefore resolves,
/// under a WHATWG URL parser, to a path strictly below the prefix's path (checked against the
/// `url` crate by a property test).
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

/// The ASCII characters that end a path segment's name for some parser: a URL parser ends the
/// path at `?` (query) and `#` (fragment), servlet containers end a segment's name at `;` (path
/// parameters). Their look-alikes ([`Fold::Delimiter`]) and percent-encoded forms are refused
/// outright.
fn ends_segment(c: char) -> bool {
    matches!(c, '?' | '#' | ';')
}

/// Whether `name` starts with dots followed by a non-ASCII character, which a lossy conversion
/// to ASCII turns into `?`: `..é` becomes `..?`, the dot segment `..` to a URL parser.
fn dots_before_non_ascii(name: &str) -> bool {
    let mut dots = false;
    for c in name.chars() {
        match c {
            '.' => dots = true,
            c => return dots && !c.is_ascii(),
        }
    }
    false
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
    if !s.is_ascii()
        && s.chars()
            .any(|c| fold(c).is_some_and(|f| f.is_lookalike() || f == Fold::Delimiter))
    {
        return Err(LOOK_ALIKE);
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
        // What a parser takes for the segment: a URL parser stops at `?` and `#`, a servlet
        // container drops a `;parameter` before resolving dot segments (`..;x` is `..`).
        let name = seg.split(ends_segment).next().unwrap_or(seg);
        match edge_fault(name) {
            None => {}
            // Refused above, with every other look-alike.
            Some(EdgeFault::LookAlike) => return Err(LOOK_ALIKE),
            Some(EdgeFault::Invisible) => {
                return Err("has an empty or invisible segment (before any `;`, `?` or `#`)");
            }
            Some(EdgeFault::DotsOnly) => {
                return Err(
                    "has a segment made only of dots (`.`, `..`, also before `;`, `?` or `#`: `..;x`, `..?x`)",
                );
            }
            Some(EdgeFault::LeadingSpace | EdgeFault::TrailingSpace) => {
                return Err("has a segment starting or ending with white space");
            }
        }
        if dots_before_non_ascii(name) {
            return Err(
                "has a segment of dots before a non-ASCII character (a lossy conversion to ASCII makes it `..?`)",
            );
        }
    }
    Ok(())
}

const LOOK_ALIKE: &str =
    "contains a Unicode look-alike of `.`, `/`, `\\`, `%`, `:`, `~`, `?`, `#` or `;`";

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
            if prefix.contains(['?', '#']) {
                return Err(err(
                    "the prefix of a `prefix/*` pattern holds `?` or `#`, where a URL's path ends: nothing is below it",
                ));
            }
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
            // What a URL parser cuts off before resolving dot segments, in every form.
            "matter/M-1/..?x",
            "matter/M-1/..#x",
            "matter/M-1/.?x",
            "matter/M-1/..?",
            "matter/M-1/..#",
            "matter/M-1/?x",
            "matter/M-1/#x",
            "matter/M-1/..\u{200B}?x",
            "matter/M-1/..%3Fx",
            "matter/M-1/..%23x",
            "matter/M-1/..\u{FF1F}x",
            "matter/M-1/..\u{FE56}x",
            "matter/M-1/..\u{FF03}x",
            "matter/M-1/..\u{FF1B}x",
            "matter/M-1/..\u{037E}x",
            "matter/M-1/..\u{2047}x",
            "matter/M-1/x\u{FF1F}y",
            // A lossy ASCII conversion turns the non-ASCII character into `?`.
            "matter/M-1/..\u{E9}",
            "matter/M-1/.\u{4E2D}x",
            "matter/M-1/..\u{200B}x",
        ] {
            assert!(!m.covers(r), "{r:?}");
            assert!(ResourcePattern::parse(r).is_err(), "{r:?}");
        }
        for ok in [
            "matter/M-1/a b.pdf",
            "matter/M-1/Müller.pdf",
            "matter/M-1/a;v=2",
            "matter/M-1/.hidden",
            "matter/M-1/x?y=..",
            "matter/M-1/x#..",
            "matter/M-1/x.y?q=1#f",
            "matter/M-1/\u{E9}.pdf",
            "matter/M-1/x..\u{E9}",
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
    fn a_prefix_may_not_hold_a_query_or_fragment() {
        for bad in ["https://h.example/v1/x?a=1/*", "matter/M-1#x/*"] {
            let e = ResourcePattern::parse(bad).unwrap_err();
            assert!(e.reason.contains("`?` or `#`"), "{bad:?}: {e}");
        }
        // An exact resource may: it is compared as a whole.
        let exact = p("https://h.example/v1/x?a=1");
        assert!(exact.covers("https://h.example/v1/x?a=1"));
        assert!(!exact.covers("https://h.example/v1/x?a=2"));
        // `;` parameters in a prefix are harmless: servlet containers drop them from the prefix
        // and the resource alike.
        assert!(p("https://h.example/v1/a;v=1/*").covers("https://h.example/v1/a;v=1/b"));
    }

    #[test]
    fn hazardous_resources_are_refused() {
        for bad in [
            "", "a//b", "a/../b", "./a", "a/%2e", "a\\b", "a/*/b", "a\nb", "**",
        ] {
            assert!(ResourcePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// Prefixes of URL-shaped patterns the property test draws from.
    const URL_PREFIXES: &[&str] = &[
        "https://api.bank.example/v1/accounts/A-1/",
        "http://h.example/",
        "https://h.example:8443/a/b;v=1/",
        "https://h.example/x/.y/",
    ];

    /// Pieces a resource below the prefix is made of: every segment end, dot, slash, encoding,
    /// look-alike and invisible character the check is about, and ordinary text.
    const PIECES: &[&str] = &[
        ".", "..", "...", "/", "?", "#", ";", "a", "A-2", "x.y", "=", "&", "@", ":", "~", "+",
        "%2e", "%2E", "%3F", "%23", "\\", " ", "\t", "\u{200B}", "\u{AD}", "\u{A0}", "\u{3000}",
        "\u{FF1F}", "\u{FE56}", "\u{FF0E}", "\u{FF03}", "\u{FF1B}", "\u{037E}", "\u{2025}",
        "\u{FF0F}", "\u{E9}", "\u{4E2D}", "..;", "../", "./", "?/..",
    ];

    /// The path a servlet container resolves: `;parameters` dropped from every segment, then
    /// dot segments resolved. Segments, without the leading empty one.
    fn servlet_segments(path: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for seg in path.split('/').skip(1) {
            match seg.split(';').next().unwrap_or(seg) {
                "." => {}
                ".." => {
                    out.pop();
                }
                name => out.push(name),
            }
        }
        out
    }

    /// `true` if `r` (already parsed) names something strictly below `base`, as the `url` crate
    /// resolves it and as a servlet container then reads its path.
    fn strictly_below(r: &url::Url, base: &url::Url) -> bool {
        let same_origin = r.scheme() == base.scheme()
            && r.host_str() == base.host_str()
            && r.port_or_known_default() == base.port_or_known_default();
        let url_below = r.path().starts_with(base.path()) && r.path().len() > base.path().len();
        let b = servlet_segments(base.path());
        let b = &b[..b.len() - 1]; // the prefix's path ends with `/`: drop the empty last one
        let s = servlet_segments(r.path());
        let servlet_below = s.len() > b.len() && s.starts_with(b) && !s[b.len()].is_empty();
        same_origin && url_below && servlet_below
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Differential test against the `url` crate (a WHATWG URL parser): whatever `covers`
        /// accepts below an `http(s)` prefix resolves to a path strictly below the prefix's
        /// path, read as given, after NFKC normalisation, after invisible characters are
        /// stripped, after a lossy conversion to ASCII, and through a servlet container's `;`
        /// handling.
        #[test]
        fn covered_url_resources_resolve_below_the_prefix(
            which in 0..URL_PREFIXES.len(),
            pieces in proptest::collection::vec(proptest::sample::select(PIECES), 1..8),
        ) {
            use unicode_normalization::UnicodeNormalization;
            let prefix = URL_PREFIXES[which];
            let pattern = ResourcePattern::parse(&format!("{prefix}*")).unwrap();
            let r = format!("{prefix}{}", pieces.concat());
            if pattern.covers(&r) {
                let base = url::Url::parse(prefix).unwrap();
                let readings = [
                    r.clone(),
                    r.nfkc().collect::<String>(),
                    r.chars().filter(|&c| !crate::boundary::path::fold::is_ignorable(c)).collect(),
                ];
                for reading in readings {
                    let u = url::Url::parse(&reading);
                    proptest::prop_assert!(u.is_ok(), "{:?} covered but {:?} does not parse", r, reading);
                    let u = u.unwrap();
                    proptest::prop_assert!(
                        strictly_below(&u, &base),
                        "{:?} is covered by {}* but {:?} resolves to {}", r, prefix, reading, u
                    );
                }
                // A lossy ASCII conversion may cut a segment that starts with a non-ASCII
                // character down to nothing (`A-1/\u{E9}x` becomes `A-1/?x`, the prefix
                // itself), never to anything above the prefix.
                let lossy: String = r.chars().map(|c| if c.is_ascii() { c } else { '?' }).collect();
                let u = url::Url::parse(&lossy).unwrap();
                proptest::prop_assert!(
                    u.host_str() == base.host_str() && u.path().starts_with(base.path()),
                    "{:?} is covered by {}* but {:?} resolves to {}", r, prefix, lossy, u
                );
            }
        }
    }

    #[test]
    fn the_differential_test_sees_covered_resources() {
        // Not vacuous: ordinary resources built from the same pieces are covered.
        let base = url::Url::parse(URL_PREFIXES[0]).unwrap();
        let m = p(&format!("{}*", URL_PREFIXES[0]));
        for tail in ["a", "x.y?q=..#..", "a;v=1/x.y", "A-2/..%2ex", "\u{E9}x"] {
            let r = format!("{}{tail}", URL_PREFIXES[0]);
            let covered = m.covers(&r);
            assert_eq!(covered, !tail.contains('%'), "{r:?}");
            if covered {
                assert!(
                    strictly_below(&url::Url::parse(&r).unwrap(), &base),
                    "{r:?}"
                );
            }
        }
    }
}
