//! Retention: dropping whole expired partitions from the oldest end, declared in the chain in
//! the same transaction.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use postgres::Client;

use super::chain::{Checkpoint, Declaration, Dropped, Kind, record_hash};
use super::writer::{Chain, Row, copy_rows};
use super::{refused, schema, unix_ns};
use crate::audit::AuditError;
use crate::audit::file::{CheckpointKey, RetentionPolicy};

/// What [`PgAuditSink::retain`](super::PgAuditSink::retain) did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PgRetainReport {
    /// The partitions dropped (ascending; empty: nothing had expired).
    pub partitions_dropped: Vec<i64>,
    /// The writers whose chains lost a prefix.
    pub writers: usize,
    /// The seq of the declaration in this writer's chain (`None`: nothing dropped).
    pub declaration_seq: Option<u64>,
    /// The oldest partition kept, if it was kept because something in it had not expired (or
    /// its class is kept forever).
    pub stopped_at: Option<i64>,
}

fn sql(what: &'static str) -> impl FnOnce(postgres::Error) -> AuditError {
    move |e| refused(format!("retention: {what}: {e}"))
}

/// Whether every event of partition `part` is past its class's keep at `now`.
fn expired(
    client: &mut Client,
    schema: &str,
    part: i64,
    policy: &RetentionPolicy,
    now: SystemTime,
) -> Result<bool, AuditError> {
    let rows = client
        .query(
            &format!(
                "SELECT coalesce(convert_from(event, 'UTF8')::jsonb->>'tollgate.retention', 'default'), \
                        max((convert_from(event, 'UTF8')::jsonb->>'time_unix_nano')::numeric)::text, \
                        bool_or(convert_from(event, 'UTF8')::jsonb->>'time_unix_nano' IS NULL) \
                 FROM {schema}.{} WHERE kind = 'event' GROUP BY 1",
                schema::partition_name(part)
            ),
            &[],
        )
        .map_err(sql("reading a partition's classes"))?;
    let now_ns = u128::try_from(unix_ns(now)).unwrap_or(0);
    for r in rows {
        let class: String = r.get(0);
        let newest: Option<String> = r.get(1);
        let untimed: Option<bool> = r.get(2);
        let (Some(keep), Some(newest), Some(false)) = (
            policy.keep_for(&class),
            newest.and_then(|t| t.parse::<u128>().ok()),
            untimed,
        ) else {
            return Ok(false);
        };
        // Strictly past: an event at exactly time + keep is kept.
        if newest + keep.as_nanos() >= now_ns {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Drops the expired prefix of partitions older than the previous span, declaring it (and
/// checkpointing the declaration when keyed) in `writer`'s chain in the same transaction.
/// Returns the new head of the chain when something was written.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply(
    client: &mut Client,
    schema: &str,
    writer: &str,
    key: Option<&CheckpointKey>,
    chain: &Chain,
    span: Duration,
    wall: SystemTime,
    policy: &RetentionPolicy,
    now: SystemTime,
) -> Result<(PgRetainReport, Option<Chain>), AuditError> {
    let span_ns = i64::try_from(span.as_nanos()).unwrap_or(i64::MAX).max(1);
    let current = unix_ns(wall) / span_ns;
    let mut report = PgRetainReport::default();
    let mut drop = Vec::new();
    for part in schema::partitions(client, schema).map_err(|e| refused(e.to_string()))? {
        // The live span and the one before it are never dropped: a writer whose clock is a
        // little behind may still write there.
        if part >= current - 1 || !expired(client, schema, part, policy, now)? {
            report.stopped_at = Some(part);
            break;
        }
        drop.push(part);
    }
    if drop.is_empty() {
        return Ok((report, None));
    }
    let own_part = chain.part.max(current);
    schema::ensure_partition(client, schema, own_part).map_err(|e| refused(e.to_string()))?;
    let mut tx = client.transaction().map_err(sql("beginning"))?;
    let names: Vec<String> = drop
        .iter()
        .map(|p| format!("{schema}.{}", schema::partition_name(*p)))
        .collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        names.join(", ")
    ))
    .map_err(sql("locking the partitions"))?;
    let union = names
        .iter()
        .map(|n| format!("SELECT writer, seq, hash FROM {n}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = tx
        .query(
            &format!("SELECT DISTINCT ON (writer) writer, seq, hash FROM ({union}) t ORDER BY writer, seq DESC"),
            &[],
        )
        .map_err(sql("reading what the partitions hold"))?;
    let mut dropped = BTreeMap::new();
    for r in rows {
        let w: String = r.get(0);
        let seq: i64 = r.get(1);
        dropped.insert(
            w,
            Dropped {
                last_seq: u64::try_from(seq).unwrap_or(0),
                head: r.get(2),
            },
        );
    }
    report.writers = dropped.len();
    let t = u64::try_from(unix_ns(wall)).unwrap_or(0);
    let decl = Declaration {
        event: "retention_applied".into(),
        time_unix_nano: t,
        evaluated_at: u64::try_from(unix_ns(now)).unwrap_or(0),
        partitions: drop.clone(),
        dropped,
    };
    let mut out = Vec::new();
    let mut seq = chain.seq;
    let mut head = chain.head.clone();
    let mut push = |event: Vec<u8>, kind: Kind, seq: &mut u64, head: &mut String| {
        *seq += 1;
        let hash = record_hash(writer, head, *seq, &event);
        out.push(Row {
            part: own_part,
            seq: *seq,
            at_ns: i64::try_from(t).unwrap_or(i64::MAX),
            kind,
            prev: std::mem::replace(head, hash.clone()),
            hash,
            event,
        });
    };
    let bytes = serde_json::to_vec(&decl).map_err(|e| refused(e.to_string()))?;
    push(bytes, Kind::Retention, &mut seq, &mut head);
    report.declaration_seq = Some(seq);
    if let Some(key) = key {
        let cp = Checkpoint::sign(key, writer, seq, &head, t);
        let bytes = serde_json::to_vec(&cp).map_err(|e| refused(e.to_string()))?;
        push(bytes, Kind::Checkpoint, &mut seq, &mut head);
    }
    copy_rows(&mut tx, schema, writer, &out).map_err(|e| refused(e.to_string()))?;
    tx.batch_execute(&format!("DROP TABLE {}", names.join(", ")))
        .map_err(sql("dropping the partitions"))?;
    tx.commit().map_err(sql("committing"))?;
    report.partitions_dropped = drop;
    Ok((
        report,
        Some(Chain {
            seq,
            head,
            part: own_part,
        }),
    ))
}
