//! Deployment modes: how far the guard's decisions are acted on, set per tool, role, task type
//! or agent.
//!
//! | mode | what `check` does |
//! |---|---|
//! | [`Mode::Enforce`] | decides and acts on the decision (the default) |
//! | [`Mode::Shadow`] | decides as `enforce` would, records that would-be decision, and lets the call run anyway |
//! | [`Mode::Recommend`] | never lets the call run: it becomes a [`Recommendation`] for a human, who does the work their own way; the framework records what they did with [`Guard::record_human_action`](crate::Guard::record_human_action) |
//! | [`Mode::Supervised`] | every call the pipeline would allow goes to the approval queue first |
//! | [`Mode::Autonomous`] | `enforce`: the document's escalation rules only |
//!
//! In every mode the kill switch, a decision that cannot be recorded (audit failure) and a run
//! started by another guard stay denials: no mode shadows or recommends past them.
//!
//! Rules match on up to four things: the tool, the run's role, its task type and its agent. The
//! rule with the most matchers set that matches wins; among equally specific rules, the first in
//! the document. Two rules with the same matchers are refused (the second could never apply),
//! and so is a rule with none (that is `default`).
//!
//! ```
//! use tollgate::RunContext;
//! use tollgate::mode::{Mode, ModeRule, Modes, ModesSection};
//!
//! let modes = Modes::compile(ModesSection {
//!     default: Mode::Enforce,
//!     rules: vec![
//!         ModeRule::new(Mode::Shadow).tool("refund"),
//!         ModeRule::new(Mode::Recommend).tool("refund").task_type("billing"),
//!     ],
//!     ..ModesSection::default()
//! })?;
//! let billing = RunContext::new("agent-1", "clerk").for_task("billing");
//! let other = RunContext::new("agent-1", "clerk");
//! assert_eq!(modes.resolve(&billing, "refund"), Mode::Recommend); // two matchers beat one
//! assert_eq!(modes.resolve(&other, "refund"), Mode::Shadow);
//! assert_eq!(modes.resolve(&other, "lookup"), Mode::Enforce);
//! # Ok::<(), tollgate::mode::ModeError>(())
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::call::{AgentId, RuleId, RunContext, RunId};
use crate::escalation::Reason;
use crate::verdict::{Denial, DenyCode, PolicyVersion};

/// How far the guard's decisions are acted on (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mode {
    /// Decide and act on the decision.
    #[default]
    Enforce,
    /// Decide, record the would-be decision, let the call run anyway.
    Shadow,
    /// Never run the call: record it as a recommendation for a human.
    Recommend,
    /// Send every call the pipeline would allow to the approval queue.
    Supervised,
    /// Enforce, with the document's escalation rules only.
    Autonomous,
}

impl Mode {
    /// The stable snake_case name (`"shadow"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Recommend => "recommend",
            Mode::Supervised => "supervised",
            Mode::Autonomous => "autonomous",
        }
    }
}

impl Mode {
    /// How much of what the agent proposes may run without a human deciding it, from `0`
    /// (the strictest) up: `recommend` (nothing runs) 0, `supervised` (everything allowed goes
    /// to a human first) 1, `enforce` and `autonomous` (as decided) 2, `shadow` (even denied and
    /// escalated calls run) 3. [`rollout`](crate::rollout) stages go up this order, and a live
    /// demotion never makes a call more permissive than its own `[modes]` rule.
    ///
    /// ```
    /// use tollgate::mode::Mode;
    ///
    /// assert!(Mode::Recommend.permissiveness() < Mode::Supervised.permissiveness());
    /// assert!(Mode::Supervised.permissiveness() < Mode::Enforce.permissiveness());
    /// assert_eq!(Mode::Enforce.permissiveness(), Mode::Autonomous.permissiveness());
    /// assert!(Mode::Autonomous.permissiveness() < Mode::Shadow.permissiveness());
    /// assert_eq!(Mode::Shadow.stricter(Mode::Supervised), Mode::Supervised);
    /// ```
    pub fn permissiveness(self) -> u8 {
        match self {
            Mode::Recommend => 0,
            Mode::Supervised => 1,
            Mode::Enforce | Mode::Autonomous => 2,
            Mode::Shadow => 3,
        }
    }

    /// The stricter (less [permissive](Self::permissiveness)) of `self` and `other`; `self`
    /// when they are equally strict.
    pub fn stricter(self, other: Mode) -> Mode {
        if other.permissiveness() < self.permissiveness() {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One mode rule: the matchers it sets (all must match) and the mode it gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModeRule {
    /// The tool's exact name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The run's role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The run's task type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// The run's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The mode the rule gives.
    pub mode: Mode,
}

impl ModeRule {
    /// A rule giving `mode`, matching nothing yet (add matchers).
    pub fn new(mode: Mode) -> Self {
        Self {
            tool: None,
            role: None,
            task_type: None,
            agent: None,
            mode,
        }
    }

    /// Matches calls of `tool`.
    pub fn tool(mut self, tool: impl Into<String>) -> Self {
        self.tool = Some(tool.into());
        self
    }

    /// Matches runs in `role`.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Matches runs of `task_type`.
    pub fn task_type(mut self, task_type: impl Into<String>) -> Self {
        self.task_type = Some(task_type.into());
        self
    }

    /// Matches runs of `agent`.
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// How many matchers the rule sets (its specificity).
    pub fn specificity(&self) -> usize {
        [&self.tool, &self.role, &self.task_type, &self.agent]
            .iter()
            .filter(|m| m.is_some())
            .count()
    }

    /// Whether every matcher the rule sets matches.
    pub fn matches(&self, ctx: &RunContext, tool: &str) -> bool {
        let is = |m: &Option<String>, v: Option<&str>| m.as_deref().is_none_or(|m| Some(m) == v);
        is(&self.tool, Some(tool))
            && is(&self.role, Some(ctx.role().as_str()))
            && is(&self.task_type, ctx.task_type().map(|t| t.as_str()))
            && is(&self.agent, Some(ctx.agent().as_str()))
    }

    fn same_matchers(&self, other: &ModeRule) -> bool {
        self.tool == other.tool
            && self.role == other.role
            && self.task_type == other.task_type
            && self.agent == other.agent
    }
}

/// The document's `[modes]` section: the default mode and the rules.
///
/// ```toml
/// [modes]
/// default = "enforce"
/// rules = [
///   { tool = "refund", mode = "shadow" },
///   { tool = "refund", task_type = "billing", mode = "recommend" },
///   { role = "intern", mode = "supervised" },
/// ]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModesSection {
    /// The mode where no rule matches (default `enforce`).
    #[serde(default)]
    pub default: Mode,
    /// The rules; the most specific match wins, ties by order.
    #[serde(default)]
    pub rules: Vec<ModeRule>,
    /// How many recommendations one run keeps waiting for a human's action (default
    /// [`DEFAULT_MAX_PENDING_RECOMMENDATIONS`]; at least 1). Each holds the proposed arguments;
    /// past the bound the oldest unanswered one is dropped from memory (its record stays in the
    /// audit trail) and a human action on it is refused as
    /// [`RecommendationExpired`](crate::GuardError::RecommendationExpired), so a run in
    /// `recommend` mode cannot grow without bound however many calls its agent proposes.
    #[serde(default = "default_max_pending_recommendations")]
    pub max_pending_recommendations: usize,
}

/// The default of [`ModesSection::max_pending_recommendations`].
pub const DEFAULT_MAX_PENDING_RECOMMENDATIONS: usize = 1024;

fn default_max_pending_recommendations() -> usize {
    DEFAULT_MAX_PENDING_RECOMMENDATIONS
}

impl Default for ModesSection {
    fn default() -> Self {
        Self {
            default: Mode::default(),
            rules: Vec::new(),
            max_pending_recommendations: DEFAULT_MAX_PENDING_RECOMMENDATIONS,
        }
    }
}

/// A [`ModesSection`] that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModeError {
    /// A rule is malformed; `path` is its place in the document (`modes.rules[2].tool`).
    #[error("`{path}`: {reason}")]
    Invalid {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ModeError {
    /// The document path at fault.
    pub fn path(&self) -> &str {
        match self {
            ModeError::Invalid { path, .. } => path,
        }
    }

    /// Why.
    pub fn reason(&self) -> &str {
        match self {
            ModeError::Invalid { reason, .. } => reason,
        }
    }

    fn invalid(path: String, reason: impl Into<String>) -> Self {
        ModeError::Invalid {
            path,
            reason: reason.into(),
        }
    }
}

/// A compiled [`ModesSection`]: resolves the mode of one call. Cheap to clone.
#[derive(Debug, Clone, PartialEq)]
pub struct Modes {
    inner: Arc<ModesInner>,
}

#[derive(Debug, PartialEq)]
struct ModesInner {
    section: ModesSection,
    /// Rule indexes, most specific first, ties in document order.
    order: Vec<usize>,
    /// `modes.rules[i]` for each rule, `modes.default` last.
    ids: Vec<RuleId>,
}

impl Modes {
    /// Compiles `section`: refuses rules with no matcher, empty matchers, and a rule with the
    /// same matchers as an earlier one (it could never apply).
    pub fn compile(section: ModesSection) -> Result<Self, ModeError> {
        if section.max_pending_recommendations == 0 {
            return Err(ModeError::Invalid {
                path: "modes.max_pending_recommendations".into(),
                reason: "must be at least 1".into(),
            });
        }
        for (i, rule) in section.rules.iter().enumerate() {
            let at = |f: &str| format!("modes.rules[{i}].{f}");
            if rule.specificity() == 0 {
                return Err(ModeError::invalid(
                    format!("modes.rules[{i}]"),
                    "matches every call: set `tool`, `role`, `task_type` or `agent` (or use \
                     `modes.default`)",
                ));
            }
            for (f, v) in [
                ("tool", &rule.tool),
                ("role", &rule.role),
                ("task_type", &rule.task_type),
                ("agent", &rule.agent),
            ] {
                if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(ModeError::invalid(at(f), "must not be empty"));
                }
            }
            if let Some(j) = section.rules[..i]
                .iter()
                .position(|r| r.same_matchers(rule))
            {
                return Err(ModeError::invalid(
                    format!("modes.rules[{i}]"),
                    format!("has the same matchers as `modes.rules[{j}]`, which always wins"),
                ));
            }
        }
        let mut order: Vec<usize> = (0..section.rules.len()).collect();
        // Stable: equally specific rules keep document order.
        order.sort_by_key(|&i| std::cmp::Reverse(section.rules[i].specificity()));
        let mut ids: Vec<RuleId> = (0..section.rules.len())
            .map(|i| RuleId::new(format!("modes.rules[{i}]")))
            .collect();
        ids.push(RuleId::new("modes.default"));
        Ok(Modes {
            inner: Arc::new(ModesInner {
                section,
                order,
                ids,
            }),
        })
    }

    /// Every call in `mode`, no rules.
    pub fn all(mode: Mode) -> Self {
        Self::compile(ModesSection {
            default: mode,
            ..ModesSection::default()
        })
        .unwrap_or_else(|_| unreachable!("a section without rules always compiles"))
    }

    /// The section compiled.
    pub fn section(&self) -> &ModesSection {
        &self.inner.section
    }

    /// How many recommendations a run keeps waiting for a human's action
    /// ([`ModesSection::max_pending_recommendations`]).
    pub fn max_pending_recommendations(&self) -> usize {
        self.inner.section.max_pending_recommendations
    }

    /// The mode of a call of `tool` in a run with `ctx`.
    pub fn resolve(&self, ctx: &RunContext, tool: &str) -> Mode {
        self.resolve_rule(ctx, tool).0
    }

    /// The mode and the id of the rule that gave it (`modes.rules[i]` or `modes.default`).
    pub fn resolve_rule(&self, ctx: &RunContext, tool: &str) -> (Mode, &RuleId) {
        let inner = &*self.inner;
        for &i in &inner.order {
            let rule = &inner.section.rules[i];
            if rule.matches(ctx, tool) {
                return (rule.mode, &inner.ids[i]);
            }
        }
        (inner.section.default, &inner.ids[inner.section.rules.len()])
    }

    /// Whether any call could be in `mode`.
    pub fn uses(&self, mode: Mode) -> bool {
        self.inner.section.default == mode
            || self.inner.section.rules.iter().any(|r| r.mode == mode)
    }

    /// The path of the first place that sets `mode` (`modes.default` or `modes.rules[i].mode`).
    pub(crate) fn first_use(&self, mode: Mode) -> Option<String> {
        let s = &self.inner.section;
        if s.default == mode {
            return Some("modes.default".into());
        }
        s.rules
            .iter()
            .position(|r| r.mode == mode)
            .map(|i| format!("modes.rules[{i}].mode"))
    }
}

/// What `enforce` would have decided for a call a non-enforcing mode let through (shadow) or
/// turned into a recommendation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WouldBe {
    /// It would have been allowed.
    Allow,
    /// It would have gone to a human, for these reasons (nothing was queued).
    Escalate {
        /// The rules that would have sent it, with their texts.
        reasons: Vec<Reason>,
    },
    /// It would have been denied.
    Deny(Denial),
}

impl WouldBe {
    /// `"allow"`, `"escalate"` or `"deny"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            WouldBe::Allow => "allow",
            WouldBe::Escalate { .. } => "escalate",
            WouldBe::Deny(_) => "deny",
        }
    }

    /// The deny code, for a would-be denial.
    pub fn deny_code(&self) -> Option<DenyCode> {
        match self {
            WouldBe::Deny(d) => Some(d.code()),
            _ => None,
        }
    }

    /// The rule that would have decided (the first escalation rule, or the denying rule).
    pub fn rule(&self) -> Option<&RuleId> {
        match self {
            WouldBe::Allow => None,
            WouldBe::Escalate { reasons } => reasons.first().map(|r| &r.rule),
            WouldBe::Deny(d) => Some(d.rule()),
        }
    }

    /// The explanation (the denial's reason, or the escalation reasons joined).
    pub fn reason(&self) -> Option<String> {
        match self {
            WouldBe::Allow => None,
            WouldBe::Escalate { reasons } => Some(
                reasons
                    .iter()
                    .map(|r| &*r.text)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            WouldBe::Deny(d) => Some(d.reason().to_owned()),
        }
    }
}

/// A call a run in [`Mode::Recommend`] proposed: not executed, recorded for a human who does the
/// work their own way. Carried by the [`DenyCode::Recommended`] denial `check` returns
/// ([`Denial::recommendation`]); report what the human did with
/// [`Guard::record_human_action`](crate::Guard::record_human_action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Recommendation {
    /// Unique within the guard; links the human's action to it.
    pub id: Arc<str>,
    /// The run that proposed it.
    pub run: RunId,
    /// The run's agent.
    pub agent: AgentId,
    /// The tool the agent wanted to call.
    pub tool: String,
    /// The framework's call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// The arguments, with the values the policy marks secret replaced by a placeholder
    /// (unparseable or oversized arguments are a placeholder whole).
    pub args: serde_json::Value,
    /// What `enforce` would have decided.
    pub would_be: WouldBe,
    /// The policy the recommendation was made under.
    pub policy_version: PolicyVersion,
}

/// What a human actually did about a [`Recommendation`] (see
/// [`Guard::record_human_action`](crate::Guard::record_human_action)).
///
/// ```
/// use serde_json::json;
/// use tollgate::mode::HumanAction;
///
/// let did = HumanAction::call("refund", json!({"invoice": 7, "amount": 40})).note("partial refund");
/// let declined = HumanAction::nothing().note("not a refund case");
/// assert_eq!(did.tool.as_deref(), Some("refund"));
/// assert!(declined.tool.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct HumanAction {
    /// The tool (or action) the human used; `None`: they did nothing.
    pub tool: Option<String>,
    /// Its arguments as the human gave them (recorded under the policy's marks for that tool).
    pub args: Option<serde_json::Value>,
    /// Their note.
    pub note: Option<String>,
}

impl HumanAction {
    /// The human called `tool` with `args`.
    pub fn call(tool: impl Into<String>, args: serde_json::Value) -> Self {
        Self {
            tool: Some(tool.into()),
            args: Some(args),
            note: None,
        }
    }

    /// The human did nothing.
    pub fn nothing() -> Self {
        Self::default()
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }
}
