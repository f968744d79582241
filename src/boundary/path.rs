//! "Path under a root": a lexical check that a tool-call path argument stays
//! inside an allowed directory.
//!
//! # What the rule guarantees
//!
//! [`check_path`] returns `Ok` only if the argument, read as a POSIX path after
//! decoding `%XX` escapes exactly once, names the root itself or something
//! beneath it, component by component (`/data/ab` is not under `/data/a`).
//! Relative arguments are read as relative to the root. Anything that
//! different consumers could read differently is refused rather than
//! interpreted: backslashes, control characters, double encoding, invalid
//! UTF-8 (including overlong forms such as `%c0%ae`), Unicode look-alikes of
//! `.`, `/`, `\`, `%`, `:` and `~` (including what NFKC or Windows "best fit"
//! conversion turns into them), a leading `~`, drive prefixes, a leading `//`,
//! components made only of dots, and components with a trailing dot or space
//! (Windows strips those, so `secret.txt.` would open `secret.txt`). The dot,
//! space, `~` and drive checks ignore invisible (default-ignorable) characters,
//! so stripping them later cannot create `..`.
//!
//! # What it cannot guarantee
//!
//! The check is purely lexical: it never touches the file system. It cannot
//! see symbolic links, bind mounts, hard links, case-insensitive or
//! Unicode-normalising file systems, or a file that is replaced between the
//! check and the open. This is why `..` is rejected by default
//! ([`DotDot::Reject`]): lexical normalisation is unsound once symlinks exist,
//! because `root/link/..` is the parent of the link's *target* on disk, not
//! `root`. [`DotDot::Normalize`] pops `..` lexically for callers who accept
//! that risk. Either way, the tool that opens the file should still resolve it
//! safely, for example with `openat2(..., RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! on Linux or `O_NOFOLLOW` component by component, relative to a directory
//! handle for the root. Platform-specific names that stay inside the root but
//! mean something special (Windows device names such as `CON`, NTFS streams
//! such as `a.txt:x`) are not refused.
//!
//! Checking allocates nothing; compiling a [`PathRoot`] does.

/// Longest accepted path component, in bytes after percent-decoding (POSIX
/// `NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// The placeholder a root component may consist of.
const PLACEHOLDER: &str = "{compartment}";

/// Characters that look like, or that NFKC normalisation or Windows
/// "best fit" code-page conversion turn into, `.`, `/`, `\`, `%`, `:` or `~`.
/// A path containing any of them is refused: a later layer that normalises
/// the path could otherwise turn `\u{FF0E}\u{FF0E}` into `..`. Inclusive
/// ranges.
const LOOKALIKES: &[(char, char)] = &[
    ('\u{00A5}', '\u{00A5}'),   // YEN SIGN: best fit to `\` (code page 932)
    ('\u{20A9}', '\u{20A9}'),   // WON SIGN: best fit to `\` (code page 949)
    ('\u{2024}', '\u{2026}'),   // ONE/TWO DOT LEADER, HORIZONTAL ELLIPSIS
    ('\u{2044}', '\u{2044}'),   // FRACTION SLASH
    ('\u{2100}', '\u{2101}'),   // ACCOUNT OF, ADDRESSED TO THE SUBJECT (NFKC `a/c`)
    ('\u{2105}', '\u{2106}'),   // CARE OF, CADA UNA (NFKC `c/o`)
    ('\u{2215}', '\u{2216}'),   // DIVISION SLASH, SET MINUS
    ('\u{2488}', '\u{249B}'),   // DIGIT ONE FULL STOP .. NUMBER TWENTY FULL STOP (`1.`)
    ('\u{29F8}', '\u{29F9}'),   // BIG SOLIDUS, BIG REVERSE SOLIDUS
    ('\u{3002}', '\u{3002}'),   // IDEOGRAPHIC FULL STOP
    ('\u{33C2}', '\u{33C2}'),   // SQUARE AM (NFKC `a.m.`)
    ('\u{33C7}', '\u{33C7}'),   // SQUARE CO (NFKC `Co.`)
    ('\u{33D8}', '\u{33D8}'),   // SQUARE PM (NFKC `p.m.`)
    ('\u{FE13}', '\u{FE13}'),   // PRESENTATION FORM FOR VERTICAL COLON
    ('\u{FE19}', '\u{FE19}'),   // PRESENTATION FORM FOR VERTICAL HORIZONTAL ELLIPSIS
    ('\u{FE30}', '\u{FE30}'),   // PRESENTATION FORM FOR VERTICAL TWO DOT LEADER
    ('\u{FE52}', '\u{FE52}'),   // SMALL FULL STOP
    ('\u{FE55}', '\u{FE55}'),   // SMALL COLON
    ('\u{FE68}', '\u{FE68}'),   // SMALL REVERSE SOLIDUS
    ('\u{FE6A}', '\u{FE6A}'),   // SMALL PERCENT SIGN
    ('\u{FF05}', '\u{FF05}'),   // FULLWIDTH PERCENT SIGN
    ('\u{FF0E}', '\u{FF0F}'),   // FULLWIDTH FULL STOP, FULLWIDTH SOLIDUS
    ('\u{FF1A}', '\u{FF1A}'),   // FULLWIDTH COLON
    ('\u{FF3C}', '\u{FF3C}'),   // FULLWIDTH REVERSE SOLIDUS
    ('\u{FF5E}', '\u{FF5E}'),   // FULLWIDTH TILDE
    ('\u{FF61}', '\u{FF61}'),   // HALFWIDTH IDEOGRAPHIC FULL STOP
    ('\u{1F100}', '\u{1F100}'), // DIGIT ZERO FULL STOP (`0.`)
];

/// Unicode default-ignorable code points (zero-width, joiners, bidi controls,
/// variation selectors, tags). Some software strips them, so the dot, space,
/// `~` and drive checks look at each component with them removed:
/// `..\u{200B}` is refused as if it were `..`. Inclusive ranges.
const IGNORABLES: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFF8}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0000}', '\u{E0FFF}'),
];

fn in_ranges(c: char, ranges: &[(char, char)]) -> bool {
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// The characters of `s` that are not default-ignorable.
fn visible(s: &str) -> impl Iterator<Item = char> + Clone + '_ {
    s.chars().filter(|&c| !in_ranges(c, IGNORABLES))
}

/// What to do with `..` components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DotDot {
    /// Any `..` component is a violation (the default: lexical `..` handling
    /// is unsound in the presence of symlinks).
    #[default]
    Reject,
    /// `..` removes the previous component lexically; climbing above the root
    /// (or above `/`) is a violation.
    Normalize,
}

/// Why a root given to [`PathRoot::parse`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathRootError {
    /// The root does not start with `/`.
    #[error("root must be an absolute path starting with `/`")]
    NotAbsolute,
    /// The root contains an empty component (`//`) other than one trailing `/`.
    #[error("root contains an empty component (`//`)")]
    EmptyComponent,
    /// The root contains a `.` or `..` component.
    #[error("root contains a `.` or `..` component")]
    DotComponent,
    /// The root contains a component made only of dots, such as `...`.
    #[error("root contains a component made only of dots")]
    DotsOnly,
    /// A root component ends with a dot or a space.
    #[error("root contains a component ending with a dot or a space")]
    TrailingDotOrSpace,
    /// The root contains a backslash.
    #[error("root contains a backslash")]
    Backslash,
    /// The root contains `%` (roots are never percent-decoded).
    #[error("root contains `%`")]
    Percent,
    /// The root contains a control character.
    #[error("root contains a control character")]
    ControlChar,
    /// The root contains a Unicode look-alike of `.`, `/`, `\`, `%`, `:` or `~`.
    #[error("root contains a Unicode look-alike of `.`, `/`, `\\`, `%`, `:` or `~`")]
    LookAlike,
    /// A root component consists only of invisible characters.
    #[error("root contains a component made only of invisible characters")]
    InvisibleComponent,
    /// A root component is longer than [`NAME_MAX`] bytes.
    #[error("root contains a component longer than 255 bytes")]
    ComponentTooLong,
    /// `{` or `}` appears other than as the whole component `{compartment}`.
    #[error("`{{compartment}}` must be a whole component; root has `{{` or `}}` elsewhere")]
    BadPlaceholder,
    /// `{compartment}` appears more than once.
    #[error("`{{compartment}}` may appear at most once in a root")]
    DuplicatePlaceholder,
}

/// Why [`check_path`] refused a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathViolation {
    /// The path is empty.
    #[error("path is empty")]
    Empty,
    /// The path is longer than the policy's `max_len` (in bytes, as given).
    #[error("path is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// Length of the path, in bytes.
        len: usize,
        /// The policy's limit.
        max: usize,
    },
    /// A component is longer than [`NAME_MAX`] bytes after decoding.
    #[error("path has a component longer than 255 bytes")]
    ComponentTooLong,
    /// A `%` is not followed by two hex digits.
    #[error("path contains an invalid percent escape")]
    InvalidPercentEncoding,
    /// A `%` remains after decoding once (double encoding such as `%252e`).
    #[error("path is percent-encoded more than once")]
    DoubleEncoding,
    /// The decoded path is not valid UTF-8 (for example overlong `%c0%ae`).
    #[error("path is not valid UTF-8 after percent-decoding")]
    InvalidUtf8,
    /// The path contains NUL or another control character.
    #[error("path contains a control character")]
    ControlChar,
    /// The path contains a backslash.
    #[error("path contains a backslash")]
    Backslash,
    /// The path contains a Unicode character that looks like, or normalises
    /// to, `.`, `/`, `\`, `%`, `:` or `~`.
    #[error("path contains a Unicode look-alike of `.`, `/`, `\\`, `%`, `:` or `~`")]
    LookAlike,
    /// The path starts with `~`.
    #[error("path starts with `~`")]
    HomeDir,
    /// The path starts with a Windows drive prefix such as `C:`.
    #[error("path starts with a drive prefix")]
    DrivePrefix,
    /// The path starts with `//` (UNC share or implementation-defined root).
    #[error("path starts with `//`")]
    DoubleSlashPrefix,
    /// A component consists only of invisible (default-ignorable) characters.
    #[error("path has a component made only of invisible characters")]
    InvisibleComponent,
    /// A component is made only of dots, such as `...` (ignoring invisible
    /// characters, so `..\u{200B}` counts).
    #[error("path has a component made only of dots")]
    DotsOnly,
    /// A component ends with a dot or a space, which Windows strips.
    #[error("path has a component ending with a dot or a space")]
    TrailingDotOrSpace,
    /// The path has a `..` component and the policy rejects them.
    #[error("path contains a `..` component")]
    DotDot,
    /// A `..` component climbs above the root.
    #[error("path climbs above the root with `..`")]
    EscapesRoot,
    /// The absolute path does not lie under the root.
    #[error("path is not under the allowed root")]
    NotUnderRoot,
    /// The path is relative and the policy requires absolute paths.
    #[error("path is relative and relative paths are not allowed")]
    RelativeNotAllowed,
    /// The root has `{compartment}` but no compartment was given.
    #[error("no compartment was given for a root with `{{compartment}}`")]
    MissingCompartment,
    /// The compartment value could never be a single safe component.
    #[error("compartment value is not a valid path component")]
    InvalidCompartment,
}

/// A fault shared by root components, path components and compartments.
#[derive(Clone, Copy)]
enum Fault {
    ControlChar,
    Backslash,
    Percent,
    LookAlike,
    DotsOnly,
    TrailingDotOrSpace,
    TooLong,
    Invisible,
}

impl From<Fault> for PathViolation {
    fn from(f: Fault) -> Self {
        match f {
            Fault::ControlChar => Self::ControlChar,
            Fault::Backslash => Self::Backslash,
            Fault::Percent => Self::DoubleEncoding,
            Fault::LookAlike => Self::LookAlike,
            Fault::DotsOnly => Self::DotsOnly,
            Fault::TrailingDotOrSpace => Self::TrailingDotOrSpace,
            Fault::TooLong => Self::ComponentTooLong,
            Fault::Invisible => Self::InvisibleComponent,
        }
    }
}

impl From<Fault> for PathRootError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::ControlChar => Self::ControlChar,
            Fault::Backslash => Self::Backslash,
            Fault::Percent => Self::Percent,
            Fault::LookAlike => Self::LookAlike,
            Fault::DotsOnly => Self::DotsOnly,
            Fault::TrailingDotOrSpace => Self::TrailingDotOrSpace,
            Fault::TooLong => Self::ComponentTooLong,
            Fault::Invisible => Self::InvisibleComponent,
        }
    }
}

/// Checks a non-empty component other than `.` and `..` (no `/` inside).
fn component_fault(s: &str) -> Option<Fault> {
    if s.len() > NAME_MAX {
        return Some(Fault::TooLong);
    }
    for c in s.chars() {
        if c.is_control() {
            return Some(Fault::ControlChar);
        }
        if c == '\\' {
            return Some(Fault::Backslash);
        }
        if c == '%' {
            return Some(Fault::Percent);
        }
        if in_ranges(c, LOOKALIKES) {
            return Some(Fault::LookAlike);
        }
    }
    match visible(s).last() {
        None => Some(Fault::Invisible),
        Some(_) if visible(s).all(|c| c == '.') => Some(Fault::DotsOnly),
        Some('.' | ' ') => Some(Fault::TrailingDotOrSpace),
        Some(_) => None,
    }
}

/// A compartment value must be one safe component and never `.`/`..`.
fn compartment_is_valid(c: &str) -> bool {
    !c.is_empty() && c != "." && c != ".." && !c.contains('/') && component_fault(c).is_none()
}

#[derive(Debug, Clone)]
enum Seg {
    Literal(String),
    Compartment,
}

/// A compiled root: absolute, `/`-separated; one component may be the
/// placeholder `{compartment}`.
#[derive(Debug, Clone)]
pub struct PathRoot {
    raw: String,
    segs: Vec<Seg>,
}

impl PathRoot {
    /// Validates and compiles a root such as `/srv/data` or
    /// `/srv/{compartment}/files`.
    ///
    /// The root must start with `/` and may end with one `/`; it must not
    /// contain empty, `.` or `..` components, backslashes, `%`, control
    /// characters, look-alike characters or components that [`check_path`]
    /// would refuse. `{compartment}` may appear at most once, as a whole
    /// component; `{` and `}` are refused anywhere else.
    pub fn parse(root: &str) -> Result<Self, PathRootError> {
        let rest = root.strip_prefix('/').ok_or(PathRootError::NotAbsolute)?;
        if rest.starts_with('/') {
            return Err(PathRootError::EmptyComponent);
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut segs = Vec::new();
        if !rest.is_empty() {
            for comp in rest.split('/') {
                if comp.is_empty() {
                    return Err(PathRootError::EmptyComponent);
                }
                if comp == "." || comp == ".." {
                    return Err(PathRootError::DotComponent);
                }
                if let Some(f) = component_fault(comp) {
                    return Err(f.into());
                }
                if comp == PLACEHOLDER {
                    if segs.iter().any(|s| matches!(s, Seg::Compartment)) {
                        return Err(PathRootError::DuplicatePlaceholder);
                    }
                    segs.push(Seg::Compartment);
                } else if comp.contains(['{', '}']) {
                    return Err(PathRootError::BadPlaceholder);
                } else {
                    segs.push(Seg::Literal(comp.to_owned()));
                }
            }
        }
        Ok(Self {
            raw: root.to_owned(),
            segs,
        })
    }

    /// Whether the root contains the `{compartment}` placeholder.
    pub fn has_compartment(&self) -> bool {
        self.segs.iter().any(|s| matches!(s, Seg::Compartment))
    }

    /// The root as it was given to [`PathRoot::parse`].
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    fn seg_matches(&self, i: usize, comp: &str, compartment: Option<&str>) -> bool {
        match &self.segs[i] {
            Seg::Literal(l) => l == comp,
            Seg::Compartment => compartment == Some(comp),
        }
    }
}

impl std::str::FromStr for PathRoot {
    type Err = PathRootError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A compiled "path under a root" rule.
#[derive(Debug, Clone)]
pub struct PathPolicy {
    /// The directory paths must stay under.
    pub root: PathRoot,
    /// What to do with `..` components.
    pub dot_dot: DotDot,
    /// Whether relative paths are accepted (they are resolved under the root).
    pub allow_relative: bool,
    /// Longest accepted path, in bytes as given (before decoding).
    pub max_len: usize,
}

impl PathPolicy {
    /// Default `max_len`.
    pub const DEFAULT_MAX_LEN: usize = 4096;

    /// A policy with the defaults: `..` rejected, relative paths allowed,
    /// at most [`PathPolicy::DEFAULT_MAX_LEN`] bytes.
    pub fn new(root: PathRoot) -> Self {
        Self {
            root,
            dot_dot: DotDot::Reject,
            allow_relative: true,
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }
}

/// State of the component walk (no heap).
struct Walk<'a> {
    policy: &'a PolicyView<'a>,
    absolute: bool,
    depth: usize,
    first: bool,
}

struct PolicyView<'a> {
    root: &'a PathRoot,
    dot_dot: DotDot,
    compartment: Option<&'a str>,
}

impl Walk<'_> {
    fn component(&mut self, bytes: &[u8]) -> Result<(), PathViolation> {
        let first = std::mem::replace(&mut self.first, false);
        if bytes.is_empty() {
            return Ok(());
        }
        let s = std::str::from_utf8(bytes).map_err(|_| PathViolation::InvalidUtf8)?;
        let root_len = self.policy.root.segs.len();
        if s == "." {
            return Ok(());
        }
        if s == ".." {
            return match self.policy.dot_dot {
                DotDot::Reject => Err(PathViolation::DotDot),
                DotDot::Normalize if self.depth <= root_len => Err(PathViolation::EscapesRoot),
                DotDot::Normalize => {
                    self.depth -= 1;
                    Ok(())
                }
            };
        }
        if let Some(f) = component_fault(s) {
            return Err(f.into());
        }
        if first && !self.absolute {
            // Leading `~` and drive prefixes, also behind invisible characters.
            let mut v = visible(s);
            match (v.next(), v.next()) {
                (Some('~'), _) => return Err(PathViolation::HomeDir),
                (Some(d), Some(':')) if d.is_ascii_alphabetic() => {
                    return Err(PathViolation::DrivePrefix);
                }
                _ => {}
            }
        }
        if self.depth < root_len
            && !self
                .policy
                .root
                .seg_matches(self.depth, s, self.policy.compartment)
        {
            return Err(PathViolation::NotUnderRoot);
        }
        self.depth += 1;
        Ok(())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks that `input` names the policy's root or something beneath it.
///
/// `compartment` fills the root's `{compartment}` placeholder; it is ignored
/// for roots without one. See the module documentation for the exact rules
/// and their limits. Never allocates.
pub fn check_path(
    input: &str,
    policy: &PathPolicy,
    compartment: Option<&str>,
) -> Result<(), PathViolation> {
    if input.is_empty() {
        return Err(PathViolation::Empty);
    }
    if input.len() > policy.max_len {
        return Err(PathViolation::TooLong {
            len: input.len(),
            max: policy.max_len,
        });
    }
    let compartment = if policy.root.has_compartment() {
        let c = compartment.ok_or(PathViolation::MissingCompartment)?;
        if !compartment_is_valid(c) {
            return Err(PathViolation::InvalidCompartment);
        }
        Some(c)
    } else {
        None
    };
    let view = PolicyView {
        root: &policy.root,
        dot_dot: policy.dot_dot,
        compartment,
    };
    let mut walk = Walk {
        policy: &view,
        absolute: false,
        depth: 0,
        first: true,
    };
    let bytes = input.as_bytes();
    let mut buf = [0u8; NAME_MAX];
    let mut len = 0usize;
    let mut i = 0usize;
    let mut pos = 0usize; // index in the decoded byte stream
    while i < bytes.len() {
        let b = if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathViolation::InvalidPercentEncoding);
            };
            i += 3;
            let d = hi << 4 | lo;
            if d == b'%' {
                return Err(PathViolation::DoubleEncoding);
            }
            d
        } else {
            i += 1;
            bytes[i - 1]
        };
        if b == b'\\' {
            return Err(PathViolation::Backslash);
        }
        if b < 0x20 || b == 0x7f {
            return Err(PathViolation::ControlChar);
        }
        if pos == 0 {
            if b == b'/' {
                walk.absolute = true;
            } else if policy.allow_relative {
                walk.depth = policy.root.segs.len();
            } else {
                return Err(PathViolation::RelativeNotAllowed);
            }
        } else if pos == 1 && walk.absolute && b == b'/' {
            return Err(PathViolation::DoubleSlashPrefix);
        }
        pos += 1;
        if b == b'/' {
            walk.component(&buf[..len])?;
            len = 0;
        } else {
            if len == NAME_MAX {
                return Err(PathViolation::ComponentTooLong);
            }
            buf[len] = b;
            len += 1;
        }
    }
    walk.component(&buf[..len])?;
    if walk.depth < policy.root.segs.len() {
        return Err(PathViolation::NotUnderRoot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PathViolation as V;
    use super::*;
    use proptest::prelude::*;

    fn policy(root: &str) -> PathPolicy {
        PathPolicy::new(PathRoot::parse(root).unwrap())
    }

    fn normalize(root: &str) -> PathPolicy {
        let dot_dot = DotDot::Normalize;
        PathPolicy {
            dot_dot,
            ..policy(root)
        }
    }

    fn ok(p: &PathPolicy, input: &str) {
        assert_eq!(check_path(input, p, Some("alice")), Ok(()), "{input:?}");
    }

    fn deny(p: &PathPolicy, input: &str, v: V) {
        assert_eq!(check_path(input, p, Some("alice")), Err(v), "{input:?}");
    }

    /// `inputs` is a space-separated list.
    fn ok_all(p: &PathPolicy, inputs: &str) {
        inputs.split(' ').for_each(|i| ok(p, i));
    }

    /// `inputs` is a space-separated list.
    fn deny_all(p: &PathPolicy, inputs: &str, v: V) {
        inputs.split(' ').for_each(|i| deny(p, i, v.clone()));
    }

    #[test]
    fn path_allow_root_itself_and_nested_files() {
        let inputs = "/data/a /data/a/ /data/a/f.txt /data/a/x/y/z.tar.gz";
        ok_all(&policy("/data/a"), inputs);
        ok(&policy("/data/a/"), "/data/a/f");
        ok(&policy("/"), "/etc/anything");
    }

    #[test]
    fn path_allow_duplicate_separators_and_dot_components() {
        let inputs = "/data//a///x /data/./a/./x ./x x/./y/ .";
        ok_all(&policy("/data/a"), inputs);
    }

    #[test]
    fn path_allow_relative_under_root_and_hidden_files() {
        let inputs = "notes.md sub/dir/f .bashrc ..a a..b x/~";
        ok_all(&policy("/data/a"), inputs);
    }

    #[test]
    fn path_allow_compartment_placeholder_match() {
        let p = policy("/home/{compartment}/files");
        assert!(p.root.has_compartment());
        ok_all(&p, "/home/alice/files/x.txt x.txt");
    }

    #[test]
    fn path_allow_unicode_names_and_plain_percent_escapes() {
        let p = policy("/data/a");
        let inputs = "/data/a/Müller.pdf /data/a/M%C3%BCller.pdf /data/%61/x %E6%97%A5";
        ok_all(&p, inputs);
    }

    #[test]
    fn path_allow_normalize_within_root() {
        let inputs = "/data/a/x/../y /data/a/x/.. x/y/../../z";
        ok_all(&normalize("/data/a"), inputs);
    }

    #[test]
    fn path_escape_dotdot_relative_denied() {
        let inputs = "../etc/passwd x/../../etc x/.. ..";
        deny_all(&policy("/data/a"), inputs, V::DotDot);
    }

    #[test]
    fn path_escape_dotdot_inside_absolute_denied() {
        let p = policy("/data/a");
        let inputs = "/data/a/../etc /data/a/x/.. /data/a/ax/../../b";
        deny_all(&p, inputs, V::DotDot);
        deny(&p, "/data/ax/..", V::NotUnderRoot);
    }

    #[test]
    fn path_escape_prefix_sibling_and_outside_absolute_denied() {
        let p = policy("/data/a");
        let inputs = "/data/ab /data/ab/x /data/A/x /etc/passwd /data /";
        deny_all(&p, inputs, V::NotUnderRoot);
    }

    #[test]
    fn path_escape_percent_encoded_dotdot_denied() {
        let p = policy("/data/a");
        let inputs = "%2e%2e%2fetc %2E%2E/etc ..%2fetc .%2e/x /data/a/%2e%2e";
        deny_all(&p, inputs, V::DotDot);
        deny(&p, "/data/a%2f..%2f..%2fetc", V::DotDot);
    }

    #[test]
    fn path_escape_double_encoded_dotdot_denied() {
        let inputs = "%252e%252e/etc %252f %25";
        deny_all(&policy("/data/a"), inputs, V::DoubleEncoding);
    }

    #[test]
    fn path_escape_invalid_percent_sequence_denied() {
        let p = policy("/data/a");
        deny_all(&p, "% %2 x%zz %%32e %g0 %2g", V::InvalidPercentEncoding);
    }

    #[test]
    fn path_escape_overlong_utf8_dot_denied() {
        let p = policy("/data/a");
        let inputs = "%c0%ae%c0%ae/etc %c0%af %e0%80%ae %ff %C3";
        deny_all(&p, inputs, V::InvalidUtf8);
    }

    #[test]
    fn path_escape_backslash_dotdot_denied() {
        let p = policy("/data/a");
        let inputs = r"..\etc \..\etc x\y %5c..%5cetc /data/a/..%5C";
        deny_all(&p, inputs, V::Backslash);
    }

    #[test]
    fn path_escape_nul_and_control_chars_denied() {
        let p = policy("/data/a");
        let inputs = "x%00.txt x\0.txt x\n %0a x\u{7f} %7f x\u{85}y %C2%85 \t";
        deny_all(&p, inputs, V::ControlChar);
    }

    #[test]
    fn path_escape_unicode_lookalike_dots_and_slashes_denied() {
        let p = policy("/data/a");
        // Fullwidth dots, division slash, and fullwidth dots percent-encoded.
        let inputs = "\u{FF0E}\u{FF0E}/etc ..\u{2215}etc %EF%BC%8E%EF%BC%8E/etc";
        deny_all(&p, inputs, V::LookAlike);
        for &(lo, hi) in LOOKALIKES {
            deny(&p, &format!("x{lo}y"), V::LookAlike);
            deny(&p, &format!("x{hi}y"), V::LookAlike);
        }
        // NFKC would turn these into `%2e`, `~/` and `C:`.
        deny_all(
            &p,
            "\u{FF05}2e \u{FF5E}/x C\u{FF1A}x \u{FE30} \u{2100}",
            V::LookAlike,
        );
    }

    #[test]
    fn path_escape_invisible_chars_hiding_dots_denied() {
        let p = policy("/data/a");
        let inputs = "..\u{200B}/etc .\u{FEFF}./etc \u{200D}.. x/..\u{E0001}";
        deny_all(&p, inputs, V::DotsOnly);
        deny(&p, "x.\u{200B}", V::TrailingDotOrSpace);
        deny(&p, "x \u{200C}", V::TrailingDotOrSpace);
        deny_all(&p, "\u{200B}/etc \u{202E}", V::InvisibleComponent);
        deny(&p, "\u{200B}~/x", V::HomeDir);
        deny(&p, "\u{FEFF}C:/x", V::DrivePrefix);
        // Zero-width non-joiner inside a Persian word is legitimate.
        ok(&p, "\u{645}\u{6cc}\u{200C}\u{62e}.txt");
    }

    #[test]
    fn path_escape_tilde_home_denied() {
        let inputs = "~/.ssh/id_rsa ~root/x ~ %7e/x";
        deny_all(&policy("/data/a"), inputs, V::HomeDir);
    }

    #[test]
    fn path_escape_windows_drive_prefix_denied() {
        let p = policy("/data/a");
        deny(&p, r"C:\Windows", V::Backslash);
        deny_all(&p, "C:/Windows c:foo C: z:%2fx", V::DrivePrefix);
    }

    #[test]
    fn path_escape_unc_double_slash_denied() {
        let p = policy("/");
        let inputs = "//server/share ///x /%2fserver %2f%2fserver";
        deny_all(&p, inputs, V::DoubleSlashPrefix);
    }

    #[test]
    fn path_escape_dots_only_component_denied() {
        let inputs = "... /data/a/..../x %2e%2e%2e";
        deny_all(&policy("/data/a"), inputs, V::DotsOnly);
    }

    #[test]
    fn path_escape_trailing_dot_or_space_component_denied() {
        let p = policy("/data/a");
        let inputs = "secret.txt. /data/a/dir./x x%20 /data/a./x";
        deny_all(&p, inputs, V::TrailingDotOrSpace);
        deny(&p, "secret.txt ", V::TrailingDotOrSpace);
    }

    #[test]
    fn path_escape_other_compartment_in_placeholder_denied() {
        let p = policy("/home/{compartment}/files");
        let inputs = "/home/bob/files/x /home/alicex/files /home/{compartment}/files /home/alice";
        deny_all(&p, inputs, V::NotUnderRoot);
    }

    #[test]
    fn path_escape_missing_compartment_fails_closed() {
        let p = policy("/home/{compartment}");
        assert_eq!(check_path("x", &p, None), Err(V::MissingCompartment));
    }

    #[test]
    fn path_escape_malicious_compartment_value_denied() {
        let p = policy("/home/{compartment}");
        let bad = [
            "", ".", "..", "a/b", "a\\b", "%2e%2e", "...", "a.", "a\0", "\u{FF0E}",
        ];
        for c in bad {
            let r = check_path("/home/x", &p, Some(c));
            assert_eq!(r, Err(V::InvalidCompartment), "{c:?}");
        }
        // `..` as compartment must not match a literal `..` either.
        let r = check_path(
            "/home/../etc",
            &normalize("/home/{compartment}"),
            Some(".."),
        );
        assert_eq!(r, Err(V::InvalidCompartment));
    }

    #[test]
    fn path_escape_empty_and_too_long_denied() {
        let p = policy("/data/a");
        deny(&p, "", V::Empty);
        let (len, max) = (4098, 4096);
        deny(&p, &"a/".repeat(2049), V::TooLong { len, max });
        let short = PathPolicy { max_len: 8, ..p };
        deny(&short, "/data/a/x", V::TooLong { len: 9, max: 8 });
    }

    #[test]
    fn path_escape_overlong_component_denied() {
        let p = policy("/data/a");
        deny(&p, &"a".repeat(300), V::ComponentTooLong);
        deny(&p, &"%61".repeat(256), V::ComponentTooLong);
        ok(&p, &"%61".repeat(255));
    }

    #[test]
    fn path_escape_normalize_climb_above_root_denied() {
        let p = normalize("/data/a");
        let inputs = ".. ../x x/../../y /data/a/.. /data/a/x/../../b /data/../data/a";
        deny_all(&p, inputs, V::EscapesRoot);
        deny(&normalize("/"), "/..", V::EscapesRoot);
        deny(&p, "/data/b/../a", V::NotUnderRoot);
    }

    #[test]
    fn path_escape_relative_when_disallowed_denied() {
        let allow_relative = false;
        let p = PathPolicy {
            allow_relative,
            ..policy("/data/a")
        };
        deny_all(&p, "x.txt ./x", V::RelativeNotAllowed);
        ok(&p, "/data/a/x.txt");
    }

    #[test]
    fn path_root_parse_rejects_ambiguous_roots() {
        use PathRootError as E;
        let cases: &[(&str, E)] = &[
            ("", E::NotAbsolute),
            ("data", E::NotAbsolute),
            ("//data", E::EmptyComponent),
            ("/data//a", E::EmptyComponent),
            ("/data/../etc", E::DotComponent),
            ("/data/./a", E::DotComponent),
            ("/data/...", E::DotsOnly),
            ("/data/a.", E::TrailingDotOrSpace),
            ("/data\\a", E::Backslash),
            ("/data/%61", E::Percent),
            ("/data/\n", E::ControlChar),
            ("/data\u{2215}a", E::LookAlike),
            ("/x{compartment}", E::BadPlaceholder),
            ("/{compartmnt}", E::BadPlaceholder),
            ("/{compartment}/{compartment}", E::DuplicatePlaceholder),
        ];
        for (root, e) in cases {
            assert_eq!(PathRoot::parse(root).unwrap_err(), *e, "{root:?}");
        }
        let r: PathRoot = "/srv/{compartment}/".parse().unwrap();
        assert_eq!(r.as_str(), "/srv/{compartment}/");
        assert!(!PathRoot::parse("/").unwrap().has_compartment());
    }

    #[test]
    fn path_violation_display_is_a_sentence() {
        assert_eq!(V::DotDot.to_string(), "path contains a `..` component");
        let msg = "`{compartment}` must be a whole component; root has `{` or `}` elsewhere";
        assert_eq!(PathRootError::BadPlaceholder.to_string(), msg);
    }

    /// Independent reference: decode into a String, split on '/', resolve.
    /// Returns the resolved components, or None if the reference refuses.
    fn reference(input: &str, p: &PathPolicy, comp: &str) -> Vec<String> {
        let b = input.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        let decoded = String::from_utf8(out).expect("Ok path must decode to UTF-8");
        assert!(!decoded.contains(['%', '\\', '\0']), "{decoded:?}");
        assert!(
            !decoded
                .chars()
                .any(|c| c.is_control() || in_ranges(c, LOOKALIKES))
        );
        assert!(!decoded.starts_with("//") && !decoded.starts_with('~'));
        let root = root_components(p, comp);
        let mut stack = if decoded.starts_with('/') {
            Vec::new()
        } else {
            root.clone()
        };
        for c in decoded.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    assert_eq!(p.dot_dot, DotDot::Normalize, "Ok with `..` in Reject mode");
                    assert!(stack.len() > root.len(), "`..` climbed above root");
                    stack.pop();
                }
                _ => {
                    assert!(!c.ends_with(['.', ' ']) && c.len() <= NAME_MAX);
                    stack.push(c.to_owned());
                }
            }
        }
        stack
    }

    fn root_components(p: &PathPolicy, comp: &str) -> Vec<String> {
        p.root.as_str()[1..]
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.replace(PLACEHOLDER, comp))
            .collect()
    }

    /// Dangerous pieces, `|`-separated.
    fn piece() -> impl Strategy<Value = &'static str> {
        let pieces = concat!(
            "..|.|/|/|%2e|%2E|%2f|%25|%5c|\\|~|A|b|{|}|data|a|ab|alice|bob|",
            "{compartment}| |%|C:|%00|%c0%ae|\u{FF0E}|\u{2215}|%2e%2e|%252e|//|%7e|",
            "...|\u{200B}|\u{FF5E}|%E2%80%8B|%C3%BC|/data/a/|/data/alice/",
        );
        prop::sample::select(pieces.split('|').collect::<Vec<_>>())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn path_escape_fuzz_ok_never_escapes_root(
            prefix in prop::sample::select(vec!["", "/data/a/", "/data/alice/", "/data/", "/"]),
            pieces in prop::collection::vec(piece(), 0..10),
            root in prop::sample::select(vec!["/data/a", "/data/{compartment}", "/"]),
            normalize_mode in any::<bool>(),
            allow_relative in any::<bool>(),
        ) {
            let input = format!("{prefix}{}", pieces.concat());
            let p = PathPolicy {
                dot_dot: if normalize_mode { DotDot::Normalize } else { DotDot::Reject },
                allow_relative,
                ..policy(root)
            };
            if check_path(&input, &p, Some("alice")).is_ok() {
                let resolved = reference(&input, &p, "alice");
                let root_comps = root_components(&p, "alice");
                prop_assert!(resolved.starts_with(&root_comps), "{input:?} -> {resolved:?}");
                prop_assert!(!resolved.iter().any(|c| c == ".." || c.contains('/')));
                prop_assert!(allow_relative || input.starts_with('/') || input.starts_with("%2f"));
            }
        }
    }
}
