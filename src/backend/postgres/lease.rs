//! Budget leases on PostgreSQL: `lease_budgets` (per budget, key and window: the limit, what is
//! handed out, returned and written off) and `lease_grants` (per host: what it holds, until
//! when). A lease is one transaction that locks the budget row (`SELECT ... FOR UPDATE`), first
//! reclaims the expired grants of that key (their units are written off: the dead host may have
//! spent them), then hands out `LEAST(want, limit - allocated)`; a `CHECK (allocated <=
//! capacity)` makes overspending impossible even for a buggy client.
//!
//! Windows are aligned on the database's clock (`clock_timestamp()`), so hosts with skewed
//! clocks still agree on them. The rows of a budget's ended windows are deleted once no lease is
//! left in them (by the lease that opens a key's next window), so the tables hold about one
//! window per key.

use std::time::Duration;

use parking_lot::Mutex;
use postgres::Client;

use super::kill::create_tables;
use super::{BackendError, PgBackend};
use crate::backend::lease::{BudgetSpec, Grant, LeaseError, LeaseSource};

/// The lease source on PostgreSQL for one host.
pub struct PgLeases {
    backend: PgBackend,
    host: String,
    lease_timeout: Duration,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PgLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLeases")
            .field("backend", &self.backend)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// One budget key's row, for reports and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetRow {
    /// The window's limit.
    pub capacity: i64,
    /// Handed out (held by hosts, spent, or written off).
    pub allocated: i64,
    /// Given back by hosts.
    pub returned: i64,
    /// Reclaimed from dead hosts and counted as spent.
    pub written_off: i64,
    /// Reported spent by hosts that closed their lease.
    pub spent: i64,
    /// Units held by open leases now (spent or not).
    pub outstanding: i64,
}

impl PgLeases {
    /// Creates the tables (when missing) and returns the source for host `host` (a name unique
    /// in the fleet: two processes sharing one would renew and give back each other's leases).
    /// Fails when the database cannot be reached: a host refuses to start rather than spend
    /// unchecked.
    pub fn open(
        backend: PgBackend,
        host: &str,
        lease_timeout: Duration,
    ) -> Result<Self, BackendError> {
        let s = backend.schema();
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {s}.lease_budgets (
                 budget text NOT NULL,
                 key text NOT NULL,
                 window_start bigint NOT NULL,
                 capacity bigint NOT NULL CHECK (capacity > 0),
                 allocated bigint NOT NULL DEFAULT 0,
                 returned bigint NOT NULL DEFAULT 0,
                 written_off bigint NOT NULL DEFAULT 0,
                 spent bigint NOT NULL DEFAULT 0,
                 PRIMARY KEY (budget, key, window_start),
                 CHECK (allocated >= 0 AND allocated <= capacity));
             CREATE TABLE IF NOT EXISTS {s}.lease_grants (
                 budget text NOT NULL,
                 key text NOT NULL,
                 window_start bigint NOT NULL,
                 host text NOT NULL,
                 units bigint NOT NULL CHECK (units >= 0),
                 expires_at timestamptz NOT NULL,
                 PRIMARY KEY (budget, key, window_start, host));"
        );
        let mut client = backend.connect()?;
        create_tables(&mut client, &ddl)?;
        Ok(PgLeases {
            backend,
            host: host.to_owned(),
            lease_timeout,
            client: Mutex::new(Some(client)),
        })
    }

    /// This host's name in `lease_grants`.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn with_client<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
        what: &'static str,
    ) -> Result<T, LeaseError> {
        let mut slot = self.client.lock();
        let client = match &mut *slot {
            Some(c) if !c.is_closed() => c,
            _ => slot.insert(self.backend.connect()?),
        };
        let result = f(client);
        if result.is_err() {
            *slot = None;
        }
        result.map_err(|e| LeaseError::Backend(BackendError::sql(what)(e)))
    }

    /// The row of `budget`/`key` in the current window (`None` before its first lease).
    pub fn row(
        &self,
        budget: &str,
        key: &str,
        window: i64,
    ) -> Result<Option<BudgetRow>, LeaseError> {
        let s = self.backend.schema();
        self.with_client(
            |c| {
                let row = c.query_opt(
                    &format!(
                        "SELECT capacity, allocated, returned, written_off, spent,
                                (SELECT coalesce(sum(units), 0)::bigint FROM {s}.lease_grants g
                                 WHERE g.budget = b.budget AND g.key = b.key
                                   AND g.window_start = b.window_start)
                         FROM {s}.lease_budgets b
                         WHERE budget = $1 AND key = $2 AND window_start = $3"
                    ),
                    &[&budget, &key, &window],
                )?;
                Ok(row.map(|r| BudgetRow {
                    capacity: r.get(0),
                    allocated: r.get(1),
                    returned: r.get(2),
                    written_off: r.get(3),
                    spent: r.get(4),
                    outstanding: r.get(5),
                }))
            },
            "reading a budget",
        )
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Drops the rows of `budget`'s ended windows (every key's: all keys of a budget share its
/// window boundaries) once no lease is left in them, as the file backend does: what a window
/// handed out no longer matters once it is over, and without this a rate window of a minute
/// leaves 1,440 rows a day per key. Run by the lease that opens a key's new window, so once per
/// key and window. Expired grants of ended windows go first (their units were written off; a
/// host that wakes up later is told its lease was reclaimed, as before); a grant still live
/// keeps its window's row until it is released or expires. Old windows never gain grants (a
/// lease only ever grants in the current one), so a row found without grants stays without.
fn prune_ended_windows(
    tx: &mut postgres::Transaction<'_>,
    s: &str,
    budget: &str,
    current: i64,
) -> Result<(), postgres::Error> {
    tx.execute(
        &format!(
            "DELETE FROM {s}.lease_grants
             WHERE budget = $1 AND window_start < $2 AND expires_at < clock_timestamp()"
        ),
        &[&budget, &current],
    )?;
    tx.execute(
        &format!(
            "DELETE FROM {s}.lease_budgets b
             WHERE b.budget = $1 AND b.window_start < $2
               AND NOT EXISTS (SELECT 1 FROM {s}.lease_grants g
                               WHERE g.budget = b.budget AND g.key = b.key
                                 AND g.window_start = b.window_start)"
        ),
        &[&budget, &current],
    )?;
    Ok(())
}

impl LeaseSource for PgLeases {
    fn lease(&self, budget: &BudgetSpec, key: &str, want: u64) -> Result<Grant, LeaseError> {
        let s = self.backend.schema();
        let window_ms = to_i64(u64::try_from(budget.window.as_millis()).unwrap_or(u64::MAX));
        let timeout = self.lease_timeout.as_secs_f64();
        let name = budget.name.as_str();
        let (capacity, want) = (to_i64(budget.limit), to_i64(want));
        self.with_client(
            |c| {
                let mut tx = c.transaction()?;
                let now_ms: i64 = tx
                    .query_one(
                        "SELECT floor(extract(epoch from clock_timestamp()) * 1000)::bigint",
                        &[],
                    )?
                    .get(0);
                let window = now_ms - now_ms.rem_euclid(window_ms);
                let left =
                    Duration::from_millis(u64::try_from(window + window_ms - now_ms).unwrap_or(0));
                let opened = tx.execute(
                    &format!(
                        "INSERT INTO {s}.lease_budgets (budget, key, window_start, capacity)
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"
                    ),
                    &[&name, &key, &window, &capacity],
                )?;
                if opened == 1 {
                    prune_ended_windows(&mut tx, s, name, window)?;
                }
                // The budget row's lock serialises every host leasing this key.
                let row = tx.query_one(
                    &format!(
                        "SELECT capacity, allocated FROM {s}.lease_budgets
                         WHERE budget = $1 AND key = $2 AND window_start = $3 FOR UPDATE"
                    ),
                    &[&name, &key, &window],
                )?;
                let (cap, allocated): (i64, i64) = (row.get(0), row.get(1));
                // Reclaim the grants of hosts that stopped renewing: their units stay counted
                // (written off), never handed out again.
                tx.execute(
                    &format!(
                        "WITH dead AS (
                             DELETE FROM {s}.lease_grants
                             WHERE budget = $1 AND key = $2 AND window_start = $3
                               AND expires_at < clock_timestamp()
                             RETURNING units)
                         UPDATE {s}.lease_budgets
                         SET written_off = written_off + (SELECT coalesce(sum(units), 0) FROM dead)
                         WHERE budget = $1 AND key = $2 AND window_start = $3"
                    ),
                    &[&name, &key, &window],
                )?;
                let units = want.min(cap - allocated).max(0);
                if units > 0 {
                    tx.execute(
                        &format!(
                            "UPDATE {s}.lease_budgets SET allocated = allocated + $4
                             WHERE budget = $1 AND key = $2 AND window_start = $3"
                        ),
                        &[&name, &key, &window, &units],
                    )?;
                    tx.execute(
                        &format!(
                            "INSERT INTO {s}.lease_grants
                                 (budget, key, window_start, host, units, expires_at)
                             VALUES ($1, $2, $3, $4, $5,
                                     clock_timestamp() + make_interval(secs => $6))
                             ON CONFLICT (budget, key, window_start, host) DO UPDATE
                             SET units = {s}.lease_grants.units + EXCLUDED.units,
                                 expires_at = EXCLUDED.expires_at"
                        ),
                        &[&name, &key, &window, &self.host, &units, &timeout],
                    )?;
                }
                tx.commit()?;
                Ok(Grant {
                    units: u64::try_from(units).unwrap_or(0),
                    window,
                    window_left: left,
                })
            },
            "leasing",
        )
    }

    fn release(
        &self,
        budget: &BudgetSpec,
        key: &str,
        window: i64,
        unused: u64,
    ) -> Result<(), LeaseError> {
        let s = self.backend.schema();
        let name = budget.name.as_str();
        let unused = to_i64(unused);
        let held = self.with_client(
            |c| {
                let mut tx = c.transaction()?;
                // Same lock order as `lease`: the budget row, then the grant.
                tx.execute(
                    &format!(
                        "SELECT 1 FROM {s}.lease_budgets
                         WHERE budget = $1 AND key = $2 AND window_start = $3 FOR UPDATE"
                    ),
                    &[&name, &key, &window],
                )?;
                let held: Option<i64> = tx
                    .query_opt(
                        &format!(
                            "DELETE FROM {s}.lease_grants
                             WHERE budget = $1 AND key = $2 AND window_start = $3 AND host = $4
                             RETURNING units"
                        ),
                        &[&name, &key, &window, &self.host],
                    )?
                    .map(|r| r.get(0));
                if let Some(held) = held {
                    let back = unused.min(held);
                    tx.execute(
                        &format!(
                            "UPDATE {s}.lease_budgets
                             SET allocated = allocated - $4, returned = returned + $4,
                                 spent = spent + $5
                             WHERE budget = $1 AND key = $2 AND window_start = $3"
                        ),
                        &[&name, &key, &window, &back, &(held - back)],
                    )?;
                }
                tx.commit()?;
                Ok(held)
            },
            "releasing a lease",
        )?;
        match held {
            Some(_) => Ok(()),
            None => Err(LeaseError::Refused {
                budget: budget.name.clone(),
                reason: format!(
                    "this host's lease of `{key}` was reclaimed (it was not renewed within the \
                     lease timeout): its units stay written off"
                ),
            }),
        }
    }

    fn heartbeat(&self) -> Result<(), LeaseError> {
        let s = self.backend.schema();
        let timeout = self.lease_timeout.as_secs_f64();
        self.with_client(
            |c| {
                c.execute(
                    &format!(
                        "UPDATE {s}.lease_grants
                         SET expires_at = clock_timestamp() + make_interval(secs => $2)
                         WHERE host = $1 AND expires_at >= clock_timestamp()"
                    ),
                    &[&self.host, &timeout],
                )
            },
            "renewing leases",
        )
        .map(|_| ())
    }
}
