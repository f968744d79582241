//! The approval queue's records in PostgreSQL, shared by every host of a fleet (feature
//! `postgres`): requests from any host, decisions from any approver, a `NOTIFY` to the waiting
//! hosts, single-use grants consumed exactly once across hosts.
//!
//! # Design
//!
//! [`PgApprovalStore`] implements [`ApprovalStore`]: each host opens its own
//! [`ApprovalQueue`] over its own store instance, on the same schema. The records form **one
//! chain in the database's order**: an append locks the single row of
//! `{schema}.approval_head` (`SELECT ... FOR UPDATE`), so appends from all hosts are serialised
//! (approvals are human-paced: the lock is never contended for long). Each row holds
//! `hash = SHA-256("tollgate-pg-approval-v1\n" || prev || "\n" || seq || "\n" || record)` and a
//! MAC under the [`StoreKey`] (a key derived from it for this purpose) over `seq` and `hash`.
//!
//! Under the lock, before its own row, the append reads every row other hosts appended since
//! this store last looked, verifies them, and checks its record against the state they give:
//! a decision or timeout only on a pending request, a consumption only of an approved one
//! and only once. A record the shared state does not admit is refused with
//! [`StoreError::Conflict`] and nothing is written: two hosts racing to consume one grant get
//! exactly one success, as do a timeout and a decision racing on one request. The rows read
//! this way are handed to the queue by [`fetch_new`](ApprovalStore::fetch_new) (through
//! [`ApprovalQueue::sync`]).
//!
//! Every append notifies channel `tollgate_approvals_<schema>` with the request id;
//! [`PgApprovalListener`] `LISTEN`s on it and syncs its queue, which wakes the host waiting on
//! that request; it also syncs every `poll` interval, so a lost notification delays, never
//! loses, a decision.
//!
//! # Integrity (as the file store)
//!
//! - A row written without the key (a database writer forging an approval) does not verify:
//!   [`load`](ApprovalStore::load) and every sync refuse it with [`StoreError::Tampered`]
//!   naming its seq, and the queue applies nothing after it.
//! - A row changed, deleted in the middle or reordered breaks the chain at that seq.
//! - The queue re-checks group membership, separation of duties and distinct approvers of
//!   every open request after each sync, as on replay: a store cannot smuggle in an approval
//!   the queue would refuse live.
//! - **Limit:** rows cut off the end together with the head row (a rollback to an earlier state
//!   of the table) are detected by a running store (it remembers the highest seq it verified:
//!   [`StoreError::Tampered`]), not by a freshly started one. A consumed grant re-armed that way
//!   on a fresh host is the attack this leaves open; keep the database's own audit/backups.
//!
//! Failure: every database error is returned to the queue, which then refuses the operation
//! (fail closed); a request whose timeout cannot be recorded stays unresolved, and a waiting
//! guard's own deadline denies it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use postgres::Client;
use sha2::{Digest, Sha256};

use super::{BackendError, PgBackend};
use crate::escalation::{
    ApprovalQueue, ApprovalStore, ArgsKey, Decision, StoreError, StoreKey, StoreRecord,
};

const HASH_DOMAIN: &[u8] = b"tollgate-pg-approval-v1\n";
const MAC_DERIVE: &[u8] = b"tollgate-pg-approval-row-mac-v1";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn db(what: &str) -> impl FnOnce(postgres::Error) -> StoreError + '_ {
    move |e| StoreError::Database(format!("{what}: {e}"))
}

/// What the shared state says about one request (enough to serialise the transitions hosts
/// race on; the queue keeps the full state).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shared {
    Pending {
        quorum: u32,
        approvers: BTreeSet<String>,
    },
    Approved,
    Closed(&'static str),
}

/// The state after `rec`, or why the shared state does not admit it.
fn transition(now: Option<&Shared>, rec: &StoreRecord) -> Result<Shared, String> {
    let pending = |s: Option<&Shared>| match s {
        Some(Shared::Pending { quorum, approvers }) => Ok((*quorum, approvers.clone())),
        Some(Shared::Approved) => Err("it is already approved".to_owned()),
        Some(Shared::Closed(how)) => Err(format!("it is already {how}")),
        None => Err("it was never submitted".to_owned()),
    };
    match rec {
        StoreRecord::Submitted { request } => match now {
            None => Ok(Shared::Pending {
                quorum: request.quorum.max(1),
                approvers: BTreeSet::new(),
            }),
            Some(_) => Err("it is submitted twice".into()),
        },
        StoreRecord::Escalated { .. } => {
            let (quorum, approvers) = pending(now)?;
            Ok(Shared::Pending { quorum, approvers })
        }
        StoreRecord::Decided {
            approver, decision, ..
        } => {
            let (quorum, mut approvers) = pending(now)?;
            match decision {
                Decision::Deny => Ok(Shared::Closed("denied")),
                _ => {
                    if !approvers.insert(approver.id.as_str().to_owned()) {
                        return Err(format!("`{}` already approved it", approver.id));
                    }
                    Ok(if approvers.len() >= quorum as usize {
                        Shared::Approved
                    } else {
                        Shared::Pending { quorum, approvers }
                    })
                }
            }
        }
        StoreRecord::TimedOut { approved, .. } => {
            pending(now)?;
            Ok(if *approved {
                Shared::Approved
            } else {
                Shared::Closed("timed out")
            })
        }
        StoreRecord::Consumed { .. } => match now {
            Some(Shared::Approved) => Ok(Shared::Closed("consumed")),
            Some(Shared::Closed("consumed")) => {
                Err("its grant was already consumed (by this or another host)".into())
            }
            Some(Shared::Closed(how)) => Err(format!("it is {how}")),
            Some(Shared::Pending { .. }) => Err("it is not approved".into()),
            None => Err("it was never submitted".into()),
        },
        _ => Err("a shared PostgreSQL store takes no repair declarations".into()),
    }
}

fn row_hash(prev: &str, seq: u64, record: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(record);
    crate::hex::encode(&h.finalize())
}

struct MacKey {
    id: String,
    secret: Vec<u8>,
}

impl MacKey {
    fn of(key: &StoreKey) -> Self {
        Self {
            id: key.id().to_owned(),
            secret: key.derive(MAC_DERIVE),
        }
    }

    fn mac(&self, seq: u64, hash: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        m.update(seq.to_string().as_bytes());
        m.update(b"\n");
        m.update(hash.as_bytes());
        m
    }

    fn sign(&self, seq: u64, hash: &str) -> String {
        crate::hex::encode(&self.mac(seq, hash).finalize().into_bytes())
    }

    fn verify(&self, seq: u64, hash: &str, mac_hex: &str) -> bool {
        match crate::hex::decode(mac_hex.as_bytes()) {
            Some(tag) if tag.len() == 32 => self.mac(seq, hash).verify_slice(&tag).is_ok(),
            _ => false,
        }
    }
}

struct Inner {
    client: Option<Client>,
    /// The last row verified.
    seq: u64,
    hash: String,
    states: HashMap<String, Shared>,
    /// Rows of other hosts verified during an append, not yet fetched by the queue.
    foreign: Vec<StoreRecord>,
}

/// The [`ApprovalStore`] on PostgreSQL (see the [module docs](self)).
pub struct PgApprovalStore {
    backend: PgBackend,
    keys: Vec<MacKey>,
    args_keys: Vec<ArgsKey>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for PgApprovalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgApprovalStore")
            .field("backend", &self.backend)
            .field("key", &self.keys[0].id)
            .finish_non_exhaustive()
    }
}

/// A row as read.
struct Row {
    seq: u64,
    prev: String,
    hash: String,
    key_id: String,
    mac: String,
    record: Vec<u8>,
}

impl PgApprovalStore {
    /// Connects, creates the tables when missing. `key` signs new rows; `retired` keys verify
    /// rows written under them. Every host must be given the same keys. Refuses to start without
    /// the database.
    pub fn open(
        backend: &PgBackend,
        key: &StoreKey,
        retired: &[StoreKey],
    ) -> Result<Self, BackendError> {
        let mut client = backend.connect()?;
        let s = backend.schema();
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {s}.approval_records (
                seq bigint PRIMARY KEY,
                prev text NOT NULL,
                hash text NOT NULL,
                key_id text NOT NULL,
                mac text NOT NULL,
                request_id text,
                kind text NOT NULL,
                record bytea NOT NULL
            );
            CREATE TABLE IF NOT EXISTS {s}.approval_head (
                one boolean PRIMARY KEY DEFAULT true CHECK (one),
                seq bigint NOT NULL,
                hash text NOT NULL
            );
            INSERT INTO {s}.approval_head (seq, hash) VALUES (0, '{GENESIS}') ON CONFLICT DO NOTHING;"
        );
        if let Err(e) = client.batch_execute(&ddl) {
            // Hosts racing on `IF NOT EXISTS`: the loser's duplicate means the tables exist.
            let dup = matches!(e.code(), Some(c) if *c == postgres::error::SqlState::UNIQUE_VIOLATION
                || *c == postgres::error::SqlState::DUPLICATE_TABLE);
            if !dup {
                return Err(BackendError::sql("creating approval tables")(e));
            }
        }
        let all: Vec<&StoreKey> = std::iter::once(key).chain(retired).collect();
        Ok(Self {
            backend: backend.clone(),
            keys: all.iter().map(|k| MacKey::of(k)).collect(),
            args_keys: all.iter().map(|k| ArgsKey::from_store_key(k)).collect(),
            inner: Mutex::new(Inner {
                client: Some(client),
                seq: 0,
                hash: GENESIS.to_owned(),
                states: HashMap::new(),
                foreign: Vec::new(),
            }),
        })
    }

    /// The `NOTIFY` channel of this schema.
    pub fn channel(&self) -> String {
        channel(self.backend.schema())
    }

    fn client<'a>(&self, inner: &'a mut Inner) -> Result<&'a mut Client, StoreError> {
        if inner.client.as_ref().is_none_or(|c| c.is_closed()) {
            inner.client = Some(
                self.backend
                    .connect()
                    .map_err(|e| StoreError::Database(e.to_string()))?,
            );
        }
        inner
            .client
            .as_mut()
            .ok_or_else(|| StoreError::Database("not connected".into()))
    }

    /// Verifies `row` after (seq, hash) and returns its record.
    fn check(&self, at: (u64, &str), row: &Row) -> Result<StoreRecord, StoreError> {
        let bad = |reason: String| StoreError::Tampered {
            seq: row.seq,
            reason,
        };
        if row.seq != at.0 + 1 {
            return Err(bad(format!("expected seq {} here", at.0 + 1)));
        }
        if row.prev != at.1 {
            return Err(bad(format!("prev does not link to record {}", at.0)));
        }
        if row_hash(&row.prev, row.seq, &row.record) != row.hash {
            return Err(bad("its hash is not the hash of its fields".into()));
        }
        let Some(key) = self.keys.iter().find(|k| k.id == row.key_id) else {
            return Err(bad(format!("signed with unknown key `{}`", row.key_id)));
        };
        if !key.verify(row.seq, &row.hash, &row.mac) {
            return Err(bad(
                "its MAC does not verify (written without the store key)".into(),
            ));
        }
        serde_json::from_slice(&row.record).map_err(|e| bad(format!("unreadable record: {e}")))
    }

    /// Reads, verifies and admits every row after the last one verified.
    fn catch_up(
        &self,
        inner: &mut Inner,
        tx: &mut impl postgres::GenericClient,
    ) -> Result<Vec<StoreRecord>, StoreError> {
        let s = self.backend.schema();
        let rows = tx
            .query(
                &format!(
                    "SELECT seq, prev, hash, key_id, mac, record FROM {s}.approval_records \
                     WHERE seq > $1 ORDER BY seq"
                ),
                &[&i64::try_from(inner.seq).unwrap_or(i64::MAX)],
            )
            .map_err(db("reading approval records"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let row = Row {
                seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
                prev: r.get(1),
                hash: r.get(2),
                key_id: r.get(3),
                mac: r.get(4),
                record: r.get(5),
            };
            let rec = self.check((inner.seq, &inner.hash), &row)?;
            let id = rec.id().map(|i| i.as_str().to_owned()).unwrap_or_default();
            let next =
                transition(inner.states.get(&id), &rec).map_err(|reason| StoreError::Tampered {
                    seq: row.seq,
                    reason: format!("request `{id}`: {reason}"),
                })?;
            inner.states.insert(id, next);
            inner.seq = row.seq;
            inner.hash = row.hash;
            out.push(rec);
        }
        Ok(out)
    }

    /// The head row must not be behind what this store verified (a rollback of the table).
    fn check_head(inner: &Inner, seq: u64, hash: &str) -> Result<(), StoreError> {
        if seq < inner.seq || (seq == inner.seq && hash != inner.hash) {
            return Err(StoreError::Tampered {
                seq,
                reason: format!(
                    "the store's head went back to seq {seq} (this host verified up to {})",
                    inner.seq
                ),
            });
        }
        Ok(())
    }
}

fn channel(schema: &str) -> String {
    format!("tollgate_approvals_{schema}")
}

impl ApprovalStore for PgApprovalStore {
    fn append(&self, rec: &StoreRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(rec).map_err(|e| StoreError::Serialize(e.to_string()))?;
        // Refuse what no reader could read back (e.g. arguments nested too deeply).
        if let Err(e) = serde_json::from_slice::<StoreRecord>(&bytes) {
            return Err(StoreError::Unrepresentable {
                id: rec.id().cloned(),
                reason: e.to_string(),
            });
        }
        let id = rec.id().map(|i| i.as_str().to_owned()).unwrap_or_default();
        let s = self.backend.schema().to_owned();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut client = inner.client.take();
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = Some(
                self.backend
                    .connect()
                    .map_err(|e| StoreError::Database(e.to_string()))?,
            );
        }
        let Some(mut client) = client else {
            return Err(StoreError::Database("not connected".into()));
        };
        let result = (|| {
            let mut tx = client.transaction().map_err(db("beginning"))?;
            let head = tx
                .query_one(
                    &format!("SELECT seq, hash FROM {s}.approval_head FOR UPDATE"),
                    &[],
                )
                .map_err(db("locking the approval head"))?;
            let head_seq = u64::try_from(head.get::<_, i64>(0)).unwrap_or(0);
            let head_hash: String = head.get(1);
            Self::check_head(inner, head_seq, &head_hash)?;
            let foreign = self.catch_up(inner, &mut tx)?;
            if inner.seq != head_seq || inner.hash != head_hash {
                return Err(StoreError::Tampered {
                    seq: head_seq,
                    reason: format!(
                        "the head names seq {head_seq} but the records end at seq {}",
                        inner.seq
                    ),
                });
            }
            let next =
                transition(inner.states.get(&id), rec).map_err(|reason| StoreError::Conflict {
                    id: rec
                        .id()
                        .cloned()
                        .unwrap_or_else(|| crate::escalation::ApprovalId::new("-")),
                    reason,
                });
            let next = match next {
                Ok(n) => n,
                Err(e) => {
                    inner.foreign.extend(foreign);
                    return Err(e);
                }
            };
            let seq = inner.seq + 1;
            let hash = row_hash(&inner.hash, seq, &bytes);
            let mac = self.keys[0].sign(seq, &hash);
            tx.execute(
                &format!(
                    "INSERT INTO {s}.approval_records (seq, prev, hash, key_id, mac, request_id, kind, record) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &i64::try_from(seq).unwrap_or(i64::MAX),
                    &inner.hash,
                    &hash,
                    &self.keys[0].id,
                    &mac,
                    &id,
                    &rec.kind(),
                    &bytes,
                ],
            )
            .map_err(db("inserting the approval record"))?;
            tx.execute(
                &format!("UPDATE {s}.approval_head SET seq = $1, hash = $2"),
                &[&i64::try_from(seq).unwrap_or(i64::MAX), &hash],
            )
            .map_err(db("moving the approval head"))?;
            tx.execute("SELECT pg_notify($1, $2)", &[&channel(&s), &id])
                .map_err(db("notifying"))?;
            tx.commit().map_err(db("committing"))?;
            inner.foreign.extend(foreign);
            inner.states.insert(id.clone(), next);
            inner.seq = seq;
            inner.hash = hash;
            Ok(())
        })();
        if !matches!(result, Err(StoreError::Database(_))) {
            inner.client = Some(client);
        }
        result
    }

    fn load(&self) -> Result<Vec<StoreRecord>, StoreError> {
        let mut inner = self.inner.lock();
        let (seq0, hash0) = (inner.seq, inner.hash.clone());
        inner.seq = 0;
        inner.hash = GENESIS.to_owned();
        inner.states.clear();
        inner.foreign.clear();
        let s = self.backend.schema().to_owned();
        let mut client = match self.client(&mut inner) {
            Ok(_) => inner.client.take(),
            Err(e) => return Err(e),
        };
        let result = (|| {
            let c = client
                .as_mut()
                .ok_or_else(|| StoreError::Database("not connected".into()))?;
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .start()
                .map_err(db("beginning"))?;
            let records = self.catch_up(&mut inner, &mut tx)?;
            let head = tx
                .query_one(&format!("SELECT seq, hash FROM {s}.approval_head"), &[])
                .map_err(db("reading the approval head"))?;
            let head_seq = u64::try_from(head.get::<_, i64>(0)).unwrap_or(0);
            let head_hash: String = head.get(1);
            tx.commit().map_err(db("ending"))?;
            if head_seq != inner.seq || head_hash != inner.hash {
                return Err(StoreError::Tampered {
                    seq: head_seq,
                    reason: format!(
                        "the head names seq {head_seq} but the records end at seq {}",
                        inner.seq
                    ),
                });
            }
            if inner.seq < seq0 || (inner.seq == seq0 && inner.hash != hash0) {
                return Err(StoreError::Tampered {
                    seq: inner.seq,
                    reason: format!("the store went back from seq {seq0}"),
                });
            }
            Ok(records)
        })();
        inner.client = client;
        result
    }

    fn args_keys(&self) -> Result<Vec<ArgsKey>, StoreError> {
        Ok(self.args_keys.clone())
    }

    fn fetch_new(&self) -> Result<Vec<StoreRecord>, StoreError> {
        let mut inner = self.inner.lock();
        let mut client = match self.client(&mut inner) {
            Ok(_) => inner.client.take(),
            Err(e) => return Err(e),
        };
        let result = (|| {
            let c = client
                .as_mut()
                .ok_or_else(|| StoreError::Database("not connected".into()))?;
            let mut new = std::mem::take(&mut inner.foreign);
            new.extend(self.catch_up(&mut inner, c)?);
            Ok(new)
        })();
        inner.client = client;
        result
    }
}

/// Keeps a queue in step with the shared store: `LISTEN`s on the store's channel and calls
/// [`ApprovalQueue::sync`] on every notification and at least every `poll`. Stops when dropped
/// (within `poll`) or when the queue is gone.
#[derive(Debug)]
pub struct PgApprovalListener {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl PgApprovalListener {
    /// [`start`](Self::start) with the poll interval of the document's `[backend.approvals]`.
    pub fn from_section(
        backend: &PgBackend,
        section: &crate::backend::approvals::ApprovalsSection,
        queue: Weak<ApprovalQueue>,
    ) -> Result<Self, BackendError> {
        Self::start(backend, queue, section.poll)
    }

    /// Starts the listener thread for `queue` (held weakly) on `backend`'s schema.
    pub fn start(
        backend: &PgBackend,
        queue: Weak<ApprovalQueue>,
        poll: Duration,
    ) -> Result<Self, BackendError> {
        let mut client = backend.connect()?;
        let ch = channel(backend.schema());
        client
            .batch_execute(&format!("LISTEN {ch}"))
            .map_err(BackendError::sql("listening for approvals"))?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let backend = backend.clone();
        let handle = std::thread::Builder::new()
            .name("tollgate-pg-approvals".into())
            .spawn(move || listen(client, backend, ch, queue, poll, flag))
            .map_err(|e| BackendError::BadSchema(format!("cannot start the listener: {e}")))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

fn listen(
    mut client: Client,
    backend: PgBackend,
    ch: String,
    queue: Weak<ApprovalQueue>,
    poll: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use postgres::fallible_iterator::FallibleIterator;
    use std::sync::atomic::Ordering;
    while !stop.load(Ordering::Relaxed) {
        let lost = {
            let mut n = client.notifications();
            let mut it = n.timeout_iter(poll);
            it.next().is_err()
        };
        let Some(q) = queue.upgrade() else {
            return;
        };
        if let Err(e) = q.sync() {
            tracing::warn!(error = %e, "approval listener: sync failed");
        }
        let _ = q.tick();
        drop(q);
        if lost || client.is_closed() {
            std::thread::sleep(poll.min(Duration::from_millis(200)));
            if let Ok(mut c) = backend.connect()
                && c.batch_execute(&format!("LISTEN {ch}")).is_ok()
            {
                client = c;
            }
        }
    }
}

impl Drop for PgApprovalListener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_consumed_once_and_a_decided_request_cannot_time_out() {
        let consumed = Shared::Closed("consumed");
        let rec = StoreRecord::Consumed {
            id: crate::escalation::ApprovalId::new("a"),
            at_ms: 1,
        };
        assert_eq!(transition(Some(&Shared::Approved), &rec).unwrap(), consumed);
        assert!(transition(Some(&consumed), &rec).is_err());
        let timeout = StoreRecord::TimedOut {
            id: crate::escalation::ApprovalId::new("a"),
            approved: false,
            at_ms: 1,
        };
        assert!(transition(Some(&Shared::Approved), &timeout).is_err());
        assert!(transition(Some(&Shared::Closed("denied")), &timeout).is_err());
    }

    #[test]
    fn row_macs_bind_seq_and_hash() {
        let k = MacKey::of(&StoreKey::new("k", vec![1; 32]).unwrap());
        let m = k.sign(3, "h");
        assert!(k.verify(3, "h", &m));
        assert!(!k.verify(4, "h", &m));
        assert!(!k.verify(3, "g", &m));
    }
}
