//! [`Gateway`]: the downstream servers of one policy and the connections served in front of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rmcp::ServiceExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::config::{Connection, McpSection};
use super::downstream::{Downstream, Route};
use super::fast::FastPath;
use super::framing::{FaultHook, GuardedStdio, ProtocolFault};
use super::session::Session;
use super::ticker::Ticker;
use crate::audit::EventKind;
use crate::policy::Policy;
use crate::{Guard, GuardError, RunContext};

/// Why the gateway cannot start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The policy has no `[mcp]` section.
    #[error("the policy has no `[mcp]` section: nothing to put behind the gateway")]
    NoSection,
    /// A downstream server could not be started, initialised or listed.
    #[error("MCP server `{server}` (mcp.servers.{server}): {reason}")]
    Spawn {
        /// The server's name in `mcp.servers`.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The section asks for something this build does not do yet.
    #[error("MCP server `{server}`: {what} are not supported yet")]
    Unsupported {
        /// The server's name in `mcp.servers`.
        server: String,
        /// What.
        what: &'static str,
    },
    /// The connection's run could not start (e.g. its compartment id is refused).
    #[error("the connection's run could not start: {0}")]
    Run(#[from] GuardError),
    /// A stdio connection (or an HTTP listener without tokens) needs `[mcp.connection]`, and
    /// the section has none.
    #[error(
        "the `[mcp]` section has no `[mcp.connection]`: a client without a bearer token has no identity"
    )]
    NoConnection,
    /// The HTTP listener's address is refused or cannot be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The client never completed the MCP `initialize` handshake.
    #[error("the client did not initialise the MCP session: {0}")]
    Initialize(String),
}

/// The connected clients (stdio connections and HTTP sessions that completed `initialize`),
/// told when the tools *they* may see change.
#[derive(Default)]
pub(crate) struct Clients {
    peers: parking_lot::Mutex<Vec<Arc<Client>>>,
}

/// One connected client: its peer, its run (weakly: the run ends with its session, not with
/// this list) and the listing it was last given or told about.
pub(crate) struct Client {
    peer: rmcp::service::Peer<rmcp::RoleServer>,
    shared: std::sync::Weak<Shared>,
    run: std::sync::Weak<crate::Run>,
    seen: parking_lot::Mutex<Vec<rmcp::model::Tool>>,
}

impl Client {
    fn live(&self) -> bool {
        !self.peer.is_transport_closed() && self.run.strong_count() > 0
    }

    /// The client's listing now, if it is still connected.
    fn listing(&self) -> Option<Vec<rmcp::model::Tool>> {
        let shared = self.shared.upgrade()?;
        let run = self.run.upgrade()?;
        Some(shared.listing(&run))
    }
}

impl Clients {
    /// Registers a client that completed `initialize`, with the listing it would get now.
    pub(crate) fn register(
        &self,
        peer: rmcp::service::Peer<rmcp::RoleServer>,
        shared: &Arc<Shared>,
        run: &Arc<crate::Run>,
    ) {
        let client = Arc::new(Client {
            peer,
            shared: Arc::downgrade(shared),
            run: Arc::downgrade(run),
            seen: parking_lot::Mutex::new(shared.listing(run)),
        });
        let mut peers = self.peers.lock();
        peers.retain(|c| c.live());
        peers.push(client);
    }

    /// Records that the client of `run` was given `listing` (it listed).
    pub(crate) fn listed(&self, run: &Arc<crate::Run>, listing: &[rmcp::model::Tool]) {
        let peers = self.peers.lock();
        for c in peers.iter() {
            if std::ptr::eq(c.run.as_ptr(), Arc::as_ptr(run)) {
                *c.seen.lock() = listing.to_vec();
            }
        }
    }

    /// Sends `notifications/tools/list_changed` to every live client whose own listing (through
    /// its role's filter) differs from the one it was last given: a client is never told about
    /// a change among tools it may not see (that would tell it those tools exist and moved).
    pub(crate) async fn tools_changed(&self) {
        let peers: Vec<_> = {
            let mut peers = self.peers.lock();
            peers.retain(|c| c.live());
            peers.clone()
        };
        for client in peers {
            let Some(now) = client.listing() else {
                continue;
            };
            {
                let mut seen = client.seen.lock();
                if *seen == now {
                    continue;
                }
                *seen = now;
            }
            if let Err(e) = client.peer.notify_tool_list_changed().await {
                tracing::debug!(target: "tollgate::mcp", error = %e, "list_changed not delivered");
            }
        }
    }
}

/// What every connection of one gateway shares.
pub(crate) struct Shared {
    pub(crate) guard: Arc<Guard>,
    pub(crate) clients: Arc<Clients>,
    pub(crate) section: McpSection,
    servers: Vec<Arc<Downstream>>,
    faults: AtomicU64,
    /// The tick in-flight calls look at the kill switch and their timeout on.
    pub(crate) ticker: Ticker,
}

impl Shared {
    /// The server and route of the policy tool `name`. A name two servers claim (a server that
    /// shadows another's tool, by its own name or its prefix) is routed to neither: fail closed.
    pub(crate) fn route(&self, name: &str) -> Option<(Arc<Downstream>, String)> {
        let mut found = None;
        for s in &self.servers {
            if let Some(r) = s.routes().get(name) {
                if found.is_some() {
                    tracing::warn!(target: "tollgate::mcp", tool = name, "tool claimed by two servers: not routed");
                    return None;
                }
                found = Some((Arc::clone(s), r.theirs.clone()));
            }
        }
        found
    }

    /// Every routed policy tool (names two servers claim are left out).
    /// What `tools/list` shows the run `run`: the routed tools its role may call, by name.
    pub(crate) fn listing(&self, run: &crate::Run) -> Vec<rmcp::model::Tool> {
        let visible: std::collections::HashSet<String> =
            self.guard.visible_tools(run).into_iter().collect();
        let mut tools: Vec<_> = self
            .all_routes()
            .into_iter()
            .filter(|(name, _)| visible.contains(name))
            .map(|(_, route)| route.exposed)
            .collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    pub(crate) fn all_routes(&self) -> Vec<(String, Route)> {
        let mut claims: std::collections::HashMap<String, (usize, Route)> = Default::default();
        for s in &self.servers {
            for (name, route) in s.routes().iter() {
                claims
                    .entry(name.clone())
                    .and_modify(|(n, _)| *n += 1)
                    .or_insert_with(|| (1, route.clone()));
            }
        }
        claims
            .into_iter()
            .filter(|(_, (n, _))| *n == 1)
            .map(|(name, (_, route))| (name, route))
            .collect()
    }
}

/// The MCP gateway of one policy document: its downstream servers, started and listed, and the
/// guard every call goes through.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tollgate::Guard;
/// use tollgate::integrations::mcp::Gateway;
/// use tollgate::policy::{Bindings, Policy};
///
/// let policy = Policy::from_file("gateway.toml")?;
/// let guard = Arc::new(Guard::from_policy(&policy, Bindings::new())?);
/// let gateway = Gateway::start(&policy, guard).await?;
/// gateway.serve_stdio().await?;
/// # Ok(()) }
/// ```
pub struct Gateway {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "servers",
                &self
                    .shared
                    .servers
                    .iter()
                    .map(|s| &s.name)
                    .collect::<Vec<_>>(),
            )
            .field("faults", &self.faults())
            .finish()
    }
}

impl Gateway {
    /// Starts every server of `policy`'s `[mcp]` section and lists its tools. `guard` should be
    /// built from the same policy ([`Guard::from_policy`]); it is shared, so the caller (or a
    /// kill-switch follower) keeps driving it.
    pub async fn start(policy: &Policy, guard: Arc<Guard>) -> Result<Self, GatewayError> {
        let section = policy
            .document()
            .mcp
            .clone()
            .ok_or(GatewayError::NoSection)?;
        let clients = Arc::new(Clients::default());
        let servers: Vec<Arc<Downstream>> = section
            .servers
            .iter()
            .map(|(name, spec)| {
                Arc::new(Downstream::new(name, spec, &section, Arc::clone(&clients)))
            })
            .collect();
        for s in &servers {
            if let Err(e) = s.connect().await {
                for s in &servers {
                    s.close();
                }
                return Err(e);
            }
        }
        Ok(Self {
            shared: Arc::new(Shared {
                guard,
                clients,
                section,
                servers,
                faults: AtomicU64::new(0),
                ticker: Ticker::default(),
            }),
        })
    }

    /// The guard every call goes through (for the kill switch, approvals, reloads).
    pub fn guard(&self) -> &Arc<Guard> {
        &self.shared.guard
    }

    /// The `[mcp]` section in force.
    pub fn section(&self) -> &McpSection {
        &self.shared.section
    }

    /// Malformed, invalid or oversized client messages answered with a protocol error so far.
    pub fn faults(&self) -> u64 {
        self.shared.faults.load(Ordering::Relaxed)
    }

    /// How many times the server `name` was restarted after a crash (`None`: no such server).
    pub fn restarts(&self, name: &str) -> Option<u32> {
        self.server(name).map(|s| s.restarts())
    }

    /// Whether the server `name` is connected now (`None`: no such server).
    pub fn is_up(&self, name: &str) -> Option<bool> {
        self.server(name).map(|s| s.is_up())
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn server(&self, name: &str) -> Option<&Arc<Downstream>> {
        self.shared.servers.iter().find(|s| s.name == name)
    }

    /// The run context a connection acting as `c` gets.
    pub(crate) fn context(c: &Connection) -> RunContext {
        let mut ctx = RunContext::new(c.agent.as_str(), c.role.as_str())
            .triggered_by(c.trigger.as_deref().unwrap_or("mcp-client"));
        if let Some(comp) = &c.compartment {
            ctx = ctx.in_compartment(comp.as_str());
        }
        if let Some(t) = &c.task_type {
            ctx = ctx.for_task(t.as_str());
        }
        if c.read_only == Some(true) {
            ctx = ctx.read_only();
        }
        ctx
    }

    /// Serves one client connection over the process's stdin and stdout until the client
    /// closes it.
    ///
    /// Where stdin or stdout is a pipe (as when a client spawns the gateway), it is read or
    /// written by the runtime itself: tokio's `stdin()` and `stdout()` do every read and write
    /// on its blocking thread pool, a thread hand-off per line each way. Such a pipe is put in
    /// non-blocking mode (its open file description is shared with the process's fd 0 or 1):
    /// nothing else in the process may read stdin or write stdout while the gateway serves on
    /// them, which the protocol requires anyway.
    pub async fn serve_stdio(&self) -> Result<(), GatewayError> {
        let read: Box<dyn AsyncRead + Send + Unpin> = match stdin_pipe() {
            Some(pipe) => Box::new(pipe),
            None => Box::new(tokio::io::stdin()),
        };
        let write: Box<dyn AsyncWrite + Send + Unpin> = match stdout_pipe() {
            Some(pipe) => Box::new(pipe),
            None => Box::new(tokio::io::stdout()),
        };
        self.serve(read, write).await
    }

    /// Serves one client connection (newline-delimited JSON-RPC, as over stdio) on `read` and
    /// `write` until the client closes it. The connection is one run, acting as the section's
    /// `connection`; the run ends with the connection.
    ///
    /// When `read` ends (the client closed the gateway's stdin), the calls still in flight are
    /// stopped and not answered: one not forwarded yet (waiting for an approval, say) never is,
    /// one a server is running is abandoned (the server is sent `notifications/cancelled`), and
    /// each is recorded with the outcome "cancelled: the client's session ended". Plain
    /// `tools/call` requests (the gateway's own fast path) stop at once, and this returns once
    /// they are recorded and their servers sent the notification (waiting at most 5 s for a
    /// call stuck elsewhere), so that a process closing its servers right after, as
    /// `tollgate mcp` does, does not close them before. The other requests are rmcp's, which
    /// first waits up to 5 s for them to answer, then stops them the same way; this returns
    /// once those are recorded and their servers told too (their stop takes up to 100 ms more
    /// to tell the session's end from the client's own cancellation).
    pub async fn serve<R, W>(&self, read: R, write: W) -> Result<(), GatewayError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let connection = shared
            .section
            .connection
            .as_ref()
            .ok_or(GatewayError::NoConnection)?;
        let run = Arc::new(shared.guard.start_run(Self::context(connection))?);
        let hook: FaultHook = {
            let shared = Arc::clone(&shared);
            let run = Arc::clone(&run);
            Arc::new(move |fault: &ProtocolFault| {
                shared.faults.fetch_add(1, Ordering::Relaxed);
                let detail = fault.to_string();
                let recorded = run.shared.record(
                    &run,
                    EventKind::ProtocolFault {
                        source: "mcp",
                        fault: fault.kind(),
                        detail: &detail,
                    },
                );
                if let Err(e) = recorded {
                    tracing::error!(target: "tollgate::mcp", error = %e, "protocol fault not recorded");
                }
                tracing::warn!(
                    target: "tollgate::mcp",
                    fault = fault.kind(),
                    detail = %fault,
                    "client message refused with a protocol error"
                );
            })
        };
        let session = Session::new(Arc::clone(&shared), run);
        let ended = CancellationToken::new();
        let transport = GuardedStdio::new(read, write, shared.section.max_message_bytes(), hook)
            .with_fast_path(FastPath::new(session.clone(), ended.clone()));
        let service = session
            .clone()
            .serve(transport)
            .await
            .map_err(|e| GatewayError::Initialize(e.to_string()))?;
        let _ = service.waiting().await;
        // The fast path's calls were stopped at the end of the input already (rmcp's, after its
        // drain); this is for a service that stopped for another reason. The session ends once
        // its stopped calls (on both paths) are recorded and their servers told.
        ended.cancel();
        session.ended().await;
        Ok(())
    }

    /// Stops every downstream server (also done when the gateway is dropped inside a tokio
    /// runtime).
    pub fn shutdown(&self) {
        for s in &self.shared.servers {
            s.close();
        }
    }
}

/// The process's stdin as an asynchronous pipe, if it is a pipe (tokio checks the fd before it
/// changes it: on `None` it is left as it was).
#[cfg(unix)]
fn stdin_pipe() -> Option<tokio::net::unix::pipe::Receiver> {
    use std::os::fd::AsFd;
    let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()
}

/// The process's stdout as an asynchronous pipe, if it is a pipe (as [`stdin_pipe`]).
#[cfg(unix)]
fn stdout_pipe() -> Option<tokio::net::unix::pipe::Sender> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout().as_fd().try_clone_to_owned().ok()?;
    tokio::net::unix::pipe::Sender::from_owned_fd(fd).ok()
}

#[cfg(not(unix))]
fn stdin_pipe() -> Option<tokio::io::Stdin> {
    None
}

#[cfg(not(unix))]
fn stdout_pipe() -> Option<tokio::io::Stdout> {
    None
}
