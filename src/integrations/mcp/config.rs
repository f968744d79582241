//! The `[mcp]` section of the policy document: which MCP servers the gateway fronts, how their
//! tools are named in the policy, and who a client connection acts as.
//!
//! Plain data, parsed and validated on every build (so `tollgate policy check` validates it
//! without the `mcp` feature) and part of the document's version hash like every other section.
//!
//! ```toml
//! [mcp]
//! max_message_bytes = 1048576   # a longer JSON-RPC message is refused (default 4 MiB)
//! max_server_message_bytes = 16777216  # a longer line from a stdio server is discarded and
//!                               # its call fails (default 16 MiB)
//! call_timeout = "30s"          # a downstream call that takes longer fails (default 60 s)
//! start_timeout = "30s"         # spawn + initialize + tools/list of a server (default 30 s)
//! escalation_wait = "2m"        # wait this long for an approval before answering "pending"
//!                               # (default 0: answer at once with the approval id)
//! restart_backoff = "500ms"     # first wait before restarting a crashed server (doubles)
//! max_restart_backoff = "30s"   # upper bound of that wait
//! session_idle_timeout = "5m"   # HTTP: a session idle this long is closed (default 5 min)
//! session_init_timeout = "60s"  # HTTP: a session not initialised in time is closed
//! sse_keep_alive = "15s"        # HTTP: keep-alive interval of open event streams
//! header_read_timeout = "10s"   # HTTP: a connection whose request head is not complete this
//!                               # long after it began is closed (default 10 s)
//! max_connections = 512         # HTTP: open connections at most; one more is answered 503 and
//!                               # closed (default 512)
//! refused_records_per_minute = 600  # HTTP: refused requests (no or unknown token, oversized,
//!                               # session-less) recorded one by one per minute; the rest are
//!                               # counted in the next record (default 600)
//!
//! [mcp.connection]              # who a connection without a token acts as (stdio, or
//! agent = "desktop-assistant"   # HTTP on a loopback address when no `tokens` are set)
//! role = "reader"
//! compartment = "M-1001"        # optional
//!
//! # Streamable HTTP (`tollgate mcp --http ADDR`): each bearer token names who its sessions act
//! # as. Only the SHA-256 of the token is written here (this document is signed and shown to
//! # reviewers): `printf %s "$TOKEN" | sha256sum`. With tokens set, a request without one, or
//! # with one not listed, gets HTTP 401 and an audit record, never `[mcp.connection]`.
//! [[mcp.tokens]]
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! agent = "ci-bot"
//! role = "editor"
//!
//! # `Host` header values the HTTP listener accepts besides loopback names (DNS-rebinding
//! # protection); needed when clients reach a non-loopback address by name.
//! # allowed_hosts = ["gateway.internal:8080"]
//! # Browser origins allowed to call it (any other `Origin` header is refused).
//! # allowed_origins = ["https://app.example:443"]
//!
//! [mcp.servers.fs]
//! command = "npx"
//! args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
//! env = { NODE_ENV = "production" }
//! prefix = "fs_"                            # read_file -> fs_read_file in the policy
//! tools = { read_text_file = "read_doc" }   # explicit names win over the prefix
//!
//! [mcp.servers.tickets]                     # streamable HTTP
//! url = "https://tickets.internal:8443/mcp" # verified against the OS trust store, or:
//! ca_file = "/etc/tollgate/internal-ca.pem" # only this private CA (checked on load)
//! client_cert_file = "/etc/tollgate/gw.pem" # mutual TLS: the gateway's certificate (+ chain)
//! client_key_file = "/etc/tollgate/gw.key"  # and its key (chmod 600; both checked on load)
//! # url = "http://10.0.0.7:8080/mcp"        # plain http: loopback only, unless
//! # allow_plain_http = true                 # this is set (unencrypted, unauthenticated)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::boundary::spec::unique_keys;
use crate::policy::{Document, DocumentError};

/// Default of [`McpSection::max_message_bytes`]: 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 4 << 20;
/// Default of [`McpSection::max_server_message_bytes`]: 16 MiB.
pub const DEFAULT_MAX_SERVER_MESSAGE_BYTES: u64 = 16 << 20;
/// Default of [`McpSection::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`McpSection::start_timeout`].
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`McpSection::session_idle_timeout`]: 5 minutes.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of [`McpSection::session_init_timeout`]: 60 seconds.
pub const DEFAULT_SESSION_INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`McpSection::sse_keep_alive`]: 15 seconds.
pub const DEFAULT_SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Default of [`McpSection::header_read_timeout`]: 10 seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`McpSection::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u64 = 512;
/// Default of [`McpSection::refused_records_per_minute`].
pub const DEFAULT_REFUSED_RECORDS_PER_MINUTE: u64 = 600;
/// Default of [`McpSection::restart_backoff`].
pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_millis(500);
/// Default of [`McpSection::max_restart_backoff`].
pub const DEFAULT_MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);
/// Longest [`McpSection::escalation_wait`] accepted: a client request held open longer than
/// this is better answered with the approval id and retried.
pub const MAX_ESCALATION_WAIT: Duration = Duration::from_secs(3600);

/// The `[mcp]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSection {
    /// Who a client connection without a bearer token acts as: every stdio connection, and
    /// every HTTP session when no [`tokens`](Self::tokens) are configured (then only on a
    /// loopback address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
    /// Bearer tokens of the streamable-HTTP listener, by the SHA-256 of the token, and who the
    /// sessions opened with each act as.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenSpec>,
    /// `Host` header values (`name` or `name:port`) the HTTP listener accepts besides the
    /// loopback names (`localhost`, `127.0.0.1`, `::1`) and its own bind address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host:port`, `:*` for any port, or `null`) whose requests the
    /// HTTP listener accepts. A request carrying any other `Origin` header is refused (403):
    /// by default every browser page is (MCP clients that are not browsers send no `Origin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// The downstream MCP servers, by name.
    #[serde(deserialize_with = "unique_keys")]
    pub servers: BTreeMap<String, ServerSpec>,
    /// Longest JSON-RPC message (one line over stdio) accepted from a client, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<u64>,
    /// Longest line accepted from a downstream stdio server, in bytes. A longer one is read to
    /// its end without being kept (the gateway's memory stays bounded whatever the server
    /// sends): the call it answers fails with an error saying so (recorded in the audit
    /// trail), any other message is dropped with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_server_message_bytes: Option<u64>,
    /// Longest a downstream `tools/call` may take before it fails (and counts against the
    /// server's breaker).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub call_timeout: Option<Duration>,
    /// Longest a downstream server may take to start: spawn, `initialize` and `tools/list`.
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_timeout: Option<Duration>,
    /// How long a `tools/call` that needs a human's approval waits for it before the gateway
    /// answers with the pending approval id (the client retries the same call to resume it).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub escalation_wait: Option<Duration>,
    /// First wait before a crashed downstream server is restarted; doubled on each restart.
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub restart_backoff: Option<Duration>,
    /// Upper bound of the restart wait.
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_restart_backoff: Option<Duration>,
    /// Streamable HTTP: a session that sees no request for this long is closed (its run ends);
    /// the safety net for clients whose connection dropped silently (default 5 min).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub session_idle_timeout: Option<Duration>,
    /// Streamable HTTP: a session not initialised within this long is closed (default 60 s).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub session_init_timeout: Option<Duration>,
    /// Streamable HTTP: interval of the keep-alive comments on an open event stream, so
    /// proxies do not cut it (default 15 s).
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub sse_keep_alive: Option<Duration>,
    /// Streamable HTTP: a connection whose request head (request line and headers) is not
    /// complete this long after it started is closed, before any authentication (default 10 s):
    /// a client cannot hold connections open by sending a head slowly.
    #[serde(
        default,
        with = "crate::units::duration_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub header_read_timeout: Option<Duration>,
    /// Streamable HTTP: open connections at most (default 512). A connection beyond it is
    /// answered `503 Service Unavailable` and closed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// Streamable HTTP: refused requests (no or an unknown token, an oversized body, a
    /// session-less request) recorded one by one per minute (default 600). Past it they are
    /// counted, and the next record (or a record when the listener stops) says how many were
    /// not recorded one by one: anyone who can reach the port can send them, and a record each
    /// would let them fill the audit trail's disk (after which the guard refuses every call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_records_per_minute: Option<u64>,
}

impl McpSection {
    /// [`max_message_bytes`](Self::max_message_bytes) or its default.
    pub fn max_message_bytes(&self) -> usize {
        let n = self.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// [`max_server_message_bytes`](Self::max_server_message_bytes) or its default.
    pub fn max_server_message_bytes(&self) -> usize {
        let n = self
            .max_server_message_bytes
            .unwrap_or(DEFAULT_MAX_SERVER_MESSAGE_BYTES);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// [`call_timeout`](Self::call_timeout) or its default.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT)
    }

    /// [`start_timeout`](Self::start_timeout) or its default.
    pub fn start_timeout(&self) -> Duration {
        self.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT)
    }

    /// [`escalation_wait`](Self::escalation_wait) or zero.
    pub fn escalation_wait(&self) -> Duration {
        self.escalation_wait.unwrap_or(Duration::ZERO)
    }

    /// [`session_idle_timeout`](Self::session_idle_timeout) or its default.
    pub fn session_idle_timeout(&self) -> Duration {
        self.session_idle_timeout
            .unwrap_or(DEFAULT_SESSION_IDLE_TIMEOUT)
    }

    /// [`session_init_timeout`](Self::session_init_timeout) or its default.
    pub fn session_init_timeout(&self) -> Duration {
        self.session_init_timeout
            .unwrap_or(DEFAULT_SESSION_INIT_TIMEOUT)
    }

    /// [`sse_keep_alive`](Self::sse_keep_alive) or its default.
    pub fn sse_keep_alive(&self) -> Duration {
        self.sse_keep_alive.unwrap_or(DEFAULT_SSE_KEEP_ALIVE)
    }

    /// [`header_read_timeout`](Self::header_read_timeout) or its default.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
            .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT)
    }

    /// [`refused_records_per_minute`](Self::refused_records_per_minute) or its default.
    pub fn refused_records_per_minute(&self) -> u64 {
        self.refused_records_per_minute
            .unwrap_or(DEFAULT_REFUSED_RECORDS_PER_MINUTE)
    }

    /// [`max_connections`](Self::max_connections) or its default.
    pub fn max_connections(&self) -> usize {
        let n = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// [`restart_backoff`](Self::restart_backoff) or its default.
    pub fn restart_backoff(&self) -> Duration {
        self.restart_backoff.unwrap_or(DEFAULT_RESTART_BACKOFF)
    }

    /// [`max_restart_backoff`](Self::max_restart_backoff) or its default (never below the
    /// first wait).
    pub fn max_restart_backoff(&self) -> Duration {
        self.max_restart_backoff
            .unwrap_or(DEFAULT_MAX_RESTART_BACKOFF)
            .max(self.restart_backoff())
    }
}

/// Who a connection acts as: its run's agent, role and compartment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// The agent id of the connection's run.
    pub agent: String,
    /// The role (must be defined in `roles`).
    pub role: String,
    /// The compartment the run is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartment: Option<String>,
    /// The task type of the run, if any (for modes and rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// Who triggered the run (default: `mcp-client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Whether the run is read-only (no tool that writes is visible or callable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// One bearer token of the streamable-HTTP listener: the SHA-256 of the token (hex; never the
/// token itself) and who the sessions opened with it act as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Lowercase or uppercase hex of the SHA-256 digest of the token's bytes (64 digits).
    pub sha256: String,
    /// The agent id of the sessions' runs.
    pub agent: String,
    /// The role (must be defined in `roles`).
    pub role: String,
    /// The compartment the runs are bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartment: Option<String>,
    /// The task type of the runs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// Who triggered the runs (default: `mcp-client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Whether the runs are read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

impl TokenSpec {
    /// The digest as bytes (`None`: not 64 hex digits).
    pub fn digest(&self) -> Option<[u8; 32]> {
        parse_sha256_hex(&self.sha256)
    }

    /// Who a session opened with this token acts as.
    pub fn connection(&self) -> Connection {
        Connection {
            agent: self.agent.clone(),
            role: self.role.clone(),
            compartment: self.compartment.clone(),
            task_type: self.task_type.clone(),
            trigger: self.trigger.clone(),
            read_only: self.read_only,
        }
    }
}

/// 64 hex digits -> 32 bytes. Hand-written: 32 bytes of hex need no crate, and the crate has no
/// hex decoder outside the audit module's private one.
fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// One downstream MCP server: a command spawned over stdio or a streamable-HTTP URL, and how its
/// tools are named in the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// The program to spawn (stdio transport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables set for it. The spawned server's environment is exactly these and
    /// the gateway's own [`INHERITED_ENV`] (`PATH`, `HOME`, locale, temp dir...), not the
    /// gateway's whole environment (which may hold its own secrets), unless
    /// [`inherit_env`](Self::inherit_env).
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
    /// `true`: the spawned server inherits the gateway's whole environment (then [`env`](Self::env)
    /// on top), as before this option existed. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit_env: Option<bool>,
    /// The server's streamable-HTTP endpoint (instead of `command`). `https://` is verified
    /// against the operating system's trust store, or only against [`ca_file`](Self::ca_file)
    /// when set; `http://` only to a loopback host unless
    /// [`allow_plain_http`](Self::allow_plain_http).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A PEM file of the CA certificates (one or more) that sign an `https://` server's
    /// certificate: a private CA. When set, these are the only roots trusted for this server
    /// (the operating system's store is not consulted), so no public CA can vouch for it.
    /// Relative to the gateway's working directory. Read and checked when the document is
    /// loaded (builds with the `mcp` feature) and again at every connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Allows an `http://` [`url`](Self::url) to a host that is not loopback (`localhost`,
    /// `127.0.0.0/8`, `[::1]`): requests, tool arguments and any per-call credential then cross
    /// the network unencrypted and unauthenticated. Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_plain_http: Option<bool>,
    /// The gateway's client certificate for an `https://` server that requires one (mutual
    /// TLS): a PEM file of the certificate, optionally followed by its intermediate CA
    /// certificates (no private key). Set together with
    /// [`client_key_file`](Self::client_key_file). Relative to the gateway's working
    /// directory; read and checked when the document is loaded (builds with the `mcp` feature)
    /// and again at every connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<std::path::PathBuf>,
    /// The private key of [`client_cert_file`](Self::client_cert_file): a PEM file of exactly
    /// one unencrypted key (PKCS#8, PKCS#1 RSA or SEC1 EC) that belongs to the certificate. On
    /// unix it must not be open to other users: mode 0600 or stricter (`chmod 600`), or 0640
    /// when owned by root (readable by its group, e.g. a secret volume's `fsGroup`); checked
    /// when the document is loaded, with no switch to skip it. The key's content never appears
    /// in errors, logs or the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<std::path::PathBuf>,
    /// Policy name of a server tool without an explicit name: this prefix followed by the
    /// server's name for it (default: no prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Explicit policy names, by the server's tool name.
    #[serde(
        default,
        deserialize_with = "unique_keys",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub tools: BTreeMap<String, String>,
    /// A scoped credential minted for every permitted call to this server and handed to it
    /// with the request (never to the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialSpec>,
}

/// The variables of the gateway's environment a spawned server gets (when set) without
/// [`ServerSpec::inherit_env`]: what finding programs, a home directory, the locale, the time
/// zone and a temp directory need (and their Windows names), nothing that usually holds a secret.
pub const INHERITED_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "SYSTEMROOT",
    "WINDIR",
    "PATHEXT",
    "COMSPEC",
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
];

impl ServerSpec {
    /// Whether the spawned server inherits the gateway's whole environment.
    pub fn inherits_env(&self) -> bool {
        self.inherit_env == Some(true)
    }
}

/// Default of [`CredentialSpec::meta_key`].
pub const DEFAULT_CREDENTIAL_META_KEY: &str = "tollgate/credential";

/// A per-call credential for a downstream server: minted under the call's permit (so only if a
/// grant of the run's role covers the tool, its operation and the resource), placed in the
/// forwarded request's `_meta`, and cut out of the result before the client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// The credential provider (declared in `credentials.providers`).
    pub provider: String,
    /// The resource asked for; `{compartment}` is replaced by the run's compartment.
    pub resource: String,
    /// The request `_meta` key the server reads it from (default `tollgate/credential`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_key: Option<String>,
    /// For a streamable-HTTP server: send the credential as this HTTP header of the call's
    /// request instead of in its `_meta` (`"Authorization"` sends `Bearer <credential>`; any
    /// other name the credential itself, e.g. `X-Api-Key`). Still minted per call, under the
    /// call's permit; other requests carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// Header names a credential header may not take: the ones the MCP HTTP transport sets itself.
const TRANSPORT_HEADERS: [&str; 9] = [
    "accept",
    "content-type",
    "content-length",
    "host",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
    "mcp-name",
];

/// Why `name` cannot be a credential header, if it cannot. Checked by hand (RFC 9110 token
/// characters) because this module validates documents in every build, without the `http`
/// crate of the `mcp` feature.
fn header_name_problem(name: &str) -> Option<&'static str> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Some("must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)");
    }
    let lower = name.to_ascii_lowercase();
    if TRANSPORT_HEADERS.contains(&lower.as_str()) || lower.starts_with("mcp-param-") {
        return Some("is set by the MCP transport itself; choose another header");
    }
    None
}

impl CredentialSpec {
    /// [`meta_key`](Self::meta_key) or its default.
    pub fn meta_key(&self) -> &str {
        self.meta_key
            .as_deref()
            .unwrap_or(DEFAULT_CREDENTIAL_META_KEY)
    }

    /// The resource for a run bound to `compartment`.
    pub fn resource_for(&self, compartment: Option<&str>) -> String {
        self.resource
            .replace("{compartment}", compartment.unwrap_or(""))
    }
}

/// How a server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// A child process over stdio.
    Stdio,
    /// Streamable HTTP.
    Http,
}

impl ServerSpec {
    /// How the server is reached.
    pub fn transport(&self) -> TransportKind {
        if self.url.is_some() {
            TransportKind::Http
        } else {
            TransportKind::Stdio
        }
    }

    /// The policy tool name of the server's tool `name`.
    pub fn policy_name(&self, name: &str) -> String {
        match self.tools.get(name) {
            Some(mapped) => mapped.clone(),
            None => format!("{}{name}", self.prefix.as_deref().unwrap_or("")),
        }
    }
}

/// Validates the document's `[mcp]` section against the rest of the document: roles exist,
/// each server has exactly one transport, explicit tool names exist in `tools`, no two servers
/// claim the same policy tool, numbers are in range.
pub(crate) fn check(doc: &Document) -> Result<(), DocumentError> {
    let Some(mcp) = &doc.mcp else {
        return Ok(());
    };
    if let Some(connection) = &mcp.connection {
        check_connection(doc, "mcp.connection", &connection.role)?;
        if connection.agent.trim().is_empty() {
            return Err(DocumentError::invalid(
                "mcp.connection.agent",
                "must not be empty",
            ));
        }
    } else if mcp.tokens.is_empty() {
        return Err(DocumentError::invalid(
            "mcp.connection",
            "say who a client acts as: `[mcp.connection]` (stdio), `[[mcp.tokens]]` (HTTP), or both",
        ));
    }
    let mut digests: Vec<[u8; 32]> = Vec::with_capacity(mcp.tokens.len());
    for (i, token) in mcp.tokens.iter().enumerate() {
        let at = |f: &str| format!("mcp.tokens[{i}].{f}");
        let Some(digest) = token.digest() else {
            return Err(DocumentError::invalid(
                at("sha256"),
                "must be the 64 hex digits of the token's SHA-256 digest (never the token itself)",
            ));
        };
        if let Some(j) = digests.iter().position(|d| *d == digest) {
            return Err(DocumentError::invalid(
                at("sha256"),
                format!("the same token as mcp.tokens[{j}]: one token names one identity"),
            ));
        }
        digests.push(digest);
        check_connection(doc, &at("role"), &token.role)?;
        if token.agent.trim().is_empty() {
            return Err(DocumentError::invalid(at("agent"), "must not be empty"));
        }
    }
    for (i, host) in mcp.allowed_hosts.iter().enumerate() {
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c == '/' || c == '@')
        {
            return Err(DocumentError::invalid(
                format!("mcp.allowed_hosts[{i}]"),
                "must be a host name or `host:port`, as clients send it in `Host`",
            ));
        }
    }
    if mcp.servers.is_empty() {
        return Err(DocumentError::invalid(
            "mcp.servers",
            "name at least one downstream server",
        ));
    }
    for (field, value) in [
        ("max_message_bytes", mcp.max_message_bytes),
        ("max_server_message_bytes", mcp.max_server_message_bytes),
        ("max_connections", mcp.max_connections),
        ("refused_records_per_minute", mcp.refused_records_per_minute),
    ] {
        if value == Some(0) {
            return Err(DocumentError::invalid(
                format!("mcp.{field}"),
                "must be at least 1",
            ));
        }
    }
    for (field, value) in [
        ("call_timeout", mcp.call_timeout),
        ("start_timeout", mcp.start_timeout),
        ("restart_backoff", mcp.restart_backoff),
        ("max_restart_backoff", mcp.max_restart_backoff),
        ("session_idle_timeout", mcp.session_idle_timeout),
        ("session_init_timeout", mcp.session_init_timeout),
        ("sse_keep_alive", mcp.sse_keep_alive),
        ("header_read_timeout", mcp.header_read_timeout),
    ] {
        if value.is_some_and(|d| d.is_zero()) {
            return Err(DocumentError::invalid(
                format!("mcp.{field}"),
                "must be longer than zero",
            ));
        }
    }
    if mcp.escalation_wait.is_some_and(|d| d > MAX_ESCALATION_WAIT) {
        return Err(DocumentError::invalid(
            "mcp.escalation_wait",
            "at most 1h: answer with the approval id and let the client retry instead",
        ));
    }
    for (i, origin) in mcp.allowed_origins.iter().enumerate() {
        if !origin_is_well_formed(origin) {
            return Err(DocumentError::invalid(
                format!("mcp.allowed_origins[{i}]"),
                "must be `null` or `http(s)://host:port` (`:*` for any port), without a path",
            ));
        }
    }
    // Explicit names claimed by each server: no two servers may route the same policy tool.
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, server) in &mcp.servers {
        let at = format!("mcp.servers.{name}");
        match (&server.command, &server.url) {
            (Some(c), None) if !c.trim().is_empty() => {}
            (None, Some(u)) if u.starts_with("http://") || u.starts_with("https://") => {
                if !server.args.is_empty() || !server.env.is_empty() || server.inherit_env.is_some()
                {
                    return Err(DocumentError::invalid(
                        at,
                        "`args`, `env` and `inherit_env` apply to a spawned `command`, not to a \
                         `url`",
                    ));
                }
                check_transport_security(&at, u, server)?;
            }
            (None, Some(_)) => {
                return Err(DocumentError::invalid(
                    format!("{at}.url"),
                    "must be an http:// or https:// URL",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(DocumentError::invalid(
                    at,
                    "set either `command` (stdio) or `url` (streamable HTTP), not both",
                ));
            }
            (Some(_), None) => {
                return Err(DocumentError::invalid(
                    format!("{at}.command"),
                    "must not be empty",
                ));
            }
            (None, None) => {
                return Err(DocumentError::invalid(
                    at,
                    "set `command` (stdio) or `url` (streamable HTTP)",
                ));
            }
        }
        if server.url.is_none() && (server.ca_file.is_some() || server.allow_plain_http.is_some()) {
            return Err(DocumentError::invalid(
                at,
                "`ca_file` and `allow_plain_http` apply to a `url`, not to a spawned `command`",
            ));
        }
        if server.url.is_none() {
            refuse_client_identity(
                &at,
                server,
                "a client certificate applies to an `https://` url, not to a spawned `command`",
            )?;
        }
        if let Some(cred) = &server.credential {
            let providers = doc
                .credentials
                .as_ref()
                .map(|c| &c.providers)
                .cloned()
                .unwrap_or_default();
            if !providers.contains_key(&cred.provider) {
                return Err(DocumentError::unknown(
                    format!("{at}.credential.provider"),
                    "credential provider",
                    &cred.provider,
                    providers.keys(),
                ));
            }
            if cred.resource.trim().is_empty() {
                return Err(DocumentError::invalid(
                    format!("{at}.credential.resource"),
                    "must not be empty",
                ));
            }
            if cred
                .meta_key
                .as_deref()
                .is_some_and(|k| k.trim().is_empty())
            {
                return Err(DocumentError::invalid(
                    format!("{at}.credential.meta_key"),
                    "must not be empty",
                ));
            }
            if let Some(header) = &cred.header {
                let path = format!("{at}.credential.header");
                if server.url.is_none() {
                    return Err(DocumentError::invalid(
                        path,
                        "only a streamable-HTTP server (`url`) takes its credential in a \
                         header; a stdio server reads it from the request's `_meta`",
                    ));
                }
                if let Some(problem) = header_name_problem(header) {
                    return Err(DocumentError::invalid(path, problem));
                }
            }
        }
        for (theirs, ours) in &server.tools {
            let path = format!("{at}.tools.{theirs}");
            if !doc.tools.contains_key(ours) {
                return Err(DocumentError::unknown(path, "tool", ours, doc.tools.keys()));
            }
            if let Some(other) = claimed.insert(ours, name) {
                return Err(DocumentError::invalid(
                    path,
                    format!("policy tool `{ours}` is already routed to server `{other}`"),
                ));
            }
        }
    }
    Ok(())
}

/// An `https://` server's `ca_file` (read and parsed here in builds with the gateway, so a
/// missing, unreadable or non-PEM file is refused when the document is loaded, not at the first
/// connection); an `http://` server's host (plain HTTP only to loopback unless
/// `allow_plain_http`).
fn check_transport_security(at: &str, url: &str, server: &ServerSpec) -> Result<(), DocumentError> {
    if url.starts_with("https://") {
        if server.allow_plain_http.is_some() {
            return Err(DocumentError::invalid(
                format!("{at}.allow_plain_http"),
                "applies to an `http://` url only",
            ));
        }
        match &server.ca_file {
            Some(ca_file) if ca_file.as_os_str().is_empty() => {
                return Err(DocumentError::invalid(
                    format!("{at}.ca_file"),
                    "must not be empty",
                ));
            }
            // Read and parsed only where the gateway is built (it alone has the TLS crates).
            #[cfg(feature = "mcp")]
            Some(ca_file) => {
                super::tls::read_ca_file(ca_file)
                    .map_err(|reason| DocumentError::invalid(format!("{at}.ca_file"), reason))?;
            }
            _ => {}
        }
        return check_client_identity(at, server);
    }
    refuse_client_identity(
        at,
        server,
        "applies to an `https://` url only (a client certificate is presented in a TLS \
         handshake; plain `http://` has none)",
    )?;
    if server.ca_file.is_some() {
        return Err(DocumentError::invalid(
            format!("{at}.ca_file"),
            "applies to an `https://` url only (an `http://` server has no certificate)",
        ));
    }
    if server.allow_plain_http != Some(true) && !is_loopback_http_url(url) {
        return Err(DocumentError::invalid(
            format!("{at}.url"),
            "plain `http://` is accepted only to a loopback host (`localhost`, 127.0.0.0/8, \
             `[::1]`): use `https://`, or set `allow_plain_http = true` to send calls and \
             credentials over the network unencrypted",
        ));
    }
    Ok(())
}

/// Refuses `client_cert_file` / `client_key_file` on a server where they mean nothing, naming
/// the first one set and `why`.
fn refuse_client_identity(at: &str, server: &ServerSpec, why: &str) -> Result<(), DocumentError> {
    for (field, set) in [
        ("client_cert_file", server.client_cert_file.is_some()),
        ("client_key_file", server.client_key_file.is_some()),
    ] {
        if set {
            return Err(DocumentError::invalid(format!("{at}.{field}"), why));
        }
    }
    Ok(())
}

/// An `https://` server's client certificate (mutual TLS): both files or neither, and (builds
/// with the gateway) both readable, the key one key, not open to other users and belonging to
/// the certificate. Each error names the field of the file at fault.
fn check_client_identity(at: &str, server: &ServerSpec) -> Result<(), DocumentError> {
    let field = |f: &str| format!("{at}.{f}");
    match (&server.client_cert_file, &server.client_key_file) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(DocumentError::invalid(
            field("client_key_file"),
            "missing: `client_cert_file` is set, and its private key goes in `client_key_file`",
        )),
        (None, Some(_)) => Err(DocumentError::invalid(
            field("client_cert_file"),
            "missing: `client_key_file` is set, and its certificate goes in `client_cert_file`",
        )),
        (Some(cert), Some(key)) => {
            for (name, path) in [("client_cert_file", cert), ("client_key_file", key)] {
                if path.as_os_str().is_empty() {
                    return Err(DocumentError::invalid(field(name), "must not be empty"));
                }
            }
            // Read and checked only where the gateway is built (it alone has the TLS crates);
            // the certificate must be valid now (the document is loaded now; no clock is
            // injected here, as the TLS handshake itself reads the system's).
            #[cfg(feature = "mcp")]
            super::tls::identity::read_client_identity(cert, key, std::time::SystemTime::now())
                .map_err(|(file, reason)| DocumentError::invalid(field(file.field()), reason))?;
            Ok(())
        }
    }
}

/// Whether an `http://` URL's host is loopback: exactly `localhost`, an IPv4 address in
/// 127.0.0.0/8 or `[::1]`. Hand-written because the document is validated in builds without a
/// URL parser; deliberately narrow (anything unusual in the authority, such as userinfo with
/// `@` or a backslash, counts as not loopback), so a mistake here refuses, never admits. The
/// gateway checks the host again with the URL parser its HTTP client uses before connecting.
pub(crate) fn is_loopback_http_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains(['@', '\\', '%']) || authority.is_empty() {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, rest)) if rest.is_empty() || rest.starts_with(':') => {
                return h
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|a| a.is_loopback())
                    && port_ok(rest.strip_prefix(':').unwrap_or(""));
            }
            _ => return false,
        }
    } else {
        match authority.split_once(':') {
            Some((h, port)) => {
                if !port_ok(port) {
                    return false;
                }
                h
            }
            None => authority,
        }
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

/// The port after an authority's `:`: empty (the scheme's default) or a port number.
fn port_ok(port: &str) -> bool {
    port.is_empty() || port.parse::<u16>().is_ok()
}

/// `null`, or `http://` / `https://` + host + `:port` or `:*`, nothing after.
fn origin_is_well_formed(origin: &str) -> bool {
    if origin == "null" {
        return true;
    }
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !host.contains(['/', '@', '?', '#', ' '])
        && (port == "*" || (!port.is_empty() && port.parse::<u16>().is_ok()))
}

fn check_connection(doc: &Document, path: &str, role: &str) -> Result<(), DocumentError> {
    if doc.roles.contains_key(role) {
        Ok(())
    } else {
        let path = if path.ends_with(".role") {
            path.to_owned()
        } else {
            format!("{path}.role")
        };
        Err(DocumentError::unknown(path, "role", role, doc.roles.keys()))
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_http_url;
    use proptest::prelude::*;

    /// Whether the WHATWG URL parser (the `url` crate, what reqwest connects to) sees a loopback
    /// host in `url`.
    fn url_crate_says_loopback(url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url) else {
            return false;
        };
        match parsed.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        }
    }

    #[test]
    fn loopback_hosts_and_lookalikes() {
        for url in [
            "http://localhost",
            "http://LocalHost:8080/mcp",
            "http://127.0.0.1:9/mcp",
            "http://127.255.0.1/",
            "http://[::1]/mcp",
            "http://[::1]:8080?x",
            "http://localhost#frag",
        ] {
            assert!(is_loopback_http_url(url), "{url}");
        }
        for url in [
            "https://localhost/",
            "http://",
            "http://localhost.evil.example/",
            "http://127.0.0.1.evil.example/",
            "http://127.0.0.1@evil.example/",
            "http://evil.example#@127.0.0.1/",
            "http://evil.example\\@127.0.0.1/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:80:80/",
            "http://[::1]x/",
            "http://[::2]/",
            "http://10.0.0.1/",
            "http://%6cocalhost/",
        ] {
            assert!(!is_loopback_http_url(url), "{url}");
        }
    }

    proptest! {
        /// Whatever the hand-written check calls loopback, the URL parser reqwest uses connects
        /// to a loopback host too: the check may refuse a loopback URL it finds odd, but never
        /// admits plain http to another host.
        #[test]
        fn never_calls_a_remote_url_loopback(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("localhost"), Just("LOCALHOST"), Just("127.0.0.1"), Just("127.1"),
                    Just("[::1]"), Just("[::2]"), Just("::1"), Just("evil.example"), Just("@"),
                    Just(":"), Just("80"), Just("99999"), Just("%2e"), Just("\\"), Just("#"),
                    Just("?"), Just("/"), Just("["), Just("]"), Just("."), Just("\t"),
                    Just("0x7f.1"), Just("user:pass"),
                ],
                0..8,
            )
        ) {
            let url = format!("http://{}", parts.concat());
            if is_loopback_http_url(&url) {
                prop_assert!(url_crate_says_loopback(&url), "{url}");
            }
        }
    }
}
