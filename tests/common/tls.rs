//! A real TLS downstream MCP server for the gateway's https tests: a CA and server certificates
//! generated at test time with rcgen (ring), and an rmcp streamable-HTTP server with one `echo`
//! tool behind tokio-rustls and hyper on a free loopback port. Its certificate can be replaced
//! while it runs ([`TlsMcpServer::present`]), dropping every open connection and session, as a
//! server whose certificate is rotated (or hijacked) would.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority generated for one test.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            params,
            key,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn server(&self, names: &[&str]) -> ServerCert {
        self.server_with(names, |_| {})
    }

    /// A server certificate for `names`, its parameters changed by `edit` first (validity...).
    pub fn server_with(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> ServerCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "mcp test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        edit(&mut params);
        let key = KeyPair::generate().expect("server key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        ServerCert {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    /// Writes the CA certificate to `dir/<file>` and returns the path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).expect("write CA file");
        path
    }
}

/// A server's certificate chain and private key.
pub struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ServerCert {
    fn config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("server certificate and key");
        Arc::new(config)
    }
}

/// The downstream server's handler: one tool, `echo`, answering `Echo: <message>`.
#[derive(Clone, Default)]
pub struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        });
        let serde_json::Value::Object(schema) = schema else {
            unreachable!("a JSON object literal")
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Echoes the message",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let message = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(CallToolResponse::Complete(CallToolResult::success(vec![
            ContentBlock::text(format!("Echo: {message}")),
        ])))
    }
}

/// What the server presents now: the TLS acceptor and the MCP service (a new one on every
/// certificate change, so old sessions are gone too).
struct Current {
    /// `None`: plain HTTP.
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    service: StreamableHttpService<Echo, LocalSessionManager>,
}

fn current(cert: Option<&ServerCert>) -> Current {
    Current {
        acceptor: cert.map(|c| tokio_rustls::TlsAcceptor::from(c.config())),
        service: StreamableHttpService::new(
            || Ok(Echo),
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default(),
        ),
    }
}

/// The TLS MCP server, serving until dropped.
pub struct TlsMcpServer {
    /// The bound loopback address.
    pub addr: SocketAddr,
    state: Arc<parking_lot::Mutex<Arc<Current>>>,
    connections: Arc<parking_lot::Mutex<tokio::task::JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TlsMcpServer {
    /// Starts the server on a free port of 127.0.0.1, presenting `cert`.
    pub async fn start(cert: &ServerCert) -> Self {
        Self::serve(Some(cert)).await
    }

    /// The same MCP server over plain HTTP (no TLS at all).
    pub async fn start_plain() -> Self {
        Self::serve(None).await
    }

    async fn serve(cert: Option<&ServerCert>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(parking_lot::Mutex::new(Arc::new(current(cert))));
        let connections = Arc::new(parking_lot::Mutex::new(tokio::task::JoinSet::new()));
        let (st, conns) = (Arc::clone(&state), Arc::clone(&connections));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let now = Arc::clone(&st.lock());
                let mut set = conns.lock();
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let served = Arc::clone(&now);
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let now = Arc::clone(&served);
                            async move { Ok::<_, Infallible>(now.service.handle(req).await) }
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    match &now.acceptor {
                        // A client that refuses our certificate aborts the handshake.
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            state,
            connections,
            accept,
        }
    }

    /// The server's `https://` MCP endpoint under `host` (`127.0.0.1` or `localhost`).
    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/mcp", self.addr.port())
    }

    /// The server's `http://` MCP endpoint under `host`.
    pub fn plain_url(&self, host: &str) -> String {
        format!("http://{host}:{}/mcp", self.addr.port())
    }

    /// From now on presents `cert`: every open connection is closed and every session dropped.
    pub fn present(&self, cert: &ServerCert) {
        let old = std::mem::replace(&mut *self.state.lock(), Arc::new(current(Some(cert))));
        old.service.config.cancellation_token.cancel();
        self.connections.lock().abort_all();
    }
}

impl Drop for TlsMcpServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.connections.lock().abort_all();
        self.state.lock().service.config.cancellation_token.cancel();
    }
}

/// A reqwest client for test clients of the gateway's plain-`http://` listener. With the `mcp`
/// feature reqwest is built with `rustls-no-provider`, so `reqwest::Client::new()` (and rmcp's
/// `StreamableHttpClientTransport::from_config`, which calls it) panics unless the process
/// installed a rustls provider: applications pass a client built like this one instead.
pub fn http_client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("HTTP client")
}
