//! The escalation policy document: approver groups, default approval parameters and the rules
//! that send a call to a human. Written in TOML or JSON, or assembled in code with the builder
//! methods; both routes go through the same validation in
//! [`EscalationGate::compile`](super::EscalationGate::compile).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::boundary::{ArgLimits, Effect};
use crate::units::Money;

use super::error::EscalationPolicyError;
use super::serde_util::unique_keys;

/// A whole escalation policy. See the [module docs](super) for the model and an example.
///
/// Unknown fields anywhere are rejected, so a typo (`qourum = 2`) is an error rather than a rule
/// that silently does not apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationPolicy {
    /// A human label (part of the gate's version hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Approver groups by name: the principal ids (as [`Approver::id`](super::Approver)) allowed
    /// to decide at a chain level naming the group.
    #[serde(default, deserialize_with = "unique_keys")]
    pub groups: BTreeMap<String, Vec<String>>,
    /// Parameters for rules that do not set their own.
    #[serde(default)]
    pub defaults: RuleParams,
    /// Limits for reading raw JSON arguments. Unset: the boundary's limits when compiled with
    /// [`EscalationGate::for_boundary`](super::EscalationGate::for_boundary), else 64 KiB and
    /// depth 32. Arguments that cannot be read make every argument condition match (escalate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ArgLimits>,
    /// The rules, in priority order (see [`EscalationGate::escalation`](super::EscalationGate::escalation)
    /// for how the parameters of several matching rules combine). At most 64.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// How the approval queue treats requests and grants (`[escalation.approvals]`); every field
    /// has a default. [`QueueConfig::for_gate`](super::QueueConfig::for_gate) reads it.
    #[serde(default, skip_serializing_if = "ApprovalSettings::is_default")]
    pub approvals: ApprovalSettings,
}

impl EscalationPolicy {
    /// An empty policy: no rule, so nothing escalates.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the policy.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Defines (or replaces) an approver group.
    pub fn group<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        members: impl IntoIterator<Item = S>,
    ) -> Self {
        self.groups
            .insert(name.into(), members.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the default parameters.
    pub fn defaults(mut self, defaults: RuleParams) -> Self {
        self.defaults = defaults;
        self
    }

    /// Sets the raw-argument limits.
    pub fn limits(mut self, limits: ArgLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Appends a rule.
    pub fn rule(mut self, rule: RuleSpec) -> Self {
        self.rules.push(rule);
        self
    }

    /// Sets the approval queue settings.
    pub fn approvals(mut self, approvals: ApprovalSettings) -> Self {
        self.approvals = approvals;
        self
    }

    /// Parses a JSON document (not yet compiled).
    pub fn from_json(text: &str) -> Result<Self, EscalationPolicyError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let doc: Self = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            EscalationPolicyError::Parse {
                format: "JSON",
                field: e.path().to_string(),
                message: e.inner().to_string(),
            }
        })?;
        de.end().map_err(|e| EscalationPolicyError::Parse {
            format: "JSON",
            field: ".".into(),
            message: e.to_string(),
        })?;
        Ok(doc)
    }

    /// Reads a policy file: `.toml` as TOML (with the `toml` feature), anything else as JSON.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, EscalationPolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| EscalationPolicyError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        #[cfg(feature = "toml")]
        if path.extension().is_some_and(|e| e == "toml") {
            return Self::from_toml(&text);
        }
        Self::from_json(&text)
    }

    /// Parses a TOML document (not yet compiled).
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, EscalationPolicyError> {
        let de = toml::Deserializer::parse(text).map_err(|e| EscalationPolicyError::Parse {
            format: "TOML",
            field: ".".into(),
            message: e.to_string(),
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| EscalationPolicyError::Parse {
            format: "TOML",
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })
    }
}

/// The approval queue's settings besides the approver groups (`[escalation.approvals]`):
///
/// ```toml
/// [escalation.approvals]
/// separation_of_duties = true   # default
/// grant_ttl = "15m"             # default "1h"
/// max_pending = 500             # default 10 000
/// ```
///
/// Validated when the gate is compiled (`approvals.grant_ttl`: 1 s to 366 days;
/// `approvals.max_pending`: at least 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalSettings {
    /// Refuse decisions by the principal who triggered the run, or by the acting agent's id
    /// (default `true`).
    pub separation_of_duties: bool,
    /// How long an approval stays consumable, from the approval (default `"1h"`).
    #[serde(with = "crate::units::duration")]
    pub grant_ttl: Duration,
    /// Most pending requests; further submissions fail with
    /// [`QueueError::Full`](super::QueueError::Full) (default 10 000).
    pub max_pending: usize,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            separation_of_duties: true,
            grant_ttl: Duration::from_secs(3600),
            max_pending: 10_000,
        }
    }
}

impl ApprovalSettings {
    /// The defaults: separation of duties, grants consumable for an hour, 10 000 pending
    /// requests at most.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether these are the defaults (then a serialised policy leaves the section out).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Sets separation of duties.
    pub fn separation_of_duties(mut self, on: bool) -> Self {
        self.separation_of_duties = on;
        self
    }

    /// Sets how long an approval stays consumable.
    pub fn grant_ttl(mut self, ttl: Duration) -> Self {
        self.grant_ttl = ttl;
        self
    }

    /// Sets the most pending requests.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }
}

/// Approval parameters: how long humans have, what a timeout means, how many must approve and
/// who is asked when. Every field is optional; unset fields fall back to
/// [`EscalationPolicy::defaults`], then to a timeout of one hour
/// ([`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT)), `on_timeout = "deny"` and a quorum of 1. A
/// chain has no built-in default: a rule needs its own or the defaults'.
///
/// ```toml
/// defaults = { timeout = "1h", chain = [{ group = "finance" }, { group = "cfo", after = "30m" }] }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleParams {
    /// Time from creation until an undecided request times out (`"15m"`, `"1h"`; above zero, at
    /// most 366 days).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// What a timeout means (default: deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// Distinct approvers needed (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// The escalation chain: who is asked first, and who after how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<LevelSpec>>,
}

impl RuleParams {
    /// No parameter set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets what a timeout means.
    pub fn on_timeout(mut self, on: OnTimeout) -> Self {
        self.on_timeout = Some(on);
        self
    }

    /// Sets the quorum.
    pub fn quorum(mut self, k: u32) -> Self {
        self.quorum = Some(k);
        self
    }

    /// Sets the chain.
    pub fn chain(mut self, levels: impl IntoIterator<Item = LevelSpec>) -> Self {
        self.chain = Some(levels.into_iter().collect());
        self
    }
}

/// What an undecided request becomes at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// The request is denied (default).
    #[default]
    Deny,
    /// The request is approved: "proceed unless someone objects in time". Meant for
    /// deceleration and low-stakes rules; a request also matched by a deny-on-timeout rule is
    /// denied on timeout.
    Approve,
}

/// One level of an escalation chain: `{ group = "finance" }`, `{ group = "cfo", after = "30m" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSpec {
    /// The approver group asked at this level.
    pub group: String,
    /// How long after the request's creation an undecided request reaches this level (default
    /// zero). The first level's must be zero; later ones must increase and stay below the
    /// timeout.
    #[serde(
        default,
        with = "crate::units::duration",
        skip_serializing_if = "Duration::is_zero"
    )]
    pub after: Duration,
}

impl LevelSpec {
    /// The first level: `group` is asked as soon as the request exists.
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            after: Duration::ZERO,
        }
    }

    /// A later level: `group` is asked once the request has been undecided for `after`.
    pub fn after(group: impl Into<String>, after: Duration) -> Self {
        Self {
            group: group.into(),
            after,
        }
    }
}

/// One escalation rule: when it applies, and the approval parameters it asks for.
///
/// ```
/// use std::time::Duration;
/// use tollgate::escalation::{Condition, LevelSpec, RuleSpec};
///
/// let rule = RuleSpec::new("large-payment", Condition::amount_over("payment.amount", 1_000))
///     .tools(["pay_invoice"])
///     .reason("payments over 1000 need two approvers from finance")
///     .quorum(2)
///     .timeout(Duration::from_secs(4 * 3600))
///     .chain([
///         LevelSpec::new("finance"),
///         LevelSpec::after("cfo", Duration::from_secs(30 * 60)),
///     ]);
/// assert_eq!(rule.quorum, Some(2));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// The rule's id, carried by every reason and audit record it produces. Unique; ASCII
    /// letters, digits and `_ - . :`.
    pub id: String,
    /// Human text shown to approvers; generated from the condition when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The tools the rule concerns (exact names); absent = every tool. Calls of other tools never
    /// evaluate the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// The condition that makes a call escalate.
    pub when: Condition,
    /// Overrides [`RuleParams::timeout`] (`timeout = "15m"`).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Overrides [`RuleParams::on_timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
    /// Overrides [`RuleParams::quorum`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// Overrides [`RuleParams::chain`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<LevelSpec>>,
}

impl RuleSpec {
    /// A rule `id` that fires `when` the condition holds, for every tool, with default parameters.
    pub fn new(id: impl Into<String>, when: Condition) -> Self {
        Self {
            id: id.into(),
            reason: None,
            tools: None,
            when,
            timeout: None,
            on_timeout: None,
            quorum: None,
            chain: None,
        }
    }

    /// Scopes the rule to these tools.
    pub fn tools<S: Into<String>>(mut self, tools: impl IntoIterator<Item = S>) -> Self {
        self.tools = Some(tools.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the human reason.
    pub fn reason(mut self, text: impl Into<String>) -> Self {
        self.reason = Some(text.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets what a timeout means.
    pub fn on_timeout(mut self, on: OnTimeout) -> Self {
        self.on_timeout = Some(on);
        self
    }

    /// Sets the quorum.
    pub fn quorum(mut self, k: u32) -> Self {
        self.quorum = Some(k);
        self
    }

    /// Sets the chain.
    pub fn chain(mut self, levels: impl IntoIterator<Item = LevelSpec>) -> Self {
        self.chain = Some(levels.into_iter().collect());
        self
    }
}

/// Whether a condition whose input was not given escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfMissing {
    /// The condition holds: the call escalates (fail closed).
    Escalate,
    /// The condition does not hold.
    Ignore,
}

/// When a rule fires. In documents: `when = { amount = { path = "amount", over = "1000.00" } }`,
/// `when = { all = [ { effect_at_least = "irreversible" }, { flag = "ambiguous" } ] }`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// A numeric argument over a threshold (fixed, or per currency).
    Amount(AmountCondition),
    /// The tool's data tier is this tier or a more sensitive one. A call whose tier is not given
    /// (or not in the tier list) escalates.
    TierAtLeast(String),
    /// The tool's effect is at least this (`read` < `write` < `irreversible`).
    EffectAtLeast(Effect),
    /// The agent's confidence is below a floor.
    Confidence(ConfidenceCondition),
    /// The caller set this flag on the call (e.g. `ambiguous`, `anomaly`, `tainted`).
    Flag(String),
    /// The run's budget usage fraction reached a threshold (deceleration).
    BudgetUsed(BudgetCondition),
    /// Every condition holds.
    All(Vec<Condition>),
    /// At least one condition holds.
    Any(Vec<Condition>),
}

impl Condition {
    /// The number at `path` (dotted, e.g. `payment.amount`) is over `threshold` (an integer, a
    /// [`Money`] parsed from `"1000.50"`, or a `rust_decimal::Decimal`).
    pub fn amount_over(path: impl Into<String>, threshold: impl Into<Money>) -> Self {
        Condition::Amount(AmountCondition::over(path, threshold))
    }

    /// The number at `path` is over the threshold listed for the currency named by the string at
    /// `currency_path`; a missing or unlisted currency escalates.
    pub fn amount_over_by_currency<S: Into<String>, M: Into<Money>>(
        path: impl Into<String>,
        currency_path: impl Into<String>,
        thresholds: impl IntoIterator<Item = (S, M)>,
    ) -> Self {
        Condition::Amount(AmountCondition::over_by_currency(
            path,
            currency_path,
            thresholds,
        ))
    }

    /// The tool's tier is `tier` or above.
    pub fn tier_at_least(tier: impl Into<String>) -> Self {
        Condition::TierAtLeast(tier.into())
    }

    /// The tool's effect is at least `effect`.
    pub fn effect_at_least(effect: Effect) -> Self {
        Condition::EffectAtLeast(effect)
    }

    /// The tool is irreversible.
    pub fn irreversible() -> Self {
        Condition::EffectAtLeast(Effect::Irreversible)
    }

    /// The agent's confidence is below `floor` (a call without confidence escalates).
    pub fn confidence_below(floor: f64) -> Self {
        Condition::Confidence(ConfidenceCondition {
            below: floor,
            if_missing: None,
        })
    }

    /// The caller set `flag`.
    pub fn flag(flag: impl Into<String>) -> Self {
        Condition::Flag(flag.into())
    }

    /// The run used at least `fraction` (0 < fraction <= 1) of its budget.
    pub fn budget_used_at_least(fraction: f64) -> Self {
        Condition::BudgetUsed(BudgetCondition {
            at_least: fraction,
            if_missing: None,
        })
    }

    /// Every condition holds.
    pub fn all(conds: impl IntoIterator<Item = Condition>) -> Self {
        Condition::All(conds.into_iter().collect())
    }

    /// Any condition holds.
    pub fn any(conds: impl IntoIterator<Item = Condition>) -> Self {
        Condition::Any(conds.into_iter().collect())
    }
}

impl From<AmountCondition> for Condition {
    fn from(c: AmountCondition) -> Self {
        Condition::Amount(c)
    }
}

impl From<ConfidenceCondition> for Condition {
    fn from(c: ConfidenceCondition) -> Self {
        Condition::Confidence(c)
    }
}

impl From<BudgetCondition> for Condition {
    fn from(c: BudgetCondition) -> Self {
        Condition::BudgetUsed(c)
    }
}

/// A numeric argument over a threshold.
///
/// Exactly one of `over` or (`currency_path` and `over_by_currency`) is set. Thresholds are exact
/// decimals ([`Money`]): a string (`over = "100.10"`) or an integer (`over = 100`), never a float
/// literal; not negative; at most 15 significant digits (so that every comparison with an
/// argument is exact, see [`EscalationGate`](super::EscalationGate)).
///
/// The amount escalates when it is strictly greater than the threshold, and also when it is not
/// a finite JSON number (a string such as `"1500"`, `null`, an object) or cannot be compared
/// exactly (integers beyond 64 bits, decimals with more than 15 significant digits at the
/// threshold). Comparison is on the signed value: bound negative amounts with the boundary's
/// `min`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountCondition {
    /// Dotted path of the amount (`amount`, `payment.amount`). Array paths are not supported.
    pub path: String,
    /// A threshold for every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<Money>,
    /// Dotted path of the currency code (a string, compared exactly: `usd` is not `USD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_path: Option<String>,
    /// A threshold per currency code.
    #[serde(
        default,
        deserialize_with = "super::serde_util::unique_keys_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub over_by_currency: Option<BTreeMap<String, Money>>,
    /// When the amount is absent (default: escalate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_missing: Option<IfMissing>,
}

impl AmountCondition {
    /// The number at `path` over `threshold`.
    pub fn over(path: impl Into<String>, threshold: impl Into<Money>) -> Self {
        Self {
            path: path.into(),
            over: Some(threshold.into()),
            currency_path: None,
            over_by_currency: None,
            if_missing: None,
        }
    }

    /// The number at `path` over the threshold for the currency at `currency_path`.
    pub fn over_by_currency<S: Into<String>, M: Into<Money>>(
        path: impl Into<String>,
        currency_path: impl Into<String>,
        thresholds: impl IntoIterator<Item = (S, M)>,
    ) -> Self {
        Self {
            path: path.into(),
            over: None,
            currency_path: Some(currency_path.into()),
            over_by_currency: Some(
                thresholds
                    .into_iter()
                    .map(|(c, t)| (c.into(), t.into()))
                    .collect(),
            ),
            if_missing: None,
        }
    }

    /// What an absent amount means.
    pub fn if_missing(mut self, m: IfMissing) -> Self {
        self.if_missing = Some(m);
        self
    }
}

/// The agent's confidence below a floor. A confidence outside `0..=1` or NaN escalates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfidenceCondition {
    /// The floor, in `0..=1`: a confidence strictly below it escalates.
    pub below: f64,
    /// A call that gives no confidence (default: escalate, since the agent controls whether it
    /// gives one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_missing: Option<IfMissing>,
}

impl ConfidenceCondition {
    /// Confidence below `floor`.
    pub fn below(floor: f64) -> Self {
        Self {
            below: floor,
            if_missing: None,
        }
    }

    /// What a call without confidence means.
    pub fn if_missing(mut self, m: IfMissing) -> Self {
        self.if_missing = Some(m);
        self
    }
}

/// Deceleration: the run's budget usage fraction at or above a threshold. A NaN usage escalates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetCondition {
    /// The threshold, in `(0, 1]`.
    pub at_least: f64,
    /// A call whose usage is not given (default: ignore, since the usage comes from the guard's
    /// own budget accounting, not from the agent, and a run without a budget has nothing to
    /// decelerate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_missing: Option<IfMissing>,
}

impl BudgetCondition {
    /// Usage at or above `fraction`.
    pub fn at_least(fraction: f64) -> Self {
        Self {
            at_least: fraction,
            if_missing: None,
        }
    }

    /// What a call without a usage figure means.
    pub fn if_missing(mut self, m: IfMissing) -> Self {
        self.if_missing = Some(m);
        self
    }
}
