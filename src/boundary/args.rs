//! Argument rules: compiled from [`Arg`] specs into a tree that mirrors the JSON, then
//! evaluated in one pass over each object's entries (unknown keys, forbidden keys and per-field
//! rules in the same walk, required keys by bitmask afterwards).

use std::collections::BTreeMap;

use serde_json::Value;

use super::error::PolicyError;
use super::path::{DotDot, PathPolicy, PathRoot, check_path};
use super::spec::{Arg, ArgType, DotDotMode};
use super::url::{UrlPolicy, check_url};
use super::view::{Num, StrView, View};
use crate::call::RuleId;
use crate::call::json::JsonKind;
use crate::verdict::{Denial, DenyCode};

mod fast;
mod pattern;

pub(crate) use pattern::Matcher;

/// Most fields one object may declare (the evaluator tracks presence in a `u64`).
pub(crate) const MAX_FIELDS_PER_OBJECT: usize = 64;

#[derive(Debug)]
pub(crate) struct ObjectRules {
    fields: Vec<FieldRules>,
    allow_unknown: bool,
    /// Display path of this object (`""` for the top level).
    path: Box<str>,
    rule_unknown: RuleId,
    /// The accept-only one-pass plan for raw text (top-level objects of flat rules only).
    fast: Option<fast::FastPlan>,
}

#[derive(Debug)]
struct FieldRules {
    key: Box<str>,
    path: Box<str>,
    required: bool,
    forbidden: bool,
    ty: Option<ArgType>,
    rule_required: RuleId,
    rule_forbidden: RuleId,
    rule_type: RuleId,
    checks: Vec<Check>,
    object: Option<ObjectRules>,
    items: Option<Box<FieldRules>>,
    /// Marked secret or sensitive (itself or an enclosing argument): denial reasons leave the
    /// value out.
    redacted: bool,
}

impl FieldRules {
    fn mark_redacted(&mut self) {
        self.redacted = true;
        if let Some(o) = &mut self.object {
            for f in &mut o.fields {
                f.mark_redacted();
            }
        }
        if let Some(i) = &mut self.items {
            i.mark_redacted();
        }
    }
}

#[derive(Debug)]
struct Check {
    kind: CheckKind,
    rule: RuleId,
}

#[derive(Debug)]
enum CheckKind {
    OneOf(Vec<Value>),
    Min(f64),
    Max(f64),
    MaxLength(usize),
    Pattern(Box<Matcher>),
    Path(PathPolicy),
    Url(UrlPolicy),
    MaxItems(usize),
}

/// Context the rules need besides the value itself.
pub(crate) struct Env<'e> {
    pub(crate) compartment: Option<&'e str>,
}

// ---------------------------------------------------------------------------------------------
// compile

#[derive(Default)]
struct Node {
    arg: Option<Arg>,
    children: BTreeMap<String, Node>,
    items: Option<Box<Node>>,
}

/// Splits an argument path (`payment.amount`, `recipients[]`, `recipients[].email`) into
/// `(name, is_items)` segments.
pub(crate) fn parse_arg_path(path: &str) -> Result<Vec<(&str, bool)>, String> {
    if path.is_empty() {
        return Err("argument path is empty".into());
    }
    path.split('.')
        .map(|seg| {
            let (name, items) = match seg.strip_suffix("[]") {
                Some(n) => (n, true),
                None => (seg, false),
            };
            if name.is_empty() {
                return Err(format!("argument path `{path}` has an empty segment"));
            }
            if name.contains(['[', ']']) {
                return Err(format!(
                    "argument path `{path}`: only a trailing `[]` (each array element) is supported"
                ));
            }
            Ok((name, items))
        })
        .collect()
}

pub(crate) fn compile_object(
    tool: &str,
    args: &BTreeMap<String, Arg>,
    allow_unknown: bool,
) -> Result<ObjectRules, PolicyError> {
    let mut root = Node::default();
    for (path, arg) in args {
        let field = format!("tools.{tool}.args.{path}");
        let segs = parse_arg_path(path).map_err(|r| PolicyError::invalid(&field, r))?;
        let mut node = &mut root;
        for (name, items) in segs {
            node = node.children.entry(name.to_owned()).or_default();
            if items {
                node = node.items.get_or_insert_with(Box::default);
            }
        }
        if node.arg.is_some() {
            return Err(PolicyError::invalid(field, "argument declared twice"));
        }
        node.arg = Some(arg.clone());
    }
    let base = format!("tools.{tool}.args");
    let mut rules = object_from_children(&base, "", root.children, allow_unknown)?;
    rules.fast = fast::FastPlan::compile(&rules);
    Ok(rules)
}

fn object_from_children(
    base: &str,
    path: &str,
    children: BTreeMap<String, Node>,
    allow_unknown: bool,
) -> Result<ObjectRules, PolicyError> {
    if children.len() > MAX_FIELDS_PER_OBJECT {
        return Err(PolicyError::invalid(
            join(base, path),
            format!("at most {MAX_FIELDS_PER_OBJECT} fields may be declared per object"),
        ));
    }
    let mut fields = Vec::with_capacity(children.len());
    for (key, node) in children {
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        fields.push(compile_field(base, &child_path, &key, node)?);
    }
    Ok(ObjectRules {
        fields,
        allow_unknown,
        path: path.into(),
        rule_unknown: RuleId::new(join(base, path) + ".unknown"),
        fast: None,
    })
}

fn join(base: &str, path: &str) -> String {
    if path.is_empty() {
        base.to_owned()
    } else {
        format!("{base}.{path}")
    }
}

fn compile_field(base: &str, path: &str, key: &str, node: Node) -> Result<FieldRules, PolicyError> {
    let field = join(base, path);
    let arg = node.arg.unwrap_or_default();
    let rule = |suffix: &str| RuleId::new(format!("{field}.{suffix}"));

    // The type: explicit, or implied by the constraints / structure.
    let mut ty = arg.ty;
    let mut imply = |implied: ArgType, what: &str| -> Result<(), PolicyError> {
        match ty {
            None => ty = Some(implied),
            Some(t) if t == implied => {}
            Some(ArgType::Integer) if implied == ArgType::Number => {}
            Some(t) => {
                return Err(PolicyError::invalid(
                    &field,
                    format!(
                        "`{what}` applies to {} values but the type is `{}`",
                        implied.as_str(),
                        t.as_str()
                    ),
                ));
            }
        }
        Ok(())
    };
    if arg.min.is_some() {
        imply(ArgType::Number, "min")?;
    }
    if arg.max.is_some() {
        imply(ArgType::Number, "max")?;
    }
    if arg.max_length.is_some() {
        imply(ArgType::String, "max_length")?;
    }
    if arg.pattern.is_some() {
        imply(ArgType::String, "pattern")?;
    }
    if arg.path_under.is_some() {
        imply(ArgType::String, "path_under")?;
    }
    if arg.url_hosts.is_some() {
        imply(ArgType::String, "url_hosts")?;
    }
    if arg.max_items.is_some() {
        imply(ArgType::Array, "max_items")?;
    }
    if !node.children.is_empty() {
        imply(ArgType::Object, "nested arguments")?;
    }
    if node.items.is_some() {
        imply(ArgType::Array, "`[]` element rules")?;
    }

    if arg.forbidden {
        let constrained = arg.required
            || ty.is_some()
            || arg.one_of.is_some()
            || !node.children.is_empty()
            || node.items.is_some();
        if constrained {
            return Err(PolicyError::invalid(
                &field,
                "a forbidden argument cannot also be required, typed or constrained",
            ));
        }
    }
    if (arg.dot_dot.is_some() || arg.allow_relative.is_some()) && arg.path_under.is_none() {
        return Err(PolicyError::invalid(
            &field,
            "`dot_dot` and `allow_relative` need `path_under`",
        ));
    }
    if (arg.url_schemes.is_some() || arg.url_ports.is_some()) && arg.url_hosts.is_none() {
        return Err(PolicyError::invalid(
            &field,
            "`url_schemes` and `url_ports` need `url_hosts`",
        ));
    }
    if arg.allow_unknown_fields && ty != Some(ArgType::Object) {
        return Err(PolicyError::invalid(
            &field,
            "`allow_unknown_fields` applies to object arguments only",
        ));
    }

    let mut checks = Vec::new();
    if let Some(values) = arg.one_of {
        if values.is_empty() {
            return Err(PolicyError::invalid(
                format!("{field}.enum"),
                "must list at least one value",
            ));
        }
        for (i, v) in values.iter().enumerate() {
            if v.is_array() || v.is_object() {
                return Err(PolicyError::invalid(
                    format!("{field}.enum[{i}]"),
                    "enum values must be strings, numbers, booleans or null",
                ));
            }
            let fits = match ty {
                None => true,
                Some(ArgType::String) => v.is_string(),
                Some(ArgType::Number) => v.is_number(),
                Some(ArgType::Integer) => {
                    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
                }
                Some(ArgType::Boolean) => v.is_boolean(),
                Some(ArgType::Null) => v.is_null(),
                Some(ArgType::Object | ArgType::Array) => false,
            };
            if !fits {
                return Err(PolicyError::invalid(
                    format!("{field}.enum[{i}]"),
                    format!(
                        "{v} is not of the argument's type `{}`, so it could never match",
                        ty.map_or("?", ArgType::as_str)
                    ),
                ));
            }
        }
        checks.push(Check {
            kind: CheckKind::OneOf(values),
            rule: rule("enum"),
        });
    }
    for (name, bound) in [("min", arg.min), ("max", arg.max)] {
        if let Some(b) = bound
            && let Err(why) = super::view::bound_is_exact(b)
        {
            return Err(PolicyError::invalid(format!("{field}.{name}"), why));
        }
    }
    if let (Some(lo), Some(hi)) = (arg.min, arg.max)
        && lo > hi
    {
        return Err(PolicyError::invalid(
            format!("{field}.min"),
            format!("min {lo} is greater than max {hi}"),
        ));
    }
    if let Some(lo) = arg.min {
        checks.push(Check {
            kind: CheckKind::Min(lo),
            rule: rule("min"),
        });
    }
    if let Some(hi) = arg.max {
        checks.push(Check {
            kind: CheckKind::Max(hi),
            rule: rule("max"),
        });
    }
    if let Some(n) = arg.max_length {
        checks.push(Check {
            kind: CheckKind::MaxLength(n),
            rule: rule("max_length"),
        });
    }
    if let Some(p) = arg.pattern {
        let re = Matcher::compile(&p)
            .map(Box::new)
            .map_err(|e| PolicyError::Pattern {
                field: format!("{field}.pattern"),
                source: Box::new(e),
            })?;
        checks.push(Check {
            kind: CheckKind::Pattern(re),
            rule: rule("pattern"),
        });
    }
    if let Some(root) = arg.path_under {
        let root = PathRoot::parse(&root).map_err(|source| PolicyError::PathRoot {
            field: format!("{field}.path_under"),
            source,
        })?;
        let policy = PathPolicy {
            root,
            dot_dot: match arg.dot_dot.unwrap_or_default() {
                DotDotMode::Reject => DotDot::Reject,
                DotDotMode::Normalize => DotDot::Normalize,
            },
            allow_relative: arg.allow_relative.unwrap_or(false),
            max_len: 4096,
        };
        checks.push(Check {
            kind: CheckKind::Path(policy),
            rule: rule("path_under"),
        });
    }
    if let Some(hosts) = arg.url_hosts {
        let schemes = arg.url_schemes.unwrap_or_else(|| vec!["https".to_owned()]);
        let policy =
            UrlPolicy::new(&hosts, &schemes, arg.url_ports.as_deref()).map_err(|source| {
                PolicyError::UrlPolicy {
                    field: format!("{field}.url_hosts"),
                    source,
                }
            })?;
        checks.push(Check {
            kind: CheckKind::Url(policy),
            rule: rule("url_hosts"),
        });
    }
    if let Some(n) = arg.max_items {
        checks.push(Check {
            kind: CheckKind::MaxItems(n),
            rule: rule("max_items"),
        });
    }

    let object = if ty == Some(ArgType::Object) {
        Some(object_from_children(
            base,
            path,
            node.children,
            arg.allow_unknown_fields,
        )?)
    } else {
        None
    };
    if let Some(items) = &node.items
        && let Some(a) = &items.arg
        && (a.required || a.forbidden)
    {
        return Err(PolicyError::invalid(
            format!("{field}[]"),
            "`required` and `forbidden` have no meaning for array elements; put them on the array",
        ));
    }
    let items = match node.items {
        Some(items) => Some(Box::new(compile_field(
            base,
            &format!("{path}[]"),
            "[]",
            *items,
        )?)),
        None => None,
    };

    let mut rules = FieldRules {
        key: key.into(),
        path: path.into(),
        // A required descendant at any depth makes every enclosing object required: computed
        // from the compiled children, so implicit intermediate objects count too.
        required: arg.required
            || object
                .as_ref()
                .is_some_and(|o| o.fields.iter().any(|f| f.required)),
        forbidden: arg.forbidden,
        ty,
        rule_required: rule("required"),
        rule_forbidden: rule("forbidden"),
        rule_type: rule("type"),
        checks,
        object,
        items,
        redacted: false,
    };
    if arg.redact.is_some() {
        rules.mark_redacted();
    }
    Ok(rules)
}

// ---------------------------------------------------------------------------------------------
// evaluate

impl ObjectRules {
    /// Removes the fast path's plan: for a tool whose arguments are also checked by a rule
    /// outside these rules (a compartment argument), which the fast path does not know.
    pub(crate) fn without_fast_path(mut self) -> Self {
        self.fast = None;
        self
    }

    /// Whether the raw JSON `text` is certainly admitted by these rules, by the one-pass fast path
    /// (see `fast`); `false` means "not decided here": the caller runs the reference path (full
    /// validation, then [`check`](Self::check)), which alone refuses and says why. The caller
    /// has checked the size and depth limits.
    #[inline]
    pub(crate) fn admits_raw(&self, text: &str) -> bool {
        self.fast.is_some_and(|plan| fast::admits(self, plan, text))
    }

    /// Checks an object value against these rules.
    pub(crate) fn check<'a, V: View<'a>>(&self, v: V, env: &Env<'_>) -> Result<(), Denial> {
        let mut seen: u64 = 0;
        for (key, val) in v.entries() {
            match self.fields.iter().position(|f| key.eq_str(&f.key)) {
                Some(i) => {
                    seen |= 1 << i;
                    self.fields[i].check(val, env)?;
                }
                None if self.allow_unknown => {}
                None => {
                    let k = key.cow();
                    let shown = if self.path.is_empty() {
                        format!("`{}`", Truncated(&k))
                    } else {
                        format!("`{}.{}`", self.path, Truncated(&k))
                    };
                    return Err(Denial::new(
                        DenyCode::UnknownArgument,
                        self.rule_unknown.clone(),
                        format!("argument {shown} is not declared by the policy"),
                    ));
                }
            }
        }
        for (i, f) in self.fields.iter().enumerate() {
            if f.required && seen & (1 << i) == 0 {
                return Err(Denial::new(
                    DenyCode::MissingArgument,
                    f.rule_required.clone(),
                    format!("required argument `{}` is missing", f.path),
                ));
            }
        }
        Ok(())
    }
}

/// Shows at most 64 characters of attacker-controlled text in a reason.
struct Truncated<'s>(&'s str);

impl std::fmt::Display for Truncated<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(64) {
            write!(f, "{}", c.escape_debug())?;
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

fn kind_name(k: JsonKind) -> &'static str {
    match k {
        JsonKind::Null => "null",
        JsonKind::Bool => "boolean",
        JsonKind::Number => "number",
        JsonKind::String => "string",
        JsonKind::Array => "array",
        JsonKind::Object => "object",
    }
}

/// A value's number, read from the text at most once per field however many rules ask.
struct LazyNum(Option<Option<Num>>);

impl LazyNum {
    #[inline]
    fn get<'a, V: View<'a>>(&mut self, v: V) -> Option<Num> {
        *self.0.get_or_insert_with(|| v.as_num())
    }
}

fn type_matches<'a, V: View<'a>>(ty: ArgType, v: V, num: &mut LazyNum) -> bool {
    match ty {
        ArgType::String => v.kind() == JsonKind::String,
        ArgType::Number => num.get(v).is_some_and(Num::is_finite),
        ArgType::Integer => num.get(v).is_some_and(Num::is_integer),
        ArgType::Boolean => v.kind() == JsonKind::Bool,
        ArgType::Object => v.kind() == JsonKind::Object,
        ArgType::Array => v.kind() == JsonKind::Array,
        ArgType::Null => v.kind() == JsonKind::Null,
    }
}

/// Whether `v` equals the enum value `want`; `s` is `v`'s string view, read once per rule.
fn scalar_eq<'a, V: View<'a>>(v: V, s: Option<V::S>, want: &Value, num: &mut LazyNum) -> bool {
    match want {
        Value::Null => v.kind() == JsonKind::Null,
        Value::Bool(b) => v.as_bool() == Some(*b),
        Value::Number(n) => num.get(v).is_some_and(|x| x.eq_value(n)),
        Value::String(w) => s.is_some_and(|x| x.eq_str(w)),
        Value::Array(_) | Value::Object(_) => false,
    }
}

impl FieldRules {
    fn deny(&self, code: DenyCode, rule: &RuleId, reason: String) -> Denial {
        Denial::new(code, rule.clone(), reason)
    }

    fn check<'a, V: View<'a>>(&self, v: V, env: &Env<'_>) -> Result<(), Denial> {
        if self.forbidden {
            return Err(self.deny(
                DenyCode::ForbiddenArgument,
                &self.rule_forbidden,
                format!("argument `{}` is forbidden by the policy", self.path),
            ));
        }
        let mut num = LazyNum(None);
        if let Some(ty) = self.ty
            && !type_matches(ty, v, &mut num)
        {
            return Err(self.deny(
                DenyCode::ArgumentType,
                &self.rule_type,
                format!(
                    "argument `{}` must be of type {}, got {}",
                    self.path,
                    ty.as_str(),
                    kind_name(v.kind())
                ),
            ));
        }
        for c in &self.checks {
            self.run_check(c, v, &mut num, env)?;
        }
        if let Some(obj) = &self.object
            && v.kind() == JsonKind::Object
        {
            obj.check(v, env)?;
        }
        if let Some(items) = &self.items {
            for item in v.items() {
                items.check(item, env)?;
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn run_check<'a, V: View<'a>>(
        &self,
        c: &Check,
        v: V,
        num: &mut LazyNum,
        env: &Env<'_>,
    ) -> Result<(), Denial> {
        let path = &self.path;
        match &c.kind {
            CheckKind::OneOf(values) => {
                let s = v.as_string();
                if !values.iter().any(|w| scalar_eq(v, s, w, num)) {
                    return Err(self.deny(
                        DenyCode::ArgumentNotAllowed,
                        &c.rule,
                        format!("argument `{path}` is not one of the allowed values"),
                    ));
                }
            }
            CheckKind::Min(lo) => {
                if let Some(n) = num.get(v)
                    && n.below(*lo)
                {
                    return Err(self.deny(
                        DenyCode::ArgumentOutOfRange,
                        &c.rule,
                        if self.redacted {
                            format!("argument `{path}` is below the minimum {lo}")
                        } else {
                            format!("argument `{path}` = {n} is below the minimum {lo}")
                        },
                    ));
                }
            }
            CheckKind::Max(hi) => {
                if let Some(n) = num.get(v)
                    && n.above(*hi)
                {
                    return Err(self.deny(
                        DenyCode::ArgumentOutOfRange,
                        &c.rule,
                        if self.redacted {
                            format!("argument `{path}` is above the maximum {hi}")
                        } else {
                            format!("argument `{path}` = {n} is above the maximum {hi}")
                        },
                    ));
                }
            }
            CheckKind::MaxLength(max) => {
                if let Some(s) = v.as_string() {
                    let n = s.char_count();
                    if n > *max {
                        return Err(self.deny(
                            DenyCode::ArgumentTooLong,
                            &c.rule,
                            format!("argument `{path}` is {n} characters long; at most {max} are allowed"),
                        ));
                    }
                }
            }
            CheckKind::Pattern(re) => {
                if let Some(s) = v.as_string()
                    && !re.is_match(&s.cow())
                {
                    return Err(self.deny(
                        DenyCode::ArgumentPattern,
                        &c.rule,
                        format!("argument `{path}` does not match its required pattern"),
                    ));
                }
            }
            CheckKind::Path(policy) => {
                if let Some(s) = v.as_string() {
                    let s = s.cow();
                    let why = if s.contains('%') {
                        // Decode it and a tool that doesn't opens another file; don't and a tool
                        // that does escapes. Neither reading is safe, so neither is accepted.
                        Some("it contains `%` (percent-encoding is refused: tools disagree on decoding it)".to_owned())
                    } else {
                        check_path(&s, policy, env.compartment)
                            .err()
                            .map(|e| e.to_string())
                    };
                    if let Some(why) = why {
                        let root = policy.root.as_str();
                        return Err(self.deny(
                            DenyCode::PathEscape,
                            &c.rule,
                            if self.redacted {
                                format!("argument `{path}` is not a path under `{root}`")
                            } else {
                                format!("argument `{path}` is not a path under `{root}`: {why}")
                            },
                        ));
                    }
                }
            }
            CheckKind::Url(policy) => {
                if let Some(s) = v.as_string()
                    && let Err(why) = check_url(&s.cow(), policy)
                {
                    return Err(self.deny(
                        DenyCode::UrlNotAllowed,
                        &c.rule,
                        if self.redacted {
                            format!("argument `{path}` is not an allowed URL")
                        } else {
                            format!("argument `{path}` is not an allowed URL: {why}")
                        },
                    ));
                }
            }
            CheckKind::MaxItems(max) => {
                let n = v.items().count();
                if n > *max {
                    return Err(self.deny(
                        DenyCode::ArgumentTooLong,
                        &c.rule,
                        format!("argument `{path}` has {n} elements; at most {max} are allowed"),
                    ));
                }
            }
        }
        Ok(())
    }
}
