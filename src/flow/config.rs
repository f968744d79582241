//! The `[flow]` section of the policy document and its compilation into [`FlowRules`].
//!
//! ```toml
//! [flow]
//! on_violation = "escalate"            # default action: deny | escalate | quarantine
//! max_index_bytes = 16777216           # per-run index cap (bytes)
//! default_output = { integrity = "untrusted" }   # tools not listed (tier: the highest)
//! tier_retention = { phi = "task" }    # values of a tier may go only to sinks kept <= this
//!
//! [flow.tools.get_most_recent_transactions]
//! integrity = "trusted"                # output labels
//! tier = "internal"
//! fields."*.subject" = { integrity = "untrusted" }   # per output field (`*` one level, `**` any)
//! when = [{ arg = "account", pattern = "^ext-", integrity = "untrusted" }]
//!
//! [flow.tools.send_money.args.recipient]
//! accepts = ["user", "trusted"]        # user | trusted | untrusted | unseen
//! match = "whole"                      # whole value, or "parts": structured values inside text
//! parts = ["url", "email", "iban", "phone", "path", "identifier"]
//! max_tier = "internal"                # the sink's maximum confidentiality
//! same_compartment = true              # no value from another compartment than the call's
//! on_violation = "escalate"
//!
//! [flow.tools.read_chart]
//! compartment_arg = "patient_id"       # the compartment this call's data belongs to
//! exclusive_compartment = true         # a context holding another compartment may not read it
//! retention = "task"                   # as a sink: how long it keeps what it is given
//! ```
//!
//! Every rule fails closed. Under an argument path, object keys are read like values. A
//! tool's `retention`, when some tier's `tier_retention` is shorter, is checked on every argument of
//! the tool. A `compartment_arg` naming several compartments (an array or object of distinct
//! values) is denied. Arguments a rule cannot read (past the rules' JSON limits, which a guard
//! sets to the document's `[limits]`, or with duplicate keys) deny the call; an output whose
//! arguments cannot be read is labelled with its tool's strictest label (untrusted, the highest
//! tier among its own, its `when` conditions' and its fields', and an unknown compartment if it
//! names compartments), and a `when` argument holding several values gives the strictest of the
//! labels they select.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::check::FlowAction;
use super::index::{FlowTracker, TrackerLimits};
use super::{Integrity, PartKind, SourceSet};
use crate::call::{JsonLimits, RuleId};

/// The `[flow]` section: output labels and argument rules per tool.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowPolicy {
    /// Action of a violated rule that sets none (default `escalate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_violation: Option<FlowAction>,
    /// Most bytes one run's index may take (default 16 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_index_bytes: Option<u64>,
    /// Most candidates one substring lookup verifies before failing closed (default 4096): past
    /// it the value counts as untrusted and as carrying every label the run indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_candidates: Option<u32>,
    /// Labels of the outputs of tools the section does not list (default: untrusted, the
    /// highest tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_output: Option<FieldLabel>,
    /// Per tier: the longest a sink may keep values of that tier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tier_retention: BTreeMap<String, Retention>,
    /// Per tool: output labels and argument rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ToolFlow>,
}

/// One tool's labels and rules.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFlow {
    /// Integrity of the tool's output (default: the section's `default_output`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
    /// Confidentiality tier of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The argument naming the compartment the call's data belongs to. It must name one
    /// compartment: several distinct values (an array or object) deny the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartment_arg: Option<String>,
    /// Labels of output fields, by selector (`a.b`, `*` one level, `**` any levels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldLabel>,
    /// Labels that depend on an argument of the call (first match wins; an argument holding
    /// several values gives the strictest of the tool's label and every condition they match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<WhenArg>,
    /// Deny (or the tool's action) a call whose compartment differs from one the run's context
    /// already holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive_compartment: bool,
    /// As a sink: how long it keeps what it receives. Checked on every argument (whether or not
    /// the tool has argument rules) against the strictest `tier_retention` of the tiers a value
    /// may carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Action of this tool's violated rules that set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_violation: Option<FlowAction>,
    /// Rules per argument path (`recipient`, `payment.iban`, `recipients[]`, `*` for all).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, ArgFlow>,
}

/// Labels of an output field (or of unlisted tools).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldLabel {
    /// Integrity (default: the tool's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
    /// Tier (default: the tool's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// A label that applies when an argument of the call matches a pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhenArg {
    /// The argument (top-level name or dotted path).
    pub arg: String,
    /// Regular expression searched in the argument's text.
    pub pattern: String,
    /// Integrity then (default: the tool's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Integrity>,
    /// Tier then (default: the tool's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// A rule on one argument.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArgFlow {
    /// Where the value may come from (default: anywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepts: Option<Vec<Accept>>,
    /// The whole value, or the structured parts inside a text (default `whole`).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub mode: Option<MatchMode>,
    /// For `match = "parts"`: which kinds (default url, email, iban, phone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<PartKind>>,
    /// The highest tier a value may carry into this sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tier: Option<String>,
    /// A value may not come from another compartment than the call's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub same_compartment: bool,
    /// Action on violation (default: the tool's, then the section's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_violation: Option<FlowAction>,
}

/// A place a rule accepts a value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Accept {
    /// The user's prompt.
    User,
    /// A trusted output.
    Trusted,
    /// An untrusted output.
    Untrusted,
    /// Nowhere the context saw (the model wrote it).
    Unseen,
}

/// How an argument is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    /// The whole value (a recipient, a URL, an amount).
    Whole,
    /// Each structured value inside a text (the links in a message body).
    Parts,
}

/// How long a sink keeps data, or how long a tier's values may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Retention {
    /// Only for the task (the run).
    Task,
    /// For this long.
    For(Duration),
    /// Indefinitely.
    Forever,
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Retention::Task => s.serialize_str("task"),
            Retention::Forever => s.serialize_str("forever"),
            Retention::For(d) => s.serialize_str(&crate::units::format_duration(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "task" => Ok(Retention::Task),
            "forever" => Ok(Retention::Forever),
            other => crate::units::parse_duration(other)
                .map(Retention::For)
                .map_err(|e| serde::de::Error::custom(format!("{e} (or \"task\", \"forever\")"))),
        }
    }
}

/// Why a `[flow]` section is refused. Every variant names the field's path inside the section
/// (prefix it with `flow.` in a whole document).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowPolicyError {
    /// The text is not a valid section (unknown field, wrong type).
    #[error("flow.{path}: {message}")]
    Shape {
        /// Field path.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A tier the document does not define.
    #[error("flow.{path}: unknown tier `{name}` (the document's tiers: {known})")]
    UnknownTier {
        /// Field path.
        path: String,
        /// The name.
        name: String,
        /// The tiers defined.
        known: String,
    },
    /// A tool the document does not define.
    #[error("flow.{path}: unknown tool `{name}`")]
    UnknownTool {
        /// Field path.
        path: String,
        /// The name.
        name: String,
    },
    /// A value that makes no sense.
    #[error("flow.{path}: {reason}")]
    Invalid {
        /// Field path.
        path: String,
        /// Why.
        reason: String,
    },
}

impl FlowPolicyError {
    /// The field's path inside the section.
    pub fn path(&self) -> &str {
        match self {
            FlowPolicyError::Shape { path, .. }
            | FlowPolicyError::UnknownTier { path, .. }
            | FlowPolicyError::UnknownTool { path, .. }
            | FlowPolicyError::Invalid { path, .. } => path,
        }
    }

    fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FlowPolicyError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl FlowPolicy {
    /// Reads a section from JSON, refusing unknown fields with their path.
    pub fn from_json(text: &str) -> Result<Self, FlowPolicyError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| FlowPolicyError::Shape {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        })
    }

    /// Reads a section from TOML (the table under `[flow]`, without the `flow.` prefix).
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, FlowPolicyError> {
        let de = toml::Deserializer::parse(text).map_err(|e| FlowPolicyError::Shape {
            path: ".".into(),
            message: e.message().trim().to_owned(),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| FlowPolicyError::Shape {
            path: e.path().to_string(),
            message: e.into_inner().message().trim().to_owned(),
        })
    }

    /// Checks every cross-reference against the document's `tiers` (lowest first) and tool
    /// names, and compiles the rules.
    pub fn compile<S: AsRef<str>>(
        &self,
        tiers: &[String],
        tool_names: &[S],
    ) -> Result<FlowRules, FlowPolicyError> {
        if tiers.len() > usize::from(u8::MAX) {
            return Err(FlowPolicyError::invalid("tiers", "at most 255 tiers"));
        }
        let tier = |path: String, name: &str| -> Result<u8, FlowPolicyError> {
            tiers
                .iter()
                .position(|t| t == name)
                .map(|i| i as u8)
                .ok_or_else(|| FlowPolicyError::UnknownTier {
                    path,
                    name: name.to_owned(),
                    known: if tiers.is_empty() {
                        "none".into()
                    } else {
                        tiers.join(", ")
                    },
                })
        };
        let default = self.default_output.clone().unwrap_or_default();
        let default_label = (
            default.integrity.unwrap_or(Integrity::Untrusted),
            match &default.tier {
                Some(t) => Some(tier("default_output.tier".into(), t)?),
                None => tiers.len().checked_sub(1).map(|i| i as u8),
            },
        );
        let on_violation = self.on_violation.unwrap_or(FlowAction::Escalate);
        if on_violation == FlowAction::Allow {
            return Err(FlowPolicyError::invalid(
                "on_violation",
                "must be deny, escalate or quarantine",
            ));
        }
        let mut tier_retention = vec![None; tiers.len()];
        for (name, r) in &self.tier_retention {
            let i = tier(format!("tier_retention.{name}"), name)?;
            tier_retention[usize::from(i)] = Some(*r);
        }
        let limits = TrackerLimits {
            max_index_bytes: match self.max_index_bytes {
                Some(0) => {
                    return Err(FlowPolicyError::invalid(
                        "max_index_bytes",
                        "must be at least 1",
                    ));
                }
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None => TrackerLimits::default().max_index_bytes,
            },
            max_candidates: match self.max_candidates {
                Some(0) => {
                    return Err(FlowPolicyError::invalid(
                        "max_candidates",
                        "must be at least 1",
                    ));
                }
                Some(n) => n as usize,
                None => TrackerLimits::default().max_candidates,
            },
        };

        let mut tools = HashMap::new();
        for (name, t) in &self.tools {
            let at = |f: &str| format!("tools.{name}.{f}");
            if !tool_names.iter().any(|n| n.as_ref() == name) {
                return Err(FlowPolicyError::UnknownTool {
                    path: format!("tools.{name}"),
                    name: name.clone(),
                });
            }
            let integrity = t.integrity.unwrap_or(default_label.0);
            let out_tier = match &t.tier {
                Some(n) => Some(tier(at("tier"), n)?),
                None => default_label.1,
            };
            let mut fields = Vec::new();
            for (sel, l) in &t.fields {
                let path = at(&format!("fields.{sel}"));
                let segs = parse_selector(sel).map_err(|r| FlowPolicyError::invalid(&path, r))?;
                let ft = match &l.tier {
                    Some(n) => Some(tier(format!("{path}.tier"), n)?),
                    None => out_tier,
                };
                fields.push((segs, l.integrity.unwrap_or(integrity), ft));
            }
            let mut when = Vec::new();
            for (i, w) in t.when.iter().enumerate() {
                let path = at(&format!("when[{i}]"));
                let arg = parse_arg_path(&w.arg)
                    .map_err(|r| FlowPolicyError::invalid(format!("{path}.arg"), r))?;
                let re = Regex::new(&w.pattern).map_err(|e| {
                    FlowPolicyError::invalid(
                        format!("{path}.pattern"),
                        format!("invalid regular expression: {e}"),
                    )
                })?;
                let wt = match &w.tier {
                    Some(n) => Some(tier(format!("{path}.tier"), n)?),
                    None => out_tier,
                };
                when.push(When {
                    arg,
                    pattern: re,
                    integrity: w.integrity.unwrap_or(integrity),
                    tier: wt,
                });
            }
            let compartment_arg = match &t.compartment_arg {
                Some(a) => Some(
                    parse_arg_path(a)
                        .map_err(|r| FlowPolicyError::invalid(at("compartment_arg"), r))?,
                ),
                None => None,
            };
            if t.exclusive_compartment && compartment_arg.is_none() {
                return Err(FlowPolicyError::invalid(
                    at("exclusive_compartment"),
                    "needs compartment_arg: which argument names the compartment",
                ));
            }
            let tool_action = t.on_violation.unwrap_or(on_violation);
            if tool_action == FlowAction::Allow {
                return Err(FlowPolicyError::invalid(
                    at("on_violation"),
                    "must be deny, escalate or quarantine",
                ));
            }
            let mut args = Vec::new();
            for (path, a) in &t.args {
                let rp = at(&format!("args.{path}"));
                let segs = parse_arg_path(path).map_err(|r| FlowPolicyError::invalid(&rp, r))?;
                let mut accepts = SourceSet::EMPTY;
                let mut unseen = false;
                match &a.accepts {
                    None => {
                        accepts = SourceSet::USER
                            .union(SourceSet::TRUSTED)
                            .union(SourceSet::UNTRUSTED);
                        unseen = true;
                    }
                    Some(list) if list.is_empty() => {
                        return Err(FlowPolicyError::invalid(
                            format!("{rp}.accepts"),
                            "must name at least one source (user, trusted, untrusted, unseen)",
                        ));
                    }
                    Some(list) => {
                        for s in list {
                            match s {
                                Accept::User => accepts = accepts.union(SourceSet::USER),
                                Accept::Trusted => accepts = accepts.union(SourceSet::TRUSTED),
                                Accept::Untrusted => accepts = accepts.union(SourceSet::UNTRUSTED),
                                Accept::Unseen => unseen = true,
                            }
                        }
                    }
                }
                let mode = a.mode.unwrap_or(MatchMode::Whole);
                let parts = match (&a.parts, mode) {
                    (Some(_), MatchMode::Whole) => {
                        return Err(FlowPolicyError::invalid(
                            format!("{rp}.parts"),
                            "only with match = \"parts\"",
                        ));
                    }
                    (Some(p), MatchMode::Parts) if p.is_empty() => {
                        return Err(FlowPolicyError::invalid(
                            format!("{rp}.parts"),
                            "must name at least one kind",
                        ));
                    }
                    (Some(p), _) => p.clone(),
                    (None, _) => vec![
                        PartKind::Url,
                        PartKind::Email,
                        PartKind::Iban,
                        PartKind::Phone,
                    ],
                };
                let max_tier = match &a.max_tier {
                    Some(n) => Some(tier(format!("{rp}.max_tier"), n)?),
                    None => None,
                };
                if a.same_compartment && compartment_arg.is_none() {
                    return Err(FlowPolicyError::invalid(
                        format!("{rp}.same_compartment"),
                        format!("needs tools.{name}.compartment_arg: the call's own compartment"),
                    ));
                }
                let action = a.on_violation.unwrap_or(tool_action);
                if action == FlowAction::Allow {
                    return Err(FlowPolicyError::invalid(
                        format!("{rp}.on_violation"),
                        "must be deny, escalate or quarantine",
                    ));
                }
                if a.accepts.is_none()
                    && max_tier.is_none()
                    && !a.same_compartment
                    && t.retention.is_none()
                {
                    return Err(FlowPolicyError::invalid(
                        &rp,
                        "the rule checks nothing: set accepts, max_tier, same_compartment or the tool's retention",
                    ));
                }
                args.push(ArgRule {
                    id: RuleId::new(format!("flow.{rp}")),
                    path: Arc::from(path.as_str()),
                    segs,
                    accepts,
                    unseen,
                    mode,
                    parts,
                    max_tier,
                    same_compartment: a.same_compartment,
                    action,
                });
            }
            let retention_rule = RuleId::new(format!("flow.{}", at("retention")));
            // A sink's retention concerns everything it is given: when some tier's values may
            // not be kept as long as the tool keeps them, every argument is checked for it
            // (whether or not the tool has argument rules of its own).
            if let Some(kept) = t.retention
                && tier_retention.iter().flatten().any(|limit| kept > *limit)
            {
                args.push(ArgRule {
                    id: retention_rule.clone(),
                    path: Arc::from("*"),
                    segs: Vec::new(),
                    accepts: SourceSet::USER
                        .union(SourceSet::TRUSTED)
                        .union(SourceSet::UNTRUSTED),
                    unseen: true,
                    mode: MatchMode::Whole,
                    parts: Vec::new(),
                    max_tier: None,
                    same_compartment: false,
                    action: tool_action,
                });
            }
            tools.insert(
                name.clone(),
                ToolRules {
                    integrity,
                    tier: out_tier,
                    fields,
                    when,
                    compartment_arg,
                    exclusive: t
                        .exclusive_compartment
                        .then(|| RuleId::new(format!("flow.{}", at("exclusive_compartment")))),
                    retention: t.retention,
                    retention_rule,
                    compartment_rule: RuleId::new(format!("flow.{}", at("compartment_arg"))),
                    action: tool_action,
                    args,
                },
            );
        }
        Ok(FlowRules {
            inner: Arc::new(RulesInner {
                tiers: tiers.to_vec(),
                tools,
                default_label,
                tier_retention,
                limits,
            }),
            json_limits: JsonLimits::default(),
        })
    }
}

/// Splits `a.b[]` into `["a", "b"]` (`[]` marks elements; every leaf under a path is checked
/// anyway). `*` alone is the whole argument object.
pub(crate) fn parse_arg_path(path: &str) -> Result<Vec<String>, String> {
    if path == "*" {
        return Ok(Vec::new());
    }
    if path.is_empty() {
        return Err("argument path is empty".into());
    }
    path.split('.')
        .map(|seg| {
            let name = seg.strip_suffix("[]").unwrap_or(seg);
            if name.is_empty() || name.contains(['[', ']', '*']) {
                Err(format!("argument path `{path}`: bad segment `{seg}`"))
            } else {
                Ok(name.to_owned())
            }
        })
        .collect()
}

/// One segment of an output-field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sel {
    Key(String),
    Any,
    AnyDepth,
}

fn parse_selector(sel: &str) -> Result<Vec<Sel>, String> {
    if sel.is_empty() {
        return Err("selector is empty".into());
    }
    sel.split('.')
        .map(|s| match s {
            "" => Err(format!("selector `{sel}` has an empty segment")),
            "*" => Ok(Sel::Any),
            "**" => Ok(Sel::AnyDepth),
            k => Ok(Sel::Key(k.to_owned())),
        })
        .collect()
}

/// Whether a selector matches a leaf path (or a prefix of it: the selector labels the whole
/// subtree).
pub(crate) fn selector_matches(sel: &[Sel], path: &[&str]) -> bool {
    match sel.split_first() {
        None => true,
        Some((Sel::AnyDepth, rest)) => (0..=path.len()).any(|i| selector_matches(rest, &path[i..])),
        Some((s, rest)) => match path.split_first() {
            None => false,
            Some((p, prest)) => {
                let ok = match s {
                    Sel::Key(k) => k == p,
                    Sel::Any | Sel::AnyDepth => true,
                };
                ok && selector_matches(rest, prest)
            }
        },
    }
}

pub(crate) struct When {
    pub(crate) arg: Vec<String>,
    pub(crate) pattern: Regex,
    pub(crate) integrity: Integrity,
    pub(crate) tier: Option<u8>,
}

pub(crate) struct ArgRule {
    pub(crate) id: RuleId,
    pub(crate) path: Arc<str>,
    pub(crate) segs: Vec<String>,
    pub(crate) accepts: SourceSet,
    pub(crate) unseen: bool,
    pub(crate) mode: MatchMode,
    pub(crate) parts: Vec<PartKind>,
    pub(crate) max_tier: Option<u8>,
    pub(crate) same_compartment: bool,
    pub(crate) action: FlowAction,
}

pub(crate) struct ToolRules {
    pub(crate) integrity: Integrity,
    pub(crate) tier: Option<u8>,
    pub(crate) fields: Vec<(Vec<Sel>, Integrity, Option<u8>)>,
    pub(crate) when: Vec<When>,
    pub(crate) compartment_arg: Option<Vec<String>>,
    pub(crate) exclusive: Option<RuleId>,
    pub(crate) retention: Option<Retention>,
    pub(crate) retention_rule: RuleId,
    /// Names the denial of a compartment argument holding several compartments.
    pub(crate) compartment_rule: RuleId,
    pub(crate) action: FlowAction,
    pub(crate) args: Vec<ArgRule>,
}

impl ToolRules {
    /// Whether a call of the tool is checked at all: argument rules (retention included),
    /// compartment exclusivity, or a compartment argument (which must name one compartment).
    pub(crate) fn checks(&self) -> bool {
        !self.args.is_empty() || self.exclusive.is_some() || self.compartment_arg.is_some()
    }

    /// The strictest output label the tool can give, whatever its arguments: untrusted, and the
    /// highest tier among its own, its `when` conditions' and its output fields'. Used when
    /// the arguments its labels depend on cannot be read (fail closed).
    pub(crate) fn strictest(&self) -> (Integrity, Option<u8>) {
        let tier = self
            .when
            .iter()
            .map(|w| w.tier)
            .chain(self.fields.iter().map(|f| f.2))
            .fold(self.tier, Option::max);
        (Integrity::Untrusted, tier)
    }
}

pub(crate) struct RulesInner {
    pub(crate) tiers: Vec<String>,
    pub(crate) tools: HashMap<String, ToolRules>,
    pub(crate) default_label: (Integrity, Option<u8>),
    pub(crate) tier_retention: Vec<Option<Retention>>,
    pub(crate) limits: TrackerLimits,
}

/// A compiled `[flow]` section. Cheap to clone; shared by every run.
#[derive(Clone)]
pub struct FlowRules {
    pub(crate) inner: Arc<RulesInner>,
    /// How large and deep raw JSON arguments the rules read may be.
    pub(crate) json_limits: JsonLimits,
}

impl fmt::Debug for FlowRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowRules")
            .field("tiers", &self.inner.tiers)
            .field("tools", &self.inner.tools.len())
            .field("limits", &self.inner.limits)
            .field("json_limits", &self.json_limits)
            .finish()
    }
}

impl FlowRules {
    /// A fresh index for one run, with the section's limits.
    pub fn tracker(&self) -> FlowTracker {
        FlowTracker::new(self.inner.limits)
    }

    /// The name of a tier index (as found in [`Origin::max_tier`](super::Origin)).
    pub fn tier_name(&self, i: u8) -> Option<&str> {
        self.inner.tiers.get(usize::from(i)).map(String::as_str)
    }

    /// Whether the section has rules or labels for a tool.
    pub fn covers(&self, tool: &str) -> bool {
        self.inner.tools.contains_key(tool)
    }

    /// Whether [`check`](Self::check) reads anything for calls of `tool` (argument rules, a
    /// retention that some tier's limit is shorter than, compartment exclusivity or a
    /// compartment argument); for other tools it allows without looking at the run.
    pub fn checks(&self, tool: &str) -> bool {
        self.inner.tools.get(tool).is_some_and(ToolRules::checks)
    }

    /// The same rules reading raw JSON arguments within `limits` (by default
    /// [`JsonLimits::default`]). A guard gives its rules the boundary's limits (the document's
    /// `[limits]`), so every call the boundary reads the flow layer reads too; arguments past
    /// them fail closed (a check denies, an output gets its tool's strictest label).
    #[must_use]
    pub fn with_json_limits(self, limits: JsonLimits) -> Self {
        FlowRules {
            json_limits: limits,
            ..self
        }
    }

    /// The limits raw JSON arguments are read within (see
    /// [`with_json_limits`](Self::with_json_limits)).
    pub fn json_limits(&self) -> JsonLimits {
        self.json_limits
    }

    /// The first rule (in tool order) whose violation escalates to a human, if any: a document
    /// with one must say who endorses flows.
    pub fn first_escalating_rule(&self) -> Option<&RuleId> {
        let mut names: Vec<&String> = self.inner.tools.keys().collect();
        names.sort();
        names.into_iter().find_map(|name| {
            let t = &self.inner.tools[name];
            if let Some(r) = t.args.iter().find(|a| a.action == FlowAction::Escalate) {
                return Some(&r.id);
            }
            if t.action != FlowAction::Escalate {
                return None;
            }
            if let Some(x) = &t.exclusive {
                return Some(x);
            }
            (t.retention.is_some() && !t.args.is_empty()).then_some(&t.retention_rule)
        })
    }

    /// The tier names the rules were compiled against (lowest first).
    pub fn tiers(&self) -> &[String] {
        &self.inner.tiers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers() -> Vec<String> {
        vec!["public".into(), "internal".into(), "phi".into()]
    }

    #[test]
    fn unknown_tier_names_its_path() {
        let p = FlowPolicy::from_toml(
            r#"
            [tools.notes.args.text]
            max_tier = "secret"
            "#,
        )
        .unwrap();
        let e = p.compile(&tiers(), &["notes"]).unwrap_err();
        assert_eq!(e.path(), "tools.notes.args.text.max_tier");
        assert!(e.to_string().contains("unknown tier `secret`"), "{e}");
    }

    #[test]
    fn unknown_tool_and_field_are_refused_with_paths() {
        let p = FlowPolicy::from_toml("[tools.send_mony.args.to]\naccepts = [\"user\"]\n").unwrap();
        let e = p.compile(&tiers(), &["send_money"]).unwrap_err();
        assert_eq!(e.path(), "tools.send_mony");
        let e = FlowPolicy::from_toml("[tools.x.args.to]\naccept = [\"user\"]\n").unwrap_err();
        assert_eq!(e.path(), "tools.x.args.to.accept");
        assert!(e.to_string().contains("unknown field `accept`"), "{e}");
        let e = FlowPolicy::from_toml("[tools.x.args.to]\naccepts = [\"friends\"]\n").unwrap_err();
        assert!(e.path().starts_with("tools.x.args.to.accepts"), "{e}");
    }

    #[test]
    fn senseless_rules_are_refused() {
        for (text, path) in [
            ("[tools.t.args.a]\n", "tools.t.args.a"),
            ("[tools.t.args.a]\naccepts = []\n", "tools.t.args.a.accepts"),
            (
                "[tools.t.args.a]\naccepts = [\"user\"]\nparts = [\"url\"]\n",
                "tools.t.args.a.parts",
            ),
            (
                "[tools.t]\nexclusive_compartment = true\n",
                "tools.t.exclusive_compartment",
            ),
            (
                "[tools.t.args.a]\nsame_compartment = true\n",
                "tools.t.args.a.same_compartment",
            ),
            (
                "[tools.t]\nfields.\"a..b\" = { integrity = \"trusted\" }\n",
                "tools.t.fields.a..b",
            ),
            (
                "[tools.t]\nwhen = [{ arg = \"c\", pattern = \"(\" }]\n",
                "tools.t.when[0].pattern",
            ),
            ("on_violation = \"allow\"\n", "on_violation"),
            ("max_index_bytes = 0\n", "max_index_bytes"),
        ] {
            let p = FlowPolicy::from_toml(text).unwrap();
            let e = p.compile(&tiers(), &["t"]).unwrap_err();
            assert_eq!(e.path(), path, "{text}: {e}");
        }
    }

    #[test]
    fn retention_reads_units_and_words() {
        let p = FlowPolicy::from_toml(
            "tier_retention = { phi = \"task\", internal = \"90d\" }\n[tools.t]\nretention = \"forever\"\n",
        )
        .unwrap();
        assert_eq!(p.tier_retention["phi"], Retention::Task);
        assert_eq!(
            p.tier_retention["internal"],
            Retention::For(Duration::from_secs(90 * 86400))
        );
        assert!(Retention::Task < Retention::For(Duration::from_secs(1)));
        assert!(Retention::For(Duration::from_secs(1)) < Retention::Forever);
        let e = FlowPolicy::from_toml("[tools.t]\nretention = \"30\"\n").unwrap_err();
        assert_eq!(e.path(), "tools.t.retention");
    }

    #[test]
    fn selectors_match_subtrees() {
        let s = parse_selector("*.subject").unwrap();
        assert!(selector_matches(&s, &["0", "subject"]));
        assert!(!selector_matches(&s, &["0", "sender"]));
        let s = parse_selector("**.body").unwrap();
        assert!(selector_matches(&s, &["emails", "3", "body"]));
        assert!(selector_matches(&s, &["body"]));
    }
}
