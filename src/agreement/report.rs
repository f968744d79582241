//! The agreement report, built from an audit trail in one pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::stats::wilson;
use super::{Agreement, Comparison};
use crate::audit::file::VerifyError;
use crate::audit::query::Query;

/// Disagreements kept with their details by default (every one is counted in the catalogue).
pub const DEFAULT_MAX_CASES: usize = 200;
/// Most points of the agreement-over-time series (buckets widen to stay within it).
pub const MAX_TIME_POINTS: usize = 48;
/// Distinct policy versions listed (more are counted, not listed).
const MAX_VERSIONS: usize = 16;

/// The report could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgreementError {
    /// The log could not be read, or failed verification: a report from a log that does not
    /// verify is not evidence of anything, so none is made.
    #[error("the audit log cannot be used: {0}")]
    Log(#[from] VerifyError),
}

/// Agreement counts with the rate and its 95% Wilson interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Rate {
    /// Recommendations a human answered.
    pub cases: u64,
    /// Of those, the ones the human's action agreed with.
    pub agreements: u64,
    /// Recommendations no human action answered (not in `cases`, not guessed).
    pub unanswered: u64,
    /// `agreements / cases` (`None` without cases).
    pub rate: Option<f64>,
    /// Lower bound of the 95% Wilson interval.
    pub lower: Option<f64>,
    /// Upper bound of the 95% Wilson interval.
    pub upper: Option<f64>,
}

impl Rate {
    fn finish(cases: u64, agreements: u64, unanswered: u64) -> Self {
        let interval = wilson(agreements, cases);
        Self {
            cases,
            agreements,
            unanswered,
            rate: (cases > 0).then(|| agreements as f64 / cases as f64),
            lower: interval.map(|i| i.0),
            upper: interval.map(|i| i.1),
        }
    }
}

/// Agreement for one task type and one recommended tool.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct GroupStats {
    /// The run's task type (`None`: runs started without one).
    pub task_type: Option<String>,
    /// The tool recommended.
    pub tool: String,
    /// The figures.
    #[serde(flatten)]
    pub figures: Rate,
}

/// How often one kind of disagreement happened for one tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CatalogueEntry {
    /// The tool recommended.
    pub tool: String,
    /// `no_action`, `other_tool`, or a [`DifferenceKind`](super::DifferenceKind) name.
    pub kind: String,
    /// The argument path (for argument differences) or the human's tool (for `other_tool`).
    pub detail: Option<String>,
    /// How many answered recommendations had it.
    pub count: u64,
}

/// One disagreement, with what differed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DisagreementCase {
    /// The recommendation's id.
    pub recommendation: String,
    /// The `seq` of its decision record.
    pub seq: u64,
    /// The run.
    pub run: String,
    /// The run's task type.
    pub task_type: Option<String>,
    /// The tool recommended.
    pub tool: String,
    /// When it was recommended.
    pub time_unix_nano: u64,
    /// The agent's confidence, if it gave one.
    pub confidence: Option<f64>,
    /// What the human did differently.
    pub comparison: Comparison,
    /// The human's note.
    pub note: Option<String>,
}

/// One reliability bin: answered recommendations whose confidence fell in `[from, to)` (the
/// last bin includes 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Bin {
    /// Lower edge.
    pub from: f64,
    /// Upper edge.
    pub to: f64,
    /// Cases in the bin.
    pub cases: u64,
    /// Of those, agreements.
    pub agreements: u64,
    /// Mean confidence of the cases (`None` if empty).
    pub mean_confidence: Option<f64>,
    /// Observed agreement rate (`None` if empty).
    pub observed: Option<f64>,
}

/// The agent's confidence against agreement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Calibration {
    /// Equal-width bins over `[0, 1]`.
    pub bins: Vec<Bin>,
    /// Mean squared difference between confidence and agreement (1 or 0) over the cases with a
    /// confidence (`None` if there are none).
    pub brier: Option<f64>,
    /// Answered cases with a confidence in `[0, 1]`.
    pub cases: u64,
    /// Answered cases whose decision record had no confidence (or one outside `[0, 1]`); left
    /// out of the bins and the score.
    pub without_confidence: u64,
    /// Largest gap between a non-empty bin's mean confidence and its observed agreement,
    /// weighted by nothing (`None` if every bin is empty).
    pub max_gap: Option<f64>,
}

/// Agreement in one stretch of time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TimePoint {
    /// Start of the stretch.
    pub start_unix_nano: u64,
    /// The figures of the recommendations made in it.
    #[serde(flatten)]
    pub figures: Rate,
}

/// Agreement over time: recommendations in equal stretches from the first one, by the time of
/// their decision record; only stretches with answered cases are listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Timeline {
    /// Length of one stretch, in nanoseconds.
    pub bucket_ns: u64,
    /// The stretches with cases.
    pub points: Vec<TimePoint>,
}

/// Agreement between an agent's recommendations and what humans did, from an audit trail (see
/// the [module docs](super)). Serialises to JSON as `tollgate rollout report --format json`
/// prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AgreementReport {
    /// Records read.
    pub records: u64,
    /// Recommendations found (decision records with a recommendation id).
    pub recommendations: u64,
    /// Human actions whose recommendation is not in the log (e.g. deleted by retention).
    pub orphan_actions: u64,
    /// Every answered recommendation together.
    pub overall: Rate,
    /// Per task type and tool, sorted.
    pub groups: Vec<GroupStats>,
    /// Every kind of disagreement, most frequent first.
    pub catalogue: Vec<CatalogueEntry>,
    /// The first disagreements, in log order, with their details.
    pub disagreements: Vec<DisagreementCase>,
    /// Disagreements beyond those listed.
    pub disagreements_omitted: u64,
    /// Confidence against agreement.
    pub calibration: Calibration,
    /// Agreement over time.
    pub timeline: Timeline,
    /// Policy versions the recommendations were made under (hex; at most 16 listed).
    pub policy_versions: Vec<String>,
}

impl AgreementReport {
    /// Reads the log in `dir` (verifying its chain) and builds the report. `query` narrows what
    /// is read (a time range, a progress hook); only `run_started`, `decision` and
    /// `human_action` records are used.
    pub fn from_log(
        dir: impl AsRef<Path>,
        agreement: &Agreement,
        query: Query,
    ) -> Result<Self, AgreementError> {
        let records = query
            .kind("run_started")
            .kind("decision")
            .kind("human_action")
            .open(dir)?;
        let mut b = ReportBuilder::new(agreement);
        for r in records {
            b.push(&r?.event);
        }
        Ok(b.finish())
    }

    /// The text table `tollgate rollout report` prints.
    pub fn to_text(&self) -> String {
        super::render::text(self)
    }

    /// A self-contained HTML page: tables, a reliability diagram and agreement over time, drawn
    /// as inline SVG (no script, no external resource). `title` heads it.
    pub fn to_html(&self, title: &str) -> String {
        super::render::html(self, title)
    }
}

struct Pending {
    seq: u64,
    run: String,
    task_type: Option<Arc<str>>,
    tool: String,
    args: Value,
    confidence: Option<f64>,
    time: u64,
}

#[derive(Default)]
struct Counts {
    cases: u64,
    agreements: u64,
    unanswered: u64,
}

#[derive(Default, Clone)]
struct BinAcc {
    cases: u64,
    agreements: u64,
    confidence: f64,
}

/// Builds an [`AgreementReport`] from audit events (the `event` objects of the records), one at
/// a time, in log order. Memory holds the task type of each run seen and each recommendation
/// not yet answered, plus fixed-size figures; not the log.
pub struct ReportBuilder<'a> {
    agreement: &'a Agreement,
    task_types: HashMap<String, Option<Arc<str>>>,
    interned: BTreeSet<Arc<str>>,
    pending: HashMap<String, Pending>,
    groups: BTreeMap<(Option<Arc<str>>, String), Counts>,
    catalogue: HashMap<(String, &'static str, Option<String>), u64>,
    cases: Vec<DisagreementCase>,
    max_cases: usize,
    omitted: u64,
    bins: Vec<BinAcc>,
    brier_sum: f64,
    without_confidence: u64,
    start: Option<u64>,
    width: u64,
    buckets: BTreeMap<u64, Counts>,
    records: u64,
    recommendations: u64,
    orphans: u64,
    versions: BTreeSet<String>,
}

impl std::fmt::Debug for ReportBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportBuilder")
            .field("records", &self.records)
            .field("recommendations", &self.recommendations)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<'a> ReportBuilder<'a> {
    /// An empty report comparing with `agreement`'s comparators.
    pub fn new(agreement: &'a Agreement) -> Self {
        Self {
            agreement,
            task_types: HashMap::new(),
            interned: BTreeSet::new(),
            pending: HashMap::new(),
            groups: BTreeMap::new(),
            catalogue: HashMap::new(),
            cases: Vec::new(),
            max_cases: DEFAULT_MAX_CASES,
            omitted: 0,
            bins: vec![BinAcc::default(); agreement.bins() as usize],
            brier_sum: 0.0,
            without_confidence: 0,
            start: None,
            width: 1_000_000,
            buckets: BTreeMap::new(),
            records: 0,
            recommendations: 0,
            orphans: 0,
            versions: BTreeSet::new(),
        }
    }

    /// Keeps the details of at most `n` disagreements (default 200); all are counted.
    pub fn max_cases(mut self, n: usize) -> Self {
        self.max_cases = n;
        self
    }

    /// Takes one event. Events of other kinds, and records missing the fields a kind needs, are
    /// counted as read and otherwise ignored.
    pub fn push(&mut self, event: &Value) {
        self.records += 1;
        let s = |k: &str| event.get(k).and_then(Value::as_str);
        let Some(run) = s("tollgate.run.id") else {
            return;
        };
        match s("event") {
            Some("run_started") => {
                let task = s("tollgate.task_type").map(|t| self.intern(t));
                self.task_types.insert(run.to_owned(), task);
            }
            Some("decision") => {
                let (Some(id), Some(tool)) =
                    (s("tollgate.recommendation.id"), s("gen_ai.tool.name"))
                else {
                    return;
                };
                self.recommendations += 1;
                if let Some(v) = s("tollgate.policy.version")
                    && self.versions.len() < MAX_VERSIONS
                {
                    self.versions.insert(v.to_owned());
                }
                let confidence = event
                    .get("tollgate.confidence")
                    .and_then(Value::as_f64)
                    .filter(|c| (0.0..=1.0).contains(c));
                let pending = Pending {
                    seq: event.get("seq").and_then(Value::as_u64).unwrap_or(0),
                    run: run.to_owned(),
                    task_type: self.task_types.get(run).cloned().flatten(),
                    tool: tool.to_owned(),
                    args: event
                        .get("gen_ai.tool.call.arguments")
                        .cloned()
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    confidence,
                    time: event
                        .get("time_unix_nano")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                };
                self.pending.insert(id.to_owned(), pending);
            }
            Some("human_action") => {
                let Some(id) = s("tollgate.recommendation.id") else {
                    return;
                };
                let Some(p) = self.pending.remove(id) else {
                    self.orphans += 1;
                    return;
                };
                let comparison = self.agreement.compare(
                    &p.tool,
                    &p.args,
                    s("gen_ai.tool.name"),
                    event.get("gen_ai.tool.call.arguments"),
                );
                self.answered(id, p, comparison, s("tollgate.human.note"));
            }
            _ => {}
        }
    }

    fn intern(&mut self, t: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(t) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(t);
        self.interned.insert(a.clone());
        a
    }

    fn answered(&mut self, id: &str, p: Pending, comparison: Comparison, note: Option<&str>) {
        let agrees = comparison.agrees();
        let g = self
            .groups
            .entry((p.task_type.clone(), p.tool.clone()))
            .or_default();
        g.cases += 1;
        g.agreements += u64::from(agrees);
        match p.confidence {
            Some(c) => {
                let n = self.bins.len();
                let i = ((c * n as f64) as usize).min(n - 1);
                let b = &mut self.bins[i];
                b.cases += 1;
                b.agreements += u64::from(agrees);
                b.confidence += c;
                let d = c - if agrees { 1.0 } else { 0.0 };
                self.brier_sum += d * d;
            }
            None => self.without_confidence += 1,
        }
        self.timeline(p.time, agrees);
        if agrees {
            return;
        }
        let mut tally = |kind: &'static str, detail: Option<String>| {
            *self
                .catalogue
                .entry((p.tool.clone(), kind, detail))
                .or_default() += 1;
        };
        match &comparison {
            Comparison::NoAction => tally("no_action", None),
            Comparison::OtherTool { human } => tally("other_tool", Some(human.clone())),
            Comparison::Arguments { differences } => {
                for d in differences {
                    tally(d.kind.as_str(), Some(d.path.clone()));
                }
            }
            Comparison::Agree => {}
        }
        if self.cases.len() < self.max_cases {
            self.cases.push(DisagreementCase {
                recommendation: id.to_owned(),
                seq: p.seq,
                run: p.run,
                task_type: p.task_type.map(|t| t.to_string()),
                tool: p.tool,
                time_unix_nano: p.time,
                confidence: p.confidence,
                comparison,
                note: note.map(str::to_owned),
            });
        } else {
            self.omitted += 1;
        }
    }

    fn timeline(&mut self, t: u64, agrees: bool) {
        let start = *self.start.get_or_insert(t);
        let mut i = t.saturating_sub(start) / self.width;
        while i >= MAX_TIME_POINTS as u64 {
            self.width = self.width.saturating_mul(2);
            let old = std::mem::take(&mut self.buckets);
            for (k, c) in old {
                let b = self.buckets.entry(k / 2).or_default();
                b.cases += c.cases;
                b.agreements += c.agreements;
            }
            i = t.saturating_sub(start) / self.width;
        }
        let b = self.buckets.entry(i).or_default();
        b.cases += 1;
        b.agreements += u64::from(agrees);
    }

    /// The report. Recommendations still waiting for a human action are counted as unanswered.
    pub fn finish(mut self) -> AgreementReport {
        for p in std::mem::take(&mut self.pending).into_values() {
            self.groups
                .entry((p.task_type, p.tool))
                .or_default()
                .unanswered += 1;
        }
        let (mut cases, mut agreements, mut unanswered) = (0, 0, 0);
        let groups = self
            .groups
            .into_iter()
            .map(|((task_type, tool), c)| {
                cases += c.cases;
                agreements += c.agreements;
                unanswered += c.unanswered;
                GroupStats {
                    task_type: task_type.map(|t| t.to_string()),
                    tool,
                    figures: Rate::finish(c.cases, c.agreements, c.unanswered),
                }
            })
            .collect();
        let mut catalogue: Vec<CatalogueEntry> = self
            .catalogue
            .into_iter()
            .map(|((tool, kind, detail), count)| CatalogueEntry {
                tool,
                kind: kind.to_owned(),
                detail,
                count,
            })
            .collect();
        catalogue.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.tool, &a.kind, &a.detail).cmp(&(&b.tool, &b.kind, &b.detail)))
        });
        let n = self.bins.len();
        let bins: Vec<Bin> = self
            .bins
            .iter()
            .enumerate()
            .map(|(i, b)| Bin {
                from: i as f64 / n as f64,
                to: (i + 1) as f64 / n as f64,
                cases: b.cases,
                agreements: b.agreements,
                mean_confidence: (b.cases > 0).then(|| b.confidence / b.cases as f64),
                observed: (b.cases > 0).then(|| b.agreements as f64 / b.cases as f64),
            })
            .collect();
        let calibrated: u64 = bins.iter().map(|b| b.cases).sum();
        let max_gap = bins
            .iter()
            .filter_map(|b| Some((b.mean_confidence? - b.observed?).abs()))
            .reduce(f64::max);
        let start = self.start.unwrap_or(0);
        let width = self.width;
        let points = self
            .buckets
            .into_iter()
            .map(|(i, c)| TimePoint {
                start_unix_nano: start.saturating_add(i.saturating_mul(width)),
                figures: Rate::finish(c.cases, c.agreements, 0),
            })
            .collect();
        AgreementReport {
            records: self.records,
            recommendations: self.recommendations,
            orphan_actions: self.orphans,
            overall: Rate::finish(cases, agreements, unanswered),
            groups,
            catalogue,
            disagreements: self.cases,
            disagreements_omitted: self.omitted,
            calibration: Calibration {
                bins,
                brier: (calibrated > 0).then(|| self.brier_sum / calibrated as f64),
                cases: calibrated,
                without_confidence: self.without_confidence,
                max_gap,
            },
            timeline: Timeline {
                bucket_ns: width,
                points,
            },
            policy_versions: self.versions.into_iter().collect(),
        }
    }
}
