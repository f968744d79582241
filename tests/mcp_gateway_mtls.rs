//! Mutual TLS to `https://` downstream MCP servers: the gateway presents the client certificate
//! of `client_cert_file` / `client_key_file` to a server that requires one (rmcp's
//! streamable-HTTP server behind tokio-rustls with rustls's `WebPkiClientVerifier`, CAs and
//! certificates generated here with rcgen). Without a certificate, or with one from a CA the
//! server does not trust, the server refuses the handshake, no request reaches it, and the
//! gateway's error says so. The document refuses, when it is loaded, a certificate without its
//! key (or the reverse), unreadable or malformed files, a key that is not the certificate's, a
//! key file open to other users, and a client certificate where it means nothing; and no error,
//! log or audit record carries the key.
#![cfg(feature = "mcp")]

mod common;

use std::path::{Path, PathBuf};

use common::node::harness::{self, METADATA, is_error, text};
use common::tls::{Ca, ClientCert, TlsMcpServer, write_private};
use common::tls_gateway::{eventually, load_error, policy_text, start_error};
use serde_json::json;
use tollgate::policy::{DocumentError, Policy};

/// `ca_file = ...` and, if given, the client certificate and key lines.
fn tls_lines(ca_file: &Path, client: Option<&(PathBuf, PathBuf)>) -> String {
    let mut out = format!("ca_file = \"{}\"\n", ca_file.display());
    if let Some((cert, key)) = client {
        out.push_str(&client_lines(cert, key));
    }
    out
}

fn client_lines(cert: &Path, key: &Path) -> String {
    format!(
        "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

/// The base64 body of a PEM text (what must never leak), one line per element.
fn pem_body(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect()
}

/// Asserts that `text` holds no line of `client`'s key, neither as text nor as the list of
/// byte values a `Debug` of the line's bytes would print.
fn assert_no_key_in(what: &str, text: &str, client: &ClientCert) {
    for line in pem_body(&client.key_pem) {
        let bytes: Vec<String> = line.bytes().take(12).map(|b| b.to_string()).collect();
        assert!(
            !text.contains(line) && !text.contains(&bytes.join(", ")),
            "{what} carries the private key: {text}"
        );
    }
}

/// A server CA, a client CA and an mTLS server on 127.0.0.1 requiring the client CA.
struct Setup {
    dir: tempfile::TempDir,
    server_ca: Ca,
    client_ca: Ca,
    server: TlsMcpServer,
}

impl Setup {
    async fn new() -> Self {
        let server_ca = Ca::new("server CA");
        let client_ca = Ca::new("client CA");
        let server = TlsMcpServer::start_mtls(&server_ca.server(&["127.0.0.1"]), &client_ca).await;
        Self {
            dir: tempfile::tempdir().unwrap(),
            server_ca,
            client_ca,
            server,
        }
    }

    /// The document for this server, trusting its CA, with `client` (cert, key) if given.
    fn policy(&self, client: Option<&(PathBuf, PathBuf)>) -> Policy {
        let ca_file = self.server_ca.write(self.dir.path(), "server-ca.pem");
        let text = policy_text(
            &self.server.url("127.0.0.1"),
            "5s",
            &tls_lines(&ca_file, client),
        );
        Policy::from_toml(&text).expect("policy")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_presents_its_client_certificate_and_calls_through() {
    let s = Setup::new().await;
    let client = s.client_ca.client("tollgate gateway");
    let files = client.write(s.dir.path(), "gw");
    let policy = s.policy(Some(&files));
    let h = harness::start(&policy).await;
    // The policy's argument rule still applies before the server is asked.
    h.assert_only_echo_is_forwarded("over mutual tls").await;
    assert_eq!(
        h.text_of("echo", json!({"message": "again"})).await,
        "Echo: again"
    );
    // Every connection the server accepted carried the gateway's certificate.
    let accepted = s.server.accepted_clients();
    assert!(!accepted.is_empty());
    assert!(
        accepted.iter().all(|c| c.as_slice() == client.der.as_ref()),
        "the server saw another client certificate"
    );
    // Neither the audit trail nor the gateway's debug output carries the key.
    let trail = serde_json::to_string(&h.audit.events()).unwrap();
    assert_no_key_in("the audit trail", &trail, &client);
    assert_no_key_in("the policy's debug output", &format!("{policy:?}"), &client);
    h.gateway.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sends_the_intermediate_certificates_of_its_client_certificate_file() {
    let s = Setup::new().await;
    // The server trusts the root; the gateway's certificate is signed by an intermediate.
    let intermediate = s.client_ca.intermediate("client intermediate CA");
    let client = intermediate.client("tollgate gateway");
    let (leaf_only, key) = client.write(s.dir.path(), "gw");
    let chain = s.dir.path().join("gw-chain.pem");
    std::fs::write(&chain, format!("{}{}", client.cert_pem, intermediate.pem)).unwrap();
    let h = harness::start(&s.policy(Some(&(chain, key.clone())))).await;
    assert_eq!(
        h.text_of("echo", json!({"message": "chained"})).await,
        "Echo: chained"
    );
    h.gateway.shutdown();
    // Without the intermediate the server cannot link the certificate to its root.
    let (_, reason) = start_error(&s.policy(Some(&(leaf_only, key)))).await;
    assert_client_certificate_refused(&reason);
}

/// The reason names the missing client certificate and the fields to set. In TLS 1.3 the
/// server's alert (`certificate_required`) comes after the client finished its handshake and
/// sent its request, and the connection reset that follows it can overtake it: then the reason
/// says that the server asked for a certificate and dropped the connection (or, rarely, that
/// the request got no answer: the start timeout ended it).
fn assert_no_client_certificate(reason: &str) {
    assert!(
        reason.contains("client certificate")
            && reason.contains("none is configured")
            && reason.contains("client_cert_file"),
        "{reason}"
    );
    assert!(
        reason.contains("CertificateRequired")
            || reason.contains("dropped the connection")
            || reason.contains("did not answer"),
        "{reason}"
    );
}

/// The reason says the server refused (or dropped the connection on) the gateway's client
/// certificate: rustls answers an unknown issuer with `unknown_ca`, unless the connection
/// reset overtook the alert (see [`assert_no_client_certificate`]).
fn assert_client_certificate_refused(reason: &str) {
    assert!(
        reason.contains("the gateway's client certificate")
            && (reason.contains("UnknownCA")
                || reason.contains("dropped the connection")
                || reason.contains("did not answer")),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_requiring_a_client_certificate_refuses_a_gateway_without_one() {
    let s = Setup::new().await;
    let (name, reason) = start_error(&s.policy(None)).await;
    assert_eq!(name, "remote");
    assert_no_client_certificate(&reason);
    assert_eq!(s.server.requests(), 0, "a request reached the server");
    assert!(s.server.accepted_clients().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused_by_the_server() {
    let s = Setup::new().await;
    // A well-formed certificate and key, signed by a CA the server does not trust.
    let stranger = Ca::new("another CA").client("tollgate gateway");
    let files = stranger.write(s.dir.path(), "stranger");
    let (name, reason) = start_error(&s.policy(Some(&files))).await;
    assert_eq!(name, "remote");
    assert_client_certificate_refused(&reason);
    assert_no_key_in("the start error", &reason, &stranger);
    assert_eq!(s.server.requests(), 0, "a request reached the server");
    assert!(s.server.accepted_clients().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_starts_requiring_a_client_certificate_is_down_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let cert = server_ca.server(&["127.0.0.1"]);
    let server = TlsMcpServer::start(&cert).await;
    let ca_file = server_ca.write(dir.path(), "server-ca.pem");
    let text_policy = policy_text(&server.url("127.0.0.1"), "5s", &tls_lines(&ca_file, None));
    let policy = Policy::from_toml(&text_policy).expect("policy");
    let h = harness::start(&policy).await;
    assert_eq!(
        h.text_of("echo", json!({"message": "one"})).await,
        "Echo: one"
    );
    let before = server.requests();

    // From now on the server only talks to clients holding a certificate of `client_ca`.
    server.present_requiring(&cert, Some(&client_ca));
    eventually("a call names the missing client certificate", async || {
        let r = h.call("echo", json!({"message": "two"})).await;
        assert!(
            is_error(&r),
            "a call went through without a client certificate"
        );
        text(&r).contains("none is configured")
    })
    .await;
    let r = h.call("echo", json!({"message": "three"})).await;
    assert!(is_error(&r), "{r:?}");
    assert_no_client_certificate(&text(&r));
    assert_eq!(h.gateway.is_up("remote"), Some(false));
    assert_eq!(server.requests(), before, "a request reached the server");
    assert!(
        h.events("outcome")
            .iter()
            .any(|e| e.to_string().contains("none is configured")),
        "the trail records the reason"
    );
    h.gateway.shutdown();
}

/// The client certificate files are read again at each reconnection: one that expired in the
/// meantime leaves the server down with its dates (it is not sent), and one renewed in place is
/// used from the next reconnection, without restarting the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_files_are_read_again_at_each_reconnection() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let old_ca = Ca::new("old client CA");
    let new_ca = Ca::new("new client CA");
    let cert = server_ca.server(&["127.0.0.1"]);
    let server = TlsMcpServer::start(&cert).await;
    server.present_requiring(&cert, Some(&old_ca));
    let ca_file = server_ca.write(dir.path(), "server-ca.pem");
    let files = old_ca.client("gw").write(dir.path(), "gw");
    let text_policy = policy_text(
        &server.url("127.0.0.1"),
        "5s",
        &tls_lines(&ca_file, Some(&files)),
    );
    let h = harness::start(&Policy::from_toml(&text_policy).expect("policy")).await;
    assert_eq!(
        h.text_of("echo", json!({"message": "one"})).await,
        "Echo: one"
    );

    // The server now trusts only the new CA, so the gateway must reconnect; meanwhile the files
    // hold an expired certificate of the new CA: read at the reconnection, refused by date.
    let expired = new_ca.client_with("gw", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    assert_eq!(expired.write(dir.path(), "gw"), files);
    server.present_requiring(&cert, Some(&new_ca));
    eventually("a call names the expired certificate", async || {
        let r = h.call("echo", json!({"message": "two"})).await;
        is_error(&r) && text(&r).contains("expired at 2021-01-01T00:00:00Z")
    })
    .await;
    assert_eq!(h.gateway.is_up("remote"), Some(false));

    // Renewed in place: a later reconnection presents it, and calls go through again.
    new_ca.client("gw").write(dir.path(), "gw");
    eventually("calls go through again", async || {
        let r = h.call("echo", json!({"message": "three"})).await;
        !is_error(&r) && text(&r) == "Echo: three"
    })
    .await;
    h.gateway.shutdown();
}

const URL: &str = "https://tickets.internal:8443/mcp";

/// The line of `text` that starts with `key`, 1-based.
fn line_of(text: &str, key: &str) -> usize {
    text.lines().position(|l| l.starts_with(key)).unwrap() + 1
}

/// Loads a document with these client files and returns the error, checking it is located at
/// `field`'s line and path.
fn client_error(cert: &Path, key: &Path, field: &str) -> DocumentError {
    let text = policy_text(URL, "5s", &client_lines(cert, key));
    let e = load_error(&text);
    assert_eq!(
        e.path(),
        Some(format!("mcp.servers.remote.{field}").as_str()),
        "{e}"
    );
    assert_eq!(
        e.location().map(|l| l.line),
        Some(line_of(&text, field)),
        "{e}"
    );
    e
}

#[test]
fn a_client_certificate_without_its_key_or_a_key_without_its_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Ca::new("client CA").client("gw").write(dir.path(), "gw");
    for (given, path, missing) in [
        ("client_cert_file", &cert, "client_key_file"),
        ("client_key_file", &key, "client_cert_file"),
    ] {
        let e = load_error(&policy_text(
            URL,
            "5s",
            &format!("{given} = \"{}\"", path.display()),
        ));
        assert_eq!(
            e.path(),
            Some(format!("mcp.servers.remote.{missing}").as_str()),
            "{e}"
        );
        assert!(e.to_string().contains("missing"), "{e}");
        // Located at the server's table, where the missing field goes.
        assert!(e.location().is_some(), "{e}");
    }
    // Both: accepted.
    Policy::from_toml(&policy_text(URL, "5s", &client_lines(&cert, &key)))
        .expect("a client identity");
}

/// The gateway's own certificate must be valid when the document is loaded: an expired one,
/// or one not valid yet, is refused by date there, not sent to a server that could only answer
/// with a TLS alert.
#[test]
fn an_expired_or_not_yet_valid_client_certificate_is_refused_with_its_dates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("client CA");
    let expired = ca.client_with("gw", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (cert, key) = expired.write(dir.path(), "expired");
    let e = client_error(&cert, &key, "client_cert_file").to_string();
    assert!(
        e.contains(&format!("the client certificate in `{}`", cert.display()))
            && e.contains("expired at 2021-01-01T00:00:00Z (the clock reads 20"),
        "{e}"
    );
    assert_no_key_in("the load error", &e, &expired);
    let future = ca.client_with("gw", |p| {
        p.not_before = rcgen::date_time_ymd(2999, 1, 1);
        p.not_after = rcgen::date_time_ymd(3000, 1, 1);
    });
    let (cert, key) = future.write(dir.path(), "future");
    let e = client_error(&cert, &key, "client_cert_file").to_string();
    assert!(
        e.contains("is not valid before 2999-01-01T00:00:00Z"),
        "{e}"
    );
    // Valid today: accepted (the default validity of the test CA's certificates).
    let (cert, key) = ca.client("gw").write(dir.path(), "current");
    Policy::from_toml(&policy_text(URL, "5s", &client_lines(&cert, &key)))
        .expect("a current client certificate");
}

#[test]
fn an_empty_client_certificate_or_key_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Ca::new("client CA").client("gw").write(dir.path(), "gw");
    let e = client_error(&cert, Path::new(""), "client_key_file");
    assert!(e.to_string().contains("must not be empty"), "{e}");
    let e = client_error(Path::new(""), &key, "client_cert_file");
    assert!(e.to_string().contains("must not be empty"), "{e}");
}

#[test]
fn unreadable_or_malformed_client_certificate_files_are_refused_when_the_document_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("client CA");
    let client = ca.client("gw");
    let (cert, key) = client.write(dir.path(), "gw");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        write_private(&path, text);
        path
    };
    let missing = dir.path().join("missing.pem");
    let no_pem = write("text.pem", "just some text\n");
    let key_only = write("key-only.pem", &client.key_pem);
    let cert_and_key = write(
        "cert-and-key.pem",
        &format!("{}{}", client.cert_pem, client.key_pem),
    );
    let broken_cert = write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    );
    // The certificate file.
    for (file, says) in [
        (missing.as_path(), "cannot read client certificate file"),
        (dir.path(), "not a regular file"),
        (no_pem.as_path(), "no PEM `CERTIFICATE` block"),
        (key_only.as_path(), "no PEM `CERTIFICATE` block"),
        (cert_and_key.as_path(), "also holds a private key"),
        (broken_cert.as_path(), "cannot be parsed"),
    ] {
        let e = client_error(file, &key, "client_cert_file");
        assert!(e.to_string().contains(says), "{}: {e}", file.display());
        assert!(
            e.to_string().contains(&file.display().to_string()),
            "names the file: {e}"
        );
    }
    // The key file.
    let other_key = ca.client("someone else").key_pem;
    let two_keys = write("two.key", &format!("{}{other_key}", client.key_pem));
    let mismatched = write("other.key", &other_key);
    let encrypted = write(
        "encrypted.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let cert_as_key = write("cert.key", &client.cert_pem);
    let not_a_key = write(
        "garbage.key",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    let unterminated = write("unterminated.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n");
    for (file, says) in [
        (missing.as_path(), "cannot read client key file"),
        (dir.path(), "not a regular file"),
        (cert_as_key.as_path(), "holds no PEM private key"),
        (two_keys.as_path(), "holds 2 private keys"),
        (mismatched.as_path(), "does not belong to the certificate"),
        (encrypted.as_path(), "is encrypted"),
        (not_a_key.as_path(), "not an RSA, ECDSA"),
        (unterminated.as_path(), "no `-----END` line"),
    ] {
        let e = client_error(&cert, file, "client_key_file");
        assert!(e.to_string().contains(says), "{}: {e}", file.display());
        assert!(
            e.to_string().contains(&file.display().to_string()),
            "names the file: {e}"
        );
    }
    // Both fields naming one 0600 file holding the certificate and then its key: accepted.
    Policy::from_toml(&policy_text(
        URL,
        "5s",
        &client_lines(&cert_and_key, &cert_and_key),
    ))
    .expect("certificate and key in one private file");
    // A chain (the gateway's certificate, then an intermediate) is accepted.
    let chain = write("chain.pem", &format!("{}{}", client.cert_pem, ca.pem));
    Policy::from_toml(&policy_text(URL, "5s", &client_lines(&chain, &key))).expect("a chain");
}

#[test]
fn a_damaged_client_key_file_is_refused_without_quoting_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let client = Ca::new("client CA").client("gw");
    let (cert, key) = client.write(dir.path(), "gw");
    // The BEGIN line run into the first line of the key (a bad copy and paste): PEM decoders
    // quote the malformed line in their error, and that line is key material.
    let damaged = client.key_pem.replacen("-----\n", "-----", 1);
    std::fs::write(&key, &damaged).unwrap();
    let e = client_error(&cert, &key, "client_key_file");
    assert!(e.to_string().contains("malformed"), "{e}");
    assert_no_key_in("the document error", &e.to_string(), &client);
    assert_no_key_in(
        "the document error's debug output",
        &format!("{e:?}"),
        &client,
    );
    // A key that is not the certificate's: the error names the files, not their content.
    let other = Ca::new("client CA").client("other");
    std::fs::write(&key, &other.key_pem).unwrap();
    let e = client_error(&cert, &key, "client_key_file");
    assert_no_key_in("the document error", &format!("{e} {e:?}"), &other);
}

#[cfg(unix)]
#[test]
fn a_client_key_file_open_to_other_users_is_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Ca::new("client CA").client("gw").write(dir.path(), "gw");
    let chmod = |mode: u32| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let load = || Policy::from_toml(&policy_text(URL, "5s", &client_lines(&cert, &key)));
    let root_owned = std::fs::metadata(&key).unwrap().uid() == 0;
    // Open to others, whoever owns the file.
    for mode in [0o644, 0o604, 0o666, 0o601] {
        chmod(mode);
        let e = client_error(&cert, &key, "client_key_file");
        let text = e.to_string();
        assert!(text.contains(&format!("mode 0{mode:o}")), "{text}");
        assert!(
            text.contains(&format!("chmod 600 {}", key.display())),
            "{text}"
        );
    }
    for mode in [0o600, 0o400] {
        chmod(mode);
        load().unwrap_or_else(|e| panic!("mode {mode:o}: {e}"));
    }
    // Group access beyond reading, even for a file owned by root.
    for mode in [0o660, 0o650, 0o620] {
        chmod(mode);
        let e = client_error(&cert, &key, "client_key_file");
        assert!(e.to_string().contains(&format!("mode 0{mode:o}")), "{e}");
    }
    // Group-readable: only when the file is owned by root (an administrator's choice); a key
    // owned by anyone else is refused.
    chmod(0o640);
    if root_owned {
        load().expect("a root-owned key readable by its group");
        // Give the file to another user (the test runs as root here).
        std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
    }
    assert_ne!(std::fs::metadata(&key).unwrap().uid(), 0);
    let e = client_error(&cert, &key, "client_key_file");
    assert!(e.to_string().contains("mode 0640"), "{e}");
}

#[test]
fn a_client_certificate_on_a_stdio_server_or_a_plain_http_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = Ca::new("client CA").client("gw").write(dir.path(), "gw");
    for url in ["http://127.0.0.1:9/mcp", "http://10.0.0.7/mcp"] {
        let extra = format!("allow_plain_http = true\n{}", client_lines(&cert, &key));
        let text = policy_text(url, "5s", &extra);
        let e = load_error(&text);
        assert_eq!(
            e.path(),
            Some("mcp.servers.remote.client_cert_file"),
            "{url}: {e}"
        );
        assert!(e.to_string().contains("https://"), "{e}");
    }
    let text = format!(
        r#"{METADATA}
[tools.echo]
effect = "read"

[roles.reader]
tools = ["echo"]

[mcp.connection]
agent = "desktop"
role = "reader"

[mcp.servers.local]
command = "echo-server"
{}"#,
        client_lines(&cert, &key)
    );
    let e = load_error(&text);
    assert_eq!(e.path(), Some("mcp.servers.local.client_cert_file"), "{e}");
    assert!(e.to_string().contains("command"), "{e}");
}
