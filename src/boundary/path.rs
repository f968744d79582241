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
//! `.`, `/`, `\`, `%`, `:` and `~` (including what NFKC, IDNA or Windows "best
//! fit" conversion turns into them), a leading `~`, drive prefixes and URL
//! schemes (`file:`, `s3:`, `http:` would make a relative path a URL to a tool
//! that accepts both), a leading `//`, components made only of dots,
//! components with a trailing dot (Windows strips it, so `secret.txt.` would
//! open `secret.txt`), and components that start or end with white space of
//! any kind: every Unicode `White_Space` character and every character whose
//! NFKC form contains one is treated like an ASCII space, because a tool that
//! trims or normalises would turn `..\u{A0}` into `..` and `\u{2003}~` into
//! `~`. The dot, space, `~`, drive and scheme checks ignore invisible
//! (default-ignorable) characters, so stripping them later cannot create `..`.
//! The characters behind these rules are classified once, in a table checked
//! against the NFKC form of every Unicode code point, and shared with
//! credential resource patterns.
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

pub(crate) mod fold;

use fold::{EdgeFault, edge_fault, visible};

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
    /// A root component ends with a dot or with white space.
    #[error("root contains a component ending with a dot or white space")]
    TrailingDotOrSpace,
    /// A root component starts with white space.
    #[error("root contains a component starting with white space")]
    LeadingSpace,
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
    /// A component ends with a dot or with white space (any Unicode white space, or a
    /// character whose NFKC form contains it), which Windows and trimming tools strip.
    #[error("path has a component ending with a dot or white space")]
    TrailingDotOrSpace,
    /// A component starts with white space (any Unicode white space, or a character whose
    /// NFKC form contains it), which trimming tools strip.
    #[error("path has a component starting with white space")]
    LeadingSpace,
    /// A relative path starts with a URL scheme such as `file:` or `s3:`.
    #[error("path starts with a URL scheme")]
    UrlScheme,
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
    LeadingSpace,
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
            Fault::LeadingSpace => Self::LeadingSpace,
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
            Fault::LeadingSpace => Self::LeadingSpace,
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
    }
    match edge_fault(s) {
        Some(EdgeFault::LookAlike) => Some(Fault::LookAlike),
        Some(EdgeFault::Invisible) => Some(Fault::Invisible),
        Some(EdgeFault::DotsOnly) => Some(Fault::DotsOnly),
        Some(EdgeFault::LeadingSpace) => Some(Fault::LeadingSpace),
        Some(EdgeFault::TrailingSpace) => Some(Fault::TrailingDotOrSpace),
        None if visible(s).next_back() == Some('.') => Some(Fault::TrailingDotOrSpace),
        None => None,
    }
}

/// Whether `s` starts with a URL scheme and its colon (`file:`, `s3:`, `git+ssh:`), RFC 3986:
/// a letter, then letters, digits, `+`, `-` or `.`. A single letter is a drive prefix instead.
fn starts_with_scheme(s: &str) -> bool {
    let mut v = visible(s);
    if !v.next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return false;
    }
    for c in v {
        match c {
            ':' => return true,
            c if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.') => {}
            _ => return false,
        }
    }
    false
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
            // Leading `~`, drive prefixes and URL schemes, also behind invisible characters.
            let mut v = visible(s);
            match (v.next(), v.next()) {
                (Some('~'), _) => return Err(PathViolation::HomeDir),
                (Some(d), Some(':')) if d.is_ascii_alphabetic() => {
                    return Err(PathViolation::DrivePrefix);
                }
                _ if starts_with_scheme(s) => return Err(PathViolation::UrlScheme),
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
mod tests;
