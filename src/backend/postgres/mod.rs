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
//!
//! Every connection uses TLS as the section's `tls` (or the connection string's `sslmode`)
//! says, through rustls on the ring provider: see [`crate::backend::tls`] for the modes and
//! [`PgBackend::tls`] to set one in code.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

use super::{BackendKind, BackendSection, TlsMode, is_identifier};

pub mod approvals;
pub mod audit;
pub mod kill;
pub mod lease;
pub mod throwaway;
mod tls;

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
    /// Connecting failed (refused, timed out, authentication, TLS: a server without TLS under a
    /// mode that requires it, a certificate that does not verify). The message carries the
    /// driver's causes (`error performing TLS handshake: invalid peer certificate: ...`).
    #[error("cannot connect to PostgreSQL: {}", crate::error_chain::error_chain(.0))]
    Connect(#[source] postgres::Error),
    /// The TLS settings cannot be used: a root certificate that is missing, unreadable or not a
    /// PEM CA certificate, a mode that needs one without it (or one that ignores it with it), a
    /// Unix-socket host where TLS is required.
    #[error("`{key}`: {reason}")]
    Tls {
        /// The `[backend]` key to change (`backend.tls`, `backend.tls_root_cert`).
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
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
    /// What the connection string's `sslmode` asked for (never weakened by [`Self::tls`]).
    url_tls: TlsMode,
    tls: tls::PgTls,
}

impl std::fmt::Debug for PgBackend {
    // The configuration may hold a password: show where, not how.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("schema", &self.schema)
            .field("tls", &self.tls)
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
        let mut backend = Self::connect_to(url, var, &section.schema, section.connect_timeout)?
            .io_timeout(section.io_timeout);
        match (section.tls, &section.tls_root_cert) {
            (Some(mode), root_cert) => backend = backend.tls(mode, root_cert.as_deref())?,
            // A loaded document refuses this too; a section built in code is checked here.
            (None, Some(_)) => {
                return Err(BackendError::Tls {
                    key: "backend.tls_root_cert",
                    reason: "needs `tls` (`verify-full`, `verify-ca` or `require`)".into(),
                });
            }
            (None, None) => {
                // The connection string's `sslmode` never checks a certificate. Said once per
                // process (a deployment opens the section for several parts).
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        tls = %backend.tls.mode,
                        "the document's `[backend]` does not set `tls`: connections to \
                         PostgreSQL follow the connection string's `sslmode` and never check \
                         the server's certificate; set `tls = \"verify-full\"`"
                    );
                });
            }
        }
        Ok(backend)
    }

    /// A backend at `url` (`host=... port=... user=... dbname=...` or `postgresql://...`). Its
    /// TLS is what the string's `sslmode` says (`prefer` when it says nothing: TLS when the
    /// server offers it, without checking its certificate); [`tls`](Self::tls) sets another
    /// mode.
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
            reason: url_problem(&e),
        })?;
        config.connect_timeout(connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("tollgate");
        }
        let url_tls = tls::from_driver(config.get_ssl_mode());
        check_hosts(&config, url_tls)?;
        Ok(PgBackend {
            config,
            schema: schema.to_owned(),
            url_tls,
            tls: tls::PgTls::new(url_tls, None)?,
        }
        .io_timeout(super::default_io_timeout()))
    }

    /// Connections in TLS mode `mode` (see [`crate::backend::tls`]), the server's certificate
    /// checked against the CA certificates of the PEM file `root_cert` when given (read here),
    /// over what the connection string's `sslmode` said; except that a connection string's
    /// `sslmode=require` is kept under a weaker `mode`. What the document's `tls` and
    /// `tls_root_cert` do.
    ///
    /// Refused (naming the `[backend]` key): a root certificate that does not read or parse,
    /// `verify-ca` without one, `disable` or `prefer` with one, a Unix-socket host under a mode
    /// that requires TLS (TLS does not run there).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tollgate::backend::TlsMode;
    /// use tollgate::backend::postgres::PgBackend;
    ///
    /// let backend = PgBackend::from_url(
    ///     "host=db.internal.example user=tollgate dbname=fleet",
    ///     "tollgate",
    ///     Duration::from_secs(5),
    /// )?
    /// .tls(TlsMode::VerifyFull, Some("/etc/tollgate/db-ca.pem".as_ref()))?;
    /// assert_eq!(backend.tls_mode(), TlsMode::VerifyFull);
    /// // Fails unless the server offers TLS with a certificate for `db.internal.example`
    /// // issued by that CA.
    /// let client = backend.connect()?;
    /// # drop(client);
    /// # Ok::<(), tollgate::backend::postgres::BackendError>(())
    /// ```
    pub fn tls(
        mut self,
        mode: TlsMode,
        root_cert: Option<&std::path::Path>,
    ) -> Result<Self, BackendError> {
        // The combination asked for is checked before the connection string raises it.
        let mut tls = tls::PgTls::new(mode, root_cert)?;
        if self.url_tls == TlsMode::Require && mode < TlsMode::Require {
            tls = tls::PgTls::new(TlsMode::Require, None)?;
        }
        check_hosts(&self.config, tls.mode)?;
        self.config.ssl_mode(tls::driver_ssl_mode(tls.mode));
        self.tls = tls;
        Ok(self)
    }

    /// The TLS mode in force (see [`tls`](Self::tls)).
    pub fn tls_mode(&self) -> TlsMode {
        self.tls.mode
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
            url_tls: self.url_tls,
            tls: self.tls.clone(),
        })
    }

    /// The connection configuration (for components that tune it, e.g. a per-statement timeout).
    pub fn config(&self) -> &postgres::Config {
        &self.config
    }

    /// Opens a new connection and makes sure the schema exists.
    pub fn connect(&self) -> Result<postgres::Client, BackendError> {
        // A connection string naming only `hostaddr` gives TLS no server name, which the driver
        // needs for a handshake: under `prefer` it connects in plaintext, as it did before TLS
        // was supported (the modes that require TLS refuse such a string when the backend is
        // made: `check_hosts`).
        let named = !self.config.get_hosts().is_empty();
        let mut client = match &self.tls.connector {
            Some(connector) if named => self.config.connect(connector.clone()),
            _ => self.config.connect(postgres::NoTls),
        }
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

/// Why a connection string does not parse, without quoting it: the driver's "unknown option
/// `k`" and "invalid value for option `k`" name a key, never a value, and are shown (with where
/// libpq's TLS keys the driver does not know go instead); other causes could quote part of the
/// string (a password) and are not.
fn url_problem(e: &postgres::Error) -> String {
    let chain = crate::error_chain::error_chain(e);
    // The key is shown only when it is one of libpq's: text the driver read as a key could be
    // part of a password with a space or `&` in it (`password=correct horse=battery`).
    let key = chain
        .split_once("option `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(key, _)| key);
    match key {
        None => return e.to_string(),
        Some(k) if !LIBPQ_KEYS.contains(&k) => {
            return format!(
                "{e}: an option the driver does not know (its name is not shown: it may be part \
                 of a value such as a password; quote values with spaces, percent-encode `&` in \
                 URLs)"
            );
        }
        Some(_) => {}
    }
    let hint = if chain.contains("option `sslmode`") {
        "; a connection string's `sslmode` may be `disable`, `prefer` or `require`: set \
         `verify-full` or `verify-ca` with `[backend] tls`"
    } else if chain.contains("option `sslrootcert`") {
        "; name the root certificate with `[backend] tls_root_cert`"
    } else if ["sslcert", "sslkey", "sslpassword", "sslcrl"]
        .iter()
        .any(|k| chain.contains(&format!("option `{k}`")))
    {
        "; the backend does not present client certificates"
    } else {
        ""
    };
    format!("{chain}{hint}")
}

/// The connection parameters libpq documents (PostgreSQL 17), the only option names an error
/// about a connection string may repeat.
const LIBPQ_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcertmode",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Refuses, under a mode that requires TLS, what would make every connection fail later and
/// less clearly: a connection string naming only `hostaddr` (TLS has no server name) and a
/// Unix-socket host (the server offers no TLS there).
#[cfg_attr(not(unix), allow(unused_variables))]
fn check_hosts(config: &postgres::Config, mode: TlsMode) -> Result<(), BackendError> {
    if !mode.requires_tls() {
        return Ok(());
    }
    if config.get_hosts().is_empty() && !config.get_hostaddrs().is_empty() {
        return Err(BackendError::Tls {
            key: "backend.tls",
            reason: format!(
                "`{mode}` needs TLS, whose handshake needs the server's name: the connection \
                 string names only `hostaddr`; add `host=` with the name its certificate \
                 carries (the address is still what is connected to)"
            ),
        });
    }
    #[cfg(unix)]
    for host in config.get_hosts() {
        if let postgres::config::Host::Unix(path) = host {
            return Err(BackendError::Tls {
                key: "backend.tls",
                reason: format!(
                    "`{mode}` needs TLS, which does not run over the Unix socket `{}` named by \
                     the connection string: connect over TCP, or set `tls = \"disable\"` for a \
                     local socket",
                    path.display()
                ),
            });
        }
    }
    Ok(())
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
    fn the_connection_string_s_sslmode_is_the_default_and_a_require_is_never_weakened() {
        let url = |u: &str| PgBackend::from_url(u, "s", Duration::from_secs(5)).unwrap();
        assert_eq!(url("host=db user=u").tls_mode(), TlsMode::Prefer);
        assert_eq!(
            url("host=db user=u sslmode=disable").tls_mode(),
            TlsMode::Disable
        );
        let required = url("host=db user=u sslmode=require");
        assert_eq!(required.tls_mode(), TlsMode::Require);
        for weaker in [TlsMode::Disable, TlsMode::Prefer] {
            let b = required.clone().tls(weaker, None).unwrap();
            assert_eq!(b.tls_mode(), TlsMode::Require);
            assert_eq!(
                b.config().get_ssl_mode(),
                postgres::config::SslMode::Require
            );
        }
        // Stronger modes replace it, and a weaker one replaces a `disable`.
        let b = required.tls(TlsMode::VerifyFull, None).unwrap();
        assert_eq!(b.tls_mode(), TlsMode::VerifyFull);
        assert_eq!(
            b.config().get_ssl_mode(),
            postgres::config::SslMode::Require
        );
        let b = url("host=db user=u sslmode=disable")
            .tls(TlsMode::Prefer, None)
            .unwrap();
        assert_eq!(b.tls_mode(), TlsMode::Prefer);
        assert_eq!(b.config().get_ssl_mode(), postgres::config::SslMode::Prefer);
        let b = url("host=db user=u").tls(TlsMode::Disable, None).unwrap();
        assert_eq!(
            b.config().get_ssl_mode(),
            postgres::config::SslMode::Disable
        );
        // A schema of its own keeps the TLS.
        assert_eq!(b.with_schema("t").unwrap().tls_mode(), TlsMode::Disable);
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_with_their_key() {
        let b = PgBackend::from_url("host=db user=u", "s", Duration::from_secs(5)).unwrap();
        let key_of = |r: Result<PgBackend, BackendError>| match r {
            Err(BackendError::Tls { key, reason }) => (key, reason),
            other => panic!("{other:?}"),
        };
        let missing = std::path::Path::new("/nonexistent/tollgate-ca.pem");
        let (key, reason) = key_of(b.clone().tls(TlsMode::VerifyFull, Some(missing)));
        assert_eq!(key, "backend.tls_root_cert");
        assert!(reason.contains("cannot read CA file"), "{reason}");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let (key, reason) = key_of(b.clone().tls(TlsMode::VerifyCa, Some(&junk)));
        assert_eq!(key, "backend.tls_root_cert");
        assert!(reason.contains("no PEM `CERTIFICATE` block"), "{reason}");
        let (key, _) = key_of(b.clone().tls(TlsMode::VerifyCa, None));
        assert_eq!(key, "backend.tls");
        for mode in [TlsMode::Disable, TlsMode::Prefer] {
            let (key, _) = key_of(b.clone().tls(mode, Some(&junk)));
            assert_eq!(key, "backend.tls_root_cert");
        }
        // A string naming only an address gives TLS no name: refused where TLS is required,
        // plaintext under `prefer` (no handshake is attempted: see `connect`).
        let addr_only =
            PgBackend::from_url("hostaddr=127.0.0.1 user=u", "s", Duration::from_secs(5)).unwrap();
        let (key, reason) = key_of(addr_only.clone().tls(TlsMode::Require, None));
        assert_eq!(key, "backend.tls");
        assert!(reason.contains("hostaddr"), "{reason}");
        addr_only.clone().tls(TlsMode::Prefer, None).unwrap();
        // TLS does not run over a Unix socket.
        let local = PgBackend::from_url("host=/run/postgresql user=u", "s", Duration::from_secs(5))
            .unwrap();
        let (key, reason) = key_of(local.clone().tls(TlsMode::VerifyFull, None));
        assert_eq!(key, "backend.tls");
        assert!(reason.contains("/run/postgresql"), "{reason}");
        local.clone().tls(TlsMode::Prefer, None).unwrap();
        let e = PgBackend::from_url(
            "host=/run/postgresql user=u sslmode=require",
            "s",
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                BackendError::Tls {
                    key: "backend.tls",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn libpq_tls_keys_in_the_connection_string_point_to_the_document() {
        let e = |u: &str| {
            PgBackend::from_url(u, "s", Duration::from_secs(5))
                .unwrap_err()
                .to_string()
        };
        let m = e("host=db user=u password=hunter2 sslmode=verify-full");
        assert!(
            m.contains("`sslmode`") && m.contains("[backend] tls"),
            "{m}"
        );
        assert!(!m.contains("hunter2"), "{m}");
        let m = e("postgresql://u:hunter2@db/x?sslrootcert=/etc/ca.pem");
        assert!(m.contains("tls_root_cert"), "{m}");
        assert!(!m.contains("hunter2") && !m.contains("/etc/ca.pem"), "{m}");
        // Other causes could quote the string: not repeated.
        let m = e("host=db user=u password='hunter2");
        assert!(!m.contains("hunter2"), "{m}");
        // Part of an unquoted password read as a key is not a libpq key: not repeated.
        let m = e("host=db user=u password=correct horse=battery");
        assert!(!m.contains("horse") && !m.contains("battery"), "{m}");
        assert!(m.contains("quote values"), "{m}");
        let m = e("postgresql://u@db/x?password=s3cr&et=1");
        assert!(!m.contains("`et`") && !m.contains("s3cr"), "{m}");
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
