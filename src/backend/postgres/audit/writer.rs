//! The writer thread: takes batches off the queue, chains them, writes each with one binary
//! `COPY` in one transaction, checkpoints, reconnects after a failure and rewrites the batch
//! it could not confirm.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use postgres::Client;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;

use super::chain::{Checkpoint, GENESIS, Kind, record_hash};
use super::{Command, Item, PgAuditError, Shared, State, schema, unix_ns};
use crate::audit::file::CheckpointKey;
use crate::backend::postgres::{BackendError, PgBackend};

/// Where a writer's chain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub(super) seq: u64,
    pub(super) head: String,
    /// The partition of the last record (new records never go to an earlier one).
    pub(super) part: i64,
}

impl Chain {
    /// The head of `writer`'s chain, its last row re-hashed (a changed last row is refused).
    pub(super) fn load(
        client: &mut Client,
        schema: &str,
        writer: &str,
    ) -> Result<Chain, PgAuditError> {
        let row = client
            .query_opt(
                &format!(
                    "SELECT seq, prev, hash, part, event FROM {schema}.audit_records \
                     WHERE writer = $1 ORDER BY seq DESC LIMIT 1"
                ),
                &[&writer],
            )
            .map_err(BackendError::sql("reading the audit chain's head"))?;
        let Some(r) = row else {
            return Ok(Chain {
                seq: 0,
                head: GENESIS.to_owned(),
                part: 0,
            });
        };
        let seq = u64::try_from(r.get::<_, i64>(0)).unwrap_or(0);
        let prev: String = r.get(1);
        let hash: String = r.get(2);
        let event: Vec<u8> = r.get(4);
        if record_hash(writer, &prev, seq, &event) != hash {
            return Err(PgAuditError::Corrupt {
                writer: writer.to_owned(),
                seq,
                reason: "its hash is not the hash of its fields".into(),
            });
        }
        Ok(Chain {
            seq,
            head: hash,
            part: r.get(3),
        })
    }
}

/// One row as written.
pub(super) struct Row {
    pub(super) part: i64,
    pub(super) seq: u64,
    pub(super) at_ns: i64,
    pub(super) kind: Kind,
    pub(super) prev: String,
    pub(super) hash: String,
    pub(super) event: Vec<u8>,
}

/// A batch being written (kept for a retry until it is confirmed).
struct Attempt {
    rows: Vec<Row>,
    /// The last ticket it holds (0: none, only a checkpoint).
    last_ticket: u64,
    /// The flush request it completes, if any.
    flush: Option<u64>,
    start: Chain,
    end: Chain,
    events: u64,
    checkpointed: bool,
}

pub(super) struct Writer {
    backend: PgBackend,
    name: String,
    key: Option<CheckpointKey>,
    shared: Arc<Shared>,
    chain: Chain,
    client: Option<Client>,
    part_ready: Option<i64>,
    uncovered: u64,
    first_uncovered: Option<Instant>,
    pending: Option<Attempt>,
    /// A permanent failure: the thread only waits for close.
    dead: bool,
}

const COLUMNS: [Type; 8] = [
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
];

impl Writer {
    pub(super) fn new(
        backend: PgBackend,
        name: String,
        key: Option<CheckpointKey>,
        shared: Arc<Shared>,
        chain: Chain,
        client: Client,
    ) -> Self {
        Self {
            backend,
            name,
            key,
            shared,
            chain,
            client: Some(client),
            part_ready: None,
            uncovered: 0,
            first_uncovered: None,
            pending: None,
            dead: false,
        }
    }

    fn schema(&self) -> &str {
        self.backend.schema()
    }

    fn checkpoint_due(&self, st: &State) -> bool {
        if self.key.is_none() || self.uncovered == 0 {
            return false;
        }
        let s = &self.shared.settings;
        self.uncovered >= s.checkpoint_every_records
            || self
                .first_uncovered
                .is_some_and(|t| t.elapsed() >= s.checkpoint_every)
            || (st.queue.is_empty() && (st.closing || st.flush_req > st.flush_done))
    }

    pub(super) fn run(mut self) {
        loop {
            if self.dead {
                let mut st = self.shared.state.lock();
                while !st.closing {
                    self.shared.work.wait(&mut st);
                }
                return self.stop(st);
            }
            if self.client.is_none() && !self.reconnect() {
                let mut st = self.shared.state.lock();
                if st.closing {
                    let lost =
                        st.queue.len() as u64 + self.pending.as_ref().map_or(0, |a| a.events);
                    st.lost += lost;
                    st.queue.clear();
                    return self.stop(st);
                }
                let wait = self.shared.settings.retry_interval;
                self.shared.work.wait_for(&mut st, wait);
                continue;
            }
            if let Some(a) = self.pending.take() {
                self.commit(a);
                continue;
            }
            // Gather.
            let (items, flush, commands, closing) = {
                let mut st = self.shared.state.lock();
                loop {
                    if !st.queue.is_empty()
                        || !st.commands.is_empty()
                        || st.closing
                        || st.flush_req > st.flush_done
                        || self.checkpoint_due(&st)
                    {
                        break;
                    }
                    let timeout = match self.first_uncovered {
                        Some(t) if self.key.is_some() => self
                            .shared
                            .settings
                            .checkpoint_every
                            .saturating_sub(t.elapsed())
                            .max(Duration::from_millis(1)),
                        _ => Duration::from_secs(3600),
                    };
                    self.shared.work.wait_for(&mut st, timeout);
                }
                let n = st.queue.len().min(self.shared.settings.max_batch);
                let items: Vec<Item> = st.queue.drain(..n).collect();
                // A flush is answered only by a batch that empties the queue.
                let flush =
                    (st.queue.is_empty() && st.flush_req > st.flush_done).then_some(st.flush_req);
                // Commands (retention) run after this batch, so a queue that never empties
                // does not hold them back.
                let commands: Vec<Command> = st.commands.drain(..).collect();
                let closing = st.closing && st.queue.is_empty();
                let checkpoint = self.checkpoint_due(&st) || (closing && self.uncovered > 0);
                drop(st);
                let attempt = self.build(items, flush, checkpoint || (flush.is_some()));
                (attempt, flush, commands, closing)
            };
            let _ = flush;
            if let Some(a) = items {
                self.commit(a);
            }
            for c in commands {
                self.command(c);
            }
            if closing && self.pending.is_none() {
                let st = self.shared.state.lock();
                if st.queue.is_empty() {
                    return self.stop(st);
                }
            }
        }
    }

    fn stop(&self, mut st: parking_lot::MutexGuard<'_, State>) {
        st.stopped = true;
        for c in st.commands.drain(..) {
            let Command::Retain { reply, .. } = c;
            let _ = reply.send(Err(super::refused("the audit sink is closing")));
        }
        drop(st);
        self.shared.done.notify_all();
    }

    /// Chains `items` (and a checkpoint) after the current head. `None`: nothing to write.
    fn build(&self, items: Vec<Item>, flush: Option<u64>, checkpoint: bool) -> Option<Attempt> {
        let checkpoint =
            checkpoint && self.key.is_some() && (self.uncovered > 0 || !items.is_empty());
        if items.is_empty() && !checkpoint {
            if let Some(req) = flush {
                // Nothing to write: the flush is answered now.
                let mut st = self.shared.state.lock();
                st.flush_done = st.flush_done.max(req);
                drop(st);
                self.shared.done.notify_all();
            }
            return None;
        }
        let span =
            i64::try_from(self.shared.settings.partition_span.as_nanos()).unwrap_or(i64::MAX);
        let part = self
            .chain
            .part
            .max(unix_ns(self.shared.clock.wall()) / span.max(1));
        let mut seq = self.chain.seq;
        let mut head = self.chain.head.clone();
        let last_ticket = items.last().map_or(0, |i| i.ticket);
        let events = items.len() as u64;
        let mut rows = Vec::with_capacity(items.len() + 1);
        for it in items {
            seq += 1;
            let hash = record_hash(&self.name, &head, seq, &it.event);
            rows.push(Row {
                part,
                seq,
                at_ns: it.at_ns,
                kind: Kind::of(&it.event),
                prev: std::mem::replace(&mut head, hash.clone()),
                hash,
                event: it.event,
            });
        }
        if checkpoint && let Some(key) = &self.key {
            let now = unix_ns(self.shared.clock.wall());
            let cp = Checkpoint::sign(key, &self.name, seq, &head, u64::try_from(now).unwrap_or(0));
            let event = serde_json::to_vec(&cp).unwrap_or_default();
            seq += 1;
            let hash = record_hash(&self.name, &head, seq, &event);
            rows.push(Row {
                part,
                seq,
                at_ns: now,
                kind: Kind::Checkpoint,
                prev: std::mem::replace(&mut head, hash.clone()),
                hash,
                event,
            });
        }
        Some(Attempt {
            rows,
            last_ticket,
            flush,
            start: self.chain.clone(),
            end: Chain { seq, head, part },
            events,
            checkpointed: checkpoint,
        })
    }

    fn copy(&mut self, rows: &[Row]) -> Result<(), String> {
        let schema = self.backend.schema().to_owned();
        let part = rows.last().map_or(self.chain.part, |r| r.part);
        let Some(client) = self.client.as_mut() else {
            return Err("not connected".into());
        };
        if self.part_ready != Some(part) {
            schema::ensure_partition(client, &schema, part).map_err(|e| e.to_string())?;
            self.part_ready = Some(part);
        }
        write_rows(client, &schema, &self.name, rows).map_err(|e| e.to_string())
    }

    fn commit(&mut self, a: Attempt) {
        self.shared.state.lock().in_flight_since = Some(Instant::now());
        match self.copy(&a.rows) {
            Ok(()) => self.confirmed(a),
            Err(e) => self.failed(a, e),
        }
    }

    fn confirmed(&mut self, a: Attempt) {
        self.chain = a.end;
        if a.checkpointed {
            self.uncovered = 0;
            self.first_uncovered = None;
        } else if a.events > 0 {
            if self.uncovered == 0 {
                self.first_uncovered = Some(Instant::now());
            }
            self.uncovered += a.events;
        }
        let mut st = self.shared.state.lock();
        st.in_flight_since = None;
        if a.last_ticket > 0 {
            st.committed = st.committed.max(a.last_ticket);
        }
        if let Some(req) = a.flush {
            st.flush_done = st.flush_done.max(req);
        }
        if !st.writer_failed {
            // A stall a caller detected ends when the database answers.
            st.failed = None;
        }
        drop(st);
        self.shared.done.notify_all();
    }

    fn failed(&mut self, a: Attempt, why: String) {
        tracing::error!(writer = %self.name, error = %why, "postgres audit writer: a batch failed");
        self.client = None;
        self.part_ready = None;
        let mut st = self.shared.state.lock();
        st.in_flight_since = None;
        st.failed = Some(format!("writing to PostgreSQL failed: {why}"));
        st.writer_failed = true;
        if self.shared.settings.wait_for_commit {
            // Every caller of this batch and of the queue is waiting: they all get the error
            // (their calls are denied), and none of their records is written later.
            st.discarded = st.enqueued;
            st.queue.clear();
        } else {
            // Acknowledged: kept, and written once the database answers.
            self.pending = Some(a);
        }
        drop(st);
        self.shared.done.notify_all();
    }

    /// Connects again, retakes the writer's lock and reconciles the head with the batch that
    /// failed. `false`: not yet (or never: a permanent failure is recorded in the state).
    fn reconnect(&mut self) -> bool {
        let Ok(mut client) = self.backend.connect() else {
            return false;
        };
        let schema = self.schema().to_owned();
        match schema::lock_writer(&mut client, &schema, &self.name) {
            Ok(true) => {}
            Ok(false) => {
                self.permanent(format!(
                    "writer `{}` was taken by another process while the database was away",
                    self.name
                ));
                return false;
            }
            Err(_) => return false,
        }
        let head = match Chain::load(&mut client, &schema, &self.name) {
            Ok(h) => h,
            Err(PgAuditError::Corrupt { reason, seq, .. }) => {
                self.permanent(format!(
                    "the chain's last record {seq} does not verify: {reason}"
                ));
                return false;
            }
            Err(_) => return false,
        };
        let same = |a: &Chain, b: &Chain| a.seq == b.seq && a.head == b.head;
        self.client = Some(client);
        if let Some(a) = self.pending.take() {
            if same(&head, &a.end) {
                // The commit landed; only its acknowledgement was lost.
                self.confirmed(a);
            } else if same(&head, &a.start) {
                self.pending = Some(a);
            } else {
                self.client = None;
                self.permanent(format!(
                    "the chain's head (seq {}) is neither before nor after the failed batch",
                    head.seq
                ));
                return false;
            }
        } else if !same(&head, &self.chain) {
            self.client = None;
            self.permanent(format!(
                "the chain's head is seq {}, this writer wrote up to seq {}",
                head.seq, self.chain.seq
            ));
            return false;
        }
        let mut st = self.shared.state.lock();
        st.failed = None;
        st.writer_failed = false;
        drop(st);
        tracing::info!(writer = %self.name, "postgres audit writer: reconnected");
        self.shared.done.notify_all();
        true
    }

    fn permanent(&mut self, why: String) {
        tracing::error!(writer = %self.name, error = %why, "postgres audit writer: stopped for good");
        let mut st = self.shared.state.lock();
        let lost = st.queue.len() as u64 + self.pending.take().map_or(0, |a| a.events);
        st.lost += lost;
        st.queue.clear();
        st.discarded = st.enqueued;
        st.failed = Some(why);
        st.writer_failed = true;
        drop(st);
        self.dead = true;
        self.shared.done.notify_all();
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Retain { policy, now, reply } => {
                let r = self.retain(&policy, now);
                let _ = reply.send(r);
            }
        }
    }

    fn retain(
        &mut self,
        policy: &crate::audit::file::RetentionPolicy,
        now: SystemTime,
    ) -> Result<super::PgRetainReport, crate::audit::AuditError> {
        let schema = self.schema().to_owned();
        let span = self.shared.settings.partition_span;
        let Some(client) = self.client.as_mut() else {
            return Err(super::refused("the database is not reachable"));
        };
        let (report, end) = super::retention::apply(
            client,
            &schema,
            &self.name,
            self.key.as_ref(),
            &self.chain,
            span,
            self.shared.clock.wall(),
            policy,
            now,
        )?;
        if let Some(end) = end {
            self.chain = end;
            if self.key.is_some() {
                self.uncovered = 0;
                self.first_uncovered = None;
            }
        }
        Ok(report)
    }
}

/// Writes `rows` of `writer` with one binary `COPY` in one transaction.
pub(super) fn write_rows(
    client: &mut Client,
    schema: &str,
    writer: &str,
    rows: &[Row],
) -> Result<(), BackendError> {
    let mut tx = client
        .transaction()
        .map_err(BackendError::sql("beginning an audit batch"))?;
    copy_rows(&mut tx, schema, writer, rows)?;
    tx.commit()
        .map_err(BackendError::sql("committing an audit batch"))
}

/// The `COPY` of [`write_rows`], inside a transaction the caller commits.
pub(super) fn copy_rows(
    tx: &mut postgres::Transaction<'_>,
    schema: &str,
    writer: &str,
    rows: &[Row],
) -> Result<(), BackendError> {
    let sink = tx
        .copy_in(&format!(
            "COPY {schema}.audit_records (part, writer, seq, at_ns, kind, prev, hash, event) \
             FROM STDIN BINARY"
        ))
        .map_err(BackendError::sql("starting an audit COPY"))?;
    let mut w = BinaryCopyInWriter::new(sink, &COLUMNS);
    let first = rows.first().is_some_and(|r| r.seq == 1);
    for r in rows {
        let seq = i64::try_from(r.seq).unwrap_or(i64::MAX);
        w.write(&[
            &r.part,
            &writer,
            &seq,
            &r.at_ns,
            &r.kind.as_str(),
            &r.prev,
            &r.hash,
            &r.event,
        ])
        .map_err(BackendError::sql("writing an audit row"))?;
    }
    w.finish()
        .map_err(BackendError::sql("finishing an audit COPY"))?;
    if first {
        // A chain's first rows register it, in their transaction: `verify` then reports a
        // registered writer whose chain is gone (and never one that wrote nothing).
        super::schema::register(tx, schema, writer)?;
    }
    Ok(())
}
