//! The gateway as a streamable-HTTP MCP server ([`Gateway::bind_http`]).
//!
//! rmcp's [`StreamableHttpService`] does the protocol (sessions, SSE streams, the request body
//! limit, `Host` validation against DNS rebinding); hyper's HTTP/1.1 server runs it. In front of
//! it, every request goes through three checks of this module, in this order:
//!
//! 1. **who**: with `[[mcp.tokens]]` configured, the request's `Authorization: Bearer` token is
//!    hashed (SHA-256) and compared, in constant time, with every configured digest; a request
//!    without a token or with one not listed gets `401` and an audit record (`protocol_fault`,
//!    fault `unauthenticated` / `unknown_token`) and never reaches rmcp. Without tokens (only
//!    allowed on a loopback address) every request acts as `[mcp.connection]`;
//! 2. **which session**: a request naming an `Mcp-Session-Id` must carry the token the session was
//!    opened with; another token gets `403` and an audit record in that session's run
//!    (`session_token_mismatch`); a session id this listener did not open (or that ended) gets
//!    `404`;
//! 3. **one session = one run**: the handler of a new session is created while the request's
//!    identity is in scope (a task-local), so its [`Run`] acts as the token's agent, role and
//!    compartment, fixed for the session's life; the session id rmcp assigns is bound to that
//!    token when the `initialize` answer leaves.
//!
//! rmcp then refuses (`403`, recorded here as `forbidden_host_or_origin`) a `Host` that is not
//! a loopback name, the bound address or in `mcp.allowed_hosts` (DNS rebinding), and any
//! `Origin` header not in `mcp.allowed_origins` (a browser page; none allowed by default).
//!
//! A `POST` without an `Mcp-Session-Id` must be an `initialize` request (it opens the session and
//! its run). Anything else, in particular a request of the session-less protocol revision
//! (2026-07-28, which rmcp would serve with a handler, and so a run, of its own per request), is
//! refused with `400` and a JSON-RPC error, and recorded (`protocol_fault`, fault `sessionless`):
//! a run per request would reset the run's flow labels, budgets, breakers and pending approvals on
//! every call. The session factory itself opens a run only for a request this module let through
//! as an `initialize` (fail closed should rmcp route anything else to it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tokio::net::TcpListener;

use super::config::Connection;
use super::gateway::{Gateway, GatewayError, Shared};
use super::session::Session;
use crate::Run;
use crate::audit::EventKind;

/// The one path the gateway answers on.
pub const MCP_PATH: &str = "/mcp";

const SESSION_HEADER: &str = "mcp-session-id";

type Body = BoxBody<Bytes, Infallible>;

/// Who a request acts as: the index of its token in `mcp.tokens` (`None`: the fixed
/// `[mcp.connection]` of a listener without tokens) and the connection it names.
struct Identity {
    token: Option<usize>,
    connection: Connection,
}

/// What the session factory needs from the request that opens a session: its identity, whether
/// it may open one (a session-less `initialize`), and a slot where it leaves the new session's run
/// for the listener to bind.
#[derive(Clone)]
struct Opening {
    identity: Arc<Identity>,
    may_open: bool,
    run: Arc<Mutex<Option<Weak<Run>>>>,
    /// Set by the session factory when rmcp asked it for a handler of a request that may not
    /// open a run (see `handle`).
    refused: Arc<std::sync::atomic::AtomicBool>,
}

/// The JSON-RPC method and id of a request body, to tell an `initialize` from anything else
/// (a batch, a notification, a response or unparseable text is not an `initialize`).
#[derive(serde::Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

/// The body of a refused session-less request: a JSON-RPC error naming why.
fn sessionless_refusal(id: Option<serde_json::Value>) -> Response<Body> {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id.unwrap_or(serde_json::Value::Null),
        "error": {
            "code": -32600,
            "message": "this gateway requires a session: send `initialize` first and then every \
                        request with its `Mcp-Session-Id` (session-less requests, protocol \
                        revision 2026-07-28, are not served: a run must span the session)",
        },
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = StatusCode::BAD_REQUEST;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

tokio::task_local! {
    static OPENING: Opening;
}

/// A session this listener opened: the token it belongs to, and its run (gone once rmcp drops
/// the session's handler).
struct Binding {
    token: Option<usize>,
    run: Weak<Run>,
}

struct State {
    shared: Arc<Shared>,
    /// `(digest, identity)` of every configured token, in document order.
    tokens: Vec<([u8; 32], Arc<Identity>)>,
    /// The identity of every request when no tokens are configured.
    fixed: Option<Arc<Identity>>,
    sessions: Mutex<HashMap<String, Binding>>,
    service: StreamableHttpService<Session, LocalSessionManager>,
    /// How many refused requests were recorded in the current minute, and how many were not.
    refused: Mutex<Refused>,
}

/// The bound on refused-request records (`mcp.refused_records_per_minute`): a fixed window of
/// one minute.
struct Refused {
    window_start: std::time::Instant,
    recorded: u64,
    /// Refused requests not recorded one by one since the last record.
    unrecorded: u64,
}

/// A bound streamable-HTTP listener of a [`Gateway`]; [`serve_until`](Self::serve_until) runs it.
pub struct HttpListener {
    listener: TcpListener,
    local: SocketAddr,
    state: Arc<State>,
}

impl std::fmt::Debug for HttpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpListener")
            .field("local_addr", &self.local)
            .field("tokens", &self.state.tokens.len())
            .finish()
    }
}

/// Why an address may not be bound, or `None`.
fn refuse_address(addr: SocketAddr, has_tokens: bool) -> Option<String> {
    let ip = addr.ip();
    if ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return Some("a multicast or broadcast address cannot be listened on".into());
    }
    if !ip.is_loopback() && !has_tokens {
        return Some(
            "not a loopback address, and the policy has no `[[mcp.tokens]]`: anyone who can \
             reach it would act as `[mcp.connection]`. Configure tokens, or bind 127.0.0.1 / ::1"
                .into(),
        );
    }
    None
}

impl Gateway {
    /// Binds the gateway's streamable-HTTP listener on `addr` (port 0: any free port, see
    /// [`HttpListener::local_addr`]); clients talk to `http://ADDR/mcp`.
    ///
    /// Refused: a multicast or broadcast address, and an address that is not loopback when the
    /// policy configures no `[[mcp.tokens]]` (an open gateway on the network would let anyone
    /// act as the fixed `[mcp.connection]`); a listener without tokens needs `[mcp.connection]`.
    ///
    /// ```no_run
    /// # async fn demo(gateway: tollgate::integrations::mcp::Gateway)
    /// #     -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = gateway.bind_http("127.0.0.1:8931".parse()?).await?;
    /// eprintln!("MCP clients connect to {}", listener.url());
    /// listener
    ///     .serve_until(async {
    ///         let _ = tokio::signal::ctrl_c().await;
    ///     })
    ///     .await?;
    /// gateway.shutdown();
    /// # Ok(()) }
    /// ```
    pub async fn bind_http(&self, addr: SocketAddr) -> Result<HttpListener, GatewayError> {
        let shared = Arc::clone(self.shared());
        let section = &shared.section;
        let bind_error = |reason: String| GatewayError::Bind { addr, reason };
        if let Some(reason) = refuse_address(addr, !section.tokens.is_empty()) {
            return Err(bind_error(reason));
        }
        let mut tokens = Vec::with_capacity(section.tokens.len());
        for (i, t) in section.tokens.iter().enumerate() {
            // Validated with the document; a section built in code is checked here again.
            let digest = t.digest().ok_or_else(|| {
                bind_error(format!("mcp.tokens[{i}].sha256 is not 64 hex digits"))
            })?;
            tokens.push((
                digest,
                Arc::new(Identity {
                    token: Some(i),
                    connection: t.connection(),
                }),
            ));
        }
        let fixed = if tokens.is_empty() {
            let connection = section
                .connection
                .clone()
                .ok_or(GatewayError::NoConnection)?;
            Some(Arc::new(Identity {
                token: None,
                connection,
            }))
        } else {
            None
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| bind_error(e.to_string()))?;
        let local = listener
            .local_addr()
            .map_err(|e| bind_error(e.to_string()))?;
        let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !local.ip().is_unspecified() {
            hosts.push(local.ip().to_string());
        }
        hosts.extend(section.allowed_hosts.iter().cloned());
        // rmcp treats an empty list as "any host": the list above is never empty.
        // Origin validation on even with no origins listed: a page in a browser on this host
        // must not drive the gateway (the MCP transport spec asks servers to check `Origin`).
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(hosts)
            .with_allowed_origins(section.allowed_origins.iter().cloned())
            .enforce_origin_validation()
            .with_max_request_body_bytes(section.max_message_bytes())
            .with_sse_keep_alive(Some(section.sse_keep_alive()));
        let factory_shared = Arc::clone(&shared);
        let factory = move || -> std::io::Result<Session> {
            let opening = OPENING
                .try_with(Opening::clone)
                .map_err(|_| std::io::Error::other("a session opened outside an identity"))?;
            if !opening.may_open {
                // Only a session-less `initialize` opens a run. rmcp also asks for a handler of
                // its own for a request of the session-less revision (2026-07-28) that carries a
                // session id, telling it by the protocol version in `_meta` or the header: such a
                // run per request would reset the run's state on every call. `handle` records it
                // and answers it as it answers a request without a session.
                opening
                    .refused
                    .store(true, std::sync::atomic::Ordering::Release);
                return Err(std::io::Error::other(
                    "a run is opened only by a session-less `initialize` request",
                ));
            }
            let ctx = Gateway::context(&opening.identity.connection);
            let run = Arc::new(
                factory_shared
                    .guard
                    .start_run(ctx)
                    .map_err(std::io::Error::other)?,
            );
            *opening.run.lock() = Some(Arc::downgrade(&run));
            Ok(Session::new(Arc::clone(&factory_shared), run))
        };
        // rmcp's session limits, from the document (not rmcp's fixed defaults).
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive = Some(section.session_idle_timeout());
        sessions.session_config.init_timeout = Some(section.session_init_timeout());
        let service = StreamableHttpService::new(factory, Arc::new(sessions), config);
        Ok(HttpListener {
            listener,
            local,
            state: Arc::new(State {
                shared,
                tokens,
                fixed,
                sessions: Mutex::new(HashMap::new()),
                service,
                refused: Mutex::new(Refused {
                    window_start: std::time::Instant::now(),
                    recorded: 0,
                    unrecorded: 0,
                }),
            }),
        })
    }
}

impl HttpListener {
    /// The address bound (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("http://{}{MCP_PATH}", self.local)
    }

    /// Serves clients until `shutdown` completes; then closes every session (their runs end)
    /// and every connection.
    pub async fn serve_until<F>(self, shutdown: F) -> Result<(), GatewayError>
    where
        F: Future<Output = ()> + Send,
    {
        let Self {
            listener, state, ..
        } = self;
        let mut connections = tokio::task::JoinSet::new();
        let section = &state.shared.section;
        let header_read_timeout = section.header_read_timeout();
        // Connections open at most; a permit is held for a connection's whole life.
        let slots = Arc::new(tokio::sync::Semaphore::new(
            section
                .max_connections()
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(target: "tollgate::mcp", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                // Over the cap: answered and closed before anything of the request is read (no
                // audit record per connection: a flood would flood the trail).
                tracing::warn!(target: "tollgate::mcp", %peer, "connection refused: max_connections open");
                connections.spawn(async move {
                    refuse_connection(stream).await;
                });
                continue;
            };
            let state = Arc::clone(&state);
            connections.spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(state.handle(req, peer).await) }
                });
                // The timer makes hyper enforce the header read timeout (without one it is off):
                // a request head not complete in time closes the connection, before any token
                // is looked at.
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(target: "tollgate::mcp", error = %e, %peer, "HTTP connection ended");
                }
            });
        }
        state.service.config.cancellation_token.cancel();
        connections.shutdown().await;
        state.record_unrecorded();
        state.sessions.lock().clear();
        Ok(())
    }
}

/// The `MCP-Protocol-Version` header of a request, bounded, for an audit record.
fn req_version(headers: &HeaderMap) -> String {
    headers
        .get("mcp-protocol-version")
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(40)
                .collect()
        })
        .unwrap_or_default()
}

/// Answers a connection over `max_connections` with `503` and closes it, without reading it
/// (bounded: a peer that does not read its answer does not hold the task).
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
        Retry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 47\r\n\r\n\
        Service Unavailable: too many open connections\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(BUSY).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *r.status_mut() = status;
    r
}

fn unauthorized() -> Response<Body> {
    let mut r = plain(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: send `Authorization: Bearer <token>` with a token this gateway knows",
    );
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    // An unauthenticated peer does not keep the connection (idle keep-alive is not timed).
    r.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    r
}

/// The bearer token of a request: exactly one `Authorization` header, scheme `Bearer` (any
/// case, RFC 6750), a non-empty token.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() {
        return None;
    }
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

impl State {
    /// The identity of a request, or why it has none (the audit record's fault).
    fn identify(&self, headers: &HeaderMap) -> Result<Arc<Identity>, &'static str> {
        if let Some(fixed) = &self.fixed {
            return Ok(Arc::clone(fixed));
        }
        let Some(token) = bearer(headers) else {
            return Err("unauthenticated");
        };
        let digest: [u8; 32] = Sha256::digest(token).into();
        // Every digest is compared, in constant time, and the match is selected without a
        // branch: how long this takes says nothing about which token (or how much of one) matched.
        let mut found = u32::MAX;
        for (i, (d, _)) in self.tokens.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            found = u32::conditional_select(&found, &i, d.ct_eq(&digest));
        }
        usize::try_from(found)
            .ok()
            .and_then(|i| self.tokens.get(i))
            .map(|(_, id)| Arc::clone(id))
            .ok_or("unknown_token")
    }

    fn record_unbound(&self, fault: &'static str, detail: &str) {
        let unrecorded = {
            let mut r = self.refused.lock();
            let now = std::time::Instant::now();
            if now.duration_since(r.window_start) >= Duration::from_secs(60) {
                r.window_start = now;
                r.recorded = 0;
            }
            if r.recorded >= self.shared.section.refused_records_per_minute() {
                // Logged like the records: one by one up to the bound, then once per stretch.
                if r.unrecorded == 0 {
                    tracing::warn!(target: "tollgate::mcp", fault, detail, "HTTP request refused; \
                        more refused requests are counted, not logged one by one, until the next record");
                }
                r.unrecorded += 1;
                return;
            }
            r.recorded += 1;
            std::mem::take(&mut r.unrecorded)
        };
        let detail = match unrecorded {
            0 => std::borrow::Cow::Borrowed(detail),
            n => std::borrow::Cow::Owned(format!(
                "{detail} (and {n} refused requests before it not recorded one by one: over \
                 `mcp.refused_records_per_minute`)"
            )),
        };
        tracing::warn!(target: "tollgate::mcp", fault, detail = %detail, "HTTP request refused");
        self.write_refusal(fault, &detail);
    }

    /// Records the refused requests still counted but not recorded (when the listener stops).
    fn record_unrecorded(&self) {
        let n = std::mem::take(&mut self.refused.lock().unrecorded);
        if n > 0 {
            self.write_refusal(
                "refused_unrecorded",
                &format!(
                    "{n} refused requests not recorded one by one: over \
                     `mcp.refused_records_per_minute`"
                ),
            );
        }
    }

    fn write_refusal(&self, fault: &'static str, detail: &str) {
        let recorded = self.shared.guard.record_unbound(EventKind::ProtocolFault {
            source: "mcp-http",
            fault,
            detail,
        });
        if let Err(e) = recorded {
            tracing::error!(target: "tollgate::mcp", error = %e, fault, "refused HTTP request not recorded");
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if req.uri().path() != MCP_PATH {
            return plain(StatusCode::NOT_FOUND, "Not Found: the MCP endpoint is /mcp");
        }
        let method = req.method().clone();
        let identity = match self.identify(req.headers()) {
            Ok(id) => id,
            Err(fault) => {
                self.record_unbound(fault, &format!("{method} {MCP_PATH} from {peer}"));
                return unauthorized();
            }
        };
        let session = req
            .headers()
            .get(SESSION_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if let Some(id) = &session
            && let Err(refusal) = self.check_session(id, &identity, &method, peer)
        {
            return match refusal {
                Refusal::NotFound => plain(StatusCode::NOT_FOUND, "Not Found: Session not found"),
                Refusal::OtherToken => plain(
                    StatusCode::FORBIDDEN,
                    "Forbidden: this session was opened with another token",
                ),
            };
        }
        let origin: String = {
            let header = |name: http::header::HeaderName| {
                req.headers()
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default()
            };
            // Bounded: these are the client's words.
            format!(
                "Host {:?}, Origin {:?}",
                header(http::header::HOST),
                header(http::header::ORIGIN)
            )
            .chars()
            .take(300)
            .collect()
        };
        // A POST without a session must be an `initialize` (it opens the session and its run);
        // read its body (bounded as rmcp bounds it) to tell.
        let mut may_open = false;
        let req = if method == Method::POST && session.is_none() {
            let (parts, body) = req.into_parts();
            let limit = self.shared.section.max_message_bytes();
            let bytes = match http_body_util::Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    if e.is::<http_body_util::LengthLimitError>() {
                        self.record_unbound(
                            "oversized",
                            &format!(
                                "{method} {MCP_PATH} from {peer}: body over the configured limit"
                            ),
                        );
                        return plain(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "Payload Too Large: the request body is over the configured limit",
                        );
                    }
                    return plain(
                        StatusCode::BAD_REQUEST,
                        "Bad Request: the body could not be read",
                    );
                }
            };
            let probe = serde_json::from_slice::<Probe<'_>>(&bytes).ok();
            if probe.as_ref().and_then(|p| p.method.as_deref()) != Some("initialize") {
                let version = req_version(&parts.headers);
                self.record_unbound(
                    "sessionless",
                    &format!(
                        "{method} {MCP_PATH} from {peer} without a session and not an \
                         `initialize` (MCP-Protocol-Version {version:?})"
                    ),
                );
                return sessionless_refusal(probe.and_then(|p| p.id));
            }
            may_open = true;
            Request::from_parts(parts, http_body_util::Either::Right(Full::new(bytes)))
        } else {
            req.map(http_body_util::Either::Left)
        };
        let version = req_version(req.headers());
        let opening = Opening {
            identity,
            may_open,
            run: Arc::new(Mutex::new(None)),
            refused: Arc::default(),
        };
        let response = OPENING
            .scope(opening.clone(), self.service.handle(req))
            .await;
        if opening.refused.load(std::sync::atomic::Ordering::Acquire) {
            self.record_unbound(
                "sessionless",
                &format!(
                    "{method} {MCP_PATH} from {peer} served without its session by the protocol \
                     revision it names (MCP-Protocol-Version {version:?})"
                ),
            );
            return sessionless_refusal(None);
        }
        match response.status() {
            StatusCode::PAYLOAD_TOO_LARGE => self.record_unbound(
                "oversized",
                &format!("{method} {MCP_PATH} from {peer}: body over the configured limit"),
            ),
            // rmcp's `Host` (DNS rebinding) or `Origin` check refused it.
            StatusCode::FORBIDDEN => self.record_unbound(
                "forbidden_host_or_origin",
                &format!("{method} {MCP_PATH} from {peer}: {origin}"),
            ),
            _ => {}
        }
        match (&session, response.headers().get(SESSION_HEADER)) {
            // A new session: bound to the token that opened it, before its id reaches anyone.
            (None, Some(created)) => {
                let created = String::from_utf8_lossy(created.as_bytes()).into_owned();
                match opening.run.lock().take() {
                    Some(run) => self.bind(created, opening.identity.token, run),
                    None => {
                        // No run was made for it: the session stays unreachable (404).
                        tracing::error!(target: "tollgate::mcp", "a session was opened without a run");
                    }
                }
            }
            (Some(id), _) if method == Method::DELETE && response.status().is_success() => {
                self.sessions.lock().remove(id);
            }
            _ => {}
        }
        response
    }

    /// A request on an existing session: it must be one this listener opened, still alive, and
    /// the request must carry the token it was opened with.
    fn check_session(
        &self,
        id: &str,
        identity: &Identity,
        method: &Method,
        peer: SocketAddr,
    ) -> Result<(), Refusal> {
        let (token, run) = {
            let sessions = self.sessions.lock();
            match sessions.get(id) {
                Some(b) => (b.token, b.run.upgrade()),
                None => return Err(Refusal::NotFound),
            }
        };
        let Some(run) = run else {
            self.sessions.lock().remove(id);
            return Err(Refusal::NotFound);
        };
        if token == identity.token {
            return Ok(());
        }
        let detail = format!(
            "{method} on session {id} from {peer} with {}, the session belongs to {}",
            describe(identity.token),
            describe(token)
        );
        let recorded = run.shared.record(
            &run,
            EventKind::ProtocolFault {
                source: "mcp-http",
                fault: "session_token_mismatch",
                detail: &detail,
            },
        );
        if let Err(e) = recorded {
            tracing::error!(target: "tollgate::mcp", error = %e, "session hijack attempt not recorded");
        }
        tracing::warn!(target: "tollgate::mcp", detail, "request with another token on a session refused");
        Err(Refusal::OtherToken)
    }

    fn bind(&self, id: String, token: Option<usize>, run: Weak<Run>) {
        let mut sessions = self.sessions.lock();
        // Forget sessions rmcp has dropped (closed, idle, failed).
        sessions.retain(|_, b| b.run.strong_count() > 0);
        sessions.insert(id, Binding { token, run });
    }
}

/// Why a request on a session is refused.
enum Refusal {
    /// Not a session this listener opened, or one that ended.
    NotFound,
    /// The session was opened with another token (or none).
    OtherToken,
}

fn describe(token: Option<usize>) -> String {
    match token {
        Some(i) => format!("mcp.tokens[{i}]"),
        None => "no token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(http::header::AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        assert_eq!(bearer(&headers(&["Bearer abc"])), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&["bearer   abc  "])), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers(&[])), None);
        assert_eq!(bearer(&headers(&["Bearer "])), None);
        assert_eq!(bearer(&headers(&["Basic YWJj"])), None);
        assert_eq!(bearer(&headers(&["Bearerabc"])), None);
        // Two Authorization headers: ambiguous, refused.
        assert_eq!(bearer(&headers(&["Bearer a", "Bearer b"])), None);
    }

    #[test]
    fn open_addresses_need_tokens() {
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let lo6: SocketAddr = "[::1]:0".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "192.0.2.10:8080".parse().unwrap();
        let multicast: SocketAddr = "224.0.0.1:8080".parse().unwrap();
        assert!(refuse_address(lo, false).is_none());
        assert!(refuse_address(lo6, false).is_none());
        assert!(refuse_address(any, false).is_some());
        assert!(refuse_address(lan, false).is_some());
        assert!(refuse_address(any, true).is_none());
        assert!(refuse_address(multicast, true).is_some());
    }
}
