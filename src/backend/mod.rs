//! Where the state shared by many guards lives: the kill switch, budget and rate leases, the
//! approval queue and the audit trail.
//!
//! The embedded default keeps them in files and in-process state (one host). A fleet of many
//! worker processes on many hosts sets the document's `[backend]` section to PostgreSQL (feature
//! `postgres`), and nothing else changes: the same primitives, behind the same traits, read and
//! write their shared state there.
//!
//! ```toml
//! [backend]
//! kind = "postgres"
//! # The name of the environment variable holding the connection string, never the string
//! # itself: it may carry a password, and the document is signed and shown to reviewers.
//! url_env = "TOLLGATE_PG_URL"
//! schema = "tollgate"
//! connect_timeout = "5s"
//! io_timeout = "30s"
//! # TLS, the server's certificate checked against this CA and the host name (see [`tls`]).
//! tls = "verify-full"
//! tls_root_cert = "/etc/tollgate/db-ca.pem"
//! ```
//!
//! The embedded default, written out (every process of the host that shares `dir` shares the
//! kill switch, the budgets of `[backend.leases]`, the approval queue and the audit trail):
//!
//! ```toml
//! [backend]
//! kind = "files"
//! dir = "/var/lib/tollgate"
//! ```
//!
//! A process joins its deployment with [`Deployment::open`], which opens whichever backend the
//! section names: the same code runs on files and on PostgreSQL.
//!
//! The connection string is read from the environment when the backend is opened, not when the
//! document is parsed: `tollgate policy check` validates the section on a machine that has no
//! database.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::DocumentError;

pub mod approvals;
pub mod audit;
mod deploy;
pub mod kill;
pub mod lease;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod tls;

pub use deploy::{DeployError, Deployment, ShutdownReport};
pub use tls::TlsMode;

/// Which backend holds the shared state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendKind {
    /// Files and in-process state on one host (the default).
    #[default]
    Files,
    /// One PostgreSQL database shared by every host of the fleet (feature `postgres`).
    Postgres,
}

/// The document's `[backend]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Which backend.
    #[serde(default)]
    pub kind: BackendKind,
    /// For `postgres`: the environment variable that holds the connection string
    /// (`host=... user=... dbname=...` or a `postgresql://` URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// For `files`: the directory the processes of this host share (`kill-switch/`, `leases/`,
    /// `audit/<host>/`, `approvals/<host>.log` under it; created when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<std::path::PathBuf>,
    /// For `postgres`: the schema tollgate's tables live in (created when missing).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// For `postgres`: how long to wait for a connection before giving up (and denying).
    #[serde(default = "default_connect_timeout", with = "crate::units::duration")]
    pub connect_timeout: Duration,
    /// For `postgres`: how long an established connection may go without the server's host
    /// acknowledging what was sent or answering keepalive probes before the connection is
    /// dropped and its worker reconnects (default 30 s). Without it a half-open connection (the
    /// database host gone, a network cut, a NAT that forgot the flow) holds a worker (a lease
    /// refill, the kill-switch follower, the audit writer, an approval wait) for as long as the
    /// operating system's defaults allow: hours. Sets TCP keepalives (idle a third of it, probes
    /// every ninth, at least 1 s each) and `TCP_USER_TIMEOUT` (Linux) on every connection,
    /// over what the connection string says. A slow statement is not cut: the server's host
    /// still acknowledges.
    #[serde(default = "default_io_timeout", with = "crate::units::duration")]
    pub io_timeout: Duration,
    /// For `postgres`: TLS on every connection, with libpq's `sslmode` names: `disable`,
    /// `prefer`, `require`, `verify-ca`, `verify-full` (recommended; see [`tls`]). Unset: the
    /// connection string's `sslmode` governs (`prefer` when it says nothing). A connection
    /// string's `sslmode=require` is never weakened by a weaker mode here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
    /// For `postgres` with `tls = "verify-full"`, `"verify-ca"` or `"require"`: a PEM file of
    /// the CA certificates the server's certificate must chain to (only these: the operating
    /// system's store is not consulted). Without it, `verify-full` uses the operating system's
    /// trust store. Read when the document is loaded and again when the backend is opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_root_cert: Option<std::path::PathBuf>,
    /// For `postgres`: how the audit sink writes (`[backend.audit]`).
    #[serde(default)]
    pub audit: audit::AuditSection,
    /// For `postgres`: how a host follows the shared approval queue (`[backend.approvals]`).
    #[serde(default)]
    pub approvals: approvals::ApprovalsSection,
    /// The shared kill switch: `[backend.kill_switch]` (see [`kill`]).
    #[serde(default)]
    pub kill_switch: kill::KillSwitchSection,
    /// Budgets and rate limits shared by the fleet, spent from leases:
    /// `[backend.leases]` (see [`lease`]).
    #[serde(default)]
    pub leases: lease::LeasesSection,
}

fn default_schema() -> String {
    "tollgate".to_owned()
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_io_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection {
            kind: BackendKind::Files,
            url_env: None,
            dir: None,
            schema: default_schema(),
            connect_timeout: default_connect_timeout(),
            io_timeout: default_io_timeout(),
            tls: None,
            tls_root_cert: None,
            audit: audit::AuditSection::default(),
            approvals: approvals::ApprovalsSection::default(),
            kill_switch: kill::KillSwitchSection::default(),
            leases: lease::LeasesSection::default(),
        }
    }
}

impl BackendSection {
    /// Whether [`Deployment::open`] opens the audit sink (and the approval store) from this
    /// section: always on PostgreSQL, on files when `dir` is set. Otherwise they are bound in
    /// code ([`Bindings::audit`](crate::policy::Bindings::audit)).
    pub fn opens_shared_stores(&self) -> bool {
        self.kind == BackendKind::Postgres || self.dir.is_some()
    }

    /// Whether the section shares state with other processes (any PostgreSQL backend, or files
    /// with a directory): then only [`Deployment::open`] may build the guard.
    pub fn shares_state(&self) -> bool {
        self.opens_shared_stores() || self.kill_switch.dir.is_some()
    }

    /// For the files backend, where part `what` (`kill-switch`, `leases`, `audit`,
    /// `approvals`) lives: `[backend.kill_switch] dir` for the switch when set, else under
    /// `[backend] dir`. `None` when neither is set or the backend is not files.
    pub fn state_dir(&self, what: &str) -> Option<std::path::PathBuf> {
        if self.kind != BackendKind::Files {
            return None;
        }
        if what == "kill-switch"
            && let Some(d) = &self.kill_switch.dir
        {
            return Some(d.clone());
        }
        self.dir.as_ref().map(|d| d.join(what))
    }

    /// Checks what serde cannot: a PostgreSQL backend names where its connection string is, the
    /// schema is a plain identifier (it is spliced into SQL), the timeout is not zero, the TLS
    /// settings fit together and the root certificate reads (see [`tls`]).
    pub(crate) fn validate(&self) -> Result<(), DocumentError> {
        if self.kind == BackendKind::Postgres {
            match &self.url_env {
                None => {
                    return Err(DocumentError::invalid(
                        "backend.kind",
                        "a `postgres` backend needs `url_env`: the name of the environment \
                         variable holding the connection string",
                    ));
                }
                Some(name) if !is_env_name(name) => {
                    return Err(DocumentError::invalid(
                        "backend.url_env",
                        format!(
                            "`{name}` is not an environment variable name (letters, digits and \
                             `_`, not starting with a digit); write the variable's name here, \
                             not the connection string"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if self.kind == BackendKind::Postgres && self.dir.is_some() {
            return Err(DocumentError::invalid(
                "backend.dir",
                "`dir` is for the files backend; a `postgres` backend keeps its state in the \
                 database",
            ));
        }
        if let Some(d) = &self.dir
            && d.as_os_str().is_empty()
        {
            return Err(DocumentError::invalid("backend.dir", "must not be empty"));
        }
        if !is_identifier(&self.schema) {
            return Err(DocumentError::invalid(
                "backend.schema",
                format!(
                    "`{}` is not a plain SQL identifier (lower-case letters, digits and `_`, \
                     starting with a letter or `_`, at most 63 bytes)",
                    self.schema
                ),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(DocumentError::invalid(
                "backend.connect_timeout",
                "must be longer than zero",
            ));
        }
        if self.io_timeout < Duration::from_secs(1) {
            return Err(DocumentError::invalid(
                "backend.io_timeout",
                "must be at least 1s (keepalive probes are counted in whole seconds)",
            ));
        }
        self.validate_tls()?;
        self.audit.validate()?;
        self.approvals.validate()?;
        self.kill_switch.validate()?;
        self.leases.validate()?;
        Ok(())
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A lower-case SQL identifier that needs no quoting (so it can be spliced into DDL safely).
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 63
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_that_need_quoting_are_refused() {
        assert!(is_identifier("tollgate"));
        assert!(is_identifier("_t1"));
        for bad in [
            "",
            "Tollgate",
            "1t",
            "a-b",
            "a;drop table x",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn postgres_needs_an_environment_variable_name() {
        let mut s = BackendSection {
            kind: BackendKind::Postgres,
            ..BackendSection::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("url_env"), "{e}");
        s.url_env = Some("postgresql://u:secret@h/db".into());
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("backend.url_env"), "{e}");
        s.url_env = Some("TOLLGATE_PG_URL".into());
        s.validate().unwrap();
    }

    #[test]
    fn io_timeout_defaults_to_30s_and_must_be_a_second_at_least() {
        let mut s = BackendSection {
            kind: BackendKind::Postgres,
            url_env: Some("TOLLGATE_PG_URL".into()),
            ..BackendSection::default()
        };
        assert_eq!(s.io_timeout, Duration::from_secs(30));
        s.io_timeout = Duration::from_millis(999);
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("backend.io_timeout"), "{e}");
        s.io_timeout = Duration::from_secs(1);
        s.validate().unwrap();
    }
}
