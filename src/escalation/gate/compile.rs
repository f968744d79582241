//! Compiling an [`EscalationPolicy`] into an [`EscalationGate`]: validation with errors that
//! name the field, defaults resolved per rule, tool scopes indexed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use rust_decimal::Decimal;

use super::{
    ApprovalParams, Cond, DEFAULT_TIMEOUT, EscalationGate, Level, MAX_ARG_BYTES_CAP,
    MAX_CONDITION_DEPTH, MAX_LEVELS, MAX_PATH_SEGMENTS, MAX_RULES, MAX_TIMEOUT, Rule, Threshold,
};
use crate::boundary::hash::NameTable;
use crate::boundary::{ArgLimits, Effect};
use crate::call::Principal;
use crate::call::json::{JsonLimits, MAX_DEPTH_CAP};
use crate::escalation::error::EscalationPolicyError as PolicyErr;
use crate::escalation::policy::{
    AmountCondition, ApprovalSettings, Condition, EscalationPolicy, IfMissing, LevelSpec,
    OnTimeout, RuleParams,
};
use crate::escalation::request::{ApproverGroups, Reason};
use crate::units::{Money, format_duration};
use crate::verdict::PolicyVersion;

pub(super) struct Compiler<'p> {
    tier_rank: BTreeMap<&'p str, usize>,
    tiers: Vec<String>,
    known_tools: Option<&'p BTreeSet<&'p str>>,
    limits: JsonLimits,
    groups: ApproverGroups,
}

struct Resolved<'p> {
    timeout: (Duration, String),
    on_timeout: OnTimeout,
    quorum: (u32, String),
    chain: (&'p [LevelSpec], String),
}

impl<'p> Compiler<'p> {
    pub(super) fn new(
        policy: &EscalationPolicy,
        tiers: &'p [String],
        known_tools: Option<&'p BTreeSet<&'p str>>,
        boundary_limits: Option<ArgLimits>,
    ) -> Result<Self, PolicyErr> {
        if policy.rules.len() > MAX_RULES {
            return Err(PolicyErr::TooManyRules {
                count: policy.rules.len(),
                limit: MAX_RULES,
            });
        }
        let mut tier_rank = BTreeMap::new();
        for (i, t) in tiers.iter().enumerate() {
            if tier_rank.insert(t.as_str(), i).is_some() {
                return Err(PolicyErr::invalid(
                    format!("tiers[{i}]"),
                    format!("tier `{t}` is listed twice"),
                ));
            }
        }
        let limits = policy.limits.or(boundary_limits).unwrap_or_default();
        if limits.max_bytes == 0 || limits.max_bytes > MAX_ARG_BYTES_CAP {
            return Err(PolicyErr::invalid(
                "limits.max_bytes",
                format!("must be between 1 and {MAX_ARG_BYTES_CAP}"),
            ));
        }
        if limits.max_depth == 0 || limits.max_depth > MAX_DEPTH_CAP {
            return Err(PolicyErr::invalid(
                "limits.max_depth",
                format!("must be between 1 and {MAX_DEPTH_CAP}"),
            ));
        }
        let mut groups = ApproverGroups::new();
        for (name, members) in &policy.groups {
            let field = format!("groups.{name}");
            check_name(&field, name, "a group name")?;
            if members.is_empty() {
                return Err(PolicyErr::invalid(
                    field,
                    "a group needs at least one member",
                ));
            }
            let mut seen = BTreeSet::new();
            for (j, m) in members.iter().enumerate() {
                let f = format!("{field}[{j}]");
                if m.is_empty() || m.trim() != m {
                    return Err(PolicyErr::invalid(
                        f,
                        "an approver id must be non-empty without surrounding spaces",
                    ));
                }
                if !seen.insert(m.as_str()) {
                    return Err(PolicyErr::invalid(f, format!("`{m}` is listed twice")));
                }
            }
            groups.insert(name.clone(), members.iter().map(Principal::new));
        }
        Ok(Self {
            tier_rank,
            tiers: tiers.to_vec(),
            known_tools,
            limits: JsonLimits {
                max_bytes: limits.max_bytes,
                max_depth: limits.max_depth,
            },
            groups,
        })
    }

    pub(super) fn finish(self, policy: EscalationPolicy) -> Result<EscalationGate, PolicyErr> {
        check_approvals(&policy.approvals)?;
        let defaults = &policy.defaults;
        self.check_params("defaults", defaults)?;
        let mut rules = Vec::with_capacity(policy.rules.len());
        let mut ids = BTreeSet::new();
        let mut unscoped = 0u64;
        let mut needs_args = 0u64;
        let mut scoped: BTreeMap<&str, u64> = BTreeMap::new();
        for (i, spec) in policy.rules.iter().enumerate() {
            let field = format!("rules[{i}]");
            check_id(&format!("{field}.id"), &spec.id)?;
            if !ids.insert(spec.id.as_str()) {
                return Err(PolicyErr::invalid(
                    format!("{field}.id"),
                    format!("rule id `{}` is used twice", spec.id),
                ));
            }
            let bit = 1u64 << i;
            match &spec.tools {
                None => unscoped |= bit,
                Some(tools) => {
                    if tools.is_empty() {
                        return Err(PolicyErr::invalid(
                            format!("{field}.tools"),
                            "an empty tool list would never apply; omit `tools` to cover every tool",
                        ));
                    }
                    for (j, t) in tools.iter().enumerate() {
                        let f = format!("{field}.tools[{j}]");
                        if t.is_empty() || t.len() > 128 {
                            return Err(PolicyErr::invalid(
                                f,
                                "a tool name must be 1 to 128 bytes",
                            ));
                        }
                        if let Some(known) = self.known_tools
                            && !known.contains(t.as_str())
                        {
                            return Err(PolicyErr::UnknownTool {
                                field: f,
                                tool: t.clone(),
                            });
                        }
                        let m = scoped.entry(t.as_str()).or_default();
                        if *m & bit != 0 {
                            return Err(PolicyErr::invalid(
                                f,
                                format!("tool `{t}` is listed twice"),
                            ));
                        }
                        *m |= bit;
                    }
                }
            }
            let cond = self.compile_cond(&format!("{field}.when"), &spec.when, 1)?;
            if reads_args(&cond) {
                needs_args |= bit;
            }
            let own = RuleParams {
                timeout: spec.timeout,
                on_timeout: spec.on_timeout,
                quorum: spec.quorum,
                chain: spec.chain.clone(),
            };
            self.check_params(&field, &own)?;
            let r = self.resolve(&field, spec, defaults)?;
            let chain = self.check_chain(&r)?;
            let reason = match &spec.reason {
                Some(text) if !text.trim().is_empty() => text.clone(),
                Some(_) => {
                    return Err(PolicyErr::invalid(
                        format!("{field}.reason"),
                        "must not be blank (omit it to generate one from the condition)",
                    ));
                }
                None => describe(&spec.when),
            };
            rules.push(Rule {
                reason: Reason::new(spec.id.as_str(), reason),
                cond,
                timeout: r.timeout.0,
                on_timeout: r.on_timeout,
                quorum: r.quorum.0,
                chain,
            });
        }
        // The approval `defaults` describe on their own, for escalations raised outside the
        // rules (flow rules, the application's own).
        let default_params = match &defaults.chain {
            Some(chain) => {
                let r = Resolved {
                    timeout: (
                        defaults.timeout.unwrap_or(DEFAULT_TIMEOUT),
                        "defaults.timeout".to_owned(),
                    ),
                    on_timeout: defaults.on_timeout.unwrap_or_default(),
                    quorum: (defaults.quorum.unwrap_or(1), "defaults.quorum".to_owned()),
                    chain: (chain.as_slice(), "defaults.chain".to_owned()),
                };
                let chain = self.check_chain(&r)?;
                Some(ApprovalParams {
                    timeout: r.timeout.0,
                    on_timeout: r.on_timeout,
                    quorum: r.quorum.0,
                    chain,
                })
            }
            None => None,
        };
        let names: Vec<(&str, u32)> = scoped
            .keys()
            .enumerate()
            .map(|(i, n)| (*n, i as u32))
            .collect();
        let per_tool: Vec<u64> = scoped.values().copied().collect();
        let tool_index = NameTable::build(names);
        let canonical = serde_json::to_vec(&serde_json::json!({
            "escalation": &policy,
            "tiers": &self.tiers,
        }))
        .map_err(|e| PolicyErr::invalid(".", format!("cannot serialise policy: {e}")))?;
        let version = PolicyVersion(Sha256::digest(&canonical).into());
        let Compiler {
            tiers,
            limits,
            groups,
            ..
        } = self;
        Ok(EscalationGate {
            rules,
            unscoped,
            needs_args,
            tool_index,
            per_tool,
            groups,
            tiers,
            limits,
            version,
            default_params,
            policy: Arc::new(policy),
        })
    }

    fn check_params(&self, field: &str, p: &RuleParams) -> Result<(), PolicyErr> {
        if let Some(t) = p.timeout
            && (t.is_zero() || t > MAX_TIMEOUT)
        {
            return Err(PolicyErr::invalid(
                format!("{field}.timeout"),
                format!(
                    "`{}`: must be above zero and at most {}",
                    format_duration(t),
                    format_duration(MAX_TIMEOUT)
                ),
            ));
        }
        if p.quorum == Some(0) {
            return Err(PolicyErr::invalid(
                format!("{field}.quorum"),
                "must be at least 1",
            ));
        }
        if let Some(chain) = &p.chain {
            let f = format!("{field}.chain");
            if chain.is_empty() {
                return Err(PolicyErr::invalid(f, "needs at least one level"));
            }
            if chain.len() > MAX_LEVELS {
                return Err(PolicyErr::invalid(
                    f,
                    format!("at most {MAX_LEVELS} levels are supported"),
                ));
            }
            let mut last = Duration::ZERO;
            for (j, level) in chain.iter().enumerate() {
                let lf = format!("{f}[{j}]");
                if !self.groups.contains_group(&level.group) {
                    return Err(PolicyErr::UnknownGroup {
                        field: format!("{lf}.group"),
                        group: level.group.clone(),
                    });
                }
                let a = level.after;
                if a > MAX_TIMEOUT {
                    return Err(PolicyErr::invalid(
                        format!("{lf}.after"),
                        format!("must be at most {}", format_duration(MAX_TIMEOUT)),
                    ));
                }
                if j == 0 && !a.is_zero() {
                    return Err(PolicyErr::invalid(
                        format!("{lf}.after"),
                        "the first level is asked at creation: leave out its `after` (zero)",
                    ));
                }
                if j > 0 && a <= last {
                    return Err(PolicyErr::invalid(
                        format!("{lf}.after"),
                        "levels must be listed in strictly increasing `after`",
                    ));
                }
                last = a;
            }
        }
        Ok(())
    }

    fn resolve<'s>(
        &self,
        field: &str,
        spec: &'s crate::escalation::policy::RuleSpec,
        defaults: &'s RuleParams,
    ) -> Result<Resolved<'s>, PolicyErr> {
        let timeout = match (spec.timeout, defaults.timeout) {
            (Some(t), _) => (t, format!("{field}.timeout")),
            (None, Some(t)) => (t, "defaults.timeout".to_owned()),
            (None, None) => (DEFAULT_TIMEOUT, "the default timeout".to_owned()),
        };
        let quorum = match (spec.quorum, defaults.quorum) {
            (Some(q), _) => (q, format!("{field}.quorum")),
            (None, Some(q)) => (q, "defaults.quorum".to_owned()),
            (None, None) => (1, format!("{field}.quorum")),
        };
        let chain = match (&spec.chain, &defaults.chain) {
            (Some(c), _) => (c.as_slice(), format!("{field}.chain")),
            (None, Some(c)) => (c.as_slice(), "defaults.chain".to_owned()),
            (None, None) => {
                return Err(PolicyErr::invalid(
                    format!("{field}.chain"),
                    "required: neither the rule nor `defaults` sets an escalation chain",
                ));
            }
        };
        Ok(Resolved {
            timeout,
            on_timeout: spec.on_timeout.or(defaults.on_timeout).unwrap_or_default(),
            quorum,
            chain,
        })
    }

    fn check_chain(&self, r: &Resolved<'_>) -> Result<Vec<Level>, PolicyErr> {
        let (timeout, tfield) = (&r.timeout.0, &r.timeout.1);
        let (chain, cfield) = (r.chain.0, &r.chain.1);
        let mut members: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::with_capacity(chain.len());
        let inherited = cfield == "defaults.chain";
        for (j, level) in chain.iter().enumerate() {
            if level.after >= *timeout && inherited {
                // A rule with a shorter timeout than the defaults' chain spans keeps the levels
                // it can reach.
                break;
            }
            if level.after >= *timeout {
                return Err(PolicyErr::invalid(
                    format!("{cfield}[{j}].after"),
                    format!(
                        "{} is not before the timeout of {} (from {tfield}): the level could never be reached",
                        format_duration(level.after),
                        format_duration(*timeout)
                    ),
                ));
            }
            if let Some(g) = self.groups.members(&level.group) {
                members.extend(g.iter().map(Principal::as_str));
            }
            out.push(Level {
                group: level.group.clone(),
                after: level.after,
            });
        }
        let (q, qfield) = (&r.quorum.0, &r.quorum.1);
        if *q as usize > members.len() {
            return Err(PolicyErr::invalid(
                qfield.clone(),
                format!(
                    "a quorum of {q} is unreachable: the chain ({cfield}) has {} distinct approvers",
                    members.len()
                ),
            ));
        }
        Ok(out)
    }

    fn compile_cond(&self, field: &str, c: &Condition, depth: usize) -> Result<Cond, PolicyErr> {
        if depth > MAX_CONDITION_DEPTH {
            return Err(PolicyErr::invalid(
                field,
                format!("conditions nest deeper than {MAX_CONDITION_DEPTH} levels"),
            ));
        }
        Ok(match c {
            Condition::Amount(a) => self.compile_amount(&format!("{field}.amount"), a)?,
            Condition::TierAtLeast(t) => {
                let f = format!("{field}.tier_at_least");
                match self.tier_rank.get(t.as_str()) {
                    Some(&i) => Cond::TierAtLeast(i),
                    None => {
                        return Err(PolicyErr::UnknownTier {
                            field: f,
                            tier: t.clone(),
                            known: if self.tiers.is_empty() {
                                "(none defined)".into()
                            } else {
                                self.tiers.join(", ")
                            },
                        });
                    }
                }
            }
            Condition::EffectAtLeast(e) => Cond::EffectAtLeast(*e),
            Condition::Confidence(cc) => {
                if !(cc.below.is_finite() && cc.below > 0.0 && cc.below <= 1.0) {
                    return Err(PolicyErr::invalid(
                        format!("{field}.confidence.below"),
                        "must be a number above 0 and at most 1",
                    ));
                }
                Cond::ConfidenceBelow {
                    below: cc.below,
                    missing: cc.if_missing.unwrap_or(IfMissing::Escalate) == IfMissing::Escalate,
                }
            }
            Condition::Flag(f) => {
                check_name(&format!("{field}.flag"), f, "a flag")?;
                Cond::Flag(f.as_str().into())
            }
            Condition::BudgetUsed(b) => {
                if !(b.at_least.is_finite() && b.at_least > 0.0 && b.at_least <= 1.0) {
                    return Err(PolicyErr::invalid(
                        format!("{field}.budget_used.at_least"),
                        "must be a fraction above 0 and at most 1",
                    ));
                }
                Cond::BudgetAtLeast {
                    at_least: b.at_least,
                    missing: b.if_missing.unwrap_or(IfMissing::Ignore) == IfMissing::Escalate,
                }
            }
            Condition::All(cs) | Condition::Any(cs) => {
                let name = if matches!(c, Condition::All(_)) {
                    "all"
                } else {
                    "any"
                };
                if cs.is_empty() {
                    return Err(PolicyErr::invalid(
                        format!("{field}.{name}"),
                        "needs at least one condition",
                    ));
                }
                let inner = cs
                    .iter()
                    .enumerate()
                    .map(|(j, c)| self.compile_cond(&format!("{field}.{name}[{j}]"), c, depth + 1))
                    .collect::<Result<Box<[Cond]>, _>>()?;
                if name == "all" {
                    Cond::All(inner)
                } else {
                    Cond::Any(inner)
                }
            }
        })
    }

    fn compile_amount(&self, field: &str, a: &AmountCondition) -> Result<Cond, PolicyErr> {
        let path = parse_path(&format!("{field}.path"), &a.path)?;
        let threshold = match (a.over, &a.currency_path, &a.over_by_currency) {
            (Some(t), None, None) => Threshold::Fixed(threshold_f64(&format!("{field}.over"), t)?),
            (None, Some(cp), Some(map)) => {
                let cpath = parse_path(&format!("{field}.currency_path"), cp)?;
                if map.is_empty() {
                    return Err(PolicyErr::invalid(
                        format!("{field}.over_by_currency"),
                        "needs at least one currency",
                    ));
                }
                let mut over = Vec::with_capacity(map.len());
                for (code, t) in map {
                    let f = format!("{field}.over_by_currency.{code}");
                    check_name(&f, code, "a currency code")?;
                    over.push((Box::<str>::from(code.as_str()), threshold_f64(&f, *t)?));
                }
                Threshold::ByCurrency {
                    path: cpath,
                    over: over.into_boxed_slice(),
                }
            }
            (None, None, None) => {
                return Err(PolicyErr::invalid(
                    field,
                    "needs a threshold: `over`, or `currency_path` with `over_by_currency`",
                ));
            }
            (Some(_), _, _) => {
                return Err(PolicyErr::invalid(
                    format!("{field}.over"),
                    "`over` and per-currency thresholds exclude each other",
                ));
            }
            (None, None, Some(_)) => {
                return Err(PolicyErr::invalid(
                    format!("{field}.currency_path"),
                    "required with `over_by_currency`",
                ));
            }
            (None, Some(_), None) => {
                return Err(PolicyErr::invalid(
                    format!("{field}.over_by_currency"),
                    "required with `currency_path`",
                ));
            }
        };
        Ok(Cond::Amount {
            path,
            threshold,
            missing: a.if_missing.unwrap_or(IfMissing::Escalate) == IfMissing::Escalate,
        })
    }
}

fn reads_args(c: &Cond) -> bool {
    match c {
        Cond::Amount { .. } => true,
        Cond::All(cs) | Cond::Any(cs) => cs.iter().any(reads_args),
        _ => false,
    }
}

fn check_approvals(a: &ApprovalSettings) -> Result<(), PolicyErr> {
    if a.grant_ttl < Duration::from_secs(1) || a.grant_ttl > MAX_TIMEOUT {
        return Err(PolicyErr::invalid(
            "approvals.grant_ttl",
            format!(
                "`{}`: must be at least 1s and at most {}",
                format_duration(a.grant_ttl),
                format_duration(MAX_TIMEOUT)
            ),
        ));
    }
    if a.max_pending == 0 {
        return Err(PolicyErr::invalid(
            "approvals.max_pending",
            "must be at least 1",
        ));
    }
    Ok(())
}

/// Most significant digits of a threshold.
const MAX_THRESHOLD_DIGITS: u32 = 15;

/// The `f64` an amount threshold is compared as on the hot path, which must give exactly the
/// answer the decimal threshold would.
///
/// The gate compares an argument `a` with the threshold `t` through
/// `Num::above` (src/boundary/view.rs): integer arguments (any `i64`/`u64`) exactly against
/// the double `T` of `t`; float arguments as their double `A`, with `A > T` when the literal has
/// at most 15 significant digits and the fail-closed `A >= T` otherwise. Thresholds are refused
/// unless that is exact:
///
/// 1. **Not negative**, and **at most 15 significant digits**. `T` is the correctly rounded
///    double of `t` (Rust's `str::parse::<f64>` on the decimal's text).
/// 2. **Float arguments with at most 15 significant digits.** Distinct decimals of at most 15
///    significant digits map to distinct doubles, in the same order (15 = `f64::DIGITS`: such a
///    decimal round-trips through a double, so rounding, which is monotonic, cannot merge two of
///    them). So `a > t` ⇔ `A > T`: `"100.10"` is over `100.1`? no; `100.11`? yes.
/// 3. **Float arguments with more digits** (`100.1000000000001`) are compared as `A >= T`:
///    rounding is monotonic, so `a > t` ⇒ `A >= T`, and the call escalates; a value that merely
///    rounds onto `T` escalates too (fail closed).
/// 4. **Integer arguments** are compared with `T` exactly. That equals the comparison with `t`
///    when no integer lies in the closed interval between `t` and `T` other than `t` itself:
///    - a non-integral `t` whose last significant digit is at `10^-m` is at least `10^-m` from
///      every integer, and with at most 15 significant digits `t < 10^(15-m)`, so
///      `|T - t| <= t * 2^-53 < 10^(15-m) * 1.2e-16 < 10^-m`: no integer is reached, and `T`
///      is not one (`Num::above` then compares the integer converted to `f64`, exact below
///      2^53, and every non-integral threshold is below 10^14);
///    - an integral `t` is kept only when `T == t` exactly (always below 2^53; above it, a
///      15-digit integer such as `1234567890123450000` may have no double of its own, and
///      `1234567890123450001` would compare wrongly): such a threshold is refused here.
fn threshold_f64(field: &str, t: Money) -> Result<f64, PolicyErr> {
    if t.is_negative() {
        return Err(PolicyErr::invalid(
            field,
            format!("`{t}`: a threshold must not be negative"),
        ));
    }
    let d: Decimal = t.decimal().normalize();
    let mantissa = d.mantissa().unsigned_abs();
    let digits = if mantissa == 0 {
        0
    } else {
        let mut m = mantissa;
        while m.is_multiple_of(10) {
            m /= 10;
        }
        m.ilog10() + 1
    };
    if digits > MAX_THRESHOLD_DIGITS {
        return Err(PolicyErr::invalid(
            field,
            format!(
                "`{t}` has {digits} significant digits; at most {MAX_THRESHOLD_DIGITS} can be compared exactly"
            ),
        ));
    }
    let text = d.to_string();
    let f: f64 = text
        .parse()
        .map_err(|_| PolicyErr::invalid(field, format!("`{t}` is not a number")))?;
    // Normalised, an integral decimal has scale 0 and is its mantissa.
    if d.scale() == 0 {
        // Integral: the double must be the integer itself (point 4 above). `as` saturates; `f`
        // is below 2^97 here, so it cannot saturate onto the mantissa.
        if f.fract() != 0.0 || f as i128 != d.mantissa() {
            return Err(PolicyErr::invalid(
                field,
                format!(
                    "`{t}` has no exact binary double, so integer arguments near it could not be compared exactly; use a threshold below 9007199254740992 (2^53)"
                ),
            ));
        }
    }
    Ok(f)
}

fn check_name(field: &str, name: &str, what: &str) -> Result<(), PolicyErr> {
    if name.is_empty() || name.trim() != name || name.len() > 128 {
        return Err(PolicyErr::invalid(
            field,
            format!("{what} must be 1 to 128 bytes without surrounding spaces"),
        ));
    }
    Ok(())
}

fn check_id(field: &str, id: &str) -> Result<(), PolicyErr> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(PolicyErr::invalid(
            field,
            "a rule id must be 1 to 128 ASCII letters, digits or `_ - . :`",
        ));
    }
    Ok(())
}

fn parse_path(field: &str, path: &str) -> Result<Box<[Box<str>]>, PolicyErr> {
    if path.is_empty() {
        return Err(PolicyErr::invalid(field, "the argument path is empty"));
    }
    let segs: Vec<&str> = path.split('.').collect();
    if segs.len() > MAX_PATH_SEGMENTS {
        return Err(PolicyErr::invalid(
            field,
            format!("at most {MAX_PATH_SEGMENTS} segments"),
        ));
    }
    for s in &segs {
        if s.is_empty() {
            return Err(PolicyErr::invalid(
                field,
                format!("`{path}` has an empty segment"),
            ));
        }
        if s.ends_with("[]") {
            return Err(PolicyErr::invalid(
                field,
                format!("`{path}`: array paths are not supported in escalation rules"),
            ));
        }
    }
    Ok(segs.into_iter().map(Box::from).collect())
}

/// A human description of a condition, used when a rule gives no `reason`.
fn describe(c: &Condition) -> String {
    match c {
        Condition::Amount(a) => match (&a.over, &a.currency_path, &a.over_by_currency) {
            (Some(t), _, _) => format!("`{}` is over {t}", a.path),
            (_, Some(cp), Some(m)) => {
                let list: Vec<String> = m.iter().map(|(c, t)| format!("{c} {t}")).collect();
                format!(
                    "`{}` is over the threshold for the currency in `{cp}` ({})",
                    a.path,
                    list.join(", ")
                )
            }
            _ => format!("`{}` is over its threshold", a.path),
        },
        Condition::TierAtLeast(t) => format!("the tool touches tier `{t}` or above"),
        Condition::EffectAtLeast(e) => match e {
            Effect::Irreversible => "the tool's effect is irreversible".to_owned(),
            e => format!("the tool's effect is `{}` or stronger", e.as_str()),
        },
        Condition::Confidence(c) => format!("the agent's confidence is below {}", c.below),
        Condition::Flag(f) => format!("the call is flagged `{f}`"),
        Condition::BudgetUsed(b) => format!(
            "the run has used {}% or more of its budget",
            (b.at_least * 100.0 * 100.0).round() / 100.0
        ),
        Condition::All(cs) => join(cs, " and "),
        Condition::Any(cs) => join(cs, " or "),
    }
}

fn join(cs: &[Condition], sep: &str) -> String {
    let parts: Vec<String> = cs
        .iter()
        .map(|c| match c {
            Condition::All(_) | Condition::Any(_) => format!("({})", describe(c)),
            _ => describe(c),
        })
        .collect();
    parts.join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Result<f64, PolicyErr> {
        threshold_f64("over", text.parse().unwrap())
    }

    #[test]
    fn thresholds_convert_when_every_comparison_stays_exact() {
        assert_eq!(t("0").unwrap(), 0.0);
        assert_eq!(t("100.10").unwrap(), 100.1);
        assert_eq!(t("0.0000000000000000000000000001").unwrap(), 1e-28);
        assert_eq!(t("999999999999999").unwrap(), 999_999_999_999_999.0);
        assert_eq!(t("99999999999999.9").unwrap(), 99_999_999_999_999.9);
        // Trailing zeros, before or after the point, are not significant.
        assert_eq!(t("100000000000000000000").unwrap(), 1e20);
        assert_eq!(t("1.500000000000000000").unwrap(), 1.5);
        // 2^53 and 2^60 have doubles of their own but 16 and 19 significant digits.
        for bad in [
            "9007199254740992",
            "1152921504606846976",
            "0.1234567890123456",
        ] {
            let e = t(bad).unwrap_err();
            assert!(e.to_string().contains("significant digits"), "{bad}: {e}");
        }
        // 15 digits, integral, no double of its own.
        assert!(
            t("1234567890123450000")
                .unwrap_err()
                .to_string()
                .contains("no exact binary double")
        );
        assert!(t("-0.01").is_err());
        assert_eq!(t("-0").unwrap(), 0.0);
    }
}
