//! The `[backend.audit]` section: how the PostgreSQL audit sink writes (see
//! `backend::postgres::audit`, feature `postgres`).
//!
//! ```toml
//! [backend.audit]
//! writer = "worker-1"         # this host's chain; default: `<hostname>-<pid>`
//! queue_capacity = 65536      # events waiting for the writer
//! max_batch = 4096            # events per group commit
//! wait_for_commit = false     # `record` returns on hand-off (true: once committed)
//! backpressure = "fail"       # a full queue denies the call ("block": waits up to `stall_timeout`)
//! stall_timeout = "5s"        # a batch not committed by then: every record is refused
//! retry_interval = "1s"       # reconnect attempts after the database was lost
//! checkpoint_every_records = 10000
//! checkpoint_every = "1s"
//! partition_span = "1d"       # one partition per span of write time; retention drops whole ones
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::DocumentError;

/// What a full writer queue does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditBackpressure {
    /// Refuse the record at once: the guard denies the call (the default).
    #[default]
    Fail,
    /// Wait for room, at most `stall_timeout`, then refuse.
    Block,
}

/// The document's `[backend.audit]` section (every field has a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// The name of this host's chain (1-64 of `[A-Za-z0-9._-]`). Each writing process needs its
    /// own; `None`: `<hostname>-<pid>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// Events queued for the writer thread at most (default 65 536).
    pub queue_capacity: usize,
    /// Events written in one group commit at most (default 4 096).
    pub max_batch: usize,
    /// `true`: `record` returns once the record is committed; `false` (default): once handed to
    /// the writer (a crash loses the queue; [`flush`](crate::audit::AuditSink::flush) waits).
    pub wait_for_commit: bool,
    /// What a full queue does (default `fail`).
    pub backpressure: AuditBackpressure,
    /// A batch not committed within this time marks the sink failed: every record is refused
    /// until the database answers again (default `"5s"`).
    #[serde(with = "crate::units::duration")]
    pub stall_timeout: Duration,
    /// How often a failed writer tries to reconnect (default `"1s"`).
    #[serde(with = "crate::units::duration")]
    pub retry_interval: Duration,
    /// A keyed checkpoint after this many records (default 10 000; 0 refused).
    pub checkpoint_every_records: u64,
    /// A keyed checkpoint this long after the first uncovered record (default `"1s"`).
    #[serde(with = "crate::units::duration")]
    pub checkpoint_every: Duration,
    /// The span of write time one partition holds (default `"1d"`, at least `"1m"`).
    #[serde(with = "crate::units::duration")]
    pub partition_span: Duration,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            writer: None,
            queue_capacity: 65_536,
            max_batch: 4_096,
            wait_for_commit: false,
            backpressure: AuditBackpressure::Fail,
            stall_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_secs(1),
            checkpoint_every_records: 10_000,
            checkpoint_every: Duration::from_secs(1),
            partition_span: Duration::from_secs(86_400),
        }
    }
}

/// Whether `s` can name a writer's chain: 1-64 of `[A-Za-z0-9._-]`.
pub(crate) fn is_writer_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl AuditSection {
    /// Checks what serde cannot, naming the field.
    pub(crate) fn validate(&self) -> Result<(), DocumentError> {
        let bad = |field: &str, why: &str| {
            Err(DocumentError::invalid(
                format!("backend.audit.{field}"),
                why.to_owned(),
            ))
        };
        if let Some(w) = &self.writer
            && !is_writer_name(w)
        {
            return bad(
                "writer",
                "use 1-64 characters of letters, digits, `.`, `_` or `-`",
            );
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity", "must be at least 1");
        }
        if self.max_batch == 0 {
            return bad("max_batch", "must be at least 1");
        }
        if self.stall_timeout.is_zero() {
            return bad("stall_timeout", "must be longer than zero");
        }
        if self.retry_interval.is_zero() {
            return bad("retry_interval", "must be longer than zero");
        }
        if self.checkpoint_every_records == 0 {
            return bad("checkpoint_every_records", "must be at least 1");
        }
        if self.checkpoint_every.is_zero() {
            return bad("checkpoint_every", "must be longer than zero");
        }
        if self.partition_span < Duration::from_secs(60) {
            return bad("partition_span", "must be at least 1m");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let ok = AuditSection::default();
        ok.validate().unwrap();
        let cases: Vec<(AuditSection, &str)> = vec![
            (
                AuditSection {
                    writer: Some("a b".into()),
                    ..ok.clone()
                },
                "writer",
            ),
            (
                AuditSection {
                    queue_capacity: 0,
                    ..ok.clone()
                },
                "queue_capacity",
            ),
            (
                AuditSection {
                    max_batch: 0,
                    ..ok.clone()
                },
                "max_batch",
            ),
            (
                AuditSection {
                    partition_span: Duration::from_secs(1),
                    ..ok.clone()
                },
                "partition_span",
            ),
            (
                AuditSection {
                    checkpoint_every_records: 0,
                    ..ok.clone()
                },
                "checkpoint_every_records",
            ),
        ];
        for (s, field) in cases {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("backend.audit.{field}")), "{e}");
        }
    }

    #[test]
    fn durations_need_units() {
        let s: AuditSection =
            serde_json::from_str(r#"{"stall_timeout":"2s","partition_span":"1h"}"#).unwrap();
        assert_eq!(s.stall_timeout, Duration::from_secs(2));
        assert!(serde_json::from_str::<AuditSection>(r#"{"stall_timeout":2}"#).is_err());
    }
}
