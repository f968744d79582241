//! Verifying and querying the trail in PostgreSQL, streamed through a cursor: memory stays
//! bounded by the batch size and the number of writers, whatever the number of records.

use std::collections::{BTreeMap, BTreeSet};

use postgres::Client;
use serde_json::Value;
use thiserror::Error;

use super::chain::{Checkpoint, Declaration, GENESIS, Kind, record_hash};
use crate::audit::file::CheckpointKey;
use crate::audit::query::Query;
use crate::backend::postgres::BackendError;

/// Rows fetched per round trip.
const FETCH: i32 = 2_000;

/// Why the trail does not verify. Names the first bad record (writer, seq).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PgVerifyError {
    /// The database could not be read.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A record does not verify.
    #[error("audit writer `{writer}`, record seq {seq}: {reason}")]
    Broken {
        /// The writer's chain.
        writer: String,
        /// The record.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A chain starts after seq 1 and no retention declaration explains the missing prefix.
    #[error(
        "audit writer `{writer}`: the chain starts at seq {seq}; records 1..{} are missing and no \
         {}retention declaration covers them",
        seq - 1,
        if *.keyed { "checkpointed " } else { "" }
    )]
    SeqGap {
        /// The writer's chain.
        writer: String,
        /// Its first record.
        seq: u64,
        /// Whether the declaration had to be covered by a checkpoint.
        keyed: bool,
    },
    /// A registered writer has no records and no declaration dropped them.
    #[error(
        "audit writer `{writer}` is registered but its chain is gone, and no retention declared it"
    )]
    MissingChain {
        /// The writer.
        writer: String,
    },
}

/// What [`verify`] found in a trail that verifies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PgVerifyReport {
    /// Writers with a chain.
    pub writers: u64,
    /// Records read (the sink's own included).
    pub records: u64,
    /// Guard events among them.
    pub events: u64,
    /// Checkpoints (verified by a key when keys were given).
    pub checkpoints: u64,
    /// Retention declarations.
    pub declarations: u64,
    /// Records after the last checkpoint of their chain, summed over writers (meaningful with
    /// keys).
    pub uncovered_records: u64,
    /// Per writer: (first seq, last seq).
    pub chains: BTreeMap<String, (u64, u64)>,
}

/// One record of the trail, as [`query`] yields it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PgRecord {
    /// The writer's chain.
    pub writer: String,
    /// Its seq in that chain.
    pub seq: u64,
    /// The event.
    pub event: Value,
}

struct Cursor {
    writer: String,
    first: u64,
    first_prev: String,
    seq: u64,
    hash: String,
    /// Declarations of this chain waiting for a checkpoint (their index in `decls`).
    waiting: Vec<usize>,
    since_checkpoint: u64,
}

struct Decl {
    dropped: BTreeMap<String, (u64, String)>,
    covered: bool,
}

/// Verifies every chain of the trail in `schema`: each record's hash and link, seqs without
/// gaps, checkpoints (and their MACs when `keys` are given: with keys, a checkpoint none of them
/// signed is an error), and every chain's start against the retention declarations. Reads one
/// consistent snapshot through a cursor.
pub fn verify(
    client: &mut Client,
    schema: &str,
    keys: &[CheckpointKey],
) -> Result<PgVerifyReport, PgVerifyError> {
    let keyed = !keys.is_empty();
    let mut report = PgVerifyReport::default();
    let mut decls: Vec<Decl> = Vec::new();
    let mut starts: Vec<(String, u64, String)> = Vec::new();
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(BackendError::sql("starting a read-only snapshot"))?;
    let registered: BTreeSet<String> = tx
        .query(&format!("SELECT writer FROM {schema}.audit_writers"), &[])
        .map_err(BackendError::sql("reading the audit writers"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let portal = tx
        .bind(
            &format!(
                "SELECT writer, seq, kind, prev, hash, event FROM {schema}.audit_records \
                 ORDER BY writer, seq, part"
            ),
            &[],
        )
        .map_err(BackendError::sql("reading the audit records"))?;
    let mut cur: Option<Cursor> = None;
    let finish =
        |c: Cursor, report: &mut PgVerifyReport, starts: &mut Vec<(String, u64, String)>| {
            report.writers += 1;
            report.uncovered_records += c.since_checkpoint;
            report.chains.insert(c.writer.clone(), (c.first, c.seq));
            if c.first > 1 {
                starts.push((c.writer, c.first, c.first_prev));
            }
        };
    loop {
        let rows = tx
            .query_portal(&portal, FETCH)
            .map_err(BackendError::sql("reading the audit records"))?;
        if rows.is_empty() {
            break;
        }
        for r in rows {
            let writer: String = r.get(0);
            let seq = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
            let kind_col: String = r.get(2);
            let prev: String = r.get(3);
            let hash: String = r.get(4);
            let event: Vec<u8> = r.get(5);
            let broken = |reason: String| PgVerifyError::Broken {
                writer: writer.clone(),
                seq,
                reason,
            };
            if cur.as_ref().is_some_and(|c| c.writer != writer)
                && let Some(c) = cur.take()
            {
                finish(c, &mut report, &mut starts);
            }
            match &mut cur {
                None => {
                    if seq == 0 {
                        return Err(broken("seq 0 does not exist".into()));
                    }
                    if seq == 1 && prev != GENESIS {
                        return Err(broken("the first record's prev is not the genesis".into()));
                    }
                    cur = Some(Cursor {
                        writer: writer.clone(),
                        first: seq,
                        first_prev: prev.clone(),
                        seq: seq - 1,
                        hash: prev.clone(),
                        waiting: Vec::new(),
                        since_checkpoint: 0,
                    });
                }
                Some(c) => {
                    if seq != c.seq + 1 {
                        return Err(broken(if seq <= c.seq {
                            format!("seq {seq} repeats or goes back (after {})", c.seq)
                        } else {
                            format!("records {}..{} are missing", c.seq + 1, seq - 1)
                        }));
                    }
                    if prev != c.hash {
                        return Err(broken(format!(
                            "prev does not link to the hash of record {}",
                            c.seq
                        )));
                    }
                }
            }
            let c = cur.as_mut().ok_or_else(|| broken("no chain".into()))?;
            if record_hash(&writer, &prev, seq, &event) != hash {
                return Err(broken(
                    "its hash is not the hash of its fields (the event was changed)".into(),
                ));
            }
            let kind = Kind::of(&event);
            if kind.as_str() != kind_col {
                return Err(broken(format!(
                    "its kind column says `{kind_col}`, its event is a `{}`",
                    kind.as_str()
                )));
            }
            report.records += 1;
            match kind {
                Kind::Event => {
                    report.events += 1;
                    c.since_checkpoint += 1;
                }
                Kind::Checkpoint => {
                    let cp: Checkpoint = serde_json::from_slice(&event)
                        .map_err(|e| broken(format!("unreadable checkpoint: {e}")))?;
                    if cp.writer != writer || cp.seq + 1 != seq || cp.head != c.hash {
                        return Err(broken(
                            "the checkpoint does not describe the record before it".into(),
                        ));
                    }
                    if keyed && !cp.verifies(keys) {
                        return Err(broken(format!(
                            "the checkpoint's MAC does not verify under key `{}`",
                            cp.key_id
                        )));
                    }
                    report.checkpoints += 1;
                    c.since_checkpoint = 0;
                    for i in c.waiting.drain(..) {
                        decls[i].covered = true;
                    }
                }
                Kind::Retention => {
                    let d: Declaration = serde_json::from_slice(&event)
                        .map_err(|e| broken(format!("unreadable retention declaration: {e}")))?;
                    report.declarations += 1;
                    c.since_checkpoint += 1;
                    c.waiting.push(decls.len());
                    decls.push(Decl {
                        dropped: d
                            .dropped
                            .into_iter()
                            .map(|(w, x)| (w, (x.last_seq, x.head)))
                            .collect(),
                        covered: false,
                    });
                }
            }
            c.seq = seq;
            c.hash = hash;
        }
    }
    if let Some(c) = cur.take() {
        finish(c, &mut report, &mut starts);
    }
    tx.commit()
        .map_err(BackendError::sql("ending the snapshot"))?;
    let declared = |w: &str, last: Option<(u64, &str)>| {
        decls.iter().any(|d| {
            (d.covered || !keyed)
                && d.dropped.get(w).is_some_and(|(l, h)| match last {
                    Some((seq, prev)) => *l == seq && h == prev,
                    None => true,
                })
        })
    };
    for (writer, first, prev) in starts {
        if !declared(&writer, Some((first - 1, &prev))) {
            return Err(PgVerifyError::SeqGap {
                writer,
                seq: first,
                keyed,
            });
        }
    }
    for w in registered {
        if !report.chains.contains_key(&w) && !declared(&w, None) {
            return Err(PgVerifyError::MissingChain { writer: w });
        }
    }
    Ok(report)
}

/// Streams the guard events of the trail in `schema` that `q` matches (its filters; the
/// sink's own records are skipped), oldest first by event time, to `each`; stops early when
/// `each` returns `false`. Returns how many matched. Does not verify: run [`verify`] for that.
pub fn query(
    client: &mut Client,
    schema: &str,
    q: &Query,
    mut each: impl FnMut(PgRecord) -> bool,
) -> Result<u64, PgVerifyError> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(BackendError::sql("starting a read-only snapshot"))?;
    let portal = tx
        .bind(
            &format!(
                "SELECT writer, seq, event FROM {schema}.audit_records WHERE kind = 'event' \
                 ORDER BY at_ns, writer, seq"
            ),
            &[],
        )
        .map_err(BackendError::sql("reading the audit records"))?;
    let mut n = 0;
    loop {
        let rows = tx
            .query_portal(&portal, FETCH)
            .map_err(BackendError::sql("reading the audit records"))?;
        if rows.is_empty() {
            break;
        }
        for r in rows {
            let writer: String = r.get(0);
            let seq = u64::try_from(r.get::<_, i64>(1)).unwrap_or(0);
            let bytes: Vec<u8> = r.get(2);
            let event: Value =
                serde_json::from_slice(&bytes).map_err(|e| PgVerifyError::Broken {
                    writer: writer.clone(),
                    seq,
                    reason: format!("the event is not JSON: {e}"),
                })?;
            if q.matches(&event) {
                n += 1;
                if !each(PgRecord { writer, seq, event }) {
                    return Ok(n);
                }
            }
        }
    }
    Ok(n)
}
