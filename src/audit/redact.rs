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
//! Outcome texts are scrubbed of the call's marked values (see the audit module docs).

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
