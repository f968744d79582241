//! Redaction of tool arguments in audit records, and the retention class events carry.
//!
//! A policy marks arguments with [`Arg::redact`](crate::boundary::Arg::redact):
//!
//! - **secret** (passwords, API keys, card numbers): the value is never written by any sink; the
//!   record keeps the field with the placeholder `"[REDACTED:secret]"`, so an investigator sees
//!   that a value was given, never what it was.
//! - **sensitive** (PHI, privileged material): each sink's [`Redaction`] decides: the placeholder
//!   `"[REDACTED:sensitive]"` (the default), or a keyed hash `"hmac-sha256:<key id>:<64 hex>"` of
//!   the value's canonical JSON, so investigators holding the key can tell whether two records
//!   name the same patient without the log revealing who.
//!
//! The marks apply to the arguments of every decision on that tool, allowed or denied, given as a
//! JSON value or as raw text. Raw text that cannot be parsed is written verbatim (escaped) only
//! for tools with no marked argument: for a tool with one, it is replaced by a placeholder, since
//! nobody can tell where in it the secret sits. Denial reasons about a marked argument leave its
//! value out.
//!
//! A marked path that meets a value of another shape than it expects (a string where it descends
//! into an object, a non-array where it expects `[]`) redacts the whole value found there.
//!
//! Outcome texts are scrubbed of the call's marked values, and of the secrets of the credentials
//! the run's permits were handed, in their encoded forms too (see the audit module docs).

use std::sync::Arc;

use serde_json::Value;

use super::Redaction;
use crate::boundary::Sensitivity;
use crate::call::Args;
use crate::verdict::{Outcome, OutcomeStatus};

/// The placeholder written instead of a secret value.
pub const SECRET_PLACEHOLDER: &str = "[REDACTED:secret]";
/// The placeholder written instead of a sensitive value under [`Redaction::placeholder`].
pub const SENSITIVE_PLACEHOLDER: &str = "[REDACTED:sensitive]";
/// Written as the arguments of a call to a tool with marked arguments whose raw text does not
/// parse.
pub const UNPARSEABLE_PLACEHOLDER: &str =
    "[REDACTED:unparseable arguments of a tool with marked fields]";

/// The placeholder written instead of the secret of a credential the guard handed out
/// ([`ScopedCredential::expose`](crate::credential::ScopedCredential::expose)) when a tool's error
/// message or output quotes it.
pub const CREDENTIAL_PLACEHOLDER: &str = "[REDACTED:credential]";

/// Marked values shorter than this many bytes are not cut out of outcome texts: a text that
/// contains one is replaced whole (see [the audit module](crate::audit#outcomes)).
pub const MIN_SCRUB_BYTES: usize = 4;

/// What the policy says about one tool's records: which argument paths are redacted, and the
/// retention class of its data tier. Obtained from
/// [`ActionBoundary::audit_marks`](crate::ActionBoundary::audit_marks).
#[derive(Debug, Default)]
pub struct AuditMarks {
    redactions: Vec<Marked>,
    retention: Option<Arc<str>>,
}

#[derive(Debug)]
struct Marked {
    /// `(name, each element)` segments, as in the policy's argument paths.
    path: Box<[(Box<str>, bool)]>,
    class: Sensitivity,
}

static NO_MARKS: AuditMarks = AuditMarks {
    redactions: Vec::new(),
    retention: None,
};

impl AuditMarks {
    /// Marks that redact nothing and name no retention class.
    pub fn none() -> &'static AuditMarks {
        &NO_MARKS
    }

    pub(crate) fn new(
        redactions: Vec<(Vec<(&str, bool)>, Sensitivity)>,
        retention: Option<Arc<str>>,
    ) -> Self {
        Self {
            redactions: redactions
                .into_iter()
                .map(|(path, class)| Marked {
                    path: path.into_iter().map(|(n, i)| (n.into(), i)).collect(),
                    class,
                })
                .collect(),
            retention,
        }
    }

    /// Whether any argument is marked.
    pub fn redacts(&self) -> bool {
        !self.redactions.is_empty()
    }

    /// The retention class of the tool's data tier, if the policy names one.
    pub fn retention(&self) -> Option<&str> {
        self.retention.as_deref()
    }

    /// The retention class, shared (what records about the tool that outlive its permit keep:
    /// a credential's revocation).
    pub(crate) fn retention_class(&self) -> Option<&Arc<str>> {
        self.retention.as_ref()
    }

    /// Marks that redact nothing and carry `retention` (for events that hold no arguments).
    pub(crate) fn retention_only(retention: Option<Arc<str>>) -> Self {
        Self {
            redactions: Vec::new(),
            retention,
        }
    }

    /// Replaces the values marked secret in `args` (sensitive ones stay: e.g. approvers need them
    /// to decide).
    pub(crate) fn redact_secrets(&self, args: &mut Value) {
        for m in self
            .redactions
            .iter()
            .filter(|m| m.class == Sensitivity::Secret)
        {
            redact_at(args, &m.path, m.class, &Redaction::placeholder());
        }
    }

    /// Replaces every marked value in `args` as `how` says. Sensitive marks go first and secret
    /// ones last, so where a secret path and a sensitive path overlap (or meet a value of the
    /// wrong shape) the secret placeholder is what remains.
    pub(crate) fn apply(&self, args: &mut Value, how: &Redaction) {
        for m in self
            .redactions
            .iter()
            .filter(|m| m.class != Sensitivity::Secret)
            .chain(
                self.redactions
                    .iter()
                    .filter(|m| m.class == Sensitivity::Secret),
            )
        {
            redact_at(args, &m.path, m.class, how);
        }
    }

    /// `outcome` with every occurrence of a marked value of `args` in its error message and
    /// output replaced (see [Outcomes](self#outcomes)); `None` when nothing needs to change.
    pub(crate) fn scrub_outcome(&self, args: Args<'_>, outcome: &Outcome) -> Option<Outcome> {
        let message = match &outcome.status {
            OutcomeStatus::Error { message } => Some(&**message),
            _ => None,
        };
        let output = outcome.output.as_deref();
        if !self.redacts() || (message.is_none() && output.is_none()) {
            return None;
        }
        let needles = match self.marked_values(args) {
            Some(n) => n,
            // The marked values cannot be located: no text of this call is recorded.
            None => Needles::unlocatable(),
        };
        let new_message = message.and_then(|m| needles.scrub(m));
        let new_output = output.and_then(|o| needles.scrub(o));
        if new_message.is_none() && new_output.is_none() {
            return None;
        }
        let mut scrubbed = outcome.clone();
        if let (Some(m), OutcomeStatus::Error { message }) = (new_message, &mut scrubbed.status) {
            *message = m.into();
        }
        if let Some(o) = new_output {
            scrubbed.output = Some(o.into());
        }
        Some(scrubbed)
    }

    /// The texts to look for, with the class of the mark they come from; `None` if the
    /// arguments cannot be read (raw text that does not parse).
    fn marked_values(&self, args: Args<'_>) -> Option<Needles> {
        let parsed;
        let root = match args {
            Args::None => return Some(Needles::default()),
            Args::Value(v) => v,
            Args::Json(text) => {
                parsed = serde_json::from_str::<Value>(text).ok()?;
                &parsed
            }
        };
        let mut needles = Needles::default();
        for m in &self.redactions {
            collect_at(root, &m.path, m.class, &mut needles);
        }
        Some(needles)
    }
}

/// Collects the values at `path` below `v`, following the shapes exactly as [`redact_at`]
/// does: where the path meets a value of another shape, the whole value is collected.
fn collect_at(v: &Value, path: &[(Box<str>, bool)], class: Sensitivity, out: &mut Needles) {
    let Some(((name, items), rest)) = path.split_first() else {
        out.add_value(v, class);
        return;
    };
    let child = match v {
        Value::Object(o) => match o.get(&**name) {
            Some(child) => child,
            None => return,
        },
        Value::Null => return,
        other => return out.add_value(other, class),
    };
    if *items {
        match child {
            Value::Array(elems) => {
                for e in elems {
                    collect_at(e, rest, class, out);
                }
            }
            Value::Null => {}
            other => out.add_value(other, class),
        }
    } else {
        collect_at(child, rest, class, out);
    }
}

/// The marked values of one call, as texts to cut out of outcome texts.
#[derive(Default)]
struct Needles {
    /// `(text, class)`, longest first once [`Needles::scrub`] runs.
    texts: Vec<(String, Sensitivity)>,
    /// The arguments could not be read: every text is replaced whole.
    unlocatable: bool,
}

impl Needles {
    fn unlocatable() -> Self {
        Self {
            texts: Vec::new(),
            unlocatable: true,
        }
    }

    fn push(&mut self, text: String, class: Sensitivity) {
        if !text.is_empty() && !self.texts.iter().any(|(t, c)| *t == text && *c == class) {
            self.texts.push((text, class));
        }
    }

    fn add_value(&mut self, v: &Value, class: Sensitivity) {
        match v {
            Value::Null => {}
            Value::String(s) => self.add_string(s, class),
            Value::Bool(_) | Value::Number(_) => self.push(v.to_string(), class),
            Value::Array(items) => {
                self.push(v.to_string(), class);
                for item in items {
                    self.add_value(item, class);
                }
            }
            Value::Object(o) => {
                self.push(v.to_string(), class);
                for (k, item) in o {
                    self.add_string(k, class);
                    self.add_value(item, class);
                }
            }
        }
    }

    fn add_string(&mut self, s: &str, class: Sensitivity) {
        self.push(s.to_owned(), class);
        // As it appears inside JSON text: escaped, without the quotes.
        let quoted = Value::from(s).to_string();
        let escaped = &quoted[1..quoted.len() - 1];
        if escaped != s {
            self.push(escaped.to_owned(), class);
        }
    }

    /// `text` with every needle replaced by its class's placeholder, longest needle first at
    /// each position; `None` if nothing was found.
    fn scrub(&self, text: &str) -> Option<String> {
        let strongest = |a: Sensitivity, b: Sensitivity| {
            if a == Sensitivity::Secret || b == Sensitivity::Secret {
                Sensitivity::Secret
            } else {
                Sensitivity::Sensitive
            }
        };
        if self.unlocatable {
            return Some(placeholder(Sensitivity::Secret).to_owned());
        }
        // A value too short to cut out piecewise: the whole text goes.
        let short = self
            .texts
            .iter()
            .filter(|(t, _)| t.len() < MIN_SCRUB_BYTES && text.contains(t.as_str()))
            .map(|(_, c)| *c)
            .reduce(strongest);
        if let Some(class) = short {
            return Some(placeholder(class).to_owned());
        }
        let mut needles: Vec<&(String, Sensitivity)> = self
            .texts
            .iter()
            .filter(|(t, _)| text.contains(t.as_str()))
            .collect();
        if needles.is_empty() {
            return None;
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        let mut first = [false; 256];
        for (t, _) in &needles {
            first[usize::from(t.as_bytes()[0])] = true;
        }
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let (mut i, mut copied) = (0, 0);
        while i < bytes.len() {
            let hit = first[usize::from(bytes[i])]
                .then(|| {
                    needles
                        .iter()
                        .find(|(t, _)| bytes[i..].starts_with(t.as_bytes()))
                })
                .flatten();
            match hit {
                Some((t, class)) => {
                    // Needles are whole UTF-8 strings, so `i` and `i + t.len()` are boundaries.
                    out.push_str(&text[copied..i]);
                    out.push_str(placeholder(*class));
                    i += t.len();
                    copied = i;
                }
                None => i += 1,
            }
        }
        out.push_str(&text[copied..]);
        Some(out)
    }
}

fn placeholder(class: Sensitivity) -> &'static str {
    match class {
        Sensitivity::Secret => SECRET_PLACEHOLDER,
        Sensitivity::Sensitive => SENSITIVE_PLACEHOLDER,
    }
}

/// Replaces the value at `path` below `v`. Wherever the path meets a value of another shape than
/// it expects (a string, number, boolean or array where it needs an object to descend into, or a
/// non-array where it expects `[]`), the whole value found there is replaced: the marked value
/// could be anywhere inside it, e.g. `{"auth": "<secret>"}` for the path `auth.password`, or
/// `{"cards": ["<number>"]}` for `cards[].number`. Only `null` and absent keys are left alone:
/// they hold nothing.
fn redact_at(v: &mut Value, path: &[(Box<str>, bool)], class: Sensitivity, how: &Redaction) {
    let Some(((name, items), rest)) = path.split_first() else {
        *v = how.replacement(class, v);
        return;
    };
    let child = match v {
        Value::Object(o) => match o.get_mut(&**name) {
            Some(child) => child,
            None => return,
        },
        Value::Null => return,
        // Not an object where the policy descends: the marked value may be anywhere inside.
        other => {
            *other = how.replacement(class, other);
            return;
        }
    };
    if *items {
        match child {
            Value::Array(elems) => {
                for e in elems {
                    redact_at(e, rest, class, how);
                }
            }
            Value::Null => {}
            // Not an array where the policy expects one: redact the whole value rather than
            // guess.
            other => *other = how.replacement(class, other),
        }
    } else {
        redact_at(child, rest, class, how);
    }
}

/// `outcome` with every occurrence of one of `secrets` in its error message and output replaced
/// by [`CREDENTIAL_PLACEHOLDER`]; `None` when nothing needs to change. A secret is found as given
/// and in the encodings a tool applies when it quotes a request: any of its bytes
/// percent-encoded (`%2B` or `%2b`; `+` for a space), any of its characters JSON-escaped
/// (`\"`, `\\`, `\/`, `\n`..., `\u002b`), in any mixture. A secret shorter than
/// [`MIN_SCRUB_BYTES`] is not cut out piece by piece: a text holding it is replaced whole.
pub(crate) fn scrub_credentials(outcome: &Outcome, secrets: &[&str]) -> Option<Outcome> {
    let message = match &outcome.status {
        OutcomeStatus::Error { message } => Some(&**message),
        _ => None,
    };
    let output = outcome.output.as_deref();
    if secrets.is_empty() || (message.is_none() && output.is_none()) {
        return None;
    }
    let finder = SecretFinder::new(secrets);
    let new_message = message.and_then(|m| finder.scrub(m));
    let new_output = output.and_then(|o| finder.scrub(o));
    if new_message.is_none() && new_output.is_none() {
        return None;
    }
    let mut scrubbed = outcome.clone();
    if let (Some(m), OutcomeStatus::Error { message }) = (new_message, &mut scrubbed.status) {
        *message = m.into();
    }
    if let Some(o) = new_output {
        scrubbed.output = Some(o.into());
    }
    Some(scrubbed)
}

/// Finds credential secrets in a text, as given or encoded byte by byte, and replaces them by
/// [`CREDENTIAL_PLACEHOLDER`] (a text holding a secret shorter than [`MIN_SCRUB_BYTES`] is
/// replaced whole). The one scrubber for the audit trail ([`scrub_credentials`]) and for what the
/// MCP gateway hands its client; build it once per set of secrets. No secret may be empty.
///
/// Hand-written: a fixed needle per encoding cannot cover the mixtures encoders produce (Python's
/// `quote` leaves `/` alone but encodes `+` and `=`; a JSON encoder may escape `/` or not), so
/// each byte of the secret may appear in any of its forms. Which positions of the text an
/// occurrence can have reached after each byte is tracked as a set, so a text full of `%` and `\`
/// cannot make the search backtrack exponentially.
pub(crate) struct SecretFinder<'s> {
    secrets: Vec<&'s [u8]>,
    /// Bytes an occurrence of some secret can start with.
    starts: [bool; 256],
}

#[cfg_attr(not(feature = "mcp"), allow(dead_code))]
impl<'s> SecretFinder<'s> {
    pub(crate) fn new(secrets: &[&'s str]) -> Self {
        let mut starts = [false; 256];
        let secrets: Vec<&[u8]> = secrets
            .iter()
            .map(|s| s.as_bytes())
            .filter(|s| !s.is_empty())
            .collect();
        for s in &secrets {
            starts[usize::from(s[0])] = true;
            starts[usize::from(b'%')] = true;
            starts[usize::from(b'\\')] = true;
            if s[0] == b' ' {
                starts[usize::from(b'+')] = true;
            }
        }
        Self { secrets, starts }
    }

    /// `text` with every occurrence replaced; `None` if there is none.
    /// `text` with every occurrence replaced; `None` when nothing needs to change.
    pub(crate) fn scrub(&self, text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        let (mut here, mut next) = (Vec::new(), Vec::new());
        let mut out: Option<String> = None;
        let (mut i, mut copied) = (0, 0);
        while i < bytes.len() {
            if !self.starts[usize::from(bytes[i])] {
                i += 1;
                continue;
            }
            let mut found: Option<(usize, bool)> = None;
            for s in &self.secrets {
                if let Some(end) = longest_match(bytes, i, s, &mut here, &mut next)
                    && found.is_none_or(|(e, _)| end > e)
                {
                    found = Some((end, s.len() < MIN_SCRUB_BYTES));
                }
            }
            let Some((end, short)) = found else {
                i += 1;
                continue;
            };
            // A short secret cannot be cut out piecewise; and an occurrence always starts and
            // ends on character boundaries (it starts with an ASCII byte or the secret's own
            // first byte, and a text that is valid UTF-8 cannot continue a character the secret
            // ended), but should it not, the whole text goes rather than a piece of the secret.
            let piece = text.get(copied..i).filter(|_| text.is_char_boundary(end));
            let (false, Some(piece)) = (short, piece) else {
                return Some(CREDENTIAL_PLACEHOLDER.to_owned());
            };
            let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
            o.push_str(piece);
            o.push_str(CREDENTIAL_PLACEHOLDER);
            i = end;
            copied = end;
        }
        let mut o = out?;
        o.push_str(&text[copied..]);
        Some(o)
    }
}

/// The end of the longest occurrence of `secret` starting at `start`, each byte as given or
/// encoded; `here` and `next` are scratch space.
fn longest_match(
    t: &[u8],
    start: usize,
    secret: &[u8],
    here: &mut Vec<usize>,
    next: &mut Vec<usize>,
) -> Option<usize> {
    here.clear();
    here.push(start);
    for &b in secret {
        next.clear();
        for &at in here.iter() {
            for len in encodings_at(t, at, b).into_iter().flatten() {
                if !next.contains(&(at + len)) {
                    next.push(at + len);
                }
            }
        }
        if next.is_empty() {
            return None;
        }
        std::mem::swap(here, next);
    }
    here.iter().copied().max()
}

/// The lengths of the forms of byte `b` found at `t[at..]`: as given, percent-encoded, `+` for a
/// space, or JSON-escaped. At most two apply at once (the byte itself when it is `%`, `+` or `\`,
/// and one encoding).
fn encodings_at(t: &[u8], at: usize, b: u8) -> [Option<usize>; 2] {
    let Some(&c) = t.get(at) else {
        return [None, None];
    };
    let literal = (c == b).then_some(1);
    let encoded = match c {
        b'%' => t
            .get(at + 1..at + 3)
            .and_then(hex_value)
            .filter(|&v| v == u32::from(b))
            .map(|_| 3),
        b'+' => (b == b' ').then_some(1),
        b'\\' => match t.get(at + 1) {
            Some(b'u') if b.is_ascii() => t
                .get(at + 2..at + 6)
                .and_then(hex_value)
                .filter(|&v| v == u32::from(b))
                .map(|_| 6),
            Some(&e) => {
                let unescaped = match e {
                    b'"' | b'\\' | b'/' => Some(e),
                    b'b' => Some(0x08),
                    b'f' => Some(0x0C),
                    b'n' => Some(b'\n'),
                    b'r' => Some(b'\r'),
                    b't' => Some(b'\t'),
                    _ => None,
                };
                (unescaped == Some(b)).then_some(2)
            }
            None => None,
        },
        _ => None,
    };
    [literal, encoded]
}

/// The value of hex digits (either case).
fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| {
        char::from(d).to_digit(16).map(|v| acc * 16 + v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = r#"sk-live/Ab+c=9\"q"#;

    fn scrub(text: &str) -> Option<String> {
        SecretFinder::new(&[KEY]).scrub(text)
    }

    #[test]
    fn secrets_are_found_as_given_and_in_every_encoding_mix() {
        let p = CREDENTIAL_PLACEHOLDER;
        for (text, want) in [
            (format!("x {KEY} y"), format!("x {p} y")),
            (
                "GET /?k=sk-live%2FAb%2Bc%3D9%5C%22q: 401".into(),
                format!("GET /?k={p}: 401"),
            ),
            ("k=sk-live/Ab%2bc%3d9%5c%22q".into(), format!("k={p}")),
            (
                r#"{"key":"sk-live\/Ab+c=9\\\"q"}"#.into(),
                format!(r#"{{"key":"{p}"}}"#),
            ),
            (
                r#"{"key":"sk-live/Ab\u002Bc\u003d9\\\u0022q"}"#.into(),
                format!(r#"{{"key":"{p}"}}"#),
            ),
            (format!("{KEY}{KEY}"), format!("{p}{p}")),
            (format!("é{KEY}é"), format!("é{p}é")),
        ] {
            assert_eq!(scrub(&text).as_deref(), Some(&*want), "{text}");
        }
        assert_eq!(
            scrub("sk-live/Ab+c=9"),
            None,
            "a prefix alone is not the secret"
        );
        assert_eq!(scrub("nothing here %% \\ +"), None);
    }

    #[test]
    fn spaces_may_be_plus_signs_and_short_secrets_take_the_whole_text() {
        let f = SecretFinder::new(&["open sesame"]);
        assert_eq!(
            f.scrub("q=open+sesame&x=1").as_deref(),
            Some("q=[REDACTED:credential]&x=1")
        );
        let f = SecretFinder::new(&["ab"]);
        assert_eq!(f.scrub("xx ab yy").as_deref(), Some(CREDENTIAL_PLACEHOLDER));
        assert_eq!(
            f.scrub("xx %61b yy").as_deref(),
            Some(CREDENTIAL_PLACEHOLDER)
        );
        assert_eq!(f.scrub("xx a yy"), None);
    }

    #[test]
    fn escape_introducers_in_the_secret_do_not_derail_the_search() {
        // The secret itself holds `%`, `+` and `\`: each may appear as itself or encoded.
        let f = SecretFinder::new(&["%41+\\\\x"]);
        for text in [
            r"%41+\\x",
            r"%2541%2B%5C%5Cx",
            r"%41+\\\\x",
            r"%2541+\u005c\\x",
        ] {
            assert_eq!(
                f.scrub(text).as_deref(),
                Some(CREDENTIAL_PLACEHOLDER),
                "{text}"
            );
        }
        // Many introducers and no secret: linear, no exponential backtracking.
        let noise = "%5C\\".repeat(20_000);
        assert_eq!(f.scrub(&noise), None);
    }

    proptest::proptest! {
        /// Whatever mixture of forms a secret is written in, it is found; the text around it is
        /// kept.
        #[test]
        fn any_per_byte_encoding_of_the_secret_is_found(
            secret in "[ -~]{4,24}",
            forms in proptest::collection::vec(0u8..5, 24),
            before in "[a-z ]{0,8}",
            after in "[a-z ]{0,8}",
        ) {
            let mut enc = String::new();
            for (i, c) in secret.chars().enumerate() {
                let b = c as u32;
                match forms[i] {
                    1 => enc.push_str(&format!("%{b:02X}")),
                    2 => enc.push_str(&format!("%{b:02x}")),
                    3 => enc.push_str(&format!("\\u{b:04x}")),
                    4 if c == ' ' => enc.push('+'),
                    4 => {
                        let quoted = serde_json::to_string(&c.to_string()).unwrap();
                        enc.push_str(&quoted[1..quoted.len() - 1]);
                    }
                    _ => enc.push(c),
                }
            }
            let text = format!("{before}{enc}{after}");
            let out = SecretFinder::new(&[&secret]).scrub(&text);
            proptest::prop_assert!(out.is_some(), "{:?} not found in {:?}", secret, text);
            let out = out.unwrap();
            proptest::prop_assert!(out.contains(CREDENTIAL_PLACEHOLDER));
            let rest = out.replace(CREDENTIAL_PLACEHOLDER, "\u{0}");
            proptest::prop_assert!(!rest.contains(&*secret), "{:?}", out);
        }
    }
}
