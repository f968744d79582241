//! The compiled gate: which rules a call matches, and what approval the matches ask for.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::boundary::hash::NameTable;
use crate::boundary::{ActionBoundary, Effect};
use crate::call::json::{JsonLimits, RawJson};
use crate::call::{Args, RuleId, ToolCall};
use crate::verdict::PolicyVersion;

use super::error::EscalationPolicyError as PolicyErr;
use super::policy::{ApprovalSettings, EscalationPolicy, OnTimeout};
use super::request::{ApproverGroups, Reason};
use crate::boundary::view::{StrView, View};

mod compile;
use compile::Compiler;

/// Most rules one gate holds: a match is a 64-bit set of rule indices, so evaluating a call
/// never allocates.
pub const MAX_RULES: usize = 64;

/// Timeout of a rule that sets none and whose policy has no default: one hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest accepted timeout, chain delay and grant lifetime: 366 days.
const MAX_TIMEOUT: Duration = Duration::from_secs(366 * 86_400);
/// Most levels in a chain.
const MAX_LEVELS: usize = 16;
/// Deepest nesting of `all` / `any`.
const MAX_CONDITION_DEPTH: usize = 16;
/// Most segments in an argument path.
const MAX_PATH_SEGMENTS: usize = 16;
/// Largest raw-argument limit accepted (the boundary's own cap).
const MAX_ARG_BYTES_CAP: usize = 1 << 20;

/// Everything the gate looks at for one call. Borrowed; building one does not allocate.
///
/// ```
/// use tollgate::boundary::Effect;
/// use tollgate::escalation::GateInput;
///
/// let flags = ["ambiguous"];
/// let input = GateInput::new("pay_invoice", Effect::Irreversible, r#"{"amount": 1200}"#)
///     .tier(1)
///     .confidence(0.62)
///     .flags(&flags)
///     .budget_used(0.4);
/// assert_eq!(input.tool(), "pay_invoice");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GateInput<'a> {
    tool: &'a str,
    effect: Effect,
    tier: Option<usize>,
    args: Args<'a>,
    confidence: Option<f64>,
    flags: &'a [&'a str],
    budget_used: Option<f64>,
}

impl<'a> GateInput<'a> {
    /// A call of `tool`, whose effect is `effect`, with `args` (`&Value`, raw JSON `&str`, or
    /// [`Args::None`]). No tier, confidence, flags or budget usage yet.
    pub fn new(tool: &'a str, effect: Effect, args: impl Into<Args<'a>>) -> Self {
        Self {
            tool,
            effect,
            tier: None,
            args: args.into(),
            confidence: None,
            flags: &[],
            budget_used: None,
        }
    }

    /// The tool name, arguments and confidence of `call`, with the tool's `effect`.
    pub fn from_call(call: &ToolCall<'a>, effect: Effect) -> Self {
        let mut input = Self::new(call.tool(), effect, call.args());
        input.confidence = call.confidence().map(f64::from);
        input
    }

    /// The tool's data tier, as an index into the tier list the gate was compiled with (least
    /// sensitive first). See [`EscalationGate::tier_index`].
    pub fn tier(mut self, index: usize) -> Self {
        self.tier = Some(index);
        self
    }

    /// The agent's confidence in this step, in `0..=1`.
    pub fn confidence(mut self, c: f64) -> Self {
        self.confidence = Some(c);
        self
    }

    /// Flags the caller sets on this call (`ambiguous`, `anomaly`, `tainted`, ...).
    pub fn flags(mut self, flags: &'a [&'a str]) -> Self {
        self.flags = flags;
        self
    }

    /// The fraction of the run's budget used so far (0..1; above 1 means overspent).
    pub fn budget_used(mut self, fraction: f64) -> Self {
        self.budget_used = Some(fraction);
        self
    }

    /// The tool name.
    pub fn tool(&self) -> &'a str {
        self.tool
    }

    /// The arguments.
    pub fn args(&self) -> Args<'a> {
        self.args
    }
}

/// The rules one call matched: a set of rule indices (document order). `Copy`, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Matched(u64);

impl Matched {
    /// No rule matched.
    pub const NONE: Matched = Matched(0);

    /// Whether no rule matched (the call does not escalate).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many rules matched.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether rule `index` (its position in the policy's `rules`) matched.
    pub fn contains(self, index: usize) -> bool {
        index < 64 && self.0 & (1 << index) != 0
    }

    /// The matched rule indices, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }

    /// The raw bit set (bit `i` = rule `i`).
    pub fn bits(self) -> u64 {
        self.0
    }
}

/// One level of a request's escalation chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    /// The approver group asked at this level.
    pub group: String,
    /// How long after the request's creation an undecided request reaches this level.
    pub after: Duration,
}

impl Level {
    /// `group` asked at `after` from creation.
    pub fn new(group: impl Into<String>, after: Duration) -> Self {
        Self {
            group: group.into(),
            after,
        }
    }
}

/// The approval a request needs: timeout, timeout outcome, quorum and chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalParams {
    /// Time from creation to the deadline.
    pub timeout: Duration,
    /// What the deadline means for an undecided request.
    pub on_timeout: OnTimeout,
    /// Distinct approvers needed.
    pub quorum: u32,
    /// Who is asked, and when.
    pub chain: Vec<Level>,
}

impl ApprovalParams {
    /// `chain` with `timeout`, a quorum of 1 and deny on timeout.
    pub fn new(timeout: Duration, chain: impl IntoIterator<Item = Level>) -> Self {
        Self {
            timeout,
            on_timeout: OnTimeout::Deny,
            quorum: 1,
            chain: chain.into_iter().collect(),
        }
    }

    /// Sets the quorum.
    pub fn quorum(mut self, k: u32) -> Self {
        self.quorum = k;
        self
    }

    /// Sets the timeout outcome.
    pub fn on_timeout(mut self, on: OnTimeout) -> Self {
        self.on_timeout = on;
        self
    }
}

/// What a set of matched rules asks for: every reason, and the combined approval parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// The rules that matched.
    pub matched: Matched,
    /// One reason per matched rule, in document order.
    pub reasons: Vec<Reason>,
    /// The combined parameters.
    pub params: ApprovalParams,
}

impl Escalation {
    /// An escalation raised by the application itself rather than by a gate rule.
    pub fn manual(reason: Reason, params: ApprovalParams) -> Self {
        Self {
            matched: Matched::NONE,
            reasons: vec![reason],
            params,
        }
    }
}

#[derive(Debug)]
enum Threshold {
    Fixed(f64),
    ByCurrency {
        path: Box<[Box<str>]>,
        over: Box<[(Box<str>, f64)]>,
    },
}

#[derive(Debug)]
enum Cond {
    Amount {
        path: Box<[Box<str>]>,
        threshold: Threshold,
        missing: bool,
    },
    TierAtLeast(usize),
    EffectAtLeast(Effect),
    ConfidenceBelow {
        below: f64,
        missing: bool,
    },
    Flag(Box<str>),
    BudgetAtLeast {
        at_least: f64,
        missing: bool,
    },
    All(Box<[Cond]>),
    Any(Box<[Cond]>),
}

#[derive(Debug)]
struct Rule {
    reason: Reason,
    cond: Cond,
    timeout: Duration,
    on_timeout: OnTimeout,
    quorum: u32,
    chain: Vec<Level>,
}

/// A compiled, immutable set of escalation rules. See the [module docs](super).
///
/// Evaluating a call ([`evaluate`](Self::evaluate)) borrows the call, never allocates and never
/// blocks; calls of tools no rule concerns cost one table lookup.
#[derive(Debug)]
pub struct EscalationGate {
    rules: Vec<Rule>,
    /// Rules without a tool scope.
    unscoped: u64,
    /// Rules whose condition reads arguments.
    needs_args: u64,
    tool_index: NameTable,
    per_tool: Vec<u64>,
    groups: ApproverGroups,
    tiers: Vec<String>,
    limits: JsonLimits,
    version: PolicyVersion,
    default_params: Option<ApprovalParams>,
    policy: Arc<EscalationPolicy>,
}

impl EscalationGate {
    /// Validates `policy` against the boundary's tier list (`tiers`, least to most sensitive)
    /// and compiles it. Errors name the field at fault.
    pub fn compile(policy: EscalationPolicy, tiers: &[String]) -> Result<Self, PolicyErr> {
        Compiler::new(&policy, tiers, None, None)?.finish(policy)
    }

    /// Like [`compile`](Self::compile), taking the tiers and raw-argument limits from `boundary`
    /// and refusing rules scoped to tools the boundary does not define.
    pub fn for_boundary(
        policy: EscalationPolicy,
        boundary: &ActionBoundary,
    ) -> Result<Self, PolicyErr> {
        let doc = boundary.document();
        let tools: BTreeSet<&str> = doc.tools.keys().map(String::as_str).collect();
        Compiler::new(&policy, &doc.tiers, Some(&tools), Some(doc.limits))?.finish(policy)
    }

    /// The approval the policy's `defaults` describe (chain, timeout, quorum, timeout outcome),
    /// for escalations raised outside the gate's rules: a violated [flow rule](crate::flow)
    /// whose action is `escalate`, or [`Escalation::manual`]. `None` when `defaults` set no
    /// chain.
    pub fn default_params(&self) -> Option<&ApprovalParams> {
        self.default_params.as_ref()
    }

    /// The gate that never escalates.
    pub fn none() -> Self {
        Self::compile(EscalationPolicy::default(), &[]).expect("the empty policy is valid")
    }

    /// The rules `input` matches. Allocation-free; an empty result means "no human needed".
    ///
    /// Fail closed: an argument condition on arguments that cannot be read (malformed or
    /// oversized raw JSON) matches, as does a tier condition when the call's tier is unknown.
    pub fn evaluate(&self, input: &GateInput<'_>) -> Matched {
        let mut candidates = self.unscoped;
        if !self.per_tool.is_empty()
            && let Some(i) = self.tool_index.get(input.tool)
        {
            candidates |= self.per_tool[i as usize];
        }
        if candidates == 0 {
            return Matched::NONE;
        }
        if candidates & self.needs_args == 0 {
            return self.eval_rules::<&Value>(candidates, input, None);
        }
        match input.args {
            Args::None => self.eval_rules(candidates, input, Some(empty_object())),
            Args::Value(v) => self.eval_rules(candidates, input, Some(v)),
            Args::Json(text) => match RawJson::parse(text, self.limits) {
                Ok(doc) => self.eval_rules(candidates, input, Some(doc.root())),
                Err(_) => self.eval_rules::<&Value>(candidates, input, None),
            },
        }
    }

    fn eval_rules<'a, V: View<'a>>(
        &self,
        candidates: u64,
        input: &GateInput<'_>,
        args: Option<V>,
    ) -> Matched {
        let mut out = 0u64;
        for i in Matched(candidates).iter() {
            if eval(&self.rules[i].cond, input, args) {
                out |= 1 << i;
            }
        }
        Matched(out)
    }

    /// The reasons and combined approval parameters of `matched`; `None` when it is empty.
    ///
    /// Several matched rules combine into the strictest request:
    /// - **reasons**: every matched rule's, in document order;
    /// - **quorum**: the highest;
    /// - **chain**: that of the first rule (document order) with the highest quorum, so the
    ///   quorum is always reachable by the chain it was validated with; list your most
    ///   demanding rules first;
    /// - **timeout outcome**: deny if any matched rule denies on timeout;
    /// - **timeout**: when the outcome is deny, the shortest timeout among the deny-on-timeout
    ///   rules (the earliest deadline); when every rule approves on timeout, the longest (the
    ///   latest automatic approval).
    pub fn escalation(&self, matched: Matched) -> Option<Escalation> {
        if matched.is_empty() {
            return None;
        }
        let rules: Vec<&Rule> = matched.iter().filter_map(|i| self.rules.get(i)).collect();
        let quorum = rules.iter().map(|r| r.quorum).max()?;
        let chain_rule = rules.iter().find(|r| r.quorum == quorum)?;
        let deny = rules.iter().any(|r| r.on_timeout == OnTimeout::Deny);
        let timeout = if deny {
            rules
                .iter()
                .filter(|r| r.on_timeout == OnTimeout::Deny)
                .map(|r| r.timeout)
                .min()?
        } else {
            rules.iter().map(|r| r.timeout).max()?
        };
        Some(Escalation {
            matched,
            reasons: rules.iter().map(|r| r.reason.clone()).collect(),
            params: ApprovalParams {
                timeout,
                on_timeout: if deny {
                    OnTimeout::Deny
                } else {
                    OnTimeout::Approve
                },
                quorum,
                chain: chain_rule.chain.clone(),
            },
        })
    }

    /// [`evaluate`](Self::evaluate) followed by [`escalation`](Self::escalation).
    pub fn check(&self, input: &GateInput<'_>) -> Option<Escalation> {
        self.escalation(self.evaluate(input))
    }

    /// The id of rule `index`.
    pub fn rule_id(&self, index: usize) -> Option<&RuleId> {
        self.rules.get(index).map(|r| &r.reason.rule)
    }

    /// The reason rule `index` gives.
    pub fn reason(&self, index: usize) -> Option<&Reason> {
        self.rules.get(index).map(|r| &r.reason)
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The index of a tier name in the tier list the gate was compiled with.
    pub fn tier_index(&self, tier: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t == tier)
    }

    /// The approver groups defined by the policy (hand them to the
    /// [`ApprovalQueue`](super::ApprovalQueue) through [`QueueConfig`](super::QueueConfig)).
    pub fn groups(&self) -> &ApproverGroups {
        &self.groups
    }

    /// The policy's approval queue settings (validated).
    /// [`QueueConfig::for_gate`](super::QueueConfig::for_gate) combines them with
    /// [`groups`](Self::groups).
    pub fn approvals(&self) -> &ApprovalSettings {
        &self.policy.approvals
    }

    /// SHA-256 of the policy's canonical JSON form and the tier list.
    pub fn version(&self) -> PolicyVersion {
        self.version
    }

    /// The policy this gate was compiled from.
    pub fn policy(&self) -> &EscalationPolicy {
        &self.policy
    }
}

/// The arguments of a call made without any: `{}`.
fn empty_object() -> &'static Value {
    static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Value::Object(serde_json::Map::new()))
}

fn get_path<'a, V: View<'a>>(root: V, path: &[Box<str>]) -> Option<V> {
    let mut v = root;
    for seg in path {
        v = v.get(seg)?;
    }
    Some(v)
}

fn eval<'a, V: View<'a>>(c: &Cond, input: &GateInput<'_>, args: Option<V>) -> bool {
    match c {
        Cond::Amount {
            path,
            threshold,
            missing,
        } => {
            // Unreadable arguments: fail closed.
            let Some(root) = args else { return true };
            let Some(v) = get_path(root, path) else {
                return *missing;
            };
            let Some(n) = v.as_num() else { return true };
            if !n.is_finite() {
                return true;
            }
            match threshold {
                Threshold::Fixed(t) => n.above(*t),
                Threshold::ByCurrency { path, over } => {
                    let Some(code) = get_path(root, path).and_then(|c| c.as_string()) else {
                        return true;
                    };
                    match over.iter().find(|(c, _)| code.eq_str(c)) {
                        Some((_, t)) => n.above(*t),
                        None => true,
                    }
                }
            }
        }
        Cond::TierAtLeast(t) => input.tier.is_none_or(|i| i >= *t),
        Cond::EffectAtLeast(e) => input.effect >= *e,
        Cond::ConfidenceBelow { below, missing } => match input.confidence {
            None => *missing,
            Some(c) => !(0.0..=1.0).contains(&c) || c < *below,
        },
        Cond::Flag(f) => input.flags.contains(&&**f),
        Cond::BudgetAtLeast { at_least, missing } => match input.budget_used {
            None => *missing,
            // NaN escalates.
            Some(u) => u.is_nan() || u >= *at_least,
        },
        Cond::All(cs) => cs.iter().all(|c| eval(c, input, args)),
        Cond::Any(cs) => cs.iter().any(|c| eval(c, input, args)),
    }
}
