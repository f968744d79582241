//! Baselines: how many tool calls a task type normally takes, and which tools it normally uses,
//! learned from recorded runs (or online, as runs finish). A run far above its task type's
//! normal call count is a runaway; a tool the task type never used is suspicious.
//!
//! ```
//! use tollgate::breaker::{Baseline, BaselineConfig, BaselineRule};
//!
//! let mut b = Baseline::new(BaselineConfig {
//!     rule: BaselineRule::Percentile { percentile: 95.0, factor: 3.0 },
//!     min_runs: 5,
//!     ..BaselineConfig::default()
//! })?;
//! for calls in [4, 5, 5, 6, 7, 5, 4, 6] {
//!     b.observe("client-intake", calls, ["search", "read_document"]);
//! }
//! assert_eq!(b.limit("client-intake"), Some(21)); // 3 x p95 (7)
//! assert!(b.knows_tool("client-intake", "search"));
//! assert!(!b.knows_tool("client-intake", "wire_funds"));
//! # Ok::<(), tollgate::breaker::ConfigError>(())
//! ```

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// How far above normal a run may go.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineRule {
    /// Trip above `factor` x the `percentile`-th percentile of past runs' call counts.
    Percentile {
        /// E.g. 95.
        percentile: f64,
        /// E.g. 3.
        factor: f64,
    },
    /// Trip above `factor` x the median call count.
    Median {
        /// E.g. 10.
        factor: f64,
    },
}

/// What to do with a tool the task type has never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnexpectedTool {
    /// Allow the call, raise an alert.
    #[default]
    Alert,
    /// Deny the call (and alert).
    Deny,
    /// Do nothing.
    Ignore,
}

/// Baseline parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// The trip rule.
    pub rule: BaselineRule,
    /// Runs a task type needs before its baseline is enforced (fewer: nothing is judged).
    pub min_runs: u32,
    /// Most runs remembered per task type (oldest forgotten first).
    pub max_runs: u32,
    /// Unknown-tool policy.
    pub unexpected_tool: UnexpectedTool,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            rule: BaselineRule::Percentile {
                percentile: 95.0,
                factor: 3.0,
            },
            min_runs: 20,
            max_runs: 1000,
            unexpected_tool: UnexpectedTool::Alert,
        }
    }
}

impl BaselineConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason| Err(ConfigError { field, reason });
        match self.rule {
            BaselineRule::Percentile { percentile, factor } => {
                if !(percentile > 0.0 && percentile <= 100.0) {
                    return bad("rule.percentile", "must be in (0, 100]");
                }
                if !(factor >= 1.0 && factor.is_finite()) {
                    return bad("rule.factor", "must be a finite number >= 1");
                }
            }
            BaselineRule::Median { factor } => {
                if !(factor >= 1.0 && factor.is_finite()) {
                    return bad("rule.factor", "must be a finite number >= 1");
                }
            }
        }
        if self.min_runs == 0 {
            return bad("min_runs", "must be at least 1");
        }
        if self.max_runs < self.min_runs {
            return bad("max_runs", "must be >= min_runs");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
struct TaskStats {
    counts: std::collections::VecDeque<u32>,
    tools: BTreeSet<String>,
}

/// Learned call counts and tool sets per task type.
#[derive(Debug, Clone)]
pub struct Baseline {
    cfg: BaselineConfig,
    tasks: HashMap<String, TaskStats>,
}

impl Baseline {
    /// An empty baseline.
    pub fn new(cfg: BaselineConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            tasks: HashMap::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BaselineConfig {
        &self.cfg
    }

    /// Records one finished run of `task`: how many tool calls it made and which tools.
    pub fn observe<S: Into<String>>(
        &mut self,
        task: &str,
        calls: u32,
        tools: impl IntoIterator<Item = S>,
    ) {
        let stats = self.tasks.entry(task.to_owned()).or_default();
        if stats.counts.len() as u32 >= self.cfg.max_runs {
            stats.counts.pop_front();
        }
        stats.counts.push_back(calls);
        stats.tools.extend(tools.into_iter().map(Into::into));
    }

    /// Runs recorded for `task`.
    pub fn runs(&self, task: &str) -> usize {
        self.tasks.get(task).map_or(0, |s| s.counts.len())
    }

    /// The most tool calls a run of `task` may make, once the task has `min_runs` runs.
    pub fn limit(&self, task: &str) -> Option<u32> {
        let stats = self.tasks.get(task)?;
        if (stats.counts.len() as u32) < self.cfg.min_runs {
            return None;
        }
        let mut sorted: Vec<u32> = stats.counts.iter().copied().collect();
        sorted.sort_unstable();
        let (q, factor) = match self.cfg.rule {
            BaselineRule::Percentile { percentile, factor } => (percentile, factor),
            BaselineRule::Median { factor } => (50.0, factor),
        };
        // Nearest-rank percentile.
        let rank = ((q / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
        let base = f64::from(sorted[rank.min(sorted.len()) - 1].max(1));
        Some((base * factor).floor().min(f64::from(u32::MAX)) as u32)
    }

    /// Whether `task` has ever used `tool` (`true` for tasks without enough runs to judge).
    pub fn knows_tool(&self, task: &str, tool: &str) -> bool {
        match self.tasks.get(task) {
            Some(s) if s.counts.len() as u32 >= self.cfg.min_runs => s.tools.contains(tool),
            _ => true,
        }
    }
}

/// A precomputed, read-only view of a [`Baseline`] for the check path: limits and tool sets per
/// task type, O(1) to consult.
#[derive(Debug, Clone, Default)]
pub struct BaselineSnapshot {
    limits: HashMap<String, u32>,
    tools: HashMap<String, BTreeSet<String>>,
    unexpected_tool: UnexpectedTool,
}

impl BaselineSnapshot {
    /// The call limit of `task`, if it is judged.
    pub fn limit(&self, task: &str) -> Option<u32> {
        self.limits.get(task).copied()
    }

    /// Whether `task` has used `tool` (`true` when the task is not judged yet).
    pub fn knows_tool(&self, task: &str, tool: &str) -> bool {
        self.tools.get(task).is_none_or(|t| t.contains(tool))
    }

    /// What to do with an unexpected tool.
    pub fn unexpected_tool(&self) -> UnexpectedTool {
        self.unexpected_tool
    }
}

impl Baseline {
    /// The check-path view of the baseline as it is now.
    pub fn snapshot(&self) -> BaselineSnapshot {
        let mut snap = BaselineSnapshot {
            unexpected_tool: self.cfg.unexpected_tool,
            ..BaselineSnapshot::default()
        };
        for (task, stats) in &self.tasks {
            if let Some(l) = self.limit(task) {
                snap.limits.insert(task.clone(), l);
                snap.tools.insert(task.clone(), stats.tools.clone());
            }
        }
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rule: BaselineRule) -> BaselineConfig {
        BaselineConfig {
            rule,
            min_runs: 3,
            max_runs: 5,
            unexpected_tool: UnexpectedTool::Deny,
        }
    }

    #[test]
    fn percentile_and_median_limits() {
        let mut b = Baseline::new(cfg(BaselineRule::Median { factor: 10.0 })).unwrap();
        b.observe("t", 4, ["a"]);
        b.observe("t", 6, ["b"]);
        assert_eq!(b.limit("t"), None, "too few runs");
        assert!(b.knows_tool("t", "zzz"), "not judged yet");
        b.observe("t", 5, ["a"]);
        assert_eq!(b.limit("t"), Some(50));
        assert!(b.knows_tool("t", "b") && !b.knows_tool("t", "zzz"));
        let mut p = Baseline::new(cfg(BaselineRule::Percentile {
            percentile: 100.0,
            factor: 2.0,
        }))
        .unwrap();
        for c in [1, 9, 3] {
            p.observe("t", c, ["a"]);
        }
        assert_eq!(p.limit("t"), Some(18));
        assert_eq!(p.limit("other"), None);
    }

    #[test]
    fn only_the_latest_runs_count() {
        let mut b = Baseline::new(cfg(BaselineRule::Percentile {
            percentile: 100.0,
            factor: 1.0,
        }))
        .unwrap();
        b.observe("t", 1000, ["a"]);
        for _ in 0..5 {
            b.observe("t", 10, ["a"]);
        }
        assert_eq!(b.runs("t"), 5);
        assert_eq!(b.limit("t"), Some(10));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = |c: BaselineConfig| c.validate().unwrap_err().field;
        assert_eq!(e(cfg(BaselineRule::Median { factor: 0.5 })), "rule.factor");
        assert_eq!(
            e(cfg(BaselineRule::Percentile {
                percentile: 0.0,
                factor: 2.0
            })),
            "rule.percentile"
        );
        assert_eq!(
            e(BaselineConfig {
                min_runs: 0,
                ..BaselineConfig::default()
            }),
            "min_runs"
        );
        let parsed: BaselineConfig = serde_json::from_str(
            r#"{"rule":{"median":{"factor":10}},"min_runs":5,"unexpected_tool":"deny"}"#,
        )
        .unwrap();
        assert_eq!(parsed.rule, BaselineRule::Median { factor: 10.0 });
        assert_eq!(parsed.unexpected_tool, UnexpectedTool::Deny);
    }
}
