//! Agreement between an agent's recommendations and what humans did.
//!
//! In [`recommend`](crate::mode::Mode::Recommend) mode every call the agent proposes becomes a
//! [`Recommendation`](crate::mode::Recommendation) and a human does the work their own way; the
//! framework records what they did with
//! [`Guard::record_human_action`](crate::Guard::record_human_action). This module compares the
//! two and measures, from the audit trail alone, how often and where they agree:
//!
//! - a [`Comparator`] per tool decides whether a human's action agrees with a recommendation
//!   (configured in the policy document's `[agreement]` section, [`AgreementSection`]);
//! - an [`AgreementReport`] streams an audit log and pairs each recommendation (a `decision`
//!   record carrying `tollgate.recommendation.id`) with its `human_action` record: agreement per
//!   task type and tool with a 95% [Wilson interval](stats::wilson), a catalogue of the
//!   disagreements (which argument paths differed, and how), and the calibration of the agent's
//!   confidence against agreement (reliability bins and the [Brier score](stats::brier)).
//!
//! # Comparators
//!
//! ```toml
//! [agreement]
//! bins = 10                                  # reliability bins (default 10)
//!
//! [agreement.tools.lookup_invoice]
//! exact = true                               # the default for a tool not listed
//!
//! [agreement.tools.refund]
//! fields = ["invoice", "amount", "codes"]    # only these must match
//! tolerance.amount = { absolute = 5 }        # |recommended - human| <= 5
//! sets = ["codes"]                           # arrays compared as sets
//! ```
//!
//! - **Exact** (a tool not listed, or `exact = true`): the human used the same tool with the same
//!   arguments, compared as JSON values: object key order does not matter, and numbers compare
//!   by value (`40` equals `40.0`).
//! - **`fields`**: only these argument paths (dotted: `payment.amount`) must match; the rest may
//!   differ. Without `fields`, every argument is compared.
//! - **`tolerance.<path>`**: a number at that path agrees if within `absolute` of the human's, or
//!   within `relative` times the human's magnitude (`relative = 0.05`: 5%); with both, either
//!   suffices.
//! - **`sets`**: arrays at these paths agree if they hold the same elements, in any order and
//!   with any repetition.
//!
//! A human who used **another tool** than the one recommended, or **did nothing**, disagrees,
//! whatever the arguments. Arguments are compared **as the audit records hold them**: values the
//! policy marks secret or sensitive are placeholders (or keyed hashes) on both sides, so a
//! placeholder agrees with a placeholder whatever the values were; under `keyed_hash` redaction
//! equal values still compare equal.
//!
//! ```
//! use serde_json::json;
//! use tollgate::agreement::{Agreement, AgreementSection, ComparatorSpec, DifferenceKind, Tolerance};
//!
//! let mut section = AgreementSection::default();
//! section.tools.insert(
//!     "refund".into(),
//!     ComparatorSpec::fields(["invoice", "amount"]).tolerance("amount", Tolerance::absolute(5.0)),
//! );
//! let agreement = Agreement::compile(&section)?;
//!
//! let recommended = json!({"invoice": 7, "amount": 40, "memo": "overpaid"});
//! // Within tolerance, and `memo` is not compared.
//! let human = json!({"invoice": 7, "amount": 43});
//! assert!(agreement.compare("refund", &recommended, Some("refund"), Some(&human)).agrees());
//! // Outside it.
//! let human = json!({"invoice": 7, "amount": 60});
//! let c = agreement.compare("refund", &recommended, Some("refund"), Some(&human));
//! assert_eq!(c.differences()[0].path, "amount");
//! assert_eq!(c.differences()[0].kind, DifferenceKind::OutsideTolerance);
//! // Another tool is a disagreement whatever the arguments.
//! assert!(!agreement.compare("refund", &recommended, Some("note"), Some(&human)).agrees());
//! # Ok::<(), tollgate::agreement::AgreementConfigError>(())
//! ```

mod compare;
mod render;
mod report;
pub mod stats;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use compare::{Comparator, Comparison, Difference, DifferenceKind};
pub use report::{
    AgreementError, AgreementReport, Bin, Calibration, CatalogueEntry, DisagreementCase,
    GroupStats, Rate, ReportBuilder, TimePoint, Timeline,
};

/// Default number of reliability bins.
pub const DEFAULT_BINS: u32 = 10;
/// Most reliability bins a document may ask for.
pub const MAX_BINS: u32 = 100;

/// The policy document's `[agreement]` section: how a human's action is compared with a
/// recommendation, per tool (see the [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementSection {
    /// Reliability bins of the calibration (equal widths over `[0, 1]`; default 10, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<u32>,
    /// Comparators by tool name; a tool not listed is compared exactly.
    #[serde(
        default,
        deserialize_with = "crate::boundary::spec::unique_keys",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tools: BTreeMap<String, ComparatorSpec>,
}

/// How one tool's recommendations are compared with the human's action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComparatorSpec {
    /// Every argument must match (the default); says so explicitly, and refuses the other
    /// settings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exact: bool,
    /// Only these argument paths must match (dotted: `payment.amount`); absent: every argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Numeric tolerance per argument path.
    #[serde(
        default,
        deserialize_with = "crate::boundary::spec::unique_keys",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tolerance: BTreeMap<String, Tolerance>,
    /// Argument paths whose arrays are compared as sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<String>,
}

impl ComparatorSpec {
    /// Every argument must match.
    pub fn exact() -> Self {
        Self {
            exact: true,
            ..Self::default()
        }
    }

    /// Only these argument paths must match.
    pub fn fields<S: Into<String>>(paths: impl IntoIterator<Item = S>) -> Self {
        Self {
            fields: Some(paths.into_iter().map(Into::into).collect()),
            ..Self::default()
        }
    }

    /// Adds a numeric tolerance at `path`.
    pub fn tolerance(mut self, path: impl Into<String>, tolerance: Tolerance) -> Self {
        self.tolerance.insert(path.into(), tolerance);
        self
    }

    /// Compares the arrays at `path` as sets.
    pub fn set(mut self, path: impl Into<String>) -> Self {
        self.sets.push(path.into());
        self
    }
}

/// A numeric tolerance: the recommended number agrees with the human's if the difference is at
/// most `absolute`, or at most `relative` times the magnitude of the human's number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    /// Largest absolute difference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute: Option<f64>,
    /// Largest difference relative to the human's value (`0.05`: 5%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<f64>,
}

impl Tolerance {
    /// Within `d` of the human's value.
    pub fn absolute(d: f64) -> Self {
        Self {
            absolute: Some(d),
            relative: None,
        }
    }

    /// Within `r` times the human's value's magnitude.
    pub fn relative(r: f64) -> Self {
        Self {
            absolute: None,
            relative: Some(r),
        }
    }

    /// Whether `recommended` is within the tolerance of `human`.
    pub fn admits(&self, recommended: f64, human: f64) -> bool {
        let diff = (recommended - human).abs();
        if !diff.is_finite() {
            return false;
        }
        self.absolute.is_some_and(|a| diff <= a)
            || self.relative.is_some_and(|r| diff <= r * human.abs())
    }
}

/// An `[agreement]` section that makes no sense: the path of the offending field (with the
/// `agreement.` prefix) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
#[non_exhaustive]
pub struct AgreementConfigError {
    /// The field, e.g. `agreement.tools.refund.tolerance.amount`.
    pub path: String,
    /// Why it is refused.
    pub reason: String,
}

impl AgreementConfigError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The compiled comparators of an [`AgreementSection`]. Cheap to share by reference.
#[derive(Debug, Clone, Default)]
pub struct Agreement {
    tools: HashMap<String, Comparator>,
    exact: Comparator,
    bins: u32,
}

impl Agreement {
    /// Every tool compared exactly; 10 reliability bins.
    pub fn exact() -> Self {
        Self {
            tools: HashMap::new(),
            exact: Comparator::default(),
            bins: DEFAULT_BINS,
        }
    }

    /// Compiles a section, refusing settings that make no sense: a tolerance that is negative,
    /// not finite or empty; an empty or malformed path; `exact` with other settings; a tolerance
    /// or set on a path `fields` leaves out; a path that is both a tolerance and a set; a number
    /// of bins outside `1..=100`. Whether the tools and their arguments exist is the policy
    /// document's check (see [`Policy::agreement`](crate::policy::Policy::agreement)).
    pub fn compile(section: &AgreementSection) -> Result<Self, AgreementConfigError> {
        let bins = section.bins.unwrap_or(DEFAULT_BINS);
        if !(1..=MAX_BINS).contains(&bins) {
            return Err(AgreementConfigError::new(
                "agreement.bins",
                format!("must be between 1 and {MAX_BINS}"),
            ));
        }
        let mut tools = HashMap::new();
        for (tool, spec) in &section.tools {
            let c = Comparator::compile(spec, &format!("agreement.tools.{tool}"))?;
            tools.insert(tool.clone(), c);
        }
        Ok(Self {
            tools,
            exact: Comparator::default(),
            bins,
        })
    }

    /// The comparator for `tool` (exact if the section does not list it).
    pub fn comparator(&self, tool: &str) -> &Comparator {
        self.tools.get(tool).unwrap_or(&self.exact)
    }

    /// The number of reliability bins.
    pub fn bins(&self) -> u32 {
        self.bins
    }

    /// Compares a recommendation (`tool`, `args`) with what the human did (`human_tool`:
    /// `None` if they did nothing; `human_args`: `None` is compared as `{}`).
    pub fn compare(
        &self,
        tool: &str,
        args: &serde_json::Value,
        human_tool: Option<&str>,
        human_args: Option<&serde_json::Value>,
    ) -> Comparison {
        let Some(human_tool) = human_tool else {
            return Comparison::NoAction;
        };
        if human_tool != tool {
            return Comparison::OtherTool {
                human: human_tool.to_owned(),
            };
        }
        let empty = serde_json::Value::Object(serde_json::Map::new());
        self.comparator(tool)
            .compare(args, human_args.unwrap_or(&empty))
    }
}
