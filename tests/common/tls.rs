//! A real TLS downstream MCP server for the gateway's https tests: a CA and server certificates
//! generated at test time with rcgen (ring), and an rmcp streamable-HTTP server with one `echo`
//! tool behind tokio-rustls and hyper on a free loopback port. Its certificate can be replaced
//! while it runs ([`TlsMcpServer::present`]), dropping every open connection and session, as a
//! server whose certificate is rotated (or hijacked) would. [`TlsMcpServer::start_mtls`] starts
//! one that requires a client certificate signed by a given CA (mutual TLS, through rustls's
//! `WebPkiClientVerifier`) and records the client certificates it accepted.

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
use rustls::pki_types::pem::PemObject;
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

    /// An intermediate CA named `name`, signed by this one (its `pem` is the intermediate's
    /// certificate alone).
    pub fn intermediate(&self, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .expect("intermediate certificate");
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

    /// A client certificate (extended key usage `clientAuth`) for the subject `name`, signed by
    /// this CA.
    pub fn client(&self, name: &str) -> ClientCert {
        self.client_with(name, |_| {})
    }

    /// A client certificate for `name`, its parameters changed by `edit` first (validity...).
    pub fn client_with(&self, name: &str, edit: impl FnOnce(&mut CertificateParams)) -> ClientCert {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        edit(&mut params);
        let key = KeyPair::generate().expect("client key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("client certificate");
        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Writes the CA certificate to `dir/<file>` and returns the path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).expect("write CA file");
        path
    }
}

/// A client certificate and its private key, PEM.
pub struct ClientCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate, DER (what the server records when it accepts it).
    pub der: CertificateDer<'static>,
}

impl ClientCert {
    /// Writes `dir/<stem>.pem` (the certificate) and `dir/<stem>.key` (the key, mode 0600 on
    /// unix, as the gateway requires) and returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write client certificate");
        write_private(&key, &self.key_pem);
        (cert, key)
    }
}

/// Writes `text` to `path`, readable by its owner only on unix (as the gateway requires of a
/// private key).
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write a private file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }
}

/// A server's certificate chain and private key.
pub struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ServerCert {
    /// The server's TLS configuration: no client authentication, or (`client_roots`) a client
    /// certificate signed by one of those CAs required on every connection.
    fn config(
        &self,
        client_roots: Option<&Arc<rustls::RootCertStore>>,
    ) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::clone(roots),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("server certificate and key");
        Arc::new(config)
    }
}

/// A trust store holding `ca` alone.
fn roots_of(ca: &Ca) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let der = CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("CA PEM");
    roots.add(der).expect("client CA");
    Arc::new(roots)
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

fn current(
    cert: Option<&ServerCert>,
    client_roots: Option<&Arc<rustls::RootCertStore>>,
) -> Current {
    Current {
        acceptor: cert.map(|c| tokio_rustls::TlsAcceptor::from(c.config(client_roots))),
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
    /// The end-entity client certificate of every TLS connection the server accepted (an
    /// empty vector for a connection without one).
    clients: Arc<parking_lot::Mutex<Vec<Vec<u8>>>>,
    /// Requests served over accepted connections.
    requests: Arc<std::sync::atomic::AtomicUsize>,
    /// The CAs whose client certificates are required (mutual TLS), if any.
    client_roots: parking_lot::Mutex<Option<Arc<rustls::RootCertStore>>>,
}

impl TlsMcpServer {
    /// Starts the server on a free port of 127.0.0.1, presenting `cert`.
    pub async fn start(cert: &ServerCert) -> Self {
        Self::serve(Some(cert), None).await
    }

    /// Starts the server presenting `cert` and requiring, on every connection, a client
    /// certificate signed by `client_ca` (mutual TLS): a client without one, or with one from
    /// another CA, fails the handshake and never reaches the MCP service.
    pub async fn start_mtls(cert: &ServerCert, client_ca: &Ca) -> Self {
        Self::serve(Some(cert), Some(client_ca)).await
    }

    /// The same MCP server over plain HTTP (no TLS at all).
    pub async fn start_plain() -> Self {
        Self::serve(None, None).await
    }

    async fn serve(cert: Option<&ServerCert>, client_ca: Option<&Ca>) -> Self {
        let client_roots = client_ca.map(roots_of);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(parking_lot::Mutex::new(Arc::new(current(
            cert,
            client_roots.as_ref(),
        ))));
        let connections = Arc::new(parking_lot::Mutex::new(tokio::task::JoinSet::new()));
        let clients = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (st, conns) = (Arc::clone(&state), Arc::clone(&connections));
        let (seen, served_count) = (Arc::clone(&clients), Arc::clone(&requests));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let now = Arc::clone(&st.lock());
                let (seen, served_count) = (Arc::clone(&seen), Arc::clone(&served_count));
                let mut set = conns.lock();
                while set.try_join_next().is_some() {}
                set.spawn(async move {
                    let served = Arc::clone(&now);
                    let service =
                        hyper::service::service_fn(move |req: http::Request<Incoming>| {
                            let now = Arc::clone(&served);
                            served_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            async move { Ok::<_, Infallible>(now.service.handle(req).await) }
                        });
                    let http = hyper::server::conn::http1::Builder::new();
                    match &now.acceptor {
                        // A client that refuses our certificate aborts the handshake.
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let client = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| c.to_vec())
                                    .unwrap_or_default();
                                seen.lock().push(client);
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
            clients,
            requests,
            client_roots: parking_lot::Mutex::new(client_roots),
        }
    }

    /// The client certificates (end entity, DER) of the TLS connections accepted so far, in
    /// order; an empty vector for a connection that presented none.
    pub fn accepted_clients(&self) -> Vec<Vec<u8>> {
        self.clients.lock().clone()
    }

    /// How many HTTP requests reached the MCP service.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The server's `https://` MCP endpoint under `host` (`127.0.0.1` or `localhost`).
    pub fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/mcp", self.addr.port())
    }

    /// The server's `http://` MCP endpoint under `host`.
    pub fn plain_url(&self, host: &str) -> String {
        format!("http://{host}:{}/mcp", self.addr.port())
    }

    /// From now on presents `cert` (still requiring the same client certificates, if any):
    /// every open connection is closed and every session dropped.
    pub fn present(&self, cert: &ServerCert) {
        let roots = self.client_roots.lock().clone();
        self.switch(cert, roots);
    }

    /// From now on presents `cert` and requires a client certificate signed by `client_ca` (or,
    /// `None`, none at all): every open connection is closed and every session dropped.
    pub fn present_requiring(&self, cert: &ServerCert, client_ca: Option<&Ca>) {
        let roots = client_ca.map(roots_of);
        self.client_roots.lock().clone_from(&roots);
        self.switch(cert, roots);
    }

    fn switch(&self, cert: &ServerCert, client_roots: Option<Arc<rustls::RootCertStore>>) {
        let next = current(Some(cert), client_roots.as_ref());
        let old = std::mem::replace(&mut *self.state.lock(), Arc::new(next));
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
