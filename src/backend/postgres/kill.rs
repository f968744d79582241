//! The kill switch on PostgreSQL: `kill_meta` (one row: the revision), `kill_switch` (the
//! suspensions in force, who, when, why) and `kill_log` (every change, never updated). A change
//! is one transaction that takes the revision row's lock, so changes from many hosts serialise;
//! it ends with `pg_notify`, which PostgreSQL delivers to the listeners at commit.
//!
//! A follower's watch holds its own connection, `LISTEN`s on the schema's channel, waits for a
//! notification or the poll interval, then reads the whole state in one read-only snapshot.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator;

use super::{BackendError, PgBackend};
use crate::backend::kill::{
    Applied, KillAction, KillChange, KillError, KillState, KillSwitchStore, KillWatch, Suspension,
};

/// The shared kill switch in the backend's schema.
#[derive(Clone)]
pub struct PgKillSwitch {
    backend: PgBackend,
    channel: String,
    /// The connection `load` and `apply` reuse (dropped after an error).
    client: Arc<Mutex<Option<Client>>>,
}

impl std::fmt::Debug for PgKillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgKillSwitch")
            .field("backend", &self.backend)
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// Creates the tables unless another host just did (a racing `CREATE ... IF NOT EXISTS` can
/// fail on the catalog's unique index: the tables are there either way).
pub(crate) fn create_tables(client: &mut Client, ddl: &str) -> Result<(), BackendError> {
    for attempt in 0..3 {
        match client.batch_execute(ddl) {
            Ok(()) => return Ok(()),
            Err(e)
                if attempt < 2
                    && (e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
                        || e.code() == Some(&postgres::error::SqlState::DUPLICATE_TABLE)
                        || e.code() == Some(&postgres::error::SqlState::DUPLICATE_OBJECT)) => {}
            Err(e) => return Err(BackendError::sql("creating tables")(e)),
        }
    }
    Ok(())
}

impl PgKillSwitch {
    /// Connects once to create the tables (when missing) and returns the store.
    ///
    /// The state (revision 0, nothing suspended) is created the first time only; the table
    /// `kill_created` records that it was, and is never dropped by tollgate. If the state's
    /// tables are dropped afterwards, they are recreated empty, without a revision row: reading
    /// the state is then an error ([`KillError::Missing`]) and followers keep their guards
    /// suspended (they also refuse any revision lower than the one they applied). To start over
    /// deliberately, `DELETE FROM kill_created` before opening; running followers stay
    /// suspended until restarted or until the revision is back where they were.
    pub fn open(backend: PgBackend) -> Result<Self, KillError> {
        let s = backend.schema();
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {s}.kill_created (
                 id int PRIMARY KEY CHECK (id = 1),
                 at timestamptz NOT NULL DEFAULT clock_timestamp());
             CREATE TABLE IF NOT EXISTS {s}.kill_meta (
                 id int PRIMARY KEY CHECK (id = 1),
                 revision bigint NOT NULL CHECK (revision >= 0));
             CREATE TABLE IF NOT EXISTS {s}.kill_switch (
                 scope text NOT NULL CHECK (scope IN ('global', 'agent', 'run')),
                 target text NOT NULL,
                 by_name text NOT NULL,
                 reason text,
                 at timestamptz NOT NULL DEFAULT clock_timestamp(),
                 revision bigint NOT NULL,
                 PRIMARY KEY (scope, target));
             CREATE TABLE IF NOT EXISTS {s}.kill_log (
                 revision bigint PRIMARY KEY,
                 action text NOT NULL CHECK (action IN ('suspend', 'resume')),
                 scope text NOT NULL,
                 target text NOT NULL,
                 by_name text NOT NULL,
                 reason text,
                 at timestamptz NOT NULL DEFAULT clock_timestamp());"
        );
        let mut client = backend.connect()?;
        create_tables(&mut client, &ddl)?;
        // The revision row is seeded at 0 only the first time: `kill_created` records that it
        // was (for a deployment from before the marker, the row being there records it). Once
        // created, a missing row (the tables dropped and recreated) stays missing: reading the
        // state fails and followers keep their guards suspended, instead of a suspended fleet
        // resuming at revision 0. One statement: concurrent first opens seed once.
        client
            .batch_execute(&format!(
                "WITH seeded AS (
                     INSERT INTO {s}.kill_meta (id, revision)
                     SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM {s}.kill_created)
                     ON CONFLICT DO NOTHING RETURNING id)
                 INSERT INTO {s}.kill_created (id) VALUES (1) ON CONFLICT DO NOTHING"
            ))
            .map_err(BackendError::sql("recording the kill switch's creation"))?;
        if client
            .query_opt(&format!("SELECT 1 FROM {s}.kill_meta WHERE id = 1"), &[])
            .map_err(BackendError::sql("reading the kill switch revision"))?
            .is_none()
        {
            tracing::error!(
                schema = %s,
                "kill switch: {s}.kill_meta is empty although the state was created (see \
                 {s}.kill_created); not recreated: followers keep their guards suspended"
            );
        }
        // Channel names are identifiers of at most 63 bytes; two schemas sharing a long prefix
        // share a channel, which only wakes a follower for nothing (it reads its own schema).
        let mut channel = format!("tollgate_kill_{s}");
        channel.truncate(63);
        Ok(PgKillSwitch {
            backend,
            channel,
            client: Arc::new(Mutex::new(Some(client))),
        })
    }

    /// The `NOTIFY` channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    fn read(&self, client: &mut Client) -> Result<KillState, KillError> {
        let s = self.backend.schema();
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(BackendError::sql("reading the kill switch"))?;
        let meta = tx
            .query_opt(
                &format!("SELECT revision FROM {s}.kill_meta WHERE id = 1"),
                &[],
            )
            .map_err(BackendError::sql("reading the kill switch revision"))?
            .ok_or_else(|| KillError::Missing(format!("{s}.kill_meta")))?;
        let mut state = KillState {
            revision: u64::try_from(meta.get::<_, i64>(0)).unwrap_or(0),
            ..KillState::default()
        };
        let rows = tx
            .query(
                &format!(
                    "SELECT scope, target, by_name, reason,
                            (extract(epoch from at) * 1000)::bigint, revision
                     FROM {s}.kill_switch"
                ),
                &[],
            )
            .map_err(BackendError::sql("reading the kill switch"))?;
        for row in rows {
            let scope: String = row.get(0);
            let target: String = row.get(1);
            let s = Suspension {
                by: row.get(2),
                reason: row.get(3),
                at_unix_ms: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
                revision: u64::try_from(row.get::<_, i64>(5)).unwrap_or(0),
            };
            match scope.as_str() {
                "global" => state.global = Some(s),
                "agent" => {
                    state.agents.insert(target, s);
                }
                _ => {
                    state.runs.insert(target, s);
                }
            }
        }
        tx.commit()
            .map_err(BackendError::sql("reading the kill switch"))?;
        Ok(state)
    }
}

impl KillSwitchStore for PgKillSwitch {
    fn load(&self) -> Result<KillState, KillError> {
        self.with_client(|client| self.read(client))
    }

    fn apply(&self, change: &KillChange) -> Result<Applied, KillError> {
        self.with_client(|client| self.apply_with(client, change))
    }

    fn watch(&self) -> Box<dyn KillWatch> {
        Box::new(PgWatch {
            store: self.clone(),
            client: None,
        })
    }
}

impl PgKillSwitch {
    /// Runs `f` on the shared connection (opened when there is none, dropped after an error).
    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, KillError>,
    ) -> Result<T, KillError> {
        let mut slot = self.client.lock();
        let client = match &mut *slot {
            Some(c) if !c.is_closed() => c,
            _ => slot.insert(self.backend.connect()?),
        };
        let result = f(client);
        if result.is_err() {
            *slot = None;
        }
        result
    }

    fn apply_with(&self, client: &mut Client, change: &KillChange) -> Result<Applied, KillError> {
        let s = self.backend.schema();
        let mut tx = client
            .transaction()
            .map_err(BackendError::sql("changing the kill switch"))?;
        // The revision row's lock serialises every change of every host.
        let revision: i64 = tx
            .query_one(
                &format!(
                    "UPDATE {s}.kill_meta SET revision = revision + 1 WHERE id = 1 \
                     RETURNING revision"
                ),
                &[],
            )
            .map_err(BackendError::sql("taking the kill switch revision"))?
            .get(0);
        let (scope, target) = (change.scope.kind(), change.scope.target());
        let n = match change.action {
            KillAction::Suspend => tx.execute(
                &format!(
                    "INSERT INTO {s}.kill_switch (scope, target, by_name, reason, revision)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
                ),
                &[&scope, &target, &change.by, &change.reason, &revision],
            ),
            KillAction::Resume => tx.execute(
                &format!("DELETE FROM {s}.kill_switch WHERE scope = $1 AND target = $2"),
                &[&scope, &target],
            ),
        }
        .map_err(BackendError::sql("changing the kill switch"))?;
        let changed = n > 0;
        if changed {
            let action = match change.action {
                KillAction::Suspend => "suspend",
                KillAction::Resume => "resume",
            };
            tx.execute(
                &format!(
                    "INSERT INTO {s}.kill_log (revision, action, scope, target, by_name, reason)
                     VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                &[
                    &revision,
                    &action,
                    &scope,
                    &target,
                    &change.by,
                    &change.reason,
                ],
            )
            .map_err(BackendError::sql("logging the kill switch change"))?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&self.channel, &revision.to_string()],
            )
            .map_err(BackendError::sql("notifying the followers"))?;
            tx.commit()
                .map_err(BackendError::sql("changing the kill switch"))?;
        } else {
            // Nothing changed: the revision stays.
            tx.rollback()
                .map_err(BackendError::sql("changing the kill switch"))?;
        }
        let state = self.read(client)?;
        Ok(Applied { state, changed })
    }
}

/// One follower's connection: `LISTEN`, wait, read.
struct PgWatch {
    store: PgKillSwitch,
    client: Option<Client>,
}

impl KillWatch for PgWatch {
    fn next(&mut self, wait: Duration) -> Result<KillState, KillError> {
        let result = self.next_inner(wait);
        if result.is_err() {
            // A new connection next time.
            self.client = None;
        }
        result
    }
}

impl PgWatch {
    fn next_inner(&mut self, wait: Duration) -> Result<KillState, KillError> {
        let client = match &mut self.client {
            Some(c) => {
                let mut n = c.notifications();
                // Wakes on the first notification or after `wait` (the polling fallback), then
                // drains whatever else arrived: one read covers them all.
                n.timeout_iter(wait)
                    .next()
                    .map_err(BackendError::sql("waiting for kill switch notifications"))?;
                while n
                    .iter()
                    .next()
                    .map_err(BackendError::sql("reading kill switch notifications"))?
                    .is_some()
                {}
                drop(n);
                c
            }
            None => {
                let mut c = self.store.backend.connect()?;
                c.batch_execute(&format!("LISTEN \"{}\"", self.store.channel))
                    .map_err(BackendError::sql("listening for kill switch changes"))?;
                self.client.insert(c)
            }
        };
        self.store.read(client)
    }
}
