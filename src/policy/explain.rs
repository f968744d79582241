//! "What would happen to this call?": a dry run of the whole pipeline for one call, stage by
//! stage, with the rule that decided.
//!
//! The final verdict comes from a real guard built from the policy (in-memory audit and approval
//! store, a manual clock, credential providers that mint nothing), starting fresh: no kill switch
//! thrown, every breaker closed, every budget and rate limit full, no earlier call to repeat. The
//! stages before it say what each primitive decides on its own and which limits would apply
//! later in a run.

use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;

use super::{Bindings, Policy};
use crate::audit::MemorySink;
use crate::call::{RunContext, ToolCall};
use crate::clock::ManualClock;
use crate::credential::{CredentialProvider, MintRequest, ProviderError};
use crate::escalation::{GateInput, MemoryApprovalStore};
use crate::verdict::Verdict;

/// One call to explain.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    /// The run's role.
    pub role: &'a str,
    /// The tool.
    pub tool: &'a str,
    /// The arguments, as raw JSON text.
    pub args: &'a str,
    /// The run's compartment, if bound to one.
    pub compartment: Option<&'a str>,
    /// The agent's confidence, if it gives one.
    pub confidence: Option<f32>,
    /// Flags set on the call.
    pub flags: &'a [&'a str],
}

impl<'a> Probe<'a> {
    /// A call of `tool` with `args` (JSON text) by an agent in `role`.
    pub fn new(role: &'a str, tool: &'a str, args: &'a str) -> Self {
        Probe {
            role,
            tool,
            args,
            compartment: None,
            confidence: None,
            flags: &[],
        }
    }
}

/// What one stage decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StageOutcome {
    /// Lets the call through.
    Pass,
    /// Stops it.
    Deny,
    /// Sends it to a human.
    Escalate,
    /// Not configured, or nothing to decide for this call.
    Skip,
}

impl StageOutcome {
    fn as_str(self) -> &'static str {
        match self {
            StageOutcome::Pass => "pass",
            StageOutcome::Deny => "DENY",
            StageOutcome::Escalate => "ESCALATE",
            StageOutcome::Skip => "-",
        }
    }
}

/// One stage of the explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The stage (`kill switch`, `boundary`, ...).
    pub name: &'static str,
    /// What it decides.
    pub outcome: StageOutcome,
    /// The rule that decided, when one did.
    pub rule: Option<String>,
    /// In words.
    pub detail: String,
}

/// The dry run's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Every stage, in pipeline order.
    pub stages: Vec<Stage>,
    /// The guard's verdict: `allow`, `escalate` or `deny:<code>`.
    pub verdict: String,
    /// The rule behind the verdict, if any.
    pub rule: Option<String>,
    /// The policy version.
    pub policy_version: String,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.stages {
            write!(f, "{:<16} {:<8}", s.name, s.outcome.as_str())?;
            if let Some(r) = &s.rule {
                write!(f, " [{r}]")?;
            }
            writeln!(f, " {}", s.detail)?;
        }
        write!(f, "verdict: {}", self.verdict)?;
        if let Some(r) = &self.rule {
            write!(f, " [{r}]")?;
        }
        writeln!(f)?;
        writeln!(f, "policy version: {}", self.policy_version)
    }
}

/// A provider that mints nothing: a dry run never hands out secrets.
struct DryRun;

impl CredentialProvider for DryRun {
    fn mint(&self, _: &MintRequest<'_>) -> Result<SecretString, ProviderError> {
        Err(ProviderError("dry run: no credential is minted".into()))
    }
}

impl Policy {
    /// Dry-runs `probe` through the whole pipeline of a fresh guard built from this policy.
    pub fn explain(&self, probe: &Probe<'_>) -> Explanation {
        let doc = self.document();
        let mut stages = Vec::new();
        let mut stage = |name, outcome, rule: Option<String>, detail: String| {
            stages.push(Stage {
                name,
                outcome,
                rule,
                detail,
            })
        };
        let mut ctx = RunContext::new("dry-run-agent", probe.role);
        if let Some(c) = probe.compartment {
            ctx = ctx.in_compartment(c);
        }
        let mut call = ToolCall::new(probe.tool, probe.args).with_flags(probe.flags);
        if let Some(c) = probe.confidence {
            call = call.with_confidence(c);
        }

        stage(
            "kill switch",
            StageOutcome::Pass,
            None,
            "not thrown (a dry run starts with every switch off)".into(),
        );
        stage(
            "circuit breaker",
            if doc.breakers.is_some() {
                StageOutcome::Pass
            } else {
                StageOutcome::Skip
            },
            doc.breakers.as_ref().map(|_| "breakers".into()),
            match &doc.breakers {
                Some(b) => format!(
                    "closed now; opens at {}% failures (one per {})",
                    b.failure_rate,
                    match b.key {
                        crate::breaker::BreakerKey::Tool => "tool",
                        crate::breaker::BreakerKey::Agent => "agent",
                        crate::breaker::BreakerKey::AgentTool => "agent and tool",
                    }
                ),
                None => "no breakers configured".into(),
            },
        );

        let boundary = self.boundary();
        let admitted = match boundary.check(&ctx, &call) {
            Ok(_) => {
                let info = boundary
                    .visible_tools_for(probe.role, false)
                    .find(|t| t.name() == probe.tool);
                stage(
                    "boundary",
                    StageOutcome::Pass,
                    Some(format!("roles.{}", probe.role)),
                    match info {
                        Some(t) => format!(
                            "`{}` is allowed for `{}` ({}, tier {})",
                            probe.tool,
                            probe.role,
                            t.effect().as_str(),
                            t.tier().unwrap_or("-")
                        ),
                        None => format!("`{}` is allowed for `{}`", probe.tool, probe.role),
                    },
                );
                true
            }
            Err(d) => {
                stage(
                    "boundary",
                    StageOutcome::Deny,
                    Some(d.rule().as_str().to_owned()),
                    format!("{}: {}", d.code(), d.reason()),
                );
                false
            }
        };

        let limits = [
            doc.budgets.as_ref().map(|b| {
                let mut p = Vec::new();
                if let Some(n) = b.max_calls {
                    p.push(format!("{n} calls"));
                }
                if let Some(n) = b.max_tokens {
                    p.push(format!("{n} tokens"));
                }
                if let Some(m) = b.max_cost {
                    p.push(format!("cost {m}"));
                }
                if let Some(d) = b.max_duration {
                    p.push(crate::units::format_duration(d));
                }
                format!("run budget {}", p.join(", "))
            }),
            doc.rate_limits.as_ref().map(|r| {
                let q = r.per_tool.get(probe.tool).or(r.default_per_tool.as_ref());
                match q {
                    Some(q) => format!(
                        "tool rate {} per {}",
                        q.max_calls,
                        crate::units::format_duration(q.per)
                    ),
                    None => "no tool rate limit".into(),
                }
            }),
            doc.loops.map(|l| {
                format!(
                    "loop: at most {} repeats per {}",
                    l.max_repeats,
                    crate::units::format_duration(l.window)
                )
            }),
        ];
        let limits: Vec<String> = limits.into_iter().flatten().collect();
        stage(
            "budgets/limits",
            if limits.is_empty() || !admitted {
                StageOutcome::Skip
            } else {
                StageOutcome::Pass
            },
            None,
            if limits.is_empty() {
                "none configured".into()
            } else {
                format!("first call of a run passes; {}", limits.join("; "))
            },
        );

        match self.escalation() {
            Some(gate) if admitted => {
                let info = boundary
                    .visible_tools_for(probe.role, false)
                    .find(|t| t.name() == probe.tool);
                let effect = info.map_or(crate::boundary::Effect::Irreversible, |t| t.effect());
                let mut input = GateInput::new(probe.tool, effect, probe.args).flags(probe.flags);
                if let Some(i) = info
                    .and_then(|t| t.tier())
                    .and_then(|t| doc.tiers.iter().position(|x| x == t))
                {
                    input = input.tier(i);
                }
                if let Some(c) = probe.confidence {
                    input = input.confidence(f64::from(c));
                }
                match gate.check(&input) {
                    Some(e) => stage(
                        "escalation",
                        StageOutcome::Escalate,
                        Some(
                            e.reasons
                                .iter()
                                .map(|r| r.rule.as_str().to_owned())
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                        e.reasons
                            .iter()
                            .map(|r| r.text.to_string())
                            .collect::<Vec<_>>()
                            .join("; "),
                    ),
                    None => stage(
                        "escalation",
                        StageOutcome::Pass,
                        None,
                        "no rule applies".into(),
                    ),
                }
            }
            Some(_) => stage("escalation", StageOutcome::Skip, None, "not reached".into()),
            None => stage(
                "escalation",
                StageOutcome::Skip,
                None,
                "no escalation section".into(),
            ),
        }

        let grants: Vec<String> = doc
            .credentials
            .iter()
            .flat_map(|c| c.grants.iter())
            .filter(|g| g.role == probe.role && g.tools.iter().any(|t| t == probe.tool))
            .map(|g| format!("`{}` for `{}`", g.provider, g.resource))
            .collect();
        stage(
            "credentials",
            if grants.is_empty() {
                StageOutcome::Skip
            } else {
                StageOutcome::Pass
            },
            None,
            if grants.is_empty() {
                "no grant for this role and tool".into()
            } else {
                format!("may obtain {}", grants.join(", "))
            },
        );

        let (verdict, rule) = self.dry_run(&ctx, &call);
        Explanation {
            stages,
            verdict,
            rule,
            policy_version: self.version().to_string(),
        }
    }

    /// The verdict of a fresh guard built from this policy.
    fn dry_run(&self, ctx: &RunContext, call: &ToolCall<'_>) -> (String, Option<String>) {
        // A dry run never touches the deployment's shared kill switch, budgets or trail.
        let mut b = Bindings::new()
            .offline()
            .clock(Arc::new(ManualClock::new()))
            .audit(Arc::new(MemorySink::new()))
            .approvals(Arc::new(MemoryApprovalStore::new()));
        if let Some(c) = &self.document().credentials {
            for name in c.providers.keys() {
                b = b.provider(name.clone(), DryRun);
            }
        }
        let guard = match self.guard(b) {
            Ok(g) => g,
            Err(e) => return (format!("error: {e}"), None),
        };
        let run = match guard.start_run(ctx.clone()) {
            Ok(r) => r,
            Err(e) => return (format!("run refused: {e}"), None),
        };
        match guard.check(&run, call) {
            Verdict::Allow(p) => {
                // A dry run: nothing ran, nothing is observed.
                p.withdraw();
                ("allow".into(), None)
            }
            Verdict::Escalate(r) => (
                "escalate".into(),
                Some(
                    r.reasons
                        .iter()
                        .map(|x| x.rule.as_str().to_owned())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            ),
            Verdict::Deny(d) => (
                format!("deny:{}", d.code()),
                Some(d.rule().as_str().to_owned()),
            ),
        }
    }
}
