//! What changes between two policy documents, in terms of what agents may do and the limits
//! around them: not a text diff.
//!
//! Permissions are compared as the boundary enforces them (a role's allowlist, within its
//! clearance, without side effects for a read-only role), so moving a tool to a higher tier shows
//! up as the permissions it takes away. Every other setting is compared field by field on the
//! canonical documents: rules and grants are matched by identity (a rule's `id`; a grant's role,
//! provider and resource), lists of names as sets.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::Policy;

/// What kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A role may now call a tool it could not call before.
    Gained,
    /// A role may no longer call a tool it could call before.
    Lost,
    /// A setting, rule, grant, tool or list entry that did not exist.
    Added,
    /// One that no longer exists.
    Removed,
    /// A value that differs.
    Changed,
}

impl ChangeKind {
    /// `gained`, `lost`, `added`, `removed` or `changed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Gained => "gained",
            ChangeKind::Lost => "lost",
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Changed => "changed",
        }
    }
}

/// One difference between two documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What kind.
    pub kind: ChangeKind,
    /// Where: a field path, or `roles.<role> x tools.<tool>` for a permission.
    pub path: String,
    /// The old value (compact JSON), if there was one.
    pub old: Option<String>,
    /// The new value (compact JSON), if there is one.
    pub new: Option<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {}", self.kind.as_str(), self.path)?;
        match (&self.old, &self.new) {
            (Some(o), Some(n)) => write!(f, ": {o} -> {n}"),
            (None, Some(n)) => write!(f, ": {n}"),
            (Some(o), None) => write!(f, ": was {o}"),
            (None, None) => Ok(()),
        }
    }
}

/// The permission, threshold, budget and limit differences from `old` to `new`: permissions
/// first (gained, then lost), then every other setting in document order.
pub fn diff(old: &Policy, new: &Policy) -> Vec<Change> {
    let mut out = Vec::new();
    let (a, b) = (permissions(old), permissions(new));
    for ((role, tool), effect) in &b {
        if !a.contains_key(&(role.clone(), tool.clone())) {
            out.push(Change {
                kind: ChangeKind::Gained,
                path: format!("roles.{role} x tools.{tool}"),
                old: None,
                new: Some(effect.clone()),
            });
        }
    }
    for ((role, tool), effect) in &a {
        if !b.contains_key(&(role.clone(), tool.clone())) {
            out.push(Change {
                kind: ChangeKind::Lost,
                path: format!("roles.{role} x tools.{tool}"),
                old: Some(effect.clone()),
                new: None,
            });
        }
    }
    let va: Value = serde_json::from_slice(old.canonical_json()).unwrap_or(Value::Null);
    let vb: Value = serde_json::from_slice(new.canonical_json()).unwrap_or(Value::Null);
    walk(&mut out, String::new(), &va, &vb);
    out
}

/// Every (role, tool) pair the boundary lets through, with the tool's effect and tier.
fn permissions(p: &Policy) -> BTreeMap<(String, String), String> {
    let doc = p.document();
    let mut out = BTreeMap::new();
    for role in doc.roles.keys() {
        for t in p.boundary().visible_tools_for(role, false) {
            let desc = match t.tier() {
                Some(tier) => format!("\"{} {tier}\"", t.effect().as_str()),
                None => format!("\"{}\"", t.effect().as_str()),
            };
            out.insert((role.clone(), t.name().to_owned()), desc);
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The identity of a list element, for lists whose elements are matched rather than indexed.
fn identity(v: &Value) -> Option<String> {
    let o = v.as_object()?;
    if let Some(id) = o.get("id").and_then(Value::as_str) {
        return Some(id.to_owned());
    }
    match (o.get("role"), o.get("provider"), o.get("resource")) {
        (Some(r), Some(p), Some(res)) => Some(format!(
            "{}/{}/{}",
            r.as_str().unwrap_or(""),
            p.as_str().unwrap_or(""),
            res.as_str().unwrap_or("")
        )),
        _ => None,
    }
}

fn walk(out: &mut Vec<Change>, path: String, a: &Value, b: &Value) {
    if a == b {
        return;
    }
    // Role allowlists are reported as permissions.
    if path.starts_with("roles.") && path.ends_with(".tools") {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = join(&path, k);
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(out, p, va, vb),
                    (None, Some(vb)) => {
                        if !(p.starts_with("roles.") && p.ends_with(".tools")) {
                            out.push(change(ChangeKind::Added, p, None, Some(vb)));
                        }
                    }
                    (Some(va), None) => {
                        if !(p.starts_with("roles.") && p.ends_with(".tools")) {
                            out.push(change(ChangeKind::Removed, p, Some(va), None));
                        }
                    }
                    (None, None) => {}
                }
            }
        }
        // The tier list is an order (least to most sensitive), not a set: any change to it,
        // a reordering included, changes what every clearance and tier rule means.
        (Value::Array(_), Value::Array(_)) if path == "tiers" => {
            out.push(change(ChangeKind::Changed, path, Some(a), Some(b)));
        }
        (Value::Array(x), Value::Array(y)) => {
            let ids_a: Option<Vec<String>> = x.iter().map(identity).collect();
            let ids_b: Option<Vec<String>> = y.iter().map(identity).collect();
            // Items are paired by identity only where it names one item on each side: with two
            // grants for the same role, provider and resource, pairing by name would compare
            // both new ones with the first old one and lose the second (they go by position).
            let unique = |ids: &Vec<String>| {
                let mut sorted: Vec<&String> = ids.iter().collect();
                sorted.sort_unstable();
                sorted.windows(2).all(|w| w[0] != w[1])
            };
            if let (Some(ia), Some(ib)) = (&ids_a, &ids_b)
                && unique(ia)
                && unique(ib)
            {
                for (i, id) in ib.iter().enumerate() {
                    let p = format!("{path}[{id}]");
                    match ia.iter().position(|o| o == id) {
                        Some(j) => walk(out, p, &x[j], &y[i]),
                        None => out.push(change(ChangeKind::Added, p, None, Some(&y[i]))),
                    }
                }
                for (j, id) in ia.iter().enumerate() {
                    if !ib.contains(id) {
                        out.push(change(
                            ChangeKind::Removed,
                            format!("{path}[{id}]"),
                            Some(&x[j]),
                            None,
                        ));
                    }
                }
            } else if x.iter().chain(y).all(|v| !v.is_object() && !v.is_array()) {
                // A list of names or values: compared as a set.
                for v in y.iter().filter(|v| !x.contains(v)) {
                    out.push(change(ChangeKind::Added, path.clone(), None, Some(v)));
                }
                for v in x.iter().filter(|v| !y.contains(v)) {
                    out.push(change(ChangeKind::Removed, path.clone(), Some(v), None));
                }
            } else {
                for i in 0..x.len().max(y.len()) {
                    let p = format!("{path}[{i}]");
                    match (x.get(i), y.get(i)) {
                        (Some(va), Some(vb)) => walk(out, p, va, vb),
                        (None, Some(vb)) => out.push(change(ChangeKind::Added, p, None, Some(vb))),
                        (Some(va), None) => {
                            out.push(change(ChangeKind::Removed, p, Some(va), None))
                        }
                        (None, None) => {}
                    }
                }
            }
        }
        _ => out.push(change(ChangeKind::Changed, path, Some(a), Some(b))),
    }
}

fn change(kind: ChangeKind, path: String, old: Option<&Value>, new: Option<&Value>) -> Change {
    Change {
        kind,
        path,
        old: old.map(compact),
        new: new.map(compact),
    }
}
