//! The audit tables: one partitioned table of records, one registry of writers, a partition
//! per span of write time, and the lock that keeps one process per writer.

use postgres::Client;
use postgres::error::SqlState;

use crate::backend::postgres::BackendError;

/// Creates the tables when missing (hosts starting together race on `IF NOT EXISTS`: the
/// loser's duplicate errors mean the objects are there).
pub(super) fn create(client: &mut Client, schema: &str) -> Result<(), BackendError> {
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {schema}.audit_records (
            part bigint NOT NULL,
            writer text NOT NULL,
            seq bigint NOT NULL,
            at_ns bigint NOT NULL,
            kind text NOT NULL,
            prev text NOT NULL,
            hash text NOT NULL,
            event bytea NOT NULL,
            PRIMARY KEY (writer, seq, part)
        ) PARTITION BY RANGE (part);
        CREATE TABLE IF NOT EXISTS {schema}.audit_writers (
            writer text PRIMARY KEY,
            first_seen timestamptz NOT NULL DEFAULT now()
        );"
    );
    tolerate_race(client.batch_execute(&ddl)).map_err(BackendError::sql("creating audit tables"))
}

/// Makes sure partition `part` exists.
pub(super) fn ensure_partition(
    client: &mut Client,
    schema: &str,
    part: i64,
) -> Result<(), BackendError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {schema}.{} PARTITION OF {schema}.audit_records \
         FOR VALUES FROM ({part}) TO ({})",
        partition_name(part),
        part + 1
    );
    tolerate_race(client.batch_execute(&sql))
        .map_err(BackendError::sql("creating an audit partition"))
}

/// The table name of partition `part` (negative numbers cannot occur: parts count spans since
/// 1970).
pub(super) fn partition_name(part: i64) -> String {
    format!("audit_records_p{part}")
}

fn tolerate_race(r: Result<(), postgres::Error>) -> Result<(), postgres::Error> {
    match r {
        Err(e)
            if matches!(
                e.code(),
                Some(c) if *c == SqlState::UNIQUE_VIOLATION
                    || *c == SqlState::DUPLICATE_TABLE
                    || *c == SqlState::DUPLICATE_OBJECT
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The session-level advisory lock that makes `writer` this connection's alone: held until the
/// connection closes (or its process dies). `false`: another process holds it.
pub(super) fn lock_writer(
    client: &mut Client,
    schema: &str,
    writer: &str,
) -> Result<bool, BackendError> {
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 7243))",
            &[&format!("tollgate-audit:{schema}:{writer}")],
        )
        .map_err(BackendError::sql("locking the audit writer"))?;
    Ok(row.get(0))
}

/// Registers `writer` (idempotent).
pub(super) fn register(
    client: &mut impl postgres::GenericClient,
    schema: &str,
    writer: &str,
) -> Result<(), BackendError> {
    client
        .execute(
            &format!(
                "INSERT INTO {schema}.audit_writers (writer) VALUES ($1) ON CONFLICT DO NOTHING"
            ),
            &[&writer],
        )
        .map(|_| ())
        .map_err(BackendError::sql("registering the audit writer"))
}

/// Every partition of the records table, ascending.
pub(super) fn partitions(client: &mut Client, schema: &str) -> Result<Vec<i64>, BackendError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = $1 AND p.relname = 'audit_records'",
            &[&schema],
        )
        .map_err(BackendError::sql("listing audit partitions"))?;
    let mut parts: Vec<i64> = rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            name.strip_prefix("audit_records_p")?.parse().ok()
        })
        .collect();
    parts.sort_unstable();
    Ok(parts)
}
