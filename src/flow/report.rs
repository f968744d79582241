//! What the audit trail keeps of a flow decision: the labels and provenance found for every
//! value a rule read, named (sources, tier, compartments), never the value itself.

use serde::Serialize;

use super::check::{FlowAction, FlowDecision};
use super::config::FlowRules;
use super::index::FlowTracker;
use super::{Origin, PartKind};

/// A flow decision as recorded: why a call was judged tainted (or not), in names an auditor
/// reads. Built by [`FlowRules::report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowReport {
    /// `allow`, `quarantine`, `escalate` or `deny`.
    pub action: FlowAction,
    /// The deciding rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The violated property (`provenance`, `confidentiality`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation: Option<&'static str>,
    /// One entry per value (or structured part) a rule read.
    pub findings: Vec<FindingReport>,
    /// Labels of outputs the run's index could not hold (rules fail closed for them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unindexed: Option<OriginReport>,
    /// The approval that endorsed an escalated flow, when the call was resumed with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endorsed_by_approval: Option<String>,
}

/// One value a rule read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingReport {
    /// The rule.
    pub rule: String,
    /// The argument path as the rule names it (empty for compartment exclusivity, which reads
    /// the run's whole context).
    pub arg: String,
    /// For `match = "parts"`: the part's kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<PartKind>,
    /// Where it could have come from, its tier and compartments.
    #[serde(flatten)]
    pub origin: OriginReport,
    /// The violated property, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violation: Option<&'static str>,
    /// The endorsement that let it through, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endorsement: Option<u32>,
}

/// An [`Origin`] in names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OriginReport {
    /// `user`, `trusted`, `untrusted`, or `unseen`.
    pub sources: Vec<&'static str>,
    /// The highest tier among the places it occurs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The compartments it occurs in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compartments: Vec<String>,
    /// The lookup stopped at its candidate limit (counted as untrusted, fail closed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl FlowRules {
    /// The audit form of `decision`, with tier and compartment names resolved from `tracker`.
    pub fn report(&self, tracker: &FlowTracker, decision: &FlowDecision) -> FlowReport {
        let unindexed = tracker.unindexed();
        let empty = unindexed.sources.is_empty()
            && unindexed.max_tier.is_none()
            && unindexed.compartments == 0;
        FlowReport {
            action: decision.action,
            rule: decision.rule.as_ref().map(|r| r.as_str().to_owned()),
            violation: decision.violation.map(|v| v.name()),
            findings: decision
                .findings
                .iter()
                .map(|f| FindingReport {
                    rule: f.rule.as_str().to_owned(),
                    arg: f.arg.to_string(),
                    part: f.part,
                    origin: self.origin_report(tracker, f.origin),
                    violation: f.violation.map(|v| v.name()),
                    endorsement: f.endorsement,
                })
                .collect(),
            unindexed: (!empty).then(|| self.origin_report(tracker, unindexed)),
            endorsed_by_approval: None,
        }
    }

    fn origin_report(&self, tracker: &FlowTracker, o: Origin) -> OriginReport {
        OriginReport {
            sources: o.sources.names(),
            tier: o
                .max_tier
                .and_then(|t| self.tier_name(t))
                .map(str::to_owned),
            compartments: tracker
                .compartment_names(o.compartments)
                .map(|c| c.as_str().to_owned())
                .collect(),
            truncated: o.flags & Origin::TRUNCATED != 0,
        }
    }
}

impl FlowReport {
    /// A one-line explanation for a denial or an approver, without any value: which argument
    /// came from where, and what that violates.
    pub fn explain(&self) -> String {
        let Some(v) = self.violation else {
            return "no flow rule is violated".to_owned();
        };
        let rule = self.rule.as_deref().unwrap_or("flow");
        let culprits: Vec<String> = self
            .findings
            .iter()
            .filter(|f| f.violation.is_some())
            .map(|f| {
                let what = match (f.arg.is_empty(), f.part) {
                    (true, _) => "the run's context".to_owned(),
                    (false, Some(p)) => format!("{} in argument `{}`", p.name(), f.arg),
                    (false, None) => format!("argument `{}`", f.arg),
                };
                let sources: Vec<&str> = f
                    .origin
                    .sources
                    .iter()
                    .map(|s| match *s {
                        "user" => "the user's prompt",
                        "trusted" => "a trusted output",
                        "untrusted" => "an untrusted output",
                        "unseen" => "nowhere the run saw",
                        other => other,
                    })
                    .collect();
                let mut from = format!("{what} comes from {}", sources.join(" or "));
                if let Some(t) = &f.origin.tier {
                    from.push_str(&format!(", tier {t}"));
                }
                if !f.origin.compartments.is_empty() {
                    from.push_str(&format!(
                        ", compartment {}",
                        f.origin.compartments.join(", ")
                    ));
                }
                from
            })
            .fold(Vec::<String>::new(), |mut seen, c| {
                if !seen.contains(&c) {
                    seen.push(c);
                }
                seen
            });
        let violation = match v {
            "provenance" => "its source is not one the rule accepts",
            "confidentiality" => "its tier is above what the tool may receive",
            "compartment" => "it belongs to another compartment than the call's",
            "retention" => "the tool keeps data longer than its tier allows",
            "exclusive_compartment" => "it already holds another compartment's data",
            "index_overflow" => {
                "the run saw more than its index holds, so its source cannot be shown"
            }
            "unreadable" => "the arguments cannot be read",
            "ambiguous_compartment" => {
                "the compartment argument names more than one compartment; call once per compartment"
            }
            other => other,
        };
        if culprits.is_empty() {
            format!("flow rule `{rule}`: {violation}")
        } else {
            format!("flow rule `{rule}`: {} ({violation})", culprits.join("; "))
        }
    }
}
