//! One downstream MCP server: spawned over stdio (its pipes owned by a [`Relay`]) or reached over
//! streamable HTTP, its tools listed and renamed into policy names, and restarted with
//! exponential backoff when it dies.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam,
    ClientRequest, RequestId, ServerResult, Tool,
};
use rmcp::service::NotificationContext;
use rmcp::service::{
    ClientInitializeError, Peer, PeerRequestOptions, RequestHandle, RunningService, ServiceError,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig,
};
use rmcp::{ClientHandler, RoleClient, ServiceExt};

use super::GatewayError;
use super::abandon::Abandon;
use super::config::{McpSection, ServerSpec, TransportKind};
use super::gateway::Clients;
use super::header_credential::HeaderCredential;
use super::relay::{Relay, RelayError};

/// Why a forwarded call produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DownstreamError {
    /// The server is down (crashed and not yet restarted).
    #[error("MCP server `{0}` is unavailable (restarting)")]
    Unavailable(String),
    /// The server is down and the last attempt to reconnect failed, for `reason` (a refused
    /// certificate, a refused connection, no answer to `initialize`...).
    #[error("MCP server `{server}` is unavailable (restarting); the last attempt failed: {reason}")]
    Down {
        /// The server.
        server: String,
        /// Why the last attempt failed.
        reason: String,
    },
    /// The server did not answer within the call timeout.
    #[error("MCP server `{server}` did not answer within {timeout:?}")]
    Timeout {
        /// The server.
        server: String,
        /// The configured limit.
        timeout: Duration,
    },
    /// The connection to the server broke during the call (it crashed or exited).
    #[error("MCP server `{0}` closed the connection during the call")]
    Crashed(String),
    /// The server's answer was longer than `[mcp] max_server_message_bytes`: read to its end
    /// and discarded, never kept whole.
    #[error(
        "MCP server `{server}` answered with more than {limit} bytes (max_server_message_bytes); the answer was discarded"
    )]
    TooLarge {
        /// The server.
        server: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The server answered with a JSON-RPC error.
    #[error("MCP server `{server}` refused the call: {message}")]
    Refused {
        /// The server.
        server: String,
        /// Its error message.
        message: String,
    },
}

/// A `tools/call` sent through rmcp's client and waiting for its answer: dropped before the
/// answer came (its receiver still empty), it sends the server `notifications/cancelled`.
struct Unanswered<'a> {
    server: &'a str,
    peer: &'a Peer<RoleClient>,
    id: RequestId,
    rx: tokio::sync::oneshot::Receiver<Result<ServerResult, ServiceError>>,
    abandon: &'a Abandon<'a>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        // Answered (taken or not), or the connection's service ended: nothing to cancel.
        if !matches!(
            self.rx.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ) {
            return;
        }
        let (peer, id, server) = (self.peer.clone(), self.id.clone(), self.server.to_owned());
        let reason = self.abandon.reason();
        self.abandon.spawn_send(async move {
            let params = CancelledNotificationParam::new(Some(id.clone()), Some(reason.clone()));
            let sent = peer.notify_cancelled(params).await;
            super::abandon::log_sent(&server, &id, &reason, sent);
        });
    }
}

/// A live connection.
struct Conn {
    peer: Peer<RoleClient>,
    /// Kept so the service lives as long as the connection.
    _service: RunningService<RoleClient, Watcher>,
    /// A stdio server's pipes (forwarded calls are written raw on them); `None` over HTTP,
    /// where calls go through `peer`. Dropping it kills the child process.
    relay: Option<Relay>,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.peer.is_transport_closed() || self.relay.as_ref().is_some_and(Relay::is_closed)
    }
}

/// The gateway's client handler for one downstream server: follows its
/// `notifications/tools/list_changed` (everything else is the default: no sampling, no roots).
pub(crate) struct Watcher {
    server: Weak<Downstream>,
}

impl ClientHandler for Watcher {
    async fn on_tool_list_changed(&self, context: NotificationContext<RoleClient>) {
        if let Some(server) = self.server.upgrade() {
            // Not awaited here: the listing's answer arrives through the service loop that
            // runs this handler.
            tokio::spawn(server.relist(context.peer));
        }
    }
}

/// The route of one policy tool: the server's own name for it and the tool as clients see it.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) theirs: String,
    pub(crate) exposed: Tool,
}

pub(crate) struct Downstream {
    pub(crate) name: String,
    spec: ServerSpec,
    call_timeout: Duration,
    start_timeout: Duration,
    /// Longest line read from a stdio server.
    max_line: usize,
    backoff: (Duration, Duration),
    conn: Mutex<Option<Arc<Conn>>>,
    routes: RwLock<Arc<HashMap<String, Route>>>,
    restarting: AtomicBool,
    restarts: AtomicU32,
    /// Why the last restart attempt failed (cleared when one succeeds): what a call to the
    /// server while it is down is told, and so what its audit record says.
    last_failure: Mutex<Option<String>>,
    closed: AtomicBool,
    /// Generation of the latest listing started: an older listing that answers later does
    /// not overwrite a newer one.
    listing: AtomicU64,
    clients: Arc<Clients>,
}

impl Downstream {
    pub(crate) fn new(
        name: &str,
        spec: &ServerSpec,
        section: &McpSection,
        clients: Arc<Clients>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            spec: spec.clone(),
            call_timeout: section.call_timeout(),
            start_timeout: section.start_timeout(),
            max_line: section.max_server_message_bytes(),
            backoff: (section.restart_backoff(), section.max_restart_backoff()),
            conn: Mutex::new(None),
            routes: RwLock::new(Arc::new(HashMap::new())),
            restarting: AtomicBool::new(false),
            restarts: AtomicU32::new(0),
            last_failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            listing: AtomicU64::new(0),
            clients,
        }
    }

    /// The per-call credential the server receives, if any.
    pub(crate) fn credential(&self) -> Option<&super::config::CredentialSpec> {
        self.spec.credential.as_ref()
    }

    /// How many times the server was restarted after a crash.
    pub(crate) fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Whether a connection is up now.
    pub(crate) fn is_up(&self) -> bool {
        self.conn.lock().as_ref().is_some_and(|c| !c.is_closed())
    }

    /// The routes (policy name -> server tool) as of the last successful listing.
    pub(crate) fn routes(&self) -> Arc<HashMap<String, Route>> {
        self.routes.read().clone()
    }

    /// Starts the client session: spawns the server (stdio) or connects to its URL (streamable
    /// HTTP), bounded by the start timeout.
    async fn open(
        self: &Arc<Self>,
    ) -> Result<(RunningService<RoleClient, Watcher>, Option<Relay>), GatewayError> {
        let server = || self.name.clone();
        let watcher = || Watcher {
            server: Arc::downgrade(self),
        };
        let spawn_error = |e: std::io::Error| GatewayError::Spawn {
            server: server(),
            reason: e.to_string(),
        };
        let (started, relay) = match (self.spec.transport(), &self.spec.command, &self.spec.url) {
            (TransportKind::Stdio, Some(command), _) => {
                let mut cmd = tokio::process::Command::new(command);
                if !self.spec.inherits_env() {
                    // The gateway's environment may hold its own secrets (cloud keys, tokens):
                    // the server gets only what running a program needs, and its `env`.
                    cmd.env_clear();
                    for name in super::config::INHERITED_ENV {
                        if let Some(value) = std::env::var_os(name) {
                            cmd.env(name, value);
                        }
                    }
                }
                cmd.args(&self.spec.args)
                    .envs(&self.spec.env)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::inherit())
                    .kill_on_drop(true);
                let child = cmd.spawn().map_err(spawn_error)?;
                let (relay, rmcp_side) =
                    Relay::new(child, self.max_line, &self.name).map_err(spawn_error)?;
                (
                    tokio::time::timeout(self.start_timeout, watcher().serve(rmcp_side)).await,
                    Some(relay),
                )
            }
            (TransportKind::Http, _, Some(url)) => {
                // Our own client, so TLS is rustls on ring with the document's trust (tls.rs).
                let (client, refusals) =
                    super::tls::http_client(&self.spec).map_err(|reason| GatewayError::Spawn {
                        server: server(),
                        reason,
                    })?;
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                // Answers are bounded as over stdio.
                config.max_json_response_size = self.max_line;
                config.max_sse_event_size = self.max_line;
                let header = self
                    .spec
                    .credential
                    .as_ref()
                    .and_then(|c| c.header.as_deref().map(|h| (c.meta_key(), h)));
                let started = match header {
                    None => self.serve_http(client, config).await,
                    Some((meta_key, header)) => {
                        let client =
                            HeaderCredential::new(client, meta_key, header).map_err(|reason| {
                                GatewayError::Spawn {
                                    server: server(),
                                    reason,
                                }
                            })?;
                        self.serve_http(client, config).await
                    }
                };
                // rmcp's error drops reqwest's cause: name a TLS failure (a refused server
                // certificate, a client certificate required or refused) ourselves.
                if !matches!(started, Ok(Ok(_)))
                    && let Some(reason) = refusals.take(started.is_err())
                {
                    return Err(GatewayError::Spawn {
                        server: server(),
                        reason,
                    });
                }
                (started, None)
            }
            _ => {
                return Err(GatewayError::Unsupported {
                    server: server(),
                    what: "servers with neither `command` nor `url`",
                });
            }
        };
        let service = started
            .map_err(|_| GatewayError::Spawn {
                server: server(),
                reason: format!("no answer to `initialize` within {:?}", self.start_timeout),
            })?
            .map_err(|e| GatewayError::Spawn {
                server: server(),
                reason: e.to_string(),
            })?;
        Ok((service, relay))
    }

    /// Initialises a client session over streamable HTTP through `client`, bounded by the start
    /// timeout (one function for the plain and the header-credential client types).
    async fn serve_http<C: StreamableHttpClient + Sync>(
        self: &Arc<Self>,
        client: C,
        config: StreamableHttpClientTransportConfig,
    ) -> Result<
        Result<RunningService<RoleClient, Watcher>, ClientInitializeError>,
        tokio::time::error::Elapsed,
    > {
        let transport = StreamableHttpClientTransport::with_client(client, config);
        let watcher = Watcher {
            server: Arc::downgrade(self),
        };
        tokio::time::timeout(self.start_timeout, watcher.serve(transport)).await
    }

    /// Starts the server (or connects to it), initialises the session and lists its tools.
    pub(crate) async fn connect(self: &Arc<Self>) -> Result<(), GatewayError> {
        let server = || self.name.clone();
        let (service, relay) = self.open().await?;
        let peer = service.peer().clone();
        let tools = tokio::time::timeout(self.start_timeout, peer.list_all_tools())
            .await
            .map_err(|_| GatewayError::Spawn {
                server: server(),
                reason: format!("no answer to `tools/list` within {:?}", self.start_timeout),
            })?
            .map_err(|e| GatewayError::Spawn {
                server: server(),
                reason: e.to_string(),
            })?;
        let (routes, collisions) = self.routes_of(tools);
        if let Some(first) = collisions.first() {
            // Which of the server's tools a call would reach is not decidable: refused, as two
            // servers claiming one name are.
            return Err(GatewayError::Spawn {
                server: server(),
                reason: first.clone(),
            });
        }
        self.listing.fetch_add(1, Ordering::AcqRel);
        *self.routes.write() = Arc::new(routes);
        *self.conn.lock() = Some(Arc::new(Conn {
            peer,
            _service: service,
            relay,
        }));
        Ok(())
    }

    /// Policy name -> route of every tool of a listing, and a description of every policy name
    /// two of the listing's tools claim (the server's own name of one and another's mapped name
    /// or prefixed name, or one name listed twice). A claimed name is left out of the routes: a
    /// call must never reach another tool than the one the policy decided about.
    fn routes_of(&self, tools: Vec<Tool>) -> (HashMap<String, Route>, Vec<String>) {
        let mut routes: HashMap<String, Route> = HashMap::with_capacity(tools.len());
        let mut claimed: Vec<String> = Vec::new();
        let mut collisions = Vec::new();
        for tool in tools {
            let ours = self.spec.policy_name(&tool.name);
            let theirs = tool.name.to_string();
            if let Some(first) = routes.remove(&ours) {
                collisions.push(format!(
                    "its tools `{}` and `{theirs}` both become the policy tool `{ours}` (by \
                     `prefix`/`tools` or a tool listed twice): which one a call would reach is \
                     ambiguous. Map them to different names in `mcp.servers.{}.tools`",
                    first.theirs, self.name
                ));
                claimed.push(ours);
                continue;
            }
            if claimed.contains(&ours) {
                continue;
            }
            let mut exposed = tool;
            exposed.name = ours.clone().into();
            routes.insert(ours, Route { theirs, exposed });
        }
        (routes, collisions)
    }

    /// The server said its tools changed: lists them again, then tells every connected client
    /// (which lists again through the guard's filter). A listing that fails keeps the previous
    /// routes (every call is still decided by the guard; a tool the server dropped fails there).
    async fn relist(self: Arc<Self>, peer: Peer<RoleClient>) {
        let generation = self.listing.fetch_add(1, Ordering::AcqRel) + 1;
        match tokio::time::timeout(self.start_timeout, peer.list_all_tools()).await {
            Ok(Ok(tools)) => {
                let (routes, collisions) = self.routes_of(tools);
                for c in &collisions {
                    tracing::error!(target: "tollgate::mcp", server = %self.name, collision = %c, "tool name collision after re-listing; the name is not routed");
                }
                let routes = Arc::new(routes);
                {
                    let mut current = self.routes.write();
                    if self.listing.load(Ordering::Acquire) != generation {
                        return; // a newer listing is on its way
                    }
                    *current = routes;
                }
                tracing::info!(target: "tollgate::mcp", server = %self.name, "tool list changed; re-listed");
                self.clients.tools_changed().await;
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "tollgate::mcp", server = %self.name, error = %e, "re-listing tools failed; keeping the previous list");
            }
            Err(_) => {
                tracing::warn!(target: "tollgate::mcp", server = %self.name, "re-listing tools timed out; keeping the previous list");
            }
        }
    }

    /// The configured limit of one call (the caller bounds [`Downstream::call`] with it).
    pub(crate) fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The error of a call that passed [`Downstream::call_timeout`].
    pub(crate) fn timed_out(&self) -> DownstreamError {
        DownstreamError::Timeout {
            server: self.name.clone(),
            timeout: self.call_timeout,
        }
    }

    /// Forwards one call. Not bounded here: the caller bounds it by [`Downstream::call_timeout`]
    /// (on the gateway's shared tick, not a timer per call). A broken connection schedules a
    /// restart. Dropping the future after the request was sent and before its answer sends the
    /// server `notifications/cancelled` for it, with `abandon`'s reason (see
    /// [`abandon`](super::abandon)).
    pub(crate) async fn call(
        self: &Arc<Self>,
        theirs: &str,
        arguments: Option<rmcp::model::JsonObject>,
        meta: Option<rmcp::model::RequestMetaObject>,
        abandon: &Abandon<'_>,
    ) -> Result<CallToolResult, DownstreamError> {
        let conn = self.conn.lock().clone();
        let Some(conn) = conn.filter(|c| !c.is_closed()) else {
            self.schedule_restart();
            return Err(match self.last_failure.lock().clone() {
                Some(reason) => DownstreamError::Down {
                    server: self.name.clone(),
                    reason,
                },
                None => DownstreamError::Unavailable(self.name.clone()),
            });
        };
        let mut params = CallToolRequestParams::new(theirs.to_owned());
        params.arguments = arguments;
        params.meta = meta;
        if let Some(relay) = &conn.relay {
            return match relay.call(&params, abandon).await {
                Ok(result) => Ok(result),
                Err(RelayError::Refused(message)) => Err(DownstreamError::Refused {
                    server: self.name.clone(),
                    message,
                }),
                Err(RelayError::TooLarge(limit)) => Err(DownstreamError::TooLarge {
                    server: self.name.clone(),
                    limit,
                }),
                Err(RelayError::Closed) => {
                    self.schedule_restart();
                    Err(DownstreamError::Crashed(self.name.clone()))
                }
            };
        }
        match self.call_peer(&conn.peer, params, abandon).await {
            Ok(result) => Ok(result),
            Err(ServiceError::McpError(e)) => Err(DownstreamError::Refused {
                server: self.name.clone(),
                message: e.message.to_string(),
            }),
            Err(e) => {
                if conn.peer.is_transport_closed()
                    || matches!(
                        e,
                        ServiceError::TransportClosed | ServiceError::TransportSend(_)
                    )
                {
                    self.schedule_restart();
                    Err(DownstreamError::Crashed(self.name.clone()))
                } else {
                    Err(DownstreamError::Refused {
                        server: self.name.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    /// `tools/call` through rmcp's client (a server over streamable HTTP), as
    /// [`Peer::call_tool`] does it, but with the gateway's own guard for an abandoned call:
    /// rmcp's own sends a generic reason, none when the call is abandoned the moment its answer
    /// came, and the gateway's log would not name the request.
    async fn call_peer(
        &self,
        peer: &Peer<RoleClient>,
        params: CallToolRequestParams,
        abandon: &Abandon<'_>,
    ) -> Result<CallToolResult, ServiceError> {
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        let handle = peer
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await?;
        // Awaited directly: without options (no timeout, no progress, not a subscription),
        // `RequestHandle::await_response` is this wait and nothing else.
        let RequestHandle { rx, id, .. } = handle;
        let mut waiting = Unanswered {
            server: &self.name,
            peer,
            id,
            rx,
            abandon,
        };
        let answer = (&mut waiting.rx)
            .await
            .map_err(|_| ServiceError::TransportClosed)??;
        match answer {
            ServerResult::CallToolResult(result) => Ok(result),
            // What `call_tool` refuses too: the gateway drives neither.
            ServerResult::InputRequiredResult(_) | ServerResult::CreateTaskResult(_) => {
                Err(ServiceError::UnexpectedResponse)
            }
            // A result rmcp's untagged parse took for another kind (`{}`, `_meta` only): read
            // as a tool result, as the relay reads every answer.
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .ok_or(ServiceError::UnexpectedResponse),
        }
    }

    /// Starts one restart loop (if none is running): waits, reconnects, doubles the wait after
    /// each failed attempt up to the configured maximum.
    pub(crate) fn schedule_restart(self: &Arc<Self>) {
        if self.closed.load(Ordering::Acquire) || self.restarting.swap(true, Ordering::AcqRel) {
            return;
        }
        *self.conn.lock() = None;
        tracing::warn!(server = %self.name, "MCP server is down; restarting with backoff");
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let (mut wait, max) = this.backoff;
            loop {
                tokio::time::sleep(wait).await;
                if this.closed.load(Ordering::Acquire) {
                    break;
                }
                match this.connect().await {
                    Ok(()) => {
                        *this.last_failure.lock() = None;
                        this.restarts.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(server = %this.name, "MCP server restarted");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(server = %this.name, error = %e, "restart failed");
                        *this.last_failure.lock() = Some(e.to_string());
                        wait = (wait * 2).min(max);
                    }
                }
            }
            this.restarting.store(false, Ordering::Release);
        });
    }

    /// Stops the server and any restart loop.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Dropping the service cancels it and kills the child process.
        *self.conn.lock() = None;
    }
}
