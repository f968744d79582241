//! Comparing one recommendation's arguments with the human's.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::{AgreementConfigError, ComparatorSpec, Tolerance};

/// The path a difference is reported at when the arguments as a whole are not objects (an
/// unparseable-arguments placeholder, say).
const ROOT: &str = "(arguments)";

/// How one tool's arguments are compared (compiled from a [`ComparatorSpec`]). The default
/// compares every argument exactly.
#[derive(Debug, Clone, Default)]
pub struct Comparator {
    fields: Option<Vec<String>>,
    tolerance: HashMap<String, Tolerance>,
    sets: HashSet<String>,
}

impl Comparator {
    pub(super) fn compile(spec: &ComparatorSpec, at: &str) -> Result<Self, AgreementConfigError> {
        let err = |path: String, reason: &str| AgreementConfigError::new(path, reason);
        if spec.exact
            && (spec.fields.is_some() || !spec.tolerance.is_empty() || !spec.sets.is_empty())
        {
            return Err(err(
                format!("{at}.exact"),
                "`exact = true` compares every argument exactly: drop `fields`, `tolerance` and \
                 `sets`, or drop `exact`",
            ));
        }
        if let Some(fields) = &spec.fields {
            if fields.is_empty() {
                return Err(err(
                    format!("{at}.fields"),
                    "names no field: every recommendation would agree; drop `fields` to compare \
                     every argument",
                ));
            }
            let mut seen = BTreeSet::new();
            for (i, f) in fields.iter().enumerate() {
                check_path(f).map_err(|r| err(format!("{at}.fields[{i}]"), r))?;
                if !seen.insert(f.as_str()) {
                    return Err(err(format!("{at}.fields[{i}]"), "is listed twice"));
                }
            }
        }
        let compared = |p: &str| {
            spec.fields
                .as_ref()
                .is_none_or(|f| f.iter().any(|f| p == f || p.starts_with(&format!("{f}."))))
        };
        for (p, t) in &spec.tolerance {
            let here = format!("{at}.tolerance.{p}");
            check_path(p).map_err(|r| err(here.clone(), r))?;
            if t.absolute.is_none() && t.relative.is_none() {
                return Err(err(here, "needs `absolute`, `relative` or both"));
            }
            for (name, v) in [("absolute", t.absolute), ("relative", t.relative)] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    return Err(err(
                        format!("{here}.{name}"),
                        "must be a finite number, zero or more",
                    ));
                }
            }
            if !compared(p) {
                return Err(err(
                    here,
                    "is not among `fields`: it would never be compared",
                ));
            }
        }
        let mut sets = HashSet::new();
        for (i, p) in spec.sets.iter().enumerate() {
            let here = format!("{at}.sets[{i}]");
            check_path(p).map_err(|r| err(here.clone(), r))?;
            if spec.tolerance.contains_key(p) {
                return Err(err(
                    here,
                    "also has a tolerance: a path is a number or a set",
                ));
            }
            if !compared(p) {
                return Err(err(
                    here,
                    "is not among `fields`: it would never be compared",
                ));
            }
            if !sets.insert(p.clone()) {
                return Err(err(here, "is listed twice"));
            }
        }
        Ok(Self {
            fields: spec.fields.clone(),
            tolerance: spec.tolerance.clone().into_iter().collect(),
            sets,
        })
    }

    /// Compares the recommended arguments with the human's (the tools being the same).
    pub fn compare(&self, recommended: &Value, human: &Value) -> Comparison {
        let mut out = Vec::new();
        match &self.fields {
            None => {
                if recommended.is_object() && human.is_object() {
                    self.diff(String::new(), Some(recommended), Some(human), &mut out);
                } else if !json_eq(recommended, human) {
                    out.push(Difference::new(
                        ROOT.into(),
                        DifferenceKind::Differs,
                        Some(recommended),
                        Some(human),
                    ));
                }
            }
            Some(fields) => {
                for f in fields {
                    self.diff(f.clone(), get(recommended, f), get(human, f), &mut out);
                }
            }
        }
        if out.is_empty() {
            Comparison::Agree
        } else {
            Comparison::Arguments { differences: out }
        }
    }

    fn diff(&self, path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<Difference>) {
        let (a, b) = match (a, b) {
            (None, None) => return,
            (None, Some(b)) => {
                return out.push(Difference::new(
                    path,
                    DifferenceKind::Missing,
                    None,
                    Some(b),
                ));
            }
            (Some(a), None) => {
                return out.push(Difference::new(path, DifferenceKind::Extra, Some(a), None));
            }
            (Some(a), Some(b)) => (a, b),
        };
        if let Some(t) = self.tolerance.get(&path)
            && let (Some(x), Some(y)) = (a.as_f64(), b.as_f64())
        {
            if !t.admits(x, y) {
                out.push(Difference::new(
                    path,
                    DifferenceKind::OutsideTolerance,
                    Some(a),
                    Some(b),
                ));
            }
            return;
        }
        if self.sets.contains(&path)
            && let (Some(x), Some(y)) = (a.as_array(), b.as_array())
        {
            let within =
                |p: &[Value], q: &[Value]| p.iter().all(|v| q.iter().any(|w| json_eq(v, w)));
            if !(within(x, y) && within(y, x)) {
                out.push(Difference::new(
                    path,
                    DifferenceKind::SetDiffers,
                    Some(a),
                    Some(b),
                ));
            }
            return;
        }
        if let (Value::Object(x), Value::Object(y)) = (a, b) {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                self.diff(p, x.get(k), y.get(k), out);
            }
            return;
        }
        if !json_eq(a, b) {
            let path = if path.is_empty() { ROOT.into() } else { path };
            out.push(Difference::new(
                path,
                DifferenceKind::Differs,
                Some(a),
                Some(b),
            ));
        }
    }
}

/// A path is dot-separated non-empty keys.
fn check_path(p: &str) -> Result<(), &'static str> {
    if p.split('.').any(str::is_empty) {
        Err("must be dot-separated argument names (`amount`, `payment.amount`)")
    } else {
        Ok(())
    }
}

/// The value at a dotted path, descending objects.
fn get<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, k| v.as_object()?.get(k))
}

/// JSON equality with numbers compared by value (`40` equals `40.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The result of comparing a human's action with a recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Comparison {
    /// The human did what was recommended (as the tool's comparator judges).
    Agree,
    /// The human did nothing.
    NoAction,
    /// The human used another tool.
    OtherTool {
        /// The tool they used.
        human: String,
    },
    /// Same tool, arguments that differ.
    Arguments {
        /// Where and how.
        differences: Vec<Difference>,
    },
}

impl Comparison {
    /// Whether the human agreed.
    pub fn agrees(&self) -> bool {
        matches!(self, Comparison::Agree)
    }

    /// The argument differences (empty unless [`Comparison::Arguments`]).
    pub fn differences(&self) -> &[Difference] {
        match self {
            Comparison::Arguments { differences } => differences,
            _ => &[],
        }
    }
}

/// One argument path on which the human's action differs from the recommendation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Difference {
    /// The argument path (dotted; `(arguments)` for arguments that are not an object).
    pub path: String,
    /// How it differs.
    pub kind: DifferenceKind,
    /// The recommended value, as the audit record holds it (redacted under the policy's marks).
    pub recommended: Option<Value>,
    /// The human's value, as the audit record holds it.
    pub human: Option<Value>,
}

impl Difference {
    fn new(path: String, kind: DifferenceKind, a: Option<&Value>, b: Option<&Value>) -> Self {
        Self {
            path,
            kind,
            recommended: a.cloned(),
            human: b.cloned(),
        }
    }
}

/// How an argument differs, from the recommendation's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DifferenceKind {
    /// The human gave it; the recommendation did not.
    Missing,
    /// The recommendation gave it; the human did not.
    Extra,
    /// Both gave it, with different values.
    Differs,
    /// Both gave numbers, further apart than the path's tolerance.
    OutsideTolerance,
    /// Both gave arrays compared as sets, holding different elements.
    SetDiffers,
}

impl DifferenceKind {
    /// The stable snake_case name (`"outside_tolerance"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::Missing => "missing",
            DifferenceKind::Extra => "extra",
            DifferenceKind::Differs => "differs",
            DifferenceKind::OutsideTolerance => "outside_tolerance",
            DifferenceKind::SetDiffers => "set_differs",
        }
    }
}
