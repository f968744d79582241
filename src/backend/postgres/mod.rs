//! The PostgreSQL backend (feature `postgres`): connections to the database a fleet shares.
//!
//! Driver: the synchronous [`postgres`](https://docs.rs/postgres) crate (a blocking wrapper
//! around `tokio-postgres`). tollgate's check path is synchronous and never touches the
//! database: everything that does (the kill-switch follower, lease refills, the audit writer,
//! approval waits) runs on background threads of its own, where a blocking client is the plain
//! fit and no async runtime leaks into the public API. `LISTEN`/`NOTIFY` arrive through
//! [`postgres::Client::notifications`].
//!
//! Each component creates its own tables in the section's schema (`CREATE ... IF NOT EXISTS`),
//! so a fresh database needs nothing but the right to create a schema.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use super::{BackendKind, BackendSection, is_identifier};

pub mod approvals;
pub mod audit;
pub mod kill;
pub mod lease;
pub mod throwaway;

/// What went wrong reaching or using the database.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The document does not select PostgreSQL.
    #[error("the document's `[backend]` is `{0:?}`, not `postgres`")]
    NotPostgres(BackendKind),
    /// The environment variable that should hold the connection string is not set.
    #[error("environment variable `{var}` (named by `backend.url_env`) is not set")]
    MissingUrl {
        /// The variable's name.
        var: String,
    },
    /// The connection string does not parse (its text is not repeated: it may hold a password).
    #[error("the connection string in `{var}` is not valid: {reason}")]
    BadUrl {
        /// Where it came from.
        var: String,
        /// The driver's reason.
        reason: String,
    },
    /// The schema name is not a plain identifier.
    #[error("schema `{0}` is not a plain SQL identifier")]
    BadSchema(String),
    /// Connecting failed (refused, timed out, authentication).
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[source] postgres::Error),
    /// A statement failed.
    #[error("PostgreSQL: {what}: {source}")]
    Sql {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: postgres::Error,
    },
}

impl BackendError {
    /// Wraps a driver error with what was being done.
    pub fn sql(what: &'static str) -> impl FnOnce(postgres::Error) -> BackendError {
        move |source| BackendError::Sql { what, source }
    }
}

/// Where the fleet's database is and which schema holds tollgate's tables. Cheap to clone;
/// [`connect`](Self::connect) opens a new connection each time (each background worker holds its
/// own).
#[derive(Clone)]
pub struct PgBackend {
    config: postgres::Config,
    schema: String,
}

impl std::fmt::Debug for PgBackend {
    // The configuration may hold a password: show where, not how.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PgBackend {
    /// The backend the document's `[backend]` section names, with the connection string read
    /// from the environment variable it names.
    pub fn from_section(section: &BackendSection) -> Result<Self, BackendError> {
        if section.kind != BackendKind::Postgres {
            return Err(BackendError::NotPostgres(section.kind));
        }
        let var = section.url_env.clone().unwrap_or_default();
        let url = std::env::var(&var).map_err(|_| BackendError::MissingUrl { var: var.clone() })?;
        Self::for_section(section, &url, &var)
    }

    /// The backend `section` describes, at `url` (read from the variable `var`).
    fn for_section(section: &BackendSection, url: &str, var: &str) -> Result<Self, BackendError> {
        Ok(
            Self::connect_to(url, var, &section.schema, section.connect_timeout)?
                .io_timeout(section.io_timeout),
        )
    }

    /// A backend at `url` (`host=... port=... user=... dbname=...` or `postgresql://...`).
    pub fn from_url(
        url: &str,
        schema: &str,
        connect_timeout: Duration,
    ) -> Result<Self, BackendError> {
        Self::connect_to(url, "the given connection string", schema, connect_timeout)
    }

    fn connect_to(
        url: &str,
        var: &str,
        schema: &str,
        connect_timeout: Duration,
    ) -> Result<Self, BackendError> {
        if !is_identifier(schema) {
            return Err(BackendError::BadSchema(schema.to_owned()));
        }
        let mut config = postgres::Config::from_str(url).map_err(|e| BackendError::BadUrl {
            var: var.to_owned(),
            reason: e.to_string(),
        })?;
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("tollgate");
        }
        Ok(PgBackend {
            config,
            schema: schema.to_owned(),
        }
        .io_timeout(super::default_io_timeout()))
    }

    /// How long an established connection may go unacknowledged before it is dropped (see
    /// [`BackendSection::io_timeout`](super::BackendSection::io_timeout); default 30 s): TCP
    /// keepalives idle a third of it and probing every ninth (at least 1 s each), and
    /// `TCP_USER_TIMEOUT` on Linux. Replaces what the connection string said about either.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        let at_least_1s = |d: Duration| d.max(Duration::from_secs(1));
        self.config
            .keepalives(true)
            .keepalives_idle(at_least_1s(timeout / 3))
            .keepalives_interval(at_least_1s(timeout / 9))
            .keepalives_retries(3)
            .tcp_user_timeout(at_least_1s(timeout));
        self
    }

    /// The schema tollgate's tables live in (a plain identifier: safe to splice into SQL).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The same database with another schema (tests give each case its own).
    pub fn with_schema(&self, schema: &str) -> Result<Self, BackendError> {
        if !is_identifier(schema) {
            return Err(BackendError::BadSchema(schema.to_owned()));
        }
        Ok(PgBackend {
            config: self.config.clone(),
            schema: schema.to_owned(),
        })
    }

    /// The connection configuration (for components that tune it, e.g. a per-statement timeout).
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// Opens a new connection and makes sure the schema exists.
    pub fn connect(&self) -> Result<postgres::Client, BackendError> {
        let mut client = self
            .config
            .connect(postgres::NoTls)
            .map_err(BackendError::Connect)?;
        // Hosts starting together race on `IF NOT EXISTS` (the catalog's unique index answers
        // the loser): the schema is there either way.
        match client.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema)) {
            Ok(()) => Ok(client),
            Err(e)
                if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&postgres::error::SqlState::DUPLICATE_SCHEMA) =>
            {
                Ok(client)
            }
            Err(e) => Err(BackendError::sql("creating the schema")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_timeout_sets_keepalives_and_the_tcp_user_timeout() {
        let b = PgBackend::from_url("host=db user=u", "s", Duration::from_secs(5)).unwrap();
        let c = b.config();
        // The default: 30 s.
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(30)));
        let b = b.io_timeout(Duration::from_secs(18));
        let c = b.config();
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(6));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(2)));
        assert_eq!(c.get_keepalives_retries(), Some(3));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(18)));
        // Over the connection string's own settings; never under a second.
        let b = PgBackend::from_url(
            "host=db user=u keepalives=0 keepalives_idle=7200 tcp_user_timeout=0",
            "s",
            Duration::from_secs(5),
        )
        .unwrap()
        .io_timeout(Duration::from_secs(2));
        let c = b.config();
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(1));
        assert_eq!(c.get_keepalives_interval(), Some(Duration::from_secs(1)));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(2)));
    }

    #[test]
    fn the_section_s_io_timeout_reaches_the_connection() {
        let doc: crate::policy::Policy = crate::policy::Policy::from_toml(
            r#"
[policy]
name = "t"
owner = "o"
purpose = "p"
scope = "s"
liability_owner = "l"
review_cadence = "90d"
data_handling = "d"

[tools.read_file]
effect = "read"

[roles.r]
tools = ["read_file"]

[backend]
kind = "postgres"
url_env = "TEST_URL"
io_timeout = "45s"
"#,
        )
        .unwrap();
        let section = doc.document().backend.clone().unwrap();
        assert_eq!(section.io_timeout, Duration::from_secs(45));
        let b = PgBackend::for_section(&section, "host=db user=u", "TEST_URL").unwrap();
        assert_eq!(
            b.config().get_tcp_user_timeout(),
            Some(&Duration::from_secs(45))
        );
        assert_eq!(b.config().get_keepalives_idle(), Duration::from_secs(15));
    }
}
